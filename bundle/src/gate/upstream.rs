//! How the gate's own git processes reach an upstream: git runs this binary's `ssh`
//! subcommand ([`crate::gate::ssh`]) as its SSH transport, which connects with russh, accepts
//! only the pinned host key and authenticates with the gate-held key. Nothing from the
//! environment or an ssh config takes part.

use std::path::PathBuf;

use tokio::process::Command;

use crate::gate::settings::{GateSettings, HostKeyPin, Remote};
use crate::gate::{gitenv, hook, ssh};

/// What a gate git needs to reach an upstream through `bottle-bundle ssh`.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    /// The bundle binary, run by git as `<program> ssh …`.
    pub program: PathBuf,
    /// The absolute bundle config path: `bottle-bundle ssh` reads the remote's settings there.
    pub config_path: PathBuf,
}

/// Why an upstream contact failed, as far as ssh's and git's stderr tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamFailure {
    /// No `known_host_key` in the config: the gate contacts nothing.
    NoPin,
    /// The upstream presented a host key other than the pinned one.
    HostKeyMismatch,
    /// The upstream did not accept the gate's key.
    AuthRefused,
    /// No connection (refused, unresolvable, timed out, closed).
    Unreachable,
    /// The operation ran past its time limit and was killed.
    TimedOut,
    /// The upstream stopped answering after the push went out, before it reported a result.
    LostReply,
    /// Anything else (the log has git's stderr).
    Other,
}

impl UpstreamFailure {
    /// Reads git's stderr, which carries `bottle-bundle ssh`'s one-line error.
    pub(crate) fn classify(stderr: &str) -> UpstreamFailure {
        if stderr.contains(ssh::HOST_KEY_MISMATCH) {
            UpstreamFailure::HostKeyMismatch
        } else if stderr.contains(ssh::AUTH_REFUSED) {
            UpstreamFailure::AuthRefused
        } else if ssh::UNREACHABLE
            .iter()
            .any(|marker| stderr.contains(marker))
        {
            UpstreamFailure::Unreachable
        } else {
            UpstreamFailure::Other
        }
    }

    /// What the agent is told. Names no path, key or address.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            UpstreamFailure::NoPin => {
                "no host key is pinned for this remote, so the gate will neither fetch nor push it; the operator adds `KnownHostKey` to the git entry in the manifest (`ssh-keyscan -p PORT -t ed25519 HOST` prints the upstream's key)"
            }
            UpstreamFailure::HostKeyMismatch => {
                "the upstream's SSH host key does not match the pinned `KnownHostKey`"
            }
            UpstreamFailure::AuthRefused => "the upstream refused the gate's SSH key",
            UpstreamFailure::Unreachable => "the upstream is unreachable",
            UpstreamFailure::TimedOut => "the upstream did not answer in time",
            UpstreamFailure::LostReply => "the upstream did not report the push's result",
            UpstreamFailure::Other => "the upstream operation failed (see the bundle log)",
        }
    }
}

/// `remote`'s pin; `NoPin` when there is none (the gate then contacts nothing).
pub(crate) fn require_pin(remote: &Remote) -> Result<&HostKeyPin, UpstreamFailure> {
    remote.pin.as_ref().ok_or(UpstreamFailure::NoPin)
}

/// A `git` command for talking to `remote`'s upstream: the gate's clean environment, and
/// `bottle-bundle ssh` as the only SSH transport, told which remote it serves.
pub(crate) fn upstream_git(
    settings: &GateSettings,
    transport: &Transport,
    remote: &Remote,
) -> Command {
    let mut cmd = Command::from(gitenv::git(settings));
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        // `ssh` makes git pass the port as `-p PORT` (`simple` refuses a port).
        .env("GIT_SSH_VARIANT", "ssh")
        .env("GIT_SSH_COMMAND", ssh_command(transport))
        .env(hook::CONFIG_ENV, &transport.config_path)
        .env(hook::REMOTE_ENV, &remote.name)
        .kill_on_drop(true);
    cmd
}

/// The transport command line (a shell string, as git runs it).
fn ssh_command(transport: &Transport) -> String {
    format!("{} ssh", shell_quote(&transport.program.to_string_lossy()))
}

/// Why [`run_bounded`] produced no output.
#[derive(Debug)]
pub(crate) enum RunError {
    /// Still running at the time limit: killed, with its `bottle-bundle ssh`.
    TimedOut,
    /// Could not be started or waited for.
    Io(std::io::Error),
}

/// Runs `cmd` (from [`upstream_git`]) to completion within `timeout`, capturing its output.
/// git runs in its own process group so that a timeout kills its SSH transport too: a
/// surviving one would hold the upstream connection (and the upstream's half-done work) open.
pub(crate) async fn run_bounded(
    mut cmd: Command,
    timeout: std::time::Duration,
) -> Result<std::process::Output, RunError> {
    cmd.process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().map_err(RunError::Io)?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.map_err(RunError::Io),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(RunError::TimedOut)
        }
    }
}

/// Single-quotes `s` for `sh -c`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Replaces the identity file's path in text that is about to be logged.
pub(crate) fn redact(text: &str, remote: &Remote) -> String {
    let path = remote.identity_path().to_string_lossy();
    if path.is_empty() {
        return text.to_owned();
    }
    text.replace(path.as_ref(), "<gate identity file>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_ssh_errors() {
        use UpstreamFailure::*;
        let cases = [
            (
                "bottle-bundle ssh: remote \"app\": Host key verification failed: the upstream at 127.0.0.1 port 22 presented ssh-ed25519 SHA256:a, but the pinned KnownHostKey is ssh-ed25519 SHA256:b\nfatal: Could not read from remote repository.",
                HostKeyMismatch,
            ),
            (
                "bottle-bundle ssh: remote \"app\": cannot connect to 127.0.0.1 port 2: Connection refused (os error 111)",
                Unreachable,
            ),
            (
                "bottle-bundle ssh: remote \"app\": cannot connect to upstream.test port 22: timed out after 10 s",
                Unreachable,
            ),
            (
                "bottle-bundle ssh: remote \"app\": Connection lost: the upstream stopped answering",
                Unreachable,
            ),
            (
                "bottle-bundle ssh: remote \"app\": Permission denied (publickey): the upstream did not accept the gate's key for user root",
                AuthRefused,
            ),
            ("fatal: something else", Other),
        ];
        for (stderr, want) in cases {
            assert_eq!(UpstreamFailure::classify(stderr), want, "{stderr}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a'b c"), r"'a'\''b c'");
    }
}
