/* libcoreio: the DMA calls: shared-memory copies, non-blocking submission and the blocking wait. */

/*
 * A blocking DMA (cpl == NULL) waits for its own transfer by owning the
 * DMA connection's receive side and routing its answers (completing other
 * threads' pieces on the way); when another thread owns it, it sleeps on
 * ctx->cond until its transfer is done or the side is free. It never reads
 * the control connection, so a blocking DMA inside an MMIO callback lets
 * no other request of the VM reach a callback before that callback has
 * returned (the ordering contract, docs/libcoreio.md). The exception is a
 * blocking DMA made with COREIO_DMA_SERVE while no callback runs: it also
 * reads the control connection and serves the VM's requests, one at a
 * time and in order, until its transfer is done, so a VM that needs the
 * answer to an MMIO read before it can answer this DMA is not left
 * waiting on it (a vfio-user client holding its big lock, for one); it
 * runs no DMA completion. A non-blocking DMA
 * queues its pieces and returns; its completion runs from the serving
 * thread (coreio_ctx_processfds() and friends) with no lock held.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* How long a serving wait polls the control connection while another thread reads the DMA one. */
#define SERVE_POLL_MS 5

/*
 * With COREIO_DMA_SERVE: true when the waiting thread may serve the VM's
 * requests now, that is when no thread is serving (this one is not inside
 * a callback, and no other thread runs one). Lock held.
 */
static bool may_serve_locked(const struct coreio_ctx *ctx, bool serve)
{
	return serve && !ctx->broken && !ctx->serving;
}

