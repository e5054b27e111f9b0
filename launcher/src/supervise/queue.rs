//! The proposal queue on the host: `<manifest home>/queue/<identity>/{proposals,decisions}/`.
//!
//! A proposal is pending while its queue has no decision with the same id. The bundle writes
//! proposals, so their contents are checked before they are shown or acted on: the id must be
//! the file's name and the identity the queue's, so one bottle cannot file a proposal that
//! looks like another's. A file that fails those checks is a warning naming it, never a crash.

use std::path::{Path, PathBuf};

use bottle_contract::supervise::{self, DECISIONS_DIR, Decision, PROPOSALS_DIR, Proposal, Verdict};

/// Largest proposal file read. The bundle caps a Dockerfile at 64 KiB and a justification at
/// 4000 characters; even with every byte JSON-escaped as `\uXXXX` that is under 1 MiB.
const MAX_PROPOSAL_BYTES: u64 = 1024 * 1024;

/// Why a proposal could not be found or acted on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueueError {
    #[error(
        "`{0}` is not a proposal id (ids are 1-64 of a-z, 0-9 and `-`); `claude-bottle dashboard --once` lists pending ones"
    )]
    BadId(String),
    #[error(
        "no proposal `{id}` under {}; `claude-bottle dashboard --once` lists pending ones",
        dir.display()
    )]
    NotFound { id: String, dir: PathBuf },
    #[error("proposal `{id}` was already {verdict} ({}); nothing to do", path.display())]
    Decided {
        id: String,
        verdict: &'static str,
        path: PathBuf,
    },
    #[error("proposal file {}: {message}", path.display())]
    Malformed { path: PathBuf, message: String },
    #[error("cannot write decision {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A proposal with no decision yet, and the queue it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) proposal: Proposal,
    /// `<manifest home>/queue/<identity>`.
    pub(crate) queue: PathBuf,
}

/// What [`pending`] found: the proposals, oldest first, and a warning per unreadable file.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) pending: Vec<Pending>,
    pub(crate) warnings: Vec<String>,
}

/// `<manifest home>/queue`.
pub(crate) fn queues_dir(root: &Path) -> PathBuf {
    root.join("queue")
}

/// Every pending proposal of every bottle of manifest home `root`, oldest first (ties by id).
pub(crate) fn pending(root: &Path) -> Listing {
    let mut listing = Listing::default();
    for queue in queue_dirs(root) {
        let Ok(entries) = std::fs::read_dir(queue.join(PROPOSALS_DIR)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| is_document(p))
            .collect();
        files.sort();
        for path in files {
            match read_proposal(&queue, &path) {
                Ok(proposal) => {
                    if !supervise::decision_path(&queue, &proposal.id).exists() {
                        listing.pending.push(Pending {
                            proposal,
                            queue: queue.clone(),
                        });
                    }
                }
                // The message may quote the file's (the agent's) text: shown escaped.
                Err(e) => listing
                    .warnings
                    .push(super::request::line(&format!("{e}; skipping it"))),
            }
        }
    }
    listing.pending.sort_by(|a, b| {
        (a.proposal.created, &a.proposal.id).cmp(&(b.proposal.created, &b.proposal.id))
    });
    listing
}

/// The pending proposal `id`, from whichever bottle's queue holds it.
pub(crate) fn find(root: &Path, id: &str) -> Result<Pending, QueueError> {
    if !supervise::valid_id(id) {
        return Err(QueueError::BadId(id.to_owned()));
    }
    for queue in queue_dirs(root) {
        let path = supervise::proposal_path(&queue, id);
        if !path.exists() {
            continue;
        }
        let proposal = read_proposal(&queue, &path)?;
        let pending = Pending { proposal, queue };
        ensure_undecided(&pending)?;
        return Ok(pending);
    }
    Err(QueueError::NotFound {
        id: id.to_owned(),
        dir: queues_dir(root),
    })
}

