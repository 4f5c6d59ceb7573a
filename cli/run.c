// SPDX-License-Identifier: MIT
/*
 * run.c - `heca run [options] -- PROGRAM [ARGS...]`: run an unmodified program with heca
 * preloaded (libheca-preload.so), so that its large private anonymous memory is sponsored.
 * The settings travel to the program (and to what it starts) as HECA_* environment variables.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "preload_stats.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: heca run [OPTIONS] -- PROGRAM [ARGS...]\n"
		"\n"
		"Run an unmodified, dynamically linked program with more memory than the machine\n"
		"gives it: its large private anonymous memory blocks (malloc of large blocks,\n"
		"anonymous mmap, reservations opened later) live locally up to the budget and at\n"
		"memory sponsors beyond it. Each process the program starts (fork, exec) has a\n"
		"budget of its own.\n"
		"\n"
		"options (each also an environment variable, for programs started another way):\n"
		"  --sponsors LIST      HOST:PORT,... of running hecad sponsors     HECA_SPONSORS\n"
		"  --cluster FILE       a cluster file (docs/cluster.md)            HECA_CLUSTER\n"
		"  --cluster-id HEX     the cluster's 32-hex-digit id               HECA_CLUSTER_ID\n"
		"  --key-file FILE      the cluster key (hecad --gen-key)           HECA_KEY_FILE\n"
		"  --spawn N            start N sponsors on loopback for this run (default 2 when\n"
		"                       neither --sponsors nor --cluster is given)\n"
		"  --capacity SIZE      capacity of each spawned sponsor (default 8G)\n"
		"  --local SIZE|cgroup  local budget per process (default 64M); `cgroup`: 75%% of the\n"
		"                       memory cgroup limit the program runs in      HECA_LOCAL\n"
		"  --replicas N         copies of each stripe (default 2 with two or more sponsors)\n"
		"                                                                   HECA_REPLICAS\n"
		"  --prefetch PAGES     pages fetched around a fault (default 16, 0: off)\n"
		"                                                                   HECA_PREFETCH\n"
		"  --inactive PCT       share of the budget kept as the inactive list: local copies\n"
		"                       of pages just evicted, so that pages in use stay (0 to 50;\n"
		"                       default 0: plain first-in first-out)        HECA_INACTIVE\n"
		"  --min-size SIZE      sponsor every block of at least SIZE, nothing smaller (default:\n"
		"                       4M always, 256K inside a reservation or once a quarter of the\n"
		"                       budget is held outside heca) HECA_MIN_SIZE\n"
		"  --local-limit SIZE   hard limit on local sponsored memory, with the pages no\n"
		"                       sponsor had room for (default twice --local) HECA_LOCAL_LIMIT\n"
		"  --grace SECONDS      how long a sponsor that stopped answering is waited for\n"
		"                       before the pages only it holds are lost (default 60)\n"
		"                                                                   HECA_GRACE\n"
		"  --overcommit         sponsor blocks larger than the sponsors' free room (by\n"
		"                       default such a block stays local memory)    HECA_OVERCOMMIT\n"
		"  --stats              print heca's counters for the program when it exits\n"
		"                       (through HECA_STATS_FILE)\n"
		"  -v, --verbose        log what heca does on stderr                HECA_VERBOSE\n"
		"  -h, --help           this text\n"
		"\n"
		"The exit status is the program's (128+N if signal N ended it); 127 if it cannot be\n"
		"found, 126 if it cannot be executed, 1 if heca cannot start, 2 for a bad option.\n"
		"`heca status --pid PID` shows a running process's counters.\n"
		"Supported and not: docs/transparent.md.\n");
}

static int bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "heca run: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n(heca run --help lists the options)\n");
	return 2;
}

/* The preload library: HECA_PRELOAD, or beside this executable. */
static int preload_path(char *out, size_t len)
{
	char self[PATH_MAX];
	ssize_t n;

	if (getenv("HECA_PRELOAD")) {
		snprintf(out, len, "%s", getenv("HECA_PRELOAD"));
	} else {
		n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (n <= 0)
			return -errno;
		self[n] = '\0';
		snprintf(out, len, "%s/libheca-preload.so", dirname(self));
	}
	return access(out, R_OK) ? -errno : 0;
}

