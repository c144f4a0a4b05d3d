/* coreio-vm: the device side of QEMU's multi-process proxy (x-pci-proxy-dev), --accel mpqemu. */
#ifndef COREIO_VM_MPQEMU_H
#define COREIO_VM_MPQEMU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ioreq.h"
#include "irq.h"
#include "mpqemu_msg.h" /* the message layouts (src/wire) */
#include "pci.h"
#include "qside.h"
#include "vmmio.h"

/* What the device's one outstanding request is waiting for. */
enum mpqemu_wait {
	MPQEMU_IDLE = 0,
	MPQEMU_WAIT_BAR,      /* a BAR_READ / BAR_WRITE */
	MPQEMU_WAIT_CFGREAD,  /* a PCI_CFGREAD of the virtio cfg access window */
	MPQEMU_WAIT_CFGWRITE, /* a PCI_CFGWRITE of the virtio cfg access window */
};

struct mpqemu;

/* One proxied PCI device: a --vmmio pci range and the socket of its QEMU proxy. */
struct mpqemu_dev {
	struct mpqemu *mq;
	unsigned g; /* the range */
	int fd;	    /* the proxy's socket, -1 once closed */
	struct vmmio_range *range;
	struct pci_dev pci;
	struct ioreq_ctx bar_io; /* one MMIO handler: the range at the BAR's address */
	uint32_t bar_base;	 /* where bar_io's handler is, 0 for none */
	uint32_t logged_base;	 /* the BAR address last logged with memory decoding on */
	struct io_request req;	 /* the one request in flight */
	enum mpqemu_wait wait;
	uint32_t cfg_addr; /* MPQEMU_WAIT_CFGREAD: the configuration read to answer */
	unsigned cfg_len, data_off;
	int intr_fd, resample_fd; /* SET_IRQFD, -1 before */
	bool line;		  /* the device's INTx level */
	bool hotplug;		  /* hotplug=on: the orchestrator replaces dead instances */
	bool dead;		  /* this instance lost its client: BAR reads 0, writes dropped */
	unsigned instance;	  /* 1 for the --mpqemu-fd socket, +1 per replacement */
	/* Receive state of the current message. */
	uint8_t rx[MPQEMU_MSG_MAX];
	size_t rx_have;
	uint64_t rx_size; /* the header's size, once rx_have >= MPQEMU_HDR_SIZE */
	int rx_fds[MPQEMU_MAX_FDS];
	unsigned rx_nfds;
	bool rx_fd_overflow; /* more fds than MPQEMU_MAX_FDS, or truncated control data */
	/* Counters, printed at exit. */
	uint64_t bar_reads, bar_writes, cfg_reads, cfg_writes, irq_signals, resets;
	uint64_t dead_accesses; /* BAR accesses answered by a dead instance */
};

struct mpqemu {
	struct qside q; /* the service, IRQ chip, trace flag and control socket */
	struct mpqemu_dev devs[CONFIG_MPQEMU_MAX_DEVS];
	unsigned ndevs;
	unsigned nopen;			      /* device sockets still open */
	struct qside_map mem[MPQEMU_MAX_FDS]; /* the guest RAM QEMU shared (SYNC_SYSMEM) */
	unsigned nmem;
};

/*
 * Serve every --vmmio pci range of cfg as one PCI device on its --mpqemu-fd
 * socket: watch the sockets in the event loop, become the IRQ backend of
 * irq and the DMA target (mid 0) of v. With --mpqemu-control, report
 * claims and releases on that socket and take replacement device sockets
 * from it (hotplug=on ranges). vmmio_init() must have run.
 * Returns 0, or a negative errno after printing why (a fd that is not a
 * stream socket, or a control fd that is not a SOCK_SEQPACKET socket:
 * -ENOTSOCK).
 */
int mpqemu_init(struct mpqemu *mq, const struct vm_config *cfg, struct vmmio *v,
		struct irq_chip *irq);

/*
 * Stop reporting claims and releases to the orchestrator and stop marking
 * devices dead: the VM is shutting down. Call before vmmio_exit().
 */
void mpqemu_stop(struct mpqemu *mq);

/*
 * Close the device sockets, the control socket and eventfds, unmap guest
 * RAM and print each device's counters. Call after vmmio_exit() (which
 * completes requests in flight).
 */
void mpqemu_exit(struct mpqemu *mq);

/*
 * Host pointer for guest-physical [gpa, gpa + len) inside one region QEMU
 * shared (SYNC_SYSMEM), or NULL. opaque is the struct mpqemu. Every region
 * allows both directions (QEMU shares only RAM, no ROM, and SYNC_SYSMEM has
 * no access flags), so write is not looked at. The vmmio_dma_ptr_fn of
 * this mode.
 */
void *mpqemu_dma_ptr(void *opaque, uint64_t gpa, uint64_t len, bool write);

#endif
