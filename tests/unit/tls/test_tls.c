/* Unit tests of src/tls: handshakes over a socketpair with certificates and keys made at test time.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "tls.h"

static char dir_good[64], dir_other[64]; /* CA "good" and an unrelated CA "other" */
static char dir_mixed[64]; /* trusts CA "good", presents the client certificate of "other" */
static char err[COREIO__TLS_ERR_MAX];

/* ---- certificates made at test time ---- */

struct keycert {
	gnutls_x509_privkey_t key;
	gnutls_x509_crt_t crt;
};

static void make_cert(struct keycert *kc, const char *cn, const struct keycert *issuer, bool ca,
		      bool server)
{
	unsigned char serial[8];
	time_t now = time(NULL);

	assert_int_equal(gnutls_x509_privkey_init(&kc->key), 0);
	assert_int_equal(
	    gnutls_x509_privkey_generate(kc->key, GNUTLS_PK_ECDSA,
					 GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0),
	    0);
	assert_int_equal(gnutls_x509_crt_init(&kc->crt), 0);
	assert_int_equal(gnutls_x509_crt_set_version(kc->crt, 3), 0);
	assert_int_equal(gnutls_x509_crt_set_key(kc->crt, kc->key), 0);
	assert_int_equal(gnutls_x509_crt_set_dn_by_oid(kc->crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn,
						       (unsigned)strlen(cn)),
			 0);
	for (size_t i = 0; i < sizeof(serial); i++)
		serial[i] = (unsigned char)(rand() & 0x7f);
	assert_int_equal(gnutls_x509_crt_set_serial(kc->crt, serial, sizeof(serial)), 0);
	assert_int_equal(gnutls_x509_crt_set_activation_time(kc->crt, now - 3600), 0);
	assert_int_equal(gnutls_x509_crt_set_expiration_time(kc->crt, now + 86400), 0);
	assert_int_equal(gnutls_x509_crt_set_basic_constraints(kc->crt, ca, -1), 0);
	if (ca) {
		assert_int_equal(gnutls_x509_crt_set_key_usage(kc->crt, GNUTLS_KEY_KEY_CERT_SIGN),
				 0);
	} else {
		assert_int_equal(
		    gnutls_x509_crt_set_key_usage(kc->crt, GNUTLS_KEY_DIGITAL_SIGNATURE), 0);
		assert_int_equal(
		    gnutls_x509_crt_set_key_purpose_oid(
			kc->crt, server ? GNUTLS_KP_TLS_WWW_SERVER : GNUTLS_KP_TLS_WWW_CLIENT, 0),
		    0);
		if (server) {
			unsigned char lo[4] = {127, 0, 0, 1};

			assert_int_equal(
			    gnutls_x509_crt_set_subject_alt_name(
				kc->crt, GNUTLS_SAN_DNSNAME, "localhost", 9, GNUTLS_FSAN_APPEND),
			    0);
			assert_int_equal(
			    gnutls_x509_crt_set_subject_alt_name(kc->crt, GNUTLS_SAN_IPADDRESS, lo,
								 4, GNUTLS_FSAN_APPEND),
			    0);
		}
	}
	assert_int_equal(gnutls_x509_crt_sign2(kc->crt, issuer ? issuer->crt : kc->crt,
					       issuer ? issuer->key : kc->key, GNUTLS_DIG_SHA256,
					       0),
			 0);
}

static void write_pem(const char *dir, const char *name, gnutls_datum_t *d)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(d->data, 1, d->size, f), d->size);
	fclose(f);
	gnutls_free(d->data);
}

static void save(const char *dir, const char *stem, const struct keycert *kc)
{
	gnutls_datum_t d;
	char name[64];

	assert_int_equal(gnutls_x509_crt_export2(kc->crt, GNUTLS_X509_FMT_PEM, &d), 0);
	snprintf(name, sizeof(name), "%s-cert.pem", stem);
	write_pem(dir, name, &d);
	if (strcmp(stem, "ca") == 0)
		return;
	assert_int_equal(gnutls_x509_privkey_export2(kc->key, GNUTLS_X509_FMT_PEM, &d), 0);
	snprintf(name, sizeof(name), "%s-key.pem", stem);
	write_pem(dir, name, &d);
}

static void free_kc(struct keycert *kc)
{
	gnutls_x509_crt_deinit(kc->crt);
	gnutls_x509_privkey_deinit(kc->key);
}

