//! Bottles on the real Docker engine: start from the shipped examples, reach a routed
//! upstream with the credential injected, and leave nothing behind after `stop` or, when the
//! launcher was SIGKILLed, after `cleanup`.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use std::time::Duration;

use e2e::tmux::Tmux;
use e2e::{
    Home, TestCa, command_line, container_sh, docker, egress_networks, hunt_script, leftovers,
    start_upstream, wait_attached,
};

/// The agent command for tests: stay up until stopped.
const IDLE: &str = "command: \"sleep 100000\"";

#[tokio::test(flavor = "multi_thread")]
async fn example_bottle_starts_refuses_unrouted_hosts_and_stop_removes_everything() {
    let home = Home::new();
    let example = include_str!("../examples/bottles/example.md");
    home.write("bottles", "example", example);
    // The project's agent (same name, wins with a notice) runs a shell instead of `claude`.
    let agents = home.project().join(".claude-bottle/agents");
    std::fs::create_dir_all(&agents).unwrap();
    std::fs::write(
        agents.join("example.md"),
        format!("---\nbottle: example\n{IDLE}\n---\nTest agent.\n"),
    )
    .unwrap();

    let bottle = home.start_detached("example");
    let id = bottle.id.clone();
    let docker = docker().await;
    assert_eq!(
        leftovers(&docker, &id).await.len(),
        3,
        "agent, bundle, socket volume"
    );
    assert!(
        home.root()
            .join("state")
            .join(&id)
            .join("metadata.json")
            .exists()
    );

    // The bottle's env reaches the agent; its proxy settings point at the bundle.
    assert_eq!(
        bottle.sh_ok("echo \"$GIT_AUTHOR_NAME\"").trim(),
        "Example Agent"
    );
    assert_eq!(
        bottle.sh_ok("echo $HTTPS_PROXY").trim(),
        "http://bundle:9099"
    );
    // The routes are introspectable, without secrets.
    let routes = bottle.sh_ok("curl -sS http://egress.local/routes");
    assert!(routes.contains("api.github.com"), "{routes}");
    // A host with no route is refused by the bundle, naming the host and the way to ask.
    let refused = bottle.sh("curl -sS -w '\\n%{http_code}' https://not-routed.example.org/");
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(text.trim_end().ends_with("403"), "{text}");
    assert!(text.contains("not-routed.example.org"), "{text}");
    assert!(text.contains("egress-block"), "{text}");

    let out = home.run(&["stop", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::mem::forget(bottle); // Already stopped.
    assert_eq!(leftovers(&docker, &id).await, Vec::<String>::new());
    assert!(!home.root().join("state").join(&id).exists());
    // It was the home's only bottle: the shared egress network went with it.
    assert_eq!(
        egress_networks(&docker, &home).await,
        Vec::<String>::new(),
        "the home's egress network outlived its last bottle"
    );
    // Stopping again says there is no such bottle.
    let again = home.run(&["stop", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no bottle"));
}

#[tokio::test(flavor = "multi_thread")]
async fn routed_upstream_sees_the_injected_credential_never_the_agents() {
    let mut home = Home::new();
    let ca = TestCa::new();
    let ca_path = home.dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    let token = "e2e-upstream-token-Zq81x";
    home.env.insert("E2E_TOKEN".into(), token.into());
    home.write(
        "bottles",
        "routed",
        &format!(
            "---\nenv:\n  CANARY: planted-canary-value-77\negress:\n  routes:\n    - host: api.test\n      auth: {{scheme: Bearer, token_ref: E2E_TOKEN}}\n  allow_private: [172.16.0.0/12, 192.168.0.0/16, 10.0.0.0/8]\n  extra_ca: {}\n---\n",
            ca_path.display()
        ),
    );
    home.write(
        "agents",
        "routed",
        &format!("---\nbottle: routed\n{IDLE}\n---\n"),
    );

    let bottle = home.start_detached("routed");
    let docker = docker().await;
    let upstream = start_upstream(&docker, &bottle.id, &bottle.network(), "api.test", &ca).await;
    let masked = format!("Bearer {}", "*".repeat(token.len()));

    // curl, with an Authorization of its own that must not reach the upstream.
    let script = "for i in $(seq 50); do \
        out=$(curl -sS --fail https://api.test/hello -H 'Authorization: Bearer agent-own') && { echo \"$out\"; exit 0; }; \
        sleep 0.2; done; exit 1";
    let seen: serde_json::Value = serde_json::from_str(&bottle.sh_ok(script)).unwrap();
    assert_eq!(seen["path"], "/hello");
    // The upstream got the injected token (its log); its echo reaches the agent masked.
    assert_eq!(seen["headers"]["authorization"], masked);
    assert!(!seen.to_string().contains("agent-own"), "{seen}");
    let log = container_sh(&docker, &upstream, "cat /tmp/requests.jsonl").await;
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["headers"]["authorization"], format!("Bearer {token}"));

    // Python requests, trusting the bottle's CA through REQUESTS_CA_BUNDLE.
    let py = bottle.sh_ok(
        "python3 -c 'import requests; print(requests.post(\"https://api.test/py\", data=\"x\").json()[\"headers\"][\"authorization\"])'",
    );
    assert_eq!(py.trim(), masked);

    // The token is nowhere the agent can look: env, any process's environment or command
    // line, any readable file.
    let found = bottle.sh_ok(&hunt_script(token));
    assert_eq!(
        found.trim(),
        "HITS []",
        "the agent can see the upstream token"
    );
    // The hunt does find what the agent was given (so the check above can fail).
    let canary = bottle.sh_ok(&hunt_script("planted-canary-value-77"));
    assert!(canary.contains("'env'"), "{canary}");
    assert!(canary.contains(".claude-bottle-env"), "{canary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_removes_what_a_sigkilled_launcher_left() {
    let home = Home::new();
    home.write("bottles", "killed", "---\negress:\n  routes: []\n---\n");
    home.write(
        "agents",
        "killed",
        &format!("---\nbottle: killed\n{IDLE}\n---\n"),
    );
    let mut launcher = home
        .cmd(&["start", "killed", "-y"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    // Wait until the bottle is attached: its agent runs and its state exists.
    let id = wait_attached(&home, &mut launcher).await;
    let docker = docker().await;

    launcher.kill().unwrap(); // SIGKILL: no teardown can run.
    launcher.wait().unwrap();
    assert_eq!(
        leftovers(&docker, &id).await.len(),
        3,
        "SIGKILL left the bottle"
    );

    // A detached bottle of another agent is not an orphan and must survive the cleanup.
    home.write(
        "agents",
        "keeper",
        &format!("---\nbottle: killed\n{IDLE}\n---\n"),
    );
    let keeper = home.start_detached("keeper");

    assert_listed_orphaned(&home, &id, &keeper.id);

    let out = home.run(&["cleanup", "-y"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&id), "{text}");
    assert!(
        !text.contains(&keeper.id),
        "cleanup planned to remove a live bottle:\n{text}"
    );
    assert_eq!(leftovers(&docker, &id).await, Vec::<String>::new());
    assert!(!home.root().join("state").join(&id).exists());
    assert_eq!(leftovers(&docker, &keeper.id).await.len(), 3);
}

/// The identity of the one bottle with state in `home`, once its agent container runs (its
/// command waiting for the ready file while the launcher provisions it).
async fn agent_container_running(
    home: &Home,
    launcher: &mut std::process::Child,
    docker: &bollard::Docker,
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let ids: Vec<String> = std::fs::read_dir(home.root().join("state"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(id) = ids.first() {
            let agent = format!("claude-bottle-{id}-agent");
            let running = docker
                .inspect_container(&agent, None)
                .await
                .ok()
                .and_then(|c| c.state?.running);
            if running == Some(true) {
                return id.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no running agent container"
        );
        assert!(
            launcher.try_wait().unwrap().is_none(),
            "the launcher exited early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_removes_a_detached_bottle_whose_start_was_sigkilled_during_provisioning() {
    let home = Home::new();
    home.write("bottles", "half", "---\negress:\n  routes: []\n---\n");
    home.write(
        "agents",
        "half",
        &format!("---\nbottle: half\n{IDLE}\n---\n"),
    );
    let docker = docker().await;
    let mut launcher = home
        .cmd(&["start", "half", "-y", "-d"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Provisioning (CA trust, the relay, waiting for the bundle) follows the agent's creation.
    let id = agent_container_running(&home, &mut launcher, &docker).await;
    launcher.kill().unwrap(); // SIGKILL: no rollback can run.
    let out = launcher.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("is running"),
        "the start finished before the kill; the test needs it killed earlier:\n{stdout}"
    );
    // What was left: the agent runs, its command waiting for the ready file forever, so the
    // old rules (agent not running, attached) do not apply; the state says the start never
    // finished.
    assert_eq!(
        leftovers(&docker, &id).await.len(),
        3,
        "agent, bundle, socket volume"
    );
    let agent = docker
        .inspect_container(&format!("claude-bottle-{id}-agent"), None)
        .await
        .unwrap();
    assert_eq!(agent.state.unwrap().running, Some(true));
    let probe = home.run(&["exec", &id, "--", "test", "-e", "/run/claude-bottle.ready"]);
    assert!(!probe.status.success(), "the agent was released");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.state(&id).join("metadata.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["ready"], false, "{meta}");
    assert_eq!(meta["detached"], true, "{meta}");

    // A detached bottle that did finish starting is no orphan and must survive.
    home.write(
        "agents",
        "keeper",
        &format!("---\nbottle: half\n{IDLE}\n---\n"),
    );
    let keeper = home.start_detached("keeper");

    assert_listed_orphaned(&home, &id, &keeper.id);

    let out = home.run(&["cleanup", "-y"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("bottle {id} (start did not finish)")),
        "{text}"
    );
    assert!(
        !text.contains(&keeper.id),
        "cleanup planned to remove a live bottle:\n{text}"
    );
    assert_eq!(leftovers(&docker, &id).await, Vec::<String>::new());
    assert!(!home.state(&id).exists());
    assert_eq!(leftovers(&docker, &keeper.id).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn attached_start_passes_the_exit_code_through_and_removes_the_bottle() {
    let home = Home::new();
    home.write("bottles", "brief", "---\negress:\n  routes: []\n---\n");
    home.write(
        "agents",
        "brief",
        "---\nbottle: brief\ncommand: \"echo attached-output; exit 7\"\n---\n",
    );
    let out = home
        .cmd(&["start", "brief", "-y"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stdout}\n{stderr}");
    assert!(stdout.contains("attached-output"), "{stdout}");
    let id = stderr
        .lines()
        .find_map(|l| l.strip_prefix("bottle ")?.split_whitespace().next())
        .unwrap_or_else(|| panic!("no identity in:\n{stderr}"))
        .to_owned();
    assert!(stderr.contains("removed (agent exit code 7)"), "{stderr}");
    let docker = docker().await;
    assert_eq!(leftovers(&docker, &id).await, Vec::<String>::new());
    assert!(!home.root().join("state").join(&id).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_to_an_attached_launcher_removes_the_bottle() {
    let home = Home::new();
    home.write("bottles", "termed", "---\negress:\n  routes: []\n---\n");
    home.write(
        "agents",
        "termed",
        &format!("---\nbottle: termed\n{IDLE}\n---\n"),
    );
    let mut launcher = home
        .cmd(&["start", "termed", "-y"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = wait_attached(&home, &mut launcher).await;
    let docker = docker().await;
    // Attached now; let the attach itself begin.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &launcher.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = launcher.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains(&format!("bottle {id} removed")), "{stderr}");
    assert_eq!(leftovers(&docker, &id).await, Vec::<String>::new());
    assert!(!home.root().join("state").join(&id).exists());
}

/// The relay is supervised: killed (as its own user; the agent cannot signal it), it comes back, and
/// in between the agent cannot take its port to answer in the bundle's place. The agent's
/// PID 1 is an init, so processes its command orphans are reaped, not left as zombies.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_relay_comes_back_and_the_agents_orphans_are_reaped() {
    let home = Home::new();
    home.write("bottles", "relayed", "---\nsupervise: true\n---\n");
    // The command orphans twenty short-lived children, then idles.
    home.write(
        "agents",
        "relayed",
        "---\nbottle: relayed\ncommand: \"for i in $(seq 20); do sh -c 'sleep 0.2 &'; done; exec sleep 100000\"\n---\n",
    );
    let bottle = home.start_detached("relayed");
    let agent = format!("claude-bottle-{}-agent", bottle.id);
    let zombies = bottle.sh_ok(
        "for i in $(seq 50); do ps -eo args= | grep -q '^sleep 0.2' || break; sleep 0.1; done; \
         sleep 0.3; ps -eo stat= | grep -c '^Z' || true",
    );
    assert_eq!(zombies.trim(), "0", "orphans were left as zombies");

    let as_relay = |script: &str| {
        std::process::Command::new("docker")
            .args(["exec", "-u", "999:999", &agent, "sh", "-c", script])
            .output()
            .unwrap()
    };
    let routes = "curl -sS --max-time 2 -o /dev/null -w '%{http_code}' http://egress.local/routes";
    assert_eq!(bottle.sh_ok(routes).trim(), "200");
    for round in 0..2 {
        let killed = as_relay("pkill -9 -f '[b]ottle-bundle relay --inherited' && echo killed");
        assert_eq!(
            String::from_utf8_lossy(&killed.stdout).trim(),
            "killed",
            "round {round}: {}",
            String::from_utf8_lossy(&killed.stderr)
        );
        // The agent's own listener on the proxy port: refused, the port is still held.
        let take = bottle.sh(
            "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 9099)); s.listen(); print(\"BOUND\")'",
        );
        assert!(
            !take.status.success() && !String::from_utf8_lossy(&take.stdout).contains("BOUND"),
            "round {round}: the agent took the relay's port"
        );
        let back = bottle.sh_ok(&format!(
            "for i in $(seq 100); do c=$({routes}); [ \"$c\" = 200 ] && break; sleep 0.1; done; echo $c"
        ));
        assert_eq!(
            back.trim(),
            "200",
            "round {round}: the relay did not come back"
        );
    }
    // `list` reports each part's health: all answering, then the relay gone for good (its
    // supervisor killed too) is named.
    let line = |home: &Home| {
        let list = home.run(&["list"]);
        assert!(list.status.success());
        String::from_utf8_lossy(&list.stdout)
            .lines()
            .find(|l| l.starts_with(&bottle.id))
            .unwrap_or_else(|| panic!("{} not listed", bottle.id))
            .to_owned()
    };
    let healthy = line(&home);
    assert!(healthy.ends_with(" ok"), "{healthy}");
    as_relay("pkill -9 -f '[b]ottle-bundle relay$'");
    let broken = line(&home);
    assert!(broken.ends_with(" relay down"), "{broken}");
    drop(bottle);
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_it_gives_the_command_a_terminal_and_passes_its_exit_code() {
    let home = Home::new();
    home.write("bottles", "brief", "---\negress:\n  routes: []\n---\n");
    home.write(
        "agents",
        "brief",
        &format!("---\nbottle: brief\n{IDLE}\n---\n"),
    );
    let bottle = home.start_detached("brief");
    let term = Tmux::start(
        "exec",
        &command_line(&home, &["exec", "-it", &bottle.id, "--", "bash"]),
        100,
        30,
    );
    // A prompt: bash runs on a terminal (without one it reads stdin silently).
    term.wait_for("a prompt", Duration::from_secs(30), |s| s.contains('$'));
    term.literal("echo typed-$((6*7))");
    term.keys(&["Enter"]);
    term.wait_for("the command's output", Duration::from_secs(10), |s| {
        s.lines().any(|l| l.trim() == "typed-42")
    });
    term.literal("exit 3");
    term.keys(&["Enter"]);
    term.wait_for("the launcher's exit", Duration::from_secs(10), |s| {
        s.contains("EXIT=3")
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_p_ctrl_q_detaches_from_attach_and_the_bottle_keeps_running() {
    let home = Home::new();
    home.write("bottles", "brief", "---\negress:\n  routes: []\n---\n");
    home.write(
        "agents",
        "brief",
        &format!("---\nbottle: brief\n{IDLE}\n---\n"),
    );
    let bottle = home.start_detached("brief");
    let term = Tmux::start(
        "attach",
        &command_line(&home, &["attach", &bottle.id]),
        100,
        30,
    );
    term.wait_for("the attach", Duration::from_secs(30), |s| {
        s.contains(&format!("attached to {}", bottle.id))
    });
    term.keys(&["C-p", "C-q"]);
    let screen = term.wait_for("the launcher's exit", Duration::from_secs(15), |s| {
        s.contains("EXIT=")
    });
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(
        screen.contains(&format!("claude-bottle attach {}", bottle.id)),
        "{screen}"
    );
    assert!(!screen.contains("error:"), "{screen}");
    let list = home.run(&["list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&bottle.id) && l.contains("running")),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn detaching_from_an_attached_start_leaves_a_bottle_cleanup_keeps() {
    let home = Home::new();
    home.write("bottles", "brief", "---\negress:\n  routes: []\n---\n");
    home.write(
        "agents",
        "brief",
        &format!("---\nbottle: brief\n{IDLE}\n---\n"),
    );
    let term = Tmux::start(
        "start-detach",
        &command_line(&home, &["start", "brief", "-y"]),
        120,
        40,
    );
    term.wait_for("the attach", Duration::from_secs(120), |s| {
        s.contains("attached to brief-")
    });
    term.keys(&["C-p", "C-q"]);
    let screen = term.wait_for("the launcher's exit", Duration::from_secs(15), |s| {
        s.contains("EXIT=")
    });
    assert!(screen.contains("EXIT=0"), "{screen}");
    let id = screen
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("detached; bottle ")?
                .split_whitespace()
                .next()
        })
        .unwrap_or_else(|| panic!("no identity in:\n{screen}"))
        .to_owned();
    let bottle = e2e::Bottle { home: &home, id };
    // No launcher watches it now, yet it is no orphan: it was detached on purpose.
    let cleanup = home.run(&["cleanup", "-y"]);
    assert!(cleanup.status.success(), "{cleanup:?}");
    assert_eq!(bottle.sh_ok("echo alive").trim(), "alive");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_copied_work_tree_keeps_its_modification_times() {
    let home = Home::new();
    home.write("bottles", "brief", "---\negress:\n  routes: []\n---\n");
    home.write(
        "agents",
        "brief",
        &format!("---\nbottle: brief\n{IDLE}\n---\n"),
    );
    let file = home.project().join("old.txt");
    std::fs::write(&file, "x").unwrap();
    let then = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(then)
        .unwrap();
    let project = home.project().display().to_string();
    let bottle = home.start_detached_with("brief", &["--cwd", &project]);
    assert_eq!(bottle.sh_ok("stat -c %Y old.txt").trim(), "1600000000");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_i_without_a_terminal_streams_stdin_and_keeps_stderr_apart() {
    use std::io::Write;
    let home = Home::new();
    home.write("bottles", "brief", "---\negress:\n  routes: []\n---\n");
    home.write(
        "agents",
        "brief",
        &format!("---\nbottle: brief\n{IDLE}\n---\n"),
    );
    let bottle = home.start_detached("brief");
    let mut child = home
        .cmd(&[
            "exec",
            "-i",
            &bottle.id,
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; echo to-stderr >&2; exit 5",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped-in\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "PIPED-IN", "{stderr}");
    assert!(stderr.contains("to-stderr"), "{stderr}");
}

/// `list` marks the left-behind bottle `orphan` and says what removes it; `live` runs.
fn assert_listed_orphaned(home: &Home, orphan: &str, live: &str) {
    let list = home.run(&["list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    let line = |id: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line(orphan).contains("orphaned"), "{listed}");
    assert!(
        line(orphan).contains("`claude-bottle cleanup` removes it"),
        "{listed}"
    );
    assert!(line(live).contains("running"), "{listed}");
}
