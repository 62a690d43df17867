//! Instruction decoding into [`Insn`], a fixed-size form that is cached per physical page, so
//! that each instruction is decoded once however often it runs. Compressed instructions are
//! decoded straight into the operation they stand for. Floating-point instructions keep their
//! (expanded, 32-bit) encoding and are decoded further by [`crate::fp`].

/// The operation of a decoded instruction.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Cache slot not filled yet.
    Undecoded,
    Illegal,
    Lui,
    Auipc,
    Jal,
    Jalr,
    Beq,
    Bne,
    Blt,
    Bge,
    Bltu,
    Bgeu,
    Lb,
    Lh,
    Lw,
    Ld,
    Lbu,
    Lhu,
    Lwu,
    Sb,
    Sh,
    Sw,
    Sd,
    Addi,
    Slti,
    Sltiu,
    Xori,
    Ori,
    Andi,
    Slli,
    Srli,
    Srai,
    Add,
    Sub,
    Sll,
    Slt,
    Sltu,
    Xor,
    Srl,
    Sra,
    Or,
    And,
    Addiw,
    Slliw,
    Srliw,
    Sraiw,
    Addw,
    Subw,
    Sllw,
    Srlw,
    Sraw,
    Mul,
    Mulh,
    Mulhsu,
    Mulhu,
    Div,
    Divu,
    Rem,
    Remu,
    Mulw,
    Divw,
    Divuw,
    Remw,
    Remuw,
    Fence,
    FenceI,
    Ecall,
    Ebreak,
    Mret,
    Sret,
    Wfi,
    SfenceVma,
    Csrrw,
    Csrrs,
    Csrrc,
    Csrrwi,
    Csrrsi,
    Csrrci,
    LrW,
    ScW,
    AmoswapW,
    AmoaddW,
    AmoxorW,
    AmoandW,
    AmoorW,
    AmominW,
    AmomaxW,
    AmominuW,
    AmomaxuW,
    LrD,
    ScD,
    AmoswapD,
    AmoaddD,
    AmoxorD,
    AmoandD,
    AmoorD,
    AmominD,
    AmomaxD,
    AmominuD,
    AmomaxuD,
    /// Any F or D instruction; `raw` holds its 32-bit encoding.
    Fp,
    /// FLD: `rd` is an FP register, `rs1` and `imm` the address. `raw` as for [`Op::Fp`].
    Fld,
    /// FLW, like [`Op::Fld`].
    Flw,
    /// FSD: `rs2` is an FP register, `rs1` and `imm` the address.
    Fsd,
    /// FSW, like [`Op::Fsd`].
    Fsw,
    /// FMADD.D, FMSUB.D, FNMSUB.D, FNMADD.D: `rd`, `rs1`, `rs2` are FP registers, rs3, the rounding
    /// mode and the negations are read from `raw`.
    FmaD,
    /// FADD.D, FSUB.D, FMUL.D, FDIV.D: `rd`, `rs1`, `rs2` are FP registers, the operation (`raw`
    /// bits 27..29) and the rounding mode are read from `raw`.
    FopD,
    /// FMADD.S, FMSUB.S, FNMSUB.S, FNMADD.S, like [`Op::FmaD`].
    FmaS,
    /// FADD.S, FSUB.S, FMUL.S, FDIV.S, like [`Op::FopD`].
    FopS,
    /// FCVT.{W,WU,L,LU}.{S,D} and FCVT.{S,D}.{W,WU,L,LU}: `rd`, `rs1` as in the encoding (an x
    /// or an f register, by direction), `rs2` the integer kind (0..4).
    FcvtInt,
}

/// The next instruction is the next one in this cache page.
pub const FLOW_NEXT: u8 = 0;
/// A jump or branch: the next instruction is wherever the pc now points (the interpreter stays
/// in this cache page if the target is in the same page).
pub const FLOW_JUMP: u8 = 1;
/// Leave the page's straight-line run: system and CSR instructions (they may change the
/// translation or interrupt state), illegal instructions, empty slots, and a last instruction of a
/// page that falls through into the next page.
pub const FLOW_STOP: u8 = 2;

