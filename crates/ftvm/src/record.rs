//! `ftvm run --record LOG`: writes the run's input log (see `crates/replay` and
//! `docs/log-format.md`) so that `ftvm replay` can reproduce the run exactly.
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
//!    (device [`DEV_RNG`]); a state digest every [`DIGEST_EVERY`] icount at a run-slice
//!    boundary and at the end; a power-off entry when the guest powered off; the end marker.
//!
//! Disks are out of scope: `--record` is refused together with `--drive`.

use machine::virtio::{EntropyBackend, OsEntropy};
use machine::{Machine, PowerEvent};
use replay::{DigestPart, Entry, Event, LogHeader, LogWriter, WriteError};
use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Device number of UART0's input in `DeviceCompletion` entries.
pub const DEV_UART: u32 = 0x100;
/// Device number of the virtio-rng device (its slot on a machine without disks).
pub const DEV_RNG: u32 = (machine::board::VIRTIO_SLOTS - 1) as u32;
/// Control-entry tag: the machine configuration.
pub const TAG_CONFIG: u8 = 1;
/// Control-entry tag: a chunk of the initial snapshot.
pub const TAG_SNAPSHOT: u8 = 2;
/// Largest snapshot chunk in one control entry.
pub const SNAPSHOT_CHUNK: usize = 4 << 20;
/// A state digest is logged at the first slice boundary after every this many icount.
pub const DIGEST_EVERY: u64 = 100_000_000;

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
    /// a disk cannot be recorded
    #[error("--record cannot be used with --drive (disks are not recorded)")]
    Drive,
}

/// The machine's shape, as carried in the log's first control entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedConfig {
    /// RAM size in bytes.
    pub mem_size: u64,
    /// Number of harts.
    pub harts: u32,
    /// Where the boot ROM sends hart 0 and what it tells the firmware.
    pub boot: machine::BootInfo,
}

impl LoggedConfig {
    /// The control entry's bytes (tag included).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![TAG_CONFIG];
        v.extend_from_slice(&self.mem_size.to_le_bytes());
        v.extend_from_slice(&self.harts.to_le_bytes());
        v.extend_from_slice(&self.boot.fdt_addr.to_le_bytes());
        v.extend_from_slice(&self.boot.start.to_le_bytes());
        v.extend_from_slice(&self.boot.kernel_entry.to_le_bytes());
        let (a, b) = self.boot.initrd.unwrap_or((0, 0));
        v.push(u8::from(self.boot.initrd.is_some()));
        v.extend_from_slice(&a.to_le_bytes());
        v.extend_from_slice(&b.to_le_bytes());
        v
    }

    /// Parses a control entry written by [`LoggedConfig::encode`]; `None` if malformed.
    pub fn decode(b: &[u8]) -> Option<LoggedConfig> {
        if b.len() != 1 + 8 + 4 + 8 * 3 + 1 + 16 || b[0] != TAG_CONFIG {
            return None;
        }
        let u64_at = |i: usize| b.get(i..i + 8)?.try_into().ok().map(u64::from_le_bytes);
        let harts = u32::from_le_bytes(b.get(9..13)?.try_into().ok()?);
        let initrd = match b[37] {
            0 => None,
            1 => Some((u64_at(38)?, u64_at(46)?)),
            _ => return None,
        };
        Some(LoggedConfig {
            mem_size: u64_at(1)?,
            harts,
            boot: machine::BootInfo {
                fdt_addr: u64_at(13)?,
                start: u64_at(21)?,
                kernel_entry: u64_at(29)?,
                initrd,
            },
        })
    }

    /// The header's fingerprint: FNV-1a 64 of the encoded entry.
    pub fn fingerprint(&self) -> u64 {
        self.encode()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
    }
}

/// A machine's state digest as log digest parts.
pub fn digest_parts(m: &Machine) -> Vec<DigestPart> {
    let d = m.digest();
    [
        (replay::part::CPU, d.cpu),
        (replay::part::RAM, d.ram),
        (replay::part::DEVICES, d.devices),
    ]
    .into_iter()
    .map(|(id, h)| {
        let mut digest = [0u8; replay::DIGEST_LEN];
        digest[..8].copy_from_slice(&h.to_le_bytes());
        DigestPart { id, digest }
    })
    .collect()
}

/// Entropy taken by the guest and not yet logged: (icount, bytes).
type Pending = Arc<Mutex<VecDeque<(u64, Vec<u8>)>>>;

/// The host's entropy, with every fill noted at the machine icount (from the clock tap).
struct RecordingEntropy {
    inner: OsEntropy,
    tap: Arc<AtomicU64>,
    pending: Pending,
}

impl EntropyBackend for RecordingEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.fill(buf)?;
        if let Ok(mut p) = self.pending.lock() {
            p.push_back((self.tap.load(Ordering::Relaxed), buf.to_vec()));
        }
        Ok(())
    }
}

