// SPDX-License-Identifier: MIT
/*
 * test_lifetimes.c - segments that several threads end at once. For each slot three threads
 * meet at a barrier, then unregister, unmap, split (munmap of a middle part) or remap the same
 * segment together; the slot's next segment is mapped or registered while the other slot's
 * threads race, and more threads fault on segments of their own, under a budget of a few
 * dozen pages. One unregister of a base wins, the others get -EINVAL; what the winner leaves
 * holds what was written (zero with HECA_UNREG_DISCARD), and every page of the faulting
 * threads is checked against a shadow. Bounded in time (HECA_LIFE_SECONDS, HECA_LIFE_SEED).
 *
 * A base that one racer frees (heca_unmap(), or a remap that moves) may be handed out again at
 * once, and a late unregister of it would end the segment another slot mapped there: that is
 * the program's race, not heca's. So no slot maps (nor moves a segment) while such a round's
 * racers are at work; mapping goes on beside every other kind of round.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "harness.h"
#include "heca.h"
#include "segops.h"

#define PG 4096u
#define FAULTERS 2
#define FPAGES 192
#define SLOTS 2
#define RACERS 3

enum { T_SAME_BASE, T_SPLIT, T_REMAP, T_TYPES };
enum { A_UNMAP, A_UNREG, A_SPLIT, A_REMAP };

static const char *const type_name[T_TYPES] = {"same base", "split", "remap"};

struct slot {
	int idx;
	pthread_barrier_t bar;
	pthread_t t[RACERS];
	struct racer_arg {
		struct slot *s;
		int i;
	} arg[RACERS];
	uint64_t seed;
	bool quit;
	/* The round, set by racer 0 before the first barrier. */
	int type;
	bool owned; /* heca_map(), else mmap() + heca_register() */
	uint8_t *base;
	uint64_t n, ver;
	uint8_t *guard; /* a page right after the segment, so that growing must move it */
	int act[RACERS];
	unsigned int flags[RACERS];
	double delay_ms[RACERS]; /* before acting, so that each of them is first now and then */
	uint64_t m0, m1; /* the middle part a split takes out */
	uint64_t n2;	 /* pages a remap asks for */
	/* What each racer got. */
	int rc[RACERS];
	uintptr_t out;
	/* Totals. */
	uint64_t rounds[T_TYPES], won_unmap, won_unreg, split_first, moved, remap_late;
};

struct faulter {
	pthread_t t;
	uint8_t *base;
	uint64_t ver[FPAGES];
	uint64_t seed, ops;
};

static struct heca *h;
/* Rounds under way whose base a racer may free: nobody maps meanwhile; and whether one of
 * them may also move a segment to where the kernel likes, which is mapping too. */
