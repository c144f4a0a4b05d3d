/* libcoreio: frame dispatch, the MMIO service, preparefds/processfds and the main loop. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define W0_EXTRA_MASK (0xffull << 8)
#define W0_ERROR_BIT  (1ull << 30)

/* True when rx holds at least one complete frame. */
static bool rx_has_frame(const struct coreio_wire_rx *rx)
{
	size_t have = rx->end - rx->start;

	return have >= 8 && have >= coreio__wire_frame_len(coreio__wire_get64(rx->buf + rx->start));
}

/* Send one 64-byte unit on connection i. Returns 0 or -ECONNRESET. */
static int send_unit(struct coreio_ctx *ctx, int i, const uint8_t *unit)
{
	struct coreio__conn *c = &ctx->conn[i];
	int rc;

	pthread_mutex_lock(&c->tx_lock);
	rc = coreio__wire_send_all(c->fd, unit, COREIO_WIRE_UNIT, COREIO__SEND_TIMEOUT_MS);
	pthread_mutex_unlock(&c->tx_lock);
	if (rc < 0) {
		coreio__fail(ctx, -ECONNRESET);
		return -ECONNRESET;
	}
	return 0;
}

/* Send the first unit of frame back with E cleared ("returned to initiator"). */
static int echo(struct coreio_ctx *ctx, int i, const uint8_t *frame)
{
	uint8_t u[COREIO_WIRE_UNIT];

	memcpy(u, frame, sizeof(u));
	coreio__wire_put64(u, coreio__wire_get64(u) & ~W0_EXTRA_MASK);
	return send_unit(ctx, i, u);
}

/* Byte-enable mask covering the first n bytes. */
static uint32_t full_mask(unsigned n)
{
	return n >= 32 ? 0xffffffffu : (1u << n) - 1u;
}

/* A single write, split into one callback per run of enabled bytes when
 * the mask is sparse. Returns the first non-zero callback result. */
static int do_write(const struct coreio__reg *r, uint64_t addr, unsigned size, uint8_t *data,
		    uint32_t mask, unsigned flags)
{
	uint32_t full = full_mask(size);
	unsigned i = 0;

	if (mask == 0 || (mask & full) == full)
		return r->f.write(r->priv, addr, size, data, flags);
	while (i < size) {
		unsigned start;

		if (!(mask & (1u << i))) {
			i++;
			continue;
		}
		start = i;
		while (i < size && (mask & (1u << i)))
			i++;
		int rc = r->f.write(r->priv, addr + start, i - start, data + start, flags);

		if (rc)
			return rc;
	}
	return 0;
}

/* Serve one MMIO request (origin 0) that arrived on connection i. */
static int serve_mmio(struct coreio_ctx *ctx, int i, const struct coreio_wire_msg *m)
{
	const struct coreio_wire_hdr *h = &m->h;
	uint8_t req[COREIO_WIRE_UNIT], ans[COREIO_WIRE_UNIT];
	size_t off1 = COREIO_WIRE_DATA_OFF, off2 = 0;
	struct coreio__reg r;
	unsigned len = m->len;
	int rc = 0;

	pthread_mutex_lock(&ctx->lock);
	r = ctx->reg[h->iface];
	pthread_mutex_unlock(&ctx->lock);
	if (i != COREIO__CONN_CTRL || !r.used)
		return echo(ctx, i, m->frame);

	/* Every request fits in the first unit (decode checked single <= 32,
	 * pair <= 16); the request is copied so that callbacks which serve the
	 * connection again (blocking DMA) may move the rx buffer. */
	if (m->data2)
		off2 = coreio__wire_pair_off(len);
	if (off1 + len > sizeof(req) || off2 + len > sizeof(req))
		return -EPROTO;
	memcpy(req, m->frame, sizeof(req));
	memcpy(ans, req, COREIO_WIRE_DATA_OFF);
	memset(ans + COREIO_WIRE_DATA_OFF, 0, sizeof(ans) - COREIO_WIRE_DATA_OFF);
	coreio__wire_put64(ans, coreio__wire_get64(ans) & ~(W0_EXTRA_MASK | W0_ERROR_BIT));

	switch (h->op) {
	case COREIO_OP_READ:
		rc = r.f.read(r.priv, h->addr, len, ans + off1, h->flags);
		break;
	case COREIO_OP_READP:
		if (r.f.readp) {
			rc = r.f.readp(r.priv, h->addr, len, ans + off1, ans + off2, h->flags);
		} else {
			rc = r.f.read(r.priv, h->addr, len, ans + off1, h->flags);
			if (!rc)
				rc = r.f.read(r.priv, h->addr, len, ans + off2, h->flags);
		}
		break;
	case COREIO_OP_WRITE:
	case COREIO_OP_WRITEA:
		rc = do_write(&r, h->addr, len, req + off1, h->mask, h->flags);
		break;
	case COREIO_OP_WRITEP:
	case COREIO_OP_WRITEAP:
		if (r.f.writep) {
			rc = r.f.writep(r.priv, h->addr, len, req + off1, req + off2, h->flags);
		} else {
			rc = r.f.write(r.priv, h->addr, len, req + off1, h->flags);
			if (!rc)
				rc = r.f.write(r.priv, h->addr, len, req + off2, h->flags);
		}
		break;
	default:
		return 0;
	}
	if (h->op == COREIO_OP_WRITE || h->op == COREIO_OP_WRITEP)
		return 0; /* posted: no answer */
	if (rc)
		coreio__wire_put64(ans, coreio__wire_get64(ans) | W0_ERROR_BIT);
	return send_unit(ctx, i, ans);
}

