//! Fixtures for the end-to-end tests: the real binaries, a throw-away manifest home, a test CA,
//! a fake HTTPS upstream container on a bottle's egress network, and bottles that are stopped
//! when the test ends, pass or fail.
//!
//! Needs the Docker engine and the local base image (`scripts/base-image`), which
//! `scripts/test` prepares.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // Test support: a panic is a failure.

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

/// Paths of the freshly built binaries.
pub struct Bins {
    pub claude_bottle: PathBuf,
    pub bottle_bundle: PathBuf,
}

/// Builds both binaries once per test process (cheap when up to date) and returns them.
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

    /// `start AGENT -y -d`; returns the running bottle, stopped when dropped.
    pub fn start_detached(&self, agent: &str) -> Bottle<'_> {
        let out = self.run(&["start", agent, "-y", "-d"]);
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
        Bottle { home: self, id }
    }
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

    pub fn network(&self) -> String {
        format!("claude-bottle-{}-egress", self.id)
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
    let labels = HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_IDENTITY.to_owned(), identity.to_owned()),
        (LABEL_ROLE.to_owned(), "test-upstream".to_owned()),
    ]);
    let body = ContainerCreateBody {
        image: Some(BASE_IMAGE.into()),
        cmd: Some(vec!["python3".into(), "/srv/echo.py".into()]),
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
        "claude-bottle-{identity}-upstream-{}",
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
    for (path, text) in [
        ("srv/echo.py", ECHO_SERVER),
        ("srv/cert.pem", cert.as_str()),
        ("srv/key.pem", key.as_str()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
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
