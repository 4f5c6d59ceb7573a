// SPDX-License-Identifier: MIT
/*
 * test_failure.c - full, stopped and given-up sponsors cost time, never data: sponsors that
 * fill up mid-run (one and two copies), a sponsor stopped for longer than detection (3 s and
 * 10 s, one and two copies), pages given up after the grace period that come back with their
 * sponsor, and a region that cannot fit refused up front. Every page is checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "heca.h"
#include "sponsor_client.h"
#include "util.h"

#define PG 4096u
#define MIB (1ull << 20)

static atomic_int bus_seen, full_lines, revived_lines;
static sigjmp_buf jb;

static void lg(void *arg, enum heca_log_level l, const char *m)
{
	(void)arg;
	if (l <= HECA_LOG_WARN)
		fprintf(stderr, "  [heca %d] %s\n", l, m);
	if (strstr(m, " is full "))
		atomic_fetch_add(&full_lines, 1);
	if (strstr(m, "asked for again"))
		atomic_fetch_add(&revived_lines, 1);
}

static void on_bus(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	(void)uc;
	atomic_fetch_add(&bus_seen, 1);
	siglongjmp(jb, 1);
}

static struct heca *g_last; /* the handle opened last: what a hung case is reported on */
static const char *g_case = "";

/* A case that hangs fails with what heca's counters say, instead of at ctest's timeout. */
static void on_alarm(int sig)
{
	struct heca_stats st;

	(void)sig;
	fprintf(stderr, "FAIL: case '%s' did not finish in 150 s\n", g_case);
	if (g_last && !heca_get_stats(g_last, &st))
		fprintf(stderr,
			"  resident %llu pinned %llu budget %llu deferred %llu fetched %llu "
			"written back %llu write-back errors %llu evicted %llu lost %llu\n",
			(unsigned long long)st.resident_pages, (unsigned long long)st.pinned_pages,
			(unsigned long long)st.budget_pages, (unsigned long long)st.faults_deferred,
			(unsigned long long)st.pages_fetched,
			(unsigned long long)st.pages_written_back,
			(unsigned long long)st.writeback_errors, (unsigned long long)st.pages_evicted,
			(unsigned long long)st.pages_lost);
	_exit(T_FAIL);
}

static struct heca *open_on(const char *list, uint64_t budget, unsigned int replicas,
			    unsigned int grace_ms)
{
	struct heca_options o;
	struct heca *h;
	int rc;

	heca_options_init(&o);
	o.sponsors = list;
	o.local_budget = budget;
	o.replicas = replicas;
	o.stripe_pages = 64;
	o.detect_ms = 1000;
	o.timeout_ms = 1000;
	if (grace_ms)
		o.grace_ms = grace_ms;
	o.log = lg;
	o.log_level = HECA_LOG_WARN;
	rc = heca_open(&o, &h);
	if (rc)
		T_FAILF("heca_open: %s (%s)", heca_strerror(rc), heca_last_error());
	g_last = h;
	return h;
}


static void list_of(char *out, size_t len, struct t_sponsor *s, int n)
{
	out[0] = '\0';
	for (int i = 0; i < n; i++)
		snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? "," : "", s[i].addr);
}

/* Wait up to ms for every sponsor to be up and no stripe under-replicated. */
static bool wait_healthy(struct heca *h, int ms)
{
	for (int i = 0; i < ms / 20; i++) {
		struct heca_cluster_stats cs;
		heca_get_cluster_stats(h, &cs);
		if (cs.sponsors_up == cs.sponsors && cs.under_replicated == 0 && cs.moving == 0)
			return true;
		usleep(20000);
	}
	return false;
}

/* Wait up to ms for the pages kept locally for want of room to have gone out. */
static uint64_t wait_unpinned(struct heca *h, int ms)
{
	struct heca_stats st;

	for (int i = 0; i < ms / 50; i++) {
		heca_get_stats(h, &st);
		if (!st.pinned_pages)
			return 0;
		usleep(50000);
	}
	return st.pinned_pages;
}

struct unfiller {
	int fd[3], n, ms;
};

/* Free what the other demander stored after a while, from a thread of its own: the test's
 * thread may be waiting for room meanwhile. */