static pthread_mutex_t map_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t map_cv = PTHREAD_COND_INITIALIZER;
static int freeing;
static bool moving;
static struct slot slots[SLOTS];
static struct faulter fl[FAULTERS];
static atomic_bool stop;
static atomic_uint_least64_t bad;

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void on_alarm(int sig)
{
	static const char msg[] = "FAIL: test_lifetimes hung (a fault or an unregister never "
				  "finished)\n";
	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

/* Pages [from, to) at p hold version ver, or zero if zero. */
static void expect(const struct slot *s, const uint8_t *p, uint64_t from, uint64_t to,
		   bool zero, const char *what)
{
	uint64_t wrong = 0;

	if (!zero) {
		wrong = t_check_pages(p, from, to, s->ver);
	} else {
		for (uint64_t i = from; i < to; i++) {
			const uint64_t *w = (const uint64_t *)(p + i * PG);
			for (uint64_t k = 0; k < PG / 8; k++)
				if (w[k]) {
					wrong++;
					break;
				}
		}
	}
	if (wrong)
		T_FAILF("slot %d, %s round, %s: %llu of pages %llu-%llu do not read %s", s->idx,
			type_name[s->type], what, (unsigned long long)wrong,
			(unsigned long long)from, (unsigned long long)to - 1,
			zero ? "zero" : "what was written");
}

enum { R_QUIET, R_FREES, R_MOVES };

/* Whether a racer of this round may free the base while the others still use it (R_FREES), and
 * also map elsewhere, by moving the segment (R_MOVES). */
static int round_kind(const struct slot *s)
{
	int kind = R_QUIET;
	for (int i = 0; i < RACERS; i++) {
		if (s->act[i] == A_REMAP && s->n2 > s->n)
			return R_MOVES;
		if (s->act[i] == A_UNMAP)
			kind = R_FREES;
	}
	return kind;
}

static void prepare(struct slot *s)
{
	uint64_t r = rnd(&s->seed);
	bool guard = false;
	int rc;

	s->type = (int)(r % T_TYPES);
	s->owned = s->type == T_REMAP || (r >> 8) % 2;
	s->n = 64 + (r >> 16) % 129;
	s->ver = ((uint64_t)s->idx << 40) + ++s->rounds[s->type] * T_TYPES + (uint64_t)s->type;
	for (int i = 0; i < RACERS; i++) {
		r = rnd(&s->seed);
		s->flags[i] = r % 2 ? HECA_UNREG_DISCARD : 0;
		s->rc[i] = 1;
		s->delay_ms[i] = (double)((r >> 40) % 4 ? (r >> 44) % 2000 : 0) / 1000;
		switch (s->type) {
		case T_SAME_BASE:
			/* A registered range is not heca_unmap()'s: that one must say -EINVAL. */
			s->act[i] = (r >> 8) % 2 && (i || s->owned) ? A_UNMAP : A_UNREG;
			break;
		case T_SPLIT:
			s->act[i] = i == 1 ? A_SPLIT : A_UNREG;
			break;
		case T_REMAP:
			s->act[i] = i == 1 ? A_REMAP : (r >> 8) % 2 ? A_UNMAP : A_UNREG;
			break;
		}
	}
	r = rnd(&s->seed);
	s->m0 = 1 + r % (s->n / 2);
	s->m1 = s->m0 + 1 + (r >> 16) % (s->n - s->m0 - 1);
	s->n2 = s->n;
	s->out = 0;
	if (s->type == T_REMAP && r % 3 == 0) {
		/* Shrink in place: the remap unmaps the tail itself, which a heca_unmap() of
		 * the same memory at the same time would also do, so only unregisters race it. */
		s->n2 = s->n / 2;
		s->act[0] = s->act[2] = A_UNREG;
	} else if (s->type == T_REMAP) {
		s->n2 = s->n * 2;
		guard = (r >> 8) % 2;
	}

	pthread_mutex_lock(&map_mu);
	while (freeing)
		pthread_cond_wait(&map_cv, &map_mu);
	if (s->owned) {
		rc = heca_map(h, s->n * PG, (void **)&s->base);
		if (rc)
			T_FAILF("heca_map: %s %s", heca_strerror(rc), heca_last_error());
	} else {
		s->base = mmap(NULL, s->n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
		ASSERT_TRUE(s->base != MAP_FAILED);
		rc = heca_register(h, s->base, s->n * PG);
		if (rc < 0)
			T_FAILF("heca_register: %s %s", heca_strerror(rc), heca_last_error());
	}
	s->guard = NULL;
	if (guard) {
		void *g = mmap(s->base + s->n * PG, PG, PROT_NONE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		s->guard = g == MAP_FAILED ? NULL : g;
	}
	pthread_mutex_unlock(&map_mu);
	t_fill_pages(s->base, 0, s->n, s->ver);
	/* Held from before the racers start until all of them are done. */
	pthread_mutex_lock(&map_mu);
	if (round_kind(s) == R_MOVES) {
		while (freeing)
			pthread_cond_wait(&map_cv, &map_mu);
		moving = true;
		freeing++;
	} else if (round_kind(s) == R_FREES) {
		while (moving)
			pthread_cond_wait(&map_cv, &map_mu);
		freeing++;
	}
	pthread_mutex_unlock(&map_mu);
}

static void act(struct slot *s, int i)
{
	for (double until = t_now_ms() + s->delay_ms[i]; t_now_ms() < until;)
		;
	switch (s->act[i]) {
	case A_UNMAP:
		s->rc[i] = heca_unmap(h, s->base);
		break;
	case A_UNREG:
		s->rc[i] = heca_unregister(h, s->base, s->flags[i]);
		break;
	case A_SPLIT:
		/* What the transparent mode does for munmap() of a middle part. */
		s->rc[i] = heca__unmap_range(h, (uintptr_t)(s->base + s->m0 * PG),
					     (s->m1 - s->m0) * PG);
		if (s->rc[i] == 0)
			syscall(SYS_munmap, s->base + s->m0 * PG, (s->m1 - s->m0) * PG);
		break;
	case A_REMAP:
		s->rc[i] = heca__remap(h, (uintptr_t)s->base, s->n * PG, s->n2 * PG,
				       s->n2 > s->n ? MREMAP_MAYMOVE : 0, 0, &s->out);
		break;
	}
}

/* The unregisters and unmaps of the base: exactly `want` of them won, the others got
 * -EINVAL. Returns the winner, or -1. */
static int winner(struct slot *s, int want)
{
	int won = -1, n = 0;

	for (int i = 0; i < RACERS; i++) {
		if (s->act[i] != A_UNMAP && s->act[i] != A_UNREG)
			continue;
		if (s->act[i] == A_UNMAP && !s->owned) {
			if (s->rc[i] != -EINVAL)
				T_FAILF("slot %d: heca_unmap of a registered range: %d", s->idx,
					s->rc[i]);
			continue;
		}
		if (s->rc[i] == 0) {
			won = i;
			n++;
		} else if (s->rc[i] != -EINVAL) {
			T_FAILF("slot %d, %s round: racer %d: %s", s->idx, type_name[s->type], i,
				heca_strerror(s->rc[i]));
		}
	}
	if (n != want)
		T_FAILF("slot %d, %s round: %d unregisters of one base won, want %d", s->idx,
			type_name[s->type], n, want);
	if (won >= 0) {
		if (s->act[won] == A_UNMAP)
			s->won_unmap++;
		else
			s->won_unreg++;
	}
	return won;
}

static void settle_same_base(struct slot *s)
{
	int w = winner(s, 1);

	if (s->act[w] == A_UNMAP)
		return; /* gone, mapping and all */
	expect(s, s->base, 0, s->n, s->flags[w] & HECA_UNREG_DISCARD, "after the unregister");
	ASSERT_TRUE(!heca__range_sponsored(h, (uintptr_t)s->base, s->n * PG));
	munmap(s->base, s->n * PG);
}

static void settle_split(struct slot *s)
{
	int w = winner(s, 1);
	bool zero = s->flags[w] & HECA_UNREG_DISCARD;
	uint8_t *tail = s->base + s->m1 * PG;
	uint64_t ntail = s->n - s->m1;

	if (s->rc[1])
		T_FAILF("slot %d: split: %s", s->idx, heca_strerror(s->rc[1]));
	expect(s, s->base, 0, s->m0, zero, "head, after the unregister");
	if (heca__range_sponsored(h, (uintptr_t)tail, ntail * PG)) {
		/* Split first: the unregister took the head piece, the tail is still sponsored. */
		s->split_first++;
		expect(s, s->base, s->m1, s->n, false, "sponsored tail piece");
	} else {
		expect(s, s->base, s->m1, s->n, zero, "tail, after the unregister");
	}
	ASSERT_EQ(heca__unmap_range(h, (uintptr_t)tail, ntail * PG), 0);
	ASSERT_TRUE(!heca__range_sponsored(h, (uintptr_t)s->base, s->m0 * PG));
	ASSERT_TRUE(!heca__range_sponsored(h, (uintptr_t)tail, ntail * PG));
	munmap(s->base, s->m0 * PG);
	munmap(tail, ntail * PG);
}

static void settle_remap(struct slot *s)
{
	uint64_t keep = s->n;
	int w;

	if (s->rc[1] < 0)
		T_FAILF("slot %d: remap of %llu to %llu pages: %s", s->idx,
			(unsigned long long)s->n, (unsigned long long)s->n2,
			heca_strerror(s->rc[1]));
	if (s->rc[1] == 0 && s->out != (uintptr_t)s->base) {
		/* Moved before any unregister came: they found nothing at the old base. */
		uint8_t *p = (uint8_t *)s->out;
		winner(s, 0);
		s->moved++;
		expect(s, p, 0, s->n, false, "moved segment");
		expect(s, p, s->n, s->n2, true, "what the move added");
		ASSERT_EQ(heca_unmap(h, p), 0);
		return;
	}
	if (s->rc[1] == 0)
		keep = s->n2; /* grown or shrunk in place */
	else
		s->remap_late++; /* an unregister came first: nothing sponsored to remap */
	w = winner(s, 1);
	if (s->act[w] == A_UNMAP)
		return;
	expect(s, s->base, 0, s->n < keep ? s->n : keep, s->flags[w] & HECA_UNREG_DISCARD,
	       "after the unregister");
	if (keep > s->n)
		expect(s, s->base, s->n, keep, true, "grown part, after the unregister");
	ASSERT_TRUE(!heca__range_sponsored(h, (uintptr_t)s->base, keep * PG));
	munmap(s->base, keep * PG);
}

static void *racer(void *arg)
{
	struct slot *s = ((struct racer_arg *)arg)->s;
	int i = ((struct racer_arg *)arg)->i;

	for (;;) {
		if (i == 0) {
			s->quit = atomic_load(&stop) || atomic_load(&bad);
			if (!s->quit)
				prepare(s);
		}
		pthread_barrier_wait(&s->bar);
		if (s->quit)
			break;
		act(s, i);
		pthread_barrier_wait(&s->bar);
		if (i != 0)
			continue;
		if (round_kind(s) != R_QUIET) {
			pthread_mutex_lock(&map_mu);
			freeing--;
			if (round_kind(s) == R_MOVES)
				moving = false;
			pthread_cond_broadcast(&map_cv);
			pthread_mutex_unlock(&map_mu);
		}
		if (s->guard)
			munmap(s->guard, PG);
		switch (s->type) {
		case T_SAME_BASE:
			settle_same_base(s);
			break;
		case T_SPLIT:
			settle_split(s);
			break;
		case T_REMAP:
			settle_remap(s);
			break;
		}
	}
	return NULL;
}

static void *fault(void *arg)
{
	struct faulter *f = arg;

	while (!atomic_load(&stop) && !atomic_load(&bad)) {
		uint64_t r = rnd(&f->seed), p = r % FPAGES;
		if ((r >> 32) % 3 == 0) {
			t_fill_pages(f->base, p, p + 1, ++f->ver[p]);
		} else if (t_check_pages(f->base, p, p + 1, f->ver[p])) {
			fprintf(stderr, "faulting thread: page %llu does not hold version %llu\n",
				(unsigned long long)p, (unsigned long long)f->ver[p]);
			atomic_fetch_add(&bad, 1);
		}
		f->ops++;
	}
	return NULL;
}

int main(void)
{
	struct t_sponsor sp;
	struct heca_options o;
	struct heca_stats st;
	const char *env;
	uint64_t seed = (uint64_t)t_now_ms() * 2654435761u | 1, seconds = 6;
	int rc;

	t_require_uffd();
	if ((env = getenv("HECA_LIFE_SEED")))
		seed = strtoull(env, NULL, 0) | 1;
	if ((env = getenv("HECA_LIFE_SECONDS")))
		seconds = strtoull(env, NULL, 0);
	fprintf(stderr, "HECA_LIFE_SEED=%llu\n", (unsigned long long)seed);
	signal(SIGALRM, on_alarm);
	alarm((unsigned int)seconds + 120);

	t_sponsor_start(&sp, "1G", NULL);
	heca_options_init(&o);
	o.sponsors = sp.addr;
	o.local_budget = 64 * PG;
	o.replicas = 1;
	rc = heca_open(&o, &h);
	if (rc)
		T_FAILF("heca_open: %s %s", heca_strerror(rc), heca_last_error());

	for (int i = 0; i < FAULTERS; i++) {
		rc = heca_map(h, FPAGES * PG, (void **)&fl[i].base);
		if (rc)
			T_FAILF("heca_map: %s", heca_strerror(rc));
		for (uint64_t p = 0; p < FPAGES; p++)
			fl[i].ver[p] = 1;
		t_fill_pages(fl[i].base, 0, FPAGES, 1);
		fl[i].seed = rnd(&seed);
	}
	for (int i = 0; i < FAULTERS; i++)
		pthread_create(&fl[i].t, NULL, fault, &fl[i]);
	for (int i = 0; i < SLOTS; i++) {
		slots[i].idx = i;
		slots[i].seed = rnd(&seed);
		pthread_barrier_init(&slots[i].bar, NULL, RACERS);
	}
	for (int i = 0; i < SLOTS; i++)
		for (int k = 0; k < RACERS; k++)
			slots[i].arg[k] = (struct racer_arg){&slots[i], k};
	for (int i = 0; i < SLOTS; i++)
		for (int k = 0; k < RACERS; k++)
			pthread_create(&slots[i].t[k], NULL, racer, &slots[i].arg[k]);

	for (uint64_t t0 = (uint64_t)t_now_ms();
	     (uint64_t)t_now_ms() - t0 < seconds * 1000 && !atomic_load(&bad);)
		usleep(100000);
	atomic_store(&stop, true);
	for (int i = 0; i < SLOTS; i++)
		for (int k = 0; k < RACERS; k++)
			pthread_join(slots[i].t[k], NULL);
	for (int i = 0; i < FAULTERS; i++)
		pthread_join(fl[i].t, NULL);
	ASSERT_EQ(atomic_load(&bad), 0);

	for (int i = 0; i < SLOTS; i++) {
		struct slot *s = &slots[i];
		fprintf(stderr,
			"slot %d: rounds: %llu same base, %llu split, %llu remap; won by "
			"heca_unmap %llu, heca_unregister %llu; split first %llu; moved first "
			"%llu; remap after the unregister %llu\n",
			i, (unsigned long long)s->rounds[T_SAME_BASE],
			(unsigned long long)s->rounds[T_SPLIT],
			(unsigned long long)s->rounds[T_REMAP],
			(unsigned long long)s->won_unmap, (unsigned long long)s->won_unreg,
			(unsigned long long)s->split_first, (unsigned long long)s->moved,
			(unsigned long long)s->remap_late);
		pthread_barrier_destroy(&s->bar);
	}
	/* Nothing left behind, nothing counted twice. */
	ASSERT_EQ(heca_get_stats(h, &st), 0);
	ASSERT_EQ(st.segments, FAULTERS);
	for (int i = 0; i < FAULTERS; i++) {
		for (uint64_t p = 0; p < FPAGES; p++)
			if (t_check_pages(fl[i].base, p, p + 1, fl[i].ver[p]))
				T_FAILF("faulting thread %d: page %llu wrong at the end", i,
					(unsigned long long)p);
		fprintf(stderr, "faulting thread %d: %llu accesses\n", i,
			(unsigned long long)fl[i].ops);
		ASSERT_EQ(heca_unmap(h, fl[i].base), 0);
	}
	ASSERT_EQ(heca_get_stats(h, &st), 0);
	ASSERT_EQ(st.segments, 0);
	ASSERT_EQ(st.resident_pages, 0);
	ASSERT_EQ(st.pinned_pages, 0);
	heca_close(h);
	alarm(0);
	ASSERT_EQ(t_sponsor_stop(&sp, 0), 0);
	return T_PASS;
}
