// SPDX-License-Identifier: MIT
/*
 * segops.c - what a program may do to sponsored memory besides touching it: free part of it
 * (munmap of a piece), give pages back (madvise DONTNEED/FREE: they read as zero afterwards),
 * and grow, shrink or move it (mremap). The transparent mode calls these from its wrappers of
 * the same system calls; each keeps page states, the budget and the sponsors' copies true.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "heca_int.h"
#include "segops.h"
#include "util.h"

/* The system calls themselves: in the preloaded library the libc names are heca's wrappers. */
static long sys_madvise(uintptr_t a, uint64_t len, int advice)
{
	return syscall(SYS_madvise, a, len, advice);
}

static void wait_a_little_locked(struct heca *h)
{
	heca__cond_wait_ms(&h->evict_cond, &h->lock, 1);
}

/* Wait until no page of s in [lo, hi) has a read or write-back in flight and the evictor
 * holds no victim (it keeps addresses outside the lock). Caller holds h->lock, which may be
 * dropped meanwhile: returns false if the segment table changed, and s may be gone. */
static bool settle_locked(struct heca *h, struct seg *s, uint64_t lo, uint64_t hi)
{
	uint64_t gen = h->seg_gen;

	for (;;) {
		bool busy = false;
		heca__evict_quiesce_locked(h);
		if (h->seg_gen != gen)
			return false;
		/* Copies on the inactive list are clean: forget them (write-backs are waited
		 * for). */
		heca__stash_forget_range_locked(h, s, lo, hi);
		for (uint64_t p = lo; p < hi && !busy; p++) {
			int st = pstate(s->st[p]);
			busy = st == PS_FETCHING || st == PS_EVICTING || (s->st[p] & PF_WB);
		}
		if (!busy)
			return true;
		wait_a_little_locked(h);
		if (h->seg_gen != gen)
			return false;
	}
}

void heca__store_call_begin_locked(struct heca *h)
{
	while (h->cloning)
		heca__cond_wait_ms(&h->evict_cond, &h->lock, 10);
	h->store_calls++;
}

void heca__store_call_end_locked(struct heca *h)
{
	if (--h->store_calls == 0)
		pthread_cond_broadcast(&h->evict_cond); /* a fork waiting to copy */
}

bool heca__discarding_locked(const struct heca *h, uint32_t seg, uint64_t page)
{
	for (const struct discarding *d = h->discarding; d; d = d->next)
		if (d->seg == seg && page >= d->lo && page < d->hi)
			return true;
	return false;
}

void heca__discard_begin_locked(struct heca *h, struct discarding *d, uint32_t seg,
				uint64_t lo, uint64_t hi)
{
	*d = (struct discarding){.next = h->discarding, .seg = seg, .lo = lo, .hi = hi};
	h->discarding = d;
}

void heca__discard_end_locked(struct heca *h, struct discarding *d)
{
	struct discarding **pp = &h->discarding;

	while (*pp && *pp != d)
		pp = &(*pp)->next;
	if (*pp)
		*pp = d->next;
	heca__evict_kick_locked(h); /* dirty pages it held back may go now */
}

/* Make store pages [lo, hi) of s never written here: not counted, and unmapped when zap is
 * set. Caller holds h->lock and has settled the range; forget_remote() tells the sponsors.
 * A zap of a registered range waits for the engine to read its event, which the engine may
 * not do while this thread holds the lock: zap only a range already unregistered. */
static void forget_locked(struct heca *h, struct seg *s, uint64_t lo, uint64_t hi, bool zap)
{
	for (uint64_t p = lo; p < hi; p++) {
		uint8_t b = s->st[p];
		int st = pstate(b);
		if (b & PF_PINNED) {
			h->pinned--;
			s->pinned_pages--;
		} else if (president(st)) {
			h->resident--;
			s->resident--;
		}
		s->st[p] = PS_EMPTY;
	}
	if (zap)
		sys_madvise(s->base + lo * PAGE_SZ, (hi - lo) * PAGE_SZ, MADV_DONTNEED);
}

