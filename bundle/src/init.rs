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
//!   is a bottle with less network, never more.
//!
//! It is synchronous on purpose: signals and `waitpid(-1)` do not mix with an async runtime's
//! own child reaping.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
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

/// One supervised child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// Shown in logs (`proxy`, `gate`, `pipelock`).
    pub name: String,
    pub program: String,
    pub args: Vec<String>,
}

/// The children `bottle-bundle run` starts for `config`: one per role, plus pipelock.
pub fn children_for(
    config: &BundleConfig,
    exe: &Path,
    config_path: &Path,
    secrets_path: &Path,
) -> Vec<ChildSpec> {
    let exe = exe.display().to_string();
    let cfg = config_path.display().to_string();
    let mut children = Vec::new();
    if let Some(p) = &config.pipelock {
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
        children.push(ChildSpec {
            name: name.into(),
            program: exe.clone(),
            args,
        });
    }
    children
}

/// Per-child bookkeeping.
struct Slot {
    spec: ChildSpec,
    pid: Option<Pid>,
    /// Exit times inside the crash window.
    crashes: Vec<Instant>,
    /// When a crashed child should be started again.
    restart_at: Option<Instant>,
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
    let mut slots: Vec<Slot> = children
        .into_iter()
        .map(|spec| Slot {
            spec,
            pid: None,
            crashes: Vec::new(),
            restart_at: Some(Instant::now()),
        })
        .collect();
    let mut stopping: Option<Instant> = None;
    let mut failure: Option<String> = None;

    loop {
        // Start what is due (never while stopping).
        if stopping.is_none() {
            let now = Instant::now();
            for slot in slots.iter_mut().filter(|s| s.pid.is_none()) {
                if slot.restart_at.is_some_and(|at| at <= now) {
                    slot.restart_at = None;
                    match spawn(&slot.spec) {
                        Ok(pid) => slot.pid = Some(pid),
                        Err(e) => {
                            tracing::error!(child = %slot.spec.name, error = %e, "cannot start");
                            record_crash(slot, &timings, &mut failure);
                        }
                    }
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

fn spawn(spec: &ChildSpec) -> std::io::Result<Pid> {
    let child = Command::new(&spec.program).args(&spec.args).spawn()?;
    let pid = Pid::from_raw(child.id() as i32);
    tracing::info!(child = %spec.name, pid = child.id(), "started");
    // The std handle is dropped without waiting: `reap` collects every exit with waitpid(-1).
    drop(child);
    Ok(pid)
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
        );
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
    }

    #[test]
    fn secrets_path_goes_only_to_the_proxy() {
        let c = config(vec![Role::Gate, Role::Mcp], false);
        let children = children_for(&c, Path::new("/bin/bb"), Path::new("/c"), Path::new("/s"));
        assert!(children.iter().all(|c| !c.args.contains(&"/s".to_owned())));
    }

    #[test]
    fn backoff_grows_then_gives_up() {
        let mut slot = Slot {
            spec: ChildSpec {
                name: "proxy".into(),
                program: "x".into(),
                args: vec![],
            },
            pid: None,
            crashes: vec![],
            restart_at: None,
        };
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
