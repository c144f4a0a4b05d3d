/* CoreIO wire format: encoding, validation and stream reassembly shared by both halves. */
#include "wire.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

uint64_t coreio__wire_get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

void coreio__wire_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

size_t coreio__wire_frame_len(uint64_t w0)
{
	return ((size_t)((w0 >> 8) & 0xff) + 1) * COREIO_WIRE_UNIT;
}

size_t coreio__wire_pair_off(unsigned size)
{
	return (4u + size / 8u) * 8u;
}

uint8_t coreio__wire_extra_for(size_t data_bytes)
{
	size_t total = COREIO_WIRE_DATA_OFF + data_bytes;
	size_t units = (total + COREIO_WIRE_UNIT - 1) / COREIO_WIRE_UNIT;

	if (units < 1)
		units = 1;
	if (units > COREIO_WIRE_MAX_UNITS)
		units = COREIO_WIRE_MAX_UNITS;
	return (uint8_t)(units - 1);
}

uint32_t coreio__wire_byte_mask(unsigned n)
{
	return n >= 32 ? 0xffffffffu : (1u << n) - 1u;
}

const char *coreio__wire_op_name(unsigned op)
{
	switch (op) {
	case COREIO_OP_PING:
		return "PING";
	case COREIO_OP_READ:
		return "READ";
	case COREIO_OP_WRITE:
		return "WRITE";
	case COREIO_OP_READP:
		return "READP";
	case COREIO_OP_WRITEP:
		return "WRITEP";
	case COREIO_OP_WRITEA:
		return "WRITEA";
	case COREIO_OP_WRITEAP:
		return "WRITEAP";
	case COREIO_OP_LREAD:
		return "LREAD";
	case COREIO_OP_LWRITE:
		return "LWRITE";
	case COREIO_OP_IRQ_UPDATE:
		return "IRQ_UPDATE";
	case COREIO_OP_SHM_MAP:
		return "SHM_MAP";
	case COREIO_OP_RGN_CLAIM:
		return "RGN_CLAIM";
	case COREIO_OP_RESET:
		return "RESET";
	default:
		return "?";
	}
}

/* True if [off, off + n) lies inside a frame of flen bytes, without overflow. */
static bool fits(size_t off, size_t n, size_t flen)
{
	return off <= flen && n <= flen - off;
}

static int check_single(struct coreio_wire_msg *m, bool need_data)
{
	unsigned size = m->h.size;

	if (size < 1 || size > COREIO_WIRE_MAX_SINGLE)
		return -EPROTO;
	if (need_data && !fits(COREIO_WIRE_DATA_OFF, size, m->frame_len))
		return -EPROTO;
	m->len = size;
	m->data = m->frame + COREIO_WIRE_DATA_OFF;
	return 0;
}

static int check_pair(struct coreio_wire_msg *m)
{
	unsigned size = m->h.size;
	size_t off2;

	if (size < 1 || size > COREIO_WIRE_MAX_PAIR)
		return -EPROTO;
	off2 = coreio__wire_pair_off(size);
	if (!fits(COREIO_WIRE_DATA_OFF, size, off2) || !fits(off2, size, m->frame_len))
		return -EPROTO;
	m->len = size;
	m->data = m->frame + COREIO_WIRE_DATA_OFF;
	m->data2 = m->frame + off2;
	return 0;
}

static int check_large(struct coreio_wire_msg *m, bool need_data)
{
	uint32_t n = m->h.mask;

	if (n < 1 || n > COREIO_WIRE_LARGE_PIECE)
		return -EPROTO;
	if (need_data && !fits(COREIO_WIRE_DATA_OFF, n, m->frame_len))
		return -EPROTO;
	m->len = n;
	/* An LREAD request carries no data: len is the length asked for. */
	m->data =
	    fits(COREIO_WIRE_DATA_OFF, n, m->frame_len) ? m->frame + COREIO_WIRE_DATA_OFF : NULL;
	return 0;
}

