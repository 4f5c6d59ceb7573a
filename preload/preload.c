// SPDX-License-Identifier: MIT
/*
 * preload.c - libheca-preload.so: heca for programs that were never written for it. Loaded
 * with LD_PRELOAD (by `heca run`), it makes large private anonymous memory sponsored:
 *
 *  - mmap() of private anonymous memory of at least HECA_MIN_SIZE bytes is registered: every
 *    allocator but glibc's (jemalloc, tcmalloc, mimalloc) maps its memory this way, and keeps
 *    every pointer it made;
 *  - glibc's malloc maps memory through internal calls out of an interposer's reach, so when
 *    glibc's is the program's allocator, malloc() and friends of at least HECA_MIN_SIZE bytes
 *    get a sponsored mapping of their own; free() gives it back, realloc() moves it with
 *    mremap. With any other allocator every malloc-family call goes to that allocator;
 *  - munmap(), mremap(), madvise(MADV_DONTNEED/MADV_FREE), mprotect() and fork() on
 *    sponsored memory are done so that page states, the budget and the sponsors stay true
 *    (src/segops.c, src/fork.c);
 *  - mlockall() and a userfaultfd of the program's own, which cannot work on sponsored
 *    memory, are refused with a line that says why.
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

#define EXPORT __attribute__((visibility("default")))

static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;
static struct heca *H;
static int state; /* 0: not started, 1: running, -1: off (failed, or not wanted) */
static pid_t owner;
static bool used; /* this process has sponsored memory: its statistics are worth a record */
static uint64_t min_size = 4ull << 20;
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
	if ((v = getenv("HECA_MIN_SIZE")) && *v) {
		if (heca_parse_size(v, &x) || x < PAGE_SZ) {
			snprintf(why, whylen, "HECA_MIN_SIZE=%s: not a size of at least 4k", v);
			return -EINVAL;
		}
		min_size = x;
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
	if (v && !heca_parse_size(v, &x) && x >= PAGE_SZ)
		min_size = x;
	start();
}

/* At exit: the statistics if asked for; then, if no other thread of the program still runs,
 * the program's buffered output is written and every segment freed at the sponsors. Memory is
 * left mapped (as ordinary zero pages) for the little that runs after this destructor. While
 * other threads run they may still read their memory: it stays served, and the sponsors free
 * it when their lease of the process ends. */
__attribute__((destructor)) static void preload_fini(void)
{
	const char *file = getenv("HECA_STATS_FILE");
	int others;

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
		if (!a || heca_unregister(H, (void *)a, HECA_UNREG_DISCARD))
			break;
	}
	__atomic_store_n(&state, -1, __ATOMIC_RELEASE);
	heca_close(H);
	H = NULL;
	heca__internal--;
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

static bool sponsorable(size_t len, int prot, int flags, int fd)
{
	return len >= min_size && (flags & MAP_ANONYMOUS) && (flags & MAP_TYPE) == MAP_PRIVATE &&
	       !(flags & (MAP_STACK | MAP_GROWSDOWN | MAP_HUGETLB)) && fd == -1 &&
	       (prot & PROT_READ) && (prot & PROT_WRITE);
}

EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p;
	bool want;

	if (heca__internal)
		return sys_mmap(addr, len, prot, flags, fd, off);
	want = sponsorable(len, prot, flags, fd) && active();
	if (active() && (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) == MAP_FIXED &&
	    heca__range_sponsored(H, (uintptr_t)addr, len)) {
		heca__internal++;
		heca__unmap_range(H, (uintptr_t)addr, page_up(len)); /* it is replaced */
		heca__internal--;
	}
	p = sys_mmap(addr, len, prot, flags | (want ? MAP_NORESERVE : 0), fd, off);
	if (p == MAP_FAILED || !want || !active())
		return p;
	heca__internal++;
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
	}
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

EXPORT int mprotect(void *addr, size_t len, int prot)
{
	if (active() && !(prot & PROT_READ) && heca__range_sponsored(H, (uintptr_t)addr, len)) {
		/* heca must read a page to send it away: memory the program makes unreadable
		 * comes back into local memory and stops being sponsored. */
		static int said;
		int rc;
		if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
			say("mprotect(%p, %zu, %#x) takes read access from sponsored memory: heca "
			    "stops sponsoring that mapping and brings its pages home (said once)",
			    addr, len, prot);
		heca__internal++;
		rc = heca__unsponsor_range(H, (uintptr_t)addr, len);
		heca__internal--;
		if (rc) {
			say("mprotect(%p, %zu, %#x): cannot bring the sponsored pages back: %s", addr,
			    len, prot, heca_strerror(rc));
			errno = -rc;
			return -1;
		}
	}
	return (int)syscall(SYS_mprotect, addr, len, prot);
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

EXPORT pid_t fork(void)
{
	pid_t pid;
	int child_err = 0;

	if (!real_fork)
		real_fork = (pid_t(*)(void))dlsym(RTLD_NEXT, "fork");
	if (!active() || getpid() != owner)
		return real_fork();
	heca__internal++;
	pthread_mutex_lock(&blocks_mu);
	pid = heca__fork_with(H, real_fork, &child_err);
	pthread_mutex_unlock(&blocks_mu);
	if (pid == 0) {
		pthread_mutex_init(&blocks_mu, NULL);
		owner = getpid();
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
		heca__drop_all(H);
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

	if (n < min_size || !active())
		return NULL;
	heca__internal++;
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
		int rc;
		heca__internal++;
		rc = heca_unmap(H, p);
		heca__internal--;
		if (rc == 0)
			return;
	}
	/* heca has stopped, or no longer sponsors the block (mprotect took it back):
	 * ordinary memory now. */
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
	if (n >= min_size && p && (q = big_alloc(n))) {
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
