//! Guest RAM, shared by every hart and every device, with the per-page bitmaps the rest of the
//! system relies on: *dirty* pages (for incremental snapshots and the live clone), *digest-dirty*
//! pages (the same writes, but consumed only by the incremental state digest, so that taking a
//! digest never hides a page from a delta snapshot or the live clone) and *code* pages (pages
//! whose pre-decoded instructions are cached and must be dropped when written).

use crate::decode::DecodedPage;
use std::sync::atomic::{AtomicU64, Ordering};

/// Size of a page, in bytes.
pub const PAGE_SIZE: u64 = 4096;

/// Guest physical memory at `base..base + size`.
pub struct Ram {
    base: u64,
    mem: Vec<u8>,
    dirty: Vec<u64>,
    /// Pages written since the last [`Ram::take_digest_dirty`]. Atomic so that a digest can be
    /// taken through `&Ram` (`Machine::digest(&self)`); writers go through `&mut` (no atomics
    /// on the store path).
    digest_dirty: Vec<AtomicU64>,
    code: Vec<u64>,
    decoded: Vec<Option<Box<DecodedPage>>>,
    /// Bumped whenever a write permission cached by a hart may have become stale (a page became
    /// a code page, or a dirty bitmap was cleared). Harts compare it at the start of a slice.
    /// Atomic for the same reason as `digest_dirty`.
    write_epoch: AtomicU64,
    /// Unique per `Ram` in this process: code translated against one `Ram` (which holds
    /// pointers to its decoded pages) is never run against another.
    id: u64,
}

/// Source of [`Ram`] ids.
static NEXT_RAM_ID: AtomicU64 = AtomicU64::new(1);

impl std::fmt::Debug for Ram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ram")
            .field("base", &self.base)
            .field("size", &self.mem.len())
            .finish()
    }
}

fn bit(map: &[u64], i: usize) -> bool {
    map[i / 64] & (1 << (i % 64)) != 0
}

/// Appends the pages whose bits are set in `bits`, word `w` of a page bitmap, that are below
/// `pages` (the last word's spare bits are not pages).
fn push_pages(out: &mut Vec<usize>, w: usize, mut bits: u64, pages: usize) {
    while bits != 0 {
        let page = w * 64 + bits.trailing_zeros() as usize;
        if page < pages {
            out.push(page);
        }
        bits &= bits - 1;
    }
}

