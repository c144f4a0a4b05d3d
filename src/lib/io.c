/* libcoreio: the sockets' receive side, frame routing, the VM's request queue and serving it. */

/*
 * Receiving: a connection's receive side (rx buffer, fd queue, the right to
 * call recv()) belongs to one thread at a time: conn.rx_busy, taken and
 * given back under ctx->lock, never nested. Its owner routes every
 * complete frame it reads before it gives the side back:
 *   - answers to our requests (hello, claim, DMA pieces) and SHM_MAP update
 *     the context at once;
 *   - on the control connection, the VM's own messages (MMIO requests,
 *     pings, RESET) are appended, in arrival order, to ctx->reqq;
 *   - on the DMA connection, the VM's messages need no callback: pings and
 *     misdirected requests are echoed at once, RESET is ignored (the
 *     control connection's copy stands for the VM).
 *
 * Serving: coreio__serve() takes the queue's head, runs the callback with
 * no lock held, sends the answer, and only then takes the next; one
 * thread serves at a time (ctx->serving), and a serve called while one
 * runs (from a callback, or from another thread) returns at once. A
 * callback that does blocking DMA waits on the DMA connection alone
 * (dma.c), so the requests behind it stay queued until it has returned.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/* The control connection is not read while this many requests wait. */
#define REQQ_PAUSE 4096u

void coreio__fail_locked(struct coreio_ctx *ctx, int err)
{
	if (!ctx->connected || ctx->broken)
		return;
	ctx->broken = err < 0 ? err : -ECONNRESET;
	for (int i = 0; i < COREIO__NCONN; i++)
		if (ctx->conn[i].fd >= 0)
			shutdown(ctx->conn[i].fd, SHUT_RDWR);
	coreio__xfer_fail_all_locked(ctx, -ECONNRESET);
	ctx->dma_tx_pending = false;
	pthread_cond_broadcast(&ctx->cond);
	coreio__wake(ctx);
}

void coreio__fail(struct coreio_ctx *ctx, int err)
{
	pthread_mutex_lock(&ctx->lock);
	coreio__fail_locked(ctx, err);
	pthread_mutex_unlock(&ctx->lock);
}

bool coreio__rx_take_locked(struct coreio_ctx *ctx, int i)
{
	struct coreio__conn *c = &ctx->conn[i];

	if (c->rx_busy)
		return false;
	c->rx_busy = true;
	return true;
}

void coreio__rx_park_locked(struct coreio_ctx *ctx, int i)
{
	struct coreio__conn *c = &ctx->conn[i];

	/* An event loop must not see this fd ready again and again while the
	 * owner reads it: leave it out until the owner gives it back. */
	if (!c->parked && ctx->epfd >= 0 && c->fd >= 0)
		epoll_ctl(ctx->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	c->parked = true;
}

void coreio__rx_give_locked(struct coreio_ctx *ctx, int i)
{
	struct coreio__conn *c = &ctx->conn[i];

	c->rx_busy = false;
	pthread_cond_broadcast(&ctx->cond);
	if (!c->parked)
		return;
	c->parked = false;
	if (ctx->epfd >= 0 && c->fd >= 0) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};

		epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, c->fd, &ev);
	}
	coreio__wake(ctx);
}

int coreio__send_unit(struct coreio_ctx *ctx, int i, const uint8_t *unit)
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

	coreio__wire_echo(u, frame);
	return coreio__send_unit(ctx, i, u);
}

/* The request queue: a ring of 64-byte units that grows when full. */

void coreio__reqq_clear_locked(struct coreio_ctx *ctx)
{
	ctx->reqq.head = 0;
	ctx->reqq.n = 0;
}

static int reqq_push_locked(struct coreio_ctx *ctx, const uint8_t *frame)
{
	struct coreio__reqq *q = &ctx->reqq;
	uint8_t *u;

	if (q->n == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 64;
		uint8_t(*grown)[COREIO_WIRE_UNIT] = malloc(cap * COREIO_WIRE_UNIT);

		if (!grown)
			return -ENOMEM;
		for (size_t k = 0; k < q->n; k++)
			memcpy(grown[k], q->unit[(q->head + k) % q->cap], COREIO_WIRE_UNIT);
		free(q->unit);
		q->unit = grown;
		q->cap = cap;
		q->head = 0;
	}
	u = q->unit[(q->head + q->n) % q->cap];
	/* Only the first unit is kept: every request fits in it (the decoder
	 * checked), and what the VM gets back carries E = 0. */
	coreio__wire_echo(u, frame);
	q->n++;
	return 0;
}

