//! `ftvm backup`: waits for an authenticated primary, replays its log as it arrives (never
//! running ahead of it: only to the horizon the primary has announced), acknowledges what it
//! has received, and — when the primary falls silent or its connection breaks — replays every
//! entry it received, wins the arbiter and goes live: the devices switch from the log to the
//! host, the console endpoint starts serving from the replayed output, and the guest runs on.

use crate::console::{Endpoint, OutputTail};
use crate::heartbeat::{self, Liveness};
use crate::live::LiveVm;
use crate::status::{Role, Status};
use crate::transport::{Channel, Hangup, RecvMsg, SendMsg};
use crate::wire::{self, Msg};
use crate::{io, FtError, PairConfig};
use arbiter::Claim;
use replay::{Decoder, Entry, Event};
use rr::{Outbox, Prologue, Replayer, DEV_UART};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the backup listens.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// The channel address: TCP for the log, UDP (same port) for heartbeats.
    pub listen: SocketAddr,
    /// Where this side's console endpoint listens (it serves once live).
    pub console: SocketAddr,
    /// The host network the guest's card joins at go-live, if it has one.
    pub netdev: Option<hostnet::NetdevConfig>,
    /// Shared disks: this side reads the disk itself where the log has a read's digest
    /// (`--disk-reads own`). The primary must say the same.
    pub disk_reads_own: bool,
}

/// What the receiver thread hands the replay loop.
enum Item {
    /// The log's header.
    Header(replay::LogHeader),
    /// Entries, the horizon they bring, and how far the shared disks are written.
    Log(Vec<Entry>, u64, u64),
    /// Where the console's input and output streams stand, and the recent output (a primary
    /// protected anew).
    Console(u64, u64, Vec<u8>),
    /// A live clone's RAM, complete but for the log's closing delta: the clone's id and the
    /// image.
    LiveCopy(u64, Vec<u8>),
    /// The connection ended: why.
    Gone(StreamBreak),
}

/// Counters the receiver shares.
#[derive(Default)]
struct RxState {
    entries: AtomicU64,
    bytes: AtomicU64,
    replayed: AtomicU64,
    /// The highest horizon received.
    horizon: AtomicU64,
}

/// The channel's writer, shared by the receiver (which acknowledges what it received) and,
/// with `--disk-reads own`, the replay loop (which says how far it has replayed: the
/// primary's held disk writes wait for that).
type AckWriter = Arc<std::sync::Mutex<Box<dyn SendMsg>>>;

/// Sends an acknowledgement of what has been received and replayed.
fn send_ack(w: &AckWriter, st: &RxState) -> Result<(), wire::WireError> {
    let ack = Msg::Ack {
        entries: st.entries.load(Ordering::Relaxed),
        horizon: st.horizon.load(Ordering::Relaxed),
        replayed: st.replayed.load(Ordering::Relaxed),
    };
    match w.lock() {
        Ok(mut w) => w.send(&ack),
        Err(_) => Err(wire::WireError::Closed),
    }
}

