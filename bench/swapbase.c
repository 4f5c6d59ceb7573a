// SPDX-License-Identifier: MIT
/*
 * swapbase.c - the kernel-swap baseline: a hot-added zram device (or a swap file) as swap and
 * a memory cgroup that limits a forked child; every resource recorded so a crash can be undone.
 */
#include "swapbase.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ZRAM_CONTROL  "/sys/class/zram-control"
#define CG_PREFIX     "heca-bench-"
#define SWAP_PRIO_MIN 100
/* How long teardown waits for a killed cgroup member to leave before giving up on rmdir. */
#define CG_RMDIR_TRIES	  500
#define CG_RMDIR_SLEEP_NS 10000000L

static const int sb_signals[] = {SIGINT, SIGTERM, SIGHUP};
#define SB_NSIG (sizeof(sb_signals) / sizeof(sb_signals[0]))

/* The set-up swapbase of this process, for the signal handlers and the atexit hook. */
static struct swapbase *volatile g_active;
static struct sigaction g_old_act[SB_NSIG];
static volatile sig_atomic_t g_installed[SB_NSIG];
static bool g_atexit_done;

/* The child's result, filled by swapbase_phase() from inside fn. */
static struct swapbase_result g_child_result;

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t len, const char *fmt,
							  ...)
{
	va_list ap;

	if (!err || len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

/* Copy a string; -ENAMETOOLONG (dst left empty) if it does not fit. */
static int copy_str(char *dst, size_t len, const char *src)
{
	size_t n = strnlen(src, len);

	if (n >= len) {
		dst[0] = '\0';
		return -ENAMETOOLONG;
	}
	memcpy(dst, src, n + 1);
	return 0;
}

/* --- async-signal-safe helpers: teardown runs from signal handlers ----------------------- */

struct sbuf {
	char b[1536];
	size_t n;
};

static void sb_puts(struct sbuf *s, const char *str)
{
	while (*str && s->n + 1 < sizeof(s->b))
		s->b[s->n++] = *str++;
	s->b[s->n] = '\0';
}

static void sb_putu(struct sbuf *s, unsigned long long v)
{
	char tmp[24];
	int i = 0;

	do
		tmp[i++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (i > 0 && s->n + 1 < sizeof(s->b))
		s->b[s->n++] = tmp[--i];
	s->b[s->n] = '\0';
}

static void sb_puti(struct sbuf *s, long long v)
{
	if (v < 0) {
		sb_puts(s, "-");
		v = -v;
	}
	sb_putu(s, (unsigned long long)v);
}

static void sb_path(struct sbuf *s, const char *dir, const char *file)
{
	s->n = 0;
	s->b[0] = '\0';
	sb_puts(s, dir);
	sb_puts(s, "/");
	sb_puts(s, file);
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Write a short string to a sysfs/cgroupfs file; the kernel's refusal comes back as -errno. */
static int write_str(const char *path, const char *str)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), rc;

	if (fd < 0)
		return -errno;
	rc = write_all(fd, str, strlen(str));
	close(fd);
	return rc;
}

static ssize_t read_str(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n, total = 0;

	if (fd < 0)
		return -errno;
	while ((size_t)total + 1 < len) {
		n = read(fd, buf + total, len - 1 - (size_t)total);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			total = -errno;
			break;
		}
		if (n == 0)
			break;
		total += n;
	}
	close(fd);
	if (total >= 0)
		buf[total] = '\0';
	return total;
}

static void sleep_ns(long ns)
{
	struct timespec ts = {0, ns};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Rewrite the state file from *sb (tmp + rename, so a crash never leaves half a file), or
 * remove it when nothing of ours is left. */
static void state_save(const struct swapbase *sb)
{
	struct sbuf s = {.n = 0};
	int fd;

	if (sb->zram_id < 0 && !sb->swap_on && !sb->file_created && !sb->node_created &&
	    !sb->cg_version && !sb->cg_subtree_enabled) {
		unlink(SWAPBASE_STATE_FILE);
		return;
	}
	sb_puts(&s, "heca-swapbase 1\nowner ");
	sb_puti(&s, sb->owner);
	sb_puts(&s, " ");
	sb_putu(&s, sb->owner_start);
	sb_puts(&s, "\nswapbytes ");
	sb_putu(&s, sb->swap_bytes);
	sb_puts(&s, "\nzram ");
	sb_puti(&s, sb->zram_id);
	sb_puts(&s, "\nswapon ");
	sb_puti(&s, sb->swap_on);
	sb_puts(&s, "\nfile ");
	sb_puti(&s, sb->file_created);
	sb_puts(&s, "\nnode ");
	sb_puti(&s, sb->node_created);
	sb_puts(&s, "\nchild ");
	sb_puti(&s, sb->child);
	sb_puts(&s, "\ncgversion ");
	sb_puti(&s, sb->cg_version);
	sb_puts(&s, "\nsubtree ");
	sb_puti(&s, sb->cg_subtree_enabled);
	/* Paths last and one per line: they may contain spaces. */
	sb_puts(&s, "\nswapdev ");
	sb_puts(&s, sb->swap_dev);
	sb_puts(&s, "\ncgdir ");
	sb_puts(&s, sb->cg_dir);
	sb_puts(&s, "\ncgparent ");
	sb_puts(&s, sb->cg_parent);
	sb_puts(&s, "\nend\n");

	fd = open(SWAPBASE_STATE_FILE ".tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (write_all(fd, s.b, s.n) == 0 && fsync(fd) == 0) {
		close(fd);
		rename(SWAPBASE_STATE_FILE ".tmp", SWAPBASE_STATE_FILE);
		return;
	}
	close(fd);
	unlink(SWAPBASE_STATE_FILE ".tmp");
}

/* SIGKILL every process in the cgroup; returns how many were listed. */
static int cg_kill_all(const char *dir)
{
	struct sbuf path;
	char buf[4096];
	ssize_t n;
	int count = 0;
	long pid = 0;
	bool in = false;

	sb_path(&path, dir, "cgroup.procs");
	n = read_str(path.b, buf, sizeof(buf));
	for (ssize_t i = 0; i < n; i++) {
		if (buf[i] >= '0' && buf[i] <= '9') {
			pid = pid * 10 + (buf[i] - '0');
			in = true;
		} else if (in) {
			if (pid > 1 && pid != getpid())
				kill((pid_t)pid, SIGKILL);
			count++;
			pid = 0;
			in = false;
		}
	}
	return count;
}

static void restore_signals(void)
{
	for (size_t i = 0; i < SB_NSIG; i++) {
		if (g_installed[i]) {
			sigaction(sb_signals[i], &g_old_act[i], NULL);
			g_installed[i] = 0;
		}
	}
}

/* Undo in the reverse order of setup; each step's flag is cleared only once it is undone, so
 * a failed step is retried by a later call and stays recorded. Returns 0 or the first -errno. */
static int do_teardown(struct swapbase *sb)
{
	struct sbuf p;
	int rc = 0, e;

	if (sb->child > 0) {
		int st;
		kill(sb->child, SIGKILL);
		while (waitpid(sb->child, &st, 0) < 0 && errno == EINTR)
			;
		sb->child = 0;
		state_save(sb);
	}
	if (sb->cg_version) {
		/* A cgroup with members cannot be removed; an interrupted run may have left its
		 * child there (it is not ours to wait for after a crash), so kill and retry. */
		for (int i = 0; i < CG_RMDIR_TRIES; i++) {
			if (rmdir(sb->cg_dir) == 0 || errno == ENOENT) {
				sb->cg_version = 0;
				break;
			}
			e = -errno;
			if (e != -EBUSY) {
				rc = rc ? rc : e;
				break;
			}
			cg_kill_all(sb->cg_dir);
			sleep_ns(CG_RMDIR_SLEEP_NS);
		}
		if (sb->cg_version && !rc)
			rc = -EBUSY;
		state_save(sb);
	}
	if (sb->cg_subtree_enabled && !sb->cg_version) {
		sb_path(&p, sb->cg_parent, "cgroup.subtree_control");
		e = write_str(p.b, "-memory");
		if (e == 0 || e == -ENOENT)
			sb->cg_subtree_enabled = 0;
		else
			rc = rc ? rc : e;
		state_save(sb);
	}
	if (sb->swap_on) {
		/* EINVAL: not (or no longer) a swap area, e.g. swapon never succeeded. */
		if (swapoff(sb->swap_dev) == 0 || errno == EINVAL || errno == ENOENT)
			sb->swap_on = 0;
		else
			rc = rc ? rc : -errno;
		state_save(sb);
	}
	if (sb->zram_id >= 0 && !sb->swap_on) {
		struct sbuf id = {.n = 0};
		char dir[64];

		sb_puti(&id, sb->zram_id);
		memcpy(dir, "/sys/block/zram", 16);
		memcpy(dir + 15, id.b, id.n + 1);
		sb_path(&p, dir, "reset");
		/* The block device may still be held for a moment after swapoff. */
		for (int i = 0; i < 100; i++) {
			e = write_str(p.b, "1");
			if (e != -EBUSY)
				break;
			sleep_ns(CG_RMDIR_SLEEP_NS);
		}
		if (e == 0 || e == -ENOENT) {
			for (int i = 0; i < 100; i++) {
				e = write_str(ZRAM_CONTROL "/hot_remove", id.b);
				if (e != -EBUSY)
					break;
				sleep_ns(CG_RMDIR_SLEEP_NS);
			}
		}
		if (e == 0 || e == -ENODEV || e == -ENOENT)
			sb->zram_id = -1;
		else
			rc = rc ? rc : e;
		state_save(sb);
	}
	if (sb->node_created && !sb->swap_on) {
		if (unlink(sb->swap_dev) == 0 || errno == ENOENT)
			sb->node_created = 0;
		else
			rc = rc ? rc : -errno;
		state_save(sb);
	}
	if (sb->file_created && !sb->swap_on) {
		if (unlink(sb->swap_dev) == 0 || errno == ENOENT)
			sb->file_created = 0;
		else
			rc = rc ? rc : -errno;
		state_save(sb);
	}
	sb->active = 0;
	state_save(sb); /* removes the file when all is undone */
	if (g_active == sb) {
		g_active = NULL;
		restore_signals();
	}
	return rc;
}

static void block_signals(sigset_t *old)
{
	sigset_t set;

	sigemptyset(&set);
	for (size_t i = 0; i < SB_NSIG; i++)
		sigaddset(&set, sb_signals[i]);
	sigprocmask(SIG_BLOCK, &set, old);
}

void swapbase_teardown(struct swapbase *sb)
{
	sigset_t old;

	if (!sb)
		return;
	/* A signal arriving mid-teardown must not start a second one. */
	block_signals(&old);
	if (sb->owner == getpid())
		do_teardown(sb);
	sigprocmask(SIG_SETMASK, &old, NULL);
}

static void on_signal(int sig)
{
	int saved = errno;
	struct swapbase *sb = g_active;

	if (sb && sb->owner == getpid())
		do_teardown(sb);
	restore_signals();
	/* Blocked until we return, then delivered with the disposition the program had. */
	raise(sig);
	errno = saved;
}

static void on_exit_hook(void)
{
	struct swapbase *sb = g_active;

	if (sb && sb->owner == getpid())
		swapbase_teardown(sb);
}

static void install_signals(struct swapbase *sb)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigfillset(&sa.sa_mask);
	for (size_t i = 0; i < SB_NSIG; i++) {
		struct sigaction old;
		if (g_installed[i] || sigaction(sb_signals[i], NULL, &old) < 0)
			continue;
		/* A signal the program ignores (nohup) must not end the run either. */
		if (old.sa_handler == SIG_IGN)
			continue;
		g_old_act[i] = old;
		if (sigaction(sb_signals[i], &sa, NULL) == 0)
			g_installed[i] = 1;
	}
	if (!g_atexit_done && atexit(on_exit_hook) == 0)
		g_atexit_done = true;
	g_active = sb;
}

/* --- setup --------------------------------------------------------------------------------- */

static int read_u64_file(const char *path, uint64_t *v)
{
	char buf[64];
	ssize_t n = read_str(path, buf, sizeof(buf));

	if (n < 0)
		return (int)n;
	if (!strncmp(buf, "max", 3)) {
		*v = UINT64_MAX;
		return 0;
	}
	*v = strtoull(buf, NULL, 10);
	return 0;
}

/* "key value" line of a flat-keyed file such as memory.stat or memory.events. */
static int read_key_u64(const char *path, const char *key, uint64_t *v)
{
	char buf[8192], *line;
	size_t klen = strlen(key);
	ssize_t n = read_str(path, buf, sizeof(buf));

	if (n < 0)
		return (int)n;
	for (line = buf; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
		if (!strncmp(line, key, klen) && line[klen] == ' ') {
			*v = strtoull(line + klen + 1, NULL, 10);
			return 0;
		}
	}
	return -ENOENT;
}

/* Start time of a process in clock ticks since boot, to tell it from a later one with the
 * same pid. 0 if it does not exist. */
static uint64_t proc_start_time(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long start = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (read_str(path, buf, sizeof(buf)) <= 0)
		return 0;
	/* The command name may contain spaces and parentheses; fields resume after the last ')'. */
	p = strrchr(buf, ')');
	if (!p)
		return 0;
	/* field 22 (starttime) is the 20th after the ')' */
	if (sscanf(p + 2,
		   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d "
		   "%*d %llu",
		   &start) != 1)
		return 0;
	return start;
}

/* The highest priority among the swap areas in use, or INT32_MIN if there are none. */
static int max_swap_prio(void)
{
	char line[512];
	int max = INT32_MIN;
	FILE *f = fopen("/proc/swaps", "re");

	if (!f)
		return max;
	while (fgets(line, sizeof(line), f)) {
		char name[256], type[32];
		long long size, used;
		int prio;
		if (sscanf(line, "%255s %31s %lld %lld %d", name, type, &size, &used, &prio) == 5 &&
		    prio > max)
			max = prio;
	}
	fclose(f);
	return max;
}

/* Write a version-1 swap header ("SWAPSPACE2") so no mkswap binary is needed. */
static int write_swap_header(const char *path, uint64_t bytes, char *err, size_t errlen)
{
	long pg = sysconf(_SC_PAGESIZE);
	unsigned char *h;
	uint32_t v;
	uint64_t pages = bytes / (uint64_t)pg;
	int fd, rc = 0;

	if (pages < 10 || pages - 1 > UINT32_MAX) {
		set_err(err, errlen, "swap size %llu bytes is out of range",
			(unsigned long long)bytes);
		return -EINVAL;
	}
	h = calloc(1, (size_t)pg);
	if (!h)
		return -ENOMEM;
	v = 1;
	memcpy(h + 1024, &v, 4); /* version */
	v = (uint32_t)(pages - 1);
	memcpy(h + 1028, &v, 4); /* last_page */
	/* nr_badpages stays 0; a random v4 UUID so blkid and swapon -s show something sane. */
	if (getrandom(h + 1036, 16, 0) != 16)
		memset(h + 1036, 0x5a, 16);
	h[1036 + 6] = (unsigned char)((h[1036 + 6] & 0x0f) | 0x40);
	h[1036 + 8] = (unsigned char)((h[1036 + 8] & 0x3f) | 0x80);
	memcpy(h + 1052, "heca-bench", 10); /* volume label */
	memcpy(h + pg - 10, "SWAPSPACE2", 10);

	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		set_err(err, errlen, "cannot open %s: %s", path, strerror(-rc));
		goto out;
	}
	if (pwrite(fd, h, (size_t)pg, 0) != pg || fsync(fd) < 0) {
		rc = errno ? -errno : -EIO;
		set_err(err, errlen, "cannot write the swap header to %s: %s", path, strerror(-rc));
	}
	close(fd);
out:
	free(h);
	return rc;
}

