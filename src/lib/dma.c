/* libcoreio: DMA transfers, cut into pieces, pipelined on the DMA connection, blocking or not. */

/*
 * Locking and threads
 * -------------------
 * ctx->lock (a mutex) guards the context: registrations, IRQ levels, claim
 * waits, the DMA slot table (piece[], free_slot[], inflight_bytes), the
 * active list, the issue queue, the done list, the reader roles and the
 * connected/broken state. It is held only for short bookkeeping, never
 * across a blocking system call on a socket and never while a user
 * callback runs.
 *
 * conn[i].tx_lock serialises everything written to connection i, so frames
 * never interleave. conn[1].tx_lock also owns ctx->batch, where DMA piece
 * frames are built before one send. The order is always tx_lock first,
 * then ctx->lock (irq_update takes both so that two level changes of one
 * line reach the VM in the order they were recorded; dma_pump builds the
 * batch under ctx->lock inside tx_lock and sends after dropping ctx->lock).
 *
 * Reading: each connection has a reader role (conn[i].reader,
 * reader_depth). Only its holder calls recv() on the connection and uses
 * conn[i].rx. The role is taken and dropped under ctx->lock, held without
 * it, and nests for its owner: processfds holds the control connection's
 * role while an MMIO callback runs, so a blocking DMA called from that
 * callback may go on serving the control connection (nested callbacks).
 * Frames that a callback may outlive are copied to the stack first (one
 * 64-byte unit per MMIO request), so a nested reader may move the rx
 * buffer freely. Dropping a role broadcasts ctx->cond and, outside
 * processfds, writes the context's eventfd so a select() loop that left
 * the connection out of its fd_set (preparefds does so while another
 * thread reads it) looks again.
 *
 * A blocking DMA (cpl == NULL) waits for its own transfer:
 *   - if its thread holds the control connection's reader role (it runs
 *     inside an MMIO callback) it keeps serving that connection too;
 *   - it takes the DMA connection's reader role if it is free (or its
 *     own) and serves it until the transfer is done, completing other
 *     threads' pieces on the way;
 *   - otherwise it sleeps on ctx->cond until the reader completes its
 *     transfer or drops the role.
 * So a thread other than the one running coreio_mainloop never runs MMIO
 * callbacks because of a DMA. Non-blocking completions are put on the
 * done list and run by processfds (or by disconnect) with no lock held.
 *
 * Cutting and pipelining
 * ----------------------
 * Base format: pieces end at 32-byte-aligned addresses (the first is
 * 32 - (addr & 31) bytes or less), READ or WRITEA with the size field and
 * an all-ones byte mask for the piece, write data at w[3]. With LARGE_DMA
 * negotiated on the DMA connection: LREAD/LWRITE pieces of up to
 * COREIO_WIRE_LARGE_PIECE bytes, length in w[1] bits 32..63, write data
 * from w[3] with E covering it. A piece's tag is its slot number (low 10
 * bits) plus a generation count, unique among pieces in flight. At most
 * COREIO__DMA_SLOTS pieces and COREIO__DMA_MAX_INFLIGHT bytes are in
 * flight per context; transfers wait on a FIFO issue queue, and whoever
 * frees slots (the reader that handled answers) sends more.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "internal.h"

#define SLOT_BITS 10u
#define SLOT_MASK ((1u << SLOT_BITS) - 1u)

void coreio__dma_init_locked(struct coreio_ctx *ctx)
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
	if (!(ctx->proc_depth > 0 && pthread_equal(ctx->proc_owner, pthread_self())))
		coreio__wake(ctx);
}

static void maybe_complete_locked(struct coreio_ctx *ctx, struct coreio__xfer *x)
{
	if (x->outstanding == 0 && (x->err || x->issued == x->len))
		complete_locked(ctx, x);
}

void coreio__dma_fail_all_locked(struct coreio_ctx *ctx, int err)
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

void coreio__dma_pump(struct coreio_ctx *ctx)
{
	struct coreio__conn *c = &ctx->conn[COREIO__CONN_DMA];
	bool pending;

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
			coreio__fail(ctx, -ECONNRESET);
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
}

void coreio__dma_answer(struct coreio_ctx *ctx, const struct coreio_wire_msg *m)
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

/* True when rx holds at least one complete frame. */
static bool rx_has_frame(const struct coreio_wire_rx *rx)
{
	size_t have = rx->end - rx->start;

	return have >= 8 && have >= coreio__wire_frame_len(coreio__wire_get64(rx->buf + rx->start));
}

