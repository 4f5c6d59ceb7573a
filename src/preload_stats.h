/* SPDX-License-Identifier: MIT */
/*
 * preload_stats.h - the record a program under `heca run --stats` leaves at exit in the file
 * named by HECA_STATS_FILE (one per process that used heca), for heca run to print.
 */
#ifndef HECA_PRELOAD_STATS_H
#define HECA_PRELOAD_STATS_H

#include <stdint.h>

#include "heca.h"

#define HECA_PRELOAD_STATS_MAGIC 0x5441545341434548ull /* "HECASTAT" */

struct heca_preload_stats {
	uint64_t magic;
	int64_t pid;
	struct heca_stats st;
};

#endif
