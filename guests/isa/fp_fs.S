/* FP state and legality: mstatus.FS = Off makes every F/D instruction (and the FP CSRs) illegal;
 * any FP write makes FS Dirty and sets SD; reserved rounding modes (static 5/6, or dynamic with
 * frm >= 5) and reserved encodings are illegal; the FP CSRs fcsr/frm/fflags alias each other.
 * Illegal-instruction traps must report mtval = the instruction's own bits. */
#include "fp_macros.h"

#define FS_MASK 0x6000

/* Case n: `insn` must raise an illegal-instruction exception with mtval = its bits. */
#define EXPECT_ILLEGAL(n, insn...)                   \
  li TESTNUM, n; TRAP_EXPECT(3f);                    \
2: insn; j __fail;                                   \
3: CHECK_IMM(a1, 2); la t6, 2b; CHECK_EQ(a2, t6);    \
  lwu t2, 0(t6); CHECK_EQ(a3, t2)
/* The same for a compressed instruction (mtval = its 16 bits). */
#define EXPECT_ILLEGAL_C(n, insn...)                 \
  li TESTNUM, n; TRAP_EXPECT(3f);                    \
2: insn; j __fail;                                   \
3: CHECK_IMM(a1, 2); la t6, 2b; CHECK_EQ(a2, t6);    \
  lhu t2, 0(t6); CHECK_EQ(a3, t2)

/* t1 = mstatus.FS */
#define READ_FS csrr t1, mstatus; srli t1, t1, 13; andi t1, t1, 3
#define SET_FS(v) li t0, FS_MASK; csrc mstatus, t0; li t0, (v) << 13; csrs mstatus, t0

