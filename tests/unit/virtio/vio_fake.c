/* The fake host shared by the virtio unit tests: guest memory, DMA and IRQ ops that count and
 * record, posted writes held like libcoreio's, a hook for the guest acting during a DMA. */
#include "vio_fake.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

void vio_fake_init(struct vio_fake *h, size_t mem_size)
{
	memset(h, 0, sizeof(*h));
	h->mem = calloc(1, mem_size);
	assert_non_null(h->mem);
	h->mem_size = mem_size;
}

void vio_fake_fini(struct vio_fake *h)
{
	free(h->mem);
	h->mem = NULL;
}

bool vio_fake_in_mem(const struct vio_fake *h, uint64_t gpa, size_t len)
{
	return gpa <= h->mem_size && len <= h->mem_size - gpa;
}

/* Write to guest memory, recording the order writes reach it; 0 or -EFAULT. */
static int mem_write(struct vio_fake *h, uint64_t gpa, const void *buf, size_t len)
{
	int err = vio_fake_in_mem(h, gpa, len) ? 0 : -EFAULT;

	if (!err)
		memcpy(h->mem + gpa, buf, len);
	if (h->norder < VIO_FAKE_MAX_ORDER)
		h->order[h->norder] = gpa;
	h->norder++;
	return err;
}

void vio_fake_apply(struct vio_fake *h)
{
	for (; h->applied < h->npw; h->applied++) {
		struct vio_fake_post *w = &h->pw[h->applied];

		w->err = mem_write(h, w->gpa, w->buf, w->len);
		if (h->posts_in_range)
			assert_int_equal(w->err, 0);
	}
}

static void maybe_hook(struct vio_fake *h, enum vio_fake_hook_when when, unsigned count)
{
	if (h->hook && !h->hook_fired && h->when == when && count == h->hook_at) {
		h->hook_fired = true;
		h->hook_runs++;
		h->hook(h);
	}
}

static int fake_read(void *opaque, uint64_t gpa, void *buf, size_t len)
{
	struct vio_fake *h = opaque;

	if (h->reads < VIO_FAKE_MAX_READS)
		h->read_len[h->reads] = len;
	h->reads++;
	maybe_hook(h, VIO_FAKE_HOOK_READ, h->reads);
	if (!h->hold_posts)
		vio_fake_apply(h);
	maybe_hook(h, VIO_FAKE_HOOK_READ_APPLIED, h->reads);
	if (!vio_fake_in_mem(h, gpa, len))
		return -EFAULT;
	memcpy(buf, h->mem + gpa, len);
	return 0;
}

/*
 * One round trip, its segments copied one after the other (as coreio-vm copies one connection's
 * pieces): the hook runs once before the first, as for a read. The first error is returned;
 * the other segments are still copied.
 */
static int fake_readv(void *opaque, const struct vio_dma_seg *seg, unsigned n)
{
	struct vio_fake *h = opaque;
	size_t total = 0;
	int err = 0;

	assert_true(n >= 1 && n <= VIO_READV_MAX);
	for (unsigned i = 0; i < n; i++)
		total += seg[i].len;
	if (h->reads < VIO_FAKE_MAX_READS)
		h->read_len[h->reads] = total;
	h->reads++;
	h->readvs++;
	maybe_hook(h, VIO_FAKE_HOOK_READ, h->reads);
	if (!h->hold_posts)
		vio_fake_apply(h);
	maybe_hook(h, VIO_FAKE_HOOK_READ_APPLIED, h->reads);
	for (unsigned i = 0; i < n; i++) {
		if (!vio_fake_in_mem(h, seg[i].gpa, seg[i].len)) {
			if (!err)
				err = -EFAULT;
			continue;
		}
		memcpy(seg[i].buf, h->mem + seg[i].gpa, seg[i].len);
	}
	return err;
}

static int fake_write(void *opaque, uint64_t gpa, const void *buf, size_t len)
{
	struct vio_fake *h = opaque;
	int err;

	h->writes++;
	if (!h->hold_posts)
		vio_fake_apply(h);
	err = mem_write(h, gpa, buf, len);
	if (err)
		return err;
	maybe_hook(h, VIO_FAKE_HOOK_WRITE, h->writes);
	return 0;
}

static int fake_post(void *opaque, uint64_t gpa, const void *buf, size_t len,
		     void (*done)(void *, int), void *arg)
{
	struct vio_fake *h = opaque;

	if (h->no_post)
		return -EOPNOTSUPP;
	assert_true(h->npw < VIO_FAKE_MAX_POSTS);
	h->posts++;
	h->pw[h->npw++] = (struct vio_fake_post){gpa, len, buf, done, arg, 0};
	return 0;
}

static void record(struct vio_fake *h, unsigned line, unsigned level, bool setlvl)
{
	assert_true(line < VIO_FAKE_LINES);
	if (h->nev < VIO_FAKE_MAX_IRQ)
		h->ev[h->nev] = (struct vio_fake_irq){line, level, setlvl};
	h->nev++;
	if (level && !h->line_level[line])
		h->edges[line]++;
	h->line_level[line] = level;
}

