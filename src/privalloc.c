// SPDX-License-Identifier: MIT
/*
 * privalloc.c - the memory of libheca's own copy inside libheca-preload.so, taken from the
 * kernel rather than from the program's allocator (src/privalloc.h says why).
 *
 * Small requests come from power-of-two classes of 16 B to 64 KiB carved out of 1 MiB chunks;
 * freed blocks go back to their class's list and the chunks stay mapped, so the footprint is
 * heca's peak use. Larger requests get a mapping of their own. Every block starts with a
 * 16-byte header that says which, so free() and realloc() need no size. One mutex guards the
 * lists: heca allocates per request and per segment, not per page.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "privalloc.h"

#define PA_MIN_SHIFT 4
#define PA_MAX_SHIFT 16
#define PA_CLASSES (PA_MAX_SHIFT - PA_MIN_SHIFT + 1)
#define PA_CHUNK (1u << 20)
#define PA_HDR 16u
#define PA_PAGE 4096u

struct pa_hdr {
	uint64_t size;	/* class blocks: the class's size; own mappings: the mapping's length */
	uint32_t klass; /* PA_CLASSES for an own mapping */
	uint32_t align_pad; /* bytes between the mapping's start and this header */
};

struct pa_free {
	struct pa_free *next;
};

static pthread_mutex_t pa_mu = PTHREAD_MUTEX_INITIALIZER;
static struct pa_free *pa_lists[PA_CLASSES];
static char *pa_cur, *pa_end;

/* Mappings go straight to the kernel: the preload's mmap() wrapper must not see them. */
static void *pa_map(size_t len)
{
	void *p = (void *)syscall(SYS_mmap, NULL, len, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static unsigned int pa_class(size_t n)
{
	unsigned int k = 0;
	size_t sz = (size_t)1 << PA_MIN_SHIFT;
	while (sz < n) {
		sz <<= 1;
		k++;
	}
	return k;
}

static void *pa_big(size_t n, size_t align)
{
	size_t pad = align > PA_HDR ? align - PA_HDR : 0;
	size_t len = (n + PA_HDR + pad + PA_PAGE - 1) & ~(size_t)(PA_PAGE - 1);
	char *base, *user;
	struct pa_hdr *h;

	if (n > SIZE_MAX / 2 || !(base = pa_map(len)))
		return NULL;
	/* An own mapping is page-aligned, so alignments up to a page fit with no pad at all. */
	user = base + PA_HDR;
	if (align > PA_HDR)
		user = (char *)(((uintptr_t)base + PA_HDR + align - 1) & ~(uintptr_t)(align - 1));
	h = (struct pa_hdr *)(user - PA_HDR);
	h->size = len;
	h->klass = PA_CLASSES;
	h->align_pad = (uint32_t)((char *)h - base);
	return user;
}

void *heca__priv_malloc(size_t n)
{
	unsigned int k;
	struct pa_hdr *h;
	size_t sz;

	if (n > ((size_t)1 << PA_MAX_SHIFT) - PA_HDR)
		return pa_big(n, 0);
	k = pa_class(n + PA_HDR);
	sz = (size_t)1 << (k + PA_MIN_SHIFT);
	pthread_mutex_lock(&pa_mu);
	if (pa_lists[k]) {
		h = (struct pa_hdr *)pa_lists[k];
		pa_lists[k] = pa_lists[k]->next;
	} else {
		if ((size_t)(pa_end - pa_cur) < sz) {
			/* The rest of the chunk is left: at most 64 KiB of one 1 MiB chunk. */
			char *c = pa_map(PA_CHUNK);
			if (!c) {
				pthread_mutex_unlock(&pa_mu);
				return NULL;
			}
			pa_cur = c;
			pa_end = c + PA_CHUNK;
		}
		h = (struct pa_hdr *)pa_cur;
		pa_cur += sz;
	}
	pthread_mutex_unlock(&pa_mu);
	h->size = sz;
	h->klass = k;
	h->align_pad = 0;
	return (char *)h + PA_HDR;
}

void heca__priv_free(void *p)
{
	struct pa_hdr *h;

	if (!p)
		return;
	h = (struct pa_hdr *)((char *)p - PA_HDR);
	if (h->klass == PA_CLASSES) {
		syscall(SYS_munmap, (char *)h - h->align_pad, h->size);
		return;
	}
	pthread_mutex_lock(&pa_mu);
	((struct pa_free *)h)->next = pa_lists[h->klass];
	pa_lists[h->klass] = (struct pa_free *)h;
	pthread_mutex_unlock(&pa_mu);
}

void *heca__priv_calloc(size_t n, size_t m)
{
	void *p;

	if (m && n > SIZE_MAX / m)
		return NULL;
	p = heca__priv_malloc(n * m);
	if (p)
		memset(p, 0, n * m);
	return p;
}

void *heca__priv_realloc(void *p, size_t n)
{
	struct pa_hdr *h;
	size_t have;
	void *q;

	if (!p)
		return heca__priv_malloc(n);
	h = (struct pa_hdr *)((char *)p - PA_HDR);
	have = h->size - PA_HDR - (h->klass == PA_CLASSES ? h->align_pad : 0);
	if (n <= have && h->klass != PA_CLASSES)
		return p;
	if (!(q = heca__priv_malloc(n)))
		return NULL;
	memcpy(q, p, have < n ? have : n);
	heca__priv_free(p);
	return q;
}

char *heca__priv_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = heca__priv_malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

int heca__priv_posix_memalign(void **out, size_t align, size_t n)
{
	void *p;

	if (!align || (align & (align - 1)) || align % sizeof(void *))
		return EINVAL;
	p = align <= PA_HDR ? heca__priv_malloc(n) : pa_big(n, align);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

void *heca__priv_aligned_alloc(size_t align, size_t n)
{
	void *p = NULL;
	return heca__priv_posix_memalign(&p, align, n) ? NULL : p;
}

/* An in-place heap sort: glibc's qsort() may take its scratch space from malloc(). */
static void pa_swap(char *a, char *b, size_t size)
{
	while (size--) {
		char t = *a;
		*a++ = *b;
		*b++ = t;
	}
}

static void pa_sift(char *base, size_t i, size_t n, size_t size,
		    int (*cmp)(const void *, const void *))
{
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			return;
		if (c + 1 < n && cmp(base + c * size, base + (c + 1) * size) < 0)
			c++;
		if (cmp(base + i * size, base + c * size) >= 0)
			return;
		pa_swap(base + i * size, base + c * size, size);
		i = c;
	}
}

void heca__priv_qsort(void *v, size_t n, size_t size, int (*cmp)(const void *, const void *))
{
	char *base = v;

	for (size_t i = n / 2; i-- > 0;)
		pa_sift(base, i, n, size, cmp);
	for (size_t end = n; end > 1; end--) {
		pa_swap(base, base + (end - 1) * size, size);
		pa_sift(base, 0, end - 1, size, cmp);
	}
}
