// SPDX-License-Identifier: MIT
/*
 * stash.c - the inactive list: local copies of pages recently taken out of the program's page
 * tables, each also current at a sponsor.
 *
 * userfaultfd gives heca no accessed bit, so it cannot tell a page the program keeps using from
 * one it touched once. The inactive list makes the signal: a page leaves the page tables as it
 * does without it (written back if dirty, zapped), but its content stays here for a while, in
 * a slot of an arena that is part of the budget. A touch in that time is a local fault, served
 * by a copy with no network, and the policy (policy.c) protects the page from eviction: a page
 * in use comes back once and stays, as the kernel's active/inactive lists keep a referenced
 * page. A page nobody touches ages out of the list in the order it came and costs nothing
 * then, its sponsor holding the same content. A scan passes through once and leaves. The list
 * sizes itself by how often its copies are used (adapt).
 *
 * A page goes on the list as it leaves, in the order pages leave; a dirty one's copy is the one
 * its write-back sends. Every copy here is either clean (a sponsor holds the same content) or
 * that of a write-back still in flight, which keeps its own copy in the write-back table until
 * acknowledged: dropping one never loses anything, and whatever changes a page other than a
 * fault (a discard, a zap, a reshape, an unregistration) simply forgets its copy. A failed
 * write-back takes the copy with it (the page is kept mapped instead, engine.c). A page with a
 * copy here is REMOTE with PF_WB set, as one whose write-back is in flight, so that nothing
 * fetches it or writes it back meanwhile; PF_WB goes when neither table holds the page, and
 * the write-back table is looked up first. Caller holds h->lock throughout.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "heca_int.h"
#include "util.h"

struct stash_ent {
	uint64_t page;
	uint32_t seg;
	uint32_t hnext;	     /* hash chain, index + 1 */
	uint32_t older, newer; /* age order, index + 1; the free list uses newer */
};

static uint32_t stash_slot(const struct heca *h, uint32_t seg, uint64_t page)
{
	uint64_t k = (((uint64_t)seg << 40) ^ page) * 0x9e3779b97f4a7c15ull;
	return (uint32_t)(k >> 32) & (h->stash_hmask);
}

int heca__stash_init(struct heca *h, uint64_t cap)
{
	uint64_t hs = 1;
	void *mem;

	if (!cap)
		return 0;
	while (hs < cap)
		hs <<= 1;
	/* Slots are touched as they fill and stay mapped: the list is part of the budget. */
	mem = mmap(NULL, cap * PAGE_SZ, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED)
		return -errno;
	h->stash_ent = calloc(cap, sizeof(*h->stash_ent));
	h->stash_hash = calloc(hs, sizeof(*h->stash_hash));
	if (!h->stash_ent || !h->stash_hash) {
		munmap(mem, cap * PAGE_SZ);
		free(h->stash_ent);
		free(h->stash_hash);
		h->stash_ent = NULL;
		h->stash_hash = NULL;
		return -ENOMEM;
	}
	h->stash_mem = mem;
	h->stash_cap = (uint32_t)cap;
	h->stash_hmask = (uint32_t)(hs - 1);
	for (uint32_t i = 0; i < cap; i++)
		h->stash_ent[i].newer = i + 2 <= cap ? i + 2 : 0;
	h->stash_free = 1;
	h->stash_lim = h->stash_cap;
	return 0;
}

void heca__stash_exit(struct heca *h)
{
	if (h->stash_mem)
		munmap(h->stash_mem, (size_t)h->stash_cap * PAGE_SZ);
	free(h->stash_ent);
	free(h->stash_hash);
	h->stash_mem = NULL;
	h->stash_ent = NULL;
	h->stash_hash = NULL;
	h->stash_cap = h->stash_n = 0;
}

static uint32_t find(const struct heca *h, uint32_t seg, uint64_t page)
{
	uint32_t i;

	if (!h->stash_n)
		return 0;
	for (i = h->stash_hash[stash_slot(h, seg, page)]; i; i = h->stash_ent[i - 1].hnext)
		if (h->stash_ent[i - 1].seg == seg && h->stash_ent[i - 1].page == page)
			return i;
	return 0;
}

