// SPDX-License-Identifier: MIT
/*
 * test_sponsor_unit.c - sponsor request handling driven as a pure function over byte buffers:
 * every opcode, error statuses, truncated and garbage input, capacity and index edge cases,
 * the AUTH state machine of a sponsor with a cluster key, leases on a fake clock.
 */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "auth.h"
#include "harness.h"
#include "sponsor.h"
#include "util.h"
#include "wire.h"

#define PG HECA_WIRE_PAGE

static const uint8_t DEM_A[16] = {0xa};
static const uint8_t DEM_B[16] = {0xb};
static const uint8_t DEM_C[16] = {0xc};
static const uint8_t DEM_D[16] = {0xd};
static uint8_t pagebuf[HECA_WIRE_MAX_PAYLOAD];

/* Append one request frame to buf at *len. */
static void enc(uint8_t *buf, size_t *len, uint8_t op, uint64_t req, uint32_t seg, uint64_t page,
		uint32_t count, const void *payload, uint32_t plen)
{
	struct heca_frame f = {.opcode = op, .req_id = req, .segment = seg, .page = page,
			       .count = count, .payload = payload, .payload_len = plen};

	heca_wire_encode(buf + *len, &f);
	if (plen)
		memcpy(buf + *len + HECA_WIRE_HDR, payload, plen);
	*len += HECA_WIRE_HDR + plen;
}

static void fill(uint8_t *p, uint32_t npages, uint32_t seed)
{
	for (size_t i = 0; i < (size_t)npages * PG / 4; i++) {
		uint32_t v = seed * 2654435761u + (uint32_t)i * 40503u;
		memcpy(p + 4 * i, &v, 4);
	}
}

static struct sponsor_buf g_out;
static struct heca_frame g_rep[64];
static int g_nrep;

/* Feed buf whole; expect rc from sponsor_handle; decode the replies into g_rep. */
static long feed(struct sponsor *sp, struct sponsor_conn *c, const uint8_t *buf, size_t len)
{
	long rc = sponsor_handle(sp, c, buf, len, &g_out);
	size_t off = 0;

	g_nrep = 0;
	while (off < g_out.len) {
		int n = heca_wire_decode(g_out.data + off, g_out.len - off, &g_rep[g_nrep]);
		if (n <= 0)
			T_FAILF("sponsor sent an undecodable reply: %d", n);
		ASSERT_TRUE(g_nrep < 63);
		g_nrep++;
		off += (size_t)n;
	}
	ASSERT_EQ(sponsor_check(sp), 0);
	return rc;
}

/* Send one request, expect exactly one reply with opcode|REPLY and the given status; the
 * reply's page is not checked. */
static const struct heca_frame *call(struct sponsor *sp, struct sponsor_conn *c, uint8_t op,
				     uint32_t seg, uint64_t page, uint32_t count,
				     const void *payload, uint32_t plen, int status)
{
	static uint8_t buf[HECA_WIRE_HDR + HECA_WIRE_MAX_PAYLOAD];
	static uint64_t id = 100;
	size_t len = 0;
	long rc;

	g_out.len = 0;
	enc(buf, &len, op, ++id, seg, page, count, payload, plen);
	rc = feed(sp, c, buf, len);
	ASSERT_EQ(rc, (long)len);
	ASSERT_EQ(g_nrep, 1);
	ASSERT_EQ(g_rep[0].opcode, op | HECA_OP_REPLY);
	ASSERT_EQ(g_rep[0].req_id, id);
	ASSERT_EQ(g_rep[0].segment, seg);
	ASSERT_EQ(g_rep[0].count, count);
	if (g_rep[0].status != status)
		T_FAILF("%s seg %u page %llu count %u: status %d, want %d", heca_wire_opname(op),
			seg, (unsigned long long)page, count, g_rep[0].status, status);
	return &g_rep[0];
}

/* call(), and the reply's page must be the request's. */
static const struct heca_frame *req(struct sponsor *sp, struct sponsor_conn *c, uint8_t op,
				    uint32_t seg, uint64_t page, uint32_t count,
				    const void *payload, uint32_t plen, int status)
{
	const struct heca_frame *r = call(sp, c, op, seg, page, count, payload, plen, status);

	ASSERT_EQ(r->page, page);
	return r;
}

static void hello(struct sponsor *sp, struct sponsor_conn *c, const uint8_t dem[16])
{
	uint8_t p[HECA_WIRE_HELLO_LEN] = {0};
	const struct heca_frame *r;

	memcpy(p + 16, dem, 16);
	r = req(sp, c, HECA_OP_HELLO, 0, 0, 0, p, sizeof(p), 0);
	ASSERT_EQ(r->payload_len, HECA_WIRE_HELLO_REPLY_LEN);
}

static void do_stat(struct sponsor *sp, struct sponsor_conn *c, uint64_t v[5])
{
	const struct heca_frame *r = req(sp, c, HECA_OP_STAT, 0, 0, 0, NULL, 0, 0);

	ASSERT_EQ(r->payload_len, HECA_WIRE_STAT_LEN);
	for (int i = 0; i < 5; i++)
		v[i] = heca_get64(r->payload + 8 * i);
}

static void expect_error(long rc, int err)
{
	ASSERT_EQ(rc, -err);
	ASSERT_EQ(g_nrep, 1);
	ASSERT_EQ(g_rep[0].opcode, HECA_OP_ERROR);
	ASSERT_EQ(g_rep[0].status, err);
	ASSERT_EQ(g_rep[0].req_id, 0);
}

static struct sponsor *open_sp(uint64_t bytes)
{
	struct sponsor_config cfg = {.capacity = bytes};
	struct sponsor *sp;

	ASSERT_EQ(sponsor_open(&cfg, &sp), 0);
	return sp;
}

static void test_hello_rules(void)
{
	struct sponsor_config cfg = {.capacity = 64 * PG};
	uint8_t buf[4096], p[HECA_WIRE_HELLO_LEN] = {0}, id[16];
	struct sponsor_conn c;
	struct sponsor *sp;
	size_t len = 0;

	memset(cfg.cluster_id, 0x5c, 16);
	ASSERT_EQ(sponsor_open(&cfg, &sp), 0);
	sponsor_get_id(sp, id);

	/* Anything before HELLO: ERROR EPROTO. */
	sponsor_conn_init(&c);
	enc(buf, &len, HECA_OP_STAT, 1, 0, 0, 0, NULL, 0);
	g_out.len = 0;
	expect_error(feed(sp, &c, buf, len), EPROTO);
	sponsor_conn_exit(sp, &c);

	/* Wrong cluster id: HELLO reply EACCES and a disconnect. */
	sponsor_conn_init(&c);
	len = 0;
	memcpy(p + 16, DEM_A, 16);
	enc(buf, &len, HECA_OP_HELLO, 7, 0, 0, 0, p, sizeof(p));
	g_out.len = 0;
	ASSERT_EQ(feed(sp, &c, buf, len), -EACCES);
	ASSERT_EQ(g_nrep, 1);
	ASSERT_EQ(g_rep[0].opcode, HECA_OP_HELLO | HECA_OP_REPLY);
	ASSERT_EQ(g_rep[0].status, EACCES);
	ASSERT_EQ(g_rep[0].req_id, 7);
	sponsor_conn_exit(sp, &c);

	/* Right cluster id: sponsor id, capacity, used. */
	sponsor_conn_init(&c);
	len = 0;
	memset(p, 0x5c, 16);
	heca_put32(p + 32, HECA_CHAN_FAULT);
	enc(buf, &len, HECA_OP_HELLO, 8, 0, 0, 0, p, sizeof(p));
	g_out.len = 0;
	ASSERT_EQ(feed(sp, &c, buf, len), (long)len);
	ASSERT_EQ(g_nrep, 1);
	ASSERT_EQ(g_rep[0].status, 0);
	ASSERT_EQ(g_rep[0].payload_len, 72);
	ASSERT_TRUE(!memcmp(g_rep[0].payload, id, 16));
	ASSERT_EQ(heca_get64(g_rep[0].payload + 16), 64);
	ASSERT_EQ(heca_get64(g_rep[0].payload + 24), 0);
	/* No key: no AUTH flag, reserved and nonce zero. */
	ASSERT_EQ(heca_get32(g_rep[0].payload + 32), 0);
	ASSERT_EQ(heca_get32(g_rep[0].payload + 36), 0);
	for (int i = 40; i < 72; i++)
		ASSERT_EQ(g_rep[0].payload[i], 0);
	ASSERT_EQ(c.channel, HECA_CHAN_FAULT);
	ASSERT_EQ(c.state, SPONSOR_CONN_READY);

	/* AUTH to a sponsor without a key: EINVAL, and the connection goes on. */
	{
		uint8_t a[HECA_WIRE_AUTH_LEN] = {0};
		req(sp, &c, HECA_OP_AUTH, 0, 0, 0, a, sizeof(a), EINVAL);
		req(sp, &c, HECA_OP_STAT, 0, 0, 0, NULL, 0, 0);
	}

	/* A second HELLO on the same connection is a protocol error. */
	g_out.len = 0;
	expect_error(feed(sp, &c, buf, len), EPROTO);
	sponsor_conn_exit(sp, &c);
	sponsor_close(sp);
}

