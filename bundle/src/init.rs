//! `bottle-bundle run` as PID 1 of the bundle container: it keeps the role processes running
//! (called "init" here, not "supervise", which names the approval feature).
//!
//! Each role runs as its own child process (`bottle-bundle proxy|gate|mcp --config …`, and
//! pipelock when configured), so a crash in one role cannot corrupt another. The supervisor:
//! - reaps every child, including orphans re-parented to PID 1 (git leaves some behind);
//! - forwards SIGTERM/SIGINT to every child, waits [`Timings::stop_grace`], then SIGKILLs the rest;
//! - forwards SIGHUP (the proxy reloads its routes on it);
//! - restarts a role that exits on its own, after a growing delay, and gives up (exiting
//!   non-zero, which stops the container) when a role keeps failing: a bundle missing a role
//!   is a bottle with less network, never more;
//! - starts pipelock first, with an empty environment, and the roles only once it listens
//!   ([`ChildSpec::ready_at`]); a pipelock that ends before it ever listened fails the bundle
//!   at once with pipelock's own stderr (never a start with direct egress).
//!
//! It is synchronous on purpose: signals and `waitpid(-1)` do not mix with an async runtime's
//! own child reaping.

use std::collections::{HashMap, VecDeque};
use std::io::BufRead as _;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};

use bottle_contract::bundle_config::{BundleConfig, Role};

/// A role that exits this many times within [`Timings::crash_window`] stops the bundle.
pub const MAX_CRASHES: usize = 5;

/// The loop's waits. The bundle runs with [`Timings::default`]; `init` takes others so tests of
/// the loop need not wait in real time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long children get between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// The window in which [`MAX_CRASHES`] exits stop the bundle.
    pub crash_window: Duration,
    /// First restart delay; doubles per crash up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            stop_grace: Duration::from_secs(10),
            crash_window: Duration::from_secs(60),
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
        }
    }
}
/// How often the loop wakes to start pending restarts and check the stop deadline.
const TICK: Duration = Duration::from_millis(100);
/// Longest a child with [`ChildSpec::ready_at`] may take to listen at its first start.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one readiness probe (a TCP connect to loopback) may take.
const READY_PROBE_TIMEOUT: Duration = Duration::from_millis(100);
/// How many of its last stderr lines a failing child's error shows.
const STDERR_TAIL: usize = 20;
/// The `PATH` of a child started with a cleared environment.
const CLEAN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One supervised child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// Shown in logs (`proxy`, `gate`, `pipelock`).
    pub name: String,
    pub program: String,
    pub args: Vec<String>,
    /// `Some`: the child gets only these variables (and a plain `PATH`), not the bundle's.
    pub env: Option<Vec<(String, String)>>,
    /// Where the child listens once it is up. The children after it start only then, and a
    /// first start that ends (or does not listen within [`STARTUP_TIMEOUT`]) stops the bundle
    /// with the child's last stderr lines, which are also passed on to the bundle's stderr.
    pub ready_at: Option<SocketAddr>,
}

impl ChildSpec {
    /// A child that inherits the environment and gates nothing.
    pub fn plain(name: &str, program: &str, args: Vec<String>) -> ChildSpec {
        ChildSpec {
            name: name.to_owned(),
            program: program.to_owned(),
            args,
            env: None,
            ready_at: None,
        }
    }
}

/// The children `bottle-bundle run` starts for `config`: pipelock first (the roles wait
/// until it listens), then one per role.
pub fn children_for(
    config: &BundleConfig,
    exe: &Path,
    config_path: &Path,
    secrets_path: &Path,
) -> anyhow::Result<Vec<ChildSpec>> {
    let exe = exe.display().to_string();
    let cfg = config_path.display().to_string();
    let mut children = Vec::new();
    if let Some(p) = &config.pipelock {
        let listen: SocketAddr = p
            .listen
            .parse()
            .with_context(|| format!("pipelock.listen {:?} is not an address:port", p.listen))?;
        // Nothing of the bundle's environment: pipelock's DLP reads its own (`dlp.scan_env`),
        // and no token belongs there. HOME for its defaults, the extra roots Go reads.
        let mut env = vec![("HOME".to_owned(), "/var/lib/bottle".to_owned())];
        if let Some(dir) = &p.ca_dir {
            env.push(("SSL_CERT_DIR".to_owned(), dir.clone()));
        }
        children.push(ChildSpec {
            name: "pipelock".into(),
            program: p.binary.clone(),
            args: vec![
                "run".into(),
                "--config".into(),
                p.config.clone(),
                "--listen".into(),
                p.listen.clone(),
            ],
            env: Some(env),
            ready_at: Some(listen),
        });
    }
    for role in &config.roles {
        let (name, mut args) = match role {
            Role::Proxy => (
                "proxy",
                vec![
                    "proxy".to_owned(),
                    "--secrets".to_owned(),
                    secrets_path.display().to_string(),
                ],
            ),
            Role::Gate => ("gate", vec!["gate".to_owned()]),
            Role::Mcp => ("mcp", vec!["mcp".to_owned()]),
        };
        args.extend(["--config".to_owned(), cfg.clone()]);
        children.push(ChildSpec::plain(name, &exe, args));
    }
    Ok(children)
}

