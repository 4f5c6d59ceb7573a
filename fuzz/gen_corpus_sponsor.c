// SPDX-License-Identifier: MIT
/*
 * gen_corpus_sponsor.c - writes the seed inputs of fuzz_sponsor into a directory: short valid
 * sessions in raw and record form (see fuzz_sponsor.c for the input format), a few bad ones.
 * Build: cc -Isrc -D_GNU_SOURCE fuzz/gen_corpus_sponsor.c src/wire.c src/crc32c.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

static uint8_t buf[64 * 1024];
static size_t len;

static void frame(uint8_t op, uint64_t req, uint32_t seg, uint64_t page, uint32_t count,
		  uint32_t plen, uint8_t fill)
{
	struct heca_frame f = {.opcode = op, .req_id = req, .segment = seg, .page = page,
			       .count = count, .payload_len = plen};

	memset(buf + len + HECA_WIRE_HDR, fill, plen);
	f.payload = plen ? buf + len + HECA_WIRE_HDR : NULL;
	heca_wire_encode(buf + len, &f);
	len += HECA_WIRE_HDR + plen;
}

static void rec(uint8_t op, uint8_t seg, uint16_t page, uint8_t count, uint8_t arg)
{
	uint8_t r[6] = {op, seg, (uint8_t)page, (uint8_t)(page >> 8), count, arg};

	memcpy(buf + len, r, sizeof(r));
	len += sizeof(r);
}

static void save(const char *dir, const char *name)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, len, f) != len || fclose(f)) {
		perror(path);
		exit(1);
	}
	len = 0;
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "fuzz/corpus/sponsor";
	uint8_t hello[HECA_WIRE_HELLO_LEN] = {0};

	/* Raw stream after a HELLO, capacity 8 pages: every opcode once. */
	buf[len++] = 0x01;
	frame(HECA_OP_ALLOC, 1, 1, 16, 0, 0, 0);
	frame(HECA_OP_WRITE, 2, 1, 3, 1, HECA_WIRE_PAGE, 0xaa);
	frame(HECA_OP_READ, 3, 1, 3, 1, 0, 0);
	frame(HECA_OP_READ, 4, 1, 4, 1, 0, 0);
	frame(HECA_OP_STAT, 5, 0, 0, 0, 0, 0);
	frame(HECA_OP_ECHO, 6, 0, 0, 0, 32, 0x55);
	frame(HECA_OP_CLONE, 7, 0, 0, 0, HECA_WIRE_CLONE_LEN, 0x66);
	frame(HECA_OP_DISCARD, 8, 1, 3, 2, 0, 0);
	frame(HECA_OP_RESIZE, 9, 1, 600, 0, 0, 0);
	frame(HECA_OP_RESIZE, 10, 1, 2, 0, 0, 0);
	frame(HECA_OP_DROPALL, 11, 0, 0, 0, 0, 0);
	frame(HECA_OP_FREE, 12, 1, 0, 0, 0, 0);
	frame(HECA_OP_FREE, 13, 1, 0, 0, 0, 0);
	save(dir, "raw_session");

	/* Raw stream that says HELLO itself, arriving in 47-byte pieces. */
	buf[len++] = 0x08;
	hello[16] = 3;
	memcpy(buf + len + HECA_WIRE_HDR, hello, sizeof(hello));
	{
		struct heca_frame f = {.opcode = HECA_OP_HELLO, .req_id = 1,
				       .payload = buf + len + HECA_WIRE_HDR,
				       .payload_len = sizeof(hello)};
		heca_wire_encode(buf + len, &f);
		len += HECA_WIRE_HDR + sizeof(hello);
	}
	frame(HECA_OP_ALLOC, 2, 9, UINT64_MAX, 0, 0, 0);
	frame(HECA_OP_WRITE, 3, 9, UINT64_MAX - 1, 1, HECA_WIRE_PAGE, 1);
	frame(HECA_OP_READ, 4, 9, UINT64_MAX - 1, 1, 0, 0);
	frame(HECA_OP_HELLO | HECA_OP_REPLY, 5, 0, 0, 0, 0, 0);
	save(dir, "raw_hello_then_reply");

	/* Frame before HELLO; garbage after a good frame. */
	buf[len++] = 0x00;
	frame(HECA_OP_STAT, 1, 0, 0, 0, 0, 0);
	save(dir, "raw_before_hello");
	buf[len++] = 0x01;
	frame(HECA_OP_STAT, 1, 0, 0, 0, 0, 0);
	memcpy(buf + len, "HECA\x01\x00garbage-garbage-garbage-garbage-garbage-garbage", 52);
	len += 52;
	save(dir, "raw_garbage");

	/* Records: fill past capacity on two connections, overwrite, free, refill. */
	buf[len++] = 0x03;
	rec(HECA_OP_ALLOC, 1, 40, 0, 0);
	rec(HECA_OP_WRITE, 1, 0, 4, 0x11);
	rec(HECA_OP_WRITE, 1, 4, 5, 0x12); /* 9 > 8: ENOSPC */
	rec(HECA_OP_WRITE, 1, 0, 4, 0x13); /* overwrite */
	rec(HECA_OP_READ, 1, 0, 4, 0);
	rec(0x80 | HECA_OP_ALLOC, 1, 40, 0, 0);
	rec(0x80 | HECA_OP_WRITE, 1, 0, 4, 0x21);
	rec(0x80 | HECA_OP_WRITE, 1, 4, 1, 0x22); /* ENOSPC */
	rec(HECA_OP_STAT, 0, 0, 0, 0);
	rec(HECA_OP_FREE, 1, 0, 0, 0);
	rec(0x80 | HECA_OP_WRITE, 1, 4, 4, 0x23);
	rec(0x80 | HECA_OP_READ, 1, 0, 8, 0);
	rec(HECA_OP_READ, 1, 0, 1, 0); /* ENOENT after FREE */
	rec(HECA_OP_ECHO, 0, 0, 0, 20);
	save(dir, "rec_capacity");

	/* Records: corrupted frames, a second HELLO, bad counts, out-of-range pages. */
	buf[len++] = 0x07;
	rec(HECA_OP_ALLOC, 2, 10, 0, 0);
	rec(HECA_OP_WRITE, 2, 9, 2, 0x31);     /* EINVAL */
	rec(HECA_OP_WRITE, 2, 0, 0, 0x31);     /* count 0: malformed */
	rec(HECA_OP_ALLOC, 2, 0xff0a, 0, 0);   /* grow to near 2^64 */
	rec(0x40 | HECA_OP_WRITE, 2, 0, 1, 100); /* corrupted */
	rec(HECA_OP_WRITE, 2, 0, 1, 0x32);
	rec(0x0f, 0, 0, 0, 0); /* HELLO again */
	rec(HECA_OP_READ, 2, 0, 1, 0);
	save(dir, "rec_errors");

	/* Records, capacity 8: CLONE to a new demander (id: 16 bytes of arg), again (EEXIST),
	 * from the other connection when full (ENOSPC); DISCARD, RESIZE both ways, DROPALL; then
	 * a CLONE that fits. */
	buf[len++] = 0x03;
	rec(HECA_OP_ALLOC, 1, 40, 0, 0);
	rec(HECA_OP_WRITE, 1, 0, 3, 0x51);
	rec(HECA_OP_CLONE, 0, 0, 0, 0x77);
	rec(HECA_OP_CLONE, 0, 0, 0, 0x77); /* EEXIST */
	rec(0x80 | HECA_OP_ALLOC, 2, 16, 0, 0);
	rec(0x80 | HECA_OP_WRITE, 2, 0, 2, 0x52);
	rec(0x80 | HECA_OP_CLONE, 0, 0, 0, 0x78); /* 2 pages, 0 free: ENOSPC */
	rec(HECA_OP_DISCARD, 1, 1, 17, 0);
	rec(HECA_OP_READ, 1, 0, 3, 0);
	rec(HECA_OP_RESIZE, 1, 600, 0, 0);
	rec(HECA_OP_WRITE, 1, 599, 1, 0x53);
	rec(HECA_OP_RESIZE, 1, 1, 0, 0);
	rec(HECA_OP_RESIZE, 1, 0, 0, 0); /* EINVAL */
	rec(HECA_OP_READ, 1, 0, 1, 0);
	rec(0x80 | HECA_OP_DROPALL, 0, 0, 0, 0);
	rec(0x80 | HECA_OP_CLONE, 0, 0, 0, 0x78);
	rec(HECA_OP_DROPALL, 0, 0, 0, 0);
	rec(HECA_OP_STAT, 0, 0, 0, 0);
	save(dir, "rec_clone");

	/* A sponsor with a cluster key (mode bit 7). Raw stream after HELLO + a valid AUTH: the
	 * store works, a second AUTH is a protocol error. */
	buf[len++] = 0x81;
	frame(HECA_OP_ALLOC, 1, 1, 16, 0, 0, 0);
	frame(HECA_OP_WRITE, 2, 1, 3, 1, HECA_WIRE_PAGE, 0xaa);
	frame(HECA_OP_READ, 3, 1, 3, 1, 0, 0);
	frame(HECA_OP_STAT, 4, 0, 0, 0, 0, 0);
	frame(HECA_OP_AUTH, 5, 0, 0, 0, HECA_WIRE_AUTH_LEN, 0x11);
	save(dir, "raw_keyed_session");

	/* Keyed, HELLO said by the stream itself, then a request without AUTH: EACCES. */
	buf[len++] = 0x80;
	memset(hello, 0, sizeof(hello));
	hello[16] = 4;
	memcpy(buf + len + HECA_WIRE_HDR, hello, sizeof(hello));
	{
		struct heca_frame f = {.opcode = HECA_OP_HELLO, .req_id = 1,
				       .payload = buf + len + HECA_WIRE_HDR,
				       .payload_len = sizeof(hello)};
		heca_wire_encode(buf + len, &f);
		len += HECA_WIRE_HDR + sizeof(hello);
	}
	frame(HECA_OP_STAT, 2, 0, 0, 0, 0, 0);
	save(dir, "raw_keyed_no_auth");

	/* Keyed records: HELLO and the right AUTH (0x0e) on one connection, a wrong AUTH (0x08)
	 * on the other, which then reconnects with a valid exchange. */
	buf[len++] = 0x82;
	rec(0x0f, 0, 0, 0, 0);
	rec(0x0e, 0, 0, 0, 0);
	rec(HECA_OP_ALLOC, 1, 16, 0, 0);
	rec(HECA_OP_WRITE, 1, 0, 2, 0x41);
	rec(0x80 | 0x0f, 0, 0, 0, 0);
	rec(0x80 | HECA_OP_STAT, 0, 0, 0, 0); /* before AUTH: EACCES */
	rec(0x80 | 0x0f, 0, 0, 0, 0);
	rec(0x80 | HECA_OP_AUTH, 0, 0, 0, 0x42); /* wrong MAC: EACCES */
	rec(0x80 | HECA_OP_ALLOC, 1, 16, 0, 0);
	rec(0x80 | HECA_OP_WRITE, 1, 0, 2, 0x43);
	rec(HECA_OP_READ, 1, 0, 2, 0);
	rec(0x0e, 0, 0, 0, 0); /* a second AUTH */
	save(dir, "rec_keyed");
	return 0;
}
