// SPDX-License-Identifier: MIT
/*
 * fuzz_sponsor.c - libFuzzer harness for the sponsor's request handling: arbitrary bytes as a
 * client stream, or records turned into well-formed frames so the store's paths are reached.
 *
 * Input: byte 0 = mode. bit 0: start with a valid HELLO (and, with a key, a valid AUTH);
 * bit 1: structured records, else raw stream; bits 2-3: chunk size the stream arrives in;
 * bits 4-6: capacity (8..15 pages); bit 7: the sponsor has a cluster key, so AUTH is required.
 * A record is 6 bytes: op (bit 7 picks one of two connections, bit 6 corrupts one byte),
 * segment, page lo, page hi, count, arg (fill byte / ECHO length / corrupted offset). Op 0x0f
 * is a HELLO, 0x0e an AUTH with the right MAC for the connection's nonce (0x08 is an AUTH
 * whose MAC is the fill byte: wrong).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "sponsor.h"
#include "wire.h"

#define MAX_STREAM (2u << 20)
#define MAX_RECORDS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct client {
	struct sponsor_conn c;
	uint8_t *in; /* bytes received but not yet consumed */
	size_t have;
	int dead;
	uint8_t dem;
};

static uint8_t g_frame[HECA_WIRE_HDR + HECA_WIRE_MAX_PAYLOAD];
static struct sponsor_buf g_out;
static const uint8_t g_key[HECA_AUTH_KEY_MIN] = "fuzz-key-fuzz-key-fuzz-key-fuzz";
static const uint8_t g_sponsor_id[16] = {0x5f};

/* Every reply must decode; anything else is a bug in the sponsor. */
static void check_replies(void)
{
	size_t off = 0;

	while (off < g_out.len) {
		struct heca_frame f;
		int n = heca_wire_decode(g_out.data + off, g_out.len - off, &f);
		if (n <= 0)
			abort();
		off += (size_t)n;
	}
	g_out.len = 0;
}

/* Deliver len bytes to a client in chunks of `chunk`, as recv() might, serving as hecad. */
static void deliver(struct sponsor *sp, struct client *cl, const uint8_t *p, size_t len,
		    size_t chunk)
{
	while (len && !cl->dead) {
		size_t k = chunk < len ? chunk : len, off = 0;

		if (cl->have + k > MAX_STREAM + sizeof(g_frame))
			return;
		memcpy(cl->in + cl->have, p, k);
		cl->have += k;
		p += k;
		len -= k;
		for (;;) {
			long r = sponsor_handle(sp, &cl->c, cl->in + off, cl->have - off, &g_out);
			check_replies();
			if (r < 0) {
				cl->dead = 1;
				return;
			}
			if (r == 0)
				break;
			off += (size_t)r;
		}
		memmove(cl->in, cl->in + off, cl->have - off);
		cl->have -= off;
	}
}

static size_t encode(uint8_t op, uint64_t req, uint32_t seg, uint64_t page, uint32_t count,
		     uint32_t plen, uint8_t fill)
{
	struct heca_frame f = {.opcode = op, .req_id = req, .segment = seg, .page = page,
			       .count = count, .payload_len = plen};

	if (plen > HECA_WIRE_MAX_PAYLOAD)
		plen = f.payload_len = HECA_WIRE_MAX_PAYLOAD;
	for (uint32_t i = 0; i < plen; i++)
		g_frame[HECA_WIRE_HDR + i] = (uint8_t)(fill + i / HECA_WIRE_PAGE);
	f.payload = plen ? g_frame + HECA_WIRE_HDR : NULL;
	heca_wire_encode(g_frame, &f);
	return HECA_WIRE_HDR + plen;
}

static size_t encode_hello(uint8_t dem)
{
	uint8_t p[HECA_WIRE_HELLO_LEN] = {0};
	struct heca_frame f = {.opcode = HECA_OP_HELLO, .payload = g_frame + HECA_WIRE_HDR,
			       .payload_len = sizeof(p)};

	p[16] = dem;
	memcpy(g_frame + HECA_WIRE_HDR, p, sizeof(p));
	heca_wire_encode(g_frame, &f);
	return HECA_WIRE_HDR + sizeof(p);
}

/* An AUTH that proves the key for the nonce the sponsor sent this connection (the harness
 * reads it from the connection state instead of parsing the HELLO reply). */