/*
 * Have the sponsors forget what d names, the round trip with h->lock dropped: faults go on
 * meanwhile, on these pages too (they read as zero, no network), and only their write-backs
 * wait (the evictor skips pages under a DISCARD), so that none can land before the DISCARD
 * and be forgotten. Caller holds h->lock and a store call (heca__store_call_begin_locked),
 * and has made the pages never written here and linked d; on return d is unlinked.
 */
static int forget_remote_locked(struct heca *h, struct discarding *d, uintptr_t zap_a,
				uint64_t zap_len)
{
	int rc;

	pthread_mutex_unlock(&h->lock);
	/* The pages are EMPTY already: a fault on one after the zap maps a zero page, and the
	 * zap's event finds nothing to change. A write to one before the zap lands in the old
	 * page and goes with it, as it would without heca. */
	if (zap_len)
		sys_madvise(zap_a, zap_len, MADV_DONTNEED);
	rc = h->store->ops->discard(h->store, d->seg, d->lo, d->hi - d->lo);
	pthread_mutex_lock(&h->lock);
	heca__discard_end_locked(h, d);
	return rc;
}

/* Count the resident and pinned pages of s from its states. */
static void recount(struct seg *s)
{
	s->resident = s->pinned_pages = 0;
	for (uint64_t p = s->first; p < seg_end(s); p++) {
		if (s->st[p] & PF_PINNED)
			s->pinned_pages++;
		else if (president(pstate(s->st[p])))
			s->resident++;
	}
}

/* The first segment overlapping [a, a + len), or NULL. Caller holds h->lock. */
static struct seg *first_overlap_locked(struct heca *h, uintptr_t a, uint64_t len)
{
	for (unsigned int i = 0; i < h->nsegs; i++) {
		struct seg *s = h->segs[i];
		if (a < seg_limit(s) && seg_start(s) < a + len)
			return s;
	}
	return NULL;
}

bool heca__range_sponsored(struct heca *h, uintptr_t a, uint64_t len)
{
	bool any;
	pthread_mutex_lock(&h->lock);
	any = heca__overlaps_locked(h, a, len);
	pthread_mutex_unlock(&h->lock);
	return any;
}

int heca__discard_range(struct heca *h, uintptr_t a, uint64_t len)
{
	uintptr_t cur = a, end = a + len;
	int rc = 0;

	/* A segment at a time, found again by address each time: the lock is dropped for each
	 * round trip, and the table may change meanwhile. */
	pthread_mutex_lock(&h->lock);
	while (cur < end) {
		struct seg *s;
		struct discarding d;
		uintptr_t lo, hi;
		uint64_t plo, phi;
		int r;

		heca__store_call_begin_locked(h);
		s = first_overlap_locked(h, cur, end - cur);
		if (!s) {
			heca__store_call_end_locked(h);
			break;
		}
		lo = HECA_MAX(cur, seg_start(s));
		hi = HECA_MIN(end, seg_limit(s));
		plo = (lo - s->base) / PAGE_SZ;
		phi = (hi - s->base + PAGE_SZ - 1) / PAGE_SZ;
		if (!settle_locked(h, s, plo, phi)) {
			heca__store_call_end_locked(h);
			continue; /* the table changed while waiting: look again from cur */
		}
		forget_locked(h, s, plo, phi, false);
		heca__discard_begin_locked(h, &d, s->id, plo, phi);
		r = forget_remote_locked(h, &d, s->base + plo * PAGE_SZ, (phi - plo) * PAGE_SZ);
		heca__store_call_end_locked(h);
		if (r && !rc)
			rc = r;
		cur = hi;
	}
	pthread_mutex_unlock(&h->lock);
	return rc;
}

