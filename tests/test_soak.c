// SPDX-License-Identifier: MIT
/*
 * test_soak.c - a bounded soak of the remote store with two copies over loopback sponsors:
 * many threads write and read a region many times the local budget, every page checked
 * against a shadow of versions, while a seeded chaos thread kills (kill -9), stops, fills,
 * drains and adds sponsors one at a time. Nothing may read wrong, nothing may be lost, and
 * the copies must be restored after each event. HECA_SOAK_SECONDS sets the length (120),
 * HECA_SOAK_SEED repeats a run's chaos.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "heca.h"
#include "sponsor_client.h"

#define PG 4096u
#define MIB (1ull << 20)
#define WORDS (PG / 8)

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif

/* Sanitized builds run several times slower: a smaller region and fewer threads keep the
 * same number of chaos events meaningful. */
#ifdef SANITIZED
#define REGION_MIB 8
#define BUDGET (1 * MIB)
#define NWORKERS 4
#define CAPACITY "16M"
#define STRIPE_PAGES 64 /* more stripes in the smaller region */
#else
#define REGION_MIB 48
#define BUDGET (2 * MIB)
#define NWORKERS 5
#define CAPACITY "48M"
#define STRIPE_PAGES 0 /* the default, 1 MiB */
#endif

#define NSTART 5	/* sponsors at the start */
#define MAXACTIVE 7	/* sponsors in use at most */
#define MAXSLOTS 64	/* every sponsor ever started (the demander uses at most 64) */
#define MEMBER_LIMIT 60 /* sponsors added to the demander at most, strays included */
#define HEAL_MS 60000	/* copies must be restored this fast after every event */
#define STUCK_MS 90000	/* a worker without progress this long is hung (grace 60 s) */

enum ev { EV_KILL, EV_STOP, EV_FILL, EV_DRAIN, EV_ADD, EV_N };
static const char *const ev_name[EV_N] = {"kill -9", "stop/cont", "fill", "drain", "add"};

enum state { S_FREE, S_ACTIVE, S_GONE, S_STRAY };

struct slot {
	struct t_sponsor s;
	enum state state;
};

struct worker {
	pthread_t t;
	int id;
	uint64_t from, to, seed;
	atomic_uint_least64_t reads, writes, progress_ms, stalls_1s;
	atomic_uint_least64_t max_us, max_page;
	atomic_int cur_page;
};

static struct heca *h;
static uint8_t *region;
static uint64_t npages;
static uint32_t *shadow; /* version of each page; page i is written only by its owner */
static struct worker wk[NWORKERS];
static struct slot sl[MAXSLOTS];
static int nslots, members;
static atomic_bool stop_workers, stop_chaos, chaos_done, chaos_release;
static double t_start;
static uint64_t ev_count[EV_N], ev_heal_max_ms[EV_N], ev_heal_sum_ms[EV_N];
static atomic_int log_lines;

static double el(void)
{
	return (t_now_ms() - t_start) / 1e3;
}

static void lg(void *arg, enum heca_log_level l, const char *m)
{
	(void)arg;
	if (l > HECA_LOG_WARN)
		return;
	if (atomic_fetch_add(&log_lines, 1) < 400)
		fprintf(stderr, "  [%6.1f s heca %d] %s\n", el(), l, m);
}

