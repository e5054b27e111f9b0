//! Direct mode's address checks: a routed name that resolves to a loopback, private,
//! link-local (metadata) or IPv4-mapped address is refused after resolution, and IP literals
//! are never routes. Without `allow_private`, nothing here may reach the local upstream.

mod support;

use support::{Env, Mode};

#[test]
fn routed_names_resolving_to_special_addresses_are_refused() {
    let env = Env::start(Mode::DirectStrict);
    // Each is a configured route; the hosts file inside the proxy's namespace points them at
    // 10.255.255.1, 169.254.169.254, ::1, ::ffff:127.0.0.1 and 127.0.0.1.
    for host in [
        "ten.test",
        "meta.test",
        "six.test",
        "mapped.test",
        "loop.test",
        "open.test",
    ] {
        let (code, body, err) = env.curl(&[&env.url(host, "/")]);
        assert_eq!(code, 403, "{host}: {body} {err}");
        assert!(
            body.contains("private or special address"),
            "{host}: {body}"
        );
        // The refusal names the address it found and the key that exempts it.
        let addr = match host {
            "ten.test" => "10.255.255.1",
            "meta.test" => "169.254.169.254",
            "six.test" => "::1",
            "mapped.test" => "::ffff:127.0.0.1",
            _ => "127.0.0.1",
        };
        assert!(
            body.contains(&format!("resolves to {addr}, a private")),
            "{host}: {body}"
        );
        assert!(body.contains("`egress.allow_private`"), "{host}: {body}");
    }
    assert!(env.upstream.seen().is_empty(), "{:?}", env.upstream.seen());
    assert_eq!(
        env.upstream
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the proxy dialed a refused address"
    );
    // Each was allowed by the routes (a decision line) and refused when dialing (its outcome).
    let reasons: Vec<String> = env
        .audit_until(|lines| lines.iter().filter(|l| l["event"] == "outcome").count() >= 6)
        .iter()
        .filter(|l| l["event"] == "outcome")
        .map(|l| format!("{} {}", l["reason"], l["outcome"]))
        .collect();
    assert_eq!(reasons.len(), 6, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r == "\"private-address\" \"refused\""),
        "{reasons:?}"
    );
}

#[test]
fn ip_literals_are_refused_without_a_route() {
    let env = Env::start(Mode::DirectStrict);
    let port = env.port();
    for target in [
        format!("https://127.0.0.1:{port}/"),
        format!("https://[::1]:{port}/"),
        format!("https://169.254.169.254:{port}/"),
        format!("https://[::ffff:127.0.0.1]:{port}/"),
        format!("https://10.0.0.1:{port}/"),
    ] {
        // Refused on the CONNECT itself, which curl reports as %{http_connect}.
        let (code, body, err) = env.curl(&["-w", "\n%{http_connect}", &target]);
        assert_eq!(code, 403, "{target}: {body} {err}");
    }
    let (code, body, err) = env.curl(&["http://169.254.169.254/latest/meta-data/"]);
    assert_eq!(code, 403, "{body} {err}");
    assert!(
        body.contains("IP addresses are never egress routes"),
        "{body}"
    );
    assert!(!body.contains("egress-block"), "{body}");
    assert_eq!(
        env.upstream
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[test]
fn a_route_leading_back_to_the_proxy_is_refused_as_a_loop() {
    // Loopback is allowed here (as an internal-host CIDR would be), so only the loop check
    // stands between the proxy and dialing itself.
    let env = Env::start(Mode::Direct);
    let proxy_port = env.proxy.addr.port();
    let mut config = env.config.clone();
    config
        .proxy
        .routes
        .push(bottle_contract::bundle_config::RouteConfig {
            host: "loop.test".parse().unwrap(),
            port: std::num::NonZeroU16::new(proxy_port),
            path_allowlist: vec![],
            auth: None,
        });
    env.write_config(&config);
    env.proxy.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !env.proxy.stderr_text().contains("routes reloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            env.proxy.stderr_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let url = format!("https://loop.test:{proxy_port}/");
    let (code, body, err) = env.curl(&[&url]);
    assert_eq!(code, 403, "{body}{err}");
    assert!(body.contains("leads back to this proxy"), "{body}{err}");
}
