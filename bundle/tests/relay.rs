//! `bottle-bundle relay` as a real process: TCP on loopback in, a Unix socket out.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running relay; killed on drop.
struct Relay {
    child: Child,
    addrs: Vec<SocketAddr>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(sockets: &[&Path]) -> Relay {
    start_relay_with(sockets, &[])
}

fn start_relay_with(sockets: &[&Path], env: &[(&str, &str)]) -> Relay {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bottle-bundle"));
    cmd.arg("relay")
        .env_remove("BOTTLE_RELAY_SPLICE")
        .envs(env.iter().copied());
    for s in sockets {
        cmd.arg("--map").arg(format!("127.0.0.1:0={}", s.display()));
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut addrs = Vec::new();
    for _ in sockets {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        addrs.push(addr);
    }
    Relay { child, addrs }
}

/// A Unix-socket server that answers each connection with `handler`, on its own thread.
fn unix_server(path: &Path, handler: fn(UnixStream)) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let conn = conn.unwrap();
            std::thread::spawn(move || handler(conn));
        }
    });
}

fn echo(mut conn: UnixStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => conn.write_all(&buf[..n]).unwrap(),
        }
    }
}

/// Reads until EOF, then answers with the byte count: needs the client's half-close.
fn count_then_reply(mut conn: UnixStream) {
    let mut all = Vec::new();
    conn.read_to_end(&mut all).unwrap();
    write!(conn, "got {}", all.len()).unwrap();
}

fn sock(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn relays_bytes_both_ways_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir, "echo.sock");
    unix_server(&path, echo);
    let relay = start_relay(&[&path]);

    let mut tcp = TcpStream::connect(relay.addrs[0]).unwrap();
    let payload: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut tcp = tcp.try_clone().unwrap();
        let payload = payload.clone();
        std::thread::spawn(move || {
            tcp.write_all(&payload).unwrap();
            tcp.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    tcp.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "relayed bytes differ from what was sent");
}

#[test]
fn half_close_reaches_the_bundle_and_the_reply_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir, "count.sock");
    unix_server(&path, count_then_reply);
    let relay = start_relay(&[&path]);

    let mut tcp = TcpStream::connect(relay.addrs[0]).unwrap();
    tcp.write_all(&[7u8; 100_000]).unwrap();
    tcp.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "got 100000");
}

#[test]
fn missing_socket_closes_the_connection_and_recovers_when_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir, "late.sock");
    let relay = start_relay(&[&path]);

    // No bundle yet: the agent's connection is closed, with no data and no other route.
    let mut tcp = TcpStream::connect(relay.addrs[0]).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = tcp.write_all(b"GET / HTTP/1.1\r\n\r\n");
    let mut buf = [0u8; 16];
    let n = tcp.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected the relay to close the connection");

    // The bundle comes up: the same relay now forwards.
    unix_server(&path, echo);
    let mut tcp = TcpStream::connect(relay.addrs[0]).unwrap();
    tcp.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    tcp.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
}

#[test]
fn each_port_goes_to_its_own_socket() {
    let dir = tempfile::tempdir().unwrap();
    let a = sock(&dir, "a.sock");
    let b = sock(&dir, "b.sock");
    unix_server(&a, |mut c| c.write_all(b"from a").unwrap());
    unix_server(&b, |mut c| c.write_all(b"from b").unwrap());
    let relay = start_relay(&[&a, &b]);

    for (addr, want) in relay.addrs.iter().zip(["from a", "from b"]) {
        let mut tcp = TcpStream::connect(addr).unwrap();
        let mut got = String::new();
        tcp.read_to_string(&mut got).unwrap();
        assert_eq!(got, want);
    }
}