static void test_store(void)
{
	struct sponsor *sp = open_sp(64 * PG);
	struct sponsor_conn a, a2, b;
	static uint8_t w[64 * PG];
	const struct heca_frame *r;
	uint64_t st[5];

	sponsor_conn_init(&a);
	sponsor_conn_init(&a2);
	sponsor_conn_init(&b);
	hello(sp, &a, DEM_A);
	hello(sp, &b, DEM_B);
	hello(sp, &a2, DEM_A);

	/* Segment must exist; range must fit. */
	fill(w, 2, 1);
	req(sp, &a, HECA_OP_WRITE, 1, 0, 1, w, PG, ENOENT);
	req(sp, &a, HECA_OP_READ, 1, 0, 1, NULL, 0, ENOENT);
	req(sp, &a, HECA_OP_ALLOC, 1, 100, 0, NULL, 0, 0);
	req(sp, &a, HECA_OP_ALLOC, 1, 100, 0, NULL, 0, 0); /* idempotent */
	req(sp, &a, HECA_OP_WRITE, 1, 99, 2, w, 2 * PG, EINVAL);
	req(sp, &a, HECA_OP_WRITE, 1, 100, 1, w, PG, EINVAL);
	req(sp, &a, HECA_OP_WRITE, 1, UINT64_MAX, 1, w, PG, EINVAL);
	req(sp, &a, HECA_OP_READ, 1, UINT64_MAX - 1, 2, NULL, 0, EINVAL);
	req(sp, &a, HECA_OP_WRITE, 1, 99, 1, w, PG, 0); /* last page */

	/* Round trip, never-written pages, partially written ranges. */
	fill(w, 10, 2);
	req(sp, &a, HECA_OP_WRITE, 1, 0, 10, w, 10 * PG, 0);
	r = req(sp, &a, HECA_OP_READ, 1, 0, 10, NULL, 0, 0);
	ASSERT_EQ(r->payload_len, 10 * PG);
	ASSERT_TRUE(!memcmp(r->payload, w, 10 * PG));
	r = req(sp, &a2, HECA_OP_READ, 1, 3, 1, NULL, 0, 0); /* same demander, other conn */
	ASSERT_TRUE(!memcmp(r->payload, w + 3 * PG, PG));
	r = req(sp, &a, HECA_OP_READ, 1, 10, 1, NULL, 0, ENOENT);
	ASSERT_EQ(r->payload_len, 0);
	req(sp, &a, HECA_OP_READ, 1, 8, 4, NULL, 0, ENOENT);

	/* Isolation: demander B's segment 1 is not A's. */
	req(sp, &b, HECA_OP_READ, 1, 0, 1, NULL, 0, ENOENT);
	req(sp, &b, HECA_OP_ALLOC, 1, 100, 0, NULL, 0, 0);
	req(sp, &b, HECA_OP_READ, 1, 0, 1, NULL, 0, ENOENT);
	fill(w, 1, 3);
	req(sp, &b, HECA_OP_WRITE, 1, 0, 1, w, PG, 0);
	fill(w, 10, 2);
	r = req(sp, &a, HECA_OP_READ, 1, 0, 1, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(r->payload, w, PG));

	do_stat(sp, &a, st);
	ASSERT_EQ(st[0], 64);
	ASSERT_EQ(st[1], 12);
	ASSERT_EQ(st[2], 2);
	ASSERT_EQ(st[3], 2);
	ASSERT_EQ(st[4], 11);

	/* Overwrite costs no slot. */
	fill(w, 10, 4);
	req(sp, &a, HECA_OP_WRITE, 1, 0, 10, w, 10 * PG, 0);
	do_stat(sp, &a, st);
	ASSERT_EQ(st[1], 12);

	/* Capacity: 52 free slots. 53 new pages are refused whole; 52 fit. */
	req(sp, &a, HECA_OP_ALLOC, 2, 1000, 0, NULL, 0, 0);
	fill(w, 53, 5);
	req(sp, &a, HECA_OP_WRITE, 2, 0, 53, w, 53 * PG, ENOSPC);
	do_stat(sp, &a, st);
	ASSERT_EQ(st[1], 12);
	req(sp, &a, HECA_OP_READ, 2, 0, 1, NULL, 0, ENOENT);
	/* A mix of overwrites (9) and new pages (53) beyond capacity: refused whole too. */
	req(sp, &a, HECA_OP_WRITE, 1, 1, 62, w, 62 * PG, ENOSPC);
	fill(w, 10, 4);
	r = req(sp, &a, HECA_OP_READ, 1, 0, 10, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(r->payload, w, 10 * PG));
	fill(w, 52, 6);
	req(sp, &a, HECA_OP_WRITE, 2, 0, 52, w, 52 * PG, 0);
	do_stat(sp, &a, st);
	ASSERT_EQ(st[1], 64);
	req(sp, &a, HECA_OP_WRITE, 2, 52, 1, w, PG, ENOSPC);
	req(sp, &a, HECA_OP_WRITE, 2, 51, 1, w, PG, 0); /* overwrite when full */
	r = req(sp, &a, HECA_OP_READ, 2, 0, 52, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(r->payload, w, 51 * PG));
	ASSERT_TRUE(!memcmp(r->payload + 51 * PG, w, PG));

	/* FREE gives slots back; a freed segment is gone. */
	req(sp, &a, HECA_OP_FREE, 2, 0, 0, NULL, 0, 0);
	req(sp, &a, HECA_OP_FREE, 2, 0, 0, NULL, 0, ENOENT);
	req(sp, &a, HECA_OP_READ, 2, 0, 1, NULL, 0, ENOENT);
	do_stat(sp, &a, st);
	ASSERT_EQ(st[1], 12);
	ASSERT_EQ(st[2], 2);
	req(sp, &a, HECA_OP_ALLOC, 2, 1000, 0, NULL, 0, 0);
	fill(w, 52, 7);
	req(sp, &a, HECA_OP_WRITE, 2, 100, 52, w, 52 * PG, 0);
	r = req(sp, &a, HECA_OP_READ, 2, 100, 52, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(r->payload, w, 52 * PG));

	/* A demander that disconnects keeps its segments; demanders count until FREE. */
	sponsor_conn_exit(sp, &b);
	do_stat(sp, &a, st);
	ASSERT_EQ(st[3], 2);
	sponsor_conn_init(&b);
	hello(sp, &b, DEM_B);
	fill(w, 1, 3);
	r = req(sp, &b, HECA_OP_READ, 1, 0, 1, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(r->payload, w, PG));
	req(sp, &b, HECA_OP_FREE, 1, 0, 0, NULL, 0, 0);
	sponsor_conn_exit(sp, &b);
	do_stat(sp, &a, st);
	ASSERT_EQ(st[3], 1);
	ASSERT_EQ(st[4], 63);

	sponsor_conn_exit(sp, &a);
	sponsor_conn_exit(sp, &a2);
	sponsor_close(sp); /* with segments still held: must not leak */
}

