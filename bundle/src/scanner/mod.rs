//! The secret scanner: gitleaks-compatible rules, run in-process over git pushes, histories,
//! directories and text. Synchronous and network-free; the git gate calls it from its
//! pre-receive hook, and `bottle-bundle scan` from the command line.
//!
//! Layout: [`rules`] compiles gitleaks TOML (pure), `engine` detects in one fragment (pure),
//! `decode` peels base64/hex/percent layers (pure), `git` walks commits with git2, `objects`
//! and `packs` read raw objects (packs directly, for whole histories), `added` finds the
//! lines a new blob adds, `files` walks a directory, [`report`] formats findings, [`cli`] is
//! the `scan` subcommand.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bottle_bundle::scanner::{Budget, RefUpdate, Scanner};
//! // In a pre-receive hook: the repository as git sets it up, quarantine included.
//! let repo = git2::Repository::open_from_env()?;
//! let scanner = Scanner::builtin()?;
//! let mut updates = Vec::new();
//! for line in std::io::stdin().lines() {
//!     updates.push(RefUpdate::parse(&line?)?);
//! }
//! let budget = Budget::new(64 << 20, std::time::Duration::from_secs(30));
//! let findings = scanner.scan_push(&repo, &updates, &budget)?;
//! for f in &findings {
//!     println!("{} {}:{} {}", f.rule_id, f.file, f.start_line, f.redacted());
//! }
//! # Ok(()) }
//! ```

mod added;
mod bytes;
pub mod cli;
mod decode;
mod engine;
mod files;
mod finding;
mod git;
mod objects;
mod packs;
pub mod report;
pub mod rules;
mod tree_diff;
mod windows;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) use engine::shannon_entropy;
pub use finding::{Finding, redact};
pub use rules::RuleError;

use engine::{Engine, Fragment};

/// The built-in rule set, in gitleaks' format.
pub const DEFAULT_RULES: &str = include_str!("default_rules.toml");

/// How many nested encodings (base64 in hex in …) are peeled by default (gitleaks: 5).
pub const DEFAULT_DECODE_DEPTH: usize = 5;

/// Why a scan could not complete. The gate treats every one of these as "reject".
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    // Each cause is in its message, so it is not also the `source` (anyhow's `{:#}` would
    // print it twice).
    #[error("git: {what}: {error}")]
    Git { what: String, error: git2::Error },
    #[error("scan budget exceeded: {what}")]
    OverBudget { what: String },
    #[error("cannot read {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("bad input: {0}")]
    Input(String),
}

/// One ref update, as a pre-receive hook reads it from stdin (`old new refname`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// Zero when the ref is being created.
    pub old: git2::Oid,
    /// Zero when the ref is being deleted.
    pub new: git2::Oid,
    pub refname: String,
}

impl RefUpdate {
    /// Parses one pre-receive stdin line: `<old-oid> <new-oid> <refname>`.
    pub fn parse(line: &str) -> Result<RefUpdate, ScanError> {
        let mut parts = line.split_whitespace();
        let (Some(old), Some(new), Some(refname), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ScanError::Input(format!(
                "expected `<old> <new> <ref>`, got {:?}",
                line.chars().take(200).collect::<String>()
            )));
        };
        let oid = |s: &str| {
            git2::Oid::from_str(s)
                .map_err(|e| ScanError::Input(format!("bad object id {s:?}: {}", e.message())))
        };
        Ok(RefUpdate {
            old: oid(old)?,
            new: oid(new)?,
            refname: refname.to_owned(),
        })
    }
}

/// Limits on one scan. Going over is an error ([`ScanError::OverBudget`]), never a partial
/// pass: a push too large to scan is a push that is rejected.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Most bytes of added lines and messages to scan.
    pub max_bytes: u64,
    /// When to give up.
    pub deadline: Option<Instant>,
}

