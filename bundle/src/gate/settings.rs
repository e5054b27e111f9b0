//! The gate's validated settings: the contract's `GateConfig` converted once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bottle_contract::bundle_config::{GateConfig, GitRemoteConfig};

/// Why a gate config was refused. Each message names the remote and the key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SettingsError {
    #[error("gate.remotes[{index}].name {name:?}: {problem}")]
    Name {
        index: usize,
        name: String,
        problem: &'static str,
    },
    #[error("gate.remotes: the name {0:?} is used twice; names must be unique")]
    DuplicateName(String),
    #[error(
        "gate.remotes[{name}].upstream: {problem} (expected ssh://[user@]host[:port]/path or user@host:path)"
    )]
    Upstream { name: String, problem: String },
    #[error("gate.remotes[{name}].known_host_key: {problem}")]
    Pin { name: String, problem: String },
    #[error("gate.remotes[{name}].extra_hosts[{index}]: {problem}")]
    ExtraHost {
        name: String,
        index: usize,
        problem: String,
    },
    #[error("gate.{key}: {problem}")]
    Field { key: &'static str, problem: String },
}

/// Everything the gate server and its hook need.
#[derive(Debug, Clone)]
pub(crate) struct GateSettings {
    /// The gate-owned directory holding the bare mirrors, their hooks and their log.
    pub mirrors_dir: PathBuf,
    /// The served repositories, in config order.
    pub remotes: Vec<Remote>,
    /// A gitleaks rule file replacing the built-in rules.
    pub scanner_rules: Option<PathBuf>,
    /// Largest pack a push may send, and most bytes the scan reads, for remotes that set no
    /// limit of their own.
    pub max_push_bytes: u64,
    /// Longest the pre-receive scan plus forward may take; also bounds a refresh.
    pub push_timeout: Duration,
}

/// One upstream repository, served as `git://<gate>/<name>.git`.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    /// The served name: `[A-Za-z0-9._-]+`, not starting with `.` or `-`.
    pub name: String,
    /// The upstream URL, as given (git parses it again when it pushes).
    pub upstream: String,
    /// The address to dial instead of resolving `host` (from `extra_hosts`).
    pub dial_address: Option<String>,
    /// The key the gate pushes and fetches with. Never read by the gate itself.
    pub identity_file: PathBuf,
    /// The pinned host key; `None` means the gate refuses to contact the upstream.
    pub pin: Option<HostKeyPin>,
    /// Whether a push may delete a branch or a tag.
    pub allow_delete: bool,
    /// Whether a push may move a branch to a commit that does not contain the old one, or
    /// move an existing tag.
    pub allow_force_push: bool,
    /// This remote's own push limit (manifest `MaxPushMB`); `None` uses the gate's.
    pub max_push_bytes: Option<u64>,
}

/// A pinned SSH host key, `<type> <base64>` (a trailing comment is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostKeyPin {
    pub key_type: String,
    pub key: String,
}

impl GateSettings {
    /// Validates the contract's gate section.
    pub(crate) fn from_contract(config: &GateConfig) -> Result<GateSettings, SettingsError> {
        if config.mirrors_dir.is_empty() {
            return Err(SettingsError::Field {
                key: "mirrors_dir",
                problem: "must name a directory".into(),
            });
        }
        if config.max_push_bytes == 0 {
            return Err(SettingsError::Field {
                key: "max_push_bytes",
                problem: "must be more than 0".into(),
            });
        }
        if config.push_timeout_secs == 0 {
            return Err(SettingsError::Field {
                key: "push_timeout_secs",
                problem: "must be more than 0".into(),
            });
        }
        let mut remotes: Vec<Remote> = Vec::new();
        for (index, remote) in config.remotes.iter().enumerate() {
            let remote = Remote::from_contract(index, remote)?;
            if remotes.iter().any(|r| r.name == remote.name) {
                return Err(SettingsError::DuplicateName(remote.name));
            }
            remotes.push(remote);
        }
        Ok(GateSettings {
            mirrors_dir: PathBuf::from(&config.mirrors_dir),
            remotes,
            scanner_rules: config.scanner_rules.as_ref().map(PathBuf::from),
            max_push_bytes: config.max_push_bytes,
            push_timeout: Duration::from_secs(config.push_timeout_secs),
        })
    }

    /// The remote served under `name`.
    pub(crate) fn remote(&self, name: &str) -> Option<&Remote> {
        self.remotes.iter().find(|r| r.name == name)
    }

    /// The bare mirror of `remote`.
    pub(crate) fn mirror_path(&self, remote: &Remote) -> PathBuf {
        self.mirrors_dir.join(format!("{}.git", remote.name))
    }

