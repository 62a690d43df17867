//! `ftvm run`: boot a virt machine with its console on stdio.
//!
//! The machine itself is deterministic ([`machine::Machine`]); this is the host side that decides
//! when input enters and how idle time passes:
//!
//! - Console bytes from stdin go to UART0 (and nowhere else), taken between run slices.
//! - With `--netdev`, the virtio network card's frames go to and come from a host backend
//!   (`hostnet`); the card takes a received frame at its next device pass. An idle guest is
//!   woken when one arrives (the backend signals the run loop's wake-up, which is polled with
//!   stdin), exactly as for console input.
//! - When every hart waits for an interrupt, the clock skips ahead to the next timer, but an
//!   idle period never passes faster than wall-clock time: a skip of d guest seconds takes at
//!   least d host seconds, and ends early (at the guest time that corresponds to the host time
//!   waited) when input arrives. Busy periods run as fast as the interpreter goes, so guest
//!   time may fall behind the host's: at every slice boundary where it lags by more than
//!   [`rr::timesync::BOUND`] (50 ms) the clock is moved forward by the lag (a time-sync
//!   adjustment, logged under `--record`); it never runs ahead of it because of idling.
//!
//! Exit codes: 0 after the guest powers off (or Ctrl-A X), the guest's code after a failure
//! report (0x3333 | code << 16; a code of 0 becomes 1), 2 on errors of input or setup, 128 + n
//! after signal n.

mod snapsig;
mod term;

use rr::{Outbox, Recorder, SLICE};
use std::fs::File;
use std::io::BufWriter;

use machine::clock;
use machine::virtio::OsEntropy;
use machine::{Backends, DriveConfig, Firmware, Machine, MachineConfig, PowerEvent, Stop};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The firmware used when `--bios` is not given: Debian's OpenSBI (package `opensbi`).
pub const DEFAULT_BIOS: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin";

/// Console input accepted ahead of the guest; stdin is not read while this much waits.
const MAX_BACKLOG: usize = 64 * 1024;

/// The machine's options, shared by `ftvm run`, `ftvm primary`, `ftvm backup` and `ftvm pair`.
#[derive(clap::Args, Debug, Clone)]
pub struct VmArgs {
    /// Firmware loaded at the start of RAM (e.g. OpenSBI's fw_jump.bin or fw_dynamic.bin, raw
    /// or ELF), or `none` to enter the kernel in M-mode at the start of RAM.
    #[arg(long, value_name = "FILE|none", default_value = DEFAULT_BIOS)]
    pub bios: String,
    /// Kernel (raw Image or ELF), loaded 2 MiB above the firmware.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Initial RAM disk.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "ARGS", default_value = "")]
    pub append: String,
    /// RAM size, with an optional K, M or G suffix.
    #[arg(long, short = 'm', value_name = "SIZE", default_value = "256M", value_parser = machine::parse_size)]
    pub mem: u64,
    /// Number of harts.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub smp: usize,
    /// A virtio disk: file=PATH[,readonly=on], or an NBD export:
    /// nbd=HOST:PORT|unix:PATH[,export=NAME][,readonly=on][,fua=on][,timeout=SECS].
    /// Repeatable; the first is /dev/vda.
    #[arg(long, value_name = "file=PATH[,readonly=on]|nbd=ADDR[,...]")]
    pub drive: Vec<DriveConfig>,
}

impl VmArgs {
    /// The machine configuration these options describe.
    pub fn config(&self) -> MachineConfig {
        MachineConfig {
            mem_size: self.mem,
            harts: self.smp,
            bios: match self.bios.as_str() {
                "none" => Firmware::None,
                f => Firmware::File(f.into()),
            },
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            append: self.append.clone(),
            drives: self.drive.clone(),
            net: None,
        }
    }
}

