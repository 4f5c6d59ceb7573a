// SPDX-License-Identifier: MIT
/*
 * prog_raw.c - sponsored memory changed with raw system calls that no libc wrapper sees, as
 * Go's runtime and some allocators do: madvise(MADV_DONTNEED) (the range must read as zero,
 * pages heca had sent away included), munmap of a part with ordinary memory mapped there
 * afterwards (it must stay the program's), and mremap moving and growing a block (every page
 * must move with it). Each MiB argument is the size of one block. Prints what it checked and
 * "raw: OK"; exits 1 on the first wrong page.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PG 4096u

static int fails;

static uint8_t pat(uint64_t i, int gen)
{
	return (uint8_t)(i * 131 + (uint64_t)gen * 7 + 1) | 1; /* never zero */
}

static void fill(uint8_t *p, uint64_t n, int gen)
{
	for (uint64_t i = 0; i < n; i++)
		memset(p + i * PG, pat(i, gen), PG);
}

/* Pages [0, n) of p hold pat(i + off, gen) (gen < 0: zero). */
static uint64_t check(const char *what, const uint8_t *p, uint64_t n, uint64_t off, int gen)
{
	uint64_t bad = 0;
	for (uint64_t i = 0; i < n; i++) {
		uint8_t want = gen < 0 ? 0 : pat(i + off, gen);
		if (p[i * PG] != want || p[i * PG + PG - 1] != want) {
			if (!bad)
				printf("%s: page %llu reads %u, want %u\n", what,
				       (unsigned long long)i, p[i * PG], want);
			bad++;
		}
	}
	if (bad)
		fails++;
	return bad;
}

static uint8_t *map(uint64_t n)
{
	void *p = mmap(NULL, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	return p;
}

int main(int argc, char **argv)
{
	uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 0) : 64, n = mib * 256, h = n / 2;
	uint8_t *a = map(n), *b = map(n), *c = map(n), *q, *r;

	/* 1. DONTNEED over the first half of a: zero, the rest as written; then written again. */
	fill(a, n, 1);
	fill(b, n, 2); /* pushes most of a out to the sponsors */
	if (syscall(SYS_madvise, a, h * PG, MADV_DONTNEED)) {
		perror("madvise");
		return 2;
	}
	check("after raw DONTNEED, the zapped half", a, h, 0, -1);
	check("after raw DONTNEED, the other half", a + h * PG, n - h, h, 1);
	fill(a, n, 3);
	check("written again after DONTNEED", a, n, 0, 3);
	printf("madvise(DONTNEED) of %llu MiB: zero, then written again\n",
	       (unsigned long long)(h / 256));

	/* 2. munmap of the first half of b, ordinary memory mapped there, the rest churned. */
	if (syscall(SYS_munmap, b, h * PG)) {
		perror("munmap");
		return 2;
	}
	q = mmap(b, h * PG, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (q != b) {
		printf("mmap at the unmapped half: %p, not %p\n", (void *)q, (void *)b);
		return 2;
	}
	memset(q, 0x5a, h * PG);
	for (int round = 0; round < 3; round++) {
		fill(a, n, 4 + round);
		check("the other half of b while a is churned", b + h * PG, n - h, h, 2);
	}
	for (uint64_t k = 0; k < h * PG; k += 512)
		if (q[k] != 0x5a) {
			printf("memory mapped over the unmapped half changed at %llu: %u\n",
			       (unsigned long long)k, q[k]);
			fails++;
			break;
		}
	printf("munmap of %llu MiB: new memory there stays the program's\n",
	       (unsigned long long)(h / 256));

	/* 3. mremap c to twice its size, moving it: every page moved; the new half is zero. */
	fill(c, n, 8);
	fill(a, n, 9); /* pushes c out */
	r = (uint8_t *)syscall(SYS_mremap, c, n * PG, 2 * n * PG, MREMAP_MAYMOVE, 0);
	if (r == MAP_FAILED) {
		perror("mremap");
		return 2;
	}
	check("after raw mremap, the moved pages", r, n, 0, 8);
	check("after raw mremap, the grown part", r + n * PG, n, 0, -1);
	fill(r, 2 * n, 10);
	fill(a, n, 11);
	check("after raw mremap, written again", r, 2 * n, 0, 10);
	printf("mremap of %llu MiB to twice the size: every page moved\n", (unsigned long long)mib);

	if (fails)
		return 1;
	printf("raw: OK\n");
	return 0;
}