int heca__unsponsored_gaps(struct heca *h, uintptr_t a, uint64_t len, uintptr_t *gap_a,
			   uint64_t *gap_len, unsigned int max)
{
	unsigned int n = 0;
	uintptr_t cur = a, end = a + len;

	pthread_mutex_lock(&h->lock);
	for (unsigned int i = 0; i < h->nsegs && cur < end; i++) {
		struct seg *s = h->segs[i]; /* sorted by address */
		if (seg_limit(s) <= cur)
			continue;
		if (seg_start(s) >= end)
			break;
		if (seg_start(s) > cur) {
			if (n == max)
				break;
			gap_a[n] = cur;
			gap_len[n++] = seg_start(s) - cur;
		}
		cur = seg_limit(s);
	}
	if (cur < end && n < max) {
		gap_a[n] = cur;
		gap_len[n++] = end - cur;
	}
	pthread_mutex_unlock(&h->lock);
	return (int)n;
}

/* heca__unmap_range(); with gone, the kernel has unmapped the range already (a munmap heca
 * did not make): nothing to unregister or zap there, as the range may hold new memory. */
static int unmap_range(struct heca *h, uintptr_t a, uint64_t len, bool gone)
{
	int rc = 0;

	for (;;) {
		struct seg *s, *t = NULL;
		struct discarding d;
		uintptr_t lo, hi;
		uint64_t plo, phi;
		bool middle;
		int r;

		pthread_mutex_lock(&h->lock);
		s = first_overlap_locked(h, a, len);
		if (!s) {
			pthread_mutex_unlock(&h->lock);
			return rc;
		}
		if (s->busy) {
			/* Another thread registers or unregisters it: the caller unmaps only
			 * once it is done. */
			heca__seg_wait_locked(h);
			pthread_mutex_unlock(&h->lock);
			continue;
		}
		lo = HECA_MAX(a, seg_start(s));
		hi = HECA_MIN(a + len, seg_limit(s));
		plo = (lo - s->base) / PAGE_SZ;
		phi = (hi - s->base + PAGE_SZ - 1) / PAGE_SZ;
		if (plo == s->first && phi == seg_end(s)) {
			/* The whole piece goes: unregister it, the caller unmaps. */
			heca__seg_claim_locked(h, s);
			s->owned = false;
			pthread_mutex_unlock(&h->lock);
			heca__seg_unregister(h, s, HECA_UNREG_DISCARD | (gone ? HECA_UNREG_GONE : 0));
			continue;
		}
		middle = plo != s->first && phi != seg_end(s);
		if (middle && (heca__segs_reserve_locked(h) || !(t = malloc(sizeof(*t))))) {
			pthread_mutex_unlock(&h->lock);
			return -ENOMEM; /* nothing changed */
		}
		if (h->cloning) {
			/* A fork copies the segments: wait (for the whole loop) until it is done. */
			heca__store_call_begin_locked(h);
			heca__store_call_end_locked(h);
			free(t);
			pthread_mutex_unlock(&h->lock);
			continue;
		}
		heca__store_call_begin_locked(h); /* does not wait: no fork is copying */
		if (!settle_locked(h, s, s->first, seg_end(s))) {
			heca__store_call_end_locked(h);
			free(t);
			pthread_mutex_unlock(&h->lock);
			continue; /* the table changed while waiting: look again */
		}
		/* Out of the registration first: the zap then sends no event. */
		if (!gone)
			heca__uffd_unregister(h, lo, hi - lo);
		forget_locked(h, s, plo, phi, !gone);
		h->seg_gen++;
		if (plo == s->first) {
			s->npages = seg_end(s) - phi;
			s->first = phi;
		} else if (phi == seg_end(s)) {
			s->npages = plo - s->first;
		} else {
			/* A hole in the middle: the part past it becomes a piece of its own, with
			 * the same store segment, page numbers and state array. */
			*t = *s;
			t->first = phi;
			t->npages = seg_end(s) - phi;
			t->idnext = NULL;
			s->npages = plo - s->first;
			s->ss->refs++;
			recount(t);
			heca__seg_insert_locked(h, t); /* room was reserved: cannot fail */
			t = NULL;
		}
		recount(s);
		/* The range has left the segment; the sponsors forget it with the lock dropped,
		 * and a piece that grows back over it (mremap) writes none of it back before. */
		heca__discard_begin_locked(h, &d, s->id, plo, phi);
		r = forget_remote_locked(h, &d, 0, 0);
		heca__store_call_end_locked(h);
		if (r && !rc)
			rc = r;
		pthread_mutex_unlock(&h->lock);
	}
}

