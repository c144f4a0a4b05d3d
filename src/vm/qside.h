/* coreio-vm: the QEMU-hosted device side shared by --accel mpqemu and vfio-user (control socket,
 * device sockets, shared guest RAM, BAR 0 placement and guest accesses). */
#ifndef COREIO_VM_QSIDE_H
#define COREIO_VM_QSIDE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "event.h"
#include "ioreq.h"
#include "irq.h"
#include "vmmio.h"

/* The longest message on the control socket (docs/qemu-proxy.md, "Hot-plug"). */
#define QSIDE_CTL_MSG_MAX 128
/* At most this many fds are kept from one control message (the rest are closed). */
#define QSIDE_CTL_MAX_FDS 4
/* At most this many fds come with one recvmsg() on a device socket (control buffer size). */
#define QSIDE_RECV_FDS 16

/* The orchestrator's control socket (--mpqemu-control, SOCK_SEQPACKET). */
struct qside_ctl {
	int fd; /* -1 when there is none, or once closed */
	bool trace;
};

/* What both QEMU-hosted modes hold (the first member of struct mpqemu and struct vfu). */
struct qside {
	struct vmmio *v;
	struct irq_chip *irq;
	bool trace;
	struct qside_ctl ctl; /* --mpqemu-control */
};

/* What a mode hooks into the VM (qside_hook()); opaque is passed to each. */
struct qside_hooks {
	irq_backend_fn irq;	      /* the IRQ backend */
	vmmio_dma_ptr_fn dma_ptr;     /* the DMA target (mid 0) */
	vmmio_dma_async_fn dma_async; /* where what dma_ptr does not reach goes; NULL: none */
	vmmio_release_fn release;     /* a range lost its client */
	bool claims_always; /* claim and release callbacks even without a control socket */
	void *opaque;
};

/* One piece of guest RAM mapped from a memory file QEMU sent. */
struct qside_map {
	uint64_t gpa, size;
	uint8_t *host; /* host address of gpa, NULL when not mapped */
	void *map;     /* the mmap() (page-aligned), for munmap() */
	size_t maplen;
};

/* Why a memory file cannot back a piece of guest RAM (qside_mem_check()). */
enum qside_mem_bad {
	QSIDE_MEM_OK = 0,
	QSIDE_MEM_NOT_FILE,  /* not a regular file */
	QSIDE_MEM_PAST_END,  /* offset + size passes the file's end */
	QSIDE_MEM_TOO_LARGE, /* too large to map */
};

/*
 * Start q for cfg: the service v and IRQ chip irq; with --mpqemu-control,
 * the control socket, its messages going to ctl_cb(opaque)
 * (qside_ctl_open()). Returns 0 or a negative errno after printing why.
 */
int qside_init(struct qside *q, const struct vm_config *cfg, struct vmmio *v, struct irq_chip *irq,
	       event_cb ctl_cb, void *opaque);

/*
 * Become the IRQ backend and the DMA target of the VM; claims go to the
 * orchestrator and releases to h->release when there is a control socket
 * (or h->claims_always).
 */
void qside_hook(struct qside *q, const struct qside_hooks *h);

/* Stop the claim and release callbacks (shutting down; before vmmio_exit()). */
void qside_stop(struct qside *q);

/*
 * Stop the callbacks (qside_stop()), close the control socket and unhook
 * the IRQ backend and the DMA target. After vmmio_exit().
 */
void qside_exit(struct qside *q);

/*
 * Print "coreio-vm: MODE device G: " and the formatted text as one line on
 * stderr (mode "mpqemu" or "vfio-user").
 */
void qside_vlog(const char *mode, unsigned g, const char *fmt, va_list ap);

/* True when fd is an eventfd. */
bool qside_is_eventfd(int fd);

/* True when fd is an open stream socket. */
bool qside_is_stream_socket(int fd);

