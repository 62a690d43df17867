//! `ftvm replay LOG`: re-runs a run recorded with `ftvm run --record LOG`, from the initial
//! snapshot embedded in the log, feeding the logged inputs at their icounts, and prints the
//! guest's console output to stdout. No disk, no terminal, no wall clock: the replay is a pure
//! function of the log.
//!
//! For each entry the machine is run exactly to the entry's icount and the entry applied:
//! console bytes, an idle skip, entropy (queued just before, taken by the rng device at that
//! icount), a state digest compared with the replayed machine's. At the first mismatch the
//! replay stops with `diverged at icount N: ...`.
//!
//! Exit codes: 0 when the log has been replayed to its end (and the guest powered off where
//! the log says it did), 2 on a divergence or a bad log.

use crate::record::{digest_parts, LoggedConfig, DEV_RNG, DEV_UART, TAG_CONFIG, TAG_SNAPSHOT};
use machine::virtio::{ConsoleBackend, EntropyBackend};
use machine::{Backends, Firmware, Machine, MachineConfig, PowerEvent, SerialBackend, Stop};
use replay::{Entry, Event, LogReader, ReadError};
use std::collections::VecDeque;
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Options of `ftvm replay`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The log written by `ftvm run --record`.
    #[arg(value_name = "LOG")]
    pub log: PathBuf,
    /// Print each entry to stderr as it is applied.
    #[arg(long)]
    pub verbose: bool,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// the log file cannot be opened
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// the log's bytes are bad
    #[error("bad log: {0}")]
    Read(#[from] ReadError),
    /// the log is well-formed but not one `ftvm run --record` wrote
    #[error("bad log: {0}")]
    Content(String),
    /// the initial snapshot cannot be restored
    #[error("cannot restore the log's initial snapshot: {0}")]
    Restore(#[from] machine::snapshot::SnapshotError),
    /// the replayed machine does not do what the log says
    #[error("diverged at icount {icount}: {what}")]
    Diverged {
        /// Where.
        icount: u64,
        /// What differs.
        what: String,
    },
}

/// Runs the command; returns the process exit code.
pub fn main(a: Args) -> i32 {
    let r = replay(&a);
    let _ = std::io::stdout().flush();
    match r {
        Ok(summary) => {
            if a.verbose {
                eprintln!("ftvm replay: {summary}");
            }
            0
        }
        Err(e) => {
            eprintln!("ftvm replay: {e}");
            2
        }
    }
}

/// The guest's console output, straight to stdout.
struct Stdout;

impl SerialBackend for Stdout {
    fn transmit(&mut self, bytes: &[u8]) {
        let _ = std::io::stdout().lock().write_all(bytes);
    }
}

impl ConsoleBackend for Stdout {
    fn read_input(&mut self, _: &mut [u8]) -> usize {
        0
    }
    fn write_output(&mut self, data: &[u8]) {
        self.transmit(data);
    }
}

/// Logged entropy waiting for the guest to take it, and the first mismatch.
#[derive(Default)]
struct EntropyQueue {
    queue: VecDeque<(u64, Vec<u8>)>,
    error: Option<(u64, String)>,
}

/// The entropy backend of a replay: hands out the logged bytes, checking the icount and size.
struct ReplayEntropy {
    shared: Arc<Mutex<EntropyQueue>>,
    tap: Arc<AtomicU64>,
}

impl EntropyBackend for ReplayEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let now = self.tap.load(Ordering::Relaxed);
        let mut q = self
            .shared
            .lock()
            .map_err(|_| std::io::Error::other("entropy queue poisoned"))?;
        let why = match q.queue.pop_front() {
            Some((at, data)) if at == now && data.len() == buf.len() => {
                buf.copy_from_slice(&data);
                return Ok(());
            }
            Some((at, data)) => format!(
                "the guest took {} entropy bytes; the log has {} at icount {at}",
                buf.len(),
                data.len()
            ),
            None => format!(
                "the guest took {} entropy bytes the log does not have",
                buf.len()
            ),
        };
        q.error.get_or_insert((now, why.clone()));
        Err(std::io::Error::other(why))
    }
}