static void on_bus(int sig, siginfo_t *si, void *uc)
{
	char msg[160];
	uint64_t page = ((uintptr_t)si->si_addr - (uintptr_t)region) / PG;
	int n;

	(void)sig;
	(void)uc;
	n = snprintf(msg, sizeof(msg),
		     "FAIL: SIGBUS at %p: page %llu (version %u) lost at %.1f s\n", si->si_addr,
		     (unsigned long long)page, page < npages ? shadow[page] : 0, el());
	if (write(2, msg, (size_t)n) < 0)
		_exit(T_FAIL);
	_exit(T_FAIL);
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Version 0 is a page never written: it reads as zero. */
static uint64_t pat(uint64_t page, uint64_t ver, uint64_t k)
{
	uint64_t x;

	if (!ver)
		return 0;
	x = (page << 36) ^ (ver * 0x9e3779b97f4a7c15ull) ^ (k * 0xff51afd7ed558ccdull);
	return x ^ (x >> 29);
}

static void write_page(uint64_t page, uint32_t ver)
{
	uint64_t *w = (uint64_t *)(region + page * PG);

	for (uint64_t k = 0; k < WORDS; k++)
		w[k] = pat(page, ver, k);
}

/* Which version word k of a page seems to hold: -1 none of 0..max. */
static long version_of(uint64_t page, uint64_t k, uint64_t word, uint32_t max)
{
	for (uint64_t v = 0; v <= max; v++)
		if (word == pat(page, v, k))
			return (long)v;
	return -1;
}

/* Check a page against its shadow version; a wrong page ends the test at once, saying what
 * it holds instead. */
static void verify_page(uint64_t page, const char *who)
{
	const uint64_t *w = (const uint64_t *)(region + page * PG);
	uint32_t ver = shadow[page];

	for (uint64_t k = 0; k < WORDS; k++) {
		uint64_t got = w[k];
		if (got == pat(page, ver, k))
			continue;
		T_FAILF("%s: page %llu word %llu at %.1f s: expected version %u, found version %ld "
			"(word 0 is version %ld, last word version %ld; %#llx)",
			who, (unsigned long long)page, (unsigned long long)k, el(), ver,
			version_of(page, k, got, ver + 2), version_of(page, 0, w[0], ver + 2),
			version_of(page, WORDS - 1, w[WORDS - 1], ver + 2),
			(unsigned long long)got);
	}
}

/*
 * A worker owns pages [from, to): it writes the next version of a page or verifies one, one
 * page or a run of pages at a time, at random. Each page access is timed: with a budget this
 * small nearly every one faults, so the longest is the longest fault stall.
 */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint64_t n = w->to - w->from;
	char who[32];

	snprintf(who, sizeof(who), "worker %d", w->id);
	while (!atomic_load(&stop_workers)) {
		uint64_t r = rnd(&w->seed), first = w->from + r % n;
		uint64_t len = (r >> 32) % 4 == 0 ? 1 + (r >> 40) % 64 : 1;
		bool wr = (r >> 20) & 1;

		for (uint64_t page = first; page < first + len && page < w->to; page++) {
			double t0 = t_now_ms(), dt;
			uint64_t us;

			atomic_store(&w->cur_page, (int)page);
			if (wr) {
				write_page(page, shadow[page] + 1);
				shadow[page]++;
				atomic_fetch_add(&w->writes, 1);
			} else {
				verify_page(page, who);
				atomic_fetch_add(&w->reads, 1);
			}
			dt = t_now_ms() - t0;
			us = (uint64_t)(dt * 1e3);
			if (us > atomic_load(&w->max_us)) {
				atomic_store(&w->max_us, us);
				atomic_store(&w->max_page, page);
			}
			if (dt >= 1000)
				atomic_fetch_add(&w->stalls_1s, 1);
			atomic_store(&w->progress_ms, (uint64_t)(t_now_ms() - t_start));
		}
	}
	return NULL;
}

static void cluster_line(const char *why)
{
	struct heca_cluster_stats cs;
	struct heca_stats st;

	heca_get_cluster_stats(h, &cs);
	heca_get_stats(h, &st);
	fprintf(stderr,
		"  %s: stripes %llu, under-replicated %llu, moving %llu, lost %llu, sponsors up "
		"%u of %u; pinned %llu, resident %llu, write-back errors %llu, lost pages %llu\n",
		why, (unsigned long long)cs.stripes, (unsigned long long)cs.under_replicated,
		(unsigned long long)cs.moving, (unsigned long long)cs.lost, cs.sponsors_up,
		cs.sponsors, (unsigned long long)st.pinned_pages,
		(unsigned long long)st.resident_pages, (unsigned long long)st.writeback_errors,
		(unsigned long long)st.pages_lost);
}

/* Wait until every stripe has its two copies and nothing moves, seen for 250 ms in a row; a
 * lost stripe or HEAL_MS without that fails the test. Returns the milliseconds waited. */
