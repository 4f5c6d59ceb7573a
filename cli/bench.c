// SPDX-License-Identifier: MIT
/*
 * bench.c - `heca bench`: the original Hecatonchire measurements (fault latency, random walk,
 * quicksort) run on heca beside their baselines; options, sponsors, latency and walk.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define PG  HECA_PAGE_SIZE
#define MiB (1ull << 20)

/* Page p holds this word at offset 0 once written; never zero, so a page that came back as
 * zeros is caught. */
static inline uint64_t tag(uint64_t p)
{
	return p * 0x9e3779b97f4a7c15ull + 1;
}

static inline uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: heca bench WORKLOAD [OPTIONS]\n"
	    "\n"
	    "Run one of the original Hecatonchire measurements on heca, beside its baseline,\n"
	    "and print a Markdown table (workload | figure | heca | baseline | ratio).\n"
	    "\n"
	    "workloads:\n"
	    "  raw      the limits heca works within, with heca's own sockets and frames: 4 KiB\n"
	    "           round trip (sleeping and spinning receiver), 1-page READ round trip,\n"
	    "           pipelined single-page READs (64 in flight), and the local userfaultfd\n"
	    "           fault floor (a bare handler thread, poll()ing or spinning; and in\n"
	    "           UFFD_FEATURE_SIGBUS mode, the faulting thread's SIGBUS handler installing\n"
	    "           the page, or handing it to a spinning thread; no network)\n"
	    "  latency  hard fault resolution: 1 thread, prefetch off, a 256M region written\n"
	    "           first so it lives at the sponsors (local 16M), then random pages read\n"
	    "           once each (at most 20000), each access timed; against raw RTT + floor\n"
	    "  walk     4 threads, 1G region held remotely (local = size/8), each thread a\n"
	    "           random walk over the page index: steps of -3..+6 pages (mean +1.6, so it\n"
	    "           drifts forward and revisits neighbours), a jump to a random page on 1%%\n"
	    "           of steps; one word read per page touched; prefetch on, then off\n"
	    "  uniform  like walk, but every touch is a uniformly random page\n"
	    "  qsort    parallel quicksort of 2G of 64-bit keys (one thread per core) in local\n"
	    "           memory, then in heca with local = 3:4, 1:2, 1:3, 1:4, 1:5 of it; verified\n"
	    "  all      raw, latency, walk, uniform (and qsort with --with-qsort), one table\n"
	    "  programs python3 and GNU sort unconstrained, under `heca run` and under kernel\n"
	    "           swap at the same memory limit; options of its own, given after it\n"
	    "           (heca bench programs --help)\n"
	    "\n"
	    "options:\n"
	    "  --sponsors LIST   sponsors (HOST:PORT,...); default: start 2 on 127.0.0.1\n"
	    "  --size SIZE       region size (defaults above; K/M/G suffixes)\n"
	    "  --local SIZE      local budget (latency 16M, walk/uniform size/8)\n"
	    "  --threads N       application threads (walk/uniform 4, qsort one per\n"
	    "                    core; latency is always 1)\n"
	    "  --prefetch N      pages fetched around a fault (walk/uniform 16, latency 0)\n"
	    "  --replicas R      copies of each stripe (default 1, as kernel swap keeps one)\n"
	    "  --inactive PCT    share of the budget kept as the inactive list (default 0)\n"
	    "  --low-latency     hold /dev/cpu_dma_latency at 0 while running (root): wake-ups\n"
	    "                    take microseconds instead of ~50 us, as on tuned servers\n"
	    "  --spin US         engine spins this long before sleeping (heca_options.spin_us);\n"
	    "                    latency then compares with the spinning RTT and floor\n"
	    "  --touches N       walk/uniform: touches per thread (default size/4K/threads);\n"
	    "                    latency: touches in all (default 20000)\n"
	    "  --seconds S       walk/uniform: stop each run after S seconds\n"
	    "  --samples N       raw: round trips timed per kind (default 2000)\n"
	    "  --ratios LIST     qsort: local:total ratios (default 3:4,1:2,1:3,1:4,1:5)\n"
	    "  --baseline swap   qsort: also run the sort under kernel swap on zram, in a memory\n"
	    "                    cgroup limited to each ratio (root; restores the machine)\n"
	    "  --swapfile PATH   with --baseline swap: swap to a new file at PATH, not zram\n"
	    "  --with-qsort      all: include qsort\n"
	    "  --seed N          random seed (default 1)\n"
	    "  --json FILE       write every figure, machine info and settings as JSON\n"
	    "  --plot FILE.png   qsort: overhead against memory ratio (needs gnuplot)\n"
	    "  --quiet           no progress line\n");
}

