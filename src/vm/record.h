/* coreio-vm: recording of the device boundary in a pcapng file (--record, docs/record-replay.md).
 */
#ifndef COREIO_VM_RECORD_H
#define COREIO_VM_RECORD_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A recording is one pcapng section (little-endian) with one interface per
 * client connection (interface 0 is the VM itself) and one Enhanced Packet
 * Block per record: a 16-byte record header (magic 'C', version 1, kind,
 * flags, conn, seq) and a body, a CoreIO frame either way or an event.
 * docs/record-replay.md has the format in full.
 *
 * Threads: every call may come from any thread (I/O thread, vCPUs), with
 * any of the VM's locks held; the recording's own lock is taken last
 * (innermost) and held only to copy a record into memory. A writer thread
 * writes that memory to the file every RECORD_FLUSH_MS, or sooner when a
 * quarter of the buffer is used. A record that finds the buffer full waits
 * until the writer has taken it (records are never dropped while the file
 * can be written; after a write error they are counted as lost and
 * record_close() reports it).
 */

#define RECORD_MAGIC	   0x43u /* 'C' */
#define RECORD_VERSION	   1u
#define RECORD_HDR_LEN	   16u
#define RECORD_LINKTYPE	   147u /* LINKTYPE_USER0 */
#define RECORD_BUF_SIZE	   (8u << 20)
#define RECORD_FLUSH_MS	   20
#define RECORD_TEXT_MAX	   480 /* bytes of an event's text; longer text is cut */
#define RECORD_FLAG_FD	   1u  /* the frame carried a file descriptor (SHM_MAP) */
#define RECORD_COMMENT_V1  "coreio recording v1"
#define RECORD_APPLICATION "coreio-vm"

/* Record kinds (record header byte 2). */
enum record_kind {
	RECORD_FROM_CLIENT = 0, /* a CoreIO frame a client sent */
	RECORD_TO_CLIENT = 1,	/* a CoreIO frame the VM sent */
	RECORD_EVENT = 2,	/* an event of the VM */
};

/* Event types (first u16 of an event's body). */
enum record_event {
	REC_EV_CONNECT = 1,
	REC_EV_CLOSE = 2,
	REC_EV_CLAIM = 3,
	REC_EV_RELEASE = 4,
	REC_EV_BUS_ERROR = 5,
	REC_EV_IOMMU_FAULT = 6,
	REC_EV_RESET = 7,
	REC_EV_INJECT = 8,
	REC_EV_DMA_REFUSED = 9,
	REC_EV_NOTE = 10,
};

struct vm_record;

/* What a recording wrote, for its closing summary. */
struct record_stats {
	uint64_t records; /* written to the file */
	uint64_t lost;	  /* not written: the file failed (write_err) */
	uint64_t bytes;	  /* of the file */
	int write_err;	  /* the first write error (negative errno), or 0 */
};

/*
 * The recording of this process (main.c sets it from --record), or NULL:
 * every hook is one branch on it when nothing is recorded.
 */
extern struct vm_record *vm_record;

/*
 * The connection the current thread runs a frame of (vmmio_proto.c sets it
 * while recording), so that an event raised deeper down (an IOMMU fault)
 * goes on that connection's interface; 0: none.
 */
extern _Thread_local unsigned record_conn_hint;

/*
 * Create (truncate) the file at path, write the section header and
 * interface 0 ("coreio-vm"), and start the writer thread.
 *   out     the new recording on success
 *   err     on failure, a message naming path and the reason
 * Returns 0, or a negative errno.
 */
int record_open(struct vm_record **out, const char *path, char *err, size_t errlen);

/*
 * Add connection conn's interface ("coreio conn N", description
 * "PEER on PORT"); its frames and events go on it from now on. Call once
 * per connection, before its first record. No errors (a full buffer waits).
 */
void record_conn(struct vm_record *r, unsigned conn, const char *peer, const char *port);

/*
 * Record one complete CoreIO frame of len bytes crossing connection conn:
 * kind RECORD_FROM_CLIENT or RECORD_TO_CLIENT, flags RECORD_FLAG_*.
 */
void record_frame(struct vm_record *r, unsigned conn, unsigned kind, unsigned flags,
		  const uint8_t *frame, size_t len);

/*
 * Record an event of type (enum record_event) on connection conn (0: the
 * VM), its text printf-formatted: "name key=value ...".
 */
void record_event(struct vm_record *r, unsigned conn, unsigned type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* record_event() with a va_list. */
void record_eventv(struct vm_record *r, unsigned conn, unsigned type, const char *fmt, va_list ap);

/*
 * Write everything still in memory, stop the writer thread, close the file
 * and free r (NULL: nothing). stats (may be NULL) gets the summary.
 * Returns 0, or the first write or close error (negative errno).
 */
int record_close(struct vm_record *r, struct record_stats *stats);

#endif
