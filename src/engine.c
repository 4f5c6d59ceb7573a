// SPDX-License-Identifier: MIT
/*
 * engine.c - the fault engine: one thread reads userfaultfd messages and sponsor replies and
 * resolves page faults (DESIGN.md "The page"). It never waits for one request to finish.
 */
#include <errno.h>
#include <stdio.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compat_uffd.h"
#include "heca_int.h"
#include "prefetch.h"
#include "segops.h"
#include "util.h"
#include "wire.h"

#define MSG_BATCH 64

/* ---- segments (caller holds h->lock) ---- */

struct seg *heca__seg_by_addr_locked(struct heca *h, uintptr_t addr)
{
	unsigned int lo = 0, hi = h->nsegs;

	while (lo < hi) {
		unsigned int mid = (lo + hi) / 2;
		struct seg *s = h->segs[mid];
		if (addr < seg_start(s))
			hi = mid;
		else if (addr >= seg_limit(s))
			lo = mid + 1;
		else
			return s;
	}
	return NULL;
}

struct seg *heca__seg_by_page_locked(struct heca *h, uint32_t id, uint64_t page)
{
	for (struct seg *s = h->idhash[id % SEG_HASH]; s; s = s->idnext)
		if (s->id == id && seg_has(s, page))
			return s;
	return NULL;
}

/* Whether another piece of s's store segment is registered (a partial unmap split it). */
bool heca__seg_id_shared_locked(struct heca *h, const struct seg *s)
{
	for (struct seg *o = h->idhash[s->id % SEG_HASH]; o; o = o->idnext)
		if (o != s && o->id == s->id)
			return true;
	return false;
}

/* ---- write-back table (caller holds h->lock) ---- */

static unsigned int wb_slot(uint32_t seg, uint64_t page)
{
	uint64_t k = ((uint64_t)seg << 40) ^ page;
	k *= 0x9e3779b97f4a7c15ull;
	return (unsigned int)(k >> 52) & (WB_HASH - 1);
}

struct wb_entry *heca__wb_find_locked(struct heca *h, uint32_t seg, uint64_t page)
{
	for (struct wb_entry *e = h->wb_hash[wb_slot(seg, page)]; e; e = e->next)
		if (e->seg == seg && e->page == page)
			return e;
	return NULL;
}

void heca__wb_insert_locked(struct heca *h, struct wb_entry *e)
{
	unsigned int s = wb_slot(e->seg, e->page);
	e->next = h->wb_hash[s];
	h->wb_hash[s] = e;
}

void heca__wb_remove_locked(struct heca *h, struct wb_entry *e)
{
	struct wb_entry **pp = &h->wb_hash[wb_slot(e->seg, e->page)];
	while (*pp && *pp != e)
		pp = &(*pp)->next;
	if (*pp)
		*pp = e->next;
	e->next = NULL;
}

static void wb_put_locked(struct heca *h, struct wb_entry *e)
{
	struct wb_batch *b = e->batch;
	heca__wb_remove_locked(h, e);
	h->wb_pages--;
	if (--b->refs == 0) {
		heca__wb_buf_put_locked(h, b->buf);
		free(b);
	}
}

/* ---- resolving faults ---- */

void heca__engine_wake(struct heca *h)
{
	uint64_t one = 1;
	ssize_t r = write(h->evfd, &one, sizeof(one));
	(void)r;
}

static void record_lost_locked(struct heca *h, struct seg *s, uint64_t page, int err)
{
	heca__count(&h->c.pages_lost, 1);
	if (!h->lost_any) {
		h->lost_any = true;
		h->lost_seg = s->id;
		h->lost_page = page;
	}
	heca__log(h, HECA_LOG_ERROR,
		  "segment %u page %llu (address %#lx) lost: %s; the access gets SIGBUS", s->id,
		  (unsigned long long)page, (unsigned long)(s->base + page * PAGE_SZ),
		  heca_strerror(err));
}

/* Make the faulting access fail loudly: UFFDIO_POISON where the kernel has it, else a SIGBUS
 * sent to the faulting thread (it is blocked in the fault, so it takes the signal there). */
static void fail_access(struct heca *h, uintptr_t addr, uint32_t tid)
{
	if (heca__uffd_poison(h, addr & ~(PAGE_SZ - 1), PAGE_SZ) == 0)
		return;
	if (tid) {
		/* Queued with the address, as a handler expects it in si_addr. */
		siginfo_t si;
		memset(&si, 0, sizeof(si));
		si.si_signo = SIGBUS;
		si.si_code = SI_QUEUE;
		si.si_addr = (void *)(addr & ~(PAGE_SZ - 1));
		if (syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, SIGBUS, &si))
			syscall(SYS_tgkill, getpid(), tid, SIGBUS);
	} else
		heca__uffd_wake(h, addr & ~(PAGE_SZ - 1), PAGE_SZ); /* it re-faults, with its tid */
}

/* Room for n more resident pages: under the budget, and with the pages kept locally for want
 * of a sponsor with room, under the hard limit. */