static int do_swapon(struct swapbase *sb, char *err, size_t errlen)
{
	int prio = max_swap_prio();
	int flags;

	/* Ours must be used before any swap the machine already has. */
	prio = prio == INT32_MIN || prio < SWAP_PRIO_MIN ? SWAP_PRIO_MIN : prio + 1;
	if (prio > SWAP_FLAG_PRIO_MASK)
		prio = SWAP_FLAG_PRIO_MASK;
	flags = SWAP_FLAG_PREFER | ((prio << SWAP_FLAG_PRIO_SHIFT) & SWAP_FLAG_PRIO_MASK);
	sb->swap_on = 1;
	state_save(sb);
	if (swapon(sb->swap_dev, flags) < 0) {
		int rc = -errno;
		sb->swap_on = 0;
		state_save(sb);
		set_err(err, errlen, "swapon %s: %s", sb->swap_dev, strerror(-rc));
		return rc;
	}
	return 0;
}

static int setup_zram(struct swapbase *sb, char *err, size_t errlen)
{
	char path[128], buf[64], dev[32];
	uint64_t disksize = 0;
	struct stat st;
	ssize_t n;
	int rc, id;

	if (access(ZRAM_CONTROL "/hot_add", R_OK) != 0) {
		set_err(err, errlen,
			"no zram here (%s/hot_add missing): load the zram module or pass a swap "
			"file",
			ZRAM_CONTROL);
		return -ENODEV;
	}
	/* Reading hot_add creates a new device and tells its number. */
	n = read_str(ZRAM_CONTROL "/hot_add", buf, sizeof(buf));
	if (n <= 0) {
		rc = n < 0 ? (int)n : -EIO;
		set_err(err, errlen, "zram hot_add: %s", strerror(-rc));
		return rc == -ENOENT ? -ENODEV : rc;
	}
	id = atoi(buf);
	sb->zram_id = id;
	state_save(sb);

	/* lz4 is the usual swap choice; random keys hardly compress with anything anyway. */
	snprintf(path, sizeof(path), "/sys/block/zram%d/comp_algorithm", id);
	(void)write_str(path, "lz4");
	snprintf(path, sizeof(path), "/sys/block/zram%d/disksize", id);
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)sb->swap_bytes);
	rc = write_str(path, buf);
	if (rc < 0) {
		set_err(err, errlen, "cannot set zram%d disksize to %s: %s", id, buf,
			strerror(-rc));
		return rc;
	}
	if (read_u64_file(path, &disksize) == 0 && disksize > 0)
		sb->swap_bytes = disksize;

	snprintf(sb->swap_dev, sizeof(sb->swap_dev), "/dev/zram%d", id);
	if (stat(sb->swap_dev, &st) < 0 || !S_ISBLK(st.st_mode)) {
		/* No devtmpfs/udev node: make our own from the device number. */
		unsigned maj, min;
		snprintf(path, sizeof(path), "/sys/block/zram%d/dev", id);
		if (read_str(path, dev, sizeof(dev)) <= 0 ||
		    sscanf(dev, "%u:%u", &maj, &min) != 2) {
			set_err(err, errlen, "no /dev/zram%d and no device number for it", id);
			return -ENODEV;
		}
		snprintf(sb->swap_dev, sizeof(sb->swap_dev), "/run/heca-zram%d", id);
		if (mknod(sb->swap_dev, S_IFBLK | 0600, makedev(maj, min)) < 0) {
			rc = -errno;
			set_err(err, errlen, "mknod %s: %s", sb->swap_dev, strerror(-rc));
			return rc;
		}
		sb->node_created = 1;
		state_save(sb);
	}
	rc = write_swap_header(sb->swap_dev, sb->swap_bytes, err, errlen);
	if (rc < 0)
		return rc;
	return do_swapon(sb, err, errlen);
}

