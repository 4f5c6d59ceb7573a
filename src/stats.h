/* SPDX-License-Identifier: MIT */
/*
 * stats.h - libheca's counters (relaxed atomics, written by the engine and evictor, read by
 * anyone) and the fault-latency histogram (log-linear buckets, ~6% resolution).
 */
#ifndef HECA_STATS_H
#define HECA_STATS_H

#include <stdatomic.h>
#include <stdint.h>

struct heca_counters {
	atomic_uint_least64_t faults_read, faults_write, faults_wp, faults_zero, faults_wb_hit,
		faults_deferred, pages_fetched, pages_prefetched, pages_written_back,
		pages_dropped_clean, pages_dropped_zero, pages_evicted, pages_lost, writeback_errors, bytes_sent,
		bytes_received, fetch_net_ns, fetch_net_count, fetch_install_ns, fetch_install_count,
		pages_repaired, pages_unzappable, pages_zapped_outside, reads_queued, faults_stash_hit, pages_aged;
};

#define HIST_SUB 16 /* sub-buckets per power of two */
#define HIST_N (64 * HIST_SUB)

struct heca_hist {
	atomic_uint_least64_t b[HIST_N];
	atomic_uint_least64_t count, sum, max;
};

static inline void heca__count(atomic_uint_least64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

void heca__hist_add(struct heca_hist *h, uint64_t ns);
/* The value below which fraction q (0..1) of the samples lie. */
uint64_t heca__hist_quantile(struct heca_hist *h, double q);

#endif
