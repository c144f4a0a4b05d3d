/* libcoreio: the DMA calls: shared-memory copies, non-blocking submission and the blocking wait. */

/*
 * A blocking DMA (cpl == NULL) waits for its own transfer by owning the
 * DMA connection's receive side and routing its answers (completing other
 * threads' pieces on the way); when another thread owns it, it sleeps on
 * ctx->cond until its transfer is done or the side is free. It never reads
 * the control connection, so a blocking DMA inside an MMIO callback lets
 * no other request of the VM reach a callback before that callback has
 * returned (the ordering contract, docs/libcoreio.md). A non-blocking DMA
 * queues its pieces and returns; its completion runs from the serving
 * thread (coreio_ctx_processfds() and friends) with no lock held.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* Wait for blocking transfer x as described at the top. Returns its result. */
static int wait_xfer(struct coreio_ctx *ctx, struct coreio__xfer *x)
{
	bool mine = false;
	int err;

	pthread_mutex_lock(&ctx->lock);
	while (!x->done) {
		if (!mine && !ctx->broken)
			mine = coreio__rx_take_locked(ctx, COREIO__CONN_DMA);
		if (mine && !ctx->broken) {
			struct pollfd pf = {.fd = ctx->conn[COREIO__CONN_DMA].fd, .events = POLLIN};
			int rc = 0;

			/* The last receive filled all it asked for: read again at
			 * once (it returns EAGAIN when that was all). */
			bool more = ctx->conn[COREIO__CONN_DMA].rx_more;

			if (ctx->dma_tx_pending)
				pf.events |= POLLOUT;
			pthread_mutex_unlock(&ctx->lock);
			if (more)
				pf.revents = POLLIN;
			else if (poll(&pf, 1, 100) < 0)
				pf.revents = 0;
			if (pf.revents & ~POLLOUT)
				rc = coreio__rx_pull(ctx, COREIO__CONN_DMA);
			/* Answers free slots: the next pieces go out now. */
			if (rc == 0 && coreio__xfer_pump(ctx) < 0)
				coreio__fail(ctx, -ECONNRESET);
			pthread_mutex_lock(&ctx->lock);
		} else if (!ctx->broken) {
			struct timespec ts;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_nsec += 100 * 1000000L;
			ts.tv_sec += ts.tv_nsec / 1000000000L;
			ts.tv_nsec %= 1000000000L;
			pthread_cond_timedwait(&ctx->cond, &ctx->lock, &ts);
		}
		/* A broken context completes every transfer (coreio__fail_locked()). */
	}
	if (mine)
		coreio__rx_give_locked(ctx, COREIO__CONN_DMA);
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
	 * done now; a non-blocking one still completes through the loop. */
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
	x->len = shm ? 0 : len; /* copied: nothing left to move */
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
	coreio__xfer_start_locked(ctx, x);
	pthread_mutex_unlock(&ctx->lock);

	/* The pieces leave now, before this call returns (as far as the
	 * socket takes them; the rest goes as answers free room). */
	if (coreio__xfer_pump(ctx) < 0)
		coreio__fail(ctx, -ECONNRESET);
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