static int setup_file(struct swapbase *sb, const char *file, char *err, size_t errlen)
{
	int fd, rc;
	char *real;

	fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		set_err(err, errlen,
			rc == -EEXIST ? "swap file %s exists; refusing to overwrite it"
				      : "cannot create swap file %s: %s",
			file, strerror(-rc));
		return rc;
	}
	/* swapoff must name the same file later, whatever the working directory is then. */
	real = realpath(file, NULL);
	snprintf(sb->swap_dev, sizeof(sb->swap_dev), "%s", real ? real : file);
	free(real);
	sb->file_created = 1;
	state_save(sb);

	/* swapon refuses files with holes; fallocate gives real extents without writing. */
	rc = posix_fallocate(fd, 0, (off_t)sb->swap_bytes);
	if (rc == EOPNOTSUPP || rc == EINVAL) {
		static const char zeros[1 << 16];
		rc = 0;
		for (uint64_t off = 0; off < sb->swap_bytes && !rc; off += sizeof(zeros)) {
			size_t len = sb->swap_bytes - off < sizeof(zeros)
					 ? (size_t)(sb->swap_bytes - off)
					 : sizeof(zeros);
			rc = write_all(fd, zeros, len) < 0 ? errno : 0;
		}
	}
	if (rc == 0 && fsync(fd) < 0)
		rc = errno;
	close(fd);
	if (rc) {
		set_err(err, errlen, "cannot allocate %llu bytes for %s: %s",
			(unsigned long long)sb->swap_bytes, sb->swap_dev, strerror(rc));
		return -rc;
	}
	rc = write_swap_header(sb->swap_dev, sb->swap_bytes, err, errlen);
	if (rc < 0)
		return rc;
	return do_swapon(sb, err, errlen);
}

