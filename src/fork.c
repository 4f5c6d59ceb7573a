// SPDX-License-Identifier: MIT
/*
 * fork.c - fork() of a process with sponsored memory. The child must see exactly the memory
 * of the parent at the fork, and neither may see the other's later writes. Resident pages are
 * copied by the kernel (copy-on-write, once the segments are not MADV_DONTFORK for the
 * moment); the pages at sponsors are copied by the sponsors (CLONE) for a new demander id,
 * the child's. While they copy, nothing may change at the sponsors: no write-back starts
 * and none is in flight, but faults go on (a read and a clean page dropped change nothing
 * there), with the lock dropped. For the fork instant nothing may be in flight: the engine is
 * frozen (faults that need a sponsor wait), and the process forks with the lock held. The
 * child then starts over on its copy of the handle: a userfaultfd, threads and connections of
 * its own, the same segments, page states and stripe table.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "heca_int.h"
#include "segops.h"
#include "util.h"

__thread int heca__internal;

static void each_seg_madvise(struct heca *h, int advice)
{
	for (unsigned int i = 0; i < h->nsegs; i++)
		syscall(SYS_madvise, seg_start(h->segs[i]), h->segs[i]->npages * PAGE_SZ, advice);
}

/*
 * Ready the sponsors' copy (CLONE) of what they hold: from here until the fork nothing may
 * change there. Waits for any other fork and for calls that change what sponsors hold
 * (alloc, release, discard, resize) to end, and holds new ones back; stops write-backs (the
 * evictor drops clean pages only: their copies there are current) and waits for those in
 * flight to be acknowledged. Faults go on: reads and clean drops change nothing at a sponsor.
 * Caller holds h->lock, which is dropped meanwhile.
 */
static void clone_begin_locked(struct heca *h)
{
	while (h->cloning)
		heca__cond_wait_ms(&h->evict_cond, &h->lock, 10);
	h->cloning = true;
	while (h->store_calls)
		heca__cond_wait_ms(&h->evict_cond, &h->lock, 10);
	heca__evict_quiesce_locked(h); /* a batch picked before may hold dirty pages */
	while (h->wb_pages)
		heca__cond_wait_ms(&h->evict_cond, &h->lock, 1);
}

static void clone_end_locked(struct heca *h)
{
	h->cloning = false;
	pthread_cond_broadcast(&h->evict_cond);
}

/* Freeze the engine and wait until no read, eviction or write-back is in flight: what the
 * child inherits must hold no request whose answer only the parent would get. Caller holds
 * h->lock, and keeps it until thaw(). */
static void freeze_locked(struct heca *h)
{
	h->frozen = true;
	while (h->fetching || h->evicting || h->wb_pages) {
		heca__cond_wait_ms(&h->evict_cond, &h->lock, 1);
	}
}

static void thaw(struct heca *h)
{
	h->frozen = false;
	clone_end_locked(h);
	pthread_mutex_unlock(&h->lock);
	heca__engine_wake(h); /* faults deferred meanwhile */
}

/* The control socket path of the child: a parent path ending in "/PPID.sock" becomes
 * "/PID.sock" (the convention of `heca status --pid`); any other path is not reused. */
static bool child_ctl_path(const char *parent, char *out, size_t len)
{
	const char *slash = strrchr(parent, '/');
	char want[32];

	snprintf(want, sizeof(want), "/%d.sock", (int)getppid());
	if (!slash || strcmp(slash, want))
		return false;
	snprintf(out, len, "%.*s/%d.sock", (int)(slash - parent), parent, (int)getpid());
	return true;
}