/* Frames a client receives from the VM. */
static int decode_at_client(struct coreio_wire_msg *m)
{
	const struct coreio_wire_hdr *h = &m->h;

	switch (h->op) {
	case COREIO_OP_PING:
	case COREIO_OP_RESET:
		return 0;
	case COREIO_OP_RGN_CLAIM:
		return h->origin ? 0 : -EPROTO; /* claim acknowledgement */
	case COREIO_OP_READ:
		/* MMIO read request, or the answer to our DMA read (data unless failed). */
		return check_single(m, h->origin && !h->error);
	case COREIO_OP_WRITE:
		return h->origin ? -EPROTO : check_single(m, true);
	case COREIO_OP_WRITEA:
		return check_single(m, !h->origin);
	case COREIO_OP_READP:
		return h->origin ? -EPROTO : check_pair(m);
	case COREIO_OP_WRITEP:
	case COREIO_OP_WRITEAP:
		return h->origin ? -EPROTO : check_pair(m);
	case COREIO_OP_LREAD:
		return h->origin ? check_large(m, !h->error) : -EPROTO;
	case COREIO_OP_LWRITE:
		return h->origin ? check_large(m, false) : -EPROTO;
	case COREIO_OP_SHM_MAP:
		/* One unit from the VM: w[2]..w[7] always lie inside it. */
		return h->origin || h->error || h->extra ? -EPROTO : 0;
	default:
		return -EPROTO;
	}
}

/* Frames the VM receives from a client. */
static int decode_at_vm(struct coreio_wire_msg *m)
{
	const struct coreio_wire_hdr *h = &m->h;

	switch (h->op) {
	case COREIO_OP_PING:
	case COREIO_OP_RGN_CLAIM:
		return 0;
	case COREIO_OP_IRQ_UPDATE:
		m->data = m->frame + COREIO_WIRE_DATA_OFF;
		m->len = 8;
		return 0;
	case COREIO_OP_READ:
		/* DMA read request, or the answer to an MMIO read (data unless failed). */
		return check_single(m, !h->origin && !h->error);
	case COREIO_OP_WRITEA:
		/* DMA write (data) or an acknowledged-write answer. */
		return check_single(m, h->origin);
	case COREIO_OP_WRITE:
		/* Only ever an unclaimed-range echo of our own posted write. */
		return h->origin ? -EPROTO : check_single(m, false);
	case COREIO_OP_READP:
		return h->origin ? -EPROTO : (h->error ? 0 : check_pair(m));
	case COREIO_OP_WRITEP:
	case COREIO_OP_WRITEAP:
		return h->origin ? -EPROTO : 0;
	case COREIO_OP_LREAD:
		return h->origin ? check_large(m, false) : -EPROTO;
	case COREIO_OP_LWRITE:
		return h->origin ? check_large(m, true) : -EPROTO;
	default:
		return -EPROTO;
	}
}

int coreio__wire_decode(const uint8_t *frame, size_t len, enum coreio_wire_side side,
			struct coreio_wire_msg *out)
{
	uint64_t w0, w1;

