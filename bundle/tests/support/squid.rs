//! A real upstream CONNECT proxy (squid from Debian) standing in for pipelock.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Squid {
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
}

impl Squid {
    /// Starts squid on a free loopback port; it resolves names with `hosts`.
    pub fn start(dir: &Path, hosts: &Path) -> Squid {
        let dir = dir.join("squid");
        std::fs::create_dir_all(&dir).unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let conf = format!(
            "http_port {addr}\n\
             http_access allow all\n\
             hosts_file {hosts}\n\
             dns_nameservers 127.0.0.1\n\
             pid_filename none\n\
             access_log stdio:{dir}/access.log\n\
             cache_log {dir}/cache.log\n\
             cache_store_log none\n\
             coredump_dir {dir}\n\
             cache deny all\n\
             pinger_enable off\n\
             shutdown_lifetime 0 seconds\n\
             cache_effective_user proxy\n",
            hosts = hosts.display(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("squid.conf"), conf).unwrap();
        let status = Command::new("chown")
            .args(["-R", "proxy:proxy"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success());
        let mut squid = Squid {
            addr,
            dir,
            child: None,
        };
        squid.spawn();
        squid
    }

    fn spawn(&mut self) {
        let child = Command::new("squid")
            .arg("-N")
            .arg("-f")
            .arg(self.dir.join("squid.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("squid is required: apt-get install squid");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "squid did not start: {}",
                std::fs::read_to_string(self.dir.join("cache.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills squid (closing every tunnel it holds) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// CONNECT lines squid logged.
    pub fn connects(&self) -> usize {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" CONNECT "))
            .count()
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        self.stop();
    }
}
