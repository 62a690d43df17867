/* The body shared by vm_sv39.S and vm_sv48.S (LEVELS = 3 or 4, SATP_MODE): paging seen from S and
 * U. Every fault is checked for cause, mepc and mtval (the faulting virtual address). */
#include "test.h"
#include "vm.h"

#define VBASE  0x1000000000          /* 64 GiB: test mappings live above here */
#define V_RW   (VBASE + 0x0000)      /* 4 KiB RW -> page_a */
#define V_INV  (VBASE + 0x1000)      /* PTE with V = 0 */
#define V_RO   (VBASE + 0x2000)      /* R only -> page_a */
#define V_XO   (VBASE + 0x3000)      /* X only -> xpage */
#define V_UD   (VBASE + 0x4000)      /* U RW data -> page_b */
#define V_UX   (VBASE + 0x5000)      /* U RX code -> upage */
#define V_CROSS (VBASE + 0x6000)     /* X -> crosspage, next page unmapped */
#define V_WO   (VBASE + 0x8000)      /* W without R (reserved) */
#define V_AD   (VBASE + 0x9000)      /* RWX, A = D = 0 -> xpage2 */
#define V_NX   (VBASE + 0xa000)      /* RW, not executable -> xpage */
#define V_MEGA (VBASE + 0x200000)    /* 2 MiB -> RAM base */
#define V_GIGA (VBASE + 0x40000000)  /* 1 GiB -> RAM base */
#define V_NONE 0x2000000000          /* nothing mapped under this root entry */
#define RAM 0x80000000

  .section .data
  .align 12
page_a: .dword 0xaaaa0000aaaa0001, 0xaaaa0000aaaa0002
  .align 12
page_b: .dword 0xbbbb0000bbbb0001, 0xbbbb0000bbbb0002
  .align 12

  .section .text
  .align 12
xpage:                         /* a routine returning 42 */
  li a0, 42
  ret
  .align 12
xpage2:
  li a0, 43
  ret
  .align 12
upage:                         /* U-mode code: a0 = *a1, then ECALL */
  .option push
  .option norvc
  ld a0, 0(a1)
  ecall
  .option pop
  .align 12
crosspage:
  .rept 2047
  c.nop
  .endr
  .option push
  .option norvc
  addi a0, a0, 1               /* straddles into the next, unmapped, page */
  .option pop
  ret
  .align 12

TEST_BEGIN
  VM_INIT(LEVELS)
  /* identity: devices (first GiB) and RAM (third GiB), supervisor-only */
  MAP(0, 0, PTE_RW, 2)
  MAP(RAM, RAM, PTE_RWX, 2)
  MAP_SYM(V_RW, page_a, PTE_RW)
  MAP_SYM(V_INV, page_a, PTE_RW & ~PTE_V)
  MAP_SYM(V_RO, page_a, PTE_V | PTE_R | PTE_A)
  MAP_SYM(V_XO, xpage, PTE_V | PTE_X | PTE_A)
  MAP_SYM(V_UD, page_b, PTE_RW | PTE_U)
  MAP_SYM(V_UX, upage, PTE_V | PTE_R | PTE_X | PTE_A | PTE_U)
  MAP_SYM(V_CROSS, crosspage, PTE_V | PTE_R | PTE_X | PTE_A)
  MAP_SYM(V_WO, page_a, PTE_V | PTE_W | PTE_A | PTE_D)
  MAP_SYM(V_AD, xpage2, PTE_V | PTE_R | PTE_W | PTE_X)
  mv s9, a0                    /* the PTE whose A/D bits hardware sets */
  MAP_SYM(V_NX, xpage, PTE_RW)
  MAP(V_MEGA, RAM, PTE_RW, 1)
  MAP(V_GIGA, RAM, PTE_RW, 2)
#if LEVELS == 4
  MAP(V_TERA, 0, PTE_RW, 3)
#endif
  srli t0, s11, 12; li t1, SATP_MODE; or t0, t0, t1; csrw satp, t0
  sfence.vma
  /* everything below runs in S-mode */
  ENTER_MODE(1, s_mode)
