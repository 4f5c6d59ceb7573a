// SPDX-License-Identifier: MIT
/*
 * store_remote.c - the store backed by memory sponsors over TCP. Each sponsor gets four
 * connections: control (synchronous alloc/free), fault (demand reads only, so a 4 KiB fault
 * never waits behind bulk data), prefetch, and bulk (write-backs).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "heca_int.h"
#include "net.h"
#include "util.h"
#include "wire.h"

#define RBUF_SZ (4u << 20)

struct pending {
	uint64_t req_id;
	uint8_t op;
	uint32_t seg;
	uint64_t page;
	uint32_t count;
	uint64_t cookie;
	uint64_t deadline;
};

struct conn {
	int fd;
	enum heca_channel chan;
	struct sponsor *sp;
	pthread_mutex_t mu;  /* the pending queue; never held across a system call */
	pthread_mutex_t smu; /* sending: queue order must be send order */
	struct pending *q;  /* ring: replies come in request order */
	uint32_t qhead, qtail, qcap;
	uint8_t *rbuf;
	size_t rlen;
	bool broken;
};

struct sponsor {
	char addr[128];
	uint8_t id[16];
	uint64_t key; /* placement key derived from the id */
	uint64_t capacity_pages;
	bool down; /* atomic: set by the engine, read by every sender */
	struct conn ctl, fault, prefetch, bulk;
};

struct remote {
	struct heca_store base;
	struct sponsor *sp;
	unsigned int n;
	uint64_t *keys;
	uint64_t next_req;
	pthread_mutex_t req_mu;
};

static uint64_t next_req(struct remote *r)
{
	return __atomic_add_fetch(&r->next_req, 1, __ATOMIC_RELAXED);
}

static int conn_send(struct remote *r, struct conn *c, struct heca_frame *f)
{
	uint8_t hdr[HECA_WIRE_HDR];
	struct iovec iov[2] = {{hdr, HECA_WIRE_HDR}, {(void *)f->payload, f->payload_len}};
	int rc;

	heca_wire_encode(hdr, f);
	rc = heca__send_all(c->fd, iov, f->payload_len ? 2 : 1);
	if (!rc)
		heca__count(&r->base.h->c.bytes_sent, HECA_WIRE_HDR + f->payload_len);
	return rc;
}

/* Synchronous request on a connection nobody else reads: send, then wait for the reply. */
static int conn_call(struct remote *r, struct conn *c, struct heca_frame *req,
		     struct heca_frame *rep, uint8_t *buf, size_t buflen)
{
	int rc, len;
	size_t have = 0;