#[test]
fn bad_mapping_is_a_clear_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_bottle-bundle"))
        .args(["relay", "--map", "127.0.0.1:9099"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not ADDR=SOCKET"), "{err}");
}

/// The relaying child of `relay` (the process started binds the ports and supervises it).
fn child_pid(relay: &Relay) -> Option<u32> {
    let pid = relay.child.id();
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn wait_for_child(relay: &Relay, not: Option<u32>) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = child_pid(relay).filter(|p| Some(*p) != not) {
            return pid;
        }
        assert!(std::time::Instant::now() < deadline, "no relaying child");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn echo_once(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.write_all(b"ping")?;
    tcp.shutdown(Shutdown::Write)?;
    let mut got = Vec::new();
    tcp.read_to_end(&mut got)?;
    Ok(got)
}

#[test]
fn a_killed_relay_comes_back_and_its_port_is_never_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir, "echo.sock");
    unix_server(&path, echo);
    let relay = start_relay(&[&path]);
    let addr = relay.addrs[0];
    assert_eq!(echo_once(addr).unwrap(), b"ping");

    for _ in 0..3 {
        let first = wait_for_child(&relay, None);
        let status = Command::new("kill")
            .args(["-9", &first.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        // While no child relays, the port stays bound: nobody else can listen on it.
        let taken = std::net::TcpListener::bind(addr);
        assert!(
            taken.is_err(),
            "the relay's port was free after its child died"
        );
        let second = wait_for_child(&relay, Some(first));
        assert_ne!(first, second);
        // Connections made meanwhile wait in the backlog, then are relayed.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match echo_once(addr) {
                Ok(got) if got == b"ping" => break,
                other => assert!(
                    std::time::Instant::now() < deadline,
                    "the relay did not come back: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_killed_supervisor_takes_its_child_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir, "echo.sock");
    unix_server(&path, echo);
    let mut relay = start_relay(&[&path]);
    let child = wait_for_child(&relay, None);
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{child}/status")).exists()
        && !std::fs::read_to_string(format!("/proc/{child}/status"))
            .unwrap_or_default()
            .contains("State:\tZ")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the relaying child outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_burst_of_connections_leaves_the_relay_small_again() {
    use std::sync::mpsc;
    // Beyond what is served, the rest must fit the listen backlog (128), or their connects
    // would wait for the release below.
    const CONNECTIONS: usize = 320;
    const SERVED_AT_ONCE: usize = 256; // relay::MAX_RELAYED
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir, "echo.sock");
    unix_server(&path, echo);
    let relay = start_relay(&[&path]);
    let addr = relay.addrs[0];
    assert_eq!(echo_once(addr).unwrap(), b"ping");
    let child = wait_for_child(&relay, None);
    let before = rss_kib(child);

    // More connections than the relay serves at once, each moving data both ways (so its
    // buffers are in use) and then held open until released.
    let chunk = 300 * 1024;
    let (echoed, echoes) = mpsc::channel();
    let release = std::sync::Arc::new(std::sync::Barrier::new(CONNECTIONS + 1));
    let handles: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let echoed = echoed.clone();
            let release = release.clone();
            std::thread::spawn(move || {
                let tcp = TcpStream::connect(addr).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let served = std::thread::spawn({
                    let mut tcp = tcp.try_clone().unwrap();
                    move || {
                        tcp.write_all(&vec![7u8; chunk]).unwrap();
                        let mut got = vec![0u8; chunk];
                        tcp.read_exact(&mut got).unwrap();
                        let _ = echoed.send(());
                    }
                });
                release.wait();
                served.join().unwrap();
                tcp.shutdown(Shutdown::Both).unwrap();
            })
        })
        .collect();
    // Wait until the relay serves as many as it will, then measure it with all of them open.
    let mut served = 0;
    while echoes.recv_timeout(Duration::from_secs(2)).is_ok() {
        served += 1;
    }
    let peak = rss_kib(child);
    assert!(
        (16..=SERVED_AT_ONCE).contains(&served),
        "{served} connections were served at once"
    );
    assert!(
        peak < before + (SERVED_AT_ONCE as u64 * 2 * 256 + 16 * 1024),
        "the relay grew from {before} KiB to {peak} KiB"
    );
    release.wait();
    while served < CONNECTIONS {
        echoes.recv_timeout(Duration::from_secs(30)).unwrap();
        served += 1;
    }
    for h in handles {
        h.join().unwrap();
    }
    // Given back once the connections are gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = rss_kib(child);
        if now < before + 16 * 1024 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay kept {now} KiB after the burst (it started at {before} KiB, peaked at {peak} KiB)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pipe descriptors held by `pid`: the relay's splice path holds one pipe (two descriptors)
/// per direction of each connection it relays.
fn pipes_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|to| to.to_string_lossy().starts_with("pipe:"))
        })
        .count()
}

