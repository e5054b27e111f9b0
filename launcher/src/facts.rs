//! Host facts the plan needs: which variables are set and which container runtime Docker uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backend::docker::DockerBackend;
use crate::bottle::claude_bin::{self, ClaudeSource};
use crate::hostfile::{self, NamedFile};
use crate::manifest::Loaded;
use crate::plan::{self, HostFacts, IDENTITY_SUFFIX_LEN, Runtime};
use crate::secrets::HostEnv;

/// How long asking Docker for its runtimes may take before the runtime is reported unknown.
const DOCKER_INFO_TIMEOUT: Duration = Duration::from_secs(5);

/// Gathers the facts for `loaded`. Reads variable *presence* only, never values.
pub(crate) fn gather(loaded: &Loaded, host: &dyn HostEnv) -> anyhow::Result<HostFacts> {
    let mut random = [0u8; IDENTITY_SUFFIX_LEN];
    getrandom::fill(&mut random)
        .map_err(|e| anyhow::anyhow!("no randomness for the bottle identity: {e}"))?;
    let claude =
        claude_bin::locate(claude_bin::needed(&loaded.agent.command)).map_err(|e| format!("{e:#}"));
    let pipelock = crate::bottle::pipelock_bin::locate().map_err(|e| e.to_string());
    let (runtime, engine_cpus, bridge_gateways) = engine();
    let mut facts = facts_from(
        loaded,
        host,
        runtime,
        plan::identity_suffix(random),
        &|p: &Path| p.exists(),
        &|f: &NamedFile| f.read().err().map(|e| e.to_string()),
        claude,
    );
    facts.pipelock = pipelock;
    facts.engine_cpus = engine_cpus;
    facts.bridge_gateways = bridge_gateways;
    Ok(facts)
}

/// The facts from already-gathered parts; `exists` answers for host paths, `unusable` says
/// why an existing CA or key file the manifest names cannot be used.
fn facts_from(
    loaded: &Loaded,
    host: &dyn HostEnv,
    runtime: Runtime,
    identity_suffix: String,
    exists: &dyn Fn(&Path) -> bool,
    unusable: &dyn Fn(&NamedFile) -> Option<String>,
    claude: Result<ClaudeSource, String>,
) -> HostFacts {
    // Empty counts as unset, as it does when values are resolved at start.
    let vars_set = plan::vars_of_interest(loaded)
        .into_iter()
        .filter(|v| host.var(v).is_some_and(|value| !value.is_empty()))
        .collect();
    let home = PathBuf::from(host.var("HOME").unwrap_or_default());
    let missing_paths = plan::host_paths(loaded, &home)
        .into_iter()
        .filter(|p| !exists(Path::new(p)))
        .collect();
    // Checked here as well as at start, so a dry run shows a bad file too.
    let unusable_files = hostfile::named_files(loaded, &home)
        .iter()
        .filter(|f| exists(Path::new(&f.path)))
        .filter_map(unusable)
        .collect();
    HostFacts {
        vars_set,
        runtime,
        identity_suffix,
        home,
        missing_paths,
        unusable_files,
        claude,
        pipelock: Ok(None),
        engine_cpus: None,
        bridge_gateways: Vec::new(),
    }
}

/// Asks Docker (through the backend, bounded by [`DOCKER_INFO_TIMEOUT`]) whether gVisor
/// (`runsc`) is registered, how many CPUs it has, and its bridges' gateways.
fn engine() -> (Runtime, Option<u32>, Vec<std::net::IpAddr>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return (
            Runtime::Unknown("cannot start an async runtime".into()),
            None,
            Vec::new(),
        );
    };
    let asked = rt.block_on(async {
        tokio::time::timeout(DOCKER_INFO_TIMEOUT, async {
            let backend = DockerBackend::connect().await?;
            backend.engine_info().await
        })
        .await
    });
    match asked {
        Ok(Ok(info)) => (
            runtime_from_names(&info.runtimes),
            info.cpus,
            info.bridge_gateways,
        ),
        Ok(Err(e)) => (
            Runtime::Unknown(format!("the Docker engine is not reachable: {e}")),
            None,
            Vec::new(),
        ),
        Err(_) => (
            Runtime::Unknown("the Docker engine did not answer".into()),
            None,
            Vec::new(),
        ),
    }
}

/// The registered runtime names -> [`Runtime`].
fn runtime_from_names(names: &[String]) -> Runtime {
    if names.iter().any(|n| n == "runsc") {
        Runtime::Gvisor
    } else {
        Runtime::Runc
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::manifest::validate::{parse_agent, parse_bottle};
    use crate::secrets::fake::FakeHost;

    #[test]
    fn facts_read_presence_and_missing_paths() {
        let loaded = Loaded {
            agent: parse_agent(
                Path::new("/a.md"),
                "a",
                "---\nbottle: b\nskills: [have, lack]\n---\n",
            )
            .unwrap(),
            bottle: parse_bottle(
                Path::new("/b.md"),
                "b",
                "---\nenv:\n  E: \"${EMPTY}\"\n  F: \"${FULL}\"\ngit:\n  - {Name: r, Upstream: \"ssh://h/r.git\", IdentityFile: ~/.ssh/k}\n---\n",
            )
            .unwrap(),
            warnings: vec![],
        };
        let host = FakeHost::new(&[("HOME", "/home/u"), ("EMPTY", ""), ("FULL", "v")], false);
        let present = |p: &Path| p == Path::new("/home/u/.claude/skills/have");
        let facts = facts_from(
            &loaded,
            &host,
            Runtime::Runc,
            "abcde".into(),
            &present,
            &|f: &NamedFile| Some(format!("{} is bad", f.path)),
            Ok(ClaudeSource::Npm),
        );
        assert_eq!(facts.vars_set.iter().collect::<Vec<_>>(), ["FULL"]);
        assert_eq!(
            facts.missing_paths.iter().collect::<Vec<_>>(),
            ["/home/u/.claude/skills/lack", "/home/u/.ssh/k"]
        );
        // Only files that exist are checked (a missing one is reported as missing).
        assert!(
            facts.unusable_files.is_empty(),
            "{:?}",
            facts.unusable_files
        );
        let facts = facts_from(
            &loaded,
            &host,
            Runtime::Runc,
            "abcde".into(),
            &|_: &Path| true,
            &|f: &NamedFile| Some(format!("{} is bad", f.path)),
            Ok(ClaudeSource::Npm),
        );
        assert_eq!(facts.unusable_files, ["/home/u/.ssh/k is bad"]);
        assert_eq!(facts.home, Path::new("/home/u"));
    }

    #[test]
    fn runsc_is_detected_from_the_engines_runtimes() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            runtime_from_names(&names(&["io.containerd.runc.v2", "runc", "runsc"])),
            Runtime::Gvisor
        );
        assert_eq!(runtime_from_names(&names(&["runc"])), Runtime::Runc);
    }
}
