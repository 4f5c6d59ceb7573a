// SPDX-License-Identifier: MIT
/*
 * test_replica.c - many sponsors: stripes spread with two copies, a sponsor killed under load
 * loses nothing and the copies are restored, a drained sponsor ends empty, an added one takes
 * stripes, a full cluster fails loudly and keeps pages. Every page is checked.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "harness.h"
#include "heca.h"
#include "sponsor_client.h"

#define PG 4096u
#define MAXS 12

static struct t_sponsor sp[MAXS];
static int nsp;

static void lg(void *arg, enum heca_log_level l, const char *m)
{
	(void)arg;
	if (l <= HECA_LOG_WARN)
		fprintf(stderr, "  [heca %d] %s\n", l, m);
}

static struct heca *open_cluster(int n, uint64_t budget, unsigned int replicas)
{
	struct heca_options o;
	struct heca *h;
	static char list[MAXS * 64];
	int rc;

	list[0] = '\0';
	for (int i = 0; i < n; i++) {
		if (sp[i].pid <= 0)
			continue;
		if (list[0])
			strcat(list, ",");
		strcat(list, sp[i].addr);
	}
	heca_options_init(&o);
	o.sponsors = list;
	o.local_budget = budget;
	o.replicas = replicas;
	o.stripe_pages = 16;
	o.detect_ms = 1000;
	o.timeout_ms = 2000;
	o.log = lg;
	o.log_level = HECA_LOG_WARN;
	rc = heca_open(&o, &h);
	if (rc)
		T_FAILF("heca_open: %s (%s)", heca_strerror(rc), heca_last_error());
	return h;
}


static uint64_t used_total(void)
{
	uint64_t sum = 0;
	for (int i = 0; i < nsp; i++) {
		struct t_stat st;
		if (sp[i].pid > 0 && t_sponsor_stat(sp[i].addr, &st) == 0)
			sum += st.used_pages;
	}
	return sum;
}

/* Wait until every stripe has its copies again (and nothing is moving), up to ms. */
static bool settle(struct heca *h, int ms, struct heca_cluster_stats *cs)
{
	for (int t = 0; t < ms; t += 50) {
		heca_get_cluster_stats(h, cs);
		if (cs->under_replicated == 0 && cs->moving == 0 && cs->lost == 0)
			return true;
		usleep(50000);
	}
	return false;
}

/* Written pages are all at sponsors: evict everything by reading another region. */
static void flush(struct heca *h, uint8_t *scratch, uint64_t n)
{
	struct heca_stats st;
	for (uint64_t i = 0; i < n; i++)
		(void)*(volatile uint8_t *)(scratch + i * PG);
	for (int t = 0; t < 200; t++) {
		heca_get_stats(h, &st);
		if (st.pages_written_back + st.pages_dropped_clean + st.pages_dropped_zero +
			    st.writeback_errors >=
		    st.pages_evicted)
			break;
		usleep(10000);
	}
}

/* 10 sponsors of 4 MiB each, a 12 MiB region with two copies of every stripe. */
static void test_spread(void)
{
	struct heca *h = open_cluster(10, 256 * PG, 2);
	struct heca_cluster_stats cs;
	struct heca_sponsor_info info[MAXS];
	uint64_t n = 3072, before = used_total(), holding = 0;
	uint8_t *p, *scratch;
	int k;

	ASSERT_EQ(heca_map(h, n * PG, (void **)&p), 0);
	ASSERT_EQ(heca_map(h, 512 * PG, (void **)&scratch), 0);
	t_fill_pages(p, 0, n, 1);
	flush(h, scratch, 512);
	ASSERT_EQ(t_check_pages(p, 0, n, 1), 0);
	flush(h, scratch, 512);
	ASSERT_TRUE(settle(h, 5000, &cs));
	k = heca_get_sponsors(h, info, MAXS);
	ASSERT_EQ(k, 10);
	for (int i = 0; i < k; i++)
		holding += info[i].stripes > 0;
	printf("  spread: %llu stripes x %u copies over %llu of 10 sponsors, %llu pages stored "
	       "(region %llu pages)\n",
	       (unsigned long long)cs.stripes, cs.replicas, (unsigned long long)holding,
	       (unsigned long long)(used_total() - before), (unsigned long long)n);
	ASSERT_GE(holding, 8);
	ASSERT_EQ(cs.replicas, 2);
	/* Every written page is stored twice: the region is larger than any one sponsor. */
	ASSERT_GE(used_total() - before, 2 * (n - 256));
	heca_close(h);
	ASSERT_EQ(used_total(), before);
}

