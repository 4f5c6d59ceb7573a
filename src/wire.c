// SPDX-License-Identifier: MIT
/*
 * wire.c - encoding and decoding of heca frames. The decoder trusts nothing: every length is
 * checked against the buffer and the opcode before a byte beyond the header is looked at.
 */
#include "wire.h"

#include <errno.h>

/* Header layout (offsets in bytes, all little-endian). */
enum {
	OFF_MAGIC = 0,
	OFF_VERSION = 4,
	OFF_OPCODE = 6,
	OFF_FLAGS = 7,
	OFF_REQID = 8,
	OFF_SEGMENT = 16,
	OFF_STATUS = 20,
	OFF_PAGE = 24,
	OFF_COUNT = 32,
	OFF_PLEN = 36,
	OFF_PCRC = 40,
	OFF_HCRC = 44,
};

const char *heca_wire_opname(uint8_t opcode)
{
	switch (opcode & (uint8_t)~HECA_OP_REPLY) {
	case HECA_OP_HELLO: return "HELLO";
	case HECA_OP_ALLOC: return "ALLOC";
	case HECA_OP_FREE: return "FREE";
	case HECA_OP_READ: return "READ";
	case HECA_OP_WRITE: return "WRITE";
	case HECA_OP_STAT: return "STAT";
	case HECA_OP_ECHO: return "ECHO";
	case HECA_OP_AUTH: return "AUTH";
	case HECA_OP_CLONE: return "CLONE";
	case HECA_OP_DISCARD: return "DISCARD";
	case HECA_OP_RESIZE: return "RESIZE";
	case HECA_OP_DROPALL: return "DROPALL";
	case HECA_OP_ERROR: return "ERROR";
	}
	return "?";
}

long heca_wire_payload_len(uint8_t opcode, uint32_t count, int32_t status)
{
	int reply = !!(opcode & HECA_OP_REPLY);
	uint8_t op = opcode & (uint8_t)~HECA_OP_REPLY;

	if (status < 0 || status > 4095)
		return -EPROTO;
	if (!reply && status != 0 && op != HECA_OP_ERROR)
		return -EPROTO; /* only ERROR frames and replies carry a status */
	if (op < HECA_OP_HELLO || (op > HECA_OP_DROPALL && op != HECA_OP_ERROR))
		return -EPROTO; /* unknown opcode: caught here, or an error reply would pass */
	if (op == HECA_OP_READ || op == HECA_OP_WRITE) {
		if (count == 0 || count > HECA_WIRE_MAX_PAGES)
			return -EPROTO;
	}
	if (op == HECA_OP_ERROR)
		return reply ? -EPROTO : 0;
	if (reply && status != 0)
		return 0; /* an error reply carries no payload */
	switch (op) {
	case HECA_OP_HELLO:
		return reply ? HECA_WIRE_HELLO_REPLY_LEN : HECA_WIRE_HELLO_LEN;
	case HECA_OP_ALLOC:
	case HECA_OP_FREE:
	case HECA_OP_DISCARD: /* count is a run length here, not a payload size: any value */
	case HECA_OP_RESIZE:
	case HECA_OP_DROPALL:
		return 0;
	case HECA_OP_CLONE:
		return reply ? 0 : HECA_WIRE_CLONE_LEN;
	case HECA_OP_READ:
		return reply ? (long)count * HECA_WIRE_PAGE : 0;
	case HECA_OP_WRITE:
		return reply ? 0 : (long)count * HECA_WIRE_PAGE;
	case HECA_OP_STAT:
		return reply ? HECA_WIRE_STAT_LEN : 0;
	case HECA_OP_ECHO:
		return -1;
	case HECA_OP_AUTH:
		return reply ? HECA_WIRE_AUTH_REPLY_LEN : HECA_WIRE_AUTH_LEN;
	}
	return -EPROTO;
}

/* Decode and check the header at p (HECA_WIRE_HDR bytes) into *f. Returns 0 or -EPROTO. */
static int decode_header(const uint8_t *p, struct heca_frame *f)
{
	long want;

	if (heca_get32(p + OFF_MAGIC) != HECA_WIRE_MAGIC)
		return -EPROTO;
	if (heca_crc32c(0, p, OFF_HCRC) != heca_get32(p + OFF_HCRC))
		return -EPROTO;
	f->version = heca_get16(p + OFF_VERSION);
	if (f->version != HECA_WIRE_VERSION)
		return -EPROTO;
	f->opcode = p[OFF_OPCODE];
	f->flags = p[OFF_FLAGS];
	f->req_id = heca_get64(p + OFF_REQID);
	f->segment = heca_get32(p + OFF_SEGMENT);
	f->status = (int32_t)heca_get32(p + OFF_STATUS);
	f->page = heca_get64(p + OFF_PAGE);
	f->count = heca_get32(p + OFF_COUNT);
	f->payload_len = heca_get32(p + OFF_PLEN);
	if (f->flags != 0)
		return -EPROTO; /* no flags are defined in version 1 */
	want = heca_wire_payload_len(f->opcode, f->count, f->status);
	if (want == -EPROTO)
		return -EPROTO;
	if (want >= 0 && (uint32_t)want != f->payload_len)
		return -EPROTO;
	if (f->payload_len > HECA_WIRE_MAX_PAYLOAD)
		return -EPROTO;
	if (f->payload_len == 0 && heca_get32(p + OFF_PCRC) != 0)
		return -EPROTO;
	return 0;
}

long heca_wire_frame_len(const void *buf, size_t len)
{
	struct heca_frame f;
	int rc;

	if (len < HECA_WIRE_HDR)
		return -EAGAIN;
	rc = decode_header(buf, &f);
	return rc ? rc : (long)HECA_WIRE_HDR + f.payload_len;
}

int heca_wire_decode(const void *buf, size_t len, struct heca_frame *f)
{
	const uint8_t *p = buf;
	int rc;

	if (len < HECA_WIRE_HDR)
		return -EAGAIN;
	rc = decode_header(p, f);
	if (rc)
		return rc;
	if (len - HECA_WIRE_HDR < f->payload_len)
		return -EAGAIN;
	f->payload = f->payload_len ? p + HECA_WIRE_HDR : NULL;
	if (f->payload_len &&
	    heca_crc32c(0, f->payload, f->payload_len) != heca_get32(p + OFF_PCRC))
		return -EBADMSG;
	return (int)(HECA_WIRE_HDR + f->payload_len);
}

size_t heca_wire_encode(void *hdr, struct heca_frame *f)
{
	uint8_t *p = hdr;

	f->version = HECA_WIRE_VERSION;
	heca_put32(p + OFF_MAGIC, HECA_WIRE_MAGIC);
	heca_put16(p + OFF_VERSION, f->version);
	p[OFF_OPCODE] = f->opcode;
	p[OFF_FLAGS] = f->flags;
	heca_put64(p + OFF_REQID, f->req_id);
	heca_put32(p + OFF_SEGMENT, f->segment);
	heca_put32(p + OFF_STATUS, (uint32_t)f->status);
	heca_put64(p + OFF_PAGE, f->page);
	heca_put32(p + OFF_COUNT, f->count);
	heca_put32(p + OFF_PLEN, f->payload_len);
	heca_put32(p + OFF_PCRC, f->payload_len ? heca_crc32c(0, f->payload, f->payload_len) : 0);
	heca_put32(p + OFF_HCRC, heca_crc32c(0, p, OFF_HCRC));
	return HECA_WIRE_HDR;
}
