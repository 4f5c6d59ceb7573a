// SPDX-License-Identifier: MIT
/*
 * qsort_work.c - the qsort benchmark's workload: splitmix64 keys, an in-place parallel
 * quicksort (ranges above a cutoff handed to a shared stack), and a parallel sorted+checksum check.
 */
#include "qsort_work.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

/* Above this many keys a range is split and its larger half offered to idle threads; below
 * it the thread sorts alone, so the shared stack holds at most n / QW_PAR_CUTOFF ranges. */
#define QW_PAR_CUTOFF (64u * 1024u)
/* Below this many keys insertion sort beats partitioning. */
#define QW_INSERTION 24u
/* Threads split work in page-sized units, so no two threads write the same page (which, in a
 * heca region, would make them fault on one page and, in cache, share lines). */
#define QW_CHUNK_ALIGN (4096u / sizeof(uint64_t))
#define QW_MAX_THREADS 256u
/* Progress is reported in steps of 1/QW_PROGRESS_STEPS. */
#define QW_PROGRESS_STEPS 1000u

static unsigned qw_threads(unsigned threads, size_t n)
{
	if (threads == 0) {
		long c = sysconf(_SC_NPROCESSORS_ONLN);
		threads = c > 0 ? (unsigned)c : 1;
	}
	if (threads > QW_MAX_THREADS)
		threads = QW_MAX_THREADS;
	/* Starting a thread costs more than touching a few pages. */
	if ((size_t)threads > n / (4 * QW_CHUNK_ALIGN) + 1)
		threads = (unsigned)(n / (4 * QW_CHUNK_ALIGN) + 1);
	return threads;
}

