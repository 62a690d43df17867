//! The replayer: rebuilds a machine from a log's prologue (its shape and initial snapshot) and
//! re-executes the run, feeding every logged input at its icount and checking every digest.
//! `ftvm replay` reads the log from a file; the FT backup reads it from the logging channel and,
//! when the primary is gone, [goes live](Replayer::go_live).
//!
//! For each entry the machine is run exactly to the entry's icount and the entry applied:
//! console bytes, an idle skip, a time-sync adjustment (`Machine::adjust_time`), entropy and
//! disk reads (queued just before, taken by the device at that icount: see [`crate::disk`]), a
//! state digest compared with the replayed machine's. The replayer needs no disk image: the
//! disks' shapes come from the log, their reads from its entries, and writes are discarded
//! until it goes live with the host's disks ([`Replayer::set_live_disks`]). Received frames are handed to the network card at their
//! logged icounts and transmitted ones discarded, until it goes live on a real network
//! ([`Replayer::set_live_net`]; see [`crate::net`]). The replayer makes the same
//! run calls as the recorder ([`crate::SLICE`] at a time), because finding every hart idle
//! touches hart state. At the first mismatch it stops with [`ReplayError::Diverged`].

use crate::disk::{DiskQueue, LocalDisk, LoggedRead, ReplayDisk};
use crate::logged::{digest_parts, LoggedConfig, DEV_UART, TAG_CONFIG, TAG_SNAPSHOT};
use crate::net::{NetQueue, ReplayNet};
use crate::outbox::Outbox;
use machine::virtio::{BlockBackend, EntropyBackend, NetBackend, NullNet, OsEntropy};
use machine::{Backends, DriveConfig, Firmware, Machine, MachineConfig, PowerEvent, Stop};
use replay::{Entry, Event, LogHeader, ReadError};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    /// the log is well-formed but not one a recorder wrote
    #[error("bad log: {0}")]
    Content(BadLog),
    /// the initial snapshot cannot be restored
    #[error("cannot restore the log's initial snapshot: {0}")]
    Restore(#[from] machine::snapshot::SnapshotError),
    /// the host's disks given for going live do not fit the replayed machine
    #[error("cannot go live with these disks: {0}")]
    LiveDisks(LiveDiskError),
    /// the log's disk reads are logged by digest and the disk's image was not given
    #[error(
        "the log reads disk {drive} itself (recorded with --disk-reads own: its disk reads \
         are logged by digest, without their data): replaying it needs that disk's image as \
         it was when the recording began (ftvm replay --drive file=IMAGE)"
    )]
    NeedsDiskImage {
        /// Which disk.
        drive: usize,
    },
    /// the replayed machine does not do what the log says
    #[error("diverged at icount {icount}: {what}")]
    Diverged {
        /// Where.
        icount: u64,
        /// What differs.
        what: String,
    },
}

/// How a well-formed log can still not be one a recorder wrote ([`ReplayError::Content`]).
#[derive(Debug, thiserror::Error)]
pub enum BadLog {
    /// the log does not open with the machine's configuration
    #[error("the first entry is not the machine configuration")]
    NoConfig,
    /// the configuration is not the one the header names
    #[error("the configuration does not match the header's fingerprint")]
    Fingerprint,
    /// no initial snapshot after the configuration
    #[error("the initial snapshot is missing")]
    NoSnapshot,
    /// the initial snapshot's chunks do not add up
    #[error("the initial snapshot is malformed")]
    BadSnapshot,
    /// the log ends before its initial snapshot is complete
    #[error("the log ends inside its initial snapshot")]
    EndsInSnapshot,
    /// the log starts from a live copy's closing delta
    #[error(
        "the log starts from the closing delta of a live copy, not a full snapshot: only the \
         backup that received the copied RAM can replay it"
    )]
    StartsFromDelta,
    /// the logged network card cannot be put in the replayed machine
    #[error("{0}")]
    NetCard(machine::MachineError),
    /// a time-sync entry moves guest time back
    #[error(
        "time-sync entry at icount {icount} moves guest time back ({delta} ticks); time only \
         moves forward"
    )]
    TimeBackwards {
        /// Where.
        icount: u64,
        /// The logged change.
        delta: i64,
    },
    /// a time-rate entry the clock refuses
    #[error("time-rate entry at icount {icount}: {source}")]
    TimeRate {
        /// Where.
        icount: u64,
        /// The clock's refusal.
        source: machine::MachineError,
    },
    /// an entry of a kind a recorder does not write there
    #[error("unexpected {entry} entry at icount {icount}")]
    Unexpected {
        /// Its kind.
        entry: &'static str,
        /// Where.
        icount: u64,
    },
    /// going live with a network card the log's machine does not have
    #[error("the log's machine has no network card to go live with")]
    NoNetCard,
    /// the log stops without an end marker
    #[error("the log is truncated: it stops after {entries} entries, without an end marker")]
    Truncated {
        /// Entries read.
        entries: u64,
    },
    /// entries follow the end marker
    #[error("entries after the end marker")]
    AfterEnd,
}

