/* Helpers for the F/D ISA tests (fp_*.S), on top of test.h.
 *
 * Every check compares exact bits: single-precision results are read back with FMV.X.D, so the
 * NaN box (upper 32 bits all ones) is checked too, and every case checks the exact fflags the
 * operation raised (read and cleared with CSRRW). On a mismatch the got/want pair is printed on
 * the UART before the case fails, so a failure says what went wrong.
 *
 * Register use: f1, f2, f4 operands, f3 result; t0..t3 scratch; s2, s3 the mismatch pair.
 * Operands and results are given as bit patterns.
 */
#ifndef FTVM_FP_MACROS_H
#define FTVM_FP_MACROS_H

#include "test.h"

#define BOXED(v) (0xffffffff00000000 | (v))

/* Fail the current case unless registers got == want (64-bit); print both on a mismatch. */
#define FP_CHECK(got, want)                          \
  beq got, want, 4f;                                 \
  mv s2, got; mv s3, want;                           \
  PRINT("fp: got/want ");                            \
  __PUTHEX(s2); __PUTHEX(s3);                        \
  li t0, 0x10000000; li t1, '\n'; sb t1, 0(t0);      \
  j __fail;                                          \
4:

/* Check (and clear) fflags. */
#define FLAGS_CHECK(flags)                           \
  csrrw t1, fflags, x0; li t2, flags; FP_CHECK(t1, t2)

/* Check f3 against a single (boxed) / double result. */
#define RES_S(res) fmv.x.d t1, f3; li t2, BOXED(res); FP_CHECK(t1, t2)
#define RES_D(res) fmv.x.d t1, f3; li t2, res; FP_CHECK(t1, t2)
/* Check integer result t1. */
#define RES_X(res) li t2, res; FP_CHECK(t1, t2)

#define LD_S(freg, v) li t0, v; fmv.w.x freg, t0
#define LD_D(freg, v) li t0, v; fmv.d.x freg, t0

/* f3 = inst(f1, f2[, rm]) in single / double. */
#define T_S2(n, inst, rm, flags, res, a, b)          \
  li TESTNUM, n; LD_S(f1, a); LD_S(f2, b); csrw fflags, x0; \
  inst f3, f1, f2, rm; RES_S(res); FLAGS_CHECK(flags)
#define T_D2(n, inst, rm, flags, res, a, b)          \
  li TESTNUM, n; LD_D(f1, a); LD_D(f2, b); csrw fflags, x0; \
  inst f3, f1, f2, rm; RES_D(res); FLAGS_CHECK(flags)
#define T_S2N(n, inst, flags, res, a, b)             \
  li TESTNUM, n; LD_S(f1, a); LD_S(f2, b); csrw fflags, x0; \
  inst f3, f1, f2; RES_S(res); FLAGS_CHECK(flags)
#define T_D2N(n, inst, flags, res, a, b)             \
  li TESTNUM, n; LD_D(f1, a); LD_D(f2, b); csrw fflags, x0; \
  inst f3, f1, f2; RES_D(res); FLAGS_CHECK(flags)

/* f3 = inst(f1[, rm]): FSQRT, FCVT.S.D, FCVT.D.S. */
#define T_S1(n, inst, rm, flags, res, a)             \
  li TESTNUM, n; LD_S(f1, a); csrw fflags, x0;      \
  inst f3, f1, rm; RES_S(res); FLAGS_CHECK(flags)
#define T_D1(n, inst, rm, flags, res, a)             \
  li TESTNUM, n; LD_D(f1, a); csrw fflags, x0;      \
  inst f3, f1, rm; RES_D(res); FLAGS_CHECK(flags)
/* Single result of a double operand and the reverse. */
#define T_SD(n, inst, rm, flags, res, a)             \
  li TESTNUM, n; LD_D(f1, a); csrw fflags, x0;      \
  inst f3, f1, rm; RES_S(res); FLAGS_CHECK(flags)
#define T_DS(n, inst, rm, flags, res, a)             \
  li TESTNUM, n; LD_S(f1, a); csrw fflags, x0;      \
  inst f3, f1, rm; RES_D(res); FLAGS_CHECK(flags)

/* Exact conversions, which the assembler takes without a rounding mode (it encodes rm = 0). */
#define T_DSN(n, inst, flags, res, a)                \
  li TESTNUM, n; LD_S(f1, a); csrw fflags, x0;      \
  inst f3, f1; RES_D(res); FLAGS_CHECK(flags)

