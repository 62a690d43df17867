//! The SiFive test device (`sifive,test0`) that QEMU `virt` uses as its syscon: a write to its
//! first register powers the machine off, resets it, or reports a failure with an exit code.

/// Physical base address.
pub const BASE: u64 = 0x10_0000;
/// Size of the register window.
pub const SIZE: u64 = 0x1000;

const FINISHER_FAIL: u64 = 0x3333;
const FINISHER_PASS: u64 = 0x5555;
const FINISHER_RESET: u64 = 0x7777;

/// What the guest asked the machine to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerEvent {
    /// Power off (0x5555).
    PowerOff,
    /// Power off reporting failure with this code (0x3333 | code << 16).
    Fail(u16),
    /// Reset (0x7777).
    Reset,
}

/// The test device: remembers the last power request until the machine takes it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TestDevice {
    event: Option<PowerEvent>,
}

impl TestDevice {
    /// The pending power request, if any, leaving none.
    pub fn take_event(&mut self) -> Option<PowerEvent> {
        self.event.take()
    }

    pub(crate) fn pending_event(&self) -> Option<PowerEvent> {
        self.event
    }

    pub(crate) fn set_event(&mut self, e: Option<PowerEvent>) {
        self.event = e;
    }

    /// Whether a power request is pending.
    pub fn has_event(&self) -> bool {
        self.event.is_some()
    }

    /// A guest read: the register reads as zero. Misaligned accesses fault.
    pub fn read(&self, offset: u64, size: u8) -> Option<u64> {
        (matches!(size, 1 | 2 | 4 | 8) && offset.is_multiple_of(u64::from(size))).then_some(0)
    }

    /// A guest write. Unknown values are ignored, as on QEMU.
    pub fn write(&mut self, offset: u64, size: u8, val: u64) -> bool {
        if !matches!(size, 2 | 4 | 8) || !offset.is_multiple_of(u64::from(size)) {
            return false;
        }
        if offset == 0 {
            let event = match val & 0xffff {
                FINISHER_PASS => Some(PowerEvent::PowerOff),
                FINISHER_RESET => Some(PowerEvent::Reset),
                FINISHER_FAIL if size > 2 => Some(PowerEvent::Fail((val >> 16) as u16)),
                _ => None,
            };
            if event.is_some() {
                self.event = event;
            }
        }
        true
    }
}

pub(crate) mod persist;
pub use persist::TestDeviceState;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finisher_codes() {
        let mut t = TestDevice::default();
        assert!(t.write(0, 4, 0x1234));
        assert_eq!(t.take_event(), None);
        assert!(t.write(0, 4, 0x5555));
        assert_eq!(t.take_event(), Some(PowerEvent::PowerOff));
        assert!(t.write(0, 4, 0x0007_3333));
        assert_eq!(t.take_event(), Some(PowerEvent::Fail(7)));
        assert!(t.write(0, 2, 0x7777));
        assert_eq!(t.take_event(), Some(PowerEvent::Reset));
        assert_eq!(t.take_event(), None);
        assert!(!t.write(1, 4, 0x5555));
        assert!(!t.write(0, 1, 0x55));
        assert_eq!(t.read(0, 4), Some(0));
    }
}
