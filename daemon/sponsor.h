/* SPDX-License-Identifier: MIT */
/*
 * sponsor.h - the memory sponsor's page store and request handling, free of sockets so that
 * unit tests and the fuzzer drive it with byte buffers; hecad.c owns the network and printing.
 */
#ifndef HECA_SPONSOR_H
#define HECA_SPONSOR_H

#include <stddef.h>
#include <stdint.h>

#define SPONSOR_SLAB_PAGES 512u /* 2 MiB of 4 KiB slots per anonymous mmap */
/* sponsor_handle() stops decoding once this much reply data is pending, so the caller can
 * send it and the reply buffer stays bounded (one more frame may overshoot it by 1 MiB). */
#define SPONSOR_OUT_SOFT_MAX (4u << 20)
/* Default cap on index and record memory (radix nodes, segment and demander records, segment
 * tables) for a capacity in bytes: a quarter of it plus 8 MiB. Dense pages need about 1/1000
 * of their size in index; the cap leaves room for sparse ones and bounds what a peer can make
 * the sponsor allocate. A request that would need more is refused (ENOSPC). */
#define SPONSOR_INDEX_MAX(capacity) ((capacity) / 4 + (8ull << 20))
/* Largest capacity: slot numbers are 32-bit. */
#define SPONSOR_MAX_CAPACITY_PAGES 0xfffffff0ull

struct sponsor;
struct sponsor_demander;

struct sponsor_config {
	uint64_t capacity;      /* bytes; rounded down to whole 4 KiB pages */
	uint8_t cluster_id[16]; /* a HELLO naming another cluster is refused with EACCES */
	int has_id;             /* use sponsor_id (kept by the caller), else a random id */
	uint8_t sponsor_id[16];
	/* Cluster key (HECA_AUTH_KEY_MIN..MAX bytes; copied by sponsor_open), or keylen 0: then
	 * no AUTH is required and AUTH is answered EINVAL. */
	const uint8_t *key;
	size_t keylen;
	/* Cap on index and record memory in bytes; 0: SPONSOR_INDEX_MAX(capacity). */
	uint64_t index_max;
	/* The clock leases are measured with, in nanoseconds; NULL: CLOCK_MONOTONIC. Tests set a
	 * fake one. Called with the sponsor's lock held. */
	uint64_t (*clock_ns)(void);
	/* Called by sponsor_expire() for each demander it frees, with the sponsor's lock held:
	 * it must not call back into the sponsor. May be NULL. */
	void (*expired)(void *arg, const uint8_t demander[16], uint64_t pages);
	void *expired_arg;
};

enum sponsor_conn_state {
	SPONSOR_CONN_NEW = 0, /* waiting for HELLO */
	SPONSOR_CONN_AUTH,    /* HELLO accepted, a key is configured: waiting for AUTH */
	SPONSOR_CONN_READY,   /* serving requests */
};

/* One client connection's protocol state. Owned by the caller; one thread at a time. */
struct sponsor_conn {
	struct sponsor_demander *dem; /* NULL until the connection is READY */
	uint32_t channel;             /* HECA_CHAN_* named in HELLO */
	enum sponsor_conn_state state;
	uint8_t demander_id[16];      /* from HELLO */
	uint32_t session;             /* from HELLO: 0, or the demander's session counter */
	uint8_t nonce[32];            /* the server nonce sent in the HELLO reply (AUTH state) */
};

/* A growable byte buffer that replies are appended to. Zero-initialise; free with
 * sponsor_buf_free(). The caller sends data[0..len) and resets len to 0. */
struct sponsor_buf {
	uint8_t *data;
	size_t len, cap;
};

struct sponsor_stats {
	uint64_t capacity_pages;
	uint64_t used_pages;
	uint64_t segments;
	uint64_t demanders;
	uint64_t slabs; /* slabs mapped so far (2 MiB of address space each) */
	uint64_t index_bytes; /* index and record memory in use, as charged against index_max */
	uint64_t index_max;
};

/* Create a sponsor. Nothing is mapped until the first page is stored. Returns 0 and *out,
 * -EINVAL if the capacity exceeds SPONSOR_MAX_CAPACITY_PAGES pages or the key length is
 * neither 0 nor HECA_AUTH_KEY_MIN..MAX, -ENOMEM, or the error of getrandom() for the id. */
int sponsor_open(const struct sponsor_config *cfg, struct sponsor **out);

/* Free everything, unmap every slab. All connections must have been sponsor_conn_exit()ed.
 * Accepts NULL. */
void sponsor_close(struct sponsor *sp);

/* The 128-bit id of this sponsor (reported in HELLO replies). */
void sponsor_get_id(const struct sponsor *sp, uint8_t id[16]);

/* Counters as STAT reports them. Thread-safe. */
void sponsor_get_stats(struct sponsor *sp, struct sponsor_stats *st);

void sponsor_conn_init(struct sponsor_conn *c);

/* Forget a connection. Its demander keeps its segments; when this was its last connection
 * the demander is orphaned from now on, and sponsor_expire() frees it once the lease is over
 * unless a connection of the same demander becomes READY first. */
void sponsor_conn_exit(struct sponsor *sp, struct sponsor_conn *c);

/*
 * Free every segment and the record of each demander that has been orphaned (no connection
 * since its last one closed, or since CLONE created it) for at least lease_ns at now_ns, on
 * the clock of sponsor_config.clock_ns. Returns the pages freed; the number of demanders
 * freed goes to *demanders_out unless it is NULL. Thread-safe.
 */
uint64_t sponsor_expire(struct sponsor *sp, uint64_t now_ns, uint64_t lease_ns,
			uint64_t *demanders_out);

/*
 * Decode and serve the complete frames at the start of buf[0..len) for connection c,
 * appending one reply per request to *out in request order. Stops at a partial frame or once
 * out->len >= SPONSOR_OUT_SOFT_MAX. Returns the number of bytes consumed (0 if buf does not
 * hold a whole frame), or -errno if the connection must be closed after *out has been sent:
 * -EPROTO/-EBADMSG (malformed frame, frame before HELLO, a second HELLO or AUTH, a reply or
 * ERROR opcode from the client: an ERROR frame was appended), -EACCES (wrong cluster id: the
 * HELLO reply says so; wrong MAC: the AUTH reply says so; a request other than AUTH before
 * AUTH succeeded: an ERROR frame says so; c->state tells which), -ENOMEM (reply buffer could
 * not grow, or no memory to admit the demander). Thread-safe for distinct connections.
 */
long sponsor_handle(struct sponsor *sp, struct sponsor_conn *c, const uint8_t *buf, size_t len,
		    struct sponsor_buf *out);

void sponsor_buf_free(struct sponsor_buf *b);

/* Check the store's internal accounting (slab counts, free lists, per-segment and
 * per-demander page counts against the total, index memory charged against what is
 * allocated and its cap, no capacity left reserved). Returns 0, or -EUCLEAN if inconsistent.
 * For tests and the fuzzer, with no request under way; walks everything under the lock. */
int sponsor_check(struct sponsor *sp);

#endif
