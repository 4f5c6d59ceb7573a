// SPDX-License-Identifier: MIT
/*
 * test_sponsor.c - the real hecad spoken to over TCP: store and fetch, capacity, isolation,
 * CLONE/DISCARD/RESIZE/DROPALL, leases of closed demanders, protocol errors confined to one
 * client, cluster ids, shutdown and the command line.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "sponsor_client.h"
#include "net.h"
#include "wire.h"

#define PG HECA_WIRE_PAGE

static uint8_t g_buf[HECA_WIRE_HDR + HECA_WIRE_MAX_PAYLOAD];

static void cl_send(int fd, uint8_t op, uint64_t req, uint32_t seg, uint64_t page,
		    uint32_t count, const void *payload, uint32_t plen)
{
	struct heca_frame f = {.opcode = op, .req_id = req, .segment = seg, .page = page,
			       .count = count, .payload = payload, .payload_len = plen};
	int rc = t_frame_send(fd, &f);

	if (rc)
		T_FAILF("send: %s", strerror(-rc));
}

/* Receive one frame into buf (header + payload). Returns 0 or -errno (-ECONNRESET on EOF). */
static int cl_recv(int fd, struct heca_frame *f, uint8_t *buf)
{
	int rc = t_frame_recv(fd, f, buf, HECA_WIRE_HDR + HECA_WIRE_MAX_PAYLOAD);

	if (rc == -EMSGSIZE || rc == -EPROTO || rc == -EBADMSG)
		T_FAILF("bad reply: %s", strerror(-rc));
	return rc;
}

/* One request, one reply with the expected status. The reply's payload is in g_buf. */
static struct heca_frame rpc(int fd, uint8_t op, uint32_t seg, uint64_t page, uint32_t count,
			     const void *payload, uint32_t plen, int status)
{
	static uint64_t id = 1000;
	struct heca_frame f;
	int rc;

	cl_send(fd, op, ++id, seg, page, count, payload, plen);
	rc = cl_recv(fd, &f, g_buf);
	if (rc)
		T_FAILF("%s: no reply: %s", heca_wire_opname(op), strerror(-rc));
	ASSERT_EQ(f.opcode, op | HECA_OP_REPLY);
	ASSERT_EQ(f.req_id, id);
	if (f.status != status)
		T_FAILF("%s seg %u page %llu: status %d, want %d", heca_wire_opname(op), seg,
			(unsigned long long)page, f.status, status);
	return f;
}

static int cl_connect(const struct t_sponsor *s)
{
	int fd = heca__tcp_connect(s->addr, 5000);

	if (fd < 0)
		T_FAILF("connect %s: %s", s->addr, strerror(-fd));
	return fd;
}

/* Connect and HELLO as demander dem (first byte), cluster id cluster (first byte). */
static int cl_hello(const struct t_sponsor *s, uint8_t dem, uint8_t cluster, int status)
{
	uint8_t p[HECA_WIRE_HELLO_LEN] = {0};
	struct heca_frame f;
	int fd = cl_connect(s);

	memset(p, cluster, 16);
	p[16] = dem;
	heca_put32(p + 32, HECA_CHAN_CONTROL);
	f = rpc(fd, HECA_OP_HELLO, 0, 0, 0, p, sizeof(p), status);
	if (!status) {
		ASSERT_EQ(f.payload_len, HECA_WIRE_HELLO_REPLY_LEN);
		/* No --key-file here: no AUTH asked for (tests/test_auth.c covers keys). */
		ASSERT_EQ(heca_get32(f.payload + HECA_HELLO_REPLY_OFF_FLAGS), 0);
	}
	return fd;
}

static void stat5(int fd, uint64_t v[5])
{
	struct heca_frame f = rpc(fd, HECA_OP_STAT, 0, 0, 0, NULL, 0, 0);

	ASSERT_EQ(f.payload_len, HECA_WIRE_STAT_LEN);
	for (int i = 0; i < 5; i++)
		v[i] = heca_get64(f.payload + 8 * i);
}

