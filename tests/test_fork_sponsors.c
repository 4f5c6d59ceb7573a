// SPDX-License-Identifier: MIT
/*
 * test_fork_sponsors.c - fork of sponsored memory striped over three sponsors, again and
 * again, one of them stopped for a while during some of the forks. Parent and child must
 * see the memory of the fork instant page by page, neither the other's later writes, and
 * the fork must start no thread: the CLONE requests are sent and answered by the forking
 * thread alone (a watcher counts /proc/self/task while the forks run).
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "heca.h"

#define PG 4096
#define NPAGES 1024
#define FORKS 12
#define NSP 3

static atomic_int stop_watch, in_fork, max_tasks;
static atomic_int slow_pid;

static int count_tasks(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Counts the threads while a fork is under way; resumes a stopped sponsor after 300 ms. */
static void *watch_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop_watch)) {
		int pid = atomic_load(&slow_pid);
		if (atomic_load(&in_fork)) {
			int n = count_tasks();
			if (n > atomic_load(&max_tasks))
				atomic_store(&max_tasks, n);
		}
		if (pid > 0) {
			usleep(300000);
			kill(pid, SIGCONT);
			atomic_store(&slow_pid, 0);
		}
		usleep(200);
	}
	return NULL;
}

int main(void)
{
	struct t_sponsor sp[NSP];
	char addrs[NSP * 64 + NSP];
	struct heca_options o;
	struct heca *h;
	pthread_t wt;
	uint8_t *p;
	int rc, base;

	t_require_uffd();
	addrs[0] = 0;
	for (int i = 0; i < NSP; i++) {
		t_sponsor_start(&sp[i], "256M", NULL);
		if (i)
			strcat(addrs, ",");
		strcat(addrs, sp[i].addr);
	}
	heca_options_init(&o);
	o.sponsors = addrs;
	o.local_budget = 64 * PG;
	o.replicas = 1;
	rc = heca_open(&o, &h);
	if (rc)
		T_FAILF("heca_open: %s %s", heca_strerror(rc), heca_last_error());
	rc = heca_map(h, NPAGES * PG, (void **)&p);
	if (rc)
		T_FAILF("heca_map: %s %s", heca_strerror(rc), heca_last_error());
	pthread_create(&wt, NULL, watch_main, NULL);
	usleep(10000);

	for (int f = 0; f < FORKS; f++) {
		uint64_t ver = (uint64_t)f + 1, bad;
		pid_t pid;
		int status;

		t_fill_pages(p, 0, NPAGES, ver);
		if (f % 3 == 2) /* a sponsor that stops answering mid-way, then goes on */
			t_sponsor_pause(&sp[f % NSP]);
		base = count_tasks();
		atomic_store(&max_tasks, base);
		if (f % 3 == 2)
			atomic_store(&slow_pid, sp[f % NSP].pid);
		atomic_store(&in_fork, 1);
		pid = heca_fork(h);
		if (pid == 0) {
			bad = t_check_pages(p, 0, NPAGES, ver);
			if (bad) {
				fprintf(stderr, "child %d: %llu pages wrong\n", f,
					(unsigned long long)bad);
				_exit(1);
			}
			t_fill_pages(p, 0, NPAGES, ver + 1000);
			bad = t_check_pages(p, 0, NPAGES, ver + 1000);
			_exit(bad ? 2 : 0);
		}
		atomic_store(&in_fork, 0);
		if (pid < 0)
			T_FAILF("fork %d: heca_fork: %s %s", f, heca_strerror(pid == -1 ? -errno : pid),
				heca_last_error());
		if (atomic_load(&max_tasks) > base)
			T_FAILF("fork %d: %d threads during the fork, %d before: a thread was "
				"started", f, atomic_load(&max_tasks), base);
		ASSERT_EQ(count_tasks(), base);
		if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
			T_FAILF("fork %d: the child failed (status %#x)", f, status);
		bad = t_check_pages(p, 0, NPAGES, ver);
		if (bad)
			T_FAILF("fork %d: %llu pages of the parent wrong", f, (unsigned long long)bad);
		while (atomic_load(&slow_pid))
			usleep(1000);
	}
	atomic_store(&stop_watch, 1);
	pthread_join(wt, NULL);
	heca_close(h);
	for (int i = 0; i < NSP; i++)
		t_sponsor_stop(&sp[i], 0);
	fprintf(stderr, "%d forks over %d sponsors, no thread started\n", FORKS, NSP);
	return T_PASS;
}
