//! The fault-tolerant pair of VMware FT (Scales et al., 2010) on the ftvm machine: a primary
//! records every non-deterministic input into a log that an encrypted, authenticated TCP channel
//! (Noise, [`noise`]) carries
//! to a backup, which replays it instruction for instruction; output waits for the backup's
//! acknowledgement (the output rule); heartbeats and the channel detect a dead peer; an atomic
//! test-and-set on shared storage ([`arbiter`]) decides who goes on; the backup goes live from
//! exactly where the log left it.
//!
//! This crate sees the machine only through [`rr`] (record, replay, go live) and
//! [`machine::Machine`]'s run/inject API. It never lets a peer's bytes panic the process: every
//! message is authenticated, bounded and validated before anything is applied.

pub mod admission;
pub mod auth;
pub mod backup;
pub mod claim;
pub mod clone;
pub mod console;
pub mod gate;
pub mod heartbeat;
pub mod link;
mod live;
pub mod metrics;
pub mod noise;
#[cfg(test)]
mod pair_tests;
pub mod primary;
pub mod protect;
pub mod refusals;
pub mod status;
#[doc(hidden)]
pub mod testing;
pub mod throttle;
pub mod transport;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

pub use auth::Key;
pub use heartbeat::HeartbeatConfig;

/// Settings both sides of a pair share.
#[derive(Clone)]
pub struct PairConfig {
    /// The VM's name: the arbiter's key.
    pub vm: String,
    /// Who this process is, for the arbiter ("primary@host:port").
    pub me: String,
    /// The shared key of the channel.
    pub key: Key,
    /// The secrets the console endpoint admits (operators', not the channel's).
    pub console: console::Keys,
    /// Where split-brain is settled.
    pub arbiter: Arc<dyn arbiter::Arbiter>,
    /// Heartbeat interval and failure timeout.
    pub heartbeat: HeartbeatConfig,
    /// The lag (guest time) beyond which the primary is slowed.
    pub max_lag: Duration,
    /// Log bytes in flight (sent, not acknowledged) beyond which the primary stalls.
    pub buffer: usize,
    /// Each side has its own disk images (synced from the primary at start, the backup
    /// applying the replayed writes); otherwise both reach the same images and only the live
    /// primary writes.
    pub non_shared: bool,
    /// Where Prometheus metrics are served (`GET /metrics`), if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// A live clone's most bytes per second on the link (0: no limit).
    pub clone_bandwidth: u64,
    /// How long a side that lost its peer keeps asking an arbiter that does not answer before
    /// it stops ([`claim`]).
    pub arbiter_patience: Duration,
}

/// Why a pair member stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum FtError {
    /// `--disk-reads own` was asked for with non-shared disks.
    #[error(
        "--disk-reads own needs shared disks (--disk-mode shared): with non-shared disks the \
         backup's images are its own"
    )]
    OwnReadsNeedSharedDisks,
    /// The backup did not accept a connection in time.
    #[error("cannot reach the backup at {to} within {within:?}: {source}")]
    BackupUnreachable {
        /// The backup's channel address.
        to: std::net::SocketAddr,
        /// How long connecting was tried.
        within: Duration,
        /// The last connection error.
        #[source]
        source: std::io::Error,
    },
    /// A drive the configuration names is not in the machine.
    #[error("the machine has no disk {0}")]
    NoSuchDisk(usize),
    /// The host network could not be joined.
    #[error("{what}: {source}")]
    HostNet {
        /// When: at start, or going live.
        what: &'static str,
        /// Why.
        #[source]
        source: hostnet::HostNetError,
    },
    /// The output gate could not be put between the machine and its host ends, or taken out.
    #[error("cannot {what} the output gate: {source}")]
    Gate {
        /// `put in` or `take out`.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The primary's log arrived out of order (entries before its header).
    #[error("the primary's log has entries before its header")]
    NoLogHeader,
    /// A live clone failed (the VM runs on alone).
    #[error("the live clone failed: {0}")]
    Clone(#[from] clone::CloneError),
    /// the machine cannot be built
    #[error("{0}")]
    Machine(#[from] machine::MachineError),
    /// a disk's host end cannot be opened
    #[error("{0}")]
    Disk(#[from] hostblk::DiskError),
    /// recording failed
    #[error("recording the log failed: {0}")]
    Record(#[from] rr::RecordError),
    /// replay failed
    #[error("replaying the primary's log failed: {0}")]
    Replay(#[from] rr::ReplayError),
    /// the channel failed during setup
    #[error("logging channel: {0}")]
    Wire(#[from] wire::WireError),
    /// the arbiter failed
    #[error("the arbiter failed: {0}")]
    Arbiter(#[from] arbiter::ArbiterError),
    /// a socket could not be set up
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// An I/O error with what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FtError {
    let what = what.into();
    move |source| FtError::Io { what, source }
}
