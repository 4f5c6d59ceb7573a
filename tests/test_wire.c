// SPDX-License-Identifier: MIT
/*
 * test_wire.c - the frame codec and CRC-32C: round trips of every opcode, truncation, corruption
 * and malformed headers, with each input ending right before a PROT_NONE page.
 */
#include "harness.h"
#include "util.h"
#include "wire.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* The two CRC-32C implementations behind heca_crc32c(); not in wire.h because only this test
 * and crc32c.c need to tell them apart. */
extern uint32_t heca__crc32c_sw(uint32_t crc, const void *buf, size_t len);
#if defined(__x86_64__)
extern uint32_t heca__crc32c_hw(uint32_t crc, const void *buf, size_t len);
#endif

#define MAX_FRAME (HECA_WIRE_HDR + HECA_WIRE_MAX_PAYLOAD)
/* Frames up to this size get every truncation checked; larger ones a sample (see trunc_pick). */
#define TRUNC_ALL (64u * 1024u)
/* Payloads start at a moving offset below 4096 and may be up to one byte over the maximum. */
#define PAYLOAD_BUF (HECA_WIRE_MAX_PAYLOAD + 2 * 4096u)

static size_t pagesz;
static uint8_t *arena;	  /* read-write, big enough for any frame at any page offset */
static uint8_t *guard;	  /* first byte of the PROT_NONE page that ends the arena */
static uint8_t *payload;  /* deterministic bytes for payloads, PAYLOAD_BUF long */
static uint8_t *framebuf; /* where frames are built before being placed */
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	/* xorshift64: reproducible across runs, so a failure can be replayed. */
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void arena_init(void)
{
	size_t span;

	pagesz = (size_t)sysconf(_SC_PAGESIZE);
	/* A frame shifted by up to a page, a page of slack for the sweep's own guard, and the
	 * permanent guard page at the end. */
	span = (MAX_FRAME + pagesz - 1) / pagesz * pagesz + 3 * pagesz;
	arena =
	    mmap(NULL, span + pagesz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_TRUE(arena != MAP_FAILED);
	guard = arena + span;
	ASSERT_EQ(mprotect(guard, pagesz, PROT_NONE), 0);

	payload = malloc(PAYLOAD_BUF);
	framebuf = malloc(MAX_FRAME + 1);
	ASSERT_TRUE(payload && framebuf);
	for (size_t i = 0; i < PAYLOAD_BUF; i++)
		payload[i] = (uint8_t)rnd();
}

/* Copy len bytes so that they end exactly at the guard page; returns where they start. */
static uint8_t *place(const void *src, size_t len)
{
	uint8_t *p = guard - len;
	memcpy(p, src, len);
	return p;
}

/* Recompute the header checksum after a test patched header bytes on purpose, so that the
 * decoder's field checks (not its CRC check) are what rejects the frame. */
static void rehash(uint8_t *hdr)
{
	heca_put32(hdr + 44, heca_crc32c(0, hdr, 44));
}

struct wcase {
	uint8_t opcode;
	int32_t status;
	uint32_t count;
	uint32_t payload_len;
	uint64_t page;
};

/* Build the frame for c into framebuf; returns its length and fills *f as encoded. */
static size_t build(const struct wcase *c, uint64_t req_id, struct heca_frame *f)
{
	memset(f, 0, sizeof(*f));
	f->opcode = c->opcode;
	f->status = c->status;
	f->count = c->count;
	f->payload_len = c->payload_len;
	f->page = c->page;
	f->req_id = req_id;
	f->segment = (uint32_t)rnd();
	/* Payload drawn from a moving offset so two frames rarely carry the same bytes. */
	f->payload = c->payload_len ? payload + (req_id % 1024) : NULL;
	ASSERT_EQ(heca_wire_encode(framebuf, f), HECA_WIRE_HDR);
	ASSERT_EQ(f->version, HECA_WIRE_VERSION);
	if (c->payload_len)
		memcpy(framebuf + HECA_WIRE_HDR, f->payload, c->payload_len);
	return HECA_WIRE_HDR + c->payload_len;
}

static void assert_same(const struct heca_frame *a, const struct heca_frame *b)
{
	ASSERT_EQ(a->opcode, b->opcode);
	ASSERT_EQ(a->flags, b->flags);
	ASSERT_EQ(a->version, b->version);
	ASSERT_TRUE(a->req_id == b->req_id);
	ASSERT_EQ(a->segment, b->segment);
	ASSERT_EQ(a->status, b->status);
	ASSERT_TRUE(a->page == b->page);
	ASSERT_EQ(a->count, b->count);
	ASSERT_EQ(a->payload_len, b->payload_len);
	if (a->payload_len)
		ASSERT_EQ(memcmp(a->payload, b->payload, a->payload_len), 0);
}

#define R(op) ((uint8_t)((op) | HECA_OP_REPLY))
#define PG    HECA_WIRE_PAGE

/* Every opcode as request, reply and error reply; READ/WRITE at 1, some and 256 pages; ECHO at
 * lengths around the interesting boundaries (word size, page, maximum). */
static const struct wcase cases[] = {
    {HECA_OP_HELLO, 0, 0, HECA_WIRE_HELLO_LEN, 0},
    {R(HECA_OP_HELLO), 0, 0, HECA_WIRE_HELLO_REPLY_LEN, 0},
    {R(HECA_OP_HELLO), EACCES, 0, 0, 0},
    {R(HECA_OP_HELLO), EPROTO, 0, 0, 0},
    {HECA_OP_ALLOC, 0, 0, 0, 1u << 20},
    {HECA_OP_ALLOC, 0, 7, 0, UINT64_MAX},
    {R(HECA_OP_ALLOC), 0, 0, 0, 1u << 20},
    {R(HECA_OP_ALLOC), ENOSPC, 0, 0, 1u << 20},
    {HECA_OP_FREE, 0, 0, 0, 0},
    {R(HECA_OP_FREE), 0, 0, 0, 0},
    {R(HECA_OP_FREE), ENOENT, 0, 0, 0},
    {HECA_OP_READ, 0, 1, 0, 0},
    {HECA_OP_READ, 0, 17, 0, 123456789},
    {HECA_OP_READ, 0, HECA_WIRE_MAX_PAGES, 0, UINT64_MAX - HECA_WIRE_MAX_PAGES},
    {R(HECA_OP_READ), 0, 1, PG, 5},
    {R(HECA_OP_READ), 0, 3, 3 * PG, 5},
    {R(HECA_OP_READ), 0, HECA_WIRE_MAX_PAGES, HECA_WIRE_MAX_PAYLOAD, 0},
    {R(HECA_OP_READ), ENOENT, 4, 0, 8},
    {R(HECA_OP_READ), EINVAL, 1, 0, 8},
    {HECA_OP_WRITE, 0, 1, PG, 9},
    {HECA_OP_WRITE, 0, 2, 2 * PG, 9},
    {HECA_OP_WRITE, 0, HECA_WIRE_MAX_PAGES, HECA_WIRE_MAX_PAYLOAD, 1},
    {R(HECA_OP_WRITE), 0, 2, 0, 9},
    {R(HECA_OP_WRITE), ENOSPC, 2, 0, 9},
    {R(HECA_OP_WRITE), EINVAL, HECA_WIRE_MAX_PAGES, 0, 9},
    {HECA_OP_STAT, 0, 0, 0, 0},
    {R(HECA_OP_STAT), 0, 0, HECA_WIRE_STAT_LEN, 0},
    {R(HECA_OP_STAT), EACCES, 0, 0, 0},
    {HECA_OP_ECHO, 0, 0, 0, 0},
    {HECA_OP_ECHO, 0, 0, 1, 0},
    {HECA_OP_ECHO, 0, 0, 7, 0},
    {HECA_OP_ECHO, 0, 0, 8, 0},
    {HECA_OP_ECHO, 0, 0, 9, 0},
    {HECA_OP_ECHO, 0, 0, 63, 0},
    {HECA_OP_ECHO, 0, 0, PG - 1, 0},
    {HECA_OP_ECHO, 0, 0, PG, 0},
    {HECA_OP_ECHO, 0, 0, PG + 1, 0},
    {HECA_OP_ECHO, 0, 0, 65537, 0},
    {HECA_OP_ECHO, 0, 0, HECA_WIRE_MAX_PAYLOAD, 0},
    {R(HECA_OP_ECHO), 0, 0, 0, 0},
    {R(HECA_OP_ECHO), 0, 0, 5, 0},
    {R(HECA_OP_ECHO), 0, 0, 4000, 0},
    {R(HECA_OP_ECHO), 0, 0, HECA_WIRE_MAX_PAYLOAD, 0},
    {R(HECA_OP_ECHO), EINVAL, 0, 0, 0},
    {HECA_OP_AUTH, 0, 0, HECA_WIRE_AUTH_LEN, 0},
    {R(HECA_OP_AUTH), 0, 0, HECA_WIRE_AUTH_REPLY_LEN, 0},
    {R(HECA_OP_AUTH), EACCES, 0, 0, 0},
    {R(HECA_OP_AUTH), EINVAL, 0, 0, 0},
    {HECA_OP_CLONE, 0, 0, HECA_WIRE_CLONE_LEN, 0},
    {R(HECA_OP_CLONE), 0, 0, 0, 12345},
    {R(HECA_OP_CLONE), ENOSPC, 0, 0, 0},
    {R(HECA_OP_CLONE), EEXIST, 0, 0, 0},
    {HECA_OP_DISCARD, 0, 0, 0, 5},
    {HECA_OP_DISCARD, 0, 1, 0, 5},
    {HECA_OP_DISCARD, 0, HECA_WIRE_MAX_PAGES + 1, 0, 5},
    {HECA_OP_DISCARD, 0, UINT32_MAX, 0, UINT64_MAX},
    {R(HECA_OP_DISCARD), 0, UINT32_MAX, 0, 300},
    {R(HECA_OP_DISCARD), ENOENT, 7, 0, 0},
    {HECA_OP_RESIZE, 0, 0, 0, 1u << 20},
    {R(HECA_OP_RESIZE), 0, 0, 0, 1u << 20},
    {R(HECA_OP_RESIZE), EINVAL, 0, 0, 0},
    {HECA_OP_DROPALL, 0, 0, 0, 0},
    {R(HECA_OP_DROPALL), 0, 0, 0, 99},
    {HECA_OP_ERROR, EPROTO, 0, 0, 0},
    {HECA_OP_ERROR, EBADMSG, 0, 0, 0},
    {HECA_OP_ERROR, EACCES, 0, 0, 0},
};

static void test_payload_len_table(void)
{
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_HELLO, 0, 0), HECA_WIRE_HELLO_LEN);
	ASSERT_EQ(heca_wire_payload_len(R(HECA_OP_HELLO), 0, 0), HECA_WIRE_HELLO_REPLY_LEN);
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_ALLOC, 0, 0), 0);
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_FREE, 0, 0), 0);
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_READ, 2, 0), 0);
	ASSERT_EQ(heca_wire_payload_len(R(HECA_OP_READ), 2, 0), 2 * PG);
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_WRITE, 2, 0), 2 * PG);
	ASSERT_EQ(heca_wire_payload_len(R(HECA_OP_WRITE), 2, 0), 0);
	ASSERT_EQ(heca_wire_payload_len(R(HECA_OP_STAT), 0, 0), HECA_WIRE_STAT_LEN);
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_ECHO, 0, 0), -1);
	ASSERT_EQ(heca_wire_payload_len(R(HECA_OP_READ), 2, ENOENT), 0);
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_ERROR, 0, EPROTO), 0);
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_READ, 0, 0), -EPROTO);
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_WRITE, HECA_WIRE_MAX_PAGES + 1, 0), -EPROTO);
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_STAT, 0, EINVAL), -EPROTO);
	ASSERT_EQ(heca_wire_payload_len(R(HECA_OP_ERROR), 0, EPROTO), -EPROTO);
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_AUTH, 0, 0), HECA_WIRE_AUTH_LEN);
	ASSERT_EQ(heca_wire_payload_len(R(HECA_OP_AUTH), 0, 0), HECA_WIRE_AUTH_REPLY_LEN);
	ASSERT_EQ(heca_wire_payload_len(R(HECA_OP_AUTH), 0, EACCES), 0);
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_CLONE, 0, 0), HECA_WIRE_CLONE_LEN);
	ASSERT_EQ(heca_wire_payload_len(R(HECA_OP_CLONE), 0, 0), 0);
	ASSERT_EQ(heca_wire_payload_len(R(HECA_OP_CLONE), 0, ENOSPC), 0);
	/* DISCARD's count is a run length, any u32, and brings no payload. */
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_DISCARD, 0, 0), 0);
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_DISCARD, UINT32_MAX, 0), 0);
	ASSERT_EQ(heca_wire_payload_len(R(HECA_OP_DISCARD), UINT32_MAX, 0), 0);
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_RESIZE, 0, 0), 0);
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_DROPALL, 0, 0), 0);
	ASSERT_EQ(heca_wire_payload_len(HECA_OP_DROPALL, 0, EINVAL), -EPROTO);
	ASSERT_EQ(HECA_WIRE_HELLO_REPLY_LEN, 72);
	ASSERT_EQ(HECA_HELLO_REPLY_OFF_NONCE + 32, HECA_WIRE_HELLO_REPLY_LEN);
	ASSERT_EQ(heca_wire_payload_len(0x0d, 0, 0), -EPROTO);
	ASSERT_EQ(heca_wire_payload_len(R(0x0d), 0, EINVAL), -EPROTO);

	ASSERT_EQ(strcmp(heca_wire_opname(HECA_OP_WRITE), "WRITE"), 0);
	ASSERT_EQ(strcmp(heca_wire_opname(R(HECA_OP_READ)), "READ"), 0);
	ASSERT_EQ(strcmp(heca_wire_opname(HECA_OP_AUTH), "AUTH"), 0);
	ASSERT_EQ(strcmp(heca_wire_opname(HECA_OP_CLONE), "CLONE"), 0);
	ASSERT_EQ(strcmp(heca_wire_opname(HECA_OP_DISCARD), "DISCARD"), 0);
	ASSERT_EQ(strcmp(heca_wire_opname(R(HECA_OP_RESIZE)), "RESIZE"), 0);
	ASSERT_EQ(strcmp(heca_wire_opname(HECA_OP_DROPALL), "DROPALL"), 0);
	ASSERT_EQ(strcmp(heca_wire_opname(0x0d), "?"), 0);
	ASSERT_EQ(strcmp(heca_wire_opname(HECA_OP_ERROR), "ERROR"), 0);
	ASSERT_EQ(strcmp(heca_wire_opname(0x42), "?"), 0);
}

