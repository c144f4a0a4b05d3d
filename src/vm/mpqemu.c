/* coreio-vm: the device side of QEMU's multi-process proxy (x-pci-proxy-dev), --accel mpqemu. */
#include "mpqemu.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "event.h"

static void dev_log(const struct mpqemu_dev *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void dev_log(const struct mpqemu_dev *d, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	qside_vlog("mpqemu", d->g, fmt, ap);
	va_end(ap);
}

static void close_rx_fds(struct mpqemu_dev *d)
{
	qside_close_fds(d->rx_fds, &d->rx_nfds);
}

static void rx_reset(struct mpqemu_dev *d)
{
	d->rx_have = 0;
	d->rx_size = 0;
	d->rx_nfds = 0;
	d->rx_fd_overflow = false;
}

/*
 * Close the device's socket (EOF, an error or a malformed message). A
 * request still in flight completes later into a closed socket, which is
 * fine. When no device socket is left and no orchestrator may send new
 * ones (no --mpqemu-control), coreio-vm ends.
 */
static void dev_close(struct mpqemu_dev *d, const char *why)
{
	if (d->fd < 0)
		return;
	dev_log(d, "%s; closing its socket", why);
	close_rx_fds(d);
	qside_sock_close(&d->fd);
	if (--d->mq->nopen == 0 && d->mq->q.ctl.fd < 0) {
		fprintf(stderr, "coreio-vm: every mpqemu device socket is closed; exiting\n");
		event_stop();
	}
}

static void malformed(struct mpqemu_dev *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void malformed(struct mpqemu_dev *d, const char *fmt, ...)
{
	char reason[256], why[320];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	d->mq->q.v->io->stats.malformed++;
	snprintf(why, sizeof(why), "malformed message: %s", reason);
	dev_close(d, why);
}

/* Send MPQEMU_CMD_RET with data.u64 = val. The proxy waits for it, so it never blocks long. */
static void reply(struct mpqemu_dev *d, uint64_t val)
{
	uint8_t out[MPQEMU_HDR_SIZE + MPQEMU_RET_SIZE];
	size_t len = mpqemu_ret_encode(out, val);
	const char *err;

	if (d->fd < 0)
		return;
	/* The proxy reads each answer before its next request: a full socket is a
	 * peer that does not. */
	err = qside_send_all(d->fd, out, len);
	if (err) {
		char why[128];

		snprintf(why, sizeof(why), "cannot send an answer: %s", err);
		dev_close(d, why);
	}
}

/* Tell the proxy the INTx line is high (its irqfd), unless INTx is disabled. */
static void signal_intx(struct mpqemu_dev *d)
{
	uint64_t one = 1;

	if (d->intr_fd < 0 || !d->line || pci_intx_disabled(&d->pci))
		return;
	if (write(d->intr_fd, &one, sizeof(one)) == (ssize_t)sizeof(one))
		d->irq_signals++;
}

/* The IRQ backend: line g is the INTx of device g (config.c sets irqs[0] = g). */
static void irq_backend(int line, bool level, void *opaque)
{
	struct mpqemu *mq = opaque;
	struct mpqemu_dev *d;

	if (line < 0 || (unsigned)line >= mq->ndevs)
		return;
	d = &mq->devs[line];
	d->line = level;
	if (d->dead)
		return; /* the line belongs to the range's next device instance */
	pci_set_intx_status(&d->pci, level);
	if (mq->q.trace)
		dev_log(d, "INTx %s", level ? "high" : "low");
	signal_intx(d);
}

/* The resample eventfd: the guest acknowledged the interrupt; a line still high fires again. */
static void on_resample(int fd, uint32_t events, void *opaque)
{
	struct mpqemu_dev *d = opaque;
	uint64_t n;

	(void)events;
	if (read(fd, &n, sizeof(n)) < 0) {
		/* Spurious wake-up: nothing to acknowledge. */
	}
	signal_intx(d);
}

/* Move handler of bar_io to the address now programmed in BAR 0. */
static void bar_update(struct mpqemu_dev *d)
{
	uint32_t base = pci_bar0(&d->pci);
	int rc;

	if (base == d->bar_base)
		return;
	d->bar_base = base;
	rc = qside_bar_move(&d->bar_io, base, d->pci.bar_size, d->range, base != 0);
	if (rc < 0)
		dev_log(d, "cannot place BAR 0 at 0x%x: %s", base, strerror(-rc));
}

/* The read value of a finished request (little-endian bytes in address order). */
static uint64_t req_value(const struct io_request *req)
{
	uint64_t v = 0;

	for (unsigned i = req->reqs.mmio.size; i-- > 0;)
		v = v << 8 | req->reqs.mmio.data[i];
	return v;
}

/* The post step of the request in flight, and the proxy's answer. */
static void finish(struct mpqemu_dev *d)
{
	struct io_request *req = &d->req;
	bool rd = req->reqs.mmio.direction == REQUEST_READ;
	int rc = emulate_mmio_post(&d->bar_io, req);
	enum mpqemu_wait w = d->wait;
	uint32_t val;

	d->wait = MPQEMU_IDLE;
	if (d->dead && rd) {
		/* Also a read that was waiting on the client when it went away. */
		memset(req->reqs.mmio.data, 0, sizeof(req->reqs.mmio.data));
		rc = 0;
	}
	switch (w) {
	case MPQEMU_WAIT_CFGREAD:
		memcpy(d->pci.cfg + d->data_off, req->reqs.mmio.data, req->reqs.mmio.size);
		pci_cfg_read(&d->pci, d->cfg_addr, d->cfg_len, &val);
		reply(d, val);
		break;
	case MPQEMU_WAIT_CFGWRITE:
		reply(d, 0);
		break;
	default:
		reply(d, rd ? req_value(req) : (rc < 0 ? UINT64_MAX : 0));
		break;
	}
}

/* Completion of a request that went to a client (I/O thread; the VM lock is held). */
static void req_done(struct io_request *req, void *opaque)
{
	(void)req;
	finish(opaque);
}

/*
 * Start a guest access of BAR 0 at guest-physical addr through the ioreq
 * layer, as a vCPU would: the answer goes out when it completes.
 */
static void start_access(struct mpqemu_dev *d, enum mpqemu_wait w, bool write, uint64_t addr,
			 uint64_t val, unsigned size)
{
	struct io_request *req = &d->req;
	uint8_t data[8];

	for (unsigned i = 0; i < 8; i++) /* little-endian bytes in address order */
		data[i] = (uint8_t)(val >> (8 * i));
	qside_req_init(req, write, addr, data, size, req_done, d);
	d->wait = w;
	if (d->mq->q.trace)
		dev_log(d, "%s 0x%llx size %u%s%s", write ? "write" : "read",
			(unsigned long long)addr, size, d->bar_base ? "" : " (BAR 0 unassigned)",
			d->dead ? " (dead: 0)" : "");
	if (d->dead) {
		/* The client went away and the device is being unplugged: reads give 0 (what
		 * the guest reads once the device is gone), writes are dropped. */
		d->dead_accesses++;
		req->result = 0;
		req->state = REQ_STATE_COMPLETE;
		finish(d);
		return;
	}
	if (qside_req_run(d->mq->q.v, &d->bar_io, req) != IOREQ_PENDING)
		finish(d);
}

static void handle_bar(struct mpqemu_dev *d, const struct mpqemu_bar *b, bool write)
{
	uint32_t size = b->size;
	bool memory = b->memory;

	if (write)
		d->bar_writes++;
	else
		d->bar_reads++;
	if ((size != 1 && size != 2 && size != 4 && size != 8) || !memory) {
		dev_log(d, "BAR %s of size %u (%s space) refused", write ? "write" : "read", size,
			memory ? "memory" : "I/O");
		d->bar_io.stats.bus_errors++;
		reply(d, UINT64_MAX);
		return;
	}
	start_access(d, MPQEMU_WAIT_BAR, write, b->addr, b->val, size);
}

static void handle_cfg(struct mpqemu_dev *d, const struct mpqemu_conf *c, bool write)
{
	uint32_t addr = c->addr, val = c->val;
	unsigned len = (unsigned)c->len;
	bool mem_before = pci_memory_enabled(&d->pci), intx_before = pci_intx_disabled(&d->pci);
	uint32_t off, out;
	unsigned acc, data_off;

	if (write)
		d->cfg_writes++;
	else
		d->cfg_reads++;
	if (c->len != 1 && c->len != 2 && c->len != 4) {
		dev_log(d, "configuration %s of length %d refused", write ? "write" : "read",
			(int)c->len);
		reply(d, UINT64_MAX);
		return;
	}
	if (!write) {
		if (pci_cfg_window(&d->pci, addr, len, &off, &acc, &data_off)) {
			d->cfg_addr = addr;
			d->cfg_len = len;
			d->data_off = data_off;
			start_access(d, MPQEMU_WAIT_CFGREAD, false, (uint64_t)d->bar_base + off, 0,
				     acc);
			return;
		}
		if (pci_cfg_read(&d->pci, addr, len, &out) < 0)
			dev_log(d, "configuration read at 0x%x length %u is outside the 256 bytes",
				addr, len);
		reply(d, out);
		return;
	}
	if (pci_cfg_write(&d->pci, addr, val, len) < 0) {
		dev_log(d, "configuration write at 0x%x length %u is outside the 256 bytes", addr,
			len);
		reply(d, UINT64_MAX);
		return;
	}
	bar_update(d);
	if (!mem_before && pci_memory_enabled(&d->pci) && d->bar_base != d->logged_base) {
		d->logged_base = d->bar_base;
		dev_log(d, "memory decoding on, BAR 0 at 0x%x (size 0x%llx)", d->bar_base,
			(unsigned long long)d->pci.bar_size);
	}
	if (intx_before && !pci_intx_disabled(&d->pci))
		signal_intx(d);
	if (pci_cfg_window(&d->pci, addr, len, &off, &acc, &data_off)) {
		uint64_t v = 0;

		for (unsigned i = acc; i-- > 0;)
			v = v << 8 | d->pci.cfg[data_off + i];
		start_access(d, MPQEMU_WAIT_CFGWRITE, true, (uint64_t)d->bar_base + off, v, acc);
		return;
	}
	reply(d, 0);
}

static void unmap_regions(struct qside_map *r, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		qside_unmap(&r[i]);
}

/*
 * SYNC_SYSMEM: the guest memory map, replacing the previous one.
 * mpqemu_msg_decode() checked the regions themselves (sizes, overflow,
 * overlaps); here each fd must be a memory file holding its region, all
 * before anything is mapped; the fds are closed here. Returns 0, or -1
 * after closing the device for a malformed message.
 */
static int handle_sysmem(struct mpqemu_dev *d, const struct mpqemu_msg *m)
{
	struct mpqemu *mq = d->mq;
	struct qside_map nr[MPQEMU_MAX_FDS];
	unsigned n = m->sysmem.n;
	char bad[200] = "";

	memset(nr, 0, sizeof(nr));
	for (unsigned i = 0; i < n && !bad[0]; i++) {
		const struct mpqemu_sysmem_region *r = &m->sysmem.r[i];
		uint64_t end;

		switch (qside_mem_check(d->rx_fds[i], r->offset, r->size, &end)) {
		case QSIDE_MEM_NOT_FILE:
			snprintf(bad, sizeof(bad), "region %u: the fd is not a memory file", i);
			break;
		case QSIDE_MEM_PAST_END:
			snprintf(
			    bad, sizeof(bad),
			    "region %u: offset %lld + size 0x%llx passes the file's end (0x%llx)",
			    i, (long long)r->offset, (unsigned long long)r->size,
			    (unsigned long long)end);
			break;
		case QSIDE_MEM_TOO_LARGE:
			snprintf(bad, sizeof(bad), "region %u: too large", i);
			break;
		default:
			break;
		}
		nr[i].gpa = r->gpa;
		nr[i].size = r->size;
	}
	if (bad[0]) {
		malformed(d, "SYNC_SYSMEM %s", bad);
		return -1;
	}
	for (unsigned i = 0; i < n; i++) {
		int err = qside_map(&nr[i], d->rx_fds[i], m->sysmem.r[i].offset, true);

		if (err < 0) {
			dev_log(d,
				"SYNC_SYSMEM: cannot map region %u (gpa 0x%llx size 0x%llx): %s; "
				"keeping the previous memory map",
				i, (unsigned long long)nr[i].gpa, (unsigned long long)nr[i].size,
				strerror(-err));
			unmap_regions(nr, i);
			close_rx_fds(d);
			return 0;
		}
	}
	{
		/* The same map for clients with shared-memory DMA (shm=on ports). */
		struct vmmio_shm_region shm[MPQEMU_MAX_FDS];

		for (unsigned i = 0; i < n; i++)
			shm[i] = (struct vmmio_shm_region){nr[i].gpa, nr[i].size,
							   m->sysmem.r[i].offset, d->rx_fds[i]};
		vmmio_shm_set(mq->q.v, shm, n);
	}
	close_rx_fds(d);
	unmap_regions(mq->mem, mq->nmem);
	memcpy(mq->mem, nr, sizeof(nr));
	mq->nmem = n;
	if (mq->q.trace || n == 0)
		dev_log(d, "guest memory map: %u region(s)", n);
	for (unsigned i = 0; i < n && mq->q.trace; i++)
		dev_log(d, "  region %u: gpa 0x%llx size 0x%llx", i, (unsigned long long)nr[i].gpa,
			(unsigned long long)nr[i].size);
	return 0;
}

static void drop_irqfds(struct mpqemu_dev *d)
{
	if (d->resample_fd >= 0) {
		event_del(d->resample_fd);
		close(d->resample_fd);
	}
	if (d->intr_fd >= 0)
		close(d->intr_fd);
	d->intr_fd = d->resample_fd = -1;
}

static int handle_irqfd(struct mpqemu_dev *d)
{
	if (!qside_is_eventfd(d->rx_fds[0]) || !qside_is_eventfd(d->rx_fds[1])) {
		malformed(d, "SET_IRQFD with fds that are not eventfds");
		return -1;
	}
	drop_irqfds(d);
	d->intr_fd = d->rx_fds[0];
	d->resample_fd = d->rx_fds[1];
	d->rx_nfds = 0;
	if (event_add(d->resample_fd, EPOLLIN, on_resample, d) < 0)
		dev_log(d, "cannot watch the resample eventfd: %s", strerror(errno));
	if (d->mq->q.trace)
		dev_log(d, "SET_IRQFD: intr fd %d, resample fd %d", d->intr_fd, d->resample_fd);
	signal_intx(d); /* a line already high */
	return 0;
}

static void handle_reset(struct mpqemu_dev *d)
{
	d->resets++;
	if (d->mq->q.trace)
		dev_log(d, "DEVICE_RESET");
	if (!d->dead) /* a dead instance's range may already have a new client */
		vmmio_reset_range(d->mq->q.v, d->g);
	pci_dev_reset(&d->pci);
	pci_set_intx_status(&d->pci, d->line);
	bar_update(d);
	reply(d, 0);
}

/* Check a whole message against its command (mpqemu_msg_decode()), then run it. */
static void dispatch(struct mpqemu_dev *d)
{
	struct mpqemu_msg m;
	char why[256];

	if (mpqemu_msg_decode(d->rx, d->rx + MPQEMU_HDR_SIZE, (size_t)d->rx_size, d->rx_nfds,
			      d->rx_fd_overflow, &m, why, sizeof(why)) < 0) {
		malformed(d, "%s", why);
		return;
	}
	if (mpqemu_cmd_answered(m.cmd) && d->wait != MPQEMU_IDLE) {
		malformed(d, "%s while a request is still unanswered", mpqemu_cmd_name(m.cmd));
		return;
	}
	switch (m.cmd) {
	case MPQEMU_CMD_SYNC_SYSMEM:
		handle_sysmem(d, &m);
		break;
	case MPQEMU_CMD_PCI_CFGWRITE:
	case MPQEMU_CMD_PCI_CFGREAD:
		handle_cfg(d, &m.conf, m.cmd == MPQEMU_CMD_PCI_CFGWRITE);
		break;
	case MPQEMU_CMD_BAR_WRITE:
	case MPQEMU_CMD_BAR_READ:
		handle_bar(d, &m.bar, m.cmd == MPQEMU_CMD_BAR_WRITE);
		break;
	case MPQEMU_CMD_SET_IRQFD:
		handle_irqfd(d);
		break;
	default: /* DEVICE_RESET: the decoder takes no other command */
		handle_reset(d);
		break;
	}
}

/* The proxy's socket is readable: read at most one message's bytes per recvmsg(). */
static void dev_event(int fd, uint32_t events, void *opaque)
{
	struct mpqemu_dev *d = opaque;

	(void)events;
	for (int round = 0; round < 16 && d->fd >= 0; round++) {
		size_t want = d->rx_have < MPQEMU_HDR_SIZE
				  ? MPQEMU_HDR_SIZE - d->rx_have
				  : MPQEMU_HDR_SIZE + (size_t)d->rx_size - d->rx_have;
		/* At most one message's bytes, and the fds that come with them. */
		ssize_t n = qside_recv(fd, d->rx + d->rx_have, want, d->rx_fds, &d->rx_nfds,
				       MPQEMU_MAX_FDS, &d->rx_fd_overflow);

		if (n == -EINTR)
			continue;
		if (n == -EAGAIN || n == -EWOULDBLOCK)
			return;
		if (n < 0) {
			char why[128];

			snprintf(why, sizeof(why), "receive failed: %s", strerror((int)-n));
			dev_close(d, why);
			return;
		}
		if (n == 0) {
			dev_close(d, d->rx_have ? "the proxy closed the socket inside a message"
						: "the proxy closed the socket");
			return;
		}
		d->rx_have += (size_t)n;
		if (d->rx_have == MPQEMU_HDR_SIZE) { /* the header is complete: check it */
			struct mpqemu_hdr h;
			char why[160];

			if (mpqemu_hdr_decode(d->rx, &h, why, sizeof(why)) < 0) {
				malformed(d, "%s", why);
				return;
			}
			d->rx_size = h.size;
		}
		if (d->rx_have == MPQEMU_HDR_SIZE + d->rx_size && d->rx_have >= MPQEMU_HDR_SIZE) {
			dispatch(d);
			if (d->fd < 0)
				return;
			close_rx_fds(d); /* fds a handler did not take */
			rx_reset(d);
		}
	}
}

/* Watch fd as the device's socket (non-blocking, close-on-exec). Returns 0 or a negative errno. */
static int dev_attach(struct mpqemu_dev *d, int fd)
{
	int fl = fcntl(fd, F_GETFL), err;

	if (fl < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	err = event_add(fd, EPOLLIN, dev_event, d);
	if (err < 0)
		return err;
	d->fd = fd;
	d->mq->nopen++;
	return 0;
}

/*
 * Range g lost its client (VM lock held). A hot-pluggable device instance
 * dies with it: from now on it reads 0 and drops writes, never reaches the
 * range's next client, and the orchestrator unplugs it ("dead G").
 */
static void on_release(unsigned g, void *opaque)
{
	struct mpqemu *mq = opaque;
	struct mpqemu_dev *d = g < mq->ndevs ? &mq->devs[g] : NULL;

	qside_ctl_send(&mq->q.ctl, "released %u", g);
	if (!d || !d->hotplug || d->dead)
		return;
	d->dead = true;
	pci_set_intx_status(&d->pci, false);
	dev_log(d,
		"its client went away: instance %u is dead (BAR reads 0, writes dropped) "
		"until it is unplugged",
		d->instance);
	qside_ctl_send(&mq->q.ctl, "dead %u", g);
}

/*
 * "device G" with one fd: the socket of a fresh proxy for range G. Accepted
 * when the range is hot-pluggable and claimed, and its current instance is
 * dead or closed with nothing in flight. Returns NULL, or why it is refused.
 */
static const char *ctl_device(struct mpqemu *mq, unsigned g, int fd)
{
	struct mpqemu_dev *d;
	int err;

	if (g >= mq->ndevs)
		return "no such device";
	d = &mq->devs[g];
	if (!d->hotplug)
		return "not hotplug=on";
	if (!qside_is_stream_socket(fd))
		return "the fd is not a stream socket";
	if (d->fd >= 0 && !d->dead)
		return "its device is alive";
	if (d->wait != MPQEMU_IDLE)
		return "a request of the old device is in flight";
	if (!d->range->owner)
		return "no client holds the range";
	if (d->fd >= 0) {
		/* The orchestrator has replaced the old proxy without waiting for QEMU to close
		 * its socket. */
		close_rx_fds(d);
		qside_sock_close(&d->fd);
		mq->nopen--;
	}
	drop_irqfds(d);
	rx_reset(d);
	pci_dev_reset(&d->pci);
	d->dead = false;
	pci_set_intx_status(&d->pci, d->line);
	bar_update(d);
	d->logged_base = 0;
	err = dev_attach(d, fd);
	if (err < 0) {
		dev_log(d, "cannot watch the new socket: %s", strerror(-err));
		d->dead = true;
		return "cannot watch the socket";
	}
	d->instance++;
	dev_log(d, "serving instance %u on fd %d (hot-plugged)", d->instance, fd);
	return NULL;
}

/* "device G" (G: 1 to 3 decimal digits) -> 0 with *g set, else -1. */
static int parse_device_msg(const char *msg, unsigned *g)
{
	const char *p = msg + 7;
	unsigned v = 0, k = 0;

	if (strncmp(msg, "device ", 7) != 0)
		return -1;
	for (; *p >= '0' && *p <= '9' && k < 3; p++, k++)
		v = v * 10 + (unsigned)(*p - '0');
	if (k == 0 || *p != '\0')
		return -1;
	*g = v;
	return 0;
}

/* A message from the orchestrator on the control socket. */
static void ctl_event(int fd, uint32_t events, void *opaque)
{
	struct mpqemu *mq = opaque;
	char msg[QSIDE_CTL_MSG_MAX + 1];
	int fds[QSIDE_CTL_MAX_FDS];
	unsigned nfds;
	unsigned g;
	const char *why;
	bool trunc;

	(void)fd;
	(void)events;
	if (qside_ctl_recv(&mq->q.ctl, msg, fds, &nfds, &trunc) <= 0)
		return;
	if (mq->q.trace)
		fprintf(stderr, "coreio-vm: control: received '%s' with %u fd(s)\n", msg, nfds);
	if (parse_device_msg(msg, &g) < 0) {
		fprintf(stderr, "coreio-vm: control: unknown message '%.40s' ignored\n", msg);
		qside_ctl_send(&mq->q.ctl, "refused ? unknown message");
		why = NULL;
		g = ~0u;
	} else if (nfds != 1 || trunc) {
		why = "needs exactly one fd";
	} else {
		why = ctl_device(mq, g, fds[0]);
		if (!why) {
			nfds = 0; /* the device owns it now */
			qside_ctl_send(&mq->q.ctl, "serving %u", g);
		}
	}
	if (why) {
		fprintf(stderr, "coreio-vm: control: device %u refused: %s\n", g, why);
		qside_ctl_send(&mq->q.ctl, "refused %u %s", g, why);
	}
	qside_close_fds(fds, &nfds);
}

void *mpqemu_dma_ptr(void *opaque, uint64_t gpa, uint64_t len, bool write)
{
	struct mpqemu *mq = opaque;

	/* SYNC_SYSMEM carries no access flags: QEMU sends only its RAM
	 * sections (never ROM), mapped shared and read-write. */
	(void)write;
	for (unsigned i = 0; i < mq->nmem; i++) {
		void *p = qside_map_ptr(&mq->mem[i], gpa, len);

		if (p)
			return p;
	}
	return NULL;
}

int mpqemu_init(struct mpqemu *mq, const struct vm_config *cfg, struct vmmio *v,
		struct irq_chip *irq)
{
	int err;

	memset(mq, 0, sizeof(*mq));
	err = qside_init(&mq->q, cfg, v, irq, ctl_event, mq);
	if (err < 0)
		return err;
	for (unsigned i = 0; i < cfg->nranges; i++) {
		struct mpqemu_dev *d = &mq->devs[i];

		d->mq = mq;
		d->g = i;
		d->fd = -1;
		d->intr_fd = d->resample_fd = -1;
		d->range = &v->ranges[i];
		d->hotplug = cfg->ranges[i].hotplug;
		d->instance = 1;
		pci_dev_init(&d->pci, &cfg->ranges[i]);
		ioreq_init(&d->bar_io, NULL);
		mq->ndevs++;
	}
	for (unsigned i = 0; i < mq->ndevs; i++) {
		struct mpqemu_dev *d = &mq->devs[i];
		int fd = cfg->mpqemu_fds[i];

		if (!qside_is_stream_socket(fd)) {
			fprintf(
			    stderr,
			    "coreio-vm: --mpqemu-fd %d (range %u) is not an open stream socket\n",
			    fd, i);
			return -ENOTSOCK;
		}
		err = dev_attach(d, fd);
		if (err < 0)
			return err;
		dev_log(d, "serving %04x:%04x (class 0x%06x%s%s) on fd %d; BAR 0 size 0x%llx",
			cfg->ranges[i].pci_vendor, cfg->ranges[i].pci_device,
			cfg->ranges[i].pci_class, cfg->ranges[i].virtio ? ", virtio" : "",
			d->hotplug ? ", hotplug" : "", fd, (unsigned long long)cfg->ranges[i].size);
	}
	/* Without a control socket nobody replaces dead instances: no claim callbacks. */
	qside_hook(&mq->q, &(struct qside_hooks){.irq = irq_backend,
						 .dma_ptr = mpqemu_dma_ptr,
						 .release = on_release,
						 .opaque = mq});
	return 0;
}

void mpqemu_stop(struct mpqemu *mq)
{
	qside_stop(&mq->q);
}

void mpqemu_exit(struct mpqemu *mq)
{
	qside_exit(&mq->q);
	for (unsigned i = 0; i < mq->ndevs; i++) {
		struct mpqemu_dev *d = &mq->devs[i];

		if (d->fd >= 0) {
			close_rx_fds(d);
			qside_sock_close(&d->fd);
		}
		drop_irqfds(d);
		dev_log(d,
			"cfg_reads=%llu cfg_writes=%llu bar_reads=%llu bar_writes=%llu "
			"outside_bar=%llu bus_errors=%llu irq_signals=%llu resets=%llu "
			"instances=%u dead_accesses=%llu",
			(unsigned long long)d->cfg_reads, (unsigned long long)d->cfg_writes,
			(unsigned long long)d->bar_reads, (unsigned long long)d->bar_writes,
			(unsigned long long)(d->bar_io.stats.unhandled_reads +
					     d->bar_io.stats.unhandled_writes +
					     d->bar_io.stats.straddles),
			(unsigned long long)d->bar_io.stats.bus_errors,
			(unsigned long long)d->irq_signals, (unsigned long long)d->resets,
			d->instance, (unsigned long long)d->dead_accesses);
		ioreq_exit(&d->bar_io);
	}
	unmap_regions(mq->mem, mq->nmem);
	mq->nmem = 0;
	mq->ndevs = 0;
}
