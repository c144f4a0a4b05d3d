/* libcoreio: contexts, connecting with the hello, claims, IRQ updates and the seed API wrappers. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "target.h"
#include "tls.h"

/* Initialise a zeroed context. Returns 0 or a negative errno. */
static int ctx_init(struct coreio_ctx *ctx)
{
	pthread_condattr_t ca;
	int rc;

	memset(ctx, 0, sizeof(*ctx));
	rc = pthread_mutex_init(&ctx->lock, NULL);
	if (rc)
		return -rc;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	rc = pthread_cond_init(&ctx->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (rc) {
		pthread_mutex_destroy(&ctx->lock);
		return -rc;
	}
	for (int i = 0; i < COREIO__NCONN; i++) {
		ctx->conn[i].fd = -1;
		pthread_mutex_init(&ctx->conn[i].tx_lock, NULL);
		coreio__wire_rx_init(&ctx->conn[i].rx);
		coreio__wire_fdq_init(&ctx->conn[i].fdq);
	}
	ctx->wake_fd = -1;
	ctx->epfd = -1;
	ctx->offer = COREIO_CAP_ALL;
	coreio__xfer_init_locked(ctx);
	return 0;
}

int coreio_ctx_new(coreio_ctx_t **out)
{
	struct coreio_ctx *ctx;
	int rc;

	if (!out)
		return -EINVAL;
	*out = NULL;
	ctx = malloc(sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	rc = ctx_init(ctx);
	if (rc < 0) {
		free(ctx);
		return rc;
	}
	*out = ctx;
	return 0;
}

static struct coreio_ctx default_ctx;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_init(void)
{
	if (ctx_init(&default_ctx) < 0) {
		/* Static mutex and condvar initialisation never fails in glibc;
		 * keep the context usable with the static initialisers anyway. */
		pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
		pthread_cond_t c = PTHREAD_COND_INITIALIZER;

		default_ctx.lock = m;
		default_ctx.cond = c;
	}
}

coreio_ctx_t *coreio_default_ctx(void)
{
	pthread_once(&default_once, default_init);
	return &default_ctx;
}

void coreio_ctx_free(coreio_ctx_t *ctx)
{
	if (!ctx)
		return;
	coreio_ctx_disconnect(ctx);
	if (ctx == &default_ctx)
		return;
	for (int i = 0; i < COREIO__NCONN; i++)
		pthread_mutex_destroy(&ctx->conn[i].tx_lock);
	free(ctx->reqq.unit);
	free(ctx->spill);
	coreio__tls_creds_free(ctx->tls_creds);
	pthread_cond_destroy(&ctx->cond);
	pthread_mutex_destroy(&ctx->lock);
	free(ctx);
}

void coreio_ctx_disconnect(coreio_ctx_t *ctx)
{
	if (!ctx)
		return;
	pthread_mutex_lock(&ctx->lock);
	if (!ctx->connected) {
		pthread_mutex_unlock(&ctx->lock);
		return;
	}
	coreio__fail_locked(ctx, -ECONNRESET);
	for (int i = 0; i < COREIO__NCONN; i++) {
		struct coreio__conn *c = &ctx->conn[i];

		coreio__tran_close(c);
		if (c->fd >= 0)
			close(c->fd);
		c->fd = -1;
		c->caps = 0;
		c->hello_wait = false;
		coreio__wire_rx_init(&c->rx);
		coreio__wire_fdq_clear(&c->fdq);
		coreio__wire_fdq_init(&c->fdq);
		c->parked = false;
	}
	coreio__shm_drop_locked(ctx);
	coreio__reqq_clear_locked(ctx);
	if (ctx->wake_fd >= 0)
		close(ctx->wake_fd);
	ctx->wake_fd = -1;
	if (ctx->epfd >= 0)
		close(ctx->epfd);
	ctx->epfd = -1;
	ctx->connected = false;
	ctx->broken = 0;
	memset(ctx->reg, 0, sizeof(ctx->reg));
	memset(ctx->claim, 0, sizeof(ctx->claim));
	memset(ctx->irq, 0, sizeof(ctx->irq));
	pthread_cond_broadcast(&ctx->cond);
	pthread_mutex_unlock(&ctx->lock);
	/* Pending non-blocking DMA completes now, with -ECONNRESET (or from
	 * the thread already serving, when that is another one or an outer
	 * call of this thread's). */
	coreio__serve(ctx);
}

/* Open one stream socket to sa and make it non-blocking. Returns the fd or -errno. */
static int open_one(int family, const struct sockaddr *sa, socklen_t salen, bool tcp)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	int rc;

	if (fd < 0)
		return -errno;
	do {
		rc = connect(fd, sa, salen);
	} while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if (tcp) {
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	} else {
		/* A UNIX stream's only buffer is its sender's: the default (about
		 * 208 KiB) makes a large DMA write sleep every 200 KiB. */
		int b = COREIO__UNIX_SNDBUF;

		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b, sizeof(b));
	}
	rc = fcntl(fd, F_GETFL);
	if (rc < 0 || fcntl(fd, F_SETFL, rc | O_NONBLOCK) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

/* Open both connections to t. Returns 0 with fds[0..1] set, or -errno. */
static int open_pair(const struct coreio__target *t, int fds[2])
{
	if (t->kind == COREIO__TARGET_UNIX) {
		struct sockaddr_un sun;

		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		memcpy(sun.sun_path, t->path, strlen(t->path) + 1);
		fds[0] = open_one(AF_UNIX, (struct sockaddr *)&sun, sizeof(sun), false);
		if (fds[0] < 0)
			return fds[0];
		fds[1] = open_one(AF_UNIX, (struct sockaddr *)&sun, sizeof(sun), false);
		if (fds[1] < 0) {
			close(fds[0]);
			return fds[1];
		}
		return 0;
	}

	struct addrinfo hints, *res = NULL;
	char port[8];
	int rc = -EHOSTUNREACH;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%u", (unsigned)t->port);
	if (getaddrinfo(t->host, port, &hints, &res) != 0 || !res)
		return -EHOSTUNREACH;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fds[0] = open_one(ai->ai_family, ai->ai_addr, ai->ai_addrlen, true);
		if (fds[0] < 0) {
			rc = fds[0];
			continue;
		}
		fds[1] = open_one(ai->ai_family, ai->ai_addr, ai->ai_addrlen, true);
		if (fds[1] < 0) {
			rc = fds[1];
			close(fds[0]);
			break;
		}
		rc = 0;
		break;
	}
	freeaddrinfo(res);
	return rc;
}

/* Send the hello PING on connection i. */
static int send_hello(struct coreio_ctx *ctx, int i)
{
	struct coreio_wire_hello hl = {
	    .kind = COREIO_HELLO_OFFER,
	    .caps = coreio__offered(ctx),
	    .version = COREIO_WIRE_VERSION,
	};
	uint8_t f[COREIO_WIRE_UNIT];
	int rc;

	coreio__wire_hello_encode(f, &hl);
	pthread_mutex_lock(&ctx->conn[i].tx_lock);
	rc = coreio__tran_send_all(&ctx->conn[i], f, sizeof(f), COREIO__HELLO_TIMEOUT_MS);
	pthread_mutex_unlock(&ctx->conn[i].tx_lock);
	return rc;
}

/* Run the hello on both connections; waits at most 2 s. Returns 0 or -errno. */
static int hello(struct coreio_ctx *ctx)
{
	long long deadline = coreio__now_ms() + COREIO__HELLO_TIMEOUT_MS;
	int rc;

	for (int i = 0; i < COREIO__NCONN; i++) {
		ctx->conn[i].hello_wait = true;
		rc = send_hello(ctx, i);
		if (rc < 0)
			return rc;
	}
	pthread_mutex_lock(&ctx->lock);
	for (;;) {
		struct pollfd p[COREIO__NCONN];
		int n = 0, idx[COREIO__NCONN];
		long long left = deadline - coreio__now_ms();

		if (ctx->broken) {
			rc = ctx->broken;
			break;
		}
		for (int i = 0; i < COREIO__NCONN; i++) {
			if (!ctx->conn[i].hello_wait)
				continue;
			p[n].fd = ctx->conn[i].fd;
			p[n].events = POLLIN;
			p[n].revents = 0;
			idx[n++] = i;
		}
		if (n == 0 || left <= 0) {
			rc = 0;
			break;
		}
		pthread_mutex_unlock(&ctx->lock);
		rc = poll(p, (nfds_t)n, (int)left);
		for (int k = 0; rc > 0 && k < n; k++) {
			if (!p[k].revents)
				continue;
			bool mine;

			pthread_mutex_lock(&ctx->lock);
			mine = coreio__rx_take_locked(ctx, idx[k]);
			pthread_mutex_unlock(&ctx->lock);
			if (!mine)
				continue; /* nobody else runs before connect returns */
			coreio__rx_pull(ctx, idx[k]);
			pthread_mutex_lock(&ctx->lock);
			coreio__rx_give_locked(ctx, idx[k]);
			pthread_mutex_unlock(&ctx->lock);
		}
		pthread_mutex_lock(&ctx->lock);
	}
	/* Silence means a base VM: no capabilities. */
	for (int i = 0; i < COREIO__NCONN; i++)
		ctx->conn[i].hello_wait = false;
	/* A map that came before the answer counts only if SHM was granted. */
	if (!(ctx->conn[COREIO__CONN_DMA].caps & COREIO_CAP_SHM))
		coreio__shm_drop_locked(ctx);
	pthread_mutex_unlock(&ctx->lock);
	return rc;
}

static void busy_poll_from_env(coreio_ctx_t *ctx);

/*
 * The event loop's fds: an eventfd other threads write to wake the loop,
 * and an epoll set of both sockets (data.u32 = connection index) and the
 * eventfd (data.u32 = COREIO__NCONN), the fd of coreio_ctx_get_fd().
 * Returns 0 or a negative errno (nothing left open).
 */
static int open_loop_fds(const int fds[COREIO__NCONN], int *wfd, int *epfd)
{
	int rc;

	*wfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (*wfd < 0)
		return -errno;
	*epfd = epoll_create1(EPOLL_CLOEXEC);
	if (*epfd < 0) {
		rc = -errno;
		close(*wfd);
		return rc;
	}
	for (int i = 0; i <= COREIO__NCONN; i++) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};

		if (epoll_ctl(*epfd, EPOLL_CTL_ADD, i < COREIO__NCONN ? fds[i] : *wfd, &ev) < 0) {
			rc = -errno;
			close(*epfd);
			close(*wfd);
			return rc;
		}
	}
	return 0;
}