/// Fails when `pending` got a decision since it was read (another operator, the CLI while the
/// dashboard is open): a proposal is decided once.
pub(crate) fn ensure_undecided(pending: &Pending) -> Result<(), QueueError> {
    let path = supervise::decision_path(&pending.queue, &pending.proposal.id);
    if !path.exists() {
        return Ok(());
    }
    let verdict = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Decision>(&t).ok())
        .map_or("decided", |d| verdict_word(d.verdict));
    Err(QueueError::Decided {
        id: pending.proposal.id.clone(),
        verdict,
        path,
    })
}

/// Writes `decision` into `queue`'s `decisions/` (created if missing), whole or not at all.
/// An existing decision is never replaced, even by a racing writer ([`supervise::create_atomic`]).
pub(crate) fn write_decision(queue: &Path, decision: &Decision) -> Result<PathBuf, QueueError> {
    let path = supervise::decision_path(queue, &decision.id);
    if path.exists() {
        return Err(QueueError::Decided {
            id: decision.id.clone(),
            verdict: "decided",
            path,
        });
    }
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(queue.join(DECISIONS_DIR))?;
        let text = serde_json::to_string_pretty(decision).map_err(std::io::Error::other)?;
        supervise::create_atomic(&path, text.as_bytes())
    };
    match write() {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(QueueError::Decided {
                id: decision.id.clone(),
                verdict: "decided",
                path,
            });
        }
        Err(source) => {
            return Err(QueueError::Write {
                path: path.clone(),
                source,
            });
        }
    }
    Ok(path)
}

/// "approved" / "rejected".
pub(crate) fn verdict_word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Approved => "approved",
        Verdict::Rejected => "rejected",
    }
}

/// `<root>/queue/<identity>` folders, sorted.
fn queue_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(queues_dir(root)) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// `<name>.json`, not a hidden temporary file of [`supervise::write_atomic`].
fn is_document(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && name.ends_with(".json") && path.is_file()
}

