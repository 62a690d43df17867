/* RV64I loads and stores: every width, sign/zero extension, positive and negative offsets, byte
 * order, store widths not disturbing neighbours, loads into x0, misaligned accesses (emulated:
 * they succeed, also across a page boundary), FENCE. */
#include "test.h"

  .section .data
  .align 12
buf:
  .dword 0x8877665544332211, 0xfedcba9876543210, 0, 0
  .space 4096 - 32
page2:
  .dword 0x0102030405060708, 0
scratch:
  .space 64

  .section .text
TEST_BEGIN
  la s0, buf
  TEST_CASE(1, a0, 0x11, lb a0, 0(s0))
  TEST_CASE(2, a0, 0xffffffffffffff88, lb a0, 7(s0))
  TEST_CASE(3, a0, 0x88, lbu a0, 7(s0))
  TEST_CASE(4, a0, 0x2211, lh a0, 0(s0))
  TEST_CASE(5, a0, 0xffffffffffff8877, lh a0, 6(s0))
  TEST_CASE(6, a0, 0x8877, lhu a0, 6(s0))
  TEST_CASE(7, a0, 0x44332211, lw a0, 0(s0))
  TEST_CASE(8, a0, 0xffffffff88776655, lw a0, 4(s0))
  TEST_CASE(9, a0, 0x88776655, lwu a0, 4(s0))
  TEST_CASE(10, a0, 0x8877665544332211, ld a0, 0(s0))
  TEST_CASE(11, a0, 0xfedcba9876543210, ld a0, 8(s0))
  /* negative offsets */
  TEST_CASE(12, a0, 0xffffffffffffffdc, addi a1, s0, 16; lb a0, -2(a1))
  TEST_CASE(13, a0, 0x8877665544332211, addi a1, s0, 2047; ld a0, -2047(a1))
  TEST_CASE(14, a0, 0xfedcba98, addi a1, s0, 2040; lwu a0, -2028(a1))
  /* stores of each width, read back whole */
  TEST_CASE(15, a0, 0x00000000000000aa, li a1, 0x1234567890abcdaa; sd x0, 16(s0); sb a1, 16(s0); ld a0, 16(s0))
  TEST_CASE(16, a0, 0x000000000000cdaa, li a1, 0x1234567890abcdaa; sd x0, 16(s0); sh a1, 16(s0); ld a0, 16(s0))
  TEST_CASE(17, a0, 0x0000000090abcdaa, li a1, 0x1234567890abcdaa; sd x0, 16(s0); sw a1, 16(s0); ld a0, 16(s0))
  TEST_CASE(18, a0, 0x1234567890abcdaa, li a1, 0x1234567890abcdaa; sd x0, 16(s0); sd a1, 16(s0); ld a0, 16(s0))
  /* partial stores leave the neighbours alone */
  TEST_CASE(19, a0, 0xff00ffffffffffff, li a1, -1; sd a1, 16(s0); sb x0, 22(s0); ld a0, 16(s0))
  TEST_CASE(20, a0, 0xffff0000ffffffff, li a1, -1; sd a1, 16(s0); sh x0, 36-16(s0); ld a0, 16(s0))
  TEST_CASE(21, a0, 0x00000000ffffffff, li a1, -1; sd a1, 16(s0); sw x0, 20(s0); ld a0, 16(s0))
  TEST_CASE(22, a0, 0x5a, li a1, 0x5a; sb a1, -1(s0); lbu a0, -1(s0))
  /* loads to x0 are performed but do not write */
  TEST_CASE(23, a0, 0, ld x0, 0(s0); lw x0, 0(s0); mv a0, x0)
  /* load with rd = base register */
  TEST_CASE(24, a0, 0x8877665544332211, mv a0, s0; ld a0, 0(a0))
  /* store then load through a different width */
  TEST_CASE(25, a0, 0xffffffffffff8000, li a1, 0x8000; sh a1, 24(s0); lh a0, 24(s0))
  /* misaligned loads and stores succeed with the right value */
  TEST_CASE(26, a0, 0x1088776655443322, li a1, 0x0910; sh a1, 8(s0); ld a0, 1(s0))
  TEST_CASE(27, a0, 0xffffffff88776655, lw a0, 4(s0); lw a1, 0(s0); addi a2, s0, 1; lw a1, 3(a2); bne a0, a1, __fail)
  TEST_CASE(28, a0, 0x7766, lhu a0, 5(s0))
  TEST_CASE(29, a0, 0xffffffffffff8877, lh a0, 6(s0); lh a1, 5(a2); bne a0, a1, __fail)
  TEST_CASE(30, a0, 0x123456789abcdef0,
    li a1, 0x123456789abcdef0; sd a1, 17(s0); ld a0, 17(s0);
    lbu a2, 17(s0); li t6, 0xf0; bne a2, t6, __fail;
    lbu a2, 24(s0); li t6, 0x12; bne a2, t6, __fail)
  TEST_CASE(31, a0, 0xffffffffcafebabe, li a1, 0xcafebabe; sw a1, 33(s0); lw a0, 33(s0))
  TEST_CASE(32, a0, 0xbeef, li a1, 0xbeef; sh a1, 41(s0); lhu a0, 41(s0))
  /* across a page boundary */
  la s1, page2
  TEST_CASE(33, a0, 0x0405060708000000, ld a0, -3(s1))
  TEST_CASE(34, a0, 0x1122334455667788,
    li a1, 0x1122334455667788; sd a1, -5(s1); ld a0, -5(s1);
    lbu a2, -1(s1); li t6, 0x44; bne a2, t6, __fail;
    lbu a2, 0(s1); li t6, 0x33; bne a2, t6, __fail)
  TEST_CASE(35, a0, 0xffffffffa1b2c3d4, li a1, 0xa1b2c3d4; sw a1, -2(s1); lw a0, -2(s1); lhu a2, 0(s1); li t6, 0xa1b2; bne a2, t6, __fail)
  /* fences are accepted and change nothing */
  TEST_CASE(36, a0, 0x8877665544332211, fence; fence rw, rw; fence r, r; fence w, w; fence iorw, iorw; fence.tso; ld a0, 0(s0))
  TEST_CASE(37, a0, 0x3f, li a1, 0x3f; la a2, scratch; sb a1, 0(a2); fence w, r; lbu a0, 0(a2))
TEST_END