static void *unfill_later(void *arg)
{
	struct unfiller *u = arg;

	usleep((useconds_t)u->ms * 1000);
	for (int i = 0; i < u->n; i++)
		t_sponsor_unfill(u->fd[i]);
	return NULL;
}

/* Wait up to ms until every page evicted so far is acknowledged. */
static void wait_written(struct heca *h, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		struct heca_stats st;
		heca_get_stats(h, &st);
		if (st.pages_written_back + st.pages_dropped_clean + st.pages_dropped_zero +
			    st.writeback_errors >= st.pages_evicted)
			return;
		usleep(10000);
	}
}

/*
 * Sponsors fill up mid-run: the demander has written half of every stripe, then another
 * demander takes all the room left, then the demander writes the other halves. With one copy
 * only sponsor A fills: its stripes that miss pages move to sponsor B. With two copies both
 * fill: pages no sponsor takes stay local up to the local limit, the writer waits there, and
 * goes on when the other demander frees its memory. Nothing is lost, no access fails.
 */
static void fill_midrun(unsigned int replicas)
{
	struct t_sponsor sp[2];
	struct unfiller u = {.n = replicas == 1 ? 1 : 2, .ms = 2000};
	char list[256];
	struct heca *h;
	struct heca_stats st;
	struct heca_cluster_stats cs;
	uint64_t npages = (replicas == 1 ? 36 : 24) * MIB / PG, half = 32, taken = 0;
	pthread_t t;
	uint8_t *p;
	double t0 = t_now_ms();

	for (int i = 0; i < 2; i++)
		t_sponsor_start(&sp[i], "32M", NULL);
	list_of(list, sizeof(list), sp, 2);
	h = open_on(list, 4 * MIB, replicas, 0);
	ASSERT_EQ(heca_map(h, npages * PG, (void **)&p), 0);
	for (uint64_t s = 0; s < npages; s += 2 * half)
		t_fill_pages(p, s, s + half, 1);
	wait_written(h, 10000);
	for (int i = 0; i < u.n; i++) {
		long n = t_sponsor_fill(sp[i].addr, &u.fd[i]);
		if (n < 0)
			T_FAILF("filling %s: %s", sp[i].addr, strerror((int)-n));
		taken += (uint64_t)n;
	}
	ASSERT_EQ(pthread_create(&t, NULL, unfill_later, &u), 0);
	for (uint64_t s = half; s < npages; s += 2 * half)
		t_fill_pages(p, s, s + half, 1);
	heca_get_stats(h, &st);
	printf("  R=%u: the other halves written with %llu MiB of the sponsors taken: %llu "
	       "write-backs refused, %llu pages kept locally, %llu lost\n",
	       replicas, (unsigned long long)(taken * PG / MIB),
	       (unsigned long long)st.writeback_errors, (unsigned long long)st.pinned_pages,
	       (unsigned long long)st.pages_lost);
	ASSERT_GE(atomic_load(&full_lines), 1); /* a sponsor did fill up */
	ASSERT_EQ(t_check_pages(p, 0, npages, 1), 0);
	t_fill_pages(p, 0, npages, 2); /* and again, over stripes that have moved */
	ASSERT_EQ(t_check_pages(p, 0, npages, 2), 0);
	pthread_join(t, NULL);
	/* Room appeared: the pages kept locally go out. */
	ASSERT_EQ(wait_unpinned(h, 20000), 0);
	ASSERT_TRUE(wait_healthy(h, 20000));
	ASSERT_EQ(t_check_pages(p, 0, npages, 2), 0);
	heca_get_stats(h, &st);
	heca_get_cluster_stats(h, &cs);
	printf("  R=%u: after the other demander freed its memory: %llu pages kept locally, "
	       "%llu stripe copies made, %llu lost, every page verified (%.1f s)\n",
	       replicas, (unsigned long long)st.pinned_pages,
	       (unsigned long long)cs.copied_stripes, (unsigned long long)st.pages_lost,
	       (t_now_ms() - t0) / 1e3);
	ASSERT_EQ(st.pages_lost, 0);
	heca_close(h);
	for (int i = 0; i < 2; i++)
		t_sponsor_stop(&sp[i], 0);
}

struct reader {
	uint8_t *p;
	uint64_t npages, ver, bad;
	double ms;
};

struct waker {
	pid_t pid;
	int ms;
};

