//! The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2): the register window of one slot
//! and the device-status state machine, in front of any [`VirtioDevice`].
//!
//! Registers below 0x100 take aligned 32-bit accesses only (§4.2.2.1: "The driver MUST only use
//! 32 bit wide and aligned reads and writes"); anything else is an access fault. Configuration
//! space at 0x100 takes 8-, 16-, 32- and 64-bit accesses. Unknown registers read as zero and
//! ignore writes, as QEMU's do.

use super::queue::{Virtq, VirtqState};
use super::{
    CompleteError, QueueError, VirtioDevice, VirtioError, STATUS_DEVICE_NEEDS_RESET,
    STATUS_DRIVER_OK, STATUS_FEATURES_OK, VIRTIO_F_VERSION_1,
};
use rv64::Ram;

/// "virt" in little-endian ASCII.
const MAGIC: u32 = 0x7472_6976;
/// The modern (virtio 1.x) transport.
const VERSION: u32 = 2;
/// "QEMU", as QEMU's `virt` board reports, so guests see the same VendorID.
const VENDOR_ID: u32 = 0x554d_4551;
/// Where the device configuration space starts.
const CONFIG: u64 = 0x100;
/// Size of one slot's register window.
const WINDOW: u64 = 0x1000;

/// Register offsets (§4.2.2, table "MMIO Device Register Layout").
mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
}

/// InterruptStatus bit: the device used a buffer.
pub const INT_USED_BUFFER: u32 = 1;
/// InterruptStatus bit: the configuration (or DEVICE_NEEDS_RESET) changed.
pub const INT_CONFIG_CHANGE: u32 = 2;

/// The saved form of a [`VirtioMmio`] transport: plain data, untrusted, validated by
/// [`VirtioMmio::restore`]. Devices hold no state beyond their backends but what
/// [`VirtioDevice::save_state`] gives (a disk's in-flight requests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtioMmioState {
    /// DeviceID, checked against the device on restore.
    pub device_id: u32,
    /// Status.
    pub status: u32,
    /// DriverFeatures, both halves.
    pub driver_features: u64,
    /// DeviceFeaturesSel.
    pub device_features_sel: u32,
    /// DriverFeaturesSel.
    pub driver_features_sel: u32,
    /// QueueSel.
    pub queue_sel: u32,
    /// InterruptStatus.
    pub interrupt_status: u32,
    /// ConfigGeneration.
    pub config_generation: u32,
    /// Queues notified but not yet processed, one bit per queue.
    pub pending_notify: u32,
    /// Each virtqueue.
    pub queues: Vec<VirtqState>,
    /// The device's own state ([`VirtioDevice::save_state`]).
    pub device: Vec<u8>,
}

/// One virtio-mmio slot: the transport registers and the device behind them.
pub struct VirtioMmio {
    device: Box<dyn VirtioDevice>,
    queues: Vec<Virtq>,
    status: u32,
    driver_features: u64,
    device_features_sel: u32,
    driver_features_sel: u32,
    queue_sel: u32,
    interrupt_status: u32,
    config_generation: u32,
    /// Bit n: queue n was notified and awaits [`VirtioMmio::process`]. Devices have at most 32
    /// queues here (network with a handful of queue pairs included).
    pending_notify: u32,
    /// Why the device last asked for a reset, for diagnostics.
    last_error: Option<QueueError>,
}

impl std::fmt::Debug for VirtioMmio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioMmio")
            .field("device_id", &self.device.device_id())
            .field("status", &self.status)
            .field("interrupt_status", &self.interrupt_status)
            .finish_non_exhaustive()
    }
}

impl VirtioMmio {
    /// A transport in front of `device`, in the reset state.
    pub fn new(device: Box<dyn VirtioDevice>) -> VirtioMmio {
        let queues = device
            .queue_max_sizes()
            .iter()
            .take(32)
            .map(|&m| Virtq::new(m))
            .collect();
        VirtioMmio {
            device,
            queues,
            status: 0,
            driver_features: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            queue_sel: 0,
            interrupt_status: 0,
            config_generation: 0,
            pending_notify: 0,
            last_error: None,
        }
    }

