/* Exceptions taken in M-mode, each with the right mcause, mepc and mtval: illegal instructions
 * (incl. the all-zero and reserved compressed encodings), EBREAK / C.EBREAK, ECALL from M, access
 * faults on fetch, load, store and LR at an address where nothing is mapped, and the mstatus
 * transitions of a trap (MPP = M, MPIE = old MIE, MIE = 0) and of MRET (MIE = MPIE, MPIE = 1,
 * MPP = U). Misaligned LR: rv64a_misaligned; misaligned SC/AMO and AMO access faults:
 * rv64a_amo_faults; page faults: vm_*; ECALL from S/U: priv_modes. */
#include "test.h"

#define NOWHERE 0x8              /* no device or memory at physical address 8 (virt: "debug") */

/* Case n: the instruction `insn` at label 2 traps with `cause` and mtval `tval`. */
#define EXC(n, cause, tval, insn...)                 \
  li TESTNUM, n; TRAP_EXPECT(1f);                    \
2: insn;                                             \
  FAIL;                                              \
1: CHECK_IMM(a1, cause); la t6, 2b; bne a2, t6, __fail; CHECK_IMM(a3, tval)

/* Case n: illegal instruction given as raw bits (`.word` or `.2byte`); mtval = 0 or the bits. */
#define ILL(n, dir, bits)                            \
  li TESTNUM, n; TRAP_EXPECT(1f);                    \
2: dir bits;                                         \
  FAIL;                                              \
1: CHECK_IMM(a1, 2); la t6, 2b; bne a2, t6, __fail;  \
  beqz a3, 3f; CHECK_IMM(a3, bits); 3:

TEST_BEGIN
  li s0, NOWHERE
  ILL(1, .word, 0x00000057)   /* OP-V: no vector unit */
  ILL(2, .word, 0xffffffff)
  ILL(3, .2byte, 0x0000)      /* all-zero halfword */
  ILL(4, .2byte, 0x0008)      /* c.addi4spn a0, sp, 0 (reserved) */
  ILL(5, .2byte, 0x6501)      /* c.lui a0, 0 (reserved) */
  ILL(6, .2byte, 0x6101)      /* c.addi16sp sp, 0 (reserved) */
  ILL(7, .2byte, 0x4002)      /* c.lwsp x0 (reserved) */
  ILL(8, .2byte, 0x6002)      /* c.ldsp x0 (reserved) */
  ILL(9, .2byte, 0x8002)      /* c.jr x0 (reserved) */
  ILL(10, .2byte, 0x2005)     /* c.addiw x0, 1 (reserved) */
  ILL(11, .word, 0x30200073 | (1 << 7)) /* mret with rd != 0 */
  /* mepc of the breakpoint; mtval is 0 or the address of the EBREAK */
  li TESTNUM, 12; TRAP_EXPECT(1f)
2: ebreak
  FAIL
1: CHECK_IMM(a1, 3); la t6, 2b; bne a2, t6, __fail; beqz a3, 3f; bne a3, t6, __fail; 3:
  li TESTNUM, 13; TRAP_EXPECT(1f)
2: c.ebreak
  FAIL
1: CHECK_IMM(a1, 3); la t6, 2b; bne a2, t6, __fail; beqz a3, 3f; bne a3, t6, __fail; 3:
  EXC(14, 11, 0, ecall)
  /* access faults at an unmapped physical address */
  EXC(15, 5, NOWHERE, ld a0, 0(s0))
  EXC(16, 5, NOWHERE + 4, lw a0, 4(s0))
  EXC(17, 5, NOWHERE, lbu a0, 0(s0))
  EXC(18, 7, NOWHERE, sd a0, 0(s0))
  EXC(19, 7, NOWHERE + 2, sb a0, 2(s0))
  EXC(20, 5, NOWHERE, lr.d a0, (s0))
  EXC(21, 7, NOWHERE, sw a0, 0(s0))
  EXC(22, 7, NOWHERE + 16, sh a0, 16(s0))
  /* instruction access fault: mepc = mtval = the target */
  li TESTNUM, 23; TRAP_EXPECT(1f); li a0, 0x10
  jr a0
  FAIL
1: CHECK_IMM(a1, 1); CHECK_IMM(a2, 0x10); CHECK_IMM(a3, 0x10)
  /* jal/jalr link even though the fetch at the target faults */
  li TESTNUM, 24; TRAP_EXPECT(1f); li a0, 0x20
  jalr ra, 0(a0)
2: FAIL
1: CHECK_IMM(a1, 1); CHECK_IMM(a2, 0x20); la t6, 2b; bne ra, t6, __fail
  /* a faulting load does not write its destination */
  TEST_CASE(25, a0, 0x1234, li a0, 0x1234; TRAP_EXPECT(1f); ld a0, 0(s0); FAIL; 1:)

  /* mstatus on a trap and on MRET (own handler) */
  li TESTNUM, 26
  la t0, mret_handler; csrw mtvec, t0
  csrw mie, x0
  li t0, 0x1888; csrc mstatus, t0          /* MPP = 0, MPIE = 0, MIE = 0 */
  csrsi mstatus, 8                          /* MIE = 1 */
  ecall                                     /* handler records mstatus and returns past */
  /* in handler: MIE = 0, MPIE = 1, MPP = 3 */
  li t0, 0x1888; and a0, s1, t0; CHECK_IMM(a0, 0x1880)
  /* after MRET: MIE = 1 (from MPIE), MPIE = 1, MPP = U */
  li TESTNUM, 27
  csrr a0, mstatus; li t0, 0x1888; and a0, a0, t0; CHECK_IMM(a0, 0x0088)
  /* again with MIE = 0 before the trap: MPIE = 0 in the handler, MIE = 0 after MRET */
  li TESTNUM, 28
  csrci mstatus, 8
  ecall
  li t0, 0x1888; and a0, s1, t0; CHECK_IMM(a0, 0x1800)
  csrr a0, mstatus; li t0, 0x1888; and a0, a0, t0; CHECK_IMM(a0, 0x0080)
  /* mepc is writable and MRET jumps to it (bit 0 reading as 0: csr_ftvm) */
  li TESTNUM, 29
  la t0, 1f; csrw mepc, t0; csrr a0, mepc; la t6, 1f; bne a0, t6, __fail
  li t0, 3 << 11; csrs mstatus, t0
  mret
  FAIL
1:
  /* mcause / mtval are writable by software */
  TEST_CASE(30, a0, 0x8000000000000007, li a1, 0x8000000000000007; csrw mcause, a1; csrr a0, mcause)
  TEST_CASE(31, a0, 0x123456, li a1, 0x123456; csrw mtval, a1; csrr a0, mtval)
  j done

  .align 2
mret_handler:
  csrr s1, mstatus
  csrr t0, mepc
  addi t0, t0, 4
  csrw mepc, t0
  mret
done:
TEST_END
