// SPDX-License-Identifier: MIT
/*
 * control.c - a running demander's control socket (a Unix socket, one text command per
 * connection): `heca status`, `heca add` and `heca drain` talk to a process through it.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "heca_int.h"
#include "segops.h"

struct out {
	char *buf;
	size_t len, cap;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (o->len + (size_t)n < o->cap) {
			o->len += (size_t)n;
			return;
		}
		char *nb = realloc(o->buf, o->cap * 2 + (size_t)n);
		if (!nb)
			return;
		o->buf = nb;
		o->cap = o->cap * 2 + (size_t)n;
	}
}

/* The reply to `status`: key=value lines, then one line per sponsor. Stable for scripts. */
static void status(struct heca *h, struct out *o)
{
	struct heca_stats st;
	struct heca_cluster_stats cs;
	struct heca_sponsor_info info[HECA_PLACE_MAX];
	int n;

	heca_get_stats(h, &st);
	put(o, "pid=%d\n", getpid());
	put(o, "budget_pages=%llu\nresident_pages=%llu\npinned_pages=%llu\nsegments=%llu\n",
	    (unsigned long long)st.budget_pages, (unsigned long long)st.resident_pages,
	    (unsigned long long)st.pinned_pages, (unsigned long long)st.segments);
	put(o, "faults_read=%llu\nfaults_write=%llu\nfaults_wp=%llu\nfaults_zero=%llu\n",
	    (unsigned long long)st.faults_read, (unsigned long long)st.faults_write,
	    (unsigned long long)st.faults_wp, (unsigned long long)st.faults_zero);
	put(o, "pages_fetched=%llu\npages_prefetched=%llu\npages_written_back=%llu\n",
	    (unsigned long long)st.pages_fetched, (unsigned long long)st.pages_prefetched,
	    (unsigned long long)st.pages_written_back);
	put(o, "pages_dropped_clean=%llu\npages_dropped_zero=%llu\npages_lost=%llu\n",
	    (unsigned long long)st.pages_dropped_clean, (unsigned long long)st.pages_dropped_zero,
	    (unsigned long long)st.pages_lost);
	put(o, "writeback_errors=%llu\nbytes_sent=%llu\nbytes_received=%llu\n",
	    (unsigned long long)st.writeback_errors, (unsigned long long)st.bytes_sent,
	    (unsigned long long)st.bytes_received);
	put(o, "pages_repaired=%llu\npages_unzappable=%llu\npages_zapped_outside=%llu\n",
	    (unsigned long long)st.pages_repaired, (unsigned long long)st.pages_unzappable,
	    (unsigned long long)st.pages_zapped_outside);
	put(o, "reads_queued=%llu\n", (unsigned long long)st.reads_queued);
	put(o, "faults_stash_hit=%llu\npages_aged=%llu\nstash_pages=%llu\n",
	    (unsigned long long)st.faults_stash_hit, (unsigned long long)st.pages_aged,
	    (unsigned long long)st.stash_pages);
	put(o, "lat_p50_ns=%llu\nlat_p90_ns=%llu\nlat_p99_ns=%llu\nlat_count=%llu\n",
	    (unsigned long long)st.lat_p50_ns, (unsigned long long)st.lat_p90_ns,
	    (unsigned long long)st.lat_p99_ns, (unsigned long long)st.lat_count);
	if (heca_get_cluster_stats(h, &cs) == 0) {
		put(o, "replicas=%u\nstripes=%llu\nunder_replicated=%llu\nlost_stripes=%llu\n",
		    cs.replicas, (unsigned long long)cs.stripes,
		    (unsigned long long)cs.under_replicated, (unsigned long long)cs.lost);
		put(o, "moving=%llu\ncopied_stripes=%llu\ncopied_pages=%llu\n",
		    (unsigned long long)cs.moving, (unsigned long long)cs.copied_stripes,
		    (unsigned long long)cs.copied_pages);
	}
	n = heca_get_sponsors(h, info, HECA_PLACE_MAX);
	for (int i = 0; i < n && i < HECA_PLACE_MAX; i++) {
		char id[33];
		for (int k = 0; k < 16; k++)
			snprintf(id + 2 * k, 3, "%02x", info[i].id[k]);
		put(o, "sponsor %s %s %s%s capacity_pages=%llu used_pages=%llu stripes=%llu\n", id,
		    info[i].addr, info[i].up ? "up" : "down", info[i].draining ? ",draining" : "",
		    (unsigned long long)info[i].capacity_pages,
		    (unsigned long long)info[i].used_pages, (unsigned long long)info[i].stripes);
	}
}