static uint64_t wait_healthy(const char *what)
{
	double t0 = t_now_ms(), ok_since = 0;

	for (;;) {
		struct heca_cluster_stats cs;
		double now = t_now_ms();

		heca_get_cluster_stats(h, &cs);
		if (cs.lost) {
			cluster_line("lost stripes");
			T_FAILF("%s: %llu stripes lost at %.1f s", what,
				(unsigned long long)cs.lost, el());
		}
		if (cs.under_replicated == 0 && cs.moving == 0) {
			if (!ok_since)
				ok_since = now;
			if (now - ok_since >= 250)
				return (uint64_t)(ok_since - t0);
		} else {
			ok_since = 0;
		}
		if (now - t0 > HEAL_MS) {
			cluster_line("not healthy");
			T_FAILF("%s: copies not restored within %d s (at %.1f s)", what,
				HEAL_MS / 1000, el());
		}
		usleep(20000);
	}
}

static bool sponsor_info(const char *addr, struct heca_sponsor_info *out)
{
	static struct heca_sponsor_info info[MAXSLOTS + 8];
	int n = heca_get_sponsors(h, info, MAXSLOTS + 8);

	for (int i = 0; i < n && i < MAXSLOTS + 8; i++)
		if (!strcmp(info[i].addr, addr)) {
			*out = info[i];
			return true;
		}
	return false;
}

static int active_count(void)
{
	int n = 0;

	for (int i = 0; i < nslots; i++)
		n += sl[i].state == S_ACTIVE;
	return n;
}

static struct slot *pick_active(uint64_t *seed)
{
	int n = active_count(), k;

	ASSERT_GE(n, 1);
	k = (int)(rnd(seed) % (uint64_t)n);
	for (int i = 0; i < nslots; i++)
		if (sl[i].state == S_ACTIVE && k-- == 0)
			return &sl[i];
	return NULL;
}

/* Start a fresh sponsor and add it. A new sponsor may get the port of one that is gone,
 * which the demander already knows: that one stays running, unused by the chaos. */
static struct slot *add_fresh(void)
{
	for (int tries = 0; tries < 4; tries++) {
		struct slot *s;
		int rc;

		ASSERT_LE(nslots + 1, MAXSLOTS);
		s = &sl[nslots++];
		t_sponsor_start(&s->s, CAPACITY, NULL);
		rc = heca_add_sponsor(h, s->s.addr);
		if (rc == 0) {
			s->state = S_ACTIVE;
			members++;
			return s;
		}
		if (rc != -EEXIST)
			T_FAILF("heca_add_sponsor(%s): %s", s->s.addr, heca_strerror(rc));
		printf("  [%6.1f s] %s was a sponsor's address before: kept aside\n", el(),
		       s->s.addr);
		s->state = S_STRAY;
	}
	T_FAILF("no fresh sponsor address after 4 tries");
}

static void sleep_ms_unless_stopped(int ms)
{
	for (int t = 0; t < ms && !atomic_load(&stop_chaos); t += 50)
		usleep(50000);
}

static uint64_t ev_kill(uint64_t *seed, char *what, size_t len)
{
	struct slot *s = pick_active(seed), *f;
	struct heca_sponsor_info info;
	double t0 = t_now_ms();
	uint64_t heal, noticed;

	kill(s->s.pid, SIGKILL);
	waitpid(s->s.pid, NULL, 0);
	s->s.pid = 0;
	s->state = S_GONE;
	while (sponsor_info(s->s.addr, &info) && info.up) {
		if (t_now_ms() - t0 > 15000)
			T_FAILF("kill -9 of %s not noticed in 15 s", s->s.addr);
		usleep(2000);
	}
	noticed = (uint64_t)(t_now_ms() - t0);
	heal = wait_healthy("after kill -9") + noticed;
	f = add_fresh();
	heal += wait_healthy("after adding a sponsor for the killed one");
	snprintf(what, len, "%s killed, noticed in %llu ms, copies restored in %llu ms; %s added",
		 s->s.addr, (unsigned long long)noticed, (unsigned long long)heal, f->s.addr);
	return heal;
}

static uint64_t ev_stop(uint64_t *seed, char *what, size_t len)
{
	struct slot *s = pick_active(seed);
	int ms = 1000 + (int)(rnd(seed) % 3001);
	uint64_t heal;

	kill(s->s.pid, SIGSTOP);
	usleep((useconds_t)ms * 1000);
	kill(s->s.pid, SIGCONT);
	heal = wait_healthy("after a stopped sponsor came back");
	snprintf(what, len, "%s stopped %.1f s, copies mended %llu ms after SIGCONT", s->s.addr,
		 ms / 1e3, (unsigned long long)heal);
	return heal;
}

