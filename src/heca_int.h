/* SPDX-License-Identifier: MIT */
/*
 * heca_int.h - libheca's internal structures: the page table the fault engine owns, segments,
 * the write-back buffers, and the store interface the engine fetches from and writes to.
 */
#ifndef HECA_INT_H
#define HECA_INT_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "heca.h"
#include "policy.h"
#include "prefetch.h"
#include "stats.h"

#define PAGE_SZ 4096ul

/*
 * Local page states (DESIGN.md "The page"). One byte per page: the low three bits are the
 * state, the high bits flags. Owned by the engine; the evictor changes them only under h->lock
 * and only for pages it marked EVICTING itself.
 */
enum pstate {
	PS_EMPTY = 0,	 /* never written: no remote copy, unmapped */
	PS_REMOTE = 1,	 /* unmapped, a sponsor holds the current copy (or the WB buffer does) */
	PS_CLEAN = 2,	 /* mapped write-protected, remote copy current */
	PS_ZERO = 3,	 /* mapped write-protected, all zero, no remote copy */
	PS_DIRTY = 4,	 /* mapped writable (or content newer than any remote copy) */
	PS_FETCHING = 5, /* unmapped, a read is in flight */
	PS_EVICTING = 6, /* mapped, the evictor is taking it out */
	PS_LOST = 7,	 /* no sponsor could serve it: accesses get SIGBUS */
};
#define PF_STATE 0x07
#define PF_WB 0x08     /* a write-back of this page is in flight: its buffer holds the content */
#define PF_WAITER 0x10 /* a thread faulted on it while FETCHING/EVICTING: wake it when done */
#define PF_WANTW 0x20  /* a write fault waits on the fetch: install writable */
#define PF_PINNED 0x40 /* never evict: the content could not be stored remotely */
#define PF_DEMAND 0x80 /* the fetch in flight serves a fault (not only prefetch) */

static inline int pstate(uint8_t b)
{
	return b & PF_STATE;
}
static inline void pset(uint8_t *b, int st)
{
	*b = (uint8_t)((*b & ~PF_STATE) | st);
}
static inline bool president(int st)
{
	return st == PS_CLEAN || st == PS_ZERO || st == PS_DIRTY || st == PS_EVICTING;
}

/* Page states of a store segment, by store page; shared by the pieces a partial unmap
 * leaves of one segment. */
struct seg_states {
	unsigned int refs;
	uint64_t cap; /* pages */
	uint8_t b[];
};

/*
 * A registered range. It holds store pages [first, first + npages) of store segment `id`, page p
 * at address base + p * PAGE_SZ: `base` is where store page 0 would be, so trimming the head of
 * a segment or splitting it (munmap of a part) changes neither page numbers nor addresses, and
 * moving it (mremap) changes only `base`.
 */
struct seg {
	uint32_t id;
	uintptr_t base;
	uint64_t first;
	uint64_t npages;
	uint8_t *st;	  /* page states by store page: ss->b */
	struct seg_states *ss;
	struct seg *idnext; /* h->idhash chain */
	bool owned;	  /* made by heca_map(): unmapped on release */
	bool busy;	  /* claimed by the thread registering or unregistering it: see below */
	bool leaving;	  /* being unregistered: the evictor leaves it alone */
	uint64_t resident; /* pages of this segment counted in h->resident */
	uint64_t pinned_pages; /* of them kept locally for good, outside the budget */
};

static inline uint64_t seg_end(const struct seg *s)
{
	return s->first + s->npages;
}
static inline bool seg_has(const struct seg *s, uint64_t p)
{
	return p >= s->first && p < seg_end(s);
}
static inline uintptr_t seg_start(const struct seg *s)
{
	return s->base + s->first * PAGE_SZ;
}
static inline uintptr_t seg_limit(const struct seg *s)
{
	return s->base + seg_end(s) * PAGE_SZ;
}

#define SEG_HASH 1024

