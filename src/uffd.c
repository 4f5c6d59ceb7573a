// SPDX-License-Identifier: MIT
/*
 * uffd.c - userfaultfd set-up with run-time feature detection and words for why it cannot be
 * used, and the page-table ioctls the engine and evictor need, as -errno-returning wrappers.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compat_uffd.h"
#include "heca_int.h"

#ifndef PAGEMAP_SCAN
/* PAGEMAP_SCAN (Linux 6.7) is tried first; /proc/self/pagemap is the fallback. */
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_PRESENT (1 << 3)
struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};
struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};
#endif

static int read_sysctl(const char *path)
{
	char buf[16] = {0};
	int fd = open(path, O_RDONLY | O_CLOEXEC), v = -1;
	if (fd >= 0) {
		if (read(fd, buf, sizeof(buf) - 1) > 0)
			v = buf[0] - '0';
		close(fd);
	}
	return v;
}

/* The Seccomp: field of /proc/self/status: 0 none, 1 strict, 2 filter; -1 unknown. */
static int seccomp_mode(void)
{
	char line[128];
	int mode = -1;
	FILE *f = fopen("/proc/self/status", "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Seccomp: %d", &mode) == 1)
			break;
	fclose(f);
	return mode;
}

/*
 * Faults the kernel takes on the program's behalf (read() into sponsored memory, say) must be
 * served too, which takes a privileged userfaultfd. Where only an unprivileged one is allowed
 * (UFFD_USER_MODE_ONLY, 5.11+, when vm.unprivileged_userfaultfd is 0), such system calls fail
 * with EFAULT on pages that are not resident: fine for code that only touches its memory.
 */
static int open_fd(struct heca *h)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	h->user_mode_only = false;
	if (fd >= 0 || errno != EPERM)
		return fd;
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1 /* UFFD_USER_MODE_ONLY */);
	if (fd >= 0)
		h->user_mode_only = true;
	else
		errno = EPERM;
	return fd;
}

int heca__uffd_open(struct heca *h)
{
	struct uffdio_api api = {.api = UFFD_API};
	uint64_t want = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_THREAD_ID |
			UFFD_FEATURE_POISON | UFFD_FEATURE_MOVE | UFFD_FEATURE_EVENT_REMOVE |
			UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP;
	int fd, err;

	fd = open_fd(h);
	if (fd < 0) {
		err = -errno;
		if (err == -ENOSYS)
			heca__set_error("userfaultfd: not in this kernel (needs Linux 4.11+ with "
					"CONFIG_USERFAULTFD); heca cannot run here");
		else if (err == -EPERM && seccomp_mode() > 0)
			heca__set_error("userfaultfd: permission denied by this process's seccomp "
					"filter (a container or sandbox policy); allow the "
					"userfaultfd system call");
		else if (err == -EPERM && geteuid() != 0 &&
			 read_sysctl("/proc/sys/vm/unprivileged_userfaultfd") == 0)
			heca__set_error("userfaultfd: permission denied: vm.unprivileged_userfaultfd "
					"is 0; run as root, grant CAP_SYS_PTRACE, or `sysctl "
					"vm.unprivileged_userfaultfd=1`");
		else if (err == -EPERM)
			heca__set_error("userfaultfd: permission denied (a security module or "
					"container policy forbids it); allow the userfaultfd "
					"system call");
		else
			heca__set_error("userfaultfd: %s", strerror(-err));
		return err;
	}
	/* Ask for what the kernel offers of what heca uses; older kernels reject unknown bits. */
	api.features = 0;
	if (ioctl(fd, UFFDIO_API, &api)) {
		err = -errno;
		heca__set_error("userfaultfd: UFFDIO_API failed: %s", strerror(-err));
		close(fd);
		return err;
	}
	close(fd);
	want &= api.features;
	if (h->opt.flags & HECA_OPT_NO_WP)
		want &= ~(uint64_t)UFFD_FEATURE_PAGEFAULT_FLAG_WP;
	if (h->opt.flags & HECA_OPT_NO_POISON)
		want &= ~(uint64_t)UFFD_FEATURE_POISON;
	if (h->opt.flags & HECA_OPT_NO_EVENTS)
		want &= ~(uint64_t)(UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP |
				    UFFD_FEATURE_EVENT_REMAP);
	fd = open_fd(h);
	if (fd < 0)
		return -errno;
	api.api = UFFD_API;
	api.features = want;
	if (ioctl(fd, UFFDIO_API, &api)) {
		err = -errno;
		heca__set_error("userfaultfd: UFFDIO_API with features %#llx failed: %s",
				(unsigned long long)want, strerror(-err));
		close(fd);
		return err;
	}
	h->uffd = fd;
	h->features = 0;
	if (want & UFFD_FEATURE_PAGEFAULT_FLAG_WP)
		h->features |= HECA_FEAT_WP;
	if (want & UFFD_FEATURE_POISON)
		h->features |= HECA_FEAT_POISON;
	if (want & UFFD_FEATURE_MOVE)
		h->features |= HECA_FEAT_MOVE;
	if (want & UFFD_FEATURE_EVENT_REMOVE)
		h->features |= HECA_FEAT_REMOVE;
	h->thread_id = !!(want & UFFD_FEATURE_THREAD_ID);
	if (!(h->features & HECA_FEAT_WP)) {
		/* Without write-protect a write during the eviction copy could be lost
		 * (DESIGN.md invariant 2). heca refuses instead of risking it. */
		heca__set_error("userfaultfd: this kernel (or HECA_OPT_NO_WP) offers no "
				"write-protect on anonymous memory (Linux 5.7+); heca needs it to "
				"evict pages without losing writes");
		close(fd);
		h->uffd = -1;
		return -ENOSYS;
	}
	return 0;
}

