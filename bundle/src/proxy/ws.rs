//! WebSocket messages after an upgrade, looked through for the bottle's secrets (`egress.dlp`).
//!
//! Once an upgrade to `websocket` is answered 101 the exchange is no longer HTTP, so the body
//! guards do not see it. This relay reads RFC 6455 frames in both directions instead of
//! splicing bytes:
//!
//! - agent to upstream: every data frame's payload (unmasked) and every control frame's is
//!   checked with the same streaming hold-back as a request body: a data message is forwarded
//!   as fragments that stop `longest pattern - 1` bytes short of what was read, so no complete
//!   secret leaves. On a hit (`dlp: block`) the relay stops: the agent gets a close frame
//!   (1008, naming the variable), the upstream a close frame (1008) before the connection ends,
//!   and the audit log a line. With `dlp: log` the hit is audited and the message forwarded.
//! - upstream to agent: every secret form is masked in payloads, with the same hold-back.
//!
//! Re-fragmenting a message is what RFC 6455 §5.4 allows an intermediary when no extension is
//! negotiated; the proxy strips `Sec-WebSocket-Extensions` from the agent's upgrade request so
//! none is (compressed frames, RSV1, could not be read), and a frame with a reserved bit set
//! ends the connection. Frames are streamed in chunks: a large frame is never held whole.
//!
//! Hand-written rather than through `tungstenite`: that crate assembles and validates whole
//! messages (it would buffer a large one, and would refuse to forward a fragment that splits a
//! UTF-8 character), while a relay needs frame-level streaming with its own re-fragmenting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proxy::audit::{Audit, AuditEvent, Outcome};
use crate::proxy::dlp::{Hit, SecretSet};

/// The most of a frame's payload read at a time.
const CHUNK: usize = 64 * 1024;

/// Close code "policy violation".
const POLICY_VIOLATION: u16 = 1008;

const OP_CONTINUATION: u8 = 0x0;
const OP_CLOSE: u8 = 0x8;

/// What the relay needs to look and to tell.
pub(crate) struct Inspect {
    pub(crate) set: Arc<SecretSet>,
    /// The route's own token, which may go to its route.
    pub(crate) own_token: Option<String>,
    /// `false`: audit a hit and keep forwarding (`dlp: log`).
    pub(crate) block: bool,
    pub(crate) audit: Arc<Audit>,
    /// The upgrade request's audit record, for the line a hit writes.
    pub(crate) event: Option<AuditEvent>,
    pub(crate) masked: Arc<AtomicU64>,
}

/// Relays frames between the agent and the upstream until both directions end, or a secret
/// ends the connection.
pub(crate) async fn relay<C, U>(client: C, upstream: U, inspect: Inspect)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut up_read, mut up_write) = tokio::io::split(upstream);
    let hit = {
        let out = pump(&mut client_read, &mut up_write, Direction::Out, &inspect);
        let back = pump(&mut up_read, &mut client_write, Direction::Back, &inspect);
        tokio::pin!(out, back);
        let (mut out_done, mut back_done) = (false, false);
        loop {
            tokio::select! {
                r = &mut out, if !out_done => match r {
                    Ok(Some(hit)) => break Some(hit),
                    Ok(None) => out_done = true,
                    Err(e) => { tracing::debug!(error = %e, "websocket relay (agent side) ended"); break None; }
                },
                r = &mut back, if !back_done => match r {
                    Ok(_) => back_done = true,
                    Err(e) => { tracing::debug!(error = %e, "websocket relay (upstream side) ended"); break None; }
                },
            }
            if out_done && back_done {
                break None;
            }
        }
    };
    let Some(hit) = hit else { return };
    tracing::warn!(secret = %hit.name, "closed a websocket whose message carries a bottle secret");
    let reason = format!(
        "claude-bottle: the message carries the value of {}; this bottle's secrets do not leave it",
        hit.name
    );
    // Close frames' reasons are at most 123 bytes.
    let reason = truncate(&reason, 123);
    let _ = write_frame(
        &mut client_write,
        true,
        OP_CLOSE,
        None,
        &close_payload(reason),
    )
    .await;
    let _ = write_frame(
        &mut up_write,
        true,
        OP_CLOSE,
        Some([0x5a, 0x17, 0xc3, 0x9e]),
        &close_payload("policy violation"),
    )
    .await;
    let _ = client_write.shutdown().await;
    let _ = up_write.shutdown().await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Agent to upstream: looked through; frames are masked.
    Out,
    /// Upstream to agent: secrets masked; frames are not.
    Back,
}

struct Header {
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
}

/// Reads the next frame header; `None` at a clean end of stream between frames.
async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Header>> {
    let mut two = [0u8; 2];
    match r.read(&mut two[..1]).await? {
        0 => return Ok(None),
        _ => r.read_exact(&mut two[1..]).await?,
    };
    let len = match two[1] & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    let mask = if two[1] & 0x80 != 0 {
        let mut key = [0u8; 4];
        r.read_exact(&mut key).await?;
        Some(key)
    } else {
        None
    };
    Ok(Some(Header {
        fin: two[0] & 0x80 != 0,
        rsv: (two[0] >> 4) & 0x7,
        opcode: two[0] & 0x0f,
        mask,
        len,
    }))
}

