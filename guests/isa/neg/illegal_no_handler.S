/* Negative test: an illegal instruction with no trap handler (mtvec = 0 at reset): the trap loop
 * must end as "ran past --max-instructions", never as a host panic. */
  .section .text.init
  .globl _start
_start:
  csrw mtvec, x0
  .word 0
  .section .tohost, "aw", @progbits
  .align 6; .globl tohost; tohost: .dword 0
