//! Pipelock in the chain, with the stand-in (`standin/pipelock.rs`) as the pipelock binary
//! `CLAUDE_BOTTLE_PIPELOCK_BIN` names: the launcher checks it, copies it into the bundle image
//! and renders its config and CA; the bundle runs it first and chains through it.
//!
//! - agent → relay → bundle (injects the token) → stand-in (MITM with pipelock's CA, sees the
//!   injected header) → fake upstream; a host pipelock does not allow is refused by the
//!   stand-in and the agent reads its reason and what to do; an approved `pipelock-block` and
//!   an approved egress route work through both without a restart;
//! - a killed pipelock is restarted, and while it is down requests fail closed (none reaches
//!   the upstream, none goes direct although the bundle could reach the upstream itself);
//! - a pipelock that cannot start fails `start` with its own stderr and leaves nothing;
//! - with pipelock the agent is offered `pipelock-block`; without, it is not, and the plan
//!   says how to add pipelock.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use std::time::{Duration, Instant};

use e2e::{Bottle, Home, TestCa, bins, container_sh, docker, leftovers, start_upstream};

const IDLE: &str = "command: \"sleep 100000\"";
/// Token-shaped (`ghp_`), so pipelock's header DLP would refuse it if the rendered
/// `sensitive_headers` named `Authorization`.
const TOKEN: &str = "ghp_e2ePipelockToken0123456789abcdefABCD";

/// A home whose bottles run the stand-in as pipelock: routes `api.test` (Bearer token) and
/// `other.test`, the tests' upstream CA and private networks allowed.
fn home(ca: &TestCa, pipelock_bin: &std::path::Path) -> Home {
    let mut home = Home::new();
    let ca_path = home.dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    home.env.insert("E2E_PIPELOCK_TOKEN".into(), TOKEN.into());
    home.env.insert(
        "CLAUDE_BOTTLE_PIPELOCK_BIN".into(),
        pipelock_bin.display().to_string(),
    );
    home.env.insert("USER".into(), "olga".into());
    home.write(
        "bottles",
        "piped",
        &format!(
            "---\negress:\n  routes:\n    - host: api.test\n      auth: {{scheme: Bearer, token_ref: E2E_PIPELOCK_TOKEN}}\n    - host: other.test\n  allow_private: [172.16.0.0/12, 192.168.0.0/16, 10.0.0.0/8]\n  extra_ca: {}\nsupervise: true\n---\n",
            ca_path.display()
        ),
    );
    home.write(
        "agents",
        "piped",
        &format!("---\nbottle: piped\n{IDLE}\n---\n"),
    );
    home
}

/// `start piped -y -d`: the bottle and the launcher's stdout (the plan).
fn start(home: &Home) -> (Bottle<'_>, String) {
    home.start_detached_showing("piped", &[])
}

fn bundle(bottle: &Bottle) -> String {
    format!("claude-bottle-{}-bundle", bottle.id)
}

/// `curl` in the agent: `CODE BODY`.
fn curl(bottle: &Bottle, url: &str) -> (String, String) {
    let out = bottle.sh_ok(&format!(
        "curl -sS --max-time 20 -w '\\n%{{http_code}}' {url} || true"
    ));
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    (code.to_owned(), body.to_owned())
}

/// Polls `curl` until it answers `code` (at most 30 s).
fn curl_until(bottle: &Bottle, url: &str, code: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, body) = curl(bottle, url);
        if got == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered {code}: last {got} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The stand-in's log lines, read in the bundle.
