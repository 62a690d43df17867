//! The F and D extensions: single- and double-precision loads, stores, arithmetic, conversions,
//! comparisons and moves.
//!
//! Every rounded operation goes through Berkeley SoftFloat 3 built with its RISC-V specialization
//! (`softfloat-sys`, feature `riscv`), so results and exception flags are bit-exact on any host and
//! never depend on the host's FPU, its rounding mode or its NaN rules. Operations that only move or
//! inspect bits (sign injection, moves, classification, comparisons, min/max) are done here in
//! integer arithmetic, which is faster than a call and just as exact.
//!
//! Single-precision values live in the 64-bit `f` registers NaN-boxed: the upper 32 bits all ones.
//! An operand that is not properly boxed reads as the canonical NaN, except in the transfer
//! instructions (FLW, FSW, FMV.X.W, FMV.W.X), which move the raw bits.

use softfloat_sys as sf;

use crate::{bus::Bus, hart::Hart, ram::Ram, trap::Trap};

/// The upper half of a NaN-boxed single-precision value.
const BOX: u64 = 0xffff_ffff_0000_0000;

/// `fflags` bit: invalid operation.
pub const NV: u8 = 1 << 4;
/// `fflags` bit: division by zero.
pub const DZ: u8 = 1 << 3;
/// `fflags` bit: overflow.
pub const OF: u8 = 1 << 2;
/// `fflags` bit: underflow.
pub const UF: u8 = 1 << 1;
/// `fflags` bit: inexact.
pub const NX: u8 = 1;

// SoftFloat's flag bits and rounding-mode numbers are those of the RISC-V fflags and rm fields,
// which lets both pass through unchanged.
const _: () = assert!(sf::softfloat_flag_invalid == NV);
const _: () = assert!(sf::softfloat_flag_infinite == DZ);
const _: () = assert!(sf::softfloat_flag_overflow == OF);
const _: () = assert!(sf::softfloat_flag_underflow == UF);
const _: () = assert!(sf::softfloat_flag_inexact == NX);
const _: () = assert!(sf::softfloat_round_near_even == 0); // RNE
const _: () = assert!(sf::softfloat_round_minMag == 1); // RTZ
const _: () = assert!(sf::softfloat_round_min == 2); // RDN
const _: () = assert!(sf::softfloat_round_max == 3); // RUP
const _: () = assert!(sf::softfloat_round_near_maxMag == 4); // RMM

/// Bit layout of one binary floating-point format, for the operations done on raw bits.
#[derive(Clone, Copy)]
struct Fmt {
    /// The sign bit.
    sign: u64,
    /// The exponent field, in place.
    exp: u64,
    /// The most significant fraction bit: set in a quiet NaN, clear in a signalling one.
    quiet: u64,
    /// The canonical NaN.
    canon: u64,
}

impl Fmt {
    #[inline(always)]
    fn frac(self) -> u64 {
        (self.quiet << 1) - 1
    }

    #[inline(always)]
    fn is_nan(self, v: u64) -> bool {
        v & self.exp == self.exp && v & self.frac() != 0
    }

    #[inline(always)]
    fn is_snan(self, v: u64) -> bool {
        self.is_nan(v) && v & self.quiet == 0
    }

    /// `a < b` for non-NaN values, ordering -0 below +0 (as FMIN/FMAX require).
    #[inline(always)]
    fn lt_signed(self, a: u64, b: u64) -> bool {
        let (sa, sb) = (a & self.sign != 0, b & self.sign != 0);
        if sa != sb {
            sa
        } else if sa {
            a > b
        } else {
            a < b
        }
    }

    /// Both values are zeros (of either sign).
    #[inline(always)]
    fn both_zero(self, a: u64, b: u64) -> bool {
        (a | b) & !self.sign == 0
    }

    /// FMIN (`max` false) or FMAX (`max` true): IEEE 754-2019 minimumNumber/maximumNumber, with
    /// -0 < +0, the canonical NaN when both inputs are NaNs and NV on any signalling NaN.
    fn min_max(self, a: u64, b: u64, max: bool) -> (u64, u8) {
        let flags = if self.is_snan(a) || self.is_snan(b) {
            NV
        } else {
            0
        };
        let r = match (self.is_nan(a), self.is_nan(b)) {
            (true, true) => self.canon,
            (true, false) => b,
            (false, true) => a,
            (false, false) => {
                if self.lt_signed(a, b) == max {
                    b
                } else {
                    a
                }
            }
        };
        (r, flags)
    }

    /// FLE (`f3` 0), FLT (1) or FEQ (2); `None` for a reserved `f3`. FEQ is a quiet comparison
    /// (NV on signalling NaNs only), FLT and FLE are signalling ones (NV on any NaN).
    fn compare(self, a: u64, b: u64, f3: u32) -> Option<(bool, u8)> {
        let nan = self.is_nan(a) || self.is_nan(b);
        let r = match f3 {
            0 | 1 if nan => return Some((false, NV)),
            2 if nan => {
                let flags = if self.is_snan(a) || self.is_snan(b) {
                    NV
                } else {
                    0
                };
                return Some((false, flags));
            }
            0 => a == b || self.both_zero(a, b) || self.lt_signed(a, b),
            1 => !self.both_zero(a, b) && self.lt_signed(a, b),
            2 => a == b || self.both_zero(a, b),
            _ => return None,
        };
        Some((r, 0))
    }

    /// FCLASS: a one-hot mask of the value's class.
    fn classify(self, v: u64) -> u64 {
        let neg = v & self.sign != 0;
        let exp = v & self.exp;
        let frac = v & self.frac();
        let bit = if exp == self.exp {
            if frac == 0 {
                if neg {
                    0 // -inf
                } else {
                    7 // +inf
                }
            } else if frac & self.quiet != 0 {
                9 // quiet NaN
            } else {
                8 // signalling NaN
            }
        } else if exp == 0 {
            match (frac == 0, neg) {
                (true, true) => 3,   // -0
                (true, false) => 4,  // +0
                (false, true) => 2,  // negative subnormal
                (false, false) => 5, // positive subnormal
            }
        } else if neg {
            1 // negative normal
        } else {
            6 // positive normal
        };
        1 << bit
    }

    /// FSGNJ (`f3` 0), FSGNJN (1), FSGNJX (2); `None` for a reserved `f3`.
    fn sign_inject(self, a: u64, b: u64, f3: u32) -> Option<u64> {
        let sign = match f3 {
            0 => b & self.sign,
            1 => !b & self.sign,
            2 => (a ^ b) & self.sign,
            _ => return None,
        };
        Some((a & !self.sign) | sign)
    }
}

/// IEEE binary32.
const S: Fmt = Fmt {
    sign: 1 << 31,
    exp: 0x7f80_0000,
    quiet: 1 << 22,
    canon: 0x7fc0_0000,
};
/// IEEE binary64.
const D: Fmt = Fmt {
    sign: 1 << 63,
    exp: 0x7ff0_0000_0000_0000,
    quiet: 1 << 51,
    canon: 0x7ff8_0000_0000_0000,
};

thread_local! {
    /// What this thread last left in SoftFloat's thread-local state: (rounding mode, whether the
    /// flags may be non-zero). Lets `soft` skip the C accessor calls when nothing changes
    /// (measured: three calls per FP instruction were ~7% of host instructions on FP code).
    static SF_STATE: std::cell::Cell<(u8, bool)> = const { std::cell::Cell::new((u8::MAX, true)) };
}

/// The binary64 operations with a host fast path.
#[derive(Clone, Copy)]
pub(crate) enum HostOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// Exponent field bounds (biased) inside which the host fast path is exact: operands and result
/// between 2^-767 and 2^769, far from overflow, underflow and subnormals, so that the rounding
/// error of the result is itself exactly representable.
const HOST_EXP_MIN: u64 = 0x100;
const HOST_EXP_MAX: u64 = 0x700;

/// Binary64 add/sub/mul/div on the host FPU under round-to-nearest-even, when that is provably
/// bit-identical to SoftFloat: IEEE 754 requires the basic operations to be correctly rounded, and
/// Rust never changes the host's rounding mode, so for finite operands and results well inside
/// the normal range the value is the same on every conforming host; the only flag such an
/// operation can raise is inexact, which comes from the exact error term (TwoSum for add/sub, an
/// FMA residual for mul/div). NaNs, infinities, zeros, subnormals and anything near the ends of
/// the range go to SoftFloat. Measured: most of the FP kernel's add/mul/div take this path.
#[inline(always)]
pub(crate) fn host_d(kind: HostOp, a: u64, b: u64) -> Option<(u64, u8)> {
    let in_range = |v: u64| (HOST_EXP_MIN..=HOST_EXP_MAX).contains(&((v >> 52) & 0x7ff));
    if !in_range(a) || !in_range(b) {
        return None;
    }
    let (x, y) = (f64::from_bits(a), f64::from_bits(b));
    let (r, exact) = match kind {
        HostOp::Add | HostOp::Sub => {
            let y = if matches!(kind, HostOp::Sub) { -y } else { y };
            let s = x + y;
            let bb = s - x;
            let err = (x - (s - bb)) + (y - bb);
            (s, err == 0.0)
        }
        HostOp::Mul => {
            let p = x * y;
            (p, x.mul_add(y, -p) == 0.0)
        }
        HostOp::Div => {
            let q = x / y;
            (q, (-q).mul_add(y, x) == 0.0)
        }
    };
    let bits = r.to_bits();
    if !in_range(bits) {
        return None;
    }
    Some((bits, if exact { 0 } else { NX }))
}