static bool room_locked(struct heca *h, struct seg *s, uint64_t n)
{
	uint64_t used = h->resident + h->fetching + h->pinned + n;

	/* Copies on the inactive list cost nothing to drop: at the limit they go first. */
	if (h->stash_n && used + h->stash_n > h->limit)
		heca__stash_shrink_locked(h, used + h->stash_n - h->limit);
	if (s->leaving)
		return true; /* unregistering: the caller asked for the pages back */
	if (h->cloning) /* dirty pages cannot leave meanwhile (fork.c): up to the limit */
		return h->resident + h->fetching + h->pinned + n <= h->limit;
	return h->resident + h->fetching + n <= h->budget &&
	       h->resident + h->fetching + h->pinned + n <= h->limit;
}

/* Queue a fault to be handled again later; false when there is no memory for it. */
static bool deferred_push_locked(struct heca *h, uintptr_t addr, uint64_t flags, uint32_t tid,
				 uint64_t t0)
{
	if (h->ndeferred == h->capdeferred) {
		unsigned int ncap = h->capdeferred ? h->capdeferred * 2 : 64;
		struct deferred *n = realloc(h->deferred, ncap * sizeof(*n));
		if (!n)
			return false;
		h->deferred = n;
		h->capdeferred = ncap;
	}
	h->deferred[h->ndeferred++] = (struct deferred){addr, flags, tid, t0};
	return true;
}

static void defer_locked(struct heca *h, uintptr_t addr, uint64_t flags, uint32_t tid,
			 uint64_t t0)
{
	if (!deferred_push_locked(h, addr, flags, tid, t0))
		return; /* the thread stays blocked; it is retried on its next fault */
	heca__count(&h->c.faults_deferred, 1);
	heca__evict_kick_locked(h);
	if (h->pinned && h->resident + h->fetching + h->pinned >= h->limit - h->limit / 64) {
		uint64_t now = heca__now_ns();
		char a[32], b[32];
		/* Not silent: say so every ten seconds while faults wait at the limit. */
		if (now - h->full_log_ns > 10000000000ull) {
			h->full_log_ns = now;
			heca__log(h, HECA_LOG_ERROR,
				  "faults wait for memory: no sponsor has room and %s are kept locally "
				  "(local limit %s); free room at a sponsor, add one (heca add), or "
				  "raise the limit",
				  heca__fmt_bytes(a, sizeof(a), h->pinned * PAGE_SZ),
				  heca__fmt_bytes(b, sizeof(b), h->limit * PAGE_SZ));
		}
	}
}

__thread bool heca__engine_thread;

static bool gone_take_locked(struct heca *h, uint32_t seg, uint64_t p);
static bool gone_has_locked(struct heca *h, uint32_t seg, uint64_t p);
static void fetch_gone_locked(struct heca *h, struct seg *s, uint64_t p);

/*
 * A missing fault on a page heca holds mapped: either a fault that raced with the mapping (the
 * page is there: wake the thread) or a page zapped behind heca's back (a raw madvise, an
 * unmap). The kernel is the truth: such a page reads as zero now, so map a zero page, as for a
 * never-written one, and serve the fault. Counted, and said once, so that it is not silent.
 */
static void repair_missing_locked(struct heca *h, struct seg *s, uint64_t page, bool write)
{
	uintptr_t addr = s->base + page * PAGE_SZ;
	uint8_t *b = &s->st[page];
	int rc = heca__uffd_fill(h, addr, h->zero_page, !write);

	if (rc <= 0) {
		if (rc && rc != -EAGAIN)
			heca__uffd_wake(h, addr, PAGE_SZ); /* it faults again; nothing else to do */
		return;
	}
	pset(b, write ? PS_DIRTY : PS_ZERO);
	heca__count(&h->c.pages_repaired, 1);
	if (!h->repair_logged) {
		h->repair_logged = true;
		heca__log(h, HECA_LOG_WARN,
			  "segment %u page %llu (address %#lx) was unmapped behind heca's back (a "
			  "madvise or munmap system call heca did not see); it reads as zero, as the "
			  "kernel says", s->id, (unsigned long long)page, (unsigned long)addr);
	}
}

/* Install content at a page that has no mapping and account it resident; reused: it came back
 * from a local copy of a page that left, so it is in use (policy.c). */
static int install_locked(struct heca *h, struct seg *s, uint64_t page, const void *src,
			  bool write, bool wake, bool reused)
{
	uintptr_t addr = s->base + page * PAGE_SZ;
	bool wp = !write && (h->features & HECA_FEAT_WP);
	int rc = src == h->zero_page ? heca__uffd_copy(h, addr, src, PAGE_SZ, wp, wake)
				     : heca__uffd_copy_data(h, addr, src, PAGE_SZ, wp, wake);

	if (rc)
		return rc;
	h->resident++;
	s->resident++;
	heca__policy_admit_locked(h, s->id, page, reused);
	return 0;
}

/* Pages that prefetch may still bring in: up to the budget, less a reserve kept for demand
 * faults. Going past the high watermark wakes the evictor, which makes room again. */
static uint64_t prefetch_room_locked(struct heca *h)
{
	uint64_t used = h->resident + h->fetching, reserve = (h->budget - h->high) / 2;
	return used + reserve < h->budget ? h->budget - reserve - used : 0;
}

/* Issue one read for [p, q) on the prefetch channel, or put the pages back. */
static void prefetch_run_locked(struct heca *h, struct seg *s, uint64_t p, uint64_t q,
				bool write)
{
	for (uint64_t r = p; r < q; r++) {
		pset(&s->st[r], PS_FETCHING);
		if (write) /* mapped writable: the stream writes what it reads */
			s->st[r] |= PF_WANTW;
	}
	if (h->store->ops->read(h->store, HECA_PRIO_PREFETCH, s->id, p, (uint32_t)(q - p), 0) == 0) {
		h->fetching += q - p;
	} else {
		for (uint64_t r = p; r < q; r++) {
			pset(&s->st[r], PS_REMOTE);
			s->st[r] &= (uint8_t)~PF_WANTW;
		}
	}
}

