//! The bundle's configuration document (`/etc/bottle/config.json` inside the bundle).
//!
//! It never holds a secret value: credentials appear only as slot names that index into the
//! [`crate::secrets::SecretsFile`].

use serde::{Deserialize, Serialize};

use crate::route::{PathPrefix, RouteAuth, RouteHost};

/// Everything one bundle needs to serve one bottle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    /// Must equal [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The bottle identity (`<agent>-<5 base36>`), for logs and proposals.
    pub identity: String,
    /// Which roles `bottle-bundle run` starts.
    pub roles: Vec<Role>,
    /// The egress proxy role.
    pub proxy: ProxyConfig,
    /// The git gate role; `remotes` may be empty.
    pub gate: GateConfig,
    /// The supervise MCP role; `None` when the manifest says `supervise: false`.
    pub supervise: Option<SuperviseConfig>,
    /// Pipelock as a supervised child; `None` when the image has no pipelock binary.
    pub pipelock: Option<PipelockConfig>,
    /// JSON-lines audit log path (inside the bundle container).
    pub audit_log: String,
}

/// A role the bundle can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Proxy,
    Gate,
    Mcp,
}

/// Where a role listens. Both are optional so a standalone role can serve TCP only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// `host:port` to bind, e.g. `0.0.0.0:9099`.
    pub tcp: Option<String>,
    /// Unix socket path in the shared socket volume, e.g. `/run/bottle/sock/proxy.sock`.
    pub unix: Option<String>,
}

/// The egress proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    pub listen: Listen,
    /// The per-bottle CA certificate (PEM) that leaf certificates are signed with.
    pub ca_cert: String,
    /// The per-bottle CA private key (PEM).
    pub ca_key: String,
    /// The allowlist. A host with no route is refused.
    pub routes: Vec<RouteConfig>,
    /// How the proxy reaches the internet.
    pub outbound: Outbound,
    /// What the proxy does with a request that carries one of the bottle's secrets.
    #[serde(default)]
    pub dlp: DlpMode,
}

/// `egress.dlp`: what happens to a request carrying a known secret (a bottle secret's value or
/// a route token, in any encoding the proxy looks for), and whether secrets in answers are
/// masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DlpMode {
    /// Refuse it (403 naming the variable; nothing complete reaches the upstream), and mask
    /// secrets in answers.
    #[default]
    Block,
    /// Forward it and write an audit line naming the variable; answers are still masked.
    Log,
    /// Look for nothing.
    Off,
}

impl DlpMode {
    /// The manifest's and the plan's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DlpMode::Block => "block",
            DlpMode::Log => "log",
            DlpMode::Off => "off",
        }
    }
}

impl std::str::FromStr for DlpMode {
    type Err = String;

    fn from_str(text: &str) -> Result<DlpMode, String> {
        match text {
            "block" => Ok(DlpMode::Block),
            "log" => Ok(DlpMode::Log),
            "off" => Ok(DlpMode::Off),
            other => Err(format!("`{other}` is not one of block, log, off")),
        }
    }
}

/// One allowed host, in the route vocabulary of [`crate::route`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Exact host (`api.github.com`) or one-label wildcard (`*.example.com`).
    pub host: RouteHost,
    /// A port other than the scheme's default (443 over TLS, 80 in cleartext). Manifests have
    /// no port (routes are for HTTPS on 443); tests' local upstreams use one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<std::num::NonZeroU16>,
    /// Path prefixes the agent may use; empty means every path.
    #[serde(default)]
    pub path_allowlist: Vec<PathPrefix>,
    /// Credential injection; `None` passes the request through unchanged. Its `token_ref` is
    /// also the token's key in the secrets file.
    pub auth: Option<RouteAuth>,
}

