//! The real Claude Code (Anthropic's native CLI, from PyPI's `claude-agent-sdk` wheel, as
//! `scripts/claude-from-pypi` fetches it) in a bottle, against a fake Anthropic API reached by
//! the bundle under the name `api.anthropic.com` (NOTES, "Claude Code on the wire").

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use e2e::{
    Bottle, Home, TestCa, command_line, container_sh, docker, fake_anthropic_requests, hunt_script,
    set_fake_turns, start_fake_anthropic, start_upstream,
};
use serde_json::{Value, json};

/// The host's Claude credential; the agent must only ever see the placeholder.
const TOKEN: &str = "sk-ant-oat01-bottle-test-Q7m2Xr9Lk4Vw8Zp3";
const CANARY: &str = "canary-value-5Rt8Yu2Io";
const PLACEHOLDER: &str = "claude-bottle-placeholder-not-a-credential";

/// The executable the tests run: never skipped, so a missing one fails with the fix.
fn claude_bin() -> String {
    std::env::var("CLAUDE_BOTTLE_CLAUDE_BIN").unwrap_or_else(|_| {
        panic!(
            "CLAUDE_BOTTLE_CLAUDE_BIN is not set: run `export CLAUDE_BOTTLE_CLAUDE_BIN=$(scripts/claude-from-pypi)` \
             (scripts/test does) so these tests run the real Claude Code"
        )
    })
}

/// A bottle whose agent image has the native Claude Code, trusting the test CA for the fake.
fn claude_home(ca: &TestCa, env: &str) -> Home {
    let mut home = Home::new();
    let ca_path = home.dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    home.env
        .insert("CLAUDE_BOTTLE_OAUTH_TOKEN".into(), TOKEN.into());
    home.env
        .insert("CLAUDE_BOTTLE_CLAUDE_BIN".into(), claude_bin());
    home.env
        .insert("CLAUDE_BOTTLE_INSTALL_CLAUDE".into(), "1".into());
    home.write(
        "bottles",
        "coder",
        &format!(
            "---\nenv:\n  CANARY: {CANARY}\n{env}\
egress:\n  allow_private: [172.16.0.0/12, 192.168.0.0/16, 10.0.0.0/8]\n  extra_ca: {ca}\n\
supervise: true\n---\n",
            ca = ca_path.display()
        ),
    );
    // The agent's command keeps the bottle up; each test runs `claude` in it through `exec`.
    home.write(
        "agents",
        "coder",
        "---\nbottle: coder\ncommand: \"sleep 100000\"\n---\nYou are a test agent.\n",
    );
    home
}