	if (!frame || !out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (len < COREIO_WIRE_UNIT || len > COREIO_WIRE_MAX_MSG)
		return -EPROTO;
	w0 = coreio__wire_get64(frame);
	if (coreio__wire_frame_len(w0) != len)
		return -EPROTO;
	w1 = coreio__wire_get64(frame + 8);
	out->h.iface = (uint8_t)w0;
	out->h.extra = (uint8_t)(w0 >> 8);
	out->h.error = (w0 >> 30) & 1;
	out->h.origin = (w0 >> 31) & 1;
	out->h.tag = (uint32_t)(w0 >> 32);
	out->h.op = (uint8_t)w1;
	out->h.size = (uint8_t)((w1 >> 16) & 0x3f);
	out->h.sid = (uint8_t)((w1 >> 24) & 0xf);
	out->h.flags = (uint8_t)((w1 >> 28) & 0xf);
	out->h.mask = (uint32_t)(w1 >> 32);
	out->h.addr = coreio__wire_get64(frame + 16);
	out->frame = frame;
	out->frame_len = len;
	return side == COREIO_WIRE_AT_VM ? decode_at_vm(out) : decode_at_client(out);
}

size_t coreio__wire_encode(uint8_t *frame, const struct coreio_wire_hdr *h)
{
	uint64_t w0, w1;

	memset(frame, 0, COREIO_WIRE_UNIT);
	w0 = (uint64_t)h->iface | ((uint64_t)h->extra << 8) | ((uint64_t)(h->error ? 1 : 0) << 30) |
	     ((uint64_t)(h->origin ? 1 : 0) << 31) | ((uint64_t)h->tag << 32);
	w1 = (uint64_t)h->op | ((uint64_t)(h->size & 0x3f) << 16) |
	     ((uint64_t)(h->sid & 0xf) << 24) | ((uint64_t)(h->flags & 0xf) << 28) |
	     ((uint64_t)h->mask << 32);
	coreio__wire_put64(frame, w0);
	coreio__wire_put64(frame + 8, w1);
	coreio__wire_put64(frame + 16, h->addr);
	return ((size_t)h->extra + 1) * COREIO_WIRE_UNIT;
}

void coreio__wire_rx_init(struct coreio_wire_rx *rx)
{
	rx->start = 0;
	rx->end = 0;
}

/* Move the unconsumed bytes to the front when the free tail is short of a frame. */
static void rx_make_room(struct coreio_wire_rx *rx)
{
	if (rx->start == rx->end) {
		rx->start = 0;
		rx->end = 0;
	} else if (sizeof(rx->buf) - rx->end < COREIO_WIRE_MAX_MSG) {
		memmove(rx->buf, rx->buf + rx->start, rx->end - rx->start);
		rx->end -= rx->start;
		rx->start = 0;
	}
}

long coreio__wire_rx_fill(struct coreio_wire_rx *rx, int fd)
{
	ssize_t n;

	rx_make_room(rx);
	do {
		n = recv(fd, rx->buf + rx->end, sizeof(rx->buf) - rx->end, MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	rx->end += (size_t)n;
	return (long)n;
}

long coreio__wire_rx_fill_with(struct coreio_wire_rx *rx, coreio_wire_reader rd, void *opaque)
{
	long n;

	rx_make_room(rx);
	n = rd(opaque, rx->buf + rx->end, sizeof(rx->buf) - rx->end);
	if (n > 0)
		rx->end += (size_t)n;
	return n;
}

void coreio__wire_fdq_init(struct coreio_wire_fdq *q)
{
	memset(q, 0, sizeof(*q));
}

void coreio__wire_fdq_clear(struct coreio_wire_fdq *q)
{
	for (unsigned i = 0; i < q->n; i++)
		close(q->fd[i]);
	q->n = 0;
}

long coreio__wire_recv_iov_fds(int fd, struct iovec *iov, int niov, struct coreio_wire_fdq *q)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * COREIO_WIRE_FDQ_MAX)];
	} ctl;
	struct msghdr mh;
	ssize_t n;

	do {
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = iov;
		mh.msg_iovlen = (size_t)niov;
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	q->total += (uint64_t)n;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		size_t nfd;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
		    cm->cmsg_len < CMSG_LEN(0))
			continue;
		nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t k = 0; k < nfd; k++) {
			int f;

			memcpy(&f, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
			if (f < 0)
				continue;
			if (q->n < COREIO_WIRE_FDQ_MAX && n > 0) {
				q->fd[q->n] = f;
				q->pos[q->n] = q->total - 1;
				q->n++;
			} else {
				close(f);
				q->dropped++;
			}
		}
	}
	if (mh.msg_flags & MSG_CTRUNC)
		q->dropped++;
	return (long)n;
}

