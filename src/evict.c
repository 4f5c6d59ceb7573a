// SPDX-License-Identifier: MIT
/*
 * evict.c - the evictor: keeps resident sponsored pages under the budget (high/low watermarks)
 * by taking pages out in FIFO order, in batches, beside the engine so faults never queue
 * behind write-backs. Clean pages are dropped; dirty ones are write-protected, copied, dropped
 * and written back (DESIGN.md invariants 1-3).
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "heca_int.h"
#include "segops.h"
#include "util.h"
#include "wire.h"

#define VICTIM_KEEP (-1) /* could not be protected: goes back to DIRTY */
#define VICTIM_ZERO (-2) /* dirty but all zero: leaves as never written, no network */
#define WB_MAX_PAGES 4096 /* write-back pages in flight before the evictor waits for acks */

struct victim {
	struct seg *s; /* valid while the segment is registered: release waits for the evictor */
	uint32_t seg;
	uint64_t page;
	uintptr_t addr;
	int was; /* state before EVICTING, or VICTIM_KEEP */
	bool stuck; /* the kernel would not drop it (mlocked, say): it stays, pinned */
	bool zapping; /* the evictor's own zap of it is under way (read by the engine) */
	bool seen;    /* the engine has read that zap */
	bool gone;    /* someone else zapped it meanwhile: it reads as zero */
	bool zap_failed; /* the kernel refused its zap */
	bool zap_enomem; /* refused as not mapped there: moved or unmapped meanwhile */
	bool keep;    /* not dropped after all (unmapped or moved meanwhile): back to DIRTY */
	bool stash;   /* its copy goes on the inactive list (one of the pages it samples) */
	uint8_t *copy;
};

/*
 * Write-back copies: one batch's worth each, kept in a small pool and reused, so that the
 * steady state costs no system call and no page fault per copied page. They are mapped
 * directly rather than malloc'd: a malloc arena of the evictor kept freed ones at their peak,
 * outside the budget, for good. At most WB_POOL stay mapped when idle.
 */
