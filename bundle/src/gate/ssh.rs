//! How the gate's own git processes reach an upstream: OpenSSH with only the gate-held key and
//! the pinned host key, nothing from the environment.
//!
//! The pin is written to a generated known_hosts file under a fixed alias
//! ([`PIN_ALIAS`]), and ssh looks it up with `HostKeyAlias`, so the pin holds whatever name,
//! port or `extra_hosts` address the upstream is dialed at.

use std::path::Path;

use tokio::process::Command;

use crate::gate::gitenv;
use crate::gate::settings::{GateSettings, HostKeyPin, Remote};

/// The known_hosts name every pin is stored and looked up under.
pub(crate) const PIN_ALIAS: &str = "bottle-upstream";

/// Longest ssh waits for the TCP connection to the upstream.
const CONNECT_TIMEOUT_SECS: u32 = 10;

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
    /// Reads git's/ssh's stderr.
    pub(crate) fn classify(stderr: &str) -> UpstreamFailure {
        if stderr.contains("Host key verification failed")
            || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || stderr.contains("No ED25519 host key is known")
            || stderr.contains("host key is known for")
        {
            UpstreamFailure::HostKeyMismatch
        } else if stderr.contains("Permission denied") {
            UpstreamFailure::AuthRefused
        } else if stderr.contains("Connection refused")
            || stderr.contains("Could not resolve")
            || stderr.contains("timed out")
            || stderr.contains("Connection closed")
            || stderr.contains("Connection reset")
            || stderr.contains("No route to host")
            || stderr.contains("Network is unreachable")
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

/// Writes `remote`'s pin to its known_hosts file (atomically); `NoPin` when there is none.
pub(crate) fn write_known_hosts(
    settings: &GateSettings,
    remote: &Remote,
) -> Result<(), UpstreamFailure> {
    let Some(pin) = &remote.pin else {
        return Err(UpstreamFailure::NoPin);
    };
    let path = settings.known_hosts_path(remote);
    let write = || -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&tmp, known_hosts_line(pin))?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        tracing::error!(remote = %remote.name, error = %e, "cannot write the pinned known_hosts file");
        UpstreamFailure::Other
    })
}

fn known_hosts_line(pin: &HostKeyPin) -> String {
    format!("{PIN_ALIAS} {} {}\n", pin.key_type, pin.key)
}

/// A `git` command for talking to `remote`'s upstream: a clean environment, no user or
/// system config, and `GIT_SSH_COMMAND` locked to the gate key and the pin.
pub(crate) fn upstream_git(settings: &GateSettings, remote: &Remote) -> Command {
    let mut cmd = Command::from(gitenv::git(settings));
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSH_VARIANT", "ssh")
        .env(
            "GIT_SSH_COMMAND",
            ssh_command(remote, &settings.known_hosts_path(remote)),
        )
        .kill_on_drop(true);
    cmd
}

/// Why [`run_bounded`] produced no output.
#[derive(Debug)]
pub(crate) enum RunError {
    /// Still running at the time limit: killed, with its ssh.
    TimedOut,
    /// Could not be started or waited for.
    Io(std::io::Error),
}

/// Runs `cmd` (from [`upstream_git`]) to completion within `timeout`, capturing its output.
/// git runs in its own process group so that a timeout kills its ssh too: a surviving ssh
/// would hold the upstream connection (and the upstream's half-done work) open.
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

/// The ssh command line (a shell string, as git runs it). No config file is read (`-F none`)
/// and the only known_hosts, user and global, is the gate's pin file: no path outside the
/// gate's directory (not even /dev/null) is handed to ssh as a file.
fn ssh_command(remote: &Remote, known_hosts: &Path) -> String {
    let known_hosts = known_hosts.display();
    let mut parts = vec![
        "ssh".to_owned(),
        "-F".into(),
        "none".into(),
        "-i".into(),
        shell_quote(&remote.identity_file.to_string_lossy()),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "IdentityAgent=none".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        shell_quote(&format!("UserKnownHostsFile={known_hosts}")),
        "-o".into(),
        shell_quote(&format!("GlobalKnownHostsFile={known_hosts}")),
        "-o".into(),
        "UpdateHostKeys=no".into(),
        "-o".into(),
        "CheckHostIP=no".into(),
        "-o".into(),
        format!("HostKeyAlias={PIN_ALIAS}"),
        "-o".into(),
        format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
    ];
    if let Some(address) = &remote.dial_address {
        parts.push("-o".into());
        parts.push(shell_quote(&format!("Hostname={address}")));
    }
    parts.join(" ")
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
                "Host key verification failed.\r\nfatal: Could not read",
                HostKeyMismatch,
            ),
            (
                "ssh: connect to host 127.0.0.1 port 2: Connection refused",
                Unreachable,
            ),
            (
                "root@127.0.0.1: Permission denied (publickey).",
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
