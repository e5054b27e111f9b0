//! Directory scans: every regular file under a root, `.git` skipped, symlinks not followed.

use std::path::Path;

use crate::scanner::engine::Fragment;
use crate::scanner::{Finding, ScanError, Scanner};

/// Files larger than this are skipped (generated blobs, archives), as gitleaks does with
/// `--max-target-megabytes`.
const MAX_FILE_BYTES: u64 = 64 << 20;

pub(crate) fn scan_dir(scanner: &Scanner, root: &Path) -> Result<Vec<Finding>, ScanError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let io = |error| ScanError::Io {
            path: dir.clone(),
            error,
        };
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io)?
            .collect::<Result<_, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let kind = entry.file_type().map_err(|error| ScanError::Io {
                path: path.clone(),
                error,
            })?;
            if kind.is_dir() {
                if entry.file_name() != ".git" {
                    stack.push(path);
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap_or(&path);
            scan_one(scanner, &path, &rel.to_string_lossy(), &mut out)?;
        }
    }
    Ok(out)
}

/// Scans one regular file, reported under its path as given.
pub(crate) fn scan_file(scanner: &Scanner, path: &Path) -> Result<Vec<Finding>, ScanError> {
    let mut out = Vec::new();
    scan_one(scanner, path, &path.to_string_lossy(), &mut out)?;
    Ok(out)
}

/// Scans the file at `path`, reported as `shown`: skipped when larger than the limit, its
/// path rules only when it is binary.
fn scan_one(
    scanner: &Scanner,
    path: &Path,
    shown: &str,
    out: &mut Vec<Finding>,
) -> Result<(), ScanError> {
    let io = |error| ScanError::Io {
        path: path.to_path_buf(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_FILE_BYTES {
        tracing::warn!(path = %path.display(), bytes = meta.len(), "skipping large file");
        return Ok(());
    }
    let data = std::fs::read(path).map_err(io)?;
    // Binary content is skipped (as gitleaks does), but path-only rules still apply.
    if data.iter().take(8000).any(|&b| b == 0) {
        out.extend(scanner.scan_path_rules(shown, "", &mut false));
        return Ok(());
    }
    out.extend(scanner.scan_fragment(&Fragment {
        text: &data,
        path: shown,
        commit: "",
        start_line: 1,
    }));
    Ok(())
}
