// SPDX-License-Identifier: MIT
/*
 * sponsor.c - the sponsor's page store (slabs of 4 KiB slots, per-segment radix index), the
 * protocol state machine that serves every request opcode, and the leases of demanders that
 * have no connection left.
 */
#include "sponsor.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "auth.h"
#include "util.h"
#include "wire.h"

#define PAGE HECA_WIRE_PAGE
#define NO_SLOT UINT32_MAX
#define RT_BITS 9
#define RT_FAN (1u << RT_BITS)
#define RT_MASK (RT_FAN - 1)
#define RT_MAX_LEVELS 8 /* 8 x 9 bits cover any 64-bit page number */
#define DEM_BUCKETS 256
/* Bytes charged per allocation of index or record memory: what malloc keeps beside it. */
#define META_OVERHEAD 16
/* A long operation (CLONE, FREE, DISCARD, RESIZE, DROPALL, a lease expiring) lets threads
 * waiting for the lock have it once it has held it this long: the most one demander's big
 * request delays another's, beside one leaf's work (512 pages). */
#define YIELD_HOLD_NS 5000000ull
/* Longest it then waits for them to get through before it takes the lock again: long enough
 * for a woken thread to be scheduled on a busy machine. */
#define YIELD_WAIT_NS 20000000ull

/*
 * A slab is one anonymous mapping of up to SPONSOR_SLAB_PAGES slots. Slots never handed out
 * are above `bump`; freed ones are chained through their own first four bytes, so the free
 * list costs no memory of its own. A slab whose last slot is freed is given back to the
 * kernel (MADV_DONTNEED) and starts over as fresh.
 */
struct slab {
	uint8_t *mem;
	uint32_t free_head; /* global slot number, or NO_SLOT */
	uint16_t nslots;
	uint16_t bump;
	uint16_t used;
	uint8_t in_avail;
};

/*
 * A segment's page index is a radix tree of `levels` levels, 512 entries each, allocated as
 * pages are written: a huge declared size costs nothing up front. Leaves hold slot + 1 (0 =
 * never written) so calloc gives empty leaves.
 */
struct seg {
	uint32_t id;
	unsigned levels;
	uint64_t size; /* pages */
	uint64_t pages; /* pages stored */
	void *root;
	struct seg *next;
};

struct sponsor_demander {
	uint8_t id[16];
	uint32_t session;     /* newest session named in a HELLO; older connections are stale */
	unsigned conns;	      /* READY connections; 0: orphaned, sponsor_expire() may free it */
	uint64_t orphaned_at; /* clock_ns() when conns last became 0, or CLONE made it */
	uint64_t pages;
	uint64_t nsegs;
	/* A CLONE is copying from or into this demander with the lock released between leaves:
	 * its requests wait on sponsor.idle, and nothing may free it meanwhile. */
	bool busy;
	struct seg **buckets; /* power-of-two table, chained */
	size_t nbuckets;
	struct sponsor_demander *next;
};

struct sponsor {
	pthread_mutex_t lock; /* guards everything below except the constants */
	pthread_cond_t idle;  /* broadcast when a demander stops being busy */
	atomic_uint waiters;  /* threads blocked in sp_lock() */
	atomic_uint handoffs; /* times a thread that had waited got the lock */
	uint64_t locked_at;   /* when sp_lock() last took the lock */
	uint64_t capacity_pages;
	uint8_t cluster_id[16];
	uint8_t id[16];
	uint8_t key[HECA_AUTH_KEY_MAX]; /* cluster key, keylen bytes; keylen 0: no AUTH */
	size_t keylen;
	uint64_t (*clock_ns)(void);
	void (*expired)(void *arg, const uint8_t demander[16], uint64_t pages);
	void *expired_arg;

	uint64_t used_pages;
	uint64_t reserved_pages; /* promised to CLONEs under way, not yet copied */
	uint64_t meta_bytes;     /* index nodes, segment and demander records, segment tables */
	uint64_t meta_max;
	uint64_t nsegs;
	uint64_t ndemanders;
	struct slab *slabs;
	uint32_t *avail; /* stack of slabs that may have a free slot */
	uint32_t nslabs, navail, slabs_cap, slabs_max;
	struct sponsor_demander *dem[DEM_BUCKETS];
};

/* ---- the lock --------------------------------------------------------------------------- */

/* Take sp->lock, counting the threads that had to wait for it so that a long operation can
 * let them through (sp_yield_locked). */
static void sp_lock(struct sponsor *sp)
{
	if (pthread_mutex_trylock(&sp->lock)) {
		atomic_fetch_add(&sp->waiters, 1);
		pthread_mutex_lock(&sp->lock);
		atomic_fetch_sub(&sp->waiters, 1);
		atomic_fetch_add(&sp->handoffs, 1);
	}
	sp->locked_at = heca__now_ns();
}

static void sp_unlock(struct sponsor *sp)
{
	pthread_mutex_unlock(&sp->lock);
}

/*
 * Called with sp->lock held between two steps of a long operation: if other threads wait
 * for the lock and it has been held YIELD_HOLD_NS, release it until each of them has had it
 * (at most YIELD_WAIT_NS), then take it again. A plain unlock and lock would not do: the
 * releasing thread usually wins the lock back before a woken waiter runs. Sleeping, not
 * spinning, gives the waiters this CPU when the machine has no other.
 */
static void sp_yield_locked(struct sponsor *sp)
{
	unsigned waiting = atomic_load_explicit(&sp->waiters, memory_order_relaxed), from;
	uint64_t until;

	if (!waiting || heca__now_ns() - sp->locked_at < YIELD_HOLD_NS)
		return;
	from = atomic_load(&sp->handoffs);
	sp_unlock(sp);
	until = heca__now_ns() + YIELD_WAIT_NS;
	while (atomic_load(&sp->handoffs) - from < waiting && heca__now_ns() < until) {
		struct timespec ts = {.tv_nsec = 20000};

		nanosleep(&ts, NULL);
	}
	sp_lock(sp);
}

/* Wait until no CLONE holds demander d. Called with sp->lock held. */
static void wait_idle_locked(struct sponsor *sp, struct sponsor_demander *d)
{
	while (d->busy) {
		pthread_cond_wait(&sp->idle, &sp->lock);
		sp->locked_at = heca__now_ns();
	}
}

/* ---- index and record memory ------------------------------------------------------------ */

/* Zeroed memory for the index or a record, charged to sp->meta_bytes: NULL with *err =
 * -ENOSPC if it would pass sp->meta_max, -ENOMEM if malloc fails. */
