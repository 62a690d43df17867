/*
 * ftmark: a CoreMark-style benchmark of our own, with a fixed amount of work.
 *
 * Usage: ftmark [ITERATIONS]   (default 2000)
 *
 * CoreMark itself (EEMBC) is not packaged by Debian and this project fetches nothing from
 * elsewhere, so this program does the same four kinds of work as CoreMark does per iteration,
 * written here from their published description, not from its source: a linked list (find,
 * reverse, merge sort by two keys), a matrix (multiply-accumulate of 16-bit elements into 32-bit
 * results, bit-field extraction), a state machine (classifying the tokens of a text as integers,
 * decimals, exponents or invalid), and a CRC-16 over every result. Its scores are comparable
 * between machines running this program, not with published CoreMark scores.
 *
 * It only computes: no system calls in the loop, no time, no randomness, so the checksum it
 * prints depends on ITERATIONS alone, on any correct machine.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_LEN 256
#define MAT_N 24
#define TEXT_LEN 2048

static uint16_t crc16(uint16_t crc, uint32_t v, int bytes)
{
	for (int i = 0; i < bytes; i++) {
		crc ^= (uint16_t)((v >> (8 * i)) & 0xff);
		for (int b = 0; b < 8; b++)
			crc = (crc & 1) ? (uint16_t)((crc >> 1) ^ 0xa001) : (uint16_t)(crc >> 1);
	}
	return crc;
}

/* ---- linked list ---------------------------------------------------------------------- */

struct node {
	struct node *next;
	int16_t key;
	int16_t val;
};

static struct node pool[LIST_LEN];

static struct node *list_build(uint32_t seed)
{
	struct node *head = NULL;
	for (int i = LIST_LEN - 1; i >= 0; i--) {
		seed = seed * 1103515245u + 12345u;
		pool[i].key = (int16_t)(seed >> 16);
		pool[i].val = (int16_t)i;
		pool[i].next = head;
		head = &pool[i];
	}
	return head;
}

static struct node *list_reverse(struct node *l)
{
	struct node *r = NULL;
	while (l) {
		struct node *n = l->next;
		l->next = r;
		r = l;
		l = n;
	}
	return r;
}

static int cmp_key(const struct node *a, const struct node *b)
{
	return a->key - b->key;
}

static int cmp_val(const struct node *a, const struct node *b)
{
	return a->val - b->val;
}

/* Bottom-up merge sort of a singly linked list. */
static struct node *list_sort(struct node *l, int (*cmp)(const struct node *, const struct node *))
{
	for (int width = 1;; width *= 2) {
		struct node *p = l, *tail = NULL;
		int merges = 0;
		l = NULL;
		while (p) {
			struct node *q = p;
			int psize = 0, qsize = width;
			merges++;
			for (int i = 0; i < width && q; i++) {
				psize++;
				q = q->next;
			}
			while (psize > 0 || (qsize > 0 && q)) {
				struct node *e;
				if (psize == 0) {
					e = q, q = q->next, qsize--;
				} else if (qsize == 0 || !q || cmp(p, q) <= 0) {
					e = p, p = p->next, psize--;
				} else {
					e = q, q = q->next, qsize--;
				}
				if (tail)
					tail->next = e;
				else
					l = e;
				tail = e;
			}
			p = q;
		}
		if (tail)
			tail->next = NULL;
		if (merges <= 1)
			return l;
	}
}

static uint16_t list_work(uint32_t seed, uint16_t crc)
{
	struct node *l = list_build(seed);
	int found = 0;
	for (int k = 0; k < 8; k++) {
		int16_t want = pool[(seed + (uint32_t)k * 37u) % LIST_LEN].key;
		for (struct node *n = l; n; n = n->next)
			if (n->key == want) {
				found += n->val;
				break;
			}
	}
	l = list_reverse(l);
	l = list_sort(l, cmp_key);
	crc = crc16(crc, (uint32_t)(uint16_t)l->key, 2);
	l = list_sort(l, cmp_val);
	for (struct node *n = l; n; n = n->next)
		crc = crc16(crc, (uint32_t)(uint16_t)(n->key ^ n->val), 2);
	return crc16(crc, (uint32_t)found, 4);
}

/* ---- matrix --------------------------------------------------------------------------- */

static int16_t ma[MAT_N][MAT_N], mb[MAT_N][MAT_N];
static int32_t mc[MAT_N][MAT_N];