TEST_BEGIN
  la a0, fs_buf

  /* FS = Off: every FP instruction and FP CSR access is illegal */
  SET_FS(0)
  EXPECT_ILLEGAL(1, fadd.s f1, f2, f3)
  EXPECT_ILLEGAL(2, fadd.d f1, f2, f3, rtz)
  EXPECT_ILLEGAL(3, flw f1, 0(a0))
  EXPECT_ILLEGAL(4, fld f1, 0(a0))
  EXPECT_ILLEGAL(5, fsw f1, 0(a0))
  EXPECT_ILLEGAL(6, fsd f1, 0(a0))
  EXPECT_ILLEGAL(7, fmv.x.w t1, f1)
  EXPECT_ILLEGAL(8, fmv.w.x f1, t1)
  EXPECT_ILLEGAL(9, fmv.x.d t1, f1)
  EXPECT_ILLEGAL(10, fmv.d.x f1, t1)
  EXPECT_ILLEGAL(11, fclass.d t1, f1)
  EXPECT_ILLEGAL(12, feq.s t1, f1, f2)
  EXPECT_ILLEGAL(13, fcvt.w.d t1, f1, rtz)
  EXPECT_ILLEGAL(14, fcvt.s.lu f1, t1)
  EXPECT_ILLEGAL(15, fmadd.d f1, f2, f3, f4)
  EXPECT_ILLEGAL(16, fnmsub.s f1, f2, f3, f4)
  EXPECT_ILLEGAL(17, fsgnj.d f1, f2, f3)
  EXPECT_ILLEGAL(18, fmin.s f1, f2, f3)
  EXPECT_ILLEGAL(19, fsqrt.d f1, f2)
  EXPECT_ILLEGAL(20, fcvt.d.s f1, f2)
  EXPECT_ILLEGAL(21, csrr t1, fcsr)
  EXPECT_ILLEGAL(22, csrw fflags, x0)
  EXPECT_ILLEGAL(23, csrwi frm, 1)
  EXPECT_ILLEGAL_C(24, c.fld fs0, 0(a0))
  EXPECT_ILLEGAL_C(25, c.fsd fs0, 0(a0))
  EXPECT_ILLEGAL_C(26, c.fldsp fs0, 0(sp))
  EXPECT_ILLEGAL_C(27, c.fsdsp fs0, 0(sp))
  li TESTNUM, 28; READ_FS; CHECK_IMM(t1, 0)

  /* FS = Initial / Clean: an FP write makes it Dirty, and SD (bit 63) reads 1 */
  SET_FS(1)
  li TESTNUM, 30; READ_FS; CHECK_IMM(t1, 1)
  li TESTNUM, 31; fmv.w.x f1, x0; READ_FS; CHECK_IMM(t1, 3); csrr t1, mstatus; bgez t1, __fail
  SET_FS(2)
  li TESTNUM, 32; READ_FS; CHECK_IMM(t1, 2); csrr t1, mstatus; bltz t1, __fail
  li TESTNUM, 33; fadd.d f1, f1, f1; READ_FS; CHECK_IMM(t1, 3)
  SET_FS(2)
  li TESTNUM, 34; flw f1, 0(a0); READ_FS; CHECK_IMM(t1, 3)
  SET_FS(2)
  li TESTNUM, 35; li t0, 1; fcvt.d.l f2, t0; READ_FS; CHECK_IMM(t1, 3)
  SET_FS(1)
  li TESTNUM, 36; csrwi fflags, 1; READ_FS; CHECK_IMM(t1, 3)
  SET_FS(1)
  li TESTNUM, 37; c.fld fs0, 0(a0); READ_FS; CHECK_IMM(t1, 3)
  /* sstatus shows the same FS and SD */
  li TESTNUM, 38; csrr t1, sstatus; srli t2, t1, 13; andi t2, t2, 3; CHECK_IMM(t2, 3); bgez t1, __fail

  /* fcsr = frm << 5 | fflags */
  li TESTNUM, 40; li t0, 0xffffffff; csrw fcsr, t0; csrr t1, fcsr; CHECK_IMM(t1, 0xff)
  li TESTNUM, 41; csrr t1, frm; CHECK_IMM(t1, 7)
  li TESTNUM, 42; csrr t1, fflags; CHECK_IMM(t1, 0x1f)
  li TESTNUM, 43; li t0, 0x4a; csrw fcsr, t0; csrr t1, frm; CHECK_IMM(t1, 2); csrr t1, fflags; CHECK_IMM(t1, 0x0a)
  li TESTNUM, 44; csrrwi t1, frm, 4; CHECK_IMM(t1, 2); csrr t1, fcsr; CHECK_IMM(t1, 0x8a)
  li TESTNUM, 45; fsflagsi t1, 0x15; CHECK_IMM(t1, 0x0a); csrr t1, fcsr; CHECK_IMM(t1, 0x95)
  li TESTNUM, 46; li t0, 0xff; fscsr t1, t0; CHECK_IMM(t1, 0x95); frrm t1; CHECK_IMM(t1, 7)
  csrw fcsr, x0

  /* reserved rounding modes */
  LD_S(f1, S_ONE); LD_S(f2, S_ONE); LD_S(f4, S_ONE)
  EXPECT_ILLEGAL(50, .word 0x0020d1d3)  /* fadd.s f3, f1, f2, rm = 5 */
  EXPECT_ILLEGAL(51, .word 0x0020e1d3)  /* fadd.s f3, f1, f2, rm = 6 */
  EXPECT_ILLEGAL(52, .word 0x1220d1d3)  /* fmul.d f3, f1, f2, rm = 5 */
  EXPECT_ILLEGAL(53, .word 0x2220e1c3)  /* fmadd.d f3, f1, f2, f4, rm = 6 */
  EXPECT_ILLEGAL(54, .word 0x5a00d1d3)  /* fsqrt.d f3, f1, rm = 5 */
  EXPECT_ILLEGAL(55, .word 0x4200d1d3)  /* fcvt.d.s f3, f1, rm = 5 */
  EXPECT_ILLEGAL(56, .word 0xc200e353)  /* fcvt.w.d t1, f1, rm = 6 */
  EXPECT_ILLEGAL(57, .word 0xd022d1d3)  /* fcvt.s.l f3, t0, rm = 5 */
  /* dynamic rounding mode with frm = 5, 6, 7 */
  li t0, 5; fsrm t0
  EXPECT_ILLEGAL(60, fadd.s f3, f1, f2, dyn)
  li t0, 6; fsrm t0
  EXPECT_ILLEGAL(61, fmadd.s f3, f1, f2, f4, dyn)
  li t0, 7; fsrm t0
  EXPECT_ILLEGAL(62, fcvt.l.s t1, f1, dyn)
  EXPECT_ILLEGAL(63, fsqrt.d f3, f1, dyn)
  /* ... but a static mode still works, and so do instructions without a rounding mode */
  li TESTNUM, 64; fadd.s f3, f1, f2, rtz; RES_S(S_TWO)
  li TESTNUM, 65; fmin.s f3, f1, f2; RES_S(S_ONE)
  li TESTNUM, 66; feq.s t1, f1, f2; CHECK_IMM(t1, 1)
  li TESTNUM, 67; li t0, 4; fsrm t0; fadd.s f3, f1, f2, dyn; RES_S(S_TWO)
  fsrmi 0
  /* no fcvt.s.s, fcvt.d.d, Q-precision, and reserved funct3/rs2 fields */
  EXPECT_ILLEGAL(70, .word 0x2020b1d3)  /* fsgnj.s with funct3 = 3 */
  EXPECT_ILLEGAL(71, .word 0x2a20a1d3)  /* fmin.d with funct3 = 2 */
  EXPECT_ILLEGAL(72, .word 0xa020b353)  /* feq.s with funct3 = 3 */
  EXPECT_ILLEGAL(73, .word 0xe0108353)  /* fmv.x.w with rs2 = 1 */
  EXPECT_ILLEGAL(74, .word 0xe200a353)  /* fclass.d with funct3 = 2 */
  EXPECT_ILLEGAL(75, .word 0xf00291d3)  /* fmv.w.x with funct3 = 1 */
  EXPECT_ILLEGAL(76, .word 0x581081d3)  /* fsqrt.s with rs2 = 1 */
  EXPECT_ILLEGAL(77, .word 0xc0408353)  /* fcvt.w.s with rs2 = 4 */
  EXPECT_ILLEGAL(78, .word 0x400081d3)  /* fcvt.s.d with rs2 = 0 */
  EXPECT_ILLEGAL(79, .word 0x421081d3)  /* fcvt.d.s with rs2 = 1 */
  EXPECT_ILLEGAL(80, .word 0x062081d3)  /* fadd.q */
  EXPECT_ILLEGAL(81, .word 0x262081c3)  /* fmadd.q */
  EXPECT_ILLEGAL(82, .word 0x00054187)  /* flq f3, 0(a0) */
  EXPECT_ILLEGAL(83, .word 0x00354027)  /* fsq f3, 0(a0) */
  EXPECT_ILLEGAL(84, .word 0xfe0081d3)  /* OP-FP funct7 = 0x7f */
  /* a trapping instruction changes neither its destination nor fflags */
  li TESTNUM, 85; LD_D(f3, 0x1234); csrw fflags, x0
  EXPECT_ILLEGAL(86, .word 0x0020d1d3)
  li TESTNUM, 87; RES_D(0x1234); FLAGS_CHECK(0)

TEST_END

  .data
  .align 4
fs_buf:
  .dword 0x3f8000003f800000, 0
