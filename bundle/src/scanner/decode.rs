//! Decoding passes: find base64 / hex / percent-encoded runs in a text, replace each that
//! decodes to printable text, and remember where every byte of the new text came from in the
//! original fragment. Pure (no IO).

use std::borrow::Cow;
use std::sync::LazyLock;

use base64::Engine as _;
use regex::bytes::Regex;

/// Shortest base64 run worth decoding (gitleaks: 16).
const MIN_BASE64: usize = 16;
/// Shortest hex run worth decoding (gitleaks: 32).
const MIN_HEX: usize = 32;

/// Candidate encoded runs. A `static` because it is a constant of the format, not config.
static CANDIDATES: LazyLock<Option<Regex>> = LazyLock::new(|| {
    regex::bytes::RegexBuilder::new(
        r"(?:[A-Za-z0-9._~+-]*%[0-9A-Fa-f]{2})+[A-Za-z0-9._~+-]*|[A-Za-z0-9+/_-]{16,}={0,2}",
    )
    .unicode(false)
    .build()
    .ok()
});

/// A contiguous piece of a (possibly decoded) text and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    /// Range in this text.
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Range in the original fragment. For an undecoded piece the mapping is linear.
    pub(crate) orig_start: usize,
    pub(crate) orig_end: usize,
    /// The pass that produced it (`None` for original bytes).
    pub(crate) depth: Option<usize>,
    /// Encodings peeled off to get here, outermost first (`base64`, `hex`, `percent`).
    pub(crate) kinds: Vec<&'static str>,
}

/// A text with its provenance. The original layer borrows the fragment (no copy per scan).
#[derive(Debug, Clone)]
pub(crate) struct Layer<'a> {
    pub(crate) text: Cow<'a, [u8]>,
    pub(crate) pieces: Vec<Piece>,
}

impl<'a> Layer<'a> {
    pub(crate) fn original(text: &'a [u8]) -> Layer<'a> {
        Layer {
            text: Cow::Borrowed(text),
            pieces: vec![Piece {
                start: 0,
                end: text.len(),
                orig_start: 0,
                orig_end: text.len(),
                depth: None,
                kinds: vec![],
            }],
        }
    }

    /// Maps `[start, end)` in this text to a range in the original fragment.
    pub(crate) fn to_original(&self, start: usize, end: usize) -> (usize, usize) {
        let (a, _) = self.map_pos(start);
        let (_, b) = self.map_pos(end.saturating_sub(1).max(start));
        (a, b.max(a))
    }

    /// The pieces of `depth` that `[start, end)` overlaps.
    pub(crate) fn overlapping(&self, start: usize, end: usize, depth: usize) -> Vec<&Piece> {
        self.pieces
            .iter()
            .filter(|p| p.depth == Some(depth) && p.start < end && start < p.end)
            .collect()
    }

    fn map_pos(&self, pos: usize) -> (usize, usize) {
        let idx = self.pieces.partition_point(|p| p.end <= pos);
        match self.pieces.get(idx) {
            Some(p) if p.depth.is_none() => {
                let o = p.orig_start + (pos - p.start);
                (o, o + 1)
            }
            Some(p) => (p.orig_start, p.orig_end),
            None => {
                let end = self.pieces.last().map_or(0, |p| p.orig_end);
                (end, end)
            }
        }
    }
}

/// One decoding pass over `layer`. Returns `None` when nothing decoded to printable text.
pub(crate) fn decode_pass(layer: &Layer<'_>, depth: usize) -> Option<Layer<'static>> {
    if !may_decode(&layer.text) {
        return None;
    }
    let re = CANDIDATES.as_ref()?;
    let mut text = Vec::with_capacity(layer.text.len());
    let mut pieces = Vec::new();
    let mut copied = 0;
    for m in re.find_iter(&layer.text) {
        let Some((kind, decoded)) = decode(m.as_bytes()) else {
            continue;
        };
        copy_range(layer, copied, m.start(), &mut text, &mut pieces);
        let (orig_start, orig_end) = layer.to_original(m.start(), m.end());
        let mut kinds: Vec<&'static str> = layer
            .pieces
            .iter()
            .filter(|p| p.depth.is_some() && p.start < m.end() && m.start() < p.end)
            .flat_map(|p| p.kinds.iter().copied())
            .collect();
        kinds.push(kind);
        let start = text.len();
        text.extend_from_slice(&decoded);
        pieces.push(Piece {
            start,
            end: text.len(),
            orig_start,
            orig_end,
            depth: Some(depth),
            kinds,
        });
        copied = m.end();
    }
    if copied == 0 {
        return None;
    }
    copy_range(layer, copied, layer.text.len(), &mut text, &mut pieces);
    Some(Layer {
        text: Cow::Owned(text),
        pieces,
    })
}

/// Whether `text` has a run that [`decode`] could accept: a `%`, a run of base64 characters
/// (with up to two `=`) of at least [`MIN_BASE64`] mixing upper and lower case, or a hex run
/// of at least [`MIN_HEX`]. Without one a pass decodes nothing, and this byte loop is several
/// times cheaper than the candidate regex, which most hunks would otherwise go through.
fn may_decode(text: &[u8]) -> bool {
    if memchr::memchr(b'%', text).is_some() {
        return true;
    }
    // This runs over every fragment scanned, so it looks at as few bytes as it can. A run
    // worth a look is at least `SHORTEST` long (the candidate regex wants 16 base64
    // characters before any `=`; hex runs are longer), so it covers one of any `SHORTEST`
    // positions in a row: probe every `SHORTEST`th byte, and read a run only where a probe
    // lands in one.
    const SHORTEST: usize = MIN_BASE64;
    let is_b64 = |c: u8| CLASS[usize::from(c)] & BASE64 != 0;
    let mut read_to = 0; // text[..read_to] is done with
    let mut probe = SHORTEST - 1;
    while probe < text.len() {
        if !is_b64(text[probe]) {
            probe += SHORTEST;
            continue;
        }
        let start = text[read_to..probe]
            .iter()
            .rposition(|&c| !is_b64(c))
            .map_or(read_to, |at| read_to + at + 1);
        let end = text[probe..]
            .iter()
            .position(|&c| !is_b64(c))
            .map_or(text.len(), |at| probe + at);
        let run = &text[start..end];
        if run.len() >= SHORTEST {
            let (mut any, mut all) = (0u8, u8::MAX);
            for &c in run {
                any |= CLASS[usize::from(c)];
                all &= CLASS[usize::from(c)];
            }
            let pad = text[end..]
                .iter()
                .take(2)
                .take_while(|&&b| b == b'=')
                .count();
            if (run.len() + pad >= MIN_BASE64 && any & (UPPER | LOWER) == UPPER | LOWER)
                || (run.len() >= MIN_HEX && all & HEX != 0)
            {
                return true;
            }
        }
        read_to = end;
        probe = end + SHORTEST;
    }
    false
}

/// Byte classes for [`may_decode`].
const BASE64: u8 = 1;
const UPPER: u8 = 2;
const LOWER: u8 = 4;
const HEX: u8 = 8;

static CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8; // i < 256: exact
        let mut class = 0;
        if c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'_' | b'-') {
            class |= BASE64;
        }
        if c.is_ascii_uppercase() {
            class |= UPPER;
        }
        if c.is_ascii_lowercase() {
            class |= LOWER;
        }
        if c.is_ascii_hexdigit() {
            class |= HEX;
        }
        table[i] = class;
        i += 1;
    }
    table
};

