//! virtio-net (device id 1, virtio 1.2 §5.1): receiveq 0 and transmitq 1 in front of a
//! [`NetBackend`], with checksum offload both ways and mergeable receive buffers, no
//! segmentation offload and no control queue.
//!
//! Features offered: `VIRTIO_F_VERSION_1`, `VIRTIO_F_RING_INDIRECT_DESC`, `VIRTIO_NET_F_MAC`
//! (the configured MAC), `VIRTIO_NET_F_STATUS` (the link is always up), `VIRTIO_NET_F_MTU` (the
//! configured MTU, [`crate::NetConfig::mtu`]), and for speed:
//! - `VIRTIO_NET_F_MRG_RXBUF`: a received frame may span several posted buffers, so the guest's
//!   MTU can be as large as the host end takes (passt: 65520) while Linux keeps posting
//!   page-sized buffers. Without it the guest posts 1526-byte buffers and the MTU must stay 1500.
//! - `VIRTIO_NET_F_CSUM`: the guest may leave a transmitted TCP/UDP checksum partial
//!   (`VIRTIO_NET_HDR_F_NEEDS_CSUM`); the device completes it ([`super::checksum::complete`]).
//! - `VIRTIO_NET_F_GUEST_CSUM`: the device verifies a received frame's TCP/UDP checksum on the
//!   host and, when it is right, marks it `VIRTIO_NET_HDR_F_DATA_VALID`, so the guest does not
//!   sum the bytes again. A frame that does not verify (or is not TCP/UDP) goes up unmarked and
//!   the guest checks it as before.
//!
//! The MTU bounds the guest's own choice: with 1500 (the default, right for a tap on a 1500-byte
//! bridge) a gateway announcing a larger MTU over DHCP cannot make the guest send frames its
//! peers would drop.
//!
//! Every buffer starts with the 12-byte `virtio_net_hdr` of virtio 1.x (`num_buffers`
//! included). On transmit the header's checksum request is honoured when `CSUM` was negotiated
//! and ignored otherwise; a segmentation request (`gso_type`) was never offered and drops the
//! frame. On receive the header is all zero but `num_buffers` and, under `GUEST_CSUM`,
//! `DATA_VALID`.
//!
//! Determinism: a received frame is taken from the backend only inside a device pass
//! ([`VirtioMmio::process`]) and only when the guest has posted room for it — one buffer, or
//! with mergeable buffers enough of them for the largest frame the MTU allows (or the whole
//! ring, if the guest posts less) — so a frame is taken exactly when it can be delivered, at an
//! instruction count the record/replay layer logs, and the device never holds a frame between
//! passes. Everything the device adds (the header, a completed checksum) is computed from the
//! frame's bytes and guest memory. A frame that does not fit the posted buffers, or is longer
//! than [`MAX_FRAME`], is dropped and counted ([`NetStats`]); a malformed transmit chain
//! completes with nothing sent. Neither is ever a panic or a device reset. The device keeps no
//! state between passes beyond the transport's (the negotiated features among it; the MAC and
//! MTU are configuration, the link status constant), so the transport's saved state
//! ([`super::VirtioMmioState`]) is the whole device in a snapshot; the counters are host-side
//! diagnostics and are not saved.

use super::{
    read_config_bytes, DescChain, QueueError, VirtioDevice, VirtioMmio, Virtq,
    VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1, VIRTIO_ID_NET,
};
use rv64::Ram;

/// Feature: the device completes partial checksums of transmitted frames.
pub const VIRTIO_NET_F_CSUM: u64 = 1 << 0;
/// Feature: the driver accepts received frames marked as already checked.
pub const VIRTIO_NET_F_GUEST_CSUM: u64 = 1 << 1;
/// Feature: the device reports its maximum MTU in the configuration.
pub const VIRTIO_NET_F_MTU: u64 = 1 << 3;
/// Feature: the device has a MAC address in its configuration.
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// Feature: a received frame may span several buffers (`num_buffers` says how many).
pub const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;
/// Feature: the configuration's `status` field is valid.
pub const VIRTIO_NET_F_STATUS: u64 = 1 << 16;
/// `status` bit: the link is up.
pub const VIRTIO_NET_S_LINK_UP: u16 = 1;
/// Header flag (transmit): the checksum at `csum_start + csum_offset` is to be completed.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// Header flag (receive): the frame's TCP/UDP checksum has been checked and is right.
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;

