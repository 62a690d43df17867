/* FP loads and stores (FLW/FSW/FLD/FSD and the compressed C.FLD/C.FSD/C.FLDSP/C.FSDSP), moves
 * between register files, and NaN boxing: a single-precision operand whose upper 32 bits are not
 * all ones reads as the canonical NaN, except in the transfer instructions, which move raw bits. */
#include "fp_macros.h"

#define UNBOXED_ONE 0x000000003f800000
#define HALF_BOXED_ONE 0xfffffffe3f800000

TEST_BEGIN
  FP_ENABLE
  la a0, fp_buf

  /* flw boxes the loaded word; fld loads 64 bits */
  li TESTNUM, 1; flw f3, 0(a0); RES_S(0x89abcdef)
  li TESTNUM, 2; flw f3, 4(a0); RES_S(0x01234567)
  li TESTNUM, 3; fld f3, 8(a0); RES_D(0xfedcba9876543210)
  li TESTNUM, 4; addi a1, a0, 16; fld f3, -16(a1); RES_D(0x0123456789abcdef)

  /* fsw stores the low 32 bits whatever the upper ones; fsd 64 bits */
  li TESTNUM, 5; LD_D(f5, 0x1122334455667788); fsw f5, 16(a0); ld t1, 16(a0); RES_X(0x55667788)
  li TESTNUM, 6; fsd f5, 24(a0); ld t1, 24(a0); RES_X(0x1122334455667788)
  li TESTNUM, 7; addi a1, a0, 40; fsd f5, -8(a1); ld t1, 32(a0); RES_X(0x1122334455667788)
  li TESTNUM, 8; LD_S(f5, 0xc0490fdb); fsw f5, 44(a0); lwu t1, 44(a0); RES_X(0xc0490fdb)
  li TESTNUM, 9; flw f3, 44(a0); RES_S(0xc0490fdb)
  FLAGS_CHECK(0)

  /* compressed forms */
  li TESTNUM, 10; c.fld fs0, 8(a0); fmv.x.d t1, fs0; RES_X(0xfedcba9876543210)
  li TESTNUM, 11; c.fsd fs0, 48(a0); ld t1, 48(a0); RES_X(0xfedcba9876543210)
  li TESTNUM, 12; addi sp, sp, -32; LD_D(f20, 0x0badf00dcafe1234); c.fsdsp f20, 16(sp); ld t1, 16(sp); RES_X(0x0badf00dcafe1234)
  li TESTNUM, 13; c.fldsp f21, 16(sp); fmv.x.d t1, f21; RES_X(0x0badf00dcafe1234); addi sp, sp, 32

  /* moves: fmv.w.x boxes, fmv.x.w sign-extends raw bits, 64-bit moves are exact */
  li TESTNUM, 14; li t0, 0x123456789abcdef0; fmv.w.x f3, t0; RES_S(0x9abcdef0)
  li TESTNUM, 15; li t0, 0x123456789abcdef0; fmv.d.x f3, t0; RES_D(0x123456789abcdef0)
  li TESTNUM, 16; fmv.x.w t1, f3; RES_X(0xffffffff9abcdef0)
  li TESTNUM, 17; li t0, -1; fmv.d.x f31, t0; fmv.x.d t6, f31; li t1, -1; CHECK_EQ(t1, t6)
  li TESTNUM, 18; fmv.w.x f3, x0; RES_S(0)
  FLAGS_CHECK(0)

  /* improperly boxed operands read as the canonical (quiet) NaN */
  li TESTNUM, 20; LD_D(f1, UNBOXED_ONE); LD_S(f2, S_ONE); fadd.s f3, f1, f2; RES_S(S_CNAN); FLAGS_CHECK(0)
  li TESTNUM, 21; LD_D(f1, HALF_BOXED_ONE); fadd.s f3, f2, f1; RES_S(S_CNAN); FLAGS_CHECK(0)
  li TESTNUM, 22; LD_D(f1, UNBOXED_ONE); feq.s t1, f1, f2; RES_X(0); FLAGS_CHECK(0)
  li TESTNUM, 23; flt.s t1, f2, f1; RES_X(0); FLAGS_CHECK(NV)
  li TESTNUM, 24; fclass.s t1, f1; RES_X(0x200); FLAGS_CHECK(0)
  li TESTNUM, 25; fsgnj.s f3, f1, f2; RES_S(S_CNAN); FLAGS_CHECK(0)
  li TESTNUM, 26; fsgnjn.s f3, f2, f1; RES_S(S_MONE); FLAGS_CHECK(0)
  li TESTNUM, 27; LD_S(f4, S_TWO); fmin.s f3, f1, f4; RES_S(S_TWO); FLAGS_CHECK(0)
  li TESTNUM, 28; fmax.s f3, f4, f1; RES_S(S_TWO); FLAGS_CHECK(0)
  li TESTNUM, 29; fcvt.d.s f3, f1; RES_D(D_CNAN); FLAGS_CHECK(0)
  li TESTNUM, 30; fcvt.w.s t1, f1, rtz; RES_X(0x7fffffff); FLAGS_CHECK(NV)
  li TESTNUM, 31; fmadd.s f3, f2, f2, f1; RES_S(S_CNAN); FLAGS_CHECK(0)
  li TESTNUM, 32; fsqrt.s f3, f1; RES_S(S_CNAN); FLAGS_CHECK(0)
  li TESTNUM, 33; fmv.x.w t1, f1; RES_X(0x3f800000); FLAGS_CHECK(0)
  li TESTNUM, 34; fsw f1, 56(a0); lwu t1, 56(a0); RES_X(0x3f800000)
  li TESTNUM, 35; fsgnjx.s f3, f2, f1; RES_S(S_ONE); FLAGS_CHECK(0)
  /* a double operation sees all 64 bits: a boxed single is a (negative quiet) NaN */
  li TESTNUM, 36; LD_S(f1, S_ONE); fadd.d f3, f1, f1; RES_D(D_CNAN); FLAGS_CHECK(0)
  li TESTNUM, 37; fclass.d t1, f1; RES_X(0x200); FLAGS_CHECK(0)
  /* single results are always boxed */
  li TESTNUM, 38; LD_D(f1, D_ONE); fcvt.s.d f3, f1; RES_S(S_ONE)
  li TESTNUM, 39; li t0, 3; fcvt.s.l f3, t0; RES_S(0x40400000)
  li TESTNUM, 40; LD_S(f1, S_ONE); LD_S(f2, S_TWO); fmin.s f3, f1, f2; RES_S(S_ONE)
  li TESTNUM, 41; fsgnjn.s f3, f1, f1; RES_S(S_MONE)
  FLAGS_CHECK(0)

TEST_END

  .data
  .align 4
fp_buf:
  .dword 0x0123456789abcdef, 0xfedcba9876543210
  .dword 0, 0, 0, 0, 0, 0, 0, 0
