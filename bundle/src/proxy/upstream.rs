//! The outbound leg: dialing upstream hosts directly (with address checks and pinned dialing)
//! or through an upstream CONNECT proxy, then TLS with the public roots plus an extra CA, or
//! behind an intercepting proxy (pipelock) with that proxy's CA alone.
//!
//! [`Connector`] plugs into hyper-util's pooled client, so keep-alive connections are reused
//! and a tunnel the upstream proxy closed is simply dropped from the pool.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::proxy::ssrf;

/// Longest a TCP connect (direct, or to the upstream proxy) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the upstream proxy may take to answer a CONNECT.
const PROXY_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest CONNECT reply header accepted from the upstream proxy.
const MAX_PROXY_REPLY: usize = 16 * 1024;
/// The header pipelock (v2.4+) names its reason for a refusal in.
pub(crate) const BLOCK_REASON_HEADER: &str = "x-pipelock-block-reason";
/// Most of a block reason passed on to the agent.
const MAX_BLOCK_REASON: usize = 300;
/// ALPN protocols offered to upstream servers.
const UPSTREAM_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why an upstream connection failed. `Refused` is a policy decision, the rest are faults.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{host} resolves to {addr}, a private or special address; direct mode refuses it")]
    Refused { host: String, addr: IpAddr },
    #[error("{host} resolves to {addr}, the proxy itself; refusing the loop")]
    Loop { host: String, addr: SocketAddr },
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        target: String,
        reason: String,
        /// What the agent is told (the reason itself stays in the audit log).
        class: FailureClass,
    },
    #[error("upstream proxy refused CONNECT {target}: {status}")]
    ProxyStatus { target: String, status: String },
    /// The upstream proxy refused by policy and said why (pipelock's
    /// `X-Pipelock-Block-Reason`): the agent is told the reason, as a refusal, not a fault.
    #[error("upstream proxy blocked CONNECT {target}: {reason}")]
    Blocked {
        target: String,
        reason: String,
        /// It answered 429 (pipelock's rate limit) rather than a refusal.
        rate_limited: bool,
    },
    #[error("TLS to {host} failed: {reason}")]
    Tls {
        host: String,
        reason: String,
        /// True when the server's certificate chain is not trusted (as opposed to a protocol
        /// or handshake failure).
        untrusted: bool,
    },
    #[error("bad upstream URI {0}")]
    Uri(String),
    #[error("cannot read CA file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("upstream proxy URL {url:?}: {reason}")]
    ProxyUrl { url: String, reason: &'static str },
    #[error("allow_private entry {entry:?} is not a CIDR (e.g. 10.0.0.0/8)")]
    Cidr { entry: String },
}

/// The kind of an upstream failure, as the agent is told it: a class and what to do, never an
/// address, a token or the underlying error text (those go to the audit log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The host's name did not resolve.
    DnsNotFound,
    /// The host answered the TCP connect with a reset: nothing listens on the port.
    ConnectionRefused,
    /// The TCP connect (or the upstream proxy's CONNECT reply) did not arrive in time.
    TimedOut,
    /// No route to the host or its network.
    Unreachable,
    /// The server's TLS certificate is not trusted by the bundle.
    TlsUntrusted,
    /// The TLS handshake failed for another reason.
    TlsFailed,
    /// The upstream proxy answered CONNECT with something other than 200.
    ProxyRefused,
    /// The upstream proxy itself could not be reached.
    ProxyUnreachable,
    /// Connected, but the exchange broke off before a complete response.
    BrokeOff,
}

impl FailureClass {
    /// One sentence for the agent about `host:port`, saying what to check or do.
    pub(crate) fn explain(self, host: &str, port: u16) -> String {
        match self {
            FailureClass::DnsNotFound => format!(
                "the name {host} was not found in DNS (check the host name; the bundle resolves \
                 route hosts through the host machine's resolver)"
            ),
            FailureClass::ConnectionRefused => {
                format!("{host}:{port} refused the connection: nothing listens on that port")
            }
            FailureClass::TimedOut => format!("connecting to {host}:{port} timed out"),
            FailureClass::Unreachable => {
                format!("{host}:{port} is unreachable from the bundle's network")
            }
            FailureClass::TlsUntrusted => format!(
                "the TLS certificate of {host} is not trusted. If this machine reaches it through \
                 an intercepting proxy, the operator adds that proxy's CA to the bottle's manifest \
                 with `egress.extra_ca`"
            ),
            FailureClass::TlsFailed => format!("the TLS handshake with {host} failed"),
            FailureClass::ProxyRefused => {
                format!("the upstream proxy refused the connection to {host}:{port}")
            }
            FailureClass::ProxyUnreachable => {
                "the upstream proxy the bundle sends all egress through could not be reached"
                    .to_owned()
            }
            FailureClass::BrokeOff => {
                format!("the connection to {host} broke off before a complete response")
            }
        }
    }