long coreio__wire_rx_fill_fds(struct coreio_wire_rx *rx, int fd, struct coreio_wire_fdq *q)
{
	struct iovec iov;
	long n;

	rx_make_room(rx);
	iov.iov_base = rx->buf + rx->end;
	iov.iov_len = sizeof(rx->buf) - rx->end;
	n = coreio__wire_recv_iov_fds(fd, &iov, 1, q);
	if (n > 0)
		rx->end += (size_t)n;
	return n;
}

uint64_t coreio__wire_rx_frame_pos(const struct coreio_wire_rx *rx, const struct coreio_wire_fdq *q,
				   const uint8_t *frame)
{
	return q->total - (uint64_t)(rx->end - (size_t)(frame - rx->buf));
}

unsigned coreio__wire_fdq_take(struct coreio_wire_fdq *q, uint64_t start, size_t len, int *out,
			       unsigned max)
{
	unsigned taken = 0, keep = 0;

	for (unsigned i = 0; i < q->n; i++) {
		if (q->pos[i] < start) {
			close(q->fd[i]); /* bound to an earlier frame that did not want it */
		} else if (q->pos[i] - start < len) {
			if (taken < max)
				out[taken] = q->fd[i];
			else
				close(q->fd[i]);
			taken++;
		} else {
			q->fd[keep] = q->fd[i];
			q->pos[keep] = q->pos[i];
			keep++;
		}
	}
	q->n = keep;
	return taken;
}

int coreio__wire_rx_next(struct coreio_wire_rx *rx, const uint8_t **frame, size_t *len)
{
	size_t have = rx->end - rx->start;
	size_t flen;

	if (have < 8)
		return 0;
	flen = coreio__wire_frame_len(coreio__wire_get64(rx->buf + rx->start));
	if (have < flen)
		return 0;
	*frame = rx->buf + rx->start;
	*len = flen;
	rx->start += flen;
	return 1;
}

bool coreio__wire_rx_partial(const struct coreio_wire_rx *rx)
{
	return rx->end != rx->start;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int coreio__wire_send_all(int fd, const void *buf, size_t len, int timeout_ms)
{
	const uint8_t *p = buf;
	long long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};
			int wait = -1;

			if (deadline >= 0) {
				long long left = deadline - now_ms();

				if (left <= 0)
					return -ETIMEDOUT;
				wait = (int)left;
			}
			if (poll(&pfd, 1, wait) < 0 && errno != EINTR)
				return -errno;
			continue;
		}
		return n < 0 ? -errno : -EPIPE;
	}
	return 0;
}

/* Typed payloads: the only code that knows where each field of a payload sits. */

size_t coreio__wire_peek_len(const uint8_t *buf, size_t have)
{
	if (have < 8)
		return 0;
	return coreio__wire_frame_len(coreio__wire_get64(buf));
}

size_t coreio__wire_echo(uint8_t *unit, const uint8_t *frame)
{
	memmove(unit, frame, COREIO_WIRE_UNIT);
	coreio__wire_put64(unit, coreio__wire_get64(unit) & ~COREIO_WIRE_W0_EXTRA);
	return COREIO_WIRE_UNIT;
}

size_t coreio__wire_answer_init(uint8_t *unit, const uint8_t *req)
{
	uint64_t w0 = coreio__wire_get64(req), w1 = coreio__wire_get64(req + 8);
	uint64_t w2 = coreio__wire_get64(req + 16);

	memset(unit, 0, COREIO_WIRE_UNIT);
	coreio__wire_put64(unit, w0 & ~(COREIO_WIRE_W0_EXTRA | COREIO_WIRE_W0_ERROR));
	coreio__wire_put64(unit + 8, w1);
	coreio__wire_put64(unit + 16, w2);
	return COREIO_WIRE_UNIT;
}

void coreio__wire_set_error(uint8_t *unit, bool error)
{
	uint64_t w0 = coreio__wire_get64(unit);

	coreio__wire_put64(unit, error ? w0 | COREIO_WIRE_W0_ERROR : w0 & ~COREIO_WIRE_W0_ERROR);
}

