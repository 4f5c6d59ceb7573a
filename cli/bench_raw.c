// SPDX-License-Identifier: MIT
/*
 * bench_raw.c - `heca bench raw`: the limits heca works within, measured with heca's own
 * sockets and frames (4 KiB round trip, pipelined page rate) and a bare userfaultfd handler.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cli.h"
#include "net.h"
#include "util.h"
#include "wire.h"

#define RAW_SEGMENT  1u
#define RAW_MAX_CONN CLI_MAX_SPAWN
#define RAW_RBUF     (HECA_WIRE_MAX_PAYLOAD + 64 * 1024)
#define PG	     HECA_WIRE_PAGE

/* One connection to one sponsor, with a receive buffer that frames are decoded from. */
struct raw_conn {
	int fd;
	char addr[128];
	uint8_t *rbuf;
	size_t roff, rlen; /* undecoded bytes are rbuf[roff..rlen) */
	uint64_t next_id;
	uint64_t cap_pages, used_pages;
	uint64_t seg_pages; /* pages written to RAW_SEGMENT */
};

static int send_frame(struct raw_conn *c, uint8_t op, uint64_t page, uint32_t count,
		      const void *payload, uint32_t len)
{
	uint8_t hdr[HECA_WIRE_HDR];
	struct heca_frame f = {.opcode = op,
			       .req_id = c->next_id++,
			       .segment = RAW_SEGMENT,
			       .page = page,
			       .count = count,
			       .payload_len = len,
			       .payload = payload};
	struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)payload, len}};

	heca_wire_encode(hdr, &f);
	return heca__send_all(c->fd, iov, len ? 2 : 1);
}

/* Decode the next frame, reading more as needed. spin: busy-poll the socket instead of
 * sleeping in recv(). f->payload stays valid until the next call. */
static int recv_frame(struct raw_conn *c, struct heca_frame *f, int spin)
{
	for (;;) {
		int rc = heca_wire_decode(c->rbuf + c->roff, c->rlen - c->roff, f);
		ssize_t n;

		if (rc > 0) {
			c->roff += (size_t)rc;
			return 0;
		}
		if (rc != -EAGAIN)
			return rc;
		if (c->roff) {
			memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
			c->rlen -= c->roff;
			c->roff = 0;
		}
		n = recv(c->fd, c->rbuf + c->rlen, RAW_RBUF - c->rlen, spin ? MSG_DONTWAIT : 0);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		c->rlen += (size_t)n;
	}
}

/* Send a request and wait for its reply; a non-zero reply status becomes -status. */
static int call(struct raw_conn *c, uint8_t op, uint64_t page, uint32_t count, const void *payload,
		uint32_t len, struct heca_frame *reply, int spin)
{
	uint64_t id = c->next_id;
	int rc = send_frame(c, op, page, count, payload, len);

	if (rc)
		return rc;
	rc = recv_frame(c, reply, spin);
	if (rc)
		return rc;
	if (reply->opcode == HECA_OP_ERROR)
		return -reply->status;
	if (reply->opcode != (op | HECA_OP_REPLY) || reply->req_id != id)
		return -EPROTO;
	return reply->status ? -reply->status : 0;
}

static int conn_open(struct raw_conn *c, const char *addr, const uint8_t demander[16],
		     int timeout_ms)
{
	uint8_t hello[HECA_WIRE_HELLO_LEN] = {0};
	struct heca_frame f;
	int rc;

	snprintf(c->addr, sizeof(c->addr), "%s", addr);
	c->rbuf = malloc(RAW_RBUF);
	if (!c->rbuf)
		return -ENOMEM;
	c->fd = heca__tcp_connect(addr, timeout_ms);
	if (c->fd < 0)
		return c->fd;
	/* cluster id all zero (the default cluster), our demander id, the fault channel */
	memcpy(hello + 16, demander, 16);
	heca_put32(hello + 32, HECA_CHAN_FAULT);
	rc = call(c, HECA_OP_HELLO, 0, 0, hello, sizeof(hello), &f, 0);
	if (rc)
		return rc;
	if (f.payload_len < HECA_WIRE_HELLO_REPLY_LEN)
		return -EPROTO;
	c->cap_pages = heca_get64(f.payload + 16);
	c->used_pages = heca_get64(f.payload + 24);
	return 0;
}