static void *meta_alloc_locked(struct sponsor *sp, size_t bytes, int *err)
{
	void *p;

	if (sp->meta_bytes + bytes + META_OVERHEAD > sp->meta_max) {
		*err = -ENOSPC;
		return NULL;
	}
	p = calloc(1, bytes);
	if (!p) {
		*err = -ENOMEM;
		return NULL;
	}
	sp->meta_bytes += bytes + META_OVERHEAD;
	return p;
}

static void meta_free_locked(struct sponsor *sp, void *p, size_t bytes)
{
	if (!p)
		return;
	sp->meta_bytes -= bytes + META_OVERHEAD;
	free(p);
}

static size_t node_bytes(unsigned level)
{
	return (size_t)RT_FAN * (level == 1 ? sizeof(uint32_t) : sizeof(void *));
}

/* ---- slots ---------------------------------------------------------------------------- */

static inline uint8_t *slot_mem(struct sponsor *sp, uint32_t slot)
{
	return sp->slabs[slot / SPONSOR_SLAB_PAGES].mem + (size_t)(slot % SPONSOR_SLAB_PAGES) * PAGE;
}

static int slab_new_locked(struct sponsor *sp)
{
	uint64_t first = (uint64_t)sp->nslabs * SPONSOR_SLAB_PAGES;
	struct slab *s;
	void *mem;

	if (sp->nslabs >= sp->slabs_max)
		return -ENOSPC;
	if (sp->nslabs == sp->slabs_cap) {
		uint32_t ncap = sp->slabs_cap ? sp->slabs_cap * 2 : 16;
		struct slab *ns;
		uint32_t *na;

		ncap = HECA_MIN(ncap, sp->slabs_max);
		ns = realloc(sp->slabs, ncap * sizeof(*ns));
		if (!ns)
			return -ENOMEM;
		sp->slabs = ns;
		na = realloc(sp->avail, ncap * sizeof(*na));
		if (!na)
			return -ENOMEM;
		sp->avail = na;
		sp->slabs_cap = ncap;
	}
	s = &sp->slabs[sp->nslabs];
	memset(s, 0, sizeof(*s));
	s->nslots = (uint16_t)HECA_MIN((uint64_t)SPONSOR_SLAB_PAGES, sp->capacity_pages - first);
	/* NORESERVE: capacity is a promise to store, not memory to commit at start. */
	mem = mmap(NULL, (size_t)s->nslots * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED)
		return -ENOMEM;
	s->mem = mem;
	s->free_head = NO_SLOT;
	s->in_avail = 1;
	sp->avail[sp->navail++] = sp->nslabs++;
	return 0;
}

/* Take a free slot. The caller has checked used_pages against the capacity. */
static int slot_alloc_locked(struct sponsor *sp, uint32_t *out)
{
	for (;;) {
		while (sp->navail) {
			uint32_t si = sp->avail[sp->navail - 1];
			struct slab *s = &sp->slabs[si];

			if (s->free_head != NO_SLOT) {
				*out = s->free_head;
				memcpy(&s->free_head, slot_mem(sp, *out), sizeof(uint32_t));
				s->used++;
				return 0;
			}
			if (s->bump < s->nslots) {
				*out = si * SPONSOR_SLAB_PAGES + s->bump++;
				s->used++;
				return 0;
			}
			s->in_avail = 0;
			sp->navail--;
		}
		int rc = slab_new_locked(sp);
		if (rc)
			return rc;
	}
}

static void slot_free_locked(struct sponsor *sp, uint32_t slot)
{
	uint32_t si = slot / SPONSOR_SLAB_PAGES;
	struct slab *s = &sp->slabs[si];

	if (--s->used == 0) {
		/* Whole slab free: return its memory; its free list lived in it. */
		madvise(s->mem, (size_t)s->nslots * PAGE, MADV_DONTNEED);
		s->bump = 0;
		s->free_head = NO_SLOT;
	} else {
		memcpy(slot_mem(sp, slot), &s->free_head, sizeof(uint32_t));
		s->free_head = slot;
	}
	if (!s->in_avail) {
		s->in_avail = 1;
		sp->avail[sp->navail++] = si;
	}
}

/* ---- per-segment radix index --------------------------------------------------------- */

static unsigned rt_levels_for(uint64_t size)
{
	unsigned l = 1;

	while (l < RT_MAX_LEVELS && size > 0 && ((size - 1) >> (RT_BITS * l)) != 0)
		l++;
	return l;
}

/*
 * Index nodes made by a series of rt_entry() calls, so that a refused request can take them
 * away again. A WRITE of at most 256 consecutive pages crosses at most one leaf boundary, so
 * it makes at most two nodes per level.
 */
struct rt_made {
	unsigned n;
	void **pp[2 * RT_MAX_LEVELS];
	unsigned level[2 * RT_MAX_LEVELS];
};

/* The leaf entry for page, creating index nodes if create (recorded in *made unless it is
 * NULL). NULL if absent, or when creating with *err = -ENOSPC (index memory cap) or -ENOMEM;
 * nodes made before a failure stay (recorded in *made). */
static uint32_t *rt_entry(struct sponsor *sp, struct seg *s, uint64_t page, int create,
			  struct rt_made *made, int *err)
{
	void **pp = &s->root;

	for (unsigned l = s->levels;; l--) {
		if (!*pp) {
			if (!create)
				return NULL;
			if (made && made->n == HECA_ARRAY_SIZE(made->pp)) {
				*err = -ENOMEM;
				return NULL;
			}
			*pp = meta_alloc_locked(sp, node_bytes(l), err);
			if (!*pp)
				return NULL;
			if (made) {
				made->pp[made->n] = pp;
				made->level[made->n++] = l;
			}
		}
		if (l == 1)
			return (uint32_t *)*pp + (page & RT_MASK);
		pp = (void **)*pp + ((page >> (RT_BITS * (l - 1))) & RT_MASK);
	}
}

/* Take away the nodes recorded in *m, newest first (children before their parents). */
static void rt_unmake_locked(struct sponsor *sp, struct rt_made *m)
{
	while (m->n) {
		m->n--;
		meta_free_locked(sp, *m->pp[m->n], node_bytes(m->level[m->n]));
		*m->pp[m->n] = NULL;
	}
}

/* Returns 0, -ENOSPC (index memory cap) or -ENOMEM. */
static int rt_grow(struct sponsor *sp, struct seg *s, unsigned levels)
{
	int err = 0;

	while (s->levels < levels) {
		if (s->root) {
			void **n = meta_alloc_locked(sp, node_bytes(s->levels + 1), &err);
			if (!n)
				return err;
			n[0] = s->root;
			s->root = n;
		}
		s->levels++;
	}
	return 0;
}

