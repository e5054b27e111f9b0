//! The bundle's side of the supervise queue: write proposals, read decisions.
//!
//! The bundle writes only under `<queue>/proposals/` and only reads `<queue>/decisions/`
//! (mounted read-only in the container; the host is the only writer). See
//! [`bottle_contract::supervise`] for the layout.

use std::path::{Path, PathBuf};

use bottle_contract::supervise::{
    self, DECISIONS_DIR, Decision, PROPOSALS_DIR, Proposal, Request, Verdict,
};

/// Most undecided proposals one bottle may have, so a looping agent cannot flood the operator.
pub const MAX_PENDING: usize = 20;

/// Why the queue refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(
        "{count} proposals are already waiting for the operator (at most {MAX_PENDING}); \
         wait for them with proposal-status before asking for more"
    )]
    TooManyPending { count: usize },
    #[error(
        "no proposal {id:?} in this bottle; use the id a block tool returned (like p-k3m9x2qa)"
    )]
    UnknownId { id: String },
    // The cause is in the message, so it is not also the `source` (anyhow's `{:#}` would
    // print it twice).
    #[error("the proposal queue at {path} cannot be used ({error}); tell the operator")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the decision for {id} cannot be read ({reason}); tell the operator")]
    BadDecision { id: String, reason: String },
    #[error("cannot draw a random proposal id: {0}")]
    Random(String),
}

/// Where a proposal stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pending(Proposal),
    Decided(Proposal, Decision),
}

/// One bottle's queue folder.
#[derive(Debug, Clone)]
pub struct Queue {
    root: PathBuf,
}

impl Queue {
    pub fn new(root: impl Into<PathBuf>) -> Queue {
        Queue { root: root.into() }
    }

    fn proposals(&self) -> PathBuf {
        self.root.join(PROPOSALS_DIR)
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
        move |error| QueueError::Io {
            path: path.to_owned(),
            error,
        }
    }

    /// Every proposal on file, oldest first. Unreadable files are skipped with a warning.
    pub fn proposals_on_file(&self) -> Result<Vec<Proposal>, QueueError> {
        let dir = self.proposals();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&dir)(e)),
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Proposal>(&t).map_err(|e| e.to_string()))
            {
                Ok(p) => found.push(p),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping an unreadable proposal");
                }
            }
        }
        found.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(found)
    }

    /// Proposals with no decision yet, oldest first.
    pub fn pending(&self) -> Result<Vec<Proposal>, QueueError> {
        Ok(self
            .proposals_on_file()?
            .into_iter()
            .filter(|p| !supervise::decision_path(&self.root, &p.id).exists())
            .collect())
    }

    /// Files a new proposal and returns it. The caller serializes submissions so the
    /// [`MAX_PENDING`] check and the write cannot race.
    pub fn submit(
        &self,
        identity: &str,
        justification: String,
        request: Request,
    ) -> Result<Proposal, QueueError> {
        let count = self.pending()?.len();
        if count >= MAX_PENDING {
            return Err(QueueError::TooManyPending { count });
        }
        let dir = self.proposals();
        std::fs::create_dir_all(&dir).map_err(Self::io(&dir))?;
        let id = loop {
            let id = new_id()?;
            if !supervise::proposal_path(&self.root, &id).exists() {
                break id;
            }
        };
        let proposal = Proposal {
            id,
            identity: identity.to_owned(),
            created: now_secs(),
            justification,
            request,
        };
        let path = supervise::proposal_path(&self.root, &proposal.id);
        let text = serde_json::to_vec_pretty(&proposal)
            .map_err(|e| Self::io(&path)(std::io::Error::other(e)))?;
        supervise::write_atomic(&path, &text).map_err(Self::io(&path))?;
        tracing::info!(id = %proposal.id, kind = kind(&proposal.request), "proposal filed");
        Ok(proposal)
    }

    /// The proposal `id` and its decision, if the host wrote one.
    pub fn status(&self, id: &str) -> Result<Status, QueueError> {
        let unknown = || QueueError::UnknownId { id: id.to_owned() };
        if !supervise::valid_id(id) {
            return Err(unknown());
        }
        let path = supervise::proposal_path(&self.root, id);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
            Err(e) => return Err(Self::io(&path)(e)),
        };
        let proposal: Proposal =
            serde_json::from_str(&text).map_err(|e| Self::io(&path)(std::io::Error::other(e)))?;
        let decision_path = supervise::decision_path(&self.root, id);
        let text = match std::fs::read_to_string(&decision_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Status::Pending(proposal));
            }
            Err(e) => return Err(Self::io(&decision_path)(e)),
        };
        let decision: Decision =
            serde_json::from_str(&text).map_err(|e| QueueError::BadDecision {
                id: id.to_owned(),
                reason: e.to_string(),
            })?;
        if decision.id != id {
            return Err(QueueError::BadDecision {
                id: id.to_owned(),
                reason: format!("it names {:?}", decision.id),
            });
        }
        Ok(Status::Decided(proposal, decision))
    }

    /// The folder decisions are read from (never written by the bundle).
    pub fn decisions_dir(&self) -> PathBuf {
        self.root.join(DECISIONS_DIR)
    }
}

