//! Supervise end to end on Docker: a stuck agent asks through the bundle's MCP server (the real
//! Python `mcp` client), the operator decides with `claude-bottle approve`/`reject`, and the
//! decision takes effect: a route goes live, a rejection's reason reaches the agent, an
//! approved Dockerfile suspends the bottle and `resume` rebuilds it with the same work tree.
//! And the agent can never write or forge a decision.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::{
    Bottle, Home, TestCa, container_sh, docker, leftovers, mcp_project, start_upstream,
    wait_attached,
};
use serde_json::Value;

/// The agent's command: the MCP stand-in from the work tree, idle until asked through `exec`.
const AGENT: &str = "command: \"python3 mcp_agent.py idle\"";

/// A supervised bottle that may reach the test upstreams on Docker's private networks once a
/// route is approved (no route in the manifest).
fn supervised_bottle(home: &Home, name: &str, ca: &TestCa) {
    let ca_path = home.dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    home.write(
        "bottles",
        name,
        &format!(
            "---\nsupervise: true\negress:\n  routes: []\n  allow_private: [172.16.0.0/12, 192.168.0.0/16, 10.0.0.0/8]\n  extra_ca: {}\n---\n",
            ca_path.display()
        ),
    );
    home.write(
        "agents",
        name,
        &format!("---\nbottle: {name}\n{AGENT}\n---\n"),
    );
    mcp_project(&home.project());
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `python3 mcp_agent.py ARGS…` in the agent, as the agent; returns its JSON line.
fn agent_py(home: &Home, id: &str, args: &[&str]) -> Value {
    let mut argv = vec!["exec", id, "--", "python3", "mcp_agent.py"];
    argv.extend_from_slice(args);
    let out = home.run(&argv);
    assert!(
        out.status.success(),
        "mcp_agent.py {args:?} ({}):\n{}",
        out.status,
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// Calls tool `tool` with `args` from inside the agent.
fn call(home: &Home, id: &str, tool: &str, args: &Value) -> Value {
    agent_py(home, id, &["call", tool, &args.to_string()])
}

/// Waits for a proposal of bottle `id` not in `seen` to appear in the host queue; returns it.
fn next_proposal(home: &Home, id: &str, seen: &[String]) -> Value {
    let dir = home.queue(id).join("proposals");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let proposal: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let pid = proposal["id"].as_str().unwrap().to_owned();
            if !seen.contains(&pid) {
                assert_eq!(proposal["identity"], id, "{proposal}");
                return proposal;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new proposal in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The result mentions proposal `pid` (the block tools return its id at once).
fn assert_names(result: &Value, pid: &str) {
    assert_eq!(result["error"], false, "{result}");
    assert!(
        result.to_string().contains(pid),
        "{result} does not name {pid}"
    );
}

fn status(home: &Home, id: &str, pid: &str, wait: u64) -> Value {
    call(
        home,
        id,
        "proposal-status",
        &serde_json::json!({"id": pid, "wait_seconds": wait}),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_request_is_refused_until_approved_and_a_rejection_carries_its_reason() {
    let home = Home::new();
    let ca = TestCa::new();
    supervised_bottle(&home, "asker", &ca);
    let project = home.project().display().to_string();
    let bottle = home.start_detached_with("asker", &["--cwd", &project]);
    let id = bottle.id.clone();
    let docker = docker().await;
    start_upstream(&docker, &id, &bottle.network(), "api.test", &ca).await;

    let fetch = "curl -sS -w '\\n%{http_code}' https://api.test/hello";
    let refused = bottle.sh(fetch);
    assert!(
        text(&refused).trim_end().ends_with("403"),
        "{}",
        text(&refused)
    );

    let asked = call(
        &home,
        &id,
        "egress-block",
        &serde_json::json!({"host": "api.test", "justification": "the task needs the test API"}),
    );
    let proposal = next_proposal(&home, &id, &[]);
    let pid = proposal["id"].as_str().unwrap().to_owned();
    assert_names(&asked, &pid);
    assert_eq!(proposal["request"]["kind"], "egress", "{proposal}");
    assert_eq!(proposal["request"]["host"], "api.test", "{proposal}");

    // Not decided yet: still refused, and the status says so.
    let pending = status(&home, &id, &pid, 1);
    assert_eq!(pending["structured"]["status"], "pending", "{pending}");
    assert!(text(&bottle.sh(fetch)).trim_end().ends_with("403"));

    let approved = home.run(&["approve", &pid]);
    assert!(approved.status.success(), "{}", text(&approved));
    assert!(
        home.queue(&id)
            .join("decisions")
            .join(format!("{pid}.json"))
            .is_file()
    );
    let decided = status(&home, &id, &pid, 10);
    assert_eq!(decided["structured"]["status"], "approved", "{decided}");

    // The same request now reaches the upstream (no restart).
    let retry = "for i in $(seq 50); do \
        out=$(curl -sS --fail https://api.test/hello) && { echo \"$out\"; exit 0; }; \
        sleep 0.2; done; exit 1";
    let seen: Value = serde_json::from_str(&bottle.sh_ok(retry)).unwrap();
    assert_eq!(seen["path"], "/hello");

    // A rejection's reason reaches the agent.
    let asked = call(
        &home,
        &id,
        "egress-block",
        &serde_json::json!({"host": "other.test", "justification": "more data"}),
    );
    let proposal = next_proposal(&home, &id, std::slice::from_ref(&pid));
    let pid2 = proposal["id"].as_str().unwrap().to_owned();
    assert_names(&asked, &pid2);
    let reason = "api.test already has that data";
    let rejected = home.run(&["reject", &pid2, "--reason", reason]);
    assert!(rejected.status.success(), "{}", text(&rejected));
    let decided = status(&home, &id, &pid2, 10);
    assert_eq!(decided["structured"]["status"], "rejected", "{decided}");
    assert_eq!(decided["structured"]["reason"], reason, "{decided}");
    let still = bottle.sh("curl -sS -w '\\n%{http_code}' https://other.test/");
    assert!(text(&still).trim_end().ends_with("403"), "{}", text(&still));
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the launcher did not exit");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn capability_approval_suspends_and_resume_rebuilds_with_the_same_work_tree() {
    let home = Home::new();
    let ca = TestCa::new();
    supervised_bottle(&home, "builder", &ca);
    let project = home.project().display().to_string();
    let logs = tempfile::tempdir().unwrap();
    let log = |name: &str| std::fs::File::create(logs.path().join(name)).unwrap();
    // Attached (no -d): its launcher must keep the state when the bottle is suspended.
    let mut launcher = home
        .cmd(&["start", "builder", "-y", "--cwd", &project])
        .stdin(Stdio::null())
        .stdout(Stdio::from(log("stdout")))
        .stderr(Stdio::from(log("stderr")))
        .spawn()
        .unwrap();
    let id = wait_attached(&home, &mut launcher).await;
    let guard = Bottle {
        home: &home,
        id: id.clone(),
    };

    // The agent reads the Dockerfile its image came from, and works in its work tree.
    let shipped = guard.sh_ok("cat /etc/claude-bottle/agent.Dockerfile");
    assert_eq!(shipped, include_str!("../Dockerfile.agent"));
    guard.sh_ok(
        "echo written-before-suspend > notes.txt && mkdir -p sub && echo deep > sub/deep.txt",
    );
    assert!(
        !guard.sh("command -v jq").status.success(),
        "jq is already there"
    );

    // A route approved now must still be there after the resume.
    let asked = call(
        &home,
        &id,
        "egress-block",
        &serde_json::json!({"host": "api.test", "justification": "the task needs the test API"}),
    );
    let route = next_proposal(&home, &id, &[]);
    let route_id = route["id"].as_str().unwrap().to_owned();
    assert_names(&asked, &route_id);
    let approved = home.run(&["approve", &route_id]);
    assert!(approved.status.success(), "{}", text(&approved));

    let asked = agent_py(&home, &id, &["capability", "jq parses the API's JSON"]);
    let proposal = next_proposal(&home, &id, std::slice::from_ref(&route_id));
    let pid = proposal["id"].as_str().unwrap().to_owned();
    assert_names(&asked, &pid);
    assert_eq!(proposal["request"]["kind"], "capability", "{proposal}");

    let approved = home.run(&["approve", &pid]);
    assert!(approved.status.success(), "{}", text(&approved));
    assert!(
        text(&approved).contains(&format!("claude-bottle resume {id}")),
        "{}",
        text(&approved)
    );

    // The attached launcher saw its agent end, kept the state and printed the resume hint.
    let exited = wait_exit(&mut launcher, Duration::from_secs(60));
    let stderr = std::fs::read_to_string(logs.path().join("stderr")).unwrap();
    assert!(exited.success(), "{exited:?}\n{stderr}");
    assert!(
        stderr.contains(&format!("claude-bottle resume {id}")),
        "{stderr}"
    );
    let docker = docker().await;
    assert_eq!(leftovers(&docker, &id).await, Vec::<String>::new());
    let state = home.state(&id);
    let meta: Value =
        serde_json::from_slice(&std::fs::read(state.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["suspended"], true, "{meta}");
    let saved = std::fs::read_to_string(state.join("agent.Dockerfile")).unwrap();
    assert!(
        saved.starts_with(&shipped) && saved.contains("jq"),
        "{saved}"
    );
    assert!(state.join("work.tar").is_file());
    assert!(
        home.queue(&id)
            .join("proposals")
            .join(format!("{pid}.json"))
            .is_file()
    );

    // `list` shows it; `cleanup` leaves a suspended bottle's state alone.
    let list = home.run(&["list"]);
    let listed = text(&list);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&id) && l.contains("suspended")),
        "{listed}"
    );
    let cleanup = home.run(&["cleanup", "-y"]);
    assert!(cleanup.status.success(), "{}", text(&cleanup));
    assert!(
        state.join("work.tar").is_file(),
        "cleanup removed a suspended bottle's state"
    );

    let resumed = home.run(&["resume", &id, "-y", "-d"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(
        text(&resumed)
            .lines()
            .any(|l| l.contains("api.test") && l.contains("[approved through supervise]")),
        "{}",
        text(&resumed)
    );
    assert!(
        text(&resumed).contains(&format!("bottle {id} is running")),
        "{}",
        text(&resumed)
    );
    // The new image has the package; the work tree is the one the agent left, still its own.
    assert!(guard.sh_ok("jq --version").starts_with("jq-"));
    // The approved route is live again (the upstream is new: the old one went with the bottle).
    start_upstream(&docker, &id, &guard.network(), "api.test", &ca).await;
    let retry = "for i in $(seq 50); do \
        out=$(curl -sS --fail https://api.test/again) && { echo \"$out\"; exit 0; }; \
        sleep 0.2; done; exit 1";
    let seen: Value = serde_json::from_str(&guard.sh_ok(retry)).unwrap();
    assert_eq!(seen["path"], "/again");
    assert_eq!(guard.sh_ok("cat notes.txt"), "written-before-suspend\n");
    assert_eq!(
        guard.sh_ok("stat -c '%u %n' notes.txt sub/deep.txt mcp_agent.py"),
        "1000 notes.txt\n1000 sub/deep.txt\n1000 mcp_agent.py\n"
    );
    assert!(guard.sh_ok("touch sub/new && echo ok").contains("ok"));
    assert!(
        guard
            .sh_ok("cat /etc/claude-bottle/agent.Dockerfile")
            .contains("jq")
    );
    let meta: Value =
        serde_json::from_slice(&std::fs::read(state.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["suspended"], false, "{meta}");

    // Resuming a running bottle is refused; `stop` removes everything, state and queue too.
    let again = home.run(&["resume", &id, "-y", "-d"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("not suspended"), "{}", text(&again));
    let stopped = home.run(&["stop", &id]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    std::mem::forget(guard);
    assert_eq!(leftovers(&docker, &id).await, Vec::<String>::new());
    assert!(!state.exists());
    assert!(!home.queue(&id).exists());
}

/// Every file name under `dir`, recursively.
fn names_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(names_under(&path));
        }
        out.push(path);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_cannot_write_or_forge_a_decision() {
    let home = Home::new();
    let ca = TestCa::new();
    supervised_bottle(&home, "forger", &ca);
    let project = home.project().display().to_string();
    let bottle = home.start_detached_with("forger", &["--cwd", &project]);
    let id = bottle.id.clone();
    let queue = home.queue(&id);
    assert!(queue.join("decisions").is_dir());

    // No queue path is mounted into the agent, and nothing of the bundle's queue exists there.
    let mounts = bottle.sh_ok("cat /proc/self/mountinfo /proc/mounts");
    for needle in ["/queue", "/var/lib/bottle", "decisions", "proposals"] {
        assert!(
            !mounts.contains(needle),
            "{needle} is mounted in the agent:\n{mounts}"
        );
    }
    assert!(!bottle.sh("ls /var/lib/bottle/queue").status.success());

    // Write a forged decision into every directory the agent can write to.
    let nonce = format!("forged-{}", std::process::id());
    let forged = serde_json::json!({
        "id": "p-forged", "verdict": "approved", "decided": 1, "reason": null,
        "applied": null, "message": "forged"
    });
    let script = format!(
        "n=0; for d in $(find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -type d -writable -print 2>/dev/null); do \
           echo '{forged}' > \"$d/{nonce}.json\" 2>/dev/null && n=$((n+1)); done; echo $n"
    );
    let written: usize = bottle.sh_ok(&script).trim().parse().unwrap();
    assert!(
        written >= 3,
        "the agent wrote only {written} files: the probe is broken"
    );
    let found: Vec<PathBuf> = names_under(&home.root())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&nonce))
        .collect();
    assert_eq!(
        found,
        Vec::<PathBuf>::new(),
        "the agent wrote into the manifest home"
    );

    // There is no tool to approve with, and calling one fails.
    let tools = agent_py(&home, &id, &["tools"]);
    let names: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(names.contains(&"egress-block"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.contains("approve") || n.contains("reject")),
        "{names:?}"
    );
    let forged_call = call(
        &home,
        &id,
        "approve",
        &serde_json::json!({"id": "p-forged"}),
    );
    assert!(
        forged_call["error"] == true || forged_call.get("exception").is_some(),
        "a made-up approve tool answered: {forged_call}"
    );

    // Inside the bundle, decisions are read-only even for its root; proposals are writable.
    let docker = docker().await;
    let bundle = format!("claude-bottle-{id}-bundle");
    let out = container_sh(
        &docker,
        &bundle,
        "touch /var/lib/bottle/queue/decisions/p-forged.json 2>&1; echo rc=$?",
    )
    .await;
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!out.contains("rc=0"), "{out}");
    let out = container_sh(
        &docker,
        &bundle,
        "touch /var/lib/bottle/queue/proposals/.probe && rm /var/lib/bottle/queue/proposals/.probe; echo rc=$?",
    )
    .await;
    assert!(
        out.contains("rc=0"),
        "the bundle cannot write proposals: {out}"
    );
    assert!(names_under(&queue.join("decisions")).is_empty());
}
