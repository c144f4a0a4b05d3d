/* libcoreio public API: the CoreIO client library for external device models. */
#ifndef _COREIO_H
#define _COREIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/select.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(COREIO_BUILDING_LIB) && defined(__GNUC__)
#define COREIO_EXPORT __attribute__((visibility("default")))
#else
#define COREIO_EXPORT
#endif

/*
 * Part 1: the CoreIO API of the reference library, unchanged. Every call
 * works on one process-wide default context. All calls return 0 on success
 * or a negative errno, unless noted.
 */

/* Access flags passed to callbacks and DMA calls. */
#define COREIO_FLAGS_IFETCH 2
#define COREIO_FLAGS_PRIV   4
#define COREIO_FLAGS_SECURE 8

/*
 * A libcoreio extension for the DMA calls' flags (never sent to the VM):
 * while this blocking DMA (cpl NULL) waits, the calling thread also
 * reads the control connection and serves the VM's MMIO requests (their
 * callbacks run on this thread, one at a time and in the VM's order, as
 * the event loop would run them); no non-blocking DMA completion runs.
 * For a model that does DMA from its event loop's thread outside any
 * callback and must keep answering the guest meanwhile: a VM may need the
 * answer to an MMIO read before it can answer the DMA (QEMU's vfio-user
 * client holds its big lock while a vCPU waits for a read). Ignored when
 * the call is made inside a callback or while another thread serves.
 */
#define COREIO_DMA_SERVE 0x100u

/*
 * Connect to a VM.
 *   target  "host:port", "[v6addr]:port", "host" (port 4800) or
 *           "unix:/path"; NULL reads the environment variable COREIO_VM,
 *           then COREHDL_VM.
 * Returns 0, -EINVAL for a malformed target (or NULL with neither variable
 * set), -EISCONN when already connected, -EHOSTUNREACH when the host name
 * does not resolve, or the connect() errno (-ECONNREFUSED, ...).
 */
COREIO_EXPORT int coreio_connect(const char *target);

/*
 * Start a DMA read from VM memory into buf.
 *   mid    IOMMU id (0 = guest-physical memory, no translation)
 *   sid    IOMMU region id (0..15)
 *   addr   target address
 *   len    bytes to read; any length and alignment
 *   buf    filled with the data
 *   flags  COREIO_FLAGS_* bus access flags
 *   cpl    completion function, called from coreio_processfds() with cplp
 *          and 0 or a negative errno; NULL makes the call blocking
 *   cplp   completion function parameter
 * Returns 0 (blocking: the transfer is done; non-blocking: it started),
 * -EFAULT when the VM refused any piece (blocking only; non-blocking
 * reports it through cpl), -EINVAL for a bad mid/sid or NULL buf,
 * -ENOTCONN when not connected, -ECONNRESET when the VM went away.
 * Safe to call from any thread, and from inside an MMIO callback.
 */
COREIO_EXPORT int coreio_dma_read(unsigned mid, unsigned sid, uint64_t addr, size_t len, void *buf,
				  unsigned flags, void (*cpl)(void *, int), void *cplp);

/*
 * Start a DMA write of buf into VM memory. Arguments, return value and
 * errors as coreio_dma_read().
 */
COREIO_EXPORT int coreio_dma_write(unsigned mid, unsigned sid, uint64_t addr, size_t len, void *buf,
				   unsigned flags, void (*cpl)(void *, int), void *cplp);

/*
 * Send an IRQ update. Lines are level; the update is sent only when the
 * level changes.
 *   rid    MMIO range id the IRQ belongs to (0..7)
 *   iid    IRQ index within the range (0..7)
 *   state  1 = active, 0 = inactive
 * Returns 0, -EINVAL for rid/iid out of range, -ENOTCONN, -ECONNRESET.
 * Safe to call from any thread.
 */
COREIO_EXPORT int coreio_irq_update(unsigned rid, unsigned iid, unsigned state);

typedef struct {
	/* MMIO operations. */
	int (*read)(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags);
	int (*write)(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags);
	/* MMIO pair-wise operations. If not supplied, read/write are used twice. */
	int (*readp)(void *priv, uint64_t addr, size_t len, void *buf1, void *buf2, unsigned flags);
	int (*writep)(void *priv, uint64_t addr, size_t len, void *buf1, void *buf2,
		      unsigned flags);
} coreio_func_t;

/*
 * Register an MMIO handler: claim range rid on this connection.
 *   rid    MMIO range id (0..7), ranges numbered in VM command-line order
 *   func   callback table; read and write are required. The table is
 *          copied, so it need not outlive the call.
 *   funcp  passed unchanged as priv to the callbacks
 * Callbacks get the full guest-physical address; returning non-zero makes
 * the access a bus error in the VM.
 * Returns 0, -EINVAL (rid out of range, NULL func or read/write missing),
 * -EBUSY (rid already registered in this process, or claimed by another
 * client when the VM says so), -ENOENT (the VM has no range rid, when the
 * VM says so), -ETIMEDOUT (the VM promised to answer claims and did not
 * within 5 s), -ENOTCONN.
 */
