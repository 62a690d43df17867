/* Sv39: a misaligned 2 MiB or 1 GiB superpage (PPN low bits not zero) is a page fault, and an AMO
 * on a page it may not write (read-only, invalid, unmapped) is a store/AMO page fault (15), as is
 * a SC there. ftvm-only because QEMU 7.2 reports an AMO on an invalid or unmapped page as a load
 * page fault (13) (from case 8 on; cases 1..7 pass on QEMU). */
#include "test.h"
#include "vm.h"

#define VBASE 0x1000000000
#define V_RO (VBASE + 0x2000)
#define V_INV (VBASE + 0x1000)
#define V_MEGA_BAD (VBASE + 0x400000)
#define V_GIGA_BAD (VBASE + 0x80000000)
#define RAM 0x80000000

  .section .data
  .align 12
page_a: .dword 0x1111, 0x2222
  .align 12

  .section .text
TEST_BEGIN
  VM_INIT(3)
  MAP(0, 0, PTE_RW, 2)
  MAP(RAM, RAM, PTE_RWX, 2)
  MAP_SYM(V_RO, page_a, PTE_V | PTE_R | PTE_A)
  MAP_SYM(V_INV, page_a, PTE_RW & ~PTE_V)
  MAP(V_MEGA_BAD, RAM + 0x1000, PTE_RW, 1)
  MAP(V_GIGA_BAD, RAM + 0x200000, PTE_RW, 2)
  srli t0, s11, 12; li t1, SATP_SV39; or t0, t0, t1; csrw satp, t0
  sfence.vma
  ENTER_MODE(1, s_mode)
s_mode:
  VM_FAULT(1, 13, V_MEGA_BAD + 8, V_MEGA_BAD, ld a0, 8(a1))
  VM_FAULT(2, 15, V_MEGA_BAD, V_MEGA_BAD, sd a0, 0(a1))
  VM_FAULT(3, 13, V_GIGA_BAD + 16, V_GIGA_BAD + 16, lw a0, 0(a1))
  li TESTNUM, 4; TRAP_EXPECT(1f); li a1, V_GIGA_BAD
  jr a1
1: CHECK_IMM(a1, 12); CHECK_IMM(a3, V_GIGA_BAD)
  /* AMOs and SC need write permission */
  VM_FAULT(5, 15, V_RO + 8, V_RO + 8, amoor.d a0, a0, (a1))
  VM_FAULT(6, 15, V_RO + 4, V_RO + 4, amoswap.w a0, a0, (a1))
  VM_FAULT(7, 15, V_RO, V_RO, amoadd.d a0, a0, (a1))
  VM_FAULT(8, 15, V_INV, V_INV, amomax.w a0, a0, (a1))
  VM_FAULT(9, 15, 0x2000000000, 0x2000000000, amominu.d a0, a0, (a1))
  li TESTNUM, 10; li a1, V_RO; lr.d a0, (a1); CHECK_IMM(a0, 0x1111)
  VM_FAULT(11, 15, V_RO, V_RO, sc.d a2, a0, (a1))
  /* the read-only page is still unchanged */
  TEST_CASE(12, a0, 0x2222, li a1, V_RO; ld a0, 8(a1))
TEST_END
