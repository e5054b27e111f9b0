#![allow(dead_code)] // Each test binary uses a different part of this support module.
//! A real OpenSSH server on 127.0.0.1 as a git upstream, with generated keys and a log the
//! tests read to count connections.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs the server.
const SSHD: &str = "/usr/sbin/sshd";
/// How long to wait for sshd to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `program args…` and panics with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (install it: scripts/test does)"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generates an ed25519 key pair at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "test",
            "-f",
            &path.to_string_lossy(),
        ],
    );
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A running sshd; killed on drop.
pub struct Sshd {
    child: Option<Child>,
    dir: PathBuf,
    /// The port it listens on (kept across restarts).
    pub port: u16,
    /// The server's public host key line (`ssh-ed25519 AAAA… test`).
    pub host_key_pub: String,
    /// The private key the server accepts (for the gate, or a direct push).
    pub client_key: PathBuf,
}

impl Sshd {
    /// Generates keys and a config under `dir` and starts the server.
    pub fn start(dir: &Path) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (scripts/test does)"
        );
        std::fs::create_dir_all(dir).expect("sshd dir");
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd (tests run as root)");
        let host_key = dir.join("host_ed25519");
        keygen(&host_key);
        let client_key = dir.join("client_ed25519");
        keygen(&client_key);
        std::fs::copy(dir.join("client_ed25519.pub"), dir.join("authorized_keys"))
            .expect("authorized_keys");
        let host_key_pub = std::fs::read_to_string(dir.join("host_ed25519.pub"))
            .expect("host key")
            .trim()
            .to_owned();
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {dir}/authorized_keys\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nPidFile {dir}/sshd.pid\nLogLevel VERBOSE\n",
            host = host_key.display(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("sshd_config"), config).expect("sshd_config");
        let mut sshd = Sshd {
            child: None,
            dir: dir.to_owned(),
            port,
            host_key_pub,
            client_key,
        };
        sshd.resume();
        sshd
    }

    /// The log sshd appends to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// How many TCP connections sshd has accepted so far.
    pub fn connections(&self) -> usize {
        self.log().matches("Connection from 127.0.0.1").count()
    }

    /// Stops the server (the port stays reserved for [`Sshd::resume`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Wait until the port no longer accepts.
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "sshd still listening after stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again on the same port.
    pub fn resume(&mut self) {
        let listening_before = self.log().matches("Server listening on").count();
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(self.dir.join("sshd_config"))
            .arg("-E")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while self.log().matches("Server listening on").count() <= listening_before {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("sshd exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
