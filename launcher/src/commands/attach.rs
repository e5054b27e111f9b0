//! `claude-bottle attach <id>`: connect the terminal to a detached bottle's agent. Leaving
//! (the agent exits) does not remove the bottle: `stop` does.

use crate::backend::Backend;
use crate::backend::docker::DockerBackend;

pub(crate) fn run(identity: &str) -> anyhow::Result<u8> {
    super::block_on(async {
        let backend = DockerBackend::connect().await?;
        let agent = super::exec::agent_container(&backend, identity).await?;
        eprintln!("attached to {identity}");
        let _raw = crate::tty::RawMode::enable()?;
        let code = backend.attach(&agent, crate::tty::attach_io()).await?;
        Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
    })
}