struct load {
	uint8_t *p;
	uint64_t from, to;
	atomic_bool stop;
	atomic_uint_least64_t bad, rounds;
};

static void *loader(void *arg)
{
	struct load *l = arg;
	for (uint64_t v = 10; !atomic_load(&l->stop); v++) {
		t_fill_pages(l->p, l->from, l->to, v);
		atomic_fetch_add(&l->bad, t_check_pages(l->p, l->from, l->to, v));
		atomic_fetch_add(&l->rounds, 1);
	}
	return NULL;
}

/* Four threads write and verify a region 4x the budget while `event` happens. */
static void under_load(struct heca *h, uint64_t n, void (*event)(struct heca *, void *),
		       void *arg)
{
	struct load l[4];
	pthread_t t[4];
	uint8_t *p;

	ASSERT_EQ(heca_map(h, n * PG, (void **)&p), 0);
	for (int i = 0; i < 4; i++) {
		memset(&l[i], 0, sizeof(l[i]));
		l[i].p = p;
		l[i].from = n * (uint64_t)i / 4;
		l[i].to = n * (uint64_t)(i + 1) / 4;
		pthread_create(&t[i], NULL, loader, &l[i]);
	}
	usleep(500000);
	event(h, arg);
	usleep(500000);
	for (int i = 0; i < 4; i++)
		atomic_store(&l[i].stop, true);
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		ASSERT_EQ(atomic_load(&l[i].bad), 0);
		ASSERT_GE(atomic_load(&l[i].rounds), 1);
	}
}

static void ev_kill(struct heca *h, void *arg)
{
	int i = *(int *)arg;
	struct heca_cluster_stats cs;
	double t0 = t_now_ms();
	(void)h;
	t_sponsor_stop(&sp[i], 1);
	for (;;) { /* until the death is noticed */
		heca_get_cluster_stats(h, &cs);
		if (cs.sponsors_up < cs.sponsors)
			break;
		ASSERT_LE(t_now_ms() - t0, 5000);
		usleep(1000);
	}
	printf("  killed sponsor %d (kill -9) under load: noticed after %.0f ms, %llu stripes "
	       "short of a copy\n",
	       i, t_now_ms() - t0, (unsigned long long)cs.under_replicated);
	ASSERT_TRUE(settle(h, 15000, &cs));
	printf("  two copies of every stripe again after %.0f ms (%llu stripes copied)\n",
	       t_now_ms() - t0, (unsigned long long)cs.copied_stripes);
}

static void test_kill(void)
{
	struct heca *h = open_cluster(nsp, 128 * PG, 2);
	struct heca_cluster_stats cs;
	struct heca_stats st;
	int victim = 3;

	under_load(h, 512, ev_kill, &victim);
	ASSERT_TRUE(settle(h, 10000, &cs));
	{
		/* Ask the sponsors: with every page written out, the survivors hold two copies. */
		uint8_t *scratch;
		ASSERT_EQ(heca_map(h, 256 * PG, (void **)&scratch), 0);
		flush(h, scratch, 256);
		ASSERT_TRUE(settle(h, 10000, &cs));
		printf("  kill: the sponsors hold %llu pages for 512 written (two copies each)\n",
		       (unsigned long long)used_total());
		ASSERT_GE(used_total(), 2 * (512 - 128));
	}
	heca_get_stats(h, &st);
	ASSERT_EQ(st.pages_lost, 0);
	ASSERT_EQ(cs.lost, 0);
	ASSERT_GE(cs.copied_stripes, 1);
	printf("  kill: every page verified, %llu stripes, none under-replicated\n",
	       (unsigned long long)cs.stripes);
	heca_close(h);
	t_sponsor_start(&sp[victim], "4M", NULL); /* back for the next tests */
}

static void ev_drain(struct heca *h, void *arg)
{
	const char *addr = arg;
	struct heca_sponsor_info info[MAXS];
	int n;
	ASSERT_EQ(heca_drain_sponsor(h, addr), 0);
	for (int t = 0; t < 300; t++) {
		n = heca_get_sponsors(h, info, MAXS);
		for (int i = 0; i < n; i++)
			if (!strcmp(info[i].addr, addr) && info[i].stripes == 0)
				return;
		usleep(50000);
	}
	T_FAILF("sponsor %s still holds stripes after draining", addr);
}

