/* vfio-user wire format (QEMU docs/interop/vfio-user.rst): message layouts, constants and
 * bounds-checked decoders/encoders of every payload coreio-vm's server takes or sends. */
#ifndef COREIO_VFIO_USER_H
#define COREIO_VFIO_USER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Every message is a 16-byte header followed by its payload; all integers
 * are in host byte order (little-endian on every host coreio supports; the
 * helpers here read and write little-endian). File descriptors travel as
 * SCM_RIGHTS with the message.
 */
#define VFU_HDR_SIZE 16u

/* Header flags. */
#define VFU_F_TYPE_MASK	 0x0fu
#define VFU_F_TYPE_CMD	 0x0u
#define VFU_F_TYPE_REPLY 0x1u
#define VFU_F_NO_REPLY	 0x10u
#define VFU_F_ERROR	 0x20u
#define VFU_F_KNOWN	 (VFU_F_TYPE_MASK | VFU_F_NO_REPLY | VFU_F_ERROR)

/* Commands. */
enum vfu_cmd {
	VFU_CMD_VERSION = 1,
	VFU_CMD_DMA_MAP = 2,
	VFU_CMD_DMA_UNMAP = 3,
	VFU_CMD_DEVICE_GET_INFO = 4,
	VFU_CMD_DEVICE_GET_REGION_INFO = 5,
	VFU_CMD_DEVICE_GET_REGION_IO_FDS = 6,
	VFU_CMD_DEVICE_GET_IRQ_INFO = 7,
	VFU_CMD_DEVICE_SET_IRQS = 8,
	VFU_CMD_REGION_READ = 9,
	VFU_CMD_REGION_WRITE = 10,
	VFU_CMD_DMA_READ = 11,
	VFU_CMD_DMA_WRITE = 12,
	VFU_CMD_DEVICE_RESET = 13,
	VFU_CMD_DIRTY_PAGES = 14, /* obsolete */
	VFU_CMD_REGION_WRITE_MULTI = 15,
	VFU_CMD_DEVICE_FEATURE = 16,
	VFU_CMD_MIG_DATA_READ = 17,
	VFU_CMD_MIG_DATA_WRITE = 18,
	VFU_CMD_MAX = 19,
};

/* The protocol version coreio-vm speaks. */
#define VFU_VERSION_MAJOR 0
#define VFU_VERSION_MINOR 1

/* VFIO PCI region indexes (linux/vfio.h). */
#define VFU_PCI_BAR0_REGION   0
#define VFU_PCI_BAR1_REGION   1
#define VFU_PCI_ROM_REGION    6
#define VFU_PCI_CONFIG_REGION 7
#define VFU_PCI_VGA_REGION    8
#define VFU_PCI_NUM_REGIONS   9

/* VFIO PCI IRQ indexes. */
#define VFU_PCI_INTX_IRQ 0
#define VFU_PCI_MSI_IRQ	 1
#define VFU_PCI_MSIX_IRQ 2
#define VFU_PCI_ERR_IRQ	 3
#define VFU_PCI_REQ_IRQ	 4
#define VFU_PCI_NUM_IRQS 5

#define VFU_DEVICE_FLAGS_RESET 1u
#define VFU_DEVICE_FLAGS_PCI   2u

#define VFU_REGION_FLAG_READ  1u
#define VFU_REGION_FLAG_WRITE 2u
#define VFU_REGION_FLAG_MMAP  4u
#define VFU_REGION_FLAG_CAPS  8u

#define VFU_IRQ_INFO_EVENTFD	0x1u
#define VFU_IRQ_INFO_MASKABLE	0x2u
#define VFU_IRQ_INFO_AUTOMASKED 0x4u
#define VFU_IRQ_INFO_NORESIZE	0x8u

#define VFU_IRQ_SET_DATA_NONE	   0x01u
#define VFU_IRQ_SET_DATA_BOOL	   0x02u
#define VFU_IRQ_SET_DATA_EVENTFD   0x04u
#define VFU_IRQ_SET_DATA_MASK	   0x07u
#define VFU_IRQ_SET_ACTION_MASK	   0x08u
#define VFU_IRQ_SET_ACTION_UNMASK  0x10u
#define VFU_IRQ_SET_ACTION_TRIGGER 0x20u
#define VFU_IRQ_SET_ACTION_ALL	   0x38u

#define VFU_DMA_READABLE       1u
#define VFU_DMA_WRITEABLE      2u
#define VFU_DMA_UNMAP_FLAG_ALL 2u /* VFIO_DMA_UNMAP_FLAG_ALL: address and size 0 */

