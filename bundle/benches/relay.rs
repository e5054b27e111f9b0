//! Relay throughput: 1 GiB through `relay::serve` (TCP -> Unix socket) against a direct
//! loopback TCP copy, each into a sink that counts bytes. Prints MB/s and the ratio.
//!
//!     cargo bench -p bottle-bundle --bench relay

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

const TOTAL: usize = 1024 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;
const ROUNDS: usize = 5;

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

fn best_of(addr: std::net::SocketAddr) -> Duration {
    (0..ROUNDS).map(|_| push(addr)).min().unwrap_or_default()
}

fn mb_s(d: Duration) -> f64 {
    TOTAL as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

fn main() {
    // Direct: TCP sink on loopback.
    let direct = TcpListener::bind("127.0.0.1:0").expect("bind");
    let direct_addr = direct.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in direct.incoming().flatten() {
            std::thread::spawn(move || sink(c));
        }
    });

    // Relayed: TCP -> relay -> Unix sink.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sink.sock");
    let unix = UnixListener::bind(&path).expect("bind unix");
    std::thread::spawn(move || {
        for c in unix.incoming().flatten() {
            std::thread::spawn(move || sink(c));
        }
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind relay");
    let relay_addr = listener.local_addr().expect("addr");
    let cancel = tokio_util::sync::CancellationToken::new();
    runtime.spawn(bottle_bundle::relay::serve(
        listener,
        path.clone(),
        cancel.clone(),
        std::sync::Arc::new(tokio::sync::Semaphore::new(
            bottle_bundle::relay::MAX_RELAYED,
        )),
    ));

    let d = best_of(direct_addr);
    let r = best_of(relay_addr);
    println!(
        "relay benchmark: {} MB, best of {ROUNDS}",
        TOTAL / (1024 * 1024)
    );
    println!(
        "  direct loopback TCP : {:8.1} MB/s ({:.3} s)",
        mb_s(d),
        d.as_secs_f64()
    );
    println!(
        "  through the relay   : {:8.1} MB/s ({:.3} s)",
        mb_s(r),
        r.as_secs_f64()
    );
    println!(
        "  relay / direct time : {:.2}x (target <= 1.5x)",
        r.as_secs_f64() / d.as_secs_f64()
    );
    cancel.cancel();
}
