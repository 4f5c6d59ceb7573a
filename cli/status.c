// SPDX-License-Identifier: MIT
/*
 * status.c - `heca status`, `heca add`, `heca drain`, `heca reload`: ask a running demander
 * through its control socket, or the sponsors of a cluster file directly.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "net.h"
#include "util.h"
#include "wire.h"

void cli_control_path(long pid, char *buf, size_t len)
{
	if (getuid() == 0)
		snprintf(buf, len, "/run/heca/%ld.sock", pid);
	else
		snprintf(buf, len, "/tmp/heca-%u/%ld.sock", (unsigned)getuid(), pid);
}

/* Send one command line to the control socket at path; print the reply. Returns 0, 1 if the
 * process answered with an error, 2 if it could not be reached. */
static int ask(const char *path, const char *cmd, int print)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	char buf[65536];
	size_t have = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		fprintf(stderr, "heca: cannot reach %s: %s (is the process running with a control "
				"socket?)\n",
			path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 2;
	}
	/* One write: the process answers as soon as it has read a line, and may close before a
	 * second write arrives (which would then kill us with SIGPIPE). */
	{
		char line[600];
		int n = snprintf(line, sizeof(line), "%s\n", cmd);
		if (n < 0 || (size_t)n >= sizeof(line) || write(fd, line, (size_t)n) != n) {
			close(fd);
			return 2;
		}
	}
	for (;;) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	close(fd);
	buf[have] = '\0';
	if (print)
		fputs(buf, stdout);
	if (!strncmp(buf, "error", 5)) {
		if (!print)
			fputs(buf, stderr);
		return 1;
	}
	return 0;
}

/* Print one line per sponsor of a list, asking each one directly. */
static int status_sponsors(const char *list)
{
	char *copy = strdup(list), *save = NULL;
	int down = 0;

	printf("%-32s  %-24s %-5s %12s %12s\n", "id", "address", "state", "capacity", "used");
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		uint8_t hello[HECA_WIRE_HELLO_LEN] = {0}, buf[512], hdr[HECA_WIRE_HDR];
		struct heca_frame req = {.opcode = HECA_OP_HELLO, .req_id = 1, .payload = hello,
					 .payload_len = sizeof(hello)},
				  rep;
		char id[33] = "-", cap[32] = "-", used[32] = "-";
		int fd = heca__tcp_connect(tok, 2000), ok = 0;

		heca__random(hello + 16, 16);
		for (int step = 0; fd >= 0 && step < 2; step++) {
			struct iovec iov[2] = {{hdr, HECA_WIRE_HDR},
					       {(void *)req.payload, req.payload_len}};
			size_t have = 0;
			int len = -EAGAIN;
			heca_wire_encode(hdr, &req);
			if (heca__send_all(fd, iov, req.payload_len ? 2 : 1))
				break;
			while (len == -EAGAIN) {
				struct pollfd p = {.fd = fd, .events = POLLIN};
				ssize_t n;
				if (poll(&p, 1, 2000) != 1)
					break;
				n = read(fd, buf + have, sizeof(buf) - have);
				if (n <= 0)
					break;
				have += (size_t)n;
				len = heca_wire_decode(buf, have, &rep);
			}
			if (len <= 0 || rep.status)
				break;
			if (step == 0) {
				for (int k = 0; k < 16; k++)
					snprintf(id + 2 * k, 3, "%02x", rep.payload[k]);
				req = (struct heca_frame){.opcode = HECA_OP_STAT, .req_id = 2};
			} else {
				heca__fmt_bytes(cap, sizeof(cap), heca_get64(rep.payload) * 4096);
				heca__fmt_bytes(used, sizeof(used),
						heca_get64(rep.payload + 8) * 4096);
				ok = 1;
			}
		}
		if (fd >= 0)
			close(fd);
		down += !ok;
		printf("%-32s  %-24s %-5s %12s %12s\n", id, tok, ok ? "up" : "down", cap, used);
	}
	free(copy);
	return down ? 1 : 0;
}

static void usage(FILE *f, const char *cmd)
{
	fprintf(f,
		"usage: heca status (--pid PID | --socket PATH | --cluster FILE | --sponsors LIST)\n"
		"       heca add --pid PID HOST:PORT\n"
		"       heca drain --pid PID SPONSOR        (HOST:PORT or 32-hex-digit id)\n"
		"       heca reload --pid PID               (read its cluster file again)\n"
		"\n"
		"status asks a running demander (started with a control socket, e.g. heca demo) for\n"
		"its counters and its sponsors: id, address, up/down, capacity, stripes held, and\n"
		"stripes short of a copy; or asks the sponsors of a cluster file directly.\n"
		"A process's control socket is %s by default.\n",
		getuid() == 0 ? "/run/heca/PID.sock" : "/tmp/heca-UID/PID.sock");
	(void)cmd;
}

int cmd_control(int argc, char **argv)
{
	static const struct option lo[] = {{"pid", required_argument, 0, 'p'},
					   {"socket", required_argument, 0, 's'},
					   {"cluster", required_argument, 0, 'c'},
					   {"sponsors", required_argument, 0, 'S'},
					   {"help", no_argument, 0, 'h'},
					   {0, 0, 0, 0}};
	const char *cmd = argv[0], *sock = NULL, *cluster = NULL, *sponsors = NULL;
	char path[128], line[512];
	long pid = 0;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'p': pid = strtol(optarg, NULL, 10); break;
		case 's': sock = optarg; break;
		case 'c': cluster = optarg; break;
		case 'S': sponsors = optarg; break;
		case 'h': usage(stdout, cmd); return 0;
		default: usage(stderr, cmd); return 2;
		}
	}
	if (!strcmp(cmd, "status") && (cluster || sponsors)) {
		char *list = NULL, why[512];
		int rc;
		if (sponsors)
			return status_sponsors(sponsors);
		if ((rc = heca__cluster_file_read(cluster, &list, why, sizeof(why)))) {
			fprintf(stderr, "heca status: %s\n", why);
			return 2;
		}
		rc = status_sponsors(list);
		free(list);
		return rc;
	}
	if (!sock && pid <= 0) {
		fprintf(stderr, "heca %s: say which process: --pid PID or --socket PATH\n", cmd);
		usage(stderr, cmd);
		return 2;
	}
	if (!sock) {
		cli_control_path(pid, path, sizeof(path));
		sock = path;
	}
	if (!strcmp(cmd, "status"))
		return ask(sock, "status", 1);
	if (!strcmp(cmd, "reload"))
		return ask(sock, "reload", 1);
	if (optind >= argc) {
		fprintf(stderr, "heca %s: which sponsor?\n", cmd);
		return 2;
	}
	snprintf(line, sizeof(line), "%s %s", cmd, argv[optind]);
	return ask(sock, line, 1);
}
