/* coreio-vm: the CoreIO service: ports, client connections, vMMIO ranges, IRQs and DMA. */
#ifndef COREIO_VM_VMMIO_H
#define COREIO_VM_VMMIO_H

/*
 * The service is split by concern (vmmio_internal.h has the locks and
 * threads): vmmio.c this API; vmmio_req.c the ioreq adapter (vmmio_submit()
 * and the wait); vmmio_conn.c the connection object; vmmio_proto.c the
 * protocol handlers; vmmio_port.c the listeners; vmmio_shm.c the shared
 * memory map; vmmio_poll.c the adaptive spin; vmmio_inject.c fault injection
 * (inject.h's rules applied, the delay timer, --fault-socket).
 */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "inject.h"
#include "iommu.h"
#include "ioreq.h"
#include "irq.h"
#include "mem.h"
#include "wire.h"

#define VMMIO_SEND_TIMEOUT_MS 10000	 /* a client that does not read for this long is dropped */
#define VMMIO_OUT_MAX	      (1u << 20) /* queued output above this drops the client */
#define VMMIO_OUT_PAUSE	      (256u << 10) /* above this a client's requests are not read */
#define VMMIO_CORK_MAX	      (256u << 10) /* a corked batch of answers is sent from this size */
#define VMMIO_UNIX_SNDBUF     (4 << 20)	   /* SO_SNDBUF of UNIX connections (wmem_max caps it) */

struct vmmio;
struct vmmio_conn;
struct coreio__tls_creds; /* tls.h: the credentials of the tls=on ports */

#define VMMIO_SHM_MAX COREIO_WIRE_SHM_MAX_REGIONS /* regions of a shared memory map */

/* One region of guest memory offered for shared-memory DMA (COREIO_CAP_SHM). */
struct vmmio_shm_region {
	uint64_t gpa, size;
	uint64_t offset; /* of gpa in the file */
	int fd;		 /* a memory file sealed against shrinking */
};

/* A listening socket and the ranges served on it (rid = index). */
struct vmmio_port {
	struct vmmio *v;
	const struct range_config *cfg; /* the first range naming this port */
	bool is_unix;
	bool shm; /* shm=on: COREIO_CAP_SHM is offered (UNIX ports only) */
	bool tls; /* tls=on: every connection starts with a TLS 1.3 handshake */
	int listen_fd;
	char display[160]; /* "127.0.0.1:43217", "[::1]:43219" or "unix:/path" */
	struct vmmio_range *ranges[CONFIG_MAX_PER_PORT];
	unsigned nranges;
	unsigned nconns; /* open connections (VM lock), at most cfg->max_conns */
	/* Rate-limited log of refused connections (VM lock): one line a second. */
	long long refuse_log_ms; /* when the last one was printed */
	unsigned refuse_quiet;	 /* refusals since then not printed */
};

#define VMMIO_TICK_MS	    100	 /* the service's timer: deadlines are checked this often */
#define VMMIO_TIMED_MAX	    64	 /* requests with an answer deadline per connection */
#define VMMIO_REFUSE_LOG_MS 1000 /* at most one refusal line a second per port */

/* The counters of access control and limits (VM lock), printed at exit when not all zero. */
struct vmmio_limit_stats {
	uint64_t dma_refused;	   /* DMA pieces outside the port's dma= policy */
	uint64_t answer_timeouts;  /* accesses that missed their range's timeout= */
	uint64_t peers_refused;	   /* UNIX peers not in allow-uid=/allow-gid= */
	uint64_t over_cap;	   /* connections over max-conns= */
	uint64_t hello_timeouts;   /* connections that sent no frame within --peer-timeout */
	uint64_t partial_timeouts; /* connections stuck inside a frame for --peer-timeout */
	uint64_t tls_refused; /* failed or stalled TLS handshakes, TLS clients on plain ports */
};

