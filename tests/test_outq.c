// SPDX-License-Identifier: MIT
/*
 * test_outq.c - the send queue that keeps a sponsor which stops reading from blocking the
 * engine (heca__outq_send / heca__outq_flush): over a TCP connection whose receiver reads
 * nothing and whose buffers are as small as the kernel allows, tens of thousands of frames are
 * handed over without a send ever blocking (an alarm fails the test if one does), the queue
 * refuses with -ENOBUFS past its limit and keeps nothing of the refused frame, and once the
 * receiver reads, every accepted frame arrives whole, once, in order, the frames split over
 * two iovecs of varying lengths as reads with payloads would be. A peer that goes away makes
 * the sender fail with an error, never block.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "net.h"

#define HDR 16u
#define FRAMES 30000u

/* Frame i: a 16-byte header (its number and its payload's length) and i % 61 payload bytes. */
static size_t frame(uint32_t i, uint8_t *hdr, uint8_t *pl)
{
	size_t n = i % 61;
	memset(hdr, 0, HDR);
	memcpy(hdr, &i, 4);
	memcpy(hdr + 4, &(uint32_t){(uint32_t)n}, 4);
	for (size_t k = 0; k < n; k++)
		pl[k] = (uint8_t)(i * 7 + k);
	return n;
}

struct reader {
	int fd;
	uint32_t got, bad;
};

static void *read_all(void *arg)
{
	struct reader *rd = arg;
	static uint8_t buf[1 << 16];
	size_t have = 0;

	for (;;) {
		ssize_t n = recv(rd->fd, buf + have, sizeof(buf) - have, 0);
		size_t off = 0;
		if (n <= 0)
			break;
		have += (size_t)n;
		while (have - off >= HDR) {
			uint32_t i, len;
			uint8_t want[64];
			memcpy(&i, buf + off, 4);
			memcpy(&len, buf + off + 4, 4);
			if (have - off < HDR + len)
				break;
			if (i != rd->got || len != i % 61 ||
			    (frame(i, (uint8_t[HDR]){0}, want), memcmp(want, buf + off + HDR, len)))
				rd->bad++;
			rd->got++;
			off += HDR + len;
		}
		memmove(buf, buf + off, have - off);
		have -= off;
	}
	return NULL;
}

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "not ok - a send blocked\n";
	ssize_t w = write(2, msg, sizeof(msg) - 1);
	(void)w;
	_exit(1);
}

static void pair(int *snd, int *rcv)
{
	char addr[64];
	int small = 1, lfd;

	lfd = heca__tcp_listen("127.0.0.1:0", addr, sizeof(addr));
	ASSERT_GE(lfd, 0);
	/* Inherited by the accepted socket: the receiver's window stays tiny. */
	ASSERT_EQ(setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
	*snd = heca__tcp_connect(addr, 5000);
	ASSERT_GE(*snd, 0);
	ASSERT_EQ(setsockopt(*snd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	*rcv = accept(lfd, NULL, NULL);
	ASSERT_GE(*rcv, 0);
	close(lfd);
}

int main(void)
{
	struct heca_outq q = {.max = 1u << 20};
	uint8_t hdr[HDR], pl[64];
	uint32_t sent = 0, queued = 0, refused = 0;
	struct reader rd = {0};
	pthread_t t;
	int snd, rcv, rc;

	signal(SIGALRM, on_alarm);
	pair(&snd, &rcv);

	/* Nobody reads: every frame must be taken at once, most of them into the queue. */
	alarm(20);
	for (uint32_t i = 0; i < FRAMES; i++) {
		struct iovec iov[2] = {{hdr, HDR}, {pl, frame(sent, hdr, pl)}};
		rc = heca__outq_send(&q, snd, iov, iov[1].iov_len ? 2 : 1);
		if (rc == -ENOBUFS) {
			refused++;
			continue; /* frame `sent` was not taken: it is sent again next round */
		}
		ASSERT_GE(rc, 0);
		queued += rc == 1;
		sent++;
	}
	alarm(0);
	printf("  %u frames taken without blocking, %u of them queued (%zu bytes waiting), "
	       "%u refused past the limit\n",
	       sent, queued, q.len, refused);
	ASSERT_GE(queued, 1);
	ASSERT_LE(q.len, q.max);
	if (refused == 0) {
		/* Fill to the limit: the next frame must be refused, whole. */
		size_t before;
		do {
			struct iovec iov[2] = {{hdr, HDR}, {pl, frame(sent, hdr, pl)}};
			before = q.len;
			rc = heca__outq_send(&q, snd, iov, iov[1].iov_len ? 2 : 1);
			sent += rc >= 0;
		} while (rc >= 0);
		ASSERT_EQ(rc, -ENOBUFS);
		ASSERT_EQ(q.len, before);
	}

	/* The receiver reads now; the sender flushes as the socket drains. */
	rd.fd = rcv;
	ASSERT_EQ(pthread_create(&t, NULL, read_all, &rd), 0);
	alarm(60);
	while ((rc = heca__outq_flush(&q, snd)) == 1) {
		struct pollfd p = {.fd = snd, .events = POLLOUT};
		ASSERT_GE(poll(&p, 1, 5000), 1);
	}
	ASSERT_EQ(rc, 0);
	ASSERT_EQ(q.len, 0);
	shutdown(snd, SHUT_WR);
	pthread_join(t, NULL);
	alarm(0);
	printf("  %u frames received, %u wrong or out of order\n", rd.got, rd.bad);
	ASSERT_EQ(rd.got, sent);
	ASSERT_EQ(rd.bad, 0);
	close(snd);
	close(rcv);

	/* A peer that vanishes: an error, never a block. */
	pair(&snd, &rcv);
	close(rcv);
	alarm(20);
	rc = 0;
	for (uint32_t i = 0; i < FRAMES && rc >= 0; i++) {
		struct iovec iov[2] = {{hdr, HDR}, {pl, frame(i, hdr, pl)}};
		rc = heca__outq_send(&q, snd, iov, iov[1].iov_len ? 2 : 1);
		if (rc == 1)
			rc = heca__outq_flush(&q, snd);
		if (rc == 1)
			usleep(1000);
	}
	alarm(0);
	printf("  peer gone: %s\n", rc < 0 ? strerror(-rc) : "no error");
	ASSERT_TRUE(rc < 0);
	ASSERT_TRUE(rc != -ENOBUFS);
	close(snd);
	free(q.buf);
	printf("ok - test_outq\n");
	return 0;
}
