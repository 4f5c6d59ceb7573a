// SPDX-License-Identifier: MIT
/*
 * test_sigbus.c - when the only sponsor dies (killed) or stops answering (stopped), an access
 * to a page only it held ends in SIGBUS within a bounded time, never a hang or wrong data,
 * and the library names the lost segment and page. With and without UFFDIO_POISON.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <unistd.h>
#include <fcntl.h>

#include "harness.h"
#include "heca.h"

#define PG 4096u

static sigjmp_buf jb;
static volatile sig_atomic_t got_bus;
static volatile uintptr_t bus_addr;

static void on_bus(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	got_bus = 1;
	bus_addr = (uintptr_t)si->si_addr;
	siglongjmp(jb, 1);
}

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "FAIL: access hung: no SIGBUS within the time limit\n";
	ssize_t r = write(2, msg, sizeof(msg) - 1);
	(void)r;
	_exit(T_FAIL);
}

static int lost_lines;

static void lg(void *arg, enum heca_log_level l, const char *m)
{
	(void)arg;
	if (l == HECA_LOG_ERROR && strstr(m, "lost"))
		lost_lines++;
	fprintf(stderr, "  [heca %d] %s\n", l, m);
}

/* how: SIGKILL (dies: connection refused, known gone at once) or SIGSTOP (silent: waited for
 * through a short grace period, then given up). */
static void run(int how, unsigned int flags)
{
	struct t_sponsor sp;
	struct heca_options o;
	struct heca *h;
	struct heca_stats st;
	uint64_t n = 1024, seg_page = 0;
	uint32_t seg = 99;
	volatile uint8_t *p;
	double t0, dt;
	int rc;

	t_sponsor_start(&sp, "64M", NULL);
	heca_options_init(&o);
	o.sponsors = sp.addr;
	o.local_budget = 64 * PG;
	o.timeout_ms = 1500;
	o.grace_ms = 2500;
	o.flags = flags;
	o.log = lg;
	o.log_level = HECA_LOG_WARN;
	rc = heca_open(&o, &h);
	if (rc)
		T_FAILF("heca_open: %s %s", heca_strerror(rc), heca_last_error());
	ASSERT_EQ(heca_map(h, n * PG, (void **)&p), 0);
	for (uint64_t i = 0; i < n; i++)
		memset((void *)(p + i * PG), (int)(i & 0xff) | 1, PG);
	/* Page 0 is long gone to the sponsor; wait until every write-back is acknowledged. */
	for (int i = 0; i < 1000; i++) {
		heca_get_stats(h, &st);
		if (st.pages_written_back + st.pages_dropped_clean + st.pages_dropped_zero ==
		    st.pages_evicted)
			break;
		usleep(10000);
	}
	{
		/* Page 0 must be away from local memory now, or the test proves nothing. */
		int fd = open("/proc/self/pagemap", O_RDONLY);
		uint64_t e = 0;
		if (fd >= 0 && pread(fd, &e, 8, (off_t)((uintptr_t)p / PG * 8)) == 8 && (e >> 63))
			T_FAILF("page 0 still resident before the kill (resident %llu, evicted %llu, "
				"written back %llu)",
				(unsigned long long)st.resident_pages,
				(unsigned long long)st.pages_evicted,
				(unsigned long long)st.pages_written_back);
		if (fd >= 0)
			close(fd);
	}
	if (how == SIGSTOP)
		t_sponsor_pause(&sp);
	else
		kill(sp.pid, how);
	got_bus = 0;
	lost_lines = 0;
	alarm(20);
	t0 = t_now_ms();
	if (sigsetjmp(jb, 1) == 0) {
		uint8_t v = p[0];
		alarm(0);
		T_FAILF("read of a lost page returned %u instead of SIGBUS", v);
	}
	alarm(0);
	dt = t_now_ms() - t0;
	ASSERT_TRUE(got_bus);
	ASSERT_EQ(bus_addr & ~(uintptr_t)(PG - 1), (uintptr_t)p);
	ASSERT_EQ(heca_first_lost(h, &seg, &seg_page), 1);
	ASSERT_LE(seg_page, 16); /* page 0, or a neighbour prefetched with it */
	ASSERT_GE(lost_lines, 1);
	heca_get_stats(h, &st);
	ASSERT_GE(st.pages_lost, 1);
	printf("  %s%s: SIGBUS after %.0f ms, segment %u page %llu reported lost\n",
	       how == SIGKILL ? "sponsor killed" : "sponsor stopped",
	       flags & HECA_OPT_NO_POISON ? " (no UFFDIO_POISON: signal to the thread)" : "",
	       dt, seg, (unsigned long long)seg_page);
	ASSERT_LE(dt, how == SIGKILL ? 3000 : 1500 + 2500 + 3000);
	/* A second access to the same page fails the same way, at once. */
	alarm(10);
	if (sigsetjmp(jb, 1) == 0) {
		(void)p[1];
		T_FAILF("second read returned");
	}
	alarm(0);
	if (how == SIGSTOP)
		kill(sp.pid, SIGCONT);
	heca_close(h);
	t_sponsor_stop(&sp, 1);
}

