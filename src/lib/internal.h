/* libcoreio internal: the context structure and the functions the library files share. */
#ifndef COREIO_LIB_INTERNAL_H
#define COREIO_LIB_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "coreio.h"
#include "wire.h"

struct coreio__tls;
struct coreio__tls_creds;
struct iovec;

/*
 * The request path in one paragraph (docs/libcoreio.md has the long form):
 * each connection has one receive owner at a time (conn.rx_busy, taken and
 * dropped under ctx->lock, never nested). The owner reads the socket and
 * routes every complete frame at once: answers to our own requests (hello,
 * claim, DMA pieces) update the context; requests of the VM (MMIO, its
 * pings, RESET) are appended to the context's request queue in arrival
 * order. Callbacks run only in coreio__serve() (or coreio__serve_requests()
 * from a COREIO_DMA_SERVE wait, dma.c), by one thread at a time
 * (ctx->serving): it takes the queue's head, runs the callback with no lock
 * held, sends the answer, and only then takes the next. A blocking DMA
 * waits by owning the DMA connection's receive side alone, so while a
 * callback waits for DMA nothing else is dispatched.
 *
 * Locks: ctx->lock guards every field of the context except the rx
 * buffers (the receive owner's) and the DMA send batch (conn[1].tx_lock).
 * conn[i].tx_lock serialises sends on connection i; take it before
 * ctx->lock, never after. No lock is held while a user callback runs or
 * while a thread sleeps in poll()/recv().
 */

#define COREIO__CONN_CTRL 0 /* claims, MMIO, IRQ */
#define COREIO__CONN_DMA  1 /* DMA only */
#define COREIO__NCONN	  2

#define COREIO__DMA_SLOTS	 1024u	    /* pieces in flight per context */
#define COREIO__DMA_MAX_INFLIGHT (4u << 20) /* piece bytes in flight per context */
#define COREIO__UNIX_SNDBUF	 (4 << 20)  /* SO_SNDBUF of UNIX connections (wmem_max caps it) */
#define COREIO__SEND_TIMEOUT_MS	 30000	    /* a VM that takes no data for this long is dead */
#define COREIO__HELLO_TIMEOUT_MS 2000
#define COREIO__TLS_TIMEOUT_MS	 5000 /* both TLS handshakes of a connect */
#define COREIO__CLAIM_TIMEOUT_MS 5000

struct coreio__xfer;

/* One connection to the VM. */
struct coreio__conn {
	int fd;			 /* -1 when closed */
	unsigned caps;		 /* negotiated COREIO_CAP_* bits */
	bool hello_wait;	 /* hello sent, answer not yet seen */
	pthread_mutex_t tx_lock; /* serialises sends */
	bool rx_busy;		 /* a thread owns rx (under ctx->lock) */
	bool parked;		 /* fd taken out of ctx->epfd while another thread reads it */
	struct coreio_wire_rx rx;
	struct coreio_wire_fdq fdq; /* fds that came with rx's bytes (the rx owner's) */
	bool rx_more;		    /* the last receive filled all it asked for: more may wait */
	struct coreio__tls *tls;    /* a tls: target's session (tran.c), else NULL */
	bool tls_ready;		    /* its handshake is done */
};

/* One region of guest memory the VM shared (SHM_MAP), mapped into this process. */
struct coreio__shm_region {
	uint64_t gpa, size;
	uint8_t *host; /* host address of gpa */
	void *map;     /* the mmap() (page-aligned), for munmap() */
	size_t maplen;
};

/* A complete memory map; freed (unmapped) when its last reference goes. */
struct coreio__shm_map {
	unsigned refs; /* under ctx->lock: ctx->shm holds one, each copy in progress one */
	unsigned n;
	struct coreio__shm_region r[COREIO_WIRE_SHM_MAX_REGIONS];
};

/* A registered range. */
struct coreio__reg {
	bool used;
	coreio_func_t f;
	void *priv;
};

/* A claim waiting for the VM's answer (CLAIM_ACK). */
enum coreio__claim_state {
	COREIO__CLAIM_IDLE = 0,
	COREIO__CLAIM_WAITING,
	COREIO__CLAIM_ANSWERED,
};

struct coreio__claim {
	enum coreio__claim_state state;
	uint32_t tag;
	int result; /* 0 or negative errno once answered */
};

