/* coreio-vm: the CoreIO service: ports, client connections, vMMIO ranges, IRQs and DMA. */
#include "vmmio.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "event.h"

struct vmmio_conn {
	struct vmmio *v;
	struct vmmio_port *port;
	int fd;
	unsigned id;
	char peer[160];
	uint32_t caps; /* negotiated COREIO_CAP_* */
	uint32_t next_tag;
	bool dead;
	/*
	 * A vCPU thread is reading this socket itself (vmmio_wait()): the I/O
	 * thread does not read it (EPOLLIN is off, and conn_event() checks),
	 * and conn_close() leaves closing the fd and freeing to that thread.
	 */
	bool reader;
	bool free_by_reader; /* closed while a reader was polling */
	bool cork;	     /* frames of one receive run: answers queue, sent after */
	uint32_t armed;	     /* the events epoll watches for fd (conn_arm()) */
	/* Requests sent and waiting for their answer, linked by req->pend.next. */
	struct io_request *pending;
	struct irq_source src[CONFIG_MAX_PER_PORT][CONFIG_MAX_IRQS]; /* [rid][iid] */
	struct vmmio_conn *next;
	/* Output the socket did not take yet, flushed by the I/O thread on EPOLLOUT. */
	uint8_t *out;
	size_t out_off, out_len, out_cap; /* unsent bytes are out[out_off .. out_len) */
	long long out_since;		  /* ms: queue became non-empty or last progress */
	struct coreio_wire_rx rx;
	/* SHM_MAP frames waiting in out with their fds: each fd goes with a
	 * sendmsg() of its frame alone, at stream offset pos (docs/protocol.md). */
	uint64_t sent; /* bytes sent on the socket so far */
	struct {
		uint64_t pos;
		int fd; /* our duplicate */
	} att[2 * VMMIO_SHM_MAX];
	unsigned natt;
};

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void conn_log(const struct vmmio_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void conn_log(const struct vmmio_conn *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "coreio-vm: client %u (%s): ", c->id, c->peer);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

static void trace_frame(const struct vmmio_conn *c, const char *dir, const uint8_t *f)
{
	uint64_t w0 = coreio__wire_get64(f), w1 = coreio__wire_get64(f + 8);

	if (!c->v->trace)
		return;
	fprintf(stderr,
		"coreio-vm: trace: client %u %s %s iface %u tag %u%s%s E %u size %u flags %u "
		"mask 0x%x addr 0x%llx w3 0x%016llx\n",
		c->id, dir, coreio__wire_op_name(w1 & 0xff), (unsigned)(w0 & 0xff),
		(unsigned)(w0 >> 32), (w0 >> 31) & 1 ? " client-origin" : "",
		(w0 >> 30) & 1 ? " ERROR" : "", (unsigned)((w0 >> 8) & 0xff),
		(unsigned)((w1 >> 16) & 0x3f), (unsigned)((w1 >> 28) & 0xf), (unsigned)(w1 >> 32),
		(unsigned long long)coreio__wire_get64(f + 16),
		(unsigned long long)coreio__wire_get64(f + 24));
	fflush(stderr);
}

/* Fill req as if its range had no client: reads 0xAA, writes dropped. */
static void unclaimed(struct io_request *req)
{
	struct mmio_request *m = &req->reqs.mmio;

	req->result = 0;
	if (m->direction == REQUEST_READ) {
		memset(m->data, 0xaa, sizeof(m->data));
		memset(m->data2, 0xaa, sizeof(m->data2));
	}
}

static void conn_free(void *opaque)
{
	struct vmmio_conn *c = opaque;

	free(c->out);
	free(c);
}

/*
 * Give up everything a connection has in flight: its IRQ sources drop to 0
 * and every request waiting on it completes as if the range were unclaimed.
 * Used when the connection dies and when the VM is reset.
 */
static void conn_abandon(struct vmmio_conn *c)
{
	for (unsigned r = 0; r < CONFIG_MAX_PER_PORT; r++)
		for (unsigned i = 0; i < CONFIG_MAX_IRQS; i++)
			irq_source_set(c->v->irq, &c->src[r][i], false);
	while (c->pending) {
		struct io_request *req = c->pending;

		c->pending = req->pend.next;
		req->pend.next = NULL;
		unclaimed(req);
		ioreq_complete(req);
	}
}

/*
 * Close a connection: its claims are released, its IRQ sources drop to 0
 * and every request waiting on it completes as unclaimed. The memory is
 * freed later from the loop (or now when free_now), so callers up the
 * stack may still look at c->dead.
 */
static void conn_close(struct vmmio_conn *c, const char *why, bool free_now)
{
	struct vmmio *v = c->v;
	struct vmmio_conn **pp;

	if (c->dead)
		return;
	c->dead = true;
	conn_log(c, "%s", why);
	event_del(c->fd);
	if (c->reader) {
		/* A vCPU polls the fd with the lock released: wake it; it closes and frees. */
		shutdown(c->fd, SHUT_RDWR);
	} else {
		close(c->fd);
		c->fd = -1;
	}
	for (unsigned i = 0; i < c->natt; i++)
		close(c->att[i].fd);
	c->natt = 0;
	for (unsigned r = 0; r < c->port->nranges; r++) {
		struct vmmio_range *rg = c->port->ranges[r];

		if (rg->owner == c) {
			rg->owner = NULL;
			conn_log(c, "released range %u (rid %u)", rg->g, rg->rid);
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
	conn_abandon(c);
	if (c->reader)
		c->free_by_reader = true;
	else if (free_now || event_defer(conn_free, c) < 0)
		conn_free(c);
}

static void malformed(struct vmmio_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void malformed(struct vmmio_conn *c, const char *fmt, ...)
{
	char reason[256], why[320];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	c->v->io->stats.malformed++;
	snprintf(why, sizeof(why), "malformed frame: %s; closing", reason);
	conn_close(c, why, false);
}

static void send_failed(struct vmmio_conn *c, int err)
{
	char why[128];

	snprintf(why, sizeof(why), "send failed: %s; closing", strerror(err));
	conn_close(c, why, false);
}

/*
 * Send what the socket takes now, never blocking. Returns the bytes sent,
 * or -1 after closing the connection on an error.
 */
static ssize_t send_some(struct vmmio_conn *c, const uint8_t *buf, size_t len)
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
			send_failed(c, n < 0 ? errno : EPIPE);
			return -1;
		}
	}
	return (ssize_t)done;
}

/*
 * The events to watch on a connection: EPOLLOUT while output is queued, and
 * EPOLLIN unless the queue passed VMMIO_OUT_PAUSE (a client that sends
 * requests faster than it reads the answers is not read until it catches up).
 */
static uint32_t conn_events(const struct vmmio_conn *c)
{
	size_t queued = c->out_len - c->out_off;

	return (queued > VMMIO_OUT_PAUSE || c->reader ? 0 : EPOLLIN) | (queued ? EPOLLOUT : 0);
}

/* Tell epoll what conn_events() wants, unless it already watches exactly that. */
static void conn_arm(struct vmmio_conn *c)
{
	uint32_t e = conn_events(c);

	if (e != c->armed && event_mod(c->fd, e) == 0)
		c->armed = e;
}

/*
 * Send up to len bytes of buf in one sendmsg() with fd attached, never
 * blocking. Returns the bytes sent (0: the socket is full), or -1 after
 * closing the connection on an error.
 */
static ssize_t send_fd_some(struct vmmio_conn *c, const uint8_t *buf, size_t len, int fd)
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
		return n;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	send_failed(c, n < 0 ? errno : EPIPE);
	return -1;
}