/// Why the host's disks cannot take over from the replayed ones ([`ReplayError::LiveDisks`]).
#[derive(Debug, thiserror::Error)]
pub enum LiveDiskError {
    /// not as many disks as the log has
    #[error("{given} disks given, the log has {logged}")]
    Count {
        /// Disks given.
        given: usize,
        /// Disks in the log.
        logged: usize,
    },
    /// a disk's size differs from the logged one's
    #[error("disk {drive} has {given} bytes, the logged one {logged}")]
    Size {
        /// Which disk.
        drive: usize,
        /// Its size.
        given: u64,
        /// The logged disk's size.
        logged: u64,
    },
    /// an unconfirmed write could not be issued again on the host's disk
    #[error("re-issuing a write at offset {offset}: {source}")]
    Reissue {
        /// Where it writes.
        offset: u64,
        /// The host's error.
        source: std::io::Error,
    },
}

fn diverged(icount: u64, what: impl Into<String>) -> ReplayError {
    ReplayError::Diverged {
        icount,
        what: what.into(),
    }
}

fn not_received(len: usize) -> String {
    format!("net receive: the guest did not take the logged frame of {len} bytes")
}

fn content(why: BadLog) -> ReplayError {
    ReplayError::Content(why)
}

/// The beginning of a log, gathered entry by entry: the configuration, then the snapshot's
/// chunks.
#[derive(Debug)]
pub struct Prologue {
    fingerprint: u64,
    config: Option<LoggedConfig>,
    snapshot: Vec<u8>,
    done: bool,
}

impl Prologue {
    /// Starts gathering the prologue of a log with `header`.
    pub fn new(header: &LogHeader) -> Prologue {
        Prologue {
            fingerprint: header.config_fingerprint,
            config: None,
            snapshot: Vec::new(),
            done: false,
        }
    }

    /// Takes the log's next entry; `Ok(true)` once the prologue is complete (the next entry is
    /// the run's first input).
    pub fn feed(&mut self, e: &Entry) -> Result<bool, ReplayError> {
        let Event::ConfigChange(b) = &e.event else {
            return Err(content(match self.config {
                None => BadLog::NoConfig,
                Some(_) => BadLog::NoSnapshot,
            }));
        };
        let Some(lc) = &self.config else {
            let lc = LoggedConfig::decode(b)
                .filter(|_| b.first() == Some(&TAG_CONFIG))
                .ok_or(ReplayError::Content(BadLog::NoConfig))?;
            if lc.fingerprint() != self.fingerprint {
                return Err(content(BadLog::Fingerprint));
            }
            self.config = Some(lc);
            return Ok(false);
        };
        let total = match b.get(..9) {
            Some([TAG_SNAPSHOT, t @ ..]) => u64::from_le_bytes(t.try_into().unwrap_or([0xff; 8])),
            _ => return Err(content(BadLog::NoSnapshot)),
        };
        // A snapshot is at most the RAM plus a little: refuse a claimed size far beyond it
        // before collecting that much.
        if total > lc.mem_size.saturating_mul(2).saturating_add(64 << 20) {
            return Err(content(BadLog::BadSnapshot));
        }
        self.snapshot.extend_from_slice(&b[9..]);
        let have = self.snapshot.len() as u64;
        if have > total {
            return Err(content(BadLog::BadSnapshot));
        }
        self.done = have == total;
        Ok(self.done)
    }

    /// The logged machine shape, once known.
    pub fn config(&self) -> Option<&LoggedConfig> {
        self.config.as_ref()
    }

    /// Builds the machine from the complete prologue; console output goes to `out`.
    pub fn into_replayer(self, out: Outbox) -> Result<Replayer, ReplayError> {
        self.build(out, None)
    }

