// SPDX-License-Identifier: MIT
/*
 * prog_mremap.c - an ordinary program that grows a large buffer with mremap (moving it when
 * it must), shrinks it, punches a hole in it with munmap, gives part of it back with
 * madvise(MADV_DONTNEED), takes read access away from part of it and gives it back, and
 * checks every word it wrote after each step.
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

static uint64_t val(size_t off)
{
	uint64_t x = (off + 1) * 0x9e3779b97f4a7c15ull;
	return x ^ (x >> 29);
}

static void fill(char *p, size_t from, size_t to)
{
	for (size_t o = from; o < to; o += STEP)
		*(uint64_t *)(p + o) = val(o);
}

static int check(const char *what, const char *p, size_t from, size_t to, int zero)
{
	for (size_t o = from; o < to; o += STEP) {
		uint64_t want = zero ? 0 : val(o), got = *(const uint64_t *)(p + o);
		if (got != want) {
			fprintf(stderr, "%s: offset %zu is %#llx, want %#llx\n", what, o,
				(unsigned long long)got, (unsigned long long)want);
			return 1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	size_t max = (argc > 1 ? strtoull(argv[1], NULL, 10) : 256) << 20, len = 8 << 20;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *guard;
	int bad = 0, moved = 0;

	if (p == MAP_FAILED)
		return 2;
	fill(p, 0, len);
	while (len < max && !bad) {
		/* A mapping right behind the buffer forces the next growth to move it. */
		guard = mmap(p + len, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			     -1, 0);
		char *q = mremap(p, len, len * 2, MREMAP_MAYMOVE);
		if (q == MAP_FAILED) {
			perror("mremap grow");
			return 2;
		}
		moved += q != p;
		if (guard != MAP_FAILED)
			munmap(guard, 4096);
		p = q;
		bad |= check("after growing", p, 0, len, 0);
		bad |= check("new part reads zero", p, len, len * 2, 1);
		fill(p, len, len * 2);
		len *= 2;
		bad |= check("after filling", p, 0, len, 0);
	}
	/* Shrink to 3/4, in place. */
	{
		size_t nl = len / 4 * 3;
		char *q = mremap(p, len, nl, 0);
		if (q != p) {
			perror("mremap shrink");
			return 2;
		}
		len = nl;
		bad |= check("after shrinking", p, 0, len, 0);
		/* Grow again in place: the part that came back must read zero, not old data. */
		q = mremap(p, len, len + (4 << 20), 0);
		if (q == p) {
			bad |= check("regrown part reads zero", p, len, len + (4 << 20), 1);
			fill(p, len, len + (4 << 20));
			len += 4 << 20;
		}
	}
	/* Give a middle range back: it reads zero, the rest keeps its content. */
	{
		size_t lo = len / 4 & ~(size_t)4095, hi = (len / 2) & ~(size_t)4095;
		madvise(p + lo, hi - lo, MADV_DONTNEED);
		bad |= check("before the discarded range", p, 0, lo, 0);
		bad |= check("discarded range reads zero", p, lo, hi, 1);
		bad |= check("after the discarded range", p, hi, len, 0);
		fill(p, lo, hi);
		bad |= check("discarded range written again", p, 0, len, 0);
	}
	/* Punch a hole with munmap: both sides keep their content. */
	{
		size_t lo = (len / 3) & ~(size_t)4095, hi = lo + (8 << 20);
		munmap(p + lo, hi - lo);
		bad |= check("below the hole", p, 0, lo, 0);
		bad |= check("above the hole", p, hi, len, 0);
		fill(p, 0, lo);
		fill(p, hi, len);
		bad |= check("below the hole, rewritten", p, 0, lo, 0);
		bad |= check("above the hole, rewritten", p, hi, len, 0);
		/* Take read access away from part of it and give it back: content survives
		 * (heca stops sponsoring it and brings its pages home first). */
		if (mprotect(p + hi, (len - hi) / 2 & ~(size_t)4095, PROT_NONE) ||
		    mprotect(p + hi, (len - hi) / 2 & ~(size_t)4095, PROT_READ | PROT_WRITE)) {
			perror("mprotect");
			return 2;
		}
		bad |= check("after PROT_NONE and back", p, hi, len, 0);
		munmap(p, lo);
		munmap(p + hi, len - hi);
	}
	printf("mremap: %s (%d moves)\n", bad ? "WRONG" : "OK", moved);
	return bad;
}
