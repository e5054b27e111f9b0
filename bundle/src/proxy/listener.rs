//! The agent-facing listener: accepts connections (TCP or Unix socket) and serves the proxy
//! protocol on them: `CONNECT` tunnels, absolute-form `http://` requests, and the
//! `http://egress.local/routes` introspection page.

use std::sync::Arc;
use std::time::Duration;

use bottle_contract::bundle_config::DlpMode;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::proxy::Shared;
use crate::proxy::audit::{AuditEvent, ProxyBody, full};
use crate::proxy::forward::{self, Target, text_response};
use crate::proxy::policy::{DenyReason, is_ip_literal};
use crate::proxy::strict_lines::StrictLines;
use crate::proxy::{labels, mitm};

/// Longest an agent may take to send a request's headers (also how long an idle keep-alive
/// connection is kept). Bodies and established streams have no timeout.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the proxy on a bound TCP listener until `cancel` fires.
pub(crate) async fn serve_tcp(
    shared: Arc<Shared>,
    listener: TcpListener,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    spawn_conn(&shared, stream, &cancel);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves the proxy on a bound Unix socket listener until `cancel` fires.
pub(crate) async fn serve_unix(
    shared: Arc<Shared>,
    listener: UnixListener,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => spawn_conn(&shared, stream, &cancel),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

fn spawn_conn<S>(shared: &Arc<Shared>, stream: S, cancel: &CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = shared.clone();
    let cancel = cancel.clone();
    let tracker = shared.tracker.clone();
    tracker.spawn(async move {
        let svc_shared = shared.clone();
        let svc_cancel = cancel.clone();
        let service = service_fn(move |req| outer(svc_shared.clone(), req, svc_cancel.clone()));
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(StrictLines::new(stream)), service)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "agent connection ended with an error");
                }
            }
            () = cancel.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    });
}

/// The proxy protocol on the agent's connection.
async fn outer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    cancel: CancellationToken,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    if req.method() == Method::CONNECT {
        return Ok(connect(shared, req, cancel));
    }
    let uri = req.uri();
    match (uri.scheme_str(), uri.host()) {
        (Some("http"), Some(host)) => {
            let host = normalize_host(host);
            if host == bottle_contract::wire::INTROSPECTION_HOST {
                return Ok(introspect(&shared, &req));
            }
            let port = uri.port_u16().unwrap_or(80);
            forward::handle(shared, req, Target { host, port, tls: false }).await
        }
        (Some(_), Some(_)) => Ok(text_response(
            StatusCode::BAD_REQUEST,
            "claude-bottle egress proxy: send https:// requests through CONNECT (set HTTPS_PROXY)\n"
                .into(),
        )),
        _ => Ok(text_response(
            StatusCode::BAD_REQUEST,
            "claude-bottle egress proxy: this is an HTTP proxy; set HTTP_PROXY/HTTPS_PROXY to use it \
             (routes: http://egress.local/routes)\n"
                .into(),
        )),
    }
}

fn connect(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    cancel: CancellationToken,
) -> Response<ProxyBody> {
    let Some((host, port)) = req
        .uri()
        .authority()
        .and_then(|a| a.port_u16().map(|p| (normalize_host(a.host()), p)))
    else {
        return text_response(
            StatusCode::BAD_REQUEST,
            "claude-bottle egress proxy: CONNECT needs host:port\n".into(),
        );
    };
    let target = Target {
        host,
        port,
        tls: true,
    };
    if let Some(reason) = connect_refusal(&shared, &target) {
        return refuse_connect(&shared, reason, &target);
    }
    // A host name carrying a bottle secret, or a wildcard-chosen label shaped like a
    // credential, is refused before any lookup or connection.
    if shared.dlp != DlpMode::Off {
        let policy = shared.policy.load();
        if let Some(hit) = policy.secrets.find_in_host(&target.host) {
            let mut event = AuditEvent::new(
                Method::CONNECT.to_string(),
                target.host.clone(),
                target.port,
                String::new(),
            );
            event.secret = Some(format!("{} ({}, in the host name)", hit.name, hit.encoding));
            if shared.dlp == DlpMode::Block {
                return forward::secret_denial(&shared, event, &hit, "host name", &target);
            }
        }
        if let Some(suspicion) =
            labels::suspicious_host(&policy, &target.host, target.port, target.tls)
        {
            let mut event = AuditEvent::new(
                Method::CONNECT.to_string(),
                labels::masked(&target.host),
                target.port,
                String::new(),
            );
            event.secret = Some(format!("credential-shaped host label: {}", suspicion.why));
            if shared.dlp == DlpMode::Block {
                return forward::label_denial(&shared, event, &suspicion);
            }
            tracing::warn!(why = %suspicion.why, "a host label looks like a credential (dlp: log)");
        }
    }
    let tracker = shared.tracker.clone();
    tracker.spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => mitm::intercept(shared, upgraded, target, cancel).await,
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(full(""))
}

/// What can be refused before the tunnel opens, while the agent can still read a plain answer
/// (inside the tunnel a refusal comes only after a TLS handshake, which fails for an IP
/// address: the agent would see a certificate error, not the reason). A routed host name
/// gets its tunnel and is judged per request there.
fn connect_refusal(shared: &Shared, target: &Target) -> Option<DenyReason> {
    if is_ip_literal(&target.host) {
        return Some(DenyReason::IpLiteral);
    }
    if !shared.policy.load().routes_port(target.port, target.tls) {
        return Some(DenyReason::PortNotRouted);
    }
    None
}

/// Answers the CONNECT itself with a 403 naming why, and records it.
fn refuse_connect(shared: &Shared, reason: DenyReason, target: &Target) -> Response<ProxyBody> {
    let event = AuditEvent::new(
        Method::CONNECT.to_string(),
        target.host.clone(),
        target.port,
        String::new(),
    );
    forward::deny(shared, event, reason, target)
}

/// Lower case, no trailing dot, no IPv6 brackets.
fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// `GET http://egress.local/routes`: hosts, paths and auth scheme names; never a value.
fn introspect(shared: &Shared, req: &Request<Incoming>) -> Response<ProxyBody> {
    if req.uri().path() != "/routes" {
        return text_response(
            StatusCode::NOT_FOUND,
            "claude-bottle egress proxy: try http://egress.local/routes\n".into(),
        );
    }
    let policy = shared.policy.load();
    let body = serde_json::to_string(&policy.table).unwrap_or_default();
    let mut response = Response::new(full(body + "\n"));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
