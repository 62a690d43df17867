//! Execution of integer, atomic, CSR and system instructions (floating point: [`crate::fp`]).

use crate::bus::Bus;
use crate::csr::mstatus;
use crate::decode::{Insn, Op};
use crate::hart::{read_le, write_le, Hart, Priv};
use crate::ram::Ram;
use crate::trap::Trap;

#[inline(always)]
fn sx32(v: u64) -> u64 {
    v as i32 as i64 as u64
}

/// The fields of an [`Insn`] that execution uses, copied out of the cache slot.
struct Fields {
    op: Op,
    rd: u8,
    rs1: u8,
    rs2: u8,
    len: u8,
    imm: i32,
}

impl Hart {
    /// Executes one decoded instruction and advances (or redirects) the pc.
    #[inline(always)]
    pub(crate) fn execute<B: Bus>(
        &mut self,
        p: *const Insn,
        ram: &mut Ram,
        bus: &mut B,
    ) -> Result<(), Trap> {
        use Op::*;
        // Fields are read through the pointer one by one (no copy of the whole slot): the slot
        // may be cleared by a store this very instruction makes to its own page.
        // SAFETY: `p` points to a decoded-page slot or to `self.scratch` (see `Hart::run`).
        let d = unsafe {
            Fields {
                op: (*p).op,
                rd: (*p).rd,
                rs1: (*p).rs1,
                rs2: (*p).rs2,
                len: (*p).len,
                imm: (*p).imm,
            }
        };
        // Decoding maps rd = x0 to the sink register 32, so results are stored unconditionally.
        let rd = d.rd as usize;
        // SAFETY: `decode` only produces register numbers below 33, and `x` has 64 slots; this
        // saves masking three indices on every instruction (measured: 3 host instructions).
        let (a, b) = unsafe {
            (
                *self.x.get_unchecked(d.rs1 as usize),
                *self.x.get_unchecked(d.rs2 as usize),
            )
        };
        let imm = d.imm as i64 as u64;
        let pc = self.pc;
        let next = pc.wrapping_add(d.len as u64);
        // The raw bits are only needed by FP instructions: read on demand (fewer live values).
        // SAFETY: as above.
        let raw = || unsafe { (*p).raw };
        let v = match d.op {
            Addi => a.wrapping_add(imm),
            Add => a.wrapping_add(b),
            Lui => imm,
            Auipc => pc.wrapping_add(imm),
            Ld => self.load::<B, 8>(ram, bus, a.wrapping_add(imm))?,
            Sd => {
                self.store::<B, 8>(ram, bus, a.wrapping_add(imm), b)?;
                self.pc = next;
                return Ok(());
            }
            Lw => sx32(self.load::<B, 4>(ram, bus, a.wrapping_add(imm))?),
            Lwu => self.load::<B, 4>(ram, bus, a.wrapping_add(imm))?,
            Lh => self.load::<B, 2>(ram, bus, a.wrapping_add(imm))? as i16 as i64 as u64,
            Lhu => self.load::<B, 2>(ram, bus, a.wrapping_add(imm))?,
            Lb => self.load::<B, 1>(ram, bus, a.wrapping_add(imm))? as i8 as i64 as u64,
            Lbu => self.load::<B, 1>(ram, bus, a.wrapping_add(imm))?,
            Sw | Sh | Sb => {
                let addr = a.wrapping_add(imm);
                match d.op {
                    Sw => self.store::<B, 4>(ram, bus, addr, b)?,
                    Sh => self.store::<B, 2>(ram, bus, addr, b)?,
                    _ => self.store::<B, 1>(ram, bus, addr, b)?,
                }
                self.pc = next;
                return Ok(());
            }
            Jal => {
                self.set_rd(rd, next);
                self.pc = pc.wrapping_add(imm);
                return Ok(());
            }
            Jalr => {
                let target = a.wrapping_add(imm) & !1;
                self.set_rd(rd, next);
                self.pc = target;
                return Ok(());
            }
            Beq | Bne | Blt | Bge | Bltu | Bgeu => {
                let taken = match d.op {
                    Beq => a == b,
                    Bne => a != b,
                    Blt => (a as i64) < (b as i64),
                    Bge => (a as i64) >= (b as i64),
                    Bltu => a < b,
                    _ => a >= b,
                };
                self.pc = if taken { pc.wrapping_add(imm) } else { next };
                return Ok(());
            }
            Slti => ((a as i64) < (imm as i64)) as u64,
            Sltiu => (a < imm) as u64,
            Xori => a ^ imm,
            Ori => a | imm,
            Andi => a & imm,
            Slli => a << (imm & 63),
            Srli => a >> (imm & 63),
            Srai => ((a as i64) >> (imm & 63)) as u64,
            Sub => a.wrapping_sub(b),
            Sll => a << (b & 63),
            Slt => ((a as i64) < (b as i64)) as u64,
            Sltu => (a < b) as u64,
            Xor => a ^ b,
            Srl => a >> (b & 63),
            Sra => ((a as i64) >> (b & 63)) as u64,
            Or => a | b,
            And => a & b,
            Addiw => sx32(a.wrapping_add(imm)),
            Slliw => sx32(((a as u32) << (imm & 31)) as u64),
            Srliw => sx32(((a as u32) >> (imm & 31)) as u64),
            Sraiw => ((a as i32) >> (imm & 31)) as i64 as u64,
            Addw => sx32(a.wrapping_add(b)),
            Subw => sx32(a.wrapping_sub(b)),
            Sllw => sx32(((a as u32) << (b & 31)) as u64),
            Srlw => sx32(((a as u32) >> (b & 31)) as u64),
            Sraw => ((a as i32) >> (b & 31)) as i64 as u64,
            Mul => a.wrapping_mul(b),
            Mulh => ((a as i64 as i128 * b as i64 as i128) >> 64) as u64,
            Mulhsu => ((a as i64 as i128).wrapping_mul(b as i128) >> 64) as u64,
            Mulhu => ((a as u128 * b as u128) >> 64) as u64,
            Div => {
                let (x, y) = (a as i64, b as i64);
                if y == 0 {
                    u64::MAX
                } else {
                    x.wrapping_div(y) as u64
                }
            }
            Divu => a.checked_div(b).unwrap_or(u64::MAX),
            Rem => {
                let (x, y) = (a as i64, b as i64);
                if y == 0 {
                    a
                } else {
                    x.wrapping_rem(y) as u64
                }
            }
            Remu => {
                if b == 0 {
                    a
                } else {
                    a % b
                }
            }
            Mulw => sx32((a as u32).wrapping_mul(b as u32) as u64),
            Divw => {
                let (x, y) = (a as i32, b as i32);
                if y == 0 {
                    u64::MAX
                } else {
                    x.wrapping_div(y) as i64 as u64
                }
            }
            Divuw => (a as u32)
                .checked_div(b as u32)
                .map_or(u64::MAX, |q| sx32(q as u64)),
            Remw => {
                let (x, y) = (a as i32, b as i32);
                if y == 0 {
                    x as i64 as u64
                } else {
                    x.wrapping_rem(y) as i64 as u64
                }
            }
            Remuw => {
                let (x, y) = (a as u32, b as u32);
                if y == 0 {
                    x as i32 as i64 as u64
                } else {
                    sx32((x % y) as u64)
                }
            }
            Fp => {
                self.exec_fp(ram, bus, raw()).map_err(|t| match t {
                    Trap::IllegalInstruction(_) if d.len == 2 => {
                        Trap::IllegalInstruction(d.imm as u64)
                    }
                    t => t,
                })?;
                self.pc = next;
                return Ok(());
            }
            Fld | Flw => {
                if !self.fp_enabled() {
                    return self.exec_fp_fallback(ram, bus, raw(), d.len);
                }
                let addr = a.wrapping_add(imm);
                let v = if d.op == Fld {
                    self.load::<B, 8>(ram, bus, addr)?
                } else {
                    0xffff_ffff_0000_0000 | self.load::<B, 4>(ram, bus, addr)?
                };
                self.f[rd & 31] = v;
                self.set_fs_dirty();
                self.pc = next;
                return Ok(());
            }
            Fsd | Fsw => {
                if !self.fp_enabled() {
                    return self.exec_fp_fallback(ram, bus, raw(), d.len);
                }
                let addr = a.wrapping_add(imm);
                let v = self.f[d.rs2 as usize & 31];
                if d.op == Fsd {
                    self.store::<B, 8>(ram, bus, addr, v)?;
                } else {
                    self.store::<B, 4>(ram, bus, addr, v)?;
                }
                self.pc = next;
                return Ok(());
            }
            FmaD | FmaS => {
                let raw = raw();
                if self.fp_rne_on(raw) {
                    // Opcodes 0x4b, 0x4f negate the product, 0x47, 0x4f the addend.
                    let neg_product = raw as u64 >> 3 & 1;
                    let neg_addend = raw as u64 >> 2 & 1;
                    let x = self.f[d.rs1 as usize & 31];
                    let y = self.f[d.rs2 as usize & 31];
                    let z = self.f[(raw >> 27) as usize];
                    let r = if d.op == FmaD {
                        crate::fp::host_fma_d(x ^ neg_product << 63, y, z ^ neg_addend << 63)
                    } else if (x & y & z) >> 32 == 0xffff_ffff {
                        // All three NaN-boxed (else an operand reads as the canonical NaN).
                        let (x, y, z) = (x as u32, y as u32, z as u32);
                        let (x, z) = (
                            x ^ (neg_product as u32) << 31,
                            z ^ (neg_addend as u32) << 31,
                        );
                        crate::fp::host_fma_s(x, y, z)
                            .map(|(r, f)| (0xffff_ffff_0000_0000 | r as u64, f))
                    } else {
                        None
                    };
                    if let Some((r, flags)) = r {
                        self.f[rd & 31] = r;
                        self.fflags |= flags;
                        self.set_fs_dirty();
                        self.pc = next;
                        return Ok(());
                    }
                }
                return self.exec_fp_fallback(ram, bus, raw, d.len);
            }
            FopD | FopS => {
                let raw = raw();
                if self.fp_rne_on(raw) {
                    let x = self.f[d.rs1 as usize & 31];
                    let y = self.f[d.rs2 as usize & 31];
                    let kind = crate::fp::fop_d_kind(raw);
                    let r = if d.op == FopD {
                        crate::fp::host_d(kind, x, y)
                    } else if (x & y) >> 32 == 0xffff_ffff {
                        crate::fp::host_s(kind, x as u32, y as u32)
                            .map(|(r, f)| (0xffff_ffff_0000_0000 | r as u64, f))
                    } else {
                        None
                    };
                    if let Some((r, flags)) = r {
                        self.f[rd & 31] = r;
                        self.fflags |= flags;
                        self.set_fs_dirty();
                        self.pc = next;
                        return Ok(());
                    }
                }
                return self.exec_fp_fallback(ram, bus, raw, d.len);
            }
            FcvtInt => {
                let raw = raw();
                let rm = (raw >> 12) & 7;
                let rm = if rm == 7 { self.frm as u32 } else { rm };
                let kind = d.rs2 as usize & 3;
                let src = d.rs1 as usize & 31;
                if self.fp_enabled() && rm < 2 {
                    match raw >> 25 {
                        // FCVT.int.S, FCVT.int.D (RNE, RTZ); rd is an x register.
                        f7 @ (0x60 | 0x61) => {
                            let f = self.f[src];
                            let v = if f7 == 0x61 {
                                Some(f64::from_bits(f))
                            } else if f >> 32 == 0xffff_ffff {
                                Some(f32::from_bits(f as u32) as f64)
                            } else {
                                None // not NaN-boxed: the canonical NaN, SoftFloat's case
                            };
                            if let Some((r, flags)) =
                                v.and_then(|v| crate::fp::host_f2i(v, rm as u8, kind))
                            {
                                if d.rd != 0 {
                                    self.x[d.rd as usize & 31] = r;
                                }
                                if flags != 0 {
                                    self.fflags |= flags;
                                    self.set_fs_dirty();
                                }
                                self.pc = next;
                                return Ok(());
                            }
                        }
                        // FCVT.S.int (RNE), FCVT.D.int (RNE; the 32-bit kinds in any mode).
                        f7 => {
                            let x = self.x[src];
                            let r = if f7 == 0x69 && (rm == 0 || kind < 2) {
                                Some(crate::fp::host_i2f_d(x, kind))
                            } else if f7 == 0x68 && rm == 0 {
                                let (r, exact) = crate::fp::host_i2f_s(x, kind);
                                Some((0xffff_ffff_0000_0000 | r as u64, exact))
                            } else {
                                None
                            };
                            if let Some((r, exact)) = r {
                                self.f[rd & 31] = r;
                                self.fflags |= if exact { 0 } else { crate::fp::NX };
                                self.set_fs_dirty();
                                self.pc = next;
                                return Ok(());
                            }
                        }
                    }
                }
                return self.exec_fp_fallback(ram, bus, raw, d.len);
            }
            Undecoded => return self.execute_undecoded(ram, bus),
            Illegal | Fence | FenceI | Ecall | Ebreak | Mret | Sret | Wfi | SfenceVma | Csrrw
            | Csrrs | Csrrc | Csrrwi | Csrrsi | Csrrci | LrW | ScW | AmoswapW | AmoaddW
            | AmoxorW | AmoandW | AmoorW | AmominW | AmomaxW | AmominuW | AmomaxuW | LrD | ScD
            | AmoswapD | AmoaddD | AmoxorD | AmoandD | AmoorD | AmominD | AmomaxD | AmominuD
            | AmomaxuD => return self.execute_rare(p, ram, bus),
        };
        self.set_rd(rd, v);
        self.pc = next;
        Ok(())
    }