/// Copies `layer.text[from..to]` to `out`, clipping and shifting the pieces it spans.
fn copy_range(
    layer: &Layer<'_>,
    from: usize,
    to: usize,
    out: &mut Vec<u8>,
    pieces: &mut Vec<Piece>,
) {
    if from >= to {
        return;
    }
    let shift_base = out.len();
    out.extend_from_slice(&layer.text[from..to]);
    for p in layer.pieces.iter().filter(|p| p.start < to && from < p.end) {
        let start = p.start.max(from);
        let end = p.end.min(to);
        let (orig_start, orig_end) = match p.depth {
            None => (
                p.orig_start + (start - p.start),
                p.orig_start + (end - p.start),
            ),
            Some(_) => (p.orig_start, p.orig_end),
        };
        pieces.push(Piece {
            start: shift_base + (start - from),
            end: shift_base + (end - from),
            orig_start,
            orig_end,
            depth: p.depth,
            kinds: p.kinds.clone(),
        });
    }
}

/// Decodes one candidate run, if it is a known encoding of printable text.
fn decode(run: &[u8]) -> Option<(&'static str, Vec<u8>)> {
    let (kind, decoded) = if run.contains(&b'%') {
        (
            "percent",
            percent_encoding::percent_decode(run).collect::<Vec<u8>>(),
        )
    } else if run.len() >= MIN_HEX
        && run.len().is_multiple_of(2)
        && run.iter().all(u8::is_ascii_hexdigit)
    {
        ("hex", decode_hex(run)?)
    } else if run.len() >= MIN_BASE64
        && run.iter().any(u8::is_ascii_uppercase)
        && run.iter().any(u8::is_ascii_lowercase)
    {
        // Base64 of text always mixes cases; one-case runs are identifiers (`snake_case_names`)
        // and would only decode to noise.
        ("base64", decode_base64(run)?)
    } else {
        return None;
    };
    let printable = !decoded.is_empty()
        && decoded
            .iter()
            .all(|&b| b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b));
    match printable && decoded != run {
        true => Some((kind, decoded)),
        false => None,
    }
}

