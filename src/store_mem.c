// SPDX-License-Identifier: MIT
/*
 * store_mem.c - a store in this process's own heap: the reference implementation of the store
 * interface, for tests of the engine without a network. Completions are queued and delivered
 * on the engine thread through an eventfd, as a remote store's would be.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "heca_int.h"

#define MEM_BUCKETS 65536

struct mem_page {
	struct mem_page *next;
	uint32_t seg;
	uint64_t page;
	uint8_t data[PAGE_SZ];
};

struct mem_done {
	struct mem_done *next;
	bool read;
	int status;
	uint32_t seg;
	uint64_t page;
	uint32_t count;
	uint64_t cookie;
	uint8_t data[];
};

struct mem_store {
	struct heca_store base;
	int evfd;
	pthread_mutex_t mu;
	struct mem_page *b[MEM_BUCKETS];
	struct mem_done *head, **tail;
};

static unsigned int slot(uint32_t seg, uint64_t page)
{
	return (unsigned int)((((uint64_t)seg << 40) ^ page) * 0x9e3779b97f4a7c15ull >> 48);
}

static struct mem_page *find_locked(struct mem_store *m, uint32_t seg, uint64_t page)
{
	for (struct mem_page *p = m->b[slot(seg, page)]; p; p = p->next)
		if (p->seg == seg && p->page == page)
			return p;
	return NULL;
}

static void post(struct mem_store *m, struct mem_done *d)
{
	uint64_t one = 1;
	ssize_t r;
	pthread_mutex_lock(&m->mu);
	d->next = NULL;
	*m->tail = d;
	m->tail = &d->next;
	pthread_mutex_unlock(&m->mu);
	r = write(m->evfd, &one, sizeof(one));
	(void)r;
}

static int mem_read(struct heca_store *s, enum heca_prio prio, uint32_t seg, uint64_t page,
		    uint32_t count, uint64_t cookie)
{
	struct mem_store *m = (struct mem_store *)s;
	struct mem_done *d = malloc(sizeof(*d) + (size_t)count * PAGE_SZ);
	(void)prio;

	if (!d)
		return -ENOMEM;
	*d = (struct mem_done){.read = true, .seg = seg, .page = page, .count = count,
			       .cookie = cookie};
	pthread_mutex_lock(&m->mu);
	for (uint32_t i = 0; i < count; i++) {
		struct mem_page *p = find_locked(m, seg, page + i);
		if (!p) {
			d->status = -ENOENT;
			break;
		}
		memcpy(d->data + (size_t)i * PAGE_SZ, p->data, PAGE_SZ);
	}
	pthread_mutex_unlock(&m->mu);
	post(m, d);
	return 0;
}

static int mem_write(struct heca_store *s, uint32_t seg, uint64_t page, uint32_t count,
		     const uint8_t *data, uint64_t cookie)
{
	struct mem_store *m = (struct mem_store *)s;
	struct mem_done *d = malloc(sizeof(*d));

	if (!d)
		return -ENOMEM;
	*d = (struct mem_done){.seg = seg, .page = page, .count = count, .cookie = cookie};
	pthread_mutex_lock(&m->mu);
	for (uint32_t i = 0; i < count; i++) {
		struct mem_page *p = find_locked(m, seg, page + i);
		if (!p) {
			p = malloc(sizeof(*p));
			if (!p) {
				d->status = -ENOSPC;
				break;
			}
			p->seg = seg;
			p->page = page + i;
			p->next = m->b[slot(seg, page + i)];
			m->b[slot(seg, page + i)] = p;
		}
		memcpy(p->data, data + (size_t)i * PAGE_SZ, PAGE_SZ);
	}
	pthread_mutex_unlock(&m->mu);
	post(m, d);
	return 0;
}

static int mem_alloc(struct heca_store *s, uint32_t seg, uint64_t npages)
{
	(void)s;
	(void)seg;
	(void)npages;
	return 0;
}

/* Free the pages of seg in [lo, hi). */
static int mem_forget(struct heca_store *s, uint32_t seg, uint64_t lo, uint64_t hi)
{
	struct mem_store *m = (struct mem_store *)s;
	pthread_mutex_lock(&m->mu);
	for (unsigned int i = 0; i < MEM_BUCKETS; i++) {
		struct mem_page **pp = &m->b[i];
		while (*pp) {
			if ((*pp)->seg == seg && (*pp)->page >= lo && (*pp)->page < hi) {
				struct mem_page *dead = *pp;
				*pp = dead->next;
				free(dead);
			} else {
				pp = &(*pp)->next;
			}
		}
	}
	pthread_mutex_unlock(&m->mu);
	return 0;
}

