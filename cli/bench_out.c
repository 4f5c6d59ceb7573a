// SPDX-License-Identifier: MIT
/*
 * bench_out.c - what `heca bench` shows: the progress line, latency percentiles, the final
 * Markdown table, the JSON file with machine info, the qsort overhead plot (gnuplot), and
 * the counters of one run in a memory cgroup (peak, pages swapped, OOM kills).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

void bench_fig(struct bench_result *r, const char *workload, const char *figure, const char *unit,
	       double heca, double base, const char *base_label)
{
	struct bench_fig *f;

	if (r->n == r->cap) {
		int cap = r->cap ? r->cap * 2 : 32;
		void *p = realloc(r->fig, (size_t)cap * sizeof(*r->fig));
		if (!p) {
			fprintf(stderr, "heca bench: out of memory\n");
			exit(1);
		}
		r->fig = p;
		r->cap = cap;
	}
	f = &r->fig[r->n++];
	memset(f, 0, sizeof(*f));
	snprintf(f->workload, sizeof(f->workload), "%s", workload);
	snprintf(f->figure, sizeof(f->figure), "%s", figure);
	snprintf(f->unit, sizeof(f->unit), "%s", unit);
	snprintf(f->base_label, sizeof(f->base_label), "%s", base_label ? base_label : "");
	f->heca = heca;
	f->base = base;
}

const struct bench_fig *bench_find(const struct bench_result *r, const char *workload,
				   const char *figure)
{
	for (int i = r->n - 1; i >= 0; i--)
		if (!strcmp(r->fig[i].workload, workload) && !strcmp(r->fig[i].figure, figure))
			return &r->fig[i];
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

void bench_lat_summary(double *s, size_t n, struct bench_lat *out)
{
	double sum = 0;

	memset(out, 0, sizeof(*out));
	out->n = n;
	if (!n) {
		out->p50 = out->p90 = out->p99 = out->mean = out->max = NAN;
		return;
	}
	qsort(s, n, sizeof(*s), cmp_double);
	for (size_t i = 0; i < n; i++)
		sum += s[i];
	out->p50 = s[(size_t)((double)(n - 1) * 0.50)];
	out->p90 = s[(size_t)((double)(n - 1) * 0.90)];
	out->p99 = s[(size_t)((double)(n - 1) * 0.99)];
	out->max = s[n - 1];
	out->mean = sum / (double)n;
}

double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct {
	int quiet, tty, shown;
	double last;
} prog;

void bench_progress_quiet(int quiet)
{
	prog.quiet = quiet;
	prog.tty = isatty(2);
}

/* Rate-limited: ten updates a second on a terminal, one line every five seconds otherwise,
 * so that logs of non-interactive runs stay short. */
void bench_progress(const char *what, double fraction, double rate, const char *rate_unit)
{
	double t = bench_now();
	char line[160];

	if (prog.quiet || t - prog.last < (prog.tty ? 0.1 : 5.0))
		return;
	if (!prog.tty && !prog.last) {
		prog.last = t; /* the first line after five seconds, not at once */
		return;
	}
	prog.last = t;
	if (rate_unit && *rate_unit)
		snprintf(line, sizeof(line), "  %-28s %5.1f%%  %.0f %s", what, 100.0 * fraction,
			 rate, rate_unit);
	else
		snprintf(line, sizeof(line), "  %-28s %5.1f%%", what, 100.0 * fraction);
	if (prog.tty) {
		fprintf(stderr, "\r%-78.78s", line);
		prog.shown = 1;
	} else {
		fprintf(stderr, "%s\n", line);
	}
}

void bench_progress_end(void)
{
	if (prog.tty && prog.shown)
		fprintf(stderr, "\r%78s\r", "");
	prog.shown = 0;
	prog.last = 0;
}

static void fmt_val(char *buf, size_t len, double v, const char *unit)
{
	if (isnan(v))
		snprintf(buf, len, "-");
	else if (!strcmp(unit, "us"))
		snprintf(buf, len, fabs(v) < 1 ? "%.3f us" : "%.1f us", v);
	else if (!strcmp(unit, "s"))
		snprintf(buf, len, "%.2f s", v);
	else if (!strcmp(unit, "%"))
		snprintf(buf, len, "%.2f%%", v);
	else if (!strcmp(unit, "x"))
		snprintf(buf, len, "%.2fx", v);
	else if (!strcmp(unit, "pages/s") || !strcmp(unit, "/s"))
		snprintf(buf, len, "%.0f %s", v, unit);
	else if (fabs(v) >= 1000 || v == floor(v))
		snprintf(buf, len, "%.0f%s%s", v, *unit ? " " : "", unit);
	else
		snprintf(buf, len, "%.3g%s%s", v, *unit ? " " : "", unit);
}