uint8_t *heca__wb_buf_get(struct heca *h)
{
	uint8_t *b = NULL;
	void *p;

	pthread_mutex_lock(&h->lock);
	if (h->nwb_pool)
		b = h->wb_pool[--h->nwb_pool];
	pthread_mutex_unlock(&h->lock);
	if (b)
		return b;
	p = mmap(NULL, EVICT_BATCH * PAGE_SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		 -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void heca__wb_buf_put_locked(struct heca *h, uint8_t *buf)
{
	if (!buf)
		return;
	if (h->nwb_pool < WB_POOL)
		h->wb_pool[h->nwb_pool++] = buf;
	else
		munmap(buf, EVICT_BATCH * PAGE_SZ);
}

void heca__evict_kick_locked(struct heca *h)
{
	pthread_cond_broadcast(&h->evict_cond);
}

static bool is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;
	uint64_t acc = 0;
	for (size_t i = 0; i < PAGE_SZ / 8; i++)
		acc |= w[i];
	return acc == 0;
}

static int cmp_victim(const void *a, const void *b)
{
	const struct victim *x = a, *y = b;
	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/*
 * Pages kept locally because no sponsor took them go back to the FIFO's head, to be written
 * back first, when the store says it may have room now, or every few seconds in any case.
 * Caller holds h->lock.
 */
static void unpin_locked(struct heca *h)
{
	uint64_t gen = __atomic_load_n(&h->store->room_gen, __ATOMIC_ACQUIRE), now;

	if (!h->pinned)
		return;
	now = heca__now_ns();
	if (gen == h->pinned_room_gen && now < h->pin_retry_ns)
		return;
	h->pinned_room_gen = gen;
	h->pin_retry_ns = now + 5000000000ull;
	for (unsigned int i = 0; i < h->nsegs && h->pinned; i++) {
		struct seg *s = h->segs[i];
		if (!s->pinned_pages || s->leaving)
			continue;
		for (uint64_t p = s->first; p < seg_end(s) && s->pinned_pages; p++) {
			uint8_t *b = &s->st[p];
			if (!(*b & PF_PINNED))
				continue;
			*b &= (uint8_t)~PF_PINNED;
			s->pinned_pages--;
			h->pinned--;
			s->resident++;
			h->resident++;
			heca__policy_first_locked(h, s->id, p);
		}
	}
}

/*
 * Pages given up as lost may be readable again when a sponsor is back with what it held: make
 * them REMOTE again, so that the next access asks the store instead of failing. An access that
 * failed has left a poison marker (UFFDIO_POISON); MADV_DONTNEED takes it away, with the lock
 * dropped (the engine reads the zap's event) and h->reviving telling the engine the zap is
 * heca's own. Up to REVIVE_RUNS runs a pass; more on the next. Caller holds h->lock.
 */
#define REVIVE_RUNS 64
static void revive_lost_locked(struct heca *h)
{
	uint64_t gen = __atomic_load_n(&h->store->back_gen, __ATOMIC_ACQUIRE), n = 0, seq;
	struct {
		uint32_t seg;
		uint64_t lo, hi;
		uintptr_t addr;
	} run[REVIVE_RUNS];
	unsigned int nrun = 0;
	bool more = false;

	if (gen == h->lost_back_gen && !h->revive_more)
		return;
	h->lost_back_gen = gen;
	h->revive_more = false;
	if (!h->lost_any)
		return;
	for (unsigned int i = 0; i < h->nsegs && !more; i++) {
		struct seg *s = h->segs[i];
		for (uint64_t p = s->first, q; p < seg_end(s); p = q) {
			if (pstate(s->st[p]) != PS_LOST || s->leaving) {
				q = p + 1;
				continue;
			}
			for (q = p; q < seg_end(s) && pstate(s->st[q]) == PS_LOST; q++)
				;
			if (nrun == REVIVE_RUNS) {
				more = true;
				break;
			}
			run[nrun++] = (typeof(run[0])){s->id, p, q, s->base + p * PAGE_SZ};
		}
	}
	if (!nrun)
		return;
	h->reviving = true;
	pthread_mutex_unlock(&h->lock);
	for (unsigned int i = 0; i < nrun; i++)
		madvise((void *)run[i].addr, (run[i].hi - run[i].lo) * PAGE_SZ, MADV_DONTNEED);
	seq = __atomic_load_n(&h->msgs_read, __ATOMIC_ACQUIRE);
	pthread_mutex_lock(&h->lock);
	if (h->features & HECA_FEAT_REMOVE)
		heca__msgs_wait_locked(h, seq);
	h->reviving = false;
	for (unsigned int i = 0; i < nrun; i++) {
		struct seg *s = heca__seg_by_page_locked(h, run[i].seg, run[i].lo);
		if (!s || s->base + run[i].lo * PAGE_SZ != run[i].addr)
			continue; /* unregistered or moved meanwhile */
		for (uint64_t p = run[i].lo; p < run[i].hi && p < seg_end(s); p++)
			if (pstate(s->st[p]) == PS_LOST) {
				pset(&s->st[p], PS_REMOTE);
				n++;
			}
	}
	h->revive_more = more;
	if (n)
		heca__log(h, HECA_LOG_WARN,
			  "%llu pages given up as lost are asked for again: a sponsor is back",
			  (unsigned long long)n);
}

static bool need_evict_locked(struct heca *h)
{
	/* Faults wait for room only when there is none: a fault put off for another reason
	 * (an event came while it was being served, evict.c's own zaps included) must not make
	 * the evictor take out page after page while it waits to be served again. */
	bool no_room = h->resident + h->fetching + 1 > h->budget ||
		       h->resident + h->fetching + h->pinned + 1 > h->limit;

	if (h->resident + h->fetching >= h->high || (h->ndeferred && no_room && h->resident > 0))
		h->evict_active = true;
	else if (h->resident <= h->low)
		h->evict_active = false;
	return h->evict_active;
}

/* Pick up to max victims from the FIFO head and mark them EVICTING; with clean_only, only pages
 * that leave without a write-back. */
static unsigned int pick_locked(struct heca *h, struct victim *v, unsigned int max,
				bool clean_only)
{
	unsigned int n = 0;
	uint64_t scanned = 0, len = heca__policy_len_locked(h);
	struct policy_ent e;

	while (n < max && scanned < len && heca__policy_next_locked(h, &e)) {
		uint32_t segid = e.seg;
		uint64_t page = e.page;
		struct seg *s = heca__seg_by_page_locked(h, segid, page);
		uint8_t *b;
		int st;

		scanned++;
		if (!s)
			continue; /* stale: segment gone */
		b = &s->st[page];
		st = pstate(*b);
		if (st != PS_CLEAN && st != PS_ZERO && st != PS_DIRTY)
			continue; /* stale: no longer resident */
		if (*b & PF_PINNED)
			continue; /* kept here for good; it leaves the FIFO */
		if ((*b & PF_WB) || s->leaving || (st == PS_DIRTY && clean_only) ||
		    (st == PS_DIRTY && h->discarding && heca__discarding_locked(h, segid, page))) {
			/* At most one write-back per page in flight (invariant 3), and none of a
			 * page before the sponsors have forgotten it (segops.c): try later. */
			heca__policy_retry_locked(h, segid, page);
			continue;
		}
		pset(b, PS_EVICTING);
		v[n++] = (struct victim){.s = s,
					 .seg = segid,
					 .page = page,
					 .addr = s->base + page * PAGE_SZ,
					 .was = st};
	}
	return n;
}

/* Apply fn to each run of adjacent victims (v sorted by address) whose state before eviction
 * satisfies want(was). */
static void for_runs(struct heca *h, struct victim *v, unsigned int n, bool (*want)(int),
		     int (*fn)(struct heca *, uintptr_t, uint64_t))
{
	for (unsigned int i = 0; i < n;) {
		unsigned int j = i;
		if (!want(v[i].was)) {
			i++;
			continue;
		}
		while (j + 1 < n && v[j + 1].addr == v[j].addr + PAGE_SZ && want(v[j + 1].was))
			j++;
		fn(h, v[i].addr, (uint64_t)(j - i + 1) * PAGE_SZ);
		i = j + 1;
	}
}

bool heca__evict_zap_is_own_locked(struct heca *h, uintptr_t addr)
{
	struct victim *v = h->ev_v;
	unsigned int lo = 0, hi = h->ev_n;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;
		if (v[mid].addr < addr) {
			lo = mid + 1;
		} else if (v[mid].addr > addr) {
			hi = mid;
		} else {
			/* Each zap of a page sends one event: the evictor's own is the first after
			 * it began; any other is someone else's, and the page reads as zero. */
			if (__atomic_load_n(&v[mid].zapping, __ATOMIC_ACQUIRE) && !v[mid].seen) {
				v[mid].seen = true;
				return true;
			}
			v[mid].gone = true;
			return false;
		}
	}
	return false;
}

static bool goes_out(int was)
{
	return was != VICTIM_KEEP;
}

static int do_wp(struct heca *h, uintptr_t addr, uint64_t len)
{
	return heca__uffd_wp(h, addr, len, true, false);
}

static void note_present(void *arg, uint64_t first, uint64_t n)
{
	(void)first;
	*(bool *)arg = n > 0;
}

static bool present(uintptr_t addr)
{
	bool there = false;
	return heca__pages_present(addr, 1, note_present, &there) ? true : there;
}

/*
 * Drop the victims that go out, a run per call. Each page gets one zap, so that the engine
 * can tell the event of the evictor's own zap from anyone else's. The kernel may refuse a run
 * (EINVAL on a range the program mlocked behind heca's back, ENOMEM on one it unmapped or
 * moved meanwhile), possibly after dropping part of it: classify_failed() sorts that out once
 * the engine has handled the events.
 */
static void zap_victims(struct heca *h, struct victim *v, unsigned int n)
{
	for (unsigned int i = 0; i < n;) {
		unsigned int j = i;
		if (!goes_out(v[i].was)) {
			i++;
			continue;
		}
		while (j + 1 < n && v[j + 1].addr == v[j].addr + PAGE_SZ && goes_out(v[j + 1].was))
			j++;
		/* Still ours? A range the program unmapped behind heca's back may hold new
		 * memory by now, which must never be zapped: write-protect asks the kernel
		 * whether the run is still registered with heca (ENOENT if not), just before
		 * the zap. Its pages are kept; the unmap's event says what became of them. */
		if (heca__uffd_wp(h, v[i].addr, (uint64_t)(j - i + 1) * PAGE_SZ, true, false)) {
			for (unsigned int k = i; k <= j; k++)
				v[k].keep = true;
			i = j + 1;
			continue;
		}
		for (unsigned int k = i; k <= j; k++)
			__atomic_store_n(&v[k].zapping, true, __ATOMIC_RELEASE);
		if (madvise((void *)v[i].addr, (size_t)(j - i + 1) * PAGE_SZ, MADV_DONTNEED)) {
			int err = errno;
			for (unsigned int k = i; k <= j; k++) {
				v[k].zap_failed = true;
				v[k].zap_enomem = err == ENOMEM;
			}
			if (err == EINVAL && !h->unzappable_logged) {
				h->unzappable_logged = true;
				heca__log(h, HECA_LOG_WARN,
					  "the kernel will not drop pages at %#lx (%s; mlocked?): they "
					  "stay in local memory, outside the budget (heca status: "
					  "pinned_pages), and are tried again every few seconds",
					  (unsigned long)v[i].addr, strerror(err));
			}
		}
		i = j + 1;
	}
}

/*
 * A victim whose zap failed, once the engine has handled the events (caller holds h->lock):
 * dropped if its zap's event came and the page is not there; kept as it is (VICTIM_KEEP, as
 * dirty) if the page is there at its current address after a move, or was never reached
 * (unmapped meanwhile: the unmap's event makes it EMPTY); stuck (pinned) if it is still
 * there in place, the kernel having refused to drop it (mlocked). A move whose event is not
 * handled yet leaves the segment at its old address: a page it took along is not there and
 * is taken for dropped; the move's event adopts it where it is (engine.c, moved_locked).
 */
static void classify_failed_locked(struct victim *v)
{
	uintptr_t cur = v->s->base + v->page * PAGE_SZ;

	if (v->gone)
		return;
	if (present(cur)) {
		/* Not mapped there when zapped, yet there now: moved away and back. */
		if (cur == v->addr && !v->zap_enomem)
			v->stuck = true;
		else
			v->keep = true;
	} else if (!v->seen) {
		v->keep = true;
	}
}

/* Wake the threads waiting for victim v: at the address it was picked at, and at its address
 * now if a move heca did not make took it elsewhere meanwhile (a thread that faulted after
 * the move waits there). Caller holds h->lock. */
static void wake_victim_locked(struct heca *h, const struct victim *v)
{
	uintptr_t cur = v->s->base + v->page * PAGE_SZ;

	heca__uffd_wake(h, v->addr, PAGE_SZ);
	if (cur != v->addr)
		heca__uffd_wake(h, cur, PAGE_SZ);
}

/* A victim the kernel would not drop: it stays mapped with its content, counted as pinned
 * (outside the budget) until unpin_locked() tries it again. A dirty one was write-protected
 * for its copy: a write faults and is seen. Its copy is not sent. Caller holds h->lock. */
static void keep_stuck_locked(struct heca *h, struct victim *v, uint8_t *b)
{
	int st = v->was == PS_CLEAN || v->was == PS_ZERO ? v->was : PS_DIRTY;

	pset(b, st);
	*b |= PF_PINNED;
	h->resident--;
	v->s->resident--;
	h->pinned++;
	v->s->pinned_pages++;
	heca__count(&h->c.pages_unzappable, 1);
	if (*b & PF_WAITER)
		heca__uffd_wake(h, v->addr, PAGE_SZ);
	*b &= (uint8_t)~(PF_WAITER | PF_WANTW);
}

/* Write-protect the dirty victims, a run per call. A run that cannot be protected stays
 * resident and dirty: copying it unprotected could lose a write (invariant 2). */
static void protect_dirty(struct heca *h, struct victim *v, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		unsigned int j = i;
		int rc;
		if (v[i].was != PS_DIRTY)
			continue;
		while (j + 1 < n && v[j + 1].was == PS_DIRTY && v[j + 1].addr == v[j].addr + PAGE_SZ)
			j++;
		rc = do_wp(h, v[i].addr, (uint64_t)(j - i + 1) * PAGE_SZ);
		if (rc) {
			/* ENOENT: no longer registered there, unmapped or moved by a system call
			 * heca did not make; its event says what became of the pages. */
			if (rc != -ENOENT)
				heca__log(h, HECA_LOG_ERROR, "write-protect %#lx: %s; pages kept",
					  (unsigned long)v[i].addr, heca_strerror(rc));
			for (unsigned int k = i; k <= j; k++)
				v[k].was = VICTIM_KEEP;
		}
		i = j;
	}
}