/// Options of `ftvm run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The machine.
    #[command(flatten)]
    pub vm: VmArgs,
    /// Write the generated device tree blob to FILE and exit.
    #[arg(long, value_name = "FILE")]
    pub dtb_out: Option<PathBuf>,
    /// Print the instruction count, run time and speed to stderr at exit.
    #[arg(long)]
    pub stats: bool,
    /// Record the run's input log to LOG, for `ftvm replay LOG` (with --drive, disk reads are
    /// logged too: the replay needs no image).
    #[arg(long, value_name = "LOG")]
    pub record: Option<PathBuf>,
    /// Write a snapshot of the whole machine to FILE when the instruction count reaches
    /// --snapshot-at, or without --snapshot-at each time the process gets SIGUSR1 (at the next
    /// slice boundary; the file is replaced), then carry on. With --record, each SIGUSR1
    /// writes FILE.1, FILE.2, ... holding the log position too, for `ftvm replay LOG --restore`.
    #[arg(long, value_name = "FILE")]
    pub snapshot_out: Option<PathBuf>,
    /// The network card.
    #[command(flatten)]
    pub net: crate::ft_cmd::NetArgs,
    /// The machine-wide instruction count at which --snapshot-out is taken. Not with --record:
    /// stopping a run slice there would move the recorder's slice boundaries away from the
    /// replayer's.
    #[arg(
        long,
        value_name = "ICOUNT",
        requires = "snapshot_out",
        conflicts_with = "record"
    )]
    pub snapshot_at: Option<u64>,
    /// Start from a snapshot written by --snapshot-out (with the same machine options) instead
    /// of booting.
    #[arg(long, value_name = "FILE", conflicts_with = "record")]
    pub restore: Option<PathBuf>,
    /// Serve one gdb client on HOST:PORT (`target remote HOST:PORT`); the guest runs until it
    /// connects, then stops for it. See docs/debugging.md.
    #[arg(long, value_name = "HOST:PORT")]
    pub gdb: Option<String>,
    /// With --gdb: wait for the client before the first instruction.
    #[arg(long, requires = "gdb")]
    pub gdb_wait: bool,
}

