//! The audit log when the agent goes away: a forwarded request has its decision line as soon
//! as it is sent upstream, and an `aborted` outcome line when the agent aborts it, before the
//! response head or in the middle of a streamed body.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::{Env, Mode};

/// curl through the proxy in the background, giving up after `max_time` seconds.
fn curl_giving_up(env: &Env, max_time: &str, args: &[&str]) -> std::process::Child {
    std::process::Command::new("curl")
        .args(["-sS", "-N", "--max-time", max_time, "-o", "/dev/null"])
        .args(["-x", &env.proxy.url(), "--cacert"])
        .arg(&env.ca)
        .args(args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("curl is required")
}

/// The first audit line for `path` matching `want`, polled until `within` passes.
fn wait_for_line(
    env: &Env,
    within: Duration,
    want: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(&env.audit_path).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| want(l));
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_request_aborted_before_its_response_is_in_the_audit_log() {
    let env = Env::start(Mode::Direct);
    // The upstream holds the answer for 5 s; the agent gives up after 1 s.
    let mut curl = curl_giving_up(&env, "1", &[&env.url("open.test", "/sleep/5000")]);
    let decision = wait_for_line(&env, Duration::from_secs(4), |l| {
        l["event"] == "decision" && l["path"] == "/sleep/5000"
    });
    let decision = decision.expect("no decision line while the request was in flight");
    assert_eq!(decision["decision"], "allow", "{decision}");
    assert_eq!(decision["route"], format!("open.test:{}", env.port()));
    assert!(
        curl.wait().unwrap().code() == Some(28),
        "curl did not time out"
    );
    assert_eq!(env.upstream.seen().len(), 1, "the upstream got the request");

    let outcome = wait_for_line(&env, Duration::from_secs(10), |l| {
        l["event"] == "outcome" && l["path"] == "/sleep/5000"
    });
    let outcome = outcome.expect("no outcome line after the agent aborted");
    assert_eq!(outcome["outcome"], "aborted", "{outcome}");
}

#[test]
fn a_stream_aborted_mid_response_is_in_the_audit_log() {
    let env = Env::start(Mode::Direct);
    // The stream sends an event every 400 ms; the agent leaves after 1.5 s, mid-stream.
    let mut curl = curl_giving_up(
        &env,
        "1.5",
        &["-X", "POST", &env.url("key.test", "/v1/messages")],
    );
    assert!(
        curl.wait().unwrap().code() == Some(28),
        "curl did not time out"
    );
    let lines: Vec<serde_json::Value> = (0..2)
        .filter_map(|n| {
            wait_for_line(&env, Duration::from_secs(10), |l| {
                l["path"] == "/v1/messages" && l["event"] == ["decision", "outcome"][n]
            })
        })
        .collect();
    let summary: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{} {} {} {} {}",
                l["event"], l["method"], l["decision"], l["status"], l["outcome"]
            )
        })
        .collect();
    expect_test::expect![[r#"
        "decision" "POST" "allow" 0 null
        "outcome" "POST" "allow" 200 "aborted""#]]
    .assert_eq(&summary.join("\n"));
    assert!(lines[1]["bytes"].as_u64().unwrap() > 0, "{}", lines[1]);
}
