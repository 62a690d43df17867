//! `cargo xtask bench --ft-io`: disk and network throughput inside the Linux guest, each on
//! `ftvm run` alone and on a fault-tolerant pair, interleaved in the same run, with the log
//! bandwidth the pair spent on each. Appends (or replaces) its section of
//! `docs/ft-benchmarks.md`.
//!
//! Each round, in this order, a fresh VM each:
//!
//! 1. Disk: `ftvm run --drive`, a pair with one shared image (`--disk-mode shared`, the
//!    default), a pair with an image each (`--disk-mode non-shared`), a pair with one shared
//!    image that the backup reads itself (`--disk-reads own`: the log carries only digests of
//!    the reads). In the guest (ext2 on
//!    `/dev/vda`, mounted on `/mnt`): `dd` of `disk_mib` MiB from `/dev/zero` with
//!    `conv=fsync` (write MB/s), caches dropped, `dd` of the file back to `/dev/null` (read
//!    MB/s), then `iops` 4 KiB writes at scattered offsets of a file, each a `dd ... conv=fsync`
//!    of its own (synced writes per second; each also forks a `dd`, on both sides alike).
//! 2. Network, through passt (`passt -f -t none -u none -s SOCK`, the guest on
//!    `--netdev stream,path=SOCK`, its address from `udhcpc`): `ftvm run` alone, then a pair.
//!    The guest opens both connections to its gateway's address, which passt maps to the
//!    host's 127.0.0.1, where the benchmark listens. Host → guest: `wget -q -O - URL | wc -c`,
//!    an HTTP server of ours answering `net_mib` MiB; the time from its accepting to the
//!    guest's count on the console. Guest → host: a sink of ours counts `net_mib` MiB that
//!    `dd if=/dev/zero | nc GATEWAY PORT` sends; the time from accepting to the last byte.
//!
//! The log bytes of every step come from the primary's `ftvm status` (`log_sent`) before and
//! after it. Every wait is bounded; every process (VMs, passt) is killed when its guard drops;
//! the scratch directory is removed at the end.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use guestctl::{Console, FW_JUMP};

use super::doc;
use super::ft::{self, Client, Drives, Images, Pair, Rate, Scratch, Status};

/// Where the section starts and ends in docs/ft-benchmarks.md.
pub const BEGIN: &str = "<!-- bench --ft-io: begin -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- bench --ft-io: end -->";

/// What the benchmark is asked to do.
pub struct Options {
    pub reps: usize,
    pub disk_mib: u64,
    pub iops: u64,
    pub net_mib: u64,
    pub timeout: Duration,
    pub no_doc: bool,
    pub command: String,
}

