// SPDX-License-Identifier: MIT
/*
 * heca.c - the public API: opening a handle (sponsors, userfaultfd, engine and evictor
 * threads), registering and unregistering segments, statistics, errors and logging.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "heca_int.h"
#include "segops.h"
#include "util.h"

static __thread char last_error[512];

const char *heca_last_error(void)
{
	return last_error;
}

void heca__set_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
}

void heca__log(struct heca *h, enum heca_log_level lvl, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	if (!h->opt.log || lvl > h->opt.log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	h->opt.log(h->opt.log_arg, lvl, buf);
}

void heca_options_init(struct heca_options *o)
{
	memset(o, 0, sizeof(*o));
	o->local_budget = 64ull << 20;
	o->budget_cgroup_pct = 75;
	o->prefetch_pages = 16;
	o->inactive_pct = HECA_INACTIVE_DEFAULT;
	o->stripe_pages = 256;
	o->timeout_ms = 5000;
	o->detect_ms = 2000;
	o->grace_ms = 60000;
	o->log_level = HECA_LOG_INFO;
}

static void set_watermarks(struct heca *h)
{
	uint64_t b = h->budget, slack = b / 16, band = b / 16;

	if (slack < 1)
		slack = 1;
	if (slack > 256)
		slack = 256;
	if (band < 1)
		band = 1;
	if (band > 1024)
		band = 1024;
	h->high = b - slack;
	h->low = h->high > band ? h->high - band : 0;
}

/* The wake-up fd, the fault fd, and the engine's one epoll set over them and the stores'
 * sockets, which a store adds (and swaps on reconnect) itself, tagged with its context. */
int heca__engine_fds(struct heca *h)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &h->uffd};
	int rc;

	h->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (h->evfd < 0)
		return -errno;
	rc = heca__uffd_open(h);
	if (rc)
		return rc;
	h->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (h->epfd < 0)
		return -errno;
	epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->uffd, &ev);
	ev.data.ptr = &h->evfd;
	epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->evfd, &ev);
	return 0;
}

/* The engine and the evictor. */
int heca__start_threads(struct heca *h)
{
	int rc = -pthread_create(&h->engine_thread, NULL, heca__engine_main, h);
	if (rc)
		return rc;
	h->engine_started = true;
	rc = -pthread_create(&h->evict_thread, NULL, heca__evict_main, h);
	if (rc)
		return rc;
	h->evict_started = true;
	return 0;
}

