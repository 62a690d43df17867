//! The translator: one pass over the guest instructions of a block, emitting x86-64 for each.
//!
//! Generated code keeps every guest register in the [`Hart`] (`rbx` points to it) and the
//! dispatcher's [`Ctx`] in `r12`. Integer ALU operations, multiplies, divisions (with RISC-V's
//! results for a zero divisor and for MIN / -1, which would fault on x86), branches and jumps
//! are emitted inline; loads and stores (FP ones included, when the FPU is on) inline their
//! software-TLB hit path (the same TLB, the same
//! hit condition and hence the same dirty-tracking behaviour as the interpreter's `load`/`store`)
//! and otherwise call the step helper. Every other instruction (CSR, system, atomics, floating
//! point) calls the step helper, which runs the interpreter's own `execute` on a copy of
//! the decoded instruction: identical results by construction, FP included.
//!
//! A block is at most [`MAX_INSNS`] instructions of one page. It ends after a jump, after any
//! instruction the interpreter treats as `FLOW_STOP` (system, CSR, `fence.i`, illegal; `fence` is a
//! no-op for a hart that runs alone, so it is translated as nothing), at the page
//! end, or at the length cap. Conditional branches do not end it: a taken branch leaves through
//! a side exit. The block returns the number of steps it took; every exit knows its own count.

use super::x86::{reg::*, Alu, Asm, Cond, Label, Shift};
use super::{Ctx, JcEntry, JC_SIZE};
use crate::csr::{mstatus, Csrs};
use crate::decode::{decode, DecodedPage, Insn, Op, FLOW_STOP};
use crate::hart::Hart;
use crate::mmu::{CodeEntry, DataEntry, Tlb};
use std::mem::offset_of;

/// Longest block, in guest instructions.
pub(crate) const MAX_INSNS: usize = 64;

const _: () = assert!(std::mem::size_of::<DataEntry>() == 16);

/// Where `rbx` points: 128 bytes into the hart's `x`, so that every guest register (at -128 to
/// +120) is addressed with an 8-bit displacement, which keeps the code small.
const HART_BIAS: usize = offset_of!(Hart, x) + 128;

/// Offset of hart field at `off` (from the start of the [`Hart`]) relative to `rbx`.
fn hoff(off: usize) -> i32 {
    off as i32 - HART_BIAS as i32
}

fn xoff(r: u8) -> i32 {
    hoff(offset_of!(Hart, x) + 8 * r as usize)
}

/// FP register `r` (raw bits; `r` is a 5-bit FP register number here).
fn foff(r: u8) -> i32 {
    hoff(offset_of!(Hart, f) + 8 * (r & 31) as usize)
}

fn mstatus_off() -> i32 {
    hoff(offset_of!(Hart, csr) + offset_of!(Csrs, mstatus))
}

fn pc_off() -> i32 {
    hoff(offset_of!(Hart, pc))
}

/// Where a translated block's decoded-instruction copies go (pointers to them are embedded in
/// the code, so the storage never moves; it is reset only with the whole cache).
pub(crate) struct InsnArena {
    slots: Vec<Insn>,
}

impl InsnArena {
    pub fn new(cap: usize) -> InsnArena {
        // Reserved, not filled: the host commits pages as blocks use them.
        InsnArena {
            slots: Vec::with_capacity(cap),
        }
    }

    pub fn free(&self) -> usize {
        self.slots.capacity() - self.slots.len()
    }

    pub fn reset(&mut self) {
        self.slots.clear();
    }

    fn push(&mut self, i: Insn) -> *const Insn {
        // Never beyond the capacity (the caller checks `free`), so the storage never moves.
        assert!(self.slots.len() < self.slots.capacity());
        self.slots.push(i);
        self.slots.last().expect("just pushed")
    }
}

struct SideExit {
    label: Label,
    pc: u64,
    steps: u32,
    /// The target is the block's own start: loop inside the block while the budget allows.
    back_edge: bool,
}

struct SlowPath {
    label: Label,
    resume: Label,
    insn: *const Insn,
    idx: u32,
    pc: u64,
}

