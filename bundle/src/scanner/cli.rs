//! `bottle-bundle scan`: scan a git repository, a directory or stdin, print a report.
//! Exit codes as gitleaks: 0 clean, 1 leaks found, 2 error.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::scanner::report::{self, Reveal};
use crate::scanner::{Budget, Finding, RefUpdate, Scanner};

/// Exit code when leaks are found (gitleaks' default).
pub const EXIT_LEAKS: u8 = 1;
/// Exit code on any error (bad rules, unreadable repository, ...).
pub const EXIT_ERROR: u8 = 2;

/// Default `--max-push-bytes`: 256 MiB of added lines.
pub const DEFAULT_PUSH_MAX_BYTES: u64 = 256 << 20;
/// Default `--push-timeout-secs`.
pub const DEFAULT_PUSH_TIMEOUT_SECS: u64 = 60;

/// Arguments of `bottle-bundle scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// A file or directory to scan (as gitleaks' `dir PATH`); the same as --dir for a
    /// directory. For a repository's history use --git.
    #[arg(value_name = "PATH", conflicts_with_all = ["git", "dir", "pre_receive"])]
    pub path: Option<PathBuf>,
    /// Scan the history of this git repository (all refs unless --range is given).
    #[arg(long, value_name = "REPO", conflicts_with = "dir")]
    pub git: Option<PathBuf>,
    /// With --git: only commits in this range (`A..B`, or one rev and its ancestry).
    #[arg(long, requires = "git", conflicts_with = "all")]
    pub range: Option<String>,
    /// With --git: every commit reachable from any ref (the default).
    #[arg(long, requires = "git")]
    pub all: bool,
    /// Run as a pre-receive hook: read `old new ref` lines from stdin, open the repository
    /// from git's environment (quarantine included) and scan only what the push adds.
    #[arg(long, conflicts_with_all = ["git", "dir"])]
    pub pre_receive: bool,
    /// With --pre-receive: most bytes of added lines to scan before rejecting the push.
    #[arg(long, default_value_t = DEFAULT_PUSH_MAX_BYTES, requires = "pre_receive")]
    pub max_push_bytes: u64,
    /// With --pre-receive: most seconds to spend before rejecting the push.
    #[arg(long, default_value_t = DEFAULT_PUSH_TIMEOUT_SECS, requires = "pre_receive")]
    pub push_timeout_secs: u64,
    /// Scan the files under this directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// With neither --git nor --dir, stdin is scanned; this names it in the report.
    #[arg(long, default_value = "stdin")]
    pub stdin_name: String,
    /// A gitleaks TOML rule file instead of the built-in rules.
    #[arg(long, short = 'c', value_name = "TOML")]
    pub config: Option<PathBuf>,
    /// Fingerprints to ignore (default: `.gitleaksignore` in the scanned repo or dir, if any).
    #[arg(long, value_name = "FILE")]
    pub ignore_file: Option<PathBuf>,
    /// Report format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the report here instead of stdout.
    #[arg(long, short = 'r', value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// How many nested encodings (base64, hex, percent) to decode; 0 turns decoding off.
    #[arg(long, default_value_t = crate::scanner::DEFAULT_DECODE_DEPTH)]
    pub max_decode_depth: usize,
    /// Print raw secrets in the report instead of redacting them.
    #[arg(long)]
    pub show_secrets: bool,
}

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Sarif,
}

/// Runs the subcommand; errors are printed here and become exit code 2.
pub fn run(args: &ScanArgs) -> ExitCode {
    match scan(args) {
        Ok(findings) if findings.is_empty() => {
            eprintln!("bottle-bundle scan: no leaks found");
            ExitCode::SUCCESS
        }
        Ok(findings) => {
            eprintln!("bottle-bundle scan: {} leak(s) found", findings.len());
            ExitCode::from(EXIT_LEAKS)
        }
        Err(e) => {
            eprintln!("bottle-bundle scan: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn scan(args: &ScanArgs) -> anyhow::Result<Vec<Finding>> {
    // Every object this process reads was hashed when it entered the repository (git's
    // index-pack checks each one it receives), so libgit2 re-hashing each read (about a tenth
    // of a history scan) buys nothing here. Process-wide, which is why it lives at the edge.
    git2::opts::strict_hash_verification(false);
    let started = std::time::Instant::now();
    let scanner = match &args.config {
        Some(path) => Scanner::from_file(path)?,
        None => Scanner::builtin()?,
    }
    .with_decode_depth(args.max_decode_depth);
    let dir = args
        .dir
        .as_deref()
        .or(args.path.as_deref().filter(|p| p.is_dir()));
    let file = args.path.as_deref().filter(|p| !p.is_dir());
    let root = args.git.as_deref().or(dir);
    let scanner = match ignore_list(args.ignore_file.as_deref(), root)? {
        Some(text) => scanner.with_ignore_list(&text),
        None => scanner,
    };
    let budget = Budget::unlimited();
    let findings = match (&args.git, dir) {
        _ if args.pre_receive => {
            let repo = git2::Repository::open_from_env()
                .context("opening the repository from git's environment")?;
            let mut updates = Vec::new();
            for line in std::io::stdin().lines() {
                let line = line.context("reading pre-receive stdin")?;
                if !line.trim().is_empty() {
                    updates.push(RefUpdate::parse(&line)?);
                }
            }
            let budget = Budget::new(
                args.max_push_bytes,
                std::time::Duration::from_secs(args.push_timeout_secs),
            );
            scanner.scan_push(&repo, &updates, &budget)?
        }
        (Some(repo_path), _) => {
            let repo = git2::Repository::open(repo_path)
                .with_context(|| format!("opening git repository {}", repo_path.display()))?;
            match &args.range {
                Some(range) => scanner.scan_range(&repo, range, &budget)?,
                None => scanner.scan_history(&repo, &budget)?,
            }
        }
        (None, Some(dir)) => scanner.scan_dir(dir)?,
        (None, None) => match file {
            Some(path) => {
                let meta = std::fs::metadata(path)
                    .with_context(|| format!("cannot scan {}", path.display()))?;
                anyhow::ensure!(
                    meta.is_file(),
                    "cannot scan {}: not a regular file or directory",
                    path.display()
                );
                scanner.scan_file(path)?
            }
            None => {
                let mut data = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut data)
                    .context("reading stdin")?;
                scanner.scan_text(&args.stdin_name, &data)
            }
        },
    };
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        findings = findings.len(),
        "scan finished"
    );
    let reveal = match args.show_secrets {
        true => Reveal::Secrets,
        false => Reveal::Redacted,
    };
    let text = match args.format {
        Format::Text => report::text(&findings, reveal),
        Format::Json => report::json(&findings, reveal),
        Format::Sarif => report::sarif(&findings, &scanner.rule_descriptions(), reveal),
    };
    match &args.report {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("writing report {}", path.display()))?,
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("writing report to stdout")?,
    }
    Ok(findings)
}

/// The ignore list: the file given, else `<root>/.gitleaksignore` when it exists.
fn ignore_list(explicit: Option<&Path>, root: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(path) = explicit {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading ignore file {}", path.display()))?;
        return Ok(Some(text));
    }
    let Some(default) = root.map(|r| r.join(".gitleaksignore")) else {
        return Ok(None);
    };
    match std::fs::read_to_string(&default) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", default.display())),
    }
}
