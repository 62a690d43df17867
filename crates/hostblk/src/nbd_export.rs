//! An NBD export as a disk. Every request is one synchronous round trip bounded by the
//! client's timeout; a failure (server error, timeout, closed connection) is an `io::Error`,
//! which the device turns into VIRTIO_BLK_S_IOERR. Behind an [`crate::AsyncDisk`] the round
//! trips of reads and flushes happen on the worker thread.

use crate::DiskError;
use machine::virtio::BlockBackend;
use machine::{NbdDriveConfig, ServerAddr};
use nbd::{NbdAddr, NbdClient};

/// The NBD client's address for the server the configuration names.
fn nbd_addr(a: &ServerAddr) -> NbdAddr {
    match a {
        ServerAddr::Tcp(hp) => NbdAddr::Tcp(hp.clone()),
        ServerAddr::Unix(p) => NbdAddr::Unix(p.clone()),
    }
}

/// A connection to an NBD export, as a disk.
pub struct NbdDisk(NbdClient);

impl NbdDisk {
    /// Connects to an NBD drive. A read-only export must be configured read-only, so that the
    /// guest is told (VIRTIO_BLK_F_RO) instead of seeing its writes fail.
    pub fn connect(n: &NbdDriveConfig, readonly: bool) -> Result<NbdDisk, DiskError> {
        let mut c = NbdClient::connect(&nbd_addr(&n.addr), &n.export, n.timeout)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_address_is_the_one_connected_to() {
        let d: machine::DriveConfig = "nbd=[::1]:10809".parse().unwrap();
        let a = nbd_addr(&d.nbd.unwrap().addr);
        assert_eq!(a, NbdAddr::Tcp("[::1]:10809".into()));
        assert_eq!(a.to_string(), "[::1]:10809");
        let d: machine::DriveConfig = "nbd=unix:/run/nbd.sock".parse().unwrap();
        let a = nbd_addr(&d.nbd.unwrap().addr);
        assert_eq!(a, NbdAddr::Unix("/run/nbd.sock".into()));
        assert_eq!(a.to_string(), "unix:/run/nbd.sock");
    }

    #[test]
    fn the_configured_default_timeout_is_the_clients() {
        assert_eq!(machine::NBD_DEFAULT_TIMEOUT, nbd::DEFAULT_TIMEOUT);
        let d: machine::DriveConfig = "nbd=h:1".parse().unwrap();
        assert_eq!(d.nbd.unwrap().timeout, nbd::DEFAULT_TIMEOUT);
    }
}
