//! Checks on single manifest values (names, paths, URLs, keys). Each returns the sentence
//! that follows `FILE:LINE: `KEY`: ` in the error.

pub(crate) fn valid_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn valid_plain_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !s.contains("..")
}

pub(crate) fn valid_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// A path prefix must be an absolute, already-normalised path: the proxy compares it with the
/// normalised request path, so anything that could be read two ways is refused here.
pub(crate) fn check_path_prefix(p: &str) -> Result<(), String> {
    // The prefix may come from an agent's proposal: quote it with control characters escaped,
    // so a message never writes a raw NUL or terminal escape to the operator's screen.
    let shown = escape_controls(p, Layout::Line);
    if !p.starts_with('/') {
        return Err(format!("`{shown}` must start with `/`"));
    }
    // `shown != p`: a bidi override or zero-width mark would make the prefix read as
    // another one in the plan and the dashboard.
    if p.contains(['?', '#', '\\']) || p.chars().any(char::is_whitespace) || shown != p {
        return Err(format!(
            "`{shown}` must be a plain path prefix: no query, fragment, backslash, whitespace, control or invisible formatting character"
        ));
    }
    // A `;` parameter does not stop a dot segment: some servers read `..;` as `..`.
    let is_dot = |seg: &str| matches!(seg.split(';').next(), Some(".." | "."));
    if p.split('/').any(is_dot) {
        return Err(format!("`{shown}` contains a `.` or `..` segment"));
    }
    if p.contains('%') {
        return Err(format!(
            "`{shown}` contains `%`: write the decoded path, the proxy compares decoded paths"
        ));
    }
    Ok(())
}

/// What [`escape_controls`] leaves as it is: nothing, or the line breaks and tabs of a
/// multi-line text (a Dockerfile, an error carrying a build log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One line: `\n` and `\t` are escaped too, so a field cannot fake the lines after it.
    Line,
    /// Several lines: `\n` and `\t` stay.
    Block,
}

/// `text` with control and invisible formatting characters written as `\u{..}` escapes, for
/// showing untrusted text (an agent's proposal, an error quoting it, a build log) to the
/// operator: C0 (except `\n` and `\t` in a [`Layout::Block`]), DEL and C1, so no escape
/// sequence (ESC, CSI, OSC 52 clipboard writes) or carriage return reaches the terminal, and
/// the bidi overrides, zero-width and other format characters that make text read differently
/// from what it is. The one sanitiser for everything the launcher prints on an agent's behalf.
pub(crate) fn escape_controls(text: &str, layout: Layout) -> String {
    let kept = |c: char| layout == Layout::Block && matches!(c, '\n' | '\t');
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if (c.is_control() || is_invisible_format(c)) && !kept(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Unicode format characters (category Cf) and the line/paragraph separators: they draw
/// nothing, or reorder or hide the text around them.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{ad}'
        | '\u{600}'..='\u{605}'
        | '\u{61c}'
        | '\u{6dd}'
        | '\u{70f}'
        | '\u{890}'..='\u{891}'
        | '\u{8e2}'
        | '\u{180e}'
        | '\u{200b}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206f}'
        | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}'
        | '\u{e0000}'..='\u{e007f}')
}

pub(super) fn check_ssh_url(u: &str) -> Result<(), String> {
    let Some(rest) = u.strip_prefix("ssh://") else {
        return Err(format!(
            "`{u}` is not an ssh:// URL; write it as ssh://user@host[:port]/path.git (the gate pushes over SSH)"
        ));
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        Some(_) => return Err(format!("`{u}` has an invalid port")),
        None => host_port,
    };
    if host.is_empty() || path.is_empty() {
        return Err(format!(
            "`{u}` needs a host and a repository path: ssh://user@host[:port]/path.git"
        ));
    }
    Ok(())
}

pub(super) fn check_host_key(k: &str) -> Result<(), String> {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
        "sk-ssh-ed25519@openssh.com",
    ];
    let mut parts = k.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err("expected `<type> <base64 key>`, e.g. the second and third field of a known_hosts line (`ssh-keyscan HOST`)".into());
    };
    if !TYPES.contains(&kind) {
        return Err(format!(
            "unknown host key type `{kind}`; expected one of {}",
            TYPES.join(", ")
        ));
    }
    if blob.len() < 16
        || !blob
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
    {
        return Err("the key part is not base64".into());
    }
    Ok(())
}

/// A CIDR block (`10.0.0.0/8`, `fd00::/8`) with no host bits set.
pub(super) fn check_cidr(text: &str) -> Result<(), String> {
    let hint = "write an address block such as 10.20.0.0/16 or fd00::/8";
    let Some((addr, len)) = text.split_once('/') else {
        return Err(format!("`{text}` is not a CIDR block; {hint}"));
    };
    let addr: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("`{text}`: `{addr}` is not an IP address; {hint}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u32 = len
        .parse()
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?;
    // Both families as the top bits of a u128, so the prefix is always its top `len` bits.
    let bits: u128 = match addr {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        std::net::IpAddr::V6(a) => u128::from(a),
    };
    let host_bits = if len >= 128 {
        0
    } else {
        bits & (u128::MAX >> len)
    };
    if host_bits != 0 {
        return Err(format!(
            "`{text}` has host bits set; write the block's first address (e.g. 10.20.0.0/16)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_controls_neutralises_terminal_and_bidi_tricks() {
        let hostile =
            "a\u{1b}[2Kb\u{1b}]52;c;aGk=\u{7}c\rd\u{7f}e\u{9b}f\u{202e}g\u{200b}h\u{e0041}i";
        let line = escape_controls(hostile, Layout::Line);
        assert_eq!(
            line,
            r"a\u{1b}[2Kb\u{1b}]52;c;aGk=\u{7}c\u{d}d\u{7f}e\u{9b}f\u{202e}g\u{200b}h\u{e0041}i"
        );
        assert!(line.chars().all(|c| !c.is_control()), "{line}");
        // A line cannot fake the lines after it; a block keeps its lines and tabs.
        assert_eq!(escape_controls("a\n\tb", Layout::Line), r"a\u{a}\u{9}b");
        assert_eq!(
            escape_controls("a\n\tb\r\n", Layout::Block),
            "a\n\tb\\u{d}\n"
        );
        // Ordinary text, including non-ASCII letters, is left alone.
        let plain = "RUN apt-get install -y jq && echo \"é ü 漢字\" \\";
        assert_eq!(escape_controls(plain, Layout::Line), plain);
    }
}
