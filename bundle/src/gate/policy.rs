//! The per-remote push policy: deletes and history rewrites are refused unless the remote's
//! manifest entry allows them (`AllowDelete`, `AllowForcePush`).
//!
//! Checked in pre-receive before anything reaches the upstream. The lease the forward puts on
//! every ref only guards against the upstream having moved; it does not stop the agent from
//! rewriting or deleting what the upstream holds, which is what this is for.

use git2::{Oid, Repository};

use crate::gate::settings::Remote;
use crate::scanner::RefUpdate;

/// What an update does to history, when it is more than adding to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rewrite {
    /// The ref is deleted.
    Delete,
    /// A branch moves to a commit that does not contain its old one.
    NonFastForward,
    /// An existing tag moves.
    TagMove,
}

/// How `update` changes history in `repo` (which sees the pushed objects); `None` for a plain
/// create or fast-forward.
pub(crate) fn rewrite(repo: &Repository, update: &RefUpdate) -> Option<Rewrite> {
    if update.old.is_zero() {
        return None;
    }
    if update.new.is_zero() {
        return Some(Rewrite::Delete);
    }
    if update.refname.starts_with("refs/tags/") {
        return Some(Rewrite::TagMove);
    }
    (!is_fast_forward(repo, update.old, update.new)).then_some(Rewrite::NonFastForward)
}

/// Whether `new` is a commit that contains the commit `old`. Anything git2 cannot answer (not
/// commits, missing objects) counts as not a fast-forward: refusing is the safe side.
fn is_fast_forward(repo: &Repository, old: Oid, new: Oid) -> bool {
    let (Ok(old), Ok(new)) = (repo.find_commit(old), repo.find_commit(new)) else {
        return false;
    };
    repo.graph_descendant_of(new.id(), old.id())
        .unwrap_or(false)
}

/// The agent's message when `remote` refuses some of `updates`; `None` when all may go.
pub(crate) fn check(repo: &Repository, remote: &Remote, updates: &[RefUpdate]) -> Option<String> {
    let refused: Vec<String> = updates
        .iter()
        .filter_map(|u| {
            let kind = rewrite(repo, u)?;
            let allowed = match kind {
                Rewrite::Delete => remote.allow_delete,
                Rewrite::NonFastForward | Rewrite::TagMove => remote.allow_force_push,
            };
            (!allowed).then(|| refusal(remote, u, &kind))
        })
        .collect();
    if refused.is_empty() {
        return None;
    }
    let mut msg = format!(
        "bottle gate: push rejected by the push policy of `{}`; nothing was sent upstream.\n",
        remote.name
    );
    for line in refused {
        msg.push_str("  ");
        msg.push_str(&line);
        msg.push('\n');
    }
    msg.push_str(
        "Push without deleting or rewriting what the upstream holds (fetch, then rebase or merge), or ask the operator to allow it.",
    );
    Some(msg)
}

fn short(oid: Oid) -> String {
    oid.to_string().chars().take(12).collect()
}

fn refusal(remote: &Remote, update: &RefUpdate, kind: &Rewrite) -> String {
    let name = &update.refname;
    let what = if name.starts_with("refs/tags/") {
        "tag"
    } else {
        "branch"
    };
    let (done, key) = match kind {
        Rewrite::Delete => (format!("deleting the {what} {name}"), "AllowDelete"),
        Rewrite::NonFastForward => (
            format!(
                "force-pushing {name} ({} is not an ancestor of the pushed {})",
                short(update.old),
                short(update.new)
            ),
            "AllowForcePush",
        ),
        Rewrite::TagMove => (
            format!(
                "moving the existing tag {name} (from {} to {})",
                short(update.old),
                short(update.new)
            ),
            "AllowForcePush",
        ),
    };
    format!(
        "{name}: {done} is refused; to allow it, set `{key}: true` on the `git:` entry `{}` of the bottle manifest",
        remote.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository with `a`, its child `b`, an unrelated root `c` and a blob.
    fn repo() -> (tempfile::TempDir, Repository, [Oid; 4]) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(tmp.path()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let tree = repo.treebuilder(None).unwrap().write().unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let a = repo.commit(None, &sig, &sig, "a", &tree, &[]).unwrap();
        let parent = repo.find_commit(a).unwrap();
        let b = repo
            .commit(None, &sig, &sig, "b", &tree, &[&parent])
            .unwrap();
        let c = repo.commit(None, &sig, &sig, "c", &tree, &[]).unwrap();
        let blob = repo.blob(b"x").unwrap();
        drop(tree);
        drop(parent);
        (tmp, repo, [a, b, c, blob])
    }

    #[test]
    fn rewrites() {
        let (_tmp, repo, [a, b, c, blob]) = repo();
        let z = Oid::ZERO_SHA1;
        let check = |old: Oid, new: Oid, refname: &str| {
            let update = RefUpdate {
                old,
                new,
                refname: refname.into(),
            };
            rewrite(&repo, &update)
        };
        assert_eq!(check(z, a, "refs/heads/new"), None);
        assert_eq!(check(z, a, "refs/tags/new"), None);
        assert_eq!(check(a, b, "refs/heads/main"), None);
        assert_eq!(
            check(b, a, "refs/heads/main"),
            Some(Rewrite::NonFastForward)
        );
        assert_eq!(
            check(a, c, "refs/heads/main"),
            Some(Rewrite::NonFastForward)
        );
        assert_eq!(
            check(a, blob, "refs/heads/main"),
            Some(Rewrite::NonFastForward)
        );
        assert_eq!(check(a, z, "refs/heads/main"), Some(Rewrite::Delete));
        assert_eq!(check(a, z, "refs/tags/v1"), Some(Rewrite::Delete));
        // A tag moving forward is still a moved tag.
        assert_eq!(check(a, b, "refs/tags/v1"), Some(Rewrite::TagMove));
    }
}