static bool has_word(const char *list, const char *word, char sep)
{
	size_t wl = strlen(word);
	const char *p = list;

	while ((p = strstr(p, word)) != NULL) {
		bool start = p == list || p[-1] == sep || p[-1] == ' ';
		char end = p[wl];
		if (start && (end == '\0' || end == sep || end == ' ' || end == '\n'))
			return true;
		p += wl;
	}
	return false;
}

/* Find the memory controller: a cgroup2 mount offering "memory" wins, else a v1 hierarchy
 * with the memory controller. Returns 2, 1, or -ENODEV; *mnt gets the mount point. */
static int find_memcg(char *mnt, size_t mntlen)
{
	char line[4096], v1[512] = "", ctl[4608], buf[512];
	FILE *f = fopen("/proc/self/mountinfo", "re");
	int found = -ENODEV;

	if (!f)
		return -ENODEV;
	while (fgets(line, sizeof(line), f)) {
		char point[512], fstype[64], opts[1024];
		char *sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*s %*s %*s %*s %511s", point) != 1 ||
		    sscanf(sep + 3, "%63s %*s %1023s", fstype, opts) != 2)
			continue;
		if (!strcmp(fstype, "cgroup2")) {
			snprintf(ctl, sizeof(ctl), "%s/cgroup.controllers", point);
			if (read_str(ctl, buf, sizeof(buf)) > 0 && has_word(buf, "memory", ' ')) {
				if (copy_str(mnt, mntlen, point) < 0)
					continue;
				found = 2;
				break;
			}
		} else if (!strcmp(fstype, "cgroup") && !v1[0] && has_word(opts, "memory", ',')) {
			copy_str(v1, sizeof(v1), point);
		}
	}
	fclose(f);
	if (found < 0 && v1[0] && copy_str(mnt, mntlen, v1) == 0)
		found = 1;
	return found;
}