COREIO_EXPORT int coreio_register(unsigned rid, const coreio_func_t *func, void *funcp);

/*
 * Prepare fd_sets for select(2).
 *   nfds      current index of maximum fd in sets + 1
 *   readfds   readfds to update
 *   writefds  writefds to update (may be NULL)
 * Returns the new nfds, or a negative errno (-ENOTCONN).
 */
COREIO_EXPORT int coreio_preparefds(int nfds, fd_set *readfds, fd_set *writefds);

/*
 * Process fd_sets after select(2): serve MMIO requests, DMA answers and
 * resets, and run completion callbacks.
 *   readfds   readfds as select(2) returned them
 *   writefds  writefds as select(2) returned them (may be NULL)
 * Returns 0, or a negative errno (-ECONNRESET when the VM went away,
 * -EPROTO when it sent a malformed frame).
 */
COREIO_EXPORT int coreio_processfds(fd_set *readfds, fd_set *writefds);

/*
 * Simple main loop: select() and coreio_processfds().
 *   usec  time to spend in the loop, in microseconds; negative = forever
 * Returns 0 when the time ran out, or a negative errno as processfds.
 */
COREIO_EXPORT int coreio_mainloop(long long usec);

/* Close the connection to the VM; pending DMA completes with -ECONNRESET. */
COREIO_EXPORT void coreio_disconnect(void);

/*
 * Part 2: extensions. A context is one connection to one VM, with its own
 * registrations; the calls above use the default context.
 */
typedef struct coreio_ctx coreio_ctx_t;

/*
 * Create a context.
 *   out  receives the new context
 * Returns 0, -EINVAL (NULL out), -ENOMEM.
 */
COREIO_EXPORT int coreio_ctx_new(coreio_ctx_t **out);

/* Disconnect (if connected) and free a context. NULL is allowed. */
COREIO_EXPORT void coreio_ctx_free(coreio_ctx_t *ctx);

/* The context the seed API uses. Never NULL. */
COREIO_EXPORT coreio_ctx_t *coreio_default_ctx(void);

/* Context forms of the calls above; same arguments, results and errors. */
COREIO_EXPORT int coreio_ctx_connect(coreio_ctx_t *ctx, const char *target);
COREIO_EXPORT int coreio_ctx_register(coreio_ctx_t *ctx, unsigned rid, const coreio_func_t *func,
				      void *funcp);
COREIO_EXPORT int coreio_ctx_preparefds(coreio_ctx_t *ctx, int nfds, fd_set *readfds,
					fd_set *writefds);
COREIO_EXPORT int coreio_ctx_processfds(coreio_ctx_t *ctx, fd_set *readfds, fd_set *writefds);
COREIO_EXPORT int coreio_ctx_mainloop(coreio_ctx_t *ctx, long long usec);
COREIO_EXPORT int coreio_ctx_irq_update(coreio_ctx_t *ctx, unsigned rid, unsigned iid,
					unsigned state);
COREIO_EXPORT int coreio_ctx_dma_read(coreio_ctx_t *ctx, unsigned mid, unsigned sid, uint64_t addr,
				      size_t len, void *buf, unsigned flags,
				      void (*cpl)(void *, int), void *cplp);
COREIO_EXPORT int coreio_ctx_dma_write(coreio_ctx_t *ctx, unsigned mid, unsigned sid, uint64_t addr,
				       size_t len, void *buf, unsigned flags,
				       void (*cpl)(void *, int), void *cplp);
COREIO_EXPORT void coreio_ctx_disconnect(coreio_ctx_t *ctx);

/*
 * Be told when the VM is reset (it sent RESET). The callback runs from
 * coreio_processfds() (or inside a blocking DMA made with
 * COREIO_DMA_SERVE) after the library has forgotten every IRQ level it
 * sent (lines are low after a reset); registrations stay.
 *   ctx     the context (coreio_set_reset_cb uses the default one)
 *   cb      called with opaque; NULL removes the callback
 *   opaque  passed to cb unchanged
 * Returns 0, or -EINVAL for a NULL ctx.
 */
COREIO_EXPORT int coreio_ctx_set_reset_cb(coreio_ctx_t *ctx, void (*cb)(void *opaque),
					  void *opaque);
COREIO_EXPORT int coreio_set_reset_cb(void (*cb)(void *opaque), void *opaque);