static uint16_t matrix_work(uint32_t seed, uint16_t crc)
{
	for (int i = 0; i < MAT_N; i++)
		for (int j = 0; j < MAT_N; j++) {
			seed = seed * 1664525u + 1013904223u;
			ma[i][j] = (int16_t)(seed >> 20);
			mb[i][j] = (int16_t)((seed >> 8) & 0x0fff);
		}
	int16_t c = (int16_t)(seed & 0xff);
	for (int i = 0; i < MAT_N; i++)
		for (int j = 0; j < MAT_N; j++)
			ma[i][j] = (int16_t)(ma[i][j] + c);
	for (int i = 0; i < MAT_N; i++)
		for (int j = 0; j < MAT_N; j++) {
			int32_t s = 0;
			for (int k = 0; k < MAT_N; k++)
				s += (int32_t)ma[i][k] * (int32_t)mb[k][j];
			mc[i][j] = s;
		}
	int32_t bits = 0;
	for (int i = 0; i < MAT_N; i++)
		for (int j = 0; j < MAT_N; j++) {
			int32_t f = (mc[i][j] >> 2) & 0x0f;
			bits += f > 7 ? mc[i][j] >> 7 : f;
		}
	return crc16(crc, (uint32_t)bits, 4);
}

/* ---- state machine -------------------------------------------------------------------- */

static char text[TEXT_LEN + 1];

enum state { START, INT, DEC, EXP_SIGN, EXP, INVALID, NSTATES };

static void text_build(uint32_t seed)
{
	static const char *const tokens[] = { "5012", "1234", "-874", "+122", "35.54400",
					      ".1234500", "-110.700", "+0.64400", "5.500e+3",
					      "-.123e-2", "-87e+832", "+0.6e-12", "T0.3e-1F",
					      "-T.T++Tq", "1T3.4e4z", "34.0e-T^" };
	size_t n = 0;
	while (n + 10 < TEXT_LEN) {
		seed = seed * 1103515245u + 12345u;
		const char *t = tokens[(seed >> 16) & 15];
		size_t l = strlen(t);
		memcpy(text + n, t, l);
		n += l;
		text[n++] = ',';
	}
	text[n] = 0;
}

static enum state next_state(enum state s, char ch)
{
	int digit = ch >= '0' && ch <= '9';
	switch (s) {
	case START:
		if (digit)
			return INT;
		if (ch == '+' || ch == '-')
			return INT;
		if (ch == '.')
			return DEC;
		return INVALID;
	case INT:
		if (digit)
			return INT;
		if (ch == '.')
			return DEC;
		if (ch == 'e' || ch == 'E')
			return EXP_SIGN;
		return INVALID;
	case DEC:
		if (digit)
			return DEC;
		if (ch == 'e' || ch == 'E')
			return EXP_SIGN;
		return INVALID;
	case EXP_SIGN:
		if (ch == '+' || ch == '-' || digit)
			return EXP;
		return INVALID;
	case EXP:
		return digit ? EXP : INVALID;
	default:
		return INVALID;
	}
}

static uint16_t state_work(uint32_t seed, uint16_t crc)
{
	uint32_t final[NSTATES] = { 0 }, trans[NSTATES] = { 0 };
	/* Scan the text, then corrupt every seventh character and scan again. */
	for (int pass = 0; pass < 2; pass++) {
		enum state s = START;
		for (const char *p = text; *p; p++) {
			if (*p == ',') {
				final[s]++;
				s = START;
				continue;
			}
			enum state n = next_state(s, *p);
			if (n != s)
				trans[n]++;
			s = n;
		}
		for (size_t i = seed % 7; i < TEXT_LEN && text[i]; i += 7)
			if (text[i] != ',')
				text[i] ^= 1;
	}
	for (int i = 0; i < NSTATES; i++) {
		crc = crc16(crc, final[i], 4);
		crc = crc16(crc, trans[i], 4);
	}
	return crc;
}

int main(int argc, char **argv)
{
	long iterations = argc > 1 ? strtol(argv[1], NULL, 10) : 2000;
	if (iterations <= 0) {
		fprintf(stderr, "usage: ftmark [ITERATIONS > 0]\n");
		return 2;
	}
	uint16_t crc = 0;
	for (long it = 0; it < iterations; it++) {
		uint32_t seed = (uint32_t)it * 2654435761u + 1u;
		text_build(seed);
		crc = list_work(seed, crc);
		crc = matrix_work(seed, crc);
		crc = state_work(seed, crc);
	}
	printf("ftmark: iterations=%ld checksum=%04x\n", iterations, crc);
	return 0;
}
