//! The recorder: writes a run's input log (see `crates/replay` and `docs/log-format.md`) to a
//! file (`ftvm run --record LOG`) or to the logging channel (the FT primary), so that a
//! replayer can reproduce the run exactly.
//!
//! What the log holds, in order:
//!
//! 1. A control entry (`ConfigChange`, tag [`TAG_CONFIG`]) with the machine's shape (RAM size,
//!    harts) and where the boot ROM points (first stage, device tree, kernel entry); the
//!    header's config fingerprint is a hash of this entry's bytes.
//! 2. Control entries (tag [`TAG_SNAPSHOT`]) holding the initial `Machine::snapshot()`, taken
//!    right after `Machine::new`, in chunks of at most [`SNAPSHOT_CHUNK`] bytes (a log frame
//!    holds at most 16 MiB).
//! 3. One entry per input, at the machine icount where it takes effect: console bytes typed
//!    on UART0 (device [`DEV_UART`]), idle skips, entropy handed to the virtio-rng device
//!    (device: its slot, [`DEV_RNG`] without disks), the data of every disk read (device: the
//!    disk's slot, request: the byte offset; see [`crate::disk`]), every frame the network
//!    card took (device: its slot, request 0; see [`crate::net`]); a state digest every
//!    [`DIGEST_EVERY`] icount at a run-slice boundary and at the end; a time-sync entry
//!    whenever guest time lags wall-clock time by more than [`crate::timesync::BOUND`] at a
//!    slice boundary, and a time-rate entry whenever the clock's rate is changed to keep
//!    pace with it ([`Recorder::sync_time`]); a power-off entry when the guest powered off;
//!    the end marker.
//!
//! The configuration entry carries each disk's size and read-only flag and the network card's
//! MAC, so that a replayer builds the same virtio devices without the disk images or a
//! network. Disk writes go to the host's disk and transmitted frames to the host's network;
//! neither is logged.

use crate::disk::{disk_device, rng_device, Completion, DriveShape, Pending, RecordingDisk};
use crate::logged::{
    digest_parts, LoggedConfig, DEV_UART, DIGEST_EVERY, SNAPSHOT_CHUNK, TAG_SNAPSHOT,
};
use crate::net::{net_device, RecordingNet};
use crate::timesync::{SyncStep, TimeSync};
use machine::virtio::{EntropyBackend, OsEntropy};
use machine::{Machine, PowerEvent};
use replay::{Entry, Event, LogHeader, LogWriter, WriteError};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// cannot create the log file
    #[error("cannot create {path}: {source}")]
    Create {
        /// The log's path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// writing the log failed
    #[error("writing the log failed: {0}")]
    Write(#[from] WriteError),
    /// taking the initial snapshot failed
    #[error("taking the initial snapshot failed: {0}")]
    Snapshot(#[from] machine::snapshot::SnapshotError),
    /// the log was not started or is already closed
    #[error("the log was not started or is already closed")]
    Closed,
    /// the machine does not have the disks its configuration lists, so they cannot be recorded
    #[error(
        "the machine does not have the disks its configuration lists, so they cannot be recorded"
    )]
    Drive,
    /// the machine does not have the network card its configuration lists
    #[error("the machine does not have the network card its configuration lists")]
    Net,
    /// a layer put on a backend after the recording one is still there
    #[error("cannot take the recording off {0}: another layer went on over it ({1})")]
    Layered(String, String),
}

/// The host's entropy, with every fill noted at the machine icount (from the clock tap).
struct RecordingEntropy {
    inner: OsEntropy,
    device: u32,
    tap: Arc<AtomicU64>,
    pending: Pending,
}

impl EntropyBackend for RecordingEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.fill(buf)?;
        self.pending.push(Completion {
            icount: self.tap.load(Ordering::Relaxed),
            device: self.device,
            request: 0,
            data: buf.to_vec(),
        });
        Ok(())
    }
}

/// Writes the input log of a run to `W`.
pub struct Recorder<W: Write> {
    /// The output until [`Recorder::start`] writes the header.
    file: Option<W>,
    writer: Option<LogWriter<W>>,
    tap: Arc<AtomicU64>,
    pending: Pending,
    /// The read-only flag of each drive, in order.
    readonly: Vec<bool>,
    /// The network card (MAC and MTU), if there is one.
    net: Option<machine::NetConfig>,
    next_digest: u64,
    /// Disk reads are logged by their digest, not their data (`--disk-reads own`).
    read_digests: bool,
    /// The time-sync policy, from the first [`Recorder::sync_time`] on.
    timesync: Option<TimeSync>,
    /// The guest's power request that ended the run, if any.
    pub power: Option<PowerEvent>,
    /// The first error; the run stops at it.
    pub error: Option<RecordError>,
}

