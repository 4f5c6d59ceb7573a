// SPDX-License-Identifier: MIT
/*
 * test_nostall.c - a DISCARD (madvise DONTNEED, munmap of a part), a RESIZE (mremap) or a
 * fork's CLONE waiting on a slow sponsor must not stall the faults of other threads. The
 * sponsor is reached through a proxy that holds back the replies to DISCARD, RESIZE and CLONE
 * for DELAY_MS; threads fault over a sponsored region with a tiny budget, each page checked,
 * and record every fault's latency, first alone, then while other threads discard, trim and
 * grow segments of their own and one thread forks again and again (the child checks its
 * memory, writes its own, and exits). No fault may wait for a round trip that another
 * thread's DISCARD, RESIZE or CLONE started: the bound is on the faults' maximum and 99th
 * percentile latency, well below DELAY_MS.
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
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "harness.h"
#include "heca.h"
#include "net.h"
#include "segops.h"
#include "wire.h"

#define PG 4096u

#if defined(__SANITIZE_THREAD__)
#define TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TSAN 1
#endif
#endif
#ifndef TSAN
#define TSAN 0
#endif
/* TSan does not let threads start in the child of a threaded process: no forks there. */
#define FORK_OK (!TSAN)

/* How long the proxy holds back each reply to DISCARD, RESIZE and CLONE; with a stall, a fault
 * waits up to this long. The bounds: a fault's maximum latency under half of it, its 99th
 * percentile under a tenth. */
#define DELAY_MS (TSAN ? 600 : 400)
#define MAX_BOUND_MS (DELAY_MS / 2.0)
#define P99_BOUND_MS (DELAY_MS / 10.0)

#define FAULTERS 2
#define FPAGES 1024 /* pages per faulter */
#define SEGOPS 2
#define SPAGES 128 /* pages of a segop thread's segment, at most twice that */
#define CPAGES 256 /* the forker's region */
#define BASE_MS 2000
#define STRESS_MS 6000
#define MAXLAT (1u << 20)

#define t_log(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr))

static struct heca *h;
static atomic_bool stop, stressing;
static atomic_uint_least64_t bad;
static atomic_uint delay_ms;

/* ---- the proxy: forwards bytes both ways, holding back some replies ---- */

struct pconn {
	int down, up; /* demander side, sponsor side */
};

static int listen_fd, upstream_port;

static void *pump_up(void *arg)
{
	struct pconn *c = arg;
	static __thread uint8_t buf[65536];

	for (;;) {
		ssize_t n = recv(c->down, buf, sizeof(buf), 0);
		if (n <= 0 || send(c->up, buf, (size_t)n, MSG_NOSIGNAL) != n)
			break;
	}
	shutdown(c->up, SHUT_RDWR);
	shutdown(c->down, SHUT_RDWR);
	return NULL;
}

static bool held_back(uint8_t op)
{
	return op == (HECA_OP_DISCARD | HECA_OP_REPLY) || op == (HECA_OP_RESIZE | HECA_OP_REPLY) ||
	       op == (HECA_OP_CLONE | HECA_OP_REPLY);
}

/* Sponsor to demander, a frame at a time: a held-back reply is sent DELAY_MS late. Only the
 * control connection carries those, one request at a time, so nothing else waits behind. */
static void *pump_down(void *arg)
{
	struct pconn *c = arg;
	size_t cap = HECA_WIRE_HDR + HECA_WIRE_MAX_PAYLOAD + 65536, have = 0;
	uint8_t *buf = malloc(cap);
	pthread_t t;

	if (!buf)
		T_FAILF("proxy: no memory");
	pthread_create(&t, NULL, pump_up, c);
	for (;;) {
		size_t off = 0;
		ssize_t n = recv(c->up, buf + have, cap - have, 0);
		if (n <= 0)
			break;
		have += (size_t)n;
		for (;;) {
			struct heca_frame f;
			int len = heca_wire_decode(buf + off, have - off, &f);
			if (len == -EAGAIN)
				break;
			if (len < 0) { /* not ours to judge: pass the rest through */
				len = (int)(have - off);
			} else if (held_back(f.opcode) && atomic_load(&delay_ms)) {
				usleep(atomic_load(&delay_ms) * 1000u);
			}
			if (send(c->down, buf + off, (size_t)len, MSG_NOSIGNAL) != len)
				goto out;
			off += (size_t)len;
		}
		memmove(buf, buf + off, have - off);
		have -= off;
	}
out:
	shutdown(c->up, SHUT_RDWR);
	shutdown(c->down, SHUT_RDWR);
	pthread_join(t, NULL);
	close(c->up);
	close(c->down);
	free(buf);
	free(c);
	return NULL;
}

