//! `bottle-bundle run`: start every role the config names.

use std::path::Path;

use bottle_contract::bundle_config::BundleConfig;

/// Loads the config and starts the configured roles.
///
/// The roles are not served yet: this checks the config and reports what it would start.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let config: BundleConfig = crate::config::load_config(config_path)?;
    tracing::info!(identity = %config.identity, roles = ?config.roles, "bundle config loaded");
    Ok(())
}