/* Fetch the REMOTE pages of [lo, hi) other than `page`, as contiguous runs cut at stripe
 * boundaries and the frame size. */
static void prefetch_range_locked(struct heca *h, struct seg *s, uint64_t page, uint64_t lo,
				  uint64_t hi, bool write)
{
	uint64_t stripe = h->opt.stripe_pages;

	for (uint64_t p = lo; p < hi;) {
		uint64_t q;
		if (p == page || s->st[p] != PS_REMOTE) { /* REMOTE with no flag set */
			p++;
			continue;
		}
		for (q = p; q < hi && q != page && s->st[q] == PS_REMOTE && q - p < HECA_WIRE_MAX_PAGES &&
			    (q == p || q % stripe != 0);
		     q++)
			;
		prefetch_run_locked(h, s, p, q, write);
		p = q;
	}
}

/* Prefetch around a demand fault of thread tid at `page`, as the thread's trend says, within
 * the room left under the high watermark. */
static void prefetch_locked(struct heca *h, struct seg *s, uint64_t page, uint32_t tid,
			    bool write)
{
	uint64_t w = h->opt.prefetch_pages, room, lo, hi;
	struct prefetch_plan plan;
	bool wantw;

	if (!w || s->leaving || h->frozen)
		return;
	plan = heca__prefetch_plan(&h->trends, tid, s->base / PAGE_SZ + page, (unsigned int)w,
				   HECA_WIRE_MAX_PAGES - 1, write);
	w = plan.window;
	wantw = plan.write;
	room = prefetch_room_locked(h);
	if (w > room)
		w = room;
	if (!w || plan.mode == PF_MODE_NONE)
		return;
	switch (plan.mode) {
	case PF_MODE_STRIDE:
		for (uint64_t k = 1; k <= w; k++) {
			int64_t p = (int64_t)page + plan.stride * (int64_t)k;
			if (p < 0 || !seg_has(s, (uint64_t)p))
				break;
			if (s->st[p] == PS_REMOTE)
				prefetch_run_locked(h, s, (uint64_t)p, (uint64_t)p + 1, wantw);
		}
		return;
	case PF_MODE_BEHIND:
		lo = page > s->first + w ? page - w : s->first;
		hi = page;
		break;
	case PF_MODE_AROUND:
		lo = page > s->first + w / 2 ? page - w / 2 : s->first;
		hi = page + w / 2 + 1;
		break;
	default: /* ahead, with a little behind for a scan that has just turned */
		lo = page > s->first + w / 8 ? page - w / 8 : s->first;
		hi = lo + w + 1;
		break;
	}
	prefetch_range_locked(h, s, page, lo, HECA_MIN(hi, seg_end(s)), wantw);
}

/*
 * First touch of a never-written page: map its never-written neighbours too (the prefetch
 * window, within the room left), so a thread filling memory does not fault on every page.
 * After a write fault they are mapped writable; the evictor drops them again without any
 * network if they are still all zero when they leave.
 */
static void zero_ahead_locked(struct heca *h, struct seg *s, uint64_t page, bool write)
{
	uint64_t w = h->opt.prefetch_pages, room, lo, hi;
	bool wp = !write && (h->features & HECA_FEAT_WP);

	if (!w || s->leaving)
		return;
	room = prefetch_room_locked(h);
	if (w > room)
		w = room;
	if (!w)
		return;
	lo = page > s->first + w / 4 ? page - w / 4 : s->first;
	hi = HECA_MIN(lo + w + 1, seg_end(s));
	for (uint64_t p = lo; p < hi;) {
		uint64_t q;
		if (s->st[p] != PS_EMPTY) {
			p++;
			continue;
		}
		for (q = p; q < hi && s->st[q] == PS_EMPTY; q++)
			;
		if (heca__uffd_copy(h, s->base + p * PAGE_SZ, h->zero_run, (q - p) * PAGE_SZ, wp,
				    false) == 0) {
			for (uint64_t r = p; r < q; r++) {
				pset(&s->st[r], write ? PS_DIRTY : PS_ZERO);
				h->resident++;
				s->resident++;
				heca__policy_admit_locked(h, s->id, r, false);
			}
		}
		p = q;
	}
	if (h->resident + h->fetching >= h->high)
		heca__evict_kick_locked(h);
}

