//! Whole-machine snapshots and state digests: the saved form of a [`Machine`] (RAM, harts, board
//! devices, virtio transports, the machine-wide icount) and fast hashes of its parts that replay
//! compares to find the first divergence.
//!
//! # File format (version 4)
//!
//! `docs/snapshot-format.md` gives every field and a worked example byte for byte (checked by
//! `tests/snapshot_format.rs`, which also checks that the version stated here is [`VERSION`]).
//!
//! | field | size |
//! |---|---|
//! | magic `FTVMSNAP` | 8 |
//! | format version, u16 LE | 2 |
//! | RAM size in bytes, u64 | 8 |
//! | hart count, u32 | 4 |
//! | virtio device id of each slot (0 = empty), 8 × u32 | 32 |
//! | configuration fingerprint: XXH3-64 of the three fields above, u64 | 8 |
//! | payload length before compression, u64 | 8 |
//! | payload length after compression, u64 | 8 |
//! | payload, LZ4 block format | … |
//! | CRC-32C of everything above, u32 | 4 |
//!
//! Earlier versions (1: first; 2: the time-sync offset; 3: the virtio devices' own state) are
//! refused.
//!
//! All integers are little-endian. The payload is a fixed sequence of sections, each a tag byte,
//! a u64 length and the body: machine (icount, the multi-hart schedule and the clock), harts,
//! CLINT, PLIC, UART, test device, virtio, RAM. The RAM section is a bitmap of non-zero pages
//! followed by those pages only, so untouched memory costs one bit per page. The configuration
//! is stored in clear so that a snapshot from another configuration is refused with an error
//! that names what differs.
//!
//! A snapshot is untrusted input. [`Machine::restore`] checks the magic, the version, the
//! checksum, the configuration and a bound on the payload's size (derived from this
//! configuration's RAM size) before it decompresses anything, then reads every section with
//! bounds-checked reads and validates each part with its own `restore`; it never panics.
//!
//! What is not saved: host-side backend state (a disk's contents, the terminal) and caches
//! (TLBs, decoded instructions), which restore starts empty. The disk image a machine uses must
//! be the one it had when the snapshot was taken.

use crate::board::{Slot, VIRTIO_SLOTS};
use crate::clint::ClintState;
use crate::clock;
pub(crate) use crate::codec::{CodecError, Dec, Enc};
use crate::config::MachineConfig;
use crate::hartstate;
use crate::machine::{Backends, Machine, MachineError};
use crate::persist::StateError;
use crate::plic::PlicState;
use crate::syscon::persist as syscon;
use crate::uart::UartState;
use crate::virtio::{VirtioError, VirtioMmioState};
use rv64::persist::HartStateError;
use rv64::ram::PAGE_SIZE;
use rv64::Hart;

mod delta;
pub use crate::ramdigest::{ram_digest_full, RamDigest};
pub use delta::{DELTA_MAGIC, DELTA_VERSION};

/// The first eight bytes of every snapshot.
pub const MAGIC: &[u8; 8] = b"FTVMSNAP";
/// The format version this build writes and reads; bumped on any change to the format
/// (version 3: each virtio slot carries its device's own state, a disk's in-flight requests;
/// version 4: the machine section carries the whole clock, rate included).
pub const VERSION: u16 = 4;

/// Bytes before the payload.
const HEADER_LEN: usize = 8 + 2 + 8 + 4 + 4 * VIRTIO_SLOTS + 8 + 8 + 8;
/// The configuration in a header: RAM size, harts, slot ids, their hash.
const FINGERPRINT_LEN: usize = 8 + 4 + 4 * VIRTIO_SLOTS + 8;
/// The trailing checksum.
const CRC_LEN: usize = 4;
/// Room for everything but RAM pages in a payload: harts, devices and the UART's pending input.
pub(crate) const NON_RAM_BOUND: u64 = 64 << 20;
pub(crate) const PAGE: usize = PAGE_SIZE as usize;

/// Section tags, in payload order.
pub(crate) mod tag {
    pub const MACHINE: u8 = 1;
    pub const HARTS: u8 = 2;
    pub const CLINT: u8 = 3;
    pub const PLIC: u8 = 4;
    pub const UART: u8 = 5;
    pub const TEST: u8 = 6;
    pub const VIRTIO: u8 = 7;
    pub const RAM: u8 = 8;
}

