//! The Docker backend against the real engine: builds, isolation options, copies, execs,
//! labels, and removal that leaves nothing behind.
//!
//! Needs the local base image (`scripts/base-image`, run by `scripts/test`).

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use std::collections::BTreeMap;

use claude_bottle::backend::docker::DockerBackend;
use claude_bottle::backend::{
    Backend, BindMount, ContainerSpec, ContextFile, ExecSpec, ImageBuild, Labels, Ledger, Network,
    ObjectKind, ResourceLimits, VolumeMount, remove_all,
};

const BASE_IMAGE: &str = "claude-bottle-base:bookworm";

async fn backend() -> DockerBackend {
    let backend = DockerBackend::connect().await.unwrap();
    assert!(
        backend.image_id(BASE_IMAGE).await.unwrap().is_some(),
        "the base image {BASE_IMAGE} is missing: run scripts/base-image"
    );
    backend
}

/// A unique identity per test run, so parallel tests and earlier runs never collide.
fn identity(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("betest-{test}-{}-{nanos:x}", std::process::id())
}

/// Removes every object labelled with the identity when dropped, so a failing assertion
/// leaves nothing behind (the happy path removes them itself and checks that it could).
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        let label = format!("label=claude-bottle.identity={}", self.0);
        for (list, rm) in [
            (&["ps", "-aq", "--filter"][..], &["rm", "-f"][..]),
            (
                &["network", "ls", "-q", "--filter"][..],
                &["network", "rm"][..],
            ),
            (
                &["volume", "ls", "-q", "--filter"][..],
                &["volume", "rm", "-f"][..],
            ),
        ] {
            let Ok(out) = std::process::Command::new("docker")
                .args(list)
                .arg(&label)
                .output()
            else {
                continue;
            };
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(rm)
                    .args(&ids)
                    .output();
            }
        }
    }
}

fn exec(cmd: &[&str], user: &str) -> ExecSpec {
    ExecSpec {
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        user: user.into(),
        env: vec![],
        working_dir: None,
    }
}

fn container(name: &str, image: &str, identity: &str, network: Network) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: image.into(),
        labels: Labels::for_bottle(identity, "agent"),
        cmd: vec!["sleep".into(), "infinity".into()],
        entrypoint: None,
        user: "1000:1000".into(),
        env: vec!["HELLO=world".into()],
        network,
        volumes: vec![],
        binds: Vec::new(),
        cap_drop_all: true,
        no_new_privileges: true,
        runtime: None,
        tty: false,
        working_dir: None,
        extra_hosts: vec![],
        init: false,
        limits: ResourceLimits {
            memory_bytes: 256 << 20,
            pids: 128,
            nano_cpus: 500_000_000,
        },
    }
}

#[tokio::test]
async fn isolated_container_lifecycle_leaves_nothing_behind() {
    let backend = backend().await;
    let id = identity("life");
    let _sweep = Sweep(id.clone());
    let mut ledger = Ledger::default();

    let vol = backend
        .create_volume(&format!("{id}-sock"), &Labels::for_bottle(&id, "sockets"))
        .await
        .unwrap();
    ledger.record(ObjectKind::Volume, &vol);

    let mut spec = container(&format!("{id}-agent"), BASE_IMAGE, &id, Network::None);
    spec.volumes.push(VolumeMount {
        volume: vol.clone(),
        target: "/run/bottle/sock".into(),
        read_only: false,
    });
    let agent = backend.create_container(&spec).await.unwrap();
    ledger.record(ObjectKind::Container, &agent);

    // Files copied in before start keep their owner and mode.
    backend
        .copy_into(
            &agent,
            "/tmp",
            &[ContextFile::new("hello.txt", "copied in\n", 0o640).owned_by(1000, 1000)],
        )
        .await
        .unwrap();
    backend.start_container(&agent).await.unwrap();

    let out = backend
        .exec(
            &agent,
            &exec(&["stat", "-c", "%u %a %n", "/tmp/hello.txt"], ""),
        )
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1000 640 /tmp/hello.txt\n"
    );

    // The container's user, environment and isolation are what the spec asked for.
    let out = backend
        .exec(&agent, &exec(&["sh", "-c", "id -u; echo $HELLO"], ""))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1000\nworld\n");
    let out = backend
        .exec(&agent, &exec(&["ls", "/sys/class/net"], ""))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "lo",
        "only loopback"
    );
    let out = backend
        .exec(
            &agent,
            &exec(
                &["grep", "-E", "^(CapEff|NoNewPrivs)", "/proc/self/status"],
                "0",
            ),
        )
        .await
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");

    // Exit codes and stderr come back.
    let out = backend
        .exec(&agent, &exec(&["sh", "-c", "echo oops >&2; exit 3"], ""))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    // A detached exec keeps running after the call returns.
    backend
        .exec_detached(
            &agent,
            &exec(&["sh", "-c", "sleep 0.2; touch /tmp/ran"], ""),
        )
        .await
        .unwrap();
    let mut ran = false;
    for _ in 0..50 {
        let out = backend
            .exec(&agent, &exec(&["test", "-e", "/tmp/ran"], ""))
            .await
            .unwrap();
        if out.exit_code == 0 {
            ran = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ran, "the detached command never ran");

    // Labels find both objects, and only this bottle's.
    let objects = backend.list_objects(Some(&id)).await.unwrap();
    let kinds: Vec<_> = objects.iter().map(|o| o.kind).collect();
    assert_eq!(kinds, [ObjectKind::Container, ObjectKind::Volume]);
    assert!(objects.iter().all(|o| o.identity == id));
    assert!(objects[0].running);

    let errors = remove_all(&backend, &objects).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(backend.list_objects(Some(&id)).await.unwrap().is_empty());
    // Removing again is not an error.
    assert!(ledger.roll_back(&backend).await.is_empty());
}

