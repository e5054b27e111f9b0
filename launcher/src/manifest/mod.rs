//! Manifests: where bottle and agent files live, and their typed form.
//!
//! Layout: [`parse`] splits Markdown from YAML frontmatter into a line-aware tree; [`validate`]
//! checks every key and builds [`Bottle`] / [`Agent`]; this module finds the files ([`load`]),
//! enforcing the trust boundary: bottles (which grant secrets and hosts) come only from the
//! manifest home, never from the project directory.

pub(crate) mod parse;
mod tree;
pub(crate) mod validate;
pub(crate) mod values;
pub(crate) use values::{DEFAULT_MAX_PUSH_MB, keyscan_command};

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use bottle_contract::bundle_config::DlpMode;
use bottle_contract::route::{PathPrefix, RouteAuth, RouteHost};

use crate::hostfile;
use crate::secrets::Secret;

/// Largest manifest file read. Manifests are a few KiB; this bounds a runaway file.
pub(crate) const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// A bottle: what an agent is granted.
#[derive(Debug, Clone)]
pub(crate) struct Bottle {
    /// The file stem, the bottle's key.
    pub(crate) name: String,
    pub(crate) file: PathBuf,
    /// The agent's environment, in manifest order.
    pub(crate) env: Vec<EnvVar>,
    /// Remotes reached through the git gate.
    pub(crate) git: Vec<GitRemote>,
    /// The manifest's egress routes (built-in defaults are merged in by the plan).
    pub(crate) routes: Vec<Route>,
    /// `egress.allow_private`: CIDR blocks the bundle may dial although they are private
    /// (off by default; for internal hosts, and the tests' upstreams on a Docker network).
    /// Never wider than /8 (IPv4) or /16 (IPv6), never touching loopback, link-local and
    /// metadata addresses (`values::check_cidr`): it applies to every route.
    pub(crate) allow_private: Vec<String>,
    /// `egress.extra_ca`: a host path to a PEM CA the bundle trusts for upstream TLS besides
    /// the public roots (an internal CA). As written; may start with `~/`.
    pub(crate) extra_ca: Option<String>,
    /// The line of `extra_ca`, for errors about the file it names (0 when absent).
    pub(crate) extra_ca_line: u32,
    /// `egress.dlp`: what the proxy does with a request carrying a bottle secret.
    pub(crate) dlp: DlpMode,
    /// Whether the supervise MCP server runs.
    pub(crate) supervise: bool,
    /// `limits`: caps on the agent container (the plan fills in defaults for absent keys).
    pub(crate) limits: Limits,
}

/// The bottle's `limits` as written; `None` where the key is absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// `limits.memory`, in bytes (`512m`, `4g`).
    pub(crate) memory_bytes: Option<u64>,
    /// `limits.pids`: processes and threads together.
    pub(crate) pids: Option<i64>,
    /// `limits.cpus`, in billionths of a CPU (Docker's `NanoCpus`).
    pub(crate) nano_cpus: Option<i64>,
}

/// One `env` entry.
#[derive(Debug, Clone)]
pub(crate) struct EnvVar {
    pub(crate) name: String,
    pub(crate) source: EnvSource,
    /// The key's line, for resolution errors.
    pub(crate) line: u32,
}

/// Where an env value comes from.
#[derive(Debug, Clone)]
pub(crate) enum EnvSource {
    /// Written in the manifest. Kept as a [`Secret`]: people paste tokens here too.
    Literal(Secret),
    /// `${VAR}`: copied from the host environment at start.
    HostVar(String),
    /// `?text`: asked on the tty at start, never echoed. Holds the prompt text (empty: a
    /// default text naming the variable).
    Prompt(String),
}

/// One git remote behind the gate.
#[derive(Debug, Clone)]
pub(crate) struct GitRemote {
    pub(crate) name: String,
    pub(crate) upstream: String,
    /// As written (may start with `~/`); copied into the bundle, never into the agent.
    pub(crate) identity_file: String,
    /// The line of `IdentityFile`, for errors about the file it names.
    pub(crate) identity_file_line: u32,
    /// The pinned host key; `None` means pushes are refused.
    pub(crate) known_host_key: Option<String>,
    pub(crate) extra_hosts: Vec<(String, IpAddr)>,
    /// `AllowDelete`: pushes may delete branches and tags (default: refused).
    pub(crate) allow_delete: bool,
    /// `AllowForcePush`: pushes may rewrite history, non-fast-forward or moving a tag
    /// (default: refused).
    pub(crate) allow_force_push: bool,
    /// `MaxPushMB`: the largest push the gate takes for this remote (default 100 MiB).
    pub(crate) max_push_mb: Option<u64>,
}

