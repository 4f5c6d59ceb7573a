// SPDX-License-Identifier: MIT
/*
 * prog_resv.c - an ordinary program that reserves address space PROT_NONE and commits it
 * later, as language runtimes do: 256 KiB pieces opened with mprotect (V8's heap pages), 1 MiB
 * regions committed with mmap(MAP_FIXED) inside a large reservation (the JVM's G1), each
 * written and checked after the rest was written; then decommits and recommits them the ways
 * runtimes do and checks what the kernel promises: content kept across mprotect(PROT_NONE)
 * and back, zeros after madvise(MADV_DONTNEED) or mmap(MAP_FIXED, PROT_NONE), and a part made
 * PROT_NONE in the middle of a larger committed range leaving the rest intact.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define STEP 512 /* bytes between checked words: every page */
#define PIECE (256u << 10)
#define REGION (1u << 20)

static uint64_t val(uintptr_t a, unsigned int gen)
{
	uint64_t x = (a + 1 + gen * 0x1000193ull) * 0x9e3779b97f4a7c15ull;
	return x ^ (x >> 29);
}

static void fill(char *p, size_t len, unsigned int gen)
{
	for (size_t o = 0; o < len; o += STEP)
		*(uint64_t *)(p + o) = val((uintptr_t)(p + o), gen);
}

/* gen 0 with zero: every word must read as zero. */
static int check(const char *what, const char *p, size_t len, unsigned int gen, int zero)
{
	for (size_t o = 0; o < len; o += STEP) {
		uint64_t want = zero ? 0 : val((uintptr_t)(p + o), gen),
			 got = *(const uint64_t *)(p + o);
		if (got != want) {
			fprintf(stderr, "%s: offset %zu is %#llx, want %#llx\n", what, o,
				(unsigned long long)got, (unsigned long long)want);
			return 1;
		}
	}
	return 0;
}

static void *reserve(size_t len)
{
	void *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		perror("reserve");
		exit(2);
	}
	return p;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 128;
	size_t npieces = (mib << 20) / 2 / PIECE, nregions = (mib << 20) / 2 / REGION;
	char **piece = calloc(npieces, sizeof(*piece));
	char *heap;
	int bad = 0;

	if (!piece)
		return 2;
	/* V8: each heap page a reservation of its own, opened with mprotect. */
	for (size_t i = 0; i < npieces; i++) {
		piece[i] = reserve(PIECE);
		if (mprotect(piece[i], PIECE, PROT_READ | PROT_WRITE)) {
			perror("mprotect RW");
			return 2;
		}
		fill(piece[i], PIECE, 1);
	}
	/* G1: 1 MiB regions committed one by one inside the heap's reservation. */
	heap = reserve(nregions * REGION * 2);
	for (size_t i = 0; i < nregions; i++) {
		char *r = heap + i * REGION;
		if (mmap(r, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			 -1, 0) != r) {
			perror("commit");
			return 2;
		}
		fill(r, REGION, 1);
	}
	for (size_t i = 0; i < npieces && !bad; i++)
		bad |= check("piece", piece[i], PIECE, 1, 0);
	for (size_t i = 0; i < nregions && !bad; i++)
		bad |= check("region", heap + i * REGION, REGION, 1, 0);
	printf("committed %zu pieces and %zu regions: %s\n", npieces, nregions, bad ? "BAD" : "OK");

	/* Decommit and recommit: a third kept (PROT_NONE and back), a third discarded as V8
	 * does (PROT_NONE, then MADV_DONTNEED), a third unmapped. */
	for (size_t i = 0; i < npieces && !bad; i++) {
		char *p = piece[i];
		if (mprotect(p, PIECE, PROT_NONE))
			return 2;
		if (i % 3 == 1)
			madvise(p, PIECE, MADV_DONTNEED);
		if (i % 3 == 2) {
			munmap(p, PIECE);
			piece[i] = NULL;
		}
	}
	for (size_t i = 0; i < npieces && !bad; i++) {
		if (!piece[i])
			continue;
		if (mprotect(piece[i], PIECE, PROT_READ | PROT_WRITE))
			return 2;
		bad |= check(i % 3 ? "piece after DONTNEED" : "piece after PROT_NONE and back",
			     piece[i], PIECE, 1, i % 3 == 1);
		fill(piece[i], PIECE, 2);
	}
	/* The JVM's uncommit: mmap(MAP_FIXED, PROT_NONE) over every other region; recommitted,
	 * it reads as zero. The middle of the others goes PROT_NONE and back, keeping all. */
	for (size_t i = 0; i < nregions && !bad; i++) {
		char *r = heap + i * REGION;
		if (i % 2 == 0) {
			if (mmap(r, REGION, PROT_NONE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) != r ||
			    mmap(r, REGION, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != r)
				return 2;
			bad |= check("region after uncommit", r, REGION, 0, 1);
		} else {
			if (mprotect(r + REGION / 4, REGION / 2, PROT_NONE) ||
			    mprotect(r + REGION / 4, REGION / 2, PROT_READ | PROT_WRITE))
				return 2;
			bad |= check("region after a PROT_NONE middle", r, REGION, 1, 0);
		}
		fill(r, REGION, 2);
	}
	for (size_t i = 0; i < npieces && !bad; i++)
		if (piece[i])
			bad |= check("piece, second pass", piece[i], PIECE, 2, 0);
	for (size_t i = 0; i < nregions && !bad; i++)
		bad |= check("region, second pass", heap + i * REGION, REGION, 2, 0);
	printf("decommitted and recommitted: %s\n", bad ? "BAD" : "OK");
	return bad;
}
