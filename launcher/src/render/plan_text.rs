//! The preflight plan as text (`claude-bottle start --dry-run`).

use std::fmt::Write;

use bottle_contract::bundle_config::DlpMode;

use crate::manifest::values::{Layout, escape_controls};
use crate::plan::{ContainerLimits, EgressPlan, Plan, RouteOrigin, cpus_text};

/// The `egress` line: through pipelock, or direct and how to add pipelock.
pub(crate) fn egress_text(egress: &EgressPlan) -> String {
    match egress {
        EgressPlan::Direct => format!(
            "direct (no pipelock; to add its allowlist and DLP behind the bundle, set {} to a Linux pipelock executable: README \"Pipelock\")",
            crate::bottle::pipelock_bin::PIPELOCK_BIN_ENV
        ),
        EgressPlan::Pipelock { version, binary } => {
            format!(
                "via pipelock {version} ({binary}; its allowlist and DLP run behind the bundle)"
            )
        }
        EgressPlan::Unusable { why } => format!("UNUSABLE ({why})"),
    }
}

/// The plan as aligned text. Like the plan itself, it holds names, never values.
pub(crate) fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    let w = &mut out;
    // Writing to a String cannot fail.
    let _ = writeln!(w, "Preflight plan for bottle {}", plan.identity);
    let _ = writeln!(w, "  agent      {}  ({})", plan.agent.name, plan.agent.file);
    let _ = writeln!(w, "  command    {}", shell_words(&plan.agent.command));
    let _ = writeln!(w, "  skills     {}", list_or_none(&plan.agent.skills));
    if let Some(model) = &plan.agent.model {
        let _ = writeln!(w, "  model      {model}");
    }
    let _ = writeln!(w, "  prompt     {} lines", plan.agent.prompt_lines);
    if plan.agent.command == ["claude"] {
        let _ = writeln!(
            w,
            "  mode       {} (Claude Code's permission mode{})",
            plan.agent.permission_mode,
            if plan.agent.permission_mode == crate::manifest::DEFAULT_PERMISSION_MODE {
                "; the bottle is the boundary. Set permissionMode in the agent file to be asked"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        w,
        "  bottle     {}  ({})",
        plan.bottle.name, plan.bottle.file
    );
    let _ = writeln!(
        w,
        "  images     agent {}, bundle {}",
        plan.images.agent, plan.images.bundle
    );
    let _ = writeln!(w, "  runtime    {}", plan.runtime);
    let _ = writeln!(w, "  claude     {}", plan.claude);
    let _ = writeln!(w, "  egress     {}", egress_text(&plan.egress));
    let _ = writeln!(
        w,
        "  supervise  {}",
        if plan.supervise {
            "on (MCP tools for a stuck agent; proposals go to the dashboard)"
        } else {
            "off"
        }
    );
    let limits = &plan.limits;
    let agent_note = match limits.agent_defaults.as_slice() {
        [] => "from the bottle's `limits`".to_owned(),
        keys => format!("defaults: {}", keys.join(", ")),
    };
    let _ = writeln!(
        w,
        "  limits     agent  {}  ({agent_note})",
        limits_text(&limits.agent)
    );
    let _ = writeln!(
        w,
        "             bundle {}  (fixed)",
        limits_text(&limits.bundle)
    );
    let _ = writeln!(
        w,
        "  routes ({}; any other host is refused)",
        plan.routes.len()
    );
    let width = plan
        .routes
        .iter()
        .map(|r| r.host.as_str().len())
        .max()
        .unwrap_or(0);
    for r in &plan.routes {
        let paths = if r.path_allowlist.is_empty() {
            "all paths".to_owned()
        } else {
            format!("paths {}", r.path_allowlist.join(" "))
        };
        let auth = match &r.auth {
            None => "no auth".to_owned(),
            Some(a) => {
                let scheme = match &a.header {
                    Some(h) => format!("header {h}"),
                    None => a.scheme.name().to_owned(),
                };
                let set = if a.token_set { "set" } else { "NOT SET" };
                format!("auth {scheme} from ${} ({set})", a.token)
            }
        };
        let origin = match r.origin {
            RouteOrigin::Manifest => "",
            RouteOrigin::BuiltIn => "  [built-in]",
            RouteOrigin::ClaudeCredential => "  [built-in, Claude credential]",
            RouteOrigin::Approved => "  [approved through supervise]",
        };
        let _ = writeln!(w, "    {:width$}  {paths}; {auth}{origin}", r.host);
    }
    if !plan.allow_private.is_empty() {
        let _ = writeln!(
            w,
            "  private    may dial {} (egress.allow_private)",
            plan.allow_private.join(" ")
        );
    }
    if let Some(ca) = &plan.extra_ca {
        let _ = writeln!(w, "  extra CA   {ca} trusted for upstream TLS");
    }
    let dlp = match plan.dlp {
        DlpMode::Block => {
            "a request carrying a bottle secret is refused; secrets in answers are masked"
        }
        DlpMode::Log => {
            "a request carrying a bottle secret is forwarded and audited; secrets in answers are masked"
        }
        DlpMode::Off => "requests and answers are not looked through for secrets",
    };
    let _ = writeln!(w, "  dlp        {} (egress.dlp): {dlp}", plan.dlp.as_str());
    let _ = writeln!(w, "  env ({}; values never shown)", plan.env.len());
    let width = plan.env.iter().map(|e| e.name.len()).max().unwrap_or(0);
    for e in &plan.env {
        let source = match (e.source, &e.host_var, e.host_var_set) {
            ("host", Some(var), Some(true)) => format!("from host ${var} (set)"),
            ("host", Some(var), _) => format!("from host ${var} (NOT SET)"),
            ("prompt", _, _) => "asked on the terminal at start, not echoed".to_owned(),
            _ => "literal in the bottle".to_owned(),
        };
        let _ = writeln!(w, "    {:width$}  {source}", e.name);
    }
    let _ = writeln!(w, "  git remotes ({})", plan.git.len());
    for g in &plan.git {
        let _ = writeln!(
            w,
            "    {} -> {}  (git://git-gate/{}.git)",
            g.name, g.upstream, g.name
        );
        let _ = writeln!(w, "      key   {} (held by the bundle)", g.identity_file);
        let _ = writeln!(w, "      push  {}", g.push);
        if !g.extra_hosts.is_empty() {
            let _ = writeln!(w, "      hosts {}", g.extra_hosts.join(" "));
        }
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(w, "warnings:");
        for warning in &plan.warnings {
            let _ = writeln!(w, "  - {warning}");
        }
    }
    // A project's agent file (a cloned repository's) supplies the command, model and more:
    // escaped so it cannot drive the terminal of whoever runs the dry run.
    escape_controls(&out, Layout::Block)
}

/// `memory 4 GiB (no swap), 1024 processes, 2 CPUs`.
fn limits_text(limits: &ContainerLimits) -> String {
    let cpus = cpus_text(limits.nano_cpus);
    format!(
        "memory {} (no swap), {} processes, {cpus} CPU{}",
        size_text(limits.memory_bytes),
        limits.pids,
        if cpus == "1" { "" } else { "s" }
    )
}

/// Bytes in the largest binary unit that divides them: `4 GiB`, `512 MiB`, `65 KiB`.
fn size_text(bytes: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

/// Words joined for display, quoting those with spaces.
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{}'", w.replace('\'', "'\\''"))
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