static void fill(uint8_t *p, uint32_t npages, uint32_t seed)
{
	for (size_t i = 0; i < (size_t)npages * PG / 4; i++) {
		uint32_t v = seed * 2654435761u + (uint32_t)i * 40503u + 1;
		memcpy(p + 4 * i, &v, 4);
	}
}

/* The peer closed: recv sees EOF (after any frames still queued, which we skip). */
static void expect_closed(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	char c;

	ASSERT_EQ(poll(&p, 1, 5000), 1);
	ASSERT_EQ(recv(fd, &c, 1, 0), 0);
}

static uint8_t w[HECA_WIRE_MAX_PAYLOAD];

static void test_store(const struct t_sponsor *s)
{
	int a = cl_hello(s, 1, 0, 0), b = cl_hello(s, 2, 0, 0);
	struct heca_frame f;
	uint64_t st[5];

	/* Round trip with content check (the last 16 pages of a 1000-page segment). */
	rpc(a, HECA_OP_ALLOC, 3, 1000, 0, NULL, 0, 0);
	fill(w, 16, 1);
	rpc(a, HECA_OP_WRITE, 3, 984, 16, w, 16 * PG, 0);
	f = rpc(a, HECA_OP_READ, 3, 984, 16, NULL, 0, 0);
	ASSERT_EQ(f.payload_len, 16 * PG);
	ASSERT_TRUE(!memcmp(f.payload, w, 16 * PG));
	rpc(a, HECA_OP_WRITE, 3, 999, 2, w, 2 * PG, EINVAL);
	rpc(a, HECA_OP_WRITE, 4, 0, 1, w, PG, ENOENT);

	/* Never written: ENOENT. */
	rpc(a, HECA_OP_READ, 3, 0, 1, NULL, 0, ENOENT);

	/* Same segment id, other demander: its own segment. */
	rpc(b, HECA_OP_READ, 3, 984, 1, NULL, 0, ENOENT);
	rpc(b, HECA_OP_ALLOC, 3, 1000, 0, NULL, 0, 0);
	rpc(b, HECA_OP_READ, 3, 984, 1, NULL, 0, ENOENT);
	fill(w, 1, 2);
	rpc(b, HECA_OP_WRITE, 3, 984, 1, w, PG, 0);
	fill(w, 16, 1);
	f = rpc(a, HECA_OP_READ, 3, 984, 16, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(f.payload, w, 16 * PG));
	fill(w, 1, 2);
	f = rpc(b, HECA_OP_READ, 3, 984, 1, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(f.payload, w, PG));

	/* FREE, then STAT: used pages went down. */
	stat5(a, st);
	ASSERT_EQ(st[1], 17);
	ASSERT_EQ(st[2], 2);
	ASSERT_EQ(st[4], 16);
	rpc(a, HECA_OP_FREE, 3, 0, 0, NULL, 0, 0);
	rpc(a, HECA_OP_FREE, 3, 0, 0, NULL, 0, ENOENT);
	stat5(a, st);
	ASSERT_EQ(st[1], 1);
	ASSERT_EQ(st[2], 1);
	ASSERT_EQ(st[4], 0);
	rpc(b, HECA_OP_FREE, 3, 0, 0, NULL, 0, 0);

	/* ECHO: empty and 1 MiB. */
	fill(w, HECA_WIRE_MAX_PAGES, 9);
	f = rpc(a, HECA_OP_ECHO, 0, 0, 0, NULL, 0, 0);
	ASSERT_EQ(f.payload_len, 0);
	f = rpc(a, HECA_OP_ECHO, 0, 0, 0, w, HECA_WIRE_MAX_PAYLOAD, 0);
	ASSERT_EQ(f.payload_len, HECA_WIRE_MAX_PAYLOAD);
	ASSERT_TRUE(!memcmp(f.payload, w, HECA_WIRE_MAX_PAYLOAD));

	/* A demander that reconnects finds its segments again. */
	rpc(a, HECA_OP_ALLOC, 4, 10, 0, NULL, 0, 0);
	fill(w, 1, 4);
	rpc(a, HECA_OP_WRITE, 4, 1, 1, w, PG, 0);
	close(a);
	a = cl_hello(s, 1, 0, 0);
	f = rpc(a, HECA_OP_READ, 4, 1, 1, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(f.payload, w, PG));
	rpc(a, HECA_OP_FREE, 4, 0, 0, NULL, 0, 0);
	close(a);
	close(b);
}

