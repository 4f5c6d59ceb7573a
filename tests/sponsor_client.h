/* SPDX-License-Identifier: MIT */
/*
 * sponsor_client.h - a tiny synchronous client of the sponsor protocol for tests that need to
 * ask a sponsor what it holds.
 */
#ifndef HECA_TEST_SPONSOR_CLIENT_H
#define HECA_TEST_SPONSOR_CLIENT_H

#include <stddef.h>
#include <stdint.h>

struct t_stat {
	uint64_t capacity_pages, used_pages, segments, demanders, mine;
};

struct heca_frame;

/* Send one frame (header and payload). Returns 0 or -errno. */
int t_frame_send(int fd, struct heca_frame *f);

/* Receive one whole frame into buf[0..len) and decode it into *f. Returns 0, -errno
 * (-ECONNRESET on EOF), -EMSGSIZE if it does not fit, or the decoder's error. */
int t_frame_recv(int fd, struct heca_frame *f, uint8_t *buf, size_t len);

/* Connect to addr, say HELLO with a random demander id, send STAT. Returns 0 or -errno. */
int t_sponsor_stat(const char *addr, struct t_stat *st);

/* A demander of its own that fills sponsor addr until it refuses (ENOSPC), to make it full
 * under another demander's feet. Returns the pages stored (>= 0) and the open connection in
 * *fd, or -errno. */
long t_sponsor_fill(const char *addr, int *fd);

/* Free what t_sponsor_fill() stored and close its connection. Returns 0 or -errno. */
int t_sponsor_unfill(int fd);

#endif
