//! `claude-bottle attach <id>`: connect the terminal to a detached bottle's agent. Leaving
//! (the agent exits, or Ctrl-P Ctrl-Q detaches) does not remove the bottle: `stop` does.

use crate::backend::docker::DockerBackend;
use crate::backend::{Attached, Backend};

pub(crate) fn run(identity: &str) -> anyhow::Result<u8> {
    super::block_on(async {
        let backend = DockerBackend::connect().await?;
        let agent = super::exec::agent_container(&backend, identity).await?;
        eprintln!(
            "attached to {identity} ({} detaches)",
            crate::tty::DETACH_KEYS
        );
        let ended = {
            let _raw = crate::tty::RawMode::enable()?;
            backend.attach(&agent, crate::tty::attach_io()).await?
        };
        Ok(match ended {
            Attached::Exited(code) => super::exec::exit_code(code),
            Attached::Detached => {
                eprintln!("\r\n{}", detached_hint(identity));
                0
            }
        })
    })
}

/// What `attach` and `start` print when the user detached: the bottle keeps running.
pub(crate) fn detached_hint(identity: &str) -> String {
    format!(
        "detached; bottle {identity} is still running\n  claude-bottle attach {identity}      connect to the agent again\n  claude-bottle stop {identity}        remove it"
    )
}
