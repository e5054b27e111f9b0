//! `bottle-bundle gate hook pre-receive`: the one place a push is decided.
//!
//! git's `receive-pack` runs it with the pushed objects in a quarantine and the ref updates on
//! stdin. It checks the ref names, scans every new commit with the secret scanner, and only
//! then forwards the push to the upstream; it exits 0 only when the upstream took every ref.
//! Whatever goes wrong (missing config, scanner error, panic, timeout) ends in [`Decision::Deny`],
//! and anything it prints reaches the agent as `remote:` lines, so it prints no internals.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use crate::gate::forward::{self, ForwardError, ForwardFailure};
use crate::gate::settings::{GateSettings, Remote};
use crate::gate::upstream::{Transport, UpstreamFailure};
use crate::gate::{mirror, policy, verify};
use crate::scanner::{Budget, Finding, RefUpdate, Scanner};

/// Names the bundle config file (set by the gate on `receive-pack`, inherited by the hook; and
/// on every upstream git, for its transport `bottle-bundle ssh`).
pub(crate) const CONFIG_ENV: &str = "BOTTLE_GATE_CONFIG";
/// Names the remote being pushed to (or fetched from, for `bottle-bundle ssh`).
pub(crate) const REMOTE_ENV: &str = "BOTTLE_GATE_REMOTE";

/// Longest the resync of the mirror after an unclear forward may take.
const RESYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Most findings listed to the agent; the rest are counted.
const MAX_FINDINGS_SHOWN: usize = 20;

/// The hook's verdict.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Scanned clean and the upstream holds every ref: the gate may update its refs. The
    /// message says what the upstream took (should the gate's own ref update fail after this
    /// hook, the pusher still knows the upstream has the push).
    Allow { message: String, detail: String },
    /// Refused: the message is for the agent, the detail for the gate's hook log.
    Deny { message: String, detail: String },
}

fn deny(message: impl Into<String>) -> Decision {
    let message = message.into();
    Decision::Deny {
        detail: message.clone(),
        message,
    }
}

/// Runs the hook: reads stdin, decides, reports. A panic anywhere inside is a denial.
pub(crate) fn main() -> ExitCode {
    let started = Instant::now();
    // The default panic message (file, line, internals) would reach the agent: keep it quiet
    // and turn the panic into a denial below.
    std::panic::set_hook(Box::new(|_| {}));
    let decision = std::panic::catch_unwind(decide).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Decision::Deny {
            message: "bottle gate: push rejected: the gate's pre-receive check crashed; nothing was sent upstream".into(),
            detail: format!("panic: {what}"),
        }
    });
    let (code, outcome, message, detail) = match decision {
        Decision::Allow { message, detail } => (ExitCode::SUCCESS, "accepted", message, detail),
        Decision::Deny { message, detail } => (ExitCode::FAILURE, "rejected", message, detail),
    };
    if !message.is_empty() {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{message}");
    }
    append_log(outcome, &detail, started);
    code
}