static void test_drain(void)
{
	struct heca *h = open_cluster(nsp, 128 * PG, 2);
	struct t_stat st;
	const char *addr = sp[0].addr;

	ASSERT_EQ(heca_drain_sponsor(h, "10.0.0.1:1"), -ENOENT);
	under_load(h, 512, ev_drain, (void *)addr);
	usleep(500000);
	ASSERT_EQ(t_sponsor_stat(addr, &st), 0);
	printf("  drain: %s holds %llu pages after the drain\n", addr,
	       (unsigned long long)st.used_pages);
	ASSERT_EQ(st.used_pages, 0);
	heca_close(h);
}

static void ev_add(struct heca *h, void *arg)
{
	const char *addr = arg;
	struct heca_sponsor_info info[MAXS];
	ASSERT_EQ(heca_add_sponsor(h, addr), 0);
	ASSERT_EQ(heca_add_sponsor(h, addr), -EEXIST);
	for (int t = 0; t < 300; t++) {
		int n = heca_get_sponsors(h, info, MAXS);
		for (int i = 0; i < n; i++)
			if (!strcmp(info[i].addr, addr) && info[i].stripes > 0) {
				printf("  add: %s took %llu stripes\n", addr,
				       (unsigned long long)info[i].stripes);
				return;
			}
		usleep(50000);
	}
	T_FAILF("added sponsor %s received no stripes", addr);
}

static void test_add(void)
{
	struct heca *h;
	int last = nsp - 1;
	pid_t keep = sp[last].pid;

	sp[last].pid = 0; /* not in the initial list */
	h = open_cluster(nsp, 128 * PG, 2);
	sp[last].pid = keep;
	under_load(h, 512, ev_add, sp[last].addr);
	heca_close(h);
}

static void test_full(void)
{
	struct t_sponsor small[2];
	struct heca_options o;
	struct heca_stats st;
	struct heca *h;
	char list[160];
	uint64_t n = 448;
	uint8_t *p;

	t_sponsor_start(&small[0], "1M", NULL);
	t_sponsor_start(&small[1], "1M", NULL);
	snprintf(list, sizeof(list), "%s,%s", small[0].addr, small[1].addr);
	heca_options_init(&o);
	o.sponsors = list;
	o.local_budget = 128 * PG;
	o.log = lg;
	o.log_level = HECA_LOG_ERROR;
	ASSERT_EQ(heca_open(&o, &h), 0);
	/* 8 MiB cannot be stored in 2 x 1 MiB with two copies and 1 MiB of local limit: the
	 * mapping is refused up front, not a program that waits for room later. */
	ASSERT_EQ(heca_map(h, 2048 * PG, (void **)&p), -ENOMEM);
	ASSERT_TRUE(strstr(heca_last_error(), "room") != NULL);
	/* 1.75 MiB fits, but only with pages kept locally past the budget. */
	ASSERT_EQ(heca_map(h, n * PG, (void **)&p), 0);
	t_fill_pages(p, 0, n, 5);
	ASSERT_EQ(t_check_pages(p, 0, n, 5), 0);
	heca_get_stats(h, &st);
	printf("  full cluster: %llu write-backs refused, %llu pages kept locally, 0 lost\n",
	       (unsigned long long)st.writeback_errors, (unsigned long long)st.pinned_pages);
	ASSERT_GE(st.writeback_errors, 1);
	ASSERT_GE(st.pinned_pages, 1);
	ASSERT_EQ(st.pages_lost, 0);
	heca_close(h);
	t_sponsor_stop(&small[0], 0);
	t_sponsor_stop(&small[1], 0);
}

int main(void)
{
	t_require_uffd();
	setvbuf(stdout, NULL, _IONBF, 0);
	nsp = 10;
	for (int i = 0; i < nsp; i++)
		t_sponsor_start(&sp[i], "4M", NULL);
	test_spread();
	test_kill();
	test_drain();
	test_add();
	test_full();
	for (int i = 0; i < nsp; i++)
		t_sponsor_stop(&sp[i], 0);
	printf("test_replica: all passed\n");
	return 0;
}