s_mode:
  la s0, page_a
  la s1, page_b
  TEST_CASE(1, a0, 0xaaaa0000aaaa0001, li a1, V_RW; ld a0, 0(a1))
  TEST_CASE(2, a0, 0x1234, li a1, V_RW; li a2, 0x1234; sd a2, 16(a1); ld a0, 16(s0))
  TEST_CASE(3, a0, 0xaaaa0000aaaa0002, li a1, V_MEGA - RAM; add a1, a1, s0; ld a0, 8(a1))
  TEST_CASE(4, a0, 0xaaaa0000aaaa0002, li a1, V_GIGA - RAM; add a1, a1, s0; ld a0, 8(a1))
  TEST_CASE(5, a0, 0xaaaa0000aaaa0001, li a1, V_RO; ld a0, 0(a1))
  /* (misaligned superpages and AMO page faults: vm_ftvm) */
  /* invalid PTE, nothing mapped */
  VM_FAULT(9, 13, V_INV, V_INV, ld a0, 0(a1))
  VM_FAULT(10, 15, V_INV + 8, V_INV, sd a0, 8(a1))
  VM_FAULT(11, 13, V_NONE, V_NONE, lb a0, 0(a1))
  li TESTNUM, 13; TRAP_EXPECT(1f); li a1, V_INV
  jr a1
1: CHECK_IMM(a1, 12); CHECK_IMM(a2, V_INV); CHECK_IMM(a3, V_INV)
  /* permissions: read-only, W without R, execute-only, not executable */
  VM_FAULT(14, 15, V_RO, V_RO, sd a0, 0(a1))
  VM_FAULT(17, 13, V_WO, V_WO, ld a0, 0(a1))
  VM_FAULT(18, 15, V_WO, V_WO, sd a0, 0(a1))
  VM_FAULT(19, 13, V_XO, V_XO, ld a0, 0(a1))
  TEST_CASE(20, a0, 42, li a1, V_XO; jalr a1)
  li TESTNUM, 21; TRAP_EXPECT(1f); li a1, V_NX
  jalr a1
1: CHECK_IMM(a1, 12); CHECK_IMM(a2, V_NX); CHECK_IMM(a3, V_NX)
  /* MXR: execute-only pages become readable */
  TEST_CASE(22, a0, 0x02a00513, li t0, MSTATUS_MXR; csrs sstatus, t0; li a1, V_XO; lwu a0, 0(a1); li t0, MSTATUS_MXR; csrc sstatus, t0)
  /* U pages from S: no access without SUM, data with SUM, never execution */
  VM_FAULT(23, 13, V_UD, V_UD, ld a0, 0(a1))
  VM_FAULT(24, 15, V_UD, V_UD, sd a0, 0(a1))
  TEST_CASE(25, a0, 0xbbbb0000bbbb0001, li t0, MSTATUS_SUM; csrs sstatus, t0; li a1, V_UD; ld a0, 0(a1))
  TEST_CASE(26, a0, 0x55, li a1, V_UD; li a2, 0x55; sd a2, 8(a1); ld a0, 8(s1))
  li TESTNUM, 27; TRAP_EXPECT(1f); li a1, V_UX
  jalr a1
1: CHECK_IMM(a1, 12); CHECK_IMM(a2, V_UX); CHECK_IMM(a3, V_UX)
  li t0, MSTATUS_SUM; csrc sstatus, t0
  /* U-mode: its own pages work, supervisor pages fault */
  li TESTNUM, 28; TRAP_EXPECT(1f)
  li t0, 1 << 8; csrc sstatus, t0
  li t0, V_UX; csrw sepc, t0
  li a1, V_UD
  sret
1: CHECK_IMM(a1, 8); CHECK_IMM(a2, V_UX + 4); CHECK_IMM(a0, 0xbbbb0000bbbb0001)
  li TESTNUM, 29; TRAP_EXPECT(1f)
  li t0, 1 << 8; csrc sstatus, t0
  li t0, V_UX; csrw sepc, t0
  li a1, V_RW
  sret
1: CHECK_IMM(a1, 13); CHECK_IMM(a2, V_UX); CHECK_IMM(a3, V_RW)
  li TESTNUM, 30; TRAP_EXPECT(1f)
  li t0, 1 << 8; csrc sstatus, t0
  li t0, V_XO; csrw sepc, t0
  sret
1: CHECK_IMM(a1, 12); CHECK_IMM(a2, V_XO); CHECK_IMM(a3, V_XO)
  /* SUM does not open supervisor pages to U, and U still cannot run them */
  li TESTNUM, 31; TRAP_EXPECT(1f)
  li t0, MSTATUS_SUM; csrs sstatus, t0
  li t0, 1 << 8; csrc sstatus, t0
  li t0, V_UX; csrw sepc, t0
  li a1, V_RW
  sret
