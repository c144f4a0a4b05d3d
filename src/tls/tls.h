/* TLS 1.3 for CoreIO's TCP connections (GnuTLS), shared by libcoreio and coreio-vm. */
#ifndef COREIO_TLS_H
#define COREIO_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

/*
 * Why GnuTLS: QEMU's own TLS credentials (tls-creds-x509, tls-creds-psk) are
 * GnuTLS's, so the files a QEMU user already has work unchanged: a directory
 * with ca-cert.pem, server-cert.pem and server-key.pem (client-cert.pem and
 * client-key.pem on the client), or a keys.psk file of "identity:hexkey"
 * lines. Debian packages it (libgnutls28-dev) and it does TLS 1.3 with
 * certificates and with pre-shared keys. docs/security.md has the details.
 *
 * A session wraps a connected, non-blocking stream socket. Nothing here
 * sleeps, logs or owns the fd: the caller polls the fd, calls again on
 * -EAGAIN and closes the fd after coreio__tls_free().
 */

enum coreio__tls_role {
	COREIO__TLS_CLIENT = 0,
	COREIO__TLS_SERVER = 1,
};

/* The longest message coreio__tls_error() and the err buffers receive. */
#define COREIO__TLS_ERR_MAX 256

struct coreio__tls_creds;
struct coreio__tls;

/*
 * Load X.509 credentials from the directory dir, QEMU's layout:
 *   server: ca-cert.pem (the CA that signs client certificates, which are
 *           required and checked), server-cert.pem, server-key.pem;
 *   client: ca-cert.pem (the CA that signs the server's certificate),
 *           client-cert.pem and client-key.pem (our servers require them).
 * Returns 0 with *out set, or a negative errno with a message in err naming
 * the file at fault.
 */
int coreio__tls_creds_x509(struct coreio__tls_creds **out, enum coreio__tls_role role,
			   const char *dir, char *err, size_t errlen);

/*
 * Load pre-shared keys from file: lines "identity:hexkey" (QEMU's keys.psk;
 * blank lines and lines starting with '#' are skipped; a key is 16 to 64
 * bytes, given in hex). A server accepts any identity of the file; a client
 * uses identity, or the first line's when identity is NULL. Returns 0 with
 * *out set, or a negative errno with a message in err naming the line.
 */
int coreio__tls_creds_psk(struct coreio__tls_creds **out, enum coreio__tls_role role,
			  const char *file, const char *identity, char *err, size_t errlen);

/* The role the credentials were loaded for. */
enum coreio__tls_role coreio__tls_creds_role(const struct coreio__tls_creds *c);

/* Free credentials (NULL is ignored). Sessions made from them must be freed first. */
void coreio__tls_creds_free(struct coreio__tls_creds *c);

/*
 * Start a TLS 1.3 session on the connected socket fd. server_name (client
 * with X.509 only, may be NULL) is the host name or address the server's
 * certificate must name. Returns 0 with *out set, or a negative errno with
 * a message in err.
 */
int coreio__tls_new(struct coreio__tls **out, const struct coreio__tls_creds *c, int fd,
		    const char *server_name, char *err, size_t errlen);

/*
 * Advance the handshake. Returns 0 when it is complete, -EAGAIN when it
 * must be called again once fd is readable (or writable, when
 * coreio__tls_want_write() says so), or another negative errno when it
 * failed: -EACCES for a refused certificate or key, -EPROTO for a peer that
 * does not speak TLS or breaks the protocol, -ECONNRESET for a peer that
 * went away; coreio__tls_error() then says why in words.
 */
int coreio__tls_handshake(struct coreio__tls *t);

/* After -EAGAIN: true when the session waits to write rather than to read. */
bool coreio__tls_want_write(const struct coreio__tls *t);

/*
 * Encrypt and send up to len bytes of buf (after the handshake): up to
 * 256 KiB at a time, as full records, all of them in one send(). Returns
 * the number of bytes taken (> 0) once the socket took every record built
 * from them, or -EAGAIN when the socket is full: the records are already
 * built and partly sent, so call again with the same bytes (the same buf,
 * or a copy of them) once the fd is writable; that call sends the rest
 * and returns how many bytes they carried. Any other negative errno: the
 * session failed. Nothing is left unsent when a call returns > 0.
 */
ssize_t coreio__tls_send(struct coreio__tls *t, const void *buf, size_t len);

/*
 * As coreio__tls_send(), for the bytes of niov iovecs in order, skip
 * bytes in: a record may span iovecs (a 24-byte header, its payload and
 * its padding make one record, not three). After -EAGAIN, call again with
 * the same bytes first.
 */
ssize_t coreio__tls_sendv(struct coreio__tls *t, const struct iovec *iov, int niov, size_t skip);

/*
 * Receive and decrypt up to len bytes into buf. Returns the number of
 * bytes (> 0), 0 when the peer closed the connection, -EAGAIN when nothing
 * is there yet (then the session holds nothing: coreio__tls_pending() is
 * 0 and the caller may sleep on the fd), or another negative errno
 * (coreio__tls_error() says why). After the handshake the session reads
 * the socket ahead, up to 256 KiB at once.
 */
ssize_t coreio__tls_recv(struct coreio__tls *t, void *buf, size_t len);

/*
 * As coreio__tls_recv(), from what the session holds only (see
 * coreio__tls_pending()): the socket is not read. -EAGAIN when that is all.
 */
ssize_t coreio__tls_recv_held(struct coreio__tls *t, void *buf, size_t len);

/*
 * Bytes the session holds that coreio__tls_recv() will go through without
 * reading the socket: decrypted ones, and records read ahead. A caller
 * must take them before it sleeps on the fd: they will never make it
 * readable. Not 0 means "call coreio__tls_recv() again", not a count of
 * data bytes to expect.
 */
size_t coreio__tls_pending(const struct coreio__tls *t);

/* Why the last call failed, in words ("" when nothing failed). */
const char *coreio__tls_error(const struct coreio__tls *t);

/*
 * Who the peer is, after the handshake: "psk identity NAME" or
 * "certificate DN". Empty before.
 */
const char *coreio__tls_peer(const struct coreio__tls *t);

/* Free the session; the fd stays open (the caller closes it). NULL is ignored. */
void coreio__tls_free(struct coreio__tls *t);

#endif
