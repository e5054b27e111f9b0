//! Dynamic shell completion: the shell asks the binary itself for candidates
//! (`COMPLETE=<shell> claude-bottle -- <words>`), so agent names, bottle identities and
//! proposal ids come from the manifest home as it is at that moment.
//!
//! Built on clap_complete's `CompleteEnv` (its `unstable-dynamic` feature), the way clap offers
//! completion that calls back into the program; a static script cannot know agent names.
//! `claude-bottle completions <shell>` prints the shell's registration script, which is what
//! `COMPLETE=<shell> claude-bottle` prints too.

use std::ffi::OsStr;

use clap::CommandFactory as _;
use clap_complete::engine::CompletionCandidate;
use clap_complete::env::Shells;

use crate::cli::Cli;

/// The environment variable the registration scripts set when they ask for candidates.
const VAR: &str = "COMPLETE";
const BIN: &str = "claude-bottle";

/// Answers a completion request and exits when the shell made one; returns otherwise. Call
/// before parsing the command line, before anything is written to stdout.
pub fn answer_if_asked() {
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(VAR)
        .bin(BIN)
        .completer(BIN)
        .complete();
}

/// The registration script for `shell` (`claude-bottle completions <shell>`).
pub(crate) fn registration(shell: clap_complete::Shell) -> std::io::Result<Vec<u8>> {
    let name = shell.to_string();
    let shells = Shells::builtins();
    let Some(completer) = shells.completer(&name) else {
        // A shell clap_complete knows statically but not dynamically: its static script.
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), BIN, &mut out);
        return Ok(out);
    };
    let mut out = Vec::new();
    completer.write_registration(VAR, BIN, BIN, BIN, &mut out)?;
    Ok(out)
}

/// Agent names `start` would find from the current directory.
pub(crate) fn agents(current: &OsStr) -> Vec<CompletionCandidate> {
    let Ok(dirs) = crate::dirs(None) else {
        return Vec::new();
    };
    matching(crate::manifest::agent_names(&dirs), current)
}

/// Bottle identities with state in the manifest home (running, detached or suspended).
pub(crate) fn bottles(current: &OsStr) -> Vec<CompletionCandidate> {
    let Ok(dirs) = crate::dirs(None) else {
        return Vec::new();
    };
    matching(crate::state::identities(&dirs.root), current)
}

/// Ids of the pending supervise proposals, oldest first.
pub(crate) fn proposals(current: &OsStr) -> Vec<CompletionCandidate> {
    let Ok(dirs) = crate::dirs(None) else {
        return Vec::new();
    };
    let ids = crate::supervise::queue::pending(&dirs.root)
        .pending
        .into_iter()
        .map(|p| p.proposal.id)
        .collect();
    matching(ids, current)
}

fn matching(values: Vec<String>, current: &OsStr) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    values
        .into_iter()
        .filter(|v| v.starts_with(prefix.as_ref()))
        .map(CompletionCandidate::new)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_values_with_the_typed_prefix_are_offered() {
        let offered: Vec<String> = matching(
            vec!["dev".into(), "deploy".into(), "review".into()],
            OsStr::new("de"),
        )
        .iter()
        .map(|c| c.get_value().to_string_lossy().into_owned())
        .collect();
        assert_eq!(offered, ["dev", "deploy"]);
    }

    #[test]
    fn every_builtin_shell_gets_a_script_that_calls_back_into_the_binary() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
            clap_complete::Shell::Elvish,
            clap_complete::Shell::PowerShell,
        ] {
            let script = String::from_utf8(registration(shell).unwrap()).unwrap();
            assert!(script.contains(VAR), "{shell}: {script}");
            assert!(script.contains(BIN), "{shell}: {script}");
        }
    }
}