static double ratio_of(const struct bench_fig *f)
{
	if (isnan(f->heca) || isnan(f->base) || f->base == 0)
		return NAN;
	return f->heca / f->base;
}

/* Rows of one workload together, workloads in the order they first appeared. */
void bench_group_rows(struct bench_result *r)
{
	struct bench_fig *g;
	int k = 0;

	if (r->n < 2)
		return;
	g = malloc((size_t)r->n * sizeof(*g));
	if (!g)
		return;
	for (int i = 0; i < r->n; i++) {
		int seen = 0;
		for (int j = 0; j < i && !seen; j++)
			seen = !strcmp(r->fig[j].workload, r->fig[i].workload);
		if (seen)
			continue;
		for (int j = i; j < r->n; j++)
			if (!strcmp(r->fig[j].workload, r->fig[i].workload))
				g[k++] = r->fig[j];
	}
	memcpy(r->fig, g, (size_t)r->n * sizeof(*g));
	free(g);
}

void bench_print_table(const struct bench_result *r)
{
	printf("\n| workload | figure | heca | baseline | ratio |\n");
	printf("|---|---|---:|---:|---:|\n");
	for (int i = 0; i < r->n; i++) {
		const struct bench_fig *f = &r->fig[i];
		char h[48], b[48], bl[80], q[24];
		double x = ratio_of(f);

		fmt_val(h, sizeof(h), f->heca, f->unit);
		fmt_val(b, sizeof(b), f->base, f->unit);
		if (!isnan(f->base) && *f->base_label)
			snprintf(bl, sizeof(bl), "%s (%s)", b, f->base_label);
		else
			snprintf(bl, sizeof(bl), "%s", b);
		if (isnan(x))
			snprintf(q, sizeof(q), "-");
		else
			snprintf(q, sizeof(q), "%.2f", x);
		printf("| %s | %s | %s | %s | %s |\n", f->workload, f->figure, h, bl, q);
	}
	fflush(stdout);
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void json_num(FILE *f, double v)
{
	if (isnan(v) || isinf(v))
		fputs("null", f);
	else
		fprintf(f, "%.6g", v);
}

static void cpu_model(char *buf, size_t len)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[256];

	snprintf(buf, len, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *c = strchr(line, ':');
		if (!strncmp(line, "model name", 10) && c) {
			c += 2;
			c[strcspn(c, "\n")] = '\0';
			snprintf(buf, len, "%s", c);
			break;
		}
	}
	fclose(f);
}

int bench_write_json(const struct bench_result *r, const char *path, const char *workload,
		     const struct bench_json_setting *set, int nset)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "w") : stdout;
	struct utsname u;
	struct sysinfo si;
	char ts[64], cpu[128];
	time_t now = time(NULL);
	int err;

	if (!f) {
		err = -errno;
		fprintf(stderr, "heca bench: cannot write %s: %s\n", path, strerror(errno));
		return err;
	}
	uname(&u);
	sysinfo(&si);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	cpu_model(cpu, sizeof(cpu));
	fprintf(f, "{\n  \"tool\": \"heca bench\",\n  \"workload\": ");
	json_str(f, workload);
	fprintf(f, ",\n  \"timestamp\": \"%s\",\n  \"machine\": {\n", ts);
	fprintf(f, "    \"nproc\": %ld,\n    \"kernel\": ", sysconf(_SC_NPROCESSORS_ONLN));
	json_str(f, u.release);
	fprintf(f, ",\n    \"machine\": ");
	json_str(f, u.machine);
	fprintf(f, ",\n    \"cpu\": ");
	json_str(f, cpu);
	fprintf(f, ",\n    \"mem_total_bytes\": %llu\n  },\n  \"settings\": {",
		(unsigned long long)si.totalram * si.mem_unit);
	for (int i = 0; i < nset; i++) {
		fprintf(f, "%s\n    ", i ? "," : "");
		json_str(f, set[i].key);
		fprintf(f, ": ");
		json_str(f, set[i].value);
	}
	fprintf(f, "\n  },\n  \"figures\": [");
	for (int i = 0; i < r->n; i++) {
		const struct bench_fig *g = &r->fig[i];
		fprintf(f, "%s\n    {\"workload\": ", i ? "," : "");
		json_str(f, g->workload);
		fprintf(f, ", \"figure\": ");
		json_str(f, g->figure);
		fprintf(f, ", \"unit\": ");
		json_str(f, g->unit);
		fprintf(f, ", \"heca\": ");
		json_num(f, g->heca);
		fprintf(f, ", \"baseline\": ");
		json_num(f, g->base);
		fprintf(f, ", \"baseline_is\": ");
		json_str(f, g->base_label);
		fprintf(f, ", \"ratio\": ");
		json_num(f, ratio_of(g));
		fprintf(f, "}");
	}
	fprintf(f, "\n  ]\n}\n");
	err = ferror(f) ? -EIO : 0;
	if (f != stdout && fclose(f))
		err = -errno;
	if (err)
		fprintf(stderr, "heca bench: writing %s failed: %s\n", path, strerror(-err));
	return err;
}

