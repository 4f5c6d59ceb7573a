/* SPDX-License-Identifier: MIT */
/*
 * qsort_work.h - the `heca bench qsort` workload: fill an array of 64-bit keys, sort it in place
 * with a parallel quicksort, verify it; usable on any memory (a heca region, malloc, mmap).
 */
#ifndef HECA_BENCH_QSORT_WORK_H
#define HECA_BENCH_QSORT_WORK_H

#include <stddef.h>
#include <stdint.h>

/* Called with the fraction done (0..1, non-decreasing, 1 at the end). Calls come from the
 * worker threads but never two at once; keep it cheap. */
typedef void (*qw_progress_fn)(void *arg, double fraction);

/*
 * Fill keys[0..n) with pseudo-random keys derived from (seed, index), so the content does not
 * depend on threads, and store an order-independent checksum of the multiset in *checksum_out
 * (may be NULL). threads == 0 means one per online CPU; thread creation failures fall back to
 * the calling thread. Never fails.
 */
void qw_fill(uint64_t *keys, size_t n, uint64_t seed, unsigned threads, uint64_t *checksum_out);

/* The checksum qw_fill() reports, computed over keys[0..n) (any order). */
uint64_t qw_checksum(const uint64_t *keys, size_t n, unsigned threads);

/*
 * Sort keys[0..n) ascending, in place, with `threads` threads (0: one per online CPU; the
 * caller's thread is one of them). Extra memory is O(n / 64Ki + threads) plus O(log n) stack
 * per thread. Threads that cannot be started leave their share to the caller's thread.
 * Returns 0, or -ENOMEM (array untouched) if the small work queue cannot be allocated.
 */
int qw_sort(uint64_t *keys, size_t n, unsigned threads);

/* qw_sort() with a progress callback (progress may be NULL). */
int qw_sort_progress(uint64_t *keys, size_t n, unsigned threads, qw_progress_fn progress,
		     void *arg);

/*
 * Check that keys[0..n) is sorted ascending and that its checksum equals `checksum`.
 * Returns 0 if so, -EILSEQ otherwise.
 */
int qw_verify(const uint64_t *keys, size_t n, uint64_t checksum, unsigned threads);

/*
 * qw_verify() that also tells where: *first_bad (may be NULL) gets the first index i with
 * keys[i] > keys[i + 1], or n when the order is right but the checksum differs.
 */
int qw_verify_at(const uint64_t *keys, size_t n, uint64_t checksum, unsigned threads,
		 size_t *first_bad);

#endif