/// Length of `struct virtio_net_hdr` in virtio 1.x (with `num_buffers`).
pub const NET_HDR_LEN: usize = 12;
/// The largest frame the device moves in either direction (without the header).
pub const MAX_FRAME: usize = 65535;
/// The default MTU (Ethernet's; `--mtu` raises it).
pub const MTU: u16 = 1500;
/// The largest MTU: [`MAX_FRAME`] less the Ethernet header, rounded down to passt's 65520.
pub const MAX_MTU: u16 = 65520;
/// The smallest MTU Linux accepts for an Ethernet card (IPv4's minimum).
pub const MIN_MTU: u16 = 68;
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
/// Ethernet header plus one VLAN tag: what a frame may carry beyond the MTU.
const FRAME_OVERHEAD: usize = 18;

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
    /// A virtio-net device with MAC `mac` and MTU `mtu` (clamped to
    /// [`MIN_MTU`]..=[`MAX_MTU`]) in front of `backend`.
    pub fn net(backend: Box<dyn NetBackend>, mac: [u8; 6], mtu: u16) -> VirtioMmio {
        VirtioMmio::new(Box::new(Net::new(backend, mac, mtu)))
    }
}

/// The virtio-net device model.
struct Net {
    backend: Box<dyn NetBackend>,
    /// `struct virtio_net_config` (§5.1.4): mac, status, max_virtqueue_pairs, mtu.
    config: [u8; 12],
    /// The MTU offered: with mergeable buffers, a frame is taken once room for
    /// `mtu + FRAME_OVERHEAD` bytes is posted.
    mtu: u16,
    stats: NetStats,
    bounce: Vec<u8>,
    /// The receive chains of the frame being delivered (kept to reuse the allocation).
    chains: Vec<DescChain>,
}

impl Net {
    fn new(backend: Box<dyn NetBackend>, mac: [u8; 6], mtu: u16) -> Net {
        let mtu = mtu.clamp(MIN_MTU, MAX_MTU);
        let mut config = [0u8; 12];
        config[..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&mtu.to_le_bytes());
        Net {
            backend,
            config,
            mtu,
            stats: NetStats::default(),
            bounce: Vec::new(),
            chains: Vec::new(),
        }
    }

    /// Sends every frame the guest has queued.
    fn transmit(&mut self, q: &mut Virtq, ram: &mut Ram, features: u64) -> Result<(), QueueError> {
        while let Some(chain) = q.pop(ram)? {
            if self.read_frame(&chain, ram, features) {
                self.backend.transmit(&self.bounce);
                self.stats.tx_frames += 1;
            } else {
                self.stats.tx_malformed += 1;
            }
            q.add_used(ram, chain.head, 0)?;
        }
        Ok(())
    }

    /// Reads a transmit chain's frame into the bounce buffer, its checksum completed if the
    /// header asks for it; `false` if the chain is malformed.
    fn read_frame(&mut self, chain: &DescChain, ram: &Ram, features: u64) -> bool {
        let len = chain.readable_len();
        if len < NET_HDR_LEN as u64 || len - NET_HDR_LEN as u64 > MAX_FRAME as u64 {
            return false;
        }
        let mut hdr = [0u8; NET_HDR_LEN];
        // Bounded by MAX_FRAME just above.
        self.bounce.resize((len - NET_HDR_LEN as u64) as usize, 0);
        if chain.read_at(ram, 0, &mut hdr).is_err()
            || chain
                .read_at(ram, NET_HDR_LEN as u64, &mut self.bounce)
                .is_err()
        {
            return false;
        }
        if features & VIRTIO_NET_F_CSUM == 0 {
            return true; // the header means nothing without offloads
        }
        if hdr[1] != 0 {
            return false; // a segmentation request: never offered
        }
        if hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 {
            return true;
        }
        let start = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
        let offset = usize::from(u16::from_le_bytes([hdr[8], hdr[9]]));
        super::checksum::complete(&mut self.bounce, start, offset)
    }

