//! `claude-bottle list`: the bottles Docker knows about (by label), with their agents.

use std::collections::BTreeMap;
use std::path::Path;

use crate::backend::docker::DockerBackend;
use crate::backend::{Backend, Object, ObjectKind};
use crate::state;

pub(crate) fn run(root: &Path) -> anyhow::Result<u8> {
    super::block_on(async {
        let backend = DockerBackend::connect().await?;
        let objects = backend.list_objects(None).await?;
        let groups = by_identity(&in_home(objects, root));
        // Suspended bottles have state but no Docker objects.
        let suspended: Vec<String> = state::identities(root)
            .into_iter()
            .filter(|id| !groups.contains_key(id) && state::is_suspended(root, id))
            .collect();
        if groups.is_empty() && suspended.is_empty() {
            println!("no bottles");
            return Ok(0);
        }
        println!(
            "{:<24} {:<16} {:<10} OBJECTS",
            "IDENTITY", "AGENT", "AGENT CTR"
        );
        for (identity, objects) in &groups {
            let agent = state::load(root, identity).map_or_else(|| "?".to_owned(), |m| m.agent);
            let status = agent_status(objects);
            println!("{identity:<24} {agent:<16} {status:<10} {}", objects.len());
        }
        for identity in &suspended {
            let agent = state::load(root, identity).map_or_else(|| "?".to_owned(), |m| m.agent);
            println!(
                "{identity:<24} {agent:<16} {:<10} 0  (claude-bottle resume {identity})",
                "suspended"
            );
        }
        Ok(0)
    })
}

/// The objects made from manifest home `root` (another home's bottles are its own business).
pub(crate) fn in_home(objects: Vec<Object>, root: &Path) -> Vec<Object> {
    let root = root.display().to_string();
    objects.into_iter().filter(|o| o.home == root).collect()
}

/// Objects grouped by their identity label.
pub(crate) fn by_identity(objects: &[Object]) -> BTreeMap<String, Vec<Object>> {
    let mut groups: BTreeMap<String, Vec<Object>> = BTreeMap::new();
    for o in objects {
        groups
            .entry(o.identity.clone())
            .or_default()
            .push(o.clone());
    }
    groups
}

/// A bottle's state as its agent container shows it: `running`, `stopped` or `missing`.
pub(crate) fn agent_status(objects: &[crate::backend::Object]) -> &'static str {
    match objects
        .iter()
        .find(|o| o.kind == ObjectKind::Container && o.role == "agent")
    {
        Some(o) if o.running => "running",
        Some(_) => "stopped",
        None => "missing",
    }
}
