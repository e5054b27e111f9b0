//! `claude-bottle start <agent>`: load, plan, confirm, resolve secrets, render the bundle's
//! files. Creating containers is the Docker backend's step, not built yet: `start` stops there
//! with an error saying so.

use std::io::{BufRead, Write};

use anyhow::Context;

use crate::cli::StartArgs;
use crate::facts;
use crate::manifest::{self, Dirs};
use crate::plan;
use crate::render::bottle_files;
use crate::render::bundle_config::{Egress, token_routes};
use crate::render::plan_text::plan_text;
use crate::secrets::{self, HostEnv};

pub(crate) fn run(args: &StartArgs, dirs: &Dirs, host: &dyn HostEnv) -> anyhow::Result<()> {
    let loaded = manifest::load(dirs, &args.agent)?;
    let facts = facts::gather(&loaded, host)?;
    let plan = plan::build(&loaded, &facts);
    if args.json {
        // Warnings are part of the JSON; stderr stays quiet so the output can be piped.
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    print!("{}", plan_text(&plan));
    if args.dry_run {
        return Ok(());
    }
    if !args.yes && !confirm(host)? {
        println!("not started");
        return Ok(());
    }
    if !facts.missing_paths.is_empty() {
        let list: Vec<&str> = facts.missing_paths.iter().map(String::as_str).collect();
        anyhow::bail!(
            "the bottle needs host files that do not exist: {} (skills are copied from ~/.claude/skills/<name>; git IdentityFile keys are copied into the bundle)",
            list.join(", ")
        );
    }
    let env = secrets::resolve_env(&loaded.bottle, host)?;
    let tokens = secrets::resolve_tokens(&token_routes(&plan), host)?;
    let files = bottle_files(&plan, Egress::Direct, &tokens)?;
    tracing::debug!(
        identity = %plan.identity,
        config_bytes = files.config_json.len(),
        secrets_bytes = files.secrets_json.len(),
        "bundle files rendered"
    );
    // FIXME(docker backend): build images, create the network, bundle and agent, copy `files`
    // into the bundle, pass `env` to the agent, and run.
    anyhow::bail!(
        "preflight passed ({} env values and {} tokens resolved, bundle config rendered), but running bottles is not built yet (the Docker backend is a later step); nothing was created and the values were discarded",
        env.vars.len(),
        tokens.len()
    )
}

/// Asks y/N on the terminal. Without a terminal there is no one to ask: that is an error
/// pointing at `-y`.
fn confirm(host: &dyn HostEnv) -> anyhow::Result<bool> {
    if !host.is_tty() {
        anyhow::bail!(
            "stdin is not a terminal, so the plan cannot be confirmed; pass -y to start without asking"
        );
    }
    print!("Start this bottle? [y/N] ");
    std::io::stdout()
        .flush()
        .context("cannot write to stdout")?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
