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
 *
 * Direct receive (io.c): each piece remembers the piece issued right
 * after it, and ctx->expect_slot the piece whose answer should come next
 * (the VM answers one connection's requests in order). The DMA
 * connection's receive owner plans with that which LREAD answers come
 * next and receives their payload straight into the transfer's buffer;
 * x->receiving keeps the transfer (and its buffer) from completing while
 * such a receive runs, as x->sending does for scatter-gather sends. A
 * guess that turns out wrong costs nothing but a copy: the receiver
 * hands the bytes to the ordinary path.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

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
	ctx->last_slot = ctx->expect_slot = -1;
	ctx->direct.cont = 0;
	ctx->direct.x = NULL;
	ctx->direct.n = 0;
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
	if (x->outstanding == 0 && x->sending == 0 && x->receiving == 0 &&
	    (x->err || x->issued == x->len))
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
	ctx->last_slot = ctx->expect_slot = -1;
	for (x = ctx->active; x; x = next) {
		next = x->next;
		x->err = err;
		x->outstanding = 0;
		/* A send still reading x->buf (xfer_pump) or a receive writing
		 * into it (io.c) completes it when done. */
		if (x->sending == 0 && x->receiving == 0)
			complete_locked(ctx, x);
	}
}

/* At most this many pieces with data from a caller's buffer go out in one sendmsg(). */
#define SG_PIECES 64
/* iovecs of one sendmsg(): three per such piece, one per run of other frames. */
#define SG_IOV (4 * SG_PIECES + 1)

/*
 * Cut the next piece of x into a frame at out, its place in ctx->batch
 * (room bytes available there), and append iovecs for it to iov (*niov of
 * them so far). A frame without large data is written whole at out, its
 * iovec merged with the previous one when they touch, so runs of small
 * pieces go out as one buffer. A large write's header is written at out
 * and its data is not copied: its iovec points into x->buf (x->sending
 * counts it until the send is over, *sending says so) and the padding
 * comes from a static zero unit. Returns the frame length, or 0 when the
 * frame does not fit in room.
 */
static size_t build_piece_locked(struct coreio_ctx *ctx, struct coreio__xfer *x, uint8_t *out,
				 size_t room, struct iovec *iov, int *niov, bool *sending)
{
	static const uint8_t zeros[COREIO_WIRE_UNIT];
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
		h.mask = coreio__wire_byte_mask(plen);
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
	p->has_next = false;
	/* Issue order, for the direct receive's guess of what comes next. */
	if (ctx->last_slot >= 0 && ctx->piece[ctx->last_slot].x &&
	    ctx->piece[ctx->last_slot].tag == ctx->last_tag) {
		ctx->piece[ctx->last_slot].has_next = true;
		ctx->piece[ctx->last_slot].nslot = (uint16_t)slot;
		ctx->piece[ctx->last_slot].ntag = h.tag;
	}
	ctx->last_slot = (int)slot;
	ctx->last_tag = h.tag;
	if (ctx->expect_slot < 0 || !ctx->piece[ctx->expect_slot].x ||
	    ctx->piece[ctx->expect_slot].tag != ctx->expect_tag) {
		ctx->expect_slot = (int)slot;
		ctx->expect_tag = h.tag;
	}

	coreio__wire_encode(out, &h);
	*sending = x->write && large;
	if (*sending) {
		size_t pad = flen - COREIO_WIRE_DATA_OFF - plen;

		iov[(*niov)++] = (struct iovec){out, COREIO_WIRE_DATA_OFF};
		iov[(*niov)++] = (struct iovec){x->buf + x->issued, plen};
		if (pad)
			iov[(*niov)++] = (struct iovec){(void *)zeros, pad};
		x->sending++;
	} else {
		/* Not a large write: one unit, the data (if any) inside it. */
		struct iovec *last = *niov ? &iov[*niov - 1] : NULL;

		if (x->write)
			memcpy(out + COREIO_WIRE_DATA_OFF, x->buf + x->issued, plen);
		if (last && (uint8_t *)last->iov_base + last->iov_len == out)
			last->iov_len += flen;
		else
			iov[(*niov)++] = (struct iovec){out, flen};
	}
	x->issued += plen;
	x->outstanding++;
	ctx->inflight_bytes += plen;
	if (x->issued == x->len)
		queue_remove_locked(ctx, x);
	return flen;
}

/*
 * Send the n bytes of iov with one sendmsg() without blocking; what the
 * socket does not take is moved to the start of ctx->batch (tx_off,
 * tx_len) for the next call, so no iovec (and no pointer into a caller's
 * buffer) outlives this call. A byte that lies in the batch lies at its
 * stream offset there, at or after where it moves to: memmove() in stream
 * order never overwrites a byte still to move. Returns 0, or -ECONNRESET
 * on a send error.
 */