/* Wait for blocking transfer x as described at the top. Returns its result. */
static int wait_xfer(struct coreio_ctx *ctx, struct coreio__xfer *x, bool serve)
{
	bool mine = false;
	int err;

	pthread_mutex_lock(&ctx->lock);
	while (!x->done) {
		if (may_serve_locked(ctx, serve) && ctx->reqq.n > 0) {
			/* The VM's requests first, in order. A callback may do a
			 * blocking DMA itself: it must find the DMA side free. */
			if (mine)
				coreio__rx_give_locked(ctx, COREIO__CONN_DMA);
			mine = false;
			pthread_mutex_unlock(&ctx->lock);
			coreio__serve_requests(ctx);
			pthread_mutex_lock(&ctx->lock);
			continue;
		}
		if (!mine && !ctx->broken)
			mine = coreio__rx_take_locked(ctx, COREIO__CONN_DMA);
		if (mine && !ctx->broken) {
			struct pollfd pf[2] = {
			    {.fd = ctx->conn[COREIO__CONN_DMA].fd, .events = POLLIN},
			    {.fd = ctx->conn[COREIO__CONN_CTRL].fd, .events = POLLIN},
			};
			/* With COREIO_DMA_SERVE the control connection is read too
			 * (when no other thread reads it): its requests are queued
			 * and served above while the transfer goes on. */
			bool ctl = may_serve_locked(ctx, serve) &&
				   coreio__rx_take_locked(ctx, COREIO__CONN_CTRL);
			int rc = 0;

			/* The last receive filled all it asked for: read again at
			 * once (it returns EAGAIN when that was all). */
			bool more = ctx->conn[COREIO__CONN_DMA].rx_more;
			bool ctl_more = ctl && ctx->conn[COREIO__CONN_CTRL].rx_more;

			if (ctx->dma_tx_pending)
				pf[0].events |= POLLOUT;
			pthread_mutex_unlock(&ctx->lock);
			if (more || ctl_more) {
				pf[0].revents = more ? POLLIN : 0;
				pf[1].revents = ctl_more ? POLLIN : 0;
			} else if (poll(pf, ctl ? 2 : 1, 100) < 0) {
				pf[0].revents = pf[1].revents = 0;
			}
			if (pf[0].revents & ~POLLOUT)
				rc = coreio__rx_pull(ctx, COREIO__CONN_DMA);
			/* Answers free slots: the next pieces go out now. */
			if (rc == 0 && coreio__xfer_pump(ctx) < 0)
				coreio__fail(ctx, -ECONNRESET);
			/* An error fails the context (rx_pull), which ends the wait. */
			if (ctl && pf[1].revents)
				coreio__rx_pull(ctx, COREIO__CONN_CTRL);
			pthread_mutex_lock(&ctx->lock);
			if (ctl)
				coreio__rx_give_locked(ctx, COREIO__CONN_CTRL);
		} else if (!ctx->broken) {
			struct timespec ts;

			/* Another thread reads the DMA connection: with
			 * COREIO_DMA_SERVE the control one is still ours to read,
			 * in short polls, so that thread's routing of our answer
			 * is seen within SERVE_POLL_MS. */
			if (may_serve_locked(ctx, serve) &&
			    coreio__rx_take_locked(ctx, COREIO__CONN_CTRL)) {
				struct pollfd cp = {.fd = ctx->conn[COREIO__CONN_CTRL].fd,
						    .events = POLLIN};
				bool cm = ctx->conn[COREIO__CONN_CTRL].rx_more;

				pthread_mutex_unlock(&ctx->lock);
				if (cm || poll(&cp, 1, SERVE_POLL_MS) > 0)
					coreio__rx_pull(ctx, COREIO__CONN_CTRL);
				pthread_mutex_lock(&ctx->lock);
				coreio__rx_give_locked(ctx, COREIO__CONN_CTRL);
				continue;
			}
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
	/* Requests queued by the last receive are served before we return. */
	if (serve)
		coreio__serve_requests(ctx);
	return err;
}

/* A transfer of len bytes at addr to or from buf, blocking unless cpl is given. */
static void xfer_init(struct coreio__xfer *x, bool write, unsigned mid, unsigned sid,
		      unsigned flags, uint64_t addr, void *buf, size_t len,
		      void (*cpl)(void *, int), void *cplp)
{
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
	/* Copied: nothing left to move. */
	xfer_init(x, write, mid, sid, flags, addr, buf, shm ? 0 : len, cpl, cplp);

	pthread_mutex_lock(&ctx->lock);
	rc = coreio__down_locked(ctx);
	if (rc) {
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
	return wait_xfer(ctx, x, (flags & COREIO_DMA_SERVE) != 0);
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

/* Segments of a vectored read whose transfers live on the stack (more are allocated). */
#define READV_STACK 4u

/*
 * A blocking vectored read (include/coreio.h). The order is the point:
 * seg[k] must be copied out of guest memory after seg[k - 1] was. Shared
 * memory: the segments are copied by memcpy, in order, on this thread,
 * as long as each lies in the map (the map's lock is dropped and taken
 * again between two copies, which orders the first copy's loads before the
 * second's on any CPU); from the first one that does not, the rest goes
 * through the socket, in order behind it, so none is copied before an
 * earlier one. Socket: every remaining segment becomes a blocking
 * transfer, all queued at once under the lock; the issue queue is FIFO and
 * a transfer is cut completely before the next one starts, so the pieces
 * go out in segment order, one batch, before any wait. The VM applies a
 * connection's pieces in order, each copied before the next is looked at.
 * Then one wait per transfer, in order: the first returns when seg[0] is
 * in, the others find theirs (nearly) done, so the caller waits for one
 * round trip.
 */
int coreio_ctx_dma_readv(coreio_ctx_t *ctx, unsigned mid, unsigned sid,
			 const struct coreio_dma_seg *seg, unsigned n, unsigned flags)
{
	struct coreio__xfer stack_x[READV_STACK], *xs;
	unsigned k = 0, nx;
	int rc = 0;

	if (!ctx || mid >= COREIO_WIRE_MAX_MID || sid >= COREIO_WIRE_MAX_SID ||
	    n > COREIO_DMA_READV_MAX || (n && !seg))
		return -EINVAL;
	for (unsigned i = 0; i < n; i++)
		if (seg[i].len && !seg[i].buf)
			return -EINVAL;
	/* Shared memory: the leading segments that lie in the map, by memcpy. */
	while (mid == 0 && k < n &&
	       (seg[k].len == 0 ||
		coreio__shm_copy(ctx, false, seg[k].addr, seg[k].len, seg[k].buf) == 0))
		k++;
	if (k == n) {
		/* All copied (or empty). Empty ones fail without a connection, as
		 * dma_submit()'s empty transfers do. */
		pthread_mutex_lock(&ctx->lock);
		rc = coreio__down_locked(ctx);
		pthread_mutex_unlock(&ctx->lock);
		return rc;
	}
	nx = n - k;
	xs = nx <= READV_STACK ? stack_x : malloc(nx * sizeof(*xs));
	if (!xs)
		return -ENOMEM;
	for (unsigned i = 0; i < nx; i++)
		xfer_init(&xs[i], false, mid, sid, flags, seg[k + i].addr, seg[k + i].buf,
			  seg[k + i].len, NULL, NULL);
	pthread_mutex_lock(&ctx->lock);
	rc = coreio__down_locked(ctx);
	if (rc) {
		pthread_mutex_unlock(&ctx->lock);
		if (xs != stack_x)
			free(xs);
		return rc;
	}
	/* All queued before anything is sent: one batch, in segment order. */
	for (unsigned i = 0; i < nx; i++)
		coreio__xfer_start_locked(ctx, &xs[i]);
	pthread_mutex_unlock(&ctx->lock);
	if (coreio__xfer_pump(ctx) < 0)
		coreio__fail(ctx, -ECONNRESET);
	/* Every transfer must be waited for (they live here); the first error wins. */
	for (unsigned i = 0; i < nx; i++) {
		int err = wait_xfer(ctx, &xs[i], (flags & COREIO_DMA_SERVE) != 0);

		if (err && !rc)
			rc = err;
	}
	if (xs != stack_x)
		free(xs);
	return rc;
}
