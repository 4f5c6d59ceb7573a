// SPDX-License-Identifier: MIT
/*
 * remote_repair.c - the remote store's repair thread: heartbeats and reconnects (through
 * remote_health.c), then a pass over the stripes that restores R good copies, mends stale ones,
 * moves copies off draining and full sponsors and onto new ones, and drops what is not needed.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>

#include "heca_int.h"
#include "remote_int.h"
#include "segops.h"
#include "util.h"
#include "wire.h"

#define HB_MS 250 /* heartbeat period when idle */
#define STAT_MS 1000 /* a heartbeat at least this often under load, for fresh capacity figures */

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

void *heca__repair_main(void *arg)
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