static bool reqq_pop_locked(struct coreio_ctx *ctx, uint8_t *out)
{
	struct coreio__reqq *q = &ctx->reqq;

	if (q->n == 0)
		return false;
	memcpy(out, q->unit[q->head], COREIO_WIRE_UNIT);
	q->head = (q->head + 1) % q->cap;
	q->n--;
	return true;
}

/* A PING with origin 1: the answer to our hello, or a stray one (ignored). */
static void hello_answer(struct coreio_ctx *ctx, int i, const struct coreio_wire_msg *m)
{
	struct coreio__conn *c = &ctx->conn[i];
	struct coreio_wire_hello hl;

	if (coreio__wire_hello_decode(m, &hl) < 0)
		return;
	pthread_mutex_lock(&ctx->lock);
	if (c->hello_wait) {
		c->caps =
		    hl.kind == COREIO_HELLO_ANSWER ? (unsigned)(hl.caps & coreio__offered(ctx)) : 0;
		c->hello_wait = false;
	}
	pthread_mutex_unlock(&ctx->lock);
}

/* The VM's answer to a claim (CLAIM_ACK). */
static void claim_answer(struct coreio_ctx *ctx, const struct coreio_wire_msg *m)
{
	struct coreio__claim *cl;

	if (m->h.iface >= COREIO_WIRE_MAX_RID)
		return;
	pthread_mutex_lock(&ctx->lock);
	cl = &ctx->claim[m->h.iface];
	if (cl->state == COREIO__CLAIM_WAITING && cl->tag == m->h.tag) {
		cl->result = coreio__wire_claim_ack_result(m);
		cl->state = COREIO__CLAIM_ANSWERED;
		pthread_cond_broadcast(&ctx->cond);
	}
	pthread_mutex_unlock(&ctx->lock);
}

/* True for the VM-initiated opcodes the request queue carries. */
static bool is_vm_request(unsigned op)
{
	switch (op) {
	case COREIO_OP_PING:
	case COREIO_OP_READ:
	case COREIO_OP_WRITE:
	case COREIO_OP_READP:
	case COREIO_OP_WRITEP:
	case COREIO_OP_WRITEA:
	case COREIO_OP_WRITEAP:
	case COREIO_OP_RESET:
		return true;
	default:
		return false;
	}
}

/*
 * Act on one frame from connection i (see the top of the file); fds
 * (nfds of them, at most one in fds[0]) came bound to it and are closed
 * unless an SHM_MAP keeps them. Returns 0 or a negative errno.
 */
static int route(struct coreio_ctx *ctx, int i, const uint8_t *frame, size_t len, const int *fds,
		 unsigned nfds)
{
	struct coreio_wire_msg m;
	int rc;

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
	if (!m.h.origin || m.h.op == COREIO_OP_RESET) {
		if (!is_vm_request(m.h.op))
			return 0;
		if (i == COREIO__CONN_CTRL) {
			pthread_mutex_lock(&ctx->lock);
			rc = reqq_push_locked(ctx, frame);
			/* Read outside the loop (a claim's wait): the loop serves it. */
			if (rc == 0 && !ctx->serving)
				coreio__wake(ctx);
			pthread_mutex_unlock(&ctx->lock);
			return rc;
		}
		/* The DMA connection serves no range: answer what needs an
		 * answer as the reference does, with no callback. */
		if (m.h.op == COREIO_OP_RESET || m.h.op == COREIO_OP_WRITE ||
		    m.h.op == COREIO_OP_WRITEP)
			return 0;
		if (m.h.op != COREIO_OP_PING && m.h.iface >= COREIO_WIRE_MAX_RID)
			return 0;
		return echo(ctx, i, frame);
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
			coreio__xfer_answer(ctx, &m);
		break;
	default:
		break;
	}
	return 0;
}

int coreio__rx_pull(struct coreio_ctx *ctx, int i)
{
	struct coreio__conn *c = &ctx->conn[i];
	struct coreio_wire_rx *rx = &c->rx;
	const uint8_t *frame;
	bool pause;
	size_t len;
	int rc = 0;

	pthread_mutex_lock(&ctx->lock);
	if (!ctx->connected || ctx->broken)
		rc = ctx->connected ? ctx->broken : -ENOTCONN;
	pause = i == COREIO__CONN_CTRL && ctx->reqq.n >= REQQ_PAUSE;
	pthread_mutex_unlock(&ctx->lock);
	if (rc < 0)
		return rc;

	if (!pause && rx->end - rx->start < sizeof(rx->buf)) {
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
		rc = route(ctx, i, frame, len, fds, nfds);
		if (rc < 0) {
			coreio__fail(ctx, rc == -EPROTO ? -EPROTO : -ECONNRESET);
			return rc;
		}
	}
	return 0;
}

