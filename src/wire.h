/* SPDX-License-Identifier: MIT */
/*
 * wire.h - heca's frame format: a fixed 48-byte little-endian header and an optional payload.
 * The decoder is a pure function over a byte buffer; it allocates nothing. See docs/protocol.md.
 */
#ifndef HECA_WIRE_H
#define HECA_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define HECA_WIRE_MAGIC 0x41434548u /* "HECA" as bytes on the wire */
#define HECA_WIRE_VERSION 1
#define HECA_WIRE_HDR 48
#define HECA_WIRE_PAGE 4096u
#define HECA_WIRE_MAX_PAGES 256u /* pages in one READ/WRITE: 1 MiB */
#define HECA_WIRE_MAX_PAYLOAD (HECA_WIRE_MAX_PAGES * HECA_WIRE_PAGE)
#define HECA_WIRE_HELLO_LEN 40
#define HECA_WIRE_HELLO_REPLY_LEN 72
#define HECA_WIRE_AUTH_LEN 64       /* client_nonce[32] mac[32] */
#define HECA_WIRE_AUTH_REPLY_LEN 32 /* mac2[32] */
#define HECA_WIRE_STAT_LEN 40
#define HECA_WIRE_CLONE_LEN 16 /* destination demander[16] */

enum heca_op {
	HECA_OP_HELLO = 0x01,	/* payload: cluster[16] demander[16] u32 channel u32 session */
	HECA_OP_ALLOC = 0x02,	/* segment, page = size in pages */
	HECA_OP_FREE = 0x03,	/* segment */
	HECA_OP_READ = 0x04,	/* segment, page, count; reply carries count pages */
	HECA_OP_WRITE = 0x05,	/* segment, page, count, count pages of payload */
	HECA_OP_STAT = 0x06,	/* reply: 5 x u64 (capacity, used, segments, demanders, mine) */
	HECA_OP_ECHO = 0x07,	/* payload up to 1 MiB echoed back: raw transport measurements */
	HECA_OP_AUTH = 0x08,	/* client_nonce[32] mac[32]; reply: mac2[32] (see auth.h) */
	HECA_OP_CLONE = 0x09,	/* payload: demander[16]; reply page = pages copied */
	HECA_OP_DISCARD = 0x0a, /* segment, page, count (any u32); reply page = pages freed */
	HECA_OP_RESIZE = 0x0b,	/* segment, page = new size in pages (> 0) */
	HECA_OP_DROPALL = 0x0c, /* every segment of the demander; reply page = pages freed */
	HECA_OP_ERROR = 0x7f,	/* status = errno; sent before a peer is disconnected */
};

#define HECA_OP_REPLY 0x80 /* opcode bit: this frame answers request req_id */

/*
 * HELLO reply payload (HECA_WIRE_HELLO_REPLY_LEN bytes): sponsor_id[16] u64 capacity_pages
 * u64 used_pages u32 flags u32 reserved nonce[32]. The nonce is all zero unless
 * HECA_HELLO_AUTH is set in flags.
 */
#define HECA_HELLO_REPLY_OFF_FLAGS 32
#define HECA_HELLO_REPLY_OFF_NONCE 40
#define HECA_HELLO_AUTH 0x1u /* flags: AUTH must succeed before any other request */

/* Channel kinds named in HELLO: which traffic a connection carries. */
enum heca_channel {
	HECA_CHAN_CONTROL = 0,
	HECA_CHAN_FAULT = 1,
	HECA_CHAN_PREFETCH = 2,
	HECA_CHAN_BULK = 3,
};

struct heca_frame {
	uint8_t opcode; /* with HECA_OP_REPLY for replies */
	uint8_t flags;
	uint16_t version;
	uint64_t req_id;
	uint32_t segment;
	int32_t status; /* 0, or a positive Linux errno value in replies/errors */
	uint64_t page;
	uint32_t count;
	uint32_t payload_len;
	const uint8_t *payload; /* points into the decoded buffer; NULL if payload_len == 0 */
};

/*
 * Decode one frame from buf[0..len). Returns the frame's total length (> 0) and fills *f;
 * -EAGAIN if buf holds a valid prefix but not the whole frame; -EPROTO if the header is
 * malformed (magic, version, opcode, lengths, header checksum); -EBADMSG if the payload
 * checksum fails. Never reads outside buf[0..len).
 */
int heca_wire_decode(const void *buf, size_t len, struct heca_frame *f);

/*
 * The total length of the frame whose header starts buf[0..len), once the header is there:
 * > 0, -EAGAIN if fewer than HECA_WIRE_HDR bytes, -EPROTO if the header is malformed (as
 * heca_wire_decode() would say). Lets a receiver size its buffer for the frame under way.
 */
long heca_wire_frame_len(const void *buf, size_t len);

/*
 * Write the 48-byte header for *f into hdr, with checksums over f->payload[0..payload_len).
 * Sets f->version. Returns HECA_WIRE_HDR.
 */
size_t heca_wire_encode(void *hdr, struct heca_frame *f);

/* Bytes of payload a well-formed frame with this opcode/count/status must carry, or -1 if any
 * length up to the maximum is valid (ECHO), or -EPROTO if the combination is invalid. */
long heca_wire_payload_len(uint8_t opcode, uint32_t count, int32_t status);

const char *heca_wire_opname(uint8_t opcode);

/* CRC-32C (Castagnoli) of buf, hardware-accelerated where the CPU has SSE4.2. */
uint32_t heca_crc32c(uint32_t crc, const void *buf, size_t len);

static inline void heca_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void heca_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void heca_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t heca_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t heca_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}
static inline uint64_t heca_get64(const uint8_t *p)
{
	return (uint64_t)heca_get32(p) | ((uint64_t)heca_get32(p + 4) << 32);
}

#endif
