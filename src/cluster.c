// SPDX-License-Identifier: MIT
/*
 * cluster.c - the cluster file: one sponsor per line as `ID HOST:PORT CAPACITY`, so a set of
 * sponsors can be named once and shared by demanders, `heca status` and `heca reload`.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heca_int.h"

/*
 * Lines: `ID HOST:PORT CAPACITY`, where ID is the sponsor's 32-hex-digit id or `-`, and
 * CAPACITY a size (512M, 4G) or `-`; `#` starts a comment; blank lines are skipped. Only the
 * address is needed to connect; `heca status --cluster FILE` compares the rest with what
 * each sponsor reports. Returns 0 and a malloc'd "a,b,c" list in *list, or -errno with words
 * in err.
 */
int heca__cluster_file_read(const char *path, char **list, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char line[512];
	size_t len = 0, cap = 256;
	unsigned int lineno = 0, n = 0;
	char *out;

	if (!f) {
		int rc = -errno;
		snprintf(err, errlen, "cluster file %s: %s", path, strerror(-rc));
		return rc;
	}
	out = malloc(cap);
	if (!out) {
		fclose(f);
		return -ENOMEM;
	}
	out[0] = '\0';
	while (fgets(line, sizeof(line), f)) {
		char id[64], addr[256], size[64], extra[8];
		uint64_t bytes;
		int k;

		lineno++;
		line[strcspn(line, "#\n")] = '\0';
		k = sscanf(line, "%63s %255s %63s %7s", id, addr, size, extra);
		if (k <= 0)
			continue;
		if (k != 3 || (strcmp(id, "-") && (strlen(id) != 32 || strspn(id, "0123456789abcdefABCDEF") != 32)) ||
		    !strchr(addr, ':') || (strcmp(size, "-") && heca_parse_size(size, &bytes))) {
			snprintf(err, errlen,
				 "cluster file %s line %u: expected `ID HOST:PORT CAPACITY` (ID 32 hex "
				 "digits or -, CAPACITY like 4G or -)",
				 path, lineno);
			free(out);
			fclose(f);
			return -EINVAL;
		}
		if (len + strlen(addr) + 2 > cap) {
			char *nb = realloc(out, cap * 2 + strlen(addr));
			if (!nb) {
				free(out);
				fclose(f);
				return -ENOMEM;
			}
			out = nb;
			cap = cap * 2 + strlen(addr);
		}
		len += (size_t)sprintf(out + len, "%s%s", n++ ? "," : "", addr);
	}
	fclose(f);
	if (!n) {
		snprintf(err, errlen, "cluster file %s names no sponsor", path);
		free(out);
		return -EINVAL;
	}
	*list = out;
	return 0;
}
