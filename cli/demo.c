// SPDX-License-Identifier: MIT
/*
 * demo.c - `heca demo`, the main job: map a region several times the local budget, fill it
 * from several threads with a verifiable pattern, read it all back in another order, verify.
 */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

struct demo {
	uint8_t *base;
	uint64_t npages;
	unsigned int threads;
	uint64_t seed;
	atomic_uint_least64_t done;
	atomic_uint_least64_t checked;	 /* pages compared, all rounds */
	atomic_uint_least64_t bad;	 /* mismatching pages */
	atomic_uint_least64_t first_bad; /* page index + 1 of the lowest mismatch seen */
	int phase;
};

struct worker {
	struct demo *d;
	unsigned int idx;
	pthread_t t;
};

static inline uint64_t pattern(uint64_t seed, uint64_t page, uint64_t word)
{
	uint64_t x = seed ^ (page * 0x9e3779b97f4a7c15ull) ^ (word * 0xc2b2ae3d27d4eb4full);
	x ^= x >> 29;
	return x;
}

static void check_page(struct demo *d, uint64_t page)
{
	uint64_t *p = (uint64_t *)(d->base + page * HECA_PAGE_SIZE);

	for (uint64_t k = 0; k < HECA_PAGE_SIZE / 8; k++) {
		if (p[k] != pattern(d->seed, page, k)) {
			uint64_t cur = atomic_load(&d->first_bad);
			atomic_fetch_add(&d->bad, 1);
			while ((cur == 0 || page + 1 < cur) &&
			       !atomic_compare_exchange_weak(&d->first_bad, &cur, page + 1))
				;
			break;
		}
	}
	atomic_fetch_add_explicit(&d->checked, 1, memory_order_relaxed);
}

/* Writes interleave pages over the threads; reads give each thread one contiguous block, so
 * every page is read back by another thread than the one that wrote it, long after it left
 * local memory. */
static void *work(void *arg)
{
	struct worker *w = arg;
	struct demo *d = w->d;
	uint64_t n = d->npages, lo = n * w->idx / d->threads, hi = n * (w->idx + 1) / d->threads;

	if (d->phase == 0) {
		for (uint64_t page = w->idx; page < n; page += d->threads) {
			uint64_t *p = (uint64_t *)(d->base + page * HECA_PAGE_SIZE);
			for (uint64_t k = 0; k < HECA_PAGE_SIZE / 8; k++)
				p[k] = pattern(d->seed, page, k);
			atomic_fetch_add_explicit(&d->done, 1, memory_order_relaxed);
		}
		return NULL;
	}
	for (uint64_t page = lo; page < hi; page++) {
		check_page(d, page);
		atomic_fetch_add_explicit(&d->done, 1, memory_order_relaxed);
	}
	return NULL;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double run_phase(struct demo *d, struct worker *w, const char *what)
{
	double t0 = now_s(), last = t0;
	int tty = isatty(2);

	d->phase = strcmp(what, "write") ? 1 : 0;
	atomic_store(&d->done, 0);
	for (unsigned int i = 0; i < d->threads; i++)
		pthread_create(&w[i].t, NULL, work, &w[i]);
	for (;;) {
		uint64_t done = atomic_load(&d->done);
		double t = now_s();
		if (done >= d->npages)
			break;
		if (t - last >= 0.5) {
			fprintf(stderr, "%s  %-6s %5.1f%%  %.0f pages/s%s", tty ? "\r" : "", what,
				100.0 * (double)done / (double)d->npages,
				(double)done / (t - t0), tty ? "" : "\n");
			last = t;
		}
		usleep(20000);
	}
	for (unsigned int i = 0; i < d->threads; i++)
		pthread_join(w[i].t, NULL);
	if (tty)
		fprintf(stderr, "\r%60s\r", "");
	return now_s() - t0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: heca demo [--sponsors HOST:PORT,...] [--size SIZE] [--local SIZE]\n"
		"                 [--threads N] [--prefetch PAGES] [--seed N] [--spin US]\n"
		"                 [--replicas R] [--rounds N] [--cluster FILE]\n"
		"                 [--cluster-id HEX] [--key-file FILE]\n"
		"\n"
		"Map a region larger than the local budget, fill it from several threads with a\n"
		"verifiable pattern, read it back in another order and verify every page.\n"
		"Without --sponsors, two sponsors are started on 127.0.0.1 and stopped at the end.\n"
		"\n"
		"  --sponsors LIST  sponsors to use (comma-separated HOST:PORT)\n"
		"  --size SIZE      region size (default 512M; K/M/G suffixes)\n"
		"  --local SIZE     local budget (default 64M)\n"
		"  --threads N      threads writing and reading (default 4)\n"
		"  --prefetch N     pages fetched around each fault (default 16, 0 = off)\n"
		"  --seed N         pattern seed (default 1)\n"
		"  --spin US        engine spins this long before sleeping (default 0)\n"
		"  --replicas R     copies of each stripe (default 2 with two or more sponsors)\n"
		"  --rounds N       write and verify N times, new content each time (default 1)\n"
		"  --cluster FILE   sponsors from a cluster file (docs/cluster.md)\n"
		"  --cluster-id HEX the cluster's 128-bit id (as hecad --cluster-id)\n"
		"  --key-file FILE  the cluster key (hecad --gen-key): sponsors must prove it\n"
		"Exit status 0 only when every page verified.\n");
}

