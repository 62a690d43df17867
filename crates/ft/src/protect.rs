//! Protecting a running machine: connecting to a new backup ([`connect`]), then starting
//! the log and the output rule on the machine ([`start`]) — what `ftvm primary` does at power-on
//! ([`protect`]) and what a VM running alone does again after a live clone (the live clone, `clone.rs`).
//! Only the pieces: the run loop that carries a protected VM on is `live.rs`.

use crate::gate::Gate;
use crate::heartbeat::{self, Liveness};
use crate::link::{Link, SharedBuf};
use crate::transport::{Channel, Hangup, RecvMsg, SendMsg};
use crate::wire::{self, Hello};
use crate::{io, FtError, PairConfig};
use machine::Machine;
use rr::Recorder;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What protects a primary.
pub(crate) struct Protection {
    pub rec: Recorder<SharedBuf>,
    pub buf: SharedBuf,
    pub link: Link,
    pub live: Arc<Liveness>,
    /// The arbiter generation the pair runs under.
    pub generation: u64,
    /// The horizon of the last message sent.
    pub sent_horizon: u64,
    /// Stops the heartbeat when protection ends.
    pub hb_stop: Arc<std::sync::atomic::AtomicBool>,
    /// When the primary sent which horizon, for the backup's lag.
    pub lag: crate::throttle::LagClock,
}

/// What a live VM needs to be protected (again): its shape, for the recorder, and its host.
#[derive(Debug, Clone)]
pub(crate) struct ProtectWith {
    /// The read-only flag of each drive.
    pub readonly: Vec<bool>,
    /// The network card (MAC and MTU), if it has one.
    pub net: Option<machine::NetConfig>,
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
    gate: &Gate,
    cfg: &PairConfig,
    with: &ProtectWith,
    to: SocketAddr,
    connect_for: Duration,
    generation: u64,
    console: Option<(u64, u64, Vec<u8>)>,
) -> Result<Protection, FtError> {
    let (w, peer) = connect(m, cfg, with, to, connect_for, generation, console, true)?;
    start(m, gate, cfg, with, w, peer, false)
}

/// A new backup, authenticated and told where the console stands, before the log starts.
pub(crate) struct Peer {
    /// Its channel address.
    pub to: SocketAddr,
    /// The channel's receiving half (acknowledgements).
    pub rx: Box<dyn RecvMsg>,
    /// The arbiter generation the pair will run under.
    pub generation: u64,
    /// Its heartbeats.
    pub live: Arc<Liveness>,
    /// Stops our heartbeat.
    pub hb_stop: Arc<AtomicBool>,
    /// A handle on the channel, to break it off.
    pub hangup: Arc<dyn Hangup>,
}

