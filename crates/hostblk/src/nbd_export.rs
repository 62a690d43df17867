//! An NBD export as a disk. Every request is one synchronous round trip bounded by the
//! client's timeout; a failure (server error, timeout, closed connection) is an `io::Error`,
//! which the device turns into VIRTIO_BLK_S_IOERR. Behind an [`crate::AsyncDisk`] the round
//! trips of reads and flushes happen on the worker thread.

use crate::DiskError;
use machine::virtio::BlockBackend;
use machine::NbdDriveConfig;
use nbd::NbdClient;

/// A connection to an NBD export, as a disk.
pub struct NbdDisk(NbdClient);

impl NbdDisk {
    /// Connects to an NBD drive. A read-only export must be configured read-only, so that the
    /// guest is told (VIRTIO_BLK_F_RO) instead of seeing its writes fail.
    pub fn connect(n: &NbdDriveConfig, readonly: bool) -> Result<NbdDisk, DiskError> {
        let mut c = NbdClient::connect(&n.addr, &n.export, n.timeout)?;
        if c.read_only() && !readonly {
            return Err(DiskError::NbdReadOnly {
                addr: n.addr.to_string(),
                export: n.export.clone(),
            });
        }
        c.set_fua(n.fua);
        Ok(NbdDisk(c))
    }
}

impl BlockBackend for NbdDisk {
    fn len(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.0.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write_at(offset, data)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
