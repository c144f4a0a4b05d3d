/* CoreIO wire format: the single source of truth for framing, opcodes and validation. */
#ifndef COREIO_WIRE_H
#define COREIO_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "coreio.h"

/*
 * Every message is one or more 64-byte units of eight little-endian 64-bit
 * words. docs/protocol.md describes the format in full; this header is the
 * code both halves (libcoreio and coreio-vm) link against.
 */
#define COREIO_WIRE_UNIT	 64u
#define COREIO_WIRE_MAX_UNITS	 256u
#define COREIO_WIRE_MAX_MSG	 (COREIO_WIRE_UNIT * COREIO_WIRE_MAX_UNITS)
#define COREIO_WIRE_DATA_OFF	 24u /* data starts at w[3] */
#define COREIO_WIRE_MAX_DATA	 (COREIO_WIRE_MAX_MSG - COREIO_WIRE_DATA_OFF)
#define COREIO_WIRE_DEFAULT_PORT 4800
#define COREIO_WIRE_MAX_SINGLE	 32u /* largest single MMIO/DMA access in one unit */
#define COREIO_WIRE_MAX_PAIR	 16u /* largest element of a pair access */
#define COREIO_WIRE_MAX_RID	 8u  /* reference ranges per connection (rid 0..7) */
#define COREIO_WIRE_MAX_IID	 8u  /* reference IRQ indexes per range */
#define COREIO_WIRE_MAX_MID	 8u
#define COREIO_WIRE_MAX_SID	 16u
/* Largest DMA piece of the negotiated large-DMA extension: a whole number of
 * 64-byte units that still fits in one message after the 24-byte header. */
#define COREIO_WIRE_LARGE_PIECE (COREIO_WIRE_MAX_MSG - COREIO_WIRE_UNIT)
/* Reference DMA pieces are cut at 32-byte-aligned boundaries. */
#define COREIO_WIRE_SMALL_PIECE 32u

/* Opcodes (w[1] bits 0..7). */
enum coreio_wire_op {
	COREIO_OP_PING = 0x00,
	COREIO_OP_READ = 0x01,
	COREIO_OP_WRITE = 0x02,
	COREIO_OP_READP = 0x03,
	COREIO_OP_WRITEP = 0x04,
	COREIO_OP_WRITEA = 0x05,
	COREIO_OP_WRITEAP = 0x06,
	/* Extension, only on a connection that negotiated COREIO_CAP_LARGE_DMA:
	 * DMA with the length in w[1] bits 32..63 instead of the size field. */
	COREIO_OP_LREAD = 0x21,
	COREIO_OP_LWRITE = 0x25,
	COREIO_OP_IRQ_UPDATE = 0x41,
	/* Extension, only on a connection that negotiated COREIO_CAP_SHM: the VM
	 * sends one region of guest memory, its fd attached (SCM_RIGHTS). */
	COREIO_OP_SHM_MAP = 0x50,
	COREIO_OP_RGN_CLAIM = 0xF0,
	COREIO_OP_RESET = 0xFF,
};

/* Access flags carried in w[1] bits 28..31 are COREIO_FLAGS_* of coreio.h. */

/*
 * Capability negotiation (extension). A new client sends a PING whose w[2]
 * is COREIO_WIRE_MAGIC, w[3] = COREIO_HELLO_OFFER, w[4] = its capability
 * bits, w[5] = COREIO_WIRE_VERSION. A VM that only knows the base format
 * echoes it unchanged (w[3] stays OFFER), which the client reads as "no
 * capabilities". Our VM answers w[3] = COREIO_HELLO_ANSWER and w[4] = the
 * capabilities both sides have; from then on both use them on that
 * connection only.
 */
#define COREIO_WIRE_MAGIC   0x3178456f4965726fULL /* "oreIoEx1", little-endian */
#define COREIO_WIRE_VERSION 1u
#define COREIO_HELLO_OFFER  0u
#define COREIO_HELLO_ANSWER 1u
/* The capability bits are the public COREIO_CAP_*_BIT values of coreio.h;
 * these are the wire code's short names for them. */
