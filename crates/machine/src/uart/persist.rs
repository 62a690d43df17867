//! The UART's saved form (Firecracker's persist pattern): plain data, its validation on
//! restore, and its encoding in a snapshot's UART section. A saved state is untrusted input:
//! `restore` validates it against the device and changes nothing on error.

use super::Uart;
use crate::codec::{CodecError, Dec, Enc};
use crate::persist::StateError;

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

impl UartState {
    /// Writes this state in the snapshot's encoding (the line, the receive FIFO, six registers, three flags).
    pub(crate) fn encode(&self, e: &mut Enc) {
        let s = self;
        e.bytes(&s.line);
        e.bytes(&s.rx);
        s.regs.iter().for_each(|&r| e.u8(r));
        e.bool(s.fifo_enabled);
        e.bool(s.overrun);
        e.bool(s.thre_pending);
    }

    /// Reads what [`UartState::encode`] wrote.
    pub(crate) fn decode(d: &mut Dec) -> Result<Self, CodecError> {
        Ok(UartState {
            line: d.bytes()?,
            rx: d.bytes()?,
            regs: d.arr()?,
            fifo_enabled: d.bool()?,
            overrun: d.bool()?,
            thre_pending: d.bool()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uart::NullSerial;

    fn sample() -> UartState {
        let mut u = Uart::new(Box::new(NullSerial));
        u.write(2, 1, 1);
        u.write(1, 1, 5);
        u.push_input(b"0123456789abcdefghij");
        u.save()
    }

    #[test]
    fn round_trips_and_validation() {
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
    }

    #[test]
    fn the_encoding_round_trips() {
        crate::codec::assert_round_trips(&sample(), UartState::encode, UartState::decode);
    }
}
