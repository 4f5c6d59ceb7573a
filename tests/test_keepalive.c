// SPDX-License-Identifier: MIT
/*
 * test_keepalive.c - a demander that vanishes without a FIN (its network cut off) is noticed
 * by hecad's keepalive in the stated time, and its lease then starts. hecad and the demander
 * live in two network namespaces joined by a veth pair (169.254.x.x); needs root.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "net.h"
#include "sponsor_client.h"
#include "wire.h"

#define KEEPALIVE_S 3
#define LEASE_S 1
/* Noticed within keepalive + lease + one lease sweep (lease/4) + slack for the test. */
#define NOTICE_MAX_S (KEEPALIVE_S + LEASE_S + 0.25 + 2.0)

static char g_ns_s[32], g_ns_c[32];
static struct t_sponsor g_sp;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

static void cleanup(void)
{
	if (g_sp.pid > 0)
		t_sponsor_stop(&g_sp, 1);
	if (g_ns_s[0])
		sh("ip netns del %s 2>/dev/null", g_ns_s);
	if (g_ns_c[0])
		sh("ip netns del %s 2>/dev/null", g_ns_c);
}

static void on_signal(int sig)
{
	(void)sig;
	exit(T_FAIL); /* runs cleanup() */
}

static void enter_ns(const char *name)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "/var/run/netns/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET))
		T_FAILF("setns %s: %s", name, strerror(errno));
	close(fd);
}

static int send_frame(int fd, uint8_t op, uint64_t req, uint32_t seg, uint64_t page,
		      uint32_t count, const void *payload, uint32_t plen)
{
	struct heca_frame f = {.opcode = op, .req_id = req, .segment = seg, .page = page,
			       .count = count, .payload = payload, .payload_len = plen};

	return t_frame_send(fd, &f);
}

static struct heca_frame rpc(int fd, uint8_t op, uint32_t seg, uint64_t page, uint32_t count,
			     const void *payload, uint32_t plen)
{
	static uint8_t buf[HECA_WIRE_HDR + 2 * HECA_WIRE_PAGE];
	static uint64_t id = 10;
	struct heca_frame f;
	int rc;

	if (send_frame(fd, op, ++id, seg, page, count, payload, plen))
		T_FAILF("%s: send failed", heca_wire_opname(op));
	rc = t_frame_recv(fd, &f, buf, sizeof(buf));
	if (rc || f.status)
		T_FAILF("%s: %s, status %d", heca_wire_opname(op), strerror(-rc), f.status);
	return f;
}

static int hello_fd(const char *addr, uint8_t dem)
{
	uint8_t p[HECA_WIRE_HELLO_LEN] = {0};
	int fd = heca__tcp_connect(addr, 5000);

	if (fd < 0)
		T_FAILF("connect %s: %s", addr, strerror(-fd));
	p[16] = dem;
	p[17] = (uint8_t)getpid();
	rpc(fd, HECA_OP_HELLO, 0, 0, 0, p, sizeof(p));
	return fd;
}

static uint64_t demanders(int fd)
{
	struct heca_frame f = rpc(fd, HECA_OP_STAT, 0, 0, 0, NULL, 0);

	return heca_get64(f.payload + 24);
}

int main(void)
{
	char ka[16], lease[16], listen_at[64];
	const char *extra[] = {"--listen", listen_at, "--keepalive", ka, "--lease", lease, NULL};
	uint8_t page[HECA_WIRE_PAGE];
	unsigned tag = (unsigned)getpid() % 100000;
	int self, mon, victim;
	double t0, took;

	if (geteuid() != 0) {
		printf("SKIP: network namespaces need root\n");
		return T_SKIP;
	}
	snprintf(g_ns_s, sizeof(g_ns_s), "hka-s%u", tag);
	snprintf(g_ns_c, sizeof(g_ns_c), "hka-c%u", tag);
	atexit(cleanup);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	if (sh("ip netns add %s 2>/dev/null && ip netns add %s", g_ns_s, g_ns_c)) {
		g_ns_s[0] = g_ns_c[0] = 0;
		sh("ip netns del hka-s%u 2>/dev/null", tag);
		printf("SKIP: cannot make network namespaces\n");
		return T_SKIP;
	}
	if (sh("ip link add hkas%u netns %s type veth peer name hkac%u netns %s", tag, g_ns_s,
	       tag, g_ns_c) ||
	    sh("ip -n %s addr add 169.254.77.1/30 dev hkas%u && ip -n %s link set hkas%u up && "
	       "ip -n %s link set lo up", g_ns_s, tag, g_ns_s, tag, g_ns_s) ||
	    sh("ip -n %s addr add 169.254.77.2/30 dev hkac%u && ip -n %s link set hkac%u up",
	       g_ns_c, tag, g_ns_c, tag)) {
		printf("SKIP: cannot make a veth pair\n");
		return T_SKIP;
	}
	self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	ASSERT_TRUE(self >= 0);

	/* hecad and a monitoring demander in one namespace... */
	enter_ns(g_ns_s);
	snprintf(ka, sizeof(ka), "%d", KEEPALIVE_S);
	snprintf(lease, sizeof(lease), "%d", LEASE_S);
	snprintf(listen_at, sizeof(listen_at), "169.254.77.1:0");
	t_sponsor_start(&g_sp, "16M", extra);
	mon = hello_fd(g_sp.addr, 1);
	/* ...the demander that will vanish in the other, its socket made there. */
	enter_ns(g_ns_c);
	victim = hello_fd(g_sp.addr, 2);
	if (setns(self, CLONE_NEWNET))
		T_FAILF("setns back: %s", strerror(errno));
	memset(page, 0x77, sizeof(page));
	rpc(victim, HECA_OP_ALLOC, 1, 1, 0, NULL, 0);
	rpc(victim, HECA_OP_WRITE, 1, 0, 1, page, sizeof(page));
	ASSERT_EQ(demanders(mon), 2);

	/* Cut it off: no FIN, no RST; the victim process keeps its socket open. */
	if (sh("ip -n %s link set hkac%u down", g_ns_c, tag))
		T_FAILF("cannot take the link down");
	t0 = t_now_ms();
	while (demanders(mon) != 1) {
		if (t_now_ms() - t0 > NOTICE_MAX_S * 1000)
			T_FAILF("vanished demander still held after %.1f s (want <= %.1f s: "
				"keepalive %d s + lease %d s)", (t_now_ms() - t0) / 1000,
				NOTICE_MAX_S, KEEPALIVE_S, LEASE_S);
		usleep(100 * 1000);
	}
	took = (t_now_ms() - t0) / 1000;
	printf("vanished demander noticed and its lease over %.1f s after the cut (keepalive %d "
	       "s, lease %d s; bound %.1f s)\n", took, KEEPALIVE_S, LEASE_S, NOTICE_MAX_S);
	close(victim);
	close(mon);
	close(self);
	t_sponsor_stop(&g_sp, 0);
	printf("test_keepalive: ok\n");
	return T_PASS;
}
