//! The `claude-bottle` launcher: reads manifests, plans a bottle, renders the bundle's config,
//! and (in a later step) runs the bottle on Docker.
//!
//! Layout, in reading order: [`cli`] holds the clap types; `commands` has one module per
//! subcommand; `manifest` finds and validates bottle/agent files (Markdown + YAML
//! frontmatter); `secrets` resolves env values and route tokens into redacted `Secret`s
//! through the injectable `HostEnv`; `facts` asks the host what the plan needs (which
//! variables are set, the container runtime); `plan` is the pure Manifest + facts -> Plan step
//! behind `start --dry-run`; `render` turns a plan into text, the bundle's config and secrets
//! file (the contract) and pipelock's YAML; `backend` is the one seam to the container engine
//! (bollard lives only in `backend/docker.rs`).

pub mod backend;
mod bottle;
pub mod cli;
mod commands;
pub mod complete;
mod dashboard;
mod facts;
mod hostfile;
mod manifest;
mod plan;
mod render;
mod secrets;
mod state;
mod supervise;
mod tty;

use std::path::PathBuf;

use anyhow::Context;

use crate::cli::{Cli, Command};
use crate::manifest::{Dirs, ManifestError};

/// Exit status for a manifest that is invalid or missing (clap uses 2 for usage errors).
pub const EXIT_MANIFEST: u8 = 3;
/// Exit status for any other failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for a command line clap accepts but a command cannot use (as clap's own).
pub const EXIT_USAGE: u8 = 2;

/// A command line that is wrong in a way clap cannot see (a blank required value, …); exits
/// with [`EXIT_USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs one command; returns the process exit status (`exec` and an attached `start` pass
/// the agent's through).
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Start(args) => {
            let dirs = dirs(args.cwd.clone())?;
            commands::start::run(&args, &dirs, &secrets::ProcessHost)
        }
        Command::List => commands::list::run(&dirs(None)?.root),
        Command::Exec(args) => commands::exec::run(&args),
        Command::Attach(args) => commands::attach::run(&args.id),
        Command::Stop(args) => commands::stop::run(&args.id, &dirs(None)?.root),
        Command::Resume(args) => commands::resume::run(&args, &dirs(None)?, &secrets::ProcessHost),
        Command::Cleanup(args) => {
            commands::cleanup::run(&dirs(None)?.root, args.yes, &secrets::ProcessHost)
        }
        Command::Info(args) => {
            let dirs = dirs(args.cwd.clone())?;
            commands::info::run(&args.agent, &dirs, &secrets::ProcessHost).map(|()| 0)
        }
        Command::Init => commands::init::run(&dirs(None)?.root).map(|()| 0),
        Command::Completions(args) => commands::completions::run(args.shell).map(|()| 0),
        Command::Dashboard(args) => commands::dashboard::run(&dirs(None)?.root, args.once),
        Command::Approve(args) => commands::approve::run(&dirs(None)?.root, &args.id, args.edit),
        Command::Reject(args) => {
            commands::reject::run(&dirs(None)?.root, &args.id, args.reason.as_deref())
        }
    }
}

/// The exit status for an error returned by [`run`].
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err
        .chain()
        .any(|e| e.downcast_ref::<ManifestError>().is_some())
    {
        EXIT_MANIFEST
    } else if err
        .chain()
        .any(|e| e.downcast_ref::<UsageError>().is_some())
    {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

/// How `main` prints an error returned by [`run`]: the whole chain, with control and
/// invisible formatting characters escaped (line breaks kept), because an error may quote what
/// an agent wrote (a proposal's host, a build log of its Dockerfile) and must not drive the
/// operator's terminal.
pub fn error_text(err: &anyhow::Error) -> String {
    manifest::values::escape_controls(&format!("{err:#}"), manifest::values::Layout::Block)
}

/// Manifest locations from `$HOME`, `$CLAUDE_BOTTLE_HOME` and the project directory.
pub(crate) fn dirs(cwd: Option<PathBuf>) -> anyhow::Result<Dirs> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set; claude-bottle keeps its manifests in $HOME/.claude-bottle")?;
    let root = match std::env::var_os("CLAUDE_BOTTLE_HOME").filter(|h| !h.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => home.join(".claude-bottle"),
    };
    let cwd = match cwd {
        Some(dir) => dir,
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let cwd = cwd
        .canonicalize()
        .with_context(|| format!("project directory {}", cwd.display()))?;
    Ok(Dirs { home, root, cwd })
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_are_printed_with_controls_escaped_and_lines_kept() {
        let err =
            anyhow::anyhow!("build log:\n\u{1b}]52;c;eA==\u{7}done\r").context("start failed");
        assert_eq!(
            super::error_text(&err),
            "start failed: build log:\n\\u{1b}]52;c;eA==\\u{7}done\\u{d}"
        );
    }
}