/* Encode, place before the guard, decode: same fields, payload in place. */
static void test_roundtrip(void)
{
	for (size_t i = 0; i < HECA_ARRAY_SIZE(cases); i++) {
		struct heca_frame f, d;
		size_t n = build(&cases[i], 1000 + i, &f);
		uint8_t *p = place(framebuf, n);

		memset(&d, 0xa5, sizeof(d));
		ASSERT_EQ(heca_wire_decode(p, n, &d), (long long)n);
		assert_same(&f, &d);
		if (f.payload_len)
			ASSERT_TRUE(d.payload == p + HECA_WIRE_HDR);
		else
			ASSERT_TRUE(d.payload == NULL);

		/* Trailing bytes belong to the next frame and must not change the answer. */
		memcpy(arena, framebuf, n);
		memset(arena + n, 0xee, 100);
		ASSERT_EQ(heca_wire_decode(arena, n + 100, &d), (long long)n);
		assert_same(&f, &d);
	}
}

/* Which truncation lengths of an n-byte frame to check: all of them for small frames; for
 * large ones the whole header region, the tail, and page-boundary neighbours in between,
 * because copying a 1 MiB frame to 4096 offsets per frame would dominate the test's time. */
static int trunc_pick(size_t len, size_t n)
{
	size_t d = len % pagesz;

	if (n <= TRUNC_ALL || len < 3 * pagesz || n - len <= 64)
		return 1;
	return d == 0 || d == 1 || d == HECA_WIRE_HDR - 1 || d == HECA_WIRE_HDR || d == pagesz - 1;
}

