/* coreio-vm: one client connection: socket, receive role, output queue, fd passing, lifetime. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "event.h"
#include "record.h"
#include "vmmio_internal.h"

static long long now_ms(void)
{
	return vmmio_now_ns() / 1000000;
}

bool vmmio_on_io_thread(const struct vmmio *v)
{
	return pthread_equal(pthread_self(), v->io_thread) != 0;
}

void conn_log(const struct vmmio_conn *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "coreio-vm: client %u (%s): ", c->id, c->peer);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

/* ---- lifetime ------------------------------------------------------------ */

/* The end of a connection: on the I/O thread, from the loop (event_defer()). */
static void conn_free(void *opaque)
{
	struct vmmio_conn *c = opaque;

	tls_conn_end(c); /* before its fd goes */
	close(c->fd);
	for (unsigned i = 0; i < c->natt; i++)
		close(c->att[i].fd);
	free(c->out);
	pthread_mutex_destroy(&c->tx_lock);
	pthread_mutex_destroy(&c->rx_lock);
	free(c);
}

void conn_get(struct vmmio_conn *c)
{
	atomic_fetch_add(&c->refs, 1);
}

void conn_put(struct vmmio_conn *c)
{
	if (atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	/* Closed (v->conns' reference is gone) and unused. Freed from the loop,
	 * after any callback of c that is running now; never where a callback
	 * could still be running for it. */
	if (event_defer(conn_free, c) < 0) {
		if (vmmio_on_io_thread(c->v))
			conn_free(c);
		else
			conn_log(c, "out of memory: the connection's memory is not freed");
	}
}

static void conn_event(int fd, uint32_t events, void *opaque);

struct vmmio_conn *conn_new(struct vmmio_port *port, int fd, const char *peer, const char *peer_key)
{
	struct vmmio *v = port->v;
	struct vmmio_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		return NULL;
	}
	c->v = v;
	c->port = port;
	c->fd = fd;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	snprintf(c->peer_key, sizeof(c->peer_key), "%s", peer_key);
	c->since_ms = now_ms();
	atomic_init(&c->partial_since, 0);
	atomic_init(&c->refs, 1); /* v->conns' */
	atomic_init(&c->dead, false);
	atomic_init(&c->rx_more, false);
	atomic_init(&c->dma_parked, false);
	atomic_init(&c->tls_ready, false);
	pthread_mutex_init(&c->tx_lock, NULL);
	pthread_mutex_init(&c->rx_lock, NULL);
	coreio__wire_rx_init(&c->rx);
	for (unsigned r = 0; r < CONFIG_MAX_PER_PORT; r++)
		for (unsigned i = 0; i < CONFIG_MAX_IRQS; i++) {
			const struct vmmio_range *rg = r < port->nranges ? port->ranges[r] : NULL;

			irq_source_init(&c->src[r][i], rg && i < rg->nirq ? rg->irqs[i] : -1);
		}
	/* Edge-triggered, for the connection's whole life: no epoll_ctl() per
	 * request, and an arrival while another thread has the receive role
	 * costs the I/O thread one wake-up, not a busy loop. */
	c->watched = VMMIO_WATCH;
	if ((port->tls && tls_conn_start(c) < 0) || event_add(fd, VMMIO_WATCH, conn_event, c) < 0) {
		tls_conn_end(c);
		close(fd);
		pthread_mutex_destroy(&c->tx_lock);
		pthread_mutex_destroy(&c->rx_lock);
		free(c);
		return NULL;
	}
	c->id = ++v->next_conn_id;
	c->next = v->conns;
	v->conns = c;
	port->nconns++;
	return c;
}

