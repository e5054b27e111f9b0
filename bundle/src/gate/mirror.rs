//! The bare mirrors: creation, the shared pre-receive hook, and the fail-closed refresh from
//! the upstream that runs before every fetch.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::gate::gitenv;
use crate::gate::settings::{GateSettings, Remote};
use crate::gate::upstream::{self, Transport, UpstreamFailure};

/// Longest a refresh (`git fetch` from the upstream) may take before the fetch is refused.
pub(crate) const REFRESH_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a mirror could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MirrorError {
    // The cause is in the message, so it is not also the `source` (anyhow's `{:#}` would
    // print it twice).
    #[error("cannot create {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("`git init --bare {path}` failed: {stderr}")]
    Init { path: String, stderr: String },
}

/// One lock per served repository: a refresh and a receive never overlap.
#[derive(Debug, Default)]
pub(crate) struct RepoLocks {
    locks: HashMap<String, Arc<Mutex<()>>>,
}

impl RepoLocks {
    pub(crate) fn new(settings: &GateSettings) -> RepoLocks {
        RepoLocks {
            locks: settings
                .remotes
                .iter()
                .map(|r| (r.name.clone(), Arc::new(Mutex::new(()))))
                .collect(),
        }
    }

    /// The lock of `remote` (every configured remote has one).
    pub(crate) fn of(&self, remote: &Remote) -> Arc<Mutex<()>> {
        self.locks
            .get(&remote.name)
            .cloned()
            .unwrap_or_else(|| Arc::new(Mutex::new(())))
    }
}

/// Creates the mirrors directory, every missing bare mirror, and the hook script that runs
/// `program gate hook pre-receive`.
pub(crate) fn prepare(settings: &GateSettings, program: &Path) -> Result<(), MirrorError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |error| MirrorError::Io { path, error }
    };
    let hooks = settings.hooks_dir();
    std::fs::create_dir_all(&hooks).map_err(io(&hooks))?;
    install_hook(&hooks, program).map_err(io(&hooks))?;
    let global = gitenv::global_config_path(settings);
    gitenv::write_empty_global_config(settings).map_err(io(&global))?;
    for remote in &settings.remotes {
        let path = settings.mirror_path(remote);
        if path.join("HEAD").exists() {
            continue;
        }
        let out = gitenv::git(settings)
            .args(["init", "--bare", "--quiet"])
            .arg(&path)
            .output()
            .map_err(io(&path))?;
        if !out.status.success() {
            return Err(MirrorError::Init {
                path: path.display().to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        // The sample hooks git copies in are never used (core.hooksPath points elsewhere).
        let _ = std::fs::remove_dir_all(path.join("hooks"));
    }
    Ok(())
}

/// The path of the installed pre-receive hook.
pub(crate) fn hook_path(settings: &GateSettings) -> std::path::PathBuf {
    settings.hooks_dir().join("pre-receive")
}

fn install_hook(hooks: &Path, program: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let quoted = format!("'{}'", program.to_string_lossy().replace('\'', r"'\''"));
    let script = format!(
        "#!/bin/sh\n# Written by bottle-bundle gate. Every failure of the command below rejects the push.\nexec {quoted} gate hook pre-receive\n"
    );
    let path = hooks.join("pre-receive");
    let tmp = hooks.join(format!(".pre-receive.tmp.{}", std::process::id()));
    std::fs::write(&tmp, script)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &path)
}

/// Fetches every branch and tag from the upstream into the mirror, pruning what is gone.
/// Any failure is returned: the caller refuses the fetch rather than serve stale refs.
pub(crate) async fn refresh(
    settings: &GateSettings,
    transport: &Transport,
    remote: &Remote,
    timeout: Duration,
) -> Result<(), UpstreamFailure> {
    upstream::require_pin(remote)?;
    let mut cmd = upstream::upstream_git(settings, transport, remote);
    cmd.env("GIT_DIR", settings.mirror_path(remote))
        .args(["fetch", "--quiet", "--prune", "--no-write-fetch-head", "--"])
        .arg(&remote.upstream)
        .args(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"])
        .stdin(std::process::Stdio::null());
    let out = match upstream::run_bounded(cmd, timeout).await {
        Err(upstream::RunError::TimedOut) => return Err(UpstreamFailure::TimedOut),
        Err(upstream::RunError::Io(e)) => {
            tracing::error!(remote = %remote.name, error = %e, "cannot run git fetch");
            return Err(UpstreamFailure::Other);
        }
        Ok(out) => out,
    };
    if out.status.success() {
        fix_head(&settings.mirror_path(remote));
        pack_refs(settings, remote, timeout).await;
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failure = UpstreamFailure::classify(&stderr);
    tracing::warn!(
        remote = %remote.name,
        reason = ?failure,
        stderr = %upstream::redact(stderr.trim(), remote),
        "refresh from upstream failed"
    );
    Err(failure)
}

/// Packs the mirror's refs into `packed-refs`. `git fetch` writes each new ref as a file of
/// its own, and the push hook's `git rev-list --not --glob=refs/*` opens every one of them:
/// with a thousand tags that is most of a one-commit push scan's time (`bench/scanner/run`
/// times both). A failure only costs that time, so it is logged, not returned.
async fn pack_refs(settings: &GateSettings, remote: &Remote, timeout: Duration) {
    let mut cmd = tokio::process::Command::from(gitenv::git(settings));
    cmd.env("GIT_DIR", settings.mirror_path(remote))
        .args(["pack-refs", "--all", "--prune"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match upstream::run_bounded(cmd, timeout).await {
        Ok(out) if out.status.success() => {}
        Ok(out) => tracing::warn!(
            remote = %remote.name,
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "git pack-refs failed in the mirror"
        ),
        Err(e) => {
            tracing::warn!(remote = %remote.name, error = ?e, "cannot pack the mirror's refs")
        }
    }
}

/// Points a dangling mirror `HEAD` at `main`, `master` or the first branch, so clones through
/// the gate check out a branch. (The upstream's own HEAD would cost a second connection.)
fn fix_head(mirror: &Path) {
    let Ok(repo) = git2::Repository::open_bare(mirror) else {
        return;
    };
    if repo.head().is_ok() {
        return;
    }
    let mut candidates = vec!["refs/heads/main".to_owned(), "refs/heads/master".to_owned()];
    if let Ok(refs) = repo.references_glob("refs/heads/*") {
        candidates.extend(
            refs.flatten()
                .filter_map(|r| r.name().ok().map(str::to_owned)),
        );
    }
    if let Some(name) = candidates
        .into_iter()
        .find(|name| repo.find_reference(name).is_ok())
    {
        let _ = repo.set_head(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_shows_its_cause_once() {
        let err = MirrorError::Io {
            path: "/m/.gate/hooks".into(),
            error: std::io::Error::other("disk on fire"),
        };
        let text = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(text, "cannot create /m/.gate/hooks: disk on fire");
    }
}
