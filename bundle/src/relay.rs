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
//!
//! Two processes: the one started binds the ports and keeps them for its whole life, and runs
//! the relaying itself in a child it passes the listeners to (`--inherited`, the `LISTEN_FDS`
//! protocol), restarting that child whenever it dies. So a relay that crashes or is killed
//! comes back, and its ports are never free for the agent to bind and answer in the bundle's
//! place. The child holds at most [`MAX_RELAYED`] connections at once (further ones wait in
//! the listen backlog), and its buffers are allocated so they go back to the system when a
//! connection ends (`MALLOC_MMAP_THRESHOLD_`): a burst does not leave the relay large.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::str::FromStr;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use bottle_contract::wire;

mod splice;
pub use splice::SPLICE_ENV;

/// Bytes buffered per direction of each relayed connection.
pub const RELAY_BUFFER: usize = 256 * 1024;
/// The send buffer asked for each connection's Unix socket (`SO_SNDBUF`: the kernel caps it
/// at `net.core.wmem_max`, 208 KiB unless raised, and doubles it). A Unix socket's writer
/// waits until a quarter of its send buffer is left queued; with the default (208 KiB) the
/// relay, spliced or copied, took 1.8x the time of a direct loopback copy for 1 GiB, with
/// 2 MiB about the same time (issue 21). It is also what one connection can leave queued
/// for a bundle that does not read, as TCP's autotuned buffers (up to `tcp_wmem`'s 4 MiB)
/// can on loopback.
pub const UNIX_SEND_BUFFER: usize = 2 * 1024 * 1024;
/// Connections relayed at once (each holds two [`RELAY_BUFFER`]s: at most 128 MiB in all).
/// An agent's tools open a few dozen at most; a burst beyond waits in the listen backlog.
pub const MAX_RELAYED: usize = 256;
/// Allocations at least this large are mmapped and unmapped when freed, so the relay's
/// buffers go back to the system after a burst (glibc otherwise raises the threshold after
/// the first free and keeps later buffers in its heap).
const MMAP_THRESHOLD: &str = "131072";
/// The first restart delay of a dead relay child; doubles up to [`MAX_RESTART_DELAY`], and
/// starts over once a child has run for [`HEALTHY_AFTER`].
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(50);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(2);
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How long the child gets between SIGTERM and SIGKILL when the relay stops.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The supervising relay's pid, for the child to check it was not orphaned before it could
/// ask for the parent-death signal.
const PARENT_ENV: &str = "BOTTLE_RELAY_PARENT";
/// The first inherited descriptor (`LISTEN_FDS` protocol).
const FIRST_FD: i32 = 3;

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
    /// Internal: serve the listeners the supervising relay passed (`LISTEN_FDS`), one per
    /// mapping, in order.
    #[arg(long, hide = true)]
    pub inherited: bool,
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
    if args.inherited {
        return serve_inherited(maps);
    }
    keep_relaying(maps)
}

/// Binds every mapping, then keeps a relaying child running on those listeners until a stop
/// signal, which it passes on.
///
/// Not `init::run_children`: that one owns PID 1 of the bundle (reaping every orphan, `waitpid(-1)`)
/// and gives up after repeated crashes so a broken bundle stops its container; the relay is not
/// PID 1, must hand its child the listeners, and never gives up (without it the agent has no
/// way to its bundle at all).
fn keep_relaying(maps: Vec<Mapping>) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for map in &maps {
        let listener = std::net::TcpListener::bind(map.listen)
            .with_context(|| format!("cannot listen on {}", map.listen))?;
        let addr = listener.local_addr()?;
        println!("listening {addr} {}", map.socket.display());
        tracing::info!(listen = %addr, socket = %map.socket.display(), "relay listening");
        bound.push(Mapping {
            listen: addr,
            socket: map.socket.clone(),
        });
        listeners.push(listener);
    }
    std::io::stdout().flush()?;
    let exe = std::env::current_exe().context("cannot find the bottle-bundle binary")?;
    let (events, next) = mpsc::channel();
    let stops = events.clone();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("cannot watch SIGTERM and SIGINT")?;
    std::thread::spawn(move || {
        for _ in signals.forever() {
            let _ = stops.send(Event::Stop);
        }
    });
    let mut delay = FIRST_RESTART_DELAY;
    loop {
        let started = Instant::now();
        let child = spawn_child(&exe, &bound, &listeners)?;
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        watch(child, events.clone());
        match next.recv() {
            Ok(Event::Exited(status)) => {
                if started.elapsed() >= HEALTHY_AFTER {
                    delay = FIRST_RESTART_DELAY;
                }
                tracing::warn!(%status, restart_in = ?delay, "the relaying child ended; restarting it");
                match next.recv_timeout(delay) {
                    Ok(Event::Stop) => return Ok(()),
                    Ok(Event::Exited(_)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
                }
                delay = (delay * 2).min(MAX_RESTART_DELAY);
            }
            Ok(Event::Stop) | Err(_) => {
                tracing::info!("relay shutting down");
                let _ = kill(pid, Signal::SIGTERM);
                if next.recv_timeout(STOP_GRACE).is_err() {
                    let _ = kill(pid, Signal::SIGKILL);
                }
                return Ok(());
            }
        }
    }
}

