//! virtio-rng, the entropy device (device id 4, virtio 1.2 §5.4): one request queue whose
//! device-writable buffers are filled from an [`EntropyBackend`].
//!
//! Entropy is the purest non-deterministic input there is, so it comes only from the backend
//! (which the replay layer records) and reaches guest memory only inside `process`.

use super::{
    QueueError, VirtioDevice, VirtioMmio, Virtq, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1,
    VIRTIO_ID_RNG,
};
use rv64::Ram;
use std::fs::File;
use std::io::{self, Read};

/// QueueNumMax of the request queue.
const QUEUE_SIZE: u16 = 64;
/// The most bytes given for one request; the used length tells the driver how many it got.
const MAX_REQUEST: usize = 64 * 1024;

/// A source of random bytes.
pub trait EntropyBackend: Send {
    /// Fills all of `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<()>;
}

/// The host's entropy: `/dev/urandom`, opened on first use.
#[derive(Debug, Default)]
pub struct OsEntropy {
    file: Option<File>,
}

impl EntropyBackend for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if self.file.is_none() {
            self.file = Some(File::open("/dev/urandom")?);
        }
        match self.file.as_mut() {
            Some(f) => f.read_exact(buf),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }
}

impl VirtioMmio {
    /// A virtio-rng device fed by `src` (usually [`OsEntropy`]).
    pub fn rng(src: Box<dyn EntropyBackend>) -> VirtioMmio {
        VirtioMmio::new(Box::new(Rng {
            src,
            bounce: Vec::new(),
        }))
    }
}

/// The virtio-rng device model.
struct Rng {
    src: Box<dyn EntropyBackend>,
    bounce: Vec<u8>,
}

impl VirtioDevice for Rng {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_RNG
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_F_RING_INDIRECT_DESC
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }
    fn config_read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0); // no configuration space
    }
    fn entropy_backend_mut(&mut self) -> Option<&mut Box<dyn EntropyBackend>> {
        Some(&mut self.src)
    }
    fn process(
        &mut self,
        queues: &mut [Virtq],
        notified: u32,
        _features: u64,
        ram: &mut Ram,
    ) -> Result<(), QueueError> {
        if notified & 1 == 0 {
            return Ok(());
        }
        let q = &mut queues[0];
        while let Some(chain) = q.pop(ram)? {
            let want = usize::try_from(chain.writable_len())
                .unwrap_or(MAX_REQUEST)
                .min(MAX_REQUEST);
            self.bounce.resize(want, 0);
            // A failing source or a buffer outside RAM gives the driver nothing (used len 0).
            let len = match self.src.fill(&mut self.bounce) {
                Ok(()) if chain.write_at(ram, 0, &self.bounce).is_ok() => want as u32,
                _ => 0,
            };
            q.add_used(ram, chain.head, len)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testutil::{Driver, DATA};

    /// Counts up from a seed, so the test can check every byte.
    struct Counter(u8);

    impl EntropyBackend for Counter {
        fn fill(&mut self, buf: &mut [u8]) -> io::Result<()> {
            for b in buf {
                *b = self.0;
                self.0 = self.0.wrapping_add(1);
            }
            Ok(())
        }
    }

    struct Broken;

    impl EntropyBackend for Broken {
        fn fill(&mut self, _: &mut [u8]) -> io::Result<()> {
            Err(io::ErrorKind::Other.into())
        }
    }

    #[test]
    fn fills_writable_buffers() {
        let mut d = Driver::new(VirtioMmio::rng(Box::new(Counter(10))), 0, 8);
        assert_eq!(d.dev.device_id(), 4);
        let h1 = d.submit(0, &[(DATA, 4, true), (DATA + 0x100, 2, true)]);
        let h2 = d.submit(0, &[(DATA + 0x200, 3, true)]);
        d.kick(0);
        assert_eq!(d.take_used(0), vec![(u32::from(h1), 6), (u32::from(h2), 3)]);
        assert_eq!(d.mem(DATA, 4), [10, 11, 12, 13]);
        assert_eq!(d.mem(DATA + 0x100, 2), [14, 15]);
        assert_eq!(d.mem(DATA + 0x200, 3), [16, 17, 18]);
        assert_eq!(d.ack(), 1);
    }

    #[test]
    fn nothing_happens_without_a_notify() {
        let mut d = Driver::new(VirtioMmio::rng(Box::new(Counter(0))), 0, 8);
        d.submit(0, &[(DATA, 4, true)]);
        d.dev.process(&mut d.ram);
        assert!(d.take_used(0).is_empty());
        assert!(!d.dev.irq_level());
    }

    #[test]
    fn failures_give_empty_buffers() {
        let mut d = Driver::new(VirtioMmio::rng(Box::new(Broken)), 0, 8);
        d.submit(0, &[(DATA, 4, true)]);
        d.submit(0, &[(0x10, 4, true)]);
        d.kick(0);
        assert_eq!(d.take_used(0), vec![(0, 0), (1, 0)]);
        let mut d = Driver::new(VirtioMmio::rng(Box::new(Counter(1))), 0, 8);
        d.submit(0, &[(0x10, 4, true)]); // outside RAM
        d.kick(0);
        assert_eq!(d.take_used(0), vec![(0, 0)]);
        assert!(!d.needs_reset());
    }

    #[test]
    fn os_entropy_works() {
        let mut e = OsEntropy::default();
        let mut a = [0u8; 32];
        e.fill(&mut a).unwrap();
        assert_ne!(a, [0; 32]);
    }
}
