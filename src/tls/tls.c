/* TLS 1.3 sessions and credentials over GnuTLS for both halves (tls.h says how they are used). */
#include "tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

/*
 * TLS 1.3 only, with the AEAD ciphers fastest first: AES-128-GCM (about
 * 12% faster than AES-256-GCM with AES-NI, and as safe for our use), then
 * AES-256-GCM; ChaCha20-Poly1305 first on an x86 without AES-NI and
 * PCLMUL, where it is the fast one (and about 15 times slower where they
 * are).
 */
#define PRIO_BASE   "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL"
#define PRIO_AES    ":+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"
#define PRIO_CHACHA ":+CHACHA20-POLY1305:+AES-128-GCM:+AES-256-GCM"
#define PRIO_PSK_KX ":+ECDHE-PSK:+DHE-PSK:+PSK"

/*
 * After the handshake a session moves records through its own buffers
 * (push(), pull()): a send encrypts up to TX_BATCH bytes, record after
 * record, and hands all of them to the socket in one send(); a receive
 * reads up to RX_AHEAD bytes of records at once and GnuTLS takes them
 * from there. Both buffers start at BUF_MIN and grow with bulk transfers.
 * GnuTLS's own way costs a send() per record and two recv() per record
 * (its header, then its body), which held bulk transfers far below what
 * the cipher does.
 */
#define TX_BATCH   (256u * 1024)
#define RX_AHEAD   (256u * 1024)
#define RECORD_MAX 16384u	/* TLS 1.3's largest plaintext record */
#define BUF_MIN	   (32u * 1024) /* in and out at first: MMIO alone needs no more */

#define PSK_MAX_KEYS	 64
#define PSK_IDENTITY_MAX 128
#define PSK_KEY_MIN	 16
#define PSK_KEY_MAX	 64

struct psk_entry {
	char identity[PSK_IDENTITY_MAX];
	unsigned char key[PSK_KEY_MAX];
	size_t keylen;
};

struct coreio__tls_creds {
	enum coreio__tls_role role;
	bool psk;
	gnutls_certificate_credentials_t x509;
	gnutls_psk_server_credentials_t psk_server;
	gnutls_psk_client_credentials_t psk_client;
	struct psk_entry *keys; /* server: the file's keys */
	unsigned nkeys;
};

struct coreio__tls {
	gnutls_session_t s;
	const struct coreio__tls_creds *creds;
	int fd;
	bool batched;	  /* the handshake is done: records go through out and in */
	size_t again_len; /* a send that returned -EAGAIN: the bytes it took, else 0 */
	uint8_t *out;	  /* records built (push()) and not sent yet: out_off to out_len */
	size_t out_off, out_len, out_cap;
	uint8_t *in; /* bytes read ahead (pull()) that GnuTLS has not taken: in_off to in_len */
	size_t in_off, in_len, in_cap;
	bool in_full;	/* the last read filled in: it grows, up to RX_AHEAD */
	int rx_failed;	/* a receive that failed: its errno, returned again */
	int tx_failed;	/* a send that failed: its errno, returned again */
	bool held_only; /* a receive from what the session holds: pull() reads no socket */
	uint8_t stage[RECORD_MAX]; /* a record's plaintext gathered from several iovecs */
	char err[COREIO__TLS_ERR_MAX];
	char peer[COREIO__TLS_ERR_MAX];
};

