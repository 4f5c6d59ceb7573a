// SPDX-License-Identifier: MIT
/*
 * auth.c - cluster key files and the AUTH exchange's MACs (HMAC-SHA256, src/sha256.c, which
 * allocates nothing). The key never leaves this process: only MACs over fresh nonces cross
 * the wire.
 */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sha256.h"

#define LABEL_MAX 32
/* Room for the longest valid file plus some whitespace; anything longer is refused. */
#define FILE_MAX 4096

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

int heca__auth_load_key(const char *path, uint8_t *key, size_t *keylen, char *err, size_t errlen)
{
	char text[FILE_MAX + 1];
	size_t have = 0, nd = 0;
	struct stat st;
	int fd, rc = 0, hi = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "key file %s: %s", path, strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st)) {
		rc = -errno;
		snprintf(err, errlen, "key file %s: %s", path, strerror(-rc));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		snprintf(err, errlen, "key file %s: not a regular file", path);
		goto out_close;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		rc = -EPERM;
		snprintf(err, errlen,
			 "key file %s: mode %04o lets group or others at it; chmod 600 it", path,
			 (unsigned)(st.st_mode & 07777));
		goto out_close;
	}
	for (;;) {
		ssize_t n = read(fd, text + have, sizeof(text) - have);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			snprintf(err, errlen, "key file %s: %s", path, strerror(-rc));
			goto out_wipe;
		}
		if (n == 0)
			break;
		have += (size_t)n;
		if (have == sizeof(text)) {
			rc = -EINVAL;
			snprintf(err, errlen, "key file %s: longer than %d bytes", path, FILE_MAX);
			goto out_wipe;
		}
	}
	for (size_t i = 0; i < have; i++) {
		int ch = (unsigned char)text[i], v = hexval(ch);

		if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f')
			continue;
		if (v < 0) {
			rc = -EINVAL;
			snprintf(err, errlen,
				 "key file %s: not hex (byte %zu); want %d to %d hex digits", path,
				 i, 2 * HECA_AUTH_KEY_MIN, 2 * HECA_AUTH_KEY_MAX);
			goto out_wipe;
		}
		if (nd / 2 >= HECA_AUTH_KEY_MAX) {
			rc = -EINVAL;
			snprintf(err, errlen, "key file %s: key longer than %d bytes", path,
				 HECA_AUTH_KEY_MAX);
			goto out_wipe;
		}
		if (hi < 0) {
			hi = v;
		} else {
			key[nd / 2] = (uint8_t)(hi << 4 | v);
			hi = -1;
		}
		nd++;
	}
	if (nd % 2) {
		rc = -EINVAL;
		snprintf(err, errlen, "key file %s: odd number of hex digits", path);
		goto out_wipe;
	}
	if (nd / 2 < HECA_AUTH_KEY_MIN) {
		rc = -EINVAL;
		snprintf(err, errlen, "key file %s: key too short (%zu bytes, need at least %d)",
			 path, nd / 2, HECA_AUTH_KEY_MIN);
		goto out_wipe;
	}
	*keylen = nd / 2;
out_wipe:
	if (rc)
		heca__auth_wipe(key, HECA_AUTH_KEY_MAX);
	heca__auth_wipe(text, sizeof(text));
out_close:
	close(fd);
	return rc;
}

int heca__auth_mac(const uint8_t *key, size_t keylen, const char *label, const uint8_t cluster[16],
		   const uint8_t demander[16], const uint8_t sponsor[16], const uint8_t snonce[32],
		   const uint8_t cnonce[32], uint8_t out[32])
{
	uint8_t msg[LABEL_MAX + 3 * 16 + 2 * HECA_AUTH_NONCE_LEN];
	size_t ll = label ? strlen(label) : 0, n = 0;

	if (!key || keylen < HECA_AUTH_KEY_MIN || keylen > HECA_AUTH_KEY_MAX || ll == 0 ||
	    ll > LABEL_MAX)
		return -EINVAL;
	memcpy(msg, label, ll);
	n = ll;
	memcpy(msg + n, cluster, 16);
	n += 16;
	memcpy(msg + n, demander, 16);
	n += 16;
	memcpy(msg + n, sponsor, 16);
	n += 16;
	memcpy(msg + n, snonce, HECA_AUTH_NONCE_LEN);
	n += HECA_AUTH_NONCE_LEN;
	memcpy(msg + n, cnonce, HECA_AUTH_NONCE_LEN);
	n += HECA_AUTH_NONCE_LEN;
	heca__hmac_sha256(key, keylen, msg, n, out);
	return 0;
}

int heca__auth_check(const uint8_t a[32], const uint8_t b[32])
{
	volatile uint8_t d = 0;

	for (int i = 0; i < HECA_AUTH_MAC_LEN; i++) /* every byte, whatever the first differs */
		d |= a[i] ^ b[i];
	return d ? -EACCES : 0;
}

void heca__auth_wipe(void *p, size_t len)
{
	heca__wipe(p, len);
}
