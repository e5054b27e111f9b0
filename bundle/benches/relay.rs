//! Relay throughput, as the agent uses it, both ways. Upload: a client writes 1 GiB to the
//! relay's TCP port, which `relay::serve` forwards to a Unix-socket server, against the same
//! client writing to a TCP server on loopback directly; both servers count the bytes and
//! answer with the count after the client's half-close. Download: the server writes 1 GiB
//! and closes, the client counts what arrives. Runs alternate (direct, relayed, direct, ...)
//! so a change in the machine's load hits both; each pair is printed side by side, then the
//! medians and their ratio.
//!
//!     cargo bench -p bottle-bundle --bench relay
//!
//! `BOTTLE_RELAY_SPLICE=1` in the environment measures the relay's splice path instead of
//! its copy loop (the default).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

const TOTAL: usize = 1024 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;
const ROUNDS: usize = 9;
const TARGET: f64 = 1.2;

fn sink<S: Read + Write>(mut conn: S) {
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0usize;
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let _ = conn.write_all(&(n as u64).to_le_bytes());
}

/// Sends TOTAL bytes to `addr`, half-closes, waits for the sink's count; returns the time.
fn push(addr: std::net::SocketAddr) -> Duration {
    let chunk = vec![0x5au8; CHUNK];
    let start = Instant::now();
    let mut tcp = TcpStream::connect(addr).expect("connect");
    let mut sent = 0;
    while sent < TOTAL {
        tcp.write_all(&chunk).expect("write");
        sent += CHUNK;
    }
    tcp.shutdown(Shutdown::Write).expect("shutdown");
    let mut count = [0u8; 8];
    tcp.read_exact(&mut count).expect("count");
    assert_eq!(
        u64::from_le_bytes(count) as usize,
        TOTAL,
        "sink saw a short copy"
    );
    start.elapsed()
}

/// Serves TOTAL bytes to each connection, then closes it.
fn source<S: Write>(mut conn: S) {
    let chunk = vec![0xa5u8; CHUNK];
    let mut sent = 0;
    while sent < TOTAL {
        if conn.write_all(&chunk).is_err() {
            return;
        }
        sent += CHUNK;
    }
}

/// Reads from `addr` until it closes; checks TOTAL bytes came; returns the time.
fn pull(addr: std::net::SocketAddr) -> Duration {
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    let mut tcp = TcpStream::connect(addr).expect("connect");
    let mut got = 0usize;
    loop {
        match tcp.read(&mut buf).expect("read") {
            0 => break,
            k => got += k,
        }
    }
    assert_eq!(got, TOTAL, "the client saw a short copy");
    start.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn mb_s(d: Duration) -> f64 {
    TOTAL as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

/// One timed transfer through the address.
type Run = fn(std::net::SocketAddr) -> Duration;

/// A TCP listener on loopback whose connections `serve` handles, one thread each.
fn tcp_server(serve: fn(TcpStream)) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            std::thread::spawn(move || serve(c));
        }
    });
    addr
}

/// A Unix listener at `path` whose connections `serve` handles, one thread each.
fn unix_server(path: &std::path::Path, serve: fn(std::os::unix::net::UnixStream)) {
    let listener = UnixListener::bind(path).expect("bind unix");
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            std::thread::spawn(move || serve(c));
        }
    });
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cancel = tokio_util::sync::CancellationToken::new();
    // A relay in front of `path`, as the agent's relay is in front of the bundle's sockets.
    let relay_to = |path: std::path::PathBuf| {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind relay");
        let addr = listener.local_addr().expect("addr");
        runtime.spawn(bottle_bundle::relay::serve(
            listener,
            path,
            cancel.clone(),
            std::sync::Arc::new(tokio::sync::Semaphore::new(
                bottle_bundle::relay::MAX_RELAYED,
            )),
        ));
        addr
    };
    let sink_path = dir.path().join("sink.sock");
    unix_server(&sink_path, sink);
    let source_path = dir.path().join("source.sock");
    unix_server(&source_path, source);
    let directions: [(&str, Run, _, _); 2] = [
        (
            "agent -> bundle (upload)",
            push,
            tcp_server(sink),
            relay_to(sink_path),
        ),
        (
            "bundle -> agent (download)",
            pull,
            tcp_server(source),
            relay_to(source_path),
        ),
    ];

    let path_name = if std::env::var_os("BOTTLE_RELAY_SPLICE").is_some_and(|v| v == "1") {
        "splice path (BOTTLE_RELAY_SPLICE=1)"
    } else {
        "copy loop (the default)"
    };
    for (what, run, direct_addr, relay_addr) in directions {
        println!(
            "relay benchmark, {what}: {} MiB per run, {ROUNDS} alternating rounds, relay {path_name}",
            TOTAL / (1024 * 1024)
        );
        println!("  round   direct loopback TCP      through the relay        ratio");
        let (mut directs, mut relays) = (Vec::new(), Vec::new());
        for round in 1..=ROUNDS {
            let d = run(direct_addr);
            let r = run(relay_addr);
            println!(
                "  {round:5}   {:7.1} MB/s ({:.3} s)   {:7.1} MB/s ({:.3} s)   {:.2}x",
                mb_s(d),
                d.as_secs_f64(),
                mb_s(r),
                r.as_secs_f64(),
                r.as_secs_f64() / d.as_secs_f64()
            );
            directs.push(d);
            relays.push(r);
        }
        let (d, r) = (median(directs), median(relays));
        println!(
            "  median  {:7.1} MB/s ({:.3} s)   {:7.1} MB/s ({:.3} s)   {:.2}x (target <= {TARGET}x)",
            mb_s(d),
            d.as_secs_f64(),
            mb_s(r),
            r.as_secs_f64(),
            r.as_secs_f64() / d.as_secs_f64()
        );
    }
    cancel.cancel();
}
