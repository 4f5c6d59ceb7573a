// SPDX-License-Identifier: MIT
/*
 * remote_conn.c - the remote store's connections to a sponsor: dialling, HELLO and AUTH,
 * sending frames (blocking, or through the connection's queue for reads), the request queue
 * whose replies the engine reads, and synchronous calls on the control connection.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "auth.h"
#include "heca_int.h"
#include "net.h"
#include "remote_int.h"
#include "util.h"
#include "wire.h"

/* Read requests waiting for a sponsor that stopped reading its socket (48 bytes each): past
 * this the connection is given up, as its requests' deadlines soon would be. */
#define OUT_MAX (1u << 20)

static void conn_arm(struct remote *r, struct conn *c, bool out)
{
	struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
	if (c->watched)
		epoll_ctl(r->base.h->epfd, EPOLL_CTL_MOD, c->fd, &ev);
	c->out_armed = out;
}

/*
 * Send f on fd. Without q, blocking (up to the socket's SO_SNDTIMEO). With q, the connection
 * fd belongs to (smu held), without blocking: reads are sent by the engine with h->lock held,
 * so a sponsor that stops reading its socket must not block the send, or every other fault of
 * the process would wait for it: what the socket does not take now waits in q->out, in order,
 * and goes when the socket is writable (heca__conn_flush). The request's deadline runs
 * meanwhile.
 */
int heca__send_frame(struct remote *r, int fd, struct conn *q, struct heca_frame *f)
{
	uint8_t hdr[HECA_WIRE_HDR];
	struct iovec iov[2] = {{hdr, HECA_WIRE_HDR}, {(void *)f->payload, f->payload_len}};
	int rc;

	heca_wire_encode(hdr, f);
	rc = q ? heca__outq_send(&q->out, fd, iov, f->payload_len ? 2 : 1)
	       : heca__send_all(fd, iov, f->payload_len ? 2 : 1);
	if (rc < 0)
		return rc;
	heca__count(&r->base.h->c.bytes_sent, HECA_WIRE_HDR + f->payload_len);
	if (rc == 1 && !q->out_armed) {
		heca__count(&r->base.h->c.reads_queued, 1);
		conn_arm(r, q, true);
	}
	return 0;
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
	rc = heca__send_frame(r, fd, NULL, req);
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
int heca__dial(struct remote *r, struct member *m, enum heca_channel ch)
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
	/* Heartbeats notice a silent sponsor on the control connection; keepalive makes the
	 * kernel give up on any connection to a host that vanished. */
	heca__tcp_keepalive(fd, 15);
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

int heca__conn_init(struct conn *c, struct member *m, enum heca_channel ch)
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
	if (ch != HECA_CHAN_BULK)
		c->out.max = OUT_MAX;
	c->rbuf = malloc(RBUF_SZ);
	return c->q && c->rbuf ? 0 : -ENOMEM;
}

void heca__conn_watch(struct remote *r, struct conn *c)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
	if (c->chan != HECA_CHAN_CONTROL && c->fd >= 0 &&
	    epoll_ctl(r->base.h->epfd, EPOLL_CTL_ADD, c->fd, &ev) == 0)
		c->watched = true;
}

void heca__conn_exit(struct remote *r, struct conn *c)
{
	if (c->watched)
		epoll_ctl(r->base.h->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->q);
	free(c->rbuf);
	free(c->out.buf);
	c->q = NULL;
	c->rbuf = NULL;
	c->out = (struct heca_outq){0};
}

/* Engine thread, c writable: send what waits in c->out. */
void heca__conn_flush(struct remote *r, struct conn *c)
{
	int rc;

	pthread_mutex_lock(&c->smu);
	rc = c->fd >= 0 ? heca__outq_flush(&c->out, c->fd) : -ENOTCONN;
	if (rc < 0)
		c->out.len = 0; /* the stream is cut: the reads fail with the connection */
	if (rc <= 0)
		conn_arm(r, c, false);
	pthread_mutex_unlock(&c->smu);
	if (rc < 0 && c->fd >= 0) {
		pthread_mutex_lock(&c->mu);
		c->broken = true;
		pthread_mutex_unlock(&c->mu);
		shutdown(c->fd, SHUT_RDWR);
	}
}

/* Queue a request on c and send it. Returns 0 (the completion will come, possibly as a
 * failure when the connection breaks), or -ENOTCONN / -ENOMEM (no completion will come). */
int heca__conn_request(struct remote *r, struct conn *c, struct heca_frame *f, struct op *o)
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
	rc = heca__send_frame(r, c->fd, c->out.max ? c : NULL, f);
	if (rc) {
		pthread_mutex_lock(&c->mu);
		c->broken = true;
		pthread_mutex_unlock(&c->mu);
		shutdown(c->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&c->smu);
	return 0;
}

int heca__ctl_call(struct remote *r, struct member *m, struct heca_frame *req,
		   struct heca_frame *rep, uint8_t *buf, size_t len, int timeout_ms)
{
	bool broken;
	int rc;
	pthread_mutex_lock(&m->ctl.smu);
	pthread_mutex_lock(&m->ctl.mu); /* heca__member_down() sets it from the engine */
	broken = m->ctl.broken;
	pthread_mutex_unlock(&m->ctl.mu);
	rc = m->ctl.fd >= 0 && !broken ? call_fd(r, m->ctl.fd, req, rep, buf, len, timeout_ms)
				       : -ENOTCONN;
	pthread_mutex_unlock(&m->ctl.smu);
	return rc;
}

int heca__ctl_simple(struct remote *r, struct member *m, uint8_t op, uint32_t seg, uint64_t arg)
{
	struct heca_frame req = {.opcode = op, .segment = seg, .page = arg}, rep;
	uint8_t buf[256];
	return heca__ctl_call(r, m, &req, &rep, buf, sizeof(buf), (int)r->base.h->opt.timeout_ms);
}

/* Ask member m to run op on [page, page + count) of seg; ENOENT (nothing there) is success. */
int heca__ctl_all_one(struct remote *r, struct member *m, uint8_t op, uint32_t seg,
		      uint64_t page, uint32_t count)
{
	struct heca_frame req = {.opcode = op, .segment = seg, .page = page, .count = count}, rep;
	uint8_t buf[256];
	int rc = heca__ctl_call(r, m, &req, &rep, buf, sizeof(buf), (int)r->base.h->opt.timeout_ms);

	return rc == -ENOENT ? 0 : rc;
}

/* Ask every member that is up to run op on seg; one that is down hears of it when it is back
 * (remote_release and remote_discard remember it). */
int heca__ctl_all(struct remote *r, uint8_t op, uint32_t seg, uint64_t page, uint32_t count)
{
	int first = 0;
	for (unsigned int i = 0; i < __atomic_load_n(&r->nm, __ATOMIC_ACQUIRE); i++) {
		int rc;
		if (mstate(r->m[i]) != M_UP)
			continue;
		rc = heca__ctl_all_one(r, r->m[i], op, seg, page, count);
		if (rc && !first)
			first = rc;
	}
	return first;
}
