//! `bottle-bundle mcp`: the supervise MCP server, where a stuck agent asks the operator for a
//! host, an image change or a pipelock change.
//!
//! rmcp's streamable HTTP service is mounted under axum at `/mcp` and served on the config's
//! `supervise.listen.tcp` (`0.0.0.0:9100`) and `supervise.listen.unix` (the socket volume, for
//! the relay). rmcp's default config serves both protocol revisions: the session revision
//! (`initialize` + `Mcp-Session-Id`) and the stateless 2026-07-28 one (each POST stands alone).
//!
//! Layout: [`tools`] is the rmcp server (tool schemas, descriptions, handlers); [`validate`]
//! checks inputs (with [`dockerfile`], a small Dockerfile parser); [`queue`] writes proposals
//! and reads decisions. The agent can never approve: the bundle only reads `decisions/`,
//! which the launcher mounts read-only and only the host writes.

pub mod dockerfile;
pub mod queue;
pub mod tools;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use self::queue::Queue;
use self::tools::{State, Supervise};

/// `Host` header names the server answers to (any port): what the agent's `/etc/hosts` maps
/// (`supervise`, `bundle`) and loopback. Others get 403 (DNS-rebinding protection).
pub const ALLOWED_HOSTS: [&str; 5] = ["supervise", "bundle", "localhost", "127.0.0.1", "::1"];

/// The path the MCP endpoint is mounted at.
pub const MCP_PATH: &str = "/mcp";

/// `bottle-bundle mcp`: serve the supervise MCP server.
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// The bundle config (JSON); its `supervise` section and `identity` are used, and its
    /// routes are read again on each call that lists or checks them.
    #[arg(long, default_value = bottle_contract::wire::BUNDLE_CONFIG_PATH)]
    pub config: PathBuf,
}

/// Runs `bottle-bundle mcp` until SIGTERM or SIGINT. SIGHUP is harmless: nothing is cached
/// that a reload would change.
pub fn run_mcp(args: McpArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        // Watched before the listeners are announced: an early SIGHUP must not kill us.
        let mut hangup = crate::role::watch_signals(cancel.clone())?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: nothing to reload (routes are read on each call)");
            }
        });
        serve(&args.config, cancel).await
    })
}

/// Loads the config, binds the listeners, prints `mcp listening on tcp <addr>` (and
/// `unix <path>`) on stdout once ready, and serves until `cancel`.
pub async fn serve(config_path: &Path, cancel: CancellationToken) -> anyhow::Result<()> {
    let config = crate::config::load_config(config_path)?;
    let supervise = config.supervise.as_ref().with_context(|| {
        format!(
            "{}: `supervise` is not set; the mcp role needs supervise.listen and supervise.queue_dir",
            config_path.display()
        )
    })?;
    let config_path = std::path::absolute(config_path)
        .with_context(|| format!("cannot resolve {}", config_path.display()))?;
    let state = Arc::new(State::new(
        config_path.clone(),
        config.identity.clone(),
        Queue::new(&supervise.queue_dir),
    ));
    let router = router(state, cancel.child_token());

    let listeners = crate::role::bind(&supervise.listen, "supervise", "mcp")
        .await
        .with_context(|| config_path.display().to_string())?;
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listener) = listeners.tcp {
        let (router, cancel) = (router.clone(), cancel.clone());
        tasks.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
        });
    }
    if let Some(listener) = listeners.unix {
        let (router, cancel) = (router.clone(), cancel.clone());
        tasks.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
        });
    }
    tracing::info!(
        identity = %config.identity,
        queue = %supervise.queue_dir,
        "supervise MCP server ready"
    );
    while let Some(result) = tasks.join_next().await {
        result
            .context("a listener task failed")?
            .context("serving MCP")?;
    }
    Ok(())
}

/// The only `Origin`s a request may carry (the 2026-07-28 revision says servers MUST validate
/// it, against DNS rebinding from a browser; rmcp leaves it off by default): the bundle's own
/// names on the port the agent reaches it on. A request without `Origin` (Claude Code and
/// other non-browser clients send none) is served; any other `Origin` gets 403.
pub fn allowed_origins() -> Vec<String> {
    ALLOWED_HOSTS
        .iter()
        .map(|host| match host.contains(':') {
            true => format!("http://[{host}]:{}", bottle_contract::wire::SUPERVISE_PORT),
            false => format!("http://{host}:{}", bottle_contract::wire::SUPERVISE_PORT),
        })
        .collect()
}

/// The axum app: rmcp's streamable HTTP service at [`MCP_PATH`].
pub fn router(state: Arc<State>, cancel: CancellationToken) -> axum::Router {
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(ALLOWED_HOSTS)
        .with_allowed_origins(allowed_origins())
        .with_cancellation_token(cancel);
    let service: StreamableHttpService<Supervise, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(Supervise::new(state.clone())),
        Arc::default(),
        config,
    );
    axum::Router::new().nest_service(MCP_PATH, service)
}