impl Budget {
    /// At most `max_bytes` scanned, finishing within `max_time` from now.
    pub fn new(max_bytes: u64, max_time: Duration) -> Budget {
        Budget {
            max_bytes,
            deadline: Some(Instant::now() + max_time),
        }
    }

    /// No limits (for `bottle-bundle scan` and benchmarks).
    pub fn unlimited() -> Budget {
        Budget {
            max_bytes: u64::MAX,
            deadline: None,
        }
    }
}

/// Compiled rules plus scan settings. Cheap to share by reference across threads.
#[derive(Debug)]
pub struct Scanner {
    engine: Engine,
    /// `.gitleaksignore` fingerprints.
    ignored: HashSet<String>,
    /// Worker threads for history scans; `None`: one per core.
    threads: Option<usize>,
}

impl Scanner {
    /// The built-in rule set.
    pub fn builtin() -> Result<Scanner, RuleError> {
        Scanner::from_toml("built-in rules", DEFAULT_RULES, None)
    }

    /// A gitleaks TOML file. `[extend] useDefault = true` pulls in the built-in rules;
    /// `[extend] path` is read relative to the file's directory.
    pub fn from_file(path: &Path) -> Result<Scanner, RuleError> {
        let text = std::fs::read_to_string(path).map_err(|e| RuleError::Config {
            origin: path.display().to_string(),
            problem: format!("cannot read: {e}"),
        })?;
        Scanner::from_toml(&path.display().to_string(), &text, path.parent())
    }

    /// A gitleaks TOML document; `origin` names it in errors, `base_dir` resolves
    /// `[extend] path` (without one, `path` is an error).
    pub fn from_toml(
        origin: &str,
        text: &str,
        base_dir: Option<&Path>,
    ) -> Result<Scanner, RuleError> {
        let mut resolve = |p: &str| -> Result<(String, String), RuleError> {
            let Some(dir) = base_dir else {
                return Err(RuleError::Config {
                    origin: origin.to_owned(),
                    problem: format!("[extend] path {p:?} cannot be resolved here"),
                });
            };
            let full = dir.join(p);
            let text = std::fs::read_to_string(&full).map_err(|e| RuleError::Config {
                origin: origin.to_owned(),
                problem: format!("[extend] path {}: cannot read: {e}", full.display()),
            })?;
            Ok((full.display().to_string(), text))
        };
        let rules = rules::compile(origin, text, DEFAULT_RULES, &mut resolve)?;
        Ok(Scanner {
            engine: Engine::new(rules, DEFAULT_DECODE_DEPTH),
            ignored: HashSet::new(),
            threads: None,
        })
    }

    /// Sets how many nested encodings are decoded (0 turns decoding off).
    pub fn with_decode_depth(mut self, depth: usize) -> Scanner {
        // Only the depth changes: rebuilding the engine (its keyword automaton and every
        // regex again) was a fifth of a one-commit push scan's instructions.
        self.engine.set_decode_depth(depth);
        self
    }

    /// Sets how many worker threads a history scan uses (at least 1; default one per core).
    /// The findings are the same whatever the number.
    pub fn with_threads(mut self, threads: usize) -> Scanner {
        self.threads = Some(threads.max(1));
        self
    }

    pub(crate) fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// Whether a fragment's findings can depend on its commit (an allowlist naming commits):
    /// then a blob pair scanned clean in one commit may still have findings in another.
    pub(crate) fn commit_dependent(&self) -> bool {
        let rules = self.engine.rules();
        rules
            .allowlists
            .iter()
            .chain(rules.rules.iter().flat_map(|r| r.allowlists.iter()))
            .any(|a| !a.commits.is_empty())
    }

    /// Drops findings whose fingerprint is listed (the lines of a `.gitleaksignore`;
    /// `#` comments and blank lines are skipped).
    pub fn with_ignore_list(mut self, text: &str) -> Scanner {
        self.ignored.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
        self
    }

    /// The rule file's `title`.
    pub fn title(&self) -> &str {
        &self.engine.rules().title
    }