    fn of_io(error: &std::io::Error) -> FailureClass {
        use std::io::ErrorKind;
        match error.kind() {
            ErrorKind::ConnectionRefused => FailureClass::ConnectionRefused,
            ErrorKind::TimedOut => FailureClass::TimedOut,
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => FailureClass::Unreachable,
            _ => FailureClass::BrokeOff,
        }
    }
}

impl UpstreamError {
    /// What the agent is told about this failure.
    pub(crate) fn class(&self) -> FailureClass {
        match self {
            UpstreamError::Resolve { .. } => FailureClass::DnsNotFound,
            UpstreamError::Connect { class, .. } => *class,
            UpstreamError::ProxyStatus { .. } => FailureClass::ProxyRefused,
            UpstreamError::Tls {
                untrusted: true, ..
            } => FailureClass::TlsUntrusted,
            UpstreamError::Tls { .. } => FailureClass::TlsFailed,
            _ => FailureClass::BrokeOff,
        }
    }
}

/// How the proxy reaches upstream hosts.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    Direct {
        /// CIDRs exempt from the private-address refusal.
        allow_private: Vec<IpNet>,
    },
    Chained {
        proxy_host: String,
        proxy_port: u16,
        /// The proxy re-signs every tunnel's TLS (pipelock): only its CA is trusted.
        intercepts: bool,
    },
}

impl Outbound {
    /// Converts the contract's outbound block; also returns the extra CA path, if any.
    pub(crate) fn from_config(
        config: &bottle_contract::bundle_config::Outbound,
    ) -> Result<(Outbound, Option<String>), UpstreamError> {
        use bottle_contract::bundle_config::Outbound as C;
        match config {
            C::Direct {
                allow_private,
                extra_ca,
            } => {
                let nets = allow_private
                    .iter()
                    .map(|entry| {
                        entry.parse::<IpNet>().map_err(|_| UpstreamError::Cidr {
                            entry: entry.clone(),
                        })
                    })
                    .collect::<Result<_, _>>()?;
                Ok((
                    Outbound::Direct {
                        allow_private: nets,
                    },
                    extra_ca.clone(),
                ))
            }
            C::Upstream {
                proxy_url,
                extra_ca,
                intercepts,
            } => {
                let bad = |reason| UpstreamError::ProxyUrl {
                    url: proxy_url.clone(),
                    reason,
                };
                let uri: Uri = proxy_url.parse().map_err(|_| bad("not a URL"))?;
                if uri.scheme_str() != Some("http") {
                    return Err(bad("must be http://host:port"));
                }
                let host = uri.host().ok_or_else(|| bad("has no host"))?;
                let host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let proxy_port = uri.port_u16().unwrap_or(80);
                if *intercepts && extra_ca.is_none() {
                    return Err(bad("an intercepting proxy needs its CA in `extra_ca`"));
                }
                Ok((
                    Outbound::Chained {
                        proxy_host: host,
                        proxy_port,
                        intercepts: *intercepts,
                    },
                    extra_ca.clone(),
                ))
            }
        }
    }
}

impl Outbound {
    /// Whether every upstream TLS session is the upstream proxy's interception (pipelock).
    pub(crate) fn intercepted(&self) -> bool {
        matches!(
            self,
            Outbound::Chained {
                intercepts: true,
                ..
            }
        )
    }
}

