/* The internal API of the virtio 1.x device library: device object, split virtqueues, transports.
 */
#ifndef COREIO_VIRTIO_H
#define COREIO_VIRTIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/select.h>
#include <sys/types.h>

#include "coreio.h"
#include "virtio-pci-layout.h"

/* Device ids (virtio 1.x, 5). */
#define VIO_ID_BLOCK   2u
#define VIO_ID_CONSOLE 3u
#define VIO_ID_RNG     4u

/* Device status bits (virtio 1.x, 2.1). */
#define VIO_S_ACKNOWLEDGE 1u
#define VIO_S_DRIVER	  2u
#define VIO_S_DRIVER_OK	  4u
#define VIO_S_FEATURES_OK 8u
#define VIO_S_NEEDS_RESET 64u
#define VIO_S_FAILED	  128u

/* Feature bits of the transport and ring layer (virtio 1.x, 6). */
#define VIO_F_INDIRECT_DESC   28u
#define VIO_F_EVENT_IDX	      29u
#define VIO_F_VERSION_1	      32u
#define VIO_F_ACCESS_PLATFORM 33u
#define VIO_BIT(n)	      (1ull << (n))

/* ISR / InterruptStatus bits. */
#define VIO_ISR_QUEUE  1u
#define VIO_ISR_CONFIG 2u

/* The avail ring's flags: the driver needs no used buffer notification (virtio 1.x, 2.7.6). */
#define VIO_AVAIL_F_NO_INTERRUPT 1u

/* Split virtqueue descriptor flags (virtio 1.x, 2.7.5). */
#define VIO_DESC_F_NEXT	    1u
#define VIO_DESC_F_WRITE    2u
#define VIO_DESC_F_INDIRECT 4u

/* virtio-mmio version 2 registers (virtio 1.x, 4.2.2). */
#define VIO_MMIO_MAGIC		  0x000u
#define VIO_MMIO_VERSION	  0x004u
#define VIO_MMIO_DEVICE_ID	  0x008u
#define VIO_MMIO_VENDOR_ID	  0x00cu
#define VIO_MMIO_DEVICE_FEATURES  0x010u
#define VIO_MMIO_DEVICE_FEAT_SEL  0x014u
#define VIO_MMIO_DRIVER_FEATURES  0x020u
#define VIO_MMIO_DRIVER_FEAT_SEL  0x024u
#define VIO_MMIO_QUEUE_SEL	  0x030u
#define VIO_MMIO_QUEUE_NUM_MAX	  0x034u
#define VIO_MMIO_QUEUE_NUM	  0x038u
#define VIO_MMIO_QUEUE_READY	  0x044u
#define VIO_MMIO_QUEUE_NOTIFY	  0x050u
#define VIO_MMIO_INTERRUPT_STATUS 0x060u
#define VIO_MMIO_INTERRUPT_ACK	  0x064u
#define VIO_MMIO_STATUS		  0x070u
#define VIO_MMIO_QUEUE_DESC_LO	  0x080u
#define VIO_MMIO_QUEUE_DESC_HI	  0x084u
#define VIO_MMIO_QUEUE_DRIVER_LO  0x090u
#define VIO_MMIO_QUEUE_DRIVER_HI  0x094u
#define VIO_MMIO_QUEUE_DEVICE_LO  0x0a0u
#define VIO_MMIO_QUEUE_DEVICE_HI  0x0a4u
#define VIO_MMIO_SHM_SEL	  0x0acu
#define VIO_MMIO_SHM_LEN_LO	  0x0b0u
#define VIO_MMIO_SHM_LEN_HI	  0x0b4u
#define VIO_MMIO_SHM_BASE_LO	  0x0b8u
#define VIO_MMIO_SHM_BASE_HI	  0x0bcu
#define VIO_MMIO_CONFIG_GEN	  0x0fcu
#define VIO_MMIO_CONFIG		  0x100u
#define VIO_MMIO_SIZE		  0x1000u
#define VIO_MMIO_MAGIC_VALUE	  0x74726976u /* "virt" */
#define VIO_VENDOR_ID		  0x4f494f43u /* "COIO" */

