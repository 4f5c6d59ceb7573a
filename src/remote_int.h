/* SPDX-License-Identifier: MIT */
/*
 * remote_int.h - what the files of the remote store (store_remote.c, remote_*.c) share: its
 * sponsors (members), their connections, stripes and the requests in flight.
 *
 * Each sponsor gets four connections: control (synchronous: alloc/free, heartbeats, copies),
 * fault (demand reads only, so a 4 KiB fault never waits behind bulk data), prefetch, and
 * bulk (write-backs). Lock order: h->lock, then r->mu, then a connection's smu, then its mu;
 * no completion is called with r->mu or a connection lock held.
 */
#ifndef HECA_REMOTE_INT_H
#define HECA_REMOTE_INT_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "heca_int.h"
#include "net.h"
#include "wire.h"

#define RBUF_SZ (4u << 20)
#define MAX_R 4
#define STRIPE_BUCKETS 65536
#define NO_MEMBER 0xff

enum mstate {
	M_UP = 0,      /* serving */
	M_DOWN = 1,    /* not answering; reconnect attempts with backoff */
	M_JOINING = 2, /* reconnected; its old segments are being dropped */
};

struct op;

/* A FREE or DISCARD a sponsor missed while it was down: sent when it is back. */
struct missed {
	uint8_t op;
	uint32_t seg;
	uint64_t page, count;
};

struct pending {
	uint64_t req_id;
	uint8_t op;
	uint32_t seg;
	uint64_t page;
	uint32_t count;
	struct op *o;
	uint64_t sent_ns;
	uint64_t deadline;
};

struct member;

struct conn {
	int fd;
	enum heca_channel chan;
	struct member *m;
	pthread_mutex_t mu;  /* the pending queue and `broken`; never held across a system call */
	pthread_mutex_t smu; /* sending (and the fd's identity): queue order must be send order */
	struct pending *q;   /* ring: replies come in request order */
	uint32_t qhead, qtail, qcap;
	uint8_t *rbuf;
	size_t rlen;
	bool broken;
	bool watched; /* in the engine's epoll set */
	/* Reads the socket did not take yet (smu; reads are issued on the engine thread only),
	 * and whether the engine is asked to say when the socket is writable. */
	struct heca_outq out;
	bool out_armed;
};

struct member {
	unsigned int idx;
	char addr[128];
	uint8_t id[16];
	uint64_t key;
	uint64_t capacity_pages, used_pages;
	int state;	/* enum mstate; r->mu (read racily for a hint elsewhere: atomics) */
	bool draining;	/* r->mu */
	bool full;	/* refused a write with ENOSPC: no new stripes until a heartbeat says room */
	bool emptied;	/* drained, and told to free our segments */
	bool gone;	/* known to have lost what it held of ours: it starts empty when back */
	bool given_up;	/* down past the grace period: reads of pages only it holds fail, until
			   it is back with them (r->mu) */
	bool auth_said; /* a failed authentication was logged */
	uint64_t down_since_ns; /* when it was last taken for down (r->mu) */
	uint64_t last_hb_ns;	/* last heartbeat answered (repair thread) */
	struct missed *missed;	/* r->mu */
	unsigned int nmissed, capmissed;
	uint64_t rtt_ns; /* smoothed read latency; engine thread */
	uint64_t next_try_ns, backoff_ms, last_ok_ns;
	uint64_t stripes; /* r->mu */
	uint32_t session; /* said in HELLO; a reconnect starts a newer one (repair thread) */
	struct conn ctl, fault, prefetch, bulk;
	int fresh[4]; /* reconnected sockets waiting for the engine to swap them in; -1 none */
	bool swap_ready;
};

