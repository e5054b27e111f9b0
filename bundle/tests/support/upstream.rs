//! A local HTTPS upstream for the proxy tests: hyper + rustls with its own test CA (trusted
//! only by the proxy), serving an echo endpoint, an SSE stream with gaps, and a smart-HTTP git
//! server (`git http-backend` behind a small CGI bridge).

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub host: String,
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub version: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// When each SSE event was written (relative to the first).
pub type SentLog = Arc<Mutex<Vec<std::time::SystemTime>>>;

/// The running upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    /// The upstream's own CA (PEM file), given to the proxy as its extra CA.
    pub ca_path: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub sse_sent: SentLog,
    /// Every request body byte `/upload` received, as it arrived (a request ended midway
    /// leaves what came before its end).
    pub received: Arc<Mutex<Vec<u8>>>,
    /// TLS connections accepted (keep-alive shows as fewer connections than requests).
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    /// TCP connections open right now, and the most ever open at once.
    pub open: Arc<AtomicUsize>,
    pub peak_open: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

/// Gap before each SSE content event (the client is idle, waiting, when each one is sent).
pub const SSE_GAP: Duration = Duration::from_millis(400);
/// Number of SSE content events.
pub const SSE_EVENTS: usize = 5;

impl Upstream {
    /// Starts on 127.0.0.1:0 with a certificate for `names`; git repos live under `git_root`.
    pub fn start(dir: &Path, names: &[&str], git_root: PathBuf) -> Upstream {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "upstream test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca_path = dir.join("upstream-ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let received: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sse_sent: SentLog = Arc::default();
        let connections: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let counter = connections.clone();
        let open: Arc<AtomicUsize> = Arc::default();
        let peak_open: Arc<AtomicUsize> = Arc::default();
        let (open_count, peak) = (open.clone(), peak_open.clone());
        let state = Arc::new(State {
            seen: seen.clone(),
            received: received.clone(),
            sse_sent: sse_sent.clone(),
            git_root,
        });
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let now_open = open_count.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now_open, Ordering::SeqCst);
                let guard = OpenGuard(open_count.clone());
                let acceptor = acceptor.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            ca_path,
            seen,
            received,
            sse_sent,
            connections,
            open,
            peak_open,
            _runtime: runtime,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Everything seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Counts a connection as closed when its task ends, however it ends.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct State {
    seen: Arc<Mutex<Vec<Seen>>>,
    received: Arc<Mutex<Vec<u8>>>,
    sse_sent: SentLog,
    git_root: PathBuf,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let host = req
        .uri()
        .host()
        .map(str::to_owned)
        .or_else(|| {
            req.headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(|h| h.split(':').next().unwrap_or_default().to_owned())
        })
        .unwrap_or_default();
    let seen = Seen {
        host: host.clone(),
        method: req.method().to_string(),
        path_and_query: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("<bin>").to_owned()))
            .collect(),
        version: format!("{:?}", req.version()),
    };
    state.seen.lock().unwrap().push(seen.clone());
    if host == "git.test" {
        return Ok(git_cgi(&state.git_root, req).await);
    }
    let path = req.uri().path().to_owned();
    if path == "/ws" {
        return Ok(websocket_echo(state.clone(), req));
    }
    if path == "/v1/messages" {
        // `?reflect`: every text delta also carries the request's x-api-key (an upstream
        // that echoes the injected credential).
        let reflect = req
            .uri()
            .query()
            .is_some_and(|q| q.contains("reflect"))
            .then(|| seen.header("x-api-key").unwrap_or_default().to_owned());
        return Ok(sse(state.sse_sent.clone(), reflect));
    }
    if path.ends_with("/upload") {
        let mut body = req.into_body();
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Some(data) = frame.data_ref() {
                total += data.len();
                state.received.lock().unwrap().extend_from_slice(data);
            }
        }
        return Ok(Response::new(
            Full::new(Bytes::from(format!("received {total}\n"))).boxed(),
        ));
    }
    if let Some(ms) = path.strip_prefix("/sleep/") {
        // Holds the request (and its connection) before answering.
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        return Ok(Response::new(Full::new(Bytes::from("slept\n")).boxed()));
    }
    if let Some(size) = path.strip_prefix("/bytes/") {
        let size: usize = size.parse().unwrap_or(0);
        return Ok(Response::new(
            Full::new(Bytes::from(vec![b'x'; size])).boxed(),
        ));
    }
    let body = serde_json::json!({
        "host": seen.host,
        "path": seen.path_and_query,
        "version": seen.version,
        "headers": seen.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>(),
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    // The credential it got, echoed in a header too.
    if let Some(auth) = seen.header("authorization") {
        response
            .headers_mut()
            .insert("x-echo-authorization", auth.parse().unwrap());
    }
    Ok(response)
}

/// Accepts a WebSocket upgrade and echoes each text message back, prefixed with `echo: `
/// (with `?reflect`, suffixed with ` key=` and the request's `x-api-key`: an upstream that
/// reflects the injected credential). Fragmented messages are reassembled; every payload byte
/// is recorded in `received` as it arrives.
fn websocket_echo(state: Arc<State>, mut req: Request<Incoming>) -> Response<Body> {
    use base64::Engine as _;
    use sha1::Digest as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let key = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let reflect = req
        .uri()
        .query()
        .is_some_and(|q| q.contains("reflect"))
        .then(|| {
            req.headers()
                .get("x-api-key")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        });
    let mut sha = sha1::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut io = TokioIo::new(upgraded);
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            if io.read_exact(&mut head).await.is_err() {
                return;
            }
            let fin = head[0] & 0x80 != 0;
            let opcode = head[0] & 0x0f;
            let len = match head[1] & 0x7f {
                126 => usize::from(io.read_u16().await.unwrap_or(0)),
                127 => usize::try_from(io.read_u64().await.unwrap_or(0)).unwrap(),
                n => usize::from(n),
            };
            let mut mask = [0u8; 4];
            if head[1] & 0x80 != 0 && io.read_exact(&mut mask).await.is_err() {
                return;
            }
            let mut payload = vec![0u8; len];
            if io.read_exact(&mut payload).await.is_err() {
                return;
            }
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            state.received.lock().unwrap().extend_from_slice(&payload);
            if opcode == 0x8 {
                let _ = io.write_all(&[0x88, 0]).await;
                return;
            }
            if opcode >= 0x8 {
                continue;
            }
            message.extend_from_slice(&payload);
            if !fin {
                continue;
            }
            let mut reply = b"echo: ".to_vec();
            reply.append(&mut message);
            if let Some(key) = &reflect {
                reply.extend_from_slice(format!(" key={key}").as_bytes());
            }
            let mut frame = vec![0x81];
            match reply.len() {
                n if n < 126 => frame.push(u8::try_from(n).unwrap()),
                n => {
                    frame.push(127);
                    frame.extend_from_slice(&(n as u64).to_be_bytes());
                }
            }
            frame.extend_from_slice(&reply);
            if io.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()).boxed());
    *response.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert("upgrade", "websocket".parse().unwrap());
    headers.insert("connection", "Upgrade".parse().unwrap());
    headers.insert("sec-websocket-accept", accept.parse().unwrap());
    response
}

