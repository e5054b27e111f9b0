//! Per-bottle state on the host: `<manifest home>/state/<identity>/` (`metadata.json`, and for
//! a suspended bottle `agent.Dockerfile` and `work.tar`; `routes.json`, the object holding the
//! routes live after the last approval, is read and written only by `supervise::routes`),
//! and the bottle's supervise queue, `<manifest home>/queue/<identity>/`.
//!
//! Written when a bottle starts, removed when it is torn down, so `list` can say which agent a
//! running bottle belongs to. The engine's labels, not this file, are the truth about what
//! exists: `cleanup` works from labels even when the state is gone. A *suspended* bottle (an
//! approved `capability-block`) has state and a queue but no Docker objects; only `resume`
//! and `stop` end that.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What the launcher remembers about one bottle. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Metadata {
    pub(crate) identity: String,
    pub(crate) agent: String,
    pub(crate) bottle: String,
    /// Seconds since the Unix epoch.
    pub(crate) started: u64,
    pub(crate) agent_container: String,
    pub(crate) bundle_container: String,
    pub(crate) agent_image: String,
    pub(crate) bundle_image: String,
    pub(crate) detached: bool,
    /// The launcher attached to it; `cleanup` treats an attached bottle whose launcher is gone
    /// as an orphan (the launcher was killed before it could tear down).
    pub(crate) launcher_pid: u32,
    /// The project directory the agent's manifest was found from (`--cwd` or the current
    /// directory), so `resume` reads the same agent file.
    #[serde(default)]
    pub(crate) project: Option<PathBuf>,
    /// Stopped by an approved `capability-block`, its Dockerfile and work tree saved here:
    /// `claude-bottle resume` rebuilds it. Nothing removes a suspended bottle's state but
    /// `resume` (when the bottle ends) and `stop`.
    #[serde(default)]
    pub(crate) suspended: bool,
    /// The start finished: the agent's command was released (the ready file exists) and the
    /// launcher said so. Saved `false` before anything is created and `true` only after, so a
    /// launcher killed in between leaves a bottle `cleanup` knows never became ready (its
    /// agent would wait for the ready file forever). Metadata from before this field was
    /// written only by launchers that finished or tore down, so a missing field means ready.
    #[serde(default = "ready_when_unrecorded")]
    pub(crate) ready: bool,
}

fn ready_when_unrecorded() -> bool {
    true
}

/// The agent Dockerfile an approved `capability-block` proposed, saved for `resume`.
pub(crate) const DOCKERFILE: &str = "agent.Dockerfile";
/// The agent's work tree (a tar of `/home/agent/work`), saved when the bottle was suspended.
pub(crate) const WORK_TAR: &str = "work.tar";
/// Approved egress routes (a JSON list of `bottle_contract::bundle_config::RouteConfig`,
/// token slot names only), written by the approvals and re-applied by `resume`.
pub(crate) const ROUTES: &str = "routes.json";
/// The pipelock changes approved while the bottle ran (`supervise::decide`), for `resume`.
pub(crate) const PIPELOCK_CHANGES: &str = "pipelock-changes.json";

/// `<root>/state/<identity>`.
pub(crate) fn dir(root: &Path, identity: &str) -> PathBuf {
    root.join("state").join(identity)
}

/// `<root>/queue/<identity>`: the bottle's supervise queue (`proposals/`, `decisions/`).
pub(crate) fn queue_dir(root: &Path, identity: &str) -> PathBuf {
    root.join("queue").join(identity)
}

/// Creates the bottle's queue and returns it. The queue itself is 0700 (only the host user
/// gets in); `proposals/` inside it is 0777 because the bundle writes there as its container's
/// root *without* `CAP_DAC_OVERRIDE` (all capabilities dropped), which on a non-root host user's
/// directory needs the "other" bits; nobody else on the host can reach it through the 0700
/// parent. `decisions/` is 0755: the bundle reads it (mounted read-only), only the host writes.
pub(crate) fn create_queue(root: &Path, identity: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let queue = queue_dir(root, identity);
    let modes = [
        (queue.clone(), 0o700),
        (queue.join(bottle_contract::supervise::PROPOSALS_DIR), 0o777),
        (queue.join(bottle_contract::supervise::DECISIONS_DIR), 0o755),
    ];
    for (dir, mode) in modes {
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)))
            .with_context(|| format!("cannot create the supervise queue {}", dir.display()))?;
    }
    Ok(queue)
}

