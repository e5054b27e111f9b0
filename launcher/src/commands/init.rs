//! `claude-bottle init`: write the example bottle and agent, never overwriting.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// The examples, embedded from `examples/` so the repository and `init` share one copy.
pub(crate) const EXAMPLE_BOTTLE: &str = include_str!("../../../examples/bottles/example.md");
pub(crate) const EXAMPLE_AGENT: &str = include_str!("../../../examples/agents/example.md");

pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    for (rel, text) in [
        ("bottles/example.md", EXAMPLE_BOTTLE),
        ("agents/example.md", EXAMPLE_AGENT),
    ] {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        // create_new: an existing file (or a dangling symlink) is never replaced.
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(text.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("wrote    {}", path.display());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                println!(
                    "skipped  {} (already exists; left unchanged)",
                    path.display()
                );
            }
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }
    println!("next: claude-bottle start example --dry-run");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::manifest::validate::{parse_agent, parse_bottle};

    /// The shipped examples are valid manifests, and the agent names the bottle.
    #[test]
    fn examples_load() {
        let bottle = parse_bottle(
            Path::new("examples/bottles/example.md"),
            "example",
            EXAMPLE_BOTTLE,
        )
        .unwrap();
        let agent = parse_agent(
            Path::new("examples/agents/example.md"),
            "example",
            EXAMPLE_AGENT,
        )
        .unwrap();
        assert_eq!(agent.bottle, bottle.name);
        assert!(bottle.supervise);
        assert!(!bottle.routes.is_empty());
        assert!(!agent.prompt.is_empty());
    }
}
