//! Where the boot images go in RAM, decided as QEMU `virt` decides it (hw/riscv/boot.c), with
//! every overlap and overflow reported as an error instead of a corrupted boot:
//!
//! - firmware at the start of RAM; the kernel at the next 2 MiB boundary after it (0x8020_0000
//!   for OpenSBI), or at the start of RAM with no firmware;
//! - the initrd at kernel + min(RAM / 2, 128 MiB), or else just below the device tree;
//! - the device tree at the top of RAM (below 3 GiB), aligned down to 2 MiB.
//!
//! Raw binaries and ELF files (loaded by their physical program headers) are accepted.

use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;
/// The device tree is kept below this address, as QEMU does, so 32-bit-limited code finds it.
const FDT_LIMIT: u64 = 0xc000_0000;

/// Errors loading the boot images.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// cannot read {what} {path}: {source}
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// Which image.
        what: &'static str,
        /// Its file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// {what} {path} is empty
    #[error("{what} {} is empty", path.display())]
    Empty {
        /// Which image.
        what: &'static str,
        /// Its file.
        path: PathBuf,
    },
    /// {what} {path} (at least {size} bytes) is larger than RAM ({ram} bytes): increase --mem
    #[error("{what} {} (at least {size} bytes) is larger than RAM ({ram} bytes): increase --mem", path.display())]
    LargerThanRam {
        /// Which image.
        what: &'static str,
        /// Its file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The RAM size.
        ram: u64,
    },
    /// {what} is a malformed or truncated ELF file: {why}
    #[error("{what} is a malformed or truncated ELF file: {why}")]
    BadElf {
        /// Which image.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// {what} ({start:#x}..{end:#x}) does not fit in RAM ({ram_start:#x}..{ram_end:#x}): increase --mem
    #[error("{what} ({start:#x}..{end:#x}) does not fit in RAM ({ram_start:#x}..{ram_end:#x}): increase --mem")]
    DoesNotFit {
        /// Which image.
        what: &'static str,
        /// Its first byte.
        start: u64,
        /// One past its last byte (including any memory it claims beyond the file).
        end: u64,
        /// First byte of RAM.
        ram_start: u64,
        /// One past the last byte of RAM.
        ram_end: u64,
    },
    /// {a} ({a_start:#x}..{a_end:#x}) overlaps {b} ({b_start:#x}..{b_end:#x})
    #[error("{a} ({a_start:#x}..{a_end:#x}) overlaps {b} ({b_start:#x}..{b_end:#x})")]
    Overlap {
        /// One image.
        a: &'static str,
        /// Its start.
        a_start: u64,
        /// Its end.
        a_end: u64,
        /// The other.
        b: &'static str,
        /// Its start.
        b_start: u64,
        /// Its end.
        b_end: u64,
    },
    /// an initrd needs a kernel: add --kernel
    #[error("an initrd needs a kernel: add --kernel")]
    InitrdWithoutKernel,
    /// nothing to boot: give --kernel, or --bios with a firmware file
    #[error("nothing to boot: give --kernel, or --bios with a firmware file")]
    NothingToBoot,
}

/// One contiguous piece of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Physical load address.
    pub addr: u64,
    /// Bytes to copy.
    pub data: Vec<u8>,
}

/// A boot image ready to be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// What it is ("firmware", "kernel", "initrd", "device tree"), for messages.
    pub what: &'static str,
    /// What to copy where.
    pub segments: Vec<Segment>,
    /// Entry point.
    pub entry: u64,
    /// The memory the image occupies once running, `start..end` (may exceed its file, e.g. a
    /// Linux `Image`'s BSS).
    pub footprint: (u64, u64),
}

/// Reads an image file, refusing empty ones, and ones larger than `limit` (the RAM size)
/// before reading them.
pub fn read_file(what: &'static str, path: &Path, limit: u64) -> Result<Vec<u8>, LoadError> {
    let err = |source| LoadError::Read {
        what,
        path: path.into(),
        source,
    };
    // Read through a limit, so that a device or pipe that never ends cannot exhaust memory.
    let file = std::fs::File::open(path).map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    let mut data = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, limit.saturating_add(1)),
        &mut data,
    )
    .map_err(err)?;
    if size > limit || data.len() as u64 > limit {
        return Err(LoadError::LargerThanRam {
            what,
            path: path.into(),
            size: size.max(data.len() as u64),
            ram: limit,
        });
    }
    if data.is_empty() {
        return Err(LoadError::Empty {
            what,
            path: path.into(),
        });
    }
    Ok(data)
}

