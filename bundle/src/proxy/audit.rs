//! The JSON-lines audit log: one typed event per request, never a header value or a token.

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

/// One request's outcome.
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

/// A response body that counts the bytes it passes on and records the audit event when the
/// body ends or is dropped (so a streamed response is logged with its real size and length).
pub(crate) struct AuditedBody<B> {
    inner: B,
    event: Option<AuditEvent>,
    audit: Arc<Audit>,
}

impl<B> AuditedBody<B> {
    pub(crate) fn new(inner: B, event: AuditEvent, audit: Arc<Audit>) -> AuditedBody<B> {
        AuditedBody {
            inner,
            event: Some(event),
            audit,
        }
    }
}

impl<B> Drop for AuditedBody<B> {
    fn drop(&mut self) {
        if let Some(event) = self.event.take() {
            self.audit.record(&event);
        }
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
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let (Some(data), Some(event)) = (frame.data_ref(), this.event.as_mut())
        {
            event.bytes += data.len() as u64;
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