/* Continue a stopped sponsor after a while, from a thread of its own: the test's threads may
 * all be waiting for it. */
static void *wake_later(void *arg)
{
	struct waker *w = arg;

	usleep((useconds_t)w->ms * 1000);
	kill(w->pid, SIGCONT);
	return NULL;
}

static void *read_all(void *arg)
{
	struct reader *r = arg;
	double t0 = t_now_ms();

	r->bad = t_check_pages(r->p, 0, r->npages, r->ver);
	r->ms = t_now_ms() - t0;
	return NULL;
}

/*
 * The only sponsor (R=1), or one of two (R=2), is stopped for stop_ms, longer than detection,
 * while threads read and write: with one copy the accesses wait and then succeed, with two
 * they go to the other copy; afterwards the stopped sponsor's copies are mended.
 */
static void stall(unsigned int replicas, int stop_ms)
{
	struct t_sponsor sp[2];
	int n = (int)replicas;
	char list[160];
	struct heca *h;
	struct heca_stats st;
	struct reader rd = {0};
	struct waker wk;
	pthread_t t, tw;
	uint64_t npages = 16 * MIB / PG;
	uint8_t *p;

	for (int i = 0; i < n; i++)
		t_sponsor_start(&sp[i], "64M", NULL);
	list_of(list, sizeof(list), sp, n);
	h = open_on(list, 2 * MIB, replicas, 0);
	ASSERT_EQ(heca_map(h, npages * PG, (void **)&p), 0);
	t_fill_pages(p, 0, npages, 1);
	kill(sp[0].pid, SIGSTOP);
	wk = (struct waker){sp[0].pid, stop_ms};
	ASSERT_EQ(pthread_create(&tw, NULL, wake_later, &wk), 0);
	rd = (struct reader){.p = p, .npages = npages / 2, .ver = 1};
	ASSERT_EQ(pthread_create(&t, NULL, read_all, &rd), 0);
	t_fill_pages(p, npages / 2, npages, 2); /* writes meanwhile: evictions to a stopped sponsor */
	pthread_join(t, NULL);
	pthread_join(tw, NULL);
	ASSERT_EQ(rd.bad, 0);
	ASSERT_EQ(t_check_pages(p, npages / 2, npages, 2), 0);
	ASSERT_EQ(t_check_pages(p, 0, npages / 2, 1), 0);
	ASSERT_TRUE(wait_healthy(h, 30000));
	ASSERT_EQ(wait_unpinned(h, 20000), 0);
	heca_get_stats(h, &st);
	printf("  R=%u, sponsor stopped %.1f s: reader done after %.1f s, %llu write-backs "
	       "failed and retried, %llu lost, every page verified\n",
	       replicas, stop_ms / 1e3, rd.ms / 1e3, (unsigned long long)st.writeback_errors,
	       (unsigned long long)st.pages_lost);
	ASSERT_EQ(st.pages_lost, 0);
	if (replicas == 2) {
		struct heca_cluster_stats cs;
		/* The stopped sponsor kept what it held: only the pages it missed were copied to
		 * it, not the whole region again. */
		heca_get_cluster_stats(h, &cs);
		printf("  R=2: %llu pages copied to mend the stopped sponsor's copies (of %llu)\n",
		       (unsigned long long)cs.copied_pages, (unsigned long long)npages);
		ASSERT_LE(cs.copied_pages, npages * 3 / 4);
		/* The stopped sponsor's copy was mended: the other can go and nothing is lost. */
		kill(sp[1].pid, SIGKILL);
		waitpid(sp[1].pid, NULL, 0);
		sp[1].pid = 0;
		ASSERT_EQ(t_check_pages(p, 0, npages / 2, 1), 0);
		ASSERT_EQ(t_check_pages(p, npages / 2, npages, 2), 0);
	}
	heca_close(h);
	for (int i = 0; i < n; i++)
		if (sp[i].pid > 0)
			t_sponsor_stop(&sp[i], 0);
}

/*
 * Past the grace period a stopped sponsor's pages are given up: an access fails with SIGBUS,
 * in bounded time. When the sponsor comes back with them, they are readable again.
 */
