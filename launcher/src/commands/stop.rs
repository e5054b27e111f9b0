//! `claude-bottle stop <id>`: remove a bottle's containers, network, volume and state.

use std::path::Path;

use crate::backend::Backend;
use crate::backend::docker::DockerBackend;
use crate::state;

pub(crate) fn run(identity: &str, root: &Path) -> anyhow::Result<u8> {
    super::block_on(async {
        let backend = DockerBackend::connect().await?;
        let objects = backend.list_objects(Some(identity)).await?;
        if objects.is_empty() && state::load(root, identity).is_none() {
            anyhow::bail!("no bottle `{identity}`; `claude-bottle list` shows the running ones");
        }
        super::start::remove_bottle(&backend, root, identity).await?;
        println!("bottle {identity} removed ({} objects)", objects.len());
        Ok(0)
    })
}
