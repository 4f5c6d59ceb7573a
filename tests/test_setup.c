// SPDX-License-Identifier: MIT
/*
 * test_setup.c - what heca_open() does with its environment: the budget derived from the
 * memory cgroup limit (v1 or v2), a refusal where no limit is set, and a clear error when a
 * seccomp filter forbids userfaultfd.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdbool.h>
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

/* Make a fresh memory cgroup, limited to limit bytes (NULL: no limit, the default of a new
 * one), and join it. Returns dir, or NULL if this machine cannot do it. */
static const char *join_cgroup(char *dir, size_t len, const char *limit)
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
	if (limit && write_file(path, limit)) {
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

/* Reap a case run in child pid (joining a cgroup must not outlive it) and remove the cgroup
 * it may have made. Returns T_PASS or T_SKIP; a failed case fails the test. */
static int wait_case(pid_t pid, const char *name)
{
	char dir[256];
	int st;

	ASSERT_TRUE(pid > 0);
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	snprintf(dir, sizeof(dir), "/sys/fs/cgroup/memory/heca-test-%d", pid);
	rmdir(dir);
	snprintf(dir, sizeof(dir), "/sys/fs/cgroup/heca-test-%d", pid);
	rmdir(dir);
	if (WIFEXITED(st) && WEXITSTATUS(st) == T_SKIP)
		return T_SKIP;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		T_FAILF("case '%s' failed (wait status %#x)", name, st);
	return T_PASS;
}

/* 256 MiB at 50%: exactly 32768 pages, not a page less for rounding. */
static int test_cgroup_budget(void)
{
	pid_t pid = fork();

	if (pid == 0) {
		struct heca_options o;
		struct heca_stats s;
		struct heca *h = NULL;
		char dir[256];
		int rc;

		if (!join_cgroup(dir, sizeof(dir), "268435456")) {
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
		rc = heca_get_stats(h, &s);
		heca_close(h);
		ASSERT_EQ(rc, 0);
		printf("  cgroup budget: limit 256 MiB, 50%% -> %llu pages\n",
		       (unsigned long long)s.budget_pages);
		ASSERT_EQ(s.budget_pages, 128ull * 1024 * 1024 / 4096);
		_exit(T_PASS);
	}
	return wait_case(pid, "cgroup budget");
}

/* A budget from the cgroup where no limit is set: heca_open() refuses with -ENOENT and says
 * why. Run in a fresh cgroup without a limit; where none can be made, in the test's own
 * cgroup, which may have a limit (then nothing can be checked: a skip). */
static int test_no_cgroup_limit(void)
{
	pid_t pid = fork();

	if (pid == 0) {
		struct heca_options o;
		struct heca *h = NULL;
		char dir[256];
		bool fresh = join_cgroup(dir, sizeof(dir), NULL) != NULL;
		int rc;

		heca_options_init(&o);
		o.sponsors = "mem";
		o.flags = HECA_OPT_BUDGET_CGROUP;
		rc = heca_open(&o, &h);
		if (rc == 0 && !fresh) {
			printf("  no limit: this process has a memory limit and no cgroup "
			       "without one can be made here, skipped\n");
			heca_close(h);
			_exit(T_SKIP);
		}
		printf("  no limit (%s cgroup): heca_open -> %s: %s\n", fresh ? "a new" : "this",
		       rc ? strerror(-rc) : "0", heca_last_error());
		ASSERT_EQ(rc, -ENOENT);
		ASSERT_TRUE(strstr(heca_last_error(), "no memory cgroup limit") != NULL);
		_exit(T_PASS);
	}
	return wait_case(pid, "no limit");
}

/* userfaultfd forbidden by a seccomp filter: -EPERM, and the message names seccomp. */
static int test_seccomp_denied(void)
{
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
		    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
			printf("  seccomp: cannot install a filter here (%s), skipped\n",
			       strerror(errno));
			_exit(T_SKIP);
		}
		heca_options_init(&o);
		o.sponsors = "mem";
		rc = heca_open(&o, &h);
		printf("  seccomp: heca_open -> %s: %s\n", heca_strerror(rc), heca_last_error());
		ASSERT_EQ(rc, -EPERM);
		ASSERT_TRUE(strstr(heca_last_error(), "seccomp") != NULL);
		_exit(T_PASS);
	}
	return wait_case(pid, "seccomp");
}

int main(void)
{
	int skipped = 0;

	t_require_uffd();
	setvbuf(stdout, NULL, _IONBF, 0);
	/* A case this machine cannot run makes the test a skip, so that it shows. */
	skipped += test_seccomp_denied() == T_SKIP;
	skipped += test_no_cgroup_limit() == T_SKIP;
	skipped += test_cgroup_budget() == T_SKIP;
	if (skipped) {
		printf("test_setup: %d of 3 cases skipped, the others passed\n", skipped);
		return T_SKIP;
	}
	printf("test_setup: all passed\n");
	return 0;
}
