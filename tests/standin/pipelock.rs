//! `pipelock-standin`: a stand-in for pipelock in the end-to-end tests (pipelock itself, a Go
//! program, cannot be built or fetched on the build machines; NOTES.md "Pipelock").
//!
//! It takes pipelock's command line (`--version`, `run --config FILE --listen ADDR`), reads the
//! config claude-bottle renders (refusing keys it does not know, as pipelock does, a CA key
//! that is not SEC1 PEM or is readable by others, and anything but strict mode with the
//! forward proxy and TLS interception on), and is a real MITM forward proxy with that CA:
//! - `CONNECT host:port` to a host outside `api_allowlist` gets pipelock's refusal, `403` with
//!   `X-Pipelock-Block-Reason: domain not in allowlist: <host>`; so does a host resolving to a
//!   private address outside `ssrf.ip_allowlist`;
//! - inside an allowed tunnel it terminates TLS with a leaf signed by the config's CA, refuses a
//!   `Host` other than the tunnel's, and a token-shaped value in a `sensitive_headers` header
//!   (pipelock's header DLP, as measured), then forwards the request over TLS, trusting the
//!   system roots plus `SSL_CERT_DIR` as Go does, with `Via: pipelock-standin` added; a
//!   compressed answer is refused (pipelock fails closed on those);
//! - SIGHUP re-reads the config (pipelock hot-reloads `api_allowlist`).
//!
//! Every decision and every request it sees (headers included) is a JSON line in
//! [`LOG_PATH`], which the tests read in the bundle container.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// Where the stand-in logs what it sees.
const LOG_PATH: &str = "/tmp/pipelock-standin.jsonl";
/// What `--version` prints (the launcher shows the version in the plan).
const VERSION_LINE: &str = "pipelock version 0.0.0-standin (claude-bottle e2e stand-in)";
/// The header pipelock names a refusal's reason in.
const BLOCK_REASON: &str = "x-pipelock-block-reason";
/// Token shapes pipelock's built-in DLP patterns catch in a header (a small subset).
const TOKEN_PREFIXES: &[&str] = &["ghp_", "github_pat_", "sk-ant-", "xoxb-", "AKIA"];

type Body = BoxBody<Bytes, hyper::Error>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

