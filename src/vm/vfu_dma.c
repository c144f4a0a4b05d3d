/* coreio-vm vfio-user server: the DMA_MAP windows and the CoreIO clients' mid 0 DMA into them,
 * by pointer (fd windows) or by DMA_READ/DMA_WRITE messages (windows without an fd). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "event.h"
#include "vfu.h"

/*
 * Offer d's fd-backed windows that are both readable and writeable to
 * shared-memory (shm=on) clients: a client both reads and writes through
 * its map, which cannot be limited to one direction, so a read-only or
 * write-only window is left to the checked DMA messages (vfu_dma_ptr()).
 * Deferred to the event loop: vmmio_shm_set() takes the VM lock, which a
 * completion (finish() closing a connection) may hold.
 */
static void shm_flush(void *opaque)
{
	struct vfu_dev *d = opaque;
	struct vmmio_shm_region r[VMMIO_SHM_MAX];
	unsigned n = 0;

	d->shm_pending = false;

	for (unsigned i = 0; i < d->ndma && n < VMMIO_SHM_MAX; i++) {
		const struct vfu_dma *w = &d->dma[i];

		if (w->fd >= 0 && (w->flags & VFU_DMA_READABLE) && (w->flags & VFU_DMA_WRITEABLE))
			r[n++] = (struct vmmio_shm_region){w->m.gpa, w->m.size, w->offset, w->fd};
	}
	vmmio_shm_set(d->s->q.v, r, n);
}

static void shm_update(struct vfu_dev *d)
{
	if (d->shm_pending || !d->s->q.v->any_shm)
		return;
	if (event_defer(shm_flush, d) == 0)
		d->shm_pending = true;
}

static void window_free(struct vfu_dma *w)
{
	qside_unmap(&w->m);
	if (w->fd >= 0)
		close(w->fd);
	memset(w, 0, sizeof(*w));
	w->fd = -1;
}

int vfu_dma_map(struct vfu_dev *d, const struct vfu_dma_map *m, int fd)
{
	struct vfu_dma *w;

	for (unsigned i = 0; i < d->ndma; i++) {
		const struct vfu_dma *o = &d->dma[i];

		if (m->addr < o->m.gpa + o->m.size && o->m.gpa < m->addr + m->size) {
			vfu_log(d, "DMA_MAP 0x%llx+0x%llx overlaps window 0x%llx+0x%llx",
				(unsigned long long)m->addr, (unsigned long long)m->size,
				(unsigned long long)o->m.gpa, (unsigned long long)o->m.size);
			if (fd >= 0)
				close(fd);
			return -EEXIST;
		}
	}
	if (d->ndma >= VFU_MAX_DMA) {
		vfu_log(d, "DMA_MAP: more than %u windows", VFU_MAX_DMA);
		if (fd >= 0)
			close(fd);
		return -ENOSPC;
	}
	w = &d->dma[d->ndma];
	memset(w, 0, sizeof(*w));
	w->m.gpa = m->addr;
	w->m.size = m->size;
	w->offset = m->offset;
	w->flags = m->flags;
	w->fd = -1;
	if (fd >= 0) {
		uint64_t end;
		int err;

		switch (qside_mem_check(fd, m->offset, m->size, &end)) {
		case QSIDE_MEM_OK:
			break;
		case QSIDE_MEM_NOT_FILE:
			vfu_log(d, "DMA_MAP 0x%llx: the fd is not a memory file",
				(unsigned long long)m->addr);
			close(fd);
			return -EINVAL;
		default:
			vfu_log(d,
				"DMA_MAP 0x%llx: offset 0x%llx + size 0x%llx passes the file's "
				"end (0x%llx)",
				(unsigned long long)m->addr, (unsigned long long)m->offset,
				(unsigned long long)m->size, (unsigned long long)end);
			close(fd);
			return -EINVAL;
		}
		/* A window the client may not write is mapped private, so that even a
		 * stray write could not reach the guest; vfu_dma_ptr() refuses such
		 * writes (and reads of a window without READABLE): they fault. */
		err = qside_map(&w->m, fd, m->offset, m->flags & VFU_DMA_WRITEABLE);
		if (err < 0) {
			vfu_log(d, "DMA_MAP 0x%llx: cannot map: %s", (unsigned long long)m->addr,
				strerror(-err));
			close(fd);
			return err;
		}
		w->fd = fd;
	} else if (!d->warned_msg_dma) {
		d->warned_msg_dma = true;
		vfu_log(d,
			"DMA_MAP 0x%llx+0x%llx without an fd: clients' DMA there goes through "
			"DMA_READ/DMA_WRITE messages",
			(unsigned long long)m->addr, (unsigned long long)m->size);
	}
	d->ndma++;
	d->dma_maps++;
	if (d->s->q.trace)
		vfu_log(d, "DMA_MAP 0x%llx+0x%llx offset 0x%llx flags 0x%x%s",
			(unsigned long long)m->addr, (unsigned long long)m->size,
			(unsigned long long)m->offset, m->flags, fd >= 0 ? " (fd)" : "");
	if (fd >= 0)
		shm_update(d);
	return 0;
}

