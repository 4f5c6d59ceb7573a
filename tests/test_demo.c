// SPDX-License-Identifier: MIT
/*
 * test_demo.c - `heca demo` end to end as a user runs it: it starts its own sponsors, verifies
 * every page and says so; bad flags and unreachable sponsors give a clear error and exit != 0.
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

int main(void)
{
	const char *cli = getenv("HECA_CLI") ? getenv("HECA_CLI") : "./heca";
	static char out[65536];
	char cmd[1024];
	int rc;

	t_require_uffd();
	snprintf(cmd, sizeof(cmd), "%s demo --size 48M --local 6M --threads 4 2>&1", cli);
	rc = run(cmd, out, sizeof(out));
	printf("%s", out);
	ASSERT_EQ(rc, 0);
	ASSERT_TRUE(strstr(out, "verified: OK") != NULL);
	ASSERT_TRUE(strstr(out, "written back") != NULL);
	ASSERT_TRUE(strstr(out, "p99") != NULL);

	snprintf(cmd, sizeof(cmd), "%s demo --bogus 2>&1", cli);
	ASSERT_EQ(run(cmd, out, sizeof(out)), 2);
	ASSERT_TRUE(strstr(out, "usage") != NULL);
	snprintf(cmd, sizeof(cmd), "%s demo --size nonsense 2>&1", cli);
	ASSERT_EQ(run(cmd, out, sizeof(out)), 2);
	snprintf(cmd, sizeof(cmd), "%s demo --sponsors 127.0.0.1:1 --size 1M 2>&1", cli);
	rc = run(cmd, out, sizeof(out));
	printf("%s", out);
	ASSERT_TRUE(rc != 0);
	ASSERT_TRUE(strstr(out, "127.0.0.1:1") != NULL);
	snprintf(cmd, sizeof(cmd), "%s frobnicate 2>&1", cli);
	ASSERT_EQ(run(cmd, out, sizeof(out)), 2);
	printf("test_demo: all passed\n");
	return 0;
}