/* splitmix64's finaliser: a bijection, so the keys of distinct indices are distinct-ish. */
static inline uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t key_at(uint64_t seed, size_t i)
{
	return mix64(seed + (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull);
}

/* Each key goes through a different mix than the generator's before sum and xor, so that
 * swapping two keys' values between slots changes nothing but changing one value does. */
static inline uint64_t sum_mix(uint64_t k)
{
	return mix64(k ^ 0x6a09e667f3bcc909ull);
}

static uint64_t checksum_combine(uint64_t sum, uint64_t xr, size_t n)
{
	return sum ^ mix64(xr) ^ ((uint64_t)n * 0xd1b54a32d192ed03ull);
}

/* --- running a function over [0, n) on several threads ------------------------------------ */

struct par_part {
	pthread_t tid;
	size_t lo, hi;
	void *job;
	void (*fn)(void *job, struct par_part *p);
	/* results, read by the caller after join */
	uint64_t sum, xr;
	size_t bad;
};

static void *par_main(void *arg)
{
	struct par_part *p = arg;
	p->fn(p->job, p);
	return NULL;
}

/* Split [0, n) into page-aligned parts, run fn on each (part 0 on the caller), join. A thread
 * that cannot be started has its part run by the caller: the result is the same, only slower. */
static void par_run(size_t n, unsigned threads, void *job,
		    void (*fn)(void *job, struct par_part *p), struct par_part *parts)
{
	size_t per = (n + threads - 1) / threads;
	bool started[QW_MAX_THREADS] = {false};

	per = (per + QW_CHUNK_ALIGN - 1) / QW_CHUNK_ALIGN * QW_CHUNK_ALIGN;
	for (unsigned t = 0; t < threads; t++) {
		size_t lo = (size_t)t * per, hi = lo + per;
		parts[t].lo = lo < n ? lo : n;
		parts[t].hi = hi < n ? hi : n;
		parts[t].job = job;
		parts[t].fn = fn;
		parts[t].sum = parts[t].xr = 0;
		parts[t].bad = (size_t)-1;
	}
	for (unsigned t = 1; t < threads; t++)
		started[t] = pthread_create(&parts[t].tid, NULL, par_main, &parts[t]) == 0;
	fn(job, &parts[0]);
	for (unsigned t = 1; t < threads; t++) {
		if (started[t])
			pthread_join(parts[t].tid, NULL);
		else
			fn(job, &parts[t]);
	}
}

/* --- fill and checksum -------------------------------------------------------------------- */

struct fill_job {
	uint64_t *keys;
	uint64_t seed;
};

static void fill_part(void *job, struct par_part *p)
{
	struct fill_job *j = job;
	uint64_t sum = 0, xr = 0;

	for (size_t i = p->lo; i < p->hi; i++) {
		uint64_t k = key_at(j->seed, i), h = sum_mix(k);
		j->keys[i] = k;
		sum += h;
		xr ^= h;
	}
	p->sum = sum;
	p->xr = xr;
}

void qw_fill(uint64_t *keys, size_t n, uint64_t seed, unsigned threads, uint64_t *checksum_out)
{
	struct par_part parts[QW_MAX_THREADS];
	struct fill_job job = {.keys = keys, .seed = seed};
	uint64_t sum = 0, xr = 0;

	threads = qw_threads(threads, n);
	par_run(n, threads, &job, fill_part, parts);
	for (unsigned t = 0; t < threads; t++) {
		sum += parts[t].sum;
		xr ^= parts[t].xr;
	}
	if (checksum_out)
		*checksum_out = checksum_combine(sum, xr, n);
}

struct check_job {
	const uint64_t *keys;
	size_t n;
	bool order; /* also look for the first out-of-order index */
};

static void check_part(void *job, struct par_part *p)
{
	struct check_job *j = job;
	const uint64_t *k = j->keys;
	uint64_t sum = 0, xr = 0;
	size_t bad = (size_t)-1;

	for (size_t i = p->lo; i < p->hi; i++) {
		uint64_t h = sum_mix(k[i]);
		sum += h;
		xr ^= h;
		/* Compare across the part's end too, so the parts' seams are checked. */
		if (j->order && bad == (size_t)-1 && i + 1 < j->n && k[i] > k[i + 1])
			bad = i;
	}
	p->sum = sum;
	p->xr = xr;
	p->bad = bad;
}

static uint64_t check_run(const uint64_t *keys, size_t n, unsigned threads, bool order, size_t *bad)
{
	struct par_part parts[QW_MAX_THREADS];
	struct check_job job = {.keys = keys, .n = n, .order = order};
	uint64_t sum = 0, xr = 0;

	threads = qw_threads(threads, n);
	par_run(n, threads, &job, check_part, parts);
	*bad = (size_t)-1;
	for (unsigned t = 0; t < threads; t++) {
		sum += parts[t].sum;
		xr ^= parts[t].xr;
		if (parts[t].bad < *bad)
			*bad = parts[t].bad;
	}
	return checksum_combine(sum, xr, n);
}

uint64_t qw_checksum(const uint64_t *keys, size_t n, unsigned threads)
{
	size_t bad;
	return check_run(keys, n, threads, false, &bad);
}

int qw_verify_at(const uint64_t *keys, size_t n, uint64_t checksum, unsigned threads,
		 size_t *first_bad)
{
	size_t bad;
	uint64_t sum = check_run(keys, n, threads, true, &bad);

	if (bad != (size_t)-1) {
		if (first_bad)
			*first_bad = bad;
		return -EILSEQ;
	}
	if (sum != checksum) {
		if (first_bad)
			*first_bad = n;
		return -EILSEQ;
	}
	return 0;
}

int qw_verify(const uint64_t *keys, size_t n, uint64_t checksum, unsigned threads)
{
	return qw_verify_at(keys, n, checksum, threads, NULL);
}

/* --- sequential introsort ------------------------------------------------------------------ */

static inline void swap_keys(uint64_t *a, uint64_t *b)
{
	uint64_t t = *a;
	*a = *b;
	*b = t;
}

static void insertion_sort(uint64_t *a, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		uint64_t v = a[i];
		size_t j = i;
		while (j > 0 && a[j - 1] > v) {
			a[j] = a[j - 1];
			j--;
		}
		a[j] = v;
	}
}

