//! Known-secret egress blocking and reflected-secret masking (`egress.dlp`).
//!
//! The bundle knows every secret the bottle holds: the route tokens it injects and the agent's
//! secret env values (both in the secrets file). [`SecretSet`] turns each value into the forms
//! it can take on the wire — raw, base64 (standard and URL-safe, at each of the three byte
//! alignments, so a secret inside a larger base64 blob is found, padded or not), hex (lower and
//! upper), base32, percent-encoding (every byte escaped, or only the reserved ones) and JSON
//! escapes (`\u00XX` for every character, or only what JSON must escape) — and finds any of
//! them with one aho-corasick automaton, the engine the scanner uses. Exact values only: no
//! false positive on data that is not one of this bottle's secrets. A sampling prefilter
//! ([`GramFilter`]) in front of the automaton reads one position in every few bytes, so the
//! automaton runs only where a secret's form may be.
//!
//! Bodies are streamed. [`GuardedBody`] (requests) and [`MaskedBody`] (answers) hold back only
//! the tail of what they have read that could still be the start of a secret's form (usually
//! nothing: a chunk rarely ends inside one), so no complete secret is ever passed on and an
//! event stream still arrives event by event.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use std::ops::ControlFlow;

use aho_corasick::AhoCorasick;
use bottle_contract::secrets::SecretsFile;
use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};

use super::gram_filter::GramFilter;

use bottle_contract::secrets::MIN_SECRET_LEN;

/// Where a secret came from, which decides what may carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// A route token: injected by the proxy, never held by the agent. Its own route may carry
    /// it (the proxy puts it there).
    Token,
    /// A secret env value the agent holds: no request may carry it.
    Env,
}

#[derive(Debug)]
struct SecretInfo {
    /// The variable's name (never the value).
    name: String,
    origin: Origin,
}

#[derive(Debug, Clone, Copy)]
struct PatternInfo {
    secret: usize,
    encoding: &'static str,
}

/// One found secret: which variable, in which form. Never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) name: String,
    pub(crate) encoding: &'static str,
}

/// Every form of every secret of one bottle, built when the routes are loaded (and again on
/// SIGHUP).
#[derive(Debug)]
pub(crate) struct SecretSet {
    secrets: Vec<SecretInfo>,
    patterns: Vec<PatternInfo>,
    /// Over every pattern, case-sensitive.
    automaton: Option<AhoCorasick>,
    /// Where in a body the automaton needs to look.
    filter: Option<GramFilter>,
    /// Over the forms that can sit in a DNS name (raw, hex, base32), ignoring ASCII case:
    /// host names reach the proxy lower-cased.
    host_automaton: Option<AhoCorasick>,
    host_patterns: Vec<PatternInfo>,
    /// Every pattern, sorted, for the hold-back check.
    sorted: Vec<Vec<u8>>,
    /// The first byte, and the first two bytes, of every pattern (bit sets): a tail that does
    /// not start like one needs no search of `sorted`.
    starts1: Box<[u64; 4]>,
    starts2: Box<[u64; 1024]>,
    longest: usize,
}

impl SecretSet {
    /// The set for a secrets file: its route tokens and its env values.
    pub(crate) fn from_secrets(secrets: &SecretsFile) -> SecretSet {
        let mut values: Vec<(SecretInfo, &[u8])> = Vec::new();
        for (name, value) in &secrets.tokens {
            values.push((
                SecretInfo {
                    name: name.clone(),
                    origin: Origin::Token,
                },
                value.expose().as_bytes(),
            ));
        }
        for (name, value) in &secrets.env {
            values.push((
                SecretInfo {
                    name: name.clone(),
                    origin: Origin::Env,
                },
                value.expose().as_bytes(),
            ));
        }
        SecretSet::build(values)
    }

