// SPDX-License-Identifier: MIT
/*
 * test_segops.c - what transparent mode does to sponsored memory besides touching it, done by
 * many threads at once under a budget of a few dozen pages: each thread owns a segment and
 * writes, checks, discards ranges of it (madvise DONTNEED), grows it with mremap (moving it),
 * shrinks it, and trims its head and tail (munmap of a part), every page checked against a
 * shadow. Now and then all threads stop and the process forks: the child must see exactly the
 * memory of the moment, and the parent none of the child's writes. Bounded in time.
 */
#include <errno.h>
#include <pthread.h>
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
#include "segops.h"

#define PG 4096u
#define WORKERS 4
#define MAXPAGES 2048
#define SECONDS 6

#if defined(__SANITIZE_THREAD__)
#define FORK_OK 0 /* TSan does not allow threads to start in a child of a threaded process */
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FORK_OK 0
#else
#define FORK_OK 1
#endif
#else
#define FORK_OK 1
#endif

struct worker {
	int idx;
	pthread_t t;
	uint8_t *base;
	uint64_t npages;
	uint64_t gen[MAXPAGES]; /* shadow: 0 reads as zero, else pattern(idx, gen): gen is
				 * unique per write, so a page in the wrong place shows */
	uint64_t ops, discards, grows, moves, shrinks, trims;
};

static struct heca *h;
static struct worker w[WORKERS];
static atomic_bool stop;
static atomic_int pause_req, paused;
static atomic_uint_least64_t bad;

#define t_log(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr))

