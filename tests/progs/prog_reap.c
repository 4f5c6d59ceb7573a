// SPDX-License-Identifier: MIT
/*
 * prog_reap.c - an ordinary program (it knows nothing of heca) whose forked child fills memory
 * and then dies without a word while the parent lives on: the child leaves by a raw
 * exit_group system call, is killed with SIGKILL, or execs a new image that fills memory of
 * its own and then leaves by exit_group. The parent checks its own memory afterwards.
 *
 *   prog_reap exit_group|sigkill|exec PARENT_MIB CHILD_MIB
 *
 * Lines on stdout say how far it got; lines on stdin say when to go on (a test measures the
 * sponsors in between): "parent filled" -> "go" -> "child filled PID" -> "end" ->
 * "child gone STATUS" -> "check" -> "parent OK" or "parent WRONG". Exit 0 if every word read
 * back was the one written.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define STEP (512 / 8) /* a word in every 512 bytes: every page, cheaply */

static uint64_t val(uint64_t i, uint64_t gen)
{
	uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ (gen * 0xbf58476d1ce4e5b9ull);
	return x ^ (x >> 31);
}

static uint64_t *fill(size_t mib, uint64_t gen)
{
	size_t n = mib << 20 >> 3;
	uint64_t *p = mmap(NULL, n * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	for (size_t i = 0; i < n; i += STEP)
		p[i] = val(i, gen);
	return p;
}

/* The number of wrong words; the first is printed. */
static size_t check(const char *who, const uint64_t *p, size_t mib, uint64_t gen)
{
	size_t n = mib << 20 >> 3, bad = 0;

	for (size_t i = 0; i < n; i += STEP)
		if (p[i] != val(i, gen) && !bad++)
			fprintf(stderr, "%s: word %zu is %#llx, want %#llx\n", who, i,
				(unsigned long long)p[i], (unsigned long long)val(i, gen));
	return bad;
}

static void say(const char *what, long v)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "%s %ld\n", what, v);

	if (write(1, line, (size_t)n) != n)
		exit(3);
}

static void await(const char *word)
{
	char line[64];

	if (!fgets(line, sizeof(line), stdin) || strncmp(line, word, strlen(word))) {
		fprintf(stderr, "prog_reap: expected '%s' on stdin\n", word);
		exit(3);
	}
}

static void xread(int fd)
{
	char c;
	if (read(fd, &c, 1) != 1)
		exit(3);
}

static void xwrite(int fd)
{
	if (write(fd, "x", 1) != 1)
		exit(3);
}

/* The child's part, in the child or in the image it execs; fds: to the parent, from it. */
static void child(const char *mode, size_t mib, int up, int down)
{
	uint64_t *c = fill(mib, 2);

	if (check("child", c, mib, 2)) /* read back: from the sponsors, mostly */
		syscall(SYS_exit_group, 1);
	xwrite(up);
	xread(down); /* "end" */
	if (!strcmp(mode, "exec") && check("exec'd image, later", c, mib, 2))
		syscall(SYS_exit_group, 1);
	if (!strcmp(mode, "sigkill"))
		pause(); /* the parent kills us */
	/* Behind every library's back: no destructor, no _exit(), nothing said to anyone. */
	syscall(SYS_exit_group, 0);
}

int main(int argc, char **argv)
{
	size_t pmib, cmib, bad;
	int up[2], down[2], status;
	const char *mode;
	uint64_t *p;
	pid_t pid;

	if (argc == 5 && !strcmp(argv[1], "--image")) {
		child("exec", strtoull(argv[2], NULL, 10), atoi(argv[3]), atoi(argv[4]));
		return 2;
	}
	if (argc != 4 || (strcmp(argv[1], "exit_group") && strcmp(argv[1], "sigkill") &&
			  strcmp(argv[1], "exec"))) {
		fprintf(stderr, "usage: prog_reap exit_group|sigkill|exec PARENT_MIB CHILD_MIB\n");
		return 2;
	}
	mode = argv[1];
	pmib = strtoull(argv[2], NULL, 10);
	cmib = strtoull(argv[3], NULL, 10);
	p = fill(pmib, 1);
	say("parent filled", (long)getpid());
	await("go");
	if (pipe(up) || pipe(down))
		return 2;
	pid = fork();
	if (pid < 0) {
		perror("fork");
		return 2;
	}
	if (pid == 0) {
		if (!strcmp(mode, "exec")) {
			char a[32], b[16], c[16];
			snprintf(a, sizeof(a), "%zu", cmib);
			snprintf(b, sizeof(b), "%d", up[1]);
			snprintf(c, sizeof(c), "%d", down[0]);
			execl("/proc/self/exe", argv[0], "--image", a, b, c, (char *)NULL);
			perror("exec");
			syscall(SYS_exit_group, 2);
		}
		child(mode, cmib, up[1], down[0]);
	}
	xread(up[0]);
	say("child filled", (long)pid);
	await("end");
	xwrite(down[1]);
	if (!strcmp(mode, "sigkill"))
		kill(pid, SIGKILL);
	/* Reaped here, by its own parent: heca run never sees it end. */
	if (waitpid(pid, &status, 0) != pid)
		return 2;
	say("child gone", (long)status);
	await("check");
	bad = check("parent", p, pmib, 1);
	say(bad ? "parent WRONG" : "parent OK", (long)bad);
	return bad ? 1 : 0;
}