#define COREIO_CAP_LARGE_DMA COREIO_CAP_LARGE_DMA_BIT /* LREAD/LWRITE, pieces up to 16 KiB */
#define COREIO_CAP_CLAIM_ACK COREIO_CAP_CLAIM_ACK_BIT /* the VM answers RGN_CLAIM */
#define COREIO_CAP_SHM	     COREIO_CAP_SHM_BIT	      /* guest memory as fds (SHM_MAP); UNIX only */
#define COREIO_CAP_ALL	     (COREIO_CAP_LARGE_DMA | COREIO_CAP_CLAIM_ACK | COREIO_CAP_SHM)

/*
 * SHM_MAP (extension, VM to client, origin 0, E = 0), one frame per region
 * of a memory map: w[2] guest-physical base, w[3] size, w[4] offset of the
 * base in the fd, w[5] region index, w[6] map generation, w[7] number of
 * regions in the map. The region's fd rides as SCM_RIGHTS with the frame's
 * bytes (a sendmsg() of that frame alone). A map of 0 regions is one frame
 * with w[7] = 0 and no fd. docs/protocol.md has the rules.
 */
#define COREIO_WIRE_SHM_MAX_REGIONS 16u

/* A decoded message header: w[0], w[1] and w[2] split into fields. */
struct coreio_wire_hdr {
	uint8_t iface; /* rid (MMIO, IRQ, claim) or mid (DMA) */
	uint8_t extra; /* E: extra 64-byte units after the first */
	bool error;    /* bit 30 */
	bool origin;   /* bit 31: 1 = initiated by the client */
	uint32_t tag;  /* bits 32..63 */
	uint8_t op;    /* w[1] bits 0..7 */
	uint8_t size;  /* w[1] bits 16..21 */
	uint8_t sid;   /* w[1] bits 24..27 */
	uint8_t flags; /* w[1] bits 28..31 */
	uint32_t mask; /* w[1] bits 32..63: byte enables, or length for LREAD/LWRITE */
	uint64_t addr; /* w[2] */
};

/* A validated message, pointing into the caller's frame buffer. */
struct coreio_wire_msg {
	struct coreio_wire_hdr h;
	const uint8_t *frame; /* the whole frame */
	size_t frame_len;     /* (E + 1) * 64 */
	uint32_t len;	      /* payload bytes of one element: size, or LREAD/LWRITE length */
	/* The first element's bytes (w[3]); when not NULL, len bytes lie
	 * inside the frame. NULL for an LREAD request too long for its frame
	 * (it carries no data: len is the length asked for). */
	const uint8_t *data;
	const uint8_t *data2; /* second element of a pair, else NULL */
};

/* Which side received the frame; validation depends on it. */
enum coreio_wire_side {
	COREIO_WIRE_AT_VM = 0,	   /* the VM received it from a client */
	COREIO_WIRE_AT_CLIENT = 1, /* a client received it from the VM */
};

/* Little-endian word access, independent of host byte order. */
uint64_t coreio__wire_get64(const uint8_t *p);
void coreio__wire_put64(uint8_t *p, uint64_t v);

/*
 * Length of the frame whose first word is w0, in bytes: (E + 1) * 64.
 */
size_t coreio__wire_frame_len(uint64_t w0);

/*
 * Decode and validate one frame received by `side`.
 *   frame, len  the complete frame; len must equal coreio__wire_frame_len().
 *   side        which half received it.
 *   out         filled on success; points into frame.
 * Returns 0 on success, -EPROTO for a frame whose fields contradict its
 * length or each other (size out of range, data beyond the frame, unknown
 * opcode for this direction), -EINVAL for a NULL argument.
 * Every length, index and offset is checked against the frame length with
 * overflow-safe arithmetic; nothing outside frame[0..len) is ever read.
 */
int coreio__wire_decode(const uint8_t *frame, size_t len, enum coreio_wire_side side,
			struct coreio_wire_msg *out);

/* Offset in bytes from the frame start of the second element of a pair of
 * `size`-byte elements: word 4 + size / 8. */
size_t coreio__wire_pair_off(unsigned size);

/*
 * Encode a header into the first 24 bytes of frame and zero the rest of the
 * first unit. The caller writes data from frame + 24 afterwards.
 *   frame  at least (h->extra + 1) * 64 bytes; only the first unit is zeroed.
 * Returns the frame length in bytes.
 */