enum Event {
    Exited(ExitStatus),
    Stop,
}

/// Waits for `child` on its own thread and reports its end.
fn watch(mut child: Child, events: mpsc::Sender<Event>) {
    std::thread::spawn(move || {
        if let Ok(status) = child.wait() {
            let _ = events.send(Event::Exited(status));
        }
    });
}

/// Starts `bottle-bundle relay --inherited` with `listeners` at descriptors 3, 4, ...
fn spawn_child(
    exe: &std::path::Path,
    maps: &[Mapping],
    listeners: &[std::net::TcpListener],
) -> anyhow::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.args(["relay", "--inherited"]);
    for map in maps {
        cmd.arg("--map")
            .arg(format!("{}={}", map.listen, map.socket.display()));
    }
    let mut fds = Vec::new();
    for (i, listener) in listeners.iter().enumerate() {
        fds.push(FdMapping {
            parent_fd: OwnedFd::from(listener.try_clone()?),
            child_fd: FIRST_FD + i32::try_from(i)?,
        });
    }
    cmd.fd_mappings(fds)
        .map_err(|_| anyhow::anyhow!("two listeners for one descriptor"))?;
    cmd.env("LISTEN_FDS", listeners.len().to_string())
        .env_remove("LISTEN_PID")
        .env("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD)
        .env(PARENT_ENV, std::process::id().to_string());
    cmd.spawn().context("cannot start the relaying child")
}

/// The child: relays on the inherited listeners until SIGTERM or SIGINT, or until the
/// supervising relay is gone (it then gets SIGTERM, so a killed supervisor leaves nothing).
fn serve_inherited(maps: Vec<Mapping>) -> anyhow::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
        .context("cannot set the parent-death signal")?;
    // A parent killed before the line above never sends the signal: it is already gone when
    // the process that started us is no longer our parent.
    let parent = std::env::var(PARENT_ENV).ok();
    if parent.is_some_and(|p| p != nix::unistd::getppid().to_string()) {
        anyhow::bail!("the supervising relay exited before this child started; exiting too");
    }
    let mut fds = listenfd::ListenFd::from_env();
    anyhow::ensure!(
        fds.len() == maps.len(),
        "{} inherited listeners for {} mappings",
        fds.len(),
        maps.len()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        let limit = Arc::new(Semaphore::new(MAX_RELAYED));
        let mut tasks = Vec::new();
        for (i, map) in maps.into_iter().enumerate() {
            let listener = fds
                .take_tcp_listener(i)?
                .with_context(|| format!("no inherited listener for {}", map.listen))?;
            listener.set_nonblocking(true)?;
            let listener = TcpListener::from_std(listener)?;
            tasks.push(tokio::spawn(serve(
                listener,
                map.socket,
                cancel.clone(),
                limit.clone(),
            )));
        }
        wait_for_shutdown_signal().await?;
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

/// Accepts on `listener` until `cancel`, relaying each connection to `socket`, at most
/// `limit`'s permits at once. Connections already relayed finish on their own; new ones stop
/// being accepted.
pub async fn serve(
    listener: TcpListener,
    socket: PathBuf,
    cancel: CancellationToken,
    limit: Arc<Semaphore>,
) {
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let socket = socket.clone();
                tokio::spawn(async move {
                    let _permit = permit;
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
    if let Err(e) = rustix::net::sockopt::set_socket_send_buffer_size(&unix, UNIX_SEND_BUFFER) {
        tracing::debug!(error = %e, "cannot raise the bundle socket's send buffer");
    }
    splice::both_ways(&mut tcp, &mut unix).await
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