/* dir gets ca-cert.pem and a server and client pair signed by its CA. */
static void make_dir(char *dir, size_t len, const char *ca_name)
{
	struct keycert ca, server, client;

	snprintf(dir, len, "/tmp/coreio-tls-XXXXXX");
	assert_non_null(mkdtemp(dir));
	make_cert(&ca, ca_name, NULL, true, false);
	make_cert(&server, "coreio-vm", &ca, false, true);
	make_cert(&client, "model", &ca, false, false);
	save(dir, "ca", &ca);
	save(dir, "server", &server);
	save(dir, "client", &client);
	free_kc(&ca);
	free_kc(&server);
	free_kc(&client);
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void copy(const char *from, const char *to, const char *name)
{
	char path[256], buf[8192];
	size_t n;
	FILE *in, *out;

	snprintf(path, sizeof(path), "%s/%s", from, name);
	in = fopen(path, "r");
	assert_non_null(in);
	snprintf(path, sizeof(path), "%s/%s", to, name);
	out = fopen(path, "w");
	assert_non_null(out);
	n = fread(buf, 1, sizeof(buf), in);
	assert_int_equal(fwrite(buf, 1, n, out), n);
	fclose(in);
	fclose(out);
}

static void rm_dir(const char *dir)
{
	const char *names[] = {"ca-cert.pem",	  "server-cert.pem", "server-key.pem",
			       "client-cert.pem", "client-key.pem",  "keys.psk",
			       "other.psk",	  "bad.psk"};
	char path[256];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		unlink(path);
	}
	rmdir(dir);
}

static int setup(void **state)
{
	(void)state;
	srand(1);
	make_dir(dir_good, sizeof(dir_good), "good CA");
	make_dir(dir_other, sizeof(dir_other), "other CA");
	write_file(
	    dir_good, "keys.psk",
	    "# test keys\nmodel:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"
	    "second:ffeeddccbbaa99887766554433221100\n");
	write_file(dir_good, "other.psk",
		   "model:1111111111111111111111111111111111111111111111111111111111111111\n");
	write_file(dir_good, "bad.psk", "model:12345\n");
	snprintf(dir_mixed, sizeof(dir_mixed), "/tmp/coreio-tls-XXXXXX");
	assert_non_null(mkdtemp(dir_mixed));
	copy(dir_good, dir_mixed, "ca-cert.pem");
	copy(dir_other, dir_mixed, "client-cert.pem");
	copy(dir_other, dir_mixed, "client-key.pem");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	rm_dir(dir_good);
	rm_dir(dir_other);
	rm_dir(dir_mixed);
	return 0;
}

/* ---- a handshake between two sessions on a socketpair, in one thread ---- */

struct pair {
	int fd[2];
	struct coreio__tls *c, *s;
	int crc, src; /* handshake results: 1 while not done */
};

static void pair_open(struct pair *p, const struct coreio__tls_creds *cc,
		      const struct coreio__tls_creds *sc, const char *name)
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fd), 0);
	assert_int_equal(coreio__tls_new(&p->c, cc, p->fd[0], name, err, sizeof(err)), 0);
	assert_int_equal(coreio__tls_new(&p->s, sc, p->fd[1], NULL, err, sizeof(err)), 0);
	p->crc = p->src = 1;
}

/* Run both handshakes until each has finished or failed (bounded). */
static void pair_handshake(struct pair *p)
{
	for (int i = 0; i < 1000 && (p->crc == 1 || p->src == 1); i++) {
		struct pollfd pfd[2] = {{p->fd[0], POLLIN, 0}, {p->fd[1], POLLIN, 0}};
		int r;

		if (p->crc == 1) {
			r = coreio__tls_handshake(p->c);
			p->crc = r == -EAGAIN ? 1 : r;
		}
		if (p->src == 1) {
			r = coreio__tls_handshake(p->s);
			p->src = r == -EAGAIN ? 1 : r;
		}
		poll(pfd, 2, 10);
	}
}

static void pair_close(struct pair *p)
{
	coreio__tls_free(p->c);
	coreio__tls_free(p->s);
	close(p->fd[0]);
	close(p->fd[1]);
}