size_t coreio__wire_encode(uint8_t *frame, const struct coreio_wire_hdr *h);

/* Number of extra units needed to carry `data_bytes` after the header. */
uint8_t coreio__wire_extra_for(size_t data_bytes);

/* Byte-enable mask (w[1] bits 32..63) with the first n bytes enabled (all 32 for n >= 32). */
uint32_t coreio__wire_byte_mask(unsigned n);

/* Human-readable opcode name, for traces and errors ("?" when unknown). */
const char *coreio__wire_op_name(unsigned op);

/* Bits of w[0], for the few encoders below that patch a copied header. */
#define COREIO_WIRE_W0_EXTRA  (0xffull << 8)
#define COREIO_WIRE_W0_ERROR  (1ull << 30)
#define COREIO_WIRE_W0_ORIGIN (1ull << 31)

/*
 * Length of the frame that starts at buf when at least its first word is
 * there (have >= 8 bytes), else 0.
 */
size_t coreio__wire_peek_len(const uint8_t *buf, size_t have);

/*
 * "Returned to initiator": the first unit of frame with E cleared, into
 * unit (64 bytes). Returns 64.
 */
size_t coreio__wire_echo(uint8_t *unit, const uint8_t *frame);

/*
 * The answer to an MMIO request (VM to client, origin 0), first unit only:
 * w[0]..w[2] copied from req with E and the error bit cleared, data zeroed.
 * The responder fills the data from unit + COREIO_WIRE_DATA_OFF and marks a
 * failure with coreio__wire_set_error(). Returns 64.
 */
size_t coreio__wire_answer_init(uint8_t *unit, const uint8_t *req);

/* Set (or clear) the error bit of the frame at unit. */
void coreio__wire_set_error(uint8_t *unit, bool error);

/*
 * The hello (PING with w[2] = COREIO_WIRE_MAGIC): w[3] kind
 * (COREIO_HELLO_OFFER or COREIO_HELLO_ANSWER), w[4] capability bits,
 * w[5] protocol version.
 */
struct coreio_wire_hello {
	uint64_t kind;
	uint64_t caps;
	uint64_t version;
};

/* Encode a hello into unit (64 bytes): origin 1, tag 0. Returns 64. */
size_t coreio__wire_hello_encode(uint8_t *unit, const struct coreio_wire_hello *hl);

/*
 * Read the hello fields of a decoded PING. Returns 0, or -ENOENT when m is
 * not a PING carrying COREIO_WIRE_MAGIC (a plain ping, not a hello).
 */
int coreio__wire_hello_decode(const struct coreio_wire_msg *m, struct coreio_wire_hello *out);

/*
 * Turn the hello offer in unit (a copy of the client's first unit) into
 * the VM's answer: E cleared, kind ANSWER, caps as given, our version.
 */
void coreio__wire_hello_answer(uint8_t *unit, uint64_t caps);

/* SHM_MAP fields (see above): one region of a memory map. */
struct coreio_wire_shm_map {
	uint64_t gpa;	 /* w[2] */
	uint64_t size;	 /* w[3] */
	uint64_t offset; /* w[4]: of gpa in the fd */
	uint64_t index;	 /* w[5] */
	uint64_t gen;	 /* w[6] */
	uint64_t count;	 /* w[7] */
};

/* Encode one SHM_MAP frame (origin 0, tag = low 32 bits of gen). Returns 64. */
size_t coreio__wire_shm_map_encode(uint8_t *unit, const struct coreio_wire_shm_map *s);

/*
 * Read the fields of a decoded SHM_MAP frame. Returns 0, or -EPROTO when m
 * is no SHM_MAP or its fields cannot describe a map: count above
 * COREIO_WIRE_SHM_MAX_REGIONS, index not below count (for count > 0),
 * gpa + size or offset + size past 2^64, or a region of size 0 in a
 * non-empty map. Whether the map as a whole is consistent (generations,
 * order, overlaps) is the receiver's business.
 */
int coreio__wire_shm_map_decode(const struct coreio_wire_msg *m, struct coreio_wire_shm_map *out);

/* Encode an IRQ_UPDATE (client to VM): range rid, line iid, level. Returns 64. */
size_t coreio__wire_irq_encode(uint8_t *unit, unsigned rid, unsigned iid, bool level);

