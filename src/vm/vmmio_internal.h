/* coreio-vm: what the files of the CoreIO service (vmmio_*.c) share; front ends use vmmio.h. */
#ifndef COREIO_VM_VMMIO_INTERNAL_H
#define COREIO_VM_VMMIO_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <time.h>

#include "tls.h"
#include "vmmio.h"

/*
 * Threads, locks and who owns what (docs/architecture.md, "The VM half's
 * request path", has the same table):
 *
 *   VM lock (v->io->lock)  handler tables, range ownership (rg->owner),
 *                          v->conns, and per connection: pending requests
 *                          and tags, IRQ sources, capabilities; the
 *                          counters, the shared-memory map.
 *   c->tx_lock             the output queue (out, att, sent, out_since),
 *                          what epoll watches (watched, rx_muted) and
 *                          every send() on the socket.
 *   c->rx_lock             the receive buffer, every recv() on the socket,
 *                          and so the order in which frames run. Taken
 *                          with trylock; the "receive role".
 *   atomics                c->refs, c->dead, c->rx_more, c->dma_parked.
 *
 * Lock order: rx_lock, then the VM lock, then tx_lock, then the event
 * loop's internal mutex. No thread makes a send() or recv() system call on
 * a client socket with the VM lock held: a frame produced under the VM
 * lock is queued (conn_queue()) and sent by the same thread once it has
 * dropped the VM lock (conn_flush()); only if the socket is full does it
 * stay queued for the I/O thread (EPOLLOUT).
 *
 * Receiving: whoever holds c->rx_lock reads the socket and runs every
 * complete frame (conn_rx_drain()); an answer completes its request there,
 * whichever thread that is. A thread with input to run (conn_rx_kick())
 * that finds the lock taken sets c->rx_more and leaves; the holder runs
 * conn_rx_drain() again before it lets go (conn_rx_release()), so nothing
 * received waits while its receiver sleeps. The I/O thread watches every
 * connection edge-triggered (EPOLLIN | EPOLLET) and kicks the receiver
 * (conn_rx_kick()) on each arrival; only while a vCPU waits with the
 * receive role is EPOLLIN off (conn_rx_mute()): each arrival would wake the
 * I/O thread for nothing, and costs the spinning vCPU its CPU when they
 * share one (measured: +12 us per read, bench/mmio_latency.py).
 *
 * Lifetime: a connection lives until it is closed (conn_close()) and no
 * thread holds a reference (c->refs); then conn_free() runs on the I/O
 * thread, deferred (event_defer()), so after any event callback already
 * running for it, and only then is its fd closed, so no thread ever uses a
 * reused fd number. v->conns holds one reference; a thread that uses a
 * connection with the VM lock released takes its own (conn_get()). The I/O
 * thread's event callbacks need none.
 *
 * The ordering contract is kept where the comments say "Order:" (grep for
 * it): per connection, requests go out in the order the VM made them;
 * every complete frame received runs before its receiver sleeps; a frame
 * to send leaves before the producing call returns (or waits, queued, for
 * EPOLLOUT); corked batches are sent before sleeping.
 */

#define VMMIO_RX_ROUNDS	  16	/* receives per I/O-thread wake-up: no client starves others */
#define VMMIO_CONNSET_MAX 32	/* connections in a struct vmmio_connset */
#define VMMIO_POLL_MS	  1000	/* a sleeping vCPU looks again this often, whatever happens */
#define VMMIO_OTHERS_NS	  10000 /* the I/O thread's spin serves other clients from here on */
#define VMMIO_WATCH	  (EPOLLIN | EPOLLET) /* what the I/O thread watches, but see rx_muted */

/* One client connection (docs/architecture.md: the connection object). */
struct vmmio_conn {
	struct vmmio *v;
	struct vmmio_port *port;
	int fd; /* open until conn_free() */
	unsigned id;
	char peer[160];
	atomic_uint refs;    /* v->conns' own, plus one per thread using it unlocked */
	atomic_bool dead;    /* closed: set once, with the VM lock held */
	atomic_bool rx_more; /* input may wait that the rx_lock holder has not run yet */
	/* A DMA piece of this connection waits for the owner of its memory
	 * (vmmio_set_dma_async()): its later frames are not run. Set with the
	 * VM lock held, cleared when the piece is answered. */
	atomic_bool dma_parked;

	/* VM lock. */
	struct vmmio_conn *next; /* v->conns */
	uint32_t caps;		 /* negotiated COREIO_CAP_* */
	uint32_t next_tag;
	/* Requests sent and waiting for their answer, linked by req->pend.next. */
	struct io_request *pending;
	struct irq_source src[CONFIG_MAX_PER_PORT][CONFIG_MAX_IRQS]; /* [rid][iid] */

