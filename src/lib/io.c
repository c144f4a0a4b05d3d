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
 * Direct receive (the DMA connection with LARGE_DMA): between frames, or
 * with part of a frame in rx, the owner asks xfer.c which LREAD answers
 * come next (coreio__xfer_direct_plan()) and receives them with one
 * recvmsg() whose iovecs put each header (and the padding before it) in
 * a scratch slot and each payload straight into the caller's buffer; rx
 * takes what follows. Every header is then checked as the decoder and
 * coreio__xfer_answer() would. An answer whose header came but not all
 * of its frame is continued by the next receive (ctx->direct.cont). The
 * first frame that is not what was planned and everything after it up to
 * the plan's end are copied out to ctx->spill (as large as a plan) and
 * routed in stream order, before what rx took.
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
#include <sys/uio.h>
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

int coreio__down_locked(const struct coreio_ctx *ctx)
{
	if (!ctx->connected)
		return -ENOTCONN;
	return ctx->broken ? -ECONNRESET : 0;
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
	rc = coreio__tran_send_all(c, unit, COREIO_WIRE_UNIT, COREIO__SEND_TIMEOUT_MS);
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

/* iovecs of a direct receive: a scratch slot and a payload per piece, the last padding, the tail.
 */
#define DIRECT_IOV (2 * COREIO__DIRECT_MAX + 2)

/* Copy bytes [from, to) of the stream that iov (niov of them) received into dst. */
static void iov_copy_out(const struct iovec *iov, int niov, size_t from, size_t to, uint8_t *dst)
{
	size_t pos = 0;

	for (int k = 0; k < niov && pos < to; k++) {
		size_t a = pos, b = pos + iov[k].iov_len;

		pos = b;
		if (b <= from)
			continue;
		if (a < from)
			a = from;
		if (b > to)
			b = to;
		memcpy(dst, (const uint8_t *)iov[k].iov_base + (a - (pos - iov[k].iov_len)), b - a);
		dst += b - a;
	}
}

/*
 * Route the whole frames of the n bytes at b, stream bytes from offset
 * pos on, received on the DMA connection (a direct receive's unplanned
 * bytes); the rest (part of a frame) goes to rx's front, before the
 * bytes at rx->buf + COREIO_WIRE_MAX_MSG. Returns 0 or a negative errno.
 */
static int spill_route(struct coreio_ctx *ctx, struct coreio__conn *c, const uint8_t *b, size_t n,
		       uint64_t pos)
{
	size_t off = 0;

	for (;;) {
		size_t flen;
		int fds[1], rc;
		unsigned nfds = 0;

		if (n - off < 8)
			break;
		flen = coreio__wire_frame_len(coreio__wire_get64(b + off));
		if (n - off < flen)
			break;
		if (c->fdq.n)
			nfds = coreio__wire_fdq_take(&c->fdq, pos + off, flen, fds, 1);
		rc = route(ctx, COREIO__CONN_DMA, b + off, flen, fds, nfds);
		if (rc < 0)
			return rc;
		off += flen;
	}
	/* Under one frame is left: it fits before the tail. */
	memcpy(c->rx.buf + COREIO_WIRE_MAX_MSG - (n - off), b + off, n - off);
	c->rx.start = COREIO_WIRE_MAX_MSG - (n - off);
	return 0;
}

/*
 * The direct receive described at the top, on connection c (the DMA
 * connection, LARGE_DMA negotiated; the caller owns its receive side).
 * The first planned frame may be under way: its header and part of its
 * payload in hand (an answer continued, d->cont bytes, or in rx), or the
 * first bytes (under 24) of a header in rx. rx is emptied; what follows
 * the plan lands in rx from COREIO_WIRE_MAX_MSG on, so that the part of
 * a frame that the unplanned bytes end with fits before it. Returns the
 * bytes read (> 0), 0 when the ordinary receive must run instead (no
 * plan), -ENODATA at end of stream, -EAGAIN when nothing was there, or
 * another negative errno.
 */
static long rx_direct(struct coreio_ctx *ctx, struct coreio__conn *c)
{
	struct coreio_wire_rx *rx = &c->rx;
	struct coreio__direct *d = &ctx->direct;
	size_t have = rx->end - rx->start, r0 = 0, g0 = 0, cap = sizeof(rx->buf);
	size_t fs[COREIO__DIRECT_MAX + 1], hpad[COREIO__DIRECT_MAX], pos = 0, got, rb, tail;
	struct iovec iov[DIRECT_IOV];
	unsigned ok = 0, k;
	bool hdr0 = false;
	int niov = 0, rc;
	uint8_t *buf;
	long n;

	if (!ctx->spill) {
		ctx->spill = malloc(COREIO__DIRECT_SPILL);
		if (!ctx->spill)
			return 0; /* the ordinary receive works without */
	}
	if (d->cont) {
		/* An answer under way: rx is empty (nothing is read past it). */
		g0 = d->cont;
		hdr0 = true;
	} else if (have == 0) {
		rx->start = rx->end = 0;
	} else if (have < 8 ||
		   have < coreio__wire_frame_len(coreio__wire_get64(rx->buf + rx->start))) {
		/* Part of one frame: continue it if it is the answer planned. */
		if (have >= COREIO_WIRE_DATA_OFF) {
			memcpy(d->cont_hdr, rx->buf + rx->start, COREIO_WIRE_DATA_OFF);
			g0 = have;
			hdr0 = true;
		} else {
			memcpy(d->hdr[0], rx->buf + rx->start, have);
			r0 = have;
		}
	} else {
		return 0;
	}
	if (coreio__xfer_direct_plan(ctx, hdr0 ? d->cont_hdr : NULL, g0 + r0,
				     COREIO__DIRECT_SPILL - r0, d) == 0) {
		if (d->cont) {
			/* Only a failed context takes a piece from the receiver. */
			d->cont = 0;
			return -ECONNRESET;
		}
		return 0;
	}
	buf = d->x->buf;
	if (hdr0 && !d->cont) {
		/* The frame's bytes in rx: the payload part goes to its place. */
		size_t part = g0 - COREIO_WIRE_DATA_OFF;

		if (part > d->p[0].len)
			part = d->p[0].len;
		memcpy(buf + d->p[0].off, rx->buf + rx->start + COREIO_WIRE_DATA_OFF, part);
	}
	d->cont = 0;
	rx->start = rx->end = 0; /* r0 bytes of a header are in d->hdr[0] */

	/* The plan in stream offsets from the first byte this receive reads:
	 * fs[k] where piece k's frame starts (fs[0] = 0: g0 + r0 bytes of it
	 * came before), fs[k + 1] where it ends; pos where its payload ends. */
	fs[0] = 0;
	for (k = 0; k < d->n; k++) {
		size_t len = d->p[k].len, flen = ((size_t)coreio__wire_extra_for(len) + 1) * 64;
		size_t before = k ? 0 : g0 + r0; /* bytes of the frame in hand */
		size_t pay = before > COREIO_WIRE_DATA_OFF ? before - COREIO_WIRE_DATA_OFF : 0;

		if (pay > len)
			pay = len;
		/* Piece k's header: in hdr[k], after the padding of k - 1 (hpad[k] bytes). */
		hpad[k] = k ? fs[k] - pos : 0;
		if (k == 0 && !hdr0)
			iov[niov++] = (struct iovec){d->hdr[0] + r0, COREIO_WIRE_DATA_OFF - r0};
		else if (k > 0)
			iov[niov++] = (struct iovec){d->hdr[k], hpad[k] + COREIO_WIRE_DATA_OFF};
		if (len > pay)
			iov[niov++] = (struct iovec){buf + d->p[k].off + pay, len - pay};
		fs[k + 1] = fs[k] + flen - before;
		pos = fs[k + 1] - (flen - COREIO_WIRE_DATA_OFF - len);
		if (before > COREIO_WIRE_DATA_OFF + len)
			pos = fs[k]; /* only part of the padding was left */
	}
	if (fs[d->n] > pos)
		iov[niov++] = (struct iovec){d->hdr[d->n], fs[d->n] - pos};
	iov[niov++] = (struct iovec){rx->buf + COREIO_WIRE_MAX_MSG, cap - COREIO_WIRE_MAX_MSG};

	n = coreio__wire_recv_iov_fds(c->fd, iov, niov, &c->fdq);
	if (n <= 0) {
		if (hdr0 && n == -EAGAIN) {
			d->cont = g0; /* the payload part stays in place */
		} else if (r0 && n == -EAGAIN) {
			memcpy(rx->buf, d->hdr[0], r0);
			rx->end = r0;
		}
		coreio__xfer_direct_done(ctx, d, 0);
		return n == 0 ? -ENODATA : n;
	}
	got = (size_t)n;
	c->rx_more = got == fs[d->n] + cap - COREIO_WIRE_MAX_MSG;

	/* Which planned answers came whole and as planned. */
	for (k = 0; k < d->n; k++) {
		size_t hend = k ? fs[k] + COREIO_WIRE_DATA_OFF : COREIO_WIRE_DATA_OFF - r0;
		const uint8_t *h = k == 0 && hdr0 ? d->cont_hdr : d->hdr[k] + hpad[k];

		if (!(k == 0 && hdr0) &&
		    (got < hend || !coreio__xfer_direct_hdr_ok(h, d->p[k].tag, d->p[k].len)))
			break;
		if (got < fs[k + 1]) {
			/* Whole header, part of the frame: continue it next time. */
			memmove(d->cont_hdr, h, COREIO_WIRE_DATA_OFF);
			d->cont = (k ? 0 : g0 + r0) + got - fs[k];
			coreio__xfer_direct_done(ctx, d, k);
			return n;
		}
		ok = k + 1;
	}
	tail = got > fs[d->n] ? got - fs[d->n] : 0;
	rx->start = COREIO_WIRE_MAX_MSG;
	rx->end = COREIO_WIRE_MAX_MSG + tail;
	if (ok == d->n) {
		coreio__xfer_direct_done(ctx, d, ok);
		return n;
	}

	/* The first frame not as planned and what follows (with the r0 bytes
	 * before the receive when that is the first one) are copied out of
	 * the caller's buffer before anything is routed, then routed in
	 * stream order after the planned answers that came. */
	rb = (got < fs[d->n] ? got : fs[d->n]) - fs[ok];
	if (ok == 0)
		memcpy(ctx->spill, d->hdr[0], r0);
	else
		r0 = 0;
	iov_copy_out(iov, niov, fs[ok], fs[ok] + rb, ctx->spill + r0);
	coreio__xfer_direct_done(ctx, d, ok);
	rc = spill_route(ctx, c, ctx->spill, r0 + rb, c->fdq.total - got + fs[ok] - r0);
	return rc < 0 ? rc : n;
}

/* Bytes coreio__wire_rx_fill_fds() asks for: the free tail, after it moved the rest to the front.
 */
static size_t rx_room(const struct coreio_wire_rx *rx)
{
	if (rx->start == rx->end)
		return sizeof(rx->buf);
	if (sizeof(rx->buf) - rx->end < COREIO_WIRE_MAX_MSG)
		return sizeof(rx->buf) - (rx->end - rx->start);
	return sizeof(rx->buf) - rx->end;
}

int coreio__rx_pull(struct coreio_ctx *ctx, int i)
{
	struct coreio__conn *c = &ctx->conn[i];
	struct coreio_wire_rx *rx = &c->rx;
	const uint8_t *frame;
	bool pause, held = false, dry = false;
	size_t len;
	int rc = 0;

	pthread_mutex_lock(&ctx->lock);
	if (!ctx->connected || ctx->broken)
		rc = ctx->connected ? ctx->broken : -ENOTCONN;
	pause = i == COREIO__CONN_CTRL && ctx->reqq.n >= REQQ_PAUSE;
	pthread_mutex_unlock(&ctx->lock);
	if (rc < 0)
		return rc;

	c->rx_more = false;
again:
	if ((!pause || c->tls) && rx->end - rx->start < sizeof(rx->buf)) {
		long n = 0;

		if (i == COREIO__CONN_DMA && (c->caps & COREIO_CAP_LARGE_DMA) && !c->tls)
			n = rx_direct(ctx, c);
		if (n == 0) {
			size_t room = rx_room(rx);

			/* With TLS, fill() drains the session: nothing is left behind
			 * unless the buffer filled up (see below). Paused, or again,
			 * it takes what the session holds and reads no socket. */
			n = c->tls ? coreio__tran_fill(c, pause || held)
				   : coreio__wire_rx_fill_fds(rx, c->fd, &c->fdq);
			c->rx_more = n > 0 && (size_t)n == room;
			dry = n == -EAGAIN;
			if (n == 0)
				n = -ENODATA;
		}
		if (n < 0 && n != -EAGAIN) {
			if (c->tls && *coreio__tran_error(c))
				coreio__log(ctx, COREIO_LOG_ERR, "TLS connection to the VM: %s",
					    coreio__tran_error(c));
			rc = n == -EPROTO ? -EPROTO : -ECONNRESET;
			coreio__fail(ctx, rc);
			return rc;
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
	/* Order: bytes a TLS session holds (decrypted, read ahead) never make
	 * the fd readable, and event loops sleep on the fd: they are all taken
	 * and routed before we return, paused or not (a bounded amount). */
	if (c->tls && !dry && coreio__tran_held(c)) {
		held = true;
		goto again;
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

/* coreio__serve() (completions true) and coreio__serve_requests() (false). */
static void serve_queue(struct coreio_ctx *ctx, bool completions)
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
		x = completions ? ctx->d_head : NULL;
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

void coreio__serve(struct coreio_ctx *ctx)
{
	serve_queue(ctx, true);
}

void coreio__serve_requests(struct coreio_ctx *ctx)
{
	serve_queue(ctx, false);
}
