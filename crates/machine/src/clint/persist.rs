//! The CLINT's saved form (Firecracker's persist pattern): plain data, its validation on
//! restore, and its encoding in a snapshot's CLINT section. A saved state is untrusted input:
//! `restore` validates it against the device and changes nothing on error.

use super::Clint;
use crate::codec::{CodecError, Dec, Enc};
use crate::persist::StateError;

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

impl ClintState {
    /// Writes this state in the snapshot's encoding (per hart MSIP and `mtimecmp`, then the `mtime` offset).
    pub(crate) fn encode(&self, e: &mut Enc) {
        let s = self;
        e.len(s.msip.len());
        s.msip.iter().for_each(|&b| e.bool(b));
        e.len(s.mtimecmp.len());
        s.mtimecmp.iter().for_each(|&v| e.u64(v));
        e.u64(s.mtime_offset);
    }

    /// Reads what [`ClintState::encode`] wrote.
    pub(crate) fn decode(d: &mut Dec) -> Result<Self, CodecError> {
        let n = d.count(1)?;
        let msip = (0..n).map(|_| d.bool()).collect::<Result<_, _>>()?;
        let n = d.count(8)?;
        let mtimecmp = (0..n).map(|_| d.u64()).collect::<Result<_, _>>()?;
        Ok(ClintState {
            msip,
            mtimecmp,
            mtime_offset: d.u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClintState {
        let mut c = Clint::new(2);
        assert!(c.write(0x4008, 8, 77, 0));
        assert!(c.write(4, 4, 1, 0));
        c.save()
    }

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
    }

    #[test]
    fn the_encoding_round_trips() {
        crate::codec::assert_round_trips(&sample(), ClintState::encode, ClintState::decode);
    }
}