static int say(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int say(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

enum coreio__tls_role coreio__tls_creds_role(const struct coreio__tls_creds *c)
{
	return c->role;
}

/* dir + "/" + name into buf; -ENAMETOOLONG when it does not fit. */
static int join(char *buf, size_t len, const char *dir, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", dir, name);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int coreio__tls_creds_x509(struct coreio__tls_creds **out, enum coreio__tls_role role,
			   const char *dir, char *err, size_t errlen)
{
	const char *cert = role == COREIO__TLS_SERVER ? "server-cert.pem" : "client-cert.pem";
	const char *key = role == COREIO__TLS_SERVER ? "server-key.pem" : "client-key.pem";
	char ca_path[4096], cert_path[4096], key_path[4096];
	struct coreio__tls_creds *c;
	int rc;

	*out = NULL;
	if (!dir || !dir[0])
		return say(err, errlen, -EINVAL, "no credentials directory given");
	if (join(ca_path, sizeof(ca_path), dir, "ca-cert.pem") < 0 ||
	    join(cert_path, sizeof(cert_path), dir, cert) < 0 ||
	    join(key_path, sizeof(key_path), dir, key) < 0)
		return say(err, errlen, -ENAMETOOLONG, "credentials directory '%s': path too long",
			   dir);
	c = calloc(1, sizeof(*c));
	if (!c)
		return say(err, errlen, -ENOMEM, "out of memory");
	c->role = role;
	if (gnutls_certificate_allocate_credentials(&c->x509) < 0) {
		free(c);
		return say(err, errlen, -ENOMEM, "out of memory");
	}
	rc = gnutls_certificate_set_x509_trust_file(c->x509, ca_path, GNUTLS_X509_FMT_PEM);
	if (rc <= 0) {
		rc = say(err, errlen, rc == GNUTLS_E_FILE_ERROR ? -ENOENT : -EINVAL, "%s: %s",
			 ca_path, rc == 0 ? "no certificate in it" : gnutls_strerror(rc));
		goto fail;
	}
	rc =
	    gnutls_certificate_set_x509_key_file(c->x509, cert_path, key_path, GNUTLS_X509_FMT_PEM);
	if (rc < 0) {
		rc = say(err, errlen, rc == GNUTLS_E_FILE_ERROR ? -ENOENT : -EINVAL, "%s or %s: %s",
			 cert_path, key_path, gnutls_strerror(rc));
		goto fail;
	}
	*out = c;
	return 0;
fail:
	gnutls_certificate_free_credentials(c->x509);
	free(c);
	return rc;
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = tolower(ch);
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

/* Parse "identity:hexkey" (line without its newline) into e. */
static int parse_psk_line(char *line, struct psk_entry *e)
{
	char *colon = strrchr(line, ':');
	size_t idlen, hexlen;

	if (!colon)
		return -1;
	idlen = (size_t)(colon - line);
	hexlen = strlen(colon + 1);
	if (idlen == 0 || idlen >= PSK_IDENTITY_MAX || hexlen % 2 || hexlen / 2 < PSK_KEY_MIN ||
	    hexlen / 2 > PSK_KEY_MAX)
		return -1;
	memcpy(e->identity, line, idlen);
	e->identity[idlen] = '\0';
	for (size_t i = 0; i < hexlen / 2; i++) {
		int hi = hexval((unsigned char)colon[1 + 2 * i]);
		int lo = hexval((unsigned char)colon[2 + 2 * i]);

		if (hi < 0 || lo < 0)
			return -1;
		e->key[i] = (unsigned char)(hi << 4 | lo);
	}
	e->keylen = hexlen / 2;
	return 0;
}

/* The server's key lookup: the identity the client offered, in the loaded file. */
static int psk_lookup(gnutls_session_t s, const char *identity, gnutls_datum_t *key)
{
	const struct coreio__tls *t = gnutls_session_get_ptr(s);
	const struct coreio__tls_creds *c = t->creds;

	for (unsigned i = 0; i < c->nkeys; i++) {
		if (strcmp(c->keys[i].identity, identity) != 0)
			continue;
		key->data = gnutls_malloc(c->keys[i].keylen);
		if (!key->data)
			return -1;
		memcpy(key->data, c->keys[i].key, c->keys[i].keylen);
		key->size = (unsigned)c->keys[i].keylen;
		return 0;
	}
	return -1; /* unknown identity: the handshake fails */
}

int coreio__tls_creds_psk(struct coreio__tls_creds **out, enum coreio__tls_role role,
			  const char *file, const char *identity, char *err, size_t errlen)
{
	struct coreio__tls_creds *c;
	char line[512];
	unsigned lineno = 0;
	int rc = 0;
	FILE *f;

	*out = NULL;
	if (!file || !file[0])
		return say(err, errlen, -EINVAL, "no pre-shared key file given");
	f = fopen(file, "re");
	if (!f)
		return say(err, errlen, -errno, "%s: %s", file, strerror(errno));
	c = calloc(1, sizeof(*c));
	if (c)
		c->keys = calloc(PSK_MAX_KEYS, sizeof(*c->keys));
	if (!c || !c->keys) {
		rc = say(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	c->role = role;
	c->psk = true;
	while (fgets(line, sizeof(line), f)) {
		size_t n = strlen(line);

		lineno++;
		if (n && line[n - 1] != '\n' && !feof(f)) {
			rc = say(err, errlen, -EINVAL, "%s:%u: line too long", file, lineno);
			goto out;
		}
		while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
			line[--n] = '\0';
		if (n == 0 || line[0] == '#')
			continue;
		if (c->nkeys == PSK_MAX_KEYS) {
			rc = say(err, errlen, -EINVAL, "%s:%u: more than %d keys", file, lineno,
				 PSK_MAX_KEYS);
			goto out;
		}
		if (parse_psk_line(line, &c->keys[c->nkeys]) < 0) {
			rc = say(err, errlen, -EINVAL,
				 "%s:%u: expected IDENTITY:HEXKEY (a key of %d to %d bytes in hex)",
				 file, lineno, PSK_KEY_MIN, PSK_KEY_MAX);
			goto out;
		}
		c->nkeys++;
	}
	if (c->nkeys == 0) {
		rc = say(err, errlen, -EINVAL, "%s: no IDENTITY:HEXKEY line", file);
		goto out;
	}
	if (role == COREIO__TLS_SERVER) {
		if (gnutls_psk_allocate_server_credentials(&c->psk_server) < 0) {
			rc = say(err, errlen, -ENOMEM, "out of memory");
			goto out;
		}
		gnutls_psk_set_server_credentials_function(c->psk_server, psk_lookup);
	} else {
		const struct psk_entry *e = NULL;
		gnutls_datum_t key;

		for (unsigned i = 0; i < c->nkeys && !e; i++)
			if (!identity || strcmp(identity, c->keys[i].identity) == 0)
				e = &c->keys[i];
		if (!e) {
			rc = say(err, errlen, -ENOENT, "%s: no key for identity '%s'", file,
				 identity);
			goto out;
		}
		key.data = (unsigned char *)e->key;
		key.size = (unsigned)e->keylen;
		if (gnutls_psk_allocate_client_credentials(&c->psk_client) < 0 ||
		    gnutls_psk_set_client_credentials(c->psk_client, e->identity, &key,
						      GNUTLS_PSK_KEY_RAW) < 0) {
			rc = say(err, errlen, -ENOMEM, "cannot set the client's key");
			goto out;
		}
	}
out:
	fclose(f);
	if (rc < 0) {
		coreio__tls_creds_free(c);
		return rc;
	}
	*out = c;
	return 0;
}

void coreio__tls_creds_free(struct coreio__tls_creds *c)
{
	if (!c)
		return;
	if (c->x509)
		gnutls_certificate_free_credentials(c->x509);
	if (c->psk_server)
		gnutls_psk_free_server_credentials(c->psk_server);
	if (c->psk_client)
		gnutls_psk_free_client_credentials(c->psk_client);
	if (c->keys) {
		memset(c->keys, 0, PSK_MAX_KEYS * sizeof(*c->keys));
		free(c->keys);
	}
	free(c);
}

/* The priority string of a session (PRIO_BASE). */
static const char *priority(bool psk)
{
	bool aes = true;

#if defined(__x86_64__) || defined(__i386__)
	aes = __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
#endif
	if (psk)
		return aes ? PRIO_BASE PRIO_AES PRIO_PSK_KX : PRIO_BASE PRIO_CHACHA PRIO_PSK_KX;
	return aes ? PRIO_BASE PRIO_AES : PRIO_BASE PRIO_CHACHA;
}

int coreio__tls_new(struct coreio__tls **out, const struct coreio__tls_creds *c, int fd,
		    const char *server_name, char *err, size_t errlen)
{
	unsigned flags =
	    GNUTLS_NONBLOCK | GNUTLS_NO_TICKETS | GNUTLS_NO_SIGNAL; /* no SIGPIPE: MSG_NOSIGNAL */
	struct coreio__tls *t;
	unsigned char addr[16];
	int rc;

	*out = NULL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return say(err, errlen, -ENOMEM, "out of memory");
	t->creds = c;
	t->fd = fd;
	flags |= c->role == COREIO__TLS_SERVER ? GNUTLS_SERVER : GNUTLS_CLIENT;
	if (gnutls_init(&t->s, flags) < 0) {
		free(t);
		return say(err, errlen, -ENOMEM, "cannot start a TLS session");
	}
	gnutls_session_set_ptr(t->s, t);
	rc = gnutls_priority_set_direct(t->s, priority(c->psk), NULL);
	if (rc >= 0) {
		if (c->psk)
			rc = gnutls_credentials_set(t->s, GNUTLS_CRD_PSK,
						    c->role == COREIO__TLS_SERVER
							? (void *)c->psk_server
							: (void *)c->psk_client);
		else
			rc = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, c->x509);
	}
	if (rc >= 0 && !c->psk) {
		if (c->role == COREIO__TLS_SERVER) {
			/* Client certificates are required and checked against the CA. */
			gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
			gnutls_session_set_verify_cert(t->s, NULL, 0);
		} else {
			bool is_addr = server_name && (inet_pton(AF_INET, server_name, addr) == 1 ||
						       inet_pton(AF_INET6, server_name, addr) == 1);

			/* The name goes in SNI unless it is an address (SNI takes names only). */
			if (server_name && server_name[0] && !is_addr)
				rc = gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, server_name,
							    strlen(server_name));
			gnutls_session_set_verify_cert(
			    t->s, server_name && server_name[0] ? server_name : NULL, 0);
		}
	}
	if (rc < 0) {
		say(err, errlen, -EINVAL, "cannot set up the TLS session: %s", gnutls_strerror(rc));
		gnutls_deinit(t->s);
		free(t);
		return -EINVAL;
	}
	gnutls_transport_set_int(t->s, fd);
	gnutls_handshake_set_timeout(t->s, 0); /* the caller keeps the deadline */
	*out = t;
	return 0;
}

/* Record who the peer is, once the handshake is done. */
static void note_peer(struct coreio__tls *t)
{
	const gnutls_datum_t *certs;
	unsigned n = 0;

	if (t->creds->psk) {
		const char *id = t->creds->role == COREIO__TLS_SERVER
				     ? gnutls_psk_server_get_username(t->s)
				     : NULL;

		snprintf(t->peer, sizeof(t->peer), "psk identity %s", id ? id : "(ours)");
		return;
	}
	certs = gnutls_certificate_get_peers(t->s, &n);
	if (certs && n > 0) {
		gnutls_x509_crt_t crt;
		gnutls_datum_t dn = {0};

		if (gnutls_x509_crt_init(&crt) == 0) {
			if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == 0 &&
			    gnutls_x509_crt_get_dn3(crt, &dn, 0) == 0) {
				snprintf(t->peer, sizeof(t->peer), "certificate %.*s", (int)dn.size,
					 (const char *)dn.data);
				gnutls_free(dn.data);
			}
			gnutls_x509_crt_deinit(crt);
		}
	}
	if (!t->peer[0])
		snprintf(t->peer, sizeof(t->peer), "certificate (unnamed)");
}

/* Map a fatal GnuTLS error to an errno and a sentence in t->err. */
static int fail(struct coreio__tls *t, int rc)
{
	gnutls_datum_t out = {0};
	unsigned status;

	switch (rc) {
	case GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR:
	case GNUTLS_E_CERTIFICATE_ERROR:
		status = gnutls_session_get_verify_cert_status(t->s);
		if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out,
								 0) == 0) {
			int n = (int)out.size;

			while (n > 0 && (out.data[n - 1] == ' ' || out.data[n - 1] == '.'))
				n--;
			snprintf(t->err, sizeof(t->err), "the peer's certificate is refused: %.*s",
				 n, (const char *)out.data);
			gnutls_free(out.data);
		} else {
			snprintf(t->err, sizeof(t->err), "the peer's certificate is refused");
		}
		return -EACCES;
	case GNUTLS_E_NO_CERTIFICATE_FOUND:
	case GNUTLS_E_CERTIFICATE_REQUIRED:
		snprintf(t->err, sizeof(t->err),
			 "the peer sent no certificate our CA signed (one is required)");
		return -EACCES;
	case GNUTLS_E_FATAL_ALERT_RECEIVED:
		snprintf(t->err, sizeof(t->err), "the peer refused the connection (TLS alert: %s)",
			 gnutls_alert_get_name(gnutls_alert_get(t->s)));
		return -EACCES;
	case GNUTLS_E_INSUFFICIENT_CREDENTIALS:
	case GNUTLS_E_NO_CIPHER_SUITES:
	case GNUTLS_E_DECRYPTION_FAILED:
	case GNUTLS_E_KEY_USAGE_VIOLATION:
		/* Also what a peer's alert sent before it switched keys looks like. */
		snprintf(t->err, sizeof(t->err),
			 "TLS credentials do not match, or the peer refused ours: %s",
			 gnutls_strerror(rc));
		return -EACCES;
	case GNUTLS_E_UNEXPECTED_PACKET_LENGTH:
	case GNUTLS_E_UNSUPPORTED_VERSION_PACKET:
	case GNUTLS_E_UNEXPECTED_PACKET:
	case GNUTLS_E_UNEXPECTED_HANDSHAKE_PACKET:
	case GNUTLS_E_RECORD_OVERFLOW:
		snprintf(t->err, sizeof(t->err),
			 "the peer does not speak TLS 1.3 (a plain CoreIO peer?): %s",
			 gnutls_strerror(rc));
		return -EPROTO;
	case GNUTLS_E_PREMATURE_TERMINATION:
	case GNUTLS_E_PULL_ERROR:
	case GNUTLS_E_PUSH_ERROR:
		snprintf(t->err, sizeof(t->err), "the connection was closed during TLS: %s",
			 gnutls_strerror(rc));
		return -ECONNRESET;
	default:
		snprintf(t->err, sizeof(t->err), "TLS failed: %s", gnutls_strerror(rc));
		return -EPROTO;
	}
}