/* struct virtio_pci_common_cfg field offsets (virtio 1.x, 4.1.4.3). */
#define VIO_PCI_DFSELECT     0x00u
#define VIO_PCI_DF	     0x04u
#define VIO_PCI_GFSELECT     0x08u
#define VIO_PCI_GF	     0x0cu
#define VIO_PCI_MSIX_CONFIG  0x10u
#define VIO_PCI_NUM_QUEUES   0x12u
#define VIO_PCI_STATUS	     0x14u
#define VIO_PCI_CFG_GEN	     0x15u
#define VIO_PCI_Q_SELECT     0x16u
#define VIO_PCI_Q_SIZE	     0x18u
#define VIO_PCI_Q_MSIX	     0x1au
#define VIO_PCI_Q_ENABLE     0x1cu
#define VIO_PCI_Q_NOTIFY_OFF 0x1eu
#define VIO_PCI_Q_DESC	     0x20u
#define VIO_PCI_Q_DRIVER     0x28u
#define VIO_PCI_Q_DEVICE     0x30u
#define VIO_PCI_NO_VECTOR    0xffffu

/*
 * MSI-X vectors of the PCI transport: a CoreIO range has at most 8 IRQ lines
 * (coreio-vm's CONFIG_MAX_IRQS), and vector i is the range's line i.
 */
#define VIO_MSIX_MAX_VECTORS 8u

/* Limits. */
#define VIO_MAX_QUEUES	   8u
#define VIO_QUEUE_SIZE_MAX 32768u
#define VIO_CONFIG_MAX	   256u
#define VIO_INDIRECT_MAX   1024u	  /* descriptors in one indirect table */
#define VIO_CHAIN_MAX_LEN  (256ull << 20) /* bytes in one descriptor chain */
#define VIO_DESC_CACHE	   256u	 /* descriptors read at once (the whole table up to this) */
#define VIO_RING_CACHE	   256u	 /* available ring entries read at once */
#define VIO_MERGE_GAP	   4096u /* bytes between descriptor table and avail ring read along */
#define VIO_POST_MAX	   (16u << 20) /* bytes of posted writes in flight per device */
#define VIO_LOG_MAX	   256u	       /* bytes of one log message, with its terminating NUL */
#define VIO_READV_MAX	   8u	       /* segments of one dma_readv the library issues, at most */
/* The merged read: table, gap, avail flags and idx, ring entries and used_event. */
#define VIO_SCRATCH_LEN (VIO_DESC_CACHE * 16u + VIO_MERGE_GAP + 4u + 2u * VIO_RING_CACHE + 2u)

enum vio_transport {
	VIO_TRANSPORT_PCI,
	VIO_TRANSPORT_MMIO,
};

struct vio_dev;

/* One segment of a vio_host_ops dma_readv: len bytes at guest-physical gpa into buf. */
struct vio_dma_seg {
	uint64_t gpa;
	void *buf;
	size_t len;
};

/*
 * How the library reaches guest memory and the interrupt lines. The default
 * (vio_dev_set_ctx) uses coreio_ctx_dma_read/write with mid 0 (blocking, and
 * non-blocking for dma_write_post), coreio_ctx_irq_update(rid, iid 0) for
 * irq_set and coreio_ctx_irq_update(rid, iid line) for irq_line; unit tests
 * put fakes here.
 */
struct vio_host_ops {
	/* Copy len bytes from guest-physical gpa; 0 or a negative errno. */
	int (*dma_read)(void *opaque, uint64_t gpa, void *buf, size_t len);
	/*
	 * Optional: copy the n segments (n >= 1) from guest memory, in order:
	 * seg[k] is copied after seg[k - 1] was, so its bytes are at least as
	 * new (the guest's stores become visible in order), for one round
	 * trip. Ordered with posted writes as dma_read. Returns 0, or the
	 * first error in segment order (-EFAULT: some segment lies outside
	 * guest memory; then every buffer may hold anything). n is at most
	 * VIO_READV_MAX. Without it the library reads with dma_read only.
	 */
	int (*dma_readv)(void *opaque, const struct vio_dma_seg *seg, unsigned n);
	/* Copy len bytes to guest-physical gpa; 0 or a negative errno. */
	int (*dma_write)(void *opaque, uint64_t gpa, const void *buf, size_t len);
	/* Set the level of the device's interrupt line; 0 or a negative errno. */
	int (*irq_set)(void *opaque, unsigned level);
	/*
	 * Optional: start a write of len bytes of buf to gpa without waiting.
	 * buf stays untouched until done(arg, err) runs; done runs exactly
	 * once, after the bytes are in guest memory (err 0) or the write
	 * failed, and only from the host's event processing: never from inside
	 * this call, dma_read or dma_write. Posted writes, blocking reads and
	 * blocking writes reach guest memory in the order they were issued.
	 * Returns 0 (done will run), -EOPNOTSUPP when writes cannot be posted
	 * on this connection (the library then writes with dma_write), or
	 * another negative errno (done will not run).
	 */
	int (*dma_write_post)(void *opaque, uint64_t gpa, const void *buf, size_t len,
			      void (*done)(void *arg, int err), void *arg);
	/*
	 * Optional: set the level of the range's IRQ line `line` (0..7). The
	 * PCI transport pulses line v (1 then 0, a rising edge) to send MSI-X
	 * vector v; without this op vectors are not used (the ISR and line 0
	 * are, as with no vector). Returns 0 or a negative errno.
	 */
	int (*irq_line)(void *opaque, unsigned line, unsigned level);
	/*
	 * Optional, both: move data between guest memory and a file without a
	 * copy through the device's memory (shared guest memory). read_to_fd
	 * writes guest [gpa, gpa + len) to fd at file offset foff (pwrite);
	 * write_from_fd reads fd at foff into guest [gpa, gpa + len) (pread).
	 * Done when the call returns; the library issues them only while no
	 * posted write is in flight (so they keep the DMA order above). They
	 * retry EINTR and short transfers. Return the bytes moved (fewer than
	 * len only at end of file), -EOPNOTSUPP when this range cannot be done
	 * so (the library then copies through a buffer with the DMA ops), or
	 * the file's negative errno.
	 */
	ssize_t (*dma_read_to_fd)(void *opaque, uint64_t gpa, size_t len, int fd, uint64_t foff);
	ssize_t (*dma_write_from_fd)(void *opaque, uint64_t gpa, size_t len, int fd, uint64_t foff);
};

