/* Split virtqueues: taking descriptor chains from the available ring, returning them through the
 * used ring. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "virtio.h"

#define DESC_SIZE 16u

static int dma_rd(struct vio_dev *d, uint64_t gpa, void *buf, size_t len)
{
	if (!d->host || !d->host->dma_read)
		return -ENODEV;
	return d->host->dma_read(d->host_opaque, gpa, buf, len);
}

static int dma_wr(struct vio_dev *d, uint64_t gpa, const void *buf, size_t len)
{
	if (!d->host || !d->host->dma_write)
		return -ENODEV;
	return d->host->dma_write(d->host_opaque, gpa, buf, len);
}

/* The guest broke the ring: mark the device and give the error to the caller. */
static int broken(struct vio_dev *d, unsigned q, const char *why)
{
	char msg[128];

	snprintf(msg, sizeof(msg), "queue %u: %s", q, why);
	vio_dev_needs_reset(d, msg);
	return -EPROTO;
}

/* A DMA error on the ring itself: guest addresses outside RAM break the device. */
static int ring_dma_error(struct vio_dev *d, unsigned q, int rc)
{
	if (rc == -EFAULT || rc == -EINVAL) {
		broken(d, q, "ring outside guest memory");
		return -EFAULT;
	}
	return rc;
}

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

static void desc_decode(const uint8_t *p, struct desc *out)
{
	out->addr = vio_get_le(p, 8);
	out->len = (uint32_t)vio_get_le(p + 8, 4);
	out->flags = (uint16_t)vio_get_le(p + 12, 2);
	out->next = (uint16_t)vio_get_le(p + 14, 2);
}

/* Append one buffer to the chain; -EPROTO when the order or the size breaks the rules. */
static int chain_add(struct vio_chain *c, const struct desc *ds)
{
	bool wr = ds->flags & VIO_DESC_F_WRITE;
	unsigned n = c->n_rd + c->n_wr;

	if (ds->len && ds->addr > UINT64_MAX - (ds->len - 1))
		return -EPROTO;
	if (!wr && c->n_wr)
		return -EPROTO; /* a readable buffer after a writable one */
	if (c->rd_len + c->wr_len + ds->len > VIO_CHAIN_MAX_LEN)
		return -EPROTO;
	if (n >= c->cap) {
		unsigned ncap = c->cap ? c->cap * 2 : 16;
		struct vio_buf *nb = realloc(c->buf, ncap * sizeof(*nb));

		if (!nb)
			return -ENOMEM;
		c->buf = nb;
		c->cap = ncap;
	}
	c->buf[n].addr = ds->addr;
	c->buf[n].len = ds->len;
	if (wr) {
		c->n_wr++;
		c->wr_len += ds->len;
	} else {
		c->n_rd++;
		c->rd_len += ds->len;
	}
	return 0;
}

/* Walk an indirect table of n descriptors at gpa (already checked: 1..VIO_INDIRECT_MAX). */
static int walk_indirect(struct vio_dev *d, unsigned q, struct vio_chain *c, uint64_t gpa,
			 unsigned n)
{
	uint8_t *tab = malloc((size_t)n * DESC_SIZE);
	unsigned i = 0, count = 0;
	int rc;

	if (!tab)
		return -ENOMEM;
	rc = dma_rd(d, gpa, tab, (size_t)n * DESC_SIZE);
	if (rc) {
		free(tab);
		return ring_dma_error(d, q, rc);
	}
	for (;;) {
		struct desc ds;

		if (++count > n) {
			rc = broken(d, q, "indirect chain longer than its table (loop)");
			break;
		}
		desc_decode(tab + (size_t)i * DESC_SIZE, &ds);
		if (ds.flags & VIO_DESC_F_INDIRECT) {
			rc = broken(d, q, "nested indirect descriptor");
			break;
		}
		rc = chain_add(c, &ds);
		if (rc) {
			if (rc == -EPROTO)
				rc = broken(d, q, "bad buffer in indirect chain");
			break;
		}
		if (!(ds.flags & VIO_DESC_F_NEXT))
			break;
		if (ds.next >= n) {
			rc = broken(d, q, "indirect next index out of range");
			break;
		}
		i = ds.next;
	}
	free(tab);
	return rc;
}

