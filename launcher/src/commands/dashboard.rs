//! `claude-bottle dashboard [--once]`: the operator's TUI, or (`--once`) the pending proposals
//! printed for scripts.

use std::path::Path;

use crate::supervise::{queue, request};

pub(crate) fn run(root: &Path, once: bool) -> anyhow::Result<u8> {
    if once {
        print!("{}", once_text(root, crate::supervise::now()));
        return Ok(0);
    }
    crate::dashboard::run(root)
}

/// One block per pending proposal, oldest first; warnings go to stderr.
pub(crate) fn once_text(root: &Path, now: u64) -> String {
    let listing = queue::pending(root);
    for warning in &listing.warnings {
        eprintln!("warning: {warning}");
    }
    if listing.pending.is_empty() {
        return "no pending proposals\n".to_owned();
    }
    let mut out = String::new();
    for (i, p) in listing.pending.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&request::headline(&p.proposal, now));
        out.push('\n');
        for line in request::detail_lines(&p.proposal) {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}
