//! Incremental (delta) snapshots: the RAM pages written since the last full or delta snapshot,
//! plus the whole CPU and device state, for the live clone (issue 7) and cheap periodic saves.
//!
//! A chain starts at a **base**: [`Machine::snapshot_base`] (a full snapshot that also starts
//! dirty tracking afresh) on the source, [`Machine::restore`] / [`Machine::load_snapshot`] of
//! the same bytes on the target. Its id is the XXH3-64 of the base file's bytes. Each
//! [`Machine::snapshot_delta`] carries that id and its generation (1, 2, ...);
//! [`Machine::apply_delta`] accepts only the next generation of the chain the machine stands on.
//!
//! # File format (version 3)
//!
//! `docs/snapshot-format.md` gives every field and a worked example byte for byte (checked by
//! `tests/snapshot_format.rs`, which also checks that the version stated here is
//! [`DELTA_VERSION`]).
//!
//! | field | size |
//! |---|---|
//! | magic `FTVMDELT` | 8 |
//! | format version, u16 LE | 2 |
//! | configuration, as in a full snapshot (RAM size, harts, slot ids, fingerprint) | 52 |
//! | base id, u64 | 8 |
//! | generation of the state it applies to (0 = the base), u32 | 4 |
//! | its own generation (the former plus 1), u32 | 4 |
//! | payload length before / after compression, u64 each | 16 |
//! | payload, LZ4 block format | … |
//! | CRC-32C of everything above, u32 | 4 |
//!
//! The payload holds the sections of a full snapshot (machine, harts, CLINT, PLIC, UART, test
//! device, virtio), then a page section (tag 9): a u64 count, then per page a u64 index (from
//! the start of RAM, strictly ascending) and its 4096 bytes. Like a full snapshot it is
//! untrusted input: every field is checked before it is used, and nothing panics.

use super::{
    check_config_of, encode_cpu, encode_devices, header_u64, restore_payload_with, Dec, Enc,
    Fingerprint, SnapshotError, CRC_LEN, NON_RAM_BOUND, PAGE,
};
use crate::dirty::DirtyConsumer;
use crate::machine::Machine;
use rv64::ram::PAGE_SIZE;

/// The first eight bytes of every delta snapshot.
pub const DELTA_MAGIC: &[u8; 8] = b"FTVMDELT";
/// The delta format version this build writes and reads (version 2: the virtio slots carry
/// their devices' own state, as full snapshots of version 3 do; version 3: the whole clock, as
/// in full snapshots of version 4).
pub const DELTA_VERSION: u16 = 3;

const TAG_PAGES: u8 = 9;
/// Bytes before the payload: magic, version, configuration, chain, lengths.
const DELTA_HEADER_LEN: usize = 8 + 2 + super::FINGERPRINT_LEN + 8 + 4 + 4 + 8 + 8;

/// A delta's place in its chain: base id, the generation it applies to, its own generation.
type Chain = (u64, u32, u32);

/// The id of a base snapshot: a hash of its bytes.
pub(crate) fn base_id(snapshot: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(snapshot)
}

impl Machine {
    /// A full snapshot ([`Machine::snapshot`]) that starts a delta chain: the deltas' record
    /// of written pages starts afresh, so the next [`Machine::snapshot_delta`] carries the pages
    /// written from here on. (A live copy under way keeps its own record.)
    pub fn snapshot_base(&mut self) -> Result<Vec<u8>, SnapshotError> {
        let bytes = self.snapshot()?;
        self.take_dirty_pages(DirtyConsumer::Delta);
        self.set_chain(Some((base_id(&bytes), 0)));
        Ok(bytes)
    }

    /// Starts a live copy (the live clone): the copy's record of written pages starts afresh
    /// and chain `id` begins here without a base file. While the guest runs on, the copier
    /// sends every page, then in rounds the pages
    /// [`Machine::take_dirty_pages`]`(`[`DirtyConsumer::LiveCopy`]`)` reports; once few are
    /// left, the guest stops and [`Machine::snapshot_live_copy_delta`] carries the rest with the
    /// CPU and devices. The target puts the copied pages in with [`Machine::adopt_live_copy`]
    /// and applies that delta. Delta snapshots taken meanwhile keep their own chain and record.
    pub fn begin_live_copy(&mut self, id: u64) {
        self.take_dirty_pages(DirtyConsumer::LiveCopy);
        self.set_live_copy(Some(id));
    }

    /// The closing delta of the live copy under way ([`Machine::begin_live_copy`]): the pages
    /// written since the copy's last round, with the whole CPU and device state — generation 1
    /// of the copy's chain, for the target that adopted the copied pages. The copy is over.
    pub fn snapshot_live_copy_delta(&mut self) -> Result<Vec<u8>, SnapshotError> {
        let id = self.live_copy().ok_or(SnapshotError::NoLiveCopy)?;
        let pages = self.take_dirty_pages(DirtyConsumer::LiveCopy);
        let bytes = self.encode_delta((id, 0, 1), &pages);
        self.set_live_copy(None);
        Ok(bytes)
    }

    /// The target's side of a live copy: `ram` (the whole RAM as the rounds left it) becomes
    /// this machine's RAM, which then stands at the start of chain `id`, ready for the
    /// [`Machine::apply_delta`] that completes the copy.
    pub fn adopt_live_copy(&mut self, id: u64, ram: &[u8]) -> Result<(), SnapshotError> {
        let size = self.ram().size();
        if ram.len() as u64 != size {
            return Err(SnapshotError::Config(format!(
                "the copied RAM is {} bytes, this machine has {size}",
                ram.len()
            )));
        }
        let (r, ..) = self.parts_mut();
        let base = r.base();
        // The length was checked against the RAM's size just above.
        r.write(base, ram).ok_or(SnapshotError::RamTooLarge(size))?;
        self.clear_dirty_pages();
        self.set_chain(Some((id, 0)));
        Ok(())
    }