int vfu_dma_unmap(struct vfu_dev *d, const struct vfu_dma_unmap *u)
{
	bool had_fd = false;

	if (u->flags & VFU_DMA_UNMAP_FLAG_ALL) {
		vfu_dma_clear(d);
		return 0;
	}
	for (unsigned i = 0; i < d->ndma; i++) {
		struct vfu_dma *w = &d->dma[i];

		if (w->m.gpa != u->addr || w->m.size != u->size)
			continue;
		had_fd = w->fd >= 0;
		window_free(w);
		d->dma[i] = d->dma[d->ndma - 1];
		d->ndma--;
		if (d->s->q.trace)
			vfu_log(d, "DMA_UNMAP 0x%llx+0x%llx", (unsigned long long)u->addr,
				(unsigned long long)u->size);
		if (had_fd)
			shm_update(d);
		return 0;
	}
	vfu_log(d, "DMA_UNMAP 0x%llx+0x%llx matches no window", (unsigned long long)u->addr,
		(unsigned long long)u->size);
	return -ENOENT;
}

void vfu_dma_clear(struct vfu_dev *d)
{
	bool any_fd = false;

	for (unsigned i = 0; i < d->ndma; i++) {
		any_fd |= d->dma[i].fd >= 0;
		window_free(&d->dma[i]);
	}
	d->ndma = 0;
	if (any_fd)
		shm_update(d);
}

/* The access flag a client DMA needs in a window. */
static uint32_t access_flag(bool write)
{
	return write ? VFU_DMA_WRITEABLE : VFU_DMA_READABLE;
}

/*
 * The fd-backed window of any device that holds [gpa, gpa + len), or NULL;
 * *dp: its device. Windows of one device never overlap; were two devices'
 * windows to, the first one found decides.
 */
static const struct vfu_dma *fd_window(struct vfu *s, uint64_t gpa, uint64_t len,
				       struct vfu_dev **dp, void **p)
{
	for (unsigned g = 0; g < s->ndevs; g++) {
		struct vfu_dev *d = &s->devs[g];

		for (unsigned i = 0; i < d->ndma; i++) {
			*p = qside_map_ptr(&d->dma[i].m, gpa, len);
			if (*p) {
				*dp = d;
				return &d->dma[i];
			}
		}
	}
	return NULL;
}

void *vfu_dma_ptr(void *opaque, uint64_t gpa, uint64_t len, bool write)
{
	struct vfu_dev *d;
	void *p = NULL;
	const struct vfu_dma *w = fd_window(opaque, gpa, len, &d, &p);

	return w && (w->flags & access_flag(write)) ? p : NULL;
}

/*
 * True when [gpa, gpa + len) lies in an fd-backed window that refuses the
 * access: logged once per device (the service counts and logs each fault).
 */
static bool fd_window_refuses(struct vfu *s, uint64_t gpa, uint64_t len, bool write)
{
	struct vfu_dev *d;
	void *p = NULL;
	const struct vfu_dma *w = fd_window(s, gpa, len, &d, &p);

	if (!w || (w->flags & access_flag(write)))
		return false;
	if (!d->warned_dma_access || s->q.trace)
		vfu_log(d,
			"client DMA %s 0x%llx len 0x%llx refused: window 0x%llx+0x%llx is not "
			"%s (DMA_MAP flags 0x%x); further ones are not logged here",
			write ? "write" : "read", (unsigned long long)gpa, (unsigned long long)len,
			(unsigned long long)w->m.gpa, (unsigned long long)w->m.size,
			write ? "writeable" : "readable", w->flags);
	d->warned_dma_access = true;
	return true;
}