    fn build(values: Vec<(SecretInfo, &[u8])>) -> SecretSet {
        let mut secrets = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut all: Vec<(Vec<u8>, PatternInfo)> = Vec::new();
        let mut host: Vec<(Vec<u8>, PatternInfo)> = Vec::new();
        for (info, value) in values {
            if value.len() < MIN_SECRET_LEN {
                tracing::warn!(
                    name = %info.name,
                    "secret shorter than {MIN_SECRET_LEN} bytes: not looked for in traffic"
                );
                continue;
            }
            let index = secrets.len();
            secrets.push(info);
            for (encoding, form) in forms(value) {
                let pattern = PatternInfo {
                    secret: index,
                    encoding,
                };
                if matches!(encoding, "raw" | "hex" | "base32") {
                    host.push((form.to_ascii_lowercase(), pattern));
                }
                if seen.insert(form.clone()) {
                    all.push((form, pattern));
                }
            }
        }
        // The automaton sees only the prefilter's windows, so the small default (a
        // contiguous NFA, about 0.5 MiB for 20 secrets' ~500 forms) does: a DFA would be
        // 3–4× faster per byte it reads but about 17 MiB per bottle.
        let automaton = |patterns: &[(Vec<u8>, PatternInfo)], fold: bool| {
            if patterns.is_empty() {
                return None;
            }
            AhoCorasick::builder()
                .ascii_case_insensitive(fold)
                .build(patterns.iter().map(|(p, _)| p))
                .map_err(|e| tracing::error!(error = %e, "cannot build the secret matcher"))
                .ok()
        };
        let mut sorted: Vec<Vec<u8>> = all.iter().map(|(p, _)| p.clone()).collect();
        sorted.sort();
        let (mut starts1, mut starts2) = (Box::new([0u64; 4]), Box::new([0u64; 1024]));
        for p in &sorted {
            if let [a, rest @ ..] = p.as_slice() {
                set_bit(&mut starts1[..], usize::from(*a));
                if let [b, ..] = rest {
                    set_bit(&mut starts2[..], usize::from(*a) << 8 | usize::from(*b));
                }
            }
        }
        SecretSet {
            starts1,
            starts2,
            longest: sorted.iter().map(Vec::len).max().unwrap_or(0),
            automaton: automaton(&all, false),
            filter: GramFilter::new(all.iter().map(|(p, _)| p.as_slice())),
            host_automaton: automaton(&host, true),
            patterns: all.into_iter().map(|(_, p)| p).collect(),
            host_patterns: host.into_iter().map(|(_, p)| p).collect(),
            secrets,
            sorted,
        }
    }

    /// Whether there is anything to look for.
    pub(crate) fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    fn hit(&self, pattern: PatternInfo) -> Hit {
        Hit {
            name: self.secrets[pattern.secret].name.clone(),
            encoding: pattern.encoding,
        }
    }

    /// The first secret in `data` that a request to a route whose token is `own_token` may not
    /// carry (every secret but that route's own token).
    pub(crate) fn find(&self, data: &[u8], own_token: Option<&str>) -> Option<Hit> {
        let mut found = None;
        self.each_form(data, |pattern, _, _| {
            let pattern = self.patterns[pattern];
            let secret = &self.secrets[pattern.secret];
            if secret.origin == Origin::Token && Some(secret.name.as_str()) == own_token {
                return ControlFlow::Continue(());
            }
            found = Some(self.hit(pattern));
            ControlFlow::Break(())
        });
        found
    }

    /// Calls `visit(pattern, start, end)` for every secret form in `data` (overlapping ones
    /// too), until it breaks. The automaton reads only the prefilter's windows of a large
    /// buffer; a small one (a header, a URL) it reads whole.
    fn each_form(
        &self,
        data: &[u8],
        mut visit: impl FnMut(usize, usize, usize) -> ControlFlow<()>,
    ) {
        /// Below this, filtering costs more than it saves.
        const SMALL: usize = 256;
        let Some(automaton) = &self.automaton else {
            return;
        };
        let mut windows = Vec::new();
        match &self.filter {
            Some(filter) if data.len() >= SMALL => filter.windows(data, &mut windows),
            _ => windows.push((0, data.len())),
        }
        for (start, end) in windows {
            for m in automaton.find_overlapping_iter(&data[start..end]) {
                let at = start + m.start();
                if visit(m.pattern().as_usize(), at, start + m.end()).is_break() {
                    return;
                }
            }
        }
    }

    /// A secret among a host name's labels (any case).
    pub(crate) fn find_in_host(&self, host: &str) -> Option<Hit> {
        let automaton = self.host_automaton.as_ref()?;
        automaton
            .find_overlapping_iter(host.as_bytes())
            .next()
            .map(|m| self.hit(self.host_patterns[m.pattern().as_usize()]))
    }

