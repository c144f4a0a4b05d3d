/* Test helper shared by the virtio unit tests: one split-ring descriptor written into fake memory.
 */
#ifndef COREIO_TESTS_VIO_TEST_DESC_H
#define COREIO_TESTS_VIO_TEST_DESC_H

#include <stdint.h>

#include "virtio.h"

/* Write the 16-byte descriptor {addr, len, flags, next} at p (little-endian). */
static inline void vio_test_desc(uint8_t *p, uint64_t addr, uint32_t len, uint16_t flags,
				 uint16_t next)
{
	vio_put_le(p, addr, 8);
	vio_put_le(p + 8, len, 4);
	vio_put_le(p + 12, flags, 2);
	vio_put_le(p + 14, next, 2);
}

/* A 32-bit write to virtio-mmio register off; 0 or the transport's error. */
static inline int vio_test_w32(struct vio_dev *d, uint64_t off, uint32_t v)
{
	uint8_t b[4];

	vio_put_le(b, v, 4);
	return vio_transport_write(d, off, 4, b);
}

/* ACKNOWLEDGE, DRIVER, both feature words of feats, FEATURES_OK; 0 or the first error. */
static inline int vio_test_negotiate(struct vio_dev *d, uint64_t feats)
{
	int rc = vio_test_w32(d, VIO_MMIO_STATUS, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER);

	rc = rc ? rc : vio_test_w32(d, VIO_MMIO_DRIVER_FEAT_SEL, 0);
	rc = rc ? rc : vio_test_w32(d, VIO_MMIO_DRIVER_FEATURES, (uint32_t)feats);
	rc = rc ? rc : vio_test_w32(d, VIO_MMIO_DRIVER_FEAT_SEL, 1);
	rc = rc ? rc : vio_test_w32(d, VIO_MMIO_DRIVER_FEATURES, (uint32_t)(feats >> 32));
	return rc ? rc
		  : vio_test_w32(d, VIO_MMIO_STATUS,
				 VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
}

/* The virtio-mmio status with DRIVER_OK (after FEATURES_OK); 0 or the transport's error. */
static inline int vio_test_mmio_driver_ok(struct vio_dev *d)
{
	return vio_test_w32(d, VIO_MMIO_STATUS,
			    VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK | VIO_S_DRIVER_OK);
}

/*
 * Set up virtio-mmio queue q with size and rings at desc, avail, used (below 4 GiB) and enable
 * it; 0 or the first error.
 */
static inline int vio_test_mmio_queue(struct vio_dev *d, unsigned q, unsigned size, uint32_t desc,
				      uint32_t avail, uint32_t used)
{
	int rc = vio_test_w32(d, VIO_MMIO_QUEUE_SEL, q);

	rc = rc ? rc : vio_test_w32(d, VIO_MMIO_QUEUE_NUM, size);
	rc = rc ? rc : vio_test_w32(d, VIO_MMIO_QUEUE_DESC_LO, desc);
	rc = rc ? rc : vio_test_w32(d, VIO_MMIO_QUEUE_DRIVER_LO, avail);
	rc = rc ? rc : vio_test_w32(d, VIO_MMIO_QUEUE_DEVICE_LO, used);
	return rc ? rc : vio_test_w32(d, VIO_MMIO_QUEUE_READY, 1);
}

#endif
