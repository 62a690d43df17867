//! virtio-blk (device id 2, virtio 1.2 §5.2): one request queue in front of a [`BlockBackend`].
//!
//! Requests run to completion inside [`VirtioMmio::process`], in ring order, through a 64 KiB
//! bounce buffer: the backend reads into a host buffer, which is then copied into guest memory
//! with [`Ram::write`] (and the other way for writes), so a disk read lands in the guest exactly
//! at the instruction count where `process` runs.
//!
//! A request is a device-readable header {type: u32, reserved: u32, sector: u64}, data, and one
//! device-writable status byte at the very end of the writable buffers. Malformed requests
//! (missing header or status, buffers outside RAM, a length that is not whole sectors, a range
//! past the end of the disk, a write to a read-only disk) complete with `VIRTIO_BLK_S_IOERR`;
//! unknown request types with `VIRTIO_BLK_S_UNSUPP`.

use super::queue::DescChain;
use super::{
    read_config_bytes, QueueError, VirtioDevice, VirtioError, VirtioMmio, Virtq,
    VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1, VIRTIO_ID_BLOCK,
};
use rv64::Ram;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Feature: `seg_max` in the configuration is valid.
pub const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
/// Feature: the disk is read-only.
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
/// Feature: `blk_size` in the configuration is valid.
pub const VIRTIO_BLK_F_BLK_SIZE: u64 = 1 << 6;
/// Feature: the device accepts flush requests.
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

/// Request type: read.
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// Request type: write.
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// Request type: flush.
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// Request type: device id string.
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;

/// Request status: success.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// Request status: the request failed.
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Request status: the request type is not supported.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Bytes per sector, the unit of `sector` and `capacity`.
pub const SECTOR_SIZE: u64 = 512;
/// Length of a request header.
const HEADER_LEN: u64 = 16;
/// Length of the GET_ID answer.
const ID_LEN: usize = 20;
/// The serial number every disk reports: fixed, so that a primary and its backup agree.
const DISK_ID: &[u8; ID_LEN] = b"ftvm-virtio-blk\0\0\0\0\0";
/// QueueNumMax of the request queue (QEMU's default too).
const QUEUE_SIZE: u16 = 256;
/// Size of the bounce buffer: the most data moved between disk and RAM in one step.
const CHUNK: usize = 64 * 1024;

/// User configuration of a disk: `ftvm run --drive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockConfig {
    /// Raw disk image.
    pub path: PathBuf,
    /// Offer the disk read-only (VIRTIO_BLK_F_RO) and refuse writes.
    pub readonly: bool,
}

/// Where a disk's sectors live. The replay layer wraps this to record and replay reads.
pub trait BlockBackend: Send {
    /// Size of the disk in bytes. The guest sees whole sectors only.
    fn len(&self) -> u64;
    /// Whether the disk has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from byte `offset`; the range is always inside [`BlockBackend::len`].
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at byte `offset`; the range is always inside [`BlockBackend::len`].
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> io::Result<()>;
}

/// A raw disk image in a host file.
#[derive(Debug)]
pub struct FileBackend {
    file: File,
    len: u64,
}

impl FileBackend {
    /// Opens `path`, for reading only if `readonly`.
    pub fn open(path: &std::path::Path, readonly: bool) -> Result<FileBackend, VirtioError> {
        let err = |source| VirtioError::OpenDisk {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!readonly)
            .open(path)
            .map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        Ok(FileBackend { file, len })
    }
}

impl BlockBackend for FileBackend {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// A disk held in host memory (tests, scratch disks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemBackend {
    /// The disk's bytes.
    pub data: Vec<u8>,
    /// Number of flushes seen.
    pub flushes: u64,
}