/* A write-back in flight: one page's content until the sponsor acknowledges it. */
struct wb_entry {
	struct wb_entry *next; /* hash chain */
	uint32_t seg;
	uint64_t page;
	uint8_t *data;
	struct wb_batch *batch;
};

struct wb_batch {
	uint8_t *buf;	   /* EVICT_BATCH pages (heca__wb_buf_get), n of them used */
	unsigned int refs; /* pages not yet acknowledged */
	unsigned int n;
	struct wb_entry ent[];
};

#define WB_HASH 4096
#define EVICT_BATCH 256 /* victims per batch: page-table calls cost an IPI each, not per page */
#define WB_POOL 16	/* idle write-back copies kept for reuse (EVICT_BATCH pages each) */

/* ---- the store interface: where pages go when they leave local memory ---- */

struct heca_store;

/* Called by a store on the engine thread when a request finishes. data holds count pages for
 * a successful read, NULL otherwise. */
typedef void (*heca_read_done_fn)(void *arg, uint64_t cookie, int status, uint32_t seg,
				  uint64_t page, uint32_t count, const uint8_t *data);
typedef void (*heca_write_done_fn)(void *arg, uint64_t cookie, int status, uint32_t seg,
				   uint64_t page, uint32_t count);

enum heca_prio { HECA_PRIO_FAULT = 0, HECA_PRIO_PREFETCH = 1 };

struct heca_store_ops {
	const char *name;
	/* Start reading count pages of one stripe; completion through read_done. Engine thread
	 * only. Returns 0 or -errno (then no completion comes). */
	int (*read)(struct heca_store *s, enum heca_prio prio, uint32_t seg, uint64_t page,
		    uint32_t count, uint64_t cookie);
	/* Start writing count pages of one stripe from data (kept valid until completion).
	 * Evictor thread only. Returns 0 or -errno (then no completion comes). */
	int (*write)(struct heca_store *s, uint32_t seg, uint64_t page, uint32_t count,
		     const uint8_t *data, uint64_t cookie);
	/* Synchronous, from any thread. */
	int (*alloc)(struct heca_store *s, uint32_t seg, uint64_t npages);
	int (*release)(struct heca_store *s, uint32_t seg);
	/* Synchronous, any thread: forget pages [page, page + count) of a segment (they read
	 * as never written), and make a segment hold npages pages. */
	int (*discard)(struct heca_store *s, uint32_t seg, uint64_t page, uint64_t count);
	int (*resize)(struct heca_store *s, uint32_t seg, uint64_t npages);
	/* fork(): before it, with the engine frozen, copy every segment for the child demander
	 * child_id (sponsors clone them); in the child, start over on the inherited state with
	 * the handle's new demander id. Optional (NULL: fork is refused). */
	void (*fork_pause)(struct heca_store *s); /* first: background work stops */
	int (*fork_prepare)(struct heca_store *s, const uint8_t child_id[16]);
	int (*fork_child)(struct heca_store *s);
	void (*fork_resume)(struct heca_store *s); /* parent, after the fork or its failure */
	/* Free every segment at once (the process is about to end). Optional. */
	int (*drop_all)(struct heca_store *s);
	/* Engine thread: an fd the store registered in h->epfd with data.ptr == ctx is ready;
	 * decode and complete what arrived. */
	void (*dispatch)(struct heca_store *s, void *ctx);
	/* Engine thread: fail requests past their deadline. */
	void (*tick)(struct heca_store *s, uint64_t now_ns);
	void (*close)(struct heca_store *s);
	/* Optional: membership (remote store only). Any thread. */
	int (*add_member)(struct heca_store *s, const char *addr);
	int (*drain_member)(struct heca_store *s, const char *addr_or_id);
	int (*members)(struct heca_store *s, struct heca_sponsor_info *out, unsigned int max);
	void (*cluster_stats)(struct heca_store *s, struct heca_cluster_stats *out);
	/* Optional: pages the store can still take, as far as it knows (remote: the sponsors'
	 * free room at the last heartbeat over the copies kept). NULL: no limit. Any thread. */
	uint64_t (*free_pages)(struct heca_store *s);
};

