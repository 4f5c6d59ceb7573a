// SPDX-License-Identifier: MIT
/*
 * test_auth.c - cluster identity against the real hecad: key files and --gen-key, the AUTH
 * challenge-response both ways, refusals, and the sponsor id kept in --state-dir.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth.h"
#include "harness.h"
#include "sponsor_client.h"
#include "net.h"
#include "sha256.h"
#include "util.h"
#include "wire.h"

static char g_dir[64];
static uint8_t g_buf[HECA_WIRE_HDR + 4096];
static const uint8_t CLUSTER[16] = {0xc1, 0x05, 0x7e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42};
#define CLUSTER_HEX "c1057e12000000000000000000000042"

struct hello_info {
	uint8_t sponsor[16];
	uint32_t flags;
	uint8_t nonce[32];
};

static void cl_send(int fd, uint8_t op, uint64_t req, const void *payload, uint32_t plen)
{
	struct heca_frame f = {
	    .opcode = op, .req_id = req, .payload = payload, .payload_len = plen};
	int rc = t_frame_send(fd, &f);

	if (rc)
		T_FAILF("send: %s", strerror(-rc));
}

/* Receive one frame into g_buf. Returns 0 or -errno (-ECONNRESET on EOF). */
static int cl_recv(int fd, struct heca_frame *f)
{
	int rc = t_frame_recv(fd, f, g_buf, sizeof(g_buf));

	if (rc == -EMSGSIZE || rc == -EPROTO || rc == -EBADMSG)
		T_FAILF("bad reply: %s", strerror(-rc));
	return rc;
}

/* One request, one reply (of the same opcode) with the expected status. */
static struct heca_frame rpc(int fd, uint8_t op, const void *payload, uint32_t plen, int status)
{
	static uint64_t id = 1;
	struct heca_frame f;
	int rc;

	cl_send(fd, op, ++id, payload, plen);
	rc = cl_recv(fd, &f);
	if (rc)
		T_FAILF("%s: no reply: %s", heca_wire_opname(op), strerror(-rc));
	ASSERT_EQ(f.opcode, op | HECA_OP_REPLY);
	ASSERT_EQ(f.req_id, id);
	if (f.status != status)
		T_FAILF("%s: status %d, want %d", heca_wire_opname(op), f.status, status);
	return f;
}

/* The peer sends ERROR err (if err) and then closes. */
static void expect_error_closed(int fd, int err)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	struct heca_frame f;
	char c;

	if (err) {
		ASSERT_EQ(cl_recv(fd, &f), 0);
		ASSERT_EQ(f.opcode, HECA_OP_ERROR);
		ASSERT_EQ(f.status, err);
	}
	ASSERT_EQ(poll(&p, 1, 5000), 1);
	ASSERT_EQ(recv(fd, &c, 1, 0), 0);
}

/* Connect and HELLO as demander dem of cluster; fills *hi on success. */
static int cl_hello(const struct t_sponsor *s, const uint8_t cluster[16], const uint8_t dem[16],
		    int status, struct hello_info *hi)
{
	uint8_t p[HECA_WIRE_HELLO_LEN] = {0};
	struct heca_frame f;
	int fd = heca__tcp_connect(s->addr, 5000);

	if (fd < 0)
		T_FAILF("connect %s: %s", s->addr, strerror(-fd));
	memcpy(p, cluster, 16);
	memcpy(p + 16, dem, 16);
	heca_put32(p + 32, HECA_CHAN_CONTROL);
	f = rpc(fd, HECA_OP_HELLO, p, sizeof(p), status);
	if (status)
		return fd;
	ASSERT_EQ(f.payload_len, HECA_WIRE_HELLO_REPLY_LEN);
	memcpy(hi->sponsor, f.payload, 16);
	hi->flags = heca_get32(f.payload + HECA_HELLO_REPLY_OFF_FLAGS);
	ASSERT_EQ(heca_get32(f.payload + 36), 0); /* reserved */
	memcpy(hi->nonce, f.payload + HECA_HELLO_REPLY_OFF_NONCE, 32);
	return fd;
}