/* The first of npages pages at p that is not in local memory (from /proc/self/pagemap). */
static __attribute__((noinline)) uint64_t first_away(const uint8_t *p, uint64_t npages)
{
	int fd = open("/proc/self/pagemap", O_RDONLY);
	uint64_t i;

	ASSERT_TRUE(fd >= 0);
	for (i = 0; i < npages; i++) {
		uint64_t e = 0;
		if (pread(fd, &e, 8, (off_t)((uintptr_t)(p + i * PG) / PG * 8)) != 8 || !(e >> 63))
			break;
	}
	close(fd);
	return i;
}

static void given_up_and_back(void)
{
	struct t_sponsor sp;
	struct heca *h;
	struct sigaction sa = {.sa_sigaction = on_bus, .sa_flags = SA_SIGINFO | SA_NODEFER}, old;
	uint64_t npages = 4 * MIB / PG, victim;
	volatile uint8_t *p;
	double t0, dt;

	t_sponsor_start(&sp, "64M", NULL);
	h = open_on(sp.addr, 256 * 1024, 1, 1500);
	ASSERT_EQ(heca_map(h, npages * PG, (void **)&p), 0);
	t_fill_pages((uint8_t *)p, 0, npages, 3);
	/* Page 0 must be at the sponsor only: every write-back acknowledged, none in a buffer. */
	for (int i = 0; i < 1000; i++) {
		struct heca_stats st;
		heca_get_stats(h, &st);
		if (st.pages_written_back + st.pages_dropped_clean + st.pages_dropped_zero ==
		    st.pages_evicted)
			break;
		usleep(10000);
	}
	/* A page that is away: one whose write-back failed (a slow machine) is still here, and
	 * is rightly read from here. */
	victim = first_away((const uint8_t *)p, npages);
	ASSERT_TRUE(victim < npages);
	t_sponsor_pause(&sp);
	sigaction(SIGBUS, &sa, &old);
	atomic_store(&bus_seen, 0);
	t0 = t_now_ms();
	if (sigsetjmp(jb, 1) == 0) {
		uint8_t v = p[victim * PG];
		T_FAILF("read of page %llu, held only by a stopped sponsor, returned %u",
			(unsigned long long)victim, v);
	}
	dt = t_now_ms() - t0;
	ASSERT_EQ(atomic_load(&bus_seen), 1);
	printf("  stopped past the grace period (1.5 s): SIGBUS after %.1f s\n", dt / 1e3);
	ASSERT_LE(dt, 1500 + 1000 + 3000);
	kill(sp.pid, SIGCONT);
	sigaction(SIGBUS, &old, NULL);
	ASSERT_TRUE(wait_healthy(h, 20000));
	for (int i = 0; i < 1000 && !atomic_load(&revived_lines); i++)
		usleep(10000);
	ASSERT_EQ(atomic_load(&revived_lines), 1);
	ASSERT_EQ(t_check_pages((uint8_t *)p, 0, npages, 3), 0);
	printf("  back with its pages: that page and every other readable again\n");
	heca_close(h);
	t_sponsor_stop(&sp, 0);
}

/* A region that cannot be stored is refused when it is mapped, with words saying why; heca
 * demo says so and exits 1 (the case of two 64 MiB sponsors and a 256 MiB region). */
static void refused_up_front(void)
{
	struct t_sponsor sp[2];
	const char *cli = getenv("HECA_CLI");
	char list[160], cmd[512], line[512];
	bool said = false;
	FILE *f;
	int st;

	for (int i = 0; i < 2; i++)
		t_sponsor_start(&sp[i], "64M", NULL);
	list_of(list, sizeof(list), sp, 2);
	if (!cli)
		cli = "./heca";
	snprintf(cmd, sizeof(cmd),
		 "%s demo --sponsors %s --size 256M --local 32M --replicas 1 2>&1", cli, list);
	f = popen(cmd, "r");
	ASSERT_TRUE(f != NULL);
	while (fgets(line, sizeof(line), f)) {
		fputs(line, stdout);
		said |= strstr(line, "cannot sponsor 256.0 MiB") != NULL;
	}
	st = pclose(f);
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 1);
	ASSERT_TRUE(said);
	for (int i = 0; i < 2; i++)
		t_sponsor_stop(&sp[i], 0);
}

struct writer {
	uint8_t *p;
	uint64_t npages;
	atomic_int done;
};