impl BlockBackend for MemBackend {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|o| self.data.get(o..o.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let dst = usize::try_from(offset)
            .ok()
            .and_then(|o| self.data.get_mut(o..o.checked_add(data.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        dst.copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
}

impl VirtioMmio {
    /// A virtio-blk device on the raw image `cfg.path`.
    pub fn block(cfg: BlockConfig) -> Result<VirtioMmio, VirtioError> {
        let backend = FileBackend::open(&cfg.path, cfg.readonly)?;
        Ok(VirtioMmio::block_with_backend(
            Box::new(backend),
            cfg.readonly,
        ))
    }

    /// A virtio-blk device on any backend (e.g. one the replay layer wraps).
    pub fn block_with_backend(backend: Box<dyn BlockBackend>, readonly: bool) -> VirtioMmio {
        VirtioMmio::new(Box::new(Block::new(backend, readonly)))
    }
}

/// The virtio-blk device model.
struct Block {
    backend: Box<dyn BlockBackend>,
    readonly: bool,
    /// Disk size in sectors.
    capacity: u64,
    features: u64,
    config: [u8; 64],
    bounce: Vec<u8>,
}

impl Block {
    fn new(backend: Box<dyn BlockBackend>, readonly: bool) -> Block {
        let capacity = backend.len() / SECTOR_SIZE;
        let mut features = VIRTIO_F_VERSION_1
            | VIRTIO_F_RING_INDIRECT_DESC
            | VIRTIO_BLK_F_SEG_MAX
            | VIRTIO_BLK_F_BLK_SIZE
            | VIRTIO_BLK_F_FLUSH;
        if readonly {
            features |= VIRTIO_BLK_F_RO;
        }
        // struct virtio_blk_config (§5.2.4); fields whose feature is not offered stay zero.
        let mut config = [0u8; 64];
        config[0..8].copy_from_slice(&capacity.to_le_bytes());
        config[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes()); // seg_max
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
        config[34..36].copy_from_slice(&1u16.to_le_bytes()); // num_queues
        Block {
            backend,
            readonly,
            capacity,
            features,
            config,
            bounce: vec![0; CHUNK],
        }
    }

    /// Executes one request and writes its status byte. Returns the used length: the bytes
    /// written into the chain.
    fn handle(&mut self, ram: &mut Ram, chain: &DescChain) -> u32 {
        let writable = chain.writable_len();
        if writable == 0 {
            return 0; // nowhere to put a status: the driver gets nothing back
        }
        let data_len = writable - 1;
        let (status, written) = match self.execute(ram, chain, data_len) {
            Ok(written) => (VIRTIO_BLK_S_OK, written),
            Err(status) => (status, 0),
        };
        if chain.write_at(ram, data_len, &[status]).is_err() {
            return 0;
        }
        u32::try_from(written + 1).unwrap_or(u32::MAX)
    }

    /// Runs the request; `Ok(bytes of data written into the chain)` or `Err(status)`.
    fn execute(&mut self, ram: &mut Ram, chain: &DescChain, in_len: u64) -> Result<u64, u8> {
        let mut header = [0u8; HEADER_LEN as usize];
        chain
            .read_at(ram, 0, &mut header)
            .map_err(|_| VIRTIO_BLK_S_IOERR)?;
        if !chain.in_ram(ram) {
            return Err(VIRTIO_BLK_S_IOERR);
        }
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let ioerr = |_| VIRTIO_BLK_S_IOERR;
        match kind {
            VIRTIO_BLK_T_IN => {
                let start = self.range(sector, in_len)?;
                self.copy(in_len, |b, off, buf| {
                    b.backend.read_at(start + off, buf).map_err(ioerr)?;
                    chain
                        .write_at(ram, off, buf)
                        .map_err(|_| VIRTIO_BLK_S_IOERR)
                })?;
                Ok(in_len)
            }
            VIRTIO_BLK_T_OUT => {
                if self.readonly {
                    return Err(VIRTIO_BLK_S_IOERR);
                }
                let out_len = chain.readable_len() - HEADER_LEN;
                let start = self.range(sector, out_len)?;
                self.copy(out_len, |b, off, buf| {
                    chain
                        .read_at(ram, HEADER_LEN + off, buf)
                        .map_err(|_| VIRTIO_BLK_S_IOERR)?;
                    b.backend.write_at(start + off, buf).map_err(ioerr)
                })?;
                Ok(0)
            }
            VIRTIO_BLK_T_FLUSH => {
                if !self.readonly {
                    self.backend.flush().map_err(ioerr)?;
                }
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = usize::try_from(in_len).unwrap_or(ID_LEN).min(ID_LEN);
                chain
                    .write_at(ram, 0, &DISK_ID[..n])
                    .map_err(|_| VIRTIO_BLK_S_IOERR)?;
                Ok(n as u64)
            }
            _ => Err(VIRTIO_BLK_S_UNSUPP),
        }
    }

    /// Byte offset of `len` bytes at `sector`, if they are whole sectors inside the disk.
    fn range(&self, sector: u64, len: u64) -> Result<u64, u8> {
        let end = sector.checked_add(len / SECTOR_SIZE);
        if !len.is_multiple_of(SECTOR_SIZE) || end.is_none_or(|e| e > self.capacity) {
            return Err(VIRTIO_BLK_S_IOERR);
        }
        Ok(sector * SECTOR_SIZE)
    }

    /// Calls `step(self, offset, bounce buffer)` for each bounce-buffer-sized piece of `len`.
    fn copy(
        &mut self,
        len: u64,
        mut step: impl FnMut(&mut Block, u64, &mut [u8]) -> Result<(), u8>,
    ) -> Result<(), u8> {
        let mut bounce = std::mem::take(&mut self.bounce);
        let mut off = 0;
        let mut result = Ok(());
        while off < len && result.is_ok() {
            let n = (len - off).min(CHUNK as u64) as usize;
            result = step(self, off, &mut bounce[..n]);
            off += n as u64;
        }
        self.bounce = bounce;
        result
    }
}

impl VirtioDevice for Block {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }
    fn features(&self) -> u64 {
        self.features
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }
    fn config_read(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn block_backend_mut(&mut self) -> Option<&mut Box<dyn BlockBackend>> {
        Some(&mut self.backend)
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
            let len = self.handle(ram, &chain);
            q.add_used(ram, chain.head, len)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testutil::{Driver, BASE, DATA};
    use std::sync::{Arc, Mutex};

    /// A shared in-memory disk, so a test can look at it after handing it to the device.
    #[derive(Clone)]
    struct Shared(Arc<Mutex<MemBackend>>);

    impl BlockBackend for Shared {
        fn len(&self) -> u64 {
            self.0.lock().unwrap().len()
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.0.lock().unwrap().read_at(offset, buf)
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.0.lock().unwrap().write_at(offset, data)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.lock().unwrap().flush()
        }
    }

    const HDR: u64 = DATA;
    const BUF: u64 = DATA + 0x1000;
    const STATUS: u64 = DATA + 0x800;

    /// A 64-sector disk whose sector n is filled with byte n.
    fn setup(readonly: bool) -> (Driver, Shared) {
        let data = (0..64u8).flat_map(|s| [s; 512]).collect();
        let disk = Shared(Arc::new(Mutex::new(MemBackend { data, flushes: 0 })));
        let dev = VirtioMmio::block_with_backend(Box::new(disk.clone()), readonly);
        (Driver::new(dev, u64::MAX, 16), disk)
    }

    fn header(d: &mut Driver, kind: u32, sector: u64) {
        let mut h = Vec::new();
        h.extend_from_slice(&kind.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&sector.to_le_bytes());
        d.ram.write(HDR, &h).unwrap();
        d.ram.write(STATUS, &[0xff]).unwrap();
    }

    fn status(d: &Driver) -> u8 {
        d.mem(STATUS, 1)[0]
    }

    #[test]
    fn config_and_features() {
        let (mut d, _) = setup(true);
        assert_eq!(d.dev.device_id(), 2);
        assert_eq!(d.dev.read(0x100, 8), Some(64), "capacity in sectors");
        assert_eq!(d.dev.read(0x100 + 12, 4), Some(254), "seg_max");
        assert_eq!(d.dev.read(0x100 + 20, 4), Some(512), "blk_size");
        d.set_reg(0x014, 0);
        let f = d.reg(0x010);
        assert_ne!(f & (1 << 5), 0, "VIRTIO_BLK_F_RO");
        assert_ne!(f & (1 << 9), 0, "VIRTIO_BLK_F_FLUSH");
        let (mut d, _) = setup(false);
        d.set_reg(0x014, 0);
        assert_eq!(d.reg(0x010) & (1 << 5), 0);
    }

    #[test]
    fn read_write_flush() {
        let (mut d, disk) = setup(false);
        // Read sectors 2..4 into a buffer split over two descriptors.
        header(&mut d, VIRTIO_BLK_T_IN, 2);
        let head = d.submit(
            0,
            &[
                (HDR, 16, false),
                (BUF, 700, true),
                (BUF + 700, 324, true),
                (STATUS, 1, true),
            ],
        );
        d.kick(0);
        assert_eq!(d.take_used(0), vec![(u32::from(head), 1025)]);
        assert_eq!(status(&d), VIRTIO_BLK_S_OK);
        assert_eq!(d.mem(BUF, 1024), [[2u8; 512], [3u8; 512]].concat());
        assert_eq!(d.ack(), 1, "used-buffer interrupt");
        assert!(!d.dev.irq_level());

        // Write sector 5, header and data in one descriptor.
        d.ram.write(HDR + 16, &[0xab; 512]).unwrap();
        header(&mut d, VIRTIO_BLK_T_OUT, 5);
        d.submit(0, &[(HDR, 16 + 512, false), (STATUS, 1, true)]);
        d.kick(0);
        assert_eq!(d.take_used(0).len(), 1);
        assert_eq!(status(&d), VIRTIO_BLK_S_OK);
        assert_eq!(disk.0.lock().unwrap().data[5 * 512..6 * 512], [0xab; 512]);

        header(&mut d, VIRTIO_BLK_T_FLUSH, 0);
        d.submit(0, &[(HDR, 16, false), (STATUS, 1, true)]);
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_OK);
        assert_eq!(disk.0.lock().unwrap().flushes, 1);

        header(&mut d, VIRTIO_BLK_T_GET_ID, 0);
        d.submit(0, &[(HDR, 16, false), (BUF, 20, true), (STATUS, 1, true)]);
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_OK);
        assert_eq!(&d.mem(BUF, 15)[..], b"ftvm-virtio-blk");
        assert!(!d.needs_reset());
    }

    #[test]
    fn large_read_goes_through_the_bounce_buffer_in_pieces() {
        let (mut d, _) = setup(false);
        header(&mut d, VIRTIO_BLK_T_IN, 0);
        d.submit(
            0,
            &[(HDR, 16, false), (BUF, 64 * 512, true), (STATUS, 1, true)],
        );
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_OK);
        assert_eq!(d.mem(BUF + 63 * 512, 512), vec![63; 512]);
    }

    #[test]
    fn requests_past_the_end_fail() {
        let (mut d, _) = setup(false);
        for (sector, len) in [(63, 1024), (64, 512), (u64::MAX, 512), (0, 100)] {
            header(&mut d, VIRTIO_BLK_T_IN, sector);
            d.submit(0, &[(HDR, 16, false), (BUF, len, true), (STATUS, 1, true)]);
            d.kick(0);
            assert_eq!(status(&d), VIRTIO_BLK_S_IOERR, "sector {sector} len {len}");
            assert_eq!(d.mem(BUF, 4), [0; 4], "no data for a failed request");
        }
        header(&mut d, VIRTIO_BLK_T_OUT, 63);
        d.submit(
            0,
            &[(HDR, 16, false), (BUF, 1024, false), (STATUS, 1, true)],
        );
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_IOERR);
        assert!(!d.needs_reset());
    }

    #[test]
    fn readonly_disk_refuses_writes() {
        let (mut d, disk) = setup(true);
        header(&mut d, VIRTIO_BLK_T_OUT, 0);
        d.ram.write(BUF, &[0xee; 512]).unwrap();
        d.submit(0, &[(HDR, 16, false), (BUF, 512, false), (STATUS, 1, true)]);
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_IOERR);
        assert_eq!(disk.0.lock().unwrap().data[..512], [0; 512]);
    }