/// Writes what the guest wrote to stdout.
fn flush(out: &Outbox) {
    let data = out.take();
    if data.is_empty() {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    // A closed stdout loses console output; the guest must not notice.
    let _ = stdout.write_all(&data).and_then(|()| stdout.flush());
}

type FileRecorder = Recorder<BufWriter<File>>;

fn build(cfg: &MachineConfig, out: &Outbox) -> Result<Machine, hostblk::DiskError> {
    build_with(cfg, out, Box::new(OsEntropy::default()))
}

fn build_with(
    cfg: &MachineConfig,
    out: &Outbox,
    entropy: Box<dyn machine::virtio::EntropyBackend>,
) -> Result<Machine, hostblk::DiskError> {
    hostblk::boot(
        cfg,
        Backends {
            serial: Box::new(out.clone()),
            console: Box::new(out.clone()),
            entropy,
        },
    )
}

/// The host end of the network card and what `ftvm run` says about it.
struct HostLink {
    monitor: hostnet::rx::Monitor,
    /// The connection's end was reported.
    reported: bool,
    /// Reconnections reported so far.
    reconnects: u64,
}

impl HostLink {
    /// Opens the backend `--netdev` names and puts it into `m`.
    fn attach(cfg: &hostnet::NetdevConfig, m: &mut Machine) -> Result<HostLink, String> {
        let net = hostnet::HostNet::open(cfg).map_err(|e| e.to_string())?;
        let monitor = net.monitor();
        m.replace_net(net.into_backend())
            .map_err(|e| e.to_string())?;
        Ok(HostLink {
            monitor,
            reported: false,
            reconnects: 0,
        })
    }

    /// Says once that the connection ended (the guest carries on unplugged), and each time a
    /// stream backend connected again after its connection ended.
    fn check(&mut self) {
        let st = self.monitor.stats();
        if st.reconnects > self.reconnects {
            self.reconnects = st.reconnects;
            eprint!("\r\nftvm run: network: the host end's connection ended; connected again ({} time(s) so far)\r\n", st.reconnects);
        }
        if self.reported {
            return;
        }
        if let Some(why) = st.closed {
            eprint!("\r\nftvm run: network: {why}; frames the guest sends are dropped\r\n");
            self.reported = true;
        }
    }
}

/// Runs the command; returns the process exit code.
pub fn main(a: Args) -> i32 {
    let mut cfg = a.vm.config();
    a.net.apply(&mut cfg);
    let out = Outbox::default();
    let (mut rec, entropy) = match &a.record {
        None => (None, None),
        Some(path) => match Recorder::create(path, &cfg) {
            Ok((r, e)) => (Some(r), Some(e)),
            Err(e) => {
                eprintln!("ftvm run: {e}");
                return 2;
            }
        },
    };
    let built = match (entropy, &a.restore) {
        (_, Some(snap)) => restore(&cfg, &out, snap),
        (Some(e), None) => build_with(&cfg, &out, e).map_err(|e| e.to_string()),
        (None, None) => build(&cfg, &out).map_err(|e| e.to_string()),
    };
    let mut m = match built {
        Ok(m) => m,
        Err(e) => {
            eprintln!("ftvm run: {e}");
            return 2;
        }
    };
    let mut link = match &a.net.netdev {
        Some(nd) if a.dtb_out.is_none() => match HostLink::attach(nd, &mut m) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("ftvm run: {e}");
                return 2;
            }
        },
        _ => None,
    };
    let mut snapshot = a.snapshot_out.clone().zip(a.snapshot_at);
    // Without --snapshot-at, a snapshot on every SIGUSR1.
    let on_signal = a.snapshot_out.clone().filter(|_| a.snapshot_at.is_none());
    if let Some(path) = &a.dtb_out {
        return match std::fs::write(path, m.fdt()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("ftvm run: cannot write {}: {e}", path.display());
                2
            }
        };
    }
    // Disk requests complete between run slices, when the host's I/O has them ready.
    m.set_deferred_io(true);
    if let Some(r) = &mut rec {
        if let Err(e) = r.start(&mut m) {
            eprintln!("ftvm run: recording to the log failed: {e}");
            return 2;
        }
    }
    // The log's header, read back, for the log position of snapshots taken while recording.
    let rec_header = match (&a.record, &on_signal) {
        (Some(log), Some(_)) => match log_header(log) {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!("ftvm run: {e}");
                return 2;
            }
        },
        _ => None,
    };
    let stub = match &a.gdb {
        Some(addr) => match gdb::Stub::start(addr, m.harts(), a.gdb_wait, false) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("ftvm run: {e}");
                return 2;
            }
        },
        None => None,
    };
    // Snapshots taken on SIGUSR1 while recording, numbered from 1.
    let mut signal_snapshots = 0u32;
    term::catch_signals();
    if on_signal.is_some() {
        snapsig::catch();
    }
    let raw = term::RawMode::enable();
    let mut input = term::Input::new(raw.is_some());
    let started = Instant::now();
    // The host's steps of the loop (time sync, completions, a slice, idling), with the
    // recorder's calls paired with the machine's under --record.
    let mut runner = match hostrun::Runner::starting_at(&m, started) {
        Ok(r) => r,
        Err(e) => {
            eprint!("\r\nftvm run: cannot create the run loop's wake-up: {e}\r\n");
            return 2;
        }
    };
    // The recorder's time-sync counters, kept when it is finished.
    let mut rec_sync = None;
    let mut executed = 0u64;
    let code = loop {
        let before = m.icount();
        if let Some((path, at)) = &snapshot {
            if m.icount() >= *at {
                if let Err(e) = write_snapshot(&m, path) {
                    eprint!("\r\nftvm run: {e}\r\n");
                    break 2;
                }
                snapshot = None;
            }
        }
        if let Some(path) = on_signal.as_ref().filter(|_| snapsig::take()) {
            // A failed snapshot on request is reported; the guest carries on.
            let done = match (&mut rec, &rec_header) {
                (Some(r), Some(h)) => {
                    signal_snapshots += 1;
                    write_recorded_snapshot(&m, r, h, &numbered(path, signal_snapshots))
                }
                _ => write_snapshot(&m, path),
            };
            if let Err(e) = done {
                eprint!("\r\nftvm run: {e}\r\n");
            }
        }
        let slice_end = snapshot.as_ref().map(|(_, at)| *at);
        let stop = run_once(&mut m, &mut input, &out, &mut rec, &mut runner, slice_end);
        executed += m.icount().saturating_sub(before);
        flush(&out);
        if let Some(l) = &mut link {
            l.check();
        }
        if let Some(e) = rec.as_mut().and_then(|r| r.error.take()) {
            eprint!("\r\nftvm run: recording to the log failed: {e}\r\n");
            break 2;
        }
        if !matches!(stop, Outcome::Continue) {
            if let Some(r) = rec.take() {
                rec_sync = r.time_sync().cloned();
                if let Err(e) = r.finish(&m) {
                    eprint!("\r\nftvm run: recording to the log failed: {e}\r\n");
                    break 2;
                }
                if matches!(stop, Outcome::Reset) {
                    eprint!("\r\nftvm run: the guest reset: the recording ends here\r\n");
                }
            }
        }
        match stop {
            Outcome::Continue => {}
            Outcome::Exit(code) => break code,
            Outcome::Reset => match build(&cfg, &out) {
                Ok(mut new) => {
                    // The same host network, for the new machine's card.
                    if let Ok(net) = m.replace_net(Box::new(machine::virtio::NullNet)) {
                        let _ = new.replace_net(net);
                    }
                    m = new;
                    runner = match hostrun::Runner::starting_at(&m, Instant::now()) {
                        Ok(r) => r,
                        Err(e) => {
                            eprint!("\r\nftvm run: cannot create the run loop's wake-up: {e}\r\n");
                            break 2;
                        }
                    };
                }
                Err(e) => {
                    eprintln!("\r\nftvm run: reset failed: {e}");
                    break 2;
                }
            },
        }
    };
    drop(raw);
    if let Some(s) = stub {
        s.finish(u8::try_from(code).unwrap_or(1));
    }
    if a.stats {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "ftvm run: {} steps of guest time {:.3} s in {:.3} s of host time ({:.1} M steps/s)",
            m.icount(),
            clock::duration_of_ticks(m.raw_time()).as_secs_f64(),
            secs,
            executed as f64 / secs.max(1e-9) / 1e6
        );
        if let Some(j) = m.jit_stats() {
            eprintln!(
                "ftvm run: jit: {} blocks ({} instructions, {} bytes of code, {:.3} s) \
                 translated, {} flushes; {} dispatcher entries, {} chains, {} inline entries",
                j.blocks,
                j.insns,
                j.code_bytes,
                j.translate_ns as f64 / 1e9,
                j.flushes,
                j.runs,
                j.chains,
                j.inline_entries
            );
        }
        // The recorder's counters if it kept time, else the run's own (always started).
        if let Some(ts) = rec_sync.as_ref().or(runner.time_sync()) {
            eprintln!(
                "ftvm run: {} time-sync adjustments, {:.3} s added to guest time; {} time-rate \
                 changes, now {:.2} steps per tick; {:.3} s paced",
                ts.adjustments,
                clock::duration_of_ticks(ts.added_ticks).as_secs_f64(),
                ts.rate_changes,
                f64::from(m.clock().rate) / f64::from(clock::RATE_UNIT),
                ts.paced_total.as_secs_f64()
            );
        }
        if let (Some(dev), Some(l)) = (m.net_stats(), &link) {
            let host = l.monitor.stats();
            eprintln!(
                "ftvm run: network: {} frames received ({} dropped too large for the buffer), \
                 {} sent ({} malformed); host side: {} queued, {} oversized, {} runts, {} \
                 truncated, {} dropped on a full queue, {} not sent, {} dropped on a full \
                 transmit queue",
                dev.rx_frames,
                dev.rx_oversized,
                dev.tx_frames,
                dev.tx_malformed,
                host.rx_frames,
                host.rx_oversized,
                host.rx_runts,
                host.rx_truncated,
                host.rx_queue_full,
                host.tx_dropped,
                host.tx_queue_full
            );
        }
    }
    code
}

