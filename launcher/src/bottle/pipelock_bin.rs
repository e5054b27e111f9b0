//! Where the bundle image's pipelock comes from: the executable `CLAUDE_BOTTLE_PIPELOCK_BIN`
//! names, or none (direct egress). Pipelock is not on any registry this project can install
//! from (a Go program; its releases are GitHub binaries), so the user brings it.
//!
//! The file is checked before anything is built: a regular file, executable, not larger than
//! [`MAX_PIPELOCK_BYTES`], answering `--version` with a pipelock version within
//! [`VERSION_TIMEOUT`]. A variable that is set but names something unusable is an error, never
//! a silent start without pipelock.

use std::io::Read;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Names a Linux pipelock executable to copy into the bundle image.
pub(crate) const PIPELOCK_BIN_ENV: &str = "CLAUDE_BOTTLE_PIPELOCK_BIN";
/// `pipelock --version` must answer within this.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Pipelock's release binaries are about 60 MB; a bound on what is read into memory.
pub(crate) const MAX_PIPELOCK_BYTES: u64 = 512 << 20;
/// Most of `--version`'s output read.
const MAX_VERSION_OUTPUT: u64 = 4096;

/// A checked pipelock executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PipelockBin {
    pub(crate) path: PathBuf,
    /// What `--version` printed, e.g. `2.4.1`.
    pub(crate) version: String,
}

/// Why the named pipelock cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PipelockBinError {
    #[error("{PIPELOCK_BIN_ENV}: {error}")]
    File {
        error: crate::hostfile::HostFileError,
    },
    #[error(
        "{PIPELOCK_BIN_ENV}={path}: {size} bytes is larger than any pipelock build (at most {MAX_PIPELOCK_BYTES})"
    )]
    TooLarge { path: String, size: u64 },
    #[error("{PIPELOCK_BIN_ENV}={path}: not executable (chmod +x it)")]
    NotExecutable { path: String },
    #[error(
        "{PIPELOCK_BIN_ENV}={path}: cannot run `--version` ({error}); a Linux build of pipelock for this machine is needed"
    )]
    Run { path: String, error: String },
    #[error("{PIPELOCK_BIN_ENV}={path}: `--version` {why}; is it pipelock?")]
    Version { path: String, why: String },
}

/// The pipelock `CLAUDE_BOTTLE_PIPELOCK_BIN` names, checked; `None` when it is unset or empty.
pub(crate) fn locate() -> Result<Option<PipelockBin>, PipelockBinError> {
    match std::env::var_os(PIPELOCK_BIN_ENV).filter(|p| !p.is_empty()) {
        Some(path) => check(Path::new(&path)).map(Some),
        None => Ok(None),
    }
}

/// Reads the executable (bounded, a regular file only) for the bundle image's build context.
pub(crate) fn read(bin: &PipelockBin) -> anyhow::Result<Vec<u8>> {
    Ok(crate::hostfile::read_bounded(
        &bin.path,
        MAX_PIPELOCK_BYTES,
    )?)
}

/// Checks `path` and returns its version.
pub(crate) fn check(path: &Path) -> Result<PipelockBin, PipelockBinError> {
    let shown = path.display().to_string();
    // Anything may be named: a FIFO or a device must not block the preflight.
    let (file, size) =
        crate::hostfile::open_regular(path).map_err(|error| PipelockBinError::File { error })?;
    if size > MAX_PIPELOCK_BYTES {
        return Err(PipelockBinError::TooLarge { path: shown, size });
    }
    let mode = file
        .metadata()
        .map(|m| m.permissions().mode())
        .unwrap_or_default();
    if mode & 0o111 == 0 {
        return Err(PipelockBinError::NotExecutable { path: shown });
    }
    drop(file);
    let output = version_output(path).map_err(|error| PipelockBinError::Run {
        path: shown.clone(),
        error,
    })?;
    let version = parse_version(&output).map_err(|why| PipelockBinError::Version {
        path: shown.clone(),
        why,
    })?;
    Ok(PipelockBin {
        path: path.to_owned(),
        version,
    })
}

