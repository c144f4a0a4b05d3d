/* The virtio-mmio version 2 transport (virtio 1.x, 4.2.2): the register block at 0x000..0x0ff and
 * the device configuration from 0x100. No vectors: interrupts are InterruptStatus and line 0. */
#include "virtio.h"
#include "virtio_transport.h"

/*
 * The registers, in the order a write is applied: selectors and features
 * first, then the selected queue's fields, notify, acknowledge, the status
 * last. The selectors and driver features are write-only (read 0).
 */
static const struct vio_reg mmio_regs[] = {
    {VIO_MMIO_MAGIC, 4, VIO_R_CONST, 0, VIO_MMIO_MAGIC_VALUE},
    {VIO_MMIO_VERSION, 4, VIO_R_CONST, 0, 2},
    {VIO_MMIO_DEVICE_ID, 4, VIO_R_DEVICE_ID, 0, 0},
    {VIO_MMIO_VENDOR_ID, 4, VIO_R_CONST, 0, VIO_VENDOR_ID},
    {VIO_MMIO_DEVICE_FEATURES, 4, VIO_R_DEV_FEAT, 0, 0},
    {VIO_MMIO_DEVICE_FEAT_SEL, 4, VIO_R_DEV_FEAT_SEL, VIO_REG_WO, 0},
    {VIO_MMIO_DRIVER_FEAT_SEL, 4, VIO_R_DRV_FEAT_SEL, VIO_REG_WO, 0},
    {VIO_MMIO_DRIVER_FEATURES, 4, VIO_R_DRV_FEAT, VIO_REG_WO, 0},
    {VIO_MMIO_QUEUE_SEL, 4, VIO_R_QUEUE_SEL, 0, 0},
    {VIO_MMIO_QUEUE_NUM_MAX, 4, VIO_R_Q_SIZE_MAX, 0, 0},
    {VIO_MMIO_QUEUE_NUM, 4, VIO_R_Q_SIZE, 0, 0},
    {VIO_MMIO_QUEUE_DESC_LO, 8, VIO_R_Q_DESC, 0, 0},
    {VIO_MMIO_QUEUE_DRIVER_LO, 8, VIO_R_Q_DRIVER, 0, 0},
    {VIO_MMIO_QUEUE_DEVICE_LO, 8, VIO_R_Q_DEVICE, 0, 0},
    {VIO_MMIO_QUEUE_READY, 4, VIO_R_Q_READY, 0, 0},
    {VIO_MMIO_QUEUE_NOTIFY, 4, VIO_R_QUEUE_NOTIFY, 0, 0},
    {VIO_MMIO_INTERRUPT_STATUS, 4, VIO_R_ISR, 0, 0},
    {VIO_MMIO_INTERRUPT_ACK, 4, VIO_R_ISR_ACK, 0, 0},
    {VIO_MMIO_STATUS, 4, VIO_R_STATUS, 0, 0},
    /* No shared memory regions: their length and base read as all ones. */
    {VIO_MMIO_SHM_LEN_LO, 8, VIO_R_CONST, 0, UINT64_MAX},
    {VIO_MMIO_SHM_BASE_LO, 8, VIO_R_CONST, 0, UINT64_MAX},
    {VIO_MMIO_CONFIG_GEN, 4, VIO_R_CONFIG_GEN, 0, 0},
};

static const struct vio_reg_block mmio_block = {
    .regs = mmio_regs,
    .n = sizeof(mmio_regs) / sizeof(mmio_regs[0]),
    .size = VIO_MMIO_CONFIG,
};

static int mmio_read(struct vio_dev *d, uint64_t off, size_t len, uint8_t *out)
{
	vio_regs_read(d, &mmio_block, off, len, out);
	for (size_t i = 0; i < len; i++) {
		uint64_t o = off + i;

		if (o >= VIO_MMIO_CONFIG)
			out[i] = vio_dev_config_byte(d, o - VIO_MMIO_CONFIG);
	}
	return 0;
}

static int mmio_write(struct vio_dev *d, uint64_t off, size_t len, const uint8_t *in)
{
	uint64_t end = off + len;

	if (end < off)
		return 0;
	if (end > VIO_MMIO_CONFIG) {
		uint64_t first = off > VIO_MMIO_CONFIG ? off : VIO_MMIO_CONFIG;

		vio_dev_config_write(d, first - VIO_MMIO_CONFIG, in + (first - off), end - first);
	}
	vio_regs_write(d, &mmio_block, off, len, in);
	return 0;
}

const struct vio_transport_ops vio_mmio_transport = {
    .name = "mmio",
    .size = VIO_MMIO_SIZE,
    .read = mmio_read,
    .write = mmio_write,
};