static void conn_close(struct raw_conn *c)
{
	struct heca_frame f;

	if (c->fd >= 0 && c->seg_pages)
		call(c, HECA_OP_FREE, 0, 0, NULL, 0, &f, 0);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->rbuf);
	c->rbuf = NULL;
}

/* Time `samples` round trips (after a warm-up), round-robin over the connections. op ECHO
 * sends and gets back one 4 KiB page; op READ asks for one page and gets it. */
static int time_rtt(struct raw_conn *c, int nc, uint8_t op, int spin, unsigned int samples,
		    struct bench_lat *out, const char *what)
{
	unsigned int warm = samples / 10 + 10;
	double *s = calloc(samples, sizeof(*s));
	uint8_t page[PG];
	struct heca_frame f;
	int rc = 0;

	if (!s)
		return -ENOMEM;
	memset(page, 0xa5, sizeof(page));
	for (unsigned int i = 0; i < warm + samples; i++) {
		struct raw_conn *k = &c[i % (unsigned int)nc];
		uint64_t pg = (i * 7919ull) % k->seg_pages;
		double t0 = bench_now();
		if (op == HECA_OP_ECHO)
			rc = call(k, op, 0, 0, page, PG, &f, spin);
		else
			rc = call(k, op, pg, 1, NULL, 0, &f, spin);
		if (rc) {
			fprintf(stderr, "heca bench raw: %s to %s: %s\n", heca_wire_opname(op),
				k->addr, heca_strerror(rc));
			break;
		}
		if (i >= warm)
			s[i - warm] = (bench_now() - t0) * 1e6;
		if (i % 256 == 0)
			bench_progress(what, (double)i / (warm + samples), 0, NULL);
	}
	bench_progress_end();
	if (!rc)
		bench_lat_summary(s, samples, out);
	free(s);
	return rc;
}

/* Write the pages the pipelined run reads, 1 MiB per WRITE. */
static int fill_segment(struct raw_conn *c, uint64_t pages)
{
	uint8_t *buf = malloc(HECA_WIRE_MAX_PAYLOAD);
	struct heca_frame f;
	int rc;

	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < HECA_WIRE_MAX_PAYLOAD / 8; i++)
		((uint64_t *)buf)[i] = i * 0x9e3779b97f4a7c15ull;
	rc = call(c, HECA_OP_ALLOC, pages, 0, NULL, 0, &f, 0);
	for (uint64_t p = 0; !rc && p < pages; p += HECA_WIRE_MAX_PAGES) {
		uint32_t n = (uint32_t)HECA_MIN(pages - p, (uint64_t)HECA_WIRE_MAX_PAGES);
		rc = call(c, HECA_OP_WRITE, p, n, buf, n * PG, &f, 0);
	}
	if (!rc)
		c->seg_pages = pages;
	free(buf);
	return rc;
}

/*
 * The pipelined page rate: `total` single-page READs with `inflight` outstanding in all,
 * spread over the connections, driven by one thread (as heca's engine is). Replies are read
 * in bulk and answered with one batch of new requests per read.
 */
