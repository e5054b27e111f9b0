//! `claude-bottle reject ID --reason TEXT`: tell the agent no, and why. Needs no Docker.

use std::path::Path;

use crate::manifest::values::{Layout, escape_controls};
use crate::supervise::{decide, queue};

pub(crate) fn run(root: &Path, id: &str, reason: Option<&str>) -> anyhow::Result<u8> {
    let Some(reason) = reason.filter(|r| !r.trim().is_empty()) else {
        return Err(crate::UsageError(format!(
            "a rejection needs a reason the agent can act on: `claude-bottle reject {id} --reason \"TEXT\"`"
        ))
        .into());
    };
    let pending = queue::find(root, id)?;
    let said = decide::reject(root, &pending, reason)?;
    println!("{}", escape_controls(&said, Layout::Block));
    Ok(0)
}
