//! `claude-bottle completions <shell>`: the shell's registration script on stdout. The script
//! asks the binary for candidates as you type (see [`crate::complete`]), so agent names,
//! bottle identities and proposal ids are completed too.

use std::io::Write as _;

pub(crate) fn run(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let script = crate::complete::registration(shell)?;
    std::io::stdout().write_all(&script)?;
    Ok(())
}
