//! An approved egress proposal takes effect in a running bottle: the agent's request to a new
//! host is refused, `claude-bottle approve` merges the route (token from the host), reloads the
//! proxy, and the same request then succeeds, with no restart; the decision and the audit line
//! are written, and neither holds the token.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use e2e::{Home, TestCa, container_sh, docker, start_upstream};

const IDLE: &str = "command: \"sleep 100000\"";

#[tokio::test(flavor = "multi_thread")]
async fn approved_route_goes_live_without_a_restart() {
    let mut home = Home::new();
    let ca = TestCa::new();
    let ca_path = home.dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    let token = "e2e-approve-token-Hk29Qz";
    home.env.insert("E2E_APPROVE_TOKEN".into(), token.into());
    home.env.insert("USER".into(), "olga".into());
    home.write(
        "bottles",
        "asks",
        &format!(
            "---\negress:\n  routes:\n    - host: api.github.com\n  allow_private: [172.16.0.0/12, 192.168.0.0/16, 10.0.0.0/8]\n  extra_ca: {}\n---\n",
            ca_path.display()
        ),
    );
    home.write(
        "agents",
        "asks",
        &format!("---\nbottle: asks\n{IDLE}\n---\n"),
    );

    let bottle = home.start_detached("asks");
    let id = bottle.id.clone();
    let docker = docker().await;
    let upstream = start_upstream(&docker, &id, &bottle.network(), "new.test", &ca).await;
    let bundle = format!("claude-bottle-{id}-bundle");
    let started = |inspect: bollard::models::ContainerInspectResponse| {
        inspect.state.and_then(|s| s.started_at).unwrap()
    };
    let bundle_started = started(docker.inspect_container(&bundle, None).await.unwrap());

    // Before: the proxy refuses the host.
    let code = |path: &str| {
        bottle
            .sh_ok(&format!(
                "curl -sS -o /dev/null -w '%{{http_code}}' https://new.test{path} || true"
            ))
            .trim()
            .to_owned()
    };
    assert_eq!(code("/allowed/x"), "403");

    // The proposal, as the bundle's MCP server would write it.
    let queue = home.root().join("queue").join(&id);
    std::fs::create_dir_all(queue.join("proposals")).unwrap();
    let proposal = serde_json::json!({
        "id": "p-e2e-new",
        "identity": id,
        "created": 1,
        "justification": "the tests need new.test",
        "request": {
            "kind": "egress",
            "host": "new.test",
            "path_allowlist": ["/allowed/"],
            "auth": {"scheme": "bearer", "token_ref": "E2E_APPROVE_TOKEN"}
        }
    });
    std::fs::write(queue.join("proposals/p-e2e-new.json"), proposal.to_string()).unwrap();
    let once = home.run(&["dashboard", "--once"]);
    assert!(String::from_utf8_lossy(&once.stdout).contains("p-e2e-new"));

    let out = home.run(&["approve", "p-e2e-new"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "approve failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("now routes new.test"), "{stdout}");
    assert!(!stdout.contains(token) && !stderr.contains(token));

    // After: the same request succeeds at once, with the host's token injected; other paths
    // stay refused; the bundle was not restarted.
    let seen: serde_json::Value =
        serde_json::from_str(&bottle.sh_ok("curl -sS --fail https://new.test/allowed/x")).unwrap();
    assert_eq!(seen["path"], "/allowed/x");
    // The upstream got the approved token; its echo reaches the agent masked (the token
    // joined the bottle's secrets with the route).
    let masked = format!("Bearer {}", "*".repeat(token.len()));
    assert_eq!(seen["headers"]["authorization"], masked);
    let log = container_sh(&docker, &upstream, "cat /tmp/requests.jsonl").await;
    assert!(log.contains(&format!("Bearer {token}")), "{log}");
    assert_eq!(code("/elsewhere"), "403");
    assert_eq!(
        started(docker.inspect_container(&bundle, None).await.unwrap()),
        bundle_started,
        "the bundle was restarted"
    );
    let routes = bottle.sh_ok("curl -sS http://egress.local/routes");
    assert!(
        routes.contains("new.test") && routes.contains("api.github.com"),
        "{routes}"
    );

    // The decision, the audit line and the bottle's route state; no token in any of them.
    let decision_text = std::fs::read_to_string(queue.join("decisions/p-e2e-new.json")).unwrap();
    let decision: serde_json::Value = serde_json::from_str(&decision_text).unwrap();
    assert_eq!(decision["verdict"], "approved");
    assert!(decision["message"].as_str().unwrap().contains("new.test"));
    let audit_text = std::fs::read_to_string(home.root().join("audit.jsonl")).unwrap();
    let audit: serde_json::Value = serde_json::from_str(audit_text.trim()).unwrap();
    assert_eq!(audit["id"], "p-e2e-new");
    assert_eq!(audit["verdict"], "approved");
    assert_eq!(audit["operator"], "olga");
    let diff = audit["diff"].as_str().unwrap();
    assert!(
        diff.contains("+new.test paths=/allowed/ Bearer from E2E_APPROVE_TOKEN"),
        "{diff}"
    );
    let routes_state =
        std::fs::read_to_string(home.root().join("state").join(&id).join("routes.json")).unwrap();
    assert!(routes_state.contains("new.test"), "{routes_state}");
    for text in [&decision_text, &audit_text, &routes_state] {
        assert!(!text.contains(token), "the token leaked:\n{text}");
    }

    // A pipelock change for a bottle without pipelock is refused, and nothing is decided.
    std::fs::write(
        queue.join("proposals/p-e2e-pipelock.json"),
        serde_json::json!({
            "id": "p-e2e-pipelock",
            "identity": id,
            "created": 2,
            "justification": "pipelock blocks me",
            "request": {"kind": "pipelock", "change": "api_allowlist: [new.test]\n"}
        })
        .to_string(),
    )
    .unwrap();
    let out = home.run(&["approve", "p-e2e-pipelock"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "bottle `{id}` runs without pipelock; reject this proposal with a reason"
        )),
        "{stderr}"
    );
    assert!(!queue.join("decisions/p-e2e-pipelock.json").exists());

    // Approving again is refused: it was decided.
    let again = home.run(&["approve", "p-e2e-new"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already approved"));
}