    /// [`Prologue::into_replayer`] for a log that starts at the end of a live copy
    /// ([`crate::Recorder::start_after_live_copy`]): `ram` is the RAM the copy's rounds
    /// delivered for chain `id`, the log's initial state the delta that completes it.
    pub fn into_replayer_onto(
        self,
        out: Outbox,
        id: u64,
        ram: &[u8],
    ) -> Result<Replayer, ReplayError> {
        self.build(out, Some((id, ram)))
    }

    fn build(self, out: Outbox, onto: Option<(u64, &[u8])>) -> Result<Replayer, ReplayError> {
        let (Some(lc), true) = (self.config, self.done) else {
            return Err(content(BadLog::EndsInSnapshot));
        };
        let is_delta = self.snapshot.starts_with(machine::snapshot::DELTA_MAGIC);
        if is_delta && onto.is_none() {
            return Err(content(BadLog::StartsFromDelta));
        }
        // Building the machine to restore into needs something to boot; everything it loads is
        // overwritten by the snapshot (RAM) and by the logged boot information (the ROM).
        let stub = std::env::temp_dir().join(format!(
            "ftvm-replay-stub-{}-{:x}.bin",
            std::process::id(),
            self.fingerprint
        ));
        std::fs::write(&stub, 0x1050_0073u32.to_le_bytes()).map_err(|source| {
            ReplayError::Open {
                path: stub.display().to_string(),
                source,
            }
        })?;
        let cfg = MachineConfig {
            mem_size: lc.mem_size,
            harts: usize::try_from(lc.harts).unwrap_or(usize::MAX),
            bios: Firmware::File(stub.clone()),
            kernel: None,
            initrd: None,
            append: String::new(),
            drives: lc
                .drives
                .iter()
                .map(|d| DriveConfig {
                    path: "(replayed from the log)".into(),
                    readonly: d.readonly,
                    nbd: None,
                    delay: std::time::Duration::ZERO,
                })
                .collect(),
            net: lc.net,
        };
        let tap = Arc::new(AtomicU64::new(0));
        let disks: Vec<_> = lc
            .drives
            .iter()
            .map(|_| Arc::new(Mutex::new(DiskQueue::default())))
            .collect();
        let backends_of_disks = lc
            .drives
            .iter()
            .zip(&disks)
            .enumerate()
            .map(|(i, (d, q))| {
                Box::new(ReplayDisk::new(
                    i,
                    d.capacity,
                    Arc::clone(q),
                    Arc::clone(&tap),
                )) as Box<dyn BlockBackend>
            })
            .collect();
        let entropy = Arc::new(Mutex::new(EntropyQueue::default()));
        let backends = Backends {
            serial: Box::new(out.clone()),
            console: Box::new(out.clone()),
            entropy: Box::new(ReplayEntropy {
                shared: Arc::clone(&entropy),
                tap: Arc::clone(&tap),
            }),
        };
        let restored = match onto {
            Some((id, ram)) if is_delta => Machine::with_disks(&cfg, backends, backends_of_disks)
                .map_err(machine::snapshot::SnapshotError::from)
                .and_then(|mut m| {
                    m.adopt_live_copy(id, ram)?;
                    m.apply_delta(&self.snapshot)?;
                    Ok(m)
                }),
            _ => Machine::restore_with_disks(&cfg, backends, backends_of_disks, &self.snapshot),
        };
        let _ = std::fs::remove_file(&stub);
        let mut m = restored?;
        m.set_boot_info(&lc.boot);
        let net = Arc::new(Mutex::new(NetQueue::default()));
        if lc.net.is_some() {
            let replayed = ReplayNet::new(Arc::clone(&net), Arc::clone(&tap));
            m.replace_net(Box::new(replayed))
                .map_err(|e| content(BadLog::NetCard(e)))?;
        }
        m.set_clock_tap(tap);
        m.set_deferred_io(true);
        Ok(Replayer {
            m,
            entropy,
            rng: lc.rng_device(),
            disks,
            live_disks: Vec::new(),
            net,
            net_device: lc.net_device(),
            live_net: None,
            power: None,
            idle: false,
            out,
            config: lc,
        })
    }
}

/// Logged entropy waiting for the guest to take it, the first mismatch, and the live source
/// once the replayer has gone live.
#[derive(Default)]
struct EntropyQueue {
    queue: VecDeque<(u64, Vec<u8>)>,
    error: Option<(u64, String)>,
    live: Option<OsEntropy>,
}