async fn standin_log(docker: &bollard::Docker, bottle: &Bottle<'_>) -> Vec<serde_json::Value> {
    container_sh(docker, &bundle(bottle), "cat /tmp/pipelock-standin.jsonl")
        .await
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The fake upstream's request log.
async fn upstream_log(docker: &bollard::Docker, upstream: &str) -> Vec<serde_json::Value> {
    container_sh(docker, upstream, "cat /tmp/requests.jsonl 2>/dev/null")
        .await
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The names of the supervise MCP tools the agent is offered: a raw stateless (2026-07-28)
/// `tools/list` POST from the agent with curl.
fn tool_names(bottle: &Bottle) -> Vec<String> {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"curl","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let out = bottle.sh_ok(&format!(
        "curl -sS --max-time 20 http://supervise:9100/mcp -H 'Content-Type: application/json' \
         -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2026-07-28' \
         -H 'Mcp-Method: tools/list' -d '{body}'"
    ));
    // JSON, or the last `data:` line of an event stream.
    let json = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l.trim_start_matches("data:")).ok())
        .unwrap_or_else(|| panic!("no JSON-RPC answer: {out}"));
    json["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {json}"))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

/// Writes a proposal into the bottle's queue as the bundle's MCP server would, and approves it.
fn approve(home: &Home, bottle: &Bottle, id: &str, request: serde_json::Value) -> String {
    let queue = home.queue(&bottle.id);
    std::fs::create_dir_all(queue.join("proposals")).unwrap();
    let proposal = serde_json::json!({
        "id": id, "identity": bottle.id, "created": 1,
        "justification": "the e2e test needs it", "request": request,
    });
    std::fs::write(
        queue.join(format!("proposals/{id}.json")),
        proposal.to_string(),
    )
    .unwrap();
    let out = home.run(&["approve", id]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "approve {id} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_chain_through_pipelock_and_its_refusals_and_approvals_reach_the_agent() {
    let ca = TestCa::new();
    let home = home(&ca, &bins().pipelock_standin);
    let (bottle, plan) = start(&home);
    assert!(
        plan.contains("egress     via pipelock 0.0.0-standin"),
        "{plan}"
    );
    let docker = docker().await;
    let network = bottle.network();
    let api = start_upstream(&docker, &bottle.id, &network, "api.test", &ca).await;
    let other = start_upstream(&docker, &bottle.id, &network, "other.test", &ca).await;
    let new = start_upstream(&docker, &bottle.id, &network, "new.test", &ca).await;
    let bundle_name = bundle(&bottle);
    let started = |inspect: bollard::models::ContainerInspectResponse| {
        inspect.state.and_then(|s| s.started_at).unwrap()
    };
    let bundle_started = started(docker.inspect_container(&bundle_name, None).await.unwrap());

    // The whole chain: the upstream got the injected token through the stand-in, which saw it
    // (its header DLP left the injected Authorization alone) and MITMed with pipelock's CA.
    let seen: serde_json::Value =
        serde_json::from_str(&curl_until(&bottle, "https://api.test/x", "200")).unwrap();
    assert_eq!(seen["path"], "/x");
    let upstream = upstream_log(&docker, &api).await;
    assert_eq!(upstream.len(), 1, "{upstream:?}");
    assert_eq!(
        upstream[0]["headers"]["authorization"],
        format!("Bearer {TOKEN}")
    );
    assert_eq!(upstream[0]["headers"]["via"], "pipelock-standin");
    let log = standin_log(&docker, &bottle).await;
    let request = log
        .iter()
        .find(|l| l["event"] == "request" && l["host"] == "api.test")
        .unwrap_or_else(|| panic!("the stand-in saw no request: {log:?}"));
    assert_eq!(
        request["headers"]["authorization"],
        format!("Bearer {TOKEN}")
    );
    assert_eq!(request["decision"], "allow");
    // Pipelock got none of the bundle's environment.
    let pid = log.iter().find(|l| l["event"] == "start").unwrap()["pid"].clone();
    let environ = container_sh(
        &docker,
        &bundle_name,
        &format!("tr '\\0' '\\n' < /proc/{pid}/environ"),
    )
    .await;
    assert!(environ.contains("HOME=/var/lib/bottle"), "{environ}");
    assert!(
        !environ.contains("BOTTLE_LOG") && !environ.contains(TOKEN),
        "{environ}"
    );
    // Pipelock's header DLP is on: a token-shaped value the agent puts in a sensitive header
    // (not a bottle secret, so the bundle lets it by) is refused inside the tunnel, and the
    // agent reads pipelock's reason from the proxy.
    let out = bottle.sh_ok(
        "curl -sS --max-time 20 -w '\\n%{http_code}' -H 'X-Token: ghp_agentMadeThisUp0123456789abcdefABCD' https://api.test/dlp || true",
    );
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap();
    assert_eq!(code, "403", "{out}");
    assert!(
        body.contains("request header contains secret: x-token"),
        "{body}"
    );
    assert!(body.contains("`pipelock-block`"), "{body}");
    assert!(
        upstream_log(&docker, &api)
            .await
            .iter()
            .all(|r| r["path"] != "/dlp")
    );
    // With pipelock, the agent is offered the tool to ask for pipelock changes.
    assert!(tool_names(&bottle).contains(&"pipelock-block".to_owned()));

    // Pipelock's own policy refuses a host the bundle routes: the agent reads pipelock's
    // reason and the tool to ask with, from the proxy, as a 403.
    container_sh(
        &docker,
        &bundle_name,
        "sed -i '/^- other.test$/d' /etc/bottle/pipelock.yaml && kill -HUP 1",
    )
    .await;
    let body = curl_until(&bottle, "https://other.test/y", "403");
    assert!(
        body.contains("pipelock") && body.contains("domain not in allowlist: other.test"),
        "{body}"
    );
    assert!(body.contains("`pipelock-block`"), "{body}");
    assert!(upstream_log(&docker, &other).await.is_empty());

    // An approved pipelock-block change is merged, checked and reloaded: no restart.
    let out = approve(
        &home,
        &bottle,
        "p-pipelock",
        serde_json::json!({"kind": "pipelock", "change": "api_allowlist: [other.test]\n"}),
    );
    assert!(out.contains("pipelock"), "{out}");
    curl_until(&bottle, "https://other.test/y", "200");
    assert_eq!(upstream_log(&docker, &other).await.len(), 1);
    // A change naming a key pipelock does not know is refused, and nothing is decided.
    let queue = home.queue(&bottle.id);
    std::fs::write(
        queue.join("proposals/p-bad.json"),
        serde_json::json!({"id": "p-bad", "identity": bottle.id, "created": 2,
            "justification": "x", "request": {"kind": "pipelock", "change": "mode: balanced\n"}})
        .to_string(),
    )
    .unwrap();
    let bad = home.run(&["approve", "p-bad"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("claude-bottle fixes `mode`"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(!queue.join("decisions/p-bad.json").exists());

    // An approved egress route reaches pipelock's allowlist too.
    assert_eq!(curl(&bottle, "https://new.test/z").0, "403");
    let out = approve(
        &home,
        &bottle,
        "p-route",
        serde_json::json!({"kind": "egress", "host": "new.test"}),
    );
    assert!(out.contains("now routes new.test"), "{out}");
    curl_until(&bottle, "https://new.test/z", "200");
    let new_seen = upstream_log(&docker, &new).await;
    assert_eq!(new_seen.len(), 1, "{new_seen:?}");
    assert_eq!(new_seen[0]["headers"]["via"], "pipelock-standin");
    assert_eq!(
        started(docker.inspect_container(&bundle_name, None).await.unwrap()),
        bundle_started,
        "the bundle was restarted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_pipelock_is_restarted_and_nothing_passes_while_it_is_down() {
    let ca = TestCa::new();
    let home = home(&ca, &bins().pipelock_standin);
    let (bottle, _) = start(&home);
    let docker = docker().await;
    let api = start_upstream(&docker, &bottle.id, &bottle.network(), "api.test", &ca).await;
    let bundle_name = bundle(&bottle);
    curl_until(&bottle, "https://api.test/before", "200");
    let pid_of = |log: &[serde_json::Value]| -> Vec<u64> {
        log.iter()
            .filter(|l| l["event"] == "start")
            .filter_map(|l| l["pid"].as_u64())
            .collect()
    };
    let first = pid_of(&standin_log(&docker, &bottle).await);
    assert_eq!(first.len(), 1, "{first:?}");

    // Held down: the next start of pipelock waits for /tmp/release before it runs.
    container_sh(
        &docker,
        &bundle_name,
        &format!(
            "mv /usr/local/bin/pipelock /usr/local/bin/pipelock.real && \
             printf '#!/bin/sh\\nwhile [ ! -e /tmp/release ]; do sleep 0.1; done\\nexec /usr/local/bin/pipelock.real \"$@\"\\n' > /usr/local/bin/pipelock && \
             chmod 755 /usr/local/bin/pipelock && kill -9 {}",
            first[0]
        ),
    )
    .await;
    let before = upstream_log(&docker, &api).await.len();
    for _ in 0..3 {
        let (code, body) = curl(&bottle, "https://api.test/while-down");
        assert_ne!(
            code, "200",
            "a request passed while pipelock was down: {body}"
        );
        assert!(
            body.contains("upstream proxy") || body.contains("broke off"),
            "{code} {body}"
        );
    }
    assert_eq!(
        upstream_log(&docker, &api).await.len(),
        before,
        "a request went direct"
    );

    container_sh(&docker, &bundle_name, "touch /tmp/release").await;
    curl_until(&bottle, "https://api.test/after", "200");
    let pids = pid_of(&standin_log(&docker, &bottle).await);
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert_ne!(pids[0], pids[1]);
    let upstream = upstream_log(&docker, &api).await;
    assert!(
        upstream.iter().all(|r| r["path"] != "/while-down"),
        "{upstream:?}"
    );
    assert!(
        upstream
            .iter()
            .all(|r| r["headers"]["via"] == "pipelock-standin"),
        "{upstream:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipelock_that_cannot_start_fails_the_start_with_its_stderr() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("pipelock");
    std::fs::write(
        &broken,
        "#!/bin/sh\ncase \"$1\" in --version) echo 'pipelock version 9.9.9';; \
         *) echo 'config: unknown field `bogus_e2e`' >&2; exit 1;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let home = home(&ca, &broken);
    let out = home.run(&["start", "piped", "-y", "-d"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("pipelock could not start"), "{stderr}");
    assert!(
        stderr.contains("config: unknown field `bogus_e2e`"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("egress     via pipelock 9.9.9"), "{stdout}");
    let identity = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Preflight plan for bottle "))
        .unwrap()
        .to_owned();
    let docker = docker().await;
    assert_eq!(leftovers(&docker, &identity).await, Vec::<String>::new());

    // Named but unusable: refused before anything is built.
    let mut home = home;
    let saved = home.env.clone();
    home.env.insert(
        "CLAUDE_BOTTLE_PIPELOCK_BIN".into(),
        dir.path().join("missing").display().to_string(),
    );
    let out = home.run(&["start", "piped", "-y", "-d"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("does not exist") && stderr.contains("unset CLAUDE_BOTTLE_PIPELOCK_BIN"),
        "{stderr}"
    );

    // Without pipelock: direct egress, the plan says how to add pipelock, and the agent is not
    // offered `pipelock-block` at all.
    home.env = saved;
    home.env.remove("CLAUDE_BOTTLE_PIPELOCK_BIN");
    let (bottle, plan) = start(&home);
    assert!(
        plan.contains("egress     direct (no pipelock; to add its allowlist and DLP behind the bundle, set CLAUDE_BOTTLE_PIPELOCK_BIN"),
        "{plan}"
    );
    let tools = tool_names(&bottle);
    assert!(tools.contains(&"egress-block".to_owned()), "{tools:?}");
    assert!(!tools.contains(&"pipelock-block".to_owned()), "{tools:?}");
}
