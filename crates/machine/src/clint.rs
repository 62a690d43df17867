//! The CLINT (SiFive core-local interruptor, as QEMU's ACLINT MSWI + MTIMER emulate it):
//! one software-interrupt bit and one timer compare register per hart, and the shared `mtime`.
//!
//! `mtime` is never stored: it is computed from the machine-wide instruction count by the
//! caller ([`crate::clock`]), plus an offset that only a guest write to `mtime` changes.

/// Physical base address.
pub const BASE: u64 = 0x200_0000;
/// Size of the register window.
pub const SIZE: u64 = 0x1_0000;

const MSIP: u64 = 0x0;
const MTIMECMP: u64 = 0x4000;
const MTIME: u64 = 0xbff8;

/// CLINT registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clint {
    msip: Vec<bool>,
    mtimecmp: Vec<u64>,
    /// Added (wrapping) to the raw time from the clock to give the guest-visible `mtime`.
    mtime_offset: u64,
}

/// Replaces the 4 bytes at byte offset `lo4` (0 or 4) of `old` with the low 4 bytes of `val`,
/// or all of it for an 8-byte access.
fn merge(old: u64, lo4: u64, size: u8, val: u64) -> u64 {
    match (size, lo4) {
        (8, _) => val,
        (_, 0) => (old & !0xffff_ffff) | (val & 0xffff_ffff),
        _ => (old & 0xffff_ffff) | (val << 32),
    }
}

/// Extracts an access of `size` (4 or 8) at byte offset `lo4` (0 or 4) of `reg`.
fn extract(reg: u64, lo4: u64, size: u8) -> u64 {
    match size {
        8 => reg,
        _ => (reg >> (lo4 * 8)) & 0xffff_ffff,
    }
}

impl Clint {
    /// A CLINT for `harts` harts at reset: no software interrupts, every `mtimecmp` at its
    /// maximum (no timer interrupt until the guest programs one).
    pub fn new(harts: usize) -> Self {
        Clint {
            msip: vec![false; harts],
            mtimecmp: vec![u64::MAX; harts],
            mtime_offset: 0,
        }
    }

    pub(crate) fn parts(&self) -> (&[bool], &[u64], u64) {
        (&self.msip, &self.mtimecmp, self.mtime_offset)
    }

    pub(crate) fn set_parts(&mut self, msip: &[bool], mtimecmp: &[u64], mtime_offset: u64) {
        self.msip = msip.to_vec();
        self.mtimecmp = mtimecmp.to_vec();
        self.mtime_offset = mtime_offset;
    }

    /// The guest-visible `mtime` at raw clock value `raw`.
    pub fn mtime(&self, raw: u64) -> u64 {
        raw.wrapping_add(self.mtime_offset)
    }

    /// Hart `hart`'s software interrupt line (MSIP).
    pub fn msip(&self, hart: usize) -> bool {
        self.msip.get(hart).copied().unwrap_or(false)
    }

    /// Hart `hart`'s timer interrupt line (MTIP) at raw clock value `raw`.
    pub fn mtip(&self, hart: usize, raw: u64) -> bool {
        self.mtimecmp
            .get(hart)
            .is_some_and(|&cmp| self.mtime(raw) >= cmp)
    }

    /// The raw clock value at which hart `hart`'s MTIP rises, if it is low at `raw` and will
    /// rise before the raw clock wraps.
    pub fn deadline(&self, hart: usize, raw: u64) -> Option<u64> {
        let cmp = *self.mtimecmp.get(hart)?;
        let now = self.mtime(raw);
        if now >= cmp {
            return None;
        }
        raw.checked_add(cmp - now)
    }

