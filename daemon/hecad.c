// SPDX-License-Identifier: MIT
/*
 * hecad.c - the memory sponsor daemon: command line, listening socket, one thread per
 * connection with bounded buffers and time limits, the lease sweep, clean shutdown on
 * SIGTERM/SIGINT. Serving lives in sponsor.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "heca.h"
#include "net.h"
#include "sponsor.h"
#include "util.h"
#include "wire.h"

#define NS_PER_SEC 1000000000ull
/* Each connection's own buffers: one page WRITE (or READ reply) fits; hostile or idle
 * connections cost this much and no more. */
#define IN_BASE (16u << 10)
#define OUT_BASE (16u << 10)
/* What a busy connection may take from the budget without waiting, for fewer system calls
 * per frame; a frame or reply bigger than that takes its size (at most 1 MiB + headers). */
#define IN_BUSY (256u << 10)
#define OUT_BUSY (256u << 10)
#define IDLE_SHRINK_MS 100
/* A frame must arrive, and a flush of replies be taken, within IO_GRACE_NS plus its length
 * at IO_FLOOR_BPS: at most 18 s for the largest frame. Slower is a slowloris. */
#define IO_GRACE_NS (2 * NS_PER_SEC)
#define IO_FLOOR_BPS (64u << 10)
#define LOG_BURST 10 /* lines about connections per second */
#define DEFAULT_MAX_CONNS 1024
#define DEFAULT_BUF_MAX (64ull << 20)
#define DEFAULT_KEEPALIVE_S 15
#define DEFAULT_HANDSHAKE_NS (5 * NS_PER_SEC)
#define CONN_STACK (256u << 10)
#define DEFAULT_LEASE_NS (30 * NS_PER_SEC)
/* Leases are swept every lease/4, but at least every second and at most every 50 ms. */
#define SWEEP_MIN_NS (50 * 1000000ull)
#define SWEEP_MAX_NS NS_PER_SEC
#define LEASE_MAX_SEC 1e9

struct conn {
	struct conn *next;
	pthread_t thread;
	int fd;
	int done; /* set by the thread as it ends; read under conns_lock */
	uint64_t accepted_ns;
	char peer[64];
};

static struct sponsor *g_sp;
static int g_verbose;
static uint64_t g_lease_ns = DEFAULT_LEASE_NS;
static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct conn *g_conns;
static atomic_uint g_nconns; /* connection threads not yet finished */
static unsigned g_max_conns = DEFAULT_MAX_CONNS;
static int g_keepalive_s = DEFAULT_KEEPALIVE_S;
static uint64_t g_handshake_ns = DEFAULT_HANDSHAKE_NS;
/* The shared budget for connection buffers above their base size. */
static pthread_mutex_t budget_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t budget_cond;
static size_t g_buf_max = DEFAULT_BUF_MAX, g_buf_used;
static int g_stopping; /* under budget_lock */

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	/* One write per line so lines of concurrent threads do not interleave. */
	n = snprintf(line, sizeof(line), "hecad: ");
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (write(2, line, (size_t)n) < 0) {
		/* nothing better to do with a failed log write */
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: hecad --listen HOST:PORT --capacity SIZE [options]\n"
		"\n"
		"Memory sponsor: stores pages for heca demanders over TCP.\n"
		"\n"
		"  -l, --listen HOST:PORT   address to listen on (port 0 picks a free port);\n"
		"                           prints 'listening on HOST:PORT' to stdout when ready\n"
		"  -c, --capacity SIZE      memory to sponsor, e.g. 512M, 4G (K/M/G/T suffixes)\n"
		"      --cluster-id HEX32   128-bit cluster id as 32 hex digits (default all zero);\n"
		"                           demanders of another cluster are refused (EACCES)\n"
		"      --key-file PATH      cluster key: demanders must prove they hold it (AUTH,\n"
		"                           HMAC-SHA256); the file holds 64 to 256 hex digits,\n"
		"                           whitespace ignored, and must be mode 0600 or 0400\n"
		"      --state-dir DIR      keep this sponsor's persistent id in DIR/sponsor-id\n"
		"                           (created on first start); default: a new id per run\n"
		"      --gen-key FILE       write a new random key file (mode 0600) and exit\n"
		"      --lease SECONDS      how long a demander's pages outlive its last connection\n"
		"                           (decimal, e.g. 0.5; default 30; 0: freed as soon as it\n"
		"                           closes); a new connection of that demander in time\n"
		"                           keeps them\n"
		"      --max-connections N  connections served at once (default 1024); more are\n"
		"                           closed at once, logged at most once a second\n"
		"      --buffer-memory SIZE budget shared by all connections' buffers above their\n"
		"                           own 32 KiB each (default 64M); a frame waits for it,\n"
		"                           within its time limit, and is not read meanwhile\n"
		"      --keepalive SECONDS  a peer that vanishes without closing is noticed within\n"
		"                           this many seconds (TCP keepalive and TCP_USER_TIMEOUT;\n"
		"                           default 15, at least 2; 0: off); its lease then starts\n"
		"      --handshake-timeout SECONDS\n"
		"                           a peer must finish HELLO (and AUTH) within this (5)\n"
		"  -v, --verbose            log every connection to stderr\n"
		"  -h, --help               show this help and exit\n"
		"\n"
		"Bounds: pages stored <= capacity; index <= capacity/4 + 8 MiB (a request\n"
		"needing more is refused ENOSPC); buffers <= 32 KiB x max-connections +\n"
		"buffer-memory; resident memory <= all that + 32 KiB x max-connections\n"
		"(stacks, records) + 32 MiB. A frame must arrive within 2 s + 1 s per 64 KiB\n"
		"of it (18 s at most) and pending replies be taken in the same time, or the\n"
		"peer is dropped. One demander's CLONE, FREE, DISCARD or DROPALL holds up\n"
		"other demanders' requests for at most about 5 ms at a time.\n");
}