/*
 * Read a decoded IRQ_UPDATE: the line index (w[2], unchecked: the VM
 * compares it with the range's lines) and the level (w[3] != 0). Returns 0,
 * or -EPROTO when m is no IRQ_UPDATE.
 */
int coreio__wire_irq_decode(const struct coreio_wire_msg *m, uint64_t *iid, bool *level);

/* Encode an RGN_CLAIM (client to VM) of range rid with tag. Returns 64. */
size_t coreio__wire_claim_encode(uint8_t *unit, unsigned rid, uint32_t tag);

/*
 * Encode the VM's answer to a claim (CLAIM_ACK extension): the claim's rid
 * and tag, origin 1, and for a refusal (err < 0) the error bit with -err in
 * w[3]. Returns 64.
 */
size_t coreio__wire_claim_ack_encode(uint8_t *unit, unsigned rid, uint32_t tag, int err);

/*
 * The result a decoded claim answer carries: 0 when granted, else the
 * negative errno of w[3] (-EBUSY when w[3] holds no errno in 1..4095).
 */
int coreio__wire_claim_ack_result(const struct coreio_wire_msg *m);

/*
 * One line describing the frame (at least its first unit) for traces and
 * errors: "READ iface 0 tag 7 client-origin ERROR E 0 size 4 flags 4 mask
 * 0xf addr 0x... w3 0x...", without a newline. Reads only the first 64
 * bytes. Returns what snprintf() returns.
 */
int coreio__wire_format(char *buf, size_t len, const uint8_t *frame);

/*
 * An MMIO request (VM to client) in one unit: the header h (origin 0, E 0;
 * h->op READ, WRITE, READP, WRITEP, WRITEA or WRITEAP) and, for a write,
 * its data: h->size bytes of data at w[3] and, for a pair (WRITEP,
 * WRITEAP), h->size bytes of data2 at coreio__wire_pair_off(h->size).
 * data and data2 may be NULL (a read; the unit is zeroed after the header).
 * Returns 64, or 0 (nothing written) when h->size is 0 or does not fit one
 * unit (above COREIO_WIRE_MAX_SINGLE, above COREIO_WIRE_MAX_PAIR for a
 * pair) or h->extra is not 0.
 */
size_t coreio__wire_mmio_encode(uint8_t *unit, const struct coreio_wire_hdr *h, const void *data,
				const void *data2);

/*
 * The read data of a decoded answer to an MMIO read, laid out as the
 * request had it: size bytes into data from w[3] and, for a pair, size
 * bytes into data2 from coreio__wire_pair_off(size). The request's size
 * decides, not the answer's size field (a client may echo anything there);
 * the answer's first unit always holds that much. Returns 0, or -EINVAL
 * (nothing copied) when size is 0 or above COREIO_WIRE_MAX_SINGLE
 * (COREIO_WIRE_MAX_PAIR for a pair) or the frame is shorter than a unit.
 */
int coreio__wire_answer_read(const struct coreio_wire_msg *m, unsigned size, bool pair, void *data,
			     void *data2);

/*
 * Stream reassembly shared by both halves: bytes go in from a socket,
 * whole frames come out. A frame is at most COREIO_WIRE_MAX_MSG bytes, so
 * the buffer never grows.
 */
struct coreio_wire_rx {
	uint8_t buf[8 * COREIO_WIRE_MAX_MSG];
	size_t start; /* first unconsumed byte */
	size_t end;   /* one past the last received byte */
};

/* Empty the reassembly buffer. */
void coreio__wire_rx_init(struct coreio_wire_rx *rx);

/*
 * Read what the (non-blocking) socket fd has into rx.
 * Returns the number of bytes read (> 0), 0 when the peer closed the
 * connection, -EAGAIN when nothing was available, or another negative
 * errno from recv().
 */
long coreio__wire_rx_fill(struct coreio_wire_rx *rx, int fd);

/*
 * A byte source for coreio__wire_rx_fill_with(): reads up to len bytes
 * into buf without blocking and returns as recv() does, with -errno for
 * errors (a TLS session, for one).
 */
typedef long (*coreio_wire_reader)(void *opaque, void *buf, size_t len);

