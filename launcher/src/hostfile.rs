//! Reading a host file that the manifest or the operator names (`egress.extra_ca`, a git
//! `IdentityFile`, a manifest, `CLAUDE_BOTTLE_CLAUDE_BIN`, the files of a copied tree): only a
//! regular file, bounded, and for the manifest's CA and keys with their contents checked,
//! before anything is created.
//!
//! Why each rule: a name can point anywhere. `/dev/zero` would be read until the OOM killer
//! ends the launcher, a FIFO would block it forever, and `/proc/self/environ` is a "regular"
//! file of size 0 that holds the launcher's own environment (tokens included), which would be
//! copied into the bundle. So the file is opened with `O_NONBLOCK` (opening a FIFO cannot
//! block), and the *opened* file is checked with `fstat`/`fstatfs` (no check-then-open race,
//! whatever symlinks point to): a regular file, not on procfs or sysfs, no larger than the
//! caller's cap, and read through a `take` of that cap in case it grows while being read.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::manifest::{Loaded, ManifestError};
use crate::secrets::Secret;

/// Largest `egress.extra_ca`. A CA certificate is 1-2 KiB and a whole system trust bundle
/// about 200 KiB, so 1 MiB fits any real bundle with room to spare.
pub(crate) const MAX_CA_BYTES: u64 = 1024 * 1024;
/// Largest git `IdentityFile`. An OpenSSH RSA-16384 key, the largest ssh-keygen makes, is
/// about 12 KiB; 64 KiB fits every real private key.
pub(crate) const MAX_KEY_BYTES: u64 = 64 * 1024;

/// Why a named file cannot be used. Every variant names the path; none carries the file's
/// contents (it may be a key, or someone's environment).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostFileError {
    #[error("{} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("{} is on {fs}, whose files are the kernel's, not a file to copy", path.display())]
    Pseudo { path: PathBuf, fs: &'static str },
    #[error("{} is {what}, not a regular file", path.display())]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("{} is larger than {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a PEM file of CA certificates: {reason}", path.display())]
    NotCa { path: PathBuf, reason: String },
    #[error("{} is not a private key file: {reason}", path.display())]
    NotKey { path: PathBuf, reason: String },
    #[error(
        "{} is an encrypted (passphrase-protected) private key, which is not supported: the gate pushes unattended and cannot ask for the passphrase",
        path.display()
    )]
    EncryptedKey { path: PathBuf },
}

/// Opens `path` for reading if it is a regular file off procfs and sysfs, judged on the opened
/// file; returns it with its size.
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64), HostFileError> {
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => HostFileError::Missing {
            path: path.to_owned(),
        },
        _ => HostFileError::Io {
            path: path.to_owned(),
            source,
        },
    };
    // The path is checked too, only for a clearer message: `fstatfs` below is the real check.
    if let Some(fs) = path.canonicalize().ok().as_deref().and_then(pseudo_root) {
        return Err(HostFileError::Pseudo {
            path: path.to_owned(),
            fs,
        });
    }
    // A first look by path spares opening a device at all (some act on open); the opened
    // file is checked again below, which is what counts.
    let before = std::fs::metadata(path).map_err(io)?;
    if !before.is_file() {
        return Err(HostFileError::NotRegular {
            path: path.to_owned(),
            what: file_kind(&before.file_type()),
        });
    }
    let flags = nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(HostFileError::NotRegular {
            path: path.to_owned(),
            what: file_kind(&meta.file_type()),
        });
    }
    let on = nix::sys::statfs::fstatfs(&file)
        .map_err(|e| io(std::io::Error::from(e)))?
        .filesystem_type();
    if let Some(fs) = pseudo_fs(on) {
        return Err(HostFileError::Pseudo {
            path: path.to_owned(),
            fs,
        });
    }
    Ok((file, meta.len()))
}

