//! What the agent is told when an allowed request cannot be delivered: a 502 naming the class
//! of failure (DNS name not found, connection refused, TLS certificate not trusted, upstream
//! proxy unreachable) and what to do, never an address or the error text, which stay in the
//! audit log the operator reads.
#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bottle_contract::bundle_config::RouteConfig;
use support::{Env, Mode};

fn route(host: &str, port: u16) -> RouteConfig {
    RouteConfig {
        host: host.parse().unwrap(),
        port: std::num::NonZeroU16::new(port),
        path_allowlist: vec![],
        auth: None,
    }
}

/// A TLS server on loopback whose certificate no CA the bundle trusts has signed.
struct UntrustedTls(Child, u16);

impl UntrustedTls {
    fn start(dir: &std::path::Path) -> UntrustedTls {
        let (cert, key) = (dir.join("self.pem"), dir.join("self-key.pem"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=untrusted.test", "-addext"])
            .arg("subjectAltName=DNS:untrusted.test")
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl is required");
        assert!(out.status.success(), "{out:?}");
        let script = r#"
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
def serve(conn):
    try:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)
            tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    except Exception:
        pass
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&cert)
            .arg(&key)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is required");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the TLS server's port");
        UntrustedTls(child, port)
    }
}

impl Drop for UntrustedTls {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn each_upstream_failure_tells_the_agent_its_cause_and_what_to_do() {
    let env = Env::start(Mode::Direct);
    let tls = UntrustedTls::start(env.dir.path());
    // A port nothing listens on: bound once to find it, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The proxy's /etc/hosts is this file (bind-mounted), rewritten in place.
    let hosts = env.dir.path().join("hosts");
    let mut text = std::fs::read_to_string(&hosts).unwrap();
    text.push_str("127.0.0.1 closed.test untrusted.test\n");
    std::fs::write(&hosts, text).unwrap();
    let mut config = env.config.clone();
    config.proxy.routes.extend([
        route("nodns.test", env.port()),
        route("closed.test", closed),
        route("untrusted.test", tls.1),
    ]);
    env.write_config(&config);
    env.proxy.signal("HUP");

    let cases = [
        (
            format!("https://nodns.test:{}/", env.port()),
            "the name nodns.test was not found in DNS",
        ),
        (
            format!("https://closed.test:{closed}/"),
            "refused the connection: nothing listens on that port",
        ),
        (
            format!("https://untrusted.test:{}/", tls.1),
            "the TLS certificate of untrusted.test is not trusted",
        ),
    ];
    for (url, cause) in cases {
        let mut last = (0, String::new());
        // The reload takes a moment; until then the route is unknown (403).
        for _ in 0..100 {
            let (code, body, err) = env.curl(&[&url]);
            last = (code, format!("{body}{err}"));
            if code != 403 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (code, body) = last;
        assert_eq!(code, 502, "{url}: {body}");
        assert!(body.contains(cause), "{url}: {body}");
        assert!(
            body.contains("/var/log/bottle/audit.jsonl"),
            "{url}: says where the detail is: {body}"
        );
        assert!(
            !body.contains("127.0.0.1"),
            "{url}: an address leaked: {body}"
        );
        assert!(
            !body.contains("os error"),
            "{url}: error text leaked: {body}"
        );
    }
    // The untrusted certificate's refusal names the key that fixes it.
    let (_, body, _) = env.curl(&[&format!("https://untrusted.test:{}/", tls.1)]);
    assert!(body.contains("`egress.extra_ca`"), "{body}");
    // The audit log keeps the detail the agent was not shown.
    let reasons: Vec<String> = env
        .audit_until(|lines| {
            let refused = |l: &&serde_json::Value| {
                l["event"] == "outcome"
                    && l["status"] == 502
                    && l["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("Connection refused"))
            };
            lines.iter().any(|l| refused(&l))
        })
        .iter()
        .filter(|l| l["event"] == "outcome" && l["status"] == 502)
        .map(|l| l["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("cannot resolve nodns.test")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("Connection refused")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("TLS to untrusted.test failed")),
        "{reasons:?}"
    );
}
