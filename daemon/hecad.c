// SPDX-License-Identifier: MIT
/*
 * hecad.c - the memory sponsor daemon: command line, listening socket, one thread per
 * connection with blocking IO, the lease sweep, clean shutdown on SIGTERM/SIGINT. Serving
 * lives in sponsor.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "heca.h"
#include "net.h"
#include "sponsor.h"
#include "util.h"
#include "wire.h"

/* Big enough for many pipelined frames per recv() and always for one whole frame. */
#define IN_BUF (4u << 20)
#define NS_PER_SEC 1000000000ull
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
	char peer[64];
};

static struct sponsor *g_sp;
static int g_verbose;
static uint64_t g_lease_ns = DEFAULT_LEASE_NS;
static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct conn *g_conns;

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
		"  -v, --verbose            log every connection to stderr\n"
		"  -h, --help               show this help and exit\n");
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

static int send_buf(int fd, struct sponsor_buf *out)
{
	struct iovec iov = {.iov_base = out->data, .iov_len = out->len};
	int rc = out->len ? heca__send_all(fd, &iov, 1) : 0;

	out->len = 0;
	return rc;
}

/* Serve one connection until EOF, a socket error or a protocol error. */
static void *conn_main(void *arg)
{
	struct conn *cn = arg;
	struct sponsor_conn sc;
	struct sponsor_buf out = {0};
	uint8_t *in = malloc(IN_BUF);
	size_t have = 0;
	const char *why = "closed by peer";
	int err = 0;

	sponsor_conn_init(&sc);
	if (!in) {
		why = "out of memory";
		goto out;
	}
	for (;;) {
		ssize_t n = recv(cn->fd, in + have, IN_BUF - have, 0);
		size_t off = 0;

		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			why = "receive failed";
			break;
		}
		have += (size_t)n;
		for (;;) {
			long r = sponsor_handle(g_sp, &sc, in + off, have - off, &out);
			int src = send_buf(cn->fd, &out);

			if (r < 0) {
				err = (int)r;
				why = r != -EACCES ? "protocol error"
				      : sc.state == SPONSOR_CONN_NEW ? "refused: wrong cluster id"
								     : "refused: no valid AUTH";
				goto out;
			}
			if (src) {
				err = src;
				why = "send failed";
				goto out;
			}
			if (r == 0)
				break;
			off += (size_t)r;
		}
		/* Keep the partial frame at the front: a whole frame always fits behind it. */
		if (off) {
			memmove(in, in + off, have - off);
			have -= off;
		}
	}
out:
	if (err && err != -ECONNRESET && err != -EPIPE)
		logmsg("%s: %s (%s)", cn->peer, why, heca_strerror(err));
	else if (g_verbose)
		logmsg("%s: %s", cn->peer, why);
	/* The peer sees EOF now, not when the reaper gets to close the fd. */
	shutdown(cn->fd, SHUT_WR);
	sponsor_conn_exit(g_sp, &sc);
	if (g_lease_ns == 0)
		sweep_leases(); /* no lease: free at once, not at the next sweep */
	sponsor_buf_free(&out);
	free(in);
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

static void accept_one(int lfd)
{
	struct conn *cn;
	int fd, one = 1, rc;

	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			logmsg("accept: %s", strerror(errno));
			usleep(100 * 1000); /* do not spin while out of descriptors */
		}
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	cn = calloc(1, sizeof(*cn));
	if (!cn) {
		close(fd);
		return;
	}
	cn->fd = fd;
	peer_name(fd, cn->peer, sizeof(cn->peer));
	rc = pthread_create(&cn->thread, NULL, conn_main, cn);
	if (rc) {
		logmsg("%s: cannot start a thread: %s", cn->peer, strerror(rc));
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
	uint64_t sweep_ns, next_sweep;
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
			accept_one(lfd);
		reap(0);
		now = heca__now_ns();
		if (now >= next_sweep) {
			sweep_leases();
			next_sweep = now + sweep_ns;
		}
	}
	logmsg("shutting down");
	close(lfd);
	reap(1);
	sponsor_close(g_sp);
	close(sfd);
	return 0;
}
