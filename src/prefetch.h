/* SPDX-License-Identifier: MIT */
/*
 * prefetch.h - which pages to fetch along with a faulting one: a per-thread trend of recent
 * fault addresses (a majority vote over deltas, after Leap) picks a window ahead, behind or
 * around the fault, a stride, or nothing when the access is random.
 */
#ifndef HECA_PREFETCH_H
#define HECA_PREFETCH_H

#include <stdint.h>

#define TREND_HIST 8
#define TREND_THREADS 64

struct trend {
	uint32_t tid;
	uint32_t n;   /* deltas recorded, up to TREND_HIST */
	uint32_t pos; /* next slot in hist */
	uint64_t last; /* virtual page number of the thread's last fault */
	uint32_t win;  /* current window: grows while a scan keeps its direction */
	int64_t hist[TREND_HIST];
};

struct trend_table {
	struct trend t[TREND_THREADS];
	uint32_t clock; /* round-robin replacement */
};

enum prefetch_mode { PF_MODE_NONE, PF_MODE_AHEAD, PF_MODE_BEHIND, PF_MODE_AROUND, PF_MODE_STRIDE };

struct prefetch_plan {
	enum prefetch_mode mode;
	int64_t stride; /* PF_MODE_STRIDE: pages between fetched pages */
	unsigned int window; /* pages to fetch */
};

/* Record a fault of thread tid at virtual page vpn and say how to prefetch around it, starting
 * from a window of w pages; a scan that keeps its direction gets up to 8w (at most max) pages
 * per fault. Not thread-safe: the engine calls it under its lock. */
struct prefetch_plan heca__prefetch_plan(struct trend_table *tt, uint32_t tid, uint64_t vpn,
					 unsigned int w, unsigned int max);

#endif
