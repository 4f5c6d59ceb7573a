// SPDX-License-Identifier: MIT
/*
 * store_remote.c - the store backed by memory sponsors over TCP: stripes placed on R sponsors
 * by weighted rendezvous hashing, writes to every copy, reads from the fastest healthy one
 * with fail-over, heartbeats, reconnection with backoff, and a repair thread that restores R
 * copies, drains sponsors and moves stripes to new ones.
 *
 * Each sponsor gets four connections: control (synchronous: alloc/free, heartbeats, copies),
 * fault (demand reads only, so a 4 KiB fault never waits behind bulk data), prefetch, and
 * bulk (write-backs). Lock order: h->lock, then r->mu, then a connection's smu, then its mu;
 * no completion is called with r->mu or a connection lock held.
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
#include "segops.h"
#include "util.h"
#include "wire.h"

#define RBUF_SZ (4u << 20)
#define MAX_R 4
#define STRIPE_BUCKETS 65536
#define NO_MEMBER 0xff
#define HB_MS 250 /* heartbeat period */

enum mstate {
	M_UP = 0,      /* serving */
	M_DOWN = 1,    /* not answering; reconnect attempts with backoff */
	M_JOINING = 2, /* reconnected; its old segments are being dropped */
};

struct op;

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
};

struct segrec {
	uint32_t seg;
	uint64_t npages;
};

struct remote {
	struct heca_store base;
	pthread_mutex_t mu;
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
	pthread_t repair;
	bool repair_started, stop;
	bool paused; /* fork: the repair thread waits */
	bool busy;   /* the repair thread is at work (not waiting) */
	pthread_cond_t repair_cond;
};

static uint64_t next_req(struct remote *r)
{
	return __atomic_add_fetch(&r->next_req, 1, __ATOMIC_RELAXED);
}

static int mstate(struct member *m)
{
	return __atomic_load_n(&m->state, __ATOMIC_ACQUIRE);
}

static void set_mstate(struct member *m, int st)
{
	__atomic_store_n(&m->state, st, __ATOMIC_RELEASE);
}

/* ---- connections ---- */

static int send_frame(struct remote *r, int fd, struct heca_frame *f)
{
	uint8_t hdr[HECA_WIRE_HDR];
	struct iovec iov[2] = {{hdr, HECA_WIRE_HDR}, {(void *)f->payload, f->payload_len}};
	int rc;

	heca_wire_encode(hdr, f);
	rc = heca__send_all(fd, iov, f->payload_len ? 2 : 1);
	if (!rc)
		heca__count(&r->base.h->c.bytes_sent, HECA_WIRE_HDR + f->payload_len);
	return rc;
}

/* Synchronous request on a connection nobody else reads: send, then wait up to timeout_ms
 * for the reply, decoded from buf (which must hold it). */
static int call_fd(struct remote *r, int fd, struct heca_frame *req, struct heca_frame *rep,
		   uint8_t *buf, size_t buflen, int timeout_ms)
{
	uint64_t until = heca__now_ns() + (uint64_t)timeout_ms * 1000000ull;
	size_t have = 0;
	int rc, len;

	req->req_id = next_req(r);
	rc = send_frame(r, fd, req);
	if (rc)
		return rc;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		uint64_t now;
		ssize_t n;

		len = heca_wire_decode(buf, have, rep);
		if (len > 0)
			break;
		if (len != -EAGAIN)
			return len;
		if (have == buflen)
			return -EMSGSIZE;
		now = heca__now_ns();
		if (now >= until)
			return -ETIMEDOUT;
		rc = poll(&p, 1, (int)((until - now) / 1000000ull) + 1);
		if (rc == 0)
			return -ETIMEDOUT;
		if (rc < 0 && errno != EINTR)
			return -errno;
		n = recv(fd, buf + have, buflen - have, MSG_DONTWAIT);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		have += (size_t)n;
	}
	heca__count(&r->base.h->c.bytes_received, (uint64_t)len);
	if (rep->opcode == HECA_OP_ERROR)
		return rep->status ? -rep->status : -EPROTO;
	if (rep->opcode != (req->opcode | HECA_OP_REPLY) || rep->req_id != req->req_id)
		return -EPROTO;
	return rep->status ? -rep->status : 0;
}

/*
 * After HELLO: prove we hold the cluster key and check that the sponsor does too
 * (docs/protocol.md, "Authentication"). With a key, a sponsor that does not ask for proof is
 * refused: clearing the flag must not let an impostor skip the exchange. hello is the HELLO
 * reply, which must stay valid (it points into the caller's buffer): AUTH uses a buffer of
 * its own.
 */