size_t coreio__wire_hello_encode(uint8_t *unit, const struct coreio_wire_hello *hl)
{
	struct coreio_wire_hdr h = {
	    .origin = true, .op = COREIO_OP_PING, .addr = COREIO_WIRE_MAGIC};

	coreio__wire_encode(unit, &h);
	coreio__wire_put64(unit + 24, hl->kind);
	coreio__wire_put64(unit + 32, hl->caps);
	coreio__wire_put64(unit + 40, hl->version);
	return COREIO_WIRE_UNIT;
}

int coreio__wire_hello_decode(const struct coreio_wire_msg *m, struct coreio_wire_hello *out)
{
	if (m->h.op != COREIO_OP_PING || m->h.addr != COREIO_WIRE_MAGIC)
		return -ENOENT;
	out->kind = coreio__wire_get64(m->frame + 24);
	out->caps = coreio__wire_get64(m->frame + 32);
	out->version = coreio__wire_get64(m->frame + 40);
	return 0;
}

void coreio__wire_hello_answer(uint8_t *unit, uint64_t caps)
{
	coreio__wire_put64(unit, coreio__wire_get64(unit) & ~COREIO_WIRE_W0_EXTRA);
	coreio__wire_put64(unit + 24, COREIO_HELLO_ANSWER);
	coreio__wire_put64(unit + 32, caps);
	coreio__wire_put64(unit + 40, COREIO_WIRE_VERSION);
}

size_t coreio__wire_shm_map_encode(uint8_t *unit, const struct coreio_wire_shm_map *s)
{
	struct coreio_wire_hdr h = {
	    .op = COREIO_OP_SHM_MAP, .tag = (uint32_t)s->gen, .addr = s->gpa};

	coreio__wire_encode(unit, &h);
	coreio__wire_put64(unit + 24, s->size);
	coreio__wire_put64(unit + 32, s->offset);
	coreio__wire_put64(unit + 40, s->index);
	coreio__wire_put64(unit + 48, s->gen);
	coreio__wire_put64(unit + 56, s->count);
	return COREIO_WIRE_UNIT;
}

int coreio__wire_shm_map_decode(const struct coreio_wire_msg *m, struct coreio_wire_shm_map *out)
{
	const uint8_t *f = m->frame;

	if (m->h.op != COREIO_OP_SHM_MAP || m->frame_len < COREIO_WIRE_UNIT)
		return -EPROTO;
	out->gpa = m->h.addr;
	out->size = coreio__wire_get64(f + 24);
	out->offset = coreio__wire_get64(f + 32);
	out->index = coreio__wire_get64(f + 40);
	out->gen = coreio__wire_get64(f + 48);
	out->count = coreio__wire_get64(f + 56);
	if (out->count > COREIO_WIRE_SHM_MAX_REGIONS)
		return -EPROTO;
	if (out->count == 0)
		return 0;
	if (out->index >= out->count || out->size == 0)
		return -EPROTO;
	if (out->gpa > UINT64_MAX - out->size || out->offset > UINT64_MAX - out->size)
		return -EPROTO;
	return 0;
}

size_t coreio__wire_irq_encode(uint8_t *unit, unsigned rid, unsigned iid, bool level)
{
	struct coreio_wire_hdr h = {
	    .iface = (uint8_t)rid, .origin = true, .op = COREIO_OP_IRQ_UPDATE, .addr = iid};

	coreio__wire_encode(unit, &h);
	coreio__wire_put64(unit + COREIO_WIRE_DATA_OFF, level ? 1 : 0);
	return COREIO_WIRE_UNIT;
}

int coreio__wire_irq_decode(const struct coreio_wire_msg *m, uint64_t *iid, bool *level)
{
	if (m->h.op != COREIO_OP_IRQ_UPDATE)
		return -EPROTO;
	*iid = m->h.addr;
	*level = coreio__wire_get64(m->frame + COREIO_WIRE_DATA_OFF) != 0;
	return 0;
}

