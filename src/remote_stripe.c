// SPDX-License-Identifier: MIT
/*
 * remote_stripe.c - the remote store's stripes: which sponsors hold a copy of each, which pages
 * of a copy are stale, which copies are good, and where a new stripe goes (placement.c ranks
 * the sponsors). Every function here is called with r->mu held.
 */
#include <stdlib.h>
#include <string.h>

#include "heca_int.h"
#include "remote_int.h"

static unsigned int stripe_slot(uint32_t seg, uint64_t idx)
{
	return (unsigned int)((((uint64_t)seg << 40) ^ idx) * 0x9e3779b97f4a7c15ull >> 48);
}

struct stripe *heca__stripe_find_locked(struct remote *r, uint32_t seg, uint64_t idx)
{
	for (struct stripe *s = r->st[stripe_slot(seg, idx)]; s; s = s->next)
		if (s->seg == seg && s->idx == idx)
			return s;
	return NULL;
}

static bool row_any(const struct remote *r, const uint64_t *row)
{
	for (size_t w = 0; row && w < stripe_words(r); w++)
		if (row[w])
			return true;
	return false;
}

/* Mark or clear pages [off, off + count) of the stripe (offsets within it) as not current at
 * member mi, if it holds the stripe. Marking may fail for memory: then the holder is dropped
 * instead, which is safe (its other copies are lost to reads, never wrong). */
void heca__stripe_set_stale_locked(struct remote *r, struct stripe *s, unsigned int mi,
				   uint64_t off, uint64_t count, bool stale)
{
	int i = slot_of(s, mi);
	uint64_t *row;

	if (i < 0)
		return;
	if (!s->stale) {
		if (!stale)
			return;
		s->stale = calloc(MAX_R * stripe_words(r), 8);
		if (!s->stale) {
			heca__stripe_drop_holder_locked(r, s, mi);
			return;
		}
	}
	row = stale_row(r, s, (unsigned int)i);
	for (uint64_t b = off; b < off + count && b < r->stripe_pages; b++) {
		if (stale)
			row[b / 64] |= 1ull << (b % 64);
		else
			row[b / 64] &= ~(1ull << (b % 64));
	}
}

/* Whether holder slot i has a current copy of every page in [off, off + count). */
bool heca__stripe_range_current(const struct remote *r, const struct stripe *s, unsigned int i,
				uint64_t off, uint64_t count)
{
	const uint64_t *row = stale_row(r, s, i);

	for (uint64_t b = off; row && b < off + count && b < r->stripe_pages; b++)
		if (row[b / 64] & (1ull << (b % 64)))
			return false;
	return true;
}

/* Pages of word w current at some holder other than slot skip (or at any if skip >= n), up
 * or not. */
uint64_t heca__stripe_current_elsewhere(const struct remote *r, const struct stripe *s, size_t w,
					unsigned int skip, bool up_only)
{
	uint64_t cur = 0;

	for (unsigned int j = 0; j < s->n; j++) {
		const uint64_t *row = stale_row(r, s, j);
		if (j == skip || (up_only && mstate(r->m[s->holder[j]]) != M_UP))
			continue;
		cur |= s->bits[w] & ~(row ? row[w] : 0);
	}
	return cur;
}

/*
 * A good copy: its holder is up, not draining, and lacks no page that another holder has
 * current. Pages current nowhere are held locally by the demander (their write-back is
 * retried), so they make no copy worse; but a full holder that lacks any page is not good:
 * the stripe should move to a sponsor with room for them.
 */
bool heca__stripe_good_locked(const struct remote *r, const struct stripe *s, unsigned int i)
{
	struct member *m = r->m[s->holder[i]];
	const uint64_t *row = stale_row(r, s, i);

	if (mstate(m) != M_UP || m->draining)
		return false;
	if (!row)
		return true;
	if (m->full && row_any(r, row))
		return false;
	for (size_t w = 0; w < stripe_words(r); w++)
		if (row[w] & heca__stripe_current_elsewhere(r, s, w, i, false))
			return false;
	return true;
}

/* Whether holder slot i lacks a page that an up holder has current: a copy can be mended. */
bool heca__stripe_mendable_locked(const struct remote *r, const struct stripe *s, unsigned int i)
{
	const uint64_t *row = stale_row(r, s, i);

	for (size_t w = 0; row && w < stripe_words(r); w++)
		if (row[w] & heca__stripe_current_elsewhere(r, s, w, i, true))
			return true;
	return false;
}

unsigned int heca__stripe_good_count_locked(const struct remote *r, const struct stripe *s)
{
	unsigned int g = 0;

	for (unsigned int i = 0; i < s->n; i++)
		g += heca__stripe_good_locked(r, s, i);
	return g;
}

void heca__stripe_drop_holder_locked(struct remote *r, struct stripe *s, unsigned int mi)
{
	int i = slot_of(s, mi);
	size_t words = stripe_words(r);

	if (i < 0)
		return;
	s->n--;
	s->holder[i] = s->holder[s->n];
	if (s->stale) {
		memmove(stale_row(r, s, (unsigned int)i), stale_row(r, s, s->n), words * 8);
		memset(stale_row(r, s, s->n), 0, words * 8);
	}
	r->m[mi]->stripes--;
	pthread_cond_broadcast(&r->repair_cond);
}

/* Rank the members for a stripe, best first. */
void heca__stripe_rank_locked(struct remote *r, uint32_t seg, uint64_t idx, unsigned int *order)
{
	uint64_t keys[HECA_PLACE_MAX];
	double w[HECA_PLACE_MAX];

	for (unsigned int i = 0; i < r->nm; i++) {
		struct member *m = r->m[i];
		keys[i] = m->key;
		/* Weighted by capacity (a stable weight: free space changes all the time and
		 * would move stripes back and forth); members that cannot take a stripe now
		 * (down, draining, full) rank last. */
		w[i] = eligible(m) ? (double)(m->capacity_pages ? m->capacity_pages : 1) : 0;
	}
	heca__place_rank(r->base.h->opt.cluster_id, seg, idx, keys, w, r->nm, order);
}

/* The stripe, placed on up to R eligible members if it is new. NULL if no member can take it. */
struct stripe *heca__stripe_get_locked(struct remote *r, uint32_t seg, uint64_t idx)
{
	struct stripe *s = heca__stripe_find_locked(r, seg, idx);
	unsigned int order[HECA_PLACE_MAX];
	size_t words = (r->stripe_pages + 63) / 64;

	if (s && s->n > 0)
		return s;
	if (!s) {
		s = calloc(1, sizeof(*s) + words * 8);
		if (!s)
			return NULL;
		s->seg = seg;
		s->idx = idx;
		s->target = NO_MEMBER;
		s->next = r->st[stripe_slot(seg, idx)];
		r->st[stripe_slot(seg, idx)] = s;
		r->nstripes++;
	}
	/* New, or every copy was lost: place it afresh (lost pages stay lost). */
	memset(s->bits, 0, words * 8);
	free(s->stale);
	s->stale = NULL;
	heca__stripe_rank_locked(r, seg, idx, order);
	for (unsigned int i = 0; i < r->nm && s->n < r->replicas; i++) {
		if (!eligible(r->m[order[i]]))
			break;
		s->holder[s->n++] = (uint8_t)order[i];
		r->m[order[i]]->stripes++;
	}
	return s->n ? s : NULL;
}