static bool copied(const struct victim *v)
{
	return v->was == PS_DIRTY || (v->was == PS_CLEAN && v->stash);
}

/*
 * Copy the dirty victims into buf, a page slot each, and the clean ones too when they go on the
 * inactive list, with one process_vm_readv() where it can:
 * a page the program unmapped or moved meanwhile (a system call heca did not make) fails that
 * page's copy with EFAULT instead of faulting the evictor. Such a page is kept (VICTIM_KEEP):
 * the event of the unmap or move tells the engine what became of it.
 */
static void copy_dirty(struct heca *h, struct victim *v, unsigned int n, uint8_t *buf)
{
	struct iovec local, remote[EVICT_BATCH];
	unsigned int idx[EVICT_BATCH], nd = 0, from = 0;

	for (unsigned int i = 0; i < n; i++) {
		if (!copied(&v[i]))
			continue;
		v[i].copy = buf + (size_t)nd * PAGE_SZ;
		remote[nd] = (struct iovec){(void *)v[i].addr, PAGE_SZ};
		idx[nd++] = i;
	}
	while (from < nd) {
		ssize_t r, want = (ssize_t)(nd - from) * PAGE_SZ;
		local = (struct iovec){v[idx[from]].copy, (size_t)want};
		r = h->no_vm_readv ? -1
				   : syscall(SYS_process_vm_readv, getpid(), &local, 1UL,
					     &remote[from], (unsigned long)(nd - from), 0UL);
		if (r < 0 && errno != EFAULT) {
			/* Not allowed here (a seccomp policy): plain copies. */
			h->no_vm_readv = true;
			for (; from < nd; from++)
				memcpy(v[idx[from]].copy, (void *)v[idx[from]].addr, PAGE_SZ);
			return;
		}
		if (r == want)
			return;
		from += r > 0 ? (unsigned int)(r / PAGE_SZ) : 0;
		v[idx[from]].copy = NULL;
		v[idx[from++]].was = VICTIM_KEEP; /* gone from under us: kept */
	}
}

