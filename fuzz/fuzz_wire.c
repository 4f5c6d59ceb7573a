// SPDX-License-Identifier: MIT
/*
 * fuzz_wire.c - libFuzzer harness for the frame decoder: the input is a byte stream as a
 * receiver sees it; every frame decoded from it must re-encode to the same bytes and fields.
 */
#include "wire.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant is a crash, so that libFuzzer saves the input. */
#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "fuzz_wire: %s:%d: %s\n", __FILE__, __LINE__, #c);         \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static void check_same(const struct heca_frame *a, const struct heca_frame *b)
{
	CHECK(a->opcode == b->opcode && a->flags == b->flags && a->version == b->version);
	CHECK(a->req_id == b->req_id && a->segment == b->segment && a->status == b->status);
	CHECK(a->page == b->page && a->count == b->count && a->payload_len == b->payload_len);
	CHECK(a->payload_len == 0 || memcmp(a->payload, b->payload, a->payload_len) == 0);
}

/* The frame at p (n bytes, already decoded into *f) must survive an encode/decode round trip,
 * and since the decoder accepts only canonical headers, re-encoding must give the same bytes. */
static void check_reencode(const uint8_t *p, int n, const struct heca_frame *f)
{
	struct heca_frame e = *f, d;
	uint8_t *buf = malloc((size_t)n);

	CHECK(buf != NULL);
	CHECK(heca_wire_encode(buf, &e) == HECA_WIRE_HDR);
	CHECK(memcmp(buf, p, HECA_WIRE_HDR) == 0);
	if (f->payload_len)
		memcpy(buf + HECA_WIRE_HDR, f->payload, f->payload_len);
	CHECK(heca_wire_decode(buf, (size_t)n, &d) == n);
	check_same(f, &d);
	/* One byte short of a frame is always a wait, never an error or an over-read. */
	CHECK(heca_wire_decode(buf, (size_t)n - 1, &d) == -EAGAIN);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;

	while (off < size) {
		struct heca_frame f;
		int n = heca_wire_decode(data + off, size - off, &f);

		if (n < 0) {
			/* A real receiver waits on -EAGAIN and drops the peer otherwise. */
			CHECK(n == -EAGAIN || n == -EPROTO || n == -EBADMSG);
			CHECK(n != -EAGAIN || size - off < HECA_WIRE_HDR + HECA_WIRE_MAX_PAYLOAD);
			break;
		}
		CHECK((size_t)n == HECA_WIRE_HDR + f.payload_len && (size_t)n <= size - off);
		CHECK(f.payload_len ? f.payload == data + off + HECA_WIRE_HDR : f.payload == NULL);
		CHECK(f.version == HECA_WIRE_VERSION && f.flags == 0);
		CHECK(heca_wire_opname(f.opcode)[0] != '?');
		check_reencode(data + off, n, &f);
		off += (size_t)n;
	}
	return 0;
}