    /// A secret in a request's path or query: as sent, and with its percent-escapes decoded
    /// (an agent may escape any byte of a URL).
    pub(crate) fn find_in_url_part(&self, text: &str, own_token: Option<&str>) -> Option<Hit> {
        self.find(text.as_bytes(), own_token).or_else(|| {
            let decoded: Vec<u8> = percent_encoding::percent_decode_str(text).collect();
            let plus: Vec<u8> = decoded
                .iter()
                .map(|b| if *b == b'+' { b' ' } else { *b })
                .collect();
            self.find(&decoded, own_token)
                .or_else(|| self.find(&plus, own_token))
        })
    }

    /// Overwrites every secret form in `data` with `*` (the same length, so a `Content-Length`
    /// stays right). Returns how many were masked.
    pub(crate) fn mask(&self, data: &mut [u8]) -> usize {
        let mut spans = Vec::new();
        self.each_form(data, |_, start, end| {
            spans.push((start, end));
            ControlFlow::Continue(())
        });
        for (start, end) in &spans {
            data[*start..*end].fill(b'*');
        }
        spans.len()
    }

    /// How many bytes at the end of `data` must wait for more: the longest tail that is the
    /// start of some secret form (shorter than the whole form: a whole one would have matched).
    pub(crate) fn hold_back(&self, data: &[u8]) -> usize {
        let most = self.longest.saturating_sub(1).min(data.len());
        for len in (1..=most).rev() {
            let tail = &data[data.len() - len..];
            // Most tails start like no pattern: two bit tests instead of a binary search
            // (a chunk has up to `longest - 1` tails, ~240 with JSON escapes).
            let starts = match tail {
                [a] => bit(&self.starts1[..], usize::from(*a)),
                [a, b, ..] => bit(&self.starts2[..], usize::from(*a) << 8 | usize::from(*b)),
                [] => false,
            };
            if !starts {
                continue;
            }
            let at = self.sorted.partition_point(|p| p.as_slice() < tail);
            if self.sorted.get(at).is_some_and(|p| p.starts_with(tail)) {
                return len;
            }
        }
        0
    }
}

fn set_bit(bits: &mut [u64], at: usize) {
    bits[at / 64] |= 1 << (at % 64);
}

fn bit(bits: &[u64], at: usize) -> bool {
    bits[at / 64] & (1 << (at % 64)) != 0
}

/// What the percent-encoders of [`forms`] leave as they are besides ASCII letters and digits
/// (`None`: an encoder that escapes every byte).
const PERCENT_KEEPS: [Option<&[u8]>; 5] = [
    None,
    Some(b""),
    Some(b"-._~"),
    Some(b"-._~!*'()"),
    Some(b"-._~/"),
];

/// `value` with every byte but ASCII letters, digits and `keep` escaped as `%XX`.
fn percent(value: &[u8], keep: Option<&[u8]>, upper: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() * 3);
    for &b in value {
        if keep.is_some_and(|keep| b.is_ascii_alphanumeric() || keep.contains(&b)) {
            out.push(b);
        } else if upper {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out
}

/// Every wire form of `value` the proxy looks for, with its name.
fn forms(value: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    use data_encoding::{BASE32_NOPAD, BASE64, BASE64URL, HEXLOWER, HEXUPPER};
    let mut out: Vec<(&'static str, Vec<u8>)> = vec![("raw", value.to_vec())];
    // Base64 at each alignment: the characters that depend only on the secret's bytes.
    for (encoding, engine) in [("base64", &BASE64), ("base64url", &BASE64URL)] {
        for lead in 0..3usize {
            let mut input = vec![0u8; lead];
            input.extend_from_slice(value);
            let text = engine.encode(&input);
            let skip = [0, 2, 3][lead];
            let end = (input.len() * 4) / 3;
            if let Some(stable) = text.as_bytes().get(skip..end) {
                out.push((encoding, stable.to_vec()));
            }
        }
    }
    out.push(("hex", HEXLOWER.encode(value).into_bytes()));
    out.push(("hex", HEXUPPER.encode(value).into_bytes()));
    // Base32 (padded or not: the characters fixed by the secret's bytes are the same).
    let base32 = BASE32_NOPAD.encode(value);
    let stable = ((value.len() * 8) / 5).min(base32.len());
    out.push(("base32", base32.as_bytes()[..stable].to_vec()));
    out.push((
        "base32",
        base32.to_ascii_lowercase().as_bytes()[..stable].to_vec(),
    ));
    // Percent-encoding: every byte, or what the common URL encoders escape (everything but
    // letters and digits; RFC 3986's unreserved set; JavaScript's encodeURIComponent; Python's
    // quote, which keeps `/`), each with upper- and lower-case hex.
    for keep in PERCENT_KEEPS {
        for upper in [true, false] {
            out.push(("percent", percent(value, keep, upper)));
        }
    }
    // JSON: every character as `\u00XX`, or only the escapes JSON requires (and `\/`).
    if let Ok(text) = std::str::from_utf8(value) {
        let units = |upper: bool| -> Vec<u8> {
            text.encode_utf16()
                .flat_map(|u| match upper {
                    true => format!("\\u{u:04X}").into_bytes(),
                    false => format!("\\u{u:04x}").into_bytes(),
                })
                .collect()
        };
        out.push(("json-escape", units(false)));
        out.push(("json-escape", units(true)));
        if let Ok(quoted) = serde_json::to_string(text) {
            let inner = quoted.as_bytes()[1..quoted.len() - 1].to_vec();
            let slashed = String::from_utf8_lossy(&inner).replace('/', "\\/");
            out.push(("json-escape", inner));
            out.push(("json-escape", slashed.into_bytes()));
        }
    }
    out
}

/// What a guarded request body found, read by the handler once the upstream call ends.
#[derive(Debug, Default)]
pub(crate) struct Finding(Mutex<Option<Hit>>);

impl Finding {
    pub(crate) fn get(&self) -> Option<Hit> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, hit: Hit) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(hit);
    }
}

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestBodyError {
    #[error(transparent)]
    Agent(Box<dyn std::error::Error + Send + Sync>),
    /// A secret was found: the upstream request is ended (the stream reset) before it is
    /// complete.
    #[error("the request body carries a bottle secret; the request was ended")]
    Secret,
}