static int mem_release(struct heca_store *s, uint32_t seg)
{
	return mem_forget(s, seg, 0, UINT64_MAX);
}

static int mem_discard(struct heca_store *s, uint32_t seg, uint64_t page, uint64_t count)
{
	return mem_forget(s, seg, page, page + count);
}

static int mem_resize(struct heca_store *s, uint32_t seg, uint64_t npages)
{
	(void)s;
	(void)seg;
	(void)npages;
	return 0;
}

static void mem_fork_pause(struct heca_store *s)
{
	(void)s;
}

/* The pages live in this process's memory, which fork() copies: nothing to do before. */
static int mem_fork_prepare(struct heca_store *s, const uint8_t child_id[16])
{
	(void)s;
	(void)child_id;
	return 0;
}

static void mem_fork_resume(struct heca_store *s)
{
	(void)s;
}

/* In the child: the copied store is its own; only the wake-up fd is shared with the parent. */
static int mem_fork_child(struct heca_store *s)
{
	struct mem_store *m = (struct mem_store *)s;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = m};

	pthread_mutex_init(&m->mu, NULL);
	close(m->evfd);
	m->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->evfd < 0)
		return -errno;
	while (m->head) { /* completions of the parent's requests */
		struct mem_done *d = m->head;
		m->head = d->next;
		free(d);
	}
	m->tail = &m->head;
	return epoll_ctl(s->h->epfd, EPOLL_CTL_ADD, m->evfd, &ev) ? -errno : 0;
}

static void mem_dispatch(struct heca_store *s, void *ctx)
{
	struct mem_store *m = (struct mem_store *)s;
	int fd = m->evfd;
	struct mem_done *d;
	uint64_t v;
	ssize_t r = read(fd, &v, sizeof(v));
	(void)r;
	(void)ctx;

	pthread_mutex_lock(&m->mu);
	d = m->head;
	m->head = NULL;
	m->tail = &m->head;
	pthread_mutex_unlock(&m->mu);
	while (d) {
		struct mem_done *next = d->next;
		if (d->read)
			s->read_done(s->arg, d->cookie, d->status, d->seg, d->page, d->count,
				     d->status ? NULL : d->data);
		else
			s->write_done(s->arg, d->cookie, d->status, d->seg, d->page, d->count);
		free(d);
		d = next;
	}
}

static void mem_tick(struct heca_store *s, uint64_t now)
{
	(void)s;
	(void)now;
}

static void mem_close(struct heca_store *s)
{
	struct mem_store *m = (struct mem_store *)s;
	if (!m)
		return;
	for (unsigned int i = 0; i < MEM_BUCKETS; i++)
		while (m->b[i]) {
			struct mem_page *p = m->b[i];
			m->b[i] = p->next;
			free(p);
		}
	while (m->head) {
		struct mem_done *d = m->head;
		m->head = d->next;
		free(d);
	}
	close(m->evfd);
	free(m);
}

static const struct heca_store_ops mem_ops = {
	.name = "memory",
	.read = mem_read,
	.write = mem_write,
	.alloc = mem_alloc,
	.release = mem_release,
	.discard = mem_discard,
	.resize = mem_resize,
	.fork_pause = mem_fork_pause,
	.fork_prepare = mem_fork_prepare,
	.fork_child = mem_fork_child,
	.fork_resume = mem_fork_resume,
	.dispatch = mem_dispatch,
	.tick = mem_tick,
	.close = mem_close,
};

int heca__store_mem_open(struct heca *h, struct heca_store **out)
{
	struct mem_store *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->evfd < 0) {
		int rc = -errno;
		free(m);
		return rc;
	}
	pthread_mutex_init(&m->mu, NULL);
	m->tail = &m->head;
	{
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = m};
		if (epoll_ctl(h->epfd, EPOLL_CTL_ADD, m->evfd, &ev)) {
			int rc = -errno;
			close(m->evfd);
			free(m);
			return rc;
		}
	}
	m->base.ops = &mem_ops;
	m->base.h = h;
	*out = &m->base;
	return 0;
}