/* Send queued output up to the next fd-carrying frame, that frame with its fd, and so on. */
static ssize_t flush_some(struct vmmio_conn *c)
{
	size_t total = 0;

	while (c->natt > 0 && c->out_off + total < c->out_len) {
		const uint8_t *p = c->out + c->out_off + total;
		size_t left = c->out_len - c->out_off - total;
		ssize_t n;

		if (c->att[0].pos == c->sent) {
			n = send_fd_some(c, p, left < COREIO_WIRE_UNIT ? left : COREIO_WIRE_UNIT,
					 c->att[0].fd);
			if (n > 0) {
				close(c->att[0].fd);
				memmove(&c->att[0], &c->att[1], --c->natt * sizeof(c->att[0]));
			}
		} else {
			uint64_t gap = c->att[0].pos - c->sent;

			n = send_some(c, p, gap < left ? (size_t)gap : left);
		}
		if (n < 0)
			return -1;
		if (n == 0)
			return (ssize_t)total;
		total += (size_t)n;
	}
	if (c->out_off + total < c->out_len) {
		ssize_t n =
		    send_some(c, c->out + c->out_off + total, c->out_len - c->out_off - total);

		if (n < 0)
			return -1;
		total += (size_t)n;
	}
	return (ssize_t)total;
}

/* Write out queued output (I/O thread, on EPOLLOUT). */
static void conn_flush(struct vmmio_conn *c)
{
	ssize_t n = flush_some(c);

	if (n < 0)
		return;
	if (n > 0)
		c->out_since = now_ms();
	c->out_off += (size_t)n;
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
		if (c->out_cap > 4 * COREIO_WIRE_MAX_MSG) {
			free(c->out);
			c->out = NULL;
			c->out_cap = 0;
		}
	}
	conn_arm(c);
}

/*
 * Send a whole frame without ever blocking (any thread, VM lock held): what
 * the socket does not take now is queued and flushed by the I/O thread. A
 * send error, or a queue above VMMIO_OUT_MAX, closes the connection.
 * Returns 0 or a negative errno (the connection is closed then).
 */
static int conn_queue(struct vmmio_conn *c, const uint8_t *buf, size_t rest);

static int conn_send(struct vmmio_conn *c, const uint8_t *buf, size_t len)
{
	ssize_t n = 0;

	if (c->dead)
		return -EPIPE;
	trace_frame(c, "<-", buf);
	if (c->out_len == c->out_off && !c->cork) {
		n = send_some(c, buf, len);
		if (n < 0)
			return -EPIPE;
		if ((size_t)n == len)
			return 0;
	}
	return conn_queue(c, buf + n, len - (size_t)n);
}

/* Queue rest bytes of buf behind the output already queued (see conn_send()). */
static int conn_queue(struct vmmio_conn *c, const uint8_t *buf, size_t rest)
{
	if (c->out_len - c->out_off + rest > VMMIO_OUT_MAX) {
		conn_close(c, "output queue over 1 MiB (the client does not read); closing", false);
		return -ENOBUFS;
	}
	if (c->out_off > 0 && c->out_len + rest > c->out_cap) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_len + rest > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : COREIO_WIRE_MAX_MSG;
		uint8_t *p;

		while (cap < c->out_len + rest)
			cap *= 2;
		p = realloc(c->out, cap);
		if (!p) {
			conn_close(c, "out of memory for the output queue; closing", false);
			return -ENOMEM;
		}
		c->out = p;
		c->out_cap = cap;
	}
	if (c->out_len == c->out_off)
		c->out_since = now_ms();
	memcpy(c->out + c->out_len, buf, rest);
	c->out_len += rest;
	if (!c->cork)
		conn_arm(c);
	else if (c->out_len - c->out_off >= VMMIO_CORK_MAX)
		conn_flush(c); /* corked: the batch is big enough to go */
	/* else conn_uncork() flushes and re-arms at the end */
	return 0;
}

/* End a corked run: send what it queued (which also re-arms epoll). */
static void conn_uncork(struct vmmio_conn *c)
{
	c->cork = false;
	if (!c->dead && c->out_len > c->out_off)
		conn_flush(c);
}

void vmmio_batch(void *opaque, bool begin)
{
	struct vmmio *v = opaque;

	for (struct vmmio_conn *c = v->conns, *next; c; c = next) {
		next = c->next; /* a failed send closes and unlinks c */
		if (begin)
			c->cork = true;
		else
			conn_uncork(c);
	}
}

