/* F extension arithmetic: FADD/FSUB/FMUL/FDIV/FSQRT.S in every rounding mode, special values and exact fflags. */
#include "fp_macros.h"

TEST_BEGIN
  FP_ENABLE

  /* fadd.s: exact, ties and near-ties in all five rounding modes */
  T_S2(1, fadd.s, rne, 0, 0x40400000, S_ONE, S_TWO);
  T_S2(2, fadd.s, rne, NX, 0x3f800000, S_ONE, 0x33800000);
  T_S2(3, fadd.s, rtz, NX, 0x3f800000, S_ONE, 0x33800000);
  T_S2(4, fadd.s, rdn, NX, 0x3f800000, S_ONE, 0x33800000);
  T_S2(5, fadd.s, rup, NX, 0x3f800001, S_ONE, 0x33800000);
  T_S2(6, fadd.s, rmm, NX, 0x3f800001, S_ONE, 0x33800000);
  T_S2(7, fadd.s, rne, NX, 0xbf800000, S_MONE, 0xb3800000);
  T_S2(8, fadd.s, rtz, NX, 0xbf800000, S_MONE, 0xb3800000);
  T_S2(9, fadd.s, rdn, NX, 0xbf800001, S_MONE, 0xb3800000);
  T_S2(10, fadd.s, rup, NX, 0xbf800000, S_MONE, 0xb3800000);
  T_S2(11, fadd.s, rmm, NX, 0xbf800001, S_MONE, 0xb3800000);
  T_S2(12, fadd.s, rne, NX, 0x3f800001, S_ONE, 0x33c00000);
  T_S2(13, fadd.s, rtz, NX, 0x3f800000, S_ONE, 0x33c00000);
  T_S2(14, fadd.s, rdn, NX, 0x3f800000, S_ONE, 0x33c00000);
  T_S2(15, fadd.s, rup, NX, 0x3f800001, S_ONE, 0x33c00000);
  T_S2(16, fadd.s, rmm, NX, 0x3f800001, S_ONE, 0x33c00000);
  T_S2(17, fadd.s, rne, NX, 0x3f800002, 0x3f800001, 0x33800000);
  T_S2(18, fadd.s, rtz, NX, 0x3f800001, 0x3f800001, 0x33800000);
  T_S2(19, fadd.s, rdn, NX, 0x3f800001, 0x3f800001, 0x33800000);
  T_S2(20, fadd.s, rup, NX, 0x3f800002, 0x3f800001, 0x33800000);
  T_S2(21, fadd.s, rmm, NX, 0x3f800002, 0x3f800001, 0x33800000);

  /* fadd.s: signed zeros (x + -x is -0 only when rounding down) */
  T_S2(22, fadd.s, rne, 0, S_PZERO, S_ONE, S_MONE);
  T_S2(23, fadd.s, rtz, 0, S_PZERO, S_ONE, S_MONE);
  T_S2(24, fadd.s, rdn, 0, S_NZERO, S_ONE, S_MONE);
  T_S2(25, fadd.s, rup, 0, S_PZERO, S_ONE, S_MONE);
  T_S2(26, fadd.s, rmm, 0, S_PZERO, S_ONE, S_MONE);
  T_S2(27, fadd.s, rne, 0, S_NZERO, S_NZERO, S_NZERO);
  T_S2(28, fadd.s, rne, 0, S_PZERO, S_PZERO, S_NZERO);
  T_S2(29, fadd.s, rdn, 0, S_NZERO, S_PZERO, S_NZERO);

  /* fadd.s: infinities, overflow, NaNs */
  T_S2(30, fadd.s, rne, NV, S_CNAN, S_PINF, S_NINF);
  T_S2(31, fadd.s, rne, 0, S_PINF, S_PINF, S_MAX);
  T_S2(32, fadd.s, rne, OF|NX, S_PINF, S_MAX, S_MAX);
  T_S2(33, fadd.s, rtz, OF|NX, S_MAX, S_MAX, S_MAX);
  T_S2(34, fadd.s, rdn, OF|NX, S_MAX, S_MAX, S_MAX);
  T_S2(35, fadd.s, rup, OF|NX, S_PINF, S_MAX, S_MAX);
  T_S2(36, fadd.s, rmm, OF|NX, S_PINF, S_MAX, S_MAX);
  T_S2(37, fadd.s, rne, OF|NX, S_NINF, 0xff7fffff, 0xff7fffff);
  T_S2(38, fadd.s, rtz, OF|NX, 0xff7fffff, 0xff7fffff, 0xff7fffff);
  T_S2(39, fadd.s, rdn, OF|NX, S_NINF, 0xff7fffff, 0xff7fffff);
  T_S2(40, fadd.s, rup, OF|NX, 0xff7fffff, 0xff7fffff, 0xff7fffff);
  T_S2(41, fadd.s, rmm, OF|NX, S_NINF, 0xff7fffff, 0xff7fffff);
  T_S2(42, fadd.s, rne, 0, S_CNAN, S_QNANP, S_ONE);
  T_S2(43, fadd.s, rne, 0, S_CNAN, S_ONE, S_NQNAN);
  T_S2(44, fadd.s, rne, NV, S_CNAN, S_SNAN, S_ONE);
  T_S2(45, fadd.s, rne, NV, S_CNAN, S_QNAN, S_NSNAN);
  T_S2(46, fadd.s, rne, 0, 0x00000002, S_SUB, S_SUB);

  /* fsub.s */
  T_S2(47, fsub.s, rne, 0, S_ONE, 0x40400000, S_TWO);
  T_S2(48, fsub.s, rne, NX, 0x3f800000, S_ONE, 0x33000000);
  T_S2(49, fsub.s, rtz, NX, 0x3f7fffff, S_ONE, 0x33000000);
  T_S2(50, fsub.s, rdn, NX, 0x3f7fffff, S_ONE, 0x33000000);
  T_S2(51, fsub.s, rup, NX, 0x3f800000, S_ONE, 0x33000000);
  T_S2(52, fsub.s, rmm, NX, 0x3f800000, S_ONE, 0x33000000);
  T_S2(53, fsub.s, rne, 0, S_PZERO, S_TWO, S_TWO);
  T_S2(54, fsub.s, rtz, 0, S_PZERO, S_TWO, S_TWO);
  T_S2(55, fsub.s, rdn, 0, S_NZERO, S_TWO, S_TWO);
  T_S2(56, fsub.s, rup, 0, S_PZERO, S_TWO, S_TWO);
  T_S2(57, fsub.s, rmm, 0, S_PZERO, S_TWO, S_TWO);
  T_S2(58, fsub.s, rne, NV, S_CNAN, S_PINF, S_PINF);
  T_S2(59, fsub.s, rne, 0, S_NINF, S_NINF, S_PINF);
  T_S2(60, fsub.s, rne, NV, S_CNAN, S_ONE, S_SNAN);
  T_S2(61, fsub.s, rne, 0, S_MIN, 0x01000000, S_MIN);

  /* fmul.s */
  T_S2(62, fmul.s, rne, 0, 0x3fc00000, 0x40400000, S_HALF);
  T_S2(63, fmul.s, rne, NX, 0x3f800002, 0x3f800001, 0x3f800001);
  T_S2(64, fmul.s, rtz, NX, 0x3f800002, 0x3f800001, 0x3f800001);
  T_S2(65, fmul.s, rdn, NX, 0x3f800002, 0x3f800001, 0x3f800001);
  T_S2(66, fmul.s, rup, NX, 0x3f800003, 0x3f800001, 0x3f800001);
  T_S2(67, fmul.s, rmm, NX, 0x3f800002, 0x3f800001, 0x3f800001);
  T_S2(68, fmul.s, rne, NX, 0xbf800002, 0xbf800001, 0x3f800001);
  T_S2(69, fmul.s, rtz, NX, 0xbf800002, 0xbf800001, 0x3f800001);
  T_S2(70, fmul.s, rdn, NX, 0xbf800003, 0xbf800001, 0x3f800001);
  T_S2(71, fmul.s, rup, NX, 0xbf800002, 0xbf800001, 0x3f800001);
  T_S2(72, fmul.s, rmm, NX, 0xbf800002, 0xbf800001, 0x3f800001);
  T_S2(73, fmul.s, rne, UF|NX, S_PZERO, 0x0d800000, 0x0d800000);
  T_S2(74, fmul.s, rtz, UF|NX, S_PZERO, 0x0d800000, 0x0d800000);
  T_S2(75, fmul.s, rdn, UF|NX, S_PZERO, 0x0d800000, 0x0d800000);
  T_S2(76, fmul.s, rup, UF|NX, S_SUB, 0x0d800000, 0x0d800000);
  T_S2(77, fmul.s, rmm, UF|NX, S_PZERO, 0x0d800000, 0x0d800000);
  T_S2(78, fmul.s, rne, OF|NX, S_PINF, 0x71800000, 0x71800000);
  T_S2(79, fmul.s, rtz, OF|NX, S_MAX, 0x71800000, 0x71800000);
  T_S2(80, fmul.s, rdn, OF|NX, S_MAX, 0x71800000, 0x71800000);
  T_S2(81, fmul.s, rup, OF|NX, S_PINF, 0x71800000, 0x71800000);
  T_S2(82, fmul.s, rmm, OF|NX, S_PINF, 0x71800000, 0x71800000);

  /* fmul.s: tininess is detected after rounding */
  T_S2(83, fmul.s, rne, NX, S_MIN, 0x00800001, 0x3f7ffffe);
  T_S2(84, fmul.s, rtz, UF|NX, 0x007fffff, 0x00800001, 0x3f7ffffe);
  T_S2(85, fmul.s, rdn, UF|NX, 0x007fffff, 0x00800001, 0x3f7ffffe);
  T_S2(86, fmul.s, rup, NX, S_MIN, 0x00800001, 0x3f7ffffe);
  T_S2(87, fmul.s, rmm, NX, S_MIN, 0x00800001, 0x3f7ffffe);
  T_S2(88, fmul.s, rne, 0, 0x00400000, S_MIN, S_HALF);
  T_S2(89, fmul.s, rne, NV, S_CNAN, S_PZERO, S_NINF);
  T_S2(90, fmul.s, rne, 0, S_NZERO, S_NZERO, 0x40400000);
  T_S2(91, fmul.s, rne, 0, S_NINF, S_PINF, S_MONE);
  T_S2(92, fmul.s, rne, NV, S_CNAN, S_NSNAN, S_PZERO);

  /* fdiv.s */
  T_S2(93, fdiv.s, rne, 0, S_TWO, 0x40c00000, 0x40400000);
  T_S2(94, fdiv.s, rne, NX, 0x3eaaaaab, S_ONE, 0x40400000);
  T_S2(95, fdiv.s, rtz, NX, 0x3eaaaaaa, S_ONE, 0x40400000);
  T_S2(96, fdiv.s, rdn, NX, 0x3eaaaaaa, S_ONE, 0x40400000);
  T_S2(97, fdiv.s, rup, NX, 0x3eaaaaab, S_ONE, 0x40400000);
  T_S2(98, fdiv.s, rmm, NX, 0x3eaaaaab, S_ONE, 0x40400000);
  T_S2(99, fdiv.s, rne, NX, 0xbeaaaaab, S_MONE, 0x40400000);
  T_S2(100, fdiv.s, rtz, NX, 0xbeaaaaaa, S_MONE, 0x40400000);
  T_S2(101, fdiv.s, rdn, NX, 0xbeaaaaab, S_MONE, 0x40400000);
  T_S2(102, fdiv.s, rup, NX, 0xbeaaaaaa, S_MONE, 0x40400000);
  T_S2(103, fdiv.s, rmm, NX, 0xbeaaaaab, S_MONE, 0x40400000);
  T_S2(104, fdiv.s, rne, DZ, S_PINF, S_ONE, S_PZERO);
  T_S2(105, fdiv.s, rne, DZ, S_NINF, S_ONE, S_NZERO);
  T_S2(106, fdiv.s, rne, DZ, S_PINF, S_MONE, S_NZERO);
  T_S2(107, fdiv.s, rne, NV, S_CNAN, S_PZERO, S_NZERO);
  T_S2(108, fdiv.s, rne, NV, S_CNAN, S_PINF, S_NINF);
  T_S2(109, fdiv.s, rne, 0, S_PINF, S_PINF, S_PZERO);
  T_S2(110, fdiv.s, rne, 0, S_NZERO, S_ONE, S_NINF);
  T_S2(111, fdiv.s, rne, OF|NX, S_PINF, S_MAX, S_HALF);
  T_S2(112, fdiv.s, rtz, OF|NX, S_MAX, S_MAX, S_HALF);
  T_S2(113, fdiv.s, rdn, OF|NX, S_MAX, S_MAX, S_HALF);
  T_S2(114, fdiv.s, rup, OF|NX, S_PINF, S_MAX, S_HALF);
  T_S2(115, fdiv.s, rmm, OF|NX, S_PINF, S_MAX, S_HALF);
  T_S2(116, fdiv.s, rne, 0, S_CNAN, S_QNAN, S_PZERO);

  /* fsqrt.s */
  T_S1(117, fsqrt.s, rne, 0, S_TWO, 0x40800000);
  T_S1(118, fsqrt.s, rne, NX, 0x3fb504f3, S_TWO);
  T_S1(119, fsqrt.s, rtz, NX, 0x3fb504f3, S_TWO);
  T_S1(120, fsqrt.s, rdn, NX, 0x3fb504f3, S_TWO);
  T_S1(121, fsqrt.s, rup, NX, 0x3fb504f4, S_TWO);
  T_S1(122, fsqrt.s, rmm, NX, 0x3fb504f3, S_TWO);
  T_S1(123, fsqrt.s, rne, 0, S_NZERO, S_NZERO);
  T_S1(124, fsqrt.s, rne, 0, S_PINF, S_PINF);
  T_S1(125, fsqrt.s, rne, NV, S_CNAN, S_MONE);
  T_S1(126, fsqrt.s, rne, NV, S_CNAN, S_NINF);
  T_S1(127, fsqrt.s, rne, 0, S_CNAN, S_QNANP);
  T_S1(128, fsqrt.s, rne, NV, S_CNAN, S_SNAN);
  T_S1(129, fsqrt.s, rne, NX, 0x1a3504f3, S_SUB);

  /* dynamic rounding mode: frm selects the mode of rm = dyn */
  csrwi frm, 0;
  T_S2(130, fadd.s, dyn, NX, 0x3f800000, S_ONE, 0x33800000);
  csrwi frm, 1;
  T_S2(131, fadd.s, dyn, NX, 0x3f800000, S_ONE, 0x33800000);
  csrwi frm, 2;
  T_S2(132, fadd.s, dyn, NX, 0x3f800000, S_ONE, 0x33800000);
  csrwi frm, 3;
  T_S2(133, fadd.s, dyn, NX, 0x3f800001, S_ONE, 0x33800000);
  csrwi frm, 4;
  T_S2(134, fadd.s, dyn, NX, 0x3f800001, S_ONE, 0x33800000);
  fsrmi 0;
  T_S2(135, fdiv.s, dyn, NX, 0xbeaaaaab, S_MONE, 0x40400000);
  fsrmi 1;
  T_S2(136, fdiv.s, dyn, NX, 0xbeaaaaaa, S_MONE, 0x40400000);
  fsrmi 2;
  T_S2(137, fdiv.s, dyn, NX, 0xbeaaaaab, S_MONE, 0x40400000);
  fsrmi 3;
  T_S2(138, fdiv.s, dyn, NX, 0xbeaaaaaa, S_MONE, 0x40400000);
  fsrmi 4;
  T_S2(139, fdiv.s, dyn, NX, 0xbeaaaaab, S_MONE, 0x40400000);
  csrwi frm, 1;

  /* a static rounding mode overrides frm */
  T_S2(140, fadd.s, rup, NX, 0x3f800001, S_ONE, 0x33800000);
  csrwi frm, 0;

  /* fflags accrue: NX on top of NV */
  li TESTNUM, 141; csrwi fflags, NV; LD_S(f1, S_ONE); LD_S(f2, 0x33800000); fadd.s f3, f1, f2; FLAGS_CHECK(NV|NX)

TEST_END
