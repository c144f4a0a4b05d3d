/* coreio-vm as a vfio-user server (--accel vfio-user): each PCI range is one device on a UNIX
 * socket. */
#ifndef COREIO_VM_VFU_H
#define COREIO_VM_VFU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ioreq.h"
#include "irq.h"
#include "pci.h"
#include "qside.h"
#include "vfio_user.h"
#include "vmmio.h"

/*
 * The server is split by concern: vfu.c the sockets, message reception and
 * dispatch, regions and reset; vfu_irq.c INTx, the MSI-X table and PBA and
 * the line -> vector mapping; vfu_dma.c the DMA_MAP table and mid 0 DMA.
 * What it shares with the mpqemu mode (the control socket, socket I/O, the
 * memory-file maps, BAR 0 placement, guest accesses) is in qside.c.
 * docs/coreio-vm.md ("vfio-user") describes the behaviour.
 */

#define VFU_MAX_XFER	 4096u	    /* max_data_xfer_size coreio-vm announces and accepts */
#define VFU_DMA_MAX_MSGS (1u << 16) /* DMA_READ/DMA_WRITE messages of one client piece, at most */
#define VFU_MSG_MAX	 (VFU_HDR_SIZE + VFU_REGION_RW_SIZE + VFU_MAX_XFER) /* also VERSION */
#define VFU_MAX_FDS	 8u		 /* max_msg_fds: at most this many fds per message */
#define VFU_MAX_DMA	 64u		 /* max_dma_maps */
#define VFU_NVEC	 CONFIG_VFU_IRQS /* MSI-X vectors = client lines per device */

#define VFU_DMA_TIMEOUT_MS 5000 /* a DMA_READ/DMA_WRITE of ours without a reply fails then */
#define VFU_DMA_TICK_MS	   100	/* the timeouts are checked this often while any waits */

/* One DMA_MAP window. */
struct vfu_dma {
	struct qside_map m; /* guest-physical gpa and size; host NULL without fd */
	uint64_t offset;    /* in the fd */
	uint32_t flags;	    /* VFU_DMA_READABLE / WRITEABLE */
	int fd;		    /* -1: no fd: clients' DMA goes through DMA_READ/DMA_WRITE */
};

struct vfu;
struct vfu_dev;

/* One DMA_READ/DMA_WRITE message of ours. */
struct vfu_dma_msg {
	uint16_t id;
	bool answered;
	uint64_t gpa;
	uint32_t count;
	uint32_t off; /* of its bytes in the piece's data */
};

/* A client's DMA piece moved by DMA_READ/DMA_WRITE messages (vfu_dma.c). */
struct vfu_dma_op {
	struct vfu_dma_op *next;    /* s->ops */
	struct vmmio_dma_async *op; /* the service's piece */
	struct vfu_dev *d;	    /* whose socket carries the messages; NULL once over */
	long long deadline_ms;	    /* CLOCK_MONOTONIC */
	int err;		    /* the first error */
	bool over;		    /* done() is due (ops_finish()) */
	unsigned nmsg, nleft;	    /* messages, and those not answered yet */
	struct vfu_dma_msg msg[];   /* nmsg */
};

