//! Running a bottle: create its network, socket volume, bundle and agent, provision them, and
//! tear it all down again.
//!
//! Order matters for the security model: the bundle gets its config, secrets and CA key before
//! it starts; the agent starts with no network at all and its command waits for the ready file,
//! which the launcher creates only after the CA is trusted and the relay (another uid) answers.
//! Every created object goes into a [`Ledger`]: a failed step removes them all.
//!
//! With supervise, the bundle (and only the bundle) gets the bottle's host queue as bind
//! mounts: proposals read-write, decisions read-only. The agent never gets a bind mount.

pub(crate) mod ca;
pub(crate) mod claude_bin;
pub(crate) mod images;
pub(crate) mod pipelock_bin;
pub(crate) mod provision;
pub(crate) mod suspend;
pub(crate) mod timing;
pub(crate) mod worktree;

use std::time::Duration;

// tokio's clock, not std's: tests run these waits with paused time, so a timeout costs none.
use tokio::time::Instant;

use anyhow::Context;

use bottle_contract::wire;

use crate::backend::{
    Backend, BackendError, BindMount, ContainerSpec, ContextFile, ExecSpec, Labels, Ledger,
    Network, ObjectKind, ResourceLimits, VolumeMount, remove_all,
};

/// How long the bundle may take to answer through the relay.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything needed to create one bottle.
pub(crate) struct Launch {
    pub(crate) identity: String,
    /// The manifest home, labelled on every object.
    pub(crate) home: String,
    pub(crate) agent_image: String,
    pub(crate) bundle_image: String,
    pub(crate) bundle_files: Vec<ContextFile>,
    /// The supervise queue (see [`provision::bundle_binds`]); empty without supervise.
    pub(crate) bundle_binds: Vec<BindMount>,
    pub(crate) agent_files: Vec<ContextFile>,
    /// A resumed bottle's saved work tree (a tar of [`provision::AGENT_WORKDIR`]), unpacked
    /// before the agent's command is released.
    pub(crate) work_tar: Option<Vec<u8>>,
    pub(crate) agent_cmd: Vec<String>,
    /// The OCI runtime for the agent (`runsc`), or Docker's default.
    pub(crate) runtime: Option<String>,
    /// Give the agent a tty (interactive start).
    pub(crate) tty: bool,
    /// The agent's caps (the bottle's `limits` over the defaults).
    pub(crate) agent_limits: ResourceLimits,
    /// The bundle's caps (fixed).
    pub(crate) bundle_limits: ResourceLimits,
}

/// The started bottle.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    /// The agent container's id.
    pub(crate) agent: String,
}

/// Docker object names of bottle `identity`.
pub(crate) fn object_name(identity: &str, role: &str) -> String {
    format!("claude-bottle-{identity}-{role}")
}