impl From<CodecError> for SnapshotError {
    fn from(e: CodecError) -> SnapshotError {
        SnapshotError::Malformed {
            section: e.section,
            why: e.why,
        }
    }
}

/// Errors taking or restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// the snapshot is {0} bytes, too short to be one: the file is truncated or is not a snapshot
    #[error("the snapshot is {0} bytes, too short to be one: the file is truncated or is not a snapshot")]
    TooShort(usize),
    /// not an ftvm snapshot (bad magic): pass a file written by `Machine::snapshot`
    #[error("not an ftvm snapshot (bad magic): pass a file written by `Machine::snapshot`")]
    BadMagic,
    /// snapshot format version {found} is not supported (this build reads version {supported}): restore it with the ftvm build that took it
    #[error(
        "snapshot format version {found} is not supported (this build reads version \
         {supported}): restore it with the ftvm build that took it"
    )]
    Version {
        /// The file's version.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// the snapshot is {actual} bytes but its header says {expected}: the file is truncated or has trailing data
    #[error(
        "the snapshot is {actual} bytes but its header says {expected}: the file is truncated \
         or has trailing data"
    )]
    Length {
        /// Length the header implies.
        expected: u64,
        /// Actual length.
        actual: usize,
    },
    /// snapshot checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is corrupt; use another copy
    #[error(
        "snapshot checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file \
         is corrupt; use another copy"
    )]
    Checksum {
        /// CRC-32C in the file.
        stored: u32,
        /// CRC-32C of the contents.
        computed: u32,
    },
    /// the snapshot was taken on a machine with a different configuration ({0}): restore it with the configuration it was taken with
    #[error(
        "the snapshot was taken on a machine with a different configuration ({0}): restore it \
         with the configuration it was taken with"
    )]
    Config(String),
    /// the snapshot's payload claims {len} bytes, more than this configuration can need ({max}): the file is corrupt
    #[error(
        "the snapshot's payload claims {len} bytes, more than this configuration can need \
         ({max}): the file is corrupt"
    )]
    TooLarge {
        /// Claimed length.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// the snapshot's payload does not decompress ({0}): the file is corrupt
    #[error("the snapshot's payload does not decompress ({0}): the file is corrupt")]
    Decompress(String),
    /// snapshot section `{section}` is malformed ({why}): the file is corrupt or from an incompatible build
    #[error(
        "snapshot section `{section}` is malformed ({why}): the file is corrupt or from an \
         incompatible build"
    )]
    Malformed {
        /// Which section.
        section: &'static str,
        /// What is wrong.
        why: String,
    },
    /// hart {hart}: {source}
    #[error("hart {hart}: {source}")]
    Hart {
        /// Which hart.
        hart: usize,
        /// Why its state was refused.
        source: HartStateError,
    },
    /// {0}
    #[error(transparent)]
    Device(#[from] StateError),
    /// virtio slot {slot}: {source}
    #[error("virtio slot {slot}: {source}")]
    Virtio {
        /// Which slot.
        slot: usize,
        /// Why its state was refused.
        source: VirtioError,
    },
    /// building the machine to restore into failed: {0}
    #[error("building the machine to restore into failed: {0}")]
    Machine(#[from] MachineError),
    /// no delta chain to take a delta against: take a base with `Machine::snapshot_base`, or restore one, first
    #[error(
        "no delta chain to take a delta against: take a base with `Machine::snapshot_base`, or \
         restore one, first"
    )]
    NoBase,
    /// no live copy under way: begin one with `Machine::begin_live_copy` before its closing delta
    #[error(
        "no live copy under way: begin one with `Machine::begin_live_copy` before taking its \
         closing delta"
    )]
    NoLiveCopy,
    /// the delta applies to {delta}, but this machine stands at {machine}: apply deltas in order, on a machine restored from their base
    #[error(
        "the delta applies to {delta}, but this machine stands at {machine}: apply deltas in \
         order, on a machine restored from their base"
    )]
    WrongBase {
        /// The chain position the delta applies to.
        delta: String,
        /// Where this machine stands.
        machine: String,
    },
    /// not an ftvm delta snapshot (bad magic): pass a file written by `Machine::snapshot_delta`
    #[error(
        "not an ftvm delta snapshot (bad magic): pass a file written by `Machine::snapshot_delta`"
    )]
    NotDelta,
    /// RAM of {0} bytes is too large to snapshot on this host
    #[error("RAM of {0} bytes is too large to snapshot on this host: use a smaller --mem")]
    RamTooLarge(u64),
}