	req->req_id = next_req(r);
	rc = conn_send(r, c, req);
	if (rc)
		return rc;
	for (;;) {
		ssize_t n;
		len = heca_wire_decode(buf, have, rep);
		if (len > 0)
			break;
		if (len != -EAGAIN)
			return len;
		if (have == buflen)
			return -EMSGSIZE;
		n = recv(c->fd, buf + have, buflen - have, 0);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
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

static int conn_open(struct remote *r, struct sponsor *sp, struct conn *c, enum heca_channel ch)
{
	struct heca *h = r->base.h;
	uint8_t hello[HECA_WIRE_HELLO_LEN] = {0}, buf[256];
	struct heca_frame req = {.opcode = HECA_OP_HELLO,
				 .payload = hello,
				 .payload_len = sizeof(hello)},
			  rep;
	struct timeval tv = {.tv_sec = h->opt.timeout_ms / 1000,
			     .tv_usec = (h->opt.timeout_ms % 1000) * 1000};
	int rc;

	c->sp = sp;
	c->chan = ch;
	c->fd = heca__tcp_connect(sp->addr, (int)h->opt.timeout_ms);
	if (c->fd < 0) {
		rc = c->fd;
		heca__set_error("sponsor %s: %s", sp->addr, heca_strerror(rc));
		return rc;
	}
	/* Replies to requests sent on a blocking socket must not hang a caller forever. */
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/* A sponsor that stops reading must not block a sender (the evictor) for ever. */
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	memcpy(hello, h->opt.cluster_id, 16);
	memcpy(hello + 16, h->demander_id, 16);
	heca_put32(hello + 32, (uint32_t)ch);
	rc = conn_call(r, c, &req, &rep, buf, sizeof(buf));
	if (rc) {
		heca__set_error("sponsor %s: hello refused: %s", sp->addr, heca_strerror(rc));
		return rc;
	}
	memcpy(sp->id, rep.payload, 16);
	sp->capacity_pages = heca_get64(rep.payload + 16);
	pthread_mutex_init(&c->mu, NULL);
	pthread_mutex_init(&c->smu, NULL);
	if (ch != HECA_CHAN_CONTROL) {
		struct timeval none = {0};
		setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
		c->qcap = 1024;
		c->q = calloc(c->qcap, sizeof(*c->q));
		c->rbuf = malloc(RBUF_SZ);
		if (!c->q || !c->rbuf)
			return -ENOMEM;
	}
	return 0;
}

static void conn_close(struct conn *c)
{
	if (c->fd > 0)
		close(c->fd);
	c->fd = -1;
	free(c->q);
	free(c->rbuf);
	c->q = NULL;
	c->rbuf = NULL;
}

/* Queue a request and send it. On a send failure the connection is shut down; the engine
 * then fails everything queued on it, this request included, so the call still returns 0. */
static int conn_request(struct remote *r, struct conn *c, struct heca_frame *f, uint64_t cookie)
{
	struct heca *h = r->base.h;
	struct pending *p;
	int rc;

	pthread_mutex_lock(&c->smu);
	pthread_mutex_lock(&c->mu);
	if (c->broken || __atomic_load_n(&c->sp->down, __ATOMIC_ACQUIRE)) {
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
			      .cookie = cookie,
			      .deadline = heca__now_ns() + h->opt.timeout_ms * 1000000ull};
	pthread_mutex_unlock(&c->mu);
	/* Sent outside the queue lock: the engine may fail or complete the queue meanwhile. */
	rc = conn_send(r, c, f);
	if (rc) {
		pthread_mutex_lock(&c->mu);
		c->broken = true;
		pthread_mutex_unlock(&c->mu);
		shutdown(c->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&c->smu);
	return 0;
}

static void complete(struct remote *r, const struct pending *p, int status, const uint8_t *data)
{
	struct heca_store *s = &r->base;
	if (p->op == HECA_OP_READ)
		s->read_done(s->arg, p->cookie, status, p->seg, p->page, p->count, data);
	else if (p->op == HECA_OP_WRITE)
		s->write_done(s->arg, p->cookie, status, p->seg, p->page, p->count);
}

/* Fail every request queued on c and stop using the sponsor. Engine thread. */
static void conn_fail(struct remote *r, struct conn *c, int err)
{
	struct sponsor *sp = c->sp;

	if (!__atomic_load_n(&sp->down, __ATOMIC_ACQUIRE))
		heca__log(r->base.h, HECA_LOG_ERROR, "sponsor %s: %s; its pages are unreachable",
			  sp->addr, heca_strerror(err));
	__atomic_store_n(&sp->down, true, __ATOMIC_RELEASE);
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
		complete(r, &p, err, NULL);
	}
}

static struct conn *conn_by_fd(struct remote *r, int fd)
{
	for (unsigned int i = 0; i < r->n; i++) {
		struct sponsor *sp = &r->sp[i];
		if (sp->fault.fd == fd)
			return &sp->fault;
		if (sp->prefetch.fd == fd)
			return &sp->prefetch;
		if (sp->bulk.fd == fd)
			return &sp->bulk;
	}
	return NULL;
}

static void remote_dispatch(struct heca_store *s, int fd)
{
	struct remote *r = (struct remote *)s;
	struct conn *c = conn_by_fd(r, fd);
	size_t off = 0;
	ssize_t n;

	if (!c || !c->rbuf)
		return;
	n = recv(fd, c->rbuf + c->rlen, RBUF_SZ - c->rlen, MSG_DONTWAIT);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		conn_fail(r, c, n == 0 ? -ECONNRESET : -errno);
		/* Keep the fd open but idle: closing it here would let a new socket reuse the
		 * number while the engine still polls it. It is closed at heca_close(). */
		shutdown(fd, SHUT_RDWR);
		c->rlen = 0;
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
			shutdown(fd, SHUT_RDWR);
			c->rlen = 0;
			return;
		}
		pthread_mutex_lock(&c->mu);
		if (c->qhead == c->qtail || c->q[c->qhead & (c->qcap - 1)].req_id != f.req_id) {
			pthread_mutex_unlock(&c->mu);
			conn_fail(r, c, -EPROTO);
			shutdown(fd, SHUT_RDWR);
			c->rlen = 0;
			return;
		}
		p = c->q[c->qhead++ & (c->qcap - 1)];
		pthread_mutex_unlock(&c->mu);
		complete(r, &p, f.status ? -f.status : 0, f.payload);
		off += (size_t)len;
	}
	if (off) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
}

