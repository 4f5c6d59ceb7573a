// SPDX-License-Identifier: MIT
/*
 * reap.c - `heca run`'s watch over the processes of its program: one that ends without having
 * freed its pages (killed, crashed, gone by a raw exit_group, an image replaced by exec) has
 * them freed at the sponsors at once, instead of when the sponsors' lease of it ends.
 *
 * Each process that sponsors memory writes its demander id into a directory of heca run's own
 * (HECA_RUN_DIR, mode 0700) before its first page can leave, in a file named PID-START.id, and
 * removes it once it has freed everything itself (preload/preload.c). A thread here learns of
 * each file by inotify and watches its process through a pidfd, so that the end of a process
 * that its own parent reaps is seen too. Only a process's end, known for certain on this host,
 * frees anything: never a connection that closed, which a network cut can do to a process
 * that still lives.
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "auth.h"
#include "cli.h"
#include "net.h"
#include "util.h"
#include "wire.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* For each sponsor's answer: a DROPALL of much memory takes a while. */
#define REAP_TIMEOUT_MS 10000

struct watched {
	pid_t pid;
	unsigned long long start;
	uint8_t id[16];
	int pidfd; /* -1: none could be had; then /proc is asked every half second */
};

struct reaper {
	char dir[PATH_MAX];
	int dfd, ifd, efd;
	pthread_t thread;
	bool started;
	unsigned long long pidns, timens;
	char *sponsors; /* "a,b,c", or NULL: the cluster file's, read when needed */
	char *cluster_file;
	uint8_t cluster[16];
	uint8_t key[HECA_AUTH_KEY_MAX];
	size_t keylen;
	bool verbose;
	struct watched *w;
	size_t n, cap;
};

/* ---- one request to one sponsor ---- */

static int call(int fd, struct heca_frame *req, struct heca_frame *rep, uint8_t *buf, size_t cap)
{
	uint8_t hdr[HECA_WIRE_HDR];
	struct iovec iov[2] = {{hdr, HECA_WIRE_HDR}, {(void *)req->payload, req->payload_len}};
	size_t have = 0;
	int len = -EAGAIN, rc;

	heca_wire_encode(hdr, req);
	rc = heca__send_all(fd, iov, req->payload_len ? 2 : 1);
	if (rc)
		return rc;
	while (len == -EAGAIN) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;
		if (have == cap)
			return -EPROTO;
		rc = poll(&p, 1, REAP_TIMEOUT_MS);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc != 1)
			return -ETIMEDOUT;
		n = read(fd, buf + have, cap - have);
		if (n <= 0)
			return n ? -errno : -ECONNRESET;
		have += (size_t)n;
		len = heca_wire_decode(buf, have, rep);
	}
	if (len < 0)
		return len;
	if (rep->opcode == HECA_OP_ERROR)
		return rep->status ? -rep->status : -EPROTO;
	if (rep->opcode != (req->opcode | HECA_OP_REPLY) || rep->req_id != req->req_id)
		return -EPROTO;
	return rep->status ? -rep->status : 0;
}

/*
 * Free every segment of demander id at the sponsor at addr; *freed gets the pages freed.
 * The connection says HELLO as that demander with the last session there is (0xffffffff):
 * from then on the sponsor refuses whatever the dead process still had on its way there
 * (ESTALE), so no write-back in flight can store a page after the DROPALL.
 */
