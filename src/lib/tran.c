/* libcoreio: a connection's byte transport, plain socket or TLS 1.3 (src/tls), and the TLS setup.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"
#include "tls.h"

/* Load client credentials (dir, or psk + identity) into *out; logs why not. */
static int load_creds(struct coreio_ctx *ctx, struct coreio__tls_creds **out, const char *dir,
		      const char *psk, const char *id)
{
	char err[COREIO__TLS_ERR_MAX];
	int rc;

	*out = NULL;
	if (dir)
		rc = coreio__tls_creds_x509(out, COREIO__TLS_CLIENT, dir, err, sizeof(err));
	else
		rc = coreio__tls_creds_psk(out, COREIO__TLS_CLIENT, psk, id, err, sizeof(err));
	if (rc < 0)
		coreio__log(ctx, COREIO_LOG_ERR, "TLS credentials: %s", err);
	return rc;
}

int coreio_ctx_set_tls(coreio_ctx_t *ctx, const char *creds_dir, const char *psk_file,
		       const char *psk_identity)
{
	struct coreio__tls_creds *c = NULL, *old;
	int rc = 0;

	if (!ctx || (creds_dir && psk_file) || (psk_identity && !psk_file))
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	rc = ctx->connected ? -EBUSY : 0;
	pthread_mutex_unlock(&ctx->lock);
	if (rc < 0)
		return rc;
	if (creds_dir || psk_file) {
		rc = load_creds(ctx, &c, creds_dir, psk_file, psk_identity);
		if (rc < 0)
			return rc;
	}
	pthread_mutex_lock(&ctx->lock);
	old = ctx->tls_creds;
	ctx->tls_creds = c;
	pthread_mutex_unlock(&ctx->lock);
	coreio__tls_creds_free(old);
	return 0;
}

/*
 * The credentials for a TLS connect: those of coreio_ctx_set_tls(), else
 * from COREIO_TLS_CREDS (a directory) or COREIO_TLS_PSK (a keys file, with
 * COREIO_TLS_PSK_IDENTITY). Returns 0 with ctx->tls_creds set, or a
 * negative errno after logging why.
 */
static int creds_for_connect(struct coreio_ctx *ctx)
{
	const char *dir = getenv("COREIO_TLS_CREDS"), *psk = getenv("COREIO_TLS_PSK");
	const char *id = getenv("COREIO_TLS_PSK_IDENTITY");

	if (ctx->tls_creds)
		return 0;
	if (dir && !*dir)
		dir = NULL;
	if (psk && !*psk)
		psk = NULL;
	if (id && !*id)
		id = NULL;
	if (!dir && !psk) {
		coreio__log(ctx, COREIO_LOG_ERR,
			    "a tls: target needs credentials: coreio_ctx_set_tls(), or "
			    "COREIO_TLS_CREDS=DIR (ca-cert.pem, client-cert.pem, client-key.pem) "
			    "or COREIO_TLS_PSK=FILE in the environment");
		return -EINVAL;
	}
	if (dir && psk) {
		coreio__log(ctx, COREIO_LOG_ERR,
			    "COREIO_TLS_CREDS and COREIO_TLS_PSK are both set: use one");
		return -EINVAL;
	}
	return load_creds(ctx, &ctx->tls_creds, dir, psk, psk ? id : NULL);
}

/* Wait until fd is ready for events or the deadline passes. Returns 0 or -ETIMEDOUT. */
static int wait_fd(int fd, short events, long long deadline)
{
	struct pollfd p = {.fd = fd, .events = events};
	long long left;

	for (;;) {
		left = deadline < 0 ? -1 : deadline - coreio__now_ms();
		if (deadline >= 0 && left <= 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, (int)left) >= 0 || errno != EINTR)
			return 0;
	}
}

int coreio__tran_tls_start(struct coreio_ctx *ctx, const char *host, int timeout_ms)
{
	long long deadline = coreio__now_ms() + timeout_ms;
	char err[COREIO__TLS_ERR_MAX];
	int rc;

	rc = creds_for_connect(ctx);
	if (rc < 0)
		return rc;
	for (int i = 0; i < COREIO__NCONN; i++) {
		struct coreio__conn *c = &ctx->conn[i];

		rc = coreio__tls_new(&c->tls, ctx->tls_creds, c->fd, host, err, sizeof(err));
		if (rc < 0) {
			coreio__log(ctx, COREIO_LOG_ERR, "TLS: %s", err);
			return rc;
		}
	}
	/* Both handshakes at once: the VM drives each connection on its own. */
	for (;;) {
		struct pollfd p[COREIO__NCONN];
		int n = 0;
		long long left;

		for (int i = 0; i < COREIO__NCONN; i++) {
			struct coreio__conn *c = &ctx->conn[i];

			if (c->tls_ready)
				continue;
			rc = coreio__tls_handshake(c->tls);
			if (rc == 0) {
				c->tls_ready = true;
				continue;
			}
			if (rc != -EAGAIN) {
				coreio__log(ctx, COREIO_LOG_ERR, "TLS with the VM failed: %s%s",
					    coreio__tls_error(c->tls),
					    rc == -EPROTO || rc == -ECONNRESET
						? " (is the port a plain one? then use HOST:PORT "
						  "without tls:)"
						: "");
				return rc;
			}
			p[n].fd = c->fd;
			p[n].events = coreio__tls_want_write(c->tls) ? POLLOUT : POLLIN;
			p[n].revents = 0;
			n++;
		}
		if (n == 0)
			break;
		left = deadline - coreio__now_ms();
		if (left <= 0) {
			coreio__log(
			    ctx, COREIO_LOG_ERR,
			    "TLS with the VM: no handshake within %d ms (is the port a plain "
			    "one?)",
			    timeout_ms);
			return -ETIMEDOUT;
		}
		if (poll(p, (nfds_t)n, (int)left) < 0 && errno != EINTR)
			return -errno;
	}
	coreio__log(ctx, COREIO_LOG_INFO, "TLS 1.3 with the VM (%s)",
		    coreio__tls_peer(ctx->conn[0].tls));
	return 0;
}

