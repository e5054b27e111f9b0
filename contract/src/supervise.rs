//! The supervise queue: proposals the bundle's MCP server writes, decisions only the host writes.
//!
//! On the host a bottle's queue is `<manifest home>/queue/<identity>/` with two folders:
//! `proposals/` (bind-mounted read-write into the bundle at
//! [`crate::wire::BUNDLE_QUEUE_DIR`]`/proposals`) and `decisions/` (bind-mounted **read-only** at
//! [`crate::wire::BUNDLE_QUEUE_DIR`]`/decisions`). The agent container mounts neither, and the
//! bundle cannot write a decision even if it wanted to: approvals come only from the host.
//!
//! Each proposal is one file `proposals/<id>.json` ([`Proposal`]), each decision one file
//! `decisions/<id>.json` ([`Decision`]). Both are written whole to a temporary name in the same
//! folder and renamed, so a reader never sees half a document. A decision is written only after
//! its effect took place (the route is live, the bottle is stopped), so an agent that reads
//! "approved" can act on it at once.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::route::{PathPrefix, RouteAuth, RouteHost};

/// Folder (inside a queue) the bundle writes proposals to.
pub const PROPOSALS_DIR: &str = "proposals";
/// Folder (inside a queue) the host writes decisions to.
pub const DECISIONS_DIR: &str = "decisions";
/// Longest `proposal-status` waits for a decision (Claude Code cuts tool calls near 60 s).
pub const MAX_WAIT_SECONDS: u64 = 45;

/// One request from a stuck agent, as the bundle validated it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    /// Unique across all bottles; see [`valid_id`].
    pub id: String,
    /// The bottle that asked.
    pub identity: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Why the agent needs it, in its own words (non-empty).
    pub justification: String,
    /// What it asks for.
    pub request: Request,
}

/// What a proposal asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", tag = "kind")]
pub enum Request {
    /// A new egress route (`egress-block`).
    Egress(EgressRequest),
    /// A whole new agent Dockerfile (`capability-block`); applied by stopping the bottle with
    /// its state kept and `claude-bottle resume`.
    Capability { dockerfile: String },
    /// A change to pipelock's configuration (`pipelock-block`): a YAML mapping merged into it.
    Pipelock { change: String },
}

/// An egress route the agent asks for: a route in the one route vocabulary, so a proposal
/// that reaches the host can be approved as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRequest {
    /// The host (the MCP tool and the host's approval also refuse wildcards here).
    pub host: RouteHost,
    /// Path prefixes; empty means every path.
    #[serde(default)]
    pub path_allowlist: Vec<PathPrefix>,
    /// A credential the bundle should inject, read from the host's environment on approval.
    pub auth: Option<RouteAuth>,
}

/// The host's answer to a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub id: String,
    pub verdict: Verdict,
    /// Seconds since the Unix epoch.
    pub decided: u64,
    /// Why it was rejected (required for a rejection), or a note on an approval.
    pub reason: Option<String>,
    /// What was applied: the request, possibly edited by the operator. `None` on rejection.
    pub applied: Option<Request>,
    /// What the agent should do next, e.g. "retry the request" or "the bottle stops now".
    pub message: String,
}

/// Approve or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Approved,
    Rejected,
}

/// A proposal id is 1-64 of `[a-z0-9-]`, so it is safe as a file name.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `<queue>/proposals/<id>.json`.
pub fn proposal_path(queue: &Path, id: &str) -> PathBuf {
    queue.join(PROPOSALS_DIR).join(format!("{id}.json"))
}

/// `<queue>/decisions/<id>.json`.
pub fn decision_path(queue: &Path, id: &str) -> PathBuf {
    queue.join(DECISIONS_DIR).join(format!("{id}.json"))
}

/// Writes `contents` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Like [`write_atomic`], but never replaces: the document appears whole under `path` only if
/// nothing is there yet (a hard link of the temporary file, which the kernel refuses when the
/// name exists), else `AlreadyExists`. Two operators deciding the same proposal at once cannot
/// both win.
pub fn create_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.new",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, contents)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_safe_file_names() {
        assert!(valid_id("p-7k2m9q"));
        assert!(!valid_id(""));
        assert!(!valid_id("../x"));
        assert!(!valid_id("A"));
        assert!(!valid_id(&"a".repeat(65)));
    }

    #[test]
    fn proposal_round_trips_with_a_kind_tag() {
        let p = Proposal {
            id: "p-1".into(),
            identity: "dev-abcde".into(),
            created: 1,
            justification: "need docs".into(),
            request: Request::Egress(EgressRequest {
                host: "docs.rs".parse().unwrap(),
                path_allowlist: vec![],
                auth: Some(crate::route::RouteAuth {
                    scheme: crate::route::AuthScheme::Bearer,
                    token_ref: "DOCS_TOKEN".parse().unwrap(),
                }),
            }),
        };
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains(r#""kind":"egress""#), "{text}");
        assert_eq!(serde_json::from_str::<Proposal>(&text).unwrap(), p);
    }

    #[test]
    fn create_atomic_never_replaces_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("contract-create-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.json");
        create_atomic(&path, b"first").unwrap();
        let again = create_atomic(&path, b"second").unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_write_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("contract-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.json");
        write_atomic(&path, b"{}").unwrap();
        write_atomic(&path, b"[]").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"[]");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
