//! `bottle-bundle run`: start every role the config names.

use std::path::Path;

use bottle_contract::bundle_config::{BundleConfig, Role};

/// Loads the config and starts the configured roles.
///
/// Serves the proxy role when the config lists it; the other roles are not served yet.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let config: BundleConfig = crate::config::load_config(config_path)?;
    tracing::info!(identity = %config.identity, roles = ?config.roles, "bundle config loaded");
    if config.roles.contains(&Role::Proxy) {
        return crate::proxy::run_proxy(crate::proxy::ProxyArgs {
            config: config_path.to_owned(),
            secrets: bottle_contract::wire::BUNDLE_SECRETS_PATH.into(),
        });
    }
    Ok(())
}
