/* SPDX-License-Identifier: MIT */
/*
 * sha256.h - SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) that allocate nothing, so that
 * heca's threads can authenticate inside a program whose allocator they must not call.
 */
#ifndef HECA_SHA256_H
#define HECA_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define HECA_SHA256_LEN	  32
#define HECA_SHA256_BLOCK 64

/* Caller-allocated; init, feed any number of times, final. Not thread-safe per context. */
struct heca_sha256 {
	uint32_t h[8];
	uint64_t bytes;
	uint8_t buf[HECA_SHA256_BLOCK];
	size_t nbuf;
};

void heca__sha256_init(struct heca_sha256 *c);
void heca__sha256_update(struct heca_sha256 *c, const void *data, size_t len);
/* Writes the digest and wipes the context. */
void heca__sha256_final(struct heca_sha256 *c, uint8_t out[HECA_SHA256_LEN]);

/* out = HMAC-SHA256(key, msg). Any key length; a key longer than a block is hashed first, as
 * RFC 2104 says. Thread-safe; wipes what it derived from the key. */
void heca__hmac_sha256(const uint8_t *key, size_t keylen, const void *msg, size_t len,
		       uint8_t out[HECA_SHA256_LEN]);

/* Overwrite bytes in a way the compiler may not optimise out. */
void heca__wipe(void *p, size_t len);

#endif
