/* Machine and supervisor CSR behaviour: which mstatus bits are writable and how sstatus views
 * them (SD following FS, UXL/SXL = 64-bit, XS zero); medeleg/mideleg writable bits;
 * mie/mip writability (MSIP/MTIP/MEIP read-only in mip, SSIP/STIP/SEIP writable from M); sip/sie as
 * views filtered by mideleg (STIP/SEIP read-only in sip); mtvec/stvec direct and vectored;
 * mcounteren/scounteren gating cycle/time/instret in S and U; menvcfg/senvcfg.FIOM; satp modes
 * Bare/Sv39/Sv48 and a reserved mode leaving satp unchanged; PMP configuration and address
 * registers. Checks where QEMU 7.2 differs from ftvm's documented choices are in csr_ftvm. */
#include "test.h"

#define MIP_MASK 0xaaa

/* Case n: run `code` in mode `mode`; it must trap to M with cause 2 at label 2. */
#define ILLEGAL_IN(n, mode, code...)                 \
  li TESTNUM, n; TRAP_EXPECT(1f);                    \
  ENTER_MODE(mode, 2f);                              \
2: code;                                             \
  FAIL;                                              \
1: CHECK_IMM(a1, 2); la t6, 2b; bne a2, t6, __fail
/* Case n: run `code` in mode `mode`, then ECALL back to M. */
#define OK_IN(n, mode, code...)                      \
  li TESTNUM, n; TRAP_EXPECT(1f);                    \
  ENTER_MODE(mode, 2f);                              \
2: code;                                             \
  ecall;                                             \
  FAIL;                                              \
1: CHECK_IMM(a1, 8 + mode)

TEST_BEGIN
  PMP_ALLOW_ALL
  csrw mie, x0
  li t0, -1; li t1, 0x02004000; sd t0, 0(t1)   /* mtimecmp = max: no timer interrupt */
  /* mstatus: each writable bit can be set and cleared */