impl Options {
    pub fn new(reps: usize, quick: bool, no_doc: bool, timeout: u64, command: String) -> Options {
        Options {
            reps,
            // The guest's disk is a 16 MiB ext2 with about 14.8 MB free.
            disk_mib: if quick { 4 } else { 8 },
            iops: if quick { 50 } else { 200 },
            net_mib: if quick { 4 } else { 16 },
            timeout: Duration::from_secs(timeout),
            no_doc,
            command,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A VM: `ftvm run` alone (its serial console on stdio) or a pair (the primary's console
// endpoint).

enum Vm {
    Alone(Box<Console>),
    Pair(Box<Pair>, Box<Client>),
}

fn base_args(c: &mut Command, im: &Images) {
    c.args(["--bios", FW_JUMP, "--mem", "256M", "--smp", "1"])
        .args(["--append", "console=ttyS0"])
        .arg("--kernel")
        .arg(&im.kernel)
        .arg("--initrd")
        .arg(&im.initrd);
}

impl Vm {
    fn alone(ftvm: &Path, im: &Images, extra: &[String], o: &Options) -> Result<Vm> {
        let mut cmd = Command::new(ftvm);
        cmd.arg("run");
        base_args(&mut cmd, im);
        cmd.args(extra).stderr(Stdio::null());
        let mut c = Console::spawn(cmd)?;
        c.wait_for("ftvm-guest: ready", o.timeout)?;
        c.run("true", o.timeout)?;
        Ok(Vm::Alone(Box::new(c)))
    }

    fn pair(
        ftvm: &Path,
        im: &Images,
        s: &Scratch,
        name: &str,
        drives: Drives,
        extra: &[String],
        o: &Options,
    ) -> Result<Vm> {
        let mut p = Pair::start_with(ftvm, im, s, name, drives, extra)?;
        let r = (|| -> Result<Client> {
            let deadline = Instant::now() + o.timeout;
            while p.status("primary").is_err() {
                if p.exited("primary") || Instant::now() > deadline {
                    bail!("the primary did not come up");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut c = p.client();
            c.connect(deadline)?;
            c.wait_shell(o.timeout)?;
            // Let the boot settle (the first status after pairing holds the snapshot).
            std::thread::sleep(Duration::from_secs(1));
            if !p.status("primary")?.protected {
                bail!("the primary is not protected");
            }
            Ok(c)
        })();
        match r {
            Ok(c) => Ok(Vm::Pair(Box::new(p), Box::new(c))),
            Err(e) => Err(anyhow!("{e:#}\n{}", p.logs())),
        }
    }

    /// Types a command followed by an end marker.
    fn start(&mut self, cmd: &str) -> Result<()> {
        let line = format!("{cmd}; echo END-$((40+2))\n");
        match self {
            Vm::Alone(c) => c.send(line.as_bytes())?,
            Vm::Pair(_, c) => c.send(line.as_bytes()),
        }
        Ok(())
    }

    /// Waits for the end marker: the lines before it (the echoed command among them).
    fn finish(&mut self, timeout: Duration) -> Result<Vec<String>> {
        match self {
            Vm::Alone(c) => Ok(c
                .wait_for("\nEND-42", timeout)?
                .lines()
                .map(str::to_string)
                .collect()),
            Vm::Pair(_, c) => Ok(c.read_until(|l| l == "END-42", timeout, None)?.0),
        }
    }

    /// Runs a command; its output lines and the host seconds from typing it to its end.
    fn run(&mut self, cmd: &str, timeout: Duration) -> Result<(Vec<String>, f64)> {
        let t0 = Instant::now();
        self.start(cmd)?;
        let l = self.finish(timeout)?;
        Ok((l, t0.elapsed().as_secs_f64()))
    }

    /// The primary's status (none for a lone VM).
    fn status(&self) -> Result<Option<Status>> {
        match self {
            Vm::Alone(_) => Ok(None),
            Vm::Pair(p, _) => Ok(Some(p.status("primary")?)),
        }
    }

    /// Still protected (a pair whose backup followed)?
    fn check(&mut self) -> Result<()> {
        if let Vm::Pair(p, _) = self {
            if p.exited("backup") || p.exited("primary") || !p.status("primary")?.protected {
                bail!("the pair lost its backup\n{}", p.logs());
            }
        }
        Ok(())
    }

    fn logs(&self) -> String {
        match self {
            Vm::Alone(c) => c
                .output()
                .chars()
                .rev()
                .take(2000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect(),
            Vm::Pair(p, _) => p.logs(),
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // Power off politely; the guards (Console, Pair) kill what is left.
        let _ = self.start("poweroff");
        if let Vm::Alone(c) = self {
            let _ = c.wait_exit(Duration::from_secs(5));
        }
    }
}

/// One timed step: seconds and, on a pair, the log bytes the primary sent over it.
#[derive(Clone, Copy, Debug)]
struct Step {
    secs: f64,
    log: Option<Rate>,
}

fn timed(vm: &mut Vm, f: impl FnOnce(&mut Vm) -> Result<f64>) -> Result<Step> {
    let a = vm.status()?;
    let secs = f(vm)?;
    let b = vm.status()?;
    vm.check()?;
    Ok(Step {
        secs,
        log: a.zip(b).map(|(a, b)| Rate::between(&a, &b)),
    })
}

// ---------------------------------------------------------------------------------------------
// Disk.

struct DiskRun {
    write: Step,
    read: Step,
    iops: Step,
}

fn disk_run(vm: &mut Vm, o: &Options) -> Result<DiskRun> {
    let t = o.timeout;
    let (m, _) = vm.run("grep -c ' /mnt ' /proc/mounts", t)?;
    if !m.iter().any(|l| l.trim() == "1") {
        bail!("the guest did not mount its disk on /mnt: {m:?}");
    }
    let count = o.disk_mib * 16;
    let ok = |l: &[String], what: &str| -> Result<()> {
        if l.iter()
            .any(|x| x.contains("rror") || x.contains("No space"))
        {
            bail!("{what} failed: {l:?}");
        }
        Ok(())
    };
    let write = timed(vm, |vm| {
        let (l, s) = vm.run(
            &format!(
                "dd if=/dev/zero of=/mnt/ftio.bin bs=64k count={count} conv=fsync 2>&1 | tail -1"
            ),
            t,
        )?;
        ok(&l, "the write")?;
        if !l
            .iter()
            .any(|x| x.contains(&format!("{} bytes", count * 65536)))
        {
            bail!("the write did not write {} bytes: {l:?}", count * 65536);
        }
        Ok(s)
    })?;
    vm.run("sync; echo 3 > /proc/sys/vm/drop_caches", t)?;
    let read = timed(vm, |vm| {
        let (l, s) = vm.run("dd if=/mnt/ftio.bin of=/dev/null bs=64k 2>&1 | tail -1", t)?;
        ok(&l, "the read")?;
        if !l
            .iter()
            .any(|x| x.contains(&format!("{} bytes", count * 65536)))
        {
            bail!("the read did not read {} bytes: {l:?}", count * 65536);
        }
        Ok(s)
    })?;
    vm.run(
        &format!(
            "rm /mnt/ftio.bin; dd if=/dev/zero of=/mnt/ftio.iops bs=4k count={} 2>/dev/null; sync",
            o.iops
        ),
        t,
    )?;
    // Offsets i*37 mod n: every block once, scattered.
    let iops = timed(vm, |vm| {
        let (l, s) = vm.run(
            &format!(
                "i=0; while [ $i -lt {n} ]; do dd if=/dev/zero of=/mnt/ftio.iops bs=4k count=1 \
                 seek=$(( (i*37) % {n} )) conv=notrunc,fsync 2>/dev/null || echo dd-error; \
                 i=$((i+1)); done",
                n = o.iops
            ),
            t,
        )?;
        if l.iter().any(|x| x.trim() == "dd-error") {
            bail!("a synced 4 KiB write failed");
        }
        Ok(s)
    })?;
    vm.run("rm /mnt/ftio.iops; sync", t)?;
    Ok(DiskRun { write, read, iops })
}

// ---------------------------------------------------------------------------------------------
// Network.

/// passt serving one VM; killed when dropped.
struct Passt {
    child: Child,
    sock: PathBuf,
}

impl Passt {
    fn start(name: &str) -> Result<Passt> {
        let bin = Path::new("/usr/bin/passt");
        if !bin.exists() {
            bail!("passt is not installed (apt-get install passt)");
        }
        // Directly in the temporary directory: passt does not create its socket in a
        // subdirectory it did not make.
        let sock =
            std::env::temp_dir().join(format!("ftvm-ftio-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        // No ports forwarded: the guest opens both connections (to the gateway's address,
        // which passt maps to the host's 127.0.0.1).
        let child = Command::new(bin)
            .args(["-f", "-q", "-t", "none", "-u", "none", "-s"])
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting passt")?;
        let p = Passt { child, sock };
        let t = Instant::now();
        while !p.sock.exists() {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("passt did not create {}", p.sock.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(p)
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

struct NetRun {
    to_guest: Step,
    from_guest: Step,
}

/// DHCP in the guest; the gateway's address (which passt maps to the host's loopback).
fn net_up(vm: &mut Vm, o: &Options) -> Result<String> {
    let (l, _) = vm.run(
        "udhcpc -i eth0 -n -q -t 10 >/dev/null 2>&1; ip route | grep default",
        o.timeout,
    )?;
    l.iter()
        .filter(|x| !x.contains("grep"))
        .find_map(|x| {
            let mut w = x.split_whitespace();
            (w.next() == Some("default") && w.next() == Some("via"))
                .then(|| w.next().map(str::to_string))
                .flatten()
        })
        .ok_or_else(|| anyhow!("the guest got no default route: {l:?}"))
}

/// The first connection to `l` within `t`.
fn accept_within(l: &TcpListener, t: Duration) -> std::io::Result<TcpStream> {
    l.set_nonblocking(true)?;
    let deadline = Instant::now() + t;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

fn net_run(vm: &mut Vm, o: &Options) -> Result<NetRun> {
    let gw = net_up(vm, o)?;
    let n = o.net_mib << 20;
    let t = o.timeout;

    // Host -> guest: the guest fetches the bytes from an HTTP server of ours.
    let to_guest = timed(vm, |vm| {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        let (tx, rx) = mpsc::channel();
        let server = std::thread::spawn(move || {
            let r = (|| -> std::io::Result<Instant> {
                let mut s = accept_within(&l, t)?;
                let t0 = Instant::now();
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))?;
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let k = s.read(&mut b)?;
                    if k == 0 || req.len() > 65536 {
                        return Err(std::io::ErrorKind::InvalidData.into());
                    }
                    req.extend_from_slice(&b[..k]);
                }
                s.write_all(
                    format!("HTTP/1.0 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )?;
                let chunk = vec![0x5au8; 64 << 10];
                let mut left = n;
                while left > 0 {
                    let k = left.min(chunk.len() as u64) as usize;
                    s.write_all(&chunk[..k])?;
                    left -= k as u64;
                }
                Ok(t0)
            })();
            let _ = tx.send(r);
        });
        vm.start(&format!("wget -q -O - http://{gw}:{port}/ftio | wc -c"))?;
        let r = rx.recv_timeout(t + Duration::from_secs(5));
        let _ = server.join();
        let t0 = r
            .map_err(|_| anyhow!("the host server did not finish"))?
            .context("host -> guest server")?;
        let l = vm.finish(t)?;
        let secs = t0.elapsed().as_secs_f64();
        if !l.iter().any(|x| x.trim() == n.to_string()) {
            bail!("the guest did not receive {n} bytes: {l:?}");
        }
        Ok(secs)
    })?;

    // Guest -> host.
    let from_guest = timed(vm, |vm| {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        let (tx, rx) = mpsc::channel();
        let sink = std::thread::spawn(move || {
            let r = (|| -> std::io::Result<(u64, f64)> {
                let mut s = accept_within(&l, t)?;
                let t0 = Instant::now();
                s.set_read_timeout(Some(t))?;
                let mut got = 0u64;
                let mut b = vec![0u8; 256 << 10];
                while got < n {
                    let k = s.read(&mut b)?;
                    if k == 0 {
                        break;
                    }
                    got += k as u64;
                }
                Ok((got, t0.elapsed().as_secs_f64()))
                // Dropping the stream closes it: the guest's nc exits.
            })();
            let _ = tx.send(r);
        });
        vm.start(&format!(
            "dd if=/dev/zero bs=64k count={} 2>/dev/null | nc {gw} {port}",
            n >> 16
        ))?;
        let r = rx.recv_timeout(t + Duration::from_secs(5));
        let _ = sink.join();
        let (got, secs) = r
            .map_err(|_| anyhow!("the host sink did not finish"))?
            .context("guest -> host sink")?;
        vm.finish(t)?;
        if got != n {
            bail!("the host received {got} bytes of {n}");
        }
        Ok(secs)
    })?;
    Ok(NetRun {
        to_guest,
        from_guest,
    })
}

// ---------------------------------------------------------------------------------------------
// The run and the report.

fn with_logs<T>(vm: &mut Vm, r: Result<T>) -> Result<T> {
    r.map_err(|e| anyhow!("{e:#}\n{}", vm.logs()))
}

/// Runs the benchmark.
pub fn main(root: &Path, ftvm: &Path, o: &Options) -> Result<()> {
    let im = ft::images()?;
    if !im.disk.is_file() {
        bail!("no guest disk {}", im.disk.display());
    }
    let s = Scratch::new()?;
    let load_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut disks: [Vec<DiskRun>; 4] = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut nets: [Vec<NetRun>; 2] = [Vec::new(), Vec::new()];
    let mut failures: Vec<String> = Vec::new();
    for rep in 0..o.reps {
        let r = rep + 1;
        // Disk.
        for (i, mode) in ["alone", "shared", "non-shared", "shared-own-reads"]
            .into_iter()
            .enumerate()
        {
            eprintln!("bench ft-io: round {r}/{}: disk, {mode}", o.reps);
            let res = (|| -> Result<DiskRun> {
                let mut vm = if i == 0 {
                    let img = s.0.join("alone.img");
                    std::fs::copy(&im.disk, &img)?;
                    Vm::alone(
                        ftvm,
                        &im,
                        &["--drive".into(), format!("file={}", img.display())],
                        o,
                    )?
                } else {
                    let d = if i == 2 {
                        Drives::NonShared
                    } else {
                        Drives::Shared
                    };
                    let extra: Vec<String> = if i == 3 {
                        vec!["--disk-reads".into(), "own".into()]
                    } else {
                        Vec::new()
                    };
                    Vm::pair(ftvm, &im, &s, &format!("disk-{mode}-{rep}"), d, &extra, o)?
                };
                let r = disk_run(&mut vm, o);
                with_logs(&mut vm, r)
            })();
            match res {
                Ok(d) => disks[i].push(d),
                Err(e) => {
                    eprintln!("bench ft-io: disk {mode}: {e:#}");
                    failures.push(format!("disk, {mode}: {}", first_line(&e)));
                }
            }
            let _ = std::fs::remove_file(s.0.join("alone.img"));
            let _ = std::fs::remove_dir_all(s.0.join(format!("disk-{mode}-{rep}")));
        }
        // Network.
        for (i, mode) in ["alone", "pair"].into_iter().enumerate() {
            eprintln!("bench ft-io: round {r}/{}: network, {mode}", o.reps);
            let res = (|| -> Result<NetRun> {
                let passt = Passt::start(&format!("{mode}-{rep}"))?;
                let nd = vec![
                    "--netdev".to_string(),
                    format!("stream,path={}", passt.sock.display()),
                ];
                let mut vm = if i == 0 {
                    Vm::alone(ftvm, &im, &nd, o)?
                } else {
                    Vm::pair(ftvm, &im, &s, &format!("net-{rep}"), Drives::None, &nd, o)?
                };
                let r = net_run(&mut vm, o);
                let r = with_logs(&mut vm, r);
                drop(vm);
                drop(passt);
                r
            })();
            match res {
                Ok(d) => nets[i].push(d),
                Err(e) => {
                    eprintln!("bench ft-io: network {mode}: {e:#}");
                    failures.push(format!("network, {mode}: {}", first_line(&e)));
                }
            }
            let _ = std::fs::remove_dir_all(s.0.join(format!("net-{rep}")));
        }
    }
    let md = report(o, &disks, &nets, &failures, &load_start);
    println!("{md}");
    if o.no_doc {
        eprintln!("bench ft-io: docs/ft-benchmarks.md left alone (--quick / --no-doc)");
    } else {
        let f = root.join("docs/ft-benchmarks.md");
        let old = std::fs::read_to_string(&f).unwrap_or_default();
        std::fs::write(&f, splice(&old, &md))
            .with_context(|| format!("writing {}", f.display()))?;
        eprintln!("bench ft-io: updated {}", f.display());
    }
    if disks.iter().all(Vec::is_empty) && nets.iter().all(Vec::is_empty) {
        bail!("no measurement succeeded");
    }
    Ok(())
}

fn first_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// `old` with its ft-io section (between [`BEGIN`] and [`END`]) replaced by `section`, or
/// `section` appended.
pub fn splice(old: &str, section: &str) -> String {
    let block = format!("{BEGIN}\n{}\n{END}\n", section.trim_end());
    match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if b > a => {
            format!(
                "{}{block}{}",
                &old[..a],
                old[b + END.len()..].trim_start_matches('\n')
            )
        }
        _ => {
            let mut s = old.trim_end().to_string();
            if !s.is_empty() {
                s.push_str("\n\n");
            }
            s.push_str(&block);
            s
        }
    }
}

/// `old` from its ft-io section on: that section and the hand-written ones after it (the
/// iperf3 figures of the Debian guest, the before/after of the seam redesign), which `bench
/// --ft` keeps when it rewrites the sections before them.
pub fn from_section_on(old: &str) -> Option<&str> {
    Some(&old[old.find(BEGIN)?..])
}

/// How to read the ratios.
const NOISE: &str = "Read the rounds before the ratios: on this shared 2-core host one round \
     can run twice as fast as another (the lists above), so a ratio is only as good as the \
     spread of its rounds, and a ratio above 1 means the noise exceeded what FT costs.";

/// The comparison with the paper (no figures of its own: see the text).
const PAPER: &str = "**Against the paper.** Its Table 1 gives the log bandwidth of each of its \
     workloads under FT, its Table 2 the network throughput of a VM with FT against the same VM \
     without. Neither table's figures are set here (the comparison is \
     with the design, not with the paper's hardware). What its design says carries over: as in the \
     paper's default design the backup never reads its disk, so every byte the guest reads \
     travels in the log (the read columns: about as many log bytes as bytes read), and disk \
     writes do not (the primary writes the shared image; in non-shared mode the backup's replay \
     issues the same writes to its own image instead of receiving them, see \
     [ft.md](ft.md)). The paper's alternative, the backup executing the disk reads itself \
     (`--disk-reads own`), takes the read data off the log (a digest of about 25 bytes per \
     read of up to 64 KiB instead), at the price of holding each write, and the fsync that \
     waits for it, until the backup has replayed past it rather than merely received it. \
     Received frames are logged whole (host → guest: log bytes about the \
     bytes received), transmitted ones are not (guest → host: only what the guest receives \
     back, its TCP acknowledgements), so the log bandwidth follows what the VM takes in. What \
     FT costs the throughput here is mostly the output rule (every transmitted frame, TCP \
     acknowledgements of received data included, waits for the backup's acknowledgement of \
     the slice that sent it) and, on this one 2-core machine, the backup's replay competing \
     with the primary for the CPU; in the paper primary and backup are on different hosts.";

fn mbs(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn report(
    o: &Options,
    disks: &[Vec<DiskRun>; 4],
    nets: &[Vec<NetRun>; 2],
    failures: &[String],
    load_start: &str,
) -> String {
    let mut m = String::new();
    let w = &mut m;
    let load = |s: &str| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let _ = writeln!(w, "## 6. Disk and network under FT\n");
    let _ = writeln!(
        w,
        "Generated by `cargo xtask bench --ft-io` (`xtask/src/bench/ftio.rs`), which replaces only \
         this section. Each of {} rounds runs, a fresh VM each, `ftvm run` alone and the pair \
         one after the other, so both see the same host noise; the tables give the best of the \
         rounds (the least disturbed) and the ratio FT / alone. Times are host seconds from \
         typing the command to the console line after it (disk) or at the host's end of the \
         TCP stream (network). Log bandwidth: the primary's `log_sent` bytes over the step \
         (`ftvm status` before and after), per host second.\n",
        o.reps
    );
    let _ = writeln!(w, "- command: `{}`", o.command);
    let _ = write!(w, "{}", doc::machine_facts());
    let _ = writeln!(
        w,
        "- load average at the start of the run (1/5/15 min): {}\n",
        load(load_start)
    );

    let best_step =
        |v: &[Step]| -> Option<Step> { v.iter().copied().min_by(|a, b| a.secs.total_cmp(&b.secs)) };
    let fmt_log = |s: &Option<Step>| match s.and_then(|s| s.log) {
        Some(r) => format!("{:.3} | {:.2}", r.bytes as f64 / 1e6, r.host_mbps()),
        None => "– | –".to_string(),
    };

    // Disk.
    let _ = writeln!(w, "### Disk inside the guest\n");
    let _ = writeln!(
        w,
        "ext2 on the virtio disk. Write: `dd if=/dev/zero of=/mnt/ftio.bin bs=64k count={c} \
         conv=fsync` ({mib} MiB); read: the same file back to `/dev/null` after \
         `echo 3 > /proc/sys/vm/drop_caches`; synced writes: {n} × `dd bs=4k count=1 \
         seek=$(( (i*37) % {n} )) conv=notrunc,fsync` (one 4 KiB write and an fsync each, \
         scattered over a {n}-block file; a shell loop forking `dd`, the same on both sides). \
         Shared: one image named by both sides, the primary's writes held until the backup \
         acknowledges; non-shared: an image each, the primary's sent whole first, the backup \
         writing its own as it replays; `--disk-reads own`: one image, the log carrying each \
         read's digest instead of its data (the backup reads the image itself), the primary's \
         writes held until the backup has replayed past them.\n",
        c = o.disk_mib * 16,
        mib = o.disk_mib,
        n = o.iops
    );
    let _ = writeln!(
        w,
        "| | write MB/s | read MB/s | synced 4 KiB writes/s | write: log MB | Mbit/s | read: log MB | Mbit/s | 4 KiB writes: log MB | Mbit/s |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let names = [
        "`ftvm run --drive` alone",
        "pair, `--disk-mode shared`",
        "pair, `--disk-mode non-shared`",
        "pair, shared, `--disk-reads own`",
    ];
    let bytes = (o.disk_mib << 20) as f64;
    let mut bests: Vec<Option<(f64, f64, f64)>> = Vec::new();
    for (i, runs) in disks.iter().enumerate() {
        let bw = best_step(&runs.iter().map(|r| r.write).collect::<Vec<_>>());
        let br = best_step(&runs.iter().map(|r| r.read).collect::<Vec<_>>());
        let bi = best_step(&runs.iter().map(|r| r.iops).collect::<Vec<_>>());
        match (bw, br, bi) {
            (Some(a), Some(b), Some(c)) => {
                let v = (
                    bytes / a.secs / 1e6,
                    bytes / b.secs / 1e6,
                    o.iops as f64 / c.secs,
                );
                bests.push(Some(v));
                let _ = writeln!(
                    w,
                    "| {} ({} runs) | {:.2} | {:.2} | {:.1} | {} | {} | {} |",
                    names[i],
                    runs.len(),
                    v.0,
                    v.1,
                    v.2,
                    fmt_log(&Some(a)),
                    fmt_log(&Some(b)),
                    fmt_log(&Some(c))
                );
            }
            _ => {
                bests.push(None);
                let _ = writeln!(w, "| {} | did not run | | | | | | | | |", names[i]);
            }
        }
    }
    if let Some(a) = bests[0] {
        for (i, b) in bests.iter().enumerate().skip(1) {
            if let Some(b) = b {
                let _ = writeln!(
                    w,
                    "| **ratio {} / alone** | **{:.3}** | **{:.3}** | **{:.3}** | | | | | | |",
                    ["", "shared", "non-shared", "shared own-reads"][i],
                    b.0 / a.0,
                    b.1 / a.1,
                    b.2 / a.2
                );
            }
        }
    }
    let each = |v: Vec<f64>| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        w,
        "\nEach round (write MB/s; read MB/s; synced writes/s):\n"
    );
    for (i, runs) in disks.iter().enumerate() {
        let _ = writeln!(
            w,
            "- {}: {}; {}; {}",
            names[i],
            each(runs.iter().map(|r| bytes / r.write.secs / 1e6).collect()),
            each(runs.iter().map(|r| bytes / r.read.secs / 1e6).collect()),
            each(runs.iter().map(|r| o.iops as f64 / r.iops.secs).collect())
        );
    }
    let _ = writeln!(w);

    // Network.
    let _ = writeln!(w, "### Network, guest ↔ host through passt\n");
    let _ = writeln!(
        w,
        "passt (`passt -f -t none -u none -s SOCK`, one per VM) on the guest's \
         `--netdev stream,path=SOCK`; the guest takes its address with `udhcpc`, and opens both \
         connections to its gateway's address, which passt maps to the host's 127.0.0.1, where \
         the benchmark listens. Host → guest: `wget -q -O - http://GATEWAY:PORT/ | wc -c` in \
         the guest, the benchmark answering with {mib} MiB (time from its accepting the \
         connection to the guest's count on the console, which is checked). Guest → host: \
         `dd if=/dev/zero bs=64k count={c} | nc GATEWAY PORT` in the guest, the benchmark \
         counting {mib} MiB (time from its accepting the connection to the last byte). Under FT \
         every received frame is a log entry carrying the frame, and every transmitted frame \
         is held until the backup has acknowledged the log up to it.\n",
        mib = o.net_mib,
        c = (o.net_mib << 20) >> 16
    );
    let _ = writeln!(
        w,
        "| | host → guest MB/s | guest → host MB/s | host → guest: log MB | Mbit/s | guest → host: log MB | Mbit/s |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|");
    let nb = o.net_mib << 20;
    let mut nbest: Vec<Option<(f64, f64)>> = Vec::new();
    for (i, runs) in nets.iter().enumerate() {
        let a = best_step(&runs.iter().map(|r| r.to_guest).collect::<Vec<_>>());
        let b = best_step(&runs.iter().map(|r| r.from_guest).collect::<Vec<_>>());
        let name = if i == 0 {
            "`ftvm run --netdev` alone"
        } else {
            "pair"
        };
        match (a, b) {
            (Some(a), Some(b)) => {
                let v = (mbs(nb, a.secs), mbs(nb, b.secs));
                nbest.push(Some(v));
                let _ = writeln!(
                    w,
                    "| {name} ({} runs) | {:.2} | {:.2} | {} | {} |",
                    runs.len(),
                    v.0,
                    v.1,
                    fmt_log(&Some(a)),
                    fmt_log(&Some(b))
                );
            }
            _ => {
                nbest.push(None);
                let _ = writeln!(w, "| {name} | did not run | | | | | |");
            }
        }
    }
    if let (Some(a), Some(b)) = (nbest[0], nbest[1]) {
        let _ = writeln!(
            w,
            "| **ratio FT / alone** | **{:.3}** | **{:.3}** | | | | |",
            b.0 / a.0,
            b.1 / a.1
        );
    }
    let _ = writeln!(w, "\nEach round (host → guest MB/s; guest → host MB/s):\n");
    for (i, runs) in nets.iter().enumerate() {
        let _ = writeln!(
            w,
            "- {}: {}; {}",
            if i == 0 { "alone" } else { "pair" },
            each(runs.iter().map(|r| mbs(nb, r.to_guest.secs)).collect()),
            each(runs.iter().map(|r| mbs(nb, r.from_guest.secs)).collect())
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "{NOISE}\n");
    let _ = writeln!(w, "{PAPER}\n");
    if !failures.is_empty() {
        let _ = writeln!(w, "Runs that failed (left out of the tables):\n");
        for f in failures {
            let _ = writeln!(w, "- {f}");
        }
        let _ = writeln!(w);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_appends_then_replaces() {
        let a = splice("# T\n\ntext\n", "## 6\nx\n");
        assert_eq!(a, format!("# T\n\ntext\n\n{BEGIN}\n## 6\nx\n{END}\n"));
        let b = splice(&format!("{a}tail\n"), "## 6\ny\n");
        assert_eq!(b, format!("# T\n\ntext\n\n{BEGIN}\n## 6\ny\n{END}\ntail\n"));
        assert_eq!(
            from_section_on(&b),
            Some(&b[b.find(BEGIN).unwrap()..]),
            "the section and the tail after it"
        );
        assert!(from_section_on(&b).unwrap().ends_with("tail\n"));
        assert_eq!(from_section_on("nothing"), None);
    }
}
