//! A raw disk image in a host file: positioned reads and writes, and `fdatasync` for a flush.

use crate::DiskError;
use machine::virtio::BlockBackend;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;

/// A raw disk image in a host file.
#[derive(Debug)]
pub struct FileBackend {
    file: File,
    len: u64,
}

impl FileBackend {
    /// Opens `path`, for reading only if `readonly`.
    pub fn open(path: &std::path::Path, readonly: bool) -> Result<FileBackend, DiskError> {
        let err = |source| DiskError::Open {
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

#[cfg(test)]
mod tests {
    use super::*;
    use machine::virtio::VirtioMmio;

    #[test]
    fn missing_image_names_the_path() {
        let err = FileBackend::open("/nonexistent/disk.img".as_ref(), false).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/disk.img"), "{err}");
    }

    #[test]
    fn file_backend_round_trip() {
        let path = std::env::temp_dir().join(format!("ftvm-virtio-blk-{}.img", std::process::id()));
        std::fs::write(&path, vec![7u8; 4096 + 100]).unwrap();
        let disk = FileBackend::open(&path, false).unwrap();
        let mut dev = VirtioMmio::block_with_backend(Box::new(disk), false);
        assert_eq!(
            dev.read(0x100, 8),
            Some(8),
            "partial trailing sector is not offered"
        );
        let mut disk = FileBackend::open(&path, false).unwrap();
        disk.write_at(7 * 512, &[9; 512]).unwrap();
        disk.flush().unwrap();
        let image = std::fs::read(&path).unwrap();
        assert_eq!(image[7 * 512..8 * 512], [9; 512]);
        let mut back = [0u8; 512];
        disk.read_at(7 * 512, &mut back).unwrap();
        assert_eq!(back, [9; 512]);
        let mut ro = FileBackend::open(&path, true).unwrap();
        assert!(ro.write_at(0, &[1]).is_err(), "opened for reading only");
        std::fs::remove_file(&path).unwrap();

        let ro = FileBackend::open(&path, true);
        assert!(ro.is_err());
    }
}