/* GnuTLS's push once the handshake is done: the record joins t->out (flush_out() sends it). */
static ssize_t push(gnutls_transport_ptr_t p, const void *buf, size_t len)
{
	struct coreio__tls *t = p;

	if (len > t->out_cap - t->out_len) {
		size_t cap = t->out_cap ? t->out_cap : BUF_MIN;
		uint8_t *o;

		while (cap - t->out_len < len)
			cap *= 2;
		o = realloc(t->out, cap);
		if (!o) {
			gnutls_transport_set_errno(t->s, ENOMEM);
			return -1;
		}
		t->out = o;
		t->out_cap = cap;
	}
	memcpy(t->out + t->out_len, buf, len);
	t->out_len += len;
	return (ssize_t)len;
}

/*
 * GnuTLS's pull once the handshake is done: from the bytes read ahead, and
 * when there are none, one recv() of up to RX_AHEAD bytes. It says EAGAIN
 * only when nothing is read ahead and the socket is empty.
 */
static ssize_t pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
	struct coreio__tls *t = p;
	size_t n;

	if (t->in_off == t->in_len && t->held_only) {
		gnutls_transport_set_errno(t->s, EAGAIN);
		return -1;
	}
	if (t->in_off == t->in_len) {
		uint8_t *to = t->in;
		size_t room = t->in_cap;
		ssize_t k;

		if (t->in_full && t->in_cap < RX_AHEAD) {
			/* The last read filled it: a bulk transfer, read further ahead. */
			to = realloc(t->in, t->in_cap * 2);
			if (to) {
				t->in = to;
				t->in_cap *= 2;
			}
			to = t->in;
			room = t->in_cap;
		}
		if (!to) {
			to = t->in = malloc(BUF_MIN);
			room = t->in_cap = to ? BUF_MIN : 0;
			if (!to) {
				to = buf; /* no read-ahead: what GnuTLS asked for */
				room = len;
			}
		}
		do {
			k = recv(t->fd, to, room, MSG_DONTWAIT);
		} while (k < 0 && errno == EINTR);
		if (k < 0) {
			gnutls_transport_set_errno(t->s, errno == EWOULDBLOCK ? EAGAIN : errno);
			return -1;
		}
		if (to == buf || k == 0)
			return k;
		t->in_full = (size_t)k == room;
		t->in_off = 0;
		t->in_len = (size_t)k;
	}
	n = t->in_len - t->in_off < len ? t->in_len - t->in_off : len;
	memcpy(buf, t->in + t->in_off, n);
	t->in_off += n;
	return (ssize_t)n;
}