/* A PING with origin 1: the answer to our hello, or a stray one (ignored). */
static void hello_answer(struct coreio_ctx *ctx, int i, const struct coreio_wire_msg *m)
{
	struct coreio__conn *c = &ctx->conn[i];
	uint64_t kind, caps;

	if (m->h.addr != COREIO_WIRE_MAGIC)
		return;
	kind = coreio__wire_get64(m->frame + 24);
	caps = coreio__wire_get64(m->frame + 32);
	pthread_mutex_lock(&ctx->lock);
	if (c->hello_wait) {
		c->caps = kind == COREIO_HELLO_ANSWER ? (unsigned)(caps & coreio__offered(ctx)) : 0;
		c->hello_wait = false;
	}
	pthread_mutex_unlock(&ctx->lock);
}

/* The VM's answer to a claim (CLAIM_ACK). */
static void claim_answer(struct coreio_ctx *ctx, const struct coreio_wire_msg *m)
{
	struct coreio__claim *cl;
	uint64_t e;

	if (m->h.iface >= COREIO_WIRE_MAX_RID)
		return;
	e = coreio__wire_get64(m->frame + 24);
	pthread_mutex_lock(&ctx->lock);
	cl = &ctx->claim[m->h.iface];
	if (cl->state == COREIO__CLAIM_WAITING && cl->tag == m->h.tag) {
		if (!m->h.error)
			cl->result = 0;
		else if (e == 0 || e > 4095)
			cl->result = -EBUSY;
		else
			cl->result = -(int)e;
		cl->state = COREIO__CLAIM_ANSWERED;
		pthread_cond_broadcast(&ctx->cond);
	}
	pthread_mutex_unlock(&ctx->lock);
}

/* The VM was reset: forget IRQ levels, run the reset callback later. */
static void got_reset(struct coreio_ctx *ctx, int i)
{
	/* Every connection receives RESET; the control one carries IRQs and
	 * claims, so it alone stands for the VM. */
	if (i != COREIO__CONN_CTRL)
		return;
	pthread_mutex_lock(&ctx->lock);
	memset(ctx->irq, 0, sizeof(ctx->irq));
	ctx->reset_pending = true;
	if (!(ctx->proc_depth > 0 && pthread_equal(ctx->proc_owner, pthread_self())))
		coreio__wake(ctx);
	pthread_mutex_unlock(&ctx->lock);
}

/*
 * Decode and act on one frame from connection i; fds (nfds of them, at
 * most one in fds[0]) came bound to it and are closed unless an SHM_MAP
 * keeps them. Returns 0 or a negative errno.
 */
