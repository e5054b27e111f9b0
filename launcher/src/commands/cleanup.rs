//! `claude-bottle cleanup`: find what a killed launcher left (containers, networks, volumes,
//! state), show one plan, ask once, remove it.
//!
//! Only this manifest home's bottles are considered. A bottle whose launcher process is alive
//! is never touched (it may be starting, or attached). Otherwise an orphan is a bottle with no
//! state, whose agent is not running, or that was started attached by a launcher that is
//! gone. Detached bottles with a running agent are left alone (`stop` removes those).
//! A suspended bottle's state (its saved Dockerfile and work tree) is never removed here:
//! only `resume` and `stop` end a suspended bottle.

use std::path::Path;

use crate::backend::docker::DockerBackend;
use crate::backend::{Backend, Object, ObjectKind, remove_all};
use crate::secrets::HostEnv;
use crate::state;

pub(crate) fn run(root: &Path, yes: bool, host: &dyn HostEnv) -> anyhow::Result<u8> {
    super::block_on(async {
        let backend = DockerBackend::connect().await?;
        let objects = super::list::in_home(backend.list_objects(None).await?, root);
        let groups = super::list::by_identity(&objects);
        let mut doomed: Vec<Object> = Vec::new();
        let mut doomed_ids: Vec<(String, &'static str)> = Vec::new();
        for (identity, objects) in &groups {
            if let Some(why) = orphan_reason(root, identity, objects) {
                doomed.extend(objects.iter().cloned());
                doomed_ids.push((identity.clone(), why));
            }
        }
        // State left without any object (a suspended bottle has none, on purpose).
        let stale: Vec<String> = state::identities(root)
            .into_iter()
            .filter(|id| !groups.contains_key(id) && !state::is_suspended(root, id))
            .collect();
        if doomed.is_empty() && stale.is_empty() {
            println!("nothing to clean up");
            return Ok(0);
        }
        println!("cleanup plan:");
        for (identity, why) in &doomed_ids {
            println!("  bottle {identity} ({why}):");
            for o in doomed.iter().filter(|o| &o.identity == identity) {
                println!("    remove {} {}", o.kind, o.name);
            }
        }
        for identity in &stale {
            println!("  remove state of {identity} (no containers left)");
        }
        if !yes && !super::start::confirm_with(host, "Remove all of this?")? {
            println!("nothing removed");
            return Ok(0);
        }
        let errors = remove_all(&backend, &doomed).await;
        for (identity, _) in &doomed_ids {
            if !state::is_suspended(root, identity) {
                state::remove(root, identity)?;
            }
        }
        for identity in &stale {
            state::remove(root, identity)?;
        }
        if !errors.is_empty() {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::bail!("some objects could not be removed: {}", list.join("; "));
        }
        println!(
            "removed {} objects of {} bottles",
            doomed.len(),
            doomed_ids.len()
        );
        Ok(0)
    })
}

fn orphan_reason(root: &Path, identity: &str, objects: &[Object]) -> Option<&'static str> {
    let Some(meta) = state::load(root, identity) else {
        return Some("no state: its launcher is gone");
    };
    // A launcher that is still alive owns its bottle: it may be starting it (the agent not
    // running yet) or attached to it, and tears it down itself.
    if process_exists(meta.launcher_pid) {
        return None;
    }
    let agent_running = objects
        .iter()
        .any(|o| o.kind == ObjectKind::Container && o.role == "agent" && o.running);
    if !agent_running {
        return Some("its agent is not running");
    }
    if !meta.detached {
        return Some("started attached and its launcher is gone");
    }
    None
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
