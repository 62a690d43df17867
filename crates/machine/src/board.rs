//! The physical address map of the QEMU `virt` board and the [`rv64::Bus`] that routes each
//! access outside RAM to its device. An address that no device claims is an access fault.
//!
//! | device | base | size |
//! |---|---|---|
//! | boot ROM | 0x0000_1000 | 0xf000 |
//! | test / syscon | 0x0010_0000 | 0x1000 |
//! | CLINT | 0x0200_0000 | 0x1_0000 |
//! | PLIC | 0x0c00_0000 | 0x60_0000 |
//! | UART0 | 0x1000_0000 | 0x100 |
//! | virtio-mmio slot n | 0x1000_1000 + n·0x1000 | 0x1000 |
//! | RAM | 0x8000_0000 | `--mem` |

use crate::clint::{self, Clint};
use crate::clock;
use crate::plic::{self, Plic};
use crate::rom;
use crate::syscon::{self, TestDevice};
use crate::uart::{self, Uart};
use crate::virtio::VirtioMmio;
use rv64::trap::irq;
use rv64::{Bus, Ram};

/// Start of RAM.
pub const RAM_BASE: u64 = 0x8000_0000;
/// Number of virtio-mmio slots.
pub const VIRTIO_SLOTS: usize = 8;
/// Base of slot 0.
pub const VIRTIO_BASE: u64 = 0x1000_1000;
/// Size of each slot's window.
pub const VIRTIO_SLOT_SIZE: u64 = 0x1000;

/// Base address of virtio-mmio slot `slot`.
pub fn virtio_base(slot: usize) -> u64 {
    VIRTIO_BASE + slot as u64 * VIRTIO_SLOT_SIZE
}

/// PLIC source of virtio-mmio slot `slot`.
pub fn virtio_irq(slot: usize) -> u32 {
    1 + slot as u32
}

/// What sits in a virtio-mmio slot.
#[derive(Debug)]
pub enum Slot {
    /// Nothing: the registers of a virtio-mmio transport with device id 0, as QEMU shows an
    /// unused slot, so that drivers probing every slot listed in the device tree skip it.
    Empty,
    /// A device.
    Device(Box<VirtioMmio>),
}

impl Slot {
    fn read(&mut self, offset: u64, size: u8) -> Option<u64> {
        match self {
            Slot::Device(d) => d.read(offset, size),
            Slot::Empty => {
                if size != 4 || !offset.is_multiple_of(4) {
                    return None;
                }
                Some(match offset {
                    0x000 => 0x7472_6976, // "virt"
                    0x004 => 2,           // version: modern
                    0x00c => 0x554d_4551, // vendor "QEMU"
                    _ => 0,
                })
            }
        }
    }

    fn write(&mut self, offset: u64, size: u8, val: u64) -> bool {
        match self {
            Slot::Device(d) => d.write(offset, size, val),
            Slot::Empty => size == 4 && offset.is_multiple_of(4),
        }
    }

    fn irq_level(&self) -> bool {
        match self {
            Slot::Device(d) => d.irq_level(),
            Slot::Empty => false,
        }
    }

    fn process(&mut self, ram: &mut Ram) {
        if let Slot::Device(d) = self {
            d.process(ram);
        }
    }
}

/// Every device of the board, and the bookkeeping that maps a hart's instruction count to the
/// machine-wide one while that hart runs.
#[derive(Debug)]
pub struct Board {
    pub(crate) rom: Vec<u8>,
    pub(crate) test: TestDevice,
    pub(crate) clint: Clint,
    pub(crate) plic: Plic,
    pub(crate) uart: Uart,
    pub(crate) slots: Vec<Slot>,
    /// (machine-wide icount, running hart's icount) when the current slice started.
    slice: (u64, u64),
    /// Guest time as a function of the icount (time-sync jumps and rate changes included).
    pub(crate) clock: clock::Clock,
}

impl Board {
    /// A board for `harts` harts with the given boot ROM image, UART and slot contents (padded
    /// with empty slots to [`VIRTIO_SLOTS`]).
    pub fn new(harts: usize, rom: Vec<u8>, uart: Uart, mut slots: Vec<Slot>) -> Board {
        slots.truncate(VIRTIO_SLOTS);
        slots.resize_with(VIRTIO_SLOTS, || Slot::Empty);
        Board {
            rom,
            test: TestDevice::default(),
            clint: Clint::new(harts),
            plic: Plic::new(harts),
            uart,
            slots,
            slice: (0, 0),
            clock: clock::Clock::default(),
        }
    }

