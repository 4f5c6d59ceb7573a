// SPDX-License-Identifier: MIT
/*
 * bench_programs.c - `heca bench programs`: unmodified programs (python3, GNU sort) run
 * unconstrained, under `heca run` and under kernel swap on zram at the same memory limit.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "preload_stats.h"
#ifdef HECA_HAVE_SWAPBASE
#include "swapbase.h"
#endif

#define MiB	   (1ull << 20)
#define MAX_RATIOS 16
#define MAX_RUNS   25
#define MAX_ARGS   32
#define SAMPLE_MS  10
#define RAW_PAGES  50000 /* READs of the raw pipelined rate */

struct swapbase;

static const char fairness[] =
    "heca's --local L bounds only the program's sponsored (large malloc/mmap) blocks; the swap "
    "run's cgroup limit L bounds all of its memory";
static const char fairness_cg[] =
    "heca run and the program ran in the swap run's memory cgroup, limit L, kernel swap off "
    "there; heca's budget (--local cgroup) is 75% of L";
static const char moved[] =
    "heca pages in: fetched + prefetched, out: written back (all processes); swap: pswpin, "
    "pswpout; floor: (in + out) / raw pipelined rate";

/* What a program wrote on stdout, reduced as it streams by: enough to tell a wrong answer
 * (a changed line, a lost line, lines out of order) without keeping the output. */
struct digest {
	uint64_t bytes, lines;
	uint64_t hash;	      /* of the lines in order */
	uint64_t msum;	      /* of the lines in any order */
	uint64_t unsorted_at; /* first line (1-based) below the one before it; 0: none */
	char head[128];	      /* the first bytes, NUL-terminated */
	/* streaming state */
	uint64_t lh;
	char *cur, *prev;
	size_t ncur, nprev, capcur, capprev;
};

/* One run of a command. */
struct run_out {
	double seconds;	   /* fork to reap */
	uint64_t peak_rss; /* bytes; see run_cmd() */
	int status;	   /* wait status */
	int timed_out;
	int stdout_stuck; /* the command ended but something kept its stdout open */
	struct digest d;
	uint64_t pages_in, pages_out; /* heca's stats, summed over the program's processes */
	int have_cg;		      /* ran in the cgroup: cg below is set */
	struct bench_cg_counts cg;
};

struct prog {
	const char *name; /* workload: "python3", "sort", or the name of a command given */
	char exe[PATH_MAX];
	char version[96];
	char *argv[MAX_ARGS];
	char args[MAX_ARGS][256];
	char *script; /* python3 -c text */
	char what[160];
	/* what the output must be */
	char expect_head[64];  /* python3: the printed sum */
	uint64_t expect_lines; /* sort: as many lines as the input */
	uint64_t expect_msum;  /* sort: the same lines */
	uint64_t expect_bytes; /* sort: as many bytes */
	int must_be_sorted;
	/* results */
	int have_ref;
	struct digest ref; /* the first unconstrained run's, that every other run must match */
	double unc_s, unc_rss;
	double heca_s[MAX_RATIOS], heca_rss[MAX_RATIOS], heca_limit[MAX_RATIOS];
	double swap_s[MAX_RATIOS], swap_rss[MAX_RATIOS], swap_cg_peak[MAX_RATIOS];
	double heca_cg_peak[MAX_RATIOS];	  /* --local cgroup */
	double heca_in[MAX_RATIOS], heca_out[MAX_RATIOS]; /* pages, medians */
	double swap_in[MAX_RATIOS], swap_out[MAX_RATIOS];
	char heca_note[MAX_RATIOS][160], swap_note[MAX_RATIOS][160];
};

struct popts {
	uint64_t size, seed;
	unsigned int runs, replicas, prefetch;
	int prefetch_set, no_swap, quiet;
	int local_cgroup; /* --local cgroup: heca in the swap run's memory cgroup */
	int swap_vmstat;  /* swap pages counted by /proc/vmstat, not the cgroup */
	double raw_rate;  /* pages/s, the raw pipelined rate; NAN: not measured */
	struct spawned sp; /* sponsors of the raw rate and of --local cgroup */
	char stats_file[PATH_MAX + 16];
	double timeout; /* per run; 0: 60x the unconstrained time + 120 s */
	const char *ratios, *workloads, *swapfile, *json, *plot;
	const char *cmd_name; /* --name of the command after "--" */
	char **cmd;	      /* the command after "--", or NULL */
	const char *heca_args; /* --heca-args: more options for heca run, split at spaces */
	struct bench_ratio rt[MAX_RATIOS];
	int nr;
	char heca[PATH_MAX], tmpdir[PATH_MAX];
	unsigned int done, total; /* runs, for the progress line */
};

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: heca bench programs [OPTIONS] [-- COMMAND [ARGS...]]\n"
	    "\n"
	    "Run unmodified programs unconstrained, then at each memory limit L = ratio x their\n"
	    "unconstrained peak RSS under `heca run --spawn 2 --replicas 1 --local L` and under\n"
	    "kernel swap on zram in a memory cgroup limited to L (root), each several times;\n"
	    "print median times, slowdowns and peak RSS. Every run's output is checked.\n"
	    "Pages moved are reported side by side: heca's pages in (fetched + prefetched) and\n"
	    "out (written back), kernel swap's pswpin and pswpout (the cgroup's, or /proc/vmstat's\n"
	    "where the cgroup does not count them), and the floor they imply: pages in + out\n"
	    "divided by the raw pipelined page rate of `heca bench raw`, measured at the start\n"
	    "on 2 sponsors started for it.\n"
	    "\n"
	    "workloads:\n"
	    "  python3  a list of ints and a bytearray, summed three times; prints the sum\n"
	    "  sort     GNU sort -S (all in memory), LC_ALL=C, of a generated file of\n"
	    "           \"%%016x %%u\" lines; the output must be sorted and hold the same lines\n"
	    "  COMMAND  any program given after \"--\" (run alone unless --workloads is given):\n"
	    "           every run must exit 0 and print what its first unconstrained run printed\n"
	    "\n"
	    "options:\n"
	    "  --size SIZE        peak memory each program aims at (default 512M; the sort input\n"
	    "                     is 0.3 of it)\n"
	    "  --ratios LIST      memory limit : unconstrained peak (default 1:2,1:4)\n"
	    "  --runs N           runs of each measurement, medians reported (default 3)\n"
	    "  --workloads LIST   python3,sort (default both)\n"
	    "  --replicas R       heca run --replicas (default 1, as kernel swap keeps one copy)\n"
	    "  --prefetch N       heca run --prefetch (default: heca run's)\n"
	    "  --no-swap          skip the kernel swap baseline\n"
	    "  --swapfile PATH    swap to a new file at PATH, not zram\n"
	    "  --timeout S        per run (default 60x the unconstrained time + 120 s)\n"
	    "  --seed N           seed of the sort input (default 1)\n"
	    "  --name NAME        what COMMAND is called in the table (default its file name)\n"
	    "  --heca-args ARGS   more options for heca run, split at spaces (\"--min-size 1M\")\n"
	    "  --local cgroup     run heca run and the program in the same memory cgroup as the\n"
	    "                     swap run, limited to L, with kernel swap off for it (root):\n"
	    "                     every byte of the process, heca's included, counts against L;\n"
	    "                     heca's budget is heca run's --local cgroup, 75%% of L, the\n"
	    "                     other 25%% left for what the program keeps outside heca (small\n"
	    "                     allocations, code, stacks) and heca's own buffers. Sponsors\n"
	    "                     started once by the bench, outside the cgroup. An OOM kill is\n"
	    "                     reported as such\n"
	    "  --json FILE        every figure, machine info and settings as JSON\n"
	    "  --plot FILE.png    slowdown against the memory ratio, heca and swap (gnuplot)\n"
	    "  --quiet            no progress line\n");
}


/* --- output digest ------------------------------------------------------------------------ */

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

#define FNV_INIT 0xcbf29ce484222325ull

static uint64_t fnv(uint64_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
	return h;
}

static void digest_init(struct digest *d)
{
	memset(d, 0, sizeof(*d));
	d->lh = FNV_INIT;
}

static void digest_free(struct digest *d)
{
	free(d->cur);
	free(d->prev);
	d->cur = d->prev = NULL;
	d->capcur = d->capprev = 0;
}

static int append(char **buf, size_t *n, size_t *cap, const char *s, size_t len)
{
	if (*n + len > *cap) {
		size_t c = *cap ? *cap : 256;
		char *p;
		while (c < *n + len)
			c *= 2;
		p = realloc(*buf, c);
		if (!p)
			return -ENOMEM;
		*buf = p;
		*cap = c;
	}
	memcpy(*buf + *n, s, len);
	*n += len;
	return 0;
}

/* The line in d->cur is complete: fold it in, and check it is not below the one before
 * (byte order, as sort compares under LC_ALL=C). */
