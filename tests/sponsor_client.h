/* SPDX-License-Identifier: MIT */
/*
 * sponsor_client.h - a tiny synchronous client of the sponsor protocol for tests that need to
 * ask a sponsor what it holds.
 */
#ifndef HECA_TEST_SPONSOR_CLIENT_H
#define HECA_TEST_SPONSOR_CLIENT_H

#include <stdint.h>

struct t_stat {
	uint64_t capacity_pages, used_pages, segments, demanders, mine;
};

/* Connect to addr, say HELLO with a random demander id, send STAT. Returns 0 or -errno. */
int t_sponsor_stat(const char *addr, struct t_stat *st);

#endif