/// Register index that stands for "x0 as a destination": a slot nobody reads.
pub const ZERO_SINK: usize = 32;

/// One decoded instruction: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// What to do.
    pub op: Op,
    /// Destination register; x0 is given as [`ZERO_SINK`].
    pub rd: u8,
    /// First source register.
    pub rs1: u8,
    /// Second source register.
    pub rs2: u8,
    /// Length in bytes: 2 or 4.
    pub len: u8,
    /// Where execution goes next, as far as the interpreter's inner loop cares: one of
    /// [`FLOW_NEXT`], [`FLOW_JUMP`], [`FLOW_STOP`].
    pub flow: u8,
    /// Immediate (sign-extended), shift amount, or CSR number; for a compressed FP load/store,
    /// the original 16-bit instruction.
    pub imm: i32,
    /// The instruction's bits; for compressed FP loads/stores, the equivalent 32-bit encoding.
    pub raw: u32,
}

impl Insn {
    /// The empty cache slot.
    pub const UNDECODED: Insn = Insn {
        flow: FLOW_STOP,
        op: Op::Undecoded,
        rd: 0,
        rs1: 0,
        rs2: 0,
        len: 0,
        imm: 0,
        raw: 0,
    };

    fn new(op: Op, rd: u32, rs1: u32, rs2: u32, imm: i32, raw: u32, len: u8) -> Insn {
        // Results for x0 go to the sink register, so execution never needs to test rd.
        let rd = if rd == 0 { ZERO_SINK as u32 } else { rd };
        use Op::*;
        let jump = matches!(op, Jal | Jalr | Beq | Bne | Blt | Bge | Bltu | Bgeu);
        let stop = matches!(
            op,
            Illegal
                | FenceI
                | Ecall
                | Ebreak
                | Mret
                | Sret
                | Wfi
                | SfenceVma
                | Csrrw
                | Csrrs
                | Csrrc
                | Csrrwi
                | Csrrsi
                | Csrrci
        );
        let flow = if stop {
            FLOW_STOP
        } else if jump {
            FLOW_JUMP
        } else {
            FLOW_NEXT
        };
        Insn {
            op,
            rd: rd as u8,
            rs1: rs1 as u8,
            rs2: rs2 as u8,
            len,
            flow,
            imm,
            raw,
        }
    }
}

/// Decoded instructions of one 4 KiB page, one slot per 2-byte parcel.
pub struct DecodedPage {
    /// Slot `i` holds the instruction starting at page offset `2 * i`.
    pub insns: [Insn; 2048],
    /// The RAM page (index from the start of RAM) these instructions come from.
    pub(crate) page: usize,
    /// Bumped by every [`DecodedPage::clear`]: code translated from this page under an older
    /// generation is stale (the translating engine checks it before running a block).
    pub(crate) gen: u64,
}

impl DecodedPage {
    pub(crate) fn new_boxed(page: usize) -> Box<DecodedPage> {
        Box::new(DecodedPage {
            insns: [Insn::UNDECODED; 2048],
            page,
            gen: 0,
        })
    }

    pub(crate) fn clear(&mut self) {
        self.insns.fill(Insn::UNDECODED);
        self.gen += 1;
    }
}

/// Length in bytes of the instruction whose low 16 bits are `lo`.
#[inline(always)]
pub fn insn_len(lo: u16) -> u8 {
    if lo & 3 == 3 {
        4
    } else {
        2
    }
}

#[inline(always)]
fn bits(x: u32, hi: u32, lo: u32) -> u32 {
    (x >> lo) & ((1 << (hi - lo + 1)) - 1)
}

fn sext(x: u32, width: u32) -> i32 {
    let s = 32 - width;
    ((x << s) as i32) >> s
}

