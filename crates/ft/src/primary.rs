//! `ftvm primary`: builds the machine, connects to the backup (authenticated), sends the log's
//! prologue (the machine's shape and its initial snapshot, so the backup starts from exactly
//! this state), then runs the guest protected ([`crate::live`]).

use crate::console::Endpoint;
use crate::disk::HeldDisk;
use crate::heartbeat::{self, Liveness};
use crate::link::{Link, SharedBuf};
use crate::live::NoNet;
use crate::live::{LiveVm, Protection};
use crate::status::{Role, Status};
use crate::wire::{self, Hello};
use crate::{io, FtError, PairConfig};
use machine::{Backends, Machine, MachineConfig};
use rr::net::HeldNet;
use rr::{Outbox, Recorder};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the primary is reached and whom it protects itself with.
#[derive(Debug, Clone)]
pub struct PrimaryConfig {
    /// The backup's channel address (TCP for the log, UDP for heartbeats).
    pub backup: SocketAddr,
    /// Where this side's console endpoint listens.
    pub console: SocketAddr,
    /// How long to keep trying to reach the backup at start.
    pub connect_for: Duration,
    /// The host network the guest's network card is on, if it has one.
    pub netdev: Option<hostnet::NetdevConfig>,
    /// Shared disks: the backup reads the disk itself (`--disk-reads own`): the log carries
    /// each read's digest instead of its data, and held writes wait until the backup has
    /// replayed past them. Both sides must agree.
    pub disk_reads_own: bool,
}

/// Runs the primary; returns the exit code.
pub fn run(mcfg: &MachineConfig, pc: &PrimaryConfig, cfg: PairConfig) -> Result<i32, FtError> {
    if pc.disk_reads_own && cfg.non_shared {
        return Err(FtError::Setup(
            "--disk-reads own needs shared disks (--disk-mode shared): with non-shared disks \
             the backup's images are its own"
                .into(),
        ));
    }
    let out = Outbox::default();
    // The entropy source is the recorder's once protection starts (see `protect`).
    let mut m = Machine::new(
        mcfg,
        Backends {
            serial: Box::new(out.clone()),
            console: Box::new(out.clone()),
            entropy: Box::new(machine::virtio::OsEntropy::default()),
        },
    )?;
    if let Some(nd) = &pc.netdev {
        let net = hostnet::HostNet::open(nd).map_err(|e| FtError::Setup(e.to_string()))?;
        m.replace_net(net.into_backend())?;
    }
    let listener = TcpListener::bind(pc.console).map_err(io(format!(
        "cannot listen for console clients on {}",
        pc.console
    )))?;
    let ep = Endpoint::new(true, true);
    crate::metrics::attach(&ep, cfg.metrics)?;
    ep.serve(listener)
        .map_err(io("cannot start the console endpoint"))?;

    let generation = cfg
        .arbiter
        .current(&cfg.vm)
        .map_err(|e| FtError::Arbiter(e.to_string()))?
        .map_or(0, |(g, _)| g);
    let with = ProtectWith {
        readonly: mcfg.drives.iter().map(|d| d.readonly).collect(),
        mac: mcfg.net.map(|n| n.mac),
        local_ip: pc.console.ip(),
        disk_reads_own: pc.disk_reads_own,
    };
    let prot = protect(
        &mut m,
        &ep,
        &cfg,
        &with,
        pc.backup,
        pc.connect_for,
        generation,
        None,
    )?;
    tracing::info!(
        "ftvm primary: vm {} protected by the backup at {} (generation {generation}, arbiter {}); console on {}",
        cfg.vm,
        pc.backup,
        cfg.arbiter.describe(),
        pc.console
    );
    let status = Status::new(&cfg.vm, Role::Primary, pc.backup.to_string());
    LiveVm {
        m,
        out,
        ep,
        prot: Some(prot),
        cfg,
        status,
        with,
        cloning: None,
    }
    .run()
}

/// What a live VM needs to be protected (again): its shape, for the recorder, and its host.
#[derive(Debug, Clone)]
pub(crate) struct ProtectWith {
    /// The read-only flag of each drive.
    pub readonly: Vec<bool>,
    /// The network card's MAC, if it has one.
    pub mac: Option<[u8; 6]>,
    /// The address this host's heartbeat socket binds.
    pub local_ip: IpAddr,
    /// `--disk-reads own`.
    pub disk_reads_own: bool,
}

