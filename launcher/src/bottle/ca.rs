//! The per-bottle CAs: minted in memory at every start (ECDSA P-256), never reused, never
//! written to the host's disk. The keys are copied into the bundle only; the agent gets the
//! bundle CA's certificate. With pipelock a second CA signs pipelock's interception: its key
//! in SEC1 PEM (`EC PRIVATE KEY`), the only form pipelock loads (NOTES "Pipelock"), which
//! rcgen does not write, so [`sec1_pem`] re-wraps the PKCS#8 key.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};

use crate::secrets::Secret;

/// A freshly minted CA.
pub(crate) struct BottleCa {
    /// The certificate, PEM: given to the agent (trust) and the bundle (issuer).
    pub(crate) cert_pem: String,
    /// The private key, PKCS#8 PEM (SEC1 for pipelock's): the bundle only.
    pub(crate) key_pem: Secret,
}

/// Mints the CA of bottle `identity`.
pub(crate) fn mint(identity: &str) -> Result<BottleCa, rcgen::Error> {
    let (cert_pem, key) = mint_named(&format!("claude-bottle {identity} CA"))?;
    Ok(BottleCa {
        cert_pem,
        key_pem: Secret::new(key.serialize_pem()),
    })
}

/// Mints pipelock's interception CA for bottle `identity`: what pipelock re-signs every
/// upstream's TLS with, and the one CA the bundle trusts on its upstream leg.
pub(crate) fn mint_pipelock(identity: &str) -> Result<BottleCa, rcgen::Error> {
    let (cert_pem, key) = mint_named(&format!("claude-bottle {identity} pipelock CA"))?;
    let key_pem = sec1_pem(&key.serialize_der()).ok_or(rcgen::Error::CouldNotParseKeyPair)?;
    Ok(BottleCa {
        cert_pem,
        key_pem: Secret::new(key_pem),
    })
}

fn mint_named(common_name: &str) -> Result<(String, KeyPair), rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "claude-bottle");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key))
}

/// DER of the P-256 curve's OID (1.2.840.10045.3.1.7), as SEC1's `parameters` carries it.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A PKCS#8 P-256 key (RFC 5208: `SEQUENCE { version, algorithm, OCTET STRING { ECPrivateKey } }`)
/// as a SEC1 PEM (RFC 5915 `ECPrivateKey` with the named curve in `[0] parameters`, which
/// Go's `x509.ParseECPrivateKey` needs; ring leaves it out inside PKCS#8).
fn sec1_pem(pkcs8: &[u8]) -> Option<String> {
    let (info, _) = der_element(pkcs8, 0x30)?;
    let (_version, rest) = der_element(info, 0x02)?;
    let (_algorithm, rest) = der_element(rest, 0x30)?;
    let (inner, _) = der_element(rest, 0x04)?;
    let (ec_key, _) = der_element(inner, 0x30)?;
    let (version, rest) = der_element(ec_key, 0x02)?;
    let (private, mut rest) = der_element(rest, 0x04)?;
    if version != [1] {
        return None;
    }
    if rest.first() == Some(&0xa0) {
        rest = der_element(rest, 0xa0)?.1;
    }
    let (public, _) = der_element(rest, 0xa1)?;
    let mut body = der(0x02, &[1]);
    body.extend(der(0x04, private));
    body.extend(der(0xa0, P256_OID));
    body.extend(der(0xa1, public));
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der(0x30, &body));
    let mut pem = String::from("-----BEGIN EC PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).ok()?);
        pem.push('\n');
    }
    pem.push_str("-----END EC PRIVATE KEY-----\n");
    Some(pem)
}

/// The contents of the DER element with `tag` at the start of `input`, and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len, mut rest) = rest.split_first()?;
    let len = match len {
        0..=0x7f => usize::from(len),
        0x81..=0x82 => {
            let n = usize::from(len - 0x80);
            let (bytes, after) = rest.split_at_checked(n)?;
            rest = after;
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        }
        _ => return None,
    };
    rest.split_at_checked(len)
}

/// One DER element: `tag`, the length, `contents`.
fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match contents.len() {
        n @ 0..=0x7f => out.push(n as u8),
        n @ 0x80..=0xff => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(contents);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mint_is_a_new_ca_named_for_the_bottle() {
        let a = mint("dev-aaaaa").unwrap();
        let b = mint("dev-aaaaa").unwrap();
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            a.key_pem
                .expose()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert_ne!(a.cert_pem, b.cert_pem, "a CA must never be reused");
        assert_ne!(a.key_pem.expose(), b.key_pem.expose());
        // The key is usable as the issuer of the leaf certificates the bundle mints.
        let key = KeyPair::from_pem(a.key_pem.expose()).unwrap();
        assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);
    }

    /// Pipelock's CA key is SEC1 PEM with the named curve, as Go's `x509.ParseECPrivateKey`
    /// (pipelock) reads it; openssl checks the key and that it belongs to the certificate.
    #[test]
    fn pipelocks_ca_key_is_sec1_pem_with_the_curve_and_matches_its_certificate() {
        let ca = mint_pipelock("dev-aaaaa").unwrap();
        let key = ca.key_pem.expose();
        assert!(key.starts_with("-----BEGIN EC PRIVATE KEY-----\n"), "{key}");
        assert!(ca.cert_pem.contains("BEGIN CERTIFICATE"));
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("key.pem");
        let cert_path = dir.path().join("cert.pem");
        std::fs::write(&key_path, key).unwrap();
        std::fs::write(&cert_path, &ca.cert_pem).unwrap();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let text = openssl(&[
            "ec",
            "-in",
            key_path.to_str().unwrap(),
            "-check",
            "-noout",
            "-text",
        ]);
        assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
        let from_key = openssl(&["ec", "-in", key_path.to_str().unwrap(), "-pubout"]);
        let from_cert = openssl(&[
            "x509",
            "-in",
            cert_path.to_str().unwrap(),
            "-noout",
            "-pubkey",
        ]);
        assert_eq!(from_key, from_cert);
        assert_ne!(mint_pipelock("dev-aaaaa").unwrap().key_pem.expose(), key);
    }
}
