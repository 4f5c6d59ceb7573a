/* SPDX-License-Identifier: MIT */
/*
 * cli.h - what the subcommands of the heca tool share: starting local sponsors, printing
 * statistics, logging to stderr.
 */
#ifndef HECA_CLI_H
#define HECA_CLI_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/types.h>

#include "heca.h"

#define CLI_MAX_SPAWN 16

struct spawned {
	int n;
	pid_t pid[CLI_MAX_SPAWN];
	char addr[CLI_MAX_SPAWN][64];
	char list[CLI_MAX_SPAWN * 64]; /* "a,b,c" */
};

/* Start n hecad processes on 127.0.0.1 port 0 with the given capacity (their own messages
 * to /dev/null if quiet). Returns 0 or -errno, printing why on stderr. */
int cli_spawn_sponsors(struct spawned *sp, int n, const char *capacity, int quiet);
/* SIGTERM them and wait. */
void cli_stop_sponsors(struct spawned *sp);

void cli_log(void *arg, enum heca_log_level level, const char *msg);
void cli_print_stats(FILE *f, const struct heca_stats *st);

int cmd_run(int argc, char **argv);

/* reap.c: heca run's watch over the program's processes. open() makes the directory where
 * they note their demander ids and names it in HECA_RUN_DIR (call it once the sponsors and
 * HECA_SPONSORS, HECA_CLUSTER, HECA_CLUSTER_ID and HECA_KEY_FILE are settled); start() runs
 * the watch in a thread of its own (after the program has been forked); close() stops it once
 * every process of the program has ended, frees what those that died without a word still
 * held, and removes the directory. open() returns 0 or -errno (said on stderr); close()
 * accepts NULL. */
struct reaper;
int cli_reaper_open(struct reaper **out);
int cli_reaper_start(struct reaper *r);
void cli_reaper_close(struct reaper *r);

