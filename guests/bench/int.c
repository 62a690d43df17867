/* Integer kernel: 64- and 32-bit ALU work, multiplies (mul, mulh*, mulw), divides and remainders
 * (div*, rem*, signed and unsigned, both widths), and a fixed-point Mandelbrot (multiply-heavy,
 * with data-dependent loop exits). */
#include "bench.h"

static u64 gcd(u64 a, u64 b)
{
  while (b) {
    u64 t = a % b;
    a = b;
    b = t;
  }
  return a;
}

/* Euclid and assorted divisions on pseudo-random operands. */
static u64 divisions(u64 n)
{
  u64 s = 0x243F6A8885A308D3UL, acc = 0;
  for (u64 i = 0; i < n; i++) {
    u64 a = rng_next(&s);
    u64 b = (rng_next(&s) >> (i & 31)) | 1;
    acc += gcd(a, b);
    acc ^= a / b + (u64)((i64)a % (i64)b);
    u32 x = (u32)a, y = (u32)(b >> 3) | 1;
    acc += (u32)(x / y) * 31u + (u64)(i64)((i32)x % (i32)y);
    acc += (u64)(((unsigned __int128)a * b) >> 64);
    acc += (u64)(((__int128)(i64)a * (i64)b) >> 64);
    acc = acc * 0x9E3779B97F4A7C15UL + (acc >> 29);
  }
  return acc;
}

/* Fixed-point (Q4.28 in 64-bit, products in 64 bits) Mandelbrot on a w x h grid. */
static u64 mandel(int w, int h, int max_iter)
{
  u64 acc = 0;
  for (int py = 0; py < h; py++) {
    i64 ci = ((i64)py << 28) * 3 / h - (3L << 27);
    for (int px = 0; px < w; px++) {
      i64 cr = ((i64)px << 28) * 7 / (2 * w) - (5L << 27) - (1L << 28);
      i64 zr = 0, zi = 0;
      int it = 0;
      while (it < max_iter) {
        i64 zr2 = (zr * zr) >> 28, zi2 = (zi * zi) >> 28;
        if (zr2 + zi2 > (4L << 28))
          break;
        zi = ((zr * zi) >> 27) + ci;
        zr = zr2 - zi2 + cr;
        it++;
      }
      acc = acc * 33 + (u64)it;
    }
  }
  return acc;
}

/* 32-bit hashing of a word stream (addw/mulw/shifts, as C `unsigned` code compiles). */
static u64 hash32(u64 n)
{
  u32 h = 2166136261u, x = 12345;
  for (u64 i = 0; i < n; i++) {
    x = x * 1103515245u + 12345u;
    u32 k = x;
    k *= 0xcc9e2d51u;
    k = (k << 15) | (k >> 17);
    k *= 0x1b873593u;
    h ^= k;
    h = (h << 13) | (h >> 19);
    h = h * 5 + 0xe6546b64u;
  }
  return h;
}

u64 kernel_int(void)
{
  u64 acc = divisions(REPS(400000));
  acc = acc * 31 + mandel(REPS(120), 100, 200);
  acc = acc * 31 + hash32(REPS(3000000));
  return acc;
}