#define MS_BIT(n, bit)                               \
  li TESTNUM, n; li t0, 1 << (bit); csrs mstatus, t0; csrr a0, mstatus; and a1, a0, t0; beqz a1, __fail; \
  csrc mstatus, t0; csrr a0, mstatus; and a1, a0, t0; bnez a1, __fail
  MS_BIT(1, 1)    /* SIE */
  MS_BIT(2, 3)    /* MIE */
  MS_BIT(3, 5)    /* SPIE */
  MS_BIT(4, 7)    /* MPIE */
  MS_BIT(5, 8)    /* SPP */
  MS_BIT(6, 11)   /* MPP[0] */
  MS_BIT(7, 13)   /* FS[0] */
  MS_BIT(8, 14)   /* FS[1] */
  MS_BIT(9, 17)   /* MPRV */
  MS_BIT(10, 18)  /* SUM */
  MS_BIT(11, 19)  /* MXR */
  MS_BIT(12, 20)  /* TVM */
  MS_BIT(13, 21)  /* TW */
  MS_BIT(14, 22)  /* TSR */
  /* UXL = SXL = 2 (64-bit), read-only */
  TEST_CASE(15, a0, 0xa, csrr a0, mstatus; srli a0, a0, 32; andi a0, a0, 0xf)
  TEST_CASE(16, a0, 0xa, li t0, 0xf << 32; csrc mstatus, t0; csrr a0, mstatus; srli a0, a0, 32; andi a0, a0, 0xf)
  /* SD summarises FS = dirty; XS and VS are zero */
  TEST_CASE(17, a0, 1, li t0, 3 << 13; csrs mstatus, t0; csrr a0, mstatus; srli a0, a0, 63)
  TEST_CASE(18, a0, 0, li t0, 3 << 13; csrc mstatus, t0; csrr a0, mstatus; srli a0, a0, 63)
  TEST_CASE(19, a0, 0, li t0, 3 << 15; csrs mstatus, t0; csrr a0, mstatus; and a0, a0, t0)
  /* (MPP is WARL, the reserved value 2 is not kept: csr_ftvm) */
  TEST_CASE(20, a0, 0x1800, li t0, 3 << 11; csrs mstatus, t0; csrr a0, mstatus; and a0, a0, t0)
  /* sstatus: a view of mstatus with only the S fields */
  TEST_CASE(21, a0, 0, li t0, 0x888; csrs mstatus, t0; csrr a0, sstatus; and a0, a0, t0; csrc mstatus, t0)
  TEST_CASE(22, a0, 0x000c0122,
    li t0, 0x000c0122; csrs sstatus, t0; csrr a0, mstatus; and a0, a0, t0;
    csrr a1, sstatus; and a1, a1, t0; bne a0, a1, __fail)
  TEST_CASE(23, a0, 0, li t0, 0x000c0122; csrc sstatus, t0; csrr a0, mstatus; and a0, a0, t0)
  /* writing all ones to sstatus leaves the M-only fields alone */
  TEST_CASE(24, a0, 0,
    li t0, 0x00720888; csrc mstatus, t0; li t1, 0xfffffff0ffffffff; csrs sstatus, t1;
    csrr a0, mstatus; and a0, a0, t0; li t1, 0x000c0122; csrc sstatus, t1)
  TEST_CASE(25, a0, 0xa, csrr a0, sstatus; srli a0, a0, 32; andi a0, a0, 3; slli a0, a0, 2; ori a0, a0, 2)
  /* medeleg / mideleg */
  TEST_CASE(26, a0, 0xb3ff, li t0, 0xb3ff; csrw medeleg, t0; csrr a0, medeleg; and a0, a0, t0)
  TEST_CASE(27, a0, 0x222, li t0, -1; csrw mideleg, t0; csrr a0, mideleg; li t6, 0xaaa; and a0, a0, t6)
  TEST_CASE(28, a0, 0, csrw medeleg, x0; csrw mideleg, x0; csrr a0, medeleg; csrr a1, mideleg; or a0, a0, a1)
  /* mie: the six standard interrupt enables are writable */
  TEST_CASE(29, a0, MIP_MASK, li t0, -1; csrw mie, t0; csrr a0, mie; li t6, 0xaaa; and a0, a0, t6; csrw mie, x0)
  /* mip: MSIP/MTIP/MEIP are read-only, SSIP/STIP/SEIP writable from M */
  TEST_CASE(30, a0, 0, li t0, 0x888; csrs mip, t0; csrr a0, mip; li t6, 0x888; and a0, a0, t6)
  TEST_CASE(31, a0, 0x222, li t0, 0x222; csrs mip, t0; csrr a0, mip; andi a0, a0, 0x222)
  /* sip / sie show nothing that is not delegated */
  TEST_CASE(32, a0, 0, csrr a0, sip)
  TEST_CASE(33, a0, 0, li t0, -1; csrw mie, t0; csrr a0, sie; csrw mie, x0)
  /* delegated: sip shows SSIP/STIP/SEIP, only SSIP writable through sip */
  li t0, 0x222; csrw mideleg, t0
  TEST_CASE(34, a0, 0x222, csrr a0, sip; slli a0, a0, 52; srli a0, a0, 52)
  TEST_CASE(35, a0, 0x220, csrci sip, 2; csrr a0, sip; slli a0, a0, 52; srli a0, a0, 52)
  TEST_CASE(36, a0, 0x220, li t0, 0x220; csrc sip, t0; csrr a0, sip; slli a0, a0, 52; srli a0, a0, 52)
  TEST_CASE(37, a0, 0x222, csrsi sip, 2; csrr a0, mip; slli a0, a0, 52; srli a0, a0, 52)
  TEST_CASE(38, a0, 0, li t0, 0x222; csrc mip, t0; csrr a0, sip)
  /* sie writes reach mie for delegated bits only */
  TEST_CASE(39, a0, 0x222, li t0, -1; csrw sie, t0; csrr a0, mie; slli a0, a0, 52; srli a0, a0, 52)
  TEST_CASE(40, a0, 0x222, csrr a0, sie; slli a0, a0, 52; srli a0, a0, 52)
  TEST_CASE(41, a0, 0x20, li t0, 0x202; csrc sie, t0; csrr a0, mie; slli a0, a0, 52; srli a0, a0, 52)
  TEST_CASE(42, a0, 0, li t0, 0x20; csrw mideleg, x0; csrr a0, sie; csrw mie, x0)
  /* mtvec / stvec: direct and vectored */
  TEST_CASE(43, a0, 0, la a1, tvec_base; csrw mtvec, a1; csrr a0, mtvec; sub a0, a0, a1)
  TEST_CASE(44, a0, 1, la a1, tvec_base; ori a1, a1, 1; csrw mtvec, a1; csrr a0, mtvec; la a1, tvec_base; sub a0, a0, a1)
  la t0, __unexpected_trap; csrw mtvec, t0
  TEST_CASE(45, a0, 0, la a1, tvec_base; csrw stvec, a1; csrr a0, stvec; sub a0, a0, a1)
  TEST_CASE(46, a0, 1, la a1, tvec_base; ori a1, a1, 1; csrw stvec, a1; csrr a0, stvec; la a1, tvec_base; sub a0, a0, a1)
  /* counter enables */
  TEST_CASE(47, a0, 7, csrwi mcounteren, 7; csrr a0, mcounteren; andi a0, a0, 7)
  TEST_CASE(48, a0, 7, csrwi scounteren, 7; csrr a0, scounteren; andi a0, a0, 7)
  csrw mcounteren, x0; csrw scounteren, x0
  ILLEGAL_IN(49, 1, rdcycle a0)
  ILLEGAL_IN(50, 1, rdtime a0)
  ILLEGAL_IN(51, 1, rdinstret a0)
  ILLEGAL_IN(52, 0, rdcycle a0)
  csrwi mcounteren, 7
  OK_IN(53, 1, rdcycle a0; rdtime a0; rdinstret a0)
  ILLEGAL_IN(54, 0, rdtime a0)          /* scounteren = 0 still blocks U */
  csrwi scounteren, 2
  OK_IN(55, 0, rdtime a0)
  ILLEGAL_IN(56, 0, rdcycle a0)
  ILLEGAL_IN(57, 0, rdinstret a0)
  csrwi mcounteren, 5
  ILLEGAL_IN(58, 0, rdtime a0)          /* mcounteren = 0 for TM blocks U too */
  ILLEGAL_IN(59, 1, rdtime a0)
  OK_IN(60, 1, rdcycle a0; rdinstret a0; csrr a0, scounteren)
  csrwi scounteren, 7
  OK_IN(61, 0, rdcycle a0; rdinstret a0)
  csrwi mcounteren, 7
  /* envcfg: FIOM is writable in both */
  TEST_CASE(62, a0, 1, csrwi 0x30a, 1; csrr a0, 0x30a; andi a0, a0, 1)      /* menvcfg */
  TEST_CASE(63, a0, 0, csrwi 0x30a, 0; csrr a0, 0x30a; andi a0, a0, 1)
  TEST_CASE(64, a0, 1, csrwi 0x10a, 1; csrr a0, 0x10a; andi a0, a0, 1)      /* senvcfg */
  TEST_CASE(65, a0, 0, csrwi 0x10a, 0; csrr a0, 0x10a; andi a0, a0, 1)
  OK_IN(66, 1, csrwi 0x10a, 1; csrr s1, 0x10a)
  CHECK_IMM(s1, 1)
  ILLEGAL_IN(67, 1, csrr a0, 0x30a)
  ILLEGAL_IN(68, 0, csrr a0, 0x10a)
  /* satp: Bare, Sv39, Sv48 accepted (PPN kept); reserved modes leave satp unchanged */
  TEST_CASE(69, a0, 0x8000000000012345, li t0, 0x8000000000012345; csrw satp, t0; csrr a0, satp; li t1, 0xf0000fffffffffff; and a0, a0, t1)
  TEST_CASE(70, a0, 0x9000000000054321, li t0, 0x9000000000054321; csrw satp, t0; csrr a0, satp; li t1, 0xf0000fffffffffff; and a0, a0, t1)
  TEST_CASE(71, a0, 0x9000000000054321, li t0, 0x1000000000011111; csrw satp, t0; csrr a0, satp; li t1, 0xf0000fffffffffff; and a0, a0, t1)
  TEST_CASE(72, a0, 0x9000000000054321, li t0, 0x7000000000011111; csrw satp, t0; csrr a0, satp; li t1, 0xf0000fffffffffff; and a0, a0, t1)
  TEST_CASE(73, a0, 0, csrw satp, x0; csrr a0, satp)
  /* PMP: 16 address registers and pmpcfg0/pmpcfg2 hold what is written (locks never set) */