/* Take entry i (index + 1) out of the hash, the age order, and into the free list. */
static void release(struct heca *h, uint32_t i)
{
	struct stash_ent *e = &h->stash_ent[i - 1];
	uint32_t *pp = &h->stash_hash[stash_slot(h, e->seg, e->page)];

	while (*pp != i)
		pp = &h->stash_ent[*pp - 1].hnext;
	*pp = e->hnext;
	if (e->older)
		h->stash_ent[e->older - 1].newer = e->newer;
	else
		h->stash_oldest = e->newer;
	if (e->newer)
		h->stash_ent[e->newer - 1].older = e->older;
	else
		h->stash_newest = e->older;
	e->hnext = e->older = 0;
	e->newer = h->stash_free;
	h->stash_free = i;
	h->stash_n--;
}

static uint8_t *data_of(const struct heca *h, uint32_t i)
{
	return h->stash_mem + (size_t)(i - 1) * PAGE_SZ;
}

const uint8_t *heca__stash_find_locked(const struct heca *h, uint32_t seg, uint64_t page)
{
	uint32_t i = find(h, seg, page);
	return i ? data_of(h, i) : NULL;
}

/* Entry i's copy goes; so does PF_WB unless a write-back of the page is in flight. */
static void let_go(struct heca *h, uint32_t i, uint8_t *b)
{
	struct stash_ent *e = &h->stash_ent[i - 1];

	if (b && !heca__wb_find_locked(h, e->seg, e->page))
		*b &= (uint8_t)~PF_WB;
	release(h, i);
}

void heca__stash_forget_locked(struct heca *h, uint32_t seg, uint64_t page, uint8_t *b)
{
	uint32_t i;

	if (!(*b & PF_WB) || !(i = find(h, seg, page)))
		return; /* no copy here */
	let_go(h, i, b);
}

void heca__stash_drop_locked(struct heca *h, uint32_t seg, uint64_t page)
{
	uint32_t i = find(h, seg, page);
	if (i) {
		release(h, i);
		h->stash_win_hits++; /* used again, if from the write-back's copy */
	}
}

void heca__stash_wb_done_locked(struct heca *h, struct seg *s, uint64_t page, bool ok)
{
	uint32_t i = find(h, s->id, page);

	if (!i)
		return;
	if (ok && pstate(s->st[page]) == PS_REMOTE)
		s->st[page] |= PF_WB; /* still out: its copy stays on the list */
	else
		release(h, i);
}

void heca__stash_forget_range_locked(struct heca *h, struct seg *s, uint64_t lo, uint64_t hi)
{
	if (!h->stash_n || lo >= hi)
		return;
	if (hi - lo <= h->stash_n) {
		for (uint64_t p = lo; p < hi; p++)
			heca__stash_forget_locked(h, s->id, p, &s->st[p]);
		return;
	}
	/* A range larger than the list: walk the list instead. */
	for (uint32_t i = h->stash_oldest, next; i; i = next) {
		struct stash_ent *e = &h->stash_ent[i - 1];
		next = e->newer;
		if (e->seg == s->id && e->page >= lo && e->page < hi)
			let_go(h, i, &s->st[e->page]);
	}
}

/* Make room by letting the oldest copy go: its page stays REMOTE, its sponsor has it. */
static void age_out(struct heca *h)
{
	uint32_t i = h->stash_oldest;
	struct stash_ent *e = &h->stash_ent[i - 1];
	struct seg *s = heca__seg_by_page_locked(h, e->seg, e->page);

	let_go(h, i, s ? &s->st[e->page] : NULL);
	heca__count(&h->c.pages_aged, 1);
}

void heca__stash_shrink_locked(struct heca *h, uint64_t n)
{
	while (n-- && h->stash_n)
		age_out(h);
}

bool heca__stash_sample(struct heca *h)
{
	uint32_t shift = __atomic_load_n(&h->stash_shift, __ATOMIC_RELAXED);

	if (!h->stash_cap)
		return false;
	return (__atomic_fetch_add(&h->stash_seq, 1, __ATOMIC_RELAXED) & ((1u << shift) - 1)) == 0;
}

