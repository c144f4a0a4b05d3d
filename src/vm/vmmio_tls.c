/* coreio-vm: TLS 1.3 on tls=on ports: credentials, the handshake, the record path (tls.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vmmio_internal.h"

int tls_load_creds(struct vmmio *v, const struct vm_config *cfg)
{
	char err[COREIO__TLS_ERR_MAX] = "";
	int rc;

	if (cfg->tls_psk[0])
		rc = coreio__tls_creds_psk(&v->tls_creds, COREIO__TLS_SERVER, cfg->tls_psk, NULL,
					   err, sizeof(err));
	else if (cfg->tls_creds[0])
		rc = coreio__tls_creds_x509(&v->tls_creds, COREIO__TLS_SERVER, cfg->tls_creds, err,
					    sizeof(err));
	else
		return 0;
	if (rc < 0) {
		fprintf(stderr, "coreio-vm: %s: %s\n",
			cfg->tls_psk[0] ? "--tls-psk" : "--tls-creds", err);
		return rc;
	}
	atomic_store(&v->tls_refs, 1);
	return 0;
}

void tls_creds_put(struct vmmio *v)
{
	struct coreio__tls_creds *creds = v->tls_creds;

	if (creds && atomic_fetch_sub(&v->tls_refs, 1) == 1) {
		v->tls_creds = NULL;
		coreio__tls_creds_free(creds);
	}
}

void tls_conn_end(struct vmmio_conn *c)
{
	if (!c->tls)
		return;
	coreio__tls_free(c->tls);
	c->tls = NULL;
	tls_creds_put(c->v);
}

int tls_conn_start(struct vmmio_conn *c)
{
	char err[COREIO__TLS_ERR_MAX] = "";
	int rc = -EINVAL;

	if (c->v->tls_creds) {
		rc = coreio__tls_new(&c->tls, c->v->tls_creds, c->fd, NULL, err, sizeof(err));
		if (rc == 0)
			atomic_fetch_add(&c->v->tls_refs, 1);
	} else
		snprintf(err, sizeof(err), "no TLS credentials loaded");
	if (rc < 0)
		port_log_refusal(c->port, "%s: connection refused: %s", c->peer, err);
	return rc;
}

void tls_refuse(struct vmmio_conn *c, const char *why)
{
	c->v->lim.tls_refused++;
	port_log_refusal(c->port, "%s: %s", c->peer, why);
	c->quiet = true;
	conn_close(c, why);
}

/* After a complete handshake (rx_lock held): log who connected. */
static void tls_connected(struct vmmio_conn *c)
{
	if (c->v->verbose)
		conn_log(c, "connected on %s over TLS 1.3: %s", c->port->display,
			 coreio__tls_peer(c->tls));
	else
		conn_log(c, "connected on %s over TLS 1.3", c->port->display);
}

int tls_conn_handshake(struct vmmio_conn *c)
{
	pthread_mutex_t *lock = &c->v->io->lock;
	char why[COREIO__TLS_ERR_MAX + 32];
	int rc;

	pthread_mutex_lock(&c->tx_lock);
	if (conn_dead(c)) {
		pthread_mutex_unlock(&c->tx_lock);
		return -EPIPE;
	}
	rc = coreio__tls_handshake(c->tls);
	c->tls_want_out = rc == -EAGAIN && coreio__tls_want_write(c->tls);
	if (rc == 0)
		atomic_store(&c->tls_ready, true);
	conn_watch(c);
	pthread_mutex_unlock(&c->tx_lock);
	if (rc == -EAGAIN)
		return rc;
	if (rc == 0) {
		tls_connected(c);
		return 0;
	}
	snprintf(why, sizeof(why), "TLS refused: %s", coreio__tls_error(c->tls));
	pthread_mutex_lock(lock);
	if (!conn_dead(c))
		tls_refuse(c, why);
	pthread_mutex_unlock(lock);
	return rc;
}

size_t tls_flush_some(struct vmmio_conn *c, int *err)
{
	size_t total = 0;

	while (c->out_off + total < c->out_len) {
		ssize_t n = coreio__tls_send(c->tls, c->out + c->out_off + total,
					     c->out_len - c->out_off - total);

		if (n > 0) {
			total += (size_t)n;
			c->sent += (uint64_t)n;
		} else {
			/* -EAGAIN: the batch of records waits in the session,
			 * partly sent; the head of the queue stays put for the
			 * next call (EPOLLOUT), which sends the rest. */
			if (n != -EAGAIN)
				*err = n < 0 ? (int)-n : EPIPE;
			break;
		}
	}
	return total;
}

/*
 * The reader of coreio__wire_rx_fill_with(): the session's decrypted bytes,
 * record after record until len is reached or nothing is left (a receive
 * returns one record at most; the session reads the socket ahead).
 */
static long tls_read(void *opaque, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = coreio__tls_recv(opaque, (uint8_t *)buf + got, len - got);

		if (n <= 0)
			return got ? (long)got : (long)n;
		got += (size_t)n;
	}
	return (long)got;
}

long tls_fill(struct vmmio_conn *c)
{
	long n = coreio__wire_rx_fill_with(&c->rx, tls_read, c->tls);

	/* Order: decrypted bytes the session holds never make the fd
	 * readable, so -EAGAIN must mean there are none (the receiver may
	 * sleep on the fd now). GnuTLS returns them before reading the
	 * socket; checked all the same. */
	if (n == -EAGAIN && coreio__tls_pending(c->tls) > 0)
		n = coreio__wire_rx_fill_with(&c->rx, tls_read, c->tls);
	return n;
}

bool tls_plain_check(struct vmmio_conn *c)
{
	const uint8_t *p = c->rx.buf + c->rx.start;
	pthread_mutex_t *lock = &c->v->io->lock;
	char why[256];

	/* Nothing was consumed yet: a frame is at least one 64-byte unit. */
	if (c->rx.end - c->rx.start < 3)
		return false;
	c->rx_checked = true;
	/* A TLS record of type handshake (22), version 3.1 to 3.4: a ClientHello.
	 * A CoreIO frame starting so would have iface 22, E 3 and reserved
	 * bits of w[0] set, which no client sends. */
	if (!(p[0] == 0x16 && p[1] == 0x03 && p[2] >= 0x01 && p[2] <= 0x04))
		return false;
	snprintf(why, sizeof(why),
		 "a TLS client on plain port %s (use tls=on there, or a plain target in the "
		 "client)",
		 c->port->display);
	pthread_mutex_lock(lock);
	if (!conn_dead(c))
		tls_refuse(c, why);
	pthread_mutex_unlock(lock);
	return true;
}
