//! Where the agent image's Claude Code comes from: a native executable the user gives
//! (`CLAUDE_BOTTLE_CLAUDE_BIN`), else the newest one `scripts/claude-from-pypi` cached, else
//! npm — checked first, so a machine without npm access fails in seconds with the ways out
//! instead of minutes into an image build.

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::manifest::AgentCommand;

/// Names a native `claude` executable to copy into the agent image.
pub(crate) const CLAUDE_BIN_ENV: &str = "CLAUDE_BOTTLE_CLAUDE_BIN";
/// Where npm's registry answers (checked before an image build installs from it).
const NPM_REGISTRY: (&str, u16) = ("registry.npmjs.org", 443);
const NPM_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// `claude --version` must answer within this.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);
/// Larger than any Claude Code build (about 400 MB); a bound on what is read into memory.
const MAX_CLAUDE_BYTES: u64 = 1 << 30;

/// How the agent image gets Claude Code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClaudeSource {
    /// The agent runs its own command: no Claude Code is installed.
    NotNeeded,
    /// A native executable copied into the image.
    Native { path: PathBuf, version: String },
    /// `npm install -g @anthropic-ai/claude-code` during the image build.
    Npm,
}

impl ClaudeSource {
    /// One line for the start output.
    pub(crate) fn describe(&self) -> String {
        format!("claude: {}", self.source_text())
    }

    /// Where it comes from, as the plan shows it.
    pub(crate) fn source_text(&self) -> String {
        match self {
            ClaudeSource::NotNeeded => "not installed (the agent runs its own command)".into(),
            ClaudeSource::Native { path, version } => {
                format!("native {version} from {}", path.display())
            }
            ClaudeSource::Npm => "npm @anthropic-ai/claude-code, installed in the image \
                 (no native executable: run scripts/claude-from-pypi or set CLAUDE_BOTTLE_CLAUDE_BIN)"
                .into(),
        }
    }
}

/// Set to `0` or `1` to force whether the agent image gets Claude Code (default: only when
/// the agent runs `claude`).
pub(crate) const INSTALL_CLAUDE_ENV: &str = "CLAUDE_BOTTLE_INSTALL_CLAUDE";

/// Whether the agent image must have Claude Code for an agent running `command`.
pub(crate) fn needed(command: &AgentCommand) -> bool {
    match std::env::var(INSTALL_CLAUDE_ENV).as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => *command == AgentCommand::Claude,
    }
}

/// Decides the source for a build; `needed` is whether the agent image must have Claude Code.
/// Like [`locate`], then, when only npm is left, checks that its registry answers.
pub(crate) fn choose(needed: bool) -> anyhow::Result<ClaudeSource> {
    let source = locate(needed)?;
    if source == ClaudeSource::Npm && !npm_answers() {
        anyhow::bail!(
            "the agent runs Claude Code, but there is no native `claude` executable and npm's registry \
             ({}) does not answer, so the image cannot install it. Either run `scripts/claude-from-pypi` \
             (fetches Anthropic's Claude Code executable from PyPI's claude-agent-sdk wheel into {}), or \
             set {CLAUDE_BIN_ENV} to a Linux `claude` executable",
            NPM_REGISTRY.0,
            cache_root().map_or_else(
                || "~/.cache/claude-bottle/claude".into(),
                |p| p.display().to_string()
            )
        );
    }
    Ok(source)
}

/// Where Claude Code would come from, without touching the network (for the plan): the
/// executable `CLAUDE_BOTTLE_CLAUDE_BIN` names, else the newest cached one, else npm.
pub(crate) fn locate(needed: bool) -> anyhow::Result<ClaudeSource> {
    if !needed {
        return Ok(ClaudeSource::NotNeeded);
    }
    if let Some(path) = std::env::var_os(CLAUDE_BIN_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let version = check_native(&path).with_context(|| {
            format!(
                "{CLAUDE_BIN_ENV}={}: not a usable Claude Code executable",
                path.display()
            )
        })?;
        return Ok(ClaudeSource::Native { path, version });
    }
    if let Some(path) = newest_cached() {
        let version = check_native(&path).with_context(|| {
            format!(
                "the cached Claude Code {} is not usable (remove it and run scripts/claude-from-pypi again)",
                path.display()
            )
        })?;
        return Ok(ClaudeSource::Native { path, version });
    }
    Ok(ClaudeSource::Npm)
}