int coreio_ctx_connect(coreio_ctx_t *ctx, const char *target)
{
	struct coreio__target t;
	int fds[2], wfd = -1, epfd = -1, rc;

	if (!ctx)
		return -EINVAL;
	busy_poll_from_env(ctx);
	rc = coreio__target_get(target, &t);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&ctx->lock);
	if (ctx->connected && !ctx->broken) {
		pthread_mutex_unlock(&ctx->lock);
		return -EISCONN;
	}
	pthread_mutex_unlock(&ctx->lock);
	/* A connection that died: clean it up before connecting again. */
	coreio_ctx_disconnect(ctx);

	rc = open_pair(&t, fds);
	if (rc < 0)
		return rc;
	rc = open_loop_fds(fds, &wfd, &epfd);
	if (rc < 0) {
		close(fds[0]);
		close(fds[1]);
		return rc;
	}

	pthread_mutex_lock(&ctx->lock);
	for (int i = 0; i < COREIO__NCONN; i++) {
		ctx->conn[i].fd = fds[i];
		ctx->conn[i].caps = 0;
		ctx->conn[i].hello_wait = false;
		coreio__wire_rx_init(&ctx->conn[i].rx);
		coreio__wire_fdq_init(&ctx->conn[i].fdq);
		ctx->conn[i].rx_busy = false;
		ctx->conn[i].parked = false;
	}
	ctx->unix_target = t.kind == COREIO__TARGET_UNIX;
	ctx->shm_warned = false;
	ctx->wake_fd = wfd;
	ctx->epfd = epfd;
	ctx->tx_off = ctx->tx_len = 0;
	ctx->dma_tx_pending = false;
	ctx->connected = true;
	ctx->broken = 0;
	memset(ctx->reg, 0, sizeof(ctx->reg));
	memset(ctx->claim, 0, sizeof(ctx->claim));
	memset(ctx->irq, 0, sizeof(ctx->irq));
	coreio__reqq_clear_locked(ctx);
	coreio__xfer_init_locked(ctx);
	pthread_mutex_unlock(&ctx->lock);

	if (t.tls) {
		rc = coreio__tran_tls_start(ctx, t.host, COREIO__TLS_TIMEOUT_MS);
		if (rc < 0) {
			coreio_ctx_disconnect(ctx);
			return rc == -ETIMEDOUT || rc == -EINVAL || rc == -ENOENT ? rc
										  : -ECONNREFUSED;
		}
	}
	if (ctx->offer) {
		rc = hello(ctx);
		if (rc < 0 && t.tls)
			coreio__tran_explain(ctx);
		if (rc < 0 && !t.tls && t.kind == COREIO__TARGET_TCP)
			coreio__log(ctx, COREIO_LOG_ERR,
				    "the VM closed the connection during the hello (%s): a tls=on "
				    "port? then connect to tls:%s:%u",
				    strerror(-rc), t.host, (unsigned)t.port);
		if (rc < 0) {
			coreio_ctx_disconnect(ctx);
			return rc == -EPROTO ? -EPROTO : -ECONNRESET;
		}
	}
	return 0;
}

