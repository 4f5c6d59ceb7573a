// SPDX-License-Identifier: MIT
/*
 * test_truth.c - the kernel's page table is the truth: sponsored memory changed behind heca's
 * back, by raw system calls that no wrapper sees (madvise DONTNEED, munmap, mremap, mlock),
 * must behave as private anonymous memory does under Linux, with the budget several times
 * smaller than the region so that most pages are at a sponsor when it happens:
 *   DONTNEED: every page of the range reads zero, resident or evicted, and can be written again;
 *   munmap: the range is gone; ordinary memory mapped there keeps what the program writes;
 *   mremap: the content moves (or grows in place) page by page, evicted pages included;
 *   mlock: heca may keep the pages, but nothing hangs, loops or is lost.
 * Each case runs in a child of its own under a watchdog: a case that hangs (a thread looping on
 * a fault, a helper waiting forever) is killed after CASE_SECONDS and reported with the wait
 * channel of each of its threads. One line per case: "ok - ..." or "not ok - ...".
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "heca.h"

#define PG 4096u
#define BUDGET 256u	 /* pages of local budget */
#define NPAGES 2048u	 /* pages of each region: 8 times the budget */
#define CASE_SECONDS 40	 /* a case still running then is taken for hung */
#define THREADS 4

#define t_log(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr))

static const char *sponsor_addr;
static struct heca *h;
static atomic_uint_least64_t bad;
static atomic_bool stop;

/* ---- content ---- */

/* The word k of the page whose content is number id, generation gen; never zero. */
static uint64_t pat(uint64_t id, uint64_t gen, uint64_t k)
{
	uint64_t x = (id + 1) * 0x9e3779b97f4a7c15ull ^ (gen + 1) * 0xc2b2ae3d27d4eb4full ^
		     (k + 1) * 0xff51afd7ed558ccdull;
	return (x ^ (x >> 31)) | 1;
}

static void put(uint8_t *p, uint64_t id, uint64_t gen)
{
	for (uint64_t k = 0; k < PG / 8; k += 8)
		((uint64_t *)p)[k] = pat(id, gen, k);
}

/* Whether the page at p holds (id, gen); gen 0 means every word zero. Counts and names the
 * first few wrong ones. */
static bool ok_page(const uint8_t *p, uint64_t id, uint64_t gen, const char *when)
{
	const volatile uint64_t *q = (const volatile uint64_t *)p;
	unsigned int step = gen ? 8 : 1;

	for (uint64_t k = 0; k < PG / 8; k += step) {
		uint64_t want = gen ? pat(id, gen, k) : 0, got = q[k];
		if (got != want) {
			if (atomic_fetch_add(&bad, 1) < 8)
				t_log("  page %llu word %llu (%s): %#llx, want %#llx%s",
				      (unsigned long long)id, (unsigned long long)k, when,
				      (unsigned long long)got, (unsigned long long)want,
				      gen ? "" : " (zero)");
			return false;
		}
	}
	return true;
}

/* Pages [from, to) of the region at base, page i holding content id i. */
static void fill(uint8_t *base, uint64_t from, uint64_t to, uint64_t gen)
{
	for (uint64_t i = from; i < to; i++)
		put(base + i * PG, i, gen);
}

static uint64_t check(const uint8_t *base, uint64_t from, uint64_t to, uint64_t gen,
		      const char *when)
{
	uint64_t n = 0;
	for (uint64_t i = from; i < to; i++)
		n += !ok_page(base + i * PG, i, gen, when);
	return n;
}

/* How many of pages [from, to) are mapped now (mincore; touches nothing). */
static uint64_t resident(const uint8_t *base, uint64_t from, uint64_t to)
{
	unsigned char v[NPAGES * 2];
	uint64_t n = 0;

	if (to - from > sizeof(v) || mincore((void *)(base + from * PG), (to - from) * PG, v))
		T_FAILF("mincore: %s", strerror(errno));
	for (uint64_t i = 0; i < to - from; i++)
		n += v[i] & 1;
	return n;
}