/// Recording wrappers left in the machine after the recorder (one not taken off with
/// [`Recorder::detach`]) keep nothing from then on.
impl<W: Write> Drop for Recorder<W> {
    fn drop(&mut self) {
        self.pending.close();
    }
}

impl Recorder<BufWriter<File>> {
    /// Creates the log file and returns the recorder and the entropy backend to build the
    /// machine with. Nothing is written until [`Recorder::start`].
    pub fn create(
        path: &Path,
        cfg: &machine::MachineConfig,
    ) -> Result<(Self, Box<dyn EntropyBackend>), RecordError> {
        let file = File::create(path).map_err(|source| RecordError::Create {
            path: path.display().to_string(),
            source,
        })?;
        Recorder::new(BufWriter::new(file), cfg)
    }
}

impl<W: Write> Recorder<W> {
    /// A recorder writing to `out`, and the entropy backend to build the machine with.
    /// Nothing is written until [`Recorder::start`], which also puts a recording wrapper
    /// around each of the machine's disks.
    pub fn new(
        out: W,
        cfg: &machine::MachineConfig,
    ) -> Result<(Self, Box<dyn EntropyBackend>), RecordError> {
        Ok(Self::with_shape(
            out,
            cfg.drives.iter().map(|d| d.readonly).collect(),
            cfg.net,
        ))
    }

    /// [`Recorder::new`] for a machine described by its drives' read-only flags and its
    /// network card: what a machine that has already run (an FT primary protected anew)
    /// tells of itself. Put the entropy backend into it with `Machine::replace_entropy`.
    pub fn with_shape(
        out: W,
        readonly: Vec<bool>,
        net: Option<machine::NetConfig>,
    ) -> (Self, Box<dyn EntropyBackend>) {
        let tap = Arc::new(AtomicU64::new(0));
        let pending = Pending::default();
        let entropy = RecordingEntropy {
            inner: OsEntropy::default(),
            device: rng_device(readonly.len()),
            tap: Arc::clone(&tap),
            pending: pending.clone(),
        };
        (
            Recorder {
                file: Some(out),
                writer: None,
                tap,
                pending,
                readonly,
                net,
                next_digest: DIGEST_EVERY,
                read_digests: false,
                timesync: None,
                power: None,
                error: None,
            },
            Box::new(entropy),
        )
    }

    /// Writes the header, the configuration and the initial snapshot of `m` (which has not
    /// run yet), connects the clock tap and wraps the disks and the network card's backend
    /// (put in with `Machine::replace_net` before this call) so that what they take is logged.
    pub fn start(&mut self, m: &mut Machine) -> Result<(), RecordError> {
        self.start_with(m, false)
    }

    /// [`Recorder::start`] at the end of a live copy ([`Machine::begin_live_copy`]): the log's
    /// initial state is the copy's closing delta ([`Machine::snapshot_live_copy_delta`]: the
    /// pages written since the copy's last round, the CPU and the devices) instead of a full snapshot, so the guest stops only for
    /// that. Only a replayer holding the copied RAM can start from such a log
    /// ([`crate::Prologue::into_replayer_onto`]).
    pub fn start_after_live_copy(&mut self, m: &mut Machine) -> Result<(), RecordError> {
        self.start_with(m, true)
    }

    fn start_with(&mut self, m: &mut Machine, delta: bool) -> Result<(), RecordError> {
        let mut drives = Vec::new();
        for (drive, &readonly) in self.readonly.iter().enumerate() {
            let Some(b) = m.disk_backend_mut(drive) else {
                return Err(RecordError::Drive);
            };
            drives.push(DriveShape {
                capacity: b.len(),
                readonly,
            });
            let inner =
                std::mem::replace(b, Box::new(machine::virtio::block::MemBackend::default()));
            *b = Box::new(RecordingDisk::new(
                inner,
                disk_device(drive),
                Arc::clone(&self.tap),
                self.pending.clone(),
            ));
        }
        if self.net.is_some() {
            let Some(b) = m.net_backend_mut() else {
                return Err(RecordError::Net);
            };
            let inner = std::mem::replace(b, Box::new(machine::virtio::NullNet));
            *b = Box::new(RecordingNet::new(
                inner,
                net_device(self.readonly.len()),
                Arc::clone(&self.tap),
                self.pending.clone(),
            ));
        }
        let lc = LoggedConfig {
            mem_size: m.ram().as_slice().len() as u64,
            harts: u32::try_from(m.harts().len()).unwrap_or(u32::MAX),
            boot: m.boot_info().clone(),
            drives,
            net: self.net,
        };
        let header = LogHeader {
            config_fingerprint: lc.fingerprint(),
            base_icount: m.icount(),
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            creator: format!("ftvm {}", env!("CARGO_PKG_VERSION")),
        };
        let file = self.file.take().ok_or(RecordError::Closed)?;
        self.writer = Some(LogWriter::new(file, &header)?);
        m.set_clock_tap(Arc::clone(&self.tap));
        // A log's disk requests complete at logged points (format version 6).
        m.set_deferred_io(true);
        let at = m.icount();
        self.append(at, Event::ConfigChange(lc.encode()))?;
        let snap = if delta {
            m.snapshot_live_copy_delta()?
        } else {
            m.snapshot()?
        };
        let total = (snap.len() as u64).to_le_bytes();
        for chunk in snap.chunks(SNAPSHOT_CHUNK) {
            let mut v = vec![TAG_SNAPSHOT];
            v.extend_from_slice(&total);
            v.extend_from_slice(chunk);
            self.append(at, Event::ConfigChange(v))?;
        }
        if let Some(w) = &mut self.writer {
            w.flush()?;
        }
        Ok(())
    }

