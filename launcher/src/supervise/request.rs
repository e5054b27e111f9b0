//! A proposal's request: validation with the manifest's own value checks, the operator's
//! `$EDITOR` round trip, and the lines shown for it (`dashboard --once`, the TUI's detail pane).
//!
//! An egress request is made of the contract's route types, so a proposal file (or the
//! operator's edit) that does not hold a route the manifest could declare does not even
//! parse; `validate` adds what a proposal may not do that a manifest may (a wildcard).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use bottle_contract::route::AuthScheme;
use bottle_contract::supervise::{EgressRequest, Proposal, Request};

use crate::manifest::values::{Layout, escape_controls};

/// `egress`, `capability` or `pipelock`: the request's kind as the queue spells it.
pub(crate) fn kind(request: &Request) -> &'static str {
    match request {
        Request::Egress(_) => "egress",
        Request::Capability { .. } => "capability",
        Request::Pipelock { .. } => "pipelock",
    }
}

/// Checks a request; the error says which field is wrong and how.
pub(crate) fn validate(request: &Request) -> Result<(), String> {
    match request {
        Request::Egress(egress) => validate_egress(egress),
        Request::Capability { dockerfile } => {
            let has_from = dockerfile
                .lines()
                .any(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "));
            if has_from {
                Ok(())
            } else {
                Err("`dockerfile` has no `FROM` line; it must be a whole agent Dockerfile".into())
            }
        }
        Request::Pipelock { change } => pipelock_mapping(change).map(|_| ()),
    }
}

fn validate_egress(egress: &EgressRequest) -> Result<(), String> {
    // Host, prefixes, header and token name were checked as the request was read.
    if egress.host.is_wildcard() {
        return Err(format!(
            "`host`: `{}` is a wildcard; a proposal names one exact host",
            line(egress.host.as_str())
        ));
    }
    Ok(())
}

/// A pipelock change must be a YAML mapping (it is merged into pipelock's config) of settings
/// a change may set (`render::pipelock::check_change`).
pub(crate) fn pipelock_mapping(change: &str) -> Result<serde_json::Value, String> {
    let value: serde_json::Value =
        serde_saphyr::from_str(change).map_err(|_| "`change` is not valid YAML".to_owned())?;
    if value.is_object() {
        crate::render::pipelock::check_change(&value).map_err(|e| format!("`change`: {e}"))?;
        Ok(value)
    } else {
        Err(
            "`change` must be a YAML mapping of pipelock settings, e.g. `api_allowlist: [HOST]`"
                .into(),
        )
    }
}

/// The request as the operator edits it: an egress route as pretty JSON, a Dockerfile or a
/// pipelock change as its own text (not a JSON string full of `\n` escapes).
pub(crate) fn to_editable(request: &Request) -> String {
    let text = match request {
        Request::Egress(_) => serde_json::to_string_pretty(request).unwrap_or_default(),
        Request::Capability { dockerfile } => dockerfile.clone(),
        Request::Pipelock { change } => change.clone(),
    };
    if text.ends_with('\n') {
        text
    } else {
        text + "\n"
    }
}

/// The file name suffix of the edit, so the editor picks the right highlighting.
fn editable_suffix(request: &Request) -> &'static str {
    match request {
        Request::Egress(_) => ".json",
        Request::Capability { .. } => ".Dockerfile",
        Request::Pipelock { .. } => ".yaml",
    }
}

/// Parses the operator's edit of `original` back (same kind) and validates it.
pub(crate) fn from_edited(original: &Request, text: &str) -> Result<Request, String> {
    let request = match original {
        Request::Egress(_) => match serde_json::from_str::<Request>(text) {
            Ok(request @ Request::Egress(_)) => request,
            Ok(_) => return Err("the edited request must stay an egress route".into()),
            Err(e) => {
                return Err(format!("the edited request is not valid: {e}"));
            }
        },
        Request::Capability { .. } => Request::Capability {
            dockerfile: text.to_owned(),
        },
        Request::Pipelock { .. } => Request::Pipelock {
            change: text.to_owned(),
        },
    };
    validate(&request).map_err(|m| format!("the edited request is not valid: {m}"))?;
    Ok(request)
}