/// Decodes an instruction: `raw` holds 4 bytes, or 2 for a compressed one.
pub fn decode(raw: u32) -> Insn {
    let d = if raw & 3 == 3 {
        decode32(raw)
    } else {
        decode16(raw as u16)
    };
    if d.op == Op::Fp {
        specialize_fp(d)
    } else {
        d
    }
}

/// The most frequent F/D instructions get their own [`Op`], executed inline by the interpreter
/// (with [`crate::fp`]'s general path as their fallback); the rest stay [`Op::Fp`]. Register
/// fields hold FP register numbers here as they are (f0 is a real register), and `imm` the
/// load/store offset: a compressed form's own bits, needed for `mtval` on an illegal-instruction
/// trap, are recovered from `raw` by [`crate::fp::compressed_bits`].
fn specialize_fp(d: Insn) -> Insn {
    let r = d.raw;
    let rd = ((r >> 7) & 31) as u8;
    let rs1 = ((r >> 15) & 31) as u8;
    let rs2 = ((r >> 20) & 31) as u8;
    let f3 = (r >> 12) & 7;
    let (op, imm) = match r & 0x7f {
        0x07 if f3 == 3 => (Op::Fld, (r as i32) >> 20),
        0x07 if f3 == 2 => (Op::Flw, (r as i32) >> 20),
        0x27 if f3 == 3 || f3 == 2 => {
            let imm = (((r as i32) >> 25) << 5) | ((r >> 7) & 31) as i32;
            (if f3 == 3 { Op::Fsd } else { Op::Fsw }, imm)
        }
        0x43 | 0x47 | 0x4b | 0x4f if (r >> 25) & 3 == 1 => (Op::FmaD, 0),
        0x43 | 0x47 | 0x4b | 0x4f if (r >> 25) & 3 == 0 => (Op::FmaS, 0),
        0x53 if matches!(r >> 25, 0x01 | 0x05 | 0x09 | 0x0d) => (Op::FopD, 0),
        0x53 if matches!(r >> 25, 0x00 | 0x04 | 0x08 | 0x0c) => (Op::FopS, 0),
        0x53 if matches!(r >> 25, 0x60 | 0x61 | 0x68 | 0x69) && rs2 < 4 => (Op::FcvtInt, 0),
        _ => return d,
    };
    Insn {
        op,
        rd,
        rs1,
        rs2,
        len: d.len,
        flow: FLOW_NEXT,
        imm,
        raw: r,
    }
}

