//! virtio-net (device id 1, virtio 1.2 §5.1): receiveq 0 and transmitq 1 in front of a
//! [`NetBackend`], with no offloads, no control queue and no mergeable receive buffers.
//!
//! Features offered: `VIRTIO_F_VERSION_1`, `VIRTIO_F_RING_INDIRECT_DESC`, `VIRTIO_NET_F_MAC`
//! (the configured MAC), `VIRTIO_NET_F_STATUS` (the link is always up) and `VIRTIO_NET_F_MTU`
//! (1500). The MTU is offered so that the guest cannot raise its MTU above what fits its
//! receive buffers: without mergeable buffers or GSO, Linux posts buffers of 1518 bytes plus the
//! header, and a gateway such as passt would otherwise announce a 65520-byte MTU over DHCP.
//!
//! Every buffer starts with the 12-byte `virtio_net_hdr` of virtio 1.x (`num_buffers`
//! included). On transmit the header is read and ignored (no offloads were negotiated); on
//! receive it is all zero but `num_buffers` = 1.
//!
//! Determinism: a received frame is taken from the backend only inside a device pass
//! ([`VirtioMmio::process`]) and only when the guest has posted a receive buffer, so a frame is
//! taken exactly when it can be delivered, at an instruction count the record/replay layer
//! logs. A frame that does not fit the posted buffer, or is longer than [`MAX_FRAME`], is
//! dropped and counted ([`NetStats`]); a malformed transmit chain completes with nothing sent.
//! Neither is ever a panic or a device reset. The device keeps no state between passes beyond
//! the transport's (the MAC is configuration, the link status constant), so the transport's
//! saved state ([`super::VirtioMmioState`]) is the whole device in a snapshot; the counters are
//! host-side diagnostics and are not saved.

use super::{
    read_config_bytes, QueueError, VirtioDevice, VirtioMmio, Virtq, VIRTIO_F_RING_INDIRECT_DESC,
    VIRTIO_F_VERSION_1, VIRTIO_ID_NET,
};
use rv64::Ram;

/// Feature: the device reports its maximum MTU in the configuration.
pub const VIRTIO_NET_F_MTU: u64 = 1 << 3;
/// Feature: the device has a MAC address in its configuration.
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// Feature: the configuration's `status` field is valid.
pub const VIRTIO_NET_F_STATUS: u64 = 1 << 16;
/// `status` bit: the link is up.
pub const VIRTIO_NET_S_LINK_UP: u16 = 1;

/// Length of `struct virtio_net_hdr` in virtio 1.x (with `num_buffers`).
pub const NET_HDR_LEN: usize = 12;
/// The largest frame the device moves in either direction (without the header).
pub const MAX_FRAME: usize = 65535;
/// The MTU offered to the guest.
pub const MTU: u16 = 1500;
/// The MAC address used when none is configured (QEMU's default).
pub const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// QueueNumMax of both queues (QEMU's default).
const QUEUE_SIZE: u16 = 256;
/// Receive queue index.
const RECEIVEQ: usize = 0;
/// Transmit queue index.
const TRANSMITQ: usize = 1;
/// At most this many frames are taken from the backend in one pass, so that a backend that
/// never runs dry cannot hold the machine in one pass.
const MAX_RX_PER_PASS: usize = 256;

/// The outside end of a network card, seen from the device.
pub trait NetBackend: Send {
    /// Sends a frame the guest transmitted (without the virtio header). Never blocks for long;
    /// a backend that cannot send drops the frame (and counts it).
    fn transmit(&mut self, frame: &[u8]);
    /// The next received frame, if one is waiting; never blocks. The device calls it only
    /// during a device pass and only when the guest has posted a receive buffer.
    fn receive(&mut self) -> Option<Vec<u8>>;
    /// The machine that has this backend hands over its host loop's [`crate::wake::Waker`]
    /// (`Machine::set_waker`, `Machine::replace_net`): a backend that receives frames on a
    /// thread of its own calls it when one arrives, so that a host loop waiting while the guest
    /// idles wakes up for it. Wrappers pass it on. The default: nothing to wake for.
    fn set_wake(&mut self, wake: &crate::wake::Waker) {
        let _ = wake;
    }
    /// What this backend is, with the layers under it for a wrapper (`"recording(tap)"`): a
    /// test compares the stacks, so a layer that should have gone shows. The default: the
    /// type's name without its path.
    fn describe(&self) -> String {
        crate::virtio::short_type_name(std::any::type_name::<Self>())
    }
    /// A wrapper taken off: gives back the backend it wraps (the wrapper is dropped next and
    /// must not be used again). `None`: this backend wraps nothing it can give back.
    fn take_inner(&mut self) -> Option<Box<dyn NetBackend>> {
        None
    }
}