/// The memory size a RISC-V Linux `Image` header declares (text plus BSS), if `data` has one.
fn linux_image_size(data: &[u8]) -> Option<u64> {
    // Documentation/riscv/boot-image-header.rst: image_size at 16, magic2 "RSC\x05" at 56.
    if data.get(56..60)? != b"RSC\x05" {
        return None;
    }
    Some(u64::from_le_bytes(data.get(16..24)?.try_into().ok()?))
}

fn u16_at(d: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        d.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(d: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        d.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn parse_elf(what: &'static str, d: &[u8]) -> Result<Image, LoadError> {
    let bad = |why| LoadError::BadElf { what, why };
    if d.get(4) != Some(&2) || d.get(5) != Some(&1) {
        return Err(bad("not a little-endian 64-bit ELF"));
    }
    if u16_at(d, 18) != Some(243) {
        return Err(bad("not a RISC-V ELF"));
    }
    let entry = u64_at(d, 24).ok_or(bad("header cut short"))?;
    let phoff = u64_at(d, 32).ok_or(bad("header cut short"))?;
    let phentsize = u16_at(d, 54).ok_or(bad("header cut short"))?;
    let phnum = u16_at(d, 56).ok_or(bad("header cut short"))?;
    if phentsize < 56 {
        return Err(bad("program header entries too small"));
    }
    let mut segments = Vec::new();
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for i in 0..u64::from(phnum) {
        let ph = phoff
            .checked_add(i * u64::from(phentsize))
            .and_then(|o| usize::try_from(o).ok())
            .ok_or(bad("program header out of range"))?;
        let p_type = u32_at(d, ph).ok_or(bad("program headers cut short"))?;
        if p_type != 1 {
            continue; // PT_LOAD only
        }
        let field = |off| u64_at(d, ph + off).ok_or(bad("program headers cut short"));
        let (offset, paddr, filesz, memsz) = (field(8)?, field(24)?, field(32)?, field(40)?);
        if filesz > memsz {
            return Err(bad("segment file size exceeds its memory size"));
        }
        let end = paddr
            .checked_add(memsz)
            .ok_or(bad("segment wraps the address space"))?;
        let data = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(filesz).ok())
            .and_then(|(o, n)| d.get(o..o.checked_add(n)?))
            .ok_or(bad("segment data lies past the end of the file"))?;
        if memsz == 0 {
            continue;
        }
        lo = lo.min(paddr);
        hi = hi.max(end);
        segments.push(Segment {
            addr: paddr,
            data: data.to_vec(),
        });
    }
    if segments.is_empty() {
        return Err(bad("no loadable segment"));
    }
    Ok(Image {
        what,
        segments,
        entry,
        footprint: (lo, hi),
    })
}

/// Makes an [`Image`] of `data`: an ELF file by its program headers, anything else as a raw
/// binary at `addr`.
pub fn parse(what: &'static str, data: Vec<u8>, addr: u64) -> Result<Image, LoadError> {
    if data.starts_with(b"\x7fELF") {
        return parse_elf(what, &data);
    }
    let len = data.len() as u64;
    let size = linux_image_size(&data).unwrap_or(0).max(len);
    Ok(Image {
        what,
        segments: vec![Segment { addr, data }],
        entry: addr,
        footprint: (addr, addr.saturating_add(size)),
    })
}

/// Where everything goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    /// Where the boot ROM jumps: the firmware's entry, or the kernel's without firmware.
    pub start: u64,
    /// The kernel's entry (what `fw_dynamic` enters next), or 0 without a kernel.
    pub kernel_entry: u64,
    /// The initrd's `start..end`.
    pub initrd: Option<(u64, u64)>,
    /// Firmware, kernel and initrd, in that order, as far as given.
    pub images: Vec<Image>,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a).saturating_mul(a)
}