int cmd_demo(int argc, char **argv)
{
	static const struct option lo[] = {
		{"sponsors", required_argument, 0, 's'}, {"size", required_argument, 0, 'S'},
		{"local", required_argument, 0, 'l'},	 {"threads", required_argument, 0, 't'},
		{"prefetch", required_argument, 0, 'p'}, {"seed", required_argument, 0, 'r'},
		{"spin", required_argument, 0, 'w'},	 {"help", no_argument, 0, 'h'},
		{"replicas", required_argument, 0, 'R'}, {"rounds", required_argument, 0, 'n'},
		{"cluster", required_argument, 0, 'C'},	 {"key-file", required_argument, 0, 'K'},
		{"cluster-id", required_argument, 0, 'I'},
		{0, 0, 0, 0}};
	struct heca_options o;
	struct heca_stats st;
	struct spawned sp = {0};
	struct demo d = {.threads = 4, .seed = 1};
	struct worker *w;
	struct heca *h = NULL;
	uint64_t size = 512ull << 20, v;
	const char *sponsors = NULL;
	double tw = 0, tr = 0;
	unsigned int rounds = 1;
	int c, rc, ret = 1;
	char cap[32], ctl[128];

	heca_options_init(&o);
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 's': sponsors = optarg; break;
		case 'S':
			if (heca_parse_size(optarg, &size) || size < HECA_PAGE_SIZE) {
				fprintf(stderr, "heca demo: bad --size '%s'\n", optarg);
				return 2;
			}
			break;
		case 'l':
			if (heca_parse_size(optarg, &o.local_budget)) {
				fprintf(stderr, "heca demo: bad --local '%s'\n", optarg);
				return 2;
			}
			break;
		case 't':
			d.threads = (unsigned int)strtoul(optarg, NULL, 10);
			if (d.threads < 1 || d.threads > 256) {
				fprintf(stderr, "heca demo: --threads must be 1..256\n");
				return 2;
			}
			break;
		case 'p': o.prefetch_pages = (unsigned int)strtoul(optarg, NULL, 10); break;
		case 'r': d.seed = strtoull(optarg, NULL, 0); break;
		case 'w': o.spin_us = (unsigned int)strtoul(optarg, NULL, 10); break;
		case 'R': o.replicas = (unsigned int)strtoul(optarg, NULL, 10); break;
		case 'n':
			rounds = (unsigned int)strtoul(optarg, NULL, 10);
			if (rounds < 1) {
				fprintf(stderr, "heca demo: --rounds must be at least 1\n");
				return 2;
			}
			break;
		case 'C': o.cluster_file = optarg; break;
		case 'K': o.key_file = optarg; break;
		case 'I':
			if (heca_parse_id(optarg, o.cluster_id)) {
				fprintf(stderr, "heca demo: --cluster-id takes 32 hex digits\n");
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "heca demo: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (!sponsors && !o.cluster_file) {
		/* Each sponsor can take the whole region: capacity is reserved lazily. */
		snprintf(cap, sizeof(cap), "%llu", (unsigned long long)size);
		if (cli_spawn_sponsors(&sp, 2, cap, 0))
			return 1;
		sponsors = sp.list;
		printf("started 2 sponsors: %s\n", sponsors);
	}
	o.sponsors = sponsors;
	cli_control_path(getpid(), ctl, sizeof(ctl));
	o.control_path = ctl;
	o.log = cli_log;
	o.log_level = HECA_LOG_WARN;
	rc = heca_open(&o, &h);
	if (rc) {
		fprintf(stderr, "heca demo: %s\n",
			*heca_last_error() ? heca_last_error() : heca_strerror(rc));
		goto out;
	}
	rc = heca_map(h, size, (void **)&d.base);
	if (rc) {
		fprintf(stderr, "heca demo: map %llu bytes: %s (%s)\n", (unsigned long long)size,
			heca_strerror(rc), heca_last_error());
		goto out;
	}
	d.npages = size / HECA_PAGE_SIZE;
	heca_get_stats(h, &st);
	v = st.budget_pages * HECA_PAGE_SIZE;
	printf("region %.0f MiB, local budget %.0f MiB (%.1fx), %u threads, prefetch %u pages\n",
	       (double)size / 1048576.0, (double)v / 1048576.0, (double)size / (double)v,
	       d.threads, o.prefetch_pages);
	printf("control socket %s (heca status --pid %d)\n", ctl, (int)getpid());
	fflush(stdout);
	w = calloc(d.threads, sizeof(*w));
	for (unsigned int i = 0; i < d.threads; i++)
		w[i] = (struct worker){.d = &d, .idx = i};
	for (unsigned int r = 0; r < rounds && atomic_load(&d.bad) == 0; r++) {
		d.seed += r; /* each round writes new content over the old */
		tw += run_phase(&d, w, "write");
		tr += run_phase(&d, w, "verify");
	}
	free(w);
	heca_get_stats(h, &st);
	printf("write  %.2f s (%.0f MiB/s), read back %.2f s (%.0f MiB/s)%s\n", tw,
	       (double)size * rounds / 1048576.0 / tw, tr, (double)size * rounds / 1048576.0 / tr,
	       rounds > 1 ? " over all rounds" : "");
	cli_print_stats(stdout, &st);
	/* OK only when every page of every round was compared, not merely none found wrong. */
	if (atomic_load(&d.bad) == 0 && atomic_load(&d.checked) == d.npages * rounds) {
		printf("verified: OK (%llu pages)\n", (unsigned long long)d.npages);
		ret = 0;
	} else if (atomic_load(&d.bad) == 0) {
		printf("verified: FAILED: %llu of %llu pages compared\n",
		       (unsigned long long)atomic_load(&d.checked),
		       (unsigned long long)(d.npages * rounds));
	} else {
		uint64_t p = atomic_load(&d.first_bad) - 1;
		printf("verified: FAILED: %llu pages wrong, first mismatch at page %llu "
		       "(offset %#llx)\n",
		       (unsigned long long)atomic_load(&d.bad), (unsigned long long)p,
		       (unsigned long long)(p * HECA_PAGE_SIZE));
	}
out:
	heca_close(h);
	if (sp.n)
		cli_stop_sponsors(&sp);
	return ret;
}
