//! SIGHUP is the bundle's "routes changed" signal: the PID-1 supervisor forwards it to every
//! role. Only the proxy reloads on it; the gate and the mcp server must simply survive it
//! (a role killed by SIGHUP would be restarted, dropping its connections, or stop the bundle).

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/mcp_config.rs"]
mod mcp_config;

use bottle_contract::bundle_config::Role;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_bottle-bundle");

fn config(dir: &Path, roles: Vec<Role>) -> std::path::PathBuf {
    let mut config = mcp_config::supervise_config(dir, "dev-hup01", roles);
    config.gate.listen.unix = Some(dir.join("gate.sock").display().to_string());
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_json()).unwrap();
    path
}

fn wait_for_socket(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(path).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited before listening"
        );
        assert!(
            Instant::now() < deadline,
            "{} never accepted",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

fn kill(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGHUP `times` times, each after the previous one was handled: `log` (a role's stderr
/// file) shows `line` once per signal, in every role that writes it (`per_signal` lines each).
fn hangup_and_wait(child: &Child, log: &Path, line: &str, per_signal: usize, times: usize) {
    for sent in 1..=times {
        kill(child, "HUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.matches(line).count() >= sent * per_signal {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "SIGHUP {sent} was not handled:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A stateless MCP `tools/list` over the Unix socket, as raw HTTP/1.1; the status line.
fn mcp_status_line(socket: &Path) -> String {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}}}})
    .to_string();
    let mut stream = UnixStream::connect(socket).unwrap();
    write!(
        stream,
        "POST /mcp HTTP/1.1\r\nHost: supervise:9100\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\n\
         Mcp-Method: tools/list\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.contains("egress-block"), "{response}");
    response.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn the_gate_survives_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), vec![Role::Gate]);
    let mut gate = Command::new(BIN)
        .args(["gate", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("gate.stderr")).unwrap())
        .spawn()
        .unwrap();
    let socket = dir.path().join("gate.sock");
    wait_for_socket(&socket, &mut gate);
    let log = dir.path().join("gate.stderr");
    hangup_and_wait(&gate, &log, "SIGHUP: the gate has nothing to reload", 1, 3);
    assert!(gate.try_wait().unwrap().is_none(), "SIGHUP killed the gate");
    UnixStream::connect(&socket).unwrap();
    kill(&gate, "TERM");
    assert!(wait_exit(&mut gate).success());
}

/// Through the real supervisor (`bottle-bundle run`, which starts `mcp --config …` and
/// `gate --config …`): SIGHUP reaches both, neither exits or is restarted, both still serve.
#[test]
fn run_forwards_sighup_and_no_role_dies() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), vec![Role::Mcp, Role::Gate]);
    let stderr_path = dir.path().join("run.stderr");
    let mut run = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .arg("--secrets")
        .arg(dir.path().join("no-secrets.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(run.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("mcp listening on unix") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "mcp never listened");
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let gate_socket = dir.path().join("gate.sock");
    let mcp_socket = dir.path().join("supervise.sock");
    wait_for_socket(&gate_socket, &mut run);
    assert!(mcp_status_line(&mcp_socket).contains("200"));

    // Each role logs "SIGHUP: ... nothing to reload" when the forwarded signal reaches it.
    hangup_and_wait(&run, &stderr_path, "nothing to reload", 2, 3);
    let log = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(!log.contains("exited unexpectedly"), "{log}");
    for role in ["mcp", "gate"] {
        let starts = log
            .lines()
            .filter(|l| l.contains("started") && l.contains(&format!("child={role}")))
            .count();
        assert_eq!(starts, 1, "{role} was restarted:\n{log}");
    }
    assert!(mcp_status_line(&mcp_socket).contains("200"));
    UnixStream::connect(&gate_socket).unwrap();

    kill(&run, "TERM");
    let status = wait_exit(&mut run);
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&stderr_path).unwrap()
    );
}