/// The entropy backend of a replay: hands out the logged bytes, checking the icount and size;
/// after going live, the host's entropy.
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
        if let Some(live) = &mut q.live {
            return live.fill(buf);
        }
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

/// A machine being replayed from a log.
pub struct Replayer {
    m: Machine,
    entropy: Arc<Mutex<EntropyQueue>>,
    /// The rng device's number in the log.
    rng: u32,
    /// Each disk's logged reads.
    disks: Vec<Arc<Mutex<DiskQueue>>>,
    /// The host's disks to switch to when going live.
    live_disks: Vec<Box<dyn BlockBackend>>,
    /// The network card's logged frames.
    net: Arc<Mutex<NetQueue>>,
    /// The network card's number in the log, if there is one.
    net_device: Option<u32>,
    /// The host's network to switch to when going live.
    live_net: Option<Box<dyn NetBackend>>,
    /// The power request the replayed guest made, if any (the machine is not run after it).
    power: Option<PowerEvent>,
    /// Whether the last run call stopped because every hart waits (the recorder then skipped).
    idle: bool,
    out: Outbox,
    config: LoggedConfig,
}

impl Replayer {
    /// The machine being replayed.
    pub fn machine(&self) -> &Machine {
        &self.m
    }

    /// The machine-wide icount reached.
    pub fn icount(&self) -> u64 {
        self.m.icount()
    }

    /// The guest's power request, once it made one.
    pub fn power(&self) -> Option<PowerEvent> {
        self.power
    }

    /// The logged machine shape.
    pub fn config(&self) -> &LoggedConfig {
        &self.config
    }

    /// Where console output goes.
    pub fn outbox(&self) -> &Outbox {
        &self.out
    }

    /// Runs on without an entry, as far as `horizon`: the icount the recorder has reached
    /// with every entry before it already given (the logging channel says so). Stops early
    /// when the guest goes idle (the recorder then logged a skip) or asks for a power change.
    pub fn run_to(&mut self, horizon: u64) -> Result<(), ReplayError> {
        while !self.idle && self.power.is_none() && self.m.icount() < horizon {
            self.stop(self.m.icount().saturating_add(crate::SLICE));
        }
        self.check_inputs()
    }