/// How a guarded body acts on a secret.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub(crate) set: Arc<SecretSet>,
    pub(crate) own_token: Option<String>,
    /// `false`: record the finding and keep forwarding (`dlp: log`).
    pub(crate) block: bool,
    pub(crate) finding: Arc<Finding>,
}

/// The agent's request body on its way upstream, looked through for secrets when guarded.
pub(crate) struct GuardedBody<B = hyper::body::Incoming> {
    inner: B,
    guard: Option<Guard>,
    held: BytesMut,
    /// Trailers read while data was still held back.
    trailers: Option<http::HeaderMap>,
    stopped: bool,
}

impl<B> GuardedBody<B> {
    pub(crate) fn new(inner: B, guard: Option<Guard>) -> GuardedBody<B> {
        GuardedBody {
            inner,
            guard: guard.filter(|g| !g.set.is_empty()),
            held: BytesMut::new(),
            trailers: None,
            stopped: false,
        }
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = self.get_mut();
        if this.stopped {
            return Poll::Ready(None);
        }
        let Some(guard) = &this.guard else {
            return Pin::new(&mut this.inner)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| RequestBodyError::Agent(e.into()))));
        };
        loop {
            if let Some(trailers) = this.trailers.take() {
                if !this.held.is_empty() {
                    this.trailers = Some(trailers);
                    return Poll::Ready(Some(Ok(Frame::data(this.held.split().freeze()))));
                }
                this.stopped = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(RequestBodyError::Agent(e.into()))));
                }
                Poll::Ready(None) => {
                    this.stopped = true;
                    if this.held.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(this.held.split().freeze()))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = match frame.into_data() {
                        // Nothing held back (the usual case: a chunk rarely ends like the
                        // start of a secret form): the chunk is looked at where it is and
                        // forwarded without a copy.
                        Ok(data) if this.held.is_empty() => {
                            if let Some(hit) = guard.set.find(&data, guard.own_token.as_deref()) {
                                guard.finding.set(hit);
                                if guard.block {
                                    this.stopped = true;
                                    return Poll::Ready(Some(Err(RequestBodyError::Secret)));
                                }
                                this.guard = None;
                                return Poll::Ready(Some(Ok(Frame::data(data))));
                            }
                            match forward_unheld(&guard.set, &mut this.held, data) {
                                Some(ready) => return Poll::Ready(Some(Ok(Frame::data(ready)))),
                                None => continue,
                            }
                        }
                        Ok(data) => {
                            this.held.extend_from_slice(&data);
                            if let Some(hit) =
                                guard.set.find(&this.held, guard.own_token.as_deref())
                            {
                                guard.finding.set(hit);
                                if guard.block {
                                    this.stopped = true;
                                    return Poll::Ready(Some(Err(RequestBodyError::Secret)));
                                }
                                // Logged once; the rest is forwarded as it comes.
                                this.guard = None;
                                return Poll::Ready(Some(Ok(Frame::data(
                                    this.held.split().freeze(),
                                ))));
                            }
                            let keep = guard.set.hold_back(&this.held);
                            let ready = this.held.len() - keep;
                            if ready == 0 {
                                continue;
                            }
                            return Poll::Ready(Some(Ok(Frame::data(
                                this.held.split_to(ready).freeze(),
                            ))));
                        }
                        Err(frame) => frame,
                    };
                    match frame.into_trailers() {
                        Ok(trailers) => this.trailers = Some(trailers),
                        Err(_) => continue, // An unknown frame kind: dropped.
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stopped
            || (self.held.is_empty() && self.trailers.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        held_size_hint(self.inner.size_hint(), &self.held)
    }
}