    /// Delivers waiting frames while the guest has room posted for them. Chains gathered but
    /// not filled stay gathered for the next frame of the pass, and go back to the ring when
    /// the pass ends (the device holds nothing between passes).
    fn receive(&mut self, q: &mut Virtq, ram: &mut Ram, features: u64) -> Result<(), QueueError> {
        let mergeable = features & VIRTIO_NET_F_MRG_RXBUF != 0;
        // With mergeable buffers, room for the largest frame the MTU allows (or the whole ring)
        // is gathered before a frame is taken; without, one buffer is all a frame may have.
        let want = if mergeable {
            (NET_HDR_LEN + usize::from(self.mtu) + FRAME_OVERHEAD).min(NET_HDR_LEN + MAX_FRAME)
        } else {
            0
        } as u64;
        let full = usize::from(q.size());
        let enough = |room: u64, chains: usize| chains > 0 && (room >= want || chains >= full);
        self.chains.clear();
        let mut room = 0u64;
        for _ in 0..MAX_RX_PER_PASS {
            while !enough(room, self.chains.len()) {
                let Some(chain) = q.pop(ram)? else {
                    break;
                };
                room += chain.writable_len();
                self.chains.push(chain);
            }
            if !enough(room, self.chains.len()) {
                break;
            }
            let Some(frame) = self.backend.receive() else {
                break;
            };
            let Some(used) = self.fit(&frame, mergeable) else {
                // The buffers stay the guest's, for the next frame.
                self.stats.rx_oversized += 1;
                continue;
            };
            self.deliver(&frame, used, features, q, ram)?;
            room -= self.chains[..used]
                .iter()
                .map(DescChain::writable_len)
                .sum::<u64>();
            self.chains.drain(..used);
        }
        // The chains left are the last ones popped.
        undo_pops(q, self.chains.len());
        self.chains.clear();
        Ok(())
    }

    /// How many of the gathered chains `frame` fills (header included), if it fits them.
    fn fit(&self, frame: &[u8], mergeable: bool) -> Option<usize> {
        let first = self.chains.first()?.writable_len();
        if frame.len() > MAX_FRAME || first < NET_HDR_LEN as u64 {
            return None;
        }
        let mut need = (NET_HDR_LEN + frame.len()) as u64;
        let chains = if mergeable { self.chains.len() } else { 1 };
        for (i, c) in self.chains[..chains].iter().enumerate() {
            need = need.saturating_sub(c.writable_len());
            if need == 0 {
                return Some(i + 1);
            }
        }
        None
    }

    /// Writes the header and `frame` across the first `used` gathered chains and returns them.
    fn deliver(
        &mut self,
        frame: &[u8],
        used: usize,
        features: u64,
        q: &mut Virtq,
        ram: &mut Ram,
    ) -> Result<(), QueueError> {
        let mut header = [0u8; NET_HDR_LEN];
        if features & VIRTIO_NET_F_GUEST_CSUM != 0 && super::checksum::l4_valid(frame) {
            header[0] = VIRTIO_NET_HDR_F_DATA_VALID;
        }
        // At most the ring's size, a u16.
        header[10..12].copy_from_slice(&(used as u16).to_le_bytes());
        // A buffer outside RAM spoils the frame: all its buffers go back empty.
        let mut ok = self.chains[..used].iter().all(|c| c.in_ram(ram));
        let mut rest: &[u8] = frame;
        for (i, chain) in self.chains[..used].iter().enumerate() {
            let skip = if i == 0 { NET_HDR_LEN } else { 0 };
            // Each at most the chain's writable length, itself at most u32::MAX.
            let n = rest.len().min(chain.writable_len() as usize - skip);
            if ok {
                ok = (i > 0 || chain.write_at(ram, 0, &header).is_ok())
                    && chain.write_at(ram, skip as u64, &rest[..n]).is_ok();
            }
            rest = &rest[n..];
            let len = if ok { (skip + n) as u32 } else { 0 };
            q.add_used(ram, chain.head, len)?;
        }
        if ok {
            self.stats.rx_frames += 1;
        } else {
            self.stats.rx_bad_buffer += 1;
        }
        Ok(())
    }
}