static int dispatch(struct coreio_ctx *ctx, int i, const uint8_t *frame, size_t len, const int *fds,
		    unsigned nfds)
{
	struct coreio_wire_msg m;

	if (coreio__wire_decode(frame, len, COREIO_WIRE_AT_CLIENT, &m) < 0) {
		if (nfds)
			close(fds[0]);
		return -EPROTO;
	}
	if (m.h.op == COREIO_OP_SHM_MAP) {
		coreio__shm_frame(ctx, i, &m, fds, nfds);
		return 0;
	}
	if (nfds) {
		/* Only SHM_MAP carries a fd. */
		close(fds[0]);
		coreio__shm_warn(ctx, "the VM sent a fd with a %s frame",
				 coreio__wire_op_name(m.h.op));
	}
	if (m.h.op == COREIO_OP_RESET) {
		got_reset(ctx, i);
		return 0;
	}
	if (!m.h.origin) {
		switch (m.h.op) {
		case COREIO_OP_PING:
			return echo(ctx, i, frame);
		case COREIO_OP_READ:
		case COREIO_OP_WRITE:
		case COREIO_OP_READP:
		case COREIO_OP_WRITEP:
		case COREIO_OP_WRITEA:
		case COREIO_OP_WRITEAP:
			if (m.h.iface >= COREIO_WIRE_MAX_RID)
				return 0; /* dropped, as the reference does */
			return serve_mmio(ctx, i, &m);
		default:
			return 0;
		}
	}
	switch (m.h.op) {
	case COREIO_OP_PING:
		hello_answer(ctx, i, &m);
		break;
	case COREIO_OP_RGN_CLAIM:
		if (i == COREIO__CONN_CTRL)
			claim_answer(ctx, &m);
		break;
	case COREIO_OP_READ:
	case COREIO_OP_WRITEA:
	case COREIO_OP_LREAD:
	case COREIO_OP_LWRITE:
		if (i == COREIO__CONN_DMA)
			coreio__dma_answer(ctx, &m);
		break;
	default:
		break;
	}
	return 0;
}

int coreio__conn_service(struct coreio_ctx *ctx, int i)
{
	struct coreio__conn *c = &ctx->conn[i];
	struct coreio_wire_rx *rx = &c->rx;
	const uint8_t *frame;
	size_t len;
	int rc = 0;

	pthread_mutex_lock(&ctx->lock);
	if (!ctx->connected || ctx->broken)
		rc = ctx->connected ? ctx->broken : -ENOTCONN;
	pthread_mutex_unlock(&ctx->lock);
	if (rc < 0)
		return rc;

	if (rx->end - rx->start < sizeof(rx->buf)) {
		long n = coreio__wire_rx_fill_fds(rx, c->fd, &c->fdq);

		if (n == 0 || (n < 0 && n != -EAGAIN)) {
			coreio__fail(ctx, -ECONNRESET);
			return -ECONNRESET;
		}
	}
	while (coreio__wire_rx_next(rx, &frame, &len)) {
		int fds[1];
		unsigned nfds = 0;

		if (c->fdq.n)
			nfds = coreio__wire_fdq_take(
			    &c->fdq, coreio__wire_rx_frame_pos(rx, &c->fdq, frame), len, fds, 1);
		rc = dispatch(ctx, i, frame, len, fds, nfds);
		if (rc < 0) {
			coreio__fail(ctx, rc == -EPROTO ? -EPROTO : -ECONNRESET);
			return rc;
		}
		pthread_mutex_lock(&ctx->lock);
		rc = ctx->broken;
		pthread_mutex_unlock(&ctx->lock);
		if (rc < 0)
			return rc;
	}
	if (i == COREIO__CONN_DMA)
		coreio__dma_pump(ctx);
	return 0;
}

void coreio__run_deferred(struct coreio_ctx *ctx)
{
	void (*cb)(void *) = NULL;
	void *opaque = NULL;
	struct coreio__xfer *x;

	pthread_mutex_lock(&ctx->lock);
	if (ctx->reset_pending) {
		cb = ctx->reset_cb;
		opaque = ctx->reset_opaque;
		ctx->reset_pending = false;
	}
	x = ctx->d_head;
	ctx->d_head = ctx->d_tail = NULL;
	pthread_mutex_unlock(&ctx->lock);
	if (cb)
		cb(opaque);
	while (x) {
		struct coreio__xfer *next = x->dnext;

		x->cpl(x->cplp, x->err);
		free(x);
		x = next;
	}
}

int coreio_ctx_preparefds(coreio_ctx_t *ctx, int nfds, fd_set *readfds, fd_set *writefds)
{
	bool wake = false;

	if (!ctx || !readfds || nfds < 0)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	if (!ctx->connected) {
		pthread_mutex_unlock(&ctx->lock);
		return -ENOTCONN;
	}
	for (int i = 0; i < COREIO__NCONN; i++) {
		struct coreio__conn *c = &ctx->conn[i];

		/* A connection another thread is reading is left out; that
		 * thread wakes us through wake_fd when it is done. */
		if (c->reader_depth > 0 || c->fd < 0)
			continue;
		FD_SET(c->fd, readfds);
		if (c->fd >= nfds)
			nfds = c->fd + 1;
		/* DMA pieces wait for socket space: ask to be told. Without
		 * writefds, the answers to the pieces already sent wake us. */
		if (i == COREIO__CONN_DMA && ctx->dma_tx_pending && writefds)
			FD_SET(c->fd, writefds);
		if (rx_has_frame(&c->rx))
			wake = true;
	}
	if (ctx->wake_fd >= 0) {
		FD_SET(ctx->wake_fd, readfds);
		if (ctx->wake_fd >= nfds)
			nfds = ctx->wake_fd + 1;
	}
	if (ctx->d_head || ctx->reset_pending || ctx->broken)
		wake = true;
	if (wake)
		coreio__wake(ctx);
	pthread_mutex_unlock(&ctx->lock);
	return nfds;
}