struct stripe {
	struct stripe *next;
	uint32_t seg;
	uint64_t idx;
	uint8_t n;		 /* current copies */
	uint8_t holder[MAX_R];	 /* member indices holding a current copy */
	uint8_t target;		 /* member being filled by a copy, or NO_MEMBER */
	bool copying;		 /* writes wait until the copy is done */
	uint32_t inflight;	 /* write requests not yet answered */
	/* NULL, or MAX_R rows of bitmaps, row i for holder[i]: pages whose copy there is not
	 * current (a write it refused or missed). Reads avoid it for those pages. */
	uint64_t *stale;
	uint64_t bits[];	 /* pages that were written: what a copy must carry */
};

struct op {
	bool read;
	enum heca_prio prio;
	uint32_t seg;
	uint64_t page;
	uint32_t count;
	uint64_t cookie;
	unsigned int outstanding, ok;
	int err;
	uint64_t tried; /* reads: members asked already */
	struct op *next; /* reads parked until a holder that is down answers again */
};

struct segrec {
	uint32_t seg;
	uint64_t npages;
};

struct remote {
	struct heca_store base;
	pthread_mutex_t mu;
	pthread_mutex_t resize_mu; /* one RESIZE at a time (remote_resize) */
	pthread_cond_t cond; /* copies waiting for writes to drain, and writes for copies */
	struct member *m[HECA_PLACE_MAX];
	unsigned int nm;
	unsigned int replicas;
	uint64_t stripe_pages;
	struct stripe *st[STRIPE_BUCKETS];
	uint64_t nstripes;
	struct segrec *segs;
	unsigned int nsegs, capsegs;
	uint64_t next_req;
	uint64_t copied_stripes, copied_pages, moving;
	uint8_t key[HECA_AUTH_KEY_MAX]; /* the cluster key, if any */
	size_t keylen;
	struct op *parked; /* r->mu: reads waiting for a holder to come back */
	pthread_t repair;
	bool repair_started, stop;
	bool paused; /* fork: the repair thread waits */
	bool busy;   /* the repair thread is at work (not waiting) */
	pthread_cond_t repair_cond;
};

static inline uint64_t next_req(struct remote *r)
{
	return __atomic_add_fetch(&r->next_req, 1, __ATOMIC_RELAXED);
}

static inline int mstate(struct member *m)
{
	return __atomic_load_n(&m->state, __ATOMIC_ACQUIRE);
}

static inline void set_mstate(struct member *m, int st)
{
	__atomic_store_n(&m->state, st, __ATOMIC_RELEASE);
}

static inline size_t stripe_words(const struct remote *r)
{
	return (r->stripe_pages + 63) / 64;
}

static inline int slot_of(const struct stripe *s, unsigned int mi)
{
	for (unsigned int i = 0; i < s->n; i++)
		if (s->holder[i] == mi)
			return (int)i;
	return -1;
}

/* Holder slot i's row of stale pages, or NULL when none of the stripe's copies is stale. */
static inline uint64_t *stale_row(const struct remote *r, const struct stripe *s, unsigned int i)
{
	return s->stale ? s->stale + i * stripe_words(r) : NULL;
}

static inline bool eligible(struct member *m)
{
	return mstate(m) == M_UP && !m->draining && !m->full;
}

/* Errors that say the connection failed, not that the sponsor refused the request. */
static inline bool conn_error(int err)
{
	return err == -ETIMEDOUT || err == -ECONNRESET || err == -ENOTCONN || err == -EPIPE ||
	       err == -ECONNABORTED || err == -ESTALE;
}

/* remote_conn.c: connections and control-channel calls */
int heca__send_frame(struct remote *r, int fd, struct conn *q, struct heca_frame *f);
int heca__dial(struct remote *r, struct member *m, enum heca_channel ch);
int heca__conn_init(struct conn *c, struct member *m, enum heca_channel ch);
void heca__conn_watch(struct remote *r, struct conn *c);
void heca__conn_exit(struct remote *r, struct conn *c);
void heca__conn_flush(struct remote *r, struct conn *c);
int heca__conn_request(struct remote *r, struct conn *c, struct heca_frame *f, struct op *o);
int heca__ctl_call(struct remote *r, struct member *m, struct heca_frame *req,
		   struct heca_frame *rep, uint8_t *buf, size_t len, int timeout_ms);
