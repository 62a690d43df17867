//! The boot ROM at the reset vector, laid out as QEMU `virt` lays out its own (hw/riscv/boot.c):
//! five instructions that jump to the first stage with a0 = hartid, a1 = device tree and
//! a2 = the `fw_dynamic_info` that follows, then the two addresses they load, then the
//! `fw_dynamic_info` structure that OpenSBI's `fw_dynamic` reads to find the kernel.

/// Physical base address (every hart's reset vector).
pub const BASE: u64 = 0x1000;
/// Size of the window; bytes past the program read as zero.
pub const SIZE: u64 = 0xf000;

/// `fw_dynamic_info.magic` ("OSBI").
pub const FW_DYNAMIC_MAGIC: u64 = 0x4942_534f;
/// `fw_dynamic_info.version`.
pub const FW_DYNAMIC_VERSION: u64 = 2;
/// `fw_dynamic_info.next_mode` for S-mode.
pub const FW_DYNAMIC_NEXT_MODE_S: u64 = 1;

const CODE: [u32; 6] = [
    0x0000_0297, // 1: auipc t0, 0
    0x0282_8613, //    addi  a2, t0, 40     (&fw_dynamic_info)
    0xf140_2573, //    csrr  a0, mhartid
    0x0202_b583, //    ld    a1, 32(t0)     (device tree)
    0x0182_b283, //    ld    t0, 24(t0)     (first stage)
    0x0002_8067, //    jr    t0
];

/// Builds the ROM image: jump to `start` with the device tree at `fdt`; `fw_dynamic` is told to
/// enter `next` (the kernel) in S-mode on boot hart 0.
pub fn build(start: u64, fdt: u64, next: u64) -> Vec<u8> {
    let mut rom = Vec::with_capacity(88);
    for insn in CODE {
        rom.extend_from_slice(&insn.to_le_bytes());
    }
    for word in [
        start,
        fdt,
        FW_DYNAMIC_MAGIC,
        FW_DYNAMIC_VERSION,
        next,
        FW_DYNAMIC_NEXT_MODE_S,
        0,
        0,
    ] {
        rom.extend_from_slice(&word.to_le_bytes());
    }
    rom
}

/// A guest read of `size` bytes at `offset` of the ROM `image`. Misaligned accesses fault.
pub fn read(image: &[u8], offset: u64, size: u8) -> Option<u64> {
    if !matches!(size, 1 | 2 | 4 | 8) || !offset.is_multiple_of(u64::from(size)) || offset >= SIZE {
        return None;
    }
    let mut b = [0u8; 8];
    for (i, byte) in b.iter_mut().take(usize::from(size)).enumerate() {
        *byte = usize::try_from(offset)
            .ok()
            .and_then(|o| image.get(o + i))
            .copied()
            .unwrap_or(0);
    }
    Some(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_code_offsets() {
        let rom = build(0x8000_0000, 0x8fe0_0000, 0x8020_0000);
        assert_eq!(read(&rom, 24, 8), Some(0x8000_0000));
        assert_eq!(read(&rom, 32, 8), Some(0x8fe0_0000));
        assert_eq!(read(&rom, 40, 8), Some(FW_DYNAMIC_MAGIC));
        assert_eq!(read(&rom, 48, 8), Some(2));
        assert_eq!(read(&rom, 56, 8), Some(0x8020_0000));
        assert_eq!(read(&rom, 64, 8), Some(1));
        assert_eq!(read(&rom, 0, 4), Some(0x297));
        assert_eq!(read(&rom, 0x100, 8), Some(0));
        assert_eq!(read(&rom, 3, 4), None);
        assert_eq!(read(&rom, SIZE, 1), None);
    }
}
