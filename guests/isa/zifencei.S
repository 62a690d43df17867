/* Zifencei: code written by stores becomes visible to instruction fetch after FENCE.I, each time
 * it is rewritten (an emulator that caches decoded code must drop the stale copy); FENCE.I also
 * orders a store that patches the very next instruction. */
#include "test.h"

  .section .data
  .align 4
  .option push
  .option norvc
patch:
  li a0, 1
  ret
patch2:
  li a0, 0
  fence.i
  li a0, 7
  ret
  .option pop

  .section .text
TEST_BEGIN
  la s0, patch
  TEST_CASE(1, a0, 1, jalr ra, 0(s0))
  /* addi a0, x0, imm  =  (imm << 20) | (10 << 7) | 0x13 */
  TEST_CASE(2, a0, 2, li a1, (2 << 20) | 0x513; sw a1, 0(s0); fence.i; jalr ra, 0(s0))
  TEST_CASE(3, a0, 3, li a1, (3 << 20) | 0x513; sw a1, 0(s0); fence.i; jalr ra, 0(s0))
  /* a loop that runs the code many times, rewriting it on each pass */
  li TESTNUM, 4
  li s1, 0
  li s2, 0
1: slli a1, s1, 20; li a2, 0x513; or a1, a1, a2; sw a1, 0(s0); fence.i
  jalr ra, 0(s0); add s2, s2, a0
  addi s1, s1, 1; li a3, 50; bne s1, a3, 1b
  CHECK_IMM(s2, 1225)
  /* the store patches the instruction after the fence.i inside the routine */
  la s3, patch2
  TEST_CASE(5, a0, 7, jalr ra, 0(s3))
  TEST_CASE(6, a0, 9, li a1, (9 << 20) | 0x513; sw a1, 8(s3); jalr ra, 0(s3))
TEST_END
