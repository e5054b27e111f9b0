//! `claude-bottle cleanup`: find what a killed launcher left (containers, networks, volumes,
//! state), show one plan, ask once, remove it.
//!
//! Only this manifest home's bottles are considered. A bottle whose launcher process is alive
//! is never touched (it may be starting, or attached). Otherwise an orphan is a bottle with no
//! state, whose start never finished (the launcher died during provisioning, so the agent
//! waits for its ready file forever), whose agent is not running, or that was started
//! attached by a launcher that is gone. Detached bottles that finished starting and whose
//! agent runs are left alone (`stop` removes those).
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
        let groups = crate::backend::Object::by_identity(&objects);
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
        crate::bottle::remove_egress_network_if_unused(&backend, &root.display().to_string()).await;
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
            "{}",
            removed_summary(doomed.len(), doomed_ids.len(), stale.len())
        );
        Ok(0)
    })
}

/// What `cleanup` says it did: `removed 4 objects of 1 bottle`, and the stale states.
fn removed_summary(objects: usize, bottles: usize, stale: usize) -> String {
    let mut said = format!(
        "removed {} of {}",
        super::count(objects, "object"),
        super::count(bottles, "bottle")
    );
    if stale > 0 {
        said.push_str(&format!(" and {}", super::count(stale, "stale state")));
    }
    said
}

/// Why `cleanup` would remove this bottle, or `None` (also what `list` marks as orphaned).
pub(crate) fn orphan_reason(
    root: &Path,
    identity: &str,
    objects: &[Object],
) -> Option<&'static str> {
    let meta = state::load(root, identity);
    let launcher_alive = meta
        .as_ref()
        .is_some_and(|m| process_exists(m.launcher_pid));
    let agent_running = objects
        .iter()
        .any(|o| o.kind == ObjectKind::Container && o.role == "agent" && o.running);
    reason(meta.as_ref(), launcher_alive, agent_running)
}

/// Why a bottle is an orphan, or `None` when it must be left alone. Pure, for the tests.
fn reason(
    meta: Option<&state::Metadata>,
    launcher_alive: bool,
    agent_running: bool,
) -> Option<&'static str> {
    let Some(meta) = meta else {
        return Some("no state: its launcher is gone");
    };
    // A launcher that is still alive owns its bottle: it may be starting it (the agent not
    // running yet) or attached to it, and tears it down itself.
    if launcher_alive {
        return None;
    }
    // Killed while starting: the agent may run, but its command waits for a ready file that
    // no one will create, and nobody was told the bottle runs.
    if !meta.ready {
        return Some("start did not finish");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(detached: bool, ready: bool, suspended: bool) -> state::Metadata {
        state::Metadata {
            detached,
            ready,
            suspended,
            ..state::sample()
        }
    }

    #[test]
    fn the_summary_counts_in_the_singular_and_the_plural() {
        assert_eq!(removed_summary(4, 1, 0), "removed 4 objects of 1 bottle");
        assert_eq!(removed_summary(1, 2, 0), "removed 1 object of 2 bottles");
        assert_eq!(
            removed_summary(0, 0, 1),
            "removed 0 objects of 0 bottles and 1 stale state"
        );
    }

    #[test]
    fn a_start_that_never_finished_is_an_orphan_once_its_launcher_is_gone() {
        let half = meta(true, false, false);
        // The agent container runs (waiting for the ready file) but the launcher is gone.
        assert_eq!(
            reason(Some(&half), false, true),
            Some("start did not finish")
        );
        assert_eq!(
            reason(Some(&half), false, false),
            Some("start did not finish")
        );
        // While the launcher lives it may still be provisioning: never touched.
        assert_eq!(reason(Some(&half), true, true), None);
        assert_eq!(reason(Some(&half), true, false), None);
        // A resume killed while starting: its objects go (the caller keeps suspended state).
        let resuming = meta(true, false, true);
        assert_eq!(
            reason(Some(&resuming), false, true),
            Some("start did not finish")
        );
    }

    #[test]
    fn the_earlier_rules_hold() {
        assert_eq!(
            reason(None, false, true),
            Some("no state: its launcher is gone")
        );
        let detached = meta(true, true, false);
        assert_eq!(
            reason(Some(&detached), false, true),
            None,
            "a running detached bottle"
        );
        assert_eq!(
            reason(Some(&detached), false, false),
            Some("its agent is not running")
        );
        let attached = meta(false, true, false);
        assert_eq!(
            reason(Some(&attached), false, true),
            Some("started attached and its launcher is gone")
        );
        assert_eq!(reason(Some(&attached), true, true), None);
    }
}
