/* UART output, exits and the few libc functions GCC may call on its own. */
#include "bench.h"

#define UART0 ((volatile u8 *)0x10000000UL)
#define UART_THR 0
#define UART_LSR 5
#define LSR_THRE 0x20
#define SIFIVE_TEST ((volatile u32 *)0x100000UL)

extern volatile u64 tohost;

static void put_char(char c)
{
  while (!(UART0[UART_LSR] & LSR_THRE)) {
  }
  UART0[UART_THR] = (u8)c;
}

void put_str(const char *s)
{
  while (*s)
    put_char(*s++);
}

void put_hex(u64 v)
{
  put_str("0x");
  for (int sh = 60; sh >= 0; sh -= 4)
    put_char("0123456789abcdef"[(v >> sh) & 15]);
}

void report(const char *name, u64 checksum)
{
  put_str(name);
  put_str(": checksum=");
  put_hex(checksum);
  put_char('\n');
}

/* Ends the run: HTIF for ftvm (1 = pass), then sifive,test0 for QEMU (0x5555 = pass). */
void bench_exit(void)
{
  tohost = 1;
  *SIFIVE_TEST = 0x5555;
  for (;;) {
  }
}

/* Any trap is a failure of the benchmark program: say where, then exit with a failure code. */
void bench_trap(u64 cause, u64 epc, u64 tval)
{
  put_str("trap: mcause=");
  put_hex(cause);
  put_str(" mepc=");
  put_hex(epc);
  put_str(" mtval=");
  put_hex(tval);
  put_char('\n');
  tohost = (1 << 1) | 1;
  *SIFIVE_TEST = (1 << 16) | 0x3333;
  for (;;) {
  }
}

void *memcpy(void *dst, const void *src, usize n)
{
  u8 *d = dst;
  const u8 *s = src;
  while (n--)
    *d++ = *s++;
  return dst;
}

void *memset(void *dst, int c, usize n)
{
  u8 *d = dst;
  while (n--)
    *d++ = (u8)c;
  return dst;
}
