//! The egress proxy role: an HTTP forward proxy with CONNECT and TLS interception that lets a
//! request leave only on a configured route, injects the route's credential on the wire, and
//! refuses git pushes.
//!
//! Layout, in reading order: [`listener`] accepts agent connections and speaks the proxy
//! protocol; [`mitm`] terminates TLS inside a tunnel with leaves from [`ca`]; [`forward`] runs
//! each request through [`policy`] (pure: routes, normalized paths, [`push_block`]), applies
//! [`inject`] and sends it through [`upstream`] (direct with [`ssrf`] checks, or chained);
//! [`audit`] records every outcome.

mod audit;
pub mod ca;
pub(crate) mod dlp;
mod forward;
mod gram_filter;
pub(crate) mod inject;
mod labels;
mod listener;
mod mitm;
pub mod policy;
mod push_block;
mod ssrf;
mod strict_lines;
mod upstream;
mod ws;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bottle_contract::bundle_config::{DlpMode, ProxyConfig, RouteConfig};
use bottle_contract::secrets::SecretsFile;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::audit::Audit;
use crate::proxy::ca::{CaError, CertAuthority};
use crate::proxy::policy::{Policy, PolicyError};
use crate::proxy::upstream::{Connector, Outbound, UpstreamError};

/// How long shutdown waits for in-flight requests before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long an idle upstream connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle upstream connections kept per host and pool. An agent rarely has more than a
/// handful of requests to one host in flight (h2 needs one connection), so 16 keeps its
/// usual concurrency on warm connections while a burst of agent connections leaves at most
/// 16 behind per host instead of one per connection of the burst.
const POOL_MAX_IDLE_PER_HOST: usize = 16;

/// How the upstream pools keep idle connections.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// An idle connection is closed after this long.
    pub idle_timeout: Duration,
    /// Idle connections beyond this many per host are closed when they go idle.
    pub max_idle_per_host: usize,
}

impl Default for PoolSettings {
    fn default() -> PoolSettings {
        PoolSettings {
            idle_timeout: POOL_IDLE_TIMEOUT,
            max_idle_per_host: POOL_MAX_IDLE_PER_HOST,
        }
    }
}

/// Why the proxy could not start.
///
/// Here and in the errors it wraps, a cause that the message already shows is not also marked
/// as the error's `source`: anyhow's `{:#}` prints every source after the message, so the
/// cause would be printed twice.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("proxy.outbound: {0}")]
    Outbound(UpstreamError),
    #[error("cannot open the audit log {path}: {error}")]
    Audit {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// State shared by every connection.
pub(crate) struct Shared {
    /// The route table; swapped whole on reload, so a request sees one table start to end.
    pub(crate) policy: ArcSwap<Policy>,
    pub(crate) ca: CertAuthority,
    /// Pooled upstream client offering h2 and HTTP/1.1 (ALPN), for agents speaking h2.
    pub(crate) client: Client<Connector, dlp::GuardedBody>,
    /// Pooled HTTP/1.1-only client, for HTTP/1.1 agents and upgrades (WebSocket).
    pub(crate) client_h1: Client<Connector, dlp::GuardedBody>,
    /// The TCP addresses this proxy listens on (the connector refuses to dial them).
    pub(crate) own_addrs: upstream::OwnAddrs,
    pub(crate) audit: Arc<Audit>,
    /// Every connection and tunnel task, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// `egress.dlp`, fixed for the proxy's life.
    pub(crate) dlp: DlpMode,
    /// Chained through an intercepting proxy (pipelock): answers are asked for uncompressed
    /// (it refuses compressed ones), and its refusals become the proxy's own.
    pub(crate) intercepted: bool,
}

/// A ready-to-serve proxy. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// Builds the proxy from its config block, the secrets file and an optional audit log path.
    pub fn new(
        config: &ProxyConfig,
        secrets: &SecretsFile,
        audit_log: Option<&Path>,
    ) -> Result<Proxy, ProxyError> {
        Proxy::with_pool(config, secrets, audit_log, PoolSettings::default())
    }

    /// [`Proxy::new`] with explicit upstream pool settings.
    pub fn with_pool(
        config: &ProxyConfig,
        secrets: &SecretsFile,
        audit_log: Option<&Path>,
        pool: PoolSettings,
    ) -> Result<Proxy, ProxyError> {
        let policy = Policy::from_config(&config.routes, secrets)?;
        if config.dlp != DlpMode::Off {
            labels::prepare();
        }
        let ca = CertAuthority::load(Path::new(&config.ca_cert), Path::new(&config.ca_key))?;
        let (outbound, extra_ca) =
            Outbound::from_config(&config.outbound).map_err(ProxyError::Outbound)?;
        let intercepted = outbound.intercepted();
        let tls = upstream::client_tls(extra_ca.as_deref().map(Path::new), !intercepted)
            .map_err(ProxyError::Outbound)?;
        let own_addrs = upstream::OwnAddrs::default();
        let mut tls_h1 = (*tls).clone();
        tls_h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = pooled_client(
            Connector::new(outbound.clone(), tls, own_addrs.clone()),
            pool,
        );
        let client_h1 = pooled_client(
            Connector::new(outbound, Arc::new(tls_h1), own_addrs.clone()),
            pool,
        );
        let audit = Audit::open(audit_log).map_err(|error| ProxyError::Audit {
            path: audit_log.map(Path::to_owned).unwrap_or_default(),
            error,
        })?;
        Ok(Proxy {
            shared: Arc::new(Shared {
                policy: ArcSwap::from_pointee(policy),
                ca,
                client,
                client_h1,
                own_addrs,
                audit: Arc::new(audit),
                tracker: TaskTracker::new(),
                dlp: config.dlp,
                intercepted,
            }),
        })
    }

    /// Replaces the route table. Requests already decided keep the table they started with.
    pub fn reload(&self, routes: &[RouteConfig], secrets: &SecretsFile) -> Result<(), PolicyError> {
        let policy = Policy::from_config(routes, secrets)?;
        self.shared.policy.store(Arc::new(policy));
        Ok(())
    }

    /// Serves agents on a bound TCP listener until `cancel` fires.
    pub async fn serve_tcp(&self, listener: TcpListener, cancel: CancellationToken) {
        if let Ok(addr) = listener.local_addr() {
            let mut own = self
                .shared
                .own_addrs
                .write()
                .unwrap_or_else(|e| e.into_inner());
            own.push(addr);
        }
        listener::serve_tcp(self.shared.clone(), listener, cancel).await;
    }

    /// Serves agents on a bound Unix socket until `cancel` fires.
    pub async fn serve_unix(&self, listener: UnixListener, cancel: CancellationToken) {
        listener::serve_unix(self.shared.clone(), listener, cancel).await;
    }

    /// After `cancel`: waits (at most `grace`) for open connections to finish their requests.
    /// Returns false when some were still busy.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.shared.tracker.close();
        tokio::time::timeout(grace, self.shared.tracker.wait())
            .await
            .is_ok()
    }
}