/// Runs `path --version` with no environment (bounded in time and output); its stdout.
fn version_output(path: &Path) -> Result<String, String> {
    let mut child = Command::new(path)
        .arg("--version")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => {
                let mut out = String::new();
                if let Some(stdout) = child.stdout.take() {
                    let _ = stdout.take(MAX_VERSION_OUTPUT).read_to_string(&mut out);
                }
                if !status.success() {
                    return Err(format!("it failed ({status})"));
                }
                return Ok(out);
            }
            None if started.elapsed() > VERSION_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("it did not answer within {VERSION_TIMEOUT:?}"));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The version in pipelock's `--version` output (`pipelock version 2.4.1`, `pipelock v2.4.1
/// (commit …)`): the first line must name pipelock and hold a dotted version.
fn parse_version(output: &str) -> Result<String, String> {
    let line = output.lines().next().unwrap_or_default().trim();
    let shown: String = crate::manifest::values::escape_controls(
        &line.chars().take(80).collect::<String>(),
        crate::manifest::values::Layout::Line,
    );
    if !line.to_ascii_lowercase().contains("pipelock") {
        return Err(format!("printed `{shown}`, which does not name pipelock"));
    }
    line.split_whitespace()
        .map(|w| w.trim_start_matches('v'))
        .find(|w| {
            let numeric = w.split(['-', '+']).next().unwrap_or_default();
            numeric.split('.').count() >= 2
                && numeric
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_owned)
        .ok_or_else(|| format!("printed `{shown}`, which holds no version"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn versions_are_read_from_pipelocks_output_forms() {
        for (out, want) in [
            ("pipelock version 2.4.1\n", Ok("2.4.1")),
            (
                "pipelock v2.5.0 (commit abc, built 2026-01-01)\n",
                Ok("2.5.0"),
            ),
            (
                "Pipelock 0.0.0-standin (claude-bottle e2e stand-in)",
                Ok("0.0.0-standin"),
            ),
            (
                "curl 8.5.0 (x86_64-pc-linux-gnu)",
                Err("does not name pipelock"),
            ),
            ("pipelock dev", Err("holds no version")),
            ("", Err("does not name pipelock")),
        ] {
            match (parse_version(out), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{out}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{out}: {got}"),
                (got, want) => panic!("{out}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn each_unusable_file_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let good = script(
            dir.path(),
            "pipelock",
            "echo 'pipelock version 2.4.1'",
            0o755,
        );
        assert_eq!(
            check(&good).unwrap(),
            PipelockBin {
                path: good.clone(),
                version: "2.4.1".into()
            }
        );
        let text = |path: &Path| check(path).unwrap_err().to_string();
        let plain = script(dir.path(), "plain", "echo 'pipelock version 2.4.1'", 0o644);
        assert!(
            text(&plain).contains("not executable (chmod +x it)"),
            "{}",
            text(&plain)
        );
        assert!(
            text(dir.path()).contains("not a regular file"),
            "{}",
            text(dir.path())
        );
        let missing = dir.path().join("missing");
        assert!(
            text(&missing).contains("CLAUDE_BOTTLE_PIPELOCK_BIN: "),
            "{}",
            text(&missing)
        );
        let curl = script(dir.path(), "curl", "echo 'curl 8.5.0'", 0o755);
        assert!(
            text(&curl).contains("which does not name pipelock; is it pipelock?"),
            "{}",
            text(&curl)
        );
        let failing = script(dir.path(), "failing", "exit 3", 0o755);
        assert!(
            text(&failing).contains("cannot run `--version` (it failed"),
            "{}",
            text(&failing)
        );
        // A FIFO is refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(
            text(&fifo).contains("is a FIFO, not a regular file"),
            "{}",
            text(&fifo)
        );
        // Too large: a sparse file, so the test writes nothing.
        let big = dir.path().join("big");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_PIPELOCK_BYTES + 1).unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            text(&big).contains("larger than any pipelock build"),
            "{}",
            text(&big)
        );
    }
}
