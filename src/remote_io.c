// SPDX-License-Identifier: MIT
/*
 * remote_io.c - the remote store's reads and writes: a read goes to the fastest current copy
 * and fails over (or parks while its holders are down), a write to every copy; replies are
 * decoded and completed on the engine thread, which also fails requests past their deadline.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "heca_int.h"
#include "remote_int.h"
#include "util.h"
#include "wire.h"

/* ---- completions ---- */

static int read_issue(struct remote *r, struct op *o, bool first);

static void op_done_read(struct remote *r, struct op *o, struct member *m, uint64_t sent,
			 int status, const uint8_t *data)
{
	struct heca_store *s = &r->base;

	if (!status) {
		uint64_t rtt = heca__now_ns() - sent;
		m->rtt_ns = m->rtt_ns ? (m->rtt_ns * 7 + rtt) / 8 : rtt;
		if (o->prio == HECA_PRIO_FAULT) {
			/* Per-stage time of demand fetches: request sent to reply decoded. */
			heca__count(&s->h->c.fetch_net_ns, rtt);
			heca__count(&s->h->c.fetch_net_count, 1);
		}
		s->read_done(s->arg, o->cookie, 0, o->seg, o->page, o->count, data);
		free(o);
		return;
	}
	/* Another copy may serve it: the application sees only the latency. A connection that
	 * failed says nothing about the pages: the sponsor may be asked again once it is back. */
	o->err = status;
	if (conn_error(status))
		o->tried &= ~(1ull << m->idx);
	read_issue(r, o, false);
}

static void op_done_write(struct remote *r, struct op *o, struct member *m, int status)
{
	struct heca_store *s = &r->base;
	struct stripe *st;
	bool done;

	pthread_mutex_lock(&r->mu);
	st = heca__stripe_find_locked(r, o->seg, o->page / r->stripe_pages);
	if (!m) {
		/* The sender's own reference: the data may be freed only after every send. */
	} else if (!status) {
		o->ok++;
		if (st) {
			for (uint32_t i = 0; i < o->count; i++) {
				uint64_t b = (o->page + i) % r->stripe_pages;
				st->bits[b / 64] |= 1ull << (b % 64);
			}
			heca__stripe_set_stale_locked(r, st, m->idx, o->page % r->stripe_pages,
						      o->count, false);
		}
	} else {
		if (!o->err)
			o->err = status;
		if (status == -ENOSPC)
			heca__member_full_locked(r, m);
		/* Its copy of these pages is not current now (a refused write changes nothing
		 * there, a failed one may or may not have landed); what else it holds still is. */
		if (st)
			heca__stripe_set_stale_locked(r, st, m->idx, o->page % r->stripe_pages,
						      o->count, true);
		if (st && st->target == m->idx)
			st->target = NO_MEMBER;
	}
	done = --o->outstanding == 0;
	if (done && st) {
		st->inflight--;
		pthread_cond_broadcast(&r->cond);
	}
	pthread_mutex_unlock(&r->mu);
	if (done) {
		s->write_done(s->arg, o->cookie, o->ok ? 0 : (o->err ? o->err : -EIO), o->seg,
			      o->page, o->count);
		free(o);
	}
}

static void complete(struct remote *r, struct conn *c, const struct pending *p, int status,
		     const uint8_t *data)
{
	if (p->op == HECA_OP_READ)
		op_done_read(r, p->o, c->m, p->sent_ns, status, data);
	else if (p->op == HECA_OP_WRITE)
		op_done_write(r, p->o, c->m, status);
}

/* Fail everything queued on c. */
static void conn_fail_queue(struct remote *r, struct conn *c, int err)
{
	for (;;) {
		struct pending p;
		pthread_mutex_lock(&c->mu);
		c->broken = true;
		if (c->qhead == c->qtail) {
			pthread_mutex_unlock(&c->mu);
			break;
		}
		p = c->q[c->qhead++ & (c->qcap - 1)];
		pthread_mutex_unlock(&c->mu);
		complete(r, c, &p, err, NULL);
	}
}

static void conn_fail(struct remote *r, struct conn *c, int err)
{
	heca__member_down(r, c->m, err);
	conn_fail_queue(r, c, err);
	c->rlen = 0;
}

