/*
 * appendlog: appends numbered, checksummed records to a file, durably.
 *
 * Usage: appendlog FILE [COUNT [DELAY_MS]]   append COUNT records (default 10)
 *        appendlog -c FILE                   check the file, append nothing
 *
 * A record is one line: "<seq> <payload> <crc32>\n", with the CRC-32 taken over
 * "<seq> <payload>". Each record is written, then fsync()ed, then reported as
 * "appendlog: record N durable". A fault-tolerance test compares the two: after
 * a failover every record reported durable must be in the file, in order.
 *
 * On start the file is checked; numbering continues after its last good
 * record, and a torn last record (power lost mid-write) is cut off.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD_LEN 32

static uint32_t crc32(const char *p, size_t n)
{
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		c ^= (uint8_t)p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & -(c & 1));
	}
	return ~c;
}

/* Formats record seq into buf; returns its length. The payload is derived
 * from seq, so a checker can recompute it. */
static int format_record(char *buf, size_t len, unsigned long seq)
{
	char payload[PAYLOAD_LEN + 1];
	uint32_t x = (uint32_t)seq * 2654435761u + 1;

	for (int i = 0; i < PAYLOAD_LEN; i++) {
		x = x * 1103515245u + 12345u;
		payload[i] = "abcdefghijklmnopqrstuvwxyz012345"[(x >> 16) & 31];
	}
	payload[PAYLOAD_LEN] = '\0';
	int n = snprintf(buf, len, "%lu %s", seq, payload);
	return n + snprintf(buf + n, len - (size_t)n, " %08x\n", crc32(buf, (size_t)n));
}

/* Checks every record; returns the last good sequence number and sets
 * *good_end to the offset just past it. */
static unsigned long check(FILE *f, off_t *good_end, int *bad)
{
	char line[128], want[128];
	unsigned long seq = 0;

	*good_end = 0;
	*bad = 0;
	while (fgets(line, sizeof line, f)) {
		format_record(want, sizeof want, seq + 1);
		if (strcmp(line, want) != 0) {
			*bad = 1;
			break;
		}
		seq++;
		*good_end = ftello(f);
	}
	return seq;
}

int main(int argc, char **argv)
{
	int only_check = argc > 1 && strcmp(argv[1], "-c") == 0;
	const char *path = argv[only_check ? 2 : 1];
	long count = !only_check && argc > 2 ? atol(argv[2]) : 10;
	long delay_ms = !only_check && argc > 3 ? atol(argv[3]) : 0;
	off_t good_end;
	int bad;

	if (!path) {
		fprintf(stderr, "usage: appendlog FILE [COUNT [DELAY_MS]] | appendlog -c FILE\n");
		return 2;
	}
	int fd = open(path, only_check ? O_RDONLY : O_RDWR | O_CREAT, 0644);
	FILE *f = fd >= 0 ? fdopen(dup(fd), "r") : NULL;
	if (!f) {
		perror(path);
		return 1;
	}
	unsigned long seq = check(f, &good_end, &bad);
	fclose(f);
	if (only_check) {
		printf("appendlog: %lu good records%s\n", seq, bad ? ", then a bad one" : "");
		return bad;
	}
	if (bad) {
		printf("appendlog: cutting a torn record after record %lu\n", seq);
		if (ftruncate(fd, good_end) != 0 || fsync(fd) != 0) {
			perror("appendlog: truncate");
			return 1;
		}
	}
	if (lseek(fd, good_end, SEEK_SET) < 0) {
		perror("appendlog: seek");
		return 1;
	}
	for (long i = 0; i < count; i++) {
		char rec[128];
		int n = format_record(rec, sizeof rec, ++seq);
		if (write(fd, rec, (size_t)n) != n || fsync(fd) != 0) {
			perror("appendlog: write");
			return 1;
		}
		printf("appendlog: record %lu durable\n", seq);
		fflush(stdout);
		if (delay_ms > 0) {
			struct timespec ts = { delay_ms / 1000, (delay_ms % 1000) * 1000000L };
			nanosleep(&ts, NULL);
		}
	}
	return 0;
}