static void test_echo_and_pipeline(void)
{
	struct sponsor *sp = open_sp(16 * PG);
	static uint8_t buf[8 << 20];
	struct sponsor_conn c;
	const struct heca_frame *r;
	size_t len = 0;
	long rc;

	sponsor_conn_init(&c);
	hello(sp, &c, DEM_A);
	req(sp, &c, HECA_OP_ECHO, 9, 9, 9, NULL, 0, 0);
	fill(pagebuf, HECA_WIRE_MAX_PAGES, 8);
	r = req(sp, &c, HECA_OP_ECHO, 0, 0, 0, pagebuf, 1000, 0);
	ASSERT_EQ(r->payload_len, 1000);
	ASSERT_TRUE(!memcmp(r->payload, pagebuf, 1000));
	r = req(sp, &c, HECA_OP_ECHO, 0, 0, 0, pagebuf, HECA_WIRE_MAX_PAYLOAD, 0);
	ASSERT_EQ(r->payload_len, HECA_WIRE_MAX_PAYLOAD);
	ASSERT_TRUE(!memcmp(r->payload, pagebuf, HECA_WIRE_MAX_PAYLOAD));

	/* Pipelined frames: replies in request order; a partial tail is left unconsumed. */
	enc(buf, &len, HECA_OP_ALLOC, 1, 5, 4, 0, NULL, 0);
	enc(buf, &len, HECA_OP_WRITE, 2, 5, 0, 4, pagebuf, 4 * PG);
	enc(buf, &len, HECA_OP_READ, 3, 5, 1, 2, NULL, 0);
	enc(buf, &len, HECA_OP_STAT, 4, 0, 0, 0, NULL, 0);
	enc(buf, &len, HECA_OP_ECHO, 5, 0, 0, 0, pagebuf, 10);
	g_out.len = 0;
	rc = feed(sp, &c, buf, len - 1);
	ASSERT_EQ(rc, (long)(len - HECA_WIRE_HDR - 10));
	ASSERT_EQ(g_nrep, 4);
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(g_rep[i].req_id, i + 1);
	ASSERT_TRUE(!memcmp(g_rep[2].payload, pagebuf + PG, 2 * PG));

	/* Truncated input byte by byte: nothing consumed until the frame is whole. */
	len = 0;
	enc(buf, &len, HECA_OP_WRITE, 6, 5, 3, 1, pagebuf, PG);
	for (size_t k = 0; k < len; k++) {
		g_out.len = 0;
		ASSERT_EQ(feed(sp, &c, buf, k), 0);
		ASSERT_EQ(g_nrep, 0);
	}
	g_out.len = 0;
	ASSERT_EQ(feed(sp, &c, buf, len), (long)len);
	ASSERT_EQ(g_rep[0].status, 0);

	/* Truncated input right before a guard page: no over-read. */
	{
		long ps = sysconf(_SC_PAGESIZE);
		uint8_t *m = mmap(NULL, (size_t)ps * 4, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		ASSERT_TRUE(m != MAP_FAILED);
		ASSERT_EQ(mprotect(m + 3 * ps, (size_t)ps, PROT_NONE), 0);
		for (size_t k = 0; k < (size_t)HECA_WIRE_HDR + 100; k++) {
			uint8_t *at = m + 3 * ps - k;
			memcpy(at, buf, HECA_MIN(k, len));
			g_out.len = 0;
			ASSERT_EQ(sponsor_handle(sp, &c, at, k, &g_out), 0);
		}
		munmap(m, (size_t)ps * 4);
	}

	/* Reply output is bounded: 8 x 1 MiB READs stop after ~4 MiB, the rest is left. */
	sponsor_conn_exit(sp, &c);
	sponsor_close(sp);
	sp = open_sp(HECA_WIRE_MAX_PAGES * PG);
	sponsor_conn_init(&c);
	hello(sp, &c, DEM_A);
	req(sp, &c, HECA_OP_ALLOC, 1, HECA_WIRE_MAX_PAGES, 0, NULL, 0, 0);
	req(sp, &c, HECA_OP_WRITE, 1, 0, HECA_WIRE_MAX_PAGES, pagebuf, HECA_WIRE_MAX_PAYLOAD, 0);
	len = 0;
	for (int i = 0; i < 8; i++)
		enc(buf, &len, HECA_OP_READ, 10 + (uint64_t)i, 1, 0, HECA_WIRE_MAX_PAGES, NULL, 0);
	{
		size_t off = 0;
		int got = 0;
		while (off < len) {
			g_out.len = 0;
			rc = feed(sp, &c, buf + off, len - off);
			ASSERT_TRUE(rc > 0);
			ASSERT_LE(g_out.len, SPONSOR_OUT_SOFT_MAX + HECA_WIRE_HDR +
						     HECA_WIRE_MAX_PAYLOAD);
			ASSERT_TRUE(g_nrep < 8);
			for (int i = 0; i < g_nrep; i++) {
				ASSERT_EQ(g_rep[i].req_id, 10 + (uint64_t)got++);
				ASSERT_TRUE(!memcmp(g_rep[i].payload, pagebuf,
						    HECA_WIRE_MAX_PAYLOAD));
			}
			off += (size_t)rc;
		}
		ASSERT_EQ(got, 8);
	}
	sponsor_conn_exit(sp, &c);
	sponsor_close(sp);
}

static void test_garbage(void)
{
	struct sponsor *sp = open_sp(16 * PG);
	uint8_t buf[16384], junk[200];
	struct sponsor_conn c;
	size_t len;

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 37 + 11);

	struct {
		const char *what;
		int err;
	} cases[] = {
		{"garbage", EPROTO},      {"bad payload crc", EBADMSG}, {"reply opcode", EPROTO},
		{"error opcode", EPROTO}, {"unknown opcode", EPROTO},   {"bad magic", EPROTO},
	};
	for (size_t k = 0; k < HECA_ARRAY_SIZE(cases); k++) {
		sponsor_conn_init(&c);
		hello(sp, &c, DEM_A);
		req(sp, &c, HECA_OP_ALLOC, 1, 10, 0, NULL, 0, 0);
		len = 0;
		/* A good frame first: its reply must come before the ERROR frame. */
		enc(buf, &len, HECA_OP_STAT, 1, 0, 0, 0, NULL, 0);
		switch (k) {
		case 0: memcpy(buf + len, junk, sizeof(junk)); len += sizeof(junk); break;
		case 1:
			enc(buf, &len, HECA_OP_WRITE, 2, 1, 0, 1, pagebuf, PG);
			buf[len - 1] ^= 1;
			break;
		case 2: {
			struct heca_frame f = {.opcode = HECA_OP_STAT | HECA_OP_REPLY};
			heca_wire_encode(buf + len, &f);
			len += HECA_WIRE_HDR;
			break;
		}
		case 3: {
			struct heca_frame f = {.opcode = HECA_OP_ERROR, .status = EIO};
			heca_wire_encode(buf + len, &f);
			len += HECA_WIRE_HDR;
			break;
		}
		case 4: {
			struct heca_frame f = {.opcode = 0x42};
			heca_wire_encode(buf + len, &f);
			len += HECA_WIRE_HDR;
			break;
		}
		case 5:
			enc(buf, &len, HECA_OP_STAT, 2, 0, 0, 0, NULL, 0);
			buf[len - HECA_WIRE_HDR] ^= 0xff;
			break;
		}
		/* A following good frame must not be served. */
		enc(buf, &len, HECA_OP_STAT, 3, 0, 0, 0, NULL, 0);
		g_out.len = 0;
		long rc = feed(sp, &c, buf, len);
		if (rc != -cases[k].err)
			T_FAILF("%s: rc %ld", cases[k].what, rc);
		ASSERT_EQ(g_nrep, 2);
		ASSERT_EQ(g_rep[0].req_id, 1);
		ASSERT_EQ(g_rep[1].opcode, HECA_OP_ERROR);
		ASSERT_EQ(g_rep[1].status, cases[k].err);
		sponsor_conn_exit(sp, &c);
	}
	sponsor_close(sp);
}

static void test_index_and_slabs(void)
{
	struct sponsor *sp = open_sp(3 * SPONSOR_SLAB_PAGES * PG + 5 * PG);
	struct sponsor_conn c;
	const struct heca_frame *r;
	struct sponsor_stats ss;
	uint64_t far[] = {0, 511, 512, 262143, 262144, 1ull << 40, (1ull << 62) + 12345,
			  UINT64_MAX - 1};

	sponsor_conn_init(&c);
	hello(sp, &c, DEM_A);

	/* A huge declared size costs nothing up front; pages anywhere in it work. */
	req(sp, &c, HECA_OP_ALLOC, 7, UINT64_MAX, 0, NULL, 0, 0);
	for (size_t i = 0; i < HECA_ARRAY_SIZE(far); i++) {
		fill(pagebuf, 1, (uint32_t)i + 100);
		req(sp, &c, HECA_OP_WRITE, 7, far[i], 1, pagebuf, PG, 0);
	}
	for (size_t i = 0; i < HECA_ARRAY_SIZE(far); i++) {
		fill(pagebuf, 1, (uint32_t)i + 100);
		r = req(sp, &c, HECA_OP_READ, 7, far[i], 1, NULL, 0, 0);
		ASSERT_TRUE(!memcmp(r->payload, pagebuf, PG));
	}
	req(sp, &c, HECA_OP_READ, 7, 1ull << 41, 1, NULL, 0, ENOENT);

	/* Growing a segment keeps its pages (the index gains levels above the old root). */
	req(sp, &c, HECA_OP_ALLOC, 8, 10, 0, NULL, 0, 0);
	fill(pagebuf, 10, 55);
	req(sp, &c, HECA_OP_WRITE, 8, 0, 10, pagebuf, 10 * PG, 0);
	req(sp, &c, HECA_OP_ALLOC, 8, 5, 0, NULL, 0, 0); /* never shrinks */
	req(sp, &c, HECA_OP_WRITE, 8, 9, 1, pagebuf + 9 * PG, PG, 0);
	req(sp, &c, HECA_OP_ALLOC, 8, 1ull << 36, 0, NULL, 0, 0);
	r = req(sp, &c, HECA_OP_READ, 8, 0, 10, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(r->payload, pagebuf, 10 * PG));
	req(sp, &c, HECA_OP_WRITE, 8, (1ull << 36) - 1, 1, pagebuf, PG, 0);

	/* Reads and writes across leaf boundaries (512 pages per leaf). */
	req(sp, &c, HECA_OP_ALLOC, 9, 2048, 0, NULL, 0, 0);
	fill(pagebuf, 256, 77);
	req(sp, &c, HECA_OP_WRITE, 9, 400, 256, pagebuf, 256 * PG, 0);
	r = req(sp, &c, HECA_OP_READ, 9, 400, 256, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(r->payload, pagebuf, 256 * PG));
	r = req(sp, &c, HECA_OP_READ, 9, 500, 100, NULL, 0, 0);
	ASSERT_TRUE(!memcmp(r->payload, pagebuf + 100 * PG, 100 * PG));
	req(sp, &c, HECA_OP_READ, 9, 600, 100, NULL, 0, ENOENT);

	/* Fill all slabs (incl. the short last one), free, refill: slabs are reused. */
	req(sp, &c, HECA_OP_FREE, 7, 0, 0, NULL, 0, 0);
	req(sp, &c, HECA_OP_FREE, 8, 0, 0, NULL, 0, 0);
	req(sp, &c, HECA_OP_FREE, 9, 0, 0, NULL, 0, 0);
	for (int round = 0; round < 3; round++) {
		uint64_t cap = 3 * SPONSOR_SLAB_PAGES + 5;
		req(sp, &c, HECA_OP_ALLOC, 1, cap + 10, 0, NULL, 0, 0);
		for (uint64_t p = 0; p < cap; p += 256) {
			uint32_t n = (uint32_t)HECA_MIN(256, cap - p);
			fill(pagebuf, n, (uint32_t)(p + (uint64_t)round));
			req(sp, &c, HECA_OP_WRITE, 1, p, n, pagebuf, n * PG, 0);
		}
		req(sp, &c, HECA_OP_WRITE, 1, cap, 1, pagebuf, PG, ENOSPC);
		for (uint64_t p = 0; p < cap; p += 256) {
			uint32_t n = (uint32_t)HECA_MIN(256, cap - p);
			fill(pagebuf, n, (uint32_t)(p + (uint64_t)round));
			r = req(sp, &c, HECA_OP_READ, 1, p, n, NULL, 0, 0);
			ASSERT_TRUE(!memcmp(r->payload, pagebuf, (size_t)n * PG));
		}
		sponsor_get_stats(sp, &ss);
		ASSERT_EQ(ss.used_pages, cap);
		ASSERT_EQ(ss.slabs, 4);
		req(sp, &c, HECA_OP_FREE, 1, 0, 0, NULL, 0, 0);
		sponsor_get_stats(sp, &ss);
		ASSERT_EQ(ss.used_pages, 0);
	}

	/* Many segments: the per-demander table grows. */
	for (uint32_t s = 0; s < 1000; s++)
		req(sp, &c, HECA_OP_ALLOC, s * 7919, 4, 0, NULL, 0, 0);
	for (uint32_t s = 0; s < 1000; s += 3) {
		fill(pagebuf, 1, s);
		req(sp, &c, HECA_OP_WRITE, s * 7919, 3, 1, pagebuf, PG, 0);
	}
	for (uint32_t s = 0; s < 1000; s += 3) {
		fill(pagebuf, 1, s);
		r = req(sp, &c, HECA_OP_READ, s * 7919, 3, 1, NULL, 0, 0);
		ASSERT_TRUE(!memcmp(r->payload, pagebuf, PG));
	}
	sponsor_get_stats(sp, &ss);
	ASSERT_EQ(ss.segments, 1000);
	sponsor_conn_exit(sp, &c);
	sponsor_close(sp);
}