    /// The virtio device id (2 block, 3 console, 4 entropy, ...).
    pub fn device_id(&self) -> u32 {
        self.device.device_id()
    }

    /// The backend of a block device (see [`VirtioDevice::block_backend_mut`]).
    pub fn block_backend_mut(&mut self) -> Option<&mut Box<dyn super::BlockBackend>> {
        self.device.block_backend_mut()
    }

    /// The backend of a network device (see [`VirtioDevice::net_backend_mut`]).
    pub fn net_backend_mut(&mut self) -> Option<&mut Box<dyn super::NetBackend>> {
        self.device.net_backend_mut()
    }

    /// The source of an entropy device (see [`VirtioDevice::entropy_backend_mut`]).
    pub fn entropy_backend_mut(&mut self) -> Option<&mut Box<dyn super::EntropyBackend>> {
        self.device.entropy_backend_mut()
    }

    /// The backend of a network device, to look at.
    pub fn net_backend(&self) -> Option<&dyn super::NetBackend> {
        self.device.net_backend()
    }

    /// A network device's counters.
    pub fn net_stats(&self) -> Option<super::NetStats> {
        self.device.net_stats()
    }

    /// The interrupt line: InterruptStatus is not zero.
    pub fn irq_level(&self) -> bool {
        self.interrupt_status != 0
    }

    /// Why the device last set DEVICE_NEEDS_RESET, if it did since the last reset.
    pub fn last_error(&self) -> Option<&QueueError> {
        self.last_error.as_ref()
    }

