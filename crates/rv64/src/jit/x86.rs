//! A small hand-written x86-64 emitter: exactly the instruction forms the translator uses.
//!
//! Hand-written rather than `dynasm`: the translator needs about thirty forms (64- and 32-bit ALU
//! operations on a register and a `[base + disp32]` operand, shifts, multiplies, `setcc`,
//! `jcc rel32` with labels, indirect calls) and no crate is needed for that; every form is checked
//! against the bytes an assembler produces in the tests below.

/// Host registers by number.
#[allow(dead_code)]
pub(crate) mod reg {
    pub const RAX: u8 = 0;
    pub const RCX: u8 = 1;
    pub const RDX: u8 = 2;
    pub const RBX: u8 = 3;
    pub const RSP: u8 = 4;
    pub const RBP: u8 = 5;
    pub const RSI: u8 = 6;
    pub const RDI: u8 = 7;
    pub const R8: u8 = 8;
    pub const R12: u8 = 12;
}

/// Two-operand ALU operations (`op reg, r/m` opcode; `81 /ext` immediate form).
#[derive(Clone, Copy)]
pub(crate) enum Alu {
    Add,
    Or,
    And,
    Sub,
    Xor,
    Cmp,
}

impl Alu {
    fn opcode(self) -> u8 {
        match self {
            Alu::Add => 0x03,
            Alu::Or => 0x0b,
            Alu::And => 0x23,
            Alu::Sub => 0x2b,
            Alu::Xor => 0x33,
            Alu::Cmp => 0x3b,
        }
    }
    fn ext(self) -> u8 {
        match self {
            Alu::Add => 0,
            Alu::Or => 1,
            Alu::And => 4,
            Alu::Sub => 5,
            Alu::Xor => 6,
            Alu::Cmp => 7,
        }
    }
}

/// Shifts (`C1 /ext ib`, `D3 /ext`).
#[derive(Clone, Copy)]
pub(crate) enum Shift {
    Shl = 4,
    Shr = 5,
    Sar = 7,
}

/// Condition codes (low nibble of `jcc`/`setcc`).
#[derive(Clone, Copy)]
pub(crate) enum Cond {
    B = 0x2,
    Ae = 0x3,
    E = 0x4,
    Ne = 0x5,
    L = 0xc,
    Ge = 0xd,
}

/// A position to jump to, bound once, referenced by any number of `rel32` fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Label(usize);