// The config as claude-bottle renders it; every struct refuses unknown keys, as pipelock does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read to refuse unknown keys; not every value matters to the stand-in.
struct Config {
    version: u32,
    mode: String,
    api_allowlist: Vec<String>,
    fetch_proxy: FetchProxy,
    forward_proxy: ForwardProxy,
    tls_interception: TlsInterception,
    request_body_scanning: RequestBodyScanning,
    dlp: Dlp,
    #[serde(default)]
    ssrf: Ssrf,
    sentry: Sentry,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct FetchProxy {
    listen: String,
    monitoring: Monitoring,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Monitoring {
    max_requests_per_minute: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ForwardProxy {
    enabled: bool,
    max_tunnel_seconds: u32,
    idle_timeout_seconds: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct TlsInterception {
    enabled: bool,
    ca_cert: String,
    ca_key: String,
    passthrough_domains: Vec<String>,
    max_response_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RequestBodyScanning {
    enabled: bool,
    action: String,
    max_body_bytes: u64,
    scan_headers: bool,
    header_mode: String,
    sensitive_headers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Dlp {
    scan_env: bool,
    include_defaults: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ssrf {
    #[serde(default)]
    ip_allowlist: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sentry {
    enabled: bool,
}

/// What a request is judged by; replaced whole on SIGHUP.
struct Policy {
    allowlist: Vec<String>,
    sensitive: Vec<String>,
    ip_allowlist: Vec<ipnet::IpNet>,
}

struct State {
    policy: RwLock<Arc<Policy>>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    client_tls: Arc<rustls::ClientConfig>,
    log: std::sync::Mutex<std::fs::File>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--version") {
        println!("{VERSION_LINE}");
        return;
    }
    let (config, listen) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("pipelock: {e}");
            eprintln!("usage: pipelock run --config FILE --listen ADDR | pipelock --version");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pipelock: cannot start: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(&config, listen.as_deref())) {
        eprintln!("pipelock: {e}");
        std::process::exit(1);
    }
}

fn parse_args(args: &[String]) -> Result<(PathBuf, Option<String>), String> {
    let mut it = args.iter();
    if it.next().map(String::as_str) != Some("run") {
        return Err("unknown command".into());
    }
    let (mut config, mut listen) = (None, None);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" => config = it.next().map(PathBuf::from),
            "--listen" => listen = it.next().cloned(),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok((config.ok_or("--config is required")?, listen))
}

/// Reads and checks the config as pipelock would.
fn load(path: &Path) -> Result<Config, BoxError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    let config: Config =
        serde_saphyr::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))?;
    if config.mode != "strict" {
        return Err(format!(
            "mode {:?}: the stand-in enforces strict mode only",
            config.mode
        )
        .into());
    }
    if !config.forward_proxy.enabled || !config.tls_interception.enabled {
        return Err("forward_proxy and tls_interception must be enabled".into());
    }
    if config.sentry.enabled {
        return Err("sentry must be disabled".into());
    }
    Ok(config)
}

fn policy(config: &Config) -> Result<Policy, BoxError> {
    let ip_allowlist = config
        .ssrf
        .ip_allowlist
        .iter()
        .map(|c| {
            c.parse()
                .map_err(|_| format!("ssrf.ip_allowlist: {c:?} is not a CIDR"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Policy {
        allowlist: config
            .api_allowlist
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        sensitive: config
            .request_body_scanning
            .sensitive_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        ip_allowlist,
    })
}

/// The CA as pipelock loads it: certificate PEM, key SEC1 PEM with mode 0600 or 0640.
fn issuer(tls: &TlsInterception) -> Result<rcgen::Issuer<'static, rcgen::KeyPair>, BoxError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&tls.ca_key)
        .map_err(|e| format!("ca_key {}: {e}", tls.ca_key))?
        .permissions()
        .mode();
    if mode & 0o037 != 0 {
        return Err(format!(
            "ca_key {} has mode {:o}; 0600 or 0640 is required",
            tls.ca_key,
            mode & 0o777
        )
        .into());
    }
    let key_pem = std::fs::read(&tls.ca_key)?;
    let sec1 = match rustls_pemfile::private_key(&mut key_pem.as_slice())? {
        Some(rustls::pki_types::PrivateKeyDer::Sec1(der)) => der,
        _ => return Err(format!("ca_key {}: not an EC PRIVATE KEY (SEC1) PEM", tls.ca_key).into()),
    };
    let pkcs8 = pkcs8_of_sec1(sec1.secret_sec1_der());
    let key = rcgen::KeyPair::try_from(&rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8))
        .map_err(|e| format!("ca_key {}: {e}", tls.ca_key))?;
    let cert_pem = std::fs::read_to_string(&tls.ca_cert)
        .map_err(|e| format!("ca_cert {}: {e}", tls.ca_cert))?;
    Ok(rcgen::Issuer::from_ca_cert_pem(&cert_pem, key)?)
}

/// SEC1 `ECPrivateKey` (P-256) wrapped as PKCS#8, which ring loads.
fn pkcs8_of_sec1(sec1: &[u8]) -> Vec<u8> {
    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match contents.len() {
            n @ 0..=0x7f => out.push(n as u8),
            n @ 0x80..=0xff => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(contents);
        out
    }
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let mut body = der(0x02, &[0]);
    body.extend(der(0x30, &[EC_PUBLIC_KEY, P256].concat()));
    body.extend(der(0x04, sec1));
    der(0x30, &body)
}

/// The roots Go's crypto/x509 reads on Linux: `SSL_CERT_FILE` or the system bundle, plus
/// every file of the `SSL_CERT_DIR` directories.
fn client_tls() -> Result<Arc<rustls::ClientConfig>, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    let file = std::env::var("SSL_CERT_FILE")
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    let mut pems = vec![std::fs::read(&file).unwrap_or_default()];
    for dir in std::env::var("SSL_CERT_DIR").unwrap_or_default().split(':') {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                pems.push(std::fs::read(entry.path()).unwrap_or_default());
            }
        }
    }
    for pem in pems {
        for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
            let _ = roots.add(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn run(config_path: &Path, listen: Option<&str>) -> Result<(), BoxError> {
    let config = load(config_path)?;
    let state = Arc::new(State {
        policy: RwLock::new(Arc::new(policy(&config)?)),
        issuer: issuer(&config.tls_interception)?,
        client_tls: client_tls()?,
        log: std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(LOG_PATH)?,
        ),
    });
    let addr = listen.unwrap_or(&config.fetch_proxy.listen).to_owned();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    log(
        &state,
        serde_json::json!({"event": "start", "listen": addr, "pid": std::process::id(), "api_allowlist": config.api_allowlist}),
    );

    let reload_state = state.clone();
    let path = config_path.to_owned();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match load(&path).and_then(|c| Ok((policy(&c)?, c.api_allowlist))) {
                Ok((policy, allowlist)) => {
                    *reload_state
                        .policy
                        .write()
                        .unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
                    log(
                        &reload_state,
                        serde_json::json!({"event": "reload", "api_allowlist": allowlist}),
                    );
                }
                Err(e) => {
                    eprintln!("pipelock: reload refused, keeping the running config: {e}");
                    log(
                        &reload_state,
                        serde_json::json!({"event": "reload-refused", "error": e.to_string()}),
                    );
                }
            }
        }
    });
    loop {
        let (tcp, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| proxy(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
        });
    }
}