int bench_open(const struct bench_opts *o, uint64_t local, unsigned int prefetch, struct heca **out)
{
	struct heca_options ho;
	int rc;

	heca_options_init(&ho);
	ho.sponsors = o->sponsors;
	ho.local_budget = local;
	ho.prefetch_pages = prefetch;
	ho.spin_us = o->spin;
	ho.replicas = o->replicas ? o->replicas : 1;
	if (o->inactive_set)
		ho.inactive_pct = o->inactive;
	ho.log = cli_log;
	ho.log_level = HECA_LOG_WARN;
	rc = heca_open(&ho, out);
	if (rc)
		fprintf(stderr, "heca bench: %s\n",
			*heca_last_error() ? heca_last_error() : heca_strerror(rc));
	return rc;
}

/* Map size bytes and write the tag of every page from `threads` threads, so that all but
 * the last budget's worth of pages leave for the sponsors. */
struct fill_ctx {
	uint8_t *base;
	uint64_t npages;
	unsigned int threads, idx;
	atomic_uint_least64_t *done;
};

static void *fill_thread(void *arg)
{
	struct fill_ctx *c = arg;

	for (uint64_t p = c->idx; p < c->npages; p += c->threads) {
		*(volatile uint64_t *)(c->base + p * PG) = tag(p);
		if ((p / c->threads) % 256 == 0)
			atomic_fetch_add_explicit(c->done, 256, memory_order_relaxed);
	}
	return NULL;
}

static void fill_pages(uint8_t *base, uint64_t npages, unsigned int threads, const char *what)
{
	struct fill_ctx c[64];
	pthread_t t[64];
	atomic_uint_least64_t done = 0;
	unsigned int started = 0;
	double t0 = bench_now();

	if (threads > 64)
		threads = 64;
	for (unsigned int i = 0; i < threads; i++) {
		c[i] = (struct fill_ctx){base, npages, threads, i, &done};
		if (pthread_create(&t[i], NULL, fill_thread, &c[i]))
			break;
		started++;
	}
	if (!started) {
		c[0] = (struct fill_ctx){base, npages, 1, 0, &done};
		fill_thread(&c[0]);
	}
	for (unsigned int i = 0; i < started; i++) {
		while (i == 0 && atomic_load(&done) < npages) {
			uint64_t d = atomic_load(&done);
			bench_progress(what, (double)d / (double)npages,
				       (double)d / (bench_now() - t0), "pages/s");
			usleep(50000);
			if (d >= npages - npages / 64)
				break;
		}
		pthread_join(t[i], NULL);
	}
	bench_progress_end();
}

static int open_and_fill(const struct bench_opts *o, uint64_t size, uint64_t local,
			 unsigned int prefetch, unsigned int threads, struct heca **h,
			 uint8_t **base, const char *what)
{
	int rc = bench_open(o, local, prefetch, h);

	if (rc)
		return rc;
	rc = heca_map(*h, size, (void **)base);
	if (rc) {
		fprintf(stderr, "heca bench: map %llu bytes: %s (%s)\n", (unsigned long long)size,
			heca_strerror(rc), heca_last_error());
		heca_close(*h);
		*h = NULL;
		return rc;
	}
	fill_pages(*base, size / PG, threads, what);
	return 0;
}

static void fmt_mib(char *buf, size_t len, uint64_t bytes)
{
	snprintf(buf, len, "%.0fM", (double)bytes / (double)MiB);
}

/* ---- latency ---------------------------------------------------------------------- */