static int authenticate(struct remote *r, int fd, const struct heca_frame *hello)
{
	struct heca *h = r->base.h;
	uint32_t flags = heca_get32(hello->payload + HECA_HELLO_REPLY_OFF_FLAGS);
	const uint8_t *sid = hello->payload, *snonce = hello->payload + HECA_HELLO_REPLY_OFF_NONCE;
	uint8_t body[HECA_WIRE_AUTH_LEN], mac2[HECA_AUTH_MAC_LEN], buf[256];
	struct heca_frame req = {.opcode = HECA_OP_AUTH, .payload = body,
				 .payload_len = sizeof(body)},
			  rep;
	int rc;

	if (!r->keylen)
		return (flags & HECA_HELLO_AUTH) ? -EACCES : 0;
	if (!(flags & HECA_HELLO_AUTH))
		return -EACCES;
	rc = heca__random(body, HECA_AUTH_NONCE_LEN);
	if (!rc)
		rc = heca__auth_mac(r->key, r->keylen, HECA_AUTH_LABEL_DEMANDER, h->opt.cluster_id,
				    h->demander_id, sid, snonce, body, body + HECA_AUTH_NONCE_LEN);
	if (!rc)
		rc = call_fd(r, fd, &req, &rep, buf, sizeof(buf), (int)h->opt.timeout_ms);
	if (rc)
		return rc;
	if (rep.payload_len != HECA_AUTH_MAC_LEN)
		return -EPROTO;
	rc = heca__auth_mac(r->key, r->keylen, HECA_AUTH_LABEL_SPONSOR, h->opt.cluster_id,
			    h->demander_id, sid, snonce, body, mac2);
	if (!rc)
		rc = heca__auth_check(mac2, rep.payload); /* the sponsor holds the key too */
	return rc;
}

/* Connect one channel to m, say HELLO, authenticate. Returns the fd or -errno. */
static int dial(struct remote *r, struct member *m, enum heca_channel ch)
{
	struct heca *h = r->base.h;
	uint8_t hello[HECA_WIRE_HELLO_LEN] = {0}, buf[512];
	struct heca_frame req = {.opcode = HECA_OP_HELLO, .payload = hello,
				 .payload_len = sizeof(hello)},
			  rep;
	/* A sponsor that stops reading must not block a sender (the evictor, or the engine
	 * with a full socket buffer) for longer than it takes to call the sponsor dead. */
	unsigned int send_ms = HECA_MIN(h->opt.timeout_ms, h->opt.detect_ms);
	struct timeval tv = {.tv_sec = send_ms / 1000, .tv_usec = (send_ms % 1000) * 1000};
	int fd, rc;

	fd = heca__tcp_connect(m->addr, (int)HECA_MIN(h->opt.timeout_ms, 2000u));
	if (fd < 0)
		return fd;
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	memcpy(hello, h->opt.cluster_id, 16);
	memcpy(hello + 16, h->demander_id, 16);
	heca_put32(hello + 32, (uint32_t)ch);
	heca_put32(hello + 36, m->session);
	rc = call_fd(r, fd, &req, &rep, buf, sizeof(buf), (int)h->opt.timeout_ms);
	if (rc) {
		close(fd);
		return rc;
	}
	rc = authenticate(r, fd, &rep);
	if (rc) {
		close(fd);
		return rc;
	}
	pthread_mutex_lock(&r->mu);
	memcpy(m->id, rep.payload, 16);
	m->key = heca_get64(m->id) ^ heca_get64(m->id + 8);
	m->capacity_pages = heca_get64(rep.payload + 16);
	m->used_pages = heca_get64(rep.payload + 24);
	pthread_mutex_unlock(&r->mu);
	return fd;
}

static int conn_init(struct conn *c, struct member *m, enum heca_channel ch)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->m = m;
	c->chan = ch;
	pthread_mutex_init(&c->mu, NULL);
	pthread_mutex_init(&c->smu, NULL);
	if (ch == HECA_CHAN_CONTROL)
		return 0;
	c->qcap = 1024;
	c->q = calloc(c->qcap, sizeof(*c->q));
	c->rbuf = malloc(RBUF_SZ);
	return c->q && c->rbuf ? 0 : -ENOMEM;
}

static void conn_watch(struct remote *r, struct conn *c)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
	if (c->chan != HECA_CHAN_CONTROL && c->fd >= 0 &&
	    epoll_ctl(r->base.h->epfd, EPOLL_CTL_ADD, c->fd, &ev) == 0)
		c->watched = true;
}

static void conn_exit(struct remote *r, struct conn *c)
{
	if (c->watched)
		epoll_ctl(r->base.h->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->q);
	free(c->rbuf);
	c->q = NULL;
	c->rbuf = NULL;
}

/* Queue a request on c and send it. Returns 0 (the completion will come, possibly as a
 * failure when the connection breaks), or -ENOTCONN / -ENOMEM (no completion will come). */