    /// The CLINT.
    pub fn clint(&self) -> &Clint {
        &self.clint
    }

    /// The PLIC.
    pub fn plic(&self) -> &Plic {
        &self.plic
    }

    /// UART0.
    pub fn uart(&self) -> &Uart {
        &self.uart
    }

    /// The virtio-mmio slots, slot 0 first.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Records that a hart whose own count is `hart_icount` starts a slice at machine-wide
    /// `icount`, so that its accesses to time resolve against the machine clock.
    pub(crate) fn begin_slice(&mut self, icount: u64, hart_icount: u64) {
        self.slice = (icount, hart_icount);
    }

    /// The raw clock (see [`clock::Clock`]) when the running hart is at `hart_icount`.
    fn raw_time(&self, hart_icount: u64) -> u64 {
        self.clock.raw(
            self.slice
                .0
                .wrapping_add(hart_icount.wrapping_sub(self.slice.1)),
        )
    }

    /// Copies every device's interrupt line into the PLIC.
    pub(crate) fn update_plic(&mut self) {
        self.plic.set_level(uart::IRQ, self.uart.irq_level());
        for (n, s) in self.slots.iter().enumerate() {
            self.plic.set_level(virtio_irq(n), s.irq_level());
        }
    }

    /// Lets every virtio device do its pending work, then refreshes the PLIC.
    pub(crate) fn process_devices(&mut self, ram: &mut Ram) {
        for s in &mut self.slots {
            s.process(ram);
        }
        self.update_plic();
    }

    /// The device-driven `mip` bits of `hart` at raw clock `raw`.
    pub(crate) fn irq_lines(&self, hart: usize, raw: u64) -> u64 {
        let mut bits = 0;
        if self.clint.msip(hart) {
            bits |= 1 << irq::MSI;
        }
        if self.clint.mtip(hart, raw) {
            bits |= 1 << irq::MTI;
        }
        if self.plic.irq(2 * hart) {
            bits |= 1 << irq::MEI;
        }
        if self.plic.irq(2 * hart + 1) {
            bits |= 1 << irq::SEI;
        }
        bits
    }
}

fn within(paddr: u64, base: u64, size: u64) -> Option<u64> {
    let off = paddr.wrapping_sub(base);
    (off < size).then_some(off)
}

impl Bus for Board {
    fn read(&mut self, _hartid: usize, icount: u64, paddr: u64, size: u8) -> Option<u64> {
        if !matches!(size, 1 | 2 | 4 | 8) {
            return None;
        }
        if let Some(off) = within(paddr, rom::BASE, rom::SIZE) {
            return rom::read(&self.rom, off, size);
        }
        if let Some(off) = within(paddr, syscon::BASE, syscon::SIZE) {
            return self.test.read(off, size);
        }
        if let Some(off) = within(paddr, clint::BASE, clint::SIZE) {
            return self.clint.read(off, size, self.raw_time(icount));
        }
        if let Some(off) = within(paddr, plic::BASE, plic::SIZE) {
            return self.plic.read(off, size);
        }
        if let Some(off) = within(paddr, uart::BASE, uart::SIZE) {
            let v = self.uart.read(off, size);
            // Reads change the UART's interrupt (RBR, IIR, LSR): keep the PLIC's view exact
            // so that a later completion resamples the true level.
            self.plic.set_level(uart::IRQ, self.uart.irq_level());
            return v;
        }
        if let Some(off) = within(paddr, VIRTIO_BASE, VIRTIO_SLOT_SIZE * VIRTIO_SLOTS as u64) {
            let n = (off / VIRTIO_SLOT_SIZE) as usize;
            let slot = self.slots.get_mut(n)?;
            let v = slot.read(off % VIRTIO_SLOT_SIZE, size);
            self.plic.set_level(virtio_irq(n), slot.irq_level());
            return v;
        }
        None
    }

    fn write(&mut self, _hartid: usize, icount: u64, paddr: u64, size: u8, val: u64) -> bool {
        if !matches!(size, 1 | 2 | 4 | 8) {
            return false;
        }
        if within(paddr, rom::BASE, rom::SIZE).is_some() {
            return false;
        }
        if let Some(off) = within(paddr, syscon::BASE, syscon::SIZE) {
            return self.test.write(off, size, val);
        }
        if let Some(off) = within(paddr, clint::BASE, clint::SIZE) {
            let raw = self.raw_time(icount);
            return self.clint.write(off, size, val, raw);
        }
        if let Some(off) = within(paddr, plic::BASE, plic::SIZE) {
            return self.plic.write(off, size, val);
        }
        if let Some(off) = within(paddr, uart::BASE, uart::SIZE) {
            let ok = self.uart.write(off, size, val);
            self.plic.set_level(uart::IRQ, self.uart.irq_level());
            return ok;
        }
        if let Some(off) = within(paddr, VIRTIO_BASE, VIRTIO_SLOT_SIZE * VIRTIO_SLOTS as u64) {
            let n = (off / VIRTIO_SLOT_SIZE) as usize;
            let Some(slot) = self.slots.get_mut(n) else {
                return false;
            };
            let ok = slot.write(off % VIRTIO_SLOT_SIZE, size, val);
            self.plic.set_level(virtio_irq(n), slot.irq_level());
            return ok;
        }
        false
    }

