// SPDX-License-Identifier: MIT
/*
 * prog_fork.c - an ordinary program (it knows nothing of heca) that forks after filling its
 * memory: parent and child then write different values and each checks that it sees exactly
 * its own. Run under `heca run` with a small budget, its big blocks are sponsored. With
 * --exec the child also execs this program again (`prog_fork --check N`), which must work
 * under the same heca run.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t val(uint64_t i, uint64_t gen)
{
	uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ (gen * 0xbf58476d1ce4e5b9ull);
	return x ^ (x >> 31);
}

static void fill(uint64_t *p, size_t n, uint64_t gen, size_t step)
{
	for (size_t i = 0; i < n; i += step)
		p[i] = val(i, gen);
}

/* Returns the number of wrong words; prints the first. */
static size_t check(const char *who, const uint64_t *p, size_t n, uint64_t gen, size_t step)
{
	size_t bad = 0;
	for (size_t i = 0; i < n; i += step)
		if (p[i] != val(i, gen)) {
			if (!bad)
				fprintf(stderr, "%s: word %zu is %#llx, want %#llx (generation %llu)\n",
					who, i, (unsigned long long)p[i],
					(unsigned long long)val(i, gen), (unsigned long long)gen);
			bad++;
		}
	return bad;
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

int main(int argc, char **argv)
{
	size_t mib = 96, n, step = 512 / 8; /* a word in every 512 bytes: every page, cheaply */
	int do_exec = 0, p2c[2], c2p[2], status;
	uint64_t *a, *b;
	size_t bad = 0;
	pid_t pid;

	if (argc == 3 && !strcmp(argv[1], "--check")) {
		/* After exec: a fresh program image, memory of its own. */
		n = strtoull(argv[2], NULL, 10) << 20 >> 3;
		a = malloc(n * 8);
		if (!a)
			return 2;
		fill(a, n, 7, step);
		bad = check("exec", a, n, 7, step);
		printf("exec: %s\n", bad ? "WRONG" : "OK");
		return bad ? 1 : 0;
	}
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--exec"))
			do_exec = 1;
		else
			mib = strtoull(argv[i], NULL, 10);
	}
	n = mib << 20 >> 3;
	a = malloc(n * 8); /* glibc's malloc: sponsored through the allocator */
	b = mmap(NULL, n * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!a || b == MAP_FAILED)
		return 2;
	fill(a, n, 1, step);
	fill(b, n, 2, step);
	if (pipe(p2c) || pipe(c2p))
		return 2;
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		return 2;
	}
	if (pid == 0) {
		/* Wait until the parent has overwritten everything: none of it may show here. */
		xread(p2c[0]);
		bad += check("child, before its writes", a, n, 1, step);
		bad += check("child, before its writes", b, n, 2, step);
		fill(a, n, 3, step);
		fill(b, n, 4, step);
		bad += check("child, after its writes", a, n, 3, step);
		bad += check("child, after its writes", b, n, 4, step);
		xwrite(c2p[1]);
		if (do_exec && !bad) {
			char arg[32];
			snprintf(arg, sizeof(arg), "%zu", mib);
			fflush(stdout);
			execl("/proc/self/exe", argv[0], "--check", arg, (char *)NULL);
			perror("exec");
			_exit(2);
		}
		printf("child: %s\n", bad ? "WRONG" : "OK");
		fflush(stdout);
		_exit(bad ? 1 : 0);
	}
	fill(a, n, 5, step);
	fill(b, n, 6, step);
	xwrite(p2c[1]);
	xread(c2p[0]); /* the child has written its own values meanwhile */
	bad += check("parent", a, n, 5, step);
	bad += check("parent", b, n, 6, step);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "parent: the child failed (status %#x)\n", status);
		bad++;
	}
	/* A second fork from the same parent, after the first child is gone. */
	pid = fork();
	if (pid == 0)
		_exit(check("second child", a, n, 5, step) ? 1 : 0);
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status)) {
		fprintf(stderr, "parent: the second child failed\n");
		bad++;
	}
	printf("parent: %s\n", bad ? "WRONG" : "OK");
	free(a);
	munmap(b, n * 8);
	return bad ? 1 : 0;
}
