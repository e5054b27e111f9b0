//! Stopping a bottle with its state kept, so `claude-bottle resume` can rebuild it: what an
//! approved `capability-block` does.

use std::path::Path;

use crate::backend::Backend;

/// Saves `dockerfile` as the bottle's agent Dockerfile and its work tree into
/// `<root>/state/<identity>/`, removes the bottle's Docker objects (not its state), and returns
/// the message for the agent and the operator (it names `claude-bottle resume <identity>`).
#[allow(dead_code)] // FIXME(supervise issue): called by the capability approval.
pub(crate) async fn suspend<B: Backend>(
    backend: &B,
    root: &Path,
    identity: &str,
    dockerfile: &str,
) -> anyhow::Result<String> {
    // FIXME(supervise issue): placeholder signature for the capability effect; the capability
    // helper replaces this body.
    let _ = (backend, root, identity, dockerfile);
    anyhow::bail!("suspending a bottle is not built yet")
}