static void sift_down(uint64_t *a, size_t root, size_t n)
{
	uint64_t v = a[root];
	for (;;) {
		size_t c = 2 * root + 1;
		if (c >= n)
			break;
		if (c + 1 < n && a[c + 1] > a[c])
			c++;
		if (a[c] <= v)
			break;
		a[root] = a[c];
		root = c;
	}
	a[root] = v;
}

/* The fallback that bounds the worst case when pivots keep going wrong. */
static void heap_sort(uint64_t *a, size_t n)
{
	for (size_t i = n / 2; i-- > 0;)
		sift_down(a, i, n);
	for (size_t i = n; i-- > 1;) {
		swap_keys(&a[0], &a[i]);
		sift_down(a, 0, i);
	}
}

static inline size_t median3(const uint64_t *a, size_t i, size_t j, size_t k)
{
	if (a[i] < a[j])
		return a[j] < a[k] ? j : (a[i] < a[k] ? k : i);
	return a[i] < a[k] ? i : (a[j] < a[k] ? k : j);
}

/*
 * Hoare partition of a[0..n), n >= 2, around a median-of-3 (ninther for large n) pivot.
 * Returns m with a[0..m] <= pivot <= a[m+1..n) and 0 <= m < n-1, so both sides are non-empty.
 * Keys equal to the pivot stop both scans and are spread over both sides, which keeps
 * all-equal input at n log n instead of n^2.
 */
static size_t partition(uint64_t *a, size_t n)
{
	size_t mid = n / 2, last = n - 1, m;
	uint64_t p;

	if (n >= 1024) {
		size_t s = n / 8;
		m = median3(a, median3(a, 0, s, 2 * s), median3(a, mid - s, mid, mid + s),
			    median3(a, last - 2 * s, last - s, last));
	} else {
		m = median3(a, 0, mid, last);
	}
	/* The pivot at the front guarantees the first scan stops at 0, hence m < n-1. */
	swap_keys(&a[0], &a[m]);
	p = a[0];

	size_t i = (size_t)-1, j = n;
	for (;;) {
		do
			i++;
		while (a[i] < p);
		do
			j--;
		while (a[j] > p);
		if (i >= j)
			return j;
		swap_keys(&a[i], &a[j]);
	}
}

/* Recurse on the smaller side and loop on the larger, so the stack stays O(log n). */
static void intro_sort(uint64_t *a, size_t n, unsigned depth)
{
	while (n > QW_INSERTION) {
		if (depth == 0) {
			heap_sort(a, n);
			return;
		}
		depth--;
		size_t m = partition(a, n) + 1;
		if (m < n - m) {
			intro_sort(a, m, depth);
			a += m;
			n -= m;
		} else {
			intro_sort(a + m, n - m, depth);
			n = m;
		}
	}
	insertion_sort(a, n);
}

static unsigned depth_limit(size_t n)
{
	unsigned d = 0;
	while (n > 1) {
		n >>= 1;
		d++;
	}
	return 2 * d;
}

/* --- parallel quicksort -------------------------------------------------------------------- */

struct sort_range {
	size_t lo, n;
	unsigned depth;
};

struct sort_ctx {
	uint64_t *keys;
	size_t n;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct sort_range *stack; /* ranges waiting for a thread; under lock */
	size_t top, cap;
	size_t pending; /* ranges pushed and not yet finished; under lock */
	/* progress */
	qw_progress_fn progress;
	void *progress_arg;
	size_t done;		 /* keys in finished leaves; atomic */
	pthread_mutex_t plock;	 /* serialises progress calls */
	unsigned reported_steps; /* under plock */
};

