// SPDX-License-Identifier: MIT
/*
 * remote_fork.c - fork() for the remote store: the repair thread held, every sponsor that is up
 * copies our segments for the child (CLONE, sent and awaited by the forking thread alone), and
 * the child connects anew on the parent's member table and stripe map.
 */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "heca_int.h"
#include "remote_int.h"
#include "util.h"
#include "wire.h"

/* fork(): the repair thread is held (heca__remote_fork_pause) and the engine frozen; have every
 * member that is up copy all our segments for the child, all at once. A member that is down holds nothing
 * current: the child treats it as the parent does. */
void heca__remote_fork_pause(struct heca_store *s)
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
int heca__remote_fork_prepare(struct heca_store *s, const uint8_t child_id[16])
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

void heca__remote_fork_resume(struct heca_store *s)
{
	struct remote *r = (struct remote *)s;
	pthread_mutex_lock(&r->mu);
	r->paused = false;
	pthread_cond_broadcast(&r->repair_cond);
	pthread_mutex_unlock(&r->mu);
}

/* In the child: the member table and stripe map are the parent's at the fork, which the
 * sponsors copied for our (new) demander id; the sockets are the parent's. Connect anew. */
int heca__remote_fork_child(struct heca_store *s)
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
		heca__member_start(r, m);
		up++;
	}
	if (!up)
		return -ENOTCONN;
	rc = -pthread_create(&r->repair, NULL, heca__repair_main, r);
	if (rc)
		return rc;
	r->repair_started = true;
	return 0;
}
