/* SPDX-License-Identifier: MIT */
/*
 * util.h - small helpers shared by the library, the daemon and the tools: clocks, sizes,
 * system-call retry loops.
 */
#ifndef HECA_UTIL_H
#define HECA_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define HECA_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define HECA_MIN(a, b) ((a) < (b) ? (a) : (b))
#define HECA_MAX(a, b) ((a) > (b) ? (a) : (b))

static inline uint64_t heca__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* pthread_cond_timedwait for at most ms milliseconds (the condition's default clock). */
void heca__cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, unsigned int ms);

/* Format bytes as "512.0 MiB" into buf. Returns buf. */
char *heca__fmt_bytes(char *buf, size_t len, uint64_t bytes);

/* Split "HOST:PORT" or "[V6]:PORT" into host (copied into host[hostlen]) and port.
 * Returns 0 or -EINVAL. */
int heca__split_hostport(const char *s, char *host, size_t hostlen, char *port, size_t portlen);

/* The start time of process pid (clock ticks after boot, /proc/PID/stat field 22) into *out,
 * so that a pid reused later is told apart. Allocates nothing. Returns 0 or -1. */
int heca__proc_start_time(pid_t pid, unsigned long long *out);

/* The inode of this process's namespace of a kind ("pid", "time"), 0 if there is none. */
unsigned long long heca__proc_ns_ino(const char *kind);

/* Fill buf with len random bytes (getrandom). Returns 0 or -errno. */
int heca__random(void *buf, size_t len);

#endif
