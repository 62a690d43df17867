/* ftvm bare-metal ISA test framework for C programs (built with -nostdlib, no libc).
 *
 * Include this in exactly one C file: it provides the startup code (stack, mtvec, FP unit on,
 * .bss cleared), `tohost`, memcpy/memset (which the compiler may call), UART output, and
 *   void test_fail(int n);   -- report failure of case n (never returns)
 *   CHECK(n, cond)           -- fail case n unless cond
 * The program defines `int test_main(void)`; returning 0 passes, any other value n fails case n.
 * Same verdict convention as test.h: tohost = 1 or (n << 1) | 1, then the sifive,test0 device.
 */
#ifndef FTVM_TEST_C_H
#define FTVM_TEST_C_H

/* No libc headers (the cross compiler ships none without picolibc's specs): the compiler's own
 * type macros instead of <stdint.h>. */
typedef __UINT8_TYPE__ uint8_t;
typedef __UINT32_TYPE__ uint32_t;
typedef __UINT64_TYPE__ uint64_t;
typedef __INT64_TYPE__ int64_t;
typedef __SIZE_TYPE__ size_t;

int test_main(void);

volatile uint64_t tohost __attribute__((section(".tohost"), aligned(64)));
volatile uint64_t fromhost __attribute__((section(".tohost"), aligned(64)));

char test_stack[16384] __attribute__((aligned(16)));

__asm__(".section .text.init\n"
        ".globl _start\n"
        "_start:\n"
        "  la t0, __c_trap\n"
        "  csrw mtvec, t0\n"
        "  li t0, 1 << 13\n"
        "  csrs mstatus, t0\n"
        "  la sp, test_stack + 16384\n"
        "  call __c_start\n"
        "1: j 1b\n"
        "  .align 2\n"
        "__c_trap:\n"
        "  li a0, 255\n"
        "  call test_fail\n");

/* Writes one byte to the UART. */
static inline void uart_putc(char c) {
    *(volatile uint8_t *)0x10000000 = (uint8_t)c;
}

/* Writes a NUL-terminated string to the UART. */
static inline void uart_puts(const char *s) {
    while (*s) {
        uart_putc(*s++);
    }
}

void *memcpy(void *d, const void *s, size_t n) {
    uint8_t *dp = d;
    const uint8_t *sp = s;
    while (n--) {
        *dp++ = *sp++;
    }
    return d;
}

void *memset(void *d, int c, size_t n) {
    uint8_t *dp = d;
    while (n--) {
        *dp++ = (uint8_t)c;
    }
    return d;
}

__attribute__((noreturn)) void test_fail(int n) {
    if (n == 0) {
        n = 255;
    }
    tohost = ((uint64_t)n << 1) | 1;
    int q = (n & 0xff) ? (n & 0xff) : 0xff;
    *(volatile uint32_t *)0x100000 = ((uint32_t)q << 16) | 0x3333;
    for (;;) {
    }
}

__attribute__((noreturn)) static void test_pass(void) {
    tohost = 1;
    *(volatile uint32_t *)0x100000 = 0x5555;
    for (;;) {
    }
}

#define CHECK(n, cond)                                                                           \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            test_fail(n);                                                                        \
        }                                                                                        \
    } while (0)

__attribute__((used, noreturn)) void __c_start(void) {
    int r = test_main();
    if (r != 0) {
        test_fail(r);
    }
    test_pass();
}

#endif