static void *cont_later(void *arg)
{
	usleep(2000 * 1000);
	kill(*(pid_t *)arg, SIGCONT);
	return NULL;
}

/* The sponsor stops answering while pages are being written out: nothing written is lost;
 * pages that cannot be stored stay in local memory up to the local limit, then the writer
 * waits for the sponsor (here continued after 2 s) and goes on. */
static void run_stop_during_writes(void)
{
	struct t_sponsor sp;
	struct heca_options o;
	struct heca *h;
	struct heca_stats st;
	uint64_t n = 2048;
	uint8_t *b;
	pthread_t t;
	double t0;
	int rc;

	t_sponsor_start(&sp, "64M", NULL);
	heca_options_init(&o);
	o.sponsors = sp.addr;
	o.local_budget = 64 * PG;
	o.timeout_ms = 1000;
	o.log = lg;
	o.log_level = HECA_LOG_ERROR;
	rc = heca_open(&o, &h);
	if (rc)
		T_FAILF("heca_open: %s %s", heca_strerror(rc), heca_last_error());
	ASSERT_EQ(heca_map(h, n * PG, (void **)&b), 0);
	for (uint64_t i = 0; i < n / 4; i++)
		memset(b + i * PG, (int)(i % 251) + 1, PG);
	t_sponsor_pause(&sp);
	alarm(60);
	t0 = t_now_ms();
	ASSERT_EQ(pthread_create(&t, NULL, cont_later, &sp.pid), 0);
	for (uint64_t i = n / 4; i < n; i++) /* never-written pages: no fetch needed */
		memset(b + i * PG, (int)(i % 251) + 1, PG);
	for (uint64_t i = n / 4; i < n; i++)
		for (uint64_t k = 0; k < PG; k += 256)
			if (b[i * PG + k] != (uint8_t)((i % 251) + 1))
				T_FAILF("page %llu lost its content", (unsigned long long)i);
	alarm(0);
	pthread_join(t, NULL);
	heca_get_stats(h, &st);
	printf("  sponsor stopped 2 s during write-back: writer done in %.0f ms, %llu write-backs "
	       "failed and retried, resident %llu (budget %llu), kept locally %llu\n",
	       t_now_ms() - t0, (unsigned long long)st.writeback_errors,
	       (unsigned long long)st.resident_pages, (unsigned long long)st.budget_pages,
	       (unsigned long long)st.pinned_pages);
	ASSERT_GE(st.writeback_errors, 1);
	ASSERT_EQ(st.pages_lost, 0);
	heca_close(h);
	t_sponsor_stop(&sp, 1);
}

int main(void)
{
	struct sigaction sa = {.sa_sigaction = on_bus, .sa_flags = SA_SIGINFO | SA_NODEFER};

	t_require_uffd();
	sigaction(SIGBUS, &sa, NULL);
	signal(SIGALRM, on_alarm);
	run(SIGKILL, 0);
	run(SIGSTOP, 0);
	run(SIGKILL, HECA_OPT_NO_POISON);
	run_stop_during_writes();
	printf("test_sigbus: all passed\n");
	return 0;
}
