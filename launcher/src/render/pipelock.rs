//! Plan -> pipelock's YAML config (SPEC §3.5), and the checks on a change to it.
//!
//! Pipelock runs inside the bundle as the egress proxy's upstream. Choices, each forced by how
//! pipelock behaves (NOTES.md "Pipelock", measured against a pipelock built from source):
//! - `mode: strict`: only strict mode enforces `api_allowlist`; it lists exactly the route
//!   hosts, so pipelock is a second, independent allowlist behind the bundle's.
//! - `forward_proxy.enabled` with long tunnels: the bundle keeps upstream connections open.
//! - `fetch_proxy.monitoring.max_requests_per_minute` set high: a value <= 0 silently becomes
//!   60/domain, which would throttle a busy agent.
//! - TLS interception on for every host (no `passthrough_domains`), with a per-bottle ECDSA
//!   CA in SEC1 PEM (`EC PRIVATE KEY`), which the launcher mints; the bundle trusts only that
//!   CA upstream, so nothing reaches an upstream uninspected. `max_response_bytes` and
//!   `max_body_bytes` raised so packages and git downloads pass (pipelock buffers what it
//!   scans and refuses what is larger).
//! - Request body and header DLP on for every host (`action: block`). Pipelock's DLP ignores
//!   the destination, so the headers the bundle injects would trip it: `sensitive_headers` is
//!   pipelock's default list without `Authorization`, `X-Api-Key` and every custom `header:`
//!   scheme a route uses ([`injected_headers`]). `scan_headers: true` is written out: omitted,
//!   it reads as false.
//! - `dlp.scan_env: false`: the bundle starts pipelock with an empty environment (no token
//!   is ever there); scanning it would only turn `PATH` into a "secret".
//! - `ssrf.ip_allowlist` = `egress.allow_private`: pipelock blocks private addresses even for
//!   allowlisted names, as the bundle's direct mode does.
//! - `sentry: {enabled: false}`: its presets report crashes upstream.

use serde::Serialize;

use crate::plan::Plan;

/// The pipelock binary in the bundle image (the file `CLAUDE_BOTTLE_PIPELOCK_BIN` names).
pub(crate) const BINARY: &str = "/usr/local/bin/pipelock";
/// Where the bundle finds the rendered YAML.
pub(crate) const CONFIG_PATH: &str = "/etc/bottle/pipelock.yaml";
/// Pipelock's listen address inside the bundle container.
pub(crate) const LISTEN: &str = "127.0.0.1:8888";
/// Pipelock's interception CA (certificate, PEM) and key (SEC1 PEM, mode 0600).
pub(crate) const CA_CERT_PATH: &str = "/etc/bottle/pipelock-ca.pem";
pub(crate) const CA_KEY_PATH: &str = "/etc/bottle/pipelock-ca-key.pem";
/// The directory holding `egress.extra_ca` for pipelock's upstream TLS (its `SSL_CERT_DIR`).
pub(crate) const EXTRA_CA_DIR: &str = "/etc/bottle/pipelock-roots";
/// Requests per minute per domain before pipelock answers 429.
pub(crate) const MAX_REQUESTS_PER_MINUTE: u32 = 6000;
/// Longest a tunnel may live; the bundle reconnects transparently after it.
pub(crate) const MAX_TUNNEL_SECONDS: u32 = 3600;
pub(crate) const IDLE_TIMEOUT_SECONDS: u32 = 300;
/// Largest intercepted response (pipelock's default is 5 MB, too small for wheels, npm
/// tarballs and git packs over HTTPS). Pipelock holds one in memory to scan it, so this stays
/// well under the bundle's memory cap (`plan::BUNDLE_LIMITS`, 512 MiB).
pub(crate) const MAX_RESPONSE_BYTES: u64 = 128 << 20;
/// Largest request body pipelock scans (it refuses larger ones): room for a Claude request
/// with several images.
pub(crate) const MAX_BODY_BYTES: u64 = 32 << 20;
/// Pipelock's default `request_body_scanning.sensitive_headers` (its docs/configuration.md).
const DEFAULT_SENSITIVE_HEADERS: &[&str] = &[
    "Authorization",
    "Cookie",
    "X-Api-Key",
    "X-Token",
    "Proxy-Authorization",
    "X-Goog-Api-Key",
];
/// Headers the bundle injects on some route whatever the routes say: `Authorization`
/// (Bearer, token, Basic, the Claude credential) and `x-api-key` (API keys).
const ALWAYS_INJECTED: &[&str] = &["authorization", "x-api-key"];

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
    request_body_scanning: RequestBodyScanning,
    dlp: Dlp,
    ssrf: Ssrf,
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
struct RequestBodyScanning {
    enabled: bool,
    action: &'static str,
    max_body_bytes: u64,
    scan_headers: bool,
    header_mode: &'static str,
    sensitive_headers: Vec<String>,
}

