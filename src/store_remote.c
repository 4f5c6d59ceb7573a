// SPDX-License-Identifier: MIT
/*
 * store_remote.c - the store backed by memory sponsors over TCP: stripes placed on R sponsors
 * by weighted rendezvous hashing, writes to every copy, reads from the fastest healthy one
 * with fail-over, heartbeats, reconnection with backoff, and a repair thread that restores R
 * copies, drains sponsors and moves stripes to new ones. The structures it shares with the
 * rest of the remote store are in remote_int.h.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "heca_int.h"
#include "net.h"
#include "remote_int.h"
#include "segops.h"
#include "util.h"
#include "wire.h"

#define HB_MS 250 /* heartbeat period when idle */
#define STAT_MS 1000 /* a heartbeat at least this often under load, for fresh capacity figures */

/* ---- control-channel calls ---- */

static int remote_alloc(struct heca_store *s, uint32_t seg, uint64_t npages)
{
	struct remote *r = (struct remote *)s;
	unsigned int up = 0;
	int first = 0;

	pthread_mutex_lock(&r->mu);
	if (r->nsegs == r->capsegs) {
		unsigned int ncap = r->capsegs ? r->capsegs * 2 : 16;
		struct segrec *n = realloc(r->segs, ncap * sizeof(*n));
		if (!n) {
			pthread_mutex_unlock(&r->mu);
			return -ENOMEM;
		}
		r->segs = n;
		r->capsegs = ncap;
	}
	r->segs[r->nsegs++] = (struct segrec){seg, npages};
	pthread_mutex_unlock(&r->mu);
	for (unsigned int i = 0; i < __atomic_load_n(&r->nm, __ATOMIC_ACQUIRE); i++) {
		struct member *m = r->m[i];
		int rc = mstate(m) == M_UP ? heca__ctl_simple(r, m, HECA_OP_ALLOC, seg, npages)
					   : -ENOTCONN;
		if (rc == 0)
			up++;
		else if (!first)
			first = rc;
		if (rc && rc != -ENOTCONN)
			heca__member_down(r, m, rc);
	}
	/* A sponsor that is down gets the segment when it comes back. */
	return up ? 0 : first;
}

static int remote_release(struct heca_store *s, uint32_t seg)
{
	struct remote *r = (struct remote *)s;

	pthread_mutex_lock(&r->mu);
	for (unsigned int i = 0; i < r->nsegs; i++)
		if (r->segs[i].seg == seg) {
			r->segs[i] = r->segs[--r->nsegs];
			break;
		}
	for (unsigned int b = 0; b < STRIPE_BUCKETS; b++) {
		struct stripe **pp = &r->st[b];
		while (*pp) {
			struct stripe *st = *pp;
			if (st->seg == seg && !st->copying && !st->inflight) {
				*pp = st->next;
				for (unsigned int i = 0; i < st->n; i++)
					r->m[st->holder[i]]->stripes--;
				r->nstripes--;
				free(st->stale);
				free(st);
			} else {
				pp = &st->next;
			}
		}
	}
	for (unsigned int i = 0; i < r->nm; i++)
		if (mstate(r->m[i]) != M_UP && !r->m[i]->gone)
			heca__member_miss_locked(r->m[i], HECA_OP_FREE, seg, 0, 0);
	pthread_mutex_unlock(&r->mu);
	for (unsigned int i = 0; i < __atomic_load_n(&r->nm, __ATOMIC_ACQUIRE); i++)
		if (mstate(r->m[i]) == M_UP)
			heca__ctl_simple(r, r->m[i], HECA_OP_FREE, seg, 0);
	return 0;
}

static void *repair_main(void *arg);
static void member_start(struct remote *r, struct member *m);

static int remote_discard(struct heca_store *s, uint32_t seg, uint64_t page, uint64_t count)
{
	struct remote *r = (struct remote *)s;
	int rc = 0;

	/* Those pages are no longer written: a stripe copy must not ask for them. */
	pthread_mutex_lock(&r->mu);
	for (uint64_t p = page; p < page + count;) {
		uint64_t idx = p / r->stripe_pages, end = (idx + 1) * r->stripe_pages;
		struct stripe *st = heca__stripe_find_locked(r, seg, idx);
		for (; p < end && p < page + count; p++)
			if (st) {
				uint64_t off = p % r->stripe_pages;
				st->bits[off / 64] &= ~(1ull << (off % 64));
			}
	}
	for (unsigned int i = 0; i < r->nm; i++)
		if (mstate(r->m[i]) != M_UP && !r->m[i]->gone)
			heca__member_miss_locked(r->m[i], HECA_OP_DISCARD, seg, page, count);
	pthread_mutex_unlock(&r->mu);

	while (count && !rc) {
		uint32_t n = (uint32_t)HECA_MIN(count, 0x80000000ull);
		rc = heca__ctl_all(r, HECA_OP_DISCARD, seg, page, n);
		page += n;
		count -= n;
	}
	return rc;
}

static int remote_drop_all(struct heca_store *s)
{
	return heca__ctl_all((struct remote *)s, HECA_OP_DROPALL, 0, 0, 0);
}

/* Grow a segment at the sponsors. Callers do not hold the demander's lock, so two threads
 * may grow one segment at once: the size only grows, and one RESIZE at a time is sent, so
 * that a smaller one cannot reach a sponsor after a larger one and shrink it. */