/// Reads and checks one proposal file: its id is its file name, its identity its queue's.
fn read_proposal(queue: &Path, path: &Path) -> Result<Proposal, QueueError> {
    let malformed = |message: String| QueueError::Malformed {
        path: path.to_owned(),
        message,
    };
    // The bundle side writes these files: read as any named file is, bounded and regular only.
    let bytes = crate::hostfile::read_bounded(path, MAX_PROPOSAL_BYTES)
        .map_err(|e| malformed(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| malformed("not UTF-8 text".into()))?;
    let proposal: Proposal =
        serde_json::from_str(&text).map_err(|e| malformed(format!("not a proposal: {e}")))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if proposal.id != stem || !supervise::valid_id(&proposal.id) {
        return Err(malformed(format!(
            "its id `{}` does not match the file name",
            super::request::line(&proposal.id)
        )));
    }
    let identity = queue.file_name().and_then(|s| s.to_str()).unwrap_or("");
    if proposal.identity != identity {
        return Err(malformed(format!(
            "it names bottle `{}` but sits in bottle `{}`'s queue",
            super::request::line(&proposal.identity),
            super::request::line(identity)
        )));
    }
    Ok(proposal)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bottle_contract::supervise::{EgressRequest, Request};

    /// A proposal for `identity`, written by hand as the bundle would.
    pub(crate) fn write_proposal(root: &Path, identity: &str, id: &str, created: u64) -> Proposal {
        let proposal = Proposal {
            id: id.into(),
            identity: identity.into(),
            created,
            justification: format!("need {id}"),
            request: Request::Egress(EgressRequest {
                host: "docs.rs".parse().unwrap(),
                path_allowlist: vec![],
                auth: None,
            }),
        };
        let queue = queues_dir(root).join(identity);
        std::fs::create_dir_all(queue.join(PROPOSALS_DIR)).unwrap();
        std::fs::write(
            supervise::proposal_path(&queue, id),
            serde_json::to_string(&proposal).unwrap(),
        )
        .unwrap();
        proposal
    }

    fn decide(root: &Path, identity: &str, id: &str) {
        let queue = queues_dir(root).join(identity);
        write_decision(
            &queue,
            &Decision {
                id: id.into(),
                verdict: Verdict::Rejected,
                decided: 9,
                reason: Some("no".into()),
                applied: None,
                message: "no".into(),
            },
        )
        .unwrap();
    }

    fn ids(listing: &Listing) -> Vec<&str> {
        listing
            .pending
            .iter()
            .map(|p| p.proposal.id.as_str())
            .collect()
    }

    #[test]
    fn pending_spans_bottles_oldest_first_and_skips_decided() {
        let root = tempfile::tempdir().unwrap();
        write_proposal(root.path(), "b-bbbbb", "p-late", 30);
        write_proposal(root.path(), "a-aaaaa", "p-mid", 20);
        write_proposal(root.path(), "b-bbbbb", "p-early", 10);
        write_proposal(root.path(), "a-aaaaa", "p-done", 5);
        decide(root.path(), "a-aaaaa", "p-done");
        let listing = pending(root.path());
        assert_eq!(ids(&listing), ["p-early", "p-mid", "p-late"]);
        assert!(listing.warnings.is_empty(), "{:?}", listing.warnings);
        assert_eq!(
            listing.pending[0].queue,
            queues_dir(root.path()).join("b-bbbbb")
        );
    }

    #[test]
    fn an_empty_or_missing_queue_has_nothing_pending() {
        let root = tempfile::tempdir().unwrap();
        assert!(pending(root.path()).pending.is_empty());
        std::fs::create_dir_all(queues_dir(root.path()).join("x-xxxxx")).unwrap();
        assert!(pending(root.path()).pending.is_empty());
    }

    #[test]
    fn malformed_and_forged_files_are_warnings_naming_the_file() {
        let root = tempfile::tempdir().unwrap();
        write_proposal(root.path(), "a-aaaaa", "p-good", 1);
        let proposals = queues_dir(root.path()).join("a-aaaaa").join(PROPOSALS_DIR);
        std::fs::write(proposals.join("p-bad.json"), "{not json").unwrap();
        // A proposal claiming to be another bottle's.
        let mut forged = write_proposal(root.path(), "b-bbbbb", "p-forged", 2);
        forged.identity = "b-bbbbb".into();
        std::fs::write(
            proposals.join("p-forged.json"),
            serde_json::to_string(&forged).unwrap(),
        )
        .unwrap();
        // Too large to be one the bundle wrote.
        std::fs::write(proposals.join("p-huge.json"), vec![b' '; 1024 * 1024 + 1]).unwrap();
        // A temporary file of an atomic write in progress is not a proposal.
        std::fs::write(proposals.join(".p-x.json.12.tmp"), "{").unwrap();
        let listing = pending(root.path());
        assert_eq!(ids(&listing), ["p-good", "p-forged"]);
        assert_eq!(listing.warnings.len(), 3, "{:?}", listing.warnings);
        assert!(listing.warnings[0].contains("p-bad.json"));
        assert!(listing.warnings[1].contains("a-aaaaa/proposals/p-forged.json"));
        assert!(listing.warnings[1].contains("bottle `b-bbbbb`"));
        assert!(listing.warnings[2].contains("p-huge.json is larger than 1048576 bytes"));
    }

    #[test]
    fn find_says_unknown_decided_or_bad_id() {
        let root = tempfile::tempdir().unwrap();
        let p = write_proposal(root.path(), "a-aaaaa", "p-1", 1);
        assert_eq!(find(root.path(), "p-1").unwrap().proposal, p);
        let err = find(root.path(), "p-2").unwrap_err().to_string();
        assert!(err.contains("no proposal `p-2`"), "{err}");
        let err = find(root.path(), "../etc").unwrap_err().to_string();
        assert!(err.contains("not a proposal id"), "{err}");
        decide(root.path(), "a-aaaaa", "p-1");
        let err = find(root.path(), "p-1").unwrap_err().to_string();
        assert!(err.contains("already rejected"), "{err}");
    }
}