/*
 * Every prefix must be -EAGAIN and must be read without touching the byte after it. The guard is
 * page-granular, so instead of moving each prefix (quadratic copying) the frame is copied once
 * per page offset r and a guard page is raised at each prefix end with that offset.
 */
static void check_truncations(const uint8_t *frame, size_t n)
{
	struct heca_frame d;

	for (size_t r = 0; r < pagesz && r < n; r++) {
		uint8_t *base = arena + (pagesz - r) % pagesz;
		size_t need = 0;

		for (size_t len = r; len < n; len += pagesz)
			if (trunc_pick(len, n))
				need = len;
		if (!need && !trunc_pick(r, n))
			continue;
		memcpy(base, frame, need);
		for (size_t len = r; len <= need; len += pagesz) {
			uint8_t *g = base + len; /* page-aligned by construction */
			int rc;

			if (!trunc_pick(len, n))
				continue;
			ASSERT_EQ(mprotect(g, pagesz, PROT_NONE), 0);
			rc = heca_wire_decode(base, len, &d);
			ASSERT_EQ(mprotect(g, pagesz, PROT_READ | PROT_WRITE), 0);
			if (rc != -EAGAIN)
				T_FAILF("truncated to %zu of %zu bytes: %d, want -EAGAIN", len, n,
					rc);
		}
	}
}