static int setup_cgroup(struct swapbase *sb, char *err, size_t errlen)
{
	char mnt[256], path[300], buf[512];
	int v = find_memcg(mnt, sizeof(mnt)), rc;

	if (v < 0) {
		set_err(err, errlen, "no memory cgroup controller is mounted (v1 or v2)");
		return -ENODEV;
	}
	if (v == 2) {
		/* A child cgroup only gets memory.max if its parent hands the controller down. */
		snprintf(path, sizeof(path), "%s/cgroup.subtree_control", mnt);
		if (read_str(path, buf, sizeof(buf)) < 0 || !has_word(buf, "memory", ' ')) {
			rc = write_str(path, "+memory");
			if (rc < 0) {
				set_err(err, errlen,
					"cannot enable the memory controller in %s: %s", path,
					strerror(-rc));
				return rc;
			}
			copy_str(sb->cg_parent, sizeof(sb->cg_parent), mnt);
			sb->cg_subtree_enabled = 1;
			state_save(sb);
		}
	}
	if (snprintf(path, sizeof(path), "%s/" CG_PREFIX "%d", mnt, (int)sb->owner) >=
		(int)sizeof(path) ||
	    copy_str(sb->cg_dir, sizeof(sb->cg_dir), path) < 0) {
		set_err(err, errlen, "cgroup path under %s is too long", mnt);
		return -ENAMETOOLONG;
	}
	if (mkdir(sb->cg_dir, 0755) < 0) {
		rc = -errno;
		set_err(err, errlen, "cannot create cgroup %s: %s", sb->cg_dir, strerror(-rc));
		return rc;
	}
	sb->cg_version = v;
	state_save(sb);
	return 0;
}

