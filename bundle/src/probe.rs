//! `bottle-bundle probe`: run inside the bundle container, asks each role on its own Unix
//! socket whether it answers. The launcher's health check (`start`, `list`, the approval's
//! "is the route live" check) goes through here, not through the agent's loopback: if the
//! relay died, the agent could bind its ports and answer in the bundle's place.
//!
//! The proxy is asked `GET http://egress.local/routes` (its introspection page; `--routes`
//! prints the body); the gate and the supervise server are healthy when their socket accepts
//! a connection (a role that crash-loops has none listening).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use tokio::net::UnixStream;

use bottle_contract::bundle_config::{BundleConfig, Listen, Role};
use bottle_contract::wire;

/// How long each role may take to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The route table is small; a bound on what is read.
const MAX_BODY: usize = 1 << 20;

/// `bottle-bundle probe` arguments.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// The bundle config naming the roles and their sockets.
    #[arg(long, default_value = wire::BUNDLE_CONFIG_PATH)]
    pub config: PathBuf,
    /// Print the proxy's route table (JSON) instead of one line per role.
    #[arg(long)]
    pub routes: bool,
}

/// One role's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleHealth {
    /// `proxy`, `gate` or `supervise`.
    pub role: &'static str,
    /// `None` when it answers; else why not.
    pub problem: Option<String>,
}

/// Prints `role ok` or `role down: why` per configured role (or the route table with
/// `--routes`); fails when any role is down.
pub fn main(args: ProbeArgs) -> anyhow::Result<()> {
    let config = crate::config::load_config(&args.config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        if args.routes {
            let socket = unix_path(&config.proxy.listen, "proxy")?;
            let body = routes(&socket).await?;
            println!("{body}");
            return Ok(());
        }
        let health = check(&config).await;
        let mut down = Vec::new();
        for h in &health {
            match &h.problem {
                None => println!("{} ok", h.role),
                Some(why) => {
                    println!("{} down: {why}", h.role);
                    down.push(h.role);
                }
            }
        }
        anyhow::ensure!(down.is_empty(), "not answering: {}", down.join(", "));
        Ok(())
    })
}

/// Every configured role's health, in config order.
pub async fn check(config: &BundleConfig) -> Vec<RoleHealth> {
    let mut out = Vec::new();
    for role in &config.roles {
        let (name, listen) = match role {
            Role::Proxy => ("proxy", Some(&config.proxy.listen)),
            Role::Gate => ("gate", Some(&config.gate.listen)),
            Role::Mcp => ("supervise", config.supervise.as_ref().map(|s| &s.listen)),
        };
        let problem = match listen.map(|l| unix_path(l, name)) {
            None => Some("configured without a listener".to_owned()),
            Some(Err(e)) => Some(format!("{e:#}")),
            Some(Ok(socket)) => match role {
                Role::Proxy => routes(&socket).await.err().map(|e| format!("{e:#}")),
                _ => accepts(&socket).await.err().map(|e| format!("{e:#}")),
            },
        };
        out.push(RoleHealth {
            role: name,
            problem,
        });
    }
    out
}

fn unix_path(listen: &Listen, role: &str) -> anyhow::Result<PathBuf> {
    listen
        .unix
        .as_deref()
        .map(PathBuf::from)
        .with_context(|| format!("the {role} role has no Unix socket in the config"))
}

async fn connect(socket: &Path) -> anyhow::Result<UnixStream> {
    tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(socket))
        .await
        .with_context(|| {
            format!(
                "{} did not accept within {PROBE_TIMEOUT:?}",
                socket.display()
            )
        })?
        .with_context(|| format!("cannot connect to {}", socket.display()))
}

async fn accepts(socket: &Path) -> anyhow::Result<()> {
    connect(socket).await.map(drop)
}

/// The proxy's route table, over its socket.
pub async fn routes(socket: &Path) -> anyhow::Result<String> {
    let stream = connect(socket).await?;
    let ask = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let request = hyper::Request::get(format!("http://{}/routes", wire::INTROSPECTION_HOST))
            .header(hyper::header::HOST, wire::INTROSPECTION_HOST)
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the route table: {e}"))?
            .to_bytes();
        anyhow::ensure!(
            status == hyper::StatusCode::OK,
            "the proxy answered {status}"
        );
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(PROBE_TIMEOUT, ask)
        .await
        .with_context(|| format!("the proxy did not answer within {PROBE_TIMEOUT:?}"))?
}
