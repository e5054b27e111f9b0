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
    /// Starts squid on a free loopback port; it resolves names with `hosts`. A port taken
    /// between probing and squid's bind is retried with another one.
    pub fn start(dir: &Path, hosts: &Path) -> Squid {
        let dir = dir.join("squid");
        std::fs::create_dir_all(&dir).unwrap();
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            write_conf(&dir, addr, hosts);
            let mut squid = Squid {
                addr,
                dir: dir.clone(),
                child: None,
            };
            if squid.try_spawn() {
                return squid;
            }
            last_log = std::fs::read_to_string(dir.join("cache.log")).unwrap_or_default();
        }
        panic!("squid did not start: {last_log}");
    }

    /// Starts squid and waits for its port; false if squid exited instead.
    fn try_spawn(&mut self) -> bool {
        let mut child = Command::new("squid")
            .arg("-N")
            .arg("-f")
            .arg(self.dir.join("squid.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("squid is required: apt-get install squid");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.addr).is_err() {
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
        true
    }

    /// Kills squid (closing every tunnel it holds) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.try_spawn(), "squid did not restart");
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn write_conf(dir: &Path, addr: SocketAddr, hosts: &Path) {
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
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

impl Drop for Squid {
    fn drop(&mut self) {
        self.stop();
    }
}
