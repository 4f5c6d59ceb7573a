/* SPDX-License-Identifier: MIT */
/*
 * heca.h - the one public header of libheca: give a process more memory than its machine has.
 * Pages of sponsored segments live locally up to a budget and at memory sponsors otherwise.
 */
#ifndef HECA_H
#define HECA_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HECA_PAGE_SIZE 4096u

struct heca;

/* Log levels passed to heca_options.log. */
enum heca_log_level {
	HECA_LOG_ERROR = 0,
	HECA_LOG_WARN = 1,
	HECA_LOG_INFO = 2,
	HECA_LOG_DEBUG = 3,
};

/* Option flags. */
#define HECA_OPT_BUDGET_CGROUP (1u << 0) /* derive the budget from the memory cgroup limit */
#define HECA_OPT_NO_WP (1u << 1)	 /* behave as on a kernel without uffd write-protect */
#define HECA_OPT_NO_POISON (1u << 2)	 /* behave as on a kernel without UFFDIO_POISON */
#define HECA_OPT_OVERCOMMIT (1u << 3)	 /* map regions larger than the sponsors' free room */
#define HECA_OPT_NO_EVENTS (1u << 4)	 /* behave as on a kernel without userfaultfd zap events */

/*
 * Settings for heca_open(). Fill with heca_options_init() first, then change what you need;
 * fields added later keep their defaults for old callers.
 */
struct heca_options {
	/* Comma-separated "HOST:PORT" list of sponsors (IPv4, [IPv6] or a name). Either this or
	 * cluster_file is required. */
	const char *sponsors;
	/* A cluster file: one sponsor per line, `ID HOST:PORT CAPACITY` (docs/cluster.md). */
	const char *cluster_file;
	/* A Unix socket path for `heca status`, `heca add`, `heca drain`, `heca reload` to
	 * reach this process; NULL for none. */
	const char *control_path;
	/* Local budget in bytes for resident sponsored pages (all segments together).
	 * Default 64 MiB. With HECA_OPT_BUDGET_CGROUP the budget is the memory cgroup limit
	 * (v2 memory.max or v1 memory.limit_in_bytes) times budget_cgroup_pct / 100. */
	uint64_t local_budget;
	unsigned int budget_cgroup_pct;
	/* Pages fetched around a faulting page, 0 turns prefetch off. Default 16. */
	unsigned int prefetch_pages;
	/* Share of the budget, in percent, kept as the inactive list: local copies of pages
	 * lately taken out of the page tables, so that a page still in use comes back with a
	 * local fault and stays, and one used once leaves (src/stash.c). 0 evicts in plain
	 * first-in first-out order; at most 50. heca_options_init() sets
	 * HECA_INACTIVE_DEFAULT (0 until it is measured to win on the benchmarks; 25 is a
	 * starting point). */
	unsigned int inactive_pct;
	/* Pages placed together on one sponsor (stripe). Default 256 (1 MiB). */
	unsigned int stripe_pages;
	/* A request not answered within this many milliseconds fails. Default 5000. */
	unsigned int timeout_ms;
	/* Microseconds the engine spins on the fault fd before it sleeps. Default 0. */
	unsigned int spin_us;
	/* Copies of each stripe on distinct sponsors. 0 (default) means 2 when at least two
	 * sponsors are given, else 1. */
	unsigned int replicas;
	/* A sponsor that does not answer a heartbeat within this many milliseconds is taken
	 * for dead and its stripes are copied elsewhere. Default 2000. */
	unsigned int detect_ms;
	/* 128-bit cluster id sent to sponsors; all zero is the default cluster. */
	uint8_t cluster_id[16];
	/* The cluster's key file (hecad --gen-key), or NULL: every sponsor must then prove it
	 * holds the same key and is refused otherwise; the key never crosses the wire. */
	const char *key_file;
	unsigned int flags; /* HECA_OPT_* */
	/* Called from any libheca thread for log lines; NULL keeps the library silent. */
	void (*log)(void *arg, enum heca_log_level level, const char *msg);
	void *log_arg;
	enum heca_log_level log_level; /* most verbose level passed to log; default INFO */
	/* A sponsor that stops answering is waited for this long (milliseconds) before the
	 * pages only it holds are given up as lost; meanwhile accesses to them wait. A sponsor
	 * known to have lost them (refused connection, restart, expired lease) is given up at
	 * once. Default 60000. */
	unsigned int grace_ms;
	/* Hard limit in bytes on local sponsored memory: resident pages plus pages kept locally
	 * because no sponsor had room for them. Past the budget only such pages use it; at the
	 * limit faults wait for room and heca_map()/heca_register() fail with -ENOMEM. Default
	 * 0: twice the budget. */
	uint64_t local_limit;
};

#define HECA_INACTIVE_DEFAULT 0

/* Fill *opts with defaults. Never fails. */
void heca_options_init(struct heca_options *opts);

