/* ftvm bare-metal ISA test framework (assembly).
 *
 * A test reports through the HTIF `tohost` word (1 = pass, (n << 1) | 1 = failure of test n), the
 * convention `ftvm run-elf` understands, and then through the virt board's sifive,test0 device at
 * 0x100000 (0x5555 = pass, (n << 16) | 0x3333 = fail), so the same binary also gives its verdict
 * on `qemu-system-riscv64 -M virt -bios none -kernel FILE`, the reference machine (QEMU exits with
 * status n & 0xff on a failure).
 *
 * gp (x3) holds the number of the test case under way. A failure outside any case (gp = 0, e.g. a
 * trap before the first case) is reported as case 255, so that it can never read as a pass. Any
 * trap that a test did not expect fails the current case and prints mcause/mepc/mtval on the UART.
 *
 * Register conventions: t6 is the scratch of TEST_CASE; t5 holds the resume address of an
 * expected trap (TRAP_EXPECT) and a1..a4 receive cause/epc/tval/status of the trap taken.
 */
#ifndef FTVM_TEST_H
#define FTVM_TEST_H

#define TESTNUM gp

/* Hex-print register `reg` on the UART (clobbers t0, t1, t2, t3). Only for the diagnostic path. */
#define __PUTHEX(reg)                                \
  li t0, 0x10000000;                                 \
  li t1, 60;                                         \
9: srl t2, reg, t1;                                  \
  andi t2, t2, 15;                                   \
  addi t3, t2, -10;                                  \
  bltz t3, 8f;                                       \
  addi t2, t2, 'a' - '0' - 10;                       \
8: addi t2, t2, '0';                                 \
  sb t2, 0(t0);                                      \
  addi t1, t1, -4;                                   \
  bgez t1, 9b;                                       \
  li t2, ' ';                                        \
  sb t2, 0(t0)

#define TEST_BEGIN                                   \
  .section .text.init;                               \
  .globl _start;                                     \
_start:                                              \
  la t0, __unexpected_trap;                          \
  csrw mtvec, t0;                                    \
  li TESTNUM, 0;                                     \
  li t5, 0;                                          \
  la sp, __stack_top;                                \
  j __test_body;                                     \
  .align 2;                                          \
__unexpected_trap:                                   \
  /* An expected trap (t5 != 0) resumes at t5 with  \
     the trap's CSRs in a1..a4. */                   \
  beqz t5, 1f;                                       \
  csrr a1, mcause;                                   \
  csrr a2, mepc;                                     \
  csrr a3, mtval;                                    \
  csrr a4, mstatus;                                  \
  mv t4, t5;                                         \
  li t5, 0;                                          \
  jr t4;                                             \
1:csrr s9, mcause;                                   \
  csrr s10, mepc;                                    \
  csrr s11, mtval;                                   \
  li t0, 0x10000000;                                 \
  li t1, '!';                                        \
  sb t1, 0(t0);                                      \
  __PUTHEX(s9);                                      \
  __PUTHEX(s10);                                     \
  __PUTHEX(s11);                                     \
  li t1, '\n';                                       \
  sb t1, 0(t0);                                      \
  j __fail;                                          \
__test_body:

#define TEST_END                                     \
  j __pass;                                          \
__pass:                                              \
  li a0, 1;                                          \
  la t0, tohost;                                     \
  sd a0, 0(t0);                                      \
  li t0, 0x100000;                                   \
  li t1, 0x5555;                                     \
  sw t1, 0(t0);                                      \
1: j 1b;                                             \
__fail:                                              \
  bnez TESTNUM, 1f;                                  \
  li TESTNUM, 255;                                   \
1:slli a0, TESTNUM, 1;                               \
  ori a0, a0, 1;                                     \
  la t0, tohost;                                     \
  sd a0, 0(t0);                                      \
  li t0, 0x100000;                                   \
  andi t1, TESTNUM, 0xff;                            \
  bnez t1, 1f;                                       \
  li t1, 0xff;                                       \
1:slli t1, t1, 16;                                   \
  li t2, 0x3333;                                     \
  or t1, t1, t2;                                     \
  sw t1, 0(t0);                                      \
1: j 1b;                                             \
  .section .tohost, "aw", @progbits;                 \
  .align 6; .globl tohost; tohost: .dword 0;         \
  .align 6; .globl fromhost; fromhost: .dword 0;     \
  .section .bss;                                     \
  .align 4; .space 8192; __stack_top:;               \
  .section .text

/* Case n: run `code`, then check that register `reg` equals `expected` (64-bit). */
#define TEST_CASE(n, reg, expected, code...)         \
  li TESTNUM, n;                                     \
  code;                                              \
  li t6, expected;                                   \
  bne reg, t6, __fail;

/* Fail the current case unconditionally / if a != b. */
#define FAIL j __fail
#define CHECK_EQ(a, b) bne a, b, __fail

/* Fail unless register `reg` equals the constant `val` (clobbers t6). */
#define CHECK_IMM(reg, val) li t6, val; bne reg, t6, __fail

/* The next trap taken into M-mode is expected: it resumes (in M-mode) at `label` with
 * a1 = mcause, a2 = mepc, a3 = mtval, a4 = mstatus. A second trap fails the test. */
#define TRAP_EXPECT(label) la t5, label

/* Check the last expected trap: cause, epc (a register or label address in t6), tval. */
#define CHECK_TRAP(cause, epc_label, tval)           \
  CHECK_IMM(a1, cause);                              \
  la t6, epc_label; bne a2, t6, __fail;              \
  CHECK_IMM(a3, tval)
#define CHECK_TRAP_CE(cause, epc_label)              \
  CHECK_IMM(a1, cause);                              \
  la t6, epc_label; bne a2, t6, __fail

/* Let S and U reach all of memory: QEMU denies S/U accesses when no PMP entry matches. */
#define PMP_ALLOW_ALL                                \
  li t0, -1; csrw pmpaddr0, t0;                      \
  li t0, 0x1f; csrw pmpcfg0, t0

/* Drop from M-mode to privilege `mode` (0 = U, 1 = S, 3 = M) at `label` through MRET. */
#define ENTER_MODE(mode, label)                      \
  li t0, 3 << 11; csrc mstatus, t0;                  \
  li t0, (mode) << 11; csrs mstatus, t0;             \
  la t0, label; csrw mepc, t0;                       \
  mret

/* Turn on the FP unit (mstatus.FS = Initial). */
#define FP_ENABLE li t0, 1 << 13; csrs mstatus, t0

/* Print a string literal on the UART (clobbers t0, t1, t2). */
#define PRINT(str)                                   \
  .pushsection .rodata; 7: .asciz str; .popsection;  \
  la t1, 7b; li t0, 0x10000000;                      \
6: lbu t2, 0(t1); beqz t2, 5f;                       \
  sb t2, 0(t0); addi t1, t1, 1; j 6b;                \
5:

#endif
