/* The virtio device core: features, the status state machine, queues, configuration space,
 * reset, interrupts (ISR and line 0, or the transport's vectors) and the register-block engine
 * both transports (virtio_pci.c, virtio_mmio.c) describe their registers with. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "virtio.h"
#include "virtio_transport.h"

void vio_put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

uint64_t vio_get_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* The flags of a blocking DMA: see serve_in_dma in virtio.h. */
static unsigned ctx_dma_flags(const struct vio_dev *d)
{
	return d->serve_in_dma ? COREIO_DMA_SERVE : 0;
}

/*
 * The callbacks a serving DMA runs must not reset under the caller, be it
 * vio_dev_poll() or a model's own fd work (virtio-console's receive):
 * polling is set for the call's duration.
 */
static int ctx_dma_read(void *opaque, uint64_t gpa, void *buf, size_t len)
{
	struct vio_dev *d = opaque;
	bool was = d->polling;
	int rc;

	d->polling = true;
	rc = coreio_ctx_dma_read(d->ctx, 0, 0, gpa, len, buf, ctx_dma_flags(d), NULL, NULL);
	d->polling = was;
	return rc;
}

/* In order, one round trip (coreio_ctx_dma_readv()); polling is set as for ctx_dma_read. */
static int ctx_dma_readv(void *opaque, const struct vio_dma_seg *seg, unsigned n)
{
	struct vio_dev *d = opaque;
	struct coreio_dma_seg cs[VIO_READV_MAX];
	bool was = d->polling;
	int rc;

	if (n == 0 || n > VIO_READV_MAX)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++)
		cs[i] = (struct coreio_dma_seg){seg[i].gpa, seg[i].len, seg[i].buf};
	d->polling = true;
	rc = coreio_ctx_dma_readv(d->ctx, 0, 0, cs, n, ctx_dma_flags(d));
	d->polling = was;
	return rc;
}

static int ctx_dma_write(void *opaque, uint64_t gpa, const void *buf, size_t len)
{
	struct vio_dev *d = opaque;
	bool was = d->polling;
	int rc;

	d->polling = true;
	/* The library only reads from buf; its prototype is not const. */
	rc = coreio_ctx_dma_write(d->ctx, 0, 0, gpa, len, (void *)(uintptr_t)buf, ctx_dma_flags(d),
				  NULL, NULL);
	d->polling = was;
	return rc;
}

/*
 * A posted write: the library keeps pointing at buf until done runs (from
 * coreio_ctx_processfds() or the disconnect), and sends the pieces of all
 * DMA, blocking or not, in order on its one DMA connection, which the VM
 * applies in order. With shared memory the library copies at once (or
 * falls back to the socket for a range outside its map), so its writes
 * would not stay in issue order: blocking writes are as cheap there.
 */
static int ctx_dma_write_post(void *opaque, uint64_t gpa, const void *buf, size_t len,
			      void (*done)(void *arg, int err), void *arg)
{
	struct vio_dev *d = opaque;
	int caps = coreio_ctx_caps(d->ctx);

	if (caps < 0)
		return caps;
	if (caps & COREIO_CAP_SHM_BIT)
		return -EOPNOTSUPP;
	return coreio_ctx_dma_write(d->ctx, 0, 0, gpa, len, (void *)(uintptr_t)buf, 0, done, arg);
}

/*
 * File I/O straight to and from shared guest memory. Not DMA on the socket:
 * no callback is served meanwhile, so polling need not be set.
 */
static ssize_t ctx_dma_read_to_fd(void *opaque, uint64_t gpa, size_t len, int fd, uint64_t foff)
{
	struct vio_dev *d = opaque;

	return coreio_ctx_dma_read_to_fd(d->ctx, 0, gpa, len, fd, foff);
}

static ssize_t ctx_dma_write_from_fd(void *opaque, uint64_t gpa, size_t len, int fd, uint64_t foff)
{
	struct vio_dev *d = opaque;

	return coreio_ctx_dma_write_from_fd(d->ctx, 0, gpa, len, fd, foff);
}

