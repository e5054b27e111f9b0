//! Checks on single manifest values (names, paths, URLs, keys). Each returns the sentence
//! that follows `FILE:LINE: `KEY`: ` in the error.

pub(crate) use bottle_contract::text::{Layout, escape_controls};

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

/// `text` without terminal escape sequences: CSI (`ESC [ … final`, colours and cursor
/// moves), OSC (`ESC ] … BEL` or `ESC \\`), and two-character `ESC x` sequences. For output
/// that is read, not rendered, such as a build log: colour codes would only show up as
/// escaped noise. Other control characters stay for [`escape_controls`] to show.
pub(crate) fn strip_terminal_sequences(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameter and intermediate bytes, then one final byte in @..~.
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC, DCS, SOS, PM, APC: up to BEL or the string terminator ESC \.
            Some(']' | 'P' | 'X' | '^' | '_') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            // A two-character sequence (`ESC c`, `ESC =`, ...), or a lone ESC at the end.
            Some(_) | None => {}
        }
    }
    out
}

pub(super) fn check_ssh_url(u: &str) -> Result<(), String> {
    ssh_host_port(u).map(|_| ())
}

/// The host and port (22 if none is written) of an `ssh://user@host[:port]/path` URL.
fn ssh_host_port(u: &str) -> Result<(&str, u16), String> {
    let Some(rest) = u.strip_prefix("ssh://") else {
        return Err(format!(
            "`{u}` is not an ssh:// URL; write it as ssh://user@host[:port]/path.git (the gate pushes over SSH)"
        ));
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, port)) => match port.parse::<u16>() {
            Ok(port) => (h, port),
            Err(_) => return Err(format!("`{u}` has an invalid port")),
        },
        None => (host_port, 22),
    };
    if host.is_empty() || path.is_empty() {
        return Err(format!(
            "`{u}` needs a host and a repository path: ssh://user@host[:port]/path.git"
        ));
    }
    Ok((host, port))
}

/// The command that prints the key to pin as `KnownHostKey` for upstream URL `u`.
pub(crate) fn keyscan_command(u: &str) -> String {
    match ssh_host_port(u) {
        Ok((host, 22)) => format!("ssh-keyscan -t ed25519 {host}"),
        Ok((host, port)) => format!("ssh-keyscan -p {port} -t ed25519 {host}"),
        Err(_) => "ssh-keyscan -t ed25519 HOST".to_owned(),
    }
}

pub(super) fn check_host_key(k: &str) -> Result<(), String> {
    const TYPES: [&str; 5] = bottle_contract::wire::SSH_HOST_KEY_TYPES;
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

/// The widest `allow_private` block per family. IPv4: /8, the size of 10.0.0.0/8, the widest
/// private range; a wider block must take in public or special space. IPv6: /16; a site's
/// private (ULA) space is a /48 (RFC 4193), so a /16 already spans any number of sites, and a
/// wider block would take in the special ranges below. `allow_private` applies to every route,
/// the built-in ones too, so a too-wide block quietly turns the SSRF check off.
const MIN_PREFIX_V4: u32 = 8;
const MIN_PREFIX_V6: u32 = 16;

/// Blocks `allow_private` must not touch: each one reaches the host itself, a cloud metadata
/// service, or carries an IPv4 address the bundle judges by (so it would re-allow loopback).
const SPECIAL_V4: &[(&str, u32, &str)] = &[
    (
        "0.0.0.0",
        8,
        "0.0.0.0/8 (0.0.0.0 reaches the host's own services)",
    ),
    ("127.0.0.0", 8, "loopback 127.0.0.0/8"),
    (
        "169.254.0.0",
        16,
        "link-local 169.254.0.0/16, where cloud metadata services answer (169.254.169.254)",
    ),
    ("224.0.0.0", 3, "multicast and reserved space 224.0.0.0/3"),
];
const SPECIAL_V6: &[(&str, u32, &str)] = &[
    (
        "64:ff9b::",
        96,
        "NAT64 64:ff9b::/96, which carries IPv4 addresses",
    ),
    (
        "64:ff9b:1::",
        48,
        "local NAT64 64:ff9b:1::/48, which carries IPv4 addresses",
    ),
    // After NAT64, which lies inside it, so that a NAT64 block is named as such.
    (
        "::",
        8,
        "::/8 (loopback ::1, and IPv4-mapped and -compatible addresses)",
    ),
    ("2002::", 16, "6to4 2002::/16, which carries IPv4 addresses"),
    ("fe80::", 10, "link-local fe80::/10"),
    (
        "fd00:ec2::254",
        128,
        "the cloud metadata address fd00:ec2::254",
    ),
    ("ff00::", 8, "multicast ff00::/8"),
];

/// An `allow_private` CIDR block (`10.20.0.0/16`, `fd12:3456:789a::/48`): no host bits set, no
/// wider than [`MIN_PREFIX_V4`]/[`MIN_PREFIX_V6`], and clear of the special blocks.
/// Whether CIDR block `block` (already checked by [`check_cidr`]) contains `addr`.
pub(crate) fn cidr_contains(block: &str, addr: std::net::IpAddr) -> bool {
    let Some((net, len)) = block.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<std::net::IpAddr>(), len.parse::<u32>()) else {
        return false;
    };
    net.is_ipv4() == addr.is_ipv4() && overlaps(top_bits(net), len, top_bits(addr), 128)
}