/// `egress`, `capability` or `pipelock`.
pub fn kind(request: &Request) -> &'static str {
    match request {
        Request::Egress(_) => "egress",
        Request::Capability { .. } => "capability",
        Request::Pipelock { .. } => "pipelock",
    }
}

/// `approved` or `rejected`.
pub fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Approved => "approved",
        Verdict::Rejected => "rejected",
    }
}

/// `p-` and 8 random base36 characters.
fn new_id() -> Result<String, QueueError> {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut id = String::from("p-");
    while id.len() < 10 {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| QueueError::Random(e.to_string()))?;
        // 252 = 7 * 36: drop the top bytes so every character is equally likely.
        for b in bytes.into_iter().filter(|b| *b < 252) {
            if id.len() < 10 {
                id.push(char::from(ALPHABET[usize::from(b % 36)]));
            }
        }
    }
    Ok(id)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_contract::supervise::EgressRequest;

    fn egress(host: &str) -> Request {
        Request::Egress(EgressRequest {
            host: host.parse().unwrap(),
            path_allowlist: vec![],
            auth: None,
        })
    }

    #[test]
    fn an_io_error_shows_its_cause_once() {
        let err = QueueError::Io {
            path: "/q".into(),
            error: std::io::Error::other("disk on fire"),
        };
        let text = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(
            text,
            "the proposal queue at /q cannot be used (disk on fire); tell the operator"
        );
    }

    fn decide(root: &Path, id: &str, verdict: Verdict) {
        let dir = root.join(DECISIONS_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let d = Decision {
            id: id.into(),
            verdict,
            decided: 1,
            reason: Some("no".into()),
            applied: None,
            message: "m".into(),
        };
        std::fs::write(
            supervise::decision_path(root, id),
            serde_json::to_vec(&d).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn ids_look_right_and_differ() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 10);
            assert!(id.starts_with("p-"));
            assert!(supervise::valid_id(&id));
        }
    }

    #[test]
    fn submit_then_status_then_decision() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        let p = q
            .submit("dev-abcde", "need it".into(), egress("docs.rs"))
            .unwrap();
        let on_disk: Proposal = serde_json::from_str(
            &std::fs::read_to_string(supervise::proposal_path(dir.path(), &p.id)).unwrap(),
        )
        .unwrap();
        assert_eq!(on_disk, p);
        assert_eq!(on_disk.identity, "dev-abcde");
        assert!(matches!(q.status(&p.id).unwrap(), Status::Pending(_)));
        decide(dir.path(), &p.id, Verdict::Rejected);
        match q.status(&p.id).unwrap() {
            Status::Decided(_, d) => assert_eq!(d.verdict, Verdict::Rejected),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            q.status("p-nothere1").unwrap_err(),
            QueueError::UnknownId { .. }
        ));
        assert!(matches!(
            q.status("../../etc/passwd").unwrap_err(),
            QueueError::UnknownId { .. }
        ));
    }

    #[test]
    fn pending_proposals_are_capped_and_decided_ones_free_a_slot() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        let mut ids = Vec::new();
        for i in 0..MAX_PENDING {
            ids.push(
                q.submit("b", "j".into(), egress(&format!("h{i}.test")))
                    .unwrap()
                    .id,
            );
        }
        let err = q.submit("b", "j".into(), egress("x.test")).unwrap_err();
        assert!(err.to_string().contains("at most 20"), "{err}");
        decide(dir.path(), &ids[0], Verdict::Approved);
        q.submit("b", "j".into(), egress("x.test")).unwrap();
    }

    /// The bundle never writes a decision: submit and status leave `decisions/` untouched,
    /// and work when it is missing or not writable at all.
    #[test]
    fn the_bundle_never_writes_under_decisions() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        let p = q.submit("b", "j".into(), egress("a.test")).unwrap();
        q.status(&p.id).unwrap();
        assert!(!q.decisions_dir().exists(), "submit created decisions/");

        std::fs::create_dir(q.decisions_dir()).unwrap();
        decide(dir.path(), &p.id, Verdict::Approved);
        let before = snapshot(&q.decisions_dir());
        std::fs::set_permissions(q.decisions_dir(), std::fs::Permissions::from_mode(0o555))
            .unwrap();
        let p2 = q.submit("b", "j".into(), egress("b.test")).unwrap();
        q.status(&p.id).unwrap();
        q.status(&p2.id).unwrap();
        q.pending().unwrap();
        std::fs::set_permissions(q.decisions_dir(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert_eq!(snapshot(&q.decisions_dir()), before);
    }

    fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                    e.metadata().unwrap().modified().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }
}