/// Protects the machine `m` by the backup waiting at `to`: [`connect`], then [`start`] with
/// a full snapshot of `m` as it stands (the guest waits while it is taken). A failure before
/// the log starts leaves the machine as it was; after that, nothing is held back (the caller
/// runs on alone).
#[allow(clippy::too_many_arguments)]
pub(crate) fn protect(
    m: &mut Machine,
    ep: &Endpoint,
    cfg: &PairConfig,
    with: &ProtectWith,
    to: SocketAddr,
    connect_for: Duration,
    generation: u64,
    console: Option<(u64, u64, Vec<u8>)>,
) -> Result<Protection, FtError> {
    let (w, peer) = connect(m, cfg, with, to, connect_for, generation, console, true)?;
    start(m, ep, cfg, with, w, peer, false)
}

/// A new backup, authenticated and told where the console stands, before the log starts.
pub(crate) struct Peer {
    /// Its channel address.
    pub to: SocketAddr,
    /// The channel's receiving half (acknowledgements).
    pub r: wire::MsgReader,
    /// The arbiter generation the pair will run under.
    pub generation: u64,
    /// Its heartbeats.
    pub live: Arc<Liveness>,
    /// Stops our heartbeat.
    pub hb_stop: Arc<AtomicBool>,
    /// A handle on the channel, to break it off.
    pub stream: TcpStream,
}

impl Peer {
    /// Gives the peer up: the heartbeat stops and the channel closes.
    pub fn abandon(&self) {
        self.hb_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Connects to the backup waiting at `to` and authenticates, sends the console's offsets
/// (`console`, for a guest that has already run) and, with non-shared disks and `sync_images`,
/// the images whole (the guest waits for those; a live clone copies them while it runs
/// instead); starts the heartbeat. Nothing of the machine changes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn connect(
    m: &mut Machine,
    cfg: &PairConfig,
    with: &ProtectWith,
    to: SocketAddr,
    connect_for: Duration,
    generation: u64,
    console: Option<(u64, u64, Vec<u8>)>,
    sync_images: bool,
) -> Result<(wire::MsgWriter, Peer), FtError> {
    let t0 = Instant::now();
    let stream = loop {
        match TcpStream::connect_timeout(&to, Duration::from_millis(500)) {
            Ok(s) => break s,
            Err(e) if t0.elapsed() < connect_for => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(FtError::Setup(format!(
                    "cannot reach the backup at {to} within {connect_for:?}: {e}"
                )))
            }
        }
    };
    let hello = Hello {
        vm: cfg.vm.clone(),
        generation,
        non_shared: cfg.non_shared,
        disk_reads_own: with.disk_reads_own,
    };
    let (mut w, r) = wire::connect_handshake(stream, &cfg.key, &hello)?;
    let stream = w
        .stream_clone()
        .map_err(io("cannot keep a handle on the channel"))?;
    if let Some((in_taken, out_base, tail)) = console {
        w.send(&wire::Msg::Console {
            in_taken,
            out_base,
            tail,
        })?;
    }
    if cfg.non_shared && sync_images {
        sync_disks(m, &mut w, with.readonly.len())?;
    }
    let udp = UdpSocket::bind(SocketAddr::new(with.local_ip, 0))
        .map_err(io("cannot open the heartbeat socket"))?;
    let (live, hb_stop) = heartbeat::start(udp, Some(to), cfg.key.clone(), 0, cfg.heartbeat)
        .map_err(io("cannot start the heartbeat"))?;
    Ok((
        w,
        Peer {
            to,
            r,
            generation,
            live,
            hb_stop,
            stream,
        },
    ))
}

