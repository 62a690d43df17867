/* CSR details where QEMU 7.2 differs from the specification or from ftvm's documented choices
 * (ftvm-only): MPP is WARL (2 is not kept); MRET to a lower mode clears MPRV; mepc[0] reads 0;
 * CSRRS on a read-only CSR with rs1 != x0 is illegal even if rs1 holds 0; no VS field (no V); no
 * Sstc (stimecmp unknown, menvcfg.STCE 0) and no other menvcfg bits than FIOM; satp ASID reads 0
 * and Sv57 is refused; mideleg holds exactly SSIP/STIP/SEIP, mie exactly the six standard bits;
 * pmpaddr is 54 bits wide and pmpaddr16.. read 0. */
#include "test.h"

#define ILLEGAL(n, insn_word)                        \
  li TESTNUM, n; TRAP_EXPECT(1f);                    \
2: .word insn_word;                                  \
  FAIL;                                              \
1: CHECK_IMM(a1, 2); la t6, 2b; bne a2, t6, __fail

TEST_BEGIN
  PMP_ALLOW_ALL
  TEST_CASE(1, a0, 1, li t0, 3 << 11; csrc mstatus, t0; li t0, 2 << 11; csrs mstatus, t0; csrr a0, mstatus; srli a0, a0, 11; andi a0, a0, 3; li t6, 2; sub a0, a0, t6; snez a0, a0)
  /* MRET to S clears MPRV */
  li TESTNUM, 2; TRAP_EXPECT(1f)
  li t0, 1 << 17; csrs mstatus, t0
  li t0, 3 << 11; csrc mstatus, t0; li t0, 1 << 11; csrs mstatus, t0
  la t0, 2f; csrw mepc, t0
  mret
2: ecall
1: CHECK_IMM(a1, 9); li t0, 1 << 17; and a0, a4, t0; CHECK_IMM(a0, 0)
  /* mepc[0] and sepc[0] read 0 */
  TEST_CASE(5, a0, 0x80000000, li t0, 0x80000001; csrw mepc, t0; csrr a0, mepc)
  TEST_CASE(6, a0, 0x80000000, li t0, 0x80000001; csrw sepc, t0; csrr a0, sepc)
  /* csrrs instret, ra with ra = 0 still attempts a write */
  li ra, 0
  ILLEGAL(7, 0xc020a073)
  li ra, 0
  ILLEGAL(8, 0xf140b073)       /* csrrc x0, mhartid, ra */
  /* no V: mstatus.VS is read-only 0 */
  TEST_CASE(9, a0, 0, li t0, 3 << 9; csrs mstatus, t0; csrr a0, mstatus; and a0, a0, t0)
  /* no Sstc and no other envcfg extension bits */
  ILLEGAL(10, 0x14d02573)      /* csrr a0, stimecmp */
  TEST_CASE(11, a0, 1, li t0, -1; csrw 0x30a, t0; csrr a0, 0x30a; csrw 0x30a, x0)
  TEST_CASE(12, a0, 1, li t0, -1; csrw 0x10a, t0; csrr a0, 0x10a; csrw 0x10a, x0)
  /* satp: ASID reads 0, Sv57 leaves satp unchanged */
  TEST_CASE(13, a0, 0x8000000000012345, li t0, 0x8ffff00000012345; csrw satp, t0; csrr a0, satp)
  TEST_CASE(14, a0, 0x8000000000012345, li t0, 0xa000000000054321; csrw satp, t0; csrr a0, satp)
  csrw satp, x0
  /* delegation and enable registers hold exactly the standard bits */
  TEST_CASE(15, a0, 0x222, li t0, -1; csrw mideleg, t0; csrr a0, mideleg; csrw mideleg, x0)
  TEST_CASE(16, a0, 0xaaa, li t0, -1; csrw mie, t0; csrr a0, mie; csrw mie, x0)
  TEST_CASE(17, a0, 0xb3ff, li t0, 0xb3ff; csrw medeleg, t0; csrr a0, medeleg; csrw medeleg, x0)
  /* PMP */
  TEST_CASE(18, a0, 0x003fffffffffffff, li t0, -1; csrw pmpaddr3, t0; csrr a0, pmpaddr3; csrw pmpaddr3, x0)
  TEST_CASE(19, a0, 0, csrr a0, 0x3c0)   /* pmpaddr16 */
  TEST_CASE(20, a0, 0, csrr a0, 0x3ef)   /* pmpaddr63 */
TEST_END