static int bench_latency(const struct bench_opts *o, struct bench_result *r)
{
	uint64_t size = o->size_set ? o->size : 256 * MiB;
	uint64_t local = o->local_set ? o->local : 16 * MiB;
	unsigned int prefetch = o->prefetch_set ? o->prefetch : 0;
	uint64_t npages = size / PG, limit, n, seed = o->seed, bad = 0;
	struct heca_stats s0, s1;
	struct bench_lat l;
	struct heca *h = NULL;
	uint8_t *base;
	uint64_t *perm = NULL;
	double *smp = NULL, t0 = 0;
	char a[32], b[32];
	int rc;

	fmt_mib(a, sizeof(a), size);
	fmt_mib(b, sizeof(b), local);
	printf("latency: region %s, local %s, 1 thread, prefetch %u, spin %u us\n", a, b, prefetch,
	       o->spin);
	rc = open_and_fill(o, size, local, prefetch, 1, &h, &base, "latency: write region");
	if (rc)
		return rc;
	heca_get_stats(h, &s0);
	/* FIFO eviction keeps the last pages written; touch only pages written before them so
	 * every touch is a fault that goes to a sponsor. */
	limit = npages > 3 * s0.budget_pages ? npages - 2 * s0.budget_pages : npages;
	n = o->touches ? o->touches : 20000;
	if (n > limit)
		n = limit;
	perm = malloc(limit * sizeof(*perm));
	smp = malloc(n * sizeof(*smp));
	if (!perm || !smp) {
		fprintf(stderr, "heca bench latency: out of memory\n");
		rc = -ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < limit; i++)
		perm[i] = i;
	for (uint64_t i = limit - 1; i > 0; i--) {
		uint64_t j = rng_next(&seed) % (i + 1), x = perm[i];
		perm[i] = perm[j];
		perm[j] = x;
	}
	t0 = bench_now();
	for (uint64_t i = 0; i < n; i++) {
		struct timespec ta, tb;
		uint64_t v;
		clock_gettime(CLOCK_MONOTONIC, &ta);
		v = *(volatile uint64_t *)(base + perm[i] * PG);
		clock_gettime(CLOCK_MONOTONIC, &tb);
		smp[i] =
		    (double)(tb.tv_sec - ta.tv_sec) * 1e6 + (double)(tb.tv_nsec - ta.tv_nsec) / 1e3;
		bad += v != tag(perm[i]);
		if (i % 128 == 0)
			bench_progress("latency: random reads", (double)i / (double)n,
				       (double)i / (bench_now() - t0), "faults/s");
	}
	bench_progress_end();
	heca_get_stats(h, &s1);
	if (bad) {
		fprintf(stderr, "heca bench latency: %llu pages read back wrong\n",
			(unsigned long long)bad);
		rc = -EIO;
		goto out;
	}
	bench_lat_summary(smp, n, &l);
	{
		const char *rtt = o->spin ? "4 KiB RTT (spin)" : "4 KiB RTT";
		const char *fl = o->spin ? "fault floor (spin)" : "fault floor";
		static const char *const q[] = {"p50", "p90", "p99", "mean"};
		double v[] = {l.p50, l.p90, l.p99, l.mean};
		for (int i = 0; i < 4; i++) {
			char f1[64], f2[64], fig[128];
			const struct bench_fig *x, *y;
			snprintf(f1, sizeof(f1), "%s %s", rtt, q[i]);
			snprintf(f2, sizeof(f2), "%s %s", fl, q[i]);
			x = bench_find(r, "raw", f1);
			y = bench_find(r, "raw", f2);
			snprintf(fig, sizeof(fig), "fault %s", q[i]);
			bench_fig(r, "latency", fig, "us", v[i], x && y ? x->base + y->base : NAN,
				  "RTT+floor");
		}
	}
	{
		uint64_t dc = s1.lat_count - s0.lat_count;
		uint64_t faults =
		    (s1.faults_read + s1.faults_write) - (s0.faults_read + s0.faults_write);
		double lib_mean = dc ? ((double)s1.lat_mean_ns * (double)s1.lat_count -
					(double)s0.lat_mean_ns * (double)s0.lat_count) /
					   (double)dc / 1e3
				     : NAN;
		bench_fig(r, "latency", "fault max", "us", l.max, NAN, "");
		bench_fig(r, "latency", "faults per touch", "", (double)faults / (double)n, NAN,
			  "");
		/* The library's histogram counts since heca_open(), write phase included; only
		 * its mean can be taken apart, from count and mean before and after. */
		bench_fig(r, "latency", "library mean, reads only", "us", lib_mean, NAN, "");
		bench_fig(r, "latency", "library p50, whole run", "us", s1.lat_p50_ns / 1e3, NAN,
			  "");
		bench_fig(r, "latency", "library p99, whole run", "us", s1.lat_p99_ns / 1e3, NAN,
			  "");
		/* Where one fault's time goes: the library times the stages it sees; the rest of
		 * what the application saw is the kernel delivering the fault to the engine and
		 * waking the application again. */
		if (s1.lat_fetch_count) {
			double net = s1.fetch_net_mean_ns / 1e3, inst = s1.fetch_install_mean_ns / 1e3;
			double lib = s1.lat_fetch_mean_ns / 1e3, eng = lib - net - inst;
			bench_fig(r, "latency", "stage: network (request to reply)", "us", net, NAN,
				  "");
			bench_fig(r, "latency", "stage: map page and wake (UFFDIO_COPY)", "us", inst,
				  NAN, "");
			bench_fig(r, "latency", "stage: engine (fault read, request queued)", "us",
				  eng > 0 ? eng : 0, NAN, "");
			bench_fig(r, "latency", "stage: kernel fault delivery and wake-up", "us",
				  l.mean > lib ? l.mean - lib : 0, NAN, "");
		}
	}
	{
		const struct bench_fig *f = bench_find(r, "latency", "fault p50");
		printf("latency: %llu random reads, p50 %.1f us, p90 %.1f us, p99 %.1f us, mean "
		       "%.1f us; p50 / (RTT p50 + fault floor p50) = %.2f\n",
		       (unsigned long long)n, l.p50, l.p90, l.p99, l.mean,
		       f && f->base > 0 ? f->heca / f->base : NAN);
	}
	if (!o->quiet)
		cli_print_stats(stdout, &s1);
out:
	free(perm);
	free(smp);
	heca_close(h);
	return rc;
}

