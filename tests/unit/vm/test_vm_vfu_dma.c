/* Unit tests of the vfio-user server's DMA code (src/vm/vfu_dma.c, compiled in with qside.c):
 * DMA_MAP/DMA_UNMAP windows, clients' mid 0 DMA by pointer into memfd windows and by
 * DMA_READ/DMA_WRITE messages (a fake vfu_send() records them; replies are built by hand). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "event.h"
#include "vfu.h"

#define MSG_ROOM  (VFU_HDR_SIZE + VFU_DMA_RW_SIZE + VFU_MAX_XFER)
#define MAX_SENT  16
#define PAGE	  0x1000u
#define MSG_BASE  0x200000ull /* a window without an fd (setup_msg_window()) */
#define MSG_SIZE  0x10000ull
#define FD_BASE	  0x100000ull /* an fd window (setup_fd_window()) */
#define TOP_START (UINT64_MAX - 0xfffull)

/* ---- fakes of vfu.c's helpers: a recorded log and a recorded "QEMU" side ---- */

static char logbuf[16384];
static size_t loglen;
static unsigned nlog;

void vfu_log(const struct vfu_dev *d, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	(void)d;
	nlog++;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	n = snprintf(logbuf + loglen, sizeof(logbuf) - loglen, "%s\n", line);
	if (n > 0)
		loglen +=
		    (size_t)n < sizeof(logbuf) - loglen ? (size_t)n : sizeof(logbuf) - loglen - 1;
}

static bool logged(const char *s)
{
	return strstr(logbuf, s) != NULL;
}

struct sent_msg {
	struct vfu_dev *d;
	size_t len;
	uint8_t buf[MSG_ROOM];
};

static struct sent_msg sent[MAX_SENT];
static unsigned nsent;	     /* recorded */
static unsigned nsend_calls; /* vfu_send() calls, recorded or not */
static long fail_send_at;    /* the vfu_send() call (0-based) that fails; -1: none */

/* As vfu.c's: a failed send closes the connection (conn_close()), which fails our pieces. */
int vfu_send(struct vfu_dev *d, const void *buf, size_t len)
{
	unsigned k = nsend_calls++;

	if ((long)k == fail_send_at) {
		d->fd = -1;
		d->negotiated = false;
		vfu_dma_conn_closed(d);
		vfu_dma_clear(d);
		return -EIO;
	}
	if (nsent < MAX_SENT && len <= MSG_ROOM) {
		sent[nsent].d = d;
		sent[nsent].len = len;
		memcpy(sent[nsent].buf, buf, len);
		nsent++;
	}
	return 0;
}

/* ---- state ---- */

static struct vfu s;
static struct vmmio v;
static struct ioreq_ctx ioctx;
static bool have_ioctx;

/* A client's DMA piece as the service hands it over. */
struct top {
	struct vmmio_dma_async a; /* first: done() gets it */
	int ndone;
	int err;
	uint8_t data[4 * VFU_MAX_XFER];
};

static struct top tops[3];
static bool stop_on_done;

static void top_done(struct vmmio_dma_async *op, int err)
{
	struct top *t = (struct top *)op;

	t->ndone++;
	t->err = err;
	if (stop_on_done)
		event_stop();
}

static struct top *new_op(unsigned i, bool write, unsigned g)
{
	struct top *t = &tops[i];

	memset(t, 0, sizeof(*t));
	t->a.write = write;
	t->a.len = sizeof(t->data);
	t->a.data = t->data;
	t->a.g = g;
	t->a.done = top_done;
	t->err = 1; /* not called yet */
	return t;
}

static void add_seg(struct top *t, uint64_t gpa, uint32_t len, uint32_t off)
{
	assert_true(t->a.nseg < VMMIO_DMA_ASYNC_SEGS);
	t->a.seg[t->a.nseg++] = (struct vmmio_dma_seg){gpa, len, off};
}

static int setup(void **state)
{
	(void)state;
	memset(&s, 0, sizeof(s));
	memset(&v, 0, sizeof(v));
	s.q.v = &v;
	s.dma_timer_fd = -1;
	s.ndevs = 2;
	for (unsigned g = 0; g < s.ndevs; g++) {
		struct vfu_dev *d = &s.devs[g];

		d->s = &s;
		d->g = g;
		d->fd = 1000 + (int)g; /* only compared with -1 by vfu_dma.c; vfu_send() is ours */
		d->listen_fd = -1;
		d->negotiated = true;
	}
	memset(tops, 0, sizeof(tops));
	memset(sent, 0, sizeof(sent));
	nsent = nsend_calls = 0;
	fail_send_at = -1;
	logbuf[0] = '\0';
	loglen = 0;
	nlog = 0;
	stop_on_done = false;
	have_ioctx = false;
	return event_init();
}

static int teardown(void **state)
{
	(void)state;
	vfu_dma_stop(&s); /* pieces still waiting fail; the timer goes */
	for (unsigned g = 0; g < s.ndevs; g++)
		vfu_dma_clear(&s.devs[g]);
	event_exit(); /* runs what is deferred (completions, shm map updates) */
	for (unsigned i = 0; i < v.nshm; i++)
		close(v.shm[i].fd);
	v.nshm = 0;
	if (have_ioctx)
		ioreq_exit(&ioctx);
	return s.ops ? -1 : 0;
}

/* Run the deferred calls (ops_finish(), shm_flush()) as the loop would. */
static void pump(void)
{
	event_exit();
	assert_int_equal(event_init(), 0);
}

/* ---- little-endian helpers of our own (not the encoder under test) ---- */

static void st(uint8_t *p, uint64_t x, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(x >> (8 * i));
}

static uint64_t ld(const uint8_t *p, unsigned n)
{
	uint64_t x = 0;

	for (unsigned i = 0; i < n; i++)
		x |= (uint64_t)p[i] << (8 * i);
	return x;
}

/* DMA_MAP as vfu.c's dispatch does it: decode (-EINVAL when refused), then vfu_dma_map(). */
static int map_full(struct vfu_dev *d, uint32_t argsz, uint32_t flags, uint64_t offset,
		    uint64_t addr, uint64_t size, int fd)
{
	uint8_t p[VFU_DMA_MAP_SIZE];
	struct vfu_dma_map m;
	char why[200];

	st(p, argsz, 4);
	st(p + 4, flags, 4);
	st(p + 8, offset, 8);
	st(p + 16, addr, 8);
	st(p + 24, size, 8);
	if (vfu_dma_map_decode(p, sizeof(p), &m, why, sizeof(why)) < 0) {
		if (fd >= 0)
			close(fd); /* vfu.c's close_rx_fds() */
		return -EINVAL;
	}
	return vfu_dma_map(d, &m, fd);
}

static int map(struct vfu_dev *d, uint64_t addr, uint64_t size, uint64_t offset, uint32_t flags,
	       int fd)
{
	return map_full(d, VFU_DMA_MAP_SIZE, flags, offset, addr, size, fd);
}

static int unmap_full(struct vfu_dev *d, uint32_t flags, uint64_t addr, uint64_t size)
{
	uint8_t p[VFU_DMA_UNMAP_SIZE];
	struct vfu_dma_unmap u;
	char why[200];

	st(p, VFU_DMA_UNMAP_SIZE, 4);
	st(p + 4, flags, 4);
	st(p + 8, addr, 8);
	st(p + 16, size, 8);
	if (vfu_dma_unmap_decode(p, sizeof(p), &u, why, sizeof(why)) < 0)
		return -EINVAL;
	return vfu_dma_unmap(d, &u);
}

static bool fd_closed(int fd)
{
	return fcntl(fd, F_GETFD) < 0 && errno == EBADF;
}