/* In the child, on its own copy of the handle; only this thread exists. */
static int child_restart(struct heca *h, const uint8_t child_id[16])
{
	char path[sizeof(h->ctl_path)];
	bool ctl = h->ctl_started && child_ctl_path(h->ctl_path, path, sizeof(path));
	int rc;

	/* Locks may have been held by threads that do not exist here. */
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->evict_cond, NULL);
	memcpy(h->demander_id, child_id, 16);
	h->frozen = h->cloning = false;
	h->store_calls = 0; /* none was under way at the fork */
	h->discarding = NULL;
	h->ndeferred = 0;
	h->engine_started = h->evict_started = false;
	if (h->ctl_fd >= 0)
		close(h->ctl_fd); /* the parent's socket: it stays the parent's */
	h->ctl_fd = -1;
	h->ctl_started = false;
	memset(&h->trends, 0, sizeof(h->trends));
	close(h->uffd);
	close(h->evfd);
	close(h->epfd);
	h->uffd = h->evfd = h->epfd = -1;

	rc = heca__engine_fds(h);
	if (rc)
		return rc;
	/* The kernel gave the child the parent's resident pages, without registration and
	 * without write-protection: register again, protect the clean ones again. */
	for (unsigned int i = 0; i < h->nsegs; i++) {
		struct seg *s = h->segs[i];
		/* A parent's thread that was registering or unregistering it is not here: the
		 * segment is the child's, complete, and nobody's claim. */
		s->busy = s->leaving = false;
		rc = heca__uffd_register(h, seg_start(s), s->npages * PAGE_SZ);
		if (rc)
			return rc;
		syscall(SYS_madvise, seg_start(s), s->npages * PAGE_SZ, MADV_DONTFORK);
		for (uint64_t p = s->first; p < seg_end(s);) {
			uint64_t q = p;
			s->st[p] &= (uint8_t)~(PF_WAITER | PF_WANTW | PF_DEMAND);
			if (pstate(s->st[p]) != PS_CLEAN && pstate(s->st[p]) != PS_ZERO) {
				p++;
				continue;
			}
			while (q < seg_end(s) &&
			       (pstate(s->st[q]) == PS_CLEAN || pstate(s->st[q]) == PS_ZERO))
				q++;
			if (!(h->features & HECA_FEAT_WP) ||
			    heca__uffd_wp(h, s->base + p * PAGE_SZ, (q - p) * PAGE_SZ, true, false))
				for (uint64_t k = p; k < q; k++)
					pset(&s->st[k], PS_DIRTY);
			p = q;
		}
	}
	rc = h->store->ops->fork_child(h->store);
	if (rc)
		return rc;
	rc = heca__start_threads(h);
	if (rc)
		return rc;
	if (ctl)
		heca__control_start(h, path); /* status is a convenience: fork goes on without */
	return 0;
}

pid_t heca__fork_with(struct heca *h, pid_t (*forkfn)(void), int *child_err,
		      uint8_t *child_id_out)
{
	uint8_t child_id[16];
	pid_t pid;
	int rc;

	if (!h->store->ops->fork_prepare)
		return -ENOTSUP;
	rc = heca__random(child_id, sizeof(child_id));
	if (rc)
		return rc;
	/* The repair thread first: it may wait for writes that need the engine, and so the
	 * lock. The sponsors copy with the lock dropped, so that faults go on meanwhile; then
	 * the engine is frozen and the lock held until the fork: no segment comes or goes. */
	h->store->ops->fork_pause(h->store);
	pthread_mutex_lock(&h->lock);
	clone_begin_locked(h);
	pthread_mutex_unlock(&h->lock);
	rc = h->store->ops->fork_prepare(h->store, child_id);
	pthread_mutex_lock(&h->lock);
	if (rc) {
		h->store->ops->fork_resume(h->store);
		thaw(h);
		return rc;
	}
	freeze_locked(h);
	each_seg_madvise(h, MADV_DOFORK);
	pid = forkfn();
	if (pid != 0) {
		int err = errno;
		each_seg_madvise(h, MADV_DONTFORK);
		h->store->ops->fork_resume(h->store);
		thaw(h);
		if (pid > 0 && child_id_out)
			memcpy(child_id_out, child_id, 16);
		errno = err;
		return pid; /* the sponsors free an unclaimed copy when its lease ends */
	}
	rc = child_restart(h, child_id);
	if (rc) {
		/* The child cannot serve its sponsored memory: take it away, so that a touch
		 * faults loudly instead of reading zeros. */
		heca__set_error("after fork: the child cannot restart heca: %s", heca_strerror(rc));
		for (unsigned int i = 0; i < h->nsegs; i++)
			syscall(SYS_munmap, seg_start(h->segs[i]), h->segs[i]->npages * PAGE_SZ);
		h->nsegs = 0;
	}
	if (child_err)
		*child_err = rc;
	return 0;
}

pid_t heca_fork(struct heca *h)
{
	if (!h)
		return -EINVAL;
	return heca__fork_with(h, fork, NULL, NULL);
}
