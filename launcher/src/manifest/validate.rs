//! The YAML tree -> typed [`Bottle`] / [`Agent`], checking every key.
//!
//! Each rejection is a [`ManifestError::Invalid`] naming the file, the line and the dotted key
//! path (`egress.routes[0].auth.token_ref`). Unknown keys list the allowed ones and suggest the
//! closest; legacy keys of the Python claude-bottle carry a migration hint.

use std::net::IpAddr;
use std::path::Path;

use super::parse::{Kind, Node, parse_document};
use super::tree::{Cx, join};
use super::values::{
    CPUS_FORMS, MEMORY_FORMS, PIDS_FORMS, check_cidr, check_host_key, check_max_push_mb,
    check_pids, check_ssh_url, parse_cpus, parse_memory, valid_env_name, valid_plain_name,
};
use super::{
    Agent, AgentCommand, Bottle, EnvSource, EnvVar, GitRemote, Limits, ManifestError, Route,
};
use crate::secrets::Secret;
use bottle_contract::bundle_config::DlpMode;
use bottle_contract::route::{AuthScheme, PathPrefix, RouteAuth, RouteHost, SchemeError, TokenRef};

const BOTTLE_KEYS: &[&str] = &["env", "git", "egress", "supervise", "limits"];
const LIMITS_KEYS: &[&str] = &["memory", "pids", "cpus"];
const EGRESS_KEYS: &[&str] = &["routes", "allow_private", "extra_ca", "dlp"];
const ROUTE_KEYS: &[&str] = &["host", "path_allowlist", "auth"];
const AUTH_KEYS: &[&str] = &["scheme", "token_ref", "header"];
const GIT_KEYS: &[&str] = &[
    "Name",
    "Upstream",
    "IdentityFile",
    "KnownHostKey",
    "ExtraHosts",
    "AllowDelete",
    "AllowForcePush",
    "MaxPushMB",
];
const AGENT_KEYS: &[&str] = &[
    "bottle",
    "skills",
    "command",
    "name",
    "description",
    "model",
    "tools",
    "color",
    "permissionMode",
];

/// Keys of the Python claude-bottle that no longer exist, with what to write instead.
const BOTTLE_LEGACY: &[(&str, &str)] = &[
    (
        "tokens",
        "`tokens` was removed: give each credential to the route that needs it, `egress.routes[].auth: {scheme: Bearer, token_ref: HOST_VAR}` (the bundle injects it, the agent never holds it); see the README's manifest reference",
    ),
    (
        "cred_proxy",
        "`cred_proxy` was removed: credentials are injected per route by the bundle, `egress.routes[].auth`; see the README's manifest reference",
    ),
    (
        "egress_proxy",
        "`egress_proxy` was removed: the bundle is always the egress proxy; list allowed hosts under `egress.routes` (`- host: NAME`)",
    ),
    (
        "ssh",
        "`ssh` was removed: git over SSH goes through the bundle's git gate; declare each remote under `git:` with Name, Upstream, IdentityFile and KnownHostKey",
    ),
    (
        "runtime",
        "`runtime` was removed: the launcher uses gVisor (`runsc`) by itself when Docker has it registered; delete the key",
    ),
];
const EGRESS_LEGACY: &[(&str, &str)] = &[(
    "allowlist",
    "`egress.allowlist` was replaced by `egress.routes`: write each host as `- host: NAME` (with optional `path_allowlist` and `auth`)",
)];

/// Env names the launcher sets itself; a bottle may not override them.
const RESERVED_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CLAUDE_CODE_OAUTH_TOKEN",
];

/// The `egress` section, before it is spread over [`Bottle`]'s fields.
struct EgressSection {
    routes: Vec<Route>,
    allow_private: Vec<String>,
    /// The path and the line of its value.
    extra_ca: Option<(String, u32)>,
    dlp: DlpMode,
}

