//! Forwarding a clean push to the upstream: one atomic `git push` with a lease per ref, run
//! from inside the pre-receive hook so the gate's refs move only if the upstream's did.

use std::path::Path;
use std::time::Duration;

use crate::gate::settings::{GateSettings, Remote};
use crate::gate::upstream::{self, Transport, UpstreamFailure};
use crate::scanner::RefUpdate;

/// Why a forward did not land, or may not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ForwardError {
    /// The upstream could not be contacted, or the push broke off: see
    /// [`ForwardError::may_have_landed`].
    Upstream(UpstreamFailure),
    /// The upstream (or the lease check against it) refused: nothing was pushed (`--atomic`).
    Rejected {
        /// `(ref, reason)` for each refused ref.
        refs: Vec<(String, String)>,
        /// The upstream's own `remote:` lines (its hooks' messages).
        remote_lines: Vec<String>,
    },
}

/// A failed forward: what happened, and the (redacted) git output for the gate's log.
#[derive(Debug)]
pub(crate) struct ForwardFailure {
    pub error: ForwardError,
    pub detail: String,
}

impl ForwardError {
    /// The failure, when the upstream may have applied the push although the forward failed:
    /// it timed out, lost the connection, or broke off after the pack went out. Only a failure
    /// before the upstream could read a command (no pin, wrong host key, key refused) or the
    /// upstream's own rejection (`--atomic`: all refs or none) is a sure "nothing was pushed".
    pub(crate) fn unclear(&self) -> Option<UpstreamFailure> {
        match self {
            ForwardError::Upstream(
                failure @ (UpstreamFailure::TimedOut
                | UpstreamFailure::Unreachable
                | UpstreamFailure::LostReply
                | UpstreamFailure::Other),
            ) => Some(*failure),
            ForwardError::Upstream(_) | ForwardError::Rejected { .. } => None,
        }
    }
}

fn failed(error: ForwardError, detail: impl Into<String>) -> ForwardFailure {
    ForwardFailure {
        error,
        detail: detail.into(),
    }
}

/// One line of `git push --porcelain` output: `<flag>\t<from>:<to>\t<summary>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PorcelainRef {
    pub flag: char,
    pub to: String,
    pub summary: String,
}

impl PorcelainRef {
    /// Whether the ref landed (or already was there).
    pub(crate) fn ok(&self) -> bool {
        matches!(self.flag, ' ' | '+' | '-' | '*' | '=')
    }

    /// Whether the upstream stopped before reporting this ref (it may have taken it).
    pub(crate) fn lost_reply(&self) -> bool {
        self.summary.contains("[remote failure]")
    }
}