static void serve(struct heca *h, int fd)
{
	char cmd[512];
	struct out o = {.cap = 4096};
	ssize_t n = 0;
	struct pollfd p = {.fd = fd, .events = POLLIN};

	o.buf = malloc(o.cap);
	if (!o.buf)
		return;
	o.buf[0] = '\0';
	/* One short line, which may come in pieces; a client that has not finished it within
	 * a second is dropped. */
	while ((size_t)n < sizeof(cmd) - 1 && !memchr(cmd, '\n', (size_t)n) &&
	       poll(&p, 1, 1000) == 1) {
		ssize_t r = read(fd, cmd + n, sizeof(cmd) - 1 - (size_t)n);
		if (r <= 0)
			break;
		n += r;
	}
	if (n <= 0 || !memchr(cmd, '\n', (size_t)n)) {
		free(o.buf);
		return;
	}
	cmd[n] = '\0';
	cmd[strcspn(cmd, "\r\n")] = '\0';
	if (!strcmp(cmd, "status")) {
		status(h, &o);
	} else if (!strncmp(cmd, "add ", 4) || !strncmp(cmd, "drain ", 6) ||
		   !strcmp(cmd, "reload")) {
		int rc = cmd[0] == 'a'	 ? heca_add_sponsor(h, cmd + 4)
			 : cmd[0] == 'd' ? heca_drain_sponsor(h, cmd + 6)
					 : heca_reload(h);
		if (rc < 0)
			put(&o, "error %d %s\n", rc, heca_strerror(rc));
		else
			put(&o, "ok %d\n", rc);
	} else {
		put(&o, "error %d unknown command (status, add HOST:PORT, drain SPONSOR, reload)\n",
		    -EINVAL);
	}
	for (size_t off = 0; off < o.len;) {
		ssize_t w = write(fd, o.buf + off, o.len - off);
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	free(o.buf);
}

static void *control_main(void *arg)
{
	struct heca *h = arg;
	sigset_t all;

	heca__internal = 1;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	while (!__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE)) {
		struct pollfd p = {.fd = h->ctl_fd, .events = POLLIN};
		int fd;
		if (poll(&p, 1, 100) != 1)
			continue;
		fd = accept4(h->ctl_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		serve(h, fd);
		close(fd);
	}
	return NULL;
}

int heca__control_start(struct heca *h, const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	char dir[sizeof(a.sun_path)];
	int rc;

	if (strlen(path) >= sizeof(a.sun_path)) {
		heca__set_error("control socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	snprintf(dir, sizeof(dir), "%s", path);
	if (strrchr(dir, '/')) {
		*strrchr(dir, '/') = '\0';
		if (*dir)
			mkdir(dir, 0700);
	}
	h->ctl_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (h->ctl_fd < 0)
		return -errno;
	unlink(path);
	if (bind(h->ctl_fd, (struct sockaddr *)&a, sizeof(a)) || listen(h->ctl_fd, 8)) {
		rc = -errno;
		heca__set_error("control socket %s: %s", path, strerror(-rc));
		close(h->ctl_fd);
		h->ctl_fd = -1;
		return rc;
	}
	chmod(path, 0600);
	snprintf(h->ctl_path, sizeof(h->ctl_path), "%s", path);
	rc = -pthread_create(&h->ctl_thread, NULL, control_main, h);
	if (rc) {
		close(h->ctl_fd);
		h->ctl_fd = -1;
		unlink(path);
		return rc;
	}
	h->ctl_started = true;
	return 0;
}

void heca__control_stop(struct heca *h)
{
	if (h->ctl_started)
		pthread_join(h->ctl_thread, NULL);
	h->ctl_started = false;
	if (h->ctl_fd >= 0) {
		close(h->ctl_fd);
		unlink(h->ctl_path);
	}
	h->ctl_fd = -1;
}
