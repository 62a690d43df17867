//! Disks in the input log: the block backends the recorder and the replayer put under each
//! virtio-blk device.
//!
//! The block device runs a request inside a device pass, where the machine's clock tap holds
//! the icount (`Machine::set_clock_tap`), and moves its data through a bounce buffer one
//! [`BlockBackend::read_at`] call at a time (at most 64 KiB). So each call is one input event:
//!
//! - [`RecordingDisk`] reads the host's disk and notes `(icount, device, byte offset, data)`,
//!   which the recorder logs as a `DeviceCompletion { device: <slot>, request: <offset>, data }`.
//!   Writes and flushes go to the host's disk. An operation the host's disk fails is noted with
//!   empty data (request = the offset, or [`FLUSH_REQUEST`] for a flush), because the guest sees
//!   the failure and the replay must too.
//! - [`ReplayDisk`] needs no disk: a read takes the next logged read of its device, which must
//!   be at the same icount, offset and length, else the replay has diverged ("disk read").
//!   Writes are discarded and flushes do nothing, except that a logged failure fails them too.
//!   When the replayer goes live, the machine's disk backends are replaced by real ones.
//!
//! With `--disk-reads own` (an FT pair on a shared disk) the recorder logs a read by its
//! length and digest ([`read_digest`], XXH3-64) instead of its data (`Event::DiskRead`), and
//! the replaying side reads the disk itself at the replayed icount: an FT backup reads the
//! shared image overlaid with the writes it replayed that the primary has not confirmed on the
//! image ([`DiskQueue::writes`]), which is exactly what the primary's guest saw, since the
//! primary releases a write to the image only once the backup has replayed past it; `ftvm
//! replay` reads a private copy-on-write view ([`CowDisk`]) of the image as it was when the
//! recording began. A digest that differs is a divergence ("disk read: ... differ").

use machine::virtio::BlockBackend;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The `request` of a logged flush failure (a read or write failure's request is its offset,
/// always below the disk's size).
pub const FLUSH_REQUEST: u64 = u64::MAX;

/// The digest a disk read is logged with under `--disk-reads own`: XXH3-64 (seed 0) of the
/// bytes the guest got.
pub fn read_digest(data: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(data)
}

/// What the log says a disk read gave the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoggedRead {
    /// The bytes themselves (empty: the operation failed on the recording host).
    Data(Vec<u8>),
    /// Only their length and [`read_digest`]: the replaying side reads the disk itself.
    Digest {
        /// Bytes read.
        len: u64,
        /// Their digest.
        digest: u64,
    },
}

impl LoggedRead {
    /// Bytes the logged read moved.
    pub fn len(&self) -> u64 {
        match self {
            LoggedRead::Data(d) => d.len() as u64,
            LoggedRead::Digest { len, .. } => *len,
        }
    }

    /// Whether this is a logged failure (no data, no digest).
    pub fn is_failure(&self) -> bool {
        matches!(self, LoggedRead::Data(d) if d.is_empty())
    }

    /// Whether nothing was moved (a failure).
    pub fn is_empty(&self) -> bool {
        self.is_failure()
    }
}

/// What the replayer needs to know of a disk: carried in the log's prologue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriveShape {
    /// Size in bytes (the guest sees whole sectors only).
    pub capacity: u64,
    /// Offered read-only.
    pub readonly: bool,
}

/// One input taken by a device inside a run slice, to be logged after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The machine icount of the device pass that took it.
    pub icount: u64,
    /// The log's device number (the device's virtio slot).
    pub device: u32,
    /// The device's id for it: a disk's byte offset; 0 for entropy.
    pub request: u64,
    /// The bytes that entered guest memory (empty: the disk operation failed).
    pub data: Vec<u8>,
}

/// Inputs taken by devices and not yet logged, in the order they were taken (non-decreasing
/// icount), shared by every recording backend of a machine (clones share the queue). Once
/// the recorder is gone ([`Pending::close`]: an FT primary that runs on alone keeps its
/// machine and so the recording wrappers) nothing is kept: the queue would grow without end.
#[derive(Clone, Default)]
pub struct Pending(Arc<Mutex<PendingQueue>>);

#[derive(Default)]
struct PendingQueue {
    queue: VecDeque<Completion>,
    closed: bool,
}