int vio_queue_pop(struct vio_dev *d, unsigned q, struct vio_chain *c)
{
	struct vio_queue *vq;
	uint8_t b[DESC_SIZE];
	uint16_t head, i;
	unsigned count = 0;
	int rc;

	if (q >= d->num_queues || !d->q[q].enabled || !vio_dev_running(d))
		return 0;
	vq = &d->q[q];
	c->n_rd = c->n_wr = 0;
	c->rd_len = c->wr_len = 0;
	if (vq->budget >= vq->size) {
		/* Yield: the main loop serves the VM, then kicks this queue again. */
		d->kick_pending |= 1u << q;
		return 0;
	}
	if (vq->last_avail == vq->avail_idx) {
		uint16_t idx;

		rc = dma_rd(d, vq->avail + 2, b, 2);
		if (rc)
			return ring_dma_error(d, q, rc);
		idx = (uint16_t)vio_get_le(b, 2);
		if ((uint16_t)(idx - vq->last_avail) > vq->size)
			return broken(d, q, "available index moved by more than the queue size");
		vq->avail_idx = idx;
		if (idx == vq->last_avail)
			return 0;
	}
	rc = dma_rd(d, vq->avail + 4 + 2ull * (vq->last_avail & (vq->size - 1)), b, 2);
	if (rc)
		return ring_dma_error(d, q, rc);
	head = (uint16_t)vio_get_le(b, 2);
	if (head >= vq->size)
		return broken(d, q, "descriptor index out of range");
	i = head;
	for (;;) {
		struct desc ds;

		if (++count > vq->size)
			return broken(d, q, "chain longer than the queue (loop)");
		rc = dma_rd(d, vq->desc + (uint64_t)i * DESC_SIZE, b, DESC_SIZE);
		if (rc)
			return ring_dma_error(d, q, rc);
		desc_decode(b, &ds);
		if (ds.flags & VIO_DESC_F_INDIRECT) {
			if (!(d->driver_features & VIO_BIT(VIO_F_INDIRECT_DESC)))
				return broken(d, q, "indirect descriptor not negotiated");
			if (ds.flags & VIO_DESC_F_NEXT)
				return broken(d, q, "indirect descriptor with NEXT");
			if (ds.len == 0 || ds.len % DESC_SIZE ||
			    ds.len / DESC_SIZE > VIO_INDIRECT_MAX ||
			    ds.addr > UINT64_MAX - (ds.len - 1))
				return broken(d, q, "bad indirect table length");
			rc = walk_indirect(d, q, c, ds.addr, ds.len / DESC_SIZE);
			if (rc)
				return rc;
			break;
		}
		rc = chain_add(c, &ds);
		if (rc == -EPROTO)
			return broken(d, q, "bad buffer in chain");
		if (rc)
			return rc;
		if (!(ds.flags & VIO_DESC_F_NEXT))
			break;
		if (ds.next >= vq->size)
			return broken(d, q, "next index out of range");
		i = ds.next;
	}
	c->head = head;
	vq->last_avail++;
	vq->budget++;
	return 1;
}

int vio_queue_push(struct vio_dev *d, unsigned q, const struct vio_chain *c, uint32_t written)
{
	struct vio_queue *vq;
	uint8_t e[8];
	int rc;

	if (q >= d->num_queues || !d->q[q].enabled)
		return -EINVAL;
	vq = &d->q[q];
	vio_put_le(e, c->head, 4);
	vio_put_le(e + 4, written, 4);
	rc = dma_wr(d, vq->used + 4 + 8ull * (vq->used_idx & (vq->size - 1)), e, 8);
	if (rc)
		return ring_dma_error(d, q, rc);
	vq->used_idx++;
	vio_put_le(e, vq->used_idx, 2);
	rc = dma_wr(d, vq->used + 2, e, 2);
	if (rc)
		return ring_dma_error(d, q, rc);
	vio_dev_interrupt(d, VIO_ISR_QUEUE);
	return 0;
}

/* Copy between host memory and the buffers [first, first + n) of c, starting at byte off. */
static int chain_copy(struct vio_dev *d, const struct vio_chain *c, unsigned first, unsigned n,
		      uint64_t total, uint64_t off, uint8_t *p, size_t len, bool to_guest)
{
	if (len > total || off > total - len)
		return -EINVAL;
	for (unsigned k = first; k < first + n && len; k++) {
		const struct vio_buf *b = &c->buf[k];
		size_t piece;
		int rc;

		if (off >= b->len) {
			off -= b->len;
			continue;
		}
		piece = b->len - off < len ? (size_t)(b->len - off) : len;
		rc = to_guest ? dma_wr(d, b->addr + off, p, piece)
			      : dma_rd(d, b->addr + off, p, piece);
		if (rc)
			return rc;
		p += piece;
		len -= piece;
		off = 0;
	}
	return 0;
}

int vio_chain_read(struct vio_dev *d, const struct vio_chain *c, uint64_t off, void *out,
		   size_t len)
{
	return chain_copy(d, c, 0, c->n_rd, c->rd_len, off, out, len, false);
}

int vio_chain_write(struct vio_dev *d, const struct vio_chain *c, uint64_t off, const void *in,
		    size_t len)
{
	return chain_copy(d, c, c->n_rd, c->n_wr, c->wr_len, off, (uint8_t *)(uintptr_t)in, len,
			  true);
}

void vio_chain_free(struct vio_chain *c)
{
	free(c->buf);
	c->buf = NULL;
	c->cap = 0;
	c->n_rd = c->n_wr = 0;
	c->rd_len = c->wr_len = 0;
}
