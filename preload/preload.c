// SPDX-License-Identifier: MIT
/*
 * preload.c - libheca-preload.so: heca for programs that were never written for it. Loaded
 * with LD_PRELOAD (by `heca run`), it makes large private anonymous memory sponsored:
 *
 *  - mmap() of private anonymous memory of a size worth() accepts is registered: every
 *    allocator but glibc's (jemalloc, tcmalloc, mimalloc) maps its memory this way, and keeps
 *    every pointer it made; so is a part of a PROT_NONE reservation that mprotect() opens;
 *  - glibc's malloc maps memory through internal calls out of an interposer's reach, so when
 *    glibc's is the program's allocator, malloc() and friends of a size worth() accepts
 *    get a sponsored mapping of their own; free() gives it back, realloc() moves it with
 *    mremap. With any other allocator every malloc-family call goes to that allocator;
 *  - munmap(), mremap(), madvise(MADV_DONTNEED/MADV_FREE), mprotect() and fork() on
 *    sponsored memory are done so that page states, the budget and the sponsors stay true
 *    (src/segops.c, src/fork.c);
 *  - mlockall(), mlock()/mlock2() of sponsored memory and a userfaultfd of the program's
 *    own, which cannot work on sponsored memory, are refused with a line that says why.
 *
 * Everything else passes through. heca starts when the library is loaded, where no allocator
 * can hold a lock, and its own memory never comes from the program's allocator
 * (src/privalloc.h). Threads of libheca itself, and the wrappers while they call into it, pass
 * straight through (heca__internal).
 */
#include <dlfcn.h>
#include <malloc.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "heca.h"
#include "heca_int.h"
#include "preload_stats.h"
#include "segops.h"
#include "util.h"

#define EXPORT __attribute__((visibility("default")))

static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;
static struct heca *H;
static int state; /* 0: not started, 1: running, -1: off (failed, or not wanted) */
static pid_t owner;
static bool used; /* this process has sponsored memory: its statistics are worth a record */
static uint64_t min_size = 4ull << 20;
static bool min_size_set; /* HECA_MIN_SIZE given: a fixed threshold, nothing smaller */
static pid_t (*real_fork)(void);
static int (*real_ioctl)(int, unsigned long, ...);

/* ---- big blocks handed out by malloc: address -> length ----
 *
 * Open addressing; a removed block leaves a tombstone that lookups step over, and the table is
 * rebuilt (at the same size when most slots are tombstones) before live and dead slots
 * together fill half of it: a lookup always meets an empty slot. */

struct block {
	uintptr_t addr; /* 0: empty; 1: removed */
	uint64_t len;
};
static pthread_mutex_t blocks_mu = PTHREAD_MUTEX_INITIALIZER;
static struct block *blocks;
static size_t nblocks_cap, nblocks_used, nblocks_dead;

static size_t bslot(uintptr_t a, size_t cap)
{
	return (size_t)((a >> 12) * 0x9e3779b97f4a7c15ull >> 20) & (cap - 1);
}

static int blocks_rebuild_locked(void)
{
	size_t ncap = nblocks_cap ? nblocks_cap : 1024;
	struct block *n;

	while ((nblocks_used + 1) * 4 > ncap)
		ncap *= 2;
	n = (struct block *)syscall(SYS_mmap, NULL, ncap * sizeof(*n), PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if ((long)n == -1)
		return -ENOMEM;
	for (size_t i = 0; i < nblocks_cap; i++) {
		size_t k;
		if (blocks[i].addr <= 1)
			continue;
		for (k = bslot(blocks[i].addr, ncap); n[k].addr; k = (k + 1) & (ncap - 1))
			;
		n[k] = blocks[i];
	}
	if (blocks)
		syscall(SYS_munmap, blocks, nblocks_cap * sizeof(*blocks));
	blocks = n;
	nblocks_cap = ncap;
	nblocks_dead = 0;
	return 0;
}

static int block_add(uintptr_t a, uint64_t len)
{
	size_t k;
	pthread_mutex_lock(&blocks_mu);
	if ((nblocks_used + nblocks_dead + 1) * 2 > nblocks_cap && blocks_rebuild_locked()) {
		pthread_mutex_unlock(&blocks_mu);
		return -ENOMEM;
	}
	for (k = bslot(a, nblocks_cap); blocks[k].addr > 1; k = (k + 1) & (nblocks_cap - 1))
		;
	if (blocks[k].addr == 1)
		nblocks_dead--;
	blocks[k] = (struct block){a, len};
	nblocks_used++;
	pthread_mutex_unlock(&blocks_mu);
	return 0;
}

/* The length of the block at a (0 if a is not one); remove it if take. */
static uint64_t block_find(uintptr_t a, bool take)
{
	uint64_t len = 0;

	if (!a || (a & (PAGE_SZ - 1)) || !__atomic_load_n(&nblocks_used, __ATOMIC_RELAXED))
		return 0;
	pthread_mutex_lock(&blocks_mu);
	for (size_t k = bslot(a, nblocks_cap); nblocks_cap && blocks[k].addr;
	     k = (k + 1) & (nblocks_cap - 1)) {
		if (blocks[k].addr != a)
			continue;
		len = blocks[k].len;
		if (take) {
			blocks[k].addr = 1;
			nblocks_used--;
			nblocks_dead++;
		}
		break;
	}
	pthread_mutex_unlock(&blocks_mu);
	return len;
}

/* ---- start-up ---- */

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char buf[600];
	int n = snprintf(buf, sizeof(buf), "heca[%d]: ", (int)getpid());
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(2, buf, (size_t)n) < 0)
		return;
}

/* A block that heca could not sponsor stays ordinary memory: said for the first few, so that a
 * program making many of them does not fill its stderr. */
static void say_local(size_t len, const char *why)
{
	static unsigned int said;
	unsigned int n = __atomic_add_fetch(&said, 1, __ATOMIC_RELAXED);

	if (n <= 3)
		say("a block of %zu bytes stays local memory: %s%s", len, why,
		    n == 3 ? " (further such blocks are not reported)" : "");
}