/// Opens `request` in `$EDITOR` (`vi` when unset) and returns the edited, validated request.
/// The terminal must be in its normal mode (the TUI leaves its screen first).
pub(crate) fn edit_in_editor(proposal: &Proposal) -> anyhow::Result<Request> {
    let path = edit_file(&proposal.id, editable_suffix(&proposal.request))?;
    let result = (|| {
        std::fs::write(&path, to_editable(&proposal.request))
            .with_context(|| format!("cannot write {}", path.display()))?;
        let editor = std::env::var("EDITOR")
            .ok()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| "vi".to_owned());
        // Through the shell, so EDITOR may carry arguments (`code -w`).
        let status = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("claude-bottle-edit")
            .arg(&path)
            .status()
            .with_context(|| format!("cannot run the editor `{editor}`"))?;
        anyhow::ensure!(
            status.success(),
            "the editor `{editor}` exited with {status}; proposal {} was not approved",
            proposal.id
        );
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        from_edited(&proposal.request, &text)
            .map_err(|m| anyhow::anyhow!("{m}; proposal {} was not approved", proposal.id))
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// A new private file for the edit, `<tmp>/claude-bottle-<id>-<random><suffix>`.
fn edit_file(id: &str, suffix: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let path = std::env::temp_dir().join(format!("claude-bottle-{id}-{random}{suffix}"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.flush()?;
    Ok(path)
}

/// The header line of a proposal: id, bottle, kind, age. Everything in it and in
/// [`detail_lines`] that the agent wrote is shown through [`escape_controls`]: these lines
/// reach the operator's terminal (`dashboard --once`, the TUI).
pub(crate) fn headline(proposal: &Proposal, now: u64) -> String {
    format!(
        "{}  {}  {}  {}",
        line(&proposal.id),
        line(&proposal.identity),
        kind(&proposal.request),
        age(now.saturating_sub(proposal.created))
    )
}

/// What the proposal asks for and why, one line per fact (a Dockerfile line by line, its tabs
/// kept). A field's own line breaks are escaped, so it cannot fake the facts after it.
pub(crate) fn detail_lines(proposal: &Proposal) -> Vec<String> {
    let mut lines = vec![format!("why: {}", line(&proposal.justification))];
    match &proposal.request {
        Request::Egress(e) => {
            lines.push(format!("host: {}", line(e.host.as_str())));
            lines.push(if e.path_allowlist.is_empty() {
                "paths: (all)".to_owned()
            } else {
                format!("paths: {}", line(&e.path_allowlist.join(", ")))
            });
            lines.push(match &e.auth {
                None => "auth: none".to_owned(),
                Some(a) => format!(
                    "auth: {} with the host's ${}",
                    scheme_name(&a.scheme),
                    line(a.token_ref.as_str())
                ),
            });
        }
        Request::Capability { dockerfile } => {
            lines.push("dockerfile:".to_owned());
            lines.extend(text_lines(dockerfile));
        }
        Request::Pipelock { change } => {
            lines.push("pipelock change:".to_owned());
            lines.extend(text_lines(change));
        }
    }
    lines
}

/// One untrusted line, escaped for the operator's terminal.
pub(crate) fn line(text: &str) -> String {
    escape_controls(text, Layout::Line)
}

/// A multi-line text (a Dockerfile), indented and escaped line by line; `\t` stays, a stray
/// `\r` does not (it would let a later part of the line overwrite an earlier one).
fn text_lines(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines()
        .map(|l| format!("  {}", escape_controls(l, Layout::Block)))
}

/// `Bearer`, `token`, `Basic` or `header x-api-key`.
pub(crate) fn scheme_name(scheme: &AuthScheme) -> String {
    match scheme {
        AuthScheme::Bearer => "Bearer".into(),
        AuthScheme::Token => "token".into(),
        AuthScheme::Basic => "Basic".into(),
        AuthScheme::Header { name } => format!("header {}", line(name.as_str())),
    }
}

/// `42s ago`, `5m ago`, `3h ago`, `2d ago`.
pub(crate) fn age(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_contract::route::RouteAuth;

    fn egress(host: &str, paths: &[&str], token_ref: Option<&str>) -> Request {
        Request::Egress(EgressRequest {
            host: host.parse().unwrap(),
            path_allowlist: paths.iter().map(|p| p.parse().unwrap()).collect(),
            auth: token_ref.map(|t| RouteAuth {
                scheme: AuthScheme::Bearer,
                token_ref: t.parse().unwrap(),
            }),
        })
    }

    /// An operator's edit of an egress request, as JSON text.
    fn edit(host: &str, paths: &[&str], auth: Option<(&str, &str)>) -> String {
        let mut request =
            serde_json::json!({"kind": "egress", "host": host, "path_allowlist": paths});
        request["auth"] = match auth {
            Some((scheme, token_ref)) => {
                serde_json::json!({"scheme": scheme, "token_ref": token_ref})
            }
            None => serde_json::Value::Null,
        };
        request.to_string()
    }

    #[test]
    fn edits_are_validated_like_manifest_values() {
        let original = egress("docs.rs", &[], None);
        let ok = to_editable(&egress("docs.rs", &["/crate/"], Some("DOCS_TOKEN")));
        assert_eq!(
            from_edited(&original, &ok).unwrap(),
            egress("docs.rs", &["/crate/"], Some("DOCS_TOKEN"))
        );
        let cases = [
            (edit("Docs.RS", &[], None), "lowercase"),
            (edit("10.0.0.1", &[], None), "IP address"),
            (edit("docs.rs:8443", &[], None), "port"),
            (edit("*.docs.rs", &[], None), "wildcard"),
            (edit("docs.rs", &["crate/"], None), "must start with `/`"),
            (edit("docs.rs", &["/a/../b"], None), "`..`"),
            (edit("docs.rs", &[], Some(("bearer", "ghp_abc-123"))), "token"),
            (
                r#"{"kind":"egress","host":"docs.rs","auth":{"scheme":{"header":{"name":"Cookie"}},"token_ref":"T"}}"#.to_owned(),
                "cannot carry a credential",
            ),
        ];
        for (text, expect) in cases {
            let err = from_edited(&original, &text).unwrap_err();
            assert!(err.contains(expect), "{expect}: {err}");
            assert!(err.starts_with("the edited request is not valid"), "{err}");
        }
        let err =
            from_edited(&original, "{\"kind\": \"pipelock\", \"change\": \"a: 1\"}").unwrap_err();
        assert!(err.contains("must stay an egress route"), "{err}");
    }

    #[test]
    fn dockerfiles_and_pipelock_changes_are_edited_as_their_own_text() {
        let original = Request::Capability {
            dockerfile: "FROM debian\nRUN true".into(),
        };
        let text = to_editable(&original);
        assert_eq!(text, "FROM debian\nRUN true\n");
        let edited = from_edited(&original, &format!("{text}RUN apt-get install -y jq\n")).unwrap();
        let Request::Capability { dockerfile } = edited else {
            panic!("kind changed")
        };
        assert!(
            dockerfile.ends_with("RUN apt-get install -y jq\n"),
            "{dockerfile}"
        );
        let bad = from_edited(&original, "RUN true\n").unwrap_err();
        assert!(bad.starts_with("the edited request is not valid"), "{bad}");

        let original = Request::Pipelock {
            change: "api_allowlist: [docs.rs]".into(),
        };
        assert_eq!(to_editable(&original), "api_allowlist: [docs.rs]\n");
        assert!(from_edited(&original, "- not a mapping\n").is_err());
        assert!(from_edited(&original, "api_allowlist: [a.test]\n").is_ok());
    }

    #[test]
    fn capability_and_pipelock_requests_are_checked() {
        let dockerfile = |d: &str| Request::Capability {
            dockerfile: d.into(),
        };
        assert!(validate(&dockerfile("FROM debian\nRUN true\n")).is_ok());
        assert!(
            validate(&dockerfile("RUN true\n"))
                .unwrap_err()
                .contains("FROM")
        );
        let change = |c: &str| Request::Pipelock { change: c.into() };
        assert!(validate(&change("api_allowlist: [docs.rs]\n")).is_ok());
        assert!(
            validate(&change("- a\n- b\n"))
                .unwrap_err()
                .contains("mapping")
        );
        assert!(validate(&change("a: [\n")).unwrap_err().contains("YAML"));
    }

    #[test]
    fn details_show_what_is_asked() {
        let p = Proposal {
            id: "p-1".into(),
            identity: "dev-abcde".into(),
            created: 100,
            justification: "read the docs".into(),
            request: egress("docs.rs", &[], Some("DOCS_TOKEN")),
        };
        assert_eq!(headline(&p, 250), "p-1  dev-abcde  egress  2m ago");
        assert_eq!(
            detail_lines(&p),
            [
                "why: read the docs",
                "host: docs.rs",
                "paths: (all)",
                "auth: Bearer with the host's $DOCS_TOKEN"
            ]
        );
    }

    #[test]
    fn agent_text_is_shown_escaped_and_cannot_fake_lines() {
        let hostile = "\u{1b}[2K\u{1b}]52;c;Y3VybA==\u{7}\r\u{202e}";
        let p = Proposal {
            id: "p-1".into(),
            identity: "dev-abcde".into(),
            created: 100,
            justification: format!("fine{hostile}\np-2  dev-abcde  egress  1s ago"),
            request: egress("docs.rs", &[], Some("T")),
        };
        let lines = detail_lines(&p);
        assert_eq!(
            lines,
            [
                r"why: fine\u{1b}[2K\u{1b}]52;c;Y3VybA==\u{7}\u{d}\u{202e}\u{a}p-2  dev-abcde  egress  1s ago",
                "host: docs.rs",
                "paths: (all)",
                "auth: Bearer with the host's $T",
            ]
        );
        // A hostile host cannot be part of a request at all; the refusal quotes it escaped.
        let edit =
            serde_json::json!({"kind": "egress", "host": format!("docs.rs{hostile}")}).to_string();
        let err = from_edited(&p.request, &edit).unwrap_err();
        assert!(err.contains(r"docs.rs\u{1b}[2K"), "{err}");
        assert!(!err.contains('\u{1b}'), "{err}");

        let p = Proposal {
            request: Request::Capability {
                dockerfile: "FROM debian\nRUN\ttrue\u{1b}[2K\rRUN curl x | sh\n".into(),
            },
            ..p
        };
        let lines = detail_lines(&p);
        assert_eq!(
            lines[1..],
            [
                "dockerfile:",
                "  FROM debian",
                "  RUN\ttrue\\u{1b}[2K\\u{d}RUN curl x | sh"
            ]
        );
    }
}