static int parse_hex128(const char *s, uint8_t out[16])
{
	if (strlen(s) != 32)
		return -EINVAL;
	for (int i = 0; i < 16; i++) {
		unsigned v = 0;
		for (int j = 0; j < 2; j++) {
			char ch = s[2 * i + j];
			v <<= 4;
			if (ch >= '0' && ch <= '9')
				v |= (unsigned)(ch - '0');
			else if (ch >= 'a' && ch <= 'f')
				v |= (unsigned)(ch - 'a' + 10);
			else if (ch >= 'A' && ch <= 'F')
				v |= (unsigned)(ch - 'A' + 10);
			else
				return -EINVAL;
		}
		out[i] = (uint8_t)v;
	}
	return 0;
}

static void hex_encode(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

/* --lease: decimal seconds (digits and at most one '.') into nanoseconds. Returns 0 or
 * -EINVAL. */
static int parse_lease(const char *s, uint64_t *ns)
{
	const char *dot = strchr(s, '.');
	char *end;
	double v;

	if (!*s || strspn(s, "0123456789.") != strlen(s) || (dot && strchr(dot + 1, '.')))
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || end == s || v > LEASE_MAX_SEC)
		return -EINVAL;
	*ns = (uint64_t)(v * 1e9 + 0.5);
	return 0;
}

/* Called by sponsor_expire() with the sponsor's lock held: only logs. */
static void lease_expired(void *arg, const uint8_t demander[16], uint64_t pages)
{
	char hex[33];

	(void)arg;
	hex_encode(demander, 16, hex);
	logmsg("demander %s: lease expired, %llu pages freed", hex, (unsigned long long)pages);
}

/* Free the demanders whose lease is over. */
static void sweep_leases(void)
{
	sponsor_expire(g_sp, heca__now_ns(), g_lease_ns, NULL);
}

/* Write all of buf to fd. Returns 0 or -errno. */
static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* mkdir -p with mode 0700 for what it creates. Returns 0 or -errno. */
static int make_dirs(const char *dir)
{
	char path[4096];
	size_t len = strlen(dir);

	if (len == 0 || len >= sizeof(path))
		return -ENAMETOOLONG;
	memcpy(path, dir, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (path[i] != '/' && path[i] != '\0')
			continue;
		path[i] = '\0';
		if (mkdir(path, 0700) && errno != EEXIST)
			return -errno;
		path[i] = i < len ? '/' : '\0';
	}
	return 0;
}

/*
 * The sponsor's persistent id: read DIR/sponsor-id (32 hex digits), or on first start make
 * DIR, draw a random id and write it through a temporary file renamed into place, so that a
 * crash never leaves a half-written id behind. Returns 0 or -errno, having printed why.
 */
