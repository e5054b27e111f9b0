//! `claude-bottle completions <shell>`: a completion script on stdout.

use clap::CommandFactory;

use crate::cli::Cli;

pub(crate) fn run(shell: clap_complete::Shell) {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "claude-bottle",
        &mut std::io::stdout(),
    );
}