/* One DMA piece in flight. */
struct coreio__piece {
	struct coreio__xfer *x; /* NULL when the slot is free */
	uint64_t off;		/* offset of the piece in the transfer */
	uint32_t len;
	uint32_t tag;
	uint8_t op;
	bool has_next;	/* the piece issued right after this one: nslot, ntag */
	uint16_t nslot; /* (its answer is expected next: direct receive) */
	uint32_t ntag;
};

/* At most this many LREAD answers are received straight into the caller's buffer per recvmsg(). */
#define COREIO__DIRECT_MAX 64
/* The most bytes one such recvmsg() takes for them (ctx->spill's size). */
#define COREIO__DIRECT_SPILL ((size_t)COREIO__DIRECT_MAX * COREIO_WIRE_MAX_MSG)

/*
 * A direct receive of LREAD answers (io.c, xfer.c): the pieces whose
 * answers are expected next, all of one transfer, in the order the VM
 * answers them. The receive owner of the DMA connection owns it.
 */
struct coreio__direct {
	struct coreio__xfer *x; /* x->receiving counts the plan while it is out */
	unsigned n;
	struct {
		uint64_t off; /* of the piece in x->buf */
		uint32_t len, tag;
		uint16_t slot;
	} p[COREIO__DIRECT_MAX];
	/* hdr[k]: the padding of piece k - 1 (under 64 bytes), then piece k's
	 * 24-byte header; hdr[n]: the last piece's padding. */
	uint8_t hdr[COREIO__DIRECT_MAX + 1][2 * COREIO_WIRE_UNIT];
	/* An answer received in part (its header checked, cont bytes of its
	 * frame in hand, its payload so far in place): the next receive
	 * continues it. cont_hdr is its header. */
	size_t cont;
	uint8_t cont_hdr[COREIO_WIRE_DATA_OFF];
};

/* One DMA transfer. */
struct coreio__xfer {
	bool write;
	bool blocking;
	bool done;   /* blocking: completed, the waiter may return */
	bool queued; /* on the issue queue */
	unsigned mid, sid, flags;
	uint64_t addr;
	uint8_t *buf;
	size_t len;
	size_t issued;	      /* bytes cut into pieces so far */
	unsigned outstanding; /* pieces sent and not answered */
	unsigned sending;     /* pieces whose data a send still reads from buf (xfer_pump) */
	unsigned receiving;   /* direct receives writing into buf now (io.c) */
	int err;	      /* 0, -EFAULT or -ECONNRESET */
	void (*cpl)(void *, int);
	void *cplp;
	struct coreio__xfer *prev, *next;   /* active list */
	struct coreio__xfer *qprev, *qnext; /* issue queue */
	struct coreio__xfer *dnext;	    /* done list (non-blocking only) */
};

/* The VM's requests on the control connection, in arrival order (64-byte units). */
struct coreio__reqq {
	uint8_t (*unit)[COREIO_WIRE_UNIT];
	size_t cap, head, n; /* ring of cap units */
};

struct coreio_ctx {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* broadcast when a transfer, claim or receive owner changes */
	bool connected;	     /* connect succeeded and no disconnect yet */
	int broken;	     /* 0, or the negative errno that killed the connection */
	unsigned offer;	     /* capabilities offered on the next connect */
	bool unix_target;    /* connected to a unix: target (SHM is offered only there) */
	int wake_fd;	     /* eventfd that wakes an event loop, -1 when closed */
	int epfd;	     /* coreio_ctx_get_fd(): both sockets and wake_fd, -1 when closed */
	unsigned busy_us;    /* coreio_ctx_set_busy_poll(): mainloop spins this long (atomic) */
	bool busy_set;	     /* set by the API: COREIO_BUSY_POLL_US is not read */
	struct coreio__conn conn[COREIO__NCONN];
	struct coreio__tls_creds *tls_creds; /* coreio_ctx_set_tls() or the environment's */

	void (*log_fn)(void *opaque, int level, const char *msg);
	void *log_opaque;

	struct coreio__reg reg[COREIO_WIRE_MAX_RID];
	struct coreio__claim claim[COREIO_WIRE_MAX_RID];
	uint8_t irq[COREIO_WIRE_MAX_RID][COREIO_WIRE_MAX_IID];
	uint32_t next_tag; /* claim tags */