#[derive(Serialize)]
struct Dlp {
    scan_env: bool,
    include_defaults: bool,
}

#[derive(Serialize)]
struct Ssrf {
    ip_allowlist: Vec<String>,
}

#[derive(Serialize)]
struct Enabled {
    enabled: bool,
}

/// Why pipelock's YAML could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("cannot render pipelock's config: {0}")]
pub(crate) struct RenderError(String);

impl RenderError {
    /// `CLAUDE_BOTTLE_PIPELOCK_BIN` names no usable pipelock.
    pub(crate) fn unusable(why: &str) -> RenderError {
        RenderError(format!(
            "{why} (unset {} to run without pipelock)",
            crate::bottle::pipelock_bin::PIPELOCK_BIN_ENV
        ))
    }
}

/// Every header the bundle may inject in a bottle whose routes use the custom headers
/// `custom` (lowercase): these never go into `sensitive_headers`.
pub(crate) fn injected_headers<'a>(custom: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut all: Vec<String> = ALWAYS_INJECTED.iter().map(|h| (*h).to_owned()).collect();
    for name in custom {
        let name = name.to_ascii_lowercase();
        if !all.contains(&name) {
            all.push(name);
        }
    }
    all
}

/// Pipelock's default sensitive headers without `injected`.
fn sensitive_headers(injected: &[String]) -> Vec<String> {
    DEFAULT_SENSITIVE_HEADERS
        .iter()
        .filter(|h| !injected.contains(&h.to_ascii_lowercase()))
        .map(|h| (*h).to_owned())
        .collect()
}

/// Pipelock's YAML for `plan`, with the changes approved while the bottle ran
/// (`plan.pipelock_changes`, on resume) merged in again.
pub(crate) fn pipelock_yaml(plan: &Plan) -> Result<String, RenderError> {
    let injected = injected_headers(
        plan.routes
            .iter()
            .filter_map(|r| r.auth.as_ref()?.header.as_deref()),
    );
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
            passthrough_domains: Vec::new(),
            max_response_bytes: MAX_RESPONSE_BYTES,
        },
        request_body_scanning: RequestBodyScanning {
            enabled: true,
            action: "block",
            max_body_bytes: MAX_BODY_BYTES,
            scan_headers: true,
            header_mode: "sensitive",
            sensitive_headers: sensitive_headers(&injected),
        },
        dlp: Dlp {
            scan_env: false,
            include_defaults: true,
        },
        ssrf: Ssrf {
            ip_allowlist: plan.allow_private.clone(),
        },
        sentry: Enabled { enabled: false },
    };
    let body = match plan.pipelock_changes.as_slice() {
        [] => serde_saphyr::to_string(&config),
        changes => {
            let mut value =
                serde_json::to_value(&config).map_err(|e| RenderError(e.to_string()))?;
            for (i, change) in changes.iter().enumerate() {
                let change: serde_json::Value = serde_saphyr::from_str(change)
                    .map_err(|_| RenderError(format!("approved change {} is not YAML", i + 1)))?;
                check_change(&change)
                    .map_err(|e| RenderError(format!("approved change {}: {e}", i + 1)))?;
                merge_change(&mut value, &change, &injected);
            }
            serde_saphyr::to_string(&value)
        }
    }
    .map_err(|e| RenderError(e.to_string()))?;
    Ok(format!(
        "# Rendered by claude-bottle for bottle {}. Approvals change it while the bottle runs.\n{body}",
        plan.identity
    ))
}

/// The settings a `pipelock-block` change may set, as dotted paths (a list is one setting).
/// Each is in pipelock's documented schema; what the bottle relies on is not here ([`FIXED`]).
pub(crate) const CHANGEABLE: &[&str] = &[
    "api_allowlist",
    "explain_blocks",
    "fetch_proxy.timeout_seconds",
    "fetch_proxy.monitoring.max_url_length",
    "fetch_proxy.monitoring.entropy_threshold",
    "fetch_proxy.monitoring.max_requests_per_minute",
    "fetch_proxy.monitoring.max_data_per_minute",
    "fetch_proxy.monitoring.blocklist",
    "fetch_proxy.monitoring.subdomain_entropy_exclusions",
    "forward_proxy.max_tunnel_seconds",
    "forward_proxy.idle_timeout_seconds",
    "tls_interception.max_response_bytes",
    "request_body_scanning.action",
    "request_body_scanning.max_body_bytes",
    "request_body_scanning.sensitive_headers",
    "dlp.include_defaults",
    "dlp.patterns",
];