static int ctx_irq_set(void *opaque, unsigned level)
{
	struct vio_dev *d = opaque;

	return coreio_ctx_irq_update(d->ctx, d->rid, 0, level);
}

static int ctx_irq_line(void *opaque, unsigned line, unsigned level)
{
	struct vio_dev *d = opaque;

	return coreio_ctx_irq_update(d->ctx, d->rid, line, level);
}

static const struct vio_host_ops ctx_host_ops = {
    .dma_read = ctx_dma_read,
    .dma_readv = ctx_dma_readv,
    .dma_write = ctx_dma_write,
    .irq_set = ctx_irq_set,
    .dma_write_post = ctx_dma_write_post,
    .irq_line = ctx_irq_line,
    .dma_read_to_fd = ctx_dma_read_to_fd,
    .dma_write_from_fd = ctx_dma_write_from_fd,
};

bool vio_dev_fd_direct(const struct vio_dev *d)
{
	int caps;

	if (!d->host || !d->host->dma_read_to_fd || !d->host->dma_write_from_fd)
		return false;
	if (d->host != &ctx_host_ops)
		return true;
	caps = coreio_ctx_caps(d->ctx);
	return caps > 0 && (caps & COREIO_CAP_SHM_BIT);
}

/* Indexed by enum vio_transport. */
static const struct vio_transport_ops *const transports[] = {
    [VIO_TRANSPORT_PCI] = &vio_pci_transport,
    [VIO_TRANSPORT_MMIO] = &vio_mmio_transport,
};

#define N_TRANSPORTS (sizeof(transports) / sizeof(transports[0]))

const struct vio_transport_ops *vio_transport_of(const struct vio_dev *d)
{
	if ((unsigned)d->transport < N_TRANSPORTS && transports[d->transport])
		return transports[d->transport];
	return &vio_mmio_transport;
}

/* Every transport's state in d to its reset values (the transport may still change). */
static void transports_reset(struct vio_dev *d)
{
	for (size_t i = 0; i < N_TRANSPORTS; i++)
		if (transports[i] && transports[i]->reset)
			transports[i]->reset(d);
}

static bool is_pow2(unsigned v)
{
	return v && !(v & (v - 1));
}

int vio_dev_init(struct vio_dev *d, uint32_t device_id, uint64_t features, unsigned num_queues,
		 unsigned qsize_max, const struct vio_dev_ops *ops, void *priv)
{
	if (!d || !ops || !ops->queue_kick || num_queues == 0 || num_queues > VIO_MAX_QUEUES ||
	    !is_pow2(qsize_max) || qsize_max > VIO_QUEUE_SIZE_MAX)
		return -EINVAL;
	memset(d, 0, sizeof(*d));
	d->device_id = device_id;
	d->features = (features | VIO_BIT(VIO_F_VERSION_1)) &
		      ~(VIO_BIT(VIO_F_ACCESS_PLATFORM) | VIO_BIT(VIO_F_EVENT_IDX));
	d->num_queues = num_queues;
	for (unsigned i = 0; i < num_queues; i++) {
		d->q[i].size_max = (uint16_t)qsize_max;
		d->q[i].size = d->q[i].size_max;
	}
	d->ops = ops;
	d->priv = priv;
	transports_reset(d);
	return 0;
}

void vio_dev_set_event_idx(struct vio_dev *d, bool on)
{
	if (on)
		d->features |= VIO_BIT(VIO_F_EVENT_IDX);
	else
		d->features &= ~VIO_BIT(VIO_F_EVENT_IDX);
}

void vio_dev_set_ctx(struct vio_dev *d, coreio_ctx_t *ctx, unsigned rid)
{
	d->ctx = ctx;
	d->rid = rid;
	d->host = &ctx_host_ops;
	d->host_opaque = d;
	d->post_mode = 0;
	/* PCI drivers wait for status 0 after a reset (virtio 1.x, 4.1.4.3.2),
	 * which a reset left pending needs; virtio-mmio drivers may not. */
	d->serve_in_dma = d->transport == VIO_TRANSPORT_PCI;
}