/* One --vmmio range. */
struct vmmio_range {
	unsigned g; /* global index, command-line order */
	uint64_t start;
	uint64_t size;
	int irqs[CONFIG_MAX_IRQS];
	unsigned nirq;
	bool acked;	  /* writes=acked */
	unsigned busy_us; /* poll=busy:USEC: a waiting vCPU spins this long first;
			   * poll=adaptive:USEC: at most this long */
	bool adaptive;	  /* poll=adaptive: the spin follows spin_ns */
	unsigned spin_ns; /* adaptive: the spin of the next wait (vmmio_poll_window()) */
	uint64_t waits;	  /* waits for this range's client (vCPUs, qtest) */
	uint64_t spun;	  /* ... of which the answer came while the waiter spun */
	/* The I/O thread's wait that stopped spinning before its answer came
	 * (qtest): the answer adapts spin_ns (req_answer()). VM lock. */
	struct {
		struct io_request *req; /* NULL: none */
		long long start;	/* ns */
		unsigned window;	/* the spin it had, ns */
	} late;
	struct vmmio_port *port;
	unsigned rid;
	struct vmmio_conn *owner; /* the claiming connection, or NULL */
	unsigned timeout_ms;	  /* timeout=MS: answer deadline; 0: none */
	struct inject_set inject; /* fault-injection rules and counters (VM lock) */
};

#define VMMIO_DELAY_MAX		64    /* accesses held back by delay= rules at once */
#define VMMIO_INJECT_ANSWER_MAX 16384 /* an answer line of vmmio_inject_command() */
#define VMMIO_FAULT_CLIENTS	8     /* --fault-socket connections at once */

struct vmmio_fault_srv; /* --fault-socket (vmmio_inject.c) */

/* An access held back by a delay= rule until due_ns (VM lock). */
struct vmmio_delayed {
	struct io_request *req; /* NULL: a free slot */
	struct vmmio_range *rg;
	long long due_ns;
};

#define VMMIO_SPIN_MIN_NS 10000 /* poll=adaptive: a spin halved below this stops */

/*
 * The spin of a range's next vCPU wait under poll=adaptive, from the last
 * one (the policy of KVM's halt polling):
 *   window  the spin allowed to the wait that just ended, ns
 *   waited  how long that wait took until the answer, ns
 *   max     the range's bound (poll=adaptive:USEC), ns
 * Returns window unchanged when the answer came while spinning; max when
 * it came later but within max (a spin ends when the answer comes, so the
 * full bound costs nothing more while answers keep within it); when it
 * took longer than max, half the window, or 0 below VMMIO_SPIN_MIN_NS (one
 * slow answer does not stop the spinning, a run of them does within a few
 * waits, so a client slower than max costs little spinning). No errors.
 */
unsigned vmmio_poll_window(unsigned window, uint64_t waited, unsigned max);

/* Called whenever a range is claimed (qtest's vmmio_wait listens). */
typedef void (*vmmio_claim_fn)(unsigned g, void *opaque);

/*
 * Called whenever a range loses its client (the connection closed), with
 * the VM lock held, before the requests waiting on it complete.
 */
typedef void (*vmmio_release_fn)(unsigned g, void *opaque);

/*
 * Where guest-physical DMA (mid 0) goes: a host pointer for [gpa, gpa + len)
 * when the whole piece lies inside one piece of guest memory that allows
 * the access (write: into guest memory; else a read of it), else NULL.
 */
typedef void *(*vmmio_dma_ptr_fn)(void *opaque, uint64_t gpa, uint64_t len, bool write);

#define VMMIO_DMA_ASYNC_SEGS 32 /* guest-physical pieces of one asynchronous DMA piece */

/* One guest-physical piece of an asynchronous DMA piece. */
struct vmmio_dma_seg {
	uint64_t gpa;
	uint32_t len;
	uint32_t off; /* where its bytes are in the piece's data */
};

/*
 * A client's DMA piece into guest memory that vm_dma_ptr() does not reach
 * (vfio-user guest RAM without an fd), handed to the owner of that memory
 * (vmmio_set_dma_async()). The service fills everything; the owner moves
 * the bytes (write: data -> guest memory; read: guest memory -> data) and
 * then calls done() exactly once.
 */
struct vmmio_dma_async {
	bool write; /* into guest memory */
	unsigned nseg;
	/* In data order; each already allowed by the port's dma= policy (and
	 * translated by its IOMMU). A masked write has one per run of enabled
	 * bytes. */
	struct vmmio_dma_seg seg[VMMIO_DMA_ASYNC_SEGS];
	uint32_t len;  /* bytes of data */
	uint8_t *data; /* the piece's bytes */
	unsigned g;    /* a hint: the global index of the first range of the client's port */
	/*
	 * The piece is over: err 0, or a negative errno (the client's piece
	 * gets the error bit; the owner logs why). On the I/O thread, with the
	 * VM lock NOT held, never from inside the vmmio_dma_async_fn call.
	 * It answers the client, unparks its connection and frees op.
	 */
	void (*done)(struct vmmio_dma_async *op, int err);
};

