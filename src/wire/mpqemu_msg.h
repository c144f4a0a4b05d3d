/* QEMU multi-process (mpqemu) wire format: message layouts, command numbers and the validating
 * decoder / encoders of what coreio-vm --accel mpqemu takes from QEMU's proxy and sends back. */
#ifndef COREIO_MPQEMU_MSG_H
#define COREIO_MPQEMU_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * QEMU's mpqemu messages (include/hw/remote/mpqemu-link.h of QEMU 7.2), as
 * they cross the socket on x86-64: a 16-byte header, `int cmd` (4 bytes,
 * little-endian), 4 bytes of padding, `size_t size` (8 bytes), then size
 * bytes of the data union; file descriptors ride as SCM_RIGHTS on the
 * header. docs/qemu-proxy.md has every field.
 */
#define MPQEMU_HDR_SIZE	   16u
#define MPQEMU_DATA_MAX	   192u /* sizeof the data union: SyncSysmemMsg */
#define MPQEMU_MAX_FDS	   8u	/* REMOTE_MAX_FDS */
#define MPQEMU_SYSMEM_SIZE 192u /* SyncSysmemMsg: u64 gpas[8], u64 sizes[8], s64 offsets[8] */
#define MPQEMU_CONF_SIZE   12u	/* PciConfDataMsg: u32 addr, u32 val, int len */
#define MPQEMU_BAR_SIZE	   24u /* BarAccessMsg: u64 addr, u64 val, unsigned size, bool memory, pad */
#define MPQEMU_RET_SIZE	   8u  /* data.u64 */

/* The longest whole message (header and the data union). */
#define MPQEMU_MSG_MAX (MPQEMU_HDR_SIZE + MPQEMU_DATA_MAX)

enum mpqemu_cmd {
	MPQEMU_CMD_SYNC_SYSMEM = 0,
	MPQEMU_CMD_RET = 1,
	MPQEMU_CMD_PCI_CFGWRITE = 2,
	MPQEMU_CMD_PCI_CFGREAD = 3,
	MPQEMU_CMD_BAR_WRITE = 4,
	MPQEMU_CMD_BAR_READ = 5,
	MPQEMU_CMD_SET_IRQFD = 6,
	MPQEMU_CMD_DEVICE_RESET = 7,
	MPQEMU_CMD_MAX = 8,
};

/* The message header (the padding after cmd is ignored, and encoded as zeros). */
struct mpqemu_hdr {
	uint32_t cmd;
	uint64_t size; /* bytes of data after the header */
};

/* One region of SYNC_SYSMEM: guest RAM at gpa, size bytes of the region's fd from offset. */
struct mpqemu_sysmem_region {
	uint64_t gpa, size;
	uint64_t offset; /* an off_t on the wire: checked non-negative */
};

/* PCI_CFGWRITE / PCI_CFGREAD (PciConfDataMsg). */
struct mpqemu_conf {
	uint32_t addr, val;
	int32_t len; /* an int on the wire; which lengths work is the device's business */
};

/* BAR_WRITE / BAR_READ (BarAccessMsg). */
struct mpqemu_bar {
	uint64_t addr, val;
	uint32_t size; /* which sizes work is the device's business */
	bool memory;   /* the wire's byte is nonzero: a memory BAR (false: an I/O BAR) */
};

/* A decoded, checked message. */
struct mpqemu_msg {
	uint32_t cmd;  /* enum mpqemu_cmd */
	unsigned nfds; /* fds that came with it, in order */
	union {
		/* SYNC_SYSMEM: nfds regions, region i's memory is fd i. */
		struct {
			unsigned n;
			struct mpqemu_sysmem_region r[MPQEMU_MAX_FDS];
		} sysmem;
		struct mpqemu_conf conf; /* PCI_CFGWRITE, PCI_CFGREAD */
		struct mpqemu_bar bar;	 /* BAR_WRITE, BAR_READ */
		uint64_t ret;		 /* RET (encoding only: the proxy never sends it) */
	};
};

