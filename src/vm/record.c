/* coreio-vm: the pcapng writer of --record: records into memory, a writer thread to the file. */
#include "record.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "wire_le.h"

#define PCAPNG_SHB 0x0A0D0D0Au
#define PCAPNG_IDB 0x00000001u
#define PCAPNG_EPB 0x00000006u
#define PCAPNG_BOM 0x1A2B3C4Du

#define OPT_END		0
#define OPT_COMMENT	1
#define OPT_IF_NAME	2
#define OPT_IF_DESC	3
#define OPT_SHB_USERAPP 4
#define OPT_IF_TSRESOL	9

#define EPB_FIXED 28u /* type, length, interface, ts high, ts low, captured, original */

struct vm_record *vm_record;
_Thread_local unsigned record_conn_hint;

struct vm_record {
	pthread_mutex_t lock;
	pthread_cond_t more; /* the writer: a quarter full, or stop */
	pthread_cond_t room; /* producers: the writer took the buffer */
	pthread_t writer;
	int fd;

	/* lock */
	uint8_t *buf, *spare; /* records not written yet, and the writer's */
	size_t len;
	uint64_t seq;
	bool stop;
	uint32_t *iface_of; /* by connection number: its interface (0: none) */
	size_t niface_of;
	uint32_t next_iface;
	struct record_stats st;
};

static size_t pad4(size_t n)
{
	return (n + 3) & ~(size_t)3;
}

/* Bytes of an option with a value of len bytes. */
static size_t opt_size(size_t len)
{
	return 4 + pad4(len);
}

/* Write an option at p; returns the bytes written. */
static size_t opt_put(uint8_t *p, uint16_t code, const void *val, size_t len)
{
	size_t n = opt_size(len);

	memset(p, 0, n);
	wire_put16(p, code);
	wire_put16(p + 2, (uint16_t)len);
	memcpy(p + 4, val, len);
	return n;
}

/* Write all of buf to fd. Returns 0 or a negative errno. */
static int write_all(int fd, const uint8_t *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Wait (r->lock held) until a record comes or RECORD_FLUSH_MS pass. */
static void wait_more(struct vm_record *r)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_nsec += RECORD_FLUSH_MS * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&r->more, &r->lock, &ts);
}

