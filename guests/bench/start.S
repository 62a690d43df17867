/* Startup of the bare-metal benchmark: M-mode, no paging. Sets a trap vector that reports any trap
 * as a failure, turns the FPU on, clears .bss, runs main() and reports its result through both
 * exits: the HTIF `tohost` word (ftvm run-elf) and the sifive,test0 device (QEMU's virt board). */
  .section .text.init, "ax", @progbits
  .globl _start
_start:
  csrr t0, mhartid
1: bnez t0, 1b               /* other harts park */
  la t0, trap_entry
  csrw mtvec, t0
  li t0, 1 << 13             /* mstatus.FS = Initial */
  csrs mstatus, t0
  fscsr zero
  la sp, __stack_top
  la t0, __bss_start
  la t1, __bss_end
2: bgeu t0, t1, 3f
  sd zero, 0(t0)
  addi t0, t0, 8
  j 2b
3: call main
  call bench_exit
4: j 4b

  .align 2
trap_entry:
  csrr a0, mcause
  csrr a1, mepc
  csrr a2, mtval
  la sp, __stack_top
  call bench_trap
5: j 5b

  .section .tohost, "aw", @progbits
  .align 6
  .globl tohost
tohost: .dword 0
  .align 6
  .globl fromhost
fromhost: .dword 0
