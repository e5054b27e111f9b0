//! Per-bottle state on the host: `<manifest home>/state/<identity>/metadata.json`.
//!
//! Written when a bottle starts, removed when it is torn down, so `list` can say which agent a
//! running bottle belongs to. The engine's labels, not this file, are the truth about what
//! exists: `cleanup` works from labels even when the state is gone.

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
}

/// `<root>/state/<identity>`.
pub(crate) fn dir(root: &Path, identity: &str) -> PathBuf {
    root.join("state").join(identity)
}

/// Writes the metadata (creating the directory, mode 0700).
pub(crate) fn save(root: &Path, meta: &Metadata) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = dir(root, &meta.identity);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("metadata.json");
    let text = serde_json::to_string_pretty(meta)?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a bottle's metadata, if any.
pub(crate) fn load(root: &Path, identity: &str) -> Option<Metadata> {
    let text = std::fs::read_to_string(dir(root, identity).join("metadata.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Removes a bottle's state directory; a missing one is fine.
pub(crate) fn remove(root: &Path, identity: &str) -> anyhow::Result<()> {
    let dir = dir(root, identity);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_remove_round_trip() {
        let root = tempfile::tempdir().unwrap();
        let meta = Metadata {
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
        };
        save(root.path(), &meta).unwrap();
        assert_eq!(load(root.path(), "dev-abcde"), Some(meta));
        assert_eq!(identities(root.path()), ["dev-abcde"]);
        remove(root.path(), "dev-abcde").unwrap();
        remove(root.path(), "dev-abcde").unwrap();
        assert!(identities(root.path()).is_empty());
    }
}