/* HELLO as dem to a keyed sponsor; returns the server nonce from the reply in snonce. */
static void hello_keyed(struct sponsor *sp, struct sponsor_conn *c, const uint8_t cluster[16],
			const uint8_t dem[16], uint8_t snonce[32])
{
	uint8_t p[HECA_WIRE_HELLO_LEN] = {0};
	const struct heca_frame *r;

	memcpy(p, cluster, 16);
	memcpy(p + 16, dem, 16);
	r = req(sp, c, HECA_OP_HELLO, 0, 0, 0, p, sizeof(p), 0);
	ASSERT_EQ(r->payload_len, HECA_WIRE_HELLO_REPLY_LEN);
	ASSERT_EQ(heca_get32(r->payload + HECA_HELLO_REPLY_OFF_FLAGS), HECA_HELLO_AUTH);
	memcpy(snonce, r->payload + HECA_HELLO_REPLY_OFF_NONCE, 32);
	ASSERT_EQ(c->state, SPONSOR_CONN_AUTH);
}

/* Build an AUTH payload (cnonce, mac with key) into a. */
static void auth_payload(uint8_t a[64], const uint8_t *key, size_t keylen,
			 const uint8_t cluster[16], const uint8_t dem[16], const uint8_t sid[16],
			 const uint8_t snonce[32])
{
	ASSERT_EQ(heca__random(a, 32), 0);
	ASSERT_EQ(heca__auth_mac(key, keylen, HECA_AUTH_LABEL_DEMANDER, cluster, dem, sid, snonce,
				 a, a + 32),
		  0);
}

static void test_auth_rules(void)
{
	uint8_t key[40], bad[40], cl[16], sid[16], got[16], sn[32], sn2[32], a[64], m2[32];
	struct sponsor_config cfg = {.capacity = 16 * PG, .key = key, .keylen = sizeof(key),
				     .has_id = 1};
	struct sponsor_stats ss;
	struct sponsor_conn c;
	struct sponsor *sp;
	const struct heca_frame *r;
	uint8_t buf[1024];
	size_t len;

	for (int i = 0; i < 40; i++) {
		key[i] = (uint8_t)(i * 7 + 1);
		bad[i] = key[i] ^ (i == 39);
	}
	memset(cl, 0x77, 16);
	memset(sid, 0x5d, 16);
	memcpy(cfg.cluster_id, cl, 16);
	memcpy(cfg.sponsor_id, sid, 16);

	/* Key lengths outside 32..128 bytes are refused. */
	cfg.keylen = 31;
	ASSERT_EQ(sponsor_open(&cfg, &sp), -EINVAL);
	cfg.keylen = HECA_AUTH_KEY_MAX + 1;
	ASSERT_EQ(sponsor_open(&cfg, &sp), -EINVAL);
	cfg.keylen = sizeof(key);
	ASSERT_EQ(sponsor_open(&cfg, &sp), 0);
	sponsor_get_id(sp, got);
	ASSERT_TRUE(!memcmp(got, sid, 16)); /* the id given, not a random one */

	/* AUTH before HELLO: EPROTO, like anything else. */
	sponsor_conn_init(&c);
	len = 0;
	memset(a, 0, sizeof(a));
	enc(buf, &len, HECA_OP_AUTH, 1, 0, 0, 0, a, sizeof(a));
	g_out.len = 0;
	expect_error(feed(sp, &c, buf, len), EPROTO);
	sponsor_conn_exit(sp, &c);

	/* Requests after HELLO but before AUTH: ERROR EACCES, and nothing was created. */
	sponsor_conn_init(&c);
	hello_keyed(sp, &c, cl, DEM_A, sn);
	len = 0;
	enc(buf, &len, HECA_OP_STAT, 2, 0, 0, 0, NULL, 0);
	g_out.len = 0;
	expect_error(feed(sp, &c, buf, len), EACCES);
	sponsor_get_stats(sp, &ss);
	ASSERT_EQ(ss.demanders, 0);
	sponsor_conn_exit(sp, &c);

	/* A second HELLO while waiting for AUTH: EPROTO. */
	sponsor_conn_init(&c);
	hello_keyed(sp, &c, cl, DEM_A, sn);
	{
		uint8_t p[HECA_WIRE_HELLO_LEN] = {0};
		memcpy(p, cl, 16);
		len = 0;
		enc(buf, &len, HECA_OP_HELLO, 3, 0, 0, 0, p, sizeof(p));
		g_out.len = 0;
		expect_error(feed(sp, &c, buf, len), EPROTO);
	}
	sponsor_conn_exit(sp, &c);

	/* Wrong key: AUTH reply EACCES, and the connection is to be closed. */
	sponsor_conn_init(&c);
	hello_keyed(sp, &c, cl, DEM_A, sn);
	auth_payload(a, bad, sizeof(bad), cl, DEM_A, sid, sn);
	len = 0;
	enc(buf, &len, HECA_OP_AUTH, 4, 0, 0, 0, a, sizeof(a));
	g_out.len = 0;
	ASSERT_EQ(feed(sp, &c, buf, len), -EACCES);
	ASSERT_EQ(g_nrep, 1);
	ASSERT_EQ(g_rep[0].opcode, HECA_OP_AUTH | HECA_OP_REPLY);
	ASSERT_EQ(g_rep[0].status, EACCES);
	ASSERT_EQ(g_rep[0].payload_len, 0);
	sponsor_conn_exit(sp, &c);

	/* The right key but another demander's id, or a stale nonce: EACCES. */
	sponsor_conn_init(&c);
	hello_keyed(sp, &c, cl, DEM_A, sn2);
	auth_payload(a, key, sizeof(key), cl, DEM_B, sid, sn2);
	len = 0;
	enc(buf, &len, HECA_OP_AUTH, 5, 0, 0, 0, a, sizeof(a));
	g_out.len = 0;
	ASSERT_EQ(feed(sp, &c, buf, len), -EACCES);
	sponsor_conn_exit(sp, &c);
	sponsor_conn_init(&c);
	hello_keyed(sp, &c, cl, DEM_A, sn2);
	ASSERT_TRUE(memcmp(sn, sn2, 32)); /* fresh per connection */
	auth_payload(a, key, sizeof(key), cl, DEM_A, sid, sn);
	len = 0;
	enc(buf, &len, HECA_OP_AUTH, 6, 0, 0, 0, a, sizeof(a));
	g_out.len = 0;
	ASSERT_EQ(feed(sp, &c, buf, len), -EACCES);
	sponsor_conn_exit(sp, &c);

	/* The right key: mac2 proves the sponsor holds it too; then requests are served. */
	sponsor_conn_init(&c);
	hello_keyed(sp, &c, cl, DEM_A, sn);
	auth_payload(a, key, sizeof(key), cl, DEM_A, sid, sn);
	r = req(sp, &c, HECA_OP_AUTH, 0, 0, 0, a, sizeof(a), 0);
	ASSERT_EQ(r->payload_len, HECA_WIRE_AUTH_REPLY_LEN);
	ASSERT_EQ(heca__auth_mac(key, sizeof(key), HECA_AUTH_LABEL_SPONSOR, cl, DEM_A, sid, sn, a,
				 m2),
		  0);
	ASSERT_EQ(heca__auth_check(m2, r->payload), 0);
	ASSERT_EQ(heca__auth_mac(bad, sizeof(bad), HECA_AUTH_LABEL_SPONSOR, cl, DEM_A, sid, sn, a,
				 m2),
		  0);
	ASSERT_EQ(heca__auth_check(m2, r->payload), -EACCES);
	ASSERT_EQ(c.state, SPONSOR_CONN_READY);
	req(sp, &c, HECA_OP_ALLOC, 1, 4, 0, NULL, 0, 0);
	fill(pagebuf, 1, 3);
	req(sp, &c, HECA_OP_WRITE, 1, 0, 1, pagebuf, PG, 0);
	sponsor_get_stats(sp, &ss);
	ASSERT_EQ(ss.demanders, 1);
	ASSERT_EQ(ss.used_pages, 1);

	/* A second AUTH is out of place. */
	len = 0;
	enc(buf, &len, HECA_OP_AUTH, 7, 0, 0, 0, a, sizeof(a));
	g_out.len = 0;
	expect_error(feed(sp, &c, buf, len), EPROTO);
	sponsor_conn_exit(sp, &c);

	/* Wrong cluster id is still refused at HELLO. */
	sponsor_conn_init(&c);
	{
		uint8_t p[HECA_WIRE_HELLO_LEN] = {0};
		len = 0;
		enc(buf, &len, HECA_OP_HELLO, 8, 0, 0, 0, p, sizeof(p));
		g_out.len = 0;
		ASSERT_EQ(feed(sp, &c, buf, len), -EACCES);
		ASSERT_EQ(g_rep[0].opcode, HECA_OP_HELLO | HECA_OP_REPLY);
		ASSERT_EQ(g_rep[0].status, EACCES);
	}
	sponsor_conn_exit(sp, &c);
	sponsor_close(sp);
}