static int conn_request(struct remote *r, struct conn *c, struct heca_frame *f, struct op *o)
{
	struct heca *h = r->base.h;
	struct pending *p;
	int rc;

	pthread_mutex_lock(&c->smu);
	pthread_mutex_lock(&c->mu);
	if (c->broken || c->fd < 0 || mstate(c->m) != M_UP) {
		pthread_mutex_unlock(&c->mu);
		pthread_mutex_unlock(&c->smu);
		return -ENOTCONN;
	}
	if (c->qtail - c->qhead == c->qcap) {
		uint32_t ncap = c->qcap * 2;
		struct pending *nq = malloc(ncap * sizeof(*nq));
		if (!nq) {
			pthread_mutex_unlock(&c->mu);
			pthread_mutex_unlock(&c->smu);
			return -ENOMEM;
		}
		for (uint32_t i = c->qhead; i != c->qtail; i++)
			nq[i - c->qhead] = c->q[i & (c->qcap - 1)];
		free(c->q);
		c->q = nq;
		c->qtail -= c->qhead;
		c->qhead = 0;
		c->qcap = ncap;
	}
	f->req_id = next_req(r);
	p = &c->q[c->qtail++ & (c->qcap - 1)];
	*p = (struct pending){.req_id = f->req_id,
			      .op = f->opcode,
			      .seg = f->segment,
			      .page = f->page,
			      .count = f->count,
			      .o = o,
			      .sent_ns = heca__now_ns()};
	p->deadline = p->sent_ns + h->opt.timeout_ms * 1000000ull;
	pthread_mutex_unlock(&c->mu);
	/* Sent outside the queue lock: the engine may fail or complete the queue meanwhile. */
	rc = send_frame(r, c->fd, f);
	if (rc) {
		pthread_mutex_lock(&c->mu);
		c->broken = true;
		pthread_mutex_unlock(&c->mu);
		shutdown(c->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&c->smu);
	return 0;
}

/* ---- stripes (r->mu held) ---- */

static unsigned int stripe_slot(uint32_t seg, uint64_t idx)
{
	return (unsigned int)((((uint64_t)seg << 40) ^ idx) * 0x9e3779b97f4a7c15ull >> 48);
}

static struct stripe *stripe_find_locked(struct remote *r, uint32_t seg, uint64_t idx)
{
	for (struct stripe *s = r->st[stripe_slot(seg, idx)]; s; s = s->next)
		if (s->seg == seg && s->idx == idx)
			return s;
	return NULL;
}

static bool holds(const struct stripe *s, unsigned int mi)
{
	for (unsigned int i = 0; i < s->n; i++)
		if (s->holder[i] == mi)
			return true;
	return false;
}

static void drop_holder_locked(struct remote *r, struct stripe *s, unsigned int mi)
{
	for (unsigned int i = 0; i < s->n; i++) {
		if (s->holder[i] != mi)
			continue;
		s->holder[i] = s->holder[--s->n];
		r->m[mi]->stripes--;
		pthread_cond_broadcast(&r->repair_cond);
		return;
	}
}

static bool eligible(struct member *m)
{
	return mstate(m) == M_UP && !m->draining && !m->full;
}

/* Rank the members for a stripe, best first. */
static void rank_locked(struct remote *r, uint32_t seg, uint64_t idx, unsigned int *order)
{
	uint64_t keys[HECA_PLACE_MAX];
	double w[HECA_PLACE_MAX];

	for (unsigned int i = 0; i < r->nm; i++) {
		struct member *m = r->m[i];
		keys[i] = m->key;
		/* Weighted by capacity (a stable weight: free space changes all the time and
		 * would move stripes back and forth); members that cannot take a stripe now
		 * (down, draining, full) rank last. */
		w[i] = eligible(m) ? (double)(m->capacity_pages ? m->capacity_pages : 1) : 0;
	}
	heca__place_rank(r->base.h->opt.cluster_id, seg, idx, keys, w, r->nm, order);
}

/* The stripe, placed on up to R eligible members if it is new. NULL if no member can take it. */
static struct stripe *stripe_get_locked(struct remote *r, uint32_t seg, uint64_t idx)
{
	struct stripe *s = stripe_find_locked(r, seg, idx);
	unsigned int order[HECA_PLACE_MAX];
	size_t words = (r->stripe_pages + 63) / 64;

	if (s && s->n > 0)
		return s;
	if (!s) {
		s = calloc(1, sizeof(*s) + words * 8);
		if (!s)
			return NULL;
		s->seg = seg;
		s->idx = idx;
		s->target = NO_MEMBER;
		s->next = r->st[stripe_slot(seg, idx)];
		r->st[stripe_slot(seg, idx)] = s;
		r->nstripes++;
	}
	/* New, or every copy was lost: place it afresh (lost pages stay lost). */
	memset(s->bits, 0, words * 8);
	rank_locked(r, seg, idx, order);
	for (unsigned int i = 0; i < r->nm && s->n < r->replicas; i++) {
		if (!eligible(r->m[order[i]]))
			break;
		s->holder[s->n++] = (uint8_t)order[i];
		r->m[order[i]]->stripes++;
	}
	return s->n ? s : NULL;
}

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
	/* Another copy may serve it: the application sees only the latency. */
	o->err = status;
	read_issue(r, o, false);
}