    /// The gate's own files (hooks, global git config, hook log); the `HOME` of its gits.
    pub(crate) fn gate_dir(&self) -> PathBuf {
        self.mirrors_dir.join(".gate")
    }

    /// The gate's hooks directory (`core.hooksPath` of every mirror).
    pub(crate) fn hooks_dir(&self) -> PathBuf {
        self.gate_dir().join("hooks")
    }

    /// Largest pack a push to `remote` may send, and most bytes its scan reads.
    pub(crate) fn push_limit(&self, remote: &Remote) -> u64 {
        remote.max_push_bytes.unwrap_or(self.max_push_bytes)
    }
}

impl Remote {
    fn from_contract(index: usize, config: &GitRemoteConfig) -> Result<Remote, SettingsError> {
        check_name(&config.name).map_err(|problem| SettingsError::Name {
            index,
            name: config.name.clone(),
            problem,
        })?;
        let name = config.name.clone();
        let host = upstream_host(&config.upstream).map_err(|problem| SettingsError::Upstream {
            name: name.clone(),
            problem,
        })?;
        let pin = match &config.known_host_key {
            Some(line) => Some(
                HostKeyPin::parse(line).map_err(|problem| SettingsError::Pin {
                    name: name.clone(),
                    problem,
                })?,
            ),
            None => None,
        };
        let mut dial_address = None;
        for (i, extra) in config.extra_hosts.iter().enumerate() {
            let bad = |problem: String| SettingsError::ExtraHost {
                name: name.clone(),
                index: i,
                problem,
            };
            if extra.address.parse::<std::net::IpAddr>().is_err() {
                return Err(bad(format!(
                    "address {:?} is not an IP address",
                    extra.address
                )));
            }
            if extra.host.is_empty() || !extra.host.chars().all(is_host_char) {
                return Err(bad(format!("host {:?} is not a host name", extra.host)));
            }
            if extra.host.eq_ignore_ascii_case(&host) {
                dial_address = Some(extra.address.clone());
            }
        }
        if config.max_push_bytes == Some(0) {
            return Err(SettingsError::Field {
                key: "remotes[].max_push_bytes",
                problem: format!("remote {name:?}: must be more than 0"),
            });
        }
        if config.identity_file.is_empty() {
            return Err(SettingsError::Field {
                key: "remotes[].identity_file",
                problem: format!("remote {name:?} has no identity file"),
            });
        }
        Ok(Remote {
            name,
            upstream: config.upstream.clone(),
            dial_address,
            identity_file: PathBuf::from(&config.identity_file),
            pin,
            allow_delete: config.allow_delete,
            allow_force_push: config.allow_force_push,
            max_push_bytes: config.max_push_bytes,
        })
    }

    /// The identity file's path, for redacting it out of anything logged.
    pub(crate) fn identity_path(&self) -> &Path {
        &self.identity_file
    }
}