/* Free the nodes of a subtree, and with free_slots the slots its leaves point to; with yield
 * (the subtree belongs to a busy demander or to nobody) let waiting threads have the lock
 * after each leaf. */
static void rt_free_locked(struct sponsor *sp, void *node, unsigned level, int free_slots,
			   bool yield)
{
	if (!node)
		return;
	if (level == 1) {
		uint32_t *leaf = node;
		for (unsigned i = 0; free_slots && i < RT_FAN; i++)
			if (leaf[i])
				slot_free_locked(sp, leaf[i] - 1);
		meta_free_locked(sp, node, node_bytes(level));
		if (yield)
			sp_yield_locked(sp);
		return;
	}
	for (unsigned i = 0; i < RT_FAN; i++)
		rt_free_locked(sp, ((void **)node)[i], level - 1, free_slots, yield);
	meta_free_locked(sp, node, node_bytes(level));
}

/* Count stored pages of a subtree (for sponsor_check). */
static uint64_t rt_count(void *node, unsigned level)
{
	uint64_t n = 0;

	if (!node)
		return 0;
	for (unsigned i = 0; i < RT_FAN; i++) {
		if (level == 1)
			n += ((uint32_t *)node)[i] != 0;
		else
			n += rt_count(((void **)node)[i], level - 1);
	}
	return n;
}

/* The last page (relative to the node's first) that a node at this level covers. */
static uint64_t rt_span_last(unsigned level)
{
	unsigned bits = RT_BITS * level;

	return bits >= 64 ? UINT64_MAX : (1ull << bits) - 1;
}

/*
 * Free the stored pages in [first, last] of the subtree *pp at level, whose first page is
 * base. A subtree wholly inside the range goes with its index nodes (through rt_free_locked);
 * one partly inside is walked, so absent subtrees cost nothing however long the range is.
 * The range must lie within the root's reach. Returns the pages freed; accounting is the
 * caller's.
 */
static uint64_t rt_discard_locked(struct sponsor *sp, void **pp, unsigned level, uint64_t base,
				  uint64_t first, uint64_t last, bool yield)
{
	unsigned shift = RT_BITS * (level - 1);
	uint64_t n = 0;

	if (!*pp)
		return 0;
	if (first <= base && last >= base + rt_span_last(level)) {
		n = rt_count(*pp, level);
		void *node = *pp;

		/* Detached first: what a yield lets run must not see a half-freed subtree. */
		*pp = NULL;
		rt_free_locked(sp, node, level, 1, yield);
		return n;
	}
	first = HECA_MAX(first, base);
	last = HECA_MIN(last, base + rt_span_last(level));
	for (uint64_t i = (first - base) >> shift; i <= (last - base) >> shift; i++) {
		if (level == 1) {
			uint32_t *e = (uint32_t *)*pp + i;

			if (*e) {
				slot_free_locked(sp, *e - 1);
				*e = 0;
				n++;
			}
		} else {
			n += rt_discard_locked(sp, (void **)*pp + i, level - 1, base + (i << shift),
					       first, last, yield);
		}
	}
	return n;
}

/*
 * The first leaf at or after page `from` (a multiple of RT_FAN) in the subtree node at level
 * whose first page is base, its first page in *leaf_base; NULL if there is none. Absent
 * subtrees are skipped whole, so a sparse index costs what it holds, not what it spans.
 */
static uint32_t *rt_leaf_from(void *node, unsigned level, uint64_t base, uint64_t from,
			      uint64_t *leaf_base)
{
	unsigned shift = RT_BITS * (level - 1);

	if (!node || from > base + rt_span_last(level))
		return NULL;
	if (level == 1) {
		*leaf_base = base;
		return node;
	}
	for (uint64_t i = from > base ? (from - base) >> shift : 0; i < RT_FAN; i++) {
		void *child = ((void **)node)[i];
		uint64_t cb;
		uint32_t *leaf;

		if (!child)
			continue;
		cb = base + (i << shift);
		leaf = rt_leaf_from(child, level - 1, cb, HECA_MAX(from, cb), leaf_base);
		if (leaf)
			return leaf;
	}
	return NULL;
}

/* ---- demanders and segments ---------------------------------------------------------- */

static size_t dem_hash(const uint8_t id[16])
{
	uint64_t a, b;

	memcpy(&a, id, 8);
	memcpy(&b, id + 8, 8);
	return (size_t)(((a ^ (b * 0x9e3779b97f4a7c15ull)) * 0x9e3779b97f4a7c15ull) >> 56) %
	       DEM_BUCKETS;
}

static size_t seg_hash(uint32_t id, size_t nbuckets)
{
	return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 32) & (nbuckets - 1);
}

static struct seg *seg_find(struct sponsor_demander *d, uint32_t id)
{
	struct seg *s;

	if (!d->nbuckets)
		return NULL;
	for (s = d->buckets[seg_hash(id, d->nbuckets)]; s; s = s->next)
		if (s->id == id)
			return s;
	return NULL;
}

/* Returns 0, -ENOSPC (record memory cap) or -ENOMEM. */
static int seg_table_grow(struct sponsor *sp, struct sponsor_demander *d)
{
	size_t n = d->nbuckets ? d->nbuckets * 2 : 16;
	int err = 0;
	struct seg **b = meta_alloc_locked(sp, n * sizeof(*b), &err);

	if (!b)
		return err;
	for (size_t i = 0; i < d->nbuckets; i++) {
		struct seg *s = d->buckets[i], *next;
		for (; s; s = next) {
			size_t h = seg_hash(s->id, n);
			next = s->next;
			s->next = b[h];
			b[h] = s;
		}
	}
	meta_free_locked(sp, d->buckets, d->nbuckets * sizeof(*b));
	d->buckets = b;
	d->nbuckets = n;
	return 0;
}

static void seg_unlink(struct sponsor_demander *d, struct seg *s)
{
	struct seg **pp = &d->buckets[seg_hash(s->id, d->nbuckets)];

	while (*pp != s)
		pp = &(*pp)->next;
	*pp = s->next;
}

static struct sponsor_demander *dem_find_locked(struct sponsor *sp, const uint8_t id[16])
{
	struct sponsor_demander *d;

	for (d = sp->dem[dem_hash(id)]; d; d = d->next)
		if (!memcmp(d->id, id, 16))
			return d;
	return NULL;
}

/* The demander with this id, created (without connections or segments) if absent. NULL if
 * out of memory or past the record memory cap. */
static struct sponsor_demander *dem_get_locked(struct sponsor *sp, const uint8_t id[16])
{
	size_t h = dem_hash(id);
	struct sponsor_demander *d = dem_find_locked(sp, id);
	int err = 0;