static int sg_send(struct coreio_ctx *ctx, struct coreio__conn *c, struct iovec *iov, int niov,
		   size_t n)
{
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)niov};
	ssize_t k;
	size_t skip, len = 0;

	if (c->tls) {
		/* TLS: records cut across the iovecs, a batch of them per send();
		 * what is left goes to the batch as below (its first byte is where
		 * the batch of records that said -EAGAIN began). */
		k = coreio__tran_sendv_nb(c, iov, niov);
		if (k < 0 && k != -EAGAIN)
			return -ECONNRESET;
	} else {
		do {
			k = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		} while (k < 0 && errno == EINTR);
		if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -ECONNRESET;
	}
	skip = k > 0 ? (size_t)k : 0;
	for (int i = 0; i < niov && len + skip < n; i++) {
		size_t l = iov[i].iov_len;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		memmove(ctx->batch + len, (const uint8_t *)iov[i].iov_base + skip, l - skip);
		len += l - skip;
		skip = 0;
	}
	ctx->tx_off = 0;
	ctx->tx_len = len;
	return 0;
}

int coreio__xfer_pump(struct coreio_ctx *ctx)
{
	struct coreio__conn *c = &ctx->conn[COREIO__CONN_DMA];
	bool pending;
	int rc = 0;

	pthread_mutex_lock(&c->tx_lock);
	for (;;) {
		struct iovec iov[SG_IOV];
		struct coreio__xfer *sx[SG_PIECES];
		int niov = 0, np = 0;
		size_t n = 0;

		if (ctx->tx_off < ctx->tx_len) {
			ssize_t k = coreio__tran_send_nb(c, ctx->batch + ctx->tx_off,
							 ctx->tx_len - ctx->tx_off);

			if (k > 0) {
				ctx->tx_off += (size_t)k;
				continue;
			}
			if (k == -EAGAIN)
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
		while (np < SG_PIECES && niov + 3 < SG_IOV && ctx->q_head && ctx->nfree > 0 &&
		       ctx->inflight_bytes < COREIO__DMA_MAX_INFLIGHT) {
			struct coreio__xfer *x = ctx->q_head;
			bool sending;
			size_t f;

			if (x->err) {
				/* A failed transfer sends no more pieces. */
				queue_remove_locked(ctx, x);
				maybe_complete_locked(ctx, x);
				continue;
			}
			f = build_piece_locked(ctx, x, ctx->batch + n, sizeof(ctx->batch) - n, iov,
					       &niov, &sending);
			if (f == 0)
				break;
			if (sending)
				sx[np++] = x;
			n += f;
		}
		pthread_mutex_unlock(&ctx->lock);
		if (n == 0)
			break;
		rc = sg_send(ctx, c, iov, niov, n);
		/* The rest is copied: the transfers' buffers are free again. */
		pthread_mutex_lock(&ctx->lock);
		for (int i = 0; i < np; i++) {
			sx[i]->sending--;
			maybe_complete_locked(ctx, sx[i]);
		}
		pthread_mutex_unlock(&ctx->lock);
		if (rc < 0) {
			ctx->tx_off = ctx->tx_len = 0;
			break;
		}
	}
	pending = ctx->tx_off < ctx->tx_len;
	pthread_mutex_lock(&ctx->lock);
	ctx->dma_tx_pending = pending && ctx->connected && !ctx->broken;
	pthread_mutex_unlock(&ctx->lock);
	pthread_mutex_unlock(&c->tx_lock);
	return rc;
}

/* Piece slot was answered (ok: its data, if any, is in place): free it. */
static void piece_done_locked(struct coreio_ctx *ctx, unsigned slot, bool ok)
{
	struct coreio__piece *p = &ctx->piece[slot];
	struct coreio__xfer *x = p->x;

	if (!ok && !x->err)
		x->err = -EFAULT;
	/* The next answer is expected for the piece issued after this one. */
	ctx->expect_slot = p->has_next ? (int)p->nslot : -1;
	ctx->expect_tag = p->ntag;
	p->x = NULL;
	ctx->free_slot[ctx->nfree++] = (uint16_t)slot;
	ctx->inflight_bytes -= p->len;
	x->outstanding--;
	maybe_complete_locked(ctx, x);
}

void coreio__xfer_answer(struct coreio_ctx *ctx, const struct coreio_wire_msg *m)
{
	unsigned slot = m->h.tag & SLOT_MASK;
	struct coreio__piece *p;
	bool ok;

	pthread_mutex_lock(&ctx->lock);
	p = &ctx->piece[slot];
	if (!p->x || p->tag != m->h.tag) {
		/* A piece we do not know (or no longer know): ignored. */
		pthread_mutex_unlock(&ctx->lock);
		return;
	}
	ok = !m->h.error && m->h.op == p->op;
	if (ok && (p->op == COREIO_OP_READ || p->op == COREIO_OP_LREAD)) {
		ok = m->data && m->len == p->len;
		if (ok)
			memcpy(p->x->buf + p->off, m->data, p->len);
	}
	piece_done_locked(ctx, slot, ok);
	pthread_mutex_unlock(&ctx->lock);
}

/* Bytes of the answer frame of a successful LREAD of len bytes. */
static size_t lread_frame_len(uint32_t len)
{
	return ((size_t)coreio__wire_extra_for(len) + 1) * COREIO_WIRE_UNIT;
}

bool coreio__xfer_direct_hdr_ok(const uint8_t *h, uint32_t tag, uint32_t len)
{
	uint64_t w0 = coreio__wire_get64(h), w1 = coreio__wire_get64(h + 8);

	/* E for the length, no error bit, origin 1 (the client's request),
	 * the tag; LREAD with the length in w[1] bits 32..63. iface, sid,
	 * flags and the address are not looked at (as coreio__xfer_answer()). */
	return len >= 1 && len <= COREIO_WIRE_LARGE_PIECE &&
	       ((w0 >> 8) & 0xffu) == coreio__wire_extra_for(len) && !((w0 >> 30) & 1u) &&
	       ((w0 >> 31) & 1u) && (uint32_t)(w0 >> 32) == tag &&
	       (w1 & 0xffu) == COREIO_OP_LREAD && (uint32_t)(w1 >> 32) == len;
}

unsigned coreio__xfer_direct_plan(struct coreio_ctx *ctx, const uint8_t *hdr, size_t skip,
				  size_t budget, struct coreio__direct *d)
{
	struct coreio__xfer *x = NULL;
	size_t used = 0;
	unsigned slot;
	uint32_t tag;

	d->n = 0;
	d->x = NULL;
	pthread_mutex_lock(&ctx->lock);
	if (!ctx->connected || ctx->broken) {
		pthread_mutex_unlock(&ctx->lock);
		return 0;
	}
	if (hdr) {
		tag = (uint32_t)(coreio__wire_get64(hdr) >> 32);
		slot = tag & SLOT_MASK;
	} else if (ctx->expect_slot >= 0) {
		tag = ctx->expect_tag;
		slot = (unsigned)ctx->expect_slot;
	} else {
		pthread_mutex_unlock(&ctx->lock);
		return 0;
	}
	while (d->n < COREIO__DIRECT_MAX) {
		const struct coreio__piece *p = &ctx->piece[slot];
		size_t f;

		/* (A failed transfer still takes its pending pieces' answers.) */
		if (!p->x || p->tag != tag || p->op != COREIO_OP_LREAD || (x && p->x != x))
			break;
		f = lread_frame_len(p->len);
		if (d->n == 0 && skip) {
			/* Its first skip bytes in hand: the header, when given, must be
			 * this piece's, and the frame not yet complete. */
			if ((hdr && !coreio__xfer_direct_hdr_ok(hdr, tag, p->len)) || skip >= f)
				break;
			f -= skip;
		}
		if (f > budget - used)
			break;
		x = p->x;
		d->p[d->n].off = p->off;
		d->p[d->n].len = p->len;
		d->p[d->n].tag = p->tag;
		d->p[d->n].slot = (uint16_t)slot;
		d->n++;
		used += f;
		if (!p->has_next)
			break;
		slot = p->nslot;
		tag = p->ntag;
	}
	if (d->n) {
		d->x = x;
		x->receiving++;
	}
	pthread_mutex_unlock(&ctx->lock);
	return d->n;
}

void coreio__xfer_direct_done(struct coreio_ctx *ctx, struct coreio__direct *d, unsigned ok)
{
	struct coreio__xfer *x = d->x;

	if (!x)
		return;
	pthread_mutex_lock(&ctx->lock);
	for (unsigned k = 0; k < ok && k < d->n; k++) {
		const struct coreio__piece *p = &ctx->piece[d->p[k].slot];

		/* Still ours unless the context failed meanwhile (slots freed). */
		if (p->x == x && p->tag == d->p[k].tag)
			piece_done_locked(ctx, d->p[k].slot, true);
	}
	x->receiving--;
	maybe_complete_locked(ctx, x);
	pthread_mutex_unlock(&ctx->lock);
	d->x = NULL;
	d->n = 0;
}
