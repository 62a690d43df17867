/* RV64I register-register, register-immediate and upper-immediate instructions, including the
 * 32-bit (.w) forms and their sign extension, shift-amount masking, x0 as destination/source, and
 * rd aliasing a source. */
#include "test.h"

#define RR(n, op, res, a, b) TEST_CASE(n, a0, res, li a1, a; li a2, b; op a0, a1, a2)
#define RI(n, op, res, a, imm) TEST_CASE(n, a0, res, li a1, a; op a0, a1, imm)

TEST_BEGIN
  /* add / addw / sub / subw */
  RR(1, add, 0x0000000000000003, 1, 2)
  RR(2, add, 0x0000000000000000, -1, 1)
  RR(3, add, 0x8000000000000000, 0x7fffffffffffffff, 1)
  RR(4, add, 0x00000000ffffffff, 0x00000000fffffffe, 1)
  RR(5, addw, 0xffffffff80000000, 0x7fffffff, 1)
  RR(6, addw, 0x0000000000000000, 0x12345678ffffffff, 1)
  RR(7, addw, 0x0000000000000003, 0xffffffff00000001, 0x0000000100000002)
  RR(8, sub, 0xffffffffffffffff, 1, 2)
  RR(9, sub, 0x7fffffffffffffff, 0x8000000000000000, 1)
  RR(10, subw, 0x000000007fffffff, 0x80000000, 1)
  RR(11, subw, 0xffffffffffffffff, 0x100000000, 1)
  /* addi / addiw: 12-bit signed immediates */
  RI(12, addi, 0x0000000000000800, 0x1000, -2048)
  RI(13, addi, 0x00000000000007ff, 0, 2047)
  RI(14, addi, 0xfffffffffffff800, 0, -2048)
  RI(15, addiw, 0xffffffff80000000, 0x7fffffff, 1)
  RI(16, addiw, 0x000000007fffffff, 0xffffffff80000000, -1)
  RI(17, addiw, 0x0000000000000005, 0xabcdef0000000005, 0) /* sext.w */
  /* logical */
  RR(18, and, 0x0f000f000f000f00, 0xff00ff00ff00ff00, 0x0ff00ff00ff00ff0)
  RR(19, or, 0xfff0fff0fff0fff0, 0xff00ff00ff00ff00, 0x0ff00ff00ff00ff0)
  RR(20, xor, 0xf0f0f0f0f0f0f0f0, 0xff00ff00ff00ff00, 0x0ff00ff00ff00ff0)
  RI(21, andi, 0xff00ff00ff00ff00, 0xff00ff00ff00ff00, -1)
  RI(22, andi, 0x0000000000000700, 0xff00ff00ff00ff00, 0x7f0)
  RI(23, ori, 0xffffffffffffff0f, 0x000000000000000f, -0xf1)
  RI(24, ori, 0x12345678123457ff, 0x1234567812345678, 0x7ff)
  RI(25, xori, 0xedcba987edcba987, 0x1234567812345678, -1) /* not */
  RI(26, xori, 0x1234567812345087, 0x1234567812345678, 0x6ff)
  /* shifts: RV64 uses 6 bits of the amount, .w forms 5 bits */
  RR(27, sll, 0x8000000000000000, 1, 63)
  RR(28, sll, 0x0000000000000002, 1, 65)          /* amount masked to 1 */
  RR(29, srl, 0x0000000000000001, 0x8000000000000000, 63)
  RR(30, srl, 0x7fffffffffffffff, -1, 0xffffffc1) /* amount 1 */
  RR(31, sra, 0xffffffffffffffff, 0x8000000000000000, 63)
  RR(32, sra, 0xc000000000000000, 0x8000000000000000, 1)
  RR(33, sllw, 0xffffffff80000000, 1, 31)
  RR(34, sllw, 0x0000000000000002, 1, 33)         /* amount masked to 1 */
  RR(35, sllw, 0x0000000000000000, 0xffffffff00000000, 0)
  RR(36, srlw, 0x0000000000000001, 0xffffffff80000000, 31)
  RR(37, srlw, 0xffffffff80000000, 0x0000000180000000, 0) /* result sign-extended */
  RR(38, srlw, 0x000000007fffffff, 0x00000000ffffffff, 33)
  RR(39, sraw, 0xffffffffffffffff, 0x0000000080000000, 31)
  RR(40, sraw, 0x0000000000000001, 0xfffffff140000000, 62) /* amount 30 */
  RI(41, slli, 0x8000000000000000, 1, 63)
  RI(42, slli, 0x0123456789abcdef0, 0x123456789abcdef, 4)
  RI(43, srli, 0x0000000000000001, 0x8000000000000000, 63)
  RI(44, srli, 0x0fffffffffffffff, -1, 4)
  RI(45, srai, 0xffffffffffffffff, 0x8000000000000000, 63)
  RI(46, srai, 0x0000000000000000, 0x7fffffffffffffff, 63)
  RI(47, slliw, 0xffffffff80000000, 1, 31)
  RI(48, slliw, 0x0000000012345670, 0xabcdef0001234567, 4)
  RI(49, srliw, 0x0000000000000001, 0x0000000080000000, 31)
  RI(50, srliw, 0x000000000f000000, 0xfffffffff0000000, 4) /* upper half ignored */
  RI(51, sraiw, 0xffffffffffffffff, 0x0000000080000000, 31)
  RI(52, sraiw, 0x0000000007ffffff, 0xffffffff7fffffff, 4)
  RI(53, slliw, 0x0000000012345678, 0xffffffff12345678, 0)
  /* comparisons */
  RR(54, slt, 1, -1, 0)
  RR(55, slt, 0, 0, -1)
  RR(56, slt, 0, 5, 5)
  RR(57, sltu, 0, -1, 0)
  RR(58, sltu, 1, 0, -1)
  RR(59, sltu, 0, 7, 7)
  RI(60, slti, 1, -2049, -2048)
  RI(61, slti, 0, 2047, 2047)
  RI(62, sltiu, 1, 0, -1)               /* immediate sign-extended, then unsigned */
  RI(63, sltiu, 0, 0xfffffffffffff801, -2048)
  RI(64, sltiu, 1, 0, 1)                /* seqz */
  RI(65, sltiu, 0, 0x8000000000000000, 1)
  RR(66, sltu, 1, 0, 0x8000000000000000) /* snez via x0 below */
  TEST_CASE(67, a0, 1, li a2, 5; sltu a0, x0, a2)
  /* lui / auipc */
  TEST_CASE(68, a0, 0x0000000012345000, lui a0, 0x12345)
  TEST_CASE(69, a0, 0xffffffff80000000, lui a0, 0x80000)
  TEST_CASE(70, a0, 0xfffffffffffff000, lui a0, 0xfffff)
  TEST_CASE(71, a0, 0x0000000000000000, lui a0, 0)
  TEST_CASE(72, a0, 0, 1: auipc a0, 0; la a1, 1b; sub a0, a0, a1)
  TEST_CASE(73, a0, 0x1000, 1: auipc a0, 1; la a1, 1b; sub a0, a0, a1)
  TEST_CASE(74, a0, 0xffffffff80000000, 1: auipc a0, 0x80000; la a1, 1b; sub a0, a0, a1)
  /* x0 is hard-wired to zero, as destination and as source */
  TEST_CASE(75, a0, 0, li a1, 5; add x0, a1, a1; mv a0, x0)
  TEST_CASE(76, a0, 0, lui x0, 0x12345; addi a0, x0, 0)
  TEST_CASE(77, a0, 7, addi a0, x0, 7; or a0, a0, x0)
  /* rd aliasing rs1 / rs2 / both */
  TEST_CASE(78, a0, 13, li a0, 6; li a1, 7; add a0, a0, a1)
  TEST_CASE(79, a0, 1, li a0, 6; li a1, 7; sub a0, a1, a0)
  TEST_CASE(80, a0, 24, li a0, 12; add a0, a0, a0)
  TEST_CASE(81, a0, 0, li a0, 12; sub a0, a0, a0)
  TEST_CASE(82, a0, 0x20, li a0, 1; sll a0, a0, a0; slli a0, a0, 4)
  /* nop is addi x0, x0, 0 and changes nothing */
  TEST_CASE(83, a0, 9, li a0, 9; nop; nop)
TEST_END
