//! `bottle-bundle run`: load the config and keep one child process per role running.

use std::path::Path;

use anyhow::Context;

pub use crate::init::Timings;
use crate::init::{self, ChildSpec};

/// Loads and checks the config, then runs every configured role under the supervisor until a
/// stop signal. A config with no roles is refused: a bundle that serves nothing is a mistake.
pub fn run(config_path: &Path, secrets_path: &Path) -> anyhow::Result<()> {
    let config = crate::config::load_config(config_path)?;
    if config.roles.is_empty() && config.pipelock.is_none() {
        anyhow::bail!(
            "{}: `roles` is empty; list at least one of proxy, gate, mcp",
            config_path.display()
        );
    }
    let exe = std::env::current_exe().context("cannot find the bottle-bundle binary")?;
    let children = init::children_for(&config, &exe, config_path, secrets_path)?;
    tracing::info!(identity = %config.identity, roles = ?config.roles, "bundle starting");
    init::run_children(children, init::Timings::default())
}

/// `bottle-bundle init --child CMD…`: the same PID-1 loop over shell commands, for running
/// helpers by hand and for testing the loop itself.
pub fn run_commands(commands: &[String], timings: init::Timings) -> anyhow::Result<()> {
    if commands.is_empty() {
        anyhow::bail!("give at least one --child COMMAND");
    }
    let children = commands
        .iter()
        .enumerate()
        .map(|(i, cmd)| {
            ChildSpec::plain(&format!("child{i}"), "sh", vec!["-c".into(), cmd.clone()])
        })
        .collect();
    init::run_children(children, timings)
}
