//! Record and replay of a whole machine: the [`Recorder`] that writes a run's input log and the
//! [`Replayer`] that re-executes it, shared by `ftvm run --record`, `ftvm replay` and the
//! fault-tolerant pair (whose primary records into the logging channel and whose backup
//! replays from it, then goes live).
//!
//! Both sides make the same [`machine::Machine::run`] calls, slice by slice ([`SLICE`]), so
//! that a replayed run is the recorded one instruction for instruction. This crate does no I/O
//! of its own except through the writer and the backends it is given; it never reads a clock
//! (the time-sync policy, [`timesync`], is handed the host's time by its caller).

pub mod disk;
pub mod logged;
pub mod net;
pub mod outbox;
pub mod position;
pub mod recorder;
pub mod replayer;
pub mod timesync;

pub use disk::{DriveShape, RecordingDisk, ReplayDisk};
pub use logged::{digest_parts, LoggedConfig, DEV_RNG, DEV_UART};
pub use net::{rarp_announce, RecordingNet, ReplayNet};
pub use outbox::Outbox;
pub use position::{PositionError, SnapshotPosition};
pub use recorder::{RecordError, Recorder};
pub use replayer::{BadLog, LiveDiskError, Prologue, ReplayError, Replayer};
pub use timesync::{SyncStep, TimeSync};

/// Machine-wide steps per run slice: the recorder's loop and every replayer make run calls of
/// this length (about 20 ms at 100 MIPS), so the host looks at its inputs this often.
pub const SLICE: u64 = 2_000_000;
