//! Disks given as backends: `Machine::with_disks` (what a replayer builds, with no image file),
//! `Machine::replace_disk` (a backup going live on the host's disk) and the snapshot restore
//! that takes backends.

use machine::virtio::block::MemBackend;
use machine::virtio::{BlockBackend, NullConsole, OsEntropy};
use machine::{Backends, DriveConfig, Firmware, Machine, MachineConfig, MachineError};

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

/// Two drives whose image paths do not exist: only backends can make them.
fn config() -> MachineConfig {
    // A file of its own per call: the tests run in parallel, and one rewriting a shared file
    // while another loads it gave that one an empty firmware now and then.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stub = std::env::temp_dir().join(format!("ftvm-disks-test-{}-{n}.bin", std::process::id()));
    std::fs::write(&stub, 0x1050_0073u32.to_le_bytes()).unwrap(); // wfi
    let drive = |readonly| DriveConfig {
        path: "/nonexistent/never-opened.img".into(),
        readonly,
        nbd: None,
        delay: std::time::Duration::ZERO,
    };
    MachineConfig {
        mem_size: 8 << 20,
        bios: Firmware::File(stub),
        drives: vec![drive(false), drive(true)],
        ..MachineConfig::default()
    }
}

fn disk(sectors: usize) -> Box<dyn BlockBackend> {
    Box::new(MemBackend {
        data: vec![0; sectors * 512],
        flushes: 0,
    })
}

#[test]
fn disks_from_backends_need_no_image() {
    let cfg = config();
    assert!(
        Machine::new(&cfg, backends()).is_err(),
        "the board opens no images: drives need backends"
    );
    let mut m = Machine::with_disks(&cfg, backends(), vec![disk(64), disk(8)]).unwrap();
    assert_eq!(m.disk_backend_mut(0).unwrap().len(), 64 * 512);
    assert_eq!(m.disk_backend_mut(1).unwrap().len(), 8 * 512);
    assert!(m.disk_backend_mut(2).is_none(), "slot 5 is the rng device");
    assert_eq!(machine::machine::disk_slot(0), Some(7));
    assert_eq!(machine::machine::disk_slot(1), Some(6));

    let err = Machine::with_disks(&cfg, backends(), vec![disk(64)]).unwrap_err();
    assert!(
        matches!(
            err,
            MachineError::DiskCount {
                given: 1,
                drives: 2
            }
        ),
        "{err}"
    );
}

#[test]
fn replace_disk_keeps_the_size_the_guest_knows() {
    let cfg = config();
    let mut m = Machine::with_disks(&cfg, backends(), vec![disk(64), disk(8)]).unwrap();
    let err = m.replace_disk(0, disk(63)).err().unwrap();
    assert_eq!(
        err.to_string(),
        "disk 0 has 64 sectors; the one offered in its place has 63"
    );
    assert!(matches!(
        m.replace_disk(2, disk(8)),
        Err(MachineError::NoDisk(2))
    ));
    let old = m.replace_disk(1, disk(8)).unwrap();
    assert_eq!(old.len(), 8 * 512);
}

#[test]
fn restore_with_disks_takes_backends() {
    let cfg = config();
    let mut m = Machine::with_disks(&cfg, backends(), vec![disk(64), disk(8)]).unwrap();
    m.run(50_000);
    let snap = m.snapshot().unwrap();
    let r = Machine::restore_with_disks(&cfg, backends(), vec![disk(64), disk(8)], &snap).unwrap();
    assert_eq!(r.digest(), m.digest());
    // Plain restore builds no disks (the host's are hostblk's): drives need backends.
    assert!(Machine::restore(&cfg, backends(), &snap).is_err());
    // A machine without those disks refuses the snapshot, naming the slot.
    let none = MachineConfig {
        drives: Vec::new(),
        ..cfg
    };
    let err = Machine::restore_with_disks(&none, backends(), Vec::new(), &snap)
        .err()
        .unwrap();
    assert!(err.to_string().contains("virtio slot"), "{err}");
}
