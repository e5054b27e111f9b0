//! The command line: clap derive types only. Dispatch lives in [`crate::run`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clap_complete::ArgValueCompleter;

/// Run Claude Code agents in sandboxed bottles.
///
/// Manifests live in ~/.claude-bottle/ (override with CLAUDE_BOTTLE_HOME): bottles/<name>.md
/// say what an agent is granted (env, git remotes, egress routes, supervise), agents/<name>.md
/// name their bottle and hold the system prompt. Agents may also come from the project's
/// .claude-bottle/agents/; bottles never do.
#[derive(Debug, Parser)]
#[command(name = "claude-bottle", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a bottle for an agent: show the plan, build images, run it, attach (or -d).
    Start(StartArgs),
    /// List the bottles Docker knows about.
    List,
    /// Run a command in a bottle's agent container (as the agent, with the bottle's env).
    Exec(ExecArgs),
    /// Connect the terminal to a running bottle's agent.
    Attach(IdArgs),
    /// Remove a bottle: its containers, network, volume and state.
    Stop(IdArgs),
    /// Continue a bottle suspended by an approved capability request: rebuild its agent image
    /// from the approved Dockerfile and restore its work tree, under the same identity.
    Resume(ResumeArgs),
    /// Find what a killed launcher left behind and remove it (one plan, one question).
    Cleanup(CleanupArgs),
    /// Show an agent, its bottle and what the bottle grants.
    Info(InfoArgs),
    /// Write an example bottle and agent into the manifest home, never overwriting.
    Init,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// The operator's view of supervise: pending proposals and running bottles (a TUI).
    Dashboard(DashboardArgs),
    /// Approve a pending supervise proposal and apply it to its bottle.
    Approve(ApproveArgs),
    /// Reject a pending supervise proposal; the agent is told the reason.
    Reject(RejectArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The agent: ~/.claude-bottle/agents/<AGENT>.md or ./.claude-bottle/agents/<AGENT>.md.
    #[arg(add = ArgValueCompleter::new(crate::complete::agents))]
    pub agent: String,
    /// Print the preflight plan and exit; create nothing and ask for no secret.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print the plan as JSON.
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    /// Do not ask for confirmation before starting.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Copy this work tree into the bottle's ~/work and search its .claude-bottle/agents/.
    /// Without --cwd nothing is copied (project agents are still searched in the current
    /// directory).
    #[arg(long, value_name = "PATH")]
    pub cwd: Option<PathBuf>,
    /// Leave the bottle running in the background.
    #[arg(short = 'd', long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The suspended bottle's identity (`<agent>-<5 chars>`).
    #[arg(add = ArgValueCompleter::new(crate::complete::bottles))]
    pub id: String,
    /// Do not ask for confirmation before resuming.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Leave the bottle running in the background.
    #[arg(short = 'd', long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The bottle identity (`<agent>-<5 chars>`, as `list` shows it).
    #[arg(add = ArgValueCompleter::new(crate::complete::bottles))]
    pub id: String,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open and connected to the command (default when stdin and stdout are
    /// terminals).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the command a terminal: raw mode, resizes, Ctrl-P Ctrl-Q detaches (default when
    /// stdin and stdout are terminals).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The bottle identity.
    #[arg(add = ArgValueCompleter::new(crate::complete::bottles))]
    pub id: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Remove without asking.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The agent to describe.
    #[arg(add = ArgValueCompleter::new(crate::complete::agents))]
    pub agent: String,
    /// The project directory whose .claude-bottle/agents/ are searched (default: current).
    #[arg(long, value_name = "PATH")]
    pub cwd: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Print the pending proposals (oldest first) and exit, for scripts.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The proposal id (as `dashboard --once` shows it).
    #[arg(add = ArgValueCompleter::new(crate::complete::proposals))]
    pub id: String,
    /// Edit the request in $EDITOR (JSON) before approving it.
    #[arg(long)]
    pub edit: bool,
}

#[derive(Debug, Args)]
pub struct RejectArgs {
    /// The proposal id (as `dashboard --once` shows it).
    #[arg(add = ArgValueCompleter::new(crate::complete::proposals))]
    pub id: String,
    /// Why, in words the agent can act on (required).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}