void vio_dev_set_host(struct vio_dev *d, const struct vio_host_ops *host, void *opaque)
{
	d->host = host;
	d->host_opaque = opaque;
	d->post_mode = 0;
}

void vio_dev_set_log(struct vio_dev *d, void (*fn)(void *opaque, int level, const char *msg),
		     void *opaque)
{
	d->log = fn;
	d->log_opaque = opaque;
}

void vio_log(struct vio_dev *d, int level, const char *fmt, ...)
{
	char msg[VIO_LOG_MAX];
	va_list ap;

	if (!d->log)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	d->log(d->log_opaque, level, msg);
}

void vio_dev_irq_sync(struct vio_dev *d)
{
	int rc;

	if (!d->host || !d->host->irq_set)
		return;
	rc = d->host->irq_set(d->host_opaque, d->isr != 0);
	if (rc && d->verbose)
		vio_log(d, COREIO_LOG_WARNING, "virtio: irq update: %s", strerror(-rc));
}

void vio_dev_reset(struct vio_dev *d)
{
	d->status = 0;
	d->driver_features = 0;
	d->dev_feat_sel = 0;
	d->drv_feat_sel = 0;
	d->queue_sel = 0;
	d->kick_pending = 0;
	d->kick_all = false;
	/* Writes still in flight complete later; what waits on them is forgotten. */
	d->post_gen++;
	d->post_stalled = 0;
	d->irq_checks = 0; /* and every queue's notification state, below */
	d->dc_q = 0;
	for (unsigned i = 0; i < d->num_queues; i++) {
		struct vio_queue *vq = &d->q[i];
		uint16_t max = vq->size_max;

		memset(vq, 0, sizeof(*vq));
		vq->size_max = max;
		vq->size = max;
	}
	transports_reset(d);
	d->isr = 0;
	vio_dev_irq_sync(d);
	if (d->ops && d->ops->reset)
		d->ops->reset(d);
}

void vio_dev_request_reset(struct vio_dev *d)
{
	if (d->polling) {
		d->reset_pending = true;
		return;
	}
	vio_dev_reset(d);
}

/* The reset left pending (vio_dev_request_reset(), set_status()) happens now. */
static void pending_reset(struct vio_dev *d)
{
	if (!d->reset_pending)
		return;
	if (d->verbose)
		vio_log(d, COREIO_LOG_DEBUG, "virtio: reset (left pending until now)");
	/* As set_status(0): the posted writes are in guest memory first. The
	 * callbacks this DMA serves still see the reset pending. */
	d->polling = true;
	vio_posted_barrier(d);
	d->polling = false;
	d->reset_pending = false;
	vio_dev_reset(d);
}

int vio_dev_interrupt(struct vio_dev *d, uint8_t isr_bits)
{
	d->isr |= isr_bits;
	if (!d->host || !d->host->irq_set)
		return 0;
	return d->host->irq_set(d->host_opaque, d->isr != 0);
}

void vio_dev_isr_ack(struct vio_dev *d, uint8_t bits)
{
	d->isr &= (uint8_t)~bits;
	vio_dev_irq_sync(d);
}

/* Through the transport's vector for which, else the ISR way with isr_bit. */
static int notify_driver(struct vio_dev *d, unsigned which, uint8_t isr_bit)
{
	const struct vio_transport_ops *t = vio_transport_of(d);

	if (t->notify) {
		int rc = t->notify(d, which);

		if (rc)
			return rc < 0 ? rc : 0;
	}
	return vio_dev_interrupt(d, isr_bit);
}

int vio_dev_notify_queue(struct vio_dev *d, unsigned q)
{
	return notify_driver(d, q, VIO_ISR_QUEUE);
}

int vio_dev_notify_config(struct vio_dev *d)
{
	return notify_driver(d, VIO_NOTIFY_CONFIG, VIO_ISR_CONFIG);
}

void vio_dev_needs_reset(struct vio_dev *d, const char *why)
{
	d->stat_broken++;
	if (d->verbose || !(d->status & VIO_S_NEEDS_RESET))
		vio_log(d, COREIO_LOG_WARNING, "virtio: device needs reset: %s", why);
	if (d->status & VIO_S_NEEDS_RESET)
		return;
	d->status |= VIO_S_NEEDS_RESET;
	if (d->status & VIO_S_DRIVER_OK)
		vio_dev_notify_config(d);
}