static int drop_at(struct reaper *r, const char *addr, const uint8_t id[16], uint64_t *freed)
{
	uint8_t hello[HECA_WIRE_HELLO_LEN] = {0}, buf[512], sid[16], snonce[HECA_AUTH_NONCE_LEN];
	uint8_t body[HECA_WIRE_AUTH_LEN], mac2[HECA_AUTH_MAC_LEN];
	struct heca_frame req = {.opcode = HECA_OP_HELLO, .req_id = 1, .payload = hello,
				 .payload_len = sizeof(hello)},
			  rep;
	struct timeval tv = {.tv_sec = REAP_TIMEOUT_MS / 1000};
	uint32_t flags;
	int fd, rc;

	fd = heca__tcp_connect(addr, 2000);
	if (fd < 0)
		return fd;
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	memcpy(hello, r->cluster, 16);
	memcpy(hello + 16, id, 16);
	heca_put32(hello + 32, HECA_CHAN_CONTROL);
	heca_put32(hello + 36, UINT32_MAX);
	rc = call(fd, &req, &rep, buf, sizeof(buf));
	if (rc)
		goto out;
	if (rep.payload_len != HECA_WIRE_HELLO_REPLY_LEN) {
		rc = -EPROTO;
		goto out;
	}
	flags = heca_get32(rep.payload + HECA_HELLO_REPLY_OFF_FLAGS);
	memcpy(sid, rep.payload, 16);
	memcpy(snonce, rep.payload + HECA_HELLO_REPLY_OFF_NONCE, sizeof(snonce));
	if (!!(flags & HECA_HELLO_AUTH) != !!r->keylen) {
		rc = -EACCES; /* no key to prove, or a sponsor that does not ask for it */
		goto out;
	}
	if (r->keylen) {
		req = (struct heca_frame){.opcode = HECA_OP_AUTH, .req_id = 2, .payload = body,
					  .payload_len = sizeof(body)};
		rc = heca__random(body, HECA_AUTH_NONCE_LEN);
		if (!rc)
			rc = heca__auth_mac(r->key, r->keylen, HECA_AUTH_LABEL_DEMANDER, r->cluster,
					    id, sid, snonce, body, body + HECA_AUTH_NONCE_LEN);
		if (!rc)
			rc = call(fd, &req, &rep, buf, sizeof(buf));
		if (!rc && rep.payload_len != HECA_AUTH_MAC_LEN)
			rc = -EPROTO;
		if (!rc)
			rc = heca__auth_mac(r->key, r->keylen, HECA_AUTH_LABEL_SPONSOR, r->cluster,
					    id, sid, snonce, body, mac2);
		if (!rc)
			rc = heca__auth_check(mac2, rep.payload);
		if (rc)
			goto out;
	}
	req = (struct heca_frame){.opcode = HECA_OP_DROPALL, .req_id = 3};
	rc = call(fd, &req, &rep, buf, sizeof(buf));
	if (!rc)
		*freed = rep.page;
out:
	close(fd);
	return rc;
}

/* Have every sponsor free what demander id holds (process pid, which has ended). */
static void drop(struct reaper *r, pid_t pid, const uint8_t id[16], const char *why)
{
	char *list = NULL, *save = NULL, err[256];
	uint64_t total = 0;
	int failed = 0;

	if (r->sponsors)
		list = strdup(r->sponsors);
	else if (r->cluster_file &&
		 heca__cluster_file_read(r->cluster_file, &list, err, sizeof(err)))
		fprintf(stderr, "heca run: %s\n", err);
	if (!list)
		return;
	for (char *a = strtok_r(list, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
		uint64_t freed = 0;
		int rc = drop_at(r, a, id, &freed);
		if (rc) {
			/* That sponsor frees them when its lease ends, as without heca run. */
			if (r->verbose)
				fprintf(stderr,
					"heca run: sponsor %s: cannot free the memory of process "
					"%d: %s\n",
					a, (int)pid, heca_strerror(rc));
			failed++;
		}
		total += freed;
	}
	free(list);
	if (r->verbose)
		fprintf(stderr,
			"heca run: process %d %s without freeing its memory: %llu pages freed at "
			"the sponsors%s\n",
			(int)pid, why, (unsigned long long)total, failed ? " that answered" : "");
}

/* ---- the processes ---- */

/* Read file name of the directory: "PID START PIDNS TIMENS DEMANDER", which must be written
 * by heca run's own user, readable by nobody else, and of a process of this pid and time
 * namespace (else its pid and start time mean nothing here). Returns 0 or -errno. */
static int read_note(struct reaper *r, const char *name, pid_t *pid, unsigned long long *start,
		     uint8_t id[16])
{
	char buf[256], hex[40], want[64];
	unsigned long long pidns, timens;
	int fd = openat(r->dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), npid;
	struct stat st;
	ssize_t n;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 077)) {
		close(fd);
		return -EPERM;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -EINVAL;
	buf[n] = '\0';
	if (sscanf(buf, "%d %llu %llu %llu %39s", &npid, start, &pidns, &timens, hex) != 5 ||
	    npid <= 0 || strlen(hex) != 32 || heca_parse_id(hex, id))
		return -EINVAL;
	snprintf(want, sizeof(want), "%d-%llu.id", npid, *start);
	if (strcmp(name, want))
		return -EINVAL;
	if (pidns != r->pidns || timens != r->timens)
		return -EXDEV;
	*pid = npid;
	return 0;
}

static void note_name(const struct watched *w, char *out, size_t len)
{
	snprintf(out, len, "%d-%llu.id", (int)w->pid, w->start);
}