    /// Takes the recording off `m` (an FT primary that runs on alone): the disks and the
    /// network card get back the backends [`Recorder::start`] wrapped, and the entropy source
    /// the host's own; the log is not ended. So recording again later puts on one layer, not
    /// one more. Fails, changing nothing, if another layer went on over a recording one.
    pub fn detach(&mut self, m: &mut Machine) -> Result<(), RecordError> {
        let is_ours = |d: String| d.starts_with("recording(");
        for drive in 0..self.readonly.len() {
            let d = m
                .disk_backend_mut(drive)
                .ok_or(RecordError::Drive)?
                .describe();
            if !is_ours(d.clone()) {
                return Err(RecordError::Layered(format!("disk {drive}"), d));
            }
        }
        if self.net.is_some() {
            let d = m.net_backend_mut().ok_or(RecordError::Net)?.describe();
            if !is_ours(d.clone()) {
                return Err(RecordError::Layered("the network card".into(), d));
            }
        }
        for drive in 0..self.readonly.len() {
            if let Some(slot) = m.disk_backend_mut(drive) {
                if let Some(inner) = slot.take_inner() {
                    *slot = inner;
                }
            }
        }
        if self.net.is_some() {
            if let Some(slot) = m.net_backend_mut() {
                if let Some(inner) = slot.take_inner() {
                    *slot = inner;
                }
            }
        }
        // A machine without an entropy device has nothing to give back.
        let _ = m.replace_entropy(Box::new(OsEntropy::default()));
        self.pending.close();
        Ok(())
    }

    fn append(&mut self, icount: u64, event: Event) -> Result<(), RecordError> {
        self.writer
            .as_mut()
            .ok_or(RecordError::Closed)?
            .append(&Entry { icount, event })?;
        Ok(())
    }