/// Places firmware, kernel and initrd in RAM `ram_base..ram_base + ram_size`, around the
/// device tree's `fdt_at..fdt_end` (see [`fdt_addr`]).
pub fn plan(
    ram_base: u64,
    ram_size: u64,
    bios: Option<Vec<u8>>,
    kernel: Option<Vec<u8>>,
    initrd: Option<Vec<u8>>,
    (fdt_at, fdt_end): (u64, u64),
) -> Result<BootPlan, LoadError> {
    if initrd.is_some() && kernel.is_none() {
        return Err(LoadError::InitrdWithoutKernel);
    }
    let mut images = Vec::new();
    let bios = bios.map(|d| parse("firmware", d, ram_base)).transpose()?;
    let kernel_addr = match &bios {
        Some(b) => align_up(b.footprint.1, 2 * MIB),
        None => ram_base,
    };
    let kernel = kernel
        .map(|d| parse("kernel", d, kernel_addr))
        .transpose()?;
    let start = match (&bios, &kernel) {
        (Some(b), _) => b.entry,
        (None, Some(k)) => k.entry,
        (None, None) => return Err(LoadError::NothingToBoot),
    };
    let kernel_entry = kernel.as_ref().map_or(0, |k| k.entry);
    let mut initrd_range = None;
    if let Some(data) = initrd {
        let Some(k) = &kernel else {
            return Err(LoadError::InitrdWithoutKernel);
        };
        let len = data.len() as u64;
        let mut at = k.entry.saturating_add((ram_size / 2).min(128 * MIB));
        // Not there? Then as high as possible below the device tree, page aligned, if that
        // clears the kernel (otherwise the checks below report the first choice).
        let below_fdt = fdt_at.saturating_sub(len) & !0xfff;
        if at.saturating_add(len) > fdt_at && below_fdt >= k.footprint.1 && fdt_at >= len {
            at = below_fdt;
        }
        initrd_range = Some((at, at + len));
        let initrd = Image {
            what: "initrd",
            segments: vec![Segment { addr: at, data }],
            entry: at,
            footprint: (at, at + len),
        };
        images.extend(bios);
        images.extend(kernel);
        images.push(initrd);
    } else {
        images.extend(bios);
        images.extend(kernel);
    }
    let ram_end = ram_base + ram_size;
    let mut regions: Vec<(&'static str, u64, u64)> = images
        .iter()
        .map(|i| (i.what, i.footprint.0, i.footprint.1))
        .collect();
    for seg in images
        .iter()
        .flat_map(|i| i.segments.iter().map(move |s| (i.what, s)))
    {
        let end = seg.1.addr.saturating_add(seg.1.data.len() as u64);
        regions.push((seg.0, seg.1.addr, end));
    }
    regions.push(("device tree", fdt_at, fdt_end));
    for &(what, start, end) in &regions {
        if start < ram_base || end > ram_end || start > end {
            return Err(LoadError::DoesNotFit {
                what,
                start,
                end,
                ram_start: ram_base,
                ram_end,
            });
        }
    }
    let outer: Vec<_> = regions
        .iter()
        .take(images.len())
        .copied()
        .chain(regions.last().copied())
        .collect();
    for (i, a) in outer.iter().enumerate() {
        for b in &outer[i + 1..] {
            if a.1 < b.2 && b.1 < a.2 {
                return Err(LoadError::Overlap {
                    a: a.0,
                    a_start: a.1,
                    a_end: a.2,
                    b: b.0,
                    b_start: b.1,
                    b_end: b.2,
                });
            }
        }
    }
    Ok(BootPlan {
        start,
        kernel_entry,
        initrd: initrd_range,
        images,
    })
}

/// Where a device tree of `size` bytes goes: as high in RAM as possible but below 3 GiB,
/// aligned down to 2 MiB (QEMU's `riscv_compute_fdt_addr`).
pub fn fdt_addr(ram_base: u64, ram_size: u64, size: u64) -> u64 {
    let end = ram_base + ram_size;
    let top = if ram_base < FDT_LIMIT {
        end.min(FDT_LIMIT)
    } else {
        end
    };
    (top.saturating_sub(size) & !(2 * MIB - 1)).max(ram_base)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x8000_0000;

    fn fdt(size: u64) -> (u64, u64) {
        let at = fdt_addr(BASE, size, 0x2000);
        (at, at + 0x2000)
    }

    #[test]
    fn qemu_placement() {
        let mem = 256 * MIB;
        let p = plan(
            BASE,
            mem,
            Some(vec![1; 0x1_c000]),
            Some(vec![2; 0x10_0000]),
            Some(vec![3; 4096]),
            fdt(mem),
        )
        .unwrap();
        assert_eq!(p.start, BASE);
        assert_eq!(p.kernel_entry, 0x8020_0000);
        assert_eq!(p.initrd, Some((0x8820_0000, 0x8820_1000)));
        assert_eq!(fdt(mem).0, 0x8fe0_0000);
        assert_eq!(fdt_addr(BASE, 2048 * MIB, 0x2000), 0xbfe0_0000);
        // Small RAM: the initrd goes half-way up.
        let p = plan(
            BASE,
            64 * MIB,
            None,
            Some(vec![2; 100]),
            Some(vec![3; 100]),
            fdt(64 * MIB),
        )
        .unwrap();
        assert_eq!(p.start, BASE);
        assert_eq!(p.initrd.unwrap().0, BASE + 32 * MIB);
    }

    #[test]
    fn big_initrd_moves_below_the_device_tree() {
        let mem = 64 * MIB;
        let p = plan(
            BASE,
            mem,
            None,
            Some(vec![2; 100]),
            Some(vec![3; 40 << 20]),
            fdt(mem),
        )
        .unwrap();
        let (s, e) = p.initrd.unwrap();
        assert!(e <= fdt(mem).0 && s > BASE + 100);
        let err = plan(
            BASE,
            mem,
            None,
            Some(vec![2; 100]),
            Some(vec![3; 63 << 20]),
            fdt(mem),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                LoadError::Overlap { .. } | LoadError::DoesNotFit { .. }
            ),
            "{err}"
        );
    }

    #[test]
    fn errors() {
        let mem = 16 * MIB;
        let e = plan(BASE, mem, None, None, None, fdt(mem)).unwrap_err();
        assert!(matches!(e, LoadError::NothingToBoot));
        let e = plan(BASE, mem, Some(vec![0; 10]), None, Some(vec![1]), fdt(mem)).unwrap_err();
        assert!(matches!(e, LoadError::InitrdWithoutKernel));
        let e = plan(
            BASE,
            mem,
            Some(vec![0; 10]),
            Some(vec![0; 20 << 20]),
            None,
            fdt(mem),
        )
        .unwrap_err();
        assert!(
            matches!(e, LoadError::DoesNotFit { what: "kernel", .. }),
            "{e}"
        );
        // A Linux Image whose BSS runs into the device tree.
        let mut img = vec![0u8; 4096];
        img[16..24].copy_from_slice(&(15 * MIB).to_le_bytes());
        img[56..60].copy_from_slice(b"RSC\x05");
        let e = plan(BASE, mem, Some(vec![0; 10]), Some(img), None, fdt(mem)).unwrap_err();
        assert!(
            matches!(e, LoadError::DoesNotFit { .. } | LoadError::Overlap { .. }),
            "{e}"
        );
        // Firmware bigger than 2 MiB pushes the kernel up.
        let p = plan(
            BASE,
            mem,
            Some(vec![0; 3 << 20]),
            Some(vec![1; 10]),
            None,
            fdt(mem),
        )
        .unwrap();
        assert_eq!(p.kernel_entry, BASE + 4 * MIB);
    }

    fn elf(entry: u64, segs: &[(u64, u64, u64, u64)]) -> Vec<u8> {
        let mut d = vec![0u8; 64];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
        d[18..20].copy_from_slice(&243u16.to_le_bytes());
        d[24..32].copy_from_slice(&entry.to_le_bytes());
        d[32..40].copy_from_slice(&64u64.to_le_bytes());
        d[54..56].copy_from_slice(&56u16.to_le_bytes());
        d[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        for &(off, paddr, filesz, memsz) in segs {
            let mut ph = [0u8; 56];
            ph[..4].copy_from_slice(&1u32.to_le_bytes());
            ph[8..16].copy_from_slice(&off.to_le_bytes());
            ph[24..32].copy_from_slice(&paddr.to_le_bytes());
            ph[32..40].copy_from_slice(&filesz.to_le_bytes());
            ph[40..48].copy_from_slice(&memsz.to_le_bytes());
            d.extend_from_slice(&ph);
        }
        d
    }

    #[test]
    fn elf_images() {
        let mut d = elf(0x8000_0010, &[(0, 0x8000_0000, 0x40, 0x1000)]);
        d.resize(0x200, 0);
        let img = parse("kernel", d, 0).unwrap();
        assert_eq!(img.entry, 0x8000_0010);
        assert_eq!(img.footprint, (0x8000_0000, 0x8000_1000));
        assert_eq!(img.segments[0].data.len(), 0x40);
        let truncated = elf(0, &[(0, 0x8000_0000, 0x4000, 0x4000)]);
        assert!(matches!(
            parse("kernel", truncated, 0),
            Err(LoadError::BadElf { .. })
        ));
        let mut cut = elf(0, &[(0, 0x8000_0000, 0x10, 0x10)]);
        cut.truncate(80);
        assert!(matches!(
            parse("kernel", cut, 0),
            Err(LoadError::BadElf { .. })
        ));
        assert!(parse("kernel", b"\x7fELF".to_vec(), 0).is_err());
        let wraps = elf(0, &[(0, u64::MAX - 4, 0, 0x10)]);
        assert!(parse("kernel", wraps, 0).is_err());
    }
}