static void log_line(void *arg, enum heca_log_level level, const char *msg)
{
	(void)arg;
	say("%s%s", level == HECA_LOG_ERROR ? "error: " : "", msg);
}

/* Settings from the environment (heca run sets them; see `heca run --help`). */
static int read_env(struct heca_options *o, char *why, size_t whylen)
{
	const char *v;
	uint64_t x;

	heca_options_init(o);
	o->sponsors = getenv("HECA_SPONSORS");
	o->cluster_file = getenv("HECA_CLUSTER");
	o->key_file = getenv("HECA_KEY_FILE");
	if (!o->sponsors && !o->cluster_file) {
		snprintf(why, whylen, "neither HECA_SPONSORS nor HECA_CLUSTER is set");
		return -EINVAL;
	}
	if ((v = getenv("HECA_LOCAL")) && *v) {
		if (!strcmp(v, "cgroup")) {
			o->flags |= HECA_OPT_BUDGET_CGROUP;
		} else if (heca_parse_size(v, &o->local_budget)) {
			snprintf(why, whylen, "HECA_LOCAL=%s: not a size or \"cgroup\"", v);
			return -EINVAL;
		}
	}
	if ((v = getenv("HECA_CLUSTER_ID")) && *v && heca_parse_id(v, o->cluster_id)) {
		snprintf(why, whylen, "HECA_CLUSTER_ID=%s: not 32 hex digits", v);
		return -EINVAL;
	}
	if ((v = getenv("HECA_LOCAL_LIMIT")) && *v && heca_parse_size(v, &o->local_limit)) {
		snprintf(why, whylen, "HECA_LOCAL_LIMIT=%s: not a size", v);
		return -EINVAL;
	}
	if ((v = getenv("HECA_GRACE")) && *v)
		o->grace_ms = (unsigned int)(strtod(v, NULL) * 1000);
	if ((v = getenv("HECA_OVERCOMMIT")) && *v && strcmp(v, "0"))
		o->flags |= HECA_OPT_OVERCOMMIT;
	if ((v = getenv("HECA_REPLICAS")) && *v)
		o->replicas = (unsigned int)strtoul(v, NULL, 10);
	if ((v = getenv("HECA_PREFETCH")) && *v)
		o->prefetch_pages = (unsigned int)strtoul(v, NULL, 10);
	if ((v = getenv("HECA_INACTIVE")) && *v)
		o->inactive_pct = (unsigned int)strtoul(v, NULL, 10);
	if ((v = getenv("HECA_MIN_SIZE")) && *v) {
		if (heca_parse_size(v, &x) || x < PAGE_SZ) {
			snprintf(why, whylen, "HECA_MIN_SIZE=%s: not a size of at least 4k", v);
			return -EINVAL;
		}
		min_size = x;
		min_size_set = true;
	}
	o->log = log_line;
	/* Errors and warnings (a sponsor lost, a limited userfaultfd) always; the rest when
	 * asked for. */
	o->log_level = getenv("HECA_VERBOSE") && *getenv("HECA_VERBOSE") ? HECA_LOG_INFO
									   : HECA_LOG_WARN;
	return 0;
}

static char ctl_path[108];
static int heca_threads; /* threads of heca's own in this process */

/* The threads of this process now, from /proc (read without allocating); -1 if unknown. */
static int threads_now(void)
{
	char buf[4096], *p;
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	p = strstr(buf, "\nThreads:");
	return p ? atoi(p + 9) : -1;
}

/* ---- telling heca run who this process is ----
 *
 * Under `heca run` (HECA_RUN_DIR names a directory of its own, mode 0700), a process writes
 * its demander id there before the first of its pages can go to a sponsor, in a file named
 * for its pid and start time, and removes the file once it has freed its pages itself. A
 * process that ends with the file still there (killed, crashed, gone by a raw exit_group) is
 * seen ending by heca run, which then has the sponsors free that demander's pages at once. A
 * new image after exec writes its new id over the old one's: the old image is gone. */

static bool noted; /* this image's file is written */
static pthread_mutex_t note_mu = PTHREAD_MUTEX_INITIALIZER;
static char note_file[256];

/* Write "PID START PIDNS TIMENS DEMANDER" for process pid into HECA_RUN_DIR/PID-START.id,
 * whole or not at all; if the file exists already, only when !keep. The path goes to
 * file[0..len) when file is not NULL. */
static void note_write(pid_t pid, const uint8_t id[16], bool keep, char *file, size_t len)
{
	const char *dir = getenv("HECA_RUN_DIR");
	char tmp[256], final[256], line[160];
	unsigned long long start;
	int fd, n;

	if (!dir || !*dir || heca__proc_start_time(pid, &start))
		return;
	snprintf(final, sizeof(final), "%s/%d-%llu.id", dir, (int)pid, start);
	snprintf(tmp, sizeof(tmp), "%s/%d-%llu.tmp%d", dir, (int)pid, start, (int)getpid());
	n = snprintf(line, sizeof(line), "%d %llu %llu %llu ", (int)pid, start,
		     heca__proc_ns_ino("pid"), heca__proc_ns_ino("time"));
	for (int i = 0; i < 16; i++)
		n += snprintf(line + n, sizeof(line) - (size_t)n, "%02x", id[i]);
	line[n++] = '\n';
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (write(fd, line, (size_t)n) != n) {
		close(fd);
		unlink(tmp);
		return;
	}
	close(fd);
	if (keep) {
		if (link(tmp, final) && errno != EEXIST)
			say("cannot write %s: %s", final, strerror(errno));
		unlink(tmp);
	} else if (rename(tmp, final)) {
		say("cannot write %s: %s", final, strerror(errno));
		unlink(tmp);
	}
	if (file)
		snprintf(file, len, "%s", final);
}

