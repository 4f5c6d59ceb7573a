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
	.add_member = heca__remote_add_member,
	.drain_member = heca__remote_drain_member,
	.members = heca__remote_members,
	.cluster_stats = heca__remote_cluster_stats,
	.free_pages = heca__remote_free_pages,
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
		rc = heca__member_open(r, tok, &m);
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
		heca__member_start(r, r->m[i]);
	free(list);
	rc = -pthread_create(&r->repair, NULL, heca__repair_main, r);
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
