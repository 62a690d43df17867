//! Saved forms of the board's own devices (CLINT, PLIC, UART, test device): plain data, kept
//! apart from behaviour, for snapshots, the live clone and replay checkpoints. A saved state is
//! untrusted input: `restore` validates it against the device and changes nothing on error.
//! (The virtio devices have their own in [`crate::virtio`]; harts and RAM belong to `rv64`.)

use crate::clint::Clint;
use crate::plic::{Plic, NDEV};
use crate::syscon::{PowerEvent, TestDevice};
use crate::uart::Uart;

/// Errors restoring a saved device state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// saved {device} state is for {saved} harts, but this machine has {actual}
    #[error("saved {device} state is for {saved} harts, but this machine has {actual}")]
    HartCount {
        /// Which device.
        device: &'static str,
        /// Harts in the saved state.
        saved: usize,
        /// Harts in this machine.
        actual: usize,
    },
    /// saved {device} state is malformed: {why}
    #[error("saved {device} state is malformed: {why}")]
    Malformed {
        /// Which device.
        device: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

/// The CLINT's registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClintState {
    /// MSIP of each hart.
    pub msip: Vec<bool>,
    /// `mtimecmp` of each hart.
    pub mtimecmp: Vec<u64>,
    /// Offset from the raw clock to the guest's `mtime`.
    pub mtime_offset: u64,
}

/// The PLIC's registers and gateway state (bit vectors are 32-bit words, source n at bit n).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlicState {
    /// Priority of sources 0..=NDEV.
    pub priority: Vec<u32>,
    /// Line levels.
    pub level: Vec<u32>,
    /// Pending bits.
    pub pending: Vec<u32>,
    /// Claimed (in service) bits.
    pub claimed: Vec<u32>,
    /// Enable bits of each context.
    pub enable: Vec<Vec<u32>>,
    /// Threshold of each context.
    pub threshold: Vec<u32>,
}

/// The UART's registers and FIFOs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UartState {
    /// Input waiting on the line.
    pub line: Vec<u8>,
    /// Receive FIFO.
    pub rx: Vec<u8>,
    /// IER, LCR, MCR, SCR, DLL, DLM.
    pub regs: [u8; 6],
    /// FIFOs enabled (FCR bit 0).
    pub fifo_enabled: bool,
    /// Overrun error latched.
    pub overrun: bool,
    /// THR-empty interrupt pending.
    pub thre_pending: bool,
}

/// The test device's undelivered power request.
pub type TestDeviceState = Option<PowerEvent>;

impl Clint {
    /// The saved form.
    pub fn save(&self) -> ClintState {
        let (msip, mtimecmp, mtime_offset) = self.parts();
        ClintState {
            msip: msip.to_vec(),
            mtimecmp: mtimecmp.to_vec(),
            mtime_offset,
        }
    }

    /// Restores a saved form for the same number of harts.
    pub fn restore(&mut self, s: &ClintState) -> Result<(), StateError> {
        let harts = self.parts().0.len();
        for saved in [s.msip.len(), s.mtimecmp.len()] {
            if saved != harts {
                return Err(StateError::HartCount {
                    device: "CLINT",
                    saved,
                    actual: harts,
                });
            }
        }
        self.set_parts(&s.msip, &s.mtimecmp, s.mtime_offset);
        Ok(())
    }
}

impl Plic {
    /// The saved form.
    pub fn save(&self) -> PlicState {
        let p = self.parts();
        PlicState {
            priority: p.priority.to_vec(),
            level: p.level.to_vec(),
            pending: p.pending.to_vec(),
            claimed: p.claimed.to_vec(),
            enable: p.enable.iter().map(|e| e.to_vec()).collect(),
            threshold: p.threshold.to_vec(),
        }
    }

