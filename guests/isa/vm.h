/* Page tables for the paging tests (vm_sv39, vm_sv48, mprv): a bump allocator of zeroed 4 KiB
 * tables and `pt_map`, plus `vm_trap`, an M-mode handler for expected traps that resumes at t5 in
 * S-mode (traps from S or U) or M-mode (traps from M), with a1..a4 = mcause/mepc/mtval/mstatus.
 *
 * s11 = root table, s10 = number of levels (3 = Sv39, 4 = Sv48). Include after test.h, and call
 * VM_INIT(levels) in M-mode before anything else. */
#ifndef FTVM_VM_H
#define FTVM_VM_H

#define PTE_V 0x01
#define PTE_R 0x02
#define PTE_W 0x04
#define PTE_X 0x08
#define PTE_U 0x10
#define PTE_G 0x20
#define PTE_A 0x40
#define PTE_D 0x80
#define PTE_RW (PTE_V | PTE_R | PTE_W | PTE_A | PTE_D)
#define PTE_RWX (PTE_RW | PTE_X)

#define SATP_SV39 (8 << 60)
#define SATP_SV48 (9 << 60)

#define MSTATUS_SUM (1 << 18)
#define MSTATUS_MXR (1 << 19)
#define MSTATUS_MPRV (1 << 17)

/* Map `va` to `pa` with `flags` as a leaf at `level` (0 = 4 KiB, 1 = 2 MiB, 2 = 1 GiB,
 * 3 = 512 GiB). a0 = address of the leaf PTE afterwards. Clobbers t0..t4, t6, a0. */
#define MAP(va, pa, flags, level)                    \
  li a0, va; li a1, pa; li a2, flags; li a3, level; call pt_map
#define MAP_SYM(va, sym, flags)                      \
  li a0, va; la a1, sym; li a2, flags; li a3, 0; call pt_map

#define VM_INIT(levels)                              \
  li s10, levels;                                    \
  call pt_init;                                      \
  la t0, vm_trap; csrw mtvec, t0;                    \
  PMP_ALLOW_ALL

/* Case n: with a1 = `addr`, the instruction `insn` (at label 2) must trap with `cause`, mtval
 * `tval` and mepc = label 2, in the current mode. */
#define VM_FAULT(n, cause, tval, addr, insn...)      \
  li TESTNUM, n; li a1, addr; TRAP_EXPECT(1f);       \
2: insn;                                             \
  FAIL;                                              \
1: CHECK_IMM(a1, cause); la t6, 2b; bne a2, t6, __fail; CHECK_IMM(a3, tval)

  .section .bss
  .align 12
pt_pool: .space 4096 * 24
pt_pool_end:
  .section .data
  .align 3
pt_next: .dword 0

  .section .text
  .align 2
pt_init:
  la t0, pt_pool
  la t1, pt_pool_end
1: sd x0, 0(t0); addi t0, t0, 8; bltu t0, t1, 1b
  la s11, pt_pool
  li t0, 4096; add t0, s11, t0
  la t1, pt_next; sd t0, 0(t1)
  ret

pt_map:
  mv t0, s11                 /* current table */
  addi t1, s10, -1           /* current level */
1: li t2, 9; mul t2, t2, t1; addi t2, t2, 12
  srl t3, a0, t2; andi t3, t3, 511; slli t3, t3, 3; add t3, t3, t0
  beq t1, a3, 2f
  ld t4, 0(t3)
  andi t2, t4, PTE_V; bnez t2, 3f
  la t2, pt_next; ld t4, 0(t2); li t6, 4096; add t6, t4, t6; sd t6, 0(t2)
  la t2, pt_pool_end; bgeu t4, t2, __fail
  srli t6, t4, 12; slli t6, t6, 10; ori t6, t6, PTE_V; sd t6, 0(t3)
  mv t0, t4; j 4f
3: srli t0, t4, 10; slli t0, t0, 12
4: addi t1, t1, -1; j 1b
2: srli t2, a1, 12; slli t2, t2, 10; or t2, t2, a2; sd t2, 0(t3)
  mv a0, t3
  sfence.vma
  ret

  .align 2
vm_trap:
  beqz t5, __unexpected_trap
  csrr a1, mcause
  csrr a2, mepc
  csrr a3, mtval
  csrr a4, mstatus
  csrw mepc, t5
  li t5, 0
  /* resume in S if the trap came from U */
  srli t4, a4, 11; andi t4, t4, 3; bnez t4, 1f
  li t4, 1 << 11; csrs mstatus, t4
1: mret

#endif
