//! `cargo xtask soak`: a fault-tolerant pair under a seeded random schedule of faults, checked
//! after every one of them (issue 15's soak).
//!
//! One protected VM runs as an `ftvm primary` and an `ftvm backup` process on this machine,
//! with a file arbiter of the run's own and a fault-injecting proxy of this harness on the
//! logging channel (TCP and the UDP heartbeats). The busybox guest boots with a shared disk and
//! runs `appendlog`: numbered, checksummed records, each appended, fsynced and then reported on
//! the console as `appendlog: record N durable`. That one workload gives two exact invariants:
//! the console stream (what an outside observer was shown) must carry the reports 1, 2, 3, ...
//! with no number repeated or skipped across any failover, and the disk must hold at least every
//! record reported durable, in order, untorn. A second primary writing the shared disk would
//! break the second one; a side replaying or dropping released output would break the first.
//!
//! After each fault the harness waits (bounded) until exactly one side is the primary, a backup
//! protects it again (the harness starts a new backup and runs `ftvm control protect`, as an
//! operator or the agent would) and the guest made progress; then it checks the disk. Each
//! fault's kind and parameter come from the seed alone, so `--seed S --faults K` replays the
//! schedule that failed at step K (the timing around it is the host's).
//!
//! Every process is the leader of its own group, dies with the harness (`PR_SET_PDEATHSIG`) and
//! is killed at the end; the run's directory is removed unless the run failed or `--keep`.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::guest;
use crate::server::own_group;

/// Options of `cargo xtask soak`.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// Faults to inject.
    #[arg(long, default_value_t = 50)]
    pub faults: u64,
    /// Seed of the schedule (default: from the clock; printed either way).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop injecting after this many minutes even if fewer faults ran.
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Only these fault kinds (comma-separated; default: all of them). `--kinds list` lists them.
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Guest RAM (a smaller guest is cloned faster at each re-protection).
    #[arg(long, default_value = "96M")]
    pub mem: String,
    /// The guest writer's pause between two records, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub record_ms: u64,
    /// Give up on a fault whose recovery takes longer than this many seconds.
    #[arg(long, default_value_t = 90)]
    pub recovery_timeout: u64,
    /// The ftvm binary to use (default: build it with `cargo build --release -p ftvm`).
    #[arg(long)]
    pub ftvm: Option<PathBuf>,
    /// Keep the run's directory (logs, disk image) even when it passes.
    #[arg(long)]
    pub keep: bool,
    /// Never install anything; only say what is missing.
    #[arg(long)]
    pub no_install: bool,
}

/// The fault kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// SIGKILL of the primary: the backup goes live.
    KillPrimary,
    /// SIGKILL of the backup: the primary runs on alone.
    KillBackup,
    /// SIGSTOP of the primary for less than the heartbeat timeout, then SIGCONT.
    StopPrimaryShort,
    /// SIGSTOP of the primary for longer than the timeout: the backup goes live, the old
    /// primary must find itself fenced when it wakes.
    StopPrimaryLong,
    /// SIGSTOP of the backup, shorter than the timeout.
    StopBackupShort,
    /// SIGSTOP of the backup, longer than the timeout.
    StopBackupLong,
    /// The link cut both ways (TCP and heartbeats dropped) for a while, then healed.
    LinkCut,
    /// The logging stream held (nothing read or forwarded) while heartbeats pass.
    LinkStall,
    /// Every chunk of the stream and every heartbeat delayed.
    LinkDelay,
    /// The channel's connections closed mid-stream.
    LinkReset,
    /// One bit flipped in the primary's stream.
    LinkCorrupt,
    /// Heartbeats (UDP) dropped both ways while the stream passes.
    HeartbeatDrop,
    /// Forged heartbeats flooded at the backup's heartbeat port.
    HeartbeatFlood,
    /// The arbiter unreachable for a while (nothing else wrong).
    ArbiterOutage,
    /// The arbiter unreachable, and the primary killed during the outage.
    ArbiterOutageKill,
}

const KINDS: [Kind; 15] = [
    Kind::KillPrimary,
    Kind::KillBackup,
    Kind::StopPrimaryShort,
    Kind::StopPrimaryLong,
    Kind::StopBackupShort,
    Kind::StopBackupLong,
    Kind::LinkCut,
    Kind::LinkStall,
    Kind::LinkDelay,
    Kind::LinkReset,
    Kind::LinkCorrupt,
    Kind::HeartbeatDrop,
    Kind::HeartbeatFlood,
    Kind::ArbiterOutage,
    Kind::ArbiterOutageKill,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::KillPrimary => "kill-primary",
            Kind::KillBackup => "kill-backup",
            Kind::StopPrimaryShort => "stop-primary-short",
            Kind::StopPrimaryLong => "stop-primary-long",
            Kind::StopBackupShort => "stop-backup-short",
            Kind::StopBackupLong => "stop-backup-long",
            Kind::LinkCut => "link-cut",
            Kind::LinkStall => "link-stall",
            Kind::LinkDelay => "link-delay",
            Kind::LinkReset => "link-reset",
            Kind::LinkCorrupt => "link-corrupt",
            Kind::HeartbeatDrop => "heartbeat-drop",
            Kind::HeartbeatFlood => "heartbeat-flood",
            Kind::ArbiterOutage => "arbiter-outage",
            Kind::ArbiterOutageKill => "arbiter-outage-kill",
        }
    }

    /// The fault's parameter (milliseconds) from the schedule's random source.
    fn param(self, rng: &mut Rng) -> u64 {
        match self {
            Kind::KillPrimary | Kind::KillBackup | Kind::LinkReset | Kind::LinkCorrupt => 0,
            // The heartbeat timeout is 500 ms: short stops stay well under it, long ones
            // well over (a stop near it may or may not fail over; both are correct).
            Kind::StopPrimaryShort | Kind::StopBackupShort => 30 + rng.below(270),
            Kind::StopPrimaryLong | Kind::StopBackupLong => 800 + rng.below(2200),
            Kind::LinkCut => 100 + rng.below(2900),
            Kind::LinkStall => 100 + rng.below(1900),
            Kind::LinkDelay => 5 + rng.below(95),
            Kind::HeartbeatDrop => 100 + rng.below(1900),
            Kind::HeartbeatFlood => 1000 + rng.below(2000),
            Kind::ArbiterOutage => 500 + rng.below(2500),
            Kind::ArbiterOutageKill => 300 + rng.below(2700),
        }
    }

    /// Whether the fault must leave the pair as it was (no side may stop): forged heartbeats
    /// and an arbiter nobody asks must change nothing.
    fn must_not_fail_over(self) -> bool {
        matches!(self, Kind::HeartbeatFlood | Kind::ArbiterOutage)
    }
}

