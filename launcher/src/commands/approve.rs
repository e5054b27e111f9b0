//! `claude-bottle approve ID [--edit]`: apply a pending proposal to its bottle, then record
//! the decision (see `supervise::decide` for the order).

use std::path::Path;

use crate::backend::docker::DockerBackend;
use crate::manifest::values::{Layout, escape_controls};
use crate::secrets::ProcessHost;
use crate::supervise::{decide, queue, request};

pub(crate) fn run(root: &Path, id: &str, edit: bool) -> anyhow::Result<u8> {
    // An unknown or decided id fails before anything else is asked of the host.
    let pending = queue::find(root, id)?;
    let edited = if edit {
        Some(request::edit_in_editor(&pending.proposal)?)
    } else {
        None
    };
    // The request is checked and the token read before the engine is contacted: a missing
    // variable changes nothing.
    let prepared = decide::prepare(&pending, edited, &ProcessHost)?;
    super::block_on(async {
        let backend = DockerBackend::connect().await?;
        let said = decide::apply(&backend, root, &prepared).await?;
        // It names the agent's host and may quote what the bottle answered.
        println!("{}", escape_controls(&said, Layout::Block));
        Ok(0)
    })
}