struct heca_store {
	const struct heca_store_ops *ops;
	heca_read_done_fn read_done;
	heca_write_done_fn write_done;
	void *arg;
	struct heca *h; /* for logging and byte counters */
	/* Bumped (atomically) when a store may take pages it refused before: a sponsor has room
	 * again, came back, joined, or a stripe moved off a full one. */
	uint64_t room_gen;
	/* Bumped when pages given up as lost may be readable again: a sponsor that stopped
	 * answering is back with what it held. */
	uint64_t back_gen;
};

int heca__store_remote_open(struct heca *h, const char *sponsors, struct heca_store **out);
int heca__store_mem_open(struct heca *h, struct heca_store **out);

/* ---- placement ---- */

#define HECA_PLACE_MAX 64 /* sponsors one demander can use */

/* All n sponsors (n <= HECA_PLACE_MAX) ranked for a stripe, best first, by weighted rendezvous
 * hashing; a weight <= 0 ranks last. */
void heca__place_rank(const uint8_t cluster[16], uint32_t seg, uint64_t stripe,
		      const uint64_t *keys, const double *weights, unsigned int n,
		      unsigned int *order);

/* ---- the handle ---- */

/* A DISCARD on its way to the sponsors: store pages [lo, hi) of segment seg read as never
 * written here already, and no write-back of them may start until every sponsor has forgotten
 * them, or it could land first and be forgotten (segops.c). Lives on the discarding thread's
 * stack, linked in h->discarding while the lock is dropped for the round trip. */
struct discarding {
	struct discarding *next;
	uint32_t seg;
	uint64_t lo, hi;
};

struct victim; /* evict.c */

/* A range the program unmapped with a system call heca did not make (a userfaultfd UNMAP
 * event): its pages are gone; it leaves the segment table on a thread that may wait. */
struct unmapped {
	struct unmapped *next;
	uintptr_t a;
	uint64_t len;
};
#define HECA_UNREG_GONE (1u << 31) /* heca__seg_unregister: the kernel unmapped it already */

/* Store pages [lo, hi) of segment seg were zapped while `left` of them were being fetched:
 * each of those reads as zero when its read ends (engine.c). */
struct gone {
	struct gone *next;
	uint32_t seg;
	uint64_t lo, hi, left;
};

struct deferred {
	uintptr_t addr;
	uint64_t flags;
	uint32_t tid;
	uint64_t t0;
};

struct heca {
	struct heca_options opt;
	int uffd;
	int evfd; /* wakes the engine: stop, or room was made */
	int epfd; /* the engine's epoll set; stores add their sockets with data.ptr = context */
	unsigned int features; /* HECA_FEAT_* */
	bool thread_id;	       /* uffd messages carry the faulting thread id */
	bool user_mode_only;   /* kernel-mode faults (system calls) are not served: EFAULT */
	uint8_t demander_id[16];

	struct heca_store *store;

	pthread_mutex_t lock; /* page states, segments, FIFO, WB table, counters below */
	pthread_cond_t evict_cond; /* evictor waits for work or for WB acks */
	struct seg **segs;	   /* sorted by address */
	unsigned int nsegs, capsegs;
	struct seg *idhash[SEG_HASH]; /* segments by store id */
	bool frozen; /* fork: no new reads or evictions until the process is copied */
	/* fork: the sponsors copy our segments (CLONE) with the lock dropped. Meanwhile no
	 * write-back starts (the evictor drops clean pages only) and no call that changes what
	 * the sponsors hold (store_calls) begins. */
	bool cloning;
	unsigned int store_calls; /* alloc, release, discard, resize under way without the lock */
	struct discarding *discarding; /* DISCARDs under way */
	uint64_t seg_gen; /* bumped whenever a segment is added, removed or reshaped */
	unsigned int evict_hold; /* threads waiting for the evictor to let go: it starts no batch */
	uint32_t next_seg_id;

