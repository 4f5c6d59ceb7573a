// SPDX-License-Identifier: MIT
/*
 * test_lib.c - libheca against real sponsors: a region 8x the budget round-trips intact, clean
 * pages leave without write-back, zero pages cost no fetch, unregister frees the sponsor's
 * pages, adopted memory keeps its content, a dead address fails clearly.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "heca.h"
#include "sponsor_client.h"

#define PG 4096u

static struct t_sponsor sp;

static void lg(void *arg, enum heca_log_level l, const char *m)
{
	(void)arg;
	fprintf(stderr, "  [heca %d] %s\n", l, m);
}

static struct heca *open_h(const char *sponsors, uint64_t budget, unsigned int prefetch)
{
	struct heca_options o;
	struct heca *h = NULL;
	int rc;

	heca_options_init(&o);
	o.sponsors = sponsors;
	o.local_budget = budget;
	o.prefetch_pages = prefetch;
	o.log = lg;
	o.log_level = HECA_LOG_WARN;
	rc = heca_open(&o, &h);
	if (rc)
		T_FAILF("heca_open: %s (%s)", heca_strerror(rc), heca_last_error());
	return h;
}

static uint64_t pat(uint64_t page, uint64_t k, uint64_t salt)
{
	return (page * 0x9e3779b97f4a7c15ull) ^ (k * 0x85ebca6bull) ^ salt;
}

static void fill(uint8_t *p, uint64_t npages, uint64_t salt)
{
	for (uint64_t i = 0; i < npages; i++)
		for (uint64_t k = 0; k < PG / 8; k++)
			((uint64_t *)(p + i * PG))[k] = pat(i, k, salt);
}

static void check(uint8_t *p, uint64_t npages, uint64_t salt, int backwards)
{
	for (uint64_t j = 0; j < npages; j++) {
		uint64_t i = backwards ? npages - 1 - j : j;
		for (uint64_t k = 0; k < PG / 8; k++)
			if (((uint64_t *)(p + i * PG))[k] != pat(i, k, salt))
				T_FAILF("page %llu word %llu: got %#llx want %#llx",
					(unsigned long long)i, (unsigned long long)k,
					(unsigned long long)((uint64_t *)(p + i * PG))[k],
					(unsigned long long)pat(i, k, salt));
	}
}

static void test_roundtrip_8x(void)
{
	struct heca *h = open_h(sp.addr, 1 << 20, 16);
	struct heca_stats a, b;
	uint64_t n = 8 * 256; /* 8 MiB, budget 1 MiB */
	uint8_t *p;

	ASSERT_EQ(heca_map(h, n * PG, (void **)&p), 0);
	fill(p, n, 1);
	check(p, n, 1, 0);
	heca_get_stats(h, &a);
	ASSERT_GE(a.pages_written_back, n / 2);
	ASSERT_LE(a.resident_pages, a.budget_pages);
	ASSERT_EQ(a.pages_lost, 0);
	/* Everything was read once since the writes: every page is clean now, or was written
	 * back. Another read-only pass must evict without any write-back. */
	check(p, n, 1, 1);
	heca_get_stats(h, &a);
	check(p, n, 1, 0);
	heca_get_stats(h, &b);
	ASSERT_EQ(b.pages_written_back, a.pages_written_back);
	ASSERT_GE(b.pages_dropped_clean - a.pages_dropped_clean, n / 2);
	ASSERT_LE(b.bytes_sent - a.bytes_sent, n * 64); /* request headers only */
	ASSERT_LE(b.resident_pages, b.budget_pages);
	printf("  8x budget round trip: written back %llu, dropped clean %llu, fetched %llu, "
	       "prefetched %llu\n",
	       (unsigned long long)b.pages_written_back, (unsigned long long)b.pages_dropped_clean,
	       (unsigned long long)b.pages_fetched, (unsigned long long)b.pages_prefetched);
	ASSERT_EQ(heca_unmap(h, p), 0);
	heca_close(h);
}

static void test_zero_pages(void)
{
	struct heca *h = open_h(sp.addr, 256 * PG, 16);
	struct heca_stats a, z;
	uint64_t n = 2048;
	uint8_t *p;

	ASSERT_EQ(heca_map(h, n * PG, (void **)&p), 0);
	heca_get_stats(h, &z); /* the handshake and ALLOC replies are not page traffic */
	for (int pass = 0; pass < 2; pass++)
		for (uint64_t i = 0; i < n; i++)
			for (uint64_t k = 0; k < PG; k += 512)
				if (p[i * PG + k])
					T_FAILF("page %llu not zero", (unsigned long long)i);
	heca_get_stats(h, &a);
	ASSERT_EQ(a.pages_fetched, 0);
	ASSERT_EQ(a.pages_prefetched, 0);
	ASSERT_EQ(a.bytes_received - z.bytes_received, 0);
	ASSERT_EQ(a.pages_written_back, 0);
	ASSERT_GE(a.faults_zero, 2 * n / 32); /* neighbours are mapped with each zero fault */
	printf("  zero pages: %llu zero faults, 0 fetched, 0 bytes received\n",
	       (unsigned long long)a.faults_zero);
	/* Pages written with zeros leave as never written: no write-back, no fetch after. */
	for (uint64_t i = 0; i < n; i++)
		memset(p + i * PG, 0, PG);
	for (uint64_t i = 0; i < n; i++)
		ASSERT_EQ(p[i * PG + 100], 0);
	heca_get_stats(h, &a);
	ASSERT_EQ(a.pages_written_back, 0);
	ASSERT_EQ(a.pages_fetched, 0);
	ASSERT_GE(a.pages_dropped_zero, n / 2);
	printf("  zero-filled pages: %llu dropped without network, 0 written back\n",
	       (unsigned long long)a.pages_dropped_zero);
	heca_close(h);
}

