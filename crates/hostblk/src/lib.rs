//! The host ends of the virtio disks ([`machine::virtio::BlockBackend`]): where a disk's
//! sectors live on the host, and the thread that reads them ahead of the guest.
//!
//! - [`FileBackend`]: a raw image file (positioned reads and writes, `fdatasync`).
//! - [`NbdDisk`]: an export on an NBD server (the `nbd` crate's client), one bounded
//!   synchronous round trip per request.
//! - [`AsyncDisk`]: either of them behind a worker thread that prepares reads and flushes
//!   ahead of the completion point ([`aio`]), so that a slow host disk never stalls the vCPU.
//! - [`Delayed`]: a disk made slower on purpose (`--drive ...,delay=MS`), to see and test
//!   requests in flight.
//!
//! [`open_disks`] opens every `--drive` of a configuration this way, and [`boot`] /
//! [`restore`] build a machine on them. The board (`machine`) only sees the trait: it knows no
//! files, sockets, threads or wall-clock time, and a replayer builds the same machine on disks
//! made from its log instead.
//!
//! This crate must never decide when a request completes in the guest: the device does that at
//! the completion point the run loop picks (and a recorder logs). Its worker only makes the
//! data ready, and notifies the machine's wake-up ([`machine::wake`]) when it has.

pub mod aio;
pub mod delay;
pub mod file;
pub mod nbd_export;

pub use aio::AsyncDisk;
pub use delay::Delayed;
pub use file::FileBackend;
pub use nbd_export::NbdDisk;

use machine::virtio::BlockBackend;
use machine::{Backends, DriveConfig, Machine, MachineConfig};
use std::path::PathBuf;

/// Why a disk's host end could not be opened, or a machine not built on them.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// cannot open disk image {path}: {source}
    #[error("cannot open disk image {}: {source}", path.display())]
    Open {
        /// The image that was asked for.
        path: PathBuf,
        /// Why it could not be opened.
        source: std::io::Error,
    },
    /// {0}
    #[error(transparent)]
    Nbd(#[from] nbd::NbdError),
    /// the NBD export `{export}` at {addr} is read-only: add readonly=on to its --drive
    #[error("the NBD export `{export}` at {addr} is read-only: add readonly=on to its --drive")]
    NbdReadOnly {
        /// The server.
        addr: String,
        /// The export.
        export: String,
    },
    /// {0}
    #[error(transparent)]
    Machine(#[from] machine::MachineError),
    /// {0}
    #[error(transparent)]
    Snapshot(#[from] machine::snapshot::SnapshotError),
}

/// Opens one drive: its image file or a connection to its NBD export, slowed down by its
/// `delay` if it has one, behind an [`AsyncDisk`] (its reads and flushes prepared on a worker
/// thread).
pub fn open_drive(d: &DriveConfig) -> Result<Box<dyn BlockBackend>, DiskError> {
    let disk: Box<dyn BlockBackend> = match &d.nbd {
        None => Box::new(FileBackend::open(&d.path, d.readonly)?),
        Some(n) => Box::new(NbdDisk::connect(n, d.readonly)?),
    };
    let disk = match d.delay.is_zero() {
        true => disk,
        false => Box::new(Delayed::new(disk, d.delay)),
    };
    Ok(Box::new(AsyncDisk::new(disk)))
}

/// Opens the image of every drive in `cfg`, in order ([`open_drive`]).
pub fn open_disks(cfg: &MachineConfig) -> Result<Vec<Box<dyn BlockBackend>>, DiskError> {
    cfg.drives.iter().map(open_drive).collect()
}

/// Builds a machine on the drives' host disks: checks the configuration, opens the disks
/// ([`open_disks`]), then [`Machine::with_disks`]. Nothing has run yet.
pub fn boot(cfg: &MachineConfig, backends: Backends) -> Result<Machine, DiskError> {
    cfg.validate().map_err(machine::MachineError::from)?;
    let disks = open_disks(cfg)?;
    Ok(Machine::with_disks(cfg, backends, disks)?)
}

/// Builds a machine on the drives' host disks and puts a snapshot's state into it
/// ([`Machine::restore_with_disks`]). A snapshot that does not fit `cfg` is refused before any
/// disk is opened. The disk images must be those the snapshot's machine had.
pub fn restore(
    cfg: &MachineConfig,
    backends: Backends,
    bytes: &[u8],
) -> Result<Machine, DiskError> {
    Machine::check_snapshot(cfg, bytes)?;
    let disks = open_disks(cfg)?;
    Ok(Machine::restore_with_disks(cfg, backends, disks, bytes)?)
}
