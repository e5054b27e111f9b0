//! The git gate: one bare mirror per configured upstream, served as `git://<gate>/<name>.git`.
//!
//! Fetches refresh the mirror from the upstream first and fail if that fails (never stale).
//! Pushes go through git's own `receive-pack`, whose pre-receive hook is this binary
//! (`bottle-bundle gate hook pre-receive`): it scans every new commit for secrets and forwards
//! a clean push to the upstream over SSH with the gate-held key and the pinned host key,
//! before the gate's own refs move.
//!
//! Layout: [`settings`] validates the contract's `GateConfig`; `server` is the git://
//! listener; `mirror` creates and refreshes the mirrors; `hook` decides a push, with `policy`
//! (deletes and force pushes, per remote); `oversize` adds the limit and its manifest key to
//! git's message for a push over the size limit; `forward` pushes upstream; `verify` asks the
//! upstream where the refs are after a forward that may have landed; `upstream` builds those
//! gits and reads their failures; `ssh` is their SSH transport (`bottle-bundle ssh`, russh with
//! the gate key and the pinned host key); `gitenv` is the environment of every git the gate runs.

mod forward;
mod gitenv;
mod hook;
mod mirror;
mod oversize;
mod policy;
mod server;
mod settings;
mod ssh;
mod upstream;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::gate::server::{Gate, GateListener};
use crate::gate::settings::GateSettings;

/// How long shutdown waits for in-flight connection drains.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// `bottle-bundle gate`: serve the gate, or (`gate hook pre-receive`) run as git's hook.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GateArgs {
    #[command(subcommand)]
    command: Option<GateCommand>,
    /// The bundle config (JSON); its `gate` section is served.
    #[arg(long, default_value = bottle_contract::wire::BUNDLE_CONFIG_PATH)]
    config: PathBuf,
}

#[derive(clap::Subcommand)]
enum GateCommand {
    /// Run as a git hook (git runs this; not for people).
    Hook {
        #[command(subcommand)]
        hook: HookName,
    },
}

#[derive(clap::Subcommand)]
enum HookName {
    /// The pre-receive hook: scan, then forward upstream; any failure rejects the push.
    PreReceive,
}

/// `bottle-bundle ssh`: git's SSH transport for the gate's upstream leg (git runs this; not
/// for people).
#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct SshArgs {
    /// What git passes: `[-o SendEnv=GIT_PROTOCOL] [-4|-6] [-p PORT] [user@]host command`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<String>,
}

/// Entry point of `bottle-bundle ssh`.
pub fn ssh_main(args: SshArgs) -> ExitCode {
    ssh::main(&args.args)
}

/// Entry point of `bottle-bundle gate`.
pub fn main(args: GateArgs) -> ExitCode {
    match args.command {
        Some(GateCommand::Hook {
            hook: HookName::PreReceive,
        }) => hook::main(),
        None => match serve_from_config(&args.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bottle-bundle gate: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve_from_config(config_path: &Path) -> anyhow::Result<()> {
    let config = crate::config::load_config(config_path)?;
    let settings = GateSettings::from_contract(&config.gate)
        .with_context(|| format!("{}", config_path.display()))?;
    check_inputs(&settings).with_context(|| format!("{}", config_path.display()))?;
    let config_path = std::path::absolute(config_path)
        .with_context(|| format!("cannot resolve {}", config_path.display()))?;
    let program = std::env::current_exe().context("cannot find the bundle binary")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        // The bundle's supervisor forwards SIGHUP to every role (the proxy reloads on it); the
        // gate has nothing to reload, but it must not die of it either.
        let cancel = CancellationToken::new();
        let mut hangup = crate::role::watch_signals(cancel.clone())?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: the gate has nothing to reload");
            }
        });
        let bound = crate::role::bind(&config.gate.listen, "gate", "gate").await?;
        let listeners = bound
            .tcp
            .map(GateListener::Tcp)
            .into_iter()
            .chain(bound.unix.map(GateListener::Unix))
            .collect();
        run(settings, config_path, &program, listeners, cancel).await
    });
    // Connection drains may still be running on blocking threads: do not wait for them long.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result
}

/// Prepares the mirrors and serves `listeners` until `cancel` fires. `program` is the bundle
/// binary the pre-receive hook runs.
async fn run(
    settings: GateSettings,
    config_path: PathBuf,
    program: &Path,
    listeners: Vec<GateListener>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    mirror::prepare(&settings, program)?;
    for remote in &settings.remotes {
        if remote.pin.is_none() {
            tracing::warn!(
                remote = %remote.name,
                "no known_host_key pinned: fetches and pushes for this remote will be refused"
            );
        }
    }
    let gate = Arc::new(Gate {
        locks: mirror::RepoLocks::new(&settings),
        settings,
        transport: upstream::Transport {
            program: program.to_owned(),
            config_path,
        },
    });
    server::serve(gate, listeners, cancel).await;
    Ok(())
}

/// Fails early, with the config key, on inputs the hook would otherwise refuse every push for.
/// The key file is only checked for readability; its path is not repeated in the message.
fn check_inputs(settings: &GateSettings) -> anyhow::Result<()> {
    if let Some(rules) = &settings.scanner_rules {
        crate::scanner::Scanner::from_file(rules).context("gate.scanner_rules")?;
    }
    for remote in &settings.remotes {
        if std::fs::File::open(&remote.identity_file).is_err() {
            anyhow::bail!(
                "gate.remotes[{}].identity_file: the key file cannot be read; check the bundle's key mount",
                remote.name
            );
        }
    }
    Ok(())
}
