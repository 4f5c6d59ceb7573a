// SPDX-License-Identifier: MIT
/*
 * store_remote.c - the store backed by memory sponsors over TCP: stripes placed on R sponsors
 * by weighted rendezvous hashing, writes to every copy, reads from the fastest healthy one
 * with fail-over, heartbeats, reconnection with backoff, and a repair thread that restores R
 * copies, drains sponsors and moves stripes to new ones.
 *
 * This file holds the store's operations table, opening and closing it, and the segment calls
 * every sponsor hears (alloc, release, discard, resize). The rest is by concern, sharing
 * remote_int.h: remote_conn.c (connections), remote_stripe.c (stripes and their copies),
 * remote_io.c (reads, writes, completions), remote_health.c (what we believe about a
 * sponsor), remote_repair.c (the repair thread), remote_members.c (membership) and
 * remote_fork.c (fork).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "heca_int.h"
#include "remote_int.h"
#include "util.h"
#include "wire.h"

/* ---- segments, declared at every sponsor ---- */

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

/* ---- the store: its operations, opening and closing ---- */

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
	.fork_pause = heca__remote_fork_pause,
	.fork_prepare = heca__remote_fork_prepare,
	.fork_child = heca__remote_fork_child,
	.fork_resume = heca__remote_fork_resume,
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
