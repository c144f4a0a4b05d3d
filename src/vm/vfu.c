/* coreio-vm vfio-user server: listening sockets, message reception, dispatch, regions and reset. */
#include "vfu.h"

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
#include <sys/un.h>
#include <unistd.h>

#include "event.h"

void vfu_log(const struct vfu_dev *d, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	qside_vlog("vfio-user", d->g, fmt, ap);
	va_end(ap);
}

bool vfu_is_eventfd(int fd)
{
	return qside_is_eventfd(fd);
}

static void close_rx_fds(struct vfu_dev *d)
{
	qside_close_fds(d->rx_fds, &d->rx_nfds);
}

static void rx_reset(struct vfu_dev *d)
{
	d->held = false;
	d->rx_have = 0;
	d->rx_size = 0;
	d->rx_nfds = 0;
	d->rx_fd_overflow = false;
}

static void listen_resume(struct vfu_dev *d)
{
	if (d->listen_fd >= 0 && d->fd < 0 && !d->busy)
		event_mod(d->listen_fd, EPOLLIN);
}

/*
 * Close the connection (EOF, an error, a malformed message, a refused
 * VERSION). Per the protocol its DMA windows and IRQ eventfds go; the rest
 * of the device state stays. A request still at the client completes later
 * without an answer; the next connection is accepted after that.
 */
static void conn_close(struct vfu_dev *d, const char *why)
{
	if (d->fd < 0)
		return;
	vfu_log(d, "%s; closing the connection", why);
	close_rx_fds(d);
	rx_reset(d);
	qside_sock_close(&d->fd);
	d->negotiated = false;
	d->warned_stray_reply = false;
	vfu_dma_conn_closed(d); /* our DMA_READ/DMA_WRITE in flight fail */
	vfu_irq_reset(d, false);
	vfu_dma_clear(d);
	listen_resume(d);
}

int vfu_send(struct vfu_dev *d, const void *buf, size_t len)
{
	const char *why;
	char msg[128];

	if (d->fd < 0)
		return -EIO;
	/* The client reads every message; a full socket is one that does not. */
	why = qside_send_all(d->fd, buf, len);
	if (!why)
		return 0;
	snprintf(msg, sizeof(msg), "cannot send: %s", why);
	conn_close(d, msg);
	return -EIO;
}

