//! `claude-bottle info <agent>`: the agent's own keys and prompt, then what its bottle grants.

use std::fmt::Write;

use crate::facts;
use crate::manifest::values::{Layout, escape_controls};
use crate::manifest::{self, Dirs, Loaded};
use crate::plan;
use crate::render::plan_text::plan_text;
use crate::secrets::HostEnv;

/// Lines of the system prompt shown.
const PROMPT_PREVIEW_LINES: usize = 8;

pub(crate) fn run(agent: &str, dirs: &Dirs, host: &dyn HostEnv) -> anyhow::Result<()> {
    let loaded = manifest::load(dirs, agent)?;
    let facts = facts::gather(&loaded, host)?;
    let plan = plan::build(&loaded, &facts);
    print!("{}", agent_text(&loaded));
    println!();
    print!("{}", plan_text(&plan));
    Ok(())
}

fn agent_text(loaded: &Loaded) -> String {
    let a = &loaded.agent;
    let mut out = String::new();
    let w = &mut out;
    // Writing to a String cannot fail.
    let _ = writeln!(w, "Agent {}  ({})", a.name, a.file.display());
    let _ = writeln!(w, "  bottle       {}", a.bottle);
    for (key, value) in [
        ("name", &a.display_name),
        ("description", &a.description),
        ("model", &a.model),
        ("color", &a.color),
    ] {
        if let Some(v) = value {
            let _ = writeln!(w, "  {key:12} {v}");
        }
    }
    if !a.tools.is_empty() {
        let _ = writeln!(w, "  tools        {}", a.tools.join(", "));
    }
    let _ = writeln!(w, "  system prompt:");
    let lines: Vec<&str> = a.prompt.lines().collect();
    for line in lines.iter().take(PROMPT_PREVIEW_LINES) {
        let _ = writeln!(w, "    | {line}");
    }
    if lines.len() > PROMPT_PREVIEW_LINES {
        let _ = writeln!(
            w,
            "    | … ({} more lines)",
            lines.len() - PROMPT_PREVIEW_LINES
        );
    }
    if lines.is_empty() {
        let _ = writeln!(w, "    (empty)");
    }
    // The agent file may be a project's (a cloned repository's): escaped for the terminal.
    escape_controls(&out, Layout::Block)
}