static void digest_line(struct digest *d)
{
	char *t;
	size_t m = d->ncur < d->nprev ? d->ncur : d->nprev;
	int c;

	d->lines++;
	d->hash = (((d->hash << 5) | (d->hash >> 59)) ^ d->lh) * 0x9e3779b97f4a7c15ull;
	d->msum += mix64(d->lh);
	if (d->lines > 1 && !d->unsorted_at) {
		c = memcmp(d->prev, d->cur, m);
		if (c > 0 || (c == 0 && d->nprev > d->ncur))
			d->unsorted_at = d->lines;
	}
	t = d->prev, d->prev = d->cur, d->cur = t;
	m = d->capprev, d->capprev = d->capcur, d->capcur = m;
	d->nprev = d->ncur;
	d->ncur = 0;
	d->lh = FNV_INIT;
}

static int digest_feed(struct digest *d, const char *s, size_t n)
{
	size_t h = strlen(d->head);

	if (h < sizeof(d->head) - 1) {
		size_t k = n < sizeof(d->head) - 1 - h ? n : sizeof(d->head) - 1 - h;
		memcpy(d->head + h, s, k);
		d->head[h + k] = '\0';
	}
	d->bytes += n;
	while (n) {
		const char *nl = memchr(s, '\n', n);
		size_t k = nl ? (size_t)(nl - s) : n;
		if (append(&d->cur, &d->ncur, &d->capcur, s, k))
			return -ENOMEM;
		d->lh = fnv(d->lh, s, k);
		if (!nl)
			break;
		digest_line(d);
		s += k + 1;
		n -= k + 1;
	}
	return 0;
}

static void digest_end(struct digest *d)
{
	if (d->ncur)
		digest_line(d); /* a last line without a newline still counts */
	digest_free(d);
}

/* --- running a command ------------------------------------------------------------------- */

/* VmHWM of a process in bytes, or 0 if it is gone. */
static uint64_t vm_hwm(pid_t pid)
{
	char path[64], line[128];
	unsigned long long kb = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return (uint64_t)kb << 10;
}

/* The child of parent now running exe (the program heca run started), else the first child
 * that is not one of its sponsors nor a fork of heca run that has not exec'd yet (a launcher
 * script that will exec the program keeps its pid), or 0 if there is none yet. */
static pid_t find_child(pid_t parent, const char *exe)
{
	char path[64], buf[1024], link[PATH_MAX];
	char *save = NULL, *t, *b;
	pid_t other = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)parent, (int)parent);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	for (t = strtok_r(buf, " \n", &save); t; t = strtok_r(NULL, " \n", &save)) {
		snprintf(path, sizeof(path), "/proc/%s/exe", t);
		n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		if (!strcmp(link, exe))
			return (pid_t)atoi(t);
		b = strrchr(link, '/');
		b = b ? b + 1 : link;
		if (!other && strcmp(b, "hecad") && strcmp(b, "heca")) /* heca: not exec'd yet */
			other = (pid_t)atoi(t);
	}
	return other;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/*
 * Run argv (argv[0] a path) with LC_ALL=C, stdin from /dev/null, stdout digested, stderr to
 * errfile; kill it after timeout seconds. out->peak_rss: with watch_exe NULL the child's
 * ru_maxrss (it and its descendants, the largest); else the VmHWM of the child's child
 * running watch_exe, sampled every SAMPLE_MS (heca run's own sponsors hold the pages it
 * evicted, so its ru_maxrss would be theirs). Returns 0 once the command has been reaped,
 * whatever its status, or -errno if it could not be started.
 */