impl Pending {
    /// Notes an input (dropped once closed).
    pub fn push(&self, c: Completion) {
        if let Ok(mut p) = self.0.lock() {
            if !p.closed {
                p.queue.push_back(c);
            }
        }
    }

    /// Takes every input noted so far, oldest first.
    pub fn take(&self) -> Vec<Completion> {
        self.0
            .lock()
            .map(|mut p| p.queue.drain(..).collect())
            .unwrap_or_default()
    }

    /// Drops what is queued and keeps nothing from now on.
    pub fn close(&self) {
        if let Ok(mut p) = self.0.lock() {
            p.closed = true;
            p.queue.clear();
        }
    }

    /// Inputs queued now.
    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |p| p.queue.len())
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The log's device number of the `drive`-th disk: its virtio slot.
pub fn disk_device(drive: usize) -> u32 {
    machine::machine::disk_slot(drive).map_or(u32::MAX, |s| s as u32)
}

/// The log's device number of the virtio-rng device on a machine with `drives` disks: its
/// slot, just below the disks' ([`crate::DEV_RNG`] without disks).
pub fn rng_device(drives: usize) -> u32 {
    disk_device(drives)
}

/// A host disk whose reads (and failures) are noted for the log.
pub struct RecordingDisk {
    inner: Box<dyn BlockBackend>,
    device: u32,
    tap: Arc<AtomicU64>,
    pending: Pending,
}

impl RecordingDisk {
    /// Wraps `inner`, the disk in virtio slot `device`; `tap` is the machine's clock tap.
    pub fn new(
        inner: Box<dyn BlockBackend>,
        device: u32,
        tap: Arc<AtomicU64>,
        pending: Pending,
    ) -> RecordingDisk {
        RecordingDisk {
            inner,
            device,
            tap,
            pending,
        }
    }

    fn note(&self, request: u64, data: Vec<u8>) {
        self.pending.push(Completion {
            icount: self.tap.load(Ordering::Relaxed),
            device: self.device,
            request,
            data,
        });
    }

    /// Notes a failure of the host's disk, which the guest is about to see.
    fn failed<T>(&self, request: u64, r: io::Result<T>) -> io::Result<T> {
        if r.is_err() {
            self.note(request, Vec::new());
        }
        r
    }
}

impl BlockBackend for RecordingDisk {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = self.inner.read_at(offset, buf);
        let r = self.failed(offset, r);
        if r.is_ok() {
            self.note(offset, buf.to_vec());
        }
        r
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let r = self.inner.write_at(offset, data);
        self.failed(offset, r)
    }
    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        self.failed(FLUSH_REQUEST, r)
    }
    fn prepare(&mut self, op: machine::virtio::Prepare) -> bool {
        self.inner.prepare(op)
    }
    fn set_wake(&mut self, wake: &machine::wake::Waker) {
        self.inner.set_wake(wake);
    }
    fn describe(&self) -> String {
        format!("recording({})", self.inner.describe())
    }
    fn take_inner(&mut self) -> Option<Box<dyn BlockBackend>> {
        let empty = Box::new(machine::virtio::block::MemBackend::default());
        Some(std::mem::replace(&mut self.inner, empty))
    }
}

/// The replaying host's own image of a non-shared disk, where replayed writes are applied.
pub struct LocalDisk(pub Box<dyn BlockBackend>);

impl std::fmt::Debug for LocalDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalDisk({} bytes)", self.0.len())
    }
}

/// One disk's logged reads waiting for the guest, and the first mismatch.
#[derive(Debug, Default)]
pub struct DiskQueue {
    /// With a non-shared disk: the replaying host's own image, which the replayed writes go
    /// to (instead of being kept for re-issue). Reads logged by digest are read from it.
    pub local: Option<LocalDisk>,
    /// A shared disk's image that reads logged by digest are read from (an FT backup with
    /// `--disk-reads own`), overlaid with [`DiskQueue::writes`]; never written.
    pub image: Option<LocalDisk>,
    /// (icount, request, what the read gave), in log order.
    pub queue: VecDeque<(u64, u64, LoggedRead)>,
    /// The first mismatch: (icount, what).
    pub error: Option<(u64, String)>,
    /// Writes (and flushes: `None`) the replayed guest made that the primary may not have put
    /// on a shared disk yet: (icount, offset, data). An FT backup re-issues them at go-live;
    /// [`DiskQueue::confirm`] drops those known to be on the disk.
    pub writes: VecDeque<(u64, u64, Option<Vec<u8>>)>,
    /// Bytes in `writes`.
    pub write_bytes: usize,
    /// Whether replayed writes are kept for a re-issue at all (an FT backup on a shared disk);
    /// a plain replay never goes live on a disk, so it keeps nothing.
    pub keep: bool,
}