static void sort_report(struct sort_ctx *c, size_t leaf)
{
	size_t done = __atomic_add_fetch(&c->done, leaf, __ATOMIC_RELAXED);
	unsigned steps;

	if (!c->progress)
		return;
	steps = (unsigned)((double)done / (double)c->n * QW_PROGRESS_STEPS);
	if (steps <= __atomic_load_n(&c->reported_steps, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&c->plock);
	if (steps > c->reported_steps) {
		__atomic_store_n(&c->reported_steps, steps, __ATOMIC_RELAXED);
		c->progress(c->progress_arg, done >= c->n ? 1.0 : (double)done / (double)c->n);
	}
	pthread_mutex_unlock(&c->plock);
}

/* Sort one range: split off larger halves for other threads while the range is big, then
 * finish the rest alone. */
static void sort_range(struct sort_ctx *c, struct sort_range r)
{
	while (r.n > QW_PAR_CUTOFF && r.depth > 0) {
		size_t m = partition(c->keys + r.lo, r.n) + 1;
		struct sort_range small, big;

		r.depth--;
		if (m < r.n - m) {
			small = (struct sort_range){r.lo, m, r.depth};
			big = (struct sort_range){r.lo + m, r.n - m, r.depth};
		} else {
			small = (struct sort_range){r.lo + m, r.n - m, r.depth};
			big = (struct sort_range){r.lo, m, r.depth};
		}
		pthread_mutex_lock(&c->lock);
		/* Pending ranges are disjoint and each exceeds the cutoff, so cap suffices;
		 * the check only guards that reasoning. */
		if (c->top < c->cap) {
			c->stack[c->top++] = big;
			c->pending++;
			pthread_cond_signal(&c->cond);
			pthread_mutex_unlock(&c->lock);
			r = small;
		} else {
			pthread_mutex_unlock(&c->lock);
			sort_range(c, small);
			r = big;
		}
	}
	intro_sort(c->keys + r.lo, r.n, r.depth);
	sort_report(c, r.n);
}

static void *sort_worker(void *arg)
{
	struct sort_ctx *c = arg;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		while (c->top == 0 && c->pending > 0)
			pthread_cond_wait(&c->cond, &c->lock);
		if (c->top == 0)
			break; /* nothing pending: all sorted */
		struct sort_range r = c->stack[--c->top];
		pthread_mutex_unlock(&c->lock);
		sort_range(c, r);
		pthread_mutex_lock(&c->lock);
		if (--c->pending == 0)
			pthread_cond_broadcast(&c->cond);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

int qw_sort_progress(uint64_t *keys, size_t n, unsigned threads, qw_progress_fn progress, void *arg)
{
	pthread_t tids[QW_MAX_THREADS];
	unsigned started = 0;
	struct sort_ctx c = {
	    .keys = keys,
	    .n = n,
	    .progress = progress,
	    .progress_arg = arg,
	};
	if (n < 2) {
		if (progress)
			progress(arg, 1.0);
		return 0;
	}
	/* Threads only help once there is more than one range above the cutoff. */
	threads = n > 2 * (size_t)QW_PAR_CUTOFF ? qw_threads(threads, n) : 1;
	c.cap = n / QW_PAR_CUTOFF + 2;
	c.stack = calloc(c.cap, sizeof(*c.stack));
	if (!c.stack)
		return -ENOMEM;
	pthread_mutex_init(&c.lock, NULL);
	pthread_mutex_init(&c.plock, NULL);
	pthread_cond_init(&c.cond, NULL);
	c.stack[c.top++] = (struct sort_range){0, n, depth_limit(n)};
	c.pending = 1;

	/* A thread that cannot start is no error: the caller's thread sorts what it leaves. */
	for (unsigned t = 1; t < threads; t++) {
		if (pthread_create(&tids[started], NULL, sort_worker, &c) != 0)
			break;
		started++;
	}
	sort_worker(&c);
	for (unsigned t = 0; t < started; t++)
		pthread_join(tids[t], NULL);

	pthread_cond_destroy(&c.cond);
	pthread_mutex_destroy(&c.plock);
	pthread_mutex_destroy(&c.lock);
	free(c.stack);
	return 0;
}

int qw_sort(uint64_t *keys, size_t n, unsigned threads)
{
	return qw_sort_progress(keys, n, threads, NULL, NULL);
}