	if (d)
		return d;
	d = meta_alloc_locked(sp, sizeof(*d), &err);
	if (!d)
		return NULL;
	memcpy(d->id, id, 16);
	d->next = sp->dem[h];
	sp->dem[h] = d;
	sp->ndemanders++;
	return d;
}

/* Drop a demander that has neither connections nor segments and no CLONE under way. */
static void dem_put_locked(struct sponsor *sp, struct sponsor_demander *d)
{
	struct sponsor_demander **pp;

	if (d->conns || d->nsegs || d->busy)
		return;
	for (pp = &sp->dem[dem_hash(d->id)]; *pp != d; pp = &(*pp)->next)
		;
	*pp = d->next;
	sp->ndemanders--;
	meta_free_locked(sp, d->buckets, d->nbuckets * sizeof(*d->buckets));
	meta_free_locked(sp, d, sizeof(*d));
}

/* ---- lifetime -------------------------------------------------------------------------- */

int sponsor_open(const struct sponsor_config *cfg, struct sponsor **out)
{
	struct sponsor *sp;
	uint64_t cap = cfg->capacity / PAGE;
	int rc;

	if (cap > SPONSOR_MAX_CAPACITY_PAGES)
		return -EINVAL;
	if (cfg->keylen && (!cfg->key || cfg->keylen < HECA_AUTH_KEY_MIN ||
			    cfg->keylen > HECA_AUTH_KEY_MAX))
		return -EINVAL;
	sp = calloc(1, sizeof(*sp));
	if (!sp)
		return -ENOMEM;
	if (cfg->has_id) {
		memcpy(sp->id, cfg->sponsor_id, 16);
	} else {
		rc = heca__random(sp->id, sizeof(sp->id));
		if (rc)
			goto out_free;
	}
	if (cfg->keylen)
		memcpy(sp->key, cfg->key, cfg->keylen);
	sp->keylen = cfg->keylen;
	sp->clock_ns = cfg->clock_ns ? cfg->clock_ns : heca__now_ns;
	sp->expired = cfg->expired;
	sp->expired_arg = cfg->expired_arg;
	pthread_mutex_init(&sp->lock, NULL);
	pthread_cond_init(&sp->idle, NULL);
	sp->capacity_pages = cap;
	sp->meta_max = cfg->index_max ? cfg->index_max : SPONSOR_INDEX_MAX(cap * PAGE);
	sp->slabs_max = (uint32_t)((cap + SPONSOR_SLAB_PAGES - 1) / SPONSOR_SLAB_PAGES);
	memcpy(sp->cluster_id, cfg->cluster_id, 16);
	*out = sp;
	return 0;
out_free:
	free(sp);
	return rc;
}

void sponsor_close(struct sponsor *sp)
{
	if (!sp)
		return;
	for (size_t h = 0; h < DEM_BUCKETS; h++) {
		struct sponsor_demander *d, *dn;
		for (d = sp->dem[h]; d; d = dn) {
			dn = d->next;
			for (size_t i = 0; i < d->nbuckets; i++) {
				struct seg *s, *sn;
				for (s = d->buckets[i]; s; s = sn) {
					sn = s->next;
					rt_free_locked(sp, s->root, s->levels, 0, false);
					free(s);
				}
			}
			free(d->buckets);
			free(d);
		}
	}
	for (uint32_t i = 0; i < sp->nslabs; i++)
		munmap(sp->slabs[i].mem, (size_t)sp->slabs[i].nslots * PAGE);
	free(sp->slabs);
	free(sp->avail);
	pthread_cond_destroy(&sp->idle);
	pthread_mutex_destroy(&sp->lock);
	heca__auth_wipe(sp->key, sizeof(sp->key));
	free(sp);
}

void sponsor_get_id(const struct sponsor *sp, uint8_t id[16])
{
	memcpy(id, sp->id, 16);
}

void sponsor_get_stats(struct sponsor *sp, struct sponsor_stats *st)
{
	sp_lock(sp);
	st->capacity_pages = sp->capacity_pages;
	st->used_pages = sp->used_pages;
	st->segments = sp->nsegs;
	st->demanders = sp->ndemanders;
	st->slabs = sp->nslabs;
	st->index_bytes = sp->meta_bytes;
	st->index_max = sp->meta_max;
	sp_unlock(sp);
}

void sponsor_conn_init(struct sponsor_conn *c)
{
	memset(c, 0, sizeof(*c));
}

void sponsor_conn_exit(struct sponsor *sp, struct sponsor_conn *c)
{
	if (c->dem) {
		sp_lock(sp);
		if (--c->dem->conns == 0)
			c->dem->orphaned_at = sp->clock_ns(); /* its lease starts */
		dem_put_locked(sp, c->dem);
		sp_unlock(sp);
	}
	c->dem = NULL;
	c->state = SPONSOR_CONN_NEW;
}

