//! `cargo xtask bench --replay`: the cost of deterministic record/replay, on ftvm and on QEMU's
//! record/replay (`-icount shift=auto,rr=record`), with the same Linux guest in the same run.
//!
//! Each round boots the guest several times, alternating the machines so that all of them see
//! the same host noise:
//!
//! 1. `ftvm run` (no log): `cpubench N` timed from the host (typing the command to its last
//!    output line), so the boot is not part of it.
//! 2. `ftvm run --record LOG`: a mark, ~`idle` seconds of nothing typed at the shell prompt, a
//!    mark, `cpubench N` (timed), a mark, `poweroff`. The log is then parsed
//!    ([`super::ftvmlog`]): the bytes of the entries between two marks over the guest time
//!    between them (icount delta / 100 M steps per guest second, see `crates/machine/src/clock.rs`)
//!    give the idle and the CPU-bound log rates. A mark is a shell command carrying a unique
//!    tag, found in the log's console input.
//! 3. `ftvm replay --verbose LOG`: the host time between the replayer reaching the icounts of the
//!    two marks around `cpubench` (its per-entry lines on stderr, timestamped as they come).
//! 4. QEMU: TCG without `-icount` (plain), with `-icount shift=auto`, with
//!    `rr=record,rrfile=FILE` (the same marks, idle time and cpubench; the log's size is sampled
//!    at each mark, guest time is the guest's `/proc/uptime`), and `rr=replay` of that file
//!    (host time between the echoes of the two marks on its console).
//! 5. Disk-bound: the guest with a disk writes 8 MiB with fsync, drops its caches, reads it back;
//!    recorded on ftvm (`--record` with `--drive`) when ftvm supports it, and on QEMU through
//!    `blkreplay`.
//!
//! Every console wait and every process has a timeout; all files live in one temporary
//! directory that is removed at the end, also on errors.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use guestctl::{Console, FW_JUMP};

use super::doc;
use super::ftvmlog::Log;
use crate::guest;

/// The disk-bound workload: 8 MiB written and synced, caches dropped, read back.
const DISK_WORKLOAD: &str = "dd if=/dev/zero of=/mnt/rr-bench.bin bs=64k count=128 conv=fsync \
     2>/dev/null && sync && echo 3 > /proc/sys/vm/drop_caches && \
     dd if=/mnt/rr-bench.bin of=/dev/null bs=64k 2>/dev/null && rm /mnt/rr-bench.bin && sync && \
     echo rr-disk-ok";

/// What the benchmark is asked to do.
pub struct Options {
    /// Rounds (every machine configuration once per round).
    pub reps: usize,
    /// Bound of every console wait and every replay process.
    pub timeout: Duration,
    /// Guest seconds of idling at the prompt (host seconds: both machines idle at wall-clock speed).
    pub idle: Duration,
    /// `cpubench` rounds.
    pub rounds: u32,
    /// Run QEMU too.
    pub qemu: bool,
    /// Leave docs/benchmarks.md alone.
    pub no_doc: bool,
    /// The guest's directory (Image, initramfs.cpio.gz, disk.img); `None`: `cargo xtask guest`.
    pub guest_dir: Option<PathBuf>,
    /// The command line, for the docs.
    pub command: String,
}

/// The guest files.
struct Images {
    kernel: PathBuf,
    initrd: PathBuf,
    disk: PathBuf,
}

fn images(o: &Options) -> Result<Images> {
    let dir = match &o.guest_dir {
        Some(d) => d.clone(),
        None => {
            guest::build(&guest::BuildOptions::default())
                .context("building the guest (`cargo xtask guest`)")?
                .dir
        }
    };
    let im = Images {
        kernel: dir.join("Image"),
        initrd: dir.join("initramfs.cpio.gz"),
        disk: dir.join("disk.img"),
    };
    for f in [&im.kernel, &im.initrd, &im.disk] {
        if !f.is_file() {
            bail!(
                "guest image {} is missing: build the guest with `cargo xtask guest` \
                 (or pass the directory it prints with --guest-dir)",
                f.display()
            );
        }
    }
    if !Path::new(FW_JUMP).is_file() {
        bail!("OpenSBI {FW_JUMP} is missing: apt-get install opensbi");
    }
    Ok(im)
}