/// TwoSum (Knuth): `s + e == a + b` exactly, `s` = RN(a + b), barring overflow.
#[inline(always)]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// Operand exponent field bounds (biased) for the host fused multiply-add: 2^-380..2^381, so that
/// the exact product lies between 2^-760 and 2^764 and every error term computed in [`host_fma_d`]
/// (a multiple of 2^-866 or more) is a normal binary64 number.
const FMA_EXP_MIN: u64 = 0x3ff - 380;
const FMA_EXP_MAX: u64 = 0x3ff + 380;

/// Binary64 `a * b + c` with one rounding on the host FPU under round-to-nearest-even, when that
/// is provably bit-identical to SoftFloat's `f64_mulAdd`: the host's `fma` is correctly rounded,
/// and with operands and result well inside the normal range the only flag is inexact. Whether
/// `a * b + c - r` is zero is decided exactly: the product is split into `u1 + u2` (FMA
/// residual), and TwoSums rewrite `u1 + u2 + c - r` as `g1 + a2` (Boldo and Muller's ErrFma);
/// the two steps that their theorem proves exact are checked at run time (a non-zero residual
/// falls back to SoftFloat), so correctness does not rest on the theorem.
#[inline(always)]
pub(crate) fn host_fma_d(a: u64, b: u64, c: u64) -> Option<(u64, u8)> {
    let in_op = |v: u64| (FMA_EXP_MIN..=FMA_EXP_MAX).contains(&((v >> 52) & 0x7ff));
    if !in_op(a) || !in_op(b) || !in_op(c) {
        return None;
    }
    let (x, y, z) = (f64::from_bits(a), f64::from_bits(b), f64::from_bits(c));
    let r = x.mul_add(y, z);
    let bits = r.to_bits();
    if !(HOST_EXP_MIN..=HOST_EXP_MAX).contains(&((bits >> 52) & 0x7ff)) {
        return None;
    }
    let u1 = x * y;
    let u2 = x.mul_add(y, -u1); // x * y == u1 + u2 exactly
    let (a1, a2) = two_sum(z, u2); // z + u2 == a1 + a2
    let (b1, b2) = two_sum(u1, a1); // x * y + z == b1 + b2 + a2
    let (d1, d2) = two_sum(b1, -r); // b1 - r == d1 + d2
    let (g1, g2) = two_sum(d1, b2);
    if d2 != 0.0 || g2 != 0.0 {
        return None;
    }
    // x * y + z - r == g1 + a2 exactly; a sum of multiples of 2^-866 is zero iff it rounds to 0.
    Some((bits, if g1 + a2 == 0.0 { 0 } else { NX }))
}

/// Biased binary32 exponent bounds for host results: normal, and one binade away from both
/// ends, so that neither tininess (detected after rounding) nor overflow can be in question.
const S_RES_MIN: u32 = 2;
const S_RES_MAX: u32 = 253;

#[inline(always)]
fn s_normal(v: u32) -> bool {
    let e = (v >> 23) & 0xff;
    e != 0 && e != 0xff
}

#[inline(always)]
fn s_result(r: f32) -> Option<u32> {
    let bits = r.to_bits();
    let e = (bits >> 23) & 0xff;
    (S_RES_MIN..=S_RES_MAX).contains(&e).then_some(bits)
}

/// Binary32 add/sub/mul/div under round-to-nearest-even on the host, computed in binary64 and
/// rounded to binary32: for these operations on binary32 operands double rounding through
/// binary64 (53 >= 2 * 24 + 2 bits) gives the correctly rounded binary32 result (Figueroa, "When
/// is double rounding innocuous?", 1995). Products of two binary32 significands are exact in
/// binary64, so inexact is decided exactly: for add/sub by TwoSum, for mul by comparing, for div
/// by multiplying back (`r * b` is exact). Operands normal, result normal and away from the ends.
#[inline(always)]
pub(crate) fn host_s(kind: HostOp, a: u32, b: u32) -> Option<(u32, u8)> {
    if !s_normal(a) || !s_normal(b) {
        return None;
    }
    let (x, y) = (f32::from_bits(a) as f64, f32::from_bits(b) as f64);
    let (r, exact) = match kind {
        HostOp::Add | HostOp::Sub => {
            let y = if matches!(kind, HostOp::Sub) { -y } else { y };
            let (s, e) = two_sum(x, y);
            let r = s as f32;
            (r, e == 0.0 && r as f64 == s)
        }
        HostOp::Mul => {
            let p = x * y;
            let r = p as f32;
            (r, r as f64 == p)
        }
        HostOp::Div => {
            let r = (x / y) as f32;
            (r, r as f64 * y == x)
        }
    };
    Some((s_result(r)?, if exact { 0 } else { NX }))
}

/// Binary32 `a * b + c` under round-to-nearest-even on the host. The product is exact in
/// binary64, TwoSum gives `p + c == s + e` exactly, and `s` rounded to binary32 is the correctly
/// rounded result unless `e != 0` and `s` is a binary32 midpoint (then SoftFloat decides): a
/// midpoint strictly between `s` and `s + e` would be a binary64 number nearer to `s + e` than
/// `s = RN64(s + e)`.
#[inline(always)]
pub(crate) fn host_fma_s(a: u32, b: u32, c: u32) -> Option<(u32, u8)> {
    if !s_normal(a) || !s_normal(b) || !s_normal(c) {
        return None;
    }
    let p = f32::from_bits(a) as f64 * f32::from_bits(b) as f64;
    let (s, e) = two_sum(p, f32::from_bits(c) as f64);
    if e != 0.0 && s.to_bits() & 0x1fff_ffff == 0x1000_0000 {
        return None;
    }
    let r = s as f32;
    let exact = e == 0.0 && r as f64 == s;
    Some((s_result(r)?, if exact { 0 } else { NX }))
}

/// FSQRT.D under round-to-nearest-even on the host (IEEE square root is correctly rounded):
/// positive normal operands; inexact iff `r * r != a`, decided exactly by an FMA residual.
#[inline(always)]
fn host_sqrt_d(a: u64) -> Option<(u64, u8)> {
    let e = a >> 52; // sign bit included: negative operands fail the test
    if !(HOST_EXP_MIN..=HOST_EXP_MAX).contains(&e) {
        return None;
    }
    let x = f64::from_bits(a);
    let r = x.sqrt();
    Some((r.to_bits(), if r.mul_add(r, -x) == 0.0 { 0 } else { NX }))
}

/// FSQRT.S under round-to-nearest-even on the host, through binary64 (innocuous double rounding,
/// as in [`host_s`]); `r * r` is exact in binary64.
#[inline(always)]
fn host_sqrt_s(a: u32) -> Option<(u32, u8)> {
    if !s_normal(a) || a >> 31 != 0 {
        return None;
    }
    let x = f32::from_bits(a) as f64;
    let r = x.sqrt() as f32;
    let exact = r as f64 * r as f64 == x;
    Some((s_result(r)?, if exact { 0 } else { NX }))
}

/// FCVT.{W,WU,L,LU}.{S,D} of `v` (exactly widened to binary64) under RTZ (`rm` 1) or RNE (`rm`
/// 0) on the host, when the rounded value is certainly representable: NaNs, infinities and
/// anything at or beyond 2^31 (W, WU) or 2^62 (L, LU) in magnitude before or after rounding, and
/// negative values for the unsigned forms, go to SoftFloat. `kind` is the `rs2` field (0 W, 1 WU, 2 L, 3 LU).
#[inline(always)]
pub(crate) fn host_f2i(v: f64, rm: u8, kind: usize) -> Option<(u64, u8)> {
    let bits = v.to_bits();
    let e = (bits >> 52) & 0x7ff;
    let limit = if kind < 2 { 0x3ff + 31 } else { 0x3ff + 62 };
    if e >= limit || (kind & 1 == 1 && bits >> 63 != 0) || rm > 1 {
        return None;
    }
    let i = if rm == 1 {
        v.trunc()
    } else {
        v.round_ties_even()
    };
    if kind < 2 && i >= 2_147_483_648.0 {
        return None; // 2^31 - 0.5 and above round up to 2^31 under RNE
    }
    let flags = if i == v { 0 } else { NX };
    let n = i as i64;
    let r = match kind {
        0 | 1 => n as i32 as u64,
        _ => n as u64,
    };
    Some((r, flags))
}