static uint64_t ev_fill(uint64_t *seed, char *what, size_t len)
{
	struct slot *s = pick_active(seed);
	int ms = 2000 + (int)(rnd(seed) % 3001), fd;
	long n = t_sponsor_fill(s->s.addr, &fd);
	uint64_t heal;

	if (n < 0)
		T_FAILF("filling %s: %s", s->s.addr, strerror((int)-n));
	usleep((useconds_t)ms * 1000);
	ASSERT_EQ(t_sponsor_unfill(fd), 0);
	heal = wait_healthy("after a full sponsor had room again");
	snprintf(what, len, "%s full (%ld pages taken) for %.1f s, healthy %llu ms after",
		 s->s.addr, n, ms / 1e3, (unsigned long long)heal);
	return heal;
}

static uint64_t ev_drain(uint64_t *seed, char *what, size_t len)
{
	struct slot *s = pick_active(seed), *f;
	struct heca_sponsor_info info;
	double t0 = t_now_ms();
	uint64_t drained, heal;
	int rc = heca_drain_sponsor(h, s->s.addr);

	if (rc)
		T_FAILF("heca_drain_sponsor(%s): %s", s->s.addr, heca_strerror(rc));
	s->state = S_GONE;
	for (;;) {
		if (!sponsor_info(s->s.addr, &info))
			T_FAILF("drained sponsor %s not listed", s->s.addr);
		if (info.stripes == 0)
			break;
		if (t_now_ms() - t0 > HEAL_MS) {
			cluster_line("drain");
			T_FAILF("%s still holds %llu stripes %d s after the drain", s->s.addr,
				(unsigned long long)info.stripes, HEAL_MS / 1000);
		}
		usleep(20000);
	}
	drained = (uint64_t)(t_now_ms() - t0);
	heal = wait_healthy("after a drain") + drained;
	t_sponsor_stop(&s->s, 0);
	f = add_fresh();
	heal += wait_healthy("after adding a sponsor for the drained one");
	snprintf(what, len, "%s drained in %llu ms and stopped; %s added, healthy after %llu ms",
		 s->s.addr, (unsigned long long)drained, f->s.addr, (unsigned long long)heal);
	return heal;
}

static uint64_t ev_add(uint64_t *seed, char *what, size_t len)
{
	struct slot *s;
	uint64_t heal;

	(void)seed;
	s = add_fresh();
	heal = wait_healthy("after adding a sponsor");
	snprintf(what, len, "%s added, healthy after %llu ms", s->s.addr, (unsigned long long)heal);
	return heal;
}

static bool eligible(enum ev e)
{
	int a = active_count();
	bool room = members < MEMBER_LIMIT && nslots + 4 < MAXSLOTS;

	/* At least two sponsors with room stay up at every moment: two copies stay possible. */
	switch (e) {
	case EV_KILL:
	case EV_DRAIN:
		return a >= 4 && room;
	case EV_STOP:
	case EV_FILL:
		return a >= 3;
	case EV_ADD:
		return a < MAXACTIVE && room;
	default:
		return false;
	}
}

/* One fault at a time: each event ends with the copies restored before the next begins. */
static void *chaos_main(void *arg)
{
	uint64_t seed = *(uint64_t *)arg;
	static uint64_t (*const fn[EV_N])(uint64_t *, char *, size_t) = {ev_kill, ev_stop, ev_fill,
									 ev_drain, ev_add};

	sleep_ms_unless_stopped(2000);
	while (!atomic_load(&stop_chaos)) {
		char what[256];
		double t0;
		enum ev e;
		uint64_t heal;

		do
			e = (enum ev)(rnd(&seed) % EV_N);
		while (!eligible(e));
		t0 = el();
		heal = fn[e](&seed, what, sizeof(what));
		ev_count[e]++;
		ev_heal_sum_ms[e] += heal;
		if (heal > ev_heal_max_ms[e])
			ev_heal_max_ms[e] = heal;
		printf("  [%6.1f s] %-9s %s\n", t0, ev_name[e], what);
		sleep_ms_unless_stopped(1000 + (int)(rnd(&seed) % 2001));
	}
	/* The sponsors this thread started die with it (PR_SET_PDEATHSIG): it stays until the
	 * test is done with them. */
	atomic_store(&chaos_done, true);
	while (!atomic_load(&chaos_release))
		usleep(20000);
	return NULL;
}

