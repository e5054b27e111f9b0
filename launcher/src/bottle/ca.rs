//! The per-bottle CA: minted in memory at every start (ECDSA P-256), never reused, never
//! written to the host's disk. The key is copied into the bundle only; the agent gets the
//! certificate.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};

use crate::secrets::Secret;

/// A freshly minted CA.
pub(crate) struct BottleCa {
    /// The certificate, PEM: given to the agent (trust) and the bundle (issuer).
    pub(crate) cert_pem: String,
    /// The private key, PKCS#8 PEM: the bundle only.
    pub(crate) key_pem: Secret,
}

/// Mints the CA of bottle `identity`.
pub(crate) fn mint(identity: &str) -> Result<BottleCa, rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("claude-bottle {identity} CA"));
    name.push(DnType::OrganizationName, "claude-bottle");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok(BottleCa {
        cert_pem: cert.pem(),
        key_pem: Secret::new(key.serialize_pem()),
    })
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
}
