//! Test helpers: a device that does nothing, and a minimal guest driver that negotiates
//! features, sets up split rings in a test [`Ram`] and submits descriptor chains, as Linux's
//! virtio_mmio and virtio_ring do.

use super::queue::{VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use super::*;
use rv64::Ram;

/// RAM base of the test machine.
pub const BASE: u64 = 0x8000_0000;
/// Where test data buffers start (the rings live below).
pub const DATA: u64 = BASE + 0x8_0000;

/// Device id 99 with two queues (16 and 8 entries), features VERSION_1 | bit 4, and 8 bytes of
/// writable configuration space holding 1..=8.
pub struct NullDevice {
    config: [u8; 8],
}

impl Default for NullDevice {
    fn default() -> Self {
        NullDevice {
            config: [1, 2, 3, 4, 5, 6, 7, 8],
        }
    }
}

impl VirtioDevice for NullDevice {
    fn device_id(&self) -> u32 {
        99
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | 0x10
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn config_read(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn config_write(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(c) = self.config.get_mut(offset as usize + i) {
                *c = *b;
            }
        }
    }
    fn process(&mut self, _: &mut [Virtq], _: u32, _: u64, _: &mut Ram) -> Result<(), QueueError> {
        Ok(())
    }
}

/// A buffer of a chain being submitted: guest address, length, device-writable.
pub type Buf = (u64, u32, bool);

/// A guest driver for one device in a 1 MiB test RAM.
pub struct Driver {
    /// Guest memory.
    pub ram: Ram,
    /// The device under test.
    pub dev: VirtioMmio,
    queues: Vec<DrvQueue>,
}

struct DrvQueue {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl Driver {
    /// Resets the device, negotiates `features` (plus VERSION_1, minus what the device lacks),
    /// sets up every queue with `size` entries and sets DRIVER_OK.
    pub fn new(dev: VirtioMmio, features: u64, size: u16) -> Driver {
        let mut d = Driver {
            ram: Ram::new(BASE, 1 << 20),
            dev,
            queues: Vec::new(),
        };
        assert_eq!(d.reg(0x000), 0x7472_6976);
        assert_eq!(d.reg(0x004), 2);
        d.set_reg(0x070, 0);
        d.set_reg(0x070, STATUS_ACKNOWLEDGE);
        d.set_reg(0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        d.set_reg(0x014, 0);
        let mut offered = u64::from(d.reg(0x010));
        d.set_reg(0x014, 1);
        offered |= u64::from(d.reg(0x010)) << 32;
        let want = (features | VIRTIO_F_VERSION_1) & offered;
        d.set_reg(0x024, 0);
        d.set_reg(0x020, want as u32);
        d.set_reg(0x024, 1);
        d.set_reg(0x020, (want >> 32) as u32);
        d.set_reg(
            0x070,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_ne!(d.reg(0x070) & STATUS_FEATURES_OK, 0, "features refused");
        let mut n = 0;
        loop {
            d.set_reg(0x030, n);
            let max = d.reg(0x034);
            if max == 0 {
                break;
            }
            let size = size.min(max as u16);
            let area = BASE + u64::from(n) * 0x1_0000;
            let q = DrvQueue {
                size,
                desc: area,
                avail: area + 0x4000,
                used: area + 0x8000,
                next_desc: 0,
                avail_idx: 0,
                used_seen: 0,
            };
            d.set_reg(0x038, u32::from(size));
            for (off, a) in [(0x080, q.desc), (0x090, q.avail), (0x0a0, q.used)] {
                d.set_reg(off, a as u32);
                d.set_reg(off + 4, (a >> 32) as u32);
            }
            d.set_reg(0x044, 1);
            assert_eq!(d.reg(0x044), 1);
            d.queues.push(q);
            n += 1;
        }
        let status = d.reg(0x070);
        d.set_reg(0x070, status | STATUS_DRIVER_OK);
        d
    }

    /// Reads a 32-bit register.
    pub fn reg(&mut self, off: u64) -> u32 {
        self.dev.read(off, 4).expect("register read faulted") as u32
    }

    /// Writes a 32-bit register.
    pub fn set_reg(&mut self, off: u64, v: u32) {
        assert!(
            self.dev.write(off, 4, u64::from(v)),
            "register write faulted"
        );
    }

    /// Writes a raw descriptor into queue `q`'s table.
    pub fn put_desc(&mut self, q: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = Vec::new();
        d.extend_from_slice(&addr.to_le_bytes());
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&next.to_le_bytes());
        let at = self.queues[q].desc + 16 * u64::from(i);
        self.ram.write(at, &d).unwrap();
    }

    /// Makes the chain starting at descriptor `head` available in queue `q` (no notify).
    pub fn make_available(&mut self, q: usize, head: u16) {
        let dq = &mut self.queues[q];
        let slot = u64::from(dq.avail_idx % dq.size);
        let (avail, idx) = (dq.avail, dq.avail_idx.wrapping_add(1));
        dq.avail_idx = idx;
        self.ram
            .write(avail + 4 + 2 * slot, &head.to_le_bytes())
            .unwrap();
        self.ram.write(avail + 2, &idx.to_le_bytes()).unwrap();
    }

    /// Builds a chain from `bufs` in fresh descriptors of queue `q` and makes it available.
    /// Returns the head index.
    pub fn submit(&mut self, q: usize, bufs: &[Buf]) -> u16 {
        let size = self.queues[q].size;
        let head = self.queues[q].next_desc;
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let index = (head + i as u16) % size;
            let last = i + 1 == bufs.len();
            let mut flags = if writable { VIRTQ_DESC_F_WRITE } else { 0 };
            if !last {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            self.put_desc(q, index, addr, len, flags, (index + 1) % size);
        }
        self.queues[q].next_desc = (head + bufs.len() as u16) % size;
        self.make_available(q, head);
        head
    }

    /// Notifies queue `q` and lets the device process, as the board does after an MMIO write.
    pub fn kick(&mut self, q: u32) {
        self.set_reg(0x050, q);
        self.dev.process(&mut self.ram);
    }

    /// Used elements (id, len) published in queue `q` since the last call.
    pub fn take_used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let dq = &mut self.queues[q];
        let mut b = [0u8; 2];
        self.ram.read(dq.used + 2, &mut b).unwrap();
        let idx = u16::from_le_bytes(b);
        let mut out = Vec::new();
        while dq.used_seen != idx {
            let slot = u64::from(dq.used_seen % dq.size);
            let e = self.ram.read_u64(dq.used + 4 + 8 * slot).unwrap();
            out.push((e as u32, (e >> 32) as u32));
            dq.used_seen = dq.used_seen.wrapping_add(1);
        }
        out
    }

    /// Acknowledges every pending interrupt, returning InterruptStatus.
    pub fn ack(&mut self) -> u32 {
        let s = self.reg(0x060);
        self.set_reg(0x064, s);
        s
    }

    /// Guest bytes at `addr`.
    pub fn mem(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.ram.read(addr, &mut v).unwrap();
        v
    }

    /// Whether the device asked for a reset.
    pub fn needs_reset(&mut self) -> bool {
        self.reg(0x070) & STATUS_DEVICE_NEEDS_RESET != 0
    }
}
