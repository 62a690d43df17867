//! Lock-step differential testing of the two engines: the same program runs on an interpreter
//! hart and a translating-engine hart, in slices of random length, and the whole architectural
//! state (x and f registers, fflags/frm, every CSR, pc, privilege, icount, WFI, the LR
//! reservation, all of RAM) and the reason each slice ended must be equal after every slice.
//!
//! [`Program::random`] makes the programs: random instruction streams (valid and invalid
//! encodings, compressed ones, loads/stores/atomics near a few data pointers, stores into the
//! code itself, CSR reads and writes including `mstatus`/`satp`/`medeleg`/`mie`, FP operations,
//! ECALL/MRET/SRET/WFI/fences, indirect jumps and returns to any page) with M- and S-mode trap handlers that return to a pseudo-random
//! place of the program, and an Sv39 page table so that paging can be switched on. Between
//! slices the harness raises and lowers interrupt lines at random (the same on both harts), and
//! wakes a waiting hart. The `jit_fuzz` example runs this for as long as asked; a short run is a
//! unit test.

use crate::bus::NoDevices;
use crate::engine::Engine;
use crate::hart::{Exit, Hart};
use crate::ram::Ram;

/// RAM base of the test machine.
pub const BASE: u64 = 0x8000_0000;
/// RAM size of the test machine.
pub const RAM_SIZE: usize = 256 << 10;
/// Where the random program lives (a power-of-two sized, aligned region).
pub const PROG: u64 = BASE + 0x1_0000;
/// Size of the program region.
pub const PROG_SIZE: u64 = 0x1_0000;
/// Data region the pointer registers point into.
const DATA: u64 = BASE + 0x2_0000;
/// Sv39 root tables: identity gigapage for RAM, without and with the U bit.
const PT_S: u64 = BASE + 0x3_e000;
const PT_U: u64 = BASE + 0x3_f000;

/// A small deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (any seed, 0 included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn r_type(f7: u32, rs2: u32, rs1: u32, f3: u32, rd: u32, opc: u32) -> u32 {
    f7 << 25 | rs2 << 20 | rs1 << 15 | f3 << 12 | rd << 7 | opc
}
fn i_type(imm: i32, rs1: u32, f3: u32, rd: u32, opc: u32) -> u32 {
    ((imm as u32) & 0xfff) << 20 | rs1 << 15 | f3 << 12 | rd << 7 | opc
}
fn s_type(imm: i32, rs2: u32, rs1: u32, f3: u32, opc: u32) -> u32 {
    let i = imm as u32 & 0xfff;
    (i >> 5) << 25 | rs2 << 20 | rs1 << 15 | f3 << 12 | (i & 31) << 7 | opc
}
fn b_type(imm: i32, rs2: u32, rs1: u32, f3: u32) -> u32 {
    let o = imm as u32;
    ((o >> 12) & 1) << 31
        | ((o >> 5) & 0x3f) << 25
        | rs2 << 20
        | rs1 << 15
        | f3 << 12
        | ((o >> 1) & 0xf) << 8
        | ((o >> 11) & 1) << 7
        | 0x63
}
fn j_type(imm: i32, rd: u32) -> u32 {
    let o = imm as u32;
    ((o >> 20) & 1) << 31
        | ((o >> 1) & 0x3ff) << 21
        | ((o >> 11) & 1) << 20
        | ((o >> 12) & 0xff) << 12
        | rd << 7
        | 0x6f
}
fn csr_op(csr: u32, rs1: u32, f3: u32, rd: u32) -> u32 {
    csr << 20 | rs1 << 15 | f3 << 12 | rd << 7 | 0x73
}

/// Registers with a fixed role: x2 program base, x3 program mask, x4 a pointer into the
/// program (self-modifying stores), x5..x7 data pointers, x31 the handlers' scratch.
const FREE: [u32; 24] = [
    1, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
];
const CSRS: [u32; 20] = [
    0x300, 0x340, 0x180, 0x304, 0x344, 0x302, 0x303, 0x001, 0x002, 0x003, 0x100, 0x104, 0x140,
    0x141, 0x142, 0x144, 0xc00, 0xc01, 0xc02, 0x7c0,
];

/// A test machine's initial image.
#[derive(Debug, Clone)]
pub struct Program {
    /// Bytes of RAM from [`BASE`].
    pub image: Vec<u8>,
    /// Initial integer registers.
    pub x: [u64; 32],
}

