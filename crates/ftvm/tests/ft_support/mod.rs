//! What the fault-tolerance end-to-end tests share: starting a primary and a backup as real
//! processes on 127.0.0.1 (free ports, a key, an arbiter directory of their own), the counter
//! client that checks the invariant, and a proxy on the logging channel that can cut the link
//! or flip a bit in transit.

#![allow(dead_code)]

use ft::console::client::ConsoleClient;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const FTVM: &str = env!("CARGO_BIN_EXE_ftvm");
pub const FW_JUMP: &str = guestctl::FW_JUMP;

pub use guestctl::free_port;

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A cheap seeded random source (xorshift), the seed printed so a failure can be rerun.
pub struct Rng(u64);

impl Rng {
    pub fn new(name: &str) -> Rng {
        let seed = std::env::var("FTVM_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{name}: FTVM_TEST_SEED={seed}");
        Rng(seed)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The guest's images, or None (skipped, or failed under `cargo xtask test`).
pub fn guest() -> Option<PathBuf> {
    let g = guestctl::guest_dir_from_env()?;
    if !Path::new(FW_JUMP).exists() {
        guestctl::skip("no OpenSBI (apt-get install opensbi)");
        return None;
    }
    Some(g)
}

/// A primary and a backup.
pub struct Pair {
    pub dir: PathBuf,
    pub primary: Option<Child>,
    pub backup: Option<Child>,
    /// The backup's channel address.
    pub channel: SocketAddr,
    /// Where the primary sends its log (the channel, or a proxy in front of it).
    pub peer: SocketAddr,
    pub primary_console: SocketAddr,
    pub backup_console: SocketAddr,
    pub key: PathBuf,
    /// The operators' console secret (not the channel's key).
    pub console_key: PathBuf,
    pub arbiter: String,
    /// The stderr file (in `dir`, without `.stderr`) of the process in each role now.
    pub logs_of: [String; 2],
    /// Backups started by [`Pair::reprotect`].
    pub reprotections: usize,
}

pub struct PairOptions {
    pub smp: usize,
    /// Put a proxy between the primary and the backup.
    pub proxy: bool,
    pub arbiter: Option<String>,
    pub extra: Vec<String>,
    /// Before the primary starts, a stranger without the key tries to pair with the backup.
    pub stranger_first: bool,
    /// Options for one side only.
    pub primary_extra: Vec<String>,
    pub backup_extra: Vec<String>,
    /// What the guest boots (kernel, initrd, command line); the busybox guest's by default.
    pub boot: Option<Vec<std::ffi::OsString>>,
    /// Guest RAM.
    pub mem: &'static str,
}

impl Default for PairOptions {
    fn default() -> Self {
        PairOptions {
            smp: 1,
            proxy: false,
            arbiter: None,
            extra: Vec::new(),
            stranger_first: false,
            primary_extra: Vec::new(),
            backup_extra: Vec::new(),
            boot: None,
            mem: "256M",
        }
    }
}

impl Pair {
    /// Starts the backup, then the primary (booting the guest); `proxy` is set up by the
    /// caller when options ask for one (its address becomes the primary's peer).
    pub fn start(name: &str, g: &Path, o: &PairOptions, proxy: Option<&Proxy>) -> Pair {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("ft")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, ft::Key::random().bytes()).unwrap();
        let console_key = dir.join("console-key");
        std::fs::write(&console_key, ft::Key::random().bytes()).unwrap();
        let arbiter = o
            .arbiter
            .clone()
            .unwrap_or_else(|| format!("file:{}", dir.join("arbiter").display()));
        let channel = addr(free_port());
        let peer = proxy.map_or(channel, |p| p.addr);
        let mut p = Pair {
            dir,
            primary: None,
            backup: None,
            channel,
            peer,
            primary_console: addr(free_port()),
            backup_console: addr(free_port()),
            key,
            console_key,
            arbiter,
            logs_of: ["primary".into(), "backup".into()],
            reprotections: 0,
        };
        if let Some(px) = proxy {
            px.target(channel);
        }
        p.backup = Some(p.spawn("backup", g, o, "backup"));
        if o.stranger_first {
            stranger(channel);
        }
        p.primary = Some(p.spawn("primary", g, o, "primary"));
        p
    }

    /// After a failover (the primary killed, the backup live): starts a new backup, on a new
    /// channel port and the dead primary's console address, and has the live VM protected
    /// by it (`ftvm control protect`); the roles then move on (the live VM is the primary).
    /// Returns what `ftvm control protect` printed (stdout, then its progress on stderr).
    pub fn reprotect(&mut self, g: &Path, o: &PairOptions) -> String {
        let live_console = self.new_backup(g, o);
        let out = Command::new(FTVM)
            .args(["control", "protect", "--backup", &self.channel.to_string()])
            .arg("--console-key-file")
            .arg(&self.console_key)
            .arg(live_console.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ftvm control protect: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }

    /// The primary gone (killed, or handed over) and the backup live: the live VM takes the
    /// primary's role and a new backup is started, waiting on a new channel port
    /// (`self.channel`) with the old primary's console address. Returns the live VM's console.
    pub fn new_backup(&mut self, g: &Path, o: &PairOptions) -> SocketAddr {
        // The old primary is gone (made sure of here).
        self.kill("primary");
        self.reprotections += 1;
        let live_console = self.backup_console;
        let log = format!("backup-{}", self.reprotections);
        self.primary = self.backup.take();
        self.logs_of[0] = std::mem::take(&mut self.logs_of[1]);
        self.backup_console = self.primary_console;
        self.primary_console = live_console;
        self.channel = addr(free_port());
        self.peer = self.channel;
        self.backup = Some(self.spawn("backup", g, o, &log));
        self.logs_of[1] = log;
        live_console
    }

    /// Another backup beside the pair's, on its own channel port and console (log
    /// `spare`); returns it and its channel address.
    pub fn spare_backup(&mut self, g: &Path, o: &PairOptions) -> (Child, SocketAddr) {
        let (channel, console) = (self.channel, self.backup_console);
        let spare = addr(free_port());
        self.channel = spare;
        self.backup_console = addr(free_port());
        let c = self.spawn("backup", g, o, "spare");
        (self.channel, self.backup_console) = (channel, console);
        (c, spare)
    }

    fn spawn(&self, role: &str, g: &Path, o: &PairOptions, log: &str) -> Child {
        let mut c = Command::new(FTVM);
        c.arg(role)
            .args(["--bios", FW_JUMP, "--mem", o.mem])
            .args(["--smp", &o.smp.to_string()])
            .args(
                o.boot
                    .clone()
                    .unwrap_or_else(|| guestctl::linux_boot_args(g)),
            )
            .arg("--key-file")
            .arg(&self.key)
            .arg("--console-key-file")
            .arg(&self.console_key)
            .args(["--arbiter", &self.arbiter, "--vm", "testvm"])
            .args(&o.extra);
        if role == "primary" {
            c.args(&o.primary_extra);
        } else {
            c.args(&o.backup_extra);
        }
        if role == "primary" {
            c.args(["--peer", &self.peer.to_string()])
                .args(["--console", &self.primary_console.to_string()]);
        } else {
            c.args(["--listen", &self.channel.to_string()])
                .args(["--console", &self.backup_console.to_string()]);
        }
        let err = std::fs::File::create(self.dir.join(format!("{log}.stderr"))).unwrap();
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start ftvm {role}: {e}"))
    }

    /// What the process in `role` now wrote to stderr so far.
    pub fn stderr(&self, role: &str) -> String {
        let log = &self.logs_of[usize::from(role != "primary")];
        std::fs::read_to_string(self.dir.join(format!("{log}.stderr"))).unwrap_or_default()
    }

    /// The operators' secret, as a client presents it.
    pub fn secret(&self) -> ft::console::Secret {
        ft::console::Secret::operator(ft::Key::from_file(&self.console_key).unwrap())
    }

    /// `STATUS` of the endpoint at `a`, with the operators' secret.
    pub fn status(&self, a: impl std::fmt::Display, t: Duration) -> std::io::Result<String> {
        ft::console::request(&a.to_string(), &self.secret(), "STATUS", t)
    }

    pub fn client(&self) -> ConsoleClient {
        let mut c = ConsoleClient::new(
            vec![self.primary_console, self.backup_console],
            self.secret(),
        );
        c.reconnect_for = Duration::from_secs(30);
        c
    }

    /// SIGKILL to one side.
    pub fn kill(&mut self, role: &str) {
        let c = if role == "primary" {
            self.primary.as_mut()
        } else {
            self.backup.as_mut()
        };
        if let Some(c) = c {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Powers the guest off from its console and checks that `role`'s process (the side
    /// serving it) exits with 0 within 30 s.
    pub fn power_off(&mut self, c: &mut ConsoleClient, role: &str) {
        c.send(b"\x04poweroff\n").unwrap();
        assert_eq!(
            self.wait(role, Duration::from_secs(30)),
            Some(0),
            "{}",
            self.logs()
        );
    }

    /// Waits up to `d` for a side to exit; its exit code.
    pub fn wait(&mut self, role: &str, d: Duration) -> Option<i32> {
        let c = if role == "primary" {
            self.primary.as_mut()?
        } else {
            self.backup.as_mut()?
        };
        let t0 = Instant::now();
        while t0.elapsed() < d {
            if let Ok(Some(s)) = c.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Both sides report a dump of their stderr (for assertion messages).
    pub fn logs(&self) -> String {
        format!(
            "--- primary:\n{}--- backup:\n{}",
            self.stderr("primary"),
            self.stderr("backup")
        )
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.kill("primary");
        self.kill("backup");
        if std::thread::panicking() {
            // Whatever failed, both sides' account of it is in the test's output.
            eprintln!(
                "the pair's logs (kept in {}):\n{}",
                self.dir.display(),
                self.logs()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Waits for the guest's shell and starts the counter service (`n=K` for each line).
pub fn start_counter(c: &mut ConsoleClient) {
    wait_for_shell(c);
    c.send(b"stty -echo; i=0; while read l; do i=$((i+1)); echo \"n=$i\"; done\n")
        .unwrap();
}

/// Waits until the guest's shell answers a command.
pub fn wait_for_shell(c: &mut ConsoleClient) {
    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no shell within 120 s"
        );
        c.send(b"echo READY-$((6*7))\n").unwrap();
        if c.read_line_until(|l| l.ends_with("READY-42"), Duration::from_secs(3))
            .unwrap()
            .is_some()
        {
            break;
        }
    }
}

/// One increment: sends a line, expects `n=want`.
pub fn increment(c: &mut ConsoleClient, want: u64, logs: &dyn Fn() -> String) {
    c.send(b"inc\n").unwrap();
    expect(c, want, logs);
}

/// Expects the next counter answer to be `want`.
pub fn expect(c: &mut ConsoleClient, want: u64, logs: &dyn Fn() -> String) {
    let line = c
        .read_line_until(|l| l.starts_with("n="), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("increment {want}: {e}\n{}", logs()))
        .unwrap_or_else(|| panic!("no answer to increment {want}\n{}", logs()));
    let v: u64 = line[2..].trim().parse().unwrap();
    assert_eq!(
        v,
        want,
        "the counter skipped or repeated a value\n{}",
        logs()
    );
}

/// A TCP + UDP forwarder in front of the backup's channel port: `cut` stops all traffic in
/// both directions (the link is gone, both sides still reach the arbiter); `flip_at` flips one
/// bit of the primary-to-backup stream at that byte offset.
pub struct Proxy {
    pub addr: SocketAddr,
    target: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    pub cut: Arc<AtomicBool>,
    pub flip_at: Arc<AtomicU64>,
    /// Bytes forwarded from the primary to the backup so far.
    pub forwarded: Arc<AtomicU64>,
}

impl Proxy {
    pub fn new() -> Proxy {
        let port = free_port();
        let addr = self::addr(port);
        let target = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
        let cut = Arc::new(AtomicBool::new(false));
        let flip_at = Arc::new(AtomicU64::new(u64::MAX));
        let forwarded = Arc::new(AtomicU64::new(0));
        let l = TcpListener::bind(addr).unwrap();
        {
            let (target, cut, flip_at) = (target.clone(), cut.clone(), flip_at.clone());
            let fw = forwarded.clone();
            std::thread::spawn(move || {
                for s in l.incoming() {
                    let Ok(client) = s else { continue };
                    let Some(to) = *target.lock().unwrap() else {
                        continue;
                    };
                    let Ok(server) = TcpStream::connect(to) else {
                        continue;
                    };
                    pump(
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        cut.clone(),
                        flip_at.clone(),
                        fw.clone(),
                    );
                    pump(
                        server,
                        client,
                        cut.clone(),
                        Arc::new(AtomicU64::new(u64::MAX)),
                        Arc::new(AtomicU64::new(0)),
                    );
                }
            });
        }
        let u = UdpSocket::bind(addr).unwrap();
        {
            let (target, cut) = (target.clone(), cut.clone());
            std::thread::spawn(move || {
                let mut primary: Option<SocketAddr> = None;
                let mut b = [0u8; 2048];
                loop {
                    let Ok((n, from)) = u.recv_from(&mut b) else {
                        continue;
                    };
                    if cut.load(Ordering::Relaxed) {
                        continue;
                    }
                    let Some(to) = *target.lock().unwrap() else {
                        continue;
                    };
                    if from == to {
                        if let Some(p) = primary {
                            let _ = u.send_to(&b[..n], p);
                        }
                    } else {
                        primary = Some(from);
                        let _ = u.send_to(&b[..n], to);
                    }
                }
            });
        }
        Proxy {
            addr,
            target,
            cut,
            flip_at,
            forwarded,
        }
    }

    fn target(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = Some(to);
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    cut: Arc<AtomicBool>,
    flip_at: Arc<AtomicU64>,
    forwarded: Arc<AtomicU64>,
) {
    std::thread::spawn(move || {
        let mut b = [0u8; 16384];
        let mut off = 0u64;
        loop {
            let n = match from.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if cut.load(Ordering::Relaxed) {
                // The link is gone: nothing passes, nothing is closed (as when a cable is cut).
                continue;
            }
            let f = flip_at.load(Ordering::Relaxed);
            if f >= off && f < off + n as u64 {
                b[(f - off) as usize] ^= 0x10;
            }
            off += n as u64;
            forwarded.store(off, Ordering::Relaxed);
            if to.write_all(&b[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// Plays a primary without the key against the backup at `to`; panics if it is accepted.
pub fn stranger(to: SocketAddr) {
    let t0 = Instant::now();
    let mut s = loop {
        match TcpStream::connect(to) {
            Ok(s) => break s,
            Err(e) if t0.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the backup does not listen on {to}: {e}"),
        }
    };
    // The channel's opening, well formed but under a key the pair does not hold.
    let mut opening = ft::wire::MAGIC.to_vec();
    let psk = ft::noise::psk(&ft::Key::random(), ft::wire::PSK_PURPOSE);
    let mut hs = ft::noise::handshake(ft::noise::Role::Initiator, &psk, ft::wire::MAGIC);
    ft::noise::write_handshake(&mut opening, &mut hs, &[]).unwrap();
    let _ = s.write_all(&opening);
    // The backup answers with an empty message (it could not authenticate us), then hangs up.
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert!(reply == [0, 0], "the backup answered a stranger: {reply:?}");
}

pub use guestctl::etcd::Etcd;

/// A real etcd on free loopback ports (`guestctl::etcd`), once its client port answers. None
/// (skipped, or a failure under `cargo xtask test`) when etcd is not installed.
pub fn start_etcd() -> Option<Etcd> {
    Etcd::start("ft", |url| {
        url.strip_prefix("http://")
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .is_some_and(|a| TcpStream::connect(a).is_ok())
    })
}

/// Debian's passt on a socket of its own, forwarding free host TCP ports to guest ports (the
/// counter service's 7000 by default); killed on drop. None (skipped, or a failure) without passt.
pub struct Passt {
    child: Child,
    pub sock: PathBuf,
    /// The host port forwarded to the first guest port.
    pub port: u16,
    /// The host port forwarded to each guest port, in the order asked.
    pub ports: Vec<u16>,
}

impl Passt {
    pub fn start(name: &str) -> Option<Passt> {
        Self::forwarding(name, &[7000])
    }

    /// passt forwarding a free host port to each of `guest_ports`.
    pub fn forwarding(name: &str, guest_ports: &[u16]) -> Option<Passt> {
        if !Path::new("/usr/bin/passt").exists() {
            guestctl::skip("passt is not installed (Debian package `passt`)");
            return None;
        }
        let sock = std::env::temp_dir().join(format!("ftvm-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        let ports: Vec<u16> = guest_ports.iter().map(|_| free_port()).collect();
        let mut cmd = Command::new("/usr/bin/passt");
        cmd.args(["-f", "-q", "-s"]).arg(&sock);
        for (h, g) in ports.iter().zip(guest_ports) {
            cmd.args(["-t", &format!("{h}:{g}")]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start passt");
        let p = Passt {
            child,
            sock,
            port: ports[0],
            ports,
        };
        let t = Instant::now();
        while !p.sock.exists() {
            assert!(t.elapsed() < Duration::from_secs(10), "passt did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(p)
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}