static void test_unregister_frees(void)
{
	struct heca *h = open_h(sp.addr, 64 * PG, 8);
	struct t_stat before, mid, after;
	uint64_t n = 1024;
	uint8_t *p;

	ASSERT_EQ(t_sponsor_stat(sp.addr, &before), 0);
	ASSERT_EQ(heca_map(h, n * PG, (void **)&p), 0);
	fill(p, n, 2);
	check(p, n, 2, 0);
	ASSERT_EQ(t_sponsor_stat(sp.addr, &mid), 0);
	ASSERT_GE(mid.used_pages, before.used_pages + n / 2);
	ASSERT_EQ(heca_unmap(h, p), 0);
	ASSERT_EQ(t_sponsor_stat(sp.addr, &after), 0);
	ASSERT_EQ(after.used_pages, before.used_pages);
	printf("  unregister: sponsor held %llu pages, %llu after unmap\n",
	       (unsigned long long)(mid.used_pages - before.used_pages),
	       (unsigned long long)(after.used_pages - before.used_pages));
	heca_close(h);
}

static void test_register_existing(void)
{
	struct heca *h = open_h(sp.addr, 64 * PG, 8);
	uint64_t n = 512;
	struct t_stat before, after;
	uint8_t *p = mmap(NULL, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int id;

	ASSERT_TRUE(p != MAP_FAILED);
	ASSERT_EQ(t_sponsor_stat(sp.addr, &before), 0);
	fill(p, n / 2, 3); /* half the pages hold data before registration */
	id = heca_register(h, p, n * PG);
	ASSERT_GE(id, 0);
	ASSERT_EQ(heca_register(h, p, PG), -EBUSY);
	ASSERT_EQ(heca_register(h, p + 1, PG), -EINVAL);
	fill(p + n / 2 * PG, n / 2, 4);
	check(p, n / 2, 3, 0);
	check(p + n / 2 * PG, n / 2, 4, 1);
	/* Unregister brings everything home: content intact as ordinary memory. */
	ASSERT_EQ(heca_unregister(h, p, 0), 0);
	check(p, n / 2, 3, 0);
	check(p + n / 2 * PG, n / 2, 4, 0);
	p[0] ^= 1; /* writable as plain memory again */
	p[0] ^= 1;
	ASSERT_EQ(t_sponsor_stat(sp.addr, &after), 0);
	ASSERT_EQ(after.used_pages, before.used_pages);
	/* Register again and drop the content. */
	ASSERT_GE(heca_register(h, p, n * PG), 0);
	ASSERT_EQ(heca_unregister(h, p, HECA_UNREG_DISCARD), 0);
	for (uint64_t i = 0; i < n; i++)
		ASSERT_EQ(p[i * PG + 8], 0);
	ASSERT_EQ(heca_unregister(h, p, 0), -EINVAL);
	munmap(p, n * PG);
	heca_close(h);
}

struct same_page {
	uint8_t *p;
	uint64_t salt;
	int bad;
	pthread_barrier_t *bar;
};

static void *same_page_reader(void *arg)
{
	struct same_page *s = arg;
	pthread_barrier_wait(s->bar);
	for (uint64_t k = 0; k < PG / 8; k++)
		if (((uint64_t *)s->p)[k] != pat(5, k, s->salt))
			s->bad = 1;
	return NULL;
}

static void test_same_page_many_threads(void)
{
	struct heca *h = open_h(sp.addr, 16 * PG, 0);
	uint64_t n = 256;
	uint8_t *p;
	pthread_barrier_t bar;
	pthread_t t[8];
	struct same_page s[8];

	ASSERT_EQ(heca_map(h, n * PG, (void **)&p), 0);
	for (int round = 0; round < 20; round++) {
		fill(p, n, (uint64_t)round); /* page 5 is evicted long before the readers come */
		pthread_barrier_init(&bar, NULL, 8);
		for (int i = 0; i < 8; i++) {
			s[i] = (struct same_page){.p = p + 5 * PG, .salt = (uint64_t)round, .bar = &bar};
			pthread_create(&t[i], NULL, same_page_reader, &s[i]);
		}
		for (int i = 0; i < 8; i++) {
			pthread_join(t[i], NULL);
			ASSERT_EQ(s[i].bad, 0);
		}
		pthread_barrier_destroy(&bar);
	}
	heca_close(h);
}

static void test_dead_address(void)
{
	struct heca_options o;
	struct heca *h = NULL;
	int rc;

	heca_options_init(&o);
	o.sponsors = "127.0.0.1:1";
	rc = heca_open(&o, &h);
	ASSERT_EQ(rc, -ECONNREFUSED);
	ASSERT_TRUE(h == NULL);
	ASSERT_TRUE(strstr(heca_last_error(), "127.0.0.1:1") != NULL);
	printf("  dead address: %s\n", heca_last_error());
	o.sponsors = "not an address";
	ASSERT_EQ(heca_open(&o, &h), -EINVAL);
	o.sponsors = "127.0.0.1:1";
	o.local_budget = 4096;
	ASSERT_EQ(heca_open(&o, &h), -EINVAL);
	ASSERT_TRUE(strstr(heca_last_error(), "budget") != NULL);
}

static void test_mem_store(void)
{
	struct heca *h = open_h("mem", 32 * PG, 4);
	uint64_t n = 512;
	uint8_t *p;

	ASSERT_EQ(heca_map(h, n * PG, (void **)&p), 0);
	fill(p, n, 9);
	check(p, n, 9, 1);
	heca_close(h);
}

/* A keyed sponsor takes only demanders that prove the key; a keyed demander takes only
 * sponsors that prove it. */
static int auth_errors;

static void auth_log(void *arg, enum heca_log_level l, const char *m)
{
	(void)arg;
	printf("  [heca %d] %s\n", l, m);
	if (l == HECA_LOG_ERROR && strstr(m, "authentication failed"))
		auth_errors++;
}

static void test_keys(void)
{
	const char *bin = getenv("HECAD") ? getenv("HECAD") : "./hecad";
	char dir[] = "/tmp/heca-keys-XXXXXX", k1[64], k2[64], cmd[512];
	const char *cid = "0123456789abcdef0123456789abcdef";
	struct t_sponsor keyed, open_sp;
	struct heca_options o;
	struct heca *h = NULL;
	char list[160];
	uint8_t *p;

	ASSERT_TRUE(mkdtemp(dir) != NULL);
	snprintf(k1, sizeof(k1), "%s/k1", dir);
	snprintf(k2, sizeof(k2), "%s/k2", dir);
	snprintf(cmd, sizeof(cmd), "%s --gen-key %s && %s --gen-key %s", bin, k1, bin, k2);
	ASSERT_EQ(system(cmd), 0);
	const char *extra[] = {"--cluster-id", cid, "--key-file", k1, NULL};
	t_sponsor_start(&keyed, "16M", extra);
	t_sponsor_start(&open_sp, "16M", NULL);

	heca_options_init(&o);
	o.sponsors = keyed.addr;
	o.local_budget = 16 * PG;
	ASSERT_EQ(heca_parse_id(cid, o.cluster_id), 0);
	o.key_file = k1; /* right cluster, right key: works */
	ASSERT_EQ(heca_open(&o, &h), 0);
	ASSERT_EQ(heca_map(h, 256 * PG, (void **)&p), 0);
	fill(p, 256, 11);
	check(p, 256, 11, 1);
	heca_close(h);
	o.key_file = k2; /* wrong key */
	ASSERT_EQ(heca_open(&o, &h), -EACCES);
	printf("  wrong key: %s\n", heca_last_error());
	o.key_file = NULL; /* no key */
	ASSERT_EQ(heca_open(&o, &h), -EACCES);
	printf("  no key: %s\n", heca_last_error());
	o.key_file = k1; /* wrong cluster */
	o.cluster_id[0] ^= 1;
	ASSERT_EQ(heca_open(&o, &h), -EACCES);
	o.cluster_id[0] ^= 1;
	o.sponsors = open_sp.addr; /* a sponsor that does not ask for the key */
	ASSERT_EQ(heca_open(&o, &h), -EACCES);
	printf("  sponsor without the key: %s\n", heca_last_error());
	/* One good sponsor and one that fails authentication: heca starts, and says so. */
	snprintf(list, sizeof(list), "%s,%s", keyed.addr, open_sp.addr);
	o.sponsors = list;
	o.log = auth_log;
	o.log_level = HECA_LOG_WARN;
	auth_errors = 0;
	ASSERT_EQ(heca_open(&o, &h), 0);
	ASSERT_EQ(auth_errors, 1);
	heca_close(h);
	o.log = NULL;
	t_sponsor_stop(&keyed, 0);
	t_sponsor_stop(&open_sp, 0);
	unlink(k1);
	unlink(k2);
	rmdir(dir);
}

int main(void)
{
	t_require_uffd();
	t_sponsor_start(&sp, "256M", NULL);
	printf("sponsor at %s\n", sp.addr);
	test_dead_address();
	test_mem_store();
	test_roundtrip_8x();
	test_zero_pages();
	test_unregister_frees();
	test_register_existing();
	test_same_page_many_threads();
	test_keys();
	ASSERT_EQ(t_sponsor_stop(&sp, 0), 0);
	printf("test_lib: all passed\n");
	return 0;
}