/// A cheap seeded random source (xorshift64*), so a schedule is the seed's alone.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The schedule: fault `k` (from 1) of the seed, among `kinds`.
fn schedule(seed: u64, kinds: &[Kind], n: u64) -> Vec<(Kind, u64)> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let k = kinds[rng.below(kinds.len() as u64) as usize];
            (k, k.param(&mut rng))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The proxy on the logging channel.

const CUT_TCP: u8 = 1;
const CUT_UDP: u8 = 2;
const STALL_TCP: u8 = 4;

/// What the proxy does to the traffic now.
#[derive(Default)]
struct ProxyState {
    target: Mutex<Option<SocketAddr>>,
    /// `CUT_TCP | CUT_UDP | STALL_TCP`.
    mode: AtomicU8,
    /// Delay added to every chunk and datagram.
    delay_ms: AtomicU64,
    /// Flip a bit in the next chunk from the primary.
    flip: AtomicBool,
    /// Connections accepted before this generation are closed.
    reset_gen: AtomicU64,
    /// Connections accepted so far.
    accepted: AtomicU64,
}

/// A TCP and UDP forwarder in front of the backup's channel port, which the faults drive.
struct Proxy {
    addr: SocketAddr,
    st: Arc<ProxyState>,
}

impl Proxy {
    fn start() -> Result<Proxy> {
        let l = TcpListener::bind("127.0.0.1:0").context("binding the proxy")?;
        let addr = l.local_addr()?;
        let u = UdpSocket::bind(addr).context("binding the proxy's UDP port")?;
        let st = Arc::new(ProxyState::default());
        let s = Arc::clone(&st);
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(client) = c else { continue };
                let Some(to) = *s.target.lock().unwrap_or_else(|p| p.into_inner()) else {
                    continue;
                };
                // A backup just started may not listen yet.
                let t = Instant::now();
                let server = loop {
                    match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                        Ok(x) => break Some(x),
                        Err(_) if t.elapsed() < Duration::from_secs(5) => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        Err(_) => break None,
                    }
                };
                let Some(server) = server else { continue };
                let generation = s.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                pump(client, s2, Arc::clone(&s), true, generation);
                pump(server, c2, Arc::clone(&s), false, generation);
            }
        });
        let s = Arc::clone(&st);
        std::thread::spawn(move || udp_forward(u, s));
        Ok(Proxy { addr, st })
    }

    fn retarget(&self, to: SocketAddr) {
        *self.st.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(to);
    }

    fn set_mode(&self, m: u8) {
        self.st.mode.store(m, Ordering::SeqCst);
    }
}