/* Open heca once with the settings the program will get, so that a sponsor that cannot be
 * reached or a kernel without userfaultfd is said here, clearly, before the program runs. */
static int preflight(void)
{
	struct heca_options o;
	struct heca *h;
	const char *v;
	int rc;

	heca_options_init(&o);
	o.sponsors = getenv("HECA_SPONSORS");
	o.cluster_file = getenv("HECA_CLUSTER");
	o.key_file = getenv("HECA_KEY_FILE");
	if ((v = getenv("HECA_CLUSTER_ID")) && *v)
		heca_parse_id(v, o.cluster_id);
	if ((v = getenv("HECA_REPLICAS")) && *v)
		o.replicas = (unsigned int)strtoul(v, NULL, 10);
	if ((v = getenv("HECA_LOCAL")) && !strcmp(v, "cgroup"))
		o.flags |= HECA_OPT_BUDGET_CGROUP;
	else if (v)
		heca_parse_size(v, &o.local_budget);
	rc = heca_open(&o, &h);
	if (rc) {
		fprintf(stderr, "heca run: cannot start heca: %s\n",
			*heca_last_error() ? heca_last_error() : heca_strerror(rc));
		return rc;
	}
	heca_close(h);
	return 0;
}

#define MAX_LEFT 256

static pid_t child_pid;
/* Processes of the program that outlived the one heca run started (they were reparented to
 * it, a subreaper): signals go to them once the first has ended. */
static volatile pid_t left[MAX_LEFT];
static volatile int nleft;

static void forward(int sig)
{
	if (child_pid > 0) {
		kill(child_pid, sig);
		return;
	}
	for (int i = 0; i < nleft; i++)
		if (left[i] > 0)
			kill(left[i], sig);
}

/* Our children other than the sponsors we started, into left[]: how many. */
static int program_children(const struct spawned *sp)
{
	char path[64], buf[4096];
	ssize_t len;
	int fd, n = 0;
	char *p, *end;

	snprintf(path, sizeof(path), "/proc/self/task/%d/children", (int)getpid());
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	len = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len < 0)
		return -1;
	buf[len] = '\0';
	for (p = buf;; p = end) {
		long pid = strtol(p, &end, 10);
		bool ours = false;
		if (end == p)
			break;
		for (int i = 0; i < sp->n; i++)
			ours |= sp->pid[i] == pid;
		if (!ours && n < MAX_LEFT)
			left[n++] = (pid_t)pid;
	}
	nleft = n;
	return n;
}

/*
 * The program may leave processes behind when the one heca run started ends (a wrapper such
 * as time(1) killed by a signal, a shell that put a job in the background): they still use
 * sponsored memory, so the sponsors heca run started must outlive them. heca run is their
 * subreaper; wait until none is left.
 */
static void wait_program(const struct spawned *sp)
{
	for (;;) {
		int n = program_children(sp), st;
		pid_t pid;

		if (n <= 0)
			return; /* none, or no /proc to tell: nothing more to wait for */
		pid = waitpid(-1, &st, 0);
		if (pid < 0 && errno != EINTR)
			return;
	}
}

/* Print the statistics the program's processes left in file; the first process's first. */
static void print_stats(const char *file, pid_t top)
{
	struct heca_preload_stats rec;
	int fd = open(file, O_RDONLY | O_CLOEXEC), found = 0;

	if (fd < 0)
		return;
	while (read(fd, &rec, sizeof(rec)) == (ssize_t)sizeof(rec)) {
		if (rec.magic != HECA_PRELOAD_STATS_MAGIC)
			break;
		fprintf(stderr, "heca run: statistics of process %lld%s:\n", (long long)rec.pid,
			rec.pid == top ? " (the program)" : "");
		cli_print_stats(stderr, &rec.st);
		found++;
	}
	close(fd);
	if (!found)
		fprintf(stderr, "heca run: no statistics: no process of the program made a "
				"sponsored allocation and exited normally\n");
}