async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(14);
    head.push(u8::from(fin) << 7 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => head.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            head.push(mask_bit | 126);
            head.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            head.push(mask_bit | 127);
            head.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            head.extend_from_slice(&key);
            let mut body = payload.to_vec();
            apply_mask(&mut body, key, 0);
            head.extend_from_slice(&body);
        }
        None => head.extend_from_slice(payload),
    }
    w.write_all(&head).await?;
    w.flush().await
}

/// XORs `data` with `key`, `data` starting at byte `offset` of its frame's payload.
fn apply_mask(data: &mut [u8], key: [u8; 4], offset: u64) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[((offset + i as u64) % 4) as usize];
    }
}

fn close_payload(reason: &str) -> Vec<u8> {
    let mut p = POLICY_VIOLATION.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

fn truncate(text: &str, most: usize) -> &str {
    let mut end = text.len().min(most);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Moves frames one way. `Ok(Some(hit))`: a secret stopped it (agent to upstream, blocking);
/// `Ok(None)`: the reader ended between frames (the writer is shut down).
async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    dir: Direction,
    inspect: &Inspect,
) -> std::io::Result<Option<Hit>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let own = inspect.own_token.as_deref();
    // The current data message: its opcode, whether a fragment of it was sent, what is held.
    let mut message_op = 0u8;
    let mut started = false;
    let mut held: Vec<u8> = Vec::new();
    let mut logged = false;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let Some(h) = read_header(r).await? else {
            w.shutdown().await?;
            return Ok(None);
        };
        if h.rsv != 0 {
            return Err(std::io::Error::other(
                "a websocket frame with a reserved bit (an extension the proxy cannot read)",
            ));
        }
        let out_mask = match dir {
            Direction::Out => Some(h.mask.unwrap_or([0x5a, 0x17, 0xc3, 0x9e])),
            Direction::Back => None,
        };
        if h.opcode >= 0x8 {
            // A control frame: at most 125 bytes, never fragmented.
            let len = usize::try_from(h.len.min(125)).unwrap_or(125);
            let mut payload = vec![0u8; len];
            r.read_exact(&mut payload).await?;
            if let Some(key) = h.mask {
                apply_mask(&mut payload, key, 0);
            }
            if let Some(hit) = look(inspect, dir, &mut payload, own, &mut logged) {
                return Ok(Some(hit));
            }
            write_frame(w, true, h.opcode, out_mask, &payload).await?;
            continue;
        }
        if h.opcode != OP_CONTINUATION {
            message_op = h.opcode;
            started = false;
        }
        let mut offset = 0u64;
        while offset < h.len {
            let want = usize::try_from((h.len - offset).min(CHUNK as u64)).unwrap_or(CHUNK);
            let n = r.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let chunk = &mut buf[..n];
            if let Some(key) = h.mask {
                apply_mask(chunk, key, offset);
            }
            offset += n as u64;
            held.extend_from_slice(chunk);
            if let Some(hit) = look(inspect, dir, &mut held, own, &mut logged) {
                return Ok(Some(hit));
            }
            if h.fin && offset == h.len {
                // The message's last bytes: sent whole below, unsplit.
                break;
            }
            let keep = if logged && dir == Direction::Out {
                0
            } else {
                inspect.set.hold_back(&held)
            };
            let ready = held.len() - keep;
            if ready > 0 {
                let op = if started { OP_CONTINUATION } else { message_op };
                write_frame(w, false, op, out_mask, &held[..ready]).await?;
                started = true;
                held.drain(..ready);
            }
        }
        if h.fin {
            let op = if started { OP_CONTINUATION } else { message_op };
            write_frame(w, true, op, out_mask, &held).await?;
            held.clear();
            started = false;
        }
    }
}

/// Agent to upstream: the first secret in `data` (audited; `Some` only when blocking). Upstream
/// to agent: masks every secret form in `data`.
fn look(
    inspect: &Inspect,
    dir: Direction,
    data: &mut [u8],
    own: Option<&str>,
    logged: &mut bool,
) -> Option<Hit> {
    match dir {
        Direction::Back => {
            let n = inspect.set.mask(data);
            if n > 0 {
                inspect.masked.fetch_add(n as u64, Ordering::Relaxed);
            }
            None
        }
        Direction::Out if *logged => None,
        Direction::Out => {
            let hit = inspect.set.find(data, own)?;
            if let Some(event) = &inspect.event {
                let mut event = event.clone();
                event.secret = Some(format!(
                    "{} ({}, in a websocket message)",
                    hit.name, hit.encoding
                ));
                if inspect.block {
                    event.decision = "deny";
                    event.reason = Some("secret-in-request".into());
                    event.outcome = Some(Outcome::Refused);
                }
                inspect.audit.record(&event);
            }
            if inspect.block {
                Some(hit)
            } else {
                tracing::warn!(secret = %hit.name, "a websocket message carries a bottle secret (dlp: log)");
                *logged = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_is_position_dependent_and_its_own_inverse() {
        let key = [1, 2, 3, 4];
        let mut whole = b"hello websocket".to_vec();
        apply_mask(&mut whole, key, 0);
        // Unmasking in two chunks at any split gives the same bytes back.
        for split in 0..whole.len() {
            let mut a = whole[..split].to_vec();
            let mut b = whole[split..].to_vec();
            apply_mask(&mut a, key, 0);
            apply_mask(&mut b, key, split as u64);
            a.extend(b);
            assert_eq!(a, b"hello websocket");
        }
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let long = "é".repeat(100);
        let t = truncate(&long, 123);
        assert!(t.len() <= 123 && t.len() >= 122);
    }
}
