/* SPDX-License-Identifier: MIT */
/*
 * swapbase.h - the kernel-swap baseline of `heca bench`: run a workload as a child in a memory
 * cgroup limited like heca's local budget, swapping to a fresh zram device (or a swap file).
 */
#ifndef HECA_BENCH_SWAPBASE_H
#define HECA_BENCH_SWAPBASE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Where an interrupted run's leftovers are recorded, for swapbase_cleanup_stale(). */
#define SWAPBASE_STATE_FILE "/run/heca-swapbase.state"

#define SWAPBASE_MAX_PHASES 8

/* One timed part of the workload, reported by fn through swapbase_phase(). */
struct swapbase_phase {
	char name[24];
	double seconds;
};

/* What the last swapbase_run() saw. */
struct swapbase_result {
	int rc;		/* fn's return value */
	double seconds; /* wall time of fn alone, measured in the child */
	unsigned int nphases;
	struct swapbase_phase phase[SWAPBASE_MAX_PHASES];
	uint64_t peak_mem_bytes;  /* cgroup's peak memory use (0 if the kernel does not say) */
	uint64_t peak_swap_bytes; /* largest swap use of the cgroup seen while sampling (~100 ms) */
	uint64_t zram_peak_bytes; /* largest zram orig_data_size seen while sampling */
	int oom_killed;		  /* the cgroup's oom_kill counter rose during the run */
	char child_err[128];	  /* why the child could not start fn, if so */
};

/*
 * Everything setup created, so that teardown removes exactly that. Treat as opaque except
 * `last`. All paths are formatted at setup so that teardown needs no allocation or stdio and
 * can run from a signal handler.
 */
struct swapbase {
	int active;		/* set up and not yet torn down */
	pid_t owner;		/* the process that set it up (children never tear down) */
	uint64_t owner_start;	/* its start time, to tell it from a later pid namesake */
	pid_t child;		/* running child, or 0 */
	int zram_id;		/* hot-added zram device, or -1 */
	int swap_on;		/* swapon done (or attempted) on swap_dev */
	int file_created;	/* swap_dev is a file we created */
	int node_created;	/* swap_dev is a device node we made because /dev had none */
	int cg_version;		/* 1 or 2; 0 if no cgroup */
	int cg_subtree_enabled; /* v2: we enabled +memory in the parent's subtree_control */
	uint64_t swap_bytes;
	char swap_dev[256];  /* /dev/zramN, a node we made, or the swap file */
	char cg_dir[256];    /* our cgroup directory */
	char cg_parent[256]; /* v2: parent whose subtree_control we changed */
	struct swapbase_result last;
};

/*
 * Create swap of swap_bytes (swapfile NULL: on a newly hot-added zram device, lz4 if the
 * kernel has it; else a new file at that path, which must not exist) with a priority above
 * any existing swap area, and an empty memory cgroup (v2 if its memory controller is there,
 * else v1). Existing swap areas and zram devices are never touched. Leftovers of an earlier
 * interrupted run recorded in SWAPBASE_STATE_FILE are cleaned first. Installs SIGINT, SIGTERM
 * and SIGHUP handlers (unless ignored) and an atexit hook that tear down and, for signals,
 * re-raise. Returns 0 or -errno with a message in err: -EPERM not root, -ENODEV no zram or
 * memory cgroup, -EBUSY another live run holds the state file, -EEXIST swapfile exists.
 * On failure nothing stays behind. Not thread-safe; one swapbase per process at a time.
 */
int swapbase_setup(struct swapbase *sb, uint64_t swap_bytes, const char *swapfile, char *err,
		   size_t errlen);

/*
 * Fork a child, put it in the cgroup limited to limit_bytes of memory (swap unlimited,
 * swappiness 60), run fn(arg) there and _exit. *seconds_out (may be NULL) gets fn's wall time
 * measured in the child; sb->last gets the details. Returns 0 if fn returned 0; fn's negative
 * return (or -EIO for a positive one); -ENOMEM with "OOM killer" in err when the limit plus
 * swap could not hold the workload (the child died of SIGKILL); -ECHILD if it died otherwise;
 * -EINTR if a signal tore the baseline down meanwhile. Output
 * of fn goes wherever the caller's stdout/stderr go.
 */
int swapbase_run(struct swapbase *sb, uint64_t limit_bytes, int (*fn)(void *arg), void *arg,
		 double *seconds_out, char *err, size_t errlen);

/*
 * For fn, inside the child: record that a phase ("fill", "sort", ...) took `seconds`; it is
 * passed back in sb->last.phase[]. Phases beyond SWAPBASE_MAX_PHASES are dropped.
 */
void swapbase_phase(const char *name, double seconds);

/*
 * Kill a running child, remove the cgroup, swapoff, reset and hot-remove the zram device (or
 * delete the swap file), remove the state file and the signal handlers. Idempotent; a no-op
 * on a zeroed struct. Async-signal-safe.
 */
void swapbase_teardown(struct swapbase *sb);

/*
 * Undo what an interrupted run recorded in SWAPBASE_STATE_FILE. Returns 1 if something was
 * cleaned, 0 if there was no state file, -EBUSY if the recording process is still alive,
 * -EPERM if not root, other -errno (with err) if a step failed; the state file is kept then.
 */
int swapbase_cleanup_stale(char *err, size_t errlen);

#endif
