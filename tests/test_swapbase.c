// SPDX-License-Identifier: MIT
/*
 * test_swapbase.c - the kernel-swap baseline as root: a sort under a cgroup limit swaps to a new
 * zram device, the OOM case is reported, and teardown or crash cleanup leave the machine as found.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../bench/qsort_work.h"
#include "../bench/swapbase.h"
#include "harness.h"

#define MiB (1024ull * 1024)

static char *slurp(const char *path)
{
	static char bufs[4][16384];
	static int next;
	char *b = bufs[next++ % 4];
	FILE *f = fopen(path, "re");
	size_t n = 0;

	b[0] = '\0';
	if (f) {
		n = fread(b, 1, sizeof(bufs[0]) - 1, f);
		fclose(f);
	}
	b[n] = '\0';
	return b;
}

/* Names in /sys/block, newline-separated and sorted, to compare before and after. */
static void list_block(char *out, size_t len)
{
	struct dirent **ents;
	int n = scandir("/sys/block", &ents, NULL, alphasort);
	size_t used = 0;

	out[0] = '\0';
	for (int i = 0; i < n; i++) {
		if (ents[i]->d_name[0] != '.')
			used += (size_t)snprintf(out + used, used < len ? len - used : 0, "%s\n",
						 ents[i]->d_name);
		free(ents[i]);
	}
	if (n >= 0)
		free(ents);
}