/// Waits until the fake answers through the bundle (a 404 for `/`).
fn wait_for_fake(bottle: &Bottle<'_>) {
    let ok = bottle.sh_ok(
        "for i in $(seq 100); do c=$(curl -s -o /dev/null -w '%{http_code}' https://api.anthropic.com/); \
         [ \"$c\" = 404 ] && echo up && exit 0; sleep 0.2; done; echo \"last $c\"",
    );
    assert_eq!(ok.trim(), "up", "the fake Anthropic API never answered");
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_runs_in_a_bottle_with_the_hosts_token_only() {
    let ca = TestCa::new();
    let home = claude_home(&ca, "");
    let bottle = home.start_detached("coder");
    let docker = docker().await;
    let fake = start_fake_anthropic(
        &docker,
        &bottle.id,
        &bottle.network(),
        &ca,
        r#"[{"text": "Hello from the fake model."}]"#,
    )
    .await;
    wait_for_fake(&bottle);
    let before = fake_anthropic_requests(&docker, &fake).await.len();

    let version = bottle.sh_ok("claude --version");
    assert!(version.contains("Claude Code"), "{version}");
    let out = bottle.sh("cd ~/work && timeout 150 claude -p 'Say hello.'");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "claude -p failed ({:?}):\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Hello from the fake model."), "{stdout}");

    // Every request Claude made carried the host's token, injected by the bundle, and none
    // the placeholder the agent holds.
    let requests = fake_anthropic_requests(&docker, &fake).await;
    let claude_requests = &requests[before..];
    assert!(
        claude_requests
            .iter()
            .any(|r| r["path"].as_str().unwrap_or("").starts_with("/v1/messages")),
        "no /v1/messages request reached the fake: {claude_requests:#?}"
    );
    for r in claude_requests {
        assert_eq!(
            r["headers"]["authorization"].as_str(),
            Some(format!("Bearer {TOKEN}").as_str()),
            "a request without the host's token: {}",
            r["path"]
        );
        assert!(
            !r.to_string().contains(PLACEHOLDER),
            "the placeholder reached the upstream: {}",
            r["path"]
        );
    }
    // Telemetry and non-essential traffic are off by default.
    for r in claude_requests {
        let path = r["path"].as_str().unwrap_or("");
        assert!(
            !path.contains("event_logging") && !path.contains("/api/eval"),
            "telemetry was sent by default: {path}"
        );
    }

    // The real token is nowhere in the agent, which Claude Code has now run in; the canary
    // (a value the agent does hold) proves the hunt finds what is there.
    assert_eq!(bottle.sh_ok(&hunt_script(TOKEN)).trim(), "HITS []");
    let canary = bottle.sh_ok(&hunt_script(CANARY));
    assert_ne!(canary.trim(), "HITS []", "the hunt finds nothing: {canary}");

    // Every host the real client contacted is a built-in route (the built-ins are exactly what
    // Claude Code needs; see `launcher/src/plan.rs`, DEFAULT_ROUTES). The probe above used the
    // same host.
    let audit = container_sh(
        &docker,
        &format!("claude-bottle-{}-bundle", bottle.id),
        "cat /var/log/bottle/audit.jsonl",
    )
    .await;
    let hosts: std::collections::BTreeSet<String> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["host"].as_str().map(str::to_owned))
        .collect();
    assert!(!hosts.is_empty(), "no audit lines: {audit}");
    assert_eq!(
        hosts.into_iter().collect::<Vec<_>>(),
        ["api.anthropic.com"],
        "Claude Code contacted hosts outside the built-in routes"
    );
    drop(bottle);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bottle_can_turn_claude_codes_telemetry_back_on() {
    let ca = TestCa::new();
    let home = claude_home(
        &ca,
        "  DISABLE_TELEMETRY: \"\"\n  CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: \"\"\n",
    );
    let bottle = home.start_detached("coder");
    let docker = docker().await;
    let fake = start_fake_anthropic(&docker, &bottle.id, &bottle.network(), &ca, "[]").await;
    wait_for_fake(&bottle);
    let out = bottle.sh("cd ~/work && timeout 150 claude -p 'Say hello.'");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paths: Vec<String> = fake_anthropic_requests(&docker, &fake)
        .await
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_owned))
        .collect();
    assert!(
        paths
            .iter()
            .any(|p| p.contains("event_logging") || p.contains("/api/eval")),
        "with telemetry back on, Claude Code sent none: {paths:?}"
    );
    drop(bottle);
}

/// The identity of the bottle an attached `start` under `tmux` connected to.
fn attached_id(tmux: &e2e::tmux::Tmux) -> String {
    let screen = tmux.wait_for(
        "the attached bottle",
        std::time::Duration::from_secs(300),
        |s| s.contains("attached to ") || s.contains("EXIT="),
    );
    screen
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("attached to ")?
                .split_whitespace()
                .next()
        })
        .unwrap_or_else(|| panic!("start did not attach:\n{screen}"))
        .to_owned()
}

/// Claude Code's own screen: its prompt box, no trust or onboarding dialog in the way.
fn wait_for_prompt(tmux: &e2e::tmux::Tmux) {
    tmux.wait_for(
        "Claude Code's prompt",
        std::time::Duration::from_secs(90),
        |s| s.contains("Claude Code v") && s.contains('❯') && !s.contains("trust this folder"),
    );
}