const EACH_WAY: usize = 8 * 1024 * 1024;

fn random(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).to_vec()
}

/// Streams [`EACH_WAY`] random bytes to the agent while reading the agent's to EOF, then
/// answers with the SHA-256 of what it sent and of what it read: the answer needs the
/// agent's half-close, and comes back after it.
fn stream_then_digest(mut conn: UnixStream) {
    let out = random(EACH_WAY);
    let sent = sha256(&out);
    let writer = {
        let mut conn = conn.try_clone().unwrap();
        std::thread::spawn(move || conn.write_all(&out).unwrap())
    };
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    conn.write_all(&sent).unwrap();
    conn.write_all(&sha256(&got)).unwrap();
}

/// Pipe counts of the relaying child around one exchange.
struct Pipes {
    idle: usize,
    relaying: usize,
}

/// [`EACH_WAY`] random bytes each way at once through `relay`, the agent shutting its write
/// half first and still reading the bundle's answer; checks every byte both ways.
fn exchange_checked(relay: &Relay) -> Pipes {
    let child = wait_for_child(relay, None);
    let idle = pipes_of(child);
    let mut tcp = TcpStream::connect(relay.addrs[0]).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let sent = random(EACH_WAY);
    let sent_digest = sha256(&sent);
    let writer = {
        let mut tcp = tcp.try_clone().unwrap();
        std::thread::spawn(move || {
            tcp.write_all(&sent).unwrap();
            tcp.shutdown(Shutdown::Write).unwrap();
        })
    };
    // The bundle's first byte is through: the relay is moving both directions now.
    let mut got = vec![0u8; 1];
    tcp.read_exact(&mut got).unwrap();
    let relaying = pipes_of(child);
    tcp.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), EACH_WAY + 64, "the answer is cut or padded");
    let (stream, digests) = got.split_at(EACH_WAY);
    assert!(
        sha256(stream) == digests[..32],
        "the bundle's bytes arrived changed"
    );
    assert!(
        digests[32..] == sent_digest,
        "the bundle got other bytes than the agent sent"
    );
    // The connection's pipes are closed with it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pipes_of(child) != idle {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay still holds {} pipes after the connection ended ({idle} before)",
            pipes_of(child)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Pipes { idle, relaying }
}

#[test]
fn spliced_connections_are_intact_both_ways_through_a_half_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir, "digest.sock");
    unix_server(&path, stream_then_digest);
    let relay = start_relay_with(&[&path], &[("BOTTLE_RELAY_SPLICE", "1")]);
    let pipes = exchange_checked(&relay);
    assert_eq!(
        pipes.relaying,
        pipes.idle + 4,
        "expected a pipe each way while relaying (BOTTLE_RELAY_SPLICE=1)"
    );
}

#[test]
fn copied_connections_are_intact_both_ways_through_a_half_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir, "digest.sock");
    unix_server(&path, stream_then_digest);
    let relay = start_relay(&[&path]);
    let pipes = exchange_checked(&relay);
    assert_eq!(
        pipes.relaying, pipes.idle,
        "the default path (the copy loop) spliced through pipes"
    );
}