static int have_gnuplot(void)
{
	const char *path = getenv("PATH");
	char buf[4096], *save = NULL, *dir;

	snprintf(buf, sizeof(buf), "%s", path ? path : "/usr/bin:/bin");
	for (dir = strtok_r(buf, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		char p[4200];
		snprintf(p, sizeof(p), "%s/gnuplot", dir);
		if (access(p, X_OK) == 0)
			return 1;
	}
	return 0;
}

int bench_plot(const char *path, const double *ratio, const char *const *ratio_label,
	       const double *heca_pct, const double *swap_pct, int n)
{
	char dir[] = "/tmp/heca-plot.XXXXXX", data[64], script[64];
	FILE *f;
	int have_swap = 0, st, rc = 0;
	pid_t pid;

	if (!have_gnuplot()) {
		fprintf(stderr, "heca bench: --plot needs gnuplot, which is not installed "
				"(apt-get install gnuplot-nox); no plot written\n");
		return -ENOENT;
	}
	if (!mkdtemp(dir)) {
		rc = -errno;
		fprintf(stderr, "heca bench: mkdtemp: %s\n", strerror(errno));
		return rc;
	}
	snprintf(data, sizeof(data), "%s/overhead.dat", dir);
	snprintf(script, sizeof(script), "%s/overhead.gp", dir);
	f = fopen(data, "w");
	if (!f)
		goto io_fail;
	fprintf(f, "# local/total label heca_overhead_pct swap_overhead_pct\n");
	for (int i = 0; i < n; i++) {
		if (!isnan(swap_pct[i]))
			have_swap = 1;
		fprintf(f, "%.6f \"%s\" ", ratio[i], ratio_label[i]);
		json_num(f, heca_pct[i]);
		fputc(' ', f);
		json_num(f, swap_pct[i]);
		fputc('\n', f);
	}
	fclose(f);
	f = fopen(script, "w");
	if (!f)
		goto io_fail;
	fprintf(f,
		"set terminal pngcairo size 900,560 noenhanced\n"
		"set output '%s'\n"
		"set datafile missing 'null'\n"
		"set title 'heca bench qsort: overhead against local memory'\n"
		"set xlabel 'local : total memory'\n"
		"set ylabel 'overhead (%%)'\n"
		"set grid\n"
		"set key top left\n"
		"set xrange [*:*] reverse\n"
		"plot '%s' using 1:3:xtic(2) with linespoints lw 2 pt 7 title 'heca'",
		path, data);
	if (have_swap)
		fprintf(f, ", '' using 1:4 with linespoints lw 2 pt 5 title 'kernel swap'");
	fprintf(f, "\n");
	fclose(f);
	pid = fork();
	if (pid == 0) {
		execlp("gnuplot", "gnuplot", script, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "heca bench: gnuplot failed; its input is kept in %s\n", dir);
		return -EIO;
	}
	printf("plot written to %s\n", path);
	unlink(data);
	unlink(script);
	rmdir(dir);
	return 0;
io_fail:
	rc = -errno;
	fprintf(stderr, "heca bench: writing in %s: %s\n", dir, strerror(errno));
	unlink(data);
	rmdir(dir);
	return rc;
}

int bench_parse_ratios(const char *s, struct bench_ratio *r, int max)
{
	char buf[256], *save = NULL, *t;
	int n = 0;

	snprintf(buf, sizeof(buf), "%s", s);
	for (t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		unsigned int a, b;
		char end;
		if (n == max || sscanf(t, "%u:%u%c", &a, &b, &end) != 2 || !a || !b || a > b)
			return -EINVAL;
		snprintf(r[n].label, sizeof(r[n].label), "%u:%u", a, b);
		r[n].frac = (double)a / (double)b;
		n++;
	}
	return n ? n : -EINVAL;
}

/* --- one run in a memory cgroup ------------------------------------------------------------ */

static int cg_path(const struct bench_cg *c, const char *name, char *path, size_t len)
{
	return snprintf(path, len, "%s/%s", c->dir, name) >= (int)len ? -ENAMETOOLONG : 0;
}

static int cg_put(const struct bench_cg *c, const char *name, const char *val)
{
	char path[320];
	int fd, rc = 0;

	if (cg_path(c, name, path, sizeof(path)))
		return -ENAMETOOLONG;
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, val, strlen(val)) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

/* The value of "key N" lines in a file (memory.stat, memory.events, /proc/vmstat). */
static int key_u64(const char *path, const char *key, uint64_t *v)
{
	char line[256];
	size_t kl = strlen(key);
	FILE *f = fopen(path, "re");
	int rc = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ' ') {
			*v = strtoull(line + kl + 1, NULL, 10);
			rc = 0;
			break;
		}
	fclose(f);
	return rc;
}