/*
 * Take op (on the I/O thread, VM lock held): return 0 when op->done() will
 * be called later, or a negative errno when the piece fails at once
 * (done() is not called; the service answers with the error bit).
 */
typedef int (*vmmio_dma_async_fn)(void *opaque, struct vmmio_dma_async *op);

struct vmmio {
	struct ioreq_ctx *io;
	struct mem *mem;
	struct irq_chip *irq;
	bool trace;
	struct vmmio_port ports[CONFIG_MAX_RANGES];
	unsigned nports;
	struct vmmio_range ranges[CONFIG_MAX_RANGES];
	unsigned nranges;
	bool verbose;		      /* --verbose */
	unsigned peer_timeout_ms;     /* --peer-timeout; 0: none */
	struct vmmio_limit_stats lim; /* VM lock */
	struct vmmio_conn *conns;     /* VM lock (vmmio_internal.h) */
	unsigned next_conn_id;
	vmmio_claim_fn on_claim;
	void *claim_opaque;
	vmmio_release_fn on_release;
	void *release_opaque;
	vmmio_dma_ptr_fn dma_ptr; /* NULL: guest RAM (mem_ptr()) */
	void *dma_opaque;
	vmmio_dma_async_fn dma_async; /* NULL: a piece without a pointer fails */
	void *dma_async_opaque;
	struct iommu_set *iommu; /* the IOMMUs DMA with mid > 0 goes through, or NULL */
	int timer_fd;		 /* every VMMIO_TICK_MS: stuck output and deadlines */
	pthread_t io_thread;	 /* the thread that ran vmmio_init() and runs the loop */
	struct coreio__tls_creds *tls_creds; /* --tls-creds or --tls-psk, or NULL */
	atomic_uint tls_refs; /* on tls_creds: ours until vmmio_exit(), one per session */

	/* Shared-memory DMA: the map sent to connections with COREIO_CAP_SHM. */
	bool any_shm;				    /* some port has shm=on */
	struct vmmio_shm_region shm[VMMIO_SHM_MAX]; /* our own fds */
	unsigned nshm;
	uint64_t shm_gen; /* generation of that map */

	/* Fault injection (vmmio_inject.c, docs/fault-injection.md). VM lock. */
	unsigned inject_next_id;		       /* the id of the last rule added */
	int inject_timer_fd;			       /* fires when a delayed access is due */
	struct vmmio_delayed delayed[VMMIO_DELAY_MAX]; /* accesses held back by delay= */
	struct vmmio_fault_srv *fault;		       /* --fault-socket, or NULL */
};

/*
 * Load the TLS credentials of cfg (--tls-creds or --tls-psk) if any, create
 * the ranges of cfg, register each as an MMIO handler with io, open and
 * announce ("listening on ...") every port, and watch them in the event
 * loop (event_init() must have run).
 * Returns 0, or a negative errno after printing why on stderr.
 */
int vmmio_init(struct vmmio *v, const struct vm_config *cfg, struct ioreq_ctx *io, struct mem *mem,
	       struct irq_chip *irq);

/*
 * Bracket a batch of posted writes (the kvm accelerator's drain of
 * coalesced writes, kvm_accel_set_batch()), so that a batch costs one
 * send() per client, not one per write:
 *   begin true   with the VM lock held: until the end, the wait of a
 *                posted write made by this thread completes it without
 *                sending (any other request's wait still sends everything
 *                queued on its connection);
 *   begin false  on the same thread, with the VM lock NOT held (the
 *                caller dropped it): send what every connection queued.
 *   opaque  the struct vmmio.
 */
void vmmio_batch(void *opaque, bool begin);

/* Close every connection and port and remove UNIX socket files. */
void vmmio_exit(struct vmmio *v);