static void handle_fault_locked(struct heca *h, uintptr_t addr, uint64_t flags, uint32_t tid,
				uint64_t t0, bool retry)
{
	struct seg *s = heca__seg_by_addr_locked(h, addr);
	uint64_t page;
	uint8_t *b;
	bool write = flags & UFFD_PAGEFAULT_FLAG_WRITE;
	int st, rc;

	if (!s) {
		/* Registered, yet in no segment: unregistered meanwhile (the copy fails and the
		 * thread retries as an ordinary fault), or memory the kernel added to a sponsored
		 * mapping behind heca's back (a raw mremap that grew it). Such memory is new:
		 * zero, not sponsored. */
		if (heca__uffd_fill(h, addr & ~(PAGE_SZ - 1), h->zero_page, false) < 0)
			heca__uffd_wake(h, addr & ~(PAGE_SZ - 1), PAGE_SZ);
		return;
	}
	page = (addr - s->base) / PAGE_SZ;
	addr = s->base + page * PAGE_SZ;
	b = &s->st[page];
	st = pstate(*b);

	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		if (st == PS_CLEAN || st == PS_ZERO || st == PS_DIRTY) {
			/* Mark DIRTY before lifting the protection, and lift it under the lock, so
			 * the evictor cannot copy the page while the write lands. */
			pset(b, PS_DIRTY);
			heca__count(&h->c.faults_wp, 1);
			heca__prefetch_note_write(&h->trends, tid, addr / PAGE_SZ);
			rc = heca__uffd_wp(h, addr, PAGE_SZ, false, true);
			if (rc) {
				heca__log(h, HECA_LOG_ERROR, "write-unprotect %#lx: %s",
					  (unsigned long)addr, heca_strerror(rc));
				heca__uffd_wake(h, addr, PAGE_SZ);
			}
		} else if (st == PS_EVICTING) {
			*b |= PF_WAITER; /* the evictor wakes it once the page is out */
		} else {
			heca__uffd_wake(h, addr, PAGE_SZ); /* stale: the page moved on */
		}
		return;
	}

	if (!retry) {
		if (write)
			heca__count(&h->c.faults_write, 1);
		else
			heca__count(&h->c.faults_read, 1);
	}
	switch (st) {
	case PS_CLEAN:
	case PS_ZERO:
	case PS_DIRTY:
		repair_missing_locked(h, s, page, write);
		return;
	case PS_EVICTING:
		if (tid && tid == __atomic_load_n(&h->evict_tid, __ATOMIC_ACQUIRE)) {
			/* The evictor copies only pages it found mapped: this one was zapped
			 * behind heca's back meanwhile, and reads as zero. Map a protected zero
			 * page so that the copy goes on; no other thread is woken by it. */
			if (heca__uffd_fill(h, addr, h->zero_page, true) > 0)
				heca__count(&h->c.pages_repaired, 1);
			return;
		}
		/* fall through */
	case PS_FETCHING:
		*b |= PF_WAITER | (write ? PF_WANTW : 0);
		return;
	case PS_LOST:
		/* Lost is what the store said when asked last: ask again, as a sponsor that was
		 * given up may serve it now; only a store that still cannot makes it fail. */
		if (h->frozen || !room_locked(h, s, 1))
			goto defer;
		pset(b, PS_FETCHING);
		*b |= PF_DEMAND | (write ? PF_WANTW : 0);
		rc = h->store->ops->read(h->store, HECA_PRIO_FAULT, s->id, page, 1, t0);
		if (rc) {
			pset(b, PS_LOST);
			*b &= (uint8_t)~(PF_DEMAND | PF_WANTW);
			fail_access(h, addr, tid);
			return;
		}
		h->fetching++;
		return;
	case PS_EMPTY:
		if (!room_locked(h, s, 1))
			goto defer;
		/* Never written: no network. A read maps a write-protected zero page so that a
		 * later write is seen (the kernel's shared zero page would hide it). */
		rc = install_locked(h, s, page, h->zero_page, write, true, false);
		if (rc)
			goto fail;
		pset(b, write ? PS_DIRTY : PS_ZERO);
		heca__count(&h->c.faults_zero, 1);
		heca__hist_add(&h->lat, heca__now_ns() - t0);
		zero_ahead_locked(h, s, page, write);
		return;
	case PS_REMOTE:
		if (!room_locked(h, s, 1) || h->frozen)
			goto defer;
		if (*b & PF_WB) {
			struct wb_entry *e = heca__wb_find_locked(h, s->id, page);
			if (e) {
				rc = install_locked(h, s, page, e->data, write, true, true);
				if (rc == -EAGAIN)
					goto defer; /* events came: look at the page again */
				if (rc)
					goto fail;
				pset(b, write ? PS_DIRTY : PS_CLEAN);
				heca__stash_drop_locked(h, s->id, page);
				heca__count(&h->c.faults_wb_hit, 1);
				heca__hist_add(&h->lat, heca__now_ns() - t0);
				return;
			}
			const uint8_t *copy = heca__stash_find_locked(h, s->id, page);
			if (copy) {
				/* On the inactive list: in use, it comes back from its copy. */
				rc = install_locked(h, s, page, copy, write, true, true);
				if (rc == -EAGAIN)
					goto defer;
				if (rc)
					goto fail;
				heca__stash_take_locked(h, s->id, page, b);
				pset(b, write ? PS_DIRTY : PS_CLEAN);
				heca__hist_add(&h->lat, heca__now_ns() - t0);
				return;
			}
			*b &= (uint8_t)~PF_WB; /* cannot happen; fetch instead */
		}
		pset(b, PS_FETCHING);
		*b |= PF_DEMAND | (write ? PF_WANTW : 0);
		rc = h->store->ops->read(h->store, HECA_PRIO_FAULT, s->id, page, 1, t0);
		if (rc) {
			pset(b, PS_LOST);
			*b &= (uint8_t)~(PF_DEMAND | PF_WANTW);
			record_lost_locked(h, s, page, rc);
			fail_access(h, addr, tid);
			return;
		}
		h->fetching++;
		prefetch_locked(h, s, page, tid, write);
		return;
	}
	return;
