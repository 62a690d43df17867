//! The incremental RAM digest: one XXH3-64 per 4 KiB page, kept between digests, and the RAM
//! part of a [`StateDigest`](crate::snapshot::StateDigest) = XXH3-64 of the array of page
//! hashes (each a u64 LE, in page order). Apart from the snapshot module because the machine
//! keeps one (and the snapshot module uses the machine).
//!
//! Why: hashing all of RAM at every digest costs one read of it (about 20 ms for 256 MiB, 80 ms
//! for 1 GiB), every 100 M instructions of a recording and of every replay. Only pages written
//! since the last digest are hashed again; they are found from RAM's own digest bitmap
//! ([`rv64::Ram::take_digest_dirty`]), which sees every store and device write (the same
//! writes as the snapshot bitmap, which it leaves alone). The value depends on the RAM's
//! contents only, never on which pages were rehashed: a restored or freshly cloned machine
//! (whose pages are all "written") gives the same digest as the machine it came from.

use rv64::ram::PAGE_SIZE;
use rv64::Ram;
use std::sync::Mutex;

const PAGE: usize = PAGE_SIZE as usize;

/// The page hashes of one machine's RAM, as of its last digest.
#[derive(Debug, Default)]
pub struct RamDigest {
    /// Page `i`'s XXH3-64 in bytes `8 i .. 8 i + 8`, little-endian (hashed as they are).
    /// A mutex because `Machine::digest` takes `&self`.
    pages: Mutex<Vec<u8>>,
}

impl RamDigest {
    /// The RAM part of the digest: rehashes the pages written since the last call, then hashes
    /// the page hashes.
    pub fn of(&self, ram: &Ram) -> u64 {
        let mut pages = self
            .pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let want = ram.pages() * 8;
        let dirty = ram.take_digest_dirty();
        if pages.len() != want {
            // First use: the bitmap starts all ones, so every page is in `dirty`.
            pages.clear();
            pages.resize(want, 0);
        }
        let mem = ram.as_slice();
        for p in dirty {
            let h = page_hash(&mem[p * PAGE..(p + 1) * PAGE]);
            pages[p * 8..p * 8 + 8].copy_from_slice(&h.to_le_bytes());
        }
        twox_hash::XxHash3_64::oneshot(&pages)
    }
}

fn page_hash(page: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(page)
}

/// The RAM part of the digest computed from scratch, without any kept state: what
/// [`RamDigest::of`] must always equal (tests and the benchmark's "full" figure).
pub fn ram_digest_full(mem: &[u8]) -> u64 {
    let mut hashes = Vec::with_capacity(mem.len() / PAGE * 8);
    for page in mem.chunks(PAGE) {
        hashes.extend_from_slice(&page_hash(page).to_le_bytes());
    }
    twox_hash::XxHash3_64::oneshot(&hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), for property-style tests without a crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn incremental_equals_from_scratch_after_random_writes() {
        const BASE: u64 = 0x8000_0000;
        let size = 64 * PAGE;
        for seed in 1..=20u64 {
            let mut rng = Rng(seed * 0x9e37_79b9_7f4a_7c15);
            let mut ram = Ram::new(BASE, size);
            let d = RamDigest::default();
            assert_eq!(d.of(&ram), ram_digest_full(ram.as_slice()));
            for _ in 0..30 {
                for _ in 0..rng.next() % 8 {
                    let len = 1 + (rng.next() % 6000) as usize;
                    let off = rng.next() % (size - len) as u64;
                    let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    ram.write(BASE + off, &data).unwrap();
                }
                // Snapshots consume the other bitmap; the digest must not care.
                if rng.next().is_multiple_of(3) {
                    ram.take_dirty();
                }
                assert_eq!(d.of(&ram), ram_digest_full(ram.as_slice()), "seed {seed}");
            }
        }
    }

    #[test]
    fn any_one_changed_page_changes_the_digest() {
        let mut ram = Ram::new(0x8000_0000, 32 * PAGE);
        let d = RamDigest::default();
        let before = d.of(&ram);
        for p in 0..32u64 {
            ram.write(0x8000_0000 + p * PAGE as u64 + 7, &[1]).unwrap();
            assert_ne!(d.of(&ram), before, "page {p}");
            ram.write(0x8000_0000 + p * PAGE as u64 + 7, &[0]).unwrap();
            assert_eq!(d.of(&ram), before, "page {p} restored");
        }
    }
}
