/* coreio-vm: the ACRN-style I/O request layer (PIO table, MMIO list, emulate_io). */
#ifndef COREIO_VM_IOREQ_H
#define COREIO_VM_IOREQ_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "mem.h"

/* A handler's answer meaning "not done yet; ioreq_complete() comes later". */
#define IOREQ_PENDING 1

enum io_req_type {
	REQ_PORTIO = 0,
	REQ_MMIO = 1,
};

/* The request state machine of docs/protocol.md. */
enum io_req_state {
	REQ_STATE_FREE = 0,	  /* owned by the vCPU */
	REQ_STATE_PENDING = 1,	  /* handed to a handler (the vmmio service) */
	REQ_STATE_PROCESSING = 2, /* sent to a client, waiting for its answer */
	REQ_STATE_COMPLETE = 3,	  /* result written; the vCPU runs the post step */
};

#define REQUEST_READ  0u
#define REQUEST_WRITE 1u

#define IOREQ_MAX_DATA 32u /* largest single access */
#define IOREQ_MAX_PAIR 16u /* largest element of a pair access */

struct pio_request {
	uint32_t direction; /* REQUEST_READ or REQUEST_WRITE */
	uint32_t address;   /* port number */
	uint32_t size;	    /* 1, 2 or 4 */
	uint32_t value;	    /* written value, or the value read */
};

struct mmio_request {
	uint32_t direction;	       /* REQUEST_READ or REQUEST_WRITE */
	uint64_t address;	       /* guest-physical address */
	uint32_t size;		       /* bytes: 1..32, or 1..16 per element of a pair */
	bool pair;		       /* a pair: elements at address and address + size */
	uint8_t data[IOREQ_MAX_DATA];  /* first element, bytes in address order */
	uint8_t data2[IOREQ_MAX_PAIR]; /* second element of a pair */
	uint32_t mask;		       /* write byte enables; 0 = all size bytes */
	uint32_t flags;		       /* COREIO_FLAGS_* access flags */
};

struct io_request;

/* Called by ioreq_complete() when a pending request is complete. */
typedef void (*ioreq_done_fn)(struct io_request *req, void *opaque);

struct io_request {
	uint32_t type;	/* enum io_req_type */
	uint32_t state; /* enum io_req_state */
	union {
		struct pio_request pio;
		struct mmio_request mmio;
	} reqs;
	int result; /* 0, or -EIO for a bus error */
	ioreq_done_fn complete;
	void *complete_opaque;
	/*
	 * Set by a handler that returned IOREQ_PENDING (vmmio: vmmio_wait()).
	 * The front end must call it at once, with the VM lock held (it
	 * releases and retakes it): it sends the request and, where it can,
	 * receives the answer on the calling thread. Returns 0 when the
	 * request is COMPLETE, or a negative errno when the caller must wait
	 * for the completion callback instead (and call it again after a
	 * wake-up that did not complete the request). NULL: nothing to do but
	 * wait for the callback.
	 */
	int (*wait)(struct io_request *req);
	/* The handler's bookkeeping while PROCESSING (no allocation per request). */
	struct {
		uint32_t tag;
		uint8_t op;
		void *owner;  /* vmmio: the connection */
		void *range;  /* vmmio: the range */
		bool counted; /* vmmio: this request's wait is in the range's count */
		struct io_request *next;
	} pend;
};

/*
 * A PIO or MMIO handler. Returns 0 when the request is done (reads filled
 * in), IOREQ_PENDING when it will call ioreq_complete() later, or a
 * negative errno for a bus error.
 */
typedef int (*io_handler_t)(struct io_request *req, void *opaque);

/* Every counter of the VM, in one place (qtest `stats`). */
struct vm_stats {
	uint64_t unhandled_reads;
	uint64_t unhandled_writes;
	uint64_t bus_errors;
	uint64_t straddles;
	uint64_t dma_ok;
	uint64_t dma_faults;
	uint64_t malformed;
	uint64_t shm_maps; /* shared memory maps sent to clients (COREIO_CAP_SHM) */
};

#define IOREQ_MAX_HANDLERS 64