/// One allowed host, in the contract's route vocabulary (the one rule for every side).
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) host: RouteHost,
    pub(crate) path_allowlist: Vec<PathPrefix>,
    /// The credential the bundle injects; its `token_ref` is the host environment variable
    /// the token is read from at start (a name, never the value).
    pub(crate) auth: Option<RouteAuth>,
}

/// An agent: a system prompt and the bottle it runs in.
#[derive(Debug, Clone)]
pub(crate) struct Agent {
    pub(crate) name: String,
    pub(crate) file: PathBuf,
    pub(crate) bottle: String,
    /// Line of the `bottle` key, for "no such bottle" errors.
    pub(crate) bottle_line: u32,
    /// Skill directory names under `~/.claude/skills/`.
    pub(crate) skills: Vec<String>,
    pub(crate) command: AgentCommand,
    /// Claude subagent keys, accepted and passed on.
    pub(crate) display_name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) tools: Vec<String>,
    pub(crate) color: Option<String>,
    /// Claude Code's permission mode in the bottle (`permissionMode`, one of
    /// [`PERMISSION_MODES`]); [`DEFAULT_PERMISSION_MODE`] unless the agent says otherwise.
    pub(crate) permission_mode: String,
    /// The Markdown body: the system prompt.
    pub(crate) prompt: String,
}

/// Claude Code's permission modes (as its settings spell them).
pub(crate) const PERMISSION_MODES: &[&str] = &[
    "bypassPermissions",
    "acceptEdits",
    "default",
    "plan",
    "auto",
    "dontAsk",
];

/// In a bottle the bottle is the boundary (no network but its routes, no host files, pushes
/// scanned), so Claude Code asks for nothing by default, as other agent sandboxes run it; an
/// agent file sets `permissionMode` to have it ask again.
pub(crate) const DEFAULT_PERMISSION_MODE: &str = "bypassPermissions";

/// What runs in the bottle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AgentCommand {
    /// The default: Claude Code.
    Claude,
    /// `command: "…"`, run by `/bin/sh -c`.
    Shell(String),
    /// `command: [argv…]`.
    Argv(Vec<String>),
}

/// Whether a file stem is a valid bottle/agent key: `[a-z][a-z0-9-]*`.
pub(crate) fn valid_stem(stem: &str) -> bool {
    let mut chars = stem.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Why a manifest could not be loaded. Every variant names the file; `Invalid` also the line
/// and the dotted key path. No variant ever carries a value from the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestError {
    #[error("{}:{line}: `{key}`: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: u32,
        key: String,
        message: String,
    },
    #[error("{}: larger than {max} bytes; a manifest is a short Markdown file", file.display())]
    TooLarge { file: PathBuf, max: u64 },
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// Not a regular file, on procfs or sysfs, or unreadable (the error names the path).
    #[error("manifest {0}")]
    Unreadable(crate::hostfile::HostFileError),
    #[error(
        "no agent named `{name}`: looked for {home} and {cwd}{known}; `claude-bottle init` writes an example agent"
    )]
    NoAgent {
        name: String,
        home: String,
        cwd: String,
        known: String,
    },
    #[error(
        "{}:{line}: `bottle`: no bottle `{bottle}`: expected the file {}; bottles are read only from the manifest home (never from the project directory)",
        agent_file.display(),
        expected.display()
    )]
    NoBottle {
        agent_file: PathBuf,
        line: u32,
        bottle: String,
        expected: PathBuf,
    },
    #[error(
        "{}: a stale claude-bottle.json (the old single-file manifest) was found; claude-bottle now reads Markdown manifests from ~/.claude-bottle/bottles/*.md and agents/*.md. Rewrite it by hand (see the README's manifest reference; `claude-bottle init` writes examples), then delete or rename the JSON file",
        file.display()
    )]
    StaleJson { file: PathBuf },
}

/// Where manifests are looked up.
#[derive(Debug, Clone)]
pub(crate) struct Dirs {
    /// `$HOME`, where a stale `claude-bottle.json` is looked for.
    pub(crate) home: PathBuf,
    /// The manifest home: `$CLAUDE_BOTTLE_HOME` or `$HOME/.claude-bottle`.
    pub(crate) root: PathBuf,
    /// The project directory (the process cwd, or `--cwd`).
    pub(crate) cwd: PathBuf,
}

/// An agent and its bottle, plus warnings met while finding them.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) agent: Agent,
    pub(crate) bottle: Bottle,
    /// Skipped files, the ignored project `bottles/` dir, cwd-over-home notices.
    pub(crate) warnings: Vec<String>,
}