void coreio__tran_explain(struct coreio_ctx *ctx)
{
	long long deadline = coreio__now_ms() + 200;

	for (int i = 0; i < COREIO__NCONN; i++) {
		struct coreio__conn *c = &ctx->conn[i];
		uint8_t tmp[256];
		ssize_t n;

		if (!c->tls)
			continue;
		/* TLS 1.3 lets a client finish its handshake before the VM has
		 * checked its certificate: the VM's refusal is an alert that
		 * waits in the socket. Read it to say why. */
		do {
			n = coreio__tls_recv(c->tls, tmp, sizeof(tmp));
			if (n == -EAGAIN && wait_fd(c->fd, POLLIN, deadline) < 0)
				break;
		} while (n > 0 || n == -EAGAIN);
		if (*coreio__tls_error(c->tls)) {
			coreio__log(ctx, COREIO_LOG_ERR, "TLS connection to the VM: %s",
				    coreio__tls_error(c->tls));
			return;
		}
	}
}

void coreio__tran_close(struct coreio__conn *c)
{
	coreio__tls_free(c->tls);
	c->tls = NULL;
	c->tls_ready = false;
}

/*
 * Read into buf with recv (coreio__tls_recv, or coreio__tls_recv_held for
 * what the session holds only) as many bytes as fit, record after record,
 * until there are no more. Returns less than len only when nothing is left
 * to read that way (with coreio__tls_recv: no decrypted byte, none read
 * ahead, and the socket empty, so a caller that got less may sleep on the fd).
 */
static long tls_read_with(struct coreio__conn *c, void *buf, size_t len,
			  ssize_t (*recv)(struct coreio__tls *, void *, size_t))
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = recv(c->tls, (uint8_t *)buf + got, len - got);

		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		if (got)
			return (long)got;
		return n == -EACCES ? -EPROTO : (long)n;
	}
	return (long)got;
}

/* The reader of a TLS connection for coreio__wire_rx_fill_with(). */
static long tls_read(void *opaque, void *buf, size_t len)
{
	return tls_read_with(opaque, buf, len, coreio__tls_recv);
}

/* As tls_read(), from what the session holds only: the socket is not read. */
static long tls_read_held(void *opaque, void *buf, size_t len)
{
	return tls_read_with(opaque, buf, len, coreio__tls_recv_held);
}

long coreio__tran_fill(struct coreio__conn *c, bool held_only)
{
	return coreio__wire_rx_fill_with(&c->rx, held_only ? tls_read_held : tls_read, c);
}

bool coreio__tran_held(const struct coreio__conn *c)
{
	return c->tls && coreio__tls_pending(c->tls) > 0;
}

const char *coreio__tran_error(const struct coreio__conn *c)
{
	return c->tls ? coreio__tls_error(c->tls) : "";
}

ssize_t coreio__tran_send_nb(struct coreio__conn *c, const void *buf, size_t len)
{
	size_t done = 0;

	if (!c->tls) {
		ssize_t n;

		do {
			n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		} while (n < 0 && errno == EINTR);
		if (n < 0)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		return n;
	}
	while (done < len) {
		ssize_t n = coreio__tls_send(c->tls, (const uint8_t *)buf + done, len - done);

		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (done)
			break;
		return n == 0 ? -EPIPE : n;
	}
	return (ssize_t)done;
}

/*
 * With TLS, the records are cut from the iovecs as a whole (a piece's
 * header, payload and padding make one record), a batch of them per
 * send() (coreio__tls_sendv()). -EAGAIN with bytes taken before it returns
 * those bytes: the batch that said -EAGAIN begins right after them, and
 * the caller offers its bytes first next time.
 */
ssize_t coreio__tran_sendv_nb(struct coreio__conn *c, const struct iovec *iov, int niov)
{
	size_t done = 0;

	if (!c->tls) {
		for (int i = 0; i < niov; i++) {
			size_t off = 0;

			while (off < iov[i].iov_len) {
				ssize_t n =
				    coreio__tran_send_nb(c, (const uint8_t *)iov[i].iov_base + off,
							 iov[i].iov_len - off);

				if (n > 0) {
					off += (size_t)n;
					done += (size_t)n;
					continue;
				}
				return done ? (ssize_t)done : n;
			}
		}
		return (ssize_t)done;
	}
	for (;;) {
		ssize_t n = coreio__tls_sendv(c->tls, iov, niov, done);

		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n == 0)
			return (ssize_t)done; /* every byte of iov is taken */
		return done ? (ssize_t)done : n;
	}
}

int coreio__tran_send_all(struct coreio__conn *c, const void *buf, size_t len, int timeout_ms)
{
	long long deadline = timeout_ms < 0 ? -1 : coreio__now_ms() + timeout_ms;
	const uint8_t *p = buf;

	if (!c->tls)
		return coreio__wire_send_all(c->fd, buf, len, timeout_ms);
	while (len > 0) {
		ssize_t n = coreio__tran_send_nb(c, p, len);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n != -EAGAIN)
			return (int)n;
		if (wait_fd(c->fd, POLLOUT, deadline) < 0)
			return -ETIMEDOUT;
	}
	return 0;
}