static int run_cmd(struct popts *po, char *const argv[], const char *watch_exe, double timeout,
		   const char *what, const char *errfile, struct run_out *out)
{
	static char buf[1 << 20];
	struct rusage ru;
	double t0, killed_at = 0, reaped_at = 0;
	pid_t pid, prog = 0;
	int pfd[2], efd, reaped = 0, eof = 0, st = 0, rc = 0;
	double last_sample = 0;

	memset(out, 0, sizeof(*out));
	digest_init(&out->d);
	efd = open(errfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (efd < 0)
		return -errno;
	if (pipe2(pfd, O_CLOEXEC)) {
		rc = -errno;
		close(efd);
		return rc;
	}
	fflush(NULL);
	t0 = bench_now();
	pid = fork();
	if (pid < 0) {
		rc = -errno;
		close(pfd[0]);
		close(pfd[1]);
		close(efd);
		return rc;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);
		if (null < 0 || dup2(null, 0) < 0 || dup2(pfd[1], 1) < 0 || dup2(efd, 2) < 0)
			_exit(127);
		setenv("LC_ALL", "C", 1);
		execv(argv[0], argv);
		dprintf(2, "heca bench programs: cannot execute %s: %s\n", argv[0],
			strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
	close(efd);

	while (!reaped || !eof) {
		double now;

		if (!eof) {
			struct pollfd p = {.fd = pfd[0], .events = POLLIN};
			int pr = poll(&p, 1, reaped || watch_exe ? SAMPLE_MS : 100);
			if (pr > 0) {
				ssize_t n = read(pfd[0], buf, sizeof(buf));
				if (n > 0) {
					if (digest_feed(&out->d, buf, (size_t)n))
						rc = -ENOMEM;
				} else if (n == 0 || errno != EINTR) {
					eof = 1;
				}
			}
		} else {
			sleep_ms(1);
		}
		now = bench_now();
		if (watch_exe && !reaped && now - last_sample >= SAMPLE_MS / 1000.0) {
			last_sample = now;
			if (!prog)
				prog = find_child(pid, watch_exe);
			if (prog) {
				uint64_t v = vm_hwm(prog);
				if (v > out->peak_rss)
					out->peak_rss = v;
			}
		}
		if (!reaped) {
			pid_t w = wait4(pid, &st, WNOHANG, &ru);
			if (w == pid) {
				reaped = 1;
				reaped_at = now;
				out->seconds = now - t0;
				if (!watch_exe)
					out->peak_rss = (uint64_t)ru.ru_maxrss << 10;
			}
		}
		if (!reaped && timeout > 0 && now - t0 > timeout) {
			if (!killed_at) {
				out->timed_out = 1;
				killed_at = now;
				kill(pid, SIGTERM);
			} else if (now - killed_at > 10) {
				kill(pid, SIGKILL);
			}
		}
		/* Its descendants may outlive it holding the pipe: do not wait for them long. */
		if (reaped && !eof && now - reaped_at > 5) {
			out->stdout_stuck = 1;
			break;
		}
		if (!reaped)
			bench_progress(what, po->total ? (double)po->done / po->total : 0, now - t0,
				       "s in this run");
	}
	bench_progress_end();
	close(pfd[0]);
	digest_end(&out->d);
	out->status = st;
	return rc;
}

/* --- checking a run ---------------------------------------------------------------------- */

static void describe_status(const struct run_out *o, char *buf, size_t len)
{
	if (o->timed_out)
		snprintf(buf, len, "timed out (killed)");
	else if (WIFSIGNALED(o->status))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(o->status),
			 strsignal(WTERMSIG(o->status)));
	else if (WEXITSTATUS(o->status))
		snprintf(buf, len, "exit status %d", WEXITSTATUS(o->status));
	else
		snprintf(buf, len, "exit status 0");
}

/* 0 if the run ended well with the right output; else -1 and why in buf. */
static int check_run(struct prog *p, const struct run_out *o, char *buf, size_t len)
{
	const struct digest *d = &o->d;

	if (o->timed_out || !WIFEXITED(o->status) || WEXITSTATUS(o->status)) {
		describe_status(o, buf, len);
		return -1;
	}
	if (o->stdout_stuck) {
		snprintf(buf, len, "stdout stayed open after the command ended");
		return -1;
	}
	if (*p->expect_head && strcmp(d->head, p->expect_head)) {
		snprintf(buf, len, "WRONG OUTPUT: printed '%.*s', expected '%.*s'",
			 (int)strcspn(d->head, "\n") > 40 ? 40 : (int)strcspn(d->head, "\n"),
			 d->head, (int)strcspn(p->expect_head, "\n"), p->expect_head);
		return -1;
	}
	if (p->must_be_sorted && d->unsorted_at) {
		snprintf(buf, len, "WRONG OUTPUT: line %llu is below the line before it",
			 (unsigned long long)d->unsorted_at);
		return -1;
	}
	if (p->expect_lines && (d->lines != p->expect_lines || d->bytes != p->expect_bytes ||
				d->msum != p->expect_msum)) {
		snprintf(buf, len,
			 "WRONG OUTPUT: %llu lines / %llu bytes (input: %llu / %llu), lines %s",
			 (unsigned long long)d->lines, (unsigned long long)d->bytes,
			 (unsigned long long)p->expect_lines, (unsigned long long)p->expect_bytes,
			 d->msum == p->expect_msum ? "the same" : "CHANGED");
		return -1;
	}
	if (p->have_ref && (d->hash != p->ref.hash || d->bytes != p->ref.bytes)) {
		snprintf(buf, len, "WRONG OUTPUT: differs from the unconstrained run's");
		return -1;
	}
	return 0;
}

/* Print the end of a run's stderr (at most 20 lines), indented. */
static void show_stderr(const char *errfile)
{
	static char t[8192];
	int fd = open(errfile, O_RDONLY | O_CLOEXEC);
	off_t size;
	ssize_t n;
	int lines = 0;
	char *s;

	if (fd < 0)
		return;
	size = lseek(fd, 0, SEEK_END);
	if (size > (off_t)sizeof(t) - 1)
		lseek(fd, size - (off_t)sizeof(t) + 1, SEEK_SET);
	else
		lseek(fd, 0, SEEK_SET);
	n = read(fd, t, sizeof(t) - 1);
	close(fd);
	if (n <= 0)
		return;
	t[n] = '\0';
	for (s = t + n - 1; s > t; s--)
		if (*s == '\n' && s != t + n - 1 && ++lines == 20) {
			s++;
			break;
		}
	fprintf(stderr, "  its stderr%s:\n", s > t ? " (end)" : "");
	for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n"))
		fprintf(stderr, "  | %s\n", line);
}

static void print_cmd(FILE *f, char *const argv[])
{
	for (int i = 0; argv[i]; i++) {
		const char *a = argv[i];
		if (strpbrk(a, " \n'\"();&|<>*$"))
			fputc('\'', f);
		for (; *a; a++) {
			if (*a == '\n')
				fputs("; ", f); /* the python script, one line */
			else
				fputc(*a, f);
		}
		if (strpbrk(argv[i], " \n'\"();&|<>*$"))
			fputc('\'', f);
		fputc(argv[i + 1] ? ' ' : '\n', f);
	}
}

static double median(double *v, int n)
{
	int m = 0;

	for (int i = 0; i < n; i++) /* NAN runs do not count */
		if (!isnan(v[i]))
			v[m++] = v[i];
	if (!m)
		return NAN;
	for (int i = 1; i < m; i++)
		for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
			double t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	return m % 2 ? v[m / 2] : (v[m / 2 - 1] + v[m / 2]) / 2;
}

/* --- the workloads ----------------------------------------------------------------------- */

/* The path of cmd in PATH, resolved, or -ENOENT. */
static int find_in_path(const char *cmd, char *out, size_t len)
{
	const char *path = getenv("PATH");
	char buf[4096], *save = NULL, *dir;

	snprintf(buf, sizeof(buf), "%s", path ? path : "/usr/bin:/bin");
	for (dir = strtok_r(buf, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		char p[PATH_MAX + 8];
		snprintf(p, sizeof(p), "%s/%s", dir, cmd);
		if (access(p, X_OK) == 0 && realpath(p, out)) {
			out[len - 1] = '\0';
			return 0;
		}
	}
	return -ENOENT;
}

/* The first line a command prints, or "" (through the shell: only fixed text is given). */
static void first_line(const char *cmd, char *out, size_t len)
{
	FILE *f = popen(cmd, "r");

	out[0] = '\0';
	if (!f)
		return;
	if (fgets(out, (int)len, f))
		out[strcspn(out, "\n")] = '\0';
	pclose(f);
}

static void set_argv(struct prog *p, int i, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_argv(struct prog *p, int i, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->args[i], sizeof(p->args[i]), fmt, ap);
	va_end(ap);
	p->argv[i] = p->args[i];
	p->argv[i + 1] = NULL;
}

/* python3: a list of n small ints (8-byte pointers to cached objects) and a bytearray of m
 * bytes of a 0..255 pattern, both summed three times. */
static int setup_python(struct popts *po, struct prog *p)
{
	uint64_t n = po->size * 6 / 10 / 8, m = po->size * 4 / 10;
	unsigned __int128 sum;
	char line[PATH_MAX + 8], *nl;
	FILE *f;

	n -= n % 256;
	m -= m % MiB;
	if (!n || !m) {
		fprintf(stderr, "heca bench programs: --size too small for python3\n");
		return -EINVAL;
	}
	/* The interpreter itself, not a launcher script (pyenv's shims are bash). */
	f = popen("python3 -c 'import sys,platform; print(sys.executable); "
		  "print(platform.python_version())' 2>/dev/null",
		  "r");
	if (!f || !fgets(line, sizeof(line), f) || !(nl = strchr(line, '\n')) || line[0] != '/') {
		if (f)
			pclose(f);
		fprintf(stderr, "heca bench programs: python3 not found in PATH; skipping it\n");
		return -ENOENT;
	}
	*nl = '\0';
	if (!realpath(line, p->exe)) {
		pclose(f);
		return -errno;
	}
	if (fgets(line, sizeof(line), f))
		line[strcspn(line, "\n")] = '\0';
	snprintf(p->version, sizeof(p->version), "Python %.40s", line);
	pclose(f);

	if (asprintf(&p->script,
		     "N=%llu\n"
		     "M=%llu\n"
		     "l=[i&255 for i in range(N)]\n"
		     "c=bytearray(range(256))*4096\n"
		     "b=c*(M//len(c))\n"
		     "s=0\n"
		     "for r in range(3): s+=sum(l)+sum(b)\n"
		     "print(s)",
		     (unsigned long long)n, (unsigned long long)m) < 0)
		return -ENOMEM;
	set_argv(p, 0, "%s", p->exe);
	set_argv(p, 1, "-c");
	p->argv[2] = p->script;
	p->argv[3] = NULL;
	sum = (unsigned __int128)3 * (n / 256 + m / 256) * (255 * 256 / 2);
	snprintf(p->expect_head, sizeof(p->expect_head), "%llu\n", (unsigned long long)sum);
	snprintf(p->what, sizeof(p->what), "%.60s, %llu ints in a list, a %llu MiB bytearray",
		 p->version, (unsigned long long)n, (unsigned long long)(m / MiB));
	return 0;
}

/* sort: a file of lines "%016x %u\n" from a 64-bit LCG (all keys differ, so the sorted
 * output is one), written once; what any correct sort must print is counted as it is. */
static int setup_sort(struct popts *po, struct prog *p)
{
	uint64_t target = po->size * 3 / 10, x = po->seed, bytes = 0, lines = 0, msum = 0;
	char path[PATH_MAX + 16], line[64];
	static char obuf[1 << 20];
	FILE *f;
	int rc;

	rc = find_in_path("sort", p->exe, sizeof(p->exe));
	if (rc) {
		fprintf(stderr, "heca bench programs: sort not found in PATH; skipping it\n");
		return rc;
	}
	first_line("sort --version 2>/dev/null", p->version, sizeof(p->version));
	if (!strstr(p->version, "GNU")) {
		fprintf(stderr, "heca bench programs: %s is not GNU sort ('%s'); skipping it\n",
			p->exe, p->version);
		return -ENOENT;
	}
	snprintf(path, sizeof(path), "%s/sort.in", po->tmpdir);
	f = fopen(path, "w");
	if (!f) {
		rc = -errno;
		fprintf(stderr, "heca bench programs: %s: %s\n", path, strerror(errno));
		return rc;
	}
	setvbuf(f, obuf, _IOFBF, sizeof(obuf));
	while (bytes < target) {
		int n;
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		n = snprintf(line, sizeof(line), "%016llx %u\n", (unsigned long long)x,
			     (unsigned)((x >> 40) % 1000000));
		fwrite(line, 1, (size_t)n, f);
		msum += mix64(fnv(FNV_INIT, line, (size_t)n - 1));
		bytes += (uint64_t)n;
		lines++;
	}
	if (fclose(f)) {
		rc = -errno;
		fprintf(stderr, "heca bench programs: writing %s: %s\n", path, strerror(errno));
		return rc;
	}
	p->expect_lines = lines;
	p->expect_bytes = bytes;
	p->expect_msum = msum;
	p->must_be_sorted = 1;
	/* -S: room for the text, a 32-byte struct line per line and sort's merge space, so that
	 * it never spills; -T: a directory that does not exist, so that a spill fails loudly. */
	set_argv(p, 0, "%s", p->exe);
	set_argv(p, 1, "-S");
	set_argv(p, 2, "%lluM", (unsigned long long)((bytes * 5 + MiB - 1) / MiB));
	set_argv(p, 3, "-T");
	set_argv(p, 4, "%s/no-spill", po->tmpdir);
	set_argv(p, 5, "%s", path);
	snprintf(p->what, sizeof(p->what), "%.60s, %llu MiB input of %llu lines, -S %.16s",
		 p->version, (unsigned long long)(bytes / MiB), (unsigned long long)lines,
		 p->args[2]);
	return 0;
}

/* The command given after "--": its output is checked against its first unconstrained run's
 * (check_run()), so it must print the same on every run. */
static int setup_cmd(struct popts *po, struct prog *p)
{
	const char *c = po->cmd[0];
	int i, rc;

	if (strchr(c, '/'))
		rc = realpath(c, p->exe) && access(p->exe, X_OK) == 0 ? 0 : -errno;
	else
		rc = find_in_path(c, p->exe, sizeof(p->exe));
	if (rc) {
		fprintf(stderr, "heca bench programs: %s: %s\n", c,
			rc == -ENOENT ? "not found" : strerror(-rc));
		return rc;
	}
	for (i = 0; po->cmd[i] && i < MAX_ARGS - 1; i++)
		p->argv[i] = po->cmd[i];
	if (po->cmd[i]) {
		fprintf(stderr, "heca bench programs: COMMAND has more than %d words\n",
			MAX_ARGS - 1);
		return -E2BIG;
	}
	/* /proc/PID/exe of the running program, as find_child() compares it */
	p->argv[0] = p->exe;
	p->argv[i] = NULL;
	snprintf(p->what, sizeof(p->what), "the command given, output as in its first run");
	return 0;
}

/* --- measuring --------------------------------------------------------------------------- */

/* Empty the file the program's processes leave their heca statistics in (HECA_STATS_FILE,
 * as heca run --stats uses it), before a run. */
static void stats_reset(struct popts *po)
{
	int fd = open(po->stats_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd >= 0)
		close(fd);
}

/* Pages moved by heca in a run: what every process of the program recorded at exit. */
static void stats_read(struct popts *po, struct run_out *o)
{
	struct heca_preload_stats rec;
	int fd = open(po->stats_file, O_RDONLY | O_CLOEXEC);

	o->pages_in = o->pages_out = 0;
	if (fd < 0)
		return;
	while (read(fd, &rec, sizeof(rec)) == (ssize_t)sizeof(rec) &&
	       rec.magic == HECA_PRELOAD_STATS_MAGIC) {
		o->pages_in += rec.st.pages_fetched + rec.st.pages_prefetched;
		o->pages_out += rec.st.pages_written_back;
	}
	close(fd);
}

#ifdef HECA_HAVE_SWAPBASE
struct swap_job {
	struct popts *po;
	char *const *argv;
	const char *watch_exe; /* run_cmd()'s */
	double timeout;
	const char *what, *errfile;
	const char *cg_dir; /* the cgroup this child was put in */
	int noswap;	    /* heca's run: no kernel swap in the cgroup */
	struct run_out *out; /* shared with the parent */
};

/* Runs in the child that swapbase_run() put in the memory cgroup; the program, its child,
 * is in the cgroup too. */
static int swap_child(void *arg)
{
	struct swap_job *j = arg;
	struct bench_cg cg;
	int rc = bench_cg_begin(&cg, j->cg_dir, j->noswap);

	if (rc) {
		fprintf(stderr, "heca bench programs: cannot turn kernel swap off in %s: %s\n",
			j->cg_dir, strerror(-rc));
		return rc;
	}
	rc = run_cmd(j->po, j->argv, j->watch_exe, j->timeout, j->what, j->errfile, j->out);
	bench_cg_end(&cg, &j->out->cg);
	j->out->have_cg = 1;
	swapbase_phase("program", j->out->seconds);
	if (rc)
		return rc;
	if (j->out->cg.oom_kills ||
	    (WIFSIGNALED(j->out->status) && WTERMSIG(j->out->status) == SIGKILL &&
	     !j->out->timed_out))
		return -ENOMEM; /* the OOM killer; the parent reads the cgroup's counter */
	return 0;
}
#endif

static void run_line(const char *name, const char *mode, const char *ratio, unsigned int run,
		     const struct run_out *o, const char *verdict)
{
	printf("%s %s%s%s run %u: %.2f s, peak RSS %.0f MiB, %s", name, mode, *ratio ? " " : "",
	       ratio, run, o->seconds, (double)o->peak_rss / MiB, verdict);
	if (!strcmp(mode, "heca"))
		printf("; heca pages in %llu, out %llu", (unsigned long long)o->pages_in,
		       (unsigned long long)o->pages_out);
	if (o->have_cg)
		printf("; cgroup peak %.0f MiB, kernel swap in %llu, out %llu pages%s",
		       (double)o->cg.peak / MiB, (unsigned long long)o->cg.swapin,
		       (unsigned long long)o->cg.swapout, o->cg.vmstat ? " (/proc/vmstat)" : "");
	printf("\n");
}

/* Unconstrained runs: the reference output, time and peak RSS. Returns 0 or -1. */
static int measure_unconstrained(struct popts *po, struct prog *p)
{
	double s[MAX_RUNS], rss[MAX_RUNS];
	char err[PATH_MAX + 16], why[160], what[64];
	struct run_out o;

	snprintf(err, sizeof(err), "%s/stderr", po->tmpdir);
	printf("%s: %s\n  command: ", p->name, p->what);
	print_cmd(stdout, p->argv);
	for (unsigned int r = 0; r < po->runs; r++) {
		snprintf(what, sizeof(what), "%s: unconstrained %u/%u", p->name, r + 1, po->runs);
		if (run_cmd(po, p->argv, NULL, 0, what, err, &o)) {
			fprintf(stderr, "heca bench programs: cannot run %s\n", p->exe);
			return -1;
		}
		po->done++;
		if (check_run(p, &o, why, sizeof(why))) {
			fprintf(stderr, "heca bench programs: %s unconstrained: %s\n", p->name,
				why);
			show_stderr(err);
			return -1;
		}
		if (!p->have_ref) {
			p->ref = o.d;
			p->have_ref = 1;
		}
		s[r] = o.seconds;
		rss[r] = (double)o.peak_rss;
		run_line(p->name, "unconstrained", "", r + 1, &o, "output ok");
	}
	p->unc_s = median(s, (int)po->runs);
	p->unc_rss = median(rss, (int)po->runs);
	return 0;
}

/* One heca run inside the memory cgroup at limit (--local cgroup). Returns 0, -ENOMEM for an
 * OOM kill, or -1 with why in sberr. */
static int heca_in_cgroup(struct popts *po, struct prog *p, char *const argv[], uint64_t limit,
			  double timeout, const char *what, const char *err, struct swapbase *sb,
			  struct run_out *o, char *sberr, size_t len)
{
#ifdef HECA_HAVE_SWAPBASE
	struct run_out *sh;
	struct swap_job j;
	int rc;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		snprintf(sberr, len, "mmap: %s", strerror(errno));
		return -1;
	}
	memset(sh, 0, sizeof(*sh));
	j = (struct swap_job){.po = po,
			      .argv = argv,
			      .watch_exe = p->exe,
			      .timeout = timeout,
			      .what = what,
			      .errfile = err,
			      .cg_dir = sb->cg_dir,
			      .noswap = 1,
			      .out = sh};
	rc = swapbase_run(sb, limit, swap_child, &j, NULL, sberr, len);
	bench_progress_end();
	*o = *sh;
	munmap(sh, sizeof(*sh));
	if (rc == -ENOMEM || sb->last.oom_killed || o->cg.oom_kills)
		return -ENOMEM;
	if (rc == -EINTR)
		return -EINTR;
	/* The program's own failure is check_run()'s to tell; a baseline that broke is ours. */
	if (rc && !o->have_cg)
		return -1;
	return 0;
#else
	(void)po, (void)p, (void)argv, (void)limit, (void)timeout, (void)what, (void)err, (void)sb;
	memset(o, 0, sizeof(*o));
	snprintf(sberr, len, "this build has no memory cgroup runs (bench/swapbase.c)");
	return -1;
#endif
}

/* heca run at ratio i; in the memory cgroup sb with --local cgroup. Returns 0, or -1 if heca
 * failed or answered wrong. An OOM kill in the cgroup is a result: said, and no figure. */
static int measure_heca(struct popts *po, struct prog *p, int i, struct swapbase *sb)
{
	double s[MAX_RUNS], rss[MAX_RUNS], cg[MAX_RUNS], pin[MAX_RUNS], pout[MAX_RUNS];
	char err[PATH_MAX + 16], why[160], what[64], args[8][32], extra[512], sberr[256];
	char *argv[2 * MAX_ARGS + 16], *save = NULL, *t;
	uint64_t limit = (uint64_t)(p->unc_rss * po->rt[i].frac);
	double timeout = po->timeout ? po->timeout : 60 * p->unc_s + 120;
	struct run_out o;
	int a = 0, n = 0;

	limit -= limit % 4096;
	p->heca_limit[i] = (double)limit;
	snprintf(err, sizeof(err), "%s/stderr", po->tmpdir);
	snprintf(args[0], sizeof(args[0]), "%u", po->replicas);
	snprintf(args[1], sizeof(args[1]), "%llu", (unsigned long long)limit);
	snprintf(args[2], sizeof(args[2]), "%u", po->prefetch);
	argv[a++] = po->heca;
	argv[a++] = "run";
	if (po->local_cgroup) {
		argv[a++] = "--sponsors";
		argv[a++] = po->sp.list;
	} else {
		argv[a++] = "--spawn";
		argv[a++] = "2";
	}
	argv[a++] = "--replicas";
	argv[a++] = args[0];
	argv[a++] = "--local";
	argv[a++] = po->local_cgroup ? "cgroup" : args[1];
	if (po->prefetch_set) {
		argv[a++] = "--prefetch";
		argv[a++] = args[2];
	}
	snprintf(extra, sizeof(extra), "%s", po->heca_args ? po->heca_args : "");
	for (t = strtok_r(extra, " ", &save); t && a < MAX_ARGS + 12;
	     t = strtok_r(NULL, " ", &save))
		argv[a++] = t;
	argv[a++] = "--";
	for (int k = 0; p->argv[k]; k++)
		argv[a++] = p->argv[k];
	argv[a] = NULL;
	if (po->local_cgroup)
		printf("%s heca %s (memory cgroup limit %.0f MiB, kernel swap off, local 75%% of "
		       "it):\n  command: ",
		       p->name, po->rt[i].label, (double)limit / MiB);
	else
		printf("%s heca %s (local %.0f MiB):\n  command: ", p->name, po->rt[i].label,
		       (double)limit / MiB);
	print_cmd(stdout, argv);
	setenv("HECA_STATS_FILE", po->stats_file, 1);
	for (unsigned int r = 0; r < po->runs; r++) {
		int rc = 0;

		snprintf(what, sizeof(what), "%s: heca %s %u/%u", p->name, po->rt[i].label, r + 1,
			 po->runs);
		stats_reset(po);
		if (po->local_cgroup) {
			rc = heca_in_cgroup(po, p, argv, limit, timeout, what, err, sb, &o, sberr,
					    sizeof(sberr));
		} else if (run_cmd(po, argv, p->exe, timeout, what, err, &o)) {
			fprintf(stderr, "heca bench programs: cannot run %s\n", po->heca);
			unsetenv("HECA_STATS_FILE");
			return -1;
		}
		po->done++;
		stats_read(po, &o);
		if (rc == -ENOMEM) {
			run_line(p->name, "heca", po->rt[i].label, r + 1, &o, "OOM KILLED");
			snprintf(p->heca_note[i], sizeof(p->heca_note[i]),
				 "heca %.16s: the OOM killer ended run %u in the %.0f MiB memory "
				 "cgroup (no figure)",
				 po->rt[i].label, r + 1, (double)limit / MiB);
			po->done += po->runs - r - 1;
			unsetenv("HECA_STATS_FILE");
			return 0;
		}
		if (rc) {
			fprintf(stderr, "heca bench programs: %s heca %s in the memory cgroup: %s\n",
				p->name, po->rt[i].label, sberr);
			snprintf(p->heca_note[i], sizeof(p->heca_note[i]), "heca run %u: %.120s",
				 r + 1, sberr);
			po->done += po->runs - r - 1;
			unsetenv("HECA_STATS_FILE");
			return -1;
		}
		if (check_run(p, &o, why, sizeof(why))) {
			run_line(p->name, "heca", po->rt[i].label, r + 1, &o, why);
			fprintf(stderr, "heca bench programs: %s under heca %s FAILED: %s\n",
				p->name, po->rt[i].label, why);
			fprintf(stderr, "  command: ");
			print_cmd(stderr, argv);
			show_stderr(err);
			snprintf(p->heca_note[i], sizeof(p->heca_note[i]), "heca run %u: %.120s",
				 r + 1, why);
			po->done += po->runs - r - 1;
			unsetenv("HECA_STATS_FILE");
			return -1;
		}
		if (o.have_cg && (o.cg.swapin || o.cg.swapout) && !o.cg.vmstat)
			snprintf(p->heca_note[i], sizeof(p->heca_note[i]),
				 "heca %.16s run %u: the kernel swapped %llu pages in, %llu out in "
				 "heca's cgroup",
				 po->rt[i].label, r + 1, (unsigned long long)o.cg.swapin,
				 (unsigned long long)o.cg.swapout);
		s[n] = o.seconds;
		cg[n] = o.have_cg && o.cg.peak ? (double)o.cg.peak : NAN;
		pin[n] = (double)o.pages_in;
		pout[n] = (double)o.pages_out;
		rss[n++] = o.peak_rss ? (double)o.peak_rss : NAN; /* the program was not seen */
		run_line(p->name, "heca", po->rt[i].label, r + 1, &o, "output ok");
	}
	unsetenv("HECA_STATS_FILE");
	p->heca_s[i] = median(s, n);
	p->heca_rss[i] = median(rss, n);
	p->heca_cg_peak[i] = median(cg, n);
	p->heca_in[i] = median(pin, n);
	p->heca_out[i] = median(pout, n);
	return 0;
}

#ifdef HECA_HAVE_SWAPBASE
/* Kernel swap at ratio i. OOM kills and timeouts leave NAN and a note; returns -1 only for a
 * wrong answer or a broken baseline. */
static int measure_swap(struct popts *po, struct prog *p, int i, struct swapbase *sb)
{
	double s[MAX_RUNS], rss[MAX_RUNS], cg[MAX_RUNS], sin[MAX_RUNS], sout[MAX_RUNS];
	char err[PATH_MAX + 16], why[160], what[64], sberr[256];
	uint64_t limit = (uint64_t)p->heca_limit[i];
	struct run_out *o;
	struct swap_job j;
	int n = 0, rc = 0;

	if (!limit) {
		limit = (uint64_t)(p->unc_rss * po->rt[i].frac);
		limit -= limit % 4096;
	}
	o = mmap(NULL, sizeof(*o), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (o == MAP_FAILED)
		return -1;
	snprintf(err, sizeof(err), "%s/stderr", po->tmpdir);
	j = (struct swap_job){.po = po,
			      .argv = p->argv,
			      .timeout = po->timeout ? po->timeout : 60 * p->unc_s + 120,
			      .what = what,
			      .errfile = err,
			      .cg_dir = sb->cg_dir,
			      .out = o};
	printf("%s %s %s (cgroup limit %.0f MiB):\n", p->name,
	       po->swapfile ? "swap file" : "zram swap", po->rt[i].label, (double)limit / MiB);
	for (unsigned int r = 0; r < po->runs; r++) {
		snprintf(what, sizeof(what), "%s: swap %s %u/%u", p->name, po->rt[i].label, r + 1,
			 po->runs);
		memset(o, 0, sizeof(*o));
		rc = swapbase_run(sb, limit, swap_child, &j, NULL, sberr, sizeof(sberr));
		bench_progress_end();
		po->done++;
		if (rc == -ENOMEM || sb->last.oom_killed) {
			printf("%s swap %s run %u: OOM killed\n", p->name, po->rt[i].label, r + 1);
			snprintf(
			    p->swap_note[i], sizeof(p->swap_note[i]),
			    "swap %.16s: the OOM killer ended run %u at a %.0f MiB cgroup limit",
			    po->rt[i].label, r + 1, (double)limit / MiB);
			po->done += po->runs - r - 1;
			rc = 0;
			goto out;
		}
		if (rc == -EINTR) {
			fprintf(stderr, "heca bench programs: %s\n", sberr);
			rc = -1;
			goto out;
		}
		if (rc || check_run(p, o, why, sizeof(why))) {
			if (rc)
				snprintf(why, sizeof(why), "%.150s", sberr);
			run_line(p->name, "swap", po->rt[i].label, r + 1, o, why);
			fprintf(stderr, "heca bench programs: %s under kernel swap %s failed: %s\n",
				p->name, po->rt[i].label, why);
			show_stderr(err);
			snprintf(p->swap_note[i], sizeof(p->swap_note[i]),
				 "swap %.16s run %u: %.120s", po->rt[i].label, r + 1, why);
			po->done += po->runs - r - 1;
			/* A timeout is a result (too slow); a wrong answer is not. */
			rc = o->timed_out ? 0 : -1;
			goto out;
		}
		s[n] = o->seconds;
		rss[n] = (double)o->peak_rss;
		sin[n] = (double)o->cg.swapin;
		sout[n] = (double)o->cg.swapout;
		po->swap_vmstat |= o->cg.vmstat;
		/* memory.peak read afresh is the cgroup's since it was made (6.12+): the run's own
		 * is the one bench_cg_end() read through the file it reset. */
		cg[n++] = (double)(o->cg.peak ? o->cg.peak : sb->last.peak_mem_bytes);
		run_line(p->name, "swap", po->rt[i].label, r + 1, o, "output ok");
	}
	p->swap_s[i] = median(s, n);
	p->swap_rss[i] = median(rss, n);
	p->swap_cg_peak[i] = median(cg, n);
	p->swap_in[i] = median(sin, n);
	p->swap_out[i] = median(sout, n);
out:
	munmap(o, sizeof(*o));
	return rc;
}
#endif

/* --- output ------------------------------------------------------------------------------ */

static void fmt(char *buf, size_t len, double v, int prec, const char *unit)
{
	if (isnan(v))
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.*f%s", prec, v, unit);
}

/* The time the pages moved cost at least: in + out at the raw pipelined rate. */
static double floor_s(const struct popts *po, double in, double out)
{
	return (in + out) / po->raw_rate;
}

static void print_table(struct popts *po, struct prog *ps, int np, int have_swap)
{
	printf("\n| workload | limit : peak | limit | unconstrained | heca | %s | heca slowdown | "
	       "swap slowdown | heca peak RSS | swap peak RSS | heca cgroup peak | swap cgroup "
	       "peak | heca pages in | heca pages out | swap pages in | swap pages out | heca "
	       "floor | swap floor |\n",
	       po->swapfile ? "swap file" : "zram swap");
	printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	       "---:|\n");
	for (int k = 0; k < np; k++) {
		struct prog *p = &ps[k];
		for (int i = 0; i < po->nr; i++) {
			char lim[32], u[32], h[32], s[32], hx[32], sx[32], hr[32], sr[32];
			char hc[32], sc[32], hi[32], ho[32], si[32], so[32], hf[32], sf[32];
			fmt(lim, sizeof(lim), p->heca_limit[i] / MiB, 0, " MiB");
			fmt(u, sizeof(u), p->unc_s, 2, " s");
			fmt(h, sizeof(h), p->heca_s[i], 2, " s");
			fmt(s, sizeof(s), p->swap_s[i], 2, " s");
			fmt(hx, sizeof(hx), p->heca_s[i] / p->unc_s, 2, "x");
			fmt(sx, sizeof(sx), p->swap_s[i] / p->unc_s, 2, "x");
			fmt(hr, sizeof(hr), p->heca_rss[i] / MiB, 0, " MiB");
			fmt(sr, sizeof(sr), p->swap_rss[i] / MiB, 0, " MiB");
			if (!have_swap) {
				snprintf(s, sizeof(s), "skipped");
				snprintf(sx, sizeof(sx), "-");
				snprintf(sr, sizeof(sr), "-");
			}
			fmt(hc, sizeof(hc), p->heca_cg_peak[i] / MiB, 0, " MiB");
			fmt(sc, sizeof(sc), p->swap_cg_peak[i] / MiB, 0, " MiB");
			fmt(hi, sizeof(hi), p->heca_in[i], 0, "");
			fmt(ho, sizeof(ho), p->heca_out[i], 0, "");
			fmt(si, sizeof(si), p->swap_in[i], 0, "");
			fmt(so, sizeof(so), p->swap_out[i], 0, "");
			fmt(hf, sizeof(hf), floor_s(po, p->heca_in[i], p->heca_out[i]), 2, " s");
			fmt(sf, sizeof(sf), floor_s(po, p->swap_in[i], p->swap_out[i]), 2, " s");
			if (!have_swap)
				snprintf(sc, sizeof(sc), "-");
			printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s "
			       "| %s | %s | %s | %s |\n",
			       p->name, po->rt[i].label, lim, u, h, s, hx, sx, hr, sr, hc, sc, hi, ho,
			       si, so, hf, sf);
		}
	}
	printf("\nunconstrained peak RSS:");
	for (int k = 0; k < np; k++)
		printf(" %s %.0f MiB%s", ps[k].name, ps[k].unc_rss / MiB, k + 1 < np ? "," : "");
	printf("; medians of %u runs; limit = ratio x unconstrained peak RSS.\n", po->runs);
	printf("Note: %s; heca peak RSS (the program's VmHWM, sampled every %d ms) shows how much "
	       "memory heca's run really used.\n",
	       po->local_cgroup ? fairness_cg : fairness, SAMPLE_MS);
	printf("Note: %s (%.0f pages/s, %.2f us a page); swap pages from %s.\n", moved,
	       po->raw_rate, 1e6 / po->raw_rate,
	       po->swap_vmstat ? "/proc/vmstat (the machine's: this cgroup does not count them)"
			       : "the cgroup's memory.stat");
	for (int k = 0; k < np; k++)
		for (int i = 0; i < po->nr; i++) {
			if (*ps[k].heca_note[i])
				printf("Note: %s %s\n", ps[k].name, ps[k].heca_note[i]);
			if (*ps[k].swap_note[i])
				printf("Note: %s %s\n", ps[k].name, ps[k].swap_note[i]);
		}
	fflush(stdout);
}