static void *writer_main(void *opaque)
{
	struct vm_record *r = opaque;

	pthread_mutex_lock(&r->lock);
	for (;;) {
		uint8_t *out;
		size_t n;
		int err;

		if (r->len == 0) {
			if (r->stop)
				break;
			wait_more(r);
			continue;
		}
		out = r->buf;
		n = r->len;
		r->buf = r->spare;
		r->spare = out;
		r->len = 0;
		pthread_cond_broadcast(&r->room);
		pthread_mutex_unlock(&r->lock);
		err = r->st.write_err ? 0 : write_all(r->fd, out, n);
		pthread_mutex_lock(&r->lock);
		if (err < 0 && !r->st.write_err)
			r->st.write_err = err;
		if (!r->st.write_err)
			r->st.bytes += n;
		pthread_cond_broadcast(&r->room);
		if (!r->stop && r->len == 0) {
			/* Wait a while before the next write: records pile up into
			 * one write() instead of one each. */
			wait_more(r);
		}
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/*
 * Room for a block of n bytes at the end of the buffer (lock held): waits
 * while the writer has not taken a full buffer. Returns where it goes, or
 * NULL when the file failed (the block is counted as lost).
 */
static uint8_t *block_reserve(struct vm_record *r, size_t n)
{
	while (!r->st.write_err && n <= RECORD_BUF_SIZE && r->len + n > RECORD_BUF_SIZE) {
		pthread_cond_signal(&r->more);
		pthread_cond_wait(&r->room, &r->lock);
	}
	if (r->st.write_err || n > RECORD_BUF_SIZE) {
		r->st.lost++;
		return NULL;
	}
	return r->buf + r->len;
}

/* The block of n bytes at the buffer's end is complete (lock held). */
static void block_commit(struct vm_record *r, size_t n)
{
	size_t before = r->len;

	r->len += n;
	if (before < RECORD_BUF_SIZE / 4 && r->len >= RECORD_BUF_SIZE / 4)
		pthread_cond_signal(&r->more);
}

/* Interface of connection conn (lock held); 0 for none. */
static uint32_t iface_of(const struct vm_record *r, unsigned conn)
{
	return conn < r->niface_of ? r->iface_of[conn] : 0;
}

/* An IDB with name and description (lock held). */
static void put_idb(struct vm_record *r, const char *name, const char *desc)
{
	size_t nl = strlen(name), dl = strlen(desc);
	size_t n = 8 + 8 + opt_size(nl) + (dl ? opt_size(dl) : 0) + opt_size(1) + 4 + 4;
	uint8_t *p = block_reserve(r, n), tsres = 9, *q;

	r->next_iface++; /* counted even when lost: numbering stays that of the reader */
	if (!p)
		return;
	wire_put32(p, PCAPNG_IDB);
	wire_put32(p + 4, (uint32_t)n);
	wire_put16(p + 8, RECORD_LINKTYPE);
	wire_put16(p + 10, 0);
	wire_put32(p + 12, 0); /* snaplen: no limit */
	q = p + 16;
	q += opt_put(q, OPT_IF_NAME, name, nl);
	if (dl)
		q += opt_put(q, OPT_IF_DESC, desc, dl);
	q += opt_put(q, OPT_IF_TSRESOL, &tsres, 1);
	wire_put32(q, OPT_END);
	wire_put32(q + 4, (uint32_t)n);
	block_commit(r, n);
}

/*
 * One EPB (lock held): the record header, then head (hl bytes) and body
 * (bl bytes) as its body.
 */
static void put_epb(struct vm_record *r, unsigned conn, unsigned kind, unsigned flags,
		    const uint8_t *head, size_t hl, const uint8_t *body, size_t bl)
{
	size_t cap = RECORD_HDR_LEN + hl + bl;
	size_t n = EPB_FIXED + pad4(cap) + 4;
	struct timespec ts;
	uint64_t t;
	uint8_t *p;

	if (cap > UINT32_MAX - 64)
		return; /* not reached: frames are at most 16 KiB */
	p = block_reserve(r, n);
	if (!p)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	t = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	wire_put32(p, PCAPNG_EPB);
	wire_put32(p + 4, (uint32_t)n);
	wire_put32(p + 8, iface_of(r, conn));
	wire_put32(p + 12, (uint32_t)(t >> 32));
	wire_put32(p + 16, (uint32_t)t);
	wire_put32(p + 20, (uint32_t)cap);
	wire_put32(p + 24, (uint32_t)cap);
	p += EPB_FIXED;
	p[0] = RECORD_MAGIC;
	p[1] = RECORD_VERSION;
	p[2] = (uint8_t)kind;
	p[3] = (uint8_t)flags;
	wire_put32(p + 4, conn);
	wire_put64(p + 8, ++r->seq);
	p += RECORD_HDR_LEN;
	if (hl)
		memcpy(p, head, hl);
	if (bl)
		memcpy(p + hl, body, bl);
	memset(p + hl + bl, 0, pad4(cap) - cap);
	wire_put32(p - RECORD_HDR_LEN + pad4(cap), (uint32_t)n);
	r->st.records++;
	block_commit(r, n);
}

int record_open(struct vm_record **out, const char *path, char *err, size_t errlen)
{
	const char *comment = RECORD_COMMENT_V1, *app = RECORD_APPLICATION;
	uint8_t shb[128], *q;
	struct vm_record *r;
	pthread_condattr_t ca;
	size_t n;
	int rc;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (!r) {
		snprintf(err, errlen, "--record %s: out of memory", path);
		return -ENOMEM;
	}
	r->buf = malloc(RECORD_BUF_SIZE);
	r->spare = malloc(RECORD_BUF_SIZE);
	if (!r->buf || !r->spare) {
		free(r->buf);
		free(r->spare);
		free(r);
		snprintf(err, errlen, "--record %s: out of memory", path);
		return -ENOMEM;
	}
	r->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (r->fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "--record %s: cannot create the file: %s", path,
			 strerror(-rc));
		goto fail_mem;
	}
	/* The section header, written at once: a full disk shows now. */
	n = 8 + 4 + 4 + 8 + opt_size(strlen(comment)) + opt_size(strlen(app)) + 4 + 4;
	wire_put32(shb, PCAPNG_SHB);
	wire_put32(shb + 4, (uint32_t)n);
	wire_put32(shb + 8, PCAPNG_BOM);
	wire_put16(shb + 12, 1);
	wire_put16(shb + 14, 0);
	wire_put64(shb + 16, UINT64_MAX); /* section length: not given */
	q = shb + 24;
	q += opt_put(q, OPT_COMMENT, comment, strlen(comment));
	q += opt_put(q, OPT_SHB_USERAPP, app, strlen(app));
	wire_put32(q, OPT_END);
	wire_put32(q + 4, (uint32_t)n);
	rc = write_all(r->fd, shb, n);
	if (rc < 0) {
		snprintf(err, errlen, "--record %s: cannot write: %s", path, strerror(-rc));
		goto fail_fd;
	}
	r->st.bytes = n;
	pthread_mutex_init(&r->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->more, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&r->room, NULL);
	pthread_mutex_lock(&r->lock);
	put_idb(r, "coreio-vm", "the VM: events of no connection");
	pthread_mutex_unlock(&r->lock);
	rc = -pthread_create(&r->writer, NULL, writer_main, r);
	if (rc < 0) {
		snprintf(err, errlen, "--record %s: cannot start the writer thread: %s", path,
			 strerror(-rc));
		pthread_cond_destroy(&r->more);
		pthread_cond_destroy(&r->room);
		pthread_mutex_destroy(&r->lock);
		goto fail_fd;
	}
	*out = r;
	return 0;

fail_fd:
	close(r->fd);
	unlink(path);
fail_mem:
	free(r->buf);
	free(r->spare);
	free(r);
	return rc;
}

void record_conn(struct vm_record *r, unsigned conn, const char *peer, const char *port)
{
	char name[32], desc[400];

	snprintf(name, sizeof(name), "coreio conn %u", conn);
	snprintf(desc, sizeof(desc), "%s on %s", peer, port);
	pthread_mutex_lock(&r->lock);
	if (conn >= r->niface_of) {
		size_t nn = r->niface_of ? r->niface_of : 16;
		uint32_t *p;

		while (nn <= conn)
			nn *= 2;
		p = realloc(r->iface_of, nn * sizeof(*p));
		if (p) {
			memset(p + r->niface_of, 0, (nn - r->niface_of) * sizeof(*p));
			r->iface_of = p;
			r->niface_of = nn;
		}
	}
	/* Out of memory: its records go on interface 0 (the record header
	 * still names the connection). */
	if (conn < r->niface_of)
		r->iface_of[conn] = r->next_iface;
	put_idb(r, name, desc);
	pthread_mutex_unlock(&r->lock);
}

void record_frame(struct vm_record *r, unsigned conn, unsigned kind, unsigned flags,
		  const uint8_t *frame, size_t len)
{
	pthread_mutex_lock(&r->lock);
	put_epb(r, conn, kind, flags, frame, len, NULL, 0);
	pthread_mutex_unlock(&r->lock);
}

void record_eventv(struct vm_record *r, unsigned conn, unsigned type, const char *fmt, va_list ap)
{
	uint8_t body[8 + RECORD_TEXT_MAX + 1];
	int n = vsnprintf((char *)body + 8, RECORD_TEXT_MAX + 1, fmt, ap);
	size_t tl = n < 0 ? 0 : (size_t)n > RECORD_TEXT_MAX ? RECORD_TEXT_MAX : (size_t)n;

	wire_put16(body, (uint16_t)type);
	wire_put16(body + 2, 0);
	wire_put32(body + 4, (uint32_t)tl);
	pthread_mutex_lock(&r->lock);
	put_epb(r, conn, RECORD_EVENT, 0, body, 8 + tl, NULL, 0);
	pthread_mutex_unlock(&r->lock);
}

void record_event(struct vm_record *r, unsigned conn, unsigned type, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	record_eventv(r, conn, type, fmt, ap);
	va_end(ap);
}

int record_close(struct vm_record *r, struct record_stats *stats)
{
	int err;

	if (!r)
		return 0;
	pthread_mutex_lock(&r->lock);
	r->stop = true;
	pthread_cond_signal(&r->more);
	pthread_mutex_unlock(&r->lock);
	pthread_join(r->writer, NULL);
	err = r->st.write_err;
	if (close(r->fd) < 0 && !err)
		err = -errno;
	if (err && !r->st.write_err)
		r->st.write_err = err;
	if (stats)
		*stats = r->st;
	pthread_cond_destroy(&r->more);
	pthread_cond_destroy(&r->room);
	pthread_mutex_destroy(&r->lock);
	free(r->iface_of);
	free(r->buf);
	free(r->spare);
	free(r);
	return err;
}
