//! A virtio-mmio slot's saved form in a snapshot's virtio section: the transport's registers,
//! each queue's, and the device's own state as bytes (a disk's requests in flight, encoded by
//! the device: `block.rs`). The state types are [`VirtioMmioState`] and [`VirtqState`].

use super::{VirtioMmioState, VirtqState};
use crate::codec::{CodecError, Dec, Enc};

impl VirtioMmioState {
    /// Writes this state in the snapshot's encoding (registers, queues, then the device's own bytes).
    pub(crate) fn encode(&self, e: &mut Enc) {
        let s = self;
        e.u32(s.device_id);
        e.u32(s.status);
        e.u64(s.driver_features);
        e.u32(s.device_features_sel);
        e.u32(s.driver_features_sel);
        e.u32(s.queue_sel);
        e.u32(s.interrupt_status);
        e.u32(s.config_generation);
        e.u32(s.pending_notify);
        e.len(s.queues.len());
        for q in &s.queues {
            e.u16(q.size);
            e.bool(q.ready);
            e.u64(q.desc_addr);
            e.u64(q.avail_addr);
            e.u64(q.used_addr);
            e.u16(q.next_avail);
            e.u16(q.next_used);
        }
        e.bytes(&s.device);
    }

    /// Reads what [`VirtioMmioState::encode`] wrote.
    pub(crate) fn decode(d: &mut Dec) -> Result<Self, CodecError> {
        let mut s = VirtioMmioState {
            device_id: d.u32()?,
            status: d.u32()?,
            driver_features: d.u64()?,
            device_features_sel: d.u32()?,
            driver_features_sel: d.u32()?,
            queue_sel: d.u32()?,
            interrupt_status: d.u32()?,
            config_generation: d.u32()?,
            pending_notify: d.u32()?,
            queues: Vec::new(),
            device: Vec::new(),
        };
        let n = d.count(31)?;
        for _ in 0..n {
            s.queues.push(VirtqState {
                size: d.u16()?,
                ready: d.bool()?,
                desc_addr: d.u64()?,
                avail_addr: d.u64()?,
                used_addr: d.u64()?,
                next_avail: d.u16()?,
                next_used: d.u16()?,
            });
        }
        s.device = d.bytes()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoding_round_trips_and_truncations_are_errors() {
        let s = VirtioMmioState {
            device_id: 2,
            status: 15,
            driver_features: 1 << 32,
            device_features_sel: 1,
            driver_features_sel: 0,
            queue_sel: 0,
            interrupt_status: 1,
            config_generation: 3,
            pending_notify: 1,
            queues: vec![VirtqState {
                size: 128,
                ready: true,
                desc_addr: 0x8010_0000,
                avail_addr: 0x8010_0800,
                used_addr: 0x8010_1000,
                next_avail: 7,
                next_used: 6,
            }],
            device: vec![1, 2, 3],
        };
        let mut e = Enc::default();
        s.encode(&mut e);
        let mut d = Dec {
            buf: &e.0,
            section: "virtio",
        };
        let back = VirtioMmioState::decode(&mut d).unwrap();
        assert!(d.buf.is_empty());
        let mut e2 = Enc::default();
        back.encode(&mut e2);
        assert_eq!(e2.0, e.0);
        for n in 0..e.0.len() {
            let mut d = Dec {
                buf: &e.0[..n],
                section: "virtio",
            };
            assert!(VirtioMmioState::decode(&mut d).is_err(), "{n} bytes");
        }
    }
}
