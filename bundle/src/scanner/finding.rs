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
    /// The secrets (and encoded forms) of the other findings on the same lines: the line and
    /// match of this finding show them too, and must hide them as well as its own.
    pub(crate) neighbours: Vec<String>,
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
        self.hide_all(&self.matched)
    }

    /// Whether this finding was found after decoding (base64, hex, percent).
    pub fn is_decoded(&self) -> bool {
        !self.encoded.is_empty()
    }

    /// The source line with the secret hidden inside it.
    pub fn redacted_line(&self) -> String {
        self.hide_all(&self.line)
    }

    /// `text` with this finding's secret, its encoded form and its neighbours' hidden;
    /// longest first, so a secret inside a longer one cannot leave the rest of it showing.
    fn hide_all(&self, text: &str) -> String {
        let mut hidden: Vec<&str> = [self.encoded.as_str(), self.secret.as_str()]
            .into_iter()
            .chain(self.neighbours.iter().map(String::as_str))
            .filter(|s| !s.is_empty())
            .collect();
        hidden.sort_by_key(|s| std::cmp::Reverse(s.len()));
        hidden
            .into_iter()
            .fold(text.to_owned(), |text, secret| hide_in(&text, secret))
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

/// Records, for each finding, the secrets of the other findings whose lines overlap its own,
/// so its line and match hide them too (two tokens on one line: each report of either line
/// must show neither). Findings on one line always come from one fragment.
pub(crate) fn note_neighbours(findings: &mut [Finding]) {
    if findings.len() < 2 {
        return;
    }
    let spans: Vec<(u32, u32, [String; 2])> = findings
        .iter()
        .map(|f| {
            (
                f.start_line,
                f.end_line.max(f.start_line),
                [f.secret.clone(), f.encoded.clone()],
            )
        })
        .collect();
    for (i, f) in findings.iter_mut().enumerate() {
        let (start, end) = (f.start_line, f.end_line.max(f.start_line));
        for (j, (s, e, hidden)) in spans.iter().enumerate() {
            if i == j || *s > end || *e < start {
                continue;
            }
            for h in hidden {
                if !h.is_empty() && *h != f.secret && !f.neighbours.contains(h) {
                    f.neighbours.push(h.clone());
                }
            }
        }
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
            neighbours: vec![],
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
    fn two_secrets_on_one_line_are_both_hidden_in_each_finding() {
        let (a, b) = ("Zq8vXw2LmN4pR7sT9uV1yB3c", "Hk3jW9qPzX7mT2vB8nL5rY6d"); // gitleaks:allow (fixture)
        let mut found = vec![finding(a), finding(b)];
        for f in &mut found {
            f.line = format!("x={a} y={b}");
            f.matched = format!("x={a} y={b}");
        }
        note_neighbours(&mut found);
        for f in &found {
            for shown in [f.redacted_line(), f.redacted_match()] {
                assert!(
                    !shown.contains(&a[4..]) && !shown.contains(&b[4..]),
                    "{shown}"
                );
            }
        }
    }

    #[test]
    fn fingerprint_has_gitleaks_shape() {
        let mut f = finding("x");
        assert_eq!(f.fingerprint(), "a.txt:r:3");
        f.commit = "abc123".into();
        assert_eq!(f.fingerprint(), "abc123:a.txt:r:3");
    }
}