pub(super) fn check_cidr(text: &str) -> Result<(), String> {
    let hint = "write an address block such as 10.20.0.0/16 or fd12:3456:789a::/48";
    let fix = "list only the blocks your internal hosts use, e.g. 10.20.0.0/16";
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
    let bits = top_bits(addr);
    if bits & !prefix_mask(len) != 0 {
        return Err(format!(
            "`{text}` has host bits set; write the block's first address (e.g. 10.20.0.0/16)"
        ));
    }
    let (min, special) = match addr {
        std::net::IpAddr::V4(_) => (MIN_PREFIX_V4, SPECIAL_V4),
        std::net::IpAddr::V6(_) => (MIN_PREFIX_V6, SPECIAL_V6),
    };
    if len < min {
        return Err(format!(
            "`{text}` is wider than /{min}: it would let the bundle dial private and special addresses for every route, the built-in ones too; {fix}"
        ));
    }
    for (net, net_len, what) in special {
        let Ok(net) = net.parse::<std::net::IpAddr>() else {
            continue;
        };
        if overlaps(bits, len, top_bits(net), *net_len) {
            return Err(format!(
                "`{text}` takes in {what}, which the bundle never dials; {fix}"
            ));
        }
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

/// The gate's push limit when a remote sets no `MaxPushMB`.
pub(crate) const DEFAULT_MAX_PUSH_MB: u64 = 100;
/// The largest `MaxPushMB`: the bundle's memory limit (512 MiB) must hold receive-pack, the
/// scan and the forward of a push this large.
pub(crate) const MAX_MAX_PUSH_MB: u64 = 2048;

/// `git[].MaxPushMB`: a whole number of MiB, 1 to [`MAX_MAX_PUSH_MB`].
pub(super) fn check_max_push_mb(n: i64) -> Result<u64, String> {
    match u64::try_from(n) {
        Ok(mb @ 1..=MAX_MAX_PUSH_MB) => Ok(mb),
        _ => Err(format!(
            "{n} is out of range: a whole number of MiB from 1 to {MAX_MAX_PUSH_MB} (default {DEFAULT_MAX_PUSH_MB})"
        )),
    }
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

/// Both families as the top bits of a u128, so a prefix is always its top `len` bits.
fn top_bits(addr: std::net::IpAddr) -> u128 {
    match addr {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        std::net::IpAddr::V6(a) => u128::from(a),
    }
}

/// The top `len` bits set.
fn prefix_mask(len: u32) -> u128 {
    u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0)
}

/// Whether two blocks of the same family share an address: one contains the other, so they
/// agree on the shorter prefix.
fn overlaps(a: u128, a_len: u32, b: u128, b_len: u32) -> bool {
    (a ^ b) & prefix_mask(a_len.min(b_len)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_sequences_are_stripped_and_the_text_kept() {
        let log = "\u{1b}[1m\u{1b}[31merror:\u{1b}[0m npm ERR! \u{1b}]0;title\u{7}code \u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\ E404\u{1b}=\u{1b}";
        assert_eq!(
            strip_terminal_sequences(log),
            "error: npm ERR! code link E404"
        );
        // Other controls stay, for escape_controls to show.
        assert_eq!(strip_terminal_sequences("a\rb\u{7}"), "a\rb\u{7}");
        assert_eq!(
            strip_terminal_sequences("plain [text] ok"),
            "plain [text] ok"
        );
    }

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

    #[test]
    fn allow_private_refuses_wide_and_special_blocks() {
        for ok in [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "10.20.0.0/16",
            "10.1.2.3/32",
            "fd12:3456:789a::/48",
            "fd00:1::/32",
        ] {
            assert_eq!(check_cidr(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("0.0.0.0/0", "wider than /8"),
            ("::/0", "wider than /16"),
            ("8.0.0.0/7", "wider than /8"),
            ("fd00::/8", "wider than /16"),
            ("127.0.0.0/8", "loopback 127.0.0.0/8"),
            ("127.0.0.1/32", "loopback"),
            ("0.0.0.0/8", "reaches the host's own services"),
            ("169.254.169.254/32", "169.254.169.254"),
            ("169.254.0.0/16", "metadata"),
            ("224.0.0.0/8", "multicast"),
            ("::1/128", "loopback ::1"),
            ("::ffff:0:0/96", "IPv4-mapped"),
            ("64:ff9b::/96", "NAT64"),
            ("2002:a00::/24", "6to4"),
            ("fe80::/64", "link-local fe80::/10"),
            ("fd00:ec2::/32", "fd00:ec2::254"),
            ("ff02::/16", "multicast"),
        ] {
            let err = check_cidr(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(
                err.contains("list only the blocks your internal hosts use"),
                "{bad}: {err}"
            );
        }
        assert!(check_cidr("10.0.0.1/8").unwrap_err().contains("host bits"));
        assert!(check_cidr("::/129").unwrap_err().contains("0 to 128"));
    }
}
