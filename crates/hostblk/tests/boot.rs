//! A machine built on the drives' host disks (`hostblk::boot`, `hostblk::restore`): the images
//! are opened, a missing one is named, and a snapshot that does not fit is refused before any
//! disk is opened.

use machine::virtio::{NullConsole, OsEntropy};
use machine::{Backends, DriveConfig, Firmware, Machine, MachineConfig};
use std::path::PathBuf;

fn backends() -> Backends {
    struct Sink;
    impl machine::SerialBackend for Sink {
        fn transmit(&mut self, _: &[u8]) {}
    }
    Backends {
        serial: Box::new(Sink),
        console: Box::new(NullConsole),
        entropy: Box::new(OsEntropy::default()),
    }
}

/// A scratch directory with a firmware that waits (`wfi`) and `images` disk images of 64
/// sectors, and a configuration with a drive for each of `drives` (paths in that directory).
fn setup(name: &str, drives: &[&str]) -> (PathBuf, MachineConfig) {
    let dir = std::env::temp_dir().join(format!("hostblk-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fw = dir.join("fw.bin");
    std::fs::write(&fw, 0x1050_0073u32.to_le_bytes()).unwrap();
    let cfg = MachineConfig {
        mem_size: 8 << 20,
        bios: Firmware::File(fw),
        drives: drives
            .iter()
            .map(|d| DriveConfig {
                path: dir.join(d),
                readonly: false,
                nbd: None,
                delay: std::time::Duration::ZERO,
            })
            .collect(),
        ..MachineConfig::default()
    };
    (dir, cfg)
}

#[test]
fn boot_opens_the_images_and_names_a_missing_one() {
    let (dir, cfg) = setup("boot", &["a.img", "missing.img"]);
    std::fs::write(dir.join("a.img"), vec![5u8; 64 * 512]).unwrap();
    let err = hostblk::boot(&cfg, backends()).err().unwrap();
    assert!(err.to_string().contains("missing.img"), "{err}");
    std::fs::write(dir.join("missing.img"), vec![6u8; 8 * 512]).unwrap();
    let mut m = hostblk::boot(&cfg, backends()).unwrap();
    assert_eq!(m.disk_backend_mut(0).unwrap().len(), 64 * 512);
    assert_eq!(m.disk_backend_mut(1).unwrap().len(), 8 * 512);
    assert_eq!(
        m.disk_backend_mut(0).unwrap().describe(),
        "async(FileBackend)"
    );
    // Without its disks the board refuses a configuration with drives.
    assert!(Machine::new(&cfg, backends()).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn restore_refuses_a_snapshot_that_does_not_fit_before_opening_disks() {
    let (dir, cfg) = setup("restore", &["a.img"]);
    std::fs::write(dir.join("a.img"), vec![5u8; 64 * 512]).unwrap();
    let mut m = hostblk::boot(&cfg, backends()).unwrap();
    m.run(50_000);
    let snap = m.snapshot().unwrap();
    let r = hostblk::restore(&cfg, backends(), &snap).unwrap();
    assert_eq!(r.digest(), m.digest());
    // The images are opened by restore: a missing one is named.
    let (gone_dir, gone) = setup("restore-gone", &["none.img"]);
    let err = hostblk::restore(&gone, backends(), &snap).err().unwrap();
    assert!(err.to_string().contains("none.img"), "{err}");
    // A machine of another size: the snapshot is refused before the (missing) image is opened.
    let other = MachineConfig {
        mem_size: 16 << 20,
        ..gone
    };
    let err = hostblk::restore(&other, backends(), &snap).err().unwrap();
    assert!(
        matches!(err, hostblk::DiskError::Snapshot(_)),
        "refused for the snapshot, not the image: {err}"
    );
    std::fs::remove_dir_all(&gone_dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