void heca__remote_dispatch(struct heca_store *s, void *ctx)
{
	struct remote *r = (struct remote *)s;
	struct conn *c = ctx;
	size_t off = 0;
	ssize_t n;

	if (!c->rbuf || c->fd < 0)
		return;
	if (c->out_armed)
		heca__conn_flush(r, c);
	n = recv(c->fd, c->rbuf + c->rlen, RBUF_SZ - c->rlen, MSG_DONTWAIT);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		/* Keep the fd open but idle until the engine swaps in a new one: closing it
		 * here would let a new socket reuse the number while it is still watched. */
		if (c->watched) {
			epoll_ctl(s->h->epfd, EPOLL_CTL_DEL, c->fd, NULL);
			c->watched = false;
		}
		conn_fail(r, c, n == 0 ? -ECONNRESET : -errno);
		return;
	}
	if (n < 0)
		return;
	heca__count(&s->h->c.bytes_received, (uint64_t)n);
	c->rlen += (size_t)n;
	for (;;) {
		struct heca_frame f;
		struct pending p;
		int len = heca_wire_decode(c->rbuf + off, c->rlen - off, &f);
		if (len == -EAGAIN)
			break;
		if (len < 0 || f.opcode == HECA_OP_ERROR) {
			conn_fail(r, c, len < 0 ? len : (f.status ? -f.status : -EPROTO));
			return;
		}
		pthread_mutex_lock(&c->mu);
		if (c->qhead == c->qtail || c->q[c->qhead & (c->qcap - 1)].req_id != f.req_id) {
			pthread_mutex_unlock(&c->mu);
			conn_fail(r, c, -EPROTO);
			return;
		}
		p = c->q[c->qhead++ & (c->qcap - 1)];
		pthread_mutex_unlock(&c->mu);
		__atomic_store_n(&c->m->last_ok_ns, heca__now_ns(), __ATOMIC_RELAXED);
		complete(r, c, &p, f.status ? -f.status : 0, f.payload);
		off += (size_t)len;
	}
	if (off) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
}

/* Engine thread: issue the parked reads again; those whose holders are still down park again,
 * those whose every holder is gone fail. */
static void unpark(struct remote *r)
{
	struct op *o;

	pthread_mutex_lock(&r->mu);
	o = r->parked;
	__atomic_store_n(&r->parked, NULL, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&r->mu);
	while (o) {
		struct op *next = o->next;
		read_issue(r, o, false);
		o = next;
	}
}

/* Engine thread: swap reconnected sockets in (only the engine reads these connections, so
 * only it may change their fds), fail requests past their deadline, retry parked reads. */
void heca__remote_tick(struct heca_store *s, uint64_t now)
{
	struct remote *r = (struct remote *)s;
	unsigned int nm = __atomic_load_n(&r->nm, __ATOMIC_ACQUIRE);

	if (__atomic_load_n(&r->parked, __ATOMIC_RELAXED))
		unpark(r);

	for (unsigned int i = 0; i < nm; i++) {
		struct member *m = r->m[i];
		struct conn *cs[4] = {&m->ctl, &m->fault, &m->prefetch, &m->bulk};

		if (__atomic_load_n(&m->swap_ready, __ATOMIC_ACQUIRE)) {
			for (int k = 0; k < 4; k++) {
				struct conn *c = cs[k];
				conn_fail_queue(r, c, -ECONNRESET);
				pthread_mutex_lock(&c->smu);
				if (c->watched)
					epoll_ctl(s->h->epfd, EPOLL_CTL_DEL, c->fd, NULL);
				c->watched = false;
				if (c->fd >= 0)
					close(c->fd);
				c->fd = m->fresh[k];
				m->fresh[k] = -1;
				c->rlen = 0;
				c->out.len = 0;
				c->out_armed = false;
				pthread_mutex_lock(&c->mu);
				c->broken = false;
				pthread_mutex_unlock(&c->mu);
				heca__conn_watch(r, c);
				pthread_mutex_unlock(&c->smu);
			}
			__atomic_store_n(&m->swap_ready, false, __ATOMIC_RELEASE);
			pthread_mutex_lock(&r->mu);
			pthread_cond_broadcast(&r->repair_cond);
			pthread_mutex_unlock(&r->mu);
			continue;
		}
		for (int k = 1; k < 4; k++) {
			struct conn *c = cs[k];
			bool late;
			/* Slow answers only steer reads elsewhere (read_issue); a sponsor is called
			 * dead by a missed heartbeat, a broken connection, or a request older than
			 * timeout_ms. A busy machine must not look like a dead sponsor. */
			pthread_mutex_lock(&c->mu);
			late = c->qhead != c->qtail && c->q[c->qhead & (c->qcap - 1)].deadline < now;
			pthread_mutex_unlock(&c->mu);
			if (late && c->watched) {
				/* The answer may be waiting in the socket while the engine was busy:
				 * read it before calling the sponsor dead. */
				heca__remote_dispatch(s, c);
				pthread_mutex_lock(&c->mu);
				late = c->qhead != c->qtail &&
				       c->q[c->qhead & (c->qcap - 1)].deadline < now;
				pthread_mutex_unlock(&c->mu);
			}
			if (late) {
				if (c->watched) {
					epoll_ctl(s->h->epfd, EPOLL_CTL_DEL, c->fd, NULL);
					c->watched = false;
				}
				conn_fail(r, c, -ETIMEDOUT);
			}
		}
	}
}

/* ---- reads and writes ---- */

/* How long the oldest request queued on c has waited, 0 if none. */
static uint64_t oldest_wait(struct conn *c, uint64_t now)
{
	uint64_t w = 0;
	pthread_mutex_lock(&c->mu);
	if (c->q && c->qhead != c->qtail)
		w = now - c->q[c->qhead & (c->qcap - 1)].sent_ns;
	pthread_mutex_unlock(&c->mu);
	return w;
}