static uint64_t file_u64(const char *path)
{
	char buf[64];
	FILE *f = fopen(path, "re");
	uint64_t v = 0;

	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f))
		v = strtoull(buf, NULL, 10);
	fclose(f);
	return v;
}

/* Pages swapped in and out: the cgroup's own counters where the kernel keeps them (v2
 * memory.stat, 6.14+), else the machine's /proc/vmstat. */
static void cg_swapped(struct bench_cg *c, uint64_t *in, uint64_t *out)
{
	char path[320];

	*in = *out = 0;
	if (!c->vmstat && !cg_path(c, "memory.stat", path, sizeof(path)) &&
	    !key_u64(path, "pswpin", in) && !key_u64(path, "pswpout", out))
		return;
	c->vmstat = 1;
	key_u64("/proc/vmstat", "pswpin", in);
	key_u64("/proc/vmstat", "pswpout", out);
}

static uint64_t cg_oom(const struct bench_cg *c)
{
	char path[320];
	uint64_t v = 0;

	if (!cg_path(c, c->v2 ? "memory.events" : "memory.oom_control", path, sizeof(path)))
		key_u64(path, "oom_kill", &v);
	return v;
}

int bench_cg_begin(struct bench_cg *c, const char *dir, int noswap)
{
	char path[320];
	struct stat st;
	int rc = 0;

	memset(c, 0, sizeof(*c));
	c->peak_fd = -1;
	c->noswap = noswap;
	if (snprintf(c->dir, sizeof(c->dir), "%s", dir) >= (int)sizeof(c->dir))
		return -ENAMETOOLONG;
	c->v2 = !cg_path(c, "memory.max", path, sizeof(path)) && stat(path, &st) == 0;
	if (noswap) {
		if (c->v2) {
			rc = cg_put(c, "memory.swap.max", "0");
		} else {
			/* v1: memory+swap no more than memory; swappiness 0 as well. */
			char lim[32];
			cg_path(c, "memory.limit_in_bytes", path, sizeof(path));
			snprintf(lim, sizeof(lim), "%llu", (unsigned long long)file_u64(path));
			rc = cg_put(c, "memory.memsw.limit_in_bytes", lim);
			if (!rc)
				rc = cg_put(c, "memory.swappiness", "0");
		}
		if (rc)
			return rc;
	}
	if (c->v2) {
		/* Since 6.12 a reset holds for reads through the same open file only. */
		cg_path(c, "memory.peak", path, sizeof(path));
		c->peak_fd = open(path, O_RDWR | O_CLOEXEC);
		if (c->peak_fd >= 0 && write(c->peak_fd, "reset", 5) != 5) {
			close(c->peak_fd);
			c->peak_fd = -1;
		}
	} else {
		cg_put(c, "memory.max_usage_in_bytes", "0");
	}
	cg_swapped(c, &c->in0, &c->out0);
	c->oom0 = cg_oom(c);
	return 0;
}

void bench_cg_end(struct bench_cg *c, struct bench_cg_counts *out)
{
	char path[320], buf[64];
	uint64_t in, o;

	memset(out, 0, sizeof(*out));
	if (c->peak_fd >= 0) {
		ssize_t n = pread(c->peak_fd, buf, sizeof(buf) - 1, 0);
		if (n > 0) {
			buf[n] = '\0';
			out->peak = strtoull(buf, NULL, 10);
		}
		close(c->peak_fd);
		c->peak_fd = -1;
	} else {
		cg_path(c, c->v2 ? "memory.peak" : "memory.max_usage_in_bytes", path,
			sizeof(path));
		out->peak = file_u64(path);
	}
	cg_swapped(c, &in, &o);
	out->swapin = in - c->in0;
	out->swapout = o - c->out0;
	out->vmstat = c->vmstat;
	out->oom_kills = cg_oom(c) - c->oom0;
	if (c->noswap) {
		/* Back to what the kernel-swap runs in this cgroup expect. */
		if (c->v2) {
			cg_put(c, "memory.swap.max", "max");
		} else {
			cg_put(c, "memory.memsw.limit_in_bytes", "-1");
			cg_put(c, "memory.swappiness", "60");
		}
	}
}