static int fake_irq(void *opaque, unsigned level)
{
	struct vio_fake *h = opaque;
	bool raise = level && !h->level;

	record(h, 0, level, true);
	if (level != h->level)
		h->irq_changes++;
	if (raise)
		h->raises++;
	h->level = level;
	if (raise && h->on_raise)
		h->on_raise(h);
	return 0;
}

static int fake_line(void *opaque, unsigned line, unsigned level)
{
	struct vio_fake *h = opaque;

	if (h->line_err)
		return h->line_err;
	record(h, line, level, false);
	if (level)
		h->pulses[line]++;
	return 0;
}

/* The fd ops: only inside [shm_lo, shm_hi); they do not see posted writes in flight. */
static ssize_t fake_fd(struct vio_fake *h, bool to_guest, uint64_t gpa, size_t len, int fd,
		       uint64_t foff)
{
	size_t done = 0;

	h->fd_calls++;
	if (gpa < h->shm_lo || gpa > h->shm_hi || len > h->shm_hi - gpa ||
	    !vio_fake_in_mem(h, gpa, len))
		return -EOPNOTSUPP;
	while (done < len) {
		ssize_t n = to_guest
				? pread(fd, h->mem + gpa + done, len - done, (off_t)(foff + done))
				: pwrite(fd, h->mem + gpa + done, len - done, (off_t)(foff + done));

		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static ssize_t fake_read_to_fd(void *opaque, uint64_t gpa, size_t len, int fd, uint64_t foff)
{
	return fake_fd(opaque, false, gpa, len, fd, foff);
}

static ssize_t fake_write_from_fd(void *opaque, uint64_t gpa, size_t len, int fd, uint64_t foff)
{
	return fake_fd(opaque, true, gpa, len, fd, foff);
}

const struct vio_host_ops vio_fake_host = {
    .dma_read = fake_read,
    .dma_write = fake_write,
    .irq_set = fake_irq,
};

const struct vio_host_ops vio_fake_host_lines = {
    .dma_read = fake_read,
    .dma_write = fake_write,
    .irq_set = fake_irq,
    .irq_line = fake_line,
};

const struct vio_host_ops vio_fake_host_posting = {
    .dma_read = fake_read,
    .dma_write = fake_write,
    .irq_set = fake_irq,
    .dma_write_post = fake_post,
};

const struct vio_host_ops vio_fake_host_all = {
    .dma_read = fake_read,
    .dma_write = fake_write,
    .irq_set = fake_irq,
    .dma_write_post = fake_post,
    .irq_line = fake_line,
};

const struct vio_host_ops vio_fake_host_fd = {
    .dma_read = fake_read,
    .dma_write = fake_write,
    .irq_set = fake_irq,
    .dma_write_post = fake_post,
    .dma_read_to_fd = fake_read_to_fd,
    .dma_write_from_fd = fake_write_from_fd,
};

const struct vio_host_ops vio_fake_host_readv = {
    .dma_read = fake_read,
    .dma_readv = fake_readv,
    .dma_write = fake_write,
    .irq_set = fake_irq,
    .dma_write_post = fake_post,
};

unsigned vio_fake_process(struct vio_fake *h)
{
	unsigned upto = h->npw, n = 0;

	vio_fake_apply(h);
	while (h->answered < upto) {
		struct vio_fake_post *w = &h->pw[h->answered++];

		w->done(w->arg, w->err);
		n++;
	}
	return n;
}

void vio_fake_drain(struct vio_fake *h)
{
	while (vio_fake_process(h))
		;
}

unsigned vio_fake_pending(const struct vio_fake *h)
{
	return h->npw - h->answered;
}

void vio_fake_log_cb(void *opaque, int level, const char *msg)
{
	struct vio_fake *h = opaque;

	h->log_opaque_seen = opaque;
	assert_true(h->nlog < VIO_FAKE_MAX_LOG);
	h->log[h->nlog].level = level;
	snprintf(h->log[h->nlog].msg, sizeof(h->log[h->nlog].msg), "%s", msg);
	h->nlog++;
}

void vio_fake_wr(struct vio_dev *d, uint64_t off, unsigned n, uint64_t v)
{
	uint8_t b[8];

	assert_true(n <= sizeof(b));
	vio_put_le(b, v, n);
	assert_int_equal(vio_transport_write(d, off, n, b), 0);
}

uint64_t vio_fake_rd(struct vio_dev *d, uint64_t off, unsigned n)
{
	uint8_t b[8];

	assert_true(n <= sizeof(b));
	assert_int_equal(vio_transport_read(d, off, n, b), 0);
	return vio_get_le(b, n);
}

void vio_fake_wr32(struct vio_dev *d, uint64_t off, uint32_t v)
{
	vio_fake_wr(d, off, 4, v);
}

uint32_t vio_fake_rd32(struct vio_dev *d, uint64_t off)
{
	return (uint32_t)vio_fake_rd(d, off, 4);
}

void vio_fake_hook(struct vio_fake *h, void (*fn)(struct vio_fake *), enum vio_fake_hook_when when,
		   unsigned at)
{
	h->hook = fn;
	h->when = when;
	h->hook_at = at;
	h->hook_fired = false;
}