/// A translated block, as [`translate`] describes it.
pub(crate) struct Translated {
    /// Guest instructions.
    pub n: u32,
    /// Offset of the body (after the prologue) in the code: where chained blocks jump to.
    pub body: usize,
}

/// Translates the block at virtual `vpc`, whose page's bytes are `page` (4096 bytes). Returns
/// the number of instructions, or `None` if the first instruction cannot be translated (it
/// crosses the page end): the interpreter steps it. The code is left in `asm`.
pub(crate) fn translate(
    asm: &mut Asm,
    arena: &mut InsnArena,
    page: &[u8],
    vpc: u64,
) -> Option<Translated> {
    asm.clear();
    let epilogue = asm.label();
    let mut exits: Vec<SideExit> = Vec::new();
    let mut slows: Vec<SlowPath> = Vec::new();

    asm.push(RBX);
    asm.push(R12);
    asm.push(RBP);
    asm.add_imm(RDI, HART_BIAS as i32);
    asm.mov_rr(RBX, RDI);
    asm.mov_rr(R12, RSI);
    let body = asm.label();
    asm.bind(body);
    let body_off = asm.pos();
    // Where the back edges' budget checks want the block length (patched at the end).
    let mut len_fixups: Vec<usize> = Vec::new();

    let mut off = (vpc & 0xfff) as usize;
    let mut pc = vpc;
    let mut n: u32 = 0;
    let mut ended = false;
    while (n as usize) < MAX_INSNS && off + 2 <= 4096 {
        let lo = u16::from_le_bytes([page[off], page[off + 1]]) as u32;
        let raw = if lo & 3 != 3 {
            lo
        } else if off + 4 <= 4096 {
            u32::from_le_bytes([page[off], page[off + 1], page[off + 2], page[off + 3]])
        } else {
            break; // crosses into the next page: the interpreter's business
        };
        let d = decode(raw);
        let next = pc.wrapping_add(d.len as u64);
        let idx = n;
        n += 1;
        let imm = d.imm;
        let (rd, rs1, rs2) = (d.rd, d.rs1, d.rs2);
        use Op::*;
        match d.op {
            Lui => asm.store_imm(RBX, xoff(rd), imm),
            Auipc => {
                asm.mov_imm(RAX, pc.wrapping_add(imm as i64 as u64));
                asm.store(RBX, xoff(rd), RAX);
            }
            Addi => {
                asm.load(RAX, RBX, xoff(rs1));
                asm.add_imm(RAX, imm);
                asm.store(RBX, xoff(rd), RAX);
            }
            Slti | Sltiu => {
                asm.load(RAX, RBX, xoff(rs1));
                asm.alu_ri(true, Alu::Cmp, RAX, imm);
                asm.setcc_rax(if d.op == Slti { Cond::L } else { Cond::B });
                asm.store(RBX, xoff(rd), RAX);
            }
            Xori | Ori | Andi => {
                let op = match d.op {
                    Xori => Alu::Xor,
                    Ori => Alu::Or,
                    _ => Alu::And,
                };
                asm.load(RAX, RBX, xoff(rs1));
                asm.alu_ri(true, op, RAX, imm);
                asm.store(RBX, xoff(rd), RAX);
            }
            Slli | Srli | Srai => {
                let s = match d.op {
                    Slli => Shift::Shl,
                    Srli => Shift::Shr,
                    _ => Shift::Sar,
                };
                asm.load(RAX, RBX, xoff(rs1));
                asm.shift_ri(true, s, RAX, (imm & 63) as u8);
                asm.store(RBX, xoff(rd), RAX);
            }
            Add | Sub | Xor | Or | And => {
                let op = match d.op {
                    Add => Alu::Add,
                    Sub => Alu::Sub,
                    Xor => Alu::Xor,
                    Or => Alu::Or,
                    _ => Alu::And,
                };
                asm.load(RAX, RBX, xoff(rs1));
                asm.alu_rm(true, op, RAX, RBX, xoff(rs2));
                asm.store(RBX, xoff(rd), RAX);
            }
            Slt | Sltu => {
                asm.load(RAX, RBX, xoff(rs1));
                asm.alu_rm(true, Alu::Cmp, RAX, RBX, xoff(rs2));
                asm.setcc_rax(if d.op == Slt { Cond::L } else { Cond::B });
                asm.store(RBX, xoff(rd), RAX);
            }
            Sll | Srl | Sra | Sllw | Srlw | Sraw => {
                let w = matches!(d.op, Sll | Srl | Sra);
                let s = match d.op {
                    Sll | Sllw => Shift::Shl,
                    Srl | Srlw => Shift::Shr,
                    _ => Shift::Sar,
                };
                asm.load(RCX, RBX, xoff(rs2));
                asm.load(RAX, RBX, xoff(rs1));
                // x86 masks the count to 6 (64-bit) or 5 (32-bit) bits, as RISC-V does.
                asm.shift_cl(w, s, RAX);
                if !w {
                    asm.movsxd(RAX, RAX);
                }
                asm.store(RBX, xoff(rd), RAX);
            }
            Addiw => {
                asm.load(RAX, RBX, xoff(rs1));
                asm.alu_ri(false, Alu::Add, RAX, imm);
                asm.movsxd(RAX, RAX);
                asm.store(RBX, xoff(rd), RAX);
            }
            Slliw | Srliw | Sraiw => {
                let s = match d.op {
                    Slliw => Shift::Shl,
                    Srliw => Shift::Shr,
                    _ => Shift::Sar,
                };
                asm.load(RAX, RBX, xoff(rs1));
                asm.shift_ri(false, s, RAX, (imm & 31) as u8);
                asm.movsxd(RAX, RAX);
                asm.store(RBX, xoff(rd), RAX);
            }
            Addw | Subw => {
                let op = if d.op == Addw { Alu::Add } else { Alu::Sub };
                asm.load(RAX, RBX, xoff(rs1));
                asm.alu_rm(false, op, RAX, RBX, xoff(rs2));
                asm.movsxd(RAX, RAX);
                asm.store(RBX, xoff(rd), RAX);
            }
            Mul | Mulw => {
                let w = d.op == Mul;
                asm.load(RAX, RBX, xoff(rs1));
                asm.imul_rm(w, RAX, RBX, xoff(rs2));
                if !w {
                    asm.movsxd(RAX, RAX);
                }
                asm.store(RBX, xoff(rd), RAX);
            }
            Mulh | Mulhu => {
                asm.load(RAX, RBX, xoff(rs1));
                asm.mul_wide(d.op == Mulh, RBX, xoff(rs2));
                asm.store(RBX, xoff(rd), RDX);
            }
            Mulhsu => {
                // mulhu(a, b) - (a < 0 ? b : 0): rs1 signed, rs2 unsigned.
                asm.load(RAX, RBX, xoff(rs1));
                asm.mul_wide(false, RBX, xoff(rs2));
                asm.load(RCX, RBX, xoff(rs1));
                asm.shift_ri(true, Shift::Sar, RCX, 63);
                asm.alu_rm(true, Alu::And, RCX, RBX, xoff(rs2));
                asm.alu_rr(Alu::Sub, RDX, RCX);
                asm.store(RBX, xoff(rd), RDX);
            }
            Div | Divu | Rem | Remu | Divw | Divuw | Remw | Remuw => {
                // The interpreter's results: x / 0 = all ones, x % 0 = x; MIN / -1 = MIN
                // (wrapping), MIN % -1 = 0; the word forms sign-extend their 32-bit result.
                let w = matches!(d.op, Div | Divu | Rem | Remu);
                let signed = matches!(d.op, Div | Rem | Divw | Remw);
                let rem = matches!(d.op, Rem | Remu | Remw | Remuw);
                let zero = asm.label();
                let done = asm.label();
                asm.load(RAX, RBX, xoff(rs1));
                asm.load(RCX, RBX, xoff(rs2));
                asm.test_rr(w, RCX);
                asm.jcc(Cond::E, zero);
                if signed {
                    let divide = asm.label();
                    asm.alu_ri(w, Alu::Cmp, RCX, -1);
                    asm.jcc(Cond::Ne, divide);
                    // x / -1 = -x (wrapping), x % -1 = 0: idiv would fault on MIN / -1.
                    asm.neg(w, RAX);
                    asm.alu_rr(Alu::Xor, RDX, RDX);
                    asm.jmp(done);
                    asm.bind(divide);
                    asm.sign_extend_rdx(w);
                } else {
                    asm.alu_rr(Alu::Xor, RDX, RDX);
                }
                asm.div_r(w, signed, RCX);
                asm.jmp(done);
                asm.bind(zero);
                if rem {
                    asm.mov_rr(RDX, RAX);
                } else {
                    asm.mov_imm(RAX, u64::MAX);
                }
                asm.bind(done);
                let r = if rem { RDX } else { RAX };
                if !w {
                    asm.movsxd(r, r);
                }
                asm.store(RBX, xoff(rd), r);
            }
            Lb | Lh | Lw | Ld | Lbu | Lhu | Lwu | Sb | Sh | Sw | Sd | Fld | Flw | Fsd | Fsw => {
                let fp = matches!(d.op, Fld | Flw | Fsd | Fsw);
                let (size, signed, store) = match d.op {
                    Fld => (8, false, false),
                    Flw => (4, false, false),
                    Fsd => (8, false, true),
                    Fsw => (4, false, true),
                    Lb => (1, true, false),
                    Lh => (2, true, false),
                    Lw => (4, true, false),
                    Ld => (8, false, false),
                    Lbu => (1, false, false),
                    Lhu => (2, false, false),
                    Lwu => (4, false, false),
                    Sb => (1, false, true),
                    Sh => (2, false, true),
                    Sw => (4, false, true),
                    _ => (8, false, true),
                };
                let slow = asm.label();
                let resume = asm.label();
                let (table, gen) = if store {
                    (
                        offset_of!(Ctx, tlb_w) as i32,
                        hoff(offset_of!(Hart, tlb) + offset_of!(Tlb, wgen)),
                    )
                } else {
                    (
                        offset_of!(Ctx, tlb_r) as i32,
                        hoff(offset_of!(Hart, tlb) + offset_of!(Tlb, gen)),
                    )
                };
                if fp {
                    // FP off (mstatus.FS = 0): the interpreter raises the illegal instruction.
                    asm.load(RAX, RBX, mstatus_off());
                    asm.alu_ri(true, Alu::And, RAX, mstatus::FS as i32);
                    asm.jcc(Cond::E, slow);
                }
                // rsi = address; rcx = the entry of its first byte's page; rax = the tag of
                // its last byte's page. One compare checks both the hit and that the access
                // stays in the page: the entry in the first page's slot holds a page congruent
                // to it modulo the TLB size, so it can match the last byte's page (the same
                // page or the next) only if that is the same page.
                asm.load(RSI, RBX, xoff(rs1));
                asm.add_imm(RSI, imm);
                asm.mov_rr(RCX, RSI);
                asm.shift_ri(true, Shift::Shr, RCX, 12);
                asm.alu_ri(false, Alu::And, RCX, (crate::mmu::TLB_SIZE - 1) as i32);
                asm.shift_ri(false, Shift::Shl, RCX, 4);
                asm.alu_rm(true, Alu::Add, RCX, R12, table);
                asm.mov_rr(RAX, RSI);
                asm.add_imm(RAX, size as i32 - 1);
                asm.shift_ri(true, Shift::Shr, RAX, 12);
                asm.alu_rm(true, Alu::Or, RAX, RBX, gen);
                asm.alu_rm(true, Alu::Cmp, RAX, RCX, offset_of!(DataEntry, vpn) as i32);
                asm.jcc(Cond::Ne, slow);
                asm.load(RCX, RCX, offset_of!(DataEntry, addend) as i32);
                if fp && store {
                    asm.load(RAX, RBX, foff(rs2));
                    asm.store_indexed(size, RCX, RSI);
                } else if fp {
                    asm.load_indexed(size, false, RCX, RSI);
                    if size == 4 {
                        // NaN-boxed single.
                        asm.mov_imm(RCX, 0xffff_ffff_0000_0000);
                        asm.alu_rr(Alu::Or, RAX, RCX);
                    }
                    asm.store(RBX, foff(rd), RAX);
                    asm.load(RCX, RBX, mstatus_off());
                    asm.alu_ri(true, Alu::Or, RCX, mstatus::FS as i32);
                    asm.store(RBX, mstatus_off(), RCX);
                } else if store {
                    asm.load(RAX, RBX, xoff(rs2));
                    asm.store_indexed(size, RCX, RSI);
                } else {
                    asm.load_indexed(size, signed, RCX, RSI);
                    asm.store(RBX, xoff(rd), RAX);
                }
                asm.bind(resume);
                slows.push(SlowPath {
                    label: slow,
                    resume,
                    insn: arena.push(d),
                    idx,
                    pc,
                });
            }
            Beq | Bne | Blt | Bge | Bltu | Bgeu => {
                let c = match d.op {
                    Beq => Cond::E,
                    Bne => Cond::Ne,
                    Blt => Cond::L,
                    Bge => Cond::Ge,
                    Bltu => Cond::B,
                    _ => Cond::Ae,
                };
                let taken = asm.label();
                asm.load(RAX, RBX, xoff(rs1));
                asm.alu_rm(true, Alu::Cmp, RAX, RBX, xoff(rs2));
                asm.jcc(c, taken);
                let target = pc.wrapping_add(imm as i64 as u64);
                exits.push(SideExit {
                    label: taken,
                    pc: target,
                    steps: n,
                    back_edge: target == vpc,
                });
            }
            Jal => {
                asm.mov_imm(RAX, next);
                asm.store(RBX, xoff(rd), RAX);
                let target = pc.wrapping_add(imm as i64 as u64);
                if target == vpc {
                    emit_back_edge(asm, n, vpc, body, epilogue, &mut len_fixups);
                } else if same_page(target, vpc) {
                    emit_chain_exit(asm, n, target, epilogue);
                } else {
                    asm.mov_imm(RAX, target);
                    emit_dispatch(asm, n, epilogue);
                }
                ended = true;
            }
            Jalr => {
                asm.load(RAX, RBX, xoff(rs1));
                asm.add_imm(RAX, imm);
                asm.alu_ri(true, Alu::And, RAX, -2);
                asm.mov_imm(RCX, next);
                asm.store(RBX, xoff(rd), RCX);
                emit_dispatch(asm, n, epilogue);
                ended = true;
            }
            // A no-op in the interpreter too (one hart at a time, memory is always coherent):
            // it need not end the block.
            Fence => {}
            _ => {
                let p = arena.push(d);
                emit_step(asm, p, idx, pc, epilogue);
                if d.flow == FLOW_STOP {
                    // The helper has set the pc (it returned 0, so to `next`).
                    asm.mov_imm(RAX, next);
                    emit_dispatch(asm, n, epilogue);
                    ended = true;
                }
            }
        }
        off += d.len as usize;
        pc = next;
        if ended {
            break;
        }
    }
    if n == 0 {
        return None;
    }
    if !ended {
        if same_page(pc, vpc) {
            emit_chain_exit(asm, n, pc, epilogue);
        } else {
            asm.mov_imm(RAX, pc);
            emit_dispatch(asm, n, epilogue);
        }
    }
    asm.bind(epilogue);
    asm.pop(RBP);
    asm.pop(R12);
    asm.pop(RBX);
    asm.ret();
    for e in exits {
        asm.bind(e.label);
        if e.back_edge {
            emit_back_edge(asm, e.steps, vpc, body, epilogue, &mut len_fixups);
            continue;
        }
        if same_page(e.pc, vpc) {
            emit_chain_exit(asm, e.steps, e.pc, epilogue);
            continue;
        }
        asm.mov_imm(RAX, e.pc);
        emit_dispatch(asm, e.steps, epilogue);
    }
    for s in slows {
        asm.bind(s.label);
        emit_step(asm, s.insn, s.idx, s.pc, epilogue);
        asm.jmp(s.resume);
    }
    asm.finish();
    for at in len_fixups {
        asm.code[at..at + 4].copy_from_slice(&n.to_le_bytes());
    }
    Some(Translated { n, body: body_off })
}