/// Per-child bookkeeping.
struct Slot {
    spec: ChildSpec,
    pid: Option<Pid>,
    /// Exit times inside the crash window.
    crashes: Vec<Instant>,
    /// When a crashed child should be started again.
    restart_at: Option<Instant>,
    /// With `ready_at`: whether it has listened since the bundle started, and when its first
    /// start began.
    ready: bool,
    started: Option<Instant>,
    /// With `ready_at`: the child's last stderr lines, and a receiver that ends when the
    /// thread copying them does.
    stderr: Option<StderrTail>,
}

impl Slot {
    fn new(spec: ChildSpec) -> Slot {
        Slot {
            spec,
            pid: None,
            crashes: Vec::new(),
            restart_at: Some(Instant::now()),
            ready: false,
            started: None,
            stderr: None,
        }
    }

    /// Whether the children after this one may start.
    fn lets_others_start(&self) -> bool {
        self.spec.ready_at.is_none() || self.ready
    }

    /// The child's last stderr lines, once its copying thread has seen the end (bounded).
    fn stderr_tail(&mut self) -> String {
        let Some((lines, done)) = self.stderr.take() else {
            return String::new();
        };
        let _ = done.recv_timeout(Duration::from_secs(1));
        let lines = lines.lock().unwrap_or_else(|e| e.into_inner());
        match lines.is_empty() {
            true => " (it printed nothing on stderr)".to_owned(),
            false => {
                let shown: Vec<String> = lines.iter().map(|l| format!("  | {l}")).collect();
                format!("; its stderr:\n{}", shown.join("\n"))
            }
        }
    }
}

/// Runs `children` until a stop signal (exit 0 once they are all gone) or until one keeps
/// crashing (an error naming it).
pub fn run_children(children: Vec<ChildSpec>, timings: Timings) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([SIGCHLD, SIGTERM, SIGINT, SIGHUP])
        .context("cannot install signal handlers")?;
    let handle = signals.handle();
    let watcher = std::thread::spawn(move || {
        for signal in signals.forever() {
            if tx.send(signal).is_err() {
                break;
            }
        }
    });

    let result = child_loop(children, timings, &rx);
    handle.close();
    let _ = watcher.join();
    result
}

fn child_loop(
    children: Vec<ChildSpec>,
    timings: Timings,
    signals: &mpsc::Receiver<i32>,
) -> anyhow::Result<()> {
    let mut slots: Vec<Slot> = children.into_iter().map(Slot::new).collect();
    let mut stopping: Option<Instant> = None;
    let mut failure: Option<String> = None;

    loop {
        // Start what is due (never while stopping), in order: a child that must listen
        // first holds back the ones after it.
        if stopping.is_none() {
            let now = Instant::now();
            for slot in slots.iter_mut() {
                if slot.pid.is_none() && slot.restart_at.is_some_and(|at| at <= now) {
                    slot.restart_at = None;
                    match spawn(&slot.spec) {
                        Ok((pid, stderr)) => {
                            slot.pid = Some(pid);
                            slot.stderr = stderr;
                            slot.started.get_or_insert(now);
                        }
                        Err(e) if !slot.lets_others_start() => {
                            failure.get_or_insert_with(|| {
                                format!("{} could not start: {e}", slot.spec.name)
                            });
                        }
                        Err(e) => {
                            tracing::error!(child = %slot.spec.name, error = %e, "cannot start");
                            record_crash(slot, &timings, &mut failure);
                        }
                    }
                }
                check_ready(slot, &mut failure);
                if !slot.lets_others_start() {
                    break;
                }
            }
        }
        if let Some(reason) = &failure
            && stopping.is_none()
        {
            tracing::error!(%reason, "stopping the bundle");
            stopping = Some(Instant::now());
            signal_all(&slots, Signal::SIGTERM);
        }

        match signals.recv_timeout(TICK) {
            Ok(SIGCHLD) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(SIGHUP) => signal_all(&slots, Signal::SIGHUP),
            Ok(SIGTERM | SIGINT) => {
                if stopping.is_none() {
                    tracing::info!("stop signal: stopping every role");
                    stopping = Some(Instant::now());
                    signal_all(&slots, Signal::SIGTERM);
                }
            }
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("the signal watcher stopped")
            }
        }

        reap(&mut slots, stopping.is_some(), &timings, &mut failure);

        if let Some(since) = stopping {
            if slots.iter().all(|s| s.pid.is_none()) {
                return match failure {
                    Some(reason) => Err(anyhow::anyhow!(reason)),
                    None => Ok(()),
                };
            }
            if since.elapsed() > timings.stop_grace {
                signal_all(&slots, Signal::SIGKILL);
            }
        }
    }
}

