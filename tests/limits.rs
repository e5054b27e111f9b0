//! Resource limits on the real engine: a bottle's `limits` reach the agent container, the
//! bundle gets its fixed caps, and a fork loop or a memory balloon in the agent hits its cap
//! while the bottle keeps answering.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use futures_util::StreamExt;

use e2e::{Home, SshKeys, container_sh, docker, start_git_upstream};

/// The bundle's fixed caps (`launcher/src/plan.rs::BUNDLE_LIMITS`).
const BUNDLE_MEMORY: i64 = 512 << 20;
const BUNDLE_PIDS: i64 = 512;
const BUNDLE_NANO_CPUS: i64 = 1_000_000_000;

/// Forks sleeping children until a fork fails (or 1000 succeed), then kills them all and
/// prints how many it had and the errno of the failure.
const FORK_LOOP: &str = r#"
import os, signal, time
kids, err = [], None
while len(kids) < 1000:
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.kill(k, signal.SIGKILL)
for k in kids:
    os.waitpid(k, 0)
print(len(kids), err)
"#;

/// Writes (so every page is really used) 512 MiB, twice the agent's cap.
const BALLOON: &str = "b = b'x' * (512 << 20); print(len(b))";

#[tokio::test(flavor = "multi_thread")]
async fn limits_cap_the_agent_and_the_bundle_and_the_bottle_survives_hitting_them() {
    let home = Home::new();
    home.write(
        "bottles",
        "capped",
        "---\nlimits: {pids: 64, memory: 256m}\negress:\n  routes: []\n---\n",
    );
    home.write(
        "agents",
        "capped",
        "---\nbottle: capped\ncommand: \"sleep 100000\"\n---\n",
    );
    // The plan shows the caps before anything starts.
    let plan = home.run(&["start", "capped", "--dry-run"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("agent  memory 256 MiB (no swap), 64 processes"),
        "{text}"
    );
    assert!(
        text.contains("bundle memory 512 MiB (no swap), 512 processes, 1 CPU"),
        "{text}"
    );

    let bottle = home.start_detached("capped");
    let docker = docker().await;
    let engine_cpus = docker.info().await.unwrap().ncpu.unwrap();
    let agent_nano_cpus = engine_cpus.min(2) * 1_000_000_000;
    for (role, memory, pids, nano_cpus) in [
        ("agent", 256 << 20, 64, agent_nano_cpus),
        ("bundle", BUNDLE_MEMORY, BUNDLE_PIDS, BUNDLE_NANO_CPUS),
    ] {
        let name = format!("claude-bottle-{}-{role}", bottle.id);
        let host = docker
            .inspect_container(&name, None)
            .await
            .unwrap()
            .host_config
            .unwrap();
        assert_eq!(host.memory, Some(memory), "{role} memory");
        assert_eq!(host.memory_swap, Some(memory), "{role}: no swap");
        assert_eq!(host.pids_limit, Some(pids), "{role} pids");
        assert_eq!(host.nano_cpus, Some(nano_cpus), "{role} cpus");
    }

    // A fork loop stops at the cap with EAGAIN (11), below 64 since the agent's command, the
    // relay's threads and this exec count too.
    let forked = bottle.sh_ok(&format!("python3 -c '{FORK_LOOP}'"));
    let mut words = forked.split_whitespace();
    let count: usize = words.next().unwrap().parse().unwrap();
    assert_eq!(
        words.next(),
        Some("11"),
        "the fork loop did not hit EAGAIN: {forked}"
    );
    assert!(
        (10..64).contains(&count),
        "{count} children under a 64-process cap"
    );
    eprintln!("fork loop: {count} children before EAGAIN under pids 64");
    // The bottle still answers through the relay and the bundle.
    let routes = bottle.sh_ok("curl -sS --max-time 10 http://egress.local/routes");
    assert!(routes.contains("api.anthropic.com"), "{routes}");

    // A memory balloon is killed by the kernel (SIGKILL: 137), not swapped; the bottle stays.
    let balloon = bottle.sh(&format!("python3 -c \"{BALLOON}\""));
    assert_eq!(
        balloon.status.code(),
        Some(137),
        "the balloon was not killed at the cap: {}{}",
        String::from_utf8_lossy(&balloon.stdout),
        String::from_utf8_lossy(&balloon.stderr)
    );
    let routes = bottle.sh_ok("curl -sS --max-time 10 http://egress.local/routes");
    assert!(routes.contains("api.anthropic.com"), "{routes}");
}

/// The gate's largest push is 100 MiB (`render::bundle_config::MAX_PUSH_BYTES`): a push just
/// under it, of incompressible data, goes through `receive-pack`, the secret scan and the
/// forward over ssh inside the bundle's fixed caps.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_near_the_gates_size_limit_fits_the_bundles_caps() {
    let home = Home::new();
    let keys = SshKeys::new();
    home.write(
        "bottles",
        "pusher",
        &format!(
            "---\ngit:\n  - Name: app\n    Upstream: ssh://root@gitup.test/srv/app.git\n    IdentityFile: {}\n    KnownHostKey: \"{}\"\negress:\n  routes: []\n---\n",
            keys.client_key.display(),
            keys.host_pub
        ),
    );
    home.write(
        "agents",
        "pusher",
        "---\nbottle: pusher\ncommand: \"sleep 100000\"\n---\n",
    );
    let bottle = home.start_detached("pusher");
    let docker = docker().await;
    let upstream =
        start_git_upstream(&docker, &bottle.id, &bottle.network(), "gitup.test", &keys).await;
    bottle.sh_ok(
        "cd /tmp && for i in $(seq 30); do git clone -q ssh://root@gitup.test/srv/app.git app 2>/tmp/clone.err && exit 0; sleep 1; done; cat /tmp/clone.err; exit 1",
    );
    let started = std::time::Instant::now();
    bottle.sh_ok(
        "cd /tmp/app && head -c 94371840 /dev/urandom > big.bin && git add big.bin && \
         git -c user.name=a -c user.email=a@a.test commit -qm big && git push -q origin main",
    );
    let took = started.elapsed();
    let pushed = container_sh(
        &docker,
        &upstream,
        "git -C /srv/app.git cat-file -s main:big.bin",
    )
    .await;
    assert_eq!(
        pushed.trim(),
        "94371840",
        "the upstream did not get the push"
    );
    let bundle = format!("claude-bottle-{}-bundle", bottle.id);
    let state = docker
        .inspect_container(&bundle, None)
        .await
        .unwrap()
        .state
        .unwrap();
    assert_eq!(state.running, Some(true), "the bundle died: {state:?}");
    assert_eq!(state.oom_killed, Some(false));
    // The peak the bundle reached, where the engine reports it (cgroup v1).
    let stats = docker
        .stats(
            &bundle,
            Some(
                bollard::query_parameters::StatsOptionsBuilder::default()
                    .stream(false)
                    .build(),
            ),
        )
        .next()
        .await
        .unwrap()
        .unwrap();
    let peak = stats.memory_stats.and_then(|m| m.max_usage);
    eprintln!(
        "90 MiB push through the gate: {:.1} s, bundle peak memory {}",
        took.as_secs_f64(),
        peak.map_or("not reported".to_owned(), |b| format!(
            "{:.1} MiB",
            b as f64 / 1048576.0
        ))
    );
    if let Some(peak) = peak {
        assert!(peak < BUNDLE_MEMORY as u64, "{peak}");
    }
}