bool vio_dev_running(const struct vio_dev *d)
{
	return (d->status & (VIO_S_DRIVER_OK | VIO_S_NEEDS_RESET | VIO_S_FAILED)) ==
	       VIO_S_DRIVER_OK;
}

void vio_dev_config_changed(struct vio_dev *d)
{
	d->config_gen++;
	if (d->status & VIO_S_DRIVER_OK)
		vio_dev_notify_config(d);
}

bool vio_dev_poll(struct vio_dev *d)
{
	uint32_t pending;
	bool any = false;

	pending_reset(d);
	if (!vio_dev_running(d)) {
		d->kick_pending = 0;
		d->kick_all = false;
		d->irq_checks = 0; /* a broken device's driver resets it */
		return false;
	}
	d->polling = true;
	/* Used entries published by completions since: their interrupts first. */
	vio_queue_irq_checks(d);
	pending = d->kick_pending;
	if (d->kick_all)
		pending = (1u << d->num_queues) - 1;
	d->kick_pending = 0;
	d->kick_all = false;
	for (unsigned q = 0; q < d->num_queues; q++) {
		if (!(pending & (1u << q)) || !d->q[q].enabled)
			continue;
		/* A queue callback may reset the device; stop when it no longer runs. */
		if (!vio_dev_running(d) || d->reset_pending)
			break;
		d->q[q].budget = 0;
		d->q[q].idx_read = false;
		d->kicking = q + 1;
		d->ops->queue_kick(d, q);
		d->kicking = 0;
		any = true;
	}
	/* ... then those the kicks published (one read each, see virtqueue.c). */
	vio_queue_irq_checks(d);
	d->polling = false;
	/* A reset asked for by a callback served meanwhile: the driver is waiting for it. */
	pending_reset(d);
	return any;
}

/* The status state machine (virtio 1.x, 2.1 and 3.1). */
static void set_status(struct vio_dev *d, uint8_t v)
{
	uint8_t old = d->status;
	uint8_t nv;

	if (v == 0) {
		if (d->serve_in_dma && (d->polling || d->post_head)) {
			/*
			 * Not here: a queue is being processed under this callback,
			 * or the barrier below would wait for DMA inside a callback,
			 * which a VM that holds a lock while it waits for our answer
			 * could not serve. vio_dev_poll() resets; status reads the
			 * old value until then.
			 */
			if (d->verbose && !d->reset_pending)
				vio_log(d, COREIO_LOG_DEBUG,
					"virtio: reset by the driver (pending)");
			d->reset_pending = true;
			return;
		}
		if (d->verbose)
			vio_log(d, COREIO_LOG_DEBUG, "virtio: reset by the driver");
		/*
		 * The driver waits for status 0 before it reuses the rings' memory:
		 * the writes posted so far must be in guest memory by then.
		 */
		vio_posted_barrier(d);
		vio_dev_reset(d);
		return;
	}
	nv = (uint8_t)((v & ~VIO_S_NEEDS_RESET) | (old & VIO_S_NEEDS_RESET));
	if ((nv & VIO_S_FEATURES_OK) && !(old & VIO_S_FEATURES_OK)) {
		bool ok = !(d->driver_features & ~d->features) &&
			  (d->driver_features & VIO_BIT(VIO_F_VERSION_1));

		if (!ok) {
			nv &= (uint8_t)~VIO_S_FEATURES_OK;
			if (d->verbose)
				vio_log(d, COREIO_LOG_INFO, "virtio: refused driver features %#llx",
					(unsigned long long)d->driver_features);
		} else if (d->verbose) {
			vio_log(d, COREIO_LOG_DEBUG, "virtio: driver features %#llx%s",
				(unsigned long long)d->driver_features,
				(d->driver_features & VIO_BIT(VIO_F_EVENT_IDX)) ? " (EVENT_IDX)"
										: "");
		}
	}
	if ((nv & VIO_S_DRIVER_OK) && !(nv & VIO_S_FEATURES_OK))
		nv &= (uint8_t)~VIO_S_DRIVER_OK;
	d->status = nv;
	if ((nv & VIO_S_DRIVER_OK) && !(old & VIO_S_DRIVER_OK))
		d->kick_all = true;
	if (d->verbose)
		vio_log(d, COREIO_LOG_DEBUG, "virtio: status %#x -> %#x", old, nv);
}

