// SPDX-License-Identifier: MIT
/*
 * remote_members.c - the remote store's membership: opening a sponsor (or keeping one that
 * does not answer as down), adding one while running, draining one, and what the members hold
 * and have room for (heca_get_sponsors, heca_get_cluster_stats, commit accounting).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "heca_int.h"
#include "remote_int.h"
#include "util.h"
#include "wire.h"

int heca__member_open(struct remote *r, const char *addr, struct member **out)
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

void heca__member_start(struct remote *r, struct member *m)
{
	heca__conn_watch(r, &m->fault);
	heca__conn_watch(r, &m->prefetch);
	heca__conn_watch(r, &m->bulk);
}

int heca__remote_add_member(struct heca_store *s, const char *addr)
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
	rc = heca__member_open(r, addr, &m);
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
	heca__member_start(r, m);
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

int heca__remote_drain_member(struct heca_store *s, const char *who)
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

int heca__remote_members(struct heca_store *s, struct heca_sponsor_info *out, unsigned int max)
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

void heca__remote_cluster_stats(struct heca_store *s, struct heca_cluster_stats *o)
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

uint64_t heca__remote_free_pages(struct heca_store *s)
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