int coreio_ctx_register(coreio_ctx_t *ctx, unsigned rid, const coreio_func_t *func, void *funcp)
{
	struct coreio__conn *c0;
	uint8_t f[COREIO_WIRE_UNIT];
	uint32_t tag;
	bool ack;
	int rc;

	if (!ctx || rid >= COREIO_WIRE_MAX_RID || !func || !func->read || !func->write)
		return -EINVAL;
	c0 = &ctx->conn[COREIO__CONN_CTRL];
	pthread_mutex_lock(&ctx->lock);
	rc = coreio__down_locked(ctx);
	if (rc) {
		pthread_mutex_unlock(&ctx->lock);
		return rc;
	}
	if (ctx->reg[rid].used) {
		pthread_mutex_unlock(&ctx->lock);
		return -EBUSY;
	}
	ctx->reg[rid].used = true;
	ctx->reg[rid].f = *func;
	ctx->reg[rid].priv = funcp;
	tag = ++ctx->next_tag;
	ack = (c0->caps & COREIO_CAP_CLAIM_ACK) != 0;
	if (ack) {
		ctx->claim[rid].state = COREIO__CLAIM_WAITING;
		ctx->claim[rid].tag = tag;
		ctx->claim[rid].result = 0;
	}
	pthread_mutex_unlock(&ctx->lock);

	coreio__wire_claim_encode(f, rid, tag);
	pthread_mutex_lock(&c0->tx_lock);
	rc = coreio__tran_send_all(c0, f, sizeof(f), COREIO__SEND_TIMEOUT_MS);
	pthread_mutex_unlock(&c0->tx_lock);

	pthread_mutex_lock(&ctx->lock);
	if (rc < 0) {
		coreio__fail_locked(ctx, -ECONNRESET);
		rc = -ECONNRESET;
	} else if (ack) {
		long long deadline = coreio__now_ms() + COREIO__CLAIM_TIMEOUT_MS;

		while (ctx->claim[rid].state == COREIO__CLAIM_WAITING) {
			long long left = deadline - coreio__now_ms();

			if (ctx->broken) {
				rc = -ECONNRESET;
				break;
			}
			if (left <= 0) {
				rc = -ETIMEDOUT;
				break;
			}
			if (left > 100)
				left = 100;
			/* The answer comes on the control connection; requests of
			 * the VM read on the way are queued, not served here. */
			if (coreio__rx_take_locked(ctx, COREIO__CONN_CTRL)) {
				struct pollfd p = {.fd = c0->fd, .events = POLLIN};

				pthread_mutex_unlock(&ctx->lock);
				if (poll(&p, 1, (int)left) > 0)
					coreio__rx_pull(ctx, COREIO__CONN_CTRL);
				pthread_mutex_lock(&ctx->lock);
				coreio__rx_give_locked(ctx, COREIO__CONN_CTRL);
			} else {
				struct timespec ts;

				clock_gettime(CLOCK_MONOTONIC, &ts);
				ts.tv_nsec += (long)left * 1000000L;
				ts.tv_sec += ts.tv_nsec / 1000000000L;
				ts.tv_nsec %= 1000000000L;
				pthread_cond_timedwait(&ctx->cond, &ctx->lock, &ts);
			}
		}
		if (ctx->claim[rid].state == COREIO__CLAIM_ANSWERED)
			rc = ctx->claim[rid].result;
		ctx->claim[rid].state = COREIO__CLAIM_IDLE;
	}
	if (rc < 0 && ctx->connected)
		memset(&ctx->reg[rid], 0, sizeof(ctx->reg[rid]));
	pthread_mutex_unlock(&ctx->lock);
	return rc;
}

