/* Negative test: passes cases 1 and 2, then fails case 3 on purpose (ftvm must exit 1, naming 3). */
#include "test.h"
TEST_BEGIN
  TEST_CASE(1, a0, 1, li a0, 1)
  TEST_CASE(2, a0, 2, li a0, 2)
  TEST_CASE(3, a0, 4, li a0, 3)
  TEST_CASE(4, a0, 4, li a0, 4)
TEST_END