static void test_capacity(void)
{
	struct t_sponsor s;
	struct heca_frame f;
	uint64_t st[5];
	int fd;

	t_sponsor_start(&s, "256K", NULL);
	fd = cl_hello(&s, 1, 0, 0);
	rpc(fd, HECA_OP_ALLOC, 1, 100, 0, NULL, 0, 0);
	fill(w, 10, 5);
	rpc(fd, HECA_OP_WRITE, 1, 0, 10, w, 10 * PG, 0);
	fill(w, 65, 6);
	rpc(fd, HECA_OP_WRITE, 1, 20, 65, w, 65 * PG, ENOSPC);
	fill(w, 10, 5);
	f = rpc(fd, HECA_OP_READ, 1, 0, 10, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(f.payload, w, 10 * PG));
	rpc(fd, HECA_OP_READ, 1, 20, 1, NULL, 0, ENOENT);
	stat5(fd, st);
	ASSERT_EQ(st[0], 64);
	ASSERT_EQ(st[1], 10);
	/* Exactly full works; one more page does not; overwrites still do. */
	fill(w, 54, 7);
	rpc(fd, HECA_OP_WRITE, 1, 10, 54, w, 54 * PG, 0);
	rpc(fd, HECA_OP_WRITE, 1, 64, 1, w, PG, ENOSPC);
	rpc(fd, HECA_OP_WRITE, 1, 0, 1, w, PG, 0);
	rpc(fd, HECA_OP_FREE, 1, 0, 0, NULL, 0, 0);
	stat5(fd, st);
	ASSERT_EQ(st[1], 0);
	close(fd);
	ASSERT_EQ(t_sponsor_stop(&s, 0), 0);
}

static void test_malformed(const struct t_sponsor *s)
{
	int bad = cl_hello(s, 5, 0, 0), good = cl_hello(s, 6, 0, 0), pre;
	uint8_t junk[HECA_WIRE_HDR];
	struct heca_frame f;

	rpc(good, HECA_OP_ALLOC, 1, 4, 0, NULL, 0, 0);
	memset(junk, 0x5a, sizeof(junk));
	ASSERT_EQ(send(bad, junk, sizeof(junk), MSG_NOSIGNAL), (ssize_t)sizeof(junk));
	ASSERT_EQ(cl_recv(bad, &f, g_buf), 0);
	ASSERT_EQ(f.opcode, HECA_OP_ERROR);
	ASSERT_EQ(f.status, EPROTO);
	expect_closed(bad);
	close(bad);

	/* Payload checksum wrong: EBADMSG. */
	bad = cl_hello(s, 5, 0, 0);
	{
		struct heca_frame r = {.opcode = HECA_OP_WRITE, .segment = 1, .count = 1,
				       .payload = w, .payload_len = PG};
		uint8_t hdr[HECA_WIRE_HDR];
		struct iovec iov[2] = {{hdr, sizeof(hdr)}, {w, PG}};
		heca_wire_encode(hdr, &r);
		w[7] ^= 1;
		ASSERT_EQ(heca__send_all(bad, iov, 2), 0);
		w[7] ^= 1;
	}
	ASSERT_EQ(cl_recv(bad, &f, g_buf), 0);
	ASSERT_EQ(f.opcode, HECA_OP_ERROR);
	ASSERT_EQ(f.status, EBADMSG);
	expect_closed(bad);
	close(bad);

	/* Anything before HELLO. */
	pre = cl_connect(s);
	cl_send(pre, HECA_OP_STAT, 1, 0, 0, 0, NULL, 0);
	ASSERT_EQ(cl_recv(pre, &f, g_buf), 0);
	ASSERT_EQ(f.opcode, HECA_OP_ERROR);
	ASSERT_EQ(f.status, EPROTO);
	expect_closed(pre);
	close(pre);

	/* The other client never noticed. */
	fill(w, 4, 8);
	rpc(good, HECA_OP_WRITE, 1, 0, 4, w, 4 * PG, 0);
	f = rpc(good, HECA_OP_READ, 1, 0, 4, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(f.payload, w, 4 * PG));
	rpc(good, HECA_OP_FREE, 1, 0, 0, NULL, 0, 0);
	close(good);
}

