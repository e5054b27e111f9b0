#![allow(dead_code)] // Each test binary uses a different part of this support module.
//! A gate under test: a real sshd upstream with a bare repository, the `bottle-bundle gate`
//! binary serving it on a loopback port, and helpers to act as the agent with real git.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::sshd::{self, Sshd};

/// How long to wait for the gate to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The served repository name.
pub const REPO: &str = "app";
/// The upstream's host name, mapped to 127.0.0.1 only by the gate's `extra_hosts`.
pub const UPSTREAM_HOST: &str = "upstream.test";

/// Which host key the gate pins.
#[derive(Clone, Copy)]
pub enum Pin {
    Real,
    Wrong,
    Missing,
}

/// Knobs of one gate.
pub struct Options {
    pub pin: Pin,
    pub max_push_bytes: u64,
    /// The remote's own limit, replacing `max_push_bytes` (manifest `MaxPushMB`).
    pub remote_max_push_bytes: Option<u64>,
    pub push_timeout_secs: u64,
    /// Gitleaks rules to use instead of the built-in ones.
    pub scanner_rules: Option<String>,
    /// Run this copy of the bundle binary instead of the built one.
    pub program: Option<PathBuf>,
    /// Also listen on a Unix socket (`<tmp>/gate.sock`).
    pub unix_socket: bool,
    /// Map the upstream's name to 127.0.0.1 with `extra_hosts` (otherwise it does not resolve).
    pub extra_hosts: bool,
    /// The remote's `allow_delete` and `allow_force_push`.
    pub allow_delete: bool,
    pub allow_force_push: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pin: Pin::Real,
            max_push_bytes: 64 << 20,
            remote_max_push_bytes: None,
            push_timeout_secs: 60,
            scanner_rules: None,
            program: None,
            unix_socket: false,
            extra_hosts: true,
            allow_delete: false,
            allow_force_push: false,
        }
    }
}

/// A GitHub token the built-in rules catch (assembled so this file itself holds none).
pub fn token() -> String {
    format!("ghp_{}{}", "R7xK2mQ9vLpW4zN8bT3c", "Y6hJ1fD5sA0gE2uI")
}

pub struct GateEnv {
    pub tmp: tempfile::TempDir,
    pub sshd: Sshd,
    /// The upstream bare repository (served by sshd).
    pub upstream: PathBuf,
    pub config_path: PathBuf,
    pub mirrors: PathBuf,
    /// The key file the gate holds.
    pub identity: PathBuf,
    pub port: u16,
    gate: Option<Child>,
    gate_stderr: PathBuf,
    program: PathBuf,
}