/* Payload sizes (after the header). */
#define VFU_VERSION_FIXED    4u	 /* major, minor; then optional NUL-terminated JSON */
#define VFU_DMA_MAP_SIZE     32u /* argsz, flags, offset, address, size */
#define VFU_DMA_UNMAP_SIZE   24u /* argsz, flags, address, size */
#define VFU_DEV_INFO_SIZE    16u /* argsz, flags, num_regions, num_irqs */
#define VFU_REGION_INFO_SIZE 32u /* argsz, flags, index, cap_offset, size, offset */
#define VFU_IRQ_INFO_SIZE    16u /* argsz, flags, index, count */
#define VFU_SET_IRQS_SIZE    20u /* argsz, flags, index, start, count; then data */
#define VFU_REGION_RW_SIZE   16u /* offset, region, count; then data */
#define VFU_DMA_RW_SIZE	     16u /* address, count; then data */
/*
 * DMA_READ/DMA_WRITE as QEMU 11.1.3 sends and reads them (seen on the wire,
 * and as the protocol specifies): address (8), count (8), data from payload
 * offset 16, the message header + 16 + count bytes, no padding. QEMU rejects
 * a DMA_READ shorter than header + 16 and a DMA_WRITE whose size is below
 * header + 16 + count.
 */
#define VFU_DMA_RW_DATA 16u

#define VFU_JSON_MAX 4096u /* the longest VERSION JSON coreio-vm takes, with its NUL */

/* The message header. */
struct vfu_hdr {
	uint16_t id;
	uint16_t cmd;
	uint32_t size; /* the whole message, header included */
	uint32_t flags;
	uint32_t error;
};

/*
 * Decode a header from the 16 bytes at buf. Returns 0, or -EINVAL when the
 * size field is below VFU_HDR_SIZE (h is filled in either way).
 */
int vfu_hdr_decode(const uint8_t *buf, struct vfu_hdr *h);

/* Encode h into the 16 bytes at buf. */
void vfu_hdr_encode(uint8_t *buf, const struct vfu_hdr *h);

/* A command's name ("VERSION", "REGION_READ", ...), or "?" for an unknown one. */
const char *vfu_cmd_name(unsigned cmd);

/* VERSION: the fixed part and what coreio-vm reads of the JSON capabilities. */
struct vfu_version {
	uint16_t major, minor;
	bool has_json;
	uint32_t max_msg_fds;	     /* default 1 */
	uint64_t max_data_xfer_size; /* default 1 MiB */
};

/*
 * Decode a VERSION payload of len bytes: major, minor and the optional JSON
 * text, which must be NUL-terminated (exactly one NUL, the last byte), at
 * most VFU_JSON_MAX bytes and a syntactically valid JSON object whose
 * "capabilities" member, when present, is an object; "max_msg_fds" and
 * "max_data_xfer_size" in it, when present, must be non-negative integers
 * (below 2^32 and 2^63). Other members are ignored.
 *   why, whylen  receive the reason on failure.
 * Returns 0, or -EINVAL.
 */
int vfu_version_decode(const uint8_t *p, size_t len, struct vfu_version *v, char *why,
		       size_t whylen);

/*
 * Validate a JSON text (no NUL inside, len bytes) as vfu_version_decode()
 * does, filling max_msg_fds / max_data_xfer_size of v (defaults kept when
 * absent). Returns 0 or -EINVAL with why.
 */
int vfu_json_caps(const char *s, size_t len, struct vfu_version *v, char *why, size_t whylen);

/* DMA_MAP. */
struct vfu_dma_map {
	uint32_t argsz, flags;
	uint64_t offset, addr, size;
};

/*
 * Decode a DMA_MAP payload: exactly VFU_DMA_MAP_SIZE bytes, argsz at least
 * that, flags only READABLE/WRITEABLE, size nonzero, addr + size and
 * offset + size without overflow. Returns 0, or -EINVAL with why.
 */
int vfu_dma_map_decode(const uint8_t *p, size_t len, struct vfu_dma_map *m, char *why,
		       size_t whylen);

/* DMA_UNMAP (its reply repeats the request's payload). */
struct vfu_dma_unmap {
	uint32_t argsz, flags;
	uint64_t addr, size;
};

/*
 * Decode a DMA_UNMAP payload: exactly VFU_DMA_UNMAP_SIZE bytes, argsz at
 * least that, flags 0 or VFU_DMA_UNMAP_FLAG_ALL (then addr and size 0),
 * addr + size without overflow. Returns 0, or -EINVAL with why.
 */
int vfu_dma_unmap_decode(const uint8_t *p, size_t len, struct vfu_dma_unmap *u, char *why,
			 size_t whylen);