/* ---- DMA through messages (windows without an fd) ------------------------ */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* True when [gpa, gpa + len) lies inside window w (overflow-safe). */
static bool window_holds(const struct vfu_dma *w, uint64_t gpa, uint64_t len)
{
	return gpa >= w->m.gpa && len <= w->m.size && gpa - w->m.gpa <= w->m.size - len;
}

/*
 * The window without an fd of d that holds [gpa, gpa + len) and allows the
 * access, or NULL (also when d has no negotiated connection).
 */
static const struct vfu_dma *msg_window(const struct vfu_dev *d, uint64_t gpa, uint64_t len,
					bool write)
{
	if (d->fd < 0 || !d->negotiated)
		return NULL;
	for (unsigned i = 0; i < d->ndma; i++) {
		const struct vfu_dma *w = &d->dma[i];

		if (w->fd < 0 && window_holds(w, gpa, len))
			return (w->flags & (write ? VFU_DMA_WRITEABLE : VFU_DMA_READABLE)) ? w
											   : NULL;
	}
	return NULL;
}

/* The device whose socket carries a segment: the client's own device first. */
static struct vfu_dev *msg_dev(struct vfu *s, unsigned hint, uint64_t gpa, uint64_t len, bool write)
{
	if (hint < s->ndevs && msg_window(&s->devs[hint], gpa, len, write))
		return &s->devs[hint];
	for (unsigned g = 0; g < s->ndevs; g++)
		if (msg_window(&s->devs[g], gpa, len, write))
			return &s->devs[g];
	return NULL;
}

static void timer_arm(struct vfu *s, bool on)
{
	struct itimerspec its = {0};

	if (s->dma_timer_fd < 0 || s->timer_armed == on)
		return;
	if (on) {
		its.it_interval.tv_nsec = VFU_DMA_TICK_MS * 1000000L;
		its.it_value = its.it_interval;
	}
	if (timerfd_settime(s->dma_timer_fd, 0, &its, NULL) == 0)
		s->timer_armed = on;
}

/* Complete every piece that is over (I/O thread, VM lock not held). */
static void ops_finish(void *opaque)
{
	struct vfu *s = opaque;

	s->finish_queued = false;
	for (;;) {
		struct vfu_dma_op **pp = &s->ops, *o;

		while (*pp && !(*pp)->over)
			pp = &(*pp)->next;
		o = *pp;
		if (!o)
			break;
		*pp = o->next;
		/* done() may run the client's next frames, and so add pieces. */
		o->op->done(o->op, o->err);
		free(o);
	}
	if (!s->ops)
		timer_arm(s, false);
}

/*
 * The piece of o is over with err (0 or a negative errno, the first one
 * kept): its messages are forgotten and done() runs from the loop (a
 * caller may hold the VM lock). Were the deferral to fail, the next tick
 * of the timer completes it.
 */
static void op_over(struct vfu *s, struct vfu_dma_op *o, int err)
{
	if (o->over)
		return;
	o->over = true;
	o->d = NULL;
	if (!o->err)
		o->err = err;
	if (!s->finish_queued && event_defer(ops_finish, s) == 0)
		s->finish_queued = true;
	timer_arm(s, true);
}

/* A fresh message id of d: none of its messages in flight has it. */
static uint16_t new_id(struct vfu_dev *d)
{
	for (;;) {
		uint16_t id = d->next_dma_id++;
		bool used = false;

		for (struct vfu_dma_op *o = d->s->ops; o && !used; o = o->next)
			for (unsigned i = 0; o->d == d && i < o->nmsg && !used; i++)
				used = !o->msg[i].answered && o->msg[i].id == id;
		if (!used)
			return id;
	}
}

/* Send message k of o on d; a failed send closes d's connection (which fails o). */
static void send_msg(struct vfu_dev *d, struct vfu_dma_op *o, unsigned k)
{
	struct vfu_dma_msg *m = &o->msg[k];
	uint8_t out[VFU_HDR_SIZE + VFU_DMA_RW_SIZE + VFU_MAX_XFER];
	struct vfu_hdr h = {m->id, o->op->write ? VFU_CMD_DMA_WRITE : VFU_CMD_DMA_READ, 0,
			    VFU_F_TYPE_CMD, 0};
	size_t len = VFU_DMA_RW_SIZE;

	if (o->op->write)
		len = vfu_dma_write_encode(out + VFU_HDR_SIZE, m->gpa, o->op->data + m->off,
					   m->count);
	else
		vfu_dma_read_encode(out + VFU_HDR_SIZE, m->gpa, m->count);
	h.size = (uint32_t)(VFU_HDR_SIZE + len);
	vfu_hdr_encode(out, &h);
	d->dma_msgs++;
	if (d->s->q.trace)
		vfu_log(d, "%s id %u 0x%llx count %u", vfu_cmd_name(h.cmd), m->id,
			(unsigned long long)m->gpa, m->count);
	vfu_send(d, out, h.size);
}