/* Process w has ended: free what the file still says it held, and the file. */
static void ended(struct reaper *r, size_t i)
{
	struct watched *w = &r->w[i];
	char name[64];
	unsigned long long start;
	uint8_t id[16];
	pid_t pid;

	note_name(w, name, sizeof(name));
	/* No file: the process freed everything itself. A file that names a newer id: an
	 * image that exec'd and ended before we saw its note; both are gone. */
	if (!read_note(r, name, &pid, &start, id)) {
		if (memcmp(id, w->id, 16))
			drop(r, w->pid, w->id, "exec'd");
		drop(r, w->pid, id, "ended");
		unlinkat(r->dfd, name, 0);
	}
	if (w->pidfd >= 0)
		close(w->pidfd);
	r->w[i] = r->w[--r->n];
}

/* Whether the process w watches still lives: its pidfd, or (without one) /proc. */
static bool alive(const struct watched *w)
{
	unsigned long long start;
	struct pollfd p = {.fd = w->pidfd, .events = POLLIN};

	if (w->pidfd >= 0)
		return poll(&p, 1, 0) == 0;
	return !heca__proc_start_time(w->pid, &start) && start == w->start;
}

/* A file came or changed: watch its process, or free what an exec'd image left. */
static void noted(struct reaper *r, const char *name)
{
	struct watched *w = NULL;
	unsigned long long start, now;
	uint8_t id[16];
	pid_t pid;
	size_t i;

	if (read_note(r, name, &pid, &start, id))
		return;
	for (i = 0; i < r->n && !w; i++)
		if (r->w[i].pid == pid && r->w[i].start == start)
			w = &r->w[i];
	if (w) {
		/* Only the process itself rewrites its note, and only a new image of it writes
		 * another id: the old image, and every page it had, is gone. */
		if (memcmp(w->id, id, 16)) {
			drop(r, pid, w->id, "exec'd");
			memcpy(w->id, id, 16);
		}
		return;
	}
	if (r->n == r->cap) {
		size_t ncap = r->cap ? r->cap * 2 : 64;
		struct watched *nw = realloc(r->w, ncap * sizeof(*nw));
		if (!nw)
			return; /* not watched: its sponsors free it when their lease ends */
		r->w = nw;
		r->cap = ncap;
	}
	w = &r->w[r->n++];
	*w = (struct watched){.pid = pid, .start = start};
	memcpy(w->id, id, 16);
	w->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (w->pidfd < 0 && errno != ESRCH) {
		if (r->verbose)
			fprintf(stderr, "heca run: process %d: pidfd_open: %s; asking /proc\n",
				(int)pid, strerror(errno));
		return;
	}
	/* The pidfd is of the process that wrote the note if the pid still has its start
	 * time now; if not, that process has ended (and its pid may be another's). */
	if (w->pidfd < 0 || heca__proc_start_time(pid, &now) || now != start)
		ended(r, r->n - 1);
}

static void scan(struct reaper *r)
{
	int fd = dup(r->dfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	rewinddir(d);
	while ((e = readdir(d)))
		if (strlen(e->d_name) > 3 && !strcmp(e->d_name + strlen(e->d_name) - 3, ".id"))
			noted(r, e->d_name);
	closedir(d);
}

/* Read what inotify has; false if events were lost (then the directory is read again). */
static bool events(struct reaper *r)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool whole = true;

	for (;;) {
		ssize_t n = read(r->ifd, buf, sizeof(buf));
		if (n <= 0)
			return whole;
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			size_t l = ev->len ? strlen(ev->name) : 0;
			if (ev->mask & IN_Q_OVERFLOW)
				whole = false;
			else if (l > 3 && !strcmp(ev->name + l - 3, ".id"))
				noted(r, ev->name);
			p += sizeof(*ev) + ev->len;
		}
	}
}