static int remote_resize(struct heca_store *s, uint32_t seg, uint64_t npages)
{
	struct remote *r = (struct remote *)s;
	int rc;

	pthread_mutex_lock(&r->resize_mu);
	pthread_mutex_lock(&r->mu);
	for (unsigned int i = 0; i < r->nsegs; i++)
		if (r->segs[i].seg == seg) {
			npages = HECA_MAX(npages, r->segs[i].npages);
			r->segs[i].npages = npages; /* what a sponsor that comes back is told */
		}
	pthread_mutex_unlock(&r->mu);
	rc = heca__ctl_all(r, HECA_OP_RESIZE, seg, npages, 0);
	pthread_mutex_unlock(&r->resize_mu);
	return rc;
}

/* fork(): the repair thread is held (remote_fork_pause) and the engine frozen; have every
 * member that is up copy all our segments for the child, all at once. A member that is down holds nothing
 * current: the child treats it as the parent does. */
static void remote_fork_pause(struct heca_store *s)
{
	struct remote *r = (struct remote *)s;

	pthread_mutex_lock(&r->mu);
	r->paused = true;
	while (r->busy)
		pthread_cond_wait(&r->repair_cond, &r->mu);
	pthread_mutex_unlock(&r->mu);
}

/* One sponsor's CLONE: sent by the forking thread, its reply read by the same thread. */
struct clone_call {
	struct member *m;
	struct heca_frame req, rep;
	uint8_t buf[256];
	size_t have;
	bool sent, done, answered;
	int rc;
};

/* Read what the sponsor sent on c's control connection; done once the reply is whole. */
static void clone_recv(struct remote *r, struct clone_call *c)
{
	ssize_t n = recv(c->m->ctl.fd, c->buf + c->have, sizeof(c->buf) - c->have, MSG_DONTWAIT);
	int len;

	if (n == 0) {
		c->rc = -ECONNRESET;
	} else if (n < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return;
		c->rc = -errno;
	} else {
		c->have += (size_t)n;
		len = heca_wire_decode(c->buf, c->have, &c->rep);
		if (len == -EAGAIN && c->have < sizeof(c->buf))
			return;
		if (len == -EAGAIN)
			c->rc = -EMSGSIZE;
		else if (len < 0)
			c->rc = len;
		else if (c->rep.opcode == HECA_OP_ERROR)
			c->rc = c->rep.status ? -c->rep.status : -EPROTO;
		else if (c->rep.opcode != (HECA_OP_CLONE | HECA_OP_REPLY) ||
			 c->rep.req_id != c->req.req_id)
			c->rc = -EPROTO;
		else
			c->rc = c->rep.status ? -c->rep.status : 0;
		c->answered = len > 0 && c->rc != -EPROTO;
		if (len > 0)
			heca__count(&r->base.h->c.bytes_received, (uint64_t)len);
	}
	c->done = true;
}

/*
 * Every member that is up copies all our segments for the child, all at once. The forking
 * thread does it alone: no thread is started and nothing is allocated at fork time (the
 * program's allocator may be locked by another thread, or be one of its own). It sends every
 * CLONE first, then polls the control connections for the replies, up to
 * max(timeout_ms, 60 s) in all (a sponsor copies about a GiB a second). A member that does
 * not answer in time, or whose connection fails, is taken down (it stays the holder of what
 * it has: down is a belief) and the fork fails with that error, -ETIMEDOUT for silence:
 * without its copy the child would read pages held only there as lost. The copies that the
 * others made for the child are freed when their lease ends, unclaimed.
 */
static int remote_fork_prepare(struct heca_store *s, const uint8_t child_id[16])
{
	struct remote *r = (struct remote *)s;
	struct clone_call c[HECA_PLACE_MAX];
	struct pollfd p[HECA_PLACE_MAX];
	unsigned int idx[HECA_PLACE_MAX];
	uint64_t until = heca__now_ns() +
			 (uint64_t)HECA_MAX(r->base.h->opt.timeout_ms, 60000u) * 1000000ull;
	unsigned int n = 0, left = 0;
	int rc = 0;

	for (unsigned int i = 0; i < r->nm && n < HECA_PLACE_MAX; i++) {
		struct member *m = r->m[i];
		bool broken;

		if (mstate(m) != M_UP)
			continue;
		c[n].m = m;
		c[n].req = (struct heca_frame){.opcode = HECA_OP_CLONE, .payload = child_id,
					       .payload_len = 16, .req_id = next_req(r)};
		c[n].have = 0;
		c[n].sent = c[n].done = c[n].answered = false;
		c[n].rc = 0;
		/* Held until the reply is read: nobody else uses the control connection. */
		pthread_mutex_lock(&m->ctl.smu);
		pthread_mutex_lock(&m->ctl.mu);
		broken = m->ctl.broken;
		pthread_mutex_unlock(&m->ctl.mu);
		c[n].rc = m->ctl.fd >= 0 && !broken ? heca__send_frame(r, m->ctl.fd, NULL,
								       &c[n].req)
						    : -ENOTCONN;
		c[n].sent = true;
		c[n].done = c[n].rc != 0;
		left += !c[n].done;
		n++;
	}
	while (left) {
		uint64_t now = heca__now_ns();
		unsigned int np = 0;
		int prc;

		if (now >= until)
			break;
		for (unsigned int i = 0; i < n; i++)
			if (!c[i].done) {
				p[np] = (struct pollfd){.fd = c[i].m->ctl.fd, .events = POLLIN};
				idx[np++] = i;
			}
		prc = poll(p, np, (int)((until - now) / 1000000ull) + 1);
		if (prc < 0 && errno != EINTR) {
			rc = -errno;
			break;
		}
		for (unsigned int k = 0; prc > 0 && k < np; k++)
			if (p[k].revents) {
				clone_recv(r, &c[idx[k]]);
				left -= c[idx[k]].done;
			}
	}
	for (unsigned int i = 0; i < n; i++) {
		struct clone_call *ci = &c[i];

		if (!ci->done)
			ci->rc = rc ? rc : -ETIMEDOUT;
		pthread_mutex_unlock(&ci->m->ctl.smu);
	}
	rc = 0;
	for (unsigned int i = 0; i < n; i++) {
		struct clone_call *ci = &c[i];

		if (!ci->rc)
			continue;
		/* A reply that did not come, or came garbled, leaves the control connection
		 * out of step: the member is down until it is reconnected. */
		if (!ci->answered && ci->rc != -ENOTCONN)
			heca__member_down(r, ci->m, ci->rc);
		if (!rc) {
			rc = ci->rc;
			heca__set_error("fork: sponsor %s cannot copy the segments: %s", ci->m->addr,
					heca_strerror(rc));
		}
	}
	return rc;
}

