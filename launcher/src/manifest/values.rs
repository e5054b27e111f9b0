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
    let shown = escape_controls(p);
    if !p.starts_with('/') {
        return Err(format!("`{shown}` must start with `/`"));
    }
    if p.contains(['?', '#', '\\']) || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{shown}` must be a plain path prefix: no query, fragment, backslash, whitespace or control character"
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

/// `text` with control and invisible formatting characters (bidi overrides, zero-width
/// marks) written as `\u{..}` escapes, for quoting untrusted text in a message.
pub(crate) fn escape_controls(text: &str) -> String {
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    text.chars()
        .map(|c| match invisible(c) {
            true => c.escape_unicode().to_string(),
            false => c.to_string(),
        })
        .collect()
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