static void test_open_limits(void)
{
	struct sponsor_config cfg = {.capacity = (SPONSOR_MAX_CAPACITY_PAGES + 1) * PG};
	struct sponsor *sp = NULL;

	ASSERT_EQ(sponsor_open(&cfg, &sp), -EINVAL);
	sponsor_close(NULL);
	/* Zero capacity: everything is ENOSPC, nothing crashes. */
	sp = open_sp(100); /* < one page */
	struct sponsor_conn c;
	sponsor_conn_init(&c);
	hello(sp, &c, DEM_A);
	req(sp, &c, HECA_OP_ALLOC, 1, 10, 0, NULL, 0, 0);
	req(sp, &c, HECA_OP_WRITE, 1, 0, 1, pagebuf, PG, ENOSPC);
	sponsor_conn_exit(sp, &c);
	sponsor_close(sp);
}

/* ---- CLONE, DISCARD, RESIZE, DROPALL, leases ------------------------------------------- */

static uint64_t g_now; /* the fake clock of the sponsors below */

static uint64_t fake_clock(void)
{
	return g_now;
}

static struct {
	int n;
	uint8_t id[8][16];
	uint64_t pages[8];
} g_expired;

static void on_expired(void *arg, const uint8_t dem[16], uint64_t pages)
{
	ASSERT_TRUE(arg == &g_expired);
	ASSERT_TRUE(g_expired.n < 8);
	memcpy(g_expired.id[g_expired.n], dem, 16);
	g_expired.pages[g_expired.n++] = pages;
}

static struct sponsor *open_fake(uint64_t bytes)
{
	struct sponsor_config cfg = {.capacity = bytes,
				     .clock_ns = fake_clock,
				     .expired = on_expired,
				     .expired_arg = &g_expired};
	struct sponsor *sp;

	ASSERT_EQ(sponsor_open(&cfg, &sp), 0);
	g_expired.n = 0;
	return sp;
}

static void hello_session(struct sponsor *sp, struct sponsor_conn *c, const uint8_t dem[16],
			  uint32_t session)
{
	uint8_t p[HECA_WIRE_HELLO_LEN] = {0};

	memcpy(p + 16, dem, 16);
	heca_put32(p + 36, session);
	req(sp, c, HECA_OP_HELLO, 0, 0, 0, p, sizeof(p), 0);
}

/* Page `page` as written with seed: its bytes depend on both. */
static void page_fill(uint8_t *p, uint64_t page, uint32_t seed)
{
	fill(p, 1, seed * 7919u + (uint32_t)page * 104729u + (uint32_t)(page >> 32));
}

/* WRITE pages [first, first + n) with page_fill(seed), up to 256 at a time. */
static void write_pages(struct sponsor *sp, struct sponsor_conn *c, uint32_t seg, uint64_t first,
			uint64_t n, uint32_t seed)
{
	for (uint64_t done = 0; done < n;) {
		uint32_t k = (uint32_t)HECA_MIN(n - done, HECA_WIRE_MAX_PAGES);

		for (uint32_t i = 0; i < k; i++)
			page_fill(pagebuf + (size_t)i * PG, first + done + i, seed);
		req(sp, c, HECA_OP_WRITE, seg, first + done, k, pagebuf, k * PG, 0);
		done += k;
	}
}

/* READ pages [first, first + n) and compare them with page_fill(seed). */
static void expect_pages(struct sponsor *sp, struct sponsor_conn *c, uint32_t seg, uint64_t first,
			 uint64_t n, uint32_t seed)
{
	static uint8_t want[PG];

	for (uint64_t done = 0; done < n;) {
		uint32_t k = (uint32_t)HECA_MIN(n - done, HECA_WIRE_MAX_PAGES);
		const struct heca_frame *r =
		    req(sp, c, HECA_OP_READ, seg, first + done, k, NULL, 0, 0);

		ASSERT_EQ(r->payload_len, k * PG);
		for (uint32_t i = 0; i < k; i++) {
			page_fill(want, first + done + i, seed);
			if (memcmp(r->payload + (size_t)i * PG, want, PG))
				T_FAILF("segment %u page %llu: wrong content", seg,
					(unsigned long long)(first + done + i));
		}
		done += k;
	}
}

/* The page reads like a page never written: ENOENT and no payload. */
static void expect_absent(struct sponsor *sp, struct sponsor_conn *c, uint32_t seg, uint64_t page)
{
	const struct heca_frame *r = req(sp, c, HECA_OP_READ, seg, page, 1, NULL, 0, ENOENT);

	ASSERT_EQ(r->payload_len, 0);
}

static uint64_t clone_to(struct sponsor *sp, struct sponsor_conn *c, const uint8_t dst[16],
			 int status)
{
	return call(sp, c, HECA_OP_CLONE, 0, 0, 0, dst, HECA_WIRE_CLONE_LEN, status)->page;
}

static uint64_t discard(struct sponsor *sp, struct sponsor_conn *c, uint32_t seg, uint64_t page,
			uint32_t count, int status)
{
	return call(sp, c, HECA_OP_DISCARD, seg, page, count, NULL, 0, status)->page;
}

static uint64_t dropall(struct sponsor *sp, struct sponsor_conn *c, int status)
{
	return call(sp, c, HECA_OP_DROPALL, 0, 0, 0, NULL, 0, status)->page;
}

static struct sponsor_stats stats(struct sponsor *sp)
{
	struct sponsor_stats ss;

	sponsor_get_stats(sp, &ss);
	return ss;
}