static void remote_fork_resume(struct heca_store *s)
{
	struct remote *r = (struct remote *)s;
	pthread_mutex_lock(&r->mu);
	r->paused = false;
	pthread_cond_broadcast(&r->repair_cond);
	pthread_mutex_unlock(&r->mu);
}

/* In the child: the member table and stripe map are the parent's at the fork, which the
 * sponsors copied for our (new) demander id; the sockets are the parent's. Connect anew. */
static int remote_fork_child(struct heca_store *s)
{
	struct remote *r = (struct remote *)s;
	enum heca_channel ch[4] = {HECA_CHAN_CONTROL, HECA_CHAN_FAULT, HECA_CHAN_PREFETCH,
				   HECA_CHAN_BULK};
	unsigned int up = 0;
	int rc;

	pthread_mutex_init(&r->mu, NULL);
	pthread_mutex_init(&r->resize_mu, NULL);
	pthread_cond_init(&r->cond, NULL);
	pthread_cond_init(&r->repair_cond, NULL);
	r->paused = r->busy = r->repair_started = false;
	for (unsigned int i = 0; i < r->nm; i++) {
		struct member *m = r->m[i];
		struct conn *cs[4] = {&m->ctl, &m->fault, &m->prefetch, &m->bulk};
		bool was_up = mstate(m) == M_UP;

		for (int k = 0; k < 4; k++) {
			struct conn *c = cs[k];
			pthread_mutex_init(&c->mu, NULL);
			pthread_mutex_init(&c->smu, NULL);
			if (c->fd >= 0)
				close(c->fd);
			c->fd = -1;
			c->watched = false;
			c->broken = false;
			c->qhead = c->qtail = 0;
			c->rlen = 0;
			if (m->fresh[k] >= 0)
				close(m->fresh[k]);
			m->fresh[k] = -1;
		}
		m->swap_ready = false;
		m->session = 1;
		for (int k = 0; k < 4 && was_up; k++) {
			rc = heca__dial(r, m, ch[k]);
			if (rc < 0) {
				for (int j = 0; j < k; j++) {
					close(cs[j]->fd);
					cs[j]->fd = -1;
				}
				was_up = false;
				break;
			}
			cs[k]->fd = rc;
		}
		if (!was_up) {
			/* Its copies of our stripes count no more: the repair thread restores
			 * them from the other holders and reconnects it with backoff. */
			if (mstate(m) != M_DOWN) {
				/* heca__member_down drops what an up one held */
				set_mstate(m, M_UP);
				heca__member_down(r, m, -ENOTCONN);
			}
			continue;
		}
		__atomic_store_n(&m->last_ok_ns, heca__now_ns(), __ATOMIC_RELAXED);
		member_start(r, m);
		up++;
	}
	if (!up)
		return -ENOTCONN;
	rc = -pthread_create(&r->repair, NULL, repair_main, r);
	if (rc)
		return rc;
	r->repair_started = true;
	return 0;
}

/* ---- the repair thread: heartbeats, reconnects, copies ---- */

/*
 * Copy the pages of stripe (seg, idx) that member `to` lacks from the up holders that have
 * them current, with writes to the stripe held back meanwhile: to a new member (which then
 * holds the stripe), or to a holder whose copy misses pages (repair in place). Pages current
 * nowhere (held locally by the demander) are left out and marked stale at `to`. Returns 0 when
 * `to` holds a copy as good as the others.
 */