static void *proxy_main(void *arg)
{
	char addr[64];

	(void)arg;
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", upstream_port);
	for (;;) {
		int fd = accept(listen_fd, NULL, NULL), one = 1;
		struct pconn *c;
		pthread_t t;

		if (fd < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		c = malloc(sizeof(*c));
		if (!c)
			T_FAILF("proxy: no memory");
		/* Frames go on at once, as heca's own sockets send them. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->down = fd;
		c->up = heca__tcp_connect(addr, 5000);
		if (c->up < 0) {
			close(fd);
			free(c);
			continue;
		}
		setsockopt(c->up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		pthread_create(&t, NULL, pump_down, c);
		pthread_detach(t);
	}
}

/* Listen on 127.0.0.1:0 and forward to the sponsor at sponsor_addr; out gets the address. */
static void proxy_start(const char *sponsor_addr, char *out, size_t len)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	pthread_t t;

	upstream_port = atoi(strrchr(sponsor_addr, ':') + 1);
	listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    listen(listen_fd, 64) || getsockname(listen_fd, (struct sockaddr *)&sa, &sl))
		T_FAILF("proxy: listen: %s", strerror(errno));
	snprintf(out, len, "127.0.0.1:%d", ntohs(sa.sin_port));
	pthread_create(&t, NULL, proxy_main, NULL);
	pthread_detach(t);
}

/* ---- pages ---- */

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Page p holds version ver (0: reads as zero). */
static void check(const uint8_t *base, uint64_t p, uint64_t ver, const char *who)
{
	const uint64_t *q = (const uint64_t *)(base + p * PG);
	bool ok = true;

	if (ver == 0) {
		for (unsigned int k = 0; k < PG / 8 && ok; k++)
			ok = q[k] == 0;
	} else {
		ok = atomic_load(&bad) ? true : t_check_pages(base, p, p + 1, ver) == 0;
	}
	if (!ok && atomic_fetch_add(&bad, 1) < 5)
		t_log("%s: page %llu does not hold version %llu", who, (unsigned long long)p,
		      (unsigned long long)ver);
}

/* ---- faulters: the latency measured ---- */

struct faulter {
	pthread_t t;
	int idx;
	uint8_t *base;
	uint64_t ver[FPAGES];
	double *lat[2]; /* ms, per phase: 0 alone, 1 beside the segment operations */
	unsigned int nlat[2];
	uint64_t accesses;
};

static struct faulter fl[FAULTERS];

static void *faulter_main(void *arg)
{
	struct faulter *x = arg;
	uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(x->idx + 1);

	while (!atomic_load(&stop)) {
		uint64_t r = rnd(&seed), p = r % FPAGES;
		int ph = atomic_load(&stressing);
		double t0 = t_now_ms(), dt;

		(void)*(volatile uint8_t *)(x->base + p * PG + (r >> 32) % PG);
		dt = t_now_ms() - t0;
		/* A resident page answers in well under a microsecond: anything slower faulted. */
		if (dt > 0.002 && x->nlat[ph] < MAXLAT)
			x->lat[ph][x->nlat[ph]++] = dt;
		check(x->base, p, x->ver[p], "faulter");
		if ((r >> 20) % 32 == 0)
			t_fill_pages(x->base, p, p + 1, ++x->ver[p]);
		x->accesses++;
	}
	return NULL;
}

/* ---- segment operations on segments of their own ---- */

struct segop {
	pthread_t t;
	int idx;
	uint8_t *base;
	uint64_t npages;
	uint64_t ver[2 * SPAGES]; /* 0: reads as zero */
	uint64_t discards, trims, grows;
};

static struct segop so[SEGOPS];

static void check_seg(struct segop *x, const char *when)
{
	for (uint64_t p = 0; p < x->npages; p++)
		check(x->base, p, x->ver[p], when);
}

static void *segop_main(void *arg)
{
	struct segop *x = arg;
	uint64_t seed = 0x51ed27ull * (uint64_t)(x->idx + 7), v = 1000u * (uint64_t)(x->idx + 1);

	while (!atomic_load(&stop)) {
		uint64_t r = rnd(&seed), n = 1 + (r >> 8) % 16, p = (r >> 16) % (x->npages - n);
		uintptr_t out;
		int rc;

		for (uint64_t k = 0; k < x->npages; k += 3) {
			t_fill_pages(x->base, k, k + 1, ++v);
			x->ver[k] = v;
		}
		switch (r % 3) {
		case 0: /* madvise(MADV_DONTNEED) */
			rc = heca__discard_range(h, (uintptr_t)(x->base + p * PG), n * PG);
			if (rc)
				T_FAILF("discard: %s", heca_strerror(rc));
			memset(x->ver + p, 0, n * sizeof(x->ver[0]));
			x->discards++;
			check_seg(x, "after discard");
			break;
		case 1: /* munmap of the tail (a DISCARD), if there is room to grow back */
			if (x->npages < SPAGES + n)
				break;
			rc = heca__unmap_range(h, (uintptr_t)(x->base + (x->npages - n) * PG), n * PG);
			if (rc)
				T_FAILF("unmap tail: %s", heca_strerror(rc));
			syscall(SYS_munmap, x->base + (x->npages - n) * PG, n * PG);
			x->npages -= n;
			x->trims++;
			check_seg(x, "after trimming");
			break;
		default: /* mremap: grow (a RESIZE), moving when the kernel must */
			if (x->npages + 2 * n > 2 * SPAGES)
				break;
			rc = heca__remap(h, (uintptr_t)x->base, x->npages * PG, (x->npages + 2 * n) * PG,
					 MREMAP_MAYMOVE, 0, &out);
			if (rc)
				T_FAILF("remap grow: %s", heca_strerror(rc));
			x->base = (uint8_t *)out;
			memset(x->ver + x->npages, 0, 2 * n * sizeof(x->ver[0]));
			x->npages += 2 * n;
			x->grows++;
			check_seg(x, "after growing");
			break;
		}
	}
	return NULL;
}

/* ---- fork ---- */

static uint8_t *cbase;
static unsigned int forks;

static void *forker_main(void *arg)
{
	(void)arg;
	for (uint64_t ver = 1; !atomic_load(&stop); ver++) {
		pid_t pid;
		int status;

		/* New content each round, most of it written back by the next fork: the child
		 * must see this version, not an older one the sponsors held. */
		t_fill_pages(cbase, 0, CPAGES, ver);
		pid = heca_fork(h);
		if (pid < 0)
			T_FAILF("heca_fork: %s %s", heca_strerror(pid == -1 ? -errno : pid),
				heca_last_error());
		if (pid == 0) {
			uint64_t n = t_check_pages(cbase, 0, CPAGES, ver);
			t_fill_pages(cbase, 0, CPAGES, ver + 1000000);
			n += t_check_pages(cbase, 0, CPAGES, ver + 1000000);
			_exit(n ? 1 : 0);
		}
		if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
			T_FAILF("fork %u: the child failed (status %#x)", forks + 1, status);
		if (t_check_pages(cbase, 0, CPAGES, ver))
			T_FAILF("fork %u: the parent sees the child's writes", forks + 1);
		forks++;
	}
	return NULL;
}

/* ---- figures ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

struct figures {
	unsigned int n;
	double p50, p99, max;
	unsigned int over; /* faults slower than half the delay */
};