int vfu_dma_async(void *opaque, struct vmmio_dma_async *op)
{
	struct vfu *s = opaque;
	struct vfu_dev *d = NULL;
	struct vfu_dma_op *o;
	uint64_t nmsg = 0;
	unsigned k = 0;

	/* Check every segment first: a refused piece has no side effect. */
	for (unsigned i = 0; i < op->nseg; i++) {
		const struct vmmio_dma_seg *g = &op->seg[i];

		if (g->len == 0 || op->len < g->off || g->len > op->len - g->off)
			return -EFAULT; /* not reached: the service cut them */
		if (vfu_dma_ptr(s, g->gpa, g->len, op->write))
			continue;
		/* An fd window without the access flag: a fault, never messages. */
		if (fd_window_refuses(s, g->gpa, g->len, op->write))
			return -EFAULT;
		if (!d)
			d = msg_dev(s, op->g, g->gpa, g->len, op->write);
		else if (!msg_window(d, g->gpa, g->len, op->write))
			d = NULL;
		if (!d)
			return -EFAULT; /* the service logs the fault */
		/* In 64 bits: a length near 4 GiB must not wrap the count. */
		nmsg += (uint64_t)g->len / VFU_MAX_XFER + (g->len % VFU_MAX_XFER != 0);
		if (nmsg > VFU_DMA_MAX_MSGS)
			return -E2BIG; /* not reached: the service cuts pieces far smaller */
	}
	o = calloc(1, sizeof(*o) + (size_t)nmsg * sizeof(o->msg[0]));
	if (!o)
		return -ENOMEM;
	o->op = op;
	o->d = d;
	o->nmsg = o->nleft = (unsigned)nmsg;
	o->deadline_ms = now_ms() + VFU_DMA_TIMEOUT_MS;
	for (unsigned i = 0; i < op->nseg; i++) {
		const struct vmmio_dma_seg *g = &op->seg[i];
		uint8_t *p = vfu_dma_ptr(s, g->gpa, g->len, op->write);

		if (p) { /* an fd window: by pointer, now */
			if (op->write)
				memcpy(p, op->data + g->off, g->len);
			else
				memcpy(op->data + g->off, p, g->len);
			continue;
		}
		for (uint32_t done = 0; done < g->len;) {
			uint32_t n = g->len - done < VFU_MAX_XFER ? g->len - done : VFU_MAX_XFER;

			o->msg[k++] =
			    (struct vfu_dma_msg){0, false, g->gpa + done, n, g->off + done};
			done += n;
		}
	}
	o->next = s->ops;
	s->ops = o;
	timer_arm(s, true);
	if (!nmsg) {
		op_over(s, o, 0);
		return 0;
	}
	for (k = 0; k < nmsg; k++)
		o->msg[k].id = new_id(d);
	/* Several in flight at once; a failed send closes d, which fails o. */
	for (k = 0; k < nmsg && o->d == d; k++)
		send_msg(d, o, k);
	return 0;
}

