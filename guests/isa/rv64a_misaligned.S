/* Misaligned LR raises load-address-misaligned (4) with mtval = the address and mepc = the
 * instruction, and writes no register. (Plain loads/stores at such addresses succeed: rv64i_mem;
 * misaligned SC and AMOs: rv64a_amo_misaligned.) */
#include "test.h"

  .section .data
  .align 4
mem: .dword 0x1111111111111111, 0x2222222222222222

  .section .text
TEST_BEGIN
  la s0, mem
/* Case n: `insn` (at label 2) must trap with `cause`, mepc = label 2, mtval = a5 = s0 + off,
 * and leave a0 and memory unchanged. `pre` runs first (e.g. an LR that sets a reservation). */
#define MIS(n, cause, off, pre, insn...)             \
  li TESTNUM, n; addi a5, s0, off; li a0, 0x77;      \
  pre;                                               \
  TRAP_EXPECT(1f);                                   \
2: insn;                                             \
  FAIL;                                              \
1: CHECK_IMM(a1, cause); la t6, 2b; bne a2, t6, __fail; \
  bne a3, a5, __fail; CHECK_IMM(a0, 0x77);           \
  ld a0, 0(s0); CHECK_IMM(a0, 0x1111111111111111);   \
  ld a0, 8(s0); CHECK_IMM(a0, 0x2222222222222222)

  MIS(1, 4, 2, nop, lr.w a0, (a5))
  MIS(2, 4, 4, nop, lr.d a0, (a5))
  MIS(3, 4, 1, nop, lr.d a0, (a5))
  MIS(4, 4, 7, nop, lr.w.aqrl a0, (a5))
  /* after a failed LR, an aligned LR/SC pair still works */
  li TESTNUM, 5; lr.d a0, (s0); sc.d a1, a0, (s0); CHECK_IMM(a1, 0)
TEST_END
