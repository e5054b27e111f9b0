//! The preflight plan: a pure function of the manifest and a few host facts.
//!
//! [`build`] merges the built-in default routes (manifest wins for the same host), adds the
//! Claude credential route, and lists everything the bottle will get: routes with path rules,
//! auth scheme and token *name*, env *names* and where each value comes from, git remotes and
//! supervise. It reads no file, no environment and no clock: the caller passes [`HostFacts`].
//!
//! [`Plan`] is also the `--json` output, so it derives `Serialize`; it holds no secret value by
//! construction (no field can hold a [`crate::secrets::Secret`]).

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use crate::bottle::claude_bin::ClaudeSource;
use crate::bottle::pipelock_bin::PipelockBin;
use bottle_contract::bundle_config::{DlpMode, RouteConfig};
use bottle_contract::route::{AuthScheme, PathPrefix, RouteAuth, RouteHost, TokenRef};

use crate::manifest::{AgentCommand, EnvSource, GitRemote, Limits, Loaded, Route};

/// Hosts every bottle can reach without a manifest route. A manifest route for the same host
/// replaces the default.
///
/// Exactly what the real Claude Code contacts in a bottle (measured with the CLI from PyPI,
/// `tests/claude.rs::claude_code_runs_in_a_bottle_with_the_hosts_token_only` checks every host
/// it reaches is here): with its token in the environment it talks to `api.anthropic.com`
/// alone (`/v1/messages` and its side calls). `platform.claude.com` is only for refreshing a
/// stored login, which a bottle never has; statsig and sentry were never contacted, and a
/// pass-through `sentry.io` would be an open channel out (any DSN accepts any event body).
pub(crate) const DEFAULT_ROUTES: &[&str] = &["api.anthropic.com"];

/// The host whose route carries the Claude credential.
pub(crate) const CLAUDE_API_HOST: &str = "api.anthropic.com";

/// Image names. The agent image is built from `Dockerfile.agent`, the bundle's from
/// `Dockerfile.bundle`, both locally (no registry).
pub(crate) const AGENT_IMAGE: &str = "claude-bottle-agent:<hash of its inputs>";
pub(crate) const BUNDLE_IMAGE: &str = "claude-bottle-bundle:<hash of its inputs>";

/// The agent's limits where the bottle's `limits` says nothing. Caps, not reservations: an
/// idle bottle uses about 15 MiB, so many fit on one machine; the caps bound what one runaway
/// agent can take from the others.
/// - memory 4 GiB, and no swap: Claude Code itself peaks near 200 MiB; the rest is for the
///   builds and tests an agent runs in its work tree. A balloon stops at 4 GiB instead of
///   pushing the host into swap or its OOM killer.
/// - 1024 processes (threads count too): a parallel build stays far below it, and 30 bottles
///   (about what Docker's default address pools allow) of 1024 agent plus 512 bundle pids
///   stay inside a 32768 `pid_max` with room for the host, so a fork bomb stays in its
///   bottle.
/// - 2 CPUs, never more than the engine has: CPU time is shared by the scheduler and cannot
///   run out as memory and pids do, so this only keeps one busy bottle from taking every core
///   of a large machine.
pub(crate) const AGENT_DEFAULT_LIMITS: ContainerLimits = ContainerLimits {
    memory_bytes: 4 << 30,
    pids: 1024,
    nano_cpus: 2 * NANO_PER_CPU,
};

/// The bundle's limits, the same for every bottle (the manifest cannot raise them). The
/// bundle idles near 2 MiB; the largest user is the gate: a push of up to
/// `render::bundle_config::MAX_PUSH_BYTES` (100 MiB) runs `git receive-pack`, the scan and
/// the forward's `git push` over ssh, which must fit beside the proxy and the MCP server.
/// 512 processes leave room for tokio's threads, git's children and pipelock.
pub(crate) const BUNDLE_LIMITS: ContainerLimits = ContainerLimits {
    memory_bytes: 512 << 20,
    pids: 512,
    nano_cpus: NANO_PER_CPU,
};