int vfu_dma_reply(struct vfu_dev *d, const struct vfu_hdr *h, const uint8_t *payload, size_t len,
		  char *why, size_t whylen)
{
	struct vfu *s = d->s;
	struct vfu_dma_op *o;
	struct vfu_dma_msg *m = NULL;
	bool write = h->cmd == VFU_CMD_DMA_WRITE;

	if (h->cmd != VFU_CMD_DMA_READ && h->cmd != VFU_CMD_DMA_WRITE) {
		snprintf(why, whylen,
			 "a %s reply, not a command (this server sends only DMA_READ/DMA_WRITE)",
			 vfu_cmd_name(h->cmd));
		return -EINVAL;
	}
	for (o = s->ops; o && !m; o = o->next) {
		if (o->d != d || o->op->write != write)
			continue;
		for (unsigned i = 0; i < o->nmsg && !m; i++)
			if (!o->msg[i].answered && o->msg[i].id == h->id)
				m = &o->msg[i];
		if (m)
			break;
	}
	if (!m) {
		if (!d->warned_stray_reply || s->q.trace)
			vfu_log(d,
				"%s reply id %u matches no message in flight: ignored (late, "
				"after a timeout?); further ones are not logged",
				vfu_cmd_name(h->cmd), h->id);
		d->warned_stray_reply = true;
		return 0;
	}
	m->answered = true;
	o->nleft--;
	if (h->flags & VFU_F_ERROR) {
		if (!o->err) {
			vfu_log(d, "%s 0x%llx count %u for a client: error reply %u (%s)",
				vfu_cmd_name(h->cmd), (unsigned long long)m->gpa, m->count,
				h->error, strerror((int)h->error));
			o->err = -EIO;
		}
	} else if (!write) {
		struct vfu_dma_rw r;
		char bad[160];

		if (vfu_dma_rw_decode(payload, len, false, &r, bad, sizeof(bad)) < 0) {
			snprintf(why, whylen, "%s", bad);
			return -EINVAL;
		}
		if (r.addr != m->gpa || r.count != m->count) {
			snprintf(why, whylen,
				 "DMA_READ reply id %u for 0x%llx count %u (asked 0x%llx count %u)",
				 h->id, (unsigned long long)r.addr, r.count,
				 (unsigned long long)m->gpa, m->count);
			return -EINVAL;
		}
		memcpy(o->op->data + m->off, r.data, r.count);
		if (s->q.trace)
			vfu_log(d, "DMA_READ reply id %u 0x%llx count %u: %02x%s", h->id,
				(unsigned long long)r.addr, r.count, r.data[0],
				r.count > 1 ? " ..." : "");
	}
	if (o->nleft == 0) {
		if (o->err)
			d->dma_failed++;
		op_over(s, o, 0);
	}
	return 0;
}

void vfu_dma_conn_closed(struct vfu_dev *d)
{
	unsigned n = 0;

	for (struct vfu_dma_op *o = d->s->ops; o; o = o->next) {
		if (o->d != d || o->over)
			continue;
		n++;
		d->dma_failed++;
		op_over(d->s, o, -ECONNRESET);
	}
	if (n)
		vfu_log(d,
			"%u client DMA piece(s) waited for DMA_READ/DMA_WRITE replies: they fail",
			n);
}

/* The timer: pieces past their deadline fail; pieces that are over complete. */
static void dma_tick(int fd, uint32_t events, void *opaque)
{
	struct vfu *s = opaque;
	uint64_t ticks;
	long long now = now_ms();

	(void)events;
	if (read(fd, &ticks, sizeof(ticks)) < 0) {
		/* EAGAIN: nothing new */
	}
	for (struct vfu_dma_op *o = s->ops; o; o = o->next) {
		if (o->over || now < o->deadline_ms)
			continue;
		for (unsigned i = 0; i < o->nmsg; i++) {
			if (o->msg[i].answered)
				continue;
			vfu_log(o->d,
				"%s 0x%llx count %u for a client: no reply within %u ms; the "
				"client's DMA fails",
				o->op->write ? "DMA_WRITE" : "DMA_READ",
				(unsigned long long)o->msg[i].gpa, o->msg[i].count,
				VFU_DMA_TIMEOUT_MS);
			break;
		}
		o->d->dma_failed++;
		op_over(s, o, -ETIMEDOUT);
	}
	ops_finish(s);
}

int vfu_dma_init(struct vfu *s)
{
	int err;

	s->dma_timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (s->dma_timer_fd < 0) {
		err = -errno;
		fprintf(stderr, "coreio-vm: vfio-user: timerfd: %s\n", strerror(errno));
		return err;
	}
	err = event_add(s->dma_timer_fd, EPOLLIN, dma_tick, s);
	if (err < 0) {
		fprintf(stderr, "coreio-vm: vfio-user: cannot watch the DMA timer: %s\n",
			strerror(-err));
		close(s->dma_timer_fd);
		s->dma_timer_fd = -1;
	}
	return err;
}

void vfu_dma_stop(struct vfu *s)
{
	for (struct vfu_dma_op *o = s->ops; o; o = o->next)
		op_over(s, o, -ECONNRESET);
	ops_finish(s);
	if (s->dma_timer_fd >= 0) {
		event_del(s->dma_timer_fd);
		close(s->dma_timer_fd);
		s->dma_timer_fd = -1;
		s->timer_armed = false;
	}
}