/// FCVT.S.{W,WU,L,LU} of `x` under round-to-nearest-even on the host (Rust's integer-to-float
/// `as` rounds to nearest, ties to even): the result bits and whether it is exact. The values in
/// question are integers below 2^64, which binary32 never overflows on, and whose distance to the
/// result is decided exactly in 128-bit integers.
#[inline(always)]
pub(crate) fn host_i2f_s(x: u64, kind: usize) -> (u32, bool) {
    let (r, back) = match kind {
        0 => {
            let r = x as i32 as f32;
            (r, r as i128 == x as i32 as i128)
        }
        1 => {
            let r = x as u32 as f32;
            (r, r as i128 == x as u32 as i128)
        }
        2 => {
            let r = x as i64 as f32;
            (r, r as i128 == x as i64 as i128)
        }
        _ => {
            let r = x as f32;
            (r, r as i128 == x as i128)
        }
    };
    (r.to_bits(), back)
}

/// FCVT.D.{W,WU,L,LU} of `x` on the host: the 32-bit forms are always exact (any rounding
/// mode), the 64-bit ones are rounded to nearest, ties to even, by `as`.
#[inline(always)]
pub(crate) fn host_i2f_d(x: u64, kind: usize) -> (u64, bool) {
    let (r, back) = match kind {
        0 => (x as i32 as f64, true),
        1 => (x as u32 as f64, true),
        2 => {
            let r = x as i64 as f64;
            (r, r as i128 == x as i64 as i128)
        }
        _ => {
            let r = x as f64;
            (r, r as i128 == x as i128)
        }
    };
    (r.to_bits(), back)
}

/// Runs SoftFloat code under rounding mode `rm` and returns its result with the exception flags
/// it raised.
#[inline(always)]
fn soft<T>(rm: u8, op: impl FnOnce() -> T) -> (T, u8) {
    let (last_rm, flags_set) = SF_STATE.with(|c| c.get());
    // SAFETY: the helpers only access SoftFloat's thread-local rounding mode and flags, which no
    // other code of this thread touches while `op` runs.
    unsafe {
        if last_rm != rm {
            sf::softfloat_roundingMode_write_helper(rm);
        }
        if flags_set {
            sf::softfloat_exceptionFlags_write_helper(0);
        }
    }
    let r = op();
    // SAFETY: as above.
    let flags = unsafe { sf::softfloat_exceptionFlags_read_helper() };
    SF_STATE.with(|c| c.set((rm, flags != 0)));
    (r, flags)
}

#[inline(always)]
fn f32v(v: u32) -> sf::float32_t {
    sf::float32_t { v }
}

#[inline(always)]
fn f64v(v: u64) -> sf::float64_t {
    sf::float64_t { v }
}

/// A SoftFloat binary32 operation of two operands.
type Op2S = unsafe extern "C" fn(sf::float32_t, sf::float32_t) -> sf::float32_t;
/// A SoftFloat binary64 operation of two operands.
type Op2D = unsafe extern "C" fn(sf::float64_t, sf::float64_t) -> sf::float64_t;

#[cold]
fn illegal(raw: u32) -> Trap {
    Trap::IllegalInstruction(raw as u64)
}

/// The 16-bit encoding of a compressed FP load/store (C.FLD, C.FSD, C.FLDSP, C.FSDSP) from the
/// 32-bit FLD/FSD that [`crate::decode`] expanded it to.
///
/// The expansion is one-to-one: the SP-relative forms are exactly those with `rs1` = x2, which the
/// other forms (`rs1'` in x8..x15) cannot name, and every offset field maps back bit for bit.
pub fn compressed_bits(raw: u32) -> u32 {
    let rs1 = (raw >> 15) & 31;
    let (offset, reg, funct3) = if raw & 0x7f == 0x07 {
        (raw >> 20, (raw >> 7) & 31, 0b001) // FLD: rd
    } else {
        (
            ((raw >> 25) << 5) | ((raw >> 7) & 31),
            (raw >> 20) & 31,
            0b101,
        ) // FSD: rs2
    };
    let bit = |hi: u32, lo: u32| (offset >> lo) & ((1 << (hi - lo + 1)) - 1);
    let fields = match (rs1 == 2, funct3) {
        // C.FLDSP: imm[5] | rd | imm[4:3] | imm[8:6]
        (true, 0b001) => {
            (bit(5, 5) << 12) | (reg << 7) | (bit(4, 3) << 5) | (bit(8, 6) << 2) | 0b10
        }
        // C.FSDSP: imm[5:3] | imm[8:6] | rs2
        (true, _) => (bit(5, 3) << 10) | (bit(8, 6) << 7) | (reg << 2) | 0b10,
        // C.FLD / C.FSD: imm[5:3] | rs1' | imm[7:6] | rd'/rs2'
        (false, _) => (bit(5, 3) << 10) | ((rs1 & 7) << 7) | (bit(7, 6) << 5) | ((reg & 7) << 2),
    };
    (funct3 << 13) | fields
}

/// Fixes up a trap raised by `Hart::exec_fp` for an instruction of length `len`: an illegal
/// compressed instruction must report its own 16 bits in `xtval`, not those of its expansion.
#[cold]
pub fn trap_for_len(trap: Trap, raw: u32, len: u8) -> Trap {
    match trap {
        Trap::IllegalInstruction(_) if len == 2 => {
            Trap::IllegalInstruction(compressed_bits(raw) as u64)
        }
        t => t,
    }
}

/// The [`HostOp`] of FADD, FSUB, FMUL, FDIV (.S: funct7 0x00, 0x04, 0x08, 0x0c; .D: 0x01, 0x05,
/// 0x09, 0x0d).
#[inline(always)]
pub(crate) fn fop_d_kind(raw: u32) -> HostOp {
    match (raw >> 27) & 3 {
        0 => HostOp::Add,
        1 => HostOp::Sub,
        2 => HostOp::Mul,
        _ => HostOp::Div,
    }
}