defer:
	defer_locked(h, addr, flags, tid, t0);
	return;
fail:
	heca__log(h, HECA_LOG_ERROR, "install segment %u page %llu: %s", s->id,
		  (unsigned long long)page, heca_strerror(rc));
	heca__uffd_wake(h, addr, PAGE_SZ);
}

static void retry_deferred_locked(struct heca *h)
{
	unsigned int n = h->ndeferred;
	struct deferred *d;

	if (!n)
		return;
	d = malloc(n * sizeof(*d));
	if (!d)
		return;
	memcpy(d, h->deferred, n * sizeof(*d));
	h->ndeferred = 0;
	for (unsigned int i = 0; i < n; i++)
		handle_fault_locked(h, d[i].addr, d[i].flags, d[i].tid, d[i].t0, true);
	free(d);
}

/* Account a page that a read mapped: state, counters, latency. Caller holds h->lock. */
static void fetched_locked(struct heca *h, struct seg *s, uint64_t p, uint8_t was, bool write,
			   uint64_t cookie, uint64_t now)
{
	uint8_t *b = &s->st[p];

	*b &= (uint8_t)~(PF_DEMAND | PF_WAITER | PF_WANTW);
	pset(b, write ? PS_DIRTY : PS_CLEAN);
	h->resident++;
	s->resident++;
	heca__policy_admit_locked(h, s->id, p, false);
	if (was & PF_DEMAND) {
		heca__count(&h->c.pages_fetched, 1);
		if (cookie) {
			heca__hist_add(&h->lat, now - cookie);
			heca__hist_add(&h->lat_fetch, now - cookie);
		}
	} else {
		heca__count(&h->c.pages_prefetched, 1);
	}
}

/*
 * A read of page p failed. A page nobody waits for goes back to REMOTE (a later fault asks
 * again); one a thread waits for that came in a read of several pages is asked for alone (the
 * store may serve it from another copy); only a page the store failed alone is lost.
 */
static void read_failed_locked(struct heca *h, struct seg *s, uint64_t p, int err, bool alone)
{
	uint8_t *b = &s->st[p];
	bool wake = *b & (PF_WAITER | PF_DEMAND);

	if (!wake) {
		*b &= (uint8_t)~PF_WANTW;
		pset(b, PS_REMOTE);
		return;
	}
	if (!alone && h->store->ops->read(h->store, HECA_PRIO_FAULT, s->id, p, 1, 0) == 0) {
		*b |= PF_DEMAND;
		h->fetching++;
		return;
	}
	*b &= (uint8_t)~(PF_DEMAND | PF_WAITER | PF_WANTW);
	pset(b, PS_LOST);
	record_lost_locked(h, s, p, err);
	fail_access(h, s->base + p * PAGE_SZ, 0);
}

/*
 * A read finished (store callback, engine thread). Pages still FETCHING are mapped in runs of
 * the same mode with one UFFDIO_COPY each, without waking anyone; then only the runs that have
 * a waiting thread are woken, with one UFFDIO_WAKE each.
 */
void heca__on_read_done(void *arg, uint64_t cookie, int status, uint32_t segid, uint64_t page,
			uint32_t count, const uint8_t *data)
{
	struct heca *h = arg;
	uint64_t now = heca__now_ns();
	struct seg *s;

	pthread_mutex_lock(&h->lock);
	s = heca__seg_by_page_locked(h, segid, page);
	if (!s) {
		for (uint32_t i = 0; h->gone && i < count; i++)
			gone_take_locked(h, segid, page + i);
		pthread_mutex_unlock(&h->lock);
		return; /* unregistered while in flight */
	}
	if (page + count > seg_end(s))
		count = (uint32_t)(seg_end(s) - page);
	for (uint32_t i = 0; i < count;) {
		uint8_t *b = &s->st[page + i];
		uint32_t j;
		bool write, wake = false;
		int rc;

		if (pstate(*b) != PS_FETCHING) {
			i++;
			continue;
		}
		if (h->gone && gone_take_locked(h, segid, page + i)) {
			fetch_gone_locked(h, s, page + i); /* zapped meanwhile: reads as zero */
			i++;
			continue;
		}
		write = *b & PF_WANTW;
		for (j = i; j < count && pstate(s->st[page + j]) == PS_FETCHING &&
			    !!(s->st[page + j] & PF_WANTW) == write &&
			    (j == i || !h->gone || !gone_has_locked(h, segid, page + j));
		     j++)
			wake |= !!(s->st[page + j] & (PF_WAITER | PF_DEMAND));
		rc = status;
		if (!rc) {
			uint64_t t0 = heca__now_ns();
			rc = heca__uffd_copy_data(h, s->base + (page + i) * PAGE_SZ,
						  data + (size_t)i * PAGE_SZ,
						  (uint64_t)(j - i) * PAGE_SZ,
						  !write && (h->features & HECA_FEAT_WP), false);
			if (rc == -EAGAIN)
				continue; /* events came: look at page i again */
			if (cookie && wake) {
				/* Per-stage time of demand fetches: mapping and waking. */
				heca__count(&h->c.fetch_install_ns, heca__now_ns() - t0);
				heca__count(&h->c.fetch_install_count, 1);
			}
		}
		h->fetching -= j - i;
		for (uint32_t k = i; k < j; k++) {
			if (rc) {
				read_failed_locked(h, s, page + k, rc, count == 1);
			} else {
				fetched_locked(h, s, page + k, s->st[page + k], write, cookie, now);
			}
		}
		if (!rc && wake)
			heca__uffd_wake(h, s->base + (page + i) * PAGE_SZ, (uint64_t)(j - i) * PAGE_SZ);
		i = j;
	}
	if (h->resident + h->fetching >= h->high)
		heca__evict_kick_locked(h);
	pthread_mutex_unlock(&h->lock);
}