/* A memfd of size bytes, byte i holding (uint8_t)(i * 7 + 3). */
static int make_memfd(size_t size)
{
	int fd = memfd_create("test-vfu-dma", MFD_CLOEXEC);
	uint8_t *b = malloc(size);

	assert_true(fd >= 0);
	assert_non_null(b);
	for (size_t i = 0; i < size; i++)
		b[i] = (uint8_t)(i * 7 + 3);
	assert_int_equal(pwrite(fd, b, size, 0), (ssize_t)size);
	free(b);
	return fd;
}

static uint8_t file_byte(int fd, off_t off)
{
	uint8_t b = 0;

	assert_int_equal(pread(fd, &b, 1, off), 1);
	return b;
}

/* Check sent message k: on d, cmd, gpa, count, exactly QEMU's layout; returns its id. */
static uint16_t check_msg(unsigned k, const struct vfu_dev *d, uint16_t cmd, uint64_t gpa,
			  uint32_t count, const uint8_t *wdata)
{
	const struct sent_msg *m = &sent[k];
	size_t want = VFU_HDR_SIZE + 16 + (cmd == VFU_CMD_DMA_WRITE ? count : 0);

	assert_true(k < nsent);
	assert_ptr_equal(m->d, d);
	assert_int_equal(m->len, want);
	/* Header: id (2), cmd (2), size (4), flags (4: a command), error (4). */
	assert_int_equal(ld(m->buf + 2, 2), cmd);
	assert_int_equal(ld(m->buf + 4, 4), want);
	assert_int_equal(ld(m->buf + 8, 4), VFU_F_TYPE_CMD);
	assert_int_equal(ld(m->buf + 12, 4), 0);
	/* Payload: address (8), count (8, upper half 0), data at payload offset 16. */
	assert_true(ld(m->buf + 16, 8) == gpa);
	assert_true(ld(m->buf + 24, 8) == count);
	if (wdata)
		assert_memory_equal(m->buf + 32, wdata, count);
	return (uint16_t)ld(m->buf, 2);
}

/* A reply from the peer of d: header, then len payload bytes. */
static int reply(struct vfu_dev *d, uint16_t id, uint16_t cmd, uint32_t flags, uint32_t error,
		 const uint8_t *payload, size_t len, char *why, size_t whylen)
{
	struct vfu_hdr h = {id, cmd, (uint32_t)(VFU_HDR_SIZE + len), VFU_F_TYPE_REPLY | flags,
			    error};

	why[0] = '\0';
	return vfu_dma_reply(d, &h, payload, len, why, whylen);
}

/* A DMA_READ reply payload at p: address, 8-byte count, n data bytes. Returns its length. */
static size_t read_payload(uint8_t *p, uint64_t addr, uint64_t count, const uint8_t *data, size_t n)
{
	st(p, addr, 8);
	st(p + 8, count, 8);
	if (n)
		memcpy(p + 16, data, n);
	return 16 + n;
}

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 13);
}

/* ---- DMA_MAP / DMA_UNMAP ---- */

static void test_map_refusals(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	uint8_t p[VFU_DMA_MAP_SIZE] = {0};
	struct vfu_dma_map m;
	char why[200];
	int fd, pfd[2];

	(void)state;
	/* The decoder refuses bad flags, sizes and wrapping ranges (vfu.c: EINVAL). */
	assert_int_equal(map(d, MSG_BASE, 0x1000, 0, 4, -1), -EINVAL);
	assert_int_equal(map(d, MSG_BASE, 0x1000, 0, VFU_DMA_READABLE | 8, -1), -EINVAL);
	assert_int_equal(map(d, MSG_BASE, 0, 0, VFU_DMA_READABLE, -1), -EINVAL);
	assert_int_equal(map(d, UINT64_MAX - 0xfff, 0x1000, 0, VFU_DMA_READABLE, -1), -EINVAL);
	assert_int_equal(map(d, 0x1000, 0x1000, UINT64_MAX - 0xff, VFU_DMA_READABLE, -1), -EINVAL);
	assert_int_equal(
	    map_full(d, VFU_DMA_MAP_SIZE - 1, VFU_DMA_READABLE, 0, MSG_BASE, 0x1000, -1), -EINVAL);
	assert_int_equal(vfu_dma_map_decode(p, VFU_DMA_MAP_SIZE - 1, &m, why, sizeof(why)),
			 -EINVAL);
	assert_int_equal(vfu_dma_map_decode(p, VFU_DMA_MAP_SIZE + 1, &m, why, sizeof(why)),
			 -EINVAL);
	assert_int_equal(d->ndma, 0);
	assert_int_equal(d->dma_maps, 0);

	/* A window without an fd: logged once. */
	assert_int_equal(map(d, MSG_BASE, MSG_SIZE, 0, VFU_DMA_READABLE, -1), 0);
	assert_true(logged("without an fd"));
	assert_int_equal(map(d, MSG_BASE + MSG_SIZE, 0x1000, 0, VFU_DMA_READABLE, -1), 0);
	assert_int_equal(nlog, 1);
	assert_int_equal(d->ndma, 2);
	assert_int_equal(d->dma_maps, 2);
	assert_true(d->dma[0].m.gpa == MSG_BASE && d->dma[0].m.size == MSG_SIZE);
	assert_int_equal(d->dma[0].fd, -1);
	assert_null(d->dma[0].m.host);

	/* Overlaps, from every side, are EEXIST; the fd goes. Adjacent windows are fine. */
	assert_int_equal(map(d, MSG_BASE, MSG_SIZE, 0, VFU_DMA_READABLE, -1), -EEXIST);
	assert_int_equal(map(d, MSG_BASE - 0x1000, 0x1001, 0, VFU_DMA_READABLE, -1), -EEXIST);
	assert_int_equal(map(d, MSG_BASE + MSG_SIZE - 1, 2, 0, VFU_DMA_READABLE, -1), -EEXIST);
	assert_int_equal(map(d, MSG_BASE + 0x10, 0x10, 0, VFU_DMA_READABLE, -1), -EEXIST);
	assert_int_equal(map(d, 0, UINT64_MAX, 0, VFU_DMA_READABLE, -1), -EEXIST);
	assert_true(logged("overlaps window"));
	fd = make_memfd(0x1000);
	assert_int_equal(map(d, MSG_BASE + 0x800, 0x1000, 0, VFU_DMA_READABLE, fd), -EEXIST);
	assert_true(fd_closed(fd));
	assert_int_equal(map(d, MSG_BASE - 0x1000, 0x1000, 0, VFU_DMA_READABLE, -1), 0);
	assert_int_equal(d->ndma, 3);
	/* The other device has windows of its own. */
	assert_int_equal(map(&s.devs[1], MSG_BASE, MSG_SIZE, 0, VFU_DMA_WRITEABLE, -1), 0);

	/* An fd that is no memory file, and a window past the file's end: EINVAL, fd closed. */
	assert_int_equal(pipe(pfd), 0);
	close(pfd[1]);
	assert_int_equal(map(d, 0x10000000, 0x1000, 0, VFU_DMA_READABLE, pfd[0]), -EINVAL);
	assert_true(fd_closed(pfd[0]));
	assert_true(logged("not a memory file"));
	fd = make_memfd(0x2000);
	assert_int_equal(map(d, 0x10000000, 0x1001, 0x1000, VFU_DMA_READABLE, fd), -EINVAL);
	assert_true(fd_closed(fd));
	assert_true(logged("passes the file's end"));
	fd = make_memfd(0x2000);
	assert_int_equal(map(d, 0x10000000, 0x1000, 0x2001, VFU_DMA_READABLE, fd), -EINVAL);
	assert_true(fd_closed(fd));
	assert_int_equal(d->ndma, 3);
	assert_int_equal(d->dma_maps, 3);
}

