//! `ftvm primary`: builds the machine, connects to the backup (authenticated), sends the log's
//! prologue (the machine's shape and its initial snapshot, so the backup starts from exactly
//! this state), then runs the guest protected ([`crate::live`]).

use crate::console::Endpoint;
use crate::gate::Gate;
use crate::live::LiveVm;
use crate::protect::{protect, ProtectWith};
use crate::status::{Role, Status};
use crate::{io, FtError, PairConfig};
use machine::{Backends, MachineConfig};
use rr::Outbox;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

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
        return Err(FtError::OwnReadsNeedSharedDisks);
    }
    let out = Outbox::default();
    // The entropy source is the recorder's once protection starts (see `protect`).
    let mut m = hostblk::boot(
        mcfg,
        Backends {
            serial: Box::new(out.clone()),
            console: Box::new(out.clone()),
            entropy: Box::new(machine::virtio::OsEntropy::default()),
        },
    )?;
    if let Some(nd) = &pc.netdev {
        let net = hostnet::HostNet::open(nd).map_err(|source| FtError::HostNet {
            what: "joining the host network",
            source,
        })?;
        m.replace_net(net.into_backend())?;
    }
    let listener = TcpListener::bind(pc.console).map_err(io(format!(
        "cannot listen for console clients on {}",
        pc.console
    )))?;
    let ep = Endpoint::new(true);
    let gate = {
        let ep = ep.clone();
        Gate::new(Box::new(move |b: &[u8]| ep.publish(b)))
    };
    crate::metrics::attach(&ep, cfg.metrics, &cfg.console)?;
    ep.serve(listener, cfg.console.clone())
        .map_err(io("cannot start the console endpoint"))?;

    let generation = cfg.arbiter.current(&cfg.vm)?.map_or(0, |(g, _)| g);
    let with = ProtectWith {
        readonly: mcfg.drives.iter().map(|d| d.readonly).collect(),
        net: mcfg.net,
        local_ip: pc.console.ip(),
        disk_reads_own: pc.disk_reads_own,
    };
    let prot = protect(
        &mut m,
        &gate,
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
        gate,
        prot: Some(prot),
        cfg,
        status,
        with,
        cloning: None,
    }
    .run()
}
