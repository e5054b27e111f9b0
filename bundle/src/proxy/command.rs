//! `bottle-bundle proxy` and `bottle-bundle ca`: the command layer (files, signals, sockets).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use tokio_util::sync::CancellationToken;

use crate::proxy::{PoolSettings, Proxy, SHUTDOWN_GRACE, ca};

/// `bottle-bundle proxy`: run the egress proxy from a bundle config and a secrets file.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// The bundle config (JSON); its `proxy` block and `audit_log` are used.
    #[arg(long, default_value = bottle_contract::wire::BUNDLE_CONFIG_PATH)]
    pub config: PathBuf,
    /// The secrets file (JSON, `{"tokens": {...}}`). Token values are never taken from argv.
    #[arg(long, default_value = bottle_contract::wire::BUNDLE_SECRETS_PATH)]
    pub secrets: PathBuf,
    /// Idle upstream connections are closed after this many milliseconds (tests shorten it).
    #[arg(long, hide = true)]
    pub pool_idle_timeout_ms: Option<u64>,
    /// Most idle upstream connections kept per host (tests shrink it).
    #[arg(long, hide = true)]
    pub pool_max_idle_per_host: Option<usize>,
}

impl ProxyArgs {
    fn pool(&self) -> PoolSettings {
        let default = PoolSettings::default();
        PoolSettings {
            idle_timeout: self
                .pool_idle_timeout_ms
                .map_or(default.idle_timeout, Duration::from_millis),
            max_idle_per_host: self
                .pool_max_idle_per_host
                .unwrap_or(default.max_idle_per_host),
        }
    }
}

/// `bottle-bundle ca`: manage the per-bottle CA.
#[derive(Debug, clap::Args)]
pub struct CaArgs {
    #[command(subcommand)]
    pub command: CaCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Create a new CA (ECDSA P-256) for standalone use.
    Init {
        /// Where to write the CA certificate (PEM).
        #[arg(long, default_value = bottle_contract::wire::BUNDLE_CA_CERT_PATH)]
        cert: PathBuf,
        /// Where to write the CA private key (PEM, mode 0600).
        #[arg(long, default_value = bottle_contract::wire::BUNDLE_CA_KEY_PATH)]
        key: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "claude-bottle CA")]
        name: String,
    },
}

/// Runs `bottle-bundle ca`.
pub fn run_ca(args: CaArgs) -> anyhow::Result<()> {
    match args.command {
        CaCommand::Init { cert, key, name } => {
            ca::init_ca(&cert, &key, &name)?;
            println!("wrote {} and {}", cert.display(), key.display());
            Ok(())
        }
    }
}

/// Runs `bottle-bundle proxy` until SIGTERM or SIGINT.
pub fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        let hangup = crate::role::watch_signals(cancel.clone())?;
        serve_from_files(&args.config, &args.secrets, args.pool(), hangup, cancel).await
    })
}

/// Loads the files, binds the configured listeners, serves until `cancel`, reloads the routes
/// on SIGHUP, then drains. Prints `proxy listening on tcp <addr>` (and `unix <path>`) on stdout
/// once ready.
async fn serve_from_files(
    config_path: &Path,
    secrets_path: &Path,
    pool: PoolSettings,
    mut hangup: tokio::signal::unix::Signal,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let config = crate::config::load_config(config_path)?;
    let secrets = crate::config::load_secrets(secrets_path)?;
    let audit_log = Some(Path::new(&config.audit_log)).filter(|p| !p.as_os_str().is_empty());
    let proxy = Proxy::with_pool(&config.proxy, &secrets, audit_log, pool)
        .with_context(|| format!("{}: proxy config", config_path.display()))?;
    drop(secrets);

    // SIGHUP is watched since the caller's `watch_signals`: an early one reloads, not kills.
    let listeners = crate::role::bind(&config.proxy.listen, "proxy", "proxy")
        .await
        .with_context(|| config_path.display().to_string())?;
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listener) = listeners.tcp {
        let (proxy, cancel) = (proxy.clone(), cancel.clone());
        tasks.spawn(async move { proxy.serve_tcp(listener, cancel).await });
    }
    if let Some(listener) = listeners.unix {
        let (proxy, cancel) = (proxy.clone(), cancel.clone());
        tasks.spawn(async move { proxy.serve_unix(listener, cancel).await });
    }

    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = hangup.recv() => reload(&proxy, config_path, secrets_path),
        }
    }
    while tasks.join_next().await.is_some() {}
    if !proxy.drain(SHUTDOWN_GRACE).await {
        tracing::warn!("some connections were still open after the shutdown grace period");
    }
    Ok(())
}

/// Re-reads the routes and secrets; on any error keeps the current table and says why.
fn reload(proxy: &Proxy, config_path: &Path, secrets_path: &Path) {
    let result = crate::config::load_config(config_path)
        .map_err(anyhow::Error::from)
        .and_then(|config| {
            let secrets = crate::config::load_secrets(secrets_path)?;
            proxy.reload(&config.proxy.routes, &secrets)?;
            Ok(config.proxy.routes.len())
        });
    match result {
        Ok(count) => tracing::info!(routes = count, "routes reloaded"),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the current routes")
        }
    }
}
