//! The test device's saved form (Firecracker's persist pattern): its undelivered power request,
//! and its encoding in a snapshot's test section (0 none, 1 power off, 2 failure and its code,
//! 3 reset).

use super::{PowerEvent, TestDevice};
use crate::codec::{CodecError, Dec, Enc};

/// The test device's undelivered power request.
pub type TestDeviceState = Option<PowerEvent>;

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

/// Writes a saved test device in the snapshot's encoding.
pub(crate) fn encode(e: &mut Enc, s: Option<PowerEvent>) {
    match s {
        None => e.u8(0),
        Some(PowerEvent::PowerOff) => e.u8(1),
        Some(PowerEvent::Fail(code)) => {
            e.u8(2);
            e.u16(code);
        }
        Some(PowerEvent::Reset) => e.u8(3),
    }
}

/// Reads what [`encode`] wrote.
pub(crate) fn decode(d: &mut Dec) -> Result<Option<PowerEvent>, CodecError> {
    Ok(match d.u8()? {
        0 => None,
        1 => Some(PowerEvent::PowerOff),
        2 => Some(PowerEvent::Fail(d.u16()?)),
        3 => Some(PowerEvent::Reset),
        t => return Err(d.bad(format!("power event {t}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut t = TestDevice::default();
        t.restore(&Some(PowerEvent::Fail(3)));
        assert_eq!(t.take_event(), Some(PowerEvent::Fail(3)));
        for s in [
            None,
            Some(PowerEvent::PowerOff),
            Some(PowerEvent::Fail(7)),
            Some(PowerEvent::Reset),
        ] {
            let mut e = Enc::default();
            encode(&mut e, s);
            let mut d = Dec {
                buf: &e.0,
                section: "test",
            };
            assert_eq!(decode(&mut d).unwrap(), s);
        }
        let mut d = Dec {
            buf: &[9],
            section: "test",
        };
        assert!(decode(&mut d).is_err());
    }
}