fn decode_hex(run: &[u8]) -> Option<Vec<u8>> {
    fn nibble(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    run.chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

fn decode_base64(run: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let trimmed: Vec<u8> = run.iter().copied().filter(|&b| b != b'=').collect();
    let url = trimmed.iter().any(|&b| b == b'-' || b == b'_');
    let engine = match url {
        true => &URL_SAFE_NO_PAD,
        false => &STANDARD_NO_PAD,
    };
    engine.decode(&trimmed).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// The pre-check never hides a run the full pass would decode.
    #[test]
    fn precheck_admits_everything_a_pass_decodes() {
        let hex: String = "secret text here, long enough"
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        let samples = [
            format!("x = \"{}\"\n", b64("password = hunter2hunter2")),
            format!("k={}", b64("abcdefghijkl")),
            format!("{}==", &b64("hello there you")[..14]),
            format!("id: {hex}\n"),
            "url?q=a%20b%3Dc".to_owned(),
            "snake_case_identifier_names and CONSTANT_NAMES_TOO".to_owned(),
            "short Mixed Words only".to_owned(),
            "deadbeefdeadbeefdeadbeefdeadbee".to_owned(),
            String::new(),
        ];
        for text in &samples {
            let decoded = decode_pass(&Layer::original(text.as_bytes()), 1).is_some();
            let re_decoded = {
                // The pass without the pre-check, as it ran before.
                let layer = Layer::original(text.as_bytes());
                CANDIDATES
                    .as_ref()
                    .unwrap()
                    .find_iter(&layer.text)
                    .any(|m| decode(m.as_bytes()).is_some())
            };
            assert_eq!(decoded, re_decoded, "{text:?}");
            if re_decoded {
                assert!(may_decode(text.as_bytes()), "{text:?}");
            }
        }
        assert!(!may_decode(
            b"snake_case_identifier_names and CONSTANT_NAMES_TOO"
        ));
        assert!(!may_decode(b"short Mixed Words only"));
    }

    /// The same property over many generated texts: whatever a pass would decode, the
    /// pre-check lets through.
    #[test]
    fn precheck_never_hides_a_decodable_run() {
        // Half the texts have no `%` (which alone makes the pre-check say yes).
        let alphabets: [&[u8]; 2] = [b"aAzZ09fF+/_-= =\n.%3D\"", b"aAzZ09fFbcBC+/_-= =\n.\""];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // Runs right at the length limits: 14 characters and `==`, 15 and `=`, 16; 32 hex.
        let words = [
            b64("hello ther"),
            b64("hello there"),
            b64("hello there!"),
            "68656c6c6f207468657265212121212e".to_owned(),
            b64("hello there you"),
            b64("password = hunter2"),
            "68696464656e2074657874206865726521".to_owned(),
            "ab%20cd".to_owned(),
        ];
        for _ in 0..20_000 {
            let len = (next() % 60) as usize;
            let alphabet = alphabets[(next() % 2) as usize];
            let mut text: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if next() % 4 == 0 {
                let w = &words[(next() % words.len() as u64) as usize];
                let at = (next() % (text.len() as u64 + 1)) as usize;
                text.splice(at..at, w.bytes());
            }
            let decodes = CANDIDATES
                .as_ref()
                .unwrap()
                .find_iter(&text)
                .any(|m| decode(m.as_bytes()).is_some());
            if decodes {
                assert!(may_decode(&text), "{:?}", String::from_utf8_lossy(&text));
            }
        }
    }

    #[test]
    fn base64_run_is_decoded_and_mapped_back() {
        let inner = "password = hunter2hunter2";
        let encoded = b64(inner);
        let text = format!("x = \"{encoded}\"\n");
        let layer = Layer::original(text.as_bytes());
        let next = decode_pass(&layer, 1).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&next.text),
            format!("x = \"{inner}\"\n")
        );
        let at = inner.len() / 2 + 5;
        let (a, b) = next.to_original(at, at + 3);
        assert_eq!((a, b), (5, 5 + encoded.len()));
        assert_eq!(next.overlapping(at, at + 1, 1)[0].kinds, vec!["base64"]);
        assert!(next.overlapping(0, 2, 1).is_empty());
    }

    #[test]
    fn hex_and_percent_runs_decode() {
        let hex: String = "token_abcdefghijklmnop"
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        let layer = Layer::original(hex.as_bytes());
        let next = decode_pass(&layer, 1).unwrap();
        assert_eq!(&next.text[..], b"token_abcdefghijklmnop");
        assert_eq!(next.pieces[0].kinds, vec!["hex"]);

        let layer = Layer::original(b"q=a%3Db%26c%3Dd end");
        let next = decode_pass(&layer, 1).unwrap();
        assert_eq!(&next.text[..], b"q=a=b&c=d end");
    }

    #[test]
    fn binary_results_and_plain_words_are_left_alone() {
        assert!(decode_pass(&Layer::original(b"ThisIsAVeryLongIdentifierName"), 1).is_none());
        assert!(decode_pass(&Layer::original(b"short abc"), 1).is_none());
    }

    #[test]
    fn nested_encodings_map_to_the_outer_run() {
        let encoded = b64(&b64("secret=abcdefgh12345678")); // gitleaks:allow (test fixture)
        let text = format!("v: {encoded}");
        let l1 = decode_pass(&Layer::original(text.as_bytes()), 1).unwrap();
        let l2 = decode_pass(&l1, 2).unwrap();
        assert_eq!(&l2.text[..], b"v: secret=abcdefgh12345678"); // gitleaks:allow
        let p = &l2.overlapping(5, 6, 2)[0];
        assert_eq!(p.kinds, vec!["base64", "base64"]);
        assert_eq!((p.orig_start, p.orig_end), (3, text.len()));
    }
}