static size_t encode_auth(const struct client *cl, uint64_t req)
{
	static const uint8_t cluster[16];
	uint8_t *p = g_frame + HECA_WIRE_HDR;
	struct heca_frame f = {.opcode = HECA_OP_AUTH, .req_id = req, .payload = p,
			       .payload_len = HECA_WIRE_AUTH_LEN};

	memset(p, (int)req, 32); /* client nonce */
	if (heca__auth_mac(g_key, sizeof(g_key), HECA_AUTH_LABEL_DEMANDER, cluster,
			   cl->c.demander_id, g_sponsor_id, cl->c.nonce, p, p + 32))
		abort();
	heca_wire_encode(g_frame, &f);
	return HECA_WIRE_HDR + HECA_WIRE_AUTH_LEN;
}

static void greet(struct sponsor *sp, struct client *cl, size_t chunk, int keyed)
{
	deliver(sp, cl, g_frame, encode_hello(cl->dem), chunk);
	if (keyed && !cl->dead) {
		if (cl->c.state != SPONSOR_CONN_AUTH)
			abort();
		deliver(sp, cl, g_frame, encode_auth(cl, 0), chunk);
		if (cl->dead || cl->c.state != SPONSOR_CONN_READY)
			abort(); /* the right MAC must be accepted */
	}
}

static void reconnect(struct sponsor *sp, struct client *cl, size_t chunk, int keyed)
{
	sponsor_conn_exit(sp, &cl->c);
	sponsor_conn_init(&cl->c);
	cl->have = 0;
	cl->dead = 0;
	greet(sp, cl, chunk, keyed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Odd sizes split headers and payloads at many offsets; 1-byte steps are left to the unit
	 * test because they make every iteration slow. */
	static const size_t chunks[4] = {SIZE_MAX, 47, 1021, 12289};
	struct sponsor_config cfg = {0};
	static uint8_t *inbuf[2];
	struct client cl[2] = {{.dem = 1}, {.dem = 2}};
	struct sponsor *sp;
	uint8_t mode;
	size_t chunk;
	int keyed;

	if (size < 1)
		return 0;
	mode = data[0];
	data++;
	size--;
	chunk = chunks[(mode >> 2) & 3];
	cfg.capacity = (8u + ((mode >> 4) & 7)) * HECA_WIRE_PAGE;
	keyed = !!(mode & 0x80);
	if (keyed) {
		cfg.key = g_key;
		cfg.keylen = sizeof(g_key);
		cfg.has_id = 1;
		memcpy(cfg.sponsor_id, g_sponsor_id, 16);
	}
	if (sponsor_open(&cfg, &sp))
		abort();
	for (int i = 0; i < 2; i++) {
		sponsor_conn_init(&cl[i].c);
		/* Allocated once: a fresh 3 MiB per iteration would dominate the run time. */
		if (!inbuf[i] && !(inbuf[i] = malloc(MAX_STREAM + sizeof(g_frame))))
			abort();
		cl[i].in = inbuf[i];
		if (mode & 1)
			greet(sp, &cl[i], chunk, keyed);
	}

	if (!(mode & 2)) {
		deliver(sp, &cl[0], data, size > MAX_STREAM ? MAX_STREAM : size, chunk);
	} else {
		for (size_t r = 0; r + 6 <= size && r / 6 < MAX_RECORDS; r += 6) {
			const uint8_t *q = data + r;
			struct client *c = &cl[q[0] >> 7];
			uint8_t op = q[0] & 0x0f;
			uint32_t count = q[4] % 18; /* 0 and 17 reach the count checks */
			uint64_t page = (uint64_t)q[2] | ((uint64_t)q[3] << 8);
			long want = heca_wire_payload_len(op, count, 0);
			uint32_t plen;
			size_t len;

			if (c->dead)
				reconnect(sp, c, chunk, keyed);
			if (op == HECA_OP_ALLOC)
				page = (page & 0xff) + (q[3] == 0xff ? UINT64_MAX - 0xff : 0);
			if (op == 0x0f)
				op = HECA_OP_HELLO;
			plen = want >= 0 ? (uint32_t)want : want == -1 ? (uint32_t)q[5] * 16 : 0;
			if (op == 0x0e)
				len = encode_auth(c, r);
			else
				len = encode(op, r, q[1] & 7, page, count, plen, q[5]);
			if (q[0] & 0x40)
				g_frame[q[5] % len] ^= (uint8_t)(1u << (q[1] >> 5));
			deliver(sp, c, g_frame, len, chunk);
		}
	}

	if (sponsor_check(sp))
		abort();
	for (int i = 0; i < 2; i++) {
		sponsor_conn_exit(sp, &cl[i].c);
	}
	if (sponsor_check(sp))
		abort();
	sponsor_close(sp);
	return 0;
}