impl HostKeyPin {
    /// Parses a `known_hosts`-style key line: `<type> <base64> [comment]`.
    pub(crate) fn parse(line: &str) -> Result<HostKeyPin, String> {
        let mut fields = line.split_whitespace();
        let (Some(key_type), Some(key)) = (fields.next(), fields.next()) else {
            return Err("expected `<key-type> <base64-key>`, e.g. `ssh-ed25519 AAAAC3Nz…`".into());
        };
        let known_type = key_type.starts_with("ssh-")
            || key_type.starts_with("ecdsa-sha2-")
            || key_type.starts_with("sk-");
        if !known_type {
            return Err(format!(
                "{key_type:?} is not an SSH key type (ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa, …); give the key itself, not a host name"
            ));
        }
        let base64 = key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
        if !base64 || key.len() < 16 {
            return Err("the key is not base64".into());
        }
        Ok(HostKeyPin {
            key_type: key_type.to_owned(),
            key: key.to_owned(),
        })
    }
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("must not start with `.` or `-`");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("may hold only letters, digits, `.`, `_` and `-`");
    }
    if name.ends_with(".git") {
        return Err("must not end in `.git` (the gate adds it)");
    }
    Ok(())
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// The host of an SSH upstream URL: `ssh://[user@]host[:port]/path` or `[user@]host:path`.
fn upstream_host(url: &str) -> Result<String, String> {
    let host = if let Some(rest) = url.strip_prefix("ssh://") {
        let authority = rest.split('/').next().unwrap_or_default();
        if !rest.contains('/') {
            return Err("no repository path".into());
        }
        let host_port = authority.rsplit('@').next().unwrap_or_default();
        match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => host_port.split(':').next().unwrap_or_default(),
        }
    } else if url.contains("://") {
        return Err("only ssh:// upstreams are supported".into());
    } else {
        let Some((left, path)) = url.split_once(':') else {
            return Err("not an SSH URL".into());
        };
        if path.is_empty() {
            return Err("no repository path".into());
        }
        left.rsplit('@').next().unwrap_or_default()
    };
    if host.is_empty() || !host.chars().all(|c| is_host_char(c) || c == ':') {
        return Err(format!("host {host:?} is not a host name"));
    }
    if host.starts_with('-') {
        return Err("host must not start with `-`".into());
    }
    Ok(host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, expect: expect_test::Expect) {
        let got = match upstream_host(url) {
            Ok(h) => format!("host {h}"),
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn upstream_hosts() {
        use expect_test::expect;
        check("ssh://git@github.com/o/r.git", expect!["host github.com"]);
        check(
            "ssh://git@example.test:2222/srv/r.git",
            expect!["host example.test"],
        );
        check("ssh://[::1]:22/r.git", expect!["host ::1"]);
        check("git@github.com:o/r.git", expect!["host github.com"]);
        check(
            "https://github.com/o/r",
            expect!["error: only ssh:// upstreams are supported"],
        );
        check("ssh://github.com", expect!["error: no repository path"]);
        check(
            "ssh://-oProxyCommand=x/r",
            expect!["error: host \"-oProxyCommand=x\" is not a host name"],
        );
    }

    #[test]
    fn pins() {
        assert!(HostKeyPin::parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample host").is_ok());
        let err = HostKeyPin::parse("github.com ssh-ed25519 AAAA").unwrap_err();
        assert!(err.contains("not an SSH key type"), "{err}");
        assert!(HostKeyPin::parse("ssh-ed25519").is_err());
    }

    /// Applies `edit` to a valid gate config and shows the conversion's verdict.
    fn check_config(edit: &str, expect: expect_test::Expect) {
        let mut value = serde_json::json!({
            "listen": {"tcp": "127.0.0.1:9418", "unix": null},
            "mirrors_dir": "/var/lib/bottle/mirrors",
            "remotes": [{
                "name": "app",
                "upstream": "ssh://git@git.example.test:2222/alice/app.git",
                "identity_file": "/etc/bottle/keys/app",
                "known_host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample",
                "extra_hosts": [{"host": "git.example.test", "address": "100.64.0.7"}],
                "allow_delete": false,
                "allow_force_push": false
            }],
            "scanner_rules": null,
            "max_push_bytes": 1024,
            "push_timeout_secs": 10
        });
        if let Some((pointer, new)) = edit.split_once('=') {
            *value.pointer_mut(pointer).unwrap() = serde_json::from_str(new).unwrap();
        }
        let config: GateConfig = serde_json::from_value(value).unwrap();
        let got = match GateSettings::from_contract(&config) {
            Ok(s) => {
                let r = &s.remotes[0];
                format!(
                    "ok {} dial={:?} pinned={} delete={} force={}",
                    r.name,
                    r.dial_address,
                    r.pin.is_some(),
                    r.allow_delete,
                    r.allow_force_push
                )
            }
            Err(e) => e.to_string(),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn config_conversion() {
        use expect_test::expect;
        check_config(
            "",
            expect![[r#"ok app dial=Some("100.64.0.7") pinned=true delete=false force=false"#]],
        );
        check_config(
            "/remotes/0/allow_force_push=true",
            expect![[r#"ok app dial=Some("100.64.0.7") pinned=true delete=false force=true"#]],
        );
        check_config(
            "/remotes/0/known_host_key=null",
            expect![[r#"ok app dial=Some("100.64.0.7") pinned=false delete=false force=false"#]],
        );
        check_config(
            "/remotes/0/known_host_key=\"git.example.test ssh-ed25519 AAAA\"",
            expect![[
                r#"gate.remotes[app].known_host_key: "git.example.test" is not an SSH key type (ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa, …); give the key itself, not a host name"#
            ]],
        );
        check_config(
            "/remotes/0/upstream=\"https://github.com/a/b\"",
            expect![
                "gate.remotes[app].upstream: only ssh:// upstreams are supported (expected ssh://[user@]host[:port]/path or user@host:path)"
            ],
        );
        check_config(
            "/remotes/0/name=\"../etc\"",
            expect![[r#"gate.remotes[0].name "../etc": must not start with `.` or `-`"#]],
        );
        check_config(
            "/remotes/0/extra_hosts/0/address=\"gateway\"",
            expect![[
                r#"gate.remotes[app].extra_hosts[0]: address "gateway" is not an IP address"#
            ]],
        );
        check_config(
            "/max_push_bytes=0",
            expect!["gate.max_push_bytes: must be more than 0"],
        );
    }

    #[test]
    fn names() {
        assert!(check_name("app").is_ok());
        assert!(check_name("../x").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("a.git").is_err());
    }
}
