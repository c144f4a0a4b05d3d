/* The virtio device core: features, the status state machine, queues, interrupts and both
 * transports. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "virtio.h"

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

static int ctx_dma_read(void *opaque, uint64_t gpa, void *buf, size_t len)
{
	struct vio_dev *d = opaque;

	return coreio_ctx_dma_read(d->ctx, 0, 0, gpa, len, buf, 0, NULL, NULL);
}

static int ctx_dma_write(void *opaque, uint64_t gpa, const void *buf, size_t len)
{
	struct vio_dev *d = opaque;

	/* The library only reads from buf; its prototype is not const. */
	return coreio_ctx_dma_write(d->ctx, 0, 0, gpa, len, (void *)(uintptr_t)buf, 0, NULL, NULL);
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

static int ctx_irq_set(void *opaque, unsigned level)
{
	struct vio_dev *d = opaque;

	return coreio_ctx_irq_update(d->ctx, d->rid, 0, level);
}

static const struct vio_host_ops ctx_host_ops = {
    .dma_read = ctx_dma_read,
    .dma_write = ctx_dma_write,
    .irq_set = ctx_irq_set,
    .dma_write_post = ctx_dma_write_post,
};

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
	return 0;
}

void vio_dev_set_ctx(struct vio_dev *d, coreio_ctx_t *ctx, unsigned rid)
{
	d->ctx = ctx;
	d->rid = rid;
	d->host = &ctx_host_ops;
	d->host_opaque = d;
	d->post_mode = 0;
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

static void irq_sync(struct vio_dev *d)
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
	d->dc_q = 0;
	for (unsigned i = 0; i < d->num_queues; i++) {
		struct vio_queue *vq = &d->q[i];
		uint16_t max = vq->size_max;

		memset(vq, 0, sizeof(*vq));
		vq->size_max = max;
		vq->size = max;
	}
	d->isr = 0;
	irq_sync(d);
	if (d->ops && d->ops->reset)
		d->ops->reset(d);
}

int vio_dev_interrupt(struct vio_dev *d, uint8_t isr_bits)
{
	d->isr |= isr_bits;
	if (!d->host || !d->host->irq_set)
		return 0;
	return d->host->irq_set(d->host_opaque, d->isr != 0);
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
		vio_dev_interrupt(d, VIO_ISR_CONFIG);
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
		vio_dev_interrupt(d, VIO_ISR_CONFIG);
}

bool vio_dev_poll(struct vio_dev *d)
{
	uint32_t pending;
	bool any = false;

	if (!vio_dev_running(d)) {
		d->kick_pending = 0;
		d->kick_all = false;
		return false;
	}
	pending = d->kick_pending;
	if (d->kick_all)
		pending = (1u << d->num_queues) - 1;
	d->kick_pending = 0;
	d->kick_all = false;
	for (unsigned q = 0; q < d->num_queues; q++) {
		if (!(pending & (1u << q)) || !d->q[q].enabled)
			continue;
		/* A queue callback may reset the device; stop when it no longer runs. */
		if (!vio_dev_running(d))
			break;
		d->q[q].budget = 0;
		d->q[q].idx_read = false;
		d->kicking = q + 1;
		d->ops->queue_kick(d, q);
		d->kicking = 0;
		any = true;
	}
	return any;
}

