/* Negative test: a guest that never reports (ftvm must stop at --max-instructions, exit 2). */
  .section .text.init
  .globl _start
_start:
  addi a0, a0, 1
  j _start
  .section .tohost, "aw", @progbits
  .align 6; .globl tohost; tohost: .dword 0