/// Parses and validates a bottle file.
pub(crate) fn parse_bottle(file: &Path, name: &str, text: &str) -> Result<Bottle, ManifestError> {
    let cx = Cx { file };
    let doc = parse_document(text).map_err(|e| cx.err(e.line, "frontmatter", e.message))?;
    let entries = cx.map(&doc.root, "frontmatter")?;
    cx.check_keys(entries, "", BOTTLE_KEYS, BOTTLE_LEGACY)?;
    let mut bottle = Bottle {
        name: name.to_owned(),
        file: file.to_owned(),
        env: Vec::new(),
        git: Vec::new(),
        routes: Vec::new(),
        allow_private: Vec::new(),
        extra_ca: None,
        extra_ca_line: 0,
        dlp: DlpMode::default(),
        supervise: false,
        limits: Limits::default(),
    };
    for (key, value) in entries {
        match key.name.as_str() {
            "env" => bottle.env = cx.env(value)?,
            "git" => bottle.git = cx.git(value)?,
            "egress" => {
                let egress = cx.egress(value)?;
                bottle.routes = egress.routes;
                bottle.allow_private = egress.allow_private;
                bottle.dlp = egress.dlp;
                if let Some((path, line)) = egress.extra_ca {
                    bottle.extra_ca = Some(path);
                    bottle.extra_ca_line = line;
                }
            }
            "supervise" => bottle.supervise = cx.bool(value, "supervise")?,
            "limits" => bottle.limits = cx.limits(value)?,
            _ => {} // check_keys allowed nothing else.
        }
    }
    Ok(bottle)
}

/// Parses and validates an agent file.
pub(crate) fn parse_agent(file: &Path, name: &str, text: &str) -> Result<Agent, ManifestError> {
    let cx = Cx { file };
    let doc = parse_document(text).map_err(|e| cx.err(e.line, "frontmatter", e.message))?;
    let entries = cx.map(&doc.root, "frontmatter")?;
    cx.check_keys(entries, "", AGENT_KEYS, &[])?;
    let mut agent = Agent {
        name: name.to_owned(),
        file: file.to_owned(),
        bottle: String::new(),
        bottle_line: 0,
        skills: Vec::new(),
        command: AgentCommand::Claude,
        display_name: None,
        description: None,
        model: None,
        tools: Vec::new(),
        color: None,
        permission_mode: super::DEFAULT_PERMISSION_MODE.to_owned(),
        prompt: doc.body.trim().to_owned(),
    };
    let mut has_bottle = false;
    for (key, value) in entries {
        let k = key.name.as_str();
        match k {
            "bottle" => {
                let b = cx.string(value, k)?;
                if !super::valid_stem(&b) {
                    return Err(cx.err(
                        value.line,
                        k,
                        format!(
                            "`{b}` is not a bottle name: names match [a-z][a-z0-9-]* (the file ~/.claude-bottle/bottles/<name>.md)"
                        ),
                    ));
                }
                agent.bottle = b;
                agent.bottle_line = value.line;
                has_bottle = true;
            }
            "skills" => {
                for (i, item) in cx.seq(value, k)?.iter().enumerate() {
                    let path = format!("skills[{i}]");
                    let s = cx.string(item, &path)?;
                    if !valid_plain_name(&s) {
                        return Err(cx.err(
                            item.line,
                            &path,
                            format!(
                                "`{s}` is not a skill name: use the directory name under ~/.claude/skills/ (letters, digits, `.`, `_`, `-`; no `/`)"
                            ),
                        ));
                    }
                    agent.skills.push(s);
                }
            }
            "command" => agent.command = cx.command(value)?,
            "name" => agent.display_name = Some(cx.string(value, k)?),
            "description" => agent.description = Some(cx.string(value, k)?),
            "model" => agent.model = Some(cx.string(value, k)?),
            "color" => agent.color = Some(cx.string(value, k)?),
            "tools" => agent.tools = cx.string_or_list(value, k)?,
            "permissionMode" => {
                let mode = cx.string(value, k)?;
                if !super::PERMISSION_MODES.contains(&mode.as_str()) {
                    return Err(cx.err(
                        value.line,
                        k,
                        format!(
                            "`{mode}` is not a Claude Code permission mode: use one of {} (default {} in a bottle)",
                            super::PERMISSION_MODES.join(", "),
                            super::DEFAULT_PERMISSION_MODE
                        ),
                    ));
                }
                agent.permission_mode = mode;
            }
            _ => {} // check_keys allowed nothing else.
        }
    }
    if !has_bottle {
        return Err(cx.err(
            doc.root.line,
            "bottle",
            "missing required key: name the bottle this agent runs in, e.g. `bottle: example` (a file ~/.claude-bottle/bottles/example.md)".into(),
        ));
    }
    Ok(agent)
}