/// The whole of regular file `path`, at most `max` bytes (see [`open_regular`]).
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, HostFileError> {
    let too_large = || HostFileError::TooLarge {
        path: path.to_owned(),
        max,
    };
    let (file, len) = open_regular(path)?;
    if len > max {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| HostFileError::Io {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(too_large());
    }
    Ok(bytes)
}

/// An `egress.extra_ca`: one or more PEM certificates, each one the bundle's TLS stack
/// accepts as a trust anchor (the same parse: `rustls-pki-types`' PEM reader, then webpki).
pub(crate) fn read_ca_bundle(path: &Path) -> Result<Vec<u8>, HostFileError> {
    let bytes = read_bounded(path, MAX_CA_BYTES)?;
    check_ca_bundle(&bytes).map_err(|reason| HostFileError::NotCa {
        path: path.to_owned(),
        reason,
    })?;
    Ok(bytes)
}

fn check_ca_bundle(bytes: &[u8]) -> Result<(), String> {
    let mut found = 0;
    for (i, cert) in CertificateDer::pem_slice_iter(bytes).enumerate() {
        let cert = cert.map_err(|e| format!("certificate {}: {e}", i + 1))?;
        webpki::anchor_from_trusted_cert(&cert)
            .map_err(|e| format!("certificate {} does not parse: {e}", i + 1))?;
        found += 1;
    }
    match found {
        0 => Err("no `-----BEGIN CERTIFICATE-----` block in it".into()),
        _ => Ok(()),
    }
}

/// A git `IdentityFile`: an unencrypted private key in OpenSSH's own format or PEM (PKCS#1,
/// SEC1, PKCS#8), as `ssh -i` reads it.
pub(crate) fn read_private_key(path: &Path) -> Result<Secret, HostFileError> {
    let bytes = read_bounded(path, MAX_KEY_BYTES)?;
    let not_key = |reason: &str| HostFileError::NotKey {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let text = String::from_utf8(bytes).map_err(|_| not_key("it is not text"))?;
    match key_kind(&text) {
        KeyKind::Usable => Ok(Secret::new(text)),
        KeyKind::Encrypted => Err(HostFileError::EncryptedKey {
            path: path.to_owned(),
        }),
        KeyKind::Bad(reason) => Err(not_key(reason)),
    }
}

enum KeyKind {
    Usable,
    Encrypted,
    Bad(&'static str),
}

const OPENSSH_BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const OPENSSH_END: &str = "-----END OPENSSH PRIVATE KEY-----";

fn key_kind(text: &str) -> KeyKind {
    if text.contains(OPENSSH_BEGIN) {
        return openssh_key_kind(text);
    }
    // PKCS#8's encrypted form, and OpenSSL's legacy `Proc-Type: 4,ENCRYPTED` header.
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || text.contains("4,ENCRYPTED") {
        return KeyKind::Encrypted;
    }
    if PrivateKeyDer::from_pem_slice(text.as_bytes()).is_ok() {
        return KeyKind::Usable;
    }
    let first = text.trim_start();
    if ["ssh-", "ecdsa-", "sk-"]
        .iter()
        .any(|p| first.starts_with(p))
    {
        return KeyKind::Bad("it is a public key; name the private key (the file without `.pub`)");
    }
    KeyKind::Bad(
        "no `-----BEGIN OPENSSH PRIVATE KEY-----` or PEM private key block (RSA, EC, PKCS#8) in it",
    )
}

/// OpenSSH's `openssh-key-v1` container: magic, cipher name (`none` unless encrypted), KDF
/// name and options, and the number of keys.
fn openssh_key_kind(text: &str) -> KeyKind {
    const BAD: KeyKind = KeyKind::Bad("its OpenSSH private key block does not decode");
    let Some(body) = text
        .split_once(OPENSSH_BEGIN)
        .and_then(|(_, rest)| rest.split_once(OPENSSH_END))
        .map(|(body, _)| body)
    else {
        return BAD;
    };
    let b64: String = body.split_whitespace().collect();
    let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        return BAD;
    };
    let Some(mut rest) = blob.strip_prefix(b"openssh-key-v1\0") else {
        return BAD;
    };
    let mut strings = Vec::new();
    for _ in 0..3 {
        let Some((s, after)) = ssh_string(rest) else {
            return BAD;
        };
        strings.push(s);
        rest = after;
    }
    let keys = rest
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]));
    match (strings[0], keys) {
        (_, None | Some(0)) => BAD,
        (b"none", Some(_)) => KeyKind::Usable,
        _ => KeyKind::Encrypted,
    }
}