/// A network card with no cable: frames sent are dropped, none arrive.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullNet;

impl NetBackend for NullNet {
    fn transmit(&mut self, _: &[u8]) {}
    fn receive(&mut self) -> Option<Vec<u8>> {
        None
    }
}

/// What a network device has done since it was built (host diagnostics, not saved).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Received frames dropped because they did not fit the posted buffer or [`MAX_FRAME`].
    pub rx_oversized: u64,
    /// Received frames dropped because the posted buffer lies outside RAM.
    pub rx_bad_buffer: u64,
    /// Frames the guest transmitted and the backend was given.
    pub tx_frames: u64,
    /// Transmit chains dropped: shorter than the header, longer than [`MAX_FRAME`], or
    /// outside RAM.
    pub tx_malformed: u64,
}

impl VirtioMmio {
    /// A virtio-net device with MAC `mac` in front of `backend`.
    pub fn net(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> VirtioMmio {
        VirtioMmio::new(Box::new(Net::new(backend, mac)))
    }
}

/// The virtio-net device model.
struct Net {
    backend: Box<dyn NetBackend>,
    /// `struct virtio_net_config` (§5.1.4): mac, status, max_virtqueue_pairs, mtu.
    config: [u8; 12],
    stats: NetStats,
    bounce: Vec<u8>,
}

impl Net {
    fn new(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> Net {
        let mut config = [0u8; 12];
        config[..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&MTU.to_le_bytes());
        Net {
            backend,
            config,
            stats: NetStats::default(),
            bounce: Vec::new(),
        }
    }

    /// Sends every frame the guest has queued.
    fn transmit(&mut self, q: &mut Virtq, ram: &mut Ram) -> Result<(), QueueError> {
        while let Some(chain) = q.pop(ram)? {
            let len = chain.readable_len();
            let ok = len >= NET_HDR_LEN as u64 && len - NET_HDR_LEN as u64 <= MAX_FRAME as u64;
            let sent = ok && {
                // Bounded by MAX_FRAME just above.
                self.bounce.resize((len - NET_HDR_LEN as u64) as usize, 0);
                chain
                    .read_at(ram, NET_HDR_LEN as u64, &mut self.bounce)
                    .is_ok()
            };
            if sent {
                self.backend.transmit(&self.bounce);
                self.stats.tx_frames += 1;
            } else {
                self.stats.tx_malformed += 1;
            }
            q.add_used(ram, chain.head, 0)?;
        }
        Ok(())
    }

    /// Delivers waiting frames while the guest has receive buffers posted.
    fn receive(&mut self, q: &mut Virtq, ram: &mut Ram) -> Result<(), QueueError> {
        let mut header = [0u8; NET_HDR_LEN];
        header[10..12].copy_from_slice(&1u16.to_le_bytes()); // num_buffers
        for _ in 0..MAX_RX_PER_PASS {
            let Some(chain) = q.pop(ram)? else {
                return Ok(());
            };
            let Some(frame) = self.backend.receive() else {
                q.undo_pop();
                return Ok(());
            };
            let room = chain.writable_len().saturating_sub(NET_HDR_LEN as u64);
            if frame.len() > MAX_FRAME || frame.len() as u64 > room {
                // The buffer stays the guest's, for the next frame.
                self.stats.rx_oversized += 1;
                q.undo_pop();
                continue;
            }
            let written = chain
                .write_at(ram, 0, &header)
                .and_then(|()| chain.write_at(ram, NET_HDR_LEN as u64, &frame));
            let used = match written {
                Ok(()) => {
                    self.stats.rx_frames += 1;
                    // At most MAX_FRAME + NET_HDR_LEN.
                    (NET_HDR_LEN + frame.len()) as u32
                }
                Err(_) => {
                    self.stats.rx_bad_buffer += 1;
                    0
                }
            };
            q.add_used(ram, chain.head, used)?;
        }
        Ok(())
    }
}

impl VirtioDevice for Net {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_NET
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
            | VIRTIO_F_RING_INDIRECT_DESC
            | VIRTIO_NET_F_MAC
            | VIRTIO_NET_F_STATUS
            | VIRTIO_NET_F_MTU
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }
    fn config_read(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn net_backend_mut(&mut self) -> Option<&mut Box<dyn NetBackend>> {
        Some(&mut self.backend)
    }
    fn net_backend(&self) -> Option<&dyn NetBackend> {
        Some(self.backend.as_ref())
    }
    fn net_stats(&self) -> Option<NetStats> {
        Some(self.stats)
    }
    fn process(
        &mut self,
        queues: &mut [Virtq],
        notified: u32,
        _features: u64,
        ram: &mut Ram,
    ) -> Result<(), QueueError> {
        let (rx, tx) = queues.split_at_mut(TRANSMITQ);
        if notified & (1 << TRANSMITQ) != 0 {
            self.transmit(&mut tx[0], ram)?;
        }
        // Input of the device's own: looked at on every pass, not only after a notify.
        self.receive(&mut rx[RECEIVEQ], ram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testutil::{Driver, BASE, DATA};
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// Frames to hand to the guest and frames the guest sent, shared with the test.
    /// Frames to receive, frames sent, calls of `receive`.
    type Frames = (VecDeque<Vec<u8>>, Vec<Vec<u8>>, usize);

    #[derive(Clone, Default)]
    struct Wire(Arc<Mutex<Frames>>);

    impl Wire {
        fn push(&self, f: Vec<u8>) {
            self.0.lock().unwrap().0.push_back(f);
        }
        fn sent(&self) -> Vec<Vec<u8>> {
            std::mem::take(&mut self.0.lock().unwrap().1)
        }
        /// Calls of `receive`.
        fn polls(&self) -> usize {
            self.0.lock().unwrap().2
        }
        fn waiting(&self) -> usize {
            self.0.lock().unwrap().0.len()
        }
    }

    impl NetBackend for Wire {
        fn transmit(&mut self, frame: &[u8]) {
            self.0.lock().unwrap().1.push(frame.to_vec());
        }
        fn receive(&mut self) -> Option<Vec<u8>> {
            let mut w = self.0.lock().unwrap();
            w.2 += 1;
            w.0.pop_front()
        }
    }

    fn setup() -> (Driver, Wire) {
        let wire = Wire::default();
        let dev = VirtioMmio::net(Box::new(wire.clone()), DEFAULT_MAC);
        (Driver::new(dev, u64::MAX, 16), wire)
    }

    fn stats(d: &Driver) -> NetStats {
        d.dev.net_stats().unwrap()
    }

    /// A device pass without a notify, as the board runs one at every slice end.
    fn pass(d: &mut Driver) {
        d.dev.process(&mut d.ram);
    }

    #[test]
    fn config_and_features() {
        let (mut d, _) = setup();
        assert_eq!(d.dev.device_id(), 1);
        let mac: Vec<u8> = (0..6)
            .map(|i| d.dev.read(0x100 + i, 1).unwrap() as u8)
            .collect();
        assert_eq!(mac, DEFAULT_MAC);
        assert_eq!(d.dev.read(0x106, 2), Some(1), "link up");
        assert_eq!(d.dev.read(0x10a, 2), Some(1500), "mtu");
        d.set_reg(0x014, 0);
        let f = d.reg(0x010);
        assert_ne!(f & (1 << 5), 0, "VIRTIO_NET_F_MAC");
        assert_ne!(f & (1 << 3), 0, "VIRTIO_NET_F_MTU");
        assert_eq!(f & 1, 0, "no checksum offload");
        d.set_reg(0x014, 1);
        assert_eq!(d.reg(0x010), 1, "VERSION_1 only");
    }

    #[test]
    fn transmits_frames_without_the_header() {
        let (mut d, wire) = setup();
        d.ram.write(DATA, &[0xaa; NET_HDR_LEN]).unwrap();
        d.ram.write(DATA + 12, b"hello, world").unwrap();
        // Header and frame in one buffer, then split over three.
        let h1 = d.submit(1, &[(DATA, 24, false)]);
        let h2 = d.submit(
            1,
            &[
                (DATA, 5, false),
                (DATA + 5, 10, false),
                (DATA + 15, 9, false),
            ],
        );
        d.kick(1);
        assert_eq!(d.take_used(1), vec![(u32::from(h1), 0), (u32::from(h2), 0)]);
        assert_eq!(wire.sent(), vec![b"hello, world".to_vec(); 2]);
        assert_eq!(d.ack(), 1);
        assert_eq!(stats(&d).tx_frames, 2);
    }

    #[test]
    fn receives_into_posted_buffers() {
        let (mut d, wire) = setup();
        wire.push(vec![7; 60]);
        wire.push(vec![8; 1514]);
        let h1 = d.submit(0, &[(DATA, 1526, true)]);
        // Header and data split, as a driver may do it.
        let h2 = d.submit(0, &[(DATA + 0x1000, 12, true), (DATA + 0x2000, 1514, true)]);
        pass(&mut d);
        assert_eq!(
            d.take_used(0),
            vec![(u32::from(h1), 72), (u32::from(h2), 1526)]
        );
        let mut want = vec![0u8; 12];
        want[10] = 1; // num_buffers
        assert_eq!(d.mem(DATA, 12), want);
        assert_eq!(d.mem(DATA + 12, 60), vec![7; 60]);
        assert_eq!(d.mem(DATA + 0x1000, 12), want);
        assert_eq!(d.mem(DATA + 0x2000, 1514), vec![8; 1514]);
        assert_eq!(d.ack(), 1);
        assert_eq!(stats(&d).rx_frames, 2);
    }

    #[test]
    fn no_buffer_no_frame_taken() {
        let (mut d, wire) = setup();
        wire.push(vec![1; 64]);
        pass(&mut d);
        assert_eq!(wire.polls(), 0, "the backend is not asked without a buffer");
        assert_eq!(wire.waiting(), 1);
        assert!(!d.dev.irq_level());
        // A buffer and nothing to receive: the buffer stays posted.
        let (mut d, wire) = setup();
        let h = d.submit(0, &[(DATA, 2048, true)]);
        pass(&mut d);
        assert!(d.take_used(0).is_empty());
        assert!(!d.dev.irq_level());
        wire.push(vec![3; 100]);
        pass(&mut d);
        assert_eq!(d.take_used(0), vec![(u32::from(h), 112)]);
    }

    #[test]
    fn oversized_frames_are_dropped_and_the_buffer_kept() {
        let (mut d, wire) = setup();
        wire.push(vec![1; 2000]); // larger than the buffer
        wire.push(vec![2; MAX_FRAME + 1]); // larger than any frame may be
        wire.push(vec![3; 100]);
        let h = d.submit(0, &[(DATA, 1526, true)]);
        pass(&mut d);
        assert_eq!(d.take_used(0), vec![(u32::from(h), 112)]);
        assert_eq!(d.mem(DATA + 12, 100), vec![3; 100]);
        let s = stats(&d);
        assert_eq!((s.rx_oversized, s.rx_frames), (2, 1));
        assert!(!d.needs_reset());
    }

    #[test]
    fn malformed_chains_never_reset_the_device() {
        let (mut d, wire) = setup();
        // Transmit: shorter than the header; a buffer outside RAM; device-writable only.
        d.submit(1, &[(DATA, 4, false)]);
        d.submit(1, &[(0x1000, 100, false)]);
        d.submit(1, &[(DATA, 100, true)]);
        d.kick(1);
        assert_eq!(d.take_used(1).len(), 3);
        assert!(wire.sent().is_empty());
        assert_eq!(stats(&d).tx_malformed, 3);
        // Receive: a buffer too small for the header, then one outside RAM.
        wire.push(vec![9; 10]);
        wire.push(vec![9; 10]);
        d.submit(0, &[(DATA, 8, true)]);
        pass(&mut d);
        assert!(d.take_used(0).is_empty(), "the frame does not fit: dropped");
        assert_eq!(wire.waiting(), 0);
        let (mut d2, wire2) = setup();
        wire2.push(vec![9; 10]);
        d2.submit(0, &[(BASE + (1 << 20) - 4, 64, true)]);
        pass(&mut d2);
        assert_eq!(d2.take_used(0), vec![(0, 0)]);
        assert_eq!(stats(&d2).rx_bad_buffer, 1);
        assert!(!d.needs_reset() && !d2.needs_reset());
        // A descriptor loop is a broken queue: reset, as for every device.
        let (mut d3, _) = setup();
        d3.put_desc(1, 0, DATA, 16, 1, 1);
        d3.put_desc(1, 1, DATA, 16, 1, 0);
        d3.make_available(1, 0);
        d3.kick(1);
        assert!(d3.needs_reset());
    }

    #[test]
    fn a_backend_that_never_runs_dry_is_bounded_per_pass() {
        struct Flood;
        impl NetBackend for Flood {
            fn transmit(&mut self, _: &[u8]) {}
            fn receive(&mut self) -> Option<Vec<u8>> {
                Some(vec![0; 4000])
            }
        }
        let mut d = Driver::new(VirtioMmio::net(Box::new(Flood), DEFAULT_MAC), 0, 16);
        d.submit(0, &[(DATA, 1526, true)]);
        pass(&mut d);
        assert_eq!(
            d.dev.net_stats().unwrap().rx_oversized,
            MAX_RX_PER_PASS as u64
        );
    }

    #[test]
    fn state_round_trips_through_the_transport() {
        let (mut d, wire) = setup();
        d.submit(0, &[(DATA, 1526, true)]);
        wire.push(vec![5; 50]);
        pass(&mut d);
        let s = d.dev.save();
        let mut e = VirtioMmio::net(Box::new(NullNet), DEFAULT_MAC);
        e.restore(&s).unwrap();
        assert_eq!(e.save(), s);
        let mut blk = VirtioMmio::rng(Box::new(crate::virtio::OsEntropy::default()));
        assert!(blk.restore(&s).is_err(), "another device id");
    }
}
