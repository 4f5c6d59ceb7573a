// SPDX-License-Identifier: MIT
/*
 * gen_corpus_wire.c - writes fuzz/corpus/wire/: one valid frame of every shape (request, reply,
 * error reply) and one multi-frame stream, all made by the real encoder so seeds stay valid.
 */
#include "wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t pagebuf[HECA_WIRE_PAGE];
static uint8_t stream[4 * HECA_WIRE_HDR + 2 * HECA_WIRE_PAGE + 256];
static size_t stream_len;

/* Encode a frame (payload copied after the header) into out; returns its length. */
static size_t frame(uint8_t *out, uint8_t op, int32_t status, uint64_t page, uint32_t count,
		    const void *payload, uint32_t plen)
{
	static uint64_t req_id = 1;
	struct heca_frame f = {.opcode = op,
			       .req_id = req_id++,
			       .segment = 3,
			       .status = status,
			       .page = page,
			       .count = count,
			       .payload_len = plen,
			       .payload = plen ? payload : NULL};

	heca_wire_encode(out, &f);
	if (plen)
		memcpy(out + HECA_WIRE_HDR, payload, plen);
	return HECA_WIRE_HDR + plen;
}

static void put(const char *dir, const char *name, const uint8_t *p, size_t n)
{
	char path[4096];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fp = fopen(path, "wb");
	if (!fp || fwrite(p, 1, n, fp) != n || fclose(fp)) {
		perror(path);
		exit(1);
	}
}

#define SEED(name, op, st, page, cnt, pl, plen)                                                    \
	do {                                                                                       \
		size_t _n = frame(buf, (op), (st), (page), (cnt), (pl), (plen));                   \
		put(dir, name, buf, _n);                                                           \
		if (stream_len + _n <= sizeof(stream) && (plen) <= 64) {                           \
			memcpy(stream + stream_len, buf, _n);                                      \
			stream_len += _n;                                                          \
		}                                                                                  \
	} while (0)