/* The status state machine (virtio 1.x, 2.1 and 3.1). */
static void set_status(struct vio_dev *d, uint8_t v)
{
	uint8_t old = d->status;
	uint8_t nv;

	if (v == 0) {
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

static void notify(struct vio_dev *d, uint64_t q)
{
	if (q < d->num_queues) {
		d->kick_pending |= 1u << q;
		if (d->verbose)
			vio_log(d, COREIO_LOG_DEBUG, "virtio: notify queue %u", (unsigned)q);
	}
}

static uint8_t config_byte(const struct vio_dev *d, uint64_t off)
{
	return off < d->config_len ? d->config[off] : 0;
}

/* Store driver writes to config bytes inside the writable window. */
static void config_write(struct vio_dev *d, uint64_t off, const uint8_t *in, size_t len)
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

/* --- virtio-pci modern: struct virtio_pci_common_cfg, ISR, notify, device config. --- */

static void pci_common_image(struct vio_dev *d, uint8_t img[COREIO_VPCI_COMMON_LEN])
{
	struct vio_queue *vq = sel_queue(d);

	memset(img, 0, COREIO_VPCI_COMMON_LEN);
	vio_put_le(img + VIO_PCI_DFSELECT, d->dev_feat_sel, 4);
	vio_put_le(img + VIO_PCI_DF, device_features_word(d), 4);
	vio_put_le(img + VIO_PCI_GFSELECT, d->drv_feat_sel, 4);
	vio_put_le(img + VIO_PCI_GF, driver_features_word(d), 4);
	vio_put_le(img + VIO_PCI_MSIX_CONFIG, VIO_PCI_NO_VECTOR, 2);
	vio_put_le(img + VIO_PCI_NUM_QUEUES, d->num_queues, 2);
	img[VIO_PCI_STATUS] = d->status;
	img[VIO_PCI_CFG_GEN] = d->config_gen;
	vio_put_le(img + VIO_PCI_Q_SELECT, d->queue_sel, 2);
	vio_put_le(img + VIO_PCI_Q_MSIX, VIO_PCI_NO_VECTOR, 2);
	if (vq) {
		vio_put_le(img + VIO_PCI_Q_SIZE, vq->size, 2);
		vio_put_le(img + VIO_PCI_Q_ENABLE, vq->enabled, 2);
		vio_put_le(img + VIO_PCI_Q_NOTIFY_OFF, d->queue_sel, 2);
		vio_put_le(img + VIO_PCI_Q_DESC, vq->desc, 8);
		vio_put_le(img + VIO_PCI_Q_DRIVER, vq->avail, 8);
		vio_put_le(img + VIO_PCI_Q_DEVICE, vq->used, 8);
	}
}

static bool touches(uint64_t off, size_t len, unsigned reg, unsigned rlen)
{
	return off < reg + rlen && reg < off + len;
}

/* Apply a write of in[0..len) at offset off of the common configuration. */
static void pci_common_write(struct vio_dev *d, uint64_t off, size_t len, const uint8_t *in)
{
	uint8_t img[COREIO_VPCI_COMMON_LEN];

	pci_common_image(d, img);
	for (size_t i = 0; i < len; i++)
		if (off + i < COREIO_VPCI_COMMON_LEN)
			img[off + i] = in[i];
	if (touches(off, len, VIO_PCI_DFSELECT, 4))
		d->dev_feat_sel = (uint32_t)vio_get_le(img + VIO_PCI_DFSELECT, 4);
	if (touches(off, len, VIO_PCI_GFSELECT, 4))
		d->drv_feat_sel = (uint32_t)vio_get_le(img + VIO_PCI_GFSELECT, 4);
	if (touches(off, len, VIO_PCI_GF, 4))
		set_driver_features(d, (uint32_t)vio_get_le(img + VIO_PCI_GF, 4));
	if (touches(off, len, VIO_PCI_Q_SELECT, 2)) {
		d->queue_sel = (uint16_t)vio_get_le(img + VIO_PCI_Q_SELECT, 2);
		/* The queue fields of this write belong to the newly selected queue. */
		if (len > 2)
			pci_common_image(d, img);
		for (size_t i = 0; i < len; i++)
			if (off + i < COREIO_VPCI_COMMON_LEN)
				img[off + i] = in[i];
	}
	if (touches(off, len, VIO_PCI_Q_SIZE, 2))
		queue_set_size(d, vio_get_le(img + VIO_PCI_Q_SIZE, 2));
	if (touches(off, len, VIO_PCI_Q_DESC, 8))
		queue_set_addr(d, 0, vio_get_le(img + VIO_PCI_Q_DESC, 8));
	if (touches(off, len, VIO_PCI_Q_DRIVER, 8))
		queue_set_addr(d, 1, vio_get_le(img + VIO_PCI_Q_DRIVER, 8));
	if (touches(off, len, VIO_PCI_Q_DEVICE, 8))
		queue_set_addr(d, 2, vio_get_le(img + VIO_PCI_Q_DEVICE, 8));
	if (touches(off, len, VIO_PCI_Q_ENABLE, 2))
		queue_ready(d, vio_get_le(img + VIO_PCI_Q_ENABLE, 2));
	if (touches(off, len, VIO_PCI_STATUS, 1))
		set_status(d, img[VIO_PCI_STATUS]);
}

static int pci_read(struct vio_dev *d, uint64_t off, size_t len, uint8_t *out)
{
	uint8_t img[COREIO_VPCI_COMMON_LEN];
	bool isr_read = false;

	pci_common_image(d, img);
	for (size_t i = 0; i < len; i++) {
		uint64_t o = off + i;

		out[i] = 0;
		if (o < COREIO_VPCI_COMMON_OFF + COREIO_VPCI_COMMON_LEN) {
			out[i] = img[o - COREIO_VPCI_COMMON_OFF];
		} else if (o == COREIO_VPCI_ISR_OFF) {
			out[i] = d->isr;
			isr_read = true;
		} else if (o >= COREIO_VPCI_DEVICE_OFF &&
			   o < COREIO_VPCI_DEVICE_OFF + COREIO_VPCI_DEVICE_LEN) {
			out[i] = config_byte(d, o - COREIO_VPCI_DEVICE_OFF);
		}
	}
	if (isr_read && d->isr) {
		/* Reading the ISR clears it and deasserts the line (virtio 1.x, 4.1.4.5). */
		d->isr = 0;
		irq_sync(d);
	}
	return 0;
}

static int pci_write(struct vio_dev *d, uint64_t off, size_t len, const uint8_t *in)
{
	uint64_t end = off + len;

	if (off < COREIO_VPCI_COMMON_OFF + COREIO_VPCI_COMMON_LEN)
		pci_common_write(d, off, len, in);
	if (off < COREIO_VPCI_NOTIFY_OFF + COREIO_VPCI_NOTIFY_LEN && end > COREIO_VPCI_NOTIFY_OFF) {
		uint64_t first = off > COREIO_VPCI_NOTIFY_OFF ? off : COREIO_VPCI_NOTIFY_OFF;

		notify(d, (first - COREIO_VPCI_NOTIFY_OFF) / COREIO_VPCI_NOTIFY_MULT);
	}
	if (off < COREIO_VPCI_DEVICE_OFF + COREIO_VPCI_DEVICE_LEN && end > COREIO_VPCI_DEVICE_OFF) {
		uint64_t first = off > COREIO_VPCI_DEVICE_OFF ? off : COREIO_VPCI_DEVICE_OFF;

		config_write(d, first - COREIO_VPCI_DEVICE_OFF, in + (first - off), end - first);
	}
	return 0;
}

/* --- virtio-mmio version 2. --- */

static void mmio_image(struct vio_dev *d, uint8_t img[VIO_MMIO_CONFIG])
{
	struct vio_queue *vq = sel_queue(d);

	memset(img, 0, VIO_MMIO_CONFIG);
	vio_put_le(img + VIO_MMIO_MAGIC, VIO_MMIO_MAGIC_VALUE, 4);
	vio_put_le(img + VIO_MMIO_VERSION, 2, 4);
	vio_put_le(img + VIO_MMIO_DEVICE_ID, d->device_id, 4);
	vio_put_le(img + VIO_MMIO_VENDOR_ID, VIO_VENDOR_ID, 4);
	vio_put_le(img + VIO_MMIO_DEVICE_FEATURES, device_features_word(d), 4);
	vio_put_le(img + VIO_MMIO_QUEUE_SEL, d->queue_sel, 4);
	if (vq) {
		vio_put_le(img + VIO_MMIO_QUEUE_NUM_MAX, vq->size_max, 4);
		vio_put_le(img + VIO_MMIO_QUEUE_NUM, vq->size, 4);
		vio_put_le(img + VIO_MMIO_QUEUE_READY, vq->enabled, 4);
		vio_put_le(img + VIO_MMIO_QUEUE_DESC_LO, vq->desc, 8);
		vio_put_le(img + VIO_MMIO_QUEUE_DRIVER_LO, vq->avail, 8);
		vio_put_le(img + VIO_MMIO_QUEUE_DEVICE_LO, vq->used, 8);
	}
	vio_put_le(img + VIO_MMIO_INTERRUPT_STATUS, d->isr, 4);
	vio_put_le(img + VIO_MMIO_STATUS, d->status, 4);
	/* No shared memory regions: their length and base read as all ones. */
	vio_put_le(img + VIO_MMIO_SHM_LEN_LO, UINT64_MAX, 8);
	vio_put_le(img + VIO_MMIO_SHM_BASE_LO, UINT64_MAX, 8);
	vio_put_le(img + VIO_MMIO_CONFIG_GEN, d->config_gen, 4);
}

static int mmio_read(struct vio_dev *d, uint64_t off, size_t len, uint8_t *out)
{
	uint8_t img[VIO_MMIO_CONFIG];

	mmio_image(d, img);
	for (size_t i = 0; i < len; i++) {
		uint64_t o = off + i;

		out[i] = o < VIO_MMIO_CONFIG ? img[o] : config_byte(d, o - VIO_MMIO_CONFIG);
	}
	return 0;
}

static int mmio_write(struct vio_dev *d, uint64_t off, size_t len, const uint8_t *in)
{
	uint8_t img[VIO_MMIO_CONFIG], raw[VIO_MMIO_CONFIG];
	uint64_t end = off + len;

	if (end > VIO_MMIO_CONFIG) {
		uint64_t first = off > VIO_MMIO_CONFIG ? off : VIO_MMIO_CONFIG;

		config_write(d, first - VIO_MMIO_CONFIG, in + (first - off), end - first);
	}
	if (off >= VIO_MMIO_CONFIG)
		return 0;
	mmio_image(d, img);
	memset(raw, 0, sizeof(raw));
	for (size_t i = 0; i < len && off + i < VIO_MMIO_CONFIG; i++) {
		img[off + i] = in[i];
		raw[off + i] = in[i];
	}
	if (touches(off, len, VIO_MMIO_DEVICE_FEAT_SEL, 4))
		d->dev_feat_sel = (uint32_t)vio_get_le(raw + VIO_MMIO_DEVICE_FEAT_SEL, 4);
	if (touches(off, len, VIO_MMIO_DRIVER_FEAT_SEL, 4))
		d->drv_feat_sel = (uint32_t)vio_get_le(raw + VIO_MMIO_DRIVER_FEAT_SEL, 4);
	if (touches(off, len, VIO_MMIO_DRIVER_FEATURES, 4))
		set_driver_features(d, (uint32_t)vio_get_le(raw + VIO_MMIO_DRIVER_FEATURES, 4));
	if (touches(off, len, VIO_MMIO_QUEUE_SEL, 4)) {
		d->queue_sel = (uint16_t)vio_get_le(img + VIO_MMIO_QUEUE_SEL, 2);
		if (vio_get_le(img + VIO_MMIO_QUEUE_SEL, 4) > 0xffff)
			d->queue_sel = 0xffff;
	}
	if (touches(off, len, VIO_MMIO_QUEUE_NUM, 4))
		queue_set_size(d, vio_get_le(img + VIO_MMIO_QUEUE_NUM, 4) & 0xffff);
	if (touches(off, len, VIO_MMIO_QUEUE_DESC_LO, 8))
		queue_set_addr(d, 0, vio_get_le(img + VIO_MMIO_QUEUE_DESC_LO, 8));
	if (touches(off, len, VIO_MMIO_QUEUE_DRIVER_LO, 8))
		queue_set_addr(d, 1, vio_get_le(img + VIO_MMIO_QUEUE_DRIVER_LO, 8));
	if (touches(off, len, VIO_MMIO_QUEUE_DEVICE_LO, 8))
		queue_set_addr(d, 2, vio_get_le(img + VIO_MMIO_QUEUE_DEVICE_LO, 8));
	if (touches(off, len, VIO_MMIO_QUEUE_READY, 4))
		queue_ready(d, vio_get_le(img + VIO_MMIO_QUEUE_READY, 4));
	if (touches(off, len, VIO_MMIO_QUEUE_NOTIFY, 4))
		notify(d, vio_get_le(raw + VIO_MMIO_QUEUE_NOTIFY, 4) & 0xffff);
	if (touches(off, len, VIO_MMIO_INTERRUPT_ACK, 4)) {
		d->isr &= (uint8_t)~vio_get_le(raw + VIO_MMIO_INTERRUPT_ACK, 4);
		irq_sync(d);
	}
	if (touches(off, len, VIO_MMIO_STATUS, 4))
		set_status(d, img[VIO_MMIO_STATUS]);
	return 0;
}

int vio_transport_read(struct vio_dev *d, uint64_t off, size_t len, void *buf)
{
	if (d->transport == VIO_TRANSPORT_PCI)
		return pci_read(d, off & (COREIO_VPCI_BAR_SIZE - 1), len, buf);
	return mmio_read(d, off & (VIO_MMIO_SIZE - 1), len, buf);
}

int vio_transport_write(struct vio_dev *d, uint64_t off, size_t len, const void *buf)
{
	if (d->transport == VIO_TRANSPORT_PCI)
		return pci_write(d, off & (COREIO_VPCI_BAR_SIZE - 1), len, buf);
	return mmio_write(d, off & (VIO_MMIO_SIZE - 1), len, buf);
}