int heca_open(const struct heca_options *opts, struct heca **out)
{
	struct heca *h;
	int rc;

	last_error[0] = '\0';
	if (!opts || !out) {
		heca__set_error("heca_open: options and handle pointer are required");
		return -EINVAL;
	}
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->opt = *opts;
	h->uffd = h->evfd = h->epfd = h->ctl_fd = -1;
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->evict_cond, NULL);
	if (!h->opt.stripe_pages)
		h->opt.stripe_pages = 256;
	if (!h->opt.timeout_ms)
		h->opt.timeout_ms = 5000;
	if (!h->opt.detect_ms)
		h->opt.detect_ms = 2000;
	if (!h->opt.grace_ms)
		h->opt.grace_ms = 60000;
	if (h->opt.prefetch_pages > 255)
		h->opt.prefetch_pages = 255;

	h->budget = h->opt.local_budget / PAGE_SZ;
	if (h->opt.flags & HECA_OPT_BUDGET_CGROUP) {
		uint64_t lim;
		char why[128];
		rc = heca__cgroup_limit(&lim, why, sizeof(why));
		if (rc) {
			heca__set_error("local budget from cgroup: %s", why);
			goto fail;
		}
		h->budget = lim / PAGE_SZ *
			    (h->opt.budget_cgroup_pct ? h->opt.budget_cgroup_pct : 75) / 100;
		/* Pages kept past the budget are charged to the cgroup too: half of what is
		 * left under its limit, not twice the budget. */
		if (!h->opt.local_limit && lim / PAGE_SZ > h->budget)
			h->opt.local_limit = (h->budget + (lim / PAGE_SZ - h->budget) / 2) * PAGE_SZ;
	}
	if (h->budget < 8) {
		heca__set_error("local budget %llu bytes is below the minimum of 8 pages (32 KiB)",
				(unsigned long long)(h->budget * PAGE_SZ));
		rc = -EINVAL;
		goto fail;
	}
	h->limit = h->opt.local_limit ? h->opt.local_limit / PAGE_SZ : 2 * h->budget;
	if (h->limit < h->budget) {
		heca__set_error("local limit %llu bytes is below the local budget (%llu bytes)",
				(unsigned long long)(h->limit * PAGE_SZ),
				(unsigned long long)(h->budget * PAGE_SZ));
		rc = -EINVAL;
		goto fail;
	}
	if (h->opt.inactive_pct > 50) {
		heca__set_error("inactive list of %u%% of the budget: at most 50%%",
				h->opt.inactive_pct);
		rc = -EINVAL;
		goto fail;
	}
	/* The inactive list is part of the budget: what is mapped is less. Under the limit it
	 * gives its room back first (engine.c, room_locked). */
	rc = heca__stash_init(h, h->budget >= 64 ? h->budget * h->opt.inactive_pct / 100 : 0);
	if (rc)
		goto fail;
	h->budget -= h->stash_cap;
	set_watermarks(h);
	h->fifo_cap = 1024;
	while (h->fifo_cap < h->budget * 2)
		h->fifo_cap *= 2;
	h->fifo = malloc(h->fifo_cap * sizeof(*h->fifo));
	h->zero_page = aligned_alloc(PAGE_SZ, PAGE_SZ);
	/* Reads of never-touched anonymous memory cost nothing: the kernel's zero page. */
	h->zero_run = mmap(NULL, 256 * PAGE_SZ, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (h->zero_run == MAP_FAILED)
		h->zero_run = NULL;
	if (!h->fifo || !h->zero_page || !h->zero_run) {
		rc = -ENOMEM;
		goto fail;
	}
	memset(h->zero_page, 0, PAGE_SZ);
	rc = heca__random(h->demander_id, sizeof(h->demander_id));
	if (rc)
		goto fail;
	rc = heca__engine_fds(h);
	if (rc)
		goto fail;
	if (h->user_mode_only)
		heca__log(h, HECA_LOG_WARN,
			  "userfaultfd serves user-mode faults only here (not root, no "
			  "CAP_SYS_PTRACE, vm.unprivileged_userfaultfd=0): a system call that writes "
			  "into sponsored memory that is not resident fails with EFAULT");
	if (!h->opt.sponsors && h->opt.cluster_file) {
		char why[512];
		rc = heca__cluster_file_read(h->opt.cluster_file, &h->sponsor_list, why,
					     sizeof(why));
		if (rc) {
			heca__set_error("%s", why);
			goto fail;
		}
		h->opt.sponsors = h->sponsor_list;
	}
	if (h->opt.sponsors && !strcmp(h->opt.sponsors, "mem"))
		rc = heca__store_mem_open(h, &h->store);
	else
		rc = heca__store_remote_open(h, h->opt.sponsors, &h->store);
	if (rc)
		goto fail;
	h->store->read_done = heca__on_read_done;
	h->store->write_done = heca__on_write_done;
	h->store->arg = h;

	rc = heca__start_threads(h);
	if (rc)
		goto fail;
	if (h->opt.control_path) {
		rc = heca__control_start(h, h->opt.control_path);
		if (rc)
			goto fail;
	}
	*out = h;
	return 0;
fail:
	heca_close(h);
	return rc;
}

