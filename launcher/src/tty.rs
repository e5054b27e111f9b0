//! The user's terminal during `start`, `attach` and `exec -t`: raw mode (restored on every exit path,
//! including panics, by a drop guard) and the size, sent again on every SIGWINCH.

use std::io::IsTerminal;

use crate::backend::AttachIo;

/// Raw mode while alive, when stdin is a terminal.
pub(crate) struct RawMode {
    enabled: bool,
}

impl RawMode {
    pub(crate) fn enable() -> anyhow::Result<RawMode> {
        if !std::io::stdin().is_terminal() {
            return Ok(RawMode { enabled: false });
        }
        crossterm::terminal::enable_raw_mode()
            .map_err(|e| anyhow::anyhow!("cannot put the terminal in raw mode: {e}"))?;
        Ok(RawMode { enabled: true })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.enabled {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

/// Whether both stdin and stdout are terminals (`exec` then gets a tty by default).
pub(crate) fn is_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// What ends an attached session without ending its process.
pub(crate) const DETACH_KEYS: &str = "Ctrl-P Ctrl-Q";

/// The process's stdin/stdout/stderr and terminal sizes, for
/// [`crate::backend::Backend::attach`] (and `exec_attached`).
pub(crate) fn attach_io() -> AttachIo {
    io(true)
}

/// [`attach_io`], with stdin only when `stdin`.
pub(crate) fn io(stdin: bool) -> AttachIo {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    if std::io::stdout().is_terminal() {
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut winch) = signal(SignalKind::window_change()) else {
                return;
            };
            loop {
                if let Ok(size) = crossterm::terminal::size()
                    && tx.send(size).await.is_err()
                {
                    return;
                }
                if winch.recv().await.is_none() {
                    return;
                }
            }
        });
    }
    AttachIo {
        stdin: stdin.then(|| {
            Box::pin(tokio::io::stdin()) as std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>
        }),
        stdout: Box::pin(tokio::io::stdout()),
        stderr: Box::pin(tokio::io::stderr()),
        resize: rx,
    }
}