static uint32_t new_tag(struct vmmio_conn *c)
{
	for (;;) {
		uint32_t tag = ++c->next_tag;
		bool used = false;

		for (const struct io_request *p = c->pending; p; p = p->pend.next)
			used |= p->pend.tag == tag;
		if (!used)
			return tag;
	}
}

static int vmmio_wait(struct io_request *req);

int vmmio_submit(struct io_request *req, void *opaque)
{
	struct vmmio_range *rg = opaque;
	struct vmmio_conn *c = rg->owner;
	struct mmio_request *m = &req->reqs.mmio;
	bool wr = m->direction == REQUEST_WRITE;
	bool posted = wr && !rg->acked;
	struct coreio_wire_hdr h = {0};
	uint8_t frame[COREIO_WIRE_UNIT];

	if (!c) {
		unclaimed(req);
		return 0;
	}
	if (m->pair)
		h.op = wr ? (rg->acked ? COREIO_OP_WRITEAP : COREIO_OP_WRITEP) : COREIO_OP_READP;
	else
		h.op = wr ? (rg->acked ? COREIO_OP_WRITEA : COREIO_OP_WRITE) : COREIO_OP_READ;
	h.iface = (uint8_t)rg->rid;
	h.tag = new_tag(c);
	h.size = (uint8_t)m->size;
	h.flags = (uint8_t)(m->flags & 0xf);
	h.mask = wr ? (m->mask ? m->mask : ioreq_full_mask(m->size)) : 0;
	h.addr = m->address;
	coreio__wire_encode(frame, &h);
	if (wr) {
		memcpy(frame + COREIO_WIRE_DATA_OFF, m->data, m->size);
		if (m->pair)
			memcpy(frame + coreio__wire_pair_off(m->size), m->data2, m->size);
	}
	if (conn_send(c, frame, sizeof(frame)) < 0) {
		/* The connection is gone: the access completes as unclaimed. */
		unclaimed(req);
		return 0;
	}
	if (posted)
		return 0;
	req->pend.tag = h.tag;
	req->pend.op = h.op;
	req->pend.owner = c;
	req->pend.range = rg;
	req->pend.next = c->pending;
	c->pending = req;
	req->wait = vmmio_wait;
	req->state = REQ_STATE_PROCESSING;
	return IOREQ_PENDING;
}

/* An answer (origin 0) to one of our MMIO requests. */
static void handle_answer(struct vmmio_conn *c, const struct coreio_wire_msg *m)
{
	struct io_request **pp, *p;
	const struct vmmio_range *rg;
	struct mmio_request *mr;

	if (m->h.op == COREIO_OP_WRITE || m->h.op == COREIO_OP_WRITEP)
		return; /* a posted write returned to us: nothing waits for it */
	for (pp = &c->pending; *pp; pp = &(*pp)->pend.next)
		if ((*pp)->pend.tag == m->h.tag)
			break;
	p = *pp;
	if (!p) {
		if (c->v->trace)
			conn_log(c, "answer with unknown tag %u ignored", m->h.tag);
		return;
	}
	rg = p->pend.range;
	if (p->pend.op != m->h.op || rg->rid != m->h.iface) {
		malformed(c, "answer tag %u is %s for rid %u, expected %s for rid %u", m->h.tag,
			  coreio__wire_op_name(m->h.op), m->h.iface,
			  coreio__wire_op_name(p->pend.op), rg->rid);
		return;
	}
	*pp = p->pend.next;
	p->pend.next = NULL;
	mr = &p->reqs.mmio;
	if (m->h.error) {
		p->result = -EIO;
	} else if (p->pend.op == COREIO_OP_READ) {
		/* The size is ours; the frame always holds at least one 64-byte unit. */
		memcpy(mr->data, m->frame + COREIO_WIRE_DATA_OFF, mr->size);
	} else if (p->pend.op == COREIO_OP_READP) {
		memcpy(mr->data, m->frame + COREIO_WIRE_DATA_OFF, mr->size);
		memcpy(mr->data2, m->frame + coreio__wire_pair_off(mr->size), mr->size);
	}
	ioreq_complete(p);
}

/*
 * Send one SHM_MAP frame with fd attached, never blocking: the frame goes
 * in a sendmsg() of its own; when output is queued (or the socket is
 * full) it is queued with a duplicate of fd, which conn_flush() sends
 * with the frame. Returns 0 or a negative errno (the connection is closed).
 */
static int conn_send_fd(struct vmmio_conn *c, const uint8_t *frame, int fd)
{
	int dfd;

	if (c->dead)
		return -EPIPE;
	trace_frame(c, "<-", frame);
	if (c->out_len == c->out_off) {
		ssize_t n = send_fd_some(c, frame, COREIO_WIRE_UNIT, fd);

		if (n < 0)
			return -EPIPE;
		if (n == COREIO_WIRE_UNIT)
			return 0;
		if (n > 0) /* the fd went with the first bytes */
			return conn_queue(c, frame + n, COREIO_WIRE_UNIT - (size_t)n);
	}
	if (c->natt >= sizeof(c->att) / sizeof(c->att[0])) {
		conn_close(c, "memory maps pile up unsent (the client does not read); closing",
			   false);
		return -ENOBUFS;
	}
	dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (dfd < 0) {
		int err = errno;

		conn_close(c, "cannot duplicate a memory fd; closing", false);
		return -err;
	}
	c->att[c->natt].pos = c->sent + (c->out_len - c->out_off);
	c->att[c->natt].fd = dfd;
	c->natt++;
	return conn_queue(c, frame, COREIO_WIRE_UNIT);
}

/*
 * Send the shared memory map (the current generation) to a connection that
 * negotiated COREIO_CAP_SHM: one SHM_MAP frame per region with its fd, or
 * one frame without fd for an empty map. VM lock held. Returns 0 or a
 * negative errno (the connection is closed).
 */