int cmd_demo(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/*
 * `heca bench` internals, shared by cli/bench*.c: figures gathered for the final table and
 * JSON, the progress line, latency summaries, and the raw transport / fault floor probes.
 */

/* One row of the result table. NAN marks a missing heca value or baseline. */
struct bench_fig {
	char workload[16];
	char figure[48];
	char unit[12];	     /* "us", "pages/s", "s", "%", "x", "" */
	char base_label[24]; /* what the baseline is: "raw+floor", "local", "zram swap", ... */
	double heca;
	double base;
};

struct bench_result {
	struct bench_fig *fig;
	int n, cap;
};

/* Append a row (aborts the program only on out-of-memory). */
void bench_fig(struct bench_result *r, const char *workload, const char *figure,
	       const char *unit, double heca, double base, const char *base_label);
/* The last row with this workload and figure, or NULL. */
const struct bench_fig *bench_find(const struct bench_result *r, const char *workload,
				   const char *figure);

/* Percentiles of a set of samples (microseconds). */
struct bench_lat {
	double p50, p90, p99, mean, max;
	size_t n;
};
/* Sorts samples[0..n) in place and summarises them. */
void bench_lat_summary(double *samples, size_t n, struct bench_lat *out);

double bench_now(void); /* CLOCK_MONOTONIC seconds */

/* The progress line on stderr ("\r"-overwritten on a tty, a line every few seconds else). */
void bench_progress_quiet(int quiet);
void bench_progress(const char *what, double fraction, double rate, const char *rate_unit);
void bench_progress_end(void);

/* Settings echoed into the JSON. */
struct bench_json_setting {
	const char *key;
	char value[160];
};

/* Reorder rows so that each workload's rows are together (stable). */
void bench_group_rows(struct bench_result *r);
/* The Markdown table of every row on stdout. */
void bench_print_table(const struct bench_result *r);
/* Write all rows, machine info and settings as JSON. Returns 0 or -errno (message printed). */
int bench_write_json(const struct bench_result *r, const char *path, const char *workload,
		     const struct bench_json_setting *set, int nset);
/* Plot overhead (%) against the local:total memory ratio with gnuplot. ratios[i] is
 * local/total; NAN entries are skipped. Returns 0 or -errno (message printed). */
int bench_plot(const char *path, const double *ratio, const char *const *ratio_label,
	       const double *heca_pct, const double *swap_pct, int n);

/* The raw transport and the local fault floor (cli/bench_raw.c). */
struct bench_raw_opts {
	const char *sponsors;
	unsigned int samples;	     /* round trips timed per kind (after warm-up) */
	unsigned int floor_pages;    /* pages touched per fault-floor run */
	uint64_t pipeline_pages;     /* READs in the pipelined run */
	unsigned int inflight;	     /* READs in flight in the pipelined run */
	uint64_t seg_bytes_max;	     /* at most this much written to each sponsor */
	int timeout_ms;
};
/* Adds rows to r under workload "raw". Returns 0 or -errno (message printed). */
int bench_raw(const struct bench_raw_opts *o, struct bench_result *r);
/* The pipelined page rate of bench_raw() alone: `pages` single-page READs, 64 in flight, on
 * the sponsors of list. 1 / rate is the raw cost per page that the benchmarks multiply by
 * the pages a run moved, the floor of its time. Returns 0 or -errno (message printed). */
int bench_raw_pipelined(const char *sponsors, uint64_t pages, double *pages_per_s);

/* One run's counters in a memory cgroup (v1 or v2), read from inside it: bench_cg_begin()
 * before the run, bench_cg_end() after. With noswap the cgroup may not swap during the run
 * (v2 memory.swap.max 0; v1 memory.memsw.limit_in_bytes = memory.limit_in_bytes and
 * swappiness 0), and bench_cg_end() puts swap back for the kernel-swap runs. */
struct bench_cg {
	char dir[256];
	int v2, noswap, peak_fd, vmstat;
	uint64_t in0, out0, oom0;
};
struct bench_cg_counts {
	uint64_t peak;		   /* bytes: the cgroup's peak memory use in the run, 0 unknown */
	uint64_t swapin, swapout;  /* pages (pswpin, pswpout deltas) */
	uint64_t oom_kills;	   /* OOM kills in the cgroup during the run */
	int vmstat;		   /* swapin/swapout are the machine's (/proc/vmstat), as the
				    * cgroup does not count them */
};
/* Returns 0, or -errno if noswap could not be set. */
int bench_cg_begin(struct bench_cg *c, const char *dir, int noswap);
void bench_cg_end(struct bench_cg *c, struct bench_cg_counts *out);

/* Options of `heca bench`, as parsed; *_set says the user gave the option. */
struct bench_opts {
	const char *sponsors;
	uint64_t size, local;
	int size_set, local_set, threads_set, prefetch_set;
	unsigned int threads, prefetch, spin;
	unsigned int replicas; /* copies of each stripe; default 1, like kernel swap */
	int inactive_set;
	unsigned int inactive; /* heca_options.inactive_pct */
	uint64_t touches; /* per thread (walk, uniform) or in all (latency); 0: default */
	double seconds;	  /* walk/uniform: stop each run after this long; 0: no limit */
	uint64_t seed;
	unsigned int samples; /* raw: round trips timed per kind */
	const char *ratios;   /* qsort: "3:4,1:2,..." */
	int baseline_swap;
	const char *swapfile;
	const char *json, *plot;
	int quiet, with_qsort;
};

/* heca_open() with the bench's settings, a budget and a prefetch window; prints why on
 * failure. */
int bench_open(const struct bench_opts *o, uint64_t local, unsigned int prefetch,
	       struct heca **out);
/* `heca bench qsort` (cli/bench_qsort.c). Returns 0, or non-zero after printing why. */
int bench_qsort(const struct bench_opts *o, struct bench_result *r);
int bench_programs(int argc, char **argv); /* `heca bench programs` (cli/bench_programs.c) */
/* A memory ratio of a --ratios list: "1:4" and 0.25. */
struct bench_ratio {
	char label[24];
	double frac; /* local (or limit) / total */
};
/* Parse "3:4,1:2" into r[0..max). Returns how many, or -EINVAL. */
int bench_parse_ratios(const char *s, struct bench_ratio *r, int max);
/* 1 if s is a valid --ratios list ("3:4,1:2"), else 0. */
int bench_ratios_valid(const char *s);

/* status.c: `heca status|add|drain|reload`; the control socket path of a process. */
int cmd_control(int argc, char **argv);
void cli_control_path(long pid, char *buf, size_t len);
/* From libheca (internal): a cluster file's sponsors as "a,b,c". */
int heca__cluster_file_read(const char *path, char **list, char *err, size_t errlen);

#endif