static void *write_all(void *arg)
{
	struct writer *w = arg;

	t_fill_pages(w->p, 0, w->npages, 4);
	atomic_store(&w->done, 1);
	return NULL;
}

/*
 * With the sponsors full and the region larger than they and the local limit can hold
 * (mapped with HECA_OPT_OVERCOMMIT), local memory stops at the limit: the writer waits there,
 * says why, and goes on when room appears. Never unbounded growth past the budget.
 */
static void local_limit(void)
{
	struct t_sponsor sp[2];
	struct heca_options o;
	struct heca *h;
	struct heca_stats st;
	struct writer w = {.npages = 32 * MIB / PG};
	char list[160];
	uint64_t most = 0, limit = 2 * 4 * MIB / PG;
	int fd;
	pthread_t t;

	for (int i = 0; i < 2; i++)
		t_sponsor_start(&sp[i], "16M", NULL);
	ASSERT_GE(t_sponsor_fill(sp[0].addr, &fd), 1);
	list_of(list, sizeof(list), sp, 2);
	heca_options_init(&o);
	o.sponsors = list;
	o.local_budget = 4 * MIB;
	o.replicas = 1;
	o.stripe_pages = 64;
	o.flags = HECA_OPT_OVERCOMMIT;
	o.log = lg;
	o.log_level = HECA_LOG_WARN;
	ASSERT_EQ(heca_open(&o, &h), 0);
	ASSERT_EQ(heca_map(h, w.npages * PG, (void **)&w.p), 0);
	ASSERT_EQ(pthread_create(&t, NULL, write_all, &w), 0);
	/* 32 MiB do not fit in 16 MiB of sponsor room and 8 MiB of local limit: watch local
	 * memory for 3 s while the writer is held at the limit. */
	for (int i = 0; i < 150; i++) {
		heca_get_stats(h, &st);
		most = HECA_MAX(most, st.resident_pages + st.pinned_pages);
		usleep(20000);
	}
	ASSERT_EQ(atomic_load(&w.done), 0);
	printf("  sponsors full, 32 MiB written with a 4 MiB budget: at most %llu pages local "
	       "(limit %llu), %llu kept locally, the writer waits\n",
	       (unsigned long long)most, (unsigned long long)limit,
	       (unsigned long long)st.pinned_pages);
	ASSERT_LE(most, limit + 256);
	ASSERT_EQ(t_sponsor_unfill(fd), 0); /* room: the writer goes on */
	pthread_join(t, NULL);
	ASSERT_EQ(t_check_pages(w.p, 0, w.npages, 4), 0);
	heca_get_stats(h, &st);
	ASSERT_EQ(st.pages_lost, 0);
	printf("  room made: the writer finished, every page verified\n");
	heca_close(h);
	for (int i = 0; i < 2; i++)
		t_sponsor_stop(&sp[i], 0);
}

/*
 * The only current copy of some pages is at a sponsor that stopped, while the stale copy's
 * sponsor has room again: nothing can be mended until the first is back, and repair must not
 * spin on it (it also reconnects sponsors and gives up on silent ones). Half of every stripe is
 * written with both sponsors taking it, the other half while A is full (current only at B);
 * then B stops and A gets its room back.
 */
