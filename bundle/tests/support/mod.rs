//! Shared harness for the proxy tests: a local HTTPS upstream and the real `bottle-bundle
//! proxy` binary, run in a private mount namespace whose `/etc/hosts` maps the test names.

#![allow(dead_code, clippy::unwrap_used)]

pub mod squid;
pub mod upstream;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use bottle_contract::bundle_config::*;
use bottle_contract::route::{AuthScheme, RouteAuth};
use bottle_contract::secrets::SecretsFile;

use self::upstream::Upstream;

pub const BIN: &str = env!("CARGO_BIN_EXE_bottle-bundle");
pub const BEARER_TOKEN: &str = "bottle-test-bearer-0a1b2c3d4e5f";
pub const KEY_TOKEN: &str = "bottle-test-apikey-9z8y7x6w5v";
pub const BASIC_TOKEN: &str = "alice:bottle-test-basic-pw";
/// A secret env value the agent holds (`AGENT_SECRET` in the secrets file's `env`): the proxy
/// must keep it from leaving.
pub const AGENT_SECRET: &str = "agent-held-S3cret/value+9f8e7d6c";

/// Names the upstream serves; all map to 127.0.0.1 inside the proxy's namespace.
pub const NAMES: [&str; 6] = [
    "api.test",
    "key.test",
    "open.test",
    "basic.test",
    "git.test",
    "other.test",
];

/// Names under the `*.wild.test` route whose label looks like a credential the bundle was never
/// told about (an AWS key id, 40 hex digits, a base32 chunk). They resolve to the upstream and
/// its certificate covers them, so only the proxy's label check stands between them and it.
pub const CREDENTIAL_LABEL_HOSTS: [&str; 3] = [
    "akiaqwertyuiopasdfgh.wild.test",
    "0123456789abcdef0123456789abcdef01234567.wild.test",
    "mzxw6ytboi4dgnrzgq2tmnzy.wild.test",
];

/// An ordinary name under `*.wild.test` that resolves to the upstream: the control.
pub const PLAIN_LABEL_HOST: &str = "plain.wild.test";

/// How the proxy reaches the upstream.
pub enum Mode {
    /// Direct, with loopback allowed (as a user's internal-host CIDR would be).
    Direct,
    /// Direct with no private allowance: the SSRF checks apply to everything.
    DirectStrict,
    /// Through a real upstream CONNECT proxy (squid), started here.
    Chained,
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub upstream: Upstream,
    pub proxy: ProxyProc,
    /// The bundle's CA (what the agent trusts).
    pub ca: PathBuf,
    pub config_path: PathBuf,
    pub secrets_path: PathBuf,
    pub audit_path: PathBuf,
    pub config: BundleConfig,
    /// The upstream CONNECT proxy in chained mode.
    pub squid: Option<squid::Squid>,
}