/* Capability bits a connection negotiated with the VM. */
#define COREIO_CAP_LARGE_DMA_BIT 1u /* DMA in pieces of up to 16 KiB */
#define COREIO_CAP_CLAIM_ACK_BIT 2u /* the VM confirms or refuses claims */
#define COREIO_CAP_SHM_BIT	 4u /* unix: targets: guest RAM shared, mid 0 DMA by memcpy */

/*
 * Capabilities negotiated on ctx's connections (COREIO_CAP_*_BIT), 0 with
 * a VM that speaks only the base format, or a negative errno (-ENOTCONN).
 */
COREIO_EXPORT int coreio_ctx_caps(coreio_ctx_t *ctx);

/*
 * Choose which capabilities ctx offers on its next connect (default: all).
 * Offering 0 makes the library speak exactly the base format.
 * Returns 0, or -EINVAL (NULL ctx), -EISCONN when already connected.
 */
COREIO_EXPORT int coreio_ctx_set_offer(coreio_ctx_t *ctx, unsigned caps);

/*
 * Shared-memory DMA to a file, without a copy through the caller's memory:
 * guest memory [addr, addr + len) is written to fd at file offset off with
 * pwrite() straight from the shared mapping (a disk write of a block
 * device model). Only for mid 0 with COREIO_CAP_SHM negotiated, when the
 * whole range lies inside one region of the VM's memory map, as a memcpy
 * DMA would (docs/libcoreio.md, "Shared-memory DMA"); done at once on the
 * calling thread, ordered like those memcpy DMAs (not after socket DMA
 * still in flight). The library retries EINTR and short writes until len
 * bytes are written; it stops early only when pwrite() writes nothing.
 *   ctx   a connected context
 *   mid   IOMMU id; only 0 can be done here
 *   addr  guest-physical address
 *   len   bytes (at most SSIZE_MAX)
 *   fd    a file open for writing (a regular file or block device)
 *   off   file offset; off + len at most INT64_MAX
 * Returns the bytes written (len, or fewer as said), -EOPNOTSUPP when the
 * range cannot be done this way (mid != 0, no shared memory, outside the
 * map or across two regions: use coreio_ctx_dma_read() and write(2)
 * yourself), -EINVAL (NULL ctx, negative fd, mid out of range, lengths),
 * -ENOTCONN, -ECONNRESET, or the negative errno of pwrite() (bytes before
 * the failure may have been written). Safe to call from any thread.
 */
COREIO_EXPORT ssize_t coreio_ctx_dma_read_to_fd(coreio_ctx_t *ctx, unsigned mid, uint64_t addr,
						size_t len, int fd, uint64_t off);

/*
 * Shared-memory DMA from a file: fd's bytes at file offset off are read
 * with pread() straight into guest memory [addr, addr + len) (a disk read).
 * Conditions, arguments and errors as coreio_ctx_dma_read_to_fd(); the
 * library retries EINTR and short reads and stops early only at end of
 * file. Returns the bytes read: len, or fewer when the file ended (the
 * guest memory past them is left as it was), or a negative errno.
 */
COREIO_EXPORT ssize_t coreio_ctx_dma_write_from_fd(coreio_ctx_t *ctx, unsigned mid, uint64_t addr,
						   size_t len, int fd, uint64_t off);

/* One segment of coreio_ctx_dma_readv(): len bytes at addr into buf. */
struct coreio_dma_seg {
	uint64_t addr;
	size_t len;
	void *buf;
};

#define COREIO_DMA_READV_MAX 1024u /* segments of one coreio_ctx_dma_readv() */

/*
 * A blocking vectored DMA read that copies its segments in order: seg[k]
 * is read from VM memory after seg[k - 1] was (a later segment's bytes
 * are at least as new as an earlier one's), and the caller waits for one
 * round trip, not one per segment. Over the socket every segment's pieces
 * are sent, in segment order, before the call waits once for all of them
 * (the VM copies one connection's DMA in order). With shared memory the
 * leading segments that lie inside one region each are copied by memcpy,
 * in order; from the first segment that does not, that one and all after
 * it go through the socket (so no segment is copied before an earlier
 * one). For reading a value together with data it makes valid, that
 * value in an earlier segment: a ring index and its descriptors.
 *   ctx    a connected context
 *   mid    IOMMU id (0 = guest-physical), for every segment
 *   sid    IOMMU region id (0..15)
 *   seg    n segments; a segment of len 0 reads nothing (buf may be NULL)
 *   n      0 .. COREIO_DMA_READV_MAX
 *   flags  COREIO_FLAGS_* bus access flags, and COREIO_DMA_SERVE as for a
 *          blocking coreio_ctx_dma_read()
 * Returns 0 when every segment was read, or the first error in segment
 * order: -EFAULT when the VM refused a piece of some segment (that
 * segment's buffer holds undefined bytes; every other segment is still
 * read and its buffer filled), -EINVAL (NULL ctx, bad mid/sid, n too
 * large, NULL seg with n > 0, NULL buf with len > 0), -ENOMEM, -ENOTCONN,
 * -ECONNRESET (the buffers hold undefined bytes). Safe to call from any
 * thread and inside an MMIO callback, as coreio_ctx_dma_read().
 */