struct Replayer {
    m: Machine,
    entropy: Arc<Mutex<EntropyQueue>>,
    /// The power request the replayed guest made, if any (the machine is not run after it).
    power: Option<PowerEvent>,
    /// Whether the last run call stopped because every hart waits (the recorder then skipped).
    idle: bool,
}

fn diverged(icount: u64, what: impl Into<String>) -> ReplayError {
    ReplayError::Diverged {
        icount,
        what: what.into(),
    }
}

impl Replayer {
    /// Runs the machine to exactly `to`.
    fn advance(&mut self, to: u64) -> Result<(), ReplayError> {
        let now = self.m.icount();
        if to < now {
            return Err(diverged(now, format!("the log's next event is at {to}")));
        }
        // The same run calls as the recorder's loop made: each from where the machine stands
        // to one slice further, until the entry's icount, an idle stop or a power request.
        while self.power.is_none() && self.m.icount() < to {
            self.stop(self.m.icount().saturating_add(crate::run::SLICE));
            if self.idle {
                break;
            }
        }
        self.check_entropy()?;
        let now = self.m.icount();
        if now != to {
            let why = match self.power {
                Some(p) => format!("the guest stopped ({p:?}); the log goes on to icount {to}"),
                None => format!("the guest went idle; the log's next event is at icount {to}"),
            };
            return Err(diverged(now, why));
        }
        Ok(())
    }

    /// One run call to `limit`, noting why it stopped.
    fn stop(&mut self, limit: u64) {
        let stop = self.m.run(limit);
        self.idle = matches!(stop, Stop::Idle { .. });
        if let Stop::Power(p) = stop {
            self.power = Some(p);
        }
    }

    fn check_entropy(&self) -> Result<(), ReplayError> {
        let now = self.m.icount();
        let q = self
            .entropy
            .lock()
            .map_err(|_| diverged(now, "entropy queue poisoned"))?;
        if let Some((at, why)) = &q.error {
            return Err(diverged(*at, why.clone()));
        }
        if let Some((at, _)) = q.queue.front() {
            if *at < now {
                return Err(diverged(*at, "the guest did not take the logged entropy"));
            }
        }
        Ok(())
    }

    /// Applies one entry; `Ok(true)` at the end of the log.
    fn apply(&mut self, e: Entry) -> Result<bool, ReplayError> {
        match e.event {
            Event::DeviceCompletion {
                device: DEV_UART,
                data,
                ..
            } => {
                self.advance(e.icount)?;
                self.m.console_input(&data);
            }
            Event::DeviceCompletion {
                device: DEV_RNG,
                data,
                ..
            } => {
                // The device takes it inside a run slice: queue it for the slice that gets
                // there (later entries' runs check that it was taken at this icount).
                if let Ok(mut q) = self.entropy.lock() {
                    q.queue.push_back((e.icount, data));
                }
            }
            Event::IdleSkip { until, .. } => {
                self.advance(e.icount)?;
                self.m.skip_to(until);
            }
            Event::StateDigest(parts) => {
                self.advance(e.icount)?;
                let mine = digest_parts(&self.m);
                for p in &parts {
                    let ok = mine.iter().any(|q| q.id == p.id && q.digest == p.digest);
                    if !ok {
                        let name = match p.id {
                            replay::part::CPU => "cpu".to_string(),
                            replay::part::RAM => "ram".to_string(),
                            replay::part::DEVICES => "devices".to_string(),
                            n => format!("#{n}"),
                        };
                        return Err(diverged(e.icount, format!("part {name} differs")));
                    }
                }
            }
            Event::PowerOff => {
                self.advance(e.icount)?;
                if self.power != Some(PowerEvent::PowerOff) {
                    return Err(diverged(
                        e.icount,
                        "the log says the guest powered off here; the replayed guest did not",
                    ));
                }
            }
            Event::EndOfLog => {
                self.advance(e.icount)?;
                if let Ok(q) = self.entropy.lock() {
                    if let Some((at, _)) = q.queue.front() {
                        return Err(diverged(*at, "the guest did not take the logged entropy"));
                    }
                }
                return Ok(true);
            }
            other => {
                return Err(ReplayError::Content(format!(
                    "unexpected {} entry at icount {}",
                    other.name(),
                    e.icount
                )))
            }
        }
        Ok(false)
    }
}