/* A client that sends many READs and never reads replies must not stall anyone else. */
static void test_stalled_client(const struct t_sponsor *s)
{
	int hog = cl_hello(s, 7, 0, 0), other = cl_hello(s, 8, 0, 0);
	struct heca_frame f;
	double t0;
	int sent = 0;

	rpc(hog, HECA_OP_ALLOC, 1, HECA_WIRE_MAX_PAGES, 0, NULL, 0, 0);
	fill(w, HECA_WIRE_MAX_PAGES, 10);
	rpc(hog, HECA_OP_WRITE, 1, 0, HECA_WIRE_MAX_PAGES, w, HECA_WIRE_MAX_PAYLOAD, 0);
	fcntl(hog, F_SETFL, fcntl(hog, F_GETFL) | O_NONBLOCK);
	/* 1 MiB replies pile up until hecad's send to hog blocks and hog's requests back up. */
	for (int i = 0; i < 20000; i++) {
		struct heca_frame r = {.opcode = HECA_OP_READ, .req_id = (uint64_t)i + 1,
				       .segment = 1, .count = HECA_WIRE_MAX_PAGES};
		uint8_t hdr[HECA_WIRE_HDR];
		heca_wire_encode(hdr, &r);
		if (send(hog, hdr, sizeof(hdr), MSG_NOSIGNAL) != (ssize_t)sizeof(hdr))
			break;
		sent++;
	}
	ASSERT_GE(sent, 10);
	t0 = t_now_ms();
	rpc(other, HECA_OP_ALLOC, 1, 1, 0, NULL, 0, 0);
	fill(w, 1, 11);
	rpc(other, HECA_OP_WRITE, 1, 0, 1, w, PG, 0);
	f = rpc(other, HECA_OP_READ, 1, 0, 1, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(f.payload, w, PG));
	rpc(other, HECA_OP_FREE, 1, 0, 0, NULL, 0, 0);
	ASSERT_LE(t_now_ms() - t0, 2000);
	close(hog); /* with replies unread: hecad's send fails, its thread ends */
	close(other);
	hog = cl_hello(s, 7, 0, 0);
	rpc(hog, HECA_OP_FREE, 1, 0, 0, NULL, 0, 0);
	close(hog);
}

/* Pipelined single-page WRITEs then READs, 64 in flight, batched sends and large receives
 * as the demander's engine does: a number, not a pass/fail. */
