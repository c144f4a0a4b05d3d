/* The virtio-pci modern transport: BAR 0 as in virtio-pci-layout.h (common configuration, ISR,
 * notify doorbells, device configuration) and the MSI-X vectors of the device's interrupts. */
#include <string.h>

#include "virtio.h"
#include "virtio_transport.h"

/* Ids of the PCI transport's own registers (VIO_R_TRANSPORT). */
enum {
	PCI_REG_CONFIG_VECTOR,
	PCI_REG_QUEUE_VECTOR,
};

/*
 * struct virtio_pci_common_cfg (virtio 1.x, 4.1.4.3). Writes are applied in
 * this order: selectors and features first, then the queue fields of the
 * (newly) selected queue, the status last.
 */
static const struct vio_reg common_regs[] = {
    {VIO_PCI_DFSELECT, 4, VIO_R_DEV_FEAT_SEL, 0, 0},
    {VIO_PCI_DF, 4, VIO_R_DEV_FEAT, 0, 0},
    {VIO_PCI_GFSELECT, 4, VIO_R_DRV_FEAT_SEL, 0, 0},
    {VIO_PCI_GF, 4, VIO_R_DRV_FEAT, 0, 0},
    {VIO_PCI_MSIX_CONFIG, 2, VIO_R_TRANSPORT, 0, PCI_REG_CONFIG_VECTOR},
    {VIO_PCI_NUM_QUEUES, 2, VIO_R_NUM_QUEUES, 0, 0},
    {VIO_PCI_CFG_GEN, 1, VIO_R_CONFIG_GEN, 0, 0},
    {VIO_PCI_Q_SELECT, 2, VIO_R_QUEUE_SEL, 0, 0},
    {VIO_PCI_Q_SIZE, 2, VIO_R_Q_SIZE, 0, 0},
    {VIO_PCI_Q_MSIX, 2, VIO_R_TRANSPORT, 0, PCI_REG_QUEUE_VECTOR},
    {VIO_PCI_Q_NOTIFY_OFF, 2, VIO_R_Q_NOTIFY_OFF, 0, 0},
    {VIO_PCI_Q_DESC, 8, VIO_R_Q_DESC, 0, 0},
    {VIO_PCI_Q_DRIVER, 8, VIO_R_Q_DRIVER, 0, 0},
    {VIO_PCI_Q_DEVICE, 8, VIO_R_Q_DEVICE, 0, 0},
    {VIO_PCI_Q_ENABLE, 2, VIO_R_Q_READY, 0, 0},
    {VIO_PCI_STATUS, 1, VIO_R_STATUS, 0, 0},
};

static const struct vio_reg_block common_block = {
    .regs = common_regs,
    .n = sizeof(common_regs) / sizeof(common_regs[0]),
    .size = COREIO_VPCI_COMMON_LEN,
};

unsigned vio_dev_msix_vectors(const struct vio_dev *d)
{
	unsigned n;

	if (d->transport != VIO_TRANSPORT_PCI)
		return 0;
	n = 1 + d->num_queues;
	return n < VIO_MSIX_MAX_VECTORS ? n : VIO_MSIX_MAX_VECTORS;
}

/* A vector the driver wrote: kept when the device offers it, else refused. */
static uint16_t accept_vector(const struct vio_dev *d, uint64_t v)
{
	return v < vio_dev_msix_vectors(d) ? (uint16_t)v : VIO_PCI_NO_VECTOR;
}

static bool queue_selected(const struct vio_dev *d)
{
	return d->queue_sel < d->num_queues && d->q[d->queue_sel].size_max != 0;
}

static uint64_t pci_reg_get(struct vio_dev *d, uint64_t id)
{
	if (id == PCI_REG_CONFIG_VECTOR)
		return d->pci.config_vector;
	if (id == PCI_REG_QUEUE_VECTOR && queue_selected(d))
		return d->pci.queue_vector[d->queue_sel];
	return VIO_PCI_NO_VECTOR;
}

static void pci_reg_set(struct vio_dev *d, uint64_t id, uint64_t v)
{
	if (id == PCI_REG_CONFIG_VECTOR)
		d->pci.config_vector = accept_vector(d, v);
	else if (id == PCI_REG_QUEUE_VECTOR && queue_selected(d))
		d->pci.queue_vector[d->queue_sel] = accept_vector(d, v);
}

static void pci_reset(struct vio_dev *d)
{
	d->pci.config_vector = VIO_PCI_NO_VECTOR;
	for (unsigned i = 0; i < VIO_MAX_QUEUES; i++)
		d->pci.queue_vector[i] = VIO_PCI_NO_VECTOR;
}

