/* libcoreio: event loops: preparefds/processfds (select), the pollable fd, and the main loop. */

/*
 * Every way of running the context comes down to process(): read the
 * connections that are ready (each only when no other thread owns its
 * receive side), send DMA pieces that wait for socket space, then serve
 * the request queue and the completions. The main loop sleeps in epoll
 * on the set of coreio_ctx_get_fd(); select() users get the same set of
 * fds one by one from preparefds(). A connection another thread reads is
 * left out of both until that thread gives it back and wakes the loop
 * through the context's eventfd.
 */
#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define READY_ALL  0x7u			 /* both connections and the eventfd */
#define READY_WAKE (1u << COREIO__NCONN) /* the eventfd */

/*
 * One round of work for the connections in the ready mask (bit i:
 * connection i, READY_WAKE: the eventfd). Returns 0 or a negative errno.
 */
static int process(struct coreio_ctx *ctx, unsigned ready, bool writable)
{
	const struct coreio_ctx *outer;
	bool teardown = false;
	int rc = 0, wfd;

	pthread_mutex_lock(&ctx->lock);
	if (!ctx->connected) {
		pthread_mutex_unlock(&ctx->lock);
		return -ENOTCONN;
	}
	wfd = ctx->wake_fd;
	pthread_mutex_unlock(&ctx->lock);
	outer = coreio__enter_process(ctx);

	if (wfd >= 0 && (ready & READY_WAKE)) {
		uint64_t v;

		if (read(wfd, &v, sizeof(v)) < 0) {
			/* EAGAIN: nothing to drain. */
		}
	}
	for (int i = 0; i < COREIO__NCONN && rc == 0; i++) {
		bool mine = false, pump;

		if (ready & (1u << i)) {
			pthread_mutex_lock(&ctx->lock);
			mine = !ctx->broken && coreio__rx_take_locked(ctx, i);
			if (!mine && !ctx->broken)
				coreio__rx_park_locked(ctx, i);
			pthread_mutex_unlock(&ctx->lock);
		}
		if (mine) {
			rc = coreio__rx_pull(ctx, i);
			pthread_mutex_lock(&ctx->lock);
			coreio__rx_give_locked(ctx, i);
			pthread_mutex_unlock(&ctx->lock);
		}
		if (i != COREIO__CONN_DMA)
			continue;
		/* Answers freed slots, or the socket has room: more pieces go. */
		pthread_mutex_lock(&ctx->lock);
		pump = !ctx->broken && (ctx->dma_tx_pending || mine || writable);
		pthread_mutex_unlock(&ctx->lock);
		if (pump && coreio__xfer_pump(ctx) < 0)
			coreio__fail(ctx, -ECONNRESET);
	}
	coreio__serve(ctx);
	coreio__leave_process(outer);

	pthread_mutex_lock(&ctx->lock);
	if (ctx->connected && ctx->broken) {
		rc = ctx->broken;
		/* Close the dead connection unless another thread still uses it. */
		teardown = !ctx->serving && !ctx->conn[0].rx_busy && !ctx->conn[1].rx_busy;
	}
	pthread_mutex_unlock(&ctx->lock);
	if (teardown)
		coreio_ctx_disconnect(ctx);
	return rc < 0 ? rc : 0;
}

int coreio_ctx_preparefds(coreio_ctx_t *ctx, int nfds, fd_set *readfds, fd_set *writefds)
{
	bool wake = false;
	int rc = 0;

	if (!ctx || !readfds || nfds < 0)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	if (!ctx->connected) {
		pthread_mutex_unlock(&ctx->lock);
		return -ENOTCONN;
	}
	for (int i = 0; i < COREIO__NCONN; i++) {
		struct coreio__conn *c = &ctx->conn[i];

		if (c->fd >= FD_SETSIZE)
			rc = -EMFILE;
	}
	if (ctx->wake_fd >= FD_SETSIZE)
		rc = -EMFILE;
	if (rc < 0) {
		/* select() cannot watch it: coreio_ctx_get_fd() can. */
		pthread_mutex_unlock(&ctx->lock);
		return rc;
	}
	for (int i = 0; i < COREIO__NCONN; i++) {
		struct coreio__conn *c = &ctx->conn[i];

		/* A connection another thread is reading is left out; that
		 * thread wakes us through wake_fd when it is done. */
		if (c->fd < 0)
			continue;
		if (c->rx_busy) {
			coreio__rx_park_locked(ctx, i);
			continue;
		}
		FD_SET(c->fd, readfds);
		if (c->fd >= nfds)
			nfds = c->fd + 1;
		/* DMA pieces wait for socket space: ask to be told. Without
		 * writefds, the answers to the pieces already sent wake us. */
		if (i == COREIO__CONN_DMA && ctx->dma_tx_pending && writefds)
			FD_SET(c->fd, writefds);
	}
	if (ctx->wake_fd >= 0) {
		FD_SET(ctx->wake_fd, readfds);
		if (ctx->wake_fd >= nfds)
			nfds = ctx->wake_fd + 1;
	}
	if (coreio__serve_pending_locked(ctx) || ctx->broken)
		wake = true;
	pthread_mutex_unlock(&ctx->lock);
	if (wake)
		coreio__wake(ctx);
	return nfds;
}

