//! The PLIC's saved form (Firecracker's persist pattern): plain data, its validation on
//! restore, and its encoding in a snapshot's PLIC section. A saved state is untrusted input:
//! `restore` validates it against the device and changes nothing on error.

use super::{Plic, NDEV};
use crate::codec::{CodecError, Dec, Enc};
use crate::persist::StateError;

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

impl PlicState {
    /// Writes this state in the snapshot's encoding (priorities, levels, pending, claimed, enables per context, thresholds).
    pub(crate) fn encode(&self, e: &mut Enc) {
        let s = self;
        e.u32s(&s.priority);
        e.u32s(&s.level);
        e.u32s(&s.pending);
        e.u32s(&s.claimed);
        e.len(s.enable.len());
        s.enable.iter().for_each(|v| e.u32s(v));
        e.u32s(&s.threshold);
    }

    /// Reads what [`PlicState::encode`] wrote.
    pub(crate) fn decode(d: &mut Dec) -> Result<Self, CodecError> {
        let priority = d.u32s()?;
        let level = d.u32s()?;
        let pending = d.u32s()?;
        let claimed = d.u32s()?;
        let n = d.count(4)?;
        let enable = (0..n).map(|_| d.u32s()).collect::<Result<_, _>>()?;
        Ok(PlicState {
            priority,
            level,
            pending,
            claimed,
            enable,
            threshold: d.u32s()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PlicState {
        let mut p = Plic::new(1);
        assert!(p.write(40, 4, 3));
        assert!(p.write(0x2000, 4, 1 << 10));
        p.set_level(10, true);
        p.save()
    }

    #[test]
    fn round_trips_and_validation() {
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
    }

    #[test]
    fn the_encoding_round_trips() {
        crate::codec::assert_round_trips(&sample(), PlicState::encode, PlicState::decode);
    }
}
