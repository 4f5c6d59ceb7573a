// SPDX-License-Identifier: MIT
/*
 * placement.c - which sponsor holds a stripe: rendezvous (highest random weight) hashing of
 * (cluster, segment, stripe) over the sponsors, so membership changes move few stripes.
 */
#include <math.h>
#include <string.h>

#include "heca_int.h"

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

void heca__place_rank(const uint8_t cluster[16], uint32_t seg, uint64_t stripe,
		      const uint64_t *keys, const double *weights, unsigned int n,
		      unsigned int *order)
{
	uint64_t c0, c1, base;
	double score[HECA_PLACE_MAX];

	memcpy(&c0, cluster, 8);
	memcpy(&c1, cluster + 8, 8);
	base = mix(c0 ^ mix(c1 ^ mix(((uint64_t)seg << 32) ^ mix(stripe))));
	for (unsigned int i = 0; i < n && i < HECA_PLACE_MAX; i++) {
		/* Weighted rendezvous: -w / ln(u) with u uniform in (0, 1) from the hash; a
		 * sponsor with twice the weight wins twice as many stripes. */
		double u = ((double)(mix(base ^ keys[i]) >> 11) + 0.5) / 9007199254740992.0;
		score[i] = weights[i] > 0 ? -weights[i] / log(u) : -1;
		order[i] = i;
	}
	for (unsigned int i = 1; i < n && i < HECA_PLACE_MAX; i++) {
		unsigned int k = order[i], j = i;
		while (j > 0 && score[order[j - 1]] < score[k]) {
			order[j] = order[j - 1];
			j--;
		}
		order[j] = k;
	}
}