/// The last stderr lines of a child, and a receiver that ends with the copying thread.
type StderrTail = (Arc<Mutex<VecDeque<String>>>, mpsc::Receiver<()>);

fn spawn(spec: &ChildSpec) -> std::io::Result<(Pid, Option<StderrTail>)> {
    let mut command = Command::new(&spec.program);
    command.args(&spec.args);
    if let Some(env) = &spec.env {
        command
            .env_clear()
            .env("PATH", CLEAN_PATH)
            .envs(env.iter().cloned());
    }
    if spec.ready_at.is_some() {
        command.stderr(Stdio::piped());
    }
    let mut child = command.spawn()?;
    let pid = Pid::from_raw(child.id() as i32);
    tracing::info!(child = %spec.name, pid = child.id(), "started");
    let tail = child.stderr.take().map(|stderr| {
        let lines = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (name, kept) = (spec.name.clone(), lines.clone());
        std::thread::spawn(move || {
            // Passed on line by line, so the child's output is in the bundle's log too.
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("{name}: {line}");
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() == STDERR_TAIL {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
            drop(done_tx);
        });
        (lines, done_rx)
    });
    // The std handle is dropped without waiting: `reap` collects every exit with waitpid(-1).
    drop(child);
    Ok((pid, tail))
}

/// Marks a running child with `ready_at` ready once it accepts a connection there; past
/// [`STARTUP_TIMEOUT`] without, the bundle fails.
fn check_ready(slot: &mut Slot, failure: &mut Option<String>) {
    let (Some(addr), false, Some(_)) = (slot.spec.ready_at, slot.ready, slot.pid) else {
        return;
    };
    if TcpStream::connect_timeout(&addr, READY_PROBE_TIMEOUT).is_ok() {
        slot.ready = true;
        tracing::info!(child = %slot.spec.name, %addr, "listening");
    } else if slot.started.is_some_and(|t| t.elapsed() > STARTUP_TIMEOUT) {
        let name = slot.spec.name.clone();
        if let Some(pid) = slot.pid {
            let _ = kill(pid, Signal::SIGKILL);
        }
        let tail = slot.stderr_tail();
        failure.get_or_insert_with(|| {
            format!(
                "{name} did not listen on {addr} within {}s{tail}",
                STARTUP_TIMEOUT.as_secs()
            )
        });
    }
}

fn signal_all(slots: &[Slot], signal: Signal) {
    for pid in slots.iter().filter_map(|s| s.pid) {
        let _ = kill(pid, signal);
    }
}

/// Collects every exited process: our children (restarted or marked gone) and orphans.
fn reap(slots: &mut [Slot], stopping: bool, timings: &Timings, failure: &mut Option<String>) {
    let by_pid: HashMap<Pid, usize> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.pid.map(|p| (p, i)))
        .collect();
    loop {
        let (pid, how) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exit code {code}")),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, format!("signal {sig}")),
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        };
        let Some(&i) = by_pid.get(&pid) else {
            continue; // An orphan re-parented to us: reaped, nothing else to do.
        };
        let slot = &mut slots[i];
        slot.pid = None;
        if stopping {
            tracing::info!(child = %slot.spec.name, %how, "stopped");
        } else if !slot.lets_others_start() {
            // It never came up: its own words say why, and restarting will not help.
            let tail = slot.stderr_tail();
            tracing::error!(child = %slot.spec.name, %how, "could not start");
            failure
                .get_or_insert_with(|| format!("{} could not start ({how}){tail}", slot.spec.name));
        } else {
            tracing::warn!(child = %slot.spec.name, %how, "exited unexpectedly");
            record_crash(slot, timings, failure);
        }
    }
}