/* The file execvp() would run for name, into out; false if none is found. */
static bool find_program(const char *name, char *out, size_t len)
{
	const char *path = getenv("PATH");

	if (strchr(name, '/')) {
		snprintf(out, len, "%s", name);
		return access(out, X_OK) == 0;
	}
	for (path = path ? path : "/usr/local/bin:/usr/bin:/bin"; *path;) {
		size_t n = strcspn(path, ":");
		snprintf(out, len, "%.*s/%s", (int)n ? (int)n : 1, n ? path : ".", name);
		if (access(out, X_OK) == 0)
			return true;
		path += n + (path[n] == ':');
	}
	return false;
}

/* Why the dynamic loader will not load heca into the program, or NULL if it will (as far as
 * its file tells: a script's interpreter is judged when it runs). */
static const char *why_not_covered(const char *file)
{
	Elf64_Ehdr eh;
	struct stat st;
	bool interp = false;
	int fd = open(file, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st)) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	if (((st.st_mode & S_ISUID) && st.st_uid != getuid()) ||
	    ((st.st_mode & S_ISGID) && st.st_gid != getgid())) {
		close(fd);
		return "it is set-user-ID or set-group-ID, and the loader ignores LD_PRELOAD for it";
	}
	if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) || memcmp(eh.e_ident, ELFMAG, SELFMAG) ||
	    eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr)) {
		close(fd);
		return NULL; /* a script, or not for this machine: the kernel will say */
	}
	for (unsigned int i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + i * sizeof(ph))) != (ssize_t)sizeof(ph))
			break;
		interp |= ph.p_type == PT_INTERP;
	}
	close(fd);
	return interp ? NULL : "it is statically linked, and only the dynamic loader reads LD_PRELOAD";
}