int swapbase_setup(struct swapbase *sb, uint64_t swap_bytes, const char *swapfile, char *err,
		   size_t errlen)
{
	sigset_t old;
	int rc;

	if (err && errlen)
		err[0] = '\0';
	if (!sb || swap_bytes == 0)
		return -EINVAL;
	if (geteuid() != 0) {
		set_err(err, errlen, "kernel swap baseline needs root (swapon, zram, cgroups)");
		return -EPERM;
	}
	if (g_active) {
		set_err(err, errlen, "a swap baseline is already set up in this process");
		return -EBUSY;
	}
	rc = swapbase_cleanup_stale(err, errlen);
	if (rc < 0)
		return rc;
	if (err && errlen)
		err[0] = '\0';

	memset(sb, 0, sizeof(*sb));
	sb->zram_id = -1;
	sb->owner = getpid();
	sb->owner_start = proc_start_time(sb->owner);
	sb->swap_bytes = swap_bytes;
	sb->active = 1;

	/* Signals wait until setup is complete or undone, so no step is half recorded. */
	block_signals(&old);
	install_signals(sb);
	rc = swapfile ? setup_file(sb, swapfile, err, errlen) : setup_zram(sb, err, errlen);
	if (rc == 0)
		rc = setup_cgroup(sb, err, errlen);
	if (rc < 0)
		do_teardown(sb);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return rc;
}

/* --- run ----------------------------------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void swapbase_phase(const char *name, double seconds)
{
	struct swapbase_result *r = &g_child_result;

	if (r->nphases >= SWAPBASE_MAX_PHASES)
		return;
	snprintf(r->phase[r->nphases].name, sizeof(r->phase[0].name), "%s", name);
	r->phase[r->nphases].seconds = seconds;
	r->nphases++;
}

static void cg_file(const struct swapbase *sb, const char *name, char *path, size_t len)
{
	snprintf(path, len, "%s/%s", sb->cg_dir, name);
}

static int cg_write(const struct swapbase *sb, const char *name, const char *val)
{
	char path[320];
	cg_file(sb, name, path, sizeof(path));
	return write_str(path, val);
}

static uint64_t cg_oom_kills(const struct swapbase *sb)
{
	char path[320];
	uint64_t v = 0;

	if (sb->cg_version == 2) {
		cg_file(sb, "memory.events", path, sizeof(path));
		read_key_u64(path, "oom_kill", &v);
	} else {
		cg_file(sb, "memory.oom_control", path, sizeof(path));
		read_key_u64(path, "oom_kill", &v);
	}
	return v;
}

/* Swap used by the cgroup and by our zram device now, kept as peaks in *r. */
static void sample(const struct swapbase *sb, struct swapbase_result *r)
{
	char path[320];
	uint64_t v = 0;

	if (sb->cg_version == 2) {
		cg_file(sb, "memory.swap.current", path, sizeof(path));
		if (read_u64_file(path, &v) == 0 && v > r->peak_swap_bytes)
			r->peak_swap_bytes = v;
	} else {
		cg_file(sb, "memory.stat", path, sizeof(path));
		if (read_key_u64(path, "swap", &v) == 0 && v > r->peak_swap_bytes)
			r->peak_swap_bytes = v;
	}
	if (sb->zram_id >= 0) {
		char buf[256];
		snprintf(path, sizeof(path), "/sys/block/zram%d/mm_stat", sb->zram_id);
		if (read_str(path, buf, sizeof(buf)) > 0) {
			v = strtoull(buf, NULL, 10); /* orig_data_size */
			if (v > r->zram_peak_bytes)
				r->zram_peak_bytes = v;
		}
	}
}

static int set_limits(struct swapbase *sb, uint64_t limit, char *err, size_t errlen)
{
	char val[32];
	int rc;

	snprintf(val, sizeof(val), "%llu", (unsigned long long)limit);
	if (sb->cg_version == 2) {
		rc = cg_write(sb, "memory.max", val);
		if (rc == 0)
			rc = cg_write(sb, "memory.swap.max", "max");
		(void)cg_write(sb, "memory.peak", "reset"); /* 6.12+: per-run peak */
	} else {
		/* memsw stays unlimited (as created), so the child may swap all it wants. */
		rc = cg_write(sb, "memory.limit_in_bytes", val);
		/* Anonymous memory is only swapped from a memcg with swappiness > 0. */
		(void)cg_write(sb, "memory.swappiness", "60");
		(void)cg_write(sb, "memory.max_usage_in_bytes", "0");
		(void)cg_write(sb, "memory.memsw.max_usage_in_bytes", "0");
		(void)cg_write(sb, "memory.failcnt", "0");
	}
	if (rc < 0)
		set_err(err, errlen, "cannot set the memory limit of %s to %s: %s", sb->cg_dir, val,
			strerror(-rc));
	return rc;
}

