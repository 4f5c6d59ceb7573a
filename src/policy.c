// SPDX-License-Identifier: MIT
/*
 * policy.c - the replacement policy: two queues of resident pages, as a segmented LRU keeps
 * them.
 *
 * A page that comes in goes on the probation queue; the evictor takes pages from its old end,
 * so that a page touched once (a scan) leaves in the order it came, as plain first-in
 * first-out. A page that leaves goes on the inactive list (stash.c) with its content for a
 * while; touched there, it has shown it is in use and comes back to the protected queue,
 * which the evictor does not take from. The protected queue holds at most half the budget:
 * past that its oldest page moves to the young end of the probation queue (no page-table
 * change, no fault), to leave from there unless it is touched again. A hot set smaller than
 * half the budget thus stays mapped while any number of scanned pages pass through; with the
 * inactive list off nothing is ever reused and the order is plain first-in first-out.
 *
 * userfaultfd gives no accessed bit: a page's only sign of use is a fault, and a mapped page
 * gives none. A protected page that is no longer used is found out only when newer protected
 * pages push it back to probation and it leaves; one still used comes back from the inactive
 * list, a local fault, and is protected again.
 */
#include <errno.h>
#include <stdlib.h>

#include "heca_int.h"
#include "policy.h"

static int ring_init(struct policy_ring *r, uint64_t want)
{
	r->cap = 1024;
	while (r->cap < want)
		r->cap *= 2;
	r->head = r->tail = 0;
	r->e = malloc(r->cap * sizeof(*r->e));
	return r->e ? 0 : -ENOMEM;
}

static uint64_t ring_len(const struct policy_ring *r)
{
	return r->tail - r->head;
}

static bool ring_grow(struct policy_ring *r)
{
	uint64_t ncap = r->cap * 2;
	struct policy_ent *n = malloc(ncap * sizeof(*n));

	if (!n)
		return false;
	for (uint64_t i = r->head; i < r->tail; i++)
		n[i - r->head] = r->e[i & (r->cap - 1)];
	free(r->e);
	r->e = n;
	r->tail -= r->head;
	r->head = 0;
	r->cap = ncap;
	return true;
}

/* At the young end. Out of memory, the page stays resident untracked: the budget overshoots,
 * nothing is lost. */
static void ring_push(struct policy_ring *r, struct policy_ent e)
{
	if (ring_len(r) == r->cap && !ring_grow(r))
		return;
	r->e[r->tail++ & (r->cap - 1)] = e;
}

/* At the old end: the next to be taken. */
static void ring_push_front(struct policy_ring *r, struct policy_ent e)
{
	if (ring_len(r) == r->cap && !ring_grow(r))
		return;
	r->e[--r->head & (r->cap - 1)] = e;
}

static struct policy_ent ring_pop(struct policy_ring *r)
{
	return r->e[r->head++ & (r->cap - 1)];
}

int heca__policy_init(struct heca *h, uint64_t budget)
{
	int rc = ring_init(&h->probation, budget * 2);

	if (!rc)
		rc = ring_init(&h->protected, 0);
	if (rc)
		heca__policy_exit(h);
	return rc;
}

void heca__policy_exit(struct heca *h)
{
	free(h->probation.e);
	free(h->protected.e);
	h->probation.e = h->protected.e = NULL;
}

void heca__policy_admit_locked(struct heca *h, uint32_t seg, uint64_t page, bool reused)
{
	/* Without the inactive list only a write-back's copy can serve a page again: too rare
	 * a sign to protect on, and the order stays first-in first-out. */
	reused &= h->stash_cap > 0;
	ring_push(reused ? &h->protected : &h->probation,
		  (struct policy_ent){.page = page, .seg = seg});
}

void heca__policy_retry_locked(struct heca *h, uint32_t seg, uint64_t page)
{
	ring_push(&h->probation, (struct policy_ent){.page = page, .seg = seg});
}

void heca__policy_first_locked(struct heca *h, uint32_t seg, uint64_t page)
{
	ring_push_front(&h->probation, (struct policy_ent){.page = page, .seg = seg});
}

uint64_t heca__policy_len_locked(const struct heca *h)
{
	return ring_len(&h->probation) + ring_len(&h->protected);
}

uint64_t heca__policy_hot_locked(const struct heca *h)
{
	return ring_len(&h->protected);
}

void heca__policy_unprotect_locked(struct heca *h)
{
	while (ring_len(&h->protected))
		ring_push(&h->probation, ring_pop(&h->protected));
}

bool heca__policy_next_locked(struct heca *h, struct policy_ent *out)
{
	/* Stale entries count as protected until they reach the old end: a little less is
	 * protected then, never more than half the budget. */
	while (ring_len(&h->protected) > h->budget / 2)
		ring_push(&h->probation, ring_pop(&h->protected));
	if (ring_len(&h->probation))
		*out = ring_pop(&h->probation);
	else if (ring_len(&h->protected))
		*out = ring_pop(&h->protected);
	else
		return false;
	return true;
}
