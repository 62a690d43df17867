/*
 * counter: a TCP counter service for fault-tolerance tests.
 *
 * Usage: counter [PORT]   (default 7000)
 *
 * Every request line, from any client, is answered with the next integer
 * (1, 2, 3, ...), one per line. The count lives only in memory, so after a
 * failover a client can tell whether the backup carried on exactly where the
 * primary stopped: the numbers it sees must never repeat or skip.
 *
 * One process, one poll() loop: the count is shared by all clients without
 * locks, and replies go out in the order requests were read.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CLIENTS 64
#define LINE_MAX_LEN 256

struct client {
	int fd;
	size_t len;
	char line[LINE_MAX_LEN];
};

static unsigned long long next_value = 1;

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Handles readable data; returns -1 when the client should be dropped. */
static int serve(struct client *c)
{
	char buf[512];
	ssize_t n = read(c->fd, buf, sizeof buf);

	if (n <= 0)
		return -1;
	for (ssize_t i = 0; i < n; i++) {
		int full = c->len == LINE_MAX_LEN - 1;

		if (buf[i] != '\n' && !full) {
			c->line[c->len++] = buf[i];
			continue;
		}
		char reply[32];
		int r = snprintf(reply, sizeof reply, "%llu\n", next_value++);
		if (write_all(c->fd, reply, (size_t)r) != 0)
			return -1;
		c->len = 0;
		if (full && buf[i] != '\n')
			c->line[c->len++] = buf[i];
	}
	return 0;
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 7000;
	int one = 1;
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct pollfd pfd[MAX_CLIENTS + 1];
	struct client clients[MAX_CLIENTS];
	int nclients = 0;
	int ls = socket(AF_INET, SOCK_STREAM, 0);

	if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(ls, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(ls, 16) != 0) {
		perror("counter: listen");
		return 1;
	}
	printf("counter: listening on port %d\n", port);
	fflush(stdout);
	for (;;) {
		pfd[0] = (struct pollfd){ .fd = ls, .events = POLLIN };
		for (int i = 0; i < nclients; i++)
			pfd[i + 1] = (struct pollfd){ .fd = clients[i].fd, .events = POLLIN };
		if (poll(pfd, (nfds_t)nclients + 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("counter: poll");
			return 1;
		}
		/* Clients first, in a fixed order, then new connections. */
		for (int i = nclients - 1; i >= 0; i--) {
			if (!(pfd[i + 1].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (serve(&clients[i]) != 0) {
				close(clients[i].fd);
				clients[i] = clients[--nclients];
			}
		}
		if (pfd[0].revents & POLLIN) {
			int fd = accept(ls, NULL, NULL);
			if (fd >= 0 && nclients == MAX_CLIENTS) {
				close(fd);
			} else if (fd >= 0) {
				clients[nclients].fd = fd;
				clients[nclients].len = 0;
				nclients++;
			}
		}
	}
}