void conn_close(struct vmmio_conn *c, const char *why)
{
	struct vmmio *v = c->v;
	struct vmmio_conn **pp;

	if (conn_dead(c))
		return;
	atomic_store(&c->dead, true);
	if (!c->quiet)
		conn_log(c, "%s", why);
	if (vm_record)
		record_event(vm_record, c->id, REC_EV_CLOSE, "close reason=%s", why);
	if (c->dma_refused)
		conn_log(c, "%llu DMA piece(s) refused by the dma= policy of %s",
			 (unsigned long long)c->dma_refused, c->port->display);
	c->port->nconns--;
	event_del(c->fd);
	/* Wakes a vCPU that polls the socket; the fd stays open until conn_free(). */
	shutdown(c->fd, SHUT_RDWR);
	for (unsigned r = 0; r < c->port->nranges; r++) {
		struct vmmio_range *rg = c->port->ranges[r];

		if (rg->owner == c) {
			rg->owner = NULL;
			conn_log(c, "released range %u (rid %u)", rg->g, rg->rid);
			if (vm_record)
				record_event(vm_record, c->id, REC_EV_RELEASE,
					     "release rid=%u range=%u", rg->rid, rg->g);
			if (v->on_release)
				v->on_release(rg->g, v->release_opaque);
		}
	}
	for (pp = &v->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	c->next = NULL;
	req_abandon(c, NULL);
	conn_put(c); /* v->conns' reference */
}

void conn_fail(struct vmmio_conn *c, const char *why)
{
	pthread_mutex_t *lock = &c->v->io->lock;

	pthread_mutex_lock(lock);
	conn_close(c, why);
	pthread_mutex_unlock(lock);
}

/* ---- output -------------------------------------------------------------- */

/*
 * Make room for len bytes at the end of the queue (tx_lock held): *at is
 * where they go, c->out_len not moved yet. Returns 0, -ENOBUFS or -ENOMEM.
 */
static int out_reserve(struct vmmio_conn *c, size_t len, uint8_t **at)
{
	if (len > VMMIO_OUT_MAX || c->out_len - c->out_off > VMMIO_OUT_MAX - len)
		return -ENOBUFS;
	if (c->out_off > 0 && c->out_len + len > c->out_cap) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : COREIO_WIRE_MAX_MSG;
		uint8_t *p;

		while (cap < c->out_len + len)
			cap *= 2;
		p = realloc(c->out, cap);
		if (!p)
			return -ENOMEM;
		c->out = p;
		c->out_cap = cap;
	}
	if (c->out_len == c->out_off)
		c->out_since = now_ms();
	*at = c->out + c->out_len;
	return 0;
}

/* Append len bytes to the queue (tx_lock held). Returns 0, -ENOBUFS or -ENOMEM. */
static int out_append(struct vmmio_conn *c, const uint8_t *buf, size_t len)
{
	uint8_t *at;
	int err = out_reserve(c, len, &at);

	if (err < 0)
		return err;
	memcpy(at, buf, len);
	c->out_len += len;
	return 0;
}

/* Close c for a failed append (VM lock held). Returns err. */
static int queue_failed(struct vmmio_conn *c, int err)
{
	conn_close(c, err == -ENOBUFS
			  ? "output queue over 1 MiB (the client does not read); closing"
			  : "out of memory for the output queue; closing");
	return err;
}

int conn_queue(struct vmmio_conn *c, const uint8_t *frame, size_t len)
{
	int err;

	if (conn_dead(c))
		return -EPIPE;
	proto_trace(c, "<-", frame);
	pthread_mutex_lock(&c->tx_lock);
	err = out_append(c, frame, len);
	pthread_mutex_unlock(&c->tx_lock);
	if (err == 0 && vm_record) /* VM lock held: in the order queued */
		record_frame(vm_record, c->id, RECORD_TO_CLIENT, 0, frame, len);
	return err < 0 ? queue_failed(c, err) : 0;
}

uint8_t *conn_reserve(struct vmmio_conn *c, size_t len, int *err)
{
	uint8_t *at = NULL;

	if (conn_dead(c)) {
		*err = -EPIPE;
		return NULL;
	}
	pthread_mutex_lock(&c->tx_lock);
	*err = out_reserve(c, len, &at);
	if (*err == 0)
		return at; /* tx_lock stays held until conn_commit() */
	pthread_mutex_unlock(&c->tx_lock);
	queue_failed(c, *err);
	return NULL;
}

void conn_commit(struct vmmio_conn *c, size_t len)
{
	proto_trace(c, "<-", c->out + c->out_len);
	if (vm_record)
		record_frame(vm_record, c->id, RECORD_TO_CLIENT, 0, c->out + c->out_len, len);
	c->out_len += len;
	pthread_mutex_unlock(&c->tx_lock);
}