	uint64_t budget;   /* pages mapped at most: the local budget less the inactive list */
	uint64_t budget_all; /* the local budget: budget + stash_lim */
	/* The inactive list (stash.c): stash_cap slots of stash_mem, entry i owning slot i;
	 * index + 1 everywhere, 0 for none. */
	struct stash_ent *stash_ent;
	uint8_t *stash_mem;
	uint32_t *stash_hash;
	uint32_t stash_cap, stash_n, stash_hmask, stash_free, stash_oldest, stash_newest;
	/* Its size now (stash_lim of stash_cap) and the share of leaving pages it takes a copy
	 * of (one in 2^stash_shift), set by how often copies are used (stash.c, adapt). */
	uint32_t stash_lim, stash_shift, stash_seq;
	uint64_t stash_win_puts, stash_win_hits;
	uint64_t high, low; /* watermarks in pages */
	uint64_t resident; /* mapped pages of all segments */
	uint64_t fetching; /* pages being fetched */
	uint64_t wb_pages; /* write-back pages in flight */
	uint64_t pinned;   /* pages kept locally because no sponsor would store them */
	uint64_t limit;	   /* hard limit in pages on resident + pinned (local_limit) */
	uint64_t pinned_room_gen; /* store->room_gen when pages were last pinned */
	uint64_t pin_retry_ns;	  /* next time pinned pages are tried again regardless */
	uint64_t full_log_ns;	  /* last "waiting for room" warning */
	uint64_t pin_log_ns;	  /* last "kept in local memory" warning */
	uint64_t lost_back_gen;	  /* store->back_gen when lost pages were last revived */
	unsigned int evicting; /* batches the evictor is working on outside the lock */
	uint32_t evict_tid;    /* the evictor's thread id: its faults are on pages it evicts */
	/*
	 * Zaps heca did not make (userfaultfd REMOVE events, engine.c). The evictor publishes
	 * its batch (sorted by address) so that the engine can tell the evictor's own zaps from
	 * the program's; pages being fetched when a zap came are in gone, read as zero once
	 * their read ends. msgs_read counts batches of messages the engine took from the
	 * userfaultfd, msgs_done those it has handled: a thread whose zap the engine has read
	 * waits for msgs_done to catch up before it trusts the page states again.
	 */
	struct victim *ev_v;
	unsigned int ev_n;
	bool reviving; /* the evictor zaps poison markers of lost pages it revives */
	bool revive_more; /* more lost pages to revive than one pass takes */
	struct gone *gone;
	uint64_t msgs_read, msgs_done;
	unsigned int msgs_waiters; /* threads in heca__msgs_wait_locked() */
	bool no_vm_readv; /* process_vm_readv refused here: the evictor copies with memcpy */
	bool drained; /* faults were taken while draining: retry them after the batch */
	struct unmapped *unmapped; /* ranges the kernel unmapped behind heca's back (segops.c) */
	bool evict_active;     /* between crossing the high and reaching the low watermark */

	/* Resident pages in eviction order (policy.c). Page numbers are store pages: a segment
	 * may hold more than 2^32 pages (16 TiB), and a trimmed or moved one numbers its pages
	 * from `first`. */
	struct policy_ring probation, protected;

	struct wb_entry *wb_hash[WB_HASH];
	uint8_t *wb_pool[WB_POOL]; /* idle write-back copies */
	unsigned int nwb_pool;

	struct trend_table trends; /* per-thread fault trends for prefetch */

	struct deferred *deferred;
	unsigned int ndeferred, capdeferred;

	bool stop;
	pthread_t engine_thread, evict_thread;
	int ctl_fd; /* control socket, -1 if none */
	char ctl_path[108];
	pthread_t ctl_thread;
	bool ctl_started;
	bool engine_started, evict_started;

	uint8_t *zero_page;
	char *sponsor_list; /* from the cluster file */
	uint8_t *zero_run; /* HECA_WIRE_MAX_PAGES zero pages, the source of zero-ahead */

	bool lost_any;
	bool repair_logged, unzappable_logged;
	uint32_t lost_seg;
	uint64_t lost_page;