/// Starts protection by a connected backup: a new recorder on `m`, whose log begins with the
/// machine's state — a full snapshot, or after a live copy (`after_copy`, see
/// [`crate::clone`]) the copy's closing delta — so the backup starts from exactly this state;
/// then the output rule holds disk writes, frames and console output until the backup has the
/// log. On a failure nothing is held back (the caller runs on alone).
pub(crate) fn start(
    m: &mut Machine,
    ep: &Endpoint,
    cfg: &PairConfig,
    with: &ProtectWith,
    w: wire::MsgWriter,
    peer: Peer,
    after_copy: bool,
) -> Result<Protection, FtError> {
    // From here on the machine's backends change.
    let buf = SharedBuf::default();
    let (mut rec, entropy) = Recorder::with_shape(buf.clone(), with.readonly.clone(), with.mac);
    if with.disk_reads_own {
        rec.log_disk_reads_by_digest();
    }
    let fail = |e: FtError| {
        peer.abandon();
        e
    };
    m.replace_entropy(entropy).map_err(|e| fail(e.into()))?;
    // Shared disks: the guest's writes wait for the backup's acknowledgement (crate::disk).
    let mut disks = Vec::new();
    for drive in (0..with.readonly.len()).filter(|_| !cfg.non_shared) {
        let Some(slot) = m.disk_backend_mut(drive) else {
            return Err(fail(FtError::Setup(format!(
                "the machine has no disk {drive}"
            ))));
        };
        let placeholder: Box<dyn machine::virtio::BlockBackend> =
            Box::new(machine::virtio::block::MemBackend::default());
        let held = HeldDisk::new(std::mem::replace(slot, placeholder));
        *slot = held.backend();
        disks.push(held);
    }
    let unhold = |disks: &[HeldDisk], net: &Option<HeldNet>| {
        for d in disks {
            d.unhold();
        }
        if let Some(n) = net {
            n.set_holding(false);
        }
    };
    let started = if after_copy {
        rec.start_after_live_copy(m)
    } else {
        rec.start(m)
    };
    if let Err(e) = started {
        unhold(&disks, &None);
        return Err(fail(e.into()));
    }
    // Transmitted frames are outputs: they wait for the backup like console output.
    let net = match m.net_backend_mut() {
        Some(slot) => {
            let held = HeldNet::new(std::mem::replace(slot, Box::new(NoNet)), rec.clock_tap());
            *slot = Box::new(held.clone());
            Some(held)
        }
        None => None,
    };
    let mut release: Vec<crate::link::Release> = Vec::new();
    // With --disk-reads own a write waits for the backup to replay past it (the backup reads
    // the disk itself), else for the backup to have the log.
    let mut on_replayed: Vec<crate::link::Release> = Vec::new();
    for d in &disks {
        let d = d.clone();
        let f: crate::link::Release = Box::new(move |h| d.release(h));
        if with.disk_reads_own {
            on_replayed.push(f);
        } else {
            release.push(f);
        }
    }
    if let Some(n) = &net {
        let n = n.clone();
        release.push(Box::new(move |h| {
            n.release_upto(h);
        }));
    }
    let Peer {
        r,
        generation,
        live,
        hb_stop,
        stream,
        ..
    } = peer;
    let link = match Link::start(w, r, ep.clone(), release, on_replayed, Arc::clone(&live)) {
        Ok(l) => l,
        Err(e) => {
            hb_stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            unhold(&disks, &net);
            return Err(io("cannot start the logging channel")(e));
        }
    };
    ep.hold_again();
    Ok(Protection {
        rec,
        buf,
        link,
        live,
        generation,
        sent_horizon: 0,
        hb_stop,
        disks,
        net,
    })
}

/// Non-shared disks: sends each image whole, before the log, so that the backup's starts equal.
fn sync_disks(m: &mut Machine, w: &mut wire::MsgWriter, drives: usize) -> Result<(), FtError> {
    const CHUNK: usize = 1 << 20;
    let t0 = Instant::now();
    let mut total_bytes = 0u64;
    for drive in 0..drives {
        let Some(d) = m.disk_backend_mut(drive) else {
            return Err(FtError::Setup(format!("the machine has no disk {drive}")));
        };
        let total = d.len();
        let mut off = 0u64;
        let mut buf = vec![0u8; CHUNK];
        while off < total {
            let n = usize::try_from((total - off).min(CHUNK as u64)).unwrap_or(CHUNK);
            d.read_at(off, &mut buf[..n])
                .map_err(io(format!("reading disk {drive} to sync the backup")))?;
            w.send(&wire::Msg::DiskChunk {
                drive: u32::try_from(drive).unwrap_or(u32::MAX),
                total,
                offset: off,
                data: buf[..n].to_vec(),
            })?;
            off += n as u64;
        }
        total_bytes += total;
    }
    tracing::info!(
        "ftvm primary: synced {drives} disk image(s) to the backup ({total_bytes} bytes) in {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