/* A command's name ("SYNC_SYSMEM", "BAR_READ", ...), or "?" for an unknown one. */
const char *mpqemu_cmd_name(uint32_t cmd);

/*
 * Whether the proxy waits for a RET after sending cmd: PCI_CFGWRITE,
 * PCI_CFGREAD, BAR_WRITE, BAR_READ and DEVICE_RESET. SYNC_SYSMEM and
 * SET_IRQFD are not answered.
 */
bool mpqemu_cmd_answered(uint32_t cmd);

/*
 * The data size a command carries from the proxy (SYNC_SYSMEM 192,
 * PCI_CFG* 12, BAR_* 24, SET_IRQFD and DEVICE_RESET 0), RET's 8, or 0 for
 * an unknown command.
 */
unsigned mpqemu_cmd_data_size(uint32_t cmd);

/*
 * Decode the header at buf (MPQEMU_HDR_SIZE bytes), as soon as it has
 * arrived: the command must be below MPQEMU_CMD_MAX and size at most
 * MPQEMU_DATA_MAX, so that the data fits the receive buffer.
 *   h            filled in either way.
 *   why, whylen  receive the reason on failure ("unknown command 99").
 * Returns 0, or -EINVAL.
 */
int mpqemu_hdr_decode(const uint8_t *buf, struct mpqemu_hdr *h, char *why, size_t whylen);

/* Encode h into the MPQEMU_HDR_SIZE bytes at buf (padding zero). */
void mpqemu_hdr_encode(uint8_t *buf, const struct mpqemu_hdr *h);

/*
 * Decode and check one whole message from the proxy.
 *   hdr          its MPQEMU_HDR_SIZE header bytes.
 *   data, len    the data bytes received after the header; len must equal
 *                the header's size.
 *   nfds         fds received with it (kept, at most MPQEMU_MAX_FDS).
 *   fds_lost     true when more than MPQEMU_MAX_FDS fds came or the
 *                control data was truncated: always refused.
 *   m            the message, on success (on failure, partly filled).
 *   why, whylen  the reason on failure, as coreio-vm logs it after
 *                "malformed message: ".
 * Checks: the header (mpqemu_hdr_decode()); a command the proxy sends (not
 * RET); size exactly the command's data size; fds: SET_IRQFD exactly 2,
 * SYNC_SYSMEM at most MPQEMU_MAX_FDS, the others none. SYNC_SYSMEM: one
 * region per fd (the rest of the arrays is ignored), each with a nonzero
 * size, gpa + size and offset + size without overflow, offset
 * non-negative, and no two regions overlapping in guest-physical space.
 * What the fds are and whether a region lies inside its file is the
 * caller's business, as are BAR sizes and configuration lengths (answered,
 * not malformed).
 * Returns 0, or -EINVAL.
 */
int mpqemu_msg_decode(const uint8_t *hdr, const uint8_t *data, size_t len, unsigned nfds,
		      bool fds_lost, struct mpqemu_msg *m, char *why, size_t whylen);

/*
 * Encode m (header and data; SYNC_SYSMEM: m->sysmem.n regions, the rest of
 * the arrays zero) into buf, room bytes. m->nfds is not encoded (fds go as
 * SCM_RIGHTS). Returns the message's length, or 0 when room is too small,
 * the command is unknown or SYNC_SYSMEM has more than MPQEMU_MAX_FDS
 * regions.
 */
size_t mpqemu_msg_encode(uint8_t *buf, size_t room, const struct mpqemu_msg *m);

/*
 * Encode the answer RET with data.u64 = val into the
 * MPQEMU_HDR_SIZE + MPQEMU_RET_SIZE bytes at buf. Returns that length.
 */
size_t mpqemu_ret_encode(uint8_t *buf, uint64_t val);

#endif