static void test_map_limit(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	int fd;

	(void)state;
	for (unsigned i = 0; i < VFU_MAX_DMA; i++)
		assert_int_equal(map(d, 0x100000ull * i, 0x1000, 0, VFU_DMA_READABLE, -1), 0);
	assert_int_equal(d->ndma, VFU_MAX_DMA);
	assert_int_equal(map(d, 0x100000ull * VFU_MAX_DMA, 0x1000, 0, VFU_DMA_READABLE, -1),
			 -ENOSPC);
	fd = make_memfd(0x1000);
	assert_int_equal(map(d, 0x100000ull * (VFU_MAX_DMA + 1), 0x1000, 0, VFU_DMA_READABLE, fd),
			 -ENOSPC);
	assert_true(fd_closed(fd));
	assert_int_equal(d->ndma, VFU_MAX_DMA);
	/* One unmapped: room for one again. */
	assert_int_equal(unmap_full(d, 0, 0x100000ull * 5, 0x1000), 0);
	assert_int_equal(map(d, 0x100000ull * VFU_MAX_DMA, 0x1000, 0, VFU_DMA_READABLE, -1), 0);
	assert_int_equal(d->ndma, VFU_MAX_DMA);
}

static void test_unmap(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	int fd = make_memfd(0x3000);

	(void)state;
	assert_int_equal(map(d, 0x10000, 0x1000, 0, VFU_DMA_READABLE, -1), 0);
	assert_int_equal(map(d, FD_BASE, 0x2000, 0x1000, VFU_DMA_READABLE | VFU_DMA_WRITEABLE, fd),
			 0);
	assert_int_equal(map(d, 0x30000, 0x1000, 0, VFU_DMA_WRITEABLE, -1), 0);
	assert_non_null(vfu_dma_ptr(&s, FD_BASE, 0x2000, false));
	assert_non_null(vfu_dma_ptr(&s, FD_BASE, 0x2000, true));

	/* Decoder refusals: bad flags, ALL with an address or size, a wrapping range. */
	assert_int_equal(unmap_full(d, 1, 0x10000, 0x1000), -EINVAL);
	assert_int_equal(unmap_full(d, VFU_DMA_UNMAP_FLAG_ALL, 0x10000, 0), -EINVAL);
	assert_int_equal(unmap_full(d, VFU_DMA_UNMAP_FLAG_ALL, 0, 0x1000), -EINVAL);
	assert_int_equal(unmap_full(d, 0, UINT64_MAX, 2), -EINVAL);
	/* Only the exact address and size of a window unmap it. */
	assert_int_equal(unmap_full(d, 0, 0x20000, 0x1000), -ENOENT);
	assert_int_equal(unmap_full(d, 0, 0x10000, 0x800), -ENOENT);
	assert_int_equal(unmap_full(d, 0, 0x10000, 0x2000), -ENOENT);
	assert_int_equal(unmap_full(d, 0, 0x10800, 0x800), -ENOENT);
	assert_true(logged("matches no window"));
	assert_int_equal(unmap_full(&s.devs[1], 0, 0x10000, 0x1000), -ENOENT);
	assert_int_equal(d->ndma, 3);

	/* The fd window goes: no pointer any more, its fd closed; the others stay. */
	assert_int_equal(unmap_full(d, 0, FD_BASE, 0x2000), 0);
	assert_true(fd_closed(fd));
	assert_null(vfu_dma_ptr(&s, FD_BASE, 1, false));
	assert_int_equal(d->ndma, 2);
	assert_true((d->dma[0].m.gpa == 0x10000 && d->dma[1].m.gpa == 0x30000) ||
		    (d->dma[0].m.gpa == 0x30000 && d->dma[1].m.gpa == 0x10000));
	assert_int_equal(unmap_full(d, 0, FD_BASE, 0x2000), -ENOENT);
	/* The same range may be mapped again. */
	assert_int_equal(map(d, FD_BASE, 0x2000, 0, VFU_DMA_READABLE, -1), 0);
	assert_int_equal(d->ndma, 3);
	/* Everything. */
	assert_int_equal(unmap_full(d, VFU_DMA_UNMAP_FLAG_ALL, 0, 0), 0);
	assert_int_equal(d->ndma, 0);
	assert_int_equal(unmap_full(d, 0, 0x10000, 0x1000), -ENOENT);
	assert_int_equal(unmap_full(d, VFU_DMA_UNMAP_FLAG_ALL, 0, 0), 0);
}

/* ---- DMA by pointer (fd windows) ---- */