/* What a device model implements. Every callback runs on the main loop's thread. */
struct vio_dev_ops {
	/* The driver reset the device (status 0) or the VM was reset. Optional. */
	void (*reset)(struct vio_dev *d);
	/*
	 * Queue q has (possibly) new available buffers: called from vio_dev_poll()
	 * after a notify, and for every enabled queue when DRIVER_OK is set.
	 */
	void (*queue_kick)(struct vio_dev *d, unsigned q);
	/* The driver wrote config bytes [off, off + len) (already stored). Optional. */
	void (*config_write)(struct vio_dev *d, uint32_t off, size_t len);
	/* Add the model's own fds to the select sets; returns the new nfds. Optional. */
	int (*prepare_fds)(struct vio_dev *d, int nfds, fd_set *rfds, fd_set *wfds);
	/* Serve the model's own fds after select; 0 or a negative errno that ends the loop. */
	int (*process_fds)(struct vio_dev *d, fd_set *rfds, fd_set *wfds);
};

/* One split virtqueue as the driver configured it. */
struct vio_queue {
	uint16_t size_max; /* what the device offers; 0 = queue absent */
	uint16_t size;	   /* negotiated size */
	bool enabled;
	uint64_t desc, avail, used;
	uint16_t last_avail; /* next avail ring entry to take */
	uint16_t avail_idx;  /* last avail->idx read from the guest */
	uint16_t used_idx;   /* next used ring entry to fill */
	uint32_t budget;     /* chains taken since the last kick; at size the queue yields */
	bool idx_read;	     /* avail->idx was read during the current kick */
	uint16_t ring_pos;   /* ring[k] is the avail entry at position ring_pos + k ... */
	uint16_t ring_n;     /* ... for k < ring_n */
	uint16_t ring[VIO_RING_CACHE];
	/*
	 * Notification suppression (virtqueue.c, "Notification suppression"
	 * in docs/virtio.md): VRING_AVAIL_F_NO_INTERRUPT and, with
	 * VIRTIO_F_EVENT_IDX, used_event and avail_event.
	 */
	uint16_t signalled_used;  /* used_idx when the interrupt was last decided */
	bool irq_check;		  /* used entries wait for a fresh read of flags / used_event */
	bool hint_valid;	  /* hint_* were read (maybe before the newest used entries) */
	uint16_t hint_flags;	  /* avail->flags as last read */
	uint16_t hint_used_event; /* used_event as last read */
	/* EVENT_IDX: the value last written to used->avail_event, and ev_state: 0 none
	 * written, 1 written, 2 and a later read of avail->idx saw that value. */
	uint16_t avail_event;
	uint8_t ev_state;
};

/* One guest buffer of a descriptor chain. */
struct vio_buf {
	uint64_t addr;
	uint32_t len;
};

struct vio_req;
struct vio_post;

/*
 * A descriptor chain taken from the available ring: n_rd device-readable
 * buffers buf[0..n_rd) followed by n_wr device-writable ones.
 */
struct vio_chain {
	uint16_t head;
	unsigned n_rd, n_wr;
	uint64_t rd_len, wr_len; /* total bytes of each kind */
	struct vio_buf *buf;
	unsigned cap; /* allocated entries of buf */
	/* Set by vio_queue_pop(), vio_chain_post() and vio_chain_on_error(). */
	struct vio_req *req;   /* writes posted to this chain, NULL: none */
	int post_err;	       /* a write of vio_chain_post() failed at once */
	uint32_t fail_written; /* used length if a posted write failed */
	int fail_tail;	       /* ... and the byte then put last, -1: none */
};