/* A write-back finished (store callback, engine thread). */
void heca__on_write_done(void *arg, uint64_t cookie, int status, uint32_t segid, uint64_t page,
			 uint32_t count)
{
	struct heca *h = arg;
	struct seg *s;
	(void)cookie;

	pthread_mutex_lock(&h->lock);
	for (uint32_t i = 0; i < count; i++) {
		struct wb_entry *e = heca__wb_find_locked(h, segid, page + i);
		uint8_t *b;
		if (!e)
			continue;
		s = heca__seg_by_page_locked(h, segid, page + i);
		if (!s) {
			wb_put_locked(h, e);
			continue;
		}
		b = &s->st[page + i];
		*b &= (uint8_t)~PF_WB;
		if (status) {
			/* Not stored remotely: keep the page here, mapped, instead of dropping the
			 * only copy. It counts against the hard limit, not the budget, and is
			 * written back again when a sponsor may have room (evict.c). */
			int st = pstate(*b), rc = 0;

			heca__count(&h->c.writeback_errors, 1);
			if (st == PS_EMPTY) /* discarded meanwhile (a zap heca learnt of) */
				goto next;
			while (st == PS_REMOTE &&
			       (rc = install_locked(h, s, page + i, e->data, true, false, false)) == -EAGAIN)
				st = pstate(*b); /* events came: zapped meanwhile? */
			if (st == PS_EMPTY)
				goto next;
			if (rc) {
				heca__log(h, HECA_LOG_ERROR,
					  "cannot keep segment %u page %llu locally: %s", segid,
					  (unsigned long long)(page + i), heca_strerror(rc));
				pset(b, PS_LOST);
			} else {
				pset(b, PS_DIRTY);
				*b |= PF_PINNED;
				h->resident--;
				s->resident--;
				h->pinned++;
				s->pinned_pages++;
			}
			if (!rc && h->pinned == 1 &&
			    heca__now_ns() - h->pin_log_ns > 10000000000ull &&
			    (h->pin_log_ns = heca__now_ns()))
				heca__log(h, HECA_LOG_WARN,
					  "write-back of segment %u page %llu failed: %s; such pages "
					  "stay in local memory (heca status: pinned_pages) and are "
					  "written back when a sponsor has room",
					  segid, (unsigned long long)(page + i),
					  heca_strerror(status));
		} else {
			heca__count(&h->c.pages_written_back, 1);
		}
next:
		wb_put_locked(h, e);
		/* A copy on the inactive list stays while the page is out and now stored; it
		 * holds what the failed write-back held, so with the write-back it goes. */
		heca__stash_wb_done_locked(h, s, page + i, !status);
	}
	pthread_cond_broadcast(&h->evict_cond);
	pthread_mutex_unlock(&h->lock);
}

/* ---- zaps heca did not make ---- */

static bool gone_has_locked(struct heca *h, uint32_t seg, uint64_t p)
{
	for (struct gone *g = h->gone; g; g = g->next)
		if (g->seg == seg && p >= g->lo && p < g->hi)
			return true;
	return false;
}

/* Whether page p of segment seg is in a gone range; each such range counts it off. */
static bool gone_take_locked(struct heca *h, uint32_t seg, uint64_t p)
{
	bool any = false;

	for (struct gone **pp = &h->gone; *pp;) {
		struct gone *g = *pp;
		if (g->seg != seg || p < g->lo || p >= g->hi) {
			pp = &g->next;
			continue;
		}
		any = true;
		if (--g->left == 0) {
			*pp = g->next;
			free(g);
		} else {
			pp = &g->next;
		}
	}
	return any;
}

/* A read of page p ended with the page zapped meanwhile: it reads as zero. */
static void fetch_gone_locked(struct heca *h, struct seg *s, uint64_t p)
{
	uint8_t *b = &s->st[p];

	if (*b & (PF_WAITER | PF_DEMAND))
		heca__uffd_wake(h, s->base + p * PAGE_SZ, PAGE_SZ); /* it faults on EMPTY */
	*b = (uint8_t)(*b & PF_WB) | PS_EMPTY;
	h->fetching--;
}

/*
 * The kernel is about to zap [start, end) (a madvise DONTNEED, FREE or REMOVE): after it, the
 * pages read as zero. Unless the zap is heca's own, make them never written here: a page that
 * heca evicted must not come back with what it held before. The kernel zaps only once this
 * message is read, so no fault on these pages can have been read after it.
 */