/* One device: a --vmmio pci range and the socket QEMU's vfio-user-pci connects to. */
struct vfu_dev {
	struct vfu *s;
	unsigned g;
	char path[CONFIG_NAME_MAX];
	int listen_fd;
	int fd;		 /* the connection, -1 when none */
	bool negotiated; /* VERSION done on this connection */
	struct vmmio_range *range;
	struct pci_dev pci;
	uint64_t bar0_size;
	struct ioreq_ctx bar_io; /* one MMIO handler: the range at BAR 0's address */
	uint32_t bar_base;	 /* where bar_io's handler is (0 while unassigned) */
	bool bar_registered;
	/* The one REGION_READ/WRITE that went to the client (the socket is not read meanwhile). */
	struct io_request req;
	bool busy;
	struct vfu_hdr req_hdr; /* its header */
	uint64_t req_offset;	/* its region offset */
	uint32_t req_region, req_count;
	bool req_cfg; /* a virtio cfg access window read/write */
	uint32_t cfg_addr;
	unsigned cfg_len, data_off;
	/* Receive state of the current message. */
	uint8_t rx[VFU_MSG_MAX];
	size_t rx_have;
	uint32_t rx_size;
	int rx_fds[VFU_MAX_FDS];
	unsigned rx_nfds;
	bool rx_fd_overflow;
	/* INTx (line 8g): level-triggered, automasked like VFIO's. */
	bool lines[VFU_NVEC]; /* the client's line levels */
	int intx_fd, intx_unmask_fd;
	int err_fd; /* the ERR index's eventfd: kept, never signalled (no error reporting) */
	bool intx_masked;
	/* MSI-X: vector k is line 8g + k. */
	int msix_fd[VFU_NVEC];
	bool msix_masked[VFU_NVEC]; /* SET_IRQS ACTION_MASK / UNMASK */
	bool msix_pending[VFU_NVEC];
	uint8_t msix_table[VFU_NVEC * PCI_MSIX_ENTRY_SIZE];
	/* DMA_MAP windows. */
	struct vfu_dma dma[VFU_MAX_DMA];
	unsigned ndma;
	bool warned_msg_dma;
	bool warned_dma_access;	 /* a client DMA against a window's flags was logged */
	uint16_t next_dma_id;	 /* the id of our next DMA_READ/DMA_WRITE */
	bool warned_stray_reply; /* a reply to no message of ours was logged */
	bool held;		 /* rx holds a command that waits for the access in flight */
	bool shm_pending;	 /* a shared-memory map update is deferred */
	bool hotplug, dead;
	bool msix; /* the device offers MSI-X (BAR 1 holds its table and PBA) */
	unsigned instance;
	/* Counters, printed at exit. */
	uint64_t connections, cfg_reads, cfg_writes, bar_reads, bar_writes, msix_accesses;
	uint64_t intx_signals, msix_signals, resets, dead_accesses, errors, dma_maps;
	uint64_t dma_msgs, dma_failed; /* DMA_READ/DMA_WRITE sent; client pieces failed */
};

struct vfu {
	struct qside q; /* the service, IRQ chip, trace flag and control socket */
	struct vfu_dev devs[CONFIG_MPQEMU_MAX_DEVS];
	unsigned ndevs;
	/* Clients' DMA pieces that wait for DMA_READ/DMA_WRITE replies (I/O thread). */
	struct vfu_dma_op *ops;
	int dma_timer_fd; /* every VFU_DMA_TICK_MS while ops is not empty; -1: none */
	bool timer_armed;
	bool finish_queued; /* ops_finish() is deferred */
};

/*
 * Serve every --vmmio pci range of cfg as one vfio-user device listening on
 * its --vfio-user-socket path (a stale socket file there is replaced):
 * become the IRQ backend of irq and the DMA target (mid 0) of v; with
 * --mpqemu-control, report claims, releases and dead devices on it.
 * vmmio_init() must have run. Returns 0, or a negative errno after printing
 * why.
 */
int vfu_init(struct vfu *s, const struct vm_config *cfg, struct vmmio *v, struct irq_chip *irq);

/* Stop the claim and release callbacks (shutting down). Call before vmmio_exit(). */
void vfu_stop(struct vfu *s);

/*
 * Close every connection, listening socket (its file is removed), eventfd
 * and DMA mapping, and print each device's counters. After vmmio_exit().
 */
void vfu_exit(struct vfu *s);

/*
 * Host pointer for guest-physical [gpa, gpa + len) inside one fd-backed
 * DMA_MAP window of any device that allows the access (write: the window
 * is VFU_DMA_WRITEABLE; else VFU_DMA_READABLE), or NULL. opaque is the
 * struct vfu. The vmmio_dma_ptr_fn of this mode.
 */
void *vfu_dma_ptr(void *opaque, uint64_t gpa, uint64_t len, bool write);