static int exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static int swaps_list(const char *dev)
{
	char *s = slurp("/proc/swaps");
	size_t l = strlen(dev);
	for (char *p = strstr(s, dev); p; p = strstr(p + 1, dev))
		if ((p == s || p[-1] == '\n') && (p[l] == ' ' || p[l] == '\t'))
			return 1;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct sort_job {
	size_t bytes;
	int notify_fd; /* >= 0: write a byte once the keys are in place, then wait forever */
};

/* The workload, run in the child inside the cgroup. */
static int sort_fn(void *arg)
{
	struct sort_job *j = arg;
	size_t n = j->bytes / sizeof(uint64_t);
	uint64_t *k, sum;
	double t;
	int rc;

	k = mmap(NULL, j->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (k == MAP_FAILED)
		return -errno;
	t = now_s();
	qw_fill(k, n, 42, 2, &sum);
	swapbase_phase("fill", now_s() - t);
	if (j->notify_fd >= 0) {
		if (write(j->notify_fd, "R", 1) != 1)
			return -EIO;
		for (;;)
			pause();
	}
	t = now_s();
	rc = qw_sort(k, n, 2);
	swapbase_phase("sort", now_s() - t);
	if (rc == 0) {
		t = now_s();
		rc = qw_verify(k, n, sum, 2);
		swapbase_phase("verify", now_s() - t);
	}
	munmap(k, j->bytes);
	return rc;
}

static void skip_unless_possible(void)
{
	if (geteuid() != 0) {
		printf("SKIP: kernel swap baseline needs root\n");
		exit(T_SKIP);
	}
	if (!exists("/sys/class/zram-control/hot_add")) {
		printf("SKIP: no zram hot_add in this kernel\n");
		exit(T_SKIP);
	}
}

static void case_run_and_teardown(void)
{
	static char blk_before[8192], blk_after[8192], swaps_before[16384], path[512];
	struct swapbase sb;
	struct sort_job job = {.bytes = 48 * MiB, .notify_fd = -1};
	char err[256];
	double secs = 0;
	int rc;

	list_block(blk_before, sizeof(blk_before));
	snprintf(swaps_before, sizeof(swaps_before), "%s", slurp("/proc/swaps"));

	/* Swap with room to spare: under AddressSanitizer the job's memory is more than its 48
	 * MiB (shadow, quarantine), and 64 MiB was seen to be too little for it. */
	rc = swapbase_setup(&sb, 160 * MiB, NULL, err, sizeof(err));
	if (rc == -ENODEV) {
		printf("SKIP: %s\n", err);
		exit(T_SKIP);
	}
	if (rc)
		T_FAILF("setup: %d %s", rc, err);
	ASSERT_TRUE(sb.zram_id >= 0);
	ASSERT_TRUE(swaps_list(sb.swap_dev));
	snprintf(path, sizeof(path), "/sys/block/zram%d", sb.zram_id);
	ASSERT_TRUE(exists(path));
	ASSERT_TRUE(exists(sb.cg_dir));
	ASSERT_TRUE(exists(SWAPBASE_STATE_FILE));
	/* A second setup in the same process is refused, not stacked. */
	{
		struct swapbase other;
		ASSERT_EQ(swapbase_setup(&other, 64 * MiB, NULL, err, sizeof(err)), -EBUSY);
	}

	rc = swapbase_run(&sb, 24 * MiB, sort_fn, &job, &secs, err, sizeof(err));
	if (rc)
		T_FAILF("run: %d %s", rc, err);
	printf("48 MiB sort under 24 MiB: %.2f s (", secs);
	for (unsigned i = 0; i < sb.last.nphases; i++)
		printf("%s%s %.2f s", i ? ", " : "", sb.last.phase[i].name,
		       sb.last.phase[i].seconds);
	printf("), peak mem %llu MiB, peak swap %llu MiB, zram peak %llu MiB\n",
	       (unsigned long long)(sb.last.peak_mem_bytes / MiB),
	       (unsigned long long)(sb.last.peak_swap_bytes / MiB),
	       (unsigned long long)(sb.last.zram_peak_bytes / MiB));
	ASSERT_EQ(sb.last.rc, 0);
	ASSERT_EQ(sb.last.nphases, 3);
	ASSERT_TRUE(secs > 0);
	/* 48 MiB of keys cannot fit under 24 MiB: the child must have swapped. */
	ASSERT_TRUE(sb.last.zram_peak_bytes >= 8 * MiB || sb.last.peak_swap_bytes >= 8 * MiB);
	ASSERT_TRUE(sb.last.peak_mem_bytes == 0 || sb.last.peak_mem_bytes <= 25 * MiB);
	ASSERT_EQ(sb.last.oom_killed, 0);

	/* More than limit + swap (random keys do not compress): an OOM kill, reported as such. */
	job.bytes = 256 * MiB;
	rc = swapbase_run(&sb, 8 * MiB, sort_fn, &job, &secs, err, sizeof(err));
	printf("256 MiB under 8 MiB + 160 MiB swap: %d (%s)\n", rc, err);
	ASSERT_EQ(rc, -ENOMEM);
	ASSERT_EQ(sb.last.oom_killed, 1);
	ASSERT_TRUE(strstr(err, "OOM") != NULL);

	/* The cgroup is still usable after an OOM kill. */
	job.bytes = 16 * MiB;
	rc = swapbase_run(&sb, 24 * MiB, sort_fn, &job, &secs, err, sizeof(err));
	if (rc)
		T_FAILF("run after OOM: %d %s", rc, err);

	int id = sb.zram_id;
	char dev[256], cg[256];
	snprintf(dev, sizeof(dev), "%s", sb.swap_dev);
	snprintf(cg, sizeof(cg), "%s", sb.cg_dir);
	swapbase_teardown(&sb);
	swapbase_teardown(&sb); /* idempotent */
	ASSERT_TRUE(!swaps_list(dev));
	snprintf(path, sizeof(path), "/sys/block/zram%d", id);
	ASSERT_TRUE(!exists(path));
	ASSERT_TRUE(!exists(cg));
	ASSERT_TRUE(!exists(SWAPBASE_STATE_FILE));
	list_block(blk_after, sizeof(blk_after));
	ASSERT_TRUE(strcmp(blk_before, blk_after) == 0);
	ASSERT_TRUE(strcmp(swaps_before, slurp("/proc/swaps")) == 0);

	/* Run after teardown is refused. */
	ASSERT_EQ(swapbase_run(&sb, 24 * MiB, sort_fn, &job, &secs, err, sizeof(err)), -EINVAL);
}

/* A process sets up and is SIGKILLed while its workload runs: nothing of it is undone until
 * swapbase_cleanup_stale(), which must kill the orphaned workload and undo everything. */
static void case_crash_cleanup(void)
{
	static char blk_before[8192], blk_after[8192], swaps_before[16384], path[512];
	int ready[2], zram = -1;
	char c, err[256], cg[256] = "", *s, *p;
	pid_t pid;
	int st;

	list_block(blk_before, sizeof(blk_before));
	snprintf(swaps_before, sizeof(swaps_before), "%s", slurp("/proc/swaps"));
	ASSERT_EQ(swapbase_cleanup_stale(err, sizeof(err)), 0);
	ASSERT_EQ(pipe(ready), 0);

	pid = fork();
	ASSERT_TRUE(pid >= 0);
	if (pid == 0) {
		struct swapbase sb;
		struct sort_job job = {.bytes = 32 * MiB, .notify_fd = ready[1]};
		close(ready[0]);
		if (swapbase_setup(&sb, 64 * MiB, NULL, err, sizeof(err)) != 0) {
			fprintf(stderr, "crash child: setup: %s\n", err);
			_exit(1);
		}
		swapbase_run(&sb, 16 * MiB, sort_fn, &job, NULL, err, sizeof(err));
		_exit(1); /* not reached: the workload waits for ever */
	}
	close(ready[1]);
	ASSERT_EQ(read(ready[0], &c, 1), 1);
	close(ready[0]);

	/* While the recording process lives, its resources are not stale. */
	ASSERT_EQ(swapbase_cleanup_stale(err, sizeof(err)), -EBUSY);

	kill(pid, SIGKILL);
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	ASSERT_TRUE(WIFSIGNALED(st));

	s = slurp(SWAPBASE_STATE_FILE);
	ASSERT_TRUE(s[0] != '\0');
	p = strstr(s, "\nzram ");
	ASSERT_TRUE(p != NULL);
	zram = atoi(p + 6);
	p = strstr(s, "\ncgdir ");
	ASSERT_TRUE(p != NULL);
	sscanf(p + 7, "%255[^\n]", cg);
	snprintf(path, sizeof(path), "/sys/block/zram%d", zram);
	ASSERT_TRUE(zram >= 0 && exists(path));
	ASSERT_TRUE(exists(cg));
	ASSERT_TRUE(strcmp(swaps_before, slurp("/proc/swaps")) != 0);

	ASSERT_EQ(swapbase_cleanup_stale(err, sizeof(err)), 1);
	ASSERT_TRUE(!exists(path));
	ASSERT_TRUE(!exists(cg));
	ASSERT_TRUE(!exists(SWAPBASE_STATE_FILE));
	list_block(blk_after, sizeof(blk_after));
	ASSERT_TRUE(strcmp(blk_before, blk_after) == 0);
	ASSERT_TRUE(strcmp(swaps_before, slurp("/proc/swaps")) == 0);
	ASSERT_EQ(swapbase_cleanup_stale(err, sizeof(err)), 0);
}

int main(void)
{
	char err[256];
	int rc;

	setvbuf(stdout, NULL, _IONBF, 0);
	skip_unless_possible();
	/* A leftover of an earlier crashed test run must not fail this one. */
	rc = swapbase_cleanup_stale(err, sizeof(err));
	if (rc == -EBUSY) {
		/* One baseline per machine: a live `heca bench` owns the state file. */
		printf("SKIP: %s\n", err);
		return T_SKIP;
	}
	if (rc < 0)
		T_FAILF("stale state: %s", err);
	case_run_and_teardown();
	case_crash_cleanup();
	printf("test_swapbase: ok\n");
	return T_PASS;
}