static int pipeline(struct raw_conn *c, int nc, uint64_t total, unsigned int inflight,
		    double *pages_per_s)
{
	struct pollfd pfd[RAW_MAX_CONN];
	uint64_t sent = 0, done = 0, next_pg[RAW_MAX_CONN] = {0};
	unsigned int out[RAW_MAX_CONN] = {0}, per;
	uint8_t hdrs[64][HECA_WIRE_HDR];
	double t0 = bench_now();

	if (nc < 1 || nc > RAW_MAX_CONN)
		return -EINVAL;
	per = inflight / (unsigned int)nc;
	int rc = 0;

	if (per < 1)
		per = 1;
	for (int i = 0; i < nc; i++)
		pfd[i] = (struct pollfd){.fd = c[i].fd, .events = POLLIN};
	while (done < total && !rc) {
		for (int i = 0; i < nc && !rc; i++) {
			struct iovec iov[64];
			int k = 0;
			while (out[i] < per && sent < total && k < 64) {
				struct heca_frame f = {.opcode = HECA_OP_READ,
						       .req_id = c[i].next_id++,
						       .segment = RAW_SEGMENT,
						       .page = next_pg[i],
						       .count = 1};
				next_pg[i] = (next_pg[i] + 1) % c[i].seg_pages;
				heca_wire_encode(hdrs[k], &f);
				iov[k] = (struct iovec){hdrs[k], HECA_WIRE_HDR};
				k++;
				out[i]++;
				sent++;
			}
			if (k)
				rc = heca__send_all(c[i].fd, iov, k);
		}
		if (rc)
			break;
		if (poll(pfd, (nfds_t)nc, 10000) <= 0) {
			rc = -ETIMEDOUT;
			break;
		}
		for (int i = 0; i < nc && !rc; i++) {
			ssize_t n;
			if (!(pfd[i].revents & (POLLIN | POLLERR | POLLHUP)))
				continue;
			if (c[i].roff) {
				memmove(c[i].rbuf, c[i].rbuf + c[i].roff, c[i].rlen - c[i].roff);
				c[i].rlen -= c[i].roff;
				c[i].roff = 0;
			}
			n = recv(c[i].fd, c[i].rbuf + c[i].rlen, RAW_RBUF - c[i].rlen,
				 MSG_DONTWAIT);
			if (n == 0) {
				rc = -ECONNRESET;
				break;
			}
			if (n < 0) {
				if (errno != EAGAIN && errno != EINTR)
					rc = -errno;
				continue;
			}
			c[i].rlen += (size_t)n;
			for (;;) {
				struct heca_frame f;
				int d = heca_wire_decode(c[i].rbuf + c[i].roff,
							 c[i].rlen - c[i].roff, &f);
				if (d == -EAGAIN)
					break;
				if (d < 0) {
					rc = d;
					break;
				}
				c[i].roff += (size_t)d;
				if (f.opcode != (HECA_OP_READ | HECA_OP_REPLY) || f.status) {
					rc = f.status ? -f.status : -EPROTO;
					break;
				}
				out[i]--;
				done++;
			}
		}
		if ((done & 4095) < 64)
			bench_progress("raw: pipelined READ", (double)done / (double)total,
				       (double)done / (bench_now() - t0), "pages/s");
	}
	bench_progress_end();
	if (rc) {
		fprintf(stderr, "heca bench raw: pipelined READ: %s\n", heca_strerror(rc));
		return rc;
	}
	*pages_per_s = (double)total / (bench_now() - t0);
	return 0;
}

/* Read the first word of each of pages + warm pages of region, each fault timed into s (us),
 * the warm ones not; returns the sum read. */
static uint64_t touch_pages(uint8_t *region, unsigned int pages, unsigned int warm, double *s,
			    const char *what)
{
	uint64_t sum = 0;

	for (unsigned int i = 0; i < pages + warm; i++) {
		double t0 = bench_now();
		sum += *(volatile uint64_t *)(region + (size_t)i * PG);
		if (i >= warm)
			s[i - warm] = (bench_now() - t0) * 1e6;
		if (i % 256 == 0)
			bench_progress(what, (double)i / (pages + warm), 0, NULL);
	}
	bench_progress_end();
	return sum;
}

/* The local fault floor: a region registered with a userfaultfd in MISSING mode, a handler
 * thread resolving each fault with UFFDIO_COPY from a ready page, no network. */
struct floor_run {
	int uffd, efd, spin;
	uint8_t *src;
	atomic_int stop;
	int err;
};

