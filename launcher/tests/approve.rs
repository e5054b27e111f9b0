//! `claude-bottle approve` / `reject` on hand-written proposal files in a temporary manifest
//! home: decisions and audit lines are written only when they should be, and every refusal
//! says why and exits non-zero.
#![allow(clippy::unwrap_used)]

mod queue_home;

use queue_home::{HOSTILE, HOSTILE_SHOWN, Home, assert_no_raw_controls};
use std::process::Output;

fn egress(host: &str, token_ref: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "kind": "egress",
        "host": host,
        "path_allowlist": [],
        "auth": token_ref.map(|t| serde_json::json!({"scheme": "bearer", "token_ref": t})),
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_fails_with(out: &Output, needle: &str) {
    assert!(
        !out.status.success(),
        "expected failure, got success:\n{}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains(needle), "`{needle}` not in:\n{stderr}");
}

fn no_decision_and_no_audit(home: &Home, identity: &str, id: &str) {
    assert!(
        !home.decision(identity, id).exists(),
        "a decision was written"
    );
    assert!(home.audit().is_empty(), "an audit line was written");
}

#[test]
fn reject_writes_the_decision_and_an_audit_line_once() {
    let home = Home::new();
    home.propose("dev-abcde", "p-docs", 10, egress("docs.rs", None));
    let out = home.run(
        &["reject", "p-docs", "--reason", "use the vendored docs"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("p-docs"),
        "{}",
        text(&out.stdout)
    );

    let decision: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.decision("dev-abcde", "p-docs")).unwrap(),
    )
    .unwrap();
    assert_eq!(decision["verdict"], "rejected");
    assert_eq!(decision["reason"], "use the vendored docs");
    assert!(decision["applied"].is_null());
    let audit = home.audit();
    assert_eq!(audit.len(), 1);
    let line = &audit[0];
    assert_eq!(line["operator"], "alice");
    assert_eq!(line["identity"], "dev-abcde");
    assert_eq!(line["id"], "p-docs");
    assert_eq!(line["kind"], "egress");
    assert_eq!(line["verdict"], "rejected");
    assert_eq!(line["reason"], "use the vendored docs");
    assert!(line["time"].as_u64().unwrap() > 0);

    // Deciding again is refused, and the first decision stands.
    let again = home.run(&["approve", "p-docs"], &[]);
    assert_fails_with(&again, "already rejected");
    let again = home.run(&["reject", "p-docs", "--reason", "x"], &[]);
    assert_fails_with(&again, "already rejected");
    assert_eq!(home.audit().len(), 1);
}

#[test]
fn without_user_the_audit_names_the_account_of_the_uid() {
    let home = Home::new();
    home.propose("dev-abcde", "p-docs", 10, egress("docs.rs", None));
    let out = home.run(&["reject", "p-docs", "--reason", "no"], &[("USER", "")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let account = text(&id.stdout).trim().to_owned();
    assert!(!account.is_empty());
    assert_eq!(home.audit()[0]["operator"], account.as_str());
}

#[test]
fn reject_needs_a_reason() {
    let home = Home::new();
    home.propose("dev-abcde", "p-docs", 10, egress("docs.rs", None));
    for args in [
        &["reject", "p-docs"][..],
        &["reject", "p-docs", "--reason", "  "],
    ] {
        let out = home.run(args, &[]);
        assert_fails_with(&out, "needs a reason");
        assert!(text(&out.stderr).contains("--reason"));
        assert_eq!(out.status.code(), Some(2), "a usage error");
    }
    no_decision_and_no_audit(&home, "dev-abcde", "p-docs");
}

#[test]
fn unknown_and_malformed_ids_are_clear_errors() {
    let home = Home::new();
    home.propose("dev-abcde", "p-docs", 10, egress("docs.rs", None));
    let out = home.run(&["approve", "p-nope"], &[]);
    assert_fails_with(&out, "no proposal `p-nope`");
    assert_eq!(out.status.code(), Some(1));
    let out = home.run(&["reject", "p-nope", "--reason", "no"], &[]);
    assert_fails_with(&out, "no proposal `p-nope`");
    let out = home.run(&["approve", "../../etc/passwd"], &[]);
    assert_fails_with(&out, "not a proposal id");
    no_decision_and_no_audit(&home, "dev-abcde", "p-docs");
}

#[test]
fn an_unset_token_variable_changes_nothing() {
    let home = Home::new();
    home.propose(
        "dev-abcde",
        "p-tok",
        10,
        egress("docs.rs", Some("DOCS_TOKEN_NOT_SET")),
    );
    // Refused before the engine is contacted, whatever DOCKER_HOST says.
    let out = home.run(
        &["approve", "p-tok"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_fails_with(&out, "DOCS_TOKEN_NOT_SET");
    assert!(text(&out.stderr).contains("nothing was changed"));
    no_decision_and_no_audit(&home, "dev-abcde", "p-tok");
}

#[test]
fn an_edit_is_validated_like_a_manifest_route() {
    let home = Home::new();
    home.propose("dev-abcde", "p-docs", 10, egress("docs.rs", None));
    // The "editor" upper-cases the host: the launcher refuses it as it would in a manifest.
    let out = home.run(
        &["approve", "p-docs", "--edit"],
        &[
            ("EDITOR", "sed -i s/docs.rs/Docs.RS/"),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ],
    );
    assert_fails_with(&out, "must be lowercase");
    assert!(text(&out.stderr).contains("p-docs was not approved"));
    // An editor that fails approves nothing either.
    let out = home.run(&["approve", "p-docs", "--edit"], &[("EDITOR", "false")]);
    assert_fails_with(&out, "exited with");
    // A bad path prefix is refused with the manifest's own words (the same rule).
    let out = home.run(
        &["approve", "p-docs", "--edit"],
        &[(
            "EDITOR",
            r#"sed -i 's|"path_allowlist": \[\]|"path_allowlist": ["/a/../b"]|'"#,
        )],
    );
    assert_fails_with(&out, "`/a/../b` contains a `.` or `..` segment");
    no_decision_and_no_audit(&home, "dev-abcde", "p-docs");
}

#[test]
fn approving_for_a_bottle_that_is_not_running_writes_no_decision() {
    let home = Home::new();
    home.propose("gone-zzzzz", "p-docs", 10, egress("docs.rs", None));
    let out = home.run(&["approve", "p-docs"], &[]);
    assert_fails_with(&out, "bottle `gone-zzzzz` is not running");
    no_decision_and_no_audit(&home, "gone-zzzzz", "p-docs");
}

#[test]
fn approve_and_reject_show_agent_text_escaped() {
    let home = Home::new();
    let bad = |id: &str, host: &str, token_ref: &str| {
        serde_json::json!({
            "id": id, "identity": "dev-abcde", "created": 10,
            "justification": HOSTILE,
            "request": {"kind": "egress", "host": host, "path_allowlist": [],
                        "auth": {"scheme": "bearer", "token_ref": token_ref}},
        })
    };
    home.propose_raw(
        "dev-abcde",
        "p-host",
        &bad("p-host", &format!("docs.rs{HOSTILE}"), "T"),
    );
    home.propose_raw(
        "dev-abcde",
        "p-tok",
        &bad("p-tok", "docs.rs", &format!("T{HOSTILE}")),
    );
    let vars = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];
    // Neither is a route, so neither is a proposal: the error quotes the host escaped, and
    // never the token name's text (it could be a pasted token).
    for (id, shown) in [
        (
            "p-host",
            format!("not a proposal: `docs.rs{HOSTILE_SHOWN}`"),
        ),
        (
            "p-tok",
            "not a proposal: must name a host environment variable".to_owned(),
        ),
    ] {
        let out = home.run(&["approve", id], &vars);
        assert_fails_with(&out, &shown);
        assert_no_raw_controls("approve's stdout", &out.stdout);
        assert_no_raw_controls("approve's stderr", &out.stderr);
        no_decision_and_no_audit(&home, "dev-abcde", id);
    }
    // A valid request from a bottle that is not running: the error names the bottle.
    home.propose_raw("dev-abcde", "p-ok", &bad("p-ok", "docs.rs", "T"));
    let out = home.run(&["approve", "p-ok"], &[("T", "x"), vars[0]]);
    assert!(!out.status.success());
    assert_no_raw_controls("approve's stderr", &out.stderr);

    let out = home.run(&["reject", "p-ok", "--reason", "no"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_no_raw_controls("reject's stdout", &out.stdout);
    assert!(text(&out.stdout).contains("p-ok"), "{}", text(&out.stdout));
}
