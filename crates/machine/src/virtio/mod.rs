//! Virtio devices on the virtio-mmio transport (virtio 1.x, "modern" only: Version register = 2).
//!
//! - [`mmio`]: the transport, one [`VirtioMmio`] per 0x1000-byte slot of the `virt` board.
//! - [`queue`]: split virtqueues and descriptor chains, parsed defensively.
//! - [`block`], [`rng`], [`console`], [`net`]: the devices (ids 2, 4, 3, 1).
//!
//! Devices reach the outside world only through backend traits ([`BlockBackend`],
//! [`EntropyBackend`], [`ConsoleBackend`], [`NetBackend`]); the replay layer wraps them to record and replay every
//! input. Work happens only inside [`VirtioMmio::process`] and, for a disk in deferred mode, at
//! the completion points between run slices ([`VirtioMmio::complete_ready`],
//! [`VirtioMmio::complete`]): a queue notification merely records that there is work, and data
//! reaches guest memory through a host bounce buffer and [`rv64::Ram::write`], never while the
//! vCPU runs, so that every device input takes effect at an exact instruction count. A disk's
//! host I/O itself may run on another thread ahead of that point (its host end's business:
//! the `hostblk` crate).
//!
//! A guest can only hurt itself: any malformed ring, descriptor chain or request ends in a
//! device error status (`VIRTIO_BLK_S_IOERR`/`UNSUPP`) or in `DEVICE_NEEDS_RESET`, never a panic.
//!
//! # Why not rust-vmm's `virtio-queue` / `vm-memory`
//!
//! They were evaluated and not used, for three reasons that matter here:
//! 1. `virtio-queue`'s descriptor-chain iterator ends a chain silently when a descriptor lies outside
//!    guest memory, its `next` index is out of range or the chain is too long. A malformed chain
//!    then looks like a short, valid one, and a block request would be executed on a truncated
//!    view. We want to tell the two apart and put the device into `DEVICE_NEEDS_RESET`.
//! 2. Its used-ring updates go through a `vm-memory` view built over a raw pointer into
//!    [`rv64::Ram`], which bypasses the dirty-page and decoded-code tracking. Each write would need
//!    a matching `mark_written` computed from the crate's internal layout, or a custom dirty bitmap
//!    scanned after every call — fragile, and every `process` call would have to build the view
//!    over the raw pointer in `unsafe` code.
//! 3. The split ring is small (a few hundred lines here, with no `unsafe`), and owning it makes the saved
//!    state ([`VirtioMmioState`]) plain data we validate ourselves.
//!
//! The transport is written from the virtio 1.2 specification, §4.2.2 (MMIO register layout) and
//! §2.7 (split virtqueues).

pub mod block;
pub mod checksum;
pub mod console;
pub mod mmio;
pub mod net;
mod persist;
pub mod queue;
pub mod rng;

#[cfg(test)]
mod testutil;

pub use block::{BlockBackend, Prepare};
pub use console::{ConsoleBackend, NullConsole, StdioConsole};
pub use mmio::{VirtioMmio, VirtioMmioState};
pub use net::{NetBackend, NetStats, NullNet};
pub use queue::{DescChain, QueueError, Segment, Virtq, VirtqState};
pub use rng::{EntropyBackend, OsEntropy};

/// Device id of a network card (virtio 1.2 §5).
pub const VIRTIO_ID_NET: u32 = 1;
/// Device id of a block device.
pub const VIRTIO_ID_BLOCK: u32 = 2;
/// Device id of a console.
pub const VIRTIO_ID_CONSOLE: u32 = 3;
/// Device id of an entropy source.
pub const VIRTIO_ID_RNG: u32 = 4;

/// Feature bit: the device follows virtio 1.x (mandatory for the modern transport).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Feature bit: the driver may use indirect descriptor tables.
pub const VIRTIO_F_RING_INDIRECT_DESC: u64 = 1 << 28;

/// Status bit: the guest has noticed the device.
pub const STATUS_ACKNOWLEDGE: u32 = 1;
/// Status bit: the guest knows how to drive the device.
pub const STATUS_DRIVER: u32 = 2;
/// Status bit: the driver is set up and ready to drive the device.
pub const STATUS_DRIVER_OK: u32 = 4;
/// Status bit: feature negotiation is complete.
pub const STATUS_FEATURES_OK: u32 = 8;
/// Status bit: the device has hit an error it cannot recover from without a reset.
pub const STATUS_DEVICE_NEEDS_RESET: u32 = 64;
/// Status bit: the driver gave up on the device.
pub const STATUS_FAILED: u32 = 128;

/// Errors in setting up or restoring a virtio device. A guest's misbehaviour is never one of
/// these: it is reported to the guest through the device itself.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    /// saved virtio state does not fit this device: {0}
    #[error("saved virtio state does not fit this device: {0}")]
    BadState(String),
}

