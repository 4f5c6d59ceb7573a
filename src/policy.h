/* SPDX-License-Identifier: MIT */
/*
 * policy.h - the replacement policy: in what order resident pages leave local memory.
 *
 * The engine tells the policy when a page becomes resident and how (new, or reused: it came
 * back from the inactive list); the evictor asks it for candidates in the order they should
 * leave, and hands back those that cannot leave yet. Candidates may be stale (the page left
 * by another way meanwhile): the evictor checks each against the page's state. Everything
 * else about the order is the policy's own, so another policy can take its place behind these
 * calls. Caller holds h->lock throughout.
 */
#ifndef HECA_POLICY_H
#define HECA_POLICY_H

#include <stdbool.h>
#include <stdint.h>

struct heca;

struct policy_ent {
	uint64_t page;
	uint32_t seg;
};

/* A queue of resident pages in the order they came. */
struct policy_ring {
	struct policy_ent *e;
	uint64_t head, tail, cap; /* cap is a power of two */
};

int heca__policy_init(struct heca *h, uint64_t budget);
void heca__policy_exit(struct heca *h);

/* Page `page` of store segment `seg` became resident; reused: it came back from a local copy
 * of a page that had just left (the inactive list or a write-back's copy), so it is in use. */
void heca__policy_admit_locked(struct heca *h, uint32_t seg, uint64_t page, bool reused);
/* A candidate that cannot leave now: it goes back, to leave later. */
void heca__policy_retry_locked(struct heca *h, uint32_t seg, uint64_t page);
/* A resident page that should leave before any other (written back again at once). */
void heca__policy_first_locked(struct heca *h, uint32_t seg, uint64_t page);
/* How many candidates there are at most (stale ones included). */
uint64_t heca__policy_len_locked(const struct heca *h);
/* The next candidate, taken out of the order; false when there is none. */
bool heca__policy_next_locked(struct heca *h, struct policy_ent *out);
/* Nothing on probation can leave now (write-backs failing, say): every protected page becomes
 * a candidate again, so that clean ones can still make room. */
void heca__policy_unprotect_locked(struct heca *h);
/* Pages kept as in use (the protected queue, stale entries included). */
uint64_t heca__policy_hot_locked(const struct heca *h);

#endif