/// The emitter: machine code accumulates in `code`; labels are resolved by [`Asm::finish`].
pub(crate) struct Asm {
    pub code: Vec<u8>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm {
            code: Vec::with_capacity(4096),
            labels: Vec::new(),
            fixups: Vec::new(),
        }
    }

    pub fn clear(&mut self) {
        self.code.clear();
        self.labels.clear();
        self.fixups.clear();
    }

    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.code.len());
    }

    /// Patches every `rel32` reference. All used labels must be bound.
    pub fn finish(&mut self) {
        for &(at, l) in &self.fixups {
            let target = self.labels[l.0].expect("unbound label");
            let rel = target as i64 - (at as i64 + 4);
            self.code[at..at + 4].copy_from_slice(&(rel as i32).to_le_bytes());
        }
        self.fixups.clear();
    }

    fn b(&mut self, x: u8) {
        self.code.push(x);
    }

    fn d32(&mut self, x: i32) {
        self.code.extend_from_slice(&x.to_le_bytes());
    }

    fn rel32(&mut self, l: Label) {
        self.fixups.push((self.code.len(), l));
        self.d32(0);
    }

    fn rex(&mut self, w: bool, r: u8, x: u8, b: u8) {
        let v = 0x40 | (w as u8) << 3 | (r >> 3 & 1) << 2 | (x >> 3 & 1) << 1 | (b >> 3 & 1);
        if v != 0x40 {
            self.b(v);
        }
    }

    /// ModRM (+SIB) for `[base + index + disp]`, with the shortest displacement (none, 8 or 32
    /// bits).
    fn mem(&mut self, r: u8, base: u8, index: Option<u8>, disp: i32) {
        // mod 00: no displacement (not with rbp/r13 as the base, which means something else).
        let none = disp == 0 && base & 7 != 5;
        let short = i8::try_from(disp).is_ok();
        let m = if none {
            0x00
        } else if short {
            0x40
        } else {
            0x80
        };
        match index {
            None if base & 7 != 4 => self.b(m | (r & 7) << 3 | (base & 7)),
            None => {
                self.b(m | (r & 7) << 3 | 4);
                self.b(0x24);
            }
            Some(i) => {
                self.b(m | (r & 7) << 3 | 4);
                self.b((i & 7) << 3 | (base & 7));
            }
        }
        if none {
        } else if short {
            self.b(disp as u8);
        } else {
            self.d32(disp);
        }
    }

    /// `op r, [base + disp]` for a one-byte opcode (or `0F xx` if `two`).
    fn op_rm(&mut self, w: bool, two: bool, opc: u8, r: u8, base: u8, disp: i32) {
        self.rex(w, r, 0, base);
        if two {
            self.b(0x0f);
        }
        self.b(opc);
        self.mem(r, base, None, disp);
    }

    fn op_rr(&mut self, w: bool, two: bool, opc: u8, r: u8, rm: u8) {
        self.rex(w, r, 0, rm);
        if two {
            self.b(0x0f);
        }
        self.b(opc);
        self.b(0xc0 | (r & 7) << 3 | (rm & 7));
    }

    /// `mov r64, [base + disp]`.
    pub fn load(&mut self, r: u8, base: u8, disp: i32) {
        self.op_rm(true, false, 0x8b, r, base, disp);
    }

    /// `mov [base + disp], r64`.
    pub fn store(&mut self, base: u8, disp: i32, r: u8) {
        self.op_rm(true, false, 0x89, r, base, disp);
    }

    /// `mov qword [base + disp], simm32`.
    pub fn store_imm(&mut self, base: u8, disp: i32, imm: i32) {
        self.rex(true, 0, 0, base);
        self.b(0xc7);
        self.mem(0, base, None, disp);
        self.d32(imm);
    }

    /// `mov r64, imm` (shortest form).
    pub fn mov_imm(&mut self, r: u8, imm: u64) {
        if imm <= u32::MAX as u64 {
            // mov r32, imm32 (zero-extends)
            self.rex(false, 0, 0, r);
            self.b(0xb8 + (r & 7));
            self.d32(imm as u32 as i32);
        } else if imm as i64 >= i32::MIN as i64 && imm as i64 <= i32::MAX as i64 {
            self.rex(true, 0, 0, r);
            self.b(0xc7);
            self.b(0xc0 | (r & 7));
            self.d32(imm as i32);
        } else {
            self.rex(true, 0, 0, r);
            self.b(0xb8 + (r & 7));
            self.code.extend_from_slice(&imm.to_le_bytes());
        }
    }

    /// `mov dst, src` (64-bit).
    pub fn mov_rr(&mut self, dst: u8, src: u8) {
        self.op_rr(true, false, 0x8b, dst, src);
    }

    /// `op r, [base + disp]`, 64-bit or 32-bit.
    pub fn alu_rm(&mut self, w: bool, op: Alu, r: u8, base: u8, disp: i32) {
        self.op_rm(w, false, op.opcode(), r, base, disp);
    }

    /// `op dst, src`, 64-bit.
    pub fn alu_rr(&mut self, op: Alu, dst: u8, src: u8) {
        self.op_rr(true, false, op.opcode(), dst, src);
    }

    /// `op r, simm`, 64-bit or 32-bit, with an 8-bit immediate where it fits.
    pub fn alu_ri(&mut self, w: bool, op: Alu, r: u8, imm: i32) {
        self.rex(w, 0, 0, r);
        if let Ok(i) = i8::try_from(imm) {
            self.b(0x83);
            self.b(0xc0 | op.ext() << 3 | (r & 7));
            self.b(i as u8);
        } else {
            self.b(0x81);
            self.b(0xc0 | op.ext() << 3 | (r & 7));
            self.d32(imm);
        }
    }

    /// `cmp r64, simm32`, always with a 32-bit immediate (the last 4 bytes), to be patched.
    pub fn cmp_imm32(&mut self, r: u8, imm: i32) {
        self.rex(true, 0, 0, r);
        self.b(0x81);
        self.b(0xc0 | Alu::Cmp.ext() << 3 | (r & 7));
        self.d32(imm);
    }

    /// `shift r, imm8`.
    pub fn shift_ri(&mut self, w: bool, s: Shift, r: u8, imm: u8) {
        self.rex(w, 0, 0, r);
        self.b(0xc1);
        self.b(0xc0 | (s as u8) << 3 | (r & 7));
        self.b(imm);
    }

    /// `shift r, cl`.
    pub fn shift_cl(&mut self, w: bool, s: Shift, r: u8) {
        self.rex(w, 0, 0, r);
        self.b(0xd3);
        self.b(0xc0 | (s as u8) << 3 | (r & 7));
    }

    /// `imul r, [base + disp]`, 64-bit or 32-bit.
    pub fn imul_rm(&mut self, w: bool, r: u8, base: u8, disp: i32) {
        self.op_rm(w, true, 0xaf, r, base, disp);
    }

    /// `mul qword [base + disp]` (unsigned, `signed` = false) or `imul` (one operand): rdx:rax.
    pub fn mul_wide(&mut self, signed: bool, base: u8, disp: i32) {
        let ext = if signed { 5 } else { 4 };
        self.rex(true, 0, 0, base);
        self.b(0xf7);
        self.mem(ext, base, None, disp);
    }

    /// `test r, r`, 64-bit or 32-bit.
    pub fn test_rr(&mut self, w: bool, r: u8) {
        self.op_rr(w, false, 0x85, r, r);
    }

    /// `cqo` (64-bit) or `cdq` (32-bit): sign-extends rax/eax into rdx/edx.
    pub fn sign_extend_rdx(&mut self, w: bool) {
        self.rex(w, 0, 0, 0);
        self.b(0x99);
    }

    /// `div r` (unsigned) or `idiv r` (signed), 64-bit or 32-bit: rdx:rax / r.
    pub fn div_r(&mut self, w: bool, signed: bool, r: u8) {
        self.rex(w, 0, 0, r);
        self.b(0xf7);
        self.b(0xc0 | (if signed { 7 } else { 6 }) << 3 | (r & 7));
    }

    /// `neg r`, 64-bit or 32-bit.
    pub fn neg(&mut self, w: bool, r: u8) {
        self.rex(w, 0, 0, r);
        self.b(0xf7);
        self.b(0xc0 | 3 << 3 | (r & 7));
    }

    /// `movsxd dst, src32`.
    pub fn movsxd(&mut self, dst: u8, src: u8) {
        self.op_rr(true, false, 0x63, dst, src);
    }

    /// `setcc al; movzx eax, al`.
    pub fn setcc_rax(&mut self, c: Cond) {
        self.b(0x0f);
        self.b(0x90 | c as u8);
        self.b(0xc0);
        self.b(0x0f);
        self.b(0xb6);
        self.b(0xc0);
    }

    /// `lea r, [r + simm32]`.
    pub fn add_imm(&mut self, r: u8, imm: i32) {
        if imm != 0 {
            self.rex(true, r, 0, r);
            self.b(0x8d);
            self.mem(r, r, None, imm);
        }
    }

    /// A load of `n` bytes from `[base + index]` into rax, sign- or zero-extended to 64 bits.
    pub fn load_indexed(&mut self, n: usize, signed: bool, base: u8, index: u8) {
        // (w, two-byte opcode?, opcode)
        let (w, two, opc) = match (n, signed) {
            (1, false) => (false, true, 0xb6),
            (1, true) => (true, true, 0xbe),
            (2, false) => (false, true, 0xb7),
            (2, true) => (true, true, 0xbf),
            (4, false) => (false, false, 0x8b),
            (4, true) => (true, false, 0x63),
            _ => (true, false, 0x8b),
        };
        self.rex(w, reg::RAX, index, base);
        if two {
            self.b(0x0f);
        }
        self.b(opc);
        self.mem(reg::RAX, base, Some(index), 0);
    }

    /// A store of the low `n` bytes of rax to `[base + index]`.
    pub fn store_indexed(&mut self, n: usize, base: u8, index: u8) {
        if n == 2 {
            self.b(0x66);
        }
        self.rex(n == 8, reg::RAX, index, base);
        self.b(if n == 1 { 0x88 } else { 0x89 });
        self.mem(reg::RAX, base, Some(index), 0);
    }

    /// `jcc label`.
    pub fn jcc(&mut self, c: Cond, l: Label) {
        self.b(0x0f);
        self.b(0x80 | c as u8);
        self.rel32(l);
    }

    /// `jmp label`.
    pub fn jmp(&mut self, l: Label) {
        self.b(0xe9);
        self.rel32(l);
    }

    /// `lea r, [rip + label]`: the label's absolute address, wherever the code is copied to.
    pub fn lea_rip(&mut self, r: u8, l: Label) {
        self.rex(true, r, 0, 0);
        self.b(0x8d);
        self.b((r & 7) << 3 | 5);
        self.rel32(l);
    }

    /// The current length of the code (an offset into it).
    pub fn pos(&self) -> usize {
        self.code.len()
    }

    /// `call [base + disp]`.
    pub fn call_mem(&mut self, base: u8, disp: i32) {
        self.rex(false, 0, 0, base);
        self.b(0xff);
        self.mem(2, base, None, disp);
    }

    /// `jmp [base + disp]`.
    pub fn jmp_mem(&mut self, base: u8, disp: i32) {
        self.rex(false, 0, 0, base);
        self.b(0xff);
        self.mem(4, base, None, disp);
    }

    /// `inc qword [base + disp]`.
    pub fn inc_mem(&mut self, base: u8, disp: i32) {
        self.rex(true, 0, 0, base);
        self.b(0xff);
        self.mem(0, base, None, disp);
    }

    /// `test eax, eax`.
    pub fn test_eax(&mut self) {
        self.b(0x85);
        self.b(0xc0);
    }

    pub fn push(&mut self, r: u8) {
        self.rex(false, 0, 0, r);
        self.b(0x50 + (r & 7));
    }

    pub fn pop(&mut self, r: u8) {
        self.rex(false, 0, 0, r);
        self.b(0x58 + (r & 7));
    }

    pub fn ret(&mut self) {
        self.b(0xc3);
    }
}