int conn_queue_fd(struct vmmio_conn *c, const uint8_t *frame, int fd)
{
	int dfd, err = 0;

	if (conn_dead(c))
		return -EPIPE;
	dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (dfd < 0) {
		err = -errno;
		conn_close(c, "cannot duplicate a memory fd; closing");
		return err;
	}
	proto_trace(c, "<-", frame);
	pthread_mutex_lock(&c->tx_lock);
	if (c->natt >= sizeof(c->att) / sizeof(c->att[0])) {
		err = -EMFILE;
	} else {
		err = out_append(c, frame, COREIO_WIRE_UNIT);
		if (err == 0) {
			c->att[c->natt].pos =
			    c->sent + (c->out_len - c->out_off) - COREIO_WIRE_UNIT;
			c->att[c->natt].fd = dfd;
			c->natt++;
		}
	}
	pthread_mutex_unlock(&c->tx_lock);
	if (err == 0 && vm_record)
		record_frame(vm_record, c->id, RECORD_TO_CLIENT, RECORD_FLAG_FD, frame,
			     COREIO_WIRE_UNIT);
	if (err == -EMFILE) {
		close(dfd);
		conn_close(c, "memory maps pile up unsent (the client does not read); closing");
		return err;
	}
	if (err < 0) {
		close(dfd);
		return queue_failed(c, err);
	}
	return 0;
}

/*
 * Send what the socket takes now, never blocking (tx_lock held). Returns
 * the bytes sent; *err is set (and the rest not sent) on an error.
 */
static size_t send_some(struct vmmio_conn *c, const uint8_t *buf, size_t len, int *err)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = send(c->fd, buf + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			done += (size_t)n;
			c->sent += (uint64_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			break;
		} else {
			*err = n < 0 ? errno : EPIPE;
			break;
		}
	}
	return done;
}

/*
 * Send up to len bytes of buf in one sendmsg() with fd attached, never
 * blocking (tx_lock held). Returns the bytes sent (0: the socket is full);
 * *err is set on an error.
 */
static size_t send_fd_some(struct vmmio_conn *c, const uint8_t *buf, size_t len, int fd, int *err)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	struct cmsghdr *cm;
	ssize_t n;

	memset(&ctl, 0, sizeof(ctl));
	mh.msg_control = ctl.buf;
	mh.msg_controllen = sizeof(ctl.buf);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	do {
		n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n > 0) {
		c->sent += (uint64_t)n;
		return (size_t)n;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	*err = n < 0 ? errno : EPIPE;
	return 0;
}

/*
 * Send queued output (tx_lock held): up to the next fd-carrying frame, that
 * frame alone with its fd, and so on. Returns the bytes sent; *err is set
 * on an error.
 */
static size_t flush_some(struct vmmio_conn *c, int *err)
{
	size_t total = 0;

	while (c->natt > 0 && c->out_off + total < c->out_len && !*err) {
		const uint8_t *p = c->out + c->out_off + total;
		size_t left = c->out_len - c->out_off - total, n;

		if (c->att[0].pos == c->sent) {
			n = send_fd_some(c, p, left < COREIO_WIRE_UNIT ? left : COREIO_WIRE_UNIT,
					 c->att[0].fd, err);
			if (n > 0) {
				close(c->att[0].fd);
				memmove(&c->att[0], &c->att[1], --c->natt * sizeof(c->att[0]));
			}
		} else {
			uint64_t gap = c->att[0].pos - c->sent;

			n = send_some(c, p, gap < left ? (size_t)gap : left, err);
		}
		if (n == 0)
			return total;
		total += n;
	}
	if (!*err && c->out_off + total < c->out_len)
		total +=
		    send_some(c, c->out + c->out_off + total, c->out_len - c->out_off - total, err);
	return total;
}

void conn_watch(struct vmmio_conn *c)
{
	uint32_t e = EPOLLET | (c->rx_muted ? 0 : EPOLLIN) |
		     (c->out_len > c->out_off || c->tls_want_out ? EPOLLOUT : 0);

	if (e != c->watched && !conn_dead(c) && event_mod(c->fd, e) == 0)
		c->watched = e;
}

/*
 * Order: frames leave in the order they were queued, whichever thread
 * flushes: only the head of the queue is ever sent, under tx_lock.
 */
