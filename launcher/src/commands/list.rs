//! `claude-bottle list`: the bottles Docker knows about (by label), with their agents and the
//! health of each part a running bottle needs: every bundle role asked on its own socket
//! (`bottle-bundle probe`), and the relay asked the way the agent uses it. A bottle `cleanup`
//! would remove (its launcher is gone) shows as `orphaned`, with the reason.

use std::path::Path;

use crate::backend::docker::DockerBackend;
use crate::backend::{Backend, Object, ObjectKind};
use crate::state;

pub(crate) fn run(root: &Path) -> anyhow::Result<u8> {
    super::block_on(async {
        let backend = DockerBackend::connect().await?;
        let objects = backend.list_objects(None).await?;
        let groups = Object::by_identity(&in_home(objects, root));
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
            "{:<24} {:<16} {:<10} {:<8} HEALTH",
            "IDENTITY", "AGENT", "AGENT CTR", "OBJECTS"
        );
        for (identity, objects) in &groups {
            let agent = state::load(root, identity).map_or_else(|| "?".to_owned(), |m| m.agent);
            // A bottle its launcher left behind (killed before it could tear down) is not
            // "running" for anyone: say so, and what removes it.
            let (status, health) = match super::cleanup::orphan_reason(root, identity, objects) {
                Some(why) => (
                    "orphaned",
                    format!("{why}; `claude-bottle cleanup` removes it"),
                ),
                None => match Object::agent_status(objects) {
                    "running" => ("running", health(&backend, objects).await),
                    other => (other, "-".to_owned()),
                },
            };
            println!(
                "{identity:<24} {agent:<16} {status:<10} {:<8} {health}",
                objects.len()
            );
        }
        for identity in &suspended {
            let agent = state::load(root, identity).map_or_else(|| "?".to_owned(), |m| m.agent);
            println!(
                "{identity:<24} {agent:<16} {:<10} {:<8} - (claude-bottle resume {identity})",
                "suspended", 0
            );
        }
        Ok(0)
    })
}

/// `ok`, or what is wrong with a running bottle: the bundle container stopped, a role not
/// answering on its socket, or the relay not answering on the agent's loopback.
pub(crate) async fn health<B: Backend>(backend: &B, objects: &[Object]) -> String {
    let container = |role: &str| {
        objects
            .iter()
            .find(|o| o.kind == ObjectKind::Container && o.role == role)
    };
    let Some(bundle) = container("bundle").filter(|b| b.running) else {
        return "bundle stopped".to_owned();
    };
    let mut problems = Vec::new();
    match backend
        .exec(&bundle.id, &crate::bottle::bundle_probe(&[]))
        .await
    {
        Ok(out) if out.exit_code == 0 => {}
        Ok(out) => problems.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.ends_with(" ok"))
                .filter_map(|l| l.split_once(':').map(|(role, _)| role.to_owned())),
        ),
        Err(e) => problems.push(format!("bundle not asked ({e})")),
    }
    if let Some(agent) = container("agent") {
        let through_relay = crate::bottle::relay_probe();
        match backend.exec(&agent.id, &through_relay).await {
            Ok(out) if out.exit_code == 0 => {}
            _ => problems.push("relay down".to_owned()),
        }
    }
    match problems.is_empty() {
        true => "ok".to_owned(),
        false => problems.join(", "),
    }
}

/// The objects made from manifest home `root` (another home's bottles are its own business).
pub(crate) fn in_home(objects: Vec<Object>, root: &Path) -> Vec<Object> {
    let root = root.display().to_string();
    objects.into_iter().filter(|o| o.home == root).collect()
}
