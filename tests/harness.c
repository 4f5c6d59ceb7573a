// SPDX-License-Identifier: MIT
/*
 * harness.c - starting real sponsors for tests, and small shared checks.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

static uint64_t t_pat(uint64_t page, uint64_t ver, uint64_t k)
{
	uint64_t x = (page << 32) ^ (ver * 0x9e3779b97f4a7c15ull) ^ (k * 0xff51afd7ed558ccdull);
	return x ^ (x >> 29);
}

void t_fill_pages(uint8_t *p, uint64_t from, uint64_t to, uint64_t ver)
{
	for (uint64_t i = from; i < to; i++)
		for (uint64_t k = 0; k < 4096 / 8; k += 8)
			((uint64_t *)(p + i * 4096))[k] = t_pat(i, ver, k);
}

uint64_t t_check_pages(const uint8_t *p, uint64_t from, uint64_t to, uint64_t ver)
{
	uint64_t bad = 0;

	for (uint64_t i = from; i < to; i++)
		for (uint64_t k = 0; k < 4096 / 8; k += 8)
			if (((const uint64_t *)(p + i * 4096))[k] != t_pat(i, ver, k)) {
				if (bad++ < 5)
					fprintf(stderr, "  page %llu word %llu wrong\n",
						(unsigned long long)i, (unsigned long long)k);
				break;
			}
	return bad;
}

double t_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void t_sponsor_start(struct t_sponsor *s, const char *capacity, const char *const *extra)
{
	const char *bin = getenv("HECAD") ? getenv("HECAD") : "./hecad";
	const char *argv[32];
	int n = 0, pfd[2];
	char line[256];
	FILE *f;

	argv[n++] = bin;
	argv[n++] = "--listen";
	argv[n++] = "127.0.0.1:0";
	argv[n++] = "--capacity";
	argv[n++] = capacity;
	for (int i = 0; extra && extra[i] && n < 30; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	if (pipe2(pfd, O_CLOEXEC))
		T_FAILF("pipe: %s", strerror(errno));
	s->pid = fork();
	if (s->pid < 0)
		T_FAILF("fork: %s", strerror(errno));
	if (s->pid == 0) {
		/* A test that dies must not leave its sponsor behind. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(pfd[1], 1);
		execv(bin, (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
	f = fdopen(pfd[0], "r");
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "listening on %63s", s->addr) == 1) {
			/* Keep reading (and discarding) stdout in the background is not needed:
			 * hecad prints nothing more to stdout. */
			fclose(f);
			return;
		}
	}
	fclose(f);
	T_FAILF("hecad did not print 'listening on'");
}

int t_sponsor_stop(struct t_sponsor *s, int kill9)
{
	int st = 0;
	if (s->pid <= 0)
		return 0;
	kill(s->pid, kill9 ? SIGKILL : SIGTERM);
	while (waitpid(s->pid, &st, 0) < 0 && errno == EINTR)
		;
	s->pid = 0;
	return st;
}

void t_sponsor_pause(struct t_sponsor *s)
{
	int st = 0;
	pid_t r;

	kill(s->pid, SIGSTOP);
	/* The parent hears of a stop once the whole group has stopped. */
	while ((r = waitpid(s->pid, &st, WUNTRACED)) < 0 && errno == EINTR)
		;
	if (r != s->pid || !WIFSTOPPED(st))
		T_FAILF("sponsor %d did not stop (status %#x)", (int)s->pid, st);
}

void t_require_uffd(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api api = {.api = UFFD_API};
	if (fd < 0) {
		printf("SKIP: userfaultfd unavailable: %s\n", strerror(errno));
		exit(T_SKIP);
	}
	if (ioctl(fd, UFFDIO_API, &api)) {
		printf("SKIP: UFFDIO_API: %s\n", strerror(errno));
		exit(T_SKIP);
	}
	close(fd);
}

int t_run_hecad(const char *const *args)
{
	const char *bin = getenv("HECAD") ? getenv("HECAD") : "./hecad";
	const char *argv[16];
	int n = 0, st;
	pid_t pid;

	argv[n++] = bin;
	for (int i = 0; args[i] && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	pid = fork();
	if (pid == 0) {
		int dn = open("/dev/null", O_WRONLY);
		dup2(dn, 1);
		dup2(dn, 2);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}
