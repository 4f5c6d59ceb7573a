// SPDX-License-Identifier: MIT
/*
 * remote_health.c - what the remote store believes about each sponsor (docs/design.md, "What
 * heca believes about a sponsor"): up, down, given up, gone, full; the heartbeat that checks
 * one, and the reconnect that brings one back and tells it what it missed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "heca_int.h"
#include "remote_int.h"
#include "util.h"
#include "wire.h"

#define MISSED_MAX 4096 /* FREEs and DISCARDs remembered for a sponsor that is down */

/* Remember a FREE or DISCARD for a member that is down, to send when it is back. A member that
 * comes back gone (empty) does not need it; one we cannot remember it for keeps some stale
 * pages of ours until the segment is freed, which costs it room, never our data. */
void heca__member_miss_locked(struct member *m, uint8_t op, uint32_t seg, uint64_t page,
			      uint64_t count)
{
	if (m->nmissed >= MISSED_MAX)
		return; /* bounded: the rest costs it room until the segment is freed */
	if (m->nmissed == m->capmissed) {
		unsigned int ncap = m->capmissed ? m->capmissed * 2 : 16;
		struct missed *n = realloc(m->missed, ncap * sizeof(*n));
		if (!n)
			return;
		m->missed = n;
		m->capmissed = ncap;
	}
	m->missed[m->nmissed++] = (struct missed){op, seg, page, count};
}

/* A member refused a write for want of room: no new stripes go there until it has room, and
 * the stripes it holds that miss pages move to members with room (repair_pass). */
void heca__member_full_locked(struct remote *r, struct member *m)
{
	char sz[32];

	if (m->full)
		return;
	m->full = true;
	heca__log(r->base.h, HECA_LOG_WARN,
		  "sponsor %s is full (%s): new stripes go to other sponsors, and pages it "
		  "refuses stay in local memory until one has room",
		  m->addr, heca__fmt_bytes(sz, sizeof(sz), m->capacity_pages * HECA_WIRE_PAGE));
}

/*
 * m is known to have lost what it held of ours (it restarted, our lease there ended, or it
 * stayed down past the grace period): its copies no longer count. Stripes left without a copy
 * are lost; reads of them fail. Caller holds r->mu.
 */
static void member_gone_locked(struct remote *r, struct member *m, const char *why)
{
	uint64_t lost = 0, held = 0;

	for (unsigned int b = 0; b < STRIPE_BUCKETS; b++)
		for (struct stripe *s = r->st[b]; s; s = s->next) {
			if (s->target == m->idx)
				s->target = NO_MEMBER;
			if (slot_of(s, m->idx) < 0)
				continue;
			held++;
			heca__stripe_drop_holder_locked(r, s, m->idx);
			lost += s->n == 0;
		}
	m->gone = true;
	m->nmissed = 0; /* it holds nothing of ours to free */
	pthread_cond_broadcast(&r->cond);
	pthread_cond_broadcast(&r->repair_cond);
	if (lost)
		heca__log(r->base.h, HECA_LOG_ERROR,
			  "sponsor %s %s: %llu stripes had their only copy there; their pages are "
			  "lost", m->addr, why, (unsigned long long)lost);
	else if (held)
		heca__log(r->base.h, HECA_LOG_WARN,
			  "sponsor %s %s: its %llu stripes are copied again from the other copies",
			  m->addr, why, (unsigned long long)held);
}

/* Take m out of service: no new requests, its connections are shut so that everything queued
 * on them fails (reads go to other copies, or wait for it). It stays the holder of what it
 * acknowledged: down is a belief, revised when it answers again or when it is known gone. */