    /// Writes a decoded destination register (x0 arrives as the sink slot).
    #[inline(always)]
    fn set_rd(&mut self, rd: usize, v: u64) {
        // SAFETY: `rd` comes from `decode`, which only produces register numbers below 33.
        unsafe { *self.x.get_unchecked_mut(rd) = v };
    }

    /// The fetch found an empty cache slot: decode into it, then execute.
    #[cold]
    #[inline(never)]
    fn execute_undecoded<B: Bus>(&mut self, ram: &mut Ram, bus: &mut B) -> Result<(), Trap> {
        let p = self.fetch_slow(ram, bus)?;
        self.execute(p, ram, bus)
    }

    /// System, CSR, fence and atomic instructions: out of the hot path.
    #[cold]
    #[inline(never)]
    fn execute_rare<B: Bus>(
        &mut self,
        p: *const Insn,
        ram: &mut Ram,
        bus: &mut B,
    ) -> Result<(), Trap> {
        // SAFETY: as in `execute`.
        let d = &unsafe { p.read() };
        use Op::*;
        let rd = d.rd as usize & 63;
        let a = self.x[d.rs1 as usize & 63];
        let b = self.x[d.rs2 as usize & 63];
        let next = self.pc.wrapping_add(d.len as u64);
        let ill = Trap::IllegalInstruction(d.raw as u64);
        match d.op {
            Fence | FenceI => {}
            Ecall => {
                return Err(match self.prv {
                    Priv::U => Trap::EcallFromU,
                    Priv::S => Trap::EcallFromS,
                    Priv::M => Trap::EcallFromM,
                })
            }
            Ebreak => return Err(Trap::Breakpoint(self.pc)),
            Mret => {
                if self.prv != Priv::M {
                    return Err(ill);
                }
                self.mret();
                return Ok(());
            }
            Sret => {
                if self.prv == Priv::U
                    || (self.prv == Priv::S && self.csr.mstatus & mstatus::TSR != 0)
                {
                    return Err(ill);
                }
                self.sret();
                return Ok(());
            }
            Wfi => {
                if self.prv == Priv::U
                    || (self.prv == Priv::S && self.csr.mstatus & mstatus::TW != 0)
                {
                    return Err(ill);
                }
                self.pc = next;
                if self.mip() & self.csr.mie == 0 {
                    self.wfi = true;
                    self.request_stop();
                }
                return Ok(());
            }
            SfenceVma => {
                if self.prv == Priv::U
                    || (self.prv == Priv::S && self.csr.mstatus & mstatus::TVM != 0)
                {
                    return Err(ill);
                }
                self.tlb.flush();
            }
            Csrrw | Csrrs | Csrrc | Csrrwi | Csrrsi | Csrrci => {
                let n = d.imm as u16 & 0xfff;
                let src = if matches!(d.op, Csrrwi | Csrrsi | Csrrci) {
                    d.rs1 as u64
                } else {
                    a
                };
                let writes = matches!(d.op, Csrrw | Csrrwi) || d.rs1 != 0;
                // CSRRW with rd = x0 does not read; everything else does (and checks access).
                let old = if matches!(d.op, Csrrw | Csrrwi) && rd == 0 {
                    0
                } else {
                    self.csr_read(bus, n, d.raw)?
                };
                if writes {
                    // Read-modify-write of mip/sip uses the software-written bits only: the
                    // device lines are OR-ed into reads, and must not be latched by a write.
                    let base = match n {
                        crate::csr::num::MIP => self.csr.mip,
                        crate::csr::num::SIP => self.csr.mip & self.csr.mideleg,
                        _ => old,
                    };
                    let new = match d.op {
                        Csrrw | Csrrwi => src,
                        Csrrs | Csrrsi => base | src,
                        _ => base & !src,
                    };
                    self.csr_write(n, new, d.raw)?;
                }
                self.x[rd] = old;
            }
            LrW | LrD => {
                let n = if d.op == LrW { 4 } else { 8 };
                if !a.is_multiple_of(n) {
                    return Err(Trap::LoadAddressMisaligned(a));
                }
                let v = if n == 4 {
                    sx32(self.load::<B, 4>(ram, bus, a)?)
                } else {
                    self.load::<B, 8>(ram, bus, a)?
                };
                self.reservation = Some(a);
                self.x[rd] = v;
            }
            ScW | ScD => {
                let n = if d.op == ScW { 4 } else { 8 };
                if !a.is_multiple_of(n) {
                    return Err(Trap::StoreAddressMisaligned(a));
                }
                let ok = self.reservation == Some(a);
                self.reservation = None;
                if ok {
                    if n == 4 {
                        self.store::<B, 4>(ram, bus, a, b)?;
                    } else {
                        self.store::<B, 8>(ram, bus, a, b)?;
                    }
                }
                self.x[rd] = !ok as u64;
            }
            AmoswapW | AmoaddW | AmoxorW | AmoandW | AmoorW | AmominW | AmomaxW | AmominuW
            | AmomaxuW => {
                if !a.is_multiple_of(4) {
                    return Err(Trap::StoreAddressMisaligned(a));
                }
                let p = self.amo_ptr(ram, bus, a, 4)?;
                // SAFETY: `amo_ptr` returned a pointer to 4 bytes of RAM inside one page.
                let old = unsafe { read_le::<4>(p) } as u32;
                let src = b as u32;
                let new = match d.op {
                    AmoswapW => src,
                    AmoaddW => old.wrapping_add(src),
                    AmoxorW => old ^ src,
                    AmoandW => old & src,
                    AmoorW => old | src,
                    AmominW => (old as i32).min(src as i32) as u32,
                    AmomaxW => (old as i32).max(src as i32) as u32,
                    AmominuW => old.min(src),
                    _ => old.max(src),
                };
                // SAFETY: as above.
                unsafe { write_le::<4>(p, new as u64) };
                self.x[rd] = old as i32 as i64 as u64;
            }
            AmoswapD | AmoaddD | AmoxorD | AmoandD | AmoorD | AmominD | AmomaxD | AmominuD
            | AmomaxuD => {
                if !a.is_multiple_of(8) {
                    return Err(Trap::StoreAddressMisaligned(a));
                }
                let p = self.amo_ptr(ram, bus, a, 8)?;
                // SAFETY: `amo_ptr` returned a pointer to 8 bytes of RAM inside one page.
                let old = unsafe { read_le::<8>(p) };
                let new = match d.op {
                    AmoswapD => b,
                    AmoaddD => old.wrapping_add(b),
                    AmoxorD => old ^ b,
                    AmoandD => old & b,
                    AmoorD => old | b,
                    AmominD => (old as i64).min(b as i64) as u64,
                    AmomaxD => (old as i64).max(b as i64) as u64,
                    AmominuD => old.min(b),
                    _ => old.max(b),
                };
                // SAFETY: as above.
                unsafe { write_le::<8>(p, new) };
                self.x[rd] = old;
            }
            _ => return Err(ill),
        }
        self.pc = next;
        Ok(())
    }
}