int main(int argc, char **argv)
{
	static uint8_t buf[HECA_WIRE_HDR + HECA_WIRE_PAGE];
	const char *dir = argc > 1 ? argv[1] : "fuzz/corpus/wire";
	uint8_t hello[HECA_WIRE_HELLO_LEN] = {0}, hello_r[HECA_WIRE_HELLO_REPLY_LEN] = {0};
	uint8_t stat[HECA_WIRE_STAT_LEN], auth[HECA_WIRE_AUTH_LEN], auth_r[HECA_WIRE_AUTH_REPLY_LEN];
	uint8_t clone[HECA_WIRE_CLONE_LEN];
	const char echo[] = "hello, sponsor";
	const uint8_t R = HECA_OP_REPLY;

	for (int i = 0; i < 16; i++) {
		hello[i] = (uint8_t)(0xc0 + i);	     /* cluster id */
		hello[16 + i] = (uint8_t)(0xd0 + i); /* demander id */
		hello_r[i] = (uint8_t)(0xe0 + i);    /* sponsor id */
		clone[i] = (uint8_t)(0xf0 + i);	     /* destination demander id */
	}
	heca_put32(hello + 32, HECA_CHAN_FAULT);
	heca_put64(hello_r + 16, 16384); /* capacity_pages */
	heca_put64(hello_r + 24, 42);	 /* used_pages */
	heca_put32(hello_r + HECA_HELLO_REPLY_OFF_FLAGS, HECA_HELLO_AUTH);
	for (int i = 0; i < 32; i++)
		hello_r[HECA_HELLO_REPLY_OFF_NONCE + i] = (uint8_t)(0x10 + i); /* server nonce */
	for (int i = 0; i < HECA_WIRE_AUTH_LEN; i++)
		auth[i] = (uint8_t)(0x30 + i); /* client nonce, mac (not a real one) */
	for (int i = 0; i < HECA_WIRE_AUTH_REPLY_LEN; i++)
		auth_r[i] = (uint8_t)(0x90 + i);
	for (int i = 0; i < 5; i++)
		heca_put64(stat + 8 * i, (uint64_t)(16384 >> (2 * i)));
	for (size_t i = 0; i < sizeof(pagebuf); i++)
		pagebuf[i] = (uint8_t)(i * 31 + 7);

	SEED("hello", HECA_OP_HELLO, 0, 0, 0, hello, sizeof(hello));
	SEED("hello-reply", R | HECA_OP_HELLO, 0, 0, 0, hello_r, sizeof(hello_r));
	SEED("hello-eacces", R | HECA_OP_HELLO, EACCES, 0, 0, NULL, 0);
	SEED("alloc", HECA_OP_ALLOC, 0, 262144, 0, NULL, 0);
	SEED("alloc-reply", R | HECA_OP_ALLOC, 0, 262144, 0, NULL, 0);
	SEED("alloc-enospc", R | HECA_OP_ALLOC, ENOSPC, 262144, 0, NULL, 0);
	SEED("read", HECA_OP_READ, 0, 16, 4, NULL, 0);
	SEED("write", HECA_OP_WRITE, 0, 16, 1, pagebuf, HECA_WIRE_PAGE);
	SEED("write-reply", R | HECA_OP_WRITE, 0, 16, 1, NULL, 0);
	SEED("write-enospc", R | HECA_OP_WRITE, ENOSPC, 16, 1, NULL, 0);
	SEED("read-reply", R | HECA_OP_READ, 0, 16, 1, pagebuf, HECA_WIRE_PAGE);
	SEED("read-enoent", R | HECA_OP_READ, ENOENT, 16, 4, NULL, 0);
	SEED("stat", HECA_OP_STAT, 0, 0, 0, NULL, 0);
	SEED("stat-reply", R | HECA_OP_STAT, 0, 0, 0, stat, sizeof(stat));
	SEED("echo-empty", HECA_OP_ECHO, 0, 0, 0, NULL, 0);
	SEED("echo", HECA_OP_ECHO, 0, 0, 0, echo, sizeof(echo) - 1);
	SEED("echo-reply", R | HECA_OP_ECHO, 0, 0, 0, echo, sizeof(echo) - 1);
	SEED("free", HECA_OP_FREE, 0, 0, 0, NULL, 0);
	SEED("free-reply", R | HECA_OP_FREE, 0, 0, 0, NULL, 0);
	SEED("free-enoent", R | HECA_OP_FREE, ENOENT, 0, 0, NULL, 0);
	SEED("error-eproto", HECA_OP_ERROR, EPROTO, 0, 0, NULL, 0);
	SEED("auth", HECA_OP_AUTH, 0, 0, 0, auth, sizeof(auth));
	SEED("auth-reply", R | HECA_OP_AUTH, 0, 0, 0, auth_r, sizeof(auth_r));
	SEED("auth-eacces", R | HECA_OP_AUTH, EACCES, 0, 0, NULL, 0);
	SEED("error-eacces", HECA_OP_ERROR, EACCES, 0, 0, NULL, 0);
	SEED("clone", HECA_OP_CLONE, 0, 0, 0, clone, sizeof(clone));
	SEED("clone-reply", R | HECA_OP_CLONE, 0, 1234, 0, NULL, 0);
	SEED("clone-enospc", R | HECA_OP_CLONE, ENOSPC, 0, 0, NULL, 0);
	SEED("clone-eexist", R | HECA_OP_CLONE, EEXIST, 0, 0, NULL, 0);
	SEED("discard", HECA_OP_DISCARD, 0, 16, 1000, NULL, 0);
	SEED("discard-all", HECA_OP_DISCARD, 0, 0, UINT32_MAX, NULL, 0);
	SEED("discard-reply", R | HECA_OP_DISCARD, 0, 12, 1000, NULL, 0);
	SEED("discard-enoent", R | HECA_OP_DISCARD, ENOENT, 0, 1000, NULL, 0);
	SEED("resize", HECA_OP_RESIZE, 0, 512, 0, NULL, 0);
	SEED("resize-reply", R | HECA_OP_RESIZE, 0, 512, 0, NULL, 0);
	SEED("resize-einval", R | HECA_OP_RESIZE, EINVAL, 0, 0, NULL, 0);
	SEED("dropall", HECA_OP_DROPALL, 0, 0, 0, NULL, 0);
	SEED("dropall-reply", R | HECA_OP_DROPALL, 0, 99, 0, NULL, 0);
	/* The stream: every small frame above back to back, then half a frame. */
	memcpy(stream + stream_len, buf, HECA_WIRE_HDR / 2);
	put(dir, "stream", stream, stream_len + HECA_WIRE_HDR / 2);
	return 0;
}
