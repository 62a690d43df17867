//! The network card in the input log. (Transmitted frames are outputs: the FT primary's
//! output rule holds them, in `ft::gate`.)
//!
//! The virtio-net device takes a received frame from its backend only inside a device pass,
//! where the machine's clock tap holds the icount, and only when the guest has posted a
//! receive buffer (`machine::virtio::net`). So each frame taken is one input event:
//!
//! - [`RecordingNet`] wraps the live backend and notes every frame the device takes as
//!   `(icount, device, 0, frame)`, which the recorder logs as a `DeviceCompletion { device:
//!   <the card's slot>, request: 0, data: frame }`. Transmitted frames are outputs, a
//!   deterministic function of the run: they go to the live backend and are not logged.
//! - [`ReplayNet`] needs no network: a frame is handed to the device at the icount it was
//!   logged at (a device pass at another icount gets nothing, and a logged frame the guest
//!   did not take by then is a divergence, "net receive"); transmitted frames are discarded.
//!   When the replayer goes live the machine's backend is replaced by a real one
//!   (`Replayer::set_live_net`).
//! - [`rarp_announce`]: the frame a new primary sends at go-live so that switches learn
//!   where the guest's MAC now lives.

use crate::disk::{Completion, Pending};
use machine::virtio::NetBackend;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The log's device number of the network card on a machine with `drives` disks: its slot,
/// below the disks', the entropy device's and the console's.
pub fn net_device(drives: usize) -> u32 {
    machine::machine::net_slot(drives).map_or(u32::MAX, |s| s as u32)
}

/// The live backend, with every frame the device takes noted for the log.
pub struct RecordingNet {
    inner: Box<dyn NetBackend>,
    device: u32,
    tap: Arc<AtomicU64>,
    pending: Pending,
}

impl RecordingNet {
    /// Wraps `inner`, the backend of the card with log device number `device`; `tap` is the
    /// machine's clock tap.
    pub fn new(
        inner: Box<dyn NetBackend>,
        device: u32,
        tap: Arc<AtomicU64>,
        pending: Pending,
    ) -> RecordingNet {
        RecordingNet {
            inner,
            device,
            tap,
            pending,
        }
    }
}

impl NetBackend for RecordingNet {
    fn transmit(&mut self, frame: &[u8]) {
        self.inner.transmit(frame);
    }
    fn receive(&mut self) -> Option<Vec<u8>> {
        let frame = self.inner.receive()?;
        self.pending.push(Completion {
            icount: self.tap.load(Ordering::Relaxed),
            device: self.device,
            request: 0,
            data: frame.clone(),
        });
        Some(frame)
    }
    fn set_wake(&mut self, wake: &machine::wake::Waker) {
        self.inner.set_wake(wake);
    }
    fn describe(&self) -> String {
        format!("recording({})", self.inner.describe())
    }
    fn take_inner(&mut self) -> Option<Box<dyn NetBackend>> {
        Some(std::mem::replace(
            &mut self.inner,
            Box::new(machine::virtio::NullNet),
        ))
    }
}

/// Logged frames waiting for the guest, and the first mismatch.
#[derive(Debug, Default)]
pub struct NetQueue {
    /// (icount, frame), in log order.
    pub queue: VecDeque<(u64, Vec<u8>)>,
    /// The first mismatch: (icount, what).
    pub error: Option<(u64, String)>,
}

/// A network card replayed from the log: see the module documentation.
pub struct ReplayNet {
    shared: Arc<Mutex<NetQueue>>,
    tap: Arc<AtomicU64>,
}

impl ReplayNet {
    /// A card fed from `shared`; `tap` is the machine's clock tap.
    pub fn new(shared: Arc<Mutex<NetQueue>>, tap: Arc<AtomicU64>) -> ReplayNet {
        ReplayNet { shared, tap }
    }
}

impl NetBackend for ReplayNet {
    fn transmit(&mut self, _frame: &[u8]) {}
    fn receive(&mut self) -> Option<Vec<u8>> {
        let now = self.tap.load(Ordering::Relaxed);
        let mut q = self.shared.lock().ok()?;
        let (at, len) = q.queue.front().map(|(at, f)| (*at, f.len()))?;
        if at == now {
            return q.queue.pop_front().map(|(_, f)| f);
        }
        if at < now {
            // The recorded guest took it at an earlier pass; this one did not.
            let why = format!(
                "net receive: the guest did not take the logged frame of {len} bytes at icount \
                 {at}"
            );
            q.error.get_or_insert((at, why));
        }
        None
    }
}