static int shm_send_map(struct vmmio_conn *c)
{
	struct vmmio *v = c->v;
	unsigned n = v->nshm;

	for (unsigned i = 0; i < (n ? n : 1); i++) {
		struct coreio_wire_hdr h = {.op = COREIO_OP_SHM_MAP, .tag = (uint32_t)v->shm_gen};
		uint8_t f[COREIO_WIRE_UNIT];
		int rc;

		h.addr = n ? v->shm[i].gpa : 0;
		coreio__wire_encode(f, &h);
		coreio__wire_put64(f + 24, n ? v->shm[i].size : 0);
		coreio__wire_put64(f + 32, n ? v->shm[i].offset : 0);
		coreio__wire_put64(f + 40, i);
		coreio__wire_put64(f + 48, v->shm_gen);
		coreio__wire_put64(f + 56, n);
		rc = n ? conn_send_fd(c, f, v->shm[i].fd) : conn_send(c, f, sizeof(f));
		if (rc < 0)
			return rc;
	}
	v->io->stats.shm_maps++;
	conn_log(c, "shared memory: sent map generation %llu (%u region(s))",
		 (unsigned long long)v->shm_gen, n);
	return 0;
}

static void handle_ping(struct vmmio_conn *c, const struct coreio_wire_msg *m)
{
	uint8_t out[COREIO_WIRE_UNIT];
	uint64_t w0;

	if (!m->h.origin)
		return; /* an echo of something we sent: never bounce it back */
	memcpy(out, m->frame, sizeof(out));
	w0 = coreio__wire_get64(out) & ~0xff00ull; /* E cleared */
	coreio__wire_put64(out, w0);
	if (coreio__wire_get64(out + 16) == COREIO_WIRE_MAGIC &&
	    coreio__wire_get64(out + 24) == COREIO_HELLO_OFFER) {
		c->caps = (uint32_t)(coreio__wire_get64(out + 32) & COREIO_CAP_ALL);
		/* SHM: opted in, UNIX, and never around an IOMMU (config_parse() agrees). */
		if (!c->port->shm || !c->port->is_unix || c->port->cfg->iommu)
			c->caps &= ~COREIO_CAP_SHM;
		coreio__wire_put64(out + 24, COREIO_HELLO_ANSWER);
		coreio__wire_put64(out + 32, c->caps);
		coreio__wire_put64(out + 40, COREIO_WIRE_VERSION);
		conn_log(c, "hello: capabilities 0x%x", c->caps);
		/* The memory map goes first, so it is complete when the client
		 * reads the answer. */
		if ((c->caps & COREIO_CAP_SHM) && shm_send_map(c) < 0)
			return;
	}
	conn_send(c, out, sizeof(out));
}

static void handle_claim(struct vmmio_conn *c, const struct coreio_wire_msg *m)
{
	struct vmmio *v = c->v;
	unsigned rid = m->h.iface;
	int err = 0;
	struct vmmio_range *rg = NULL;

	if (rid >= c->port->nranges) {
		err = ENOENT;
		conn_log(c, "claim of rid %u refused: port %s has %u range(s)", rid,
			 c->port->display, c->port->nranges);
	} else {
		rg = c->port->ranges[rid];
		if (rg->owner && rg->owner != c) {
			err = EBUSY;
			conn_log(c, "claim of rid %u (range %u) refused: held by client %u", rid,
				 rg->g, rg->owner->id);
		}
	}
	if (!err && rg->owner != c) {
		rg->owner = c;
		conn_log(c, "claimed range %u (rid %u)", rg->g, rid);
	}
	if (c->caps & COREIO_CAP_CLAIM_ACK) {
		struct coreio_wire_hdr h = m->h;
		uint8_t out[COREIO_WIRE_UNIT];

		h.extra = 0;
		h.origin = true;
		h.error = err != 0;
		coreio__wire_encode(out, &h);
		coreio__wire_put64(out + COREIO_WIRE_DATA_OFF, (uint64_t)err);
		if (conn_send(c, out, sizeof(out)) < 0)
			return;
	}
	if (!err && v->on_claim)
		v->on_claim(rg->g, v->claim_opaque);
}

static void handle_irq(struct vmmio_conn *c, const struct coreio_wire_msg *m)
{
	unsigned rid = m->h.iface;
	uint64_t iid = m->h.addr;
	bool level = coreio__wire_get64(m->frame + COREIO_WIRE_DATA_OFF) != 0;
	struct vmmio_range *rg;

	if (rid >= c->port->nranges) {
		conn_log(c, "IRQ update for rid %u ignored: no such range on %s", rid,
			 c->port->display);
		return;
	}
	rg = c->port->ranges[rid];
	if (iid >= rg->nirq) {
		conn_log(c, "IRQ update for rid %u iid %llu ignored: the range has %u line(s)", rid,
			 (unsigned long long)iid, rg->nirq);
		return;
	}
	if (c->v->trace)
		conn_log(c, "IRQ rid %u iid %llu (line %d) -> %d", rid, (unsigned long long)iid,
			 rg->irqs[iid], level);
	irq_source_set(c->v->irq, &c->src[rid][iid], level);
}

/* A DMA request (origin 1): READ/WRITEA of up to 32 bytes, LREAD/LWRITE larger. */
/*
 * The host memory a DMA piece touches, in order: mid 0 is guest-physical,
 * any other mid goes through that IOMMU, and a port bound to an IOMMU
 * (--vmmio iommu=N[,sid=S]) may use nothing else (docs/iommu.md). Returns
 * the number of segments, or 0 when the DMA fails (faults are recorded).
 */
static int dma_map(struct vmmio_conn *c, const struct coreio_wire_msg *m, bool write, uint8_t **hp,
		   uint32_t *hl)
{
	const struct range_config *pc = c->port->cfg;
	struct iommu_seg seg[IOMMU_MAX_SEGS];
	int n = iommu_dma_map(c->v->iommu, pc->iommu, pc->iommu_sid, m->h.iface, m->h.sid,
			      m->h.addr, m->len, write, seg, IOMMU_MAX_SEGS);

	for (int i = 0; i < n; i++) {
		hp[i] = vm_dma_ptr(c->v, seg[i].gpa, seg[i].len);
		hl[i] = seg[i].len;
		if (!hp[i])
			return 0;
	}
	return n < 0 ? 0 : n;
}

