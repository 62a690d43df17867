/* Interrupt priority: with MSI, MTI, SEI, SSI and STI all pending and enabled, M-mode takes them
 * in the order MSI > MTI > SEI > SSI > STI (MEI, the highest, needs a PLIC: not on run-elf).
 * Delegated to S, the order is SEI > SSI > STI. ftvm-only: QEMU 7.2 takes the lowest cause first. */
#include "test.h"

#define CLINT_MSIP 0x02000000
#define CLINT_MTIMECMP 0x02004000

  .section .data
  .align 3
log: .space 8 * 16

  .section .text
TEST_BEGIN
  PMP_ALLOW_ALL
  csrw mie, x0
  csrw mideleg, x0
  li s0, CLINT_MSIP; li s1, CLINT_MTIMECMP
  la s3, log; li s5, 0
  la t0, m_handler; csrw mtvec, t0
  la t0, s_handler; csrw stvec, t0
  li TESTNUM, 1
  li t0, 1; sw t0, 0(s0)
  sd x0, 0(s1)
  li t0, 0x222; csrs mip, t0
  li t0, 0x2aa; csrw mie, t0
1: csrr a0, mip; andi a0, a0, 0x80; beqz a0, 1b
  csrsi mstatus, 8
  nop
  csrci mstatus, 8
  CHECK_IMM(s5, 5)
  li TESTNUM, 2
  ld a0, 0(s3); CHECK_IMM(a0, 0x8000000000000003)
  ld a0, 8(s3); CHECK_IMM(a0, 0x8000000000000007)
  ld a0, 16(s3); CHECK_IMM(a0, 0x8000000000000009)
  ld a0, 24(s3); CHECK_IMM(a0, 0x8000000000000001)
  ld a0, 32(s3); CHECK_IMM(a0, 0x8000000000000005)
  /* 3: delegated to S, taken in S in the order SEI > SSI > STI */
  li TESTNUM, 3
  li s5, 0
  li t0, 0x222; csrw mideleg, t0
  csrw mie, t0
  csrs mip, t0
  li t0, 0x122; csrc mstatus, t0       /* SIE = 0: nothing until S enables */
  TRAP_EXPECT(1f)
  ENTER_MODE(1, 2f)
2: csrsi sstatus, 2
  nop
  csrci sstatus, 2
  ecall
1: CHECK_IMM(a1, 9)
  CHECK_IMM(s5, 3)
  li TESTNUM, 4
  ld a0, 0(s3); CHECK_IMM(a0, 0x8000000000000009)
  ld a0, 8(s3); CHECK_IMM(a0, 0x8000000000000001)
  ld a0, 16(s3); CHECK_IMM(a0, 0x8000000000000005)
  csrw mie, x0
  csrw mideleg, x0
  j done

  .align 2
m_handler:
  csrr t0, mcause
  bgez t0, __unexpected_trap
  slli t1, s5, 3; add t1, t1, s3; sd t0, 0(t1); addi s5, s5, 1
  slli t0, t0, 1; srli t0, t0, 1
  li t1, 3; bne t0, t1, 1f
  sw x0, 0(s0); mret
1: li t1, 7; bne t0, t1, 1f
  li t2, -1; sd t2, 0(s1); mret
1: li t1, 1; sll t1, t1, t0; csrc mip, t1
  mret
  /* S cannot clear STIP/SEIP: it masks them in sie instead */
  .align 2
s_handler:
  csrr t0, scause
  bgez t0, __fail
  slli t1, s5, 3; add t1, t1, s3; sd t0, 0(t1); addi s5, s5, 1
  slli t0, t0, 1; srli t0, t0, 1
  li t1, 1; sll t1, t1, t0; csrc sie, t1
  sret
done:
TEST_END