/*
 * The demander's side of AUTH as libheca does it: prove the key, then check the sponsor's
 * proof. Returns 0 (both proved), -EACCES from the sponsor (the reply said so), or -EBADE if
 * the sponsor's mac2 does not match the key the demander holds (an impostor sponsor).
 */
static int cl_auth(int fd, const uint8_t *key, size_t keylen, const uint8_t cluster[16],
		   const uint8_t dem[16], const struct hello_info *hi)
{
	uint8_t a[HECA_WIRE_AUTH_LEN], want[32];
	struct heca_frame f;

	ASSERT_TRUE(hi->flags & HECA_HELLO_AUTH);
	ASSERT_EQ(heca__random(a, 32), 0);
	ASSERT_EQ(heca__auth_mac(key, keylen, HECA_AUTH_LABEL_DEMANDER, cluster, dem, hi->sponsor,
				 hi->nonce, a, a + 32),
		  0);
	cl_send(fd, HECA_OP_AUTH, 99, a, sizeof(a));
	ASSERT_EQ(cl_recv(fd, &f), 0);
	ASSERT_EQ(f.opcode, HECA_OP_AUTH | HECA_OP_REPLY);
	if (f.status)
		return -f.status;
	ASSERT_EQ(f.payload_len, HECA_WIRE_AUTH_REPLY_LEN);
	ASSERT_EQ(heca__auth_mac(key, keylen, HECA_AUTH_LABEL_SPONSOR, cluster, dem, hi->sponsor,
				 hi->nonce, a, want),
		  0);
	return heca__auth_check(want, f.payload) ? -EBADE : 0;
}

