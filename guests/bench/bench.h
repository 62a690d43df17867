/* Shared declarations of the bare-metal CPU benchmark (see main.c). */
#ifndef FTVM_BENCH_H
#define FTVM_BENCH_H

typedef unsigned char u8;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long u64;
typedef long i64;
typedef unsigned long usize;

/* Outer repetition counts go through REPS(): the measured build uses them as written, `cargo xtask
 * bench --quick` builds with -DSCALE_DIV=16 and divides them (working-set sizes stay the same). */
#ifndef SCALE_DIV
#define SCALE_DIV 1
#endif
#define REPS(n) ((n) / SCALE_DIV > 0 ? (n) / SCALE_DIV : 1)

void put_str(const char *s);
void put_hex(u64 v);
/* Prints "name: checksum=0x................\n". */
void report(const char *name, u64 checksum);

/* A small, fast, deterministic PRNG (xorshift64*). */
static inline u64 rng_next(u64 *s)
{
  u64 x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DUL;
}

/* The kernels: each returns a checksum that depends on every result it computed. */
u64 kernel_int(void);
u64 kernel_mem(void);
u64 kernel_branch(void);
u64 kernel_fp(void);

void *memcpy(void *dst, const void *src, usize n);
void *memset(void *dst, int c, usize n);

#endif