/// Counts a crash and schedules the restart, or records why the bundle must stop.
fn record_crash(slot: &mut Slot, timings: &Timings, failure: &mut Option<String>) {
    let now = Instant::now();
    slot.crashes
        .retain(|t| now.duration_since(*t) < timings.crash_window);
    slot.crashes.push(now);
    if slot.crashes.len() >= MAX_CRASHES {
        failure.get_or_insert_with(|| {
            format!(
                "{} failed {} times within {}s; giving up",
                slot.spec.name,
                slot.crashes.len(),
                timings.crash_window.as_secs()
            )
        });
        return;
    }
    let doubling = 1u32 << (slot.crashes.len() - 1).min(16);
    let delay = timings
        .first_backoff
        .saturating_mul(doubling)
        .min(timings.max_backoff);
    slot.restart_at = Some(now + delay);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_contract::bundle_config::*;

    fn config(roles: Vec<Role>, pipelock: bool) -> BundleConfig {
        let listen = Listen {
            tcp: None,
            unix: None,
        };
        BundleConfig {
            schema_version: bottle_contract::SCHEMA_VERSION,
            identity: "t-00000".into(),
            roles,
            proxy: ProxyConfig {
                listen: listen.clone(),
                ca_cert: "c".into(),
                ca_key: "k".into(),
                routes: vec![],
                outbound: Outbound::Direct {
                    allow_private: vec![],
                    extra_ca: None,
                },
                dlp: DlpMode::default(),
            },
            gate: GateConfig {
                listen,
                mirrors_dir: "m".into(),
                remotes: vec![],
                scanner_rules: None,
                max_push_bytes: 1,
                push_timeout_secs: 1,
            },
            supervise: None,
            pipelock: pipelock.then(|| PipelockConfig {
                binary: "/usr/local/bin/pipelock".into(),
                config: "/etc/bottle/pipelock.yaml".into(),
                listen: "127.0.0.1:8888".into(),
                ca_dir: Some("/etc/bottle/pipelock-roots".into()),
            }),
            audit_log: "a".into(),
        }
    }

    #[test]
    fn one_child_per_role_and_pipelock_first() {
        let c = config(vec![Role::Proxy, Role::Gate, Role::Mcp], true);
        let children = children_for(
            &c,
            Path::new("/bin/bb"),
            Path::new("/etc/c.json"),
            Path::new("/etc/s.json"),
        )
        .unwrap();
        let shown: Vec<String> = children
            .iter()
            .map(|c| format!("{} {} {}", c.name, c.program, c.args.join(" ")))
            .collect();
        assert_eq!(
            shown,
            [
                "pipelock /usr/local/bin/pipelock run --config /etc/bottle/pipelock.yaml --listen 127.0.0.1:8888",
                "proxy /bin/bb proxy --secrets /etc/s.json --config /etc/c.json",
                "gate /bin/bb gate --config /etc/c.json",
                "mcp /bin/bb mcp --config /etc/c.json",
            ]
        );
        // Pipelock gets none of the bundle's environment, gates the roles on its listener,
        // and trusts the extra roots through SSL_CERT_DIR.
        let pipelock = &children[0];
        assert_eq!(
            pipelock.env,
            Some(vec![
                ("HOME".to_owned(), "/var/lib/bottle".to_owned()),
                (
                    "SSL_CERT_DIR".to_owned(),
                    "/etc/bottle/pipelock-roots".to_owned()
                ),
            ])
        );
        assert_eq!(pipelock.ready_at, Some("127.0.0.1:8888".parse().unwrap()));
        assert!(
            children[1..]
                .iter()
                .all(|c| c.env.is_none() && c.ready_at.is_none())
        );
    }

    #[test]
    fn secrets_path_goes_only_to_the_proxy() {
        let c = config(vec![Role::Gate, Role::Mcp], false);
        let children =
            children_for(&c, Path::new("/bin/bb"), Path::new("/c"), Path::new("/s")).unwrap();
        assert!(children.iter().all(|c| !c.args.contains(&"/s".to_owned())));
    }

    #[test]
    fn backoff_grows_then_gives_up() {
        let mut slot = Slot::new(ChildSpec::plain("proxy", "x", vec![]));
        let mut failure = None;
        let mut delays = Vec::new();
        for _ in 0..MAX_CRASHES - 1 {
            let before = Instant::now();
            record_crash(&mut slot, &Timings::default(), &mut failure);
            delays.push(slot.restart_at.unwrap().duration_since(before));
        }
        assert!(failure.is_none());
        assert!(delays.windows(2).all(|w| w[0] < w[1]), "{delays:?}");
        record_crash(&mut slot, &Timings::default(), &mut failure);
        let reason = failure.unwrap();
        assert!(reason.contains("proxy failed 5 times"), "{reason}");
    }
}