const NANO_PER_CPU: i64 = 1_000_000_000;

/// Length of the random part of a bottle identity.
pub(crate) const IDENTITY_SUFFIX_LEN: usize = 5;

/// What the plan needs to know about the host. Gathered by the command layer.
#[derive(Debug, Clone)]
pub(crate) struct HostFacts {
    /// Host environment variables that are set (names only; values are read at start).
    pub(crate) vars_set: BTreeSet<String>,
    /// The container runtime Docker will use.
    pub(crate) runtime: Runtime,
    /// The random part of the identity (see [`identity_suffix`]).
    pub(crate) identity_suffix: String,
    /// `$HOME`, to expand `~/` in `IdentityFile`.
    pub(crate) home: std::path::PathBuf,
    /// Host paths the bottle needs that do not exist (see [`host_paths`]).
    pub(crate) missing_paths: BTreeSet<String>,
    /// Why each existing CA or key file the manifest names cannot be used
    /// (`FILE:LINE: `KEY`: …`, see `hostfile`).
    pub(crate) unusable_files: Vec<String>,
    /// Where the agent image's Claude Code comes from, or why the one named cannot be used.
    pub(crate) claude: Result<ClaudeSource, String>,
    /// The pipelock `CLAUDE_BOTTLE_PIPELOCK_BIN` names (`None`: unset), or why it cannot be
    /// used.
    pub(crate) pipelock: Result<Option<PipelockBin>, String>,
    /// How many CPUs the engine has (`None`: it could not be asked). Docker refuses a CPU
    /// limit above it.
    pub(crate) engine_cpus: Option<u32>,
    /// The host's own addresses on Docker's bridges (their gateways).
    pub(crate) bridge_gateways: Vec<std::net::IpAddr>,
}

/// The container runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Runtime {
    /// gVisor is registered with Docker: the agent runs under it.
    Gvisor,
    /// Docker's default runtime.
    Runc,
    /// Docker could not be asked; the reason is shown.
    Unknown(String),
}

/// The preflight plan, shown by `start --dry-run` and, as JSON, by `start --dry-run --json`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Plan {
    /// `<agent>-<5 base36 chars>`.
    pub(crate) identity: String,
    pub(crate) agent: AgentPlan,
    pub(crate) bottle: BottlePlan,
    pub(crate) images: ImagesPlan,
    pub(crate) runtime: String,
    /// Where the agent image's Claude Code comes from (`native <version> from <path>`, npm,
    /// or not installed).
    pub(crate) claude: String,
    /// How the bundle reaches upstream hosts: directly, or through pipelock.
    pub(crate) egress: EgressPlan,
    /// Pipelock changes approved while the bottle ran (YAML mappings, oldest first), merged
    /// into its config again on resume.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) pipelock_changes: Vec<String>,
    /// Every host the bottle may reach, manifest routes first, then built-in defaults.
    pub(crate) routes: Vec<RoutePlan>,
    /// Env names and their sources; never values.
    pub(crate) env: Vec<EnvPlan>,
    pub(crate) git: Vec<GitPlan>,
    /// CIDR blocks the bundle may dial although private (`egress.allow_private`).
    pub(crate) allow_private: Vec<String>,
    /// Host path of an extra CA the bundle trusts for upstream TLS (`egress.extra_ca`).
    pub(crate) extra_ca: Option<String>,
    /// `egress.dlp`.
    pub(crate) dlp: DlpMode,
    pub(crate) supervise: bool,
    /// Memory, process and CPU caps of both containers.
    pub(crate) limits: LimitsPlan,
    /// Things that will fail at start or that the operator should know.
    pub(crate) warnings: Vec<String>,
}