/// An SSH wire `string` (u32 big-endian length, bytes) and what follows it.
fn ssh_string(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
    let rest = &bytes[4..];
    let len = usize::try_from(len).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// `/proc` and `/sys` by path (the canonical one).
fn pseudo_root(path: &Path) -> Option<&'static str> {
    [("/proc", "procfs"), ("/sys", "sysfs")]
        .into_iter()
        .find(|(root, _)| path.starts_with(root))
        .map(|(_, fs)| fs)
}

/// procfs and sysfs by file system type, wherever they are mounted.
fn pseudo_fs(on: nix::sys::statfs::FsType) -> Option<&'static str> {
    use nix::sys::statfs::{PROC_SUPER_MAGIC, SYSFS_MAGIC};
    if on == PROC_SUPER_MAGIC {
        Some("procfs")
    } else if on == SYSFS_MAGIC {
        Some("sysfs")
    } else {
        None
    }
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a plain file"
    }
}

/// A host file the bottle manifest names, where it names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamedFile {
    /// The bottle file.
    pub(crate) file: PathBuf,
    pub(crate) line: u32,
    /// `egress.extra_ca` or `git[i].IdentityFile`.
    pub(crate) key: String,
    /// With `~/` expanded.
    pub(crate) path: String,
    pub(crate) kind: NamedKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NamedKind {
    CaBundle,
    /// The `IdentityFile` of the remote at this index of `git`.
    Key(usize),
}

/// What a [`NamedFile`] held.
pub(crate) enum Contents {
    CaBundle(Vec<u8>),
    /// The key of the remote at this index of `git`.
    Key(usize, Secret),
}

/// The CA and key files the bottle of `loaded` names, `~/` expanded against `home`.
pub(crate) fn named_files(loaded: &Loaded, home: &Path) -> Vec<NamedFile> {
    let bottle = &loaded.bottle;
    let ca = bottle.extra_ca.iter().map(|path| NamedFile {
        file: bottle.file.clone(),
        line: bottle.extra_ca_line,
        key: "egress.extra_ca".into(),
        path: crate::plan::expand_home(path, home),
        kind: NamedKind::CaBundle,
    });
    let keys = bottle.git.iter().enumerate().map(|(i, g)| NamedFile {
        file: bottle.file.clone(),
        line: g.identity_file_line,
        key: format!("git[{i}].IdentityFile"),
        path: crate::plan::expand_home(&g.identity_file, home),
        kind: NamedKind::Key(i),
    });
    ca.chain(keys).collect()
}

impl NamedFile {
    /// Reads and checks the file; the error names the manifest file, line and key, the path,
    /// and what the key must name.
    pub(crate) fn read(&self) -> Result<Contents, ManifestError> {
        let path = Path::new(&self.path);
        let (read, hint) = match self.kind {
            NamedKind::CaBundle => (
                read_ca_bundle(path).map(Contents::CaBundle),
                "name a PEM file of one or more CA certificates (`-----BEGIN CERTIFICATE-----`, at most 1 MiB) that the bundle trusts for upstream TLS",
            ),
            NamedKind::Key(i) => (
                read_private_key(path).map(|key| Contents::Key(i, key)),
                "name the unencrypted private key the gate pushes with, in OpenSSH or PEM format (at most 64 KiB), e.g. ~/.ssh/id_ed25519; a passphrase-protected key needs an unencrypted deploy key of its own",
            ),
        };
        read.map_err(|e| ManifestError::Invalid {
            file: self.file.clone(),
            line: self.line,
            key: self.key.clone(),
            message: crate::manifest::values::escape_controls(
                &format!("{e}; {hint}"),
                crate::manifest::values::Layout::Line,
            ),
        })
    }
}

#[cfg(test)]
#[path = "hostfile_tests.rs"]
mod tests;
