//! `<manifest home>/audit.jsonl`: one JSON line per decision, appended, mode 0600.
//!
//! Each line says who decided what and when, and carries a unified diff of what changed: the
//! routes before and after (egress), the pipelock config (pipelock), the Dockerfile
//! (capability), and the operator's edit of the request. Nothing here can hold a token value:
//! routes carry slot names, and the secrets file is never diffed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One decision, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Seconds since the Unix epoch.
    pub(crate) time: u64,
    /// Who ran the launcher: `$USER`, else the account name of its uid.
    pub(crate) operator: String,
    pub(crate) identity: String,
    pub(crate) id: String,
    /// `egress`, `capability` or `pipelock`.
    pub(crate) kind: String,
    /// `approved` or `rejected`.
    pub(crate) verdict: String,
    pub(crate) reason: Option<String>,
    /// Unified diffs of what changed; empty when nothing did (a rejection).
    pub(crate) diff: String,
}

/// `<root>/audit.jsonl`.
pub(crate) fn path(root: &Path) -> PathBuf {
    root.join("audit.jsonl")
}

/// The operator's name: `$USER`, else the account name of the launcher's uid (`$USER` is
/// unset under cron, `env -i`, some sudo setups), else `uid <n>`.
pub(crate) fn operator() -> String {
    let uid = nix::unistd::Uid::current();
    operator_from(
        std::env::var("USER").ok(),
        uid.as_raw(),
        || match nix::unistd::User::from_uid(uid) {
            Ok(Some(user)) => Some(user.name),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!("cannot look up uid {uid}: {e}");
                None
            }
        },
    )
}

fn operator_from(
    user_var: Option<String>,
    uid: u32,
    account: impl FnOnce() -> Option<String>,
) -> String {
    user_var
        .filter(|u| !u.is_empty())
        .or_else(|| account().filter(|a| !a.is_empty()))
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Appends `entry` as one line.
pub(crate) fn append(root: &Path, entry: &Entry) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = path(root);
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let mut line = serde_json::to_string(entry)?;
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open the audit log {}", path.display()))?;
    // One write call per line, so concurrent appends do not interleave.
    file.write_all(line.as_bytes())
        .with_context(|| format!("cannot append to the audit log {}", path.display()))
}

/// A unified diff of `before` -> `after` under the names `name (before)` / `name (after)`;
/// empty when they are equal.
pub(crate) fn diff(name: &str, before: &str, after: &str) -> String {
    if before == after {
        return String::new();
    }
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{name} (before)"), &format!("{name} (after)"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_is_user_else_the_account_else_the_uid() {
        let account = || Some("bob".to_owned());
        assert_eq!(operator_from(Some("alice".into()), 7, account), "alice");
        assert_eq!(operator_from(Some(String::new()), 7, account), "bob");
        assert_eq!(operator_from(None, 7, account), "bob");
        assert_eq!(operator_from(None, 7, || None), "uid 7");
    }

    #[test]
    fn diff_is_unified_and_empty_when_nothing_changed() {
        let d = diff(
            "routes",
            "a.example paths=*\n",
            "a.example paths=*\nb.example paths=/x/\n",
        );
        expect_test::expect![[r#"
            --- routes (before)
            +++ routes (after)
            @@ -1 +1,2 @@
             a.example paths=*
            +b.example paths=/x/
        "#]]
        .assert_eq(&d);
        assert_eq!(diff("routes", "same\n", "same\n"), "");
    }

    #[test]
    fn entries_append_as_json_lines() {
        let root = tempfile::tempdir().unwrap();
        let entry = Entry {
            time: 1,
            operator: "alice".into(),
            identity: "dev-abcde".into(),
            id: "p-1".into(),
            kind: "egress".into(),
            verdict: "rejected".into(),
            reason: Some("not needed".into()),
            diff: String::new(),
        };
        append(root.path(), &entry).unwrap();
        append(root.path(), &entry).unwrap();
        let text = std::fs::read_to_string(path(root.path())).unwrap();
        let lines: Vec<Entry> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, [entry.clone(), entry]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path(root.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
