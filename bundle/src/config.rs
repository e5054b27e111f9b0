//! Loading the bundle config and secrets from disk.

use std::path::{Path, PathBuf};

use bottle_contract::bundle_config::BundleConfig;
use bottle_contract::secrets::SecretsFile;

/// Why the bundle could not load its configuration.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Reads and parses the bundle config at `path`.
pub fn load_config(path: &Path) -> Result<BundleConfig, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::Read {
        path: path.to_owned(),
        error,
    })?;
    BundleConfig::from_json(&text).map_err(|e| LoadError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Reads the secrets file. Its contents never appear in an error: a parse failure reports
/// only the position.
pub fn load_secrets(path: &Path) -> Result<SecretsFile, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::Read {
        path: path.to_owned(),
        error,
    })?;
    serde_json::from_str(&text).map_err(|e| LoadError::Invalid {
        path: path.to_owned(),
        message: format!(
            "secrets file is not valid JSON of the form {{\"tokens\": {{\"NAME\": \"value\"}}}} (line {}, column {})",
            e.line(),
            e.column()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_error_does_not_echo_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        std::fs::write(
            &path,
            r#"{"tokens": {"GH": "ghp_leakme"}, "oops": "ghp_leakme"}"#,
        )
        .unwrap();
        let err = load_secrets(&path).unwrap_err().to_string();
        assert!(!err.contains("ghp_leakme"), "{err}");
        assert!(err.contains("secrets.json"), "{err}");
    }
}