static int load_or_create_id(const char *dir, uint8_t id[16])
{
	char path[4096], tmp[4096], text[64];
	ssize_t n;
	int fd, rc, dfd;

	if ((size_t)snprintf(path, sizeof(path), "%s/sponsor-id", dir) >= sizeof(path) ||
	    (size_t)snprintf(tmp, sizeof(tmp), "%s/.sponsor-id.%ld", dir, (long)getpid()) >=
		sizeof(tmp)) {
		fprintf(stderr, "hecad: --state-dir '%s': path too long\n", dir);
		return -ENAMETOOLONG;
	}
	rc = make_dirs(dir);
	if (rc) {
		fprintf(stderr, "hecad: --state-dir '%s': %s\n", dir, strerror(-rc));
		return rc;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		size_t len;

		do
			n = read(fd, text, sizeof(text) - 1);
		while (n < 0 && errno == EINTR);
		rc = n < 0 ? -errno : 0;
		close(fd);
		if (rc) {
			fprintf(stderr, "hecad: %s: %s\n", path, strerror(-rc));
			return rc;
		}
		len = (size_t)n;
		while (len && (text[len - 1] == '\n' || text[len - 1] == ' '))
			len--;
		text[len] = '\0';
		if (parse_hex128(text, id)) {
			fprintf(stderr, "hecad: %s: not a sponsor id (want 32 hex digits); "
					"remove it to start with a new id\n", path);
			return -EINVAL;
		}
		return 0;
	}
	if (errno != ENOENT) {
		rc = -errno;
		fprintf(stderr, "hecad: %s: %s\n", path, strerror(-rc));
		return rc;
	}
	rc = heca__random(id, 16);
	if (rc) {
		fprintf(stderr, "hecad: cannot draw a sponsor id: %s\n", strerror(-rc));
		return rc;
	}
	hex_encode(id, 16, text);
	strcat(text, "\n");
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		fprintf(stderr, "hecad: %s: %s\n", tmp, strerror(-rc));
		return rc;
	}
	rc = write_all(fd, text, strlen(text));
	if (!rc && fsync(fd))
		rc = -errno;
	if (close(fd) && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc) {
		fprintf(stderr, "hecad: cannot write %s: %s\n", path, strerror(-rc));
		unlink(tmp);
		return rc;
	}
	/* Make the rename itself durable. */
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	text[32] = '\0'; /* drop the newline */
	logmsg("new sponsor id %s kept in %s", text, path);
	return 0;
}

/* --gen-key: a new random key of HECA_AUTH_KEY_MIN bytes as hex, in a file that did not exist
 * (never overwrite a key that may be in use). Returns the exit status. */
static int gen_key(const char *path)
{
	uint8_t key[HECA_AUTH_KEY_MIN];
	char text[2 * HECA_AUTH_KEY_MIN + 2];
	int fd, rc;

	rc = heca__random(key, sizeof(key));
	if (rc) {
		fprintf(stderr, "hecad: cannot draw a key: %s\n", strerror(-rc));
		return 1;
	}
	hex_encode(key, sizeof(key), text);
	heca__auth_wipe(key, sizeof(key));
	strcat(text, "\n");
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		fprintf(stderr, "hecad: --gen-key %s: %s\n", path, strerror(-rc));
		heca__auth_wipe(text, sizeof(text));
		return rc == -EEXIST ? 2 : 1;
	}
	/* The umask may have taken bits away; make sure the owner can read it, nobody else. */
	rc = fchmod(fd, 0600) ? -errno : 0;
	if (!rc)
		rc = write_all(fd, text, strlen(text));
	if (!rc && fsync(fd))
		rc = -errno;
	if (close(fd) && !rc)
		rc = -errno;
	heca__auth_wipe(text, sizeof(text));
	if (rc) {
		fprintf(stderr, "hecad: --gen-key %s: %s\n", path, strerror(-rc));
		unlink(path);
		return 1;
	}
	fprintf(stderr, "hecad: wrote a new cluster key to %s\n", path);
	return 0;
}

/* ---- buffer memory ---------------------------------------------------------------------- */

/* Take n bytes of the shared buffer budget if they are free now. Returns 0 or -ENOBUFS. */
static int budget_try(size_t n)
{
	int rc = -ENOBUFS;

	pthread_mutex_lock(&budget_lock);
	if (g_buf_used + n <= g_buf_max) {
		g_buf_used += n;
		rc = 0;
	}
	pthread_mutex_unlock(&budget_lock);
	return rc;
}

/* Take n bytes of the budget, waiting for them until deadline (CLOCK_MONOTONIC ns). Returns
 * 0, -ETIMEDOUT, or -ESHUTDOWN once hecad is stopping. */
static int budget_wait(size_t n, uint64_t deadline)
{
	int rc = 0;

	if (n > g_buf_max)
		return -ENOBUFS;
	pthread_mutex_lock(&budget_lock);
	while (g_buf_used + n > g_buf_max) {
		struct timespec ts = {.tv_sec = (time_t)(deadline / NS_PER_SEC),
				      .tv_nsec = (long)(deadline % NS_PER_SEC)};

		if (g_stopping) {
			rc = -ESHUTDOWN;
			break;
		}
		if (pthread_cond_timedwait(&budget_cond, &budget_lock, &ts) == ETIMEDOUT &&
		    g_buf_used + n > g_buf_max) {
			rc = -ETIMEDOUT;
			break;
		}
	}
	if (!rc)
		g_buf_used += n;
	pthread_mutex_unlock(&budget_lock);
	return rc;
}

