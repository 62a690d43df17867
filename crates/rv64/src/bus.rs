//! The hart's view of everything that is not RAM: device registers and the boot ROM.

/// Physical accesses outside RAM. The board implements this; the hart calls it on the slow path.
///
/// `icount` is the calling hart's retired-instruction count at the access, so that a device whose
/// value depends on time (the CLINT's `mtime`) can derive it from the one clock.
pub trait Bus {
    /// Reads `size` (1, 2, 4 or 8) bytes at `paddr`. `None` is an access fault.
    fn read(&mut self, hartid: usize, icount: u64, paddr: u64, size: u8) -> Option<u64>;
    /// Writes the low `size` bytes of `val` at `paddr`. `false` is an access fault.
    ///
    /// After any successful write the hart leaves [`crate::Hart::run`] with [`crate::Exit::Io`],
    /// so the board can update interrupt lines and start device work before the next instruction.
    fn write(&mut self, hartid: usize, icount: u64, paddr: u64, size: u8, val: u64) -> bool;
    /// The value of the `time` CSR (the CLINT's `mtime`) at `icount` of hart `hartid`.
    fn mtime(&mut self, hartid: usize, icount: u64) -> u64;
    /// The machine-wide icount (the log's clock) when hart `hartid` stands at `icount` inside
    /// the current run call, if the bus knows it. For debuggers only.
    fn clock_icount(&self, hartid: usize, icount: u64) -> Option<u64> {
        let _ = (hartid, icount);
        None
    }
}

/// A bus with nothing on it: every access faults and time is the instruction count.
/// Useful for bare-metal programs and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDevices;

impl Bus for NoDevices {
    fn read(&mut self, _: usize, _: u64, _: u64, _: u8) -> Option<u64> {
        None
    }
    fn write(&mut self, _: usize, _: u64, _: u64, _: u8, _: u64) -> bool {
        false
    }
    fn mtime(&mut self, _: usize, icount: u64) -> u64 {
        icount / 10
    }
}