/* Send len bytes through from -> to and check they arrive intact. */
static void transfer(struct coreio__tls *from, struct coreio__tls *to, size_t len)
{
	unsigned char *out = malloc(len), *in = malloc(len);
	size_t sent = 0, got = 0;

	assert_non_null(out);
	assert_non_null(in);
	for (size_t i = 0; i < len; i++)
		out[i] = (unsigned char)(i * 7 + 3);
	for (int guard = 0; guard < 100000 && got < len; guard++) {
		if (sent < len) {
			ssize_t n = coreio__tls_send(from, out + sent, len - sent);

			if (n > 0)
				sent += (size_t)n;
			else
				assert_int_equal(n, -EAGAIN);
		}
		while (got < len) {
			ssize_t n = coreio__tls_recv(to, in + got, len - got);

			if (n == -EAGAIN)
				break;
			if (n <= 0)
				print_error("recv %zd: %s\n", n, coreio__tls_error(to));
			assert_true(n > 0);
			got += (size_t)n;
		}
	}
	assert_int_equal(got, len);
	assert_memory_equal(in, out, len);
	assert_int_equal(coreio__tls_pending(to), 0);
	free(out);
	free(in);
}

static struct coreio__tls_creds *x509(enum coreio__tls_role role, const char *dir)
{
	struct coreio__tls_creds *c = NULL;

	assert_int_equal(coreio__tls_creds_x509(&c, role, dir, err, sizeof(err)), 0);
	return c;
}

static struct coreio__tls_creds *psk(enum coreio__tls_role role, const char *file, const char *id)
{
	struct coreio__tls_creds *c = NULL;
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", dir_good, file);
	assert_int_equal(coreio__tls_creds_psk(&c, role, path, id, err, sizeof(err)), 0);
	return c;
}

static void test_x509_ok(void **state)
{
	struct coreio__tls_creds *cc = x509(COREIO__TLS_CLIENT, dir_good);
	struct coreio__tls_creds *sc = x509(COREIO__TLS_SERVER, dir_good);
	struct pair p;

	(void)state;
	pair_open(&p, cc, sc, "127.0.0.1");
	pair_handshake(&p);
	assert_int_equal(p.crc, 0);
	assert_int_equal(p.src, 0);
	assert_non_null(strstr(coreio__tls_peer(p.s), "CN=model"));
	assert_non_null(strstr(coreio__tls_peer(p.c), "CN=coreio-vm"));
	transfer(p.c, p.s, 100);
	transfer(p.s, p.c, 1 << 20); /* many records, partial sends */
	transfer(p.c, p.s, 300000);
	pair_close(&p);
	coreio__tls_creds_free(cc);
	coreio__tls_creds_free(sc);
}

/* A server certificate from another CA, or one that does not name the host. */
static void test_x509_refused(void **state)
{
	struct coreio__tls_creds *cc = x509(COREIO__TLS_CLIENT, dir_good);
	struct coreio__tls_creds *sc_other = x509(COREIO__TLS_SERVER, dir_other);
	struct coreio__tls_creds *sc = x509(COREIO__TLS_SERVER, dir_good);
	struct coreio__tls_creds *cc_other = x509(COREIO__TLS_CLIENT, dir_mixed);
	struct pair p;
	char buf[16];

	(void)state;
	pair_open(&p, cc, sc_other, "127.0.0.1");
	pair_handshake(&p);
	assert_int_equal(p.crc, -EACCES);
	assert_non_null(strstr(coreio__tls_error(p.c), "certificate is refused"));
	assert_int_equal(p.src, -EACCES); /* told by the client's alert */
	assert_non_null(strstr(coreio__tls_error(p.s), "refused"));
	pair_close(&p);

	pair_open(&p, cc, sc, "vm.example.org");
	pair_handshake(&p);
	assert_int_equal(p.crc, -EACCES);
	pair_close(&p);

	/* A client certificate from another CA: TLS 1.3 lets the client finish
	 * first; the server refuses, and the client learns it on its next read. */
	pair_open(&p, cc_other, sc, "localhost");
	pair_handshake(&p);
	assert_int_equal(p.src, -EACCES);
	assert_non_null(strstr(coreio__tls_error(p.s), "certificate"));
	if (p.crc == 0) {
		ssize_t n = -EAGAIN;

		for (int i = 0; i < 100 && n == -EAGAIN; i++) {
			n = coreio__tls_recv(p.c, buf, sizeof(buf));
			usleep(1000);
		}
		assert_true(n < 0 && n != -EAGAIN);
		assert_non_null(strstr(coreio__tls_error(p.c), "refused"));
	}
	pair_close(&p);
	coreio__tls_creds_free(cc);
	coreio__tls_creds_free(sc);
	coreio__tls_creds_free(sc_other);
	coreio__tls_creds_free(cc_other);
}