int heca__ctl_simple(struct remote *r, struct member *m, uint8_t op, uint32_t seg, uint64_t arg);
int heca__ctl_all_one(struct remote *r, struct member *m, uint8_t op, uint32_t seg,
		      uint64_t page, uint32_t count);
int heca__ctl_all(struct remote *r, uint8_t op, uint32_t seg, uint64_t page, uint32_t count);

/* remote_stripe.c: stripes and their copies (r->mu held) */
struct stripe *heca__stripe_find_locked(struct remote *r, uint32_t seg, uint64_t idx);
void heca__stripe_set_stale_locked(struct remote *r, struct stripe *s, unsigned int mi,
				   uint64_t off, uint64_t count, bool stale);
bool heca__stripe_range_current(const struct remote *r, const struct stripe *s, unsigned int i,
				uint64_t off, uint64_t count);
uint64_t heca__stripe_current_elsewhere(const struct remote *r, const struct stripe *s, size_t w,
					unsigned int skip, bool up_only);
bool heca__stripe_good_locked(const struct remote *r, const struct stripe *s, unsigned int i);
bool heca__stripe_mendable_locked(const struct remote *r, const struct stripe *s, unsigned int i);
unsigned int heca__stripe_good_count_locked(const struct remote *r, const struct stripe *s);
void heca__stripe_drop_holder_locked(struct remote *r, struct stripe *s, unsigned int mi);
void heca__stripe_rank_locked(struct remote *r, uint32_t seg, uint64_t idx, unsigned int *order);
struct stripe *heca__stripe_get_locked(struct remote *r, uint32_t seg, uint64_t idx);

/* remote_health.c: what the store believes about a sponsor */
void heca__member_miss_locked(struct member *m, uint8_t op, uint32_t seg, uint64_t page,
			      uint64_t count);
void heca__member_full_locked(struct remote *r, struct member *m);
void heca__member_down(struct remote *r, struct member *m, int err);
void heca__room_made(struct remote *r);
void heca__member_heartbeat(struct remote *r, struct member *m);
bool heca__remote_seg_at(struct remote *r, unsigned int i, struct segrec *out);
void heca__member_reconnect(struct remote *r, struct member *m);

/* remote_io.c: reads, writes and their completions (the store's read, write, dispatch, tick) */
void heca__remote_dispatch(struct heca_store *s, void *ctx);
void heca__remote_tick(struct heca_store *s, uint64_t now);
int heca__remote_read(struct heca_store *s, enum heca_prio prio, uint32_t seg, uint64_t page,
		      uint32_t count, uint64_t cookie);
int heca__remote_write(struct heca_store *s, uint32_t seg, uint64_t page, uint32_t count,
		       const uint8_t *data, uint64_t cookie);

/* remote_repair.c: the repair thread */
void *heca__repair_main(void *arg);

/* remote_members.c: membership */
int heca__member_open(struct remote *r, const char *addr, struct member **out);
void heca__member_start(struct remote *r, struct member *m);
int heca__remote_add_member(struct heca_store *s, const char *addr);
int heca__remote_drain_member(struct heca_store *s, const char *who);
int heca__remote_members(struct heca_store *s, struct heca_sponsor_info *out, unsigned int max);
void heca__remote_cluster_stats(struct heca_store *s, struct heca_cluster_stats *o);
uint64_t heca__remote_free_pages(struct heca_store *s);

/* remote_fork.c: fork */
void heca__remote_fork_pause(struct heca_store *s);
int heca__remote_fork_prepare(struct heca_store *s, const uint8_t child_id[16]);
void heca__remote_fork_resume(struct heca_store *s);
int heca__remote_fork_child(struct heca_store *s);

#endif
