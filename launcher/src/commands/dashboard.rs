//! `claude-bottle dashboard [--once]`: the operator's TUI, or (`--once`) the pending proposals
//! printed for scripts.

use std::path::Path;

use crate::manifest::values::{Layout, escape_controls};
use crate::supervise::{queue, request};

pub(crate) fn run(root: &Path, once: bool) -> anyhow::Result<u8> {
    if once {
        // `once_text` escapes each agent-written field already; escaping the whole again
        // (lines and tabs kept) guarantees no control character reaches a script's terminal.
        let text = once_text(root, crate::supervise::now());
        print!("{}", escape_controls(&text, Layout::Block));
        return Ok(0);
    }
    crate::dashboard::run(root)
}

/// One block per pending proposal, oldest first; warnings go to stderr.
pub(crate) fn once_text(root: &Path, now: u64) -> String {
    let listing = queue::pending(root);
    for warning in &listing.warnings {
        eprintln!("warning: {}", escape_controls(warning, Layout::Line));
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
