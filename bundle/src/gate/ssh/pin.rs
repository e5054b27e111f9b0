//! The pinned host key as russh needs it: the key blob to compare the server's key with, the
//! host key algorithms to ask for, and SHA256 fingerprints for the operator.

use base64::Engine as _;
use russh::keys::{Algorithm, HashAlg};
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

use crate::gate::settings::HostKeyPin;

/// A pin decoded: what the server's key must equal, byte for byte.
#[derive(Debug, Clone)]
pub(crate) struct PinnedKey {
    /// The key type as pinned (`ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, …).
    key_type: String,
    /// The public key in SSH wire encoding (its own type name first, then the key).
    blob: Vec<u8>,
}

impl PinnedKey {
    /// Decodes a validated pin. The blob must name the same type as the pin's first field.
    pub(crate) fn from_pin(pin: &HostKeyPin) -> Result<PinnedKey, String> {
        let blob = base64::engine::general_purpose::STANDARD
            .decode(&pin.key)
            .map_err(|_| "the pinned KnownHostKey is not valid base64".to_owned())?;
        if wire_type(&blob) != Some(pin.key_type.as_bytes()) {
            return Err(format!(
                "the pinned KnownHostKey says {} but its key data is of another type",
                pin.key_type
            ));
        }
        Ok(PinnedKey {
            key_type: pin.key_type.clone(),
            blob,
        })
    }

    /// Whether the server's key (type name and wire blob) is the pinned one. Compares in
    /// constant time over the whole blob: no early exit shows how much of a key matched.
    pub(crate) fn matches(&self, key_type: &str, blob: &[u8]) -> bool {
        let same_type = self.key_type.as_bytes().ct_eq(key_type.as_bytes());
        let same_key = self.blob.as_slice().ct_eq(blob);
        (same_type & same_key).into()
    }

    /// The pinned key's type.
    pub(crate) fn key_type(&self) -> &str {
        &self.key_type
    }

    /// The pinned key's fingerprint, as `ssh-keygen -l` prints it.
    pub(crate) fn fingerprint(&self) -> String {
        fingerprint(&self.blob)
    }

    /// The host key algorithms to offer, so that the server signs with the pinned key (a
    /// server with several host keys would otherwise present whichever it prefers). RSA is
    /// asked for with SHA-2 signatures only.
    pub(crate) fn host_key_algorithms(&self) -> Result<Vec<Algorithm>, String> {
        let unsupported = || {
            format!(
                "the pinned KnownHostKey type {} is not supported ({} are)",
                self.key_type,
                bottle_contract::wire::SSH_HOST_KEY_TYPES.join(", ")
            )
        };
        match Algorithm::new(&self.key_type).map_err(|_| unsupported())? {
            Algorithm::Rsa { .. } => Ok(vec![
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
            ]),
            alg @ (Algorithm::Ed25519 | Algorithm::Ecdsa { .. }) => Ok(vec![alg]),
            _ => Err(unsupported()),
        }
    }
}

/// `SHA256:<base64 without padding>` of a wire-encoded public key, as OpenSSH shows it.
pub(crate) fn fingerprint(blob: &[u8]) -> String {
    let digest = sha2::Sha256::digest(blob);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// The type name at the start of a wire-encoded key (`string` = u32 length + bytes).
fn wire_type(blob: &[u8]) -> Option<&[u8]> {
    let len: [u8; 4] = blob.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(len)).ok()?;
    blob.get(4..4usize.checked_add(len)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wire blob of `key_type` with `key` as its data.
    fn blob(key_type: &str, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&u32::try_from(key_type.len()).unwrap().to_be_bytes());
        out.extend_from_slice(key_type.as_bytes());
        out.extend_from_slice(&u32::try_from(key.len()).unwrap().to_be_bytes());
        out.extend_from_slice(key);
        out
    }

    fn pin(key_type: &str, blob: &[u8]) -> HostKeyPin {
        HostKeyPin {
            key_type: key_type.into(),
            key: base64::engine::general_purpose::STANDARD.encode(blob),
        }
    }

    #[test]
    fn only_the_same_type_and_bytes_match() {
        let key = blob("ssh-ed25519", &[7; 32]);
        let pinned = PinnedKey::from_pin(&pin("ssh-ed25519", &key)).unwrap();
        assert!(pinned.matches("ssh-ed25519", &key));

        let mut flipped = key.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(!pinned.matches("ssh-ed25519", &flipped));
        assert!(!pinned.matches("ssh-ed25519", &key[..key.len() - 1]));
        let mut longer = key.clone();
        longer.push(0);
        assert!(!pinned.matches("ssh-ed25519", &longer));
        assert!(!pinned.matches("ssh-ed25519", &[]));
        // The same bytes presented under another type name.
        assert!(!pinned.matches("ecdsa-sha2-nistp256", &key));
    }

    #[test]
    fn a_pin_whose_data_names_another_type_is_refused() {
        let key = blob("ssh-rsa", &[1; 64]);
        let err = PinnedKey::from_pin(&pin("ssh-ed25519", &key)).unwrap_err();
        assert!(err.contains("another type"), "{err}");
        let err = PinnedKey::from_pin(&HostKeyPin {
            key_type: "ssh-ed25519".into(),
            key: "AAAA!!!!".into(),
        })
        .unwrap_err();
        assert!(err.contains("base64"), "{err}");
        // Too short to hold its own type name.
        assert!(PinnedKey::from_pin(&pin("ssh-ed25519", &[0, 0, 0, 50, 1])).is_err());
    }

    #[test]
    fn fingerprints_are_openssh_style() {
        // `ssh-keygen -l` of this key prints the same.
        let line = "AAAAC3NzaC1lZDI1NTE5AAAAIPIErqJM1tBtDz5JLPAy4vo0MIrENlCgj+X5f+YTDhoh";
        let blob = base64::engine::general_purpose::STANDARD
            .decode(line)
            .unwrap();
        expect_test::expect!["SHA256:OOT+/owVEuNqUQrP54XUgQ3rX3pWXCiYATTUMCO0HB4"]
            .assert_eq(&fingerprint(&blob));
    }

    #[test]
    fn host_key_algorithms_follow_the_pin() {
        let check = |key_type: &str| {
            PinnedKey {
                key_type: key_type.into(),
                blob: Vec::new(),
            }
            .host_key_algorithms()
            .map(|algs| {
                algs.iter()
                    .map(|a| a.as_str().to_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_else(|e| e)
        };
        assert_eq!(check("ssh-ed25519"), "ssh-ed25519");
        assert_eq!(check("ecdsa-sha2-nistp384"), "ecdsa-sha2-nistp384");
        assert_eq!(check("ssh-rsa"), "rsa-sha2-512,rsa-sha2-256");
        assert!(check("ssh-dss").contains("not supported"));
        assert!(check("sk-ssh-ed25519@openssh.com").contains("not supported"));
        // Every type the launcher lets a manifest pin is one this client can verify.
        for key_type in bottle_contract::wire::SSH_HOST_KEY_TYPES {
            assert!(!check(key_type).contains("not supported"), "{key_type}");
        }
    }
}