/* Fail if a worker has made no progress for STUCK_MS; with HECA_SOAK_HOLD set, stay alive
 * instead so that a debugger can look at the hang. */
static void watch_workers(void)
{
	uint64_t now = (uint64_t)(t_now_ms() - t_start);

	for (int i = 0; i < NWORKERS; i++) {
		uint64_t p = atomic_load(&wk[i].progress_ms);
		if (now > p + STUCK_MS) {
			cluster_line("hang");
			fprintf(stderr, "FAIL: worker %d stuck on page %d for %.0f s (pid %d)\n", i,
				atomic_load(&wk[i].cur_page), (now - p) / 1e3, (int)getpid());
			if (getenv("HECA_SOAK_HOLD"))
				for (;;)
					pause();
			exit(T_FAIL);
		}
	}
}

int main(void)
{
	const char *env = getenv("HECA_SOAK_SECONDS");
	int seconds = env ? atoi(env) : 120;
	uint64_t seed, verified = 0, reads = 0, writes = 0, stalls = 0, max_us = 0, max_page = 0;
	struct sigaction sa = {.sa_sigaction = on_bus, .sa_flags = SA_SIGINFO};
	struct heca_options o;
	struct heca_cluster_stats cs;
	struct heca_stats st;
	char list[NSTART * 64];
	pthread_t chaos;
	int rc;

	t_require_uffd();
	setvbuf(stdout, NULL, _IONBF, 0);
	env = getenv("HECA_SOAK_SEED");
	seed = env ? strtoull(env, NULL, 0) : ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
	if (!seed)
		seed = 1;
	npages = (uint64_t)REGION_MIB * MIB / PG;
	printf("soak: %d s, seed %llu (HECA_SOAK_SEED=%llu repeats the chaos), %u MiB region, "
	       "%llu KiB budget, %d threads, %d sponsors of %s, two copies%s\n",
	       seconds, (unsigned long long)seed, (unsigned long long)seed, REGION_MIB,
	       (unsigned long long)(BUDGET / 1024), NWORKERS, NSTART, CAPACITY,
#ifdef SANITIZED
	       " (sanitized build: smaller)"
#else
	       ""
#endif
	);
	t_start = t_now_ms();

	list[0] = '\0';
	for (int i = 0; i < NSTART; i++) {
		t_sponsor_start(&sl[i].s, CAPACITY, NULL);
		sl[i].state = S_ACTIVE;
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? "," : "",
			 sl[i].s.addr);
	}
	nslots = members = NSTART;
	heca_options_init(&o);
	o.sponsors = list;
	o.local_budget = BUDGET;
	o.replicas = 2;
	o.stripe_pages = STRIPE_PAGES;
	o.detect_ms = 1000;
	o.timeout_ms = 2000;
	o.log = lg;
	o.log_level = HECA_LOG_WARN;
	rc = heca_open(&o, &h);
	if (rc)
		T_FAILF("heca_open: %s (%s)", heca_strerror(rc), heca_last_error());
	rc = heca_map(h, npages * PG, (void **)&region);
	if (rc)
		T_FAILF("heca_map: %s (%s)", heca_strerror(rc), heca_last_error());
	shadow = calloc(npages, sizeof(*shadow));
	ASSERT_TRUE(shadow != NULL);
	sigaction(SIGBUS, &sa, NULL);

	for (int i = 0; i < NWORKERS; i++) {
		wk[i].id = i;
		wk[i].from = npages * (uint64_t)i / NWORKERS;
		wk[i].to = npages * (uint64_t)(i + 1) / NWORKERS;
		wk[i].seed = seed * 0x9e3779b97f4a7c15ull + (uint64_t)i * 0x632be59bd9b4e019ull + 1;
		ASSERT_EQ(pthread_create(&wk[i].t, NULL, worker_main, &wk[i]), 0);
	}
	ASSERT_EQ(pthread_create(&chaos, NULL, chaos_main, &seed), 0);
	while (el() < seconds) {
		usleep(200000);
		watch_workers();
	}
	atomic_store(&stop_chaos, true);
	/* The chaos ends its event (copies restored) while the workers go on. */
	while (!atomic_load(&chaos_done)) {
		usleep(200000);
		watch_workers();
	}
	atomic_store(&stop_workers, true);
	for (int i = 0; i < NWORKERS; i++) {
		pthread_join(wk[i].t, NULL);
		reads += atomic_load(&wk[i].reads);
		writes += atomic_load(&wk[i].writes);
		stalls += atomic_load(&wk[i].stalls_1s);
		if (atomic_load(&wk[i].max_us) > max_us) {
			max_us = atomic_load(&wk[i].max_us);
			max_page = atomic_load(&wk[i].max_page);
		}
	}
	printf("  [%6.1f s] chaos and workers stopped\n", el());
	wait_healthy("at the end");
	for (uint64_t i = 0; i < npages; i++) {
		verify_page(i, "final check");
		verified += shadow[i] != 0;
	}
	ASSERT_TRUE(heca_get_stats(h, &st) == 0);
	ASSERT_TRUE(heca_get_cluster_stats(h, &cs) == 0);
	printf("  [%6.1f s] every page verified\n\n", el());

	printf("  %-10s %6s %14s %14s\n", "event", "count", "healthy max", "healthy mean");
	for (int e = 0; e < EV_N; e++)
		printf("  %-10s %6llu %11.1f s %11.1f s\n", ev_name[e],
		       (unsigned long long)ev_count[e], ev_heal_max_ms[e] / 1e3,
		       ev_count[e] ? ev_heal_sum_ms[e] / 1e3 / (double)ev_count[e] : 0.0);
	printf("  %-34s %12llu\n", "page writes by the workers", (unsigned long long)writes);
	printf("  %-34s %12llu\n", "page reads verified by the workers", (unsigned long long)reads);
	printf("  %-34s %12llu of %llu\n", "pages written, verified at the end",
	       (unsigned long long)verified, (unsigned long long)npages);
	printf("  %-34s %12llu\n", "faults (read, write, wp)",
	       (unsigned long long)(st.faults_read + st.faults_write + st.faults_wp));
	printf("  %-34s %12llu\n", "pages fetched", (unsigned long long)st.pages_fetched);
	printf("  %-34s %12llu\n", "pages written back", (unsigned long long)st.pages_written_back);
	printf("  %-34s %12llu\n", "write-backs failed", (unsigned long long)st.writeback_errors);
	printf("  %-34s %12llu (%llu pages)\n", "stripe copies made",
	       (unsigned long long)cs.copied_stripes, (unsigned long long)cs.copied_pages);
	printf("  %-34s %12llu\n", "stripes", (unsigned long long)cs.stripes);
	printf("  %-34s %12u of %u\n", "sponsors up at the end", cs.sponsors_up, cs.sponsors);
	printf("  %-34s %12.1f ms (page %llu)\n", "max fault stall (worker)", max_us / 1e3,
	       (unsigned long long)max_page);
	printf("  %-34s %12llu\n", "page accesses over 1 s", (unsigned long long)stalls);
	printf("  %-34s %12.1f ms\n", "max engine fault latency", st.lat_max_ns / 1e6);
	printf("  %-34s %12llu\n", "pages kept locally now", (unsigned long long)st.pinned_pages);
	printf("  %-34s %12llu\n", "pages lost", (unsigned long long)st.pages_lost);
	printf("  %-34s %12d\n", "library warnings", atomic_load(&log_lines));
	ASSERT_EQ(st.pages_lost, 0);
	ASSERT_EQ(cs.lost, 0);
	ASSERT_GE(writes, 1);

	heca_close(h);
	atomic_store(&chaos_release, true);
	pthread_join(chaos, NULL);
	for (int i = 0; i < nslots; i++)
		if (sl[i].s.pid > 0)
			t_sponsor_stop(&sl[i].s, 0);
	printf("test_soak: all passed (%.1f s)\n", el());
	return 0;
}