    /// Number of rules loaded.
    pub fn rule_count(&self) -> usize {
        self.engine.rules().rules.len()
    }

    /// Ids of the rules loaded, in order.
    pub fn rule_ids(&self) -> Vec<&str> {
        self.engine
            .rules()
            .rules
            .iter()
            .map(|r| r.id.as_str())
            .collect()
    }

    /// (id, description) of every rule, for reports.
    pub fn rule_descriptions(&self) -> Vec<(&str, &str)> {
        self.engine
            .rules()
            .rules
            .iter()
            .map(|r| (r.id.as_str(), r.description.as_str()))
            .collect()
    }

    /// Scans one text as the contents of `path` (line numbers from 1).
    pub fn scan_text(&self, path: &str, text: &[u8]) -> Vec<Finding> {
        self.scan_fragment(&Fragment {
            text,
            path,
            commit: "",
            start_line: 1,
        })
    }

    /// Scans every regular file under `dir` (skipping `.git`), paths relative to `dir`.
    pub fn scan_dir(&self, dir: &Path) -> Result<Vec<Finding>, ScanError> {
        files::scan_dir(self, dir)
    }

    /// Scans one file (a regular file of at most the per-file limit).
    pub fn scan_file(&self, path: &Path) -> Result<Vec<Finding>, ScanError> {
        files::scan_file(self, path)
    }

    /// Scans what a push adds: the commits reachable from the updates' new ids and from no
    /// existing ref, each diffed against its first parent (roots against the empty tree),
    /// added lines only, each (old blob, new blob) pair once; plus their commit messages and
    /// any annotated tag messages. Works in a pre-receive quarantine when `repo` comes from
    /// `git2::Repository::open_from_env()`.
    pub fn scan_push(
        &self,
        repo: &git2::Repository,
        updates: &[RefUpdate],
        budget: &Budget,
    ) -> Result<Vec<Finding>, ScanError> {
        git::scan_push(self, repo, updates, budget)
    }

    /// Scans commits in `range` (`A..B`, or a single rev for its whole ancestry).
    pub fn scan_range(
        &self,
        repo: &git2::Repository,
        range: &str,
        budget: &Budget,
    ) -> Result<Vec<Finding>, ScanError> {
        git::scan_range(self, repo, range, budget)
    }

    /// Scans every commit reachable from any ref (or HEAD), using all available cores.
    pub fn scan_history(
        &self,
        repo: &git2::Repository,
        budget: &Budget,
    ) -> Result<Vec<Finding>, ScanError> {
        git::scan_history(self, repo, budget)
    }

    /// Only the path-only rules (a rule with a `path` and no `regex`, such as a `.p12` file
    /// rule), for a file whose content is not scanned (binary): gitleaks reports them.
    pub(crate) fn scan_path_rules(
        &self,
        path: &str,
        commit: &str,
        detected: &mut bool,
    ) -> Vec<Finding> {
        let frag = Fragment {
            text: b"",
            path,
            commit,
            start_line: 1,
        };
        let mut found = self.scan_fragment_noting(&frag, detected);
        found.retain(|f| f.start_line == 0);
        found
    }

    pub(crate) fn scan_fragment(&self, frag: &Fragment<'_>) -> Vec<Finding> {
        self.scan_fragment_noting(frag, &mut false)
    }

    /// [`Scanner::scan_fragment`], also setting `detected` when the rules found anything
    /// before the ignore list (whose fingerprints name a commit) dropped it.
    pub(crate) fn scan_fragment_noting(
        &self,
        frag: &Fragment<'_>,
        detected: &mut bool,
    ) -> Vec<Finding> {
        let mut found = self.engine.detect(frag);
        *detected |= !found.is_empty();
        if !self.ignored.is_empty() {
            found.retain(|f| {
                let short = format!("{}:{}:{}", f.file, f.rule_id, f.start_line);
                !self.ignored.contains(&f.fingerprint()) && !self.ignored.contains(&short)
            });
        }
        found
    }
}

#[cfg(test)]
mod tests;