/* Wait for blocking transfer x, serving connections as described at the top. */
static int wait_xfer(struct coreio_ctx *ctx, struct coreio__xfer *x)
{
	bool held1 = false;
	int err;

	pthread_mutex_lock(&ctx->lock);
	while (!x->done) {
		bool own0 = coreio__reader_mine_locked(ctx, COREIO__CONN_CTRL);

		if (!held1 && !ctx->broken)
			held1 = coreio__reader_try_locked(ctx, COREIO__CONN_DMA);
		if ((held1 || own0) && !ctx->broken) {
			struct pollfd pf[2];
			int n = 0, timeout = held1 ? 100 : 5;
			int i1 = -1, i0 = -1;

			if (held1) {
				short ev = POLLIN;

				if (ctx->dma_tx_pending)
					ev |= POLLOUT;
				pf[n] = (struct pollfd){.fd = ctx->conn[1].fd, .events = ev};
				i1 = n++;
			}
			if (own0) {
				pf[n] = (struct pollfd){.fd = ctx->conn[0].fd, .events = POLLIN};
				i0 = n++;
				if (rx_has_frame(&ctx->conn[0].rx))
					timeout = 0;
			}
			pthread_mutex_unlock(&ctx->lock);
			if (poll(pf, (nfds_t)n, timeout) < 0)
				pf[0].revents = 0;
			if (i1 >= 0 && (pf[i1].revents & ~POLLOUT))
				coreio__conn_service(ctx, COREIO__CONN_DMA);
			else if (i1 >= 0 && pf[i1].revents)
				coreio__dma_pump(ctx);
			if (i0 >= 0 && (pf[i0].revents || rx_has_frame(&ctx->conn[0].rx)))
				coreio__conn_service(ctx, COREIO__CONN_CTRL);
			pthread_mutex_lock(&ctx->lock);
		} else {
			struct timespec ts;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_nsec += 100 * 1000000L;
			ts.tv_sec += ts.tv_nsec / 1000000000L;
			ts.tv_nsec %= 1000000000L;
			pthread_cond_timedwait(&ctx->cond, &ctx->lock, &ts);
		}
	}
	if (held1)
		coreio__reader_release_locked(ctx, COREIO__CONN_DMA);
	err = x->err;
	pthread_mutex_unlock(&ctx->lock);
	return err;
}

static int dma_submit(struct coreio_ctx *ctx, bool write, unsigned mid, unsigned sid, uint64_t addr,
		      size_t len, void *buf, unsigned flags, void (*cpl)(void *, int), void *cplp)
{
	struct coreio__xfer stack_x, *x;
	bool shm;
	int rc = 0;

	if (!ctx || mid >= COREIO_WIRE_MAX_MID || sid >= COREIO_WIRE_MAX_SID || !buf)
		return -EINVAL;
	/* Shared memory (shm.c): a mid 0 transfer inside one region is a memcpy,
	 * done now; a non-blocking one still completes through processfds. */
	shm = mid == 0 && len > 0 && coreio__shm_copy(ctx, write, addr, len, buf) == 0;
	if (shm && !cpl)
		return 0;
	x = cpl ? malloc(sizeof(*x)) : &stack_x;
	if (!x)
		return -ENOMEM;
	memset(x, 0, sizeof(*x));
	x->write = write;
	x->blocking = cpl == NULL;
	x->mid = mid;
	x->sid = sid;
	x->flags = flags & 0xfu;
	x->addr = addr;
	x->buf = buf;
	x->len = len;
	x->cpl = cpl;
	x->cplp = cplp;

	pthread_mutex_lock(&ctx->lock);
	if (!ctx->connected || ctx->broken) {
		rc = ctx->connected ? -ECONNRESET : -ENOTCONN;
		pthread_mutex_unlock(&ctx->lock);
		if (cpl)
			free(x);
		return rc;
	}
	/* Join the active list; an empty or copied transfer completes at once. */
	x->next = ctx->active;
	if (ctx->active)
		ctx->active->prev = x;
	ctx->active = x;
	if (len == 0 || shm) {
		complete_locked(ctx, x);
		pthread_mutex_unlock(&ctx->lock);
		return 0;
	}
	x->queued = true;
	x->qprev = ctx->q_tail;
	if (ctx->q_tail)
		ctx->q_tail->qnext = x;
	else
		ctx->q_head = x;
	ctx->q_tail = x;
	pthread_mutex_unlock(&ctx->lock);

	coreio__dma_pump(ctx);
	if (cpl)
		return 0;
	return wait_xfer(ctx, x);
}

int coreio_ctx_dma_read(coreio_ctx_t *ctx, unsigned mid, unsigned sid, uint64_t addr, size_t len,
			void *buf, unsigned flags, void (*cpl)(void *, int), void *cplp)
{
	return dma_submit(ctx, false, mid, sid, addr, len, buf, flags, cpl, cplp);
}

int coreio_ctx_dma_write(coreio_ctx_t *ctx, unsigned mid, unsigned sid, uint64_t addr, size_t len,
			 void *buf, unsigned flags, void (*cpl)(void *, int), void *cplp)
{
	return dma_submit(ctx, true, mid, sid, addr, len, buf, flags, cpl, cplp);
}
