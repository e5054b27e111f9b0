//! Request heads whose lines end in a bare LF are refused (400), as hyper already refuses a
//! bare CR, a NUL and obs-fold.
//!
//! hyper (through `httparse`) accepts `\n` alone as a line ending, on purpose, and has no
//! setting to refuse it. The proxy re-frames every request it forwards, so a bare LF cannot
//! smuggle a second request upstream, but a lenient reading is still one more way two parsers
//! could disagree, and the policy is to refuse anything that can be read two ways. This reader
//! sits under hyper on the agent's connection (cleartext and inside each tunnel) and follows
//! HTTP/1.1 framing just far enough to know which bytes belong to a request head: a bare LF
//! there is turned into a NUL before hyper sees it, which hyper answers 400 without forwarding
//! anything. The rest of that read is dropped and an empty line handed to hyper in its place:
//! hyper only re-parses a head that arrived in pieces once it sees the head's end, so without
//! one it would wait for the agent instead of answering (the connection ends with the 400). Bodies (`Content-Length`, chunked) are skipped untouched; after a `CONNECT`, an
//! `Upgrade`, the h2 preface or anything the reader cannot follow, it stops looking (hyper
//! either refuses the head itself or the connection is no longer HTTP/1.1).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A head longer than this is hyper's to refuse; the reader stops following the connection.
const MOST_HEAD: usize = 512 * 1024;

#[derive(Debug)]
enum State {
    /// Inside a request head (or before one): what it holds so far.
    Head(Vec<u8>),
    /// `n` body bytes to skip.
    Body(u64),
    /// A chunked body.
    Chunk(Chunk),
    /// A bare LF was found: these bytes go to hyper next (the end of a head, so it parses the
    /// NUL now), then the connection passes as it is.
    Refusing(&'static [u8]),
    /// No longer following: everything passes as it is.
    Done,
}

#[derive(Debug)]
enum Chunk {
    /// The chunk-size line (size, extensions), up to its LF.
    Size(u64, bool),
    /// Data bytes left in this chunk.
    Data(u64),
    /// The CRLF after a chunk's data: bytes left.
    DataEnd(u8),
    /// Trailer lines after the last chunk; `true` when the current line is empty so far.
    Trailers(bool),
}

/// The agent's connection with bare-LF heads made unparseable.
pub(crate) struct StrictLines<S> {
    inner: S,
    state: State,
}

impl<S> StrictLines<S> {
    pub(crate) fn new(inner: S) -> StrictLines<S> {
        StrictLines {
            inner,
            state: State::Head(Vec::new()),
        }
    }

