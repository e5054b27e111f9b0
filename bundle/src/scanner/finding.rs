//! One detected secret, and how to show it without showing it.

use std::fmt;

/// One detected secret. `Debug` redacts the secret, the match and the line; only
/// [`Finding::secret`] and friends give the raw values, for `--show-secrets` output.
#[derive(Clone, PartialEq)]
pub struct Finding {
    /// The rule that fired (gitleaks `RuleID`).
    pub rule_id: String,
    /// The rule's description.
    pub description: String,
    /// Repository-relative path (or the path given for a directory/stdin scan).
    pub file: String,
    /// 1-based line of the start of the match in the new file.
    pub start_line: u32,
    pub end_line: u32,
    /// 1-based columns of the match within its first and last line.
    pub start_column: u32,
    pub end_column: u32,
    /// The commit that added it (empty for directory and stdin scans).
    pub commit: String,
    /// Author name, email and date (RFC 3339) of that commit, when known.
    pub author: String,
    pub email: String,
    pub date: String,
    /// First line of the commit message, when known.
    pub message: String,
    /// Shannon entropy of the secret.
    pub entropy: f32,
    /// The rule's tags plus `decoded:<kind>` / `decode-depth:<n>` for decoded findings.
    pub tags: Vec<String>,
    pub(crate) secret: String,
    pub(crate) matched: String,
    pub(crate) line: String,
    /// For a decoded finding, the encoded text it came from (hidden in reports too).
    pub(crate) encoded: String,
}

impl Finding {
    /// gitleaks' fingerprint: `commit:file:rule:line`, or `file:rule:line` without a commit.
    /// `.gitleaksignore` lists these.
    pub fn fingerprint(&self) -> String {
        match self.commit.is_empty() {
            true => format!("{}:{}:{}", self.file, self.rule_id, self.start_line),
            false => format!(
                "{}:{}:{}:{}",
                self.commit, self.file, self.rule_id, self.start_line
            ),
        }
    }

    /// The secret with all but a short prefix hidden: safe to print and log.
    pub fn redacted(&self) -> String {
        redact(&self.secret)
    }

    /// The match with the secret hidden inside it.
    pub fn redacted_match(&self) -> String {
        hide_in(&self.matched, &self.secret)
    }

    /// Whether this finding was found after decoding (base64, hex, percent).
    pub fn is_decoded(&self) -> bool {
        !self.encoded.is_empty()
    }

    /// The source line with the secret hidden inside it.
    pub fn redacted_line(&self) -> String {
        hide_in(&hide_in(&self.line, &self.encoded), &self.secret)
    }

    /// The raw secret. Never log this.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The raw text the rule's regex matched. Never log this.
    pub fn matched(&self) -> &str {
        &self.matched
    }

    /// The raw source line. Never log this.
    pub fn line(&self) -> &str {
        &self.line
    }
}

impl fmt::Debug for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finding")
            .field("rule_id", &self.rule_id)
            .field("file", &self.file)
            .field("start_line", &self.start_line)
            .field("commit", &self.commit)
            .field("secret", &self.redacted())
            .finish_non_exhaustive()
    }
}

/// Hides every finding's secret in the descriptive fields of all of `findings` (file, author,
/// email, commit summary): a token can be a file name or an author's name, and the report must
/// not show it there either.
pub(crate) fn hide_secrets_in_context(findings: &mut [Finding]) {
    let secrets: Vec<String> = findings
        .iter()
        .map(|f| f.secret.clone())
        .filter(|s| !s.is_empty())
        .collect();
    for f in findings {
        for secret in &secrets {
            for field in [&mut f.file, &mut f.author, &mut f.email, &mut f.message] {
                if field.contains(secret.as_str()) {
                    *field = hide_in(field, secret);
                }
            }
        }
    }
}

/// Hides a secret: keeps up to 4 leading characters (a quarter of it at most, so a short
/// secret shows nothing), then `…REDACTED`.
pub fn redact(secret: &str) -> String {
    let keep = (secret.chars().count() / 4).min(4);
    let prefix: String = secret.chars().take(keep).collect();
    format!("{prefix}…REDACTED")
}

fn hide_in(text: &str, secret: &str) -> String {
    match secret.is_empty() {
        true => text.to_owned(),
        false => text.replace(secret, &redact(secret)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(secret: &str) -> Finding {
        Finding {
            rule_id: "r".into(),
            description: "d".into(),
            file: "a.txt".into(),
            start_line: 3,
            end_line: 3,
            start_column: 1,
            end_column: 2,
            commit: String::new(),
            author: String::new(),
            email: String::new(),
            date: String::new(),
            message: String::new(),
            entropy: 0.0,
            tags: vec![],
            secret: secret.into(),
            matched: format!("key={secret}"),
            line: format!("  key={secret} # x"),
            encoded: String::new(),
        }
    }

    #[test]
    fn debug_and_redacted_forms_never_show_the_secret() {
        let secret = "Zq8vXw2LmN4pR7sT9uV1yB3c"; // gitleaks:allow (test fixture)
        let f = finding(secret);
        for shown in [
            format!("{f:?}"),
            f.redacted(),
            f.redacted_match(),
            f.redacted_line(),
        ] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!shown.contains(&secret[4..]), "{shown}");
        }
        assert_eq!(f.redacted(), "Zq8v…REDACTED");
        assert_eq!(redact("abc"), "…REDACTED");
        let mut decoded = finding(secret);
        decoded.encoded = "WnE4dlh3MkxtTjRwUjdzVDl1VjF5QjNj".into();
        decoded.line = format!("v = {}", decoded.encoded);
        assert!(!decoded.redacted_line().contains(&decoded.encoded[4..]));
    }

    #[test]
    fn fingerprint_has_gitleaks_shape() {
        let mut f = finding("x");
        assert_eq!(f.fingerprint(), "a.txt:r:3");
        f.commit = "abc123".into();
        assert_eq!(f.fingerprint(), "abc123:a.txt:r:3");
    }
}
