/* C on the bare-metal machine (no libc, startup from test_c.h): recursion, arrays and struct
 * copies through memcpy/memset, 64-bit and 128-bit integer arithmetic, double-precision floating
 * point, function pointers, volatile memory, and output on the UART. */
#include "test_c.h"

struct point {
    int64_t x, y;
    double w;
    char tag[24];
};

static uint64_t fib(unsigned n) {
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* insertion sort through a comparison callback */
static void sort(int64_t *v, int n, int (*cmp)(const void *, const void *)) {
    for (int i = 1; i < n; i++) {
        int64_t k = v[i];
        int j = i - 1;
        while (j >= 0 && cmp(&v[j], &k) > 0) {
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = k;
    }
}

static volatile int64_t sink;
static int64_t data[16] = {5, -3, 9, 0, 12, -7, 4, 4, 100, -100, 1, 2, 3, 8, 6, 7};
static struct point zeroed[4];

int test_main(void) {
    uart_puts("c_smoke: hello from C\n");
    CHECK(1, fib(20) == 6765);

    sort(data, 16, cmp_i64);
    for (int i = 1; i < 16; i++) {
        CHECK(2, data[i - 1] <= data[i]);
    }
    CHECK(3, data[0] == -100 && data[15] == 100);

    struct point a = {.x = -1, .y = 1LL << 40, .w = 2.5, .tag = "a struct copied by value"};
    struct point b;
    sink = 1;
    b = a;
    CHECK(4, b.x == -1 && b.y == (1LL << 40) && b.w == 2.5 && b.tag[23] == 'e' && b.tag[0] == 'a');
    for (int i = 0; i < 4; i++) {
        CHECK(5, zeroed[i].x == 0 && zeroed[i].tag[10] == 0); /* .bss is zero */
    }

    volatile uint64_t u = 0xfedcba9876543210ULL, v = 0x0123456789abcdefULL;
    unsigned __int128 p = (unsigned __int128)u * v;
    CHECK(6, (uint64_t)(p >> 64) == 0x0121fa00ad77d742ULL && (uint64_t)p == 0x2236d88fe5618cf0ULL);
    volatile int64_t s = -7, d = 2;
    CHECK(7, s / d == -3 && s % d == -1 && (uint64_t)s / (uint64_t)d == 0x7ffffffffffffffcULL);

    volatile double x = 1.5, y = 0.25;
    double z = x * y + x / y - y;
    CHECK(8, z == 6.125);
    volatile double big = 1e300;
    CHECK(9, big * big > 1e308); /* +inf */
    CHECK(10, (int64_t)(x * -3.0) == -4);

    uart_puts("c_smoke: done\n");
    return 0;
}