/* Give the memory of free slots back to the system, a run of adjacent ones per call: the
 * list is smaller now and the budget maps what it gave up. */
static void give_back(struct heca *h)
{
	uint8_t *isfree = calloc(h->stash_cap, 1);

	if (!isfree)
		return; /* kept: it is reused as the list fills again */
	for (uint32_t i = h->stash_free; i; i = h->stash_ent[i - 1].newer)
		isfree[i - 1] = 1;
	for (uint32_t i = 0; i < h->stash_cap;) {
		uint32_t j = i;
		if (!isfree[i]) {
			i++;
			continue;
		}
		while (j < h->stash_cap && isfree[j])
			j++;
		madvise(h->stash_mem + (size_t)i * PAGE_SZ, (size_t)(j - i) * PAGE_SZ,
			MADV_DONTNEED);
		i = j;
	}
	free(isfree);
}

/*
 * Size the list by its use, a window of copies at a time. Copies nobody uses (a scan, a
 * random walk over more than the budget) cost a page copy each and take room the budget could
 * map: while fewer than one copy in 32 is used, the list halves, down to a sixteenth, and only
 * one leaving page in two, four... gets a copy, so that a copy lives as long, counted in pages
 * leaving, as in the full list, and the use still measured is that at the same distance. Once
 * one copy in 8 is used again it doubles back. What it gives up goes to the budget, and what it
 * takes back the evictor makes room for.
 */
static void adapt(struct heca *h)
{
	uint64_t puts = h->stash_win_puts, hits = h->stash_win_hits;
	uint32_t shift = h->stash_shift, lim;

	if (puts < HECA_MAX(64ull, (uint64_t)h->stash_lim))
		return;
	h->stash_win_puts = h->stash_win_hits = 0;
	if (hits * 32 < puts && shift < 4)
		shift++;
	else if (hits * 8 >= puts && shift > 0)
		shift--;
	if (shift == h->stash_shift)
		return;
	lim = HECA_MIN(h->stash_cap, HECA_MAX(16u, h->stash_cap >> shift));
	__atomic_store_n(&h->stash_shift, shift, __ATOMIC_RELAXED);
	if (h->stash_n > lim)
		heca__stash_shrink_locked(h, h->stash_n - lim);
	if (lim < h->stash_lim)
		give_back(h);
	h->budget = h->budget_all - lim;
	heca__set_watermarks_locked(h);
	if (lim > h->stash_lim)
		heca__evict_kick_locked(h); /* less to map: make room */
	h->stash_lim = lim;
}

bool heca__stash_put_locked(struct heca *h, struct seg *s, uint64_t page, const uint8_t *data)
{
	uint8_t *b = &s->st[page];
	struct stash_ent *e;
	uint32_t i, k;

	if (!h->stash_cap || s->leaving)
		return false;
	heca__stash_forget_locked(h, s->id, page, b);
	while (h->stash_n >= h->stash_lim)
		age_out(h);
	i = h->stash_free;
	e = &h->stash_ent[i - 1];
	h->stash_free = e->newer;
	*e = (struct stash_ent){.page = page, .seg = s->id, .older = h->stash_newest};
	if (h->stash_newest)
		h->stash_ent[h->stash_newest - 1].newer = i;
	else
		h->stash_oldest = i;
	h->stash_newest = i;
	k = stash_slot(h, s->id, page);
	e->hnext = h->stash_hash[k];
	h->stash_hash[k] = i;
	h->stash_n++;
	memcpy(data_of(h, i), data, PAGE_SZ);
	*b |= PF_WB;
	h->stash_win_puts++;
	adapt(h);
	return true;
}

void heca__stash_take_locked(struct heca *h, uint32_t seg, uint64_t page, uint8_t *b)
{
	uint32_t i = find(h, seg, page);

	if (i) {
		release(h, i);
		h->stash_win_hits++;
		heca__count(&h->c.faults_stash_hit, 1);
	}
	*b &= (uint8_t)~PF_WB;
}
