// SPDX-License-Identifier: MIT
/*
 * spawn.c - starting memory sponsors on loopback for commands run without --sponsors, and
 * the shared printing helpers of the heca tool.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

static void hecad_path(char *out, size_t len)
{
	char self[PATH_MAX];
	ssize_t n;

	if (getenv("HECAD")) {
		snprintf(out, len, "%s", getenv("HECAD"));
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		snprintf(out, len, "%s/hecad", dirname(self));
		if (access(out, X_OK) == 0)
			return;
	}
	snprintf(out, len, "hecad");
}

int cli_spawn_sponsors(struct spawned *sp, int n, const char *capacity, int quiet)
{
	char bin[PATH_MAX];

	hecad_path(bin, sizeof(bin));
	memset(sp, 0, sizeof(*sp));
	if (n > CLI_MAX_SPAWN)
		n = CLI_MAX_SPAWN;
	for (int i = 0; i < n; i++) {
		int pfd[2];
		char line[256];
		FILE *f;
		pid_t pid;

		if (pipe2(pfd, O_CLOEXEC))
			return -errno;
		pid = fork();
		if (pid < 0)
			return -errno;
		if (pid == 0) {
			/* Sponsors started for a command end with it, even if it crashes, and only
			 * then: a signal sent to the whole process group (Ctrl-C at a terminal,
			 * `timeout`) must not stop them under a program that is still running
			 * and still needs its pages. heca stops them itself. */
			prctl(PR_SET_PDEATHSIG, SIGTERM);
			setpgid(0, 0);
			dup2(pfd[1], 1);
			if (quiet) {
				int null = open("/dev/null", O_WRONLY);
				if (null >= 0)
					dup2(null, 2);
			}
			execlp(bin, bin, "--listen", "127.0.0.1:0", "--capacity", capacity,
			       (char *)NULL);
			fprintf(stderr, "heca: cannot run %s: %s\n", bin, strerror(errno));
			_exit(127);
		}
		close(pfd[1]);
		sp->pid[sp->n++] = pid;
		f = fdopen(pfd[0], "r");
		if (!f || !fgets(line, sizeof(line), f) ||
		    sscanf(line, "listening on %63s", sp->addr[i]) != 1) {
			fprintf(stderr, "heca: sponsor %s did not start\n", bin);
			if (f)
				fclose(f);
			cli_stop_sponsors(sp);
			return -ECHILD;
		}
		fclose(f);
		if (i)
			strcat(sp->list, ",");
		strcat(sp->list, sp->addr[i]);
	}
	return 0;
}

void cli_stop_sponsors(struct spawned *sp)
{
	for (int i = 0; i < sp->n; i++)
		if (sp->pid[i] > 0)
			kill(sp->pid[i], SIGTERM);
	for (int i = 0; i < sp->n; i++)
		if (sp->pid[i] > 0)
			while (waitpid(sp->pid[i], NULL, 0) < 0 && errno == EINTR)
				;
	sp->n = 0;
}

void cli_log(void *arg, enum heca_log_level level, const char *msg)
{
	static const char *name[] = {"error", "warning", "info", "debug"};
	(void)arg;
	fprintf(stderr, "heca: %s: %s\n", name[level], msg);
}

static void us(char *buf, size_t len, uint64_t ns)
{
	snprintf(buf, len, "%.1f us", (double)ns / 1000.0);
}

void cli_print_stats(FILE *f, const struct heca_stats *st)
{
	char a[32], b[32], c[32], d[32], e[32];

	fprintf(f, "  faults        read %llu, write %llu, write-protect %llu, zero (no network) %llu,"
	       " from write-back buffer %llu, waited for room %llu\n",
	       (unsigned long long)st->faults_read, (unsigned long long)st->faults_write,
	       (unsigned long long)st->faults_wp, (unsigned long long)st->faults_zero,
	       (unsigned long long)st->faults_wb_hit, (unsigned long long)st->faults_deferred);
	fprintf(f, "  pages in      fetched %llu, prefetched %llu\n",
	       (unsigned long long)st->pages_fetched, (unsigned long long)st->pages_prefetched);
	fprintf(f, "  pages out     written back %llu, dropped clean %llu, dropped zero %llu (of %llu "
	       "evicted)\n",
	       (unsigned long long)st->pages_written_back,
	       (unsigned long long)st->pages_dropped_clean,
	       (unsigned long long)st->pages_dropped_zero, (unsigned long long)st->pages_evicted);
	fprintf(f, "  inactive list faults served from it %llu (pages in use kept), copies aged out "
		"%llu, held now %llu of %llu\n",
		(unsigned long long)st->faults_stash_hit, (unsigned long long)st->pages_aged,
		(unsigned long long)st->stash_pages, (unsigned long long)st->stash_limit_pages);
	fprintf(f, "  bytes         sent %.1f MiB, received %.1f MiB\n",
	       (double)st->bytes_sent / 1048576.0, (double)st->bytes_received / 1048576.0);
	us(a, sizeof(a), st->lat_p50_ns);
	us(b, sizeof(b), st->lat_p90_ns);
	us(c, sizeof(c), st->lat_p99_ns);
	us(d, sizeof(d), st->lat_mean_ns);
	us(e, sizeof(e), st->lat_max_ns);
	fprintf(f, "  fault latency p50 %s, p90 %s, p99 %s, mean %s, max %s (%llu faults)\n", a, b, c,
	       d, e, (unsigned long long)st->lat_count);
	if (st->lat_fetch_count)
		fprintf(f, "  demand fetch  p50 %.1f us, p99 %.1f us, mean %.1f us = network %.1f + "
		       "map and wake %.1f + engine %.1f (%llu fetches)\n",
		       (double)st->lat_fetch_p50_ns / 1000.0, (double)st->lat_fetch_p99_ns / 1000.0,
		       (double)st->lat_fetch_mean_ns / 1000.0, (double)st->fetch_net_mean_ns / 1000.0,
		       (double)st->fetch_install_mean_ns / 1000.0,
		       (double)(st->lat_fetch_mean_ns > st->fetch_net_mean_ns + st->fetch_install_mean_ns
					? st->lat_fetch_mean_ns - st->fetch_net_mean_ns -
						  st->fetch_install_mean_ns
					: 0) /
			       1000.0,
		       (unsigned long long)st->lat_fetch_count);
	fprintf(f, "  resident      %llu of %llu budget pages; lost pages %llu, write-back errors "
	       "%llu, kept locally %llu\n",
	       (unsigned long long)st->resident_pages, (unsigned long long)st->budget_pages,
	       (unsigned long long)st->pages_lost, (unsigned long long)st->writeback_errors,
	       (unsigned long long)st->pinned_pages);
}
