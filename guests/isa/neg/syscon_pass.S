/* Ends the run through the sifive,test0 device only (0x5555 = pass), never touching tohost. */
  .section .text.init
  .globl _start
_start:
  li t0, 0x100000
  li t1, 0x5555
  sw t1, 0(t0)
1: j 1b
  .section .tohost, "aw", @progbits
  .align 6; .globl tohost; tohost: .dword 0
