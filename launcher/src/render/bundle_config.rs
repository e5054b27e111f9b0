//! Plan -> the bundle's config (contract) and its secrets file.
//!
//! The config carries token *names* only (`RouteAuth::token_ref`, the host variable, which is
//! also the token's key in the secrets file; `CLAUDE_BOTTLE_OAUTH_TOKEN` for the Claude
//! route); values go only into the [`SecretsFile`], which is copied into the bundle container
//! and nowhere else.

use std::collections::BTreeMap;

use bottle_contract::SCHEMA_VERSION;
use bottle_contract::bundle_config::{
    BundleConfig, ExtraHost, GateConfig, GitRemoteConfig, Listen, Outbound, PipelockConfig,
    ProxyConfig, Role, SuperviseConfig,
};
use bottle_contract::secrets::SecretsFile;
use bottle_contract::wire;

use crate::plan::{EgressPlan, Plan};
use crate::render::pipelock;
use crate::secrets::Secret;

/// Largest push (pack bytes) the gate accepts for a remote without `MaxPushMB`.
pub(crate) const MAX_PUSH_BYTES: u64 = crate::manifest::DEFAULT_MAX_PUSH_MB << 20;
/// Longest a pre-receive scan plus forward may take.
pub(crate) const PUSH_TIMEOUT_SECS: u64 = 120;

/// The bundle's config for `plan`. Contains no secret value. With pipelock
/// ([`EgressPlan::Pipelock`]) the proxy chains through it on 127.0.0.1:8888 and trusts only
/// its interception CA; `egress.extra_ca` then goes to pipelock, which makes the upstream TLS
/// connections (`PipelockConfig::ca_dir`).
pub(crate) fn bundle_config(plan: &Plan) -> BundleConfig {
    let mut roles = vec![Role::Proxy];
    if !plan.git.is_empty() {
        roles.push(Role::Gate);
    }
    if plan.supervise {
        roles.push(Role::Mcp);
    }
    let routes = plan
        .routes
        .iter()
        .map(crate::plan::RoutePlan::route)
        .collect();
    let (outbound, pipelock) = match plan.egress {
        // `Unusable` never gets here: `render::bottle_files` refuses it.
        EgressPlan::Direct | EgressPlan::Unusable { .. } => (
            Outbound::Direct {
                allow_private: plan.allow_private.clone(),
                extra_ca: plan
                    .extra_ca
                    .as_ref()
                    .map(|_| wire::BUNDLE_EXTRA_CA_PATH.to_owned()),
            },
            None,
        ),
        EgressPlan::Pipelock { .. } => (
            Outbound::Upstream {
                proxy_url: format!("http://{}", pipelock::LISTEN),
                extra_ca: Some(pipelock::CA_CERT_PATH.into()),
                intercepts: true,
            },
            Some(PipelockConfig {
                binary: pipelock::BINARY.into(),
                config: pipelock::CONFIG_PATH.into(),
                listen: pipelock::LISTEN.into(),
                ca_dir: plan
                    .extra_ca
                    .as_ref()
                    .map(|_| pipelock::EXTRA_CA_DIR.to_owned()),
            }),
        ),
    };
    let remotes = plan
        .git
        .iter()
        .map(|g| GitRemoteConfig {
            name: g.name.clone(),
            upstream: g.upstream.clone(),
            identity_file: format!("{}/{}", wire::BUNDLE_KEYS_DIR, g.name),
            known_host_key: g.known_host_key.clone(),
            extra_hosts: g
                .extra_hosts
                .iter()
                .filter_map(|pair| pair.split_once('='))
                .map(|(host, address)| ExtraHost {
                    host: host.into(),
                    address: address.into(),
                })
                .collect(),
            allow_delete: g.allow_delete,
            allow_force_push: g.allow_force_push,
            max_push_bytes: Some(g.max_push_mb << 20),
        })
        .collect();
    BundleConfig {
        schema_version: SCHEMA_VERSION,
        identity: plan.identity.clone(),
        roles,
        proxy: ProxyConfig {
            listen: listen(wire::PROXY_SOCKET),
            ca_cert: wire::BUNDLE_CA_CERT_PATH.into(),
            ca_key: wire::BUNDLE_CA_KEY_PATH.into(),
            routes,
            outbound,
            dlp: plan.dlp,
        },
        gate: GateConfig {
            listen: listen(wire::GATE_SOCKET),
            mirrors_dir: wire::BUNDLE_MIRRORS_DIR.into(),
            remotes,
            scanner_rules: None,
            max_push_bytes: MAX_PUSH_BYTES,
            push_timeout_secs: PUSH_TIMEOUT_SECS,
        },
        supervise: plan.supervise.then(|| SuperviseConfig {
            listen: listen(wire::SUPERVISE_SOCKET),
            queue_dir: wire::BUNDLE_QUEUE_DIR.into(),
        }),
        pipelock,
        audit_log: wire::BUNDLE_AUDIT_LOG.into(),
    }
}

/// A bottle's bundle serves only its Unix sockets: the agent reaches them through its relay,
/// and nothing else may. A TCP listener on the egress bridge would let any local user (and any
/// container on the bridge) use the bottle's credentials and gate-held keys.
fn listen(socket: &str) -> Listen {
    Listen {
        tcp: None,
        unix: Some(socket.into()),
    }
}

/// The secrets file: every token the config names, by variable name (`tokens` comes from
/// [`crate::secrets::resolve_tokens`]), and the bottle's secret env values (`env`, from
/// [`crate::secrets::ResolvedEnv::secret_values`]) for the proxy to keep from leaving.
pub(crate) fn secrets_file(
    tokens: &BTreeMap<String, Secret>,
    env: &BTreeMap<String, Secret>,
) -> SecretsFile {
    SecretsFile {
        tokens: tokens.clone(),
        env: env.clone(),
    }
}

/// `(route host, token variable)` for every credentialed route of `plan`, the input of
/// [`crate::secrets::resolve_tokens`].
pub(crate) fn token_routes(plan: &Plan) -> Vec<(String, String)> {
    plan.routes
        .iter()
        .filter_map(|r| {
            r.auth
                .as_ref()
                .map(|a| (r.host.to_string(), a.token.to_string()))
        })
        .collect()
}