int cmd_run(int argc, char **argv)
{
	static const struct option lo[] = {
		{"sponsors", required_argument, NULL, 's'},
		{"cluster", required_argument, NULL, 'c'},
		{"cluster-id", required_argument, NULL, 'I'},
		{"key-file", required_argument, NULL, 'k'},
		{"spawn", required_argument, NULL, 'n'},
		{"capacity", required_argument, NULL, 'C'},
		{"local", required_argument, NULL, 'l'},
		{"replicas", required_argument, NULL, 'r'},
		{"prefetch", required_argument, NULL, 'p'},
		{"inactive", required_argument, NULL, 'i'},
		{"min-size", required_argument, NULL, 'm'},
		{"local-limit", required_argument, NULL, 'L'},
		{"grace", required_argument, NULL, 'g'},
		{"overcommit", no_argument, NULL, 'O'},
		{"stats", no_argument, NULL, 'S'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *capacity = "8G";
	char preload[PATH_MAX], env[PATH_MAX + 64], stats_file[64] = "";
	struct spawned sp = {0};
	struct reaper *reaper = NULL;
	int spawn = -1, c, stats = 0, rc, pfd[2], status;
	uint64_t x;
	uint8_t id[16];

	while ((c = getopt_long(argc, argv, "+vh", lo, NULL)) != -1) {
		char *end;
		unsigned long n;
		switch (c) {
		case 's': setenv("HECA_SPONSORS", optarg, 1); break;
		case 'c': setenv("HECA_CLUSTER", optarg, 1); break;
		case 'I':
			if (heca_parse_id(optarg, id))
				return bad("--cluster-id %s: not 32 hex digits", optarg);
			setenv("HECA_CLUSTER_ID", optarg, 1);
			break;
		case 'k': setenv("HECA_KEY_FILE", optarg, 1); break;
		case 'n':
			n = strtoul(optarg, &end, 10);
			if (*end || !*optarg || n < 1 || n > CLI_MAX_SPAWN)
				return bad("--spawn %s: give 1 to 16 sponsors", optarg);
			spawn = (int)n;
			break;
		case 'C':
			if (heca_parse_size(optarg, &x) || x < (1u << 20))
				return bad("--capacity %s: not a size of at least 1M", optarg);
			capacity = optarg;
			break;
		case 'l':
			if (strcmp(optarg, "cgroup") && (heca_parse_size(optarg, &x) || x < 32768))
				return bad("--local %s: give a size of at least 32k, or cgroup", optarg);
			setenv("HECA_LOCAL", optarg, 1);
			break;
		case 'r':
			n = strtoul(optarg, &end, 10);
			if (*end || !*optarg || n < 1 || n > 4)
				return bad("--replicas %s: give 1 to 4", optarg);
			setenv("HECA_REPLICAS", optarg, 1);
			break;
		case 'p':
			n = strtoul(optarg, &end, 10);
			if (*end || !*optarg || n > 255)
				return bad("--prefetch %s: give 0 to 255 pages", optarg);
			setenv("HECA_PREFETCH", optarg, 1);
			break;
		case 'i':
			n = strtoul(optarg, &end, 10);
			if (*end || !*optarg || n > 50)
				return bad("--inactive %s: give 0 to 50 (percent of the budget)", optarg);
			setenv("HECA_INACTIVE", optarg, 1);
			break;
		case 'm':
			if (heca_parse_size(optarg, &x) || x < 4096)
				return bad("--min-size %s: not a size of at least 4k", optarg);
			setenv("HECA_MIN_SIZE", optarg, 1);
			break;
		case 'L':
			if (heca_parse_size(optarg, &x) || x < 32768)
				return bad("--local-limit %s: give a size of at least 32k", optarg);
			setenv("HECA_LOCAL_LIMIT", optarg, 1);
			break;
		case 'g': {
			double g = strtod(optarg, &end);
			if (*end || !*optarg || g < 0.001 || g > 4e6)
				return bad("--grace %s: give seconds, such as 60 or 2.5", optarg);
			setenv("HECA_GRACE", optarg, 1);
			break;
		}
		case 'O': setenv("HECA_OVERCOMMIT", "1", 1); break;
		case 'S': stats = 1; break;
		case 'v': setenv("HECA_VERBOSE", "1", 1); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc)
		return bad("%s", "no program given: heca run [OPTIONS] -- PROGRAM [ARGS...]");
	if (spawn > 0 && (getenv("HECA_SPONSORS") || getenv("HECA_CLUSTER")))
		return bad("%s", "--spawn starts sponsors of its own: give it without --sponsors "
				 "or --cluster");
	rc = preload_path(preload, sizeof(preload));
	if (rc) {
		fprintf(stderr, "heca run: %s: %s (set HECA_PRELOAD to the library)\n", preload,
			strerror(-rc));
		return 1;
	}
	if (spawn < 0 && !getenv("HECA_SPONSORS") && !getenv("HECA_CLUSTER"))
		spawn = 2;
	if (spawn > 0) {
		if (cli_spawn_sponsors(&sp, spawn, capacity, !getenv("HECA_VERBOSE"))) {
			fprintf(stderr, "heca run: cannot start local sponsors\n");
			return 1;
		}
		setenv("HECA_SPONSORS", sp.list, 1);
	}
	if (preflight()) {
		cli_stop_sponsors(&sp);
		return 1;
	}
	if (stats) {
		int fd;
		snprintf(stats_file, sizeof(stats_file), "/tmp/heca-run-stats.XXXXXX");
		fd = mkstemp(stats_file);
		if (fd < 0) {
			fprintf(stderr, "heca run: --stats: %s\n", strerror(errno));
			cli_stop_sponsors(&sp);
			return 1;
		}
		close(fd);
		setenv("HECA_STATS_FILE", stats_file, 1);
	}
	if (getenv("LD_PRELOAD") && *getenv("LD_PRELOAD"))
		snprintf(env, sizeof(env), "%s:%s", preload, getenv("LD_PRELOAD"));
	else
		snprintf(env, sizeof(env), "%s", preload);

	{
		char file[PATH_MAX];
		const char *why = find_program(argv[optind], file, sizeof(file))
					  ? why_not_covered(file)
					  : NULL;
		if (why)
			fprintf(stderr, "heca run: warning: %s runs without heca: %s; none of its "
					"memory will be sponsored\n", file, why);
	}
	/* A process of the program that dies without freeing its memory has it freed at
	 * once, not when the sponsors' lease of it ends: heca run watches them. */
	if (cli_reaper_open(&reaper)) {
		fprintf(stderr, "heca run: warning: the memory of a process of the program that "
				"is killed is freed only when the sponsors' lease of it ends\n");
		reaper = NULL;
	}
	/* The exec error comes back through a close-on-exec pipe: nothing means it ran. */
	if (pipe2(pfd, O_CLOEXEC)) {
		cli_reaper_close(reaper);
		cli_stop_sponsors(&sp);
		return 1;
	}
	fflush(NULL);
	/* Processes the program leaves behind become ours to wait for (wait_program). */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	child_pid = fork();
	if (child_pid < 0) {
		fprintf(stderr, "heca run: fork: %s\n", strerror(errno));
		cli_reaper_close(reaper);
		cli_stop_sponsors(&sp);
		return 1;
	}
	if (child_pid == 0) {
		int err;
		setenv("LD_PRELOAD", env, 1);
		execvp(argv[optind], argv + optind);
		err = errno;
		if (write(pfd[1], &err, sizeof(err)) < 0)
			_exit(127);
		_exit(err == ENOENT ? 127 : 126);
	}
	close(pfd[1]);
	if (reaper && cli_reaper_start(reaper)) {
		fprintf(stderr, "heca run: warning: cannot watch the program's processes: the "
				"memory of one that is killed is freed when the sponsors' lease ends\n");
		cli_reaper_close(reaper);
		reaper = NULL;
	}
	signal(SIGINT, forward);
	signal(SIGTERM, forward);
	signal(SIGHUP, forward);
	signal(SIGQUIT, forward);
	{
		int err;
		if (read(pfd[0], &err, sizeof(err)) == (ssize_t)sizeof(err)) {
			fprintf(stderr, "heca run: cannot execute '%s': %s\n", argv[optind],
				strerror(err));
			rc = err == ENOENT ? 127 : 126;
			waitpid(child_pid, NULL, 0);
			close(pfd[0]);
			cli_reaper_close(reaper);
			cli_stop_sponsors(&sp);
			if (*stats_file)
				unlink(stats_file);
			return rc;
		}
		close(pfd[0]);
	}
	while (waitpid(child_pid, &status, 0) < 0)
		if (errno != EINTR) {
			status = 1 << 8;
			break;
		}
	{
		pid_t first = child_pid;
		child_pid = -1; /* signals go to what is left of the program */
		wait_program(&sp);
		child_pid = first;
	}
	cli_reaper_close(reaper); /* every process has ended: what is still noted is freed */
	if (WIFSIGNALED(status)) {
		rc = 128 + WTERMSIG(status);
		fprintf(stderr, "heca run: %s ended by signal %d (%s)\n", argv[optind],
			WTERMSIG(status), strsignal(WTERMSIG(status)));
	} else {
		rc = WEXITSTATUS(status);
	}
	{
		/* A program killed without a word leaves its control socket behind. */
		char path[128];
		cli_control_path(child_pid, path, sizeof(path));
		unlink(path);
	}
	if (*stats_file) {
		print_stats(stats_file, child_pid);
		unlink(stats_file);
	}
	cli_stop_sponsors(&sp);
	return rc;
}