fn next<R: std::io::Read>(r: &mut LogReader<R>) -> Result<Entry, ReplayError> {
    match r.next_entry()? {
        Some(e) => Ok(e),
        None => Err(ReplayError::Content(format!(
            "the log is truncated: it stops after {} entries, without an end marker",
            LogReader::position(r).entries
        ))),
    }
}

fn replay(a: &Args) -> Result<String, ReplayError> {
    let file = std::fs::File::open(&a.log).map_err(|source| ReplayError::Open {
        path: a.log.display().to_string(),
        source,
    })?;
    let mut r = LogReader::new(BufReader::new(file))?;
    let fingerprint = r.header().config_fingerprint;

    let first = next(&mut r)?;
    let lc = match &first.event {
        Event::ConfigChange(b) if b.first() == Some(&TAG_CONFIG) => LoggedConfig::decode(b),
        _ => None,
    }
    .ok_or_else(|| {
        ReplayError::Content("the first entry is not the machine configuration".into())
    })?;
    if lc.fingerprint() != fingerprint {
        return Err(ReplayError::Content(
            "the configuration does not match the header's fingerprint".into(),
        ));
    }
    let mut snap = Vec::new();
    loop {
        let e = next(&mut r)?;
        let Event::ConfigChange(b) = &e.event else {
            return Err(ReplayError::Content(
                "the initial snapshot is missing".into(),
            ));
        };
        let total = match b.get(..9) {
            Some([TAG_SNAPSHOT, t @ ..]) => u64::from_le_bytes(t.try_into().unwrap_or([0xff; 8])),
            _ => {
                return Err(ReplayError::Content(
                    "the initial snapshot is missing".into(),
                ))
            }
        };
        snap.extend_from_slice(&b[9..]);
        if snap.len() as u64 >= total {
            if snap.len() as u64 != total {
                return Err(ReplayError::Content(
                    "the initial snapshot is malformed".into(),
                ));
            }
            break;
        }
    }

    // Building the machine to restore into needs something to boot; everything it loads is
    // overwritten by the snapshot (RAM) and by the logged boot information (the ROM).
    let stub = std::env::temp_dir().join(format!("ftvm-replay-stub-{}.bin", std::process::id()));
    std::fs::write(&stub, 0x1050_0073u32.to_le_bytes()).map_err(|source| ReplayError::Open {
        path: stub.display().to_string(),
        source,
    })?;
    let cfg = MachineConfig {
        mem_size: lc.mem_size,
        harts: usize::try_from(lc.harts).unwrap_or(usize::MAX),
        bios: Firmware::File(stub.clone()),
        kernel: None,
        initrd: None,
        append: String::new(),
        drives: Vec::new(),
    };
    let tap = Arc::new(AtomicU64::new(0));
    let entropy = Arc::new(Mutex::new(EntropyQueue::default()));
    let backends = Backends {
        serial: Box::new(Stdout),
        console: Box::new(Stdout),
        entropy: Box::new(ReplayEntropy {
            shared: Arc::clone(&entropy),
            tap: Arc::clone(&tap),
        }),
    };
    let restored = Machine::restore(&cfg, backends, &snap);
    let _ = std::fs::remove_file(&stub);
    let mut m = restored?;
    drop(snap);
    m.set_boot_info(&lc.boot);
    m.set_clock_tap(tap);
    let mut rp = Replayer {
        m,
        entropy,
        power: None,
        idle: false,
    };
    let mut entries = 0u64;
    loop {
        let e = next(&mut r)?;
        entries += 1;
        if a.verbose {
            eprintln!("ftvm replay: icount {} {}", e.icount, e.event.name());
        }
        if rp.apply(e)? {
            break;
        }
    }
    if r.next_entry()?.is_some() {
        return Err(ReplayError::Content("entries after the end marker".into()));
    }
    Ok(format!(
        "replayed {entries} entries to icount {} ({})",
        rp.m.icount(),
        match rp.power {
            Some(p) => format!("{p:?}"),
            None => "guest still running".into(),
        }
    ))
}