static void zapped_locked(struct heca *h, uintptr_t start, uintptr_t end)
{
	uint64_t n = 0;

	for (unsigned int i = 0; i < h->nsegs; i++) {
		struct seg *s = h->segs[i];
		uint64_t lo, hi, nfetch = 0;

		if (seg_limit(s) <= start || seg_start(s) >= end)
			continue;
		lo = (HECA_MAX(start, seg_start(s)) - s->base) / PAGE_SZ;
		hi = (HECA_MIN(end, seg_limit(s)) - s->base + PAGE_SZ - 1) / PAGE_SZ;
		for (uint64_t p = lo; p < hi; p++) {
			uint8_t *b = &s->st[p];
			switch (pstate(*b)) {
			case PS_EMPTY:
				continue;
			case PS_CLEAN:
			case PS_ZERO:
			case PS_DIRTY:
				if (*b & PF_PINNED) {
					h->pinned--;
					s->pinned_pages--;
				} else {
					h->resident--;
					s->resident--;
				}
				break;
			case PS_LOST:
				if (h->reviving)
					continue; /* the evictor clears its poison markers */
				break;
			case PS_REMOTE:
				break;
			case PS_FETCHING:
				nfetch++;
				n++;
				continue;
			case PS_EVICTING:
				if (!heca__evict_zap_is_own_locked(h, s->base + p * PAGE_SZ))
					n++;
				continue;
			}
			/* The write-back in flight, if any, keeps its entry until acknowledged;
			 * a copy on the inactive list is forgotten. */
			heca__stash_forget_locked(h, s->id, p, b);
			*b = (uint8_t)(*b & PF_WB) | PS_EMPTY;
			n++;
		}
		if (nfetch) {
			struct gone *g = malloc(sizeof(*g));
			if (g) {
				*g = (struct gone){h->gone, s->id, lo, hi, nfetch};
				h->gone = g;
			} else {
				heca__log(h, HECA_LOG_ERROR,
					  "out of memory noting a zap of pages being fetched: segment "
					  "%u pages %llu-%llu may read their old content",
					  s->id, (unsigned long long)lo, (unsigned long long)hi);
			}
		}
	}
	if (n)
		heca__count(&h->c.pages_zapped_outside, n);
}

struct adopt {
	struct heca *h;
	struct seg *s;
};

static void adopt_run(void *arg, uint64_t first, uint64_t n)
{
	struct adopt *a = arg;
	struct seg *s = a->s;

	for (uint64_t p = s->first + first; p < s->first + first + n; p++) {
		uint8_t *b = &s->st[p];
		if (pstate(*b) != PS_REMOTE && pstate(*b) != PS_EMPTY)
			continue;
		/* The write-back in flight, if any, keeps its entry until acknowledged; a copy
		 * on the inactive list is forgotten. */
		heca__stash_forget_locked(a->h, s->id, p, b);
		*b = (uint8_t)(*b & PF_WB) | PS_DIRTY;
		a->h->resident++;
		s->resident++;
		heca__policy_admit_locked(a->h, s->id, p, false);
	}
}

/*
 * The program moved [from, from + len) to `to` with an mremap heca did not make; the pages,
 * their write protection and the registration moved with it (UFFD_FEATURE_EVENT_REMAP). A
 * whole segment follows: its base changes (a batch the evictor works on finds the pages it
 * had not dropped yet at their new address, evict.c). Part of a segment cannot
 * be followed: it is said, and the part is taken as unmapped (what heca evicted from it reads
 * as zero at its new place).
 */
static void moved_locked(struct heca *h, uintptr_t from, uintptr_t to, uint64_t len)
{
	struct seg *s = heca__seg_by_addr_locked(h, from);

	if (s && seg_start(s) == from && s->npages * PAGE_SZ == len) {
		struct adopt a = {h, s};
		s->base = to - s->first * PAGE_SZ;
		h->seg_gen++;
		heca__seg_resort_locked(h);
		/* The kernel is the truth: a page it moved mapped is here, whatever heca thought.
		 * The evictor may have taken it for dropped, its zap refused as the move took it
		 * away, before this event said where to (evict.c, classify_failed_locked). Its
		 * content is what the program sees: kept as dirty, written back when it leaves. */
		heca__pages_present(to, s->npages, adopt_run, &a);
		return;
	}
	if (!heca__overlaps_locked(h, from, len))
		return;
	heca__log(h, HECA_LOG_ERROR,
		  "mremap of %#lx-%#lx, part of a sponsored segment, made behind heca's back: heca "
		  "cannot follow it; pages it had evicted from there read as zero at %#lx",
		  (unsigned long)from, (unsigned long)(from + len), (unsigned long)to);
	zapped_locked(h, from, from + len);
	heca__unmapped_note_locked(h, from, len);
}

/*
 * A batch's events first, then its faults. The kernel gives faults before events, and a zap
 * goes ahead as soon as its event is read, so a fault read with it may be served after the
 * zap: served first, it would map old content where the kernel has just zapped.
 */