static uint64_t pat(int idx, uint64_t gen, uint64_t k)
{
	uint64_t x = ((uint64_t)idx << 56) ^ (gen * 0x9e3779b97f4a7c15ull) ^
		     (k * 0xff51afd7ed558ccdull);
	return x ^ (x >> 29);
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void write_page(struct worker *x, uint64_t p, uint64_t gen)
{
	uint64_t *q = (uint64_t *)(x->base + p * PG);
	for (uint64_t k = 0; k < PG / 8; k += 8)
		q[k] = pat(x->idx, gen, k);
	x->gen[p] = gen;
}

static bool page_ok(const struct worker *x, uint64_t p, const char *when)
{
	const uint64_t *q = (const uint64_t *)(x->base + p * PG);
	uint64_t gen = x->gen[p];
	for (uint64_t k = 0; k < PG / 8; k += 8) {
		uint64_t want = gen ? pat(x->idx, gen, k) : 0;
		if (q[k] != want) {
			if (atomic_fetch_add(&bad, 1) < 5)
				t_log("worker %d page %llu word %llu (%s): %#llx, want %#llx (gen %llu)",
				      x->idx, (unsigned long long)p, (unsigned long long)k, when,
				      (unsigned long long)q[k], (unsigned long long)want, (unsigned long long)gen);
			return false;
		}
	}
	return true;
}

static void check_all(const struct worker *x, const char *when)
{
	for (uint64_t p = 0; p < x->npages; p++)
		if (!page_ok(x, p, when))
			return;
}

static void maybe_pause(void)
{
	if (!atomic_load(&pause_req))
		return;
	atomic_fetch_add(&paused, 1);
	while (atomic_load(&pause_req) && !atomic_load(&stop))
		usleep(1000);
	atomic_fetch_sub(&paused, 1);
}

static void *work(void *arg)
{
	struct worker *x = arg;
	uint64_t seed = 0x1234567ull * (uint64_t)(x->idx + 1);
	uint64_t gen = 1;

	while (!atomic_load(&stop) && !atomic_load(&bad)) {
		uint64_t r = rnd(&seed), op = r % 16, p = (r >> 8) % x->npages;
		uintptr_t out;
		int rc;

		maybe_pause();
		x->ops++;
		if (op < 8) {
			write_page(x, p, ++gen);
		} else if (op < 11) {
			for (uint64_t k = 0; k < 16; k++)
				page_ok(x, (p + k) % x->npages, "random check");
		} else if (op == 11) {
			/* madvise(MADV_DONTNEED): the range reads as zero afterwards. */
			uint64_t n = 1 + (r >> 24) % 32;
			if (p + n > x->npages)
				n = x->npages - p;
			rc = heca__discard_range(h, (uintptr_t)(x->base + p * PG), n * PG);
			if (rc)
				T_FAILF("discard: %s", heca_strerror(rc));
			for (uint64_t k = p; k < p + n; k++)
				x->gen[k] = 0;
			for (uint64_t k = p; k < p + n; k++)
				page_ok(x, k, "after discard");
			x->discards++;
		} else if (op == 12 && x->npages * 2 <= MAXPAGES) {
			/* Grow, moving if the kernel must: a mapping right behind forces it. */
			void *guard = mmap(x->base + x->npages * PG, PG, PROT_READ,
					   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
			rc = heca__remap(h, (uintptr_t)x->base, x->npages * PG, x->npages * 2 * PG,
					 MREMAP_MAYMOVE, 0, &out);
			if (guard != MAP_FAILED)
				munmap(guard, PG);
			if (rc)
				T_FAILF("remap grow: %s", heca_strerror(rc));
			x->moves += out != (uintptr_t)x->base;
			x->base = (uint8_t *)out;
			memset(x->gen + x->npages, 0, x->npages * sizeof(x->gen[0]));
			x->npages *= 2;
			x->grows++;
			check_all(x, "after growing");
		} else if (op == 13 && x->npages >= 64) {
			/* Shrink in place. */
			uint64_t n = x->npages / 2;
			rc = heca__remap(h, (uintptr_t)x->base, x->npages * PG, n * PG, 0, 0, &out);
			if (rc || out != (uintptr_t)x->base)
				T_FAILF("remap shrink: %s", heca_strerror(rc));
			x->npages = n;
			x->shrinks++;
			check_all(x, "after shrinking");
		} else if (op == 14 && x->npages >= 64) {
			/* munmap of the tail, then of the head. */
			uint64_t n = 1 + (r >> 24) % 16;
			rc = heca__unmap_range(h, (uintptr_t)(x->base + (x->npages - n) * PG), n * PG);
			if (rc)
				T_FAILF("unmap tail: %s", heca_strerror(rc));
			syscall(SYS_munmap, x->base + (x->npages - n) * PG, n * PG);
			x->npages -= n;
			rc = heca__unmap_range(h, (uintptr_t)x->base, n * PG);
			if (rc)
				T_FAILF("unmap head: %s", heca_strerror(rc));
			syscall(SYS_munmap, x->base, n * PG);
			x->base += n * PG;
			x->npages -= n;
			memmove(x->gen, x->gen + n, x->npages * sizeof(x->gen[0]));
			x->trims++;
			check_all(x, "after trimming");
		}
	}
	return NULL;
}

/* A piece left by a partial munmap cannot grow into its other piece; a move to a fixed
 * address that also shrinks forgets the tail. Content checked throughout. */
static void edge_cases(void)
{
	struct worker x = {.idx = 9, .npages = 64};
	uint8_t *b;
	uintptr_t out;
	int rc;

	rc = heca_map(h, x.npages * PG, (void **)&x.base);
	if (rc)
		T_FAILF("heca_map: %s", heca_strerror(rc));
	for (uint64_t p = 0; p < x.npages; p++)
		write_page(&x, p, 1000 + p);
	ASSERT_EQ(heca__unmap_range(h, (uintptr_t)(x.base + 20 * PG), 10 * PG), 0);
	syscall(SYS_munmap, x.base + 20 * PG, 10 * PG);
	rc = heca__remap(h, (uintptr_t)x.base, 20 * PG, 40 * PG, 0, 0, &out);
	ASSERT_EQ(rc, -ENOTSUP);
	for (uint64_t p = 0; p < 20; p++)
		page_ok(&x, p, "head piece after a refused grow");
	for (uint64_t p = 30; p < 64; p++)
		page_ok(&x, p, "tail piece after a refused grow");
	ASSERT_EQ(heca__unmap_range(h, (uintptr_t)x.base, 64 * PG), 0);
	syscall(SYS_munmap, x.base, 64 * PG);

	/* Move to a fixed address and shrink to half at once. */
	x.npages = 64;
	rc = heca_map(h, x.npages * PG, (void **)&x.base);
	if (rc)
		T_FAILF("heca_map: %s", heca_strerror(rc));
	for (uint64_t p = 0; p < x.npages; p++)
		write_page(&x, p, 2000 + p);
	b = mmap(NULL, 32 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_TRUE(b != MAP_FAILED);
	rc = heca__remap(h, (uintptr_t)x.base, 64 * PG, 32 * PG, MREMAP_MAYMOVE | MREMAP_FIXED,
			 (uintptr_t)b, &out);
	ASSERT_EQ(rc, 0);
	ASSERT_TRUE(out == (uintptr_t)b);
	x.base = b;
	x.npages = 32;
	check_all(&x, "after a fixed move that shrank");
	/* Grown again in place, the part that came back reads zero, not the old tail. */
	rc = heca__remap(h, (uintptr_t)x.base, 32 * PG, 64 * PG, 0, 0, &out);
	if (rc == 0) {
		memset(x.gen + 32, 0, 32 * sizeof(x.gen[0]));
		x.npages = 64;
		check_all(&x, "regrown after a fixed move that shrank");
	}
	ASSERT_EQ(heca_unmap(h, x.base), 0);
	ASSERT_EQ(atomic_load(&bad), 0);
}

/* All workers stopped: fork, and check both sides. */
static void fork_round(int round)
{
	pid_t pid;
	int status;

	atomic_store(&pause_req, 1);
	while (atomic_load(&paused) < WORKERS && !atomic_load(&bad))
		usleep(1000);
	pid = heca_fork(h);
	if (pid < 0)
		T_FAILF("heca_fork: %s %s", heca_strerror(pid == -1 ? -errno : pid),
			heca_last_error());
	if (pid == 0) {
		/* The memory of the moment, then writes of our own. */
		for (int i = 0; i < WORKERS; i++)
			check_all(&w[i], "in the child");
		for (int i = 0; i < WORKERS; i++)
			for (uint64_t p = 0; p < w[i].npages; p++)
				write_page(&w[i], p, ((uint64_t)round << 40) + p + 1);
		for (int i = 0; i < WORKERS; i++)
			check_all(&w[i], "in the child, after its writes");
		_exit(atomic_load(&bad) ? 1 : 0);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
		T_FAILF("fork round %d: the child failed (status %#x)", round, status);
	for (int i = 0; i < WORKERS; i++)
		check_all(&w[i], "in the parent after the child's writes");
	atomic_store(&pause_req, 0);
}

int main(void)
{
	struct t_sponsor sp;
	struct heca_options o;
	uint64_t t0;
	int rc, rounds = 0;

	t_require_uffd();
	t_sponsor_start(&sp, "1G", NULL);
	heca_options_init(&o);
	o.sponsors = sp.addr;
	o.local_budget = 48 * PG;
	o.replicas = 1;
	rc = heca_open(&o, &h);
	if (rc)
		T_FAILF("heca_open: %s %s", heca_strerror(rc), heca_last_error());
	edge_cases();
	for (int i = 0; i < WORKERS; i++) {
		w[i].idx = i;
		w[i].npages = 256;
		rc = heca_map(h, w[i].npages * PG, (void **)&w[i].base);
		if (rc)
			T_FAILF("heca_map: %s", heca_strerror(rc));
	}
	for (int i = 0; i < WORKERS; i++)
		pthread_create(&w[i].t, NULL, work, &w[i]);
	t0 = (uint64_t)t_now_ms();
	while ((uint64_t)t_now_ms() - t0 < SECONDS * 1000 && !atomic_load(&bad)) {
		usleep(500000);
		if (FORK_OK)
			fork_round(++rounds);
	}
	atomic_store(&stop, true);
	for (int i = 0; i < WORKERS; i++)
		pthread_join(w[i].t, NULL);
	for (int i = 0; i < WORKERS; i++) {
		check_all(&w[i], "at the end");
		t_log("worker %d: %llu ops, %llu discards, %llu grows (%llu moved), %llu shrinks, "
		      "%llu trims; %llu pages now",
		      i, (unsigned long long)w[i].ops, (unsigned long long)w[i].discards,
		      (unsigned long long)w[i].grows, (unsigned long long)w[i].moves,
		      (unsigned long long)w[i].shrinks, (unsigned long long)w[i].trims,
		      (unsigned long long)w[i].npages);
	}
	t_log("%d fork rounds%s", rounds, FORK_OK ? "" : " (none under ThreadSanitizer)");
	ASSERT_EQ(atomic_load(&bad), 0);
	for (int i = 0; i < WORKERS; i++)
		heca_unmap(h, w[i].base);
	heca_close(h);
	ASSERT_EQ(t_sponsor_stop(&sp, 0), 0);
	return T_PASS;
}