/* ---- the child's heca ---- */

/* heca's warnings, the first few: a broken state can repeat one line thousands of times. */
static void lg(void *arg, enum heca_log_level l, const char *m)
{
	static atomic_uint n;
	unsigned int i = atomic_fetch_add(&n, 1);

	(void)arg;
	if (i < 20)
		fprintf(stderr, "  [heca %d] %s\n", l, m);
	else if (i == 20)
		fprintf(stderr, "  [heca] more log lines left out\n");
}

static void open_heca(void)
{
	struct heca_options o;
	int rc;

	heca_options_init(&o);
	o.sponsors = sponsor_addr;
	o.local_budget = BUDGET * PG;
	o.replicas = 1;
	o.log = lg;
	o.log_level = HECA_LOG_WARN;
	rc = heca_open(&o, &h);
	if (rc)
		T_FAILF("heca_open: %s (%s)", heca_strerror(rc), heca_last_error());
}

static uint8_t *map_region(uint64_t npages)
{
	void *p;
	int rc = heca_map(h, npages * PG, &p);
	if (rc)
		T_FAILF("heca_map: %s (%s)", heca_strerror(rc), heca_last_error());
	return p;
}

static uint64_t written_back(void)
{
	struct heca_stats st;
	if (heca_get_stats(h, &st))
		T_FAILF("heca_get_stats");
	return st.pages_written_back;
}

static long raw_dontneed(void *addr, uint64_t len)
{
	return syscall(SYS_madvise, addr, len, MADV_DONTNEED);
}

/* Fill the region, then read back its first pages so that evicted, clean and dirty pages
 * mix; returns the region. */
static uint8_t *fill_region(uint64_t npages)
{
	uint8_t *b = map_region(npages);
	fill(b, 0, npages, 1);
	check(b, 0, 64, 1, "read back after the fill");
	if (written_back() == 0)
		T_FAILF("nothing written back after filling %llu pages over a budget of %u",
			(unsigned long long)npages, BUDGET);
	return b;
}

/* A DONTNEED range [lo, hi) of b must mix resident and evicted pages, or the case proves
 * nothing. */
static void require_mix(const uint8_t *b, uint64_t lo, uint64_t hi, const char *what)
{
	uint64_t r = resident(b, lo, hi);
	t_log("  %s: pages %llu..%llu, %llu resident, %llu evicted", what, (unsigned long long)lo,
	      (unsigned long long)hi, (unsigned long long)r, (unsigned long long)(hi - lo - r));
	if (r == 0 || r == hi - lo)
		T_FAILF("%s: the range does not mix resident and evicted pages", what);
}

/* The window of len pages (at a multiple of 16) whose resident pages are closest to half. */
static uint64_t pick_mixed(const uint8_t *b, uint64_t npages, uint64_t len)
{
	uint64_t best = 0, best_d = ~0ull;

	for (uint64_t lo = 0; lo + len <= npages; lo += 16) {
		uint64_t r = resident(b, lo, lo + len), d = r > len / 2 ? r - len / 2 : len / 2 - r;
		if (d < best_d) {
			best_d = d;
			best = lo;
		}
	}
	return best;
}

/* ---- (a) raw DONTNEED over resident and evicted pages ---- */

static void dontneed_round(uint8_t *b, uint64_t lo, uint64_t hi, uint64_t gen_rest,
			   uint64_t gen_new, uint64_t rest_from, uint64_t rest_to)
{
	require_mix(b, lo, hi, "DONTNEED range");
	if (raw_dontneed(b + lo * PG, (hi - lo) * PG))
		T_FAILF("madvise(DONTNEED): %s", strerror(errno));
	check(b, lo, hi, 0, "after a raw DONTNEED: must read zero");
	check(b, rest_from, lo, gen_rest, "below the DONTNEED range");
	check(b, hi, rest_to, gen_rest, "above the DONTNEED range");
	/* Written again: it must stay, through eviction of it and of the rest. */
	fill(b, lo, hi, gen_new);
	check(b, lo, hi, gen_new, "DONTNEED range written again");
	for (int r = 0; r < 2; r++) {
		check(b, rest_from, lo, gen_rest, "below the range, later");
		check(b, hi, rest_to, gen_rest, "above the range, later");
		check(b, lo, hi, gen_new, "DONTNEED range written again, after eviction");
	}
}