    fn mtime(&mut self, _hartid: usize, icount: u64) -> u64 {
        self.clint.mtime(self.raw_time(icount))
    }

    fn clock_icount(&self, _hartid: usize, icount: u64) -> Option<u64> {
        Some(self.slice.0.wrapping_add(icount.wrapping_sub(self.slice.1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uart::NullSerial;

    fn board() -> Board {
        let uart = Uart::new(Box::new(NullSerial));
        Board::new(
            2,
            rom::build(0x8000_0000, 0x8fe0_0000, 0x8020_0000),
            uart,
            Vec::new(),
        )
    }

    #[test]
    fn routing_and_unmapped_faults() {
        let mut b = board();
        assert_eq!(b.read(0, 0, 0x1018, 8), Some(0x8000_0000));
        assert!(!b.write(0, 0, 0x1000, 4, 0), "ROM is read-only");
        assert_eq!(b.read(0, 0, 0x0, 4), None);
        assert_eq!(b.read(0, 0, 0xfff, 1), None);
        assert_eq!(b.read(0, 0, 0x10_1000, 4), None);
        assert_eq!(b.read(0, 0, 0x1000_0100, 1), None);
        assert_eq!(b.read(0, 0, 0x1000_9000, 4), None);
        assert_eq!(b.read(0, 0, 0x4000_0000, 4), None);
        assert!(!b.write(0, 0, 0x7fff_fff8, 8, 0));
        assert_eq!(b.read(0, 0, 0x1000_0005, 1), Some(0x60), "UART LSR");
        assert_eq!(
            b.read(0, 0, 0x1000_1000, 4),
            Some(0x7472_6976),
            "empty slot magic"
        );
        assert_eq!(
            b.read(0, 0, 0x1000_8008, 4),
            Some(0),
            "empty slot device id"
        );
        assert_eq!(b.read(0, 0, 0x1000_0000, 3), None);
    }

    #[test]
    fn time_follows_the_machine_clock() {
        let mut b = board();
        b.begin_slice(1_000, 50);
        // The hart is 200 steps into the slice: machine icount 1200 → mtime 120.
        assert_eq!(b.mtime(0, 250), 120);
        assert_eq!(b.read(0, 250, clint::BASE + 0xbff8, 8), Some(120));
        assert!(b.write(1, 250, clint::BASE + 0x4008, 8, 121));
        assert_eq!(b.irq_lines(1, 120), 0);
        assert_eq!(b.irq_lines(1, 121), 1 << irq::MTI);
        assert!(b.write(0, 0, clint::BASE, 4, 1));
        assert_eq!(b.irq_lines(0, 0), 1 << irq::MSI);
    }

    #[test]
    fn uart_interrupt_reaches_the_s_mode_context() {
        let mut b = board();
        let p = plic::BASE;
        assert!(b.write(0, 0, p + 4 * 10, 4, 1));
        assert!(b.write(0, 0, p + 0x2000 + 0x80 * 3, 4, 1 << 10)); // hart 1, S-mode
        assert!(b.write(0, 0, uart::BASE + 2, 1, 1)); // FIFO on
        assert!(b.write(0, 0, uart::BASE + 1, 1, 1)); // RX interrupt on
        b.uart.push_input(b"x");
        b.update_plic();
        assert_eq!(b.irq_lines(1, 0), 1 << irq::SEI);
        assert_eq!(b.irq_lines(0, 0), 0);
        let claim = p + 0x20_0000 + 0x1000 * 3 + 4;
        assert_eq!(b.read(1, 0, claim, 4), Some(10));
        assert_eq!(b.read(1, 0, uart::BASE, 1), Some(u64::from(b'x')));
        assert!(b.write(1, 0, claim, 4, 10));
        assert_eq!(
            b.irq_lines(1, 0),
            0,
            "no spurious re-trigger after the FIFO drained"
        );
    }
}