struct vio_dev {
	/* Identity and features, set by the model before it runs. */
	uint32_t device_id;
	uint64_t features; /* offered */
	unsigned num_queues;
	struct vio_queue q[VIO_MAX_QUEUES];
	uint8_t config[VIO_CONFIG_MAX]; /* device-specific configuration, little-endian */
	uint32_t config_len;
	uint32_t config_writable_off, config_writable_len; /* bytes the driver may change */
	const struct vio_dev_ops *ops;
	void *priv; /* the model's state */

	/* Transport state (the transport may be changed until the driver starts). */
	enum vio_transport transport;
	uint8_t status;
	uint8_t isr;
	uint8_t config_gen;
	uint32_t dev_feat_sel, drv_feat_sel;
	uint64_t driver_features;
	uint16_t queue_sel;
	uint32_t kick_pending; /* bit q: queue q was notified */
	bool kick_all;	       /* DRIVER_OK was set: look at every queue */
	bool verbose;	       /* also log the debug traces (status, notify, resets, ...) */
	/*
	 * Serving during DMA (vio_dev_set_ctx() with the PCI transport): the
	 * blocking DMA of vio_dev_poll() keeps serving the guest's register
	 * accesses (COREIO_DMA_SERVE), so MMIO callbacks may run while a
	 * queue is being processed. polling is set meanwhile (in
	 * vio_dev_poll() and around every blocking DMA of the host ops, so a
	 * model's own fd work is covered too); a reset asked
	 * for then (status 0, a VM reset), or while posted writes are in
	 * flight, is left pending until vio_dev_poll() can do it: status
	 * reads the old value and the driver's writes are ignored meanwhile
	 * (a driver waits for status 0 before it writes again, virtio 1.x,
	 * 2.4.1).
	 */
	bool serve_in_dma;
	bool polling;
	bool reset_pending;

	/* The PCI transport's MSI-X vectors (virtio_pci.c); VIO_PCI_NO_VECTOR: none. */
	struct {
		uint16_t config_vector;
		uint16_t queue_vector[VIO_MAX_QUEUES];
	} pci;

	/* Where the library's messages go (vio_dev_set_log()); NULL: nowhere. */
	void (*log)(void *opaque, int level, const char *msg);
	void *log_opaque;

	/* Host side. */
	const struct vio_host_ops *host;
	void *host_opaque;
	coreio_ctx_t *ctx;
	unsigned rid;
	unsigned long long stat_broken; /* rings found broken */

	/* Ring reads (virtqueue.c): one queue's descriptor table, or a window of it. */
	unsigned kicking;  /* queue + 1 that vio_dev_poll() is kicking, 0 outside */
	unsigned dc_q;	   /* queue + 1 whose descriptors desc_cache holds, 0 none */
	uint16_t dc_first; /* desc_cache holds descriptors dc_first .. dc_first + dc_n - 1 */
	uint16_t dc_n;
	uint8_t desc_cache[VIO_DESC_CACHE * 16u];
	uint8_t scratch[VIO_SCRATCH_LEN];

	/* Posted writes (virtqueue.c), oldest first, until their completion. */
	struct vio_post *post_head, *post_tail;
	size_t post_bytes;	/* their data bytes */
	uint64_t post_last_gpa; /* where the newest one writes */
	unsigned post_gen;	/* bumped by every reset: older completions are stale */
	int post_mode;		/* 0 not known yet, 1 posting works, -1 host cannot post */
	uint32_t post_stalled;	/* bit q: pop yielded for memory; kicked when it drains */
	uint32_t irq_checks;	/* bit q: queue q's irq_check is set (vio_queue_irq_checks()) */

	/* Counters, for --verbose and COREIO_VIRTIO_STATS (run.c) and the tests. */
	unsigned long long stat_dma_reads;   /* blocking reads (each a round trip) */
	unsigned long long stat_dma_writes;  /* blocking writes (each a round trip) */
	unsigned long long stat_dma_posted;  /* posted writes (nobody waits) */
	unsigned long long stat_post_errors; /* posted writes that failed */
	unsigned long long stat_chains;	     /* chains put in a used ring */
	/* vio_chain_pread() / vio_chain_pwrite(): file data moved by the host's fd ops
	 * (no copy), and file data copied through a buffer instead. */
	unsigned long long stat_fd_direct;	 /* fd op calls that moved data */
	unsigned long long stat_fd_direct_bytes; /* their bytes */
	unsigned long long stat_fd_bounce_bytes; /* bytes through a buffer (DMA + pread/pwrite) */
};