fn log(state: &State, line: serde_json::Value) {
    let mut file = state.log.lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(file, "{line}");
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *response.status_mut() = status;
    response
}

/// Pipelock's refusal: `403`, the reason in the body and in `X-Pipelock-Block-Reason`.
fn blocked(reason: &str, what: &str) -> Response<Body> {
    let mut response = text(StatusCode::FORBIDDEN, format!("{what} blocked: {reason}\n"));
    if let Ok(value) = reason.parse() {
        response.headers_mut().insert(BLOCK_REASON, value);
    }
    response
}

fn allowed(policy: &Policy, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    policy
        .allowlist
        .iter()
        .any(|entry| match entry.strip_prefix("*.") {
            Some(apex) => host == apex || host.ends_with(&format!(".{apex}")),
            None => *entry == host,
        })
}

fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (v4.octets()[0] == 100 && v4.octets()[1] & 0xc0 == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

async fn proxy(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, hyper::Error> {
    if req.method() != Method::CONNECT {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the stand-in serves CONNECT only\n".into(),
        ));
    }
    let Some((host, port)) = req
        .uri()
        .authority()
        .map(|a| (a.host().to_owned(), a.port_u16().unwrap_or(443)))
    else {
        return Ok(text(
            StatusCode::BAD_REQUEST,
            "CONNECT needs host:port\n".into(),
        ));
    };
    let policy = state
        .policy
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if !allowed(&policy, &host) {
        let reason = format!("domain not in allowlist: {host}");
        log(
            &state,
            serde_json::json!({"event": "connect", "host": host, "decision": "block", "reason": reason}),
        );
        return Ok(blocked(&reason, "CONNECT"));
    }
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(addrs) => addrs.collect(),
        Err(_) => Vec::new(),
    };
    if addrs.is_empty() {
        return Ok(text(
            StatusCode::BAD_GATEWAY,
            format!("cannot resolve {host}\n"),
        ));
    }
    if let Some(bad) = addrs
        .iter()
        .find(|a| private(a.ip()) && !policy.ip_allowlist.iter().any(|n| n.contains(&a.ip())))
    {
        let reason = format!(
            "SSRF blocked: {host} resolves to private address {}",
            bad.ip()
        );
        log(
            &state,
            serde_json::json!({"event": "connect", "host": host, "decision": "block", "reason": reason}),
        );
        return Ok(blocked(&reason, "CONNECT"));
    }
    log(
        &state,
        serde_json::json!({"event": "connect", "host": host, "decision": "allow"}),
    );
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                if let Err(e) = intercept(state, upgraded, host.clone(), addrs).await {
                    eprintln!("pipelock: tunnel to {host}: {e}");
                }
            }
            Err(e) => eprintln!("pipelock: upgrade: {e}"),
        }
    });
    Ok(text(StatusCode::OK, String::new()))
}