static void measure(const struct t_sponsor *s)
{
	const uint32_t n = 32768, window = 64;
	const size_t rxcap = 4u << 20;
	uint8_t *tx = malloc(window * (HECA_WIRE_HDR + PG)), *rx = malloc(rxcap);
	int fd = cl_hello(s, 9, 0, 0);
	double ms[2];

	ASSERT_TRUE(tx && rx);
	rpc(fd, HECA_OP_ALLOC, 1, n, 0, NULL, 0, 0);
	fill(w, 1, 12);
	for (int pass = 0; pass < 2; pass++) {
		uint8_t op = pass ? HECA_OP_READ : HECA_OP_WRITE;
		uint32_t sent = 0, got = 0;
		size_t have = 0;
		double t0 = t_now_ms();

		while (got < n) {
			size_t tl = 0, off = 0;
			ssize_t r;

			while (sent < n && sent - got < window) {
				struct heca_frame q = {.opcode = op, .req_id = sent, .segment = 1,
						       .page = sent, .count = 1,
						       .payload = pass ? NULL : w,
						       .payload_len = pass ? 0 : PG};
				heca_wire_encode(tx + tl, &q);
				if (!pass)
					memcpy(tx + tl + HECA_WIRE_HDR, w, PG);
				tl += HECA_WIRE_HDR + q.payload_len;
				sent++;
			}
			if (tl) {
				struct iovec iov = {tx, tl};
				ASSERT_EQ(heca__send_all(fd, &iov, 1), 0);
			}
			r = recv(fd, rx + have, rxcap - have, 0);
			ASSERT_TRUE(r > 0);
			have += (size_t)r;
			for (;;) {
				struct heca_frame f;
				int k = heca_wire_decode(rx + off, have - off, &f);
				if (k == -EAGAIN)
					break;
				ASSERT_TRUE(k > 0);
				ASSERT_EQ(f.req_id, got);
				ASSERT_EQ(f.status, 0);
				if (pass && got == n - 1)
					ASSERT_TRUE(!memcmp(f.payload, w, PG));
				got++;
				off += (size_t)k;
			}
			memmove(rx, rx + off, have - off);
			have -= off;
		}
		ms[pass] = t_now_ms() - t0;
	}
	printf("pipelined 4 KiB pages, %u in flight: write %.0f pages/s, read %.0f pages/s\n",
	       window, n / (ms[0] / 1e3), n / (ms[1] / 1e3));
	rpc(fd, HECA_OP_FREE, 1, 0, 0, NULL, 0, 0);
	close(fd);
	free(tx);
	free(rx);
}

/* CLONE, DISCARD, RESIZE and DROPALL as hecad answers them. */
static void test_new_ops(const struct t_sponsor *s)
{
	int a = cl_hello(s, 20, 0, 0), b;
	uint8_t dst[16] = {21};
	struct heca_frame f;
	uint64_t st[5];

	rpc(a, HECA_OP_ALLOC, 1, 64, 0, NULL, 0, 0);
	fill(w, 8, 30);
	rpc(a, HECA_OP_WRITE, 1, 0, 8, w, 8 * PG, 0);
	f = rpc(a, HECA_OP_CLONE, 0, 0, 0, dst, sizeof(dst), 0);
	ASSERT_EQ(f.page, 8);
	rpc(a, HECA_OP_CLONE, 0, 0, 0, dst, sizeof(dst), EEXIST);
	dst[0] = 20;
	rpc(a, HECA_OP_CLONE, 0, 0, 0, dst, sizeof(dst), EINVAL);

	/* The copy: same content, then independent of A's DISCARD. */
	b = cl_hello(s, 21, 0, 0);
	f = rpc(a, HECA_OP_DISCARD, 1, 2, 4, NULL, 0, 0);
	ASSERT_EQ(f.page, 4);
	f = rpc(b, HECA_OP_READ, 1, 0, 8, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(f.payload, w, 8 * PG));
	rpc(a, HECA_OP_READ, 1, 2, 1, NULL, 0, ENOENT);
	f = rpc(a, HECA_OP_READ, 1, 6, 2, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(f.payload, w + 6 * PG, 2 * PG));
	rpc(a, HECA_OP_DISCARD, 9, 0, 1, NULL, 0, ENOENT);

	/* RESIZE: shrinking frees, growing allows writes past the old end. */
	rpc(b, HECA_OP_RESIZE, 1, 4, 0, NULL, 0, 0);
	stat5(b, st);
	ASSERT_EQ(st[4], 4);
	rpc(b, HECA_OP_READ, 1, 4, 1, NULL, 0, EINVAL);
	rpc(b, HECA_OP_RESIZE, 1, 1000, 0, NULL, 0, 0);
	rpc(b, HECA_OP_WRITE, 1, 999, 1, w, PG, 0);
	f = rpc(b, HECA_OP_READ, 1, 999, 1, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(f.payload, w, PG));
	rpc(b, HECA_OP_RESIZE, 2, 10, 0, NULL, 0, ENOENT);

	/* DROPALL: every page of the demander, counted in the reply. */
	f = rpc(b, HECA_OP_DROPALL, 0, 0, 0, NULL, 0, 0);
	ASSERT_EQ(f.page, 5);
	f = rpc(a, HECA_OP_DROPALL, 0, 0, 0, NULL, 0, 0);
	ASSERT_EQ(f.page, 4);
	stat5(a, st);
	ASSERT_EQ(st[4], 0);
	rpc(a, HECA_OP_READ, 1, 0, 1, NULL, 0, ENOENT);
	close(a);
	close(b);
}