/// A pooled upstream client. The timer is what makes the idle timeout work: without one,
/// hyper-util's pool only drops an expired connection when that host is asked for again, so
/// after a burst the idle connections stay open for good.
fn pooled_client(connector: Connector, pool: PoolSettings) -> Client<Connector, dlp::GuardedBody> {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(pool.max_idle_per_host)
        .build(connector)
}

mod command;
pub use command::{CaArgs, ProxyArgs, run_ca, run_proxy};

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_contract::route::{AuthScheme, RouteAuth};

    /// The error as `bottle-bundle proxy` prints it: anyhow's chain after the caller's context.
    fn printed(error: impl Into<anyhow::Error>) -> String {
        format!("{:#}", error.into().context("config.json: proxy config"))
    }

    #[test]
    fn a_start_error_shows_its_cause_once() {
        let mut secrets = SecretsFile::default();
        secrets.tokens.insert(
            "S".into(),
            bottle_contract::secret::Secret::new("no-colon".into()),
        );
        let route = RouteConfig {
            host: "a.test".parse().unwrap(),
            port: None,
            path_allowlist: vec![],
            auth: Some(RouteAuth {
                scheme: AuthScheme::Basic,
                token_ref: "S".parse().unwrap(),
            }),
        };
        let Err(policy) = Policy::from_config(&[route], &secrets) else {
            panic!("a Basic secret without `:` was accepted");
        };
        expect_test::expect![[r#"config.json: proxy config: route 0 (a.test): slot "S": a Basic credential must be `user:password`"#]]
            .assert_eq(&printed(ProxyError::from(policy)));

        let missing = Path::new("/nonexistent/ca.pem");
        let Err(ca) = CertAuthority::load(missing, missing) else {
            panic!("a missing CA loaded");
        };
        expect_test::expect!["config.json: proxy config: cannot read /nonexistent/ca.pem: No such file or directory (os error 2)"]
            .assert_eq(&printed(ProxyError::from(ca)));

        let Err(load) = crate::config::load_config(missing) else {
            panic!("a missing config loaded");
        };
        expect_test::expect!["config.json: proxy config: cannot read /nonexistent/ca.pem: No such file or directory (os error 2)"]
            .assert_eq(&printed(load));
    }
}
