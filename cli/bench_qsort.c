// SPDX-License-Identifier: MIT
/*
 * bench_qsort.c - `heca bench qsort`: the parallel quicksort in local memory, in heca at each
 * local:total memory ratio, and optionally under kernel swap in a memory cgroup (swapbase).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cli.h"
#include "qsort_work.h"
#ifdef HECA_HAVE_SWAPBASE
#include "swapbase.h"
#endif

#define PG	   HECA_PAGE_SIZE
#define MAX_RATIOS 16


int bench_ratios_valid(const char *s)
{
	struct bench_ratio r[MAX_RATIOS];
	return bench_parse_ratios(s, r, MAX_RATIOS) > 0;
}

struct sort_job {
	uint64_t *keys;
	size_t n;
	unsigned int threads;
	uint64_t seed;
	const char *what;
	double t0;
	double fill_s, sort_s;
	int quiet_progress;
};

static void sort_progress(void *arg, double fraction)
{
	struct sort_job *j = arg;
	double t = bench_now() - j->t0;

	bench_progress(j->what, fraction, fraction > 0 ? t / fraction - t : 0, "s left");
}

/* Fill, sort (timed), verify. Returns 0 or -errno after printing why. */
static int sort_keys(struct sort_job *j)
{
	uint64_t sum;
	size_t bad = 0;
	int rc;

	j->t0 = bench_now();
	qw_fill(j->keys, j->n, j->seed, j->threads, &sum);
	j->fill_s = bench_now() - j->t0;
	j->t0 = bench_now();
	rc = qw_sort_progress(j->keys, j->n, j->threads, sort_progress, j);
	j->sort_s = bench_now() - j->t0;
	bench_progress_end();
	if (rc) {
		fprintf(stderr, "heca bench qsort: %s: sort failed: %s\n", j->what, strerror(-rc));
		return rc;
	}
	rc = qw_verify_at(j->keys, j->n, sum, j->threads, &bad);
	if (rc) {
		if (bad < j->n)
			fprintf(stderr, "heca bench qsort: %s: NOT SORTED at index %zu\n", j->what,
				bad);
		else
			fprintf(stderr, "heca bench qsort: %s: checksum of the keys changed\n",
				j->what);
	}
	return rc;
}

/* The machine's pages swapped in and out so far (pswpin, pswpout of /proc/vmstat): the kernel
 * swap run's are the deltas, as no other swap is in use while it runs. */
static void vmstat_swap(uint64_t *in, uint64_t *out)
{
	char line[128];
	unsigned long long v;
	FILE *f = fopen("/proc/vmstat", "re");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "pswpin %llu", &v) == 1)
			*in = v;
		else if (sscanf(line, "pswpout %llu", &v) == 1)
			*out = v;
	}
	fclose(f);
}

#ifdef HECA_HAVE_SWAPBASE
/* Runs in the child that swapbase_run() put in the memory cgroup. */
static int swap_child(void *arg)
{
	struct sort_job j = *(struct sort_job *)arg;
	size_t len = j.n * sizeof(uint64_t);
	int rc;

	j.keys = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (j.keys == MAP_FAILED)
		return -ENOMEM;
	rc = sort_keys(&j);
	swapbase_phase("fill", j.fill_s);
	swapbase_phase("sort", j.sort_s);
	munmap(j.keys, len);
	return rc;
}
#endif