static void handle_msgs_locked(struct heca *h, const struct uffd_msg *msg, size_t n,
			       uint64_t t0, bool defer)
{
	for (size_t i = 0; i < n; i++) {
		const struct uffd_msg *m = &msg[i];
		if (m->event == UFFD_EVENT_REMOVE || m->event == UFFD_EVENT_UNMAP) {
			/* An unmap has happened, a zap is about to: the pages read as zero (or
			 * are gone); an unmapped range also leaves the segment table. */
			uintptr_t a = (uintptr_t)m->arg.remove.start, e = (uintptr_t)m->arg.remove.end;
			zapped_locked(h, a, e);
			if (m->event == UFFD_EVENT_UNMAP && heca__overlaps_locked(h, a, e - a))
				heca__unmapped_note_locked(h, a, e - a);
			continue;
		}
		if (m->event == UFFD_EVENT_REMAP)
			moved_locked(h, (uintptr_t)m->arg.remap.from, (uintptr_t)m->arg.remap.to,
				     m->arg.remap.len);
	}
	for (size_t i = 0; i < n; i++) {
		const struct uffd_msg *m = &msg[i];
		uint32_t tid = h->thread_id ? m->arg.pagefault.feat.ptid : 0;

		if (m->event != UFFD_EVENT_PAGEFAULT)
			continue;
		if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
			;
		else if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE)
			heca__count(&h->c.faults_write, 1);
		else
			heca__count(&h->c.faults_read, 1);
		if (defer) {
			/* Taken in the middle of another step: handled after it. */
			deferred_push_locked(h, (uintptr_t)m->arg.pagefault.address,
					     m->arg.pagefault.flags, tid, t0);
			continue;
		}
		handle_fault_locked(h, (uintptr_t)m->arg.pagefault.address, m->arg.pagefault.flags,
				    tid, t0, true);
	}
}

/* Messages of reads up to seq are handled. A read is counted before it starts, so that a
 * thread whose zap event was taken by a read sees that read counted (heca__msgs_wait_locked). */
static void msgs_done(struct heca *h, uint64_t seq)
{
	uint64_t cur = __atomic_load_n(&h->msgs_done, __ATOMIC_ACQUIRE);
	while (cur < seq &&
	       !__atomic_compare_exchange_n(&h->msgs_done, &cur, seq, false, __ATOMIC_ACQ_REL,
					    __ATOMIC_ACQUIRE))
		;
}

bool heca__engine_drain_locked(struct heca *h)
{
	struct uffd_msg msg[16];
	bool any = false;

	for (;;) {
		uint64_t seq = __atomic_add_fetch(&h->msgs_read, 1, __ATOMIC_ACQ_REL);
		ssize_t n = read(h->uffd, msg, sizeof(msg));
		if (n > 0) {
			h->drained = any = true;
			handle_msgs_locked(h, msg, (size_t)n / sizeof(msg[0]), heca__now_ns(), true);
		}
		msgs_done(h, seq);
		pthread_cond_broadcast(&h->evict_cond);
		if (n <= 0 || (size_t)n < sizeof(msg))
			return any;
	}
}

void heca__msgs_wait_locked(struct heca *h, uint64_t seq)
{
	h->msgs_waiters++;
	while (__atomic_load_n(&h->msgs_done, __ATOMIC_ACQUIRE) < seq && !h->stop)
		heca__cond_wait_ms(&h->evict_cond, &h->lock, 5);
	h->msgs_waiters--;
}

/* ---- the loop ---- */

static void read_faults(struct heca *h)
{
	struct uffd_msg msg[MSG_BATCH];

	for (;;) {
		uint64_t seq = __atomic_add_fetch(&h->msgs_read, 1, __ATOMIC_ACQ_REL);
		ssize_t n = read(h->uffd, msg, sizeof(msg));
		uint64_t t0 = heca__now_ns();
		if (n <= 0) {
			msgs_done(h, seq);
			return; /* EAGAIN: drained */
		}
		pthread_mutex_lock(&h->lock);
		handle_msgs_locked(h, msg, (size_t)n / sizeof(msg[0]), t0, false);
		msgs_done(h, seq);
		if (h->ev_v || h->reviving || h->msgs_waiters)
			pthread_cond_broadcast(&h->evict_cond); /* it may wait for msgs_done */
		if (h->ndeferred && h->drained)
			retry_deferred_locked(h);
		h->drained = false;
		pthread_mutex_unlock(&h->lock);
		if ((size_t)n < sizeof(msg))
			return;
	}
}

void *heca__engine_main(void *arg)
{
	struct heca *h = arg;
	int ep = h->epfd;
	struct epoll_event evs[64];
	uint64_t last_tick = 0;
	sigset_t all;

	heca__internal = 1;
	heca__engine_thread = true;
	/* Signals go to application threads, never to the engine: a handler touching sponsored
	 * memory on this thread would wait for itself. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);

	for (;;) {
		int n, timeout = 20;
		uint64_t now;

		if (h->opt.spin_us) {
			uint64_t until = heca__now_ns() + h->opt.spin_us * 1000ull;
			do
				n = epoll_wait(ep, evs, 64, 0);
			while (n == 0 && heca__now_ns() < until);
			if (n == 0)
				n = epoll_wait(ep, evs, 64, timeout);
		} else {
			n = epoll_wait(ep, evs, 64, timeout);
		}
		if (__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE))
			break;
		for (int i = 0; i < n; i++) {
			void *ctx = evs[i].data.ptr;
			if (ctx == &h->uffd) {
				read_faults(h);
			} else if (ctx == &h->evfd) {
				uint64_t v;
				ssize_t r = read(h->evfd, &v, sizeof(v));
				(void)r;
				pthread_mutex_lock(&h->lock);
				retry_deferred_locked(h);
				pthread_mutex_unlock(&h->lock);
			} else {
				h->store->ops->dispatch(h->store, ctx);
			}
		}
		now = heca__now_ns();
		if (now - last_tick > 20000000ull) {
			last_tick = now;
			h->store->ops->tick(h->store, now);
			pthread_mutex_lock(&h->lock);
			retry_deferred_locked(h);
			pthread_mutex_unlock(&h->lock);
		}
	}
	return NULL;
}