static void remote_tick(struct heca_store *s, uint64_t now)
{
	struct remote *r = (struct remote *)s;

	for (unsigned int i = 0; i < r->n; i++) {
		struct conn *cs[3] = {&r->sp[i].fault, &r->sp[i].prefetch, &r->sp[i].bulk};
		for (int k = 0; k < 3; k++) {
			struct conn *c = cs[k];
			bool late;
			if (!c->q)
				continue;
			pthread_mutex_lock(&c->mu);
			late = c->qhead != c->qtail &&
			       c->q[c->qhead & (c->qcap - 1)].deadline < now;
			pthread_mutex_unlock(&c->mu);
			if (late) {
				conn_fail(r, c, -ETIMEDOUT);
				shutdown(c->fd, SHUT_RDWR);
			}
		}
	}
}

static struct sponsor *place(struct remote *r, uint32_t seg, uint64_t page)
{
	struct heca *h = r->base.h;
	unsigned int i = r->n == 1 ? 0
				   : heca__place(h->opt.cluster_id, seg, page / h->opt.stripe_pages,
						 r->keys, r->n);
	return &r->sp[i];
}

static int remote_read(struct heca_store *s, enum heca_prio prio, uint32_t seg, uint64_t page,
		       uint32_t count, uint64_t cookie)
{
	struct remote *r = (struct remote *)s;
	struct sponsor *sp = place(r, seg, page);
	struct heca_frame f = {.opcode = HECA_OP_READ, .segment = seg, .page = page, .count = count};

	return conn_request(r, prio == HECA_PRIO_FAULT ? &sp->fault : &sp->prefetch, &f, cookie);
}

static int remote_write(struct heca_store *s, uint32_t seg, uint64_t page, uint32_t count,
			const uint8_t *data, uint64_t cookie)
{
	struct remote *r = (struct remote *)s;
	struct sponsor *sp = place(r, seg, page);
	struct heca_frame f = {.opcode = HECA_OP_WRITE,
			       .segment = seg,
			       .page = page,
			       .count = count,
			       .payload = data,
			       .payload_len = count * HECA_WIRE_PAGE};

	return conn_request(r, &sp->bulk, &f, cookie);
}

static int ctl_call_all(struct remote *r, uint8_t op, uint32_t seg, uint64_t arg, bool best_effort)
{
	int first = 0;

	for (unsigned int i = 0; i < r->n; i++) {
		struct sponsor *sp = &r->sp[i];
		struct heca_frame req = {.opcode = op, .segment = seg, .page = arg}, rep;
		uint8_t buf[256];
		int rc;

		if (__atomic_load_n(&sp->down, __ATOMIC_ACQUIRE)) {
			rc = -ENOTCONN;
		} else {
			pthread_mutex_lock(&sp->ctl.smu);
			rc = conn_call(r, &sp->ctl, &req, &rep, buf, sizeof(buf));
			pthread_mutex_unlock(&sp->ctl.smu);
		}
		if (rc && !first)
			first = rc;
		if (rc && !best_effort) {
			heca__log(r->base.h, HECA_LOG_ERROR, "sponsor %s: %s segment %u: %s",
				  sp->addr, heca_wire_opname(op), seg, heca_strerror(rc));
			return rc;
		}
	}
	return best_effort ? 0 : first;
}