/// Replayed writes kept for re-issue beyond which the oldest are dropped (and counted): the
/// primary confirms its releases far sooner than this fills.
pub const MAX_UNCONFIRMED: usize = 256 << 20;

impl DiskQueue {
    fn keep_write(&mut self, icount: u64, offset: u64, data: Option<Vec<u8>>) {
        if !self.keep {
            return;
        }
        self.write_bytes += data.as_ref().map_or(0, Vec::len);
        self.writes.push_back((icount, offset, data));
        while self.write_bytes > MAX_UNCONFIRMED {
            let Some((_, _, d)) = self.writes.pop_front() else {
                break;
            };
            self.write_bytes -= d.map_or(0, |d| d.len());
        }
    }

    /// Reads `buf` at `offset` from this host's view of the disk, for a read logged by its
    /// digest: the local image (non-shared disk, or `ftvm replay`'s copy-on-write view), else
    /// the shared image overlaid, oldest first, with the replayed writes the primary has not
    /// confirmed on it.
    pub fn read_own(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if let Some(LocalDisk(d)) = &mut self.local {
            return d.read_at(offset, buf);
        }
        let Some(LocalDisk(d)) = &mut self.image else {
            return Err(io::Error::other("this host has no image of the disk"));
        };
        d.read_at(offset, buf)?;
        for (_, o, data) in &self.writes {
            if let Some(data) = data {
                overlay(buf, offset, *o, data);
            }
        }
        Ok(())
    }

    /// The primary has put every write made before icount `upto` on the shared disk.
    pub fn confirm(&mut self, upto: u64) {
        while self.writes.front().is_some_and(|(at, _, _)| *at < upto) {
            if let Some((_, _, d)) = self.writes.pop_front() {
                self.write_bytes -= d.map_or(0, |d| d.len());
            }
        }
    }
}

/// Copies into `buf` (which holds the disk's bytes from `offset`) the part of a write of
/// `data` at `at` that overlaps it.
pub fn overlay(buf: &mut [u8], offset: u64, at: u64, data: &[u8]) {
    let end = offset.saturating_add(buf.len() as u64);
    let (ws, we) = (at, at.saturating_add(data.len() as u64));
    let (a, b) = (ws.max(offset), we.min(end));
    if a < b {
        // All three fit in usize: they are within `buf` or `data`.
        let dst = (a - offset) as usize;
        let src = (a - ws) as usize;
        let n = (b - a) as usize;
        buf[dst..dst + n].copy_from_slice(&data[src..src + n]);
    }
}

/// A private, copy-on-write view of a disk image: reads come from the image except for the
/// sectors written through the view, which are kept in memory; the image is never written.
/// What `ftvm replay` gives a log whose reads are logged by digest, so that replaying a run
/// does not touch the image it is given.
pub struct CowDisk {
    base: Box<dyn BlockBackend>,
    sectors: std::collections::HashMap<u64, Box<[u8; 512]>>,
}

impl CowDisk {
    /// A view of `base`.
    pub fn new(base: Box<dyn BlockBackend>) -> CowDisk {
        CowDisk {
            base,
            sectors: std::collections::HashMap::new(),
        }
    }
}

