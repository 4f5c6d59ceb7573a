// SPDX-License-Identifier: MIT
/*
 * crc32c.c - CRC-32C for page checksums: SSE4.2 instructions where the CPU has them (chosen at
 * run time), a table otherwise. Both give the same value; the unit test checks they agree.
 */
#include "wire.h"

#include <pthread.h>
#include <string.h>

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
		table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

uint32_t heca__crc32c_sw(uint32_t crc, const void *buf, size_t len);
uint32_t heca__crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	pthread_once(&table_once, table_init);
	crc = ~crc;
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		v ^= crc;
		crc = table[7][v & 0xff] ^ table[6][(v >> 8) & 0xff] ^ table[5][(v >> 16) & 0xff] ^
		      table[4][(v >> 24) & 0xff] ^ table[3][(v >> 32) & 0xff] ^
		      table[2][(v >> 40) & 0xff] ^ table[1][(v >> 48) & 0xff] ^ table[0][v >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
	return ~crc;
}

#if defined(__x86_64__)
uint32_t heca__crc32c_hw(uint32_t crc, const void *buf, size_t len);
__attribute__((target("sse4.2"))) uint32_t heca__crc32c_hw(uint32_t crc, const void *buf,
							    size_t len)
{
	const uint8_t *p = buf;
	uint64_t c = ~crc;

	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return ~(uint32_t)c;
}
#endif

uint32_t heca_crc32c(uint32_t crc, const void *buf, size_t len)
{
#if defined(__x86_64__)
	static int hw = -1; /* a benign race: every thread computes the same value */
	if (__atomic_load_n(&hw, __ATOMIC_RELAXED) < 0)
		__atomic_store_n(&hw, __builtin_cpu_supports("sse4.2") ? 1 : 0, __ATOMIC_RELAXED);
	if (__atomic_load_n(&hw, __ATOMIC_RELAXED))
		return heca__crc32c_hw(crc, buf, len);
#endif
	return heca__crc32c_sw(crc, buf, len);
}
