//! The PLIC (platform-level interrupt controller) with QEMU `virt`'s layout: 96 sources, 3
//! priority bits, and two contexts per hart (2h = M-mode, 2h + 1 = S-mode of hart h).
//!
//! Every source is level-triggered: the board sets each line's level after device activity
//! ([`Plic::set_level`]). A source is pending while its line is high and it is not claimed; a
//! claim takes the highest-priority pending source (lowest id on ties) that the context enables
//! above its threshold; a completion releases it, and it is pending again at once if its line
//! is still high. (RISC-V PLIC specification 1.0.0, §§ 4–9.)

/// Physical base address.
pub const BASE: u64 = 0xc00_0000;
/// Size of the register window (QEMU `virt` reserves room for 512 harts' contexts).
pub const SIZE: u64 = 0x60_0000;
/// The device tree's `riscv,ndev`: sources are numbered 1..=NDEV (0 means "none").
pub const NDEV: u32 = 96;

const WORDS: usize = (NDEV as usize + 1).div_ceil(32);
const PRIORITY_MASK: u32 = 7;

const PENDING: u64 = 0x1000;
const ENABLE: u64 = 0x2000;
const ENABLE_STRIDE: u64 = 0x80;
const CONTEXT: u64 = 0x20_0000;
const CONTEXT_STRIDE: u64 = 0x1000;

type Bits = [u32; WORDS];

fn get(b: &Bits, i: u32) -> bool {
    b[(i / 32) as usize] >> (i % 32) & 1 != 0
}

fn set(b: &mut Bits, i: u32, v: bool) {
    let w = &mut b[(i / 32) as usize];
    if v {
        *w |= 1 << (i % 32);
    } else {
        *w &= !(1 << (i % 32));
    }
}

/// Borrowed view of the PLIC's state, for saving.
pub(crate) struct PlicParts<'a> {
    pub priority: &'a [u32],
    pub level: &'a [u32],
    pub pending: &'a [u32],
    pub claimed: &'a [u32],
    pub enable: &'a [Bits],
    pub threshold: &'a [u32],
}

/// PLIC registers and gateway state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plic {
    priority: [u32; NDEV as usize + 1],
    level: Bits,
    pending: Bits,
    claimed: Bits,
    enable: Vec<Bits>,
    threshold: Vec<u32>,
}

impl Plic {
    /// A PLIC for `harts` harts at reset: everything zero (all sources masked).
    pub fn new(harts: usize) -> Self {
        let contexts = 2 * harts;
        Plic {
            priority: [0; NDEV as usize + 1],
            level: [0; WORDS],
            pending: [0; WORDS],
            claimed: [0; WORDS],
            enable: vec![[0; WORDS]; contexts],
            threshold: vec![0; contexts],
        }
    }