impl Program {
    /// A random program from `rng`.
    pub fn random(rng: &mut Rng) -> Program {
        let mut image = vec![0u8; RAM_SIZE];
        let put32 = |img: &mut Vec<u8>, at: u64, w: u32| {
            let o = (at - BASE) as usize;
            img[o..o + 4].copy_from_slice(&w.to_le_bytes());
        };
        // M handler at BASE, S handler at BASE + 0x100:
        //   csrr x31, xepc; addi x31, x31, 4; and x31, x31, x3; or x31, x31, x2;
        //   csrw xepc, x31; xret
        for (at, epc, ret) in [
            (BASE, 0x341, 0x3020_0073u32),
            (BASE + 0x100, 0x141, 0x1020_0073),
        ] {
            let code = [
                csr_op(epc, 0, 2, 31),
                i_type(4, 31, 0, 31, 0x13),
                r_type(0, 3, 31, 7, 31, 0x33),
                r_type(0, 2, 31, 6, 31, 0x33),
                csr_op(epc, 31, 1, 0),
                ret,
            ];
            for (i, w) in code.iter().enumerate() {
                put32(&mut image, at + 4 * i as u64, *w);
            }
        }
        // Page tables: one gigapage 0x8000_0000 -> itself (VRWXAD, with/without U).
        for (pt, u) in [(PT_S, 0u64), (PT_U, 1 << 4)] {
            let pte = (BASE >> 12) << 10 | 0xcf | u;
            let o = (pt - BASE) as usize + 2 * 8;
            image[o..o + 8].copy_from_slice(&pte.to_le_bytes());
        }
        // Data: random bytes.
        for b in &mut image[(DATA - BASE) as usize..(PT_S - BASE) as usize] {
            *b = rng.next_u64() as u8;
        }
        // The program.
        let mut at = PROG;
        while at + 4 <= PROG + PROG_SIZE {
            if rng.chance(15) {
                let h = random_compressed(rng);
                let o = (at - BASE) as usize;
                image[o..o + 2].copy_from_slice(&h.to_le_bytes());
                at += 2;
            } else {
                put32(&mut image, at, random_insn(rng));
                at += 4;
            }
        }
        let mut x = [0u64; 32];
        for (i, r) in x.iter_mut().enumerate().skip(1) {
            *r = match i {
                2 => PROG,
                3 => (PROG_SIZE - 1) & !1,
                4 => PROG + rng.below(PROG_SIZE - 64),
                5..=7 => DATA + rng.below(0x1_0000),
                _ => {
                    let (r, s) = (rng.next_u64(), rng.below(64));
                    // The divide edge cases too: x / 0, MIN / -1 in both widths.
                    rng.pick(&[0, 1, u64::MAX, 1 << 63, 0xffff_ffff_8000_0000, r, s])
                }
            };
        }
        Program { image, x }
    }

    /// A hart and RAM loaded with this program, on `engine`, starting at the program in M-mode.
    pub fn load(&self, engine: Engine) -> (Hart, Ram) {
        let mut ram = Ram::new(BASE, RAM_SIZE);
        ram.write(BASE, &self.image).expect("image fits");
        let mut h = Hart::new(0);
        h.set_engine(engine);
        h.pc = PROG;
        h.x[..32].copy_from_slice(&self.x);
        h.csr.mtvec = BASE;
        h.csr.stvec = BASE + 0x100;
        // The FPU starts on (FS = Initial), so FP instructions run rather than trap; random
        // mstatus writes turn it off and on again.
        h.csr.mstatus |= 1 << crate::csr::mstatus::FS_SHIFT;
        (h, ram)
    }
}

fn random_compressed(rng: &mut Rng) -> u16 {
    loop {
        let h = rng.next_u64() as u16;
        if h & 3 != 3 {
            return h;
        }
    }
}