/*
 * The MMIO handler of a range (opaque = struct vmmio_range *), called
 * through emulate_io() with the VM lock (io->lock) held, by any front end:
 * a vCPU thread, qtest or mpqemu on the I/O thread. With no client, reads
 * give 0xAA bytes and writes are dropped (returns 0). Otherwise it encodes
 * the request and queues it on the claiming connection, in the order of
 * the calls (no system call: the VM lock is held), sets req->wait and
 * returns IOREQ_PENDING, also for a posted write. The caller must then call
 * req->wait(req), still holding the VM lock (ioreq.h): the wait drops the
 * lock, sends the frame and, for a posted write, completes req at once;
 * otherwise it waits by the range's poll= policy and completes req from the
 * answer. A vCPU thread may sleep there; on the I/O thread it only spins
 * and returns -EAGAIN when the spin is over, and the answer completes req
 * later (ioreq_complete() from the event loop).
 */
int vmmio_submit(struct io_request *req, void *opaque);

/*
 * Reset: send RESET to every connection, complete requests in flight as
 * unclaimed, and drop every IRQ source to 0. Claims stay.
 */
void vmmio_reset(struct vmmio *v);

/*
 * Reset one range (a PCI device reset in mpqemu mode): send RESET to the
 * connection that claimed range g, complete its requests of that range in
 * flight as unclaimed and drop its IRQ sources of that range to 0. The
 * claim stays. Nothing happens for an unclaimed or unknown range.
 */
void vmmio_reset_range(struct vmmio *v, unsigned g);

/*
 * Send guest-physical DMA (mid 0) through fn instead of guest RAM (NULL:
 * back to RAM). Call after vmmio_init().
 */
void vmmio_set_dma_ptr(struct vmmio *v, vmmio_dma_ptr_fn fn, void *opaque);

/*
 * Where a client's DMA piece goes when vm_dma_ptr() gives no pointer for
 * one of its guest-physical segments (NULL: it fails): fn gets the piece
 * and moves it asynchronously. Meanwhile that client connection is parked:
 * its later frames wait (its DMA is answered in order), nothing else does.
 * Only pieces received on the I/O thread go there. Call after vmmio_init().
 */
void vmmio_set_dma_async(struct vmmio *v, vmmio_dma_async_fn fn, void *opaque);

/*
 * Host pointer for a DMA (mid 0) to guest-physical [gpa, gpa + len), a
 * write into guest memory when write, else a read of it: through the hook
 * of vmmio_set_dma_ptr(), else guest RAM (mem_ptr(), all of it read-write).
 * Returns NULL unless the whole piece lies inside one piece of guest memory
 * that allows the access.
 */
void *vm_dma_ptr(const struct vmmio *v, uint64_t gpa, uint64_t len, bool write);

/*
 * Replace the memory map offered for shared-memory DMA (ports with shm=on)
 * and send it, as a new generation, to every connection that negotiated
 * COREIO_CAP_SHM. The fds are duplicated (the caller keeps its own); n = 0
 * offers no memory. In qtest and kvm modes vmmio_init() offers guest RAM;
 * mpqemu mode calls this on every SYNC_SYSMEM. Takes the VM lock (the
 * caller must not hold it). Does nothing when no port has shm=on.
 * Returns 0, -EINVAL (n > VMMIO_SHM_MAX), or the errno of a failed dup
 * (then no memory is offered).
 */
int vmmio_shm_set(struct vmmio *v, const struct vmmio_shm_region *r, unsigned n);

/*
 * Run one fault-injection command (docs/fault-injection.md): inject RANGE
 * RULE..., inject_clear [RANGE], inject_list [RANGE] or inject_stats
 * [RANGE], the same words from qtest and from --fault-socket. line is
 * modified. Takes the VM lock (the caller must not hold it). The one-line
 * answer ("OK ..." or "FAIL reason", no newline) goes to ans (len bytes,
 * VMMIO_INJECT_ANSWER_MAX is enough); an empty line gives an empty answer
 * (none is due). No errors beyond the answer.
 */
void vmmio_inject_command(struct vmmio *v, char *line, char *ans, size_t len);

/* Range g, or NULL if there is no such range. */
const struct vmmio_range *vmmio_range(const struct vmmio *v, unsigned g);

/* Set the callback run on every successful claim (NULL for none). */
void vmmio_set_claim_cb(struct vmmio *v, vmmio_claim_fn fn, void *opaque);

/*
 * Set the callback run when a claimed range loses its client (NULL for
 * none). It must not call vmmio functions that take the VM lock.
 */
void vmmio_set_release_cb(struct vmmio *v, vmmio_release_fn fn, void *opaque);

#endif