/// Hashes of a machine's state, in three parts so that a mismatch says where to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateDigest {
    /// Every hart's architectural state, the machine-wide icount, the hart schedule and the
    /// time-sync offset.
    pub cpu: u64,
    /// All of guest RAM.
    pub ram: u64,
    /// The board devices and virtio transports.
    pub devices: u64,
}

impl StateDigest {
    /// The names of the parts that differ between `self` and `other` (empty if none).
    pub fn differences(&self, other: &StateDigest) -> Vec<&'static str> {
        let mut d = Vec::new();
        if self.cpu != other.cpu {
            d.push("cpu");
        }
        if self.ram != other.ram {
            d.push("ram");
        }
        if self.devices != other.devices {
            d.push("devices");
        }
        d
    }
}

impl std::fmt::Display for StateDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cpu {:016x} ram {:016x} devices {:016x}",
            self.cpu, self.ram, self.devices
        )
    }
}

/// The configuration a snapshot belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    mem_size: u64,
    harts: u32,
    slots: [u32; VIRTIO_SLOTS],
}

impl Fingerprint {
    pub(crate) fn of(m: &Machine) -> Fingerprint {
        let (ram, harts, board, _) = m.parts();
        let mut slots = [0; VIRTIO_SLOTS];
        for (id, s) in slots.iter_mut().zip(board.slots()) {
            if let Slot::Device(d) = s {
                *id = d.device_id();
            }
        }
        Fingerprint {
            mem_size: ram.size(),
            harts: u32::try_from(harts.len()).unwrap_or(u32::MAX),
            slots,
        }
    }

    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u64(self.mem_size);
        e.u32(self.harts);
        for &s in &self.slots {
            e.u32(s);
        }
    }

    pub(crate) fn hash(&self) -> u64 {
        let mut e = Enc::default();
        self.encode(&mut e);
        twox_hash::XxHash3_64::oneshot(&e.0)
    }

    /// What differs between the snapshot's configuration (`self`) and the machine's.
    pub(crate) fn differences(&self, actual: &Fingerprint) -> Option<String> {
        let mut d = Vec::new();
        if self.mem_size != actual.mem_size {
            d.push(format!(
                "RAM {} bytes in the snapshot, {} here",
                self.mem_size, actual.mem_size
            ));
        }
        if self.harts != actual.harts {
            d.push(format!(
                "{} harts in the snapshot, {} here",
                self.harts, actual.harts
            ));
        }
        for (n, (a, b)) in self.slots.iter().zip(&actual.slots).enumerate() {
            if a != b {
                d.push(format!(
                    "virtio slot {n} holds device id {a} in the snapshot, {b} here"
                ));
            }
        }
        (!d.is_empty()).then(|| d.join("; "))
    }
}

/// The CPU sections: machine icount and harts.
pub(crate) fn encode_cpu(e: &mut Enc, m: &Machine) {
    let (_, harts, _, icount) = m.parts();
    let (cur, window_end, last_ran) = m.schedule();
    e.section(tag::MACHINE, |e| {
        e.u64(icount);
        e.u64(cur as u64);
        e.u64(window_end);
        e.u64(last_ran as u64);
        let c = m.clock();
        e.u64(c.base_icount);
        e.u64(c.base_ticks);
        e.u64(u64::from(c.rate));
        e.u64(c.added);
    });
    e.section(tag::HARTS, |e| {
        e.len(harts.len());
        harts
            .iter()
            .for_each(|h| hartstate::encode_hart(e, &h.save()));
    });
}