static void case_a(void)
{
	uint8_t *b;

	open_heca();
	uint64_t lo;

	b = fill_region(NPAGES);
	lo = pick_mixed(b, NPAGES, 3 * BUDGET / 2);
	dontneed_round(b, lo, lo + 3 * BUDGET / 2, 1, 2, 0, NPAGES);
	/* A second region: the first 64 pages were read back, clean, the rest evicted. */
	b = fill_region(NPAGES);
	dontneed_round(b, 32, 32 + BUDGET, 1, 3, 0, NPAGES);
}

/* ---- (b) the same while other threads fault on other pages ---- */

struct part {
	pthread_t t;
	uint8_t *b;
	uint64_t from, to;
	atomic_uint_least64_t rounds;
};

/* Write every page of its part (page number, generation), verify all, again and again. */
static void *faulter(void *arg)
{
	struct part *x = arg;
	uint64_t gen = 100;

	while (!atomic_load(&stop) && !atomic_load(&bad)) {
		gen++;
		fill(x->b, x->from, x->to, gen);
		check(x->b, x->from, x->to, gen, "a faulting thread's own pages");
		atomic_fetch_add(&x->rounds, 1);
	}
	return NULL;
}

static void start_faulters(struct part *p, int n, uint8_t *b, uint64_t from, uint64_t to)
{
	uint64_t each = (to - from) / (uint64_t)n;
	for (int i = 0; i < n; i++) {
		p[i].b = b;
		p[i].from = from + i * each;
		p[i].to = from + (i + 1) * each;
		atomic_store(&p[i].rounds, 0);
		pthread_create(&p[i].t, NULL, faulter, &p[i]);
	}
	/* Each has written its part once before anything happens behind heca's back. */
	for (int i = 0; i < n; i++)
		while (!atomic_load(&p[i].rounds) && !atomic_load(&bad))
			usleep(1000);
}

static void stop_faulters(struct part *p, int n)
{
	atomic_store(&stop, true);
	for (int i = 0; i < n; i++) {
		pthread_join(p[i].t, NULL);
		t_log("  thread %d: %llu rounds over pages %llu..%llu", i,
		      (unsigned long long)p[i].rounds, (unsigned long long)p[i].from,
		      (unsigned long long)p[i].to);
	}
}

static void case_b(void)
{
	struct part p[THREADS];
	uint64_t half = NPAGES / 2;
	uint8_t *b;

	open_heca();
	b = map_region(NPAGES);
	start_faulters(p, THREADS, b, 0, half);
	for (uint64_t round = 0; round < 6 && !atomic_load(&bad); round++) {
		uint64_t lo = half + (round * 97) % (half - BUDGET - 64), hi = lo + BUDGET;
		fill(b, half, NPAGES, 10 + round);
		check(b, half, half + 32, 10 + round, "read back after the fill");
		/* Bring part of the range back in so that it mixes. */
		check(b, lo, lo + 24, 10 + round, "read back before DONTNEED");
		dontneed_round(b, lo, hi, 10 + round, 50 + round, half, NPAGES);
	}
	stop_faulters(p, THREADS);
	for (int i = 0; i < THREADS; i++)
		check(b, p[i].from, p[i].to, 100 + p[i].rounds, "a thread's pages at the end");
}

/* ---- (c) raw munmap of a part, ordinary memory mapped in its place ---- */

