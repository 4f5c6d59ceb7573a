/* SPDX-License-Identifier: MIT */
/*
 * prefetch.h - which pages to fetch along with a faulting one: a per-thread trend of recent
 * fault addresses (a majority vote over deltas, after Leap) picks a window ahead, behind or
 * around the fault, a stride, or nothing when the access is random.
 */
#ifndef HECA_PREFETCH_H
#define HECA_PREFETCH_H

#include <stdbool.h>
#include <stdint.h>

#define TREND_HIST 8
#define TREND_THREADS 64
#define TREND_STREAMS 4

/* One place a thread is scanning. */
struct stream {
	uint64_t last;	 /* virtual page number of its last fault */
	uint32_t win;	 /* current window: grows while the scan keeps its direction */
	int8_t dir;	 /* sign of its last delta */
	bool writing;	 /* the thread writes what it scans here: fetch pages writable */
	uint64_t stamp;	 /* when it was last continued (per-thread fault count) */
};

struct trend {
	uint32_t tid;
	bool used;
	uint32_t n;    /* deltas recorded, up to TREND_HIST */
	uint32_t pos;  /* next slot in hist */
	uint64_t last; /* virtual page number of the thread's last fault */
	uint64_t clock;
	int64_t hist[TREND_HIST];
	struct stream s[TREND_STREAMS];
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
	bool write;	     /* map them writable: the stream writes what it reads */
};

/* Record a fault of thread tid at virtual page vpn and say how to prefetch around it, starting
 * from a window of w pages; a scan that keeps its direction gets up to 8w (at most max) pages
 * per fault. Not thread-safe: the engine calls it under its lock. */
struct prefetch_plan heca__prefetch_plan(struct trend_table *tt, uint32_t tid, uint64_t vpn,
					 unsigned int w, unsigned int max, bool write);

/* A write by thread tid to a mapped clean page at vpn: the stream it belongs to writes, so
 * its next pages are fetched writable (no write-protect fault each). Under the engine lock. */
void heca__prefetch_note_write(struct trend_table *tt, uint32_t tid, uint64_t vpn);

#endif