/// The device sections: CLINT, PLIC, UART, test device, virtio slots.
pub(crate) fn encode_devices(e: &mut Enc, m: &Machine) {
    let (_, _, board, _) = m.parts();
    e.section(tag::CLINT, |e| board.clint.save().encode(e));
    e.section(tag::PLIC, |e| board.plic.save().encode(e));
    e.section(tag::UART, |e| board.uart.save().encode(e));
    e.section(tag::TEST, |e| syscon::encode(e, board.test.save()));
    e.section(tag::VIRTIO, |e| {
        e.len(board.slots.len());
        for s in &board.slots {
            match s {
                Slot::Empty => e.u8(0),
                Slot::Device(d) => {
                    e.u8(1);
                    d.save().encode(e);
                }
            }
        }
    });
}

/// The RAM section: a bitmap of non-zero pages, then those pages.
fn encode_ram(e: &mut Enc, mem: &[u8]) {
    e.section(tag::RAM, |e| {
        let pages = mem.len() / PAGE;
        e.u64(pages as u64);
        let mut bitmap = vec![0u8; pages.div_ceil(8)];
        for (i, p) in mem.chunks_exact(PAGE).enumerate() {
            if !is_zero(p) {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        e.0.extend_from_slice(&bitmap);
        for (i, p) in mem.chunks_exact(PAGE).enumerate() {
            if bitmap[i / 8] & (1 << (i % 8)) != 0 {
                e.0.extend_from_slice(p);
            }
        }
    });
}

fn is_zero(page: &[u8]) -> bool {
    // OR everything together without an early exit, which the compiler vectorises.
    page.iter().fold(0, |acc, &b| acc | b) == 0
}

impl Machine {
    /// The whole machine's state as a self-checking snapshot file (see the module docs for the
    /// format). Cost: one pass over RAM plus compressing the non-zero pages.
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let (ram, ..) = self.parts();
        let mut p = Enc::default();
        encode_cpu(&mut p, self);
        encode_devices(&mut p, self);
        encode_ram(&mut p, ram.as_slice());
        let compressed = lz4_flex::block::compress(&p.0);

        let fp = Fingerprint::of(self);
        let mut e = Enc(Vec::with_capacity(HEADER_LEN + compressed.len() + CRC_LEN));
        e.0.extend_from_slice(MAGIC);
        e.u16(VERSION);
        fp.encode(&mut e);
        e.u64(fp.hash());
        e.u64(p.0.len() as u64);
        e.u64(compressed.len() as u64);
        e.0.extend_from_slice(&compressed);
        let crc = crc32c::crc32c(&e.0);
        e.u32(crc);
        Ok(e.0)
    }

    /// Builds a machine for `cfg` as [`Machine::new`] does (without disks) and puts the
    /// snapshot's state into it: RAM, harts, board devices, virtio transports and the clock.
    /// The snapshot must come from a machine with the same configuration (RAM size, harts,
    /// virtio devices). Running the result continues exactly where the snapshot's machine
    /// stood. A machine with disks: [`Machine::restore_with_disks`] (`hostblk::restore` opens
    /// the host's).
    pub fn restore(
        cfg: &MachineConfig,
        backends: Backends,
        bytes: &[u8],
    ) -> Result<Machine, SnapshotError> {
        Machine::restore_with_disks(cfg, backends, Vec::new(), bytes)
    }

    /// Checks a snapshot file (frame, checksum, RAM size and harts) against `cfg` without
    /// building anything: a wrong file is refused before any disk is opened.
    pub fn check_snapshot(cfg: &MachineConfig, bytes: &[u8]) -> Result<(), SnapshotError> {
        let (fp, _) = check_file(bytes)?;
        check_config(cfg, &fp)
    }

    /// [`Machine::restore`] on the given disk backends, one per drive of `cfg` (see
    /// [`Machine::with_disks`]); the disk images must be those the snapshot's machine had.
    pub fn restore_with_disks(
        cfg: &MachineConfig,
        backends: Backends,
        disks: Vec<Box<dyn crate::virtio::BlockBackend>>,
        bytes: &[u8],
    ) -> Result<Machine, SnapshotError> {
        let (fp, _) = check_file(bytes)?;
        check_config(cfg, &fp)?;
        let mut m = Machine::with_disks(cfg, backends, disks)?;
        m.load_snapshot(bytes)?;
        Ok(m)
    }

    /// Puts the snapshot's state into this machine, which must have the configuration the
    /// snapshot was taken with (RAM size, harts, virtio devices; checked). Backends stay as they
    /// are. On an error the machine may be partly overwritten: drop it.
    pub fn load_snapshot(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let (fp, payload) = check_file(bytes)?;
        check_config_of(self, &fp)?;
        let mem_size = self.ram().size();
        let harts = self.harts().len() as u64;
        let raw_len = u64::from_le_bytes(header_u64(bytes, HEADER_LEN - 16));
        let pages = mem_size / PAGE_SIZE;
        let max = mem_size
            .saturating_add(pages / 8 + 64)
            .saturating_add(NON_RAM_BOUND)
            .saturating_add(harts.saturating_mul(1024));
        let raw = decompress(payload, raw_len, max, mem_size)?;
        restore_payload(self, &raw)?;
        // The restored machine stands at the start of a delta chain (see `delta`).
        self.clear_dirty_pages();
        self.set_chain(Some((delta::base_id(bytes), 0)));
        Ok(())
    }

    /// Hashes of the machine's state (XXH3-64): CPU (harts and clock), RAM, devices. Equal
    /// machines have equal digests; replay compares them to detect divergence. RAM is hashed
    /// incrementally (see [`RamDigest`]): only the pages written since the last digest are read
    /// again, so the cost after the first call is that of the guest's writes, not of RAM's
    /// size (docs/benchmarks.md, "State digests").
    pub fn digest(&self) -> StateDigest {
        let (ram, ..) = self.parts();
        let mut cpu = Enc::default();
        encode_cpu(&mut cpu, self);
        let mut dev = Enc::default();
        encode_devices(&mut dev, self);
        StateDigest {
            cpu: twox_hash::XxHash3_64::oneshot(&cpu.0),
            ram: self.ram_digest().of(ram),
            devices: twox_hash::XxHash3_64::oneshot(&dev.0),
        }
    }
}

/// The stored configuration against `m`'s.
fn check_config_of(m: &Machine, fp: &Fingerprint) -> Result<(), SnapshotError> {
    match fp.differences(&Fingerprint::of(m)) {
        Some(d) => Err(SnapshotError::Config(d)),
        None => Ok(()),
    }
}

/// Decompresses a payload whose header claims `raw_len` bytes, refused above `max`.
fn decompress(
    payload: &[u8],
    raw_len: u64,
    max: u64,
    mem_size: u64,
) -> Result<Vec<u8>, SnapshotError> {
    if raw_len > max {
        return Err(SnapshotError::TooLarge { len: raw_len, max });
    }
    let raw_len =
        usize::try_from(raw_len).map_err(|_| SnapshotError::TooLarge { len: raw_len, max })?;
    let mut raw = Vec::new();
    raw.try_reserve_exact(raw_len)
        .map_err(|_| SnapshotError::RamTooLarge(mem_size))?;
    raw.resize(raw_len, 0);
    let n = lz4_flex::block::decompress_into(payload, &mut raw)
        .map_err(|e| SnapshotError::Decompress(e.to_string()))?;
    if n != raw_len {
        return Err(SnapshotError::Decompress(format!(
            "{n} bytes where the header says {raw_len}"
        )));
    }
    Ok(raw)
}

/// Reads a stored configuration and checks its hash.
fn decode_fingerprint(d: &mut Dec) -> Result<Fingerprint, SnapshotError> {
    let mut fp = Fingerprint {
        mem_size: d.u64()?,
        harts: d.u32()?,
        slots: [0; VIRTIO_SLOTS],
    };
    for s in &mut fp.slots {
        *s = d.u32()?;
    }
    if d.u64()? != fp.hash() {
        return Err(d
            .bad("configuration fingerprint does not match the configuration")
            .into());
    }
    Ok(fp)
}

/// RAM size and harts of `cfg` against the snapshot's, before anything is built.
fn check_config(cfg: &MachineConfig, fp: &Fingerprint) -> Result<(), SnapshotError> {
    let want = Fingerprint {
        mem_size: cfg.mem_size,
        harts: u32::try_from(cfg.harts).unwrap_or(u32::MAX),
        slots: fp.slots,
    };
    match fp.differences(&want) {
        Some(d) => Err(SnapshotError::Config(d)),
        None => Ok(()),
    }
}

fn header_u64(bytes: &[u8], at: usize) -> [u8; 8] {
    let mut a = [0; 8];
    if let Some(s) = bytes.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    a
}

/// The frame both snapshot files share (full and delta): `magic`, a u16 `version`, a header of
/// `header_len` bytes whose last 8 are the payload's length, the payload, a CRC-32C of all
/// before it. Checks them and returns everything but the checksum.
pub(crate) fn check_frame<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    bad_magic: SnapshotError,
    version: u16,
    header_len: usize,
) -> Result<&'a [u8], SnapshotError> {
    if bytes.len() < magic.len() + 2 {
        return Err(SnapshotError::TooShort(bytes.len()));
    }
    if &bytes[..magic.len()] != magic {
        return Err(bad_magic);
    }
    let found = u16::from_le_bytes([bytes[8], bytes[9]]);
    if found != version {
        return Err(SnapshotError::Version {
            found,
            supported: version,
        });
    }
    if bytes.len() < header_len + CRC_LEN {
        return Err(SnapshotError::TooShort(bytes.len()));
    }
    let comp_len = u64::from_le_bytes(header_u64(bytes, header_len - 8));
    let expected = (header_len as u64 + CRC_LEN as u64).saturating_add(comp_len);
    if expected != bytes.len() as u64 {
        return Err(SnapshotError::Length {
            expected,
            actual: bytes.len(),
        });
    }
    let (body, tail) = bytes.split_at(bytes.len() - CRC_LEN);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(SnapshotError::Checksum { stored, computed });
    }
    Ok(body)
}

