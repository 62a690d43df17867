/* Misaligned SC (with or without a reservation) and every misaligned AMO raise
 * store/AMO-address-misaligned (6), and AMOs at an unmapped address raise store/AMO access fault
 * (7), with mtval = the address, mepc = the instruction, and neither rd nor memory changed.
 * ftvm-only: QEMU 7.2 reports misaligned AMOs as cause 4 and AMO access faults as cause 5, and it
 * fails an SC whose address differs from the reservation without trapping. */
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

  lr.w a4, (s0)
  MIS(1, 6, 2, nop, sc.w a0, a0, (a5))
  lr.d a4, (s0)
  MIS(2, 6, 4, nop, sc.d a0, a0, (a5))
  MIS(3, 6, 2, nop, sc.w a0, a0, (a5))
  MIS(4, 6, 1, nop, amoadd.w a0, a0, (a5))
  MIS(5, 6, 6, nop, amoswap.w a0, a0, (a5))
  MIS(6, 6, 4, nop, amoswap.d a0, a0, (a5))
  MIS(7, 6, 2, nop, amoor.d a0, a0, (a5))
  MIS(8, 6, 3, nop, amomaxu.d a0, a0, (a5))
  MIS(9, 6, 12, nop, amominu.d a0, a0, (a5))
  MIS(10, 6, 3, nop, amoxor.w a0, a0, (a5))
  MIS(11, 6, 5, nop, amoand.w a0, a0, (a5))
  MIS(12, 6, 7, nop, amomin.w a0, a0, (a5))
  MIS(13, 6, 7, nop, amomax.d a0, a0, (a5))
  MIS(14, 6, 2, nop, amomaxu.w a0, a0, (a5))
  MIS(15, 6, 1, nop, amominu.w a0, a0, (a5))
  MIS(16, 6, 5, nop, amoadd.d a0, a0, (a5))
  MIS(17, 6, 6, nop, amoxor.d a0, a0, (a5))
  MIS(18, 6, 9, nop, amoand.d a0, a0, (a5))
  MIS(19, 6, 10, nop, amomin.d a0, a0, (a5))
  MIS(20, 6, 11, nop, amoor.w a0, a0, (a5))
  MIS(21, 6, 14, nop, amomax.w a0, a0, (a5))
  /* access faults: nothing at physical address 8 */
#define AF(n, insn...)                               \
  li TESTNUM, n; li a5, 8; li a0, 0x77;              \
  TRAP_EXPECT(1f);                                   \
2: insn;                                             \
  FAIL;                                              \
1: CHECK_IMM(a1, 7); la t6, 2b; bne a2, t6, __fail;  \
  bne a3, a5, __fail; CHECK_IMM(a0, 0x77)
  AF(22, amoadd.d a0, a0, (a5))
  AF(23, amoswap.w a0, a0, (a5))
  AF(24, amoor.w a0, a0, (a5))
  AF(25, amomaxu.d a0, a0, (a5))
TEST_END