static void op_done_write(struct remote *r, struct op *o, struct member *m, int status)
{
	struct heca_store *s = &r->base;
	struct stripe *st;
	bool done;

	pthread_mutex_lock(&r->mu);
	st = stripe_find_locked(r, o->seg, o->page / r->stripe_pages);
	if (!m) {
		/* The sender's own reference: the data may be freed only after every send. */
	} else if (!status) {
		o->ok++;
		if (st)
			for (uint32_t i = 0; i < o->count; i++) {
				uint64_t b = (o->page + i) % r->stripe_pages;
				st->bits[b / 64] |= 1ull << (b % 64);
			}
	} else {
		if (!o->err)
			o->err = status;
		if (status == -ENOSPC)
			m->full = true;
		/* This copy is stale now: it no longer counts, and repair makes another. */
		if (st)
			drop_holder_locked(r, st, m->idx);
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

/* Take m out of service: no new requests, its copies no longer count, its connections are
 * shut so that everything queued on them fails (and reads go to other copies). */
static void member_down(struct remote *r, struct member *m, int err)
{
	bool was_up;

	pthread_mutex_lock(&r->mu);
	was_up = mstate(m) != M_DOWN;
	if (was_up) {
		set_mstate(m, M_DOWN);
		m->backoff_ms = 100;
		m->next_try_ns = heca__now_ns() + m->backoff_ms * 1000000ull;
		for (unsigned int b = 0; b < STRIPE_BUCKETS; b++)
			for (struct stripe *s = r->st[b]; s; s = s->next) {
				drop_holder_locked(r, s, m->idx);
				if (s->target == m->idx)
					s->target = NO_MEMBER;
			}
		pthread_cond_broadcast(&r->cond);
		pthread_cond_broadcast(&r->repair_cond);
	}
	pthread_mutex_unlock(&r->mu);
	if (!was_up)
		return;
	heca__log(r->base.h, HECA_LOG_ERROR, "sponsor %s: %s; using the other copies", m->addr,
		  heca_strerror(err));
	struct conn *cs[4] = {&m->ctl, &m->fault, &m->prefetch, &m->bulk};
	for (int i = 0; i < 4; i++) {
		pthread_mutex_lock(&cs[i]->mu);
		cs[i]->broken = true;
		pthread_mutex_unlock(&cs[i]->mu);
		if (cs[i]->fd >= 0 && i > 0)
			shutdown(cs[i]->fd, SHUT_RDWR);
	}
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
	member_down(r, c->m, err);
	conn_fail_queue(r, c, err);
	c->rlen = 0;
}

static void remote_dispatch(struct heca_store *s, void *ctx)
{
	struct remote *r = (struct remote *)s;
	struct conn *c = ctx;
	size_t off = 0;
	ssize_t n;

	if (!c->rbuf || c->fd < 0)
		return;
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

/* Engine thread: swap reconnected sockets in (only the engine reads these connections, so
 * only it may change their fds), and fail requests past their deadline. */
static void remote_tick(struct heca_store *s, uint64_t now)
{
	struct remote *r = (struct remote *)s;
	unsigned int nm = __atomic_load_n(&r->nm, __ATOMIC_ACQUIRE);

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
				pthread_mutex_lock(&c->mu);
				c->broken = false;
				pthread_mutex_unlock(&c->mu);
				conn_watch(r, c);
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
				remote_dispatch(s, c);
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
 * Send o to the fastest up member holding its stripe that was not tried yet. When none is
 * left: the first time (from remote_read(), on the engine with h->lock held) return the error
 * for the caller to handle; on a retry (from a completion, no lock held) fail o through
 * read_done. Called without r->mu.
 */
static int read_issue(struct remote *r, struct op *o, bool first)
{
	struct heca_store *s = &r->base;
	for (;;) {
		struct member *best = NULL;
		struct stripe *st;
		struct heca_frame f = {.opcode = HECA_OP_READ, .segment = o->seg, .page = o->page,
				       .count = o->count};

		pthread_mutex_lock(&r->mu);
		st = stripe_find_locked(r, o->seg, o->page / r->stripe_pages);
		uint64_t best_cost = 0, now = heca__now_ns();
		for (unsigned int i = 0; st && i < st->n; i++) {
			struct member *m = r->m[st->holder[i]];
			uint64_t cost;
			if (mstate(m) != M_UP || (o->tried & (1ull << m->idx)))
				continue;
			/* The recent round trip, or how long its oldest request has waited if that
			 * is longer: a sponsor that stopped answering stops looking fast. */
			cost = HECA_MAX(m->rtt_ns, oldest_wait(&m->fault, now));
			cost = HECA_MAX(cost, oldest_wait(&m->prefetch, now));
			if (!best || cost < best_cost) {
				best = m;
				best_cost = cost;
			}
		}
		if (best)
			o->tried |= 1ull << best->idx;
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
		if (conn_request(r, o->prio == HECA_PRIO_FAULT ? &best->fault : &best->prefetch, &f,
				 o) == 0)
			return 0;
	}
}

static int remote_read(struct heca_store *s, enum heca_prio prio, uint32_t seg, uint64_t page,
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

static int remote_write(struct heca_store *s, uint32_t seg, uint64_t page, uint32_t count,
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
		st = stripe_get_locked(r, seg, page / r->stripe_pages);
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
		int rc = conn_request(r, &m->bulk, &f, o);
		if (rc)
			op_done_write(r, o, m, rc);
	}
	op_done_write(r, o, NULL, 0);
	return 0;
}

/* ---- control-channel calls ---- */

static int ctl_call(struct remote *r, struct member *m, struct heca_frame *req,
		    struct heca_frame *rep, uint8_t *buf, size_t len, int timeout_ms)
{
	int rc;
	pthread_mutex_lock(&m->ctl.smu);
	rc = m->ctl.fd >= 0 && !m->ctl.broken
		     ? call_fd(r, m->ctl.fd, req, rep, buf, len, timeout_ms)
		     : -ENOTCONN;
	pthread_mutex_unlock(&m->ctl.smu);
	return rc;
}

static int ctl_simple(struct remote *r, struct member *m, uint8_t op, uint32_t seg, uint64_t arg)
{
	struct heca_frame req = {.opcode = op, .segment = seg, .page = arg}, rep;
	uint8_t buf[256];
	return ctl_call(r, m, &req, &rep, buf, sizeof(buf), (int)r->base.h->opt.timeout_ms);
}

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
		int rc = mstate(m) == M_UP ? ctl_simple(r, m, HECA_OP_ALLOC, seg, npages) : -ENOTCONN;
		if (rc == 0)
			up++;
		else if (!first)
			first = rc;
		if (rc && rc != -ENOTCONN)
			member_down(r, m, rc);
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
				free(st);
			} else {
				pp = &st->next;
			}
		}
	}
	pthread_mutex_unlock(&r->mu);
	for (unsigned int i = 0; i < __atomic_load_n(&r->nm, __ATOMIC_ACQUIRE); i++)
		if (mstate(r->m[i]) == M_UP)
			ctl_simple(r, r->m[i], HECA_OP_FREE, seg, 0);
	return 0;
}

