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

	fprintf(stderr, "coreio-vm: mpqemu device %u: ", d->g);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

static void close_rx_fds(struct mpqemu_dev *d)
{
	for (unsigned i = 0; i < d->rx_nfds; i++)
		close(d->rx_fds[i]);
	d->rx_nfds = 0;
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
	event_del(d->fd);
	close(d->fd);
	d->fd = -1;
	if (--d->mq->nopen == 0 && d->mq->ctl_fd < 0) {
		fprintf(stderr, "coreio-vm: every mpqemu device socket is closed; exiting\n");
		event_stop();
	}
}

/* Send one message to the orchestrator (--mpqemu-control); never blocks. */
static void ctl_send(struct mpqemu *mq, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void ctl_send(struct mpqemu *mq, const char *fmt, ...)
{
	char msg[MPQEMU_CTL_MSG_MAX];
	va_list ap;
	int n;

	if (mq->ctl_fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(msg))
		return;
	if (mq->trace)
		fprintf(stderr, "coreio-vm: control: sending '%s'\n", msg);
	if (send(mq->ctl_fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n)
		fprintf(stderr, "coreio-vm: control: cannot send '%s': %s\n", msg, strerror(errno));
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
	d->mq->v->io->stats.malformed++;
	snprintf(why, sizeof(why), "malformed message: %s", reason);
	dev_close(d, why);
}

/* Send MPQEMU_CMD_RET with data.u64 = val. The proxy waits for it, so it never blocks long. */
static void reply(struct mpqemu_dev *d, uint64_t val)
{
	uint8_t out[MPQEMU_HDR_SIZE + MPQEMU_RET_SIZE];
	size_t len = mpqemu_ret_encode(out, val), done = 0;

	if (d->fd < 0)
		return;
	while (done < len) {
		ssize_t n = send(d->fd, out + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			done += (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else {
			char why[128];

			/* The proxy reads each answer before its next request: a full socket is a
			 * peer that does not. */
			snprintf(why, sizeof(why), "cannot send an answer: %s",
				 n < 0 ? strerror(errno) : "short send");
			dev_close(d, why);
			return;
		}
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
	if (mq->trace)
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
	struct vm_stats keep;
	int rc;

	if (base == d->bar_base)
		return;
	keep = d->bar_io.stats;
	ioreq_exit(&d->bar_io);
	ioreq_init(&d->bar_io, NULL);
	d->bar_io.stats = keep;
	d->bar_base = base;
	if (!base)
		return;
	rc = register_mmio_emulation_handler(&d->bar_io, base, (uint64_t)base + d->pci.bar_size,
					     vmmio_submit, d->range);
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
	struct mmio_request *m = &req->reqs.mmio;
	int rc;

	memset(req, 0, sizeof(*req));
	req->type = REQ_MMIO;
	req->state = REQ_STATE_FREE;
	req->complete = req_done;
	req->complete_opaque = d;
	m->direction = write ? REQUEST_WRITE : REQUEST_READ;
	m->address = addr;
	m->size = size;
	m->flags = 0; /* QEMU does not say the CPU's privilege level */
	if (write)
		for (unsigned i = 0; i < 8; i++) /* little-endian bytes in address order */
			m->data[i] = (uint8_t)(val >> (8 * i));
	d->wait = w;
	if (d->mq->trace)
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
	/* As a vCPU: the VM lock (the vmmio service's) around the access and
	 * the handler's wait, which sends the request (vmmio_submit()); the
	 * answer completes it later through req_done(), a posted write in the
	 * wait already. */
	pthread_mutex_lock(&d->mq->v->io->lock);
	rc = emulate_io(&d->bar_io, req);
	if (rc == IOREQ_PENDING && req->state != REQ_STATE_COMPLETE && req->wait)
		req->wait(req);
	pthread_mutex_unlock(&d->mq->v->io->lock);
	if (rc == IOREQ_PENDING)
		return;
	if (rc < 0) {
		/* A straddle (counted by emulate_io) or a bad size: a bus error. */
		req->result = -EIO;
		req->state = REQ_STATE_COMPLETE;
	}
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

static void unmap_regions(struct mpqemu_region *r, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (r[i].map)
			munmap(r[i].map, r[i].maplen);
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
	struct mpqemu_region nr[MPQEMU_MAX_FDS];
	long page = sysconf(_SC_PAGESIZE);
	unsigned n = m->sysmem.n;
	char bad[200] = "";

	memset(nr, 0, sizeof(nr));
	for (unsigned i = 0; i < n && !bad[0]; i++) {
		const struct mpqemu_sysmem_region *r = &m->sysmem.r[i];
		struct stat st;

		if (fstat(d->rx_fds[i], &st) < 0 || !S_ISREG(st.st_mode))
			snprintf(bad, sizeof(bad), "region %u: the fd is not a memory file", i);
		else if (r->offset + r->size > (uint64_t)st.st_size)
			snprintf(
			    bad, sizeof(bad),
			    "region %u: offset %lld + size 0x%llx passes the file's end (0x%llx)",
			    i, (long long)r->offset, (unsigned long long)r->size,
			    (unsigned long long)st.st_size);
		else if (r->size > SIZE_MAX - (size_t)page)
			snprintf(bad, sizeof(bad), "region %u: too large", i);
		nr[i].gpa = r->gpa;
		nr[i].size = r->size;
	}
	if (bad[0]) {
		malformed(d, "SYNC_SYSMEM %s", bad);
		return -1;
	}
	for (unsigned i = 0; i < n; i++) {
		uint64_t off = m->sysmem.r[i].offset;
		uint64_t delta = off % (uint64_t)page;
		void *p;

		nr[i].maplen = (size_t)(nr[i].size + delta);
		p = mmap(NULL, nr[i].maplen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
			 d->rx_fds[i], (off_t)(off - delta));
		if (p == MAP_FAILED) {
			dev_log(d,
				"SYNC_SYSMEM: cannot map region %u (gpa 0x%llx size 0x%llx): %s; "
				"keeping the previous memory map",
				i, (unsigned long long)nr[i].gpa, (unsigned long long)nr[i].size,
				strerror(errno));
			unmap_regions(nr, i);
			close_rx_fds(d);
			return 0;
		}
		nr[i].map = p;
		nr[i].host = (uint8_t *)p + delta;
	}
	{
		/* The same map for clients with shared-memory DMA (shm=on ports). */
		struct vmmio_shm_region shm[MPQEMU_MAX_FDS];

		for (unsigned i = 0; i < n; i++)
			shm[i] = (struct vmmio_shm_region){nr[i].gpa, nr[i].size,
							   m->sysmem.r[i].offset, d->rx_fds[i]};
		vmmio_shm_set(mq->v, shm, n);
	}
	close_rx_fds(d);
	unmap_regions(mq->mem, mq->nmem);
	memcpy(mq->mem, nr, sizeof(nr));
	mq->nmem = n;
	if (mq->trace || n == 0)
		dev_log(d, "guest memory map: %u region(s)", n);
	for (unsigned i = 0; i < n && mq->trace; i++)
		dev_log(d, "  region %u: gpa 0x%llx size 0x%llx", i, (unsigned long long)nr[i].gpa,
			(unsigned long long)nr[i].size);
	return 0;
}

/* True when fd is an eventfd. */
static bool is_eventfd(int fd)
{
	char path[64], target[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return strcmp(target, "anon_inode:[eventfd]") == 0;
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
	if (!is_eventfd(d->rx_fds[0]) || !is_eventfd(d->rx_fds[1])) {
		malformed(d, "SET_IRQFD with fds that are not eventfds");
		return -1;
	}
	drop_irqfds(d);
	d->intr_fd = d->rx_fds[0];
	d->resample_fd = d->rx_fds[1];
	d->rx_nfds = 0;
	if (event_add(d->resample_fd, EPOLLIN, on_resample, d) < 0)
		dev_log(d, "cannot watch the resample eventfd: %s", strerror(errno));
	if (d->mq->trace)
		dev_log(d, "SET_IRQFD: intr fd %d, resample fd %d", d->intr_fd, d->resample_fd);
	signal_intx(d); /* a line already high */
	return 0;
}

static void handle_reset(struct mpqemu_dev *d)
{
	d->resets++;
	if (d->mq->trace)
		dev_log(d, "DEVICE_RESET");
	if (!d->dead) /* a dead instance's range may already have a new client */
		vmmio_reset_range(d->mq->v, d->g);
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

/* Keep the fds of one recvmsg() (at most MPQEMU_MAX_FDS per message; the rest are closed). */
static void take_fds(struct mpqemu_dev *d, struct msghdr *mh)
{
	if (mh->msg_flags & MSG_CTRUNC)
		d->rx_fd_overflow = true;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		size_t n;
		int fds[64];

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len < CMSG_LEN(0))
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		if (n > sizeof(fds) / sizeof(fds[0]))
			n = sizeof(fds) / sizeof(fds[0]);
		memcpy(fds, CMSG_DATA(c), n * sizeof(int));
		for (size_t i = 0; i < n; i++) {
			if (d->rx_nfds < MPQEMU_MAX_FDS) {
				d->rx_fds[d->rx_nfds++] = fds[i];
			} else {
				close(fds[i]);
				d->rx_fd_overflow = true;
			}
		}
	}
}

/* The proxy's socket is readable: read at most one message's bytes per recvmsg(). */
static void dev_event(int fd, uint32_t events, void *opaque)
{
	struct mpqemu_dev *d = opaque;

	(void)events;
	for (int round = 0; round < 16 && d->fd >= 0; round++) {
		union {
			struct cmsghdr align;
			char buf[CMSG_SPACE(sizeof(int) * 16)];
		} ctl;
		struct iovec iov;
		struct msghdr mh = {0};
		size_t want = d->rx_have < MPQEMU_HDR_SIZE
				  ? MPQEMU_HDR_SIZE - d->rx_have
				  : MPQEMU_HDR_SIZE + (size_t)d->rx_size - d->rx_have;
		ssize_t n;

		iov.iov_base = d->rx + d->rx_have;
		iov.iov_len = want;
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0) {
			char why[128];

			snprintf(why, sizeof(why), "receive failed: %s", strerror(errno));
			dev_close(d, why);
			return;
		}
		take_fds(d, &mh);
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

/* Is fd an open stream socket (what QEMU's proxy talks on)? */
static bool is_stream_socket(int fd)
{
	int type = 0;
	socklen_t tl = sizeof(type);
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
	       getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM;
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

/* A client claimed range g: tell the orchestrator. */
static void on_claim(unsigned g, void *opaque)
{
	ctl_send(opaque, "claimed %u", g);
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

	ctl_send(mq, "released %u", g);
	if (!d || !d->hotplug || d->dead)
		return;
	d->dead = true;
	pci_set_intx_status(&d->pci, false);
	dev_log(d,
		"its client went away: instance %u is dead (BAR reads 0, writes dropped) "
		"until it is unplugged",
		d->instance);
	ctl_send(mq, "dead %u", g);
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
	if (!is_stream_socket(fd))
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
		event_del(d->fd);
		close(d->fd);
		d->fd = -1;
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
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 4)];
	} ctl;
	char msg[MPQEMU_CTL_MSG_MAX + 1];
	struct iovec iov = {.iov_base = msg, .iov_len = MPQEMU_CTL_MSG_MAX};
	struct msghdr mh = {0};
	int fds[4], nfds = 0;
	unsigned g;
	const char *why;
	ssize_t n;

	(void)events;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = ctl.buf;
	mh.msg_controllen = sizeof(ctl.buf);
	n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	for (struct cmsghdr *c = n >= 0 ? CMSG_FIRSTHDR(&mh) : NULL; c; c = CMSG_NXTHDR(&mh, c)) {
		size_t k;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len < CMSG_LEN(0))
			continue;
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int one;

			memcpy(&one, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (nfds < 4)
				fds[nfds++] = one;
			else
				close(one);
		}
	}
	if (n <= 0) {
		fprintf(stderr, "coreio-vm: the control socket %s; exiting\n",
			n == 0 ? "closed (the orchestrator ended)" : strerror(errno));
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		event_del(fd);
		close(fd);
		mq->ctl_fd = -1;
		event_stop();
		return;
	}
	msg[n] = '\0';
	if (mq->trace)
		fprintf(stderr, "coreio-vm: control: received '%s' with %d fd(s)\n", msg, nfds);
	if (parse_device_msg(msg, &g) < 0) {
		fprintf(stderr, "coreio-vm: control: unknown message '%.40s' ignored\n", msg);
		ctl_send(mq, "refused ? unknown message");
		why = NULL;
		g = ~0u;
	} else if (nfds != 1 || (mh.msg_flags & MSG_CTRUNC)) {
		why = "needs exactly one fd";
	} else {
		why = ctl_device(mq, g, fds[0]);
		if (!why) {
			nfds = 0; /* the device owns it now */
			ctl_send(mq, "serving %u", g);
		}
	}
	if (why) {
		fprintf(stderr, "coreio-vm: control: device %u refused: %s\n", g, why);
		ctl_send(mq, "refused %u %s", g, why);
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
}

void *mpqemu_dma_ptr(void *opaque, uint64_t gpa, uint64_t len)
{
	struct mpqemu *mq = opaque;

	if (len == 0)
		return NULL;
	for (unsigned i = 0; i < mq->nmem; i++) {
		const struct mpqemu_region *r = &mq->mem[i];

		if (gpa >= r->gpa && gpa - r->gpa < r->size && len <= r->size - (gpa - r->gpa))
			return r->host + (gpa - r->gpa);
	}
	return NULL;
}

int mpqemu_init(struct mpqemu *mq, const struct vm_config *cfg, struct vmmio *v,
		struct irq_chip *irq)
{
	memset(mq, 0, sizeof(*mq));
	mq->v = v;
	mq->irq = irq;
	mq->trace = cfg->trace;
	mq->ctl_fd = -1;
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
	if (cfg->mpqemu_control >= 0) {
		int fd = cfg->mpqemu_control, type = 0, err;
		socklen_t tl = sizeof(type);

		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_SEQPACKET) {
			fprintf(stderr,
				"coreio-vm: --mpqemu-control %d is not an open SOCK_SEQPACKET "
				"socket\n",
				fd);
			return -ENOTSOCK;
		}
		if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
			return -errno;
		err = event_add(fd, EPOLLIN, ctl_event, mq);
		if (err < 0)
			return err;
		mq->ctl_fd = fd;
	}
	for (unsigned i = 0; i < mq->ndevs; i++) {
		struct mpqemu_dev *d = &mq->devs[i];
		int fd = cfg->mpqemu_fds[i], err;

		if (!is_stream_socket(fd)) {
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
	irq_set_backend(irq, irq_backend, mq);
	vmmio_set_dma_ptr(v, mpqemu_dma_ptr, mq);
	if (mq->ctl_fd >= 0) {
		vmmio_set_claim_cb(v, on_claim, mq);
		vmmio_set_release_cb(v, on_release, mq);
	}
	return 0;
}

void mpqemu_stop(struct mpqemu *mq)
{
	if (mq->v) {
		vmmio_set_claim_cb(mq->v, NULL, NULL);
		vmmio_set_release_cb(mq->v, NULL, NULL);
	}
}

void mpqemu_exit(struct mpqemu *mq)
{
	mpqemu_stop(mq);
	if (mq->ctl_fd >= 0) {
		event_del(mq->ctl_fd);
		close(mq->ctl_fd);
		mq->ctl_fd = -1;
	}
	for (unsigned i = 0; i < mq->ndevs; i++) {
		struct mpqemu_dev *d = &mq->devs[i];

		if (d->fd >= 0) {
			close_rx_fds(d);
			event_del(d->fd);
			close(d->fd);
			d->fd = -1;
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
	if (mq->irq)
		irq_set_backend(mq->irq, NULL, NULL);
	if (mq->v)
		vmmio_set_dma_ptr(mq->v, NULL, NULL);
	unmap_regions(mq->mem, mq->nmem);
	mq->nmem = 0;
	mq->ndevs = 0;
}
