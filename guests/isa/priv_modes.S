/* Privilege levels M/S/U: ECALL from S (9) and U (8) with MPP recording the old mode; M-level
 * CSRs and MRET/SRET/WFI raising illegal instruction from lower levels; mstatus.TW / TVM / TSR;
 * medeleg delegation to S (scause/sepc/stval, SPP/SPIE/SIE), no delegation of traps taken in M;
 * SRET and MRET returning to the mode in SPP/MPP and updating xIE/xPIE/xPP (MRET to a lower mode
 * clearing MPRV: csr_ftvm). */
#include "test.h"

#define MPP_OF(r) srli r, r, 11; andi r, r, 3

/* Case n: run `code` in mode `mode` (from label 2); it must trap to M with cause `cause` at 2. */
#define IN_MODE_TRAP(n, mode, cause, code...)        \
  li TESTNUM, n; TRAP_EXPECT(1f);                    \
  ENTER_MODE(mode, 2f);                              \
2: code;                                             \
  FAIL;                                              \
1: CHECK_IMM(a1, cause); la t6, 2b; bne a2, t6, __fail; \
  MPP_OF(a4); CHECK_IMM(a4, mode)

/* Case n: run `code` in mode `mode`, then ECALL (at label 2) to M. */
#define IN_MODE_ECALL(n, mode, code...)              \
  li TESTNUM, n; TRAP_EXPECT(1f);                    \
  ENTER_MODE(mode, 3f);                              \
3: code;                                             \
2: ecall;                                            \
  FAIL;                                              \
1: CHECK_IMM(a1, 8 + mode); la t6, 2b; bne a2, t6, __fail; \
  MPP_OF(a4); CHECK_IMM(a4, mode)

TEST_BEGIN
  PMP_ALLOW_ALL
  la t0, s_handler; csrw stvec, t0
  csrw medeleg, x0
  csrw mideleg, x0
  csrw mie, x0
  IN_MODE_TRAP(1, 1, 9, ecall)
  IN_MODE_TRAP(2, 0, 8, ecall)
  IN_MODE_TRAP(3, 0, 2, csrr a0, mstatus)
  IN_MODE_TRAP(4, 1, 2, csrr a0, mscratch)
  IN_MODE_TRAP(5, 0, 2, sret)
  IN_MODE_TRAP(6, 0, 2, mret)
  IN_MODE_TRAP(7, 1, 2, mret)
  IN_MODE_TRAP(8, 0, 2, csrr a0, sstatus)
  IN_MODE_TRAP(9, 0, 2, wfi)
  IN_MODE_TRAP(10, 0, 2, csrw sscratch, a0)
  IN_MODE_TRAP(11, 1, 2, csrw mtvec, a0)
  IN_MODE_TRAP(12, 0, 2, sfence.vma)
  /* S may use its own CSRs */
  IN_MODE_ECALL(13, 1, li a0, 0x77; csrw sscratch, a0; csrr s5, sscratch; csrr s6, sstatus)
  CHECK_IMM(s5, 0x77)
  /* mstatus.TW: WFI in S is illegal */
  li t0, 1 << 21; csrs mstatus, t0
  IN_MODE_TRAP(14, 1, 2, wfi)
  li t0, 1 << 21; csrc mstatus, t0
  /* mstatus.TVM: satp and SFENCE.VMA are illegal in S; without TVM they are fine */
  li t0, 1 << 20; csrs mstatus, t0
  IN_MODE_TRAP(15, 1, 2, csrr a0, satp)
  IN_MODE_TRAP(16, 1, 2, sfence.vma)
  IN_MODE_TRAP(17, 1, 2, csrw satp, x0)
  li t0, 1 << 20; csrc mstatus, t0
  IN_MODE_ECALL(18, 1, csrr a0, satp; csrw satp, x0; sfence.vma; sfence.vma a0, x0)
  /* mstatus.TSR: SRET is illegal in S */
  li t0, 1 << 22; csrs mstatus, t0
  IN_MODE_TRAP(19, 1, 2, sret)
  li t0, 1 << 22; csrc mstatus, t0

  /* medeleg: ECALL from U handled in S, with SPP = U, SPIE = old SIE, SIE = 0 */
  li t0, 1 << 8; csrw medeleg, t0
  csrr a0, medeleg; CHECK_IMM(a0, 1 << 8)
  li t0, 0x122; csrc mstatus, t0; csrsi mstatus, 2     /* SIE = 1, SPIE = 0, SPP = 0 */
  li TESTNUM, 20; TRAP_EXPECT(1f)
  ENTER_MODE(0, 2f)
