//! Written RAM pages, one record per consumer.
//!
//! Two consumers need "the pages written since I last looked": delta snapshots
//! (`snapshot_delta`) and the live clone's copy rounds (`begin_live_copy`,
//! `snapshot_live_copy_delta`). With one shared bitmap, each would clear the other's
//! record: a delta taken during a live clone would leave the clone without the pages it carried,
//! and a clone round would take pages away from the next delta. So the hart and the devices mark
//! writes in RAM's one bitmap (the store path stays one bit set), and each time a consumer takes
//! its pages that bitmap is first gathered into every consumer's own bitmap; a consumer then
//! clears only its own. (The state digest has a bitmap of its own in RAM already,
//! `Ram::take_digest_dirty`, for the same reason.)
//!
//! Counting what a consumer would get (`dirty_page_count`) does not gather: it
//! reads RAM's bitmap without clearing it, so a live clone may look every step without making
//! the harts drop their cached write permissions.

use rv64::Ram;

/// Who takes written pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirtyConsumer {
    /// The delta-snapshot chain (`snapshot_base`, `snapshot_delta`).
    Delta,
    /// A live copy's rounds and its closing delta (`begin_live_copy`).
    LiveCopy,
}

const CONSUMERS: usize = 2;

impl DirtyConsumer {
    fn index(self) -> usize {
        match self {
            DirtyConsumer::Delta => 0,
            DirtyConsumer::LiveCopy => 1,
        }
    }
}

/// Each consumer's pages written since it last took them (beyond what RAM's own bitmap holds).
#[derive(Debug)]
pub(crate) struct DirtyPages {
    maps: [Vec<u64>; CONSUMERS],
    pages: usize,
}

impl DirtyPages {
    /// Every page counts as written for every consumer until it first takes them, as RAM's
    /// bitmap starts.
    pub fn new(pages: usize) -> DirtyPages {
        let words = pages.div_ceil(64);
        DirtyPages {
            maps: std::array::from_fn(|_| vec![u64::MAX; words]),
            pages,
        }
    }

    /// Moves RAM's record into every consumer's.
    fn gather(&mut self, ram: &mut Ram) {
        for p in ram.take_dirty() {
            for m in &mut self.maps {
                m[p / 64] |= 1 << (p % 64);
            }
        }
    }

    /// The pages written since `c` last took them (every page the first time), in ascending
    /// order; `c`'s record starts afresh, the other consumers' are untouched.
    pub fn take(&mut self, ram: &mut Ram, c: DirtyConsumer) -> Vec<usize> {
        self.gather(ram);
        let mut out = Vec::new();
        for (w, word) in self.maps[c.index()].iter_mut().enumerate() {
            let mut bits = std::mem::take(word);
            while bits != 0 {
                let p = w * 64 + bits.trailing_zeros() as usize;
                if p < self.pages {
                    out.push(p);
                }
                bits &= bits - 1;
            }
        }
        out
    }

    /// How many pages [`DirtyPages::take`] would return for `c` now, without taking them.
    pub fn count(&self, ram: &Ram, c: DirtyConsumer) -> usize {
        let mut n = ram.dirty_count();
        for (w, &word) in self.maps[c.index()].iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let p = w * 64 + bits.trailing_zeros() as usize;
                if p < self.pages && !ram.is_dirty(p) {
                    n += 1;
                }
                bits &= bits - 1;
            }
        }
        n
    }

    /// Nothing counts as written for anyone (the machine's state was just replaced as a whole).
    pub fn clear(&mut self, ram: &mut Ram) {
        ram.take_dirty();
        for m in &mut self.maps {
            m.iter_mut().for_each(|w| *w = 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x8000_0000;
    const PAGE: u64 = 4096;

    fn write(ram: &mut Ram, page: u64) {
        ram.write(BASE + page * PAGE + 8, &[1, 2, 3]).unwrap();
    }

    #[test]
    fn a_delta_taken_during_a_live_copy_loses_pages_for_neither() {
        let mut ram = Ram::new(BASE, 16 * PAGE as usize);
        let mut d = DirtyPages::new(16);
        assert_eq!(
            d.take(&mut ram, DirtyConsumer::Delta).len(),
            16,
            "all at first"
        );
        assert_eq!(d.count(&ram, DirtyConsumer::LiveCopy), 16);
        assert_eq!(d.take(&mut ram, DirtyConsumer::LiveCopy).len(), 16);
        assert_eq!(d.count(&ram, DirtyConsumer::Delta), 0);

        write(&mut ram, 3);
        // A copy round takes page 3...
        assert_eq!(d.take(&mut ram, DirtyConsumer::LiveCopy), vec![3]);
        write(&mut ram, 5);
        assert_eq!(d.count(&ram, DirtyConsumer::Delta), 2);
        assert_eq!(d.count(&ram, DirtyConsumer::LiveCopy), 1);
        // ...and the delta still carries it, with page 5...
        assert_eq!(d.take(&mut ram, DirtyConsumer::Delta), vec![3, 5]);
        // ...which the copy's next round (or its closing delta) still gets.
        assert_eq!(d.count(&ram, DirtyConsumer::LiveCopy), 1);
        write(&mut ram, 9);
        assert_eq!(d.take(&mut ram, DirtyConsumer::LiveCopy), vec![5, 9]);
        assert_eq!(d.take(&mut ram, DirtyConsumer::Delta), vec![9]);
        assert!(d.take(&mut ram, DirtyConsumer::Delta).is_empty());
        assert!(d.take(&mut ram, DirtyConsumer::LiveCopy).is_empty());

        write(&mut ram, 1);
        d.clear(&mut ram);
        assert_eq!(d.count(&ram, DirtyConsumer::Delta), 0);
        assert!(d.take(&mut ram, DirtyConsumer::LiveCopy).is_empty());
    }

    #[test]
    fn pages_past_the_end_of_ram_never_count() {
        // 70 pages: the second word's upper bits are not pages.
        let mut ram = Ram::new(BASE, 70 * PAGE as usize);
        let mut d = DirtyPages::new(70);
        assert_eq!(d.count(&ram, DirtyConsumer::Delta), 70);
        let all = d.take(&mut ram, DirtyConsumer::Delta);
        assert_eq!(all, (0..70).collect::<Vec<_>>());
        write(&mut ram, 69);
        assert_eq!(d.take(&mut ram, DirtyConsumer::Delta), vec![69]);
    }
}
