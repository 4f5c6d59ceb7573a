// SPDX-License-Identifier: MIT
/*
 * prefetch.c - the trend detector behind prefetch. Faults only show where prefetch did not
 * reach, so a sequential scan shows deltas a little larger than the window. A thread may scan
 * several places at once (a partition step scans from both ends), so each thread keeps a few
 * streams: a fault near a stream's last one continues it; one near none starts a new stream
 * and fetches nothing more, which is what random access deserves. Large constant deltas (a
 * stride) are found by a majority vote over the thread's recent deltas, after Leap.
 */
#include "prefetch.h"

#include <stdlib.h>

static struct trend *lookup(struct trend_table *tt, uint32_t tid)
{
	struct trend *t;

	for (unsigned int i = 0; i < TREND_THREADS; i++)
		if (tt->t[i].used && tt->t[i].tid == tid)
			return &tt->t[i];
	t = &tt->t[tt->clock++ % TREND_THREADS];
	*t = (struct trend){.tid = tid, .used = true};
	return t;
}

/* The stride, if most recent deltas agree on one that is too large to be a stream's. */
static int64_t majority_stride(const struct trend *t, int64_t local)
{
	int64_t cand = 0;
	unsigned int votes = 0, agree = 0;

	if (t->n < 3)
		return 0;
	for (unsigned int i = 0; i < t->n; i++) {
		if (votes == 0) {
			cand = t->hist[i];
			votes = 1;
		} else {
			votes += t->hist[i] == cand ? 1 : -1u;
		}
	}
	for (unsigned int i = 0; i < t->n; i++)
		agree += t->hist[i] == cand;
	return agree * 2 > t->n && llabs(cand) > local ? cand : 0;
}

/* The thread's stream within reach of vpn, nearest first; NULL if none. */
static struct stream *nearest(struct trend *t, uint64_t vpn, unsigned int w, int64_t *delta)
{
	struct stream *s = NULL;
	int64_t best = 0;

	for (unsigned int i = 0; i < TREND_STREAMS; i++) {
		struct stream *c = &t->s[i];
		int64_t d = (int64_t)(vpn - c->last);
		if (!c->last || llabs(d) > 2 * (int64_t)(c->win ? c->win : w) + 2)
			continue;
		if (!s || llabs(d) < llabs(best)) {
			s = c;
			best = d;
		}
	}
	*delta = best;
	return s;
}

void heca__prefetch_note_write(struct trend_table *tt, uint32_t tid, uint64_t vpn)
{
	int64_t d;
	struct stream *s = nearest(lookup(tt, tid), vpn, 16, &d);
	if (s)
		s->writing = true;
}

struct prefetch_plan heca__prefetch_plan(struct trend_table *tt, uint32_t tid, uint64_t vpn,
					 unsigned int w, unsigned int max, bool write)
{
	struct trend *t = lookup(tt, tid);
	struct prefetch_plan plan = {.mode = PF_MODE_NONE, .window = w};
	unsigned int grown = w * 8 < max ? w * 8 : max;
	struct stream *s = NULL;
	int64_t delta, best = 0;

	/* Deltas between the thread's consecutive faults, for the stride vote. */
	if (t->last) {
		t->hist[t->pos] = (int64_t)(vpn - t->last);
		t->pos = (t->pos + 1) % TREND_HIST;
		if (t->n < TREND_HIST)
			t->n++;
	}
	t->last = vpn;
	t->clock++;

	/* The stream this fault continues: the nearest one within reach of its window. */
	s = nearest(t, vpn, w, &best);
	if (!s) {
		int64_t stride = majority_stride(t, 2 * (int64_t)w + 2);
		/* A new stream, in the slot used longest ago. */
		s = &t->s[0];
		for (unsigned int i = 1; i < TREND_STREAMS; i++)
			if (t->s[i].stamp < s->stamp)
				s = &t->s[i];
		*s = (struct stream){.last = vpn, .win = w, .stamp = t->clock, .writing = write};
		if (stride) {
			plan.mode = PF_MODE_STRIDE;
			plan.stride = stride;
		}
		return plan;
	}
	delta = best;
	s->last = vpn;
	s->stamp = t->clock;
	if (s->win < w)
		s->win = w;
	/* Direction: the sign of this and the previous delta of the stream. */
	if (delta > 0 && s->dir > 0) {
		plan.mode = PF_MODE_AHEAD;
		s->win = s->win * 2 < grown ? s->win * 2 : grown;
	} else if (delta < 0 && s->dir < 0) {
		plan.mode = PF_MODE_BEHIND;
		s->win = s->win * 2 < grown ? s->win * 2 : grown;
	} else {
		plan.mode = delta > 0 ? PF_MODE_AHEAD : delta < 0 ? PF_MODE_BEHIND : PF_MODE_AROUND;
		if (s->dir != 0 && (delta > 0) != (s->dir > 0))
			plan.mode = PF_MODE_AROUND; /* turned: a walk back and forth */
		s->win = w;
	}
	s->dir = delta > 0 ? 1 : delta < 0 ? -1 : 0;
	s->writing |= write;
	plan.window = s->win;
	plan.write = s->writing;
	return plan;
}