/* GnuTLS asks this only with a timeout set (never here); answered all the same. */
static int pull_timeout(gnutls_transport_ptr_t p, unsigned ms)
{
	struct coreio__tls *t = p;
	struct pollfd pfd = {.fd = t->fd, .events = POLLIN};

	if (t->in_off < t->in_len)
		return 1;
	return poll(&pfd, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms);
}

/*
 * Send what t->out holds. Returns 0 when all of it went, -EAGAIN when the
 * socket is full (the rest stays for the next call), or -ECONNRESET.
 */
static int flush_out(struct coreio__tls *t)
{
	while (t->out_off < t->out_len) {
		ssize_t n = send(t->fd, t->out + t->out_off, t->out_len - t->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			t->out_off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return -EAGAIN;
		snprintf(t->err, sizeof(t->err), "the connection was closed during TLS: %s",
			 n < 0 ? strerror(errno) : "send() took nothing");
		return -ECONNRESET;
	}
	t->out_off = t->out_len = 0;
	return 0;
}

int coreio__tls_handshake(struct coreio__tls *t)
{
	int rc;

	if (t->batched)
		return 0;
	rc = gnutls_handshake(t->s);
	if (rc == GNUTLS_E_SUCCESS) {
		t->err[0] = '\0';
		note_peer(t);
		/* From now on records go through t->out and t->in (TX_BATCH). */
		gnutls_transport_set_ptr(t->s, t);
		gnutls_transport_set_push_function(t->s, push);
		gnutls_transport_set_pull_function(t->s, pull);
		gnutls_transport_set_pull_timeout_function(t->s, pull_timeout);
		t->batched = true;
		return 0;
	}
	if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED ||
	    (rc < 0 && !gnutls_error_is_fatal(rc) && rc != GNUTLS_E_WARNING_ALERT_RECEIVED))
		return -EAGAIN;
	if (rc == GNUTLS_E_WARNING_ALERT_RECEIVED)
		return -EAGAIN;
	/* Tell the peer why (bad certificate, decrypt error, ...), if it is there to hear. */
	if (rc != GNUTLS_E_FATAL_ALERT_RECEIVED && rc != GNUTLS_E_PREMATURE_TERMINATION &&
	    rc != GNUTLS_E_PUSH_ERROR && rc != GNUTLS_E_PULL_ERROR)
		gnutls_alert_send_appropriate(t->s, rc);
	return fail(t, rc);
}

