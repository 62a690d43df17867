/*
 * cpubench: a CPU-bound benchmark with a fixed amount of work.
 *
 * Usage: cpubench [ROUNDS]   (default 250)
 *
 * Each round makes 64 KiB of compressible pseudo-random bytes, compresses
 * them with a small LZ77 (hash-chain match finder: byte loads, compares,
 * branches), sorts 16 Ki 32-bit keys with a merge sort (loads, stores,
 * unpredictable branches) and hashes everything with FNV-1a (multiplies).
 * It only computes: no system calls in the loop, no time, no randomness, so
 * the checksum it prints depends on ROUNDS alone, on any correct machine.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_LEN (64 * 1024)
#define KEYS (16 * 1024)
#define HASH_BITS 12
#define MIN_MATCH 4
#define MAX_MATCH 255
#define WINDOW 4096

static uint8_t input[BUF_LEN];
static uint8_t packed[BUF_LEN + BUF_LEN / 8 + 16];
static uint32_t keys[KEYS], scratch[KEYS];
static int32_t head[1 << HASH_BITS], chain[BUF_LEN];

static uint64_t rng_state;

static uint64_t xorshift64(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Text-like data: words from a small vocabulary, so LZ77 finds matches. */
static void make_input(void)
{
	static const char *words[] = { "fault", "tolerant", "virtual", "machine", "primary",
		"backup", "log", "replay", "icount", "deterministic", "interrupt", "disk" };
	size_t n = 0;

	while (n < BUF_LEN) {
		uint64_t r = xorshift64();
		const char *w = words[r % (sizeof words / sizeof *words)];
		while (*w && n < BUF_LEN)
			input[n++] = (uint8_t)*w++;
		if (n < BUF_LEN)
			input[n++] = (r >> 32) % 7 ? ' ' : (uint8_t)('0' + (r >> 40) % 10);
	}
}

static uint32_t hash4(const uint8_t *p)
{
	uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
	return (v * 2654435761u) >> (32 - HASH_BITS);
}

/* LZ77 with a flag byte per 8 tokens; a token is a literal byte or (offset, length). */
static size_t compress(void)
{
	size_t in = 0, out = 0, flag_at = 0;
	int ntok = 8;

	memset(head, -1, sizeof head);
	while (in < BUF_LEN) {
		if (ntok == 8) {
			flag_at = out++;
			packed[flag_at] = 0;
			ntok = 0;
		}
		size_t best_len = 0, best_off = 0;
		if (in + MIN_MATCH <= BUF_LEN) {
			uint32_t h = hash4(&input[in]);
			int tries = 16;
			for (int32_t c = head[h]; c >= 0 && in - (size_t)c <= WINDOW && tries--; c = chain[c]) {
				size_t len = 0;
				while (len < MAX_MATCH && in + len < BUF_LEN && input[c + len] == input[in + len])
					len++;
				if (len > best_len) {
					best_len = len;
					best_off = in - (size_t)c;
				}
			}
			chain[in] = head[h];
			head[h] = (int32_t)in;
		}
		if (best_len >= MIN_MATCH) {
			packed[flag_at] |= (uint8_t)(1u << ntok);
			packed[out++] = (uint8_t)(best_off & 0xff);
			packed[out++] = (uint8_t)(best_off >> 8);
			packed[out++] = (uint8_t)best_len;
			for (size_t k = 1; k < best_len && in + k + MIN_MATCH <= BUF_LEN; k++) {
				uint32_t h = hash4(&input[in + k]);
				chain[in + k] = head[h];
				head[h] = (int32_t)(in + k);
			}
			in += best_len;
		} else {
			packed[out++] = input[in++];
		}
		ntok++;
	}
	return out;
}

static void merge_sort(uint32_t *a, uint32_t *tmp, size_t n)
{
	if (n < 2)
		return;
	size_t mid = n / 2;
	merge_sort(a, tmp, mid);
	merge_sort(a + mid, tmp, n - mid);
	size_t i = 0, j = mid, k = 0;
	while (i < mid && j < n)
		tmp[k++] = a[j] < a[i] ? a[j++] : a[i++];
	while (i < mid)
		tmp[k++] = a[i++];
	while (j < n)
		tmp[k++] = a[j++];
	memcpy(a, tmp, n * sizeof *a);
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
	const uint8_t *p = data;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

int main(int argc, char **argv)
{
	long rounds = argc > 1 ? atol(argv[1]) : 250;
	uint64_t sum = 0xcbf29ce484222325ull;
	size_t packed_total = 0;

	rng_state = 0x9e3779b97f4a7c15ull;
	for (long r = 0; r < rounds; r++) {
		make_input();
		size_t n = compress();
		packed_total += n;
		for (size_t i = 0; i < KEYS; i++)
			keys[i] = (uint32_t)xorshift64() ^ input[i * 4];
		merge_sort(keys, scratch, KEYS);
		for (size_t i = 1; i < KEYS; i++)
			if (keys[i - 1] > keys[i]) {
				printf("cpubench: sort failed in round %ld\n", r);
				return 1;
			}
		sum = fnv1a(sum, packed, n);
		sum = fnv1a(sum, keys, sizeof keys);
	}
	printf("cpubench: rounds=%ld packed=%zu checksum=%016llx\n", rounds, packed_total,
	       (unsigned long long)sum);
	return 0;
}
