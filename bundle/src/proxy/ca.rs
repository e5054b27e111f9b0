//! The per-bottle CA: loading it, `bottle-bundle ca init`, and minting leaf certificates.
//!
//! One ECDSA P-256 leaf key serves every leaf of a bottle (never the CA's own key). Each host's
//! TLS server config is minted once and cached; concurrent first connections to one host wait
//! for the same mint (single-flight) instead of minting twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Cached leaf configs above this count are dropped and minted again on demand.
const MAX_CACHED_LEAVES: usize = 4096;

/// ALPN protocols offered to the agent.
const AGENT_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why the CA could not be loaded, created, or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not a usable CA {what} ({error}); create one with `bottle-bundle ca init`")]
    Parse {
        path: PathBuf,
        what: &'static str,
        error: rcgen::Error,
    },
    #[error("cannot mint a certificate for {host:?}: {reason}")]
    Mint { host: String, reason: String },
}

/// The loaded CA plus the bottle's leaf key.
pub(crate) struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    leaf_key: KeyPair,
    cache: Mutex<HashMap<String, Arc<MintCell>>>,
}

/// One host's mint: filled once, by whichever connection gets there first.
type MintCell = OnceLock<Result<Arc<ServerConfig>, String>>;

impl CertAuthority {
    /// Loads the CA certificate and key (PEM files) and makes a fresh leaf key.
    pub(crate) fn load(cert_path: &Path, key_path: &Path) -> Result<CertAuthority, CaError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|error| CaError::Read {
                path: path.to_owned(),
                error,
            })
        };
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|error| CaError::Parse {
            path: key_path.to_owned(),
            what: "key (PKCS#8 PEM)",
            error,
        })?;
        let parse_err = |error| CaError::Parse {
            path: cert_path.to_owned(),
            what: "certificate",
            error,
        };
        let ca_der = pem_to_der(&cert_pem).map_err(parse_err)?;
        let issuer = Issuer::from_ca_cert_der(&ca_der, key).map_err(parse_err)?;
        let leaf_key = KeyPair::generate().map_err(|e| CaError::Mint {
            host: String::new(),
            reason: e.to_string(),
        })?;
        Ok(CertAuthority {
            issuer,
            ca_der,
            leaf_key,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The TLS server config for `host`, minted on first use and then cached.
    pub(crate) fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let cell = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= MAX_CACHED_LEAVES && !cache.contains_key(host) {
                cache.clear();
            }
            cache.entry(host.to_owned()).or_default().clone()
        };
        cell.get_or_init(|| self.mint(host).map(Arc::new))
            .clone()
            .map_err(|reason| CaError::Mint {
                host: host.to_owned(),
                reason,
            })
    }

    fn mint(&self, host: &str) -> Result<ServerConfig, String> {
        let started = std::time::Instant::now();
        let mut params =
            CertificateParams::new(vec![host.to_owned()]).map_err(|e| e.to_string())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        let leaf = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), self.ca_der.clone()], key)
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = AGENT_ALPN.iter().map(|p| p.to_vec()).collect();
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::debug!(host, micros, "minted leaf certificate");
        Ok(config)
    }
}

fn pem_to_der(pem: &str) -> Result<CertificateDer<'static>, rcgen::Error> {
    let mut reader = pem.as_bytes();
    match rustls_pemfile::certs(&mut reader).next() {
        Some(Ok(der)) => Ok(der),
        _ => Err(rcgen::Error::CouldNotParseCertificate),
    }
}

/// Creates a new CA (ECDSA P-256) and writes its certificate and key (mode 0600) as PEM.
pub fn init_ca(cert_path: &Path, key_path: &Path, common_name: &str) -> Result<(), CaError> {
    let mint_err = |e: rcgen::Error| CaError::Mint {
        host: common_name.to_owned(),
        reason: e.to_string(),
    };
    let key = KeyPair::generate().map_err(mint_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(mint_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "claude-bottle");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(mint_err)?;
    write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |error| CaError::Write {
        path: path.to_owned(),
        error,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_mint_once_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca-key.pem"));
        init_ca(&cert, &key, "test CA").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let ca = Arc::new(CertAuthority::load(&cert, &key).unwrap());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let ca = ca.clone();
                std::thread::spawn(move || ca.server_config("api.example.com").unwrap())
            })
            .collect();
        let configs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(
            configs.iter().all(|c| Arc::ptr_eq(c, &configs[0])),
            "minted more than once"
        );
        assert!(!Arc::ptr_eq(
            &configs[0],
            &ca.server_config("other.example.com").unwrap()
        ));
    }

    #[test]
    fn bad_ca_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca-key.pem"));
        std::fs::write(&cert, "junk").unwrap();
        std::fs::write(&key, "junk").unwrap();
        let err = CertAuthority::load(&cert, &key).err().unwrap().to_string();
        assert!(
            err.contains("ca-key.pem") && err.contains("bottle-bundle ca init"),
            "{err}"
        );
    }
}