/* Count n bytes already allocated, budget or not. */
static void budget_charge(size_t n)
{
	pthread_mutex_lock(&budget_lock);
	g_buf_used += n;
	pthread_mutex_unlock(&budget_lock);
}

static void budget_put(size_t n)
{
	if (!n)
		return;
	pthread_mutex_lock(&budget_lock);
	g_buf_used -= n;
	pthread_cond_broadcast(&budget_cond);
	pthread_mutex_unlock(&budget_lock);
}

/* When a transfer of len bytes started at now must be over: IO_GRACE_NS plus the time it
 * takes at IO_FLOOR_BPS. */
static uint64_t io_deadline(uint64_t now, size_t len)
{
	return now + IO_GRACE_NS + (uint64_t)len * NS_PER_SEC / IO_FLOOR_BPS;
}

/*
 * Resize one of a connection's buffers (*p of *cap bytes, base bytes of which are its own)
 * to ncap, keeping its first keep bytes, and settle the budget for the part above base:
 * growing takes it (waiting until deadline if wait, else failing at once), shrinking gives it
 * back. Returns 0, -ENOBUFS, -ETIMEDOUT, -ESHUTDOWN or -ENOMEM.
 */
static int cbuf_resize(uint8_t **p, size_t *cap, size_t base, size_t ncap, int wait,
		       uint64_t deadline)
{
	size_t had = *cap - base, want = ncap - base;
	uint8_t *n;
	int rc;

	if (want > had) {
		rc = wait ? budget_wait(want - had, deadline) : budget_try(want - had);
		if (rc)
			return rc;
	}
	n = realloc(*p, ncap);
	if (!n) {
		if (want > had)
			budget_put(want - had);
		return -ENOMEM;
	}
	*p = n;
	*cap = ncap;
	if (want < had)
		budget_put(had - want);
	return 0;
}

/* ---- connections ------------------------------------------------------------------------ */

/* Log a line about one connection, at most LOG_BURST a second: a flood of hostile
 * connections must not become a flood of log lines. */
static void conn_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void conn_log(const char *fmt, ...)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static uint64_t window;
	static unsigned lines, dropped;
	uint64_t now = heca__now_ns() / NS_PER_SEC;
	unsigned skipped = 0;
	char line[400];
	va_list ap;
	int ok;

	pthread_mutex_lock(&lock);
	if (now != window) {
		skipped = dropped;
		window = now;
		lines = dropped = 0;
	}
	ok = lines < LOG_BURST;
	if (ok)
		lines++;
	else
		dropped++;
	pthread_mutex_unlock(&lock);
	if (skipped)
		logmsg("(%u more lines about connections not shown)", skipped);
	if (!ok)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	logmsg("%s", line);
}

/* Send all pending replies, each flush within io_deadline() of its start: a peer that does
 * not read its replies is not read either (the caller waits here), and is dropped in
 * bounded time. Returns 0 or -errno (-ETIMEDOUT when the peer stopped reading). */