/// Settings claude-bottle fixes, and why a change may not touch them.
const FIXED: &[(&str, &str)] = &[
    ("version", "the schema version"),
    ("mode", "only strict mode enforces the allowlist"),
    (
        "fetch_proxy.listen",
        "the bundle's egress proxy chains to this address",
    ),
    (
        "forward_proxy.enabled",
        "the bundle tunnels every request through it",
    ),
    (
        "tls_interception",
        "the bundle trusts only pipelock's CA upstream: a tunnel passed through uninspected would fail",
    ),
    (
        "request_body_scanning.enabled",
        "the bottle's DLP relies on it",
    ),
    (
        "request_body_scanning.scan_headers",
        "the bottle's DLP relies on it",
    ),
    (
        "request_body_scanning.header_mode",
        "`all` would scan the credentials the bundle injects",
    ),
    ("dlp.scan_env", "pipelock runs with an empty environment"),
    (
        "ssrf",
        "strict mode refuses to widen it on reload, and the bottle is not restarted for it; change `egress.allow_private` in the manifest",
    ),
    (
        "trusted_domains",
        "strict mode refuses to widen it on reload",
    ),
    ("sentry", "crash reports would leave the machine"),
];

/// Checks a `pipelock-block` change (a YAML mapping) before it is merged: every setting it
/// names is one of [`CHANGEABLE`] (pipelock refuses unknown keys, and strict mode refuses
/// reloads that widen trust), and no list of sensitive headers names one the bundle injects.
pub(crate) fn check_change(change: &serde_json::Value) -> Result<(), String> {
    let mut paths = Vec::new();
    leaf_paths(change, "", &mut paths);
    if paths.is_empty() {
        return Err("`change` sets nothing; name the pipelock settings to change".into());
    }
    for path in &paths {
        if let Some((key, why)) = FIXED
            .iter()
            .find(|(key, _)| path == key || path.starts_with(&format!("{key}.")))
        {
            return Err(format!(
                "`{path}`: claude-bottle fixes `{key}` ({why}); reject this proposal with a reason"
            ));
        }
        if !CHANGEABLE.contains(&path.as_str()) {
            return Err(format!(
                "`{path}` is not a pipelock setting a change may set (pipelock refuses unknown keys); these may: {}",
                CHANGEABLE.join(", ")
            ));
        }
    }
    if let Some(headers) = change
        .pointer("/request_body_scanning/sensitive_headers")
        .and_then(|v| v.as_array())
        && let Some(bad) = headers
            .iter()
            .filter_map(|h| h.as_str())
            .find(|h| ALWAYS_INJECTED.contains(&h.to_ascii_lowercase().as_str()))
    {
        return Err(format!(
            "`request_body_scanning.sensitive_headers`: `{bad}` carries the credential the bundle injects, so pipelock would refuse every credentialed request"
        ));
    }
    Ok(())
}

/// Merges a change into pipelock's config ([`deep_merge`]), then takes every `injected`
/// header (lowercase) out of its `sensitive_headers`: a route approved with a custom
/// `header:` scheme must not trip pipelock's header DLP.
pub(crate) fn merge_change(
    config: &mut serde_json::Value,
    change: &serde_json::Value,
    injected: &[String],
) {
    deep_merge(config, change);
    drop_injected(config, injected);
}