/* Poll STAT on fd until used pages reach want or ms pass. Returns the time it took, or -1. */
static double wait_used(int fd, uint64_t want, double ms)
{
	double t0 = t_now_ms();
	uint64_t st[5];

	for (;;) {
		stat5(fd, st);
		if (st[1] == want)
			return t_now_ms() - t0;
		if (t_now_ms() - t0 > ms)
			return -1;
		usleep(20 * 1000);
	}
}

/* A demander with pages and n connections that then all close. */
static void write_and_leave(const struct t_sponsor *s, uint8_t dem, uint32_t seed)
{
	int a = cl_hello(s, dem, 0, 0), a2 = cl_hello(s, dem, 0, 0);
	struct heca_frame f;

	rpc(a, HECA_OP_ALLOC, 1, 100, 0, NULL, 0, 0);
	fill(w, 16, seed);
	rpc(a, HECA_OP_WRITE, 1, 0, 16, w, 16 * PG, 0);
	f = rpc(a2, HECA_OP_READ, 1, 0, 16, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(f.payload, w, 16 * PG));
	close(a);
	close(a2);
}

static void test_lease(void)
{
	const char *lease1[] = {"--lease", "1", NULL};
	struct t_sponsor s;
	struct heca_frame f;
	uint64_t st[5];
	double t;
	int obs, a;

	/* --lease 1: the pages of a demander that closed everything go within about a second. */
	t_sponsor_start(&s, "1M", lease1);
	obs = cl_hello(&s, 2, 0, 0);
	write_and_leave(&s, 1, 40);
	stat5(obs, st);
	ASSERT_EQ(st[1], 16);
	ASSERT_EQ(st[3], 2);
	t = wait_used(obs, 0, 3000);
	if (t < 0)
		T_FAILF("pages of a closed demander still held 3 s after close with --lease 1");
	ASSERT_GE(t, 500); /* not before the lease */
	stat5(obs, st);
	ASSERT_EQ(st[2], 0);
	ASSERT_EQ(st[3], 1);
	a = cl_hello(&s, 1, 0, 0);
	rpc(a, HECA_OP_READ, 1, 0, 1, NULL, 0, ENOENT);
	close(a);

	/* Back within the lease: everything is still there, and stays. */
	write_and_leave(&s, 3, 41);
	usleep(300 * 1000);
	a = cl_hello(&s, 3, 0, 0);
	usleep(1500 * 1000);
	f = rpc(a, HECA_OP_READ, 1, 0, 16, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(f.payload, w, 16 * PG));
	stat5(obs, st);
	ASSERT_EQ(st[1], 16);
	close(a);
	ASSERT_GE(wait_used(obs, 0, 3000), 0);
	close(obs);
	ASSERT_EQ(t_sponsor_stop(&s, 0), 0);

	/* The default lease (30 s): still there after 2 s. */
	t_sponsor_start(&s, "1M", NULL);
	obs = cl_hello(&s, 2, 0, 0);
	write_and_leave(&s, 1, 42);
	usleep(2000 * 1000);
	stat5(obs, st);
	ASSERT_EQ(st[1], 16);
	a = cl_hello(&s, 1, 0, 0);
	f = rpc(a, HECA_OP_READ, 1, 0, 16, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(f.payload, w, 16 * PG));
	close(a);
	close(obs);
	ASSERT_EQ(t_sponsor_stop(&s, 0), 0);
}