    pub(crate) fn parts(&self) -> PlicParts<'_> {
        PlicParts {
            priority: &self.priority,
            level: &self.level,
            pending: &self.pending,
            claimed: &self.claimed,
            enable: &self.enable,
            threshold: &self.threshold,
        }
    }

    /// Takes a state whose lengths and ranges the caller checked.
    pub(crate) fn set_parts(&mut self, s: &PlicState) {
        let copy =
            |dst: &mut [u32], src: &[u32]| dst.iter_mut().zip(src).for_each(|(d, s)| *d = *s);
        copy(&mut self.priority, &s.priority);
        copy(&mut self.level, &s.level);
        copy(&mut self.pending, &s.pending);
        copy(&mut self.claimed, &s.claimed);
        for (dst, src) in self.enable.iter_mut().zip(&s.enable) {
            copy(dst, src);
        }
        copy(&mut self.threshold, &s.threshold);
    }

    /// Sets the level of source `src`'s interrupt line (out-of-range sources are ignored).
    pub fn set_level(&mut self, src: u32, high: bool) {
        if src == 0 || src > NDEV {
            return;
        }
        set(&mut self.level, src, high);
        // A request that is withdrawn before it is claimed is dropped; a claimed source
        // becomes pending again only when it is completed.
        set(&mut self.pending, src, high && !get(&self.claimed, src));
    }

    /// The best source context `ctx` would claim now, if any.
    fn best(&self, ctx: usize) -> Option<u32> {
        let en = self.enable.get(ctx)?;
        let threshold = self.threshold[ctx];
        let mut best: Option<(u32, u32)> = None;
        for (w, (&pending, &enabled)) in self.pending.iter().zip(en).enumerate() {
            let mut bits = pending & enabled;
            while bits != 0 {
                let src = (w * 32) as u32 + bits.trailing_zeros();
                bits &= bits - 1;
                let prio = self.priority[src as usize];
                if prio > threshold && best.is_none_or(|(_, p)| prio > p) {
                    best = Some((src, prio));
                }
            }
        }
        best.map(|(src, _)| src)
    }

    /// Whether context `ctx`'s interrupt output (MEIP or SEIP of its hart) is asserted.
    pub fn irq(&self, ctx: usize) -> bool {
        self.best(ctx).is_some()
    }

    fn claim(&mut self, ctx: usize) -> u32 {
        match self.best(ctx) {
            Some(src) => {
                set(&mut self.pending, src, false);
                set(&mut self.claimed, src, true);
                src
            }
            None => 0,
        }
    }

    fn complete(&mut self, src: u32) {
        if src == 0 || src > NDEV {
            return;
        }
        set(&mut self.claimed, src, false);
        let high = get(&self.level, src);
        set(&mut self.pending, src, high);
    }

    /// A guest read. Registers are 32 bits wide: other sizes and misaligned accesses fault.
    /// Reading a claim register claims. Unimplemented offsets inside the window read as zero.
    pub fn read(&mut self, offset: u64, size: u8) -> Option<u64> {
        if size != 4 || !offset.is_multiple_of(4) {
            return None;
        }
        let contexts = self.threshold.len() as u64;
        let v = match offset {
            o if o < PENDING => self.priority.get((o / 4) as usize).copied().unwrap_or(0),
            o if o < ENABLE => self
                .pending
                .get(((o - PENDING) / 4) as usize)
                .copied()
                .unwrap_or(0),
            o if o < CONTEXT => {
                let (ctx, w) = (
                    (o - ENABLE) / ENABLE_STRIDE,
                    (o - ENABLE) % ENABLE_STRIDE / 4,
                );
                match self.enable.get(ctx as usize) {
                    Some(en) => en.get(w as usize).copied().unwrap_or(0),
                    None => 0,
                }
            }
            o => {
                let (ctx, reg) = (
                    (o - CONTEXT) / CONTEXT_STRIDE,
                    (o - CONTEXT) % CONTEXT_STRIDE,
                );
                match reg {
                    _ if ctx >= contexts => 0,
                    0 => self.threshold[ctx as usize],
                    4 => self.claim(ctx as usize),
                    _ => 0,
                }
            }
        };
        Some(u64::from(v))
    }

    /// A guest write; see [`Plic::read`] for which accesses fault. Writing a claim register
    /// completes the source written.
    pub fn write(&mut self, offset: u64, size: u8, val: u64) -> bool {
        if size != 4 || !offset.is_multiple_of(4) {
            return false;
        }
        let v = val as u32;
        let contexts = self.threshold.len() as u64;
        match offset {
            o if o < PENDING => {
                if let Some(p) = self.priority.get_mut((o / 4) as usize) {
                    if o != 0 {
                        *p = v & PRIORITY_MASK;
                    }
                }
            }
            o if o < ENABLE => {} // pending bits are read-only
            o if o < CONTEXT => {
                let (ctx, w) = (
                    (o - ENABLE) / ENABLE_STRIDE,
                    (o - ENABLE) % ENABLE_STRIDE / 4,
                );
                if let Some(word) = self
                    .enable
                    .get_mut(ctx as usize)
                    .and_then(|en| en.get_mut(w as usize))
                {
                    // Source 0 does not exist; bits above NDEV are hardwired to zero.
                    let mut mask = u32::MAX;
                    if w == 0 {
                        mask &= !1;
                    }
                    let top = (w as u32 + 1) * 32;
                    if top > NDEV + 1 {
                        mask &= u32::MAX >> (top - (NDEV + 1));
                    }
                    *word = v & mask;
                }
            }
            o => {
                let (ctx, reg) = (
                    (o - CONTEXT) / CONTEXT_STRIDE,
                    (o - CONTEXT) % CONTEXT_STRIDE,
                );
                match reg {
                    _ if ctx >= contexts => {}
                    0 => self.threshold[ctx as usize] = v & PRIORITY_MASK,
                    4 => self.complete(v),
                    _ => {}
                }
            }
        }
        true
    }
}