static int copy_stripe(struct remote *r, uint32_t seg, uint64_t idx, unsigned int to,
		       uint8_t *buf, size_t buflen)
{
	struct stripe *st;
	size_t words = stripe_words(r);
	uint64_t base = idx * r->stripe_pages, npages = 0, *want, *done;
	uint8_t src[HECA_WIRE_MAX_PAGES > 256 ? HECA_WIRE_MAX_PAGES : 256];
	int rc = 0, ts;

	if (r->stripe_pages > sizeof(src))
		return -EINVAL;
	want = calloc(2 * words, 8);
	if (!want)
		return -ENOMEM;
	done = want + words;
	pthread_mutex_lock(&r->mu);
	st = heca__stripe_find_locked(r, seg, idx);
	ts = st ? slot_of(st, to) : -1;
	if (!st || st->copying || st->n == 0 || (ts < 0 && st->n >= MAX_R) ||
	    (ts >= 0 && !stale_row(r, st, (unsigned int)ts))) {
		pthread_mutex_unlock(&r->mu);
		free(want);
		return -EAGAIN;
	}
	st->copying = true;
	st->target = (uint8_t)to;
	r->moving++;
	/* Writes sent before the copy started must land before it reads. */
	while (st->inflight)
		pthread_cond_wait(&r->cond, &r->mu);
	ts = slot_of(st, to);
	for (size_t w = 0; w < words; w++) {
		want[w] = heca__stripe_current_elsewhere(r, st, w,
							 ts >= 0 ? (unsigned int)ts : MAX_R, true);
		if (ts >= 0)
			want[w] &= stale_row(r, st, (unsigned int)ts)[w];
	}
	/* The source of each page: the first up holder other than `to` with it current. */
	for (uint64_t p = 0; p < r->stripe_pages; p++) {
		src[p] = NO_MEMBER;
		if (!(want[p / 64] & (1ull << (p % 64))))
			continue;
		for (unsigned int j = 0; j < st->n && src[p] == NO_MEMBER; j++)
			if ((int)j != ts && mstate(r->m[st->holder[j]]) == M_UP &&
			    heca__stripe_range_current(r, st, j, p, 1))
				src[p] = st->holder[j];
	}
	pthread_mutex_unlock(&r->mu);

	for (uint64_t p = 0; p < r->stripe_pages && !rc;) {
		uint64_t q;
		unsigned int from = src[p];
		struct heca_frame req, rep;
		if (!(want[p / 64] & (1ull << (p % 64))) || from == NO_MEMBER) {
			p++;
			continue;
		}
		for (q = p; q < r->stripe_pages && (want[q / 64] & (1ull << (q % 64))) &&
			    src[q] == from && q - p < HECA_WIRE_MAX_PAGES;
		     q++)
			;
		req = (struct heca_frame){.opcode = HECA_OP_READ, .segment = seg,
					  .page = base + p, .count = (uint32_t)(q - p)};
		rc = heca__ctl_call(r, r->m[from], &req, &rep, buf, buflen,
				    (int)r->base.h->opt.timeout_ms);
		if (rc) {
			if (conn_error(rc))
				heca__member_down(r, r->m[from], rc);
			break;
		}
		req = (struct heca_frame){.opcode = HECA_OP_WRITE, .segment = seg,
					  .page = base + p, .count = (uint32_t)(q - p),
					  .payload = buf + HECA_WIRE_HDR,
					  .payload_len = (uint32_t)(q - p) * HECA_WIRE_PAGE};
		{
			/* The reply lands in the same buffer after the request left it. */
			uint8_t small[256];
			struct heca_frame rep2;
			rc = heca__ctl_call(r, r->m[to], &req, &rep2, small, sizeof(small),
					    (int)r->base.h->opt.timeout_ms);
		}
		if (rc) {
			if (rc == -ENOSPC) {
				pthread_mutex_lock(&r->mu);
				heca__member_full_locked(r, r->m[to]);
				pthread_mutex_unlock(&r->mu);
			} else if (conn_error(rc)) {
				heca__member_down(r, r->m[to], rc);
			}
			break;
		}
		for (uint64_t k = p; k < q; k++)
			done[k / 64] |= 1ull << (k % 64);
		npages += q - p;
		p = q;
	}

	pthread_mutex_lock(&r->mu);
	st = heca__stripe_find_locked(r, seg, idx);
	if (!rc && !npages && st) {
		/* Nothing copied: mending a copy made no progress (what it lacks is current only
		 * where the holder is down), and a new copy of written pages would hold none of
		 * them. Not a copy: repair goes on with its other work and tries again later. */
		bool written = false;
		for (size_t w = 0; w < words; w++)
			written |= st->bits[w] != 0;
		if (slot_of(st, to) >= 0 || written)
			rc = -EAGAIN;
	}
	if (st && rc == -EAGAIN) {
		st->target = NO_MEMBER;
		st->copying = false;
	} else if (st) {
		ts = slot_of(st, to);
		if (!rc && mstate(r->m[to]) == M_UP && st->target == to &&
		    (ts >= 0 || st->n < MAX_R)) {
			uint64_t *row;
			if (ts < 0) {
				ts = st->n++;
				st->holder[ts] = (uint8_t)to;
				r->m[to]->stripes++;
				/* What it did not get (current nowhere that was up) is stale there. */
				for (size_t w = 0; w < words; w++)
					if (st->bits[w] & ~done[w] && !st->stale)
						st->stale = calloc(MAX_R * words, 8);
				row = stale_row(r, st, (unsigned int)ts);
				for (size_t w = 0; row && w < words; w++)
					row[w] = st->bits[w] & ~done[w];
				if (!row && st->n > 1) {
					/* No memory to say what it lacks: it cannot count. */
					for (size_t w = 0; w < words; w++)
						if (st->bits[w] & ~done[w]) {
							heca__stripe_drop_holder_locked(r, st, to);
							rc = -ENOMEM;
							break;
						}
				}
			} else if ((row = stale_row(r, st, (unsigned int)ts))) {
				for (size_t w = 0; w < words; w++)
					row[w] &= ~done[w];
			}
			if (!rc) {
				r->copied_stripes++;
				r->copied_pages += npages;
			}
		} else if (!rc) {
			rc = -EAGAIN;
		}
		st->target = NO_MEMBER;
		st->copying = false;
	}
	r->moving--;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->mu);
	free(want);
	return rc;
}

/*
 * The holder of st that can go with least loss: a copy that is not good (down, draining,
 * missing pages), else the one the placement likes least; never the last good copy, and only
 * while good copies are enough. NO_MEMBER if none should go. Caller holds r->mu.
 */