/// Forwards one direction of a proxied connection until either end closes or it is reset.
fn pump(mut from: TcpStream, mut to: TcpStream, st: Arc<ProxyState>, fwd: bool, generation: u64) {
    std::thread::spawn(move || {
        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
        let mut b = [0u8; 16384];
        loop {
            if st.reset_gen.load(Ordering::SeqCst) >= generation {
                break;
            }
            if st.mode.load(Ordering::SeqCst) & STALL_TCP != 0 {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let n = match from.read(&mut b) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => break,
            };
            if st.mode.load(Ordering::SeqCst) & CUT_TCP != 0 {
                // A cut cable: nothing passes, nothing is closed.
                continue;
            }
            if fwd && st.flip.swap(false, Ordering::SeqCst) {
                b[n / 2] ^= 0x10;
            }
            let d = st.delay_ms.load(Ordering::SeqCst);
            if d > 0 {
                std::thread::sleep(Duration::from_millis(d));
            }
            if to.write_all(&b[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// The heartbeats: the primary's datagrams to the current target, the backup's back to the
/// primary (the last sender that was not the target).
fn udp_forward(u: UdpSocket, st: Arc<ProxyState>) {
    let _ = u.set_read_timeout(Some(Duration::from_millis(100)));
    let mut primary: Option<SocketAddr> = None;
    let mut b = [0u8; 2048];
    loop {
        let Ok((n, from)) = u.recv_from(&mut b) else {
            continue;
        };
        if st.mode.load(Ordering::SeqCst) & CUT_UDP != 0 {
            continue;
        }
        let Some(target) = *st.target.lock().unwrap_or_else(|p| p.into_inner()) else {
            continue;
        };
        let to = if from == target {
            match primary {
                Some(p) => p,
                None => continue,
            }
        } else {
            primary = Some(from);
            target
        };
        let d = st.delay_ms.load(Ordering::SeqCst);
        if d == 0 {
            let _ = u.send_to(&b[..n], to);
        } else if let Ok(u2) = u.try_clone() {
            let data = b[..n].to_vec();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(d));
                let _ = u2.send_to(&data, to);
            });
        }
    }
}

/// Sends forged heartbeats (right magic and size, tags under no key) to `to` as fast as one
/// thread can for `d`; returns how many were sent.
fn flood(to: SocketAddr, d: Duration) -> u64 {
    let Ok(u) = UdpSocket::bind("127.0.0.1:0") else {
        return 0;
    };
    let mut rng = Rng::new(to.port().into());
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut dgram = [0u8; 41];
    dgram[..8].copy_from_slice(b"FTVMHB02");
    while t0.elapsed() < d {
        for _ in 0..256 {
            dgram[8..16].copy_from_slice(&sent.to_le_bytes());
            dgram[25..33].copy_from_slice(&rng.next().to_le_bytes());
            dgram[33..41].copy_from_slice(&rng.next().to_le_bytes());
            if u.send_to(&dgram, to).is_ok() {
                sent += 1;
            }
        }
    }
    sent
}

// ---------------------------------------------------------------------------------------------
// The guest's console.

/// What the console reader saw.
#[derive(Default)]
struct Progress {
    /// The last record reported durable.
    durable: AtomicU64,
    /// When the last report arrived (ms since the run started).
    last_report_ms: AtomicU64,
    /// Reports out of order, errors of the writer.
    anomalies: Mutex<Vec<String>>,
    /// The last console lines (for failure reports).
    tail: Mutex<VecDeque<String>>,
    stop: AtomicBool,
}

/// Reads the console through failovers (the client resumes at its output offset), assembling
/// lines across reads, and checks that the reports count up by one.
fn reader(
    mut c: ft::console::client::ConsoleClient,
    p: Arc<Progress>,
    t0: Instant,
) -> ft::console::client::ConsoleClient {
    let mut line = Vec::new();
    let mut heard = Instant::now();
    while !p.stop.load(Ordering::SeqCst) {
        let got = match c.read_some(Duration::from_millis(200)) {
            Ok(b) => b,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if got.is_empty() {
            // A frozen or cut-off primary keeps its connection open and says nothing: look
            // for the live endpoint (the output resumes at the same offset).
            if heard.elapsed() > Duration::from_secs(2) {
                heard = Instant::now();
                let _ = c.connect();
            }
            continue;
        }
        heard = Instant::now();
        for b in got {
            if b != b'\n' {
                line.push(b);
                continue;
            }
            let l = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            line.clear();
            {
                let mut t = p.tail.lock().unwrap_or_else(|e| e.into_inner());
                t.push_back(l.clone());
                if t.len() > 40 {
                    t.pop_front();
                }
            }
            let Some(rest) = l.strip_prefix("appendlog: ") else {
                continue;
            };
            let n = rest
                .strip_prefix("record ")
                .and_then(|r| r.strip_suffix(" durable"))
                .and_then(|n| n.parse::<u64>().ok());
            let mut a = p.anomalies.lock().unwrap_or_else(|e| e.into_inner());
            match n {
                Some(n) => {
                    let last = p.durable.load(Ordering::SeqCst);
                    if n != last + 1 {
                        a.push(format!(
                            "console: record {n} reported after record {last} (repeated or skipped output)"
                        ));
                    }
                    p.durable.store(n.max(last), Ordering::SeqCst);
                    p.last_report_ms
                        .store(t0.elapsed().as_millis() as u64, Ordering::SeqCst);
                }
                None => a.push(format!("the guest's writer said: {l}")),
            }
        }
    }
    c
}

// ---------------------------------------------------------------------------------------------
// The records on the disk.

/// Checks that `text` begins with records 1..=`want`, each whole and with its checksum
/// (after them a record may be torn: the writer may be in the middle of one); returns how many
/// good records there are.
fn check_records(text: &str, want: u64) -> std::result::Result<u64, String> {
    let mut n = 0u64;
    for line in text.split_inclusive('\n') {
        let good = line.ends_with('\n')
            && line.trim_end().rsplit_once(' ').is_some_and(|(body, crc)| {
                body.split(' ').next().and_then(|s| s.parse::<u64>().ok()) == Some(n + 1)
                    && u32::from_str_radix(crc, 16).ok()
                        == Some(guestctl::appendlog::crc32(body.as_bytes()))
            });
        if !good {
            if n < want {
                return Err(format!(
                    "record {} is bad or missing ({:?}) though {want} were reported durable",
                    n + 1,
                    line.chars().take(80).collect::<String>()
                ));
            }
            return Ok(n);
        }
        n += 1;
    }
    if n < want {
        return Err(format!("{n} records on the disk, {want} reported durable"));
    }
    Ok(n)
}

/// `/records` of the ext2 image (debugfs reads it while the guest runs).
fn read_records(img: &Path) -> Result<String> {
    guestctl::appendlog::read_image_file(img, "records")
        .context("running debugfs (apt-get install e2fsprogs)")
}

// ---------------------------------------------------------------------------------------------
// The pair.

fn signal(c: &Child, sig: i32) {
    if let Ok(pid) = i32::try_from(c.id()) {
        // SAFETY: kill(2) on a child of this process that has not been reaped (its pid cannot
        // have been reused).
        unsafe { libc::kill(pid, sig) };
    }
}

/// One side's process.
struct Side {
    child: Child,
    log: PathBuf,
}

/// A side's status, as its console endpoint says it.
#[derive(Clone, Debug)]
struct St {
    role: String,
    protected: bool,
    refused: u64,
    /// The peer's heartbeats taken (0 from an ftvm without the field).
    received: u64,
    max_gap: String,
}

struct Run {
    ftvm: PathBuf,
    guest: PathBuf,
    dir: PathBuf,
    disk: PathBuf,
    key: PathBuf,
    console_key: PathBuf,
    secret: ft::console::Secret,
    arbiter: PathBuf,
    mem: String,
    consoles: [SocketAddr; 2],
    sides: [Option<Side>; 2],
    /// The current backup's channel port (behind the proxy).
    channel: SocketAddr,
    proxy: Proxy,
    started: u32,
    /// Exits seen: (log, code).
    exits: Vec<(PathBuf, Option<i32>)>,
}

impl Run {
    fn spawn(&mut self, slot: usize, role: &str) -> Result<()> {
        self.started += 1;
        let log = self
            .dir
            .join(format!("{:04}-{role}-slot{slot}.log", self.started));
        let mut c = Command::new(&self.ftvm);
        c.arg(role)
            .args(["--bios", guestctl::FW_JUMP, "--mem", &self.mem])
            .args(guestctl::linux_boot_args(&self.guest))
            .arg("--drive")
            .arg(format!("file={}", self.disk.display()))
            .arg("--key-file")
            .arg(&self.key)
            .arg("--console-key-file")
            .arg(&self.console_key)
            .arg("--arbiter")
            .arg(format!("file:{}", self.arbiter.display()))
            .args(["--vm", "soak"])
            .args(["--console", &self.consoles[slot].to_string()]);
        if role == "primary" {
            c.args(["--peer", &self.proxy.addr.to_string()]);
        } else {
            c.args(["--listen", &self.channel.to_string()]);
        }
        let err = std::fs::File::create(&log)?;
        let child = own_group(&mut c)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .context("starting ftvm")?;
        self.sides[slot] = Some(Side { child, log });
        Ok(())
    }

    /// Reaps the sides that exited.
    fn reap(&mut self) {
        for s in &mut self.sides {
            let done = match s.as_mut().map(|x| x.child.try_wait()) {
                Some(Ok(Some(st))) => Some(st.code()),
                Some(Err(_)) => Some(None),
                _ => None,
            };
            if let Some(code) = done {
                if let Some(x) = s.take() {
                    self.exits.push((x.log, code));
                }
            }
        }
    }

    fn status(&self, slot: usize) -> Option<St> {
        let text = ft::console::request(
            &self.consoles[slot].to_string(),
            &self.secret,
            "STATUS",
            Duration::from_millis(400),
        )
        .ok()?;
        let f = |k: &str| ft::status::field(&text, k).map(str::to_string);
        Some(St {
            role: f("role")?,
            protected: f("protected")? == "yes",
            refused: f("heartbeats_refused")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            received: f("heartbeats_received")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            max_gap: f("peer_max_gap").unwrap_or_default(),
        })
    }

    fn alive(&self, slot: usize) -> bool {
        self.sides[slot].is_some()
    }

    /// The slot of the process that says it is the protected primary with a backup behind it.
    fn steady_primary(&self) -> Option<usize> {
        let st = [self.status(0), self.status(1)];
        (0..2).find(|&p| {
            self.alive(p)
                && self.alive(1 - p)
                && st[p]
                    .as_ref()
                    .is_some_and(|s| s.role == "primary" && s.protected)
                && st[1 - p].as_ref().is_some_and(|s| s.role == "backup")
        })
    }

    /// Starts a new backup in `slot` (its console address is the dead side's) on a new
    /// channel port behind the proxy, and has the primary in the other slot protected by it.
    fn reprotect(&mut self, slot: usize) -> Result<()> {
        self.channel = SocketAddr::from(([127, 0, 0, 1], guestctl::free_port()));
        self.proxy.retarget(self.channel);
        self.spawn(slot, "backup")?;
        let log = self.sides[slot]
            .as_ref()
            .map(|x| x.log.clone())
            .unwrap_or_default();
        let t = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("waiting for the primary")
        {
            if t.elapsed() > Duration::from_secs(20) {
                bail!("the new backup did not listen within 20 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = self.dir.join(format!("{:04}-protect.log", self.started));
        let mut c = own_group(
            Command::new(&self.ftvm)
                .arg("control")
                .arg("--console-key-file")
                .arg(&self.console_key)
                .args(["protect", "--backup", &self.proxy.addr.to_string()])
                .arg(self.consoles[1 - slot].to_string()),
        )
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(out.with_extension("err"))?)
        .spawn()
        .context("starting ftvm control protect")?;
        let t = Instant::now();
        loop {
            if let Some(st) = c.try_wait()? {
                if st.success() {
                    return Ok(());
                }
                bail!(
                    "ftvm control protect failed ({st}): {}",
                    std::fs::read_to_string(out.with_extension("err")).unwrap_or_default()
                );
            }
            if t.elapsed() > Duration::from_secs(120) {
                let _ = c.kill();
                let _ = c.wait();
                bail!("ftvm control protect did not end within 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Makes the arbiter unreachable (its path turns into a link to a plain file) or
    /// reachable again, atomically (rename over the link).
    fn arbiter_reachable(&self, yes: bool) -> Result<()> {
        let tmp = self.dir.join("arbiter.swap");
        let _ = std::fs::remove_file(&tmp);
        let to = if yes {
            self.dir.join("arbiter.d")
        } else {
            self.dir.join("arbiter.gone")
        };
        std::os::unix::fs::symlink(&to, &tmp)?;
        std::fs::rename(&tmp, &self.arbiter)?;
        Ok(())
    }

    fn kill_all(&mut self) {
        for s in self.sides.iter_mut().flatten() {
            if let Ok(pid) = i32::try_from(s.child.id()) {
                // SAFETY: kill(2) on the process group of a child this run started.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
        self.sides = [None, None];
    }

    fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log" || e == "err"));
        logs.sort();
        for l in logs.iter().rev().take(4).rev() {
            let text = std::fs::read_to_string(l).unwrap_or_default();
            let v: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {}\n", l.display()));
            for x in &v[v.len().saturating_sub(lines)..] {
                out.push_str(x);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// How one fault went.
struct Outcome {
    recovery: Duration,
    failover: bool,
}

/// Runs the task.
pub fn main(a: Args) -> Result<()> {
    if a.kinds.iter().any(|k| k == "list") {
        for k in KINDS {
            println!("{}", k.name());
        }
        return Ok(());
    }
    let kinds: Vec<Kind> = if a.kinds.is_empty() {
        KINDS.to_vec()
    } else {
        a.kinds
            .iter()
            .map(|n| {
                KINDS
                    .iter()
                    .copied()
                    .find(|k| k.name() == n)
                    .with_context(|| format!("no fault kind {n:?} (`--kinds list` lists them)"))
            })
            .collect::<Result<_>>()?
    };
    let opts = guest::BuildOptions {
        install_deps: !a.no_install && guest::deps::is_root(),
        ..Default::default()
    };
    use guest::deps::Group;
    guest::deps::require_groups(&[Group::Build, Group::Guest, Group::Run], opts.install_deps)
        .context("`cargo xtask soak` needs these Debian packages (debian-packages.txt)")?;
    let g = guest::build(&opts).context("building the guest")?;
    let ftvm = match &a.ftvm {
        Some(p) => p.clone(),
        None => crate::demo::build_ftvm()?,
    };
    run(&a, &kinds, &g.dir, &ftvm)
}

/// The short soak `cargo xtask test` runs after the tests (CI): [`CI_FAULTS`] faults of a
/// fixed seed, of every kind, with the ftvm the tests were built with.
pub fn ci(guest_dir: &Path, ftvm: &Path) -> Result<()> {
    let a = Args {
        faults: CI_FAULTS,
        seed: Some(CI_SEED),
        minutes: Some(4.0),
        kinds: Vec::new(),
        mem: "96M".into(),
        record_ms: 20,
        recovery_timeout: 90,
        ftvm: Some(ftvm.to_path_buf()),
        keep: false,
        no_install: true,
    };
    run(&a, &KINDS, guest_dir, ftvm)
}

/// The CI soak's length and seed.
pub const CI_FAULTS: u64 = 40;
/// See [`CI_FAULTS`].
pub const CI_SEED: u64 = 4;

/// The soak with the guest in `guest_dir` and the binary `ftvm`.
fn run(a: &Args, kinds: &[Kind], guest_dir: &Path, ftvm: &Path) -> Result<()> {
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let plan = schedule(seed, kinds, a.faults);
    println!(
        "soak: seed {seed}, {} faults of {} kinds, guest {} RAM, a record every {} ms",
        a.faults,
        kinds.len(),
        a.mem,
        a.record_ms
    );
    let dir = std::env::temp_dir().join(format!("ftvm-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("arbiter.d"))?;
    std::fs::write(dir.join("arbiter.gone"), b"the arbiter is out\n")?;
    let disk = dir.join("disk.img");
    std::fs::copy(guest_dir.join("disk.img"), &disk).context("copying the guest's disk")?;
    let key = dir.join("key");
    std::fs::write(&key, ft::Key::random().bytes())?;
    let console_key = dir.join("console-key");
    std::fs::write(&console_key, ft::Key::random().bytes())?;
    let secret = ft::console::Secret::operator(ft::Key::from_file(&console_key)?);
    let port = |_| SocketAddr::from(([127, 0, 0, 1], guestctl::free_port()));
    let mut r = Run {
        ftvm: ftvm.to_path_buf(),
        guest: guest_dir.to_path_buf(),
        dir: dir.clone(),
        disk,
        key,
        console_key,
        secret: secret.clone(),
        arbiter: dir.join("arbiter"),
        mem: a.mem.clone(),
        consoles: [port(0), port(1)],
        sides: [None, None],
        channel: port(2),
        proxy: Proxy::start()?,
        started: 0,
        exits: Vec::new(),
    };
    r.arbiter_reachable(true)?;
    r.proxy.retarget(r.channel);
    let result = soak(a, &plan, seed, &mut r);
    r.kill_all();
    // No process of the run may outlive it.
    let leaked = leaked_processes(&dir);
    let passed = result.as_ref().is_ok_and(|f| f.is_empty()) && leaked.is_empty();
    if !leaked.is_empty() {
        println!("soak: FAILED: processes left running: {leaked:?}");
    }
    if passed && !a.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("soak: the run's logs and disk are in {}", dir.display());
    }
    match result {
        Err(e) => Err(e.context(format!("soak (seed {seed})"))),
        Ok(f) if !f.is_empty() => bail!(
            "soak: {} failure(s); rerun with --seed {seed} --faults {}:\n{}",
            f.len(),
            a.faults,
            f.join("\n")
        ),
        Ok(_) if !leaked.is_empty() => bail!("soak: processes left running"),
        Ok(_) => Ok(()),
    }
}

/// Processes whose command line names the run's directory.
fn leaked_processes(dir: &Path) -> Vec<u32> {
    std::thread::sleep(Duration::from_millis(200));
    let needle = dir.display().to_string();
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&c).contains(&needle) {
                v.push(pid);
            }
        }
    }
    v
}

/// Boots the pair, injects the plan, checks; returns the failures (empty: passed).
fn soak(a: &Args, plan: &[(Kind, u64)], seed: u64, r: &mut Run) -> Result<Vec<String>> {
    let t_run = Instant::now();
    r.spawn(1, "backup")?;
    r.spawn(0, "primary")?;
    let mut c = ft::console::client::ConsoleClient::new(r.consoles.to_vec(), r.secret.clone());
    c.reconnect_for = Duration::from_secs(30);
    // The shell, then the writer.
    let t = Instant::now();
    loop {
        if t.elapsed() > Duration::from_secs(180) {
            bail!("no shell within 180 s\n{}", r.log_tail(20));
        }
        c.send(b"echo READY-$((6*7))\n")?;
        if c.read_line_until(|l| l.ends_with("READY-42"), Duration::from_secs(3))?
            .is_some()
        {
            break;
        }
    }
    println!("soak: guest up in {:.1} s", t.elapsed().as_secs_f64());
    c.send(
        format!(
            "stty -echo; : > /mnt/records; sync; appendlog /mnt/records 1000000000 {}\n",
            a.record_ms
        )
        .as_bytes(),
    )?;
    let progress = Arc::new(Progress::default());
    let rd = {
        let p = Arc::clone(&progress);
        std::thread::spawn(move || reader(c, p, t_run))
    };
    let mut failures = Vec::new();
    let mut by_kind: BTreeMap<Kind, (u64, u64, Vec<Duration>)> = BTreeMap::new();
    let mut all = Vec::new();
    // The writer runs and the pair is protected before the first fault.
    let ready = wait_steady(r, &progress, Instant::now(), a.recovery_timeout);
    if let Err(e) = ready {
        failures.push(format!("before the first fault: {e}"));
    }
    let mut done = 0u64;
    let mut unexpected: Vec<String> = Vec::new();
    for (k, &(kind, param)) in plan.iter().enumerate() {
        if !failures.is_empty() {
            break;
        }
        if a.minutes
            .is_some_and(|m| t_run.elapsed().as_secs_f64() > m * 60.0)
        {
            println!("soak: --minutes reached after {k} faults");
            break;
        }
        let step = k as u64 + 1;
        let before = progress.durable.load(Ordering::SeqCst);
        let res = fault(r, &progress, kind, param, a.recovery_timeout);
        let durable = progress.durable.load(Ordering::SeqCst);
        let disk = read_records(&r.disk)
            .map_err(|e| e.to_string())
            .and_then(|t| check_records(&t, durable));
        let mut anomalies: Vec<String> =
            std::mem::take(&mut *progress.anomalies.lock().unwrap_or_else(|e| e.into_inner()));
        if let Err(e) = &disk {
            anomalies.push(format!("disk: {e}"));
        }
        match res {
            Ok(o) => {
                let e = by_kind.entry(kind).or_default();
                e.0 += 1;
                e.1 += u64::from(o.failover);
                e.2.push(o.recovery);
                all.push(o.recovery);
                if o.failover && kind.must_not_fail_over() {
                    // Not a loss (the checks below still apply), but what this kind must not
                    // cause: listed in the summary with its step.
                    println!(
                        "soak: UNEXPECTED FAILOVER at fault {step} ({})",
                        kind.name()
                    );
                    unexpected.push(format!("fault {step} ({} {param} ms)", kind.name()));
                }
                println!(
                    "soak: fault {step}/{} {} ({param} ms): {}recovered in {:.0} ms; records {before} -> {durable}",
                    plan.len(),
                    kind.name(),
                    if o.failover { "failover, re-protected, " } else { "" },
                    o.recovery.as_secs_f64() * 1e3
                );
            }
            Err(e) => anomalies.push(format!("not recovered: {e}")),
        }
        done = step;
        for an in anomalies {
            let tail = progress
                .tail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n");
            println!(
                "soak: FAILURE at fault {step} ({} {param} ms), seed {seed}: {an}\nconsole:\n{tail}\n{}",
                kind.name(),
                r.log_tail(15)
            );
            failures.push(format!("fault {step} ({} {param} ms): {an}", kind.name()));
        }
    }
    // The end: stop the writer, power off, the whole file checked.
    progress.stop.store(true, Ordering::SeqCst);
    let mut c = rd
        .join()
        .map_err(|_| anyhow::anyhow!("the console reader panicked"))?;
    let durable = progress.durable.load(Ordering::SeqCst);
    if failures.is_empty() {
        c.send(b"\x03")?;
        std::thread::sleep(Duration::from_millis(300));
        c.send(b"\nsync; poweroff -f\n")?;
        let t = Instant::now();
        while (r.alive(0) || r.alive(1)) && t.elapsed() < Duration::from_secs(30) {
            r.reap();
            std::thread::sleep(Duration::from_millis(50));
        }
        r.kill_all();
        match read_records(&r.disk)
            .map_err(|e| e.to_string())
            .and_then(|t| check_records(&t, durable))
        {
            Ok(n) => {
                println!("soak: the disk holds {n} good records; {durable} were reported durable")
            }
            Err(e) => failures.push(format!("at the end: disk: {e}")),
        }
    }
    summary(
        done,
        t_run.elapsed(),
        &by_kind,
        &mut all,
        durable,
        &failures,
        seed,
    );
    println!(
        "unexpected failovers (a fault that must change nothing made a side stop): {}{}",
        unexpected.len(),
        if unexpected.is_empty() {
            String::new()
        } else {
            format!(": {}", unexpected.join(", "))
        }
    );
    Ok(failures)
}

/// How long the pair must be seen protected before a fault counts as recovered from.
const SETTLE: Duration = Duration::from_millis(1000);

/// Waits until the pair is protected (for [`SETTLE`]) and the writer made progress; the time
/// from `t0` until the protection that lasted was first seen.
fn wait_steady(r: &mut Run, p: &Progress, t0: Instant, timeout: u64) -> Result<Outcome> {
    let deadline = t0 + Duration::from_secs(timeout);
    let mut failover = false;
    let mut both_primary_since: Option<Instant> = None;
    let mut protects = 0;
    let mut steady: Option<(Instant, u64)> = None;
    loop {
        if Instant::now() > deadline {
            bail!(
                "stuck for {timeout} s: alive {:?}, status {:?} / {:?}, records {}",
                [r.alive(0), r.alive(1)],
                r.status(0),
                r.status(1),
                p.durable.load(Ordering::SeqCst)
            );
        }
        let n_before = r.exits.len();
        r.reap();
        failover |= r.exits.len() > n_before;
        if !r.alive(0) && !r.alive(1) {
            bail!(
                "both sides are gone: the VM is lost (exits: {:?})",
                r.exits.iter().rev().take(2).collect::<Vec<_>>()
            );
        }
        let st = [r.status(0), r.status(1)];
        let prim: Vec<usize> = (0..2)
            .filter(|&s| r.alive(s) && st[s].as_ref().is_some_and(|x| x.role == "primary"))
            .collect();
        if prim.len() == 2 {
            // A woken old primary may answer for a moment before it finds itself fenced.
            let since = *both_primary_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(10) {
                bail!("two sides say they are the primary for 10 s: {st:?}");
            }
            steady = None;
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        both_primary_since = None;
        if let [pr] = prim[..] {
            let other = 1 - pr;
            let s = st[pr].as_ref().map(|x| x.protected).unwrap_or(false);
            if s && r.alive(other) && st[other].as_ref().is_some_and(|x| x.role == "backup") {
                // Protected: it must stay so for SETTLE (a fault's effect may not show in the
                // statuses yet), and the guest must be seen working.
                let (since, from) = *steady
                    .get_or_insert_with(|| (Instant::now(), p.durable.load(Ordering::SeqCst)));
                if since.elapsed() >= SETTLE && p.durable.load(Ordering::SeqCst) >= from + 2 {
                    return Ok(Outcome {
                        recovery: since.duration_since(t0),
                        failover,
                    });
                }
                if since.elapsed() > Duration::from_secs(30) {
                    bail!("protected, but no record reported for 30 s (stuck at {from})");
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            steady = None;
            if !s && !r.alive(other) {
                failover = true;
                protects += 1;
                if protects > 3 {
                    bail!("three re-protections failed");
                }
                if let Err(e) = r.reprotect(other) {
                    println!("soak: re-protection failed (will retry): {e:#}");
                    if let Some(mut x) = r.sides[other].take() {
                        let _ = x.child.kill();
                        let _ = x.child.wait();
                    }
                }
                continue;
            }
        }
        steady = None;
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Injects one fault, then waits for the recovery.
fn fault(r: &mut Run, p: &Progress, kind: Kind, ms: u64, timeout: u64) -> Result<Outcome> {
    let prim = match r.steady_primary() {
        Some(p) => p,
        None => {
            wait_steady(r, p, Instant::now(), timeout).context("before the fault")?;
            r.steady_primary()
                .context("the pair is not in its steady state before the fault")?
        }
    };
    let back = 1 - prim;
    let d = Duration::from_millis(ms);
    let side =
        |r: &Run, s: usize| -> Result<()> { r.sides[s].as_ref().map(|_| ()).context("side gone") };
    match kind {
        Kind::KillPrimary | Kind::KillBackup => {
            let s = if kind == Kind::KillPrimary {
                prim
            } else {
                back
            };
            side(r, s)?;
            if let Some(x) = r.sides[s].as_mut() {
                let _ = x.child.kill();
            }
        }
        Kind::StopPrimaryShort
        | Kind::StopPrimaryLong
        | Kind::StopBackupShort
        | Kind::StopBackupLong => {
            let s = if matches!(kind, Kind::StopPrimaryShort | Kind::StopPrimaryLong) {
                prim
            } else {
                back
            };
            side(r, s)?;
            if let Some(x) = r.sides[s].as_ref() {
                signal(&x.child, libc::SIGSTOP);
                std::thread::sleep(d);
                signal(&x.child, libc::SIGCONT);
            }
        }
        Kind::LinkCut => {
            r.proxy.set_mode(CUT_TCP | CUT_UDP);
            std::thread::sleep(d);
            r.proxy.set_mode(0);
        }
        Kind::LinkStall => {
            r.proxy.set_mode(STALL_TCP);
            std::thread::sleep(d);
            r.proxy.set_mode(0);
        }
        Kind::LinkDelay => {
            r.proxy.st.delay_ms.store(ms, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(2));
            r.proxy.st.delay_ms.store(0, Ordering::SeqCst);
        }
        Kind::LinkReset => {
            let g = r.proxy.st.accepted.load(Ordering::SeqCst);
            r.proxy.st.reset_gen.store(g, Ordering::SeqCst);
        }
        Kind::LinkCorrupt => {
            r.proxy.st.flip.store(true, Ordering::SeqCst);
            let t = Instant::now();
            while r.proxy.st.flip.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(5));
            }
            r.proxy.st.flip.store(false, Ordering::SeqCst);
        }
        Kind::HeartbeatDrop => {
            r.proxy.set_mode(CUT_UDP);
            std::thread::sleep(d);
            r.proxy.set_mode(0);
        }
        Kind::HeartbeatFlood => {
            let before = r.status(back);
            let t = Instant::now();
            let sent = flood(r.channel, d);
            let took = t.elapsed();
            // The backup publishes its status every 200 ms.
            let after = r.status(back);
            let (b, a) = (before.as_ref(), after.as_ref());
            let delta = |f: fn(&St) -> u64| match (b, a) {
                (Some(b), Some(a)) => f(a).saturating_sub(f(b)),
                _ => 0,
            };
            println!(
                "soak:   flood: {sent} forged heartbeats in {ms} ms ({:.0}/s) refused {}; the primary's taken meanwhile {} (one per 50 ms: {}); the backup's longest silence from the primary {}",
                sent as f64 / took.as_secs_f64(),
                delta(|s| s.refused),
                delta(|s| s.received),
                took.as_millis() / 50,
                a.map_or("?".into(), |s| s.max_gap.clone())
            );
        }
        Kind::ArbiterOutage => {
            r.arbiter_reachable(false)?;
            std::thread::sleep(d);
            r.arbiter_reachable(true)?;
        }
        Kind::ArbiterOutageKill => {
            r.arbiter_reachable(false)?;
            if let Some(x) = r.sides[prim].as_mut() {
                let _ = x.child.kill();
            }
            std::thread::sleep(d);
            r.arbiter_reachable(true)?;
        }
    }
    // Recovery counts from the fault's end (a stop, a cut or an outage has lasted until now).
    wait_steady(r, p, Instant::now(), timeout)
}

fn pct(v: &[Duration], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)].as_secs_f64() * 1e3
}

fn summary(
    done: u64,
    took: Duration,
    by_kind: &BTreeMap<Kind, (u64, u64, Vec<Duration>)>,
    all: &mut [Duration],
    durable: u64,
    failures: &[String],
    seed: u64,
) {
    println!(
        "\nsoak summary: seed {seed}, {done} faults in {:.1} min, {durable} records reported durable, {} failure(s)",
        took.as_secs_f64() / 60.0,
        failures.len()
    );
    println!(
        "{:<22} {:>6} {:>9} {:>11} {:>9} {:>9}",
        "kind", "faults", "failovers", "median ms", "p99 ms", "max ms"
    );
    for (k, (n, f, v)) in by_kind {
        let mut v = v.clone();
        v.sort();
        println!(
            "{:<22} {:>6} {:>9} {:>11.0} {:>9.0} {:>9.0}",
            k.name(),
            n,
            f,
            pct(&v, 0.5),
            pct(&v, 0.99),
            pct(&v, 1.0)
        );
    }
    all.sort();
    println!(
        "{:<22} {:>6} {:>9} {:>11.0} {:>9.0} {:>9.0}",
        "all",
        all.len(),
        by_kind.values().map(|x| x.1).sum::<u64>(),
        pct(all, 0.5),
        pct(all, 0.99),
        pct(all, 1.0)
    );
    for f in failures {
        println!("FAILURE: {f}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_the_seeds_alone() {
        let a = schedule(7, &KINDS, 200);
        assert_eq!(a, schedule(7, &KINDS, 200));
        assert_ne!(a, schedule(8, &KINDS, 200));
        // Every kind comes up in 200 draws.
        for k in KINDS {
            assert!(a.iter().any(|(x, _)| *x == k), "{k:?} never drawn");
        }
        // A longer run begins with the shorter one's faults (step K reproduces).
        assert_eq!(&schedule(7, &KINDS, 300)[..200], &a[..]);
    }

    #[test]
    fn the_ci_seed_draws_every_kind() {
        let plan = schedule(CI_SEED, &KINDS, CI_FAULTS);
        for k in KINDS {
            assert!(plan.iter().any(|(x, _)| *x == k), "{k:?} never drawn");
        }
    }

    #[test]
    fn records_are_checked_in_order_and_whole() {
        let rec = |n: u64| {
            let body = format!("{n} payload");
            format!(
                "{body} {:08x}\n",
                guestctl::appendlog::crc32(body.as_bytes())
            )
        };
        let good: String = (1..=5).map(rec).collect();
        assert_eq!(check_records(&good, 5), Ok(5));
        assert_eq!(check_records(&good, 3), Ok(5));
        assert!(check_records(&good, 6).is_err());
        // A torn tail after what was reported is the writer at work.
        assert_eq!(check_records(&format!("{good}6 pay"), 5), Ok(5));
        // A gap, a repeat or a bad checksum before it is a loss.
        let gap: String = [1, 2, 4].into_iter().map(rec).collect();
        assert!(check_records(&gap, 3).is_err());
        let rep: String = [1, 2, 2, 3].into_iter().map(rec).collect();
        assert!(check_records(&rep, 3).is_err());
        let bad = good.replacen("3 payload", "3 paYload", 1);
        assert!(check_records(&bad, 5).is_err());
    }
}