/// The domain checks: one method per manifest section.
impl Cx<'_> {
    fn env(&self, node: &Node) -> Result<Vec<EnvVar>, ManifestError> {
        let mut vars = Vec::new();
        for (key, value) in self.map(node, "env")? {
            let path = format!("env.{}", key.name);
            if !valid_env_name(&key.name) {
                return Err(self.err(
                    key.line,
                    &path,
                    "not a valid environment variable name: use letters, digits and `_`, not starting with a digit".into(),
                ));
            }
            if RESERVED_ENV.contains(&key.name.as_str()) {
                return Err(self.err(
                    key.line,
                    &path,
                    "the launcher sets this variable itself (proxy, CA trust or the Claude placeholder); remove it from `env`".into(),
                ));
            }
            let text = match &value.kind {
                Kind::Str(s) => s.clone(),
                Kind::Bool(b) => b.to_string(),
                Kind::Int(i) => i.to_string(),
                Kind::Float(_) => {
                    return Err(self.err(
                        value.line,
                        &path,
                        "a decimal number would be rewritten (1.10 becomes 1.1); quote the value to keep it exactly".into(),
                    ));
                }
                _ => return Err(self.type_err(value, &path, "a string")),
            };
            let source = self.env_source(&text, value.line, &path)?;
            vars.push(EnvVar {
                name: key.name.clone(),
                source,
                line: key.line,
            });
        }
        Ok(vars)
    }

    fn env_source(&self, text: &str, line: u32, path: &str) -> Result<EnvSource, ManifestError> {
        if let Some(prompt) = text.strip_prefix('?') {
            // A bare `?` or `?prompt` asks with a default text.
            let prompt = match prompt.trim() {
                "prompt" => "",
                other => other,
            };
            return Ok(EnvSource::Prompt(prompt.to_owned()));
        }
        if let Some(inner) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) {
            if !valid_env_name(inner) {
                return Err(self.err(
                    line,
                    path,
                    format!("`${{{inner}}}` does not name a host variable: write `${{NAME}}` with letters, digits and `_`"),
                ));
            }
            if inner == bottle_contract::wire::CLAUDE_TOKEN_ENV {
                return Err(self.err(
                    line,
                    path,
                    format!("the Claude credential `{inner}` is never given to the agent: the bundle injects it on the api.anthropic.com route; remove this entry"),
                ));
            }
            return Ok(EnvSource::HostVar(inner.to_owned()));
        }
        if text.contains("${") {
            return Err(self.err(
                line,
                path,
                "`${…}` must be the whole value (`\"${NAME}\"` copies host variable NAME); other text around it is not expanded".into(),
            ));
        }
        Ok(EnvSource::Literal(Secret::new(text.to_owned())))
    }

    fn limits(&self, node: &Node) -> Result<Limits, ManifestError> {
        let entries = self.map(node, "limits")?;
        self.check_keys(entries, "limits", LIMITS_KEYS, &[])?;
        let mut limits = Limits::default();
        for (key, value) in entries {
            let path = join("limits", &key.name);
            let bad = |m: String| self.err(value.line, &path, m);
            match (key.name.as_str(), &value.kind) {
                ("memory", Kind::Str(text)) => {
                    limits.memory_bytes = Some(parse_memory(text).map_err(bad)?);
                }
                ("memory", Kind::Int(_) | Kind::Float(_)) => {
                    return Err(bad(format!(
                        "a bare number has no unit; expected {MEMORY_FORMS}"
                    )));
                }
                ("memory", _) => return Err(self.type_err(value, &path, MEMORY_FORMS)),
                ("pids", Kind::Int(n)) => limits.pids = Some(check_pids(*n).map_err(bad)?),
                ("pids", _) => return Err(self.type_err(value, &path, PIDS_FORMS)),
                ("cpus", Kind::Int(n)) => {
                    // Rounding a huge count to f64 is harmless: the range check refuses it.
                    limits.nano_cpus = Some(parse_cpus(*n as f64).map_err(bad)?);
                }
                ("cpus", Kind::Float(f)) => limits.nano_cpus = Some(parse_cpus(*f).map_err(bad)?),
                ("cpus", _) => return Err(self.type_err(value, &path, CPUS_FORMS)),
                _ => {} // check_keys allowed nothing else.
            }
        }
        Ok(limits)
    }

    fn egress(&self, node: &Node) -> Result<EgressSection, ManifestError> {
        let entries = self.map(node, "egress")?;
        self.check_keys(entries, "egress", EGRESS_KEYS, EGRESS_LEGACY)?;
        let mut routes: Vec<Route> = Vec::new();
        let mut allow_private = Vec::new();
        let mut extra_ca = None;
        let mut dlp = DlpMode::default();
        for (key, value) in entries {
            match key.name.as_str() {
                "allow_private" => {
                    for (i, item) in self.seq(value, "egress.allow_private")?.iter().enumerate() {
                        let path = format!("egress.allow_private[{i}]");
                        let text = self.string(item, &path)?;
                        check_cidr(&text).map_err(|m| self.err(item.line, &path, m))?;
                        allow_private.push(text);
                    }
                    continue;
                }
                "extra_ca" => {
                    extra_ca = Some((self.string(value, "egress.extra_ca")?, value.line));
                    continue;
                }
                "dlp" => {
                    let text = self.string(value, "egress.dlp")?;
                    dlp = text
                        .parse()
                        .map_err(|m: String| self.err(value.line, "egress.dlp", m))?;
                    continue;
                }
                _ => {}
            }
            for (i, item) in self.seq(value, "egress.routes")?.iter().enumerate() {
                let prefix = format!("egress.routes[{i}]");
                let route = self.route(item, &prefix)?;
                if routes.iter().any(|r| r.host == route.host) {
                    return Err(self.err(
                        item.line,
                        &format!("{prefix}.host"),
                        format!(
                            "host `{}` already has a route above; merge the two entries",
                            route.host.as_str()
                        ),
                    ));
                }
                routes.push(route);
            }
        }
        Ok(EgressSection {
            routes,
            allow_private,
            extra_ca,
            dlp,
        })
    }

    fn route(&self, node: &Node, prefix: &str) -> Result<Route, ManifestError> {
        let entries = self.map(node, prefix)?;
        self.check_keys(entries, prefix, ROUTE_KEYS, &[])?;
        let mut host = None;
        let mut path_allowlist = Vec::new();
        let mut auth = None;
        for (key, value) in entries {
            let path = join(prefix, &key.name);
            match key.name.as_str() {
                "host" => {
                    let text = self.string(value, &path)?;
                    let parsed = RouteHost::parse(&text)
                        .map_err(|e| self.err(value.line, &path, e.to_string()))?;
                    host = Some(parsed);
                }
                "path_allowlist" => {
                    for (i, item) in self.seq(value, &path)?.iter().enumerate() {
                        let p = format!("{path}[{i}]");
                        let text = self.string(item, &p)?;
                        let prefix = PathPrefix::parse(&text)
                            .map_err(|e| self.err(item.line, &p, e.to_string()))?;
                        path_allowlist.push(prefix);
                    }
                }
                "auth" => auth = Some(self.auth(value, &path)?),
                _ => {} // check_keys allowed nothing else.
            }
        }
        let Some(host) = host else {
            return Err(self.err(
                node.line,
                &format!("{prefix}.host"),
                "missing required key: every route names its `host`".into(),
            ));
        };
        Ok(Route {
            host,
            path_allowlist,
            auth,
        })
    }

    fn auth(&self, node: &Node, prefix: &str) -> Result<RouteAuth, ManifestError> {
        let entries = self.map(node, prefix)?;
        self.check_keys(entries, prefix, AUTH_KEYS, &[])?;
        let find = |k: &str| {
            entries
                .iter()
                .find(|(key, _)| key.name == k)
                .map(|(_, v)| v)
        };
        let missing = |k: &str, why: &str| {
            self.err(
                node.line,
                &format!("{prefix}.{k}"),
                format!("missing required key: {why}"),
            )
        };
        let scheme_node = find("scheme")
            .ok_or_else(|| missing("scheme", "one of Bearer, token, Basic, header"))?;
        let scheme_path = format!("{prefix}.scheme");
        let scheme_text = self.string(scheme_node, &scheme_path)?;
        let header = match find("header") {
            Some(h) => Some((h, self.string(h, &format!("{prefix}.header"))?)),
            None => None,
        };
        // One spelling each, as documented: `bearer` or `BASIC` is refused with the right one,
        // so a manifest reads the same everywhere. The rules are the contract's, which the
        // proxy and the MCP tool use too.
        let scheme = AuthScheme::from_parts(&scheme_text, header.as_ref().map(|(_, n)| n.as_str()))
            .map_err(|e| match (&e, &header) {
                (SchemeError::Header(_), Some((h, _))) => {
                    self.err(h.line, &format!("{prefix}.header"), e.message())
                }
                (SchemeError::MissingHeader, _) => missing(
                    "header",
                    "scheme `header` needs the header's name, e.g. `header: x-api-key`",
                ),
                _ => self.err(scheme_node.line, &scheme_path, e.message()),
            })?;
        let token_node = find("token_ref").ok_or_else(|| {
            missing(
                "token_ref",
                "the HOST environment variable holding the token, e.g. `token_ref: GH_PAT`",
            )
        })?;
        let token_path = format!("{prefix}.token_ref");
        let token_text = self.string(token_node, &token_path)?;
        let token_ref = TokenRef::parse(&token_text)
            .map_err(|e| self.err(token_node.line, &token_path, e.to_string()))?;
        Ok(RouteAuth { scheme, token_ref })
    }

    fn git(&self, node: &Node) -> Result<Vec<GitRemote>, ManifestError> {
        let mut remotes: Vec<GitRemote> = Vec::new();
        for (i, item) in self.seq(node, "git")?.iter().enumerate() {
            let prefix = format!("git[{i}]");
            let remote = self.git_remote(item, &prefix)?;
            if remotes.iter().any(|r| r.name == remote.name) {
                return Err(self.err(
                    item.line,
                    &format!("{prefix}.Name"),
                    format!("remote `{}` is declared twice; each Name is served once as git://git-gate/<Name>.git", remote.name),
                ));
            }
            remotes.push(remote);
        }
        Ok(remotes)
    }

    fn git_remote(&self, node: &Node, prefix: &str) -> Result<GitRemote, ManifestError> {
        let entries = self.map(node, prefix)?;
        self.check_keys(entries, prefix, GIT_KEYS, &[])?;
        let mut name = None;
        let mut upstream = None;
        let mut identity_file = None;
        let mut identity_file_line = node.line;
        let mut known_host_key = None;
        let mut extra_hosts = Vec::new();
        let mut allow_delete = false;
        let mut allow_force_push = false;
        let mut max_push_mb = None;
        for (key, value) in entries {
            let path = join(prefix, &key.name);
            match key.name.as_str() {
                "Name" => {
                    let n = self.string(value, &path)?;
                    if !valid_plain_name(&n) {
                        return Err(self.err(value.line, &path, format!("`{n}` is not a remote name: use letters, digits, `.`, `_`, `-` (it becomes git://git-gate/<Name>.git)")));
                    }
                    name = Some(n);
                }
                "Upstream" => {
                    let u = self.string(value, &path)?;
                    check_ssh_url(&u).map_err(|m| self.err(value.line, &path, m))?;
                    upstream = Some(u);
                }
                "IdentityFile" => {
                    identity_file = Some(self.string(value, &path)?);
                    identity_file_line = value.line;
                }
                "AllowDelete" => allow_delete = self.bool(value, &path)?,
                "AllowForcePush" => allow_force_push = self.bool(value, &path)?,
                "MaxPushMB" => match &value.kind {
                    Kind::Int(n) => {
                        max_push_mb = Some(
                            check_max_push_mb(*n).map_err(|m| self.err(value.line, &path, m))?,
                        );
                    }
                    _ => {
                        return Err(self.type_err(
                            value,
                            &path,
                            "a whole number of MiB, e.g. `MaxPushMB: 500`",
                        ));
                    }
                },
                "KnownHostKey" => {
                    let k = self.string(value, &path)?;
                    check_host_key(&k).map_err(|m| self.err(value.line, &path, m))?;
                    known_host_key = Some(k);
                }
                "ExtraHosts" => {
                    for (k, v) in self.map(value, &path)? {
                        let p = format!("{path}.{}", k.name);
                        if k.name.starts_with("*.") {
                            return Err(self.err(
                                k.line,
                                &p,
                                "a wildcard cannot map to one address; name the host".into(),
                            ));
                        }
                        RouteHost::parse(&k.name)
                            .map_err(|e| self.err(k.line, &p, e.to_string()))?;
                        let addr = self.string(v, &p)?;
                        let ip: IpAddr = addr.parse().map_err(|_| {
                            self.err(v.line, &p, format!("`{addr}` is not an IP address"))
                        })?;
                        extra_hosts.push((k.name.clone(), ip));
                    }
                }
                _ => {} // check_keys allowed nothing else.
            }
        }
        let need = |v: Option<String>, k: &str, why: &str| {
            v.ok_or_else(|| {
                self.err(
                    node.line,
                    &format!("{prefix}.{k}"),
                    format!("missing required key: {why}"),
                )
            })
        };
        Ok(GitRemote {
            name: need(
                name,
                "Name",
                "the remote's name, served as git://git-gate/<Name>.git",
            )?,
            upstream: need(
                upstream,
                "Upstream",
                "the real repository, e.g. ssh://git@host:22/owner/repo.git",
            )?,
            identity_file: need(
                identity_file,
                "IdentityFile",
                "the private key the gate pushes with, e.g. ~/.ssh/id_ed25519",
            )?,
            identity_file_line,
            known_host_key,
            extra_hosts,
            allow_delete,
            allow_force_push,
            max_push_mb,
        })
    }

    fn command(&self, node: &Node) -> Result<AgentCommand, ManifestError> {
        match &node.kind {
            Kind::Str(_) => Ok(AgentCommand::Shell(self.string(node, "command")?)),
            Kind::Seq(items) if !items.is_empty() => Ok(AgentCommand::Argv(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.string(item, &format!("command[{i}]")))
                    .collect::<Result<_, _>>()?,
            )),
            Kind::Seq(_) => Err(self.err(
                node.line,
                "command",
                "must not be empty; omit `command` to run `claude`".into(),
            )),
            _ => Err(self.type_err(
                node,
                "command",
                "a string (run by /bin/sh -c) or a list (argv)",
            )),
        }
    }
}

#[cfg(test)]
#[path = "validate_tests/mod.rs"]
mod tests;