static void test_psk(void **state)
{
	struct coreio__tls_creds *sc = psk(COREIO__TLS_SERVER, "keys.psk", NULL);
	struct coreio__tls_creds *cc = psk(COREIO__TLS_CLIENT, "keys.psk", NULL);
	struct coreio__tls_creds *cc2 = psk(COREIO__TLS_CLIENT, "keys.psk", "second");
	struct coreio__tls_creds *bad = psk(COREIO__TLS_CLIENT, "other.psk", NULL);
	struct pair p;

	(void)state;
	pair_open(&p, cc, sc, NULL);
	pair_handshake(&p);
	assert_int_equal(p.crc, 0);
	assert_int_equal(p.src, 0);
	assert_string_equal(coreio__tls_peer(p.s), "psk identity model");
	transfer(p.c, p.s, 65536);
	pair_close(&p);

	pair_open(&p, cc2, sc, NULL);
	pair_handshake(&p);
	assert_int_equal(p.src, 0);
	assert_string_equal(coreio__tls_peer(p.s), "psk identity second");
	pair_close(&p);

	pair_open(&p, bad, sc, NULL); /* the right identity, a wrong key */
	pair_handshake(&p);
	assert_true(p.src < 0 || p.crc < 0);
	pair_close(&p);
	coreio__tls_creds_free(sc);
	coreio__tls_creds_free(cc);
	coreio__tls_creds_free(cc2);
	coreio__tls_creds_free(bad);
}

/*
 * Take what from's session sent into in (at *got, up to cap): records the
 * session read ahead come through coreio__tls_recv_held() without reading
 * the socket, and -EAGAIN always means the session holds nothing.
 */
static void drain(struct coreio__tls *to, unsigned char *in, size_t *got, size_t cap,
		  size_t *held_bytes)
{
	for (;;) {
		/* A small receive first: the session reads far more ahead. */
		size_t want = cap - *got < 100 ? cap - *got : 100;
		ssize_t n;

		if (want == 0)
			break;
		n = coreio__tls_recv(to, in + *got, want);
		if (n == -EAGAIN) {
			assert_int_equal(coreio__tls_pending(to), 0);
			break;
		}
		assert_true(n > 0);
		*got += (size_t)n;
		while (*got < cap) {
			n = coreio__tls_recv_held(to, in + *got, cap - *got);
			if (n == -EAGAIN)
				break;
			assert_true(n > 0);
			*got += (size_t)n;
			*held_bytes += (size_t)n;
		}
		assert_true(*got == cap || coreio__tls_pending(to) == 0);
	}
}

/*
 * Large-DMA-like frames (a 24-byte header, 16320 bytes of payload, 40 of
 * padding, each its own iovec) through coreio__tls_sendv() into a small
 * socket buffer: records span iovecs, batches say -EAGAIN part sent, and
 * the call after -EAGAIN gets a copy of the bytes (what libcoreio passes).
 */
