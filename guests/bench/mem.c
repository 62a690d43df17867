/* Memory kernel: a 16 MiB working set (far beyond any small TLB and most host L2s) walked
 * sequentially, with page-crossing strides, copied (word and byte copies), and chased through a
 * random cyclic permutation (one dependent load per step, a new page almost every step). */
#include "bench.h"

#define WORDS ((8UL << 20) / 8) /* 8 MiB of u64 */
static u64 arr[WORDS];
static u64 dst[WORDS];          /* another 8 MiB: copy target, then the pointer-chase cycle */

/* Sequential sum over the whole array. */
static u64 walk(void)
{
  u64 s = 0;
  for (u64 i = 0; i < WORDS; i++)
    s += arr[i] ^ i;
  return s;
}

/* Read-modify-write with a stride of one page plus one word: every access is on a new page. */
static u64 stride(u64 steps)
{
  u64 s = 0, i = 0;
  for (u64 k = 0; k < steps; k++) {
    arr[i] += k;
    s += arr[i];
    i += 4096 / 8 + 1;
    if (i >= WORDS)
      i -= WORDS;
  }
  return s;
}

static void copy_words(u64 *d, const u64 *s, u64 n)
{
  for (u64 i = 0; i < n; i += 4) {
    d[i] = s[i];
    d[i + 1] = s[i + 1];
    d[i + 2] = s[i + 2];
    d[i + 3] = s[i + 3];
  }
}

/* Byte copy between misaligned addresses (the worst case of a simple memcpy). */
static void copy_bytes(u8 *d, const u8 *s, u64 n)
{
  for (u64 i = 0; i < n; i++)
    d[i] = s[i];
}

/* Sattolo's algorithm: a single cycle through all n slots, stored as next indices. */
static void make_cycle(u64 *next, u64 n, u64 seed)
{
  for (u64 i = 0; i < n; i++)
    next[i] = i;
  for (u64 i = n - 1; i > 0; i--) {
    u64 j = rng_next(&seed) % i;
    u64 t = next[i];
    next[i] = next[j];
    next[j] = t;
  }
}

static u64 chase(const u64 *next, u64 steps)
{
  u64 i = 0, s = 0;
  for (u64 k = 0; k < steps; k++) {
    i = next[i];
    s += i;
  }
  return s;
}

u64 kernel_mem(void)
{
  u64 acc = 0;
  for (u64 i = 0; i < WORDS; i++)
    arr[i] = i * 0x9E3779B97F4A7C15UL;
  for (int r = 0; r < REPS(4); r++) {
    acc = acc * 31 + walk();
    acc = acc * 31 + stride(WORDS / 2);
    copy_words(dst, arr, WORDS);
    copy_bytes((u8 *)arr + 3, (const u8 *)dst + 5, (1UL << 20));
    acc = acc * 31 + dst[r * 4099 % WORDS] + arr[r * 777 % WORDS];
  }
  /* The chase cycle lives in dst, 1 Mi entries = 8 MiB. */
  make_cycle(dst, WORDS, 0x5851F42D4C957F2DUL);
  acc = acc * 31 + chase(dst, REPS(4) * (WORDS / 2));
  return acc;
}