static struct figures phase_figures(int ph)
{
	struct figures f = {0};
	double *all;

	for (int i = 0; i < FAULTERS; i++)
		f.n += fl[i].nlat[ph];
	all = malloc((f.n + 1) * sizeof(*all));
	if (!all)
		T_FAILF("no memory");
	f.n = 0;
	for (int i = 0; i < FAULTERS; i++)
		for (unsigned int k = 0; k < fl[i].nlat[ph]; k++)
			all[f.n++] = fl[i].lat[ph][k];
	if (!f.n)
		T_FAILF("phase %d: no fault measured", ph);
	qsort(all, f.n, sizeof(*all), cmp_double);
	f.p50 = all[f.n / 2];
	f.p99 = all[(size_t)((double)f.n * 0.99)];
	f.max = all[f.n - 1];
	for (unsigned int k = 0; k < f.n; k++)
		f.over += all[k] > DELAY_MS / 2.0;
	free(all);
	return f;
}

int main(void)
{
	struct t_sponsor sp;
	struct heca_options o;
	struct figures alone, beside;
	char paddr[64];
	uint64_t discards = 0, trims = 0, grows = 0;
	pthread_t ft;
	int rc;

	t_require_uffd();
	t_sponsor_start(&sp, "256M", NULL);
	proxy_start(sp.addr, paddr, sizeof(paddr));
	heca_options_init(&o);
	o.sponsors = paddr;
	o.local_budget = 64 * PG;
	/* Room for the pages written while a CLONE holds write-backs back. */
	o.local_limit = 1024 * PG;
	o.replicas = 1;
	rc = heca_open(&o, &h);
	if (rc)
		T_FAILF("heca_open: %s %s", heca_strerror(rc), heca_last_error());

	for (int i = 0; i < FAULTERS; i++) {
		fl[i].idx = i;
		if ((rc = heca_map(h, FPAGES * PG, (void **)&fl[i].base)))
			T_FAILF("heca_map: %s", heca_strerror(rc));
		for (int ph = 0; ph < 2; ph++)
			if (!(fl[i].lat[ph] = malloc(MAXLAT * sizeof(double))))
				T_FAILF("no memory");
		for (uint64_t p = 0; p < FPAGES; p++)
			fl[i].ver[p] = 1;
		t_fill_pages(fl[i].base, 0, FPAGES, 1); /* most of it goes to the sponsor */
	}
	for (int i = 0; i < SEGOPS; i++) {
		so[i].idx = i;
		so[i].npages = SPAGES;
		if ((rc = heca_map(h, SPAGES * PG, (void **)&so[i].base)))
			T_FAILF("heca_map: %s", heca_strerror(rc));
	}
	if ((rc = heca_map(h, CPAGES * PG, (void **)&cbase)))
		T_FAILF("heca_map: %s", heca_strerror(rc));
	atomic_store(&delay_ms, DELAY_MS);

	/* Alone: the faults' own latency. */
	for (int i = 0; i < FAULTERS; i++)
		pthread_create(&fl[i].t, NULL, faulter_main, &fl[i]);
	usleep(BASE_MS * 1000);
	/* Beside slow DISCARDs, RESIZEs and CLONEs of other threads. */
	atomic_store(&stressing, true);
	for (int i = 0; i < SEGOPS; i++)
		pthread_create(&so[i].t, NULL, segop_main, &so[i]);
	if (FORK_OK)
		pthread_create(&ft, NULL, forker_main, NULL);
	usleep(STRESS_MS * 1000);
	atomic_store(&stop, true);
	for (int i = 0; i < SEGOPS; i++)
		pthread_join(so[i].t, NULL);
	if (FORK_OK)
		pthread_join(ft, NULL);
	for (int i = 0; i < FAULTERS; i++)
		pthread_join(fl[i].t, NULL);

	for (int i = 0; i < FAULTERS; i++)
		for (uint64_t p = 0; p < FPAGES; p++)
			check(fl[i].base, p, fl[i].ver[p], "faulter, at the end");
	for (int i = 0; i < SEGOPS; i++) {
		check_seg(&so[i], "segment, at the end");
		discards += so[i].discards;
		trims += so[i].trims;
		grows += so[i].grows;
	}
	alone = phase_figures(0);
	beside = phase_figures(1);
	t_log("replies to DISCARD, RESIZE and CLONE held back %d ms; %llu discards, %llu trims, "
	      "%llu grows, %u forks%s",
	      DELAY_MS, (unsigned long long)discards, (unsigned long long)trims,
	      (unsigned long long)grows, forks, FORK_OK ? "" : " (none under ThreadSanitizer)");
	t_log("fault latency alone:       %u faults, p50 %.3f ms, p99 %.3f ms, max %.3f ms", alone.n,
	      alone.p50, alone.p99, alone.max);
	t_log("fault latency beside them: %u faults, p50 %.3f ms, p99 %.3f ms, max %.3f ms, "
	      "%u over %.0f ms",
	      beside.n, beside.p50, beside.p99, beside.max, beside.over, DELAY_MS / 2.0);
	{
		struct heca_stats st;
		if (heca_get_stats(h, &st) == 0)
			t_log("faults deferred (waiting for room): %llu",
			      (unsigned long long)st.faults_deferred);
	}
	ASSERT_EQ(atomic_load(&bad), 0);
	ASSERT_TRUE(discards + trims > 0 && grows > 0);
	if (FORK_OK)
		ASSERT_TRUE(forks > 0);
	if (beside.max >= MAX_BOUND_MS || beside.p99 >= P99_BOUND_MS)
		T_FAILF("faults waited for other threads' sponsor round trips: max %.1f ms (bound "
			"%.1f), p99 %.1f ms (bound %.1f)",
			beside.max, MAX_BOUND_MS, beside.p99, P99_BOUND_MS);

	atomic_store(&delay_ms, 0);
	for (int i = 0; i < SEGOPS; i++)
		heca_unmap(h, so[i].base);
	for (int i = 0; i < FAULTERS; i++)
		heca_unmap(h, fl[i].base);
	heca_unmap(h, cbase);
	heca_close(h);
	ASSERT_EQ(t_sponsor_stop(&sp, 0), 0);
	return T_PASS;
}