static void evict_batch(struct heca *h, struct victim *v, unsigned int n)
{
	unsigned int ncopy = 0, k;
	uint64_t seq;
	struct wb_batch *wb = NULL;
	bool wake_any = false, waiting, hold = false;

	protect_dirty(h, v, n);
	for (unsigned int i = 0; i < n; i++) {
		v[i].stash = (v[i].was == PS_CLEAN || v[i].was == PS_DIRTY) && heca__stash_sample(h);
		ncopy += copied(&v[i]);
	}
	if (ncopy) {
		wb = calloc(1, sizeof(*wb) + ncopy * sizeof(wb->ent[0]));
		if (wb)
			wb->buf = heca__wb_buf_get(h);
		if (!wb || !wb->buf) {
			free(wb);
			wb = NULL;
			for (unsigned int i = 0; i < n; i++)
				if (v[i].was == PS_DIRTY)
					v[i].was = VICTIM_KEEP; /* no room for the copy */
		}
	}
	if (wb)
		copy_dirty(h, v, n, wb->buf);
	k = 0;
	for (unsigned int i = 0; i < n && wb; i++) {
		hold |= v[i].was == PS_CLEAN && v[i].copy;
		if (v[i].was != PS_DIRTY)
			continue;
		if (is_zero(v[i].copy)) {
			/* Reads as zero like a never-written page: no copy needs to be kept. A
			 * stale remote copy is never read again and goes with the segment. */
			v[i].was = VICTIM_ZERO;
			continue;
		}
		wb->ent[k++] =
			(struct wb_entry){.seg = v[i].seg, .page = v[i].page, .data = v[i].copy, .batch = wb};
	}
	if (wb) {
		wb->n = k;
		wb->refs = k;
		/* No copy is sent; clean ones for the inactive list keep the buffer a while. */
		if (k == 0 && !hold) {
			pthread_mutex_lock(&h->lock);
			heca__wb_buf_put_locked(h, wb->buf);
			pthread_mutex_unlock(&h->lock);
			free(wb);
			wb = NULL;
		}
	}
	/* Drop them: the content is in the WB buffer or at a sponsor. */
	zap_victims(h, v, n);
	seq = __atomic_load_n(&h->msgs_read, __ATOMIC_ACQUIRE);

	pthread_mutex_lock(&h->lock);
	/* The engine has read the events of these zaps (the kernel waited for that), but may
	 * not have handled them yet: it tells the evictor's from others' by the batch. */
	if (h->features & HECA_FEAT_REMOVE)
		heca__msgs_wait_locked(h, seq);
	k = 0;
	for (unsigned int i = 0; i < n; i++) {
		uint8_t *b = &v[i].s->st[v[i].page];
		if (v[i].zap_failed)
			classify_failed_locked(&v[i]);
		if ((v[i].stuck || v[i].gone || v[i].keep) && v[i].was == PS_DIRTY) {
			if (--wb->refs == 0 && !hold) {
				/* No copy of this batch is sent: the buffer goes back now. */
				heca__wb_buf_put_locked(h, wb->buf);
				free(wb);
				wb = NULL;
			}
			k++;
		}
		if (v[i].gone) {
			/* Zapped by someone else while it was going: it reads as zero. */
			if (*b & PF_WAITER)
				wake_victim_locked(h, &v[i]);
			*b = (uint8_t)(*b & PF_WB) | PS_EMPTY;
			h->resident--;
			v[i].s->resident--;
			continue;
		}
		if (v[i].stuck) {
			keep_stuck_locked(h, &v[i], b);
			continue;
		}
		if (v[i].was == VICTIM_KEEP || v[i].keep) {
			/* Still mapped and writable (or protected: a write faults and is seen). */
			pset(b, PS_DIRTY);
			heca__policy_retry_locked(h, v[i].seg, v[i].page);
			if (*b & PF_WAITER)
				wake_victim_locked(h, &v[i]);
			*b &= (uint8_t)~(PF_WAITER | PF_WANTW);
			continue;
		}
		if ((*b & PF_WAITER) && v[i].s->base + v[i].page * PAGE_SZ != v[i].addr)
			wake_victim_locked(h, &v[i]); /* moved: the runs below are at the old place */
		else if (*b & PF_WAITER)
			wake_any = true;
		*b &= (uint8_t)~(PF_WAITER | PF_WANTW);
		h->resident--;
		v[i].s->resident--;
		heca__count(&h->c.pages_evicted, 1);
		if (v[i].was == PS_DIRTY) {
			pset(b, PS_REMOTE);
			*b |= PF_WB;
			heca__wb_insert_locked(h, &wb->ent[k++]);
			h->wb_pages++;
			if (v[i].stash)
				heca__stash_put_locked(h, v[i].s, v[i].page, v[i].copy);
		} else if (v[i].was == VICTIM_ZERO) {
			pset(b, PS_EMPTY);
			heca__count(&h->c.pages_dropped_zero, 1);
		} else {
			pset(b, v[i].was == PS_ZERO ? PS_EMPTY : PS_REMOTE);
			heca__count(&h->c.pages_dropped_clean, 1);
			if (v[i].was == PS_CLEAN && v[i].stash && v[i].copy)
				heca__stash_put_locked(h, v[i].s, v[i].page, v[i].copy);
		}
	}
	if (wb && wb->refs == 0) {
		/* Only clean copies were in it, now on the inactive list. */
		heca__wb_buf_put_locked(h, wb->buf);
		free(wb);
		wb = NULL;
	}
	waiting = h->ndeferred > 0;
	h->ev_v = NULL;
	h->ev_n = 0;
	pthread_mutex_unlock(&h->lock);
	if (wake_any)
		for_runs(h, v, n, goes_out, heca__uffd_wake);
	/* Room was made: wake the engine only if faults wait for it (a write and a thread
	 * wake-up per batch otherwise); its 20 ms tick retries them in any case. */
	if (waiting)
		heca__engine_wake(h);

	/* Send the dirty runs, split at stripe boundaries and frame size. */
	for (unsigned int i = 0; i < n;) {
		unsigned int j = i;
		uint64_t stripe = h->opt.stripe_pages;
		int rc;
		if (v[i].was != PS_DIRTY || v[i].stuck || v[i].gone || v[i].keep) {
			i++;
			continue;
		}
		while (j + 1 < n && v[j + 1].was == PS_DIRTY && !v[j + 1].stuck && !v[j + 1].gone &&
		       !v[j + 1].keep &&
		       v[j + 1].seg == v[i].seg &&
		       v[j + 1].page == v[j].page + 1 &&
		       v[j + 1].page / stripe == v[i].page / stripe && j + 1 - i < HECA_WIRE_MAX_PAGES)
			j++;
		rc = h->store->ops->write(h->store, v[i].seg, v[i].page, j - i + 1, v[i].copy, 0);
		if (rc)
			heca__on_write_done(h, 0, rc, v[i].seg, v[i].page, j - i + 1);
		i = j + 1;
	}
}