/// Why the log stream from the primary ended: the reason the backup reports at failover.
#[derive(Debug, thiserror::Error)]
pub enum StreamBreak {
    /// The channel failed, closed, or a message failed its tag.
    #[error("{0}")]
    Wire(#[from] wire::WireError),
    /// A message that belongs before the log came after it began.
    #[error("the primary sent {0} after the log began")]
    Late(&'static str),
    /// A disk image chunk could not be written here.
    #[error("{0}")]
    DiskSync(#[from] DiskSyncError),
    /// A live clone's pages were refused.
    #[error("a bad live clone from the primary: {0}")]
    BadClone(#[from] crate::clone::PagesError),
    /// The primary sent what only a backup sends.
    #[error("the primary sent an acknowledgement")]
    UnexpectedAck,
    /// The log stream does not decode.
    #[error("corrupt log from the primary: {0}")]
    Corrupt(#[from] replay::DecodeError),
    /// The horizon went backwards.
    #[error("the primary's horizon went back from {from} to {to}")]
    HorizonBack {
        /// The horizon before.
        from: u64,
        /// The one announced.
        to: u64,
    },
    /// Acknowledging failed.
    #[error("acknowledging: {0}")]
    Ack(#[source] wire::WireError),
    /// This side's replay loop is gone.
    #[error("the replay loop ended")]
    ReplayEnded,
}

/// Why a disk image chunk the primary sent (non-shared disks) could not be written here.
#[derive(Debug, thiserror::Error)]
pub enum DiskSyncError {
    /// The primary has more disks than this host.
    #[error("the primary syncs disk {0}, which this host has no --drive for")]
    NoDrive(u32),
    /// The image could not be opened, resized or written.
    #[error("cannot {what} the disk image {} to sync it: {source}", path.display())]
    Io {
        /// `open`, `resize`, `write to`.
        what: &'static str,
        /// The image.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A chunk past the image's end.
    #[error("a disk chunk past the end of disk {0}")]
    PastEnd(u32),
}

/// Writes a part of a disk image the primary sent (non-shared disks) into this host's image.
fn write_chunk(
    drives: &[machine::DriveConfig],
    drive: u32,
    total: u64,
    offset: u64,
    data: &[u8],
) -> Result<(), DiskSyncError> {
    use std::os::unix::fs::FileExt;
    let d = usize::try_from(drive)
        .ok()
        .and_then(|i| drives.get(i))
        .ok_or(DiskSyncError::NoDrive(drive))?;
    let io = |what| {
        let path = d.path.clone();
        move |source| DiskSyncError::Io { what, path, source }
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&d.path)
        .map_err(io("open"))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len != total {
        f.set_len(total).map_err(io("resize"))?;
    }
    if offset
        .checked_add(data.len() as u64)
        .is_none_or(|e| e > total)
    {
        return Err(DiskSyncError::PastEnd(drive));
    }
    f.write_all_at(data, offset).map_err(io("write to"))
}

/// The log receiver. With `own_reads` (`--disk-reads own`) it leaves the channel open when
/// the primary ends the log: the replay loop closes it once it has replayed to the end, so that
/// the primary, which waits for that, writes its last held writes only after the backup's last
/// reads of the disk.
#[allow(clippy::too_many_arguments)]
fn receive(
    mut r: Box<dyn RecvMsg>,
    w: AckWriter,
    hangup: Arc<dyn Hangup>,
    tx: std::sync::mpsc::SyncSender<Item>,
    st: Arc<RxState>,
    live: Arc<Liveness>,
    drives: Vec<machine::DriveConfig>,
    own_reads: bool,
) {
    let mut dec = Decoder::new();
    let mut horizon = 0u64;
    let mut have_header = false;
    let mut pages = Some(crate::clone::Incoming::default());
    let why = loop {
        let msg = match r.recv() {
            Ok(m) => m,
            Err(e) => break StreamBreak::Wire(e),
        };
        live.heard();
        if let Msg::DiskChunk {
            drive,
            total,
            offset,
            data,
        } = &msg
        {
            if horizon > 0 || have_header {
                break StreamBreak::Late("a disk image");
            }
            if let Err(e) = write_chunk(&drives, *drive, *total, *offset, data) {
                break e.into();
            }
            continue;
        }
        if let Msg::Console {
            in_taken,
            out_base,
            tail,
        } = msg
        {
            if horizon > 0 || have_header {
                break StreamBreak::Late("console offsets");
            }
            if tx.send(Item::Console(in_taken, out_base, tail)).is_err() {
                break StreamBreak::ReplayEnded;
            }
            continue;
        }
        if let Msg::Pages {
            clone,
            mem_size,
            data,
            ..
        } = &msg
        {
            let Some(inc) = &mut pages else {
                break StreamBreak::Late("RAM pages");
            };
            st.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            if let Err(e) = inc.take(*clone, *mem_size, data) {
                break e.into();
            }
            continue;
        }
        let Msg::Log {
            horizon: h,
            released,
            bytes,
        } = msg
        else {
            break StreamBreak::UnexpectedAck;
        };
        // The log begins: a live clone's RAM is complete but for the log's first delta.
        if let Some(copy) = pages.take().and_then(crate::clone::Incoming::into_copy) {
            if tx.send(Item::LiveCopy(copy.0, copy.1)).is_err() {
                break StreamBreak::ReplayEnded;
            }
        }
        st.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        dec.push(&bytes);
        if !have_header {
            match dec.header() {
                Ok(Some(h)) => {
                    have_header = true;
                    if tx.send(Item::Header(h.clone())).is_err() {
                        break StreamBreak::ReplayEnded;
                    }
                }
                Ok(None) => {}
                Err(e) => break e.into(),
            }
        }
        let mut entries = Vec::new();
        let failed = loop {
            match dec.next_entry() {
                Ok(Some(e)) => entries.push(e),
                Ok(None) => break None,
                Err(e) => break Some(StreamBreak::Corrupt(e)),
            }
        };
        if let Some(why) = failed {
            // Nothing of a bad frame is applied: the decoder checks a frame whole.
            let _ = tx.send(Item::Log(entries, horizon, 0));
            break why;
        }
        if h < horizon {
            break StreamBreak::HorizonBack {
                from: horizon,
                to: h,
            };
        }
        horizon = h;
        st.horizon.store(horizon, Ordering::Relaxed);
        st.entries
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        if tx.send(Item::Log(entries, horizon, released)).is_err() {
            break StreamBreak::ReplayEnded;
        }
        if let Err(e) = send_ack(&w, &st) {
            break StreamBreak::Ack(e);
        }
    };
    if !own_reads {
        hangup.close();
    }
    let _ = tx.send(Item::Gone(why));
}

/// Runs the backup; returns the exit code. `mcfg` gives the host's own view of the machine:
/// its `drives` are opened at go-live (the shared disk images); the rest comes from the
/// primary.
pub fn run(
    mcfg: &machine::MachineConfig,
    bc: &BackupConfig,
    cfg: PairConfig,
) -> Result<i32, FtError> {
    let ep = Endpoint::new(false);
    crate::metrics::attach(&ep, cfg.metrics, &cfg.console)?;
    let cl = TcpListener::bind(bc.console).map_err(io(format!(
        "cannot listen for console clients on {}",
        bc.console
    )))?;
    ep.serve(cl, cfg.console.clone())
        .map_err(io("cannot start the console endpoint"))?;
    let listener = TcpListener::bind(bc.listen).map_err(io(format!(
        "cannot listen for the primary on {}",
        bc.listen
    )))?;
    let udp = UdpSocket::bind(bc.listen).map_err(io(format!(
        "cannot open the heartbeat socket on {}",
        bc.listen
    )))?;
    if bc.disk_reads_own && cfg.non_shared {
        return Err(FtError::OwnReadsNeedSharedDisks);
    }
    let mut status = Status::new(&cfg.vm, Role::Backup, "(waiting)".into());
    ep.set_status(&status);
    tracing::info!(
        "ftvm backup: waiting for the primary on {} (console {} once live)",
        bc.listen,
        bc.console
    );
    let (hello, w, r, peer) = accept_primary(listener, &cfg, bc)?;
    let hb_key = heartbeat::SessionKey::new(&cfg.key, &r.binding());
    status.peer = peer.to_string();
    tracing::info!(
        "ftvm backup: primary {peer} authenticated (vm {}, generation {})",
        hello.vm,
        hello.generation
    );
    let (live, hb_stop) = heartbeat::start(udp, None, hb_key, 1, cfg.heartbeat)
        .map_err(io("cannot start the heartbeat"))?;
    let ch = Channel::tcp(w, r).map_err(io("cannot keep a handle on the channel"))?;
    let joined = Joined {
        ch,
        generation: hello.generation,
        live,
        hb_stop,
    };
    follow(joined, mcfg, bc, cfg, ep, status)
}

/// Primaries' connections waiting to authenticate at once (the longest-waiting one is closed
/// for a newcomer, [`crate::admission`]).
pub const MAX_PENDING_PRIMARIES: usize = 16;
/// Time a connection has from connecting to its authenticated hello.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

type Accepted = (wire::Hello, wire::MsgWriter, wire::MsgReader, SocketAddr);

/// Waits on `listener` for the first primary that authenticates under the pair's key and
/// protects our VM with our disk settings. Each connection's handshake runs on a thread of its
/// own, at most [`MAX_PENDING_PRIMARIES`] at once, each for at most [`HANDSHAKE_DEADLINE`]:
/// strangers that connect and say nothing, drip bytes or send garbage cannot keep the real
/// primary out (they were served one after another, 5 s each, before). Every refusal is logged
/// with the peer's address, rate-limited. The listener is closed once a primary is in.
pub(crate) fn accept_primary(
    listener: TcpListener,
    cfg: &PairConfig,
    bc: &BackupConfig,
) -> Result<Accepted, FtError> {
    let ours = wire::Hello {
        vm: cfg.vm.clone(),
        generation: 0,
        non_shared: cfg.non_shared,
        disk_reads_own: bc.disk_reads_own,
    };
    listener
        .set_nonblocking(true)
        .map_err(io("cannot poll the channel listener"))?;
    let adm =
        crate::admission::Admission::new("ftvm backup", MAX_PENDING_PRIMARIES, HANDSHAKE_DEADLINE);
    let (tx, rx) = std::sync::mpsc::channel::<Accepted>();
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&done);
    let (key, vm) = (cfg.key.clone(), cfg.vm.clone());
    std::thread::Builder::new()
        .name("channel-accept".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (s, peer) = match listener.accept() {
                    Ok(c) => c,
                    Err(_) => {
                        // Nothing waiting (or out of descriptors): look again shortly.
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                if s.set_nonblocking(false).is_err() {
                    continue;
                }
                let Some(ticket) = adm.admit(&s, peer) else {
                    continue;
                };
                let (adm, tx, key, vm, ours) = (
                    Arc::clone(&adm),
                    tx.clone(),
                    key.clone(),
                    vm.clone(),
                    ours.clone(),
                );
                let _ = std::thread::Builder::new()
                    .name("channel-handshake".into())
                    .spawn(move || {
                        // Disk settings that differ are refused with the reason (the primary
                        // says it too).
                        let check = |h: &wire::Hello| {
                            (h.vm == vm && h.describe_disks() != ours.describe_disks()).then(|| {
                                format!(
                                    "the primary's disks are set up with {}, the backup's \
                                         with {} (both sides must agree)",
                                    h.describe_disks(),
                                    ours.describe_disks()
                                )
                            })
                        };
                        let why = match wire::accept_handshake_checked(s, &key, check) {
                            Ok((h, w, r)) if h.vm == vm => {
                                ticket.authenticated();
                                let _ = tx.send((h, w, r, peer));
                                return;
                            }
                            Ok((h, ..)) => {
                                format!("it protects VM {:?}, we back up {:?}", h.vm, vm)
                            }
                            Err(wire::WireError::Refused(why)) => why,
                            Err(e) => e.to_string(),
                        };
                        adm.log.refused(peer, peer.ip(), &why);
                    });
            }
        })
        .map_err(io("cannot start the channel listener"))?;
    let first = rx.recv();
    done.store(true, Ordering::Relaxed);
    first.map_err(|_| FtError::Io {
        what: "accepting the primary".into(),
        source: std::io::Error::other("the channel listener stopped"),
    })
}

/// A primary that joined: its authenticated channel, the generation it runs under, and its
/// signs of life.
pub(crate) struct Joined {
    pub ch: Channel,
    pub generation: u64,
    pub live: Arc<Liveness>,
    /// Stops our heartbeat (when the primary is declared gone).
    pub hb_stop: Arc<AtomicBool>,
}

/// The backup once its primary joined, over any transport ([`crate::transport`]): receives
/// and acknowledges the log, replays it, and goes live when the primary is gone.
pub(crate) fn follow(
    joined: Joined,
    mcfg: &machine::MachineConfig,
    bc: &BackupConfig,
    cfg: PairConfig,
    ep: Endpoint,
    status: Status,
) -> Result<i32, FtError> {
    let Joined {
        ch,
        generation,
        live,
        hb_stop,
    } = joined;
    let Channel {
        tx: w,
        rx: r,
        hangup,
    } = ch;
    let st = Arc::new(RxState::default());
    let (tx, rx) = sync_channel(4096);
    let acks: AckWriter = Arc::new(std::sync::Mutex::new(w));
    {
        let (st, live) = (Arc::clone(&st), Arc::clone(&live));
        let drives = mcfg.drives.clone();
        let (w, own) = (Arc::clone(&acks), bc.disk_reads_own);
        let hangup = Arc::clone(&hangup);
        std::thread::Builder::new()
            .name("log-receiver".into())
            .spawn(move || receive(r, w, hangup, tx, st, live, drives, own))
            .map_err(io("cannot start the log receiver"))?;
    }
    Backup {
        rx,
        st,
        live,
        ep,
        cfg,
        status,
        generation,
        channel: hangup,
        hb_stop,
        mcfg: mcfg.clone(),
        netdev: bc.netdev.clone(),
        own_reads: bc.disk_reads_own.then_some(acks),
        console_ip: bc.console.ip(),
    }
    .run()
}

struct Backup {
    rx: Receiver<Item>,
    st: Arc<RxState>,
    live: Arc<Liveness>,
    ep: Endpoint,
    cfg: PairConfig,
    status: Status,
    generation: u64,
    /// The channel, to close it when the primary is declared gone (a primary that was only
    /// frozen then finds its link broken and asks the arbiter, which it then loses).
    channel: Arc<dyn Hangup>,
    /// Stops the heartbeat.
    hb_stop: Arc<AtomicBool>,
    /// This host's machine options (its disks).
    mcfg: machine::MachineConfig,
    /// This host's network for the guest's card.
    netdev: Option<hostnet::NetdevConfig>,
    /// With `--disk-reads own`: the channel's writer, to say how far the replay has got.
    own_reads: Option<AckWriter>,
    /// This host's address (heartbeats bind it once live and protected again).
    console_ip: std::net::IpAddr,
}

/// The longest silence from the primary a backup allows before the initial snapshot has
/// arrived (see `after_slice`).
const PAIRING_SILENCE: Duration = Duration::from_secs(10);

/// The replay side's progress.
struct Progress {
    prologue: Option<Prologue>,
    rp: Option<Replayer>,
    horizon: u64,
    /// Console input bytes replayed (the endpoint's input offset at go-live).
    in_taken: u64,
    tail: OutputTail,
    ended: bool,
    out: Outbox,
    /// Non-shared disks: this host's images, handed to the replayer once it exists.
    local_disks: Option<Vec<Box<dyn machine::virtio::BlockBackend>>>,
    /// Shared disks with `--disk-reads own`: the images the replayer reads from.
    read_disks: Option<Vec<Box<dyn machine::virtio::BlockBackend>>>,
    /// A live clone's RAM (its id and image), which the log's first state completes.
    live_copy: Option<(u64, Vec<u8>)>,
}

impl Progress {
    fn apply(&mut self, entries: Vec<Entry>, horizon: u64, released: u64) -> Result<(), FtError> {
        self.apply_entries(entries, horizon)?;
        if let Some(rp) = &mut self.rp {
            rp.confirm_disk_writes(released);
        }
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>, horizon: u64) -> Result<(), FtError> {
        for e in entries {
            if let Some(rp) = &mut self.rp {
                if let Event::DeviceCompletion {
                    device: DEV_UART,
                    data,
                    ..
                } = &e.event
                {
                    self.in_taken += data.len() as u64;
                }
                let end = rp.apply(e)?;
                self.tail.push(&self.out.take());
                if end {
                    self.ended = true;
                    return Ok(());
                }
                continue;
            }
            let p = self.prologue.as_mut().ok_or(FtError::NoLogHeader)?;
            if p.feed(&e)? {
                let p = self.prologue.take().ok_or(FtError::NoLogHeader)?;
                let mut rp = match self.live_copy.take() {
                    Some((id, ram)) => p.into_replayer_onto(self.out.clone(), id, &ram)?,
                    None => p.into_replayer(self.out.clone())?,
                };
                match self.local_disks.take() {
                    Some(local) => rp.set_local_disks(local)?,
                    // Shared disks: the writes the primary has not confirmed are re-issued at
                    // go-live.
                    None => rp.keep_disk_writes(),
                }
                if let Some(images) = self.read_disks.take() {
                    rp.set_read_disks(images)?;
                }
                self.rp = Some(rp);
            }
        }
        self.horizon = self.horizon.max(horizon);
        Ok(())
    }

    /// The console's streams stand here (the guest ran before this log began): input taken,
    /// and the recent output from offset `out_base` on, which the replayed output follows.
    fn console_at(&mut self, in_taken: u64, out_base: u64, tail: &[u8]) {
        self.in_taken = in_taken;
        if self.tail.bytes.is_empty() {
            self.tail.base = out_base;
            self.tail.push(tail);
        }
    }

    fn catch_up(&mut self) -> Result<(), FtError> {
        if let Some(rp) = &mut self.rp {
            if !self.ended {
                rp.run_to(self.horizon)?;
                self.tail.push(&self.out.take());
            }
        }
        Ok(())
    }
}

/// How the backup's replay ended.
enum Ended {
    /// The primary ended the log (or the guest powered off): the exit code.
    Stopped(i32),
    /// The primary is lost: why.
    Lost(String),
}

/// The backup's part of the replay loop: the log comes from the receiver thread, the output
/// goes to the console tail, the progress to the primary (with `--disk-reads own`), and the
/// primary's silence ends it.
struct Replay<'a> {
    b: &'a mut Backup,
    p: &'a mut Progress,
    /// This host's disk images are open (non-shared disks, or `--disk-reads own`).
    opened: bool,
    last_status: Instant,
}

impl hostrun::Replaying for Replay<'_> {
    type End = Ended;
    type Error = FtError;

    fn take_input(&mut self, timeout: Duration) -> Result<hostrun::Turn<Ended>, FtError> {
        let (b, p) = (&mut *self.b, &mut *self.p);
        let item = match b.rx.recv_timeout(timeout) {
            Ok(i) => Some(i),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                return Ok(hostrun::Turn::End(Ended::Lost(
                    "the log receiver stopped".to_string(),
                )))
            }
        };
        match item {
            Some(Item::Header(h)) => {
                // The disk images (non-shared) arrived before the log: open them now.
                if b.cfg.non_shared && !self.opened {
                    self.opened = true;
                    p.local_disks = Some(hostblk::open_disks(&b.mcfg)?);
                }
                // --disk-reads own: the shared images, read where the log has digests.
                if b.own_reads.is_some() && !self.opened {
                    self.opened = true;
                    // Opened read-only: this side never writes through them.
                    let mut ro = b.mcfg.clone();
                    ro.drives.iter_mut().for_each(|d| d.readonly = true);
                    p.read_disks = Some(hostblk::open_disks(&ro)?);
                }
                p.prologue = Some(Prologue::new(&h))
            }
            Some(Item::Log(entries, horizon, released)) => p.apply(entries, horizon, released)?,
            Some(Item::Console(in_taken, out_base, tail)) => {
                p.console_at(in_taken, out_base, &tail)
            }
            Some(Item::LiveCopy(id, ram)) => p.live_copy = Some((id, ram)),
            Some(Item::Gone(why)) => return Ok(hostrun::Turn::End(Ended::Lost(why.to_string()))),
            None => {}
        }
        if p.ended {
            return Ok(hostrun::Turn::End(Ended::Stopped(b.stop_with_primary(p))));
        }
        Ok(hostrun::Turn::Go)
    }

    fn replayer(&mut self) -> Option<(&mut Replayer, u64)> {
        // As far as the primary has announced.
        let horizon = self.p.horizon;
        self.p.rp.as_mut().map(|rp| (rp, horizon))
    }

    fn after_slice(&mut self) -> Result<hostrun::Turn<Ended>, FtError> {
        let (b, p) = (&mut *self.b, &mut *self.p);
        if let Some(rp) = &p.rp {
            p.tail.push(&p.out.take());
            let before = b.st.replayed.swap(rp.icount(), Ordering::Relaxed);
            // --disk-reads own: the primary's held writes wait for this.
            if let (Some(w), true) = (&b.own_reads, rp.icount() > before) {
                let _ = send_ack(w, &b.st);
            }
        }
        // Before the initial snapshot has arrived there is nothing to take over, so a silence
        // there only ends the pairing: it is allowed far longer than the heartbeat's timeout,
        // since a primary on a loaded host may send a large snapshot or disk slowly (a primary
        // that died closes the channel, which ends it at once).
        let allowed = if p.rp.is_some() {
            b.cfg.heartbeat.timeout
        } else {
            b.cfg.heartbeat.timeout.max(PAIRING_SILENCE)
        };
        if b.live.silence() > allowed {
            return Ok(hostrun::Turn::End(Ended::Lost(format!(
                "nothing heard from the primary for {:?}",
                b.live.silence()
            ))));
        }
        if self.last_status.elapsed() >= Duration::from_millis(200) {
            self.last_status = Instant::now();
            b.update_status(p);
        }
        Ok(hostrun::Turn::Go)
    }
}

impl Backup {
    fn run(mut self) -> Result<i32, FtError> {
        let mut p = Progress {
            prologue: None,
            rp: None,
            horizon: 0,
            in_taken: 0,
            tail: OutputTail::default(),
            ended: false,
            out: Outbox::default(),
            local_disks: None,
            read_disks: None,
            live_copy: None,
        };
        // The replay loop is the host runner's ([`hostrun::replay`]); what is the backup's
        // own is in [`Replay`].
        let end = hostrun::replay(&mut Replay {
            b: &mut self,
            p: &mut p,
            opened: false,
            last_status: Instant::now(),
        })?;
        match end {
            Ended::Stopped(code) => Ok(code),
            Ended::Lost(why) => self.failover(p, why),
        }
    }

    fn update_status(&mut self, p: &Progress) {
        let s = &mut self.status;
        s.icount = p.rp.as_ref().map_or(0, |r| r.icount());
        s.replayed = s.icount;
        s.sent_entries = self.st.entries.load(Ordering::Relaxed);
        s.sent_bytes = self.st.bytes.load(Ordering::Relaxed);
        // Before the prologue is in there is no machine yet: its clock is the nominal one.
        let clock =
            p.rp.as_ref()
                .map(|r| r.machine().clock())
                .unwrap_or_default();
        s.guest_time = machine::clock::duration_of_ticks(clock.raw(s.icount));
        s.lag = clock.duration_of(p.horizon.saturating_sub(s.icount));
        s.peer_silence = self.live.silence();
        s.max_gap = self.live.max_gap();
        s.heartbeats_refused = self.live.rejected.load(Ordering::Relaxed);
        s.heartbeats_received = self.live.received.load(Ordering::Relaxed);
        self.ep.set_status(s);
    }

    fn stop_with_primary(&self, p: &Progress) -> i32 {
        let how = match p.rp.as_ref().and_then(|r| r.power()) {
            Some(machine::PowerEvent::PowerOff) => "the guest powered off",
            _ => "the primary ended the log (operator power off)",
        };
        tracing::info!("ftvm backup: {how}: stopping too");
        // --disk-reads own: the primary waits for this (everything replayed) to write its last
        // held writes.
        self.channel.close();
        self.ep.close();
        0
    }

    /// Applies every item the reader has queued; the first break of the stream among them.
    fn take_received(&self, p: &mut Progress) -> Result<Option<String>, FtError> {
        let mut gone = None;
        while let Ok(item) = self.rx.try_recv() {
            match item {
                Item::Log(entries, horizon, released) => p.apply(entries, horizon, released)?,
                Item::Header(h) => p.prologue = Some(Prologue::new(&h)),
                Item::Console(in_taken, out_base, tail) => p.console_at(in_taken, out_base, &tail),
                Item::LiveCopy(id, ram) => p.live_copy = Some((id, ram)),
                Item::Gone(why) => {
                    gone.get_or_insert(why.to_string());
                }
            }
        }
        Ok(gone)
    }

    fn failover(mut self, mut p: Progress, why: String) -> Result<i32, FtError> {
        let t0 = Instant::now();
        // Everything received is replayed before anything else. A break in the stream that the
        // loop had not reached yet (a corrupt frame queued behind log it was still replaying)
        // happened before the silence was noticed: it is the reason to report.
        let why = self.take_received(&mut p)?.unwrap_or(why);
        tracing::warn!(event = "primary_lost", reason = %why, "ftvm backup: primary lost: {why}");
        // From now on nothing the old primary sends counts.
        self.channel.close();
        self.hb_stop.store(true, Ordering::Relaxed);
        // What arrived meanwhile; the reader's own end (the shutdown) is no news.
        self.take_received(&mut p)?;
        if p.ended {
            return Ok(self.stop_with_primary(&p));
        }
        p.catch_up()?;
        let Some(rp) = p.rp.take() else {
            tracing::warn!("ftvm backup: the primary died before its initial snapshot arrived: nothing to take over");
            return Ok(3);
        };
        let generation = self.generation + 1;
        let claim = crate::claim::claim(&self.cfg, generation, "backup");
        match claim {
            Ok(Claim::Won) => {}
            Ok(Claim::Lost { winner }) => {
                tracing::warn!(
                    "ftvm backup: the arbiter gave generation {generation} to {winner}: stopping"
                );
                self.ep.close();
                return Ok(3);
            }
            Err(e) => {
                tracing::warn!("ftvm backup: the arbiter failed ({e}): not going live");
                self.ep.close();
                return Ok(3);
            }
        }
        let mut rp = rp;
        let reissued = if self.mcfg.drives.is_empty() {
            (0, 0)
        } else {
            let disks = hostblk::open_disks(&self.mcfg)?;
            rp.set_live_disks(disks)?;
            // Shared disks: the writes the old primary held and may not have made. (With
            // non-shared disks every replayed write is already on this host's image.)
            rp.reissue_disk_writes()?
        };
        if reissued.0 > 0 {
            tracing::info!(
                "ftvm backup: re-issued {} disk writes ({} bytes) the primary had not confirmed",
                reissued.0,
                reissued.1
            );
        }
        if let (Some(nd), Some(card)) = (&self.netdev, rp.config().net) {
            let mut net = connect_net(nd)?;
            // Switches (and passt) learn at once where the guest's MAC lives now.
            net.transmit(&rr::rarp_announce(card.mac));
            rp.set_live_net(net)?;
        }
        let with = crate::protect::ProtectWith {
            readonly: rp.config().drives.iter().map(|d| d.readonly).collect(),
            net: rp.config().net,
            local_ip: self.console_ip,
            disk_reads_own: self.own_reads.is_some(),
        };
        let icount = rp.icount();
        let (m, _idle) = rp.go_live();
        // Requests the guest made that the old primary had not completed (as far as the log
        // goes): they complete on this host's disks now.
        let in_flight = m.io_in_flight();
        let tail: Vec<u8> = p.tail.bytes.iter().copied().collect();
        self.ep.start_serving(p.in_taken, &tail, p.tail.base);
        let took = t0.elapsed();
        tracing::info!(
            event = "went_live",
            icount,
            generation,
            in_flight,
            ms = took.as_secs_f64() * 1e3,
            "ftvm backup: went live at icount {icount} (generation {generation}) {:.1} ms after the failure was detected, {in_flight} disk requests in flight",
            took.as_secs_f64() * 1e3
        );
        self.status.role = Role::Primary;
        self.status.protected = false;
        self.status.last_failover = Some(format!(
            "went live at icount {icount}, {:.1} ms after detecting: {why}",
            took.as_secs_f64() * 1e3
        ));
        let gate = {
            let ep = self.ep.clone();
            crate::gate::Gate::new(Box::new(move |b: &[u8]| ep.publish(b)))
        };
        LiveVm {
            m,
            out: p.out,
            ep: self.ep,
            gate,
            prot: None,
            cfg: self.cfg,
            status: self.status,
            with,
            cloning: None,
        }
        .run()
    }
}

/// Joins the host network at go-live. A network process that serves one VM at a time (passt)
/// takes the new primary once it has noticed that the old one's connection is gone, so this
/// tries for a while.
fn connect_net(
    nd: &hostnet::NetdevConfig,
) -> Result<Box<dyn machine::virtio::NetBackend>, FtError> {
    let t0 = Instant::now();
    loop {
        match hostnet::HostNet::open(nd) {
            Ok(n) => return Ok(n.into_backend()),
            Err(source) if t0.elapsed() > Duration::from_secs(5) => {
                return Err(FtError::HostNet {
                    what: "going live on the network",
                    source,
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Key;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn config() -> (PairConfig, BackupConfig) {
        let cfg = PairConfig {
            vm: "vm0".into(),
            me: "backup".into(),
            key: Key::random(),
            console: crate::console::Keys::operator(Key::random()),
            arbiter: Arc::new(arbiter::MemArbiter::new()),
            heartbeat: heartbeat::HeartbeatConfig::default(),
            max_lag: Duration::from_secs(1),
            buffer: 1 << 20,
            non_shared: false,
            metrics: None,
            clone_bandwidth: 0,
            arbiter_patience: crate::claim::DEFAULT_PATIENCE,
        };
        let bc = BackupConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            console: "127.0.0.1:0".parse().unwrap(),
            netdev: None,
            disk_reads_own: false,
        };
        (cfg, bc)
    }

    /// Hundreds of connections that say nothing, garbage, a stranger without the key and a
    /// primary of another VM, all before the real primary: it still joins at once (they were
    /// served one by one, 5 s each, before), and the listener's strangers are all let go.
    #[test]
    fn idle_garbage_and_strangers_do_not_keep_the_primary_out() {
        let (cfg, bc) = config();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let key = cfg.key.clone();
        let waiting = std::thread::spawn(move || accept_primary(l, &cfg, &bc));
        let mut idle: Vec<TcpStream> = (0..MAX_PENDING_PRIMARIES * 20)
            .map(|_| TcpStream::connect(a).unwrap())
            .collect();
        for _ in 0..20 {
            let mut g = TcpStream::connect(a).unwrap();
            let _ = g.write_all(b"GET / HTTP/1.0\r\n\r\n\x00\xff");
        }
        let hello = |vm: &str| wire::Hello {
            vm: vm.into(),
            generation: 3,
            non_shared: false,
            disk_reads_own: false,
        };
        let stranger = wire::connect_handshake(
            TcpStream::connect(a).unwrap(),
            &Key::random(),
            &hello("vm0"),
        );
        assert!(stranger.is_err(), "a stranger paired");
        let other_vm = wire::connect_handshake(TcpStream::connect(a).unwrap(), &key, &hello("vm9"));
        drop(other_vm);
        let t0 = Instant::now();
        let primary = wire::connect_handshake(TcpStream::connect(a).unwrap(), &key, &hello("vm0"));
        assert!(primary.is_ok(), "{:?}", primary.err());
        let (h, ..) = waiting.join().unwrap().unwrap();
        assert_eq!((h.vm.as_str(), h.generation), ("vm0", 3));
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the primary waited {:?}",
            t0.elapsed()
        );
        // The idle connections are all closed: most at once (over the cap), the rest at the
        // deadline or when the listener closed.
        for c in idle.iter_mut() {
            c.set_read_timeout(Some(HANDSHAKE_DEADLINE * 2)).unwrap();
            let mut b = [0u8; 1];
            assert!(matches!(c.read(&mut b), Ok(0) | Err(_)));
        }
    }
}
