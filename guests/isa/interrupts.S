/* Interrupts taken in M-mode: MSI, MTI, SEI, SSI, STI all pending at once are each taken once
 * (MSI/MTI through the CLINT's msip/mtimecmp, SEI/SSI/STI pended by writing mip; their priority
 * order: interrupts_priority), mcause with the
 * interrupt bit, mepc = the next instruction, nothing taken while mstatus.MIE = 0 or mie masks it,
 * vectored mtvec (interrupts at base + 4 * cause, exceptions at base), M interrupts always enabled
 * below M, WFI waking up on a pending interrupt with MIE = 0 (no trap) and with MIE = 1 (trap,
 * mepc = after the WFI). Nothing depends on timing. */
#include "test.h"

#define CLINT_MSIP 0x02000000
#define CLINT_MTIMECMP 0x02004000
#define CLINT_MTIME 0x0200bff8

  .section .data
  .align 3
log: .space 8 * 16          /* mcause of each interrupt taken */
log_epc: .space 8 * 16

  .section .text
TEST_BEGIN
  PMP_ALLOW_ALL
  csrw mie, x0
  csrw mideleg, x0
  li s0, CLINT_MSIP; li s1, CLINT_MTIMECMP; li s2, CLINT_MTIME
  li t0, -1; sd t0, 0(s1)
  sw x0, 0(s0)
  la s3, log; la s4, log_epc
  li s5, 0                   /* number of interrupts taken */
  la t0, irq_handler; csrw mtvec, t0

  /* 1: MSIP through the CLINT shows in mip; clearing it clears mip */
  li TESTNUM, 1
  li t0, 1; sw t0, 0(s0)
  csrr a0, mip; andi a0, a0, 8; beqz a0, __fail
  sw x0, 0(s0)
  csrr a0, mip; andi a0, a0, 8; bnez a0, __fail
  /* 2: MTIP follows mtime >= mtimecmp */
  li TESTNUM, 2
  sd x0, 0(s1)
  li t1, 100000
1: csrr a0, mip; andi a0, a0, 0x80; bnez a0, 2f; addi t1, t1, -1; bnez t1, 1b; FAIL
2: li t0, -1; sd t0, 0(s1)
  csrr a0, mip; andi a0, a0, 0x80; bnez a0, __fail
  /* 3: everything pending, MIE = 0: nothing is taken */
  li TESTNUM, 3
  li t0, 1; sw t0, 0(s0)
  sd x0, 0(s1)
  li t0, 0x222; csrs mip, t0
  li t0, 0x2aa; csrw mie, t0
  li t1, 100000
1: csrr a0, mip; andi a0, a0, 0x80; bnez a0, 2f; addi t1, t1, -1; bnez t1, 1b; FAIL
2: csrr a0, mip; li t6, 0xaaa; and a0, a0, t6; CHECK_IMM(a0, 0x2aa)
  nop; nop; nop
  bnez s5, __fail
  /* 4: MIE = 1: taken in priority order, each at the instruction after the enabling csrs */
  li TESTNUM, 4
  csrsi mstatus, 8
enabled:
  nop
  csrci mstatus, 8
  CHECK_IMM(s5, 5)
  /* 5: each of the five once (their order: interrupts_priority) */
  li TESTNUM, 5
  li a1, 0; li a2, 0
1: slli t0, a2, 3; add t0, t0, s3; ld t0, 0(t0)
  bgez t0, __fail
  li t1, 1; sll t1, t1, t0; or a1, a1, t1
  addi a2, a2, 1; li t1, 5; bne a2, t1, 1b
  CHECK_IMM(a1, 0x2aa)
  li TESTNUM, 6
  la t6, enabled
  ld a0, 0(s4); bne a0, t6, __fail
  ld a0, 32(s4); bne a0, t6, __fail
  /* 7: masked in mie: not taken even with MIE = 1 */
  li TESTNUM, 7
  li s5, 0
  csrw mie, x0
  li t0, 0x2; csrs mip, t0
  csrsi mstatus, 8
  nop; nop
  csrci mstatus, 8
  bnez s5, __fail
  li t0, 0x2; csrc mip, t0

  /* 8: vectored mtvec: an interrupt goes to base + 4 * cause, an exception to base */
  li TESTNUM, 8
  la t0, vec_table; ori t0, t0, 1; csrw mtvec, t0
  li s6, 0
  li t0, 0x2; csrw mie, t0; csrs mip, t0
  csrsi mstatus, 8
  nop
  csrci mstatus, 8
  CHECK_IMM(s6, 1)
  ecall
  CHECK_IMM(s6, 100)
  la t0, irq_handler; csrw mtvec, t0

  /* 9: in S-mode, M interrupts are taken even with mstatus.MIE = 0 */
  li TESTNUM, 9
  li s5, 0
  csrci mstatus, 8
  li t0, 8; csrw mie, t0
  TRAP_EXPECT(1f)
  ENTER_MODE(1, 2f)