    /// The RAM pages written since the last full ([`Machine::snapshot_base`]) or delta snapshot,
    /// with the whole CPU and device state: applied with [`Machine::apply_delta`] to a machine
    /// standing where this one stood at that snapshot, it gives this machine's state.
    pub fn snapshot_delta(&mut self) -> Result<Vec<u8>, SnapshotError> {
        let (base, generation) = self.chain().ok_or(SnapshotError::NoBase)?;
        let next = generation.checked_add(1).ok_or(SnapshotError::NoBase)?;
        let pages = self.take_dirty_pages(DirtyConsumer::Delta);
        let bytes = self.encode_delta((base, generation, next), &pages);
        self.set_chain(Some((base, next)));
        Ok(bytes)
    }

    /// A delta file of chain position `(base, generation, next)` carrying `pages`.
    fn encode_delta(&self, (base, generation, next): Chain, pages: &[usize]) -> Vec<u8> {
        let mut p = Enc::default();
        encode_cpu(&mut p, self);
        encode_devices(&mut p, self);
        let mem = self.ram().as_slice();
        p.section(TAG_PAGES, |e| {
            e.u64(pages.len() as u64);
            for &i in pages {
                e.u64(i as u64);
                e.0.extend_from_slice(&mem[i * PAGE..(i + 1) * PAGE]);
            }
        });
        let compressed = lz4_flex::block::compress(&p.0);
        let fp = Fingerprint::of(self);
        let mut e = Enc(Vec::with_capacity(
            DELTA_HEADER_LEN + compressed.len() + CRC_LEN,
        ));
        e.0.extend_from_slice(DELTA_MAGIC);
        e.u16(DELTA_VERSION);
        fp.encode(&mut e);
        e.u64(fp.hash());
        e.u64(base);
        e.u32(generation);
        e.u32(next);
        e.u64(p.0.len() as u64);
        e.u64(compressed.len() as u64);
        e.0.extend_from_slice(&compressed);
        let crc = crc32c::crc32c(&e.0);
        e.u32(crc);
        e.0
    }

    /// Applies a delta from [`Machine::snapshot_delta`]: this machine must stand on the delta's
    /// chain (restored from its base, with every earlier delta applied in order) and have the
    /// configuration it was taken with; otherwise it is refused before anything changes. On a
    /// later error (a corrupt payload behind a good checksum) the machine may be partly
    /// overwritten: drop it.
    pub fn apply_delta(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let (fp, chain, payload) = check_delta(bytes)?;
        check_config_of(self, &fp)?;
        let (base, parent, generation) = chain;
        match self.chain() {
            Some((b, g)) if b == base && g == parent && generation == parent.wrapping_add(1) => {}
            have => {
                return Err(SnapshotError::WrongBase {
                    delta: format!("base {base:016x} generation {parent}"),
                    machine: match have {
                        Some((b, g)) => format!("base {b:016x} generation {g}"),
                        None => "no base snapshot".into(),
                    },
                })
            }
        }
        let mem_size = self.ram().size();
        let raw_len = u64::from_le_bytes(header_u64(bytes, DELTA_HEADER_LEN - 16));
        let pages = mem_size / PAGE_SIZE;
        let max = pages
            .saturating_mul(PAGE_SIZE + 8)
            .saturating_add(64)
            .saturating_add(NON_RAM_BOUND)
            .saturating_add((self.harts().len() as u64).saturating_mul(1024));
        let raw = super::decompress(payload, raw_len, max, mem_size)?;
        restore_payload_with(self, &raw, restore_pages)?;
        self.clear_dirty_pages();
        self.set_chain(Some((base, generation)));
        Ok(())
    }
}

/// The page section of a delta.
fn restore_pages(ram: &mut rv64::Ram, top: &mut Dec) -> Result<(), SnapshotError> {
    let mut d = top.section(TAG_PAGES, "delta pages")?;
    let n = d.u64()?;
    let each = 8 + PAGE as u64;
    if n.checked_mul(each) != Some(d.buf.len() as u64) {
        return Err(d.bad(format!("{} bytes for {n} pages", d.buf.len())).into());
    }
    let base = ram.base();
    let mut last = None;
    for _ in 0..n {
        let i = d.u64()?;
        if i >= ram.pages() as u64 || last.is_some_and(|l| i <= l) {
            return Err(d
                .bad(format!("page {i} out of range or out of order"))
                .into());
        }
        last = Some(i);
        let data = d.take(PAGE)?;
        if ram.write(base + i * PAGE_SIZE, data).is_none() {
            return Err(d.bad(format!("page {i} lies outside RAM")).into());
        }
    }
    Ok(d.end()?)
}

/// Checks magic, version, length, checksum and fingerprint of a delta; returns its
/// configuration, its chain (base, parent generation, generation) and the compressed payload.
fn check_delta(bytes: &[u8]) -> Result<(Fingerprint, Chain, &[u8]), SnapshotError> {
    let body = super::check_frame(
        bytes,
        DELTA_MAGIC,
        SnapshotError::NotDelta,
        DELTA_VERSION,
        DELTA_HEADER_LEN,
    )?;
    let mut d = Dec {
        buf: &body[10..DELTA_HEADER_LEN],
        section: "delta header",
    };
    let fp = super::decode_fingerprint(&mut d)?;
    let chain = (d.u64()?, d.u32()?, d.u32()?);
    Ok((fp, chain, &body[DELTA_HEADER_LEN..]))
}