/*
 * Send o to the fastest up member holding a current copy of its pages that was not tried yet.
 * When none is up but a holder that is down may come back, o is parked: heca__remote_tick()
 * issues it again. When none is left: the first time (from heca__remote_read(), on the engine
 * with h->lock held) return the error for the caller to handle; on a retry (from a completion
 * or the tick, no lock held) fail o through read_done. Called without r->mu.
 */
static int read_issue(struct remote *r, struct op *o, bool first)
{
	struct heca_store *s = &r->base;
	for (;;) {
		struct member *best = NULL;
		struct stripe *st;
		struct heca_frame f = {.opcode = HECA_OP_READ, .segment = o->seg, .page = o->page,
				       .count = o->count};
		bool wait = false;

		pthread_mutex_lock(&r->mu);
		st = heca__stripe_find_locked(r, o->seg, o->page / r->stripe_pages);
		uint64_t best_cost = 0, now = heca__now_ns();
		for (unsigned int i = 0; st && i < st->n; i++) {
			struct member *m = r->m[st->holder[i]];
			uint64_t cost;
			if ((o->tried & (1ull << m->idx)) ||
			    !heca__stripe_range_current(r, st, i, o->page % r->stripe_pages,
							o->count))
				continue;
			if (mstate(m) != M_UP) {
				wait |= !m->given_up;
				continue;
			}
			/* The recent round trip, or how long its oldest request has waited if that
			 * is longer: a sponsor that stopped answering stops looking fast. */
			cost = HECA_MAX(m->rtt_ns, oldest_wait(&m->fault, now));
			cost = HECA_MAX(cost, oldest_wait(&m->prefetch, now));
			if (!best || cost < best_cost) {
				best = m;
				best_cost = cost;
			}
		}
		if (best) {
			o->tried |= 1ull << best->idx;
		} else if (wait && !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
			o->next = r->parked;
			__atomic_store_n(&r->parked, o, __ATOMIC_RELAXED);
			pthread_mutex_unlock(&r->mu);
			return 0;
		}
		pthread_mutex_unlock(&r->mu);
		if (!best) {
			int err = o->err ? o->err : (st ? -ENOTCONN : -ENOENT);
			if (first) {
				free(o);
				return err;
			}
			s->read_done(s->arg, o->cookie, err, o->seg, o->page, o->count, NULL);
			free(o);
			return 0;
		}
		if (heca__conn_request(r, o->prio == HECA_PRIO_FAULT ? &best->fault
								    : &best->prefetch,
				       &f, o) == 0)
			return 0;
	}
}

int heca__remote_read(struct heca_store *s, enum heca_prio prio, uint32_t seg, uint64_t page,
		      uint32_t count, uint64_t cookie)
{
	struct remote *r = (struct remote *)s;
	struct op *o = calloc(1, sizeof(*o));

	if (!o)
		return -ENOMEM;
	*o = (struct op){.read = true, .prio = prio, .seg = seg, .page = page, .count = count,
			 .cookie = cookie};
	return read_issue(r, o, true);
}

int heca__remote_write(struct heca_store *s, uint32_t seg, uint64_t page, uint32_t count,
		       const uint8_t *data, uint64_t cookie)
{
	struct remote *r = (struct remote *)s;
	struct heca_frame f = {.opcode = HECA_OP_WRITE, .segment = seg, .page = page,
			       .count = count, .payload = data,
			       .payload_len = count * HECA_WIRE_PAGE};
	uint8_t targets[MAX_R + 1];
	unsigned int nt = 0;
	struct stripe *st;
	struct op *o = calloc(1, sizeof(*o));

	if (!o)
		return -ENOMEM;
	*o = (struct op){.seg = seg, .page = page, .count = count, .cookie = cookie};
	pthread_mutex_lock(&r->mu);
	for (;;) {
		st = heca__stripe_get_locked(r, seg, page / r->stripe_pages);
		if (!st || !st->copying)
			break;
		pthread_cond_wait(&r->cond, &r->mu); /* a copy of this stripe is under way */
	}
	if (!st) {
		pthread_mutex_unlock(&r->mu);
		free(o);
		return -ENOSPC; /* no sponsor can take it: the page stays here */
	}
	for (unsigned int i = 0; i < st->n; i++)
		targets[nt++] = st->holder[i];
	if (st->target != NO_MEMBER)
		targets[nt++] = st->target;
	st->inflight++;
	/* One reference per copy and one for this thread: a copy that fails while another is
	 * still being sent must not complete the write (and free its data) under the sender. */
	o->outstanding = nt + 1;
	pthread_mutex_unlock(&r->mu);
	for (unsigned int i = 0; i < nt; i++) {
		struct member *m = r->m[targets[i]];
		int rc = heca__conn_request(r, &m->bulk, &f, o);
		if (rc)
			op_done_write(r, o, m, rc);
	}
	op_done_write(r, o, NULL, 0);
	return 0;
}