    /// Reads `size` bytes at `offset` in the slot. `None` is an access fault (outside the window,
    /// or a register access that is not an aligned 32-bit one).
    pub fn read(&mut self, offset: u64, size: u8) -> Option<u64> {
        if offset >= WINDOW || !matches!(size, 1 | 2 | 4 | 8) {
            return None;
        }
        if offset >= CONFIG {
            let mut b = [0u8; 8];
            self.device
                .config_read(offset - CONFIG, &mut b[..usize::from(size)]);
            return Some(u64::from_le_bytes(b));
        }
        if size != 4 || !offset.is_multiple_of(4) {
            return None;
        }
        let q = self.queues.get(self.queue_sel as usize);
        let v = match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_id(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => q.map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_NUM => q.map_or(0, |q| u32::from(q.size())),
            reg::QUEUE_READY => q.map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            reg::QUEUE_DESC_LOW..=reg::QUEUE_DEVICE_HIGH => {
                let (which, high) = area_register(offset)?;
                q.map_or(0, |q| q.addr_half(which, high))
            }
            // No shared memory regions: a length of all ones says "no such region" (§4.2.2).
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        Some(u64::from(v))
    }

    /// Writes the low `size` bytes of `val` at `offset` in the slot. `false` is an access fault.
    /// A QueueNotify only records that the queue has work; [`VirtioMmio::process`] does it.
    pub fn write(&mut self, offset: u64, size: u8, val: u64) -> bool {
        if offset >= WINDOW || !matches!(size, 1 | 2 | 4 | 8) {
            return false;
        }
        if offset >= CONFIG {
            let b = val.to_le_bytes();
            self.device
                .config_write(offset - CONFIG, &b[..usize::from(size)]);
            return true;
        }
        if size != 4 || !offset.is_multiple_of(4) {
            return false;
        }
        let v = val as u32;
        let sel = self.queue_sel as usize;
        let features_open = self.status & STATUS_FEATURES_OK == 0;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            // The driver must not change features once FEATURES_OK is set (§3.1.1).
            reg::DRIVER_FEATURES if features_open => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                }
                _ => {}
            },
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM => {
                if let Some(q) = self.queues.get_mut(sel) {
                    q.set_size(u16::try_from(v).unwrap_or(0));
                }
            }
            reg::QUEUE_READY => {
                if let Some(q) = self.queues.get_mut(sel) {
                    if let Err(e) = q.set_ready(v & 1 != 0) {
                        self.needs_reset(e);
                    }
                }
            }
            reg::QUEUE_NOTIFY => {
                // With VIRTIO_F_NOTIFICATION_DATA (never offered) the upper bits carry more.
                let index = v & 0xffff;
                if (index as usize) < self.queues.len() {
                    self.pending_notify |= 1 << index;
                }
            }
            reg::INTERRUPT_ACK => self.interrupt_status &= !v,
            reg::STATUS => self.write_status(v),
            reg::QUEUE_DESC_LOW..=reg::QUEUE_DEVICE_HIGH => {
                if let (Some((which, high)), Some(q)) =
                    (area_register(offset), self.queues.get_mut(sel))
                {
                    q.set_addr_half(which, high, v);
                }
            }
            // No shared memory regions exist, so the selector changes nothing.
            reg::SHM_SEL => {}
            _ => {}
        }
        true
    }

    /// Does the work the driver asked for since the last call, and the device's own (received
    /// console input). The only place where device data reaches guest memory.
    pub fn process(&mut self, ram: &mut Ram) {
        if !self.running() {
            return;
        }
        let notified = std::mem::take(&mut self.pending_notify);
        let result = self
            .device
            .process(&mut self.queues, notified, self.driver_features, ram);
        self.after_work(result);
    }

    /// Whether the driver runs the device (DRIVER_OK, not DEVICE_NEEDS_RESET).
    fn running(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0 && self.status & STATUS_DEVICE_NEEDS_RESET == 0
    }

    /// Raises the used-buffer interrupt for queues that asked for one, and the reset request
    /// for a broken queue.
    fn after_work(&mut self, result: Result<(), QueueError>) {
        for q in &mut self.queues {
            if q.take_notify() {
                self.interrupt_status |= INT_USED_BUFFER;
            }
        }
        if let Err(e) = result {
            self.needs_reset(e);
        }
    }

    /// Deferred mode on or off (see [`super::block`]).
    pub fn set_deferred(&mut self, on: bool) {
        self.device.set_deferred(on);
    }

    /// Requests submitted and not completed.
    pub fn in_flight(&self) -> usize {
        self.device.in_flight()
    }

    /// A completion point: completes every in-flight request that is ready, in submission
    /// order, and appends their ids to `done`.
    pub fn complete_ready(&mut self, ram: &mut Ram, done: &mut Vec<u64>) {
        if !self.running() || self.device.in_flight() == 0 {
            return;
        }
        let result = self.device.complete_ready(&mut self.queues, ram, done);
        self.after_work(result);
    }

    /// Completes in-flight request `id` now (a replay, at the icount the log gives).
    pub fn complete(&mut self, ram: &mut Ram, id: u64) -> Result<(), CompleteError> {
        if !self.running() {
            return Err(CompleteError::NotRunning);
        }
        match self.device.complete(&mut self.queues, ram, id) {
            Err(CompleteError::Queue(e)) => {
                // It completed, breaking the queue, as it did on the recording side.
                self.after_work(Err(e));
                Ok(())
            }
            r => {
                self.after_work(Ok(()));
                r
            }
        }
    }

    /// Status write (§2.1, §3.1): 0 resets; FEATURES_OK sticks only if the driver's features
    /// are a subset of the device's and include VERSION_1; DEVICE_NEEDS_RESET is the device's.
    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let mut v = v & 0xff & !STATUS_DEVICE_NEEDS_RESET;
        if v & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            let f = self.driver_features;
            if f & !self.device.features() != 0 || f & VIRTIO_F_VERSION_1 == 0 {
                v &= !STATUS_FEATURES_OK;
            }
        }
        self.status = v | (self.status & STATUS_DEVICE_NEEDS_RESET);
    }

    /// Device reset: registers, queues and device back to power-on (ConfigGeneration is kept).
    fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.interrupt_status = 0;
        self.pending_notify = 0;
        self.last_error = None;
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
    }

    /// The driver broke the device: stop processing and tell it (§2.1.2).
    fn needs_reset(&mut self, e: QueueError) {
        self.last_error = Some(e);
        self.status |= STATUS_DEVICE_NEEDS_RESET;
        if self.status & STATUS_DRIVER_OK != 0 {
            self.interrupt_status |= INT_CONFIG_CHANGE;
        }
    }

    /// The saved form of the transport and its queues.
    pub fn save(&self) -> VirtioMmioState {
        VirtioMmioState {
            device_id: self.device.device_id(),
            status: self.status,
            driver_features: self.driver_features,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            queue_sel: self.queue_sel,
            interrupt_status: self.interrupt_status,
            config_generation: self.config_generation,
            pending_notify: self.pending_notify,
            queues: self.queues.iter().map(Virtq::save).collect(),
            device: self.device.save_state(),
        }
    }

    /// Restores a saved transport onto this one (same device type and queues). On error
    /// nothing changes.
    pub fn restore(&mut self, state: &VirtioMmioState) -> Result<(), VirtioError> {
        let bad = |m: String| Err(VirtioError::BadState(m));
        if state.device_id != self.device.device_id() {
            return bad(format!(
                "device id {} where {} was expected",
                state.device_id,
                self.device.device_id()
            ));
        }
        if state.queues.len() != self.queues.len() {
            return bad(format!(
                "{} queues where {} exist",
                state.queues.len(),
                self.queues.len()
            ));
        }
        if state.driver_features & !self.device.features() != 0 {
            return bad(format!(
                "driver features {:#x} not offered",
                state.driver_features
            ));
        }
        let queue_mask = u32::MAX
            .checked_shr(32 - self.queues.len() as u32)
            .unwrap_or(0);
        if state.status > 0xff || state.pending_notify & !queue_mask != 0 {
            return bad(format!(
                "status {:#x} or notifications {:#x} out of range",
                state.status, state.pending_notify
            ));
        }
        let mut queues = self.queues.clone();
        for (i, (q, s)) in queues.iter_mut().zip(&state.queues).enumerate() {
            q.restore(s).or_else(|e| bad(format!("queue {i}: {e}")))?;
        }
        self.device.restore_state(&state.device).or_else(bad)?;
        self.queues = queues;
        self.status = state.status;
        self.driver_features = state.driver_features;
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.queue_sel = state.queue_sel;
        self.interrupt_status = state.interrupt_status;
        self.config_generation = state.config_generation;
        self.pending_notify = state.pending_notify;
        self.last_error = None;
        Ok(())
    }
}