static unsigned int pick_drop_locked(struct remote *r, struct stripe *st,
				     const unsigned int *order)
{
	unsigned int good = heca__stripe_good_count_locked(r, st), bad = NO_MEMBER;

	/* With too few good copies a bad one still goes when the stripe has no slot left for a
	 * new copy. */
	if (good < r->replicas && !(good >= 1 && st->n >= MAX_R))
		return NO_MEMBER;
	for (unsigned int i = 0; i < st->n; i++)
		if (!heca__stripe_good_locked(r, st, i) &&
		    (bad == NO_MEMBER || mstate(r->m[st->holder[i]]) != M_UP))
			bad = st->holder[i];
	if (bad != NO_MEMBER)
		return good >= 1 ? bad : NO_MEMBER;
	if (st->n <= r->replicas || st->n < 2)
		return NO_MEMBER;
	for (unsigned int i = r->nm; i-- > 0;)
		if (slot_of(st, order[i]) >= 0)
			return order[i];
	return NO_MEMBER;
}

/* Let member mi go as a holder of st, and have it free its pages of the stripe (now, or when
 * it is back). Caller holds r->mu; returns whether a DISCARD is to be sent now. */
static bool drop_copy_locked(struct remote *r, struct stripe *st, unsigned int mi)
{
	struct member *m = r->m[mi];

	heca__stripe_drop_holder_locked(r, st, mi);
	if (mstate(m) == M_UP)
		return true;
	if (!m->gone)
		heca__member_miss_locked(m, HECA_OP_DISCARD, st->seg, st->idx * r->stripe_pages,
					 r->stripe_pages);
	return false;
}

/* One pass over the stripes: restore R good copies (in place on a holder that misses pages
 * and has room, else on a new member), move copies off draining and full members, drop the
 * copies that are no longer needed, and move stripes to the members the placement prefers
 * (after a member joined). Returns the number of copies made. */
static unsigned int repair_pass(struct remote *r, uint8_t *buf, size_t buflen)
{
	unsigned int made = 0;

	for (unsigned int b = 0; b < STRIPE_BUCKETS && !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE); b++) {
		for (;;) {
			struct stripe *st;
			uint32_t seg = 0;
			uint64_t idx = 0;
			unsigned int to = NO_MEMBER, drop = NO_MEMBER, order[HECA_PLACE_MAX];
			bool found = false, discard = false;

			pthread_mutex_lock(&r->mu);
			for (st = r->st[b]; st && !found; st = st->next) {
				if (st->n == 0 || st->copying || st->inflight)
					continue;
				heca__stripe_rank_locked(r, st->seg, st->idx, order);
				to = NO_MEMBER;
				drop = NO_MEMBER;
				if (heca__stripe_good_count_locked(r, st) < r->replicas) {
					/* Too few good copies: mend one that misses pages, where
					 * its sponsor has room, else the best member without one. */
					for (unsigned int i = 0; i < st->n && to == NO_MEMBER; i++)
						if (eligible(r->m[st->holder[i]]) &&
						    !heca__stripe_good_locked(r, st, i) &&
						    heca__stripe_mendable_locked(r, st, i))
							to = st->holder[i];
					for (unsigned int i = 0;
					     i < r->nm && to == NO_MEMBER && st->n < MAX_R; i++)
						if (eligible(r->m[order[i]]) &&
						    slot_of(st, order[i]) < 0)
							to = order[i];
					if (to == NO_MEMBER)
						drop = pick_drop_locked(r, st, order);
				} else if ((drop = pick_drop_locked(r, st, order)) == NO_MEMBER) {
					/* As many good copies as wanted: move one to a member the
					 * placement prefers (one that joined or came back). */
					for (unsigned int i = 0; i < r->replicas && i < r->nm; i++) {
						if (!eligible(r->m[order[i]]))
							break;
						if (slot_of(st, order[i]) < 0 && st->n < MAX_R) {
							to = order[i];
							break;
						}
					}
				}
				if (to != NO_MEMBER || drop != NO_MEMBER) {
					found = true;
					seg = st->seg;
					idx = st->idx;
					if (to == NO_MEMBER)
						discard = drop_copy_locked(r, st, drop);
				}
			}
			pthread_mutex_unlock(&r->mu);
			if (!found)
				break;
			if (discard)
				heca__ctl_all_one(r, r->m[drop], HECA_OP_DISCARD, seg,
						  idx * r->stripe_pages, (uint32_t)r->stripe_pages);
			if (to == NO_MEMBER)
				continue;
			if (copy_stripe(r, seg, idx, to, buf, buflen) != 0)
				break; /* try again on the next pass */
			made++;
			heca__room_made(r);
			/* A copy was added or mended: one that is no longer needed goes. */
			pthread_mutex_lock(&r->mu);
			st = heca__stripe_find_locked(r, seg, idx);
			drop = NO_MEMBER;
			discard = false;
			if (st && !st->copying && !st->inflight) {
				heca__stripe_rank_locked(r, seg, idx, order);
				drop = pick_drop_locked(r, st, order);
				if (drop != NO_MEMBER)
					discard = drop_copy_locked(r, st, drop);
			}
			pthread_mutex_unlock(&r->mu);
			if (discard)
				heca__ctl_all_one(r, r->m[drop], HECA_OP_DISCARD, seg,
						  idx * r->stripe_pages, (uint32_t)r->stripe_pages);
		}
	}
	return made;
}