int heca__unmap_range(struct heca *h, uintptr_t a, uint64_t len)
{
	return unmap_range(h, a, len, false);
}

void heca__unmapped_note_locked(struct heca *h, uintptr_t a, uint64_t len)
{
	struct unmapped *u = malloc(sizeof(*u)), **pp = &h->unmapped;

	if (!u) {
		heca__log(h, HECA_LOG_ERROR,
			  "out of memory noting an unmap at %#lx: the range stays in the segment "
			  "table and new memory there is not sponsored", (unsigned long)a);
		return;
	}
	*u = (struct unmapped){NULL, a, len};
	while (*pp)
		pp = &(*pp)->next;
	*pp = u;
	heca__evict_kick_locked(h);
}

void heca__unmapped_run(struct heca *h)
{
	for (;;) {
		struct unmapped *u;

		pthread_mutex_lock(&h->lock);
		u = h->unmapped;
		if (u)
			h->unmapped = u->next;
		pthread_mutex_unlock(&h->lock);
		if (!u)
			return;
		unmap_range(h, u->a, u->len, true);
		free(u);
	}
}

/* The largest page end over the pieces of store segment id. Caller holds h->lock. */
static uint64_t store_end_locked(struct heca *h, uint32_t id)
{
	uint64_t end = 0;
	for (struct seg *o = h->idhash[id % SEG_HASH]; o; o = o->idnext)
		if (o->id == id)
			end = HECA_MAX(end, seg_end(o));
	return end;
}

/* Whether growing s to end at store page `end` would reach another piece of its store
 * segment (left by a partial munmap). Caller holds h->lock. */
static bool grows_into_piece_locked(struct heca *h, const struct seg *s, uint64_t end)
{
	for (struct seg *o = h->idhash[s->id % SEG_HASH]; o; o = o->idnext)
		if (o != s && o->id == s->id && o->first < end && seg_end(o) > s->first)
			return true;
	return false;
}