static void handle_dma(struct vmmio_conn *c, const struct coreio_wire_msg *m)
{
	struct vmmio *v = c->v;
	bool large = m->h.op == COREIO_OP_LREAD || m->h.op == COREIO_OP_LWRITE;
	bool rd = m->h.op == COREIO_OP_READ || m->h.op == COREIO_OP_LREAD;
	struct coreio_wire_hdr h = m->h;
	uint8_t *p = NULL, *hp[IOMMU_MAX_SEGS];
	uint32_t hl[IOMMU_MAX_SEGS], done = 0;
	int nseg;
	size_t flen;

	if (large && !(c->caps & COREIO_CAP_LARGE_DMA)) {
		malformed(c, "%s without negotiated LARGE_DMA", coreio__wire_op_name(m->h.op));
		return;
	}
	nseg = dma_map(c, m, !rd, hp, hl);
	if (nseg > 0)
		p = hp[0];
	h.origin = true;
	h.error = p == NULL;
	h.extra = (p && rd && large) ? coreio__wire_extra_for(m->len) : 0;
	flen = coreio__wire_encode(v->tx, &h);
	if (flen > COREIO_WIRE_UNIT)
		memset(v->tx + COREIO_WIRE_UNIT, 0, flen - COREIO_WIRE_UNIT);
	if (!p) {
		v->io->stats.dma_faults++;
		conn_log(c, "DMA %s mid %u sid %u addr 0x%llx len %u faulted",
			 coreio__wire_op_name(h.op), m->h.iface, m->h.sid,
			 (unsigned long long)m->h.addr, m->len);
	} else {
		v->io->stats.dma_ok++;
		/* Segment by segment: an IOMMU maps the pages of a piece anywhere. */
		for (int s = 0; s < nseg; done += hl[s], s++) {
			p = hp[s];
			if (rd) {
				memcpy(v->tx + COREIO_WIRE_DATA_OFF + done, p, hl[s]);
			} else if (large || m->h.mask == 0) {
				memcpy(p, m->data + done, hl[s]);
			} else {
				for (unsigned i = 0; i < hl[s]; i++)
					if (m->h.mask & (1u << (done + i)))
						p[i] = m->data[done + i];
			}
		}
	}
	conn_send(c, v->tx, flen);
}

static void conn_frame(struct vmmio_conn *c, const uint8_t *frame, size_t len)
{
	struct coreio_wire_msg m;

	if (coreio__wire_decode(frame, len, COREIO_WIRE_AT_VM, &m) < 0) {
		uint64_t w0 = coreio__wire_get64(frame), w1 = coreio__wire_get64(frame + 8);

		malformed(
		    c, "op 0x%02x (%s) origin %u error %u size %u E %u mask 0x%x fails validation",
		    (unsigned)(w1 & 0xff), coreio__wire_op_name(w1 & 0xff),
		    (unsigned)((w0 >> 31) & 1), (unsigned)((w0 >> 30) & 1),
		    (unsigned)((w1 >> 16) & 0x3f), (unsigned)((w0 >> 8) & 0xff),
		    (unsigned)(w1 >> 32));
		return;
	}
	trace_frame(c, "->", frame);
	switch (m.h.op) {
	case COREIO_OP_PING:
		handle_ping(c, &m);
		break;
	case COREIO_OP_RGN_CLAIM:
		handle_claim(c, &m);
		break;
	case COREIO_OP_IRQ_UPDATE:
		handle_irq(c, &m);
		break;
	case COREIO_OP_READ:
	case COREIO_OP_WRITEA:
		if (m.h.origin)
			handle_dma(c, &m);
		else
			handle_answer(c, &m);
		break;
	case COREIO_OP_LREAD:
	case COREIO_OP_LWRITE:
		handle_dma(c, &m);
		break;
	default: /* READP, WRITE, WRITEP, WRITEAP: origin 0 answers (decode checked) */
		handle_answer(c, &m);
		break;
	}
}

/*
 * Run the frames already received on c while the output queue allows (VM
 * lock held). The answers they make (DMA, pongs) are corked and leave
 * together, one send() per VMMIO_CORK_MAX bytes instead of one per frame.
 */
static void conn_run_rx(struct vmmio_conn *c)
{
	const uint8_t *frame;
	size_t len;

	c->cork = true;
	while (!c->dead && c->out_len - c->out_off <= VMMIO_OUT_PAUSE &&
	       coreio__wire_rx_next(&c->rx, &frame, &len))
		conn_frame(c, frame, len);
	conn_uncork(c);
}