/// The shared egress network: made once and found again, isolating its containers, kept
/// while a started container is on it, removed after; a network of that name that lets
/// containers reach each other is refused, naming the fix. (Docker does not keep network
/// names unique: launchers serialize `ensure_network` with the home's lock file.)
#[tokio::test]
async fn the_shared_network_is_made_once_isolated_and_removed_when_unused() {
    let backend = backend().await;
    let id = identity("shared");
    let _sweep = Sweep(id.clone());
    let name = format!("{id}-egress");
    // The shared network carries no bottle label, so `Sweep` would not find it.
    struct RemoveNetwork(String);
    impl Drop for RemoveNetwork {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", &self.0])
                .output();
        }
    }
    let _remove = RemoveNetwork(name.clone());
    let labels = Labels::shared("/h");
    let made = backend.ensure_network(&name, &labels).await.unwrap();
    assert_eq!(backend.ensure_network(&name, &labels).await.unwrap(), made);
    let docker = bollard::Docker::connect_with_local_defaults().unwrap();
    let inspect = docker
        .inspect_network(
            &name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    assert_eq!(
        inspect
            .options
            .unwrap_or_default()
            .get("com.docker.network.bridge.enable_icc")
            .map(String::as_str),
        Some("false")
    );

    let spec = container(
        &format!("{id}-bundle"),
        BASE_IMAGE,
        &id,
        Network::Attached {
            network: name.clone(),
            aliases: vec![],
        },
    );
    let user = backend.create_container(&spec).await.unwrap();
    backend.start_container(&user).await.unwrap();
    assert!(!backend.remove_network_if_unused(&name).await.unwrap());
    backend.remove(ObjectKind::Container, &user).await.unwrap();
    assert!(backend.remove_network_if_unused(&name).await.unwrap());
    assert!(
        docker
            .inspect_network(
                &name,
                None::<bollard::query_parameters::InspectNetworkOptions>
            )
            .await
            .is_err()
    );
    // Gone already: still fine.
    assert!(backend.remove_network_if_unused(&name).await.unwrap());

    // Someone else's network under that name, without isolation.
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = backend
        .ensure_network(&name, &labels)
        .await
        .unwrap_err()
        .to_string();
    docker.remove_network(&name).await.unwrap();
    assert!(
        err.contains("reach each other") && err.contains(&format!("docker network rm {name}")),
        "{err}"
    );
}

#[tokio::test]
async fn ledger_rolls_back_a_half_made_bottle() {
    let backend = backend().await;
    let id = identity("rollback");
    let _sweep = Sweep(id.clone());
    let mut ledger = Ledger::default();
    let vol = backend
        .create_volume(&format!("{id}-sock"), &Labels::for_bottle(&id, "sockets"))
        .await
        .unwrap();
    ledger.record(ObjectKind::Volume, &vol);

    // The next step fails: the image does not exist.
    let spec = container(
        &format!("{id}-agent"),
        "claude-bottle-no-such-image:0",
        &id,
        Network::None,
    );
    let err = backend
        .create_container(&spec)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{id}-agent")), "{err}");

    assert_eq!(backend.list_objects(Some(&id)).await.unwrap().len(), 1);
    let errors = ledger.roll_back(&backend).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(backend.list_objects(Some(&id)).await.unwrap().is_empty());
}