static void __attribute__((noreturn))
child_main(struct swapbase *sb, int wfd, int (*fn)(void *arg), void *arg)
{
	struct swapbase_result *r = &g_child_result;
	char path[320], pid[24];
	sigset_t none;
	double t0;
	int rc;

	/* The child never tears down: a ^C to the process group just ends it. */
	g_active = NULL;
	for (size_t i = 0; i < SB_NSIG; i++)
		signal(sb_signals[i], SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	memset(r, 0, sizeof(*r));
	cg_file(sb, "cgroup.procs", path, sizeof(path));
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	rc = write_str(path, pid);
	if (rc < 0) {
		r->rc = rc;
		snprintf(r->child_err, sizeof(r->child_err), "cannot join cgroup %.80s: %s",
			 sb->cg_dir, strerror(-rc));
		write_all(wfd, r, sizeof(*r));
		_exit(1);
	}
	t0 = now_s();
	r->rc = fn(arg);
	r->seconds = now_s() - t0;
	write_all(wfd, r, sizeof(*r));
	_exit(0);
}

int swapbase_run(struct swapbase *sb, uint64_t limit_bytes, int (*fn)(void *arg), void *arg,
		 double *seconds_out, char *err, size_t errlen)
{
	struct swapbase_result got, *r;
	size_t have = 0;
	uint64_t oom_before, oom_after, v = 0;
	char path[320];
	sigset_t old;
	int fds[2], st = 0, rc;
	pid_t pid;

	if (err && errlen)
		err[0] = '\0';
	if (!sb || !sb->active || !sb->cg_version || !fn || limit_bytes == 0) {
		set_err(err, errlen, "swap baseline is not set up");
		return -EINVAL;
	}
	r = &sb->last;
	memset(r, 0, sizeof(*r));
	rc = set_limits(sb, limit_bytes, err, errlen);
	if (rc < 0)
		return rc;
	oom_before = cg_oom_kills(sb);
	if (pipe2(fds, O_CLOEXEC) < 0) {
		rc = -errno;
		set_err(err, errlen, "pipe: %s", strerror(-rc));
		return rc;
	}

	block_signals(&old);
	pid = fork();
	if (pid == 0)
		child_main(sb, fds[1], fn, arg);
	if (pid < 0) {
		rc = -errno;
		sigprocmask(SIG_SETMASK, &old, NULL);
		close(fds[0]);
		close(fds[1]);
		set_err(err, errlen, "fork: %s", strerror(-rc));
		return rc;
	}
	sb->child = pid;
	state_save(sb);
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(fds[1]);

	/* Read the result while sampling swap use; EOF means the child is gone. */
	memset(&got, 0, sizeof(got));
	for (;;) {
		struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
		int pr = poll(&pfd, 1, 100);

		sample(sb, r);
		if (!sb->active)
			break; /* a signal handler tore everything down */
		if (pr < 0 && errno != EINTR)
			break;
		if (pr <= 0)
			continue;
		ssize_t n = read(fds[0], (char *)&got + have, sizeof(got) - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
		if (have == sizeof(got))
			break; /* the child writes nothing after its result */
	}
	close(fds[0]);
	if (!sb->active) {
		set_err(err, errlen, "interrupted; the swap baseline was torn down");
		return -EINTR;
	}
	block_signals(&old);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	sb->child = 0;
	state_save(sb);
	sigprocmask(SIG_SETMASK, &old, NULL);

	if (have == sizeof(got)) {
		memcpy(r->phase, got.phase, sizeof(r->phase));
		r->nphases = got.nphases;
		r->rc = got.rc;
		r->seconds = got.seconds;
		memcpy(r->child_err, got.child_err, sizeof(r->child_err));
	}
	if (sb->cg_version == 2) {
		cg_file(sb, "memory.peak", path, sizeof(path));
	} else {
		cg_file(sb, "memory.max_usage_in_bytes", path, sizeof(path));
	}
	if (read_u64_file(path, &v) == 0 && v != UINT64_MAX)
		r->peak_mem_bytes = v;
	oom_after = cg_oom_kills(sb);
	r->oom_killed = oom_after > oom_before;

	if (WIFSIGNALED(st)) {
		if (r->oom_killed || WTERMSIG(st) == SIGKILL) {
			/* Without the cgroup's oom_kill counter (old kernels) a SIGKILL is only
			 * most likely the OOM killer; say so rather than guess silently. */
			set_err(
			    err, errlen,
			    "the workload was killed by %s: %llu MiB of memory plus %llu MiB of "
			    "swap cannot hold it",
			    r->oom_killed ? "the OOM killer"
					  : "SIGKILL, most likely the OOM killer",
			    (unsigned long long)(limit_bytes >> 20),
			    (unsigned long long)(sb->swap_bytes >> 20));
			return -ENOMEM;
		}
		set_err(err, errlen, "the workload died of signal %d (%s)", WTERMSIG(st),
			strsignal(WTERMSIG(st)));
		return -ECHILD;
	}
	if (have != sizeof(got)) {
		set_err(err, errlen, "the workload exited (status %d) without a result",
			WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		return -ECHILD;
	}
	if (r->child_err[0]) {
		set_err(err, errlen, "%s", r->child_err);
		return r->rc < 0 ? r->rc : -EIO;
	}
	if (r->rc != 0) {
		set_err(err, errlen, "the workload failed: %s",
			r->rc < 0 ? strerror(-r->rc) : "non-zero return");
		return r->rc < 0 ? r->rc : -EIO;
	}
	if (seconds_out)
		*seconds_out = r->seconds;
	return 0;
}

/* --- cleanup after a crash ----------------------------------------------------------------- */

static void copy_line_value(char *dst, size_t len, const char *val)
{
	size_t n = strcspn(val, "\n");

	if (n >= len)
		n = len - 1;
	memcpy(dst, val, n);
	dst[n] = '\0';
}

int swapbase_cleanup_stale(char *err, size_t errlen)
{
	struct swapbase sb;
	char line[512], path[128];
	long long owner = 0;
	unsigned long long start = 0;
	FILE *f;
	int rc;

	if (geteuid() != 0) {
		set_err(err, errlen, "kernel swap baseline needs root (swapon, zram, cgroups)");
		return -EPERM;
	}
	f = fopen(SWAPBASE_STATE_FILE, "re");
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	memset(&sb, 0, sizeof(sb));
	sb.zram_id = -1;
	while (fgets(line, sizeof(line), f)) {
		long long a = 0;
		if (sscanf(line, "owner %lld %llu", &owner, &start) == 2)
			continue;
		if (!strncmp(line, "swapdev ", 8))
			copy_line_value(sb.swap_dev, sizeof(sb.swap_dev), line + 8);
		else if (!strncmp(line, "cgdir ", 6))
			copy_line_value(sb.cg_dir, sizeof(sb.cg_dir), line + 6);
		else if (!strncmp(line, "cgparent ", 9))
			copy_line_value(sb.cg_parent, sizeof(sb.cg_parent), line + 9);
		else if (sscanf(line, "swapbytes %lld", &a) == 1)
			sb.swap_bytes = (uint64_t)a;
		else if (sscanf(line, "zram %lld", &a) == 1)
			sb.zram_id = (int)a;
		else if (sscanf(line, "swapon %lld", &a) == 1)
			sb.swap_on = (int)a;
		else if (sscanf(line, "file %lld", &a) == 1)
			sb.file_created = (int)a;
		else if (sscanf(line, "node %lld", &a) == 1)
			sb.node_created = (int)a;
		else if (sscanf(line, "cgversion %lld", &a) == 1)
			sb.cg_version = (int)a;
		else if (sscanf(line, "subtree %lld", &a) == 1)
			sb.cg_subtree_enabled = (int)a;
	}
	fclose(f);

	if (owner > 0 && start && proc_start_time((pid_t)owner) == start) {
		set_err(err, errlen,
			"another swap baseline run (pid %lld) is active; see " SWAPBASE_STATE_FILE,
			owner);
		return -EBUSY;
	}
	/* Only reset a zram device that still looks like ours: same size as recorded. */
	if (sb.zram_id >= 0) {
		uint64_t disksize = 0;
		snprintf(path, sizeof(path), "/sys/block/zram%d/disksize", sb.zram_id);
		if (read_u64_file(path, &disksize) < 0 || disksize != sb.swap_bytes) {
			sb.zram_id = -1;
			sb.swap_on = 0;
		}
	}
	if (!sb.swap_dev[0])
		sb.swap_on = sb.file_created = sb.node_created = 0;
	if (!sb.cg_dir[0] || strstr(sb.cg_dir, "/" CG_PREFIX) == NULL)
		sb.cg_version = 0;
	if (!sb.cg_parent[0])
		sb.cg_subtree_enabled = 0;

	/* Teardown as if this process had set it up; nothing of its own is at stake. */
	sb.owner = getpid();
	sb.owner_start = proc_start_time(sb.owner);
	sb.active = 1;
	rc = do_teardown(&sb);
	if (rc < 0) {
		set_err(err, errlen,
			"could not undo an interrupted run fully (%s); what is left "
			"is recorded in " SWAPBASE_STATE_FILE,
			strerror(-rc));
		return rc;
	}
	return 1;
}
