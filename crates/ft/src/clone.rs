//! The live clone (the paper's FT VMotion): a VM running alone gets a new backup while its
//! guest keeps running.
//!
//! After the handshake ([`crate::protect::connect`]) the run loop copies RAM a few batches at a
//! time between slices ([`LiveClone::step`]): round 0 every non-zero page, then each round the
//! pages the guest wrote meanwhile (the machine's dirty tracking,
//! [`machine::Machine::begin_live_copy`]). A sender thread compresses each batch (LZ4) and puts
//! it on the channel as a [`Msg::Pages`], so the guest only pays for copying pages out of its
//! RAM. Once what is left would go over the link within [`TARGET_PAUSE`] — or after
//! [`MAX_ROUNDS`], or when rounds stop shrinking (a guest writing faster than the link copies) —
//! the clone is ready: the guest stops between two slices, and the log starts with the copy's
//! closing delta (the pages still dirty, the CPU and the devices;
//! [`rr::Recorder::start_after_live_copy`]). The backup gathers the pages into an image of RAM
//! ([`Incoming`]) and builds its machine from that image and the delta.
//!
//! Our own code rather than a crate: the copy is interleaved with our vCPU loop and our dirty
//! tracking, which no migration crate knows about.

use crate::protect::Peer;
use crate::transport::SendMsg;
use crate::wire::{Msg, WireError};
use crate::FtError;
use machine::virtio::BlockBackend;
use machine::{DirtyConsumer, Machine};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// At most this many copy rounds after round 0, then the guest stops whatever is left.
pub const MAX_ROUNDS: u32 = 8;
/// The clone stops the guest once what is left would cross the link within this (output is
/// held until the backup has it; the guest itself stops only to encode it).
pub const TARGET_PAUSE: Duration = Duration::from_millis(20);
/// Pages per batch (one [`Msg::Pages`]).
const BATCH_PAGES: usize = 256;
/// Batches queued for the sender at most: the copy never runs far ahead of the link.
const QUEUE: u64 = 8;
/// Pages looked at per step at most (round 0 skips zero pages, which costs little each).
const SCAN_PER_STEP: usize = 16 * 1024;
const PAGE: usize = 4096;
/// Kinds of page in a batch.
const ZERO: u8 = 0;
const DATA: u8 = 1;
/// The largest decompressed batch.
const MAX_RAW: usize = BATCH_PAGES * (5 + PAGE);
/// The largest guest RAM a backup accepts a copy of (1 TiB).
const MAX_MEM: u64 = 1 << 40;
/// Non-shared disks are copied in chunks of this size.
const DISK_CHUNK: u64 = 1 << 20;
/// The disk copy stops its rounds once this few chunks are dirty; the pause sends them.
const DISK_LEFT: usize = 8;