int coreio_ctx_processfds(coreio_ctx_t *ctx, fd_set *readfds, fd_set *writefds)
{
	pthread_t self = pthread_self();
	int rc = 0, wfd;
	bool teardown = false, pump;

	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	if (!ctx->connected) {
		pthread_mutex_unlock(&ctx->lock);
		return -ENOTCONN;
	}
	if (ctx->proc_depth++ == 0)
		ctx->proc_owner = self;
	wfd = ctx->wake_fd;
	pthread_mutex_unlock(&ctx->lock);

	if (wfd >= 0 && (!readfds || FD_ISSET(wfd, readfds))) {
		uint64_t v;

		if (read(wfd, &v, sizeof(v)) < 0) {
			/* EAGAIN: nothing to drain. */
		}
	}
	for (int i = 0; i < COREIO__NCONN && rc == 0; i++) {
		struct coreio__conn *c = &ctx->conn[i];
		bool mine;

		pthread_mutex_lock(&ctx->lock);
		mine = !ctx->broken && coreio__reader_try_locked(ctx, i);
		pthread_mutex_unlock(&ctx->lock);
		if (!mine)
			continue;
		if (c->fd >= 0 && (!readfds || FD_ISSET(c->fd, readfds) || rx_has_frame(&c->rx)))
			rc = coreio__conn_service(ctx, i);
		pthread_mutex_lock(&ctx->lock);
		pump = i == COREIO__CONN_DMA && ctx->dma_tx_pending && !ctx->broken;
		pthread_mutex_unlock(&ctx->lock);
		if (pump)
			coreio__dma_pump(ctx);
		pthread_mutex_lock(&ctx->lock);
		coreio__reader_release_locked(ctx, i);
		pthread_mutex_unlock(&ctx->lock);
	}
	coreio__run_deferred(ctx);

	pthread_mutex_lock(&ctx->lock);
	ctx->proc_depth--;
	if (ctx->connected && ctx->broken) {
		rc = ctx->broken;
		/* Close the dead connection unless another thread still uses it. */
		teardown = ctx->proc_depth == 0 && ctx->conn[0].reader_depth == 0 &&
			   ctx->conn[1].reader_depth == 0;
	}
	pthread_mutex_unlock(&ctx->lock);
	if (teardown)
		coreio_ctx_disconnect(ctx);
	return rc < 0 ? rc : 0;
}

/* Microseconds of CLOCK_MONOTONIC. */
static long long now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int coreio_ctx_mainloop(coreio_ctx_t *ctx, long long usec)
{
	long long deadline = usec >= 0 ? now_us() + usec : 0;
	long long spin_until = 0; /* busy-poll: no sleeping before this */

	if (!ctx)
		return -EINVAL;
	for (;;) {
		struct timeval tv, *tvp = NULL;
		fd_set rfds, wfds;
		int nfds, n, rc;

		FD_ZERO(&rfds);
		FD_ZERO(&wfds);
		nfds = coreio_ctx_preparefds(ctx, 0, &rfds, &wfds);
		if (nfds < 0)
			return nfds;
		if (usec >= 0) {
			long long left = deadline - now_us();

			if (left < 0)
				left = 0;
			tv.tv_sec = (time_t)(left / 1000000);
			tv.tv_usec = (suseconds_t)(left % 1000000);
			tvp = &tv;
		}
		if (spin_until && now_us() < spin_until) {
			/* Busy-poll: look without sleeping. */
			tv.tv_sec = 0;
			tv.tv_usec = 0;
			tvp = &tv;
		}
		n = select(nfds, &rfds, &wfds, NULL, tvp);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) {
			FD_ZERO(&rfds);
			FD_ZERO(&wfds);
		}
		rc = coreio_ctx_processfds(ctx, &rfds, &wfds);
		if (rc < 0)
			return rc;
		if (n > 0) {
			unsigned busy = __atomic_load_n(&ctx->busy_us, __ATOMIC_RELAXED);

			spin_until = busy ? now_us() + busy : 0;
		}
		if (usec >= 0 && now_us() >= deadline)
			return 0;
	}
}