static int flush_out(int fd, struct sponsor_buf *out)
{
	uint64_t deadline = io_deadline(heca__now_ns(), out->len);
	size_t done = 0;

	while (done < out->len) {
		ssize_t n = send(fd, out->data + done, out->len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		uint64_t now;

		if (n >= 0) {
			done += (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		now = heca__now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		if (poll(&p, 1, (int)((deadline - now + 999999) / 1000000)) < 0 && errno != EINTR)
			return -errno;
	}
	out->len = 0;
	return 0;
}

/* Room a reply to the frame at hdr can take: its payload and a header, and a header more for
 * an ERROR frame after it. */
static size_t reply_room(const uint8_t *hdr)
{
	struct heca_frame f;
	size_t plen = 128; /* HELLO, AUTH and STAT replies */

	if (heca_wire_decode(hdr, HECA_WIRE_HDR, &f) == -EPROTO)
		return 2 * HECA_WIRE_HDR;
	/* decode of the header alone fills the fields even when the payload is missing */
	if (f.opcode == HECA_OP_READ)
		plen = (size_t)HECA_MIN(f.count, HECA_WIRE_MAX_PAGES) * HECA_WIRE_PAGE;
	else if (f.opcode == HECA_OP_ECHO)
		plen = f.payload_len;
	return 2 * HECA_WIRE_HDR + plen;
}

/*
 * Serve one connection until EOF, a socket error, a protocol error or a broken limit. The
 * peer must be READY within g_handshake_ns of being accepted; a frame must arrive whole
 * within io_deadline() of its first byte; the replies must be taken within io_deadline() of
 * their flush. Buffers start at IN_BASE/OUT_BASE; above that they take from the shared
 * budget: at once up to IN_BUSY/OUT_BUSY for a busy peer if it is free, waiting for it (not
 * reading meanwhile) only to hold a frame or a reply bigger than the buffer. An idle
 * connection gives what it took back after IDLE_SHRINK_MS.
 */
static void *conn_main(void *arg)
{
	struct conn *cn = arg;
	struct sponsor_conn sc;
	struct sponsor_buf out = {0};
	uint8_t *in = malloc(IN_BASE);
	size_t have = 0, in_cap = IN_BASE;
	uint64_t hs_deadline = cn->accepted_ns + g_handshake_ns, frame_start = 0;
	const char *why = "closed by peer";
	int err = 0;

	sponsor_conn_init(&sc);
	out.data = malloc(OUT_BASE);
	out.cap = OUT_BASE;
	if (!in || !out.data) {
		why = "out of memory";
		err = -ENOMEM;
		goto out;
	}
	for (;;) {
		struct pollfd p = {.fd = cn->fd, .events = POLLIN};
		size_t off = 0;
		uint64_t now, deadline = UINT64_MAX;
		long flen = 0;
		ssize_t n;
		int timeout;

		/* Serve the whole frames received, one at a time so that each reply has room. */
		for (;;) {
			size_t room, cap0;
			long r;

			flen = heca_wire_frame_len(in + off, have - off);
			if (flen == -EAGAIN || (flen > 0 && (size_t)flen > have - off))
				break;
			if (flen < 0) {
				/* Malformed: sponsor_handle() says so in an ERROR frame. */
				flen = (long)(have - off);
				room = 2 * HECA_WIRE_HDR;
			} else {
				room = reply_room(in + off);
			}
			/* Pipelined replies: more room if the budget has it to spare, else send. */
			if (out.cap - out.len < room && out.cap < OUT_BUSY)
				cbuf_resize(&out.data, &out.cap, OUT_BASE, OUT_BUSY, 0, 0);
			if (out.cap - out.len < room) {
				err = flush_out(cn->fd, &out);
				if (err) {
					why = err == -ETIMEDOUT ? "dropped: replies not read" : "send failed";
					goto out;
				}
				if (out.cap < room) {
					err = cbuf_resize(&out.data, &out.cap, OUT_BASE,
							  HECA_MAX(room, OUT_BUSY), 1,
							  io_deadline(heca__now_ns(), room));
					if (err) {
						why = "dropped: no buffer memory for a reply";
						goto out;
					}
				}
			}
			cap0 = out.cap;
			r = sponsor_handle(g_sp, &sc, in + off, (size_t)flen, &out);
			if (out.cap > cap0)
				budget_charge(out.cap - cap0); /* room was too small: still counted */
			if (r < 0) {
				flush_out(cn->fd, &out); /* the peer is to see why */
				err = (int)r;
				why = r != -EACCES ? "protocol error"
				      : sc.state == SPONSOR_CONN_NEW ? "refused: wrong cluster id"
								     : "refused: no valid AUTH";
				goto out;
			}
			if (r == 0) {
				/* A whole frame was given: not taking it would loop for ever. */
				err = -EPROTO;
				why = "protocol error";
				goto out;
			}
			off += (size_t)r;
			frame_start = 0;
		}
		if (off) {
			memmove(in, in + off, have - off);
			have -= off;
		}
		err = flush_out(cn->fd, &out);
		if (err) {
			why = err == -ETIMEDOUT ? "dropped: replies not read" : "send failed";
			goto out;
		}

		now = heca__now_ns();
		if (have && !frame_start)
			frame_start = now;
		if (!have)
			frame_start = 0;
		flen = heca_wire_frame_len(in, have);
		if (frame_start)
			deadline = io_deadline(frame_start, flen > 0 ? (size_t)flen : HECA_WIRE_HDR);
		if (sc.state != SPONSOR_CONN_READY)
			deadline = HECA_MIN(deadline, hs_deadline);
		/* Before HELLO (and AUTH) only small frames are expected: an unknown peer gets
		 * no more than the base buffers. */
		if (flen > 0 && (size_t)flen > in_cap && sc.state != SPONSOR_CONN_READY) {
			err = -EPROTO;
			why = "dropped: large frame before HELLO/AUTH";
			goto out;
		}
		/* A frame bigger than the buffer: grow to hold it, waiting for budget (the peer
		 * is not read meanwhile) no longer than the frame may take. */
		if (flen > 0 && (size_t)flen > in_cap) {
			err = cbuf_resize(&in, &in_cap, IN_BASE, (size_t)flen, 1, deadline);
			if (err) {
				why = err == -ETIMEDOUT ? "dropped: frame not received in time"
							: "dropped: no buffer memory for a frame";
				goto out;
			}
		}
		timeout = -1;
		if (deadline != UINT64_MAX)
			timeout = now >= deadline ? 0 : (int)((deadline - now + 999999) / 1000000);
		if (!have && (in_cap > IN_BASE || out.cap > OUT_BASE))
			timeout = timeout < 0 ? IDLE_SHRINK_MS : HECA_MIN(timeout, IDLE_SHRINK_MS);
		/* Nothing to time: block in recv() itself, one system call per request. */
		n = timeout < 0 ? 1 : poll(&p, 1, timeout);
		if (n < 0 && errno != EINTR) {
			err = -errno;
			why = "poll failed";
			goto out;
		}
		if (n == 0) {
			now = heca__now_ns();
			if (now >= deadline) {
				err = -ETIMEDOUT;
				why = sc.state != SPONSOR_CONN_READY && now >= hs_deadline
					      ? "dropped: no HELLO/AUTH in time"
					      : "dropped: frame not received in time";
				goto out;
			}
			if (!have) {
				/* Idle: give back what the connection took from the budget. */
				cbuf_resize(&in, &in_cap, IN_BASE, IN_BASE, 0, 0);
				cbuf_resize(&out.data, &out.cap, OUT_BASE, OUT_BASE, 0, 0);
			}
			continue;
		}
		n = recv(cn->fd, in + have, in_cap - have, timeout < 0 ? 0 : MSG_DONTWAIT);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			err = -errno;
			why = "receive failed";
			break;
		}
		have += (size_t)n;
		/* A busy peer: more room per recv() if the budget has it to spare. */
		if (have == in_cap && in_cap < IN_BUSY)
			cbuf_resize(&in, &in_cap, IN_BASE, IN_BUSY, 0, 0);
	}
out:
	if (err == -ETIMEDOUT && !strncmp(why, "dropped", 7))
		conn_log("%s: %s", cn->peer, why);
	else if (err && err != -ECONNRESET && err != -EPIPE)
		conn_log("%s: %s (%s)", cn->peer, why, heca_strerror(err));
	else if (g_verbose)
		logmsg("%s: %s", cn->peer, why);
	if (!strncmp(why, "dropped", 7)) {
		/* A dropped peer gets a reset when the reaper closes the fd: a FIN would wait
		 * behind replies it does not read, and the kernel would keep them for it. */
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		setsockopt(cn->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	} else {
		/* The peer sees EOF now, not when the reaper gets to close the fd. */
		shutdown(cn->fd, SHUT_WR);
	}
	sponsor_conn_exit(g_sp, &sc);
	if (g_lease_ns == 0)
		sweep_leases(); /* no lease: free at once, not at the next sweep */
	if (in)
		budget_put(in_cap - IN_BASE);
	if (out.data)
		budget_put(out.cap - OUT_BASE);
	sponsor_buf_free(&out);
	free(in);
	atomic_fetch_sub(&g_nconns, 1);
	pthread_mutex_lock(&conns_lock);
	cn->done = 1;
	pthread_mutex_unlock(&conns_lock);
	return NULL;
}

/* Join threads that have finished (all of them if all). Caller must not hold conns_lock. */
static void reap(int all)
{
	struct conn **pp = &g_conns, *cn;

	pthread_mutex_lock(&conns_lock);
	while ((cn = *pp)) {
		if (!cn->done && !all) {
			pp = &cn->next;
			continue;
		}
		*pp = cn->next;
		pthread_mutex_unlock(&conns_lock);
		if (all)
			shutdown(cn->fd, SHUT_RDWR); /* unblock its recv/send */
		pthread_join(cn->thread, NULL);
		close(cn->fd);
		free(cn);
		pthread_mutex_lock(&conns_lock);
	}
	pthread_mutex_unlock(&conns_lock);
}

static void peer_name(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[64] = "?";
	unsigned port = 0;

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
			port = ntohs(a->sin6_port);
		}
	}
	snprintf(buf, len, "%s:%u", host, port);
}

/* Count a connection refused at --max-connections; say so at most once a second. */
static void refused_one(void)
{
	static uint64_t last_log;
	static unsigned long refused;
	uint64_t now = heca__now_ns();

	refused++;
	if (now - last_log >= NS_PER_SEC) {
		logmsg("refused %lu connection%s: %u open (--max-connections)", refused,
		       refused == 1 ? "" : "s", g_max_conns);
		refused = 0;
		last_log = now;
	}
}

/* Accept what is queued (at most a batch, so that signals and leases are not starved). */
static void accept_some(int lfd, const pthread_attr_t *attr)
{
	for (int i = 0; i < 64; i++) {
		struct conn *cn;
		int fd, one = 1, rc;

		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				conn_log("accept: %s", strerror(errno));
				usleep(100 * 1000); /* do not spin while out of descriptors */
			}
			return;
		}
		if (atomic_load(&g_nconns) >= g_max_conns) {
			close(fd);
			refused_one();
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (g_keepalive_s)
			heca__tcp_keepalive(fd, g_keepalive_s);
		cn = calloc(1, sizeof(*cn));
		if (!cn) {
			close(fd);
			return;
		}
		cn->fd = fd;
		cn->accepted_ns = heca__now_ns();
		peer_name(fd, cn->peer, sizeof(cn->peer));
		atomic_fetch_add(&g_nconns, 1);
		rc = pthread_create(&cn->thread, attr, conn_main, cn);
		if (rc) {
			atomic_fetch_sub(&g_nconns, 1);
			conn_log("%s: cannot start a thread: %s", cn->peer, strerror(rc));
			close(fd);
			free(cn);
			return;
		}
		if (g_verbose)
			logmsg("%s: connected", cn->peer);
		pthread_mutex_lock(&conns_lock);
		cn->next = g_conns;
		g_conns = cn;
		pthread_mutex_unlock(&conns_lock);
	}
}