/* ---- walk and uniform -------------------------------------------------------------- */

struct walk_run {
	uint8_t *base;
	uint64_t npages, touches; /* touches per thread */
	double deadline;	  /* bench_now() seconds, 0 = none */
	int uniform;
	uint64_t seed;
	pthread_barrier_t go;
	atomic_uint_least64_t done, bad;
	_Atomic double end; /* latest time a thread finished */
};

struct walk_thread {
	struct walk_run *w;
	unsigned int idx;
	pthread_t t;
};

static void *walk_thread(void *arg)
{
	struct walk_thread *wt = arg;
	struct walk_run *w = wt->w;
	uint64_t s = w->seed * 1000003 + wt->idx, n = w->npages, pos, bad = 0, i;

	pos = rng_next(&s) % n;
	pthread_barrier_wait(&w->go);
	for (i = 0; i < w->touches; i++) {
		uint64_t x = rng_next(&s);
		if (w->uniform || x % 100 == 0) {
			pos = (x >> 8) % n;
		} else {
			int64_t step = (int64_t)((x >> 8) % 10) - 3; /* -3..+6 */
			if (step == 0)
				step = 1;
			pos = (pos + n + (uint64_t)step) % n;
		}
		bad += *(volatile uint64_t *)(w->base + pos * PG) != tag(pos);
		if ((i & 255) == 255) {
			atomic_fetch_add_explicit(&w->done, 256, memory_order_relaxed);
			if (w->deadline && bench_now() > w->deadline) {
				i++;
				break;
			}
		}
	}
	atomic_fetch_add(&w->done, i & 255);
	atomic_fetch_add(&w->bad, bad);
	{
		double t = bench_now(), e = atomic_load(&w->end);
		while (t > e && !atomic_compare_exchange_weak(&w->end, &e, t))
			;
	}
	return NULL;
}

/* Run the walk on base[npages) and return the wall time; *touched gets the pages touched. */
static double run_walk(uint8_t *base, uint64_t npages, unsigned int threads, uint64_t touches,
		       double seconds, int uniform, uint64_t seed, const char *what,
		       uint64_t *touched, uint64_t *bad)
{
	struct walk_run w = {
	    .base = base, .npages = npages, .touches = touches, .uniform = uniform, .seed = seed};
	struct walk_thread *wt = calloc(threads, sizeof(*wt));
	uint64_t total = touches * threads;
	double t0, t1;

	if (!wt) {
		*touched = 0;
		return NAN;
	}
	pthread_barrier_init(&w.go, NULL, threads + 1);
	for (unsigned int i = 0; i < threads; i++) {
		wt[i] = (struct walk_thread){.w = &w, .idx = i};
		if (pthread_create(&wt[i].t, NULL, walk_thread, &wt[i])) {
			fprintf(stderr, "heca bench: cannot start thread %u\n", i);
			exit(1);
		}
	}
	t0 = bench_now();
	if (seconds > 0)
		w.deadline = t0 + seconds;
	pthread_barrier_wait(&w.go);
	for (;;) {
		uint64_t d = atomic_load(&w.done);
		double t = bench_now();
		if (d >= total || (seconds > 0 && t > t0 + seconds))
			break;
		bench_progress(what, seconds > 0 ? (t - t0) / seconds : (double)d / (double)total,
			       (double)d / (t - t0), "pages/s");
		usleep(10000);
	}
	for (unsigned int i = 0; i < threads; i++)
		pthread_join(wt[i].t, NULL);
	t1 = atomic_load(&w.end); /* not when this thread noticed: it polls */
	bench_progress_end();
	pthread_barrier_destroy(&w.go);
	free(wt);
	*touched = atomic_load(&w.done);
	*bad = atomic_load(&w.bad);
	return t1 - t0;
}

struct walk_cfg {
	uint64_t size, local, touches;
	unsigned int threads;
	int kinds; /* bit 0 walk, bit 1 uniform */
};

