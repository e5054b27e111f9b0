//! `claude-bottle`: parse the command line, start logging, dispatch. Logic lives in the library.

use std::process::ExitCode;

use clap::Parser;
use claude_bottle::cli::Cli;

fn main() -> ExitCode {
    // A shell asking for completions (COMPLETE=<shell>) is answered here, before anything else.
    claude_bottle::complete::answer_if_asked();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLAUDE_BOTTLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match claude_bottle::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {}", claude_bottle::error_text(&err));
            ExitCode::from(claude_bottle::exit_code(&err))
        }
    }
}
