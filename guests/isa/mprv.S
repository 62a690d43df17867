/* mstatus.MPRV: M-mode loads and stores translated and checked as if in mstatus.MPP (S or U),
 * including SUM and MXR, while instruction fetch stays untranslated; MPP = M means no translation. */
#include "test.h"
#include "vm.h"

#define VBASE 0x1000000000
#define V_RW (VBASE + 0x0000)        /* supervisor RW -> page_a */
#define V_U  (VBASE + 0x1000)        /* user RW -> page_b */
#define V_XO (VBASE + 0x2000)        /* execute-only -> page_a */
#define RAM 0x80000000
#define MPP_S (1 << 11)
#define MPP_MASK (3 << 11)

/* Run `code` in M-mode with MPRV = 1 and MPP = `mpp`; MPRV is cleared again afterwards. */
#define WITH_MPRV(mpp, code...)                      \
  li t0, MPP_MASK; csrc mstatus, t0;                 \
  li t0, (mpp) << 11; csrs mstatus, t0;              \
  li t0, MSTATUS_MPRV; csrs mstatus, t0;             \
  code;                                              \
  li t0, MSTATUS_MPRV; csrc mstatus, t0

  .section .data
  .align 12
page_a: .dword 0xaaaa0001, 0xaaaa0002
  .align 12
page_b: .dword 0xbbbb0001, 0xbbbb0002
  .align 12

  .section .text
TEST_BEGIN
  VM_INIT(3)
  MAP(0, 0, PTE_RW, 2)
  MAP(RAM, RAM, PTE_RWX, 2)
  MAP_SYM(V_RW, page_a, PTE_RW)
  MAP_SYM(V_U, page_b, PTE_RW | PTE_U)
  MAP_SYM(V_XO, page_a, PTE_V | PTE_X | PTE_A)
  srli t0, s11, 12; li t1, SATP_SV39; or t0, t0, t1; csrw satp, t0
  sfence.vma
  la s0, page_a
  /* M-mode ignores satp without MPRV: V_RW is no physical address */
  li TESTNUM, 1; TRAP_EXPECT(1f); li a1, V_RW
2: ld a0, 0(a1)
  FAIL
1: CHECK_IMM(a1, 5)
  /* MPRV, MPP = S: translated; the code keeps running from physical addresses */
  TEST_CASE(2, a0, 0xaaaa0001, li a1, V_RW; WITH_MPRV(1, ld a0, 0(a1)))
  TEST_CASE(3, a0, 0x77, li a1, V_RW; li a2, 0x77; WITH_MPRV(1, sd a2, 8(a1)); ld a0, 8(s0))
  /* MPP = U: supervisor pages fault, user pages work */
  li TESTNUM, 4; TRAP_EXPECT(1f); li a1, V_RW
  WITH_MPRV(0, ld a0, 0(a1))
  FAIL
1: CHECK_IMM(a1, 13); CHECK_IMM(a3, V_RW)
  li t0, MSTATUS_MPRV; csrc mstatus, t0
  TEST_CASE(5, a0, 0xbbbb0001, li a1, V_U; WITH_MPRV(0, ld a0, 0(a1)))
  /* MPP = S: user pages need SUM */
  li TESTNUM, 6; TRAP_EXPECT(1f); li a1, V_U
  WITH_MPRV(1, sd a0, 0(a1))
  FAIL
1: CHECK_IMM(a1, 15); CHECK_IMM(a3, V_U)
  li t0, MSTATUS_MPRV; csrc mstatus, t0
  TEST_CASE(7, a0, 0xbbbb0002, li a1, V_U; li t0, MSTATUS_SUM; csrs mstatus, t0; WITH_MPRV(1, ld a0, 8(a1)); li t0, MSTATUS_SUM; csrc mstatus, t0)
  /* MXR lets execute-only pages be read */
  li TESTNUM, 8; TRAP_EXPECT(1f); li a1, V_XO
  WITH_MPRV(1, ld a0, 0(a1))
  FAIL
1: CHECK_IMM(a1, 13); CHECK_IMM(a3, V_XO)
  li t0, MSTATUS_MPRV; csrc mstatus, t0
  TEST_CASE(9, a0, 0xaaaa0001, li a1, V_XO; li t0, MSTATUS_MXR; csrs mstatus, t0; WITH_MPRV(1, ld a0, 0(a1)); li t0, MSTATUS_MXR; csrc mstatus, t0)
  /* MPP = M: no translation even with MPRV */
  TEST_CASE(10, a0, 0xaaaa0001, WITH_MPRV(3, ld a0, 0(s0)))
  /* AMOs go through MPRV too */
  TEST_CASE(11, a0, 0x77, li a1, V_RW + 8; li a2, 1; WITH_MPRV(1, amoadd.d a0, a2, (a1)); ld a1, 8(s0); CHECK_IMM(a1, 0x78))
  csrw satp, x0
TEST_END