/*
 * Connect to the sponsors and start the fault engine.
 * Returns 0 and sets *out on success; -errno on failure (no sponsor reachable: the connect
 * error such as -ECONNREFUSED; userfaultfd unusable: -EPERM, -ENOSYS, ...). On failure
 * heca_last_error() says in words what went wrong and what to do.
 * The returned handle is thread-safe: any thread may call any function on it.
 */
int heca_open(const struct heca_options *opts, struct heca **out);

/*
 * Stop the engine, release every segment on the sponsors and free the handle. NULL is a
 * no-op. Memory of regions made by heca_map() is unmapped; ranges given to heca_register()
 * are unregistered first (their content brought back, see heca_unregister()).
 */
void heca_close(struct heca *h);

/*
 * Map a new sponsored region of len bytes (rounded up to whole pages), reading as zero.
 * Returns 0 and sets *addr on success, -errno on failure. Release with heca_unmap().
 */
int heca_map(struct heca *h, size_t len, void **addr);

/* Unmap a region made by heca_map() and free its pages on the sponsors. Returns 0 or -errno
 * (-EINVAL if addr does not start such a region, or another thread is unmapping or
 * unregistering it: of several calls at once for one region, one does it). */
int heca_unmap(struct heca *h, void *addr);

/*
 * Make an existing page-aligned range of private anonymous memory sponsored. Pages already
 * present are adopted as written. Returns the segment id (>= 0) on success, -errno on
 * failure (-EINVAL: not aligned or overlapping a segment; -EBUSY: already registered).
 */
int heca_register(struct heca *h, void *addr, size_t len);

/* Flags for heca_unregister(). */
#define HECA_UNREG_DISCARD (1u << 0) /* drop the content: the range reads as zero afterwards */

/*
 * Stop sponsoring the segment that starts at addr. By default every page held remotely is
 * brought back first, so the range keeps its content as ordinary memory (which may exceed the
 * budget: the caller asked for it); with HECA_UNREG_DISCARD it reads as zero. Either way the
 * sponsors free the segment's pages. Returns 0 or -errno (-EINVAL: no segment there, or
 * another thread is registering or unregistering it: of several calls at once for one segment,
 * one does it; -EIO: a page could not be brought back, the segment stays registered).
 */
int heca_unregister(struct heca *h, void *addr, unsigned int flags);

/*
 * fork() for a process with sponsored memory: the child sees exactly the memory of the parent
 * at the fork (resident pages copy-on-write, the sponsors copy the rest for it) and runs an
 * engine of its own; neither sees the other's later writes. Returns what fork() returns (the
 * child's pid, 0 in the child, -1 with errno), or -errno if the sponsors could not copy the
 * segments (then no child was made). A plain fork() instead leaves sponsored memory out of
 * the child: touching it there is a segmentation fault. In a child that could not restart
 * heca (heca_last_error() says why) the sponsored segments are unmapped.
 */
pid_t heca_fork(struct heca *h);

/* One sponsor as the demander sees it. */
struct heca_sponsor_info {
	char addr[128];
	uint8_t id[16];
	int up;		/* answering now */
	int draining;	/* its stripes are being moved away */
	uint64_t capacity_pages; /* as the sponsor reported */
	uint64_t used_pages;	 /* all demanders', at the last heartbeat */
	uint64_t stripes;	 /* stripes of this demander it holds a current copy of */
};

/* Replication state of the demander's stripes. */
struct heca_cluster_stats {
	uint64_t stripes;	    /* stripes placed so far */
	uint64_t under_replicated;  /* stripes with fewer current copies than wanted */
	uint64_t lost;		    /* stripes with no current copy: their pages are lost */
	uint64_t moving;	    /* stripes being copied (repair, drain, rebalance) */
	uint64_t copied_stripes;    /* stripe copies made since heca_open() */
	uint64_t copied_pages;
	unsigned int replicas;	    /* copies wanted */
	unsigned int sponsors, sponsors_up;
};

/* Fill out[0..max) with the sponsors in use; returns how many there are (may exceed max),
 * or -errno. Thread-safe. */
int heca_get_sponsors(struct heca *h, struct heca_sponsor_info *out, unsigned int max);

/* Replication counters. Returns 0 or -EINVAL; -EOPNOTSUPP for a store without sponsors. */
int heca_get_cluster_stats(struct heca *h, struct heca_cluster_stats *out);

/* Start using another sponsor ("HOST:PORT"); stripes move to it in the background as the
 * placement says. Returns 0, -EEXIST if it is in use, or the connect error. Thread-safe. */
int heca_add_sponsor(struct heca *h, const char *addr);

/* Move every stripe off a sponsor (by "HOST:PORT" or 32-hex-digit id) in the background;
 * heca_get_sponsors() shows it with stripes == 0 when it can be stopped. Returns 0 or -ENOENT.
 * Thread-safe. */
int heca_drain_sponsor(struct heca *h, const char *addr_or_id);

/* Read the cluster file again and start using sponsors it names that are not in use yet.
 * Returns how many were added, or -errno (-EINVAL without a cluster file). Thread-safe. */