static void *floor_handler(void *arg)
{
	struct floor_run *fr = arg;
	struct uffd_msg msg[16];

	while (!atomic_load_explicit(&fr->stop, memory_order_relaxed)) {
		ssize_t n;
		if (!fr->spin) {
			struct pollfd p[2] = {{.fd = fr->uffd, .events = POLLIN},
					      {.fd = fr->efd, .events = POLLIN}};
			if (poll(p, 2, -1) < 0 && errno != EINTR) {
				fr->err = -errno;
				return NULL;
			}
			if (p[1].revents)
				break;
		}
		n = read(fr->uffd, msg, sizeof(msg));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			fr->err = -errno;
			return NULL;
		}
		for (size_t i = 0; i < (size_t)n / sizeof(msg[0]); i++) {
			struct uffdio_copy cp;
			if (msg[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			cp = (struct uffdio_copy){.dst = msg[i].arg.pagefault.address &
							 ~(uint64_t)(PG - 1),
						  .src = (uint64_t)(uintptr_t)fr->src,
						  .len = PG};
			if (ioctl(fr->uffd, UFFDIO_COPY, &cp) && errno == EEXIST) {
				struct uffdio_range r = {.start = cp.dst, .len = PG};
				ioctl(fr->uffd, UFFDIO_WAKE, &r);
			}
		}
	}
	return NULL;
}

/* A region of len bytes registered in MISSING mode with a new userfaultfd asking for
 * `features`: *uffd and *region, or a negative errno (said on stderr) and nothing left open. */
static int floor_region(uint64_t features, size_t len, int *uffd, uint8_t **region)
{
	struct uffdio_api api = {.api = UFFD_API, .features = features};
	struct uffdio_register reg;
	int rc;

	*region = MAP_FAILED;
	*uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (*uffd < 0) {
		rc = -errno;
		fprintf(stderr,
			"heca bench raw: userfaultfd: %s (run as root or set "
			"vm.unprivileged_userfaultfd=1)\n",
			strerror(errno));
		return rc;
	}
	if (ioctl(*uffd, UFFDIO_API, &api)) {
		rc = -errno;
		fprintf(stderr, "heca bench raw: UFFDIO_API%s: %s\n",
			features ? " with UFFD_FEATURE_SIGBUS" : "", strerror(errno));
		goto fail;
	}
	*region = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (*region == MAP_FAILED) {
		rc = -errno;
		fprintf(stderr, "heca bench raw: fault floor region: %s\n", strerror(errno));
		goto fail;
	}
	reg = (struct uffdio_register){.range = {.start = (uint64_t)(uintptr_t)*region, .len = len},
				       .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (ioctl(*uffd, UFFDIO_REGISTER, &reg)) {
		rc = -errno;
		fprintf(stderr, "heca bench raw: UFFDIO_REGISTER: %s\n", strerror(errno));
		goto fail;
	}
	return 0;
fail:
	if (*region != MAP_FAILED)
		munmap(*region, len);
	*region = MAP_FAILED;
	close(*uffd);
	*uffd = -1;
	return rc;
}

static int fault_floor(int spin, unsigned int pages, struct bench_lat *out)
{
	struct floor_run fr = {.spin = spin, .uffd = -1, .efd = -1};
	unsigned int warm = pages / 16 + 4;
	size_t len = (size_t)(pages + warm) * PG;
	uint8_t *region;
	double *s = NULL;
	pthread_t t;
	uint64_t sum = 0, one = 1;
	int rc, started = 0;
	const char *what = spin ? "raw: fault floor (spinning)" : "raw: fault floor (poll)";

	rc = floor_region(0, len, &fr.uffd, &region);
	if (rc)
		return rc;
	fr.efd = eventfd(0, EFD_CLOEXEC);
	s = calloc(pages, sizeof(*s));
	fr.src = aligned_alloc(PG, PG);
	if (fr.efd < 0 || !s || !fr.src) {
		rc = -ENOMEM;
		fprintf(stderr, "heca bench raw: fault floor set-up failed\n");
		goto out;
	}
	memset(fr.src, 0x5a, PG);
	if (pthread_create(&t, NULL, floor_handler, &fr)) {
		rc = -EAGAIN;
		goto out;
	}
	started = 1;
	sum = touch_pages(region, pages, warm, s, what);
	if (sum != (uint64_t)(pages + warm) * 0x5a5a5a5a5a5a5a5aull) {
		fprintf(stderr, "heca bench raw: fault floor read wrong data\n");
		rc = -EIO;
	}
out:
	if (started) {
		atomic_store(&fr.stop, 1);
		if (write(fr.efd, &one, sizeof(one)) < 0)
			rc = rc ? rc : -errno;
		pthread_join(t, NULL);
		if (fr.err && !rc) {
			rc = fr.err;
			fprintf(stderr, "heca bench raw: fault handler: %s\n", strerror(-rc));
		}
	}
	if (!rc)
		bench_lat_summary(s, pages, out);
	munmap(region, len);
	free(fr.src);
	free(s);
	if (fr.efd >= 0)
		close(fr.efd);
	close(fr.uffd);
	return rc;
}

/*
 * The fault floor in SIGBUS mode: the region is registered with UFFD_FEATURE_SIGBUS, so a
 * missing page gives the faulting thread SIGBUS instead of putting it to sleep. Its handler
 * installs the page itself, or (handoff) hands the address to a spinning thread through one
 * shared word and spins until that thread installed it; either way
 * no thread sleeps in the kernel. On return the access is retried and finds the page.
 */
static struct {
	int uffd, handoff;
	uint8_t *src, *region;
	size_t len;
	_Atomic uintptr_t slot; /* page address waiting for the spinner, 0 when none */
	atomic_int stop, err;
} floor_sig;

static int floor_install(uintptr_t pg)
{
	struct uffdio_copy cp = {.dst = pg, .src = (uint64_t)(uintptr_t)floor_sig.src, .len = PG};

	if (ioctl(floor_sig.uffd, UFFDIO_COPY, &cp) && errno != EEXIST)
		return -errno;
	return 0;
}

static void floor_sigbus(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr, pg = a & ~(uintptr_t)(PG - 1);
	uintptr_t base = (uintptr_t)floor_sig.region;
	int saved = errno, rc;

	(void)uc;
	if (a < base || a >= base + floor_sig.len) {
		/* Not ours: the default action on return, when the access faults again. */
		struct sigaction dfl = {.sa_handler = SIG_DFL};
		sigaction(sig, &dfl, NULL);
		return;
	}
	if (floor_sig.handoff) {
		atomic_store_explicit(&floor_sig.slot, pg, memory_order_release);
		while (atomic_load_explicit(&floor_sig.slot, memory_order_acquire))
			;
		rc = atomic_load(&floor_sig.err);
	} else {
		rc = floor_install(pg);
	}
	if (rc) {
		/* The retried access must not fault for ever: leave the range to the kernel,
		 * which maps a zero page, and the content check reports the failure. */
		struct uffdio_range r = {.start = (uint64_t)base, .len = floor_sig.len};
		atomic_store(&floor_sig.err, rc);
		ioctl(floor_sig.uffd, UFFDIO_UNREGISTER, &r);
	}
	errno = saved;
}

static void *floor_spinner(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&floor_sig.stop, memory_order_relaxed)) {
		uintptr_t pg = atomic_load_explicit(&floor_sig.slot, memory_order_acquire);
		int rc;
		if (!pg)
			continue;
		rc = floor_install(pg);
		if (rc)
			atomic_store(&floor_sig.err, rc);
		atomic_store_explicit(&floor_sig.slot, 0, memory_order_release);
	}
	return NULL;
}