impl GateEnv {
    pub fn start(options: Options) -> GateEnv {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_owned();
        let sshd = Sshd::start(&root.join("sshd"));
        let upstream = root.join("upstream.git");
        git_ok(
            &root,
            &["init", "--quiet", "--bare", "-b", "main", &s(&upstream)],
        );
        // Seed the upstream directly (a local push, no ssh).
        let seed = root.join("seed");
        git_ok(&root, &["init", "--quiet", "-b", "main", &s(&seed)]);
        std::fs::write(seed.join("README.md"), "hello\n").expect("write");
        git_ok(&seed, &["add", "."]);
        git_ok(&seed, &["commit", "--quiet", "-m", "initial"]);
        git_ok(&seed, &["push", "--quiet", &s(&upstream), "main"]);

        let keys = root.join("keys");
        std::fs::create_dir_all(&keys).expect("keys dir");
        let identity = keys.join("app");
        std::fs::copy(&sshd.client_key, &identity).expect("copy key");
        let known_host_key = match options.pin {
            Pin::Real => Some(sshd.host_key_pub.clone()),
            Pin::Wrong => {
                let other = root.join("other_host_key");
                sshd::keygen(&other);
                Some(
                    std::fs::read_to_string(other.with_extension("pub"))
                        .expect("read")
                        .trim()
                        .to_owned(),
                )
            }
            Pin::Missing => None,
        };
        let extra_hosts = if options.extra_hosts {
            serde_json::json!([{"host": UPSTREAM_HOST, "address": "127.0.0.1"}])
        } else {
            serde_json::json!([])
        };
        let mirrors = root.join("mirrors");
        let port = sshd::free_port();
        let config = serde_json::json!({
            "schema_version": bottle_contract::SCHEMA_VERSION,
            "identity": "test-gate1",
            "roles": ["gate"],
            "proxy": {
                "listen": {"tcp": null, "unix": null},
                "ca_cert": "/nonexistent/ca.pem",
                "ca_key": "/nonexistent/ca-key.pem",
                "routes": [],
                "outbound": {"mode": "direct"}
            },
            "gate": {
                "listen": {
                    "tcp": format!("127.0.0.1:{port}"),
                    "unix": options.unix_socket.then(|| s(&root.join("gate.sock"))),
                },
                "mirrors_dir": s(&mirrors),
                "remotes": [{
                    "name": REPO,
                    "upstream": format!("ssh://root@{UPSTREAM_HOST}:{}{}", sshd.port, s(&upstream)),
                    "identity_file": s(&identity),
                    "known_host_key": known_host_key,
                    "extra_hosts": extra_hosts,
                    "allow_delete": options.allow_delete,
                    "allow_force_push": options.allow_force_push,
                    "max_push_bytes": options.remote_max_push_bytes
                }],
                "scanner_rules": options.scanner_rules,
                "max_push_bytes": options.max_push_bytes,
                "push_timeout_secs": options.push_timeout_secs
            },
            "supervise": null,
            "pipelock": null,
            "audit_log": s(&root.join("audit.jsonl"))
        });
        let text = serde_json::to_string_pretty(&config).expect("json");
        bottle_contract::bundle_config::BundleConfig::from_json(&text).expect("valid config");
        let config_path = root.join("bundle.json");
        std::fs::write(&config_path, text).expect("write config");
        let mut env = GateEnv {
            sshd,
            upstream,
            config_path,
            mirrors,
            identity,
            port,
            gate: None,
            gate_stderr: root.join("gate.stderr"),
            program: options
                .program
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_bottle-bundle"))),
            tmp,
        };
        env.start_gate();
        env
    }

