// SPDX-License-Identifier: MIT
/*
 * prog_alloc.c - an ordinary program that exercises whatever allocator it is linked with
 * (glibc's, jemalloc, tcmalloc, mimalloc) the way real programs do: thousands of small blocks
 * checked through malloc_usable_size() and realloc(), then MiB-sized blocks from malloc,
 * calloc, realloc, posix_memalign and aligned_alloc, together several times heca's budget,
 * every page written with its own pattern and read back. It knows nothing of heca.
 * Usage: prog_alloc [TOTAL_MIB]. Prints "prog_alloc: OK <checksum>"; exit 0, or 1 with the
 * first bad byte named.
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NSMALL 20000
#define PAGE 4096u

static int fail(const char *what, size_t i)
{
	fprintf(stderr, "prog_alloc: %s (block %zu)\n", what, i);
	return 1;
}

static uint64_t pat(size_t blk, size_t off)
{
	return (blk + 1) * 0x9e3779b97f4a7c15ull ^ (off * 0x2545f4914f6cdd1dull);
}

/* One 8-byte pattern word per 512 bytes: every page written, every page checked. */
static void fill(unsigned char *p, size_t len, size_t blk)
{
	for (size_t off = 0; off + 8 <= len; off += 512) {
		uint64_t v = pat(blk, off);
		memcpy(p + off, &v, 8);
	}
}

static int check(const unsigned char *p, size_t len, size_t blk, uint64_t *sum)
{
	for (size_t off = 0; off + 8 <= len; off += 512) {
		uint64_t v;
		memcpy(&v, p + off, 8);
		if (v != pat(blk, off))
			return 0;
		*sum += v >> 40;
	}
	return 1;
}

int main(int argc, char **argv)
{
	size_t total = (argc > 1 ? strtoull(argv[1], NULL, 10) : 256) << 20;
	static unsigned char *small[NSMALL];
	static size_t small_n[NSMALL];
	unsigned char **big;
	size_t *big_n, nbig = 0, have = 0;
	uint64_t sum = 0;

	/* Small blocks: the allocator's own business; each answers for its size. */
	for (size_t i = 0; i < NSMALL; i++) {
		small_n[i] = 8 + (i * 37) % 2000;
		small[i] = malloc(small_n[i]);
		if (!small[i] || malloc_usable_size(small[i]) < small_n[i])
			return fail("small malloc or malloc_usable_size", i);
		memset(small[i], (int)(i & 255), small_n[i]);
	}
	for (size_t i = 0; i < NSMALL; i += 3) {
		size_t n = small_n[i] * 3;
		unsigned char *q = realloc(small[i], n);
		if (!q || malloc_usable_size(q) < n)
			return fail("small realloc", i);
		for (size_t k = 0; k < small_n[i]; k++)
			if (q[k] != (i & 255))
				return fail("small realloc lost content", i);
		memset(q, (int)(i & 255), n);
		small[i] = q;
		small_n[i] = n;
	}

	/* Big blocks of 1 to 16 MiB by every allocation call, until total is reached. */
	big = calloc(total / (1u << 20) + 16, sizeof(*big));
	big_n = calloc(total / (1u << 20) + 16, sizeof(*big_n));
	if (!big || !big_n)
		return fail("calloc of the block table", 0);
	while (have < total) {
		size_t n = ((nbig * 5) % 16 + 1) << 20;
		void *p = NULL;
		switch (nbig % 5) {
		case 0:
			p = malloc(n);
			break;
		case 1:
			p = calloc(n / 64, 64);
			if (p && ((unsigned char *)p)[n - 1])
				return fail("calloc memory is not zero", nbig);
			break;
		case 2:
			if (posix_memalign(&p, PAGE, n))
				p = NULL;
			if ((uintptr_t)p % PAGE)
				return fail("posix_memalign alignment", nbig);
			break;
		case 3:
			p = aligned_alloc(64, n);
			if ((uintptr_t)p % 64)
				return fail("aligned_alloc alignment", nbig);
			break;
		case 4:
			p = malloc(n / 2);
			if (p) {
				fill(p, n / 2, nbig);
				p = realloc(p, n); /* grown: the first half must survive */
				if (p && !check(p, n / 2, nbig, &sum))
					return fail("realloc lost the content of a big block", nbig);
			}
			break;
		}
		if (!p)
			return fail("big allocation failed", nbig);
		if (malloc_usable_size(p) < n)
			return fail("malloc_usable_size of a big block is too small", nbig);
		fill(p, n, nbig);
		big[nbig] = p;
		big_n[nbig++] = n;
		have += n;
	}
	/* Read everything back twice, with a free and a shrink in between. */
	for (int round = 0; round < 2; round++) {
		sum = 0;
		for (size_t i = 0; i < nbig; i++) {
			if (!big[i])
				continue;
			if (!check(big[i], big_n[i], i, &sum))
				return fail("a big block reads wrong", i);
		}
		for (size_t i = round; i < nbig; i += 4) {
			if (!big[i])
				continue;
			if (round == 0) {
				free(big[i]);
				big[i] = NULL;
			} else {
				unsigned char *q = realloc(big[i], big_n[i] / 2);
				if (!q || !check(q, big_n[i] / 2, i, &sum))
					return fail("a shrunk big block reads wrong", i);
				big[i] = q;
				big_n[i] /= 2;
			}
		}
	}
	for (size_t i = 0; i < NSMALL; i++) {
		for (size_t k = 0; k < small_n[i]; k += 97)
			if (small[i][k] != (i & 255))
				return fail("a small block reads wrong", i);
		free(small[i]);
	}
	for (size_t i = 0; i < nbig; i++)
		free(big[i]);
	free(big);
	free(big_n);
	printf("prog_alloc: OK %llu\n", (unsigned long long)sum);
	return 0;
}