static void set_driver_features(struct vio_dev *d, uint32_t v)
{
	unsigned sh;

	if (d->drv_feat_sel > 1 || (d->status & VIO_S_FEATURES_OK))
		return;
	sh = 32 * d->drv_feat_sel;
	d->driver_features = (d->driver_features & ~(0xffffffffull << sh)) | ((uint64_t)v << sh);
}

static uint32_t device_features_word(const struct vio_dev *d)
{
	return d->dev_feat_sel > 1 ? 0 : (uint32_t)(d->features >> (32 * d->dev_feat_sel));
}

static uint32_t driver_features_word(const struct vio_dev *d)
{
	return d->drv_feat_sel > 1 ? 0 : (uint32_t)(d->driver_features >> (32 * d->drv_feat_sel));
}

static struct vio_queue *sel_queue(struct vio_dev *d)
{
	if (d->queue_sel >= d->num_queues || d->q[d->queue_sel].size_max == 0)
		return NULL;
	return &d->q[d->queue_sel];
}

/* Drop what vio_queue_pop() read ahead for vq: its ring entries and cached descriptors. */
static void queue_forget_reads(struct vio_dev *d, struct vio_queue *vq)
{
	vq->ring_n = 0;
	vq->idx_read = false;
	if (d->dc_q == (unsigned)(vq - d->q) + 1)
		d->dc_q = 0;
}

/* Enable the selected queue after checking its size and ring addresses. */
static void queue_enable(struct vio_dev *d, struct vio_queue *vq)
{
	uint64_t n;

	if (vq->enabled)
		return;
	n = vq->size;
	if (!is_pow2(vq->size) || vq->size > vq->size_max || (vq->desc & 15) || (vq->avail & 1) ||
	    (vq->used & 3) || vq->desc > UINT64_MAX - 16 * n ||
	    vq->avail > UINT64_MAX - (6 + 2 * n) || vq->used > UINT64_MAX - (6 + 8 * n)) {
		vio_dev_needs_reset(d, "queue enabled with a bad size or ring address");
		return;
	}
	vq->last_avail = 0;
	vq->avail_idx = 0;
	vq->used_idx = 0;
	vq->budget = 0;
	/* The notification state starts over with the rings. */
	vq->signalled_used = 0;
	vq->irq_check = false;
	vq->hint_valid = false;
	vq->hint_flags = 0;
	vq->hint_used_event = 0;
	vq->avail_event = 0;
	vq->ev_state = 0;
	d->irq_checks &= ~(1u << (unsigned)(vq - d->q));
	queue_forget_reads(d, vq);
	vq->enabled = true;
	if (d->verbose)
		vio_log(d, COREIO_LOG_DEBUG,
			"virtio: queue %u enabled: size %u desc %#llx driver %#llx device %#llx",
			d->queue_sel, vq->size, (unsigned long long)vq->desc,
			(unsigned long long)vq->avail, (unsigned long long)vq->used);
}

static void queue_ready(struct vio_dev *d, uint64_t v)
{
	struct vio_queue *vq = sel_queue(d);

	if (!vq)
		return;
	if (v & 1) {
		queue_enable(d, vq);
	} else {
		/* Not under a queue being processed (a driver must not do it anyway, 4.1.4.3.2). */
		if (d->polling && vq->enabled) {
			vio_log(
			    d, COREIO_LOG_WARNING,
			    "virtio: queue %u: disabling an enabled queue ignored while it runs",
			    d->queue_sel);
			return;
		}
		vq->enabled = false;
		queue_forget_reads(d, vq);
	}
}