	/* tx_lock: output not sent yet, oldest first. */
	pthread_mutex_t tx_lock;
	uint8_t *out;
	size_t out_off, out_len, out_cap; /* unsent bytes are out[out_off .. out_len) */
	long long out_since;		  /* ms: queue became non-empty, or last progress */
	uint32_t watched;		  /* the events epoll watches for fd (conn_watch()) */
	/* A vCPU waits with the receive role (tx_lock and rx_lock to change it):
	 * EPOLLIN is off, so that answers it receives itself do not wake the
	 * I/O thread too (conn_rx_mute()). */
	bool rx_muted;
	uint64_t sent; /* bytes sent on the socket so far */
	/* SHM_MAP frames queued with their fds: each fd goes with a sendmsg()
	 * of its frame alone, at stream offset pos (docs/protocol.md). */
	struct {
		uint64_t pos;
		int fd; /* our duplicate */
	} att[2 * VMMIO_SHM_MAX];
	unsigned natt;

	/* rx_lock. */
	pthread_mutex_t rx_lock;
	struct coreio_wire_rx rx;
	bool rx_checked; /* plain port: the stream's first bytes were checked for TLS */

	/* TLS (tls=on ports, vmmio_tls.c). The session is used for receiving
	 * with rx_lock held and for sending with tx_lock held; the handshake
	 * holds both. */
	struct coreio__tls *tls; /* NULL: a plain connection */
	atomic_bool tls_ready;	 /* the handshake is complete: frames may flow */
	bool tls_want_out;	 /* tx_lock: the handshake waits for room (EPOLLOUT) */
	bool quiet;		 /* VM lock: conn_close() logs nothing (a logged refusal) */

	/* Deadlines (docs/security.md). */
	char peer_key[64];	    /* "pid N" (UNIX) or the address (TCP): one client's pair */
	long long since_ms;	    /* accepted at */
	bool greeted;		    /* VM lock: a complete frame was received */
	atomic_llong partial_since; /* ms: part of a frame waits since; 0: none */
	bool dma_logged;	    /* VM lock: a refused DMA was logged */
	uint64_t dma_refused;	    /* VM lock: DMA refused by the port's dma= */
	/* VM lock: requests with an answer deadline (timeout=), by request. */
	struct {
		struct io_request *req; /* NULL: a free slot */
		long long deadline;	/* ms */
	} timed[VMMIO_TIMED_MAX];
};

/* What conn_rx_drain() stopped at. */
enum conn_drain {
	DRAIN_EMPTY,  /* every complete frame ran; the socket had nothing more */
	DRAIN_PAUSED, /* output above VMMIO_OUT_PAUSE: frames wait until conn_flush(); or
		       * a parked DMA piece: they wait for its answer (dma_parked) */
	DRAIN_LIMIT,  /* max_fills receives done; more may be waiting */
	DRAIN_CLOSED, /* the connection is closed */
};

/*
 * Connections gathered with the VM lock held, each with a reference, to
 * use once the lock is dropped: to send what was queued on them, or to
 * receive on them.
 */
struct vmmio_connset {
	unsigned n;
	struct vmmio_conn *c[VMMIO_CONNSET_MAX];
};

static inline long long vmmio_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline bool conn_dead(const struct vmmio_conn *c)
{
	return atomic_load(&c->dead);
}

/* ---- vmmio_conn.c: the connection object -------------------------------- */

/*
 * Make a connection of the accepted socket fd on port, watch it
 * (VMMIO_WATCH), put it on v->conns and count it in port->nconns. VM lock
 * held. peer names it in logs; peer_key identifies the client process
 * ("pid N" on UNIX, the address on TCP) for the hello deadline.
 * Returns it, or NULL (fd closed) when out of memory or the loop refused.
 */
struct vmmio_conn *conn_new(struct vmmio_port *port, int fd, const char *peer,
			    const char *peer_key);

/* Take a reference (any thread, c not freed yet: VM lock held, or a reference held). */
void conn_get(struct vmmio_conn *c);

/*
 * Drop a reference (any thread, any lock); the last one of a closed
 * connection queues conn_free() on the I/O thread.
 */
void conn_put(struct vmmio_conn *c);

