//! Fixtures for the end-to-end tests: the real binaries, a throw-away manifest home, a test CA,
//! a fake HTTPS upstream container on a bottle's egress network, and bottles that are stopped
//! when the test ends, pass or fail.
//!
//! Needs the Docker engine and the local base image (`scripts/base-image`), which
//! `scripts/test` prepares.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // Test support: a panic is a failure.

pub mod tmux;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, UploadToContainerOptionsBuilder};

/// The local base image every test image starts from.
pub const BASE_IMAGE: &str = "claude-bottle-base:bookworm";
/// Label keys (the contract's; repeated so this crate needs no workspace dependency).
pub const LABEL_MANAGED: &str = "claude-bottle.managed";
pub const LABEL_IDENTITY: &str = "claude-bottle.identity";
pub const LABEL_ROLE: &str = "claude-bottle.role";
pub const LABEL_HOME: &str = "claude-bottle.home";

/// The workspace's target directory (where the binaries and cached test files live).
pub fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
}

/// Paths of the freshly built binaries.
pub struct Bins {
    pub claude_bottle: PathBuf,
    pub bottle_bundle: PathBuf,
    /// Pipelock's stand-in (`standin/pipelock.rs`), for `CLAUDE_BOTTLE_PIPELOCK_BIN`.
    pub pipelock_standin: PathBuf,
}

/// Builds the binaries once per test process (cheap when up to date) and returns them.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "claude-bottle",
                "-p",
                "bottle-bundle",
                "-p",
                "e2e",
                "--bins",
            ])
            .current_dir(&workspace)
            .status()
            .expect("cannot run cargo to build the binaries");
        assert!(status.success(), "building the binaries failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        let dir = target.join("debug");
        Bins {
            claude_bottle: dir.join("claude-bottle"),
            bottle_bundle: dir.join("bottle-bundle"),
            pipelock_standin: dir.join("pipelock-standin"),
        }
    })
}

/// A manifest home in a temp dir, and a project directory.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
}

impl Home {
    pub fn new() -> Home {
        let dir = tempfile::tempdir().unwrap();
        for sub in [".claude-bottle/bottles", ".claude-bottle/agents", "project"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Home {
            dir,
            env: HashMap::new(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join(".claude-bottle")
    }

    pub fn project(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    /// Writes `~/.claude-bottle/<kind>/<name>.md`.
    pub fn write(&self, kind: &str, name: &str, text: &str) -> PathBuf {
        let path = self.root().join(kind).join(format!("{name}.md"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `claude-bottle ARGS` with this home, run in the project directory.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&bins().claude_bottle);
        cmd.args(args)
            .current_dir(self.project())
            .env_clear()
            .env("HOME", self.dir.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CLAUDE_BOTTLE_BUNDLE_BIN", &bins().bottle_bundle)
            .env("CLAUDE_BOTTLE_BASE_IMAGE", BASE_IMAGE)
            .envs(&self.env);
        if let Ok(host) = std::env::var("DOCKER_HOST") {
            cmd.env("DOCKER_HOST", host);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// `<manifest home>/state/<identity>`.
    pub fn state(&self, identity: &str) -> PathBuf {
        self.root().join("state").join(identity)
    }

    /// `<manifest home>/queue/<identity>`: the bottle's supervise queue.
    pub fn queue(&self, identity: &str) -> PathBuf {
        self.root().join("queue").join(identity)
    }

    /// `start AGENT -y -d`; returns the running bottle, stopped when dropped.
    pub fn start_detached(&self, agent: &str) -> Bottle<'_> {
        self.start_detached_with(agent, &[])
    }

    /// `start AGENT -y -d EXTRA…` (e.g. `--cwd DIR`).
    pub fn start_detached_with(&self, agent: &str, extra: &[&str]) -> Bottle<'_> {
        self.start_detached_showing(agent, extra).0
    }

    /// `start AGENT -y -d EXTRA…`: the running bottle and what the launcher printed on stdout
    /// (the plan, then the bottle's identity).
    pub fn start_detached_showing(&self, agent: &str, extra: &[&str]) -> (Bottle<'_>, String) {
        let mut args = vec!["start", agent, "-y", "-d"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "start failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = stdout
            .lines()
            .find_map(|l| l.strip_prefix("bottle ")?.strip_suffix(" is running"))
            .unwrap_or_else(|| panic!("no identity in:\n{stdout}"))
            .to_owned();
        (Bottle { home: self, id }, stdout.into_owned())
    }
}

/// A shell command line running `home`'s `claude-bottle ARGS` with exactly the environment
/// [`Home::cmd`] gives it (for tmux, which takes a command line); it prints `EXIT=<code>`
/// when the launcher ends.
pub fn command_line(home: &Home, args: &[&str]) -> String {
    let cmd = home.cmd(args);
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = String::from("env -i TERM=xterm-256color");
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            line.push_str(&format!(
                " {}={}",
                k.to_string_lossy(),
                quote(&v.to_string_lossy())
            ));
        }
    }
    line.push(' ');
    line.push_str(&quote(&cmd.get_program().to_string_lossy()));
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(&a.to_string_lossy()));
    }
    format!(
        "cd {} && {line}; echo EXIT=$?; sleep 120",
        quote(&home.project().display().to_string())
    )
}

impl Default for Home {
    fn default() -> Home {
        Home::new()
    }
}

/// A started bottle; `claude-bottle stop` runs when it is dropped.
pub struct Bottle<'h> {
    pub home: &'h Home,
    pub id: String,
}

impl Bottle<'_> {
    /// Runs `sh -c SCRIPT` in the agent, as the agent.
    pub fn sh(&self, script: &str) -> Output {
        self.home
            .run(&["exec", &self.id, "--", "/bin/sh", "-c", script])
    }

    /// Like [`Bottle::sh`], returning stdout and asserting success.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// See [`upstream_network`].
    pub fn network(&self) -> String {
        upstream_network(&self.id)
    }
}

impl Drop for Bottle<'_> {
    fn drop(&mut self) {
        let _ = self.home.run(&["stop", &self.id]);
    }
}