#define PMPA(n, csr, val) TEST_CASE(n, a0, val, li t0, val; csrw csr, t0; csrr a0, csr)
  PMPA(74, pmpaddr1, 0x0000000000012345)
  PMPA(75, pmpaddr2, 0x0000000000023456)
  PMPA(76, pmpaddr3, 0x0000000000034567)
  PMPA(77, pmpaddr4, 0x0000000020000000)
  PMPA(78, pmpaddr5, 0x0000000020000400)
  PMPA(79, pmpaddr6, 0x0000000020000800)
  PMPA(80, pmpaddr7, 0x00000000200fffff)
  PMPA(81, pmpaddr8, 0x0000000000000008)
  PMPA(82, pmpaddr9, 0x0000000000000009)
  PMPA(83, pmpaddr10, 0x000000000000000a)
  PMPA(84, pmpaddr11, 0x000000000000000b)
  PMPA(85, pmpaddr12, 0x000000000000000c)
  PMPA(86, pmpaddr13, 0x000000000000000d)
  PMPA(87, pmpaddr14, 0x000000000000000e)
  PMPA(88, pmpaddr15, 0x000000000000000f)
  TEST_CASE(89, a0, 0x003fffffffffffff, li t0, 0x003fffffffffffff; csrw pmpaddr1, t0; csrr a0, pmpaddr1)
  /* entry 0 keeps allowing everything; entries 1..7: TOR/NA4/NAPOT with R/W/X */
  PMPA(90, pmpcfg0, 0x0f0b1918090d0f1f)
  PMPA(91, pmpcfg2, 0x1f1d1b19110d0b09)
  TEST_CASE(92, a0, 0, csrw pmpcfg2, x0; csrr a0, pmpcfg2)
  /* with entry 0 = NAPOT RWX over everything, S and U still reach memory */
  OK_IN(93, 1, la a0, tvec_base; ld a0, 0(a0))
  OK_IN(94, 0, la a0, tvec_base; ld a0, 0(a0))
  /* odd pmpcfg registers do not exist on RV64; nor does PMP from S */
  ILLEGAL_IN(95, 3, csrr a0, 0x3a1)
  ILLEGAL_IN(96, 3, csrr a0, 0x3a3)
  ILLEGAL_IN(97, 1, csrr a0, pmpcfg0)
  ILLEGAL_IN(98, 1, csrr a0, pmpaddr0)
  csrw pmpcfg0, x0
  PMP_ALLOW_ALL
  j done
  .align 8
tvec_base:
  FAIL
done:
TEST_END
