// SPDX-License-Identifier: MIT
/*
 * test_churn.c - many threads write and read random pages of a region with a budget of a few
 * pages, every read checked against a shadow copy; other threads read shared immutable pages
 * at the same time, so several threads fault on one page at once. The budget is sampled while
 * they run. Bounded in time.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "harness.h"
#include "heca.h"

#define PG 4096u
#define NPAGES 256      /* mutable pages, each guarded by its own lock */
#define NIMMUTABLE 64   /* pages written once, then read by everyone without locks */
#define WRITERS 4
#define READERS 2

struct churn {
	uint8_t *region;
	uint64_t version[NPAGES]; /* shadow: the page holds pattern(page, version) */
	pthread_mutex_t lock[NPAGES];
	atomic_bool stop;
	atomic_uint_least64_t ops, bad;
};

static uint64_t pat(uint64_t page, uint64_t ver, uint64_t k)
{
	uint64_t x = (page << 40) ^ (ver * 0x9e3779b97f4a7c15ull) ^ (k * 0xff51afd7ed558ccdull);
	return x ^ (x >> 31);
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int page_ok(const uint8_t *p, uint64_t page, uint64_t ver)
{
	const uint64_t *w = (const uint64_t *)p;
	for (uint64_t k = 0; k < PG / 8; k++)
		if (w[k] != pat(page, ver, k))
			return 0;
	return 1;
}

/* Say what a wrong page holds: which version each part of it seems to be. */
static void diagnose(const uint8_t *p, uint64_t page, uint64_t ver)
{
	const uint64_t *w = (const uint64_t *)p;
	long last = -2;
	for (uint64_t k = 0; k < PG / 8; k++) {
		long found = -1;
		for (uint64_t v = 0; v <= ver + 2; v++)
			if (w[k] == pat(page, v, k))
				found = (long)v;
		if (found != last || k == PG / 8 - 1)
			fprintf(stderr, "  page %llu word %llu: version %ld%s\n",
				(unsigned long long)page, (unsigned long long)k, found,
				found < 0 ? (w[k] ? " (garbage)" : " (zero)") : "");
		last = found;
	}
}

static void *writer(void *arg)
{
	struct churn *c = arg;
	uint64_t seed = (uint64_t)pthread_self() | 1;

	while (!atomic_load(&c->stop)) {
		uint64_t r = rnd(&seed), page = r % NPAGES;
		uint8_t *p = c->region + page * PG;
		pthread_mutex_lock(&c->lock[page]);
		if ((r >> 32) % 3 == 0) {
			/* Write a whole new version; sometimes only half, then the rest, so a
			 * page is evicted while partly written. */
			uint64_t v = c->version[page] + 1;
			for (uint64_t k = 0; k < PG / 8; k++)
				((uint64_t *)p)[k] = pat(page, v, k);
			c->version[page] = v;
		} else if (!page_ok(p, page, c->version[page])) {
			atomic_fetch_add(&c->bad, 1);
			fprintf(stderr, "page %llu does not hold version %llu\n",
				(unsigned long long)page, (unsigned long long)c->version[page]);
			diagnose(p, page, c->version[page]);
		}
		pthread_mutex_unlock(&c->lock[page]);
		atomic_fetch_add_explicit(&c->ops, 1, memory_order_relaxed);
	}
	return NULL;
}

static void *reader(void *arg)
{
	struct churn *c = arg;
	uint64_t seed = (uint64_t)pthread_self() | 3;

	while (!atomic_load(&c->stop)) {
		uint64_t page = rnd(&seed) % NIMMUTABLE;
		if (!page_ok(c->region + (NPAGES + page) * PG, NPAGES + page, 7))
			atomic_fetch_add(&c->bad, 1);
		atomic_fetch_add_explicit(&c->ops, 1, memory_order_relaxed);
	}
	return NULL;
}

static void lg(void *arg, enum heca_log_level l, const char *m)
{
	(void)arg;
	fprintf(stderr, "  [heca %d] %s\n", l, m);
}

/* How often the budget was sampled, and the most local pages a sample saw. */
struct budget_watch {
	uint64_t samples, max_resident, max_local;
};

/*
 * One sample of what the budget bounds, taken while the threads run: resident pages never
 * above the budget, which has no slack (docs/design.md: pages kept past it are pinned ones,
 * counted against the local limit instead); resident plus pinned never above the local limit,
 * twice the budget here.
 */
static void sample_budget(struct heca *h, struct budget_watch *w)
{
	struct heca_stats st;

	ASSERT_EQ(heca_get_stats(h, &st), 0);
	w->samples++;
	if (st.resident_pages > w->max_resident)
		w->max_resident = st.resident_pages;
	if (st.resident_pages + st.pinned_pages > w->max_local)
		w->max_local = st.resident_pages + st.pinned_pages;
	if (st.resident_pages > st.budget_pages)
		T_FAILF("sample %llu: %llu pages resident, budget %llu",
			(unsigned long long)w->samples, (unsigned long long)st.resident_pages,
			(unsigned long long)st.budget_pages);
	if (st.resident_pages + st.pinned_pages > 2 * st.budget_pages)
		T_FAILF("sample %llu: %llu resident + %llu pinned pages, local limit %llu",
			(unsigned long long)w->samples, (unsigned long long)st.resident_pages,
			(unsigned long long)st.pinned_pages,
			(unsigned long long)(2 * st.budget_pages));
}

static void run(const char *sponsors, uint64_t budget_pages, double seconds)
{
	struct heca_options o;
	struct heca *h;
	struct heca_stats st;
	struct budget_watch bw = {0};
	static struct churn c;
	pthread_t t[WRITERS + READERS];
	double t0;
	int rc;

	memset(&c, 0, sizeof(c));
	heca_options_init(&o);
	o.sponsors = sponsors;
	o.local_budget = budget_pages * PG;
	o.prefetch_pages = 4;
	o.log = lg;
	o.log_level = HECA_LOG_WARN;
	rc = heca_open(&o, &h);
	if (rc)
		T_FAILF("heca_open(%s): %s %s", sponsors, heca_strerror(rc), heca_last_error());
	ASSERT_EQ(heca_map(h, (NPAGES + NIMMUTABLE) * PG, (void **)&c.region), 0);
	for (uint64_t i = 0; i < NPAGES; i++)
		pthread_mutex_init(&c.lock[i], NULL);
	for (uint64_t i = 0; i < NIMMUTABLE; i++)
		for (uint64_t k = 0; k < PG / 8; k++)
			((uint64_t *)(c.region + (NPAGES + i) * PG))[k] = pat(NPAGES + i, 7, k);
	/* Version 0 of every mutable page: written before the threads start. */
	for (uint64_t i = 0; i < NPAGES; i++)
		for (uint64_t k = 0; k < PG / 8; k++)
			((uint64_t *)(c.region + i * PG))[k] = pat(i, 0, k);
	for (int i = 0; i < WRITERS; i++)
		pthread_create(&t[i], NULL, writer, &c);
	for (int i = 0; i < READERS; i++)
		pthread_create(&t[WRITERS + i], NULL, reader, &c);
	t0 = t_now_ms();
	while (t_now_ms() - t0 < seconds * 1000 && !atomic_load(&c.bad)) {
		sample_budget(h, &bw);
		usleep(1000);
	}
	atomic_store(&c.stop, true);
	for (int i = 0; i < WRITERS + READERS; i++)
		pthread_join(t[i], NULL);
	/* At least one sample per 20 ms, or the bound was not watched. */
	ASSERT_GE(bw.samples, seconds * 50);
	/* A final pass over everything, single-threaded. */
	for (uint64_t i = 0; i < NPAGES; i++)
		if (!page_ok(c.region + i * PG, i, c.version[i]) &&
		    (diagnose(c.region + i * PG, i, c.version[i]), 1))
			T_FAILF("final check: page %llu", (unsigned long long)i);
	sample_budget(h, &bw);
	heca_get_stats(h, &st);
	printf("  %-22s budget %3llu pages: %llu ops in %.1f s, %llu faults (%llu wp), %llu "
	       "written back, %llu dropped clean, %llu from WB buffer, %llu deferred, max "
	       "resident %llu (local %llu) in %llu samples\n",
	       sponsors, (unsigned long long)budget_pages, (unsigned long long)atomic_load(&c.ops),
	       seconds, (unsigned long long)(st.faults_read + st.faults_write),
	       (unsigned long long)st.faults_wp, (unsigned long long)st.pages_written_back,
	       (unsigned long long)st.pages_dropped_clean, (unsigned long long)st.faults_wb_hit,
	       (unsigned long long)st.faults_deferred, (unsigned long long)bw.max_resident,
	       (unsigned long long)bw.max_local, (unsigned long long)bw.samples);
	ASSERT_EQ(atomic_load(&c.bad), 0);
	ASSERT_EQ(st.pages_lost, 0);
	ASSERT_EQ(st.budget_pages, budget_pages);
	ASSERT_GE(st.pages_written_back, 1);
	heca_close(h);
}

int main(void)
{
	struct t_sponsor sp;
	double secs = getenv("HECA_CHURN_SECONDS") ? atof(getenv("HECA_CHURN_SECONDS")) : 8;

	t_require_uffd();
	run("mem", 8, secs / 2);
	t_sponsor_start(&sp, "64M", NULL);
	run(sp.addr, 8, secs);
	run(sp.addr, 24, secs / 2);
	ASSERT_EQ(t_sponsor_stop(&sp, 0), 0);
	printf("test_churn: all passed\n");
	return 0;
}