/* A single write, split into one callback per run of enabled bytes when
 * the mask is sparse. Returns the first non-zero callback result. */
static int do_write(const struct coreio__reg *r, uint64_t addr, unsigned size, uint8_t *data,
		    uint32_t mask, unsigned flags)
{
	uint32_t full = coreio__wire_byte_mask(size);
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

/* Serve one MMIO request (a unit of the queue) with the callbacks of its range. */
static int serve_mmio(struct coreio_ctx *ctx, uint8_t *req, const struct coreio_wire_msg *m)
{
	const struct coreio_wire_hdr *h = &m->h;
	uint8_t ans[COREIO_WIRE_UNIT];
	size_t off1 = COREIO_WIRE_DATA_OFF, off2 = 0;
	struct coreio__reg r;
	unsigned len = m->len;
	int rc = 0;

	if (h->iface >= COREIO_WIRE_MAX_RID)
		return 0; /* dropped, as the reference does */
	pthread_mutex_lock(&ctx->lock);
	r = ctx->reg[h->iface];
	pthread_mutex_unlock(&ctx->lock);
	if (!r.used)
		return echo(ctx, COREIO__CONN_CTRL, req);

	/* Every request fits in its unit (decode checked single <= 32, pair <= 16). */
	if (m->data2)
		off2 = coreio__wire_pair_off(len);
	if (off1 + len > COREIO_WIRE_UNIT || off2 + len > COREIO_WIRE_UNIT)
		return -EPROTO;
	coreio__wire_answer_init(ans, req);

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
	coreio__wire_set_error(ans, rc != 0);
	return coreio__send_unit(ctx, COREIO__CONN_CTRL, ans);
}

/* The VM was reset: forget IRQ levels (lines are low now), then tell the model. */
static void serve_reset(struct coreio_ctx *ctx)
{
	void (*cb)(void *);
	void *opaque;

	pthread_mutex_lock(&ctx->lock);
	memset(ctx->irq, 0, sizeof(ctx->irq));
	cb = ctx->reset_cb;
	opaque = ctx->reset_opaque;
	pthread_mutex_unlock(&ctx->lock);
	if (cb)
		cb(opaque);
}

/* Serve one unit of the request queue. Returns 0 or a negative errno. */
static int serve_one(struct coreio_ctx *ctx, uint8_t *unit)
{
	struct coreio_wire_msg m;

	if (coreio__wire_decode(unit, COREIO_WIRE_UNIT, COREIO_WIRE_AT_CLIENT, &m) < 0)
		return -EPROTO;
	switch (m.h.op) {
	case COREIO_OP_PING:
		return coreio__send_unit(ctx, COREIO__CONN_CTRL, unit);
	case COREIO_OP_RESET:
		serve_reset(ctx);
		return 0;
	default:
		return serve_mmio(ctx, unit, &m);
	}
}

bool coreio__serve_pending_locked(const struct coreio_ctx *ctx)
{
	return !ctx->serving && (ctx->reqq.n > 0 || ctx->d_head);
}

void coreio__serve(struct coreio_ctx *ctx)
{
	uint8_t unit[COREIO_WIRE_UNIT];

	pthread_mutex_lock(&ctx->lock);
	if (ctx->serving) {
		pthread_mutex_unlock(&ctx->lock);
		return;
	}
	ctx->serving = true;
	for (;;) {
		struct coreio__xfer *x;

		if (!ctx->broken && reqq_pop_locked(ctx, unit)) {
			int rc;

			pthread_mutex_unlock(&ctx->lock);
			rc = serve_one(ctx, unit);
			if (rc < 0)
				coreio__fail(ctx, rc == -EPROTO ? -EPROTO : -ECONNRESET);
			pthread_mutex_lock(&ctx->lock);
			continue;
		}
		x = ctx->d_head;
		if (!x)
			break;
		/* Completions of non-blocking DMA, in the order they finished. */
		ctx->d_head = ctx->d_tail = NULL;
		pthread_mutex_unlock(&ctx->lock);
		while (x) {
			struct coreio__xfer *next = x->dnext;

			x->cpl(x->cplp, x->err);
			free(x);
			x = next;
		}
		pthread_mutex_lock(&ctx->lock);
	}
	ctx->serving = false;
	pthread_mutex_unlock(&ctx->lock);
}