static int fault_floor_sigbus(int handoff, unsigned int pages, struct bench_lat *out)
{
	struct sigaction sa = {.sa_sigaction = floor_sigbus, .sa_flags = SA_SIGINFO}, old;
	unsigned int warm = pages / 16 + 4;
	size_t len = (size_t)(pages + warm) * PG;
	uint8_t *region;
	double *s = NULL;
	pthread_t t;
	uint64_t sum = 0;
	int rc, started = 0, installed = 0;
	const char *what =
	    handoff ? "raw: fault floor (SIGBUS to spinner)" : "raw: fault floor (SIGBUS)";

	rc = floor_region(UFFD_FEATURE_SIGBUS, len, &floor_sig.uffd, &region);
	if (rc)
		return rc;
	s = calloc(pages, sizeof(*s));
	floor_sig.src = aligned_alloc(PG, PG);
	if (!s || !floor_sig.src) {
		rc = -ENOMEM;
		fprintf(stderr, "heca bench raw: fault floor set-up failed\n");
		goto out;
	}
	memset(floor_sig.src, 0x5a, PG);
	floor_sig.region = region;
	floor_sig.len = len;
	floor_sig.handoff = handoff;
	atomic_store(&floor_sig.slot, 0);
	atomic_store(&floor_sig.stop, 0);
	atomic_store(&floor_sig.err, 0);
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &old)) {
		rc = -errno;
		goto out;
	}
	installed = 1;
	if (handoff) {
		if (pthread_create(&t, NULL, floor_spinner, NULL)) {
			rc = -EAGAIN;
			goto out;
		}
		started = 1;
	}
	sum = touch_pages(region, pages, warm, s, what);
	if (atomic_load(&floor_sig.err)) {
		rc = atomic_load(&floor_sig.err);
		fprintf(stderr, "heca bench raw: SIGBUS fault handler: %s\n", strerror(-rc));
	} else if (sum != (uint64_t)(pages + warm) * 0x5a5a5a5a5a5a5a5aull) {
		fprintf(stderr, "heca bench raw: fault floor read wrong data\n");
		rc = -EIO;
	}