static void *repair_main(void *arg)
{
	struct remote *r = arg;
	size_t buflen = HECA_WIRE_HDR + HECA_WIRE_MAX_PAYLOAD + 4096;
	uint8_t *buf;
	sigset_t all;

	heca__internal = 1;
	buf = malloc(buflen);
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	if (!buf)
		return NULL;
	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		uint64_t now;
		unsigned int nm = __atomic_load_n(&r->nm, __ATOMIC_ACQUIRE);

		pthread_mutex_lock(&r->mu);
		while (r->paused && !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE))
			pthread_cond_wait(&r->repair_cond, &r->mu);
		r->busy = true;
		pthread_mutex_unlock(&r->mu);
		now = heca__now_ns();

		for (unsigned int i = 0; i < nm && !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE); i++) {
			struct member *m = r->m[i];
			uint64_t next_try, down_since;
			pthread_mutex_lock(&r->mu);
			next_try = m->next_try_ns;
			down_since = m->down_since_ns;
			/* Down past the grace period: reads of what only it holds fail from now
			 * on, and the others' copies are the ones that count; if it comes back
			 * with our pages they are readable again. */
			if (mstate(m) == M_DOWN && !m->gone && !m->given_up && down_since &&
			    now - down_since > r->base.h->opt.grace_ms * 1000000ull) {
				m->given_up = true;
				heca__log(r->base.h, HECA_LOG_ERROR,
					  "sponsor %s did not answer for %u s: pages only it holds "
					  "are lost unless it comes back with them",
					  m->addr, r->base.h->opt.grace_ms / 1000);
			}
			pthread_mutex_unlock(&r->mu);
			/* Idle connections get a heartbeat; busy ones one a second anyway, which
			 * keeps the sponsor's capacity figures fresh. */
			if (mstate(m) == M_UP &&
			    (now - __atomic_load_n(&m->last_ok_ns, __ATOMIC_RELAXED) >
				     HB_MS * 1000000ull ||
			     now - m->last_hb_ns > STAT_MS * 1000000ull))
				heca__member_heartbeat(r, m);
			else if (mstate(m) == M_DOWN && now >= next_try)
				heca__member_reconnect(r, m);
		}
		repair_pass(r, buf, buflen);
		/* Drained members end up holding nothing: free what they still store of ours. */
		for (unsigned int i = 0; i < nm; i++) {
			struct member *m = r->m[i];
			bool empty;
			pthread_mutex_lock(&r->mu);
			empty = m->draining && m->stripes == 0 && !m->emptied && mstate(m) == M_UP;
			pthread_mutex_unlock(&r->mu);
			if (!empty)
				continue;
			struct segrec sr;
			for (unsigned int k = 0; heca__remote_seg_at(r, k, &sr); k++)
				heca__ctl_simple(r, m, HECA_OP_FREE, sr.seg, 0);
			m->emptied = true;
			heca__log(r->base.h, HECA_LOG_INFO, "sponsor %s drained: it holds nothing",
				  m->addr);
		}
		pthread_mutex_lock(&r->mu);
		r->busy = false;
		pthread_cond_broadcast(&r->repair_cond);
		if (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE))
			heca__cond_wait_ms(&r->repair_cond, &r->mu, 100);
		pthread_mutex_unlock(&r->mu);
	}
	free(buf);
	return NULL;
}

/* ---- membership ---- */

static int member_open(struct remote *r, const char *addr, struct member **out)
{
	struct member *m;
	enum heca_channel ch[4] = {HECA_CHAN_CONTROL, HECA_CHAN_FAULT, HECA_CHAN_PREFETCH,
				   HECA_CHAN_BULK};
	int rc;

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	snprintf(m->addr, sizeof(m->addr), "%s", addr);
	m->session = 1;
	struct conn *cs[4] = {&m->ctl, &m->fault, &m->prefetch, &m->bulk};
	for (int k = 0; k < 4; k++) {
		m->fresh[k] = -1;
		if ((rc = heca__conn_init(cs[k], m, ch[k])))
			goto fail;
	}
	for (int k = 0; k < 4; k++) {
		rc = heca__dial(r, m, ch[k]);
		if (rc < 0) {
			m->auth_said = rc == -EACCES; /* said by the caller; not again */
			if (rc == -EACCES)
				heca__set_error("sponsor %s: %s", addr,
						r->keylen ? "authentication failed: wrong cluster, "
							    "wrong key, or a sponsor that does not "
							    "ask for one"
							  : "it requires a cluster key (key_file)");
			else
				heca__set_error("sponsor %s: %s", addr, heca_strerror(rc));
			/* Not reachable now: kept as a member that is down, tried again with
			 * backoff like one that went away. */
			for (int j = 0; j < k; j++) {
				close(cs[j]->fd);
				cs[j]->fd = -1;
			}
			set_mstate(m, M_DOWN);
			m->backoff_ms = 100;
			m->next_try_ns = heca__now_ns() + m->backoff_ms * 1000000ull;
			*out = m;
			return rc;
		}
		cs[k]->fd = rc;
	}
	m->last_hb_ns = heca__now_ns(); /* HELLO told its capacity just now */
	__atomic_store_n(&m->last_ok_ns, m->last_hb_ns, __ATOMIC_RELAXED);
	*out = m;
	return 0;
fail:
	for (int k = 0; k < 4; k++)
		heca__conn_exit(r, cs[k]);
	free(m);
	return rc;
}