static void malformed(struct vfu_dev *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void malformed(struct vfu_dev *d, const char *fmt, ...)
{
	char reason[256], why[320];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	d->s->q.v->io->stats.malformed++;
	snprintf(why, sizeof(why), "malformed message: %s", reason);
	conn_close(d, why);
}

/* Send a reply to h: the header with flags and error, then len payload bytes. */
static void send_reply(struct vfu_dev *d, const struct vfu_hdr *h, uint32_t err,
		       const void *payload, size_t len)
{
	uint8_t out[VFU_MSG_MAX];
	struct vfu_hdr r = {h->id, h->cmd, (uint32_t)(VFU_HDR_SIZE + len), VFU_F_TYPE_REPLY, 0};

	if (d->fd < 0 || (h->flags & VFU_F_NO_REPLY) || len > sizeof(out) - VFU_HDR_SIZE)
		return;
	if (err) {
		r.flags |= VFU_F_ERROR;
		r.error = err;
		d->errors++;
	}
	vfu_hdr_encode(out, &r);
	if (len)
		memcpy(out + VFU_HDR_SIZE, payload, len);
	vfu_send(d, out, VFU_HDR_SIZE + len);
}

static void reply_err(struct vfu_dev *d, const struct vfu_hdr *h, int err)
{
	send_reply(d, h, (uint32_t)(err < 0 ? -err : err), NULL, 0);
}

/*
 * A BAR 0 access to a dead instance (its model went away): reads return 0
 * and writes are dropped, as on the mpqemu path. An error reply would make
 * QEMU return all ones, and Linux's virtio reset loop would wait forever for
 * a status register that never reads 0, holding up the unplug.
 */
static void reply_dead(struct vfu_dev *d, const struct vfu_hdr *h, uint64_t offset, uint32_t region,
		       uint32_t count, bool rd)
{
	uint8_t out[VFU_REGION_RW_SIZE + 8] = {0};

	d->dead_accesses++;
	if (count > 8)
		count = 8; /* BAR 0 accesses are 1, 2, 4 or 8 bytes (checked before) */
	vfu_region_rw_encode(out, offset, region, count);
	send_reply(d, h, 0, out, VFU_REGION_RW_SIZE + (rd ? count : 0));
}

/* Move bar_io's handler to BAR 0's address as now programmed (0 while unassigned). */
static void bar_update(struct vfu_dev *d)
{
	uint32_t base = pci_bar0(&d->pci);
	int rc;

	if (d->bar_registered && base == d->bar_base)
		return;
	d->bar_base = base;
	rc = qside_bar_move(&d->bar_io, base, d->bar0_size, d->range, true);
	d->bar_registered = rc == 0;
	if (rc < 0)
		vfu_log(d, "cannot place BAR 0 at 0x%x: %s", base, strerror(-rc));
}

static void dispatch(struct vfu_dev *d);

/* The command held while an access was in flight runs now (from the loop). */
static void held_run(void *opaque)
{
	struct vfu_dev *d = opaque;

	if (d->fd < 0 || !d->held || d->busy)
		return;
	d->held = false;
	dispatch(d);
	if (d->fd < 0)
		return;
	qside_close_fds(d->rx_fds, &d->rx_nfds); /* fds the handler did not take */
	rx_reset(d);
	event_mod(d->fd, EPOLLIN); /* level-triggered: what waits in the socket is read next */
}

/* finish()'s reply. */
static void finish_reply(struct vfu_dev *d, struct io_request *req, bool rd, int rc)
{
	uint8_t out[VFU_REGION_RW_SIZE + 8];

	if (d->fd < 0)
		return;
	if (d->req_cfg) {
		uint32_t n = d->req_count;

		if (rd)
			memcpy(d->pci.cfg + d->data_off, req->reqs.mmio.data, req->reqs.mmio.size);
		vfu_region_rw_encode(out, d->req_offset, d->req_region, n);
		if (rd)
			memcpy(out + VFU_REGION_RW_SIZE, d->pci.cfg + d->req_offset, n);
		send_reply(d, &d->req_hdr, 0, out, VFU_REGION_RW_SIZE + (rd ? n : 0));
		return;
	}
	if (d->dead) {
		/* The model went away while this access waited for it. */
		reply_dead(d, &d->req_hdr, d->req_offset, d->req_region, d->req_count, rd);
		return;
	}
	if (rc < 0) {
		reply_err(d, &d->req_hdr, EIO);
		return;
	}
	vfu_region_rw_encode(out, d->req_offset, d->req_region, d->req_count);
	if (rd)
		memcpy(out + VFU_REGION_RW_SIZE, req->reqs.mmio.data, d->req_count);
	send_reply(d, &d->req_hdr, 0, out, VFU_REGION_RW_SIZE + (rd ? d->req_count : 0));
}

/* The answer of the request that went to the client, then the command held meanwhile. */
static void finish(struct vfu_dev *d)
{
	struct io_request *req = &d->req;
	bool rd = req->reqs.mmio.direction == REQUEST_READ;
	int rc = emulate_mmio_post(&d->bar_io, req);

	d->busy = false;
	if (d->fd < 0) {
		listen_resume(d);
		return;
	}
	finish_reply(d, req, rd, rc);
	/* Deferred: a completion may hold the VM lock, which a held REGION
	 * access takes. */
	if (d->fd >= 0 && d->held && event_defer(held_run, d) < 0)
		conn_close(d, "out of memory");
}

static void req_done(struct io_request *req, void *opaque)
{
	(void)req;
	finish(opaque);
}

/*
 * A guest access of BAR 0 at guest-physical addr through the ioreq layer,
 * as a vCPU would; the reply goes out when it completes. The socket is not
 * read meanwhile (one request at a time, in order).
 */
static void start_access(struct vfu_dev *d, bool write, uint64_t addr, const uint8_t *data,
			 unsigned size)
{
	struct io_request *req = &d->req;

	qside_req_init(req, write, addr, data, size, req_done, d);
	if (d->s->q.trace)
		vfu_log(d, "%s 0x%llx size %u", write ? "write" : "read", (unsigned long long)addr,
			size);
	d->busy = true;
	if (qside_req_run(d->s->q.v, &d->bar_io, req) != IOREQ_PENDING)
		finish(d);
}

static uint64_t region_size(const struct vfu_dev *d, uint32_t region)
{
	switch (region) {
	case VFU_PCI_BAR0_REGION:
		return d->bar0_size;
	case VFU_PCI_BAR1_REGION:
		return d->msix ? PCI_MSIX_BAR_SIZE : 0; /* the MSI-X table and PBA */
	case VFU_PCI_CONFIG_REGION:
		return PCI_CFG_SIZE;
	default:
		return 0;
	}
}

static void cfg_write(struct vfu_dev *d, uint32_t off, const uint8_t *data, uint32_t count)
{
	if (count == 1 || count == 2 || count == 4) {
		uint32_t v = 0;

		for (unsigned i = count; i-- > 0;)
			v = v << 8 | data[i];
		pci_cfg_write(&d->pci, off, v, count);
	} else {
		for (uint32_t i = 0; i < count; i++)
			pci_cfg_write(&d->pci, off + i, data[i], 1);
	}
	bar_update(d);
	vfu_irq_update(d); /* INTx disable, MSI-X enable and function mask */
}

static void handle_region(struct vfu_dev *d, const struct vfu_hdr *h, bool write)
{
	const uint8_t *p = d->rx + VFU_HDR_SIZE;
	uint8_t out[VFU_REGION_RW_SIZE + VFU_MAX_XFER];
	struct vfu_region_rw r;
	char why[160];
	uint64_t size;
	uint32_t woff;
	unsigned alen, doff;

	if (vfu_region_rw_decode(p, h->size - VFU_HDR_SIZE, write, &r, why, sizeof(why)) < 0) {
		malformed(d, "%s", why);
		return;
	}
	size = region_size(d, r.region);
	if (r.count == 0 || r.count > VFU_MAX_XFER || r.offset >= size ||
	    r.count > size - r.offset) {
		vfu_log(d, "%s region %u offset 0x%llx count %u refused (region size 0x%llx)",
			write ? "REGION_WRITE" : "REGION_READ", r.region,
			(unsigned long long)r.offset, r.count, (unsigned long long)size);
		reply_err(d, h, EINVAL);
		return;
	}
	vfu_region_rw_encode(out, r.offset, r.region, r.count);
	switch (r.region) {
	case VFU_PCI_CONFIG_REGION:
		if (write)
			d->cfg_writes++;
		else
			d->cfg_reads++;
		if (write)
			cfg_write(d, (uint32_t)r.offset, r.data, r.count);
		if (pci_cfg_window(&d->pci, (uint32_t)r.offset, r.count, &woff, &alen, &doff) &&
		    !d->dead) {
			/* The virtio PCI cfg access window: a BAR 0 access through the client. */
			uint8_t data[4];

			d->req_hdr = *h;
			d->req_offset = r.offset;
			d->req_region = r.region;
			d->req_count = r.count;
			d->req_cfg = true;
			d->data_off = doff;
			memcpy(data, d->pci.cfg + doff, alen);
			start_access(d, write, (uint64_t)d->bar_base + woff, data, alen);
			return;
		}
		if (write) {
			send_reply(d, h, 0, out, VFU_REGION_RW_SIZE);
		} else {
			memcpy(out + VFU_REGION_RW_SIZE, d->pci.cfg + r.offset, r.count);
			send_reply(d, h, 0, out, VFU_REGION_RW_SIZE + r.count);
		}
		return;
	case VFU_PCI_BAR1_REGION:
		if (write) {
			memcpy(out + VFU_REGION_RW_SIZE, r.data, r.count);
			vfu_msix_access(d, true, r.offset, out + VFU_REGION_RW_SIZE, r.count);
			send_reply(d, h, 0, out, VFU_REGION_RW_SIZE);
		} else {
			vfu_msix_access(d, false, r.offset, out + VFU_REGION_RW_SIZE, r.count);
			send_reply(d, h, 0, out, VFU_REGION_RW_SIZE + r.count);
		}
		return;
	default: /* BAR 0 */
		break;
	}
	if (write)
		d->bar_writes++;
	else
		d->bar_reads++;
	if (r.count != 1 && r.count != 2 && r.count != 4 && r.count != 8) {
		vfu_log(d, "BAR 0 %s of %u bytes refused (1, 2, 4 or 8)", write ? "write" : "read",
			r.count);
		d->bar_io.stats.bus_errors++;
		reply_err(d, h, EINVAL);
		return;
	}
	if (d->dead) {
		reply_dead(d, h, r.offset, r.region, r.count, !write);
		return;
	}
	d->req_hdr = *h;
	d->req_offset = r.offset;
	d->req_region = r.region;
	d->req_count = r.count;
	d->req_cfg = false;
	start_access(d, write, (uint64_t)d->bar_base + r.offset, r.data, r.count);
}

static void handle_version(struct vfu_dev *d, const struct vfu_hdr *h)
{
	struct vfu_version v;
	uint8_t out[512];
	char why[160] = "";
	size_t n;

	if (d->negotiated) {
		vfu_log(d, "VERSION again on a negotiated connection refused");
		reply_err(d, h, EINVAL);
		return;
	}
	if (vfu_version_decode(d->rx + VFU_HDR_SIZE, h->size - VFU_HDR_SIZE, &v, why, sizeof(why)) <
		0 ||
	    v.major != VFU_VERSION_MAJOR) {
		char msg[240];

		if (why[0] == '\0')
			snprintf(why, sizeof(why), "version %u.%u (this server speaks %u.%u)",
				 v.major, v.minor, VFU_VERSION_MAJOR, VFU_VERSION_MINOR);
		reply_err(d, h, v.major != VFU_VERSION_MAJOR ? ENOTSUP : EINVAL);
		snprintf(msg, sizeof(msg), "VERSION refused: %s", why);
		conn_close(d, msg);
		return;
	}
	n = vfu_version_encode(out, sizeof(out), VFU_VERSION_MAJOR,
			       v.minor < VFU_VERSION_MINOR ? v.minor : VFU_VERSION_MINOR,
			       VFU_MAX_FDS, VFU_MAX_XFER, VFU_MAX_DMA);
	d->negotiated = true;
	if (d->s->q.trace)
		vfu_log(d, "VERSION %u.%u%s negotiated", v.major, v.minor,
			v.has_json ? " with capabilities" : "");
	send_reply(d, h, 0, out, n);
}

static void handle_reset(struct vfu_dev *d, const struct vfu_hdr *h)
{
	d->resets++;
	if (d->s->q.trace)
		vfu_log(d, "DEVICE_RESET");
	if (!d->dead) /* a dead instance's range may have a new client already */
		vmmio_reset_range(d->s->q.v, d->g);
	pci_dev_reset(&d->pci);
	pci_set_intx_status(&d->pci, d->dead ? false : d->lines[0]);
	bar_update(d);
	vfu_irq_reset(d, true);
	send_reply(d, h, 0, NULL, 0);
}

/* The payload size a command must have: exact (min == max) or a range. */
static bool size_ok(unsigned cmd, size_t len)
{
	switch (cmd) {
	case VFU_CMD_VERSION:
		return len >= VFU_VERSION_FIXED;
	case VFU_CMD_DMA_MAP:
		return len == VFU_DMA_MAP_SIZE;
	case VFU_CMD_DMA_UNMAP:
		return len == VFU_DMA_UNMAP_SIZE;
	case VFU_CMD_DEVICE_GET_INFO:
		return len == VFU_DEV_INFO_SIZE;
	case VFU_CMD_DEVICE_GET_REGION_INFO:
		return len == VFU_REGION_INFO_SIZE;
	case VFU_CMD_DEVICE_GET_IRQ_INFO:
		return len == VFU_IRQ_INFO_SIZE;
	case VFU_CMD_DEVICE_SET_IRQS:
		return len >= VFU_SET_IRQS_SIZE;
	case VFU_CMD_REGION_READ:
		return len == VFU_REGION_RW_SIZE;
	case VFU_CMD_REGION_WRITE:
		return len >= VFU_REGION_RW_SIZE;
	case VFU_CMD_DEVICE_RESET:
		return len == 0;
	default:
		return true; /* refused with ENOTSUP whatever its size */
	}
}

/* Check a whole message against its command, then run it. */
static void dispatch(struct vfu_dev *d)
{
	struct vfu_hdr h;
	const uint8_t *p = d->rx + VFU_HDR_SIZE;
	size_t len;
	unsigned max_fds = 0;
	char why[160] = "";
	int rc;

	vfu_hdr_decode(d->rx, &h);
	len = h.size - VFU_HDR_SIZE;
	if (h.cmd == 0 || h.cmd >= VFU_CMD_MAX) {
		malformed(d, "unknown command %u", h.cmd);
		return;
	}
	if (!d->negotiated && h.cmd != VFU_CMD_VERSION) {
		malformed(d, "%s before VERSION", vfu_cmd_name(h.cmd));
		return;
	}
	if (!size_ok(h.cmd, len)) {
		malformed(d, "%s with a payload of %zu bytes", vfu_cmd_name(h.cmd), len);
		return;
	}
	if (h.cmd == VFU_CMD_DMA_MAP)
		max_fds = 1;
	else if (h.cmd == VFU_CMD_DEVICE_SET_IRQS)
		max_fds = VFU_MAX_FDS;
	if (d->rx_fd_overflow || d->rx_nfds > max_fds) {
		malformed(d, "%s with %s%u fd(s) (at most %u)", vfu_cmd_name(h.cmd),
			  d->rx_fd_overflow ? "more than " : "", d->rx_nfds, max_fds);
		return;
	}
	switch (h.cmd) {
	case VFU_CMD_VERSION:
		handle_version(d, &h);
		break;
	case VFU_CMD_DMA_MAP: {
		struct vfu_dma_map m;
		int fd = d->rx_nfds ? d->rx_fds[0] : -1;

		if (vfu_dma_map_decode(p, len, &m, why, sizeof(why)) < 0) {
			vfu_log(d, "%s", why);
			reply_err(d, &h, EINVAL);
			break;
		}
		d->rx_nfds = 0; /* vfu_dma_map() takes the fd */
		rc = vfu_dma_map(d, &m, fd);
		if (rc < 0)
			reply_err(d, &h, rc);
		else
			send_reply(d, &h, 0, NULL, 0);
		break;
	}
	case VFU_CMD_DMA_UNMAP: {
		struct vfu_dma_unmap u;

		if (vfu_dma_unmap_decode(p, len, &u, why, sizeof(why)) < 0) {
			vfu_log(d, "%s", why);
			reply_err(d, &h, EINVAL);
			break;
		}
		rc = vfu_dma_unmap(d, &u);
		if (rc < 0)
			reply_err(d, &h, rc);
		else
			send_reply(d, &h, 0, p, len);
		break;
	}
	case VFU_CMD_DEVICE_GET_INFO: {
		uint32_t w[4];
		uint8_t out[VFU_DEV_INFO_SIZE];

		vfu_words_decode(p, len, w, 4);
		if (w[0] < VFU_DEV_INFO_SIZE) {
			vfu_log(d, "DEVICE_GET_INFO argsz %u refused", w[0]);
			reply_err(d, &h, EINVAL);
			break;
		}
		w[0] = VFU_DEV_INFO_SIZE;
		w[1] = VFU_DEVICE_FLAGS_PCI | VFU_DEVICE_FLAGS_RESET;
		w[2] = VFU_PCI_NUM_REGIONS;
		w[3] = VFU_PCI_NUM_IRQS;
		vfu_words_encode(out, w, 4);
		send_reply(d, &h, 0, out, sizeof(out));
		break;
	}
	case VFU_CMD_DEVICE_GET_REGION_INFO: {
		struct vfu_region_info ri;
		uint8_t out[VFU_REGION_INFO_SIZE];

		vfu_region_info_decode(p, len, &ri);
		if (ri.argsz < VFU_REGION_INFO_SIZE || ri.index >= VFU_PCI_NUM_REGIONS) {
			vfu_log(d, "DEVICE_GET_REGION_INFO index %u argsz %u refused", ri.index,
				ri.argsz);
			reply_err(d, &h, EINVAL);
			break;
		}
		ri.argsz = VFU_REGION_INFO_SIZE;
		ri.cap_offset = 0;
		ri.offset = 0;
		ri.size = region_size(d, ri.index);
		ri.flags = ri.size ? VFU_REGION_FLAG_READ | VFU_REGION_FLAG_WRITE : 0;
		vfu_region_info_encode(out, &ri);
		send_reply(d, &h, 0, out, sizeof(out));
		break;
	}
	case VFU_CMD_DEVICE_GET_IRQ_INFO: {
		uint32_t w[4];
		uint8_t out[VFU_IRQ_INFO_SIZE];

		vfu_words_decode(p, len, w, 4);
		if (w[0] < VFU_IRQ_INFO_SIZE || vfu_irq_info(d, w[2], &w[1], &w[3]) < 0) {
			vfu_log(d, "DEVICE_GET_IRQ_INFO index %u argsz %u refused", w[2], w[0]);
			reply_err(d, &h, EINVAL);
			break;
		}
		w[0] = VFU_IRQ_INFO_SIZE;
		vfu_words_encode(out, w, 4);
		send_reply(d, &h, 0, out, sizeof(out));
		break;
	}
	case VFU_CMD_DEVICE_SET_IRQS: {
		struct vfu_set_irqs s;

		if (vfu_set_irqs_decode(p, len, &s, why, sizeof(why)) < 0) {
			vfu_log(d, "%s", why);
			reply_err(d, &h, EINVAL);
			break;
		}
		rc = vfu_set_irqs(d, &s, d->rx_fds, d->rx_nfds);
		if (rc < 0) {
			vfu_log(d, "SET_IRQS index %u start %u count %u flags 0x%x refused: %s",
				s.index, s.start, s.count, s.flags, strerror(-rc));
			reply_err(d, &h, rc);
		} else {
			send_reply(d, &h, 0, NULL, 0);
		}
		break;
	}
	case VFU_CMD_REGION_READ:
	case VFU_CMD_REGION_WRITE:
		handle_region(d, &h, h.cmd == VFU_CMD_REGION_WRITE);
		break;
	case VFU_CMD_DEVICE_RESET:
		handle_reset(d, &h);
		break;
	default:
		vfu_log(d, "%s is not supported", vfu_cmd_name(h.cmd));
		reply_err(d, &h, ENOTSUP);
		break;
	}
}

/*
 * A complete message in rx: a reply (to our DMA_READ/DMA_WRITE) is taken at
 * once; a command runs, or, while a REGION access is at the client, is held
 * (the socket is not read until it ran). Returns false when reading stops.
 */
static bool rx_message(struct vfu_dev *d)
{
	struct vfu_hdr h;

	vfu_hdr_decode(d->rx, &h);
	if ((h.flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_REPLY) {
		char why[200] = "";

		if (d->rx_nfds || d->rx_fd_overflow) {
			malformed(d, "a %s reply with fds", vfu_cmd_name(h.cmd));
			return false;
		}
		if (vfu_dma_reply(d, &h, d->rx + VFU_HDR_SIZE, h.size - VFU_HDR_SIZE, why,
				  sizeof(why)) < 0) {
			malformed(d, "%s", why);
			return false;
		}
		rx_reset(d);
		return true;
	}
	if (d->busy) {
		/* Order: commands run one at a time; replies to our DMA may pass. */
		d->held = true;
		event_mod(d->fd, 0);
		return false;
	}
	dispatch(d);
	if (d->fd < 0)
		return false;
	close_rx_fds(d); /* fds a handler did not take */
	rx_reset(d);
	return true;
}

/*
 * The connection is readable: read at most one message's bytes per
 * recvmsg(). Also while a REGION access waits for the CoreIO client: the
 * replies to our DMA_READ/DMA_WRITE, which that client's DMA may need,
 * must get through.
 */
static void conn_event(int fd, uint32_t events, void *opaque)
{
	struct vfu_dev *d = opaque;

	(void)events;
	for (int round = 0; round < 16 && d->fd >= 0 && !d->held; round++) {
		size_t want =
		    d->rx_have < VFU_HDR_SIZE ? VFU_HDR_SIZE - d->rx_have : d->rx_size - d->rx_have;
		/* At most one message's bytes, and the fds that come with them. */
		ssize_t n = want ? qside_recv(fd, d->rx + d->rx_have, want, d->rx_fds, &d->rx_nfds,
					      VFU_MAX_FDS, &d->rx_fd_overflow)
				 : 0;

		if (n == -EINTR)
			continue;
		if (n == -EAGAIN || n == -EWOULDBLOCK)
			return;
		if (n < 0) {
			char why[128];

			snprintf(why, sizeof(why), "receive failed: %s", strerror((int)-n));
			conn_close(d, why);
			return;
		}
		if (n == 0 && want) {
			conn_close(d, d->rx_have ? "the client closed the socket inside a message"
						 : "the client closed the socket");
			return;
		}
		d->rx_have += (size_t)n;
		if (d->rx_have == VFU_HDR_SIZE && d->rx_size == 0) { /* the header: check it */
			struct vfu_hdr h;

			if (vfu_hdr_decode(d->rx, &h) < 0) {
				malformed(d, "message size %u is below the header's %u", h.size,
					  VFU_HDR_SIZE);
				return;
			}
			if (h.size > VFU_MSG_MAX) {
				malformed(d, "%s of %u bytes (at most %u)", vfu_cmd_name(h.cmd),
					  h.size, VFU_MSG_MAX);
				return;
			}
			if ((h.flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_REPLY) {
				if (h.cmd != VFU_CMD_DMA_READ && h.cmd != VFU_CMD_DMA_WRITE) {
					malformed(d,
						  "a %s reply, not a command (this server "
						  "sends only DMA_READ/DMA_WRITE)",
						  vfu_cmd_name(h.cmd));
					return;
				}
			} else if ((h.flags & VFU_F_TYPE_MASK) != VFU_F_TYPE_CMD ||
				   (h.flags & VFU_F_ERROR)) {
				malformed(d, "%s with flags 0x%x (neither a command nor a reply)",
					  vfu_cmd_name(h.cmd), h.flags);
				return;
			}
			d->rx_size = h.size;
		}
		if (d->rx_size && d->rx_have == d->rx_size && !rx_message(d))
			return;
	}
}

/* Revive a dead hot-pluggable device for a new connection once a client holds the range. */
static void instance_start(struct vfu_dev *d)
{
	if (!d->dead || !d->range->owner)
		return;
	d->dead = false;
	d->instance++;
	pci_dev_reset(&d->pci);
	pci_set_intx_status(&d->pci, d->lines[0]);
	bar_update(d);
	vfu_irq_reset(d, false);
	vfu_log(d, "serving instance %u (hot-plugged)", d->instance);
}

static void on_accept(int lfd, uint32_t events, void *opaque)
{
	struct vfu_dev *d = opaque;
	int fd, err;

	(void)events;
	if (d->fd >= 0 || d->busy) {
		event_mod(lfd, 0); /* the next connection waits for this one */
		return;
	}
	fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			vfu_log(d, "accept failed: %s", strerror(errno));
		return;
	}
	err = event_add(fd, EPOLLIN, conn_event, d);
	if (err < 0) {
		vfu_log(d, "cannot watch a new connection: %s", strerror(-err));
		close(fd);
		return;
	}
	d->fd = fd;
	d->negotiated = false;
	d->connections++;
	rx_reset(d);
	event_mod(lfd, 0);
	instance_start(d);
	vfu_log(d, "client connected on %s (connection %llu%s)", d->path,
		(unsigned long long)d->connections, d->dead ? ", the device is dead" : "");
}

/*
 * Range g lost its client (VM lock held). A hot-pluggable device dies with
 * it: BAR 0 accesses get EIO replies until it is unplugged; the
 * orchestrator is told ("dead G").
 */
static void on_release(unsigned g, void *opaque)
{
	struct vfu *s = opaque;
	struct vfu_dev *d = g < s->ndevs ? &s->devs[g] : NULL;

	qside_ctl_send(&s->q.ctl, "released %u", g);
	if (!d || !d->hotplug || d->dead)
		return;
	d->dead = true;
	pci_set_intx_status(&d->pci, false);
	vfu_log(d,
		"its client went away: instance %u is dead (BAR 0 reads 0, writes dropped) "
		"until a new connection after a new claim",
		d->instance);
	qside_ctl_send(&s->q.ctl, "dead %u", g);
}

/* A message from the orchestrator: coreio-vm ends when the socket closes. */
static void ctl_event(int fd, uint32_t events, void *opaque)
{
	struct vfu *s = opaque;
	char msg[QSIDE_CTL_MSG_MAX + 1];
	int fds[QSIDE_CTL_MAX_FDS];
	unsigned nfds;
	bool trunc;

	(void)fd;
	(void)events;
	if (qside_ctl_recv(&s->q.ctl, msg, fds, &nfds, &trunc) <= 0)
		return;
	qside_close_fds(fds, &nfds);
	/* vfio-user devices come back on their own socket path: no "device G" here. */
	fprintf(stderr, "coreio-vm: control: message '%.40s' ignored (vfio-user mode)\n", msg);
	qside_ctl_send(&s->q.ctl, "refused ? unknown message");
}

/* Create, bind and listen on the device's UNIX socket path (a stale socket file is replaced). */
static int listen_on(struct vfu_dev *d)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, err;

	if (strlen(d->path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, d->path, strlen(d->path) + 1);
	if (lstat(d->path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			fprintf(stderr,
				"coreio-vm: --vfio-user-socket %s exists and is not a socket\n",
				d->path);
			return -EEXIST;
		}
		unlink(d->path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
		err = -errno;
		fprintf(stderr, "coreio-vm: --vfio-user-socket %s: %s\n", d->path, strerror(errno));
		close(fd);
		return err;
	}
	err = event_add(fd, EPOLLIN, on_accept, d);
	if (err < 0) {
		close(fd);
		unlink(d->path);
		return err;
	}
	d->listen_fd = fd;
	return 0;
}

int vfu_init(struct vfu *s, const struct vm_config *cfg, struct vmmio *v, struct irq_chip *irq)
{
	int err;

	memset(s, 0, sizeof(*s));
	s->dma_timer_fd = -1;
	err = qside_init(&s->q, cfg, v, irq, ctl_event, s);
	if (err < 0)
		return err;
	err = vfu_dma_init(s);
	if (err < 0)
		return err;
	for (unsigned i = 0; i < cfg->nranges && i < CONFIG_MPQEMU_MAX_DEVS; i++) {
		struct vfu_dev *d = &s->devs[i];

		d->s = s;
		d->g = i;
		d->fd = d->listen_fd = -1;
		d->intx_fd = d->intx_unmask_fd = d->err_fd = -1;
		for (unsigned k = 0; k < VFU_NVEC; k++)
			d->msix_fd[k] = -1;
		d->range = &v->ranges[i];
		d->bar0_size = cfg->ranges[i].size;
		d->hotplug = cfg->ranges[i].hotplug;
		d->instance = 1;
		snprintf(d->path, sizeof(d->path), "%s", cfg->vfu_sockets[i]);
		pci_dev_init(&d->pci, &cfg->ranges[i]);
		d->msix = cfg->ranges[i].msix;
		if (d->msix)
			pci_dev_add_msix(&d->pci, VFU_NVEC);
		else if (d->hotplug && cfg->ranges[i].msix_mode == CONFIG_MSIX_AUTO)
			vfu_log(d, "hotplug=on: INTx only, no MSI-X (QEMU 11.1.3 aborts when it "
				   "unplugs a vfio-user device with MSI-X; msix=on overrides)");
		ioreq_init(&d->bar_io, NULL);
		bar_update(d);
		s->ndevs++;
	}
	for (unsigned i = 0; i < s->ndevs; i++) {
		struct vfu_dev *d = &s->devs[i];

		err = listen_on(d);

		if (err < 0) {
			fprintf(stderr, "coreio-vm: vfio-user device %u: cannot listen on %s: %s\n",
				i, d->path, strerror(-err));
			return err;
		}
		vfu_log(d, "serving %04x:%04x (class 0x%06x%s%s) on %s; BAR 0 size 0x%llx, %s",
			cfg->ranges[i].pci_vendor, cfg->ranges[i].pci_device,
			cfg->ranges[i].pci_class, cfg->ranges[i].virtio ? ", virtio" : "",
			d->hotplug ? ", hotplug" : "", d->path,
			(unsigned long long)cfg->ranges[i].size,
			d->msix ? "BAR 1 MSI-X (8 vectors), INTx" : "INTx");
	}
	/* Dead devices are marked with or without an orchestrator. */
	qside_hook(&s->q, &(struct qside_hooks){.irq = vfu_irq_backend,
						.dma_ptr = vfu_dma_ptr,
						.dma_async = vfu_dma_async,
						.release = on_release,
						.claims_always = true,
						.opaque = s});
	return 0;
}

void vfu_stop(struct vfu *s)
{
	qside_stop(&s->q);
	/* No new piece comes; those waiting fail now, while the service runs. */
	if (s->q.v)
		vmmio_set_dma_async(s->q.v, NULL, NULL);
	vfu_dma_stop(s);
}

void vfu_exit(struct vfu *s)
{
	qside_exit(&s->q);
	for (unsigned i = 0; i < s->ndevs; i++) {
		struct vfu_dev *d = &s->devs[i];

		if (d->fd >= 0) {
			close_rx_fds(d);
			qside_sock_close(&d->fd);
		}
		if (d->listen_fd >= 0) {
			event_del(d->listen_fd);
			close(d->listen_fd);
			unlink(d->path);
			d->listen_fd = -1;
		}
		vfu_irq_reset(d, false);
		for (unsigned w = 0; w < d->ndma; w++) {
			qside_unmap(&d->dma[w].m);
			if (d->dma[w].fd >= 0)
				close(d->dma[w].fd);
		}
		d->ndma = 0;
		vfu_log(d,
			"connections=%llu cfg_reads=%llu cfg_writes=%llu bar_reads=%llu "
			"bar_writes=%llu msix_accesses=%llu bus_errors=%llu intx_signals=%llu "
			"msix_signals=%llu resets=%llu instances=%u dead_accesses=%llu "
			"errors=%llu dma_maps=%llu dma_msgs=%llu dma_failed=%llu",
			(unsigned long long)d->connections, (unsigned long long)d->cfg_reads,
			(unsigned long long)d->cfg_writes, (unsigned long long)d->bar_reads,
			(unsigned long long)d->bar_writes, (unsigned long long)d->msix_accesses,
			(unsigned long long)d->bar_io.stats.bus_errors,
			(unsigned long long)d->intx_signals, (unsigned long long)d->msix_signals,
			(unsigned long long)d->resets, d->instance,
			(unsigned long long)d->dead_accesses, (unsigned long long)d->errors,
			(unsigned long long)d->dma_maps, (unsigned long long)d->dma_msgs,
			(unsigned long long)d->dma_failed);
		ioreq_exit(&d->bar_io);
	}
	s->ndevs = 0;
}