static void *reaper_main(void *arg)
{
	struct reaper *r = arg;
	struct pollfd *p = NULL;
	size_t pcap = 0;
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	scan(r);
	for (;;) {
		size_t np = 2;
		bool proc = false, stop;
		if (pcap < r->n + 2) {
			struct pollfd *q = realloc(p, (r->n + 64) * sizeof(*q));
			if (q) {
				p = q;
				pcap = r->n + 64;
			}
		}
		if (!p)
			break;
		p[0] = (struct pollfd){.fd = r->efd, .events = POLLIN};
		p[1] = (struct pollfd){.fd = r->ifd, .events = POLLIN};
		for (size_t i = 0; i < r->n && np < pcap; i++) {
			proc |= r->w[i].pidfd < 0;
			p[np++] = (struct pollfd){.fd = r->w[i].pidfd, .events = POLLIN};
		}
		if (poll(p, (nfds_t)np, proc ? 500 : -1) < 0 && errno != EINTR)
			break;
		stop = p[0].revents != 0;
		/* Notes first: an exec's new note is written before the process can end. */
		if (!events(r))
			scan(r);
		for (size_t i = r->n; i-- > 0;)
			if (!alive(&r->w[i]))
				ended(r, i);
		if (stop)
			break;
	}
	free(p);
	/* The program has ended: whatever is still noted belongs to processes gone by now. */
	events(r);
	scan(r);
	for (size_t i = r->n; i-- > 0;)
		if (!alive(&r->w[i]))
			ended(r, i);
	return NULL;
}

int cli_reaper_open(struct reaper **out)
{
	struct reaper *r = calloc(1, sizeof(*r));
	const char *v, *base = getuid() == 0 ? "/run/heca" : getenv("TMPDIR");
	char why[256];
	int rc;

	if (!r)
		return -ENOMEM;
	r->dfd = r->ifd = r->efd = -1;
	if (getuid() == 0)
		mkdir("/run/heca", 0755);
	snprintf(r->dir, sizeof(r->dir), "%s/heca-run.XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(r->dir)) {
		rc = -errno;
		fprintf(stderr, "heca run: %s: %s\n", r->dir, strerror(-rc));
		*r->dir = '\0';
		goto fail;
	}
	r->dfd = open(r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	r->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	r->efd = eventfd(0, EFD_CLOEXEC);
	if (r->dfd < 0 || r->ifd < 0 || r->efd < 0 ||
	    inotify_add_watch(r->ifd, r->dir, IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
		rc = -errno;
		fprintf(stderr, "heca run: watching %s: %s\n", r->dir, strerror(-rc));
		goto fail;
	}
	r->pidns = heca__proc_ns_ino("pid");
	r->timens = heca__proc_ns_ino("time");
	if ((v = getenv("HECA_SPONSORS")) && *v)
		r->sponsors = strdup(v);
	else if ((v = getenv("HECA_CLUSTER")) && *v)
		r->cluster_file = strdup(v);
	if ((v = getenv("HECA_CLUSTER_ID")) && *v)
		heca_parse_id(v, r->cluster);
	if ((v = getenv("HECA_KEY_FILE")) && *v) {
		rc = heca__auth_load_key(v, r->key, &r->keylen, why, sizeof(why));
		if (rc) {
			fprintf(stderr, "heca run: %s\n", why);
			goto fail;
		}
	}
	r->verbose = (v = getenv("HECA_VERBOSE")) && *v;
	setenv("HECA_RUN_DIR", r->dir, 1);
	*out = r;
	return 0;
fail:
	cli_reaper_close(r);
	return rc;
}

int cli_reaper_start(struct reaper *r)
{
	struct rlimit rl;

	/* A pidfd for each process of the program: as many as heca run may have (raised
	 * after the program was started, which keeps the limits it was given). */
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (pthread_create(&r->thread, NULL, reaper_main, r))
		return -EAGAIN;
	r->started = true;
	return 0;
}

void cli_reaper_close(struct reaper *r)
{
	uint64_t one = 1;

	if (!r)
		return;
	if (r->started) {
		if (write(r->efd, &one, sizeof(one)) != sizeof(one))
			perror("heca run: eventfd");
		pthread_join(r->thread, NULL);
	}
	for (size_t i = 0; i < r->n; i++)
		if (r->w[i].pidfd >= 0)
			close(r->w[i].pidfd);
	if (r->dfd >= 0) {
		/* What is left is of processes that outlived the program's end, if any: their
		 * sponsors free it when their lease ends. */
		int fd = dup(r->dfd);
		DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
		struct dirent *e;
		while (d && (e = readdir(d)))
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
				unlinkat(r->dfd, e->d_name, 0);
		if (d)
			closedir(d);
		else if (fd >= 0)
			close(fd);
		close(r->dfd);
	}
	if (*r->dir)
		rmdir(r->dir);
	if (r->ifd >= 0)
		close(r->ifd);
	if (r->efd >= 0)
		close(r->efd);
	heca__auth_wipe(r->key, sizeof(r->key));
	free(r->sponsors);
	free(r->cluster_file);
	free(r->w);
	free(r);
}