static void queue_set_size(struct vio_dev *d, uint64_t v)
{
	struct vio_queue *vq = sel_queue(d);

	if (vq && !vq->enabled)
		vq->size = (uint16_t)v;
}

/* Set a ring address (0 desc, 1 driver/avail, 2 device/used) of the selected queue. */
static void queue_set_addr(struct vio_dev *d, int which, uint64_t v)
{
	struct vio_queue *vq = sel_queue(d);

	if (!vq || vq->enabled)
		return;
	if (which == 0)
		vq->desc = v;
	else if (which == 1)
		vq->avail = v;
	else
		vq->used = v;
}

void vio_dev_doorbell(struct vio_dev *d, uint64_t q)
{
	if (q < d->num_queues) {
		d->kick_pending |= 1u << q;
		if (d->verbose)
			vio_log(d, COREIO_LOG_DEBUG, "virtio: notify queue %u", (unsigned)q);
	}
}

uint8_t vio_dev_config_byte(const struct vio_dev *d, uint64_t off)
{
	return off < d->config_len ? d->config[off] : 0;
}

void vio_dev_config_write(struct vio_dev *d, uint64_t off, const uint8_t *in, size_t len)
{
	bool any = false;

	for (size_t i = 0; i < len; i++) {
		uint64_t o = off + i;

		if (o < d->config_len && o >= d->config_writable_off &&
		    o - d->config_writable_off < d->config_writable_len) {
			d->config[o] = in[i];
			any = true;
		}
	}
	if (any && d->ops->config_write)
		d->ops->config_write(d, (uint32_t)off, len);
}

/* --- The register-block engine. --- */

/* The value register r shows (before the VIO_REG_WO rule). */
static uint64_t reg_get(struct vio_dev *d, const struct vio_reg *r)
{
	const struct vio_transport_ops *t;
	struct vio_queue *vq = sel_queue(d);

	switch (r->field) {
	case VIO_R_CONST:
		return r->value;
	case VIO_R_DEVICE_ID:
		return d->device_id;
	case VIO_R_DEV_FEAT_SEL:
		return d->dev_feat_sel;
	case VIO_R_DEV_FEAT:
		return device_features_word(d);
	case VIO_R_DRV_FEAT_SEL:
		return d->drv_feat_sel;
	case VIO_R_DRV_FEAT:
		return driver_features_word(d);
	case VIO_R_NUM_QUEUES:
		return d->num_queues;
	case VIO_R_STATUS:
		return d->status;
	case VIO_R_CONFIG_GEN:
		return d->config_gen;
	case VIO_R_ISR:
		return d->isr;
	case VIO_R_QUEUE_SEL:
		return d->queue_sel;
	case VIO_R_Q_SIZE_MAX:
		return vq ? vq->size_max : 0;
	case VIO_R_Q_SIZE:
		return vq ? vq->size : 0;
	case VIO_R_Q_READY:
		return vq ? vq->enabled : 0;
	case VIO_R_Q_NOTIFY_OFF:
		return vq ? d->queue_sel : 0;
	case VIO_R_Q_DESC:
		return vq ? vq->desc : 0;
	case VIO_R_Q_DRIVER:
		return vq ? vq->avail : 0;
	case VIO_R_Q_DEVICE:
		return vq ? vq->used : 0;
	case VIO_R_TRANSPORT:
		t = vio_transport_of(d);
		return t->reg_get ? t->reg_get(d, r->value) : 0;
	default: /* ISR_ACK, QUEUE_NOTIFY: write-only */
		return 0;
	}
}