void heca__member_down(struct remote *r, struct member *m, int err)
{
	unsigned int others = 0;
	bool was_up;

	pthread_mutex_lock(&r->mu);
	was_up = mstate(m) != M_DOWN;
	if (was_up) {
		set_mstate(m, M_DOWN);
		m->down_since_ns = heca__now_ns();
		m->backoff_ms = 100;
		m->next_try_ns = m->down_since_ns + m->backoff_ms * 1000000ull;
		for (unsigned int i = 0; i < r->nm; i++)
			others += r->m[i] != m && mstate(r->m[i]) == M_UP;
		pthread_cond_broadcast(&r->cond);
		pthread_cond_broadcast(&r->repair_cond);
	}
	pthread_mutex_unlock(&r->mu);
	if (!was_up)
		return;
	if (r->replicas > 1 && others)
		heca__log(r->base.h, HECA_LOG_ERROR, "sponsor %s: %s; using the other copies",
			  m->addr, heca_strerror(err));
	else
		heca__log(r->base.h, HECA_LOG_ERROR,
			  "sponsor %s: %s; pages held only there wait for it (up to %u s)", m->addr,
			  heca_strerror(err), r->base.h->opt.grace_ms / 1000);
	struct conn *cs[4] = {&m->ctl, &m->fault, &m->prefetch, &m->bulk};
	for (int i = 0; i < 4; i++) {
		pthread_mutex_lock(&cs[i]->mu);
		cs[i]->broken = true;
		pthread_mutex_unlock(&cs[i]->mu);
		if (cs[i]->fd >= 0 && i > 0)
			shutdown(cs[i]->fd, SHUT_RDWR);
	}
}

/* Something changed that may let a refused write-back succeed now. */
void heca__room_made(struct remote *r)
{
	__atomic_add_fetch(&r->base.room_gen, 1, __ATOMIC_RELEASE);
}

void heca__member_heartbeat(struct remote *r, struct member *m)
{
	struct heca *h = r->base.h;
	struct heca_frame req = {.opcode = HECA_OP_STAT}, rep;
	uint8_t buf[256];
	int rc = heca__ctl_call(r, m, &req, &rep, buf, sizeof(buf), (int)h->opt.detect_ms);

	if (rc) {
		heca__member_down(r, m, rc);
		return;
	}
	pthread_mutex_lock(&r->mu);
	m->capacity_pages = heca_get64(rep.payload);
	m->used_pages = heca_get64(rep.payload + 8);
	/* Room again (another demander freed some): new stripes may go there, and pages kept
	 * locally for want of room are tried again. */
	if (m->full && m->used_pages + r->stripe_pages < m->capacity_pages) {
		m->full = false;
		heca__room_made(r);
		heca__log(r->base.h, HECA_LOG_INFO, "sponsor %s has room again", m->addr);
	}
	pthread_mutex_unlock(&r->mu);
	m->last_hb_ns = heca__now_ns();
	__atomic_store_n(&m->last_ok_ns, m->last_hb_ns, __ATOMIC_RELAXED);
}

/* The i-th segment we have declared, read under r->mu (the table may change meanwhile: a
 * caller walking it with i = 0, 1, ... sees each segment at most once or misses one that was
 * released). Returns false past the end. */
bool heca__remote_seg_at(struct remote *r, unsigned int i, struct segrec *out)
{
	bool ok;

	pthread_mutex_lock(&r->mu);
	ok = i < r->nsegs;
	if (ok)
		*out = r->segs[i];
	pthread_mutex_unlock(&r->mu);
	return ok;
}

/* Whether m holds any stripe with written pages, as we believe. Caller holds r->mu. */
static bool holds_pages_locked(struct remote *r, struct member *m)
{
	for (unsigned int b = 0; b < STRIPE_BUCKETS; b++)
		for (struct stripe *s = r->st[b]; s; s = s->next) {
			if (slot_of(s, m->idx) < 0)
				continue;
			for (size_t w = 0; w < stripe_words(r); w++)
				if (s->bits[w])
					return true;
		}
	return false;
}

/*
 * Reconnect m: new sockets for the engine to swap in, then find out whether it still holds
 * what it acknowledged. The same sponsor (same id) that still has pages of ours keeps its
 * copies, and hears of the FREEs and DISCARDs it missed; one that restarted (another id, or no
 * pages of ours: restarted with its state dir, or our lease there ended) is known gone, and
 * starts empty. A refused connection means the process that held our pages has ended.
 */