static void test_fd_window_pointer(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	int fd = make_memfd(0x3000), rofd = make_memfd(0x1000), wofd = make_memfd(0x1000);
	int keep = dup(fd), rokeep = dup(rofd), wokeep = dup(wofd);
	uint8_t *p, want[64];
	struct top *t;

	(void)state;
	assert_true(keep >= 0 && rokeep >= 0 && wokeep >= 0);
	/* A page-unaligned offset: gpa FD_BASE is byte 0x1010 of the file. */
	assert_int_equal(map(d, FD_BASE, 0x1ff0, 0x1010, VFU_DMA_READABLE | VFU_DMA_WRITEABLE, fd),
			 0);
	assert_int_equal(d->dma[0].fd, fd);
	p = vfu_dma_ptr(&s, FD_BASE, 0x1ff0, false);
	assert_non_null(p);
	assert_ptr_equal(vfu_dma_ptr(&s, FD_BASE, 0x1ff0, true), p);
	assert_int_equal(p[0], file_byte(keep, 0x1010));
	assert_int_equal(p[0x1fef], file_byte(keep, 0x2fff));
	assert_ptr_equal(vfu_dma_ptr(&s, FD_BASE + 0x1fef, 1, false), p + 0x1fef);
	assert_null(vfu_dma_ptr(&s, FD_BASE + 0x1fef, 2, false));
	assert_null(vfu_dma_ptr(&s, FD_BASE - 1, 2, false));
	assert_null(vfu_dma_ptr(&s, FD_BASE + 0x1ff0, 1, false));
	assert_null(vfu_dma_ptr(&s, FD_BASE, 0, false));
	assert_null(vfu_dma_ptr(&s, FD_BASE, 0x1ff1, false));

	/* A client's write: copied at once, into the file; no message; done() later. */
	t = new_op(0, true, 0);
	fill(t->data, 64, 0x40);
	add_seg(t, FD_BASE + 0x100, 64, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	assert_int_equal(nsend_calls, 0);
	assert_int_equal(t->ndone, 0); /* never from inside the call */
	assert_int_equal(pread(keep, want, 64, 0x1110), 64);
	assert_memory_equal(want, t->data, 64);
	pump();
	assert_int_equal(t->ndone, 1);
	assert_int_equal(t->err, 0);
	assert_null(s.ops);

	/* A read of two segments into the data at offsets 100 and 0. */
	t = new_op(0, false, 0);
	add_seg(t, FD_BASE, 16, 100);
	add_seg(t, FD_BASE + 0x1000, 32, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	assert_int_equal(t->data[100], file_byte(keep, 0x1010));
	assert_int_equal(t->data[115], file_byte(keep, 0x101f));
	assert_int_equal(t->data[0], file_byte(keep, 0x2010));
	assert_int_equal(t->data[31], file_byte(keep, 0x202f));
	assert_int_equal(t->data[32], 0);
	pump();
	assert_int_equal(t->ndone, 1);
	assert_int_equal(t->err, 0);

	/* A read-only window: a pointer to read, none to write; a client's write
	 * there faults at once (no message, nothing copied, logged once). */
	assert_int_equal(map(d, 0x400000, 0x1000, 0, VFU_DMA_READABLE, rofd), 0);
	assert_non_null(vfu_dma_ptr(&s, 0x400008, 8, false));
	assert_null(vfu_dma_ptr(&s, 0x400008, 8, true));
	assert_null(vfu_dma_ptr(&s, 0x400000, 0x1000, true));
	t = new_op(0, true, 0);
	memset(t->data, 0xee, 8);
	add_seg(t, 0x400000 + 8, 8, 0);
	nlog = 0;
	assert_int_equal(vfu_dma_async(&s, &t->a), -EFAULT);
	assert_int_equal(nsend_calls, 0);
	assert_int_equal(*(uint8_t *)vfu_dma_ptr(&s, 0x400008, 1, false), (uint8_t)(8 * 7 + 3));
	assert_int_equal(file_byte(rokeep, 8), (uint8_t)(8 * 7 + 3));
	assert_true(logged("client DMA write 0x400008 len 0x8 refused: window 0x400000+0x1000 is "
			   "not writeable (DMA_MAP flags 0x1)"));
	assert_int_equal(nlog, 1);
	/* Logged once per device. */
	assert_int_equal(vfu_dma_async(&s, &t->a), -EFAULT);
	assert_int_equal(nlog, 1);
	pump();
	assert_int_equal(t->ndone, 0);
	/* A read of it goes by pointer. */
	t = new_op(0, false, 0);
	add_seg(t, 0x400000 + 8, 8, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	assert_int_equal(t->data[0], (uint8_t)(8 * 7 + 3));
	pump();
	assert_int_equal(t->ndone, 1);
	assert_int_equal(t->err, 0);
	/* A piece whose first segment is allowed and second is not: refused whole. */
	t = new_op(0, true, 0);
	memset(t->data, 0x77, 16);
	add_seg(t, FD_BASE + 0x200, 8, 0);
	add_seg(t, 0x400000 + 16, 8, 8);
	assert_int_equal(vfu_dma_async(&s, &t->a), -EFAULT);
	assert_int_equal(file_byte(keep, 0x1210), (uint8_t)(0x1210 * 7 + 3));
	pump();
	assert_int_equal(t->ndone, 0);

	/* A write-only window: the reverse (its refusal is not logged again). */
	assert_int_equal(map(d, 0x600000, 0x1000, 0, VFU_DMA_WRITEABLE, wofd), 0);
	assert_non_null(vfu_dma_ptr(&s, 0x600010, 4, true));
	assert_null(vfu_dma_ptr(&s, 0x600010, 4, false));
	t = new_op(0, false, 0);
	add_seg(t, 0x600010, 4, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), -EFAULT);
	assert_int_equal(nsend_calls, 0);
	assert_int_equal(t->data[0], 0);
	assert_int_equal(nlog, 1);
	pump();
	assert_int_equal(t->ndone, 0);
	t = new_op(0, true, 0);
	memset(t->data, 0x5a, 4);
	add_seg(t, 0x600010, 4, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	assert_int_equal(file_byte(wokeep, 0x10), 0x5a); /* shared: it reaches the file */
	pump();
	assert_int_equal(t->ndone, 1);
	assert_int_equal(t->err, 0);

	/* A piece that crosses the window's end fails at once, nothing copied. */
	t = new_op(0, true, 0);
	memset(t->data, 0x55, 32);
	add_seg(t, FD_BASE + 0x1ff0 - 16, 32, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), -EFAULT);
	assert_int_equal(file_byte(keep, 0x3000 - 16), (uint8_t)((0x3000 - 16) * 7 + 3));
	pump();
	assert_int_equal(t->ndone, 0);
	close(keep);
	close(rokeep);
	close(wokeep);
}

/*
 * Readable and writeable fd windows (only those: a client's map allows both) are offered to
 * shm=on clients (deferred), and withdrawn on unmap.
 */
static void test_fd_window_shm(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	int fd = make_memfd(0x2000), rofd = make_memfd(0x1000), wofd = make_memfd(0x1000);

	(void)state;
	ioreq_init(&ioctx, NULL);
	have_ioctx = true;
	v.io = &ioctx;
	v.any_shm = true;
	assert_int_equal(map(d, FD_BASE, 0x1000, 0x1000, VFU_DMA_READABLE | VFU_DMA_WRITEABLE, fd),
			 0);
	assert_int_equal(map(d, 0x400000, 0x1000, 0, VFU_DMA_READABLE, rofd), 0);
	assert_int_equal(map(d, 0x500000, 0x1000, 0, VFU_DMA_WRITEABLE, -1), 0);
	assert_int_equal(map(d, 0x600000, 0x1000, 0, VFU_DMA_WRITEABLE, wofd), 0);
	assert_true(d->shm_pending);
	assert_int_equal(v.nshm, 0); /* not from inside the DMA_MAP */
	pump();
	assert_false(d->shm_pending);
	assert_int_equal(v.nshm, 1);
	assert_true(v.shm[0].gpa == FD_BASE && v.shm[0].size == 0x1000 &&
		    v.shm[0].offset == 0x1000);
	assert_true(v.shm[0].fd >= 0 && v.shm[0].fd != fd);
	assert_int_equal(v.shm_gen, 1);
	/* Unmapping a window without an fd changes nothing. */
	assert_int_equal(unmap_full(d, 0, 0x500000, 0x1000), 0);
	assert_false(d->shm_pending);
	assert_int_equal(unmap_full(d, 0, FD_BASE, 0x1000), 0);
	pump();
	assert_int_equal(v.nshm, 0);
	assert_int_equal(v.shm_gen, 2);
}

/* ---- DMA through messages (windows without an fd) ---- */

static void setup_msg_window(struct vfu_dev *d, uint32_t flags)
{
	assert_int_equal(map(d, MSG_BASE, MSG_SIZE, 0, flags, -1), 0);
}

static void test_msg_write(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	struct top *t = new_op(0, true, 0);
	char why[200];
	uint16_t id;

	(void)state;
	setup_msg_window(d, VFU_DMA_READABLE | VFU_DMA_WRITEABLE);
	fill(t->data, 100, 1);
	add_seg(t, MSG_BASE + 0x10, 100, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	assert_int_equal(nsent, 1);
	id = check_msg(0, d, VFU_CMD_DMA_WRITE, MSG_BASE + 0x10, 100, t->data);
	assert_int_equal(d->dma_msgs, 1);
	assert_non_null(s.ops);
	pump();
	assert_int_equal(t->ndone, 0); /* waits for the reply */
	/* A reply of the other device, or of the other command, is not it. */
	assert_int_equal(reply(&s.devs[1], id, VFU_CMD_DMA_WRITE, 0, 0, NULL, 0, why, sizeof(why)),
			 0);
	assert_int_equal(reply(d, id, VFU_CMD_DMA_READ, 0, 0, NULL, 0, why, sizeof(why)), 0);
	assert_true(logged("DMA_READ reply id"));
	assert_true(logged("matches no message in flight"));
	assert_int_equal(
	    reply(d, (uint16_t)(id + 1), VFU_CMD_DMA_WRITE, 0, 0, NULL, 0, why, sizeof(why)), 0);
	assert_true(logged("matches no message in flight"));
	pump();
	assert_int_equal(t->ndone, 0);
	/* The reply. */
	assert_int_equal(reply(d, id, VFU_CMD_DMA_WRITE, 0, 0, NULL, 0, why, sizeof(why)), 0);
	assert_int_equal(t->ndone, 0); /* from the loop */
	pump();
	assert_int_equal(t->ndone, 1);
	assert_int_equal(t->err, 0);
	assert_null(s.ops);
	assert_int_equal(d->dma_failed, 0);
	/* Once more: a late duplicate is ignored. */
	assert_int_equal(reply(d, id, VFU_CMD_DMA_WRITE, 0, 0, NULL, 0, why, sizeof(why)), 0);
	pump();
	assert_int_equal(t->ndone, 1);
}

static void test_msg_read_split(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	struct top *t = new_op(0, false, 0);
	uint8_t a[VFU_MAX_XFER], b[904], pl[16 + VFU_MAX_XFER];
	char why[200];
	uint16_t id0, id1;
	size_t n;

	(void)state;
	setup_msg_window(d, VFU_DMA_READABLE);
	add_seg(t, MSG_BASE + 0xff0, 5000, 10);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	assert_int_equal(nsent, 2);
	id0 = check_msg(0, d, VFU_CMD_DMA_READ, MSG_BASE + 0xff0, VFU_MAX_XFER, NULL);
	id1 = check_msg(1, d, VFU_CMD_DMA_READ, MSG_BASE + 0xff0 + VFU_MAX_XFER, 904, NULL);
	assert_int_not_equal(id0, id1);
	assert_int_equal(d->dma_msgs, 2);
	fill(a, sizeof(a), 9);
	fill(b, sizeof(b), 77);
	/* The second first. */
	n = read_payload(pl, MSG_BASE + 0xff0 + VFU_MAX_XFER, 904, b, sizeof(b));
	assert_int_equal(reply(d, id1, VFU_CMD_DMA_READ, 0, 0, pl, n, why, sizeof(why)), 0);
	pump();
	assert_int_equal(t->ndone, 0);
	assert_memory_equal(t->data + 10 + VFU_MAX_XFER, b, sizeof(b));
	/* Its duplicate answers nothing more (ignored, logged). */
	assert_int_equal(reply(d, id1, VFU_CMD_DMA_READ, 0, 0, pl, n, why, sizeof(why)), 0);
	assert_true(logged("matches no message in flight"));
	pump();
	assert_int_equal(t->ndone, 0);
	n = read_payload(pl, MSG_BASE + 0xff0, VFU_MAX_XFER, a, sizeof(a));
	assert_int_equal(reply(d, id0, VFU_CMD_DMA_READ, 0, 0, pl, n, why, sizeof(why)), 0);
	pump();
	assert_int_equal(t->ndone, 1);
	assert_int_equal(t->err, 0);
	assert_memory_equal(t->data + 10, a, sizeof(a));
	assert_memory_equal(t->data + 10 + VFU_MAX_XFER, b, sizeof(b));
	assert_int_equal(t->data[9], 0);
	assert_int_equal(t->data[10 + 5000], 0);
}

/* Segments in an fd window and in a window without an fd, one piece; ids stay unique. */
static void test_msg_mixed_and_ids(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	int fd = make_memfd(0x1000), keep = dup(fd);
	struct top *t = new_op(0, true, 0), *u;
	uint8_t want[32];
	char why[200];
	uint16_t ids[4];

	(void)state;
	setup_msg_window(d, VFU_DMA_WRITEABLE);
	assert_int_equal(map(d, FD_BASE, 0x1000, 0, VFU_DMA_READABLE | VFU_DMA_WRITEABLE, fd), 0);
	fill(t->data, sizeof(t->data), 3);
	d->next_dma_id = 0xfffe; /* ids wrap */
	add_seg(t, MSG_BASE, 20, 0);
	add_seg(t, FD_BASE + 0x20, 32, 20);
	add_seg(t, MSG_BASE + 0x1000, VFU_MAX_XFER + 1, 52);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	/* The fd segment is in the file already. */
	assert_int_equal(pread(keep, want, 32, 0x20), 32);
	assert_memory_equal(want, t->data + 20, 32);
	assert_int_equal(nsent, 3);
	ids[0] = check_msg(0, d, VFU_CMD_DMA_WRITE, MSG_BASE, 20, t->data);
	ids[1] = check_msg(1, d, VFU_CMD_DMA_WRITE, MSG_BASE + 0x1000, VFU_MAX_XFER, t->data + 52);
	ids[2] = check_msg(2, d, VFU_CMD_DMA_WRITE, MSG_BASE + 0x1000 + VFU_MAX_XFER, 1,
			   t->data + 52 + VFU_MAX_XFER);
	assert_int_equal(ids[0], 0xfffe);
	assert_true(ids[1] != ids[0] && ids[2] != ids[0] && ids[2] != ids[1]);

	/* A second piece while those are in flight never reuses their ids. */
	d->next_dma_id = ids[1];
	u = new_op(1, true, 0);
	add_seg(u, MSG_BASE + 0x8000, 8, 0);
	assert_int_equal(vfu_dma_async(&s, &u->a), 0);
	assert_int_equal(nsent, 4);
	ids[3] = check_msg(3, d, VFU_CMD_DMA_WRITE, MSG_BASE + 0x8000, 8, u->data);
	assert_true(ids[3] != ids[0] && ids[3] != ids[1] && ids[3] != ids[2]);

	/* Replies: u's completes u only. */
	assert_int_equal(reply(d, ids[3], VFU_CMD_DMA_WRITE, 0, 0, NULL, 0, why, sizeof(why)), 0);
	for (unsigned k = 0; k < 2; k++)
		assert_int_equal(
		    reply(d, ids[k], VFU_CMD_DMA_WRITE, 0, 0, NULL, 0, why, sizeof(why)), 0);
	pump();
	assert_int_equal(u->ndone, 1);
	assert_int_equal(u->err, 0);
	assert_int_equal(t->ndone, 0);
	/* The ids of t's answered messages are free again; its unanswered one is not. */
	d->next_dma_id = ids[0];
	u = new_op(2, true, 0);
	add_seg(u, MSG_BASE + 0x9000, 8, 0);
	add_seg(u, MSG_BASE + 0xa000, 8, 8);
	add_seg(u, MSG_BASE + 0xb000, 8, 16);
	assert_int_equal(vfu_dma_async(&s, &u->a), 0);
	assert_int_equal(check_msg(4, d, VFU_CMD_DMA_WRITE, MSG_BASE + 0x9000, 8, u->data), ids[0]);
	assert_int_equal(check_msg(5, d, VFU_CMD_DMA_WRITE, MSG_BASE + 0xa000, 8, u->data + 8),
			 ids[1]);
	assert_int_not_equal(check_msg(6, d, VFU_CMD_DMA_WRITE, MSG_BASE + 0xb000, 8, u->data + 16),
			     ids[2]);
	vfu_dma_stop(&s);
	assert_int_equal(u->err, -ECONNRESET);
	assert_int_equal(t->err, -ECONNRESET);
	close(keep);
}

/* A reply completes only the piece whose message it answers, in any order. */
static void test_msg_reply_order(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	struct top *t = new_op(0, true, 0), *u;
	char why[200];
	uint16_t ids[4];

	(void)state;
	setup_msg_window(d, VFU_DMA_WRITEABLE);
	add_seg(t, MSG_BASE, 8, 0);
	add_seg(t, MSG_BASE + 0x100, 8, 8);
	add_seg(t, MSG_BASE + 0x200, 8, 16);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	u = new_op(1, true, 0);
	add_seg(u, MSG_BASE + 0x8000, 8, 0);
	assert_int_equal(vfu_dma_async(&s, &u->a), 0);
	for (unsigned k = 0; k < 4; k++)
		ids[k] = (uint16_t)ld(sent[k].buf, 2);
	assert_int_equal(nsent, 4);
	for (unsigned k = 0; k < 2; k++)
		assert_int_equal(
		    reply(d, ids[k], VFU_CMD_DMA_WRITE, 0, 0, NULL, 0, why, sizeof(why)), 0);
	pump();
	assert_int_equal(t->ndone, 0);
	assert_int_equal(u->ndone, 0);
	assert_int_equal(reply(d, ids[3], VFU_CMD_DMA_WRITE, 0, 0, NULL, 0, why, sizeof(why)), 0);
	pump();
	assert_int_equal(u->ndone, 1);
	assert_int_equal(u->err, 0);
	assert_int_equal(t->ndone, 0);
	assert_int_equal(reply(d, ids[2], VFU_CMD_DMA_WRITE, 0, 0, NULL, 0, why, sizeof(why)), 0);
	pump();
	assert_int_equal(t->ndone, 1);
	assert_int_equal(t->err, 0);
	assert_int_equal(d->dma_msgs, 4);
}

static void test_msg_error_reply(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	struct top *t = new_op(0, false, 0);
	uint8_t a[64], pl[16 + 64];
	char why[200];
	uint16_t id0, id1;
	size_t n;

	(void)state;
	setup_msg_window(d, VFU_DMA_READABLE | VFU_DMA_WRITEABLE);
	/* A read of two messages: one answered with an error, one with data. */
	add_seg(t, MSG_BASE, VFU_MAX_XFER + 64, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	assert_int_equal(nsent, 2);
	id0 = check_msg(0, d, VFU_CMD_DMA_READ, MSG_BASE, VFU_MAX_XFER, NULL);
	id1 = check_msg(1, d, VFU_CMD_DMA_READ, MSG_BASE + VFU_MAX_XFER, 64, NULL);
	assert_int_equal(
	    reply(d, id0, VFU_CMD_DMA_READ, VFU_F_ERROR, EFAULT, NULL, 0, why, sizeof(why)), 0);
	assert_true(logged("error reply 14"));
	pump();
	assert_int_equal(t->ndone, 0); /* the other is still out */
	fill(a, sizeof(a), 5);
	n = read_payload(pl, MSG_BASE + VFU_MAX_XFER, 64, a, sizeof(a));
	assert_int_equal(reply(d, id1, VFU_CMD_DMA_READ, 0, 0, pl, n, why, sizeof(why)), 0);
	pump();
	assert_int_equal(t->ndone, 1);
	assert_int_equal(t->err, -EIO);
	assert_int_equal(d->dma_failed, 1);

	/* A write answered with an error. */
	t = new_op(1, true, 0);
	add_seg(t, MSG_BASE + 0x100, 4, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	id0 = check_msg(2, d, VFU_CMD_DMA_WRITE, MSG_BASE + 0x100, 4, t->data);
	assert_int_equal(
	    reply(d, id0, VFU_CMD_DMA_WRITE, VFU_F_ERROR, EINVAL, NULL, 0, why, sizeof(why)), 0);
	pump();
	assert_int_equal(t->ndone, 1);
	assert_int_equal(t->err, -EIO);
	assert_int_equal(d->dma_failed, 2);
}

/* A malformed DMA_READ reply: -EINVAL with why; vfu.c closes the connection, which fails it. */
static void check_bad_read_reply(const uint8_t *pl, size_t n, uint16_t cmd)
{
	struct vfu_dev *d = &s.devs[0];
	struct top *t = new_op(0, false, 0);
	char why[200];
	uint16_t id;

	nsent = 0;
	add_seg(t, MSG_BASE + 0x40, 16, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	id = check_msg(0, d, VFU_CMD_DMA_READ, MSG_BASE + 0x40, 16, NULL);
	assert_int_equal(reply(d, id, cmd, 0, 0, pl, n, why, sizeof(why)), -EINVAL);
	assert_true(strlen(why) > 0);
	assert_int_equal(t->data[0], 0); /* nothing copied */
	pump();
	assert_int_equal(t->ndone, 0);
	vfu_dma_conn_closed(d); /* conn_close() */
	pump();
	assert_int_equal(t->ndone, 1);
	assert_int_equal(t->err, -ECONNRESET);
	assert_null(s.ops);
}

static void test_msg_bad_replies(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	uint8_t data[32], pl[64];
	size_t n;

	(void)state;
	setup_msg_window(d, VFU_DMA_READABLE | VFU_DMA_WRITEABLE);
	memset(data, 0xab, sizeof(data));
	/* Short: no room for address and count. */
	n = read_payload(pl, MSG_BASE + 0x40, 16, data, 16);
	check_bad_read_reply(pl, 10, VFU_CMD_DMA_READ);
	/* Fewer data bytes than the count. */
	check_bad_read_reply(pl, n - 1, VFU_CMD_DMA_READ);
	/* More bytes than the count. */
	n = read_payload(pl, MSG_BASE + 0x40, 16, data, 17);
	check_bad_read_reply(pl, n, VFU_CMD_DMA_READ);
	/* Another count, or another address, than asked. */
	n = read_payload(pl, MSG_BASE + 0x40, 8, data, 8);
	check_bad_read_reply(pl, n, VFU_CMD_DMA_READ);
	n = read_payload(pl, MSG_BASE + 0x48, 16, data, 16);
	check_bad_read_reply(pl, n, VFU_CMD_DMA_READ);
	/* A count above 32 bits (the upper half of the 8-byte count is not ignored). */
	n = read_payload(pl, MSG_BASE + 0x40, 16, data, 16);
	st(pl + 12, 1, 4);
	check_bad_read_reply(pl, n, VFU_CMD_DMA_READ);
	/* A reply to a command this server never sends. */
	n = read_payload(pl, MSG_BASE + 0x40, 16, data, 16);
	check_bad_read_reply(pl, n, VFU_CMD_REGION_READ);
	assert_int_equal(d->dma_failed, 7);
	assert_true(logged("they fail"));
	assert_false(logged("matches no message"));
}

/* The stray-reply log, on a fresh device. */
static void test_msg_stray_reply(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	struct top *t = new_op(0, true, 0);
	char why[200];
	uint16_t id;

	(void)state;
	setup_msg_window(d, VFU_DMA_WRITEABLE);
	nlog = 0;
	assert_int_equal(reply(d, 4242, VFU_CMD_DMA_WRITE, 0, 0, NULL, 0, why, sizeof(why)), 0);
	assert_int_equal(nlog, 1);
	assert_true(d->warned_stray_reply);
	assert_int_equal(
	    reply(d, 4243, VFU_CMD_DMA_READ, VFU_F_ERROR, 5, NULL, 0, why, sizeof(why)), 0);
	assert_int_equal(nlog, 1);
	/* An error reply that matches nothing does not fail a piece in flight. */
	add_seg(t, MSG_BASE, 8, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	id = check_msg(0, d, VFU_CMD_DMA_WRITE, MSG_BASE, 8, t->data);
	assert_int_equal(reply(d, (uint16_t)(id + 7), VFU_CMD_DMA_WRITE, VFU_F_ERROR, 5, NULL, 0,
			       why, sizeof(why)),
			 0);
	assert_int_equal(reply(d, id, VFU_CMD_DMA_WRITE, 0, 0, NULL, 0, why, sizeof(why)), 0);
	pump();
	assert_int_equal(t->err, 0);
}

static bool guard_fired;

static void guard_cb(int fd, uint32_t events, void *opaque)
{
	uint64_t n;

	(void)events;
	(void)opaque;
	if (read(fd, &n, sizeof(n)) < 0) {
		/* nothing */
	}
	guard_fired = true;
	event_stop();
}

static long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_msg_timeout(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	struct top *t = new_op(0, true, 0);
	struct itimerspec its = {{0, 0}, {3, 0}}, cur;
	int guard = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	long long now;
	char why[200];
	uint16_t id;

	(void)state;
	assert_true(guard >= 0);
	assert_int_equal(vfu_dma_init(&s), 0);
	assert_true(s.dma_timer_fd >= 0);
	assert_false(s.timer_armed);
	setup_msg_window(d, VFU_DMA_WRITEABLE);
	add_seg(t, MSG_BASE + 0x20, 8, 0);
	now = mono_ms();
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	id = check_msg(0, d, VFU_CMD_DMA_WRITE, MSG_BASE + 0x20, 8, t->data);
	/* The timer ticks while the piece waits; its deadline is VFU_DMA_TIMEOUT_MS away. */
	assert_true(s.timer_armed);
	assert_int_equal(timerfd_gettime(s.dma_timer_fd, &cur), 0);
	assert_true(cur.it_interval.tv_sec == 0 &&
		    cur.it_interval.tv_nsec == VFU_DMA_TICK_MS * 1000000L);
	assert_non_null(s.ops);
	assert_true(s.ops->deadline_ms >= now + VFU_DMA_TIMEOUT_MS - 50 &&
		    s.ops->deadline_ms <= now + VFU_DMA_TIMEOUT_MS + 500);
	/* Not to wait 5 s: the deadline is now. */
	s.ops->deadline_ms = now;
	assert_int_equal(timerfd_settime(guard, 0, &its, NULL), 0);
	assert_int_equal(event_add(guard, EPOLLIN, guard_cb, NULL), 0);
	guard_fired = false;
	stop_on_done = true;
	assert_int_equal(event_run(), 0);
	stop_on_done = false;
	event_del(guard);
	close(guard);
	assert_false(guard_fired);
	assert_int_equal(t->ndone, 1);
	assert_int_equal(t->err, -ETIMEDOUT);
	assert_int_equal(d->dma_failed, 1);
	assert_true(logged("no reply within"));
	assert_null(s.ops);
	assert_false(s.timer_armed); /* nothing waits: the timer stops */
	/* The late reply is ignored. */
	assert_int_equal(reply(d, id, VFU_CMD_DMA_WRITE, 0, 0, NULL, 0, why, sizeof(why)), 0);
	assert_true(logged("matches no message in flight"));
	assert_int_equal(t->ndone, 1);
}

static void test_msg_conn_closed(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	struct top *t = new_op(0, false, 0), *u;

	(void)state;
	setup_msg_window(d, VFU_DMA_READABLE | VFU_DMA_WRITEABLE);
	add_seg(t, MSG_BASE, 2 * VFU_MAX_XFER, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	assert_int_equal(nsent, 2);
	/* Another device's closing changes nothing. */
	vfu_dma_conn_closed(&s.devs[1]);
	pump();
	assert_int_equal(t->ndone, 0);
	vfu_dma_conn_closed(d);
	assert_true(logged("1 client DMA piece(s) waited"));
	pump();
	assert_int_equal(t->ndone, 1);
	assert_int_equal(t->err, -ECONNRESET);
	assert_int_equal(d->dma_failed, 1);

	/* A send that fails closes the connection: no more messages, the piece fails. */
	u = new_op(1, true, 0);
	add_seg(u, MSG_BASE, 3 * VFU_MAX_XFER, 0);
	nsent = nsend_calls = 0;
	fail_send_at = 1;
	assert_int_equal(vfu_dma_async(&s, &u->a), 0);
	assert_int_equal(nsend_calls, 2);
	assert_int_equal(nsent, 1);
	assert_int_equal(u->ndone, 0);
	pump();
	assert_int_equal(u->ndone, 1);
	assert_int_equal(u->err, -ECONNRESET);
	/* The connection is gone, and its windows with it. */
	assert_int_equal(d->ndma, 0);
	u = new_op(1, true, 0);
	add_seg(u, MSG_BASE, 8, 0);
	assert_int_equal(vfu_dma_async(&s, &u->a), -EFAULT);
}

/* vfu_dma_stop(): what still waits fails at once. */
static void test_stop(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	struct top *t = new_op(0, true, 0);

	(void)state;
	setup_msg_window(d, VFU_DMA_WRITEABLE);
	add_seg(t, MSG_BASE, 8, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	vfu_dma_stop(&s);
	assert_int_equal(t->ndone, 1);
	assert_int_equal(t->err, -ECONNRESET);
	assert_null(s.ops);
	pump();
	assert_int_equal(t->ndone, 1);
}

/* Which device's socket carries the messages. */
static void test_msg_device_choice(void **state)
{
	struct top *t;

	(void)state;
	setup_msg_window(&s.devs[0], VFU_DMA_READABLE);
	setup_msg_window(&s.devs[1], VFU_DMA_READABLE);
	/* The client's own device first. */
	t = new_op(0, false, 1);
	add_seg(t, MSG_BASE, 8, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	check_msg(0, &s.devs[1], VFU_CMD_DMA_READ, MSG_BASE, 8, NULL);
	/* A hint past the devices: the first that holds it. */
	t = new_op(1, false, 7);
	add_seg(t, MSG_BASE, 8, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	check_msg(1, &s.devs[0], VFU_CMD_DMA_READ, MSG_BASE, 8, NULL);
	/* Not over a connection that is not negotiated. */
	s.devs[0].negotiated = false;
	t = new_op(2, false, 0);
	add_seg(t, MSG_BASE, 8, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	check_msg(2, &s.devs[1], VFU_CMD_DMA_READ, MSG_BASE, 8, NULL);
	assert_int_equal(nsent, 3);
	vfu_dma_stop(&s);
	assert_int_equal(tops[0].err, -ECONNRESET);
	/* Neither connection up: nothing to send on. */
	s.devs[1].fd = -1;
	t = new_op(0, false, 0);
	add_seg(t, MSG_BASE, 8, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), -EFAULT);
	assert_int_equal(nsent, 3);
}

/* Pieces that leave every window, straddle two, or lack the permission fail at once. */
static void test_refused(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	int fd = make_memfd(0x1000), keep = dup(fd);
	struct top *t;

	(void)state;
	assert_int_equal(map(d, MSG_BASE, 0x1000, 0, VFU_DMA_READABLE | VFU_DMA_WRITEABLE, -1), 0);
	assert_int_equal(
	    map(d, MSG_BASE + 0x1000, 0x1000, 0, VFU_DMA_READABLE | VFU_DMA_WRITEABLE, -1), 0);
	assert_int_equal(
	    map(d, MSG_BASE + 0x2000, 0x1000, 0, VFU_DMA_READABLE | VFU_DMA_WRITEABLE, fd), 0);
	assert_int_equal(map(d, 0x300000, 0x1000, 0, VFU_DMA_READABLE, -1), 0);
	assert_int_equal(map(d, 0x301000, 0x1000, 0, VFU_DMA_WRITEABLE, -1), 0);

	struct {
		bool write;
		uint64_t gpa;
		uint32_t len;
	} bad[] = {
	    {true, 0x500000, 8},	      /* no window */
	    {false, MSG_BASE - 4, 8},	      /* starts before */
	    {true, MSG_BASE + 0xff0, 0x20},   /* two windows without an fd */
	    {true, MSG_BASE + 0x1ff0, 0x20},  /* a window without an fd, then an fd window */
	    {false, MSG_BASE + 0x2ff0, 0x20}, /* an fd window, then nothing */
	    {true, 0x300000, 8},	      /* read-only */
	    {false, 0x301000, 8},	      /* write-only */
	    {false, 0x300ff8, 0x10},	      /* straddles those two */
	    {false, UINT64_MAX - 3, 8},	      /* wraps */
	    {true, MSG_BASE, 0x3001},	      /* all three and one byte more */
	};

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		t = new_op(0, bad[i].write, 0);
		memset(t->data, 0x99, sizeof(t->data));
		add_seg(t, bad[i].gpa, bad[i].len, 0);
		assert_int_equal(vfu_dma_async(&s, &t->a), -EFAULT);
	}
	/* No side effect: a good fd segment before a bad one is not copied. */
	t = new_op(0, true, 0);
	memset(t->data, 0x99, sizeof(t->data));
	add_seg(t, MSG_BASE + 0x2000, 8, 0);
	add_seg(t, 0x500000, 8, 8);
	assert_int_equal(vfu_dma_async(&s, &t->a), -EFAULT);
	assert_int_equal(file_byte(keep, 0), 3);
	/* A segment in a window without an fd, then one in none, or in one not allowed. */
	t = new_op(0, true, 0);
	add_seg(t, MSG_BASE, 8, 0);
	add_seg(t, 0x500000, 8, 8);
	assert_int_equal(vfu_dma_async(&s, &t->a), -EFAULT);
	t = new_op(0, true, 0);
	add_seg(t, MSG_BASE, 8, 0);
	add_seg(t, 0x300000, 8, 8);
	assert_int_equal(vfu_dma_async(&s, &t->a), -EFAULT);
	/* Segments the service never makes. */
	t = new_op(0, true, 0);
	add_seg(t, MSG_BASE, 0, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), -EFAULT);
	t = new_op(0, true, 0);
	add_seg(t, MSG_BASE, 8, sizeof(t->data) - 7);
	assert_int_equal(vfu_dma_async(&s, &t->a), -EFAULT);
	t = new_op(0, true, 0);
	add_seg(t, MSG_BASE, 8, UINT32_MAX - 2);
	assert_int_equal(vfu_dma_async(&s, &t->a), -EFAULT);
	assert_int_equal(nsend_calls, 0);
	assert_null(s.ops);
	pump();
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(tops[i].ndone, 0);
	/* The good ones still work: each inside one window. */
	t = new_op(0, false, 0);
	add_seg(t, MSG_BASE + 0xff8, 8, 0);
	add_seg(t, MSG_BASE + 0x1000, 8, 8);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	assert_int_equal(nsent, 2);
	check_msg(0, d, VFU_CMD_DMA_READ, MSG_BASE + 0xff8, 8, NULL);
	check_msg(1, d, VFU_CMD_DMA_READ, MSG_BASE + 0x1000, 8, NULL);
	close(keep);
}

/* Windows and pieces at the top of the 64-bit space. */
static void test_near_uint64_max(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	int fd = make_memfd(0x1000);
	struct top *t;
	uint8_t *p;
	char why[200];
	uint16_t id;

	(void)state;
	/* [TOP_START, UINT64_MAX): the last byte of the space cannot be in a window. */
	assert_int_equal(map(d, TOP_START, 0x1000, 0, VFU_DMA_READABLE, -1), -EINVAL);
	assert_int_equal(map(d, TOP_START, 0xfff, 0, VFU_DMA_READABLE | VFU_DMA_WRITEABLE, -1), 0);
	assert_int_equal(map(d, UINT64_MAX - 0x10, 0x10, 0, VFU_DMA_READABLE, -1), -EEXIST);
	assert_int_equal(map(d, UINT64_MAX - 0x1fff, 0x1001, 0, VFU_DMA_READABLE, -1), -EEXIST);
	assert_int_equal(
	    map(d, TOP_START - 0x1000, 0x1000, 0, VFU_DMA_READABLE | VFU_DMA_WRITEABLE, fd), 0);

	/* The fd window below it. */
	p = vfu_dma_ptr(&s, TOP_START - 0x1000, 0x1000, true);
	assert_non_null(p);
	assert_null(vfu_dma_ptr(&s, TOP_START - 0x1000, UINT64_MAX, false));
	assert_null(vfu_dma_ptr(&s, TOP_START - 0x10, UINT64_MAX - 0x100, false));
	assert_null(vfu_dma_ptr(&s, UINT64_MAX, 1, false));
	assert_null(vfu_dma_ptr(&s, UINT64_MAX - 1, 0x1000, false));
	assert_null(vfu_dma_ptr(&s, TOP_START - 0x8, 0x10, false)); /* into the window without fd */

	/* Segments that wrap, pass the end, or straddle. */
	struct {
		uint64_t gpa;
		uint32_t len;
	} bad[] = {
	    {UINT64_MAX - 0x10, 0x20}, {UINT64_MAX, 1},	      {UINT64_MAX - 1, 2},
	    {UINT64_MAX - 8, 0x3ff0},  {TOP_START - 8, 0x10}, {0xfffffffffffff000ull, 0x2000},
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		t = new_op(0, true, 0);
		add_seg(t, bad[i].gpa, bad[i].len, 0);
		assert_int_equal(vfu_dma_async(&s, &t->a), -EFAULT);
		t = new_op(0, false, 0);
		add_seg(t, bad[i].gpa, bad[i].len, 0);
		assert_int_equal(vfu_dma_async(&s, &t->a), -EFAULT);
	}
	assert_int_equal(nsend_calls, 0);

	/* Up to the window's last byte (UINT64_MAX - 1). */
	t = new_op(0, false, 0);
	add_seg(t, UINT64_MAX - 0x10, 0x10, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	id = check_msg(0, d, VFU_CMD_DMA_READ, UINT64_MAX - 0x10, 0x10, NULL);
	{
		uint8_t pl[16 + 0x10], data[0x10];
		size_t n;

		fill(data, sizeof(data), 0x21);
		n = read_payload(pl, UINT64_MAX - 0x10, 0x10, data, sizeof(data));
		assert_int_equal(reply(d, id, VFU_CMD_DMA_READ, 0, 0, pl, n, why, sizeof(why)), 0);
		pump();
		assert_int_equal(t->err, 0);
		assert_memory_equal(t->data, data, sizeof(data));
	}
	/* The whole top window in one message, ending at UINT64_MAX - 1. */
	t = new_op(0, true, 0);
	add_seg(t, TOP_START, 0xfff, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	assert_int_equal(nsent, 2);
	check_msg(1, d, VFU_CMD_DMA_WRITE, TOP_START, 0xfff, t->data);
	/* A read reply whose address wraps is not ours. */
	t = new_op(1, false, 0);
	add_seg(t, UINT64_MAX - 0x10, 0x10, 0);
	assert_int_equal(vfu_dma_async(&s, &t->a), 0);
	id = check_msg(2, d, VFU_CMD_DMA_READ, UINT64_MAX - 0x10, 0x10, NULL);
	{
		uint8_t pl[16 + 0x10], zero[0x10] = {0};
		size_t n = read_payload(pl, (UINT64_MAX - 0x10) + 0x20, 0x10, zero, sizeof(zero));

		assert_int_equal(reply(d, id, VFU_CMD_DMA_READ, 0, 0, pl, n, why, sizeof(why)),
				 -EINVAL);
	}
	vfu_dma_conn_closed(d);
	pump();
	assert_int_equal(t->err, -ECONNRESET);
}

/*
 * A segment near 4 GiB: the message count is computed in 64 bits (it once
 * wrapped to 0 in 32 and the message array overflowed its allocation), and
 * more than VFU_DMA_MAX_MSGS messages for one piece are refused.
 */
static void test_huge_segment_refused(void **state)
{
	struct vfu_dev *d = &s.devs[0];
	struct top *t = new_op(0, false, 0);
	int rc;

	(void)state;
	assert_int_equal(map(d, 0, 0x200000000ull, 0, VFU_DMA_READABLE, -1), 0);
	t->a.len = UINT32_MAX; /* data is never touched before a reply */
	add_seg(t, 0x1000, UINT32_MAX, 0);
	rc = vfu_dma_async(&s, &t->a);
	assert_int_equal(rc, -E2BIG);
	assert_int_equal(nsend_calls, 0);
	vfu_dma_stop(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_map_refusals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_map_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unmap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fd_window_pointer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fd_window_shm, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_msg_write, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_msg_read_split, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_msg_mixed_and_ids, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_msg_reply_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_msg_error_reply, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_msg_bad_replies, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_msg_stray_reply, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_msg_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_msg_conn_closed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_msg_device_choice, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_near_uint64_max, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_huge_segment_refused, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