/* Internal to the vfu*.c files. */

/* Log a line "coreio-vm: vfio-user device G: ..." on stderr. */
void vfu_log(const struct vfu_dev *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* True when fd is an eventfd. */
bool vfu_is_eventfd(int fd);

/* The IRQ backend: global line 8g + k is line k of device g. */
void vfu_irq_backend(int line, bool level, void *opaque);

/*
 * SET_IRQS for device d with the decoded request and the message's fds.
 * Takes the fds it keeps (set to -1 in fds). Returns 0 or a negative errno
 * for the error reply (after logging why).
 */
int vfu_set_irqs(struct vfu_dev *d, const struct vfu_set_irqs *s, int *fds, unsigned nfds);

/* GET_IRQ_INFO for index: fills flags and count. Returns 0 or -EINVAL. */
int vfu_irq_info(const struct vfu_dev *d, uint32_t index, uint32_t *flags, uint32_t *count);

/*
 * A BAR 1 (MSI-X table and PBA) access of count bytes at offset (already
 * checked inside BAR 1): reads fill data, writes take it.
 */
void vfu_msix_access(struct vfu_dev *d, bool write, uint64_t offset, uint8_t *data, uint32_t count);

/*
 * Re-check what may be delivered after a state change (configuration
 * writes: INTx disable, MSI-X enable or function mask).
 */
void vfu_irq_update(struct vfu_dev *d);

/* Reset interrupt state (masks, pending bits, the table); keep_fds false also closes eventfds. */
void vfu_irq_reset(struct vfu_dev *d, bool keep_fds);

/* DMA_MAP / DMA_UNMAP; fd is taken (closed on failure). Returns 0 or a negative errno. */
int vfu_dma_map(struct vfu_dev *d, const struct vfu_dma_map *m, int fd);
int vfu_dma_unmap(struct vfu_dev *d, const struct vfu_dma_unmap *u);

/* Drop every DMA window of d (connection closed). */
void vfu_dma_clear(struct vfu_dev *d);

/*
 * The vmmio_dma_async_fn of this mode (opaque: the struct vfu): move a
 * client's DMA piece whose memory no fd maps with DMA_READ/DMA_WRITE
 * messages of at most VFU_MAX_XFER bytes on the socket of one device whose
 * window without an fd holds each such segment (the device of the
 * client's range first); segments inside an fd window are copied at once.
 * Returns 0 (op->done() comes later), -EFAULT when some segment lies in
 * no window that allows the access (logged), or -E2BIG for a piece of
 * more than VFU_DMA_MAX_MSGS messages (the service never asks for one).
 */
int vfu_dma_async(void *opaque, struct vmmio_dma_async *op);

/*
 * A reply of the peer of d (the REPLY flag) of len bytes: h, then payload.
 * It completes one of our DMA_READ/DMA_WRITE messages; a DMA reply that
 * matches none is ignored (logged once per connection; a late reply after
 * a timeout). Returns 0, or -EINVAL with why for a malformed reply (the
 * caller closes the connection).
 */
int vfu_dma_reply(struct vfu_dev *d, const struct vfu_hdr *h, const uint8_t *payload, size_t len,
		  char *why, size_t whylen);

/* d's connection closed: the pieces whose messages went on it fail (-ECONNRESET). */
void vfu_dma_conn_closed(struct vfu_dev *d);

/*
 * Start the DMA timeout timer (vfu_init()). Returns 0 or a negative errno
 * after printing why.
 */
int vfu_dma_init(struct vfu *s);

/*
 * Fail every piece still waiting and complete them now (vfu_stop(), VM
 * lock not held), then close the timer. No piece is taken afterwards
 * (the caller unhooked vfu_dma_async()).
 */
void vfu_dma_stop(struct vfu *s);

/*
 * Send len bytes on d's connection; a failed send closes it (logged).
 * Returns 0 or -EIO.
 */
int vfu_send(struct vfu_dev *d, const void *buf, size_t len);

#endif
