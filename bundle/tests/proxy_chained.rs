//! Chained mode specifics: the upstream CONNECT proxy (squid) carries every upstream
//! connection, and the proxy's pool survives squid closing its tunnels.

mod support;

use support::{Env, Mode};

#[test]
fn pool_survives_the_upstream_proxy_closing_tunnels() {
    let mut env = Env::start(Mode::Chained);
    let url = env.url("open.test", "/one");
    let (code, _, err) = env.curl(&[&url]);
    assert_eq!(code, 200, "{err}");
    // Killing squid closes the pooled tunnel under the proxy's feet.
    env.squid.as_mut().unwrap().restart();
    for _ in 0..3 {
        let (code, body, err) = env.curl(&[&url]);
        assert_eq!(code, 200, "after squid restart: {body} {err}");
    }
    assert_eq!(env.upstream.seen().len(), 4);
}

#[test]
fn upstream_connections_go_only_through_the_upstream_proxy() {
    let mut env = Env::start(Mode::Chained);
    env.squid.as_mut().unwrap().stop();
    let (code, body, _) = env.curl(&[&env.url("open.test", "/x")]);
    assert_eq!(code, 502, "{body}");
    assert!(
        body.contains("upstream open.test could not be reached"),
        "{body}"
    );
    assert!(
        body.contains(
            "the upstream proxy the bundle sends all egress through could not be reached"
        ),
        "{body}"
    );
    assert!(
        !body.contains("127.0.0.1"),
        "internals leaked to the agent: {body}"
    );
    let audit = env.audit_until(|lines| lines.last().is_some_and(|l| l["reason"].is_string()));
    let reason = audit.last().unwrap()["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("upstream proxy 127.0.0.1"), "{reason}");
    assert!(env.upstream.seen().is_empty());
}