/// Mappings merge key by key, lists gain the items they lack, anything else is replaced.
pub(crate) fn deep_merge(base: &mut serde_json::Value, change: &serde_json::Value) {
    use serde_json::Value;
    match (base, change) {
        (Value::Object(base), Value::Object(change)) => {
            for (key, value) in change {
                match base.get_mut(key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(base), Value::Array(change)) => {
            for item in change {
                if !base.contains(item) {
                    base.push(item.clone());
                }
            }
        }
        (base, change) => *base = change.clone(),
    }
}

fn drop_injected(config: &mut serde_json::Value, injected: &[String]) {
    if let Some(headers) = config
        .pointer_mut("/request_body_scanning/sensitive_headers")
        .and_then(|v| v.as_array_mut())
    {
        headers.retain(|h| {
            h.as_str()
                .is_none_or(|h| !injected.contains(&h.to_ascii_lowercase()))
        });
    }
}

/// The dotted path of every leaf (scalar or list) of a YAML mapping.
fn leaf_paths(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let path = match prefix {
                    "" => key.clone(),
                    _ => format!("{prefix}.{key}"),
                };
                leaf_paths(value, &path, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pipelock's documented config keys, as dotted paths, from NOTES.md "Pipelock" (its minimal
    /// strict config and the measured `request_body_scanning` behaviour) and pipelock's own
    /// docs/configuration.md (Top-Level Fields, Fetch Proxy, Forward Proxy, TLS Interception,
    /// Request Body Scanning, DLP, SSRF, Sentry). Pipelock refuses any other key at start.
    const DOCUMENTED: &[&str] = &[
        "version",
        "mode",
        "enforce",
        "explain_blocks",
        "api_allowlist",
        "trusted_domains",
        "fetch_proxy.listen",
        "fetch_proxy.timeout_seconds",
        "fetch_proxy.max_response_mb",
        "fetch_proxy.user_agent",
        "fetch_proxy.monitoring.max_url_length",
        "fetch_proxy.monitoring.entropy_threshold",
        "fetch_proxy.monitoring.max_requests_per_minute",
        "fetch_proxy.monitoring.max_data_per_minute",
        "fetch_proxy.monitoring.blocklist",
        "fetch_proxy.monitoring.subdomain_entropy_exclusions",
        "forward_proxy.enabled",
        "forward_proxy.max_tunnel_seconds",
        "forward_proxy.idle_timeout_seconds",
        "forward_proxy.sni_verification",
        "forward_proxy.redirect_websocket_hosts",
        "tls_interception.enabled",
        "tls_interception.ca_cert",
        "tls_interception.ca_key",
        "tls_interception.passthrough_domains",
        "tls_interception.cert_ttl",
        "tls_interception.cert_cache_size",
        "tls_interception.max_response_bytes",
        "request_body_scanning.enabled",
        "request_body_scanning.action",
        "request_body_scanning.max_body_bytes",
        "request_body_scanning.scan_headers",
        "request_body_scanning.header_mode",
        "request_body_scanning.sensitive_headers",
        "request_body_scanning.ignore_headers",
        "dlp.scan_env",
        "dlp.secrets_file",
        "dlp.min_env_secret_length",
        "dlp.include_defaults",
        "dlp.patterns",
        "ssrf.ip_allowlist",
        "sentry.enabled",
        "sentry.dsn",
        "sentry.environment",
        "sentry.sample_rate",
    ];

    fn plan() -> Plan {
        crate::plan::tests::full_plan()
    }

    fn rendered(plan: &Plan) -> serde_json::Value {
        serde_saphyr::from_str(&pipelock_yaml(plan).unwrap()).unwrap()
    }

    #[test]
    fn every_rendered_and_changeable_key_is_in_pipelocks_documented_schema() {
        let mut paths = Vec::new();
        leaf_paths(&rendered(&plan()), "", &mut paths);
        assert!(paths.len() > 15, "{paths:?}");
        for path in paths.iter().chain(
            CHANGEABLE
                .iter()
                .map(|p| (*p).to_owned())
                .collect::<Vec<_>>()
                .iter(),
        ) {
            assert!(
                DOCUMENTED.contains(&path.as_str()),
                "`{path}` is not in pipelock's documented schema"
            );
        }
        for (key, _) in FIXED {
            assert!(
                DOCUMENTED
                    .iter()
                    .any(|d| d == key || d.starts_with(&format!("{key}."))),
                "{key}"
            );
        }
    }

    /// Over every auth scheme (the custom header included, in any case): `sensitive_headers`
    /// never names a header the bundle injects, and keeps pipelock's other defaults.
    #[test]
    fn sensitive_headers_never_name_an_injected_header() {
        use bottle_contract::route::AuthScheme;
        for scheme in [
            AuthScheme::Bearer,
            AuthScheme::Token,
            AuthScheme::Basic,
            AuthScheme::Header {
                name: "x-token".parse().unwrap(),
            },
            AuthScheme::Header {
                name: "X-Goog-Api-Key".parse().unwrap(),
            },
            AuthScheme::Header {
                name: "x-api-key".parse().unwrap(),
            },
        ] {
            let mut plan = plan();
            let auth = plan
                .routes
                .iter_mut()
                .find_map(|r| r.auth.as_mut())
                .unwrap();
            auth.header = scheme.header().map(|h| h.as_str().to_owned());
            auth.scheme = scheme.clone();
            let config = rendered(&plan);
            let headers: Vec<String> = config["request_body_scanning"]["sensitive_headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap().to_ascii_lowercase())
                .collect();
            let mut injected = vec!["authorization".to_owned(), "x-api-key".to_owned()];
            injected.extend(scheme.header().map(|h| h.as_str().to_ascii_lowercase()));
            for header in &injected {
                assert!(
                    !headers.contains(header),
                    "{scheme:?}: {header} in {headers:?}"
                );
            }
            assert!(headers.contains(&"cookie".to_owned()), "{headers:?}");
            assert!(
                headers.contains(&"proxy-authorization".to_owned()),
                "{headers:?}"
            );
            assert_eq!(config["request_body_scanning"]["enabled"], true);
            assert_eq!(config["request_body_scanning"]["scan_headers"], true);
            assert_eq!(config["request_body_scanning"]["header_mode"], "sensitive");
            assert_eq!(
                config["tls_interception"]["passthrough_domains"],
                serde_json::json!([])
            );
        }
    }

    #[test]
    fn changes_name_only_changeable_settings() {
        let check = |yaml: &str| check_change(&serde_saphyr::from_str(yaml).unwrap());
        assert_eq!(check("api_allowlist: [docs.rs]\n"), Ok(()));
        assert_eq!(
            check(
                "fetch_proxy: {monitoring: {max_requests_per_minute: 9000}}\nrequest_body_scanning: {sensitive_headers: [Cookie, X-Secret]}\n"
            ),
            Ok(())
        );
        for (yaml, want) in [
            ("mode: balanced\n", "claude-bottle fixes `mode`"),
            (
                "tls_interception: {passthrough_domains: [a.example]}\n",
                "claude-bottle fixes `tls_interception`",
            ),
            (
                "ssrf: {ip_allowlist: [10.0.0.0/8]}\n",
                "claude-bottle fixes `ssrf`",
            ),
            ("sentry: {enabled: true}\n", "claude-bottle fixes `sentry`"),
            (
                "request_body_scanning: {header_mode: all}\n",
                "`all` would scan",
            ),
            (
                "apii_allowlist: [a.example]\n",
                "`apii_allowlist` is not a pipelock setting",
            ),
            (
                "fetch_proxy: {monitoring: {nope: 1}}\n",
                "`fetch_proxy.monitoring.nope` is not",
            ),
            (
                "request_body_scanning: {sensitive_headers: [AUTHORIZATION]}\n",
                "`AUTHORIZATION` carries the credential",
            ),
            ("{}\n", "sets nothing"),
        ] {
            let got = check(yaml).unwrap_err();
            assert!(got.contains(want), "{yaml}: {got}");
        }
    }

    /// On resume the changes approved while the bottle ran are merged into the fresh config.
    #[test]
    fn approved_changes_are_applied_again() {
        let mut plan = plan();
        plan.pipelock_changes = vec![
            "api_allowlist: [docs.rs]\n".into(),
            "fetch_proxy: {monitoring: {max_requests_per_minute: 9000}}\n".into(),
        ];
        let config = rendered(&plan);
        assert!(
            config["api_allowlist"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h == "docs.rs")
        );
        assert!(
            config["api_allowlist"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h == "api.github.com")
        );
        assert_eq!(
            config["fetch_proxy"]["monitoring"]["max_requests_per_minute"],
            9000
        );
        assert_eq!(config["mode"], "strict");
        plan.pipelock_changes = vec!["mode: balanced\n".into()];
        let err = pipelock_yaml(&plan).unwrap_err().to_string();
        assert!(err.contains("approved change 1: `mode`"), "{err}");
    }

    #[test]
    fn an_approved_custom_header_leaves_sensitive_headers() {
        let mut config = rendered(&plan());
        let before = config["request_body_scanning"]["sensitive_headers"].clone();
        assert!(
            before.as_array().unwrap().iter().any(|h| h == "X-Token"),
            "{before}"
        );
        merge_change(
            &mut config,
            &serde_json::json!({}),
            &injected_headers(["x-token"]),
        );
        let after = config["request_body_scanning"]["sensitive_headers"]
            .as_array()
            .unwrap()
            .clone();
        assert!(!after.iter().any(|h| h == "X-Token"), "{after:?}");
        assert_eq!(after.len() + 1, before.as_array().unwrap().len());
    }
}