/*
 * Take fd (>= 0) as the control socket: check that it is a SOCK_SEQPACKET
 * socket (else print why and return -ENOTSOCK), make it close-on-exec and
 * watch it with cb(opaque). With fd < 0 there is none (c->fd = -1).
 * Returns 0 or a negative errno.
 */
int qside_ctl_open(struct qside_ctl *c, int fd, bool trace, event_cb cb, void *opaque);

/* Send one formatted message to the orchestrator, if there is one; never blocks. */
void qside_ctl_send(const struct qside_ctl *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Receive one message from the control socket into msg (room for
 * QSIDE_CTL_MSG_MAX + 1 bytes, NUL-terminated) with its first
 * QSIDE_CTL_MAX_FDS fds in fds (*nfds of them; more are closed) and
 * *trunc set when control data was cut or fds were closed. Returns the message's length; 0
 * when there is nothing to read; -1 when the socket closed or failed: then
 * it is closed (after printing why) and the event loop stops.
 */
int qside_ctl_recv(struct qside_ctl *c, char *msg, int *fds, unsigned *nfds, bool *trunc);

/* Stop watching and close the control socket, if open. */
void qside_ctl_close(struct qside_ctl *c);

/* A vmmio claim callback: tell the orchestrator "claimed G". opaque is the struct qside_ctl. */
void qside_ctl_on_claim(unsigned g, void *opaque);

/* Stop watching and close *fd if it is open, and set it to -1. */
void qside_sock_close(int *fd);

/*
 * recvmsg() at most len bytes of fd into buf without blocking; the fds
 * that come with them are appended to fds (*nfds of them, at most max; the
 * rest are closed and *overflow is set, as on cut control data). Returns
 * the bytes read, 0 at end of file, or a negative errno.
 */
ssize_t qside_recv(int fd, void *buf, size_t len, int *fds, unsigned *nfds, unsigned max,
		   bool *overflow);

/* Close the *n fds of fds that are >= 0; *n becomes 0. */
void qside_close_fds(const int *fds, unsigned *n);

/*
 * Send all len bytes of buf on the non-blocking socket fd (retrying on
 * EINTR). Returns NULL, or why not (a peer that does not read its answers
 * fills the socket).
 */
const char *qside_send_all(int fd, const void *buf, size_t len);

/*
 * Check that fd is a memory file holding [offset, offset + size); *file_size
 * is its size (0 when it is not a regular file).
 */
enum qside_mem_bad qside_mem_check(int fd, uint64_t offset, uint64_t size, uint64_t *file_size);

/*
 * Map m->size bytes at offset of fd read/write, shared (writes reach the
 * file) or private, and point m->host at them. Returns 0 or a negative
 * errno (m is not mapped).
 */
int qside_map(struct qside_map *m, int fd, uint64_t offset, bool shared);

/* Unmap m if it is mapped. */
void qside_unmap(struct qside_map *m);

/* Host pointer for guest-physical [gpa, gpa + len) inside mapped m, or NULL. */
void *qside_map_ptr(const struct qside_map *m, uint64_t gpa, uint64_t len);

/*
 * Re-create the BAR 0 handler io (its counters kept) and, with place,
 * register it for [base, base + size) to forward to range. Returns 0 or
 * the registration's negative errno.
 */
int qside_bar_move(struct ioreq_ctx *io, uint32_t base, uint64_t size, struct vmmio_range *range,
		   bool place);

/*
 * Fill req as a guest MMIO access of size bytes at addr (write: data, in
 * address order) that completes through complete(req, opaque).
 */
void qside_req_init(struct io_request *req, bool write, uint64_t addr, const uint8_t *data,
		    unsigned size, ioreq_done_fn complete, void *opaque);

/*
 * Run req through io as a vCPU would: under v's VM lock, the access and
 * the handler's wait (which sends it to the client). Returns IOREQ_PENDING
 * when it completes later, else req is complete (a refused access as a bus
 * error, -EIO).
 */
int qside_req_run(struct vmmio *v, struct ioreq_ctx *io, struct io_request *req);

#endif
