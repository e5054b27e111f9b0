//! Fixed names both programs agree on.

/// Ports the agent sees on 127.0.0.1 (via the relay) and the bundle serves on TCP.
pub const PROXY_PORT: u16 = 9099;
pub const GATE_PORT: u16 = 9418;
pub const SUPERVISE_PORT: u16 = 9100;

/// Names the agent's `/etc/hosts` maps to 127.0.0.1.
pub const AGENT_HOST_NAMES: [&str; 4] = ["bundle", "egress", "git-gate", "supervise"];

/// The introspection host served by the proxy itself (`http://egress.local/routes`).
pub const INTROSPECTION_HOST: &str = "egress.local";

/// Paths inside the bundle container.
pub const BUNDLE_CONFIG_PATH: &str = "/etc/bottle/config.json";
pub const BUNDLE_SECRETS_PATH: &str = "/etc/bottle/secrets.json";
pub const BUNDLE_CA_CERT_PATH: &str = "/etc/bottle/ca.pem";
pub const BUNDLE_CA_KEY_PATH: &str = "/etc/bottle/ca-key.pem";
/// `egress.extra_ca`, copied from the host.
pub const BUNDLE_EXTRA_CA_PATH: &str = "/etc/bottle/extra-ca.pem";
pub const BUNDLE_KEYS_DIR: &str = "/etc/bottle/keys";
pub const BUNDLE_MIRRORS_DIR: &str = "/var/lib/bottle/mirrors";
pub const BUNDLE_QUEUE_DIR: &str = "/var/lib/bottle/queue";
pub const BUNDLE_AUDIT_LOG: &str = "/var/log/bottle/audit.jsonl";

/// The socket volume, mounted in both containers.
pub const SOCKET_DIR: &str = "/run/bottle/sock";
pub const PROXY_SOCKET: &str = "/run/bottle/sock/proxy.sock";
pub const GATE_SOCKET: &str = "/run/bottle/sock/gate.sock";
pub const SUPERVISE_SOCKET: &str = "/run/bottle/sock/supervise.sock";

/// The CA certificate as the agent sees it.
pub const AGENT_CA_PATH: &str = "/usr/local/share/ca-certificates/claude-bottle.crt";

/// Docker labels on every object the launcher creates.
pub const LABEL_IDENTITY: &str = "claude-bottle.identity";
pub const LABEL_ROLE: &str = "claude-bottle.role";
pub const LABEL_MANAGED: &str = "claude-bottle.managed";
/// The manifest home (`~/.claude-bottle`) of the launcher that made the object: `list` and
/// `cleanup` consider only their own home's bottles.
pub const LABEL_HOME: &str = "claude-bottle.home";

/// The host environment variable holding the Claude credential, which is also its key in the
/// secrets file (every token's key is its variable's name: [`crate::route::TokenRef`]).
pub const CLAUDE_TOKEN_ENV: &str = "CLAUDE_BOTTLE_OAUTH_TOKEN";

/// The SSH host key types a remote's `KnownHostKey` may pin: the ones the gate's SSH client
/// (russh) verifies. The launcher refuses any other type at the manifest line; the bundle offers
/// exactly the pinned type. (`sk-ssh-ed25519@openssh.com`, a security-key host key, is not
/// among them: russh cannot verify it.)
pub const SSH_HOST_KEY_TYPES: [&str; 5] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];
