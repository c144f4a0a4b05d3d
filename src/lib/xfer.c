/* libcoreio: DMA transfers cut into pieces, the slot table of pieces in flight, and their answers.
 */

/*
 * Base format: pieces end at 32-byte-aligned addresses (the first is
 * 32 - (addr & 31) bytes or less), READ or WRITEA with the size field and
 * an all-ones byte mask for the piece, write data at w[3]. With LARGE_DMA
 * negotiated on the DMA connection: LREAD/LWRITE pieces of up to
 * COREIO_WIRE_LARGE_PIECE bytes, length in w[1] bits 32..63, write data
 * from w[3] with E covering it. A piece's tag is its slot number (low 10
 * bits) plus a generation count, unique among pieces in flight. At most
 * COREIO__DMA_SLOTS pieces and COREIO__DMA_MAX_INFLIGHT bytes are in
 * flight per context; transfers wait on a FIFO issue queue, and whoever
 * handled answers (the DMA connection's receive owner) sends more.
 *
 * Everything here runs under ctx->lock except the send itself, which
 * runs under conn[1].tx_lock alone. This file does not receive: its
 * callers hand it the answers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

#define SLOT_BITS 10u
#define SLOT_MASK ((1u << SLOT_BITS) - 1u)

void coreio__xfer_init_locked(struct coreio_ctx *ctx)
{
	memset(ctx->piece, 0, sizeof(ctx->piece));
	for (unsigned i = 0; i < COREIO__DMA_SLOTS; i++)
		ctx->free_slot[i] = (uint16_t)(COREIO__DMA_SLOTS - 1 - i);
	ctx->nfree = COREIO__DMA_SLOTS;
	ctx->inflight_bytes = 0;
	ctx->active = NULL;
	ctx->q_head = ctx->q_tail = NULL;
}

static void queue_remove_locked(struct coreio_ctx *ctx, struct coreio__xfer *x)
{
	if (!x->queued)
		return;
	if (x->qprev)
		x->qprev->qnext = x->qnext;
	else
		ctx->q_head = x->qnext;
	if (x->qnext)
		x->qnext->qprev = x->qprev;
	else
		ctx->q_tail = x->qprev;
	x->qprev = x->qnext = NULL;
	x->queued = false;
}

/* Finish a transfer: wake its waiter or queue its completion callback. */
static void complete_locked(struct coreio_ctx *ctx, struct coreio__xfer *x)
{
	queue_remove_locked(ctx, x);
	if (x->prev)
		x->prev->next = x->next;
	else if (ctx->active == x)
		ctx->active = x->next;
	if (x->next)
		x->next->prev = x->prev;
	x->prev = x->next = NULL;
	if (x->blocking) {
		x->done = true;
		pthread_cond_broadcast(&ctx->cond);
		return;
	}
	x->dnext = NULL;
	if (ctx->d_tail)
		ctx->d_tail->dnext = x;
	else
		ctx->d_head = x;
	ctx->d_tail = x;
	coreio__wake(ctx);
}

static void maybe_complete_locked(struct coreio_ctx *ctx, struct coreio__xfer *x)
{
	if (x->outstanding == 0 && (x->err || x->issued == x->len))
		complete_locked(ctx, x);
}

void coreio__xfer_start_locked(struct coreio_ctx *ctx, struct coreio__xfer *x)
{
	x->next = ctx->active;
	if (ctx->active)
		ctx->active->prev = x;
	ctx->active = x;
	if (x->len == 0) {
		complete_locked(ctx, x);
		return;
	}
	x->queued = true;
	x->qprev = ctx->q_tail;
	if (ctx->q_tail)
		ctx->q_tail->qnext = x;
	else
		ctx->q_head = x;
	ctx->q_tail = x;
}

void coreio__xfer_fail_all_locked(struct coreio_ctx *ctx, int err)
{
	struct coreio__xfer *x, *next;

	for (unsigned i = 0; i < COREIO__DMA_SLOTS; i++) {
		struct coreio__piece *p = &ctx->piece[i];

		if (p->x && p->x->outstanding > 0)
			p->x->outstanding--;
		p->x = NULL;
	}
	for (unsigned i = 0; i < COREIO__DMA_SLOTS; i++)
		ctx->free_slot[i] = (uint16_t)(COREIO__DMA_SLOTS - 1 - i);
	ctx->nfree = COREIO__DMA_SLOTS;
	ctx->inflight_bytes = 0;
	for (x = ctx->active; x; x = next) {
		next = x->next;
		x->err = err;
		x->outstanding = 0;
		complete_locked(ctx, x);
	}
}

/* Byte-enable mask covering the first n bytes. */
static uint32_t full_mask(unsigned n)
{
	return n >= 32 ? 0xffffffffu : (1u << n) - 1u;
}

/*
 * Cut the next piece of x into a frame at out (room bytes available).
 * Returns the frame length, or 0 when the frame does not fit in room.
 */
