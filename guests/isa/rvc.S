/* RV64C: every compressed instruction, written with explicit c.* mnemonics so that the assembler
 * cannot choose the 32-bit form, checked against the semantics of its expansion: immediate scaling
 * and sign extension, x8..x15 register fields, sp-relative forms, c.addiw/c.subw/c.addw sign
 * extension, c.jalr linking pc + 2, 32-bit instructions at 2-byte aligned addresses and straddling a
 * page boundary, and FP compressed loads/stores. Reserved encodings are in exceptions_m. */
#include "test.h"

  .section .data
  .align 4
buf:
  .dword 0x8877665544332211, 0xfedcba9876543210, 0x0123456789abcdef, 0
  .space 256
stk:
  .space 512
stk_top:

  .section .text
TEST_BEGIN
  FP_ENABLE
  la s0, buf
  la sp, stk_top
  /* c.addi4spn: rd' = sp + nzuimm (scaled by 4, up to 1020) */
  TEST_CASE(1, a0, 16, c.addi4spn a0, sp, 16; sub a0, a0, sp)
  TEST_CASE(2, a0, 1020, c.addi4spn s1, sp, 1020; sub a0, s1, sp)
  /* c.lw / c.ld / c.sw / c.sd with rd', rs1' and scaled offsets */
  TEST_CASE(3, a0, 0xffffffff88776655, c.lw a0, 4(s0))
  TEST_CASE(4, a0, 0xfedcba9876543210, c.ld a0, 8(s0))
  TEST_CASE(5, a0, 0x0123456789abcdef, mv a5, s0; c.ld a0, 16(a5))
  TEST_CASE(6, a0, 0xffffffffcafef00d, li a1, 0x12345678cafef00d; c.sw a1, 124(s0); lw a0, 124(s0); lw a2, 128(s0); bnez a2, __fail)
  TEST_CASE(7, a0, 0x12345678cafef00d, c.sd a1, 248(s0); ld a0, 248(s0))
  TEST_CASE(8, a0, 0x76543210, c.lw a0, 8(s0); slli a0, a0, 32; srli a0, a0, 32)
  /* c.fld / c.fsd */
  TEST_CASE(9, a0, 0xfedcba9876543210, c.fld fa0, 8(s0); fmv.x.d a0, fa0)
  TEST_CASE(10, a0, 0xfedcba9876543210, c.fsd fa0, 240(s0); ld a0, 240(s0))
  /* c.nop, c.addi (incl. negative), c.addiw, c.li, c.addi16sp, c.lui */
  TEST_CASE(11, a0, 5, li a0, 5; c.nop)
  TEST_CASE(12, a0, 4, li a0, 5; c.addi a0, -1)
  TEST_CASE(13, a0, 0xffffffffffffffe5, li a0, 5; c.addi a0, -32)
  TEST_CASE(14, a0, 36, li a0, 5; c.addi a0, 31)
  TEST_CASE(15, a0, 0xffffffff80000000, li a0, 0x7fffffff; c.addiw a0, 1)
  TEST_CASE(16, a0, 0x0000000000000005, li a0, 0xffffffff00000005; c.addiw a0, 0) /* sext.w */
  TEST_CASE(17, a0, 0xffffffffffffffe0, c.li a0, -32)
  TEST_CASE(18, a0, 31, c.li a0, 31)
  TEST_CASE(19, a0, 0xfffffffffffffe00, mv a1, sp; c.addi16sp sp, -512; sub a0, sp, a1; mv sp, a1)
  TEST_CASE(20, a0, 496, mv a1, sp; c.addi16sp sp, 496; sub a0, sp, a1; mv sp, a1)
  TEST_CASE(21, a0, 0xfffffffffffff000, c.lui a0, 0xfffff)
  TEST_CASE(22, a0, 0x1f000, c.lui a0, 31)
  TEST_CASE(23, a0, 0xfffffffffffe0000, c.lui a0, 0xfffe0)
  /* c.srli / c.srai / c.andi (6-bit amounts on RV64) */
  TEST_CASE(24, a0, 0x0000000000000001, li a0, 0x8000000000000000; c.srli a0, 63)
  TEST_CASE(25, a0, 0x4000000000000000, li a0, 0x8000000000000000; c.srli a0, 1)
  TEST_CASE(26, a0, 0xffffffffffffffff, li a0, 0x8000000000000000; c.srai a0, 63)
  TEST_CASE(27, a0, 0xfffffffff0000000, li a0, 0xf000000000000000; c.srai a0, 32)
  TEST_CASE(28, a0, 0xffffffffffffffe0, li a0, -1; c.andi a0, -32)
  TEST_CASE(29, a0, 0x0000000000000005, li a0, 0x1234567812345675; c.andi a0, 15)
  /* c.sub / c.xor / c.or / c.and / c.subw / c.addw */
  TEST_CASE(30, a0, 0xffffffffffffffff, li a0, 1; li a1, 2; c.sub a0, a1)
  TEST_CASE(31, a0, 0xf0f0f0f0f0f0f0f0, li a0, 0xff00ff00ff00ff00; li a1, 0x0ff00ff00ff00ff0; c.xor a0, a1)
  TEST_CASE(32, a0, 0xfff0fff0fff0fff0, li a0, 0xff00ff00ff00ff00; li a1, 0x0ff00ff00ff00ff0; c.or a0, a1)
  TEST_CASE(33, a0, 0x0f000f000f000f00, li a0, 0xff00ff00ff00ff00; li a1, 0x0ff00ff00ff00ff0; c.and a0, a1)
  TEST_CASE(34, a0, 0x000000007fffffff, li a0, 0x80000000; li a1, 1; c.subw a0, a1)
  TEST_CASE(35, a0, 0xffffffff80000000, li a0, 0x17fffffff; li a1, 0x100000001; c.subw a0, a1; li t6, 0x7ffffffe; bne a0, t6, __fail; li a0, 0x7fffffff; li a1, 1; c.addw a0, a1)
  TEST_CASE(36, a0, 0, li a0, 0xffffffff; li a1, 1; c.addw a0, a1)
  /* c.slli (shift by 63, by 32) */
  TEST_CASE(37, a0, 0x8000000000000000, li a0, 1; c.slli a0, 63)
  TEST_CASE(38, a0, 0x1234567800000000, li a0, 0x9999999912345678; c.slli a0, 32)
  /* sp-relative: c.lwsp / c.ldsp / c.fldsp / c.swsp / c.sdsp / c.fsdsp */
  TEST_CASE(39, a0, 0x00000000deadbeef, li a1, 0x00000000deadbeef; c.swsp a1, 252(sp); lwu a0, 252(sp))
  TEST_CASE(40, a0, 0xffffffffdeadbeef, c.lwsp a0, 252(sp))
  TEST_CASE(41, a0, 0x0011223344556677, li a1, 0x0011223344556677; c.sdsp a1, 504(sp); ld a0, 504(sp))
  TEST_CASE(42, a0, 0x0011223344556677, c.ldsp a0, 504(sp))
  TEST_CASE(43, a0, 0x0011223344556677, c.fldsp fa1, 504(sp); fmv.x.d a0, fa1)
  TEST_CASE(44, a0, 0x0011223344556677, c.fsdsp fa1, 0(sp); ld a0, 0(sp))
  TEST_CASE(45, a0, 0xffffffffffffffff, li a1, -1; c.sdsp a1, 8(sp); c.lwsp a0, 12(sp))
  /* c.mv / c.add */
  TEST_CASE(46, a0, 0x1234, li a1, 0x1234; c.mv a0, a1)
  TEST_CASE(47, a0, 0x2468, li a0, 0x1234; c.add a0, a0)
  TEST_CASE(48, a0, 0x0, li a0, 0xffffffffffffffff; li a1, 1; c.add a0, a1)
  /* c.j / c.beqz / c.bnez, forward and backward */
  TEST_CASE(49, a0, 1, li a0, 0; c.j 1f; li a0, 9; 1: addi a0, a0, 1)
  TEST_CASE(50, a0, 2, li a0, 0; j 2f; 1: addi a0, a0, 2; j 3f; 2: c.j 1b; li a0, 9; 3:)
  TEST_CASE(51, a0, 1, li a0, 0; li a1, 0; c.beqz a1, 1f; li a0, 9; 1: addi a0, a0, 1)
  TEST_CASE(52, a0, 0, li a0, 0; li a1, 1; c.beqz a1, 1f; j 2f; 1: li a0, 9; 2:)
  TEST_CASE(53, a0, 1, li a0, 0; li a1, 0x100000000; c.bnez a1, 1f; li a0, 9; 1: addi a0, a0, 1)
  TEST_CASE(54, a0, 3, li a0, 3; li a1, 5; 1: addi a1, a1, -1; c.bnez a1, 1b; li t6, 0; bne a1, t6, __fail)
  TEST_CASE(55, a0, 1, li a0, 0; li a1, 0x8000000000000000; c.bnez a1, 1f; li a0, 9; 1: addi a0, a0, 1)
  /* c.jr / c.jalr: link is pc + 2 */
  TEST_CASE(56, a0, 1, li a0, 0; la a1, 1f; c.jr a1; li a0, 9; 1: addi a0, a0, 1)
  TEST_CASE(57, a0, 2, la a1, 1f; c.jalr a1; 2: FAIL; 1: la a2, 2b; sub a0, ra, a2; addi a0, a0, 2)
  TEST_CASE(58, a0, 7, li a0, 0; call csub; addi a0, a0, 2)
  /* a 32-bit instruction at a 2-byte aligned address, and one straddling a page boundary */
  TEST_CASE(59, a0, 10, li a0, 5; .balign 4; c.nop; .option push; .option norvc; addi a0, a0, 5; .option pop; c.nop)
  TEST_CASE(60, a0, 105, li a0, 100; call cross_page)
  j done
csub:
  c.li a0, 5
  c.jr ra
  .balign 4096
  .skip 4096 - 2048 * 2
cross_page:
  .rept 2047
  c.nop
  .endr
  .option push
  .option norvc
  addi a0, a0, 5          /* bytes 4094..4097 of the page pair */
  .option pop
  ret
done:
TEST_END