/// The egress network every bundle of manifest home `home` is on (the agents are on none):
/// one bridge per home, so bottles do not use up Docker's address pools one network each,
/// with traffic between its containers dropped, so no bundle reaches another.
pub(crate) fn egress_network(home: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(home.as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("claude-bottle-egress-{hex}")
}

/// Held (an exclusive `flock` on `<home>/.egress-network.lock`) from making sure the home's
/// egress network exists until a bundle has started on it, and around removing it. Two
/// reasons: Docker does not keep network names unique, so two launchers creating it at once
/// would make two; and Docker counts only started containers as a network's users, so a
/// `stop` could otherwise remove it between another launcher's check and its bundle's
/// start. Launchers are separate processes, so a blocking lock is fine. A home directory
/// that does not exist (the unit tests' in-memory engine) takes no lock.
/// (`nix`'s `Flock`: `File::lock` is newer than the workspace's rust-version.)
struct NetworkLock(#[allow(dead_code)] Option<nix::fcntl::Flock<std::fs::File>>);

fn lock_network(home: &str) -> anyhow::Result<NetworkLock> {
    let dir = std::path::Path::new(home);
    if !dir.is_dir() {
        return Ok(NetworkLock(None));
    }
    let path = dir.join(".egress-network.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the egress network lock {}", path.display()))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(NetworkLock(Some(lock)))
}

/// The agent's system CA bundle with the bottle's CA appended, made before the agent starts
/// from the image's own bundle (one archive read instead of running `update-ca-certificates`
/// in the agent, which took seconds). Every TLS client in the agent is pointed at this file.
async fn trusted_bundle<B: Backend>(
    backend: &B,
    agent: &str,
    agent_files: &[ContextFile],
) -> anyhow::Result<ContextFile> {
    use std::io::Read as _;
    let missing = || {
        format!(
            "the agent image has no readable {} (its TLS roots); install `ca-certificates` in its Dockerfile",
            provision::SYSTEM_CA_BUNDLE
        )
    };
    let tar = backend
        .copy_out(agent, provision::SYSTEM_CA_BUNDLE)
        .await
        .with_context(missing)?;
    let mut archive = tar::Archive::new(&tar[..]);
    let mut roots = Vec::new();
    for entry in archive.entries().with_context(missing)? {
        let entry = entry.with_context(missing)?;
        // Docker archives the path as it is: Debian's bundle is a regular file (a symlink
        // in its place would hand over no roots, and is refused below as missing).
        if entry.header().entry_type().is_file() {
            entry
                .take(provision::MOST_CA_BUNDLE_BYTES + 1)
                .read_to_end(&mut roots)
                .with_context(missing)?;
            break;
        }
    }
    anyhow::ensure!(!roots.is_empty(), "{}", missing());
    anyhow::ensure!(
        (roots.len() as u64) <= provision::MOST_CA_BUNDLE_BYTES,
        "the agent image's {} is over {} MiB",
        provision::SYSTEM_CA_BUNDLE,
        provision::MOST_CA_BUNDLE_BYTES >> 20
    );
    let ca = agent_files
        .iter()
        .find(|f| f.path == wire::AGENT_CA_PATH)
        .context("the bottle's CA is not among the agent's files")?;
    if !roots.ends_with(b"\n") {
        roots.push(b'\n');
    }
    roots.extend_from_slice(&ca.contents);
    Ok(ContextFile::new(provision::SYSTEM_CA_BUNDLE, roots, 0o644))
}

/// Removes the home's egress network once no bundle is on it. A failure is only logged: the
/// network is reused by the next start and removed by a later stop or `cleanup`.
pub(crate) async fn remove_egress_network_if_unused<B: Backend>(backend: &B, home: &str) {
    let _lock = match lock_network(home) {
        Ok(lock) => lock,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "the shared egress network was not removed");
            return;
        }
    };
    if let Err(e) = backend
        .remove_network_if_unused(&egress_network(home))
        .await
    {
        tracing::warn!(error = %e, "the shared egress network was not removed");
    }
}