	void (*reset_cb)(void *);
	void *reset_opaque;

	/* The VM's requests not yet served, and the one thread serving them. */
	struct coreio__reqq reqq;
	bool serving;

	/* DMA state, under lock. */
	struct coreio__piece piece[COREIO__DMA_SLOTS];
	uint16_t free_slot[COREIO__DMA_SLOTS];
	unsigned nfree;
	uint32_t tag_gen;
	size_t inflight_bytes;
	struct coreio__xfer *active;	      /* every transfer not yet completed */
	struct coreio__xfer *q_head, *q_tail; /* transfers with pieces left to send */
	struct coreio__xfer *d_head, *d_tail; /* completed, cpl not yet run */
	int last_slot, expect_slot; /* the piece issued last; the one answered next (-1: none) */
	uint32_t last_tag, expect_tag;
	struct coreio__direct direct; /* the DMA connection's receive owner's */
	/* COREIO__DIRECT_SPILL bytes (allocated at the first direct receive,
	 * freed with the context): what a direct receive took that was not
	 * planned goes here first. The DMA connection's receive owner's. */
	uint8_t *spill;

	/* Frames of DMA pieces are built here (an LWRITE's header only: its
	 * data goes from the caller's buffer, xfer.c) and sent without
	 * blocking; what the socket did not take is moved here. batch, tx_off
	 * and tx_len are under conn[1].tx_lock. dma_tx_pending (under lock)
	 * says that part of the batch still waits for socket space. */
	bool dma_tx_pending;
	size_t tx_off, tx_len;
	uint8_t batch[256 * 1024];

	/* Shared-memory DMA (shm.c). shm is the map mid 0 DMA copies through,
	 * under lock. The map being received (shm_build, shm_gen, shm_count,
	 * shm_bad) belongs to the receive owner of the DMA connection. */
	struct coreio__shm_map *shm;
	struct coreio__shm_map *shm_build;
	uint64_t shm_gen;
	uint64_t shm_count;
	bool shm_bad;	 /* the generation being received failed: ignore its frames */
	bool shm_warned; /* the fallback to the socket was logged */
};

/* base.c */

/*
 * Hand one message to ctx's log callback (coreio_ctx_set_log()); nothing
 * happens without one. No lock held.
 */
