//! A real single-node etcd (Debian's `etcd-server`) for tests: loopback ports from
//! [`crate::free_port`], a data directory of its own, etcd's output in `etcd.log` there; killed
//! and removed on drop, whatever happens. One launcher for the arbiter's, the cluster store's
//! and the pair's tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs etcd.
pub const ETCD: &str = "/usr/bin/etcd";
/// How long etcd may take to answer.
const STARTUP: Duration = Duration::from_secs(20);

/// A running etcd.
pub struct Etcd {
    /// Its client URL (`http://127.0.0.1:PORT`).
    pub url: String,
    child: Child,
    dir: PathBuf,
}

impl Etcd {
    /// Starts etcd and waits (at most 20 s) until `ready(url)` says it serves (each test
    /// asks with its own client); `None` after [`crate::skip`] if etcd is not installed.
    /// Panics with the tail of etcd's log if it exits or does not answer in time.
    pub fn start(tag: &str, ready: impl Fn(&str) -> bool) -> Option<Etcd> {
        if !Path::new(ETCD).exists() {
            crate::skip(&format!(
                "{ETCD} is missing: install Debian's etcd-server (apt-get install etcd-server)"
            ));
            return None;
        }
        let (client, peer) = (crate::free_port(), crate::free_port());
        let dir =
            std::env::temp_dir().join(format!("ftvm-etcd-{tag}-{}-{client}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create etcd's directory");
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log")).expect("create etcd.log");
        let child = Command::new(ETCD)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd.log"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let mut e = Etcd { url, child, dir };
        let t0 = Instant::now();
        while !ready(&e.url) {
            if let Ok(Some(status)) = e.child.try_wait() {
                panic!("etcd exited ({status}):\n{}", e.log_tail());
            }
            assert!(
                t0.elapsed() < STARTUP,
                "etcd did not answer within {STARTUP:?}:\n{}",
                e.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(e)
    }

    /// Its process id (to freeze it with SIGSTOP, as an outage).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills etcd now: an outage that does not end.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last 20 lines etcd logged.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // SIGKILL ends it even while a test has it stopped.
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