int coreio_ctx_irq_update(coreio_ctx_t *ctx, unsigned rid, unsigned iid, unsigned state)
{
	struct coreio__conn *c0;
	uint8_t f[COREIO_WIRE_UNIT];
	uint8_t level = state ? 1 : 0;
	int rc = 0;

	if (!ctx || rid >= COREIO_WIRE_MAX_RID || iid >= COREIO_WIRE_MAX_IID)
		return -EINVAL;
	c0 = &ctx->conn[COREIO__CONN_CTRL];
	/* tx_lock first, so that two updates of one line reach the VM in the
	 * order their levels were recorded. */
	pthread_mutex_lock(&c0->tx_lock);
	pthread_mutex_lock(&ctx->lock);
	rc = coreio__down_locked(ctx);
	if (rc) {
		pthread_mutex_unlock(&ctx->lock);
		pthread_mutex_unlock(&c0->tx_lock);
		return rc;
	}
	if (ctx->irq[rid][iid] == level) {
		pthread_mutex_unlock(&ctx->lock);
		pthread_mutex_unlock(&c0->tx_lock);
		return 0;
	}
	ctx->irq[rid][iid] = level;
	pthread_mutex_unlock(&ctx->lock);

	coreio__wire_irq_encode(f, rid, iid, level != 0);
	rc = coreio__tran_send_all(c0, f, sizeof(f), COREIO__SEND_TIMEOUT_MS);
	pthread_mutex_unlock(&c0->tx_lock);
	if (rc < 0) {
		coreio__fail(ctx, -ECONNRESET);
		return -ECONNRESET;
	}
	return 0;
}