bool coreio__tls_want_write(const struct coreio__tls *t)
{
	return gnutls_record_get_direction(t->s) == 1;
}

/*
 * Encrypt up to TX_BATCH bytes of iov (skip bytes in) into t->out, one
 * record per RECORD_MAX bytes; a record that spans iovecs is gathered in
 * t->stage first. Returns the bytes taken (> 0), or a negative errno.
 */
static ssize_t seal(struct coreio__tls *t, const struct iovec *iov, int niov, size_t skip)
{
	size_t max = gnutls_record_get_max_size(t->s), taken = 0, off = skip;
	int i = 0;

	if (max > RECORD_MAX)
		max = RECORD_MAX;
	while (i < niov && taken < TX_BATCH) {
		size_t want = TX_BATCH - taken < max ? TX_BATCH - taken : max, n = 0;
		const uint8_t *p;
		ssize_t rc;

		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			i++;
			continue;
		}
		if (iov[i].iov_len - off >= want) {
			p = (const uint8_t *)iov[i].iov_base + off;
			n = want;
		} else {
			/* The record's bytes from this iovec and the next ones. */
			for (int k = i; k < niov && n < want; k++) {
				size_t o = k == i ? off : 0, l = iov[k].iov_len - o;

				if (l > want - n)
					l = want - n;
				memcpy(t->stage + n, (const uint8_t *)iov[k].iov_base + o, l);
				n += l;
			}
			p = t->stage;
		}
		rc = gnutls_record_send(t->s, p, n);
		if (rc < 0)
			return fail(t, (int)rc);
		taken += (size_t)rc;
		off += (size_t)rc;
		if ((size_t)rc < n)
			break; /* not expected: the caller offers the rest again */
	}
	return (ssize_t)taken;
}