static void conn_read(struct vmmio_conn *c, int fd)
{
	/* A bounded number of reads per wake-up keeps one client from starving others. */
	for (int round = 0; round < 16; round++) {
		long n;

		/*
		 * Frames already received go first. While too many answers are
		 * queued they wait in rx (conn_events() paused EPOLLIN) and run
		 * after conn_flush() (conn_event() calls us then).
		 */
		conn_run_rx(c);
		if (c->dead || c->out_len - c->out_off > VMMIO_OUT_PAUSE)
			return;
		n = coreio__wire_rx_fill(&c->rx, fd);

		if (n == -EAGAIN)
			return;
		if (n == 0) {
			conn_close(c,
				   coreio__wire_rx_partial(&c->rx) ? "disconnected inside a frame"
								   : "disconnected",
				   false);
			return;
		}
		if (n < 0) {
			char why[128];

			snprintf(why, sizeof(why), "receive failed: %s", strerror((int)-n));
			conn_close(c, why, false);
			return;
		}
	}
	/* 16 rounds done: the frames of the last one run now; more data waits for the loop. */
	conn_run_rx(c);
}

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * The wait hook of a request sent to a client (req->wait, set by
 * vmmio_submit()), run by the waiting vCPU thread with the VM lock held.
 * Unless another thread already reads the connection, the vCPU takes the
 * receive role (c->reader; EPOLLIN off so the I/O thread neither wakes nor
 * reads) and serves the socket itself: it receives with MSG_DONTWAIT
 * (coreio__wire_rx_fill()) and runs every frame through conn_frame(), as
 * the I/O thread would (other vCPUs' answers, IRQ updates, DMA), until its
 * own request is complete. Between receives it spins for up to the range's
 * busy_us (poll=busy) or its adaptive window (poll=adaptive, spin_ns,
 * updated here by vmmio_poll_window()), dropping the lock on each turn,
 * then sleeps in poll() with the lock released. It then runs the frames left in the rx
 * buffer, hands the role back and re-arms EPOLLIN. A connection closed
 * meanwhile (conn_close() shuts the socket down to wake the poll()) is
 * closed and freed here. Returns 0 when req is COMPLETE, -EBUSY when
 * another thread reads the connection, -EAGAIN when the output queue is
 * full (the I/O thread must flush first); then the caller waits for the
 * completion callback.
 */
static int vmmio_wait(struct io_request *req)
{
	struct vmmio_conn *c = req->pend.owner;
	struct vmmio_range *rg = req->pend.range;
	pthread_mutex_t *lock;
	long long start, spin_until = 0;
	unsigned spin_ns;
	bool slept = false;
	int rc = 0;

	/* Only a request still waiting is on a live connection. */
	if (req->state == REQ_STATE_COMPLETE)
		return 0;
	if (c->dead || c->reader)
		return -EBUSY;
	lock = &c->v->io->lock;
	c->reader = true;
	conn_arm(c);
	start = now_ns();
	spin_ns = rg->adaptive ? rg->spin_ns : rg->busy_us * 1000u;
	if (spin_ns)
		spin_until = start + spin_ns;
	while (req->state != REQ_STATE_COMPLETE && !c->dead) {
		const uint8_t *frame;
		size_t len;
		long n;

		if (c->out_len - c->out_off > VMMIO_OUT_PAUSE) {
			rc = -EAGAIN;
			break;
		}
		if (coreio__wire_rx_next(&c->rx, &frame, &len)) {
			conn_frame(c, frame, len);
			continue;
		}
		n = coreio__wire_rx_fill(&c->rx, c->fd);
		if (n > 0)
			continue;
		if (n == 0) {
			conn_close(c,
				   coreio__wire_rx_partial(&c->rx) ? "disconnected inside a frame"
								   : "disconnected",
				   false);
			break;
		}
		if (n != -EAGAIN) {
			char why[128];

			snprintf(why, sizeof(why), "receive failed: %s", strerror((int)-n));
			conn_close(c, why, false);
			break;
		}
		pthread_mutex_unlock(lock);
		if (spin_until && now_ns() < spin_until) {
			sched_yield();
		} else {
			struct pollfd pfd = {.fd = c->fd, .events = POLLIN};

			slept = true;
			/* The fd stays open while we read it: conn_close() leaves it to us. */
			if (poll(&pfd, 1, 1000) < 0 && errno != EINTR)
				spin_until = 0;
		}
		pthread_mutex_lock(lock);
	}
	/* Frames that came with ours: level-triggered epoll would not report them. */
	conn_run_rx(c);
	c->reader = false;
	if (c->free_by_reader) {
		close(c->fd);
		c->fd = -1;
		if (event_defer(conn_free, c) < 0)
			conn_free(c);
	} else if (!c->dead) {
		conn_arm(c);
	}
	if (req->state != REQ_STATE_COMPLETE)
		return rc ? rc : -EAGAIN;
	rg->waits++;
	if (!slept)
		rg->spun++;
	if (rg->adaptive)
		rg->spin_ns =
		    vmmio_poll_window(spin_ns, (uint64_t)(now_ns() - start), rg->busy_us * 1000u);
	return 0;
}

/* A connection's socket is ready (I/O thread). */
static void conn_event(int fd, uint32_t events, void *opaque)
{
	struct vmmio_conn *c = opaque;
	pthread_mutex_t *lock = &c->v->io->lock;

	pthread_mutex_lock(lock);
	/* A vCPU thread may have closed it since the loop picked the event up. */
	if (!c->dead && (events & EPOLLOUT) && c->out_len > c->out_off)
		conn_flush(c);
	/* Also after a flush: frames held back while the queue was full run now.
	 * Not while a vCPU reads the socket itself (vmmio_wait()). */
	if (!c->dead && !c->reader && (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLOUT)))
		conn_read(c, fd);
	pthread_mutex_unlock(lock);
}

/* Once a second: drop clients whose output has not moved for VMMIO_SEND_TIMEOUT_MS. */
static void stuck_timer(int fd, uint32_t events, void *opaque)
{
	struct vmmio *v = opaque;
	struct vmmio_conn *c, *next;
	uint64_t ticks;
	long long now = now_ms();

	(void)events;
	if (read(fd, &ticks, sizeof(ticks)) < 0) {
		/* Spurious wake-up: nothing expired. */
	}
	pthread_mutex_lock(&v->io->lock);
	for (c = v->conns; c; c = next) {
		next = c->next;
		if (c->out_len > c->out_off && now - c->out_since > VMMIO_SEND_TIMEOUT_MS)
			conn_close(c,
				   "send blocked for more than 10 s (the client does not read); "
				   "closing",
				   false);
	}
	pthread_mutex_unlock(&v->io->lock);
}

/* "ADDR:PORT" or "[V6]:PORT" of a socket address. */
static void format_addr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(a->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(a->sin6_port));
	} else {
		snprintf(buf, len, "unix");
	}
}

static void port_accept_locked(int fd, struct vmmio_port *port);

static void port_accept(int fd, uint32_t events, void *opaque)
{
	struct vmmio_port *port = opaque;

	(void)events;
	pthread_mutex_lock(&port->v->io->lock);
	port_accept_locked(fd, port);
	pthread_mutex_unlock(&port->v->io->lock);
}

