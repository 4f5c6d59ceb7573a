/* SPDX-License-Identifier: MIT */
/*
 * net.h - TCP socket helpers: connect, listen, whole-buffer send and receive with retries.
 */
#ifndef HECA_NET_H
#define HECA_NET_H

#include <stddef.h>
#include <sys/uio.h>

/* Connect to "HOST:PORT" with TCP_NODELAY, waiting at most timeout_ms. Returns the fd or
 * -errno (-EINVAL for a malformed address, -EHOSTUNREACH if the name does not resolve). */
int heca__tcp_connect(const char *hostport, int timeout_ms);

/* Listen on "HOST:PORT" (port 0 picks one). Returns the fd or -errno; the bound address is
 * written to bound[boundlen] as "HOST:PORT". */
int heca__tcp_listen(const char *hostport, char *bound, size_t boundlen);

/* Send all of iov on a blocking socket (EINTR retried, MSG_NOSIGNAL). Returns 0 or -errno;
 * -ETIMEDOUT if the socket's SO_SNDTIMEO expired before everything was sent. */
int heca__send_all(int fd, struct iovec *iov, int iovcnt);

/* Bytes a non-blocking sender could not hand to the kernel yet, kept in order. Zero it, set max
 * (the most it may hold), and free(q->buf) when done. */
struct heca_outq {
	unsigned char *buf;
	size_t len, cap, max;
};

/* Send iov on fd without blocking, after whatever q already holds: what the socket does not
 * take now is appended to q, for heca__outq_flush() once fd is writable. Returns 0 (all sent),
 * 1 (some of it waits in q), -ENOBUFS (q would pass q->max: nothing was sent or queued),
 * -ENOMEM, or -errno of the send; after an error other than -ENOBUFS the stream may be cut
 * short: give the connection up. */
int heca__outq_send(struct heca_outq *q, int fd, const struct iovec *iov, int iovcnt);

/* Send what q holds without blocking. Returns 0 (q is empty), 1 (some still waits), -errno. */
int heca__outq_flush(struct heca_outq *q, int fd);

/* Receive exactly len bytes (blocking). Returns 0, -ECONNRESET on EOF, or -errno. */
int heca__recv_all(int fd, void *buf, size_t len);

/* Have the kernel end the connection on fd within about `seconds` (>= 2) of its peer
 * vanishing without a FIN: keepalive probes once it has been idle a third of that, and
 * TCP_USER_TIMEOUT for data left unacknowledged. 0 turns keepalive off and restores the
 * kernel's default user timeout. The connection then fails with ETIMEDOUT. Returns 0, -EINVAL
 * for 1 or a negative value, or -errno. */
int heca__tcp_keepalive(int fd, int seconds);

#endif