/// Gives the last `n` popped chains back to the ring, in the order they were taken.
fn undo_pops(q: &mut Virtq, n: usize) {
    for _ in 0..n {
        q.undo_pop();
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
            | VIRTIO_NET_F_MRG_RXBUF
            | VIRTIO_NET_F_CSUM
            | VIRTIO_NET_F_GUEST_CSUM
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
        features: u64,
        ram: &mut Ram,
    ) -> Result<(), QueueError> {
        let (rx, tx) = queues.split_at_mut(TRANSMITQ);
        if notified & (1 << TRANSMITQ) != 0 {
            self.transmit(&mut tx[0], ram, features)?;
        }
        // Input of the device's own: looked at on every pass, not only after a notify.
        self.receive(&mut rx[RECEIVEQ], ram, features)
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

    /// The offloads: negotiated by the tests of the fast path, left out by those of the plain
    /// one-buffer path.
    const OFFLOADS: u64 = VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_CSUM | VIRTIO_NET_F_GUEST_CSUM;

    /// A card with the default MTU whose driver takes every feature but the offloads.
    fn setup() -> (Driver, Wire) {
        setup_with(MTU, !OFFLOADS, 16)
    }

    fn setup_with(mtu: u16, features: u64, size: u16) -> (Driver, Wire) {
        let wire = Wire::default();
        let dev = VirtioMmio::net(Box::new(wire.clone()), DEFAULT_MAC, mtu);
        (Driver::new(dev, features, size), wire)
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
        for (bit, name) in [(0, "CSUM"), (1, "GUEST_CSUM"), (15, "MRG_RXBUF")] {
            assert_ne!(f & (1 << bit), 0, "VIRTIO_NET_F_{name}");
        }
        for (bit, name) in [(7, "GUEST_TSO4"), (11, "HOST_TSO4"), (17, "CTRL_VQ")] {
            assert_eq!(f & (1 << bit), 0, "VIRTIO_NET_F_{name} is not offered");
        }
        d.set_reg(0x014, 1);
        assert_eq!(d.reg(0x010), 1, "VERSION_1 only");
        // The MTU is the card's configuration, clamped to what a frame can carry.
        for (asked, offered) in [(9000, 9000), (65535, MAX_MTU), (10, MIN_MTU)] {
            let (mut d, _) = setup_with(asked, 0, 16);
            assert_eq!(d.dev.read(0x10a, 2), Some(u64::from(offered)));
        }
    }

    #[test]
    fn mergeable_buffers_carry_a_frame_larger_than_one() {
        let (mut d, wire) = setup_with(9000, VIRTIO_NET_F_MRG_RXBUF, 16);
        let bufs: Vec<u16> = (0..4)
            .map(|i| d.submit(0, &[(DATA + i * 0x1000, 4096, true)]))
            .collect();
        let frame: Vec<u8> = (0..9014u32).map(|i| i as u8).collect();
        wire.push(frame.clone());
        pass(&mut d);
        let tail = (NET_HDR_LEN + frame.len() - 2 * 4096) as u32;
        assert_eq!(
            d.take_used(0),
            vec![
                (u32::from(bufs[0]), 4096),
                (u32::from(bufs[1]), 4096),
                (u32::from(bufs[2]), tail)
            ]
        );
        let mut want = vec![0u8; NET_HDR_LEN];
        want[10] = 3; // num_buffers
        assert_eq!(d.mem(DATA, NET_HDR_LEN), want);
        let mut got = d.mem(DATA + NET_HDR_LEN as u64, 4096 - NET_HDR_LEN);
        got.extend(d.mem(DATA + 0x1000, 4096));
        got.extend(d.mem(DATA + 0x2000, tail as usize));
        assert_eq!(got, frame);
        // One 4096-byte buffer left: less than the largest frame the MTU allows, so nothing is
        // taken, however small the next frame is (it is not known until taken).
        wire.push(vec![1; 60]);
        pass(&mut d);
        assert!(d.take_used(0).is_empty());
        assert_eq!((wire.waiting(), wire.polls()), (1, 1));
        let more = d.submit(0, &[(DATA + 0x4000, 8192, true)]);
        pass(&mut d);
        assert_eq!(d.take_used(0), vec![(u32::from(bufs[3]), 72)]);
        assert_eq!(d.mem(DATA + 0x3000 + 10, 2), vec![1, 0], "num_buffers 1");
        // The 8 KiB buffer was gathered and given back, still posted.
        wire.push(vec![2; 5000]);
        d.submit(0, &[(DATA + 0x6000, 4096, true)]);
        pass(&mut d);
        assert_eq!(d.take_used(0), vec![(u32::from(more), 5012)]);
        assert_eq!(stats(&d).rx_frames, 3);
    }

    #[test]
    fn a_ring_smaller_than_the_largest_frame_still_receives() {
        // Four 1000-byte buffers are the whole ring: less than a 9000-byte MTU needs, so a frame
        // is taken once the ring is full, and dropped only if it does not fit.
        let (mut d, wire) = setup_with(9000, VIRTIO_NET_F_MRG_RXBUF, 4);
        wire.push(vec![3; 2500]);
        wire.push(vec![4; 5000]);
        for i in 0..3 {
            d.submit(0, &[(DATA + i * 0x1000, 1000, true)]);
        }
        pass(&mut d);
        assert!(d.take_used(0).is_empty(), "three of four posted: wait");
        d.submit(0, &[(DATA + 0x3000, 1000, true)]);
        pass(&mut d);
        assert_eq!(
            d.take_used(0).iter().map(|u| u.1).collect::<Vec<_>>(),
            vec![1000, 1000, 512]
        );
        assert_eq!(
            wire.waiting(),
            1,
            "one buffer left: wait for the ring to fill again"
        );
        for i in 0..3 {
            d.submit(0, &[(DATA + i * 0x1000, 1000, true)]);
        }
        pass(&mut d);
        assert!(d.take_used(0).is_empty());
        assert_eq!(
            stats(&d).rx_oversized,
            1,
            "5000 bytes never fit four buffers"
        );
        assert_eq!(wire.waiting(), 0);
    }

    #[test]
    fn transmitted_checksums_are_completed_when_asked() {
        let frame = crate::virtio::checksum::tcp4_partial();
        let mut hdr = [0u8; NET_HDR_LEN];
        hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        hdr[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start: the TCP header
        hdr[8..10].copy_from_slice(&16u16.to_le_bytes()); // csum_offset: its checksum
        let send = |d: &mut Driver, hdr: &[u8]| {
            d.ram.write(DATA, hdr).unwrap();
            d.ram.write(DATA + 12, &frame).unwrap();
            d.submit(1, &[(DATA, (12 + frame.len()) as u32, false)]);
            d.kick(1);
            d.take_used(1);
        };
        let (mut d, wire) = setup_with(MTU, VIRTIO_NET_F_CSUM, 16);
        send(&mut d, &hdr);
        let sent = wire.sent();
        assert!(crate::virtio::checksum::l4_valid(&sent[0]));
        assert_eq!(sent[0][..34], frame[..34]);
        // A segmentation request, a field beyond the frame: malformed, nothing sent.
        let mut gso = hdr;
        gso[1] = 1;
        send(&mut d, &gso);
        let mut beyond = hdr;
        beyond[8..10].copy_from_slice(&(frame.len() as u16).to_le_bytes());
        send(&mut d, &beyond);
        assert!(wire.sent().is_empty());
        assert_eq!(stats(&d).tx_malformed, 2);
        // Not negotiated: the header means nothing and the frame goes as it is.
        let (mut d, wire) = setup_with(MTU, 0, 16);
        send(&mut d, &gso);
        assert_eq!(wire.sent(), vec![frame.clone()]);
    }

    #[test]
    fn received_checksums_are_vouched_for_only_when_right() {
        let mut good = crate::virtio::checksum::tcp4_partial();
        assert!(crate::virtio::checksum::complete(&mut good, 34, 16));
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        for (features, frame, flags) in [
            (VIRTIO_NET_F_GUEST_CSUM, &good, VIRTIO_NET_HDR_F_DATA_VALID),
            (VIRTIO_NET_F_GUEST_CSUM, &bad, 0),
            (0, &good, 0),
        ] {
            let (mut d, wire) = setup_with(MTU, features, 16);
            wire.push(frame.clone());
            d.submit(0, &[(DATA, 1526, true)]);
            pass(&mut d);
            assert_eq!(d.take_used(0).len(), 1);
            assert_eq!(d.mem(DATA, 1)[0], flags, "features {features:#x}");
            assert_eq!(
                d.mem(DATA + 12, frame.len()),
                *frame,
                "delivered as it came"
            );
        }
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
        let mut d = Driver::new(VirtioMmio::net(Box::new(Flood), DEFAULT_MAC, MTU), 0, 16);
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
        let mut e = VirtioMmio::net(Box::new(NullNet), DEFAULT_MAC, MTU);
        e.restore(&s).unwrap();
        assert_eq!(e.save(), s);
        let mut blk = VirtioMmio::rng(Box::new(crate::virtio::OsEntropy::default()));
        assert!(blk.restore(&s).is_err(), "another device id");
    }
}
