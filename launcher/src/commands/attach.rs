//! `claude-bottle attach <id>`: connect the terminal to a detached bottle's agent. Leaving
//! (the agent exits) does not remove the bottle: `stop` does.

use crate::backend::docker::DockerBackend;
use crate::backend::{Attached, Backend};

pub(crate) fn run(identity: &str) -> anyhow::Result<u8> {
    super::block_on(async {
        let backend = DockerBackend::connect().await?;
        let agent = super::exec::agent_container(&backend, identity).await?;
        eprintln!("attached to {identity}");
        let _raw = crate::tty::RawMode::enable()?;
        match backend.attach(&agent, crate::tty::attach_io()).await? {
            Attached::Exited(code) => Ok(super::exec::exit_code(code)),
            Attached::Detached => {
                anyhow::bail!("the terminal closed but the container is still running")
            }
        }
    })
}