/* f3 = inst(f1, f2, f4, rm): the fused multiply-adds. */
#define T_S3(n, inst, rm, flags, res, a, b, c)       \
  li TESTNUM, n; LD_S(f1, a); LD_S(f2, b); LD_S(f4, c); csrw fflags, x0; \
  inst f3, f1, f2, f4, rm; RES_S(res); FLAGS_CHECK(flags)
#define T_D3(n, inst, rm, flags, res, a, b, c)       \
  li TESTNUM, n; LD_D(f1, a); LD_D(f2, b); LD_D(f4, c); csrw fflags, x0; \
  inst f3, f1, f2, f4, rm; RES_D(res); FLAGS_CHECK(flags)

/* t1 = inst(f1[, rm]): float → integer conversions, FCLASS, FMV.X.*. */
#define T_XS(n, inst, rm, flags, res, a)             \
  li TESTNUM, n; LD_S(f1, a); csrw fflags, x0;      \
  inst t1, f1, rm; RES_X(res); FLAGS_CHECK(flags)
#define T_XD(n, inst, rm, flags, res, a)             \
  li TESTNUM, n; LD_D(f1, a); csrw fflags, x0;      \
  inst t1, f1, rm; RES_X(res); FLAGS_CHECK(flags)
#define T_XSN(n, inst, flags, res, a)                \
  li TESTNUM, n; LD_S(f1, a); csrw fflags, x0;      \
  inst t1, f1; RES_X(res); FLAGS_CHECK(flags)
#define T_XDN(n, inst, flags, res, a)                \
  li TESTNUM, n; LD_D(f1, a); csrw fflags, x0;      \
  inst t1, f1; RES_X(res); FLAGS_CHECK(flags)

/* t1 = inst(f1, f2): comparisons. */
#define T_CMP_S(n, inst, flags, res, a, b)           \
  li TESTNUM, n; LD_S(f1, a); LD_S(f2, b); csrw fflags, x0; \
  inst t1, f1, f2; RES_X(res); FLAGS_CHECK(flags)
#define T_CMP_D(n, inst, flags, res, a, b)           \
  li TESTNUM, n; LD_D(f1, a); LD_D(f2, b); csrw fflags, x0; \
  inst t1, f1, f2; RES_X(res); FLAGS_CHECK(flags)

/* f3 = inst(t0[, rm]): integer → float conversions. */
#define T_SX(n, inst, rm, flags, res, a)             \
  li TESTNUM, n; li t3, a; csrw fflags, x0;         \
  inst f3, t3, rm; RES_S(res); FLAGS_CHECK(flags)
#define T_DX(n, inst, rm, flags, res, a)             \
  li TESTNUM, n; li t3, a; csrw fflags, x0;         \
  inst f3, t3, rm; RES_D(res); FLAGS_CHECK(flags)
#define T_DXN(n, inst, flags, res, a)                \
  li TESTNUM, n; li t3, a; csrw fflags, x0;         \
  inst f3, t3; RES_D(res); FLAGS_CHECK(flags)

/* Common bit patterns. */
#define S_ONE     0x3f800000
#define S_MONE    0xbf800000
#define S_TWO     0x40000000
#define S_HALF    0x3f000000
#define S_PZERO   0x00000000
#define S_NZERO   0x80000000
#define S_PINF    0x7f800000
#define S_NINF    0xff800000
#define S_QNAN    0x7fc00000
#define S_QNANP   0x7fc12345 /* quiet NaN with a payload */
#define S_NQNAN   0xffc00001 /* negative quiet NaN */
#define S_SNAN    0x7f800001
#define S_NSNAN   0xff812345
#define S_MAX     0x7f7fffff
#define S_MIN     0x00800000 /* smallest normal */
#define S_SUB     0x00000001 /* smallest subnormal */
#define S_CNAN    0x7fc00000

#define D_ONE     0x3ff0000000000000
#define D_MONE    0xbff0000000000000
#define D_TWO     0x4000000000000000
#define D_HALF    0x3fe0000000000000
#define D_PZERO   0x0000000000000000
#define D_NZERO   0x8000000000000000
#define D_PINF    0x7ff0000000000000
#define D_NINF    0xfff0000000000000
#define D_QNAN    0x7ff8000000000000
#define D_QNANP   0x7ff8000000012345
#define D_NQNAN   0xfff8000000000001
#define D_SNAN    0x7ff0000000000001
#define D_NSNAN   0xfff0000000012345
#define D_MAX     0x7fefffffffffffff
#define D_MIN     0x0010000000000000
#define D_SUB     0x0000000000000001
#define D_CNAN    0x7ff8000000000000

/* fflags bits. */
#define NV 0x10
#define DZ 0x08
#define OF 0x04
#define UF 0x02
#define NX 0x01

#endif
