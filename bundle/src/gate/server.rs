//! The agent-facing git:// listener (TCP and Unix socket).
//!
//! It reads the one request line of the git daemon protocol, refreshes the mirror for a fetch,
//! and hands the connection itself to `git upload-pack` or `git receive-pack` as stdin/stdout.
//! Refusals go back as a git `ERR` packet, which the client prints as `remote error: …`.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::gate::mirror::{self, RepoLocks};
use crate::gate::settings::{GateSettings, Remote};
use crate::gate::upstream::Transport;
use crate::gate::{gitenv, hook};

/// Longest a client may take to send its request line.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// `git upload-pack --timeout`: seconds of client inactivity before a fetch is dropped.
const UPLOAD_INACTIVITY_SECS: u32 = 120;
/// Longest a `receive-pack` session may hold the repository lock beyond the push time limit
/// (the pack upload itself).
const RECEIVE_TRANSFER_ALLOWANCE: Duration = Duration::from_secs(300);
/// After git exits, how long the gate drains what a client still sends before closing.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes drained after git exits.
const DRAIN_MAX_BYTES: u64 = 256 << 20;
/// Longest one write of a push's output to the client may block.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest pkt-line git sends (`LARGE_PACKET_MAX`).
const MAX_PKT_LEN: usize = 65520;

/// A bound listener the gate serves on.
pub(crate) enum GateListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Shared state of a running gate.
pub(crate) struct Gate {
    pub settings: GateSettings,
    /// This binary and the absolute bundle config path: handed to the hook, and git's SSH
    /// transport for the refresh.
    pub transport: Transport,
    pub locks: RepoLocks,
}

/// A parsed git daemon request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub service: Service,
    /// The repository name, without leading `/` or trailing `.git`.
    pub repo: String,
    /// Extra parameters (`version=2`), joined by `:` as `GIT_PROTOCOL` wants them.
    pub protocol: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    UploadPack,
    ReceivePack,
}

/// Parses the request packet's payload: `git-upload-pack /app.git\0host=h\0\0version=2\0`.
pub(crate) fn parse_request(payload: &[u8]) -> Result<Request, String> {
    let mut parts = payload.split(|b| *b == 0);
    let command = parts.next().unwrap_or_default();
    let command = std::str::from_utf8(command).map_err(|_| "request is not UTF-8".to_owned())?;
    let command = command.trim_end_matches('\n');
    let (service, path) = command
        .split_once(' ')
        .ok_or_else(|| "malformed request".to_owned())?;
    let service = match service {
        "git-upload-pack" => Service::UploadPack,
        "git-receive-pack" => Service::ReceivePack,
        other => return Err(format!("service {other:?} is not offered")),
    };
    let repo = path.trim_start_matches('/').trim_end_matches('/');
    let repo = repo.strip_suffix(".git").unwrap_or(repo).to_owned();
    // After the host parameter comes an empty field, then the extra parameters.
    let mut protocol = Vec::new();
    let mut seen_empty = false;
    for field in parts {
        if field.is_empty() {
            seen_empty = true;
            continue;
        }
        if seen_empty {
            let field = std::str::from_utf8(field).map_err(|_| "request is not UTF-8")?;
            if field.starts_with("version=") {
                protocol.push(field.to_owned());
            }
        }
    }
    Ok(Request {
        service,
        repo,
        protocol: protocol.join(":"),
    })
}