/// Appends one line to the hook log next to the mirrors (the hook's stderr goes to the agent,
/// so its detail cannot go there).
fn append_log(outcome: &str, detail: &str, started: Instant) {
    let Ok(config) = std::env::var(CONFIG_ENV) else {
        return;
    };
    let Ok(settings) = load_settings(Path::new(&config)) else {
        return;
    };
    let path = settings.mirrors_dir.join(".gate").join("hook.log");
    let remote = std::env::var(REMOTE_ENV).unwrap_or_default();
    let line = format!(
        "{} remote={remote:?} outcome={outcome} millis={} detail={detail:?}\n",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
        started.elapsed().as_millis(),
    );
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

fn load_settings(path: &Path) -> Result<GateSettings, String> {
    let config = crate::config::load_config(path).map_err(|e| e.to_string())?;
    GateSettings::from_contract(&config.gate).map_err(|e| e.to_string())
}

fn decide() -> Decision {
    let Some(config_path) = std::env::var_os(CONFIG_ENV).map(PathBuf::from) else {
        return deny(format!(
            "bottle gate: push rejected: the gate hook is misconfigured ({CONFIG_ENV} is not set); nothing was sent upstream"
        ));
    };
    let settings = match load_settings(&config_path) {
        Ok(s) => s,
        Err(e) => {
            return Decision::Deny {
                message: "bottle gate: push rejected: the gate cannot read its configuration; nothing was sent upstream".into(),
                detail: e,
            };
        }
    };
    let name = std::env::var(REMOTE_ENV).unwrap_or_default();
    let Some(remote) = settings.remote(&name) else {
        return deny(format!(
            "bottle gate: push rejected: {name:?} is not a configured repository; nothing was sent upstream"
        ));
    };
    let updates = match read_updates(std::io::stdin().lock()) {
        Ok(u) => u,
        Err(e) => return deny(format!("bottle gate: push rejected: {e}")),
    };
    let transport = match std::env::current_exe() {
        Ok(program) => Transport {
            program,
            config_path,
        },
        Err(e) => {
            return Decision::Deny {
                message: "bottle gate: push rejected: internal error; nothing was sent upstream"
                    .into(),
                detail: format!("cannot find the bundle binary: {e}"),
            };
        }
    };
    decide_updates(&settings, &transport, remote, &updates)
}

fn read_updates(input: impl BufRead) -> Result<Vec<RefUpdate>, String> {
    let mut updates = Vec::new();
    for line in input.lines() {
        let line = line.map_err(|e| format!("cannot read the ref updates: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        updates.push(RefUpdate::parse(&line).map_err(|e| e.to_string())?);
    }
    if updates.is_empty() {
        return Err("no ref updates were received".into());
    }
    Ok(updates)
}

/// Which refs an agent may push.
pub(crate) fn refname_allowed(refname: &str) -> bool {
    let Some(rest) = refname
        .strip_prefix("refs/heads/")
        .or_else(|| refname.strip_prefix("refs/tags/"))
    else {
        return false;
    };
    !rest.is_empty() && git2::Reference::is_valid_name(refname)
}

fn decide_updates(
    settings: &GateSettings,
    transport: &Transport,
    remote: &Remote,
    updates: &[RefUpdate],
) -> Decision {
    let refused: Vec<&str> = updates
        .iter()
        .filter(|u| !refname_allowed(&u.refname))
        .map(|u| u.refname.as_str())
        .collect();
    if !refused.is_empty() {
        return deny(format!(
            "bottle gate: push rejected: only refs/heads/* and refs/tags/* may be pushed (refused: {}); nothing was sent upstream",
            refused.join(", ")
        ));
    }
    let repo = match git2::Repository::open_from_env() {
        Ok(r) => r,
        Err(e) => {
            return Decision::Deny {
                message: "bottle gate: push rejected: the gate could not open the pushed objects; nothing was sent upstream".into(),
                detail: e.to_string(),
            };
        }
    };
    if let Some(message) = policy::check(&repo, remote, updates) {
        return deny(message);
    }
    let scanner = match &settings.scanner_rules {
        Some(path) => Scanner::from_file(path),
        None => Scanner::builtin(),
    };
    let scanner = match scanner {
        Ok(s) => s,
        Err(e) => {
            return Decision::Deny {
                message: "bottle gate: push rejected: the secret scanner's rules could not be loaded; nothing was sent upstream".into(),
                detail: e.to_string(),
            };
        }
    };
    let started = Instant::now();
    let budget = Budget::new(settings.push_limit(remote), settings.push_timeout);
    let findings = match scanner.scan_push(&repo, updates, &budget) {
        Ok(f) => f,
        Err(crate::scanner::ScanError::OverBudget { what }) => {
            return deny(format!(
                "bottle gate: push rejected: it is too large to scan within the gate's limits ({what}); push fewer or smaller commits. Nothing was sent upstream.\n{}",
                crate::gate::oversize::raise_hint(settings, remote)
            ));
        }
        Err(e) => {
            return Decision::Deny {
                message:
                    "bottle gate: push rejected: the secret scan failed; nothing was sent upstream"
                        .into(),
                detail: e.to_string(),
            };
        }
    };
    if !findings.is_empty() {
        return Decision::Deny {
            message: findings_message(&findings),
            detail: findings
                .iter()
                .map(|f| {
                    format!(
                        "{} {}:{} {}",
                        f.rule_id,
                        f.file,
                        f.start_line,
                        f.fingerprint()
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        };
    }
    let Some(remaining) = settings.push_timeout.checked_sub(started.elapsed()) else {
        return deny(
            "bottle gate: push rejected: the gate's time limit ran out; nothing was sent upstream",
        );
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return Decision::Deny {
                message: "bottle gate: push rejected: internal error; nothing was sent upstream"
                    .into(),
                detail: e.to_string(),
            };
        }
    };
    let git_dir = settings.mirror_path(remote);
    match runtime.block_on(forward::forward(
        settings, transport, remote, &git_dir, updates, remaining,
    )) {
        Ok(()) => Decision::Allow {
            message: accepted_message(updates),
            detail: String::new(),
        },
        Err(ForwardFailure { error, detail }) => match error.unclear() {
            Some(failure) => settle_unclear_forward(
                &runtime, settings, transport, remote, updates, failure, detail,
            ),
            None => Decision::Deny {
                message: forward_message(&error),
                detail,
            },
        },
    }
}

/// After a forward that may have landed: asks the upstream where each ref is. If every ref is
/// where the push put it, the push did land and is allowed (the gate's refs then follow the
/// upstream's); otherwise it is refused with what was found, and the mirror is refreshed from
/// the upstream so the gate serves what the upstream holds.
fn settle_unclear_forward(
    runtime: &tokio::runtime::Runtime,
    settings: &GateSettings,
    transport: &Transport,
    remote: &Remote,
    updates: &[RefUpdate],
    failure: UpstreamFailure,
    forward_detail: String,
) -> Decision {
    let found = runtime.block_on(verify::upstream_refs(
        settings,
        transport,
        remote,
        verify::CHECK_TIMEOUT,
    ));
    let outcomes = verify::compare(updates, found.as_ref().ok());
    let check = match &found {
        Ok(_) => format!("check: {outcomes:?}"),
        Err(f) => format!("check failed: {f:?}"),
    };
    if outcomes.iter().all(|o| *o == verify::RefOutcome::Landed) {
        return Decision::Allow {
            message: verify::message(failure, updates, &outcomes, false),
            detail: format!("{forward_detail}; {check}"),
        };
    }
    // Not on an `Allow`: receive-pack would then move the refs from their old values itself.
    let resynced = runtime.block_on(mirror::refresh(settings, transport, remote, RESYNC_TIMEOUT));
    Decision::Deny {
        message: verify::message(failure, updates, &outcomes, resynced.is_ok()),
        detail: format!("{forward_detail}; {check}; resync: {resynced:?}"),
    }
}

/// What the pusher is told after a forward the upstream took.
fn accepted_message(updates: &[RefUpdate]) -> String {
    let names: Vec<&str> = updates.iter().map(|u| u.refname.as_str()).collect();
    format!(
        "bottle gate: scanned clean; the upstream accepted {}",
        names.join(", ")
    )
}

/// The agent's message for a push the scanner refused.
pub(crate) fn findings_message(findings: &[Finding]) -> String {
    let mut msg = format!(
        "bottle gate: push rejected by the secret scanner: {} finding(s); nothing was sent upstream.\n",
        findings.len()
    );
    for f in findings.iter().take(MAX_FINDINGS_SHOWN) {
        let commit: String = f.commit.chars().take(12).collect();
        msg.push_str(&format!(
            "  rule {}  {}:{}  commit {}  match {}\n",
            f.rule_id,
            f.file,
            f.start_line,
            commit,
            f.redacted_match()
        ));
    }
    if findings.len() > MAX_FINDINGS_SHOWN {
        msg.push_str(&format!(
            "  … and {} more\n",
            findings.len() - MAX_FINDINGS_SHOWN
        ));
    }
    let tags = tags_with_findings(findings);
    if tags.len() < findings.len() {
        msg.push_str(
            "To fix: remove the secret and rewrite the commit that added it (`git commit --amend`, or `git rebase -i` for an older commit), then push again.\n",
        );
    }
    for tag in &tags {
        msg.push_str(&format!(
            "To fix the annotated tag {tag}: recreate it without the secret, `git tag -f -a {tag} -m '<new message>' {tag}^{{}}`, then push it again (it never reached the upstream).\n"
        ));
    }
    msg.push_str("If a finding is a false positive, add a `gitleaks:allow` comment on that line.");
    msg
}

/// The tags (short names) whose own object holds a finding: the scanner reports those as
/// file `(tag refs/tags/<name>)`.
fn tags_with_findings(findings: &[Finding]) -> Vec<String> {
    let mut tags: Vec<String> = findings
        .iter()
        .filter_map(|f| f.file.strip_prefix("(tag refs/tags/")?.strip_suffix(')'))
        .map(str::to_owned)
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

/// The agent's message for a push the upstream did not take.
fn forward_message(err: &ForwardError) -> String {
    match err {
        ForwardError::Upstream(failure) => format!(
            "bottle gate: push not forwarded: {}; nothing was pushed and the gate's refs did not move",
            failure.describe()
        ),
        ForwardError::Rejected { refs, remote_lines } => {
            let mut msg = String::from(
                "bottle gate: the upstream rejected the push; nothing was pushed and the gate's refs did not move.\n",
            );
            for (refname, reason) in refs {
                msg.push_str(&format!("  {refname}: {reason}\n"));
            }
            for line in remote_lines {
                msg.push_str(&format!("  upstream: {line}\n"));
            }
            msg.push_str("Fetch, rebase or merge, and push again.");
            msg
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rejection_hides_every_secret_on_a_shown_line() {
        // Built at run time, so no literal token sits in the source.
        let gh = ["gh", "p_"].concat() + "Zq8vXw2LmN4pR7sT9uV1yB3cHk3jW9qPzX7m";
        let stripe = ["sk", "_live_"].concat() + "Hk3jW9qPzX7mT2vB8nL5rY6d";
        let line = format!("let t = \"{gh}\"; let s = \"{stripe}\";\n");
        let Ok(scanner) = crate::scanner::Scanner::builtin() else {
            panic!("built-in rules");
        };
        let found = scanner.scan_text("a.rs", line.as_bytes());
        assert!(found.len() >= 2, "{found:?}");
        let msg = findings_message(&found);
        for secret in [&gh, &stripe] {
            assert!(!msg.contains(&secret[8..]), "{msg}");
        }
    }

    #[test]
    fn refnames() {
        for ok in ["refs/heads/main", "refs/heads/feature/x", "refs/tags/v1.0"] {
            assert!(refname_allowed(ok), "{ok}");
        }
        for bad in [
            "refs/notes/commits",
            "refs/meta/config",
            "HEAD",
            "refs/heads/",
            "refs/heads/a..b",
            "refs/pull/1/head",
            "refs/remotes/origin/main",
        ] {
            assert!(!refname_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn updates_input() {
        let z = "0".repeat(40);
        let a = "1".repeat(40);
        let ok = read_updates(format!("{z} {a} refs/heads/main\n").as_bytes()).unwrap();
        assert_eq!(ok.len(), 1);
        assert!(read_updates(&b""[..]).is_err());
        assert!(read_updates(&b"garbage\n"[..]).is_err());
    }
}
