//! `bottle-bundle ssh`: the SSH transport of every git the gate runs against an upstream
//! (the refresh's fetch, the forward's push, the check's ls-remote). git runs it through
//! `GIT_SSH_COMMAND` as `<bundle> ssh [-p PORT] [user@]host 'git-upload-pack '\''/path'\'''`.
//!
//! It reads the remote's settings from the bundle config (the gate names the config and the
//! remote in [`hook::CONFIG_ENV`] and [`hook::REMOTE_ENV`]), runs only the git service git asks
//! for, on that remote's upstream, and speaks SSH itself with russh: no OpenSSH client, no
//! ssh config, no known_hosts file, no agent. The server must present exactly the pinned key
//! (there is no trust on first use and no fallback) before the gate's key is offered.
//!
//! Layout: `args` parses what git passes; `pin` compares host keys; `client` is the session.
//! Errors are one line on stderr, `bottle-bundle ssh: remote "<name>": <cause>`, which
//! [`crate::gate::upstream::UpstreamFailure::classify`] reads through the markers below.

mod args;
mod client;
mod pin;

use std::path::Path;
use std::process::ExitCode;

use russh::keys::PrivateKey;

use crate::gate::hook;
use crate::gate::settings::GateSettings;

/// In the message of a server that presented another host key than the pinned one.
pub(crate) const HOST_KEY_MISMATCH: &str = "Host key verification failed";
/// In the message of a server that did not accept the gate's key.
pub(crate) const AUTH_REFUSED: &str = "Permission denied";
/// In the messages of a connection that could not be made or broke off.
pub(crate) const UNREACHABLE: [&str; 3] =
    ["cannot connect to", "Connection lost", "Connection closed"];

/// The exit status of a failure of this program (not of the remote command), as OpenSSH's.
const EXIT_FAILURE: u8 = 255;

/// Why `bottle-bundle ssh` did not run the command. No message holds key material or the
/// identity file's path.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SshError {
    /// git's arguments or command are not what the gate allows.
    #[error("{0}")]
    Usage(String),
    /// The gate's config, the remote or its key cannot be used.
    #[error("{0}")]
    Setup(String),
    #[error("no host key is pinned (`KnownHostKey`), so the gate contacts nothing")]
    NoPin,
    #[error("cannot connect to {peer}: {cause}")]
    Unreachable { peer: String, cause: String },
    #[error(
        "{HOST_KEY_MISMATCH}: the upstream at {peer} presented {presented}, but the pinned KnownHostKey is {pinned}; the gate did not authenticate"
    )]
    HostKeyMismatch {
        peer: String,
        presented: String,
        pinned: String,
    },
    #[error(
        "{AUTH_REFUSED} (publickey): the upstream did not accept the gate's key for user {user:?}"
    )]
    AuthRefused { user: String },
    #[error("Connection lost: {0}")]
    Lost(String),
    #[error("SSH protocol failure: {0}")]
    Protocol(String),
}

impl From<russh::Error> for SshError {
    fn from(e: russh::Error) -> SshError {
        use russh::Error as E;
        match e {
            E::IO(_)
            | E::Disconnect
            | E::HUP
            | E::ConnectionTimeout
            | E::KeepaliveTimeout
            | E::InactivityTimeout => SshError::Lost(e.to_string()),
            other => SshError::Protocol(other.to_string()),
        }
    }
}