/* The same walk in ordinary memory: what an access costs when nothing is remote. */
static int walk_local(const struct bench_opts *o, const struct walk_cfg *c, int uniform,
		      double *us_per_access)
{
	uint64_t npages = c->size / PG, touched, bad;
	uint8_t *m =
	    mmap(NULL, c->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	double t;

	if (m == MAP_FAILED) {
		fprintf(stderr, "heca bench: no local memory for the baseline (%s); skipped\n",
			strerror(errno));
		*us_per_access = NAN;
		return 0;
	}
	fill_pages(m, npages, c->threads, "local memory: write");
	t = run_walk(m, npages, c->threads, c->touches, o->seconds, uniform, o->seed,
		     uniform ? "local memory: uniform" : "local memory: walk", &touched, &bad);
	munmap(m, c->size);
	*us_per_access = touched ? t / (double)touched * 1e6 : NAN;
	return bad ? -EIO : 0;
}

static int bench_walks(const struct bench_opts *o, struct bench_result *r, int kinds)
{
	struct walk_cfg c = {.kinds = kinds};
	unsigned int pfs[2], npf = 0;
	double local_us[2] = {NAN, NAN};
	const struct bench_fig *raw = bench_find(r, "raw", "pipelined page rate");
	double raw_rate = raw ? raw->base : NAN; /* r->fig moves as rows are added */
	char a[32], b[32];
	int rc = 0;

	c.size = o->size_set ? o->size : 1024 * MiB;
	c.local = o->local_set ? o->local : c.size / 8;
	if (c.local < 64 * PG)
		c.local = 64 * PG;
	c.threads = o->threads_set ? o->threads : 4;
	c.touches = o->touches ? o->touches : c.size / PG / c.threads;
	if (c.touches < 1)
		c.touches = 1;
	pfs[npf++] = o->prefetch_set ? o->prefetch : 16;
	if (pfs[0] != 0)
		pfs[npf++] = 0;
	fmt_mib(a, sizeof(a), c.size);
	fmt_mib(b, sizeof(b), c.local);
	printf("%s: region %s, local %s, %u threads, %llu touches per thread%s, prefetch %u%s, "
	       "spin %u us\n",
	       kinds == 3   ? "walk+uniform"
	       : kinds == 1 ? "walk"
			    : "uniform",
	       a, b, c.threads, (unsigned long long)c.touches,
	       o->seconds > 0 ? " (or time limit)" : "", pfs[0], npf > 1 ? " and 0" : "", o->spin);
	for (int k = 0; k < 2; k++) {
		if (!(kinds & (1 << k)))
			continue;
		rc = walk_local(o, &c, k, &local_us[k]);
		if (rc) {
			fprintf(stderr, "heca bench: local walk read wrong data\n");
			return rc;
		}
	}
	for (unsigned int i = 0; i < npf && !rc; i++) {
		struct heca *h = NULL;
		uint8_t *base;
		char what[128];

		snprintf(what, sizeof(what), "prefetch %u: write region", pfs[i]);
		rc = open_and_fill(o, c.size, c.local, pfs[i], c.threads, &h, &base, what);
		if (rc)
			return rc;
		for (int k = 0; k < 2 && !rc; k++) {
			const char *name = k ? "uniform" : "walk";
			struct heca_stats s0, s1;
			uint64_t touched, bad, resolved, pin, pout;
			double t, rate, us;
			char fig[128];

			if (!(kinds & (1 << k)))
				continue;
			snprintf(what, sizeof(what), "%s, prefetch %u", name, pfs[i]);
			heca_get_stats(h, &s0);
			t = run_walk(base, c.size / PG, c.threads, c.touches, o->seconds, k,
				     o->seed, what, &touched, &bad);
			heca_get_stats(h, &s1);
			if (bad) {
				fprintf(stderr, "heca bench %s: %llu pages read back wrong\n", name,
					(unsigned long long)bad);
				rc = -EIO;
				break;
			}
			resolved = (s1.pages_fetched + s1.pages_prefetched + s1.faults_wb_hit +
				    s1.faults_zero) -
				   (s0.pages_fetched + s0.pages_prefetched + s0.faults_wb_hit +
				    s0.faults_zero);
			rate = (double)resolved / t;
			us = touched ? t / (double)touched * 1e6 : NAN;
			snprintf(fig, sizeof(fig), "pages/s resolved, prefetch %u", pfs[i]);
			bench_fig(r, name, fig, "pages/s", rate, raw_rate, "raw pipelined");
			snprintf(fig, sizeof(fig), "us per access, prefetch %u", pfs[i]);
			bench_fig(r, name, fig, "us", us, local_us[k], "local memory");
			pin = (s1.pages_fetched + s1.pages_prefetched) -
			      (s0.pages_fetched + s0.pages_prefetched);
			pout = s1.pages_written_back - s0.pages_written_back;
			snprintf(fig, sizeof(fig), "pages in, prefetch %u", pfs[i]);
			bench_fig(r, name, fig, "pages", (double)pin, NAN, "");
			snprintf(fig, sizeof(fig), "pages out, prefetch %u", pfs[i]);
			bench_fig(r, name, fig, "pages", (double)pout, NAN, "");
			/* The floor: pages moved at the raw pipelined rate. */
			snprintf(fig, sizeof(fig), "time, prefetch %u", pfs[i]);
			bench_fig(r, name, fig, "ms", t * 1e3, (double)(pin + pout) / raw_rate * 1e3,
				  "raw floor");
			printf("%s, prefetch %u: %llu touches in %.2f s: %.0f pages/s resolved, "
			       "%.2f us per access (local memory %.3f us); %llu pages in, %llu out, "
			       "floor %.2f s\n",
			       name, pfs[i], (unsigned long long)touched, t, rate, us, local_us[k],
			       (unsigned long long)pin, (unsigned long long)pout,
			       (double)(pin + pout) / raw_rate);
		}
		heca_close(h);
	}
	return rc;
}

/* ---- sponsors, dispatch ------------------------------------------------------------ */

static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v > max || *s == '-')
		return -EINVAL;
	*out = v;
	return 0;
}

