/* libcoreio internal: the context structure and the functions the library files share. */
#ifndef COREIO_LIB_INTERNAL_H
#define COREIO_LIB_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coreio.h"
#include "wire.h"

/*
 * Locking (the full story is in the comment at the top of dma.c):
 *   ctx->lock          protects every field of the context except the rx
 *                      buffers, the tx batch and the fds' use for I/O.
 *   conn[i].tx_lock    serialises sends on connection i (and guards the DMA
 *                      tx batch for i == 1). Lock order: tx_lock, then
 *                      ctx->lock; never take tx_lock while holding ctx->lock.
 *   reader role        conn[i].reader_depth / reader: the one thread that may
 *                      read connection i and use conn[i].rx. Taken and
 *                      released under ctx->lock, held without it, recursive
 *                      for its owner (nested callbacks).
 * No lock is held while a user callback runs.
 */

#define COREIO__CONN_CTRL 0 /* claims, MMIO, IRQ */
#define COREIO__CONN_DMA  1 /* DMA only */
#define COREIO__NCONN	  2

#define COREIO__DMA_SLOTS	 1024u		/* pieces in flight per context */
#define COREIO__DMA_MAX_INFLIGHT (512u * 1024u) /* piece bytes in flight per context */
#define COREIO__SEND_TIMEOUT_MS	 30000		/* a VM that takes no data for this long is dead */
#define COREIO__HELLO_TIMEOUT_MS 2000
#define COREIO__CLAIM_TIMEOUT_MS 5000

struct coreio__xfer;

/* One connection to the VM. */
struct coreio__conn {
	int fd;			 /* -1 when closed */
	unsigned caps;		 /* negotiated COREIO_CAP_* bits */
	bool hello_wait;	 /* hello sent, answer not yet seen */
	pthread_mutex_t tx_lock; /* serialises sends */
	pthread_t reader;	 /* owner of the reader role when reader_depth > 0 */
	int reader_depth;	 /* 0: nobody reads this connection */
	struct coreio_wire_rx rx;
	struct coreio_wire_fdq fdq; /* fds that came with rx's bytes (reader's, like rx) */
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
	int err;	      /* 0, -EFAULT or -ECONNRESET */
	void (*cpl)(void *, int);
	void *cplp;
	struct coreio__xfer *prev, *next;   /* active list */
	struct coreio__xfer *qprev, *qnext; /* issue queue */
	struct coreio__xfer *dnext;	    /* done list (non-blocking only) */
};

struct coreio_ctx {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* broadcast when a transfer, claim or reader role changes */
	bool connected;	     /* connect succeeded and no disconnect yet */
	int broken;	     /* 0, or the negative errno that killed the connection */
	unsigned offer;	     /* capabilities offered on the next connect */
	bool unix_target;    /* connected to a unix: target (SHM is offered only there) */
	int wake_fd;	     /* eventfd that wakes the select() loop, -1 when closed */
	unsigned busy_us; /* coreio_ctx_set_busy_poll(): mainloop spins this long (atomic access) */
	bool busy_set;	  /* set by the API: COREIO_BUSY_POLL_US is not read */
	struct coreio__conn conn[COREIO__NCONN];

	struct coreio__reg reg[COREIO_WIRE_MAX_RID];
	struct coreio__claim claim[COREIO_WIRE_MAX_RID];
	uint8_t irq[COREIO_WIRE_MAX_RID][COREIO_WIRE_MAX_IID];
	uint32_t next_tag; /* claim tags */

	void (*reset_cb)(void *);
	void *reset_opaque;
	bool reset_pending;

	pthread_t proc_owner; /* thread inside processfds when proc_depth > 0 */
	int proc_depth;

	/* DMA state, under lock. */
	struct coreio__piece piece[COREIO__DMA_SLOTS];
	uint16_t free_slot[COREIO__DMA_SLOTS];
	unsigned nfree;
	uint32_t tag_gen;
	size_t inflight_bytes;
	struct coreio__xfer *active;	      /* every transfer not yet completed */
	struct coreio__xfer *q_head, *q_tail; /* transfers with pieces left to send */
	struct coreio__xfer *d_head, *d_tail; /* completed, cpl not yet run */