static void add_figures(struct popts *po, struct prog *ps, int np, struct bench_result *r)
{
	const char *sw = po->swapfile ? "swap file" : "zram swap";

	for (int k = 0; k < np; k++) {
		struct prog *p = &ps[k];
		bench_fig(r, p->name, "time, unconstrained", "s", NAN, p->unc_s, "unconstrained");
		bench_fig(r, p->name, "peak RSS, unconstrained", "MiB", NAN, p->unc_rss / MiB,
			  "unconstrained");
		if (k == 0)
			bench_fig(r, "raw", "pipelined page rate", "pages/s", NAN, po->raw_rate, "");
		for (int i = 0; i < po->nr; i++) {
			char f[48];
			const char *l = po->rt[i].label;
			snprintf(f, sizeof(f), "limit, %.23s", l);
			bench_fig(r, p->name, f, "MiB", p->heca_limit[i] / MiB,
				  p->heca_limit[i] / MiB, sw);
			snprintf(f, sizeof(f), "time, %.23s", l);
			bench_fig(r, p->name, f, "s", p->heca_s[i], p->swap_s[i], sw);
			snprintf(f, sizeof(f), "slowdown, %.23s", l);
			bench_fig(r, p->name, f, "x", p->heca_s[i] / p->unc_s,
				  p->swap_s[i] / p->unc_s, sw);
			snprintf(f, sizeof(f), "peak RSS, %.23s", l);
			bench_fig(r, p->name, f, "MiB", p->heca_rss[i] / MiB, p->swap_rss[i] / MiB,
				  sw);
			snprintf(f, sizeof(f), "swap cgroup peak, %.23s", l);
			bench_fig(r, p->name, f, "MiB", NAN, p->swap_cg_peak[i] / MiB, sw);
			snprintf(f, sizeof(f), "cgroup peak, %.23s", l);
			bench_fig(r, p->name, f, "MiB", p->heca_cg_peak[i] / MiB,
				  p->swap_cg_peak[i] / MiB, sw);
			snprintf(f, sizeof(f), "pages in, %.23s", l);
			bench_fig(r, p->name, f, "pages", p->heca_in[i], p->swap_in[i], sw);
			snprintf(f, sizeof(f), "pages out, %.23s", l);
			bench_fig(r, p->name, f, "pages", p->heca_out[i], p->swap_out[i], sw);
			snprintf(f, sizeof(f), "floor, %.23s", l);
			bench_fig(r, p->name, f, "s", floor_s(po, p->heca_in[i], p->heca_out[i]),
				  floor_s(po, p->swap_in[i], p->swap_out[i]), sw);
		}
	}
}