2: ecall
  FAIL
1: CHECK_IMM(a1, 9); MPP_OF(a4); CHECK_IMM(a4, 1)     /* the S handler's ECALL */
  li TESTNUM, 21
  CHECK_IMM(s1, 8); la t6, 2b; bne s2, t6, __fail; CHECK_IMM(s3, 0)
  li t0, 0x122; and s4, s4, t0; CHECK_IMM(s4, 0x020)   /* SPP = 0, SPIE = 1, SIE = 0 */
  /* medeleg: an illegal instruction in S handled in S, SPP = S */
  li t0, (1 << 8) | (1 << 2); csrw medeleg, t0
  li t0, 0x122; csrc mstatus, t0                        /* SIE = 0 */
  li TESTNUM, 22; TRAP_EXPECT(1f)
  ENTER_MODE(1, 2f)
2: csrr a0, mstatus
  FAIL
1: CHECK_IMM(a1, 9); CHECK_IMM(s1, 2); la t6, 2b; bne s2, t6, __fail
  beqz s3, 3f; li t6, 0x30002573; bne s3, t6, __fail; 3:
  li t0, 0x122; and s4, s4, t0; CHECK_IMM(s4, 0x100)   /* SPP = 1, SPIE = 0, SIE = 0 */
  /* a trap taken in M is never delegated */
  li TESTNUM, 23; TRAP_EXPECT(1f)
2: csrr a0, 0x0ff
  FAIL
1: CHECK_IMM(a1, 2); la t6, 2b; bne a2, t6, __fail
  csrw medeleg, x0

  /* SRET to U: SIE = SPIE, SPIE = 1, SPP = U; the next ECALL comes from U */
  li t0, 0x122; csrc mstatus, t0; li t0, 0x120; csrs mstatus, t0   /* SPP = S, SPIE = 1, SIE = 0 */
  li TESTNUM, 24; TRAP_EXPECT(1f)
  ENTER_MODE(1, 2f)
2: li t0, 1 << 8; csrc sstatus, t0                     /* SPP = U */
  la t0, 3f; csrw sepc, t0
  sret
  FAIL
3: ecall
  FAIL
1: CHECK_IMM(a1, 8); la t6, 3b; bne a2, t6, __fail
  li t0, 0x122; and a0, a4, t0; CHECK_IMM(a0, 0x022)   /* SPP = 0, SPIE = 1, SIE = 1 */
  /* SRET to S: SPP was S, becomes U */
  li t0, 0x122; csrc mstatus, t0; li t0, 0x100; csrs mstatus, t0   /* SPP = S, SPIE = 0 */
  li TESTNUM, 25; TRAP_EXPECT(1f)
  ENTER_MODE(1, 2f)
2: la t0, 3f; csrw sepc, t0
  sret
  FAIL
3: csrr s5, sstatus
  ecall
  FAIL
1: CHECK_IMM(a1, 9); la t6, 3b + 4; bne a2, t6, __fail
  li t0, 0x122; and a0, s5, t0; CHECK_IMM(a0, 0x020)   /* SPP = 0, SPIE = 1, SIE = 0 */
  /* MRET to M keeps MPRV */
  li TESTNUM, 27
  li t0, 3 << 11; csrs mstatus, t0; li t0, 1 << 17; csrs mstatus, t0
  la t0, 2f; csrw mepc, t0
  mret
2: csrr a0, mstatus; li t0, 1 << 17; and a1, a0, t0; CHECK_IMM(a1, 1 << 17)
  MPP_OF(a0); CHECK_IMM(a0, 0)
  li t0, 1 << 17; csrc mstatus, t0
  j done

  .align 2
s_handler:
  csrr s1, scause
  csrr s2, sepc
  csrr s3, stval
  csrr s4, sstatus
  ecall
done:
TEST_END