static void test_clone(void)
{
	struct sponsor *sp = open_fake(64 * PG);
	struct sponsor_conn a, b, c, d;
	struct sponsor_stats ss, before;
	uint64_t st[5], mine, nd;

	sponsor_conn_init(&a);
	sponsor_conn_init(&b);
	sponsor_conn_init(&c);
	sponsor_conn_init(&d);
	hello(sp, &a, DEM_A);

	/* Nothing to copy: it works and leaves no record behind. */
	ASSERT_EQ(clone_to(sp, &a, DEM_B, 0), 0);
	ASSERT_EQ(stats(sp).demanders, 1);

	/* Three segments: a small one, a deep one (5 index levels), an empty one. */
	req(sp, &a, HECA_OP_ALLOC, 1, 100, 0, NULL, 0, 0);
	req(sp, &a, HECA_OP_ALLOC, 2, 1ull << 40, 0, NULL, 0, 0);
	req(sp, &a, HECA_OP_ALLOC, 3, 8, 0, NULL, 0, 0);
	write_pages(sp, &a, 1, 0, 10, 1);
	write_pages(sp, &a, 2, 5, 1, 2);
	write_pages(sp, &a, 2, (1ull << 39) + 3, 1, 3);
	ASSERT_EQ(clone_to(sp, &a, DEM_B, 0), 12);
	ss = stats(sp);
	ASSERT_EQ(ss.used_pages, 24);
	ASSERT_EQ(ss.segments, 6);
	ASSERT_EQ(ss.demanders, 2);

	/* B finds the same segments, sizes and contents. */
	hello(sp, &b, DEM_B);
	do_stat(sp, &b, st);
	ASSERT_EQ(st[4], 12);
	expect_pages(sp, &b, 1, 0, 10, 1);
	expect_pages(sp, &b, 2, 5, 1, 2);
	expect_pages(sp, &b, 2, (1ull << 39) + 3, 1, 3);
	expect_absent(sp, &b, 1, 10);
	expect_absent(sp, &b, 3, 0);
	req(sp, &b, HECA_OP_WRITE, 1, 100, 1, pagebuf, PG, EINVAL);
	req(sp, &b, HECA_OP_WRITE, 3, 8, 1, pagebuf, PG, EINVAL);
	req(sp, &b, HECA_OP_WRITE, 2, 1ull << 40, 1, pagebuf, PG, EINVAL);
	write_pages(sp, &b, 2, (1ull << 40) - 1, 1, 4);
	write_pages(sp, &b, 3, 7, 1, 4);

	/* Independent copies: writes and frees on either side leave the other alone. */
	write_pages(sp, &a, 1, 0, 1, 5);
	write_pages(sp, &b, 1, 1, 1, 6);
	expect_pages(sp, &a, 1, 0, 1, 5);
	expect_pages(sp, &a, 1, 1, 9, 1);
	expect_pages(sp, &b, 1, 0, 1, 1);
	expect_pages(sp, &b, 1, 1, 1, 6);
	expect_pages(sp, &b, 1, 2, 8, 1);
	req(sp, &a, HECA_OP_FREE, 2, 0, 0, NULL, 0, 0);
	expect_pages(sp, &b, 2, 5, 1, 2);
	expect_pages(sp, &b, 2, (1ull << 39) + 3, 1, 3);
	ASSERT_EQ(discard(sp, &b, 1, 0, 10, 0), 10);
	expect_pages(sp, &a, 1, 0, 1, 5);
	expect_pages(sp, &a, 1, 1, 9, 1);
	expect_absent(sp, &a, 3, 7);

	/* To itself: EINVAL; to a demander holding a segment: EEXIST. Nothing changes. */
	before = stats(sp);
	ASSERT_EQ(clone_to(sp, &a, DEM_A, EINVAL), 0);
	ASSERT_EQ(clone_to(sp, &a, DEM_B, EEXIST), 0);
	ss = stats(sp);
	ASSERT_EQ(ss.used_pages, before.used_pages);
	ASSERT_EQ(ss.segments, before.segments);
	expect_pages(sp, &b, 2, 5, 1, 2);
	expect_absent(sp, &b, 1, 1);

	/* A destination that is connected but holds nothing is fine, and not orphaned. */
	hello(sp, &c, DEM_C);
	do_stat(sp, &a, st);
	mine = st[4];
	ASSERT_EQ(mine, 10);
	ASSERT_EQ(clone_to(sp, &c, DEM_C, EINVAL), 0);
	ASSERT_EQ(clone_to(sp, &c, DEM_A, EEXIST), 0);
	ASSERT_EQ(clone_to(sp, &a, DEM_C, 0), mine);
	expect_pages(sp, &c, 1, 0, 1, 5);
	expect_pages(sp, &c, 1, 1, 9, 1);
	ASSERT_EQ(sponsor_expire(sp, UINT64_MAX, 0, &nd), 0);
	ASSERT_EQ(nd, 0);

	/* Capacity for all but one page: ENOSPC, nothing copied, no record made. */
	before = stats(sp);
	ASSERT_TRUE(before.capacity_pages - before.used_pages > mine);
	write_pages(sp, &b, 1, 20, before.capacity_pages - before.used_pages - mine + 1, 7);
	before = stats(sp);
	ASSERT_EQ(before.capacity_pages - before.used_pages, mine - 1);
	ASSERT_EQ(clone_to(sp, &a, DEM_D, ENOSPC), 0);
	ss = stats(sp);
	ASSERT_EQ(ss.used_pages, before.used_pages);
	ASSERT_EQ(ss.segments, before.segments);
	ASSERT_EQ(ss.demanders, before.demanders);
	ASSERT_EQ(sponsor_check(sp), 0);
	hello(sp, &d, DEM_D);
	do_stat(sp, &d, st);
	ASSERT_EQ(st[4], 0);
	expect_absent(sp, &d, 1, 0);
	req(sp, &d, HECA_OP_READ, 1, 0, 1, NULL, 0, ENOENT);
	sponsor_conn_exit(sp, &d);

	/* One page freed: exactly full works. */
	ASSERT_EQ(discard(sp, &b, 1, 20, 1, 0), 1);
	ASSERT_EQ(clone_to(sp, &a, DEM_D, 0), mine);
	ss = stats(sp);
	ASSERT_EQ(ss.used_pages, ss.capacity_pages);
	sponsor_conn_init(&d);
	hello(sp, &d, DEM_D);
	expect_pages(sp, &d, 1, 0, 1, 5);
	expect_pages(sp, &d, 1, 1, 9, 1);
	req(sp, &d, HECA_OP_WRITE, 1, 50, 1, pagebuf, PG, ENOSPC);

	sponsor_conn_exit(sp, &a);
	sponsor_conn_exit(sp, &b);
	sponsor_conn_exit(sp, &c);
	sponsor_conn_exit(sp, &d);
	sponsor_close(sp);
}

static void test_discard(void)
{
	struct sponsor *sp = open_fake(3000 * PG);
	struct sponsor_conn a;
	const struct heca_frame *r;
	uint64_t used;

	sponsor_conn_init(&a);
	hello(sp, &a, DEM_A);
	discard(sp, &a, 1, 0, 1, ENOENT);
	req(sp, &a, HECA_OP_ALLOC, 1, 2000, 0, NULL, 0, 0);
	write_pages(sp, &a, 1, 0, 1024, 1);
	ASSERT_EQ(stats(sp).used_pages, 1024);

	/* A run inside one leaf: those pages read as never written, neighbours stay. */
	ASSERT_EQ(discard(sp, &a, 1, 100, 50, 0), 50);
	ASSERT_EQ(stats(sp).used_pages, 974);
	expect_pages(sp, &a, 1, 0, 100, 1);
	expect_absent(sp, &a, 1, 100);
	expect_absent(sp, &a, 1, 149);
	expect_pages(sp, &a, 1, 150, 874, 1);
	r = req(sp, &a, HECA_OP_READ, 1, 90, 20, NULL, 0, ENOENT);
	ASSERT_EQ(r->payload_len, 0);
	expect_absent(sp, &a, 1, 1500); /* never written, for comparison */
	/* Discarding again frees nothing; writing there again costs a page again. */
	ASSERT_EQ(discard(sp, &a, 1, 100, 50, 0), 0);
	write_pages(sp, &a, 1, 120, 1, 2);
	ASSERT_EQ(stats(sp).used_pages, 975);
	expect_pages(sp, &a, 1, 120, 1, 2);

	/* Across a leaf boundary (512 pages per leaf), then a whole leaf. */
	ASSERT_EQ(discard(sp, &a, 1, 500, 201, 0), 201);
	expect_pages(sp, &a, 1, 150, 350, 1);
	expect_absent(sp, &a, 1, 500);
	expect_absent(sp, &a, 1, 511);
	expect_absent(sp, &a, 1, 512);
	expect_absent(sp, &a, 1, 700);
	expect_pages(sp, &a, 1, 701, 323, 1);
	ASSERT_EQ(discard(sp, &a, 1, 512, 512, 0), 323);
	expect_absent(sp, &a, 1, 1023);
	expect_pages(sp, &a, 1, 0, 100, 1);
	expect_pages(sp, &a, 1, 120, 1, 2);
	ASSERT_EQ(stats(sp).used_pages, 451);
	write_pages(sp, &a, 1, 600, 3, 3);
	expect_pages(sp, &a, 1, 600, 3, 3);

	/* Clipped at the segment's end; past the end or count 0: nothing, no error. */
	write_pages(sp, &a, 1, 1995, 5, 4);
	ASSERT_EQ(discard(sp, &a, 1, 1990, UINT32_MAX, 0), 5);
	expect_absent(sp, &a, 1, 1999);
	ASSERT_EQ(discard(sp, &a, 1, 2000, 10, 0), 0);
	ASSERT_EQ(discard(sp, &a, 1, UINT64_MAX, UINT32_MAX, 0), 0);
	ASSERT_EQ(discard(sp, &a, 1, 0, 0, 0), 0);
	expect_pages(sp, &a, 1, 0, 100, 1);

	/* A huge segment: runs near 2^64 do not overflow, far pages stay. */
	used = stats(sp).used_pages;
	req(sp, &a, HECA_OP_ALLOC, 2, UINT64_MAX, 0, NULL, 0, 0);
	write_pages(sp, &a, 2, 0, 1, 5);
	write_pages(sp, &a, 2, 1ull << 40, 1, 5);
	write_pages(sp, &a, 2, UINT64_MAX - 1, 1, 5);
	ASSERT_EQ(discard(sp, &a, 2, UINT64_MAX - 10, UINT32_MAX, 0), 1);
	ASSERT_EQ(discard(sp, &a, 2, 0, UINT32_MAX, 0), 1);
	expect_absent(sp, &a, 2, 0);
	expect_absent(sp, &a, 2, UINT64_MAX - 1);
	expect_pages(sp, &a, 2, 1ull << 40, 1, 5);
	ASSERT_EQ(stats(sp).used_pages, used + 1);

	/* Whole segment: it stays, empty. */
	ASSERT_EQ(discard(sp, &a, 1, 0, UINT32_MAX, 0), used);
	ASSERT_EQ(stats(sp).used_pages, 1);
	ASSERT_EQ(stats(sp).segments, 2);
	expect_absent(sp, &a, 1, 0);
	write_pages(sp, &a, 1, 0, 2, 6);
	expect_pages(sp, &a, 1, 0, 2, 6);
	sponsor_conn_exit(sp, &a);
	sponsor_close(sp);
}

