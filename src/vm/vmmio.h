/* coreio-vm: the CoreIO service: ports, client connections, vMMIO ranges, IRQs and DMA. */
#ifndef COREIO_VM_VMMIO_H
#define COREIO_VM_VMMIO_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "ioreq.h"
#include "irq.h"
#include "mem.h"
#include "wire.h"

#define VMMIO_SEND_TIMEOUT_MS 10000	 /* a client that does not read for this long is dropped */
#define VMMIO_OUT_MAX	      (1u << 20) /* queued output above this drops the client */
#define VMMIO_OUT_PAUSE	      (256u << 10) /* above this a client's requests are not read */

struct vmmio;
struct vmmio_conn;

/* A listening socket and the ranges served on it (rid = index). */
struct vmmio_port {
	struct vmmio *v;
	const struct range_config *cfg; /* the first range naming this port */
	bool is_unix;
	int listen_fd;
	char display[160]; /* "127.0.0.1:43217", "[::1]:43219" or "unix:/path" */
	struct vmmio_range *ranges[CONFIG_MAX_PER_PORT];
	unsigned nranges;
};

/* One --vmmio range. */
struct vmmio_range {
	unsigned g; /* global index, command-line order */
	uint64_t start;
	uint64_t size;
	int irqs[CONFIG_MAX_IRQS];
	unsigned nirq;
	bool acked; /* writes=acked */
	struct vmmio_port *port;
	unsigned rid;
	struct vmmio_conn *owner; /* the claiming connection, or NULL */
};

/* Called whenever a range is claimed (qtest's vmmio_wait listens). */
typedef void (*vmmio_claim_fn)(unsigned g, void *opaque);

struct vmmio {
	struct ioreq_ctx *io;
	struct mem *mem;
	struct irq_chip *irq;
	bool trace;
	struct vmmio_port ports[CONFIG_MAX_RANGES];
	unsigned nports;
	struct vmmio_range ranges[CONFIG_MAX_RANGES];
	unsigned nranges;
	struct vmmio_conn *conns;
	unsigned next_conn_id;
	vmmio_claim_fn on_claim;
	void *claim_opaque;
	int timer_fd;			 /* once a second: drop clients whose output is stuck */
	uint8_t tx[COREIO_WIRE_MAX_MSG]; /* DMA answers */
};

/*
 * Create the ranges of cfg, register each as an MMIO handler with io, open
 * and announce ("listening on ...") every port, and watch them in the event
 * loop (event_init() must have run).
 * Returns 0, or a negative errno after printing why on stderr.
 */
int vmmio_init(struct vmmio *v, const struct vm_config *cfg, struct ioreq_ctx *io, struct mem *mem,
	       struct irq_chip *irq);

/* Close every connection and port and remove UNIX socket files. */
void vmmio_exit(struct vmmio *v);

/*
 * The MMIO handler of a range (opaque = struct vmmio_range *): with no
 * client, reads give 0xAA bytes and writes are dropped (returns 0);
 * otherwise the request is sent to the claiming connection. Returns 0 for a
 * posted write (done) or IOREQ_PENDING when the answer will complete req
 * through ioreq_complete().
 * Threads: called through emulate_io() by a vCPU thread holding the VM lock
 * (io->lock), or by qtest on the I/O thread. It never blocks: a frame the
 * socket does not take at once is queued for the I/O thread.
 * Every vmmio callback of the I/O thread (accept, socket events, the stuck
 * timer), vmmio_reset() and vmmio_exit() take the VM lock themselves.
 */
int vmmio_submit(struct io_request *req, void *opaque);

/*
 * Reset: send RESET to every connection, complete requests in flight as
 * unclaimed, and drop every IRQ source to 0. Claims stay.
 */
void vmmio_reset(struct vmmio *v);

/* Range g, or NULL if there is no such range. */
const struct vmmio_range *vmmio_range(const struct vmmio *v, unsigned g);

/* Set the callback run on every successful claim (NULL for none). */
void vmmio_set_claim_cb(struct vmmio *v, vmmio_claim_fn fn, void *opaque);

#endif