/// Why a live clone failed (the VM runs on alone).
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    /// The machine has fewer disks than the clone was asked to copy.
    #[error("the machine has no disk {0}")]
    NoSuchDisk(usize),
    /// The host gave no randomness for the clone's id.
    #[error("no randomness for the clone's id: {0}")]
    Randomness(getrandom::Error),
    /// The sender thread could not be started.
    #[error("cannot start the clone's sender: {0}")]
    Thread(#[source] std::io::Error),
    /// Sending to the new backup failed.
    #[error("sending to the new backup failed: {0}")]
    Send(#[source] WireError),
    /// The new backup fell silent.
    #[error("nothing heard from the new backup for {0:?}")]
    Silent(Duration),
    /// The sender stopped (its channel failed) or is gone (the clone is over).
    #[error("the clone's sender stopped (the channel to the new backup failed)")]
    SenderStopped,
    /// The sender thread panicked.
    #[error("the clone's sender panicked")]
    SenderPanicked,
    /// A non-shared disk could not be read to be copied.
    #[error("reading disk {drive} to copy it: {source}")]
    ReadDisk {
        /// The drive.
        drive: usize,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the sender thread puts on the channel.
enum Job {
    /// A batch of RAM pages of a round.
    Pages(u32, Vec<u8>),
    /// Where the console's streams stand at the pause, and the recent output.
    Console(u64, u64, Vec<u8>),
    /// A chunk of a non-shared disk image.
    Disk {
        drive: u32,
        total: u64,
        offset: u64,
        data: Vec<u8>,
    },
}

/// A disk under a live copy: notes the chunks the guest writes meanwhile, which are then sent
/// again. Taken off when the clone ends ([`LiveClone::untrack`]).
struct TrackingDisk {
    inner: Box<dyn BlockBackend>,
    dirty: Arc<Mutex<BTreeSet<u64>>>,
    on: Arc<AtomicBool>,
}

impl BlockBackend for TrackingDisk {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if self.on.load(Ordering::Relaxed) && !data.is_empty() {
            let last = (offset + data.len() as u64 - 1) / DISK_CHUNK;
            if let Ok(mut d) = self.dirty.lock() {
                d.extend(offset / DISK_CHUNK..=last);
            }
        }
        self.inner.write_at(offset, data)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
    fn prepare(&mut self, op: machine::virtio::Prepare) -> bool {
        self.inner.prepare(op)
    }
    fn describe(&self) -> String {
        format!("tracking({})", self.inner.describe())
    }
    fn take_inner(&mut self) -> Option<Box<dyn BlockBackend>> {
        let empty = Box::new(machine::virtio::block::MemBackend::default());
        Some(std::mem::replace(&mut self.inner, empty))
    }
}

/// One non-shared disk's copy.
struct DiskCopy {
    drive: usize,
    total: u64,
    /// Chunks to send in this round.
    list: Vec<u64>,
    pos: usize,
    dirty: Arc<Mutex<BTreeSet<u64>>>,
    on: Arc<AtomicBool>,
}

impl DiskCopy {
    fn take_dirty(&self) -> Vec<u64> {
        self.dirty
            .lock()
            .map(|mut d| std::mem::take(&mut *d).into_iter().collect())
            .unwrap_or_default()
    }
}

/// Appends the pages `pages` of `mem` to `out` (per page a u32 index, a kind byte, and the
/// 4096 bytes unless zero), leaving zero pages out if `skip_zero`. Returns how many went in.
fn encode_batch(mem: &[u8], pages: &[usize], skip_zero: bool, out: &mut Vec<u8>) -> usize {
    let mut n = 0;
    for &i in pages {
        let Some(p) = mem.get(i * PAGE..(i + 1) * PAGE) else {
            continue;
        };
        let zero = p.iter().fold(0u8, |a, &b| a | b) == 0;
        if zero && skip_zero {
            continue;
        }
        out.extend_from_slice(&u32::try_from(i).unwrap_or(u32::MAX).to_le_bytes());
        if zero {
            out.push(ZERO);
        } else {
            out.push(DATA);
            out.extend_from_slice(p);
        }
        n += 1;
    }
    n
}

/// Why the backup refused a live clone's pages (a hostile or broken peer).
#[derive(Debug, thiserror::Error)]
pub enum PagesError {
    /// Shorter than its size field.
    #[error("a page batch is too short")]
    TooShort,
    /// Its size field claims more than a batch holds.
    #[error("a page batch claims more than a batch holds")]
    TooLarge,
    /// The LZ4 data is broken.
    #[error("a page batch does not decompress: {0}")]
    Decompress(#[source] lz4_flex::block::DecompressError),
    /// It ends inside a page's header.
    #[error("a page batch ends inside a page header")]
    CutHeader,
    /// It ends inside a page.
    #[error("a page batch ends inside a page")]
    CutPage,
    /// A page index past the guest's RAM.
    #[error("page {0} lies outside the guest's RAM")]
    Outside(usize),
    /// A page of a kind this build does not know.
    #[error("page {page} of unknown kind {kind}")]
    UnknownKind {
        /// The page.
        page: usize,
        /// Its kind byte.
        kind: u8,
    },
    /// A RAM size no guest has (zero, not whole pages, above 1 TiB, or above this host's
    /// address space).
    #[error("a clone of {0} bytes of RAM")]
    BadSize(u64),
    /// Pages of another clone, or of another RAM size, than the first batch's.
    #[error("pages of two different clones")]
    TwoClones,
}

/// Writes a batch (as [`Msg::Pages`] carries it: LZ4 with its size in front) into `mem`.
/// Refuses anything malformed (a hostile or broken peer) without panicking.
pub fn decode_batch(data: &[u8], mem: &mut [u8]) -> Result<usize, PagesError> {
    // The size in front is checked before anything is allocated for it.
    let (size, body) = match data {
        [a, b, c, d, body @ ..] => (u32::from_le_bytes([*a, *b, *c, *d]) as usize, body),
        _ => return Err(PagesError::TooShort),
    };
    if size > MAX_RAW {
        return Err(PagesError::TooLarge);
    }
    let raw = lz4_flex::block::decompress(body, size).map_err(PagesError::Decompress)?;
    let mut at = 0;
    let mut n = 0;
    while at < raw.len() {
        let head = raw.get(at..at + 5).ok_or(PagesError::CutHeader)?;
        let i = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let dst = mem
            .get_mut(i * PAGE..(i + 1) * PAGE)
            .ok_or(PagesError::Outside(i))?;
        at += 5;
        match head[4] {
            ZERO => dst.fill(0),
            DATA => {
                let src = raw.get(at..at + PAGE).ok_or(PagesError::CutPage)?;
                dst.copy_from_slice(src);
                at += PAGE;
            }
            kind => return Err(PagesError::UnknownKind { page: i, kind }),
        }
        n += 1;
    }
    Ok(n)
}

/// What the sender thread and the copier share.
#[derive(Default)]
struct Shared {
    /// Batches handed to the sender and not yet written.
    queued: AtomicU64,
    /// Page bytes written (before compression).
    raw: AtomicU64,
    /// Bytes written on the channel.
    wire: AtomicU64,
    /// Time spent compressing, in nanoseconds: what encoding the closing delta will cost.
    encode_ns: AtomicU64,
    /// Why sending failed (taken by the first to report it).
    failed: Mutex<Option<WireError>>,
    /// Set once sending failed.
    broken: AtomicBool,
}

impl Shared {
    /// Why sending failed: the sender's error, once (later calls: the sender stopped).
    fn failure(&self) -> CloneError {
        match self.failed.lock().ok().and_then(|mut f| f.take()) {
            Some(e) => CloneError::Send(e),
            None => CloneError::SenderStopped,
        }
    }
}

/// Where a clone stands, for `ftvm status` and the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// The current round.
    pub round: u32,
    /// Page bytes sent, before compression.
    pub sent_raw: u64,
    /// Bytes on the wire.
    pub sent_wire: u64,
    /// How fast the guest dirtied pages during the last round, bytes per second.
    pub dirty_rate: f64,
    /// Dirty bytes left, that the guest's pause would carry now.
    pub left: u64,
    /// How long stopping now would stop the guest (encoding what is dirty), once measured.
    pub expected_pause: Option<Duration>,
    /// How long output would then be held, until the backup has the closing delta (at the
    /// link's rate so far), once measured.
    pub expected_hold: Option<Duration>,
}

impl Progress {
    /// One line for humans.
    pub fn render(&self) -> String {
        format!(
            "round {}, {:.1} MB sent ({:.1} MB on the wire), dirty rate {:.1} MB/s, {:.1} MB left, expected pause {} (output held {})",
            self.round,
            self.sent_raw as f64 / 1e6,
            self.sent_wire as f64 / 1e6,
            self.dirty_rate / 1e6,
            self.left as f64 / 1e6,
            ms(self.expected_pause),
            ms(self.expected_hold),
        )
    }
}

/// Milliseconds, or `?` before anything was measured.
fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "?".into(),
        |d| format!("{:.0} ms", d.as_secs_f64() * 1e3),
    )
}

/// What a step did.
pub(crate) enum Step {
    /// Copying goes on.
    Copying,
    /// Everything but the closing delta is on the channel: stop the guest and start the log.
    Ready,
}

/// A live clone in progress, driven by the VM's run loop.
pub(crate) struct LiveClone {
    round: u32,
    list: Vec<usize>,
    pos: usize,
    tx: Option<SyncSender<Job>>,
    /// Non-shared disks being copied, and the disk rounds so far.
    disks: Vec<DiskCopy>,
    disk_round: u32,
    sender: Option<JoinHandle<Result<Box<dyn SendMsg>, ()>>>,
    shared: Arc<Shared>,
    peer: Option<Peer>,
    started: Instant,
    round_started: Instant,
    prev_round: usize,
    progress: Progress,
}

impl LiveClone {
    /// Starts copying `m`'s RAM to the connected backup (`w`, `peer`).
    pub fn start(
        m: &mut Machine,
        w: Box<dyn SendMsg>,
        peer: Peer,
        bandwidth: u64,
        disks: usize,
    ) -> Result<LiveClone, FtError> {
        // Non-shared disks: their writes are noted from here on, and every chunk is sent.
        let mut copies = Vec::new();
        for drive in 0..disks {
            let Some(slot) = m.disk_backend_mut(drive) else {
                return Err(CloneError::NoSuchDisk(drive).into());
            };
            let placeholder: Box<dyn BlockBackend> =
                Box::new(machine::virtio::block::MemBackend::default());
            let inner = std::mem::replace(slot, placeholder);
            let total = inner.len();
            let (dirty, on) = (Arc::default(), Arc::new(AtomicBool::new(true)));
            *slot = Box::new(TrackingDisk {
                inner,
                dirty: Arc::clone(&dirty),
                on: Arc::clone(&on),
            });
            copies.push(DiskCopy {
                drive,
                total,
                list: (0..total.div_ceil(DISK_CHUNK)).collect(),
                pos: 0,
                dirty,
                on,
            });
        }
        let mut idb = [0u8; 8];
        getrandom::getrandom(&mut idb).map_err(CloneError::Randomness)?;
        let id = u64::from_le_bytes(idb);
        let mem_size = m.ram().size();
        m.begin_live_copy(id);
        let shared = Arc::new(Shared::default());
        let (tx, rx) = sync_channel::<Job>(QUEUE as usize);
        let sh = Arc::clone(&shared);
        let mut w = w;
        let sender = std::thread::Builder::new()
            .name("clone-sender".into())
            .spawn(move || {
                let t0 = Instant::now();
                let mut total = 0u64;
                for job in rx {
                    let (msg, raw_len) = match job {
                        Job::Pages(round, raw) => {
                            let c0 = Instant::now();
                            let data = lz4_flex::block::compress_prepend_size(&raw);
                            let ns = u64::try_from(c0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                            sh.encode_ns.fetch_add(ns, Ordering::Relaxed);
                            let msg = Msg::Pages {
                                clone: id,
                                mem_size,
                                round,
                                data,
                            };
                            (msg, raw.len() as u64)
                        }
                        Job::Console(in_taken, out_base, tail) => (
                            Msg::Console {
                                in_taken,
                                out_base,
                                tail,
                            },
                            0,
                        ),
                        Job::Disk {
                            drive,
                            total,
                            offset,
                            data,
                        } => (
                            Msg::DiskChunk {
                                drive,
                                total,
                                offset,
                                data,
                            },
                            0,
                        ),
                    };
                    let wire = match &msg {
                        Msg::Pages { data, .. } | Msg::DiskChunk { data, .. } => data.len() as u64,
                        _ => 0,
                    };
                    let sent = w.send(&msg);
                    if let Err(e) = sent {
                        if let Ok(mut f) = sh.failed.lock() {
                            *f = Some(e);
                        }
                        sh.broken.store(true, Ordering::Relaxed);
                        return Err(());
                    }
                    // At most `bandwidth` bytes a second, on average since the start.
                    total += wire;
                    if bandwidth > 0 {
                        let due = Duration::from_secs_f64(total as f64 / bandwidth as f64);
                        if let Some(wait) = due.checked_sub(t0.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                    sh.raw.fetch_add(raw_len, Ordering::Relaxed);
                    sh.wire.fetch_add(wire, Ordering::Relaxed);
                    sh.queued.fetch_sub(1, Ordering::Relaxed);
                }
                Ok(w)
            })
            .map_err(CloneError::Thread)?;
        let pages = usize::try_from(mem_size).unwrap_or(usize::MAX) / PAGE;
        Ok(LiveClone {
            round: 0,
            list: (0..pages).collect(),
            pos: 0,
            tx: Some(tx),
            disks: copies,
            disk_round: 0,
            sender: Some(sender),
            shared,
            peer: Some(peer),
            started: Instant::now(),
            round_started: Instant::now(),
            prev_round: pages,
            progress: Progress::default(),
        })
    }

    /// The backup being cloned to.
    pub fn to(&self) -> Option<std::net::SocketAddr> {
        self.peer.as_ref().map(|p| p.to)
    }

    /// Where the clone stands.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// When it started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Copies the next batches (as many as the sender has room for) and decides when to stop.
    /// An error: the backup is gone or the channel failed; the VM runs on alone.
    pub fn step(&mut self, m: &mut Machine, timeout: Duration) -> Result<Step, FtError> {
        if self.shared.broken.load(Ordering::Relaxed) {
            return Err(self.shared.failure().into());
        }
        if let Some(p) = &self.peer {
            if p.live.silence() > timeout {
                return Err(CloneError::Silent(p.live.silence()).into());
            }
        }
        self.progress.sent_raw = self.shared.raw.load(Ordering::Relaxed);
        self.progress.sent_wire = self.shared.wire.load(Ordering::Relaxed);
        let queued = self.shared.queued.load(Ordering::Relaxed);
        if !self.disks_done(queued) {
            self.copy_disks(m)?;
            return Ok(Step::Copying);
        }
        if self.pos >= self.list.len() {
            return Ok(self.end_of_round(m, queued));
        }
        let tx = self.tx.as_ref().ok_or(CloneError::SenderStopped)?;
        let mut scanned = 0;
        let mut queued = queued;
        while queued < QUEUE && self.pos < self.list.len() && scanned < SCAN_PER_STEP {
            let mut raw = Vec::with_capacity(BATCH_PAGES * (PAGE + 5));
            let mut n = 0;
            while n < BATCH_PAGES && self.pos < self.list.len() && scanned < SCAN_PER_STEP {
                let end = (self.pos + BATCH_PAGES - n).min(self.list.len());
                let chunk = &self.list[self.pos..end];
                n += encode_batch(m.ram().as_slice(), chunk, self.round == 0, &mut raw);
                scanned += chunk.len();
                self.pos = end;
            }
            if n == 0 {
                continue;
            }
            self.shared.queued.fetch_add(1, Ordering::Relaxed);
            queued += 1;
            if tx.send(Job::Pages(self.round, raw)).is_err() {
                return Err(CloneError::SenderStopped.into());
            }
        }
        self.measure(m);
        Ok(Step::Copying)
    }

    /// Brings the progress up to date: what is left (the round's pages not yet copied and the
    /// pages dirtied since it began), how fast the guest dirties, the pause stopping now would
    /// cost at the link's rate so far.
    fn measure(&mut self, m: &Machine) {
        let dirty = m.dirty_page_count(DirtyConsumer::LiveCopy);
        let dirty_bytes = (dirty * PAGE) as f64;
        let sent = self.progress.sent_raw as f64;
        let round_left = self.list.len().saturating_sub(self.pos);
        self.progress.left = ((dirty + round_left) * PAGE) as u64;
        if sent > 0.0 {
            let link = sent / self.started.elapsed().as_secs_f64().max(1e-3);
            let encode_s = self.shared.encode_ns.load(Ordering::Relaxed) as f64 / 1e9;
            self.progress.expected_hold = Some(Duration::from_secs_f64(dirty_bytes / link));
            self.progress.expected_pause =
                Some(Duration::from_secs_f64(dirty_bytes * encode_s / sent));
        }
        self.progress.dirty_rate =
            (dirty * PAGE) as f64 / self.round_started.elapsed().as_secs_f64().max(1e-3);
    }

    /// A round's pages are all handed over: another round, or ready once the sender is done.
    fn end_of_round(&mut self, m: &mut Machine, queued: u64) -> Step {
        self.measure(m);
        let left = m.dirty_page_count(DirtyConsumer::LiveCopy);
        let not_shrinking = self.round >= 2 && left * 10 >= self.prev_round * 9;
        let converged = left <= 64
            || self
                .progress
                .expected_hold
                .is_some_and(|h| h <= TARGET_PAUSE)
            || self.round >= MAX_ROUNDS
            || not_shrinking;
        if converged {
            return if queued == 0 {
                Step::Ready
            } else {
                Step::Copying
            };
        }
        self.list = m.take_dirty_pages(DirtyConsumer::LiveCopy);
        self.prev_round = self.list.len();
        self.pos = 0;
        self.round += 1;
        self.progress.round = self.round;
        self.round_started = Instant::now();
        Step::Copying
    }

    /// Whether the disks' rounds are over (RAM comes next). A round ends when every chunk of
    /// its lists is handed over; then what the guest wrote meanwhile makes the next, until
    /// little is left or the rounds run out.
    fn disks_done(&mut self, queued: u64) -> bool {
        if self.disks.iter().any(|d| d.pos < d.list.len()) {
            return false;
        }
        if self.disk_round == u32::MAX {
            return true;
        }
        let dirty: usize = self
            .disks
            .iter()
            .map(|d| d.dirty.lock().map_or(0, |s| s.len()))
            .sum();
        if dirty <= DISK_LEFT || self.disk_round >= MAX_ROUNDS {
            // The rest goes at the pause (`flush_disks`).
            self.disk_round = u32::MAX;
            return queued == 0 || self.disks.is_empty();
        }
        self.disk_round += 1;
        for d in &mut self.disks {
            d.list = d.take_dirty();
            d.pos = 0;
        }
        false
    }

    /// Hands the sender the next disk chunks (as many as it has room for).
    fn copy_disks(&mut self, m: &mut Machine) -> Result<(), FtError> {
        let tx = self.tx.as_ref().ok_or(CloneError::SenderStopped)?;
        for d in &mut self.disks {
            while d.pos < d.list.len() && self.shared.queued.load(Ordering::Relaxed) < QUEUE {
                let chunk = d.list[d.pos];
                d.pos += 1;
                send_chunk(m, tx, &self.shared, d, chunk)?;
            }
        }
        Ok(())
    }

    /// At the pause: the disk chunks written since their last copy (before the log starts,
    /// so that the backup's images equal the primary's where the log begins); tracking stops
    /// and its layers come off the disks.
    pub fn flush_disks(&mut self, m: &mut Machine) -> Result<usize, FtError> {
        let sent = self.send_dirty(m);
        self.untrack(m);
        sent
    }

    fn send_dirty(&mut self, m: &mut Machine) -> Result<usize, FtError> {
        let tx = self.tx.as_ref().ok_or(CloneError::SenderStopped)?;
        let mut n = 0;
        for d in &self.disks {
            d.on.store(false, Ordering::Relaxed);
            for chunk in d.take_dirty() {
                send_chunk(m, tx, &self.shared, d, chunk)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Takes the tracking layers off the disks (the clone is over, done or given up), so that
    /// a VM cloned again and again keeps the backends it had.
    pub fn untrack(&self, m: &mut Machine) {
        for d in &self.disks {
            d.on.store(false, Ordering::Relaxed);
            if let Some(slot) = m.disk_backend_mut(d.drive) {
                if slot.describe().starts_with("tracking(") {
                    if let Some(inner) = slot.take_inner() {
                        *slot = inner;
                    }
                }
            }
        }
    }

    /// At the pause: where the console's streams stand (`ftvm::console::Endpoint::offsets`),
    /// so that the backup's endpoint continues them from the instruction its log starts at.
    /// (Sent at the start instead, the output of the guest during the copy would be missing
    /// from the backup's stream, and clients' offsets would be wrong after the next failover.)
    pub fn send_console(&mut self, offsets: (u64, u64, Vec<u8>)) -> Result<(), FtError> {
        let tx = self.tx.as_ref().ok_or(CloneError::SenderStopped)?;
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        tx.send(Job::Console(offsets.0, offsets.1, offsets.2))
            .map_err(|_| CloneError::SenderStopped.into())
    }

    /// The copy's pages are all written: the channel's writer and the backup, for
    /// [`crate::protect::start`] with `after_copy`.
    pub fn finish(mut self) -> Result<(Box<dyn SendMsg>, Peer), FtError> {
        drop(self.tx.take());
        let sender = self.sender.take().ok_or(CloneError::SenderStopped)?;
        let w = match sender.join() {
            Ok(Ok(w)) => w,
            Ok(Err(())) => return Err(self.shared.failure().into()),
            Err(_) => return Err(CloneError::SenderPanicked.into()),
        };
        let peer = self.peer.take().ok_or(CloneError::SenderStopped)?;
        Ok((w, peer))
    }
}

/// Reads one chunk of `d` and queues it for the sender.
fn send_chunk(
    m: &mut Machine,
    tx: &SyncSender<Job>,
    shared: &Shared,
    d: &DiskCopy,
    chunk: u64,
) -> Result<(), FtError> {
    let offset = chunk * DISK_CHUNK;
    let n = usize::try_from(d.total.saturating_sub(offset).min(DISK_CHUNK)).unwrap_or(0);
    let mut data = vec![0u8; n];
    let b = m
        .disk_backend_mut(d.drive)
        .ok_or(CloneError::NoSuchDisk(d.drive))?;
    b.read_at(offset, &mut data)
        .map_err(|source| CloneError::ReadDisk {
            drive: d.drive,
            source,
        })?;
    shared.queued.fetch_add(1, Ordering::Relaxed);
    let job = Job::Disk {
        drive: u32::try_from(d.drive).unwrap_or(u32::MAX),
        total: d.total,
        offset,
        data,
    };
    tx.send(job).map_err(|_| CloneError::SenderStopped.into())
}

impl Drop for LiveClone {
    /// A clone given up: the backup is let go (its channel closes, our heartbeat stops).
    fn drop(&mut self) {
        for d in &self.disks {
            d.on.store(false, Ordering::Relaxed);
        }
        if let Some(p) = self.peer.take() {
            p.abandon();
        }
        drop(self.tx.take());
    }
}

/// The backup's side: RAM as the clone's batches arrive.
#[derive(Default)]
pub struct Incoming {
    /// The clone's id and the RAM image, from the first batch on.
    copy: Option<(u64, Vec<u8>)>,
    /// Pages received.
    pub pages: u64,
}

impl Incoming {
    /// Takes one [`Msg::Pages`]. Everything is checked: a wrong size, another clone's id, a
    /// malformed batch end the clone with the reason.
    pub fn take(&mut self, clone: u64, mem_size: u64, data: &[u8]) -> Result<(), PagesError> {
        let copy = match &mut self.copy {
            Some(c) => c,
            None => {
                if mem_size == 0 || !mem_size.is_multiple_of(PAGE as u64) || mem_size > MAX_MEM {
                    return Err(PagesError::BadSize(mem_size));
                }
                let n = usize::try_from(mem_size).map_err(|_| PagesError::BadSize(mem_size))?;
                self.copy.insert((clone, vec![0u8; n]))
            }
        };
        let (id, mem) = copy;
        if *id != clone || mem.len() as u64 != mem_size {
            return Err(PagesError::TwoClones);
        }
        self.pages += decode_batch(data, mem)? as u64;
        Ok(())
    }

    /// The clone's id and RAM, once batches came.
    pub fn into_copy(self) -> Option<(u64, Vec<u8>)> {
        self.copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(pages: usize) -> Vec<u8> {
        let mut m = vec![0u8; pages * PAGE];
        for (i, b) in m.iter_mut().enumerate() {
            if (i / PAGE) % 3 == 1 {
                *b = (i % 251) as u8 + 1;
            }
        }
        m
    }

    #[test]
    fn batches_carry_pages_and_skip_zero_ones_in_round_zero() {
        let src = mem(12);
        let mut raw = Vec::new();
        let all: Vec<usize> = (0..12).collect();
        assert_eq!(encode_batch(&src, &all, true, &mut raw), 4);
        let mut dst = vec![0u8; src.len()];
        let n = decode_batch(&lz4_flex::block::compress_prepend_size(&raw), &mut dst).unwrap();
        assert_eq!(n, 4);
        assert_eq!(dst, src);
        // A later round carries zero pages too: a page the guest cleared is cleared.
        let mut dirty = vec![0xffu8; src.len()];
        let mut raw = Vec::new();
        assert_eq!(encode_batch(&src, &all, false, &mut raw), 12);
        decode_batch(&lz4_flex::block::compress_prepend_size(&raw), &mut dirty).unwrap();
        assert_eq!(dirty, src);
    }

    #[test]
    fn malformed_batches_are_refused_without_panicking() {
        let src = mem(4);
        let mut raw = Vec::new();
        encode_batch(&src, &[0, 1, 2, 3], false, &mut raw);
        let good = lz4_flex::block::compress_prepend_size(&raw);
        let mut dst = vec![0u8; 2 * PAGE];
        assert!(matches!(
            decode_batch(&good, &mut dst),
            Err(PagesError::Outside(_))
        ));
        let mut dst = vec![0u8; 4 * PAGE];
        for cut in [0, 3, 5, good.len() / 2] {
            assert!(
                decode_batch(&good[..cut], &mut dst).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad_kind = raw.clone();
        bad_kind[4] = 7;
        let e = decode_batch(&lz4_flex::block::compress_prepend_size(&bad_kind), &mut dst);
        assert!(e.unwrap_err().to_string().contains("unknown kind"));
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_batch(&huge, &mut dst).is_err());
        // Bit flips anywhere: an error or some pages, never a panic.
        for i in 0..good.len() {
            let mut f = good.clone();
            f[i] ^= 0x40;
            let _ = decode_batch(&f, &mut dst);
        }
    }

    #[test]
    fn incoming_checks_size_and_clone_id() {
        let src = mem(4);
        let mut raw = Vec::new();
        encode_batch(&src, &[1], true, &mut raw);
        let b = lz4_flex::block::compress_prepend_size(&raw);
        let mut inc = Incoming::default();
        assert!(inc.take(1, 12345, &b).is_err(), "not whole pages");
        let mut inc = Incoming::default();
        inc.take(1, (4 * PAGE) as u64, &b).unwrap();
        assert!(inc.take(2, (4 * PAGE) as u64, &b).is_err());
        assert!(inc.take(1, (8 * PAGE) as u64, &b).is_err());
        let (id, ram) = inc.into_copy().unwrap();
        assert_eq!(id, 1);
        assert_eq!(&ram[PAGE..2 * PAGE], &src[PAGE..2 * PAGE]);
    }
}
