/* SPDX-License-Identifier: MIT */
/*
 * segops.h - operations on sponsored memory other than touching it, for the transparent mode
 * (preload/): partial unmap, discard, mremap, giving a range back to the kernel, and fork.
 * Each returns 0 or -errno unless it says otherwise.
 */
#ifndef HECA_SEGOPS_H
#define HECA_SEGOPS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "heca.h"

/* Whether any sponsored segment overlaps [a, a + len). */
bool heca__range_sponsored(struct heca *h, uintptr_t a, uint64_t len);

/* madvise(MADV_DONTNEED) on sponsored memory: the pages of [a, a + len) read as zero
 * afterwards, here and at the sponsors. */
int heca__discard_range(struct heca *h, uintptr_t a, uint64_t len);
/* The engine read an UNMAP event for [a, a + len): note it (h->lock held). */
void heca__unmapped_note_locked(struct heca *h, uintptr_t a, uint64_t len);
/* Take the noted ranges out of the segment table (no lock held; may wait for pages in flight). */
void heca__unmapped_run(struct heca *h);

/* The parts of [a, a + len) that no segment covers, at most max of them, into gap_a[] and
 * gap_len[]; returns how many. */
int heca__unsponsored_gaps(struct heca *h, uintptr_t a, uint64_t len, uintptr_t *gap_a,
			   uint64_t *gap_len, unsigned int max);

/* Before munmap(a, len): stop sponsoring [a, a + len), freeing its pages at the sponsors;
 * segments partly inside are trimmed or split. The caller unmaps. */
int heca__unmap_range(struct heca *h, uintptr_t a, uint64_t len);

/* mremap() of a whole sponsored segment, done here (the system call included). Returns 1 if
 * old is not sponsored (the caller does the call itself), 0 with *out set, -ENOTSUP for a
 * part of a segment, MREMAP_DONTUNMAP, or growing a piece left by a partial munmap into its
 * other piece; or -errno of the system call. */
int heca__remap(struct heca *h, uintptr_t old, uint64_t oldlen, uint64_t newlen, int flags,
		uintptr_t want, uintptr_t *out);

/* Stop sponsoring [a, a + len) (page-rounded), bringing its pages back with their content: a
 * segment that only overlaps it is cut, and the rest of it stays sponsored. Returns 0, -ENOMEM
 * (nothing changed) or -EIO (a page is lost; what was done before stays done). */
int heca__unsponsor_range(struct heca *h, uintptr_t a, uint64_t len);

/* The process ends now (_exit): have the sponsors free every segment at once. */
int heca__drop_all(struct heca *h);

/* fork() with copy-on-write semantics for sponsored memory, calling forkfn for the fork
 * itself: the engine is frozen with nothing in flight, the sponsors copy every segment for
 * the child, the child re-registers its copy with an engine of its own. Returns what forkfn
 * returns, or -errno before forking (nothing changed). In the child *child_err is 0, or the
 * error that kept it from restarting heca: then its sponsored segments are unmapped. In the
 * parent, child_id (if not NULL) gets the child's demander id once forkfn has succeeded. */
pid_t heca__fork_with(struct heca *h, pid_t (*forkfn)(void), int *child_err, uint8_t *child_id);

/* The thread belongs to libheca (engine, evictor, repair, control): the transparent mode
 * must pass its allocations and memory calls straight through. */
extern __thread int heca__internal;

#endif