out:
	if (started) {
		atomic_store(&floor_sig.stop, 1);
		pthread_join(t, NULL);
	}
	if (installed)
		sigaction(SIGBUS, &old, NULL);
	if (!rc)
		bench_lat_summary(s, pages, out);
	munmap(region, len);
	free(floor_sig.src);
	floor_sig.src = NULL;
	floor_sig.region = NULL;
	free(s);
	close(floor_sig.uffd);
	return rc;
}

static void lat_rows(struct bench_result *r, const char *what, const struct bench_lat *l)
{
	char fig[128];
	static const char *const name[] = {"p50", "p90", "p99", "mean"};
	double v[] = {l->p50, l->p90, l->p99, l->mean};

	for (int i = 0; i < 4; i++) {
		snprintf(fig, sizeof(fig), "%s %s", what, name[i]);
		bench_fig(r, "raw", fig, "us", NAN, v[i], "");
	}
}

/* Connections a sponsor takes per second: connect, HELLO, its reply, close, one after
 * another for about a second. */
static int accept_rate(const char *addr, int timeout_ms, double *rate)
{
	uint64_t t0 = heca__now_ns(), t;
	unsigned int n = 0;
	uint8_t demander[16];

	do {
		struct raw_conn c = {.fd = -1};
		int rc;

		heca__random(demander, sizeof(demander));
		rc = conn_open(&c, addr, demander, timeout_ms);
		conn_close(&c);
		if (rc) {
			fprintf(stderr, "heca bench raw: connection %u to %s: %s\n", n, addr,
				heca_strerror(rc));
			return rc;
		}
		n++;
		t = heca__now_ns() - t0;
		if (n % 256 == 0)
			bench_progress("raw: connections", (double)t / 1e9, n / (t / 1e9), "conn/s");
	} while (t < 1000000000ull);
	bench_progress_end();
	*rate = n / (t / 1e9);
	return 0;
}

