// SPDX-License-Identifier: MIT
/*
 * test_demo.c - `heca demo` end to end as a user runs it: it starts its own sponsors, sends
 * most of the region away and reads it back, verifies every page and says so; bad flags and
 * unreachable sponsors give a clear error and exit != 0.
 */
#include <sys/wait.h>

#include "harness.h"

/* Run cmd through the shell, capture stdout+stderr into out. Returns the exit status. */
static int run(const char *cmd, char *out, size_t len)
{
	FILE *f = popen(cmd, "r");
	size_t n = 0;
	int st;

	if (!f)
		T_FAILF("popen %s", cmd);
	while (n + 1 < len && fgets(out + n, (int)(len - n), f))
		n += strlen(out + n);
	out[n] = '\0';
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The line of out that starts with prefix; fails the test if there is none. */
static const char *line(const char *out, const char *prefix)
{
	const char *l = out;

	while (l && strncmp(l, prefix, strlen(prefix))) {
		l = strchr(l, '\n');
		if (l)
			l++;
	}
	if (!l)
		T_FAILF("no line '%s' in the demo's output", prefix);
	return l;
}

/* The demo's region and local budget, in MiB and in pages. */
#define SIZE_MB	 48
#define LOCAL_MB 6
#define NPAGES	 (SIZE_MB * 256ull)
#define BUDGET	 (LOCAL_MB * 256ull)

/* The figures of a demo that did its job: every page compared; all but a budget's worth
 * written to the sponsors and brought back from them; no page lost; the budget held. */
static void check_figures(const char *out)
{
	unsigned long long n, wbhit, in, pre, wb, res, bud, lost, faults;
	double p99;

	ASSERT_TRUE(strstr(out, "verified: FAILED") == NULL);
	ASSERT_EQ(sscanf(line(out, "verified: OK"), "verified: OK (%llu pages)", &n), 1);
	ASSERT_EQ(n, NPAGES);
	ASSERT_EQ(sscanf(line(out, "  faults "),
			 " faults read %*u, write %*u, write-protect %*u, zero (no network) %*u, "
			 "from write-back buffer %llu",
			 &wbhit),
		  1);
	ASSERT_EQ(
	    sscanf(line(out, "  pages in "), " pages in fetched %llu, prefetched %llu", &in, &pre),
	    2);
	ASSERT_EQ(sscanf(line(out, "  pages out "), " pages out written back %llu", &wb), 1);
	ASSERT_EQ(sscanf(line(out, "  resident "),
			 " resident %llu of %llu budget pages; lost pages %llu", &res, &bud, &lost),
		  3);
	ASSERT_EQ(sscanf(line(out, "  fault latency "),
			 " fault latency p50 %*f us, p90 %*f us, p99 %lf us, mean %*f us, max %*f "
			 "us (%llu faults)",
			 &p99, &faults),
		  2);
	ASSERT_EQ(bud, BUDGET);
	ASSERT_LE(res, bud);
	ASSERT_EQ(lost, 0);
	/* Only a budget's worth can stay: the rest of what was written went out... */
	ASSERT_GE(wb, NPAGES - BUDGET);
	/* ...and the read back, by another thread, brought it in from the sponsors. */
	ASSERT_GE(in + pre + wbhit, NPAGES - BUDGET);
	ASSERT_TRUE(faults > 0 && p99 > 0);
}

int main(void)
{
	const char *cli = getenv("HECA_CLI") ? getenv("HECA_CLI") : "./heca";
	static char out[65536];
	char cmd[1024];
	int rc;

	t_require_uffd();
	snprintf(cmd, sizeof(cmd), "%s demo --size %dM --local %dM --threads 4 2>&1", cli, SIZE_MB,
		 LOCAL_MB);
	rc = run(cmd, out, sizeof(out));
	printf("%s", out);
	ASSERT_EQ(rc, 0);
	check_figures(out);

	snprintf(cmd, sizeof(cmd), "%s demo --bogus 2>&1", cli);
	ASSERT_EQ(run(cmd, out, sizeof(out)), 2);
	ASSERT_TRUE(strstr(out, "usage") != NULL);
	snprintf(cmd, sizeof(cmd), "%s demo --size nonsense 2>&1", cli);
	ASSERT_EQ(run(cmd, out, sizeof(out)), 2);
	snprintf(cmd, sizeof(cmd), "%s demo --sponsors 127.0.0.1:1 --size 1M 2>&1", cli);
	rc = run(cmd, out, sizeof(out));
	printf("%s", out);
	ASSERT_EQ(rc, 1);
	ASSERT_TRUE(strstr(out, "127.0.0.1:1") != NULL);
	snprintf(cmd, sizeof(cmd), "%s frobnicate 2>&1", cli);
	ASSERT_EQ(run(cmd, out, sizeof(out)), 2);
	printf("test_demo: all passed\n");
	return 0;
}