/// Terminates the tunnel's TLS with a leaf for `host` and serves its requests.
async fn intercept(
    state: Arc<State>,
    upgraded: hyper::upgrade::Upgraded,
    host: String,
    addrs: Vec<SocketAddr>,
) -> Result<(), BoxError> {
    let key = rcgen::KeyPair::generate()?;
    let leaf = rcgen::CertificateParams::new(vec![host.clone()])?.signed_by(&key, &state.issuer)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(server))
        .accept(TokioIo::new(upgraded))
        .await?;
    let service = hyper::service::service_fn(move |req| {
        let (state, host, addrs) = (state.clone(), host.clone(), addrs.clone());
        async move { Ok::<_, hyper::Error>(inner(state, req, host, addrs).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await?;
    Ok(())
}

/// One request inside a tunnel: judged, logged, forwarded.
async fn inner(
    state: Arc<State>,
    mut req: Request<Incoming>,
    host: String,
    addrs: Vec<SocketAddr>,
) -> Response<Body> {
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    let policy = state
        .policy
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let authority = headers
        .get("host")
        .map(|h| h.split(':').next().unwrap_or_default().to_owned());
    let verdict = if authority.as_deref() != Some(host.as_str()) {
        Some(format!(
            "authority mismatch: Host {authority:?} in a tunnel to {host}"
        ))
    } else {
        headers
            .iter()
            .find(|(name, value)| {
                policy.sensitive.contains(name) && TOKEN_PREFIXES.iter().any(|p| value.contains(p))
            })
            .map(|(name, _)| format!("request header contains secret: {name}"))
    };
    log(
        &state,
        serde_json::json!({
            "event": "request", "host": host, "method": req.method().as_str(), "path": path,
            "headers": headers, "decision": if verdict.is_some() { "block" } else { "allow" },
            "reason": verdict,
        }),
    );
    if let Some(reason) = verdict {
        return blocked(&reason, "request");
    }
    req.headers_mut().insert(
        "via",
        hyper::header::HeaderValue::from_static("pipelock-standin"),
    );
    match forward(&state, req, &host, &addrs).await {
        Ok(response) => {
            let compressed = response
                .headers()
                .get(hyper::header::CONTENT_ENCODING)
                .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
            if compressed {
                return blocked("compressed response cannot be scanned", "response");
            }
            response.map(|b| b.boxed())
        }
        Err(e) => text(StatusCode::BAD_GATEWAY, format!("upstream {host}: {e}\n")),
    }
}

async fn forward(
    state: &State,
    req: Request<Incoming>,
    host: &str,
    addrs: &[SocketAddr],
) -> Result<Response<Incoming>, BoxError> {
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = match (tcp, last) {
        (Some(tcp), _) => tcp,
        (None, Some(e)) => return Err(e.into()),
        (None, None) => return Err("no address".into()),
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())?;
    let tls = tokio_rustls::TlsConnector::from(state.client_tls.clone())
        .connect(name, tcp)
        .await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(req).await?)
}
