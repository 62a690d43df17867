/* Fused multiply-add (FMADD/FMSUB/FNMSUB/FNMADD, .S and .D): one rounding, signs, rounding modes, invalid cases and exact fflags. */
#include "fp_macros.h"

TEST_BEGIN
  FP_ENABLE

  /* single: a*b = 1 + 2^-11 + 2^-24 is a tie when rounded alone; fused, the 2^-24 survives */
  T_S3(1, fmadd.s, rne, 0, 0x40a00000, S_ONE, S_TWO, 0x40400000);
  T_S3(2, fmadd.s, rne, 0, 0x33800000, 0x3f800800, 0x3f800800, 0xbf801000);
  T_S3(3, fmsub.s, rne, 0, 0x33800000, 0x3f800800, 0x3f800800, 0x3f801000);
  T_S3(4, fnmsub.s, rne, 0, 0xb3800000, 0x3f800800, 0x3f800800, 0x3f801000);
  T_S3(5, fnmadd.s, rne, 0, 0xb3800000, 0x3f800800, 0x3f800800, 0xbf801000);
  T_S3(6, fmsub.s, rne, 0, 0x40800000, S_ONE, 0x40400000, S_MONE);
  T_S3(7, fnmsub.s, rne, 0, 0xc0a00000, S_ONE, 0x40400000, 0xc0000000);
  T_S3(8, fnmadd.s, rne, 0, 0xc0a00000, S_ONE, 0x40400000, S_TWO);

  /* single: rounding modes */
  T_S3(9, fmadd.s, rne, NX, 0x3f800000, S_ONE, S_ONE, 0x33800000);
  T_S3(10, fmadd.s, rtz, NX, 0x3f800000, S_ONE, S_ONE, 0x33800000);
  T_S3(11, fmadd.s, rdn, NX, 0x3f800000, S_ONE, S_ONE, 0x33800000);
  T_S3(12, fmadd.s, rup, NX, 0x3f800001, S_ONE, S_ONE, 0x33800000);
  T_S3(13, fmadd.s, rmm, NX, 0x3f800001, S_ONE, S_ONE, 0x33800000);
  T_S3(14, fnmadd.s, rne, NX, 0xbf800000, S_ONE, S_ONE, 0x33800000);
  T_S3(15, fnmadd.s, rtz, NX, 0xbf800000, S_ONE, S_ONE, 0x33800000);
  T_S3(16, fnmadd.s, rdn, NX, 0xbf800001, S_ONE, S_ONE, 0x33800000);
  T_S3(17, fnmadd.s, rup, NX, 0xbf800000, S_ONE, S_ONE, 0x33800000);
  T_S3(18, fnmadd.s, rmm, NX, 0xbf800001, S_ONE, S_ONE, 0x33800000);
  T_S3(19, fmadd.s, rne, NX, 0x3f800002, 0x3f800001, 0x3f800001, S_PZERO);
  T_S3(20, fmadd.s, rtz, NX, 0x3f800002, 0x3f800001, 0x3f800001, S_PZERO);
  T_S3(21, fmadd.s, rdn, NX, 0x3f800002, 0x3f800001, 0x3f800001, S_PZERO);
  T_S3(22, fmadd.s, rup, NX, 0x3f800003, 0x3f800001, 0x3f800001, S_PZERO);
  T_S3(23, fmadd.s, rmm, NX, 0x3f800002, 0x3f800001, 0x3f800001, S_PZERO);

  /* single: signed zeros */
  T_S3(24, fmadd.s, rne, 0, S_PZERO, S_ONE, S_ONE, S_MONE);
  T_S3(25, fmadd.s, rtz, 0, S_PZERO, S_ONE, S_ONE, S_MONE);
  T_S3(26, fmadd.s, rdn, 0, S_NZERO, S_ONE, S_ONE, S_MONE);
  T_S3(27, fmadd.s, rup, 0, S_PZERO, S_ONE, S_ONE, S_MONE);
  T_S3(28, fmadd.s, rmm, 0, S_PZERO, S_ONE, S_ONE, S_MONE);
  T_S3(29, fmadd.s, rne, 0, S_PZERO, S_ONE, S_NZERO, S_PZERO);
  T_S3(30, fmadd.s, rne, 0, S_NZERO, S_ONE, S_NZERO, S_NZERO);
  T_S3(31, fmsub.s, rne, 0, S_PZERO, S_PZERO, S_PZERO, S_PZERO);
  T_S3(32, fnmadd.s, rne, 0, S_NZERO, S_PZERO, S_PZERO, S_PZERO);
  T_S3(33, fnmsub.s, rne, 0, S_PZERO, S_PZERO, S_PZERO, S_PZERO);
  T_S3(34, fnmsub.s, rdn, 0, S_NZERO, S_PZERO, S_PZERO, S_PZERO);

  /* single: invalid and NaNs; inf*0 + qNaN is invalid too */
  T_S3(35, fmadd.s, rne, NV, S_CNAN, S_PINF, S_PZERO, S_ONE);
  T_S3(36, fmadd.s, rne, NV, S_CNAN, S_PINF, S_PZERO, S_QNANP);
  T_S3(37, fmadd.s, rne, NV, S_CNAN, S_PINF, S_ONE, S_NINF);
  T_S3(38, fmsub.s, rne, NV, S_CNAN, S_PINF, S_ONE, S_PINF);
  T_S3(39, fmsub.s, rne, 0, S_PINF, S_PINF, S_ONE, S_NINF);
  T_S3(40, fmadd.s, rne, 0, S_CNAN, S_QNANP, S_ONE, S_ONE);
  T_S3(41, fmadd.s, rne, 0, S_CNAN, S_ONE, S_ONE, S_NQNAN);
  T_S3(42, fmadd.s, rne, NV, S_CNAN, S_ONE, S_ONE, S_SNAN);
  T_S3(43, fnmadd.s, rne, NV, S_CNAN, S_NSNAN, S_ONE, S_ONE);
  T_S3(44, fmadd.s, rne, 0, S_NINF, S_PINF, S_MONE, S_MAX);

  /* single: overflow, underflow */
  T_S3(45, fmadd.s, rne, OF|NX, S_PINF, S_MAX, S_TWO, S_PZERO);
  T_S3(46, fmadd.s, rtz, OF|NX, S_MAX, S_MAX, S_TWO, S_PZERO);
  T_S3(47, fmadd.s, rdn, OF|NX, S_MAX, S_MAX, S_TWO, S_PZERO);
  T_S3(48, fmadd.s, rup, OF|NX, S_PINF, S_MAX, S_TWO, S_PZERO);
  T_S3(49, fmadd.s, rmm, OF|NX, S_PINF, S_MAX, S_TWO, S_PZERO);
  T_S3(50, fmadd.s, rne, UF|NX, S_PZERO, 0x0d800000, 0x0d800000, S_PZERO);
  T_S3(51, fmadd.s, rtz, UF|NX, S_PZERO, 0x0d800000, 0x0d800000, S_PZERO);
  T_S3(52, fmadd.s, rdn, UF|NX, S_PZERO, 0x0d800000, 0x0d800000, S_PZERO);
  T_S3(53, fmadd.s, rup, UF|NX, S_SUB, 0x0d800000, 0x0d800000, S_PZERO);
  T_S3(54, fmadd.s, rmm, UF|NX, S_PZERO, 0x0d800000, 0x0d800000, S_PZERO);
  T_S3(55, fmadd.s, rne, 0, 0x00400000, S_MIN, S_HALF, S_PZERO);

  /* double: the fused 2^-54 */
  T_D3(56, fmadd.d, rne, 0, 0x4014000000000000, D_ONE, D_TWO, 0x4008000000000000);
  T_D3(57, fmadd.d, rne, 0, 0x3c90000000000000, 0x3ff0000002000000, 0x3ff0000002000000, 0xbff0000004000000);
  T_D3(58, fmsub.d, rne, 0, 0x3c90000000000000, 0x3ff0000002000000, 0x3ff0000002000000, 0x3ff0000004000000);
  T_D3(59, fnmsub.d, rne, 0, 0xbc90000000000000, 0x3ff0000002000000, 0x3ff0000002000000, 0x3ff0000004000000);
  T_D3(60, fnmadd.d, rne, 0, 0xbc90000000000000, 0x3ff0000002000000, 0x3ff0000002000000, 0xbff0000004000000);
  T_D3(61, fmadd.d, rne, NX, D_ONE, D_ONE, D_ONE, 0x3ca0000000000000);
  T_D3(62, fmadd.d, rtz, NX, D_ONE, D_ONE, D_ONE, 0x3ca0000000000000);
  T_D3(63, fmadd.d, rdn, NX, D_ONE, D_ONE, D_ONE, 0x3ca0000000000000);
  T_D3(64, fmadd.d, rup, NX, 0x3ff0000000000001, D_ONE, D_ONE, 0x3ca0000000000000);
  T_D3(65, fmadd.d, rmm, NX, 0x3ff0000000000001, D_ONE, D_ONE, 0x3ca0000000000000);
  T_D3(66, fnmsub.d, rne, NX, D_MONE, D_ONE, D_ONE, 0xbca0000000000000);
  T_D3(67, fnmsub.d, rtz, NX, D_MONE, D_ONE, D_ONE, 0xbca0000000000000);
  T_D3(68, fnmsub.d, rdn, NX, 0xbff0000000000001, D_ONE, D_ONE, 0xbca0000000000000);
  T_D3(69, fnmsub.d, rup, NX, D_MONE, D_ONE, D_ONE, 0xbca0000000000000);
  T_D3(70, fnmsub.d, rmm, NX, 0xbff0000000000001, D_ONE, D_ONE, 0xbca0000000000000);
  T_D3(71, fmsub.d, rne, 0, D_PZERO, D_ONE, D_ONE, D_ONE);
  T_D3(72, fmsub.d, rtz, 0, D_PZERO, D_ONE, D_ONE, D_ONE);
  T_D3(73, fmsub.d, rdn, 0, D_NZERO, D_ONE, D_ONE, D_ONE);
  T_D3(74, fmsub.d, rup, 0, D_PZERO, D_ONE, D_ONE, D_ONE);
  T_D3(75, fmsub.d, rmm, 0, D_PZERO, D_ONE, D_ONE, D_ONE);
  T_D3(76, fnmadd.d, rne, 0, D_NZERO, D_PZERO, D_ONE, D_PZERO);
  T_D3(77, fmadd.d, rne, NV, D_CNAN, D_NZERO, D_NINF, D_QNANP);
  T_D3(78, fmadd.d, rne, NV, D_CNAN, D_PINF, D_ONE, D_NINF);
  T_D3(79, fmadd.d, rne, NV, D_CNAN, D_ONE, D_SNAN, D_ONE);
  T_D3(80, fmadd.d, rne, 0, D_CNAN, D_ONE, D_ONE, D_QNANP);
  T_D3(81, fmadd.d, rne, OF|NX, D_PINF, D_MAX, D_ONE, D_MAX);
  T_D3(82, fmadd.d, rtz, OF|NX, D_MAX, D_MAX, D_ONE, D_MAX);
  T_D3(83, fmadd.d, rdn, OF|NX, D_MAX, D_MAX, D_ONE, D_MAX);
  T_D3(84, fmadd.d, rup, OF|NX, D_PINF, D_MAX, D_ONE, D_MAX);
  T_D3(85, fmadd.d, rmm, OF|NX, D_PINF, D_MAX, D_ONE, D_MAX);
  T_D3(86, fmsub.d, rne, NX, D_MIN, 0x0010000000000001, 0x3feffffffffffffe, D_PZERO);
  T_D3(87, fmsub.d, rtz, UF|NX, 0x000fffffffffffff, 0x0010000000000001, 0x3feffffffffffffe, D_PZERO);
  T_D3(88, fmsub.d, rdn, UF|NX, 0x000fffffffffffff, 0x0010000000000001, 0x3feffffffffffffe, D_PZERO);
  T_D3(89, fmsub.d, rup, NX, D_MIN, 0x0010000000000001, 0x3feffffffffffffe, D_PZERO);
  T_D3(90, fmsub.d, rmm, NX, D_MIN, 0x0010000000000001, 0x3feffffffffffffe, D_PZERO);

  /* dynamic rounding mode */
  csrwi frm, 3;
  T_D3(91, fmadd.d, dyn, NX, 0x3ff0000000000001, D_ONE, D_ONE, 0x3ca0000000000000);
  T_S3(92, fmadd.s, dyn, NX, 0x3f800001, S_ONE, S_ONE, 0x33800000);
  csrwi frm, 0;

TEST_END