    /// Runs the machine to exactly `to`.
    fn advance(&mut self, to: u64) -> Result<(), ReplayError> {
        let now = self.m.icount();
        if to < now {
            return Err(diverged(now, format!("the log's next event is at {to}")));
        }
        // The same run calls as the recorder's loop made: each from where the machine stands
        // to one slice further, until the entry's icount, an idle stop or a power request.
        while self.power.is_none() && self.m.icount() < to {
            self.stop(self.m.icount().saturating_add(crate::SLICE));
            if self.idle {
                break;
            }
        }
        self.check_inputs()?;
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

    /// The first mismatch of a device input, or a logged input the guest did not take in time.
    fn check_inputs(&self) -> Result<(), ReplayError> {
        self.check_entropy()?;
        self.check_net()?;
        let now = self.m.icount();
        for (drive, q) in self.disks.iter().enumerate() {
            let q = q.lock().map_err(|_| diverged(now, "disk queue poisoned"))?;
            if let Some((at, why)) = &q.error {
                return Err(diverged(*at, why.clone()));
            }
            if let Some((at, off, _)) = q.queue.front() {
                if *at < now {
                    return Err(diverged(
                        *at,
                        format!("disk read: the guest did not read disk {drive} at offset {off}"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_net(&self) -> Result<(), ReplayError> {
        let now = self.m.icount();
        let q = self
            .net
            .lock()
            .map_err(|_| diverged(now, "network queue poisoned"))?;
        if let Some((at, why)) = &q.error {
            return Err(diverged(*at, why.clone()));
        }
        match q.queue.front() {
            Some((at, f)) if *at < now => Err(diverged(*at, not_received(f.len()))),
            _ => Ok(()),
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
    pub fn apply(&mut self, e: Entry) -> Result<bool, ReplayError> {
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
                device,
                request,
                data,
            } if self.config.drive_of(device).is_some() => {
                // Taken inside a run slice, as entropy is.
                let drive = self.config.drive_of(device).unwrap_or(0);
                if let Ok(mut q) = self.disks[drive].lock() {
                    q.queue
                        .push_back((e.icount, request, LoggedRead::Data(data)));
                }
            }
            Event::DiskRead {
                device,
                offset,
                len,
                digest,
            } if self.config.drive_of(device).is_some() => {
                // Read from this host's view of the disk inside a run slice, where the
                // logged one was.
                let drive = self.config.drive_of(device).unwrap_or(0);
                let mut q = self.disks[drive]
                    .lock()
                    .map_err(|_| diverged(e.icount, "disk queue poisoned"))?;
                if q.local.is_none() && q.image.is_none() {
                    return Err(ReplayError::NeedsDiskImage { drive });
                }
                q.queue
                    .push_back((e.icount, offset, LoggedRead::Digest { len, digest }));
            }
            Event::DeviceCompletion { device, data, .. } if Some(device) == self.net_device => {
                // Taken inside a run slice, when the guest has a receive buffer posted.
                if let Ok(mut q) = self.net.lock() {
                    q.queue.push_back((e.icount, data));
                }
            }
            Event::DeviceCompletion { device, data, .. } if device == self.rng => {
                // The device takes it inside a run slice: queue it for the slice that gets
                // there (later entries' runs check that it was taken at this icount).
                if let Ok(mut q) = self.entropy.lock() {
                    q.queue.push_back((e.icount, data));
                }
            }
            Event::IdleSkip { until, .. } => {
                self.advance(e.icount)?;
                self.m.skip_to(until);
                self.idle = false;
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
            Event::TimeSync { delta } => {
                // Taken between two run calls on the recorder, as the idle skip is.
                self.advance(e.icount)?;
                let Ok(ticks) = u64::try_from(delta) else {
                    return Err(content(BadLog::TimeBackwards {
                        icount: e.icount,
                        delta,
                    }));
                };
                self.m.adjust_time(ticks);
            }
            Event::TimeRate { rate } => {
                // Changed between two run calls on the recorder, with the time sync.
                self.advance(e.icount)?;
                self.m.set_time_rate(rate).map_err(|source| {
                    content(BadLog::TimeRate {
                        icount: e.icount,
                        source,
                    })
                })?;
            }
            Event::RequestDone { device, request } => {
                // Completed between two run calls on the recorder, where its host I/O was
                // ready; its data entries came just before.
                self.advance(e.icount)?;
                self.m
                    .complete_request(device, request)
                    .map_err(|err| diverged(e.icount, format!("request done: {err}")))?;
                self.check_inputs()?;
            }
            Event::Pause | Event::Resume => {
                // An operator's pause: the guest stopped between two slices on the recorder,
                // and the clock with it, so the replay only has to get there.
                self.advance(e.icount)?;
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
                if let Some((at, f)) = self.net.lock().ok().and_then(|q| q.queue.front().cloned()) {
                    return Err(diverged(at, not_received(f.len())));
                }
                for (drive, q) in self.disks.iter().enumerate() {
                    if let Some((at, off, _)) = q.lock().ok().and_then(|q| q.queue.front().cloned())
                    {
                        return Err(diverged(
                            at,
                            format!(
                                "disk read: the guest did not read disk {drive} at offset {off}"
                            ),
                        ));
                    }
                }
                return Ok(true);
            }
            other => {
                return Err(content(BadLog::Unexpected {
                    entry: other.name(),
                    icount: e.icount,
                }))
            }
        }
        Ok(false)
    }

    /// Gives the host's disks that [`Replayer::go_live`] switches to, one per logged drive
    /// in `--drive` order (e.g. `hostblk::open_disks` on the shared disk images).
    /// Each must have as many sectors as the logged drive. Without them, a machine with disks
    /// goes live on disks that fail every read (the guest sees I/O errors).
    pub fn set_live_disks(&mut self, disks: Vec<Box<dyn BlockBackend>>) -> Result<(), ReplayError> {
        self.check_disks(&disks)?;
        self.live_disks = disks;
        Ok(())
    }

    /// Checks that `disks` match the logged drives in number and size.
    fn check_disks(&self, disks: &[Box<dyn BlockBackend>]) -> Result<(), ReplayError> {
        if disks.len() != self.config.drives.len() {
            return Err(ReplayError::LiveDisks(LiveDiskError::Count {
                given: disks.len(),
                logged: self.config.drives.len(),
            }));
        }
        let sectors = |n: u64| n / machine::virtio::block::SECTOR_SIZE;
        for (i, (d, shape)) in disks.iter().zip(&self.config.drives).enumerate() {
            if sectors(d.len()) != sectors(shape.capacity) {
                return Err(ReplayError::LiveDisks(LiveDiskError::Size {
                    drive: i,
                    given: d.len(),
                    logged: shape.capacity,
                }));
            }
        }
        Ok(())
    }

    /// A shared disk's images (one per logged drive, in `--drive` order) to read from where
    /// the log has a read's digest instead of its data (recorded with `--disk-reads own`):
    /// each read sees the image overlaid with the kept replayed writes
    /// ([`Replayer::keep_disk_writes`]) not confirmed on it. The images are never written.
    pub fn set_read_disks(&mut self, disks: Vec<Box<dyn BlockBackend>>) -> Result<(), ReplayError> {
        self.check_disks(&disks)?;
        for (q, d) in self.disks.iter().zip(disks) {
            if let Ok(mut q) = q.lock() {
                q.image = Some(LocalDisk(d));
            }
        }
        Ok(())
    }

    /// Gives the host's network that [`Replayer::go_live`] switches the network card to (e.g.
    /// a `hostnet` stream or tap backend). Without it, a machine with a network card goes live unplugged: frames
    /// sent are dropped, none arrive. The log must have a network card.
    pub fn set_live_net(&mut self, net: Box<dyn NetBackend>) -> Result<(), ReplayError> {
        if self.net_device.is_none() {
            return Err(content(BadLog::NoNetCard));
        }
        self.live_net = Some(net);
        Ok(())
    }

    /// Puts a snapshot (`Machine::snapshot` of a machine replaying this same log) into the
    /// replayed machine, as if the replay had got there; the caller then applies the log's
    /// entries after the snapshot's icount. The replay state is reset: nothing queued, not
    /// idle, no power request. A snapshot is a safe point when [`Replayer::at_rest`] holds.
    pub fn restore_snapshot(&mut self, bytes: &[u8]) -> Result<(), ReplayError> {
        self.m.load_snapshot(bytes)?;
        if let Ok(mut q) = self.entropy.lock() {
            *q = EntropyQueue::default();
        }
        if let Ok(mut q) = self.net.lock() {
            *q = NetQueue::default();
        }
        for q in &self.disks {
            if let Ok(mut q) = q.lock() {
                // The disks this host gave (images, kept-writes mode) stay.
                q.queue.clear();
                q.error = None;
                q.writes.clear();
                q.write_bytes = 0;
            }
        }
        self.idle = false;
        self.power = None;
        Ok(())
    }

    /// Whether the replay holds nothing but the machine: no logged input waiting for the
    /// device that takes it, not idle, no power request. A snapshot taken now and restored
    /// with [`Replayer::restore_snapshot`] continues the replay exactly, given the entries
    /// after the machine's icount (when the next entry lies beyond it).
    pub fn at_rest(&self) -> bool {
        let entropy = self.entropy.lock().is_ok_and(|q| q.queue.is_empty());
        let disks = self
            .disks
            .iter()
            .all(|q| q.lock().is_ok_and(|q| q.queue.is_empty()));
        let net = self.net.lock().is_ok_and(|q| q.queue.is_empty());
        entropy && disks && net && !self.idle && self.power.is_none()
    }

    /// Keeps every replayed disk write (and flush) until [`Replayer::confirm_disk_writes`]
    /// drops it, for [`Replayer::reissue_disk_writes`] at go-live: what an FT backup on a
    /// shared disk needs. Off by default (a plain replay keeps nothing).
    pub fn keep_disk_writes(&mut self) {
        for q in &self.disks {
            if let Ok(mut q) = q.lock() {
                q.keep = true;
            }
        }
    }

    /// The primary reports that every disk write made before icount `upto` is on the shared
    /// disk: those need not be re-issued at go-live.
    pub fn confirm_disk_writes(&mut self, upto: u64) {
        for q in &self.disks {
            if let Ok(mut q) = q.lock() {
                q.confirm(upto);
            }
        }
    }

    /// Re-issues, on the disks given with [`Replayer::set_live_disks`], every replayed write
    /// (and flush) not confirmed on the disk, in order: the writes the old primary may not
    /// have made yet (in flight, held by the output rule). Disk writes are idempotent, so this
    /// is always safe. Returns (writes, bytes) re-issued.
    pub fn reissue_disk_writes(&mut self) -> Result<(usize, usize), ReplayError> {
        let (mut n, mut bytes) = (0, 0);
        for (d, q) in self.live_disks.iter_mut().zip(&self.disks) {
            let writes = q.lock().map(|mut q| {
                q.write_bytes = 0;
                std::mem::take(&mut q.writes)
            });
            for (_, offset, data) in writes.unwrap_or_default() {
                let r = match &data {
                    Some(data) => d.write_at(offset, data),
                    None => d.flush(),
                };
                r.map_err(|source| {
                    ReplayError::LiveDisks(LiveDiskError::Reissue { offset, source })
                })?;
                n += 1;
                bytes += data.map_or(0, |d| d.len());
            }
        }
        Ok((n, bytes))
    }

    /// Non-shared disks: this host's own images (equal to the recorder's when the replay
    /// started), one per logged drive, to which every replayed write is applied as it is
    /// replayed. Reads still come from the log (and a write the image fails is a divergence).
    pub fn set_local_disks(
        &mut self,
        disks: Vec<Box<dyn BlockBackend>>,
    ) -> Result<(), ReplayError> {
        self.check_disks(&disks)?;
        for (q, d) in self.disks.iter().zip(disks) {
            if let Ok(mut q) = q.lock() {
                q.local = Some(LocalDisk(d));
                q.writes.clear();
                q.write_bytes = 0;
            }
        }
        Ok(())
    }

    /// Disk writes replayed and not confirmed on the disk: (count, bytes).
    pub fn unconfirmed_disk_writes(&self) -> (usize, usize) {
        self.disks
            .iter()
            .filter_map(|q| q.lock().ok().map(|q| (q.writes.len(), q.write_bytes)))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    /// Stops replaying: the devices switch from the log to the host (entropy from the host's
    /// source, disks to those given with [`Replayer::set_live_disks`], the network card to
    /// the one given with [`Replayer::set_live_net`]), and the machine is
    /// handed over to run live from the icount reached. Whether the last run call found every
    /// hart idle is returned too (the live loop then idles first).
    pub fn go_live(mut self) -> (Machine, bool) {
        if let Ok(mut q) = self.entropy.lock() {
            q.queue.clear();
            q.live = Some(OsEntropy::default());
        }
        let live = std::mem::take(&mut self.live_disks);
        let given = live.len();
        for (drive, d) in live.into_iter().enumerate() {
            // set_live_disks checked the sizes.
            let _ = self.m.replace_disk(drive, d);
        }
        for (drive, q) in self.disks.iter().enumerate().skip(given) {
            // No host disk: every read fails from now on (an empty queue and a note).
            if let Ok(mut q) = q.lock() {
                q.queue.clear();
                let at = self.m.icount();
                q.error = Some((at, format!("disk {drive} went live without a host disk")));
            }
        }
        if self.net_device.is_some() {
            if let Ok(mut q) = self.net.lock() {
                q.queue.clear();
            }
            let live = self
                .live_net
                .take()
                .unwrap_or_else(|| Box::new(NullNet) as Box<dyn NetBackend>);
            // The card exists: the log says so and the machine was built from the log.
            let _ = self.m.replace_net(live);
        }
        (self.m, self.idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{disk_device, read_digest, CowDisk};
    use crate::Recorder;

    /// A log of a machine with one 64 KiB disk whose one read (at its first run slice's end)
    /// is logged by digest; the disk image's path.
    fn digest_log(name: &str) -> (Vec<u8>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("rr-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fw = dir.join("fw.bin");
        std::fs::write(&fw, 0x0000_006fu32.to_le_bytes()).unwrap(); // j .
        let img = dir.join("disk.img");
        std::fs::write(&img, vec![7u8; 65536]).unwrap();
        let cfg = MachineConfig {
            mem_size: 64 << 20,
            harts: 1,
            bios: Firmware::File(fw),
            kernel: None,
            initrd: None,
            append: String::new(),
            drives: vec![DriveConfig {
                path: img.clone(),
                readonly: false,
                nbd: None,
                delay: std::time::Duration::ZERO,
            }],
            net: None,
        };
        let (mut rec, entropy) = Recorder::new(Vec::new(), &cfg).unwrap();
        rec.log_disk_reads_by_digest();
        let out = Outbox::default();
        let backends = Backends {
            serial: Box::new(out.clone()),
            console: Box::new(out),
            entropy,
        };
        let mut m = hostblk::boot(&cfg, backends).unwrap();
        rec.start(&mut m).unwrap();
        m.run(crate::SLICE);
        rec.after_slice(&m, false);
        let digest = read_digest(&[7; 512]);
        rec.event(
            &m,
            Event::DiskRead {
                device: disk_device(0),
                offset: 0,
                len: 512,
                digest,
            },
        );
        (rec.finish(&m).unwrap(), img)
    }

    fn replayer_of(log: &[u8]) -> (Replayer, replay::LogReader<&[u8]>) {
        let mut r = replay::LogReader::new(log).unwrap();
        let mut p = Prologue::new(r.header());
        while !p.feed(&r.next_entry().unwrap().unwrap()).unwrap() {}
        (p.into_replayer(Outbox::default()).unwrap(), r)
    }

    #[test]
    fn a_prologue_out_of_order_is_a_bad_log_that_says_why() {
        let (log, _) = digest_log("bad-prologue");
        let mut r = replay::LogReader::new(log.as_slice()).unwrap();
        let config = r.next_entry().unwrap().unwrap();
        let snapshot = r.next_entry().unwrap().unwrap();
        let e = Prologue::new(r.header()).feed(&snapshot).unwrap_err();
        assert!(matches!(e, ReplayError::Content(BadLog::NoConfig)), "{e}");
        assert_eq!(
            e.to_string(),
            "bad log: the first entry is not the machine configuration"
        );
        let mut p = Prologue::new(r.header());
        assert!(!p.feed(&config).unwrap());
        let e = p.feed(&config).unwrap_err();
        assert!(matches!(e, ReplayError::Content(BadLog::NoSnapshot)), "{e}");
        let mut p = Prologue::new(r.header());
        p.feed(&config).unwrap();
        let e = p.into_replayer(Outbox::default()).err().unwrap();
        assert!(
            matches!(e, ReplayError::Content(BadLog::EndsInSnapshot)),
            "{e}"
        );
    }

    #[test]
    fn live_disks_must_match_the_logged_ones_in_number_and_size() {
        let (log, img) = digest_log("live-disks");
        let (mut rp, _) = replayer_of(&log);
        let e = rp.set_live_disks(Vec::new()).unwrap_err();
        assert!(
            matches!(
                e,
                ReplayError::LiveDisks(LiveDiskError::Count {
                    given: 0,
                    logged: 1
                })
            ),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "cannot go live with these disks: 0 disks given, the log has 1"
        );
        let small = img.with_extension("small");
        std::fs::write(&small, vec![0u8; 4096]).unwrap();
        let d = hostblk::FileBackend::open(&small, true).unwrap();
        let e = rp.set_live_disks(vec![Box::new(d)]).unwrap_err();
        assert!(
            matches!(
                e,
                ReplayError::LiveDisks(LiveDiskError::Size {
                    drive: 0,
                    given: 4096,
                    logged: 65536
                })
            ),
            "{e}"
        );
        let d = hostblk::FileBackend::open(&img, true).unwrap();
        rp.set_live_disks(vec![Box::new(d)]).unwrap();
    }

    #[test]
    fn a_log_of_read_digests_needs_the_disk_image_and_says_so() {
        let (log, img) = digest_log("needs-image");
        let (mut rp, mut r) = replayer_of(&log);
        let e = loop {
            let e = r.next_entry().unwrap().unwrap();
            match rp.apply(e) {
                Ok(false) => {}
                Ok(true) => panic!("replayed without the image"),
                Err(e) => break e,
            }
        };
        assert!(matches!(e, ReplayError::NeedsDiskImage { drive: 0 }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("--disk-reads own") && msg.contains("needs that disk's image"),
            "{msg}"
        );
        // With the image the read is taken from it; this guest never reads, which the end of
        // the log then shows as a divergence (not a missing image).
        let (mut rp, mut r) = replayer_of(&log);
        let disk = hostblk::FileBackend::open(&img, true).unwrap();
        rp.set_local_disks(vec![Box::new(CowDisk::new(Box::new(disk)))])
            .unwrap();
        let e = loop {
            let e = r.next_entry().unwrap().unwrap();
            match rp.apply(e) {
                Ok(false) => {}
                Ok(true) => panic!("the guest did not take the read"),
                Err(e) => break e,
            }
        };
        assert!(
            e.to_string()
                .contains("disk read: the guest did not read disk 0 at offset 0"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(img.parent().unwrap());
    }
}