static void test_truncation(void)
{
	for (size_t i = 0; i < HECA_ARRAY_SIZE(cases); i++) {
		struct heca_frame f;
		size_t n = build(&cases[i], 2000 + i, &f);

		check_truncations(framebuf, n);
	}
}

/* Any single-byte change to the header is -EPROTO (magic, or the header CRC, which catches
 * every burst up to 32 bits); to the payload, -EBADMSG. Bytes are flipped in place before the
 * guard so that a decoder confused by the corruption still cannot over-read unnoticed. */
static void test_corruption(void)
{
	for (size_t i = 0; i < HECA_ARRAY_SIZE(cases); i++) {
		struct heca_frame f, d;
		size_t n = build(&cases[i], 3000 + i, &f);
		uint8_t *p = place(framebuf, n);
		size_t plen = cases[i].payload_len;

		for (size_t b = 0; b < HECA_WIRE_HDR; b++) {
			for (unsigned x = 1; x < 256; x++) {
				int rc;

				p[b] ^= (uint8_t)x;
				rc = heca_wire_decode(p, n, &d);
				p[b] ^= (uint8_t)x;
				if (rc != -EPROTO)
					T_FAILF(
					    "case %zu: header byte %zu ^ 0x%02x: %d, want -EPROTO",
					    i, b, x, rc);
			}
		}
		/* Payload: every position for small payloads (every mask for tiny ones); a
		 * sample across big ones, whose CRC costs ~1 MiB per decode. */
		for (size_t b = 0; b < plen; b++) {
			int rc;

			if (plen > 2 * pagesz && b >= 64 && plen - b > 64 && b % 997 != 0)
				continue;
			for (unsigned x = 1; x < 256; x++) {
				uint8_t m = plen <= 64 ? (uint8_t)x : (uint8_t)(1u << (b % 8));

				if (plen > 64 && x > 1)
					break;
				p[HECA_WIRE_HDR + b] ^= m;
				rc = heca_wire_decode(p, n, &d);
				p[HECA_WIRE_HDR + b] ^= m;
				if (rc != -EBADMSG)
					T_FAILF("case %zu: payload byte %zu ^ 0x%02x: %d, want "
						"-EBADMSG",
						i, b, m, rc);
			}
		}
		ASSERT_EQ(heca_wire_decode(p, n, &d), (long long)n);
	}
}

