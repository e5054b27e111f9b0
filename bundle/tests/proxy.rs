//! The egress proxy against real clients (curl, Python `requests`, `websocket-client`, git)
//! and a local HTTPS upstream. Every check runs twice: `direct::*` dials the upstream itself,
//! `chained::*` goes through a real upstream CONNECT proxy (squid, in pipelock's place).

// Checks are plain functions run once per outbound mode; a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

/// Runs each named check in both outbound modes.
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod direct {
            $(#[test] fn $name() { super::$name(super::Mode::Direct) })*
        }
        mod chained {
            $(#[test] fn $name() { super::$name(super::Mode::Chained) })*
        }
    };
}

in_both_modes!(
    curl_routed_request_gets_the_injected_token_and_never_the_agents,
    header_and_basic_schemes_are_injected,
    unrouted_host_is_refused_with_a_pointer_to_egress_block,
    paths_outside_the_allowlist_are_refused_after_normalization,
    every_git_receive_pack_form_is_refused_over_h1_and_h2,
    h2_reaches_the_agent_and_the_upstream,
    git_push_over_https_fails_with_the_gate_message_and_fetch_works,
    python_requests_routed_unrouted_and_path_refused,
    cleartext_requests_never_carry_a_credential,
    egress_local_routes_lists_routes_without_secrets,
    audit_log_and_stderr_record_decisions_and_never_a_token,
    keep_alive_reuses_the_upstream_connection_across_requests_and_tunnels,
    websocket_upgrade_passes_through,
);

use support::{BASIC_TOKEN, BEARER_TOKEN, Env, KEY_TOKEN, Mode};