static void mend_source_down(void)
{
	struct t_sponsor sp[2];
	struct heca_cluster_stats cs;
	struct waker wk;
	struct heca *h;
	char list[160];
	uint64_t npages = 4 * MIB / PG, half = 32;
	uint8_t *p;
	pthread_t t;
	int fd;

	for (int i = 0; i < 2; i++)
		t_sponsor_start(&sp[i], "16M", NULL);
	list_of(list, sizeof(list), sp, 2);
	h = open_on(list, 1 * MIB, 2, 0);
	ASSERT_EQ(heca_map(h, npages * PG, (void **)&p), 0);
	for (uint64_t s0 = 0; s0 < npages; s0 += 2 * half)
		t_fill_pages(p, s0, s0 + half, 1);
	wait_written(h, 10000);
	ASSERT_GE(t_sponsor_fill(sp[0].addr, &fd), 0);
	for (uint64_t s0 = half; s0 < npages; s0 += 2 * half)
		t_fill_pages(p, s0, s0 + half, 1);
	wait_written(h, 10000);
	ASSERT_EQ(wait_unpinned(h, 10000), 0);
	kill(sp[1].pid, SIGSTOP);
	ASSERT_EQ(t_sponsor_unfill(fd), 0);
	sleep(3);
	heca_get_cluster_stats(h, &cs);
	printf("  only copy stopped, stale copy with room: %llu stripe copies in 3 s, %u of %u "
	       "sponsors up\n",
	       (unsigned long long)cs.copied_stripes, cs.sponsors_up, cs.sponsors);
	ASSERT_LE(cs.copied_stripes, npages / 64);
	wk = (struct waker){sp[1].pid, 0};
	ASSERT_EQ(pthread_create(&t, NULL, wake_later, &wk), 0);
	pthread_join(t, NULL);
	ASSERT_TRUE(wait_healthy(h, 20000)); /* B back, A mended from it */
	ASSERT_EQ(t_check_pages(p, 0, npages, 1), 0);
	heca_get_cluster_stats(h, &cs);
	printf("  back: A mended with %llu pages, every page verified\n",
	       (unsigned long long)cs.copied_pages);
	ASSERT_GE(cs.copied_pages, 1);
	heca_close(h);
	for (int i = 0; i < 2; i++)
		t_sponsor_stop(&sp[i], 0);
}

struct spinner {
	uint8_t *p;
	uint64_t npages;
	atomic_int stop;
};

/* Read every page over and over until told to stop: traffic that keeps every connection busy. */
static void *read_loop(void *arg)
{
	struct spinner *sp = arg;
	volatile uint64_t sum = 0;

	while (!atomic_load(&sp->stop))
		for (uint64_t i = 0; i < sp->npages; i++)
			sum += sp->p[i * PG];
	return NULL;
}

/* Under steady load a sponsor's capacity figures as the demander reports them (heca status)
 * are at most a heartbeat or two old, not the ones from the last quiet moment. */
static void fresh_status(void)
{
	struct t_sponsor sp;
	struct spinner rd = {.npages = 16 * MIB / PG};
	struct heca_sponsor_info in;
	struct t_stat ts;
	struct heca *h;
	pthread_t t;

	t_sponsor_start(&sp, "64M", NULL);
	h = open_on(sp.addr, 1 * MIB, 1, 0);
	ASSERT_EQ(heca_map(h, rd.npages * PG, (void **)&rd.p), 0);
	ASSERT_EQ(pthread_create(&t, NULL, read_loop, &rd), 0); /* busy from the start */
	t_fill_pages(rd.p, 0, rd.npages, 5);
	wait_written(h, 10000);
	sleep(3);
	ASSERT_EQ(heca_get_sponsors(h, &in, 1), 1);
	ASSERT_EQ(t_sponsor_stat(sp.addr, &ts), 0);
	atomic_store(&rd.stop, 1);
	pthread_join(t, NULL);
	printf("  under load: the sponsor stores %llu pages, heca reports %llu\n",
	       (unsigned long long)ts.used_pages, (unsigned long long)in.used_pages);
	ASSERT_LE(in.used_pages + 64, ts.used_pages + 128);
	ASSERT_LE(ts.used_pages, in.used_pages + 64);
	heca_close(h);
	t_sponsor_stop(&sp, 0);
}

/* Whether case name is to run (all run when only is empty); if so it gets 150 s. */
static bool want(const char *only, const char *name)
{
	if (*only && strcmp(only, name))
		return false;
	g_case = name;
	g_last = NULL;
	alarm(150);
	return true;
}

int main(int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : "";

	t_require_uffd();
	setvbuf(stdout, NULL, _IONBF, 0);
	signal(SIGALRM, on_alarm);
	if (want(only, "refused"))
		refused_up_front();
	if (want(only, "fill1"))
		fill_midrun(1);
	if (want(only, "fill2"))
		fill_midrun(2);
	if (want(only, "stall1"))
		stall(1, 3000);
	if (want(only, "stall2"))
		stall(2, 3000);
	if (want(only, "stall10"))
		stall(1, 10000);
	if (want(only, "status"))
		fresh_status();
	if (want(only, "mend"))
		mend_source_down();
	if (want(only, "limit"))
		local_limit();
	if (want(only, "givenup"))
		given_up_and_back();
	printf("test_failure: all passed\n");
	return 0;
}
