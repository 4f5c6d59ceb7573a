// SPDX-License-Identifier: MIT
/*
 * test_bench.c - `heca bench` at tiny sizes, so its code paths cannot rot: every workload
 * exits 0 and prints its table rows, --json writes valid JSON, bad usage exits 2.
 */
#include <ctype.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static char out[1 << 20];

static char outfile[64];

/* Run cmd through the shell with stdout+stderr in a file (not a pipe: sponsors orphaned by a
 * crashing heca would hold a pipe open forever), then read it into out. Returns the exit
 * status. */
static int run(const char *cmd)
{
	char full[4096];
	FILE *f;
	size_t n;
	int st;

	snprintf(full, sizeof(full), "%s >%s 2>&1", cmd, outfile);
	st = system(full);
	f = fopen(outfile, "r");
	if (!f)
		T_FAILF("no output from %s", cmd);
	n = fread(out, 1, sizeof(out) - 1, f);
	fclose(f);
	out[n] = '\0';
	printf("$ %s\n%s", cmd, out);
	fflush(stdout);
	if (st == -1)
		T_FAILF("system %s", cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A minimal JSON checker (RFC 8259 grammar, no semantics): returns the position after one
 * value, or NULL if the text is not JSON. */
static const char *ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

static const char *value(const char *p, int depth);

static const char *string(const char *p)
{
	if (*p++ != '"')
		return NULL;
	while (*p && *p != '"') {
		if ((unsigned char)*p < 0x20)
			return NULL;
		if (*p == '\\') {
			p++;
			if (*p == 'u') {
				for (int i = 1; i <= 4; i++)
					if (!isxdigit((unsigned char)p[i]))
						return NULL;
				p += 4;
			} else if (!strchr("\"\\/bfnrt", *p) || !*p) {
				return NULL;
			}
		}
		p++;
	}
	return *p == '"' ? p + 1 : NULL;
}

static const char *number(const char *p)
{
	const char *s;

	if (*p == '-')
		p++;
	if (!isdigit((unsigned char)*p))
		return NULL;
	if (*p == '0')
		p++;
	else
		while (isdigit((unsigned char)*p))
			p++;
	if (*p == '.') {
		s = ++p;
		while (isdigit((unsigned char)*p))
			p++;
		if (p == s)
			return NULL;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		s = p;
		while (isdigit((unsigned char)*p))
			p++;
		if (p == s)
			return NULL;
	}
	return p;
}

static const char *value(const char *p, int depth)
{
	p = ws(p);
	if (depth > 64)
		return NULL;
	if (*p == '{' || *p == '[') {
		char close = *p == '{' ? '}' : ']';
		int obj = *p == '{';
		p = ws(p + 1);
		if (*p == close)
			return p + 1;
		for (;;) {
			if (obj) {
				p = string(ws(p));
				if (!p)
					return NULL;
				p = ws(p);
				if (*p++ != ':')
					return NULL;
			}
			p = value(p, depth + 1);
			if (!p)
				return NULL;
			p = ws(p);
			if (*p == close)
				return p + 1;
			if (*p++ != ',')
				return NULL;
		}
	}
	if (*p == '"')
		return string(p);
	if (!strncmp(p, "true", 4))
		return p + 4;
	if (!strncmp(p, "false", 5))
		return p + 5;
	if (!strncmp(p, "null", 4))
		return p + 4;
	return number(p);
}

/* The number in column col (1-based) of the table row that starts with row, or -1. */
static double column(const char *text, const char *row, int col)
{
	const char *p = strstr(text, row);

	if (!p)
		return -1;
	for (int c = 0; c < col; c++) {
		p = strchr(p, '|');
		if (!p)
			return -1;
		p++;
	}
	while (*p == ' ')
		p++;
	return isdigit((unsigned char)*p) ? strtod(p, NULL) : -1;
}

static void check_json(const char *path, const char *must)
{
	static char buf[1 << 20];
	FILE *f = fopen(path, "r");
	size_t n;
	const char *end;

	if (!f)
		T_FAILF("no JSON file %s", path);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	end = value(buf, 0);
	if (!end || *ws(end))
		T_FAILF("%s is not valid JSON", path);
	ASSERT_TRUE(strstr(buf, "\"nproc\"") != NULL);
	ASSERT_TRUE(strstr(buf, "\"kernel\"") != NULL);
	ASSERT_TRUE(strstr(buf, "\"settings\"") != NULL);
	ASSERT_TRUE(strstr(buf, must) != NULL);
}

int main(void)
{
	const char *cli = getenv("HECA_CLI") ? getenv("HECA_CLI") : "./heca";
	char cmd[2048], json[64], png[80];
	/* Small everything: a few MiB, a few hundred samples. */
	const char *tiny = "--samples 50 --size 8M --local 1M --touches 300 --quiet";
	int fd;

	t_require_uffd();
	snprintf(outfile, sizeof(outfile), "/tmp/heca-test-bench-out.XXXXXX");
	fd = mkstemp(outfile);
	ASSERT_TRUE(fd >= 0);
	close(fd);
	snprintf(json, sizeof(json), "/tmp/heca-test-bench.XXXXXX");
	fd = mkstemp(json);
	ASSERT_TRUE(fd >= 0);
	close(fd);

	/* Bad usage: usage text and 2. */
	snprintf(cmd, sizeof(cmd), "%s bench --bogus ", cli);
	ASSERT_EQ(run(cmd), 2);
	ASSERT_TRUE(strstr(out, "usage") != NULL);
	snprintf(cmd, sizeof(cmd), "%s bench frobnicate ", cli);
	ASSERT_EQ(run(cmd), 2);
	snprintf(cmd, sizeof(cmd), "%s bench ", cli);
	ASSERT_EQ(run(cmd), 2);
	snprintf(cmd, sizeof(cmd), "%s bench latency --size nonsense ", cli);
	ASSERT_EQ(run(cmd), 2);
	snprintf(cmd, sizeof(cmd), "%s bench qsort --ratios 5:4 --size 1M ", cli);
	ASSERT_EQ(run(cmd), 2);
	snprintf(cmd, sizeof(cmd), "%s bench --help", cli);
	ASSERT_EQ(run(cmd), 0);
	ASSERT_TRUE(strstr(out, "uniform") != NULL);
	/* Unreachable sponsor: a clear error naming it, non-zero. */
	snprintf(cmd, sizeof(cmd), "%s bench raw --sponsors 127.0.0.1:1 %s ", cli, tiny);
	ASSERT_TRUE(run(cmd) != 0);
	ASSERT_TRUE(strstr(out, "127.0.0.1:1") != NULL);

	/* all = raw, latency, walk, uniform, one table and one JSON file. */
	snprintf(cmd, sizeof(cmd), "%s bench all %s --threads 2 --json %s ", cli, tiny, json);
	ASSERT_EQ(run(cmd), 0);
	ASSERT_TRUE(strstr(out, "| workload | figure | heca | baseline | ratio |") != NULL);
	ASSERT_TRUE(strstr(out, "| raw | 4 KiB RTT p50 |") != NULL);
	ASSERT_TRUE(strstr(out, "| raw | pipelined page rate |") != NULL);
	ASSERT_TRUE(strstr(out, "| raw | fault floor (spin) p50 |") != NULL);
	ASSERT_TRUE(strstr(out, "| latency | fault p50 |") != NULL);
	ASSERT_TRUE(strstr(out, "| walk | pages/s resolved, prefetch 16 |") != NULL);
	ASSERT_TRUE(strstr(out, "| walk | us per access, prefetch 0 |") != NULL);
	ASSERT_TRUE(strstr(out, "| uniform | pages/s resolved, prefetch 0 |") != NULL);
	check_json(json, "\"uniform\"");

	/* Each workload on its own, with its own options. */
	snprintf(cmd, sizeof(cmd), "%s bench latency %s --spin 20 ", cli, tiny);
	ASSERT_EQ(run(cmd), 0);
	ASSERT_TRUE(strstr(out, "| latency | fault p99 |") != NULL);
	snprintf(cmd, sizeof(cmd), "%s bench walk %s --prefetch 4 --seconds 5 ", cli, tiny);
	ASSERT_EQ(run(cmd), 0);
	ASSERT_TRUE(strstr(out, "| walk | pages/s resolved, prefetch 4 |") != NULL);
	/* Pages moved and their floor: a walk over 8M at 1M local must fetch pages. */
	ASSERT_TRUE(column(out, "| walk | pages in, prefetch 4 |", 3) > 0);
	ASSERT_TRUE(strstr(out, "| walk | pages out, prefetch 4 |") != NULL);
	ASSERT_TRUE(column(out, "| walk | time, prefetch 4 |", 4) > 0);

	snprintf(cmd, sizeof(cmd), "%s bench qsort --size 4M --ratios 1:2,1:4 --quiet --json %s ",
		 cli, json);
	ASSERT_EQ(run(cmd), 0);
	ASSERT_TRUE(strstr(out, "| qsort | sort time, local memory |") != NULL);
	ASSERT_TRUE(strstr(out, "| qsort | overhead, local 1:4 |") != NULL);
	ASSERT_TRUE(column(out, "| qsort | pages in, 1:4 |", 3) > 0);
	ASSERT_TRUE(column(out, "| qsort | pages out, 1:4 |", 3) > 0);
	ASSERT_TRUE(column(out, "| qsort | floor, 1:4 |", 3) > 0);
	check_json(json, "\"overhead, local 1:2\"");
	check_json(json, "\"floor, 1:2\"");

	/* Real programs under heca run, tiny, without the swap baseline: both rows, valid JSON.
	 * sort reads its input into sponsored memory, which takes a full userfaultfd (root). */
	if (geteuid() == 0) {
		snprintf(cmd, sizeof(cmd),
			 "%s bench programs --size 16M --runs 1 --ratios 1:2 --no-swap --quiet "
			 "--json %s ",
			 cli, json);
		ASSERT_EQ(run(cmd), 0);
		ASSERT_TRUE(strstr(out, "| python3 | 1:2 |") != NULL);
		ASSERT_TRUE(strstr(out, "| sort | 1:2 |") != NULL);
		check_json(json, "\"python3\"");

		/* A command of the user's: checked against its own first run, so one whose
		 * output changes from run to run is a failure, named. */
		snprintf(cmd, sizeof(cmd),
			 "%s bench programs --runs 1 --ratios 1:2 --no-swap --quiet --name zeros "
			 "--json %s -- python3 -c 'print(sum(bytearray(24 << 20)))' ",
			 cli, json);
		ASSERT_EQ(run(cmd), 0);
		ASSERT_TRUE(strstr(out, "| zeros | 1:2 |") != NULL);
		check_json(json, "\"command\"");
		snprintf(cmd, sizeof(cmd),
			 "%s bench programs --runs 1 --ratios 1:2 --no-swap --quiet -- "
			 "python3 -c 'import os; print(os.getpid())' ",
			 cli);
		ASSERT_TRUE(run(cmd) != 0);
		ASSERT_TRUE(strstr(out, "differs from the unconstrained run") != NULL);
		snprintf(cmd, sizeof(cmd), "%s bench programs --no-swap python3 ", cli);
		ASSERT_EQ(run(cmd), 2);

		/* Pages moved side by side: at 1:4 heca must have moved pages, and said so in
		 * the table (column 13: heca pages in) and the JSON; the raw rate was measured. */
		snprintf(cmd, sizeof(cmd),
			 "%s bench programs --size 16M --runs 1 --ratios 1:4 --no-swap --quiet "
			 "--workloads python3 --json %s ",
			 cli, json);
		ASSERT_EQ(run(cmd), 0);
		ASSERT_TRUE(strstr(out, "| heca pages in | heca pages out | swap pages in | swap "
					"pages out | heca floor | swap floor |") != NULL);
		ASSERT_TRUE(strstr(out, "raw pipelined page rate: ") != NULL);
		ASSERT_TRUE(column(out, "| python3 | 1:4 |", 13) > 0);
		check_json(json, "\"pages in, 1:4\"");

		/* --local cgroup: heca in the swap run's memory cgroup, swap off there; a run
		 * either ends with the right output and its pages, or is said to be OOM killed. */
		snprintf(cmd, sizeof(cmd),
			 "%s bench programs --size 32M --runs 1 --ratios 3:4 --local cgroup "
			 "--quiet --workloads python3 --json %s ",
			 cli, json);
		ASSERT_EQ(run(cmd), 0);
		ASSERT_TRUE(strstr(out, "kernel swap off") != NULL);
		ASSERT_TRUE(strstr(out, "| heca cgroup peak | swap cgroup peak |") != NULL);
		ASSERT_TRUE((strstr(out, "output ok; heca pages in") &&
			     strstr(out, "; cgroup peak ")) ||
			    strstr(out, "OOM KILLED"));
		check_json(json, "\"cgroup peak, 3:4\"");
	}

	/* The plot, where gnuplot is installed. */
	if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
		struct stat st;
		snprintf(png, sizeof(png), "%s.png", json);
		snprintf(cmd, sizeof(cmd),
			 "%s bench qsort --size 2M --ratios 3:4,1:3 --quiet --plot %s ", cli, png);
		ASSERT_EQ(run(cmd), 0);
		ASSERT_TRUE(stat(png, &st) == 0 && st.st_size > 0);
		unlink(png);
	} else {
		printf("gnuplot not installed: --plot not tested\n");
	}
	unlink(json);
	unlink(outfile);
	printf("test_bench: all passed\n");
	return 0;
}
