//! Reading a directory tree (the `--cwd` work tree, a skill) into files to copy into a
//! container. Regular files and directories keep their permission bits; symbolic links are
//! skipped and counted, since one could point outside the tree.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;

use crate::backend::ContextFile;
use crate::hostfile::{self, HostFileError};

/// Largest tree copied in (bytes of file contents).
pub(crate) const MAX_TREE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// A tree read from disk.
pub(crate) struct Tree {
    /// Paths relative to the tree's root; directories end with `/`.
    pub(crate) files: Vec<ContextFile>,
    pub(crate) bytes: u64,
    pub(crate) skipped_links: usize,
}

/// Reads every file and directory under `root`.
pub(crate) fn read(root: &Path) -> anyhow::Result<Tree> {
    let mut tree = Tree {
        files: Vec::new(),
        bytes: 0,
        skipped_links: 0,
    };
    walk(root, root, &mut tree)?;
    Ok(tree)
}

fn walk(root: &Path, dir: &Path, tree: &mut Tree) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let rel = path
            .strip_prefix(root)
            .with_context(|| format!("{} is outside {}", path.display(), root.display()))?
            .to_string_lossy()
            .into_owned();
        let mode = meta.permissions().mode() & 0o777;
        // Kept, so `make`, `git status` and editors in the bottle see the files as they were.
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        if meta.file_type().is_symlink() {
            tree.skipped_links += 1;
        } else if meta.is_dir() {
            tree.files
                .push(ContextFile::dir(rel, mode | 0o700).modified_at(mtime));
            walk(root, &path, tree)?;
        } else if meta.is_file() {
            // Through the one bounded reader, capped by what is left of the budget: the file
            // was a regular one when listed, and must still be when opened (not a FIFO or a
            // device swapped in since, not a procfs file that claims to be empty).
            let budget = MAX_TREE_BYTES.saturating_sub(tree.bytes);
            let contents = hostfile::read_bounded(&path, budget).map_err(|e| match e {
                HostFileError::TooLarge { .. } => anyhow::anyhow!(
                    "{} is larger than {} GiB; copy a smaller directory",
                    root.display(),
                    MAX_TREE_BYTES >> 30
                ),
                other => other.into(),
            })?;
            tree.bytes += contents.len() as u64;
            tree.files
                .push(ContextFile::new(rel, contents, mode | 0o600).modified_at(mtime));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_and_dirs_and_skips_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/main.rs"), "fn main() {}").unwrap();
        std::fs::write(dir.path().join("run.sh"), "echo").unwrap();
        std::fs::set_permissions(
            dir.path().join("run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
        let tree = read(dir.path()).unwrap();
        let shown: Vec<String> = tree
            .files
            .iter()
            .map(|f| format!("{} {:o}", f.path, f.mode))
            .collect();
        assert_eq!(shown, ["run.sh 755", "src/ 755", "src/main.rs 644"]);
        assert_eq!(tree.bytes, 16);
        assert_eq!(tree.skipped_links, 1);
    }

    #[test]
    fn files_keep_their_modification_time() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("old.txt");
        std::fs::write(&file, "x").unwrap();
        let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(then)
            .unwrap();
        let tree = read(dir.path()).unwrap();
        assert_eq!(tree.files[0].path, "old.txt");
        assert_eq!(tree.files[0].mtime, 1_600_000_000);
    }

    #[test]
    fn kernel_files_are_refused() {
        // `--cwd /proc/self` would copy the launcher's environment into the agent.
        let err = read(Path::new("/proc/self/net"))
            .err()
            .map(|e| format!("{e:#}"));
        assert!(err.is_some_and(|e| e.contains("is on procfs")));
    }
}