/// Checks magic, version, length, checksum and fingerprint; returns the stored configuration
/// and the compressed payload.
fn check_file(bytes: &[u8]) -> Result<(Fingerprint, &[u8]), SnapshotError> {
    let body = check_frame(bytes, MAGIC, SnapshotError::BadMagic, VERSION, HEADER_LEN)?;
    let mut d = Dec {
        buf: &body[10..HEADER_LEN],
        section: "header",
    };
    let fp = decode_fingerprint(&mut d)?;
    Ok((fp, &body[HEADER_LEN..]))
}

/// Decodes every section and restores each part of `m`.
fn restore_payload(m: &mut Machine, raw: &[u8]) -> Result<(), SnapshotError> {
    restore_payload_with(m, raw, restore_full_ram)
}

/// Decodes every section, the RAM section with `ram_section`, and restores each part of `m`.
pub(crate) fn restore_payload_with(
    m: &mut Machine,
    raw: &[u8],
    ram_section: fn(&mut rv64::Ram, &mut Dec) -> Result<(), SnapshotError>,
) -> Result<(), SnapshotError> {
    let mut top = Dec {
        buf: raw,
        section: "payload",
    };
    let nharts = m.harts().len() as u64;
    let mut d = top.section(tag::MACHINE, "machine")?;
    let saved_icount = d.u64()?;
    let (cur, window_end, last_ran) = (d.u64()?, d.u64()?, d.u64()?);
    let (base_icount, base_ticks, rate, added) = (d.u64()?, d.u64()?, d.u64()?, d.u64()?);
    let Some(rate) = clock::valid_rate(rate) else {
        return Err(d.bad(format!("time rate {rate} is out of range")).into());
    };
    if base_icount > saved_icount {
        return Err(d
            .bad(format!(
            "the clock's rate changed at icount {base_icount}, after the machine's {saved_icount}"
        ))
            .into());
    }
    let saved_clock = clock::Clock {
        base_icount,
        base_ticks,
        rate,
        added,
    };
    if cur >= nharts || last_ran >= nharts {
        return Err(d
            .bad(format!(
                "schedule names hart {cur} and {last_ran} of {nharts}"
            ))
            .into());
    }
    d.end()?;
    // Both are below the hart count, a usize.
    m.set_schedule(cur as usize, window_end, last_ran as usize);
    let (ram, harts, board, icount) = m.parts_mut();

    let mut d = top.section(tag::HARTS, "harts")?;
    let n = d.count(1)?;
    if n != harts.len() {
        return Err(d
            .bad(format!("{n} harts where {} exist", harts.len()))
            .into());
    }
    let mut new_harts = Vec::with_capacity(n);
    for h in 0..n {
        let s = hartstate::decode_hart(&mut d)?;
        if s.hartid != h as u64 {
            return Err(d.bad(format!("hart {h} has mhartid {}", s.hartid)).into());
        }
        new_harts
            .push(Hart::restore(&s).map_err(|source| SnapshotError::Hart { hart: h, source })?);
    }
    d.end()?;

    let mut d = top.section(tag::CLINT, "CLINT")?;
    board.clint.restore(&ClintState::decode(&mut d)?)?;
    d.end()?;
    let mut d = top.section(tag::PLIC, "PLIC")?;
    board.plic.restore(&PlicState::decode(&mut d)?)?;
    d.end()?;
    let mut d = top.section(tag::UART, "UART")?;
    board.uart.restore(&UartState::decode(&mut d)?)?;
    d.end()?;
    let mut d = top.section(tag::TEST, "test device")?;
    board.test.restore(&syscon::decode(&mut d)?);
    d.end()?;

    let mut d = top.section(tag::VIRTIO, "virtio")?;
    let n = d.count(1)?;
    if n != board.slots.len() {
        return Err(d
            .bad(format!("{n} slots where {} exist", board.slots.len()))
            .into());
    }
    for (slot, s) in board.slots.iter_mut().enumerate() {
        match (d.u8()?, s) {
            (0, Slot::Empty) => {}
            (1, Slot::Device(dev)) => {
                let st = VirtioMmioState::decode(&mut d)?;
                dev.restore(&st)
                    .map_err(|source| SnapshotError::Virtio { slot, source })?;
            }
            (t, _) => {
                return Err(d
                    .bad(format!("slot {slot}: tag {t} does not fit the slot"))
                    .into())
            }
        }
    }
    d.end()?;

    ram_section(ram, &mut top)?;
    top.section = "payload";
    top.end()?;

    // Restored harts keep the engine the machine ran on (fresh caches, like the TLBs).
    let engine = harts.first().map_or(rv64::Engine::Interp, |h| h.engine());
    for h in &mut new_harts {
        h.set_engine(engine);
    }
    *harts = new_harts;
    *icount = saved_icount;
    board.clock = saved_clock;
    Ok(())
}

