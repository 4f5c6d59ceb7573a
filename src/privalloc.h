/* SPDX-License-Identifier: MIT */
/*
 * privalloc.h - the allocator of libheca's copy inside libheca-preload.so, and the names that
 * send the library's allocations to it there.
 *
 * In a program run under heca, the program's allocator (jemalloc, tcmalloc, mimalloc, glibc)
 * may hold one of its own locks while it maps memory, and it may keep its metadata in
 * sponsored pages. If heca took its memory from that allocator, a wrapper called under the
 * allocator's lock would wait for that lock, and an engine thread would wait for a lock held by
 * a thread that waits for the engine. So the preload's copy of the library is compiled with
 * this header forced in (HECA_PRIVATE_ALLOC): its malloc() and friends, strdup() and qsort()
 * (glibc's takes scratch space from malloc) become heca__priv_*, which take memory from the
 * kernel directly. The library built for linking (libheca.a, libheca.so) uses the program's
 * allocator as any library does.
 */
#ifndef HECA_PRIVALLOC_H
#define HECA_PRIVALLOC_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

void *heca__priv_malloc(size_t n);
void heca__priv_free(void *p);
void *heca__priv_calloc(size_t n, size_t m);
void *heca__priv_realloc(void *p, size_t n);
char *heca__priv_strdup(const char *s);
int heca__priv_posix_memalign(void **out, size_t align, size_t n);
void *heca__priv_aligned_alloc(size_t align, size_t n);
void heca__priv_qsort(void *v, size_t n, size_t size, int (*cmp)(const void *, const void *));

#ifdef HECA_PRIVATE_ALLOC
#define malloc(n) heca__priv_malloc(n)
#define free(p) heca__priv_free(p)
#define calloc(n, m) heca__priv_calloc(n, m)
#define realloc(p, n) heca__priv_realloc(p, n)
#define strdup(s) heca__priv_strdup(s)
#define posix_memalign(o, a, n) heca__priv_posix_memalign(o, a, n)
#define aligned_alloc(a, n) heca__priv_aligned_alloc(a, n)
#define qsort(v, n, s, c) heca__priv_qsort(v, n, s, c)
#endif

#endif