	struct heca_counters c; /* atomics: read by heca_get_stats() without the lock */
	struct heca_hist lat;
	struct heca_hist lat_fetch; /* demand fetches only: fault message to page mapped */
};

/* heca.c: high and low watermarks from h->budget (it changes with the inactive list) */
void heca__set_watermarks_locked(struct heca *h);

/* engine.c */
void *heca__engine_main(void *arg);
void heca__engine_wake(struct heca *h);
struct seg *heca__seg_by_page_locked(struct heca *h, uint32_t id, uint64_t page);

/* The inactive list (stash.c); caller holds h->lock. */
int heca__stash_init(struct heca *h, uint64_t cap);
void heca__stash_exit(struct heca *h);
/* Keep a copy of REMOTE page `page` of s as it leaves (sets PF_WB): clean, or the one its
 * write-back in flight sends. False if there is no list. */
bool heca__stash_put_locked(struct heca *h, struct seg *s, uint64_t page, const uint8_t *data);
const uint8_t *heca__stash_find_locked(const struct heca *h, uint32_t seg, uint64_t page);
/* Whether the page leaving now gets a copy on the list (a share of them, the list's own
 * sampling); any thread, no lock needed. */
bool heca__stash_sample(struct heca *h);
/* Let the n oldest copies go (room under the local limit). */
void heca__stash_shrink_locked(struct heca *h, uint64_t n);
/* The page was brought back from its copy: drop it, clear PF_WB in *b, count the hit. */
void heca__stash_take_locked(struct heca *h, uint32_t seg, uint64_t page, uint8_t *b);
/* The page changes by other means: drop its copy, if any (PF_WB of a write-back stays). */
void heca__stash_forget_locked(struct heca *h, uint32_t seg, uint64_t page, uint8_t *b);
void heca__stash_forget_range_locked(struct heca *h, struct seg *s, uint64_t lo, uint64_t hi);
/* The page is back from its write-back's copy: its copy here goes too (PF_WB stays). */
void heca__stash_drop_locked(struct heca *h, uint32_t seg, uint64_t page);
/* The write-back of the page ended (its entry already gone): keep the copy if it is still out
 * and stored, else drop it. */
void heca__stash_wb_done_locked(struct heca *h, struct seg *s, uint64_t page, bool ok);
bool heca__seg_id_shared_locked(struct heca *h, const struct seg *s);
struct seg *heca__seg_by_addr_locked(struct heca *h, uintptr_t addr);
struct wb_entry *heca__wb_find_locked(struct heca *h, uint32_t seg, uint64_t page);
void heca__wb_insert_locked(struct heca *h, struct wb_entry *e);
void heca__wb_remove_locked(struct heca *h, struct wb_entry *e);
void heca__on_read_done(void *arg, uint64_t cookie, int status, uint32_t seg, uint64_t page,
			uint32_t count, const uint8_t *data);
void heca__on_write_done(void *arg, uint64_t cookie, int status, uint32_t seg, uint64_t page,
			 uint32_t count);

/* heca.c: set-up shared by heca_open() and a forked child */
int heca__engine_fds(struct heca *h);
int heca__start_threads(struct heca *h);

/*
 * heca.c: a segment's lifetime. The thread that registers a segment, or unregisters it, claims
 * it under h->lock first (busy); until it is done the segment is that thread's alone: no other
 * call finds it by address to unregister, unmap, trim, split or move it (they return -EINVAL,
 * or wait for it to be gone), so that it can use the segment with the lock dropped and free it
 * once. The engine and the evictor still see a busy segment: it faults and evicts as before.
 */
void heca__seg_claim_locked(struct heca *h, struct seg *s);
void heca__seg_unclaim_locked(struct heca *h, struct seg *s);
void heca__seg_wait_locked(struct heca *h);
int heca__seg_unregister(struct heca *h, struct seg *s, unsigned int flags);

