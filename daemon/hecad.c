// SPDX-License-Identifier: MIT
/*
 * hecad.c - the memory sponsor daemon: command line, listening socket, one thread per
 * connection with blocking IO, clean shutdown on SIGTERM/SIGINT. Serving lives in sponsor.c.
 */
#include <errno.h>
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
#include <unistd.h>

#include "heca.h"
#include "net.h"
#include "sponsor.h"
#include "util.h"
#include "wire.h"

/* Big enough for many pipelined frames per recv() and always for one whole frame. */
#define IN_BUF (4u << 20)

struct conn {
	struct conn *next;
	pthread_t thread;
	int fd;
	int done; /* set by the thread as it ends; read under conns_lock */
	char peer[64];
};

static struct sponsor *g_sp;
static int g_verbose;
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
				why = r == -EACCES ? "refused: wrong cluster id" : "protocol error";
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
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct sponsor_config cfg = {0};
	const char *listen_at = NULL, *capacity = NULL;
	char bound[128], sz[32];
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

	rc = sponsor_open(&cfg, &g_sp);
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
	logmsg("sponsoring %s (%llu pages)", heca__fmt_bytes(sz, sizeof(sz), cfg.capacity),
	       (unsigned long long)(cfg.capacity / HECA_WIRE_PAGE));
	printf("listening on %s\n", bound);
	fflush(stdout);

	for (;;) {
		struct pollfd p[2] = {{.fd = lfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};

		if (poll(p, 2, 1000) < 0 && errno != EINTR) {
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
	}
	logmsg("shutting down");
	close(lfd);
	reap(1);
	sponsor_close(g_sp);
	close(sfd);
	return 0;
}