impl Ram {
    /// Zero-filled RAM of `size` bytes (a multiple of the page size) at physical `base`.
    pub fn new(base: u64, size: usize) -> Self {
        assert!(
            (size as u64).is_multiple_of(PAGE_SIZE),
            "RAM size must be a multiple of 4 KiB"
        );
        assert!(
            base.is_multiple_of(PAGE_SIZE),
            "RAM base must be page aligned"
        );
        let pages = size / PAGE_SIZE as usize;
        let words = pages.div_ceil(64);
        let mut decoded = Vec::new();
        decoded.resize_with(pages, || None);
        Ram {
            base,
            mem: vec![0; size],
            dirty: vec![u64::MAX; words],
            digest_dirty: (0..words).map(|_| AtomicU64::new(u64::MAX)).collect(),
            code: vec![0; words],
            decoded,
            write_epoch: AtomicU64::new(0),
            id: NEXT_RAM_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// This `Ram`'s process-unique id.
    #[inline(always)]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Physical address of the first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.mem.len() as u64
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.decoded.len()
    }

    /// Offset of `paddr..paddr+len` within RAM, if it lies wholly inside.
    #[inline(always)]
    pub fn offset(&self, paddr: u64, len: u64) -> Option<usize> {
        let off = paddr.wrapping_sub(self.base);
        if off < self.size() && len <= self.size() - off {
            Some(off as usize)
        } else {
            None
        }
    }

    /// The whole of RAM, read-only.
    pub fn as_slice(&self) -> &[u8] {
        &self.mem
    }

    /// Copies `buf.len()` bytes at `paddr` into `buf`. `None` if not wholly inside RAM.
    pub fn read(&self, paddr: u64, buf: &mut [u8]) -> Option<()> {
        let off = self.offset(paddr, buf.len() as u64)?;
        buf.copy_from_slice(&self.mem[off..off + buf.len()]);
        Some(())
    }

    /// Writes `data` at `paddr` as a device or loader would: marks the pages dirty and drops any
    /// cached decoded instructions on them. `None` if not wholly inside RAM.
    pub fn write(&mut self, paddr: u64, data: &[u8]) -> Option<()> {
        let off = self.offset(paddr, data.len() as u64)?;
        if !data.is_empty() {
            self.mark_written(paddr, data.len() as u64);
        }
        self.mem[off..off + data.len()].copy_from_slice(data);
        Some(())
    }

    /// Records that something outside the harts (a device writing through its own view of guest
    /// memory, e.g. a virtqueue's used ring) changed `paddr..paddr+len`: the pages become dirty and
    /// lose any cached decoded instructions. `None` if not wholly inside RAM.
    pub fn mark_written(&mut self, paddr: u64, len: u64) -> Option<()> {
        let off = self.offset(paddr, len)?;
        if len > 0 {
            let first = off / PAGE_SIZE as usize;
            let last = (off + len as usize - 1) / PAGE_SIZE as usize;
            for page in first..=last {
                self.note_write(page);
            }
        }
        Some(())
    }

    /// Host address of the first byte of RAM, for device models that build their own view of
    /// guest memory (e.g. a `vm-memory` region). Whoever writes through it must call
    /// [`Ram::mark_written`] for what it wrote.
    pub fn host_base(&mut self) -> *mut u8 {
        self.mem.as_mut_ptr()
    }

    /// Reads a little-endian u64 at `paddr` (page-table walks).
    pub fn read_u64(&self, paddr: u64) -> Option<u64> {
        let mut b = [0; 8];
        self.read(paddr, &mut b)?;
        Some(u64::from_le_bytes(b))
    }

    /// Host pointer to the byte at RAM offset `off`. The pointer stays valid as long as `self`.
    #[inline(always)]
    pub(crate) fn host_ptr(&mut self, off: usize) -> *mut u8 {
        debug_assert!(off < self.mem.len());
        // SAFETY: `off` is inside the allocation (checked by every caller through `offset`).
        unsafe { self.mem.as_mut_ptr().add(off) }
    }

    /// Records a guest or device write to `page`: dirty, and no longer valid as cached code.
    pub(crate) fn note_write(&mut self, page: usize) {
        self.dirty[page / 64] |= 1 << (page % 64);
        *self.digest_dirty[page / 64].get_mut() |= 1 << (page % 64);
        if bit(&self.code, page) {
            self.code[page / 64] &= !(1 << (page % 64));
            if let Some(d) = self.decoded[page].as_mut() {
                d.clear();
            }
        }
    }

    /// Whether `page` holds cached decoded instructions (stores to it take the slow path).
    #[inline(always)]
    pub fn is_code(&self, page: usize) -> bool {
        bit(&self.code, page)
    }

    /// The decoded-instruction cache for `page`, created on first use; marks the page as code.
    pub(crate) fn decoded_page(&mut self, page: usize) -> *mut DecodedPage {
        if !bit(&self.code, page) {
            self.code[page / 64] |= 1 << (page % 64);
            *self.write_epoch.get_mut() += 1;
        }
        let d = self.decoded[page].get_or_insert_with(|| DecodedPage::new_boxed(page));
        &mut **d as *mut DecodedPage
    }

    /// See the field of the same name.
    #[inline(always)]
    pub(crate) fn write_epoch(&self) -> u64 {
        self.write_epoch.load(Ordering::Relaxed)
    }

    /// Whether `page` was written since the last [`Ram::take_dirty`].
    pub fn is_dirty(&self, page: usize) -> bool {
        bit(&self.dirty, page)
    }

    /// How many pages were written since the last [`Ram::take_dirty`] (what the next one would
    /// return), without starting a new interval: a live clone decides from it whether to stop.
    pub fn dirty_count(&self) -> usize {
        let full = self.decoded.len();
        self.dirty
            .iter()
            .enumerate()
            .map(|(w, word)| {
                let valid = full.saturating_sub(w * 64).min(64);
                let mask = if valid == 64 {
                    u64::MAX
                } else {
                    (1u64 << valid) - 1
                };
                (word & mask).count_ones() as usize
            })
            .sum()
    }

    /// Returns the pages written since the last call (all pages, the first time) and starts a
    /// new tracking interval. Harts drop their cached write permissions, so that the first store
    /// to each page is seen again.
    pub fn take_dirty(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        let pages = self.decoded.len();
        for (w, word) in self.dirty.iter_mut().enumerate() {
            push_pages(&mut out, w, std::mem::take(word), pages);
        }
        *self.write_epoch.get_mut() += 1;
        out
    }

    /// Returns the pages written since the last call (all pages, the first time) and starts a
    /// new interval of the digest's own bitmap; [`Ram::take_dirty`]'s is left alone. Harts drop
    /// their cached write permissions, so that the first store to each page is seen again.
    /// Takes `&self`: nothing can store while the caller holds a shared reference, and the
    /// harts see the new epoch at the start of their next slice.
    pub fn take_digest_dirty(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (w, word) in self.digest_dirty.iter().enumerate() {
            push_pages(
                &mut out,
                w,
                word.swap(0, Ordering::Relaxed),
                self.decoded.len(),
            );
        }
        self.write_epoch.fetch_add(1, Ordering::Relaxed);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_tracking_reports_written_pages_once() {
        let mut ram = Ram::new(0x8000_0000, 16 * 4096);
        assert_eq!(ram.take_dirty().len(), 16);
        assert!(ram.take_dirty().is_empty());
        ram.write(0x8000_1ffe, &[1, 2, 3, 4]).unwrap();
        assert_eq!(ram.take_dirty(), vec![1, 2]);
        assert_eq!(ram.dirty_count(), 0);
        ram.write(0x8000_3000, &[1]).unwrap();
        ram.write(0x8000_f000, &[1]).unwrap();
        assert_eq!(ram.dirty_count(), 2);
        assert_eq!(ram.take_dirty(), vec![3, 15]);
    }

    #[test]
    fn digest_bitmap_is_independent_of_the_dirty_bitmap() {
        let mut ram = Ram::new(0x8000_0000, 16 * 4096);
        assert_eq!(ram.take_digest_dirty().len(), 16);
        ram.write(0x8000_3000, &[1]).unwrap();
        assert_eq!(ram.take_digest_dirty(), vec![3]);
        assert!(ram.take_digest_dirty().is_empty());
        // Taking the digest's pages left every page dirty for a snapshot.
        assert_eq!(ram.take_dirty().len(), 16);
        ram.mark_written(0x8000_5000, 1).unwrap();
        assert_eq!(ram.take_dirty(), vec![5]);
        assert_eq!(ram.take_digest_dirty(), vec![5]);
    }

    #[test]
    fn writes_outside_ram_are_refused() {
        let mut ram = Ram::new(0x8000_0000, 4096);
        assert!(ram.write(0x8000_0ffc, &[0; 8]).is_none());
        assert!(ram.write(0x7fff_fffc, &[0; 4]).is_none());
        assert!(ram.read(u64::MAX - 2, &mut [0; 8]).is_none());
    }
}
