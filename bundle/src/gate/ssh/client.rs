//! The SSH session itself: dial, accept only the pinned host key, authenticate with the
//! gate-held key, run the one git command, pipe stdio, return the remote exit status.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::ssh_encoding::Encode as _;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyBase64 as _};
use russh::{ChannelMsg, Disconnect};
use tokio::io::AsyncWriteExt as _;

use crate::gate::ssh::SshError;
use crate::gate::ssh::args::Family;
use crate::gate::ssh::pin::{self, PinnedKey};

/// Longest the TCP connection to the upstream may take (OpenSSH's `ConnectTimeout` before).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest key exchange, authentication and starting the command may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// With nothing heard from the upstream for this long, ask it whether it is still there…
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// …and give up after this many unanswered asks (about a minute of silence).
const KEEPALIVE_MAX: usize = 3;
/// A connection with no traffic at all (not even keepalive replies) for this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where to connect and as whom.
pub(crate) struct Dial<'a> {
    /// The host as git named it (for messages).
    pub host: &'a str,
    /// What to resolve: the `ExtraHosts` address for the host, or the host itself.
    pub address: &'a str,
    pub port: u16,
    pub family: Family,
    pub user: &'a str,
}

/// Accepts the server only if it presents the pinned key.
struct PinCheck {
    pinned: PinnedKey,
    /// `host port N`, for the mismatch message.
    peer: String,
}

impl client::Handler for PinCheck {
    type Error = SshError;

    async fn check_server_key(
        &mut self,
        presented: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, SshError> {
        let (key_type, fingerprint) = match presented {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                let blob = key.public_key_bytes();
                let key_type = key.algorithm().as_str().to_owned();
                if self.pinned.matches(&key_type, &blob) {
                    return Ok(true);
                }
                (key_type, pin::fingerprint(&blob))
            }
            russh::keys::PublicKeyOrCertificate::Certificate(cert) => (
                format!("a {} certificate", cert.algorithm().as_str()),
                pin::fingerprint(&cert.public_key().encode_vec().unwrap_or_default()),
            ),
        };
        Err(SshError::HostKeyMismatch {
            peer: self.peer.clone(),
            presented: format!("{key_type} {fingerprint}"),
            pinned: format!("{} {}", self.pinned.key_type(), self.pinned.fingerprint()),
        })
    }
}

/// Runs `command` on the upstream and pipes this process's stdio to it. Returns the remote
/// command's exit status.
pub(crate) async fn run(
    dial: &Dial<'_>,
    pinned: PinnedKey,
    key: PrivateKey,
    command: &str,
    git_protocol: Option<&str>,
) -> Result<u32, SshError> {
    let peer = format!("{} port {}", dial.host, dial.port);
    let stream = connect(dial).await?;
    let mut config = client::Config {
        inactivity_timeout: Some(IDLE_TIMEOUT),
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        nodelay: true,
        ..client::Config::default()
    };
    config.preferred.key = pinned
        .host_key_algorithms()
        .map_err(SshError::Setup)?
        .into();
    let handler = PinCheck { pinned, peer };
    let started = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut session = client::connect_stream(Arc::new(config), stream, handler).await?;
        authenticate(&mut session, dial.user, key).await?;
        let channel = session
            .channel_open_session()
            .await
            .map_err(|e| lost("opening a session", e))?;
        if let Some(value) = git_protocol {
            channel
                .set_env(false, "GIT_PROTOCOL", value)
                .await
                .map_err(|e| lost("sending GIT_PROTOCOL", e))?;
        }
        channel
            .exec(true, command)
            .await
            .map_err(|e| lost("starting the command", e))?;
        Ok::<_, SshError>((session, channel))
    })
    .await;
    let (session, channel) = match started {
        Ok(result) => result?,
        Err(_) => {
            return Err(SshError::Lost(format!(
                "the SSH handshake did not finish within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            )));
        }
    };
    match pipe(channel).await {
        Some(status) => {
            let _ = session
                .disconnect(Disconnect::ByApplication, "", "en")
                .await;
            Ok(status)
        }
        None => {
            // The session's own error says why the channel ended (keepalive, reset, …).
            let cause = match tokio::time::timeout(Duration::from_secs(1), session).await {
                Ok(Err(e)) => e.to_string(),
                _ => "the upstream closed the connection before the command finished".into(),
            };
            Err(SshError::Lost(cause))
        }
    }
}

/// Resolves and connects within [`CONNECT_TIMEOUT`], trying each address in turn.
async fn connect(dial: &Dial<'_>) -> Result<tokio::net::TcpStream, SshError> {
    let unreachable = |cause: String| SshError::Unreachable {
        peer: format!("{} port {}", dial.host, dial.port),
        cause,
    };
    let attempt = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((dial.address, dial.port))
            .await
            .map_err(|e| format!("Could not resolve hostname: {e}"))?
            .filter(|a| match dial.family {
                Family::Any => true,
                Family::V4 => a.is_ipv4(),
                Family::V6 => a.is_ipv6(),
            })
            .collect();
        let mut last = "Could not resolve hostname: no address of the requested family".to_owned();
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result.map_err(unreachable),
        Err(_) => Err(unreachable(format!(
            "timed out after {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// Public key authentication; RSA keys sign with SHA-2 only (SHA-512 unless the server
/// says it takes only SHA-256).
async fn authenticate(
    session: &mut Handle<PinCheck>,
    user: &str,
    key: PrivateKey,
) -> Result<(), SshError> {
    let hash = if key.algorithm().is_rsa() {
        let offered = session
            .best_supported_rsa_hash()
            .await
            .map_err(|e| lost("asking for signature algorithms", e))?
            .flatten();
        Some(match offered {
            Some(HashAlg::Sha256) => HashAlg::Sha256,
            _ => HashAlg::Sha512,
        })
    } else {
        None
    };
    let result = session
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await
        .map_err(|e| lost("authenticating", e))?;
    if result.success() {
        Ok(())
    } else {
        Err(SshError::AuthRefused {
            user: user.to_owned(),
        })
    }
}

fn lost(what: &str, e: russh::Error) -> SshError {
    SshError::Lost(format!("{what}: {e}"))
}

/// Copies stdin to the channel and the channel to stdout/stderr until the command exits.
/// `None` if the channel ended without an exit status.
async fn pipe(channel: russh::Channel<client::Msg>) -> Option<u32> {
    let (mut read, write) = channel.split();
    let input = tokio::spawn(async move {
        // git closes our stdin when it has sent everything: pass the EOF on.
        if write.data(tokio::io::stdin()).await.is_ok() {
            let _ = write.eof().await;
        }
    });
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut status = None;
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                // git reads what upload-pack sends as it comes: flush every message.
                let written = match stdout.write_all(&data).await {
                    Ok(()) => stdout.flush().await,
                    Err(e) => Err(e),
                };
                if written.is_err() {
                    // git is gone: nobody reads the rest.
                    break;
                }
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                let _ = stderr.write_all(&data).await;
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                let _ = stderr
                    .write_all(
                        format!("bottle-bundle ssh: the remote command died of {signal_name:?}\n")
                            .as_bytes(),
                    )
                    .await;
                status = Some(255);
            }
            ChannelMsg::Failure => {
                let _ = stderr
                    .write_all(b"bottle-bundle ssh: the upstream refused to run the command\n")
                    .await;
                status = Some(255);
                break;
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    input.abort();
    let _ = stdout.flush().await;
    let _ = stderr.flush().await;
    status
}
