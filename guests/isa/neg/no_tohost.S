/* Negative test: an ELF without a `tohost` symbol (ftvm must refuse it: it could never report). */
  .section .text.init
  .globl _start
_start:
  j _start
