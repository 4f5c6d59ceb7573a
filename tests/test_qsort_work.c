// SPDX-License-Identifier: MIT
/*
 * test_qsort_work.c - the qsort benchmark's workload on plain memory: fill, parallel sort and
 * verify over sizes, thread counts and awkward inputs; corrupted arrays must be rejected.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "../bench/qsort_work.h"
#include "harness.h"

static uint64_t *alloc_keys(size_t n)
{
	/* One extra key so that n == 0 still gets a valid pointer. */
	uint64_t *k = malloc((n + 1) * sizeof(*k));
	ASSERT_TRUE(k != NULL);
	return k;
}

static void check_sorted_plain(const uint64_t *k, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (k[i - 1] > k[i])
			T_FAILF("not sorted at %zu", i - 1);
}

struct prog {
	double last;
	unsigned calls;
};

static void on_progress(void *arg, double f)
{
	struct prog *p = arg;
	if (f < p->last || f > 1.0)
		T_FAILF("progress went from %f to %f", p->last, f);
	p->last = f;
	p->calls++;
}

static void case_random(size_t n, unsigned threads)
{
	uint64_t *k = alloc_keys(n), sum = 0, sum2;
	struct prog pr = {0};

	qw_fill(k, n, 1234 + n, threads, &sum);
	sum2 = qw_checksum(k, n, threads);
	ASSERT_TRUE(sum == sum2);
	ASSERT_EQ(qw_sort_progress(k, n, threads, on_progress, &pr), 0);
	ASSERT_TRUE(pr.calls >= 1);
	ASSERT_TRUE(pr.last == 1.0);
	check_sorted_plain(k, n);
	ASSERT_EQ(qw_verify(k, n, sum, threads), 0);
	/* Sorting sorted input is a classic quicksort worst case; it must stay correct. */
	ASSERT_EQ(qw_sort(k, n, threads), 0);
	ASSERT_EQ(qw_verify(k, n, sum, threads), 0);
	free(k);
}

/* The same seed gives the same keys whatever the thread count. */
static void case_deterministic(void)
{
	size_t n = 100000;
	uint64_t *a = alloc_keys(n), *b = alloc_keys(n), sa, sb;

	qw_fill(a, n, 7, 1, &sa);
	qw_fill(b, n, 7, 3, &sb);
	ASSERT_TRUE(sa == sb);
	for (size_t i = 0; i < n; i++)
		ASSERT_TRUE(a[i] == b[i]);
	qw_fill(b, n, 8, 3, &sb);
	ASSERT_TRUE(sa != sb);
	free(a);
	free(b);
}

static void case_pattern(const char *name, size_t n, unsigned threads,
			 uint64_t (*gen)(size_t, size_t))
{
	uint64_t *k = alloc_keys(n), sum;

	for (size_t i = 0; i < n; i++)
		k[i] = gen(i, n);
	sum = qw_checksum(k, n, threads);
	if (qw_sort(k, n, threads) != 0)
		T_FAILF("%s: sort failed", name);
	check_sorted_plain(k, n);
	if (qw_verify(k, n, sum, threads) != 0)
		T_FAILF("%s: verify failed (n=%zu threads=%u)", name, n, threads);
	free(k);
}

static uint64_t gen_equal(size_t i, size_t n)
{
	(void)i;
	(void)n;
	return 42;
}

static uint64_t gen_sorted(size_t i, size_t n)
{
	(void)n;
	return (uint64_t)i * 3;
}

static uint64_t gen_reverse(size_t i, size_t n)
{
	return (uint64_t)(n - i);
}

static uint64_t gen_few(size_t i, size_t n)
{
	(void)n;
	return (i * 2654435761u) % 3;
}

static uint64_t gen_organ(size_t i, size_t n)
{
	return i < n / 2 ? i : n - i;
}

static void case_corrupt(void)
{
	size_t n = 200000, bad = 0;
	uint64_t *k = alloc_keys(n), sum;

	qw_fill(k, n, 99, 2, &sum);
	ASSERT_EQ(qw_sort(k, n, 2), 0);
	ASSERT_EQ(qw_verify_at(k, n, sum, 2, &bad), 0);

	/* Out of order: swap two neighbours that differ. */
	uint64_t t = k[1000];
	k[1000] = k[1001];
	k[1001] = t;
	ASSERT_EQ(qw_verify_at(k, n, sum, 2, &bad), -EILSEQ);
	ASSERT_EQ(bad, 1000);
	ASSERT_EQ(qw_verify(k, n, sum, 1), -EILSEQ);
	k[1001] = k[1000];
	k[1000] = t;
	ASSERT_EQ(qw_verify(k, n, sum, 2), 0);

	/* A disorder right at a seam between two threads' parts is still found. */
	size_t seam = n / 2;
	t = k[seam - 1];
	k[seam - 1] = k[seam];
	k[seam] = t;
	ASSERT_EQ(qw_verify_at(k, n, sum, 2, &bad), -EILSEQ);
	ASSERT_EQ(bad, seam - 1);
	k[seam] = k[seam - 1];
	k[seam - 1] = t;

	/* Still sorted but a key changed (a lost write would look like this). */
	t = k[5000];
	k[5000] = k[4999];
	ASSERT_EQ(qw_verify_at(k, n, sum, 2, &bad), -EILSEQ);
	ASSERT_EQ(bad, n);
	k[5000] = t;
	ASSERT_EQ(qw_verify(k, n, sum, 4), 0);

	/* Wrong checksum for an otherwise fine array. */
	ASSERT_EQ(qw_verify(k, n, sum + 1, 2), -EILSEQ);
	free(k);
}

int main(void)
{
	static const size_t sizes[] = {0, 1, 2, 1000, 1000000};
	static const unsigned threads[] = {1, 2, 4};

	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
		for (size_t t = 0; t < sizeof(threads) / sizeof(threads[0]); t++)
			case_random(sizes[s], threads[t]);
	case_random(300000, 0);
	case_deterministic();
	for (unsigned t = 1; t <= 4; t *= 2) {
		case_pattern("all-equal", 1000000, t, gen_equal);
		case_pattern("sorted", 1000000, t, gen_sorted);
		case_pattern("reverse", 1000000, t, gen_reverse);
		case_pattern("few-distinct", 1000000, t, gen_few);
		case_pattern("organ-pipe", 1000000, t, gen_organ);
		case_pattern("reverse-small", 1000, t, gen_reverse);
	}
	case_corrupt();
	printf("test_qsort_work: ok\n");
	return T_PASS;
}