int heca__remap(struct heca *h, uintptr_t old, uint64_t oldlen, uint64_t newlen, int flags,
		uintptr_t want, uintptr_t *out)
{
	struct seg *s;
	uint64_t newn = (newlen + PAGE_SZ - 1) / PAGE_SZ, resized_to = 0;
	uint32_t resized_id = 0;
	bool resized = false;
	long r;
	int rc;

	oldlen = (oldlen + PAGE_SZ - 1) & ~(PAGE_SZ - 1);
again:
	pthread_mutex_lock(&h->lock);
	s = first_overlap_locked(h, old, oldlen ? oldlen : PAGE_SZ);
	if (!s) {
		pthread_mutex_unlock(&h->lock);
		return 1; /* not sponsored */
	}
	if (s->busy) {
		/* Being registered or unregistered by another thread: wait until it is done. */
		heca__seg_wait_locked(h);
		pthread_mutex_unlock(&h->lock);
		goto again;
	}
	if (seg_start(s) != old || s->npages * PAGE_SZ != oldlen || (flags & MREMAP_DONTUNMAP) ||
	    !newn || grows_into_piece_locked(h, s, s->first + newn)) {
		pthread_mutex_unlock(&h->lock);
		return -ENOTSUP;
	}
	pthread_mutex_unlock(&h->lock);
	if (newn < oldlen / PAGE_SZ) {
		/* Shrinking: the tail goes like a partial munmap, first. */
		uintptr_t tail = old + newn * PAGE_SZ;
		rc = heca__unmap_range(h, tail, oldlen - newn * PAGE_SZ);
		if (rc)
			return rc;
		syscall(SYS_munmap, tail, oldlen - newn * PAGE_SZ);
		oldlen = newn * PAGE_SZ;
		if (!(flags & MREMAP_FIXED)) {
			*out = old;
			return 0;
		}
	}
	if (flags & MREMAP_FIXED) {
		/* Whatever sponsored memory sits at the destination is unmapped by the move. */
		rc = heca__unmap_range(h, want, newlen);
		if (rc)
			return rc;
	}
	pthread_mutex_lock(&h->lock);
	s = first_overlap_locked(h, old, oldlen);
	if (!s || s->busy || seg_start(s) != old || s->npages * PAGE_SZ != oldlen) {
		/* Changed with the lock dropped: look again from the start. */
		pthread_mutex_unlock(&h->lock);
		goto again;
	}
	if (s->first + newn > s->ss->cap || s->ss->refs > 1) {
		struct seg_states *ns = heca__states_new(s->first + HECA_MAX(newn, s->npages));
		if (!ns) {
			pthread_mutex_unlock(&h->lock);
			return -ENOMEM;
		}
		memcpy(ns->b + s->first, s->st + s->first, s->npages);
		if (--s->ss->refs == 0)
			free(s->ss);
		s->ss = ns;
		s->st = ns->b;
	}
	if (s->first + newn > store_end_locked(h, s->id) &&
	    !(resized && resized_id == s->id && resized_to >= s->first + newn)) {
		/* The sponsors grow the store segment first, with the lock dropped: no page past
		 * its end can be written back before the segment grows, below. Then look again. */
		resized_id = s->id;
		resized_to = s->first + newn;
		heca__store_call_begin_locked(h);
		pthread_mutex_unlock(&h->lock);
		rc = h->store->ops->resize(h->store, resized_id, resized_to);
		pthread_mutex_lock(&h->lock);
		heca__store_call_end_locked(h);
		pthread_mutex_unlock(&h->lock);
		if (rc)
			return rc;
		resized = true;
		goto again;
	}
	/* Nothing in flight for the segment while its pages move: the engine and the evictor
	 * wait on the lock, held across the system call. */
	if (!settle_locked(h, s, s->first, seg_end(s))) {
		pthread_mutex_unlock(&h->lock);
		goto again;
	}
	/* Out of the registration for the move: a registered range would send an unmap event
	 * that the engine, waiting for this lock, could not read. Nothing faults there
	 * meanwhile but a thread touching memory the program is moving. */
	heca__uffd_unregister(h, old, oldlen);
	r = syscall(SYS_mremap, old, oldlen, newlen, flags, want);
	if (r == -1) {
		rc = -errno;
		int r2 = heca__uffd_register(h, old, oldlen);
		if (r2)
			heca__log(h, HECA_LOG_ERROR, "mremap: register segment %u again: %s",
				  s->id, heca_strerror(r2));
		for (uint64_t p = s->first; p < seg_end(s); p++) {
			int st = pstate(s->st[p]);
			if (st == PS_CLEAN || st == PS_ZERO)
				pset(&s->st[p], PS_DIRTY);
		}
		pthread_mutex_unlock(&h->lock);
		return rc;
	}
	h->seg_gen++;
	s->base = (uintptr_t)r - s->first * PAGE_SZ;
	s->npages = newn;
	/* Register the range, moved or grown, again; unregistering made the write-protected
	 * pages writable, so they are dirty now. */
	rc = heca__uffd_register(h, (uintptr_t)r, newn * PAGE_SZ);
	if (rc)
		heca__log(h, HECA_LOG_ERROR, "mremap: register segment %u again: %s", s->id,
			  heca_strerror(rc));
	for (uint64_t p = s->first; p < seg_end(s); p++) {
		int st = pstate(s->st[p]);
		if (st == PS_CLEAN || st == PS_ZERO)
			pset(&s->st[p], PS_DIRTY);
	}
	if ((uintptr_t)r != old)
		heca__seg_resort_locked(h);
	pthread_mutex_unlock(&h->lock);
	*out = (uintptr_t)r;
	return 0;
}

