//! The upstream connection pool after a burst of agent connections: idle upstream connections
//! are bounded per host and closed after the idle timeout, so a burst does not leave upstream
//! connections open for good. The local upstream counts its open connections.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::{Env, Mode};

/// Agent connections in the burst.
const BURST: usize = 12;

/// `BURST` curl processes at once, each its own agent connection over HTTP/1.1 (so each
/// needs its own upstream connection), each holding its upstream connection for half a
/// second so none can be reused by another.
fn burst(env: &Env) {
    let url = env.url("open.test", "/sleep/500");
    let children: Vec<_> = (0..BURST)
        .map(|_| {
            std::process::Command::new("curl")
                .args(["-sS", "--http1.1", "--max-time", "20", "-o", "/dev/null"])
                .args(["-w", "%{http_code}", "-x", &env.proxy.url(), "--cacert"])
                .arg(&env.ca)
                .arg(&url)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("curl is required")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{out:?}");
    }
}

/// Polls `open` until it satisfies `done` or `within` passes; returns the last count.
fn wait_for_open(env: &Env, within: Duration, done: impl Fn(usize) -> bool) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let open = env.upstream.open.load(Ordering::SeqCst);
        if done(open) || Instant::now() >= deadline {
            return open;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn upstream_connections_close_after_the_idle_timeout() {
    let env = Env::start_with(Mode::Direct, &["--pool-idle-timeout-ms", "300"]);
    burst(&env);
    let peak = env.upstream.peak_open.load(Ordering::SeqCst);
    assert!(
        peak > 1,
        "the burst never needed a second upstream connection"
    );
    let open = wait_for_open(&env, Duration::from_secs(10), |open| open == 0);
    assert_eq!(
        open, 0,
        "{open} of {peak} upstream connections still open long after the idle timeout"
    );
    // The pool still works after it emptied.
    let (code, _, err) = env.curl(&[&env.url("open.test", "/after")]);
    assert_eq!(code, 200, "{err}");
}

#[test]
fn a_burst_leaves_at_most_max_idle_per_host_upstream_connections() {
    let env = Env::start_with(Mode::Direct, &["--pool-max-idle-per-host", "2"]);
    burst(&env);
    let peak = env.upstream.peak_open.load(Ordering::SeqCst);
    assert!(
        peak > 2,
        "the burst needed only {peak} upstream connections"
    );
    let open = wait_for_open(&env, Duration::from_secs(10), |open| open <= 2);
    assert!(open <= 2, "{open} of {peak} upstream connections stay open");
    // The ones kept are reused, not closed: the idle timeout here is the default minute.
    std::thread::sleep(Duration::from_millis(300));
    let open = env.upstream.open.load(Ordering::SeqCst);
    assert!((1..=2).contains(&open), "{open} upstream connections open");
}