/// Runs as git's SSH transport; exits with the remote command's status, or 255.
pub(crate) fn main(argv: &[String]) -> ExitCode {
    let remote = std::env::var(hook::REMOTE_ENV).unwrap_or_default();
    match run(argv, &remote) {
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(EXIT_FAILURE)),
        Err(e) => {
            eprintln!("bottle-bundle ssh: remote {remote:?}: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run(argv: &[String], remote_name: &str) -> Result<u32, SshError> {
    let invocation = args::parse(argv).map_err(SshError::Usage)?;
    let command = args::parse_command(&invocation.command).map_err(SshError::Usage)?;
    let Some(config_path) = std::env::var_os(hook::CONFIG_ENV) else {
        return Err(SshError::Setup(format!(
            "{} is not set: `bottle-bundle ssh` runs only as the git gate's SSH transport",
            hook::CONFIG_ENV
        )));
    };
    let config = crate::config::load_config(Path::new(&config_path))
        .map_err(|e| SshError::Setup(format!("cannot read the bundle config: {e:#}")))?;
    let settings = GateSettings::from_contract(&config.gate)
        .map_err(|e| SshError::Setup(format!("the gate config is invalid: {e}")))?;
    let remote = settings
        .remote(remote_name)
        .ok_or_else(|| SshError::Setup("not a remote of the gate config".into()))?;
    let pinned = pin::PinnedKey::from_pin(remote.pin.as_ref().ok_or(SshError::NoPin)?)
        .map_err(SshError::Setup)?;
    let target = args::target(&remote.upstream)
        .ok_or_else(|| SshError::Setup("the upstream URL cannot be parsed".into()))?;
    invocation
        .check_target(&command, &target)
        .map_err(SshError::Usage)?;
    let key = load_key(&remote.identity_file)?;
    let user = match &invocation.user {
        Some(user) => user.clone(),
        None => local_user()?,
    };
    let git_protocol = invocation
        .send_git_protocol
        .then(|| std::env::var("GIT_PROTOCOL").ok())
        .flatten()
        .filter(|v| valid_git_protocol(v));
    let dial = client::Dial {
        host: &invocation.host,
        address: remote.dial_address.as_deref().unwrap_or(&invocation.host),
        port: invocation.port.unwrap_or(22),
        family: invocation.family,
        user: &user,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SshError::Setup(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(client::run(
        &dial,
        pinned,
        key,
        &invocation.command,
        git_protocol.as_deref(),
    ));
    // A read of stdin may still block a runtime thread: do not wait for it.
    runtime.shutdown_background();
    result
}

/// Loads the gate-held key. An encrypted key is refused: nobody is there to type a passphrase.
fn load_key(path: &Path) -> Result<PrivateKey, SshError> {
    let encrypted = || {
        SshError::Setup(
            "the identity file is encrypted (it has a passphrase), and the gate has no one to ask for it; give the remote a key without a passphrase (`ssh-keygen -p -N '' -f KEY` removes it)".into(),
        )
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| SshError::Setup(format!("cannot read the identity file: {e}")))?;
    // PEM encryption headers (`Proc-Type: 4,ENCRYPTED`, `BEGIN ENCRYPTED PRIVATE KEY`).
    if text.contains("ENCRYPTED") {
        return Err(encrypted());
    }
    match russh::keys::decode_secret_key(&text, None) {
        Ok(key) => Ok(key),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(encrypted()),
        // The cause is not shown: it could quote the file.
        Err(_) => Err(SshError::Setup(
            "the identity file is not a private key the gate can use (an ed25519, ECDSA or RSA key in OpenSSH, PKCS#1 or PKCS#8 format)".into(),
        )),
    }
}

/// The login name when git names none, as OpenSSH picks it: this process's user.
fn local_user() -> Result<String, SshError> {
    match nix::unistd::User::from_uid(nix::unistd::getuid()) {
        Ok(Some(user)) => Ok(user.name),
        _ => Err(SshError::Setup(
            "the upstream URL names no user and this process's user has no name".into(),
        )),
    }
}

/// What git puts in `GIT_PROTOCOL` (`version=2`, `key=value` pairs joined by `:`).
fn valid_git_protocol(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b':' | b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::upstream::UpstreamFailure;

    /// Every message this program prints is read back by `UpstreamFailure::classify` as the
    /// failure the pusher is told about.
    #[test]
    fn every_error_classifies_as_its_failure() {
        let print = |e: SshError| {
            format!(
                "bottle-bundle ssh: remote \"app\": {e}\nfatal: Could not read from remote repository."
            )
        };
        let cases = [
            (
                SshError::HostKeyMismatch {
                    peer: "h port 22".into(),
                    presented: "ssh-ed25519 SHA256:a".into(),
                    pinned: "ssh-ed25519 SHA256:b".into(),
                },
                UpstreamFailure::HostKeyMismatch,
            ),
            (
                SshError::AuthRefused { user: "git".into() },
                UpstreamFailure::AuthRefused,
            ),
            (
                SshError::Unreachable {
                    peer: "h port 22".into(),
                    cause: "Connection refused (os error 111)".into(),
                },
                UpstreamFailure::Unreachable,
            ),
            (
                SshError::Lost("Keepalive timeout".into()),
                UpstreamFailure::Unreachable,
            ),
            (
                SshError::from(russh::Error::HUP),
                UpstreamFailure::Unreachable,
            ),
            (
                SshError::Usage("refusing to run \"ls\"".into()),
                UpstreamFailure::Other,
            ),
            (SshError::NoPin, UpstreamFailure::Other),
            (
                SshError::from(russh::Error::NoCommonAlgo {
                    kind: russh::AlgorithmKind::Kex,
                    ours: vec![],
                    theirs: vec![],
                }),
                UpstreamFailure::Other,
            ),
        ];
        for (error, want) in cases {
            let text = print(error);
            assert_eq!(UpstreamFailure::classify(&text), want, "{text}");
        }
    }

    #[test]
    fn git_protocol_values() {
        assert!(valid_git_protocol("version=2"));
        assert!(valid_git_protocol("version=2:object-format=sha256"));
        assert!(!valid_git_protocol(""));
        assert!(!valid_git_protocol("version=2\nx"));
        assert!(!valid_git_protocol("$(x)"));
    }

    #[test]
    fn an_unusable_key_file_is_named_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "-----BEGIN OPENSSH PRIVATE KEY-----\nnotakeyatall\n").unwrap();
        let err = load_key(&path).unwrap_err().to_string();
        assert!(err.contains("not a private key"), "{err}");
        assert!(!err.contains("notakeyatall"), "{err}");
        let err = load_key(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read the identity file"), "{err}");
        assert!(!err.contains("missing"), "{err}");
    }
}