static int remote_alloc(struct heca_store *s, uint32_t seg, uint64_t npages)
{
	return ctl_call_all((struct remote *)s, HECA_OP_ALLOC, seg, npages, false);
}

static int remote_release(struct heca_store *s, uint32_t seg)
{
	return ctl_call_all((struct remote *)s, HECA_OP_FREE, seg, 0, true);
}

static int remote_fds(struct heca_store *s, int *fds, int max)
{
	struct remote *r = (struct remote *)s;
	int n = 0;
	for (unsigned int i = 0; i < r->n && n + 3 <= max; i++) {
		fds[n++] = r->sp[i].fault.fd;
		fds[n++] = r->sp[i].prefetch.fd;
		fds[n++] = r->sp[i].bulk.fd;
	}
	return n;
}

static void remote_close(struct heca_store *s)
{
	struct remote *r = (struct remote *)s;
	if (!r)
		return;
	for (unsigned int i = 0; i < r->n; i++) {
		conn_close(&r->sp[i].ctl);
		conn_close(&r->sp[i].fault);
		conn_close(&r->sp[i].prefetch);
		conn_close(&r->sp[i].bulk);
	}
	free(r->sp);
	free(r->keys);
	free(r);
}

static const struct heca_store_ops remote_ops = {
	.name = "remote",
	.read = remote_read,
	.write = remote_write,
	.alloc = remote_alloc,
	.release = remote_release,
	.fds = remote_fds,
	.dispatch = remote_dispatch,
	.tick = remote_tick,
	.close = remote_close,
};

int heca__store_remote_open(struct heca *h, const char *sponsors, struct heca_store **out)
{
	struct remote *r;
	char *list, *save = NULL, *tok;
	unsigned int n = 1;
	int rc;

	if (!sponsors || !*sponsors) {
		heca__set_error("no sponsors given (a list of HOST:PORT)");
		return -EINVAL;
	}
	for (const char *p = sponsors; *p; p++)
		n += *p == ',';
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->base.ops = &remote_ops;
	r->base.h = h;
	r->sp = calloc(n, sizeof(*r->sp));
	r->keys = calloc(n, sizeof(*r->keys));
	list = strdup(sponsors);
	if (!r->sp || !r->keys || !list) {
		free(list);
		remote_close(&r->base);
		return -ENOMEM;
	}
	for (unsigned int i = 0; i < n; i++) {
		struct sponsor *sp = &r->sp[i];
		sp->ctl.fd = sp->fault.fd = sp->prefetch.fd = sp->bulk.fd = -1;
	}
	r->n = 0;
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct sponsor *sp = &r->sp[r->n++];
		snprintf(sp->addr, sizeof(sp->addr), "%s", tok);
		if ((rc = conn_open(r, sp, &sp->ctl, HECA_CHAN_CONTROL)) ||
		    (rc = conn_open(r, sp, &sp->fault, HECA_CHAN_FAULT)) ||
		    (rc = conn_open(r, sp, &sp->prefetch, HECA_CHAN_PREFETCH)) ||
		    (rc = conn_open(r, sp, &sp->bulk, HECA_CHAN_BULK)))
			goto fail;
		/* The sponsor's id, not its address, keys placement: an address may change. */
		sp->key = heca_get64(sp->id) ^ heca_get64(sp->id + 8);
		r->keys[r->n - 1] = sp->key;
	}
	free(list);
	if (r->n == 0) {
		heca__set_error("no sponsors given (a list of HOST:PORT)");
		remote_close(&r->base);
		return -EINVAL;
	}
	*out = &r->base;
	return 0;
fail:
	free(list);
	remote_close(&r->base);
	return rc;
}