/* Enough descriptors for --max-connections: raise the soft limit, or lower the maximum. */
static void fit_fd_limit(void)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)g_max_conns + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return;
	if (rl.rlim_cur < want) {
		rl.rlim_cur = HECA_MIN(want, rl.rlim_max);
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < want) {
		g_max_conns = rl.rlim_cur > 128 ? (unsigned)(rl.rlim_cur - 64) : 64;
		logmsg("only %llu file descriptors: at most %u connections",
		       (unsigned long long)rl.rlim_cur, g_max_conns);
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"listen", required_argument, NULL, 'l'},
		{"capacity", required_argument, NULL, 'c'},
		{"cluster-id", required_argument, NULL, 'C'},
		{"key-file", required_argument, NULL, 'K'},
		{"state-dir", required_argument, NULL, 'S'},
		{"gen-key", required_argument, NULL, 'G'},
		{"lease", required_argument, NULL, 'L'},
		{"max-connections", required_argument, NULL, 'M'},
		{"buffer-memory", required_argument, NULL, 'B'},
		{"keepalive", required_argument, NULL, 'k'},
		{"handshake-timeout", required_argument, NULL, 'H'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct sponsor_config cfg = {0};
	const char *listen_at = NULL, *capacity = NULL, *key_file = NULL, *state_dir = NULL;
	const char *gen_key_path = NULL;
	uint8_t key[HECA_AUTH_KEY_MAX];
	char bound[128], sz[32], idhex[33], err[512];
	size_t keylen = 0;
	uint64_t sweep_ns, next_sweep, v;
	pthread_condattr_t ca;
	pthread_attr_t attr;
	char *end;
	sigset_t sigs;
	int opt, lfd, sfd, rc;

	while ((opt = getopt_long(argc, argv, "l:c:vh", opts, NULL)) != -1) {
		switch (opt) {
		case 'l': listen_at = optarg; break;
		case 'c': capacity = optarg; break;
		case 'C':
			if (parse_hex128(optarg, cfg.cluster_id)) {
				fprintf(stderr, "hecad: bad --cluster-id '%s': want 32 hex digits\n",
					optarg);
				return 2;
			}
			break;
		case 'K': key_file = optarg; break;
		case 'S': state_dir = optarg; break;
		case 'G': gen_key_path = optarg; break;
		case 'L':
			if (parse_lease(optarg, &g_lease_ns)) {
				fprintf(stderr, "hecad: bad --lease '%s': want seconds such as 30 "
						"or 0.5\n", optarg);
				return 2;
			}
			break;
		case 'M':
			errno = 0;
			v = strtoull(optarg, &end, 10);
			if (errno || *end || end == optarg || v == 0 || v > 1000000) {
				fprintf(stderr, "hecad: bad --max-connections '%s': want 1 to "
						"1000000\n", optarg);
				return 2;
			}
			g_max_conns = (unsigned)v;
			break;
		case 'B':
			if (heca_parse_size(optarg, &v) || v < (1u << 20) || v > (1ull << 40)) {
				fprintf(stderr, "hecad: bad --buffer-memory '%s': want a size of at "
						"least 1M such as 64M\n", optarg);
				return 2;
			}
			g_buf_max = (size_t)v;
			break;
		case 'k':
			errno = 0;
			v = strtoull(optarg, &end, 10);
			if (errno || *end || end == optarg || v == 1 || v > 86400) {
				fprintf(stderr, "hecad: bad --keepalive '%s': want 0 (off) or 2 to "
						"86400 seconds\n", optarg);
				return 2;
			}
			g_keepalive_s = (int)v;
			break;
		case 'H':
			if (parse_lease(optarg, &g_handshake_ns) || g_handshake_ns == 0) {
				fprintf(stderr, "hecad: bad --handshake-timeout '%s': want seconds "
						"such as 5\n", optarg);
				return 2;
			}
			break;
		case 'v': g_verbose = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "hecad: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (gen_key_path)
		return gen_key(gen_key_path);
	if (!listen_at || !capacity) {
		fprintf(stderr, "hecad: --listen and --capacity are required\n");
		usage(stderr);
		return 2;
	}
	if (heca_parse_size(capacity, &cfg.capacity) || cfg.capacity < HECA_WIRE_PAGE) {
		fprintf(stderr, "hecad: bad --capacity '%s': want a size such as 512M or 4G\n",
			capacity);
		return 2;
	}
	if (cfg.capacity / HECA_WIRE_PAGE > SPONSOR_MAX_CAPACITY_PAGES) {
		fprintf(stderr, "hecad: --capacity '%s' is too large (at most %s)\n", capacity,
			heca__fmt_bytes(sz, sizeof(sz),
					SPONSOR_MAX_CAPACITY_PAGES * HECA_WIRE_PAGE));
		return 2;
	}
	if (key_file) {
		rc = heca__auth_load_key(key_file, key, &keylen, err, sizeof(err));
		if (rc) {
			fprintf(stderr, "hecad: refusing to start: %s\n", err);
			return 2;
		}
		cfg.key = key;
		cfg.keylen = keylen;
	}
	if (state_dir) {
		if (load_or_create_id(state_dir, cfg.sponsor_id)) {
			heca__auth_wipe(key, sizeof(key));
			return 1;
		}
		cfg.has_id = 1;
	}

	/* Signals are taken from a signalfd by the main thread only; threads inherit the mask. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (sfd < 0) {
		logmsg("signalfd: %s", strerror(errno));
		return 1;
	}

	/* Buffers above 64 KiB are their own mappings, given back to the kernel when freed; one
	 * arena, not one per thread, so freed small blocks are reused rather than kept apart. */
	mallopt(M_MMAP_THRESHOLD, 64 << 10);
	mallopt(M_ARENA_MAX, 2);
	fit_fd_limit();
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&budget_cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, CONN_STACK);

	cfg.expired = lease_expired;
	rc = sponsor_open(&cfg, &g_sp);
	heca__auth_wipe(key, sizeof(key)); /* the sponsor keeps its own copy */
	if (rc) {
		logmsg("cannot start: %s", heca_strerror(rc));
		return 1;
	}
	lfd = heca__tcp_listen(listen_at, bound, sizeof(bound));
	if (lfd < 0) {
		logmsg("cannot listen on %s: %s", listen_at, heca_strerror(lfd));
		sponsor_close(g_sp);
		return 1;
	}
	/* A deeper queue than heca__tcp_listen's for bursts of connections, and never block in
	 * accept() for one that went away. */
	listen(lfd, 4096);
	fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
	sponsor_get_id(g_sp, cfg.sponsor_id);
	hex_encode(cfg.sponsor_id, 16, idhex);
	logmsg("sponsoring %s (%llu pages), sponsor id %s%s%s, lease %.3g s",
	       heca__fmt_bytes(sz, sizeof(sz), cfg.capacity),
	       (unsigned long long)(cfg.capacity / HECA_WIRE_PAGE), idhex,
	       state_dir ? "" : " (new each run: see --state-dir)",
	       keylen ? ", cluster key required" : "", (double)g_lease_ns / 1e9);
	printf("listening on %s\n", bound);
	fflush(stdout);

	sweep_ns = HECA_MAX(SWEEP_MIN_NS, HECA_MIN(SWEEP_MAX_NS, g_lease_ns / 4));
	next_sweep = heca__now_ns() + sweep_ns;
	for (;;) {
		struct pollfd p[2] = {{.fd = lfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
		uint64_t now = heca__now_ns();
		int timeout = now >= next_sweep ? 0 : (int)((next_sweep - now + 999999) / 1000000);

		if (poll(p, 2, timeout) < 0 && errno != EINTR) {
			logmsg("poll: %s", strerror(errno));
			break;
		}
		if (p[1].revents) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) == sizeof(si))
				break;
		}
		if (p[0].revents & POLLIN)
			accept_some(lfd, &attr);
		reap(0);
		now = heca__now_ns();
		if (now >= next_sweep) {
			sweep_leases();
			next_sweep = now + sweep_ns;
		}
	}
	logmsg("shutting down");
	close(lfd);
	pthread_mutex_lock(&budget_lock);
	g_stopping = 1;
	pthread_cond_broadcast(&budget_cond);
	pthread_mutex_unlock(&budget_lock);
	reap(1);
	pthread_attr_destroy(&attr);
	sponsor_close(g_sp);
	close(sfd);
	return 0;
}