/// Which area (0 descriptor table, 1 driver/available, 2 device/used) and which half a
/// QueueDesc/QueueDriver/QueueDevice register offset names.
fn area_register(offset: u64) -> Option<(usize, bool)> {
    match offset {
        reg::QUEUE_DESC_LOW => Some((0, false)),
        reg::QUEUE_DESC_HIGH => Some((0, true)),
        reg::QUEUE_DRIVER_LOW => Some((1, false)),
        reg::QUEUE_DRIVER_HIGH => Some((1, true)),
        reg::QUEUE_DEVICE_LOW => Some((2, false)),
        reg::QUEUE_DEVICE_HIGH => Some((2, true)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testutil::NullDevice;
    use crate::virtio::{STATUS_ACKNOWLEDGE, STATUS_DRIVER};

    fn dev() -> VirtioMmio {
        VirtioMmio::new(Box::new(NullDevice::default()))
    }

    fn r(d: &mut VirtioMmio, off: u64) -> u32 {
        d.read(off, 4).unwrap() as u32
    }

    fn w(d: &mut VirtioMmio, off: u64, v: u32) {
        assert!(d.write(off, 4, u64::from(v)));
    }

    #[test]
    fn identification_registers() {
        let mut d = dev();
        assert_eq!(r(&mut d, reg::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(r(&mut d, reg::VERSION), 2);
        assert_eq!(r(&mut d, reg::DEVICE_ID), 99);
        assert_eq!(r(&mut d, reg::VENDOR_ID), VENDOR_ID);
        assert_eq!(d.device_id(), 99);
    }

    #[test]
    fn access_rules() {
        let mut d = dev();
        assert_eq!(d.read(reg::MAGIC_VALUE, 1), None);
        assert_eq!(d.read(reg::MAGIC_VALUE, 8), None);
        assert_eq!(d.read(0x2, 4), None);
        assert_eq!(d.read(0x1000, 4), None);
        assert_eq!(d.read(0x10, 3), None);
        assert!(!d.write(reg::STATUS, 1, 1));
        assert!(!d.write(0x1000, 4, 1));
        assert_eq!(d.read(0x0f0, 4), Some(0), "unknown registers read as zero");
        assert!(d.write(0x0f0, 4, 1), "and ignore writes");
        assert_eq!(r(&mut d, reg::SHM_LEN_LOW), u32::MAX);
        assert_eq!(r(&mut d, reg::SHM_LEN_HIGH), u32::MAX);
    }

    #[test]
    fn feature_selection_and_negotiation() {
        let mut d = dev();
        assert_eq!(r(&mut d, reg::DEVICE_FEATURES), 0x10);
        w(&mut d, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(&mut d, reg::DEVICE_FEATURES), 1);
        w(&mut d, reg::DEVICE_FEATURES_SEL, 2);
        assert_eq!(r(&mut d, reg::DEVICE_FEATURES), 0);

        w(&mut d, reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        // Without VERSION_1, FEATURES_OK does not stick.
        w(
            &mut d,
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_eq!(r(&mut d, reg::STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        // A feature the device does not offer: refused too.
        w(&mut d, reg::DRIVER_FEATURES_SEL, 1);
        w(&mut d, reg::DRIVER_FEATURES, 1);
        w(&mut d, reg::DRIVER_FEATURES_SEL, 0);
        w(&mut d, reg::DRIVER_FEATURES, 0x20);
        w(
            &mut d,
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_eq!(r(&mut d, reg::STATUS) & STATUS_FEATURES_OK, 0);
        // A subset with VERSION_1: accepted, and then frozen.
        w(&mut d, reg::DRIVER_FEATURES, 0x10);
        w(
            &mut d,
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_ne!(r(&mut d, reg::STATUS) & STATUS_FEATURES_OK, 0);
        w(&mut d, reg::DRIVER_FEATURES, 0);
        assert_eq!(d.save().driver_features, VIRTIO_F_VERSION_1 | 0x10);
    }

    #[test]
    fn queue_registers() {
        let mut d = dev();
        assert_eq!(r(&mut d, reg::QUEUE_NUM_MAX), 16);
        w(&mut d, reg::QUEUE_SEL, 1);
        assert_eq!(r(&mut d, reg::QUEUE_NUM_MAX), 8);
        w(&mut d, reg::QUEUE_SEL, 2);
        assert_eq!(r(&mut d, reg::QUEUE_NUM_MAX), 0, "no such queue");
        w(&mut d, reg::QUEUE_NUM, 4); // ignored
        w(&mut d, reg::QUEUE_READY, 1); // ignored
        assert_eq!(r(&mut d, reg::QUEUE_READY), 0);

        w(&mut d, reg::QUEUE_SEL, 0);
        w(&mut d, reg::QUEUE_NUM, 8);
        w(&mut d, reg::QUEUE_DESC_LOW, 0x8000_0000);
        w(&mut d, reg::QUEUE_DESC_HIGH, 0x1);
        w(&mut d, reg::QUEUE_DRIVER_LOW, 0x8000_1000);
        w(&mut d, reg::QUEUE_DEVICE_LOW, 0x8000_2000);
        assert_eq!(r(&mut d, reg::QUEUE_DESC_HIGH), 1);
        assert_eq!(r(&mut d, reg::QUEUE_DRIVER_LOW), 0x8000_1000);
        w(&mut d, reg::QUEUE_READY, 1);
        assert_eq!(r(&mut d, reg::QUEUE_READY), 1);
        let s = d.save().queues[0];
        assert_eq!(
            (s.size, s.desc_addr, s.used_addr),
            (8, 0x1_8000_0000, 0x8000_2000)
        );
        w(&mut d, reg::QUEUE_READY, 0);
        assert_eq!(r(&mut d, reg::QUEUE_READY), 0);
    }

    #[test]
    fn bad_queue_size_needs_reset() {
        let mut d = dev();
        w(&mut d, reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(&mut d, reg::QUEUE_NUM, 12);
        w(&mut d, reg::QUEUE_READY, 1);
        assert_eq!(r(&mut d, reg::QUEUE_READY), 0);
        assert_ne!(r(&mut d, reg::STATUS) & STATUS_DEVICE_NEEDS_RESET, 0);
        assert!(d.last_error().is_some());
        // The driver cannot clear it except by a reset.
        w(&mut d, reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        assert_ne!(r(&mut d, reg::STATUS) & STATUS_DEVICE_NEEDS_RESET, 0);
        w(&mut d, reg::STATUS, 0);
        assert_eq!(r(&mut d, reg::STATUS), 0);
        assert!(d.last_error().is_none());
    }

    #[test]
    fn notify_is_recorded_and_processed_after_driver_ok() {
        let mut ram = Ram::new(0x8000_0000, 1 << 20);
        let mut d = dev();
        w(&mut d, reg::QUEUE_NOTIFY, 1);
        w(&mut d, reg::QUEUE_NOTIFY, 7); // no such queue: ignored
        assert_eq!(d.save().pending_notify, 2);
        d.process(&mut ram); // not DRIVER_OK: nothing happens
        assert_eq!(d.save().pending_notify, 2);
        w(&mut d, reg::STATUS, STATUS_DRIVER_OK);
        d.process(&mut ram);
        assert_eq!(d.save().pending_notify, 0);
        assert_eq!(r(&mut d, reg::CONFIG_GENERATION), 0);
    }

    #[test]
    fn interrupt_status_and_ack() {
        let mut d = dev();
        assert!(!d.irq_level());
        w(&mut d, reg::STATUS, STATUS_DRIVER_OK);
        w(&mut d, reg::QUEUE_NUM, 3);
        w(&mut d, reg::QUEUE_READY, 1);
        assert!(
            d.irq_level(),
            "config-change interrupt for DEVICE_NEEDS_RESET"
        );
        assert_eq!(r(&mut d, reg::INTERRUPT_STATUS), INT_CONFIG_CHANGE);
        w(&mut d, reg::INTERRUPT_ACK, INT_CONFIG_CHANGE);
        assert!(!d.irq_level());
        assert_eq!(r(&mut d, reg::INTERRUPT_STATUS), 0);
    }

    #[test]
    fn config_space_accesses() {
        let mut d = dev();
        assert_eq!(d.read(0x100, 1), Some(0x01));
        assert_eq!(d.read(0x101, 2), Some(0x0302));
        assert_eq!(d.read(0x100, 4), Some(0x0403_0201));
        assert_eq!(d.read(0x100, 8), Some(0x0807_0605_0403_0201));
        assert_eq!(d.read(0x1fe, 4), Some(0), "past the end reads zero");
        assert!(d.write(0x104, 1, 0xaa));
        assert_eq!(d.read(0x104, 1), Some(0xaa));
    }

    #[test]
    fn reset_clears_everything_but_generation() {
        let mut d = dev();
        w(&mut d, reg::STATUS, STATUS_ACKNOWLEDGE);
        w(&mut d, reg::QUEUE_SEL, 1);
        w(&mut d, reg::QUEUE_NOTIFY, 0);
        w(&mut d, reg::STATUS, 0);
        let s = d.save();
        assert_eq!((s.status, s.queue_sel, s.pending_notify), (0, 0, 0));
    }

    #[test]
    fn save_restore_round_trip_and_validation() {
        let mut d = dev();
        w(&mut d, reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(&mut d, reg::QUEUE_NUM, 8);
        w(&mut d, reg::QUEUE_READY, 1);
        let s = d.save();
        let mut e = dev();
        e.restore(&s).unwrap();
        assert_eq!(e.save(), s);
        assert!(e
            .restore(&VirtioMmioState {
                device_id: 2,
                ..s.clone()
            })
            .is_err());
        assert!(e
            .restore(&VirtioMmioState {
                queues: vec![],
                ..s.clone()
            })
            .is_err());
        assert!(e
            .restore(&VirtioMmioState {
                driver_features: 1 << 40,
                ..s.clone()
            })
            .is_err());
        let mut bad = s.clone();
        bad.queues[0].size = 6;
        assert!(e.restore(&bad).is_err());
        assert_eq!(e.save(), s, "a failed restore changes nothing");
    }
}
