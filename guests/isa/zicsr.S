/* Zicsr and Zicntr in M-mode: all six CSR instructions (old value returned, set/clear masks,
 * 5-bit zero-extended immediates, rd = rs1 aliasing, rs1 = x0 / uimm = 0 meaning "no write" so a
 * read-only CSR may be read), writes to read-only CSRs and accesses to unknown CSRs raising
 * illegal instruction (mtval = 0 or the instruction bits), misa/mhartid, and the counters:
 * cycle/instret advance, minstret/mcycle are writable, time follows the CLINT's mtime. */
#include "test.h"

#define ILLEGAL(n, insn_word)                        \
  li TESTNUM, n; TRAP_EXPECT(1f);                    \
2: .word insn_word;                                  \
  FAIL;                                              \
1: CHECK_IMM(a1, 2); la t6, 2b; bne a2, t6, __fail;  \
  beqz a3, 3f; li t6, insn_word; bne a3, t6, __fail; \
3:

TEST_BEGIN
  TEST_CASE(1, a0, 0x1234, li a1, 0x1234; csrw mscratch, a1; csrr a0, mscratch)
  TEST_CASE(2, a0, 0x1234, li a1, -1; csrrw a0, mscratch, a1; csrr a2, mscratch; CHECK_IMM(a2, -1))
  TEST_CASE(3, a0, 0xffffffffffffffff, li a1, 0xff; csrrc a0, mscratch, a1; csrr a2, mscratch; CHECK_IMM(a2, 0xffffffffffffff00))
  TEST_CASE(4, a0, 0xffffffffffffff00, li a1, 0x0f; csrrs a0, mscratch, a1; csrr a2, mscratch; CHECK_IMM(a2, 0xffffffffffffff0f))
  TEST_CASE(5, a0, 0xffffffffffffff0f, csrrwi a0, mscratch, 31; csrr a2, mscratch; CHECK_IMM(a2, 31))
  TEST_CASE(6, a0, 31, csrrci a0, mscratch, 0x11; csrr a2, mscratch; CHECK_IMM(a2, 0x0e))
  TEST_CASE(7, a0, 0x0e, csrrsi a0, mscratch, 0x10; csrr a2, mscratch; CHECK_IMM(a2, 0x1e))
  TEST_CASE(8, a0, 0x1e, csrrsi a0, mscratch, 0; csrrci a2, mscratch, 0; CHECK_IMM(a2, 0x1e); csrrs a2, mscratch, x0; CHECK_IMM(a2, 0x1e))
  /* rd = rs1: swap */
  TEST_CASE(9, a0, 0x1e, li a0, 0x55; csrrw a0, mscratch, a0; csrr a2, mscratch; CHECK_IMM(a2, 0x55))
  /* rd = x0 still writes */
  TEST_CASE(10, a0, 0x66, li a1, 0x66; csrrw x0, mscratch, a1; csrr a0, mscratch)
  TEST_CASE(11, a0, 0x76, csrrsi x0, mscratch, 0x10; csrr a0, mscratch)
  /* read-only CSRs may be read with rs1 = x0 / uimm = 0 */
  TEST_CASE(12, a0, 0, csrr a0, mhartid)
  TEST_CASE(13, a0, 0, csrrsi a0, mhartid, 0; csrrc a0, mhartid, x0)
  TEST_CASE(14, a0, 0, csrr a1, mvendorid; csrr a1, marchid; csrr a1, mimpid; li a0, 0)
  /* misa: MXL = 2 (RV64) and I, M, A, F, D, C, S, U */
  TEST_CASE(15, a0, 2, csrr a1, misa; srli a0, a1, 62; li t6, (1<<8)|(1<<12)|(1<<0)|(1<<5)|(1<<3)|(1<<2)|(1<<18)|(1<<20); and a2, a1, t6; bne a2, t6, __fail)
  /* writes to read-only CSRs and unknown CSRs are illegal */
  ILLEGAL(16, 0xf1401073)  /* csrw mhartid, x0 */
  ILLEGAL(17, 0xf110e073)  /* csrrsi x0, mvendorid, 1 */
  ILLEGAL(18, 0xc0015073)  /* csrwi cycle, 2 */
  li ra, 4
  ILLEGAL(19, 0xc020a073)  /* csrs instret, ra */
  ILLEGAL(20, 0x0ff02573)  /* csrr a0, 0x0ff (unknown) */
  ILLEGAL(21, 0x8c002573)  /* csrr a0, 0x8c0 (unknown) */
  ILLEGAL(22, 0x5c059073)  /* csrw 0x5c0, a1 (unknown) */
  ILLEGAL(23, 0x7c002573)  /* csrr a0, 0x7c0 (unknown) */
  /* the trap left mscratch alone */
  TEST_CASE(24, a0, 0x76, csrr a0, mscratch)
  /* counters move forward */
  TEST_CASE(25, a0, 1, rdcycle a1; nop; nop; nop; rdcycle a2; sltu a0, a1, a2)
  TEST_CASE(26, a0, 1, rdinstret a1; nop; nop; nop; rdinstret a2; sub a3, a2, a1; sltiu a0, a3, 3; xori a0, a0, 1)
  TEST_CASE(27, a0, 1, csrr a1, mcycle; csrr a2, minstret; nop; csrr a3, mcycle; csrr a4, minstret; sltu a0, a1, a3; sltu a5, a2, a4; and a0, a0, a5)
  /* minstret / mcycle writable */
  TEST_CASE(28, a0, 1, li a1, 0x100000000; csrw minstret, a1; csrr a2, minstret; sub a2, a2, a1; li a3, 1000000000; sltu a0, a2, a3)
  TEST_CASE(29, a0, 1, li a1, 0x200000000; csrw mcycle, a1; csrr a2, mcycle; sub a2, a2, a1; li a3, 1000000000; sltu a0, a2, a3)
  TEST_CASE(30, a0, 1, csrr a2, instret; li a1, 0x100000000; sub a2, a2, a1; li a3, 1000000000; sltu a0, a2, a3)
  /* time CSR agrees with the CLINT's mtime and moves forward */
  TEST_CASE(31, a0, 1,
    li a5, 0x0200bff8; ld a1, 0(a5); rdtime a2; ld a3, 0(a5);
    bltu a2, a1, __fail; bltu a3, a2, __fail; sub a4, a3, a1; li t6, 10000000; bgeu a4, t6, __fail;
    li a0, 1)
  TEST_CASE(32, a0, 1,
    rdtime a1; li a2, 200000; 1: addi a2, a2, -1; bnez a2, 1b; rdtime a3; sltu a0, a1, a3)
TEST_END