/// How the bundle's egress proxy reaches upstream hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub(crate) enum EgressPlan {
    /// The bundle dials route hosts itself (no pipelock).
    Direct,
    /// Through pipelock, run by the bundle as a child: `binary` (the host file
    /// `CLAUDE_BOTTLE_PIPELOCK_BIN` names) is copied into the bundle image.
    Pipelock { version: String, binary: String },
    /// `CLAUDE_BOTTLE_PIPELOCK_BIN` names something that is not a usable pipelock: start
    /// refuses (never falls back to direct egress).
    Unusable { why: String },
}

/// The caps the bottle's containers get.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LimitsPlan {
    pub(crate) agent: ContainerLimits,
    pub(crate) bundle: ContainerLimits,
    /// The agent's `limits` keys the bottle does not set (their defaults apply).
    pub(crate) agent_defaults: Vec<&'static str>,
}

/// One container's caps, as Docker applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct ContainerLimits {
    /// Memory, and memory plus swap alike: no swap beyond it.
    pub(crate) memory_bytes: u64,
    /// Processes and threads together.
    pub(crate) pids: i64,
    /// Billionths of a CPU.
    pub(crate) nano_cpus: i64,
}

impl ContainerLimits {
    pub(crate) fn to_backend(self) -> crate::backend::ResourceLimits {
        crate::backend::ResourceLimits {
            memory_bytes: self.memory_bytes,
            pids: self.pids,
            nano_cpus: self.nano_cpus,
        }
    }
}

