use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The per-bottle sidecar: egress proxy, git gate, secret scanner, supervise MCP.
#[derive(Parser)]
#[command(name = "bottle-bundle", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start every role the config names.
    Run {
        /// The bundle config (JSON, written by the launcher).
        #[arg(long, default_value = bottle_contract::wire::BUNDLE_CONFIG_PATH)]
        config: PathBuf,
        /// The secrets file, handed to the proxy role only.
        #[arg(long, default_value = bottle_contract::wire::BUNDLE_SECRETS_PATH)]
        secrets: PathBuf,
    },
    /// Run shell commands as `run` runs the roles (reap, forward signals, restart).
    #[command(hide = true)]
    Init {
        /// A command run with `sh -c`; repeat for several.
        #[arg(long = "child", required = true)]
        children: Vec<String>,
        /// Milliseconds between SIGTERM and SIGKILL (default: the bundle's 10 s).
        #[arg(long)]
        stop_grace_ms: Option<u64>,
        /// Milliseconds before the first restart of a crashed child (default: 250).
        #[arg(long)]
        first_backoff_ms: Option<u64>,
    },
    /// Inside the bundle container: check that every role answers on its socket.
    #[command(hide = true)]
    Probe(bottle_bundle::probe::ProbeArgs),
    /// Inside the agent container: forward 127.0.0.1 ports to the bundle's Unix sockets.
    Relay(bottle_bundle::relay::RelayArgs),
    /// Scan a git history, a directory or stdin for secrets (exit 1 on leaks, 2 on error).
    Scan(bottle_bundle::scanner::cli::ScanArgs),
    /// Serve the git gate (`gate hook pre-receive` is git's hook).
    Gate(bottle_bundle::gate::GateArgs),
    /// The git gate's SSH transport to upstreams (git runs this; not for people).
    #[command(hide = true)]
    Ssh(bottle_bundle::gate::SshArgs),
    /// Serve the supervise MCP server (stuck-agent proposals to the operator).
    Mcp(bottle_bundle::mcp::McpArgs),
    /// Run the egress proxy alone.
    Proxy(bottle_bundle::proxy::ProxyArgs),
    /// Manage the per-bottle CA (`ca init` for standalone use).
    Ca(bottle_bundle::proxy::CaArgs),
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, secrets } => bottle_bundle::run::run(&config, &secrets),
        Command::Init {
            children,
            stop_grace_ms,
            first_backoff_ms,
        } => {
            let mut timings = bottle_bundle::run::Timings::default();
            if let Some(ms) = stop_grace_ms {
                timings.stop_grace = std::time::Duration::from_millis(ms);
            }
            if let Some(ms) = first_backoff_ms {
                timings.first_backoff = std::time::Duration::from_millis(ms);
            }
            bottle_bundle::run::run_commands(&children, timings)
        }
        Command::Scan(args) => return bottle_bundle::scanner::cli::run(&args),
        Command::Gate(args) => return bottle_bundle::gate::main(args),
        Command::Ssh(args) => return bottle_bundle::gate::ssh_main(args),
        Command::Relay(args) => bottle_bundle::relay::main(args),
        Command::Probe(args) => bottle_bundle::probe::main(args),
        Command::Mcp(args) => bottle_bundle::mcp::run_mcp(args),
        Command::Proxy(args) => bottle_bundle::proxy::run_proxy(args),
        Command::Ca(args) => bottle_bundle::proxy::run_ca(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bottle-bundle: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BOTTLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
