// SPDX-License-Identifier: MIT
/*
 * cgroup.c - the memory limit of the cgroup this process runs in (v2 memory.max, or v1
 * memory.limit_in_bytes), so the local budget can follow "pressure by cgroup constraint".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heca_int.h"

static int read_u64(const char *path, uint64_t *v)
{
	char buf[64];
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	if (!fgets(buf, sizeof(buf), f)) {
		fclose(f);
		return -EIO;
	}
	fclose(f);
	if (!strncmp(buf, "max", 3))
		return -ENOENT;
	*v = strtoull(buf, NULL, 10);
	/* v1 reports "unlimited" as a huge page-rounded number. */
	if (*v >= (1ull << 60))
		return -ENOENT;
	return 0;
}

int heca__cgroup_limit(uint64_t *bytes, char *why, size_t whylen)
{
	char line[4096], path[4200];
	FILE *f = fopen("/proc/self/cgroup", "re");
	int rc = -ENOENT;

	if (!f) {
		snprintf(why, whylen, "cannot read /proc/self/cgroup");
		return -errno;
	}
	snprintf(why, whylen, "no memory cgroup limit is set for this process");
	while (fgets(line, sizeof(line), f)) {
		char *ctrl = strchr(line, ':'), *cg;
		if (!ctrl)
			continue;
		cg = strchr(ctrl + 1, ':');
		if (!cg)
			continue;
		*cg++ = '\0';
		cg[strcspn(cg, "\n")] = '\0';
		ctrl++;
		if (*ctrl == '\0') { /* v2 unified hierarchy */
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", cg);
			if (read_u64(path, bytes) == 0) {
				rc = 0;
				break;
			}
			snprintf(path, sizeof(path), "/sys/fs/cgroup/unified%s/memory.max", cg);
			if (read_u64(path, bytes) == 0) {
				rc = 0;
				break;
			}
		} else if (strstr(ctrl, "memory")) { /* v1 */
			snprintf(path, sizeof(path), "/sys/fs/cgroup/memory%s/memory.limit_in_bytes",
				 cg);
			if (read_u64(path, bytes) == 0) {
				rc = 0;
				break;
			}
		}
	}
	fclose(f);
	return rc;
}