fn same_page(a: u64, b: u64) -> bool {
    (a ^ b) >> 12 == 0
}

/// Where a chain exit's patchable fields lie, relative to the position [`emit_chain_exit`]
/// records in `Ctx::link`: the `cmp` immediate (the target block's length) ends there, the
/// `jmp rel32` to the target's body follows the 6-byte `jb`.
pub(crate) const CHAIN_LEN_AT: isize = -4;
pub(crate) const CHAIN_JMP_REL_AT: isize = 7;
pub(crate) const CHAIN_JMP_END_AT: isize = 11;

/// An exit to `target`, a pc on the block's own page, after `steps` steps of the block. The
/// steps are added to the context's start icount; then, once the dispatcher has chained this
/// exit (patched the target block's length into the `cmp` and its body into the `jmp`), the
/// target runs directly if its whole length fits in the budget — the same rule the dispatcher
/// applies — and otherwise the block leaves with 0 further steps at `target`. Before it is
/// chained, the exit leaves that way too and records where it is, for the dispatcher to patch.
///
/// Chains never need undoing: both blocks come from the same page under the same generation,
/// so a store to the page invalidates both at once, and a flush drops all code.
fn emit_chain_exit(asm: &mut Asm, steps: u32, target: u64, epilogue: Label) {
    let start = offset_of!(Ctx, start) as i32;
    asm.load(RAX, R12, start);
    asm.add_imm(RAX, steps as i32);
    asm.store(R12, start, RAX);
    asm.load(RCX, R12, offset_of!(Ctx, stop) as i32);
    asm.alu_rr(Alu::Sub, RCX, RAX);
    // Patched: the target block's length (0, always fits, until chained).
    asm.cmp_imm32(RCX, 0);
    let site = asm.label();
    asm.bind(site);
    let at = asm.pos();
    let leave = asm.label();
    asm.jcc(Cond::B, leave);
    let unchained = asm.label();
    // Patched: the target block's body.
    asm.jmp(unchained);
    debug_assert_eq!(asm.pos(), at + CHAIN_JMP_END_AT as usize);
    asm.bind(unchained);
    asm.lea_rip(RAX, site);
    asm.store(R12, offset_of!(Ctx, link) as i32, RAX);
    asm.bind(leave);
    asm.mov_imm(RAX, target);
    asm.store(RBX, pc_off(), RAX);
    asm.mov_imm(RAX, 0);
    asm.jmp(epilogue);
}

