//! Strict request parsing: requests whose framing or headers could be read two ways are
//! refused, never forwarded (request smuggling through the proxy). The one exception is
//! hyper's RFC 9112 §6.1 handling of `Content-Length` with `Transfer-Encoding: chunked`:
//! chunked wins, the length is dropped, the upstream gets clean framing, and the agent's
//! connection is closed after the response so nothing can ride behind it.

#![allow(clippy::unwrap_used)]

mod support;

use support::{Env, Mode};

#[test]
fn ambiguous_requests_are_refused_inside_the_tunnel_and_in_cleartext() {
    let env = Env::start(Mode::Direct);
    let out = env.python(
        r#"
import os, socket, ssl
host, port = os.environ["PROXY"].removeprefix("http://").split(":")
target = f"open.test:{os.environ['PORT']}"
def tunnel():
    s = socket.create_connection((host, int(port)))
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += s.recv(1)
    ctx = ssl.create_default_context(cafile=os.environ["CA"])
    return ctx.wrap_socket(s, server_hostname="open.test")
def status(sock, raw):
    sock.sendall(raw)
    sock.settimeout(5)
    try:
        data = sock.recv(4096)
        line = data.split(b"\r\n")[0].decode()
        if b"\r\nconnection: close\r\n" in data.lower():
            line += " (then closed)"
    except Exception as e:
        line = type(e).__name__
    return line
H = f"Host: {target}\r\n".encode()
cases = {
    "cl+te": b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two cl": b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    "odd te": b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n",
    "obs fold": b"GET /a HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n",
    "nul": b"GET /a HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n",
    "bare cr": b"GET /a HTTP/1.1\r\n" + H + b"X: a\rb\r\n\r\n",
    "bare lf request line": b"GET /a HTTP/1.1\n" + H + b"\r\n",
    "bare lf header": b"GET /a HTTP/1.1\r\n" + H + b"X: a\n\r\n",
    "bare lf end": b"GET /a HTTP/1.1\r\n" + H + b"\n",
    "other host": b"GET /a HTTP/1.1\r\nHost: other.test\r\n\r\n",
    "absolute other": b"GET https://other.test/a HTTP/1.1\r\nHost: other.test\r\n\r\n",
}
for name, raw in cases.items():
    print(f"tls {name}: {status(tunnel(), raw)}")
plain = b"POST http://open.test/a HTTP/1.1\r\nHost: open.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
print("plain cl+te:", status(socket.create_connection((host, int(port))), plain))
# Pipelined behind a body of bare LFs (passed as they are): the first request is answered; the
# second, with a bare LF in its head, ends the connection unforwarded (hyper answers a malformed
# pipelined request, NUL or bare CR alike, by closing rather than with a 400).
s = tunnel()
s.sendall(b"POST /lf-body HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\n\n\n\nGET /lf-second HTTP/1.1\r\n" + H + b"X: a\n\r\n")
s.settimeout(5)
got = b""
try:
    while chunk := s.recv(4096):
        got += chunk
except Exception:
    pass
print("tls pipelined:", [l.decode() for l in got.split(b"\r\n") if l.startswith(b"HTTP/1.1")])
plain_lf = b"GET http://open.test/a HTTP/1.1\nHost: open.test\r\n\r\n"
print("plain bare lf:", status(socket.create_connection((host, int(port))), plain_lf))
"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    expect_test::expect![[r#"
        tls cl+te: HTTP/1.1 200 OK (then closed)
        tls two cl: HTTP/1.1 400 Bad Request (then closed)
        tls odd te: HTTP/1.1 400 Bad Request (then closed)
        tls obs fold: HTTP/1.1 400 Bad Request (then closed)
        tls nul: HTTP/1.1 400 Bad Request (then closed)
        tls bare cr: HTTP/1.1 400 Bad Request (then closed)
        tls bare lf request line: HTTP/1.1 400 Bad Request (then closed)
        tls bare lf header: HTTP/1.1 400 Bad Request (then closed)
        tls bare lf end: HTTP/1.1 400 Bad Request (then closed)
        tls other host: HTTP/1.1 403 Forbidden
        tls absolute other: HTTP/1.1 403 Forbidden
        plain cl+te: HTTP/1.1 403 Forbidden (then closed)
        tls pipelined: ['HTTP/1.1 200 OK']
        plain bare lf: HTTP/1.1 400 Bad Request (then closed)
    "#]]
    .assert_eq(&String::from_utf8_lossy(&out.stdout));
    let seen = env.upstream.seen();
    // Only the cl+te request and the body of bare LFs are forwarded.
    let paths: Vec<&str> = seen.iter().map(|s| s.path_and_query.as_str()).collect();
    assert_eq!(paths, ["/a", "/lf-body"], "{seen:?}");
    assert!(seen[0].header("content-length").is_none(), "{seen:?}");
}

#[test]
fn a_tls_name_other_than_the_connect_target_is_refused() {
    let env = Env::start(Mode::Direct);
    let out = env.python(
        r#"
import os, socket, ssl
host, port = os.environ["PROXY"].removeprefix("http://").split(":")
target = f"open.test:{os.environ['PORT']}"
s = socket.create_connection((host, int(port)))
s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
reply = b""
while b"\r\n\r\n" not in reply:
    reply += s.recv(1)
ctx = ssl.create_default_context(cafile=os.environ["CA"])
# The client would accept any name the bundle CA signed: only the proxy's own check stops it.
ctx.check_hostname = False
try:
    ctx.wrap_socket(s, server_hostname="other.test")
    print("handshake accepted")
except (ssl.SSLError, ConnectionError, OSError) as e:
    print("handshake refused")
"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "handshake refused\n");
    assert!(env.upstream.seen().is_empty());
    let audit = env.audit_until(|lines| !lines.is_empty());
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["method"], "CONNECT");
    assert_eq!(audit[0]["decision"], "deny");
    let reason = audit[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("does not match the CONNECT target"),
        "{reason}"
    );
}

#[test]
fn concurrent_first_connections_to_a_host_mint_one_leaf() {
    let env = Env::start(Mode::Direct);
    let url = env.url("open.test", "/first");
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let proxy = env.proxy.url();
            let ca = env.ca.clone();
            let url = url.clone();
            std::thread::spawn(move || {
                std::process::Command::new("curl")
                    .args([
                        "-sS",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "-x",
                        &proxy,
                        "--cacert",
                    ])
                    .arg(&ca)
                    .arg(&url)
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for handle in handles {
        let out = handle.join().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{out:?}");
    }
    let log = env.proxy.stderr_text();
    let mints = log
        .lines()
        .filter(|l| l.contains("minted leaf certificate") && l.contains("host=\"open.test\""))
        .count();
    assert_eq!(mints, 1, "{log}");
}