/// An upstream's answer on its way to the agent, with every secret form masked.
pub(crate) struct MaskedBody<B> {
    inner: B,
    set: Arc<SecretSet>,
    /// Counts what was masked, for the audit line.
    masked: Arc<std::sync::atomic::AtomicU64>,
    held: BytesMut,
    trailers: Option<http::HeaderMap>,
    ended: bool,
}

impl<B> MaskedBody<B> {
    pub(crate) fn new(
        inner: B,
        set: Arc<SecretSet>,
        masked: Arc<std::sync::atomic::AtomicU64>,
    ) -> MaskedBody<B> {
        MaskedBody {
            inner,
            set,
            masked,
            held: BytesMut::new(),
            trailers: None,
            ended: false,
        }
    }
}

impl<B> Body for MaskedBody<B>
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
        loop {
            if let Some(mut trailers) = this.trailers.take() {
                if !this.held.is_empty() {
                    this.trailers = Some(trailers);
                    return Poll::Ready(Some(Ok(Frame::data(this.held.split().freeze()))));
                }
                mask_headers(&this.set, &mut trailers);
                this.ended = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.ended = true;
                    if this.held.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(this.held.split().freeze()))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = match frame.into_data() {
                        // Nothing held back and nothing to mask (the usual case): the chunk
                        // is forwarded as it is, without a copy.
                        Ok(data)
                            if this.held.is_empty() && this.set.find(&data, None).is_none() =>
                        {
                            match forward_unheld(&this.set, &mut this.held, data) {
                                Some(ready) => return Poll::Ready(Some(Ok(Frame::data(ready)))),
                                None => continue,
                            }
                        }
                        Ok(data) => {
                            this.held.extend_from_slice(&data);
                            let n = this.set.mask(&mut this.held);
                            if n > 0 {
                                this.masked
                                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                            }
                            let keep = this.set.hold_back(&this.held);
                            let ready = this.held.len() - keep;
                            if ready == 0 {
                                continue;
                            }
                            return Poll::Ready(Some(Ok(Frame::data(
                                this.held.split_to(ready).freeze(),
                            ))));
                        }
                        Err(frame) => frame,
                    };
                    if let Ok(trailers) = frame.into_trailers() {
                        this.trailers = Some(trailers);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.held.is_empty() && self.trailers.is_none()
            || (self.held.is_empty() && self.trailers.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        held_size_hint(self.inner.size_hint(), &self.held)
    }
}

/// Of a chunk with nothing held back before it and no secret form in it, what can go on now,
/// without a copy (`None` when all of it may be the start of a form); the rest waits in
/// `held`.
fn forward_unheld(set: &SecretSet, held: &mut BytesMut, data: Bytes) -> Option<Bytes> {
    let ready = data.len() - set.hold_back(&data);
    held.extend_from_slice(&data[ready..]);
    (ready > 0).then(|| data.slice(..ready))
}

/// A held-back body's length: the inner body's plus what it holds. Nothing is added or
/// removed, only delayed (masking keeps lengths), so a `Content-Length` stays right.
fn held_size_hint(inner: SizeHint, held: &BytesMut) -> SizeHint {
    let held = held.len() as u64;
    let mut hint = SizeHint::new();
    hint.set_lower(inner.lower() + held);
    if let Some(upper) = inner.upper() {
        hint.set_upper(upper + held);
    }
    hint
}

/// Masks secrets in header values (an answer's headers, or its trailers).
pub(crate) fn mask_headers(set: &SecretSet, headers: &mut http::HeaderMap) -> usize {
    let mut masked = 0;
    for value in headers.values_mut() {
        let mut bytes = value.as_bytes().to_vec();
        let n = set.mask(&mut bytes);
        if n > 0 {
            masked += n;
            if let Ok(new) = http::HeaderValue::from_bytes(&bytes) {
                *value = new;
            }
        }
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_contract::secret::Secret;

    const TOKEN: &str = "ghp_R3alLookingT0kenValue1234567890ab";
    const ENV: &str = "sk-env-Secret/Value+With=Specials";

    fn set() -> SecretSet {
        let mut file = SecretsFile::default();
        file.tokens
            .insert("GH_TOKEN".into(), Secret::new(TOKEN.into()));
        file.env
            .insert("DB_PASSWORD".into(), Secret::new(ENV.into()));
        file.env.insert("SHORT".into(), Secret::new("abc".into()));
        SecretSet::from_secrets(&file)
    }

    /// Every encoding the issue names, of `value` inside a larger payload.
    fn encoded(value: &str) -> Vec<(&'static str, Vec<u8>)> {
        use data_encoding::{BASE32, BASE64, BASE64URL, BASE64URL_NOPAD, HEXLOWER, HEXUPPER};
        let mut out = vec![("raw", value.as_bytes().to_vec())];
        for lead in ["", "a", "ab", "abc"] {
            let blob = format!("{lead}{{\"k\":\"{value}\"}}tail");
            out.push(("base64", BASE64.encode(blob.as_bytes()).into_bytes()));
            out.push(("base64url", BASE64URL.encode(blob.as_bytes()).into_bytes()));
            out.push((
                "base64url",
                BASE64URL_NOPAD.encode(blob.as_bytes()).into_bytes(),
            ));
        }
        out.push((
            "base64",
            data_encoding::BASE64.encode(value.as_bytes()).into_bytes(),
        ));
        out.push(("hex", HEXLOWER.encode(value.as_bytes()).into_bytes()));
        out.push(("hex", HEXUPPER.encode(value.as_bytes()).into_bytes()));
        out.push(("base32", BASE32.encode(value.as_bytes()).into_bytes()));
        let component: String =
            percent_encoding::percent_encode(value.as_bytes(), percent_encoding::NON_ALPHANUMERIC)
                .collect();
        out.push(("percent", component.into_bytes()));
        let every: String = value.bytes().map(|b| format!("%{b:02x}")).collect();
        out.push(("percent", every.into_bytes()));
        // Python's urllib.parse.quote (keeps `/` and `-._~`), lower-case hex as some write it.
        let quote: String = value
            .bytes()
            .map(
                |b| match b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                    true => (b as char).to_string(),
                    false => format!("%{b:02x}"),
                },
            )
            .collect();
        out.push(("percent", quote.into_bytes()));
        let units: String = value
            .encode_utf16()
            .map(|u| format!("\\u{u:04x}"))
            .collect();
        out.push(("json", units.into_bytes()));
        out.push(("json", serde_json::to_string(value).unwrap().into_bytes()));
        out.push((
            "json",
            serde_json::to_string(value)
                .unwrap()
                .replace('/', "\\/")
                .into_bytes(),
        ));
        out
    }

    #[test]
    fn every_encoding_of_every_secret_is_found_and_names_only_the_variable() {
        let set = set();
        for (value, name) in [(ENV, "DB_PASSWORD"), (TOKEN, "GH_TOKEN")] {
            for (encoding, form) in encoded(value) {
                let mut payload = b"prefix data ".to_vec();
                payload.extend_from_slice(&form);
                payload.extend_from_slice(b" suffix");
                let hit = set.find(&payload, None);
                assert_eq!(
                    hit.as_ref().map(|h| h.name.as_str()),
                    Some(name),
                    "{encoding}: {}",
                    String::from_utf8_lossy(&form)
                );
                assert!(!format!("{hit:?}").contains(value));
            }
        }
    }

    #[test]
    fn unrelated_data_and_short_secrets_are_not_hits() {
        let set = set();
        let near = format!("{}X", &TOKEN[..TOKEN.len() - 1]);
        for text in [
            "hello world, nothing to see",
            &near,
            "abc abc abc",
            &TOKEN[1..],
        ] {
            assert_eq!(set.find(text.as_bytes(), None), None, "{text}");
        }
    }

    #[test]
    fn a_route_token_may_go_to_its_own_route_only() {
        let set = set();
        assert_eq!(set.find(TOKEN.as_bytes(), Some("GH_TOKEN")), None);
        assert!(set.find(TOKEN.as_bytes(), Some("OTHER")).is_some());
        // An env secret is never allowed, whatever the route.
        assert!(set.find(ENV.as_bytes(), Some("GH_TOKEN")).is_some());
    }

    #[test]
    fn hosts_are_checked_case_blind_and_urls_decoded() {
        let set = set();
        let hex = data_encoding::HEXUPPER.encode(&ENV.as_bytes()[..30]);
        assert!(
            set.find_in_host(&format!("{hex}.evil.test")).is_none(),
            "a part is not the secret"
        );
        let host = format!("{}.x.example.com", TOKEN.to_ascii_lowercase());
        assert_eq!(set.find_in_host(&host).unwrap().name, "GH_TOKEN");
        let b32 = data_encoding::BASE32_NOPAD
            .encode(ENV.as_bytes())
            .to_ascii_lowercase();
        assert_eq!(
            set.find_in_host(&format!("{b32}.example.com"))
                .unwrap()
                .name,
            "DB_PASSWORD"
        );
        let mixed = "/q?x=sk-env-Secret%2FValue%2bWith%3DSpecials";
        assert_eq!(
            set.find_in_url_part(mixed, None).unwrap().name,
            "DB_PASSWORD"
        );
    }

    /// Drives a guarded body over `chunks`; returns what it passed on and whether it stopped
    /// on a secret.
    fn guarded(set: &Arc<SecretSet>, chunks: Vec<Vec<u8>>) -> (Vec<u8>, bool) {
        use http_body_util::BodyExt as _;
        /// A body that yields the chunks one frame each.
        struct Chunks(std::collections::VecDeque<Vec<u8>>);
        impl Body for Chunks {
            type Data = Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
                Poll::Ready(
                    self.get_mut()
                        .0
                        .pop_front()
                        .map(|c| Ok(Frame::data(c.into()))),
                )
            }
        }
        let inner = Chunks(chunks.into());
        let guard = Guard {
            set: set.clone(),
            own_token: None,
            block: true,
            finding: Arc::default(),
        };
        let mut body = GuardedBody::new(inner, Some(guard));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut passed = Vec::new();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => passed.extend_from_slice(frame.data_ref().unwrap()),
                    Err(_) => return (passed, true),
                }
            }
            (passed, false)
        })
    }

    #[test]
    fn a_secret_across_a_64k_chunk_boundary_is_stopped_at_every_offset_and_never_passed_whole() {
        const CHUNK: usize = 64 * 1024;
        let set = Arc::new(set());
        for (encoding, form) in encoded(ENV) {
            // Every split of the form over the boundary, and the form just before and after.
            for offset in 0..=form.len() {
                let mut data = vec![b'x'; CHUNK - offset];
                data.extend_from_slice(&form);
                data.extend_from_slice(&vec![b'y'; CHUNK]);
                let chunks: Vec<Vec<u8>> = data.chunks(CHUNK).map(<[u8]>::to_vec).collect();
                let (passed, stopped) = guarded(&set, chunks);
                assert!(stopped, "{encoding} at offset {offset} was not stopped");
                assert!(
                    set.find(&passed, None).is_none(),
                    "{encoding} at offset {offset}: a complete form was passed on"
                );
            }
        }
        // The control: the same bytes without the secret pass whole.
        let data = vec![b'x'; 3 * CHUNK + 17];
        let chunks: Vec<Vec<u8>> = data.chunks(CHUNK).map(<[u8]>::to_vec).collect();
        assert_eq!(guarded(&set, chunks), (data, false));
    }

    #[test]
    fn mask_overwrites_in_place_and_hold_back_keeps_only_a_possible_start() {
        let set = set();
        let mut data = format!("{{\"token\":\"{TOKEN}\"}}").into_bytes();
        assert_eq!(set.mask(&mut data), 1);
        assert_eq!(
            String::from_utf8(data).unwrap(),
            format!("{{\"token\":\"{}\"}}", "*".repeat(TOKEN.len()))
        );
        assert_eq!(set.hold_back(b"data: {\"x\":1}\n\n"), 0);
        assert_eq!(set.hold_back(b"abc ghp_R3al"), "ghp_R3al".len());
        assert_eq!(
            set.hold_back(&TOKEN.as_bytes()[..TOKEN.len() - 1]),
            TOKEN.len() - 1
        );
    }
}