#[cfg(test)]
mod tests {
    use super::reg::*;
    use super::*;

    fn bytes(f: impl FnOnce(&mut Asm)) -> Vec<u8> {
        let mut a = Asm::new();
        f(&mut a);
        a.finish();
        a.code
    }

    // Expected bytes from GNU as (x86-64, AT&T syntax shown in the comments).
    #[test]
    fn encodings_match_the_assembler() {
        // mov 0x10(%rbx),%rax
        assert_eq!(bytes(|a| a.load(RAX, RBX, 0x10)), [0x48, 0x8b, 0x43, 0x10]);
        // mov 0x8(%r12),%rcx
        assert_eq!(bytes(|a| a.load(RCX, R12, 8)), [0x49, 0x8b, 0x4c, 0x24, 8]);
        // mov %rax,0x18(%rbx)
        assert_eq!(bytes(|a| a.store(RBX, 0x18, RAX)), [0x48, 0x89, 0x43, 0x18]);
        // movq $-1,0x8(%rbx)
        assert_eq!(
            bytes(|a| a.store_imm(RBX, 8, -1)),
            [0x48, 0xc7, 0x43, 8, 0xff, 0xff, 0xff, 0xff]
        );
        // mov $0x12345678,%eax ; mov $-2,%rax ; movabs $0x123456789,%rsi
        assert_eq!(
            bytes(|a| a.mov_imm(RAX, 0x1234_5678)),
            [0xb8, 0x78, 0x56, 0x34, 0x12]
        );
        assert_eq!(
            bytes(|a| a.mov_imm(RAX, -2i64 as u64)),
            [0x48, 0xc7, 0xc0, 0xfe, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            bytes(|a| a.mov_imm(RSI, 0x1_2345_6789)),
            [0x48, 0xbe, 0x89, 0x67, 0x45, 0x23, 1, 0, 0, 0]
        );
        // add 0x10(%rbx),%eax (32-bit) ; sub 0x10(%rbx),%rax
        assert_eq!(
            bytes(|a| a.alu_rm(false, Alu::Add, RAX, RBX, 0x10)),
            [0x03, 0x43, 0x10]
        );
        assert_eq!(
            bytes(|a| a.alu_rm(true, Alu::Sub, RAX, RBX, 0x10)),
            [0x48, 0x2b, 0x43, 0x10]
        );
        // cmp $0x5,%rax ; and $0xfff,%ecx
        assert_eq!(
            bytes(|a| a.alu_ri(true, Alu::Cmp, RAX, 5)),
            [0x48, 0x83, 0xf8, 5]
        );
        assert_eq!(
            bytes(|a| a.alu_ri(false, Alu::And, RCX, 0xfff)),
            [0x81, 0xe1, 0xff, 0x0f, 0, 0]
        );
        // shr $0xc,%rax ; sar %cl,%eax
        assert_eq!(
            bytes(|a| a.shift_ri(true, Shift::Shr, RAX, 12)),
            [0x48, 0xc1, 0xe8, 0x0c]
        );
        assert_eq!(bytes(|a| a.shift_cl(false, Shift::Sar, RAX)), [0xd3, 0xf8]);
        // imul 0x8(%rbx),%rax ; mulq 0x8(%rbx) ; imulq 0x8(%rbx)
        assert_eq!(
            bytes(|a| a.imul_rm(true, RAX, RBX, 8)),
            [0x48, 0x0f, 0xaf, 0x43, 8]
        );
        assert_eq!(bytes(|a| a.mul_wide(false, RBX, 8)), [0x48, 0xf7, 0x63, 8]);
        assert_eq!(bytes(|a| a.mul_wide(true, RBX, 8)), [0x48, 0xf7, 0x6b, 8]);
        // test %rcx,%rcx ; test %ecx,%ecx ; cqto ; cltd ; div %rcx ; idiv %rcx ; div %ecx ;
        // idiv %ecx ; neg %rax ; neg %eax
        assert_eq!(bytes(|a| a.test_rr(true, RCX)), [0x48, 0x85, 0xc9]);
        assert_eq!(bytes(|a| a.test_rr(false, RCX)), [0x85, 0xc9]);
        assert_eq!(bytes(|a| a.sign_extend_rdx(true)), [0x48, 0x99]);
        assert_eq!(bytes(|a| a.sign_extend_rdx(false)), [0x99]);
        assert_eq!(bytes(|a| a.div_r(true, false, RCX)), [0x48, 0xf7, 0xf1]);
        assert_eq!(bytes(|a| a.div_r(true, true, RCX)), [0x48, 0xf7, 0xf9]);
        assert_eq!(bytes(|a| a.div_r(false, false, RCX)), [0xf7, 0xf1]);
        assert_eq!(bytes(|a| a.div_r(false, true, RCX)), [0xf7, 0xf9]);
        assert_eq!(bytes(|a| a.neg(true, RAX)), [0x48, 0xf7, 0xd8]);
        assert_eq!(bytes(|a| a.neg(false, RAX)), [0xf7, 0xd8]);
        // movslq %eax,%rax ; setl %al ; movzbl %al,%eax
        assert_eq!(bytes(|a| a.movsxd(RAX, RAX)), [0x48, 0x63, 0xc0]);
        assert_eq!(
            bytes(|a| a.setcc_rax(Cond::L)),
            [0x0f, 0x9c, 0xc0, 0x0f, 0xb6, 0xc0]
        );
        // lea 0x10(%rsi),%rsi
        assert_eq!(bytes(|a| a.add_imm(RSI, 0x10)), [0x48, 0x8d, 0x76, 0x10]);
        // movsbq (%rcx,%rsi,1),%rax ; movzwl ; movslq ; mov (%rcx,%rsi,1),%rax
        assert_eq!(
            bytes(|a| a.load_indexed(1, true, RCX, RSI)),
            [0x48, 0x0f, 0xbe, 0x04, 0x31]
        );
        assert_eq!(
            bytes(|a| a.load_indexed(2, false, RCX, RSI)),
            [0x0f, 0xb7, 0x04, 0x31]
        );
        assert_eq!(
            bytes(|a| a.load_indexed(4, true, RCX, RSI)),
            [0x48, 0x63, 0x04, 0x31]
        );
        assert_eq!(
            bytes(|a| a.load_indexed(8, false, RCX, RSI)),
            [0x48, 0x8b, 0x04, 0x31]
        );
        // mov %ax,(%rcx,%rsi,1) ; mov %al,... ; mov %rax,...
        assert_eq!(
            bytes(|a| a.store_indexed(2, RCX, RSI)),
            [0x66, 0x89, 0x04, 0x31]
        );
        assert_eq!(bytes(|a| a.store_indexed(1, RCX, RSI)), [0x88, 0x04, 0x31]);
        assert_eq!(
            bytes(|a| a.store_indexed(8, RCX, RSI)),
            [0x48, 0x89, 0x04, 0x31]
        );
        // call *0x10(%r12) ; push %r12 ; pop %rbx
        assert_eq!(
            bytes(|a| a.call_mem(R12, 0x10)),
            [0x41, 0xff, 0x54, 0x24, 0x10]
        );
        assert_eq!(bytes(|a| a.push(R12)), [0x41, 0x54]);
        assert_eq!(bytes(|a| a.pop(RBX)), [0x5b]);
        // lea 0x0(%rip),%rax with the label right after it
        assert_eq!(
            bytes(|a| {
                let l = a.label();
                a.lea_rip(RAX, l);
                a.bind(l);
            }),
            [0x48, 0x8d, 0x05, 0, 0, 0, 0]
        );
        // 32-bit and no displacements: mov 0x200(%rbx),%rax ; mov (%rbx),%rax ;
        // mov 0x0(%rbp),%rax (rbp needs one) ; cmp $0x0,%rcx as imm32 ; jmp *0x20(%rcx) ;
        // incq 0x40(%r12)
        assert_eq!(
            bytes(|a| a.load(RAX, RBX, 0x200)),
            [0x48, 0x8b, 0x83, 0, 2, 0, 0]
        );
        assert_eq!(bytes(|a| a.load(RAX, RBX, 0)), [0x48, 0x8b, 0x03]);
        assert_eq!(bytes(|a| a.load(RAX, RBP, 0)), [0x48, 0x8b, 0x45, 0]);
        assert_eq!(
            bytes(|a| a.cmp_imm32(RCX, 0)),
            [0x48, 0x81, 0xf9, 0, 0, 0, 0]
        );
        assert_eq!(bytes(|a| a.jmp_mem(RCX, 0x20)), [0xff, 0x61, 0x20]);
        assert_eq!(
            bytes(|a| a.inc_mem(R12, 0x40)),
            [0x49, 0xff, 0x44, 0x24, 0x40]
        );
        // jne to itself: 0f 85 fa ff ff ff
        assert_eq!(
            bytes(|a| {
                let l = a.label();
                a.bind(l);
                a.jcc(Cond::Ne, l);
            }),
            [0x0f, 0x85, 0xfa, 0xff, 0xff, 0xff]
        );
    }
}