void conn_flush(struct vmmio_conn *c)
{
	char why[128] = "";
	bool resume = false;

	pthread_mutex_lock(&c->tx_lock);
	/* A TLS connection's output (a RESET) waits for the handshake, after
	 * which the handshake's caller flushes (conn_rx_drain()). */
	if (!conn_dead(c) && c->out_len > c->out_off && (!c->tls || atomic_load(&c->tls_ready))) {
		bool paused = c->out_len - c->out_off > VMMIO_OUT_PAUSE;
		int err = 0;
		size_t n = c->tls ? tls_flush_some(c, &err) : flush_some(c, &err);

		if (n > 0) {
			c->out_off += n;
			c->out_since = now_ms();
		}
		if (c->out_off == c->out_len) {
			c->out_off = c->out_len = 0;
			if (c->out_cap > 4 * COREIO_WIRE_MAX_MSG) {
				free(c->out);
				c->out = NULL;
				c->out_cap = 0;
			}
		}
		if (err && c->tls)
			snprintf(why, sizeof(why), "TLS send failed: %s; closing",
				 coreio__tls_error(c->tls));
		else if (err)
			snprintf(why, sizeof(why), "send failed: %s; closing", strerror(err));
		else
			conn_watch(c);
		resume = paused && c->out_len - c->out_off <= VMMIO_OUT_PAUSE;
	} else {
		conn_watch(c);
	}
	pthread_mutex_unlock(&c->tx_lock);
	if (why[0])
		conn_fail(c, why);
	else if (resume)
		conn_rx_kick(c); /* frames held back while the queue was full run now */
}

size_t conn_queued(struct vmmio_conn *c)
{
	size_t n;

	pthread_mutex_lock(&c->tx_lock);
	n = c->out_len - c->out_off;
	pthread_mutex_unlock(&c->tx_lock);
	return n;
}

bool conn_stuck(struct vmmio_conn *c, long long now)
{
	bool stuck;

	pthread_mutex_lock(&c->tx_lock);
	stuck = c->out_len > c->out_off && now - c->out_since > VMMIO_SEND_TIMEOUT_MS;
	pthread_mutex_unlock(&c->tx_lock);
	return stuck;
}

bool connset_add(struct vmmio_connset *s, struct vmmio_conn *c)
{
	if (s->n >= VMMIO_CONNSET_MAX)
		return false;
	conn_get(c);
	s->c[s->n++] = c;
	return true;
}

void connset_add_flush(struct vmmio_connset *s, struct vmmio_conn *c)
{
	if (connset_add(s, c))
		return;
	pthread_mutex_lock(&c->tx_lock);
	conn_watch(c);
	pthread_mutex_unlock(&c->tx_lock);
}

/* Order: what a call queued with the VM lock held leaves before that call returns. */
void connset_flush(struct vmmio_connset *s)
{
	for (unsigned i = 0; i < s->n; i++) {
		conn_flush(s->c[i]);
		conn_put(s->c[i]);
	}
	s->n = 0;
}

void connset_receive(struct vmmio_connset *s)
{
	for (unsigned i = 0; i < s->n; i++) {
		conn_rx_kick(s->c[i]);
		conn_put(s->c[i]);
	}
	s->n = 0;
}

/* ---- input --------------------------------------------------------------- */

bool conn_rx_acquire(struct vmmio_conn *c)
{
	return pthread_mutex_trylock(&c->rx_lock) == 0;
}

void conn_rx_mute(struct vmmio_conn *c)
{
	pthread_mutex_lock(&c->tx_lock);
	c->rx_muted = true;
	conn_watch(c);
	pthread_mutex_unlock(&c->tx_lock);
}

void conn_rx_release(struct vmmio_conn *c)
{
	if (c->rx_muted) {
		/* Before letting go: what arrives from now on wakes the I/O
		 * thread, whose kick finds the role still ours and sets
		 * rx_more, which the check below sees. */
		pthread_mutex_lock(&c->tx_lock);
		c->rx_muted = false;
		conn_watch(c);
		pthread_mutex_unlock(&c->tx_lock);
	}
	pthread_mutex_unlock(&c->rx_lock);
	/* Order: input another thread saw arrive while we held the role is
	 * ours to run before we go (and maybe sleep). */
	if (atomic_load(&c->rx_more))
		conn_rx_kick(c);
}

/*
 * After a drain that ran every complete frame (rx_lock held): remember
 * since when part of a frame waits in the buffer, for the --peer-timeout
 * deadline (vmmio.c). The clock restarts whenever a frame completes
 * (proto_run_frames() clears it), so a
 * client streaming large frames is never dropped; one that stops inside
 * a frame is.
 */
