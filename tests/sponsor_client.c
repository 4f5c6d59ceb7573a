// SPDX-License-Identifier: MIT
/*
 * sponsor_client.c - synchronous STAT over a fresh connection, for tests.
 */
#include "sponsor_client.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "net.h"
#include "util.h"
#include "wire.h"

int t_frame_send(int fd, struct heca_frame *f)
{
	uint8_t hdr[HECA_WIRE_HDR];
	struct iovec iov[2] = {{hdr, HECA_WIRE_HDR}, {(void *)f->payload, f->payload_len}};

	heca_wire_encode(hdr, f);
	return heca__send_all(fd, iov, f->payload_len ? 2 : 1);
}

int t_frame_recv(int fd, struct heca_frame *f, uint8_t *buf, size_t len)
{
	int rc = heca__recv_all(fd, buf, HECA_WIRE_HDR);
	uint32_t plen;

	if (rc)
		return rc;
	plen = heca_get32(buf + 36);
	if (plen > len - HECA_WIRE_HDR)
		return -EMSGSIZE;
	rc = heca__recv_all(fd, buf + HECA_WIRE_HDR, plen);
	if (rc)
		return rc;
	rc = heca_wire_decode(buf, HECA_WIRE_HDR + plen, f);
	return rc < 0 ? rc : 0;
}

static int call(int fd, struct heca_frame *req, struct heca_frame *rep, uint8_t *buf, size_t len)
{
	size_t have = 0;
	int rc = t_frame_send(fd, req);

	if (rc)
		return rc;
	for (;;) {
		rc = heca_wire_decode(buf, have, rep);
		if (rc > 0)
			return rep->status ? -rep->status : 0;
		if (rc != -EAGAIN || have == len)
			return rc == -EAGAIN ? -EMSGSIZE : rc;
		ssize_t n = read(fd, buf + have, len - have);
		if (n <= 0)
			return n == 0 ? -ECONNRESET : -errno;
		have += (size_t)n;
	}
}

int t_sponsor_stat(const char *addr, struct t_stat *st)
{
	uint8_t hello[HECA_WIRE_HELLO_LEN] = {0}, buf[512];
	struct heca_frame req = {.opcode = HECA_OP_HELLO, .req_id = 1, .payload = hello,
				 .payload_len = sizeof(hello)}, rep;
	int fd = heca__tcp_connect(addr, 2000), rc;

	if (fd < 0)
		return fd;
	heca__random(hello + 16, 16);
	rc = call(fd, &req, &rep, buf, sizeof(buf));
	if (!rc) {
		req = (struct heca_frame){.opcode = HECA_OP_STAT, .req_id = 2};
		rc = call(fd, &req, &rep, buf, sizeof(buf));
	}
	if (!rc) {
		st->capacity_pages = heca_get64(rep.payload);
		st->used_pages = heca_get64(rep.payload + 8);
		st->segments = heca_get64(rep.payload + 16);
		st->demanders = heca_get64(rep.payload + 24);
		st->mine = heca_get64(rep.payload + 32);
	}
	close(fd);
	return rc;
}

long t_sponsor_fill(const char *addr, int *out)
{
	static uint8_t page[64 * HECA_WIRE_PAGE];
	uint8_t hello[HECA_WIRE_HELLO_LEN] = {0}, buf[512];
	struct heca_frame req = {.opcode = HECA_OP_HELLO, .req_id = 1, .payload = hello,
				 .payload_len = sizeof(hello)}, rep;
	uint64_t next = 0, req_id = 2;
	int fd = heca__tcp_connect(addr, 2000), rc;

	if (fd < 0)
		return fd;
	memset(page, 0x5a, sizeof(page));
	heca__random(hello + 16, 16);
	rc = call(fd, &req, &rep, buf, sizeof(buf));
	req = (struct heca_frame){.opcode = HECA_OP_ALLOC, .req_id = req_id++, .segment = 1,
				  .page = 1u << 30};
	if (!rc)
		rc = call(fd, &req, &rep, buf, sizeof(buf));
	/* Frames of 64 pages, then single pages: full to the last page. */
	for (uint32_t count = 64; !rc && count; count = count > 1 ? 1 : 0) {
		for (;;) {
			req = (struct heca_frame){.opcode = HECA_OP_WRITE, .req_id = req_id++,
						  .segment = 1, .page = next, .count = count,
						  .payload = page,
						  .payload_len = count * HECA_WIRE_PAGE};
			rc = call(fd, &req, &rep, buf, sizeof(buf));
			if (rc)
				break;
			next += count;
		}
		if (rc == -ENOSPC)
			rc = 0;
	}
	if (rc) {
		close(fd);
		return rc;
	}
	*out = fd;
	return (long)next;
}

int t_sponsor_unfill(int fd)
{
	struct heca_frame req = {.opcode = HECA_OP_FREE, .req_id = 1u << 30, .segment = 1}, rep;
	uint8_t buf[512];
	int rc = call(fd, &req, &rep, buf, sizeof(buf));

	close(fd);
	return rc;
}