/* Encode f as given (checksums valid), place the header alone before the guard and expect the
 * decoder to reject it from the header alone, before asking for payload bytes. */
static void expect_bad_hdr(struct heca_frame *f, int line)
{
	struct heca_frame d;
	uint8_t *p;
	int rc;

	f->payload = f->payload_len ? payload : NULL;
	heca_wire_encode(framebuf, f);
	p = place(framebuf, HECA_WIRE_HDR);
	rc = heca_wire_decode(p, HECA_WIRE_HDR, &d);
	if (rc != -EPROTO)
		T_FAILF("line %d: op 0x%02x flags %u status %d count %u plen %u: %d, want -EPROTO",
			line, f->opcode, f->flags, f->status, f->count, f->payload_len, rc);
}

#define BAD(op, st, cnt, plen)                                                                     \
	do {                                                                                       \
		struct heca_frame _f = {.opcode = (op),                                            \
					.status = (st),                                            \
					.count = (cnt),                                            \
					.payload_len = (plen),                                     \
					.req_id = 77};                                             \
		expect_bad_hdr(&_f, __LINE__);                                                     \
	} while (0)

static void test_malformed(void)
{
	static const uint8_t rw[] = {HECA_OP_READ, R(HECA_OP_READ), HECA_OP_WRITE,
				     R(HECA_OP_WRITE)};
	struct heca_frame f;
	uint8_t *p;

	/* READ/WRITE page counts outside 1..256, with the payload length they would imply. */
	for (size_t i = 0; i < sizeof(rw); i++) {
		uint32_t bad[] = {0, HECA_WIRE_MAX_PAGES + 1, 4096, UINT32_MAX};

		for (size_t k = 0; k < HECA_ARRAY_SIZE(bad); k++) {
			uint64_t plen = (uint64_t)bad[k] * PG;
			int carries = rw[i] == HECA_OP_WRITE || rw[i] == R(HECA_OP_READ);

			BAD(rw[i], 0, bad[k], 0);
			if (carries && plen <= HECA_WIRE_MAX_PAYLOAD + PG)
				BAD(rw[i], 0, bad[k], (uint32_t)plen);
		}
		/* An error reply still names a valid run. */
		if (rw[i] & HECA_OP_REPLY)
			BAD(rw[i], ENOENT, 0, 0);
	}

	/* Wrong payload lengths for every fixed-length shape. */
	for (size_t i = 0; i < HECA_ARRAY_SIZE(cases); i++) {
		const struct wcase *c = &cases[i];
		uint32_t base = c->payload_len;
		uint32_t wrong[] = {base + 1, base - 1, base + PG, base ? 0 : 40,
				    HECA_WIRE_MAX_PAYLOAD + 1};

		if ((c->opcode & ~HECA_OP_REPLY) == HECA_OP_ECHO && c->status == 0)
			continue; /* any length is right for ECHO, tested below */
		for (size_t k = 0; k < HECA_ARRAY_SIZE(wrong); k++) {
			if (wrong[k] == base || wrong[k] > HECA_WIRE_MAX_PAYLOAD + 1)
				continue;
			BAD(c->opcode, c->status, c->count, wrong[k]);
		}
	}
	BAD(HECA_OP_ECHO, 0, 0, HECA_WIRE_MAX_PAYLOAD + 1);
	BAD(R(HECA_OP_ECHO), 0, 0, HECA_WIRE_MAX_PAYLOAD + 1);

	/* A request never carries a status; a reply's status is an errno, 0..4095. */
	for (uint8_t op = HECA_OP_HELLO; op <= HECA_OP_DROPALL; op++) {
		uint32_t cnt = (op == HECA_OP_READ || op == HECA_OP_WRITE) ? 1 : 0;
		long plen = heca_wire_payload_len(op, cnt, 0);

		if (plen < 0)
			plen = 0;
		BAD(op, EINVAL, cnt, (uint32_t)plen);
		BAD(op, 1, cnt, 0);
		BAD(op, -1, cnt, (uint32_t)plen);
		BAD(R(op), -EINVAL, cnt, 0);
		BAD(R(op), 4096, cnt, 0);
		BAD(R(op), INT32_MIN, cnt, 0);
		/* An error reply carries no payload, even where a success reply would. */
		BAD(R(op), ENOENT, cnt, 40);
	}
	/* ERROR is a request-direction frame only and carries nothing. */
	BAD(R(HECA_OP_ERROR), EPROTO, 0, 0);
	BAD(R(HECA_OP_ERROR), 0, 0, 0);
	BAD(HECA_OP_ERROR, EPROTO, 0, 4);

	/* Unknown opcodes, as request, reply and error reply. */
	for (unsigned op = 0; op < 256; op++) {
		uint8_t base = (uint8_t)(op & ~HECA_OP_REPLY);

		if ((base >= HECA_OP_HELLO && base <= HECA_OP_DROPALL) || base == HECA_OP_ERROR)
			continue;
		BAD((uint8_t)op, 0, 0, 0);
		BAD((uint8_t)op, 0, 1, PG);
		BAD((uint8_t)op, EPROTO, 0, 0);
	}

	/* No flags are defined in version 1. */
	for (unsigned fl = 1; fl < 256; fl++) {
		struct heca_frame g = {.opcode = HECA_OP_FREE, .flags = (uint8_t)fl};

		expect_bad_hdr(&g, __LINE__);
	}

	/* Version, magic, and a payload CRC on an empty frame: patched after encoding, then
	 * re-checksummed, so only the field check can catch them. */
	for (unsigned v = 0; v < 0x10000; v += (v < 16 ? 1 : 0x1001)) {
		if (v == HECA_WIRE_VERSION)
			continue;
		memset(&f, 0, sizeof(f));
		f.opcode = HECA_OP_STAT;
		heca_wire_encode(framebuf, &f);
		heca_put16(framebuf + 4, (uint16_t)v);
		rehash(framebuf);
		p = place(framebuf, HECA_WIRE_HDR);
		ASSERT_EQ(heca_wire_decode(p, HECA_WIRE_HDR, &f), -EPROTO);
	}
	{
		static const uint32_t magics[] = {0, 0x48454341u, 0x41434549u, 0xc1434548u,
						  0xffffffffu};

		for (size_t k = 0; k < HECA_ARRAY_SIZE(magics); k++) {
			memset(&f, 0, sizeof(f));
			f.opcode = HECA_OP_STAT;
			heca_wire_encode(framebuf, &f);
			heca_put32(framebuf, magics[k]);
			rehash(framebuf);
			p = place(framebuf, HECA_WIRE_HDR);
			ASSERT_EQ(heca_wire_decode(p, HECA_WIRE_HDR, &f), -EPROTO);
		}
	}
	memset(&f, 0, sizeof(f));
	f.opcode = HECA_OP_FREE;
	heca_wire_encode(framebuf, &f);
	heca_put32(framebuf + 40, 0x12345678);
	rehash(framebuf);
	p = place(framebuf, HECA_WIRE_HDR);
	ASSERT_EQ(heca_wire_decode(p, HECA_WIRE_HDR, &f), -EPROTO);

	/* The magic is checked before anything else, so garbage of any length short of a header
	 * is a wait, and a full header of it is an error. */
	memset(framebuf, 0, HECA_WIRE_HDR);
	p = place(framebuf, HECA_WIRE_HDR);
	ASSERT_EQ(heca_wire_decode(p, HECA_WIRE_HDR, &f), -EPROTO);
	ASSERT_EQ(heca_wire_decode(p, HECA_WIRE_HDR - 1, &f), -EAGAIN);
}

