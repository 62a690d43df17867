/* FP kernel (double precision, plus a single-precision polynomial): dense matrix multiply
 * (fmadd.d streams), an n-body step (fsqrt.d, fdiv.d), and conversions. The checksum is built from
 * the exact bit patterns of the results, so it also checks that ftvm rounds as the hardware does. */
#include "bench.h"

#define N 64
static double ma[N][N], mb[N][N], mc[N][N];

static u64 bits(double d)
{
  union {
    double d;
    u64 u;
  } v = {.d = d};
  return v.u;
}

static u64 matmul(int reps)
{
  for (int i = 0; i < N; i++)
    for (int j = 0; j < N; j++) {
      ma[i][j] = (double)(i * N + j) / (N * N) - 0.5;
      mb[i][j] = (double)((i + 3 * j) % 17) * 0.125 - 1.0;
    }
  u64 acc = 0;
  for (int r = 0; r < reps; r++) {
    for (int i = 0; i < N; i++)
      for (int j = 0; j < N; j++)
        mc[i][j] = 0.0;
    for (int i = 0; i < N; i++)
      for (int k = 0; k < N; k++) {
        double aik = ma[i][k];
        for (int j = 0; j < N; j++)
          mc[i][j] += aik * mb[k][j];
      }
    /* Feed the result back (scaled) so the repetitions do not fold into one. */
    for (int i = 0; i < N; i++)
      for (int j = 0; j < N; j++)
        ma[i][j] = mc[i][j] * (1.0 / 64.0) + ma[i][j] * 0.5;
    acc = acc * 31 + bits(mc[r % N][(r * 7) % N]);
  }
  return acc;
}

#define NB 5
struct body {
  double x, y, z, vx, vy, vz, m;
};

static u64 nbody(int steps)
{
  struct body b[NB] = {
      {0, 0, 0, 0, 0, 0, 39.47841760435743},
      {4.84, -1.16, -0.10, 0.606, 2.81, -0.025, 0.0377},
      {8.34, 4.12, -0.40, -1.01, 1.82, 0.0084, 0.0113},
      {12.89, -15.11, -0.22, 1.08, 0.868, -0.0108, 0.00172},
      {15.37, -25.91, 0.179, 0.979, 0.594, -0.0347, 0.00203},
  };
  const double dt = 0.01;
  for (int s = 0; s < steps; s++) {
    for (int i = 0; i < NB; i++)
      for (int j = i + 1; j < NB; j++) {
        double dx = b[i].x - b[j].x, dy = b[i].y - b[j].y, dz = b[i].z - b[j].z;
        double d2 = dx * dx + dy * dy + dz * dz;
        double mag = dt / (d2 * __builtin_sqrt(d2));
        b[i].vx -= dx * b[j].m * mag;
        b[i].vy -= dy * b[j].m * mag;
        b[i].vz -= dz * b[j].m * mag;
        b[j].vx += dx * b[i].m * mag;
        b[j].vy += dy * b[i].m * mag;
        b[j].vz += dz * b[i].m * mag;
      }
    for (int i = 0; i < NB; i++) {
      b[i].x += dt * b[i].vx;
      b[i].y += dt * b[i].vy;
      b[i].z += dt * b[i].vz;
    }
  }
  u64 acc = 0;
  for (int i = 0; i < NB; i++)
    acc = acc * 31 + bits(b[i].x) + bits(b[i].vy);
  return acc;
}

/* Single precision Horner polynomial plus int<->float conversions. */
static u64 poly(int n)
{
  float sum = 0.0f;
  i64 isum = 0;
  for (int i = 0; i < n; i++) {
    float x = (float)(i & 1023) * (1.0f / 1024.0f);
    float y = ((((0.0083f * x - 0.1666f) * x) * x + 1.0f) * x);
    sum += y;
    isum += (i64)(y * 1000.0f) + (i64)((double)i * 0.3);
  }
  union {
    float f;
    u32 u;
  } v = {.f = sum};
  return ((u64)v.u << 32) ^ (u64)isum;
}

u64 kernel_fp(void)
{
  u64 acc = matmul(REPS(24));
  acc = acc * 31 + nbody(REPS(60000));
  acc = acc * 31 + poly(REPS(1000000));
  return acc;
}