/* Before this image's first sponsored block: say who it is. */
static void note_self(void)
{
	if (__atomic_load_n(&noted, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&note_mu);
	if (!noted) {
		note_write(getpid(), H->demander_id, false, note_file, sizeof(note_file));
		__atomic_store_n(&noted, true, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&note_mu);
}

/* This image has freed what it stored: nothing for heca run to do when it ends. */
static void note_remove(void)
{
	if (noted && *note_file)
		unlink(note_file);
	*note_file = '\0';
}

/* Start heca in this process, once. Returns whether it runs. */
static bool start(void)
{
	struct heca_options o;
	char why[256];
	int rc;

	if (__atomic_load_n(&state, __ATOMIC_ACQUIRE))
		return state > 0;
	heca__internal++;
	pthread_mutex_lock(&init_mu);
	if (state) {
		pthread_mutex_unlock(&init_mu);
		heca__internal--;
		return state > 0;
	}
	rc = read_env(&o, why, sizeof(why));
	if (!rc) {
		if (getuid() == 0) {
			mkdir("/run/heca", 0755);
			snprintf(ctl_path, sizeof(ctl_path), "/run/heca/%d.sock", (int)getpid());
		} else {
			snprintf(ctl_path, sizeof(ctl_path), "/tmp/heca-%u", (unsigned)getuid());
			mkdir(ctl_path, 0700);
			snprintf(ctl_path, sizeof(ctl_path), "/tmp/heca-%u/%d.sock",
				 (unsigned)getuid(), (int)getpid());
		}
		o.control_path = ctl_path;
		int before = threads_now();
		rc = heca_open(&o, &H);
		heca_threads = threads_now() - before;
		if (rc)
			snprintf(why, sizeof(why), "%s", *heca_last_error() ? heca_last_error()
									     : heca_strerror(rc));
	}
	if (rc) {
		say("cannot start: %s; large allocations stay in local memory", why);
		__atomic_store_n(&state, -1, __ATOMIC_RELEASE);
	} else {
		owner = getpid();
		__atomic_store_n(&state, 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&init_mu);
	heca__internal--;
	return rc == 0;
}

/* Whether heca runs here and this call is the program's own. A child made without fork()
 * (a raw clone, say) shares nothing of heca's: its engine, sockets and userfaultfd are the
 * parent's, and its copy of the sponsored memory is not there at all. */
static inline bool active(void)
{
	return !heca__internal && __atomic_load_n(&state, __ATOMIC_ACQUIRE) > 0 &&
	       getpid() == owner;
}

static void alloc_resolve(void);

/* heca starts here, before main() and before any allocator can hold a lock of its own; a start
 * inside a wrapper could be under one (jemalloc maps memory while it initialises, tcmalloc
 * while it grows its heap). */
__attribute__((constructor)) static void preload_init(void)
{
	const char *v = getenv("HECA_MIN_SIZE");
	uint64_t x;

	real_fork = (pid_t(*)(void))dlsym(RTLD_NEXT, "fork");
	real_ioctl = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
	alloc_resolve();
	if (v && !heca_parse_size(v, &x) && x >= PAGE_SZ) {
		min_size = x;
		min_size_set = true;
	}
	start();
}

/* At exit: the statistics if asked for; then, if no other thread of the program still runs,
 * the program's buffered output is written and every segment freed at the sponsors. Memory is
 * left mapped (as ordinary zero pages) for the little that runs after this destructor. While
 * other threads run they may still read their memory: it stays served, and it is freed once the
 * process has ended (by heca run, which sees the note still there, or by the sponsors' lease). */
__attribute__((destructor)) static void preload_fini(void)
{
	const char *file = getenv("HECA_STATS_FILE");
	int others, rc = 0;

	if (__atomic_load_n(&state, __ATOMIC_ACQUIRE) <= 0 || getpid() != owner)
		return;
	heca__internal++;
	if (file && *file && used) {
		struct heca_preload_stats rec = {.magic = HECA_PRELOAD_STATS_MAGIC,
						 .pid = getpid()};
		int fd = open(file, O_WRONLY | O_APPEND | O_CLOEXEC);
		heca_get_stats(H, &rec.st);
		if (fd >= 0) {
			if (write(fd, &rec, sizeof(rec)) != (ssize_t)sizeof(rec))
				say("cannot write statistics to %s", file);
			close(fd);
		}
	}
	if (!used) {
		/* Nothing is stored for this process anywhere: it only takes its control socket
		 * along, and spares the exit of a shell or a wrapper the engine's shutdown. */
		unlink(ctl_path);
		note_remove();
		heca__internal--;
		return;
	}
	others = threads_now() - heca_threads - 1;
	if (others > 0) {
		heca__internal--;
		return;
	}
	/* stdio writes what it still buffers after the destructors, from buffers that may be
	 * sponsored: now, while they still hold it. */
	fflush(NULL);
	for (;;) {
		uintptr_t a = 0;
		pthread_mutex_lock(&H->lock);
		if (H->nsegs)
			a = seg_start(H->segs[0]);
		pthread_mutex_unlock(&H->lock);
		if (!a)
			break;
		rc = heca_unregister(H, (void *)a, HECA_UNREG_DISCARD);
		if (rc)
			break;
	}
	__atomic_store_n(&state, -1, __ATOMIC_RELEASE);
	heca_close(H);
	H = NULL;
	if (!rc)
		note_remove(); /* else heca run frees what is left once the process has ended */
	heca__internal--;
}

/* ---- what becomes sponsored ----
 *
 * Every new segment costs a request to each sponsor, so small blocks are sponsored only where
 * they add up. A block (a mapping, a commit of part of a reservation, a malloc) is sponsored if
 *  - it is at least min_size (4 MiB), or
 *  - it is at least SMALL_MIN and commits part of a reservation of at least min_size (the
 *    heaps of the JVM and of Go grow this way, in 1-4 MiB steps), or
 *  - it is at least SMALL_MIN and the process's anonymous memory outside heca already exceeds
 *    a quarter of the budget (memcached's 1 MiB slabs, CPython's arenas, V8's 256 KiB pages).
 * A program that allocates and frees mid-size blocks without holding much pays nothing; one
 * whose small blocks add up gets them sponsored once they matter. HECA_MIN_SIZE makes the
 * threshold fixed: every block of at least that size, and nothing smaller. */

#define SMALL_MIN (256u << 10)

/* Pages of anonymous memory the process holds outside heca's segments, as /proc/self/statm
 * says (read without allocating, at most once a millisecond). */
static bool outside_is_large(void)
{
	static uint64_t last_ns;
	static bool last;
	struct timespec ts;
	uint64_t now, res = 0, shr = 0, mine, budget;
	char buf[128];
	ssize_t n;
	int fd;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	if (now - __atomic_load_n(&last_ns, __ATOMIC_RELAXED) < 1000000)
		return __atomic_load_n(&last, __ATOMIC_RELAXED);
	fd = (int)syscall(SYS_open, "/proc/self/statm", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = (ssize_t)syscall(SYS_read, fd, buf, sizeof(buf) - 1);
	syscall(SYS_close, fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	/* "size resident shared ...", in pages */
	for (int field = 0, i = 0; field < 3 && i < n; field++) {
		uint64_t v = 0;
		for (; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
			v = v * 10 + (uint64_t)(buf[i] - '0');
		i++;
		if (field == 1)
			res = v;
		else if (field == 2)
			shr = v;
	}
	pthread_mutex_lock(&H->lock);
	mine = H->resident + H->pinned;
	budget = H->budget;
	pthread_mutex_unlock(&H->lock);
	__atomic_store_n(&last, res > shr + mine && res - shr - mine > budget / 4, __ATOMIC_RELAXED);
	__atomic_store_n(&last_ns, now, __ATOMIC_RELAXED);
	return last;
}

/* Whether a block of len bytes is worth a segment; resv: the size of the reservation it
 * commits part of (0 if none). */
static bool worth(uint64_t len, uint64_t resv)
{
	if (len >= min_size)
		return true;
	if (min_size_set || len < SMALL_MIN)
		return false;
	return resv >= min_size || outside_is_large();
}

/* ---- reservations ----
 *
 * Private anonymous mappings made PROT_NONE, to be opened later part by part with mprotect()
 * (V8, .NET) or mmap(MAP_FIXED) (the JVM, Go): [lo, hi) in address order. What lies inside
 * one is known to be private anonymous memory whatever its protection now, so opening part of
 * it for reading and writing may sponsor that part. */

struct resv {
	uintptr_t lo, hi;
};
static pthread_mutex_t resv_mu = PTHREAD_MUTEX_INITIALIZER;
static struct resv *resv;
static size_t nresv, resv_cap;

/* The first reservation ending after a. Caller holds resv_mu. */
static size_t resv_at_locked(uintptr_t a)
{
	size_t lo = 0, hi = nresv;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (resv[mid].hi <= a)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int resv_room_locked(size_t n)
{
	size_t ncap = resv_cap ? resv_cap : 256;
	struct resv *m;

	if (nresv + n <= resv_cap)
		return 0;
	while (ncap < nresv + n)
		ncap *= 2;
	m = (struct resv *)syscall(SYS_mmap, NULL, ncap * sizeof(*m), PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if ((long)m == -1)
		return -ENOMEM;
	if (resv) {
		memcpy(m, resv, nresv * sizeof(*m));
		syscall(SYS_munmap, resv, resv_cap * sizeof(*resv));
	}
	resv = m;
	resv_cap = ncap;
	return 0;
}

/* Forget [lo, hi): it was unmapped, or replaced by another kind of mapping. */
static void resv_cut(uintptr_t lo, uintptr_t hi)
{
	size_t i;

	if (!__atomic_load_n(&nresv, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&resv_mu);
	for (i = resv_at_locked(lo); i < nresv && resv[i].lo < hi;) {
		struct resv *r = &resv[i];
		if (r->lo < lo && r->hi > hi) {
			/* A hole in the middle: the part past it is a reservation of its own. */
			if (resv_room_locked(1))
				break; /* kept whole: what it covers is only tried for sponsoring */
			r = &resv[i];
			memmove(r + 1, r, (nresv - i) * sizeof(*r));
			nresv++;
			r[1].lo = hi;
			r->hi = lo;
			break;
		}
		if (r->lo < lo) {
			r->hi = lo;
			i++;
		} else if (r->hi > hi) {
			r->lo = hi;
			break;
		} else {
			memmove(r, r + 1, (nresv - i - 1) * sizeof(*r));
			nresv--;
		}
	}
	pthread_mutex_unlock(&resv_mu);
}

/* A new PROT_NONE private anonymous mapping [lo, hi), where nothing was recorded before. */
static void resv_add(uintptr_t lo, uintptr_t hi)
{
	size_t i;

	pthread_mutex_lock(&resv_mu);
	if (!resv_room_locked(1)) {
		i = resv_at_locked(lo);
		memmove(&resv[i + 1], &resv[i], (nresv - i) * sizeof(*resv));
		resv[i] = (struct resv){lo, hi};
		nresv++;
	}
	pthread_mutex_unlock(&resv_mu);
}

/* The size of the reservation that holds all of [lo, hi), or 0. */
static uint64_t resv_holding(uintptr_t lo, uintptr_t hi)
{
	uint64_t n = 0;
	size_t i;

	if (!__atomic_load_n(&nresv, __ATOMIC_RELAXED))
		return 0;
	pthread_mutex_lock(&resv_mu);
	i = resv_at_locked(lo);
	if (i < nresv && resv[i].lo <= lo && resv[i].hi >= hi)
		n = resv[i].hi - resv[i].lo;
	pthread_mutex_unlock(&resv_mu);
	return n;
}

static bool private_anon(int flags, int fd)
{
	return (flags & MAP_ANONYMOUS) && (flags & MAP_TYPE) == MAP_PRIVATE && fd == -1 &&
	       !(flags & (MAP_STACK | MAP_GROWSDOWN | MAP_HUGETLB));
}

/* ---- memory calls ---- */

static void *sys_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
	return (void *)syscall(SYS_mmap, a, len, prot, flags, fd, off);
}

static uint64_t page_up(uint64_t n)
{
	return (n + PAGE_SZ - 1) & ~(PAGE_SZ - 1);
}

/* errno from a -errno, and the failure value. */
static void *fail_ptr(int rc)
{
	errno = -rc;
	return MAP_FAILED;
}

EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	bool fixed = (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) == MAP_FIXED, anon, want = false;
	uint64_t in_resv = 0;
	void *p;

	if (heca__internal)
		return sys_mmap(addr, len, prot, flags, fd, off);
	anon = private_anon(flags, fd);
	if (active()) {
		if (fixed && anon)
			in_resv = resv_holding((uintptr_t)addr, (uintptr_t)addr + page_up(len));
		want = anon && (prot & PROT_READ) && (prot & PROT_WRITE) && worth(len, in_resv);
	}
	if (active() && fixed && heca__range_sponsored(H, (uintptr_t)addr, len)) {
		heca__internal++;
		heca__unmap_range(H, (uintptr_t)addr, page_up(len)); /* it is replaced */
		heca__internal--;
	}
	p = sys_mmap(addr, len, prot, flags | (want ? MAP_NORESERVE : 0), fd, off);
	if (p == MAP_FAILED)
		return p;
	if (fixed && !in_resv)
		resv_cut((uintptr_t)p, (uintptr_t)p + page_up(len)); /* whatever it replaced */
	if (anon && prot == PROT_NONE && !in_resv && len >= SMALL_MIN)
		resv_add((uintptr_t)p, (uintptr_t)p + page_up(len));
	if (!want || !active())
		return p;
	heca__internal++;
	note_self();
	if (heca_register(H, p, page_up(len)) < 0)
		say_local(len, heca_last_error());
	else
		used = true;
	heca__internal--;
	return p;
}
EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
	__attribute__((alias("mmap")));

/* ---- the program break ----
 *
 * An allocator that grows its heap with sbrk() (tcmalloc by default) gets each extension of at
 * least BRK_MIN sponsored as a segment of its own; shrinking stops sponsoring what is given
 * back first. glibc's own heap moves the break through internal calls that no preloaded
 * library sees: its large blocks are sponsored through the malloc wrappers instead. */

#define BRK_MIN (64u << 10)

static void *(*real_sbrk)(intptr_t);

static void brk_grown(uintptr_t lo, uintptr_t hi)
{
	lo = page_up(lo);
	hi &= ~(uintptr_t)(PAGE_SZ - 1);
	if (hi <= lo || hi - lo < BRK_MIN || !active())
		return;
	heca__internal++;
	note_self();
	if (heca_register(H, (void *)lo, hi - lo) < 0)
		say_local(hi - lo, heca_last_error());
	else
		used = true;
	heca__internal--;
}

static void brk_shrinking(uintptr_t lo, uintptr_t hi)
{
	lo = page_up(lo);
	if (hi <= lo || !active() || !heca__range_sponsored(H, lo, page_up(hi) - lo))
		return;
	heca__internal++;
	heca__unmap_range(H, lo, page_up(hi) - lo);
	heca__internal--;
}

EXPORT void *sbrk(intptr_t inc)
{
	uintptr_t cur;
	void *p;

	if (!real_sbrk)
		real_sbrk = (void *(*)(intptr_t))dlsym(RTLD_NEXT, "sbrk");
	if (!real_sbrk) {
		errno = ENOMEM;
		return (void *)-1;
	}
	if (inc < 0 && (cur = (uintptr_t)real_sbrk(0)) != (uintptr_t)-1)
		brk_shrinking(cur + (uintptr_t)inc, cur);
	p = real_sbrk(inc);
	if (p != (void *)-1 && inc > 0)
		brk_grown((uintptr_t)p, (uintptr_t)p + (uintptr_t)inc);
	return p;
}

EXPORT int brk(void *end)
{
	uintptr_t cur;

	if (!real_sbrk)
		real_sbrk = (void *(*)(intptr_t))dlsym(RTLD_NEXT, "sbrk");
	if (!real_sbrk || (cur = (uintptr_t)real_sbrk(0)) == (uintptr_t)-1) {
		errno = ENOMEM;
		return -1;
	}
	return sbrk((intptr_t)((uintptr_t)end - cur)) == (void *)-1 ? -1 : 0;
}

EXPORT int munmap(void *addr, size_t len)
{
	resv_cut((uintptr_t)addr, (uintptr_t)addr + page_up(len));
	if (active() && heca__range_sponsored(H, (uintptr_t)addr, len)) {
		heca__internal++;
		heca__unmap_range(H, (uintptr_t)addr, page_up(len));
		heca__internal--;
	}
	return (int)syscall(SYS_munmap, addr, len);
}

EXPORT void *mremap(void *old, size_t oldlen, size_t newlen, int flags, ...)
{
	void *want = NULL;
	uintptr_t out;
	int rc;

	if (flags & MREMAP_FIXED) {
		va_list ap;
		va_start(ap, flags);
		want = va_arg(ap, void *);
		va_end(ap);
		resv_cut((uintptr_t)want, (uintptr_t)want + page_up(newlen));
	}
	resv_cut((uintptr_t)old, (uintptr_t)old + page_up(oldlen));
	if (!active())
		return (void *)syscall(SYS_mremap, old, oldlen, newlen, flags, want);
	heca__internal++;
	rc = heca__remap(H, (uintptr_t)old, oldlen, newlen, flags, (uintptr_t)want, &out);
	heca__internal--;
	if (rc == 1)
		return (void *)syscall(SYS_mremap, old, oldlen, newlen, flags, want);
	if (rc == -ENOTSUP) {
		say("mremap(%p, %zu, %zu, %#x): not supported on sponsored memory: only whole "
		    "mappings, without MREMAP_DONTUNMAP, not grown into what is left of them "
		    "after a partial munmap",
		    old, oldlen, newlen, flags);
		return fail_ptr(-EINVAL);
	}
	if (rc)
		return fail_ptr(rc);
	return (void *)out;
}

/* madvise() on the parts of [addr, addr + len) that are not sponsored. */
static int madvise_gaps(void *addr, size_t len, int advice)
{
	uintptr_t ga[64];
	uint64_t gl[64];
	int n, rc = 0;

	heca__internal++;
	n = heca__unsponsored_gaps(H, (uintptr_t)addr, len, ga, gl, 64);
	heca__internal--;
	for (int i = 0; i < n && !rc; i++)
		rc = (int)syscall(SYS_madvise, ga[i], gl[i], advice);
	return rc;
}

EXPORT int madvise(void *addr, size_t len, int advice)
{
	int rc = 0;

	if (!active() || !heca__range_sponsored(H, (uintptr_t)addr, len))
		return (int)syscall(SYS_madvise, addr, len, advice);
	if (madvise_gaps(addr, len, advice))
		return -1;
	switch (advice) {
	case MADV_DONTNEED:
	case MADV_FREE:
		/* The pages read as zero afterwards, as the kernel promises for DONTNEED (and
		 * allows for FREE). */
		heca__internal++;
		rc = heca__discard_range(H, (uintptr_t)addr, page_up(len));
		heca__internal--;
		if (rc) {
			errno = -rc;
			return -1;
		}
		return 0;
	case MADV_DOFORK:
	case MADV_DONTFORK:
	case MADV_HUGEPAGE:
	case MADV_NOHUGEPAGE:
	case MADV_COLD:
	case MADV_PAGEOUT:
	case MADV_MERGEABLE:
	case MADV_UNMERGEABLE:
		return 0; /* heca decides these for sponsored memory */
	default:
		return (int)syscall(SYS_madvise, addr, len, advice);
	}
}

/* Sponsor what [a, a + len) holds that is not sponsored yet: it was just made readable and
 * writable inside a reservation of resv bytes. Pages already there keep their content. */
static void opened(uintptr_t a, uint64_t len, uint64_t resv_len)
{
	uintptr_t ga[16];
	uint64_t gl[16];
	int n;

	if (!worth(len, resv_len))
		return;
	heca__internal++;
	n = heca__unsponsored_gaps(H, a, len, ga, gl, 16);
	for (int i = 0; i < n; i++) {
		if (gl[i] < SMALL_MIN && gl[i] < len)
			continue; /* a sliver next to what is sponsored already */
		if (heca_register(H, (void *)ga[i], gl[i]) < 0)
			say_local(gl[i], heca_last_error());
		else
			used = true;
	}
	heca__internal--;
}

static int protect(void *addr, size_t len, int prot, bool with_key, int pkey)
{
	uintptr_t a = (uintptr_t)addr;
	uint64_t resv_len = 0;
	int rc;

	if (active() && !(prot & PROT_READ) && heca__range_sponsored(H, a, len)) {
		/* heca must read a page to send it away: memory the program makes unreadable
		 * comes back into local memory, with its content, and stops being sponsored.
		 * Made readable and writable again, it is sponsored again. */
		heca__internal++;
		rc = heca__unsponsor_range(H, a, page_up(len));
		heca__internal--;
		if (rc) {
			say("mprotect(%p, %zu, %#x): cannot bring the sponsored pages back: %s", addr,
			    len, prot, heca_strerror(rc));
			errno = -rc;
			return -1;
		}
	}
	if (active() && (prot & PROT_READ) && (prot & PROT_WRITE) && !(a & (PAGE_SZ - 1)))
		resv_len = resv_holding(a, a + page_up(len));
	rc = !with_key ? (int)syscall(SYS_mprotect, addr, len, prot)
		      : (int)syscall(SYS_pkey_mprotect, addr, len, prot, pkey);
	if (rc == 0 && resv_len && len && active())
		opened(a, page_up(len), resv_len);
	return rc;
}

EXPORT int mprotect(void *addr, size_t len, int prot)
{
	return protect(addr, len, prot, false, -1);
}

EXPORT int pkey_mprotect(void *addr, size_t len, int prot, int pkey)
{
	return protect(addr, len, prot, true, pkey);
}

/* ---- what heca refuses ----
 *
 * Two things a program may ask for cannot work on memory that heca serves, and the program
 * would find out too late: a userfaultfd of its own fails to register over sponsored memory
 * (EBUSY) only when it registers it, which for QEMU's postcopy migration is after the source
 * has stopped the guest and handed it over; and locked memory cannot be evicted. Both are
 * refused where the program first asks, with a line that names the reason. */

EXPORT int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (req == UFFDIO_API && active()) {
		/* Every userfaultfd needs this handshake before it can register anything, however
		 * it was made (the system call, or /dev/userfaultfd). */
		say("userfaultfd refused: this process's large memory is served by heca's own "
		    "userfaultfd, and a second one cannot register it (QEMU: postcopy migration and "
		    "background snapshots are not available under heca)");
		errno = EPERM;
		return -1;
	}
	if (real_ioctl)
		return real_ioctl(fd, req, arg);
	return (int)syscall(SYS_ioctl, fd, req, arg);
}

EXPORT int mlockall(int flags)
{
	if (active() && ((flags & MCL_FUTURE) || used)) {
		say("mlockall(%#x) refused: heca keeps this process's large memory within its budget "
		    "by evicting it to sponsors, and locked memory cannot be evicted (QEMU: "
		    "-overcommit mem-lock=on); run the program without heca to lock its memory",
		    flags);
		errno = EPERM;
		return -1;
	}
	return (int)syscall(SYS_mlockall, flags);
}

/* mlock() and mlock2() of sponsored memory: the evictor could not drop a locked page, so
 * they are refused like mlockall(); locking ordinary memory is left alone. */
static int lock_range(long nr, const void *addr, size_t len, unsigned int flags)
{
	uintptr_t lo = (uintptr_t)addr & ~(uintptr_t)(PAGE_SZ - 1);

	if (len && active() && heca__range_sponsored(H, lo, page_up((uintptr_t)addr + len) - lo)) {
		say("mlock(%p, %zu) refused: the range is sponsored memory, which heca keeps within "
		    "its budget by evicting it, and locked memory cannot be evicted; run the program "
		    "without heca to lock it",
		    addr, len);
		errno = EPERM;
		return -1;
	}
	return nr == SYS_mlock ? (int)syscall(SYS_mlock, addr, len)
			       : (int)syscall(SYS_mlock2, addr, len, flags);
}

EXPORT int mlock(const void *addr, size_t len)
{
	return lock_range(SYS_mlock, addr, len, 0);
}

EXPORT int mlock2(const void *addr, size_t len, unsigned int flags)
{
	return lock_range(SYS_mlock2, addr, len, flags);
}

EXPORT pid_t fork(void)
{
	pid_t pid;
	int child_err = 0;
	uint8_t child_id[16];

	if (!real_fork)
		real_fork = (pid_t(*)(void))dlsym(RTLD_NEXT, "fork");
	if (!active() || getpid() != owner)
		return real_fork();
	heca__internal++;
	pthread_mutex_lock(&blocks_mu);
	pid = heca__fork_with(H, real_fork, &child_err, child_id);
	pthread_mutex_unlock(&blocks_mu);
	/* The sponsors hold the child's copy from now on: heca run must know of it, from
	 * whichever of the two gets there first (the child may be killed at once). */
	if (pid > 0 && noted)
		note_write(pid, child_id, true, NULL, 0);
	if (pid == 0) {
		pthread_mutex_init(&blocks_mu, NULL);
		pthread_mutex_init(&note_mu, NULL);
		owner = getpid();
		if (noted)
			note_write(getpid(), H->demander_id, false, note_file, sizeof(note_file));
		if (child_err) {
			say("fork: %s; the child's sponsored memory is gone (touching it faults)",
			    heca_last_error());
			__atomic_store_n(&state, -1, __ATOMIC_RELEASE); /* no engine serves it */
		}
	}
	heca__internal--;
	if (pid < -1) {
		say("fork: %s", *heca_last_error() ? heca_last_error() : heca_strerror(pid));
		errno = -pid;
		return -1;
	}
	return pid;
}

/* _exit() skips destructors; a child that ends this way right after fork is common. Tell the
 * sponsors to free everything now rather than when the lease ends. Not in a vfork child,
 * which shares the parent's heca (and pid check tells them apart). */
EXPORT void _exit(int status)
{
	if (active() && getpid() == owner) {
		heca__internal++;
		if (!heca__drop_all(H))
			note_remove();
	}
	syscall(SYS_exit_group, status);
	__builtin_unreachable();
}

EXPORT void _Exit(int status) __attribute__((alias("_exit")));

/* ---- the allocator ----
 *
 * The malloc family of the allocator the program would have without heca: the next definition
 * after this library, which is glibc's, or jemalloc, tcmalloc or mimalloc linked into the
 * program or preloaded after heca. Every pointer goes back to the allocator that made it. */

static struct {
	void *(*malloc)(size_t);
	void (*free)(void *);
	void *(*calloc)(size_t, size_t);
	void *(*realloc)(void *, size_t);
	void *(*memalign)(size_t, size_t);
	int (*posix_memalign)(void **, size_t, size_t);
	void *(*aligned_alloc)(size_t, size_t);
	void *(*valloc)(size_t);
	void *(*pvalloc)(size_t);
	size_t (*usable)(void *);
} nx;

/* 0: not known yet; ALLOC_GLIBC: heca hands out the big blocks itself, because glibc maps them
 * out of an interposer's reach; ALLOC_OTHER: that allocator gets every call, and the memory it
 * maps is sponsored through mmap(). */
enum { ALLOC_GLIBC = 1, ALLOC_OTHER = 2 };
static int alloc_kind;
static __thread int resolving;

/* What dlsym() allocates while the allocator is being looked up comes from here, reads as
 * zero, and is never reused. */
static char boot_buf[64 << 10] __attribute__((aligned(16)));
static size_t boot_used;

static void *boot_alloc(size_t n)
{
	size_t at = __atomic_fetch_add(&boot_used, (n + 15) & ~(size_t)15, __ATOMIC_RELAXED);

	if (n > sizeof(boot_buf) || at > sizeof(boot_buf) - n) {
		errno = ENOMEM;
		return NULL;
	}
	return boot_buf + at;
}

static bool is_boot(const void *p)
{
	return (const char *)p >= boot_buf && (const char *)p < boot_buf + sizeof(boot_buf);
}

#define NEXT(field, name) nx.field = (__typeof__(nx.field))dlsym(RTLD_NEXT, name)

static void alloc_resolve(void)
{
	void *libc, *glibc_malloc;

	if (__atomic_load_n(&alloc_kind, __ATOMIC_ACQUIRE))
		return;
	resolving++;
	NEXT(malloc, "malloc");
	NEXT(free, "free");
	NEXT(calloc, "calloc");
	NEXT(realloc, "realloc");
	NEXT(memalign, "memalign");
	NEXT(posix_memalign, "posix_memalign");
	NEXT(aligned_alloc, "aligned_alloc");
	NEXT(valloc, "valloc");
	NEXT(pvalloc, "pvalloc");
	NEXT(usable, "malloc_usable_size");
	/* glibc's own, looked up in libc itself: an allocator may define __libc_malloc too
	 * (tcmalloc does), so that name does not tell. */
	libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
	glibc_malloc = libc ? dlsym(libc, "malloc") : NULL;
	if (libc)
		dlclose(libc);
	resolving--;
	__atomic_store_n(&alloc_kind,
			 !nx.malloc || !nx.free || (void *)nx.malloc == glibc_malloc ? ALLOC_GLIBC
										: ALLOC_OTHER,
			 __ATOMIC_RELEASE);
}

static inline bool other_alloc(void)
{
	int k = __atomic_load_n(&alloc_kind, __ATOMIC_ACQUIRE);
	if (!k) {
		alloc_resolve();
		k = alloc_kind;
	}
	return k == ALLOC_OTHER;
}

static void *big_alloc(size_t n)
{
	void *p = NULL;
	uint64_t len = page_up(n);
	int rc;

	if (n < SMALL_MIN || !active() || !worth(n, 0))
		return NULL;
	heca__internal++;
	note_self();
	rc = heca_map(H, len, &p);
	if (rc == -ENOMEM)
		say_local(n, heca_last_error());
	if (!rc && block_add((uintptr_t)p, len)) {
		heca_unmap(H, p);
		rc = -ENOMEM;
	}
	if (!rc)
		used = true;
	heca__internal--;
	return rc ? NULL : p;
}

EXPORT void *malloc(size_t n)
{
	void *p;

	if (resolving)
		return boot_alloc(n);
	if (other_alloc())
		return nx.malloc(n);
	p = big_alloc(n);
	return p ? p : nx.malloc(n);
}

EXPORT void free(void *p)
{
	uint64_t len;

	if (!p || is_boot(p))
		return;
	if (other_alloc()) {
		nx.free(p);
		return;
	}
	len = heca__internal ? 0 : block_find((uintptr_t)p, true);
	if (!len) {
		nx.free(p);
		return;
	}
	if (active()) {
		/* The block may be in pieces (mprotect took a part back): all of them go. */
		heca__internal++;
		heca__unmap_range(H, (uintptr_t)p, len);
		heca__internal--;
	}
	syscall(SYS_munmap, p, len);
}

EXPORT void *calloc(size_t n, size_t m)
{
	void *p;

	if (m && n > SIZE_MAX / m) {
		errno = ENOMEM;
		return NULL;
	}
	if (resolving)
		return boot_alloc(n * m);
	if (other_alloc())
		return nx.calloc(n, m);
	p = big_alloc(n * m); /* fresh sponsored memory reads as zero */
	return p ? p : nx.calloc(n, m);
}

EXPORT void *realloc(void *p, size_t n)
{
	uint64_t len;
	bool sponsored = false;
	void *q;

	if (p && is_boot(p)) {
		size_t left = (size_t)(boot_buf + sizeof(boot_buf) - (char *)p);
		if ((q = malloc(n)))
			memcpy(q, p, left < n ? left : n);
		return q;
	}
	if (resolving)
		return boot_alloc(n);
	if (other_alloc())
		return nx.realloc(p, n);
	len = p && !heca__internal ? block_find((uintptr_t)p, false) : 0;
	if (len && active()) {
		/* mprotect may have taken the block back: then it is ordinary memory. */
		heca__internal++;
		sponsored = heca__range_sponsored(H, (uintptr_t)p, len);
		heca__internal--;
	}
	if (len && n == 0) {
		free(p);
		return NULL;
	}
	if (len) {
		uintptr_t out;
		int rc = 1;
		if (sponsored) {
			heca__internal++;
			rc = heca__remap(H, (uintptr_t)p, len, page_up(n), MREMAP_MAYMOVE, 0, &out);
			heca__internal--;
		}
		if (rc == 1) {
			out = (uintptr_t)syscall(SYS_mremap, p, len, page_up(n), MREMAP_MAYMOVE, 0);
			rc = (void *)out == MAP_FAILED ? -errno : 0;
		}
		if (rc) {
			errno = ENOMEM;
			return NULL;
		}
		block_find((uintptr_t)p, true);
		if (block_add(out, page_up(n)))
			say("realloc: the block at %p cannot be recorded; it is not freed", (void *)out);
		return (void *)out;
	}
	if (p && (q = big_alloc(n))) {
		size_t have = nx.usable ? nx.usable(p) : 0;
		memcpy(q, p, have < n ? have : n);
		nx.free(p);
		return q;
	}
	return nx.realloc(p, n);
}

EXPORT void *reallocarray(void *p, size_t n, size_t m)
{
	if (m && n > SIZE_MAX / m) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, n * m);
}

EXPORT void *memalign(size_t align, size_t n)
{
	void *p;

	if (resolving)
		return align <= 16 ? boot_alloc(n) : NULL;
	if (other_alloc())
		return nx.memalign(align, n);
	p = align <= PAGE_SZ ? big_alloc(n) : NULL;
	return p ? p : nx.memalign(align, n);
}

EXPORT int posix_memalign(void **out, size_t align, size_t n)
{
	void *p;

	if (!resolving && other_alloc())
		return nx.posix_memalign(out, align, n);
	if (!align || (align & (align - 1)) || align % sizeof(void *))
		return EINVAL;
	p = memalign(align, n);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

EXPORT void *aligned_alloc(size_t align, size_t n)
{
	if (!resolving && other_alloc())
		return nx.aligned_alloc(align, n);
	return memalign(align, n);
}

EXPORT void *valloc(size_t n)
{
	if (!resolving && other_alloc())
		return nx.valloc(n);
	return memalign(PAGE_SZ, n);
}

EXPORT void *pvalloc(size_t n)
{
	if (!resolving && other_alloc())
		return nx.pvalloc(n);
	return memalign(PAGE_SZ, page_up(n ? n : 1));
}

EXPORT size_t malloc_usable_size(void *p)
{
	uint64_t len;

	if (!p || is_boot(p))
		return 0;
	if (other_alloc())
		return nx.usable ? nx.usable(p) : 0;
	len = block_find((uintptr_t)p, false);
	if (len)
		return len;
	return nx.usable ? nx.usable(p) : 0;
}