static void case_c(void)
{
	uint64_t lo, hi;
	uint8_t *b, *o;

	open_heca();
	b = fill_region(NPAGES);
	lo = pick_mixed(b, NPAGES - 64, 3 * BUDGET / 2);
	hi = lo + 3 * BUDGET / 2;
	require_mix(b, lo, hi, "munmap range");
	if (syscall(SYS_munmap, b + lo * PG, (hi - lo) * PG))
		T_FAILF("munmap: %s", strerror(errno));
	o = mmap(b + lo * PG, (hi - lo) * PG, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (o == MAP_FAILED || o != b + lo * PG)
		T_FAILF("mmap at the unmapped range %p: %s", (void *)(b + lo * PG),
			o == MAP_FAILED ? strerror(errno) : "another address");
	/* Ordinary memory, fresh: zero; then the program's own content. */
	check(b, lo, hi, 0, "fresh ordinary memory where sponsored memory was");
	fill(b, lo, hi, 7);
	/* heca evicts the rest of the region meanwhile; nothing of it may touch o. */
	for (uint64_t r = 0; r < 4; r++) {
		check(b, 0, lo, r ? 20 + r - 1 : 1, "below the unmapped range");
		check(b, hi, NPAGES, r ? 20 + r - 1 : 1, "above the unmapped range");
		fill(b, 0, lo, 20 + r);
		fill(b, hi, NPAGES, 20 + r);
		check(b, lo, hi, 7, "ordinary memory in the unmapped range, while heca evicts");
		usleep(100000);
	}
	check(b, 0, lo, 23, "below the unmapped range at the end");
	check(b, hi, NPAGES, 23, "above the unmapped range at the end");
	check(b, lo, hi, 7, "ordinary memory at the end");
	munmap(o, (hi - lo) * PG);
}

/* ---- (d) raw mremap moving a region, (g) growing one in place ---- */

static void case_d(void)
{
	uint64_t grow = 64;
	uint8_t *b, *n, *guard;

	open_heca();
	b = fill_region(NPAGES);
	t_log("  before mremap: %llu of %u pages resident", (unsigned long long)resident(b, 0, NPAGES),
	      NPAGES);
	if (resident(b, 0, NPAGES) > NPAGES / 2)
		T_FAILF("fewer than half of the pages are evicted");
	/* A mapping right behind forces the growth to move the region. */
	guard = mmap(b + NPAGES * PG, PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		     -1, 0);
	n = (uint8_t *)syscall(SYS_mremap, b, (size_t)NPAGES * PG, (size_t)(NPAGES + grow) * PG,
			       MREMAP_MAYMOVE);
	if (n == MAP_FAILED)
		T_FAILF("mremap: %s", strerror(errno));
	if (guard != MAP_FAILED)
		munmap(guard, PG);
	if (n == b)
		T_FAILF("mremap did not move the region");
	check(n, 0, NPAGES, 1, "at the new address after mremap(MAYMOVE)");
	check(n, NPAGES, NPAGES + grow, 0, "the grown part");
	/* The moved region works on: written, evicted, read back. */
	fill(n, 0, NPAGES + grow, 2);
	for (int r = 0; r < 2; r++)
		check(n, 0, NPAGES + grow, 2, "at the new address, rewritten, after eviction");
	syscall(SYS_munmap, n, (size_t)(NPAGES + grow) * PG);
}

static void case_g(void)
{
	uint64_t grow = BUDGET;
	uint8_t *b, *n;
	int rc;

	open_heca();
	/* Room behind the region, held by a reservation until the mremap; the region itself is
	 * ordinary memory made sponsored. */
	b = mmap(NULL, (NPAGES + grow) * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (b == MAP_FAILED ||
	    mmap(b, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
		 0) != b)
		T_FAILF("mmap: %s", strerror(errno));
	rc = heca_register(h, b, NPAGES * PG);
	if (rc < 0)
		T_FAILF("heca_register: %s (%s)", heca_strerror(rc), heca_last_error());
	fill(b, 0, NPAGES, 1);
	check(b, 0, 64, 1, "read back after the fill");
	if (resident(b, 0, NPAGES) > NPAGES / 2)
		T_FAILF("fewer than half of the pages are evicted");
	munmap(b + NPAGES * PG, grow * PG);
	n = (uint8_t *)syscall(SYS_mremap, b, (size_t)NPAGES * PG, (size_t)(NPAGES + grow) * PG, 0);
	if (n == MAP_FAILED || n != b)
		T_FAILF("mremap in place: %s", n == MAP_FAILED ? strerror(errno) : "moved");
	check(b, 0, NPAGES, 1, "after growing in place");
	check(b, NPAGES, NPAGES + grow, 0, "the grown part");
	fill(b, NPAGES, NPAGES + grow, 3);
	for (int r = 0; r < 3; r++) {
		check(b, NPAGES, NPAGES + grow, 3, "the grown part, written, after eviction");
		check(b, 0, NPAGES, 1, "the old part, after eviction");
	}
}

/* ---- (h) raw mremap again and again while the evictor takes pages out ---- */

/*
 * The evictor zaps pages at the addresses it picked them at, and a zap waits for its event to
 * be read with the mmap lock dropped: an mremap then moves the pages first, the zap fails, and
 * the pages are present at the new address, maybe before heca has read where they went. Each
 * round reads back twice the budget of evicted pages (so that the evictor is busy dropping
 * clean ones), moves the region a few times, then writes every page the kernel holds mapped
 * there: one that heca took for dropped would take that write fault again and again, and a
 * thread waiting for a page heca was evicting must be woken where the page is now. A page
 * whose zap the move made fail is not one the kernel will not drop (pinned, retried 5 s
 * later).
 */
#define H_ROUNDS 60
#define H_MOVES 4

static void case_h(void)
{
	static uint16_t gen[NPAGES]; /* the content of each page: (page, gen[page]) */
	unsigned char v[NPAGES];
	struct heca_stats st;
	uint64_t moved = 0;
	uint8_t *b;

	open_heca();
	b = fill_region(NPAGES);
	for (uint64_t i = 0; i < NPAGES; i++)
		gen[i] = 1;
	for (uint64_t r = 0; r < H_ROUNDS && !atomic_load(&bad); r++) {
		uint64_t lo = (r * 2 * BUDGET + r * 17) % (NPAGES - 2 * BUDGET);

		for (uint64_t i = lo; i < lo + 2 * BUDGET; i++)
			ok_page(b + i * PG, i, gen[i], "read back before a move");
		for (int m = 0; m < H_MOVES; m++) {
			uint8_t *to = mmap(NULL, (size_t)NPAGES * PG, PROT_NONE,
					   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), *n;
			if (to == MAP_FAILED)
				T_FAILF("mmap: %s", strerror(errno));
			n = (uint8_t *)syscall(SYS_mremap, b, (size_t)NPAGES * PG,
					       (size_t)NPAGES * PG, MREMAP_MAYMOVE | MREMAP_FIXED, to);
			if (n == MAP_FAILED || n != to)
				T_FAILF("mremap round %llu: %s", (unsigned long long)r,
					n == MAP_FAILED ? strerror(errno) : "another address");
			b = n;
			moved++;
		}
		/* What the kernel holds mapped here is written at once. */
		if (mincore(b, (size_t)NPAGES * PG, v))
			T_FAILF("mincore: %s", strerror(errno));
		for (uint64_t i = 0; i < NPAGES; i++) {
			if (!(v[i] & 1))
				continue;
			if (!ok_page(b + i * PG, i, gen[i], "a mapped page after a move"))
				break;
			gen[i] = (uint16_t)(r + 2);
			put(b + i * PG, i, gen[i]);
		}
	}
	t_log("  %llu moves", (unsigned long long)moved);
	for (uint64_t i = 0; i < NPAGES; i++)
		ok_page(b + i * PG, i, gen[i], "after the moves");
	/* A zap refused as the move took the pages away is no page the kernel will not drop. */
	if (heca_get_stats(h, &st))
		T_FAILF("heca_get_stats");
	if (st.pages_unzappable)
		T_FAILF("%llu pages of a region never locked taken for unzappable",
			(unsigned long long)st.pages_unzappable);
	syscall(SYS_munmap, b, (size_t)NPAGES * PG);
}

/* ---- (e) raw mlock of a sponsored range ---- */

static void case_e(void)
{
	uint64_t lo = 128, hi = lo + BUDGET / 2, gen = 1;
	uint8_t *b;

	open_heca();
	b = fill_region(NPAGES);
	if (resident(b, lo, hi) == hi - lo)
		T_FAILF("the range to lock is all resident: it proves nothing");
	if (syscall(SYS_mlock, b + lo * PG, (hi - lo) * PG))
		T_FAILF("mlock: %s", strerror(errno));
	check(b, lo, hi, 1, "locked range");
	/* Writes everywhere, the locked pages among them, over several rounds of eviction. */
	for (int r = 0; r < 4; r++) {
		check(b, 0, NPAGES, gen, "a round over the region with a locked range");
		fill(b, 0, NPAGES, ++gen);
	}
	if (syscall(SYS_munlock, b + lo * PG, (hi - lo) * PG))
		T_FAILF("munlock: %s", strerror(errno));
	for (int r = 0; r < 2; r++) {
		check(b, 0, NPAGES, gen, "a round over the region after munlock");
		fill(b, 0, NPAGES, ++gen);
	}
	check(b, 0, NPAGES, gen, "the region at the end");
}

/* ---- (f) raw DONTNEED in a loop while others write and verify ---- */

struct zapper {
	pthread_t t;
	uint8_t *b;
	uint64_t from, to;
	atomic_uint_least64_t rounds;
};

static void *zap_loop(void *arg)
{
	struct zapper *z = arg;
	uint64_t gen = 500;

	while (!atomic_load(&stop) && !atomic_load(&bad)) {
		gen++;
		fill(z->b, z->from, z->to, gen);
		check(z->b, z->from, z->to, gen, "the zapping thread's range before DONTNEED");
		/* Half of it, then all of it. */
		if (raw_dontneed(z->b + z->from * PG, (z->to - z->from) / 2 * PG))
			T_FAILF("madvise(DONTNEED): %s", strerror(errno));
		check(z->b, z->from, z->from + (z->to - z->from) / 2, 0, "after DONTNEED in a loop");
		check(z->b, z->from + (z->to - z->from) / 2, z->to, gen, "beside DONTNEED in a loop");
		if (raw_dontneed(z->b + z->from * PG, (z->to - z->from) * PG))
			T_FAILF("madvise(DONTNEED): %s", strerror(errno));
		check(z->b, z->from, z->to, 0, "after DONTNEED in a loop");
		z->rounds++;
	}
	return NULL;
}

static void case_f(void)
{
	struct part p[THREADS - 1];
	struct zapper z;
	uint8_t *b;

	open_heca();
	b = map_region(NPAGES);
	start_faulters(p, THREADS - 1, b, 0, NPAGES - 128);
	z = (struct zapper){.b = b, .from = NPAGES - 128, .to = NPAGES};
	pthread_create(&z.t, NULL, zap_loop, &z);
	for (int i = 0; i < 40 && !atomic_load(&bad); i++)
		usleep(100000);
	stop_faulters(p, THREADS - 1);
	pthread_join(z.t, NULL);
	t_log("  zapping thread: %llu rounds", (unsigned long long)z.rounds);
	if (!z.rounds)
		T_FAILF("the zapping thread did not finish one round");
	for (int i = 0; i < THREADS - 1; i++)
		check(b, p[i].from, p[i].to, 100 + p[i].rounds, "a thread's pages at the end");
}

/* ---- the cases, each in a child under a watchdog ---- */

struct tcase {
	const char *name;
	void (*fn)(void);
};

static const struct tcase cases[] = {
	{"(a) raw DONTNEED over resident and evicted pages: zero, then written again", case_a},
	{"(b) raw DONTNEED while 4 threads fault and verify other pages", case_b},
	{"(c) raw munmap of a part, ordinary memory mapped there stays the program's", case_c},
	{"(d) raw mremap(MREMAP_MAYMOVE) of a mostly evicted region: every page moved", case_d},
	{"(e) raw mlock of a partly evicted sponsored range: no hang, no loss", case_e},
	{"(f) raw DONTNEED in a loop on a sub-range while 3 threads write and verify", case_f},
	{"(g) raw mremap growing a mostly evicted region in place", case_g},
	{"(h) raw mremap moving a region 240 times while the evictor takes pages out", case_h},
};

/* What each thread of pid is waiting in, for a case that hung ("3 x handle_userfault"). */
static void thread_waits(pid_t pid, char *out, size_t cap)
{
	char path[320], names[16][48], w[48];
	int counts[16] = {0}, nn = 0;
	struct dirent *d;
	DIR *dir;

	out[0] = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	dir = opendir(path);
	if (!dir)
		return;
	while ((d = readdir(dir))) {
		FILE *f;
		int i;
		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/wchan", (int)pid, d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (!fgets(w, sizeof(w), f) || !w[0] || !strcmp(w, "0"))
			snprintf(w, sizeof(w), "running");
		fclose(f);
		for (i = 0; i < nn && strcmp(names[i], w); i++)
			;
		if (i == nn && nn < 16)
			snprintf(names[nn++], sizeof(names[0]), "%s", w);
		if (i < 16)
			counts[i]++;
	}
	closedir(dir);
	for (int i = 0; i < nn; i++) {
		size_t l = strlen(out);
		snprintf(out + l, cap - l, "%s%d x %s", i ? ", " : "", counts[i], names[i]);
	}
}

static bool run_case(const struct tcase *c)
{
	double t0 = t_now_ms();
	int st = 0;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		T_FAILF("fork: %s", strerror(errno));
	if (pid == 0) {
		c->fn();
		if (atomic_load(&bad)) {
			t_log("  %llu pages wrong", (unsigned long long)atomic_load(&bad));
			_exit(T_FAIL);
		}
		heca_close(h);
		_exit(T_PASS);
	}
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			break;
		if (t_now_ms() - t0 > CASE_SECONDS * 1000.0) {
			char waits[512];
			thread_waits(pid, waits, sizeof(waits));
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			printf("not ok - %s: still running after %d s, killed (threads: %s)\n", c->name,
			       CASE_SECONDS, waits[0] ? waits : "?");
			return false;
		}
		usleep(20000);
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == T_PASS) {
		printf("ok - %s (%.1f s)\n", c->name, (t_now_ms() - t0) / 1e3);
		return true;
	}
	if (WIFSIGNALED(st))
		printf("not ok - %s: killed by signal %d (%s)\n", c->name, WTERMSIG(st),
		       strsignal(WTERMSIG(st)));
	else
		printf("not ok - %s: exit %d\n", c->name, WEXITSTATUS(st));
	return false;
}

int main(int argc, char **argv)
{
	struct t_sponsor sp;
	int failed = 0, ran = 0;

	t_require_uffd();
	setvbuf(stdout, NULL, _IOLBF, 0);
	t_sponsor_start(&sp, "1G", NULL);
	sponsor_addr = sp.addr;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* An argument picks cases by letter: "test_truth a c". */
		bool want = argc < 2;
		for (int k = 1; k < argc; k++)
			want |= argv[k][0] == cases[i].name[1];
		if (!want)
			continue;
		ran++;
		failed += !run_case(&cases[i]);
	}
	t_sponsor_stop(&sp, 0);
	printf("%d passed, %d failed\n", ran - failed, failed);
	return failed ? T_FAIL : T_PASS;
}