static void test_resize(void)
{
	struct sponsor *sp = open_fake(64 * PG);
	struct sponsor_conn a;

	sponsor_conn_init(&a);
	hello(sp, &a, DEM_A);
	req(sp, &a, HECA_OP_RESIZE, 1, 10, 0, NULL, 0, ENOENT);
	req(sp, &a, HECA_OP_ALLOC, 1, 10, 0, NULL, 0, 0);
	req(sp, &a, HECA_OP_RESIZE, 1, 0, 0, NULL, 0, EINVAL);
	write_pages(sp, &a, 1, 0, 10, 1);

	/* Grow past a leaf (one index level more), then far (five more): old pages stay. */
	req(sp, &a, HECA_OP_WRITE, 1, 10, 1, pagebuf, PG, EINVAL);
	req(sp, &a, HECA_OP_RESIZE, 1, 600, 0, NULL, 0, 0);
	write_pages(sp, &a, 1, 599, 1, 2);
	req(sp, &a, HECA_OP_WRITE, 1, 600, 1, pagebuf, PG, EINVAL);
	req(sp, &a, HECA_OP_RESIZE, 1, 1ull << 40, 0, NULL, 0, 0);
	write_pages(sp, &a, 1, (1ull << 40) - 1, 1, 3);
	req(sp, &a, HECA_OP_RESIZE, 1, 1ull << 40, 0, NULL, 0, 0); /* same size: nothing */
	expect_pages(sp, &a, 1, 0, 10, 1);
	expect_pages(sp, &a, 1, 599, 1, 2);
	expect_pages(sp, &a, 1, (1ull << 40) - 1, 1, 3);
	ASSERT_EQ(stats(sp).used_pages, 12);

	/* Shrink: pages at or past the new size are freed, the rest stay. */
	req(sp, &a, HECA_OP_RESIZE, 1, 5, 0, NULL, 0, 0);
	ASSERT_EQ(stats(sp).used_pages, 5);
	expect_pages(sp, &a, 1, 0, 5, 1);
	req(sp, &a, HECA_OP_READ, 1, 5, 1, NULL, 0, EINVAL);
	req(sp, &a, HECA_OP_WRITE, 1, 5, 1, pagebuf, PG, EINVAL);
	/* Grown again, the freed pages read as never written. */
	req(sp, &a, HECA_OP_RESIZE, 1, 1ull << 40, 0, NULL, 0, 0);
	expect_absent(sp, &a, 1, 5);
	expect_absent(sp, &a, 1, 599);
	expect_absent(sp, &a, 1, (1ull << 40) - 1);
	expect_pages(sp, &a, 1, 0, 5, 1);
	write_pages(sp, &a, 1, 7, 1, 4);
	write_pages(sp, &a, 1, 1ull << 39, 1, 4);
	expect_pages(sp, &a, 1, 7, 1, 4);
	expect_pages(sp, &a, 1, 1ull << 39, 1, 4);
	ASSERT_EQ(stats(sp).used_pages, 7);

	/* Shrink to a leaf boundary: the page just below stays, the one at it goes. */
	req(sp, &a, HECA_OP_ALLOC, 2, 1024, 0, NULL, 0, 0);
	write_pages(sp, &a, 2, 511, 2, 5);
	write_pages(sp, &a, 2, 1023, 1, 5);
	req(sp, &a, HECA_OP_RESIZE, 2, 512, 0, NULL, 0, 0);
	expect_pages(sp, &a, 2, 511, 1, 5);
	req(sp, &a, HECA_OP_READ, 2, 512, 1, NULL, 0, EINVAL);
	ASSERT_EQ(stats(sp).used_pages, 8);
	/* ALLOC still never shrinks, and grows as before. */
	req(sp, &a, HECA_OP_ALLOC, 2, 100, 0, NULL, 0, 0);
	expect_pages(sp, &a, 2, 511, 1, 5);
	req(sp, &a, HECA_OP_ALLOC, 2, 2048, 0, NULL, 0, 0);
	write_pages(sp, &a, 2, 2047, 1, 6);
	expect_pages(sp, &a, 2, 2047, 1, 6);
	expect_absent(sp, &a, 2, 1023);
	sponsor_conn_exit(sp, &a);
	sponsor_close(sp);
}

static void test_dropall(void)
{
	struct sponsor *sp = open_fake(64 * PG);
	struct sponsor_conn a, b;
	struct sponsor_stats ss;

	sponsor_conn_init(&a);
	sponsor_conn_init(&b);
	hello(sp, &a, DEM_A);
	hello(sp, &b, DEM_B);
	ASSERT_EQ(dropall(sp, &a, 0), 0);
	req(sp, &a, HECA_OP_ALLOC, 1, 100, 0, NULL, 0, 0);
	req(sp, &a, HECA_OP_ALLOC, 2, 1ull << 30, 0, NULL, 0, 0);
	req(sp, &a, HECA_OP_ALLOC, 3, 4, 0, NULL, 0, 0);
	write_pages(sp, &a, 1, 0, 20, 1);
	write_pages(sp, &a, 2, 1ull << 29, 3, 1);
	req(sp, &b, HECA_OP_ALLOC, 1, 100, 0, NULL, 0, 0);
	write_pages(sp, &b, 1, 0, 4, 2);

	ASSERT_EQ(dropall(sp, &a, 0), 23);
	ss = stats(sp);
	ASSERT_EQ(ss.used_pages, 4);
	ASSERT_EQ(ss.segments, 1);
	ASSERT_EQ(ss.demanders, 2); /* A is still connected */
	req(sp, &a, HECA_OP_READ, 1, 0, 1, NULL, 0, ENOENT);
	req(sp, &a, HECA_OP_FREE, 3, 0, 0, NULL, 0, ENOENT);
	expect_pages(sp, &b, 1, 0, 4, 2);
	ASSERT_EQ(dropall(sp, &a, 0), 0);

	/* The id is used again from scratch. */
	req(sp, &a, HECA_OP_ALLOC, 1, 10, 0, NULL, 0, 0);
	expect_absent(sp, &a, 1, 0);
	write_pages(sp, &a, 1, 0, 2, 3);
	expect_pages(sp, &a, 1, 0, 2, 3);
	ASSERT_EQ(stats(sp).used_pages, 6);
	sponsor_conn_exit(sp, &a);
	sponsor_conn_exit(sp, &b);
	sponsor_close(sp);
}

/* Connections of a session the demander has left behind change nothing with the new ops. */
static void test_new_ops_stale(void)
{
	struct sponsor *sp = open_fake(64 * PG);
	struct sponsor_conn old, cur;

	sponsor_conn_init(&old);
	sponsor_conn_init(&cur);
	hello_session(sp, &old, DEM_A, 1);
	req(sp, &old, HECA_OP_ALLOC, 1, 10, 0, NULL, 0, 0);
	write_pages(sp, &old, 1, 0, 4, 1);
	hello_session(sp, &cur, DEM_A, 2);
	ASSERT_EQ(clone_to(sp, &old, DEM_B, ESTALE), 0);
	ASSERT_EQ(discard(sp, &old, 1, 0, 4, ESTALE), 0);
	req(sp, &old, HECA_OP_RESIZE, 1, 2, 0, NULL, 0, ESTALE);
	ASSERT_EQ(dropall(sp, &old, ESTALE), 0);
	ASSERT_EQ(stats(sp).demanders, 1);
	expect_pages(sp, &cur, 1, 0, 4, 1);
	req(sp, &cur, HECA_OP_WRITE, 1, 9, 1, pagebuf, PG, 0);
	sponsor_conn_exit(sp, &old);
	sponsor_conn_exit(sp, &cur);
	sponsor_close(sp);
}