/// The proxy's outbound leg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", tag = "mode")]
pub enum Outbound {
    /// Dial upstream hosts directly, refusing private and special addresses.
    Direct {
        /// CIDRs exempt from the private-address refusal (off by default; for tests and
        /// users' internal hosts).
        #[serde(default)]
        allow_private: Vec<String>,
        /// Extra CA (PEM path) to trust for upstream TLS besides the public roots, e.g. a
        /// user's internal CA (and the tests' local upstream CA).
        #[serde(default)]
        extra_ca: Option<String>,
    },
    /// Tunnel every upstream connection through an HTTP CONNECT proxy (pipelock).
    Upstream {
        /// `http://host:port` of the upstream proxy.
        proxy_url: String,
        /// Extra CA (PEM path) to trust for upstream TLS, e.g. pipelock's interception CA.
        extra_ca: Option<String>,
        /// The upstream proxy terminates the TLS of every tunnel and re-signs it with
        /// `extra_ca` (pipelock with TLS interception). Then only `extra_ca` is trusted, not
        /// the public roots: a tunnel it passed through uninspected fails as untrusted instead
        /// of reaching the upstream unseen; and answers are asked for uncompressed, which
        /// pipelock requires to scan them (it refuses compressed ones).
        #[serde(default)]
        intercepts: bool,
    },
}

/// The git gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    pub listen: Listen,
    /// Where the bare mirrors live.
    pub mirrors_dir: String,
    pub remotes: Vec<GitRemoteConfig>,
    /// A gitleaks-format rule file to use instead of the built-in rules.
    pub scanner_rules: Option<String>,
    /// Largest push (pack bytes) the gate accepts.
    pub max_push_bytes: u64,
    /// Longest the pre-receive scan and forward may take.
    pub push_timeout_secs: u64,
}

/// One upstream repository reached through the gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitRemoteConfig {
    /// Served as `git://<gate>/<name>.git`.
    pub name: String,
    /// The real upstream URL (`ssh://…`).
    pub upstream: String,
    /// Path (inside the bundle) of the private key the gate pushes with.
    pub identity_file: String,
    /// The pinned host key line (`ssh-ed25519 AAAA…`); `None` refuses to forward.
    pub known_host_key: Option<String>,
    /// Static host name → address entries for reaching the upstream.
    #[serde(default)]
    pub extra_hosts: Vec<ExtraHost>,
    /// Whether a push may delete a branch or a tag upstream (manifest `AllowDelete`).
    #[serde(default)]
    pub allow_delete: bool,
    /// Whether a push may rewrite history upstream: move a branch to a commit that does not
    /// contain the old one, or move an existing tag (manifest `AllowForcePush`).
    #[serde(default)]
    pub allow_force_push: bool,
    /// Largest push (pack bytes) to this remote, replacing the gate's `max_push_bytes`
    /// (manifest `MaxPushMB`).
    #[serde(default)]
    pub max_push_bytes: Option<u64>,
}

/// A static name → address mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraHost {
    pub host: String,
    pub address: String,
}

/// The supervise MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuperviseConfig {
    pub listen: Listen,
    /// Host-mounted proposal queue for this bottle (the agent cannot reach it).
    pub queue_dir: String,
}

/// Pipelock run as a child of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelockConfig {
    /// The pipelock binary.
    pub binary: String,
    /// Its rendered YAML config.
    pub config: String,
    /// Where it listens; the proxy's `Outbound::Upstream` points here.
    pub listen: String,
    /// A directory of CA certificates pipelock trusts for upstream TLS besides the image's
    /// roots (`egress.extra_ca`): given to it as `SSL_CERT_DIR`, which Go's `crypto/x509`
    /// reads in addition to the system bundle.
    #[serde(default)]
    pub ca_dir: Option<String>,
}

impl BundleConfig {
    /// Parses and checks the schema version.
    pub fn from_json(text: &str) -> Result<BundleConfig, ConfigError> {
        let config: BundleConfig = serde_json::from_str(text).map_err(ConfigError::Parse)?;
        if config.schema_version != crate::SCHEMA_VERSION {
            return Err(ConfigError::Version {
                found: config.schema_version,
                expected: crate::SCHEMA_VERSION,
            });
        }
        Ok(config)
    }

    /// Pretty JSON, as written by the launcher.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail: no maps with non-string keys.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Why a config document was refused.
#[derive(Debug)]
pub enum ConfigError {
    Parse(serde_json::Error),
    Version { found: u32, expected: u32 },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Parse(e) => write!(f, "bundle config is not valid: {e}"),
            ConfigError::Version { found, expected } => write!(
                f,
                "bundle config schema_version {found} is not supported (this bundle reads {expected}); rebuild the bundle image with the launcher's version"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
