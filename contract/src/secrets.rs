//! The secrets file (`/etc/bottle/secrets.json` inside the bundle, mode 0600).
//!
//! Kept apart from [`crate::bundle_config::BundleConfig`] so the config can be shown, logged and
//! golden-tested while the secrets never are. Its `Debug` prints slot names only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Token values by slot name.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsFile {
    pub tokens: BTreeMap<String, String>,
}

impl std::fmt::Debug for SecretsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsFile")
            .field("tokens", &self.tokens.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values() {
        let mut s = SecretsFile::default();
        s.tokens
            .insert("GH_PAT".into(), "ghp_supersecretvalue".into());
        let shown = format!("{s:?}");
        assert!(shown.contains("GH_PAT"));
        assert!(!shown.contains("supersecret"));
    }
}
