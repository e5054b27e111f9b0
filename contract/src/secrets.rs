//! The secrets file (`/etc/bottle/secrets.json` inside the bundle, mode 0600).
//!
//! Kept apart from [`crate::bundle_config::BundleConfig`] so the config can be shown, logged and
//! golden-tested while the secrets never are. Its `Debug` prints token names only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Token values by name: the route's `token_ref` (the host variable it was read from).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsFile {
    pub tokens: BTreeMap<String, Secret>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values() {
        let mut s = SecretsFile::default();
        s.tokens
            .insert("GH_PAT".into(), Secret::new("ghp_supersecretvalue".into()));
        let shown = format!("{s:?}");
        assert!(shown.contains("GH_PAT"));
        assert!(!shown.contains("supersecret"));
    }
}