/// An Anthropic Messages streaming reply: SSE events with [`SSE_GAP`] between them.
fn sse(sent: SentLog, reflect: Option<String>) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    tokio::spawn(async move {
        let mut events = vec![
            event(
                "message_start",
                serde_json::json!({"type": "message_start", "message": {
                "id": "msg_test", "type": "message", "role": "assistant", "model": "claude-test",
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 1, "output_tokens": 0}}}),
            ),
            event(
                "content_block_start",
                serde_json::json!({"type": "content_block_start",
                "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
        ];
        for i in 0..SSE_EVENTS {
            events.push(event(
                "content_block_delta",
                serde_json::json!({
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": match &reflect {
                    Some(key) => format!("chunk{i} {key} "),
                    None => format!("chunk{i} "),
                }}}),
            ));
        }
        events.push(event(
            "content_block_stop",
            serde_json::json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push(event(
            "message_delta",
            serde_json::json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 5}}),
        ));
        events.push(event(
            "message_stop",
            serde_json::json!({"type": "message_stop"}),
        ));
        for e in events {
            let is_delta = e.starts_with("event: content_block_delta");
            if is_delta {
                tokio::time::sleep(SSE_GAP).await;
            }
            if is_delta {
                sent.lock().unwrap().push(std::time::SystemTime::now());
            }
            if tx.send(Ok(Frame::data(Bytes::from(e)))).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(BodyExt::boxed(ChannelBody(rx)));
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}

/// A body fed frame by frame from a channel: each frame is written as soon as it is sent.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut().0.poll_recv(cx)
    }
}

fn event(name: &str, data: serde_json::Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// Runs `git http-backend` for one request (CGI), buffering its output (test side only).
async fn git_cgi(root: &Path, req: Request<Incoming>) -> Response<Body> {
    use tokio::io::AsyncWriteExt as _;
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let encoding = req
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", content_type)
        .env("HTTP_CONTENT_ENCODING", encoding)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", "tester")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("git http-backend");
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = child.wait_with_output().await.unwrap();
    let _ = writer.await;
    let out = output.stdout;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)))
        .unwrap_or((out.len(), 0));
    let head = String::from_utf8_lossy(&out[..split.0]).into_owned();
    let body = Bytes::copy_from_slice(&out[split.0 + split.1..]);
    let mut response = Response::new(Full::new(body).boxed());
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code: u16 = v
                .split_whitespace()
                .next()
                .unwrap_or("200")
                .parse()
                .unwrap_or(500);
            *response.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
        } else if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(k.trim().as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