1: CHECK_IMM(a1, 13); CHECK_IMM(a3, V_RW)
  li t0, MSTATUS_SUM; csrc sstatus, t0
  /* A and D are set by hardware: A by a read, D by a write, A by a fetch */
  TEST_CASE(32, a0, 0, ld a0, 0(s9); andi a0, a0, PTE_A | PTE_D)
  TEST_CASE(33, a0, PTE_A, li a1, V_AD; ld a2, 0(a1); ld a0, 0(s9); andi a0, a0, PTE_A | PTE_D)
  TEST_CASE(34, a0, PTE_A | PTE_D, li a1, V_AD; sd x0, 64(a1); ld a0, 0(s9); andi a0, a0, PTE_A | PTE_D)
  TEST_CASE(35, a0, PTE_A, ld a0, 0(s9); andi a0, a0, ~(PTE_A | PTE_D); sd a0, 0(s9); sfence.vma;
    li a1, V_AD; jalr a1; CHECK_IMM(a0, 43); ld a0, 0(s9); andi a0, a0, PTE_A | PTE_D)
  /* non-canonical addresses fault even where the low bits are mapped */
  VM_FAULT(36, 13, VBASE | (1 << 63), VBASE | (1 << 63), ld a0, 0(a1))
  VM_FAULT(37, 15, VBASE | (1 << VA_BITS), VBASE | (1 << VA_BITS), sd a0, 0(a1))
  VM_FAULT(38, 13, V_RW | (1 << (VA_BITS - 1)), V_RW | (1 << (VA_BITS - 1)), ld a0, 0(a1))
  li TESTNUM, 39; TRAP_EXPECT(1f); li a1, V_XO | (1 << VA_BITS)
  jalr a1
1: CHECK_IMM(a1, 12); CHECK_IMM(a2, V_XO | (1 << VA_BITS)); CHECK_IMM(a3, V_XO | (1 << VA_BITS))
  /* SFENCE.VMA makes a changed PTE visible: remap V_RW to page_b, then back, then invalidate */
  li a1, V_RW; ld a0, 0(a1)
  li TESTNUM, 40
  MAP_SYM(V_RW, page_b, PTE_RW)    /* pt_map ends with SFENCE.VMA */
  li a1, V_RW; ld a0, 0(a1); CHECK_IMM(a0, 0xbbbb0000bbbb0001)
  li TESTNUM, 41
  MAP_SYM(V_RW, page_a, PTE_RW)
  li a1, V_RW; ld a0, 0(a1); CHECK_IMM(a0, 0xaaaa0000aaaa0001)
  li TESTNUM, 42
  MAP_SYM(V_RW, page_a, PTE_RW)
  ld t0, 0(a0); andi t0, t0, ~PTE_V; sd t0, 0(a0)
  li a1, V_RW; sfence.vma a1, x0
  VM_FAULT(43, 13, V_RW, V_RW, ld a0, 0(a1))
  MAP_SYM(V_RW, page_a, PTE_RW)
  li TESTNUM, 44; li a1, V_RW; ld a0, 0(a1); CHECK_IMM(a0, 0xaaaa0000aaaa0001)
  /* a 32-bit instruction straddling into an unmapped page: mepc = its start, mtval = the page */
  li TESTNUM, 45; TRAP_EXPECT(1f); li a1, V_CROSS + 4094
  jalr a1
1: CHECK_IMM(a1, 12); CHECK_IMM(a2, V_CROSS + 4094); CHECK_IMM(a3, V_CROSS + 4096)
  /* ... while the same instruction runs fine when both pages are mapped */
  li TESTNUM, 46
  li a0, V_CROSS + 4096; la a1, crosspage + 4096; li a2, PTE_V | PTE_R | PTE_X | PTE_A; li a3, 0; call pt_map
  li a0, 10; li a1, V_CROSS + 4094; jalr a1; CHECK_IMM(a0, 11)
  /* satp is readable from S */
  TEST_CASE(47, a0, SATP_MODE >> 60, csrr a0, satp; srli a0, a0, 60)
#if LEVELS == 4
  TEST_CASE(48, a0, 0xaaaa0000aaaa0002, li a1, V_TERA + RAM; add a1, a1, s0; li a2, RAM; sub a1, a1, a2; ld a0, 8(a1))
#endif
TEST_END