/*
 * Initialise d for a device.
 *   d          the device (zeroed and filled here)
 *   device_id  virtio device id (VIO_ID_*)
 *   features   feature bits offered; VIO_F_VERSION_1 is added,
 *              VIO_F_ACCESS_PLATFORM and VIO_F_EVENT_IDX are removed
 *   num_queues 1..VIO_MAX_QUEUES
 *   qsize_max  largest queue size offered, a power of two 1..32768
 *   ops        the model's callbacks (queue_kick required)
 *   priv       stored in d->priv
 * The host ops are left NULL: call vio_dev_set_ctx() or vio_dev_set_host().
 * VIO_F_EVENT_IDX is offered with vio_dev_set_event_idx() (vio_run() does
 * on shared-memory connections, see struct vio_cli's event_idx).
 * Returns 0 or -EINVAL for bad arguments.
 */
int vio_dev_init(struct vio_dev *d, uint32_t device_id, uint64_t features, unsigned num_queues,
		 unsigned qsize_max, const struct vio_dev_ops *ops, void *priv);

/*
 * Offer VIRTIO_F_EVENT_IDX (on) or stop offering it (off): used_event and
 * avail_event suppress interrupts and notifications the driver and the
 * device do not need (virtio 1.x, 2.7.7 and 2.7.10). Takes effect for the
 * next feature negotiation (call it before the driver starts). The avail
 * ring's NO_INTERRUPT flag is honoured either way. No return value.
 */
void vio_dev_set_event_idx(struct vio_dev *d, bool on);

/*
 * Route d's DMA and interrupt through a CoreIO context: DMA with mid 0,
 * sid 0 (reads blocking; writes posted, except on a shared-memory
 * connection where every DMA is a memcpy anyway; file I/O of
 * vio_chain_pread() / vio_chain_pwrite() straight to and from shared guest
 * memory with coreio_ctx_dma_write_from_fd() / coreio_ctx_dma_read_to_fd()),
 * and the IRQ lines of range rid: iid 0 for the ISR's level (INTx), iid v
 * for a pulse of MSI-X vector v. With the PCI transport (set d->transport first) blocking DMA
 * also serves the guest's register accesses while it waits (serve_in_dma
 * above). No return value.
 */
void vio_dev_set_ctx(struct vio_dev *d, coreio_ctx_t *ctx, unsigned rid);

/* Route d's DMA and interrupt through host (e.g. a fake memory in tests). */
void vio_dev_set_host(struct vio_dev *d, const struct vio_host_ops *host, void *opaque);

/*
 * Send d's messages to fn (the library itself never prints).
 *   fn      called with opaque, a COREIO_LOG_* level of coreio.h and one
 *           line of text without a newline; NULL drops the messages
 *   opaque  passed to fn
 * Call it after vio_dev_init() (which clears it). Which messages come
 * depends on d->verbose: without it only warnings (the first "device needs
 * reset" of a run of them); with it also the debug traces. No return value.
 */
void vio_dev_set_log(struct vio_dev *d, void (*fn)(void *opaque, int level, const char *msg),
		     void *opaque);

/*
 * Format a message printf-style and hand it to d's log callback at level
 * (COREIO_LOG_*); nothing when no callback is set. Messages longer than
 * VIO_LOG_MAX - 1 bytes are cut. For the library's own use (and run.c).
 */