/* Frames back to back in one buffer, decoded as a receiver would: each return value is where
 * the next frame starts; a final partial frame is -EAGAIN. */
static void test_stream(void)
{
	static const size_t pick[] = {0, 4, 11, 14, 19, 22, 26, 30, 44, 36};
	struct heca_frame sent[HECA_ARRAY_SIZE(pick)], d;
	size_t off = 0, total, n;
	uint8_t *p;

	for (size_t i = 0; i < HECA_ARRAY_SIZE(pick); i++) {
		n = build(&cases[pick[i]], 4000 + i, &sent[i]);
		memcpy(arena + off, framebuf,
		       n); /* sent[i].payload stays valid: it is in payload */
		off += n;
	}
	total = off;
	/* A partial frame at the end: the first 50 bytes of one more. */
	n = build(&cases[19], 4999, &d);
	memcpy(arena + total, framebuf, 50);
	p = place(arena, total + 50);

	off = 0;
	for (size_t i = 0; i < HECA_ARRAY_SIZE(pick); i++) {
		int rc = heca_wire_decode(p + off, total + 50 - off, &d);

		ASSERT_EQ(rc, (long long)(HECA_WIRE_HDR + sent[i].payload_len));
		assert_same(&sent[i], &d);
		off += (size_t)rc;
	}
	ASSERT_EQ(off, total);
	ASSERT_EQ(heca_wire_decode(p + off, 50, &d), -EAGAIN);
}