/* heca.c: the segment table (caller holds h->lock) */
int heca__segs_reserve_locked(struct heca *h);
int heca__seg_insert_locked(struct heca *h, struct seg *s);
void heca__seg_remove_locked(struct heca *h, struct seg *s);
void heca__seg_resort_locked(struct heca *h);
bool heca__overlaps_locked(struct heca *h, uintptr_t a, uint64_t len);
struct seg_states *heca__states_new(uint64_t cap);
void heca__seg_free(struct seg *s);
void heca__evict_quiesce_locked(struct heca *h);

/* segops.c: calls that change what the sponsors hold of our segments (alloc, release,
 * discard, resize) are made without h->lock, between these two: begin waits while a fork's
 * CLONE is under way (h->lock dropped meanwhile), and a fork waits until none is under way.
 * Never nested. Caller holds h->lock. */
void heca__store_call_begin_locked(struct heca *h);
void heca__store_call_end_locked(struct heca *h);
/* Whether a DISCARD of store page `page` of segment seg is under way. Caller holds h->lock. */
bool heca__discarding_locked(const struct heca *h, uint32_t seg, uint64_t page);
void heca__discard_begin_locked(struct heca *h, struct discarding *d, uint32_t seg,
				uint64_t lo, uint64_t hi);
void heca__discard_end_locked(struct heca *h, struct discarding *d);

/* evict.c */
void *heca__evict_main(void *arg);
void heca__evict_kick_locked(struct heca *h);
uint8_t *heca__wb_buf_get(struct heca *h);
void heca__wb_buf_put_locked(struct heca *h, uint8_t *buf);

/* uffd.c: thin wrappers that return -errno and retry EAGAIN/EINTR. */
int heca__uffd_open(struct heca *h);
int heca__uffd_register(struct heca *h, uintptr_t addr, uint64_t len);
int heca__uffd_unregister(struct heca *h, uintptr_t addr, uint64_t len);
int heca__uffd_copy(struct heca *h, uintptr_t dst, const void *src, uint64_t len, bool wp,
		    bool wake);
/* Set on the engine thread: it alone reads the userfaultfd, so it never waits on it. */
extern __thread bool heca__engine_thread;
/* The engine, on a userfaultfd ioctl that got EAGAIN (an event is unread): take the pending
 * messages now. Caller holds h->lock and is the engine thread. */
bool heca__engine_drain_locked(struct heca *h);
/* A zap of addr that the engine read: the evictor's own (true) or not. Caller holds h->lock. */
bool heca__evict_zap_is_own_locked(struct heca *h, uintptr_t addr);
/* The evictor waits until the engine has handled every message it has read. */
void heca__msgs_wait_locked(struct heca *h, uint64_t seq);
int heca__uffd_fill(struct heca *h, uintptr_t dst, const void *src, bool wp);
int heca__uffd_copy_data(struct heca *h, uintptr_t dst, const void *src, uint64_t len, bool wp,
			 bool wake);
int heca__uffd_wp(struct heca *h, uintptr_t addr, uint64_t len, bool protect, bool wake);
int heca__uffd_wake(struct heca *h, uintptr_t addr, uint64_t len);
int heca__uffd_poison(struct heca *h, uintptr_t addr, uint64_t len);
/* Call fn(arg, first, n) for each run of present pages [first, first + n) of the npages pages
 * at addr, with no array of their own: a range may be huge and nearly empty. Returns 0 or
 * -errno. */
typedef void (*heca_present_fn)(void *arg, uint64_t first, uint64_t n);
int heca__pages_present(uintptr_t addr, uint64_t npages, heca_present_fn fn, void *arg);

/* cgroup.c: the memory limit of this process's cgroup in bytes; -ENOENT if unlimited. */
int heca__cgroup_limit(uint64_t *bytes, char *why, size_t whylen);

/* control.c: the control socket (`heca status`, `add`, `drain`, `reload`). */
int heca__control_start(struct heca *h, const char *path);
void heca__control_stop(struct heca *h);

/* cluster.c: a cluster file's sponsors as "a,b,c" (malloc'd). */
int heca__cluster_file_read(const char *path, char **list, char *err, size_t errlen);

/* heca.c */
void heca__log(struct heca *h, enum heca_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void heca__set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