void vio_log(struct vio_dev *d, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Reset d now, or, while vio_dev_poll() is processing queues (an MMIO
 * callback served during its DMA, see serve_in_dma), once it is done. For
 * a reset of the whole VM (the runner's reset callback). No return value.
 */
void vio_dev_request_reset(struct vio_dev *d);

/*
 * Reset the device as status 0 does: status, features, ISR (line lowered),
 * every queue, the transports' state (PCI: every MSI-X vector back to
 * VIO_PCI_NO_VECTOR), then the model's reset callback. No return value.
 */
void vio_dev_reset(struct vio_dev *d);

/*
 * Mark the device broken (DEVICE_NEEDS_RESET) and, if DRIVER_OK was set,
 * send a configuration change interrupt. why is logged (COREIO_LOG_WARNING,
 * "virtio: device needs reset: why") when the device was not yet marked,
 * or always when verbose.
 */
void vio_dev_needs_reset(struct vio_dev *d, const char *why);

/* True when queues may be processed: DRIVER_OK set, FAILED and NEEDS_RESET clear. */
bool vio_dev_running(const struct vio_dev *d);

/*
 * Raise the interrupt for isr_bits (VIO_ISR_QUEUE / VIO_ISR_CONFIG) the INTx
 * way: sets the ISR bits and drives line 0 high (until the driver reads or
 * acknowledges the ISR). Returns 0 or the irq_set error. Devices use
 * vio_dev_notify_queue() / vio_dev_notify_config(), which come here unless
 * the transport has a vector for the interrupt.
 */
int vio_dev_interrupt(struct vio_dev *d, uint8_t isr_bits);

/*
 * Tell the driver that queue q has used buffers. When the transport has an
 * MSI-X vector v for q (PCI, vio_dev_msix_vectors()), line v is pulsed
 * (host irq_line(v, 1) then irq_line(v, 0)) and the ISR is left alone;
 * otherwise the ISR's queue bit is set and line 0 goes high
 * (vio_dev_interrupt()). Returns 0 or the irq op's error.
 */
int vio_dev_notify_queue(struct vio_dev *d, unsigned q);

/*
 * Send a configuration change interrupt, through the transport's config
 * vector when it has one (as vio_dev_notify_queue()), else ISR bit 1 and
 * line 0. Callers check DRIVER_OK. Returns 0 or the irq op's error.
 */
int vio_dev_notify_config(struct vio_dev *d);

/*
 * The number of MSI-X vectors d offers: with the PCI transport one for
 * configuration changes plus one per queue, at most VIO_MSIX_MAX_VECTORS
 * (so 2..8); 0 with MMIO. The driver's vector numbers below it are kept
 * (config_msix_vector, queue_msix_vector), others read back
 * VIO_PCI_NO_VECTOR. Vector v is sent as a rising edge on the range's IRQ
 * line v, so the VM must give the range this many lines (line 0 being
 * also the INTx level line).
 */
unsigned vio_dev_msix_vectors(const struct vio_dev *d);

/*
 * Tell the driver that the device configuration changed: bump the config
 * generation and send a configuration change interrupt (if DRIVER_OK).
 */
void vio_dev_config_changed(struct vio_dev *d);

/*
 * Decide the interrupts left open by vio_queue_push() (bit q of
 * d->irq_checks): for each such queue one blocking read of the avail ring's
 * flags and used_event, made after the used entries were published, and the
 * interrupt (vio_dev_notify_queue()) when the driver asks for it. Called by
 * vio_dev_poll(); no return value (a failed read interrupts anyway).
 */
void vio_queue_irq_checks(struct vio_dev *d);

/*
 * Run the work the MMIO callbacks queued: a pending reset, then
 * ops->queue_kick for each notified (or, after DRIVER_OK, each enabled)
 * queue while the device runs, and the interrupt decisions left open
 * (vio_queue_irq_checks(), before and after the kicks). Call it from the
 * main loop, never from an MMIO callback. Returns true if any queue was
 * kicked.
 */
bool vio_dev_poll(struct vio_dev *d);

/*
 * Serve a guest read of the transport's register block (virtio_pci.c,
 * virtio_mmio.c).
 *   off  offset inside the block; taken modulo the block's size
 *        (PCI: COREIO_VPCI_BAR_SIZE; MMIO: VIO_MMIO_SIZE)
 *   len  bytes (1..8 from a guest)
 *   buf  receives the bytes, little-endian
 * Unknown offsets read 0. Returns 0 (never fails: a bad access reads 0).
 */
int vio_transport_read(struct vio_dev *d, uint64_t off, size_t len, void *buf);

/*
 * Serve a guest write of the transport's register block (see
 * vio_transport_read()). Unknown offsets and read-only fields are ignored.
 * Returns 0.
 */
int vio_transport_write(struct vio_dev *d, uint64_t off, size_t len, const void *buf);

/*
 * Take the next available descriptor chain of queue q.
 *   c  the chain to fill (zero-initialise it once; its buffer array is
 *      reused and grown; free it with vio_chain_free())
 * Every index and length read from the guest is checked: ring index and
 * descriptor index below the queue size, at most size descriptors per chain
 * (so no loops), indirect tables only if VIO_F_INDIRECT_DESC was negotiated
 * (length a non-zero multiple of 16, at most VIO_INDIRECT_MAX entries, no
 * nesting), readable buffers before writable ones, no address range wrapping,
 * at most VIO_CHAIN_MAX_LEN bytes in all.
 * At most size chains are handed out per kick: then the call returns 0 and
 * re-arms the kick, so the main loop serves the VM before going on; it
 * does the same while over VIO_POST_MAX / 2 bytes of posted writes are in
 * flight (kicked again when they drain).
 * Guest memory is read in batches: avail->idx once when the entries taken
 * so far are used up (at most once per kick inside vio_dev_poll(): a
 * driver notifies after adding buffers, and the next kick sees them), the
 * new ring entries in one DMA, the descriptor table in one DMA (one DMA
 * with the entries when the avail ring follows the table, as Linux lays
 * it out), each indirect table in one DMA.
 * A chain popped before without vio_queue_push() is abandoned.
 * Returns 1 with a chain, 0 when the ring is empty (or the queue is not
 * usable, or yields), -EPROTO when the ring is broken (the device is then marked
 * NEEDS_RESET), or the DMA error (-EFAULT when the guest gave addresses
 * outside RAM, which also marks NEEDS_RESET; -ECONNRESET, ...), -ENOMEM.
 */
int vio_queue_pop(struct vio_dev *d, unsigned q, struct vio_chain *c);

/*
 * Return chain c of queue q to the driver through the used ring with
 * written bytes written, bump used->idx and raise the queue interrupt
 * (vio_dev_notify_queue()) unless the driver suppressed it: when the avail
 * flags or used_event last read say the driver wants it, at once; else the
 * decision waits for a fresh read (vio_queue_irq_checks()).
 * The used element and used->idx are posted writes when the host can post
 * them. If writes were posted to c (vio_chain_post()) and are still in
 * flight, all of this happens later, from their completion; if one of them
 * failed, the chain is returned as vio_chain_on_error() said instead. The
 * interrupt is raised only once every write issued before it is in guest
 * memory. A posted used-ring write that fails marks the device NEEDS_RESET.
 * Returns 0, -EINVAL for a queue that is not enabled, or a negative errno
 * (a failed blocking DMA: the device is then marked NEEDS_RESET; or the
 * error that kept a write from being issued, -ECONNRESET, ...).
 */
int vio_queue_push(struct vio_dev *d, unsigned q, struct vio_chain *c, uint32_t written);

/*
 * Copy len bytes starting at byte off of the chain's readable buffers into
 * out. Returns 0, -EINVAL when [off, off + len) is beyond the readable
 * bytes, or the DMA error.
 */
int vio_chain_read(struct vio_dev *d, const struct vio_chain *c, uint64_t off, void *out,
		   size_t len);

/*
 * Copy len bytes from in to byte off of the chain's writable buffers.
 * Returns 0, -EINVAL when [off, off + len) is beyond the writable bytes,
 * or the DMA error.
 */
int vio_chain_write(struct vio_dev *d, const struct vio_chain *c, uint64_t off, const void *in,
		    size_t len);

/*
 * Copy len bytes from in to byte off of the chain's writable buffers,
 * without waiting: the bytes are copied, so in may be reused at once
 * (posted writes, or blocking writes where the host cannot post). A write
 * that fails in guest memory (a buffer outside RAM) is not reported here:
 * the chain is then returned as vio_chain_on_error() says.
 * Returns 0, -EINVAL when [off, off + len) is beyond the writable bytes,
 * or the error that kept a write from being issued (-ECONNRESET, ...).
 */
int vio_chain_post(struct vio_dev *d, struct vio_chain *c, uint64_t off, const void *in,
		   size_t len);

/*
 * Read len bytes of file fd from offset foff into the chain's writable
 * buffers from byte off (a disk read into the guest's buffers). Each
 * guest-contiguous run goes through the host's dma_write_from_fd op when
 * it has one and no posted write is in flight (shared guest memory: one
 * pread() into guest memory, no copy); otherwise (the op says -EOPNOTSUPP:
 * the socket) up to bounce_len bytes at a time are pread() into bounce and
 * written to the chain as vio_chain_post() does (posted, copied). bounce
 * NULL (or bounce_len 0) uses a small buffer of the library's (4 KiB).
 *   done  receives the bytes moved into the chain: len, or fewer when the
 *         file ended first (the rest of the range is left untouched), or
 *         those moved before an error
 * EINTR and short reads are retried. Returns 0 (check *done), -EINVAL when
 * [off, off + len) is beyond the writable bytes or foff + len passes
 * INT64_MAX, the file's negative errno, or the error that kept a write from
 * being issued (a write failing in guest memory makes the chain fail as for
 * vio_chain_post(), see vio_chain_on_error()).
 */
int vio_chain_pread(struct vio_dev *d, struct vio_chain *c, uint64_t off, int fd, uint64_t foff,
		    size_t len, void *bounce, size_t bounce_len, size_t *done);

/*
 * Write len bytes of the chain's readable buffers from byte off to file fd
 * at offset foff (a disk write of the guest's data). Each run goes through
 * the host's dma_read_to_fd op when it has one and no posted write is in
 * flight (one pwrite() from guest memory), else up to bounce_len bytes at
 * a time are read with blocking DMA into bounce and pwrite() from there
 * (bounce as vio_chain_pread()).
 *   done  receives the bytes written to the file: len, or fewer before an
 *         error or when pwrite() wrote nothing
 * Returns 0 (check *done), -EINVAL as vio_chain_pread(), the DMA error of
 * a read from the guest (-EFAULT, ...), or the file's negative errno.
 */
int vio_chain_pwrite(struct vio_dev *d, const struct vio_chain *c, uint64_t off, int fd,
		     uint64_t foff, size_t len, void *bounce, size_t bounce_len, size_t *done);

/*
 * True when vio_chain_pread() / vio_chain_pwrite() are likely to move data
 * without a copy: the host has the fd ops and, for a CoreIO context
 * (vio_dev_set_ctx()), the connection negotiated shared memory. A model
 * uses it to skip reading data ahead into its own buffer (a hint: the
 * calls work either way).
 */
bool vio_dev_fd_direct(const struct vio_dev *d);

/*
 * Say how vio_queue_push() returns chain c if a write posted to it failed:
 * with used length written and, when tail is 0..255, that byte first put
 * in the chain's last writable byte (a status byte). The default after
 * vio_queue_pop() is length 0 and no tail. No return value.
 */
void vio_chain_on_error(struct vio_chain *c, uint32_t written, int tail);

/*
 * Wait until every write posted so far is in guest memory (one blocking
 * read behind them). Used before a driver reset completes. Returns 0 or
 * the read's error (the writes are in order either way).
 */
int vio_posted_barrier(struct vio_dev *d);

/* Free a chain's buffer array (the chain may be used again); abandons posted writes' chain. */
void vio_chain_free(struct vio_chain *c);

/* Store a little-endian value of n bytes (1, 2, 4, 8) at p. */
void vio_put_le(uint8_t *p, uint64_t v, unsigned n);

/* Load a little-endian value of n bytes (1, 2, 4, 8) from p. */
uint64_t vio_get_le(const uint8_t *p, unsigned n);

/* The command line options every device model shares. */
struct vio_cli {
	const char *target;
	unsigned rid;
	enum vio_transport transport;
	bool verbose;
	/*
	 * --event-idx: whether VIRTIO_F_EVENT_IDX is offered. Auto (0, the
	 * default): only on a shared-memory connection, where the extra ring
	 * accesses it needs are memcpys; over a socket each is a round trip
	 * (measured: 4 KiB QD1 over TCP 0.27-0.29 of QEMU's device with it,
	 * 0.35-0.40 without).
	 */
	enum { VIO_EVENT_IDX_AUTO, VIO_EVENT_IDX_ON, VIO_EVENT_IDX_OFF } event_idx;
};

/* getopt_long entries of the shared options, to put in a model's table. */
#define VIO_CLI_OPTIONS                                                                            \
	{"rid", required_argument, NULL, 0x100}, {"transport", required_argument, NULL, 0x101},    \
	    {"verbose", no_argument, NULL, 0x102}, {"no-event-idx", no_argument, NULL, 0x103},     \
	    {"event-idx", required_argument, NULL, 0x104},                                         \
	{                                                                                          \
		"help", no_argument, NULL, 'h'                                                     \
	}

/* Usage lines of the shared options, for a model's --help. */
#define VIO_CLI_USAGE                                                                              \
	"  TARGET               host:port, [v6addr]:port, host or unix:/path of the VM\n"          \
	"  --rid N              range id to serve (default 0)\n"                                   \
	"  --transport pci|mmio virtio-pci modern BAR 0 layout (default) or virtio-mmio v2\n"      \
	"  --verbose            log what the device does on stderr\n"                              \
	"  --event-idx auto|on|off  offer VIRTIO_F_EVENT_IDX: auto (default) only when DMA\n"      \
	"                       is by shared memory (over a socket each check is a round trip)\n"  \
	"  --no-event-idx       the same as --event-idx off\n"                                     \
	"  --help               this text\n"

/*
 * Handle one of the shared options returned by getopt_long.
 *   cli   filled in
 *   c     the option character (0x100.. as in VIO_CLI_OPTIONS)
 *   arg   optarg
 *   prog  program name for error messages
 * Returns 1 when c was a shared option and was accepted, 0 when c is not a
 * shared option, -1 after printing an error for a bad value.
 */
int vio_cli_option(struct vio_cli *cli, int c, const char *arg, const char *prog);

/*
 * Connect to cli->target, register range cli->rid for d's transport, and
 * serve it until the VM goes away or a model callback fails.
 * Returns the error that ended the loop (negative errno); never returns 0.
 */
int vio_run(struct vio_dev *d, const struct vio_cli *cli, const char *prog);

#endif
