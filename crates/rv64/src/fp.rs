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
enum HostOp {
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
fn host_d(kind: HostOp, a: u64, b: u64) -> Option<(u64, u8)> {
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

impl Hart {
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
                // SAFETY: SoftFloat arithmetic is a pure function of its arguments.
                let (r, flags) = soft(rm, || unsafe { sf::f32_mulAdd(a, b, c) });
                self.set_fs(rd, r.v, flags);
            }
            1 => {
                let rm = self.fp_rm(raw)?;
                let a = f64v(self.f[rs1] ^ ((neg_product as u64) << 63));
                let b = f64v(self.f[rs2]);
                let c = f64v(self.f[rs3] ^ ((neg_addend as u64) << 63));
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
            0x00 => self.op2_s(raw, rd, rs1, rs2, sf::f32_add),
            0x01 => self.op2_d_host(raw, rd, rs1, rs2, HostOp::Add, sf::f64_add),
            0x04 => self.op2_s(raw, rd, rs1, rs2, sf::f32_sub),
            0x05 => self.op2_d_host(raw, rd, rs1, rs2, HostOp::Sub, sf::f64_sub),
            0x08 => self.op2_s(raw, rd, rs1, rs2, sf::f32_mul),
            0x09 => self.op2_d_host(raw, rd, rs1, rs2, HostOp::Mul, sf::f64_mul),
            0x0c => self.op2_s(raw, rd, rs1, rs2, sf::f32_div),
            0x0d => self.op2_d_host(raw, rd, rs1, rs2, HostOp::Div, sf::f64_div),
            // FSQRT.S
            0x2c if rs2 == 0 => {
                let rm = self.fp_rm(raw)?;
                let a = f32v(self.fs(rs1));
                // SAFETY: SoftFloat arithmetic is a pure function of its arguments.
                let (r, flags) = soft(rm, || unsafe { sf::f32_sqrt(a) });
                self.set_fs(rd, r.v, flags);
                Ok(())
            }
            // FSQRT.D
            0x2d if rs2 == 0 => {
                let rm = self.fp_rm(raw)?;
                let a = f64v(self.f[rs1]);
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
                assert_eq!(d.op, Op::Fp, "{c:#06x}");
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