/*
 * With a vector for the interrupt, pulse the range's line of that number:
 * a rising edge, which coreio-vm turns into the MSI-X message (or a pending
 * bit while masked). The ISR is not touched.
 */
static int pci_notify(struct vio_dev *d, unsigned which)
{
	uint16_t v;
	int rc, rc2;

	if (which == VIO_NOTIFY_CONFIG)
		v = d->pci.config_vector;
	else if (which < VIO_MAX_QUEUES)
		v = d->pci.queue_vector[which];
	else
		return 0;
	if (v >= vio_dev_msix_vectors(d) || !d->host || !d->host->irq_line) {
		/*
		 * No vector. A driver using MSI-X gives the configuration
		 * interrupt one (Linux always does): then NO_VECTOR means "no
		 * interrupt" for that queue (virtio 1.x, 4.1.5.1.3), such as a
		 * poll queue's, and the ISR path must not run: its line 0 is
		 * MSI-X vector 0 now and would stay high with nobody to read the
		 * ISR. Without a configuration vector the driver uses INTx.
		 */
		if (which != VIO_NOTIFY_CONFIG && d->pci.config_vector < vio_dev_msix_vectors(d) &&
		    d->host && d->host->irq_line)
			return 1;
		return 0;
	}
	rc = d->host->irq_line(d->host_opaque, v, 1);
	rc2 = d->host->irq_line(d->host_opaque, v, 0);
	/* Line 0 is also the INTx line: it stays high while the ISR is set. */
	if (v == 0 && d->isr)
		vio_dev_irq_sync(d);
	if (rc || rc2) {
		rc = rc ? rc : rc2;
		if (d->verbose)
			vio_log(d, COREIO_LOG_WARNING, "virtio: msi-x vector %u: %s", v,
				strerror(-rc));
		return rc;
	}
	return 1;
}

static int pci_read(struct vio_dev *d, uint64_t off, size_t len, uint8_t *out)
{
	bool isr_read = false;

	vio_regs_read(d, &common_block, off - COREIO_VPCI_COMMON_OFF, len, out);
	for (size_t i = 0; i < len; i++) {
		uint64_t o = off + i;

		if (o == COREIO_VPCI_ISR_OFF) {
			out[i] = d->isr;
			isr_read = true;
		} else if (o >= COREIO_VPCI_DEVICE_OFF &&
			   o < COREIO_VPCI_DEVICE_OFF + COREIO_VPCI_DEVICE_LEN) {
			out[i] = vio_dev_config_byte(d, o - COREIO_VPCI_DEVICE_OFF);
		}
	}
	if (isr_read && d->isr) {
		/* Reading the ISR clears it and deasserts the line (virtio 1.x, 4.1.4.5). */
		vio_dev_isr_ack(d, d->isr);
	}
	return 0;
}

static int pci_write(struct vio_dev *d, uint64_t off, size_t len, const uint8_t *in)
{
	uint64_t end = off + len;

	if (end < off)
		return 0;
	vio_regs_write(d, &common_block, off - COREIO_VPCI_COMMON_OFF, len, in);
	if (off < COREIO_VPCI_NOTIFY_OFF + COREIO_VPCI_NOTIFY_LEN && end > COREIO_VPCI_NOTIFY_OFF) {
		uint64_t first = off > COREIO_VPCI_NOTIFY_OFF ? off : COREIO_VPCI_NOTIFY_OFF;

		vio_dev_doorbell(d, (first - COREIO_VPCI_NOTIFY_OFF) / COREIO_VPCI_NOTIFY_MULT);
	}
	if (off < COREIO_VPCI_DEVICE_OFF + COREIO_VPCI_DEVICE_LEN && end > COREIO_VPCI_DEVICE_OFF) {
		uint64_t first = off > COREIO_VPCI_DEVICE_OFF ? off : COREIO_VPCI_DEVICE_OFF;

		vio_dev_config_write(d, first - COREIO_VPCI_DEVICE_OFF, in + (first - off),
				     end - first);
	}
	return 0;
}

const struct vio_transport_ops vio_pci_transport = {
    .name = "pci",
    .size = COREIO_VPCI_BAR_SIZE,
    .read = pci_read,
    .write = pci_write,
    .reg_get = pci_reg_get,
    .reg_set = pci_reg_set,
    .notify = pci_notify,
    .reset = pci_reset,
};