static void member_start(struct remote *r, struct member *m)
{
	heca__conn_watch(r, &m->fault);
	heca__conn_watch(r, &m->prefetch);
	heca__conn_watch(r, &m->bulk);
}

static int remote_add_member(struct heca_store *s, const char *addr)
{
	struct remote *r = (struct remote *)s;
	struct member *m;
	int rc;

	for (unsigned int i = 0; i < __atomic_load_n(&r->nm, __ATOMIC_ACQUIRE); i++)
		if (!strcmp(r->m[i]->addr, addr))
			return -EEXIST;
	if (r->nm >= HECA_PLACE_MAX)
		return -ENOSPC;
	m = NULL;
	rc = member_open(r, addr, &m);
	if (rc) {
		if (m) {
			struct conn *cs[4] = {&m->ctl, &m->fault, &m->prefetch, &m->bulk};
			for (int k = 0; k < 4; k++)
				heca__conn_exit(r, cs[k]);
			free(m);
		}
		return rc;
	}
	for (unsigned int i = 0; i < r->nsegs; i++)
		heca__ctl_simple(r, m, HECA_OP_ALLOC, r->segs[i].seg, r->segs[i].npages);
	pthread_mutex_lock(&r->mu);
	m->idx = r->nm;
	r->m[r->nm] = m;
	__atomic_store_n(&r->nm, r->nm + 1, __ATOMIC_RELEASE);
	member_start(r, m);
	pthread_cond_broadcast(&r->repair_cond);
	pthread_mutex_unlock(&r->mu);
	heca__log(s->h, HECA_LOG_INFO, "sponsor %s added", addr);
	return 0;
}

static void hex_id(const uint8_t id[16], char out[33])
{
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", id[i]);
}