/// Types `/exit` and returns the screen once the launcher has exited.
fn exit_claude(tmux: &e2e::tmux::Tmux) -> String {
    tmux.literal("/exit");
    // Claude Code's command menu opens on `/`; Enter before it settles is lost.
    std::thread::sleep(std::time::Duration::from_millis(500));
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        "the launcher to exit",
        std::time::Duration::from_secs(60),
        |s| s.contains("EXIT="),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_claude_code_shows_the_reply_and_exit_removes_the_bottle() {
    use std::time::Duration;
    let ca = TestCa::new();
    let home = claude_home(&ca, "");
    // The agent runs the default command, Claude Code itself, on the operator's terminal.
    home.write(
        "agents",
        "chat",
        "---\nbottle: coder\n---\nYou are a test agent.\n",
    );
    let tmux = e2e::tmux::Tmux::start(
        "claude",
        &command_line(&home, &["start", "chat", "-y"]),
        140,
        45,
    );
    let id = attached_id(&tmux);
    let docker = docker().await;
    let network = e2e::upstream_network(&id);
    let fake = start_fake_anthropic(
        &docker,
        &id,
        &network,
        &ca,
        r#"[{"text": "Interactive hello from the fake model."}]"#,
    )
    .await;
    wait_for_prompt(&tmux);
    // The bottle's default permission mode, with no "are you sure" dialog in the way.
    tmux.wait_for("bypass permissions mode", Duration::from_secs(30), |s| {
        s.to_lowercase().contains("bypass permissions")
    });
    tmux.literal("Say hello.");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the fake model's reply", Duration::from_secs(120), |s| {
        s.contains("Interactive hello from the fake model.")
    });
    assert!(
        fake_anthropic_requests(&docker, &fake)
            .await
            .iter()
            .any(|r| r["path"].as_str().unwrap_or("").starts_with("/v1/messages")),
        "the reply did not come from the fake"
    );
    let end = exit_claude(&tmux);
    assert!(end.contains("EXIT=0"), "{end}");
    assert!(end.contains(&format!("bottle {id} removed")), "{end}");
    assert!(
        e2e::leftovers(&docker, &id).await.is_empty(),
        "objects survived the bottle"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_stream_through_the_bundle_and_supervise_is_claude_codes_mcp_server() {
    let ca = TestCa::new();
    let home = claude_home(&ca, "");
    let bottle = home.start_detached("coder");
    let docker = docker().await;
    // Turn 0: five text deltas 300 ms apart.
    let fake = start_fake_anthropic(
        &docker,
        &bottle.id,
        &bottle.network(),
        &ca,
        r#"[{"text": "one two three four five", "chunks": 5, "delay_ms": 300}]"#,
    )
    .await;
    wait_for_fake(&bottle);

    // Each stream-json line stamped with the time the agent's shell read it.
    let out = bottle.sh_ok(
        "cd ~/work && timeout 150 claude -p --output-format stream-json --include-partial-messages \
         --verbose 'Count.' | while IFS= read -r line; do echo \"$(date +%s.%N) $line\"; done",
    );
    let deltas: Vec<f64> = out
        .lines()
        .filter(|l| l.contains("text_delta"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(deltas.len(), 5, "expected five text deltas:\n{out}");
    let spread = deltas[4] - deltas[0];
    assert!(
        spread >= 1.0,
        "the deltas arrived together ({spread:.3} s apart), not as the fake sent them: {deltas:?}"
    );

    // Claude Code's own MCP client connects to the bundle's supervise server.
    let list = bottle.sh_ok("cd ~/work && timeout 60 claude mcp list");
    assert!(
        list.contains("supervise") && list.contains("Connected"),
        "supervise is not connected:\n{list}"
    );
    drop(fake);
    drop(bottle);
}

/// The text of every `tool_result` the client sent back in `requests` (Claude Code returns
/// each tool's output to the model in the next `/v1/messages` request).
fn tool_results(requests: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for r in requests {
        let Ok(body) = serde_json::from_str::<Value>(r["body"].as_str().unwrap_or("")) else {
            continue;
        };
        for m in body["messages"].as_array().into_iter().flatten() {
            for part in m["content"].as_array().into_iter().flatten() {
                if part["type"] == "tool_result" {
                    out.push(part["content"].to_string());
                }
            }
        }
    }
    out
}

/// A fake-model session that loads supervise's `tool` (Claude Code defers MCP tools: the
/// model selects it through `ToolSearch` first), calls it with `input`, then ends the turn.
fn supervise_turns(tool: &str, input: Value, then: &[Value]) -> Value {
    let name = format!("mcp__supervise__{tool}");
    let mut turns = vec![
        json!({"tool_use": {"name": "ToolSearch", "input": {"query": format!("select:{name}")}}}),
        json!({"tool_use": {"name": name, "input": input}}),
    ];
    turns.extend(then.iter().cloned());
    turns.push(json!({"text": "Done."}));
    Value::Array(turns)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_claude_code_asks_through_supervise_and_uses_the_approved_route() {
    let ca = TestCa::new();
    let home = claude_home(&ca, "");
    let bottle = home.start_detached("coder");
    let docker = docker().await;
    let fake = start_fake_anthropic(&docker, &bottle.id, &bottle.network(), &ca, "[]").await;
    start_upstream(&docker, &bottle.id, &bottle.network(), "api.test", &ca).await;
    wait_for_fake(&bottle);
    let claude_p = |prompt: &str| {
        let out = bottle.sh(&format!("cd ~/work && timeout 150 claude -p '{prompt}'"));
        assert!(
            out.status.success(),
            "claude -p failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let results_since = |n: usize| {
        let docker = docker.clone();
        let fake = fake.clone();
        async move {
            let requests = fake_anthropic_requests(&docker, &fake).await;
            tool_results(&requests[n.min(requests.len())..])
        }
    };

    // 1. The model lists the bottle's routes through Claude Code's own MCP client.
    set_fake_turns(
        &docker,
        &fake,
        &supervise_turns("list-egress-routes", json!({}), &[]),
    )
    .await;
    let seen = fake_anthropic_requests(&docker, &fake).await.len();
    claude_p("Which hosts can you reach?");
    let results = results_since(seen).await;
    assert!(
        results.iter().any(|r| r.contains("api.anthropic.com")),
        "list-egress-routes did not return the bottle's routes: {results:#?}"
    );

    // 2. It asks for a host the bottle does not route; the operator sees the proposal.
    let refused = bottle.sh("curl -sS -o /dev/null -w '%{http_code}' https://api.test/hello");
    assert_eq!(String::from_utf8_lossy(&refused.stdout).trim(), "403");
    let why = "the task needs the test API";
    set_fake_turns(
        &docker,
        &fake,
        &supervise_turns(
            "egress-block",
            json!({"host": "api.test", "justification": why}),
            &[],
        ),
    )
    .await;
    let seen = fake_anthropic_requests(&docker, &fake).await.len();
    claude_p("Fetch https://api.test/hello.");
    let results = results_since(seen).await;
    let proposals = home.queue(&bottle.id).join("proposals");
    let pid = std::fs::read_dir(&proposals)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json").map(str::to_owned)
        })
        .find(|n| !n.starts_with('.'))
        .unwrap_or_else(|| panic!("egress-block filed no proposal: {results:#?}"));
    assert!(
        results.iter().any(|r| r.contains(&pid)),
        "the tool result does not name the proposal {pid}: {results:#?}"
    );
    let once = home.run(&["dashboard", "--once"]);
    let shown = String::from_utf8_lossy(&once.stdout);
    assert!(
        once.status.success() && shown.contains("api.test") && shown.contains(why),
        "the dashboard does not show the request:\n{shown}"
    );

    // 3. Approved: the model sees it through proposal-status, and its Bash tool reaches the
    //    host (no permission prompt: the bottle's default mode asks for nothing).
    let approved = home.run(&["approve", &pid]);
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    let fetch = "for i in $(seq 50); do curl -sS --fail https://api.test/hello && exit 0; sleep 0.2; done; exit 1";
    set_fake_turns(
        &docker,
        &fake,
        &supervise_turns(
            "proposal-status",
            json!({"id": pid, "wait_seconds": 10}),
            &[json!({"tool_use": {"name": "Bash", "input": {
                "command": fetch, "description": "Fetch the approved host"}}})],
        ),
    )
    .await;
    let seen = fake_anthropic_requests(&docker, &fake).await.len();
    claude_p("Is it approved? Then fetch it.");
    let results = results_since(seen).await;
    assert!(
        results.iter().any(|r| r.contains("approved")),
        "proposal-status did not say approved: {results:#?}"
    );
    assert!(
        results.iter().any(|r| r.contains("/hello")),
        "the Bash tool did not reach the approved host: {results:#?}"
    );
    drop(bottle);
}

/// The README's main job: `claude-bottle init`, then `claude-bottle start example` on a
/// terminal, with the shipped example manifests and the native Claude Code. No real API is
/// reachable here, so Claude Code must start, show its prompt, and exit cleanly on `/exit`.
#[tokio::test(flavor = "multi_thread")]
async fn the_main_job_starts_claude_code_in_the_example_bottle() {
    use std::time::Duration;
    let mut home = Home::new();
    home.env
        .insert("CLAUDE_BOTTLE_OAUTH_TOKEN".into(), TOKEN.into());
    home.env
        .insert("CLAUDE_BOTTLE_CLAUDE_BIN".into(), claude_bin());
    let init = home.run(&["init"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let tmux = e2e::tmux::Tmux::start(
        "main-job",
        &command_line(&home, &["start", "example"]),
        140,
        45,
    );
    let plan = tmux.wait_for("the plan and its question", Duration::from_secs(60), |s| {
        s.contains("Start this bottle?") || s.contains("EXIT=")
    });
    assert!(
        plan.contains("claude     native 2.") && plan.contains("mode       bypassPermissions"),
        "the plan does not say where Claude Code comes from:\n{plan}"
    );
    tmux.literal("y");
    tmux.keys(&["Enter"]);
    let id = attached_id(&tmux);
    wait_for_prompt(&tmux);
    let end = exit_claude(&tmux);
    assert!(end.contains("EXIT=0"), "{end}");
    let docker = docker().await;
    assert!(
        e2e::leftovers(&docker, &id).await.is_empty(),
        "objects survived the bottle"
    );
}