fn random_insn(rng: &mut Rng) -> u32 {
    let rd = rng.pick(&FREE);
    let rs1 = rng.below(32) as u32;
    let rs2 = rng.below(32) as u32;
    let ptr = rng.pick(&[5u32, 6, 7, 5, 6, 7, 4]);
    let small = rng.below(64) as i32 - 32;
    match rng.below(100) {
        0..=19 => {
            // OP-IMM, OP-IMM-32
            let f3 = rng.below(8) as u32;
            let imm = match f3 {
                1 => rng.below(64) as i32,
                5 => rng.below(64) as i32 | if rng.chance(50) { 0x400 } else { 0 },
                _ => rng.below(4096) as i32 - 2048,
            };
            if rng.chance(30) {
                let f3 = rng.pick(&[0u32, 1, 5]);
                let imm = if f3 == 0 { imm } else { imm & 0x41f };
                i_type(imm, rs1, f3, rd, 0x1b)
            } else {
                i_type(imm, rs1, f3, rd, 0x13)
            }
        }
        20..=37 => {
            // OP, OP-32, with M
            let f3 = rng.below(8) as u32;
            let f7 = rng.pick(&[0u32, 0, 0x20, 1]);
            let opc = if rng.chance(30) { 0x3b } else { 0x33 };
            r_type(f7, rs2, rs1, f3, rd, opc)
        }
        38..=41 => (rng.next_u64() as u32 & 0xffff_f000) | rd << 7 | rng.pick(&[0x37u32, 0x17]),
        42..=53 => {
            // loads near a pointer (any width, sometimes misaligned or page-crossing)
            let f3 = rng.pick(&[0u32, 1, 2, 3, 4, 5, 6]);
            let base = if rng.chance(3) { rs1 } else { ptr };
            i_type(small * 8 + rng.below(8) as i32, base, f3, rd, 0x03)
        }
        54..=63 => {
            let f3 = rng.below(4) as u32;
            let base = if rng.chance(3) { rs1 } else { ptr };
            s_type(small * 8 + rng.below(8) as i32, rs2, base, f3, 0x23)
        }
        64..=71 => b_type(
            (rng.below(64) as i32 - 40) * 2,
            rs2,
            rs1,
            rng.pick(&[0u32, 1, 4, 5, 6, 7]),
        ),
        72..=74 => j_type((rng.below(128) as i32 - 60) * 2, rng.pick(&[0u32, 1, rd])),
        75..=76 => {
            // Indirect jumps: from the program base, to the code x4 points at (which
            // self-modifying stores rewrite), or a return through x1 (often a random value, or
            // left by an earlier jal/jalr): any page, valid, stale or unmapped targets.
            let (base, imm) = match rng.below(4) {
                0 | 1 => (2, rng.below(2048) as i32 & !1),
                2 => (4, small * 2),
                _ => (1, 0),
            };
            i_type(imm, base, 0, rng.pick(&[0u32, 1, rd]), 0x67)
        }
        77..=82 => {
            let f3 = rng.pick(&[1u32, 2, 3, 5, 6, 7]);
            let csr = rng.pick(&CSRS);
            csr_op(
                csr,
                if f3 >= 5 { rng.below(32) as u32 } else { rs1 },
                f3,
                rd,
            )
        }
        83..=86 => {
            // FP: loads/stores near a pointer, arithmetic with random function codes
            match rng.below(4) {
                0 => i_type(small * 8, ptr, rng.pick(&[2u32, 3]), rd, 0x07),
                1 => s_type(small * 8, rs2, ptr, rng.pick(&[2u32, 3]), 0x27),
                2 => r_type(
                    rng.below(128) as u32,
                    rs2,
                    rs1,
                    rng.below(8) as u32,
                    rd,
                    0x53,
                ),
                _ => {
                    (rng.below(32) as u32) << 27
                        | (rng.below(2) as u32) << 25
                        | rs2 << 20
                        | rs1 << 15
                        | (rng.below(8) as u32) << 12
                        | rd << 7
                        | rng.pick(&[0x43u32, 0x47, 0x4b, 0x4f])
                }
            }
        }
        87..=89 => {
            // AMO / LR / SC on a data pointer
            let f5 = rng.pick(&[0u32, 1, 2, 3, 4, 8, 12, 16, 20, 24, 28]);
            let rs2 = if f5 == 2 { 0 } else { rs2 };
            r_type(
                f5 << 2 | rng.below(4) as u32,
                rs2,
                rng.pick(&[5u32, 6, 7]),
                rng.pick(&[2u32, 3]),
                rd,
                0x2f,
            )
        }
        90..=94 => rng.pick(&[
            0x0000_0073u32, // ecall
            0x0010_0073,    // ebreak
            0x3020_0073,    // mret
            0x1020_0073,    // sret
            0x1050_0073,    // wfi
            0x0ff0_000f,    // fence
            0x0000_100f,    // fence.i
            0x1200_0073,    // sfence.vma
        ]),
        95..=96 => {
            // satp: x30 holds a valid Sv39 value (set by the harness), x0 turns paging off.
            csr_op(0x180, rng.pick(&[30u32, 0]), 1, rd)
        }
        _ => rng.next_u64() as u32, // anything, mostly invalid
    }
}

/// Everything the two engines must agree on.
pub fn same_state(a: &Hart, b: &Hart) -> Result<(), String> {
    let diff = |what: &str| Err(format!("{what} differs: interp {a:?} vs jit {b:?}"));
    if a.x[..32] != b.x[..32] {
        let r = (0..32).find(|&i| a.x[i] != b.x[i]).unwrap_or(0);
        return Err(format!(
            "x{r} differs: interp {:#x} vs jit {:#x} ({a:?} / {b:?})",
            a.x[r], b.x[r]
        ));
    }
    if a.f != b.f {
        return diff("f registers");
    }
    if a.pc != b.pc {
        return Err(format!("pc differs: interp {:#x} vs jit {:#x}", a.pc, b.pc));
    }
    if a.prv != b.prv {
        return diff("privilege");
    }
    if a.icount != b.icount {
        return diff("icount");
    }
    if a.fflags != b.fflags || a.frm != b.frm {
        return diff("fflags/frm");
    }
    if a.csr != b.csr {
        return Err(format!(
            "CSRs differ: interp {:x?} vs jit {:x?}",
            a.csr, b.csr
        ));
    }
    if a.wfi != b.wfi {
        return diff("wfi");
    }
    if a.reservation != b.reservation {
        return diff("LR reservation");
    }
    Ok(())
}