/// A CA for test upstreams, trusted by the bundle through `egress.extra_ca`.
pub struct TestCa {
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "claude-bottle e2e upstream CA");
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf certificate and key (PEM) for `host`.
    pub fn leaf(&self, host: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

impl Default for TestCa {
    fn default() -> TestCa {
        TestCa::new()
    }
}

/// The fake upstream's program: HTTPS on 443 that answers every request with a JSON echo of
/// its method, path, headers (names lowercased) and body, and appends the same to /tmp/requests.jsonl.
const ECHO_SERVER: &str = r#"
import http.server, json, ssl
class H(http.server.BaseHTTPRequestHandler):
    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
        headers = {k.lower(): v for k, v in self.headers.items()}
        seen = {"method": self.command, "path": self.path, "headers": headers, "body": body}
        with open("/tmp/requests.jsonl", "a") as f:
            f.write(json.dumps(seen) + "\n")
        out = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = handle_any
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("0.0.0.0", 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("/srv/cert.pem", "/srv/key.pem")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

pub async fn docker() -> Docker {
    Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

/// Starts the fake upstream on `network` as `alias`, labelled as part of bottle `identity` so
/// the bottle's `stop` removes it too. Returns its container id.
pub async fn start_upstream(
    docker: &Docker,
    identity: &str,
    network: &str,
    alias: &str,
    ca: &TestCa,
) -> String {
    let (cert, key) = ca.leaf(alias);
    start_test_container(
        docker,
        identity,
        network,
        alias,
        "test-upstream",
        BASE_IMAGE,
        vec!["python3".into(), "/srv/echo.py".into()],
        &[
            ("srv/echo.py", ECHO_SERVER, 0o644),
            ("srv/cert.pem", &cert, 0o644),
            ("srv/key.pem", &key, 0o644),
        ],
    )
    .await
}

/// The fake Anthropic API (`fake_anthropic.py`): HTTPS on 443 as `api.anthropic.com` on
/// `network`, replies scripted by `turns_json` (see the script), every request logged to
/// `/tmp/requests.jsonl`; labelled into bottle `identity`. Returns its container id.
pub async fn start_fake_anthropic(
    docker: &Docker,
    identity: &str,
    network: &str,
    ca: &TestCa,
    turns_json: &str,
) -> String {
    let (cert, key) = ca.leaf("api.anthropic.com");
    start_test_container(
        docker,
        identity,
        network,
        "api.anthropic.com",
        "test-anthropic",
        BASE_IMAGE,
        vec!["python3".into(), "/srv/fake_anthropic.py".into()],
        &[
            ("srv/fake_anthropic.py", FAKE_ANTHROPIC, 0o644),
            ("srv/turns.json", turns_json, 0o644),
            ("srv/cert.pem", &cert, 0o644),
            ("srv/key.pem", &key, 0o644),
        ],
    )
    .await
}

const FAKE_ANTHROPIC: &str = include_str!("fake_anthropic.py");

/// Replaces the fake Anthropic API's script (read afresh on every request), for the next
/// `claude -p` session.
pub async fn set_fake_turns(docker: &Docker, container: &str, turns: &serde_json::Value) {
    let quoted = turns.to_string().replace('\'', r"'\''");
    container_sh(
        docker,
        container,
        &format!(
            "printf '%s' '{quoted}' > /srv/turns.json.new && mv /srv/turns.json.new /srv/turns.json"
        ),
    )
    .await;
}

/// The fake Anthropic API's request log, one JSON value per request.
pub async fn fake_anthropic_requests(docker: &Docker, container: &str) -> Vec<serde_json::Value> {
    container_sh(docker, container, "cat /tmp/requests.jsonl 2>/dev/null")
        .await
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Creates and starts a test container from `image` running `cmd`, on `network` as `alias`,
/// with `files` (path, contents, mode) copied in first, labelled into bottle `identity` with
/// `role` so the bottle's `stop` removes it too. Returns its id.
#[allow(clippy::too_many_arguments)] // Test fixture: every argument is a different knob.
async fn start_test_container(
    docker: &Docker,
    identity: &str,
    network: &str,
    alias: &str,
    role: &str,
    image: &str,
    cmd: Vec<String>,
    files: &[(&str, &str, u32)],
) -> String {
    let labels = HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_IDENTITY.to_owned(), identity.to_owned()),
        (LABEL_ROLE.to_owned(), role.to_owned()),
    ]);
    let body = ContainerCreateBody {
        image: Some(image.into()),
        cmd: Some(cmd),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_owned()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_owned(),
                EndpointSettings {
                    aliases: Some(vec![alias.to_owned()]),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    let name = format!(
        "claude-bottle-{identity}-{role}-{}",
        alias.replace('.', "-")
    );
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    for (path, text, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(*mode);
        tar.append_data(&mut header, path, text.as_bytes()).unwrap();
    }
    docker
        .upload_to_container(
            &created.id,
            Some(UploadToContainerOptionsBuilder::default().path("/").build()),
            bollard::body_full(tar.into_inner().unwrap().into()),
        )
        .await
        .unwrap();
    docker.start_container(&created.id, None).await.unwrap();
    created.id
}

/// Every object still carrying bottle `identity`'s label, as `kind name` lines.
pub async fn leftovers(docker: &Docker, identity: &str) -> Vec<String> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{LABEL_IDENTITY}={identity}")],
    )]);
    let mut left = Vec::new();
    let containers = docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    left.extend(
        containers
            .into_iter()
            .map(|c| format!("container {:?}", c.names.unwrap_or_default())),
    );
    let networks = docker
        .list_networks(Some(
            bollard::query_parameters::ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    left.extend(
        networks
            .into_iter()
            .map(|n| format!("network {}", n.name.unwrap_or_default())),
    );
    let volumes = docker
        .list_volumes(Some(
            bollard::query_parameters::ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    left.extend(
        volumes
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| format!("volume {}", v.name)),
    );
    left
}

/// The test sshd image (the base image plus openssh-server), built once and kept by tag.
pub const SSHD_IMAGE: &str = "claude-bottle-test-sshd:1";

const SSHD_DOCKERFILE: &str = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n\
RUN apt-get update && apt-get install -y --no-install-recommends openssh-server \
 && rm -rf /var/lib/apt/lists/* && mkdir -p /run/sshd\n";

/// Builds [`SSHD_IMAGE`] if it is missing.
pub async fn ensure_sshd_image(docker: &Docker) {
    use futures_util::StreamExt;
    if docker.inspect_image(SSHD_IMAGE).await.is_ok() {
        return;
    }
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(SSHD_DOCKERFILE.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, "Dockerfile", SSHD_DOCKERFILE.as_bytes())
        .unwrap();
    let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(SSHD_IMAGE)
        .rm(true)
        .buildargs(&HashMap::from([("BASE_IMAGE", BASE_IMAGE)]))
        .build();
    let mut stream = docker.build_image(
        options,
        None,
        Some(bollard::body_full(tar.into_inner().unwrap().into())),
    );
    while let Some(item) = stream.next().await {
        let info = item.unwrap();
        assert!(
            info.error_detail.is_none(),
            "building {SSHD_IMAGE}: {info:?}"
        );
    }
}

/// Key material for a git upstream over SSH, generated on the host with `ssh-keygen`.
pub struct SshKeys {
    pub dir: tempfile::TempDir,
    /// The client's private key file (the bottle's `IdentityFile`).
    pub client_key: PathBuf,
    pub client_pub: String,
    pub host_key: String,
    /// The host's public key line (the bottle's `KnownHostKey`).
    pub host_pub: String,
}

impl SshKeys {
    pub fn new() -> SshKeys {
        let dir = tempfile::tempdir().unwrap();
        for name in ["client", "host"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(dir.path().join(name))
                .status()
                .expect("ssh-keygen (openssh-client) is needed");
            assert!(status.success());
        }
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        let host_pub = read("host.pub");
        let host_pub = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        SshKeys {
            client_key: dir.path().join("client"),
            client_pub: read("client.pub"),
            host_key: read("host"),
            host_pub,
            dir,
        }
    }
}

impl Default for SshKeys {
    fn default() -> SshKeys {
        SshKeys::new()
    }
}

/// Starts an sshd serving the bare repository `/srv/app.git` (seeded with one commit on
/// `main`) as root, on `network` as `alias`, labelled into bottle `identity`. It logs to
/// `/var/log/sshd.log` in the container. Returns the container id.
pub async fn start_git_upstream(
    docker: &Docker,
    identity: &str,
    network: &str,
    alias: &str,
    keys: &SshKeys,
) -> String {
    ensure_sshd_image(docker).await;
    let script = "set -e; \
        chmod 600 /etc/ssh/test_host_key /root/.ssh/authorized_keys; \
        git init -q --bare -b main /srv/app.git; \
        git init -q -b main /tmp/seed && cd /tmp/seed && echo hello > README && git add README \
          && git -c user.name=t -c user.email=t@t commit -qm seed && git push -q /srv/app.git main; \
        exec /usr/sbin/sshd -D -e -o HostKey=/etc/ssh/test_host_key -o PermitRootLogin=prohibit-password \
          -o PasswordAuthentication=no -o LogLevel=VERBOSE 2>>/var/log/sshd.log";
    start_test_container(
        docker,
        identity,
        network,
        alias,
        "test-git-upstream",
        SSHD_IMAGE,
        vec!["/bin/sh".into(), "-c".into(), script.into()],
        &[
            ("etc/ssh/test_host_key", &keys.host_key, 0o600),
            ("root/.ssh/authorized_keys", &keys.client_pub, 0o600),
        ],
    )
    .await
}

/// Runs `sh -c script` in a test container as root; returns stdout.
pub async fn container_sh(docker: &Docker, container: &str, script: &str) -> String {
    use futures_util::StreamExt;
    let exec = docker
        .create_exec(
            container,
            bollard::exec::CreateExecOptions {
                cmd: Some(vec!["/bin/sh", "-c", script]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut out = String::new();
    if let bollard::exec::StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&exec.id, None).await.unwrap()
    {
        while let Some(Ok(chunk)) = output.next().await {
            if let bollard::container::LogOutput::StdOut { message } = chunk {
                out.push_str(&String::from_utf8_lossy(&message));
            }
        }
    }
    out
}

/// A network for bottle `identity`'s test upstreams, with its bundle on it. The bottle's egress
/// network is shared by every bundle of the home and drops traffic between containers,
/// so an upstream there could not be reached; this one carries the bottle's labels, so
/// `stop` removes it with the bottle. Made on first use.
pub fn upstream_network(identity: &str) -> String {
    let name = format!("claude-bottle-{identity}-upstreams");
    let docker = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .output()
            .expect("the docker CLI runs")
    };
    if !docker(&["network", "inspect", &name]).status.success() {
        let made = docker(&[
            "network",
            "create",
            "--label",
            &format!("{LABEL_MANAGED}=true"),
            "--label",
            &format!("{LABEL_IDENTITY}={identity}"),
            "--label",
            &format!("{LABEL_ROLE}=test-upstreams"),
            &name,
        ]);
        assert!(
            made.status.success(),
            "docker network create {name}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let bundle = format!("claude-bottle-{identity}-bundle");
        let joined = docker(&["network", "connect", &name, &bundle]);
        assert!(
            joined.status.success(),
            "docker network connect {name} {bundle}: {}",
            String::from_utf8_lossy(&joined.stderr)
        );
    }
    name
}

/// The shared egress networks that exist for `home` (labelled with its root).
pub async fn egress_networks(docker: &Docker, home: &Home) -> Vec<String> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{LABEL_HOME}={}", home.root().display())],
    )]);
    docker
        .list_networks(Some(
            bollard::query_parameters::ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|n| n.name)
        .collect()
}

/// The shared egress network container `bundle` is on (`claude-bottle-egress-…`).
pub async fn egress_network_of(docker: &Docker, bundle: &str) -> String {
    let inspect = docker.inspect_container(bundle, None).await.unwrap();
    let networks = inspect
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default();
    networks
        .into_keys()
        .find(|n| n.starts_with("claude-bottle-egress-"))
        .unwrap_or_else(|| panic!("{bundle} is on no shared egress network"))
}

/// The container's address on `network`.
pub async fn container_ip(docker: &Docker, container: &str, network: &str) -> String {
    let inspect = docker.inspect_container(container, None).await.unwrap();
    inspect
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|mut n| n.remove(network))
        .and_then(|e| e.ip_address)
        .unwrap_or_default()
}

/// A Python program, run in the agent, that prints `HITS [...]`: every place the agent can read
/// that holds `secret` (its env, each process's environ and cmdline, every readable file). The
/// secret is assembled from two halves so the program's own command line does not hold it.
pub fn hunt_script(secret: &str) -> String {
    let (a, b) = secret.split_at(secret.len() / 2);
    let program = format!(
        r#"import os
t = ("{a}" + "{b}").encode()
hits = []
if any(t in v.encode() for v in os.environ.values()):
    hits.append("env")
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for f in ("environ", "cmdline"):
            try:
                if t in open("/proc/%s/%s" % (pid, f), "rb").read():
                    hits.append("/proc/%s/%s" % (pid, f))
            except OSError:
                pass
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for n in files:
        p = os.path.join(root, n)
        try:
            if not os.path.islink(p) and os.path.getsize(p) < 50000000 and t in open(p, "rb").read():
                hits.append(p)
        except OSError:
            pass
print("HITS", hits)
"#
    );
    format!("python3 -c '{program}'")
}

/// The Python `mcp` client, installed once for the host's Python (3.11, as bookworm's) into
/// `target/e2e-pylib` with `pip install --target`, at the host's `mcp` version. Agents get a
/// copy in their work tree: containers cannot reach PyPI.
pub fn mcp_pylib() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target_dir().join("e2e-pylib");
        if dir.join("mcp").is_dir() {
            return dir;
        }
        let version = Command::new("python3")
            .args([
                "-c",
                "import importlib.metadata as m; print(m.version('mcp'))",
            ])
            .output()
            .expect("python3 is needed");
        assert!(
            version.status.success(),
            "the host's Python has no `mcp` (pip install -r tests/requirements.txt)"
        );
        let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
        // Installed aside and renamed, so concurrent test processes never see half of it.
        let tmp = target_dir().join(format!("e2e-pylib.{}", std::process::id()));
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("--target")
            .arg(&tmp)
            .arg(format!("mcp=={version}"))
            .status()
            .unwrap();
        assert!(
            status.success(),
            "pip install --target {} failed",
            tmp.display()
        );
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        assert!(dir.join("mcp").is_dir());
        dir
    })
}

/// The stuck-agent stand-in (`support/mcp_agent.py`).
pub const MCP_AGENT: &str = include_str!("mcp_agent.py");

/// Fills `project` with the MCP agent script (`mcp_agent.py`) and a copy of [`mcp_pylib`] as
/// `pylib/`, so `--cwd project` puts both in the agent's work tree.
pub fn mcp_project(project: &Path) {
    std::fs::write(project.join("mcp_agent.py"), MCP_AGENT).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(mcp_pylib())
        .arg(project.join("pylib"))
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until the bottle of an attached `start` (spawned as `launcher`) is up: its state
/// exists, its four objects exist and its agent's command was released. Fails if the launcher
/// exits first or nothing comes up within 300 s. Returns the identity.
pub async fn wait_attached(home: &Home, launcher: &mut std::process::Child) -> String {
    let docker = docker().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let ids: Vec<String> = std::fs::read_dir(home.root().join("state"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(id) = ids.first()
            && leftovers(&docker, id).await.len() == 3
        {
            let probe = home.run(&["exec", id, "--", "test", "-e", "/run/claude-bottle.ready"]);
            if probe.status.success() {
                return id.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the bottle never came up"
        );
        assert!(
            launcher.try_wait().unwrap().is_none(),
            "the launcher exited early"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}