static int remote_drain_member(struct heca_store *s, const char *who)
{
	struct remote *r = (struct remote *)s;
	int rc = -ENOENT;

	pthread_mutex_lock(&r->mu);
	for (unsigned int i = 0; i < r->nm; i++) {
		char hex[33];
		hex_id(r->m[i]->id, hex);
		if (!strcmp(r->m[i]->addr, who) || !strcasecmp(hex, who)) {
			r->m[i]->draining = true;
			rc = 0;
		}
	}
	pthread_cond_broadcast(&r->repair_cond);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static int remote_members(struct heca_store *s, struct heca_sponsor_info *out, unsigned int max)
{
	struct remote *r = (struct remote *)s;
	unsigned int n;

	pthread_mutex_lock(&r->mu);
	n = r->nm;
	for (unsigned int i = 0; i < n && i < max; i++) {
		struct member *m = r->m[i];
		memset(&out[i], 0, sizeof(out[i]));
		snprintf(out[i].addr, sizeof(out[i].addr), "%s", m->addr);
		memcpy(out[i].id, m->id, 16);
		out[i].up = mstate(m) == M_UP;
		out[i].draining = m->draining;
		out[i].capacity_pages = m->capacity_pages;
		out[i].used_pages = m->used_pages;
		out[i].stripes = m->stripes;
	}
	pthread_mutex_unlock(&r->mu);
	return (int)n;
}

static void remote_cluster_stats(struct heca_store *s, struct heca_cluster_stats *o)
{
	struct remote *r = (struct remote *)s;

	memset(o, 0, sizeof(*o));
	pthread_mutex_lock(&r->mu);
	for (unsigned int b = 0; b < STRIPE_BUCKETS; b++)
		for (struct stripe *st = r->st[b]; st; st = st->next) {
			o->stripes++;
			if (st->n == 0)
				o->lost++;
			else if (heca__stripe_good_count_locked(r, st) < r->replicas)
				o->under_replicated++;
		}
	o->moving = r->moving;
	o->copied_stripes = r->copied_stripes;
	o->copied_pages = r->copied_pages;
	o->replicas = r->replicas;
	o->sponsors = r->nm;
	for (unsigned int i = 0; i < r->nm; i++)
		o->sponsors_up += mstate(r->m[i]) == M_UP;
	pthread_mutex_unlock(&r->mu);
}

static uint64_t remote_free_pages(struct heca_store *s)
{
	struct remote *r = (struct remote *)s;
	uint64_t free_pages = 0;

	pthread_mutex_lock(&r->mu);
	for (unsigned int i = 0; i < r->nm; i++) {
		struct member *m = r->m[i];
		if (mstate(m) == M_UP && !m->draining && m->capacity_pages > m->used_pages)
			free_pages += m->capacity_pages - m->used_pages;
	}
	pthread_mutex_unlock(&r->mu);
	return free_pages / (r->replicas ? r->replicas : 1);
}

static void remote_close(struct heca_store *s)
{
	struct remote *r = (struct remote *)s;
	if (!r)
		return;
	if (r->repair_started) {
		pthread_mutex_lock(&r->mu);
		__atomic_store_n(&r->stop, true, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&r->repair_cond);
		pthread_cond_broadcast(&r->cond);
		pthread_mutex_unlock(&r->mu);
		pthread_join(r->repair, NULL);
	}
	/* Requests still queued (the engine is gone): free their ops, once each. */
	for (unsigned int i = 0; i < r->nm; i++) {
		struct conn *cs[3] = {&r->m[i]->fault, &r->m[i]->prefetch, &r->m[i]->bulk};
		for (int k = 0; k < 3; k++)
			for (uint32_t q = cs[k]->qhead; cs[k]->q && q != cs[k]->qtail; q++) {
				struct op *o = cs[k]->q[q & (cs[k]->qcap - 1)].o;
				if (o->read || --o->outstanding == 0)
					free(o);
			}
	}
	while (r->parked) {
		struct op *o = r->parked;
		r->parked = o->next;
		free(o);
	}
	heca__auth_wipe(r->key, sizeof(r->key));
	for (unsigned int i = 0; i < r->nm; i++) {
		struct member *m = r->m[i];
		free(m->missed);
		heca__conn_exit(r, &m->ctl);
		heca__conn_exit(r, &m->fault);
		heca__conn_exit(r, &m->prefetch);
		heca__conn_exit(r, &m->bulk);
		for (int k = 0; k < 4; k++)
			if (m->fresh[k] >= 0)
				close(m->fresh[k]);
		free(m);
	}
	for (unsigned int b = 0; b < STRIPE_BUCKETS; b++)
		while (r->st[b]) {
			struct stripe *st = r->st[b];
			r->st[b] = st->next;
			free(st->stale);
			free(st);
		}
	free(r->segs);
	free(r);
}

static const struct heca_store_ops remote_ops = {
	.name = "remote",
	.read = heca__remote_read,
	.write = heca__remote_write,
	.alloc = remote_alloc,
	.release = remote_release,
	.discard = remote_discard,
	.resize = remote_resize,
	.fork_pause = remote_fork_pause,
	.fork_prepare = remote_fork_prepare,
	.fork_child = remote_fork_child,
	.fork_resume = remote_fork_resume,
	.drop_all = remote_drop_all,
	.dispatch = heca__remote_dispatch,
	.tick = heca__remote_tick,
	.close = remote_close,
	.add_member = remote_add_member,
	.drain_member = remote_drain_member,
	.members = remote_members,
	.cluster_stats = remote_cluster_stats,
	.free_pages = remote_free_pages,
};

int heca__store_remote_open(struct heca *h, const char *sponsors, struct heca_store **out)
{
	struct remote *r;
	char *list, *save = NULL, *tok, first_why[512] = "";
	unsigned int up = 0;
	int rc = 0, first_err = 0;

	if (!sponsors || !*sponsors) {
		heca__set_error("no sponsors given (a list of HOST:PORT)");
		return -EINVAL;
	}
	r = calloc(1, sizeof(*r));
	list = strdup(sponsors);
	if (!r || !list) {
		free(r);
		free(list);
		return -ENOMEM;
	}
	r->base.ops = &remote_ops;
	r->base.h = h;
	r->stripe_pages = h->opt.stripe_pages;
	pthread_mutex_init(&r->mu, NULL);
	pthread_mutex_init(&r->resize_mu, NULL);
	pthread_cond_init(&r->cond, NULL);
	pthread_cond_init(&r->repair_cond, NULL);
	if (h->opt.key_file) {
		char why[256];
		rc = heca__auth_load_key(h->opt.key_file, r->key, &r->keylen, why, sizeof(why));
		if (rc) {
			heca__set_error("%s", why);
			goto fail;
		}
	}
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct member *m = NULL;
		while (*tok == ' ')
			tok++;
		if (!*tok)
			continue;
		if (r->nm == HECA_PLACE_MAX) {
			heca__set_error("more than %d sponsors", HECA_PLACE_MAX);
			rc = -E2BIG;
			goto fail;
		}
		rc = member_open(r, tok, &m);
		if (rc && !m)
			goto fail;
		if (rc) {
			if (!first_err) {
				first_err = rc;
				snprintf(first_why, sizeof(first_why), "%s", heca_last_error());
			}
			/* Said now, whether or not the others answer: a sponsor refused for a wrong
			 * key is a configuration error, not a detail. */
			heca__log(h, rc == -EACCES ? HECA_LOG_ERROR : HECA_LOG_WARN,
				  "%s; going on without it, tried again in the background",
				  heca_last_error());
		} else {
			up++;
		}
		m->idx = r->nm;
		r->m[r->nm++] = m;
	}
	if (r->nm == 0) {
		heca__set_error("no sponsors given (a list of HOST:PORT)");
		rc = -EINVAL;
		goto fail;
	}
	if (up == 0) {
		/* None can be reached: say so now rather than fault for ever. */
		heca__set_error("%s%s", first_why,
				r->nm > 1 ? " (and no other sponsor answered either)" : "");
		rc = first_err;
		goto fail;
	}
	for (unsigned int i = 0; i < r->nm; i++)
		for (unsigned int k = i + 1; k < r->nm; k++)
			if (mstate(r->m[i]) == M_UP && mstate(r->m[k]) == M_UP &&
			    !memcmp(r->m[i]->id, r->m[k]->id, 16)) {
				heca__set_error("sponsors %s and %s are the same sponsor",
						r->m[i]->addr, r->m[k]->addr);
				rc = -EINVAL;
				goto fail;
			}
	r->replicas = h->opt.replicas ? h->opt.replicas : (up >= 2 ? 2 : 1);
	if (r->replicas > MAX_R || r->replicas > r->nm) {
		heca__set_error("%u replicas wanted but %s", r->replicas,
				r->replicas > MAX_R ? "at most 4 are supported"
						    : "fewer sponsors were given");
		rc = -EINVAL;
		goto fail;
	}
	for (unsigned int i = 0; i < r->nm; i++)
		member_start(r, r->m[i]);
	free(list);
	rc = -pthread_create(&r->repair, NULL, repair_main, r);
	if (rc) {
		remote_close(&r->base);
		return rc;
	}
	r->repair_started = true;
	*out = &r->base;
	return 0;
fail:
	free(list);
	remote_close(&r->base);
	return rc;
}