/* Room for one more segment in the table. */
int heca__segs_reserve_locked(struct heca *h)
{
	if (h->nsegs == h->capsegs) {
		unsigned int ncap = h->capsegs ? h->capsegs * 2 : 8;
		struct seg **n = realloc(h->segs, ncap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		h->segs = n;
		h->capsegs = ncap;
	}
	return 0;
}

int heca__seg_insert_locked(struct heca *h, struct seg *s)
{
	unsigned int i;

	if (heca__segs_reserve_locked(h))
		return -ENOMEM;
	h->seg_gen++;
	for (i = h->nsegs; i > 0 && seg_start(h->segs[i - 1]) > seg_start(s); i--)
		h->segs[i] = h->segs[i - 1];
	h->segs[i] = s;
	h->nsegs++;
	s->idnext = h->idhash[s->id % SEG_HASH];
	h->idhash[s->id % SEG_HASH] = s;
	return 0;
}

void heca__seg_remove_locked(struct heca *h, struct seg *s)
{
	unsigned int i;
	struct seg **pp = &h->idhash[s->id % SEG_HASH];

	h->seg_gen++;
	while (*pp && *pp != s)
		pp = &(*pp)->idnext;
	if (*pp)
		*pp = s->idnext;
	s->idnext = NULL;
	for (i = 0; i < h->nsegs && h->segs[i] != s; i++)
		;
	if (i == h->nsegs)
		return;
	memmove(&h->segs[i], &h->segs[i + 1], (h->nsegs - i - 1) * sizeof(*h->segs));
	h->nsegs--;
}

/* Keep h->segs sorted by address after s moved (mremap). */
void heca__seg_resort_locked(struct heca *h)
{
	h->seg_gen++;
	for (unsigned int i = 1; i < h->nsegs; i++) {
		struct seg *s = h->segs[i];
		unsigned int j = i;
		for (; j > 0 && seg_start(h->segs[j - 1]) > seg_start(s); j--)
			h->segs[j] = h->segs[j - 1];
		h->segs[j] = s;
	}
}

bool heca__overlaps_locked(struct heca *h, uintptr_t a, uint64_t len)
{
	for (unsigned int i = 0; i < h->nsegs; i++) {
		struct seg *s = h->segs[i];
		if (a < seg_limit(s) && seg_start(s) < a + len)
			return true;
	}
	return false;
}

struct seg_states *heca__states_new(uint64_t cap)
{
	struct seg_states *ss = calloc(1, sizeof(*ss) + cap);
	if (ss) {
		ss->refs = 1;
		ss->cap = cap;
	}
	return ss;
}

void heca__seg_free(struct seg *s)
{
	if (!s)
		return;
	if (s->ss && --s->ss->refs == 0)
		free(s->ss);
	free(s);
}

/*
 * Commit accounting for a new segment of n pages: it must fit in what the sponsors can still
 * store (their free room at the last heartbeat, over the copies kept) plus the local room left
 * under the hard limit, unless HECA_OPT_OVERCOMMIT. Like the kernel's heuristic overcommit it
 * refuses what obviously cannot be stored, so that a full cluster is an allocation failure
 * rather than faults that wait. Caller holds h->lock. Returns 0 or -ENOMEM.
 */
static int admit_locked(struct heca *h, uint64_t n)
{
	uint64_t remote, local;
	char a[32], b[32], c[32];

	if ((h->opt.flags & HECA_OPT_OVERCOMMIT) || !h->store->ops->free_pages)
		return 0;
	remote = h->store->ops->free_pages(h->store);
	local = h->limit > h->pinned ? h->limit - h->pinned : 0;
	if (n <= remote || n - remote <= local)
		return 0;
	heca__set_error("cannot sponsor %s: the sponsors have room for %s more and the local "
			"limit for %s (free room at a sponsor, add one, or raise local_limit)",
			heca__fmt_bytes(a, sizeof(a), n * PAGE_SZ),
			heca__fmt_bytes(b, sizeof(b), remote * PAGE_SZ),
			heca__fmt_bytes(c, sizeof(c), local * PAGE_SZ));
	return -ENOMEM;
}

struct adopt {
	struct heca *h;
	struct seg *s;
};

/* Pages [first, first + n) of a segment being registered are present: they hold the caller's
 * data, so they are written pages, resident. */
static void adopt_run(void *arg, uint64_t first, uint64_t n)
{
	struct heca *h = ((struct adopt *)arg)->h;
	struct seg *s = ((struct adopt *)arg)->s;

	pthread_mutex_lock(&h->lock);
	for (uint64_t p = first; p < first + n && p < s->npages; p++) {
		if (s->st[p] != PS_EMPTY)
			continue;
		s->st[p] = PS_DIRTY;
		h->resident++;
		s->resident++;
		heca__fifo_push_locked(h, s->id, p);
	}
	if (h->resident >= h->high)
		heca__evict_kick_locked(h);
	pthread_mutex_unlock(&h->lock);
}

/* Have the sponsors free store segment id, as a store call (segops.c). */
static void store_release(struct heca *h, uint32_t id)
{
	pthread_mutex_lock(&h->lock);
	heca__store_call_begin_locked(h);
	pthread_mutex_unlock(&h->lock);
	h->store->ops->release(h->store, id);
	pthread_mutex_lock(&h->lock);
	heca__store_call_end_locked(h);
	pthread_mutex_unlock(&h->lock);
}

static int do_register(struct heca *h, void *addr, size_t len, bool owned)
{
	uintptr_t a = (uintptr_t)addr;
	struct seg *s;
	struct adopt ad;
	int rc;

	last_error[0] = '\0';
	if (!h || !addr || !len || (a & (PAGE_SZ - 1)) || (len & (PAGE_SZ - 1))) {
		heca__set_error("register: address and length must be non-zero and page-aligned");
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base = a;
	s->npages = len / PAGE_SZ;
	s->owned = owned;
	s->ss = heca__states_new(s->npages);
	if (!s->ss) {
		rc = -ENOMEM;
		goto fail;
	}
	s->st = s->ss->b;
	/* A range the program unmapped behind heca's back may still be in the table: its event
	 * is read (the munmap has returned) but maybe not handled yet. Out with it first, so
	 * that new memory there can be sponsored. */
	pthread_mutex_lock(&h->lock);
	if (heca__overlaps_locked(h, a, len) && (h->features & HECA_FEAT_REMOVE)) {
		heca__msgs_wait_locked(h, __atomic_load_n(&h->msgs_read, __ATOMIC_ACQUIRE));
		pthread_mutex_unlock(&h->lock);
		heca__unmapped_run(h);
		pthread_mutex_lock(&h->lock);
	}
	if (heca__overlaps_locked(h, a, len)) {
		pthread_mutex_unlock(&h->lock);
		heca__set_error("register: range overlaps a registered segment");
		rc = -EBUSY;
		goto fail;
	}
	s->id = h->next_seg_id++;
	rc = admit_locked(h, s->npages);
	if (rc) {
		pthread_mutex_unlock(&h->lock);
		goto fail;
	}
	/* Not while a fork's sponsors copy the segments: the child would have a segment its
	 * sponsors do not know. */
	heca__store_call_begin_locked(h);
	pthread_mutex_unlock(&h->lock);
	rc = h->store->ops->alloc(h->store, s->id, s->npages);
	pthread_mutex_lock(&h->lock);
	heca__store_call_end_locked(h);
	pthread_mutex_unlock(&h->lock);
	if (rc) {
		heca__set_error("register: sponsors refused segment %u: %s", s->id,
				heca_strerror(rc));
		goto fail;
	}
	madvise(addr, len, MADV_NOHUGEPAGE);
	/* A child made by fork() would see the pages here but not the ones at sponsors: leave
	 * the range out of children, so touching it there faults loudly instead of reading
	 * zeros (heca's fork support copies segments on purpose, see fork.c). */
	madvise(addr, len, MADV_DONTFORK);
	/* Into the table claimed, so that no other thread ends it before it is complete; and
	 * only if no other thread registered an overlapping range meanwhile. */
	pthread_mutex_lock(&h->lock);
	if (heca__overlaps_locked(h, a, len)) {
		pthread_mutex_unlock(&h->lock);
		heca__set_error("register: range overlaps a registered segment");
		rc = -EBUSY;
		goto fail_release;
	}
	s->busy = true;
	rc = heca__seg_insert_locked(h, s);
	pthread_mutex_unlock(&h->lock);
	if (rc)
		goto fail_release;
	rc = heca__uffd_register(h, a, len);
	if (rc) {
		heca__set_error("register: UFFDIO_REGISTER: %s (private anonymous memory only)",
				strerror(-rc));
		pthread_mutex_lock(&h->lock);
		heca__seg_remove_locked(h, s);
		pthread_mutex_unlock(&h->lock);
		goto fail_release;
	}
	/* Pages already there hold the caller's data: adopt them as written. A mapping that
	 * heca_map() has just made has none. */
	ad = (struct adopt){h, s};
	if (!owned)
		heca__pages_present(a, s->npages, adopt_run, &ad);
	pthread_mutex_lock(&h->lock);
	rc = (int)s->id;
	heca__seg_unclaim_locked(h, s); /* from here on another thread may end it */
	pthread_mutex_unlock(&h->lock);
	return rc;
fail_release:
	store_release(h, s->id);
fail:
	heca__seg_free(s);
	return rc;
}

int heca_register(struct heca *h, void *addr, size_t len)
{
	return do_register(h, addr, len, false);
}

int heca_map(struct heca *h, size_t len, void **addr)
{
	void *p;
	int rc;

	last_error[0] = '\0';
	if (!h || !addr || !len || len > SIZE_MAX - PAGE_SZ) {
		heca__set_error("map: a handle, an address pointer and a length that fits are "
				"required");
		return -EINVAL;
	}
	len = (len + PAGE_SZ - 1) & ~(PAGE_SZ - 1);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		 -1, 0);
	if (p == MAP_FAILED) {
		rc = -errno;
		heca__set_error("map: mmap of %zu bytes (MAP_NORESERVE): %s", len, strerror(-rc));
		return rc;
	}
	rc = do_register(h, p, len, true);
	if (rc < 0) {
		munmap(p, len);
		return rc;
	}
	*addr = p;
	return 0;
}

/* Wait until the evictor holds no victim (it keeps their addresses outside the lock); it
 * starts no new batch meanwhile, so a busy evictor cannot starve the caller. Caller holds
 * h->lock, and has it again on return with no batch under way. */
void heca__evict_quiesce_locked(struct heca *h)
{
	h->evict_hold++;
	while (h->evicting)
		pthread_cond_wait(&h->evict_cond, &h->lock);
	if (--h->evict_hold == 0)
		pthread_cond_broadcast(&h->evict_cond); /* the evictor may go on at once */
}

void heca__seg_claim_locked(struct heca *h, struct seg *s)
{
	s->busy = true;
	h->seg_gen++; /* a reshape waiting with the lock dropped looks again, and waits */
}

/* The claimer is done with s without ending it: it is everyone's again. */
void heca__seg_unclaim_locked(struct heca *h, struct seg *s)
{
	s->busy = false;
	s->leaving = false;
	h->seg_gen++;
	pthread_cond_broadcast(&h->evict_cond);
}

/* Wait a little for a busy segment to be done with (it is taken out of the table, or let go,
 * with a broadcast of evict_cond). Caller holds h->lock, which is dropped meanwhile. */
void heca__seg_wait_locked(struct heca *h)
{
	heca__cond_wait_ms(&h->evict_cond, &h->lock, 10);
}

/* Take s out of the table once the evictor holds no victim of it. */
static void detach_locked(struct heca *h, struct seg *s)
{
	s->leaving = true;
	heca__evict_quiesce_locked(h);
	heca__stash_forget_range_locked(h, s, s->first, seg_end(s));
	heca__seg_remove_locked(h, s);
	h->resident -= s->resident;
	h->pinned -= s->pinned_pages;
	for (uint64_t p = s->first; p < seg_end(s) && h->fetching; p++)
		if (pstate(s->st[p]) == PS_FETCHING)
			h->fetching--;
	pthread_cond_broadcast(&h->evict_cond); /* threads waiting for it to be gone */
}

/*
 * Unregister s, which the caller has claimed: nobody else changes its shape or ends it, so
 * its range and pages can be used with the lock dropped. Frees s, except on -EIO (a page could
 * not be brought back): then s stays registered and claimed, for the caller to let go of.
 */
int heca__seg_unregister(struct heca *h, struct seg *s, unsigned int flags)
{
	uint64_t len = s->npages * PAGE_SZ;
	uintptr_t start = seg_start(s);
	struct discarding d;
	bool shared;
	int rc;

	if (!(flags & HECA_UNREG_DISCARD)) {
		/* Bring every page back by touching it; the engine serves the faults and, with
		 * the segment pinned, neither defers them nor evicts the result. */
		pthread_mutex_lock(&h->lock);
		s->leaving = true;
		heca__evict_quiesce_locked(h);
		pthread_mutex_unlock(&h->lock);
		for (uint64_t p = s->first; p < seg_end(s); p++) {
			int st;
			pthread_mutex_lock(&h->lock);
			st = pstate(s->st[p]);
			pthread_mutex_unlock(&h->lock);
			if (st == PS_REMOTE || st == PS_FETCHING)
				(void)*(volatile char *)(s->base + p * PAGE_SZ);
			if (st == PS_LOST) {
				pthread_mutex_lock(&h->lock);
				s->leaving = false;
				pthread_mutex_unlock(&h->lock);
				heca__set_error("unregister: segment %u page %llu is lost", s->id,
						(unsigned long long)p);
				return -EIO;
			}
		}
	}
	pthread_mutex_lock(&h->lock);
	heca__store_call_begin_locked(h);
	detach_locked(h, s);
	/* Out of the registration in the same hold of the lock as out of the table: a thread
	 * that finds the range in no segment (a split, a shrink) then unmaps it with no event,
	 * whereas an event sent for it now could be handled after new memory is sponsored there
	 * and end that. With HECA_UNREG_GONE the kernel has unmapped the range already and
	 * whatever is there now is someone else's: nothing to unregister, zap or unmap. */
	rc = flags & HECA_UNREG_GONE ? 0 : heca__uffd_unregister(h, start, len);
	shared = heca__seg_id_shared_locked(h, s);
	/* Another piece of a split segment keeps the rest of the store segment: until the
	 * sponsors have forgotten this part, none of it is written back (a piece may grow over
	 * it). */
	if (shared)
		heca__discard_begin_locked(h, &d, s->id, s->first, seg_end(s));
	pthread_mutex_unlock(&h->lock);
	if (!(flags & HECA_UNREG_GONE))
		madvise((void *)start, len, MADV_DOFORK); /* ordinary memory again */
	if ((flags & HECA_UNREG_DISCARD) && !(flags & HECA_UNREG_GONE))
		madvise((void *)start, len, MADV_DONTNEED);
	if (shared)
		h->store->ops->discard(h->store, s->id, s->first, s->npages);
	else
		h->store->ops->release(h->store, s->id);
	pthread_mutex_lock(&h->lock);
	if (shared)
		heca__discard_end_locked(h, &d);
	heca__store_call_end_locked(h);
	pthread_mutex_unlock(&h->lock);
	if (s->owned && (flags & HECA_UNREG_DISCARD) && !(flags & HECA_UNREG_GONE))
		munmap((void *)start, len);
	heca__seg_free(s);
	return rc;
}

/* Claim the segment that starts at addr (with unmap: one made by heca_map()), or NULL if there
 * is none, or another thread is registering or unregistering it. */
static struct seg *claim_base_locked(struct heca *h, void *addr, bool unmap)
{
	struct seg *s = heca__seg_by_addr_locked(h, (uintptr_t)addr);

	if (!s || seg_start(s) != (uintptr_t)addr || s->busy || (unmap && !s->owned)) {
		heca__set_error("%s: no %s starts at %p, or another thread is ending it",
				unmap ? "unmap" : "unregister",
				unmap ? "region made by heca_map()" : "segment", addr);
		return NULL;
	}
	heca__seg_claim_locked(h, s);
	return s;
}

int heca_unregister(struct heca *h, void *addr, unsigned int flags)
{
	struct seg *s;
	int rc;

	if (!h)
		return -EINVAL;
	last_error[0] = '\0';
	pthread_mutex_lock(&h->lock);
	s = claim_base_locked(h, addr, false);
	if (s && (flags & HECA_UNREG_DISCARD))
		s->owned = false; /* the caller keeps the (now zero) mapping */
	pthread_mutex_unlock(&h->lock);
	if (!s)
		return -EINVAL;
	rc = heca__seg_unregister(h, s, flags);
	if (rc == -EIO) {
		pthread_mutex_lock(&h->lock);
		heca__seg_unclaim_locked(h, s);
		pthread_mutex_unlock(&h->lock);
	}
	return rc;
}

int heca_unmap(struct heca *h, void *addr)
{
	struct seg *s;

	if (!h)
		return -EINVAL;
	last_error[0] = '\0';
	pthread_mutex_lock(&h->lock);
	s = claim_base_locked(h, addr, true);
	pthread_mutex_unlock(&h->lock);
	if (!s)
		return -EINVAL;
	return heca__seg_unregister(h, s, HECA_UNREG_DISCARD);
}

void heca_close(struct heca *h)
{
	if (!h)
		return;
	/* Release segments while the engine still runs: bringing pages back needs it. One that
	 * another thread is registering or unregistering is waited for. */
	for (;;) {
		struct seg *s = NULL;
		unsigned int n;
		pthread_mutex_lock(&h->lock);
		for (unsigned int i = 0; i < h->nsegs && !s; i++)
			if (!h->segs[i]->busy)
				s = h->segs[i];
		n = h->nsegs;
		if (s)
			heca__seg_claim_locked(h, s);
		else if (n)
			heca__seg_wait_locked(h);
		pthread_mutex_unlock(&h->lock);
		if (!n)
			break;
		if (s && heca__seg_unregister(h, s, s->owned ? HECA_UNREG_DISCARD : 0) == -EIO)
			heca__seg_unregister(h, s, HECA_UNREG_DISCARD);
	}
	pthread_mutex_lock(&h->lock);
	__atomic_store_n(&h->stop, true, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&h->evict_cond);
	pthread_mutex_unlock(&h->lock);
	if (h->evfd >= 0)
		heca__engine_wake(h);
	heca__control_stop(h);
	if (h->engine_started)
		pthread_join(h->engine_thread, NULL);
	if (h->evict_started)
		pthread_join(h->evict_thread, NULL);
	for (unsigned int i = 0; i < WB_HASH; i++) {
		while (h->wb_hash[i]) {
			struct wb_entry *e = h->wb_hash[i];
			struct wb_batch *b = e->batch;
			h->wb_hash[i] = e->next;
			if (--b->refs == 0) {
				heca__wb_buf_put_locked(h, b->buf);
				free(b);
			}
		}
	}
	if (h->store)
		h->store->ops->close(h->store);
	if (h->uffd >= 0)
		close(h->uffd);
	if (h->evfd >= 0)
		close(h->evfd);
	if (h->epfd >= 0)
		close(h->epfd);
	pthread_mutex_destroy(&h->lock);
	pthread_cond_destroy(&h->evict_cond);
	while (h->nwb_pool)
		munmap(h->wb_pool[--h->nwb_pool], EVICT_BATCH * PAGE_SZ);
	while (h->gone) {
		struct gone *g = h->gone;
		h->gone = g->next;
		free(g);
	}
	while (h->unmapped) {
		struct unmapped *u = h->unmapped;
		h->unmapped = u->next;
		free(u);
	}
	heca__stash_exit(h);
	free(h->segs);
	free(h->fifo);
	free(h->deferred);
	free(h->zero_page);
	free(h->sponsor_list);
	if (h->zero_run)
		munmap(h->zero_run, 256 * PAGE_SZ);
	free(h);
}

int heca_get_stats(struct heca *h, struct heca_stats *o)
{
#define LD(x) atomic_load_explicit(&h->c.x, memory_order_relaxed)
	if (!h || !o)
		return -EINVAL;
	memset(o, 0, sizeof(*o));
	o->faults_read = LD(faults_read);
	o->faults_write = LD(faults_write);
	o->faults_wp = LD(faults_wp);
	o->faults_zero = LD(faults_zero);
	o->faults_wb_hit = LD(faults_wb_hit);
	o->faults_deferred = LD(faults_deferred);
	o->pages_fetched = LD(pages_fetched);
	o->pages_prefetched = LD(pages_prefetched);
	o->pages_written_back = LD(pages_written_back);
	o->pages_dropped_clean = LD(pages_dropped_clean);
	o->pages_dropped_zero = LD(pages_dropped_zero);
	o->pages_evicted = LD(pages_evicted);
	o->pages_lost = LD(pages_lost);
	o->writeback_errors = LD(writeback_errors);
	o->bytes_sent = LD(bytes_sent);
	o->bytes_received = LD(bytes_received);
	o->pages_repaired = LD(pages_repaired);
	o->pages_unzappable = LD(pages_unzappable);
	o->pages_zapped_outside = LD(pages_zapped_outside);
	o->reads_queued = LD(reads_queued);
	o->faults_stash_hit = LD(faults_stash_hit);
	o->pages_aged = LD(pages_aged);
#undef LD
	pthread_mutex_lock(&h->lock);
	o->resident_pages = h->resident;
	o->pinned_pages = h->pinned;
	o->stash_pages = h->stash_n;
	o->segments = h->nsegs;
	pthread_mutex_unlock(&h->lock);
	o->budget_pages = h->budget + h->stash_cap;
	o->lat_count = atomic_load_explicit(&h->lat.count, memory_order_relaxed);
	o->lat_max_ns = atomic_load_explicit(&h->lat.max, memory_order_relaxed);
	o->lat_mean_ns = o->lat_count
				 ? atomic_load_explicit(&h->lat.sum, memory_order_relaxed) / o->lat_count
				 : 0;
	o->lat_p50_ns = heca__hist_quantile(&h->lat, 0.50);
	o->lat_p90_ns = heca__hist_quantile(&h->lat, 0.90);
	o->lat_p99_ns = heca__hist_quantile(&h->lat, 0.99);
	o->lat_fetch_count = atomic_load_explicit(&h->lat_fetch.count, memory_order_relaxed);
	o->lat_fetch_mean_ns =
		o->lat_fetch_count
			? atomic_load_explicit(&h->lat_fetch.sum, memory_order_relaxed) / o->lat_fetch_count
			: 0;
	o->lat_fetch_p50_ns = heca__hist_quantile(&h->lat_fetch, 0.50);
	o->lat_fetch_p99_ns = heca__hist_quantile(&h->lat_fetch, 0.99);
	{
		uint64_t n = atomic_load_explicit(&h->c.fetch_net_count, memory_order_relaxed);
		uint64_t k = atomic_load_explicit(&h->c.fetch_install_count, memory_order_relaxed);
		o->fetch_net_mean_ns =
			n ? atomic_load_explicit(&h->c.fetch_net_ns, memory_order_relaxed) / n : 0;
		o->fetch_install_mean_ns =
			k ? atomic_load_explicit(&h->c.fetch_install_ns, memory_order_relaxed) / k : 0;
	}
	o->features = h->features;
	return 0;
}

int heca_first_lost(struct heca *h, uint32_t *segment, uint64_t *page)
{
	int any;
	if (!h)
		return 0;
	pthread_mutex_lock(&h->lock);
	any = h->lost_any;
	if (any) {
		if (segment)
			*segment = h->lost_seg;
		if (page)
			*page = h->lost_page;
	}
	pthread_mutex_unlock(&h->lock);
	return any;
}

int heca_get_sponsors(struct heca *h, struct heca_sponsor_info *out, unsigned int max)
{
	if (!h || (!out && max))
		return -EINVAL;
	if (!h->store->ops->members)
		return 0;
	return h->store->ops->members(h->store, out, max);
}

int heca_get_cluster_stats(struct heca *h, struct heca_cluster_stats *out)
{
	if (!h || !out)
		return -EINVAL;
	if (!h->store->ops->cluster_stats)
		return -EOPNOTSUPP;
	h->store->ops->cluster_stats(h->store, out);
	return 0;
}

int heca_add_sponsor(struct heca *h, const char *addr)
{
	if (!h || !addr)
		return -EINVAL;
	if (!h->store->ops->add_member)
		return -EOPNOTSUPP;
	return h->store->ops->add_member(h->store, addr);
}

int heca_drain_sponsor(struct heca *h, const char *addr_or_id)
{
	if (!h || !addr_or_id)
		return -EINVAL;
	if (!h->store->ops->drain_member)
		return -EOPNOTSUPP;
	return h->store->ops->drain_member(h->store, addr_or_id);
}

int heca_reload(struct heca *h)
{
	char *list = NULL, *save = NULL, why[512];
	int rc, added = 0;

	if (!h || !h->opt.cluster_file)
		return -EINVAL;
	rc = heca__cluster_file_read(h->opt.cluster_file, &list, why, sizeof(why));
	if (rc) {
		heca__log(h, HECA_LOG_ERROR, "reload: %s", why);
		return rc;
	}
	for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		if (heca_add_sponsor(h, tok) == 0)
			added++;
	free(list);
	return added;
}