/// Finds agent `name` (project dir first, then home) and its bottle (home only).
pub(crate) fn load(dirs: &Dirs, name: &str) -> Result<Loaded, ManifestError> {
    for stale in [
        dirs.home.join("claude-bottle.json"),
        dirs.cwd.join("claude-bottle.json"),
    ] {
        if stale.is_file() {
            return Err(ManifestError::StaleJson { file: stale });
        }
    }
    let mut warnings = Vec::new();
    let project = dirs.cwd.join(".claude-bottle");
    let project_bottles = project.join("bottles");
    let project_is_home = same_dir(&project, &dirs.root);
    if project_bottles.is_dir() && !project_is_home {
        warnings.push(format!(
            "ignoring {}: bottles are read only from {} (a project must not grant itself secrets or hosts)",
            project_bottles.display(),
            dirs.root.join("bottles").display()
        ));
    }
    let home_agents = dirs.root.join("agents");
    let cwd_agents = project.join("agents");
    let home_found = list_stems(&home_agents, &mut warnings);
    let cwd_found = if project_is_home {
        Vec::new()
    } else {
        list_stems(&cwd_agents, &mut warnings)
    };
    let in_home = home_found.iter().find(|(s, _)| s == name);
    let in_cwd = cwd_found.iter().find(|(s, _)| s == name);
    let agent_file = match (in_cwd, in_home) {
        (Some((_, cwd_file)), Some((_, home_file))) => {
            warnings.push(format!(
                "agent `{name}`: using {} (the project's) over {}",
                cwd_file.display(),
                home_file.display()
            ));
            cwd_file.clone()
        }
        (Some((_, f)), None) | (None, Some((_, f))) => f.clone(),
        (None, None) => {
            let mut all: Vec<&str> = home_found
                .iter()
                .chain(cwd_found.iter())
                .map(|(s, _)| s.as_str())
                .collect();
            all.sort_unstable();
            all.dedup();
            let known = if all.is_empty() {
                String::new()
            } else {
                format!(" (agents found: {})", all.join(", "))
            };
            return Err(ManifestError::NoAgent {
                name: name.to_owned(),
                home: home_agents.join(format!("{name}.md")).display().to_string(),
                cwd: cwd_agents.join(format!("{name}.md")).display().to_string(),
                known,
            });
        }
    };
    let agent = validate::parse_agent(&agent_file, name, &read(&agent_file)?)?;
    let bottles_dir = dirs.root.join("bottles");
    // Report badly named bottle files too, so a typo'd file name is not silently ignored.
    let bottles = list_stems(&bottles_dir, &mut warnings);
    let Some((_, bottle_file)) = bottles.iter().find(|(s, _)| *s == agent.bottle) else {
        return Err(ManifestError::NoBottle {
            agent_file: agent.file.clone(),
            line: agent.bottle_line,
            bottle: agent.bottle.clone(),
            expected: bottles_dir.join(format!("{}.md", agent.bottle)),
        });
    };
    let bottle = validate::parse_bottle(bottle_file, &agent.bottle, &read(bottle_file)?)?;
    Ok(Loaded {
        agent,
        bottle,
        warnings,
    })
}

/// Whether two paths name the same directory (through symlinks too).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A manifest file, through the one bounded reader: an agent file may come from a project's
/// `.claude-bottle/agents/`, where a repository can place a link to `/dev/zero` or a FIFO.
fn read(file: &Path) -> Result<String, ManifestError> {
    let bytes = hostfile::read_bounded(file, MAX_MANIFEST_BYTES).map_err(|e| match e {
        hostfile::HostFileError::TooLarge { .. } => ManifestError::TooLarge {
            file: file.to_owned(),
            max: MAX_MANIFEST_BYTES,
        },
        other => ManifestError::Unreadable(other),
    })?;
    tracing::debug!(file = %file.display(), bytes = bytes.len(), "read manifest");
    String::from_utf8(bytes).map_err(|_| ManifestError::Read {
        file: file.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    })
}

/// Every agent name `start` would find from `dirs` (the manifest home's and the project's),
/// sorted and without duplicates; for shell completion.
pub(crate) fn agent_names(dirs: &Dirs) -> Vec<String> {
    let mut ignored = Vec::new();
    let mut names: Vec<String> = [
        dirs.root.join("agents"),
        dirs.cwd.join(".claude-bottle").join("agents"),
    ]
    .iter()
    .flat_map(|dir| list_stems(dir, &mut ignored))
    .map(|(stem, _)| stem)
    .collect();
    names.sort();
    names.dedup();
    names
}

/// The `*.md` files of `dir` with a valid stem, sorted; others are skipped with a warning.
fn list_stems(dir: &Path, warnings: &mut Vec<String>) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("md") || !path.is_file() {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        if valid_stem(&stem) {
            found.push((stem, path));
        } else {
            warnings.push(format!(
                "skipping {}: manifest names must match [a-z][a-z0-9-]* (rename the file)",
                path.display()
            ));
        }
    }
    found.sort();
    found
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod load_tests;