/// Serves every listener until `cancel` fires.
pub(crate) async fn serve(
    gate: Arc<Gate>,
    listeners: Vec<GateListener>,
    cancel: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        tasks.spawn(accept_loop(gate.clone(), listener, cancel.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop(gate: Arc<Gate>, listener: GateListener, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok(conn) => {
                tokio::spawn(handle(gate.clone(), conn, cancel.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept(listener: &GateListener) -> std::io::Result<Conn> {
    match listener {
        GateListener::Tcp(l) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
        GateListener::Unix(l) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
    }
}

impl Conn {
    async fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.read_exact(buf).await.map(drop),
            Conn::Unix(s) => s.read_exact(buf).await.map(drop),
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(buf).await,
            Conn::Unix(s) => s.write_all(buf).await,
        }
    }

    /// The connection as a blocking socket, for a child's stdio and for draining after it.
    fn into_std(self) -> std::io::Result<StdConn> {
        let conn = match self {
            Conn::Tcp(s) => StdConn::Tcp(s.into_std()?),
            Conn::Unix(s) => StdConn::Unix(s.into_std()?),
        };
        match &conn {
            StdConn::Tcp(s) => s.set_nonblocking(false)?,
            StdConn::Unix(s) => s.set_nonblocking(false)?,
        }
        Ok(conn)
    }
}

/// A connection handed to git. The gate keeps this handle so that, when git exits while the
/// client is still sending (a refused oversize pack), it can drain the rest before closing:
/// closing with unread data sends a TCP reset that would destroy git's error message.
enum StdConn {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl StdConn {
    fn fd(&self) -> std::io::Result<OwnedFd> {
        match self {
            StdConn::Tcp(s) => Ok(s.try_clone()?.into()),
            StdConn::Unix(s) => Ok(s.try_clone()?.into()),
        }
    }

    /// Bounds each write to the client: a client that stops reading cannot hold the gate's
    /// relay thread forever.
    fn set_write_timeout(&self, limit: Duration) -> std::io::Result<()> {
        match self {
            StdConn::Tcp(s) => s.set_write_timeout(Some(limit)),
            StdConn::Unix(s) => s.set_write_timeout(Some(limit)),
        }
    }

    /// Sends EOF, then reads and discards what the client still sends, within bounds.
    fn drain(self) {
        use std::io::Read;
        let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
        let mut stream: Box<dyn Read> = match self {
            StdConn::Tcp(s) => {
                let _ = s.shutdown(std::net::Shutdown::Write);
                let _ = s.set_read_timeout(Some(DRAIN_TIMEOUT));
                Box::new(s)
            }
            StdConn::Unix(s) => {
                let _ = s.shutdown(std::net::Shutdown::Write);
                let _ = s.set_read_timeout(Some(DRAIN_TIMEOUT));
                Box::new(s)
            }
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        while total < DRAIN_MAX_BYTES && std::time::Instant::now() < deadline {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
    }
}

async fn read_request(conn: &mut Conn) -> Result<Request, String> {
    let mut len = [0u8; 4];
    conn.read_exact(&mut len)
        .await
        .map_err(|e| format!("cannot read request: {e}"))?;
    let len = std::str::from_utf8(&len)
        .ok()
        .and_then(|s| usize::from_str_radix(s, 16).ok())
        .filter(|n| (5..=MAX_PKT_LEN).contains(n))
        .ok_or_else(|| "malformed request packet".to_owned())?;
    let mut payload = vec![0u8; len - 4];
    conn.read_exact(&mut payload)
        .await
        .map_err(|e| format!("cannot read request: {e}"))?;
    parse_request(&payload)
}

/// Sends a git `ERR` packet; the client shows `fatal: remote error: <message>`.
async fn refuse(mut conn: Conn, message: &str) {
    let line = format!("ERR {}\n", message.replace('\n', " "));
    let packet = format!("{:04x}{line}", line.len() + 4);
    let _ = conn.write_all(packet.as_bytes()).await;
}

async fn handle(gate: Arc<Gate>, mut conn: Conn, cancel: CancellationToken) {
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut conn)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "bad git request");
            return refuse(conn, &format!("bottle gate: {e}")).await;
        }
        Err(_) => return,
    };
    let Some(remote) = gate.settings.remote(&request.repo) else {
        tracing::info!(repo = %request.repo, "unknown repository");
        let names: Vec<&str> = gate
            .settings
            .remotes
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        let message = format!(
            "bottle gate: no repository {:?} here; served: {}",
            request.repo,
            names.join(", ")
        );
        return refuse(conn, &message).await;
    };
    tracing::info!(repo = %remote.name, service = ?request.service, "git request");
    let lock = gate.locks.of(remote);
    match request.service {
        Service::UploadPack => {
            let refreshed = {
                let _guard = lock.lock().await;
                mirror::refresh(
                    &gate.settings,
                    &gate.transport,
                    remote,
                    mirror::REFRESH_TIMEOUT,
                )
                .await
            };
            if let Err(failure) = refreshed {
                let message = format!(
                    "bottle gate: cannot refresh {} from its upstream: {}; refusing to serve possibly stale data",
                    remote.name,
                    failure.describe()
                );
                return refuse(conn, &message).await;
            }
            run_service(&gate, remote, &request, conn, &cancel).await;
        }
        Service::ReceivePack => {
            if !hook_installed(&mirror::hook_path(&gate.settings)) {
                tracing::error!("the pre-receive hook is missing; refusing pushes");
                return refuse(
                    conn,
                    "bottle gate: pushes are disabled: the gate's hook is not installed",
                )
                .await;
            }
            let _guard = lock.lock().await;
            run_service(&gate, remote, &request, conn, &cancel).await;
        }
    }
}

fn hook_installed(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

async fn run_service(
    gate: &Gate,
    remote: &Remote,
    request: &Request,
    conn: Conn,
    cancel: &CancellationToken,
) {
    let settings = &gate.settings;
    let mirror = settings.mirror_path(remote);
    let mut cmd = tokio::process::Command::from(gitenv::git(settings));
    cmd.kill_on_drop(true);
    if !request.protocol.is_empty() {
        cmd.env("GIT_PROTOCOL", &request.protocol);
    }
    match request.service {
        Service::UploadPack => {
            // Partial clone (`--filter=blob:none`): the filter, and the later fetches of single
            // blobs by id, which are reachable from the served refs (never unreachable ones).
            cmd.args(["-c", "uploadpack.allowFilter=true"])
                .args(["-c", "uploadpack.allowReachableSHA1InWant=true"])
                .args(["upload-pack", "--strict"])
                .arg(format!("--timeout={UPLOAD_INACTIVITY_SECS}"));
        }
        Service::ReceivePack => {
            cmd.env(hook::CONFIG_ENV, &gate.transport.config_path)
                .env(hook::REMOTE_ENV, &remote.name)
                // The hook's stderr is the agent's channel: its own logging stays off.
                .env("BOTTLE_LOG", "off")
                .arg("-c")
                .arg(format!("core.hooksPath={}", settings.hooks_dir().display()))
                .args(["-c", "receive.fsckObjects=true"])
                .arg("-c")
                .arg(format!(
                    "receive.maxInputSize={}",
                    settings.push_limit(remote)
                ))
                .args(["-c", "receive.advertisePushOptions=false"])
                .args(["-c", "receive.denyDeleteCurrent=true"])
                .arg("receive-pack");
        }
    }
    cmd.arg(&mirror);
    let handed = conn.into_std().and_then(|c| Ok((c.fd()?, c.fd()?, c)));
    let (fd, fd_out, conn) = match handed {
        Ok(fds) => fds,
        Err(e) => {
            tracing::warn!(error = %e, "cannot hand the connection to git");
            return;
        }
    };
    // A fetch writes straight to the client; a push's output goes through `oversize::relay`,
    // which adds the gate's limit and its manifest key to git's message for a pack too large.
    let (stdout, relay) = match request.service {
        Service::UploadPack => (Stdio::from(fd_out), None),
        Service::ReceivePack => match conn
            .set_write_timeout(CLIENT_WRITE_TIMEOUT)
            .and_then(|()| std::io::pipe())
        {
            Ok((reader, writer)) => {
                let hint = crate::gate::oversize::raise_hint(settings, remote);
                let client = std::fs::File::from(fd_out);
                let relay = tokio::task::spawn_blocking(move || {
                    crate::gate::oversize::relay(reader, client, &hint)
                });
                (Stdio::from(writer), Some(relay))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot make a pipe for receive-pack");
                return;
            }
        },
    };
    cmd.stdin(Stdio::from(fd))
        .stdout(stdout)
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot start git");
            return;
        }
    };
    // Close the copies handed to the child's stdio (the relay then ends when git does);
    // `conn` stays open for the drain below.
    drop(cmd);
    let stderr = child.stderr.take();
    let log_stderr = async move {
        if let Some(stderr) = stderr {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "bottle_bundle::gate::git", "{line}");
            }
        }
    };
    let limit = match request.service {
        Service::UploadPack => None,
        Service::ReceivePack => Some(settings.push_timeout + RECEIVE_TRANSFER_ALLOWANCE),
    };
    let wait = async {
        let expired = async {
            match limit {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        let status = tokio::select! {
            status = child.wait() => Some(status),
            () = cancel.cancelled() => None,
            () = expired => {
                tracing::warn!(repo = %remote.name, "receive-pack ran past its time limit; killed");
                None
            }
        };
        // Killed here, not after the join: its stderr only ends when it does.
        if status.is_none() {
            let _ = child.kill().await;
        }
        status
    };
    let (status, ()) = tokio::join!(wait, log_stderr);
    if let Some(relay) = relay {
        match relay.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::info!(error = %e, "relaying receive-pack's output ended early"),
            Err(e) => tracing::warn!(error = %e, "the receive-pack relay failed"),
        }
    }
    match status {
        Some(Ok(status)) => {
            tracing::info!(repo = %remote.name, service = ?request.service, %status, "git finished");
        }
        Some(Err(e)) => tracing::warn!(error = %e, "waiting for git failed"),
        // Shutting down or out of time: close at once.
        None => return,
    }
    let _ = tokio::task::spawn_blocking(move || conn.drain()).await;
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn check(payload: &[u8], expect: Expect) {
        expect.assert_eq(&format!("{:?}", parse_request(payload)));
    }

    #[test]
    fn requests() {
        check(
            b"git-upload-pack /app.git\0host=git-gate:9418\0\0version=2\0",
            expect![[r#"Ok(Request { service: UploadPack, repo: "app", protocol: "version=2" })"#]],
        );
        check(
            b"git-receive-pack /app\0host=x\0",
            expect![[r#"Ok(Request { service: ReceivePack, repo: "app", protocol: "" })"#]],
        );
        check(
            b"git-upload-archive /app.git\0host=x\0",
            expect![[r#"Err("service \"git-upload-archive\" is not offered")"#]],
        );
        check(b"nonsense", expect![[r#"Err("malformed request")"#]]);
    }
}