/// Builds the machine from a snapshot file (the images are loaded as for a boot, then RAM, harts
/// and devices are overwritten by the snapshot's).
fn restore(cfg: &MachineConfig, out: &Outbox, path: &std::path::Path) -> Result<Machine, String> {
    let file =
        std::fs::read(path).map_err(|e| format!("cannot read snapshot {}: {e}", path.display()))?;
    // A snapshot taken while recording carries its log position in front: not needed here.
    let bytes = match rr::SnapshotPosition::unwrap(&file) {
        Ok(Some((_, snap))) => snap,
        Ok(None) => &file[..],
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let backends = Backends {
        serial: Box::new(out.clone()),
        console: Box::new(out.clone()),
        entropy: Box::new(OsEntropy::default()),
    };
    hostblk::restore(cfg, backends, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The header of the log being recorded to `log` (written by `Recorder::start`).
fn log_header(log: &std::path::Path) -> Result<replay::LogHeader, String> {
    let f = File::open(log).map_err(|e| format!("cannot read back {}: {e}", log.display()))?;
    replay::LogReader::new(std::io::BufReader::new(f))
        .map(|r| r.header().clone())
        .map_err(|e| format!("cannot read back {}: {e}", log.display()))
}

/// `path` with `.n` appended (`snap` → `snap.3`).
fn numbered(path: &std::path::Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// Writes a snapshot of `m` taken while recording, with the log position it stands at
/// ([`rr::SnapshotPosition`]), to `path` (atomically). Called between two run slices, where
/// every entry logged so far is in the machine and none to come is.
fn write_recorded_snapshot(
    m: &Machine,
    rec: &mut FileRecorder,
    header: &replay::LogHeader,
    path: &std::path::Path,
) -> Result<(), String> {
    let at = rec
        .position_now()
        .map_err(|e| format!("cannot take a snapshot: {e}"))?;
    let snap = m
        .snapshot()
        .map_err(|e| format!("cannot take a snapshot: {e}"))?;
    let bytes = rr::SnapshotPosition::new(header, m.icount(), at).wrap(&snap);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write snapshot {}: {e}", path.display()))?;
    eprint!(
        "\r\nftvm run: snapshot at icount {} (log entry {}) written to {} ({} bytes)\r\n",
        m.icount(),
        at.entries,
        path.display(),
        bytes.len()
    );
    Ok(())
}

/// Writes a snapshot of `m` to `path` (atomically: a temporary file renamed into place).
fn write_snapshot(m: &Machine, path: &std::path::Path) -> Result<(), String> {
    let bytes = m
        .snapshot()
        .map_err(|e| format!("cannot take a snapshot: {e}"))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write snapshot {}: {e}", path.display()))?;
    eprint!(
        "\r\nftvm run: snapshot at icount {} written to {} ({} bytes)\r\n",
        m.icount(),
        path.display(),
        bytes.len()
    );
    Ok(())
}

enum Outcome {
    Continue,
    Exit(i32),
    Reset,
}

fn show_status(m: &Machine) {
    eprint!(
        "\r\nftvm: icount {} (guest time {:.3} s)\r\n",
        m.icount(),
        clock::duration_of_ticks(m.raw_time()).as_secs_f64()
    );
    for h in m.harts() {
        eprint!(
            "ftvm: hart {} pc {:#x} {:?} wfi {}\r\n",
            h.hartid, h.pc, h.prv, h.wfi
        );
    }
}

/// Takes what the user typed; returns an exit code if the session should end.
fn take_input(m: &mut Machine, t: term::Typed, rec: &mut Option<FileRecorder>) -> Option<i32> {
    if !t.bytes.is_empty() {
        if let Some(r) = rec {
            r.console(m, &t.bytes);
        }
        m.console_input(&t.bytes);
    }
    if t.status {
        show_status(m);
    }
    if t.quit {
        eprint!("\r\nftvm: terminated (C-a x)\r\n");
        return Some(0);
    }
    term::signal().map(|s| 128 + s)
}

/// One slice of the run loop.
fn run_once(
    m: &mut Machine,
    input: &mut term::Input,
    out: &Outbox,
    rec: &mut Option<FileRecorder>,
    runner: &mut hostrun::Runner,
    stop_at: Option<u64>,
) -> Outcome {
    if m.console_backlog() < MAX_BACKLOG {
        let typed = input.wait(Some(Duration::ZERO));
        if let Some(code) = take_input(m, typed, rec) {
            return Outcome::Exit(code);
        }
    } else if let Some(s) = term::signal() {
        return Outcome::Exit(128 + s);
    }
    let mut limit = m.icount().saturating_add(SLICE);
    if let Some(at) = stop_at.filter(|&at| at > m.icount()) {
        limit = limit.min(at);
    }
    // Time sync (logged under --record; the replayer makes the logged jumps and rate changes at
    // the same point), the completion point (logged), a slice, what the devices took (logged).
    let stop = runner.slice(m, rec.as_mut(), limit);
    match stop {
        Stop::Limit => Outcome::Continue,
        Stop::Power(PowerEvent::PowerOff) => Outcome::Exit(0),
        Stop::Power(PowerEvent::Fail(code)) => Outcome::Exit(match code & 0xff {
            0 => 1,
            c => i32::from(c),
        }),
        Stop::Power(PowerEvent::Reset) => Outcome::Reset,
        Stop::Idle { wake } => idle(m, input, out, wake, rec, runner),
    }
}

/// Every hart waits: host time passes until the next timer is due in guest time, or until
/// input arrives or a disk request's host I/O finishes (then the clock moves only as far as
/// host time did): [`hostrun::Runner::idle`], waiting on stdin and the run loop's wake-up
/// (frames, disk I/O).
fn idle(
    m: &mut Machine,
    input: &mut term::Input,
    out: &Outbox,
    wake: Option<u64>,
    rec: &mut Option<FileRecorder>,
    runner: &mut hostrun::Runner,
) -> Outcome {
    flush(out);
    let mut stdin = Stdin {
        input,
        typed: term::Typed::default(),
    };
    runner.idle(m, rec.as_mut(), wake, Duration::MAX, &mut stdin);
    let typed = stdin.typed;
    match take_input(m, typed, rec) {
        Some(code) => Outcome::Exit(code),
        None => Outcome::Continue,
    }
}

/// What ends `ftvm run`'s idle waits besides the machine's own wake-ups (frames, disk I/O):
/// stdin (kept for the loop to take), a signal or a snapshot request.
struct Stdin<'a> {
    input: &'a mut term::Input,
    typed: term::Typed,
}

impl hostrun::Role for Stdin<'_> {
    fn has_work(&mut self, m: &Machine) -> bool {
        let mut woken = false;
        // Stdin is not read while the guest has this much waiting.
        if m.console_backlog() < MAX_BACKLOG {
            let typed = self.input.wait(Some(Duration::ZERO));
            woken = !typed.bytes.is_empty() || typed.quit || typed.status;
            self.typed.bytes.extend(typed.bytes);
            self.typed.quit |= typed.quit;
            self.typed.status |= typed.status;
        }
        woken || term::signal().is_some() || snapsig::pending()
    }

    fn fd(&self, m: &Machine) -> Option<std::os::fd::RawFd> {
        (m.console_backlog() < MAX_BACKLOG && !self.input.at_eof()).then_some(0)
    }
}
