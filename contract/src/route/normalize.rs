//! The one path normaliser: how the proxy reads a request path, and what a path prefix must
//! already be. Pure, no IO.

/// What [`normalize_path`] refuses, for messages that explain a refusal.
pub const AMBIGUOUS_FORMS: &str = "encoded `/`, `\\`, NUL, a double-encoded `.`, `/`, `\\`, `;` or `%`, invalid UTF-8 \
     (such as an overlong `%C0%AE`), a `.` or `..` segment with `;` parameters, or a `..` \
     above the root";

/// The path is ambiguous and is refused rather than guessed at.
#[derive(Debug, PartialEq, Eq)]
pub struct Ambiguous;

/// Normalizes an origin-form path the way the upstream will read it: decodes percent-encoded
/// unreserved bytes, upper-cases other escapes (raw non-ASCII becomes escapes), removes dot
/// segments (RFC 3986 §5.2.4), and refuses what an upstream could still read another way
/// (see [`AMBIGUOUS_FORMS`]), and a path not starting with `/`.
pub fn normalize_path(raw: &str) -> Result<String, Ambiguous> {
    if !raw.starts_with('/') {
        return Err(Ambiguous);
    }
    let canonical = canonical_escapes(raw)?;
    refuse_double_encoding(&canonical)?;
    remove_dot_segments(&canonical)
}

/// One round of percent-decoding, keeping what must stay encoded as upper-case escapes.
/// Refuses encoded separators and NUL, and a decoded byte string that is not UTF-8: some
/// decoders read an overlong `%C0%AE` as `.`.
fn canonical_escapes(raw: &str) -> Result<String, Ambiguous> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let value = hex_pair(bytes.get(i + 1..i + 3)).ok_or(Ambiguous)?;
            decoded.push(value);
            match value {
                b'/' | b'\\' | 0 => return Err(Ambiguous),
                v if is_unreserved(v) => out.push(char::from(v)),
                v => push_escape(&mut out, v),
            }
            i += 3;
            continue;
        }
        if b == b'\\' || b.is_ascii_control() || matches!(b, b' ' | b'#' | b'?') {
            return Err(Ambiguous);
        }
        decoded.push(b);
        match b.is_ascii() {
            true => out.push(char::from(b)),
            // Raw UTF-8 is sent in its escaped form, so the judged and the sent path agree.
            false => push_escape(&mut out, b),
        }
        i += 1;
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err(Ambiguous);
    }
    Ok(out)
}

/// Refuses `%25` escapes (an encoded `%`) whose following hex pair would decode to something
/// that changes the path's structure for an upstream that decodes twice: `%252e%252e` is
/// `..` there. Double-encoded letters, digits and the like stay (they can only fail a prefix).
fn refuse_double_encoding(canonical: &str) -> Result<(), Ambiguous> {
    let bytes = canonical.as_bytes();
    for (i, window) in bytes.windows(3).enumerate() {
        if window != b"%25" {
            continue;
        }
        let Some(value) = hex_pair(bytes.get(i + 3..i + 5)) else {
            continue;
        };
        let structural = matches!(value, b'.' | b'/' | b'\\' | b';' | b'%' | b'?' | b'#');
        if structural || !(0x20..0x7f).contains(&value) {
            return Err(Ambiguous);
        }
    }
    Ok(())
}

/// Dot-segment removal on `/`-separated segments; a `..` at the root is refused, and so is a
/// dot segment carrying `;` parameters (`..;`), which servers such as Tomcat read as `..`.
fn remove_dot_segments(canonical: &str) -> Result<String, Ambiguous> {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = canonical[1..].split('/').collect();
    let last = segments.len() - 1;
    for (n, seg) in segments.iter().enumerate() {
        let head = without_params(seg);
        if head != *seg && (head == "." || head == "..") {
            return Err(Ambiguous);
        }
        match *seg {
            "." => {
                if n == last {
                    out.push("");
                }
            }
            ".." => {
                if out.pop().is_none() {
                    return Err(Ambiguous);
                }
                if n == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    Ok(format!("/{}", out.join("/")))
}

/// A segment without its `;` parameters (a literal `;` or an encoded `%3B`).
fn without_params(seg: &str) -> &str {
    let cut = [seg.find(';'), seg.find("%3B")].into_iter().flatten().min();
    cut.map_or(seg, |at| &seg[..at])
}

fn hex_pair(hex: Option<&[u8]>) -> Option<u8> {
    let text = std::str::from_utf8(hex?).ok()?;
    u8::from_str_radix(text, 16).ok()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn push_escape(out: &mut String, b: u8) {
    use std::fmt::Write as _;
    let _ = write!(out, "%{b:02X}");
}