/// The pipelock changes approved for bottle `identity`, oldest first (none without a file).
pub(crate) fn pipelock_changes(root: &Path, identity: &str) -> anyhow::Result<Vec<String>> {
    let path = dir(root, identity).join(PIPELOCK_CHANGES);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| {
            format!(
                "{} does not hold a list of pipelock changes; fix or remove it to resume without them",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Records an approved pipelock change, for `resume`.
pub(crate) fn add_pipelock_change(root: &Path, identity: &str, change: &str) -> anyhow::Result<()> {
    let mut changes = pipelock_changes(root, identity)?;
    changes.push(change.to_owned());
    let text = serde_json::to_string_pretty(&changes)?;
    write_file(root, identity, PIPELOCK_CHANGES, text.as_bytes()).map(|_| ())
}

/// Writes the metadata (creating the directory, mode 0700).
pub(crate) fn save(root: &Path, meta: &Metadata) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(meta)?;
    write_file(root, &meta.identity, "metadata.json", text.as_bytes()).map(|_| ())
}

/// Writes `<state dir>/<name>` (mode 0600; the directory 0700, created if needed) through a
/// temporary file and a rename, so a reader never sees half of it.
pub(crate) fn write_file(
    root: &Path,
    identity: &str,
    name: &str,
    contents: &[u8],
) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = dir(root, identity);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        std::io::Write::write_all(&mut file, contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Records that bottle `started`'s start finished ([`Metadata::ready`]); `resumed` also ends its
/// suspension. Re-reads the file first: the agent already runs, and an approval may have
/// suspended it since `started` was saved, which must not be undone here.
pub(crate) fn mark_ready(root: &Path, started: &Metadata, resumed: bool) -> anyhow::Result<()> {
    let mut meta = load(root, &started.identity).unwrap_or_else(|| started.clone());
    meta.ready = true;
    if resumed {
        meta.suspended = false;
    }
    save(root, &meta)
}

/// Records that no launcher is attached to a running bottle any more (the user detached), so
/// `cleanup` leaves it alone as it does a bottle started with `-d`.
pub(crate) fn mark_detached(root: &Path, identity: &str) -> anyhow::Result<()> {
    let Some(mut meta) = load(root, identity) else {
        anyhow::bail!("bottle {identity} has no state to update");
    };
    meta.detached = true;
    save(root, &meta)
}

/// Reads a bottle's metadata, if any.
pub(crate) fn load(root: &Path, identity: &str) -> Option<Metadata> {
    let text = std::fs::read_to_string(dir(root, identity).join("metadata.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether bottle `identity` is suspended (see [`Metadata::suspended`]).
pub(crate) fn is_suspended(root: &Path, identity: &str) -> bool {
    load(root, identity).is_some_and(|m| m.suspended)
}

/// Removes a bottle's state directory and its supervise queue; missing ones are fine.
pub(crate) fn remove(root: &Path, identity: &str) -> anyhow::Result<()> {
    for dir in [dir(root, identity), queue_dir(root, identity)] {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", dir.display())),
        }
    }
    Ok(())
}

/// Identities with a state directory.
pub(crate) fn identities(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.join("state")) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    ids
}

/// A detached, ready, not suspended bottle `dev-abcde`, for tests.
#[cfg(test)]
pub(crate) fn sample() -> Metadata {
    Metadata {
        identity: "dev-abcde".into(),
        agent: "dev".into(),
        bottle: "b".into(),
        started: 1,
        agent_container: "a".into(),
        bundle_container: "bu".into(),
        agent_image: "ai".into(),
        bundle_image: "bi".into(),
        detached: true,
        launcher_pid: 1,
        project: None,
        suspended: false,
        ready: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approved_pipelock_changes_are_kept_in_order() {
        let dir = tempfile::tempdir().unwrap();
        assert!(pipelock_changes(dir.path(), "a-00000").unwrap().is_empty());
        add_pipelock_change(dir.path(), "a-00000", "api_allowlist: [one.test]\n").unwrap();
        add_pipelock_change(dir.path(), "a-00000", "api_allowlist: [two.test]\n").unwrap();
        assert_eq!(
            pipelock_changes(dir.path(), "a-00000").unwrap(),
            ["api_allowlist: [one.test]\n", "api_allowlist: [two.test]\n"]
        );
    }

    #[test]
    fn save_load_remove_round_trip() {
        let root = tempfile::tempdir().unwrap();
        let meta = Metadata {
            project: Some("/p".into()),
            suspended: true,
            ready: false,
            ..sample()
        };
        save(root.path(), &meta).unwrap();
        assert_eq!(load(root.path(), "dev-abcde"), Some(meta));
        assert!(is_suspended(root.path(), "dev-abcde"));
        assert_eq!(identities(root.path()), ["dev-abcde"]);
        let queue = create_queue(root.path(), "dev-abcde").unwrap();
        assert!(queue.join("proposals").is_dir() && queue.join("decisions").is_dir());
        remove(root.path(), "dev-abcde").unwrap();
        remove(root.path(), "dev-abcde").unwrap();
        assert!(identities(root.path()).is_empty());
        assert!(!queue.exists());
    }

    #[test]
    fn mark_detached_makes_an_attached_bottle_a_detached_one() {
        let root = tempfile::tempdir().unwrap();
        let started = Metadata {
            detached: false,
            ..sample()
        };
        save(root.path(), &started).unwrap();
        mark_detached(root.path(), "dev-abcde").unwrap();
        assert_eq!(
            load(root.path(), "dev-abcde"),
            Some(Metadata {
                detached: true,
                ..started
            })
        );
        assert!(mark_detached(root.path(), "dev-zzzzz").is_err());
    }

    #[test]
    fn mark_ready_keeps_a_suspension_that_came_after_the_start() {
        let root = tempfile::tempdir().unwrap();
        let started = Metadata {
            ready: false,
            ..sample()
        };
        save(root.path(), &started).unwrap();
        mark_ready(root.path(), &started, false).unwrap();
        assert_eq!(
            load(root.path(), "dev-abcde"),
            Some(Metadata {
                ready: true,
                ..started.clone()
            })
        );
        // An approval suspended the fresh bottle in between: it stays suspended.
        save(
            root.path(),
            &Metadata {
                suspended: true,
                ..started.clone()
            },
        )
        .unwrap();
        mark_ready(root.path(), &started, false).unwrap();
        let meta = load(root.path(), "dev-abcde").unwrap();
        assert!(meta.ready && meta.suspended);
        // A finished resume is no longer suspended.
        mark_ready(root.path(), &started, true).unwrap();
        assert!(!load(root.path(), "dev-abcde").unwrap().suspended);
    }

    #[test]
    fn metadata_from_before_suspend_existed_still_loads() {
        let root = tempfile::tempdir().unwrap();
        let dir = dir(root.path(), "dev-old00");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("metadata.json"),
            r#"{"identity":"dev-old00","agent":"dev","bottle":"b","started":1,
                "agent_container":"a","bundle_container":"bu","agent_image":"ai",
                "bundle_image":"bi","detached":false,"launcher_pid":1}"#,
        )
        .unwrap();
        let meta = load(root.path(), "dev-old00").unwrap();
        assert!(!meta.suspended);
        assert!(
            meta.ready,
            "a bottle recorded before `ready` existed is not half-started"
        );
        assert_eq!(meta.project, None);
    }

    #[test]
    fn queue_modes_let_the_bundle_write_proposals_and_only_read_decisions() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let queue = create_queue(root.path(), "dev-abcde").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&queue), 0o700);
        assert_eq!(mode(&queue.join("proposals")), 0o777);
        assert_eq!(mode(&queue.join("decisions")), 0o755);
    }

    #[test]
    fn state_files_are_private_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let path = write_file(root.path(), "dev-abcde", WORK_TAR, b"one").unwrap();
        write_file(root.path(), "dev-abcde", WORK_TAR, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir(root.path(), "dev-abcde"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [WORK_TAR]);
    }
}