static void test_crc(void)
{
	static const char check[] = "123456789";
	uint8_t v[32];
	int hw = 0;

#if defined(__x86_64__)
	__builtin_cpu_init();
	hw = __builtin_cpu_supports("sse4.2");
#endif
	if (!hw)
		printf("note: no SSE4.2 here; only the table CRC is checked\n");

	ASSERT_EQ(heca_crc32c(0, check, 9), 0xE3069283u);
	ASSERT_EQ(heca__crc32c_sw(0, check, 9), 0xE3069283u);
	ASSERT_EQ(heca_crc32c(0, NULL, 0), 0);
	/* RFC 3720 B.4 vectors: all zeros, all ones, ascending, descending. */
	memset(v, 0, sizeof(v));
	ASSERT_EQ(heca__crc32c_sw(0, v, 32), 0x8A9136AAu);
	memset(v, 0xff, sizeof(v));
	ASSERT_EQ(heca__crc32c_sw(0, v, 32), 0x62A8AB43u);
	for (int i = 0; i < 32; i++)
		v[i] = (uint8_t)i;
	ASSERT_EQ(heca__crc32c_sw(0, v, 32), 0x46DD794Eu);
	for (int i = 0; i < 32; i++)
		v[i] = (uint8_t)(31 - i);
	ASSERT_EQ(heca__crc32c_sw(0, v, 32), 0x113FDB5Cu);
#if defined(__x86_64__)
	if (hw)
		ASSERT_EQ(heca__crc32c_hw(0, check, 9), 0xE3069283u);
#endif

	/* Random lengths, each ending at the guard page so that the 8-byte loops cannot read
	 * past the end (the start's alignment then varies with the length), and again at a random
	 * alignment; chaining must hold too: crc(a ++ b) == crc(crc(a), b). */
	for (int it = 0; it < 4000; it++) {
		size_t len = it < 600 ? (size_t)it : (size_t)(rnd() % (3 * pagesz));
		const uint8_t *src = payload + (rnd() % 4096);
		uint8_t *p = it % 2 ? place(src, len) : arena + rnd() % 64;
		uint32_t sw, split;
		size_t cut;

		if (p != guard - len)
			memcpy(p, src, len);
		sw = heca__crc32c_sw(0, p, len);
		ASSERT_EQ(heca_crc32c(0, p, len), sw);
#if defined(__x86_64__)
		if (hw)
			ASSERT_EQ(heca__crc32c_hw(0, p, len), sw);
#endif
		cut = (size_t)(rnd() % (len + 1));
		split = heca__crc32c_sw(heca__crc32c_sw(0, p, cut), p + cut, len - cut);
		ASSERT_EQ(split, sw);
		split = heca_crc32c(heca_crc32c(0, p, cut), p + cut, len - cut);
		ASSERT_EQ(split, sw);
	}
	/* A whole 1 MiB payload, the largest CRC the protocol computes. */
#if defined(__x86_64__)
	if (hw)
		ASSERT_EQ(heca__crc32c_hw(0, payload, HECA_WIRE_MAX_PAYLOAD),
			  heca__crc32c_sw(0, payload, HECA_WIRE_MAX_PAYLOAD));
#endif
}

int main(void)
{
	arena_init();
	test_crc();
	test_payload_len_table();
	test_roundtrip();
	test_stream();
	test_truncation();
	test_corruption();
	test_malformed();
	printf("test_wire: ok (%zu frame shapes)\n", HECA_ARRAY_SIZE(cases));
	return T_PASS;
}