ssize_t coreio__tls_sendv(struct coreio__tls *t, const struct iovec *iov, int niov, size_t skip)
{
	ssize_t taken;
	int rc;

	if (!t->batched) {
		/* Not expected before the handshake is done: refused like GnuTLS does. */
		snprintf(t->err, sizeof(t->err), "TLS failed: the handshake is not done");
		return -EPROTO;
	}
	if (t->tx_failed)
		return t->tx_failed;
	if (t->again_len) {
		/* The batch of the call that said -EAGAIN: the rest of its records. */
		taken = (ssize_t)t->again_len;
	} else {
		taken = seal(t, iov, niov, skip);
		if (taken < 0)
			t->tx_failed = (int)taken;
		if (taken <= 0)
			return taken;
	}
	rc = flush_out(t);
	if (rc == -EAGAIN) {
		t->again_len = (size_t)taken;
		return -EAGAIN;
	}
	t->again_len = 0;
	if (rc < 0)
		t->tx_failed = rc;
	return rc < 0 ? rc : taken;
}

ssize_t coreio__tls_send(struct coreio__tls *t, const void *buf, size_t len)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};

	if (len == 0 && !t->again_len)
		return 0;
	return coreio__tls_sendv(t, &iov, 1, 0);
}

/* A receive (coreio__tls_recv()); with held_only, pull() does not read the socket. */
static ssize_t recv_some(struct coreio__tls *t, void *buf, size_t len, bool held_only)
{
	ssize_t rc;

	if (len == 0)
		return 0;
	if (t->rx_failed)
		return t->rx_failed; /* the first failure's reason stays in t->err */
	t->held_only = held_only;
	for (int tries = 0;; tries++) {
		rc = gnutls_record_recv(t->s, buf, len);
		/* Records the receive made GnuTLS send (a key update's answer)
		 * leave now, unless a send that said -EAGAIN carries them. */
		if (t->out_len > t->out_off && !t->again_len)
			(void)flush_out(t);
		if (rc >= 0)
			break;
		if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED ||
		    (!gnutls_error_is_fatal((int)rc) && rc != GNUTLS_E_PREMATURE_TERMINATION)) {
			/* Order: -EAGAIN only when nothing is held (the caller may
			 * sleep on the fd); a record that was not data (a key
			 * update) may leave more behind it. Each try takes a
			 * record: a peer sending thousands without data fails. */
			if (coreio__tls_pending(t) == 0) {
				rc = -EAGAIN;
				break;
			}
			if (tries < 1024)
				continue;
			rc = GNUTLS_E_UNEXPECTED_PACKET;
		}
		if (rc == GNUTLS_E_PREMATURE_TERMINATION) {
			/* The peer's process ended without close_notify: a close, like EOF. */
			rc = 0;
			break;
		}
		t->rx_failed = fail(t, (int)rc);
		rc = t->rx_failed;
		break;
	}
	t->held_only = false;
	return rc;
}

ssize_t coreio__tls_recv(struct coreio__tls *t, void *buf, size_t len)
{
	return recv_some(t, buf, len, false);
}

ssize_t coreio__tls_recv_held(struct coreio__tls *t, void *buf, size_t len)
{
	return recv_some(t, buf, len, true);
}

size_t coreio__tls_pending(const struct coreio__tls *t)
{
	return gnutls_record_check_pending(t->s) + (t->in_len - t->in_off);
}

const char *coreio__tls_error(const struct coreio__tls *t)
{
	return t->err;
}

const char *coreio__tls_peer(const struct coreio__tls *t)
{
	return t->peer;
}

void coreio__tls_free(struct coreio__tls *t)
{
	if (!t)
		return;
	gnutls_deinit(t->s);
	free(t->out);
	free(t->in);
	free(t);
}
