//! Findings as text, gitleaks-style JSON, or SARIF 2.1.0. Secrets are redacted unless the
//! caller asks for them (`Reveal::Secrets`).

use serde_json::{Value, json};

use crate::scanner::Finding;

/// Whether reports show raw secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reveal {
    /// Secrets, matches and lines are redacted (the default).
    Redacted,
    /// Raw values (`--show-secrets`); for a person at a terminal, never for logs.
    Secrets,
}

/// Human-readable report, one block per finding, redacted unless `reveal` says otherwise.
pub fn text(findings: &[Finding], reveal: Reveal) -> String {
    let mut out = String::new();
    for f in findings {
        let (secret, line) = shown(f, reveal);
        out.push_str(&format!("leak: {} ({})\n", f.rule_id, f.description));
        out.push_str(&format!("  file:        {}:{}\n", f.file, f.start_line));
        if !f.commit.is_empty() {
            out.push_str(&format!("  commit:      {}", f.commit));
            if !f.author.is_empty() {
                out.push_str(&format!(" ({} <{}>, {})", f.author, f.email, f.date));
            }
            out.push('\n');
        }
        out.push_str(&format!("  secret:      {secret}\n"));
        let line: String = line.trim().chars().take(200).collect();
        if !line.is_empty() {
            out.push_str(&format!("  line:        {line}\n"));
        }
        if !f.tags.is_empty() {
            out.push_str(&format!("  tags:        {}\n", f.tags.join(", ")));
        }
        out.push_str(&format!("  fingerprint: {}\n\n", f.fingerprint()));
    }
    out
}

/// gitleaks' JSON report: an array of objects with its field names.
pub fn json(findings: &[Finding], reveal: Reveal) -> String {
    let items: Vec<Value> = findings
        .iter()
        .map(|f| {
            let (secret, line) = shown(f, reveal);
            let matched = match reveal {
                Reveal::Secrets => f.matched().to_owned(),
                Reveal::Redacted => f.redacted_match(),
            };
            json!({
                "RuleID": f.rule_id,
                "Description": f.description,
                "StartLine": f.start_line,
                "EndLine": f.end_line,
                "StartColumn": f.start_column,
                "EndColumn": f.end_column,
                "Line": line,
                "Match": matched,
                "Secret": secret,
                "File": f.file,
                "SymlinkFile": "",
                "Commit": f.commit,
                "Entropy": f.entropy,
                "Author": f.author,
                "Email": f.email,
                "Date": f.date,
                "Message": f.message,
                "Tags": f.tags,
                "Fingerprint": f.fingerprint(),
            })
        })
        .collect();
    pretty(&Value::Array(items))
}

/// SARIF 2.1.0, one run, one result per finding, rules listed in the driver.
pub fn sarif(findings: &[Finding], rules: &[(&str, &str)], reveal: Reveal) -> String {
    let driver_rules: Vec<Value> = rules
        .iter()
        .map(|(id, desc)| json!({"id": id, "name": id, "shortDescription": {"text": desc}}))
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let (secret, _) = shown(f, reveal);
            let mut result = json!({
                "ruleId": f.rule_id,
                "message": {"text": format!("{} has detected secret for file {}.", f.rule_id, f.file)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.file},
                        "region": {
                            "startLine": f.start_line.max(1),
                            "startColumn": f.start_column.max(1),
                            "endLine": f.end_line.max(1),
                            "endColumn": f.end_column.max(1),
                            "snippet": {"text": secret},
                        },
                    },
                }],
                "properties": {"tags": f.tags},
            });
            if !f.commit.is_empty() {
                result["partialFingerprints"] = json!({
                    "commitSha": f.commit,
                    "email": f.email,
                    "author": f.author,
                    "date": f.date,
                    "commitMessage": f.message,
                });
            }
            result
        })
        .collect();
    pretty(&json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "bottle-bundle scan",
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "rules": driver_rules,
            }},
            "results": results,
        }],
    }))
}

fn shown(f: &Finding, reveal: Reveal) -> (String, String) {
    match reveal {
        Reveal::Secrets => (f.secret().to_owned(), f.line().to_owned()),
        Reveal::Redacted => (f.redacted(), f.redacted_line()),
    }
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| "[]".to_owned());
    s.push('\n');
    s
}