static void port_accept_locked(int fd, struct vmmio_port *port)
{
	struct vmmio *v = port->v;

	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		struct vmmio_conn *c;
		int cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				fprintf(stderr, "coreio-vm: %s: accept: %s\n", port->display,
					strerror(errno));
			return;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(cfd);
			continue;
		}
		c->v = v;
		c->port = port;
		c->fd = cfd;
		c->id = ++v->next_conn_id;
		coreio__wire_rx_init(&c->rx);
		if (port->is_unix) {
			snprintf(c->peer, sizeof(c->peer), "%s", port->display);
		} else {
			int one = 1;

			setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			format_addr(&ss, c->peer, sizeof(c->peer));
		}
		for (unsigned r = 0; r < CONFIG_MAX_PER_PORT; r++)
			for (unsigned i = 0; i < CONFIG_MAX_IRQS; i++) {
				const struct vmmio_range *rg =
				    r < port->nranges ? port->ranges[r] : NULL;

				irq_source_init(&c->src[r][i],
						rg && i < rg->nirq ? rg->irqs[i] : -1);
			}
		if (event_add(cfd, EPOLLIN, conn_event, c) < 0) {
			close(cfd);
			free(c);
			continue;
		}
		c->armed = EPOLLIN;
		c->next = v->conns;
		v->conns = c;
		conn_log(c, "connected on %s", port->display);
	}
}

static int open_tcp(struct vmmio_port *port, const char *listen_addr)
{
	const struct range_config *rc = port->cfg;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[256], portstr[16];
	size_t n = strlen(listen_addr);
	int fd, one = 1, rc_gai;

	if (n >= 2 && listen_addr[0] == '[' && listen_addr[n - 1] == ']' && n < sizeof(host)) {
		memcpy(host, listen_addr + 1, n - 2);
		host[n - 2] = '\0';
	} else {
		snprintf(host, sizeof(host), "%s", listen_addr);
	}
	snprintf(portstr, sizeof(portstr), "%u", rc->kind == PORT_TCP ? rc->tcp_port : 0);
	rc_gai = getaddrinfo(host, portstr, &hints, &res);
	if (rc_gai != 0 || !res) {
		fprintf(stderr, "coreio-vm: --listen '%s': %s\n", listen_addr,
			gai_strerror(rc_gai));
		return -EINVAL;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		int err = -errno;

		freeaddrinfo(res);
		return err;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 16) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		int err = -errno;

		fprintf(stderr, "coreio-vm: cannot listen on %s port %s: %s\n", listen_addr,
			portstr, strerror(errno));
		freeaddrinfo(res);
		close(fd);
		return err;
	}
	freeaddrinfo(res);
	format_addr(&ss, port->display, sizeof(port->display));
	port->listen_fd = fd;
	return 0;
}

static int open_unix(struct vmmio_port *port)
{
	const char *path = port->cfg->name;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd;

	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			fprintf(stderr, "coreio-vm: unix:%s exists and is not a socket\n", path);
			return -EEXIST;
		}
		unlink(path);
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
		int err = -errno;

		fprintf(stderr, "coreio-vm: cannot listen on unix:%s: %s\n", path, strerror(errno));
		close(fd);
		return err;
	}
	port->is_unix = true;
	snprintf(port->display, sizeof(port->display), "unix:%s", path);
	port->listen_fd = fd;
	return 0;
}

int vmmio_init(struct vmmio *v, const struct vm_config *cfg, struct ioreq_ctx *io, struct mem *mem,
	       struct irq_chip *irq)
{
	memset(v, 0, sizeof(*v));
	v->timer_fd = -1;
	v->io = io;
	v->mem = mem;
	v->irq = irq;
	v->trace = cfg->trace;
	for (unsigned i = 0; i < cfg->nranges; i++) {
		const struct range_config *rc = &cfg->ranges[i];
		struct vmmio_range *rg = &v->ranges[i];
		struct vmmio_port *port = NULL;
		int rc_reg;

		for (unsigned p = 0; p < v->nports; p++)
			if (config_same_port(v->ports[p].cfg, rc))
				port = &v->ports[p];
		if (!port) {
			port = &v->ports[v->nports++];
			port->v = v;
			port->cfg = rc;
			port->listen_fd = -1;
		}
		if (port->nranges >= CONFIG_MAX_PER_PORT)
			return -ENOSPC; /* config_parse() already refused this */
		rg->g = i;
		rg->start = rc->start;
		rg->size = rc->size;
		memcpy(rg->irqs, rc->irqs, sizeof(rg->irqs));
		rg->nirq = rc->nirq;
		rg->acked = rc->acked;
		rg->busy_us = rc->busy_us;
		rg->adaptive = rc->poll_adaptive && rc->busy_us;
		rg->spin_ns = rg->adaptive ? rc->busy_us * 1000u : 0;
		rg->port = port;
		port->shm = rc->shm; /* every range of a port agrees (config_parse()) */
		v->any_shm |= rc->shm;
		rg->rid = port->nranges;
		port->ranges[port->nranges++] = rg;
		v->nranges++;
		if (rc->pci)
			continue; /* mpqemu: the BAR's address comes later (mpqemu.c) */
		rc_reg = register_mmio_emulation_handler(io, rc->start, rc->start + rc->size,
							 vmmio_submit, rg);
		if (rc_reg < 0) {
			fprintf(stderr, "coreio-vm: range %u: cannot register: %s\n", i,
				strerror(-rc_reg));
			return rc_reg;
		}
	}
	for (unsigned p = 0; p < v->nports; p++) {
		struct vmmio_port *port = &v->ports[p];
		int err =
		    port->cfg->kind == PORT_UNIX ? open_unix(port) : open_tcp(port, cfg->listen);

		if (err < 0)
			return err;
		err = event_add(port->listen_fd, EPOLLIN, port_accept, port);
		if (err < 0)
			return err;
		fprintf(stderr, "listening on %s\n", port->display);
		fflush(stderr);
	}
	if (v->any_shm && mem && mem_fd(mem) >= 0) {
		/* qtest and kvm: guest RAM is one memfd at guest-physical 0. */
		struct vmmio_shm_region ram = {.gpa = 0, .size = mem->size, .fd = mem_fd(mem)};
		int err = vmmio_shm_set(v, &ram, 1);

		if (err < 0)
			return err;
	}
	if (v->nports > 0) {
		struct itimerspec its = {.it_interval = {1, 0}, .it_value = {1, 0}};
		int err;

		v->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
		if (v->timer_fd < 0 || timerfd_settime(v->timer_fd, 0, &its, NULL) < 0)
			return -errno;
		err = event_add(v->timer_fd, EPOLLIN, stuck_timer, v);
		if (err < 0)
			return err;
	}
	return 0;
}

