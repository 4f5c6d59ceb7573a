// SPDX-License-Identifier: MIT
/*
 * test_setup.c - what heca_open() does with its environment: the budget derived from the
 * memory cgroup limit (v1 or v2), and a clear error when a seccomp filter forbids userfaultfd.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "heca.h"

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), rc = 0;
	if (fd < 0)
		return -errno;
	if (write(fd, s, strlen(s)) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

/* Returns the cgroup directory made (and joined), or NULL if this machine cannot do it. */
static const char *join_limited_cgroup(char *dir, size_t len, const char *limit)
{
	char path[512], pid[32];
	struct stat st;

	snprintf(pid, sizeof(pid), "%d", getpid());
	if (stat("/sys/fs/cgroup/memory/memory.limit_in_bytes", &st) == 0) {
		snprintf(dir, len, "/sys/fs/cgroup/memory/heca-test-%d", getpid());
		if (mkdir(dir, 0755))
			return NULL;
		snprintf(path, sizeof(path), "%s/memory.limit_in_bytes", dir);
	} else if (stat("/sys/fs/cgroup/cgroup.controllers", &st) == 0) {
		snprintf(dir, len, "/sys/fs/cgroup/heca-test-%d", getpid());
		if (mkdir(dir, 0755))
			return NULL;
		snprintf(path, sizeof(path), "%s/memory.max", dir);
	} else {
		return NULL;
	}
	if (write_file(path, limit)) {
		rmdir(dir);
		return NULL;
	}
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	if (write_file(path, pid)) {
		rmdir(dir);
		return NULL;
	}
	return dir;
}

static void test_cgroup_budget(void)
{
	char dir[256];
	int st;
	pid_t pid = fork();

	/* In a child: joining a cgroup must not outlive the test. */
	if (pid == 0) {
		struct heca_options o;
		struct heca_stats s;
		struct heca *h;
		int rc;

		if (!join_limited_cgroup(dir, sizeof(dir), "268435456")) {
			printf("  cgroup budget: cannot make a memory cgroup here, skipped\n");
			_exit(T_SKIP);
		}
		heca_options_init(&o);
		o.sponsors = "mem";
		o.flags = HECA_OPT_BUDGET_CGROUP;
		o.budget_cgroup_pct = 50;
		rc = heca_open(&o, &h);
		if (rc) {
			fprintf(stderr, "heca_open: %s (%s)\n", heca_strerror(rc), heca_last_error());
			_exit(T_FAIL);
		}
		heca_get_stats(h, &s);
		heca_close(h);
		printf("  cgroup budget: limit 256 MiB, 50%% -> %llu pages\n",
		       (unsigned long long)s.budget_pages);
		_exit(s.budget_pages == 128ull * 1024 * 1024 / 4096 ? 0 : T_FAIL);
	}
	ASSERT_TRUE(pid > 0);
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	snprintf(dir, sizeof(dir), "/sys/fs/cgroup/memory/heca-test-%d", pid);
	rmdir(dir);
	snprintf(dir, sizeof(dir), "/sys/fs/cgroup/heca-test-%d", pid);
	rmdir(dir);
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_TRUE(WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == T_SKIP);
}

static void test_no_cgroup_limit(void)
{
	struct heca_options o;
	struct heca *h = NULL;
	int rc;

	/* The test runs in an unlimited cgroup (the root one, usually): a clear refusal. */
	heca_options_init(&o);
	o.sponsors = "mem";
	o.flags = HECA_OPT_BUDGET_CGROUP;
	rc = heca_open(&o, &h);
	if (rc == 0) {
		printf("  this process has a memory limit already; refusal not checked\n");
		heca_close(h);
		return;
	}
	ASSERT_TRUE(strstr(heca_last_error(), "cgroup") != NULL);
	printf("  no limit: %s\n", heca_last_error());
}

static void test_seccomp_denied(void)
{
	int st;
	pid_t pid = fork();

	if (pid == 0) {
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_userfaultfd, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = {.len = (unsigned short)(sizeof(f) / sizeof(f[0])), .filter = f};
		struct heca_options o;
		struct heca *h = NULL;
		int rc;

		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
		    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
			_exit(T_SKIP);
		heca_options_init(&o);
		o.sponsors = "mem";
		rc = heca_open(&o, &h);
		printf("  seccomp: heca_open -> %s: %s\n", heca_strerror(rc), heca_last_error());
		_exit(rc == -EPERM && strstr(heca_last_error(), "seccomp") ? 0 : T_FAIL);
	}
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void)
{
	t_require_uffd();
	setvbuf(stdout, NULL, _IONBF, 0);
	test_seccomp_denied();
	test_no_cgroup_limit();
	test_cgroup_budget();
	printf("test_setup: all passed\n");
	return 0;
}