static int write_json(struct popts *po, struct prog *ps, int np, struct bench_result *r,
		      const char *swap_state)
{
	struct bench_json_setting set[32];
	int ns = 0;
#define SET(k, ...)                                                                                \
	do {                                                                                       \
		if (ns < (int)(sizeof(set) / sizeof(set[0]))) {                                    \
			set[ns].key = k;                                                           \
			snprintf(set[ns].value, sizeof(set[ns].value), __VA_ARGS__);               \
			ns++;                                                                      \
		}                                                                                  \
	} while (0)
	SET("size", "%llu", (unsigned long long)po->size);
	SET("ratios", "%s (memory limit : unconstrained peak RSS)", po->ratios);
	SET("runs", "%u (medians reported)", po->runs);
	SET("heca", "heca run %s --replicas %u --local %s%s%s%s -- PROGRAM",
	    po->local_cgroup ? "--sponsors LIST" : "--spawn 2", po->replicas,
	    po->local_cgroup ? "cgroup" : "LIMIT", po->prefetch_set ? " --prefetch N" : "", po->heca_args ? " " : "",
	    po->heca_args ? po->heca_args : "");
	SET("prefetch", "%s", po->prefetch_set ? "" : "heca run default");
	if (po->prefetch_set)
		snprintf(set[ns - 1].value, sizeof(set[ns - 1].value), "%u", po->prefetch);
	SET("swap", "%s", swap_state);
	SET("fairness", "%s", po->local_cgroup ? fairness_cg : fairness);
	SET("local", "%s",
	    po->local_cgroup ? "cgroup: heca run --sponsors (2 started by the bench) --local cgroup "
			       "in a memory cgroup limited to LIMIT, kernel swap off"
			     : "LIMIT");
	SET("pages_moved", "%s", moved);
	SET("raw_pipelined_rate", "%.0f pages/s (%u in flight, %d READs)", po->raw_rate, 64,
	    RAW_PAGES);
	SET("swap_pages", "%s",
	    po->swap_vmstat ? "/proc/vmstat pswpin/pswpout deltas (the cgroup does not count them)"
			    : "the cgroup's memory.stat pswpin/pswpout deltas");
	SET("cgroup_peak", "%s",
	    "memory.peak (v2, reset for the run) or memory.max_usage_in_bytes (v1)");
	SET("peak_rss",
	    "unconstrained and swap: wait4 ru_maxrss; heca: the program's VmHWM "
	    "sampled every %d ms (heca run's sponsors hold the evicted pages)",
	    SAMPLE_MS);
	SET("time", "fork to reap of the whole command; heca's includes starting 2 sponsors");
	if (po->heca_args)
		SET("heca_args", "%s", po->heca_args);
	if (po->cmd) {
		SET("command", "%s", "");
		for (int i = 0; po->cmd[i]; i++) {
			size_t l = strlen(set[ns - 1].value);
			snprintf(set[ns - 1].value + l, sizeof(set[ns - 1].value) - l, "%s%s",
				 i ? " " : "", po->cmd[i]);
		}
	}
	for (int k = 0; k < np; k++) {
		SET(ps[k].name, "%s", ps[k].what);
		for (int i = 0; i < po->nr; i++) {
			if (*ps[k].heca_note[i])
				SET("note", "%s %s", ps[k].name, ps[k].heca_note[i]);
			if (*ps[k].swap_note[i])
				SET("note", "%s %s", ps[k].name, ps[k].swap_note[i]);
		}
	}
#undef SET
	if (bench_write_json(r, po->json, "programs", set, ns))
		return -1;
	printf("figures written to %s\n", po->json);
	return 0;
}

