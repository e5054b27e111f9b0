//! What to tell the pusher when a forward ended without a clear answer.
//!
//! A forward that timed out, lost its connection or failed after the pack went out may still
//! have landed: the upstream updates its refs before its own post-receive hooks run and before
//! it reports back. Saying "nothing was pushed" then is a lie the agent acts on (it pushes
//! again, or gives up on work that is published). So the hook asks the upstream where the
//! pushed refs are now (`git ls-remote`, same key and pin, short time limit) and reports each
//! ref as it found it.

use std::collections::HashMap;
use std::time::Duration;

use git2::Oid;

use crate::gate::settings::{GateSettings, Remote};
use crate::gate::upstream::{self, Transport, UpstreamFailure};
use crate::scanner::RefUpdate;

/// Longest the check (`git ls-remote`) may take: the pusher is already waiting.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// Where one pushed ref was found on the upstream after an unclear forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RefOutcome {
    /// At the pushed commit (absent, for a delete): the upstream took it.
    Landed,
    /// Still where the push started from: the upstream did not take it (yet).
    Unchanged,
    /// Somewhere else (`None`: absent): someone else moved it.
    Elsewhere(Option<Oid>),
    /// The upstream could not be asked.
    Unknown,
}

/// Asks the upstream for its branches and tags: ref name → object id (tags unpeeled).
pub(crate) async fn upstream_refs(
    settings: &GateSettings,
    transport: &Transport,
    remote: &Remote,
    timeout: Duration,
) -> Result<HashMap<String, Oid>, UpstreamFailure> {
    upstream::require_pin(remote)?;
    let mut cmd = upstream::upstream_git(settings, transport, remote);
    cmd.args(["ls-remote", "--refs", "--"])
        .arg(&remote.upstream)
        .args(["refs/heads/*", "refs/tags/*"])
        .stdin(std::process::Stdio::null());
    let out = match upstream::run_bounded(cmd, timeout).await {
        Err(upstream::RunError::TimedOut) => return Err(UpstreamFailure::TimedOut),
        Err(upstream::RunError::Io(e)) => {
            tracing::error!(remote = %remote.name, error = %e, "cannot run git ls-remote");
            return Err(UpstreamFailure::Other);
        }
        Ok(out) => out,
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        tracing::warn!(
            remote = %remote.name,
            stderr = %upstream::redact(stderr.trim(), remote),
            "checking the upstream's refs failed"
        );
        return Err(UpstreamFailure::classify(&stderr));
    }
    Ok(parse_ls_remote(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `git ls-remote` output: `<oid>\t<ref>` per line; other lines are skipped.
pub(crate) fn parse_ls_remote(stdout: &str) -> HashMap<String, Oid> {
    stdout
        .lines()
        .filter_map(|line| {
            let (oid, name) = line.split_once('\t')?;
            Some((name.to_owned(), Oid::from_str(oid).ok()?))
        })
        .collect()
}

/// Compares each update with the upstream's refs (`None`: the upstream could not be asked).
pub(crate) fn compare(
    updates: &[RefUpdate],
    upstream: Option<&HashMap<String, Oid>>,
) -> Vec<RefOutcome> {
    let as_oid = |oid: Oid| (!oid.is_zero()).then_some(oid);
    updates
        .iter()
        .map(|u| {
            let Some(refs) = upstream else {
                return RefOutcome::Unknown;
            };
            let now = refs.get(&u.refname).copied();
            if now == as_oid(u.new) {
                RefOutcome::Landed
            } else if now == as_oid(u.old) {
                RefOutcome::Unchanged
            } else {
                RefOutcome::Elsewhere(now)
            }
        })
        .collect()
}

fn short(oid: Oid) -> String {
    oid.to_string().chars().take(12).collect()
}

/// One line for the pusher about one ref.
pub(crate) fn describe(update: &RefUpdate, outcome: &RefOutcome) -> String {
    let name = &update.refname;
    match outcome {
        RefOutcome::Landed if update.new.is_zero() => {
            format!("the upstream deleted {name} although the gate lost the reply")
        }
        RefOutcome::Landed => format!(
            "the upstream accepted {name} although the gate lost the reply (it is at {})",
            short(update.new)
        ),
        RefOutcome::Unchanged if update.old.is_zero() => {
            format!("{name}: not taken: the upstream still has no such ref")
        }
        RefOutcome::Unchanged => format!(
            "{name}: not taken: the upstream still has {}",
            short(update.old)
        ),
        RefOutcome::Elsewhere(Some(oid)) => format!(
            "{name}: the upstream has {}, which is neither the pushed commit nor where the push started",
            short(*oid)
        ),
        RefOutcome::Elsewhere(None) => {
            format!("{name}: the upstream no longer has this ref")
        }
        RefOutcome::Unknown => {
            format!("{name}: could not be determined (the upstream did not answer the check)")
        }
    }
}

/// The pusher's message after an unclear forward: what went wrong, then each ref as found.
/// `resynced` says whether the gate's copy was refreshed from the upstream afterwards.
pub(crate) fn message(
    failure: UpstreamFailure,
    updates: &[RefUpdate],
    outcomes: &[RefOutcome],
    resynced: bool,
) -> String {
    let all_landed = outcomes.iter().all(|o| *o == RefOutcome::Landed);
    let mut msg = if all_landed {
        format!(
            "bottle gate: the forward to the upstream failed ({}), but the upstream took the push:\n",
            failure.describe()
        )
    } else {
        format!(
            "bottle gate: push not confirmed: {}. The gate then asked the upstream where the pushed refs are:\n",
            failure.describe()
        )
    };
    for (update, outcome) in updates.iter().zip(outcomes) {
        msg.push_str("  ");
        msg.push_str(&describe(update, outcome));
        msg.push('\n');
    }
    if all_landed {
        msg.push_str("The gate's refs follow the upstream; nothing more to do.");
        return msg;
    }
    msg.push_str("The gate's refs did not move");
    msg.push_str(if resynced {
        "; its copy was refreshed from the upstream."
    } else {
        "; its copy could not be refreshed from the upstream."
    });
    msg.push_str(
        " Run `git fetch` and compare before pushing again: an upstream that is still working may yet apply the push.",
    );
    msg
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn oid(c: char) -> Oid {
        Oid::from_str(&c.to_string().repeat(40)).unwrap()
    }

    fn update(old: Oid, new: Oid, refname: &str) -> RefUpdate {
        RefUpdate {
            old,
            new,
            refname: refname.into(),
        }
    }

    fn check(upstream: Option<&str>, expect: Expect) {
        let z = Oid::ZERO_SHA1;
        let updates = [
            update(oid('1'), oid('2'), "refs/heads/main"),
            update(z, oid('3'), "refs/heads/new"),
            update(oid('4'), z, "refs/heads/gone"),
            update(oid('5'), oid('6'), "refs/tags/v1"),
        ];
        let refs = upstream.map(parse_ls_remote);
        let outcomes = compare(&updates, refs.as_ref());
        // A check that failed usually means the resync failed too.
        let resynced = upstream.is_some();
        expect.assert_eq(&message(
            UpstreamFailure::TimedOut,
            &updates,
            &outcomes,
            resynced,
        ));
    }

    #[test]
    fn every_ref_landed() {
        let ls = format!(
            "{}\trefs/heads/main\n{}\trefs/heads/new\n{}\trefs/tags/v1\n{}\trefs/heads/other\n",
            oid('2'),
            oid('3'),
            oid('6'),
            oid('9')
        );
        check(
            Some(&ls),
            expect![[r#"
                bottle gate: the forward to the upstream failed (the upstream did not answer in time), but the upstream took the push:
                  the upstream accepted refs/heads/main although the gate lost the reply (it is at 222222222222)
                  the upstream accepted refs/heads/new although the gate lost the reply (it is at 333333333333)
                  the upstream deleted refs/heads/gone although the gate lost the reply
                  the upstream accepted refs/tags/v1 although the gate lost the reply (it is at 666666666666)
                The gate's refs follow the upstream; nothing more to do."#]],
        );
    }

    #[test]
    fn nothing_landed_or_moved_elsewhere() {
        let ls = format!(
            "{}\trefs/heads/main\n{}\trefs/heads/gone\nnot a line\n",
            oid('1'),
            oid('4')
        );
        check(
            Some(&ls),
            expect![[r#"
                bottle gate: push not confirmed: the upstream did not answer in time. The gate then asked the upstream where the pushed refs are:
                  refs/heads/main: not taken: the upstream still has 111111111111
                  refs/heads/new: not taken: the upstream still has no such ref
                  refs/heads/gone: not taken: the upstream still has 444444444444
                  refs/tags/v1: the upstream no longer has this ref
                The gate's refs did not move; its copy was refreshed from the upstream. Run `git fetch` and compare before pushing again: an upstream that is still working may yet apply the push."#]],
        );
    }

    #[test]
    fn the_upstream_could_not_be_asked() {
        check(
            None,
            expect![[r#"
                bottle gate: push not confirmed: the upstream did not answer in time. The gate then asked the upstream where the pushed refs are:
                  refs/heads/main: could not be determined (the upstream did not answer the check)
                  refs/heads/new: could not be determined (the upstream did not answer the check)
                  refs/heads/gone: could not be determined (the upstream did not answer the check)
                  refs/tags/v1: could not be determined (the upstream did not answer the check)
                The gate's refs did not move; its copy could not be refreshed from the upstream. Run `git fetch` and compare before pushing again: an upstream that is still working may yet apply the push."#]],
        );
    }
}