/// An exit to the pc in `rax` (any pc: a return, an indirect jump, another page) after `steps`
/// steps of the block. The steps are added to the context's start icount and the pc is stored;
/// then the target block is entered directly if the jump cache holds it and it is valid — the
/// fetch TLB maps the pc (same tag, so same privilege and translation context) to the block's
/// decoded page, that page's generation is the block's, and its whole length fits in the
/// budget: exactly the dispatcher's checks on a jump-cache hit (see `Jit::lookup` and `run`).
/// Otherwise the block leaves with 0 further steps, and the dispatcher looks the pc up.
///
/// Nothing else can have changed since the dispatcher last looked: whatever makes the hart
/// need attention happens in a helper call, and the helper leaves the block when it does.
fn emit_dispatch(asm: &mut Asm, steps: u32, epilogue: Label) {
    let start = offset_of!(Ctx, start) as i32;
    let leave = asm.label();
    asm.store(RBX, pc_off(), RAX);
    asm.load(RDX, R12, start);
    asm.add_imm(RDX, steps as i32);
    asm.store(R12, start, RDX);
    // rsi = the fetch TLB entry of the pc's page; hit if its tag is `vpn | gen`.
    const _: () = assert!(std::mem::size_of::<CodeEntry>() == 16);
    asm.mov_rr(RCX, RAX);
    asm.shift_ri(true, Shift::Shr, RCX, 12);
    asm.mov_rr(RSI, RCX);
    asm.alu_ri(false, Alu::And, RSI, (crate::mmu::TLB_SIZE - 1) as i32);
    asm.shift_ri(false, Shift::Shl, RSI, 4);
    asm.alu_rm(true, Alu::Add, RSI, R12, offset_of!(Ctx, tlb_x) as i32);
    asm.alu_rm(
        true,
        Alu::Or,
        RCX,
        RBX,
        hoff(offset_of!(Hart, tlb) + offset_of!(Tlb, gen)),
    );
    asm.alu_rm(true, Alu::Cmp, RCX, RSI, offset_of!(CodeEntry, vpn) as i32);
    asm.jcc(Cond::Ne, leave);
    asm.load(RSI, RSI, offset_of!(CodeEntry, page) as i32);
    // rcx = the jump-cache entry of the pc.
    const _: () = assert!(std::mem::size_of::<JcEntry>() == 64);
    asm.mov_rr(RCX, RAX);
    asm.shift_ri(true, Shift::Shr, RCX, 1);
    asm.alu_ri(false, Alu::And, RCX, (JC_SIZE - 1) as i32);
    asm.shift_ri(false, Shift::Shl, RCX, 6);
    asm.alu_rm(true, Alu::Add, RCX, R12, offset_of!(Ctx, jc) as i32);
    asm.alu_rm(true, Alu::Cmp, RAX, RCX, offset_of!(JcEntry, vpc) as i32);
    asm.jcc(Cond::Ne, leave);
    asm.alu_rm(true, Alu::Cmp, RSI, RCX, offset_of!(JcEntry, dpage) as i32);
    asm.jcc(Cond::Ne, leave);
    asm.load(RDI, RSI, offset_of!(DecodedPage, gen) as i32);
    asm.alu_rm(true, Alu::Cmp, RDI, RCX, offset_of!(JcEntry, gen) as i32);
    asm.jcc(Cond::Ne, leave);
    asm.load(RAX, R12, offset_of!(Ctx, stop) as i32);
    asm.alu_rr(Alu::Sub, RAX, RDX);
    asm.alu_rm(true, Alu::Cmp, RAX, RCX, offset_of!(JcEntry, n) as i32);
    asm.jcc(Cond::B, leave);
    asm.store(R12, offset_of!(Ctx, dpage) as i32, RSI);
    asm.store(R12, offset_of!(Ctx, gen) as i32, RDI);
    asm.inc_mem(R12, offset_of!(Ctx, inline_entries) as i32);
    asm.jmp_mem(RCX, offset_of!(JcEntry, body) as i32);
    asm.bind(leave);
    asm.mov_imm(RAX, 0);
    asm.jmp(epilogue);
}

