/* SPDX-License-Identifier: MIT */
/*
 * cli.h - what the subcommands of the heca tool share: starting local sponsors, printing
 * statistics, logging to stderr.
 */
#ifndef HECA_CLI_H
#define HECA_CLI_H

#include <stdint.h>
#include <sys/types.h>

#include "heca.h"

#define CLI_MAX_SPAWN 16

struct spawned {
	int n;
	pid_t pid[CLI_MAX_SPAWN];
	char addr[CLI_MAX_SPAWN][64];
	char list[CLI_MAX_SPAWN * 64]; /* "a,b,c" */
};

/* Start n hecad processes on 127.0.0.1 port 0 with the given capacity. Returns 0 or -errno,
 * printing why on stderr. */
int cli_spawn_sponsors(struct spawned *sp, int n, const char *capacity);
/* SIGTERM them and wait. */
void cli_stop_sponsors(struct spawned *sp);

void cli_log(void *arg, enum heca_log_level level, const char *msg);
void cli_print_stats(const struct heca_stats *st);

int cmd_demo(int argc, char **argv);

#endif