/// Why a given in-flight request cannot complete now ([`VirtioMmio::complete`]): in a replay,
/// the log asks for something the machine cannot have done.
#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    /// no request {0} is in flight
    #[error("no request {0} is in flight")]
    NotInFlight(u64),
    /// request {id} waits for the earlier request {on}, which overlaps it
    #[error("request {id} waits for the earlier request {on}, which overlaps it")]
    Waiting {
        /// The request to complete.
        id: u64,
        /// The in-flight request it waits for.
        on: u64,
    },
    /// the device does not complete requests later (it is not a disk)
    #[error("the device does not complete requests later (it is not a disk)")]
    NotDeferred,
    /// the device is not running (the driver has not started it, or it needs a reset)
    #[error("the device is not running (the driver has not started it, or it needs a reset)")]
    NotRunning,
    /// The driver broke the queue while the request completed: the device now needs a reset.
    #[error("{0}")]
    Queue(#[from] QueueError),
}

/// One virtio device type behind a [`VirtioMmio`] transport. The transport owns the registers
/// and the virtqueues; the device owns its configuration space and its requests.
pub trait VirtioDevice: Send {
    /// The virtio device id (DeviceID register).
    fn device_id(&self) -> u32;
    /// Every feature bit the device offers, including [`VIRTIO_F_VERSION_1`].
    fn features(&self) -> u64;
    /// QueueNumMax of each of the device's virtqueues; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads device configuration space at `offset`. Bytes past its end read as zero.
    fn config_read(&self, offset: u64, data: &mut [u8]);
    /// Writes device configuration space; read-only fields ignore the write.
    fn config_write(&mut self, _offset: u64, _data: &[u8]) {}
    /// Returns the device to its power-on state (the driver wrote 0 to Status).
    fn reset(&mut self) {}
    /// A block device's backend, so that the record/replay layer can wrap it or swap it (a
    /// backup going live); `None` for every other device.
    fn block_backend_mut(&mut self) -> Option<&mut Box<dyn BlockBackend>> {
        None
    }
    /// A network device's backend, so that the record/replay layer can wrap it or swap it;
    /// `None` for every other device.
    fn net_backend_mut(&mut self) -> Option<&mut Box<dyn NetBackend>> {
        None
    }
    /// An entropy device's source, so that a recorder started on a running machine (an FT
    /// primary protected anew) can put its own in; `None` for every other device.
    fn entropy_backend_mut(&mut self) -> Option<&mut Box<dyn EntropyBackend>> {
        None
    }
    /// A network device's backend, to look at.
    fn net_backend(&self) -> Option<&dyn NetBackend> {
        None
    }
    /// A network device's counters; `None` for every other device.
    fn net_stats(&self) -> Option<NetStats> {
        None
    }
    /// Deferred mode on or off: requests complete only through [`VirtioDevice::complete_ready`]
    /// and [`VirtioDevice::complete`] (see [`block`]). Devices that complete at once ignore it.
    fn set_deferred(&mut self, _on: bool) {}
    /// Requests submitted and not completed.
    fn in_flight(&self) -> usize {
        0
    }
    /// Completes, in submission order, every in-flight request that is ready, and appends
    /// their ids to `done`.
    fn complete_ready(
        &mut self,
        _queues: &mut [Virtq],
        _ram: &mut rv64::Ram,
        _done: &mut Vec<u64>,
    ) -> Result<(), QueueError> {
        Ok(())
    }
    /// Completes in-flight request `id` now, ready or not (a replay, at the logged icount).
    fn complete(
        &mut self,
        _queues: &mut [Virtq],
        _ram: &mut rv64::Ram,
        _id: u64,
    ) -> Result<(), CompleteError> {
        Err(CompleteError::NotDeferred)
    }
    /// The device's own state beyond its queues (a disk's in-flight requests), for snapshots;
    /// empty for devices without any.
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }
    /// Restores what [`VirtioDevice::save_state`] gave. On error nothing changes.
    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), String> {
        if bytes.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} bytes of device state for a device without any",
                bytes.len()
            ))
        }
    }
    /// Does the device's pending work. `notified` has bit `n` set if queue `n` was notified since
    /// the last call; `features` are the negotiated features. Called only while the driver is
    /// running the device (DRIVER_OK, and not DEVICE_NEEDS_RESET). An error means the driver
    /// broke a queue: the transport then asks for a reset.
    fn process(
        &mut self,
        queues: &mut [Virtq],
        notified: u32,
        features: u64,
        ram: &mut rv64::Ram,
    ) -> Result<(), QueueError>;
}

/// Copies `data` (a little-endian configuration space image) at `offset` into `out`, padding
/// with zeros past the end. For [`VirtioDevice::config_read`] implementations.
pub(crate) fn read_config_bytes(image: &[u8], offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| image.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// A type's name without its module path (`ftvm::a::B<c::D>` → `B<D>`), for the backends'
/// `describe`.
pub fn short_type_name(full: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or(""));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(word.rsplit("::").next().unwrap_or(""));
    out
}

#[cfg(test)]
mod name_tests {
    #[test]
    fn short_type_names_drop_paths() {
        assert_eq!(super::short_type_name("a::b::Disk"), "Disk");
        assert_eq!(super::short_type_name("a::W<b::X, c::Y>"), "W<X, Y>");
    }
}