/// Sends one raw `CONNECT target` to the proxy and returns its answer: the head of a 200,
/// else the whole answer (the request asks for the connection to close after it).
fn raw_connect(env: &Env, target: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut tcp = std::net::TcpStream::connect(env.proxy.addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        tcp,
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // The head first: after a 200 the tunnel stays open, waiting for TLS.
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).unwrap_or(0) == 1 {
        answer.push(byte[0]);
    }
    if !answer.starts_with(b"HTTP/1.1 200") {
        let _ = tcp.read_to_end(&mut answer);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn connect_to_an_ip_or_an_unrouted_port_is_refused_before_the_tunnel() {
    let env = Env::start(Mode::Direct);
    let port = env.port();
    for target in [
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("2130706433:{port}"),
    ] {
        let answer = raw_connect(&env, &target);
        assert!(answer.starts_with("HTTP/1.1 403"), "{target}: {answer}");
        assert!(
            answer.contains("IP addresses are never egress routes"),
            "{target}: {answer}"
        );
        // egress-block can never grant an address: the agent is not sent there.
        assert!(!answer.contains("egress-block"), "{target}: {answer}");
    }
    // A routed name on a port no route allows.
    let answer = raw_connect(&env, "open.test:1");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains("no egress route allows port 1, so open.test:1 is refused"),
        "{answer}"
    );
    // A routed name on its port still gets its tunnel.
    let answer = raw_connect(&env, &format!("open.test:{port}"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // curl sees the refusal as the CONNECT's status, not as a TLS failure.
    let (code, _, err) = env.curl(&["-w", "\n%{http_connect}", &format!("https://[::1]:{port}/")]);
    assert_eq!(code, 403, "{err}");
    assert!(env.upstream.seen().is_empty(), "{:?}", env.upstream.seen());
    let audit = env.audit_until(|lines| lines.len() >= 7);
    let reasons: Vec<String> = audit
        .iter()
        .map(|l| format!("{} {} {}", l["method"], l["reason"], l["status"]))
        .collect();
    expect_test::expect![[r#"
        "CONNECT" "ip-literal" 403
        "CONNECT" "ip-literal" 403
        "CONNECT" "ip-literal" 403
        "CONNECT" "ip-literal" 403
        "CONNECT" "port-not-routed" 403
        "CONNECT" "tls: unexpected end of file" 0
        "CONNECT" "ip-literal" 403"#]]
    .assert_eq(&reasons.join("\n"));
}

fn curl_routed_request_gets_the_injected_token_and_never_the_agents(mode: Mode) {
    let env = Env::start(mode);
    let (code, body, err) = env.curl(&[
        "-H",
        "Authorization: Bearer agent-own-token",
        "-H",
        "Proxy-Authorization: Basic YWdlbnQ6eA==",
        &env.url("api.test", "/v1/models"),
    ]);
    assert_eq!(code, 200, "{body}\n{err}");
    let seen = env.upstream.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.host, "api.test");
    assert_eq!(last.path_and_query, "/v1/models");
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {BEARER_TOKEN}").as_str())
    );
    assert!(last.header("proxy-authorization").is_none());
    assert!(!format!("{:?}", seen).contains("agent-own-token"));
    // The agent never sees the token in the response either (the echo shows only what the
    // upstream got, which is the point of this assertion: the proxy adds nothing to replies).
    assert!(body.contains("/v1/models"), "{body}");
}

fn header_and_basic_schemes_are_injected(mode: Mode) {
    let env = Env::start(mode);
    let (code, _, err) = env.curl(&["-H", "x-api-key: agent-key", &env.url("key.test", "/x")]);
    assert_eq!(code, 200, "{err}");
    let (code, _, err) = env.curl(&["-u", "agent:pw", &env.url("basic.test", "/y")]);
    assert_eq!(code, 200, "{err}");
    let seen = env.upstream.seen();
    let key = seen.iter().find(|s| s.host == "key.test").unwrap();
    assert_eq!(key.header("x-api-key"), Some(KEY_TOKEN));
    assert!(key.header("authorization").is_none());
    let basic = seen.iter().find(|s| s.host == "basic.test").unwrap();
    use base64::Engine as _;
    let want = base64::engine::general_purpose::STANDARD.encode(BASIC_TOKEN);
    assert_eq!(
        basic.header("authorization"),
        Some(format!("Basic {want}").as_str())
    );
}

fn unrouted_host_is_refused_with_a_pointer_to_egress_block(mode: Mode) {
    let env = Env::start(mode);
    let (code, body, _) = env.curl(&[&env.url("other.test", "/")]);
    assert_eq!(code, 403);
    assert!(
        body.contains("other.test is not in this bottle's egress routes"),
        "{body}"
    );
    assert!(body.contains("egress-block"), "{body}");
    // A secret-bearing subdomain of a routed host is refused before any DNS lookup: the name
    // is in no hosts file, so a lookup would have answered 502, not 403.
    let (code, body, _) = env.curl(&[&env.url("sk-ant-leak0123456789.api.test", "/v1/x")]);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("not in this bottle's egress routes"),
        "{body}"
    );
    // An IP literal is never a route: refused on the CONNECT itself (curl reports the
    // CONNECT status as %{http_connect}).
    let (code, body, err) = env.curl(&[
        "-w",
        "\n%{http_connect}",
        &format!("https://127.0.0.1:{}/", env.port()),
    ]);
    assert_eq!(code, 403, "{body} {err}");
    assert!(err.contains("403"), "{err}");
    assert!(
        env.upstream.seen().is_empty(),
        "nothing reached the upstream"
    );
}

fn paths_outside_the_allowlist_are_refused_after_normalization(mode: Mode) {
    let env = Env::start(mode);
    let cases = [
        ("/v2/models", 403, "outside the route's path_allowlist"),
        ("/v1/../admin", 403, "outside the route's path_allowlist"),
        (
            "/v1/%2e%2e/admin",
            403,
            "outside the route's path_allowlist",
        ),
        ("/v1%2f..%2fadmin", 403, "ambiguous"),
        ("/v1/..;/admin", 403, "ambiguous"),
        ("/v1/%252e%252e/admin", 403, "ambiguous"),
        ("/v1/%c0%ae%c0%ae/admin", 403, "ambiguous"),
        ("/v1/ok/./fine", 200, "/v1/ok/fine"),
    ];
    for (path, want, text) in cases {
        // --path-as-is: curl must not clean the path itself.
        let (code, body, err) = env.curl(&["--path-as-is", &env.url("api.test", path)]);
        assert_eq!(code, want, "{path}: {body} {err}");
        assert!(body.contains(text), "{path}: {body}");
    }
    assert!(
        env.upstream
            .seen()
            .iter()
            .all(|s| s.path_and_query.starts_with("/v1/")),
        "{:?}",
        env.upstream.seen()
    );
}

fn every_git_receive_pack_form_is_refused_over_h1_and_h2(mode: Mode) {
    let env = Env::start(mode);
    let forms = [
        "/repo.git/info/refs?service=git-receive-pack",
        "/repo.git/info/refs?service=GIT-RECEIVE-PACK",
        "/repo.git/info/refs?service=git%2Dreceive%2Dpack",
        "/repo.git/git-receive-pack",
        "/repo.git/Git-Receive-Pack",
        "/repo.git/git%2dreceive%2dpack",
        "/repo.git/git%252dreceive-pack",
    ];
    for version in ["--http1.1", "--http2"] {
        for form in forms {
            let (code, body, err) = env.curl(&[
                version,
                "--path-as-is",
                "-X",
                "POST",
                &env.url("git.test", form),
            ]);
            assert_eq!(code, 403, "{version} {form}: {body} {err}");
            assert!(body.contains("git push over HTTPS is refused"), "{body}");
            assert!(body.contains("git gate"), "{body}");
        }
    }
    assert!(env.upstream.seen().is_empty(), "{:?}", env.upstream.seen());
}

fn h2_reaches_the_agent_and_the_upstream(mode: Mode) {
    let env = Env::start(mode);
    let (code, body, err) = env.curl(&["--http2", "-v", &env.url("open.test", "/h2")]);
    assert_eq!(code, 200, "{body} {err}");
    assert!(err.contains("using HTTP/2"), "agent leg is not h2: {err}");
    assert_eq!(env.upstream.seen().last().unwrap().version, "HTTP/2.0");
}

fn git_push_over_https_fails_with_the_gate_message_and_fetch_works(mode: Mode) {
    let env = Env::start(mode);
    let work = env.dir.path().join("work");
    let url = env.url("git.test", "/repo.git");
    let out = env.git(
        env.dir.path(),
        &["clone", "-q", &url, work.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "clone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(work.join("README")).unwrap(),
        "hello\n"
    );
    let out = env.git(&work, &["fetch", "origin"]);
    assert!(
        out.status.success(),
        "fetch: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(work.join("new"), "x\n").unwrap();
    for args in [
        &["add", "new"][..],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@x.invalid",
            "commit",
            "-qm",
            "n",
        ],
    ] {
        assert!(env.git(&work, args).status.success());
    }
    let out = env.git(&work, &["push", "origin", "HEAD:main"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "push went through: {stderr}");
    assert!(
        stderr.contains("git push over HTTPS is refused"),
        "{stderr}"
    );
    assert!(stderr.contains("git gate"), "{stderr}");
    // The upstream never saw any receive-pack request.
    assert!(
        !env.upstream
            .seen()
            .iter()
            .any(|s| s.path_and_query.contains("receive-pack")),
        "{:?}",
        env.upstream.seen()
    );
}

fn python_requests_routed_unrouted_and_path_refused(mode: Mode) {
    let env = Env::start(mode);
    let out = env.python(
        r#"
import os, requests
proxies = {"https": os.environ["PROXY"], "http": os.environ["PROXY"]}
port = os.environ["PORT"]
ca = os.environ["CA"]
ok = requests.get(f"https://api.test:{port}/v1/ok", proxies=proxies, verify=ca,
                  headers={"Authorization": "Bearer agent-own"})
print("routed", ok.status_code, ok.json()["path"])
no = requests.get(f"https://other.test:{port}/", proxies=proxies, verify=ca)
print("unrouted", no.status_code, "egress-block" in no.text)
path = requests.get(f"https://api.test:{port}/admin", proxies=proxies, verify=ca)
print("path", path.status_code)
# Without the bundle CA the agent cannot be fooled into trusting a proxy-made cert elsewhere.
try:
    requests.get(f"https://api.test:{port}/v1/ok", proxies=proxies, verify=True)
    print("default-trust accepted")
except requests.exceptions.SSLError:
    print("default-trust refused")
"#,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    expect_test::expect![[r#"
        routed 200 /v1/ok
        unrouted 403 True
        path 403
        default-trust refused
    "#]]
    .assert_eq(&stdout);
    let seen = env.upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {BEARER_TOKEN}").as_str())
    );
}

fn cleartext_requests_never_carry_a_credential(mode: Mode) {
    let env = Env::start(mode);
    let port = env.port();
    let (code, body, _) = env.curl(&[&format!("http://api.test:{port}/v1/x")]);
    // The route names port {port}; over http:// the same host:port carries a credential.
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("only over https://") || body.contains("not in this bottle"),
        "{body}"
    );
    let (code, body, _) = env.curl(&["http://other.test/"]);
    assert_eq!(code, 403, "{body}");
    assert!(env.upstream.seen().is_empty());
}

fn egress_local_routes_lists_routes_without_secrets(mode: Mode) {
    let env = Env::start(mode);
    let (code, body, err) = env.curl(&["http://egress.local/routes"]);
    assert_eq!(code, 200, "{err}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let port = env.port();
    let api = json["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == "api.test" && r["port"] == port)
        .unwrap();
    assert_eq!(api["auth"], "Bearer");
    assert_eq!(api["path_allowlist"][0], "/v1/");
    for secret in [BEARER_TOKEN, KEY_TOKEN, BASIC_TOKEN] {
        assert!(!body.contains(secret));
    }
}

fn audit_log_and_stderr_record_decisions_and_never_a_token(mode: Mode) {
    let env = Env::start(mode);
    env.curl(&[&env.url("api.test", "/v1/a?q=1")]);
    env.curl(&[&env.url("other.test", "/b")]);
    env.curl(&[
        "-X",
        "POST",
        &env.url("git.test", "/r.git/git-receive-pack"),
    ]);
    let lines = env.audit_until(|lines| lines.len() >= 4);
    let summary: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{} {} {} {} {} {} {} {}",
                l["event"],
                l["method"],
                l["host"],
                l["path"],
                l["decision"],
                l["reason"],
                l["status"],
                l["outcome"]
            )
        })
        .collect();
    expect_test::expect![[r#"
        "decision" "GET" "api.test" "/v1/a" "allow" null 0 null
        "outcome" "GET" "api.test" "/v1/a" "allow" null 200 "complete"
        "decision" "GET" "other.test" "/b" "deny" "no-route" 403 null
        "decision" "POST" "git.test" "/r.git/git-receive-pack" "deny" "git-push" 403 null"#]]
    .assert_eq(&summary.join("\n"));
    assert!(lines[1]["bytes"].as_u64().unwrap() > 0);
    assert!(lines[1]["duration_ms"].as_f64().is_some());
    let raw = std::fs::read_to_string(&env.audit_path).unwrap() + &env.proxy.stderr_text();
    for secret in [BEARER_TOKEN, KEY_TOKEN, BASIC_TOKEN, "bottle-test-basic-pw"] {
        assert!(!raw.contains(secret), "{secret} leaked");
    }
}

fn keep_alive_reuses_the_upstream_connection_across_requests_and_tunnels(mode: Mode) {
    let env = Env::start(mode);
    let url = env.url("open.test", "/k");
    let (code, _, err) = env.curl(&["-v", &url, &url, &url]);
    assert_eq!(code, 200, "{err}");
    assert!(
        err.contains("Re-using existing") || err.contains("Reusing existing"),
        "{err}"
    );
    let (code, _, err) = env.curl(&[&url]);
    assert_eq!(code, 200, "{err}");
    assert_eq!(env.upstream.seen().len(), 4);
    let connections = env
        .upstream
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(connections, 1, "the upstream pool was not reused");
}

fn websocket_upgrade_passes_through(mode: Mode) {
    let env = Env::start(mode);
    let out = env.python(
        r#"
import os, ssl, websocket
port = os.environ["PORT"]
proxy_host, proxy_port = os.environ["PROXY"].removeprefix("http://").split(":")
ws = websocket.create_connection(
    f"wss://open.test:{port}/ws",
    http_proxy_host=proxy_host, http_proxy_port=int(proxy_port), proxy_type="http",
    sslopt={"ca_certs": os.environ["CA"]},
)
for word in ["one", "two"]:
    ws.send(word)
    print(ws.recv())
ws.close()
"#,
    );
    assert!(
        out.status.success(),
        "websocket-client (pip install websocket-client): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    expect_test::expect![[r#"
        echo: one
        echo: two
    "#]]
    .assert_eq(&String::from_utf8_lossy(&out.stdout));
}