static void *repair_main(void *arg);
static void member_start(struct remote *r, struct member *m);

/* Ask every member that is up to run op on seg; a member that is down drops everything of
 * ours when it comes back. */
static int ctl_all(struct remote *r, uint8_t op, uint32_t seg, uint64_t page, uint32_t count)
{
	int first = 0;
	for (unsigned int i = 0; i < __atomic_load_n(&r->nm, __ATOMIC_ACQUIRE); i++) {
		struct member *m = r->m[i];
		struct heca_frame req = {.opcode = op, .segment = seg, .page = page, .count = count},
				  rep;
		uint8_t buf[256];
		int rc;
		if (mstate(m) != M_UP)
			continue;
		rc = ctl_call(r, m, &req, &rep, buf, sizeof(buf), (int)r->base.h->opt.timeout_ms);
		if (rc == -ENOENT)
			rc = 0;
		if (rc && !first)
			first = rc;
	}
	return first;
}

static int remote_discard(struct heca_store *s, uint32_t seg, uint64_t page, uint64_t count)
{
	struct remote *r = (struct remote *)s;
	int rc = 0;

	/* Those pages are no longer written: a stripe copy must not ask for them. */
	pthread_mutex_lock(&r->mu);
	for (uint64_t p = page; p < page + count;) {
		uint64_t idx = p / r->stripe_pages, end = (idx + 1) * r->stripe_pages;
		struct stripe *st = stripe_find_locked(r, seg, idx);
		for (; p < end && p < page + count; p++)
			if (st) {
				uint64_t off = p % r->stripe_pages;
				st->bits[off / 64] &= ~(1ull << (off % 64));
			}
	}
	pthread_mutex_unlock(&r->mu);

	while (count && !rc) {
		uint32_t n = (uint32_t)HECA_MIN(count, 0x80000000ull);
		rc = ctl_all(r, HECA_OP_DISCARD, seg, page, n);
		page += n;
		count -= n;
	}
	return rc;
}

static int remote_drop_all(struct heca_store *s)
{
	return ctl_all((struct remote *)s, HECA_OP_DROPALL, 0, 0, 0);
}

static int remote_resize(struct heca_store *s, uint32_t seg, uint64_t npages)
{
	struct remote *r = (struct remote *)s;

	pthread_mutex_lock(&r->mu);
	for (unsigned int i = 0; i < r->nsegs; i++)
		if (r->segs[i].seg == seg)
			r->segs[i].npages = npages; /* what a sponsor that comes back is told */
	pthread_mutex_unlock(&r->mu);
	return ctl_all(r, HECA_OP_RESIZE, seg, npages, 0);
}

struct clone_call {
	struct remote *r;
	struct member *m;
	const uint8_t *child_id;
	pthread_t t;
	bool started;
	int rc;
};

static void clone_call(struct clone_call *c)
{
	struct heca_frame req = {.opcode = HECA_OP_CLONE, .payload = c->child_id,
				 .payload_len = 16},
			  rep;
	uint8_t buf[256];

	/* A sponsor copies about a GiB a second: give it time in proportion. */
	c->rc = ctl_call(c->r, c->m, &req, &rep, buf, sizeof(buf),
			 (int)HECA_MAX(c->r->base.h->opt.timeout_ms, 60000u));
}