    fn start_gate(&mut self) {
        let stderr = std::fs::File::create(&self.gate_stderr).expect("stderr file");
        let child = Command::new(&self.program)
            .args(["gate", "--config"])
            .arg(&self.config_path)
            .env("BOTTLE_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start bottle-bundle gate");
        self.gate = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.gate.as_mut().map(Child::try_wait) {
                panic!("gate exited with {status}: {}", self.gate_log());
            }
            assert!(
                Instant::now() < deadline,
                "gate did not listen: {}",
                self.gate_log()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Sends SIGTERM to the gate and waits (up to `limit`) for it to exit; its exit status.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.gate.take().expect("gate running");
        let pid = child.id().to_string();
        let out = Command::new("kill")
            .args(["-TERM", &pid])
            .output()
            .expect("kill");
        assert!(out.status.success(), "kill -TERM failed");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the gate did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The gate's stderr so far.
    pub fn gate_stderr(&self) -> String {
        std::fs::read_to_string(&self.gate_stderr).unwrap_or_default()
    }

    /// The gate's stderr so far, plus its hook log.
    pub fn gate_log(&self) -> String {
        let stderr = std::fs::read_to_string(&self.gate_stderr).unwrap_or_default();
        let hook = std::fs::read_to_string(self.mirrors.join(".gate/hook.log")).unwrap_or_default();
        format!("{stderr}\n--- hook.log ---\n{hook}")
    }

    /// The agent's URL for the served repository.
    pub fn url(&self) -> String {
        format!("git://127.0.0.1:{}/{REPO}.git", self.port)
    }

    /// The gate's mirror.
    pub fn mirror(&self) -> PathBuf {
        self.mirrors.join(format!("{REPO}.git"))
    }

    /// Clones through the gate into `<tmp>/<name>`, as the agent.
    pub fn clone_work(&self, name: &str) -> PathBuf {
        let dest = self.tmp.path().join(name);
        let out = git(
            self.tmp.path(),
            &["clone", "--quiet", &self.url(), &s(&dest)],
        );
        assert!(
            out.status.success(),
            "clone failed: {}\n{}",
            stderr(&out),
            self.gate_log()
        );
        dest
    }

    /// A git command against the upstream over ssh with the server's key, bypassing the gate.
    pub fn direct_git(&self, dir: &Path, args: &[&str]) -> Output {
        let ssh = format!(
            "ssh -F none -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile={} -o LogLevel=ERROR",
            self.sshd.client_key.display(),
            self.tmp.path().join("direct_known_hosts").display()
        );
        Command::new("git")
            .current_dir(dir)
            .args(args)
            .envs(agent_env(self.tmp.path()))
            .env("GIT_SSH_COMMAND", ssh)
            .output()
            .expect("run git")
    }

    /// Installs `script` as the upstream repository's hook `name` (`pre-receive`, …).
    pub fn upstream_hook(&self, name: &str, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let hook = self.upstream.join("hooks").join(name);
        std::fs::write(&hook, script).expect("write upstream hook");
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
            .expect("chmod upstream hook");
    }

    /// A shell fragment for an upstream hook: wait (at most 60 s) until [`GateEnv::release`],
    /// so a test can make the upstream slow without sleeping long or leaving sleepers behind.
    pub fn wait_for_release(&self) -> String {
        format!(
            "i=0; while [ ! -e '{}' ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done",
            s(&self.tmp.path().join("release"))
        )
    }

    /// Ends every [`GateEnv::wait_for_release`] wait.
    pub fn release(&self) {
        std::fs::write(self.tmp.path().join("release"), "").expect("write release");
    }

    /// The upstream's direct URL (127.0.0.1, for [`GateEnv::direct_git`]).
    pub fn direct_url(&self) -> String {
        format!(
            "ssh://root@127.0.0.1:{}{}",
            self.sshd.port,
            s(&self.upstream)
        )
    }
}

impl Drop for GateEnv {
    fn drop(&mut self) {
        if let Some(mut child) = self.gate.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every ref of a repository with its object id, plus the raw packed-refs file: equal
/// snapshots mean the refs did not change at all.
pub fn refs_snapshot(repo: &Path) -> String {
    let out = git(repo, &["for-each-ref", "--format=%(refname) %(objectname)"]);
    assert!(out.status.success(), "for-each-ref: {}", stderr(&out));
    let packed = std::fs::read_to_string(repo.join("packed-refs")).unwrap_or_default();
    format!(
        "{}--- packed-refs ---\n{packed}",
        String::from_utf8_lossy(&out.stdout)
    )
}

pub fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An empty global git config for the tests' gits. Not /dev/null: git writes config through a
/// lock file renamed over the target, and these tests run as root.
pub const TEST_GIT_CONFIG: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/test.gitconfig");

/// The environment the agent's git runs with: no user or system config.
fn agent_env(home: &Path) -> Vec<(String, String)> {
    vec![
        ("HOME".into(), s(home)),
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("GIT_CONFIG_GLOBAL".into(), TEST_GIT_CONFIG.into()),
        ("GIT_AUTHOR_NAME".into(), "Agent".into()),
        ("GIT_AUTHOR_EMAIL".into(), "agent@example.invalid".into()),
        ("GIT_COMMITTER_NAME".into(), "Agent".into()),
        ("GIT_COMMITTER_EMAIL".into(), "agent@example.invalid".into()),
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
    ]
}

/// Runs git as the agent in `dir`.
pub fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .current_dir(dir)
        .args(args)
        .env_remove("GIT_SSH_COMMAND")
        .env_remove("GIT_DIR")
        .envs(agent_env(dir))
        .output()
        .expect("run git (install git: scripts/test does)")
}

/// Runs git and panics on failure; returns stdout.
pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args);
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Writes `path` (relative to `work`) and commits it with `message`.
pub fn commit_file(work: &Path, path: &str, content: &str, message: &str) -> String {
    let full = work.join(path);
    if let Some(dir) = full.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(&full, content).expect("write");
    git_ok(work, &["add", path]);
    git_ok(work, &["commit", "--quiet", "-m", message]);
    git_ok(work, &["rev-parse", "HEAD"])
}
