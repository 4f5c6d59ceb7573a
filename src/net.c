// SPDX-License-Identifier: MIT
/*
 * net.c - TCP helpers. Every function returns -errno instead of setting errno.
 */
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

static int resolve(const char *hostport, int passive, struct addrinfo **res)
{
	char host[256], port[16];
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	int rc;

	if (heca__split_hostport(hostport, host, sizeof(host), port, sizeof(port)))
		return -EINVAL;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	rc = getaddrinfo(host, port, &hints, res);
	if (rc == EAI_SYSTEM)
		return -errno;
	if (rc)
		return -EHOSTUNREACH;
	return 0;
}

static void tune(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* One connection attempt within timeout_ms. Returns the connected, blocking fd or -errno. */
static int connect_addr(const struct sockaddr *sa, socklen_t salen, int timeout_ms)
{
	int rc, err, fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -errno;
	if (connect(fd, sa, salen) == 0)
		goto connected;
	if (errno == EINPROGRESS) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		rc = poll(&p, 1, timeout_ms);
		if (rc == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
			goto connected;
		err = rc == 0 ? -ETIMEDOUT : (soerr ? -soerr : -errno);
	} else {
		err = -errno;
	}
	close(fd);
	return err;
connected:
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	tune(fd);
	return fd;
}

/* A numeric address is connected to without getaddrinfo(), which allocates from the
 * program's allocator: in the preload, reconnecting must not (src/privalloc.h). */
static int numeric(const char *hostport, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[256], port[16];
	struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
	char *end;
	unsigned long pn;

	if (heca__split_hostport(hostport, host, sizeof(host), port, sizeof(port)))
		return 0;
	pn = strtoul(port, &end, 10);
	if (*end || !*port || pn > 65535)
		return 0;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)pn);
		*len = sizeof(*v4);
		return 1;
	}
	if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)pn);
		*len = sizeof(*v6);
		return 1;
	}
	return 0;
}

int heca__tcp_connect(const char *hostport, int timeout_ms)
{
	struct addrinfo *res, *ai;
	struct sockaddr_storage ss;
	socklen_t sl;
	int rc, err = -ECONNREFUSED;

	if (numeric(hostport, &ss, &sl))
		return connect_addr((struct sockaddr *)&ss, sl, timeout_ms);
	rc = resolve(hostport, 0, &res);
	if (rc)
		return rc;
	for (ai = res; ai; ai = ai->ai_next) {
		rc = connect_addr(ai->ai_addr, ai->ai_addrlen, timeout_ms);
		if (rc >= 0) {
			freeaddrinfo(res);
			return rc;
		}
		err = rc;
	}
	freeaddrinfo(res);
	return err;
}

int heca__tcp_listen(const char *hostport, char *bound, size_t boundlen)
{
	struct addrinfo *res;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[NI_MAXHOST], port[NI_MAXSERV];
	int rc, fd, one = 1;

	rc = resolve(hostport, 1, &res);
	if (rc)
		return rc;
	fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
	if (fd < 0) {
		rc = -errno;
		goto out_free;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 128)) {
		rc = -errno;
		goto out_close;
	}
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) ||
	    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV)) {
		rc = -EINVAL;
		goto out_close;
	}
	if (bound)
		snprintf(bound, boundlen, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
	freeaddrinfo(res);
	return fd;
out_close:
	close(fd);
out_free:
	freeaddrinfo(res);
	return rc;
}

int heca__send_all(int fd, struct iovec *iov, int iovcnt)
{
	while (iovcnt > 0) {
		struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
		ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return -ETIMEDOUT; /* SO_SNDTIMEO expired: the peer stopped reading */
			return -errno;
		}
		while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			iovcnt--;
		}
		if (iovcnt > 0) {
			iov->iov_base = (char *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

static int outq_append(struct heca_outq *q, const void *p, size_t n)
{
	if (q->len + n > q->cap) {
		size_t ncap = q->cap ? q->cap : 4096;
		unsigned char *nb;
		while (ncap < q->len + n)
			ncap *= 2;
		nb = realloc(q->buf, ncap);
		if (!nb)
			return -ENOMEM;
		q->buf = nb;
		q->cap = ncap;
	}
	memcpy(q->buf + q->len, p, n);
	q->len += n;
	return 0;
}

int heca__outq_flush(struct heca_outq *q, int fd)
{
	size_t off = 0;
	int rc = 0;

	while (off < q->len) {
		ssize_t n = send(fd, q->buf + off, q->len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = errno == EAGAIN ? 0 : -errno;
			break;
		}
		off += (size_t)n;
	}
	memmove(q->buf, q->buf + off, q->len - off);
	q->len -= off;
	return rc ? rc : q->len > 0;
}

int heca__outq_send(struct heca_outq *q, int fd, const struct iovec *iov, int iovcnt)
{
	size_t total = 0, sent = 0;
	int rc;

	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	if (q->len + total > q->max)
		return -ENOBUFS;
	if (q->len) {
		rc = heca__outq_flush(q, fd);
		if (rc < 0)
			return rc;
	}
	if (!q->len) {
		struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
		ssize_t n;
		do
			n = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
		while (n < 0 && errno == EINTR);
		if (n < 0 && errno != EAGAIN)
			return -errno;
		sent = n > 0 ? (size_t)n : 0;
	}
	if (sent == total)
		return 0;
	/* Keep the part the kernel did not take: the stream must stay whole. */
	for (int i = 0; i < iovcnt; i++) {
		size_t l = iov[i].iov_len;
		if (sent >= l) {
			sent -= l;
			continue;
		}
		rc = outq_append(q, (const unsigned char *)iov[i].iov_base + sent, l - sent);
		if (rc)
			return rc;
		sent = 0;
	}
	return 1;
}

int heca__recv_all(int fd, void *buf, size_t len)
{
	char *p = buf;
	while (len) {
		ssize_t n = recv(fd, p, len, 0);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int heca__tcp_keepalive(int fd, int seconds)
{
	int on = seconds > 0, idle, rest, cnt, intvl;
	unsigned user_ms;

	if (seconds < 0 || seconds == 1)
		return -EINVAL;
	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)))
		return -errno;
	/* Probes start after a third of the time idle; the rest is split into up to three probe
	 * intervals, so idle + cnt * intvl <= seconds. */
	idle = HECA_MAX(1, seconds / 3);
	rest = HECA_MAX(1, seconds - idle);
	cnt = HECA_MIN(3, rest);
	intvl = rest / cnt;
	/* With a user timeout set, the kernel ends a probed connection at the first probe tick
	 * past it rather than after cnt probes: half an interval before the last tick makes
	 * that tick the end. Data sent but not acknowledged that long also ends the connection
	 * (keepalive probes are not sent while data is outstanding). 0: the kernel's default. */
	user_ms = on ? (unsigned)(idle + (cnt - 1) * intvl) * 1000u + (unsigned)intvl * 500u : 0;
	if (on && (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) ||
		   setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) ||
		   setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt))))
		return -errno;
	if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_ms, sizeof(user_ms)))
		return -errno;
	return 0;
}
