/* The interface between the virtio device core (virtio.c) and its transports (virtio_pci.c,
 * virtio_mmio.c): transport operations and the shared register-block engine. */
#ifndef COREIO_VIRTIO_TRANSPORT_H
#define COREIO_VIRTIO_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "virtio.h"

/* The "which" of vio_transport_ops.notify for a configuration change. */
#define VIO_NOTIFY_CONFIG 0xffffffffu

/* What the core asks of a transport. */
struct vio_transport_ops {
	const char *name;
	/* Size of the register block, a power of two: offsets are taken modulo it. */
	uint64_t size;
	/* Serve a guest read of len bytes at off (< size) into out; returns 0. */
	int (*read)(struct vio_dev *d, uint64_t off, size_t len, uint8_t *out);
	/* Serve a guest write of len bytes at off (< size) from in; returns 0. */
	int (*write)(struct vio_dev *d, uint64_t off, size_t len, const uint8_t *in);
	/* Optional: value of the transport's own register id (VIO_R_TRANSPORT entries). */
	uint64_t (*reg_get)(struct vio_dev *d, uint64_t id);
	/* Optional: the driver wrote v to the transport's own register id. */
	void (*reg_set)(struct vio_dev *d, uint64_t id, uint64_t v);
	/*
	 * Optional: deliver the interrupt of queue `which` (or VIO_NOTIFY_CONFIG)
	 * the transport's own way. Returns 1 when delivered, 0 when the core
	 * should use the ISR and line 0, or a negative errno (not delivered).
	 */
	int (*notify)(struct vio_dev *d, unsigned which);
	/* Optional: put the transport's state in d back to its reset values. */
	void (*reset)(struct vio_dev *d);
};

/* The transports (virtio_pci.c, virtio_mmio.c). */
extern const struct vio_transport_ops vio_pci_transport;
extern const struct vio_transport_ops vio_mmio_transport;

/* The operations of d's current transport (d->transport). */
const struct vio_transport_ops *vio_transport_of(const struct vio_dev *d);

/* What a register of a block shows and changes (struct vio_reg.field). */
enum vio_reg_field {
	VIO_R_CONST,	    /* reads vio_reg.value; writes ignored */
	VIO_R_DEVICE_ID,    /* virtio device id (read-only) */
	VIO_R_DEV_FEAT_SEL, /* device feature word select */
	VIO_R_DEV_FEAT,	    /* device feature word (read-only) */
	VIO_R_DRV_FEAT_SEL, /* driver feature word select */
	VIO_R_DRV_FEAT,	    /* driver feature word (frozen at FEATURES_OK) */
	VIO_R_NUM_QUEUES,   /* number of queues (read-only) */
	VIO_R_STATUS,	    /* device status; writing 0 resets */
	VIO_R_CONFIG_GEN,   /* configuration generation (read-only) */
	VIO_R_ISR,	    /* ISR bits (read-only here: reading does not clear) */
	VIO_R_ISR_ACK,	    /* write: clear these ISR bits */
	VIO_R_QUEUE_SEL,    /* queue select (values above 0xffff select 0xffff) */
	VIO_R_QUEUE_NOTIFY, /* write: notify queue (value & 0xffff) */
	VIO_R_Q_SIZE_MAX,   /* selected queue: largest size (read-only) */
	VIO_R_Q_SIZE,	    /* selected queue: size (fixed while enabled) */
	VIO_R_Q_READY,	    /* selected queue: enable (bit 0) */
	VIO_R_Q_NOTIFY_OFF, /* selected queue: notify offset = its index (read-only) */
	VIO_R_Q_DESC,	    /* selected queue: descriptor table address */
	VIO_R_Q_DRIVER,	    /* selected queue: available ring address */
	VIO_R_Q_DEVICE,	    /* selected queue: used ring address */
	VIO_R_TRANSPORT,    /* the transport's register vio_reg.value (reg_get / reg_set) */
};

/* struct vio_reg.flags: the register is write-only (its image reads 0). */
#define VIO_REG_WO 1u

/*
 * One register of a block. A write is applied register by register in the
 * table's order, each from the block's image with the written bytes merged
 * in (so a partial write keeps the other bytes); after a VIO_R_QUEUE_SEL
 * the image is rebuilt for the newly selected queue.
 */
struct vio_reg {
	uint16_t off;
	uint8_t width; /* 1, 2, 4 or 8 */
	uint8_t field; /* enum vio_reg_field */
	uint8_t flags; /* VIO_REG_* */
	uint64_t value;
};

/* A register block: regs[0..n) inside [0, size), size at most VIO_REG_BLOCK_MAX. */
struct vio_reg_block {
	const struct vio_reg *regs;
	unsigned n;
	unsigned size;
};

#define VIO_REG_BLOCK_MAX 0x100u

/*
 * Copy len bytes of block b at off into out (bytes outside the block and
 * between registers read 0). Reads have no side effects. No return value.
 */
void vio_regs_read(struct vio_dev *d, const struct vio_reg_block *b, uint64_t off, size_t len,
		   uint8_t *out);

/* Apply a guest write of in[0..len) at off to block b (bytes outside it ignored). */
void vio_regs_write(struct vio_dev *d, const struct vio_reg_block *b, uint64_t off, size_t len,
		    const uint8_t *in);

/* Device configuration byte off (0 beyond config_len). */
uint8_t vio_dev_config_byte(const struct vio_dev *d, uint64_t off);

/*
 * A driver write of in[0..len) to the device configuration at off: the
 * bytes inside the writable window are stored, then ops->config_write runs.
 */
void vio_dev_config_write(struct vio_dev *d, uint64_t off, const uint8_t *in, size_t len);

/* The driver notified queue q (ignored when q is not a queue). */
void vio_dev_doorbell(struct vio_dev *d, uint64_t q);

/* Clear the ISR bits in bits and set line 0 to whether any is left. */
void vio_dev_isr_ack(struct vio_dev *d, uint8_t bits);

/* Drive line 0 to the ISR's state (high while it is not 0). */
void vio_dev_irq_sync(struct vio_dev *d);

#endif