/// `nano_cpus` as a person writes it: `2`, `0.5`.
pub(crate) fn cpus_text(nano_cpus: i64) -> String {
    let whole = nano_cpus / NANO_PER_CPU;
    let frac = nano_cpus % NANO_PER_CPU;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct AgentPlan {
    pub(crate) name: String,
    pub(crate) file: String,
    /// The command as shown to a person (`claude`, `sh -c '…'` or the argv).
    pub(crate) command: Vec<String>,
    pub(crate) skills: Vec<String>,
    pub(crate) model: Option<String>,
    /// Claude Code's permission mode in the bottle.
    pub(crate) permission_mode: String,
    /// Length of the system prompt (the Markdown body), in lines.
    pub(crate) prompt_lines: usize,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct BottlePlan {
    pub(crate) name: String,
    pub(crate) file: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ImagesPlan {
    pub(crate) agent: String,
    pub(crate) bundle: String,
}

/// A route as the plan shows it: the route itself (the contract's types) and what the plan
/// adds, where it came from and whether its token is set.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RoutePlan {
    pub(crate) host: RouteHost,
    /// Empty: every path.
    pub(crate) path_allowlist: Vec<PathPrefix>,
    pub(crate) auth: Option<AuthPlan>,
    pub(crate) origin: RouteOrigin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RouteOrigin {
    /// Written in the bottle.
    Manifest,
    /// A built-in default route.
    BuiltIn,
    /// The built-in Claude credential route.
    ClaudeCredential,
    /// Approved through supervise (`egress-block`) while the bottle ran; re-applied on resume.
    Approved,
}

/// A route's credential in the plan. Serialized flat for `--json` (`scheme`, `header`,
/// `token`, `token_set`); the route itself is [`AuthPlan::route_auth`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AuthPlan {
    #[serde(serialize_with = "scheme_name")]
    pub(crate) scheme: AuthScheme,
    /// The header for scheme `header`.
    pub(crate) header: Option<String>,
    /// The host variable (and secrets-file key) holding the token.
    pub(crate) token: TokenRef,
    /// Whether that variable is set on the host now.
    pub(crate) token_set: bool,
}

impl AuthPlan {
    fn new(auth: &RouteAuth, vars_set: &BTreeSet<String>) -> AuthPlan {
        AuthPlan {
            scheme: auth.scheme.clone(),
            header: auth.scheme.header().map(ToString::to_string),
            token: auth.token_ref.clone(),
            token_set: vars_set.contains(auth.token_ref.as_str()),
        }
    }

    /// The credential as the bundle config carries it.
    pub(crate) fn route_auth(&self) -> RouteAuth {
        RouteAuth {
            scheme: self.scheme.clone(),
            token_ref: self.token.clone(),
        }
    }
}

/// `Bearer`, `token`, `Basic` or `header`, as manifests write it.
fn scheme_name<S: serde::Serializer>(scheme: &AuthScheme, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(scheme.name())
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct EnvPlan {
    pub(crate) name: String,
    /// `literal`, `host` or `prompt`.
    pub(crate) source: &'static str,
    /// For `host`: the host variable and whether it is set.
    pub(crate) host_var: Option<String>,
    pub(crate) host_var_set: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct GitPlan {
    pub(crate) name: String,
    pub(crate) upstream: String,
    /// The key on the host (copied into the bundle only).
    pub(crate) identity_file: String,
    pub(crate) known_host_key: Option<String>,
    /// `scanned, then forwarded; deletes refused; …` or why pushes are refused.
    pub(crate) push: String,
    /// Whether pushes may delete branches and tags (`AllowDelete`).
    pub(crate) allow_delete: bool,
    /// Whether pushes may rewrite history (`AllowForcePush`).
    pub(crate) allow_force_push: bool,
    /// The largest push the gate takes, in MiB (`MaxPushMB`).
    pub(crate) max_push_mb: u64,
    /// `host=address` pairs.
    pub(crate) extra_hosts: Vec<String>,
}

/// What the gate does with a push to `remote`, in one line for the plan.
fn push_summary(remote: &GitRemote) -> String {
    if remote.known_host_key.is_none() {
        return "refused: no KnownHostKey pinned, so the gate neither fetches nor pushes".into();
    }
    let allowed = |yes: bool| if yes { "allowed" } else { "refused" };
    format!(
        "scanned for secrets, then forwarded (host key pinned); deletes {}; force pushes {}; up to {} MiB (MaxPushMB)",
        allowed(remote.allow_delete),
        allowed(remote.allow_force_push),
        remote
            .max_push_mb
            .unwrap_or(crate::manifest::DEFAULT_MAX_PUSH_MB)
    )
}

/// Builds the plan. Pure: everything it needs is in `loaded` and `facts`.
pub(crate) fn build(loaded: &Loaded, facts: &HostFacts) -> Plan {
    let agent = &loaded.agent;
    let bottle = &loaded.bottle;
    let mut warnings = loaded.warnings.clone();

    let mut routes: Vec<RoutePlan> = bottle
        .routes
        .iter()
        .map(|r| route_plan(r, RouteOrigin::Manifest, facts))
        .collect();
    let in_manifest: BTreeSet<&str> = bottle.routes.iter().map(|r| r.host.as_str()).collect();
    let claude_var = bottle_contract::wire::CLAUDE_TOKEN_ENV;
    for host in DEFAULT_ROUTES {
        if in_manifest.contains(host) {
            continue;
        }
        let mut auth = None;
        let mut origin = RouteOrigin::BuiltIn;
        if *host == CLAUDE_API_HOST {
            let set = facts.vars_set.contains(claude_var);
            if set || agent.command == AgentCommand::Claude {
                origin = RouteOrigin::ClaudeCredential;
                let claude = RouteAuth {
                    scheme: AuthScheme::Bearer,
                    token_ref: TokenRef::claude(),
                };
                auth = Some(AuthPlan::new(&claude, &facts.vars_set));
            } else {
                warnings.push(format!(
                    "route `{host}` passes through without the Claude credential: `{claude_var}` is not set and the agent runs its own command"
                ));
            }
        }
        let Ok(host) = RouteHost::parse(host) else {
            continue; // DEFAULT_ROUTES are valid hosts (a test checks).
        };
        routes.push(RoutePlan {
            host,
            path_allowlist: Vec::new(),
            auth,
            origin,
        });
    }
    for r in &routes {
        if let Some(a) = r.auth.as_ref().filter(|a| !a.token_set) {
            warnings.push(format!(
                "route `{}`: its token variable `{}` is not set on the host; start will refuse until it is exported",
                r.host, a.token
            ));
        }
    }

    let env = bottle
        .env
        .iter()
        .map(|e| match &e.source {
            EnvSource::Literal(_) => EnvPlan {
                name: e.name.clone(),
                source: "literal",
                host_var: None,
                host_var_set: None,
            },
            EnvSource::HostVar(var) => {
                let set = facts.vars_set.contains(var);
                if let Some(r) = bottle.routes.iter().find(|r| {
                    r.auth.as_ref().is_some_and(|a| a.token_ref == var.as_str())
                }) {
                    warnings.push(format!(
                        "env `{}` copies `{var}`, the token of route `{}`: the agent will hold that credential itself; drop the env entry if the route's injection is enough",
                        e.name,
                        r.host.as_str()
                    ));
                }
                if !set {
                    warnings.push(format!(
                        "env `{}`: host variable `{var}` is not set; start will refuse until it is exported",
                        e.name
                    ));
                }
                EnvPlan {
                    name: e.name.clone(),
                    source: "host",
                    host_var: Some(var.clone()),
                    host_var_set: Some(set),
                }
            }
            EnvSource::Prompt(_) => EnvPlan {
                name: e.name.clone(),
                source: "prompt",
                host_var: None,
                host_var_set: None,
            },
        })
        .collect();

    let git: Vec<GitPlan> = bottle
        .git
        .iter()
        .map(|g| GitPlan {
            name: g.name.clone(),
            upstream: g.upstream.clone(),
            identity_file: expand_home(&g.identity_file, &facts.home),
            known_host_key: g.known_host_key.clone(),
            push: push_summary(g),
            allow_delete: g.allow_delete,
            allow_force_push: g.allow_force_push,
            max_push_mb: g
                .max_push_mb
                .unwrap_or(crate::manifest::DEFAULT_MAX_PUSH_MB),
            extra_hosts: g
                .extra_hosts
                .iter()
                .map(|(h, ip)| format!("{h}={ip}"))
                .collect(),
        })
        .collect();

    for skill in &agent.skills {
        let path = skill_path(&facts.home, skill);
        if facts.missing_paths.contains(&path) {
            warnings.push(format!(
                "skill `{skill}`: {path} does not exist; start will refuse until it does"
            ));
        }
    }
    if let Some(ca) = bottle
        .extra_ca
        .as_deref()
        .map(|p| expand_home(p, &facts.home))
        && facts.missing_paths.contains(&ca)
    {
        warnings.push(format!(
            "egress.extra_ca: {ca} does not exist; start will refuse until it does"
        ));
    }
    for why in &facts.unusable_files {
        warnings.push(format!("{why}; start will refuse until it is fixed"));
    }
    for g in &bottle.git {
        if g.known_host_key.is_none() {
            warnings.push(format!(
                "git remote `{}` has no KnownHostKey, so the gate will neither fetch nor push it; pin the upstream's key, e.g. the output of `{}` without the host name",
                g.name,
                crate::manifest::keyscan_command(&g.upstream)
            ));
        }
    }
    for g in &git {
        let g: &GitPlan = g;
        if facts.missing_paths.contains(&g.identity_file) {
            warnings.push(format!(
                "git remote `{}`: IdentityFile {} does not exist; start will refuse until it does",
                g.name, g.identity_file
            ));
        }
    }

    Plan {
        identity: format!("{}-{}", agent.name, facts.identity_suffix),
        agent: AgentPlan {
            name: agent.name.clone(),
            file: agent.file.display().to_string(),
            command: command_words(&agent.command),
            skills: agent.skills.clone(),
            model: agent.model.clone(),
            permission_mode: agent.permission_mode.clone(),
            prompt_lines: agent.prompt.lines().count(),
        },
        bottle: BottlePlan {
            name: bottle.name.clone(),
            file: bottle.file.display().to_string(),
        },
        images: ImagesPlan {
            agent: AGENT_IMAGE.into(),
            bundle: BUNDLE_IMAGE.into(),
        },
        runtime: match &facts.runtime {
            Runtime::Gvisor => "runsc (gVisor; the relay needs runsc's `--host-uds=open` to reach the bundle's sockets)".into(),
            Runtime::Runc => "runc (gVisor not registered with Docker)".into(),
            Runtime::Unknown(why) => format!("unknown ({why})"),
        },
        claude: match &facts.claude {
            Ok(source) => source.source_text(),
            Err(why) => {
                warnings.push(format!("Claude Code cannot be installed: {why}"));
                format!("UNUSABLE ({why})")
            }
        },
        egress: match &facts.pipelock {
            Ok(None) => EgressPlan::Direct,
            Ok(Some(bin)) => EgressPlan::Pipelock {
                version: bin.version.clone(),
                binary: bin.path.display().to_string(),
            },
            Err(why) => {
                warnings.push(format!("pipelock cannot be used: {why}"));
                EgressPlan::Unusable { why: why.clone() }
            }
        },
        pipelock_changes: Vec::new(),
        routes,
        env,
        git,
        allow_private: {
            warn_bridge_gateways(&bottle.allow_private, &facts.bridge_gateways, &mut warnings);
            bottle.allow_private.clone()
        },
        extra_ca: bottle
            .extra_ca
            .as_deref()
            .map(|p| expand_home(p, &facts.home)),
        dlp: bottle.dlp,
        supervise: bottle.supervise,
        limits: limits_plan(&bottle.limits, facts.engine_cpus, &mut warnings),
        warnings,
    }
}

/// The bottle's `limits` over [`AGENT_DEFAULT_LIMITS`], and the bundle's [`BUNDLE_LIMITS`].
/// A CPU limit is lowered to what the engine has (Docker refuses more), with a warning when
/// the bottle asked for it.
fn limits_plan(
    limits: &Limits,
    engine_cpus: Option<u32>,
    warnings: &mut Vec<String>,
) -> LimitsPlan {
    let defaults = AGENT_DEFAULT_LIMITS;
    let agent_defaults = [
        ("memory", limits.memory_bytes.is_none()),
        ("pids", limits.pids.is_none()),
        ("cpus", limits.nano_cpus.is_none()),
    ]
    .into_iter()
    .filter_map(|(key, unset)| unset.then_some(key))
    .collect();
    let mut nano_cpus = limits.nano_cpus.unwrap_or(defaults.nano_cpus);
    if let Some(engine) = engine_cpus.map(|n| i64::from(n) * NANO_PER_CPU)
        && nano_cpus > engine
    {
        if limits.nano_cpus.is_some() {
            warnings.push(format!(
                "limits.cpus {} is more than the engine's {} CPUs; the agent gets {}",
                cpus_text(nano_cpus),
                cpus_text(engine),
                cpus_text(engine)
            ));
        }
        nano_cpus = engine;
    }
    LimitsPlan {
        agent: ContainerLimits {
            memory_bytes: limits.memory_bytes.unwrap_or(defaults.memory_bytes),
            pids: limits.pids.unwrap_or(defaults.pids),
            nano_cpus,
        },
        bundle: BUNDLE_LIMITS,
        agent_defaults,
    }
}

/// A warning for each `allow_private` block that holds one of the host's own bridge addresses:
/// a route whose name resolves there would reach services on the host itself.
fn warn_bridge_gateways(
    blocks: &[String],
    gateways: &[std::net::IpAddr],
    warnings: &mut Vec<String>,
) {
    for block in blocks {
        let held: Vec<String> = gateways
            .iter()
            .filter(|g| crate::manifest::values::cidr_contains(block, **g))
            .map(ToString::to_string)
            .collect();
        if !held.is_empty() {
            warnings.push(format!(
                "egress.allow_private `{block}` holds this host's own address on a Docker bridge ({}): a route whose host resolves there reaches services on the host itself; narrow the block to your internal hosts",
                held.join(", ")
            ));
        }
    }
}

/// Re-applies the routes a bottle had live when it was suspended (`state/<id>/routes.json`,
/// which the approvals write), for `resume`. A live route identical to the plan's route for
/// its host changes nothing; any other replaces the plan's route for that host or is added,
/// marked [`RouteOrigin::Approved`]. `vars_set` says which of their token variables are set
/// on the host now.
pub(crate) fn with_approved_routes(
    mut plan: Plan,
    live: &[bottle_contract::bundle_config::RouteConfig],
    vars_set: &BTreeSet<String>,
) -> Plan {
    for route in live {
        let approved = RoutePlan {
            host: route.host.clone(),
            path_allowlist: route.path_allowlist.clone(),
            auth: route.auth.as_ref().map(|a| AuthPlan::new(a, vars_set)),
            origin: RouteOrigin::Approved,
        };
        let unchanged = plan.routes.iter().any(|r| r.route() == approved.route());
        if !unchanged {
            plan.routes.retain(|r| r.host != approved.host);
            plan.routes.push(approved);
        }
    }
    plan
}

fn route_plan(route: &Route, origin: RouteOrigin, facts: &HostFacts) -> RoutePlan {
    RoutePlan {
        host: route.host.clone(),
        path_allowlist: route.path_allowlist.clone(),
        auth: route
            .auth
            .as_ref()
            .map(|a| AuthPlan::new(a, &facts.vars_set)),
        origin,
    }
}

impl RoutePlan {
    /// The route as the bundle config carries it.
    pub(crate) fn route(&self) -> RouteConfig {
        RouteConfig {
            host: self.host.clone(),
            port: None,
            path_allowlist: self.path_allowlist.clone(),
            auth: self.auth.as_ref().map(AuthPlan::route_auth),
        }
    }
}

fn command_words(command: &AgentCommand) -> Vec<String> {
    match command {
        AgentCommand::Claude => vec!["claude".into()],
        AgentCommand::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        AgentCommand::Argv(argv) => argv.clone(),
    }
}

/// `~/x` -> `$HOME/x`; anything else unchanged.
pub(crate) fn expand_home(path: &str, home: &Path) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest).display().to_string(),
        None => path.to_owned(),
    }
}

/// Host variables the plan asks about: every token and `${VAR}` of the bottle, plus the Claude
/// credential.
pub(crate) fn vars_of_interest(loaded: &Loaded) -> BTreeSet<String> {
    let mut vars = BTreeSet::from([bottle_contract::wire::CLAUDE_TOKEN_ENV.to_owned()]);
    for r in &loaded.bottle.routes {
        if let Some(a) = &r.auth {
            vars.insert(a.token_ref.to_string());
        }
    }
    for e in &loaded.bottle.env {
        if let EnvSource::HostVar(v) = &e.source {
            vars.insert(v.clone());
        }
    }
    vars
}

/// Directory of Claude skills on the host (`~/.claude/skills/<name>`), relative to `$HOME`.
pub(crate) const SKILLS_DIR: &str = ".claude/skills";

fn skill_path(home: &Path, skill: &str) -> String {
    home.join(SKILLS_DIR).join(skill).display().to_string()
}

/// Host paths the bottle will copy: each skill directory, each git `IdentityFile`, and the
/// extra CA.
pub(crate) fn host_paths(loaded: &Loaded, home: &Path) -> BTreeSet<String> {
    let skills = loaded.agent.skills.iter().map(|s| skill_path(home, s));
    let keys = loaded
        .bottle
        .git
        .iter()
        .map(|g| expand_home(&g.identity_file, home));
    let ca = loaded.bottle.extra_ca.iter().map(|p| expand_home(p, home));
    skills.chain(keys).chain(ca).collect()
}

/// The random part of an identity from random bytes: lowercase base36, [`IDENTITY_SUFFIX_LEN`]
/// characters.
pub(crate) fn identity_suffix(random: [u8; IDENTITY_SUFFIX_LEN]) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    random
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
pub(crate) mod tests;
