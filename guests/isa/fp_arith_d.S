/* D extension arithmetic: FADD/FSUB/FMUL/FDIV/FSQRT.D in every rounding mode, special values and exact fflags. */
#include "fp_macros.h"

TEST_BEGIN
  FP_ENABLE

  /* fadd.d */
  T_D2(1, fadd.d, rne, 0, 0x4008000000000000, D_ONE, D_TWO);
  T_D2(2, fadd.d, rne, NX, D_ONE, D_ONE, 0x3ca0000000000000);
  T_D2(3, fadd.d, rtz, NX, D_ONE, D_ONE, 0x3ca0000000000000);
  T_D2(4, fadd.d, rdn, NX, D_ONE, D_ONE, 0x3ca0000000000000);
  T_D2(5, fadd.d, rup, NX, 0x3ff0000000000001, D_ONE, 0x3ca0000000000000);
  T_D2(6, fadd.d, rmm, NX, 0x3ff0000000000001, D_ONE, 0x3ca0000000000000);
  T_D2(7, fadd.d, rne, NX, D_MONE, D_MONE, 0xbca0000000000000);
  T_D2(8, fadd.d, rtz, NX, D_MONE, D_MONE, 0xbca0000000000000);
  T_D2(9, fadd.d, rdn, NX, 0xbff0000000000001, D_MONE, 0xbca0000000000000);
  T_D2(10, fadd.d, rup, NX, D_MONE, D_MONE, 0xbca0000000000000);
  T_D2(11, fadd.d, rmm, NX, 0xbff0000000000001, D_MONE, 0xbca0000000000000);
  T_D2(12, fadd.d, rne, NX, 0x3ff0000000000001, D_ONE, 0x3ca8000000000000);
  T_D2(13, fadd.d, rtz, NX, D_ONE, D_ONE, 0x3ca8000000000000);
  T_D2(14, fadd.d, rdn, NX, D_ONE, D_ONE, 0x3ca8000000000000);
  T_D2(15, fadd.d, rup, NX, 0x3ff0000000000001, D_ONE, 0x3ca8000000000000);
  T_D2(16, fadd.d, rmm, NX, 0x3ff0000000000001, D_ONE, 0x3ca8000000000000);
  T_D2(17, fadd.d, rne, NX, 0x3ff0000000000002, 0x3ff0000000000001, 0x3ca0000000000000);
  T_D2(18, fadd.d, rtz, NX, 0x3ff0000000000001, 0x3ff0000000000001, 0x3ca0000000000000);
  T_D2(19, fadd.d, rdn, NX, 0x3ff0000000000001, 0x3ff0000000000001, 0x3ca0000000000000);
  T_D2(20, fadd.d, rup, NX, 0x3ff0000000000002, 0x3ff0000000000001, 0x3ca0000000000000);
  T_D2(21, fadd.d, rmm, NX, 0x3ff0000000000002, 0x3ff0000000000001, 0x3ca0000000000000);
  T_D2(22, fadd.d, rne, 0, D_PZERO, D_ONE, D_MONE);
  T_D2(23, fadd.d, rtz, 0, D_PZERO, D_ONE, D_MONE);
  T_D2(24, fadd.d, rdn, 0, D_NZERO, D_ONE, D_MONE);
  T_D2(25, fadd.d, rup, 0, D_PZERO, D_ONE, D_MONE);
  T_D2(26, fadd.d, rmm, 0, D_PZERO, D_ONE, D_MONE);
  T_D2(27, fadd.d, rne, 0, D_NZERO, D_NZERO, D_NZERO);
  T_D2(28, fadd.d, rne, NV, D_CNAN, D_PINF, D_NINF);
  T_D2(29, fadd.d, rne, OF|NX, D_PINF, D_MAX, D_MAX);
  T_D2(30, fadd.d, rtz, OF|NX, D_MAX, D_MAX, D_MAX);
  T_D2(31, fadd.d, rdn, OF|NX, D_MAX, D_MAX, D_MAX);
  T_D2(32, fadd.d, rup, OF|NX, D_PINF, D_MAX, D_MAX);
  T_D2(33, fadd.d, rmm, OF|NX, D_PINF, D_MAX, D_MAX);
  T_D2(34, fadd.d, rne, 0, D_CNAN, D_QNANP, D_ONE);
  T_D2(35, fadd.d, rne, NV, D_CNAN, D_ONE, D_SNAN);
  T_D2(36, fadd.d, rne, NV, D_CNAN, D_NSNAN, D_QNAN);

  /* fsub.d */
  T_D2(37, fsub.d, rne, NX, D_ONE, D_ONE, 0x3c90000000000000);
  T_D2(38, fsub.d, rtz, NX, 0x3fefffffffffffff, D_ONE, 0x3c90000000000000);
  T_D2(39, fsub.d, rdn, NX, 0x3fefffffffffffff, D_ONE, 0x3c90000000000000);
  T_D2(40, fsub.d, rup, NX, D_ONE, D_ONE, 0x3c90000000000000);
  T_D2(41, fsub.d, rmm, NX, D_ONE, D_ONE, 0x3c90000000000000);
  T_D2(42, fsub.d, rne, 0, D_PZERO, D_TWO, D_TWO);
  T_D2(43, fsub.d, rtz, 0, D_PZERO, D_TWO, D_TWO);
  T_D2(44, fsub.d, rdn, 0, D_NZERO, D_TWO, D_TWO);
  T_D2(45, fsub.d, rup, 0, D_PZERO, D_TWO, D_TWO);
  T_D2(46, fsub.d, rmm, 0, D_PZERO, D_TWO, D_TWO);
  T_D2(47, fsub.d, rne, NV, D_CNAN, D_NINF, D_NINF);
  T_D2(48, fsub.d, rne, 0, D_MIN, 0x0020000000000000, D_MIN);

  /* fmul.d */
  T_D2(49, fmul.d, rne, 0, 0x3ff8000000000000, 0x4008000000000000, D_HALF);
  T_D2(50, fmul.d, rne, NX, 0x3ff0000000000002, 0x3ff0000000000001, 0x3ff0000000000001);
  T_D2(51, fmul.d, rtz, NX, 0x3ff0000000000002, 0x3ff0000000000001, 0x3ff0000000000001);
  T_D2(52, fmul.d, rdn, NX, 0x3ff0000000000002, 0x3ff0000000000001, 0x3ff0000000000001);
  T_D2(53, fmul.d, rup, NX, 0x3ff0000000000003, 0x3ff0000000000001, 0x3ff0000000000001);
  T_D2(54, fmul.d, rmm, NX, 0x3ff0000000000002, 0x3ff0000000000001, 0x3ff0000000000001);
  T_D2(55, fmul.d, rne, UF|NX, D_PZERO, 0x1a70000000000000, 0x1a70000000000000);
  T_D2(56, fmul.d, rtz, UF|NX, D_PZERO, 0x1a70000000000000, 0x1a70000000000000);
  T_D2(57, fmul.d, rdn, UF|NX, D_PZERO, 0x1a70000000000000, 0x1a70000000000000);
  T_D2(58, fmul.d, rup, UF|NX, D_SUB, 0x1a70000000000000, 0x1a70000000000000);
  T_D2(59, fmul.d, rmm, UF|NX, D_PZERO, 0x1a70000000000000, 0x1a70000000000000);
  T_D2(60, fmul.d, rne, OF|NX, D_NINF, 0x6570000000000000, 0xe570000000000000);
  T_D2(61, fmul.d, rtz, OF|NX, 0xffefffffffffffff, 0x6570000000000000, 0xe570000000000000);
  T_D2(62, fmul.d, rdn, OF|NX, D_NINF, 0x6570000000000000, 0xe570000000000000);
  T_D2(63, fmul.d, rup, OF|NX, 0xffefffffffffffff, 0x6570000000000000, 0xe570000000000000);
  T_D2(64, fmul.d, rmm, OF|NX, D_NINF, 0x6570000000000000, 0xe570000000000000);
  T_D2(65, fmul.d, rne, NX, D_MIN, 0x0010000000000001, 0x3feffffffffffffe);
  T_D2(66, fmul.d, rtz, UF|NX, 0x000fffffffffffff, 0x0010000000000001, 0x3feffffffffffffe);
  T_D2(67, fmul.d, rdn, UF|NX, 0x000fffffffffffff, 0x0010000000000001, 0x3feffffffffffffe);
  T_D2(68, fmul.d, rup, NX, D_MIN, 0x0010000000000001, 0x3feffffffffffffe);
  T_D2(69, fmul.d, rmm, NX, D_MIN, 0x0010000000000001, 0x3feffffffffffffe);
  T_D2(70, fmul.d, rne, 0, 0x0008000000000000, D_MIN, D_HALF);
  T_D2(71, fmul.d, rne, NV, D_CNAN, D_NINF, D_NZERO);

  /* fdiv.d */
  T_D2(72, fdiv.d, rne, NX, 0x3fd5555555555555, D_ONE, 0x4008000000000000);
  T_D2(73, fdiv.d, rtz, NX, 0x3fd5555555555555, D_ONE, 0x4008000000000000);
  T_D2(74, fdiv.d, rdn, NX, 0x3fd5555555555555, D_ONE, 0x4008000000000000);
  T_D2(75, fdiv.d, rup, NX, 0x3fd5555555555556, D_ONE, 0x4008000000000000);
  T_D2(76, fdiv.d, rmm, NX, 0x3fd5555555555555, D_ONE, 0x4008000000000000);
  T_D2(77, fdiv.d, rne, NX, 0xbfd5555555555555, D_ONE, 0xc008000000000000);
  T_D2(78, fdiv.d, rtz, NX, 0xbfd5555555555555, D_ONE, 0xc008000000000000);
  T_D2(79, fdiv.d, rdn, NX, 0xbfd5555555555556, D_ONE, 0xc008000000000000);
  T_D2(80, fdiv.d, rup, NX, 0xbfd5555555555555, D_ONE, 0xc008000000000000);
  T_D2(81, fdiv.d, rmm, NX, 0xbfd5555555555555, D_ONE, 0xc008000000000000);
  T_D2(82, fdiv.d, rne, DZ, D_NINF, D_MONE, D_PZERO);
  T_D2(83, fdiv.d, rne, NV, D_CNAN, D_NZERO, D_PZERO);
  T_D2(84, fdiv.d, rne, NV, D_CNAN, D_PINF, D_PINF);
  T_D2(85, fdiv.d, rne, 0, D_NINF, D_NINF, D_PZERO);
  T_D2(86, fdiv.d, rne, UF|NX, D_PZERO, D_SUB, 0x4010000000000000);
  T_D2(87, fdiv.d, rtz, UF|NX, D_PZERO, D_SUB, 0x4010000000000000);
  T_D2(88, fdiv.d, rdn, UF|NX, D_PZERO, D_SUB, 0x4010000000000000);
  T_D2(89, fdiv.d, rup, UF|NX, D_SUB, D_SUB, 0x4010000000000000);
  T_D2(90, fdiv.d, rmm, UF|NX, D_PZERO, D_SUB, 0x4010000000000000);

  /* fsqrt.d */
  T_D1(91, fsqrt.d, rne, 0, 0x4008000000000000, 0x4022000000000000);
  T_D1(92, fsqrt.d, rne, NX, 0x3ff6a09e667f3bcd, D_TWO);
  T_D1(93, fsqrt.d, rtz, NX, 0x3ff6a09e667f3bcc, D_TWO);
  T_D1(94, fsqrt.d, rdn, NX, 0x3ff6a09e667f3bcc, D_TWO);
  T_D1(95, fsqrt.d, rup, NX, 0x3ff6a09e667f3bcd, D_TWO);
  T_D1(96, fsqrt.d, rmm, NX, 0x3ff6a09e667f3bcd, D_TWO);
  T_D1(97, fsqrt.d, rne, 0, D_NZERO, D_NZERO);
  T_D1(98, fsqrt.d, rne, NV, D_CNAN, D_MONE);
  T_D1(99, fsqrt.d, rne, NV, D_CNAN, D_NSNAN);
  T_D1(100, fsqrt.d, rne, 0, D_CNAN, D_NQNAN);
  T_D1(101, fsqrt.d, rne, 0, D_PINF, D_PINF);
  T_D1(102, fsqrt.d, rne, 0, 0x1e60000000000000, D_SUB);

  /* dynamic rounding mode */
  csrwi frm, 0;
  T_D2(103, fdiv.d, dyn, NX, 0x3fd5555555555555, D_ONE, 0x4008000000000000);
  csrwi frm, 1;
  T_D2(104, fdiv.d, dyn, NX, 0x3fd5555555555555, D_ONE, 0x4008000000000000);
  csrwi frm, 2;
  T_D2(105, fdiv.d, dyn, NX, 0x3fd5555555555555, D_ONE, 0x4008000000000000);
  csrwi frm, 3;
  T_D2(106, fdiv.d, dyn, NX, 0x3fd5555555555556, D_ONE, 0x4008000000000000);
  csrwi frm, 4;
  T_D2(107, fdiv.d, dyn, NX, 0x3fd5555555555555, D_ONE, 0x4008000000000000);
  csrwi frm, 0;

TEST_END