static void test_cluster_id(void)
{
	const char *extra[] = {"--cluster-id", "0101010101010101010101010101010a", NULL};
	struct t_sponsor s;
	int fd;

	t_sponsor_start(&s, "1M", extra);
	fd = cl_hello(&s, 1, 0, EACCES);
	expect_closed(fd);
	close(fd);
	fd = cl_connect(&s);
	{
		uint8_t p[HECA_WIRE_HELLO_LEN] = {0};
		memset(p, 1, 15);
		p[15] = 0x0a;
		rpc(fd, HECA_OP_HELLO, 0, 0, 0, p, sizeof(p), 0);
	}
	close(fd);
	ASSERT_EQ(t_sponsor_stop(&s, 0), 0);
}

static void test_sigterm(void)
{
	struct t_sponsor s;
	int fd, st = -1;
	double t0;
	pid_t pid;

	t_sponsor_start(&s, "64M", NULL);
	fd = cl_hello(&s, 1, 0, 0); /* a connected, idle client must not hold shutdown up */
	pid = s.pid;
	kill(pid, SIGTERM);
	t0 = t_now_ms();
	while (t_now_ms() - t0 < 5000) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			break;
		usleep(10 * 1000);
	}
	if (st == -1) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		T_FAILF("hecad did not exit within 5 s of SIGTERM");
	}
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);
	s.pid = 0;
	close(fd);
}

static void test_cli(void)
{
	const char *help[] = {"--help", NULL};
	const char *bogus[] = {"--listen", "127.0.0.1:0", "--capacity", "bogus", NULL};
	const char *badflag[] = {"--listen", "127.0.0.1:0", "--capacity", "1M", "--nope", NULL};
	const char *badcl[] = {"--listen", "127.0.0.1:0", "--capacity", "1M", "--cluster-id",
			       "xyz", NULL};
	const char *badlease[][7] = {
		{"--listen", "127.0.0.1:0", "--capacity", "1M", "--lease", "-1", NULL},
		{"--listen", "127.0.0.1:0", "--capacity", "1M", "--lease", "1s", NULL},
		{"--listen", "127.0.0.1:0", "--capacity", "1M", "--lease", "", NULL},
		{"--listen", "127.0.0.1:0", "--capacity", "1M", "--lease", "1.2.3", NULL},
	};

	ASSERT_EQ(t_run_hecad(help), 0);
	ASSERT_EQ(t_run_hecad(bogus), 2);
	ASSERT_EQ(t_run_hecad(badflag), 2);
	ASSERT_EQ(t_run_hecad(badcl), 2);
	for (size_t i = 0; i < sizeof(badlease) / sizeof(badlease[0]); i++)
		ASSERT_EQ(t_run_hecad(badlease[i]), 2);
}

int main(void)
{
	struct t_sponsor s;

	signal(SIGPIPE, SIG_IGN);
	test_cli();
	t_sponsor_start(&s, "512M", NULL);
	test_store(&s);
	test_malformed(&s);
	test_stalled_client(&s);
	test_new_ops(&s);
	test_store(&s); /* still fine after all that */
	measure(&s);
	ASSERT_EQ(t_sponsor_stop(&s, 0), 0);
	test_capacity();
	test_lease();
	test_cluster_id();
	test_sigterm();
	printf("test_sponsor: ok\n");
	return T_PASS;
}
