/* SPDX-License-Identifier: MIT */
/*
 * harness.h - what every heca test shares: assertions that print file:line, and starting and
 * stopping a real hecad on 127.0.0.1 port 0.
 */
#ifndef HECA_TEST_HARNESS_H
#define HECA_TEST_HARNESS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define T_PASS 0
#define T_FAIL 1
#define T_SKIP 77

#define T_FAILF(...)                                                                     \
	do {                                                                             \
		fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                     \
		fprintf(stderr, __VA_ARGS__);                                            \
		fprintf(stderr, "\n");                                                   \
		exit(T_FAIL);                                                            \
	} while (0)

#define ASSERT_TRUE(c)                                                                   \
	do {                                                                             \
		if (!(c))                                                                \
			T_FAILF("%s", #c);                                               \
	} while (0)

#define ASSERT_EQ(a, b)                                                                  \
	do {                                                                             \
		long long _a = (long long)(a), _b = (long long)(b);                      \
		if (_a != _b)                                                            \
			T_FAILF("%s == %s: %lld != %lld", #a, #b, _a, _b);               \
	} while (0)

#define ASSERT_GE(a, b)                                                                  \
	do {                                                                             \
		long long _a = (long long)(a), _b = (long long)(b);                      \
		if (_a < _b)                                                             \
			T_FAILF("%s >= %s: %lld < %lld", #a, #b, _a, _b);                \
	} while (0)

#define ASSERT_LE(a, b) ASSERT_GE(b, a)

/* A running hecad. */
struct t_sponsor {
	pid_t pid;
	char addr[64]; /* "127.0.0.1:PORT" */
};

/* Start build/hecad (path from $HECAD, else ./hecad) on 127.0.0.1:0 with the given capacity
 * ("64M") and extra arguments (NULL-terminated list, may be NULL); wait for its
 * "listening on" line. Exits the test with T_FAIL if it does not start. */
void t_sponsor_start(struct t_sponsor *s, const char *capacity, const char *const *extra);

/* SIGTERM (or SIGKILL if kill9) and reap. Returns the exit status as from waitpid. */
int t_sponsor_stop(struct t_sponsor *s, int kill9);

/* SIGSTOP and wait until every thread of the sponsor has stopped: kill() returns before the
 * stop takes effect, and a thread still running may answer one more request. Exits the test
 * with T_FAIL if it does not stop. SIGCONT resumes it. */
void t_sponsor_pause(struct t_sponsor *s);

/* Run $HECAD (else ./hecad) with args (NULL-terminated), output discarded; return its exit
 * status, or -1 if it did not exit normally. */
int t_run_hecad(const char *const *args);

/* Fill pages [from, to) of the 4 KiB pages at p with a pattern of (page, version), one word
 * in eight; t_check_pages() returns how many of them do not hold version ver (naming the
 * first few on stderr). For tests that must see every page they moved come back right. */
void t_fill_pages(uint8_t *p, uint64_t from, uint64_t to, uint64_t ver);
uint64_t t_check_pages(const uint8_t *p, uint64_t from, uint64_t to, uint64_t ver);

/* Milliseconds since an arbitrary start. */
double t_now_ms(void);

/* Skip (exit 77) when userfaultfd is not usable here, printing why. */
void t_require_uffd(void);

#endif