static void *clone_main(void *arg)
{
	heca__internal = 1;
	clone_call(arg);
	return NULL;
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

static int remote_fork_prepare(struct heca_store *s, const uint8_t child_id[16])
{
	struct remote *r = (struct remote *)s;
	struct clone_call c[HECA_PLACE_MAX];
	unsigned int n = 0;
	int rc = 0;

	for (unsigned int i = 0; i < r->nm; i++) {
		if (mstate(r->m[i]) != M_UP)
			continue;
		c[n] = (struct clone_call){.r = r, .m = r->m[i], .child_id = child_id};
		c[n].started = pthread_create(&c[n].t, NULL, clone_main, &c[n]) == 0;
		if (!c[n].started)
			clone_call(&c[n]);
		n++;
	}
	for (unsigned int i = 0; i < n; i++) {
		if (c[i].started)
			pthread_join(c[i].t, NULL);
		if (c[i].rc && !rc) {
			rc = c[i].rc;
			heca__set_error("fork: sponsor %s cannot copy the segments: %s", c[i].m->addr,
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
			rc = dial(r, m, ch[k]);
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
				set_mstate(m, M_UP); /* member_down drops what an up one held */
				member_down(r, m, -ENOTCONN);
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

static void heartbeat(struct remote *r, struct member *m)
{
	struct heca *h = r->base.h;
	struct heca_frame req = {.opcode = HECA_OP_STAT}, rep;
	uint8_t buf[256];
	int rc = ctl_call(r, m, &req, &rep, buf, sizeof(buf), (int)h->opt.detect_ms);

	if (rc) {
		member_down(r, m, rc);
		return;
	}
	pthread_mutex_lock(&r->mu);
	m->capacity_pages = heca_get64(rep.payload);
	m->used_pages = heca_get64(rep.payload + 8);
	/* Room again (another demander freed some): new stripes may go there. */
	if (m->full && m->used_pages + 256 < m->capacity_pages)
		m->full = false;
	pthread_mutex_unlock(&r->mu);
	__atomic_store_n(&m->last_ok_ns, heca__now_ns(), __ATOMIC_RELAXED);
}

/* Reconnect m: new sockets for the engine to swap in, then drop whatever it held of ours
 * (it may be stale) and declare our segments again. */
static void reconnect(struct remote *r, struct member *m)
{
	int fds[4] = {-1, -1, -1, -1}, rc = 0;
	enum heca_channel ch[4] = {HECA_CHAN_CONTROL, HECA_CHAN_FAULT, HECA_CHAN_PREFETCH,
				   HECA_CHAN_BULK};

	/* A new session: whatever of the old connections is still in flight to the sponsor is
	 * refused there (ESTALE) instead of overwriting what this session stores. */
	m->session++;
	for (int k = 0; k < 4 && rc >= 0; k++)
		rc = fds[k] = dial(r, m, ch[k]);
	if (rc < 0) {
		for (int k = 0; k < 4; k++)
			if (fds[k] >= 0)
				close(fds[k]);
		pthread_mutex_lock(&r->mu);
		m->backoff_ms = HECA_MIN(m->backoff_ms * 2, 5000);
		m->next_try_ns = heca__now_ns() + m->backoff_ms * 1000000ull;
		pthread_mutex_unlock(&r->mu);
		return;
	}
	set_mstate(m, M_JOINING);
	memcpy(m->fresh, fds, sizeof(fds));
	__atomic_store_n(&m->swap_ready, true, __ATOMIC_RELEASE);
	/* Wait for the engine to swap the sockets in. */
	pthread_mutex_lock(&r->mu);
	while (__atomic_load_n(&m->swap_ready, __ATOMIC_ACQUIRE) && !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		heca__cond_wait_ms(&r->repair_cond, &r->mu, 20);
	}
	pthread_mutex_unlock(&r->mu);
	pthread_mutex_lock(&m->ctl.mu);
	m->ctl.broken = false;
	pthread_mutex_unlock(&m->ctl.mu);
	for (unsigned int i = 0; i < r->nsegs; i++) {
		struct segrec sr;
		pthread_mutex_lock(&r->mu);
		if (i >= r->nsegs) {
			pthread_mutex_unlock(&r->mu);
			break;
		}
		sr = r->segs[i];
		pthread_mutex_unlock(&r->mu);
		ctl_simple(r, m, HECA_OP_FREE, sr.seg, 0);
		if (ctl_simple(r, m, HECA_OP_ALLOC, sr.seg, sr.npages)) {
			member_down(r, m, -EIO);
			return;
		}
	}
	pthread_mutex_lock(&r->mu);
	m->full = false;
	m->emptied = false;
	pthread_mutex_unlock(&r->mu);
	__atomic_store_n(&m->last_ok_ns, heca__now_ns(), __ATOMIC_RELAXED);
	set_mstate(m, M_UP);
	heca__log(r->base.h, HECA_LOG_WARN, "sponsor %s: back, in use again", m->addr);
}

/* Copy the written pages of stripe (seg, idx) from a holder to member `to`, with writes to
 * the stripe held back meanwhile. Returns 0 when `to` holds a current copy. */
static int copy_stripe(struct remote *r, uint32_t seg, uint64_t idx, unsigned int to,
		       uint8_t *buf, size_t buflen)
{
	struct stripe *st;
	uint64_t base = idx * r->stripe_pages, npages = 0, *bits;
	size_t words = (r->stripe_pages + 63) / 64;
	unsigned int from = NO_MEMBER;
	int rc = 0;

	bits = malloc(words * 8);
	if (!bits)
		return -ENOMEM;
	pthread_mutex_lock(&r->mu);
	st = stripe_find_locked(r, seg, idx);
	if (!st || st->copying || st->n == 0 || holds(st, to)) {
		pthread_mutex_unlock(&r->mu);
		free(bits);
		return -EAGAIN;
	}
	st->copying = true;
	st->target = (uint8_t)to;
	r->moving++;
	/* Writes sent before the copy started must land before it reads. */
	while (st->inflight)
		pthread_cond_wait(&r->cond, &r->mu);
	memcpy(bits, st->bits, words * 8);
	for (unsigned int i = 0; i < st->n; i++)
		if (mstate(r->m[st->holder[i]]) == M_UP) {
			from = st->holder[i];
			break;
		}
	pthread_mutex_unlock(&r->mu);

	for (uint64_t p = 0; p < r->stripe_pages && from != NO_MEMBER && !rc;) {
		uint64_t q;
		struct heca_frame req, rep;
		if (!(bits[p / 64] & (1ull << (p % 64)))) {
			p++;
			continue;
		}
		for (q = p; q < r->stripe_pages && (bits[q / 64] & (1ull << (q % 64))) &&
			    q - p < HECA_WIRE_MAX_PAGES;
		     q++)
			;
		req = (struct heca_frame){.opcode = HECA_OP_READ, .segment = seg,
					  .page = base + p, .count = (uint32_t)(q - p)};
		rc = ctl_call(r, r->m[from], &req, &rep, buf, buflen, (int)r->base.h->opt.timeout_ms);
		if (rc) {
			if (rc != -ENOENT)
				member_down(r, r->m[from], rc);
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
			rc = ctl_call(r, r->m[to], &req, &rep2, small, sizeof(small),
				      (int)r->base.h->opt.timeout_ms);
		}
		if (rc) {
			if (rc == -ENOSPC) {
				pthread_mutex_lock(&r->mu);
				r->m[to]->full = true;
				pthread_mutex_unlock(&r->mu);
			} else
				member_down(r, r->m[to], rc);
			break;
		}
		npages += q - p;
		p = q;
	}
	if (from == NO_MEMBER)
		rc = -ENOTCONN;

	pthread_mutex_lock(&r->mu);
	st = stripe_find_locked(r, seg, idx);
	if (st) {
		if (!rc && mstate(r->m[to]) == M_UP && st->target == to && !holds(st, to) &&
		    st->n < MAX_R) {
			st->holder[st->n++] = (uint8_t)to;
			r->m[to]->stripes++;
			r->copied_stripes++;
			r->copied_pages += npages;
		} else if (!rc) {
			rc = -EAGAIN;
		}
		st->target = NO_MEMBER;
		st->copying = false;
	}
	r->moving--;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->mu);
	free(bits);
	return rc;
}

/* One pass over the stripes: restore R copies, move copies off draining members, and move
 * stripes to the members the placement prefers (after a member joined). Returns the number
 * of copies made. */
static unsigned int repair_pass(struct remote *r, uint8_t *buf, size_t buflen)
{
	unsigned int made = 0;

	for (unsigned int b = 0; b < STRIPE_BUCKETS && !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE); b++) {
		for (;;) {
			struct stripe *st;
			uint32_t seg = 0;
			uint64_t idx = 0;
			unsigned int to = NO_MEMBER, drop = NO_MEMBER, order[HECA_PLACE_MAX];
			unsigned int good = 0;
			bool found = false;

			pthread_mutex_lock(&r->mu);
			for (st = r->st[b]; st && !found; st = st->next) {
				if (st->n == 0 || st->copying)
					continue;
				good = 0;
				for (unsigned int i = 0; i < st->n; i++)
					good += !r->m[st->holder[i]]->draining;
				rank_locked(r, st->seg, st->idx, order);
				to = NO_MEMBER;
				drop = NO_MEMBER;
				if (good < r->replicas) {
					/* Too few copies: the best member without one. */
					for (unsigned int i = 0; i < r->nm; i++)
						if (eligible(r->m[order[i]]) &&
						    !holds(st, order[i])) {
							to = order[i];
							break;
						}
				} else if (good < st->n) {
					/* Enough copies elsewhere: let go of a draining one. */
					for (unsigned int i = 0; i < st->n; i++)
						if (r->m[st->holder[i]]->draining)
							drop = st->holder[i];
				} else if (st->n > r->replicas) {
					for (unsigned int i = r->nm; i-- > 0;)
						if (holds(st, order[i])) {
							drop = order[i];
							break;
						}
				} else {
					/* As many copies as wanted: move one to a member the
					 * placement prefers (one that joined or came back). */
					for (unsigned int i = 0; i < r->replicas && i < r->nm; i++) {
						if (!eligible(r->m[order[i]]))
							break;
						if (!holds(st, order[i])) {
							to = order[i];
							break;
						}
					}
				}
				if (to != NO_MEMBER || drop != NO_MEMBER) {
					found = true;
					seg = st->seg;
					idx = st->idx;
				}
			}
			pthread_mutex_unlock(&r->mu);
			if (!found)
				break;
			if (to != NO_MEMBER && copy_stripe(r, seg, idx, to, buf, buflen) != 0)
				break; /* try again on the next pass */
			if (to != NO_MEMBER)
				made++;
			pthread_mutex_lock(&r->mu);
			st = stripe_find_locked(r, seg, idx);
			if (st && !st->copying && drop == NO_MEMBER && st->n > r->replicas) {
				/* A copy was added to a preferred member: the worst one goes. */
				rank_locked(r, seg, idx, order);
				for (unsigned int i = r->nm; i-- > 0;)
					if (holds(st, order[i])) {
						drop = order[i];
						break;
					}
			}
			if (st && !st->copying && drop != NO_MEMBER && holds(st, drop) &&
			    (st->n > r->replicas || r->m[drop]->draining) && st->n > 1)
				drop_holder_locked(r, st, drop);
			pthread_mutex_unlock(&r->mu);
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
			uint64_t next_try;
			pthread_mutex_lock(&r->mu);
			next_try = m->next_try_ns;
			pthread_mutex_unlock(&r->mu);
			if (mstate(m) == M_UP &&
			    now - __atomic_load_n(&m->last_ok_ns, __ATOMIC_RELAXED) >
				    HB_MS * 1000000ull)
				heartbeat(r, m);
			else if (mstate(m) == M_DOWN && now >= next_try)
				reconnect(r, m);
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
			for (unsigned int k = 0;; k++) {
				uint32_t seg;
				pthread_mutex_lock(&r->mu);
				if (k >= r->nsegs) {
					pthread_mutex_unlock(&r->mu);
					break;
				}
				seg = r->segs[k].seg;
				pthread_mutex_unlock(&r->mu);
				ctl_simple(r, m, HECA_OP_FREE, seg, 0);
			}
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
		if ((rc = conn_init(cs[k], m, ch[k])))
			goto fail;
	}
	for (int k = 0; k < 4; k++) {
		rc = dial(r, m, ch[k]);
		if (rc < 0) {
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
	__atomic_store_n(&m->last_ok_ns, heca__now_ns(), __ATOMIC_RELAXED);
	*out = m;
	return 0;
fail:
	for (int k = 0; k < 4; k++)
		conn_exit(r, cs[k]);
	free(m);
	return rc;
}

static void member_start(struct remote *r, struct member *m)
{
	conn_watch(r, &m->fault);
	conn_watch(r, &m->prefetch);
	conn_watch(r, &m->bulk);
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
				conn_exit(r, cs[k]);
			free(m);
		}
		return rc;
	}
	for (unsigned int i = 0; i < r->nsegs; i++)
		ctl_simple(r, m, HECA_OP_ALLOC, r->segs[i].seg, r->segs[i].npages);
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
			else if (st->n < r->replicas)
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
	heca__auth_wipe(r->key, sizeof(r->key));
	for (unsigned int i = 0; i < r->nm; i++) {
		struct member *m = r->m[i];
		conn_exit(r, &m->ctl);
		conn_exit(r, &m->fault);
		conn_exit(r, &m->prefetch);
		conn_exit(r, &m->bulk);
		for (int k = 0; k < 4; k++)
			if (m->fresh[k] >= 0)
				close(m->fresh[k]);
		free(m);
	}
	for (unsigned int b = 0; b < STRIPE_BUCKETS; b++)
		while (r->st[b]) {
			struct stripe *st = r->st[b];
			r->st[b] = st->next;
			free(st);
		}
	free(r->segs);
	free(r);
}

static const struct heca_store_ops remote_ops = {
	.name = "remote",
	.read = remote_read,
	.write = remote_write,
	.alloc = remote_alloc,
	.release = remote_release,
	.discard = remote_discard,
	.resize = remote_resize,
	.fork_pause = remote_fork_pause,
	.fork_prepare = remote_fork_prepare,
	.fork_child = remote_fork_child,
	.fork_resume = remote_fork_resume,
	.drop_all = remote_drop_all,
	.dispatch = remote_dispatch,
	.tick = remote_tick,
	.close = remote_close,
	.add_member = remote_add_member,
	.drain_member = remote_drain_member,
	.members = remote_members,
	.cluster_stats = remote_cluster_stats,
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
			if (!first_err)
				first_err = rc;
			snprintf(first_why, sizeof(first_why), "%s", heca_last_error());
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