void sponsor_buf_free(struct sponsor_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* Index memory of a subtree as meta_alloc_locked() charged it (for sponsor_check). */
static uint64_t rt_meta(void *node, unsigned level)
{
	uint64_t n;

	if (!node)
		return 0;
	n = node_bytes(level) + META_OVERHEAD;
	for (unsigned i = 0; level > 1 && i < RT_FAN; i++)
		n += rt_meta(((void **)node)[i], level - 1);
	return n;
}

int sponsor_check(struct sponsor *sp)
{
	uint64_t used = 0, dem_pages = 0, segs = 0, ndem = 0, meta = 0;
	int rc = 0;

	sp_lock(sp);
	for (uint32_t i = 0; i < sp->nslabs; i++) {
		struct slab *s = &sp->slabs[i];
		uint32_t nfree = 0;
		for (uint32_t f = s->free_head; f != NO_SLOT && nfree <= s->nslots; nfree++) {
			if (f / SPONSOR_SLAB_PAGES != i || f % SPONSOR_SLAB_PAGES >= s->bump) {
				rc = -EUCLEAN;
				break;
			}
			memcpy(&f, slot_mem(sp, f), sizeof(f));
		}
		if (s->bump > s->nslots || (uint32_t)s->used + nfree != s->bump)
			rc = -EUCLEAN;
		used += s->used;
	}
	for (size_t h = 0; h < DEM_BUCKETS; h++) {
		for (struct sponsor_demander *d = sp->dem[h]; d; d = d->next) {
			uint64_t dsegs = 0, dp = 0;
			ndem++;
			if (!d->conns && !d->nsegs)
				rc = -EUCLEAN;
			meta += sizeof(*d) + META_OVERHEAD;
			if (d->buckets)
				meta += d->nbuckets * sizeof(*d->buckets) + META_OVERHEAD;
			for (size_t i = 0; i < d->nbuckets; i++) {
				for (struct seg *s = d->buckets[i]; s; s = s->next) {
					meta += sizeof(*s) + META_OVERHEAD +
						rt_meta(s->root, s->levels);
					if (rt_count(s->root, s->levels) != s->pages)
						rc = -EUCLEAN;
					dp += s->pages;
					dsegs++;
				}
			}
			if (dsegs != d->nsegs || dp != d->pages)
				rc = -EUCLEAN;
			segs += dsegs;
			dem_pages += dp;
		}
	}
	/* Index memory charged is exactly what is allocated and within the cap; no CLONE is
	 * half-way, so nothing is reserved. */
	if (used != sp->used_pages || dem_pages != used || segs != sp->nsegs ||
	    ndem != sp->ndemanders || used > sp->capacity_pages || meta != sp->meta_bytes ||
	    meta > sp->meta_max || sp->reserved_pages)
		rc = -EUCLEAN;
	sp_unlock(sp);
	return rc;
}

/* ---- replies --------------------------------------------------------------------------- */

static int buf_reserve(struct sponsor_buf *b, size_t more)
{
	size_t need = b->len + more, ncap;
	uint8_t *n;

	if (need <= b->cap)
		return 0;
	ncap = b->cap ? b->cap : 64 * 1024;
	while (ncap < need)
		ncap *= 2;
	n = realloc(b->data, ncap);
	if (!n)
		return -ENOMEM;
	b->data = n;
	b->cap = ncap;
	return 0;
}

/* Encode the header of a reply at out->data + at whose payload (plen bytes) already sits
 * right behind it, and commit it. The space was reserved by the caller. */
static void reply_commit(struct sponsor_buf *out, size_t at, const struct heca_frame *req,
			 int status, uint32_t plen)
{
	struct heca_frame r = {
		.opcode = (uint8_t)(req->opcode | HECA_OP_REPLY),
		.req_id = req->req_id,
		.segment = req->segment,
		.status = status,
		.page = req->page,
		.count = req->count,
		.payload_len = status ? 0 : plen,
	};

	r.payload = r.payload_len ? out->data + at + HECA_WIRE_HDR : NULL;
	heca_wire_encode(out->data + at, &r);
	out->len = at + HECA_WIRE_HDR + r.payload_len;
}

static int reply_status(struct sponsor_buf *out, const struct heca_frame *req, int status)
{
	if (buf_reserve(out, HECA_WIRE_HDR))
		return -ENOMEM;
	reply_commit(out, out->len, req, status, 0);
	return 0;
}

/* A reply without payload whose page field carries n (pages copied or freed) rather than the
 * request's page. */
static int reply_count(struct sponsor_buf *out, const struct heca_frame *req, int status,
		       uint64_t n)
{
	struct heca_frame r = *req;

	r.page = n;
	return reply_status(out, &r, status);
}

/* Append an ERROR frame and return -err: the connection is to be closed. */
static int proto_error(struct sponsor_buf *out, int err)
{
	struct heca_frame r = {.opcode = HECA_OP_ERROR, .status = err};

	if (buf_reserve(out, HECA_WIRE_HDR))
		return -ENOMEM;
	heca_wire_encode(out->data + out->len, &r);
	out->len += HECA_WIRE_HDR;
	return -err;
}

/* ---- requests -------------------------------------------------------------------------- */

/* Attach connection c to demander id (creating it): the connection is READY. Returns 0 or
 * ENOMEM (a status for the reply). */
static int admit(struct sponsor *sp, struct sponsor_conn *c, const uint8_t id[16])
{
	struct sponsor_demander *d;

	sp_lock(sp);
	d = dem_get_locked(sp, id);
	if (d && c->session && c->session < d->session) {
		sp_unlock(sp);
		return ESTALE; /* a connection of a session the demander has left behind */
	}
	if (d) {
		d->conns++;
		if (c->session > d->session)
			d->session = c->session;
	}
	sp_unlock(sp);
	if (!d)
		return ENOMEM;
	c->dem = d;
	c->state = SPONSOR_CONN_READY;
	return 0;
}

static int do_hello(struct sponsor *sp, struct sponsor_conn *c, const struct heca_frame *f,
		    struct sponsor_buf *out)
{
	const uint8_t *p = f->payload;
	uint8_t *r;
	size_t at = out->len;
	int st;

	if (memcmp(p, sp->cluster_id, 16)) {
		if (reply_status(out, f, EACCES))
			return -ENOMEM;
		return -EACCES;
	}
	if (buf_reserve(out, HECA_WIRE_HDR + HECA_WIRE_HELLO_REPLY_LEN))
		return -ENOMEM;
	memcpy(c->demander_id, p + 16, 16);
	c->channel = heca_get32(p + 32);
	c->session = heca_get32(p + 36);
	r = out->data + at + HECA_WIRE_HDR;
	memset(r, 0, HECA_WIRE_HELLO_REPLY_LEN);
	if (sp->keylen) {
		/* Nothing is created for a demander until it has proved it holds the key. */
		st = heca__random(c->nonce, sizeof(c->nonce));
		if (st)
			return reply_status(out, f, ENOMEM);
		heca_put32(r + HECA_HELLO_REPLY_OFF_FLAGS, HECA_HELLO_AUTH);
		memcpy(r + HECA_HELLO_REPLY_OFF_NONCE, c->nonce, sizeof(c->nonce));
		c->state = SPONSOR_CONN_AUTH;
	} else {
		st = admit(sp, c, c->demander_id);
		if (st)
			return reply_status(out, f, st);
	}
	memcpy(r, sp->id, 16);
	sp_lock(sp);
	heca_put64(r + 16, sp->capacity_pages);
	heca_put64(r + 24, sp->used_pages);
	sp_unlock(sp);
	reply_commit(out, at, f, 0, HECA_WIRE_HELLO_REPLY_LEN);
	return 0;
}

/* AUTH in the AUTH state: check the demander's MAC, answer with the sponsor's. */
static int do_auth(struct sponsor *sp, struct sponsor_conn *c, const struct heca_frame *f,
		   struct sponsor_buf *out)
{
	const uint8_t *cnonce = f->payload, *mac = f->payload + HECA_AUTH_NONCE_LEN;
	uint8_t want[HECA_AUTH_MAC_LEN];
	size_t at = out->len;
	int st;

	if (buf_reserve(out, HECA_WIRE_HDR + HECA_WIRE_AUTH_REPLY_LEN))
		return -ENOMEM;
	if (heca__auth_mac(sp->key, sp->keylen, HECA_AUTH_LABEL_DEMANDER, sp->cluster_id,
			   c->demander_id, sp->id, c->nonce, cnonce, want))
		goto out_nomem;
	if (heca__auth_check(want, mac)) {
		heca__auth_wipe(c->nonce, sizeof(c->nonce));
		reply_status(out, f, EACCES); /* cannot fail: the space is reserved */
		return -EACCES;
	}
	st = admit(sp, c, c->demander_id);
	if (st)
		goto out_nomem;
	if (heca__auth_mac(sp->key, sp->keylen, HECA_AUTH_LABEL_SPONSOR, sp->cluster_id,
			   c->demander_id, sp->id, c->nonce, cnonce,
			   out->data + at + HECA_WIRE_HDR))
		goto out_nomem;
	/* A nonce answers one AUTH only. */
	heca__auth_wipe(c->nonce, sizeof(c->nonce));
	reply_commit(out, at, f, 0, HECA_WIRE_AUTH_REPLY_LEN);
	return 0;
out_nomem:
	/* The exchange cannot be finished: say so and close rather than leave it half done. */
	heca__auth_wipe(c->nonce, sizeof(c->nonce));
	reply_status(out, f, ENOMEM);
	return -ENOMEM;
}

static int alloc_locked(struct sponsor *sp, struct sponsor_demander *d, uint32_t id,
			uint64_t size)
{
	struct seg *s = seg_find(d, id);
	int err = 0;

	if (s) {
		if (size <= s->size)
			return 0; /* idempotent; segments never shrink */
		err = rt_grow(sp, s, rt_levels_for(size));
		if (err)
			return -err;
		s->size = size;
		return 0;
	}
	if (d->nsegs >= d->nbuckets) {
		err = seg_table_grow(sp, d);
		if (err)
			return -err;
	}
	s = meta_alloc_locked(sp, sizeof(*s), &err);
	if (!s)
		return -err;
	s->id = id;
	s->size = size;
	s->levels = rt_levels_for(size);
	s->next = d->buckets[seg_hash(id, d->nbuckets)];
	d->buckets[seg_hash(id, d->nbuckets)] = s;
	d->nsegs++;
	sp->nsegs++;
	return 0;
}

/* Pages that a new WRITE or CLONE may still take. */
static uint64_t avail_pages_locked(const struct sponsor *sp)
{
	return sp->capacity_pages - sp->used_pages - sp->reserved_pages;
}

static int range_ok(const struct seg *s, const struct heca_frame *f)
{
	return f->page <= s->size && f->count <= s->size - f->page;
}

/* Store count pages atomically: either all land or none does and nothing changes. */
static int write_locked(struct sponsor *sp, struct sponsor_demander *d,
			const struct heca_frame *f)
{
	struct seg *s = seg_find(d, f->segment);
	uint32_t *ent[HECA_WIRE_MAX_PAGES];
	uint32_t fresh[HECA_WIRE_MAX_PAGES];
	uint32_t nfresh = 0, i, k;
	struct rt_made made = {0};
	int err = 0;

	if (!s)
		return ENOENT;
	if (!range_ok(s, f))
		return EINVAL;
	/* Count first without creating anything: a WRITE refused for capacity must leave no
	 * index node behind, or refused writes would grow the index without bound. */
	for (i = 0; i < f->count; i++) {
		uint32_t *e = rt_entry(sp, s, f->page + i, 0, NULL, &err);

		nfresh += !e || !*e;
	}
	if (nfresh > avail_pages_locked(sp))
		return ENOSPC;
	for (i = 0; i < f->count; i++) {
		ent[i] = rt_entry(sp, s, f->page + i, 1, &made, &err);
		if (!ent[i]) {
			rt_unmake_locked(sp, &made);
			return -err;
		}
	}
	for (k = 0; k < nfresh; k++) {
		int rc = slot_alloc_locked(sp, &fresh[k]);
		if (rc) {
			while (k--)
				slot_free_locked(sp, fresh[k]);
			rt_unmake_locked(sp, &made);
			return -rc;
		}
	}
	for (i = 0, k = 0; i < f->count; i++) {
		if (!*ent[i])
			*ent[i] = fresh[k++] + 1;
		memcpy(slot_mem(sp, *ent[i] - 1), f->payload + (size_t)i * PAGE, PAGE);
	}
	s->pages += nfresh;
	d->pages += nfresh;
	sp->used_pages += nfresh;
	return 0;
}

static int read_locked(struct sponsor *sp, struct sponsor_demander *d,
		       const struct heca_frame *f, uint8_t *dst)
{
	struct seg *s = seg_find(d, f->segment);
	uint32_t *leaf = NULL;
	uint64_t leaf_base = 0;

	if (!s)
		return ENOENT;
	if (!range_ok(s, f))
		return EINVAL;
	for (uint32_t i = 0; i < f->count; i++) {
		uint64_t pg = f->page + i;
		uint32_t e;

		/* Look a leaf up once per 512 pages, not once per page. */
		if (!leaf || (pg & ~(uint64_t)RT_MASK) != leaf_base) {
			int err = 0;
			leaf = rt_entry(sp, s, pg & ~(uint64_t)RT_MASK, 0, NULL, &err);
			leaf_base = pg & ~(uint64_t)RT_MASK;
			if (!leaf)
				return ENOENT;
		}
		e = leaf[pg & RT_MASK];
		if (!e)
			return ENOENT;
		memcpy(dst + (size_t)i * PAGE, slot_mem(sp, e - 1), PAGE);
	}
	return 0;
}

static int free_locked(struct sponsor *sp, struct sponsor_demander *d, uint32_t id)
{
	struct seg *s = seg_find(d, id);

	if (!s)
		return ENOENT;
	seg_unlink(d, s);
	/* A busy demander's requests wait, so its pages may go a leaf at a time. */
	rt_free_locked(sp, s->root, s->levels, 1, d->busy);
	sp->used_pages -= s->pages;
	d->pages -= s->pages;
	d->nsegs--;
	sp->nsegs--;
	meta_free_locked(sp, s, sizeof(*s));
	return 0;
}

/* Free every segment of d (DROPALL, CLONE's undo, an expired lease). Returns the pages
 * freed. */
static uint64_t drop_all_locked(struct sponsor *sp, struct sponsor_demander *d)
{
	uint64_t n = d->pages;

	for (size_t i = 0; i < d->nbuckets; i++)
		while (d->buckets[i])
			free_locked(sp, d, d->buckets[i]->id);
	return n;
}

/* Free the stored pages of s in [first, last], keeping the counts. Returns how many. */
static uint64_t seg_discard_locked(struct sponsor *sp, struct sponsor_demander *d, struct seg *s,
				   uint64_t first, uint64_t last)
{
	uint64_t n = rt_discard_locked(sp, &s->root, s->levels, 0, first, last, d->busy);

	s->pages -= n;
	d->pages -= n;
	sp->used_pages -= n;
	return n;
}

/* DISCARD: free the stored pages of [page, page + count) clipped at the segment's end. */
static int discard_locked(struct sponsor *sp, struct sponsor_demander *d,
			  const struct heca_frame *f, uint64_t *freed)
{
	struct seg *s = seg_find(d, f->segment);
	uint64_t last;

	if (!s)
		return ENOENT;
	if (f->count == 0 || f->page >= s->size)
		return 0;
	/* page + count - 1 is computed only when it lies below s->size: no overflow. */
	last = f->count < s->size - f->page ? f->page + f->count - 1 : s->size - 1;
	*freed = seg_discard_locked(sp, d, s, f->page, last);
	return 0;
}

/* RESIZE: growing is ALLOC's growing; shrinking frees the pages at or past the new end. */
static int resize_locked(struct sponsor *sp, struct sponsor_demander *d, uint32_t id, uint64_t size)
{
	struct seg *s = seg_find(d, id);

	if (!s)
		return ENOENT;
	if (size == 0)
		return EINVAL;
	if (size >= s->size)
		return alloc_locked(sp, d, id, size);
	seg_discard_locked(sp, d, s, size, UINT64_MAX);
	s->size = size;
	/* Nothing is left past the new end, so above the levels the new size needs only child
	 * 0 can be set: drop those levels and the index has the shape ALLOC would give it. */
	while (s->levels > rt_levels_for(size)) {
		void **root = s->root;

		if (root) {
			s->root = root[0];
			meta_free_locked(sp, root, node_bytes(s->levels));
		}
		s->levels--;
	}
	return 0;
}

/* Copy the stored pages of segment s (of a busy source) into c (of a busy destination),
 * one leaf (512 pages) at a time, letting waiting threads have the lock between leaves. The
 * pages come out of the reservation *reserved that CLONE made. Returns a status. */
static int seg_copy_locked(struct sponsor *sp, struct sponsor_demander *dst, struct seg *s,
			   struct seg *c, uint64_t *reserved, uint64_t *copied)
{
	uint64_t from = 0, lb;
	uint32_t *leaf;
	int err = 0;

	while ((leaf = rt_leaf_from(s->root, s->levels, 0, from, &lb))) {
		uint32_t *to = rt_entry(sp, c, lb, 1, NULL, &err);

		if (!to)
			return -err;
		for (unsigned i = 0; i < RT_FAN; i++) {
			uint32_t slot;

			if (!leaf[i])
				continue;
			err = slot_alloc_locked(sp, &slot);
			if (err)
				return -err;
			/* slot_mem() after the allocation: a new slab may move sp->slabs. */
			memcpy(slot_mem(sp, slot), slot_mem(sp, leaf[i] - 1), PAGE);
			to[i] = slot + 1;
			(*reserved)--;
			sp->reserved_pages--;
			c->pages++;
			dst->pages++;
			sp->used_pages++;
			(*copied)++;
		}
		if (lb > UINT64_MAX - RT_FAN)
			break;
		from = lb + RT_FAN;
		sp_yield_locked(sp);
	}
	return 0;
}

/*
 * CLONE: copy every segment of d, with its pages in new slots, to the demander named dst_id,
 * which must hold no segment; all or nothing. A destination created here has no connection:
 * its lease starts now. The copy releases the lock between leaves so that other demanders
 * are served meanwhile; source and destination are marked busy so that their own requests
 * wait and no lease frees them, and the capacity is reserved up front so nobody can take it
 * half-way. Called with sp->lock held; returns a status; *copied gets the pages copied.
 */
static int clone_locked(struct sponsor *sp, struct sponsor_demander *d, const uint8_t *dst_id,
			uint64_t *copied)
{
	struct sponsor_demander *dst;
	uint64_t n = 0, reserved;
	int st = 0;

	if (!memcmp(dst_id, d->id, 16))
		return EINVAL;
	dst = dem_find_locked(sp, dst_id);
	/* A destination being filled by another CLONE will hold segments. */
	if (dst && (dst->nsegs || dst->busy))
		return EEXIST;
	/* Refused up front when it cannot fit; the undo below is for running out of memory. */
	if (d->pages > avail_pages_locked(sp))
		return ENOSPC;
	if (!dst) {
		dst = dem_get_locked(sp, dst_id);
		if (!dst)
			return ENOMEM;
		dst->orphaned_at = sp->clock_ns();
	}
	d->busy = dst->busy = true;
	reserved = d->pages;
	sp->reserved_pages += reserved;
	for (size_t i = 0; i < d->nbuckets && !st; i++) {
		for (struct seg *s = d->buckets[i]; s && !st; s = s->next) {
			struct seg *c;

			st = alloc_locked(sp, dst, s->id, s->size);
			if (st)
				break;
			c = seg_find(dst, s->id);
			c->levels = s->levels; /* the copy has the original's shape */
			st = seg_copy_locked(sp, dst, s, c, &reserved, &n);
		}
	}
	sp->reserved_pages -= reserved;
	if (st) {
		drop_all_locked(sp, dst);
		n = 0;
	}
	d->busy = dst->busy = false;
	pthread_cond_broadcast(&sp->idle);
	dem_put_locked(sp, dst); /* a record made here that got no segment goes again */
	*copied = n;
	return st;
}

/* A connection whose demander has since said HELLO with a newer session: after a demander
 * reconnects, frames still arriving on its old connections (delayed in the network) must not
 * change what the new session stored. Called with sp->lock held. */
static bool stale(const struct sponsor_conn *c)
{
	return c->session && c->dem && c->session < c->dem->session;
}

/* End a long request of d that released the lock between leaves: its requests may go on. */
static void busy_end_locked(struct sponsor *sp, struct sponsor_demander *d)
{
	d->busy = false;
	pthread_cond_broadcast(&sp->idle);
}

/* Take the lock for a request of demander d, once no long request (CLONE, FREE, DISCARD,
 * RESIZE, DROPALL) holds d. */
static void lock_dem(struct sponsor *sp, struct sponsor_demander *d)
{
	sp_lock(sp);
	wait_idle_locked(sp, d);
}

static int handle_frame(struct sponsor *sp, struct sponsor_conn *c, const struct heca_frame *f,
			struct sponsor_buf *out)
{
	struct sponsor_demander *d = c->dem;
	size_t at = out->len;
	uint64_t n = 0;
	uint8_t *p;
	int st;

	if ((f->opcode & HECA_OP_REPLY) || f->opcode == HECA_OP_ERROR)
		return proto_error(out, EPROTO);
	switch (c->state) {
	case SPONSOR_CONN_NEW:
		return f->opcode == HECA_OP_HELLO ? do_hello(sp, c, f, out)
						  : proto_error(out, EPROTO);
	case SPONSOR_CONN_AUTH:
		if (f->opcode == HECA_OP_AUTH)
			return do_auth(sp, c, f, out);
		/* A second HELLO is malformed as ever; anything else is not allowed yet. */
		return proto_error(out, f->opcode == HECA_OP_HELLO ? EPROTO : EACCES);
	case SPONSOR_CONN_READY:
		break;
	}
	switch (f->opcode) {
	case HECA_OP_ALLOC:
		lock_dem(sp, d);
		st = stale(c) ? ESTALE : alloc_locked(sp, d, f->segment, f->page);
		sp_unlock(sp);
		return reply_status(out, f, st);
	case HECA_OP_FREE:
		lock_dem(sp, d);
		d->busy = true; /* freed a leaf at a time: see busy_end_locked() */
		st = stale(c) ? ESTALE : free_locked(sp, d, f->segment);
		busy_end_locked(sp, d);
		sp_unlock(sp);
		return reply_status(out, f, st);
	case HECA_OP_WRITE:
		lock_dem(sp, d);
		st = stale(c) ? ESTALE : write_locked(sp, d, f);
		sp_unlock(sp);
		return reply_status(out, f, st);
	case HECA_OP_READ:
		if (buf_reserve(out, HECA_WIRE_HDR + (size_t)f->count * PAGE))
			return -ENOMEM;
		lock_dem(sp, d);
		st = stale(c) ? ESTALE : read_locked(sp, d, f, out->data + at + HECA_WIRE_HDR);
		sp_unlock(sp);
		reply_commit(out, at, f, st, f->count * PAGE);
		return 0;
	case HECA_OP_STAT:
		if (buf_reserve(out, HECA_WIRE_HDR + HECA_WIRE_STAT_LEN))
			return -ENOMEM;
		p = out->data + at + HECA_WIRE_HDR;
		sp_lock(sp);
		heca_put64(p, sp->capacity_pages);
		heca_put64(p + 8, sp->used_pages);
		heca_put64(p + 16, sp->nsegs);
		heca_put64(p + 24, sp->ndemanders);
		heca_put64(p + 32, d->pages);
		sp_unlock(sp);
		reply_commit(out, at, f, 0, HECA_WIRE_STAT_LEN);
		return 0;
	case HECA_OP_CLONE:
		lock_dem(sp, d);
		st = stale(c) ? ESTALE : clone_locked(sp, d, f->payload, &n);
		sp_unlock(sp);
		return reply_count(out, f, st, n);
	case HECA_OP_DISCARD:
		lock_dem(sp, d);
		d->busy = true; /* freed a leaf at a time: see busy_end_locked() */
		st = stale(c) ? ESTALE : discard_locked(sp, d, f, &n);
		busy_end_locked(sp, d);
		sp_unlock(sp);
		return reply_count(out, f, st, n);
	case HECA_OP_RESIZE:
		lock_dem(sp, d);
		d->busy = true; /* freed a leaf at a time: see busy_end_locked() */
		st = stale(c) ? ESTALE : resize_locked(sp, d, f->segment, f->page);
		busy_end_locked(sp, d);
		sp_unlock(sp);
		return reply_status(out, f, st);
	case HECA_OP_DROPALL:
		lock_dem(sp, d);
		d->busy = true; /* freed a leaf at a time: see busy_end_locked() */
		st = stale(c) ? ESTALE : 0;
		if (!st)
			n = drop_all_locked(sp, d);
		busy_end_locked(sp, d);
		sp_unlock(sp);
		return reply_count(out, f, st, n);
	case HECA_OP_ECHO:
		if (buf_reserve(out, HECA_WIRE_HDR + f->payload_len))
			return -ENOMEM;
		if (f->payload_len)
			memcpy(out->data + at + HECA_WIRE_HDR, f->payload, f->payload_len);
		reply_commit(out, at, f, 0, f->payload_len);
		return 0;
	case HECA_OP_HELLO:
		/* A connection speaks for one demander for its whole life. */
		return proto_error(out, EPROTO);
	case HECA_OP_AUTH:
		/* Nothing to prove to a sponsor without a key; a second AUTH is out of place. */
		return sp->keylen ? proto_error(out, EPROTO) : reply_status(out, f, EINVAL);
	}
	return proto_error(out, EPROTO);
}

long sponsor_handle(struct sponsor *sp, struct sponsor_conn *c, const uint8_t *buf, size_t len,
		    struct sponsor_buf *out)
{
	size_t off = 0;

	while (off < len && out->len < SPONSOR_OUT_SOFT_MAX) {
		struct heca_frame f;
		int n = heca_wire_decode(buf + off, len - off, &f);
		int rc;

		if (n == -EAGAIN)
			break;
		if (n < 0)
			return proto_error(out, -n);
		rc = handle_frame(sp, c, &f, out);
		if (rc < 0)
			return rc;
		off += (size_t)n;
	}
	return (long)off;
}

uint64_t sponsor_expire(struct sponsor *sp, uint64_t now_ns, uint64_t lease_ns,
			uint64_t *demanders_out)
{
	uint64_t pages = 0, ndem = 0;

	sp_lock(sp);
	for (size_t h = 0; h < DEM_BUCKETS; h++) {
		struct sponsor_demander *d;
again:
		for (d = sp->dem[h]; d; d = d->next) {
			uint64_t n;

			/* now_ns may predate an orphaning that got the lock first: not expired. */
			if (d->conns || d->busy || now_ns < d->orphaned_at ||
			    now_ns - d->orphaned_at < lease_ns)
				continue;
			/* Busy while its pages go a leaf at a time: a connection of it arriving
			 * meanwhile waits, and nobody else frees it. */
			d->busy = true;
			n = drop_all_locked(sp, d);
			busy_end_locked(sp, d);
			if (sp->expired)
				sp->expired(sp->expired_arg, d->id, n);
			pages += n;
			ndem++;
			dem_put_locked(sp, d); /* no connection, no segment: the record goes */
			/* The lock was let go of: the chain may have changed. Each demander seen
			 * here is gone or has a connection now, so this ends. */
			goto again;
		}
	}
	sp_unlock(sp);
	if (demanders_out)
		*demanders_out = ndem;
	return pages;
}
