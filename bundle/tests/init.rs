//! The PID-1 loop (`bottle-bundle run` / `init`) as a real process: signals are
//! forwarded, crashing roles are restarted and then given up on, orphans are reaped.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn init(children: &[String]) -> Child {
    init_with(children, &[])
}

fn init_with(children: &[String], flags: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bottle-bundle"));
    cmd.arg("init").args(flags);
    for c in children {
        cmd.arg("--child").arg(c);
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_for_file(path: &Path, contains: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(contains) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never said {contains:?}: {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

#[test]
fn sigterm_and_sighup_reach_every_child_and_the_stop_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let log = |i: u32| dir.path().join(format!("child{i}.log"));
    let script = |i: u32| {
        format!(
            "trap 'echo hup >> {0}' HUP; trap 'echo term >> {0}; exit 0' TERM; echo up >> {0}; \
             while :; do sleep 0.05; done",
            log(i).display()
        )
    };
    let sup = init(&[script(0), script(1)]);
    wait_for_file(&log(0), "up");
    wait_for_file(&log(1), "up");

    signal(&sup, "HUP");
    wait_for_file(&log(0), "hup");
    wait_for_file(&log(1), "hup");

    signal(&sup, "TERM");
    let out = finish(sup);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..2 {
        let text = std::fs::read_to_string(log(i)).unwrap();
        assert!(
            text.contains("term"),
            "child{i} never got SIGTERM: {text:?}"
        );
        // Stopped children are not restarted.
        assert_eq!(
            text.lines().filter(|l| *l == "up").count(),
            1,
            "child{i}: {text:?}"
        );
    }
}

#[test]
fn a_crashing_child_is_restarted_then_the_supervisor_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("starts.log");
    let sup = init_with(
        &[format!("echo start >> {}; exit 3", log.display())],
        &["--first-backoff-ms", "10"],
    );
    let started = Instant::now();
    let out = finish(sup);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("child0 failed 5 times"), "{stderr}");
    let starts = std::fs::read_to_string(&log).unwrap().lines().count();
    assert_eq!(starts, 5);
    // Four restarts after 10, 20, 40 and 80 ms: the backoff is honoured, and doubles.
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "no backoff"
    );
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stubborn.log");
    let sup = init_with(
        &[format!(
            "trap '' TERM; echo up >> {}; while :; do sleep 0.05; done",
            log.display()
        )],
        &["--stop-grace-ms", "1500"],
    );
    wait_for_file(&log, "up");
    let start = Instant::now();
    signal(&sup, "TERM");
    let out = finish(sup);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "killed before the grace period: {took:?}"
    );
    assert!(
        took < Duration::from_secs(9),
        "the grace period was not the one set: {took:?}"
    );
}

/// As PID 1 of a new PID namespace (as in the bundle container), orphans are reaped: no
/// zombie is left once the orphaned process exits.
#[test]
fn orphans_are_reaped_as_pid_1() {
    let dir = tempfile::tempdir().unwrap();
    let ps = dir.path().join("ps.txt");
    let child = format!(
        "(sleep 0.2 &); (sleep 0.2 &); sleep 1.5; ps -eo pid=,stat=,comm= > {}; echo done >> {}; sleep 100",
        ps.display(),
        ps.display()
    );
    let sup = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_bottle-bundle"))
        .args(["init", "--child", &child])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) is needed, as root");
    let table = wait_for_file(&ps, "done");
    let _ = Command::new("kill").arg(sup.id().to_string()).status();
    let mut sup = sup;
    let _ = sup.kill();
    let _ = sup.wait();
    let pid1 = table
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap_or("");
    assert!(
        pid1.contains("bottle-bundle"),
        "supervisor is not PID 1: {table}"
    );
    let zombies: Vec<&str> = table
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|s| s.starts_with('Z'))
        })
        .collect();
    assert!(zombies.is_empty(), "zombies left: {zombies:?}\n{table}");
}

#[test]
fn run_refuses_a_config_without_roles() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../contract/tests/fixtures/bundle_config_full.json"),
    )
    .unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&fixture).unwrap();
    value["roles"] = serde_json::json!([]);
    value["pipelock"] = serde_json::Value::Null;
    std::fs::write(&cfg, value.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bottle-bundle"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`roles` is empty"), "{err}");
}

/// `bottle-bundle run` with the fixture config, pipelock being `script` (a shell script) on a
/// free loopback port and the given roles.
fn run_with_pipelock(dir: &Path, script: &str, roles: serde_json::Value) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin = dir.join("pipelock");
    std::fs::write(&bin, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../contract/tests/fixtures/bundle_config_full.json"),
    )
    .unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&fixture).unwrap();
    value["roles"] = roles;
    value["pipelock"]["binary"] = bin.display().to_string().into();
    value["pipelock"]["listen"] = format!("127.0.0.1:{port}").into();
    value["pipelock"]["ca_dir"] = "/nonexistent/roots".into();
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, value.to_string()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_bottle-bundle"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("BOTTLE_TEST_TOKEN_IN_ENV", "must-not-reach-pipelock")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, port)
}

/// A pipelock that exits before it listens stops the bundle at once, no role having started,
/// with pipelock's own stderr in the error (and no restart loop first).
#[test]
fn a_pipelock_that_cannot_start_fails_the_bundle_with_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let (child, _) = run_with_pipelock(
        dir.path(),
        "echo 'config: unknown field `bogus`' >&2; exit 2",
        serde_json::json!(["gate", "mcp"]),
    );
    let started = Instant::now();
    let out = finish(child);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pipelock could not start (exit code 2)"),
        "{err}"
    );
    assert!(err.contains("| config: unknown field `bogus`"), "{err}");
    assert!(
        !err.contains("child=gate") && !err.contains("child=mcp"),
        "a role started:\n{err}"
    );
}

/// Pipelock runs with none of the bundle's environment (only PATH, HOME and SSL_CERT_DIR, the
/// extra roots), and the bundle serves once it listens; SIGTERM stops it.
#[test]
fn pipelock_gets_an_empty_environment_and_is_stopped_with_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env.txt");
    let (child, port) = run_with_pipelock(
        dir.path(),
        &format!(
            "env > {}; exec python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\", int(\"'$5'\".split(\":\")[1]))); s.listen(); time.sleep(600)'",
            env_file.display()
        ),
        serde_json::json!([]),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "pipelock never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let env = std::fs::read_to_string(&env_file).unwrap();
    let mut names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| !["PWD", "SHLVL", "_"].contains(k))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["HOME", "PATH", "SSL_CERT_DIR"], "{env}");
    assert!(env.contains("SSL_CERT_DIR=/nonexistent/roots"), "{env}");
    assert!(!env.contains("must-not-reach-pipelock"));
    signal(&child, "TERM");
    let out = finish(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
