//! Stopping a bottle with its state kept, so `claude-bottle resume` can rebuild it: what an
//! approved `capability-block` does.
//!
//! Order matters: the Dockerfile and the work tree are saved and the metadata marked suspended
//! *before* any container is removed. An attached launcher sees its agent end when the
//! containers go, reads the metadata, and then keeps the state instead of deleting it.

use std::path::Path;

use anyhow::Context;

use crate::backend::Backend;
use crate::bottle::{object_name, provision, teardown};
use crate::state;

/// Saves `dockerfile` as the bottle's agent Dockerfile and its work tree into
/// `<root>/state/<identity>/`, removes the bottle's Docker objects (not its state, not its
/// queue), and returns the message for the agent and the operator (it names
/// `claude-bottle resume <identity>`).
pub(crate) async fn suspend<B: Backend>(
    backend: &B,
    root: &Path,
    identity: &str,
    dockerfile: &str,
) -> anyhow::Result<String> {
    let mut meta = state::load(root, identity).with_context(|| {
        format!(
            "bottle {identity} has no state in {}; `claude-bottle list` shows this manifest home's bottles",
            state::dir(root, identity).display()
        )
    })?;
    anyhow::ensure!(
        !meta.suspended,
        "bottle {identity} is already suspended; `claude-bottle resume {identity}` continues it"
    );
    let path = state::write_file(root, identity, state::DOCKERFILE, dockerfile.as_bytes())?;
    tracing::info!(identity, path = %path.display(), "saved the approved agent Dockerfile");

    let agent = object_name(identity, "agent");
    let work = backend
        .copy_out(&agent, provision::AGENT_WORKDIR)
        .await
        .with_context(|| {
            format!(
                "cannot save the work tree of bottle {identity} ({}); the bottle is left as it was",
                provision::AGENT_WORKDIR
            )
        })?;
    let work_path = state::write_file(root, identity, state::WORK_TAR, &work)?;

    meta.suspended = true;
    state::save(root, &meta)?;

    let left = teardown(backend, identity).await?;
    if !left.is_empty() {
        let list: Vec<String> = left.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "bottle {identity} is suspended (state kept) but some of its objects could not be removed: {}; run `claude-bottle cleanup`",
            list.join("; ")
        );
    }
    Ok(format!(
        "bottle {identity} is suspended: the approved Dockerfile and its work tree ({:.1} MB) are saved in {}. \
         Run `claude-bottle resume {identity}` to rebuild the agent image from that Dockerfile and continue with the same work tree.",
        work.len() as f64 / 1e6,
        work_path.parent().unwrap_or(root).display()
    ))
}
