//! Plan -> pipelock's YAML config (SPEC §3.5).
//!
//! Pipelock runs inside the bundle as the egress proxy's upstream. Choices, each forced by how
//! pipelock behaves (see NOTES "Pipelock"):
//! - `mode: strict`: only strict mode enforces `api_allowlist`; it lists exactly the route
//!   hosts, so pipelock is a second, independent allowlist behind the bundle's.
//! - `forward_proxy.enabled` with long tunnels: the bundle keeps upstream connections open.
//! - `fetch_proxy.monitoring.max_requests_per_minute` set high: a value <= 0 silently becomes
//!   60/domain, which would throttle a busy agent.
//! - TLS interception on, with a per-bottle ECDSA CA in SEC1 PEM (`EC PRIVATE KEY`), which the
//!   launcher mints; `max_response_bytes` raised so packfiles and large downloads pass.
//! - Credentialed hosts (routes with `auth`) are `passthrough_domains`: pipelock's header and
//!   body DLP ignore the destination, so the `Authorization` the bundle injects would trip it.
//!   Passing those tunnels through uninspected keeps the allowlist check (on the CONNECT host)
//!   and keeps DLP for every other host. Consequence: in strict mode pipelock refuses a
//!   *reload* that adds a passthrough domain, so a newly approved credentialed route needs a
//!   pipelock restart (the bundle's job), while plain allowlist additions reload.
//! - `request_body_scanning` on: with credentialed hosts passed through, the remaining hosts
//!   get no injected secrets, so body DLP only sees what the agent itself sends.
//! - `sentry: {enabled: false}`: its presets report crashes upstream.

use serde::Serialize;

use crate::plan::Plan;

/// The pipelock binary in the bundle image; the bundle runs pipelock only if it exists.
pub(crate) const BINARY: &str = "/usr/local/bin/pipelock";
/// Where the bundle finds the rendered YAML.
pub(crate) const CONFIG_PATH: &str = "/etc/bottle/pipelock.yaml";
/// Pipelock's listen address inside the bundle container.
pub(crate) const LISTEN: &str = "127.0.0.1:8888";
/// Pipelock's interception CA (certificate, PEM) and key (SEC1 PEM, mode 0600).
pub(crate) const CA_CERT_PATH: &str = "/etc/bottle/pipelock-ca.pem";
pub(crate) const CA_KEY_PATH: &str = "/etc/bottle/pipelock-ca-key.pem";
/// Requests per minute per domain before pipelock answers 429.
pub(crate) const MAX_REQUESTS_PER_MINUTE: u32 = 6000;
/// Longest a tunnel may live; the bundle reconnects transparently after it.
pub(crate) const MAX_TUNNEL_SECONDS: u32 = 3600;
pub(crate) const IDLE_TIMEOUT_SECONDS: u32 = 300;
/// Largest intercepted response or request body (pipelock's default is 5 MB).
pub(crate) const MAX_RESPONSE_BYTES: u64 = 50 * 1024 * 1024;

// Pipelock's config is a document another process reads, so these types derive Serialize
// (like the contract's); they exist only to render it.
#[derive(Serialize)]
struct Config {
    version: u32,
    mode: &'static str,
    api_allowlist: Vec<String>,
    fetch_proxy: FetchProxy,
    forward_proxy: ForwardProxy,
    tls_interception: TlsInterception,
    request_body_scanning: Enabled,
    sentry: Enabled,
}

#[derive(Serialize)]
struct FetchProxy {
    listen: &'static str,
    monitoring: Monitoring,
}

#[derive(Serialize)]
struct Monitoring {
    max_requests_per_minute: u32,
}

#[derive(Serialize)]
struct ForwardProxy {
    enabled: bool,
    max_tunnel_seconds: u32,
    idle_timeout_seconds: u32,
}

#[derive(Serialize)]
struct TlsInterception {
    enabled: bool,
    ca_cert: &'static str,
    ca_key: &'static str,
    passthrough_domains: Vec<String>,
    max_response_bytes: u64,
}

#[derive(Serialize)]
struct Enabled {
    enabled: bool,
}

/// Why pipelock's YAML could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("cannot render pipelock's config: {0}")]
pub(crate) struct RenderError(String);

/// Pipelock's YAML for `plan`.
pub(crate) fn pipelock_yaml(plan: &Plan) -> Result<String, RenderError> {
    let config = Config {
        version: 1,
        mode: "strict",
        api_allowlist: plan.routes.iter().map(|r| r.host.to_string()).collect(),
        fetch_proxy: FetchProxy {
            listen: LISTEN,
            monitoring: Monitoring {
                max_requests_per_minute: MAX_REQUESTS_PER_MINUTE,
            },
        },
        forward_proxy: ForwardProxy {
            enabled: true,
            max_tunnel_seconds: MAX_TUNNEL_SECONDS,
            idle_timeout_seconds: IDLE_TIMEOUT_SECONDS,
        },
        tls_interception: TlsInterception {
            enabled: true,
            ca_cert: CA_CERT_PATH,
            ca_key: CA_KEY_PATH,
            passthrough_domains: plan
                .routes
                .iter()
                .filter(|r| r.auth.is_some())
                .map(|r| r.host.to_string())
                .collect(),
            max_response_bytes: MAX_RESPONSE_BYTES,
        },
        request_body_scanning: Enabled { enabled: true },
        sentry: Enabled { enabled: false },
    };
    let body = serde_saphyr::to_string(&config).map_err(|e| RenderError(e.to_string()))?;
    Ok(format!(
        "# Rendered by claude-bottle for bottle {}. Do not edit: it is rewritten at every start.\n{body}",
        plan.identity
    ))
}