static int run_raw(const struct bench_opts *o, struct bench_result *r)
{
	struct bench_raw_opts ro = {
	    .sponsors = o->sponsors,
	    .samples = o->samples ? o->samples : 2000,
	    .floor_pages = o->samples ? o->samples * 4 : 8192,
	    .pipeline_pages = o->samples ? (uint64_t)o->samples * 100 : 200000,
	    .inflight = 64,
	    .seg_bytes_max = 64 * MiB,
	    .timeout_ms = 5000,
	};
	printf("raw: %u round trips per kind, %llu pipelined READs (%u in flight), %u-page fault "
	       "floor\n",
	       ro.samples, (unsigned long long)ro.pipeline_pages, ro.inflight, ro.floor_pages);
	return bench_raw(&ro, r);
}

int cmd_bench(int argc, char **argv)
{
	static const struct option lo[] = {{"sponsors", required_argument, 0, 's'},
					   {"size", required_argument, 0, 'S'},
					   {"local", required_argument, 0, 'l'},
					   {"threads", required_argument, 0, 't'},
					   {"prefetch", required_argument, 0, 'p'},
					   {"spin", required_argument, 0, 'w'},
					   {"replicas", required_argument, 0, 'C'},
					   {"inactive", required_argument, 0, 'i'},
					   {"touches", required_argument, 0, 'n'},
					   {"seconds", required_argument, 0, 'T'},
					   {"samples", required_argument, 0, 'm'},
					   {"ratios", required_argument, 0, 'R'},
					   {"baseline", required_argument, 0, 'B'},
					   {"swapfile", required_argument, 0, 'F'},
					   {"with-qsort", no_argument, 0, 'Q'},
					   {"seed", required_argument, 0, 'r'},
					   {"json", required_argument, 0, 'j'},
					   {"plot", required_argument, 0, 'P'},
					   {"quiet", no_argument, 0, 'q'},
					   {"low-latency", no_argument, 0, 'L'},
					   {"help", no_argument, 0, 'h'},
					   {0, 0, 0, 0}};
	struct bench_opts o = {.seed = 1};
	int dma_fd = -1;
	struct bench_result res = {0};
	struct spawned sp = {0};
	const char *wl;
	uint64_t v, cap;
	int c, rc = 0;
	char capstr[32];

	/* programs runs whole programs under `heca run`: options of its own, no sponsors here. */
	if (argc > 1 && !strcmp(argv[1], "programs"))
		return bench_programs(argc - 1, argv + 1);
	setvbuf(stdout, NULL, _IOLBF, 0); /* our lines interleave with the sponsors' stderr */
	optind = 1;
	while ((c = getopt_long(argc, argv, "hq", lo, NULL)) != -1) {
		switch (c) {
		case 's':
			o.sponsors = optarg;
			break;
		case 'S':
			if (heca_parse_size(optarg, &o.size) || o.size < 16 * PG) {
				fprintf(stderr, "heca bench: bad --size '%s' (at least 64K)\n",
					optarg);
				usage(stderr);
				return 2;
			}
			o.size_set = 1;
			break;
		case 'l':
			if (heca_parse_size(optarg, &o.local) || o.local < 8 * PG) {
				fprintf(stderr, "heca bench: bad --local '%s' (at least 32K)\n",
					optarg);
				usage(stderr);
				return 2;
			}
			o.local_set = 1;
			break;
		case 't':
			if (parse_uint(optarg, 256, &v) || v < 1) {
				fprintf(stderr, "heca bench: --threads must be 1..256\n");
				usage(stderr);
				return 2;
			}
			o.threads = (unsigned int)v;
			o.threads_set = 1;
			break;
		case 'p':
			if (parse_uint(optarg, 4096, &v)) {
				fprintf(stderr, "heca bench: bad --prefetch '%s'\n", optarg);
				usage(stderr);
				return 2;
			}
			o.prefetch = (unsigned int)v;
			o.prefetch_set = 1;
			break;
		case 'C':
			o.replicas = (unsigned int)strtoul(optarg, NULL, 10);
			break;
		case 'i':
			if (parse_uint(optarg, 50, &v)) {
				fprintf(stderr, "heca bench: bad --inactive '%s' (0 to 50)\n", optarg);
				usage(stderr);
				return 2;
			}
			o.inactive = (unsigned int)v;
			o.inactive_set = 1;
			break;
		case 'w':
			if (parse_uint(optarg, 10000000, &v)) {
				fprintf(stderr, "heca bench: bad --spin '%s'\n", optarg);
				usage(stderr);
				return 2;
			}
			o.spin = (unsigned int)v;
			break;
		case 'n':
			if (parse_uint(optarg, 1ull << 40, &o.touches) || !o.touches) {
				fprintf(stderr, "heca bench: bad --touches '%s'\n", optarg);
				usage(stderr);
				return 2;
			}
			break;
		case 'T': {
			char *end;
			o.seconds = strtod(optarg, &end);
			if (end == optarg || *end || !(o.seconds > 0)) {
				fprintf(stderr, "heca bench: bad --seconds '%s'\n", optarg);
				usage(stderr);
				return 2;
			}
			break;
		}
		case 'm':
			if (parse_uint(optarg, 10000000, &v) || v < 10) {
				fprintf(stderr, "heca bench: --samples must be at least 10\n");
				usage(stderr);
				return 2;
			}
			o.samples = (unsigned int)v;
			break;
		case 'R':
			if (!bench_ratios_valid(optarg)) {
				fprintf(stderr,
					"heca bench: bad --ratios '%s' (want A:B,... with "
					"0 < A <= B, at most 16)\n",
					optarg);
				usage(stderr);
				return 2;
			}
			o.ratios = optarg;
			break;
		case 'B':
			if (strcmp(optarg, "swap")) {
				fprintf(stderr, "heca bench: --baseline knows only 'swap'\n");
				usage(stderr);
				return 2;
			}
			o.baseline_swap = 1;
			break;
		case 'F':
			o.swapfile = optarg;
			break;
		case 'Q':
			o.with_qsort = 1;
			break;
		case 'r':
			if (parse_uint(optarg, UINT64_MAX, &o.seed)) {
				fprintf(stderr, "heca bench: bad --seed '%s'\n", optarg);
				usage(stderr);
				return 2;
			}
			break;
		case 'j':
			o.json = optarg;
			break;
		case 'P':
			o.plot = optarg;
			break;
		case 'L':
			/* Held open for the whole run: the CPUs stay out of deep idle states, so a
			 * sleeping thread wakes in microseconds, as low-latency setups do. */
			if (dma_fd < 0) {
				int32_t zero = 0;
				dma_fd = open("/dev/cpu_dma_latency", O_WRONLY | O_CLOEXEC);
				if (dma_fd < 0 || write(dma_fd, &zero, sizeof(zero)) != sizeof(zero)) {
					fprintf(stderr, "heca bench: --low-latency: /dev/cpu_dma_latency: "
							"%s (needs root)\n",
						strerror(errno));
					return 2;
				}
			}
			break;
		case 'q':
			o.quiet = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "heca bench: which workload?\n");
		usage(stderr);
		return 2;
	}
	wl = argv[optind];
	if (optind + 1 < argc) {
		fprintf(stderr, "heca bench: unexpected argument '%s'\n", argv[optind + 1]);
		usage(stderr);
		return 2;
	}
	if (!strcmp(wl, "programs")) {
		fprintf(stderr, "heca bench: programs takes its options after it: heca bench "
				"programs [OPTIONS]\n");
		return 2;
	}
	if (strcmp(wl, "raw") && strcmp(wl, "latency") && strcmp(wl, "walk") &&
	    strcmp(wl, "uniform") && strcmp(wl, "qsort") && strcmp(wl, "all")) {
		fprintf(stderr, "heca bench: unknown workload '%s'\n", wl);
		usage(stderr);
		return 2;
	}
	if (o.swapfile && !o.baseline_swap) {
		fprintf(stderr, "heca bench: --swapfile goes with --baseline swap\n");
		usage(stderr);
		return 2;
	}
	if (o.plot && strcmp(wl, "qsort") && !(o.with_qsort && !strcmp(wl, "all"))) {
		fprintf(stderr, "heca bench: --plot draws the qsort overhead; use it with qsort\n");
		usage(stderr);
		return 2;
	}
	bench_progress_quiet(o.quiet);
	if (!o.sponsors) {
		/* Capacity is reserved lazily: give each sponsor room for the largest region of
		 * any workload run, plus the raw probe's pages. */
		cap = o.size_set			     ? o.size
		      : !strcmp(wl, "qsort") || o.with_qsort ? 2048 * MiB
		      : !strcmp(wl, "latency")		     ? 256 * MiB
							     : 1024 * MiB;
		snprintf(capstr, sizeof(capstr), "%llu", (unsigned long long)(cap + 256 * MiB));
		if (cli_spawn_sponsors(&sp, 2, capstr, 0))
			return 1;
		o.sponsors = sp.list;
		printf("started 2 sponsors: %s\n", o.sponsors);
	}
	fflush(stdout);
	if (!strcmp(wl, "qsort")) {
		rc = bench_qsort(&o, &res);
	} else {
		rc = run_raw(&o, &res);
		if (!rc && (!strcmp(wl, "latency") || !strcmp(wl, "all")))
			rc = bench_latency(&o, &res);
		if (!rc && (!strcmp(wl, "walk") || !strcmp(wl, "uniform") || !strcmp(wl, "all")))
			rc = bench_walks(&o, &res,
					 !strcmp(wl, "all")    ? 3
					 : !strcmp(wl, "walk") ? 1
							       : 2);
		if (!rc && !strcmp(wl, "all") && o.with_qsort)
			rc = bench_qsort(&o, &res);
	}
	if (sp.n)
		cli_stop_sponsors(&sp);
	bench_group_rows(&res);
	if (res.n)
		bench_print_table(&res);
	if (o.json && res.n) {
		struct bench_json_setting set[16];
		int ns = 0;
#define SET(k, ...)                                                                                \
	do {                                                                                       \
		set[ns].key = k;                                                                   \
		snprintf(set[ns].value, sizeof(set[ns].value), __VA_ARGS__);                       \
		ns++;                                                                              \
	} while (0)
		SET("workload", "%s", wl);
		SET("sponsors", "%s", sp.list[0] ? "2 local (started by heca bench)" : o.sponsors);
		SET("size", "%s", o.size_set ? "" : "workload default");
		if (o.size_set)
			snprintf(set[ns - 1].value, sizeof(set[ns - 1].value), "%llu",
				 (unsigned long long)o.size);
		SET("local", "%llu", (unsigned long long)o.local);
		if (!o.local_set)
			snprintf(set[ns - 1].value, sizeof(set[ns - 1].value), "workload default");
		SET("threads", "%u", o.threads);
		if (!o.threads_set)
			snprintf(set[ns - 1].value, sizeof(set[ns - 1].value), "workload default");
		SET("prefetch", "%u", o.prefetch);
		if (!o.prefetch_set)
			snprintf(set[ns - 1].value, sizeof(set[ns - 1].value), "workload default");
		SET("spin_us", "%u", o.spin);
		SET("inactive_pct", "%u", o.inactive_set ? o.inactive : HECA_INACTIVE_DEFAULT);
		SET("low_latency", "%s", dma_fd >= 0 ? "cpu_dma_latency 0" : "off");
		SET("replicas", "%u", o.replicas ? o.replicas : 1);
		SET("touches", "%llu", (unsigned long long)o.touches);
		SET("seconds", "%g", o.seconds);
		SET("seed", "%llu", (unsigned long long)o.seed);
		SET("ratios", "%s", o.ratios ? o.ratios : "3:4,1:2,1:3,1:4,1:5");
		SET("baseline", "%s",
		    o.baseline_swap ? (o.swapfile ? "swap file" : "zram swap") : "none");
#undef SET
		if (bench_write_json(&res, o.json, wl, set, ns) && !rc)
			rc = 1;
		else if (!rc)
			printf("figures written to %s\n", o.json);
	}
	free(res.fig);
	if (dma_fd >= 0)
		close(dma_fd);
	return rc ? 1 : 0;
}