/* Room for n more segments in the table. Caller holds h->lock. */
static int reserve_locked(struct heca *h, unsigned int n)
{
	while (h->capsegs < h->nsegs + n) {
		unsigned int ncap = h->capsegs ? h->capsegs * 2 : 8;
		struct seg **m = realloc(h->segs, ncap * sizeof(*m));
		if (!m)
			return -ENOMEM;
		h->segs = m;
		h->capsegs = ncap;
	}
	return 0;
}

/* Cut s at store page p (s->first < p < seg_end(s)): the pages from p on become the piece t, with
 * the same store segment, page numbers and state array. Caller holds h->lock, has settled s
 * and reserved a slot in the table. */
static void split_locked(struct heca *h, struct seg *s, uint64_t p, struct seg *t)
{
	*t = *s;
	t->first = p;
	t->npages = seg_end(s) - p;
	t->idnext = NULL;
	s->npages = p - s->first;
	s->ss->refs++;
	recount(s);
	recount(t);
	heca__seg_insert_locked(h, t); /* room was reserved: cannot fail */
}

int heca__unsponsor_range(struct heca *h, uintptr_t a, uint64_t len)
{
	for (;;) {
		struct seg *s, *t = NULL, *u = NULL;
		uint64_t plo, phi;
		int rc;

		pthread_mutex_lock(&h->lock);
		s = first_overlap_locked(h, a, len);
		if (s && s->busy) {
			heca__seg_wait_locked(h); /* another thread's: wait until it is done */
			pthread_mutex_unlock(&h->lock);
			continue;
		}
		if (!s) {
			pthread_mutex_unlock(&h->lock);
			return 0;
		}
		plo = (HECA_MAX(a, seg_start(s)) - s->base) / PAGE_SZ;
		phi = (HECA_MIN(a + len, seg_limit(s)) - s->base + PAGE_SZ - 1) / PAGE_SZ;
		if (plo != s->first || phi != seg_end(s)) {
			/* Only part of it: that part becomes a piece of its own first, and the rest
			 * stays sponsored. */
			bool two = plo != s->first && phi != seg_end(s);
			if (reserve_locked(h, two ? 2 : 1) || !(t = malloc(sizeof(*t))) ||
			    (two && !(u = malloc(sizeof(*u))))) {
				free(t);
				pthread_mutex_unlock(&h->lock);
				return -ENOMEM; /* nothing changed */
			}
			if (!settle_locked(h, s, s->first, seg_end(s))) {
				free(t);
				free(u);
				pthread_mutex_unlock(&h->lock);
				continue; /* the table changed while waiting: look again */
			}
			if (phi != seg_end(s)) {
				split_locked(h, s, phi, t);
				t = u;
			}
			if (plo != s->first)
				split_locked(h, s, plo, t);
			pthread_mutex_unlock(&h->lock);
			continue; /* the part is a whole piece now */
		}
		heca__seg_claim_locked(h, s);
		s->owned = false; /* a heca_map() block stays mapped, as ordinary memory */
		pthread_mutex_unlock(&h->lock);
		rc = heca__seg_unregister(h, s, 0);
		if (rc == -EIO) {
			pthread_mutex_lock(&h->lock);
			heca__seg_unclaim_locked(h, s);
			pthread_mutex_unlock(&h->lock);
		}
		if (rc)
			return rc;
	}
}

int heca__drop_all(struct heca *h)
{
	return h->store->ops->drop_all ? h->store->ops->drop_all(h->store) : -ENOTSUP;
}