struct ioreq_handler {
	uint64_t start; /* inclusive */
	uint64_t end;	/* exclusive */
	io_handler_t fn;
	void *opaque;
};

/*
 * The VM lock (lock) guards everything a request touches once it leaves RAM:
 * the handler tables, the state of every handler (vmmio connections, in-VMM
 * devices), the IRQ chip and the counters. A front end (a vCPU thread, or
 * qtest and mpqemu on the I/O thread) holds it around emulate_io() and
 * emulate_mmio_post(); the I/O thread holds it in every vmmio and device
 * callback. It is never held while blocking or across a system call on a
 * client socket: a request's wait drops it (vmmio_wait()).
 */
struct ioreq_ctx {
	pthread_mutex_t lock;
	struct mem *mem;
	struct ioreq_handler mmio[IOREQ_MAX_HANDLERS];
	unsigned nmmio;
	struct ioreq_handler pio[IOREQ_MAX_HANDLERS];
	unsigned npio;
	struct vm_stats stats;
};

/* Where an access lands. */
enum ioreq_class {
	IOREQ_CLASS_NONE = 0, /* nobody: neither RAM nor a handler */
	IOREQ_CLASS_RAM,      /* wholly inside RAM */
	IOREQ_CLASS_HANDLER,  /* wholly inside exactly one MMIO handler */
	IOREQ_CLASS_STRADDLE, /* touches two of them, or one only partly, or wraps */
};

/*
 * Initialise an empty layer over RAM mem (may be NULL: no RAM), with its
 * VM lock.
 */
void ioreq_init(struct ioreq_ctx *ctx, struct mem *mem);

/* Destroy the VM lock of ctx (no request may be in flight). */
void ioreq_exit(struct ioreq_ctx *ctx);

/*
 * Register a PIO handler for ports [start, end).
 * Returns 0, -EINVAL for an empty range or end > 0x10000, -EEXIST when it
 * overlaps a registered one, -ENOSPC when the table is full.
 */
int register_io_emulation_handler(struct ioreq_ctx *ctx, uint32_t start, uint32_t end,
				  io_handler_t fn, void *opaque);

/*
 * Register an MMIO handler for guest-physical [start, end).
 * Returns 0, -EINVAL for start >= end, -EEXIST when it overlaps a registered
 * handler, -ENOSPC when the list is full. RAM overlap is not checked here.
 */
int register_mmio_emulation_handler(struct ioreq_ctx *ctx, uint64_t start, uint64_t end,
				    io_handler_t fn, void *opaque);

/*
 * Classify the MMIO access [addr, addr + len), len >= 1.
 *   h  if not NULL, set to the handler for IOREQ_CLASS_HANDLER, else NULL.
 * Returns an enum ioreq_class. An access that wraps past 2^64 straddles.
 */
enum ioreq_class ioreq_classify(const struct ioreq_ctx *ctx, uint64_t addr, uint64_t len,
				const struct ioreq_handler **h);

/*
 * Emulate req (state FREE; type, reqs, complete and complete_opaque filled).
 * Order: RAM (direct), then the one MMIO handler holding the whole access,
 * then nobody (reads all ones, writes dropped, counted).
 * Returns 0 when the request is done (run emulate_mmio_post() now; a bus
 * error shows in req->result), IOREQ_PENDING when req->complete will be
 * called later, -EIO for a straddling access (counted; nothing done),
 * -EINVAL for a bad size or type, -EBUSY if req is not FREE.
 */
int emulate_io(struct ioreq_ctx *ctx, struct io_request *req);

/*
 * Mark a pending request COMPLETE and call its completion callback. Called
 * by the handler that returned IOREQ_PENDING, once, from the I/O thread
 * (with the VM lock held when vCPU threads exist).
 */
void ioreq_complete(struct io_request *req);

/*
 * The post step: a failed read becomes all ones (bus errors are counted
 * here), and req goes back to FREE. The read data is in req->reqs.
 * Returns req->result (0 or -EIO).
 */
int emulate_mmio_post(struct ioreq_ctx *ctx, struct io_request *req);

/* Byte-enable mask with the low size bits set (size 0..32). */
uint32_t ioreq_full_mask(unsigned size);

#endif
