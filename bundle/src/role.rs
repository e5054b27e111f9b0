//! What every serving role (proxy, gate, mcp) does the same way: bind the listeners its
//! config names, say on stdout when each is ready, and turn SIGTERM/SIGINT into cancellation
//! while SIGHUP is watched (a signal's default action would kill the role; the bundle's
//! supervisor forwards SIGHUP to every role).

use std::path::Path;

use anyhow::Context;
use bottle_contract::bundle_config::Listen;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A role's bound listeners; at least one is set.
pub(crate) struct Listeners {
    pub(crate) tcp: Option<TcpListener>,
    pub(crate) unix: Option<UnixListener>,
}

/// Binds what `listen` names. `key` is the config section (`proxy`, `gate`, `supervise`) for
/// errors; `name` starts the readiness lines printed on stdout (`proxy listening on tcp ADDR`,
/// `… on unix PATH`), which tests and the supervisor wait for.
pub(crate) async fn bind(listen: &Listen, key: &str, name: &str) -> anyhow::Result<Listeners> {
    let tcp = match &listen.tcp {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} ({key}.listen.tcp)"))?;
            announce(&format!(
                "{name} listening on tcp {}",
                listener.local_addr()?
            ));
            Some(listener)
        }
        None => None,
    };
    let unix = match &listen.unix {
        Some(path) => {
            let listener = crate::sockets::bind_unix(Path::new(path))
                .with_context(|| format!("cannot listen on {path} ({key}.listen.unix)"))?;
            announce(&format!("{name} listening on unix {path}"));
            Some(listener)
        }
        None => None,
    };
    if tcp.is_none() && unix.is_none() {
        anyhow::bail!("{key}.listen has neither tcp nor unix; nothing to serve on");
    }
    Ok(Listeners { tcp, unix })
}

/// One readiness line on stdout. A closed stdout must not stop the role.
pub(crate) fn announce(line: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// Cancels `cancel` on SIGTERM or SIGINT, and returns the SIGHUP stream, watched from now on.
/// Call it before binding: a signal that arrives before the role is ready must not kill it.
pub(crate) fn watch_signals(cancel: CancellationToken) -> anyhow::Result<Signal> {
    let hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        cancel.cancel();
    });
    Ok(hangup)
}