2: li t0, 1; li t1, CLINT_MSIP; sw t0, 0(t1)
3: beqz s5, 3b               /* the M handler counts it */
  ecall                      /* irq_handler passes ECALLs to the t5 mechanism */
  FAIL
1: CHECK_IMM(a1, 9)
  CHECK_IMM(s5, 1)
  ld a0, 0(s3); CHECK_IMM(a0, 0x8000000000000003)

  /* 10: WFI with an enabled interrupt pending and MIE = 0 wakes without a trap */
  li TESTNUM, 10
  li s5, 0
  li t0, 0x80; csrw mie, t0
  ld t0, 0(s2); addi t0, t0, 50; sd t0, 0(s1)
  li t1, 1000
1: wfi
  csrr a0, mip; andi a0, a0, 0x80; bnez a0, 2f
  addi t1, t1, -1; bnez t1, 1b
  FAIL
2: bnez s5, __fail
  /* 11: WFI with MIE = 1: the interrupt is taken, mepc = the instruction after the WFI */
  li TESTNUM, 11
  li t0, -1; sd t0, 0(s1)
  /* (should the interrupt come before the WFI, the handler steps over the WFI, so that the test
     cannot sleep for ever; mepc is then the WFI itself) */
  ld t0, 0(s2); li t1, 10000; add t0, t0, t1; sd t0, 0(s1)
  csrsi mstatus, 8
the_wfi:
  wfi
after_wfi:
  beqz s5, the_wfi
  csrci mstatus, 8
  CHECK_IMM(s5, 1)
  ld a0, 0(s3); CHECK_IMM(a0, 0x8000000000000007)
  ld a0, 0(s4); la t6, after_wfi; beq a0, t6, 1f; la t6, the_wfi; bne a0, t6, __fail; 1:
  /* 12: mip.MTIP clears once mtimecmp moves to the future */
  li TESTNUM, 12
  csrr a0, mip; andi a0, a0, 0x80; bnez a0, __fail
  csrw mie, x0
  j done

  /* Records mcause and mepc, then silences the source. ECALLs go to the t5 mechanism. */
  .align 2
irq_handler:
  csrr t0, mcause
  bltz t0, 1f
  j __unexpected_trap
1: slli t1, s5, 3
  add t2, s3, t1; sd t0, 0(t2)
  add t2, s4, t1; csrr t3, mepc; sd t3, 0(t2)
  la t2, the_wfi; bne t3, t2, 1f
  addi t3, t3, 4; csrw mepc, t3
1:
  addi s5, s5, 1
  slli t0, t0, 1; srli t0, t0, 1
  li t1, 3; bne t0, t1, 1f
  li t2, CLINT_MSIP; sw x0, 0(t2); mret
1: li t1, 7; bne t0, t1, 1f
  li t2, CLINT_MTIMECMP; li t3, -1; sd t3, 0(t2); mret
1: li t1, 1; sll t1, t1, t0; csrc mip, t1
  mret

  .align 8
  .option push
  .option norvc
vec_table:
  j vec_exc            /* 0: exceptions */
  j vec_ssi            /* 1: SSI */
  j __fail
  j __fail             /* 3: MSI */
  j __fail
  j __fail             /* 5: STI */
  j __fail
  j __fail             /* 7: MTI */
  j __fail
  j __fail             /* 9: SEI */
  j __fail
  j __fail             /* 11: MEI */
  .option pop
vec_ssi:
  li t0, 2; csrc mip, t0
  csrr t0, mcause; li t1, 0x8000000000000001; bne t0, t1, __fail
  addi s6, s6, 1
  mret
vec_exc:
  csrr t0, mcause; li t1, 11; bne t0, t1, __fail
  li s6, 100
  csrr t0, mepc; addi t0, t0, 4; csrw mepc, t0
  mret
done:
TEST_END
