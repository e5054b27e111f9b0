//! The Docker backend against the real engine: builds, isolation options, copies, execs,
//! labels, and removal that leaves nothing behind.
//!
//! Needs the local base image (`scripts/base-image`, run by `scripts/test`).

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use std::collections::BTreeMap;

use claude_bottle::backend::docker::DockerBackend;
use claude_bottle::backend::{
    Backend, ContainerSpec, ContextFile, ExecSpec, ImageBuild, Labels, Ledger, Network, ObjectKind,
    VolumeMount, remove_all,
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
    }
}

#[tokio::test]
async fn isolated_container_lifecycle_leaves_nothing_behind() {
    let backend = backend().await;
    let id = identity("life");
    let mut ledger = Ledger::default();

    let net = backend
        .create_network(&format!("{id}-egress"), &Labels::for_bottle(&id, "egress"))
        .await
        .unwrap();
    ledger.record(ObjectKind::Network, &net);
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

    // Labels find all three objects, and only this bottle's.
    let objects = backend.list_objects(Some(&id)).await.unwrap();
    let kinds: Vec<_> = objects.iter().map(|o| o.kind).collect();
    assert_eq!(
        kinds,
        [
            ObjectKind::Container,
            ObjectKind::Network,
            ObjectKind::Volume
        ]
    );
    assert!(objects.iter().all(|o| o.identity == id));
    assert!(objects[0].running);

    let errors = remove_all(&backend, &objects).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(backend.list_objects(Some(&id)).await.unwrap().is_empty());
    // Removing again is not an error.
    assert!(ledger.roll_back(&backend).await.is_empty());
}

#[tokio::test]
async fn ledger_rolls_back_a_half_made_bottle() {
    let backend = backend().await;
    let id = identity("rollback");
    let mut ledger = Ledger::default();
    let net = backend
        .create_network(&format!("{id}-egress"), &Labels::for_bottle(&id, "egress"))
        .await
        .unwrap();
    ledger.record(ObjectKind::Network, &net);
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

    assert_eq!(backend.list_objects(Some(&id)).await.unwrap().len(), 2);
    let errors = ledger.roll_back(&backend).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(backend.list_objects(Some(&id)).await.unwrap().is_empty());
}

#[tokio::test]
async fn builds_with_progress_and_reports_failures() {
    let backend = backend().await;
    let id = identity("build");
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
