//! What goes into each container, decided without touching Docker: the files copied into the
//! bundle and the agent, the agent's environment and its command line.
//!
//! The split is the security boundary in one place: the bundle gets the config, the secrets
//! file, the CA key and the git keys; the agent gets the CA *certificate*, its own env, its
//! prompt and skills, and settings that point every tool at the bundle.

use std::collections::BTreeMap;
use std::path::Path;

use bottle_contract::{supervise, wire};

use crate::backend::{BindMount, ContextFile};
use crate::manifest::AgentCommand;
use crate::render::pipelock;
use crate::secrets::Secret;

/// The agent's user (from `Dockerfile.agent`).
pub(crate) const AGENT_UID: u64 = 1000;
pub(crate) const AGENT_HOME: &str = "/home/agent";
/// Where `--cwd` copies the work tree, and where the agent's command starts.
pub(crate) const AGENT_WORKDIR: &str = "/home/agent/work";
/// The relay's user: not the agent's, so the agent cannot signal or replace it.
pub(crate) const RELAY_USER: &str = "999:999";
/// The relay binary inside the agent container: the bundle binary, the agent image's last
/// layer (`images::with_relay`).
pub(crate) const RELAY_BIN: &str = "/usr/local/bin/bottle-bundle";
/// Created by the launcher (as root) once the relay and provisioning are done; the agent's
/// command waits for it. The agent cannot create it: `/run` belongs to root.
pub(crate) const READY_FILE: &str = "/run/claude-bottle.ready";
/// The agent's environment values, sourced by the wait-then-exec wrapper. Values stay out of
/// the container's config (which `docker inspect` shows).
pub(crate) const ENV_FILE: &str = "/home/agent/.claude-bottle-env";
/// What the agent's `claude` sees instead of the real credential, so it starts; the bundle
/// strips it and injects the real one on the wire.
pub(crate) const CLAUDE_PLACEHOLDER: &str = "claude-bottle-placeholder-not-a-credential";
/// The Dockerfile the agent's image was built from, readable by the agent, so a stuck agent
/// can propose a modified whole file through `capability-block`.
pub(crate) const AGENT_DOCKERFILE_PATH: &str = "/etc/claude-bottle/agent.Dockerfile";
/// Where a resumed bottle's saved work tree (a tar of [`AGENT_WORKDIR`]) is copied before the
/// agent unpacks it as itself; removed after.
pub(crate) const WORK_TAR_IN_AGENT: &str = "/tmp/claude-bottle-work.tar";
/// The system CA bundle: the image's roots, to which the launcher appends the bottle's CA
/// before the agent starts (what `update-ca-certificates` would write, without running it).
pub(crate) const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The largest system CA bundle read out of an agent image (Debian's is about 220 KB).
pub(crate) const MOST_CA_BUNDLE_BYTES: u64 = 8 << 20;

/// Waits for the ready file, loads the env file, then runs the agent's command.
const WRAPPER: &str = "while [ ! -e /run/claude-bottle.ready ]; do sleep 0.1; done; \
     . /home/agent/.claude-bottle-env; cd /home/agent/work 2>/dev/null || cd; exec \"$@\"";

/// Everything provisioning needs, already resolved.
pub(crate) struct Inputs<'a> {
    pub(crate) ca_cert_pem: &'a str,
    pub(crate) ca_key_pem: &'a Secret,
    pub(crate) config_json: &'a str,
    pub(crate) secrets_json: &'a str,
    pub(crate) pipelock_yaml: Option<&'a str>,
    /// Pipelock's interception CA (its key SEC1 PEM), with pipelock.
    pub(crate) pipelock_ca: Option<&'a crate::bottle::ca::BottleCa>,
    /// `egress.extra_ca`'s contents.
    pub(crate) extra_ca_pem: Option<&'a [u8]>,
    /// Git remote name -> private key bytes (bundle only).
    pub(crate) git_keys: Vec<(String, Secret)>,
    /// Git remote name -> upstream URL, for the agent's `insteadOf` rules.
    pub(crate) git_remotes: Vec<(String, String)>,
    /// The agent's resolved environment, in manifest order.
    pub(crate) env: Vec<(String, Secret)>,
    pub(crate) prompt: &'a str,
    pub(crate) supervise: bool,
    /// Claude Code's permission mode (`permissionMode`).
    pub(crate) permission_mode: &'a str,
    /// The Dockerfile the agent image was built from (shipped or approved).
    pub(crate) agent_dockerfile: &'a str,
    /// Skill name -> its files (paths relative to the skill directory).
    pub(crate) skills: Vec<(String, Vec<ContextFile>)>,
    /// The `--cwd` work tree (paths relative to it), copied to [`AGENT_WORKDIR`].
    pub(crate) work_tree: Vec<ContextFile>,
}

