//! Fixtures for ft's own unit tests and benchmarks (`benches/`), which cannot reach
//! `#[cfg(test)]` code: not part of the API.

use machine::config::{DriveConfig, Firmware, NetConfig};
use machine::{Backends, Machine, MachineConfig};
use std::time::Duration;

/// A 16 MiB machine with one file disk of `disk_bytes` (all 7s) and a network card, whose
/// firmware spins (`j .`), its files in `dir`.
pub fn spinning_machine(
    dir: &std::path::Path,
    disk_bytes: usize,
) -> Result<Machine, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let fw = dir.join("fw.bin");
    std::fs::write(&fw, 0x0000_006fu32.to_le_bytes())?; // j .
    let img = dir.join("disk.img");
    std::fs::write(&img, vec![7u8; disk_bytes])?;
    let cfg = MachineConfig {
        mem_size: 16 << 20,
        harts: 1,
        bios: Firmware::File(fw),
        kernel: None,
        initrd: None,
        append: String::new(),
        drives: vec![DriveConfig {
            path: img,
            readonly: false,
            nbd: None,
            delay: Duration::ZERO,
        }],
        net: Some(NetConfig::default()),
    };
    let out = rr::Outbox::default();
    Ok(hostblk::boot(
        &cfg,
        Backends {
            serial: Box::new(out.clone()),
            console: Box::new(out),
            entropy: Box::new(machine::virtio::OsEntropy::default()),
        },
    )?)
}