/// A RARP request announcing `mac` (what QEMU sends after a migration, and VMware at a
/// failover): broadcast, ethertype 0x8035, "reverse request" with `mac` as sender and target
/// and no IP addresses, padded to the 60-byte Ethernet minimum. Switches learn the port of the
/// source MAC from it; it needs no knowledge of the guest's IP address.
pub fn rarp_announce(mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]); // destination: broadcast
    f.extend_from_slice(&mac); // source
    f.extend_from_slice(&0x8035u16.to_be_bytes()); // RARP
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f.push(6); // hardware address length
    f.push(4); // protocol address length
    f.extend_from_slice(&3u16.to_be_bytes()); // operation: reverse request
    f.extend_from_slice(&mac); // sender hardware address
    f.extend_from_slice(&[0; 4]); // sender protocol address
    f.extend_from_slice(&mac); // target hardware address
    f.extend_from_slice(&[0; 4]); // target protocol address
    f.resize(60, 0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames to receive and frames sent.
    type Frames = (VecDeque<Vec<u8>>, Vec<Vec<u8>>);

    #[derive(Clone, Default)]
    struct Wire(Arc<Mutex<Frames>>);

    impl NetBackend for Wire {
        fn transmit(&mut self, frame: &[u8]) {
            self.0.lock().unwrap().1.push(frame.to_vec());
        }
        fn receive(&mut self) -> Option<Vec<u8>> {
            self.0.lock().unwrap().0.pop_front()
        }
    }

    #[test]
    fn received_frames_are_recorded_at_their_icount_and_sent_ones_are_not() {
        let wire = Wire::default();
        wire.0.lock().unwrap().0.extend([vec![1; 60], vec![2; 70]]);
        let tap = Arc::new(AtomicU64::new(100));
        let pending = Pending::default();
        let mut r = RecordingNet::new(Box::new(wire.clone()), 5, Arc::clone(&tap), pending.clone());
        assert_eq!(r.receive(), Some(vec![1; 60]));
        r.transmit(&[9; 42]);
        tap.store(250, Ordering::Relaxed);
        assert_eq!(r.receive(), Some(vec![2; 70]));
        assert_eq!(r.receive(), None);
        let log: Vec<_> = pending
            .take()
            .iter()
            .map(|c| (c.icount, c.device, c.request, c.data.len()))
            .collect();
        assert_eq!(log, [(100, 5, 0, 60), (250, 5, 0, 70)]);
        assert_eq!(wire.0.lock().unwrap().1, vec![vec![9; 42]]);
    }

    #[test]
    fn replay_hands_frames_back_at_their_icount_only() {
        let tap = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Mutex::new(NetQueue::default()));
        shared.lock().unwrap().queue.extend([
            (100, vec![1; 60]),
            (100, vec![2; 60]),
            (300, vec![3; 60]),
        ]);
        let mut r = ReplayNet::new(Arc::clone(&shared), Arc::clone(&tap));
        tap.store(50, Ordering::Relaxed);
        assert_eq!(r.receive(), None, "too early");
        tap.store(100, Ordering::Relaxed);
        assert_eq!(r.receive(), Some(vec![1; 60]));
        assert_eq!(r.receive(), Some(vec![2; 60]));
        assert_eq!(r.receive(), None);
        r.transmit(&[0; 60]);
        tap.store(301, Ordering::Relaxed);
        assert_eq!(r.receive(), None, "too late");
        let q = shared.lock().unwrap();
        let (at, why) = q.error.clone().unwrap();
        assert_eq!(at, 300);
        assert!(why.starts_with("net receive:"), "{why}");
    }

    #[test]
    fn rarp_announce_is_a_well_formed_frame() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let f = rarp_announce(mac);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x80, 0x35]);
        assert_eq!(&f[20..22], &[0, 3]);
        assert_eq!(&f[22..28], &mac);
        assert_eq!(&f[32..38], &mac);
    }

    #[test]
    fn device_numbers() {
        assert_eq!(net_device(0), 5);
        assert_eq!(net_device(5), 0);
        assert_eq!(net_device(6), u32::MAX);
    }
}