static size_t build_piece_locked(struct coreio_ctx *ctx, struct coreio__xfer *x, uint8_t *out,
				 size_t room)
{
	bool large = (ctx->conn[COREIO__CONN_DMA].caps & COREIO_CAP_LARGE_DMA) != 0;
	size_t rest = x->len - x->issued;
	struct coreio_wire_hdr h = {
	    .iface = (uint8_t)x->mid,
	    .origin = true,
	    .sid = (uint8_t)x->sid,
	    .flags = (uint8_t)x->flags,
	    .addr = x->addr + x->issued,
	};
	struct coreio__piece *p;
	uint32_t plen;
	size_t flen;
	unsigned slot;

	if (large) {
		plen = (uint32_t)(rest < COREIO_WIRE_LARGE_PIECE ? rest : COREIO_WIRE_LARGE_PIECE);
		h.op = x->write ? COREIO_OP_LWRITE : COREIO_OP_LREAD;
		h.mask = plen;
		h.extra = x->write ? coreio__wire_extra_for(plen) : 0;
	} else {
		unsigned first = COREIO_WIRE_SMALL_PIECE - (unsigned)(h.addr & 31u);

		plen = (uint32_t)(rest < first ? rest : first);
		h.op = x->write ? COREIO_OP_WRITEA : COREIO_OP_READ;
		h.size = (uint8_t)plen;
		h.mask = full_mask(plen);
	}
	flen = ((size_t)h.extra + 1) * COREIO_WIRE_UNIT;
	if (flen > room)
		return 0;

	slot = ctx->free_slot[--ctx->nfree];
	h.tag = ((ctx->tag_gen++ & ((1u << (32 - SLOT_BITS)) - 1u)) << SLOT_BITS) | slot;
	p = &ctx->piece[slot];
	p->x = x;
	p->off = x->issued;
	p->len = plen;
	p->tag = h.tag;
	p->op = h.op;

	coreio__wire_encode(out, &h);
	if (x->write) {
		memcpy(out + COREIO_WIRE_DATA_OFF, x->buf + x->issued, plen);
		memset(out + COREIO_WIRE_DATA_OFF + plen, 0, flen - COREIO_WIRE_DATA_OFF - plen);
	}
	x->issued += plen;
	x->outstanding++;
	ctx->inflight_bytes += plen;
	if (x->issued == x->len)
		queue_remove_locked(ctx, x);
	return flen;
}

int coreio__xfer_pump(struct coreio_ctx *ctx)
{
	struct coreio__conn *c = &ctx->conn[COREIO__CONN_DMA];
	bool pending;
	int rc = 0;

	pthread_mutex_lock(&c->tx_lock);
	for (;;) {
		size_t n = 0;

		if (ctx->tx_off < ctx->tx_len) {
			ssize_t k = send(c->fd, ctx->batch + ctx->tx_off, ctx->tx_len - ctx->tx_off,
					 MSG_NOSIGNAL | MSG_DONTWAIT);

			if (k > 0) {
				ctx->tx_off += (size_t)k;
				continue;
			}
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			ctx->tx_off = ctx->tx_len = 0;
			rc = -ECONNRESET;
			break;
		}
		ctx->tx_off = ctx->tx_len = 0;
		pthread_mutex_lock(&ctx->lock);
		if (!ctx->connected || ctx->broken) {
			pthread_mutex_unlock(&ctx->lock);
			break;
		}
		while (ctx->q_head && ctx->nfree > 0 &&
		       ctx->inflight_bytes < COREIO__DMA_MAX_INFLIGHT) {
			struct coreio__xfer *x = ctx->q_head;
			size_t f;

			if (x->err) {
				/* A failed transfer sends no more pieces. */
				queue_remove_locked(ctx, x);
				maybe_complete_locked(ctx, x);
				continue;
			}
			f = build_piece_locked(ctx, x, ctx->batch + n, sizeof(ctx->batch) - n);
			if (f == 0)
				break;
			n += f;
		}
		pthread_mutex_unlock(&ctx->lock);
		if (n == 0)
			break;
		ctx->tx_len = n;
	}
	pending = ctx->tx_off < ctx->tx_len;
	pthread_mutex_lock(&ctx->lock);
	ctx->dma_tx_pending = pending && ctx->connected && !ctx->broken;
	pthread_mutex_unlock(&ctx->lock);
	pthread_mutex_unlock(&c->tx_lock);
	return rc;
}

void coreio__xfer_answer(struct coreio_ctx *ctx, const struct coreio_wire_msg *m)
{
	unsigned slot = m->h.tag & SLOT_MASK;
	struct coreio__piece *p;
	struct coreio__xfer *x;
	bool ok;

	pthread_mutex_lock(&ctx->lock);
	p = &ctx->piece[slot];
	if (!p->x || p->tag != m->h.tag) {
		/* A piece we do not know (or no longer know): ignored. */
		pthread_mutex_unlock(&ctx->lock);
		return;
	}
	x = p->x;
	ok = !m->h.error && m->h.op == p->op;
	if (ok && (p->op == COREIO_OP_READ || p->op == COREIO_OP_LREAD)) {
		ok = m->data && m->len == p->len;
		if (ok)
			memcpy(x->buf + p->off, m->data, p->len);
	}
	if (!ok && !x->err)
		x->err = -EFAULT;
	p->x = NULL;
	ctx->free_slot[ctx->nfree++] = (uint16_t)slot;
	ctx->inflight_bytes -= p->len;
	x->outstanding--;
	maybe_complete_locked(ctx, x);
	pthread_mutex_unlock(&ctx->lock);
}