void heca__member_reconnect(struct remote *r, struct member *m)
{
	int fds[4] = {-1, -1, -1, -1}, rc = 0;
	enum heca_channel ch[4] = {HECA_CHAN_CONTROL, HECA_CHAN_FAULT, HECA_CHAN_PREFETCH,
				   HECA_CHAN_BULK};
	struct heca_frame req = {.opcode = HECA_OP_STAT}, rep;
	uint8_t old_id[16], zero[16] = {0}, buf[256];
	struct segrec sr;
	uint64_t mine = 0;
	bool known = memcmp(m->id, zero, 16) != 0;

	memcpy(old_id, m->id, 16);
	/* A new session: whatever of the old connections is still in flight to the sponsor is
	 * refused there (ESTALE) instead of overwriting what this session stores. */
	m->session++;
	for (int k = 0; k < 4 && rc >= 0; k++)
		rc = fds[k] = heca__dial(r, m, ch[k]);
	if (rc < 0) {
		for (int k = 0; k < 4; k++)
			if (fds[k] >= 0)
				close(fds[k]);
		pthread_mutex_lock(&r->mu);
		if (rc == -ECONNREFUSED && !m->gone)
			member_gone_locked(r, m, "refused the connection (its process has ended)");
		if (rc == -EACCES && !m->auth_said) {
			m->auth_said = true;
			heca__log(r->base.h, HECA_LOG_ERROR,
				  "sponsor %s: authentication failed (wrong cluster or key); not "
				  "used until it accepts ours", m->addr);
		}
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
	if (heca__ctl_call(r, m, &req, &rep, buf, sizeof(buf), (int)r->base.h->opt.timeout_ms) == 0)
		mine = heca_get64(rep.payload + 32);
	else {
		heca__member_down(r, m, -EIO);
		return;
	}
	pthread_mutex_lock(&r->mu);
	if (!m->gone && known && memcmp(old_id, m->id, 16))
		member_gone_locked(r, m, "came back as another sponsor (restarted)");
	else if (!m->gone && mine == 0 && holds_pages_locked(r, m))
		member_gone_locked(r, m, "came back without our pages (restarted, or our lease "
					 "there ended)");
	pthread_mutex_unlock(&r->mu);
	if (m->gone) {
		/* Whatever it holds of ours is stale: start it empty. */
		for (unsigned int i = 0; heca__remote_seg_at(r, i, &sr); i++)
			heca__ctl_simple(r, m, HECA_OP_FREE, sr.seg, 0);
	} else {
		for (;;) {
			struct missed x;
			pthread_mutex_lock(&r->mu);
			if (!m->nmissed) {
				pthread_mutex_unlock(&r->mu);
				break;
			}
			x = m->missed[--m->nmissed];
			pthread_mutex_unlock(&r->mu);
			heca__ctl_all_one(r, m, x.op, x.seg, x.page,
					  (uint32_t)HECA_MIN(x.count, 0x80000000ull));
		}
	}
	for (unsigned int i = 0; heca__remote_seg_at(r, i, &sr); i++) {
		/* Idempotent: declares a segment it lacks, grows one that was resized. */
		if (heca__ctl_simple(r, m, HECA_OP_ALLOC, sr.seg, sr.npages)) {
			heca__member_down(r, m, -EIO);
			return;
		}
	}
	pthread_mutex_lock(&r->mu);
	m->full = m->used_pages + r->stripe_pages >= m->capacity_pages;
	m->emptied = false;
	if (!m->gone)
		__atomic_add_fetch(&r->base.back_gen, 1, __ATOMIC_RELEASE);
	m->gone = false;
	m->given_up = false;
	heca__room_made(r);
	pthread_mutex_unlock(&r->mu);
	__atomic_store_n(&m->last_ok_ns, heca__now_ns(), __ATOMIC_RELAXED);
	set_mstate(m, M_UP);
	heca__log(r->base.h, HECA_LOG_WARN, "sponsor %s: back, in use again", m->addr);
}