fn decode32(x: u32) -> Insn {
    use Op::*;
    let rd = bits(x, 11, 7);
    let rs1 = bits(x, 19, 15);
    let rs2 = bits(x, 24, 20);
    let f3 = bits(x, 14, 12);
    let f7 = bits(x, 31, 25);
    let i_imm = (x as i32) >> 20;
    let s_imm = ((x as i32) >> 25 << 5) | bits(x, 11, 7) as i32;
    let b_imm = sext(
        (bits(x, 31, 31) << 12)
            | (bits(x, 7, 7) << 11)
            | (bits(x, 30, 25) << 5)
            | (bits(x, 11, 8) << 1),
        13,
    );
    let u_imm = (x & 0xffff_f000) as i32;
    let j_imm = sext(
        (bits(x, 31, 31) << 20)
            | (bits(x, 19, 12) << 12)
            | (bits(x, 20, 20) << 11)
            | (bits(x, 30, 21) << 1),
        21,
    );
    let ill = Insn::new(Illegal, 0, 0, 0, 0, x, 4);
    let mk = |op: Op, imm: i32| Insn::new(op, rd, rs1, rs2, imm, x, 4);
    match x & 0x7f {
        0x37 => mk(Lui, u_imm),
        0x17 => mk(Auipc, u_imm),
        0x6f => mk(Jal, j_imm),
        0x67 if f3 == 0 => mk(Jalr, i_imm),
        0x63 => {
            let op = match f3 {
                0 => Beq,
                1 => Bne,
                4 => Blt,
                5 => Bge,
                6 => Bltu,
                7 => Bgeu,
                _ => return ill,
            };
            mk(op, b_imm)
        }
        0x03 => {
            let op = match f3 {
                0 => Lb,
                1 => Lh,
                2 => Lw,
                3 => Ld,
                4 => Lbu,
                5 => Lhu,
                6 => Lwu,
                _ => return ill,
            };
            mk(op, i_imm)
        }
        0x23 => {
            let op = match f3 {
                0 => Sb,
                1 => Sh,
                2 => Sw,
                3 => Sd,
                _ => return ill,
            };
            mk(op, s_imm)
        }
        0x13 => {
            let shamt = bits(x, 25, 20) as i32;
            match f3 {
                0 => mk(Addi, i_imm),
                2 => mk(Slti, i_imm),
                3 => mk(Sltiu, i_imm),
                4 => mk(Xori, i_imm),
                6 => mk(Ori, i_imm),
                7 => mk(Andi, i_imm),
                1 if bits(x, 31, 26) == 0 => mk(Slli, shamt),
                5 if bits(x, 31, 26) == 0 => mk(Srli, shamt),
                5 if bits(x, 31, 26) == 0x10 => mk(Srai, shamt),
                _ => ill,
            }
        }
        0x1b => {
            let shamt = bits(x, 24, 20) as i32;
            match (f3, f7) {
                (0, _) => mk(Addiw, i_imm),
                (1, 0) => mk(Slliw, shamt),
                (5, 0) => mk(Srliw, shamt),
                (5, 0x20) => mk(Sraiw, shamt),
                _ => ill,
            }
        }
        0x33 => {
            let op = match (f7, f3) {
                (0, 0) => Add,
                (0x20, 0) => Sub,
                (0, 1) => Sll,
                (0, 2) => Slt,
                (0, 3) => Sltu,
                (0, 4) => Xor,
                (0, 5) => Srl,
                (0x20, 5) => Sra,
                (0, 6) => Or,
                (0, 7) => And,
                (1, 0) => Mul,
                (1, 1) => Mulh,
                (1, 2) => Mulhsu,
                (1, 3) => Mulhu,
                (1, 4) => Div,
                (1, 5) => Divu,
                (1, 6) => Rem,
                (1, 7) => Remu,
                _ => return ill,
            };
            mk(op, 0)
        }
        0x3b => {
            let op = match (f7, f3) {
                (0, 0) => Addw,
                (0x20, 0) => Subw,
                (0, 1) => Sllw,
                (0, 5) => Srlw,
                (0x20, 5) => Sraw,
                (1, 0) => Mulw,
                (1, 4) => Divw,
                (1, 5) => Divuw,
                (1, 6) => Remw,
                (1, 7) => Remuw,
                _ => return ill,
            };
            mk(op, 0)
        }
        0x0f => match f3 {
            0 => mk(Fence, 0),
            1 => mk(FenceI, 0),
            _ => ill,
        },
        0x73 => {
            let csr = bits(x, 31, 20) as i32;
            match f3 {
                0 => match (x >> 7, f7) {
                    (0, _) if x == 0x0000_0073 => mk(Ecall, 0),
                    _ if x == 0x0010_0073 => mk(Ebreak, 0),
                    _ if x == 0x3020_0073 => mk(Mret, 0),
                    _ if x == 0x1020_0073 => mk(Sret, 0),
                    _ if x == 0x1050_0073 => mk(Wfi, 0),
                    (_, 0x09) if rd == 0 => mk(SfenceVma, 0),
                    _ => ill,
                },
                1 => mk(Csrrw, csr),
                2 => mk(Csrrs, csr),
                3 => mk(Csrrc, csr),
                5 => mk(Csrrwi, csr),
                6 => mk(Csrrsi, csr),
                7 => mk(Csrrci, csr),
                _ => ill,
            }
        }
        0x2f => {
            let f5 = bits(x, 31, 27);
            let op = match (f3, f5) {
                (2, 0x02) if rs2 == 0 => LrW,
                (2, 0x03) => ScW,
                (2, 0x01) => AmoswapW,
                (2, 0x00) => AmoaddW,
                (2, 0x04) => AmoxorW,
                (2, 0x0c) => AmoandW,
                (2, 0x08) => AmoorW,
                (2, 0x10) => AmominW,
                (2, 0x14) => AmomaxW,
                (2, 0x18) => AmominuW,
                (2, 0x1c) => AmomaxuW,
                (3, 0x02) if rs2 == 0 => LrD,
                (3, 0x03) => ScD,
                (3, 0x01) => AmoswapD,
                (3, 0x00) => AmoaddD,
                (3, 0x04) => AmoxorD,
                (3, 0x0c) => AmoandD,
                (3, 0x08) => AmoorD,
                (3, 0x10) => AmominD,
                (3, 0x14) => AmomaxD,
                (3, 0x18) => AmominuD,
                (3, 0x1c) => AmomaxuD,
                _ => return ill,
            };
            mk(op, 0)
        }
        // FLW/FLD, FSW/FSD, FMADD/FMSUB/FNMSUB/FNMADD, OP-FP: decoded further by `fp`.
        0x07 | 0x27 | 0x43 | 0x47 | 0x4b | 0x4f | 0x53 => mk(Fp, 0),
        _ => ill,
    }
}

