// SPDX-License-Identifier: MIT
/*
 * stats.c - the fault-latency histogram: constant-time insertion on the fault path, quantiles
 * computed only when someone asks.
 */
#include "stats.h"

static unsigned int bucket(uint64_t v)
{
	unsigned int lg, sub;

	if (v < HIST_SUB)
		return (unsigned int)v;
	lg = 63u - (unsigned int)__builtin_clzll(v); /* >= 4 */
	sub = (unsigned int)(v >> (lg - 4)) & (HIST_SUB - 1);
	return (lg - 3) * HIST_SUB + sub;
}

static uint64_t bucket_low(unsigned int b)
{
	unsigned int lg, sub;

	if (b < HIST_SUB)
		return b;
	lg = b / HIST_SUB + 3;
	sub = b % HIST_SUB;
	return ((uint64_t)(HIST_SUB + sub)) << (lg - 4);
}

void heca__hist_add(struct heca_hist *h, uint64_t ns)
{
	uint64_t m = atomic_load_explicit(&h->max, memory_order_relaxed);

	atomic_fetch_add_explicit(&h->b[bucket(ns)], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum, ns, memory_order_relaxed);
	while (ns > m &&
	       !atomic_compare_exchange_weak_explicit(&h->max, &m, ns, memory_order_relaxed,
						      memory_order_relaxed))
		;
}

uint64_t heca__hist_quantile(struct heca_hist *h, double q)
{
	uint64_t total = 0, want, acc = 0;

	for (unsigned int i = 0; i < HIST_N; i++)
		total += atomic_load_explicit(&h->b[i], memory_order_relaxed);
	if (!total)
		return 0;
	want = (uint64_t)(q * (double)total);
	if (want >= total)
		want = total - 1;
	for (unsigned int i = 0; i < HIST_N; i++) {
		acc += atomic_load_explicit(&h->b[i], memory_order_relaxed);
		if (acc > want) /* report the middle of the bucket */
			return (bucket_low(i) + bucket_low(i + 1)) / 2;
	}
	return atomic_load_explicit(&h->max, memory_order_relaxed);
}