int bench_qsort(const struct bench_opts *o, struct bench_result *r)
{
	struct bench_ratio rt[MAX_RATIOS];
	double heca_s[MAX_RATIOS], swap_s[MAX_RATIOS], heca_pct[MAX_RATIOS], swap_pct[MAX_RATIOS],
	    fr[MAX_RATIOS];
	const char *lab[MAX_RATIOS];
	uint64_t size = o->size_set ? o->size : 2048ull << 20;
	unsigned int threads = o->threads_set ? o->threads : 0;
	unsigned int prefetch = o->prefetch_set ? o->prefetch : 16;
	struct sort_job j = {.threads = threads, .seed = o->seed};
	const char *swap_name = o->swapfile ? "swap file" : "zram swap";
	double local_s = NAN, raw_rate = NAN;
	double heca_in[MAX_RATIOS], heca_out[MAX_RATIOS], swap_in[MAX_RATIOS], swap_out[MAX_RATIOS];
	int nr, rc = 0;
#ifdef HECA_HAVE_SWAPBASE
	struct swapbase sb;
	char err[256];
#endif

	size -= size % PG;
	j.n = size / sizeof(uint64_t);
	nr = bench_parse_ratios(o->ratios ? o->ratios : "3:4,1:2,1:3,1:4,1:5", rt, MAX_RATIOS);
	if (nr < 0) {
		fprintf(stderr,
			"heca bench qsort: bad --ratios '%s' (want A:B,... with 0 < A <= "
			"B, at most %d)\n",
			o->ratios, MAX_RATIOS);
		return 2;
	}
	for (int i = 0; i < nr; i++) {
		heca_s[i] = swap_s[i] = heca_pct[i] = swap_pct[i] = NAN;
		heca_in[i] = heca_out[i] = swap_in[i] = swap_out[i] = NAN;
		fr[i] = rt[i].frac;
		lab[i] = rt[i].label;
	}
	printf("qsort: %.0f MiB of 64-bit keys (%zu), %u threads, prefetch %u, spin %u us, "
	       "ratios %s%s\n",
	       (double)size / 1048576.0, j.n,
	       threads ? threads : (unsigned)sysconf(_SC_NPROCESSORS_ONLN), prefetch, o->spin,
	       o->ratios ? o->ratios : "3:4,1:2,1:3,1:4,1:5",
	       o->baseline_swap
		   ? (o->swapfile ? ", kernel swap to a file" : ", kernel swap on zram")
		   : "");
	fflush(stdout);

#ifdef HECA_HAVE_SWAPBASE
	memset(&sb, 0, sizeof(sb));
	if (o->baseline_swap) {
		/* Before anything long: a machine that cannot do it should say so at once. */
		rc = swapbase_setup(&sb, size + size / 4 + (64ull << 20), o->swapfile, err,
				    sizeof(err));
		if (rc) {
			fprintf(stderr, "heca bench qsort: kernel swap baseline: %s\n", err);
			return 1;
		}
	}
#else
	if (o->baseline_swap) {
		fprintf(stderr, "heca bench qsort: this build has no kernel swap baseline "
				"(bench/swapbase.c was missing when it was configured)\n");
		return 1;
	}
#endif

	/* The raw cost of a page moved, for the floor beside the pages each run moved. */
	if (bench_raw_pipelined(o->sponsors, 50000, &raw_rate)) {
		rc = -EIO;
		goto out;
	}
	printf("qsort raw pipelined page rate: %.0f pages/s\n", raw_rate);

	/* Local memory. */
	j.keys = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (j.keys == MAP_FAILED) {
		fprintf(stderr, "heca bench qsort: cannot map %llu bytes of local memory: %s\n",
			(unsigned long long)size, strerror(errno));
		rc = -ENOMEM;
		goto out;
	}
	j.what = "qsort: local memory";
	rc = sort_keys(&j);
	munmap(j.keys, size);
	if (rc)
		goto out;
	local_s = j.sort_s;
	printf("qsort local memory: sort %.2f s (fill %.2f s), verified\n", local_s, j.fill_s);
	bench_fig(r, "qsort", "sort time, local memory", "s", NAN, local_s, "local");

	/* heca at each ratio. */
	for (int i = 0; i < nr; i++) {
		struct heca *h = NULL;
		struct heca_stats st;
		uint64_t local = (uint64_t)((double)size * rt[i].frac);
		char what[128];

		local -= local % PG;
		snprintf(what, sizeof(what), "qsort: heca %.23s", rt[i].label);
		rc = bench_open(o, local, prefetch, &h);
		if (rc)
			goto out;
		rc = heca_map(h, size, (void **)&j.keys);
		if (rc) {
			fprintf(stderr, "heca bench qsort: map %llu bytes: %s (%s)\n",
				(unsigned long long)size, heca_strerror(rc), heca_last_error());
			heca_close(h);
			goto out;
		}
		j.what = what;
		rc = sort_keys(&j);
		heca_get_stats(h, &st);
		heca_close(h);
		if (rc)
			goto out;
		heca_s[i] = j.sort_s;
		heca_pct[i] = (j.sort_s / local_s - 1) * 100;
		heca_in[i] = (double)(st.pages_fetched + st.pages_prefetched);
		heca_out[i] = (double)st.pages_written_back;
		printf("qsort heca %s (local %.0f MiB): sort %.2f s, overhead %.2f%%, %llu pages "
		       "fetched, %llu prefetched, %llu written back, floor %.2f s\n",
		       rt[i].label, (double)local / 1048576.0, j.sort_s, heca_pct[i],
		       (unsigned long long)st.pages_fetched,
		       (unsigned long long)st.pages_prefetched,
		       (unsigned long long)st.pages_written_back,
		       (heca_in[i] + heca_out[i]) / raw_rate);
		fflush(stdout);
	}

#ifdef HECA_HAVE_SWAPBASE
	for (int i = 0; o->baseline_swap && i < nr; i++) {
		uint64_t limit = (uint64_t)((double)size * rt[i].frac);
		char what[128];
		double secs = NAN;

		snprintf(what, sizeof(what), "qsort: %s %.23s", swap_name, rt[i].label);
		uint64_t in0 = 0, out0 = 0, in1 = 0, out1 = 0;
		j.what = what;
		vmstat_swap(&in0, &out0);
		rc = swapbase_run(&sb, limit, swap_child, &j, &secs, err, sizeof(err));
		vmstat_swap(&in1, &out1);
		swap_in[i] = (double)(in1 - in0);
		swap_out[i] = (double)(out1 - out0);
		bench_progress_end();
		if (rc) {
			fprintf(stderr, "heca bench qsort: %s at %s: %s\n", swap_name, rt[i].label,
				*err ? err : strerror(-rc));
			goto out;
		}
		for (unsigned int k = 0; k < sb.last.nphases; k++)
			if (!strcmp(sb.last.phase[k].name, "sort"))
				swap_s[i] = sb.last.phase[k].seconds;
		swap_pct[i] = (swap_s[i] / local_s - 1) * 100;
		printf("qsort %s %s: sort %.2f s, overhead %.2f%% (peak swap %.0f MiB), %.0f pages "
		       "swapped in, %.0f out (/proc/vmstat), floor %.2f s\n",
		       swap_name, rt[i].label, swap_s[i], swap_pct[i],
		       (double)sb.last.peak_swap_bytes / 1048576.0, swap_in[i], swap_out[i],
		       (swap_in[i] + swap_out[i]) / raw_rate);
		fflush(stdout);
	}
#endif

out:
#ifdef HECA_HAVE_SWAPBASE
	swapbase_teardown(&sb);
#endif
	for (int i = 0; i < nr; i++) {
		char fig[128];
		if (isnan(heca_s[i]))
			continue;
		snprintf(fig, sizeof(fig), "sort time, local %.23s", rt[i].label);
		bench_fig(r, "qsort", fig, "s", heca_s[i], local_s, "local");
	}
	for (int i = 0; i < nr; i++) {
		char fig[128];
		if (isnan(heca_s[i]))
			continue;
		snprintf(fig, sizeof(fig), "overhead, local %.23s", rt[i].label);
		bench_fig(r, "qsort", fig, "%", heca_pct[i], swap_pct[i], swap_name);
	}
	for (int i = 0; i < nr; i++) {
		char fig[128];
		if (isnan(swap_s[i]))
			continue;
		snprintf(fig, sizeof(fig), "%s sort time, %.23s", swap_name, rt[i].label);
		bench_fig(r, "qsort", fig, "s", NAN, swap_s[i], swap_name);
	}
	for (int i = 0; i < nr; i++) {
		char fig[128];
		if (isnan(heca_in[i]))
			continue;
		snprintf(fig, sizeof(fig), "pages in, %.23s", rt[i].label);
		bench_fig(r, "qsort", fig, "pages", heca_in[i], swap_in[i], swap_name);
		snprintf(fig, sizeof(fig), "pages out, %.23s", rt[i].label);
		bench_fig(r, "qsort", fig, "pages", heca_out[i], swap_out[i], swap_name);
		snprintf(fig, sizeof(fig), "floor, %.23s", rt[i].label);
		bench_fig(r, "qsort", fig, "s", (heca_in[i] + heca_out[i]) / raw_rate,
			  (swap_in[i] + swap_out[i]) / raw_rate, swap_name);
	}
	if (!isnan(raw_rate))
		bench_fig(r, "raw", "pipelined page rate", "pages/s", NAN, raw_rate, "");
	if (!rc && o->plot && bench_plot(o->plot, fr, lab, heca_pct, swap_pct, nr))
		rc = 1;
	return rc ? 1 : 0;
}