int coreio_ctx_set_reset_cb(coreio_ctx_t *ctx, void (*cb)(void *opaque), void *opaque)
{
	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	ctx->reset_cb = cb;
	ctx->reset_opaque = opaque;
	pthread_mutex_unlock(&ctx->lock);
	return 0;
}

int coreio_ctx_caps(coreio_ctx_t *ctx)
{
	int rc;

	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	if (!ctx->connected)
		rc = -ENOTCONN;
	else
		rc = (int)(ctx->conn[0].caps | ctx->conn[1].caps);
	pthread_mutex_unlock(&ctx->lock);
	return rc;
}

int coreio_ctx_set_offer(coreio_ctx_t *ctx, unsigned caps)
{
	int rc = 0;

	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	if (ctx->connected && !ctx->broken)
		rc = -EISCONN;
	else
		ctx->offer = caps & COREIO_CAP_ALL;
	pthread_mutex_unlock(&ctx->lock);
	return rc;
}

int coreio_ctx_set_busy_poll(coreio_ctx_t *ctx, unsigned usec)
{
	if (!ctx || usec > COREIO_BUSY_POLL_MAX_US)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	__atomic_store_n(&ctx->busy_us, usec, __ATOMIC_RELAXED);
	ctx->busy_set = true;
	pthread_mutex_unlock(&ctx->lock);
	return 0;
}

/* COREIO_BUSY_POLL_US, when the application did not choose (bad values are ignored). */
static void busy_poll_from_env(coreio_ctx_t *ctx)
{
	const char *e = getenv("COREIO_BUSY_POLL_US");
	char *end;
	unsigned long v;

	if (!e || !*e)
		return;
	errno = 0;
	v = strtoul(e, &end, 10);
	if (errno || *end || v > COREIO_BUSY_POLL_MAX_US)
		return;
	pthread_mutex_lock(&ctx->lock);
	if (!ctx->busy_set)
		__atomic_store_n(&ctx->busy_us, (unsigned)v, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&ctx->lock);
}

/* The seed API: thin wrappers over the default context. */

int coreio_connect(const char *target)
{
	return coreio_ctx_connect(coreio_default_ctx(), target);
}

int coreio_register(unsigned rid, const coreio_func_t *func, void *funcp)
{
	return coreio_ctx_register(coreio_default_ctx(), rid, func, funcp);
}

int coreio_irq_update(unsigned rid, unsigned iid, unsigned state)
{
	return coreio_ctx_irq_update(coreio_default_ctx(), rid, iid, state);
}

int coreio_dma_read(unsigned mid, unsigned sid, uint64_t addr, size_t len, void *buf,
		    unsigned flags, void (*cpl)(void *, int), void *cplp)
{
	return coreio_ctx_dma_read(coreio_default_ctx(), mid, sid, addr, len, buf, flags, cpl,
				   cplp);
}

int coreio_dma_write(unsigned mid, unsigned sid, uint64_t addr, size_t len, void *buf,
		     unsigned flags, void (*cpl)(void *, int), void *cplp)
{
	return coreio_ctx_dma_write(coreio_default_ctx(), mid, sid, addr, len, buf, flags, cpl,
				    cplp);
}

int coreio_preparefds(int nfds, fd_set *readfds, fd_set *writefds)
{
	return coreio_ctx_preparefds(coreio_default_ctx(), nfds, readfds, writefds);
}

int coreio_processfds(fd_set *readfds, fd_set *writefds)
{
	return coreio_ctx_processfds(coreio_default_ctx(), readfds, writefds);
}

int coreio_mainloop(long long usec)
{
	return coreio_ctx_mainloop(coreio_default_ctx(), usec);
}

void coreio_disconnect(void)
{
	coreio_ctx_disconnect(coreio_default_ctx());
}

int coreio_set_reset_cb(void (*cb)(void *opaque), void *opaque)
{
	return coreio_ctx_set_reset_cb(coreio_default_ctx(), cb, opaque);
}