int heca_reload(struct heca *h);

/* Parse a 32-hex-digit id (cluster or sponsor) into out. Returns 0 or -EINVAL. */
int heca_parse_id(const char *hex, uint8_t out[16]);

#define HECA_LAT_BUCKETS 256

/* Counters since heca_open(). Faults count kernel fault messages handled by the engine. */
struct heca_stats {
	uint64_t faults_read;	    /* missing-page faults from reads */
	uint64_t faults_write;	    /* missing-page faults from writes */
	uint64_t faults_wp;	    /* writes to a clean (write-protected) page */
	uint64_t faults_zero;	    /* first touches of never-written pages: no network */
	uint64_t faults_wb_hit;	    /* faults served from the write-back buffer */
	uint64_t faults_deferred;   /* faults that waited for eviction to make room */
	uint64_t pages_fetched;	    /* pages fetched on demand */
	uint64_t pages_prefetched;  /* pages fetched ahead and mapped */
	uint64_t pages_written_back;/* dirty pages sent to sponsors (acknowledged) */
	uint64_t pages_dropped_clean;/* clean pages dropped without any network */
	uint64_t pages_dropped_zero;/* written pages found all zero: dropped, no network */
	uint64_t pages_evicted;	    /* all pages evicted */
	uint64_t pages_lost;	    /* pages that could not be fetched: accesses got SIGBUS */
	uint64_t writeback_errors;  /* write-backs refused or failed: pages kept locally */
	uint64_t bytes_sent;	    /* bytes sent to sponsors, all frames */
	uint64_t bytes_received;    /* bytes received from sponsors, all frames */
	uint64_t resident_pages;    /* sponsored pages mapped now, counted against the budget */
	uint64_t pinned_pages;	    /* pages kept locally, outside the budget, because no
				       sponsor would store them (see writeback_errors) */
	uint64_t budget_pages;	    /* the local budget in pages */
	uint64_t segments;	    /* registered segments now */
	/* Engine fault latency (fault message read to page mapped), in nanoseconds. */
	uint64_t lat_p50_ns, lat_p90_ns, lat_p99_ns, lat_max_ns, lat_mean_ns;
	uint64_t lat_count;
	/* Demand fetches only (a fault served from a sponsor), and where their time goes:
	 * network = request sent to reply decoded, install = UFFDIO_COPY and wake-up; the rest
	 * of lat_fetch_mean_ns is the engine's own (reading the fault, queueing the request). */
	uint64_t lat_fetch_p50_ns, lat_fetch_p99_ns, lat_fetch_mean_ns, lat_fetch_count;
	uint64_t fetch_net_mean_ns, fetch_install_mean_ns;
	unsigned int features; /* HECA_FEAT_* the kernel offered and heca uses */
	/* The kernel is the truth: pages found unmapped that heca held mapped, served as zero
	 * (someone zapped them with a system call heca did not see); pages the kernel would not
	 * let go (mlocked, say), kept locally like pinned_pages; pages a madvise or munmap heca
	 * did not make discarded, learnt from the kernel's userfaultfd events. */
	uint64_t pages_repaired, pages_unzappable, pages_zapped_outside;
	/* Times a read request found a sponsor's socket full and waited in heca's queue for it
	 * (a sponsor that stopped reading), rather than stalling the engine. */
	uint64_t reads_queued;
	/* The inactive list: faults served from a local copy of a page taken out of the page
	 * tables (the page is in use: it stays), copies let go untouched, and copies held now. */
	uint64_t faults_stash_hit, pages_aged, stash_pages;
};

#define HECA_FEAT_WP (1u << 0)	   /* write-protect on anonymous memory */
#define HECA_FEAT_POISON (1u << 1) /* UFFDIO_POISON */
#define HECA_FEAT_MOVE (1u << 2)   /* UFFDIO_MOVE */
#define HECA_FEAT_REMOVE (1u << 3) /* zap events: madvise/munmap heca did not make are seen */

/* Copy the current counters to *out. Returns 0 or -EINVAL. */
int heca_get_stats(struct heca *h, struct heca_stats *out);

/*
 * If a page was lost (no sponsor could serve it), fill the segment id and page offset of the
 * first such page and return 1; return 0 if none was lost.
 */
int heca_first_lost(struct heca *h, uint32_t *segment, uint64_t *page);

/* The name of a heca error code (a negative errno, or 0). Never NULL, static storage. */
const char *heca_strerror(int err);

/* Words about the last failure of heca_open(), heca_map(), heca_register(), heca_unregister()
 * or heca_unmap() in this thread: what went wrong and what to do. Empty string if none.
 * Thread-local storage. */
const char *heca_last_error(void);

/* Parse "512M", "4G", "4096", "64k" into bytes. Returns 0 or -EINVAL. */
int heca_parse_size(const char *s, uint64_t *out);

#ifdef __cplusplus
}
#endif

#endif /* HECA_H */
