/* Comparisons (FEQ quiet, FLT/FLE signalling), FMIN/FMAX (minimumNumber/maximumNumber, -0 < +0, sNaN raises NV), sign injection, FCLASS and FMV.X.*, .S and .D. */
#include "fp_macros.h"

TEST_BEGIN
  FP_ENABLE

  /* feq.s, flt.s, fle.s */
  T_CMP_S(1, feq.s, 0, 1, S_ONE, S_ONE);
  T_CMP_S(2, feq.s, 0, 0, S_ONE, S_TWO);
  T_CMP_S(3, feq.s, 0, 1, S_NZERO, S_PZERO);
  T_CMP_S(4, feq.s, 0, 0, S_QNAN, S_QNAN);
  T_CMP_S(5, feq.s, 0, 0, S_ONE, S_NQNAN);
  T_CMP_S(6, feq.s, NV, 0, S_SNAN, S_ONE);
  T_CMP_S(7, feq.s, NV, 0, S_QNAN, S_NSNAN);
  T_CMP_S(8, feq.s, 0, 1, S_PINF, S_PINF);
  T_CMP_S(9, feq.s, 0, 0, S_SUB, S_PZERO);
  T_CMP_S(10, flt.s, 0, 1, S_ONE, S_TWO);
  T_CMP_S(11, flt.s, 0, 0, S_TWO, S_ONE);
  T_CMP_S(12, flt.s, 0, 0, S_ONE, S_ONE);
  T_CMP_S(13, flt.s, 0, 0, S_NZERO, S_PZERO);
  T_CMP_S(14, flt.s, 0, 1, 0xc0000000, S_MONE);
  T_CMP_S(15, flt.s, 0, 0, S_MONE, 0xc0000000);
  T_CMP_S(16, flt.s, 0, 1, S_NINF, S_MAX);
  T_CMP_S(17, flt.s, 0, 1, S_PZERO, S_SUB);
  T_CMP_S(18, flt.s, NV, 0, S_QNAN, S_ONE);
  T_CMP_S(19, flt.s, NV, 0, S_ONE, S_SNAN);
  T_CMP_S(20, flt.s, NV, 0, S_NQNAN, S_NQNAN);
  T_CMP_S(21, fle.s, 0, 1, S_ONE, S_ONE);
  T_CMP_S(22, fle.s, 0, 1, S_ONE, S_TWO);
  T_CMP_S(23, fle.s, 0, 0, S_TWO, S_ONE);
  T_CMP_S(24, fle.s, 0, 1, S_NZERO, S_PZERO);
  T_CMP_S(25, fle.s, 0, 1, S_PZERO, S_NZERO);
  T_CMP_S(26, fle.s, 0, 1, 0xc0000000, S_MONE);
  T_CMP_S(27, fle.s, 0, 0, S_SUB, S_PZERO);
  T_CMP_S(28, fle.s, NV, 0, S_QNAN, S_ONE);
  T_CMP_S(29, fle.s, NV, 0, S_NSNAN, S_NINF);

  /* fmin.s, fmax.s */
  T_S2N(30, fmin.s, 0, S_ONE, S_ONE, S_TWO);
  T_S2N(31, fmax.s, 0, S_TWO, S_ONE, S_TWO);
  T_S2N(32, fmin.s, 0, S_ONE, S_TWO, S_ONE);
  T_S2N(33, fmax.s, 0, S_TWO, S_TWO, S_ONE);
  T_S2N(34, fmin.s, 0, S_NZERO, S_NZERO, S_PZERO);
  T_S2N(35, fmax.s, 0, S_PZERO, S_NZERO, S_PZERO);
  T_S2N(36, fmin.s, 0, S_NZERO, S_PZERO, S_NZERO);
  T_S2N(37, fmax.s, 0, S_PZERO, S_PZERO, S_NZERO);
  T_S2N(38, fmin.s, 0, 0xc0000000, S_MONE, 0xc0000000);
  T_S2N(39, fmax.s, 0, S_MONE, S_MONE, 0xc0000000);
  T_S2N(40, fmin.s, 0, S_NINF, S_NINF, S_ONE);
  T_S2N(41, fmax.s, 0, S_ONE, S_NINF, S_ONE);
  T_S2N(42, fmin.s, 0, S_ONE, S_QNANP, S_ONE);
  T_S2N(43, fmax.s, 0, S_ONE, S_QNANP, S_ONE);
  T_S2N(44, fmin.s, 0, S_ONE, S_ONE, S_NQNAN);
  T_S2N(45, fmax.s, 0, S_ONE, S_ONE, S_NQNAN);
  T_S2N(46, fmin.s, NV, S_ONE, S_SNAN, S_ONE);
  T_S2N(47, fmax.s, NV, S_ONE, S_SNAN, S_ONE);
  T_S2N(48, fmin.s, NV, S_MONE, S_MONE, S_NSNAN);
  T_S2N(49, fmax.s, NV, S_MONE, S_MONE, S_NSNAN);
  T_S2N(50, fmin.s, 0, S_CNAN, S_QNANP, S_NQNAN);
  T_S2N(51, fmax.s, 0, S_CNAN, S_QNANP, S_NQNAN);
  T_S2N(52, fmin.s, NV, S_CNAN, S_SNAN, S_QNAN);
  T_S2N(53, fmax.s, NV, S_CNAN, S_SNAN, S_QNAN);
  T_S2N(54, fmin.s, 0, S_PZERO, S_SUB, S_PZERO);
  T_S2N(55, fmax.s, 0, S_SUB, S_SUB, S_PZERO);

  /* fsgnj.s, fsgnjn.s, fsgnjx.s: sign bits only, NaN payloads kept, no flags */
  T_S2N(56, fsgnj.s, 0, S_MONE, S_ONE, 0xc0000000);
  T_S2N(57, fsgnj.s, 0, S_ONE, S_MONE, S_TWO);
  T_S2N(58, fsgnj.s, 0, S_MONE, S_MONE, 0xc0000000);
  T_S2N(59, fsgnjn.s, 0, S_ONE, S_ONE, 0xc0000000);
  T_S2N(60, fsgnjn.s, 0, S_MONE, S_ONE, S_TWO);
  T_S2N(61, fsgnjn.s, 0, S_ONE, S_MONE, S_MONE);
  T_S2N(62, fsgnjx.s, 0, S_ONE, S_MONE, 0xc0000000);
  T_S2N(63, fsgnjx.s, 0, S_MONE, S_MONE, S_TWO);
  T_S2N(64, fsgnjx.s, 0, S_MONE, S_ONE, 0xc0000000);
  T_S2N(65, fsgnj.s, 0, 0xff800001, S_SNAN, S_MONE);
  T_S2N(66, fsgnjn.s, 0, 0xffc12345, S_QNANP, S_QNANP);
  T_S2N(67, fsgnjx.s, 0, S_PINF, S_NINF, S_NZERO);

  /* fclass.s: one class each */
  T_XSN(68, fclass.s, 0, 1, S_NINF);
  T_XSN(69, fclass.s, 0, 2, S_MONE);
  T_XSN(70, fclass.s, 0, 4, 0x807fffff);
  T_XSN(71, fclass.s, 0, 8, S_NZERO);
  T_XSN(72, fclass.s, 0, 16, S_PZERO);
  T_XSN(73, fclass.s, 0, 32, S_SUB);
  T_XSN(74, fclass.s, 0, 64, S_ONE);
  T_XSN(75, fclass.s, 0, 64, S_MAX);
  T_XSN(76, fclass.s, 0, 64, S_MIN);
  T_XSN(77, fclass.s, 0, 128, S_PINF);
  T_XSN(78, fclass.s, 0, 256, S_SNAN);
  T_XSN(79, fclass.s, 0, 256, S_NSNAN);
  T_XSN(80, fclass.s, 0, 512, S_QNAN);
  T_XSN(81, fclass.s, 0, 512, S_NQNAN);

  /* feq.d, flt.d, fle.d */
  T_CMP_D(82, feq.d, 0, 1, D_ONE, D_ONE);
  T_CMP_D(83, feq.d, 0, 0, D_ONE, D_TWO);
  T_CMP_D(84, feq.d, 0, 1, D_NZERO, D_PZERO);
  T_CMP_D(85, feq.d, 0, 0, D_QNAN, D_QNAN);
  T_CMP_D(86, feq.d, 0, 0, D_ONE, D_NQNAN);
  T_CMP_D(87, feq.d, NV, 0, D_SNAN, D_ONE);
  T_CMP_D(88, feq.d, NV, 0, D_QNAN, D_NSNAN);
  T_CMP_D(89, feq.d, 0, 1, D_PINF, D_PINF);
  T_CMP_D(90, feq.d, 0, 0, D_SUB, D_PZERO);
  T_CMP_D(91, flt.d, 0, 1, D_ONE, D_TWO);
  T_CMP_D(92, flt.d, 0, 0, D_TWO, D_ONE);
  T_CMP_D(93, flt.d, 0, 0, D_ONE, D_ONE);
  T_CMP_D(94, flt.d, 0, 0, D_NZERO, D_PZERO);
  T_CMP_D(95, flt.d, 0, 1, 0xc000000000000000, D_MONE);
  T_CMP_D(96, flt.d, 0, 0, D_MONE, 0xc000000000000000);
  T_CMP_D(97, flt.d, 0, 1, D_NINF, D_MAX);
  T_CMP_D(98, flt.d, 0, 1, D_PZERO, D_SUB);
  T_CMP_D(99, flt.d, NV, 0, D_QNAN, D_ONE);
  T_CMP_D(100, flt.d, NV, 0, D_ONE, D_SNAN);
  T_CMP_D(101, flt.d, NV, 0, D_NQNAN, D_NQNAN);
  T_CMP_D(102, fle.d, 0, 1, D_ONE, D_ONE);
  T_CMP_D(103, fle.d, 0, 1, D_ONE, D_TWO);
  T_CMP_D(104, fle.d, 0, 0, D_TWO, D_ONE);
  T_CMP_D(105, fle.d, 0, 1, D_NZERO, D_PZERO);
  T_CMP_D(106, fle.d, 0, 1, D_PZERO, D_NZERO);
  T_CMP_D(107, fle.d, 0, 1, 0xc000000000000000, D_MONE);
  T_CMP_D(108, fle.d, 0, 0, D_SUB, D_PZERO);
  T_CMP_D(109, fle.d, NV, 0, D_QNAN, D_ONE);
  T_CMP_D(110, fle.d, NV, 0, D_NSNAN, D_NINF);

  /* fmin.d, fmax.d */
  T_D2N(111, fmin.d, 0, D_ONE, D_ONE, D_TWO);
  T_D2N(112, fmax.d, 0, D_TWO, D_ONE, D_TWO);
  T_D2N(113, fmin.d, 0, D_ONE, D_TWO, D_ONE);
  T_D2N(114, fmax.d, 0, D_TWO, D_TWO, D_ONE);
  T_D2N(115, fmin.d, 0, D_NZERO, D_NZERO, D_PZERO);
  T_D2N(116, fmax.d, 0, D_PZERO, D_NZERO, D_PZERO);
  T_D2N(117, fmin.d, 0, D_NZERO, D_PZERO, D_NZERO);
  T_D2N(118, fmax.d, 0, D_PZERO, D_PZERO, D_NZERO);
  T_D2N(119, fmin.d, 0, 0xc000000000000000, D_MONE, 0xc000000000000000);
  T_D2N(120, fmax.d, 0, D_MONE, D_MONE, 0xc000000000000000);
  T_D2N(121, fmin.d, 0, D_NINF, D_NINF, D_ONE);
  T_D2N(122, fmax.d, 0, D_ONE, D_NINF, D_ONE);
  T_D2N(123, fmin.d, 0, D_ONE, D_QNANP, D_ONE);
  T_D2N(124, fmax.d, 0, D_ONE, D_QNANP, D_ONE);
  T_D2N(125, fmin.d, 0, D_ONE, D_ONE, D_NQNAN);
  T_D2N(126, fmax.d, 0, D_ONE, D_ONE, D_NQNAN);
  T_D2N(127, fmin.d, NV, D_ONE, D_SNAN, D_ONE);
  T_D2N(128, fmax.d, NV, D_ONE, D_SNAN, D_ONE);
  T_D2N(129, fmin.d, NV, D_MONE, D_MONE, D_NSNAN);
  T_D2N(130, fmax.d, NV, D_MONE, D_MONE, D_NSNAN);
  T_D2N(131, fmin.d, 0, D_CNAN, D_QNANP, D_NQNAN);
  T_D2N(132, fmax.d, 0, D_CNAN, D_QNANP, D_NQNAN);
  T_D2N(133, fmin.d, NV, D_CNAN, D_SNAN, D_QNAN);
  T_D2N(134, fmax.d, NV, D_CNAN, D_SNAN, D_QNAN);
  T_D2N(135, fmin.d, 0, D_PZERO, D_SUB, D_PZERO);
  T_D2N(136, fmax.d, 0, D_SUB, D_SUB, D_PZERO);

  /* fsgnj.d, fsgnjn.d, fsgnjx.d: sign bits only, NaN payloads kept, no flags */
  T_D2N(137, fsgnj.d, 0, D_MONE, D_ONE, 0xc000000000000000);
  T_D2N(138, fsgnj.d, 0, D_ONE, D_MONE, D_TWO);
  T_D2N(139, fsgnj.d, 0, D_MONE, D_MONE, 0xc000000000000000);
  T_D2N(140, fsgnjn.d, 0, D_ONE, D_ONE, 0xc000000000000000);
  T_D2N(141, fsgnjn.d, 0, D_MONE, D_ONE, D_TWO);
  T_D2N(142, fsgnjn.d, 0, D_ONE, D_MONE, D_MONE);
  T_D2N(143, fsgnjx.d, 0, D_ONE, D_MONE, 0xc000000000000000);
  T_D2N(144, fsgnjx.d, 0, D_MONE, D_MONE, D_TWO);
  T_D2N(145, fsgnjx.d, 0, D_MONE, D_ONE, 0xc000000000000000);
  T_D2N(146, fsgnj.d, 0, 0xfff0000000000001, D_SNAN, D_MONE);
  T_D2N(147, fsgnjn.d, 0, 0xfff8000000012345, D_QNANP, D_QNANP);
  T_D2N(148, fsgnjx.d, 0, D_PINF, D_NINF, D_NZERO);

  /* fclass.d: one class each */
  T_XDN(149, fclass.d, 0, 1, D_NINF);
  T_XDN(150, fclass.d, 0, 2, D_MONE);
  T_XDN(151, fclass.d, 0, 4, 0x800fffffffffffff);
  T_XDN(152, fclass.d, 0, 8, D_NZERO);
  T_XDN(153, fclass.d, 0, 16, D_PZERO);
  T_XDN(154, fclass.d, 0, 32, D_SUB);
  T_XDN(155, fclass.d, 0, 64, D_ONE);
  T_XDN(156, fclass.d, 0, 64, D_MAX);
  T_XDN(157, fclass.d, 0, 64, D_MIN);
  T_XDN(158, fclass.d, 0, 128, D_PINF);
  T_XDN(159, fclass.d, 0, 256, D_SNAN);
  T_XDN(160, fclass.d, 0, 256, D_NSNAN);
  T_XDN(161, fclass.d, 0, 512, D_QNAN);
  T_XDN(162, fclass.d, 0, 512, D_NQNAN);

  /* fmv.x.w sign-extends the raw bits; fmv.x.d moves 64 bits */
  T_XSN(163, fmv.x.w, 0, 0xffffffff80000000, S_NZERO);
  T_XSN(164, fmv.x.w, 0, 0x7fffffff, 0x7fffffff);
  T_XSN(165, fmv.x.w, 0, 0xffffffffff812345, S_NSNAN);
  T_XDN(166, fmv.x.d, 0, 0xfff0000000012345, D_NSNAN);
  T_XDN(167, fmv.x.d, 0, 0x0123456789abcdef, 0x0123456789abcdef);

TEST_END