/*
 * As coreio__wire_rx_fill(), reading through rd instead of recv().
 * Returns what rd returned.
 */
long coreio__wire_rx_fill_with(struct coreio_wire_rx *rx, coreio_wire_reader rd, void *opaque);

/*
 * Take the next complete frame out of rx.
 *   frame, len  set to the frame (valid until the next fill) on success.
 * Returns 1 when a frame was taken, 0 when more bytes are needed.
 */
int coreio__wire_rx_next(struct coreio_wire_rx *rx, const uint8_t **frame, size_t *len);

/* True if rx holds a complete frame (coreio__wire_rx_next() would take one). */
bool coreio__wire_rx_ready(const struct coreio_wire_rx *rx);

/* True if rx holds any bytes of a frame not yet complete. */
bool coreio__wire_rx_partial(const struct coreio_wire_rx *rx);

/*
 * File descriptors that arrived with SCM_RIGHTS on a stream socket, each
 * bound to a stream position: Linux hands the fds of a sendmsg() over with
 * a read that ends inside the bytes of that sendmsg(), so a fd belongs to
 * the frame that holds the last byte of the read that brought it (which is
 * exact when the sender sends a fd-carrying frame in a sendmsg() of its own).
 */
#define COREIO_WIRE_FDQ_MAX 16u

struct coreio_wire_fdq {
	uint64_t total; /* bytes received on the stream so far */
	unsigned n;	/* fds queued */
	int fd[COREIO_WIRE_FDQ_MAX];
	uint64_t pos[COREIO_WIRE_FDQ_MAX]; /* stream offset of the byte each fd is bound to */
	unsigned dropped; /* fds closed on arrival: queue full, or control data truncated */
};

/* Empty a queue that holds no fds (stream position 0). */
void coreio__wire_fdq_init(struct coreio_wire_fdq *q);

/* Close every queued fd; the stream position stays. */
void coreio__wire_fdq_clear(struct coreio_wire_fdq *q);

/*
 * As coreio__wire_rx_fill(), with recvmsg(): fds that come along
 * (SCM_RIGHTS, received close-on-exec) are queued in q, bound to the last
 * byte of this read; fds beyond COREIO_WIRE_FDQ_MAX are closed at once and
 * counted in q->dropped. Every fill of rx must go through this function so
 * that q->total follows the stream.
 * Returns as coreio__wire_rx_fill().
 */
long coreio__wire_rx_fill_fds(struct coreio_wire_rx *rx, int fd, struct coreio_wire_fdq *q);

/*
 * recvmsg() on fd into the niov buffers of iov without blocking (retrying
 * on EINTR), queueing the fds that come along in q as
 * coreio__wire_rx_fill_fds() does (bound to the last byte read; q->total
 * follows the stream). For a receive that bypasses rx (the client's direct
 * DMA receive). Returns the bytes read, 0 at end of stream, or a negative
 * errno (-EAGAIN when nothing is there).
 */
long coreio__wire_recv_iov_fds(int fd, struct iovec *iov, int niov, struct coreio_wire_fdq *q);

/*
 * Stream offset of the first byte of frame, a frame coreio__wire_rx_next()
 * just returned from rx (filled with coreio__wire_rx_fill_fds() and q).
 */
uint64_t coreio__wire_rx_frame_pos(const struct coreio_wire_rx *rx, const struct coreio_wire_fdq *q,
				   const uint8_t *frame);

/*
 * Take the fds bound to the frame at stream offset [start, start + len).
 * fds bound to earlier bytes (nobody took them) are closed first.
 *   out, max  receive up to max fds, in arrival order; more are closed.
 * Returns how many fds were bound to the frame (may exceed max).
 */
unsigned coreio__wire_fdq_take(struct coreio_wire_fdq *q, uint64_t start, size_t len, int *out,
			       unsigned max);

/*
 * Send the whole buffer on a socket, retrying on EINTR and waiting with
 * poll() while the socket is full (at most timeout_ms in total, -1 = no
 * limit). Uses MSG_NOSIGNAL. Returns 0, or a negative errno (-ETIMEDOUT,
 * -EPIPE, -ECONNRESET, ...).
 */
int coreio__wire_send_all(int fd, const void *buf, size_t len, int timeout_ms);

#endif
