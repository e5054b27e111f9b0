//! `bottle-bundle relay`: runs inside the agent container, which has no network but `lo`.
//!
//! It listens on 127.0.0.1 ports (9099 proxy, 9418 gate, 9100 supervise) and forwards each
//! connection to the matching bundle Unix socket in the shared socket volume. It is the agent's
//! only way to its bundle: if the relay dies or a socket is missing, the agent has no network at
//! all; nothing falls back to another path.
//!
//! The launcher starts it under a uid other than the agent's so the agent cannot kill or replace
//! it. Copies use large buffers (NOTES: 256 KiB buffers run at the bridge's speed, 8 KiB at a
//! third of it) and pass half-closes through, so `git` and HTTP/1.0-style clients work.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_util::sync::CancellationToken;

use bottle_contract::wire;

/// Bytes buffered per direction of each relayed connection.
pub const RELAY_BUFFER: usize = 256 * 1024;

/// One listening address and the bundle socket it forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub listen: SocketAddr,
    pub socket: PathBuf,
}

impl FromStr for Mapping {
    type Err = String;

    /// Parses `ADDR=SOCKET`, e.g. `127.0.0.1:9099=/run/bottle/sock/proxy.sock`.
    fn from_str(s: &str) -> Result<Mapping, String> {
        let (addr, socket) = s.split_once('=').ok_or_else(|| {
            format!("`{s}` is not ADDR=SOCKET (e.g. 127.0.0.1:9099=/run/bottle/sock/proxy.sock)")
        })?;
        let listen = addr
            .parse()
            .map_err(|e| format!("`{addr}` is not a socket address: {e}"))?;
        if socket.is_empty() {
            return Err(format!("`{s}` names no socket path after `=`"));
        }
        Ok(Mapping {
            listen,
            socket: PathBuf::from(socket),
        })
    }
}

/// `bottle-bundle relay` arguments.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// A forwarding, `ADDR=SOCKET`; repeat for several. Default: the three bundle roles on
    /// 127.0.0.1 (9099 proxy, 9418 gate, 9100 supervise) to the socket volume.
    #[arg(long = "map", value_name = "ADDR=SOCKET")]
    pub maps: Vec<Mapping>,
}

/// The default forwardings: every bundle role on its agent-facing port.
pub fn default_mappings() -> Vec<Mapping> {
    [
        (wire::PROXY_PORT, wire::PROXY_SOCKET),
        (wire::GATE_PORT, wire::GATE_SOCKET),
        (wire::SUPERVISE_PORT, wire::SUPERVISE_SOCKET),
    ]
    .into_iter()
    .map(|(port, socket)| Mapping {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        socket: PathBuf::from(socket),
    })
    .collect()
}

/// Runs the relay until SIGTERM or SIGINT. Prints one `listening <addr> <socket>` line per
/// mapping on stdout once bound, so a caller that asked for port 0 learns the port.
pub fn main(args: RelayArgs) -> anyhow::Result<()> {
    let maps = if args.maps.is_empty() {
        default_mappings()
    } else {
        args.maps
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();
        for map in maps {
            let listener = TcpListener::bind(map.listen)
                .await
                .with_context(|| format!("cannot listen on {}", map.listen))?;
            let bound = listener.local_addr()?;
            println!("listening {bound} {}", map.socket.display());
            tracing::info!(listen = %bound, socket = %map.socket.display(), "relay listening");
            tasks.push(tokio::spawn(serve(listener, map.socket, cancel.clone())));
        }
        wait_for_shutdown_signal().await?;
        tracing::info!("relay shutting down");
        cancel.cancel();
        for task in tasks {
            let _ = task.await;
        }
        anyhow::Ok(())
    })
}

async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Accepts on `listener` until `cancel`, relaying each connection to `socket`. Connections
/// already relayed finish on their own; new ones stop being accepted.
pub async fn serve(listener: TcpListener, socket: PathBuf, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let socket = socket.clone();
                tokio::spawn(async move {
                    if let Err(e) = relay_one(tcp, &socket).await {
                        tracing::debug!(%peer, socket = %socket.display(), error = %e, "relayed connection ended with an error");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "relay accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Relays one connection. If the bundle socket cannot be reached the TCP connection is simply
/// closed: the agent sees a reset or EOF, never another route.
async fn relay_one(mut tcp: TcpStream, socket: &std::path::Path) -> std::io::Result<()> {
    let mut unix = match UnixStream::connect(socket).await {
        Ok(unix) => unix,
        Err(e) => {
            tracing::warn!(socket = %socket.display(), error = %e, "bundle socket unreachable; closing the agent's connection");
            return Err(e);
        }
    };
    tcp.set_nodelay(true)?;
    tokio::io::copy_bidirectional_with_sizes(&mut tcp, &mut unix, RELAY_BUFFER, RELAY_BUFFER)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mappings() {
        let m: Mapping = "127.0.0.1:9099=/run/bottle/sock/proxy.sock"
            .parse()
            .unwrap();
        assert_eq!(m.listen, SocketAddr::from(([127, 0, 0, 1], 9099)));
        assert_eq!(m.socket, PathBuf::from("/run/bottle/sock/proxy.sock"));
    }

    #[test]
    fn rejects_bad_mappings_with_a_hint() {
        for (input, want) in [
            ("127.0.0.1:9099", "is not ADDR=SOCKET"),
            ("localhost:9099=/x", "is not a socket address"),
            ("127.0.0.1:9099=", "names no socket path"),
        ] {
            let err = input.parse::<Mapping>().unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn defaults_cover_every_role_on_loopback() {
        let maps = default_mappings();
        let ports: Vec<u16> = maps.iter().map(|m| m.listen.port()).collect();
        assert_eq!(ports, [9099, 9418, 9100]);
        assert!(maps.iter().all(|m| m.listen.ip().is_loopback()));
        assert!(maps.iter().all(|m| m.socket.starts_with(wire::SOCKET_DIR)));
    }
}
