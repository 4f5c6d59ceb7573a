/* SPDX-License-Identifier: MIT */
/*
 * auth.h - cluster keys and the HMAC-SHA256 challenge-response of the AUTH exchange, shared by
 * the demander library and the sponsor daemon. See docs/protocol.md, "Authentication".
 */
#ifndef HECA_AUTH_H
#define HECA_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define HECA_AUTH_KEY_MIN   32	/* bytes of secret a key file must hold at least */
#define HECA_AUTH_KEY_MAX   128 /* and at most */
#define HECA_AUTH_MAC_LEN   32	/* HMAC-SHA256 */
#define HECA_AUTH_NONCE_LEN 32

/* Labels of the two MACs: what the demander proves, and what the sponsor proves back. They
 * differ so that neither side's MAC can be reflected as the other's. */
#define HECA_AUTH_LABEL_DEMANDER "heca-auth-v1"
#define HECA_AUTH_LABEL_SPONSOR	 "heca-sponsor-v1"

/*
 * Read a cluster key file: hex digits (at least 2 x HECA_AUTH_KEY_MIN, at most
 * 2 x HECA_AUTH_KEY_MAX, an even number), whitespace anywhere ignored, nothing else. The file
 * must be a regular file without any group or other permission bits (mode 0600 or 0400).
 * key must have room for HECA_AUTH_KEY_MAX bytes; *keylen gets the key's length. Returns 0;
 * -EPERM if the file is open to group or others; -EINVAL if it is not a regular file, not hex,
 * or too short or too long; or the -errno of open/read. On error, err[0..errlen) says why in
 * one line naming the path (never the key). Prints nothing.
 */
int heca__auth_load_key(const char *path, uint8_t *key, size_t *keylen, char *err, size_t errlen);

/*
 * out = HMAC-SHA256(key, label || cluster || demander || sponsor || snonce || cnonce), label
 * without its terminating NUL (at most 32 bytes). Returns 0, or -EINVAL for a bad key length
 * or label. Allocates nothing. Thread-safe.
 */
int heca__auth_mac(const uint8_t *key, size_t keylen, const char *label, const uint8_t cluster[16],
		   const uint8_t demander[16], const uint8_t sponsor[16], const uint8_t snonce[32],
		   const uint8_t cnonce[32], uint8_t out[32]);

/* Compare two MACs in constant time. Returns 0 if equal, -EACCES if not. */
int heca__auth_check(const uint8_t a[32], const uint8_t b[32]);

/* Overwrite secret bytes in a way the compiler may not optimise out. */
void heca__auth_wipe(void *p, size_t len);

#endif