impl Peer {
    /// Gives the peer up: the heartbeat stops and the channel closes.
    pub fn abandon(&self) {
        self.hb_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.hangup.close();
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
) -> Result<(Box<dyn SendMsg>, Peer), FtError> {
    let t0 = Instant::now();
    let stream = loop {
        match TcpStream::connect_timeout(&to, Duration::from_millis(500)) {
            Ok(s) => break s,
            Err(e) if t0.elapsed() < connect_for => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(source) => {
                return Err(FtError::BackupUnreachable {
                    to,
                    within: connect_for,
                    source,
                })
            }
        }
    };
    let hello = Hello {
        vm: cfg.vm.clone(),
        generation,
        non_shared: cfg.non_shared,
        disk_reads_own: with.disk_reads_own,
    };
    let (w, r) = wire::connect_handshake(stream, &cfg.key, &hello)?;
    let hb_key = heartbeat::SessionKey::new(&cfg.key, &r.binding());
    let Channel {
        tx: mut w,
        rx,
        hangup,
    } = Channel::tcp(w, r).map_err(io("cannot keep a handle on the channel"))?;
    if let Some((in_taken, out_base, tail)) = console {
        w.send(&wire::Msg::Console {
            in_taken,
            out_base,
            tail,
        })?;
    }
    // Heartbeats from here on, so that the backup hears this side during a long disk sync.
    let udp = UdpSocket::bind(SocketAddr::new(with.local_ip, 0))
        .map_err(io("cannot open the heartbeat socket"))?;
    let (live, hb_stop) = heartbeat::start(udp, Some(to), hb_key, 0, cfg.heartbeat)
        .map_err(io("cannot start the heartbeat"))?;
    if cfg.non_shared && sync_images {
        if let Err(e) = sync_disks(m, w.as_mut(), with.readonly.len()) {
            hb_stop.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(e);
        }
    }
    Ok((
        w,
        Peer {
            to,
            rx,
            generation,
            live,
            hb_stop,
            hangup,
        },
    ))
}

/// Starts protection by a connected backup: a new recorder on `m`, whose log begins with the
/// machine's state — a full snapshot, or after a live copy (`after_copy`, see
/// `clone.rs`) the copy's closing delta — so the backup starts from exactly this state;
/// then the output gate ([`crate::gate`]) holds disk writes, frames and console output until
/// the backup has the log. On a failure nothing is held back (the caller runs on alone).
pub(crate) fn start(
    m: &mut Machine,
    gate: &Gate,
    cfg: &PairConfig,
    with: &ProtectWith,
    w: Box<dyn SendMsg>,
    peer: Peer,
    after_copy: bool,
) -> Result<Protection, FtError> {
    // From here on the machine's backends change.
    let buf = SharedBuf::default();
    let (mut rec, entropy) = Recorder::with_shape(buf.clone(), with.readonly.clone(), with.net);
    if with.disk_reads_own {
        rec.log_disk_reads_by_digest();
    }
    let fail = |e: FtError| {
        peer.abandon();
        e
    };
    m.replace_entropy(entropy).map_err(|e| fail(e.into()))?;
    let shared = if cfg.non_shared {
        0
    } else {
        with.readonly.len()
    };
    let layers = Layers {
        shared,
        net: with.net.is_some(),
        writes_after_replay: with.disk_reads_own,
    };
    layers.put_on(m, gate, &mut rec, after_copy).map_err(fail)?;
    let Peer {
        rx,
        generation,
        live,
        hb_stop,
        hangup,
        ..
    } = peer;
    let release: crate::link::Release = {
        let gate = gate.clone();
        let lease = crate::gate::lease_for(cfg.heartbeat.timeout);
        Box::new(move |horizon, replayed, sent| {
            gate.renew_lease(sent.map(|t| t + lease));
            gate.replayed_to(replayed);
            gate.release(horizon);
        })
    };
    let ch = Channel {
        tx: w,
        rx,
        hangup: Arc::clone(&hangup),
    };
    let link = match Link::start(ch, release, Arc::clone(&live)) {
        Ok(l) => l,
        Err(e) => {
            hb_stop.store(true, std::sync::atomic::Ordering::Relaxed);
            hangup.close();
            gate.open();
            let _ = take_off(m, gate, &mut rec);
            return Err(io("cannot start the logging channel")(e));
        }
    };
    Ok(Protection {
        rec,
        buf,
        link,
        live,
        generation,
        sent_horizon: 0,
        hb_stop,
        lag: crate::throttle::LagClock::default(),
    })
}

/// What protection layers over a machine's backends: the output gate over the shared disks
/// and the network card, and the recorder over every disk and the card.
pub struct Layers {
    /// Shared disks (the first `shared` drives): their writes go through the gate.
    pub shared: usize,
    /// The machine has a network card: its frames go through the gate.
    pub net: bool,
    /// `--disk-reads own`: a write waits for the backup to replay past it (the backup reads
    /// the disk itself), not only for it to have the log.
    pub writes_after_replay: bool,
}

impl Layers {
    /// Puts the layers on `m` and starts the log (a full snapshot, or the closing delta of a
    /// live copy): the gate first, so that the recorder sees what the guest sees (its reads
    /// see its held writes), then the recorder's wrappers. On a failure nothing is held and
    /// the layers are off again.
    pub fn put_on(
        &self,
        m: &mut Machine,
        gate: &Gate,
        rec: &mut Recorder<SharedBuf>,
        after_copy: bool,
    ) -> Result<(), FtError> {
        gate.install(m, self.shared, self.net)
            .map_err(|source| FtError::Gate {
                what: "put in",
                source,
            })?;
        gate.hold(self.writes_after_replay);
        let started = if after_copy {
            rec.start_after_live_copy(m)
        } else {
            rec.start(m)
        };
        if let Err(e) = started {
            gate.open();
            // Whatever went on comes off (a recorder that failed early put nothing on, and
            // then the gate alone comes off).
            let _ = rec.detach(m);
            let _ = gate.uninstall(m);
            return Err(e.into());
        }
        Ok(())
    }
}

/// Takes protection's layers off `m` (the VM runs on alone, after [`Gate::open`]): the
/// recorder's wrappers, then the gate's. The machine's backends are then the ones it had
/// before [`Layers::put_on`].
pub fn take_off(
    m: &mut Machine,
    gate: &Gate,
    rec: &mut Recorder<SharedBuf>,
) -> Result<(), FtError> {
    rec.detach(m)?;
    gate.uninstall(m).map_err(|source| FtError::Gate {
        what: "take out",
        source,
    })
}

/// Non-shared disks: sends each image whole, before the log, so that the backup's starts equal.
fn sync_disks(m: &mut Machine, w: &mut dyn SendMsg, drives: usize) -> Result<(), FtError> {
    const CHUNK: usize = 1 << 20;
    let t0 = Instant::now();
    let mut total_bytes = 0u64;
    for drive in 0..drives {
        let Some(d) = m.disk_backend_mut(drive) else {
            return Err(FtError::NoSuchDisk(drive));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine with one 64 KiB disk and a network card whose firmware spins.
    fn machine(dir: &std::path::Path) -> Machine {
        crate::testing::spinning_machine(dir, 65536).unwrap()
    }

    fn stack(m: &mut Machine) -> (String, String) {
        (
            m.disk_backend_mut(0).unwrap().describe(),
            m.net_backend_mut().unwrap().describe(),
        )
    }

    #[test]
    fn fifty_protections_leave_the_backends_as_one_did() {
        let dir = std::env::temp_dir().join(format!("ft-layers-{}", std::process::id()));
        let mut m = machine(&dir);
        let bare = stack(&mut m);
        let gate = Gate::new(Box::new(|_: &[u8]| {}));
        let layers = Layers {
            shared: 1,
            net: true,
            writes_after_replay: false,
        };
        let mut protected = None;
        for round in 0..50 {
            let (mut rec, entropy) = Recorder::with_shape(
                SharedBuf::default(),
                vec![false],
                Some(machine::NetConfig {
                    mac: [2, 0, 0, 0, 0, 1],
                    mtu: 1500,
                }),
            );
            m.replace_entropy(entropy).unwrap();
            layers.put_on(&mut m, &gate, &mut rec, false).unwrap();
            let now = stack(&mut m);
            assert_eq!(
                (now.0.as_str(), now.1.as_str()),
                ("recording(gated(0))", "recording(gated)"),
                "round {round}: the layers under protection"
            );
            assert_eq!(
                *protected.get_or_insert_with(|| now.clone()),
                now,
                "round {round}: protected again, the same layers as the first time"
            );
            // Some guest time, so that each round's log has something.
            m.run(m.icount() + 1000);
            rec.after_slice(&m, false);
            gate.seal(m.icount());
            gate.open();
            take_off(&mut m, &gate, &mut rec).unwrap();
            assert_eq!(
                stack(&mut m),
                bare,
                "round {round}: running alone, bare again"
            );
        }
        assert_eq!(gate.installed(), (0, false));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