static void path_in(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", g_dir, name);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	int fd;

	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
	ASSERT_TRUE(fd >= 0);
	ASSERT_EQ(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	ASSERT_EQ(fchmod(fd, mode), 0);
	close(fd);
}

static int load(const char *path, uint8_t *key, size_t *keylen)
{
	char err[256] = "";
	int rc = heca__auth_load_key(path, key, keylen, err, sizeof(err));

	if (rc)
		ASSERT_TRUE(strstr(err, path) != NULL); /* the message names the file */
	return rc;
}

static void hex32(const uint8_t *b, char hex[65])
{
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", b[i]);
}

/* SHA-256 and HMAC-SHA256 against the published vectors (FIPS 180-4 examples, RFC 4231
 * cases 1, 2, 6 and 7), fed whole and a byte at a time. */
static void test_sha256_vectors(void)
{
	static const struct {
		const char *msg, *want;
	} sha[] = {
	    {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	    {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	    {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
	     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
	};
	struct heca_sha256 c;
	uint8_t out[32], key[131], a[1000];
	char hex[65];

	for (size_t t = 0; t < sizeof(sha) / sizeof(sha[0]); t++) {
		heca__sha256_init(&c);
		heca__sha256_update(&c, sha[t].msg, strlen(sha[t].msg));
		heca__sha256_final(&c, out);
		hex32(out, hex);
		ASSERT_EQ(strcmp(hex, sha[t].want), 0);
		heca__sha256_init(&c);
		for (size_t i = 0; sha[t].msg[i]; i++)
			heca__sha256_update(&c, sha[t].msg + i, 1);
		heca__sha256_final(&c, out);
		hex32(out, hex);
		ASSERT_EQ(strcmp(hex, sha[t].want), 0);
	}
	/* a million 'a', in pieces that cross block boundaries */
	memset(a, 'a', sizeof(a));
	heca__sha256_init(&c);
	for (int i = 0; i < 1000; i++)
		heca__sha256_update(&c, a, sizeof(a));
	heca__sha256_final(&c, out);
	hex32(out, hex);
	ASSERT_EQ(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
		  0);

	memset(key, 0x0b, 20);
	heca__hmac_sha256(key, 20, "Hi There", 8, out);
	hex32(out, hex);
	ASSERT_EQ(strcmp(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
		  0);
	heca__hmac_sha256((const uint8_t *)"Jefe", 4, "what do ya want for nothing?", 28, out);
	hex32(out, hex);
	ASSERT_EQ(strcmp(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
		  0);
	memset(key, 0xaa, sizeof(key));
	heca__hmac_sha256(key, 131, "Test Using Larger Than Block-Size Key - Hash Key First", 54,
			  out);
	hex32(out, hex);
	ASSERT_EQ(strcmp(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
		  0);
	{
		static const char m7[] =
		    "This is a test using a larger than block-size key and a larger than "
		    "block-size data. The key needs to be hashed before being used by the HMAC "
		    "algorithm.";
		heca__hmac_sha256(key, 131, m7, sizeof(m7) - 1, out);
		hex32(out, hex);
		ASSERT_EQ(
		    strcmp(hex, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
		    0);
	}
}

/* Fixed inputs, fixed MACs: pins the construction documented in docs/protocol.md. */
static void test_mac_vector(void)
{
	static const char *want_d =
	    "133bef7c919c56fe0e40eb27112ced15694942fed311b459bef9b1f3fa7bdcf0";
	static const char *want_s =
	    "05ddadeae12019efef5967adcb9d1ecb1d59cf9d2fe852ee008af19b067d1e0d";
	uint8_t key[32], c[16], d[16], s[16], sn[32], cn[32], out[32];
	char hex[65];

	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)i;
	memset(c, 0x11, 16);
	memset(d, 0x22, 16);
	memset(s, 0x33, 16);
	memset(sn, 0x44, 32);
	memset(cn, 0x55, 32);
	ASSERT_EQ(heca__auth_mac(key, 32, HECA_AUTH_LABEL_DEMANDER, c, d, s, sn, cn, out), 0);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", out[i]);
	ASSERT_EQ(strcmp(hex, want_d), 0);
	ASSERT_EQ(heca__auth_mac(key, 32, HECA_AUTH_LABEL_SPONSOR, c, d, s, sn, cn, out), 0);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", out[i]);
	ASSERT_EQ(strcmp(hex, want_s), 0);
	ASSERT_EQ(heca__auth_mac(key, 31, HECA_AUTH_LABEL_SPONSOR, c, d, s, sn, cn, out), -EINVAL);
	ASSERT_EQ(heca__auth_mac(key, 32, "", c, d, s, sn, cn, out), -EINVAL);
}

static void test_key_files(void)
{
	const char *hex64 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
	uint8_t key[HECA_AUTH_KEY_MAX];
	char path[128], text[512];
	size_t keylen = 0;
	struct stat st;

	/* --gen-key: a fresh 0600 file of 64 hex digits, loadable; never overwrites. */
	path_in(path, sizeof(path), "gen.key");
	{
		const char *args[] = {"--gen-key", path, NULL};
		int fd;
		ssize_t n;

		ASSERT_EQ(t_run_hecad(args), 0);
		ASSERT_EQ(stat(path, &st), 0);
		ASSERT_EQ(st.st_mode & 07777, 0600);
		fd = open(path, O_RDONLY);
		n = read(fd, text, sizeof(text) - 1);
		close(fd);
		ASSERT_EQ(n, 65);
		ASSERT_EQ(text[64], '\n');
		ASSERT_EQ(load(path, key, &keylen), 0);
		ASSERT_EQ(keylen, 32);
		ASSERT_EQ(t_run_hecad(args), 2);
		ASSERT_EQ(load(path, key, &keylen), 0); /* unchanged, still good */
	}

	/* Whitespace anywhere is ignored; upper and lower case hex. */
	path_in(path, sizeof(path), "ws.key");
	write_file(
	    path,
	    "  0001 0203 0405 0607\n0809 0A0B 0C0D 0E0F\r\n\t101112131415161718191A1B1C1D1E1F"
	    "\n\n",
	    0600);
	ASSERT_EQ(load(path, key, &keylen), 0);
	ASSERT_EQ(keylen, 32);
	for (int i = 0; i < 32; i++)
		ASSERT_EQ(key[i], i);
	write_file(path, hex64, 0400);
	ASSERT_EQ(load(path, key, &keylen), 0);

	/* Bad contents. */
	snprintf(text, sizeof(text), "%.62s", hex64);
	write_file(path, text, 0600); /* 31 bytes */
	ASSERT_EQ(load(path, key, &keylen), -EINVAL);
	snprintf(text, sizeof(text), "%s0", hex64);
	write_file(path, text, 0600); /* odd digit count */
	ASSERT_EQ(load(path, key, &keylen), -EINVAL);
	snprintf(text, sizeof(text), "%s-", hex64);
	write_file(path, text, 0600);
	ASSERT_EQ(load(path, key, &keylen), -EINVAL);
	snprintf(text, sizeof(text), "%s%s%s%s00", hex64, hex64, hex64, hex64);
	write_file(path, text, 0600); /* 129 bytes */
	ASSERT_EQ(load(path, key, &keylen), -EINVAL);
	snprintf(text, sizeof(text), "%s%s%s%s", hex64, hex64, hex64, hex64);
	write_file(path, text, 0600); /* 128 bytes: the maximum */
	ASSERT_EQ(load(path, key, &keylen), 0);
	ASSERT_EQ(keylen, 128);
	write_file(path, "", 0600);
	ASSERT_EQ(load(path, key, &keylen), -EINVAL);

	/* Open to group or others: refused whatever the content. */
	write_file(path, hex64, 0644);
	ASSERT_EQ(load(path, key, &keylen), -EPERM);
	write_file(path, hex64, 0640);
	ASSERT_EQ(load(path, key, &keylen), -EPERM);
	write_file(path, hex64, 0604);
	ASSERT_EQ(load(path, key, &keylen), -EPERM);
	path_in(path, sizeof(path), "missing.key");
	ASSERT_EQ(load(path, key, &keylen), -ENOENT);
	ASSERT_EQ(load(g_dir, key, &keylen), -EINVAL); /* a directory */
}

/* hecad refuses to start (exit 2) with a key file that is too open, short or missing. */
static void test_hecad_refuses(void)
{
	const char *hex64 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
	char path[128];
	const char *args[] = {"--listen",   "127.0.0.1:0", "--capacity", "1M",
			      "--key-file", path,	   NULL};
	const char *badid[] = {"--listen",    "127.0.0.1:0", "--capacity", "1M",
			       "--state-dir", path,	     NULL};

	path_in(path, sizeof(path), "open.key");
	write_file(path, hex64, 0644);
	ASSERT_EQ(t_run_hecad(args), 2);
	write_file(path, "0011", 0600);
	ASSERT_EQ(t_run_hecad(args), 2);
	path_in(path, sizeof(path), "missing.key");
	ASSERT_EQ(t_run_hecad(args), 2);

	/* A state dir whose id file is not an id: refuse rather than invent a new identity. */
	path_in(path, sizeof(path), "badstate");
	ASSERT_EQ(mkdir(path, 0700), 0);
	{
		char f[160];
		snprintf(f, sizeof(f), "%s/sponsor-id", path);
		write_file(f, "not an id\n", 0600);
	}
	ASSERT_EQ(t_run_hecad(badid), 1);
}

static void test_exchange(void)
{
	static const uint8_t DEM[16] = {0xde, 0x01};
	static const uint8_t DEM2[16] = {0xde, 0x02};
	uint8_t key[HECA_AUTH_KEY_MAX], wrong[HECA_AUTH_KEY_MAX], other[16];
	char kpath[128];
	const char *extra[] = {"--cluster-id", CLUSTER_HEX, "--key-file", kpath, NULL};
	struct hello_info hi;
	struct t_sponsor s;
	struct heca_frame f;
	size_t keylen, wlen;
	int fd;

	path_in(kpath, sizeof(kpath), "gen.key");
	ASSERT_EQ(load(kpath, key, &keylen), 0);
	memcpy(wrong, key, keylen);
	wrong[5] ^= 0x20;
	wlen = keylen;
	t_sponsor_start(&s, "4M", extra);

	/* Right key: AUTH succeeds both ways, then requests are served. */
	fd = cl_hello(&s, CLUSTER, DEM, 0, &hi);
	ASSERT_EQ(hi.flags, HECA_HELLO_AUTH);
	ASSERT_EQ(cl_auth(fd, key, keylen, CLUSTER, DEM, &hi), 0);
	f = rpc(fd, HECA_OP_STAT, NULL, 0, 0);
	ASSERT_EQ(f.payload_len, HECA_WIRE_STAT_LEN);
	ASSERT_EQ(heca_get64(f.payload), 1024);	  /* capacity pages */
	ASSERT_EQ(heca_get64(f.payload + 24), 1); /* demanders: only the authenticated one */
	rpc(fd, HECA_OP_ALLOC, NULL, 0, 0);
	close(fd);

	/* Wrong key: AUTH reply EACCES, then the sponsor hangs up. */
	fd = cl_hello(&s, CLUSTER, DEM2, 0, &hi);
	ASSERT_EQ(cl_auth(fd, wrong, wlen, CLUSTER, DEM2, &hi), -EACCES);
	expect_error_closed(fd, 0);
	close(fd);

	/* No AUTH: the first other request gets ERROR EACCES and a disconnect. */
	fd = cl_hello(&s, CLUSTER, DEM2, 0, &hi);
	cl_send(fd, HECA_OP_STAT, 5, NULL, 0);
	expect_error_closed(fd, EACCES);
	close(fd);

	/* A sponsor without the key cannot pretend: its mac2 (here: one made with another key,
	 * as an impostor would) fails the demander's check. The check is heca__auth_mac with the
	 * demander's key + heca__auth_check, as in cl_auth. */
	fd = cl_hello(&s, CLUSTER, DEM, 0, &hi);
	{
		uint8_t a[HECA_WIRE_AUTH_LEN], mine[32], fake[32];

		ASSERT_EQ(heca__random(a, 32), 0);
		ASSERT_EQ(heca__auth_mac(key, keylen, HECA_AUTH_LABEL_DEMANDER, CLUSTER, DEM,
					 hi.sponsor, hi.nonce, a, a + 32),
			  0);
		f = rpc(fd, HECA_OP_AUTH, a, sizeof(a), 0);
		ASSERT_EQ(heca__auth_mac(key, keylen, HECA_AUTH_LABEL_SPONSOR, CLUSTER, DEM,
					 hi.sponsor, hi.nonce, a, mine),
			  0);
		ASSERT_EQ(heca__auth_check(mine, f.payload), 0);
		ASSERT_EQ(heca__auth_mac(wrong, wlen, HECA_AUTH_LABEL_SPONSOR, CLUSTER, DEM,
					 hi.sponsor, hi.nonce, a, fake),
			  0);
		ASSERT_EQ(heca__auth_check(mine, fake), -EACCES);
		/* Nor can it replay the demander's own MAC back as its proof. */
		ASSERT_EQ(heca__auth_check(mine, a + 32), -EACCES);
		/* The demander's proof does not verify as the sponsor's for any other nonce. */
		hi.nonce[0] ^= 1;
		ASSERT_EQ(heca__auth_mac(key, keylen, HECA_AUTH_LABEL_SPONSOR, CLUSTER, DEM,
					 hi.sponsor, hi.nonce, a, fake),
			  0);
		ASSERT_EQ(heca__auth_check(fake, f.payload), -EACCES);
	}
	close(fd);

	/* Another cluster: refused at HELLO. */
	memcpy(other, CLUSTER, 16);
	other[15] ^= 1;
	fd = cl_hello(&s, other, DEM, EACCES, &hi);
	expect_error_closed(fd, 0);
	close(fd);

	/* The sponsor still serves the good demander after all that. */
	fd = cl_hello(&s, CLUSTER, DEM, 0, &hi);
	ASSERT_EQ(cl_auth(fd, key, keylen, CLUSTER, DEM, &hi), 0);
	rpc(fd, HECA_OP_STAT, NULL, 0, 0);
	close(fd);
	ASSERT_EQ(t_sponsor_stop(&s, 0), 0);
	heca__auth_wipe(key, sizeof(key));
}

/* A sponsor without a key: no AUTH flag, zero nonce; AUTH is answered EINVAL and harmless. */
static void test_keyless(void)
{
	static const uint8_t ZERO[16], DEM[16] = {0xde, 0x03};
	uint8_t a[HECA_WIRE_AUTH_LEN] = {0};
	struct hello_info hi;
	struct t_sponsor s;
	int fd;

	t_sponsor_start(&s, "1M", NULL);
	fd = cl_hello(&s, ZERO, DEM, 0, &hi);
	ASSERT_EQ(hi.flags, 0);
	for (int i = 0; i < 32; i++)
		ASSERT_EQ(hi.nonce[i], 0);
	rpc(fd, HECA_OP_AUTH, a, sizeof(a), EINVAL);
	rpc(fd, HECA_OP_STAT, NULL, 0, 0);
	close(fd);
	/* AUTH before HELLO is as wrong as anything else before HELLO. */
	fd = heca__tcp_connect(s.addr, 5000);
	ASSERT_TRUE(fd >= 0);
	cl_send(fd, HECA_OP_AUTH, 1, a, sizeof(a));
	expect_error_closed(fd, EPROTO);
	close(fd);
	ASSERT_EQ(t_sponsor_stop(&s, 0), 0);
}

static void sponsor_id_of(const char *state_dir, uint8_t id[16])
{
	static const uint8_t ZERO[16], DEM[16] = {0xde, 0x04};
	const char *with[] = {"--state-dir", state_dir, NULL};
	struct hello_info hi;
	struct t_sponsor s;
	int fd;

	t_sponsor_start(&s, "1M", state_dir ? with : NULL);
	fd = cl_hello(&s, ZERO, DEM, 0, &hi);
	memcpy(id, hi.sponsor, 16);
	close(fd);
	ASSERT_EQ(t_sponsor_stop(&s, 0), 0);
}

static void test_state_dir(void)
{
	uint8_t id1[16], id2[16], id3[16], id4[16];
	char dir[128], file[160], text[64], hex[33];
	struct stat st;
	ssize_t n;
	int fd;

	/* A directory that does not exist yet, two levels deep. */
	path_in(dir, sizeof(dir), "state/sponsor");
	snprintf(file, sizeof(file), "%s/sponsor-id", dir);
	sponsor_id_of(dir, id1);
	ASSERT_EQ(stat(file, &st), 0);
	ASSERT_TRUE(S_ISREG(st.st_mode));
	ASSERT_EQ(st.st_mode & 07777, 0600);
	ASSERT_EQ(stat(dir, &st), 0);
	ASSERT_EQ(st.st_mode & 077, 0); /* created 0700 */
	fd = open(file, O_RDONLY);
	ASSERT_TRUE(fd >= 0);
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	ASSERT_EQ(n, 33);
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", id1[i]);
	ASSERT_EQ(memcmp(text, hex, 32), 0);
	ASSERT_EQ(text[32], '\n');

	/* The second run finds it: same id. No temporary file is left behind. */
	sponsor_id_of(dir, id2);
	ASSERT_EQ(memcmp(id1, id2, 16), 0);
	{
		int entries = 0;
		FILE *ls;
		char cmd[256], line[256];
		snprintf(cmd, sizeof(cmd), "ls -A '%s'", dir);
		ls = popen(cmd, "r");
		ASSERT_TRUE(ls != NULL);
		while (fgets(line, sizeof(line), ls))
			entries++;
		pclose(ls);
		ASSERT_EQ(entries, 1);
	}

	/* Without --state-dir: a new random id per run. */
	sponsor_id_of(NULL, id3);
	sponsor_id_of(NULL, id4);
	ASSERT_TRUE(memcmp(id3, id1, 16) != 0);
	ASSERT_TRUE(memcmp(id3, id4, 16) != 0);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	snprintf(g_dir, sizeof(g_dir), "/tmp/heca-test-auth-XXXXXX");
	if (!mkdtemp(g_dir))
		T_FAILF("mkdtemp: %s", strerror(errno));
	test_sha256_vectors();
	test_mac_vector();
	test_key_files();
	test_hecad_refuses();
	test_exchange();
	test_keyless();
	test_state_dir();
	{
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "test_auth: could not remove %s\n", g_dir);
	}
	printf("test_auth: ok\n");
	return T_PASS;
}
