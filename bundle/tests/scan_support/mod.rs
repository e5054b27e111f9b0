//! Shared helpers for the scanner's integration tests: git fixture repositories built with the
//! real `git` CLI, and test tokens assembled at run time (no literal token in the source).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A deterministic high-entropy alphanumeric string.
pub fn fill(seed: u64, n: usize) -> String {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALNUM[(x % ALNUM.len() as u64) as usize] as char
        })
        .collect()
}

/// A token in GitHub's classic PAT format (matched by the `github-pat` rule).
pub fn github_token(seed: u64) -> String {
    ["gh", "p_"].concat() + &fill(seed, 36)
}

/// A token in Stripe's secret key format (matched by `stripe-secret-key`).
pub fn stripe_token(seed: u64) -> String {
    ["sk", "_live_"].concat() + &fill(seed, 24)
}

/// A git repository in a temp dir, driven through the `git` CLI.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    /// `git init` (non-bare) with a fixed identity and no user/system config.
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo { dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs git in the repo; panics with its stderr on failure.
    pub fn git(&self, args: &[&str]) -> String {
        let out = git_in(self.path(), args);
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn write(&self, file: &str, text: &str) {
        let path = self.path().join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, text).unwrap();
    }

    /// Stages everything and commits; returns the new commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn rev(&self, rev: &str) -> String {
        self.git(&["rev-parse", rev])
    }
}

/// `git` with a clean, deterministic environment.
pub fn git_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        // Not /dev/null: git writes config through a lock file renamed over the target.
        .env(
            "GIT_CONFIG_GLOBAL",
            concat!(env!("CARGO_TARGET_TMPDIR"), "/test.gitconfig"),
        )
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.test")
        .env("GIT_COMMITTER_NAME", "Test Author")
        .env("GIT_COMMITTER_EMAIL", "author@example.test")
        .env("GIT_AUTHOR_DATE", "2024-01-02T03:04:05Z")
        .env("GIT_COMMITTER_DATE", "2024-01-02T03:04:05Z");
    cmd
}

pub fn git_in(dir: &Path, args: &[&str]) -> Output {
    git_cmd(dir)
        .args(args)
        .output()
        .expect("running git: install git (scripts/test does)")
}

/// The `bottle-bundle` binary built for this test run.
pub fn bundle_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bottle-bundle"))
}