void coreio__log(struct coreio_ctx *ctx, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Milliseconds of CLOCK_MONOTONIC. */
long long coreio__now_ms(void);

/* Microseconds of CLOCK_MONOTONIC. */
long long coreio__now_us(void);

/*
 * Make an event loop sleeping on ctx wake up (any thread, lock held or
 * not): it writes ctx->wake_fd, except from inside ctx's own processing,
 * which looks at all its work again before it sleeps.
 */
void coreio__wake(struct coreio_ctx *ctx);

/* Mark the calling thread as inside ctx's processing; returns what to restore. */
const struct coreio_ctx *coreio__enter_process(const struct coreio_ctx *ctx);

/* Undo coreio__enter_process() with the value it returned. */
void coreio__leave_process(const struct coreio_ctx *outer);

/* xfer.c: DMA pieces in flight; knows nothing of receiving. */

/* The capabilities a hello offers (lock held or connect's thread): SHM only on unix: targets. */
static inline unsigned coreio__offered(const struct coreio_ctx *ctx)
{
	return ctx->unix_target ? ctx->offer : ctx->offer & ~COREIO_CAP_SHM;
}

/* Reset the DMA slot table of a context (lock held, nothing in flight). */
void coreio__xfer_init_locked(struct coreio_ctx *ctx);

/*
 * Queue transfer x (lock held): it joins the active list and, with bytes
 * to move, the issue queue; an empty transfer completes at once.
 */
void coreio__xfer_start_locked(struct coreio_ctx *ctx, struct coreio__xfer *x);

/*
 * Complete every transfer with err (lock held): free all slots, empty the
 * issue queue, wake blocking waiters, move non-blocking ones to the done
 * list.
 */
void coreio__xfer_fail_all_locked(struct coreio_ctx *ctx, int err);

/*
 * Handle a DMA answer (origin 1 READ/WRITEA/LREAD/LWRITE) that arrived on
 * the DMA connection. Unknown tags are ignored. No lock held.
 */
void coreio__xfer_answer(struct coreio_ctx *ctx, const struct coreio_wire_msg *m);

/*
 * Plan a direct receive into d (no lock held; the caller owns the DMA
 * connection's receive side): the pending LREAD pieces of one transfer
 * whose answers are expected next, in issue order, their answer frames
 * adding up to at most budget bytes (the first one's counted from byte
 * skip on: skip bytes of it are in hand, fewer than its frame has). hdr:
 * the first piece's answer header when it is in hand (skip >= 24), else
 * NULL: the piece answered next is predicted. Counts the plan in
 * x->receiving. Returns the number of pieces (0: nothing planned,
 * nothing counted).
 */
unsigned coreio__xfer_direct_plan(struct coreio_ctx *ctx, const uint8_t *hdr, size_t skip,
				  size_t budget, struct coreio__direct *d);

/*
 * True when the 24 bytes at h are the header of the successful answer to
 * the LREAD piece with tag and len, exactly as the frame decoder and
 * coreio__xfer_answer() would accept it (frame length for len).
 */
bool coreio__xfer_direct_hdr_ok(const uint8_t *h, uint32_t tag, uint32_t len);

/*
 * End a direct receive planned in d: its first ok pieces were answered
 * (their data is in the caller's buffer); the plan's count in
 * x->receiving goes, and x completes when nothing else holds it. No lock
 * held.
 */
void coreio__xfer_direct_done(struct coreio_ctx *ctx, struct coreio__direct *d, unsigned ok);

/*
 * Send what is left of the DMA batch, then as many queued pieces as slots
 * and limits allow, never blocking: when the socket is full the rest stays
 * in the batch (ctx->dma_tx_pending) until the socket takes it. No lock
 * held. Returns 0, or -ECONNRESET when the socket failed (the caller
 * fails the context).
 */
int coreio__xfer_pump(struct coreio_ctx *ctx);

/* io.c: sockets, receive owners, frame routing, the request queue and serving. */

/*
 * Mark the connection dead (lock held): remember err, shut both sockets
 * down so every blocked thread wakes, and complete every DMA transfer with
 * -ECONNRESET. Does nothing when already broken or not connected.
 */
void coreio__fail_locked(struct coreio_ctx *ctx, int err);

/* As coreio__fail_locked(), taking ctx->lock itself. */
void coreio__fail(struct coreio_ctx *ctx, int err);

/*
 * Why ctx cannot take a new request (lock held): -ENOTCONN when not
 * connected, -ECONNRESET when the connection broke, else 0.
 */
int coreio__down_locked(const struct coreio_ctx *ctx);

/*
 * Take the receive side of connection i for the calling thread (lock
 * held). Returns false when another thread has it.
 */
bool coreio__rx_take_locked(struct coreio_ctx *ctx, int i);

/*
 * An event loop found connection i owned by another thread (lock held):
 * leave it out of the loop's fd set until the owner gives it back
 * (coreio__rx_give_locked() puts it back and wakes the loop).
 */
void coreio__rx_park_locked(struct coreio_ctx *ctx, int i);

/*
 * Give back the receive side of connection i (lock held): waiters on
 * ctx->cond and event loops that left it out look again.
 */
void coreio__rx_give_locked(struct coreio_ctx *ctx, int i);

/*
 * Read what connection i has without blocking and route every complete
 * frame (see the paragraph at the top). The caller owns i's receive side
 * and holds no lock. Returns 0, or a negative errno when the connection
 * failed (already recorded with coreio__fail()).
 */
int coreio__rx_pull(struct coreio_ctx *ctx, int i);

/*
 * Send one 64-byte unit on connection i, waiting for socket space if need
 * be. Returns 0, or -ECONNRESET (the context is failed).
 */
int coreio__send_unit(struct coreio_ctx *ctx, int i, const uint8_t *unit);

/*
 * Serve the context's queue: the VM's requests in order (MMIO callbacks
 * and their answers, pings, the reset callback), then the completions of
 * finished non-blocking DMA. One thread at a time: returns at once when
 * another thread (or an outer call of this one) is serving. No lock held.
 */
void coreio__serve(struct coreio_ctx *ctx);

/*
 * Serve the VM's queued requests as coreio__serve() does, but run no DMA
 * completion: for a blocking DMA made with COREIO_DMA_SERVE (dma.c), whose
 * caller was promised that completions run only from its event loop.
 */
void coreio__serve_requests(struct coreio_ctx *ctx);

/* True when coreio__serve() has work (lock held). */
bool coreio__serve_pending_locked(const struct coreio_ctx *ctx);

/* Drop every queued request of the VM (lock held): at connect and disconnect. */
void coreio__reqq_clear_locked(struct coreio_ctx *ctx);

/* shm.c */

/*
 * Handle an SHM_MAP frame that arrived on connection i with the fds bound
 * to it (nfds of them, at most one kept in fds[0]). Every fd is closed or
 * kept in a mapping; a bad map never fails the connection: shared memory
 * is dropped (logged once) and DMA goes through the socket. Caller owns
 * the receive side of i and holds no lock.
 */
void coreio__shm_frame(struct coreio_ctx *ctx, int i, const struct coreio_wire_msg *m,
		       const int *fds, unsigned nfds);

/*
 * Copy a mid 0 DMA through the shared map when [addr, addr + len) lies
 * inside one region. No lock held; len > 0.
 * Returns 0 when copied, -ENOENT when the socket must carry it.
 */
int coreio__shm_copy(struct coreio_ctx *ctx, bool write, uint64_t addr, size_t len, void *buf);

/*
 * Forget the shared map and the one being received (lock held): at
 * disconnect, and after a hello that did not grant COREIO_CAP_SHM. Mappings
 * still used by a copy go when that copy ends.
 */
void coreio__shm_drop_locked(struct coreio_ctx *ctx);

/* Log once per connection why DMA goes through the socket. No lock held. */
void coreio__shm_warn(struct coreio_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- tran.c: a connection's bytes, over the plain socket or TLS ---- */

/*
 * Start TLS on both (connected) sockets of ctx and finish both handshakes
 * within timeout_ms, checking the VM's certificate against host. The
 * credentials are coreio_ctx_set_tls()'s, else the environment's
 * (COREIO_TLS_CREDS, or COREIO_TLS_PSK and COREIO_TLS_PSK_IDENTITY).
 * Returns 0, or a negative errno after logging why. No lock held.
 */
int coreio__tran_tls_start(struct coreio_ctx *ctx, const char *host, int timeout_ms);

/*
 * After a failed hello over TLS: read what the VM sent (for up to 200 ms)
 * and log its TLS alert, the reason it refused us, if there is one.
 */
void coreio__tran_explain(struct coreio_ctx *ctx);

/* Free c's TLS session, if any (before its fd closes). */
void coreio__tran_close(struct coreio__conn *c);

/*
 * Fill c->rx through c's TLS session, draining it: less than the room
 * comes back only when nothing is left to read without sleeping. With
 * held_only, from what the session holds only (the socket is not read).
 * Returns as coreio__wire_rx_fill().
 */
long coreio__tran_fill(struct coreio__conn *c, bool held_only);

/*
 * True when c's TLS session holds received bytes (decrypted, or read
 * ahead): they never make the fd readable, so the receiver takes them
 * (coreio__tran_fill()) before anyone sleeps on the fd.
 */
bool coreio__tran_held(const struct coreio__conn *c);

/* Why c's TLS session failed, in words ("" for a plain connection). */
const char *coreio__tran_error(const struct coreio__conn *c);

/*
 * Send up to len bytes of buf without blocking. Returns the bytes taken,
 * or -EAGAIN (with TLS: call again with the same buf), or another negative
 * errno. The caller holds c->tx_lock.
 */
ssize_t coreio__tran_send_nb(struct coreio__conn *c, const void *buf, size_t len);

/* As coreio__tran_send_nb(), for the bytes of niov iovecs in order. */
ssize_t coreio__tran_sendv_nb(struct coreio__conn *c, const struct iovec *iov, int niov);

/*
 * Send all len bytes, waiting for socket space up to timeout_ms (-1: no
 * limit). Returns 0 or a negative errno. The caller holds c->tx_lock.
 */
int coreio__tran_send_all(struct coreio__conn *c, const void *buf, size_t len, int timeout_ms);

#endif