/// A jump back to the block's start after `steps` steps of this pass: the pass is added to the
/// context's start icount, and the block runs again if the whole block still fits in the
/// budget; otherwise it leaves (with 0 further steps) at its own start.
fn emit_back_edge(
    asm: &mut Asm,
    steps: u32,
    vpc: u64,
    body: Label,
    epilogue: Label,
    len_fixups: &mut Vec<usize>,
) {
    let start = offset_of!(Ctx, start) as i32;
    asm.load(RAX, R12, start);
    asm.add_imm(RAX, steps as i32);
    asm.store(R12, start, RAX);
    asm.load(RCX, R12, offset_of!(Ctx, stop) as i32);
    asm.alu_rr(Alu::Sub, RCX, RAX);
    asm.cmp_imm32(RCX, 0);
    len_fixups.push(asm.code.len() - 4);
    asm.jcc(Cond::Ae, body);
    asm.mov_imm(RAX, vpc);
    asm.store(RBX, pc_off(), RAX);
    asm.mov_imm(RAX, 0);
    asm.jmp(epilogue);
}

/// A call of the step helper for instruction `idx` at `pc`; leaves the block (with the helper's
/// result, the steps taken) unless the helper returned 0.
fn emit_step(asm: &mut Asm, insn: *const Insn, idx: u32, pc: u64, epilogue: Label) {
    asm.mov_rr(RDI, R12);
    asm.mov_imm(RSI, insn as u64);
    asm.mov_imm(RDX, idx as u64);
    asm.mov_imm(RCX, pc);
    asm.call_mem(R12, offset_of!(Ctx, step) as i32);
    asm.test_eax();
    asm.jcc(Cond::Ne, epilogue);
}