/// Files for the bundle container, all under `/etc/bottle`.
pub(crate) fn bundle_files(inputs: &Inputs<'_>) -> Vec<ContextFile> {
    let mut files = vec![
        ContextFile::new(wire::BUNDLE_CONFIG_PATH, inputs.config_json, 0o644),
        ContextFile::new(wire::BUNDLE_SECRETS_PATH, inputs.secrets_json, 0o600),
        ContextFile::new(wire::BUNDLE_CA_CERT_PATH, inputs.ca_cert_pem, 0o644),
        ContextFile::new(wire::BUNDLE_CA_KEY_PATH, inputs.ca_key_pem.expose(), 0o600),
    ];
    if let Some(ca) = inputs.extra_ca_pem {
        files.push(ContextFile::new(wire::BUNDLE_EXTRA_CA_PATH, ca, 0o644));
    }
    if let Some(yaml) = inputs.pipelock_yaml {
        files.push(ContextFile::new(pipelock::CONFIG_PATH, yaml, 0o600));
        // Pipelock makes the upstream TLS connections: `egress.extra_ca` is its to trust.
        if let Some(ca) = inputs.extra_ca_pem {
            files.push(ContextFile::dir(pipelock::EXTRA_CA_DIR, 0o755));
            files.push(ContextFile::new(
                format!("{}/extra-ca.pem", pipelock::EXTRA_CA_DIR),
                ca,
                0o644,
            ));
        }
    }
    if let Some(ca) = inputs.pipelock_ca {
        files.push(ContextFile::new(
            pipelock::CA_CERT_PATH,
            ca.cert_pem.as_str(),
            0o644,
        ));
        // Pipelock refuses a CA key readable by others (0600 or 0640 only).
        files.push(ContextFile::new(
            pipelock::CA_KEY_PATH,
            ca.key_pem.expose(),
            0o600,
        ));
    }
    for (name, key) in &inputs.git_keys {
        files.push(ContextFile::new(
            format!("{}/{name}", wire::BUNDLE_KEYS_DIR),
            key.expose(),
            0o600,
        ));
    }
    files
}

/// Files for the agent container.
pub(crate) fn agent_files(inputs: &Inputs<'_>) -> Vec<ContextFile> {
    let own = |path: String, contents: Vec<u8>, mode: u32| {
        ContextFile::new(path, contents, mode).owned_by(AGENT_UID, AGENT_UID)
    };
    let dir = |path: &str| ContextFile::dir(path, 0o755).owned_by(AGENT_UID, AGENT_UID);
    let mut files = vec![
        dir(&format!("{AGENT_HOME}/.claude")),
        dir(AGENT_WORKDIR),
        ContextFile::new(wire::AGENT_CA_PATH, inputs.ca_cert_pem, 0o644),
        ContextFile::new(AGENT_DOCKERFILE_PATH, inputs.agent_dockerfile, 0o644),
        own(ENV_FILE.into(), env_file(&inputs.env).into_bytes(), 0o600),
        own(
            format!("{AGENT_HOME}/.gitconfig"),
            gitconfig(&inputs.git_remotes).into_bytes(),
            0o644,
        ),
        own(
            format!("{AGENT_HOME}/.claude/CLAUDE.md"),
            inputs.prompt.as_bytes().to_vec(),
            0o644,
        ),
        own(
            format!("{AGENT_HOME}/.claude.json"),
            claude_json(inputs.supervise).into_bytes(),
            0o600,
        ),
        own(
            format!("{AGENT_HOME}/.claude/settings.json"),
            claude_settings(inputs.supervise, inputs.permission_mode).into_bytes(),
            0o644,
        ),
    ];
    for (skill, skill_files) in &inputs.skills {
        files.push(dir(&format!("{AGENT_HOME}/.claude/skills")));
        files.push(dir(&format!("{AGENT_HOME}/.claude/skills/{skill}")));
        for f in skill_files {
            let mut f = f.clone();
            f.path = format!("{AGENT_HOME}/.claude/skills/{skill}/{}", f.path);
            files.push(f.owned_by(AGENT_UID, AGENT_UID));
        }
    }
    files.extend(inputs.work_tree.iter().map(|f| {
        let mut f = f.clone();
        f.path = format!("{AGENT_WORKDIR}/{}", f.path);
        f.owned_by(AGENT_UID, AGENT_UID)
    }));
    files
}

