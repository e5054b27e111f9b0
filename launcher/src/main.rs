use clap::Parser;

/// Run Claude Code agents in sandboxed bottles.
#[derive(Parser)]
#[command(name = "claude-bottle", version)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