int coreio_ctx_processfds(coreio_ctx_t *ctx, fd_set *readfds, fd_set *writefds)
{
	unsigned ready = 0;
	bool writable = false;

	if (!ctx)
		return -EINVAL;
	if (!readfds) {
		ready = READY_ALL;
	} else {
		pthread_mutex_lock(&ctx->lock);
		for (int i = 0; i < COREIO__NCONN; i++) {
			int fd = ctx->conn[i].fd;

			if (fd >= 0 && fd < FD_SETSIZE && FD_ISSET(fd, readfds))
				ready |= 1u << i;
		}
		if (ctx->wake_fd >= 0 && ctx->wake_fd < FD_SETSIZE &&
		    FD_ISSET(ctx->wake_fd, readfds))
			ready |= READY_WAKE;
		if (writefds && ctx->conn[COREIO__CONN_DMA].fd >= 0 &&
		    ctx->conn[COREIO__CONN_DMA].fd < FD_SETSIZE &&
		    FD_ISSET(ctx->conn[COREIO__CONN_DMA].fd, writefds))
			writable = true;
		pthread_mutex_unlock(&ctx->lock);
	}
	return process(ctx, ready, writable);
}

int coreio_ctx_get_fd(coreio_ctx_t *ctx)
{
	int fd;

	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	fd = ctx->connected && ctx->epfd >= 0 ? ctx->epfd : -ENOTCONN;
	pthread_mutex_unlock(&ctx->lock);
	return fd;
}

/* Which of the context's fds are ready, from the epoll set, without waiting. */
static unsigned ready_now(int epfd)
{
	struct epoll_event ev[COREIO__NCONN + 1];
	unsigned ready = 0;
	int n = epoll_wait(epfd, ev, COREIO__NCONN + 1, 0);

	for (int k = 0; k < n; k++)
		ready |= 1u << ev[k].data.u32;
	return ready;
}

int coreio_ctx_process(coreio_ctx_t *ctx)
{
	int epfd = coreio_ctx_get_fd(ctx);

	if (epfd < 0)
		return epfd;
	return process(ctx, ready_now(epfd), false);
}

/*
 * Sleep until one of the context's fds is ready or timeout_us passes
 * (negative: no limit); DMA pieces waiting for socket space also wake it.
 * Returns the ready mask (0 on timeout) or a negative errno.
 */
static int wait_ready(struct coreio_ctx *ctx, long long timeout_us, bool *writable)
{
	struct epoll_event ev[COREIO__NCONN + 1];
	struct timespec ts, *tsp = NULL;
	unsigned ready = 0;
	bool out;
	int epfd, dfd, n;

	pthread_mutex_lock(&ctx->lock);
	epfd = ctx->epfd;
	dfd = ctx->conn[COREIO__CONN_DMA].fd;
	out = ctx->dma_tx_pending;
	pthread_mutex_unlock(&ctx->lock);
	if (timeout_us >= 0) {
		ts.tv_sec = (time_t)(timeout_us / 1000000);
		ts.tv_nsec = (long)(timeout_us % 1000000) * 1000;
		tsp = &ts;
	}
	if (out) {
		/* Rare: the VM does not take our DMA pieces as fast as we make them. */
		struct pollfd pf[2] = {{.fd = epfd, .events = POLLIN},
				       {.fd = dfd, .events = POLLOUT}};

		n = ppoll(pf, 2, tsp, NULL);
		if (n < 0)
			return errno == EINTR ? 0 : -errno;
		*writable = (pf[1].revents & POLLOUT) != 0;
		return (int)(pf[0].revents ? ready_now(epfd) : 0);
	}
	n = epoll_pwait2(epfd, ev, COREIO__NCONN + 1, tsp, NULL);
	if (n < 0 && errno == ENOSYS) {
		/* Before Linux 5.11: millisecond resolution, rounded up. */
		int ms = timeout_us < 0 ? -1 : (int)((timeout_us + 999) / 1000);

		n = epoll_wait(epfd, ev, COREIO__NCONN + 1, ms);
	}
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int k = 0; k < n; k++)
		ready |= 1u << ev[k].data.u32;
	return (int)ready;
}

int coreio_ctx_mainloop(coreio_ctx_t *ctx, long long usec)
{
	long long deadline = usec >= 0 ? coreio__now_us() + usec : 0;
	long long spin_until = 0; /* busy-poll: no sleeping before this */

	if (!ctx)
		return -EINVAL;
	for (;;) {
		long long timeout = -1;
		bool writable = false;
		int ready, rc;

		if (usec >= 0) {
			timeout = deadline - coreio__now_us();
			if (timeout < 0)
				timeout = 0;
		}
		if (spin_until && coreio__now_us() < spin_until)
			timeout = 0; /* busy-poll: look without sleeping */
		pthread_mutex_lock(&ctx->lock);
		if (!ctx->connected) {
			pthread_mutex_unlock(&ctx->lock);
			return -ENOTCONN;
		}
		/* Work queued outside the loop (a claim's wait read requests). */
		if (coreio__serve_pending_locked(ctx) || ctx->broken)
			timeout = 0;
		pthread_mutex_unlock(&ctx->lock);
		ready = wait_ready(ctx, timeout, &writable);
		if (ready < 0)
			return ready;
		rc = process(ctx, (unsigned)ready, writable);
		if (rc < 0)
			return rc;
		if (ready > 0) {
			unsigned busy = __atomic_load_n(&ctx->busy_us, __ATOMIC_RELAXED);

			spin_until = busy ? coreio__now_us() + busy : 0;
		}
		if (usec >= 0 && coreio__now_us() >= deadline)
			return 0;
	}
}