    /// Hands every entry appended so far to the output (a frame) and flushes it.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        self.writer.as_mut().ok_or(RecordError::Closed)?.flush()?;
        Ok(())
    }

    /// Flushes the log and returns where it stands: for a snapshot taken now, between two run
    /// slices ([`crate::SnapshotPosition`]). A replay restored from that snapshot applies the
    /// entries from this position on.
    pub fn position_now(&mut self) -> Result<replay::LogPosition, RecordError> {
        let w = self.writer.as_mut().ok_or(RecordError::Closed)?;
        w.flush()?;
        Ok(w.position())
    }

    /// Logs every successful disk read by its length and digest ([`crate::disk::read_digest`])
    /// instead of its data (an `Event::DiskRead`): for a replayer that reads the same disk
    /// itself (an FT backup on a shared disk with `--disk-reads own`). Failures are logged as
    /// before.
    pub fn log_disk_reads_by_digest(&mut self) {
        self.read_digests = true;
    }

    /// The machine's clock tap (connected by [`Recorder::start`]): the icount of the device
    /// pass under way, for other backends that must know when the guest did something (e.g.
    /// the FT output rule's hold on transmitted frames).
    pub fn clock_tap(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.tap)
    }

    /// Entries handed to the output so far, in whole frames (after [`Recorder::flush`]: every
    /// entry appended).
    pub fn entries(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.position().entries)
    }

    /// Logs a control operation or any other event at the machine's current icount.
    pub fn event(&mut self, m: &Machine, event: Event) {
        let r = self.append(m.icount(), event);
        self.note(r);
    }

    fn note(&mut self, r: Result<(), RecordError>) {
        if let Err(e) = r {
            self.error.get_or_insert(e);
        }
    }

    /// Console bytes typed on UART0 at the machine's current icount.
    pub fn console(&mut self, m: &Machine, bytes: &[u8]) {
        let r = self.append(
            m.icount(),
            Event::DeviceCompletion {
                device: DEV_UART,
                request: 0,
                data: bytes.to_vec(),
            },
        );
        self.note(r);
    }

    /// At a run-slice boundary (before the next run call): keeps guest time near the host's
    /// wall clock (`now`; the reference is taken at the first call) by the policy of
    /// [`crate::timesync`]. A jump forward is logged as a time-sync entry and a rate change as
    /// a time-rate entry, at the machine's icount, and both are made on `m`; the caller waits
    /// the returned pace before its next run call.
    pub fn sync_time(&mut self, m: &mut Machine, now: std::time::Instant) -> SyncStep {
        let ts = self.timesync.get_or_insert_with(|| TimeSync::new(m, now));
        let s = ts.check(m, now);
        if let Some(d) = s.jump {
            let delta = i64::try_from(d).unwrap_or(i64::MAX);
            let r = self.append(m.icount(), Event::TimeSync { delta });
            self.note(r);
            m.adjust_time(u64::try_from(delta).unwrap_or(0));
        }
        if let Some(rate) = s.rate {
            if m.set_time_rate(rate).is_ok() {
                let r = self.append(m.icount(), Event::TimeRate { rate });
                self.note(r);
            }
        }
        s
    }

    /// Takes a new time-sync reference at `now` (after a pause: the time the guest was stopped
    /// is not made up).
    pub fn rebase_time(&mut self, m: &Machine, now: std::time::Instant) {
        if let Some(ts) = &mut self.timesync {
            ts.rebase(m, now);
        }
    }

    /// The time-sync policy's counters (adjustments, ticks added), once it has started.
    pub fn time_sync(&self) -> Option<&TimeSync> {
        self.timesync.as_ref()
    }

    /// Every hart idled at `from` and the clock skips to `until`.
    pub fn idle_skip(&mut self, from: u64, until: u64) {
        if let Some(ts) = &mut self.timesync {
            ts.idled();
        }
        let r = self.append(
            from,
            Event::IdleSkip {
                hart: 0,
                until: until.max(from),
            },
        );
        self.note(r);
    }

    /// A completion point, between two run calls: completes the disk requests whose host I/O
    /// is ready ([`Machine::complete_io`]) and logs, at the machine's icount, the data they
    /// read and then a request-done entry for each, in the order they completed.
    pub fn complete_io(&mut self, m: &mut Machine) {
        let done = m.complete_io();
        if done.is_empty() {
            return;
        }
        self.log_pending();
        for (device, request) in done {
            let r = self.append(m.icount(), Event::RequestDone { device, request });
            self.note(r);
        }
    }

    /// After a run slice: logs the entropy, disk data and frames the guest took and, when due and
    /// `digest_ok` (the slice ended at its limit, not idle), a digest.
    pub fn after_slice(&mut self, m: &Machine, digest_ok: bool) {
        self.log_pending();
        if digest_ok && m.icount() >= self.next_digest {
            self.next_digest = m.icount().saturating_add(DIGEST_EVERY);
            let r = self.append(m.icount(), Event::StateDigest(digest_parts(m)));
            self.note(r);
        }
    }

    /// Logs the inputs the devices took since the last call, in the order they took them.
    fn log_pending(&mut self) {
        let taken = self.pending.take();
        let drives = self.readonly.len();
        let is_disk = |d: u32| (0..drives).any(|i| disk_device(i) == d);
        for c in taken {
            let event = if self.read_digests && !c.data.is_empty() && is_disk(c.device) {
                Event::DiskRead {
                    device: c.device,
                    offset: c.request,
                    len: c.data.len() as u64,
                    digest: crate::disk::read_digest(&c.data),
                }
            } else {
                Event::DeviceCompletion {
                    device: c.device,
                    request: c.request,
                    data: c.data,
                }
            };
            let r = self.append(c.icount, event);
            self.note(r);
        }
    }

    /// Ends the log: entropy and disk data still pending, a final digest, power off if the guest asked for
    /// it, and the end marker.
    pub fn finish(mut self, m: &Machine) -> Result<W, RecordError> {
        self.next_digest = 0;
        self.after_slice(m, true);
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.power == Some(PowerEvent::PowerOff) {
            self.append(m.icount(), Event::PowerOff)?;
        }
        let mut out = self
            .writer
            .take()
            .ok_or(RecordError::Closed)?
            .finish(m.icount())?;
        out.flush()
            .map_err(|e| RecordError::Write(WriteError::Io(e)))?;
        Ok(out)
    }
}