pub struct ProxyProc {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: PathBuf,
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ProxyProc {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Env {
    pub fn start(mode: Mode) -> Env {
        Env::start_with(mode, &[])
    }

    /// [`Env::start`] with extra `bottle-bundle proxy` arguments (hidden tuning flags).
    pub fn start_with(mode: Mode, proxy_args: &[&str]) -> Env {
        Env::start_dlp(mode, proxy_args, Default::default())
    }

    /// [`Env::start_with`] with `proxy.dlp` set.
    pub fn start_dlp(
        mode: Mode,
        proxy_args: &[&str],
        dlp: bottle_contract::bundle_config::DlpMode,
    ) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let git_root = dir.path().join("git");
        make_repo(&git_root);
        let mut served: Vec<&str> = NAMES.to_vec();
        served.push("*.wild.test");
        let upstream = Upstream::start(dir.path(), &served, git_root);
        let ca = dir.path().join("ca.pem");
        let ca_key = dir.path().join("ca-key.pem");
        let out = Command::new(BIN)
            .args(["ca", "init", "--cert"])
            .arg(&ca)
            .arg("--key")
            .arg(&ca_key)
            .output()
            .unwrap();
        assert!(out.status.success(), "ca init: {out:?}");

        let port = upstream.port();
        let route = |host: &str, paths: &[&str], auth: Option<(AuthScheme, &str)>| RouteConfig {
            host: host.parse().unwrap(),
            port: std::num::NonZeroU16::new(port),
            path_allowlist: paths.iter().map(|p| p.parse().unwrap()).collect(),
            auth: auth.map(|(scheme, slot)| RouteAuth {
                scheme,
                token_ref: slot.parse().unwrap(),
            }),
        };
        let routes = vec![
            route("api.test", &["/v1/"], Some((AuthScheme::Bearer, "API"))),
            route(
                "key.test",
                &[],
                Some((
                    AuthScheme::Header {
                        name: "x-api-key".parse().unwrap(),
                    },
                    "KEY",
                )),
            ),
            route("basic.test", &[], Some((AuthScheme::Basic, "BASIC"))),
            route("open.test", &[], None),
            route("git.test", &[], None),
            route("ten.test", &[], None),
            route("meta.test", &[], None),
            route("six.test", &[], None),
            route("mapped.test", &[], None),
            route("loop.test", &[], None),
            route("*.wild.test", &[], None),
        ];
        let upstream_ca = upstream.ca_path.display().to_string();
        let hosts = dir.path().join("hosts");
        let mut text = format!("127.0.0.1 localhost {}\n", NAMES.join(" "));
        text.push_str("10.255.255.1 ten.test\n169.254.169.254 meta.test\n::1 six.test\n");
        text.push_str("::ffff:127.0.0.1 mapped.test\n127.0.0.1 loop.test\n");
        text.push_str(&format!(
            "127.0.0.1 {PLAIN_LABEL_HOST} {}\n",
            CREDENTIAL_LABEL_HOSTS.join(" ")
        ));
        std::fs::write(&hosts, text).unwrap();
        let squid = match mode {
            Mode::Chained => {
                use std::os::unix::fs::PermissionsExt as _;
                // squid runs as its own user and must read the hosts file.
                std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                    .unwrap();
                Some(squid::Squid::start(dir.path(), &hosts))
            }
            _ => None,
        };
        let outbound = match mode {
            Mode::Direct => Outbound::Direct {
                allow_private: vec!["127.0.0.0/8".into()],
                extra_ca: Some(upstream_ca),
            },
            Mode::DirectStrict => Outbound::Direct {
                allow_private: vec![],
                extra_ca: Some(upstream_ca),
            },
            Mode::Chained => Outbound::Upstream {
                proxy_url: format!("http://{}", squid.as_ref().unwrap().addr),
                extra_ca: Some(upstream_ca),
                intercepts: false,
            },
        };
        let audit_path = dir.path().join("audit.jsonl");
        let config = BundleConfig {
            schema_version: bottle_contract::SCHEMA_VERSION,
            identity: "test-abcde".into(),
            roles: vec![Role::Proxy],
            proxy: ProxyConfig {
                listen: Listen {
                    tcp: Some("127.0.0.1:0".into()),
                    unix: None,
                },
                ca_cert: ca.display().to_string(),
                ca_key: ca_key.display().to_string(),
                routes,
                outbound,
                dlp,
            },
            gate: GateConfig {
                listen: Listen {
                    tcp: None,
                    unix: None,
                },
                mirrors_dir: dir.path().join("mirrors").display().to_string(),
                remotes: vec![],
                scanner_rules: None,
                max_push_bytes: 1 << 20,
                push_timeout_secs: 10,
            },
            supervise: None,
            pipelock: None,
            audit_log: audit_path.display().to_string(),
        };
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, config.to_json()).unwrap();
        let mut secrets = SecretsFile::default();
        secrets.tokens.insert(
            "API".into(),
            bottle_contract::secret::Secret::new(BEARER_TOKEN.into()),
        );
        secrets.tokens.insert(
            "KEY".into(),
            bottle_contract::secret::Secret::new(KEY_TOKEN.into()),
        );
        secrets.tokens.insert(
            "BASIC".into(),
            bottle_contract::secret::Secret::new(BASIC_TOKEN.into()),
        );
        secrets.env.insert(
            "AGENT_SECRET".into(),
            bottle_contract::secret::Secret::new(AGENT_SECRET.into()),
        );
        let secrets_path = dir.path().join("secrets.json");
        std::fs::write(&secrets_path, serde_json::to_string(&secrets).unwrap()).unwrap();

        let proxy = spawn_proxy(dir.path(), &hosts, &config_path, &secrets_path, proxy_args);
        Env {
            dir,
            upstream,
            proxy,
            ca,
            config_path,
            secrets_path,
            audit_path,
            config,
            squid,
        }
    }

