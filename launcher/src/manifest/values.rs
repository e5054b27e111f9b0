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

/// The forms `limits.memory` accepts, for messages.
pub(super) const MEMORY_FORMS: &str =
    "a size: a whole number with k, m or g (KiB, MiB, GiB), e.g. 512m or 4g";
/// The forms `limits.pids` accepts, for messages.
pub(super) const PIDS_FORMS: &str = "a whole number of processes, e.g. 1024";
/// The forms `limits.cpus` accepts, for messages.
pub(super) const CPUS_FORMS: &str = "a number of CPUs, whole or decimal, e.g. 2 or 0.5";

/// Below this the agent's own provisioning (CA trust, the relay) cannot run.
pub(crate) const MIN_MEMORY_BYTES: u64 = 64 << 20;
/// Fewer processes than this leave no room for the wrapper, the relay's threads and an exec.
pub(crate) const MIN_PIDS: i64 = 32;
/// Linux's own ceiling on process ids (`PID_MAX_LIMIT` on 64-bit).
const MAX_PIDS: i64 = 4_194_304;
/// A tenth of a CPU is the least an agent can usefully run with.
const MIN_NANO_CPUS: i64 = 100_000_000;
/// Larger than any engine's CPU count; the plan lowers a value to what the engine has.
const MAX_CPUS: f64 = 1024.0;

/// `limits.memory` (`512m`, `4G`) -> bytes. Units are binary, as Docker reads them.
pub(super) fn parse_memory(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, shift) = match lower.char_indices().last() {
        Some((i, 'k')) => (&lower[..i], 10),
        Some((i, 'm')) => (&lower[..i], 20),
        Some((i, 'g')) => (&lower[..i], 30),
        _ => return Err(format!("`{text}` is not a size; expected {MEMORY_FORMS}")),
    };
    let number: u64 = digits
        .parse()
        .ok()
        .filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("`{text}` is not a size; expected {MEMORY_FORMS}"))?;
    let bytes = number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if bytes < MIN_MEMORY_BYTES {
        return Err(format!(
            "`{text}` is too little: at least 64m (the agent's provisioning and relay need it)"
        ));
    }
    Ok(bytes)
}

/// `limits.pids`, checked against what an agent needs and what Linux allows.
pub(super) fn check_pids(n: i64) -> Result<i64, String> {
    if n < MIN_PIDS {
        return Err(format!(
            "{n} is too few: at least {MIN_PIDS} (the agent's command, the relay's threads and each exec count); expected {PIDS_FORMS}"
        ));
    }
    if n > MAX_PIDS {
        return Err(format!(
            "{n} is more than Linux allows ({MAX_PIDS}); expected {PIDS_FORMS}"
        ));
    }
    Ok(n)
}

/// `limits.cpus` -> billionths of a CPU.
pub(super) fn parse_cpus(cpus: f64) -> Result<i64, String> {
    if !cpus.is_finite() || cpus > MAX_CPUS {
        return Err(format!("{cpus} is not a CPU count; expected {CPUS_FORMS}"));
    }
    // Finite and at most MAX_CPUS, so the product fits an i64.
    let nano = (cpus * 1e9).round() as i64;
    if nano < MIN_NANO_CPUS {
        return Err(format!(
            "{cpus} is too little: at least 0.1; expected {CPUS_FORMS}"
        ));
    }
    Ok(nano)
}
