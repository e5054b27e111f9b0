//! Host names that look like they carry a credential.
//!
//! A `*.` wildcard route lets the agent choose one label, and a DNS name is a channel: a token
//! spelled as `AKIA….svc.example.com` leaves in the lookup itself, before any request. The
//! bottle's own secrets are found exactly by [`crate::proxy::dlp::SecretSet::find_in_host`];
//! this module judges the *shape* of the label the agent chose, for credentials the bundle was
//! never told about:
//!
//! - the scanner's built-in rules (the ones the git gate runs), on the label as sent and
//!   upper-cased (host names arrive lower-cased, and key ids such as AWS's are upper case);
//! - a run of 40 or more hex digits (a SHA-1-sized token; 32-hex account ids, as in
//!   `<account>.r2.cloudflarestorage.com`, stay allowed);
//! - a hyphen-free run of 20 or more characters, not all hex, that mixes letters and digits
//!   with a Shannon entropy of at least 3.5 bits per character (random base32/base36 text;
//!   names made of words and short numbers, `ip-10-0-0-1` or `my-app-7f9c8b6d5-xk2lp`, have
//!   no such run).
//!
//! Exact route hosts are the manifest's own choice and are never judged. The check runs before
//! any DNS lookup or connection, on the CONNECT and on every request.

use std::sync::LazyLock;

use crate::proxy::policy::Policy;
use crate::scanner::{Scanner, shannon_entropy};

/// Hex digits in a row that make a label credential-sized.
const HEX_RUN: usize = 40;
/// A mixed letters-and-digits run at least this long is judged by its entropy.
const RANDOM_RUN: usize = 20;
/// Bits per character from which such a run counts as random.
const RANDOM_ENTROPY: f64 = 3.5;

/// The built-in rules, compiled once per process (they never change; `start` forces this so
/// the first request does not pay for it).
static RULES: LazyLock<Option<Scanner>> = LazyLock::new(|| match Scanner::builtin() {
    Ok(scanner) => Some(scanner.with_decode_depth(0)),
    Err(e) => {
        tracing::error!(error = %e, "built-in scanner rules do not load; host labels are judged by shape only");
        None
    }
});

/// Compiles the rules now.
pub(crate) fn prepare() {
    LazyLock::force(&RULES);
}

/// Why a label looks like a credential (never the label itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Suspicion {
    pub(crate) why: String,
}

/// The wildcard-chosen label of `host`, if it looks like a credential.
pub(crate) fn suspicious_host(
    policy: &Policy,
    host: &str,
    port: u16,
    tls: bool,
) -> Option<Suspicion> {
    let route = &policy.routes[policy.route_for(host, port, tls)?];
    if !route.host.is_wildcard() {
        return None;
    }
    // A one-label wildcard: the label is everything before the first dot.
    let label = host.split('.').next()?;
    judge(label)
}

/// The checks above, on one label.
pub(crate) fn judge(label: &str) -> Option<Suspicion> {
    if let Some(rules) = RULES.as_ref() {
        for text in [label.to_owned(), label.to_ascii_uppercase()] {
            if let Some(finding) = rules.scan_text("host", text.as_bytes()).first() {
                return Some(Suspicion {
                    why: format!("matches the secret rule `{}`", finding.rule_id),
                });
            }
        }
    }
    let hex_run = longest_run(label, |b| b.is_ascii_hexdigit());
    if hex_run >= HEX_RUN {
        return Some(Suspicion {
            why: format!("holds {hex_run} hex digits in a row"),
        });
    }
    for run in label.split('-') {
        let letters = run.bytes().any(|b| b.is_ascii_alphabetic());
        let digits = run.bytes().any(|b| b.is_ascii_digit());
        // All-hex runs are judged by their length alone, above.
        let hex = run.bytes().all(|b| b.is_ascii_hexdigit());
        if run.len() >= RANDOM_RUN && letters && digits && !hex {
            let bits = shannon_entropy(run.as_bytes());
            if bits >= RANDOM_ENTROPY {
                return Some(Suspicion {
                    why: format!(
                        "holds a random-looking run of {} characters ({bits:.1} bits each)",
                        run.len()
                    ),
                });
            }
        }
    }
    None
}

/// `host` with its first label starred out, for the audit log.
pub(crate) fn masked(host: &str) -> String {
    match host.split_once('.') {
        Some((label, rest)) => format!("{}.{rest}", "*".repeat(label.len())),
        None => "*".repeat(host.len()),
    }
}

fn longest_run(text: &str, pred: impl Fn(u8) -> bool) -> usize {
    let (mut best, mut now) = (0, 0);
    for b in text.bytes() {
        now = if pred(b) { now + 1 } else { 0 };
        best = best.max(now);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_shaped_labels_are_suspicious() {
        for label in [
            // An AWS key id, lower-cased as host names arrive.
            "akiaqwertyuiopasdfgh",
            "AKIAQWERTYUIOPASDFGH",
            // 40 hex digits (a SHA-1-sized token), also inside a longer label.
            "0123456789abcdef0123456789abcdef01234567",
            "x-0123456789abcdef0123456789abcdef01234567-y",
            // Base32 and base36 chunks, as DNS tunnels send them.
            "mzxw6ytboi4dgnrzgq2tmnzy",
            "k3j9x0q7w2m5z8r1t4v6b0n3",
        ] {
            assert!(judge(label).is_some(), "{label} passed");
        }
        assert!(
            judge("akiaqwertyuiopasdfgh")
                .unwrap()
                .why
                .contains("aws-access-key-id")
        );
    }

    #[test]
    fn ordinary_labels_pass() {
        for label in [
            "api",
            "objects",
            "us-east-1",
            "ec2-54-123-45-67",
            "storage-account-westeurope",
            "my-service-production-eu-west",
            "my-app-7f9c8b6d5-xk2lp",
            "k8s-default-ingress-0123456789",
            "awseb-e-abcdef1234-stack-awsebloa-1a2b3c4d5e6f",
            "test-bucket-2024-12-01-backup",
            // A 32-hex account id (Cloudflare R2's host names carry one).
            "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
            "kubernetesadmissionwebhook",
            "xn--bcher-kva",
        ] {
            assert_eq!(judge(label), None, "{label}");
        }
    }
}
