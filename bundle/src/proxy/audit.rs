//! The JSON-lines audit log, never a header value or a token. Each request gets a
//! `decision` line when it is refused or forwarded; a forwarded one also gets an `outcome`
//! line when its exchange ends, however it ends (completed, aborted by the agent, failed).
//! The decision line is written before the upstream is contacted, so a request the upstream
//! got is in the log even if the proxy never sees its end.

use std::io::Write as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};

/// Where audit events go. Lines are written by a dedicated thread so a request never waits on
/// the disk; under load the thread batches lines and flushes whenever it has caught up. A write
/// failure is logged and never stops the proxy.
pub(crate) struct Audit {
    sender: Option<std::sync::mpsc::Sender<String>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Audit {
    fn drop(&mut self) {
        // Closing the channel ends the writer after it has flushed every line.
        drop(self.sender.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// How a forwarded request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The response body reached its end.
    Complete,
    /// The agent went away (or reset the stream) before the response ended.
    Aborted,
    /// The upstream could not be reached, or its response broke off.
    Failed,
    /// Refused after forwarding began: the host resolved to a refused address.
    Refused,
    /// The connection switched protocols (WebSocket); the exchange continues as a splice.
    Upgraded,
}

impl Outcome {
    fn code(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Aborted => "aborted",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
            Outcome::Upgraded => "upgraded",
        }
    }
}

/// One request's audit record.
#[derive(Debug, Clone)]
pub(crate) struct AuditEvent {
    pub(crate) method: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The path without its query (a query can carry anything; it is not recorded).
    pub(crate) path: String,
    /// The route's label, when one matched.
    pub(crate) route: Option<String>,
    /// `allow`, `deny` or `error`, with a reason code for the latter two.
    pub(crate) decision: &'static str,
    pub(crate) reason: Option<String>,
    pub(crate) status: u16,
    /// Response body bytes passed to the agent.
    pub(crate) bytes: u64,
    pub(crate) started: Instant,
    /// `None` on a decision line, how the exchange ended on an outcome line.
    pub(crate) outcome: Option<Outcome>,
    /// A bottle secret found in the request: the variable's name, its form and where (never
    /// the value).
    pub(crate) secret: Option<String>,
    /// How many secret forms were masked in the answer so far.
    pub(crate) masked: Arc<std::sync::atomic::AtomicU64>,
}

impl AuditEvent {
    /// A not-yet-decided event (a denial until something allows it), timed from now.
    pub(crate) fn new(method: String, host: String, port: u16, path: String) -> AuditEvent {
        AuditEvent {
            method,
            host,
            port,
            path,
            route: None,
            decision: "deny",
            reason: None,
            status: 0,
            bytes: 0,
            started: Instant::now(),
            outcome: None,
            secret: None,
            masked: Arc::default(),
        }
    }
}

impl Audit {
    /// Opens (appends to) the audit log; `None` logs to tracing only.
    pub(crate) fn open(path: Option<&Path>) -> std::io::Result<Audit> {
        let Some(path) = path else {
            return Ok(Audit {
                sender: None,
                writer: None,
            });
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (sender, receiver) = std::sync::mpsc::channel::<String>();
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_lines(file, &receiver))?;
        Ok(Audit {
            sender: Some(sender),
            writer: Some(writer),
        })
    }

    pub(crate) fn record(&self, event: &AuditEvent) {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let line = serde_json::json!({
            "time": time,
            "event": if event.outcome.is_some() { "outcome" } else { "decision" },
            "method": event.method,
            "host": event.host,
            "port": event.port,
            "path": event.path,
            "route": event.route,
            "decision": event.decision,
            "reason": event.reason,
            "status": event.status,
            "bytes": event.bytes,
            "duration_ms": event.started.elapsed().as_secs_f64() * 1000.0,
            "outcome": event.outcome.map(Outcome::code),
            "secret": event.secret,
            "masked": event.masked.load(std::sync::atomic::Ordering::Relaxed),
        })
        .to_string();
        tracing::debug!(target: "audit", "{line}");
        if let Some(sender) = &self.sender {
            let _ = sender.send(line);
        }
    }
}

/// The writer thread: batch what is queued, flush when caught up, stop when the channel closes.
fn write_lines(file: std::fs::File, receiver: &std::sync::mpsc::Receiver<String>) {
    let mut out = std::io::BufWriter::new(file);
    let write = |out: &mut std::io::BufWriter<std::fs::File>, line: String| {
        if let Err(e) = writeln!(out, "{line}") {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    };
    while let Ok(line) = receiver.recv() {
        write(&mut out, line);
        while let Ok(more) = receiver.try_recv() {
            write(&mut out, more);
        }
        if let Err(e) = out.flush() {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }
}

/// A forwarded request whose outcome line is still to be written. Dropping it unfinished
/// (the agent went away and hyper dropped the request's future or its response body) writes
/// the outcome as [`Outcome::Aborted`], so no forwarded request is missing its end.
pub(crate) struct Pending {
    event: Option<AuditEvent>,
    audit: Arc<Audit>,
}

impl Pending {
    /// Writes the decision line for a request about to be forwarded.
    pub(crate) fn forward(audit: Arc<Audit>, event: AuditEvent) -> Pending {
        audit.record(&event);
        Pending {
            event: Some(event),
            audit,
        }
    }

    /// The outcome being collected (status, bytes, a changed decision).
    pub(crate) fn event_mut(&mut self) -> Option<&mut AuditEvent> {
        self.event.as_mut()
    }

    /// Writes the outcome line.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.write(outcome);
    }

    fn write(&mut self, outcome: Outcome) {
        if let Some(mut event) = self.event.take() {
            event.outcome = Some(outcome);
            self.audit.record(&event);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.write(Outcome::Aborted);
    }
}

/// A response body that counts the bytes it passes on and writes the outcome line when it is
/// dropped: complete if the upstream body had ended, failed if it broke off, aborted
/// otherwise (so a streamed response is logged with its real size and length).
pub(crate) struct AuditedBody<B: Body> {
    inner: B,
    pending: Pending,
    ended: bool,
    failed: bool,
}

impl<B: Body> AuditedBody<B> {
    pub(crate) fn new(inner: B, pending: Pending) -> AuditedBody<B> {
        AuditedBody {
            inner,
            pending,
            ended: false,
            failed: false,
        }
    }
}

impl<B: Body> Drop for AuditedBody<B> {
    fn drop(&mut self) {
        // hyper stops polling once `is_end_stream` is true (or never polls an empty body),
        // so the inner body's state, not a final `None`, says whether it ended.
        let outcome = match (self.failed, self.ended || self.inner.is_end_stream()) {
            (true, _) => Outcome::Failed,
            (false, true) => Outcome::Complete,
            (false, false) => Outcome::Aborted,
        };
        self.pending.write(outcome);
    }
}

impl<B> Body for AuditedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(event)) = (frame.data_ref(), this.pending.event_mut()) {
                    event.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => this.failed = true,
            Poll::Ready(None) => this.ended = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body type every proxy response uses.
pub(crate) type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

/// A small fixed body.
pub(crate) fn full(text: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(text.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