mod persist;
pub use persist::PlicState;

#[cfg(test)]
mod tests {
    use super::*;

    const S_CTX0: u64 = 1; // S-mode context of hart 0

    fn setup() -> Plic {
        let mut p = Plic::new(2);
        assert!(p.write(4 * 10, 4, 1)); // priority of source 10
        assert!(p.write(4 * 3, 4, 5)); // priority of source 3
        assert!(p.write(ENABLE + ENABLE_STRIDE * S_CTX0, 4, (1 << 10) | (1 << 3)));
        p
    }

    fn claim_reg(ctx: u64) -> u64 {
        CONTEXT + CONTEXT_STRIDE * ctx + 4
    }

    #[test]
    fn claim_takes_highest_priority_and_complete_resamples_the_line() {
        let mut p = setup();
        assert!(!p.irq(S_CTX0 as usize));
        p.set_level(10, true);
        p.set_level(3, true);
        assert!(p.irq(1));
        assert!(!p.irq(0), "M-mode context has nothing enabled");
        assert!(!p.irq(3), "other hart");
        assert_eq!(p.read(PENDING, 4), Some((1 << 10) | (1 << 3)));
        assert_eq!(p.read(claim_reg(S_CTX0), 4), Some(3));
        assert_eq!(p.read(claim_reg(S_CTX0), 4), Some(10));
        assert_eq!(p.read(claim_reg(S_CTX0), 4), Some(0));
        assert!(!p.irq(1));
        // Source 3's device is still asserting: completion makes it pending again.
        assert!(p.write(claim_reg(S_CTX0), 4, 3));
        assert!(p.irq(1));
        // Source 10's line dropped while claimed: completion leaves it idle.
        p.set_level(10, false);
        assert!(p.write(claim_reg(S_CTX0), 4, 10));
        assert_eq!(p.read(PENDING, 4), Some(1 << 3));
    }

    #[test]
    fn threshold_masks_and_priority_zero_never_interrupts() {
        let mut p = setup();
        p.set_level(10, true);
        assert!(p.write(CONTEXT + CONTEXT_STRIDE * S_CTX0, 4, 1));
        assert_eq!(p.read(CONTEXT + CONTEXT_STRIDE * S_CTX0, 4), Some(1));
        assert!(!p.irq(1), "priority 1 is not above threshold 1");
        assert!(p.write(CONTEXT + CONTEXT_STRIDE * S_CTX0, 4, 0));
        assert!(p.irq(1));
        assert!(p.write(4 * 10, 4, 0));
        assert!(!p.irq(1));
        assert_eq!(p.read(claim_reg(S_CTX0), 4), Some(0));
    }

    #[test]
    fn registers_are_masked_and_bad_accesses_fault() {
        let mut p = Plic::new(1);
        assert!(p.write(4 * 5, 4, 0xffff_ffff));
        assert_eq!(p.read(4 * 5, 4), Some(7));
        assert!(p.write(ENABLE + 12, 4, 0xffff_ffff));
        assert_eq!(
            p.read(ENABLE + 12, 4),
            Some(1),
            "only source 96 exists in word 3"
        );
        assert!(p.write(ENABLE, 4, 0xffff_ffff));
        assert_eq!(
            p.read(ENABLE, 4),
            Some(0xffff_fffe),
            "source 0 does not exist"
        );
        assert_eq!(p.read(0, 8), None);
        assert_eq!(p.read(2, 4), None);
        assert!(!p.write(0, 1, 0));
        // Contexts of harts that do not exist read as zero and ignore writes.
        assert_eq!(p.read(claim_reg(7), 4), Some(0));
        assert!(p.write(claim_reg(7), 4, 3));
        p.set_level(0, true);
        p.set_level(1000, true);
        p.complete(1000);
        assert_eq!(p.read(SIZE - 4, 4), Some(0));
    }
}