    #[test]
    fn unknown_types_and_malformed_requests() {
        let (mut d, _) = setup(false);
        header(&mut d, 11, 0); // DISCARD, not offered
        d.submit(0, &[(HDR, 16, false), (STATUS, 1, true)]);
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_UNSUPP);

        header(&mut d, VIRTIO_BLK_T_IN, 0);
        d.submit(0, &[(HDR, 8, false), (STATUS, 1, true)]); // short header
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_IOERR);

        d.submit(0, &[(HDR, 16, false)]); // no status byte at all
        d.kick(0);
        assert_eq!(d.take_used(0).last(), Some(&(4, 0)));
        assert!(!d.needs_reset());
    }

    #[test]
    fn data_buffer_outside_ram_is_an_io_error() {
        let (mut d, _) = setup(false);
        header(&mut d, VIRTIO_BLK_T_IN, 0);
        d.submit(
            0,
            &[
                (HDR, 16, false),
                (BASE + (1 << 20) - 256, 512, true),
                (STATUS, 1, true),
            ],
        );
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_IOERR);
        header(&mut d, VIRTIO_BLK_T_IN, 0);
        d.submit(
            0,
            &[(HDR, 16, false), (0x1000, 512, true), (STATUS, 1, true)],
        );
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_IOERR);
        assert!(!d.needs_reset());
    }

    #[test]
    fn descriptor_loop_needs_reset() {
        let (mut d, _) = setup(false);
        header(&mut d, VIRTIO_BLK_T_IN, 0);
        d.put_desc(0, 0, HDR, 16, 1, 1);
        d.put_desc(0, 1, BUF, 512, 3, 0);
        d.make_available(0, 0);
        d.kick(0);
        assert!(d.needs_reset());
        assert_eq!(d.ack(), 2, "config-change interrupt");
        assert!(matches!(
            d.dev.last_error(),
            Some(QueueError::ChainTooLong(16))
        ));
        // Nothing more happens until the driver resets the device.
        d.kick(0);
        assert!(d.take_used(0).is_empty());
    }

    #[test]
    fn descriptor_table_outside_ram_needs_reset() {
        let (mut d, _) = setup(false);
        // Re-point queue 0 at a table outside RAM.
        d.set_reg(0x030, 0);
        d.set_reg(0x044, 0);
        d.set_reg(0x080, 0x1000);
        d.set_reg(0x084, 0);
        d.set_reg(0x044, 1);
        d.make_available(0, 0);
        d.kick(0);
        assert!(d.needs_reset());
    }

    #[test]
    fn missing_image_names_the_path() {
        let err = VirtioMmio::block(BlockConfig {
            path: "/nonexistent/disk.img".into(),
            readonly: false,
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/disk.img"), "{err}");
    }

    #[test]
    fn file_backend_round_trip() {
        let path = std::env::temp_dir().join(format!("ftvm-virtio-blk-{}.img", std::process::id()));
        std::fs::write(&path, vec![7u8; 4096 + 100]).unwrap();
        let mut dev = VirtioMmio::block(BlockConfig {
            path: path.clone(),
            readonly: false,
        })
        .unwrap();
        assert_eq!(
            dev.read(0x100, 8),
            Some(8),
            "partial trailing sector is not offered"
        );
        let mut d = Driver::new(dev, u64::MAX, 16);
        header(&mut d, VIRTIO_BLK_T_OUT, 7);
        d.ram.write(BUF, &[9; 512]).unwrap();
        d.submit(0, &[(HDR, 16, false), (BUF, 512, false), (STATUS, 1, true)]);
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_OK);
        let image = std::fs::read(&path).unwrap();
        assert_eq!(image[7 * 512..8 * 512], [9; 512]);
        std::fs::remove_file(&path).unwrap();

        let ro = FileBackend::open(&path, true);
        assert!(ro.is_err());
    }
}