/// Builds the client TLS config: the public roots (unless `public_roots` is false: behind an
/// intercepting proxy) plus the extra CA.
pub(crate) fn client_tls(
    extra_ca: Option<&Path>,
    public_roots: bool,
) -> Result<Arc<ClientConfig>, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    if public_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = extra_ca {
        let ca_err = |reason: String| UpstreamError::Ca {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| ca_err(e.to_string()))?;
            roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(ca_err("no PEM certificate in the file".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Tls {
            host: String::new(),
            reason: e.to_string(),
            untrusted: false,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = UPSTREAM_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The hyper-util connector for upstream connections.
#[derive(Clone)]
pub(crate) struct Connector {
    outbound: Arc<Outbound>,
    tls: tokio_rustls::TlsConnector,
    own: OwnAddrs,
}

/// The proxy's own TCP listen addresses, so direct mode never dials itself (a loop).
pub(crate) type OwnAddrs = Arc<std::sync::RwLock<Vec<SocketAddr>>>;

impl Connector {
    pub(crate) fn new(outbound: Outbound, tls: Arc<ClientConfig>, own: OwnAddrs) -> Connector {
        Connector {
            outbound: Arc::new(outbound),
            tls: tokio_rustls::TlsConnector::from(tls),
            own,
        }
    }

    async fn connect(self, uri: Uri) -> Result<UpstreamConn, UpstreamError> {
        let host = uri
            .host()
            .ok_or_else(|| UpstreamError::Uri(uri.to_string()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = match &*self.outbound {
            Outbound::Direct { allow_private } => {
                dial_checked(&host, port, allow_private, &self.own).await?
            }
            Outbound::Chained {
                proxy_host,
                proxy_port,
                ..
            } => tunnel(proxy_host, *proxy_port, &host, port).await?,
        };
        let _ = tcp.set_nodelay(true);
        if !tls {
            return Ok(UpstreamConn::Plain(TokioIo::new(tcp)));
        }
        let name = ServerName::try_from(host.clone()).map_err(|e| UpstreamError::Tls {
            host: host.clone(),
            reason: e.to_string(),
            untrusted: false,
        })?;
        let stream = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| UpstreamError::Tls {
                untrusted: is_untrusted_certificate(&e),
                host,
                reason: e.to_string(),
            })?;
        Ok(UpstreamConn::Tls(Box::new(TokioIo::new(stream))))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = UpstreamConn;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamConn, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// Resolves once, refuses if any address is private or special (unless allowed), then dials
/// exactly the addresses it checked: no second lookup, so no DNS rebinding.
async fn dial_checked(
    host: &str,
    port: u16,
    allow_private: &[IpNet],
    own: &OwnAddrs,
) -> Result<TcpStream, UpstreamError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| UpstreamError::Resolve {
            host: host.to_owned(),
            reason: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(UpstreamError::Resolve {
            host: host.to_owned(),
            reason: "no addresses".into(),
        });
    }
    if let Some(bad) = addrs
        .iter()
        .find(|a| !ssrf::is_allowed(a.ip(), allow_private))
    {
        return Err(UpstreamError::Refused {
            host: host.to_owned(),
            addr: bad.ip(),
        });
    }
    {
        let own = own.read().unwrap_or_else(|e| e.into_inner());
        if let Some(addr) = addrs.iter().find(|a| is_self(**a, &own)) {
            return Err(UpstreamError::Loop {
                host: host.to_owned(),
                addr: *addr,
            });
        }
    }
    let mut last = (String::new(), FailureClass::BrokeOff);
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) => last = (e.to_string(), FailureClass::of_io(&e)),
            Err(_) => last = ("timed out".into(), FailureClass::TimedOut),
        }
    }
    Err(UpstreamError::Connect {
        target: format!("{host}:{port}"),
        reason: last.0,
        class: last.1,
    })
}

/// True when a TLS connect failed because the server's certificate is not trusted (unknown
/// issuer, expired, wrong name, ...), which the operator fixes with `egress.extra_ca`.
fn is_untrusted_certificate(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        })
}

/// True when dialing `addr` would reach one of the proxy's own listeners. A wildcard listener
/// (`0.0.0.0`, `::`) is reachable on every local address: any non-public address on its port
/// counts as self.
fn is_self(addr: SocketAddr, own: &[SocketAddr]) -> bool {
    own.iter().any(|o| {
        o.port() == addr.port()
            && (o.ip() == addr.ip()
                || (o.ip().is_unspecified() && !ssrf::is_allowed(addr.ip(), &[])))
    })
}

/// Opens a CONNECT tunnel to `host:port` through the upstream proxy.
async fn tunnel(
    proxy_host: &str,
    proxy_port: u16,
    host: &str,
    port: u16,
) -> Result<TcpStream, UpstreamError> {
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    // The agent learns only that the upstream proxy failed, and whether it timed out.
    let connect_err = |reason: String, class: FailureClass| UpstreamError::Connect {
        target: format!("upstream proxy {proxy_host}:{proxy_port}"),
        reason,
        class,
    };
    let mut tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((proxy_host, proxy_port)),
    )
    .await
    .map_err(|_| connect_err("timed out".into(), FailureClass::ProxyUnreachable))?
    .map_err(|e| connect_err(e.to_string(), FailureClass::ProxyUnreachable))?;
    let handshake = async {
        let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        tcp.write_all(request.as_bytes()).await?;
        let mut reply = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        // Byte by byte so no TLS bytes after the header are consumed; the reply is tiny.
        while !reply.ends_with(b"\r\n\r\n") {
            if reply.len() >= MAX_PROXY_REPLY || tcp.read(&mut byte).await? == 0 {
                return Err(std::io::Error::other("reply ended early or is too large"));
            }
            reply.push(byte[0]);
        }
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(PROXY_HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| connect_err("CONNECT reply timed out".into(), FailureClass::TimedOut))?
        .map_err(|e| connect_err(e.to_string(), FailureClass::ProxyUnreachable))?;
    let text = String::from_utf8_lossy(&reply);
    let mut lines = text.lines();
    let status_line = lines.next().unwrap_or_default().to_owned();
    let ok = status_line
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code == "200");
    if !ok {
        let reason = lines.find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case(BLOCK_REASON_HEADER)
                .then(|| block_reason(value.as_bytes()))
        });
        let rate_limited = status_line.split_whitespace().nth(1) == Some("429");
        return Err(match reason {
            Some(reason) => UpstreamError::Blocked {
                target,
                reason,
                rate_limited,
            },
            None => UpstreamError::ProxyStatus {
                target,
                status: status_line,
            },
        });
    }
    Ok(tcp)
}

