/* Negative test: a program linked below RAM (outside_ram.ld), which ftvm must refuse to load. */
#include "test.h"
TEST_BEGIN
  TEST_CASE(1, a0, 1, li a0, 1)
TEST_END
