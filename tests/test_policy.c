// SPDX-License-Identifier: MIT
/*
 * test_policy.c - the replacement policy keeps a hot set resident while a scan passes.
 *
 * A region of 32 hot pages is written, then a scan writes 32 times the budget of new pages, a
 * few dozen at a time, and reads every hot page between two pieces of the scan. Under plain
 * first-in first-out eviction each hot page goes out once per budget's worth of scan and is
 * fetched back from the sponsor: over a thousand faults. With the inactive list on, each hot
 * page goes out once, comes back from its local copy, is protected (policy.c) and stays
 * mapped. Counted, not timed: the read faults while the scan runs (the scan only writes, so
 * each is a hot page coming back) must stay under two per hot page, the pages fetched from the
 * sponsor (prefetch off) under one, and faults served from local copies must be seen. Every
 * page is checked: the hot pages at each read, the scanned ones at the end. `test_policy
 * fifo` runs the same with the inactive list off and prints what it counts, asserting nothing
 * of the policy.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "heca.h"

#define PG 4096u
#define BUDGET 256u	 /* pages */
#define HOT 32u		 /* hot pages: half the inactive list */
#define SCAN (32 * BUDGET) /* pages scanned */
#define STEP 16u	 /* scan pages between two reads of the hot set */

int main(int argc, char **argv)
{
	bool fifo = argc > 1 && !strcmp(argv[1], "fifo");
	struct heca_options o;
	struct heca_stats s0, s1;
	struct t_sponsor sp;
	struct heca *h;
	uint8_t *hot, *scan;
	uint64_t bad = 0, fetched, faulted;
	int rc;

	t_require_uffd();
	t_sponsor_start(&sp, "256M", NULL);
	heca_options_init(&o);
	o.sponsors = sp.addr;
	o.local_budget = BUDGET * PG;
	o.prefetch_pages = 0;
	o.replicas = 1;
	o.inactive_pct = fifo ? 0 : 25;
	rc = heca_open(&o, &h);
	if (rc)
		T_FAILF("heca_open: %s %s", heca_strerror(rc), heca_last_error());
	ASSERT_EQ(heca_map(h, HOT * PG, (void **)&hot), 0);
	ASSERT_EQ(heca_map(h, SCAN * PG, (void **)&scan), 0);
	t_fill_pages(hot, 0, HOT, 1);

	heca_get_stats(h, &s0);
	for (uint64_t p = 0; p < SCAN; p += STEP) {
		t_fill_pages(scan, p, p + STEP, 2);
		bad += t_check_pages(hot, 0, HOT, 1);
	}
	heca_get_stats(h, &s1);
	fetched = (s1.pages_fetched + s1.pages_prefetched) - (s0.pages_fetched + s0.pages_prefetched);
	faulted = s1.faults_read - s0.faults_read; /* the scan only writes: these are hot reads */
	printf("  %s: %u hot pages read %u times while %u pages were scanned through a budget of "
	       "%u: %llu read faults, %llu pages fetched from the sponsor, %llu faults served "
	       "from the inactive list and %llu from write-back copies, %llu copies aged out\n",
	       fifo ? "first-in first-out" : "inactive list", HOT, SCAN / STEP, SCAN, BUDGET,
	       (unsigned long long)faulted, (unsigned long long)fetched,
	       (unsigned long long)(s1.faults_stash_hit - s0.faults_stash_hit),
	       (unsigned long long)(s1.faults_wb_hit - s0.faults_wb_hit),
	       (unsigned long long)(s1.pages_aged - s0.pages_aged));
	ASSERT_EQ(bad, 0);
	ASSERT_EQ(t_check_pages(scan, 0, SCAN, 2), 0);
	ASSERT_EQ(t_check_pages(hot, 0, HOT, 1), 0);
	ASSERT_GE(s1.resident_pages + s1.stash_pages, 1);
	ASSERT_LE(s1.resident_pages + s1.stash_pages, BUDGET);
	if (!fifo) {
		/* Each hot page comes back once from its local copy, then stays mapped. */
		ASSERT_LE(faulted, 2 * HOT);
		ASSERT_LE(fetched, HOT);
		ASSERT_GE((s1.faults_stash_hit + s1.faults_wb_hit) -
				  (s0.faults_stash_hit + s0.faults_wb_hit),
			  1);
	}
	heca_close(h);
	t_sponsor_stop(&sp, 0);
	printf("ok - test_policy%s\n", fifo ? " fifo" : "");
	return 0;
}