    /// Restores a saved form for the same number of harts, with every value in range.
    pub fn restore(&mut self, s: &PlicState) -> Result<(), StateError> {
        let bad = |why| StateError::Malformed {
            device: "PLIC",
            why,
        };
        let contexts = self.parts().threshold.len();
        if s.threshold.len() != contexts || s.enable.len() != contexts {
            return Err(StateError::HartCount {
                device: "PLIC",
                saved: s.threshold.len() / 2,
                actual: contexts / 2,
            });
        }
        if s.priority.len() != NDEV as usize + 1 || s.priority.iter().any(|&p| p > 7) {
            return Err(bad("priorities"));
        }
        if s.threshold.iter().any(|&t| t > 7) {
            return Err(bad("thresholds"));
        }
        let words = |v: &Vec<u32>| v.len() == self.parts().level.len();
        if ![&s.level, &s.pending, &s.claimed].into_iter().all(words) || !s.enable.iter().all(words)
        {
            return Err(bad("bit vector length"));
        }
        if s.pending.iter().zip(&s.claimed).any(|(p, c)| p & c != 0) {
            return Err(bad("a source both pending and claimed"));
        }
        self.set_parts(s);
        Ok(())
    }
}

impl Uart {
    /// The saved form.
    pub fn save(&self) -> UartState {
        self.state()
    }

    /// Restores a saved form.
    pub fn restore(&mut self, s: &UartState) -> Result<(), StateError> {
        if s.rx.len() > 16 || (!s.fifo_enabled && s.rx.len() > 1) {
            return Err(StateError::Malformed {
                device: "UART",
                why: "receive FIFO overfull",
            });
        }
        if s.regs[0] > 0x0f {
            return Err(StateError::Malformed {
                device: "UART",
                why: "IER",
            });
        }
        self.set_state(s);
        Ok(())
    }
}

impl TestDevice {
    /// The saved form.
    pub fn save(&self) -> TestDeviceState {
        self.pending_event()
    }

    /// Restores a saved form (any value is valid).
    pub fn restore(&mut self, s: &TestDeviceState) {
        self.set_event(*s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uart::NullSerial;

    #[test]
    fn round_trips_and_validation() {
        let mut c = Clint::new(2);
        assert!(c.write(0x4008, 8, 77, 0));
        assert!(c.write(4, 4, 1, 0));
        let s = c.save();
        let mut c2 = Clint::new(2);
        c2.restore(&s).unwrap();
        assert_eq!(c2, c);
        assert!(matches!(
            Clint::new(3).restore(&s),
            Err(StateError::HartCount { .. })
        ));

        let mut p = Plic::new(1);
        assert!(p.write(40, 4, 3));
        assert!(p.write(0x2000, 4, 1 << 10));
        p.set_level(10, true);
        let s = p.save();
        let mut p2 = Plic::new(1);
        p2.restore(&s).unwrap();
        assert_eq!(p2, p);
        let mut bad = s.clone();
        bad.priority[3] = 8;
        assert!(p2.restore(&bad).is_err());
        let mut bad = s.clone();
        bad.claimed = bad.pending.clone();
        assert!(p2.restore(&bad).is_err());
        assert!(Plic::new(2).restore(&s).is_err());

        let mut u = Uart::new(Box::new(NullSerial));
        u.write(2, 1, 1);
        u.write(1, 1, 5);
        u.push_input(b"0123456789abcdefghij");
        let s = u.save();
        assert_eq!(s.rx.len(), 16);
        assert_eq!(s.line, b"ghij");
        let mut u2 = Uart::new(Box::new(NullSerial));
        u2.restore(&s).unwrap();
        assert_eq!(u2.save(), s);
        let mut bad = s.clone();
        bad.fifo_enabled = false;
        assert!(u2.restore(&bad).is_err());

        let mut t = TestDevice::default();
        t.restore(&Some(PowerEvent::Fail(3)));
        assert_eq!(t.take_event(), Some(PowerEvent::Fail(3)));
    }
}
