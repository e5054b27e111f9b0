//! Inside a CONNECT tunnel: terminate the agent's TLS with a leaf minted for the target, then
//! serve HTTP/1.1 or h2 (by ALPN) and pass each request to [`crate::proxy::forward`].

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;

use crate::proxy::Shared;
use crate::proxy::audit::AuditEvent;
use crate::proxy::forward::{self, Target};
use crate::proxy::listener::HEADER_READ_TIMEOUT;
use crate::proxy::strict_lines::StrictLines;

/// Longest the agent may take to send its TLS ClientHello and finish the handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one intercepted tunnel until the agent closes it or the proxy shuts down.
pub(crate) async fn intercept(
    shared: Arc<Shared>,
    upgraded: Upgraded,
    target: Target,
    cancel: CancellationToken,
) {
    let started = std::time::Instant::now();
    let acceptor =
        LazyConfigAcceptor::new(rustls::server::Acceptor::default(), TokioIo::new(upgraded));
    let handshake = async {
        let start = acceptor.await.map_err(|e| e.to_string())?;
        if let Some(sni) = start.client_hello().server_name() {
            let sni = sni.trim_end_matches('.').to_ascii_lowercase();
            if sni != target.host {
                return Err(format!("SNI {sni:?} does not match the CONNECT target"));
            }
        }
        let config = shared
            .ca
            .server_config(&target.host)
            .map_err(|e| e.to_string())?;
        start.into_stream(config).await.map_err(|e| e.to_string())
    };
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(reason)) => {
            tracing::info!(host = %target.host, %reason, "TLS handshake with the agent failed");
            let mut event = AuditEvent::new(
                "CONNECT".into(),
                target.host.clone(),
                target.port,
                String::new(),
            );
            event.started = started;
            event.reason = Some(format!("tls: {reason}"));
            shared.audit.record(&event);
            return;
        }
        Err(_) => {
            tracing::info!(host = %target.host, "TLS handshake with the agent timed out");
            return;
        }
    };
    let service = service_fn(move |req| forward::handle(shared.clone(), req, target.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(StrictLines::new(tls)), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "tunnel connection ended with an error");
            }
        }
        () = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
