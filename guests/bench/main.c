/* ftvm's bare-metal CPU benchmark. Kernels compiled in: -DK_INT, -DK_MEM, -DK_BRANCH, -DK_FP (the
 * all-in-one image defines all four). Every kernel runs a fixed amount of work and prints a checksum
 * on the UART, so that ftvm and QEMU can be checked against each other. */
#include "bench.h"

static u64 instret(void)
{
  u64 v;
  __asm__ volatile("rdinstret %0" : "=r"(v));
  return v;
}

/* Runs one kernel and prints its checksum, then (on its own line, since QEMU's count is not exact
 * without -icount) the instructions it retired. */
__attribute__((unused)) static void run(const char *name, u64 (*kernel)(void))
{
  u64 t0 = instret();
  u64 sum = kernel();
  u64 t1 = instret();
  report(name, sum);
  put_str(name);
  put_str(": instret=");
  put_hex(t1 - t0);
  put_str("\n");
}

int main(void)
{
#ifdef K_INT
  run("int", kernel_int);
#endif
#ifdef K_MEM
  run("mem", kernel_mem);
#endif
#ifdef K_BRANCH
  run("branch", kernel_branch);
#endif
#ifdef K_FP
  run("fp", kernel_fp);
#endif
  put_str("done\n");
  return 0;
}