COREIO_EXPORT int coreio_ctx_dma_readv(coreio_ctx_t *ctx, unsigned mid, unsigned sid,
				       const struct coreio_dma_seg *seg, unsigned n,
				       unsigned flags);

#define COREIO_BUSY_POLL_MAX_US 10000 /* largest busy-poll window */

/*
 * Bounded busy-polling in coreio_ctx_mainloop(): after each wake-up that
 * served something, the loop polls its sockets without sleeping (select()
 * with a zero timeout) for up to usec microseconds before it blocks again,
 * so the next request of a guest that keeps issuing MMIO is picked up
 * without a scheduler wake-up. It keeps a core busy meanwhile: off (0) by
 * default. Without a call, coreio_ctx_connect() reads the environment
 * variable COREIO_BUSY_POLL_US (a decimal number of microseconds).
 *   ctx   the context
 *   usec  0 (off) .. COREIO_BUSY_POLL_MAX_US
 * Returns 0, or -EINVAL for a NULL ctx or usec out of range.
 */
COREIO_EXPORT int coreio_ctx_set_busy_poll(coreio_ctx_t *ctx, unsigned usec);

/*
 * A pollable file descriptor for any event loop (poll, epoll, libuv,
 * asyncio, ...), with no FD_SETSIZE limit: it is readable whenever
 * coreio_ctx_process() has something to do. It stays the same from
 * connect to disconnect; do not read it or close it.
 *   ctx  a connected context
 * Returns the fd, or -EINVAL (NULL ctx), -ENOTCONN.
 */
COREIO_EXPORT int coreio_ctx_get_fd(coreio_ctx_t *ctx);

/*
 * Do, without blocking, whatever the context has to do: read its sockets,
 * serve the VM's requests in order, run completions. Call it when the fd
 * of coreio_ctx_get_fd() is readable (calling it at other times is
 * harmless).
 * Returns 0, or a negative errno as coreio_ctx_processfds().
 */
COREIO_EXPORT int coreio_ctx_process(coreio_ctx_t *ctx);

/*
 * TLS 1.3 credentials for the context's "tls:HOST:PORT" targets (a
 * coreio-vm port with tls=on), used from the next coreio_ctx_connect() on:
 *   creds_dir     a directory in QEMU's layout: ca-cert.pem (the CA that
 *                 signed the VM's certificate, which must name HOST),
 *                 client-cert.pem and client-key.pem (this model's
 *                 certificate, which the VM checks against its CA); or NULL
 *   psk_file      a pre-shared key file of "identity:hexkey" lines (QEMU's
 *                 keys.psk), instead of creds_dir; or NULL
 *   psk_identity  which identity of psk_file (NULL: the first line's)
 * Both NULL forgets the credentials. Without a call, a TLS connect reads
 * COREIO_TLS_CREDS=DIR, or COREIO_TLS_PSK=FILE and COREIO_TLS_PSK_IDENTITY,
 * from the environment; COREIO_TLS=on makes every TCP target a TLS one, so
 * a program that only uses coreio_connect() can use TLS unchanged
 * (docs/security.md). A refused handshake makes connect fail with
 * -ECONNREFUSED (-ETIMEDOUT when the VM never answered TLS), and the log
 * callback says why.
 * Returns 0; -EINVAL for a NULL ctx or both creds_dir and psk_file;
 * -EBUSY while connected; or the loader's error (-ENOENT for a missing
 * file, -EINVAL for a bad one), with the file named in a log message.
 */
COREIO_EXPORT int coreio_ctx_set_tls(coreio_ctx_t *ctx, const char *creds_dir, const char *psk_file,
				     const char *psk_identity);

/* Log levels, as syslog's. */
#define COREIO_LOG_ERR	   3
#define COREIO_LOG_WARNING 4
#define COREIO_LOG_INFO	   6
#define COREIO_LOG_DEBUG   7

/*
 * Where the library's messages go (it never writes to stderr itself): fn
 * is called with opaque, a COREIO_LOG_* level and one line of text
 * without a newline, from whichever thread noticed the event, with no
 * library lock held. NULL (the default) drops them.
 * Returns 0, or -EINVAL for a NULL ctx.
 */
COREIO_EXPORT int coreio_ctx_set_log(coreio_ctx_t *ctx,
				     void (*fn)(void *opaque, int level, const char *msg),
				     void *opaque);
COREIO_EXPORT int coreio_set_log(void (*fn)(void *opaque, int level, const char *msg),
				 void *opaque);

#ifdef __cplusplus
}
#endif

#endif