/// Reads the executable (bounded, a regular file only: `hostfile`), for the image's build
/// context.
pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    Ok(crate::hostfile::read_bounded(path, MAX_CLAUDE_BYTES)?)
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/claude-bottle/claude`, as `scripts/claude-from-pypi` writes it.
fn cache_root() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("claude-bottle").join("claude"))
}

/// The cached executable with the highest version (`<root>/<version>/claude`).
fn newest_cached() -> Option<PathBuf> {
    let root = cache_root()?;
    let mut best: Option<(Vec<u64>, PathBuf)> = None;
    for entry in std::fs::read_dir(&root).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(version) = parse_version(&name) else {
            continue;
        };
        let bin = entry.path().join("claude");
        if bin.is_file() && best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, p)| p)
}

fn parse_version(s: &str) -> Option<Vec<u64>> {
    s.split('.').map(|part| part.parse().ok()).collect()
}

/// Checks that `path` is a regular file holding a Linux ELF executable for this machine's
/// architecture, and that it answers `--version`; returns the version.
fn check_native(path: &Path) -> anyhow::Result<String> {
    // `CLAUDE_BOTTLE_CLAUDE_BIN` may name anything: a FIFO must not block the preflight.
    let (mut file, len) = crate::hostfile::open_regular(path)?;
    anyhow::ensure!(len <= MAX_CLAUDE_BYTES, "{} is too large", path.display());
    let mut header = [0u8; 20];
    file.read_exact(&mut header)
        .with_context(|| format!("cannot read {}", path.display()))?;
    check_elf(&header)?;
    version_of(path)
}

/// ELF magic, 64-bit, and the machine this launcher runs on (the image's architecture).
fn check_elf(header: &[u8; 20]) -> anyhow::Result<()> {
    anyhow::ensure!(
        header[..4] == *b"\x7fELF",
        "not an ELF executable (a Linux build of Claude Code is needed, e.g. from scripts/claude-from-pypi)"
    );
    anyhow::ensure!(header[4] == 2, "not a 64-bit ELF executable");
    let machine = u16::from_le_bytes([header[18], header[19]]);
    let (want, arch) = match std::env::consts::ARCH {
        "x86_64" => (0x3e, "x86-64"),
        "aarch64" => (0xb7, "aarch64"),
        other => anyhow::bail!("unsupported host architecture {other}"),
    };
    anyhow::ensure!(
        machine == want,
        "built for another architecture (ELF machine {machine:#x}); this host and its images are {arch}"
    );
    Ok(())
}

/// Runs `claude --version` (bounded) and returns its first word.
fn version_of(path: &Path) -> anyhow::Result<String> {
    let mut child = Command::new(path)
        .arg("--version")
        .env("DISABLE_AUTOUPDATER", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {} --version", path.display()))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let mut out = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                stdout.read_to_string(&mut out)?;
            }
            anyhow::ensure!(
                status.success(),
                "`{} --version` failed ({status})",
                path.display()
            );
            let version = out.split_whitespace().next().unwrap_or_default().to_owned();
            anyhow::ensure!(
                parse_version(&version).is_some(),
                "`{} --version` printed no version",
                path.display()
            );
            return Ok(version);
        }
        if started.elapsed() > VERSION_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "`{} --version` did not answer in {VERSION_TIMEOUT:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether npm's registry accepts a TCP connection within [`NPM_CHECK_TIMEOUT`].
fn npm_answers() -> bool {
    let Ok(addrs) = NPM_REGISTRY.to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, NPM_CHECK_TIMEOUT).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(machine: u16) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn only_a_64_bit_elf_for_this_architecture_is_accepted() {
        let native = match std::env::consts::ARCH {
            "aarch64" => 0xb7,
            _ => 0x3e,
        };
        assert!(check_elf(&header(native)).is_ok());
        let foreign = if native == 0x3e { 0xb7 } else { 0x3e };
        let err = check_elf(&header(foreign)).unwrap_err().to_string();
        assert!(err.contains("another architecture"), "{err}");
        let mut script = [0u8; 20];
        script[..11].copy_from_slice(b"#!/bin/sh\nx");
        assert!(
            check_elf(&script)
                .unwrap_err()
                .to_string()
                .contains("not an ELF")
        );
        let mut elf32 = header(native);
        elf32[4] = 1;
        assert!(check_elf(&elf32).is_err());
    }

    #[test]
    fn a_script_is_not_a_claude_executable() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("claude");
        std::fs::write(&fake, "#!/bin/sh\necho 9.9.9\n").unwrap();
        assert!(check_native(&fake).is_err());
        assert!(
            check_native(dir.path())
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
        // A FIFO is refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = check_native(&fifo).unwrap_err().to_string();
        assert!(err.contains("is a FIFO, not a regular file"), "{err}");
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(parse_version("2.1.332") > parse_version("2.1.99"));
        assert_eq!(parse_version("latest"), None);
    }
}
