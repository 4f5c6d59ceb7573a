// SPDX-License-Identifier: MIT
/*
 * test_huge.c - regions of more than 2^32 pages (16 TiB, MAP_NORESERVE). Beyond what the
 * sponsors can hold they are refused up front, with the reason in words; with
 * HECA_OPT_OVERCOMMIT they work: pages on both sides of page 2^32 and at the far end are
 * written, evicted to the sponsor under a budget of 32 pages and read back, beside pages at
 * the start whose page numbers have the same low 32 bits. Both heca_map() and heca_register().
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "heca.h"

#define PG 4096ull
#define HUGE_PAGES ((1ull << 32) + 256) /* 16 TiB and 1 MiB */
#define NEAR 96
#define FAR_FROM ((1ull << 32) - 32)
#define FAR_TO ((1ull << 32) + 64)

static void on_alarm(int sig)
{
	static const char msg[] = "FAIL: test_huge hung: a fault waits for room that the "
				  "evictor never makes (pages it cannot find again?)\n";
	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

static struct heca *open_h(const char *addr, unsigned int flags)
{
	struct heca_options o;
	struct heca *h;
	int rc;

	heca_options_init(&o);
	o.sponsors = addr;
	o.local_budget = 32 * PG;
	o.replicas = 1;
	o.flags = flags;
	rc = heca_open(&o, &h);
	if (rc)
		T_FAILF("heca_open: %s %s", heca_strerror(rc), heca_last_error());
	return h;
}

/* Write near pages, pages around 2^32 and the last page, interleaved, then read them all
 * back twice: the budget is far smaller, so they go to the sponsor and come back. */
static void exercise(struct heca *h, uint8_t *p, uint64_t ver, const char *what)
{
	struct heca_stats st0, st;
	uint64_t wrong = 0;
	double t0 = t_now_ms();

	heca_get_stats(h, &st0);
	for (uint64_t k = 0; k < FAR_TO - FAR_FROM; k++) {
		if (k < NEAR)
			t_fill_pages(p, k, k + 1, ver);
		t_fill_pages(p, FAR_FROM + k, FAR_FROM + k + 1, ver + 1);
	}
	t_fill_pages(p, HUGE_PAGES - 1, HUGE_PAGES, ver + 2);
	for (int round = 0; round < 2; round++) {
		wrong += t_check_pages(p, 0, NEAR, ver);
		wrong += t_check_pages(p, FAR_FROM, FAR_TO, ver + 1);
		wrong += t_check_pages(p, HUGE_PAGES - 1, HUGE_PAGES, ver + 2);
	}
	heca_get_stats(h, &st);
	printf("  %s: %llu pages written and read twice in %.1f s: %llu written back, %llu "
	       "fetched, %llu prefetched; %llu wrong\n",
	       what, (unsigned long long)(NEAR + FAR_TO - FAR_FROM + 1), (t_now_ms() - t0) / 1e3,
	       (unsigned long long)(st.pages_written_back - st0.pages_written_back),
	       (unsigned long long)(st.pages_fetched - st0.pages_fetched),
	       (unsigned long long)(st.pages_prefetched - st0.pages_prefetched),
	       (unsigned long long)wrong);
	ASSERT_EQ(wrong, 0);
	ASSERT_TRUE(st.pages_written_back > st0.pages_written_back);
	ASSERT_TRUE(st.pages_fetched + st.pages_prefetched >
		    st0.pages_fetched + st0.pages_prefetched);
	ASSERT_LE(st.resident_pages, st.budget_pages);
}

int main(void)
{
	struct t_sponsor sp;
	struct heca_stats st;
	struct heca *h;
	uint8_t *p, *q;
	int rc, id;

	t_require_uffd();
	q = mmap(NULL, HUGE_PAGES * PG, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (q == MAP_FAILED) {
		printf("SKIP: cannot map 16 TiB with MAP_NORESERVE here: %s\n", strerror(errno));
		return T_SKIP;
	}
	signal(SIGALRM, on_alarm);
	alarm(60);
	t_sponsor_start(&sp, "64M", NULL);

	/* Far more than the sponsor's 64 MiB and the local limit: refused, nothing left. */
	h = open_h(sp.addr, 0);
	rc = heca_map(h, HUGE_PAGES * PG, (void **)&p);
	ASSERT_EQ(rc, -ENOMEM);
	ASSERT_TRUE(strstr(heca_last_error(), "cannot sponsor") != NULL);
	printf("  without overcommit, heca_map: %s\n", heca_last_error());
	rc = heca_register(h, q, HUGE_PAGES * PG);
	ASSERT_EQ(rc, -ENOMEM);
	printf("  without overcommit, heca_register: %s\n", heca_last_error());
	heca_get_stats(h, &st);
	ASSERT_EQ(st.segments, 0);
	heca_close(h);

	/* Allowed to overcommit: it must work. */
	h = open_h(sp.addr, HECA_OPT_OVERCOMMIT);
	rc = heca_map(h, HUGE_PAGES * PG, (void **)&p);
	if (rc)
		T_FAILF("heca_map of %llu pages: %s %s", (unsigned long long)HUGE_PAGES,
			heca_strerror(rc), heca_last_error());
	exercise(h, p, 10, "heca_map");
	id = heca_register(h, q, HUGE_PAGES * PG);
	if (id < 0)
		T_FAILF("heca_register of %llu pages: %s %s", (unsigned long long)HUGE_PAGES,
			heca_strerror(id), heca_last_error());
	exercise(h, q, 20, "heca_register");
	/* The first region's pages are still right after the second's went through. */
	ASSERT_EQ(t_check_pages(p, 0, NEAR, 10), 0);
	ASSERT_EQ(t_check_pages(p, FAR_FROM, FAR_TO, 11), 0);
	ASSERT_EQ(heca_unmap(h, p), 0);
	ASSERT_EQ(heca_unregister(h, q, HECA_UNREG_DISCARD), 0);
	heca_get_stats(h, &st);
	ASSERT_EQ(st.segments, 0);
	ASSERT_EQ(st.resident_pages, 0);
	heca_close(h);
	munmap(q, HUGE_PAGES * PG);
	alarm(0);
	ASSERT_EQ(t_sponsor_stop(&sp, 0), 0);
	return T_PASS;
}