/// The scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let d = std::env::temp_dir().join(format!("ftvm-bench-rr-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(Scratch(d))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A fresh copy of the guest's disk.
    fn disk(&self, im: &Images, name: &str) -> Result<PathBuf> {
        let d = self.file(name);
        std::fs::copy(&im.disk, &d).with_context(|| format!("copying {}", im.disk.display()))?;
        Ok(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How QEMU runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Qemu<'a> {
    /// TCG as fast as it goes.
    Plain,
    /// `-icount shift=auto`.
    Icount,
    /// `-icount shift=auto,rr=record,rrfile=FILE`.
    Record(&'a Path),
    /// `-icount shift=auto,rr=replay,rrfile=FILE`.
    Replay(&'a Path),
}

fn qemu_command(im: &Images, mode: Qemu, disk: Option<&Path>, rng: bool) -> Command {
    let mut q = Command::new(super::elf::QEMU);
    // `-serial stdio`, not `-nographic`: QEMU 7.2 does not replay console input that went
    // through the monitor multiplexer of `-nographic` (the replay waits at the shell prompt).
    q.args([
        "-M", "virt", "-m", "256M", "-smp", "1", "-display", "none", "-monitor", "none", "-serial",
        "stdio", "-bios", FW_JUMP,
    ])
    .arg("-kernel")
    .arg(&im.kernel)
    .arg("-initrd")
    .arg(&im.initrd)
    .args(["-append", "console=ttyS0"]);
    let rr = match mode {
        Qemu::Plain => None,
        Qemu::Icount => {
            q.args(["-icount", "shift=auto"]);
            None
        }
        Qemu::Record(f) => Some(("record", f)),
        Qemu::Replay(f) => Some(("replay", f)),
    };
    if let Some((how, f)) = rr {
        q.arg("-icount")
            .arg(format!("shift=auto,rr={how},rrfile={}", f.display()));
    }
    if let Some(d) = disk {
        q.arg("-drive")
            .arg(format!("file={},format=raw,if=none,id=d0", d.display()));
        if rr.is_some() {
            // Record/replay sees block requests only through a blkreplay filter.
            q.args([
                "-drive",
                "driver=blkreplay,if=none,image=d0,id=d0-rr",
                "-device",
                "virtio-blk-device,drive=d0-rr",
            ]);
        } else {
            q.args(["-device", "virtio-blk-device,drive=d0"]);
        }
    }
    if rng {
        q.args(["-device", "virtio-rng-device"]);
    }
    q
}

fn ftvm_command(ftvm: &Path, im: &Images, record: Option<&Path>, disk: Option<&Path>) -> Command {
    let mut f = Command::new(ftvm);
    f.arg("run")
        .args(["--bios", FW_JUMP, "--mem", "256M", "--smp", "1"])
        .arg("--kernel")
        .arg(&im.kernel)
        .arg("--initrd")
        .arg(&im.initrd)
        .args(["--append", "console=ttyS0"]);
    if let Some(l) = record {
        f.arg("--record").arg(l);
    }
    if let Some(d) = disk {
        f.arg("--drive").arg(format!("file={}", d.display()));
    }
    f
}

/// A point in a session: the guest's uptime and, for QEMU, the size of its rr file then.
#[derive(Clone, Debug)]
struct Mark {
    name: &'static str,
    uptime: f64,
    /// Size of the rr file before the mark's line was typed.
    rr_before: Option<u64>,
    /// Size of the rr file after the mark's answer.
    rr_after: Option<u64>,
}

/// The console text that identifies mark `name` in a log's console input.
fn mark_tag(name: &str) -> String {
    format!("ftvm-bench-mark-{name}.")
}

/// Bytes typed at once. Under `rr=record` QEMU hands console input to the 16550 without flow
/// control, so a burst longer than its 16-byte FIFO loses bytes (the guest reports "ttyS0:
/// input overrun"): each chunk waits for its echo, which means the guest has drained the FIFO.
/// Every machine is typed at in the same way.
const TYPE_CHUNK: usize = 8;

/// Types `text` in chunks, each after the previous one's echo (or 500 ms without one).
fn type_slowly(c: &mut Console, text: &str) -> Result<()> {
    for chunk in text.as_bytes().chunks(TYPE_CHUNK) {
        let before = c.output().len();
        c.send(chunk)?;
        let echoed = chunk.iter().filter(|&&b| b >= b' ' || b == b'\n').count();
        let t = Instant::now();
        while c.output().len() < before + echoed && t.elapsed() < Duration::from_millis(500) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

/// A shell at a console, typed at slowly.
struct Shell {
    c: Console,
    seq: u32,
}

impl Shell {
    /// Waits for the guest's "ready" line, then until the shell answers. QEMU under
    /// `rr=record` drops console input that arrives before the guest's UART is set up, so
    /// probes are retyped (after a Ctrl-U that clears a partial line) until one is answered.
    fn start(mut c: Console, timeout: Duration) -> Result<Shell> {
        c.wait_for("ftvm-guest: ready", timeout)?;
        let t0 = Instant::now();
        for k in 1.. {
            type_slowly(&mut c, &format!("\x15echo '<<rr-sync'-{k}'>>'\n"))?;
            match c.wait_for(&format!("<<rr-sync-{k}>>\n"), Duration::from_secs(2)) {
                Ok(_) => break,
                Err(guestctl::ConsoleError::Timeout { .. }) if t0.elapsed() < timeout => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Shell { c, seq: 0 })
    }

    /// Runs `command` and returns what it printed, and the instant its line was complete (the
    /// command starts then).
    fn run(&mut self, command: &str, timeout: Duration) -> Result<(String, Instant)> {
        self.seq += 1;
        let n = self.seq;
        // The quotes split the markers in the echoed line; the shell's output joins them.
        type_slowly(
            &mut self.c,
            &format!("echo '<<rr-begin'-{n}'>>'; {command}; echo '<<rr-end'-{n}'>>'\n"),
        )?;
        let typed = Instant::now();
        self.c.wait_for(&format!("<<rr-begin-{n}>>\n"), timeout)?;
        let out = self.c.wait_for(&format!("<<rr-end-{n}>>"), timeout)?;
        Ok((out, typed))
    }
}

/// What a session does after the boot.
#[derive(Clone, Copy)]
enum Script {
    /// Mark `start`, idle, mark `idle-end`, cpubench (timed), mark `cpu-end`.
    Cpu { idle: Duration },
    /// Mark `start`, the disk workload, mark `disk-end`.
    Disk,
}

/// The result of one session.
struct Outcome {
    /// Seconds of `cpubench` (Cpu script).
    cpubench: f64,
    checksum: String,
    marks: Vec<Mark>,
}

impl Outcome {
    fn mark(&self, name: &str) -> Result<&Mark> {
        self.marks
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| anyhow!("no mark {name}"))
    }
}

/// The last lines of a file (a VM's stderr), for error messages.
fn tail_of(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Boots `cmd`, runs `script` at its shell and powers it off. The VM's stderr goes to
/// `stderr`; errors carry its tail.
fn session(
    mut cmd: Command,
    stderr: &Path,
    rrfile: Option<&Path>,
    script: Script,
    rounds: u32,
    timeout: Duration,
) -> Result<Outcome> {
    let err = std::fs::File::create(stderr)?;
    cmd.stderr(err);
    let r = session_inner(cmd, rrfile, script, rounds, timeout);
    r.map_err(|e| {
        let t = tail_of(stderr);
        if t.trim().is_empty() {
            e
        } else {
            e.context(format!("the VM's stderr ends with:\n{t}"))
        }
    })
}

fn session_inner(
    cmd: Command,
    rrfile: Option<&Path>,
    script: Script,
    rounds: u32,
    timeout: Duration,
) -> Result<Outcome> {
    let mut sh = Shell::start(Console::spawn(cmd)?, timeout)?;
    sh.run("true", timeout)?;
    let mut marks = Vec::new();
    let mut mark = |sh: &mut Shell, name: &'static str| -> Result<()> {
        let size = || rrfile.map(|f| std::fs::metadata(f).map_or(0, |m| m.len()));
        let rr_before = size();
        let (out, _) = sh.run(&format!("cat /proc/uptime; : {}", mark_tag(name)), timeout)?;
        let rr_after = size();
        let uptime = out
            .split_whitespace()
            .next()
            .and_then(|w| w.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("mark {name}: no uptime in {out:?}"))?;
        marks.push(Mark {
            name,
            uptime,
            rr_before,
            rr_after,
        });
        Ok(())
    };
    mark(&mut sh, "start")?;
    let mut cpubench = f64::NAN;
    let mut checksum = String::new();
    match script {
        Script::Cpu { idle } => {
            if !idle.is_zero() {
                std::thread::sleep(idle);
            }
            mark(&mut sh, "idle-end")?;
            let (out, t) = sh.run(&format!("cpubench {rounds}"), timeout)?;
            cpubench = t.elapsed().as_secs_f64();
            checksum = out
                .split_whitespace()
                .find_map(|w| w.strip_prefix("checksum="))
                .ok_or_else(|| anyhow!("cpubench printed no checksum: {out:?}"))?
                .to_string();
            mark(&mut sh, "cpu-end")?;
        }
        Script::Disk => {
            let (out, _) = sh.run(DISK_WORKLOAD, timeout)?;
            // The kernel may log the cache drop on the console; only the last word counts.
            if !out.contains("rr-disk-ok") {
                bail!("the disk workload failed: {out}");
            }
            mark(&mut sh, "disk-end")?;
        }
    }
    type_slowly(&mut sh.c, "poweroff\n")?;
    match sh.c.wait_exit(timeout.min(Duration::from_secs(120))) {
        Some(0) => {}
        other => bail!("the guest did not power off cleanly (exit {other:?})"),
    }
    Ok(Outcome {
        cpubench,
        checksum,
        marks,
    })
}

/// Log bytes over guest time between two marks.
#[derive(Clone, Debug, Default)]
struct Window {
    bytes: u64,
    guest_s: f64,
    /// What the bytes are (ftvm only), largest first.
    by: Vec<(&'static str, u64)>,
}

impl Window {
    fn rate(&self) -> f64 {
        self.bytes as f64 / self.guest_s
    }
}

/// The window between marks `a` and `b` in an ftvm log.
fn ftvm_window(log: &Log, a: &str, b: &str) -> Result<(Window, (u64, u64))> {
    let line = |m: &str| {
        log.console_line(mark_tag(m).as_bytes())
            .ok_or_else(|| anyhow!("mark {m} is not in the log's console input"))
    };
    // From the end of mark a's line to the start of mark b's.
    let (ia, ib) = (line(a)?.1, line(b)?.0);
    let (bytes, by) = log.window(ia, ib);
    Ok((
        Window {
            bytes,
            guest_s: log.guest_seconds(ia, ib),
            by,
        },
        (ia, ib),
    ))
}

/// The window between marks `a` and `b` of a QEMU session, from its sampled rr file sizes.
fn qemu_window(o: &Outcome, a: &str, b: &str) -> Result<Window> {
    let (ma, mb) = (o.mark(a)?, o.mark(b)?);
    Ok(Window {
        bytes: mb
            .rr_before
            .unwrap_or(0)
            .saturating_sub(ma.rr_after.unwrap_or(0)),
        guest_s: mb.uptime - ma.uptime,
        by: Vec::new(),
    })
}

/// Parses `ftvm replay: icount N name` (the --verbose lines).
fn verbose_icount(line: &str) -> Option<u64> {
    line.strip_prefix("ftvm replay: icount ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Host time of a whole replay and of the part between icounts `a` and `b`.
struct ReplayTime {
    total: f64,
    window: f64,
}

/// `ftvm replay --verbose LOG`: the replayer prints each entry before applying it, and
/// applying an entry first runs the machine to its icount, so the first line with an icount
/// above `x` appears when the replay has reached `x`.
fn ftvm_replay(
    ftvm: &Path,
    log: &Path,
    (a, b): (u64, u64),
    timeout: Duration,
) -> Result<ReplayTime> {
    let t0 = Instant::now();
    let mut child = Command::new(ftvm)
        .arg("replay")
        .arg("--verbose")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start ftvm replay")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "ftvm replay still running after {} s: killed",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let end = Instant::now();
    let _ = reader.join();
    let lines: Vec<(Instant, String)> = rx.try_iter().collect();
    if !status.success() {
        let tail: Vec<&str> = lines
            .iter()
            .rev()
            .take(5)
            .map(|(_, l)| l.as_str())
            .collect();
        bail!("ftvm replay failed ({status}): {}", tail.join(" / "));
    }
    let reached = |x: u64| {
        lines
            .iter()
            .find(|(_, l)| verbose_icount(l).is_some_and(|i| i > x))
            .map_or(end, |(t, _)| *t)
    };
    Ok(ReplayTime {
        total: end.duration_since(t0).as_secs_f64(),
        window: reached(b).duration_since(reached(a)).as_secs_f64(),
    })
}

/// QEMU `rr=replay`: host time between the console echoes of the marks `idle-end` and
/// `cpu-end`, and of the whole process.
fn qemu_replay(cmd: Command, stderr: &Path, timeout: Duration) -> Result<ReplayTime> {
    let mut cmd = cmd;
    cmd.stderr(std::fs::File::create(stderr)?);
    let t0 = Instant::now();
    let r = (|| -> Result<ReplayTime> {
        let mut c = Console::spawn(cmd)?;
        c.wait_for(&mark_tag("idle-end"), timeout)?;
        let ta = Instant::now();
        c.wait_for(&mark_tag("cpu-end"), timeout)?;
        let tb = Instant::now();
        match c.wait_exit(timeout) {
            Some(0) => {}
            other => bail!("the replay did not end cleanly (exit {other:?})"),
        }
        Ok(ReplayTime {
            total: t0.elapsed().as_secs_f64(),
            window: tb.duration_since(ta).as_secs_f64(),
        })
    })();
    r.map_err(|e| {
        let t = tail_of(stderr);
        if t.trim().is_empty() {
            e
        } else {
            e.context(format!("QEMU's stderr ends with:\n{t}"))
        }
    })
}

/// One round's measurements.
#[derive(Default)]
struct Round {
    ftvm_plain: f64,
    ftvm_record: f64,
    ftvm_replay: Option<ReplayTime>,
    ftvm_idle: Window,
    ftvm_cpu: Window,
    ftvm_disk: Option<Window>,
    ftvm_log: u64,
    ftvm_prologue: u64,
    qemu_plain: Option<f64>,
    qemu_icount: Option<f64>,
    qemu_record: Option<f64>,
    qemu_replay: Option<ReplayTime>,
    qemu_idle: Option<Window>,
    qemu_cpu: Option<Window>,
    qemu_disk: Option<Window>,
    qemu_log: Option<u64>,
}

/// What did not work, for the notes under the tables.
#[derive(Default)]
struct Notes {
    items: Vec<String>,
}

impl Notes {
    fn add(&mut self, s: String) {
        eprintln!("bench replay: note: {s}");
        if !self.items.contains(&s) {
            self.items.push(s);
        }
    }
}

/// First line of an error chain, and the rest folded on one line (for notes).
fn one_line(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    let s: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let s = s.join(" / ");
    if s.len() > 700 {
        // The start says what failed, the end what the console showed last.
        let head = &s[..s.floor_char_boundary(250)];
        let tail = &s[s.ceil_char_boundary(s.len() - 450)..];
        format!("{head} … {tail}")
    } else {
        s
    }
}

/// Does QEMU's record/replay accept virtio-rng, and does a replay of a guest that reads it
/// come out the same? Returns whether to attach it, with the finding for the notes.
fn probe_qemu_rng(im: &Images, s: &Scratch, timeout: Duration) -> (bool, String) {
    let timeout = timeout.min(Duration::from_secs(120));
    let f = s.file("rng-probe.rr");
    let out = s.file("rng-probe.err");
    let rec = (|| -> Result<String> {
        let mut cmd = qemu_command(im, Qemu::Record(&f), None, true);
        cmd.stderr(std::fs::File::create(&out)?);
        let mut sh = Shell::start(Console::spawn(cmd)?, timeout)?;
        let (v, _) = sh.run("head -c 16 /dev/hwrng | od -An -tx1", timeout)?;
        if v.split_whitespace().count() != 16 {
            bail!("reading /dev/hwrng gave {v:?}");
        }
        type_slowly(&mut sh.c, "poweroff\n")?;
        match sh.c.wait_exit(Duration::from_secs(60)) {
            Some(0) => Ok(v),
            other => bail!("no clean power-off (exit {other:?})"),
        }
    })();
    let recorded = match rec {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&f);
            return (
                false,
                format!(
                    "virtio-rng under QEMU 7.2 rr=record failed: {}; {}",
                    one_line(&e),
                    tail_of(&out).replace('\n', " / ")
                ),
            );
        }
    };
    let rep = (|| -> Result<String> {
        let mut cmd = qemu_command(im, Qemu::Replay(&f), None, true);
        cmd.stderr(std::fs::File::create(&out)?);
        let mut c = Console::spawn(cmd)?;
        let before = c.wait_for("reboot: Power down", timeout)?;
        let _ = c.wait_exit(Duration::from_secs(30));
        Ok(before)
    })();
    let _ = std::fs::remove_file(&f);
    let bytes = recorded.split_whitespace().collect::<Vec<_>>().join(" ");
    match rep {
        Ok(text)
            if text
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .contains(&bytes) =>
        {
            (
                true,
                format!(
                "virtio-rng works under QEMU 7.2 record/replay: the 16 bytes read from /dev/hwrng \
                 while recording (`{bytes}`) came out the same in the replay"
            ),
            )
        }
        Ok(_) => (
            false,
            format!(
                "virtio-rng under QEMU 7.2 rr: recording works, but the replay does not \
                 reproduce the bytes read from /dev/hwrng (`{bytes}`), so QEMU's runs here have \
                 no entropy device"
            ),
        ),
        Err(e) => (
            false,
            format!(
                "virtio-rng under QEMU 7.2 rr: recording works, but replaying a guest that read \
                 /dev/hwrng failed ({}), so QEMU's runs here have no entropy device",
                one_line(&e)
            ),
        ),
    }
}

/// Runs the benchmark; prints the tables and writes the `replay` section of the docs.
pub fn main(root: &Path, ftvm: &Path, o: &Options) -> Result<()> {
    let im = images(o)?;
    let s = Scratch::new()?;
    let t = o.timeout;
    let mut notes = Notes::default();
    let mut sums: Vec<String> = Vec::new();

    let rng = if o.qemu {
        eprintln!("bench replay: probing virtio-rng under QEMU record/replay");
        let (ok, finding) = probe_qemu_rng(&im, &s, t);
        notes.add(finding);
        ok
    } else {
        false
    };

    let mut rounds: Vec<Round> = Vec::new();
    let mut disk_pending: Option<String> = None;
    for rep in 1..=o.reps {
        let mut r = Round::default();
        let say = |what: &str| eprintln!("bench replay: round {rep}/{}: {what}", o.reps);

        say("ftvm run");
        let out = session(
            ftvm_command(ftvm, &im, None, None),
            &s.file("ftvm.err"),
            None,
            Script::Cpu {
                idle: Duration::ZERO,
            },
            o.rounds,
            t,
        )
        .context("ftvm run")?;
        r.ftvm_plain = out.cpubench;
        sums.push(out.checksum);

        say("ftvm run --record");
        let log_path = s.file("ftvm.log");
        let out = session(
            ftvm_command(ftvm, &im, Some(&log_path), None),
            &s.file("ftvm-record.err"),
            None,
            Script::Cpu { idle: o.idle },
            o.rounds,
            t,
        )
        .context("ftvm run --record")?;
        r.ftvm_record = out.cpubench;
        sums.push(out.checksum.clone());
        let log = Log::read(&log_path)?;
        let (idle, _) = ftvm_window(&log, "start", "idle-end")?;
        let (cpu, cpu_icounts) = ftvm_window(&log, "idle-end", "cpu-end")?;
        eprintln!(
            "bench replay: ftvm guest time, log vs /proc/uptime: idle {:.2} vs {:.2} s, cpubench {:.2} vs {:.2} s",
            idle.guest_s,
            out.mark("idle-end")?.uptime - out.mark("start")?.uptime,
            cpu.guest_s,
            out.mark("cpu-end")?.uptime - out.mark("idle-end")?.uptime
        );
        r.ftvm_idle = idle;
        r.ftvm_cpu = cpu;
        r.ftvm_log = log.total_bytes;
        r.ftvm_prologue = log.prologue_bytes();

        say("ftvm replay");
        r.ftvm_replay = Some(ftvm_replay(ftvm, &log_path, cpu_icounts, t).context("ftvm replay")?);
        let _ = std::fs::remove_file(&log_path);

        if disk_pending.is_none() {
            say("ftvm run --record --drive (disk-bound)");
            let disk = s.disk(&im, "ftvm-disk.img")?;
            let dlog = s.file("ftvm-disk.log");
            let err = s.file("ftvm-disk.err");
            match session(
                ftvm_command(ftvm, &im, Some(&dlog), Some(&disk)),
                &err,
                None,
                Script::Disk,
                o.rounds,
                t,
            ) {
                Ok(_) => {
                    let log = Log::read(&dlog)?;
                    r.ftvm_disk = Some(ftvm_window(&log, "start", "disk-end")?.0);
                }
                Err(e) => {
                    let msg = tail_of(&err);
                    if msg.contains("--drive") && msg.contains("--record") {
                        disk_pending = Some(
                            msg.lines()
                                .find(|l| l.contains("--drive"))
                                .unwrap_or("")
                                .trim()
                                .to_string(),
                        );
                    } else {
                        return Err(e.context("ftvm run --record --drive"));
                    }
                }
            }
            let _ = std::fs::remove_file(&dlog);
            let _ = std::fs::remove_file(&disk);
        }

        if o.qemu {
            say("qemu (plain TCG)");
            match session(
                qemu_command(&im, Qemu::Plain, None, rng),
                &s.file("qemu.err"),
                None,
                Script::Cpu {
                    idle: Duration::ZERO,
                },
                o.rounds,
                t,
            ) {
                Ok(out) => {
                    r.qemu_plain = Some(out.cpubench);
                    sums.push(out.checksum);
                }
                Err(e) => notes.add(format!("QEMU plain run failed: {}", one_line(&e))),
            }
            say("qemu -icount shift=auto");
            match session(
                qemu_command(&im, Qemu::Icount, None, rng),
                &s.file("qemu-icount.err"),
                None,
                Script::Cpu {
                    idle: Duration::ZERO,
                },
                o.rounds,
                t,
            ) {
                Ok(out) => {
                    r.qemu_icount = Some(out.cpubench);
                    sums.push(out.checksum);
                }
                Err(e) => notes.add(format!("QEMU -icount run failed: {}", one_line(&e))),
            }
            say("qemu rr=record");
            let rr = s.file("qemu.rr");
            match session(
                qemu_command(&im, Qemu::Record(&rr), None, rng),
                &s.file("qemu-record.err"),
                Some(&rr),
                Script::Cpu { idle: o.idle },
                o.rounds,
                t,
            ) {
                Ok(out) => {
                    r.qemu_record = Some(out.cpubench);
                    sums.push(out.checksum.clone());
                    r.qemu_idle = Some(qemu_window(&out, "start", "idle-end")?);
                    r.qemu_cpu = Some(qemu_window(&out, "idle-end", "cpu-end")?);
                    r.qemu_log = std::fs::metadata(&rr).ok().map(|m| m.len());
                    say("qemu rr=replay");
                    match qemu_replay(
                        qemu_command(&im, Qemu::Replay(&rr), None, rng),
                        &s.file("qemu-replay.err"),
                        t,
                    ) {
                        Ok(rt) => r.qemu_replay = Some(rt),
                        Err(e) => notes.add(format!("QEMU rr=replay failed: {}", one_line(&e))),
                    }
                }
                Err(e) => notes.add(format!(
                    "QEMU rr=record failed on this guest: {}",
                    one_line(&e)
                )),
            }
            let _ = std::fs::remove_file(&rr);

            say("qemu rr=record with a blkreplay disk (disk-bound)");
            let disk = s.disk(&im, "qemu-disk.img")?;
            let rr = s.file("qemu-disk.rr");
            match session(
                qemu_command(&im, Qemu::Record(&rr), Some(&disk), rng),
                &s.file("qemu-disk.err"),
                Some(&rr),
                Script::Disk,
                o.rounds,
                t,
            ) {
                Ok(out) => r.qemu_disk = Some(qemu_window(&out, "start", "disk-end")?),
                Err(e) => notes.add(format!(
                    "QEMU rr=record with a blkreplay disk failed on this guest: {}",
                    one_line(&e)
                )),
            }
            let _ = std::fs::remove_file(&rr);
            let _ = std::fs::remove_file(&disk);
        }
        rounds.push(r);
    }
    if sums.iter().any(|x| *x != sums[0]) {
        bail!("cpubench checksums differ between runs or machines: {sums:?}");
    }
    if let Some(why) = &disk_pending {
        notes.add(format!(
            "ftvm's disk-bound row is pending: `ftvm run --record LOG --drive file=...` refuses: \"{why}\""
        ));
    }

    let body = report(o, &rounds, &sums[0], disk_pending.as_deref(), &notes, rng);
    println!("{body}");
    if o.no_doc {
        eprintln!("bench replay: docs/benchmarks.md left alone (--quick / --no-doc)");
        return Ok(());
    }
    let mut sec = String::new();
    let _ = writeln!(
        sec,
        "Produced by `{}` ({} interleaved rounds; OpenSBI fw_jump, the guest of `cargo xtask guest`, \
         256 MiB, 1 hart; `cpubench {}` checksum `{}` identical in every run).\n",
        o.command, o.reps, o.rounds, sums[0]
    );
    sec.push_str(&doc::machine_facts());
    sec.push('\n');
    sec.push_str(&body);
    doc::replace_section(root, "replay", &sec)?;
    eprintln!("bench replay: updated docs/benchmarks.md");
    Ok(())
}

/// Smallest and median of the values present (NaN when none).
fn best_median(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut v: Vec<f64> = v.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

fn secs(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "–".into()
    }
}

/// `best ratio (median ratio)`.
fn ratio(a: (f64, f64), b: (f64, f64)) -> String {
    let (r, m) = (a.0 / b.0, a.1 / b.1);
    if r.is_finite() {
        format!("{r:.3} ({m:.3})")
    } else {
        "–".into()
    }
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The round whose `key` is the median.
fn median_round<T>(v: &[T], key: impl Fn(&T) -> f64) -> Option<&T> {
    let mut idx: Vec<usize> = (0..v.len()).filter(|&i| key(&v[i]).is_finite()).collect();
    idx.sort_by(|&a, &b| key(&v[a]).total_cmp(&key(&v[b])));
    idx.get(idx.len() / 2).map(|&i| &v[i])
}

fn rate_cells(w: Option<&Window>) -> String {
    match w {
        Some(w) => format!(
            "{:.1} | {} | {}",
            w.guest_s,
            group(w.bytes),
            group(w.rate().round() as u64)
        ),
        None => "– | – | –".into(),
    }
}

/// The tables and notes.
fn report(
    o: &Options,
    rounds: &[Round],
    checksum: &str,
    disk_pending: Option<&str>,
    notes: &Notes,
    rng: bool,
) -> String {
    let mut s = String::new();
    let bm = |f: &dyn Fn(&Round) -> Option<f64>| best_median(rounds.iter().filter_map(f));
    let fp = bm(&|r| Some(r.ftvm_plain));
    let fr = bm(&|r| Some(r.ftvm_record));
    let fy = bm(&|r| r.ftvm_replay.as_ref().map(|x| x.window));
    let qp = bm(&|r| r.qemu_plain);
    let qi = bm(&|r| r.qemu_icount);
    let qr = bm(&|r| r.qemu_record);
    let qy = bm(&|r| r.qemu_replay.as_ref().map(|x| x.window));
    let n = o.rounds;
    let _ = writeln!(
        s,
        "Time of `cpubench {n}` inside Linux (host seconds from typing the command to its last \
         output; for a replay, from reaching the command's icount to reaching the next one), \
         best of {} (median); ratios best/best (median/median):\n",
        o.reps
    );
    s.push_str("| run | ftvm s | ftvm ratio | qemu s | qemu ratio |\n|---|---:|---:|---:|---:|\n");
    let cell = |x: (f64, f64)| format!("{} ({})", secs(x.0), secs(x.1));
    let _ = writeln!(
        s,
        "| plain: `ftvm run` / QEMU TCG without `-icount` | {} | 1 | {} | 1 |",
        cell(fp),
        cell(qp)
    );
    let _ = writeln!(
        s,
        "| QEMU `-icount shift=auto` (what rr needs), ratio to plain | – | – | {} | {} |",
        cell(qi),
        ratio(qi, qp)
    );
    let _ = writeln!(
        s,
        "| **recording**: `ftvm run --record` / `-icount shift=auto,rr=record`; ratio to plain (QEMU: to `-icount`) | {} | **{}** | {} | **{}** |",
        cell(fr),
        ratio(fr, fp),
        cell(qr),
        ratio(qr, qi)
    );
    let _ = writeln!(
        s,
        "| replay: `ftvm replay` / `rr=replay`; ratio to recording | {} | {} | {} | {} |",
        cell(fy),
        ratio(fy, fr),
        cell(qy),
        ratio(qy, qr)
    );
    let fyt = bm(&|r| r.ftvm_replay.as_ref().map(|x| x.total));
    let qyt = bm(&|r| r.qemu_replay.as_ref().map(|x| x.total));
    let _ = writeln!(
        s,
        "\nWhole replays (boot, {} s of idling, cpubench, power-off), best (median): ftvm {} s, QEMU {} s. \
         QEMU recording vs plain TCG: {}.\n",
        o.idle.as_secs(),
        cell(fyt),
        cell(qyt),
        ratio(qr, qp)
    );

    let _ = writeln!(
        s,
        "Log bytes per second of guest time (the round with the median rate; ftvm: entries between \
         the two marks, guest time = the machine's clock rebuilt from the logged time syncs and time rates; QEMU: growth of the rr file between the marks, \
         ±4 KiB of stdio buffering at each, guest time from `/proc/uptime`):\n"
    );
    s.push_str(
        "| guest | ftvm guest s | ftvm bytes | ftvm B/s | qemu guest s | qemu bytes | qemu B/s | qemu/ftvm |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    type Pick = fn(&Round) -> Option<&Window>;
    let rows: [(String, Pick, Pick); 3] = [
        (
            format!("idle: shell prompt, nothing typed ({} s)", o.idle.as_secs()),
            |r| Some(&r.ftvm_idle),
            |r| r.qemu_idle.as_ref(),
        ),
        (
            format!("CPU-bound: `cpubench {n}`"),
            |r| Some(&r.ftvm_cpu),
            |r| r.qemu_cpu.as_ref(),
        ),
        (
            "disk-bound: 8 MiB `dd` write + fsync, drop caches, read back".to_string(),
            |r| r.ftvm_disk.as_ref(),
            |r| r.qemu_disk.as_ref(),
        ),
    ];
    let mut breakdown = Vec::new();
    for (name, f, q) in rows {
        let fw = median_round(rounds, |r| f(r).map_or(f64::NAN, Window::rate)).and_then(f);
        let qw = median_round(rounds, |r| q(r).map_or(f64::NAN, Window::rate)).and_then(q);
        let fcells = match (fw, disk_pending) {
            (None, Some(_)) => "pending (see below) | – | –".to_string(),
            _ => rate_cells(fw),
        };
        let rel = match (fw, qw) {
            (Some(a), Some(b)) => format!("{:.1}", b.rate() / a.rate()),
            _ => "–".into(),
        };
        let _ = writeln!(s, "| {name} | {fcells} | {} | {rel} |", rate_cells(qw));
        if let Some(w) = fw {
            let parts: Vec<String> =
                w.by.iter()
                    .map(|(k, b)| format!("{k} {:.0}%", 100.0 * *b as f64 / w.bytes.max(1) as f64))
                    .collect();
            breakdown.push(format!(
                "{}: {}",
                name.split(':').next().unwrap_or(""),
                parts.join(", ")
            ));
        }
    }
    let flog = best_median(rounds.iter().map(|r| r.ftvm_log as f64)).1;
    let fpro = best_median(rounds.iter().map(|r| r.ftvm_prologue as f64)).1;
    let qlog = best_median(rounds.iter().filter_map(|r| r.qemu_log.map(|x| x as f64))).1;
    let _ = writeln!(
        s,
        "\nWhole logs of the recorded CPU sessions (median): ftvm {} bytes, of which {} are the \
         prologue (configuration and the initial snapshot of the machine, compressed; a log is \
         self-contained), QEMU {} bytes (QEMU's log holds no machine state: its replay needs the \
         same kernel, initrd and disk images). What ftvm's bytes are: {}.",
        group(flog as u64),
        group(fpro as u64),
        if qlog.is_finite() {
            group(qlog as u64)
        } else {
            "–".into()
        },
        breakdown.join("; ")
    );
    let _ = writeln!(
        s,
        "\nQEMU's runs {} entropy device (virtio-rng); ftvm's always have one. cpubench checksum `{checksum}`.",
        if rng { "have an" } else { "have no" }
    );
    if !notes.items.is_empty() || disk_pending.is_some() {
        s.push_str("\nNotes from this run:\n\n");
        for n in &notes.items {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_verbose_replay_lines() {
        assert_eq!(
            verbose_icount("ftvm replay: icount 1234 idle-skip"),
            Some(1234)
        );
        assert_eq!(verbose_icount("ftvm replay: replayed 3 entries"), None);
    }

    #[test]
    fn best_and_median_skip_missing_values() {
        let (b, m) = best_median([3.0, f64::NAN, 1.0, 2.0].into_iter());
        assert_eq!((b, m), (1.0, 2.0));
        assert!(best_median(std::iter::empty()).0.is_nan());
        assert_eq!(ratio((2.0, 4.0), (1.0, 2.0)), "2.000 (2.000)");
    }

    #[test]
    fn qemu_uses_blkreplay_for_disks_under_rr() {
        let im = Images {
            kernel: "K".into(),
            initrd: "I".into(),
            disk: "D".into(),
        };
        let f = PathBuf::from("/tmp/x.rr");
        let args = |c: Command| -> String {
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let rec = args(qemu_command(
            &im,
            Qemu::Record(&f),
            Some(Path::new("D")),
            false,
        ));
        assert!(rec.contains("-icount shift=auto,rr=record,rrfile=/tmp/x.rr"));
        assert!(rec.contains("driver=blkreplay,if=none,image=d0,id=d0-rr"));
        assert!(rec.contains("virtio-blk-device,drive=d0-rr"));
        assert!(!rec.contains("virtio-rng"));
        let plain = args(qemu_command(&im, Qemu::Plain, Some(Path::new("D")), true));
        assert!(!plain.contains("icount") && !plain.contains("blkreplay"));
        assert!(plain.contains("virtio-blk-device,drive=d0 ") && plain.contains("virtio-rng"));
    }
}
