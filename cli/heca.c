// SPDX-License-Identifier: MIT
/*
 * heca.c - the heca command-line tool: one binary, one subcommand per job.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: heca COMMAND [OPTIONS]\n"
		   "\n"
		   "commands:\n"
		   "  run      run an unmodified program with more memory than the machine has\n"
		   "  demo     fill a region larger than local memory, read it back, verify it\n"
		   "  bench    the original Hecatonchire measurements beside their baselines\n"
		   "  status   a running demander's counters and sponsors, or a cluster's sponsors\n"
		   "  add      give a running demander another sponsor\n"
		   "  drain    move a running demander's stripes off a sponsor\n"
		   "  reload   make a running demander read its cluster file again\n"
		   "  help     this text; `heca COMMAND --help` describes a command\n"
		   "\n"
		   "The memory sponsor is a separate program: hecad --help.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "run"))
		return cmd_run(argc - 1, argv + 1);
	if (!strcmp(argv[1], "demo"))
		return cmd_demo(argc - 1, argv + 1);
	if (!strcmp(argv[1], "status") || !strcmp(argv[1], "add") || !strcmp(argv[1], "drain") ||
	    !strcmp(argv[1], "reload"))
		return cmd_control(argc - 1, argv + 1);
	if (!strcmp(argv[1], "bench"))
		return cmd_bench(argc - 1, argv + 1);
	if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "heca: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