/// Writes the input log of a run.
pub struct Recorder {
    /// The log file until [`Recorder::start`] writes the header.
    file: Option<File>,
    writer: Option<LogWriter<BufWriter<File>>>,
    tap: Arc<AtomicU64>,
    pending: Pending,
    next_digest: u64,
    /// The guest's power request that ended the run, if any.
    pub power: Option<PowerEvent>,
    /// The first error; the run stops at it.
    pub error: Option<RecordError>,
}

impl Recorder {
    /// Creates the log file and returns the recorder and the entropy backend to build the
    /// machine with. Nothing but the header is written until [`Recorder::start`].
    pub fn create(
        path: &Path,
        cfg: &machine::MachineConfig,
    ) -> Result<(Recorder, Box<dyn EntropyBackend>), RecordError> {
        if !cfg.drives.is_empty() {
            return Err(RecordError::Drive);
        }
        let file = File::create(path).map_err(|source| RecordError::Create {
            path: path.display().to_string(),
            source,
        })?;
        let tap = Arc::new(AtomicU64::new(0));
        let pending = Pending::default();
        let entropy = RecordingEntropy {
            inner: OsEntropy::default(),
            tap: Arc::clone(&tap),
            pending: Arc::clone(&pending),
        };
        Ok((
            Recorder {
                file: Some(file),
                writer: None,
                tap,
                pending,
                next_digest: DIGEST_EVERY,
                power: None,
                error: None,
            },
            Box::new(entropy),
        ))
    }

    /// Writes the header, the configuration and the initial snapshot of `m` (which has not
    /// run yet), and connects the clock tap.
    pub fn start(&mut self, m: &mut Machine) -> Result<(), RecordError> {
        let lc = LoggedConfig {
            mem_size: m.ram().as_slice().len() as u64,
            harts: u32::try_from(m.harts().len()).unwrap_or(u32::MAX),
            boot: m.boot_info().clone(),
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
        self.writer = Some(LogWriter::new(BufWriter::new(file), &header)?);
        m.set_clock_tap(Arc::clone(&self.tap));
        let at = m.icount();
        self.append(at, Event::ConfigChange(lc.encode()))?;
        let snap = m.snapshot()?;
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

    fn append(&mut self, icount: u64, event: Event) -> Result<(), RecordError> {
        self.writer
            .as_mut()
            .ok_or(RecordError::Closed)?
            .append(&Entry { icount, event })?;
        Ok(())
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

    /// Every hart idled at `from` and the clock skips to `until`.
    pub fn idle_skip(&mut self, from: u64, until: u64) {
        let r = self.append(
            from,
            Event::IdleSkip {
                hart: 0,
                until: until.max(from),
            },
        );
        self.note(r);
    }

    /// After a run slice: logs the entropy the guest took and, when due and `digest_ok` (the
    /// slice ended at its limit, not idle), a digest.
    pub fn after_slice(&mut self, m: &Machine, digest_ok: bool) {
        let taken: Vec<_> = match self.pending.lock() {
            Ok(mut p) => p.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for (icount, data) in taken {
            let r = self.append(
                icount,
                Event::DeviceCompletion {
                    device: DEV_RNG,
                    request: 0,
                    data,
                },
            );
            self.note(r);
        }
        if digest_ok && m.icount() >= self.next_digest {
            self.next_digest = m.icount().saturating_add(DIGEST_EVERY);
            let r = self.append(m.icount(), Event::StateDigest(digest_parts(m)));
            self.note(r);
        }
    }

    /// Ends the log: entropy still pending, a final digest, power off if the guest asked for
    /// it, and the end marker.
    pub fn finish(mut self, m: &Machine) -> Result<(), RecordError> {
        self.next_digest = 0;
        self.after_slice(m, true);
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.power == Some(PowerEvent::PowerOff) {
            self.append(m.icount(), Event::PowerOff)?;
        }
        use std::io::Write;
        let mut out = self
            .writer
            .take()
            .ok_or(RecordError::Closed)?
            .finish(m.icount())?;
        out.flush()
            .map_err(|e| RecordError::Write(WriteError::Io(e)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_config_round_trips_and_rejects_garbage() {
        let lc = LoggedConfig {
            mem_size: 256 << 20,
            harts: 2,
            boot: machine::BootInfo {
                fdt_addr: 0x8fe0_0000,
                start: 0x8000_0000,
                kernel_entry: 0x8020_0000,
                initrd: Some((0x8800_0000, 0x8900_0000)),
            },
        };
        let b = lc.encode();
        assert_eq!(LoggedConfig::decode(&b), Some(lc.clone()));
        for n in 0..b.len() {
            assert_eq!(LoggedConfig::decode(&b[..n]), None);
        }
        let mut bad = b.clone();
        bad[37] = 7;
        assert_eq!(LoggedConfig::decode(&bad), None);
        let mut other = lc.clone();
        other.harts = 1;
        assert_ne!(other.fingerprint(), lc.fingerprint());
    }
}