/* Slowdown against the memory ratio: one colour per workload, heca solid, swap dashed. */
static int plot(struct popts *po, struct prog *ps, int np)
{
	char dir[] = "/tmp/heca-plot.XXXXXX", data[64], script[64];
	FILE *f;
	int st, first = 1;
	pid_t pid;

	if (!mkdtemp(dir)) {
		fprintf(stderr, "heca bench programs: mkdtemp: %s\n", strerror(errno));
		return -1;
	}
	snprintf(data, sizeof(data), "%s/slowdown.dat", dir);
	snprintf(script, sizeof(script), "%s/slowdown.gp", dir);
	f = fopen(data, "w");
	if (!f)
		goto io_fail;
	for (int k = 0; k < np; k++) {
		fprintf(f, "# %s: limit/peak label heca_slowdown swap_slowdown heca_floor "
			   "swap_floor (the slowdowns the pages moved imply at the raw rate)\n",
			ps[k].name);
		for (int i = 0; i < po->nr; i++) {
			const struct prog *p = &ps[k];
			double h = p->heca_s[i] / p->unc_s, s = p->swap_s[i] / p->unc_s;
			double hf = 1 + floor_s(po, p->heca_in[i], p->heca_out[i]) / p->unc_s;
			double sf = 1 + floor_s(po, p->swap_in[i], p->swap_out[i]) / p->unc_s;
			fprintf(f, "%.6f \"%s\" ", po->rt[i].frac, po->rt[i].label);
			fprintf(f, isnan(h) ? "null " : "%.6g ", h);
			fprintf(f, isnan(s) ? "null " : "%.6g ", s);
			fprintf(f, isnan(hf) ? "null " : "%.6g ", hf);
			fprintf(f, isnan(sf) ? "null\n" : "%.6g\n", sf);
		}
		fprintf(f, "\n\n");
	}
	fclose(f);
	f = fopen(script, "w");
	if (!f)
		goto io_fail;
	fprintf(f,
		"set terminal pngcairo size 900,560 noenhanced\n"
		"set output '%s'\n"
		"set datafile missing 'null'\n"
		"set title 'heca bench programs: slowdown against the memory limit'\n"
		"set xlabel 'memory limit : unconstrained peak RSS'\n"
		"set ylabel 'slowdown (x, log scale)'\n"
		"set logscale y\n"
		"set grid\n"
		"set key top left\n"
		"set offsets graph 0.05, graph 0.05, 0, 0\n"
		"set xrange [*:*] reverse\n"
		"plot ",
		po->plot);
	for (int k = 0; k < np; k++) {
		int have_swap = 0, have_hf = 0, have_sf = 0;
		for (int i = 0; i < po->nr; i++) {
			have_swap |= !isnan(ps[k].swap_s[i]);
			have_hf |= !isnan(floor_s(po, ps[k].heca_in[i], ps[k].heca_out[i]));
			have_sf |= !isnan(floor_s(po, ps[k].swap_in[i], ps[k].swap_out[i]));
		}
		fprintf(f,
			"%s'%s' index %d using 1:3:xtic(2) with linespoints lw 2 pt 7 lc %d dt 1 "
			"title '%s heca'",
			first ? "" : ", ", data, k, k + 1, ps[k].name);
		first = 0;
		if (have_swap)
			fprintf(f,
				", '%s' index %d using 1:4 with linespoints lw 2 pt 5 lc %d dt 2 "
				"title '%s %s'",
				data, k, k + 1, ps[k].name,
				po->swapfile ? "swap file" : "zram swap");
		if (have_hf)
			fprintf(f,
				", '%s' index %d using 1:5 with linespoints lw 1 pt 6 lc %d dt 3 "
				"title '%s heca floor'",
				data, k, k + 1, ps[k].name);
		if (have_sf)
			fprintf(f,
				", '%s' index %d using 1:6 with linespoints lw 1 pt 4 lc %d dt 4 "
				"title '%s swap floor'",
				data, k, k + 1, ps[k].name);
	}
	fprintf(f, "\n");
	fclose(f);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		execlp("gnuplot", "gnuplot", script, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
		if (pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 127)
			fprintf(stderr,
				"heca bench programs: --plot needs gnuplot (apt-get install "
				"gnuplot-nox); its input is kept in %s\n",
				dir);
		else
			fprintf(stderr,
				"heca bench programs: gnuplot failed; its input is kept in "
				"%s\n",
				dir);
		return -1;
	}
	printf("plot written to %s\n", po->plot);
	unlink(data);
	unlink(script);
	rmdir(dir);
	return 0;
io_fail:
	fprintf(stderr, "heca bench programs: writing in %s: %s\n", dir, strerror(errno));
	unlink(data);
	rmdir(dir);
	return -1;
}