static void test_batched_records(void **state)
{
	struct coreio__tls_creds *cc = x509(COREIO__TLS_CLIENT, dir_good);
	struct coreio__tls_creds *sc = x509(COREIO__TLS_SERVER, dir_good);
	enum { PIECES = 40, HDR = 24, DATA = 16320, PAD = 40, TAIL = 7 };
	static const unsigned char zeros[PAD];
	size_t total = PIECES * (HDR + DATA + PAD) + TAIL, done = 0, got = 0, held = 0;
	unsigned char *hdrs = malloc(PIECES * HDR), *data = malloc(PIECES * DATA);
	unsigned char *want = malloc(total), *in = malloc(total), tail[TAIL] = "tail!!";
	struct iovec iov[3 * PIECES + 1];
	int niov = 0, sndbuf = 4096, eagain = 0;
	struct pair p;

	(void)state;
	assert_non_null(hdrs);
	assert_non_null(data);
	assert_non_null(want);
	assert_non_null(in);
	for (size_t i = 0; i < PIECES * HDR; i++)
		hdrs[i] = (unsigned char)(i * 13 + 1);
	for (size_t i = 0; i < PIECES * DATA; i++)
		data[i] = (unsigned char)(i * 7 + 3);
	for (int k = 0; k < PIECES; k++) {
		iov[niov++] = (struct iovec){hdrs + k * HDR, HDR};
		iov[niov++] = (struct iovec){data + k * DATA, DATA};
		iov[niov++] = (struct iovec){(void *)zeros, PAD};
	}
	iov[niov++] = (struct iovec){tail, TAIL};
	for (int k = 0, off = 0; k < niov; off += (int)iov[k].iov_len, k++)
		memcpy(want + off, iov[k].iov_base, iov[k].iov_len);

	pair_open(&p, cc, sc, "127.0.0.1");
	pair_handshake(&p);
	assert_int_equal(p.crc, 0);
	assert_int_equal(p.src, 0);
	assert_int_equal(setsockopt(p.fd[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
	for (int guard = 0; guard < 100000 && got < total; guard++) {
		if (done < total) {
			ssize_t n = coreio__tls_sendv(p.c, iov, niov, done);

			if (n == -EAGAIN) {
				/* Again with a copy of the rest, not the iovecs. */
				unsigned char *copy = malloc(total - done);

				assert_non_null(copy);
				memcpy(copy, want + done, total - done);
				eagain++;
				drain(p.s, in, &got, total, &held);
				do {
					n = coreio__tls_send(p.c, copy, total - done);
					if (n == -EAGAIN)
						drain(p.s, in, &got, total, &held);
				} while (n == -EAGAIN);
				free(copy);
			}
			assert_true(n > 0);
			done += (size_t)n;
		}
		drain(p.s, in, &got, total, &held);
	}
	assert_int_equal(done, total);
	assert_int_equal(got, total);
	assert_memory_equal(in, want, total);
	assert_int_equal(coreio__tls_pending(p.s), 0);
	assert_true(eagain > 0); /* the small buffer made batches wait */
	assert_true(held > 0);	 /* and the receiver read ahead */
	/* Both ways after that, and nothing is left behind. */
	transfer(p.s, p.c, 1 << 20);
	transfer(p.c, p.s, 12345);
	pair_close(&p);
	coreio__tls_creds_free(cc);
	coreio__tls_creds_free(sc);
	free(hdrs);
	free(data);
	free(want);
	free(in);
}

/* A plain CoreIO peer (or garbage) where TLS is expected. */
static void test_not_tls(void **state)
{
	struct coreio__tls_creds *sc = x509(COREIO__TLS_SERVER, dir_good);
	struct coreio__tls *s;
	static const char hello[] = "\x01\x00\x00\x00\x00\x00\x00\x00garbage, not a ClientHello";
	int fd[2], rc = -EAGAIN;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0);
	assert_int_equal(coreio__tls_new(&s, sc, fd[1], NULL, err, sizeof(err)), 0);
	assert_int_equal(write(fd[0], hello, sizeof(hello)), (ssize_t)sizeof(hello));
	for (int i = 0; i < 100 && rc == -EAGAIN; i++)
		rc = coreio__tls_handshake(s);
	assert_int_equal(rc, -EPROTO);
	assert_non_null(strstr(coreio__tls_error(s), "does not speak TLS"));
	coreio__tls_free(s);
	close(fd[0]);
	close(fd[1]);

	/* The peer closes mid-handshake. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0);
	assert_int_equal(coreio__tls_new(&s, sc, fd[1], NULL, err, sizeof(err)), 0);
	close(fd[0]);
	rc = -EAGAIN;
	for (int i = 0; i < 100 && rc == -EAGAIN; i++)
		rc = coreio__tls_handshake(s);
	assert_true(rc < 0 && rc != -EAGAIN);
	coreio__tls_free(s);
	close(fd[1]);
	coreio__tls_creds_free(sc);
}

static void test_bad_files(void **state)
{
	struct coreio__tls_creds *c = NULL;
	char path[256];

	(void)state;
	assert_int_equal(
	    coreio__tls_creds_x509(&c, COREIO__TLS_SERVER, "/nonexistent", err, sizeof(err)),
	    -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/ca-cert.pem"));
	assert_null(c);
	snprintf(path, sizeof(path), "%s/bad.psk", dir_good);
	assert_int_equal(
	    coreio__tls_creds_psk(&c, COREIO__TLS_SERVER, path, NULL, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "bad.psk:1"));
	snprintf(path, sizeof(path), "%s/keys.psk", dir_good);
	assert_int_equal(
	    coreio__tls_creds_psk(&c, COREIO__TLS_CLIENT, path, "nobody", err, sizeof(err)),
	    -ENOENT);
	assert_non_null(strstr(err, "nobody"));
	assert_int_equal(coreio__tls_creds_psk(&c, COREIO__TLS_CLIENT, "/nonexistent.psk", NULL,
					       err, sizeof(err)),
			 -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_x509_ok), cmocka_unit_test(test_x509_refused),
	    cmocka_unit_test(test_psk),	    cmocka_unit_test(test_batched_records),
	    cmocka_unit_test(test_not_tls), cmocka_unit_test(test_bad_files),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