int heca__uffd_register(struct heca *h, uintptr_t addr, uint64_t len)
{
	struct uffdio_register r = {.range = {.start = addr, .len = len},
				    .mode = UFFDIO_REGISTER_MODE_MISSING};

	if (h->features & HECA_FEAT_WP)
		r.mode |= UFFDIO_REGISTER_MODE_WP;
	if (ioctl(h->uffd, UFFDIO_REGISTER, &r))
		return -errno;
	if ((h->features & HECA_FEAT_POISON) && !(r.ioctls & (1ull << _UFFDIO_POISON)))
		h->features &= ~HECA_FEAT_POISON;
	return 0;
}

int heca__uffd_unregister(struct heca *h, uintptr_t addr, uint64_t len)
{
	struct uffdio_range r = {.start = addr, .len = len};
	if (ioctl(h->uffd, UFFDIO_UNREGISTER, &r))
		return -errno;
	return 0;
}

/*
 * EAGAIN from a userfaultfd ioctl: the kernel holds page-table changes until an event (a zap)
 * is read. Other threads wait for the engine to read it; the engine, which alone reads, takes
 * the pending messages itself and goes on.
 */
static void eagain(struct heca *h)
{
	static __thread unsigned int idle;

	if (heca__engine_thread && heca__engine_drain_locked(h)) {
		idle = 0;
		return;
	}
	/*
	 * Nothing (more) to read: the event was read, and the kernel lets page tables change
	 * again only once the thread that caused it runs on. Give it the processor rather than
	 * asking again at once, which on two cores kept it off for hundreds of milliseconds.
	 */
	if (++idle < 8) {
		sched_yield();
	} else {
		struct timespec ts = {0, 50000};
		nanosleep(&ts, NULL);
	}
}

static int copy(struct heca *h, uintptr_t dst, const void *src, uint64_t len, bool wp,
		bool wake, bool bail);

/* Returns 0 when the whole range is mapped (by this call or, for -EEXIST pages, by someone
 * else), or -errno. */
int heca__uffd_copy(struct heca *h, uintptr_t dst, const void *src, uint64_t len, bool wp,
		    bool wake)
{
	return copy(h, dst, src, len, wp, wake, false);
}

/* The same for content that a zap may have made stale: on the engine, once events were taken
 * (heca__engine_drain_locked), -EAGAIN, so that the caller looks at the page states again
 * before mapping the rest: a page zapped meanwhile must not get its old content back. Pages
 * mapped before the events were taken are zapped by the kernel after them. */
int heca__uffd_copy_data(struct heca *h, uintptr_t dst, const void *src, uint64_t len, bool wp,
			 bool wake)
{
	return copy(h, dst, src, len, wp, wake, true);
}

static int copy(struct heca *h, uintptr_t dst, const void *src, uint64_t len, bool wp,
		bool wake, bool bail)
{
	uint64_t done = 0;

	while (done < len) {
		struct uffdio_copy c = {.dst = dst + done,
					.src = (uintptr_t)src + done,
					.len = len - done,
					.mode = (wp ? UFFDIO_COPY_MODE_WP : 0) |
						(wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE)};
		if (ioctl(h->uffd, UFFDIO_COPY, &c) == 0) {
			done += (uint64_t)c.copy;
			continue;
		}
		if (c.copy > 0) {
			done += (uint64_t)c.copy;
			continue;
		}
		if (errno == EAGAIN) {
			eagain(h);
			if (bail && heca__engine_thread)
				return -EAGAIN;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EEXIST) {
			/* Someone resolved this page: wake its waiters, go on with the rest. */
			if (wake)
				heca__uffd_wake(h, dst + done, PAGE_SZ);
			done += PAGE_SZ;
			continue;
		}
		return -errno;
	}
	return 0;
}