fn decode16(x: u16) -> Insn {
    use Op::*;
    let x = x as u32;
    let op = x & 3;
    let f3 = bits(x, 15, 13);
    let rd = bits(x, 11, 7);
    let rs2 = bits(x, 6, 2);
    let rdp = bits(x, 4, 2) + 8; // rd' / rs2'
    let rs1p = bits(x, 9, 7) + 8; // rs1' / rd'
    let ill = Insn::new(Illegal, 0, 0, 0, 0, x, 2);
    let mk = |op: Op, rd: u32, rs1: u32, rs2: u32, imm: i32| Insn::new(op, rd, rs1, rs2, imm, x, 2);
    // FP forms keep the expanded encoding in `raw` and the original parcel in `imm` (for `mtval`).
    let fp = |raw32: u32| Insn::new(Fp, 0, 0, 0, x as i32, raw32, 2);
    // Offsets of the compressed loads/stores.
    let lw_off = (bits(x, 5, 5) << 6) | (bits(x, 12, 10) << 3) | (bits(x, 6, 6) << 2);
    let ld_off = (bits(x, 6, 5) << 6) | (bits(x, 12, 10) << 3);
    let ci_imm = sext((bits(x, 12, 12) << 5) | bits(x, 6, 2), 6);
    match (op, f3) {
        (0, 0) => {
            let nzuimm = (bits(x, 10, 7) << 6)
                | (bits(x, 12, 11) << 4)
                | (bits(x, 5, 5) << 3)
                | (bits(x, 6, 6) << 2);
            if nzuimm == 0 {
                return ill;
            }
            mk(Addi, rdp, 2, 0, nzuimm as i32)
        }
        // C.FLD → fld rd', off(rs1')
        (0, 1) => fp((ld_off << 20) | (rs1p << 15) | (3 << 12) | (rdp << 7) | 0x07),
        (0, 2) => mk(Lw, rdp, rs1p, 0, lw_off as i32),
        (0, 3) => mk(Ld, rdp, rs1p, 0, ld_off as i32),
        // C.FSD → fsd rs2', off(rs1')
        (0, 5) => fp(((ld_off >> 5) << 25)
            | (rdp << 20)
            | (rs1p << 15)
            | (3 << 12)
            | ((ld_off & 31) << 7)
            | 0x27),
        (0, 6) => mk(Sw, 0, rs1p, rdp, lw_off as i32),
        (0, 7) => mk(Sd, 0, rs1p, rdp, ld_off as i32),
        (1, 0) => mk(Addi, rd, rd, 0, ci_imm),
        (1, 1) => {
            if rd == 0 {
                return ill;
            }
            mk(Addiw, rd, rd, 0, ci_imm)
        }
        (1, 2) => mk(Addi, rd, 0, 0, ci_imm),
        (1, 3) => {
            if rd == 2 {
                let imm = sext(
                    (bits(x, 12, 12) << 9)
                        | (bits(x, 4, 3) << 7)
                        | (bits(x, 5, 5) << 6)
                        | (bits(x, 2, 2) << 5)
                        | (bits(x, 6, 6) << 4),
                    10,
                );
                if imm == 0 {
                    return ill;
                }
                mk(Addi, 2, 2, 0, imm)
            } else {
                if ci_imm == 0 {
                    return ill;
                }
                mk(Lui, rd, 0, 0, ci_imm << 12)
            }
        }
        (1, 4) => {
            let shamt = ((bits(x, 12, 12) << 5) | bits(x, 6, 2)) as i32;
            match bits(x, 11, 10) {
                0 => mk(Srli, rs1p, rs1p, 0, shamt),
                1 => mk(Srai, rs1p, rs1p, 0, shamt),
                2 => mk(Andi, rs1p, rs1p, 0, ci_imm),
                _ => {
                    let o = match (bits(x, 12, 12), bits(x, 6, 5)) {
                        (0, 0) => Sub,
                        (0, 1) => Xor,
                        (0, 2) => Or,
                        (0, 3) => And,
                        (1, 0) => Subw,
                        (1, 1) => Addw,
                        _ => return ill,
                    };
                    mk(o, rs1p, rs1p, rdp, 0)
                }
            }
        }
        (1, 5) => {
            let imm = sext(
                (bits(x, 12, 12) << 11)
                    | (bits(x, 8, 8) << 10)
                    | (bits(x, 10, 9) << 8)
                    | (bits(x, 6, 6) << 7)
                    | (bits(x, 7, 7) << 6)
                    | (bits(x, 2, 2) << 5)
                    | (bits(x, 11, 11) << 4)
                    | (bits(x, 5, 3) << 1),
                12,
            );
            mk(Jal, 0, 0, 0, imm)
        }
        (1, 6) | (1, 7) => {
            let imm = sext(
                (bits(x, 12, 12) << 8)
                    | (bits(x, 6, 5) << 6)
                    | (bits(x, 2, 2) << 5)
                    | (bits(x, 11, 10) << 3)
                    | (bits(x, 4, 3) << 1),
                9,
            );
            mk(if f3 == 6 { Beq } else { Bne }, 0, rs1p, 0, imm)
        }
        (2, 0) => {
            let shamt = ((bits(x, 12, 12) << 5) | bits(x, 6, 2)) as i32;
            mk(Slli, rd, rd, 0, shamt)
        }
        // C.FLDSP → fld rd, off(sp)
        (2, 1) => {
            let off = (bits(x, 4, 2) << 6) | (bits(x, 12, 12) << 5) | (bits(x, 6, 5) << 3);
            fp((off << 20) | (2 << 15) | (3 << 12) | (rd << 7) | 0x07)
        }
        (2, 2) => {
            if rd == 0 {
                return ill;
            }
            let off = (bits(x, 3, 2) << 6) | (bits(x, 12, 12) << 5) | (bits(x, 6, 4) << 2);
            mk(Lw, rd, 2, 0, off as i32)
        }
        (2, 3) => {
            if rd == 0 {
                return ill;
            }
            let off = (bits(x, 4, 2) << 6) | (bits(x, 12, 12) << 5) | (bits(x, 6, 5) << 3);
            mk(Ld, rd, 2, 0, off as i32)
        }
        (2, 4) => match (bits(x, 12, 12), rd, rs2) {
            (0, 0, _) => ill,
            (0, _, 0) => mk(Jalr, 0, rd, 0, 0),
            (0, _, _) => mk(Add, rd, 0, rs2, 0),
            (1, 0, 0) => mk(Ebreak, 0, 0, 0, 0),
            (1, _, 0) => mk(Jalr, 1, rd, 0, 0),
            _ => mk(Add, rd, rd, rs2, 0),
        },
        // C.FSDSP → fsd rs2, off(sp)
        (2, 5) => {
            let off = (bits(x, 9, 7) << 6) | (bits(x, 12, 10) << 3);
            fp(((off >> 5) << 25) | (rs2 << 20) | (2 << 15) | (3 << 12) | ((off & 31) << 7) | 0x27)
        }
        (2, 6) => {
            let off = (bits(x, 8, 7) << 6) | (bits(x, 12, 9) << 2);
            mk(Sw, 0, 2, rs2, off as i32)
        }
        (2, 7) => {
            let off = (bits(x, 9, 7) << 6) | (bits(x, 12, 10) << 3);
            mk(Sd, 0, 2, rs2, off as i32)
        }
        _ => ill,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base_and_compressed_forms_alike() {
        // addi a0, a0, -1  and  c.addi a0, -1
        let a = decode(0xfff5_0513);
        let c = decode(0x157d);
        assert_eq!((a.op, a.rd, a.rs1, a.imm), (Op::Addi, 10, 10, -1));
        assert_eq!((c.op, c.rd, c.rs1, c.imm, c.len), (Op::Addi, 10, 10, -1, 2));
    }

    #[test]
    fn zero_parcel_is_illegal() {
        assert_eq!(decode(0).op, Op::Illegal);
        assert_eq!(decode(0xffff_ffff).op, Op::Illegal);
    }

    #[test]
    fn compressed_fld_expands_to_fld() {
        // c.fldsp fa0, 8(sp) = 0x2522 ; fld fa0, 8(sp) = 0x00813507
        let c = decode(0x2522);
        assert_eq!((c.op, c.raw), (Op::Fld, 0x0081_3507));
        assert_eq!((c.rd, c.rs1, c.imm, c.len), (10, 2, 8, 2));
    }

    #[test]
    fn hot_fp_instructions_are_specialized() {
        // fsd fa0, -8(sp)
        let d = decode(0xfea1_3c27);
        assert_eq!((d.op, d.rs1, d.rs2, d.imm), (Op::Fsd, 2, 10, -8));
        // fmadd.d fa0, fa1, fa2, fa3 (dyn); fmadd.s stays generic
        assert_eq!(decode(0x6ac5_f543).op, Op::FmaD);
        assert_eq!(decode(0x68c5_f543).op, Op::FmaS);
        assert_eq!(decode(0x6cc5_f543).op, Op::Fp); // fmadd.h: not ours
                                                    // fdiv.d fa0, fa1, fa2 (rne); fsqrt.d stays generic
        let d = decode(0x1ac5_8553);
        assert_eq!((d.op, d.rd, d.rs1, d.rs2), (Op::FopD, 10, 11, 12));
        assert_eq!(decode(0x5a05_8553).op, Op::Fp);
        // fcvt.l.d a0, fa1, rtz; fcvt.d.w fa0, a1; fcvt.w.d with rs2 = 4 is reserved
        let d = decode(0xc225_9553);
        assert_eq!((d.op, d.rd, d.rs1, d.rs2), (Op::FcvtInt, 10, 11, 2));
        assert_eq!(decode(0xd205_8553).op, Op::FcvtInt);
        assert_eq!(decode(0xc245_8553).op, Op::Fp);
    }

    #[test]
    fn branch_and_jump_offsets() {
        // beq a0, a1, -4 = 0xfeb50ee3
        assert_eq!(decode(0xfeb5_0ee3).imm, -4);
        // jal ra, 2048 = 0x001000ef ... jal x1, 0x800
        assert_eq!(decode(0x0010_00ef).imm, 2048);
    }
}