static void note_partial(struct vmmio_conn *c)
{
	if (!coreio__wire_rx_partial(&c->rx)) {
		atomic_store(&c->partial_since, 0);
		return;
	}
	if (atomic_load(&c->partial_since) == 0)
		atomic_store(&c->partial_since, now_ms());
}

enum conn_drain conn_rx_drain(struct vmmio_conn *c, unsigned max_fills)
{
	unsigned fills = 0;

	atomic_store(&c->rx_more, false);
	if (c->tls && !atomic_load(&c->tls_ready)) {
		int err = tls_conn_handshake(c);

		if (err == -EAGAIN)
			return DRAIN_EMPTY;
		if (err < 0)
			return DRAIN_CLOSED;
		/* Complete: what the client sent with its Finished, and what
		 * was queued meanwhile, go through the loop below. */
	}
	for (;;) {
		char why[400];
		bool more;
		long n;

		/*
		 * Order: every complete frame received so far runs before the
		 * next receive (and before we return), and what they produce
		 * (DMA answers, pongs), queued, leaves in one send() per batch
		 * of VMMIO_CORK_MAX, after the VM lock is dropped.
		 */
		do {
			more = coreio__wire_rx_ready(&c->rx) && proto_run_frames(c);
			conn_flush(c);
		} while (more && !conn_dead(c) && conn_queued(c) <= VMMIO_OUT_PAUSE);
		if (conn_dead(c))
			return DRAIN_CLOSED;
		/* A DMA piece waits for the owner of its memory: the frames
		 * behind it wait, unread (its answer kicks the receiver). */
		if (atomic_load(&c->dma_parked))
			return DRAIN_PAUSED;
		/* A client that sends requests faster than it reads the answers
		 * is not read until it catches up (conn_flush() resumes). */
		if (conn_queued(c) > VMMIO_OUT_PAUSE)
			return DRAIN_PAUSED;
		if (max_fills && fills++ == max_fills)
			return DRAIN_LIMIT;
		n = c->tls ? tls_fill(c) : coreio__wire_rx_fill(&c->rx, c->fd);
		if (n > 0) {
			if (!c->rx_checked && !c->tls && tls_plain_check(c))
				return DRAIN_CLOSED;
			continue;
		}
		if (n == -EAGAIN) {
			note_partial(c);
			return DRAIN_EMPTY;
		}
		if (n == 0)
			snprintf(why, sizeof(why), "%s",
				 coreio__wire_rx_partial(&c->rx) ? "disconnected inside a frame"
								 : "disconnected");
		else if (c->tls)
			snprintf(why, sizeof(why), "TLS receive failed: %s; closing",
				 coreio__tls_error(c->tls));
		else
			snprintf(why, sizeof(why), "receive failed: %s", strerror((int)-n));
		conn_fail(c, why);
		return DRAIN_CLOSED;
	}
}

/* The rest of a drain that hit VMMIO_RX_ROUNDS (I/O thread, from the loop). */
static void rx_later(void *opaque)
{
	struct vmmio_conn *c = opaque;

	conn_rx_kick(c);
	conn_put(c);
}

void conn_rx_kick(struct vmmio_conn *c)
{
	unsigned max = vmmio_on_io_thread(c->v) ? VMMIO_RX_ROUNDS : 0;

	/*
	 * Set before trying: a holder that is about to let go sees it after
	 * its unlock (conn_rx_release()) and drains again; if it let go
	 * already, our trylock succeeds.
	 */
	atomic_store(&c->rx_more, true);
	while (atomic_load(&c->rx_more) && !conn_dead(c) && conn_rx_acquire(c)) {
		enum conn_drain r = conn_rx_drain(c, max);

		pthread_mutex_unlock(&c->rx_lock);
		if (r == DRAIN_LIMIT) {
			conn_get(c);
			if (event_defer(rx_later, c) < 0)
				conn_put(c);
			return;
		}
	}
}

/* A connection's socket is ready (I/O thread). */
static void conn_event(int fd, uint32_t events, void *opaque)
{
	struct vmmio_conn *c = opaque;

	(void)fd;
	if (c->tls && !atomic_load(&c->tls_ready)) {
		conn_rx_kick(c); /* the handshake, whichever way it waits */
		return;
	}
	if (events & EPOLLOUT)
		conn_flush(c);
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		conn_rx_kick(c);
}