/// The full RAM section: a bitmap of non-zero pages, then those pages.
fn restore_full_ram(ram: &mut rv64::Ram, top: &mut Dec) -> Result<(), SnapshotError> {
    let mut d = top.section(tag::RAM, "RAM")?;
    let pages = d.u64()?;
    if pages != ram.pages() as u64 {
        return Err(d
            .bad(format!("{pages} pages where {} exist", ram.pages()))
            .into());
    }
    let bitmap = d.take(ram.pages().div_ceil(8))?;
    let present = bitmap
        .iter()
        .map(|b| b.count_ones() as usize)
        .sum::<usize>();
    if present > ram.pages() || d.buf.len() != present * PAGE {
        return Err(d
            .bad(format!(
                "{} bytes of page data for {present} pages",
                d.buf.len()
            ))
            .into());
    }
    let zero = [0u8; PAGE];
    let base = ram.base();
    for i in 0..ram.pages() {
        let addr = base + (i * PAGE) as u64;
        let ok = if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            let data = d.take(PAGE)?;
            ram.write(addr, data)
        } else if !ram
            .as_slice()
            .get(i * PAGE..(i + 1) * PAGE)
            .is_some_and(is_zero)
        {
            ram.write(addr, &zero)
        } else {
            Some(())
        };
        if ok.is_none() {
            return Err(d.bad(format!("page {i} lies outside RAM")).into());
        }
    }
    Ok(d.end()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_differences_name_the_part() {
        let a = StateDigest {
            cpu: 1,
            ram: 2,
            devices: 3,
        };
        let mut b = a;
        assert!(a.differences(&b).is_empty());
        b.ram = 5;
        assert_eq!(a.differences(&b), vec!["ram"]);
    }

    #[test]
    fn decoder_refuses_short_input() {
        let mut d = Dec {
            buf: &[1, 2, 3],
            section: "x",
        };
        assert!(d.u64().is_err());
        assert!(d.count(1).is_err());
    }
}