void *heca__evict_main(void *arg)
{
	struct heca *h = arg;
	struct victim *v;
	uint64_t wb_cap;
	bool clean_only;
	sigset_t all;

	heca__internal = 1;
	__atomic_store_n(&h->evict_tid, (uint32_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
	v = malloc(EVICT_BATCH * sizeof(*v));
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	if (!v)
		return NULL;
	pthread_mutex_lock(&h->lock);
	wb_cap = HECA_MAX((uint64_t)EVICT_BATCH, HECA_MIN((uint64_t)WB_MAX_PAGES, h->limit - h->budget));
	while (!h->stop) {
		unsigned int n, max;

		if (h->unmapped) {
			/* Ranges the program unmapped behind heca's back leave the table. */
			pthread_mutex_unlock(&h->lock);
			heca__unmapped_run(h);
			pthread_mutex_lock(&h->lock);
			continue;
		}

		unpin_locked(h);
		revive_lost_locked(h);
		/* Write-back copies are local memory too: at most the room between budget and
		 * limit in flight. At the limit, with write-backs failing, only pages that leave
		 * without one go until the store may have room (a dirty one would only be kept
		 * here again). */
		clean_only = h->pinned && h->pinned + h->resident + h->wb_pages >= h->limit;
		/* While a fork's CLONE copies what the sponsors hold, nothing may change there;
		 * clean pages may still go, as their copies there are current (fork.c). */
		clean_only |= h->cloning;
		if (!need_evict_locked(h) || h->wb_pages >= wb_cap || h->frozen || h->evict_hold) {
			heca__cond_wait_ms(&h->evict_cond, &h->lock, 50);
			continue;
		}
		/* Evict down to the low watermark, a batch at a time. */
		max = EVICT_BATCH;
		if (h->resident > h->low && h->resident - h->low < max)
			max = (unsigned int)(h->resident - h->low);
		if (max == 0)
			max = 1;
		n = pick_locked(h, v, max, clean_only);
		if (n == 0 && heca__policy_hot_locked(h)) {
			heca__policy_unprotect_locked(h);
			n = pick_locked(h, v, max, clean_only);
		}
		if (n == 0) {
			/* Everything resident waits for write-back acks or is pinned. */
			heca__cond_wait_ms(&h->evict_cond, &h->lock, 5);
			continue;
		}
		/* Sorted by address, and shown to the engine, which looks zaps up in it. */
		qsort(v, n, sizeof(*v), cmp_victim);
		h->ev_v = v;
		h->ev_n = n;
		h->evicting++;
		pthread_mutex_unlock(&h->lock);
		evict_batch(h, v, n);
		pthread_mutex_lock(&h->lock);
		h->evicting--;
		pthread_cond_broadcast(&h->evict_cond);
	}
	pthread_mutex_unlock(&h->lock);
	free(v);
	return NULL;
}
