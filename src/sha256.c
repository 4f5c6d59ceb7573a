// SPDX-License-Identifier: MIT
/*
 * sha256.c - SHA-256 and HMAC-SHA256, written from FIPS 180-4 and RFC 2104. Small and slow
 * enough for what it does: a few MACs per connection set-up, never per page.
 */
#include "sha256.h"

#include <string.h>

static const uint32_t k256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static inline uint32_t ror(uint32_t x, int n)
{
	return (x >> n) | (x << (32 - n));
}

static void compress(uint32_t h[8], const uint8_t *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, hh;

	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
	for (int i = 0; i < 64; i++) {
		uint32_t t1 = hh + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) +
			      k256[i] + w[i];
		uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
	}
	h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
	heca__wipe(w, sizeof(w));
}

void heca__sha256_init(struct heca_sha256 *c)
{
	static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
				       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
	memcpy(c->h, iv, sizeof(iv));
	c->bytes = 0;
	c->nbuf = 0;
}

void heca__sha256_update(struct heca_sha256 *c, const void *data, size_t len)
{
	const uint8_t *p = data;

	c->bytes += len;
	if (c->nbuf) {
		size_t k = HECA_SHA256_BLOCK - c->nbuf < len ? HECA_SHA256_BLOCK - c->nbuf : len;
		memcpy(c->buf + c->nbuf, p, k);
		c->nbuf += k;
		p += k;
		len -= k;
		if (c->nbuf < HECA_SHA256_BLOCK)
			return;
		compress(c->h, c->buf);
		c->nbuf = 0;
	}
	for (; len >= HECA_SHA256_BLOCK; p += HECA_SHA256_BLOCK, len -= HECA_SHA256_BLOCK)
		compress(c->h, p);
	memcpy(c->buf, p, len);
	c->nbuf = len;
}

void heca__sha256_final(struct heca_sha256 *c, uint8_t out[HECA_SHA256_LEN])
{
	uint64_t bits = c->bytes * 8;
	uint8_t pad[HECA_SHA256_BLOCK + 8] = {0x80};
	size_t n = (c->nbuf < 56 ? 56 : 120) - c->nbuf;

	for (int i = 0; i < 8; i++)
		pad[n + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
	heca__sha256_update(c, pad, n + 8);
	for (int i = 0; i < 8; i++) {
		out[4 * i] = (uint8_t)(c->h[i] >> 24);
		out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
		out[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
		out[4 * i + 3] = (uint8_t)c->h[i];
	}
	heca__wipe(c, sizeof(*c));
}

void heca__hmac_sha256(const uint8_t *key, size_t keylen, const void *msg, size_t len,
		       uint8_t out[HECA_SHA256_LEN])
{
	uint8_t k[HECA_SHA256_BLOCK] = {0}, pad[HECA_SHA256_BLOCK], inner[HECA_SHA256_LEN];
	struct heca_sha256 c;

	if (keylen > HECA_SHA256_BLOCK) {
		heca__sha256_init(&c);
		heca__sha256_update(&c, key, keylen);
		heca__sha256_final(&c, k);
	} else if (keylen) {
		memcpy(k, key, keylen);
	}
	for (int i = 0; i < HECA_SHA256_BLOCK; i++)
		pad[i] = k[i] ^ 0x36;
	heca__sha256_init(&c);
	heca__sha256_update(&c, pad, sizeof(pad));
	heca__sha256_update(&c, msg, len);
	heca__sha256_final(&c, inner);
	for (int i = 0; i < HECA_SHA256_BLOCK; i++)
		pad[i] = k[i] ^ 0x5c;
	heca__sha256_init(&c);
	heca__sha256_update(&c, pad, sizeof(pad));
	heca__sha256_update(&c, inner, sizeof(inner));
	heca__sha256_final(&c, out);
	heca__wipe(k, sizeof(k));
	heca__wipe(pad, sizeof(pad));
	heca__wipe(inner, sizeof(inner));
}

void heca__wipe(void *p, size_t len)
{
	memset(p, 0, len);
	/* The compiler must assume the bytes are read here, so the memset stays. */
	__asm__ __volatile__("" : : "r"(p) : "memory");
}