int bench_raw(const struct bench_raw_opts *o, struct bench_result *r)
{
	struct raw_conn c[RAW_MAX_CONN];
	struct bench_lat echo, echo_spin, rd, fl, fl_spin, fl_sig, fl_sig_spin;
	char list[4096], *save = NULL, *a;
	uint8_t demander[16];
	int nc = 0, rc = 0;
	double rate = NAN, conns = NAN;

	for (int i = 0; i < RAW_MAX_CONN; i++)
		c[i] = (struct raw_conn){.fd = -1};
	heca__random(demander, sizeof(demander));
	snprintf(list, sizeof(list), "%s", o->sponsors);
	for (a = strtok_r(list, ",", &save); a && nc < RAW_MAX_CONN;
	     a = strtok_r(NULL, ",", &save)) {
		rc = conn_open(&c[nc], a, demander, o->timeout_ms);
		nc++;
		if (rc) {
			fprintf(stderr, "heca bench raw: sponsor %s: %s\n", a, heca_strerror(rc));
			goto out;
		}
	}
	if (!nc) {
		fprintf(stderr, "heca bench raw: no sponsors\n");
		rc = -EINVAL;
		goto out;
	}
	for (int i = 0; i < nc; i++) {
		/* Half of what is free, so heca's own runs still fit beside it. */
		uint64_t want = o->seg_bytes_max / PG,
			 avail = (c[i].cap_pages - c[i].used_pages) / 2;
		uint64_t pages = HECA_MIN(want, avail);
		if (pages < 16) {
			fprintf(stderr,
				"heca bench raw: sponsor %s has no room (%llu pages free)\n",
				c[i].addr, (unsigned long long)(c[i].cap_pages - c[i].used_pages));
			rc = -ENOSPC;
			goto out;
		}
		rc = fill_segment(&c[i], pages);
		if (rc) {
			fprintf(stderr, "heca bench raw: writing %llu pages to %s: %s\n",
				(unsigned long long)pages, c[i].addr, heca_strerror(rc));
			goto out;
		}
	}
	rc = time_rtt(c, nc, HECA_OP_ECHO, 0, o->samples, &echo, "raw: 4 KiB echo");
	if (!rc)
		rc = time_rtt(c, nc, HECA_OP_ECHO, 1, o->samples, &echo_spin,
			      "raw: 4 KiB echo (spinning)");
	if (!rc)
		rc = time_rtt(c, nc, HECA_OP_READ, 0, o->samples, &rd, "raw: 1-page READ");
	if (!rc)
		rc = pipeline(c, nc, o->pipeline_pages, o->inflight, &rate);
	if (!rc)
		rc = accept_rate(c[0].addr, o->timeout_ms, &conns);
	if (rc)
		goto out;
	rc = fault_floor(0, o->floor_pages, &fl);
	if (!rc)
		rc = fault_floor(1, o->floor_pages, &fl_spin);
	if (!rc)
		rc = fault_floor_sigbus(0, o->floor_pages, &fl_sig);
	if (!rc)
		rc = fault_floor_sigbus(1, o->floor_pages, &fl_sig_spin);
	if (rc)
		goto out;
	lat_rows(r, "4 KiB RTT", &echo);
	lat_rows(r, "4 KiB RTT (spin)", &echo_spin);
	bench_fig(r, "raw", "1-page READ RTT p50", "us", NAN, rd.p50, "");
	bench_fig(r, "raw", "1-page READ RTT p99", "us", NAN, rd.p99, "");
	bench_fig(r, "raw", "pipelined page rate", "pages/s", NAN, rate, "");
	bench_fig(r, "raw", "connections accepted", "conn/s", NAN, conns, "");
	lat_rows(r, "fault floor", &fl);
	lat_rows(r, "fault floor (spin)", &fl_spin);
	lat_rows(r, "fault floor (SIGBUS)", &fl_sig);
	lat_rows(r, "fault floor (SIGBUS to spinner)", &fl_sig_spin);
out:
	for (int i = 0; i < nc; i++)
		conn_close(&c[i]);
	return rc;
}

int bench_raw_pipelined(const char *sponsors, uint64_t pages, double *pages_per_s)
{
	struct raw_conn c[RAW_MAX_CONN];
	char list[4096], *save = NULL, *a;
	uint8_t demander[16];
	int nc = 0, rc = 0;

	*pages_per_s = NAN;
	for (int i = 0; i < RAW_MAX_CONN; i++)
		c[i] = (struct raw_conn){.fd = -1};
	heca__random(demander, sizeof(demander));
	snprintf(list, sizeof(list), "%s", sponsors);
	for (a = strtok_r(list, ",", &save); a && nc < RAW_MAX_CONN;
	     a = strtok_r(NULL, ",", &save)) {
		rc = conn_open(&c[nc], a, demander, 5000);
		nc++;
		if (rc) {
			fprintf(stderr, "heca bench: raw pipelined rate: sponsor %s: %s\n", a,
				heca_strerror(rc));
			goto out;
		}
	}
	if (!nc) {
		rc = -EINVAL;
		goto out;
	}
	for (int i = 0; i < nc; i++) {
		/* A small segment, read round and round: the rate, not the capacity. */
		uint64_t avail = (c[i].cap_pages - c[i].used_pages) / 2;
		rc = fill_segment(&c[i], HECA_MIN((uint64_t)(16 * 1024 * 1024) / PG, avail));
		if (rc) {
			fprintf(stderr, "heca bench: raw pipelined rate: writing to %s: %s\n",
				c[i].addr, heca_strerror(rc));
			goto out;
		}
	}
	rc = pipeline(c, nc, pages, 64, pages_per_s);
out:
	for (int i = 0; i < nc; i++)
		conn_close(&c[i]);
	return rc;
}