/// A block reason as the agent may read it: printable ASCII only, bounded.
pub(crate) fn block_reason(raw: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(raw)
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(MAX_BLOCK_REASON)
        .collect();
    match text.trim() {
        "" => "no reason given".to_owned(),
        reason => reason.to_owned(),
    }
}

/// One upstream connection, cleartext or TLS.
pub(crate) enum UpstreamConn {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for UpstreamConn {
    fn connected(&self) -> Connected {
        match self {
            UpstreamConn::Plain(_) => Connected::new(),
            UpstreamConn::Tls(tls) => {
                let h2 = tls.inner().get_ref().1.alpn_protocol() == Some(b"h2");
                match h2 {
                    true => Connected::new().negotiated_h2(),
                    false => Connected::new(),
                }
            }
        }
    }
}

impl hyper::rt::Read for UpstreamConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamConn::Plain(io) => Pin::new(io).poll_read(cx, buf),
            UpstreamConn::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for UpstreamConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamConn::Plain(io) => Pin::new(io).poll_write(cx, buf),
            UpstreamConn::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamConn::Plain(io) => Pin::new(io).poll_flush(cx),
            UpstreamConn::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamConn::Plain(io) => Pin::new(io).poll_shutdown(cx),
            UpstreamConn::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CONNECT proxy on loopback that answers every CONNECT with `reply`.
    async fn proxy_replying(reply: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(reply.as_bytes()).await;
            }
        });
        port
    }

    /// Pipelock's refusals carry their reason (printable, bounded) into `Blocked`, its rate
    /// limit stays one; a proxy's refusal without the header stays a plain proxy failure.
    #[tokio::test]
    async fn pipelock_refusals_keep_their_reason() {
        for (reply, want) in [
            (
                "HTTP/1.1 403 Forbidden\r\nX-Pipelock-Block-Reason: domain not in allowlist: a.test\r\nContent-Length: 0\r\n\r\n",
                "blocked domain not in allowlist: a.test false",
            ),
            (
                "HTTP/1.1 429 Too Many Requests\r\nx-pipelock-block-reason: rate limit\x1b[31m\r\n\r\n",
                "blocked rate limit?[31m true",
            ),
            (
                "HTTP/1.1 403 Forbidden\r\n\r\n",
                "status HTTP/1.1 403 Forbidden",
            ),
        ] {
            let port = proxy_replying(reply).await;
            let got = match tunnel("127.0.0.1", port, "a.test", 443).await {
                Err(UpstreamError::Blocked {
                    reason,
                    rate_limited,
                    ..
                }) => format!("blocked {reason} {rate_limited}"),
                Err(UpstreamError::ProxyStatus { status, .. }) => format!("status {status}"),
                other => panic!("{reply}: {:?}", other.err()),
            };
            assert_eq!(got, want);
        }
        assert_eq!(block_reason(b"   "), "no reason given");
        assert_eq!(
            block_reason("x".repeat(400).as_bytes()).len(),
            MAX_BLOCK_REASON
        );
    }
}