/* Log "coreio-vm: client N (PEER): ..." on stderr. */
void conn_log(const struct vmmio_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Close c (VM lock held): log why, stop watching it and shut the socket
 * down (a vCPU polling it wakes), release its claims, drop its IRQ sources
 * to 0, unlink it and complete every request waiting on it as unclaimed.
 * The memory and the fd go when the last reference does. Idempotent.
 */
void conn_close(struct vmmio_conn *c, const char *why);

/* conn_close() for a thread that does not hold the VM lock (takes it). */
void conn_fail(struct vmmio_conn *c, const char *why);

/*
 * Append a frame to c's output queue (VM lock held; no system call). Its
 * sender is whoever flushes c next: the producer, right after it drops the
 * VM lock. Returns 0, -EPIPE when c is closed, or -ENOBUFS/-ENOMEM after
 * closing c (the queue would pass VMMIO_OUT_MAX, or no memory).
 */
int conn_queue(struct vmmio_conn *c, const uint8_t *frame, size_t len);

/*
 * conn_queue() without the copy: room for a frame of len bytes at the end
 * of c's output queue, to be written by the caller and queued by
 * conn_commit(), with c->tx_lock held in between (VM lock held; nothing
 * but filling the frame in between: no system call, no other lock).
 * Returns where the frame goes, or NULL (tx_lock not held) with *err as
 * conn_queue() returns it.
 */
uint8_t *conn_reserve(struct vmmio_conn *c, size_t len, int *err);

/* Queue the frame of len bytes written where conn_reserve() said; drops tx_lock. */
void conn_commit(struct vmmio_conn *c, size_t len);

/*
 * conn_queue() for a frame of one unit that carries fd (SCM_RIGHTS): a
 * duplicate of fd is queued with it and goes in a sendmsg() of that frame
 * alone. VM lock held. Returns as conn_queue(), or -EMFILE etc. after
 * closing c when fd cannot be duplicated or too many fds wait.
 */
int conn_queue_fd(struct vmmio_conn *c, const uint8_t *frame, int fd);

/*
 * Send what c's queue holds, as far as the socket takes it without
 * blocking (VM lock not held; takes tx_lock). What is left is sent by the
 * I/O thread on EPOLLOUT (armed here, only while output waits). A send
 * error closes c. When this brings a paused receiver (output above
 * VMMIO_OUT_PAUSE) back under the mark, it kicks the receiver.
 */
void conn_flush(struct vmmio_conn *c);

/*
 * Tell epoll what to watch for c (tx_lock held): EPOLLIN unless muted,
 * EPOLLOUT exactly while output (or a TLS handshake) waits for room; an
 * epoll_ctl() only on a change.
 */
void conn_watch(struct vmmio_conn *c);

/* Bytes in c's output queue (takes tx_lock). */
size_t conn_queued(struct vmmio_conn *c);

/* True when c's output has not moved for VMMIO_SEND_TIMEOUT_MS at time now_ms. */
bool conn_stuck(struct vmmio_conn *c, long long now_ms);

/* Try to take c's receive role (rx_lock). Returns true when taken. */
bool conn_rx_acquire(struct vmmio_conn *c);

/*
 * With the receive role, for a vCPU that will wait on c: stop the I/O
 * thread from watching c's input (EPOLLIN off; one epoll_ctl()), since the
 * holder receives everything itself. conn_rx_release() turns it back on.
 */
void conn_rx_mute(struct vmmio_conn *c);

/*
 * Give the receive role back: EPOLLIN back on if it was muted (arrivals
 * from then on wake the I/O thread); if another thread found the role
 * taken meanwhile (c->rx_more), receive again first (conn_rx_kick()). VM
 * lock not held.
 */
void conn_rx_release(struct vmmio_conn *c);

/*
 * With the receive role (rx_lock held, VM lock not): run every complete
 * frame received (proto_run_frames(), sending what they produce after each
 * batch), then receive and run again until the socket is empty (EAGAIN),
 * at most max_fills receives (0: no limit). Clears c->rx_more first. EOF,
 * a receive error or a malformed frame closes c. Returns what it stopped
 * at.
 */
enum conn_drain conn_rx_drain(struct vmmio_conn *c, unsigned max_fills);

/*
 * Someone must receive on c (input arrived, output drained): record it
 * (c->rx_more) and, unless another thread holds the receive role (which
 * then drains again before it lets go), drain now. On the I/O thread at
 * most VMMIO_RX_ROUNDS receives, the rest from a deferred call. VM lock
 * not held.
 */
void conn_rx_kick(struct vmmio_conn *c);

/*
 * True between this thread's vmmio_batch(v, true) and vmmio_batch(v,
 * false): the wait of its posted writes completes them without sending,
 * the batch's end sends them all.
 */
extern _Thread_local bool vmmio_batching;

/* True on the I/O thread (the thread that ran vmmio_init()). */
bool vmmio_on_io_thread(const struct vmmio *v);

/* Add c to s (VM lock held). Returns false (nothing taken) when s is full. */
bool connset_add(struct vmmio_connset *s, struct vmmio_conn *c);

/*
 * Add c to s to be flushed (VM lock held); when s is full, c's output is
 * left to the I/O thread (EPOLLOUT, which fires at once on a socket with
 * room).
 */
void connset_add_flush(struct vmmio_connset *s, struct vmmio_conn *c);

/* Flush every connection of s and drop its reference (VM lock not held). */
void connset_flush(struct vmmio_connset *s);

/* Receive on every connection of s (conn_rx_kick()), drop its reference (VM lock not held). */
void connset_receive(struct vmmio_connset *s);

/* ---- vmmio_proto.c: the protocol handlers ------------------------------ */

/*
 * Run the complete frames waiting in c's receive buffer, oldest first,
 * taking the VM lock for them (rx_lock held by the caller): PING and
 * hello, RGN_CLAIM, IRQ_UPDATE, DMA, and answers (req_answer()). What they
 * produce is queued. Stops when the frames run out, c closes, or the output
 * queue grew by VMMIO_CORK_MAX or passed VMMIO_OUT_PAUSE. Returns true when
 * it stopped for output (flush, then call again), false otherwise.
 */
bool proto_run_frames(struct vmmio_conn *c);

/* Log a frame on stderr with --trace: "client N DIR OP iface ... w3 ...". */
void proto_trace(const struct vmmio_conn *c, const char *dir, const uint8_t *frame);

/*
 * Count a malformed frame and close c with "malformed frame: REASON;
 * closing" (VM lock held).
 */
void proto_malformed(struct vmmio_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- vmmio_req.c: the ioreq adapter -------------------------------------- */

/*
 * An answer (origin 0) to one of our MMIO requests, from c (VM lock held):
 * match it by tag (unknown tags are ignored, a wrong op or rid is
 * malformed), copy the read data (the request's size) or the error, and
 * complete the request (ioreq_complete()).
 */
void req_answer(struct vmmio_conn *c, const struct coreio_wire_msg *m);

/*
 * The answer deadlines (timeout=) of c at time now_ms (VM lock held): a
 * request past its deadline completes as a bus error (result -EIO, reads
 * all ones), is counted and logged, and c is closed, so that a late answer
 * can never complete a later request. Returns true when c was closed.
 */
bool req_check_deadlines(struct vmmio_conn *c, long long now_ms);

/*
 * Give up what c has in flight for range rg (NULL: every range): its IRQ
 * sources drop to 0 and its waiting requests complete as if the range were
 * unclaimed. VM lock held. For a closed connection and for a reset.
 */
void req_abandon(struct vmmio_conn *c, const struct vmmio_range *rg);

/* A fresh tag for a frame on c: none of c's pending requests uses it (VM lock held). */
uint32_t req_new_tag(struct vmmio_conn *c);

/*
 * vmmio_submit() past fault injection: send req to rg's client now (VM
 * lock held). Returns 0 when req is done (no client: reads 0xAA, writes
 * dropped), or IOREQ_PENDING with the frame queued on the owner and
 * req->wait set to the normal wait (vmmio_submit()).
 */
int req_submit_now(struct io_request *req, struct vmmio_range *rg);

/* True for a posted write opcode (WRITE, WRITEP): nothing answers it. */
bool req_is_posted(uint8_t op);

/* ---- vmmio_inject.c: fault injection (docs/fault-injection.md) ----------- */

/*
 * Start fault injection for v (vmmio_init()): the delay timer, and the
 * --fault-socket listener of cfg when given (announced on stderr). Returns
 * 0 or a negative errno after printing why.
 */
int inject_init(struct vmmio *v, const struct vm_config *cfg);

/*
 * Complete every access a delay= rule still holds as unclaimed (VM lock
 * held; vmmio_exit(), so that no vCPU waits for it).
 */
void inject_abandon(struct vmmio *v);

/* Close the --fault-socket listener and its clients and the delay timer (VM lock not held). */
void inject_exit(struct vmmio *v);

/*
 * The rules of a guest access of rg (vmmio_submit(), VM lock held).
 * Returns 0 (nothing injected: submit it), -EIO (bus-error: req completes
 * as a bus error, never sent), or IOREQ_PENDING (delay=: held back, the
 * timer submits it; req->wait set).
 */
int inject_access(struct vmmio_range *rg, struct io_request *req);

/*
 * The rules of a client's IRQ update of rg's line iid to level, through
 * src (VM lock held). Returns true when a rule handled it (irq-drop: the
 * source stays low; irq-repeat: raise, lower, raise), false when the caller
 * sets the level as usual.
 */
bool inject_irq(struct vmmio_conn *c, struct vmmio_range *rg, unsigned iid, struct irq_source *src,
		bool level);

/*
 * The rules of a client's DMA piece m on c (the rules of every range of
 * c's port; VM lock held). rd: the piece reads guest memory. Returns true
 * when it must fail (the error bit); an iommu-fault rule has recorded the
 * fault in the IOMMU of the piece's mid.
 */
bool inject_dma(struct vmmio_conn *c, const struct coreio_wire_msg *m, bool rd);

/* ---- vmmio_shm.c: the shared memory map ---------------------------------- */

/*
 * Queue the current shared memory map for c, which negotiated
 * COREIO_CAP_SHM: one SHM_MAP frame with its fd per region, or one frame
 * without fd for an empty map (VM lock held). Returns 0 or a negative
 * errno (c is closed). Logged at the hello (at_hello), else only with
 * --verbose or --trace.
 */
int shm_queue_map(struct vmmio_conn *c, bool at_hello);

/* ---- vmmio_tls.c: TLS on tls=on ports -------------------------------------- */

/*
 * Load the credentials of cfg (--tls-creds DIR or --tls-psk FILE) into
 * v->tls_creds; nothing to do without them. Returns 0, or a negative errno
 * after printing the loader's message (it names the file) on stderr.
 */
int tls_load_creds(struct vmmio *v, const struct vm_config *cfg);

/*
 * Start the server's TLS session on c's socket (conn_new(), port->tls).
 * Returns 0, or a negative errno after logging why.
 */
int tls_conn_start(struct vmmio_conn *c);

/*
 * Advance c's handshake (rx_lock held, VM lock not; takes tx_lock around
 * it). Returns 0 when complete (logged; frames may flow), -EAGAIN to be
 * called again on the next event (EPOLLOUT armed when it waits to write),
 * or -EPROTO etc. when it failed: the refusal is logged (rate-limited per
 * port), counted and c is closed.
 */
int tls_conn_handshake(struct vmmio_conn *c);

/*
 * Send queued output of c through its TLS session, one record per call,
 * as far as the socket takes it (tx_lock held): the head of the queue
 * stays where a send that returned -EAGAIN left it, so the next call
 * carries the same bytes. Returns the bytes taken; *err is set (EPROTO
 * etc.) when the session failed.
 */
size_t tls_flush_some(struct vmmio_conn *c, int *err);

/*
 * Receive what c's TLS session has into c->rx (rx_lock held): as
 * coreio__wire_rx_fill(). A caller that gets -EAGAIN may sleep on the fd:
 * no decrypted byte is left in the session then.
 */
long tls_fill(struct vmmio_conn *c);

/*
 * On a plain port, the first bytes of c's stream (rx_lock held, VM lock
 * not): a TLS ClientHello (0x16 0x03 0x01..0x04) where a CoreIO frame
 * should be is refused with "a TLS client on plain port N (use tls=on)",
 * counted and c closed. Returns true when c was closed.
 */
bool tls_plain_check(struct vmmio_conn *c);

/*
 * The end of c's TLS session (conn_free(), or conn_new() failing): free it
 * and drop its reference on the credentials. Nothing for a plain c.
 */
void tls_conn_end(struct vmmio_conn *c);

/*
 * Drop a reference on v->tls_creds (vmmio_exit() drops the service's own);
 * the last one frees them, after every session made from them.
 */
void tls_creds_put(struct vmmio *v);

/*
 * Refuse c (VM lock held): count it (lim.tls_refused), log "PEER: why" on
 * the port's rate-limited refusal line, and close c without its own log
 * line.
 */
void tls_refuse(struct vmmio_conn *c, const char *why);

/* ---- vmmio_port.c: listeners ---------------------------------------------- */

/*
 * Open port's listening socket (TCP on listen_addr, or its UNIX path),
 * fill port->display and watch it for connections. Returns 0 or a
 * negative errno after printing why.
 */
int port_open(struct vmmio_port *port, const char *listen_addr);

/* True when the listening TCP socket of port is bound to a loopback address. */
bool port_is_loopback(const struct vmmio_port *port);

/*
 * Log a refused connection on port's stderr line, rate-limited: at most one
 * line every VMMIO_REFUSE_LOG_MS, the next one telling how many were not
 * logged (VM lock held).
 */
void port_log_refusal(struct vmmio_port *port, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Stop listening on port and remove its UNIX socket file. */
void port_close(struct vmmio_port *port);

#endif