/// Outcome of [`run_pair`].
#[derive(Debug, Default, Clone, Copy)]
pub struct PairStats {
    /// Slices compared.
    pub slices: u64,
    /// Steps each hart took.
    pub steps: u64,
    /// Blocks the translating engine ran, and instructions it translated.
    pub jit_runs: u64,
    /// Guest instructions translated.
    pub jit_insns: u64,
    /// Blocks entered from other blocks through the inline jump-cache probe.
    pub jit_inline: u64,
}

/// Runs `prog` on both engines for `steps` steps in random slices and compares after each.
pub fn run_pair(prog: &Program, rng: &mut Rng, steps: u64) -> Result<PairStats, String> {
    let (mut a, mut ram_a) = prog.load(Engine::Interp);
    let (mut b, mut ram_b) = prog.load(Engine::Jit);
    let satp = [0u64, 8 << 60 | PT_S >> 12, 8 << 60 | PT_U >> 12][rng.below(3) as usize];
    a.x[30] = satp;
    b.x[30] = satp;
    let mut st = PairStats::default();
    while a.icount < steps {
        let n = match rng.below(10) {
            0 => 1,
            1..=3 => rng.below(16) + 1,
            4..=7 => rng.below(300) + 1,
            _ => rng.below(5000) + 1,
        };
        if rng.chance(10) {
            let lines = rng.next_u64() & 0xaaa;
            a.set_irq_lines(lines);
            b.set_irq_lines(lines);
        }
        if rng.chance(2) {
            // A board would do this on a hart switch.
            a.clear_reservation();
            b.clear_reservation();
        }
        let ea = a.run(&mut ram_a, &mut NoDevices, n);
        let eb = b.run(&mut ram_b, &mut NoDevices, n);
        st.slices += 1;
        if ea != eb {
            return Err(format!(
                "exit differs after slice {} ({n} steps): interp {ea:?} vs jit {eb:?}; {a:?} / {b:?}",
                st.slices
            ));
        }
        same_state(&a, &b).map_err(|e| format!("after slice {} ({n} steps): {e}", st.slices))?;
        if ram_a.as_slice() != ram_b.as_slice() {
            let at = ram_a
                .as_slice()
                .iter()
                .zip(ram_b.as_slice())
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            return Err(format!(
                "RAM differs at {:#x} after slice {} ({n} steps); {a:?}",
                BASE + at as u64,
                st.slices
            ));
        }
        if ea == Exit::Wfi {
            a.wfi = false;
            b.wfi = false;
        }
        if rng.chance(5) {
            // Dirty-tracking intervals end at random points, as snapshots and digests do.
            assert_eq!(ram_a.take_dirty(), ram_b.take_dirty(), "dirty pages differ");
        }
    }
    st.steps = a.icount;
    if let Some(j) = b.jit_stats() {
        st.jit_runs = j.runs;
        st.jit_insns = j.insns;
        st.jit_inline = j.inline_entries;
    }
    Ok(st)
}

/// Runs `episodes` random programs from `seed`, `steps` steps each.
pub fn fuzz(seed: u64, episodes: u64, steps: u64) -> Result<PairStats, String> {
    let mut total = PairStats::default();
    for e in 0..episodes {
        let mut rng = Rng::new(seed.wrapping_add(e.wrapping_mul(0x1000_0001)));
        let prog = Program::random(&mut rng);
        let st = run_pair(&prog, &mut rng, steps)
            .map_err(|m| format!("seed {seed} episode {e}: {m}"))?;
        total.slices += st.slices;
        total.steps += st.steps;
        total.jit_runs += st.jit_runs;
        total.jit_insns += st.jit_insns;
        total.jit_inline += st.jit_inline;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_differential_fuzz_finds_no_difference() {
        let st = fuzz(1, 40, 20_000).unwrap_or_else(|e| panic!("{e}"));
        assert!(st.steps >= 40 * 20_000);
        if crate::Engine::JIT_AVAILABLE {
            // The comparison means something only if translated code actually ran.
            assert!(st.jit_runs + st.jit_inline > st.steps / 50, "{st:?}");
            // Blocks entered from blocks without the dispatcher, too.
            assert!(st.jit_inline > st.jit_runs / 100, "{st:?}");
        }
    }
}