    /// Follows `data` (just read), changing a bare LF in a head into a NUL. Returns how many
    /// of its bytes go to hyper (all of them, or up to that NUL).
    fn follow(&mut self, data: &mut [u8]) -> usize {
        let mut i = 0;
        while i < data.len() {
            match &mut self.state {
                State::Done | State::Refusing(_) => break,
                State::Head(head) => {
                    let b = data[i];
                    if b == b'\n' && head.last() != Some(&b'\r') {
                        data[i] = 0;
                        self.state = State::Refusing(b"\r\n\r\n");
                        return i + 1;
                    }
                    head.push(b);
                    i += 1;
                    if head.as_slice() == b"\r\n" {
                        // Empty lines before a request line are skipped, as hyper does.
                        head.clear();
                    } else if head.ends_with(b"\r\n\r\n") {
                        let head = std::mem::take(head);
                        self.state = after_head(&head);
                    } else if head.len() > MOST_HEAD {
                        self.state = State::Done;
                    }
                }
                State::Body(left) => {
                    let take = (*left).min((data.len() - i) as u64);
                    *left -= take;
                    i += take as usize;
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::Chunk(chunk) => {
                    let b = data[i];
                    match chunk {
                        Chunk::Size(size, in_ext) => {
                            i += 1;
                            match b {
                                b'\n' => {
                                    *chunk = if *size == 0 {
                                        Chunk::Trailers(true)
                                    } else {
                                        Chunk::Data(*size)
                                    };
                                }
                                b'\r' => {}
                                _ if *in_ext => {}
                                b';' | b' ' | b'\t' => *in_ext = true,
                                _ => match char::from(b).to_digit(16) {
                                    Some(d) if *size < (u64::MAX >> 4) => {
                                        *size = *size * 16 + u64::from(d);
                                    }
                                    _ => self.state = State::Done,
                                },
                            }
                        }
                        Chunk::Data(left) => {
                            let take = (*left).min((data.len() - i) as u64);
                            *left -= take;
                            i += take as usize;
                            if *left == 0 {
                                *chunk = Chunk::DataEnd(2);
                            }
                        }
                        Chunk::DataEnd(left) => {
                            i += 1;
                            *left -= 1;
                            if b == b'\n' || *left == 0 {
                                *chunk = Chunk::Size(0, false);
                            }
                        }
                        Chunk::Trailers(empty) => {
                            i += 1;
                            match b {
                                b'\n' if *empty => self.state = State::Head(Vec::new()),
                                b'\n' => *empty = true,
                                b'\r' => {}
                                _ => *empty = false,
                            }
                        }
                    }
                }
            }
        }
        data.len()
    }
}

/// What follows a complete head: its body, or nothing more to follow.
fn after_head(head: &[u8]) -> State {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(head) else {
        return State::Done;
    };
    if matches!(req.method, Some("CONNECT" | "PRI")) {
        return State::Done;
    }
    let mut length = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("upgrade") {
            return State::Done;
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return State::Done;
            }
            chunked = true;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return State::Done,
            }
        }
    }
    match (chunked, length) {
        (true, _) => State::Chunk(Chunk::Size(0, false)),
        (false, Some(n)) if n > 0 => State::Body(n),
        _ => State::Head(Vec::new()),
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StrictLines<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let State::Refusing(rest) = &mut this.state {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            *rest = &rest[n..];
            if rest.is_empty() {
                this.state = State::Done;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && !matches!(this.state, State::Done)
        {
            let kept = this.follow(&mut buf.filled_mut()[before..]);
            buf.set_filled(before + kept);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StrictLines<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes and returns what hyper would read.
    fn through(input: &[u8], step: usize) -> Vec<u8> {
        let mut s = StrictLines::new(());
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            let mut piece = piece.to_vec();
            let kept = s.follow(&mut piece);
            out.extend_from_slice(&piece[..kept]);
            if let State::Refusing(end) = s.state {
                out.extend_from_slice(end);
                break;
            }
        }
        out
    }

    #[test]
    fn a_bare_lf_in_a_head_becomes_a_nul_at_any_read_size() {
        for raw in [
            &b"GET / HTTP/1.1\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
            // The second of two pipelined requests, after a body full of bare LFs.
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n\n\n\n\nGET / HTTP/1.1\nX: y\r\n\r\n",
            // After a chunked body whose data and extensions carry bare LFs.
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n\n\n\n\r\n0\r\n\r\nGET / HTTP/1.1\nX: y\r\n\r\n",
        ] {
            for step in [1, 2, 5, raw.len()] {
                let out = through(raw, step);
                let nul = out.iter().position(|b| *b == 0);
                assert_eq!(
                    nul.map(|at| &out[at..]),
                    Some(&b"\0\r\n\r\n"[..]),
                    "{:?} step {step}",
                    String::from_utf8_lossy(raw)
                );
                assert_eq!(&out[..nul.unwrap()], &raw[..nul.unwrap()], "before the NUL");
            }
        }
    }

    /// What hyper answers to `raw` sent on a connection under [`StrictLines`], written in
    /// pieces of `step` bytes with the server let run between them (hyper parses a head that
    /// arrives in pieces differently from one that arrives whole).
    async fn hyper_answers(raw: &'static [u8], step: usize) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut agent, proxy_side) = tokio::io::duplex(1 << 16);
        let service = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(String::from("ok")))
        });
        // As inside a tunnel: the auto builder reads ahead for the h2 preface first.
        tokio::spawn(async move {
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = builder
                .serve_connection_with_upgrades(
                    hyper_util::rt::TokioIo::new(StrictLines::new(proxy_side)),
                    service,
                )
                .await;
        });
        for piece in raw.chunks(step) {
            // The server may answer and close before the rest is written.
            if agent.write_all(piece).await.is_err() {
                break;
            }
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
        let mut out = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            agent.read_to_end(&mut out),
        )
        .await;
        let text = String::from_utf8_lossy(&out).into_owned();
        text.lines()
            .filter(|l| l.starts_with("HTTP/"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    #[tokio::test]
    async fn hyper_answers_a_bare_lf_400() {
        for raw in [
            &b"GET / HTTP/1.1\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        ] {
            for step in [1, 7, raw.len()] {
                assert_eq!(
                    hyper_answers(raw, step).await,
                    "HTTP/1.1 400 Bad Request",
                    "{:?} step {step}",
                    String::from_utf8_lossy(raw)
                );
            }
        }
        for step in [1, 7, 100] {
            assert_eq!(
                hyper_answers(
                    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                    step
                )
                .await,
                "HTTP/1.1 200 OK"
            );
        }
    }

    #[test]
    fn bodies_and_clean_heads_pass_untouched() {
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n\n\n\nGET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n\n\n\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            // After CONNECT the bytes are TLS (or anything): not followed.
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n\x16\x03\n\n",
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x02\n\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\n",
        ] {
            for step in [1, 3, raw.len()] {
                assert_eq!(through(raw, step), raw, "{:?}", String::from_utf8_lossy(raw));
            }
        }
    }
}
