// SPDX-License-Identifier: MIT
/*
 * prefetch.c - the trend detector behind prefetch. Faults only show where prefetch did not
 * reach, so a sequential scan shows deltas a little larger than the window: deltas up to
 * twice the window count as "local", and their sign gives the direction.
 */
#include "prefetch.h"

#include <stdlib.h>

static struct trend *lookup(struct trend_table *tt, uint32_t tid)
{
	struct trend *t;

	for (unsigned int i = 0; i < TREND_THREADS; i++)
		if (tt->t[i].tid == tid && (tid || tt->t[i].n || tt->t[i].last))
			return &tt->t[i];
	t = &tt->t[tt->clock++ % TREND_THREADS];
	*t = (struct trend){.tid = tid};
	return t;
}

struct prefetch_plan heca__prefetch_plan(struct trend_table *tt, uint32_t tid, uint64_t vpn,
					 unsigned int w, unsigned int max)
{
	struct trend *t = lookup(tt, tid);
	struct prefetch_plan plan = {.mode = PF_MODE_AHEAD, .window = w};
	unsigned int grown = w * 8 < max ? w * 8 : max;
	int64_t cand = 0, local_lim;
	unsigned int votes = 0, local = 0, fwd = 0, back = 0, agree = 0;

	if (t->last) {
		t->hist[t->pos] = (int64_t)(vpn - t->last);
		t->pos = (t->pos + 1) % TREND_HIST;
		if (t->n < TREND_HIST)
			t->n++;
	}
	t->last = vpn;
	if (t->win < w)
		t->win = w;
	local_lim = 2 * (int64_t)t->win + 2;
	if (t->n < 3)
		return plan; /* too little history: the default, mostly ahead */
	/* Boyer-Moore majority vote over the deltas, then a count to confirm it. */
	for (unsigned int i = 0; i < t->n; i++) {
		if (votes == 0) {
			cand = t->hist[i];
			votes = 1;
		} else {
			votes += t->hist[i] == cand ? 1 : -1u;
		}
	}
	for (unsigned int i = 0; i < t->n; i++) {
		int64_t d = t->hist[i];
		agree += d == cand;
		if (llabs(d) <= local_lim) {
			local++;
			fwd += d > 0;
			back += d < 0;
		}
	}
	if (agree * 2 > t->n && llabs(cand) > local_lim) {
		plan.mode = PF_MODE_STRIDE;
		plan.stride = cand;
	} else if (local * 2 >= t->n) {
		if (fwd * 4 >= local * 3)
			plan.mode = PF_MODE_AHEAD;
		else if (back * 4 >= local * 3)
			plan.mode = PF_MODE_BEHIND;
		else
			plan.mode = PF_MODE_AROUND;
	} else {
		plan.mode = PF_MODE_NONE; /* random: prefetch would only waste bandwidth */
	}
	/* Leap's window: double while the scan keeps going one way, back to w otherwise. */
	if (plan.mode == PF_MODE_AHEAD || plan.mode == PF_MODE_BEHIND)
		t->win = t->win * 2 < grown ? t->win * 2 : grown;
	else
		t->win = w;
	plan.window = t->win;
	return plan;
}