/*
 * Map src at the page dst if nothing is mapped there, and wake its waiters. Returns 1 when
 * this call mapped it, 0 when the page was already mapped (its waiters are woken), or -errno.
 * The engine asks it where heca's state and the page table may disagree: it says which.
 */
int heca__uffd_fill(struct heca *h, uintptr_t dst, const void *src, bool wp)
{
	struct uffdio_copy c = {.dst = dst,
				.src = (uintptr_t)src,
				.len = PAGE_SZ,
				.mode = wp ? UFFDIO_COPY_MODE_WP : 0};

	for (;;) {
		if (ioctl(h->uffd, UFFDIO_COPY, &c) == 0 || c.copy == (int64_t)PAGE_SZ)
			return 1;
		if (errno == EEXIST)
			return heca__uffd_wake(h, dst, PAGE_SZ) ?: 0;
		if (errno != EINTR && errno != EAGAIN)
			return -errno;
		if (errno == EAGAIN)
			eagain(h);
		c.copy = 0;
	}
}

int heca__uffd_wp(struct heca *h, uintptr_t addr, uint64_t len, bool protect, bool wake)
{
	/* The kernel rejects WP together with DONTWAKE: protecting never wakes anyone. */
	struct uffdio_writeprotect w = {
		.range = {.start = addr, .len = len},
		.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP
				: (wake ? 0 : UFFDIO_WRITEPROTECT_MODE_DONTWAKE)};
	while (ioctl(h->uffd, UFFDIO_WRITEPROTECT, &w)) {
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		if (errno == EAGAIN)
			eagain(h);
	}
	return 0;
}

int heca__uffd_wake(struct heca *h, uintptr_t addr, uint64_t len)
{
	struct uffdio_range r = {.start = addr, .len = len};
	if (ioctl(h->uffd, UFFDIO_WAKE, &r))
		return -errno;
	return 0;
}

int heca__uffd_poison(struct heca *h, uintptr_t addr, uint64_t len)
{
	struct uffdio_poison p = {.range = {.start = addr, .len = len}};

	if (!(h->features & HECA_FEAT_POISON))
		return -ENOSYS;
	while (ioctl(h->uffd, UFFDIO_POISON, &p)) {
		if (errno == EAGAIN) {
			eagain(h);
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EEXIST)
			return heca__uffd_wake(h, addr, len);
		return -errno;
	}
	return 0;
}

/* The present pages among pages [from, npages) at addr, from /proc/self/pagemap read a block
 * at a time, as runs. */
static int present_pagemap_file(uintptr_t addr, uint64_t from, uint64_t npages,
				heca_present_fn fn, void *arg)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t buf[512], run = 0, n_run = 0;

	if (fd < 0)
		return -errno;
	for (uint64_t i = from; i < npages;) {
		uint64_t n = npages - i < 512 ? npages - i : 512;
		ssize_t r = pread(fd, buf, n * 8, (off_t)((addr / PAGE_SZ + i) * 8));
		if (r < (ssize_t)(n * 8)) {
			close(fd);
			return r < 0 ? -errno : -EIO;
		}
		for (uint64_t k = 0; k < n; k++) {
			if ((buf[k] >> 63) & 1) {
				if (!n_run)
					run = i + k;
				n_run++;
			} else if (n_run) {
				fn(arg, run, n_run);
				n_run = 0;
			}
		}
		i += n;
	}
	if (n_run)
		fn(arg, run, n_run);
	close(fd);
	return 0;
}

int heca__pages_present(uintptr_t addr, uint64_t npages, heca_present_fn fn, void *arg)
{
	struct page_region reg[64];
	struct pm_scan_arg a = {.size = sizeof(a),
				.start = addr,
				.end = addr + npages * PAGE_SZ,
				.vec = (uintptr_t)reg,
				.vec_len = 64,
				.category_mask = PAGE_IS_PRESENT,
				.return_mask = PAGE_IS_PRESENT};
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	for (;;) {
		long n = ioctl(fd, PAGEMAP_SCAN, &a);
		if (n < 0) {
			/* No PAGEMAP_SCAN here: the rest the slow way. */
			close(fd);
			return present_pagemap_file(addr, (a.start - addr) / PAGE_SZ, npages, fn,
						    arg);
		}
		for (long i = 0; i < n; i++)
			fn(arg, (reg[i].start - addr) / PAGE_SZ,
			   (reg[i].end - reg[i].start) / PAGE_SZ);
		if (a.walk_end >= a.end)
			break;
		a.start = a.walk_end;
	}
	close(fd);
	return 0;
}