size_t coreio__wire_claim_encode(uint8_t *unit, unsigned rid, uint32_t tag)
{
	struct coreio_wire_hdr h = {
	    .iface = (uint8_t)rid, .origin = true, .tag = tag, .op = COREIO_OP_RGN_CLAIM};

	return coreio__wire_encode(unit, &h);
}

size_t coreio__wire_claim_ack_encode(uint8_t *unit, unsigned rid, uint32_t tag, int err)
{
	struct coreio_wire_hdr h = {.iface = (uint8_t)rid,
				    .origin = true,
				    .error = err < 0,
				    .tag = tag,
				    .op = COREIO_OP_RGN_CLAIM};

	coreio__wire_encode(unit, &h);
	coreio__wire_put64(unit + COREIO_WIRE_DATA_OFF, err < 0 ? (uint64_t) - (int64_t)err : 0);
	return COREIO_WIRE_UNIT;
}

int coreio__wire_claim_ack_result(const struct coreio_wire_msg *m)
{
	uint64_t e = coreio__wire_get64(m->frame + COREIO_WIRE_DATA_OFF);

	if (!m->h.error)
		return 0;
	if (e == 0 || e > 4095)
		return -EBUSY;
	return -(int)e;
}

int coreio__wire_format(char *buf, size_t len, const uint8_t *f)
{
	uint64_t w0 = coreio__wire_get64(f), w1 = coreio__wire_get64(f + 8);

	return snprintf(buf, len,
			"%s iface %u tag %u%s%s E %u size %u flags %u mask 0x%x addr 0x%llx "
			"w3 0x%016llx",
			coreio__wire_op_name(w1 & 0xff), (unsigned)(w0 & 0xff),
			(unsigned)(w0 >> 32), (w0 >> 31) & 1 ? " client-origin" : "",
			(w0 >> 30) & 1 ? " ERROR" : "", (unsigned)((w0 >> 8) & 0xff),
			(unsigned)((w1 >> 16) & 0x3f), (unsigned)((w1 >> 28) & 0xf),
			(unsigned)(w1 >> 32), (unsigned long long)coreio__wire_get64(f + 16),
			(unsigned long long)coreio__wire_get64(f + 24));
}

size_t coreio__wire_mmio_encode(uint8_t *unit, const struct coreio_wire_hdr *h, const void *data,
				const void *data2)
{
	bool pair =
	    h->op == COREIO_OP_READP || h->op == COREIO_OP_WRITEP || h->op == COREIO_OP_WRITEAP;
	unsigned max = pair ? COREIO_WIRE_MAX_PAIR : COREIO_WIRE_MAX_SINGLE;

	if (h->size < 1 || h->size > max || h->extra != 0)
		return 0;
	coreio__wire_encode(unit, h);
	if (data)
		memcpy(unit + COREIO_WIRE_DATA_OFF, data, h->size);
	if (pair && data2)
		memcpy(unit + coreio__wire_pair_off(h->size), data2, h->size);
	return COREIO_WIRE_UNIT;
}

int coreio__wire_answer_read(const struct coreio_wire_msg *m, unsigned size, bool pair, void *data,
			     void *data2)
{
	if (size < 1 || size > (pair ? COREIO_WIRE_MAX_PAIR : COREIO_WIRE_MAX_SINGLE) ||
	    m->frame_len < COREIO_WIRE_UNIT)
		return -EINVAL;
	memcpy(data, m->frame + COREIO_WIRE_DATA_OFF, size);
	if (pair)
		memcpy(data2, m->frame + coreio__wire_pair_off(size), size);
	return 0;
}

bool coreio__wire_rx_ready(const struct coreio_wire_rx *rx)
{
	size_t have = rx->end - rx->start;
	size_t flen = coreio__wire_peek_len(rx->buf + rx->start, have);

	return flen && have >= flen;
}