/// The bundle's bind mounts: the bottle's supervise `queue` on the host, `proposals/`
/// read-write (the MCP server writes there) and `decisions/` **read-only** (only the host
/// decides). The agent container gets no bind mount at all.
pub(crate) fn bundle_binds(queue: &Path) -> Vec<BindMount> {
    [
        (supervise::PROPOSALS_DIR, false),
        (supervise::DECISIONS_DIR, true),
    ]
    .into_iter()
    .map(|(sub, read_only)| BindMount {
        source: queue.join(sub).display().to_string(),
        target: format!("{}/{sub}", wire::BUNDLE_QUEUE_DIR),
        read_only,
    })
    .collect()
}

/// Unpacks [`WORK_TAR_IN_AGENT`] (a tar whose top entry is the `work` directory, as the engine
/// hands it out) into [`AGENT_WORKDIR`]. Run as the agent, so every file is the agent's.
pub(crate) fn restore_work_cmd() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "set -e; tar -x --no-same-owner --strip-components=1 -f {WORK_TAR_IN_AGENT} -C {AGENT_WORKDIR}; rm -f {WORK_TAR_IN_AGENT}"
        ),
    ]
}

/// The agent container's environment: proxy and CA settings only, never a secret.
pub(crate) fn agent_env() -> Vec<String> {
    let proxy = format!("http://bundle:{}", wire::PROXY_PORT);
    let no_proxy = "bundle,egress,git-gate,supervise,localhost,127.0.0.1";
    vec![
        format!("HOME={AGENT_HOME}"),
        format!("HTTP_PROXY={proxy}"),
        format!("HTTPS_PROXY={proxy}"),
        format!("http_proxy={proxy}"),
        format!("https_proxy={proxy}"),
        format!("NO_PROXY={no_proxy}"),
        format!("no_proxy={no_proxy}"),
        format!("NODE_EXTRA_CA_CERTS={}", wire::AGENT_CA_PATH),
        format!("SSL_CERT_FILE={SYSTEM_CA_BUNDLE}"),
        format!("REQUESTS_CA_BUNDLE={SYSTEM_CA_BUNDLE}"),
        format!("CURL_CA_BUNDLE={SYSTEM_CA_BUNDLE}"),
        format!("CLAUDE_CODE_OAUTH_TOKEN={CLAUDE_PLACEHOLDER}"),
    ]
    .into_iter()
    .chain(CLAUDE_QUIET.iter().map(|(k, v)| format!("{k}={v}")))
    .collect()
}

/// Claude Code's telemetry, error reporting, auto-update and other non-essential traffic, off
/// by default in a bottle (none of it is the agent's work, and each is data leaving). A
/// bottle's `env` entry for one of these names wins: the env file is loaded after these.
const CLAUDE_QUIET: &[(&str, &str)] = &[
    ("DISABLE_TELEMETRY", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
    ("DISABLE_AUTOUPDATER", "1"),
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
];

/// The agent container's command: the wrapper, then the agent's own argv.
pub(crate) fn agent_cmd(command: &AgentCommand) -> Vec<String> {
    let mut cmd = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        WRAPPER.to_owned(),
        "claude-bottle-agent".to_owned(),
    ];
    match command {
        AgentCommand::Claude => cmd.push("claude".into()),
        AgentCommand::Shell(s) => cmd.extend(["/bin/sh".into(), "-c".into(), s.clone()]),
        AgentCommand::Argv(argv) => cmd.extend(argv.iter().cloned()),
    }
    cmd
}

