//! Turns fuzz input into snapshot files for one small machine, shared by the `snapshot` fuzz
//! target and the plain test `crates/machine/tests/snapshot_fuzz.rs` (which includes this file).
//!
//! A snapshot file is checked by a CRC-32C and its payload is LZ4-compressed, so random bytes
//! would almost never get past the header. The first input byte therefore chooses a mode:
//!
//! - 0: the rest is a whole snapshot file, as is (magic, version, lengths, checksum checks);
//! - 1: the rest is a whole snapshot file whose trailing CRC-32C is fixed up (the header's
//!   configuration and lengths);
//! - otherwise: the rest is an *uncompressed payload*, sealed into a valid file for the
//!   machine (its header, compressed, checksummed), so that every section decoder is reached.

#![allow(dead_code)]

use machine::virtio::{EntropyBackend, NullConsole};
use machine::{Backends, Firmware, Machine, MachineConfig};

/// Where the configuration part of a snapshot's header ends: magic, version, RAM size, harts,
/// eight slot ids and the configuration hash.
pub const CONFIG_END: usize = 8 + 2 + 8 + 4 + 4 * 8 + 8;
/// Where the payload starts: after the two payload lengths.
pub const PAYLOAD_AT: usize = CONFIG_END + 16;

/// Entropy that is always zero.
pub struct Zeros;

impl EntropyBackend for Zeros {
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        buf.fill(0);
        Ok(())
    }
}

/// The machine every input is restored into: 8 MiB, one hart, no disk, and a firmware of one
/// `wfi` loop (written to a temporary file once per process).
pub fn config() -> MachineConfig {
    static STUB: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let stub = STUB.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("ftvm-snapshot-fuzz-{}.bin", std::process::id()));
        // wfi; j .-4
        let code = [0x1050_0073u32, 0xffdf_f06f];
        let bytes: Vec<u8> = code.iter().flat_map(|w| w.to_le_bytes()).collect();
        std::fs::write(&p, bytes).expect("write the fuzz firmware");
        p
    });
    MachineConfig {
        mem_size: 8 << 20,
        harts: 1,
        bios: Firmware::File(stub.clone()),
        ..MachineConfig::default()
    }
}

/// Backends that go nowhere.
pub fn backends() -> Backends {
    Backends {
        serial: Box::new(Sink),
        console: Box::new(NullConsole),
        entropy: Box::new(Zeros),
    }
}

struct Sink;

impl machine::SerialBackend for Sink {
    fn transmit(&mut self, _: &[u8]) {}
}

/// A fresh machine of [`config`].
pub fn machine() -> Machine {
    Machine::new(&config(), backends()).expect("the fuzz machine builds")
}

/// The decompressed payload of a valid snapshot `file`.
pub fn payload_of(file: &[u8]) -> Vec<u8> {
    let raw_len = u64::from_le_bytes(file[CONFIG_END..CONFIG_END + 8].try_into().unwrap());
    lz4_flex::block::decompress(&file[PAYLOAD_AT..file.len() - 4], raw_len as usize).unwrap()
}

/// A valid file around `payload`, with the header of the valid snapshot `like`.
pub fn seal(like: &[u8], payload: &[u8]) -> Vec<u8> {
    let compressed = lz4_flex::block::compress(payload);
    let mut f = like[..CONFIG_END].to_vec();
    f.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    f.extend_from_slice(&(compressed.len() as u64).to_le_bytes());
    f.extend_from_slice(&compressed);
    let crc = crc32c::crc32c(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

/// The snapshot file that fuzz input `data` stands for (see the module docs); `like` is a
/// valid snapshot of the machine.
pub fn file_for(like: &[u8], data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    match mode {
        0 => rest.to_vec(),
        1 => {
            let mut f = rest.to_vec();
            if f.len() >= 4 {
                let n = f.len() - 4;
                let crc = crc32c::crc32c(&f[..n]);
                f[n..].copy_from_slice(&crc.to_le_bytes());
            }
            f
        }
        _ => seal(like, rest),
    }
}
