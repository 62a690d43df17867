//! A disk made slower on purpose (`--drive ...,delay=MS`).

use machine::virtio::BlockBackend;
use std::io;
use std::time::Duration;

/// A disk whose reads and flushes take `delay` longer: under an [`crate::AsyncDisk`] it is
/// the worker that waits, so requests stay in flight while the guest runs, which is what it is
/// for (seeing and testing that).
pub struct Delayed {
    inner: Box<dyn BlockBackend>,
    delay: Duration,
}

impl Delayed {
    /// `inner`, slowed down by `delay`.
    pub fn new(inner: Box<dyn BlockBackend>, delay: Duration) -> Delayed {
        Delayed { inner, delay }
    }
}

impl BlockBackend for Delayed {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::thread::sleep(self.delay);
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, data)
    }
    fn flush(&mut self) -> io::Result<()> {
        std::thread::sleep(self.delay);
        self.inner.flush()
    }
    fn describe(&self) -> String {
        format!("delayed({})", self.inner.describe())
    }
}
