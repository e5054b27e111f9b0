//! The secrets file (`/etc/bottle/secrets.json` inside the bundle, mode 0600).
//!
//! Kept apart from [`crate::bundle_config::BundleConfig`] so the config can be shown, logged and
//! golden-tested while the secrets never are. Its `Debug` prints token names only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Values shorter than this are not looked for in the bottle's traffic (`egress.dlp`): a short
/// value (a port, `true`, a user name) would match unrelated data. The launcher warns at start.
pub const MIN_SECRET_LEN: usize = 8;

/// Secret values by name. The proxy injects `tokens` and refuses to let any value here leave
/// the bottle (see `egress.dlp`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsFile {
    /// Route tokens by the route's `token_ref` (the host variable each was read from). The
    /// agent never holds these.
    pub tokens: BTreeMap<String, Secret>,
    /// The agent's secret env values (`${VAR}` and `?prompt` entries; a literal written in the
    /// manifest is not a secret) by the agent-side variable name. The agent holds these; the
    /// proxy keeps them from leaving.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, Secret>,
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