/// Creates and starts the bottle. On failure everything created so far is removed.
pub(crate) async fn launch<B: Backend>(
    backend: &B,
    launch: &Launch,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<Running> {
    let mut ledger = Ledger::default();
    // Each step's time, for `CLAUDE_BOTTLE_LOG=debug` (where a start spends its time).
    let mut clock = timing::StepClock::new("launch");
    let mut timed = |next: &str| {
        clock.next(next);
        progress(next);
    };
    let result = launch_steps(backend, launch, &mut ledger, &mut timed).await;
    clock.finish();
    match result {
        Ok(running) => Ok(running),
        Err(e) => {
            progress("start failed; removing what was created");
            for err in ledger.roll_back(backend).await {
                tracing::warn!(error = %err, "rollback step failed");
                eprintln!("warning: {err}; run `claude-bottle cleanup` to retry");
            }
            remove_egress_network_if_unused(backend, &launch.home).await;
            Err(e)
        }
    }
}

async fn launch_steps<B: Backend>(
    backend: &B,
    launch: &Launch,
    ledger: &mut Ledger,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<Running> {
    let id = &launch.identity;
    let labels = |role: &str| Labels::for_bottle(id, role).in_home(&launch.home);
    let sockets = VolumeMount {
        volume: object_name(id, "sock"),
        target: wire::SOCKET_DIR.to_owned(),
        read_only: false,
    };

    progress("joining the egress network, creating the socket volume");
    let network = egress_network(&launch.home);
    let network_lock = lock_network(&launch.home)?;
    backend
        .ensure_network(&network, &Labels::shared(&launch.home))
        .await?;
    let volume = backend
        .create_volume(&sockets.volume, &labels("sockets"))
        .await?;
    ledger.record(ObjectKind::Volume, &volume);

    // The bundle and the agent are made and started side by side: the agent's command waits
    // for the ready file, so it may start before the bundle answers, and nothing of either
    // container depends on the other running.
    progress("creating and starting the bundle and the agent (no network)");
    let mut bundle_objects = Ledger::default();
    let mut agent_objects = Ledger::default();
    let bundle_made = make_bundle(
        backend,
        launch,
        network,
        sockets.clone(),
        network_lock,
        &mut bundle_objects,
    );
    let agent_made = make_agent(backend, launch, sockets, &mut agent_objects);
    let (bundle, agent) = tokio::join!(bundle_made, agent_made);
    ledger.absorb(bundle_objects);
    ledger.absorb(agent_objects);
    let (bundle, agent) = (bundle?, agent?);

    progress("provisioning the agent: relay");
    if let Some(tar) = &launch.work_tar {
        progress("restoring the saved work tree");
        restore_work_tree(backend, &agent, tar).await?;
    }
    backend
        .exec_detached(
            &agent,
            &ExecSpec {
                cmd: vec![provision::RELAY_BIN.into(), "relay".into()],
                user: provision::RELAY_USER.into(),
                env: vec!["BOTTLE_LOG=warn".into()],
                working_dir: Some("/".into()),
            },
        )
        .await?;

    progress("waiting for the bundle to answer through the relay");
    wait_until_ready(backend, &agent, &bundle).await?;
    let ready = backend
        .exec(&agent, &root_exec(&["touch", provision::READY_FILE]))
        .await?;
    anyhow::ensure!(ready.exit_code == 0, "cannot release the agent's command");
    Ok(Running { agent })
}

/// Creates the bundle container on the shared egress network (recorded in `ledger` as soon as
/// it exists), copies its config, secrets, CA key and git keys in, and starts it; then
/// releases the network lock (Docker counts a started container as the network's user).
async fn make_bundle<B: Backend>(
    backend: &B,
    launch: &Launch,
    network: String,
    sockets: VolumeMount,
    network_lock: NetworkLock,
    ledger: &mut Ledger,
) -> anyhow::Result<String> {
    let id = &launch.identity;
    let mut clock = timing::StepClock::new("  (concurrently) create the bundle");
    let bundle = backend
        .create_container(&ContainerSpec {
            name: object_name(id, "bundle"),
            image: launch.bundle_image.clone(),
            labels: Labels::for_bottle(id, "bundle").in_home(&launch.home),
            cmd: vec!["run".into()],
            entrypoint: None,
            user: String::new(),
            env: vec!["BOTTLE_LOG=info".into()],
            // No alias: the network is shared, and nothing reaches a bundle by name.
            network: Network::Attached {
                network,
                aliases: Vec::new(),
            },
            volumes: vec![sockets],
            binds: launch.bundle_binds.clone(),
            cap_drop_all: true,
            no_new_privileges: true,
            runtime: None,
            tty: false,
            working_dir: None,
            extra_hosts: Vec::new(),
            // `bottle-bundle run` is the bundle's PID 1 and reaps itself.
            init: false,
            limits: launch.bundle_limits,
        })
        .await?;
    ledger.record(ObjectKind::Container, &bundle);
    clock.next("  (concurrently) copy the bundle's files in");
    backend
        .copy_into(&bundle, "/", &launch.bundle_files)
        .await?;
    clock.next("  (concurrently) start the bundle");
    backend.start_container(&bundle).await?;
    clock.finish();
    drop(network_lock);
    Ok(bundle)
}

/// Creates the agent container (recorded in `ledger` as soon as it exists), copies its files
/// in, the CA bundle that trusts the bottle's CA among them, and starts it (its command waits
/// for the ready file).
async fn make_agent<B: Backend>(
    backend: &B,
    launch: &Launch,
    sockets: VolumeMount,
    ledger: &mut Ledger,
) -> anyhow::Result<String> {
    let id = &launch.identity;
    let mut clock = timing::StepClock::new("  (concurrently) create the agent");
    let agent = backend
        .create_container(&ContainerSpec {
            name: object_name(id, "agent"),
            image: launch.agent_image.clone(),
            labels: Labels::for_bottle(id, "agent").in_home(&launch.home),
            cmd: launch.agent_cmd.clone(),
            entrypoint: Some(Vec::new()),
            user: format!("{0}:{0}", provision::AGENT_UID),
            env: provision::agent_env(),
            network: Network::None,
            volumes: vec![sockets],
            // Never a host directory: the queue, above all, stays out of the agent's reach.
            binds: Vec::new(),
            cap_drop_all: true,
            no_new_privileges: true,
            runtime: launch.runtime.clone(),
            tty: launch.tty,
            working_dir: None,
            extra_hosts: wire::AGENT_HOST_NAMES
                .iter()
                .map(|name| format!("{name}:127.0.0.1"))
                .collect(),
            init: true,
            limits: launch.agent_limits,
        })
        .await?;
    ledger.record(ObjectKind::Container, &agent);
    clock.next("  (concurrently) read the image's CA bundle, add the bottle's");
    let trust = trusted_bundle(backend, &agent, &launch.agent_files).await?;
    clock.next("  (concurrently) copy the agent's files in");
    let mut files = launch.agent_files.clone();
    files.push(trust);
    backend.copy_into(&agent, "/", &files).await?;
    clock.next("  (concurrently) start the agent");
    backend.start_container(&agent).await?;
    clock.finish();
    Ok(agent)
}

/// Copies the saved work tree into the agent and unpacks it there as the agent's user.
async fn restore_work_tree<B: Backend>(backend: &B, agent: &str, tar: &[u8]) -> anyhow::Result<()> {
    let uid = provision::AGENT_UID;
    backend
        .copy_into(
            agent,
            "/",
            &[ContextFile::new(provision::WORK_TAR_IN_AGENT, tar, 0o600).owned_by(uid, uid)],
        )
        .await?;
    let unpack = backend
        .exec(
            agent,
            &ExecSpec {
                cmd: provision::restore_work_cmd(),
                user: format!("{uid}:{uid}"),
                env: Vec::new(),
                working_dir: Some("/".into()),
            },
        )
        .await?;
    anyhow::ensure!(
        unpack.exit_code == 0,
        "restoring the saved work tree into {} failed: {}",
        provision::AGENT_WORKDIR,
        String::from_utf8_lossy(&unpack.stderr).trim()
    );
    Ok(())
}

/// The proxy's introspection page fetched in the agent, as the agent, through the relay: the
/// path every request of the agent takes.
pub(crate) fn relay_probe() -> ExecSpec {
    ExecSpec {
        cmd: vec![
            "curl".into(),
            "-sf".into(),
            "-o".into(),
            "/dev/null".into(),
            "--max-time".into(),
            "2".into(),
            "-x".into(),
            format!("http://bundle:{}", wire::PROXY_PORT),
            format!("http://{}/routes", wire::INTROSPECTION_HOST),
        ],
        user: format!("{0}:{0}", provision::AGENT_UID),
        env: Vec::new(),
        working_dir: Some("/".into()),
    }
}

/// `bottle-bundle probe ARGS` in the bundle container: each role asked on its own socket.
pub(crate) fn bundle_probe(args: &[&str]) -> ExecSpec {
    let mut cmd = vec![
        "/usr/local/bin/bottle-bundle".to_owned(),
        "probe".to_owned(),
    ];
    cmd.extend(args.iter().map(|a| (*a).to_owned()));
    ExecSpec {
        cmd,
        user: String::new(),
        env: vec!["BOTTLE_LOG=warn".into()],
        working_dir: Some("/".into()),
    }
}

fn root_exec(cmd: &[&str]) -> ExecSpec {
    ExecSpec {
        cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
        user: "0:0".into(),
        env: Vec::new(),
        working_dir: Some("/".into()),
    }
}

/// Polls the proxy's introspection page from inside the agent (agent → relay → socket →
/// bundle), the whole path the agent will use, then asks every role on its socket (`probe`):
/// a gate or supervise server that crash-loops fails the start instead of a bottle reported
/// running without it. A bundle that exits fails at once with its log.
async fn wait_until_ready<B: Backend>(
    backend: &B,
    agent: &str,
    bundle: &str,
) -> anyhow::Result<()> {
    let probe = relay_probe();
    let roles = bundle_probe(&[]);
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last_probe = String::new();
    loop {
        // Both asked at once: each is a `docker exec`, tens of ms.
        let (through_relay, asked) =
            tokio::join!(backend.exec(agent, &probe), backend.exec(bundle, &roles));
        // A bundle that exited cannot be exec'd into: the state check below says why. Any
        // other failure to ask it is the start's error.
        let asked = match asked {
            Ok(asked) => Some(asked),
            Err(e) if backend.container_state(bundle).await?.running => return Err(e.into()),
            Err(_) => None,
        };
        if through_relay?.exit_code == 0
            && let Some(asked) = asked
        {
            if asked.exit_code == 0 {
                return Ok(());
            }
            last_probe = String::from_utf8_lossy(&asked.stdout).trim().to_owned();
        }
        let state = backend.container_state(bundle).await?;
        if !state.running {
            let log = backend.logs(bundle, 30).await.unwrap_or_default();
            anyhow::bail!(
                "the bundle stopped during start (exit code {}); its last output:\n{}",
                state.exit_code.unwrap_or(-1),
                log.trim_end()
            );
        }
        if Instant::now() > deadline {
            let log = backend.logs(bundle, 30).await.unwrap_or_default();
            anyhow::bail!(
                "the bundle did not answer within {}s{}; its last output:\n{}",
                READY_TIMEOUT.as_secs(),
                match last_probe.is_empty() {
                    true => String::new(),
                    false => format!(" ({})", last_probe.replace('\n', "; ")),
                },
                log.trim_end()
            );
        }
        // Each round is two `docker exec`s (tens of ms each): a short pause between rounds
        // is enough not to spin.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Removes every object of bottle `identity` (found by label). Returns what could not be
/// removed; an empty list means nothing of the bottle is left.
pub(crate) async fn teardown<B: Backend>(
    backend: &B,
    identity: &str,
) -> Result<Vec<BackendError>, BackendError> {
    let objects = backend.list_objects(Some(identity)).await?;
    let left = remove_all(backend, &objects).await;
    // The last bottle of its home takes the shared egress network with it.
    let homes: std::collections::BTreeSet<&str> = objects
        .iter()
        .map(|o| o.home.as_str())
        .filter(|h| !h.is_empty())
        .collect();
    for home in homes {
        remove_egress_network_if_unused(backend, home).await;
    }
    Ok(left)
}

/// Runs `f` and, if the process gets SIGINT or SIGTERM first, stops it and returns `None`.
pub(crate) async fn unless_interrupted<F: std::future::Future>(
    f: F,
) -> anyhow::Result<Option<F::Output>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        out = f => Ok(Some(out)),
        _ = term.recv() => Ok(None),
        _ = int.recv() => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::{MemoryBackend, ok};
    use crate::backend::{ExecOutput, ObjectKind};

    fn limits() -> ResourceLimits {
        ResourceLimits {
            memory_bytes: 1 << 30,
            pids: 256,
            nano_cpus: 1_000_000_000,
        }
    }

    fn plan() -> Launch {
        Launch {
            identity: "dev-abcde".into(),
            home: "/h/.claude-bottle".into(),
            agent_image: "claude-bottle-agent:x".into(),
            bundle_image: "claude-bottle-bundle:x".into(),
            bundle_files: vec![ContextFile::new(wire::BUNDLE_CONFIG_PATH, "{}", 0o644)],
            bundle_binds: Vec::new(),
            agent_files: vec![
                ContextFile::new("/etc/x", "x", 0o644),
                ContextFile::new(wire::AGENT_CA_PATH, "(the bottle's CA)\n", 0o644),
            ],
            work_tar: None,
            agent_cmd: vec!["claude".into()],
            runtime: None,
            tty: false,
            agent_limits: limits(),
            bundle_limits: limits(),
        }
    }

    /// A bottle whose every step works: three objects of its own (two containers and the
    /// socket volume) and the home's shared egress network, both containers running, the
    /// agent released last.
    #[tokio::test]
    async fn a_launch_makes_the_bottles_objects_and_releases_the_agent_last() {
        let backend = MemoryBackend::new();
        let running = launch(&backend, &plan(), &mut |_| {}).await.unwrap();
        let objects = backend.objects();
        assert_eq!(objects.len(), 3, "{objects:?}");
        assert_eq!(backend.networks(), [egress_network("/h/.claude-bottle")]);
        // The agent trusts the image's roots and the bottle's CA from one prepared file,
        // in place before it started (no `update-ca-certificates` run in it).
        let agent_name = object_name("dev-abcde", "agent");
        let bundle = backend
            .file(&agent_name, provision::SYSTEM_CA_BUNDLE)
            .unwrap();
        let ca = plan()
            .agent_files
            .into_iter()
            .find(|f| f.path == wire::AGENT_CA_PATH)
            .unwrap();
        let mut expected = b"(the image's roots)\n".to_vec();
        expected.extend_from_slice(&ca.contents);
        assert_eq!(bundle.contents, expected);
        let calls = backend.calls();
        let copied = calls
            .iter()
            .rposition(|c| *c == format!("copy_into {agent_name}"))
            .unwrap();
        let started = calls
            .iter()
            .position(|c| *c == format!("start_container {agent_name}"))
            .unwrap();
        assert!(copied < started, "{calls:?}");
        assert!(
            objects
                .iter()
                .all(|o| o.identity == "dev-abcde" && o.home == "/h/.claude-bottle")
        );
        assert!(
            objects
                .iter()
                .filter(|o| o.kind == ObjectKind::Container)
                .all(|o| o.running)
        );
        assert_eq!(
            running.agent,
            objects.iter().find(|o| o.role == "agent").unwrap().id
        );
        assert_eq!(
            backend.calls().last().map(String::as_str),
            Some("exec claude-bottle-dev-abcde-agent"),
            "the release (touch READY) is the last step"
        );
    }

    /// A failure at any step of the start removes everything made before it, in reverse
    /// order, and the error is the step's.
    #[tokio::test]
    async fn a_launch_failing_at_any_step_leaves_nothing_behind() {
        let bundle = object_name("dev-abcde", "bundle");
        let agent = object_name("dev-abcde", "agent");
        let steps = [
            ("ensure_network", egress_network("/h/.claude-bottle")),
            ("create_volume", object_name("dev-abcde", "sock")),
            ("create_container", bundle.clone()),
            ("copy_into", bundle.clone()),
            ("start_container", bundle.clone()),
            ("create_container", agent.clone()),
            ("copy_out", agent.clone()),
            ("copy_into", agent.clone()),
            ("start_container", agent.clone()),
            ("exec", agent.clone()),
            ("exec_detached", agent.clone()),
            ("exec", bundle.clone()),
        ];
        for (method, object) in steps {
            let backend = MemoryBackend::new();
            backend.fail_on(method, &object);
            let err = launch(&backend, &plan(), &mut |_| {}).await.unwrap_err();
            assert!(
                format!("{err:#}").contains("injected failure"),
                "{method} {object}: {err:#}"
            );
            assert_eq!(
                backend.objects(),
                Vec::new(),
                "left after {method} {object} failed"
            );
            assert_eq!(
                backend.networks(),
                Vec::<String>::new(),
                "the egress network is left after {method} {object} failed"
            );
        }
    }

    /// A bundle that never answers through the relay fails the start after READY_TIMEOUT
    /// (paused time: no real wait) and is rolled back; so is an agent whose CA trust fails.
    #[tokio::test(start_paused = true)]
    async fn a_bundle_that_never_answers_or_a_failed_ca_trust_is_rolled_back() {
        let never =
            MemoryBackend::with_exec(Box::new(|_, argv| match argv.first().map(String::as_str) {
                Some("curl") => ExecOutput {
                    exit_code: 7,
                    stdout: Vec::new(),
                    stderr: b"connection refused".to_vec(),
                },
                _ => ok(""),
            }));
        let err = launch(&never, &plan(), &mut |_| {}).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("did not answer within 60s"),
            "{err:#}"
        );
        assert_eq!(never.objects(), Vec::new());

        // An agent image without TLS roots (no ca-certificates) cannot trust the CA.
        let untrusted = MemoryBackend::new().without_image_files();
        let err = launch(&untrusted, &plan(), &mut |_| {}).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("install `ca-certificates` in its Dockerfile"),
            "{err:#}"
        );
        assert_eq!(untrusted.objects(), Vec::new());
    }
}