#[tokio::test]
async fn builds_with_progress_and_reports_failures() {
    let backend = backend().await;
    let id = identity("build");
    let _sweep = Sweep(id.clone());
    let tag = format!("claude-bottle-test-{id}:latest");
    let build = ImageBuild {
        tag: tag.clone(),
        dockerfile:
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY greeting /greeting\nRUN cat /greeting\n"
                .into(),
        context: vec![ContextFile::new(
            "greeting",
            "hello from the context\n",
            0o644,
        )],
        build_args: BTreeMap::from([("BASE_IMAGE".into(), BASE_IMAGE.into())]),
        target: String::new(),
        labels: BTreeMap::new(),
    };
    let mut lines = Vec::new();
    backend
        .build_image(&build, &mut |line| lines.push(line.to_owned()))
        .await
        .unwrap();
    assert!(backend.image_id(&tag).await.unwrap().is_some());
    let all = lines.join("\n");
    assert!(all.contains("hello from the context"), "{all}");

    let mut failing = build.clone();
    failing.tag = format!("claude-bottle-test-{id}-bad:latest");
    failing
        .dockerfile
        .push_str("RUN echo about to fail && exit 7\n");
    let err = backend
        .build_image(&failing, &mut |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&failing.tag), "{err}");
    assert!(
        err.contains("exit") || err.contains("returned a non-zero code"),
        "{err}"
    );
    assert!(backend.image_id(&failing.tag).await.unwrap().is_none());

    // Tidy the test image; a second removal is not an error.
    backend.remove_image(&tag).await.unwrap();
    assert!(backend.image_id(&tag).await.unwrap().is_none());
    backend.remove_image(&tag).await.unwrap();
}

/// Bind mounts (read-write and read-only), `copy_out` of a directory as a tar, and `signal`
/// reaching PID 1: what the supervise queue, `suspend` and route reloads rely on.
#[tokio::test]
async fn binds_copy_out_and_signals() {
    let backend = backend().await;
    let id = identity("binds");
    let _sweep = Sweep(id.clone());
    let host = tempfile::tempdir().unwrap();
    let (rw, ro) = (host.path().join("rw"), host.path().join("ro"));
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("decided.json"), "{}").unwrap();

    let mut spec = container(&format!("{id}-bundle"), BASE_IMAGE, &id, Network::None);
    spec.user = "0:0".into();
    // PID 1 records each SIGHUP it gets.
    spec.cmd = vec![
        "/bin/sh".into(),
        "-c".into(),
        "trap 'echo hup >> /tmp/hups' HUP; while :; do sleep 0.1; done".into(),
    ];
    spec.binds = vec![
        BindMount {
            source: rw.display().to_string(),
            target: "/q/proposals".into(),
            read_only: false,
        },
        BindMount {
            source: ro.display().to_string(),
            target: "/q/decisions".into(),
            read_only: true,
        },
    ];
    let c = backend.create_container(&spec).await.unwrap();
    let mut ledger = Ledger::default();
    ledger.record(ObjectKind::Container, &c);
    backend.start_container(&c).await.unwrap();

    // Read-write: what the container writes is on the host.
    let out = backend
        .exec(
            &c,
            &exec(&["sh", "-c", "echo p > /q/proposals/p-1.json"], ""),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(rw.join("p-1.json")).unwrap(), "p\n");
    // Read-only: readable, and neither writing nor removing works, even as root.
    let out = backend
        .exec(&c, &exec(&["cat", "/q/decisions/decided.json"], ""))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{}");
    for cmd in [
        "touch /q/decisions/forged.json",
        "rm /q/decisions/decided.json",
    ] {
        let out = backend
            .exec(&c, &exec(&["sh", "-c", cmd], ""))
            .await
            .unwrap();
        assert_ne!(out.exit_code, 0, "`{cmd}` worked on a read-only bind");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 1);
    let mounts = backend
        .exec(&c, &exec(&["grep", " /q/", "/proc/mounts"], ""))
        .await
        .unwrap();
    let mounts = String::from_utf8_lossy(&mounts.stdout);
    assert!(
        mounts
            .lines()
            .any(|l| l.contains("/q/decisions") && l.contains(" ro,")),
        "{mounts}"
    );

    // copy_out: a directory comes back as a tar whose top entry is its own name.
    let out = backend
        .exec(
            &c,
            &exec(
                &[
                    "sh",
                    "-c",
                    "mkdir -p /w/sub && echo one > /w/a.txt && echo two > /w/sub/b.txt",
                ],
                "",
            ),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    let tar_bytes = backend.copy_out(&c, "/w").await.unwrap();
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut seen = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let uid = entry.header().uid().unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
        seen.insert(path, (uid, text));
    }
    assert_eq!(seen["w/a.txt"], (0, "one\n".to_owned()), "{seen:?}");
    assert_eq!(seen["w/sub/b.txt"], (0, "two\n".to_owned()), "{seen:?}");
    let missing = backend.copy_out(&c, "/no/such/dir").await.unwrap_err();
    assert!(missing.to_string().contains("/no/such/dir"), "{missing}");

    // signal: PID 1 gets SIGHUP (twice, twice recorded).
    for _ in 0..2 {
        backend.signal(&c, "SIGHUP").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    }
    let out = backend
        .exec(&c, &exec(&["cat", "/tmp/hups"], ""))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hup\nhup\n");
    assert!(backend.container_state(&c).await.unwrap().running);

    assert!(ledger.roll_back(&backend).await.is_empty());
    assert!(backend.list_objects(Some(&id)).await.unwrap().is_empty());
    // The host directories stay (they are the host's, not the container's).
    assert!(rw.join("p-1.json").exists());
}