/* The driver wrote v to register r. */
static void reg_set(struct vio_dev *d, const struct vio_reg *r, uint64_t v)
{
	const struct vio_transport_ops *t;

	switch (r->field) {
	case VIO_R_DEV_FEAT_SEL:
		d->dev_feat_sel = (uint32_t)v;
		break;
	case VIO_R_DRV_FEAT_SEL:
		d->drv_feat_sel = (uint32_t)v;
		break;
	case VIO_R_DRV_FEAT:
		set_driver_features(d, (uint32_t)v);
		break;
	case VIO_R_STATUS:
		set_status(d, (uint8_t)v);
		break;
	case VIO_R_ISR_ACK:
		vio_dev_isr_ack(d, (uint8_t)v);
		break;
	case VIO_R_QUEUE_SEL:
		d->queue_sel = v > 0xffff ? 0xffff : (uint16_t)v;
		break;
	case VIO_R_QUEUE_NOTIFY:
		vio_dev_doorbell(d, v & 0xffff);
		break;
	case VIO_R_Q_SIZE:
		queue_set_size(d, v);
		break;
	case VIO_R_Q_READY:
		queue_ready(d, v);
		break;
	case VIO_R_Q_DESC:
		queue_set_addr(d, 0, v);
		break;
	case VIO_R_Q_DRIVER:
		queue_set_addr(d, 1, v);
		break;
	case VIO_R_Q_DEVICE:
		queue_set_addr(d, 2, v);
		break;
	case VIO_R_TRANSPORT:
		t = vio_transport_of(d);
		if (t->reg_set)
			t->reg_set(d, r->value, v);
		break;
	default: /* read-only */
		break;
	}
}

/* The block's bytes as the driver would read them now. */
static void regs_image(struct vio_dev *d, const struct vio_reg_block *b,
		       uint8_t img[VIO_REG_BLOCK_MAX])
{
	memset(img, 0, VIO_REG_BLOCK_MAX);
	for (unsigned i = 0; i < b->n; i++) {
		const struct vio_reg *r = &b->regs[i];

		if (!(r->flags & VIO_REG_WO))
			vio_put_le(img + r->off, reg_get(d, r), r->width);
	}
}

/* Put the written bytes that fall inside the block over img. */
static void regs_merge(const struct vio_reg_block *b, uint8_t *img, uint64_t off, size_t len,
		       const uint8_t *in)
{
	for (size_t i = 0; i < len && off < b->size && i < b->size - off; i++)
		img[off + i] = in[i];
}

/* True when [off, off + len) overlaps [reg, reg + rlen), without overflow. */
static bool touches(uint64_t off, size_t len, unsigned reg, unsigned rlen)
{
	return off < (uint64_t)reg + rlen && (reg < off || reg - off < len);
}

void vio_regs_read(struct vio_dev *d, const struct vio_reg_block *b, uint64_t off, size_t len,
		   uint8_t *out)
{
	uint8_t img[VIO_REG_BLOCK_MAX];

	regs_image(d, b, img);
	for (size_t i = 0; i < len; i++)
		out[i] = off < b->size && i < b->size - off ? img[off + i] : 0;
}

void vio_regs_write(struct vio_dev *d, const struct vio_reg_block *b, uint64_t off, size_t len,
		    const uint8_t *in)
{
	uint8_t img[VIO_REG_BLOCK_MAX];

	if (off >= b->size)
		return;
	regs_image(d, b, img);
	regs_merge(b, img, off, len, in);
	for (unsigned i = 0; i < b->n; i++) {
		const struct vio_reg *r = &b->regs[i];

		if (!touches(off, len, r->off, r->width))
			continue;
		reg_set(d, r, vio_get_le(img + r->off, r->width));
		if (r->field == VIO_R_QUEUE_SEL) {
			/* The queue fields of this write belong to the newly selected queue. */
			regs_image(d, b, img);
			regs_merge(b, img, off, len, in);
		}
	}
}

int vio_transport_read(struct vio_dev *d, uint64_t off, size_t len, void *buf)
{
	const struct vio_transport_ops *t = vio_transport_of(d);

	return t->read(d, off & (t->size - 1), len, buf);
}

int vio_transport_write(struct vio_dev *d, uint64_t off, size_t len, const void *buf)
{
	const struct vio_transport_ops *t = vio_transport_of(d);

	if (d->reset_pending) {
		/* The driver writes again once it has read status 0. */
		if (d->verbose)
			vio_log(d, COREIO_LOG_DEBUG,
				"virtio: write at %#llx ignored: reset pending",
				(unsigned long long)off);
		return 0;
	}
	return t->write(d, off & (t->size - 1), len, buf);
}