void vmmio_exit(struct vmmio *v)
{
	if (!v->io)
		return; /* never initialised */
	pthread_mutex_lock(&v->io->lock);
	for (unsigned i = 0; i < v->nranges; i++) {
		const struct vmmio_range *rg = &v->ranges[i];
		char poll[48];

		if (!rg->waits)
			continue;
		if (rg->adaptive)
			snprintf(poll, sizeof(poll), "adaptive:%u, last spin %u us", rg->busy_us,
				 rg->spin_ns / 1000);
		else if (rg->busy_us)
			snprintf(poll, sizeof(poll), "busy:%u", rg->busy_us);
		else
			snprintf(poll, sizeof(poll), "block");
		fprintf(
		    stderr,
		    "coreio-vm: range %u at %#llx: %llu vCPU waits for its client, %llu answered "
		    "before the vCPU slept (poll=%s)\n",
		    rg->g, (unsigned long long)rg->start, (unsigned long long)rg->waits,
		    (unsigned long long)rg->spun, poll);
	}
	while (v->conns)
		conn_close(v->conns, "closed at exit", true);
	for (unsigned i = 0; i < v->nshm; i++)
		close(v->shm[i].fd);
	v->nshm = 0;
	pthread_mutex_unlock(&v->io->lock);
	if (v->timer_fd >= 0) {
		event_del(v->timer_fd);
		close(v->timer_fd);
		v->timer_fd = -1;
	}
	for (unsigned p = 0; p < v->nports; p++) {
		struct vmmio_port *port = &v->ports[p];

		if (port->listen_fd < 0)
			continue;
		event_del(port->listen_fd);
		close(port->listen_fd);
		port->listen_fd = -1;
		if (port->is_unix)
			unlink(port->cfg->name);
	}
}

void vmmio_reset(struct vmmio *v)
{
	struct vmmio_conn *c, *next;

	pthread_mutex_lock(&v->io->lock);
	for (c = v->conns; c; c = next) {
		struct coreio_wire_hdr h = {.op = COREIO_OP_RESET};
		uint8_t out[COREIO_WIRE_UNIT];

		next = c->next;
		conn_abandon(c);
		h.tag = new_tag(c);
		coreio__wire_encode(out, &h);
		conn_send(c, out, sizeof(out));
	}
	pthread_mutex_unlock(&v->io->lock);
}

void vmmio_reset_range(struct vmmio *v, unsigned g)
{
	struct vmmio_range *rg = g < v->nranges ? &v->ranges[g] : NULL;
	struct vmmio_conn *c;
	struct io_request **pp;
	struct coreio_wire_hdr h = {.op = COREIO_OP_RESET};
	uint8_t out[COREIO_WIRE_UNIT];

	pthread_mutex_lock(&v->io->lock);
	c = rg ? rg->owner : NULL;
	if (c && !c->dead) {
		for (unsigned i = 0; i < CONFIG_MAX_IRQS; i++)
			irq_source_set(v->irq, &c->src[rg->rid][i], false);
		for (pp = &c->pending; *pp;) {
			struct io_request *p = *pp;

			if (p->pend.range != rg) {
				pp = &p->pend.next;
				continue;
			}
			*pp = p->pend.next;
			p->pend.next = NULL;
			unclaimed(p);
			ioreq_complete(p);
		}
		h.tag = new_tag(c);
		coreio__wire_encode(out, &h);
		conn_send(c, out, sizeof(out));
	}
	pthread_mutex_unlock(&v->io->lock);
}

int vmmio_shm_set(struct vmmio *v, const struct vmmio_shm_region *r, unsigned n)
{
	struct vmmio_conn *c, *next;
	int err = 0;

	if (n > VMMIO_SHM_MAX)
		return -EINVAL;
	if (!v->any_shm)
		return 0;
	pthread_mutex_lock(&v->io->lock);
	for (unsigned i = 0; i < v->nshm; i++)
		close(v->shm[i].fd);
	v->nshm = 0;
	for (unsigned i = 0; i < n; i++) {
		v->shm[i] = r[i];
		v->shm[i].fd = fcntl(r[i].fd, F_DUPFD_CLOEXEC, 0);
		if (v->shm[i].fd < 0) {
			err = -errno;
			fprintf(stderr, "coreio-vm: shared memory: cannot duplicate fd %d: %s\n",
				r[i].fd, strerror(errno));
			for (unsigned j = 0; j < i; j++)
				close(v->shm[j].fd);
			n = 0;
			break;
		}
	}
	v->nshm = n;
	v->shm_gen++;
	for (c = v->conns; c; c = next) {
		next = c->next;
		if (!c->dead && (c->caps & COREIO_CAP_SHM))
			shm_send_map(c);
	}
	pthread_mutex_unlock(&v->io->lock);
	return err;
}

void vmmio_set_dma_ptr(struct vmmio *v, vmmio_dma_ptr_fn fn, void *opaque)
{
	v->dma_ptr = fn;
	v->dma_opaque = opaque;
}

void *vm_dma_ptr(const struct vmmio *v, uint64_t gpa, uint64_t len)
{
	if (v->dma_ptr)
		return v->dma_ptr(v->dma_opaque, gpa, len);
	return mem_ptr(v->mem, gpa, len);
}

const struct vmmio_range *vmmio_range(const struct vmmio *v, unsigned g)
{
	return g < v->nranges ? &v->ranges[g] : NULL;
}

void vmmio_set_claim_cb(struct vmmio *v, vmmio_claim_fn fn, void *opaque)
{
	v->on_claim = fn;
	v->claim_opaque = opaque;
}

void vmmio_set_release_cb(struct vmmio *v, vmmio_release_fn fn, void *opaque)
{
	v->on_release = fn;
	v->release_opaque = opaque;
}