/// Parses the ref lines of `git push --porcelain` stdout (skipping `To …` and `Done`).
pub(crate) fn parse_porcelain(stdout: &str) -> Vec<PorcelainRef> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\t');
            let (Some(flag), Some(spec), summary) = (fields.next(), fields.next(), fields.next())
            else {
                return None;
            };
            let mut flag_chars = flag.chars();
            let (Some(flag), None) = (flag_chars.next(), flag_chars.next()) else {
                return None;
            };
            let to = spec.rsplit(':').next().unwrap_or_default().to_owned();
            Some(PorcelainRef {
                flag,
                to,
                summary: summary.unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

/// The `git push` arguments for `updates`: a lease on every ref's old value, so the upstream
/// moves only from the state the agent saw.
pub(crate) fn push_args(upstream: &str, updates: &[RefUpdate]) -> Vec<String> {
    let mut args = vec![
        "push".to_owned(),
        "--porcelain".into(),
        "--atomic".into(),
        "--no-verify".into(),
    ];
    for u in updates {
        let old = if u.old.is_zero() {
            String::new()
        } else {
            u.old.to_string()
        };
        args.push(format!("--force-with-lease={}:{old}", u.refname));
    }
    args.push("--".into());
    args.push(upstream.to_owned());
    for u in updates {
        if u.new.is_zero() {
            args.push(format!(":{}", u.refname));
        } else {
            args.push(format!("{}:{}", u.new, u.refname));
        }
    }
    args
}

/// Pushes `updates` to `remote`'s upstream from the repository at `git_dir` (the quarantine
/// stays visible through the inherited object-directory variables), within `timeout`.
pub(crate) async fn forward(
    settings: &GateSettings,
    transport: &Transport,
    remote: &Remote,
    git_dir: &Path,
    updates: &[RefUpdate],
    timeout: Duration,
) -> Result<(), ForwardFailure> {
    upstream::require_pin(remote)
        .map_err(|f| failed(ForwardError::Upstream(f), "no pinned host key"))?;
    let mut cmd = upstream::upstream_git(settings, transport, remote);
    cmd.env("GIT_DIR", git_dir);
    // The new objects are only in the quarantine: keep git's pointers to it, but not the
    // quarantine marker, which makes git refuse to update refs (and so to push).
    for var in ["GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES"] {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    cmd.args(push_args(&remote.upstream, updates))
        .stdin(std::process::Stdio::null());
    let out = match upstream::run_bounded(cmd, timeout).await {
        Err(upstream::RunError::TimedOut) => {
            return Err(failed(
                ForwardError::Upstream(UpstreamFailure::TimedOut),
                format!("git push killed after {timeout:?}"),
            ));
        }
        Err(upstream::RunError::Io(e)) => {
            return Err(failed(
                ForwardError::Upstream(UpstreamFailure::Other),
                format!("cannot run git push: {e}"),
            ));
        }
        Ok(out) => out,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    push_outcome(out.status.success(), &stdout, &stderr, remote).map_err(|error| {
        let detail = format!(
            "git push {}; stdout: {}; stderr: {}",
            out.status,
            stdout.trim(),
            upstream::redact(stderr.trim(), remote)
        );
        failed(error, detail)
    })
}

/// What a finished `git push --porcelain` says about the forward.
pub(crate) fn push_outcome(
    success: bool,
    stdout: &str,
    stderr: &str,
    remote: &Remote,
) -> Result<(), ForwardError> {
    let refs = parse_porcelain(stdout);
    if success && !refs.is_empty() && refs.iter().all(PorcelainRef::ok) {
        return Ok(());
    }
    if refs.is_empty() {
        return Err(ForwardError::Upstream(UpstreamFailure::classify(stderr)));
    }
    // Every ref reported as taken, yet git failed; or the upstream hung up before reporting
    // (`[remote failure]`): in both the upstream may hold the push.
    if refs.iter().all(PorcelainRef::ok) || refs.iter().any(PorcelainRef::lost_reply) {
        return Err(ForwardError::Upstream(UpstreamFailure::LostReply));
    }
    let rejected = refs
        .iter()
        .filter(|r| !r.ok())
        .map(|r| (r.to.clone(), r.summary.clone()))
        .collect();
    let remote_lines = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("remote: "))
        .map(|l| upstream::redact(l.trim_end(), remote))
        .collect();
    Err(ForwardError::Rejected {
        refs: rejected,
        remote_lines,
    })
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn check(stdout: &str, expect: Expect) {
        let got: Vec<String> = parse_porcelain(stdout)
            .iter()
            .map(|r| format!("{:?} {} ok={} {}", r.flag, r.to, r.ok(), r.summary))
            .collect();
        expect.assert_eq(&got.join("\n"));
    }

    #[test]
    fn porcelain() {
        check(
            "To ssh://h/r.git\n \trefs/heads/main:refs/heads/main\t1111111..2222222\nDone\n",
            expect!["' ' refs/heads/main ok=true 1111111..2222222"],
        );
        check(
            "To ssh://h/r.git\n!\tabc:refs/heads/main\t[rejected] (stale info)\n!\tdef:refs/heads/b\t[rejected] (atomic push failed)\nDone\n",
            expect![[r#"
                '!' refs/heads/main ok=false [rejected] (stale info)
                '!' refs/heads/b ok=false [rejected] (atomic push failed)"#]],
        );
        check(
            "*\tabc:refs/tags/v1\t[new tag]\n-\t:refs/heads/gone\t[deleted]\n",
            expect![[r#"
                '*' refs/tags/v1 ok=true [new tag]
                '-' refs/heads/gone ok=true [deleted]"#]],
        );
    }

    fn check_outcome(success: bool, stdout: &str, stderr: &str, expect: Expect) {
        let remote = Remote {
            name: "app".into(),
            upstream: "ssh://h/r.git".into(),
            dial_address: None,
            identity_file: "/keys/app".into(),
            pin: None,
            allow_delete: false,
            allow_force_push: false,
            max_push_bytes: None,
        };
        let got = push_outcome(success, stdout, stderr, &remote);
        let unclear = got.as_ref().err().and_then(ForwardError::unclear);
        expect.assert_eq(&format!("{got:?} unclear={unclear:?}"));
    }

    /// Only a sure rejection or a failure before the upstream read a command is "nothing was
    /// pushed"; everything else may have landed and is checked with the upstream.
    #[test]
    fn outcomes() {
        let ok = " \tabc:refs/heads/main\t1111111..2222222\nDone\n";
        check_outcome(true, ok, "", expect!["Ok(()) unclear=None"]);
        check_outcome(
            false,
            ok,
            "error: failed to write something locally",
            expect!["Err(Upstream(LostReply)) unclear=Some(LostReply)"],
        );
        check_outcome(
            false,
            "!\tabc:refs/heads/main\t[remote failure] (remote failed to report status)\n",
            "",
            expect!["Err(Upstream(LostReply)) unclear=Some(LostReply)"],
        );
        check_outcome(
            false,
            "!\tabc:refs/heads/main\t[remote rejected] (pre-receive hook declined)\n",
            "remote: no\n",
            expect![[
                r#"Err(Rejected { refs: [("refs/heads/main", "[remote rejected] (pre-receive hook declined)")], remote_lines: ["no"] }) unclear=None"#
            ]],
        );
        check_outcome(
            false,
            "",
            "Connection closed by 127.0.0.1 port 22",
            expect!["Err(Upstream(Unreachable)) unclear=Some(Unreachable)"],
        );
        check_outcome(
            false,
            "",
            "root@h: Permission denied (publickey).",
            expect!["Err(Upstream(AuthRefused)) unclear=None"],
        );
    }

    #[test]
    fn args_lease_every_ref() {
        let z = git2::Oid::ZERO_SHA1;
        let a = git2::Oid::from_str("1111111111111111111111111111111111111111").unwrap();
        let b = git2::Oid::from_str("2222222222222222222222222222222222222222").unwrap();
        let updates = [
            RefUpdate {
                old: a,
                new: b,
                refname: "refs/heads/main".into(),
            },
            RefUpdate {
                old: z,
                new: a,
                refname: "refs/heads/new".into(),
            },
            RefUpdate {
                old: b,
                new: z,
                refname: "refs/heads/gone".into(),
            },
        ];
        expect![[r#"
            push --porcelain --atomic --no-verify --force-with-lease=refs/heads/main:1111111111111111111111111111111111111111 --force-with-lease=refs/heads/new: --force-with-lease=refs/heads/gone:2222222222222222222222222222222222222222 -- ssh://h/r.git 2222222222222222222222222222222222222222:refs/heads/main 1111111111111111111111111111111111111111:refs/heads/new :refs/heads/gone"#]]
        .assert_eq(&push_args("ssh://h/r.git", &updates).join(" "));
    }
}