/// `export NAME='value'` lines, single-quoted so no value is ever interpreted by the shell.
fn env_file(env: &[(String, Secret)]) -> String {
    let mut out = String::from("# Written by claude-bottle: the bottle's env values.\n");
    for (name, value) in env {
        let quoted = value.expose().replace('\'', r"'\''");
        out.push_str(&format!("export {name}='{quoted}'\n"));
    }
    out
}

/// `insteadOf` rules sending every upstream through the gate.
fn gitconfig(remotes: &[(String, String)]) -> String {
    let mut out = String::from("# Written by claude-bottle: git remotes go through the gate.\n");
    for (name, upstream) in remotes {
        out.push_str(&format!(
            "[url \"git://git-gate:{}/{name}.git\"]\n\tinsteadOf = {upstream}\n",
            wire::GATE_PORT
        ));
    }
    out
}

/// Claude Code's user config: the supervise MCP server when enabled.
fn claude_json(supervise: bool) -> String {
    let mut servers = BTreeMap::new();
    if supervise {
        servers.insert(
            "supervise",
            serde_json::json!({
                "type": "http",
                "url": format!("http://supervise:{}/mcp", wire::SUPERVISE_PORT),
            }),
        );
    }
    // The work tree is the bottle's own: Claude Code's "do you trust this folder" dialog would
    // only stand between the operator and the agent.
    let doc = serde_json::json!({
        "hasCompletedOnboarding": true,
        "mcpServers": servers,
        "projects": { AGENT_WORKDIR: { "hasTrustDialogAccepted": true } },
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// Claude Code's user settings: the agent's permission mode, and with supervise its tools
/// allowed without a prompt, so a stuck agent can always ask (in `-p` a tool runs only when
/// allowed, whatever the mode). For `bypassPermissions` the one-time "are you sure" dialog is
/// marked as answered (`skipDangerousModePermissionPrompt`): the manifest is the answer, and
/// without it an interactive Claude Code falls back to `default`.
fn claude_settings(supervise: bool, permission_mode: &str) -> String {
    let allow: Vec<&str> = if supervise {
        vec!["mcp__supervise"]
    } else {
        Vec::new()
    };
    let mut doc = serde_json::json!({
        "permissions": { "allow": allow, "defaultMode": permission_mode },
    });
    if permission_mode == "bypassPermissions" {
        doc["skipDangerousModePermissionPrompt"] = serde_json::Value::Bool(true);
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(key: &Secret) -> Inputs<'_> {
        Inputs {
            ca_cert_pem: "CERT",
            ca_key_pem: key,
            config_json: "{}",
            secrets_json: r#"{"tokens":{"GH":"ghp_tokenvalue"}}"#,
            pipelock_yaml: None,
            pipelock_ca: None,
            extra_ca_pem: None,
            git_keys: vec![("app".into(), Secret::new("PRIVATE-KEY-BYTES".into()))],
            git_remotes: vec![("app".into(), "ssh://git@h:22/a/app.git".into())],
            env: vec![("NOTE".into(), Secret::new("it's $HOME `x`".into()))],
            prompt: "Be careful.",
            supervise: true,
            permission_mode: "bypassPermissions",
            agent_dockerfile: "FROM base\nRUN true\n",
            skills: vec![],
            work_tree: vec![],
        }
    }

    #[test]
    fn secrets_and_keys_go_to_the_bundle_only() {
        let key = Secret::new("CA-KEY".into());
        let inputs = inputs(&key);
        let agent = agent_files(&inputs);
        for f in &agent {
            let text = String::from_utf8_lossy(&f.contents);
            for secret in ["CA-KEY", "ghp_tokenvalue", "PRIVATE-KEY-BYTES"] {
                assert!(!text.contains(secret), "{} holds {secret}", f.path);
            }
        }
        let bundle = bundle_files(&inputs);
        let paths: Vec<&str> = bundle.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/bottle/config.json",
                "/etc/bottle/secrets.json",
                "/etc/bottle/ca.pem",
                "/etc/bottle/ca-key.pem",
                "/etc/bottle/keys/app",
            ]
        );
        for f in &bundle {
            let private = f.path.ends_with("secrets.json")
                || f.path.ends_with("ca-key.pem")
                || f.path.contains("/keys/");
            assert_eq!(f.mode == 0o600, private, "{} mode {:o}", f.path, f.mode);
        }
    }

    #[test]
    fn the_agent_can_read_the_dockerfile_of_its_image() {
        let key = Secret::new("CA-KEY".into());
        let files = agent_files(&inputs(&key));
        let f = files
            .iter()
            .find(|f| f.path == AGENT_DOCKERFILE_PATH)
            .unwrap();
        assert_eq!(f.contents, b"FROM base\nRUN true\n");
        assert_eq!(f.mode, 0o644);
    }

    #[test]
    fn the_bundle_writes_proposals_and_only_reads_decisions() {
        let binds = bundle_binds(Path::new("/h/.claude-bottle/queue/dev-abcde"));
        assert_eq!(
            binds,
            [
                BindMount {
                    source: "/h/.claude-bottle/queue/dev-abcde/proposals".into(),
                    target: "/var/lib/bottle/queue/proposals".into(),
                    read_only: false,
                },
                BindMount {
                    source: "/h/.claude-bottle/queue/dev-abcde/decisions".into(),
                    target: "/var/lib/bottle/queue/decisions".into(),
                    read_only: true,
                },
            ]
        );
    }

    #[test]
    fn agent_env_holds_no_secret_and_points_at_the_bundle() {
        let env = agent_env();
        assert!(env.contains(&"HTTPS_PROXY=http://bundle:9099".to_owned()));
        assert!(env.iter().any(|e| e.starts_with("NO_PROXY=bundle,")));
        assert!(env.contains(&format!("CLAUDE_CODE_OAUTH_TOKEN={CLAUDE_PLACEHOLDER}")));
    }

    #[test]
    fn env_file_quotes_values_so_the_shell_interprets_nothing() {
        let text = env_file(&[("NOTE".into(), Secret::new("it's $HOME `x`".into()))]);
        assert!(text.contains(r"export NOTE='it'\''s $HOME `x`'"), "{text}");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{text}\nprintf %s \"$NOTE\""))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's $HOME `x`");
    }

    #[test]
    fn gitconfig_rewrites_each_upstream_to_the_gate() {
        let text = gitconfig(&[("app".into(), "ssh://git@h:22/a/app.git".into())]);
        expect_test::expect![[r#"
            # Written by claude-bottle: git remotes go through the gate.
            [url "git://git-gate:9418/app.git"]
            	insteadOf = ssh://git@h:22/a/app.git
        "#]]
        .assert_eq(&text);
    }

    #[test]
    fn claude_config_names_supervise_only_when_enabled() {
        assert!(claude_json(true).contains("http://supervise:9100/mcp"));
        assert!(!claude_json(false).contains("supervise"));
        assert!(claude_settings(true, "default").contains("\"mcp__supervise\""));
        assert!(!claude_settings(false, "default").contains("supervise"));
        let bypass: serde_json::Value =
            serde_json::from_str(&claude_settings(false, "bypassPermissions")).unwrap();
        assert_eq!(bypass["permissions"]["defaultMode"], "bypassPermissions");
        assert_eq!(bypass["skipDangerousModePermissionPrompt"], true);
        let asks: serde_json::Value =
            serde_json::from_str(&claude_settings(false, "acceptEdits")).unwrap();
        assert_eq!(asks["permissions"]["defaultMode"], "acceptEdits");
        assert!(asks.get("skipDangerousModePermissionPrompt").is_none());
    }

    #[test]
    fn the_wrapper_waits_then_runs_the_agents_argv() {
        let cmd = agent_cmd(&AgentCommand::Argv(vec!["python3".into(), "a b.py".into()]));
        assert_eq!(cmd[..2], ["/bin/sh", "-c"]);
        assert!(cmd[2].contains(READY_FILE));
        assert!(cmd[2].contains(ENV_FILE));
        assert_eq!(cmd[4..], ["python3", "a b.py"]);
    }
}