impl BlockBackend for CowDisk {
    fn len(&self) -> u64 {
        self.base.len()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.base.read_at(offset, buf)?;
        if self.sectors.is_empty() {
            return Ok(());
        }
        let end = offset.saturating_add(buf.len() as u64);
        for s in offset / 512..end.div_ceil(512) {
            if let Some(d) = self.sectors.get(&s) {
                overlay(buf, offset, s * 512, &d[..]);
            }
        }
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset.saturating_add(data.len() as u64);
        if end > self.base.len() {
            return Err(io::Error::other("write past the end of the disk"));
        }
        for s in offset / 512..end.div_ceil(512) {
            if !self.sectors.contains_key(&s) {
                let mut b = Box::new([0u8; 512]);
                let n = (self.base.len() - s * 512).min(512) as usize;
                self.base.read_at(s * 512, &mut b[..n])?;
                self.sectors.insert(s, b);
            }
            if let Some(b) = self.sectors.get_mut(&s) {
                // The write's bytes over this sector: the sector is `b` at `s * 512`.
                let (ws, we) = (offset.max(s * 512), end.min(s * 512 + 512));
                let dst = (ws - s * 512) as usize;
                let src = (ws - offset) as usize;
                let n = (we - ws) as usize;
                b[dst..dst + n].copy_from_slice(&data[src..src + n]);
            }
        }
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A disk replayed from the log: see the module documentation.
pub struct ReplayDisk {
    shared: Arc<Mutex<DiskQueue>>,
    tap: Arc<AtomicU64>,
    capacity: u64,
    drive: usize,
}

impl ReplayDisk {
    /// The `drive`-th disk, of `capacity` bytes, fed from `shared`; `tap` is the machine's
    /// clock tap.
    pub fn new(
        drive: usize,
        capacity: u64,
        shared: Arc<Mutex<DiskQueue>>,
        tap: Arc<AtomicU64>,
    ) -> ReplayDisk {
        ReplayDisk {
            shared,
            tap,
            capacity,
            drive,
        }
    }

    /// Pops a logged failure of the operation at `request` if it is the next entry, at this
    /// icount: the recorded guest saw the operation fail.
    fn logged_failure(&self, request: u64) -> io::Result<()> {
        let now = self.tap.load(Ordering::Relaxed);
        let mut q = lock(&self.shared)?;
        if q.error.is_some() {
            // Diverged, or gone live without a host disk: nothing may look written.
            return Err(io::Error::other("the replayed disk is out of service"));
        }
        match q.queue.front() {
            Some((at, r, data)) if *at == now && *r == request && data.is_failure() => {
                q.queue.pop_front();
                Err(io::Error::other("the recorded disk operation failed"))
            }
            _ => Ok(()),
        }
    }
}

fn lock(shared: &Mutex<DiskQueue>) -> io::Result<std::sync::MutexGuard<'_, DiskQueue>> {
    shared
        .lock()
        .map_err(|_| io::Error::other("disk queue poisoned"))
}

impl BlockBackend for ReplayDisk {
    fn len(&self) -> u64 {
        self.capacity
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let now = self.tap.load(Ordering::Relaxed);
        let mut q = lock(&self.shared)?;
        let why = match q.queue.pop_front() {
            Some((at, req, data)) if at == now && req == offset && data.is_failure() => {
                return Err(io::Error::other("the recorded disk read failed"));
            }
            Some((at, req, LoggedRead::Data(data)))
                if at == now && req == offset && data.len() == buf.len() =>
            {
                buf.copy_from_slice(&data);
                return Ok(());
            }
            Some((at, req, LoggedRead::Digest { len, digest }))
                if at == now && req == offset && len == buf.len() as u64 =>
            {
                match q.read_own(offset, buf) {
                    Ok(()) if read_digest(buf) == digest => return Ok(()),
                    Ok(()) => format!(
                        "disk read: the {} bytes this host read of disk {} at offset {offset} \
                         differ from what the recorded guest read (digest {:016x}, the log \
                         has {digest:016x}): this host's view of the disk is not the \
                         recorder's",
                        buf.len(),
                        self.drive,
                        read_digest(buf)
                    ),
                    Err(e) => format!(
                        "disk read: this host's image of disk {} failed at offset {offset} \
                         ({} bytes), where the recorded guest's read succeeded: {e}",
                        self.drive,
                        buf.len()
                    ),
                }
            }
            Some((at, req, data)) => format!(
                "disk read: the guest read {} bytes of disk {} at offset {offset}; the log has \
                 {} bytes at offset {req} at icount {at}",
                buf.len(),
                self.drive,
                data.len()
            ),
            None => format!(
                "disk read: the guest read {} bytes of disk {} at offset {offset}, which the \
                 log does not have",
                buf.len(),
                self.drive
            ),
        };
        q.error.get_or_insert((now, why.clone()));
        Err(io::Error::other(why))
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.logged_failure(offset)?;
        let now = self.tap.load(Ordering::Relaxed);
        let mut q = lock(&self.shared)?;
        if q.local.is_some() {
            return local_op(now, &mut q, offset, |d| d.write_at(offset, data));
        }
        q.keep_write(now, offset, Some(data.to_vec()));
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.logged_failure(FLUSH_REQUEST)?;
        let now = self.tap.load(Ordering::Relaxed);
        let mut q = lock(&self.shared)?;
        if q.local.is_some() {
            return local_op(now, &mut q, FLUSH_REQUEST, |d| d.flush());
        }
        q.keep_write(now, FLUSH_REQUEST, None);
        Ok(())
    }
}

/// A write or flush on the host's own image of a non-shared disk. The recorded guest saw it
/// succeed, so a failure here is a divergence of the replica (noted like a bad read).
fn local_op(
    now: u64,
    q: &mut DiskQueue,
    offset: u64,
    op: impl FnOnce(&mut Box<dyn BlockBackend>) -> io::Result<()>,
) -> io::Result<()> {
    let Some(LocalDisk(d)) = &mut q.local else {
        return Ok(());
    };
    if let Err(e) = op(d) {
        let why = format!("disk write: this host's own disk image failed at offset {offset}: {e}");
        q.error.get_or_insert((now, why.clone()));
        return Err(io::Error::other(why));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_queue_keeps_nothing() {
        let p = Pending::default();
        let c = |icount| Completion {
            icount,
            device: 1,
            request: 0,
            data: vec![1; 4096],
        };
        let wrapper = p.clone();
        wrapper.push(c(1));
        wrapper.push(c(2));
        assert_eq!(p.len(), 2);
        assert_eq!(
            p.take().iter().map(|c| c.icount).collect::<Vec<_>>(),
            [1, 2]
        );
        wrapper.push(c(3));
        p.close();
        assert!(p.is_empty(), "closing drops what was queued");
        for i in 0..1000 {
            wrapper.push(c(i));
        }
        assert!(p.is_empty() && p.take().is_empty());
    }
    use machine::virtio::block::MemBackend;

    /// A disk that fails every operation.
    struct Broken;

    impl BlockBackend for Broken {
        fn len(&self) -> u64 {
            4096
        }
        fn read_at(&mut self, _: u64, _: &mut [u8]) -> io::Result<()> {
            Err(io::Error::other("broken"))
        }
        fn write_at(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
            Err(io::Error::other("broken"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::other("broken"))
        }
    }

    fn mem(len: usize) -> Box<dyn BlockBackend> {
        let data = (0..len).map(|i| (i / 512) as u8).collect();
        Box::new(MemBackend { data, flushes: 0 })
    }

    /// Records what `ops` do on `inner` at icounts 10, 20, ...; returns the completions.
    fn record(inner: Box<dyn BlockBackend>, ops: &[(char, u64, usize)]) -> Vec<Completion> {
        let tap = Arc::new(AtomicU64::new(0));
        let pending = Pending::default();
        let mut d = RecordingDisk::new(inner, 7, Arc::clone(&tap), pending.clone());
        for (i, &(op, off, len)) in ops.iter().enumerate() {
            tap.store(10 * (i as u64 + 1), Ordering::Relaxed);
            let mut buf = vec![0; len];
            let _ = match op {
                'r' => d.read_at(off, &mut buf),
                'w' => d.write_at(off, &[0xee; 512]),
                _ => d.flush(),
            };
        }
        pending.take()
    }

    fn replayer(log: &[Completion]) -> (ReplayDisk, Arc<AtomicU64>, Arc<Mutex<DiskQueue>>) {
        let tap = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Mutex::new(DiskQueue::default()));
        for c in log {
            let e = (c.icount, c.request, LoggedRead::Data(c.data.clone()));
            shared.lock().unwrap().queue.push_back(e);
        }
        (
            ReplayDisk::new(0, 8192, Arc::clone(&shared), Arc::clone(&tap)),
            tap,
            shared,
        )
    }

    #[test]
    fn replayed_writes_are_kept_until_confirmed_or_go_to_the_local_image() {
        let (mut d, tap, shared) = replayer(&[]);
        shared.lock().unwrap().keep = true;
        for (i, at) in [10u64, 20, 30].into_iter().enumerate() {
            tap.store(at, Ordering::Relaxed);
            d.write_at(512 * i as u64, &[i as u8 + 1; 512]).unwrap();
        }
        d.flush().unwrap();
        {
            let mut q = shared.lock().unwrap();
            assert_eq!(q.writes.len(), 4);
            assert_eq!(q.write_bytes, 1536);
            q.confirm(20);
            assert_eq!(q.writes.len(), 3, "the write at 10 is on the disk");
            assert_eq!(q.writes.front().map(|w| w.0), Some(20));
            assert_eq!(q.write_bytes, 1024);
            q.local = Some(LocalDisk(mem(8192)));
        }
        tap.store(40, Ordering::Relaxed);
        d.write_at(0, &[9; 512]).unwrap();
        let mut q = shared.lock().unwrap();
        assert_eq!(q.writes.len(), 3, "a local image takes the write instead");
        let mut buf = [0u8; 512];
        q.local.as_mut().unwrap().0.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, [9; 512]);
    }

    #[test]
    fn reads_are_recorded_with_icount_offset_and_data_writes_are_not() {
        let log = record(mem(8192), &[('r', 512, 1024), ('w', 0, 512), ('f', 0, 0)]);
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].icount, 10);
        assert_eq!(log[0].device, 7);
        assert_eq!(log[0].request, 512);
        assert_eq!(log[0].data, [[1u8; 512], [2u8; 512]].concat());
    }

    #[test]
    fn replay_gives_the_logged_data_and_discards_writes() {
        let log = record(mem(8192), &[('r', 512, 1024), ('r', 0, 512)]);
        let (mut d, tap, shared) = replayer(&log);
        assert_eq!(d.len(), 8192);
        tap.store(10, Ordering::Relaxed);
        let mut buf = vec![0; 1024];
        d.read_at(512, &mut buf).unwrap();
        assert_eq!(buf, log[0].data);
        tap.store(15, Ordering::Relaxed);
        d.write_at(0, &[1; 512]).unwrap();
        d.flush().unwrap();
        tap.store(20, Ordering::Relaxed);
        let mut buf = vec![0; 512];
        d.read_at(0, &mut buf).unwrap();
        assert_eq!(
            buf,
            vec![0; 512],
            "the logged data, not what the write said"
        );
        let q = shared.lock().unwrap();
        assert!(q.queue.is_empty() && q.error.is_none());
    }

    #[test]
    fn replay_mismatches_are_noted_as_disk_read_divergences() {
        let log = record(mem(8192), &[('r', 512, 1024)]);
        for (at, off, len, want) in [
            (11, 512, 1024, "at icount 10"),
            (
                10,
                0,
                1024,
                "at offset 0; the log has 1024 bytes at offset 512",
            ),
            (10, 512, 512, "read 512 bytes"),
        ] {
            let (mut d, tap, shared) = replayer(&log);
            tap.store(at, Ordering::Relaxed);
            let mut buf = vec![0; len];
            assert!(d.read_at(off, &mut buf).is_err());
            let (icount, why) = shared.lock().unwrap().error.clone().unwrap();
            assert_eq!(icount, at);
            assert!(why.starts_with("disk read:") && why.contains(want), "{why}");
        }
        let (mut d, _, shared) = replayer(&[]);
        assert!(d.read_at(0, &mut [0; 512]).is_err());
        let why = shared.lock().unwrap().error.clone().unwrap().1;
        assert!(why.contains("the log does not have"), "{why}");
    }

    #[test]
    fn host_failures_are_logged_and_replayed() {
        let log = record(
            Box::new(Broken),
            &[('r', 512, 512), ('w', 1024, 512), ('f', 0, 0)],
        );
        let reqs: Vec<_> = log.iter().map(|c| (c.icount, c.request)).collect();
        assert_eq!(reqs, [(10, 512), (20, 1024), (30, FLUSH_REQUEST)]);
        assert!(log.iter().all(|c| c.data.is_empty()));
        let (mut d, tap, shared) = replayer(&log);
        tap.store(10, Ordering::Relaxed);
        assert!(d.read_at(512, &mut [0; 512]).is_err());
        tap.store(20, Ordering::Relaxed);
        assert!(d.write_at(1024, &[0; 512]).is_err());
        tap.store(30, Ordering::Relaxed);
        assert!(d.flush().is_err());
        assert!(d.flush().is_ok(), "only the logged failure fails");
        let q = shared.lock().unwrap();
        assert!(q.queue.is_empty() && q.error.is_none(), "{:?}", q.error);
    }

    /// A replayer whose reads are logged by digest, reading `image` (the shared disk).
    fn own_replayer(
        log: &[Completion],
        image: Box<dyn BlockBackend>,
    ) -> (ReplayDisk, Arc<AtomicU64>, Arc<Mutex<DiskQueue>>) {
        let (d, tap, shared) = replayer(&[]);
        {
            let mut q = shared.lock().unwrap();
            q.keep = true;
            q.image = Some(LocalDisk(image));
            for c in log {
                let e = LoggedRead::Digest {
                    len: c.data.len() as u64,
                    digest: read_digest(&c.data),
                };
                q.queue.push_back((c.icount, c.request, e));
            }
        }
        (d, tap, shared)
    }

    #[test]
    fn reads_logged_by_digest_are_read_from_the_image_and_its_unconfirmed_writes() {
        // The recorded guest: reads sector 1, writes it, reads it again.
        let log = [
            Completion {
                icount: 10,
                device: 7,
                request: 512,
                data: vec![1; 512],
            },
            Completion {
                icount: 30,
                device: 7,
                request: 0,
                data: [vec![0; 512], vec![0xee; 512]].concat(),
            },
        ];
        let (mut d, tap, shared) = own_replayer(&log, mem(8192));
        tap.store(10, Ordering::Relaxed);
        let mut buf = vec![0; 512];
        d.read_at(512, &mut buf).unwrap();
        assert_eq!(buf, [1; 512], "read from the image");
        tap.store(20, Ordering::Relaxed);
        d.write_at(512, &[0xee; 512]).unwrap();
        tap.store(30, Ordering::Relaxed);
        let mut buf = vec![0; 1024];
        d.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf[512..], [0xee; 512], "the unconfirmed write shows");
        let q = shared.lock().unwrap();
        assert!(q.queue.is_empty() && q.error.is_none(), "{:?}", q.error);
    }

    #[test]
    fn a_digest_that_differs_is_a_disk_read_divergence() {
        let log = record(mem(8192), &[('r', 512, 1024)]);
        let mut other = mem(8192);
        other.write_at(1024, &[0x55; 512]).unwrap();
        let (mut d, tap, shared) = own_replayer(&log, other);
        tap.store(10, Ordering::Relaxed);
        assert!(d.read_at(512, &mut [0; 1024]).is_err());
        let (at, why) = shared.lock().unwrap().error.clone().unwrap();
        assert_eq!(at, 10);
        assert!(
            why.starts_with("disk read:") && why.contains("differ from what the recorded guest"),
            "{why}"
        );
        // An image that fails is a divergence too, not a panic.
        let (mut d, tap, shared) = own_replayer(&log, Box::new(Broken));
        tap.store(10, Ordering::Relaxed);
        assert!(d.read_at(512, &mut [0; 1024]).is_err());
        let why = shared.lock().unwrap().error.clone().unwrap().1;
        assert!(why.contains("this host's image of disk 0 failed"), "{why}");
        // A read of another length than the logged one.
        let (mut d, tap, shared) = own_replayer(&log, mem(8192));
        tap.store(10, Ordering::Relaxed);
        assert!(d.read_at(512, &mut [0; 512]).is_err());
        let why = shared.lock().unwrap().error.clone().unwrap().1;
        assert!(
            why.contains("the log has 1024 bytes at offset 512"),
            "{why}"
        );
    }

    #[test]
    fn a_cow_view_never_writes_its_image() {
        let mut c = CowDisk::new(mem(4096));
        c.write_at(500, &[9; 30]).unwrap();
        c.write_at(1024, &[7; 512]).unwrap();
        let mut buf = vec![0; 2048];
        c.read_at(0, &mut buf).unwrap();
        let mut want: Vec<u8> = (0..2048).map(|i| (i / 512) as u8).collect();
        want[500..530].fill(9);
        want[1024..1536].fill(7);
        assert_eq!(buf, want);
        assert!(c.write_at(4090, &[0; 10]).is_err(), "past the end");
        let mut base = vec![0; 2048];
        c.base.read_at(0, &mut base).unwrap();
        assert_eq!(base[500], 0, "the image is untouched");
        assert_eq!(base[1024], 2);
    }

    #[test]
    fn device_numbers_are_slots() {
        assert_eq!(disk_device(0), 7);
        assert_eq!(disk_device(1), 6);
        assert_eq!(rng_device(0), crate::DEV_RNG);
        assert_eq!(rng_device(2), 5);
    }
}