    pub fn port(&self) -> u16 {
        self.upstream.port()
    }

    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port())
    }

    /// curl through the proxy; returns (HTTP status, body, stderr). Status 0 when curl failed.
    pub fn curl(&self, args: &[&str]) -> (u16, String, String) {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                "-x",
                &self.proxy.url(),
                "--cacert",
            ])
            .arg(&self.ca)
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .output()
            .expect("curl is required: apt-get install curl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        (
            code.trim().parse().unwrap_or(0),
            body.to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a Python script with `PROXY`, `CA` and `PORT` in its environment.
    pub fn python(&self, script: &str) -> std::process::Output {
        self.python_with_stdin(script, &[], "")
    }

    /// [`Env::python`] with arguments (`sys.argv[1..]`) and `stdin` fed to the script.
    pub fn python_with_stdin(
        &self,
        script: &str,
        args: &[&str],
        stdin: &str,
    ) -> std::process::Output {
        use std::io::Write as _;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .env("PROXY", self.proxy.url())
            .env("CA", &self.ca)
            .env("PORT", self.port().to_string())
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .spawn()
            .expect("python3 is required");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// A `git` command that uses the proxy and trusts the bundle CA.
    pub fn git(&self, cwd: &Path, args: &[&str]) -> std::process::Output {
        Command::new("git")
            .current_dir(cwd)
            .arg("-c")
            .arg(format!("http.proxy={}", self.proxy.url()))
            .arg("-c")
            .arg(format!("http.sslCAInfo={}", self.ca.display()))
            .args(args)
            .env("GIT_SSL_CAINFO", &self.ca)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.dir.path())
            .output()
            .expect("git is required")
    }

    /// The audit log once `done` holds for it (lines are written by the proxy's writer thread,
    /// and a response's line when its body ends, so they may trail the answer the client got).
    /// Panics with the lines seen if that takes over 10 s.
    pub fn audit_until(
        &self,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let lines: Vec<serde_json::Value> = std::fs::read_to_string(&self.audit_path)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if done(&lines) {
                return lines;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the audit log never got there: {lines:#?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Rewrites the config file (for reload tests).
    pub fn write_config(&self, config: &BundleConfig) {
        std::fs::write(&self.config_path, config.to_json()).unwrap();
    }
}

pub fn spawn_proxy(
    dir: &Path,
    hosts: &Path,
    config: &Path,
    secrets: &Path,
    extra: &[&str],
) -> ProxyProc {
    let stderr = dir.join("proxy.stderr");
    let mut child = Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            r#"mount --bind "$0" /etc/hosts && exec "$@""#,
        ])
        .arg(hosts)
        .arg(BIN)
        .arg("proxy")
        .arg("--config")
        .arg(config)
        .arg("--secrets")
        .arg(secrets)
        .args(extra)
        .env("BOTTLE_LOG", "info,bottle_bundle::proxy::ca=debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("unshare (util-linux) is required and the tests must run as root");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("proxy listening on tcp ")
        .unwrap_or_else(|| {
            panic!(
                "proxy did not start: {line:?}\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        })
        .parse()
        .unwrap();
    ProxyProc {
        child,
        addr,
        stderr,
    }
}

/// A bare repository with one commit, accepting pushes over smart HTTP (so only the proxy
/// stands between a push and the repository).
fn make_repo(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let work = root.join("seed");
    let run = |cwd: &Path, args: &[&str]| {
        let out = Command::new("git")
            .current_dir(cwd)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .expect("git is required");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    std::fs::create_dir_all(&work).unwrap();
    run(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("README"), "hello\n").unwrap();
    run(&work, &["add", "README"]);
    run(&work, &["commit", "-q", "-m", "first"]);
    run(root, &["clone", "-q", "--bare", "seed", "repo.git"]);
    run(
        &root.join("repo.git"),
        &["config", "http.receivepack", "true"],
    );
}
