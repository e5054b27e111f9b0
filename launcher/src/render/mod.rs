//! Renderers: the plan as text for a person, the bundle's config and secrets file (the
//! contract), and pipelock's YAML. All pure: they return documents, the caller writes them.

pub(crate) mod bundle_config;
pub(crate) mod pipelock;
pub(crate) mod plan_text;

use std::collections::BTreeMap;

use crate::plan::{EgressPlan, Plan};
use crate::secrets::Secret;

/// The files the bundle container receives, rendered in memory. Only `secrets_json` holds
/// values; the Docker step copies it into the bundle (mode 0600) and nowhere else.
pub(crate) struct BottleFiles {
    pub(crate) config_json: String,
    pub(crate) secrets_json: String,
    pub(crate) pipelock_yaml: Option<String>,
}

impl std::fmt::Debug for BottleFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BottleFiles")
            .field("config_json", &self.config_json)
            .field("secrets_json", &"<redacted>")
            .field("pipelock_yaml", &self.pipelock_yaml)
            .finish()
    }
}

/// Renders every bundle file for `plan` with the resolved `tokens` (keyed by variable name)
/// and the bottle's secret env values.
pub(crate) fn bottle_files(
    plan: &Plan,
    tokens: &BTreeMap<String, Secret>,
    secret_env: &BTreeMap<String, Secret>,
) -> Result<BottleFiles, pipelock::RenderError> {
    let pipelock_yaml = match &plan.egress {
        EgressPlan::Direct => None,
        EgressPlan::Pipelock { .. } => Some(pipelock::pipelock_yaml(plan)?),
        // Never rendered as direct egress: the operator asked for pipelock.
        EgressPlan::Unusable { why } => return Err(pipelock::RenderError::unusable(why)),
    };
    let config = bundle_config::bundle_config(plan);
    let secrets = bundle_config::secrets_file(tokens, secret_env);
    Ok(BottleFiles {
        config_json: config.to_json(),
        // Serializing a map of strings cannot fail.
        secrets_json: serde_json::to_string(&secrets).unwrap_or_default(),
        pipelock_yaml,
    })
}
