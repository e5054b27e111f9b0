//! Reload and shutdown of the real proxy process: SIGHUP swaps the routes without dropping a
//! request in flight (a bad config keeps the old routes); SIGTERM lets in-flight streams finish
//! and then exits cleanly.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bottle_contract::bundle_config::RouteConfig;
use support::upstream::SSE_EVENTS;
use support::{Env, Mode};

/// Starts a streaming Messages call in the background; returns its curl output when done.
fn slow_stream(env: &Env) -> std::thread::JoinHandle<(u16, String, String)> {
    let args = vec![
        "-X".to_owned(),
        "POST".to_owned(),
        "-N".to_owned(),
        env.url("key.test", "/v1/messages"),
    ];
    let proxy = env.proxy.url();
    let ca = env.ca.clone();
    std::thread::spawn(move || {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "-x", &proxy, "--cacert"])
            .arg(&ca)
            .args(["-w", "\n%{http_code}"])
            .args(&args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        (
            code.trim().parse().unwrap_or(0),
            body.to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
}

fn wait_for_stream_start(env: &Env) {
    for _ in 0..200 {
        if !env.upstream.sse_sent.lock().unwrap().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the stream never started");
}

#[test]
fn sighup_reloads_routes_without_dropping_a_request_in_flight() {
    let env = Env::start(Mode::Direct);
    let (code, _, _) = env.curl(&[&env.url("other.test", "/")]);
    assert_eq!(code, 403);

    let stream = slow_stream(&env);
    wait_for_stream_start(&env);
    let mut config = env.config.clone();
    config.proxy.routes.push(RouteConfig {
        host: "other.test".parse().unwrap(),
        port: std::num::NonZeroU16::new(env.port()),
        path_allowlist: vec![],
        auth: None,
    });
    env.write_config(&config);
    env.proxy.signal("HUP");

    let mut allowed = false;
    for _ in 0..100 {
        if env.curl(&[&env.url("other.test", "/")]).0 == 200 {
            allowed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(allowed, "the new route never took effect");
    let (code, body, err) = stream.join().unwrap();
    assert_eq!(code, 200, "{err}");
    assert_eq!(
        body.matches("content_block_delta").count(),
        SSE_EVENTS * 2,
        "{body}"
    );
    assert!(
        body.contains("message_stop"),
        "the in-flight stream was cut: {body}"
    );

    // A broken config is refused and the current routes stay.
    std::fs::write(&env.config_path, "{ not json").unwrap();
    env.proxy.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(env.curl(&[&env.url("other.test", "/")]).0, 200);
    let log = env.proxy.stderr_text();
    assert!(
        log.contains("reload failed; keeping the current routes"),
        "{log}"
    );
    assert!(log.contains("config.json"), "{log}");
}

#[test]
fn sigterm_lets_streams_finish_then_exits_cleanly() {
    let mut env = Env::start(Mode::Direct);
    let stream = slow_stream(&env);
    wait_for_stream_start(&env);
    env.proxy.signal("TERM");
    let (code, body, err) = stream.join().unwrap();
    assert_eq!(code, 200, "{err}");
    assert!(body.contains("message_stop"), "the stream was cut: {body}");
    let status = env.proxy.child.wait().unwrap();
    assert!(
        status.success(),
        "exit status {status:?}: {}",
        env.proxy.stderr_text()
    );
    assert!(
        std::net::TcpStream::connect(env.proxy.addr).is_err(),
        "still listening"
    );
}

#[test]
fn serves_on_a_unix_socket_when_configured() {
    let env = Env::start(Mode::Direct);
    let socket = env.dir.path().join("proxy.sock");
    let mut config = env.config.clone();
    config.proxy.listen.unix = Some(socket.display().to_string());
    let config_path = env.dir.path().join("config-unix.json");
    std::fs::write(&config_path, config.to_json()).unwrap();
    let second = support::spawn_proxy(
        env.dir.path(),
        &env.dir.path().join("hosts"),
        &config_path,
        &env.secrets_path,
        &[],
    );
    // The agent side of the relay: CONNECT over the socket, then TLS with the bundle CA.
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import os, socket, ssl, sys
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
target = sys.argv[2]
sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
reply = b""
while b"\r\n\r\n" not in reply:
    reply += sock.recv(1)
assert reply.startswith(b"HTTP/1.1 200"), reply
ctx = ssl.create_default_context(cafile=sys.argv[3])
tls = ctx.wrap_socket(sock, server_hostname=target.split(":")[0])
tls.sendall(f"GET /v1/unix HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n".encode())
data = b""
while chunk := tls.recv(65536):
    data += chunk
print(data.decode())
"#,
        )
        .arg(&socket)
        .arg(format!("api.test:{}", env.port()))
        .arg(&env.ca)
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        second.stderr_text()
    );
    assert!(body.contains("/v1/unix"), "{body}");
    // The upstream got the injected token; its echo reaches the agent masked.
    let seen = env.upstream.seen();
    assert!(
        format!("{seen:?}").contains(support::BEARER_TOKEN),
        "the upstream did not get the injected token: {seen:?}"
    );
    assert!(!body.contains(support::BEARER_TOKEN), "{body}");
    assert!(
        body.contains(&"*".repeat(support::BEARER_TOKEN.len())),
        "{body}"
    );
    drop(second);
}

#[test]
fn bad_config_fails_with_a_message_naming_file_route_and_slot() {
    let env = Env::start(Mode::Direct);
    let path = env.dir.path().join("bad.json");
    // The proxy's stderr for `config_text`; it must fail.
    let refused = |config_text: String| {
        std::fs::write(&path, config_text).unwrap();
        let out = std::process::Command::new(support::BIN)
            .arg("proxy")
            .arg("--config")
            .arg(&path)
            .arg("--secrets")
            .arg(&env.secrets_path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let mut config = env.config.clone();
    config.proxy.routes[1].auth.as_mut().unwrap().token_ref = "MISSING".parse().unwrap();
    let err = refused(config.to_json());
    assert!(err.contains("bad.json: proxy config"), "{err}");
    assert!(
        err.contains(&format!("route 1 (key.test:{})", env.port())),
        "{err}"
    );
    assert!(
        err.contains("token slot \"MISSING\" is not in the secrets file"),
        "{err}"
    );
    assert!(!err.contains(support::BEARER_TOKEN) && !err.contains(support::KEY_TOKEN));

    // A route the contract refuses (here an IP address) is refused as the config is read.
    let text =
        env.config
            .to_json()
            .replacen("\"host\": \"open.test\"", "\"host\": \"10.0.0.1\"", 1);
    assert!(text.contains("10.0.0.1"), "{text}");
    let err = refused(text);
    assert!(err.contains("bad.json"), "{err}");
    assert!(err.contains("`10.0.0.1` is an IP address"), "{err}");
}

/// `bottle-bundle probe` asks each role on its own socket: the proxy's route table answers,
/// a role with nothing listening is reported down and fails the probe (the launcher's health
/// check never goes through the agent's loopback).
#[test]
fn probe_asks_each_role_on_its_socket() {
    use bottle_contract::bundle_config::Role;
    let env = Env::start(Mode::Direct);
    let socket = env.dir.path().join("proxy.sock");
    let mut config = env.config.clone();
    config.proxy.listen.unix = Some(socket.display().to_string());
    config.gate.listen.unix = Some(env.dir.path().join("gate.sock").display().to_string());
    let config_path = env.dir.path().join("config-probe.json");
    std::fs::write(&config_path, config.to_json()).unwrap();
    let _proxy = support::spawn_proxy(
        env.dir.path(),
        &env.dir.path().join("hosts"),
        &config_path,
        &env.secrets_path,
        &[],
    );
    let probe = |config: &std::path::Path, extra: &[&str]| {
        std::process::Command::new(support::BIN)
            .arg("probe")
            .arg("--config")
            .arg(config)
            .args(extra)
            .output()
            .unwrap()
    };
    let routes = probe(&config_path, &["--routes"]);
    let body = String::from_utf8_lossy(&routes.stdout);
    assert!(routes.status.success(), "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        page["routes"].as_array().is_some_and(|r| !r.is_empty()),
        "{body}"
    );

    let healthy = probe(&config_path, &[]);
    assert!(healthy.status.success());
    assert_eq!(String::from_utf8_lossy(&healthy.stdout), "proxy ok\n");

    // A gate role with nothing listening on its socket: down, and the probe fails.
    config.roles = vec![Role::Proxy, Role::Gate];
    std::fs::write(&config_path, config.to_json()).unwrap();
    let down = probe(&config_path, &[]);
    let out = String::from_utf8_lossy(&down.stdout);
    assert!(!down.status.success(), "{out}");
    assert!(
        out.starts_with("proxy ok\ngate down: cannot connect to "),
        "{out}"
    );
}