impl Hart {
    /// The general path of a specialized F/D instruction (see `decode::specialize_fp`), when its
    /// inline fast path does not apply: [`Hart::exec_fp`], the trap fixed up for compressed
    /// forms, and the pc advanced.
    #[cold]
    #[inline(never)]
    pub(crate) fn exec_fp_fallback<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        raw: u32,
        len: u8,
    ) -> Result<(), Trap> {
        self.exec_fp(ram, bus, raw)
            .map_err(|t| trap_for_len(t, raw, len))?;
        self.pc = self.pc.wrapping_add(len as u64);
        Ok(())
    }

    /// Whether the dynamic or static rounding mode of `raw` is round-to-nearest-even, with the FPU
    /// on: the condition of every inline fast path.
    #[inline(always)]
    pub(crate) fn fp_rne_on(&self, raw: u32) -> bool {
        let rm = (raw >> 12) & 7;
        self.fp_enabled() && (rm == 0 || (rm == 7 && self.frm == 0))
    }

    /// Executes the F or D instruction `raw` (a 32-bit encoding; compressed forms arrive
    /// expanded). The caller advances pc on `Ok`.
    ///
    /// Raises an illegal-instruction exception when `mstatus.FS` is Off, on reserved encodings and
    /// on invalid rounding modes (rm 5 or 6, or rm 7 with `frm` ≥ 5).
    pub(crate) fn exec_fp<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        raw: u32,
    ) -> Result<(), Trap> {
        if !self.fp_enabled() {
            return Err(illegal(raw));
        }
        let rd = ((raw >> 7) & 31) as usize;
        let rs1 = ((raw >> 15) & 31) as usize;
        let rs2 = ((raw >> 20) & 31) as usize;
        let f3 = (raw >> 12) & 7;
        match raw & 0x7f {
            // FLW, FLD
            0x07 => {
                let addr = self.x[rs1].wrapping_add(((raw as i32) >> 20) as i64 as u64);
                self.f[rd] = match f3 {
                    2 => BOX | self.load::<B, 4>(ram, bus, addr)?,
                    3 => self.load::<B, 8>(ram, bus, addr)?,
                    _ => return Err(illegal(raw)),
                };
                self.set_fs_dirty();
                Ok(())
            }
            // FSW, FSD
            0x27 => {
                let imm = (((raw as i32) >> 25) << 5) | ((raw >> 7) & 31) as i32;
                let addr = self.x[rs1].wrapping_add(imm as i64 as u64);
                match f3 {
                    2 => self.store::<B, 4>(ram, bus, addr, self.f[rs2] & 0xffff_ffff),
                    3 => self.store::<B, 8>(ram, bus, addr, self.f[rs2]),
                    _ => Err(illegal(raw)),
                }
            }
            0x43 | 0x47 | 0x4b | 0x4f => self.fp_fma(raw, rd, rs1, rs2),
            0x53 => self.fp_op(raw, rd, rs1, rs2, f3),
            _ => Err(illegal(raw)),
        }
    }

    /// The rounding mode of `raw`: its rm field, or `frm` for the dynamic mode 7.
    #[inline(always)]
    fn fp_rm(&self, raw: u32) -> Result<u8, Trap> {
        let rm = ((raw >> 12) & 7) as u8;
        let rm = if rm == 7 { self.frm } else { rm };
        if rm >= 5 {
            Err(illegal(raw))
        } else {
            Ok(rm)
        }
    }

    /// Single-precision operand `r`: the canonical NaN unless properly NaN-boxed.
    #[inline(always)]
    fn fs(&self, r: usize) -> u32 {
        let v = self.f[r];
        if v & BOX == BOX {
            v as u32
        } else {
            S.canon as u32
        }
    }

    /// Writes single-precision result `v` (NaN-boxed) to `f[rd]` and accrues `flags`.
    #[inline(always)]
    fn set_fs(&mut self, rd: usize, v: u32, flags: u8) {
        self.f[rd] = BOX | v as u64;
        self.fflags |= flags;
        self.set_fs_dirty();
    }

    /// Writes double-precision result `v` to `f[rd]` and accrues `flags`.
    #[inline(always)]
    fn set_fd(&mut self, rd: usize, v: u64, flags: u8) {
        self.f[rd] = v;
        self.fflags |= flags;
        self.set_fs_dirty();
    }

    /// Writes integer result `v` to `x[rd]` and accrues `flags`.
    #[inline(always)]
    fn set_x_flags(&mut self, rd: usize, v: u64, flags: u8) {
        self.set_x(rd, v);
        if flags != 0 {
            self.fflags |= flags;
            self.set_fs_dirty();
        }
    }

    #[inline(always)]
    fn op2_s(&mut self, raw: u32, rd: usize, rs1: usize, rs2: usize, op: Op2S) -> Result<(), Trap> {
        let rm = self.fp_rm(raw)?;
        let (a, b) = (f32v(self.fs(rs1)), f32v(self.fs(rs2)));
        // SAFETY: SoftFloat arithmetic is a pure function of its arguments and thread-local state.
        let (r, flags) = soft(rm, || unsafe { op(a, b) });
        self.set_fs(rd, r.v, flags);
        Ok(())
    }

    #[inline(always)]
    fn op2_d(&mut self, raw: u32, rd: usize, rs1: usize, rs2: usize, op: Op2D) -> Result<(), Trap> {
        let rm = self.fp_rm(raw)?;
        let (a, b) = (f64v(self.f[rs1]), f64v(self.f[rs2]));
        // SAFETY: SoftFloat arithmetic is a pure function of its arguments and thread-local state.
        let (r, flags) = soft(rm, || unsafe { op(a, b) });
        self.set_fd(rd, r.v, flags);
        Ok(())
    }

    /// A binary32 add/sub/mul/div: on the host FPU when [`host_s`] can prove the result and
    /// flags equal SoftFloat's, else through SoftFloat.
    #[inline(always)]
    fn op2_s_host(
        &mut self,
        raw: u32,
        rd: usize,
        rs1: usize,
        rs2: usize,
        kind: HostOp,
        op: Op2S,
    ) -> Result<(), Trap> {
        let rm = self.fp_rm(raw)?;
        if rm == 0 {
            if let Some((r, flags)) = host_s(kind, self.fs(rs1), self.fs(rs2)) {
                self.set_fs(rd, r, flags);
                return Ok(());
            }
        }
        self.op2_s(raw, rd, rs1, rs2, op)
    }

    /// A binary64 add/sub/mul/div: on the host FPU when [`host_d`] can prove the result and
    /// flags equal SoftFloat's, else through SoftFloat.
    #[inline(always)]
    fn op2_d_host(
        &mut self,
        raw: u32,
        rd: usize,
        rs1: usize,
        rs2: usize,
        kind: HostOp,
        op: Op2D,
    ) -> Result<(), Trap> {
        let rm = self.fp_rm(raw)?;
        if rm == 0 {
            if let Some((r, flags)) = host_d(kind, self.f[rs1], self.f[rs2]) {
                self.set_fd(rd, r, flags);
                return Ok(());
            }
        }
        self.op2_d(raw, rd, rs1, rs2, op)
    }

    /// FMADD, FMSUB, FNMSUB, FNMADD (.S and .D): one rounding. The negations are sign flips of
    /// the operands, exact and harmless to NaNs (any NaN result is canonical).
    fn fp_fma(&mut self, raw: u32, rd: usize, rs1: usize, rs2: usize) -> Result<(), Trap> {
        let rs3 = (raw >> 27) as usize;
        let opcode = raw & 0x7f;
        let neg_product = opcode == 0x4b || opcode == 0x4f;
        let neg_addend = opcode == 0x47 || opcode == 0x4f;
        match (raw >> 25) & 3 {
            0 => {
                let rm = self.fp_rm(raw)?;
                let a = f32v(self.fs(rs1) ^ ((neg_product as u32) << 31));
                let b = f32v(self.fs(rs2));
                let c = f32v(self.fs(rs3) ^ ((neg_addend as u32) << 31));
                if rm == 0 {
                    if let Some((r, flags)) = host_fma_s(a.v, b.v, c.v) {
                        self.set_fs(rd, r, flags);
                        return Ok(());
                    }
                }
                // SAFETY: SoftFloat arithmetic is a pure function of its arguments.
                let (r, flags) = soft(rm, || unsafe { sf::f32_mulAdd(a, b, c) });
                self.set_fs(rd, r.v, flags);
            }
            1 => {
                let rm = self.fp_rm(raw)?;
                let a = f64v(self.f[rs1] ^ ((neg_product as u64) << 63));
                let b = f64v(self.f[rs2]);
                let c = f64v(self.f[rs3] ^ ((neg_addend as u64) << 63));
                if rm == 0 {
                    if let Some((r, flags)) = host_fma_d(a.v, b.v, c.v) {
                        self.set_fd(rd, r, flags);
                        return Ok(());
                    }
                }
                // SAFETY: SoftFloat arithmetic is a pure function of its arguments.
                let (r, flags) = soft(rm, || unsafe { sf::f64_mulAdd(a, b, c) });
                self.set_fd(rd, r.v, flags);
            }
            _ => return Err(illegal(raw)),
        }
        Ok(())
    }

    /// The OP-FP major opcode.
    fn fp_op(&mut self, raw: u32, rd: usize, rs1: usize, rs2: usize, f3: u32) -> Result<(), Trap> {
        match raw >> 25 {
            0x00 => self.op2_s_host(raw, rd, rs1, rs2, HostOp::Add, sf::f32_add),
            0x01 => self.op2_d_host(raw, rd, rs1, rs2, HostOp::Add, sf::f64_add),
            0x04 => self.op2_s_host(raw, rd, rs1, rs2, HostOp::Sub, sf::f32_sub),
            0x05 => self.op2_d_host(raw, rd, rs1, rs2, HostOp::Sub, sf::f64_sub),
            0x08 => self.op2_s_host(raw, rd, rs1, rs2, HostOp::Mul, sf::f32_mul),
            0x09 => self.op2_d_host(raw, rd, rs1, rs2, HostOp::Mul, sf::f64_mul),
            0x0c => self.op2_s_host(raw, rd, rs1, rs2, HostOp::Div, sf::f32_div),
            0x0d => self.op2_d_host(raw, rd, rs1, rs2, HostOp::Div, sf::f64_div),
            // FSQRT.S
            0x2c if rs2 == 0 => {
                let rm = self.fp_rm(raw)?;
                let a = f32v(self.fs(rs1));
                if rm == 0 {
                    if let Some((r, flags)) = host_sqrt_s(a.v) {
                        self.set_fs(rd, r, flags);
                        return Ok(());
                    }
                }
                // SAFETY: SoftFloat arithmetic is a pure function of its arguments.
                let (r, flags) = soft(rm, || unsafe { sf::f32_sqrt(a) });
                self.set_fs(rd, r.v, flags);
                Ok(())
            }
            // FSQRT.D
            0x2d if rs2 == 0 => {
                let rm = self.fp_rm(raw)?;
                let a = f64v(self.f[rs1]);
                if rm == 0 {
                    if let Some((r, flags)) = host_sqrt_d(a.v) {
                        self.set_fd(rd, r, flags);
                        return Ok(());
                    }
                }
                // SAFETY: SoftFloat arithmetic is a pure function of its arguments.
                let (r, flags) = soft(rm, || unsafe { sf::f64_sqrt(a) });
                self.set_fd(rd, r.v, flags);
                Ok(())
            }
            // FSGNJ.S, FSGNJN.S, FSGNJX.S
            0x10 => {
                let r = S
                    .sign_inject(self.fs(rs1) as u64, self.fs(rs2) as u64, f3)
                    .ok_or_else(|| illegal(raw))?;
                self.set_fs(rd, r as u32, 0);
                Ok(())
            }
            // FSGNJ.D, FSGNJN.D, FSGNJX.D
            0x11 => {
                let r = D
                    .sign_inject(self.f[rs1], self.f[rs2], f3)
                    .ok_or_else(|| illegal(raw))?;
                self.set_fd(rd, r, 0);
                Ok(())
            }
            // FMIN.S, FMAX.S
            0x14 if f3 < 2 => {
                let (r, flags) = S.min_max(self.fs(rs1) as u64, self.fs(rs2) as u64, f3 == 1);
                self.set_fs(rd, r as u32, flags);
                Ok(())
            }
            // FMIN.D, FMAX.D
            0x15 if f3 < 2 => {
                let (r, flags) = D.min_max(self.f[rs1], self.f[rs2], f3 == 1);
                self.set_fd(rd, r, flags);
                Ok(())
            }
            // FCVT.S.D
            0x20 if rs2 == 1 => {
                let rm = self.fp_rm(raw)?;
                let a = f64v(self.f[rs1]);
                // SAFETY: SoftFloat conversions are pure functions of their arguments.
                let (r, flags) = soft(rm, || unsafe { sf::f64_to_f32(a) });
                self.set_fs(rd, r.v, flags);
                Ok(())
            }
            // FCVT.D.S
            0x21 if rs2 == 0 => {
                let rm = self.fp_rm(raw)?;
                let a = f32v(self.fs(rs1));
                // SAFETY: SoftFloat conversions are pure functions of their arguments.
                let (r, flags) = soft(rm, || unsafe { sf::f32_to_f64(a) });
                self.set_fd(rd, r.v, flags);
                Ok(())
            }
            // FLE.S, FLT.S, FEQ.S
            0x50 => {
                let (r, flags) = S
                    .compare(self.fs(rs1) as u64, self.fs(rs2) as u64, f3)
                    .ok_or_else(|| illegal(raw))?;
                self.set_x_flags(rd, r as u64, flags);
                Ok(())
            }
            // FLE.D, FLT.D, FEQ.D
            0x51 => {
                let (r, flags) = D
                    .compare(self.f[rs1], self.f[rs2], f3)
                    .ok_or_else(|| illegal(raw))?;
                self.set_x_flags(rd, r as u64, flags);
                Ok(())
            }
            // FCVT.W.S, FCVT.WU.S, FCVT.L.S, FCVT.LU.S
            0x60 if rs2 < 4 => {
                let rm = self.fp_rm(raw)?;
                let a = f32v(self.fs(rs1));
                if let Some((r, flags)) = host_f2i(f32::from_bits(a.v) as f64, rm, rs2) {
                    self.set_x_flags(rd, r, flags);
                    return Ok(());
                }
                // SAFETY: SoftFloat conversions are pure functions of their arguments.
                let (r, flags) = soft(rm, || unsafe {
                    match rs2 {
                        0 => sf::f32_to_i32(a, rm, true) as i32 as u64,
                        1 => sf::f32_to_ui32(a, rm, true) as u32 as i32 as u64,
                        2 => sf::f32_to_i64(a, rm, true) as u64,
                        _ => sf::f32_to_ui64(a, rm, true) as u64,
                    }
                });
                self.set_x_flags(rd, r, flags);
                Ok(())
            }
            // FCVT.W.D, FCVT.WU.D, FCVT.L.D, FCVT.LU.D
            0x61 if rs2 < 4 => {
                let rm = self.fp_rm(raw)?;
                let a = f64v(self.f[rs1]);
                if let Some((r, flags)) = host_f2i(f64::from_bits(a.v), rm, rs2) {
                    self.set_x_flags(rd, r, flags);
                    return Ok(());
                }
                // SAFETY: SoftFloat conversions are pure functions of their arguments.
                let (r, flags) = soft(rm, || unsafe {
                    match rs2 {
                        0 => sf::f64_to_i32(a, rm, true) as i32 as u64,
                        1 => sf::f64_to_ui32(a, rm, true) as u32 as i32 as u64,
                        2 => sf::f64_to_i64(a, rm, true) as u64,
                        _ => sf::f64_to_ui64(a, rm, true) as u64,
                    }
                });
                self.set_x_flags(rd, r, flags);
                Ok(())
            }
            // FCVT.S.W, FCVT.S.WU, FCVT.S.L, FCVT.S.LU
            0x68 if rs2 < 4 => {
                let rm = self.fp_rm(raw)?;
                let x = self.x[rs1];
                if rm == 0 {
                    let (r, exact) = host_i2f_s(x, rs2);
                    self.set_fs(rd, r, if exact { 0 } else { NX });
                    return Ok(());
                }
                // SAFETY: SoftFloat conversions are pure functions of their arguments.
                let (r, flags) = soft(rm, || unsafe {
                    match rs2 {
                        0 => sf::i32_to_f32(x as i32),
                        1 => sf::ui32_to_f32(x as u32),
                        2 => sf::i64_to_f32(x as i64),
                        _ => sf::ui64_to_f32(x),
                    }
                });
                self.set_fs(rd, r.v, flags);
                Ok(())
            }
            // FCVT.D.W, FCVT.D.WU, FCVT.D.L, FCVT.D.LU
            0x69 if rs2 < 4 => {
                let rm = self.fp_rm(raw)?;
                let x = self.x[rs1];
                if rm == 0 || rs2 < 2 {
                    let (r, exact) = host_i2f_d(x, rs2);
                    self.set_fd(rd, r, if exact { 0 } else { NX });
                    return Ok(());
                }
                // SAFETY: SoftFloat conversions are pure functions of their arguments.
                let (r, flags) = soft(rm, || unsafe {
                    match rs2 {
                        0 => sf::i32_to_f64(x as i32),
                        1 => sf::ui32_to_f64(x as u32),
                        2 => sf::i64_to_f64(x as i64),
                        _ => sf::ui64_to_f64(x),
                    }
                });
                self.set_fd(rd, r.v, flags);
                Ok(())
            }
            // FMV.X.W (raw bits, sign-extended), FCLASS.S
            0x70 if rs2 == 0 && f3 == 0 => {
                self.set_x(rd, self.f[rs1] as u32 as i32 as u64);
                Ok(())
            }
            0x70 if rs2 == 0 && f3 == 1 => {
                self.set_x(rd, S.classify(self.fs(rs1) as u64));
                Ok(())
            }
            // FMV.X.D, FCLASS.D
            0x71 if rs2 == 0 && f3 == 0 => {
                self.set_x(rd, self.f[rs1]);
                Ok(())
            }
            0x71 if rs2 == 0 && f3 == 1 => {
                self.set_x(rd, D.classify(self.f[rs1]));
                Ok(())
            }
            // FMV.W.X
            0x78 if rs2 == 0 && f3 == 0 => {
                self.set_fs(rd, self.x[rs1] as u32, 0);
                Ok(())
            }
            // FMV.D.X
            0x79 if rs2 == 0 && f3 == 0 => {
                self.set_fd(rd, self.x[rs1], 0);
                Ok(())
            }
            _ => Err(illegal(raw)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::NoDevices;
    use crate::csr::mstatus;

    const RAM_BASE: u64 = 0x8000_0000;
    const ONE_S: u64 = BOX | 0x3f80_0000;
    const ONE_D: u64 = 0x3ff0_0000_0000_0000;
    const SNAN_S: u64 = BOX | 0x7f80_0001;
    const QNAN_S: u64 = BOX | 0x7fc0_0001;

    /// An R-type encoding.
    fn r(funct7: u32, rs2: u32, rs1: u32, f3: u32, rd: u32, opcode: u32) -> u32 {
        (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | opcode
    }

    /// An R4-type (fused multiply-add) encoding.
    fn r4(rs3: u32, fmt: u32, rs2: u32, rs1: u32, rm: u32, rd: u32, opcode: u32) -> u32 {
        (rs3 << 27) | (fmt << 25) | (rs2 << 20) | (rs1 << 15) | (rm << 12) | (rd << 7) | opcode
    }

    struct Machine {
        hart: Hart,
        ram: Ram,
    }

    impl Machine {
        fn new() -> Machine {
            let mut hart = Hart::new(0);
            hart.csr.mstatus |= 1 << mstatus::FS_SHIFT; // Initial
            Machine {
                hart,
                ram: Ram::new(RAM_BASE, 4096 * 4),
            }
        }

        fn exec(&mut self, raw: u32) -> Result<(), Trap> {
            self.hart.exec_fp(&mut self.ram, &mut NoDevices, raw)
        }

        fn run(&mut self, raw: u32) {
            self.exec(raw).expect("instruction traps");
        }

        /// Returns and clears fflags.
        fn flags(&mut self) -> u8 {
            std::mem::take(&mut self.hart.fflags)
        }
    }

    #[test]
    fn fs_off_is_illegal_and_writes_make_fs_dirty() {
        let mut m = Machine::new();
        m.hart.csr.mstatus &= !mstatus::FS;
        let fadd_s = r(0x00, 2, 1, 0, 3, 0x53);
        assert_eq!(m.exec(fadd_s), Err(Trap::IllegalInstruction(fadd_s as u64)));
        m.hart.csr.mstatus |= 1 << mstatus::FS_SHIFT;
        m.run(fadd_s);
        assert_eq!(m.hart.csr.mstatus & mstatus::FS, mstatus::FS);
    }

    #[test]
    fn reserved_rounding_modes_are_illegal() {
        let mut m = Machine::new();
        for rm in [5, 6] {
            let raw = r(0x01, 2, 1, rm, 3, 0x53);
            assert_eq!(m.exec(raw), Err(Trap::IllegalInstruction(raw as u64)));
        }
        let dynamic = r(0x01, 2, 1, 7, 3, 0x53);
        m.hart.frm = 5;
        assert!(m.exec(dynamic).is_err());
        m.hart.frm = 4;
        m.run(dynamic);
        // Sign injection has no rounding mode: f3 = 3 is simply reserved.
        assert!(m.exec(r(0x10, 2, 1, 3, 3, 0x53)).is_err());
        // FMA with fmt = H or Q.
        assert!(m.exec(r4(4, 2, 2, 1, 0, 3, 0x43)).is_err());
    }

    #[test]
    fn improperly_boxed_single_reads_as_canonical_nan() {
        let mut m = Machine::new();
        m.hart.f[1] = 0x3f80_0000; // 1.0f without its box
        m.hart.f[2] = ONE_S;
        m.run(r(0x00, 2, 1, 0, 3, 0x53)); // fadd.s f3, f1, f2
        assert_eq!(m.hart.f[3], BOX | 0x7fc0_0000);
        assert_eq!(m.flags(), 0);
        // FMV.X.W and FSW move the raw bits, unchecked.
        m.hart.f[1] = 0x1234_5678_8000_0000;
        m.run(r(0x70, 0, 1, 0, 5, 0x53));
        assert_eq!(m.hart.x[5], 0xffff_ffff_8000_0000);
        // FCLASS.S sees the canonical NaN (quiet).
        m.run(r(0x70, 0, 1, 1, 5, 0x53));
        assert_eq!(m.hart.x[5], 1 << 9);
    }

    #[test]
    fn nan_results_are_canonical() {
        let mut m = Machine::new();
        m.hart.f[1] = 0xfff0_0000_0000_0001; // negative signalling NaN
        m.hart.f[2] = ONE_D;
        m.run(r(0x09, 2, 1, 0, 3, 0x53)); // fmul.d
        assert_eq!(m.hart.f[3], D.canon);
        assert_eq!(m.flags(), NV);
        m.run(r(0x20, 1, 1, 0, 3, 0x53)); // fcvt.s.d
        assert_eq!(m.hart.f[3], BOX | 0x7fc0_0000);
        assert_eq!(m.flags(), NV);
    }

    #[test]
    fn min_max_zeros_and_nans() {
        let mut m = Machine::new();
        m.hart.f[1] = BOX | 0x8000_0000; // -0
        m.hart.f[2] = BOX; // +0
        m.run(r(0x14, 2, 1, 0, 3, 0x53));
        assert_eq!(m.hart.f[3], BOX | 0x8000_0000);
        m.run(r(0x14, 1, 2, 1, 3, 0x53));
        assert_eq!(m.hart.f[3], BOX);
        assert_eq!(m.flags(), 0);
        // One signalling NaN: the number, and NV.
        m.hart.f[1] = SNAN_S;
        m.hart.f[2] = ONE_S;
        m.run(r(0x14, 2, 1, 0, 3, 0x53));
        assert_eq!((m.hart.f[3], m.flags()), (ONE_S, NV));
        // One quiet NaN: the number, no flag.
        m.hart.f[1] = QNAN_S;
        m.run(r(0x14, 2, 1, 1, 3, 0x53));
        assert_eq!((m.hart.f[3], m.flags()), (ONE_S, 0));
        // Two NaNs: the canonical NaN.
        m.hart.f[2] = SNAN_S;
        m.run(r(0x14, 2, 1, 1, 3, 0x53));
        assert_eq!((m.hart.f[3], m.flags()), (BOX | 0x7fc0_0000, NV));
        // Doubles: -1 < 1.
        m.hart.f[1] = ONE_D | D.sign;
        m.hart.f[2] = ONE_D;
        m.run(r(0x15, 2, 1, 0, 3, 0x53));
        assert_eq!(m.hart.f[3], ONE_D | D.sign);
        m.run(r(0x15, 2, 1, 1, 3, 0x53));
        assert_eq!(m.hart.f[3], ONE_D);
    }

    #[test]
    fn comparisons_quiet_and_signalling() {
        let mut m = Machine::new();
        m.hart.f[1] = QNAN_S;
        m.hart.f[2] = ONE_S;
        m.run(r(0x50, 2, 1, 2, 5, 0x53)); // feq.s
        assert_eq!((m.hart.x[5], m.flags()), (0, 0));
        m.run(r(0x50, 2, 1, 1, 5, 0x53)); // flt.s
        assert_eq!((m.hart.x[5], m.flags()), (0, NV));
        m.run(r(0x50, 2, 1, 0, 5, 0x53)); // fle.s
        assert_eq!((m.hart.x[5], m.flags()), (0, NV));
        m.hart.f[1] = SNAN_S;
        m.run(r(0x50, 2, 1, 2, 5, 0x53));
        assert_eq!((m.hart.x[5], m.flags()), (0, NV));
        // -0 == +0, not less, less-or-equal.
        m.hart.f[1] = 1 << 63;
        m.hart.f[2] = 0;
        m.run(r(0x51, 2, 1, 2, 5, 0x53));
        assert_eq!(m.hart.x[5], 1);
        m.run(r(0x51, 2, 1, 1, 5, 0x53));
        assert_eq!(m.hart.x[5], 0);
        m.run(r(0x51, 2, 1, 0, 5, 0x53));
        assert_eq!(m.hart.x[5], 1);
        // -2 < -1
        m.hart.f[1] = 0xc000_0000_0000_0000;
        m.hart.f[2] = ONE_D | D.sign;
        m.run(r(0x51, 2, 1, 1, 5, 0x53));
        assert_eq!((m.hart.x[5], m.flags()), (1, 0));
        m.run(r(0x51, 1, 2, 1, 5, 0x53));
        assert_eq!(m.hart.x[5], 0);
    }

    #[test]
    fn float_to_int_limits() {
        let mut m = Machine::new();
        let cvt = |funct7: u32, kind: u32, rm: u32| r(funct7, kind, 1, rm, 5, 0x53);
        // NaN → largest positive.
        m.hart.f[1] = QNAN_S;
        m.run(cvt(0x60, 0, 0));
        assert_eq!((m.hart.x[5], m.flags()), (0x7fff_ffff, NV));
        m.run(cvt(0x60, 1, 0));
        assert_eq!((m.hart.x[5], m.flags()), (u64::MAX, NV));
        m.run(cvt(0x60, 2, 0));
        assert_eq!((m.hart.x[5], m.flags()), (i64::MAX as u64, NV));
        // -1.0 → WU: 0 and NV; -0.5 → WU under RTZ: 0 and only NX.
        m.hart.f[1] = 0xbff0_0000_0000_0000;
        m.run(cvt(0x61, 1, 1));
        assert_eq!((m.hart.x[5], m.flags()), (0, NV));
        m.hart.f[1] = 0xbfe0_0000_0000_0000;
        m.run(cvt(0x61, 1, 1));
        assert_eq!((m.hart.x[5], m.flags()), (0, NX));
        // 3e9 → WU fits and is sign-extended; → W saturates.
        m.hart.f[1] = 3e9f64.to_bits();
        m.run(cvt(0x61, 1, 0));
        assert_eq!(
            (m.hart.x[5], m.flags()),
            (3_000_000_000u32 as i32 as u64, 0)
        );
        m.run(cvt(0x61, 0, 0));
        assert_eq!((m.hart.x[5], m.flags()), (0x7fff_ffff, NV));
        // -2^63 converts exactly to L; 2^63 saturates.
        m.hart.f[1] = 0xc3e0_0000_0000_0000;
        m.run(cvt(0x61, 2, 0));
        assert_eq!((m.hart.x[5], m.flags()), (1 << 63, 0));
        m.hart.f[1] = 0x43e0_0000_0000_0000;
        m.run(cvt(0x61, 2, 0));
        assert_eq!((m.hart.x[5], m.flags()), (i64::MAX as u64, NV));
        // 2.5 under each rounding mode.
        m.hart.f[1] = 2.5f64.to_bits();
        for (rm, want) in [(0, 2), (1, 2), (2, 2), (3, 3), (4, 3)] {
            m.run(cvt(0x61, 0, rm));
            assert_eq!((m.hart.x[5], m.flags()), (want, NX), "rm {rm}");
        }
        m.hart.f[1] = (-2.5f64).to_bits();
        for (rm, want) in [(0, -2i64), (1, -2), (2, -3), (3, -2), (4, -3)] {
            m.run(cvt(0x61, 2, rm));
            assert_eq!((m.hart.x[5], m.flags()), (want as u64, NX), "rm {rm}");
        }
    }

    #[test]
    fn int_to_float_rounds() {
        let mut m = Machine::new();
        // 2^24 + 1 is not representable in binary32.
        m.hart.x[1] = (1 << 24) + 1;
        m.run(r(0x68, 0, 1, 0, 3, 0x53));
        assert_eq!((m.hart.f[3], m.flags()), (BOX | 0x4b80_0000, NX));
        m.run(r(0x68, 0, 1, 3, 3, 0x53));
        assert_eq!((m.hart.f[3], m.flags()), (BOX | 0x4b80_0001, NX));
        // u64::MAX → D.LU rounds up to 2^64; → D.L is -1.
        m.hart.x[1] = u64::MAX;
        m.run(r(0x69, 3, 1, 0, 3, 0x53));
        assert_eq!((m.hart.f[3], m.flags()), (0x43f0_0000_0000_0000, NX));
        m.run(r(0x69, 2, 1, 0, 3, 0x53));
        assert_eq!((m.hart.f[3], m.flags()), (ONE_D | D.sign, 0));
        // W takes the low 32 bits only.
        m.hart.x[1] = 0x1_0000_0002;
        m.run(r(0x69, 0, 1, 0, 3, 0x53));
        assert_eq!(m.hart.f[3], 2.0f64.to_bits());
    }

    #[test]
    fn fused_multiply_add_rounds_once() {
        let mut m = Machine::new();
        let a = 1.0 + f64::powi(2.0, -30);
        m.hart.f[1] = a.to_bits();
        m.hart.f[2] = a.to_bits();
        m.hart.f[3] = (1.0 + f64::powi(2.0, -29)).to_bits();
        // fmsub.d f4 = f1*f2 - f3 = 2^-60 exactly.
        m.run(r4(3, 1, 2, 1, 0, 4, 0x47));
        assert_eq!((m.hart.f[4], m.flags()), (f64::powi(2.0, -60).to_bits(), 0));
        // fnmadd.d f4 = -(f1*f2) - f3
        m.run(r4(3, 1, 2, 1, 0, 4, 0x4f));
        assert_eq!(m.hart.f[4], (-(2.0 + f64::powi(2.0, -28))).to_bits());
        assert_eq!(m.flags(), NX);
        // fnmsub.d f4 = -(f1*f2) + f3 = -2^-60
        m.run(r4(3, 1, 2, 1, 0, 4, 0x4b));
        assert_eq!(m.hart.f[4], (-f64::powi(2.0, -60)).to_bits());
        // inf * 0 + qNaN is invalid.
        m.hart.f[1] = BOX | 0x7f80_0000;
        m.hart.f[2] = BOX;
        m.hart.f[3] = QNAN_S;
        m.run(r4(3, 0, 2, 1, 0, 4, 0x43));
        assert_eq!((m.hart.f[4], m.flags()), (BOX | 0x7fc0_0000, NV));
    }

    #[test]
    fn loads_stores_and_moves() {
        let mut m = Machine::new();
        m.hart.x[1] = RAM_BASE + 0x100;
        m.hart.f[2] = 0xdead_beef_4049_0fdb; // not boxed: FSW stores the low half anyway
        m.run(r(0, 2, 1, 2, 0, 0x27) | (8 << 7)); // fsw f2, 8(x1)
        m.run(r(0x7f, 2, 1, 3, 0x18, 0x27)); // fsd f2, -8(x1)
        m.run(((8u32) << 20) | (1 << 15) | (2 << 12) | (3 << 7) | 0x07); // flw f3, 8(x1)
        assert_eq!(m.hart.f[3], BOX | 0x4049_0fdb);
        m.run((0xff8u32 << 20) | (1 << 15) | (3 << 12) | (4 << 7) | 0x07); // fld f4, -8(x1)
        assert_eq!(m.hart.f[4], 0xdead_beef_4049_0fdb);
        // fmv.w.x boxes; fmv.d.x / fmv.x.d move 64 bits.
        m.hart.x[5] = 0xffff_ffff_bf80_0000;
        m.run(r(0x78, 0, 5, 0, 6, 0x53));
        assert_eq!(m.hart.f[6], BOX | 0xbf80_0000);
        m.run(r(0x79, 0, 5, 0, 6, 0x53));
        m.run(r(0x71, 0, 6, 0, 7, 0x53));
        assert_eq!(m.hart.x[7], 0xffff_ffff_bf80_0000);
        // fsgnjx.s f8, f9, f10: -1 * sign(-2) = +1; fsgnjn.s f8, f9, f9 = +1; fsgnj.d.
        m.hart.f[9] = BOX | 0xbf80_0000;
        m.hart.f[10] = BOX | 0xc000_0000;
        m.run(r(0x10, 10, 9, 2, 8, 0x53));
        assert_eq!(m.hart.f[8], ONE_S);
        m.run(r(0x10, 9, 9, 1, 8, 0x53));
        assert_eq!(m.hart.f[8], ONE_S);
        m.hart.f[10] = 1 << 63;
        m.run(r(0x11, 10, 6, 0, 8, 0x53));
        assert_eq!(m.hart.f[8], 0xffff_ffff_bf80_0000);
        assert_eq!(m.flags(), 0);
    }

    #[test]
    fn compressed_bits_inverts_the_expansion() {
        use crate::decode::{decode, Op};
        // Every C.FLD, C.FSD (quadrant 0) and C.FLDSP, C.FSDSP (quadrant 2) encoding.
        for (quadrant, funct3) in [(0, 0b001), (0, 0b101), (2, 0b001), (2, 0b101)] {
            for fields in 0..1u32 << 11 {
                let c = (funct3 << 13) | (fields << 2) | quadrant;
                let d = decode(c);
                assert!(matches!(d.op, Op::Fld | Op::Fsd), "{c:#06x}");
                assert_eq!(compressed_bits(d.raw), c, "{c:#06x} -> {:#010x}", d.raw);
            }
        }
        assert_eq!(
            trap_for_len(Trap::IllegalInstruction(0x0081_3507), 0x0081_3507, 2),
            Trap::IllegalInstruction(0x2522)
        );
        assert_eq!(
            trap_for_len(Trap::LoadPageFault(8), 0x0081_3507, 2),
            Trap::LoadPageFault(8)
        );
        assert_eq!(
            trap_for_len(Trap::IllegalInstruction(0x0081_3507), 0x0081_3507, 4),
            Trap::IllegalInstruction(0x0081_3507)
        );
    }

    /// A deterministic xorshift generator of test operands.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// A binary64 with a random sign, an exponent near `bias + e0` (spread `spread`) and a
        /// significand of random width (so that exact results are common too).
        fn d(&mut self, e0: i64, spread: u64) -> u64 {
            let r = self.next();
            let e = (0x3ff + e0 + (r % (2 * spread + 1)) as i64 - spread as i64) as u64 & 0x7ff;
            let width = self.next() % 53;
            let frac = (self.next() & ((1 << 52) - 1)) >> (52 - width) << (52 - width);
            (r >> 63) << 63 | e << 52 | frac
        }

        /// Like `d`, for binary32.
        fn s(&mut self, e0: i64, spread: u64) -> u32 {
            let r = self.next();
            let e = (127 + e0 + (r % (2 * spread + 1)) as i64 - spread as i64) as u32 & 0xff;
            let width = self.next() % 24;
            let frac = (self.next() as u32 & ((1 << 23) - 1)) >> (23 - width) << (23 - width);
            ((r >> 63) as u32) << 31 | e << 23 | frac
        }
    }

    fn soft_d2(op: Op2D, a: u64, b: u64) -> (u64, u8) {
        // SAFETY: SoftFloat arithmetic is a pure function of its arguments and thread state.
        let (r, f) = soft(0, || unsafe { op(f64v(a), f64v(b)) });
        (r.v, f)
    }

    fn soft_s2(op: Op2S, a: u32, b: u32) -> (u32, u8) {
        // SAFETY: as above.
        let (r, f) = soft(0, || unsafe { op(f32v(a), f32v(b)) });
        (r.v, f)
    }

    /// Every host fast path agrees with SoftFloat, bit for bit and flag for flag, on operands
    /// chosen to hit its boundaries: exponents across the accepted ranges and beyond, exact and
    /// inexact results, cancellation (the addend near minus the product), ties.
    #[test]
    fn host_fast_paths_equal_softfloat() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let mut hits = [0u32; 8];
        for i in 0..400_000 {
            // binary64 FMA: spread over the whole accepted operand range and past it.
            let spread = if i % 2 == 0 { 8 } else { 400 };
            let (a, b) = (g.d(0, spread), g.d(0, spread));
            let c = match i % 4 {
                0 => g.d(0, spread),
                // Near minus the product: heavy cancellation, often exact.
                1 | 2 => {
                    let p = -(f64::from_bits(a) * f64::from_bits(b));
                    (p.to_bits() as i64 + (g.next() % 9) as i64 - 4) as u64
                }
                _ => (f64::from_bits(a) * f64::from_bits(b)).to_bits() ^ (g.next() & 0xff),
            };
            if let Some(h) = host_fma_d(a, b, c) {
                hits[0] += 1;
                // SAFETY: SoftFloat arithmetic is a pure function of its arguments.
                let (r, f) = soft(0, || unsafe { sf::f64_mulAdd(f64v(a), f64v(b), f64v(c)) });
                assert_eq!(h, (r.v, f), "fma.d {a:#x} {b:#x} {c:#x}");
            }
            // binary32 FMA.
            let spread = if i % 2 == 0 { 6 } else { 70 };
            let (a, b) = (g.s(0, spread), g.s(0, spread));
            let c = match i % 3 {
                0 => g.s(0, spread),
                _ => {
                    let p = -(f32::from_bits(a) * f32::from_bits(b));
                    (p.to_bits() as i32 + (g.next() % 5) as i32 - 2) as u32
                }
            };
            if let Some(h) = host_fma_s(a, b, c) {
                hits[1] += 1;
                // SAFETY: as above.
                let (r, f) = soft(0, || unsafe { sf::f32_mulAdd(f32v(a), f32v(b), f32v(c)) });
                assert_eq!(h, (r.v, f), "fma.s {a:#x} {b:#x} {c:#x}");
            }
            // binary32 add/sub/mul/div, near and far operands.
            let (a, b) = (g.s(0, spread), g.s(0, if i % 3 == 0 { 2 } else { 70 }));
            let b = if i % 5 == 0 {
                a ^ (g.next() as u32 & 0x8000_000f)
            } else {
                b
            };
            for (kind, op) in [
                (HostOp::Add, sf::f32_add as Op2S),
                (HostOp::Sub, sf::f32_sub),
                (HostOp::Mul, sf::f32_mul),
                (HostOp::Div, sf::f32_div),
            ] {
                if let Some(h) = host_s(kind, a, b) {
                    hits[2] += 1;
                    assert_eq!(h, soft_s2(op, a, b), "{a:#x} {b:#x}");
                }
            }
            // The binary64 basic operations (the older fast path) on the same kind of operands.
            let (a, b) = (g.d(0, 500), g.d(0, if i % 3 == 0 { 2 } else { 500 }));
            for (kind, op) in [
                (HostOp::Add, sf::f64_add as Op2D),
                (HostOp::Sub, sf::f64_sub),
                (HostOp::Mul, sf::f64_mul),
                (HostOp::Div, sf::f64_div),
            ] {
                if let Some(h) = host_d(kind, a, b) {
                    hits[3] += 1;
                    assert_eq!(h, soft_d2(op, a, b), "{a:#x} {b:#x}");
                }
            }
            // Square roots, including perfect squares.
            let a = if i % 2 == 0 {
                g.d(0, 1000) & !(1 << 63)
            } else {
                let r = f64::from_bits(g.d(0, 300) & !(1 << 63) & !0xffff_ffff);
                (r * r).to_bits()
            };
            if let Some(h) = host_sqrt_d(a) {
                hits[4] += 1;
                // SAFETY: as above.
                let (r, f) = soft(0, || unsafe { sf::f64_sqrt(f64v(a)) });
                assert_eq!(h, (r.v, f), "sqrt.d {a:#x}");
            }
            let a = if i % 2 == 0 {
                g.s(0, 130) & !(1 << 31)
            } else {
                let r = f32::from_bits(g.s(0, 30) & !(1 << 31) & !0xfff);
                (r * r).to_bits()
            };
            if let Some(h) = host_sqrt_s(a) {
                hits[5] += 1;
                // SAFETY: as above.
                let (r, f) = soft(0, || unsafe { sf::f32_sqrt(f32v(a)) });
                assert_eq!(h, (r.v, f), "sqrt.s {a:#x}");
            }
            // Float to integer, RNE and RTZ, all four widths, around every limit.
            let e0 = (g.next() % 66) as i64 - 2;
            let v = g.d(e0, 2);
            let v = if i % 7 == 0 { v & !0xf_ffff_ffff } else { v };
            let v = match i % 11 {
                // Halfway cases and the values just below the 32-bit limits.
                0 => (f64::from_bits(v).trunc() + 0.5).to_bits(),
                1 => [
                    0x41df_ffff_ffe0_0000,
                    0x41df_ffff_ffc0_0000,
                    0x41ef_ffff_fff0_0000,
                ][i % 3],
                _ => v,
            };
            let x = f64v(v);
            for rm in [0u8, 1] {
                for kind in 0..4 {
                    if let Some(h) = host_f2i(f64::from_bits(v), rm, kind) {
                        hits[6] += 1;
                        // SAFETY: SoftFloat conversions are pure functions of their arguments.
                        let want = soft(rm, || unsafe {
                            match kind {
                                0 => sf::f64_to_i32(x, rm, true) as i32 as u64,
                                1 => sf::f64_to_ui32(x, rm, true) as u32 as i32 as u64,
                                2 => sf::f64_to_i64(x, rm, true) as u64,
                                _ => sf::f64_to_ui64(x, rm, true) as u64,
                            }
                        });
                        assert_eq!(h, want, "f2i {v:#x} rm {rm} kind {kind}");
                    }
                }
            }
            // Integer to float.
            let x = g.next() >> (g.next() % 64);
            let x = if i % 2 == 0 { x.wrapping_neg() } else { x };
            for kind in 0..4 {
                hits[7] += 1;
                let (r, exact) = host_i2f_s(x, kind);
                // SAFETY: as above.
                let want = soft(0, || unsafe {
                    match kind {
                        0 => sf::i32_to_f32(x as i32),
                        1 => sf::ui32_to_f32(x as u32),
                        2 => sf::i64_to_f32(x as i64),
                        _ => sf::ui64_to_f32(x),
                    }
                });
                assert_eq!(
                    (r, if exact { 0 } else { NX }),
                    (want.0.v, want.1),
                    "i2f.s {x:#x}"
                );
                let (r, exact) = host_i2f_d(x, kind);
                // SAFETY: as above.
                let want = soft(0, || unsafe {
                    match kind {
                        0 => sf::i32_to_f64(x as i32),
                        1 => sf::ui32_to_f64(x as u32),
                        2 => sf::i64_to_f64(x as i64),
                        _ => sf::ui64_to_f64(x),
                    }
                });
                assert_eq!(
                    (r, if exact { 0 } else { NX }),
                    (want.0.v, want.1),
                    "i2f.d {x:#x}"
                );
            }
        }
        // Each fast path was actually taken (most of the time, for in-range operands).
        assert!(hits.iter().all(|&h| h > 50_000), "{hits:?}");
    }

    #[test]
    fn classify() {
        let cases: [(u64, u32); 10] = [
            (0xfff0_0000_0000_0000, 0),
            (0xbff0_0000_0000_0000, 1),
            (0x800f_ffff_ffff_ffff, 2),
            (0x8000_0000_0000_0000, 3),
            (0, 4),
            (1, 5),
            (ONE_D, 6),
            (0x7ff0_0000_0000_0000, 7),
            (0x7ff0_0000_0000_0001, 8),
            (0x7ff8_0000_0000_0000, 9),
        ];
        for (v, bit) in cases {
            assert_eq!(D.classify(v), 1 << bit, "{v:#x}");
        }
        assert_eq!(S.classify(0x0040_0000), 1 << 5);
        assert_eq!(S.classify(0xff80_0000), 1);
        assert_eq!(S.classify(0x7fa0_0000), 1 << 8);
    }

    #[test]
    fn overflow_and_underflow_flags() {
        let mut m = Machine::new();
        // 1e300 to single: RNE → +inf, RTZ → largest finite; OF|NX either way.
        m.hart.f[1] = 1e300f64.to_bits();
        m.run(r(0x20, 1, 1, 0, 3, 0x53));
        assert_eq!((m.hart.f[3], m.flags()), (BOX | 0x7f80_0000, OF | NX));
        m.run(r(0x20, 1, 1, 1, 3, 0x53));
        assert_eq!((m.hart.f[3], m.flags()), (BOX | 0x7f7f_ffff, OF | NX));
        // Division by zero.
        m.hart.f[1] = ONE_S;
        m.hart.f[2] = BOX | 0x8000_0000;
        m.run(r(0x0c, 2, 1, 0, 3, 0x53));
        assert_eq!((m.hart.f[3], m.flags()), (BOX | 0xff80_0000, DZ));
        // Tininess after rounding: (1 + 2^-23) 2^-126 * (1 - 2^-23) = (1 - 2^-46) 2^-126 rounds
        // (RNE) to the smallest normal even with an unbounded exponent: not tiny, so no UF.
        m.hart.f[1] = BOX | 0x0080_0001;
        m.hart.f[2] = BOX | 0x3f7f_fffe;
        m.run(r(0x08, 2, 1, 0, 3, 0x53));
        assert_eq!((m.hart.f[3], m.flags()), (BOX | 0x0080_0000, NX));
        m.run(r(0x08, 2, 1, 1, 3, 0x53));
        assert_eq!((m.hart.f[3], m.flags()), (BOX | 0x007f_ffff, UF | NX));
        // sqrt(-1): canonical NaN, NV.
        m.hart.f[1] = ONE_D | D.sign;
        m.run(r(0x2d, 0, 1, 0, 3, 0x53));
        assert_eq!((m.hart.f[3], m.flags()), (D.canon, NV));
    }
}