    /// A guest read of `size` bytes at `offset` within the window, at raw clock value `raw`.
    /// `None` (an access fault) for sizes other than 4 and 8 or misaligned accesses.
    pub fn read(&self, offset: u64, size: u8, raw: u64) -> Option<u64> {
        if !matches!(size, 4 | 8) || !offset.is_multiple_of(u64::from(size)) {
            return None;
        }
        let harts = self.msip.len() as u64;
        Some(match offset {
            o if o < MSIP + 4 * harts => {
                if size != 4 {
                    return None;
                }
                u64::from(self.msip[(o / 4) as usize])
            }
            o if (MTIMECMP..MTIMECMP + 8 * harts).contains(&o) => {
                let reg = self.mtimecmp[((o - MTIMECMP) / 8) as usize];
                extract(reg, o % 8, size)
            }
            o if (MTIME..MTIME + 8).contains(&o) => extract(self.mtime(raw), o % 8, size),
            _ => 0,
        })
    }

    /// A guest write; see [`Clint::read`] for which accesses fault.
    pub fn write(&mut self, offset: u64, size: u8, val: u64, raw: u64) -> bool {
        if !matches!(size, 4 | 8) || !offset.is_multiple_of(u64::from(size)) {
            return false;
        }
        let harts = self.msip.len() as u64;
        match offset {
            o if o < MSIP + 4 * harts => {
                if size != 4 {
                    return false;
                }
                self.msip[(o / 4) as usize] = val & 1 != 0;
            }
            o if (MTIMECMP..MTIMECMP + 8 * harts).contains(&o) => {
                let reg = &mut self.mtimecmp[((o - MTIMECMP) / 8) as usize];
                *reg = merge(*reg, o % 8, size, val);
            }
            o if (MTIME..MTIME + 8).contains(&o) => {
                let new = merge(self.mtime(raw), o % 8, size, val);
                self.mtime_offset = new.wrapping_sub(raw);
            }
            _ => {}
        }
        true
    }
}

mod persist;
pub use persist::ClintState;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msip_per_hart() {
        let mut c = Clint::new(2);
        assert!(c.write(4, 4, 1, 0));
        assert!(!c.msip(0));
        assert!(c.msip(1));
        assert_eq!(c.read(4, 4, 0), Some(1));
        assert!(c.write(4, 4, 0xfffe, 0));
        assert!(!c.msip(1));
        assert_eq!(c.read(4, 8, 0), None, "msip is a 32-bit register");
        assert_eq!(c.read(2, 4, 0), None, "misaligned");
        assert_eq!(c.read(0, 1, 0), None);
    }

    #[test]
    fn timer_compare_and_deadline() {
        let mut c = Clint::new(2);
        assert!(!c.mtip(0, 1_000_000));
        assert_eq!(c.deadline(0, 5), Some(u64::MAX));
        assert!(c.write(0x4008, 8, 500, 0));
        assert_eq!(c.read(0x4008, 8, 0), Some(500));
        assert_eq!(c.deadline(1, 100), Some(500));
        assert!(!c.mtip(1, 499));
        assert!(c.mtip(1, 500));
        assert_eq!(c.deadline(1, 600), None);
        // 32-bit halves, as RV32 software writes them.
        assert!(c.write(0x4000, 4, 0xffff_ffff, 0));
        assert!(c.write(0x4004, 4, 0x1, 0));
        assert_eq!(c.read(0x4000, 8, 0), Some(0x1_ffff_ffff));
        assert_eq!(c.read(0x4004, 4, 0), Some(1));
    }

    #[test]
    fn mtime_reads_the_clock_and_writes_shift_it() {
        let mut c = Clint::new(1);
        assert_eq!(c.read(0xbff8, 8, 1234), Some(1234));
        assert_eq!(c.read(0xbffc, 4, 1 << 33), Some(2));
        assert!(c.write(0xbff8, 8, 10_000, 1234));
        assert_eq!(c.read(0xbff8, 8, 1234), Some(10_000));
        assert_eq!(c.read(0xbff8, 8, 1244), Some(10_010));
        assert!(c.write(0x4000, 8, 10_020, 0));
        assert_eq!(c.deadline(0, 1244), Some(1254));
    }

    #[test]
    fn unmapped_offsets_read_zero() {
        let mut c = Clint::new(1);
        assert_eq!(c.read(0x8, 4, 0), Some(0));
        assert_eq!(c.read(0x4008, 8, 0), Some(0));
        assert!(c.write(0x8000, 4, 1, 0));
    }
}