	/* Frames of DMA pieces are built here and sent without blocking; batch,
	 * tx_off and tx_len are under conn[1].tx_lock. dma_tx_pending (under
	 * lock) says that part of the batch still waits for socket space. */
	bool dma_tx_pending;
	size_t tx_off, tx_len;
	uint8_t batch[64 * 1024];

	/* Shared-memory DMA (shm.c). shm is the map mid 0 DMA copies through,
	 * under lock. The map being received (shm_build, shm_gen, shm_count,
	 * shm_bad) belongs to the reader of the DMA connection. */
	struct coreio__shm_map *shm;
	struct coreio__shm_map *shm_build;
	uint64_t shm_gen;
	uint64_t shm_count;
	bool shm_bad;	 /* the generation being received failed: ignore its frames */
	bool shm_warned; /* the fallback to the socket was logged */
};

/* ctx.c */

/* The capabilities a hello offers (lock held or connect's thread): SHM only on unix: targets. */
static inline unsigned coreio__offered(const struct coreio_ctx *ctx)
{
	return ctx->unix_target ? ctx->offer : ctx->offer & ~COREIO_CAP_SHM;
}

/*
 * Mark the connection dead (lock held): remember err, shut both sockets
 * down so every blocked thread wakes, and complete every DMA transfer with
 * -ECONNRESET. Does nothing when already broken or not connected.
 */
void coreio__fail_locked(struct coreio_ctx *ctx, int err);

/* As coreio__fail_locked(), taking ctx->lock itself. */
void coreio__fail(struct coreio_ctx *ctx, int err);

/* Make the select() loop wake up (any thread, any lock state). */
void coreio__wake(struct coreio_ctx *ctx);

/* Milliseconds of CLOCK_MONOTONIC. */
long long coreio__now_ms(void);

/*
 * Try to take the reader role of connection i for the calling thread
 * (lock held). Returns true when taken (or already held: it nests).
 */
bool coreio__reader_try_locked(struct coreio_ctx *ctx, int i);

/* Give back one level of the reader role of connection i (lock held). */
void coreio__reader_release_locked(struct coreio_ctx *ctx, int i);

/* True when the calling thread holds the reader role of connection i (lock held). */
bool coreio__reader_mine_locked(struct coreio_ctx *ctx, int i);

/* io.c */

/*
 * Read what connection i has without blocking and process every complete
 * frame. The caller holds the reader role of i and not ctx->lock.
 * Returns 0, or a negative errno when the connection failed (already
 * recorded with coreio__fail()).
 */
int coreio__conn_service(struct coreio_ctx *ctx, int i);

/*
 * Run the reset callback if a RESET arrived and the completions of
 * finished non-blocking DMA transfers. Caller holds no lock.
 */
void coreio__run_deferred(struct coreio_ctx *ctx);

/* dma.c */

/*
 * Handle a DMA answer (origin 1 READ/WRITEA/LREAD/LWRITE) that arrived on
 * the DMA connection. Unknown tags are ignored. Caller holds no lock; the
 * function sends more pieces when slots were freed.
 */
void coreio__dma_answer(struct coreio_ctx *ctx, const struct coreio_wire_msg *m);

/*
 * Complete every transfer with err (lock held): free all slots, empty the
 * issue queue, wake blocking waiters, move non-blocking ones to the done
 * list.
 */
void coreio__dma_fail_all_locked(struct coreio_ctx *ctx, int err);

/*
 * Send what is left of the DMA batch, then as many queued pieces as slots
 * and limits allow, never blocking: when the socket is full the rest stays
 * in the batch (ctx->dma_tx_pending) for the next call, so a thread never
 * sits in send() while the VM waits for it to read. No lock held.
 */
void coreio__dma_pump(struct coreio_ctx *ctx);

/* Reset the DMA slot table of a context (lock held, nothing in flight). */
void coreio__dma_init_locked(struct coreio_ctx *ctx);

/* shm.c */

/*
 * Handle an SHM_MAP frame that arrived on connection i with the fds bound
 * to it (nfds of them, at most one kept in fds[0]). Every fd is closed or
 * kept in a mapping; a bad map never fails the connection: shared memory
 * is dropped (logged once) and DMA goes through the socket. Caller holds
 * the reader role of i and no lock.
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

/* Log once per connection, on stderr, why DMA goes through the socket. No lock held. */
void coreio__shm_warn(struct coreio_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
