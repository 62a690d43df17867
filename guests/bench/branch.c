/* Branch kernel: hard-to-predict control flow. A quicksort of random keys, a bytecode interpreter
 * (switch dispatch through a jump table, i.e. indirect jumps) running Collatz sequences, and a
 * tokenizer state machine over pseudo-random text. */
#include "bench.h"

#define NKEYS 65536
static u32 keys[NKEYS];

static void insertion_sort(u32 *a, i64 n)
{
  for (i64 i = 1; i < n; i++) {
    u32 v = a[i];
    i64 j = i - 1;
    while (j >= 0 && a[j] > v) {
      a[j + 1] = a[j];
      j--;
    }
    a[j + 1] = v;
  }
}

static void quicksort(u32 *a, i64 n)
{
  while (n > 16) {
    u32 p = a[n / 2];
    i64 i = 0, j = n - 1;
    for (;;) {
      while (a[i] < p)
        i++;
      while (a[j] > p)
        j--;
      if (i >= j)
        break;
      u32 t = a[i];
      a[i] = a[j];
      a[j] = t;
      i++;
      j--;
    }
    /* Recurse into the smaller side, loop on the larger: bounded stack. */
    if (j + 1 < n - j - 1) {
      quicksort(a, j + 1);
      a += j + 1;
      n -= j + 1;
    } else {
      quicksort(a + j + 1, n - j - 1);
      n = j + 1;
    }
  }
  insertion_sort(a, n);
}

static u64 sort_bench(int reps)
{
  u64 seed = 0x853C49E6748FEA9BUL, acc = 0;
  for (int r = 0; r < reps; r++) {
    for (int i = 0; i < NKEYS; i++)
      keys[i] = (u32)(rng_next(&seed) >> 32);
    quicksort(keys, NKEYS);
    for (int i = 1; i < NKEYS; i++)
      if (keys[i - 1] > keys[i])
        return 0xBAD; /* not sorted: the checksum says so */
    acc = acc * 31 + keys[r] + keys[NKEYS / 2] + keys[NKEYS - 1 - r];
  }
  return acc;
}

/* A register VM: 8 registers, instructions of op + 3 operands. */
enum { OP_LI, OP_ADD, OP_ADDI, OP_AND, OP_SHR1, OP_MUL3, OP_BEQ, OP_BNE, OP_BLT, OP_JMP, OP_HALT };
struct insn {
  u8 op, a, b, c; /* c is also a small immediate / branch target */
};

/* for (n = 1; n < limit; n++) { x = n; while (x != 1) { x = x odd ? 3x + 1 : x / 2; steps++; } } */
static const struct insn collatz_prog[] = {
  /* 0 */ {OP_LI, 1, 0, 1},    /* r1 = n = 1 */
  /* 1 */ {OP_LI, 3, 0, 0},    /* r3 = steps = 0 */
  /* 2 */ {OP_LI, 4, 0, 1},    /* r4 = 1 */
  /* 3 */ {OP_ADDI, 2, 1, 0},  /* r2 = x = n */
  /* 4 */ {OP_BEQ, 2, 4, 11},  /* while x != 1 */
  /* 5 */ {OP_AND, 5, 2, 4},   /* r5 = x & 1 */
  /* 6 */ {OP_BEQ, 5, 0, 9},   /* even? (r0 == 0) */
  /* 7 */ {OP_MUL3, 2, 2, 0},  /* x = 3x + 1 */
  /* 8 */ {OP_JMP, 0, 0, 10},
  /* 9 */ {OP_SHR1, 2, 2, 0},  /* x >>= 1 */
  /* 10 */ {OP_ADDI, 3, 3, 1}, /* steps++ ; loop */
  /* 11 */ {OP_BEQ, 2, 4, 13}, /* (x == 1 always here) */
  /* 12 */ {OP_JMP, 0, 0, 4},
  /* 13 */ {OP_ADDI, 1, 1, 1}, /* n++ */
  /* 14 */ {OP_BLT, 1, 6, 3},  /* while n < limit (r6) */
  /* 15 */ {OP_HALT, 0, 0, 0},
};

static u64 interp(const struct insn *prog, u64 limit)
{
  u64 r[8] = {0};
  r[6] = limit;
  u64 pc = 0, executed = 0;
  for (;;) {
    const struct insn *in = &prog[pc++];
    executed++;
    switch (in->op) {
    case OP_LI: r[in->a] = in->c; break;
    case OP_ADD: r[in->a] = r[in->b] + r[in->c]; break;
    case OP_ADDI: r[in->a] = r[in->b] + in->c; break;
    case OP_AND: r[in->a] = r[in->b] & r[in->c]; break;
    case OP_SHR1: r[in->a] = r[in->b] >> 1; break;
    case OP_MUL3: r[in->a] = r[in->b] * 3 + 1; break;
    case OP_BEQ: if (r[in->a] == r[in->b]) pc = in->c; break;
    case OP_BNE: if (r[in->a] != r[in->b]) pc = in->c; break;
    case OP_BLT: if (r[in->a] < r[in->b]) pc = in->c; break;
    case OP_JMP: pc = in->c; break;
    case OP_HALT: return r[3] * 1000003 + executed;
    default: return 0xBAD;
    }
    r[0] = 0;
  }
}

/* Tokenizer: counts words, numbers, punctuation and line lengths in pseudo-random text. */
#define TEXT 65536
static u8 text[TEXT];

static u64 tokenize(int reps)
{
  static const char alphabet[] = "etaoin shrdlu ETAOIN 0123456789 ,.;:!?\n  _-+";
  u64 seed = 0xDA942042E4DD58B5UL, acc = 0;
  for (int r = 0; r < reps; r++) {
    for (int i = 0; i < TEXT; i++)
      text[i] = (u8)alphabet[(rng_next(&seed) >> 40) % (sizeof alphabet - 1)];
    enum { SPACE, WORD, NUMBER, PUNCT } st = SPACE;
    u64 words = 0, numbers = 0, puncts = 0, lines = 0, longest = 0, len = 0, value = 0;
    for (int i = 0; i < TEXT; i++) {
      u8 c = text[i];
      if (c == '\n') {
        lines++;
        if (len > longest)
          longest = len;
        len = 0;
        st = SPACE;
        continue;
      }
      len++;
      switch (st) {
      case SPACE:
      case PUNCT:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
          st = WORD;
          words++;
        } else if (c >= '0' && c <= '9') {
          st = NUMBER;
          numbers++;
          value += c - '0';
        } else if (c != ' ') {
          st = PUNCT;
          puncts++;
        } else {
          st = SPACE;
        }
        break;
      case WORD:
        if (c == ' ')
          st = SPACE;
        else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                   (c >= '0' && c <= '9'))) {
          st = PUNCT;
          puncts++;
        }
        break;
      case NUMBER:
        if (c >= '0' && c <= '9')
          value = value * 10 + (c - '0');
        else if (c == ' ')
          st = SPACE;
        else {
          st = PUNCT;
          puncts++;
        }
        break;
      }
    }
    acc = acc * 31 + words + (numbers << 16) + (puncts << 32) + (lines << 48) + longest + value;
  }
  return acc;
}

u64 kernel_branch(void)
{
  u64 acc = sort_bench(REPS(6));
  acc = acc * 31 + interp(collatz_prog, REPS(5000));
  acc = acc * 31 + tokenize(REPS(40));
  return acc;
}