static void test_lease(void)
{
	const uint64_t lease = 30000;
	struct sponsor *sp = open_fake(64 * PG);
	struct sponsor_conn a, a2, b, c;
	uint64_t nd;

	sponsor_conn_init(&a);
	sponsor_conn_init(&a2);
	sponsor_conn_init(&b);
	hello(sp, &a, DEM_A);
	hello(sp, &a2, DEM_A);
	hello(sp, &b, DEM_B);
	req(sp, &a, HECA_OP_ALLOC, 1, 100, 0, NULL, 0, 0);
	write_pages(sp, &a, 1, 0, 3, 1);
	req(sp, &b, HECA_OP_ALLOC, 1, 100, 0, NULL, 0, 0);
	write_pages(sp, &b, 1, 0, 2, 2);

	/* Connected demanders never expire, not even with lease 0. */
	ASSERT_EQ(sponsor_expire(sp, UINT64_MAX, 0, &nd), 0);
	ASSERT_EQ(nd, 0);
	/* One of two connections closing orphans nothing. */
	g_now = 1000;
	sponsor_conn_exit(sp, &a);
	ASSERT_EQ(sponsor_expire(sp, UINT64_MAX, 0, &nd), 0);
	ASSERT_EQ(nd, 0);

	/* The last one closing does: kept until the lease is over. */
	g_now = 2000;
	sponsor_conn_exit(sp, &a2);
	ASSERT_EQ(sponsor_expire(sp, 2000 + lease - 1, lease, &nd), 0);
	ASSERT_EQ(nd, 0);
	ASSERT_EQ(sponsor_expire(sp, 1000, lease, NULL), 0); /* a clock before the orphaning */
	ASSERT_EQ(stats(sp).used_pages, 5);

	/* A new READY connection cancels the orphaning; pages are all there. */
	g_now = 2000 + lease - 1;
	sponsor_conn_init(&a);
	hello(sp, &a, DEM_A);
	ASSERT_EQ(sponsor_expire(sp, UINT64_MAX, lease, &nd), 0);
	ASSERT_EQ(nd, 0);
	expect_pages(sp, &a, 1, 0, 3, 1);
	ASSERT_EQ(g_expired.n, 0);

	/* Closed again: the lease starts over from this close. */
	g_now = 100000;
	sponsor_conn_exit(sp, &a);
	ASSERT_EQ(sponsor_expire(sp, 100000 + lease - 1, lease, &nd), 0);
	ASSERT_EQ(sponsor_expire(sp, 100000 + lease, lease, &nd), 3);
	ASSERT_EQ(nd, 1);
	ASSERT_EQ(g_expired.n, 1);
	ASSERT_TRUE(!memcmp(g_expired.id[0], DEM_A, 16));
	ASSERT_EQ(g_expired.pages[0], 3);
	ASSERT_EQ(stats(sp).used_pages, 2);
	ASSERT_EQ(stats(sp).demanders, 1);
	ASSERT_EQ(sponsor_expire(sp, UINT64_MAX, lease, &nd), 0); /* once only */
	ASSERT_EQ(nd, 0);
	expect_pages(sp, &b, 1, 0, 2, 2);
	/* Coming back later, A starts from nothing. */
	sponsor_conn_init(&a);
	hello(sp, &a, DEM_A);
	req(sp, &a, HECA_OP_READ, 1, 0, 1, NULL, 0, ENOENT);
	req(sp, &a, HECA_OP_FREE, 1, 0, 0, NULL, 0, ENOENT);

	/* A CLONE destination nobody claims expires a lease after the clone... */
	g_now = 200000;
	ASSERT_EQ(clone_to(sp, &b, DEM_C, 0), 2);
	ASSERT_EQ(sponsor_expire(sp, 200000 + lease - 1, lease, &nd), 0);
	ASSERT_EQ(stats(sp).used_pages, 4);
	ASSERT_EQ(sponsor_expire(sp, 200000 + lease, lease, &nd), 2);
	ASSERT_EQ(nd, 1);
	ASSERT_TRUE(!memcmp(g_expired.id[1], DEM_C, 16));
	ASSERT_EQ(stats(sp).used_pages, 2);
	expect_pages(sp, &b, 1, 0, 2, 2);

	/* ...one that is claimed in time stays, with its pages. */
	g_now = 300000;
	ASSERT_EQ(clone_to(sp, &b, DEM_C, 0), 2);
	sponsor_conn_init(&c);
	g_now = 300000 + lease - 1;
	hello(sp, &c, DEM_C);
	ASSERT_EQ(sponsor_expire(sp, UINT64_MAX, lease, &nd), 0);
	expect_pages(sp, &c, 1, 0, 2, 2);

	/* Lease 0: gone at the first sweep after the close. */
	sponsor_conn_exit(sp, &c);
	ASSERT_EQ(sponsor_expire(sp, g_now, 0, &nd), 2);
	ASSERT_EQ(nd, 1);
	ASSERT_EQ(stats(sp).used_pages, 2);
	ASSERT_EQ(g_expired.n, 3);

	sponsor_conn_exit(sp, &a);
	sponsor_conn_exit(sp, &b);
	sponsor_close(sp);
}

/* Index memory is bounded: a WRITE refused for capacity leaves no index node behind, and one
 * that would take the index past its cap is refused (ENOSPC) with nothing left either. */
static void test_index_cap(void)
{
	struct sponsor_config cfg = {.capacity = 4096};
	struct sponsor_conn c;
	struct sponsor_stats ss, before;
	struct sponsor *sp;
	uint64_t seg_pages = 1ull << 40, i;

	ASSERT_EQ(sponsor_open(&cfg, &sp), 0);
	sponsor_get_stats(sp, &ss);
	ASSERT_EQ(ss.index_max, SPONSOR_INDEX_MAX(4096));
	sponsor_conn_init(&c);
	hello(sp, &c, DEM_A);
	req(sp, &c, HECA_OP_ALLOC, 1, seg_pages, 0, NULL, 0, 0);
	fill(pagebuf, 1, 1);
	req(sp, &c, HECA_OP_WRITE, 1, 0, 1, pagebuf, PG, 0);
	sponsor_get_stats(sp, &before);
	/* Full: sparse writes far apart would each need new nodes on every level. */
	for (i = 1; i < 2000; i++)
		req(sp, &c, HECA_OP_WRITE, 1, i * 0x40000001ull % seg_pages, 1, pagebuf, PG,
		    ENOSPC);
	sponsor_get_stats(sp, &ss);
	ASSERT_EQ(ss.index_bytes, before.index_bytes);
	ASSERT_EQ(ss.used_pages, 1);
	sponsor_conn_exit(sp, &c);
	sponsor_close(sp);

	/* Capacity to spare, an index cap of 1 MiB: sparse writes stop at the cap. */
	cfg.capacity = 64ull << 20;
	cfg.index_max = 1 << 20;
	ASSERT_EQ(sponsor_open(&cfg, &sp), 0);
	sponsor_conn_init(&c);
	hello(sp, &c, DEM_A);
	req(sp, &c, HECA_OP_ALLOC, 1, seg_pages, 0, NULL, 0, 0);
	for (i = 0; i < 4096; i++) {
		static uint8_t buf[HECA_WIRE_HDR + PG];
		size_t len = 0;

		sponsor_get_stats(sp, &before);
		g_out.len = 0;
		enc(buf, &len, HECA_OP_WRITE, i + 1, 1, i << 20, 1, pagebuf, PG);
		ASSERT_EQ(feed(sp, &c, buf, len), (long)len);
		ASSERT_EQ(g_nrep, 1);
		sponsor_get_stats(sp, &ss);
		ASSERT_LE(ss.index_bytes, cfg.index_max);
		if (g_rep[0].status) {
			ASSERT_EQ(g_rep[0].status, ENOSPC);
			ASSERT_EQ(ss.index_bytes, before.index_bytes);
			ASSERT_EQ(ss.used_pages, before.used_pages);
			break;
		}
	}
	ASSERT_TRUE(i > 100 && i < 4096);
	/* What is stored stays readable; freeing gives the index memory back. */
	req(sp, &c, HECA_OP_READ, 1, 0, 1, NULL, 0, 0);
	ASSERT_EQ(memcmp(g_rep[0].payload, pagebuf, PG), 0);
	req(sp, &c, HECA_OP_FREE, 1, 0, 0, NULL, 0, 0);
	sponsor_get_stats(sp, &ss);
	ASSERT_LE(ss.index_bytes, 4096);
	sponsor_conn_exit(sp, &c);
	sponsor_close(sp);
}

int main(void)
{
	test_hello_rules();
	test_store();
	test_echo_and_pipeline();
	test_garbage();
	test_index_and_slabs();
	test_index_cap();
	test_open_limits();
	test_auth_rules();
	test_clone();
	test_discard();
	test_resize();
	test_dropall();
	test_new_ops_stale();
	test_lease();
	sponsor_buf_free(&g_out);
	printf("test_sponsor_unit: ok\n");
	return T_PASS;
}
