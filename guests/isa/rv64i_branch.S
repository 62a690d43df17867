/* RV64I control transfer: every conditional branch taken and not taken (signed vs unsigned
 * comparisons, backward and forward), JAL and JALR link values, JALR clearing bit 0 of the target,
 * JALR with rd = rs1, and x0 as link register. */
#include "test.h"

/* Case n: branch `op a1, a2` must be taken (taken = 1) or not (taken = 0). */
#define BR(n, op, taken, a, b)                       \
  li TESTNUM, n; li a1, a; li a2, b;                 \
  li a0, 0;                                          \
  op a1, a2, 1f;                                     \
  addi a0, a0, 1;                                    \
1: li t6, 1 - taken; bne a0, t6, __fail;             \
  /* backward form */                                \
  li a0, 0; j 3f;                                    \
2: addi a0, a0, 2; j 4f;                             \
3: op a1, a2, 2b;                                    \
  addi a0, a0, 1;                                    \
4: li t6, 1 + taken; bne a0, t6, __fail

TEST_BEGIN
  BR(1, beq, 1, 5, 5)
  BR(2, beq, 0, 5, 6)
  BR(3, beq, 0, 0x100000005, 5)
  BR(4, bne, 1, 0x100000005, 5)
  BR(5, bne, 0, -1, -1)
  BR(6, blt, 1, -1, 0)
  BR(7, blt, 0, 0, -1)
  BR(8, blt, 0, 3, 3)
  BR(9, blt, 1, 0x8000000000000000, 0x7fffffffffffffff)
  BR(10, bge, 1, 3, 3)
  BR(11, bge, 1, 0, -1)
  BR(12, bge, 0, -1, 0)
  BR(13, bltu, 1, 0, -1)
  BR(14, bltu, 0, -1, 0)
  BR(15, bltu, 0, 7, 7)
  BR(16, bltu, 1, 0x7fffffffffffffff, 0x8000000000000000)
  BR(17, bgeu, 1, -1, 0)
  BR(18, bgeu, 0, 0, -1)
  BR(19, bgeu, 1, 7, 7)
  /* pseudo-forms using x0 */
  BR(20, bgt, 1, 1, 0)       /* blt a2, a1 */
  BR(21, ble, 1, -5, -5)
  BR(22, bgtu, 1, -1, 1)
  BR(23, bleu, 0, -1, 1)
  TEST_CASE(24, a0, 1, li a0, 0; li a1, -3; bltz a1, 1f; li a0, 2; j 2f; 1: li a0, 1; 2:)
  TEST_CASE(25, a0, 2, li a0, 0; li a1, 0; bnez a1, 1f; li a0, 2; j 2f; 1: li a0, 1; 2:)

  /* jal: link = pc + 4, target pc-relative */
  TEST_CASE(26, a0, 0,
    jal ra, 1f; 2: li a0, 99; j 3f;
    1: la a1, 2b; sub a0, ra, a1; 3:)
  /* jal x0 (j) does not link */
  TEST_CASE(27, a0, 0x1234, li ra, 0x1234; j 1f; li ra, 0; 1: mv a0, ra)
  /* jal with a different link register */
  TEST_CASE(28, a0, 0, jal t0, 1f; 2: nop; 1: la a1, 2b; sub a0, t0, a1)
  /* jalr: target = (rs1 + imm) & ~1 */
  TEST_CASE(29, a0, 3,
    li a0, 0; la a1, 1f; jalr ra, 0(a1); 2: li a0, 1; 1: addi a0, a0, 3;
    la a1, 2b; bne ra, a1, __fail)
  TEST_CASE(30, a0, 5, li a0, 0; la a1, 1f + 1; jalr ra, 0(a1); li a0, 1; 1: addi a0, a0, 5)
  TEST_CASE(31, a0, 7, li a0, 0; la a1, 1f + 8; jalr ra, -8(a1); li a0, 1; 1: addi a0, a0, 7)
  TEST_CASE(32, a0, 7, li a0, 0; la a1, 1f - 12; jalr ra, 13(a1); li a0, 1; 1: addi a0, a0, 7)
  /* jalr with rd = rs1: target computed from the old value */
  TEST_CASE(33, a0, 0,
    la a1, 1f; jalr a1, 0(a1); 2: FAIL; 1: la a2, 2b; sub a0, a1, a2)
  /* jalr x0 (jr / ret) */
  TEST_CASE(34, a0, 1, li a0, 0; la a1, 1f; jr a1; li a0, 9; 1: addi a0, a0, 1)
  /* call/ret through a subroutine, twice */
  TEST_CASE(35, a0, 4, li a0, 0; call sub_add2; call sub_add2)
  /* branches with far (near 4 KiB) offsets */
  TEST_CASE(36, a0, 1, li a0, 0; li a1, 1; bnez a1, far_fwd; back_here: )
  j after_far
sub_add2:
  addi a0, a0, 2
  ret
far_fwd:
  .rept 1000
  nop
  .endr
  li a0, 1
  beqz x0, back_here
after_far:
TEST_END