/*
 * Decode a request made of 32-bit words (DEVICE_GET_INFO: 4 words,
 * GET_IRQ_INFO: 4): exactly n * 4 bytes. Returns 0 or -EINVAL.
 */
int vfu_words_decode(const uint8_t *p, size_t len, uint32_t *w, unsigned n);

/* Encode n 32-bit words at p (4 * n bytes). */
void vfu_words_encode(uint8_t *p, const uint32_t *w, unsigned n);

/* GET_REGION_INFO. */
struct vfu_region_info {
	uint32_t argsz, flags, index, cap_offset;
	uint64_t size, offset;
};

/* Decode a GET_REGION_INFO request: exactly VFU_REGION_INFO_SIZE bytes. Returns 0 or -EINVAL. */
int vfu_region_info_decode(const uint8_t *p, size_t len, struct vfu_region_info *r);

/* Encode r into the VFU_REGION_INFO_SIZE bytes at p. */
void vfu_region_info_encode(uint8_t *p, const struct vfu_region_info *r);

/* SET_IRQS. */
struct vfu_set_irqs {
	uint32_t argsz, flags, index, start, count;
	const uint8_t *data; /* DATA_BOOL: count bytes; else NULL */
};

/*
 * Decode a SET_IRQS payload of len bytes: the 20-byte fixed part, exactly
 * one DATA flag and one ACTION flag and no other bit, start + count without
 * overflow, and exactly count bytes of data after the fixed part for
 * DATA_BOOL, none otherwise (count at most 65536). Which indexes, ranges
 * and fds are acceptable is the device's business. Returns 0, or -EINVAL
 * with why.
 */
int vfu_set_irqs_decode(const uint8_t *p, size_t len, struct vfu_set_irqs *s, char *why,
			size_t whylen);

/* REGION_READ / REGION_WRITE. */
struct vfu_region_rw {
	uint64_t offset;
	uint32_t region, count;
	const uint8_t *data; /* REGION_WRITE: count bytes; else NULL */
};

/*
 * Decode a REGION_READ (write false: exactly VFU_REGION_RW_SIZE bytes) or
 * REGION_WRITE (write true: the fixed part and exactly count bytes of data)
 * payload. Returns 0, or -EINVAL with why. Region, offset and count limits
 * are the device's business.
 */
int vfu_region_rw_decode(const uint8_t *p, size_t len, bool write, struct vfu_region_rw *r,
			 char *why, size_t whylen);

/* Encode the fixed part of a REGION_READ/WRITE reply (VFU_REGION_RW_SIZE bytes at p). */
void vfu_region_rw_encode(uint8_t *p, uint64_t offset, uint32_t region, uint32_t count);

/* A DMA_READ reply or DMA_WRITE request payload (QEMU's layout, VFU_DMA_RW_DATA). */
struct vfu_dma_rw {
	uint64_t addr;
	uint32_t count;
	const uint8_t *data; /* count bytes */
};

/*
 * Encode a DMA_READ request payload (VFU_DMA_RW_SIZE bytes at p): address
 * and count (the count is 8 bytes wide on the wire, as in the protocol).
 */
void vfu_dma_read_encode(uint8_t *p, uint64_t addr, uint32_t count);

/*
 * Encode a DMA_WRITE request payload at p (VFU_DMA_RW_SIZE + count bytes of
 * room): address, count (8 bytes), the count bytes of data at
 * VFU_DMA_RW_DATA. Returns the payload's length (VFU_DMA_RW_SIZE + count).
 */
size_t vfu_dma_write_encode(uint8_t *p, uint64_t addr, const uint8_t *data, uint32_t count);

/*
 * Decode a DMA_READ reply (write false) or a DMA_WRITE request (write true)
 * payload of len bytes: its count (8 bytes, at most 2^32 - 1) must fit
 * (VFU_DMA_RW_DATA + count <= len, overflow-safe) and len be at most
 * VFU_DMA_RW_SIZE + count.
 * Returns 0, or -EINVAL with why.
 */
int vfu_dma_rw_decode(const uint8_t *p, size_t len, bool write, struct vfu_dma_rw *r, char *why,
		      size_t whylen);

/*
 * Encode a VERSION reply payload at p (room bytes): major, minor and the
 * NUL-terminated JSON capabilities of coreio-vm. Returns its length, or 0
 * when room is too small.
 */
size_t vfu_version_encode(uint8_t *p, size_t room, uint16_t major, uint16_t minor,
			  uint32_t max_msg_fds, uint32_t max_data_xfer_size, uint32_t max_dma_maps);

#endif