static void remove_tmpdir(struct popts *po)
{
	char p[PATH_MAX + 16];

	if (!*po->tmpdir)
		return;
	snprintf(p, sizeof(p), "%s/sort.in", po->tmpdir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/stderr", po->tmpdir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/stats", po->tmpdir);
	unlink(p);
	rmdir(po->tmpdir);
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int bench_programs(int argc, char **argv)
{
	static const struct option lo[] = {{"size", required_argument, 0, 'S'},
					   {"ratios", required_argument, 0, 'R'},
					   {"runs", required_argument, 0, 'n'},
					   {"workloads", required_argument, 0, 'W'},
					   {"replicas", required_argument, 0, 'C'},
					   {"prefetch", required_argument, 0, 'p'},
					   {"no-swap", no_argument, 0, 'N'},
					   {"swapfile", required_argument, 0, 'F'},
					   {"timeout", required_argument, 0, 'T'},
					   {"seed", required_argument, 0, 'r'},
					   {"json", required_argument, 0, 'j'},
					   {"plot", required_argument, 0, 'P'},
					   {"quiet", no_argument, 0, 'q'},
					   {"name", required_argument, 0, 'm'},
					   {"heca-args", required_argument, 0, 'a'},
					   {"local", required_argument, 0, 'l'},
					   {"help", no_argument, 0, 'h'},
					   {0, 0, 0, 0}};
	struct popts po = {.size = 512 * MiB, .seed = 1, .runs = 3, .replicas = 1, .raw_rate = NAN};
	struct prog ps[3];
	struct bench_result res = {0};
	const char *tmp = getenv("TMPDIR");
	char swap_state[160] = "";
	int np = 0, c, rc = 0, have_swap = 0;
	double t_start = bench_now();
	uint64_t v;
	ssize_t n;
#ifdef HECA_HAVE_SWAPBASE
	struct swapbase sb;
	char err[256];

	memset(&sb, 0, sizeof(sb));
#endif

	setvbuf(stdout, NULL, _IOLBF, 0);
	optind = 1;
	while ((c = getopt_long(argc, argv, "hq", lo, NULL)) != -1) {
		switch (c) {
		case 'S':
			if (heca_parse_size(optarg, &po.size) || po.size < 8 * MiB) {
				fprintf(stderr,
					"heca bench programs: bad --size '%s' (at least 8M)\n",
					optarg);
				return 2;
			}
			break;
		case 'R':
			po.ratios = optarg;
			break;
		case 'n':
			if (parse_u64(optarg, MAX_RUNS, &v) || !v) {
				fprintf(stderr, "heca bench programs: --runs must be 1..%d\n",
					MAX_RUNS);
				return 2;
			}
			po.runs = (unsigned int)v;
			break;
		case 'W':
			po.workloads = optarg;
			break;
		case 'C':
			if (parse_u64(optarg, 4, &v) || !v) {
				fprintf(stderr, "heca bench programs: --replicas must be 1..4\n");
				return 2;
			}
			po.replicas = (unsigned int)v;
			break;
		case 'p':
			if (parse_u64(optarg, 255, &v)) {
				fprintf(stderr, "heca bench programs: --prefetch must be 0..255\n");
				return 2;
			}
			po.prefetch = (unsigned int)v;
			po.prefetch_set = 1;
			break;
		case 'N':
			po.no_swap = 1;
			break;
		case 'F':
			po.swapfile = optarg;
			break;
		case 'T': {
			char *end;
			po.timeout = strtod(optarg, &end);
			if (end == optarg || *end || !(po.timeout > 0)) {
				fprintf(stderr, "heca bench programs: bad --timeout '%s'\n",
					optarg);
				return 2;
			}
			break;
		}
		case 'r':
			if (parse_u64(optarg, UINT64_MAX, &po.seed)) {
				fprintf(stderr, "heca bench programs: bad --seed '%s'\n", optarg);
				return 2;
			}
			break;
		case 'j':
			po.json = optarg;
			break;
		case 'P':
			po.plot = optarg;
			break;
		case 'q':
			po.quiet = 1;
			break;
		case 'm':
			po.cmd_name = optarg;
			break;
		case 'a':
			po.heca_args = optarg;
			break;
		case 'l':
			if (strcmp(optarg, "cgroup")) {
				fprintf(stderr,
					"heca bench programs: --local knows only 'cgroup' (the "
					"limits come from --ratios)\n");
				return 2;
			}
			po.local_cgroup = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc && strcmp(argv[optind - 1], "--")) {
		fprintf(stderr,
			"heca bench programs: unexpected argument '%s' (a command goes after "
			"\"--\")\n",
			argv[optind]);
		usage(stderr);
		return 2;
	}
	if (optind < argc) {
		const char *b = strrchr(argv[optind], '/');
		po.cmd = argv + optind;
		if (!po.cmd_name)
			po.cmd_name = b ? b + 1 : argv[optind];
		if (!*po.cmd_name || strchr(po.cmd_name, '|') || strlen(po.cmd_name) > 40) {
			fprintf(stderr, "heca bench programs: bad --name '%s'\n", po.cmd_name);
			return 2;
		}
		if (!po.workloads)
			po.workloads = "";
	} else if (po.cmd_name) {
		fprintf(stderr, "heca bench programs: --name names a command after \"--\"\n");
		return 2;
	}
	if (!po.ratios)
		po.ratios = "1:2,1:4";
	po.nr = bench_parse_ratios(po.ratios, po.rt, MAX_RATIOS);
	if (po.nr < 0) {
		fprintf(stderr,
			"heca bench programs: bad --ratios '%s' (want A:B,... with 0 < A <= B, at "
			"most %d)\n",
			po.ratios, MAX_RATIOS);
		return 2;
	}
	if (!po.workloads)
		po.workloads = "python3,sort";
	{
		char buf[128], *save = NULL, *t;
		snprintf(buf, sizeof(buf), "%s", po.workloads);
		if (!*po.workloads && !po.cmd) {
			fprintf(stderr, "heca bench programs: --workloads is empty\n");
			return 2;
		}
		for (t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
			if (strcmp(t, "python3") && strcmp(t, "sort")) {
				fprintf(
				    stderr,
				    "heca bench programs: unknown workload '%s' (python3, sort)\n",
				    t);
				return 2;
			}
	}
	if (po.swapfile && po.no_swap) {
		fprintf(stderr, "heca bench programs: --swapfile and --no-swap contradict\n");
		return 2;
	}
	if (po.local_cgroup && geteuid() != 0) {
		fprintf(stderr, "heca bench programs: --local cgroup needs root (a memory cgroup)\n");
		return 1;
	}
	bench_progress_quiet(po.quiet);
	n = readlink("/proc/self/exe", po.heca, sizeof(po.heca) - 1);
	if (n <= 0) {
		fprintf(stderr, "heca bench programs: /proc/self/exe: %s\n", strerror(errno));
		return 1;
	}
	po.heca[n] = '\0';

	/* The kernel swap baseline first: a machine that cannot do it should say so at once. */
	if (po.no_swap && !po.local_cgroup) {
		snprintf(swap_state, sizeof(swap_state), "skipped (--no-swap)");
	} else if (geteuid() != 0) {
		snprintf(swap_state, sizeof(swap_state),
			 "skipped: the kernel swap baseline needs root (a memory cgroup and zram)");
		fprintf(stderr, "heca bench programs: %s\n", swap_state);
	} else {
#ifdef HECA_HAVE_SWAPBASE
		/* zram is allocated as it fills: room for the largest program, twice. */
		rc = swapbase_setup(&sb, 2 * po.size + 256 * MiB, po.swapfile, err, sizeof(err));
		if (rc == -EPERM || rc == -ENODEV) {
			snprintf(swap_state, sizeof(swap_state), "skipped: %.140s", err);
			fprintf(stderr, "heca bench programs: kernel swap baseline %s\n",
				swap_state);
			rc = 0;
		} else if (rc) {
			fprintf(stderr, "heca bench programs: kernel swap baseline: %s\n", err);
			return 1;
		} else if (po.no_swap) {
			snprintf(swap_state, sizeof(swap_state), "skipped (--no-swap)");
		} else {
			have_swap = 1;
			snprintf(swap_state, sizeof(swap_state),
				 "%s, memory cgroup limited to LIMIT, swappiness 60",
				 po.swapfile ? "swap file" : "zram swap");
		}
#else
		snprintf(swap_state, sizeof(swap_state),
			 "skipped: this build has no kernel swap baseline (bench/swapbase.c)");
		fprintf(stderr, "heca bench programs: %s\n", swap_state);
#endif
	}
#ifdef HECA_HAVE_SWAPBASE
	if (po.local_cgroup && !sb.active) {
		fprintf(stderr, "heca bench programs: --local cgroup needs the memory cgroup of the "
				"kernel swap baseline: %s\n",
			swap_state);
		return 1;
	}
#else
	if (po.local_cgroup) {
		fprintf(stderr, "heca bench programs: --local cgroup: this build has no memory "
				"cgroup runs (bench/swapbase.c)\n");
		return 1;
	}
#endif
	/* Sponsors outside any cgroup of ours: the raw pipelined rate, and heca's with
	 * --local cgroup. Room for the largest program, twice, as the swap. */
	{
		char cap[32];
		snprintf(cap, sizeof(cap), "%llu", (unsigned long long)(2 * po.size + 256 * MiB));
		if (cli_spawn_sponsors(&po.sp, 2, cap, 1)) {
			rc = -1;
			goto out;
		}
		if (bench_raw_pipelined(po.sp.list, RAW_PAGES, &po.raw_rate)) {
			rc = -1;
			goto out;
		}
		printf("raw pipelined page rate: %.0f pages/s (%.2f us a page) on 2 sponsors\n",
		       po.raw_rate, 1e6 / po.raw_rate);
	}

	snprintf(po.tmpdir, sizeof(po.tmpdir), "%s/heca-bench-programs.XXXXXX",
		 tmp && *tmp ? tmp : "/var/tmp");
	if (!mkdtemp(po.tmpdir)) {
		fprintf(stderr, "heca bench programs: mkdtemp %s: %s\n", po.tmpdir,
			strerror(errno));
		po.tmpdir[0] = '\0';
		rc = -1;
		goto out;
	}
	snprintf(po.stats_file, sizeof(po.stats_file), "%s/stats", po.tmpdir);
	memset(ps, 0, sizeof(ps));
	for (int k = 0; k < 2; k++) {
		const char *name = k ? "sort" : "python3";
		char list[130];
		snprintf(list, sizeof(list), ",%s,", po.workloads);
		{
			char key[16];
			snprintf(key, sizeof(key), ",%s,", name);
			if (!strstr(list, key))
				continue;
		}
		ps[np].name = name;
		ps[np].unc_s = ps[np].unc_rss = NAN;
		for (int i = 0; i < MAX_RATIOS; i++)
			ps[np].heca_s[i] = ps[np].heca_rss[i] = ps[np].heca_limit[i] =
			    ps[np].swap_s[i] = ps[np].swap_rss[i] = ps[np].swap_cg_peak[i] =
			    ps[np].heca_cg_peak[i] = ps[np].heca_in[i] = ps[np].heca_out[i] =
				ps[np].swap_in[i] = ps[np].swap_out[i] = NAN;
		if ((k ? setup_sort : setup_python)(&po, &ps[np]) == 0)
			np++;
		else
			free(ps[np].script);
	}
	if (po.cmd) {
		ps[np].name = po.cmd_name;
		ps[np].unc_s = ps[np].unc_rss = NAN;
		for (int i = 0; i < MAX_RATIOS; i++)
			ps[np].heca_s[i] = ps[np].heca_rss[i] = ps[np].heca_limit[i] =
			    ps[np].swap_s[i] = ps[np].swap_rss[i] = ps[np].swap_cg_peak[i] =
			    ps[np].heca_cg_peak[i] = ps[np].heca_in[i] = ps[np].heca_out[i] =
				ps[np].swap_in[i] = ps[np].swap_out[i] = NAN;
		if (setup_cmd(&po, &ps[np]) == 0)
			np++;
	}
	if (!np) {
		fprintf(stderr, "heca bench programs: no workload can run here\n");
		rc = -1;
		goto out;
	}
	po.total = (unsigned int)np * po.runs * (1 + (unsigned int)po.nr * (1 + have_swap));
	printf("programs: ratios %s, %u runs each, heca run %s --replicas %u%s%s; swap: %s\n",
	       po.ratios, po.runs, po.local_cgroup ? "--sponsors LIST" : "--spawn 2", po.replicas,
	       po.prefetch_set ? " --prefetch N" : "",
	       po.local_cgroup ? " --local cgroup in the memory cgroup, kernel swap off" : "",
	       swap_state);

	for (int k = 0; k < np; k++) {
		struct prog *p = &ps[k];
		if (measure_unconstrained(&po, p)) {
			rc = -1;
			continue;
		}
		for (int i = 0; i < po.nr; i++) {
#ifdef HECA_HAVE_SWAPBASE
			if (measure_heca(&po, p, i, &sb))
				rc = -1;
			if (po.local_cgroup && !sb.active) /* torn down by a signal */
				goto out;
#else
			if (measure_heca(&po, p, i, NULL))
				rc = -1;
#endif
		}
#ifdef HECA_HAVE_SWAPBASE
		for (int i = 0; have_swap && i < po.nr; i++) {
			int r = measure_swap(&po, p, i, &sb);
			if (r)
				rc = -1;
			if (!sb.active) /* torn down by a signal */
				goto out;
		}
#endif
	}

out:
#ifdef HECA_HAVE_SWAPBASE
	swapbase_teardown(&sb);
#endif
	if (po.sp.n)
		cli_stop_sponsors(&po.sp);
	if (np) {
		print_table(&po, ps, np, have_swap);
		add_figures(&po, ps, np, &res);
		if (po.json && write_json(&po, ps, np, &res, swap_state))
			rc = -1;
		if (po.plot && plot(&po, ps, np))
			rc = -1;
	}
	printf("heca bench programs took %.1f s%s\n", bench_now() - t_start,
	       rc ? "; SOME RUNS FAILED (see above)" : "");
	for (int k = 0; k < np; k++)
		free(ps[k].script);
	free(res.fig);
	remove_tmpdir(&po);
	return rc ? 1 : 0;
}
