/* Split virtqueues: taking descriptor chains from the available ring in batched reads, returning
 * them through the used ring with posted writes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "virtio.h"

#define DESC_SIZE   16u
#define DESC_WINDOW 32u /* descriptors read at once from a table larger than VIO_DESC_CACHE */

/*
 * A chain with writes posted to it (vio_chain_post()). It goes to the used
 * ring when it was pushed and every one of those writes has completed.
 */
struct vio_req {
	unsigned q, gen;  /* gen: d->post_gen when the first write was posted */
	unsigned pending; /* posted writes not yet complete */
	int err;	  /* the first of them that failed */
	bool pushed;	  /* vio_queue_push() was called */
	bool dropped;	  /* the chain was abandoned: free it when pending is 0 */
	bool tail_sent;	  /* the failure byte was posted */
	uint16_t head;	  /* the rest is copied from the chain at push time */
	uint32_t written, fail_written;
	int fail_tail;
	bool has_tail;
	uint64_t tail_gpa; /* the chain's last writable byte */
};

/* One posted write and the copy of its bytes, on d's list until it completes. */
struct vio_post {
	struct vio_post *next;
	struct vio_dev *d;
	struct vio_req *req; /* the chain it writes to; NULL: queue q's used ring */
	unsigned q, gen;
	bool done;
	uint32_t
	    irq_queues; /* bit q: interrupt for queue q once this and all older writes are done */
	unsigned irq_gen;
	size_t len;
	uint8_t data[];
};

static int dma_rd(struct vio_dev *d, uint64_t gpa, void *buf, size_t len)
{
	if (!d->host || !d->host->dma_read)
		return -ENODEV;
	d->stat_dma_reads++;
	return d->host->dma_read(d->host_opaque, gpa, buf, len);
}

static int dma_wr(struct vio_dev *d, uint64_t gpa, const void *buf, size_t len)
{
	if (!d->host || !d->host->dma_write)
		return -ENODEV;
	d->stat_dma_writes++;
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

/* True when the error means the guest's address was bad (not a dead connection). */
static bool guest_fault(int rc)
{
	return rc == -EFAULT || rc == -EINVAL;
}

/* --- Notification suppression. --- */

/*
 * The driver's and the device's notifications, and the races (virtio 1.x,
 * 2.7.7 and 2.7.10). Ordering: the DMA of one device (posted writes,
 * blocking reads, blocking writes) reaches guest memory in issue order, and
 * a blocking read is answered after every earlier write was applied; the
 * driver puts a full barrier between its write and its read (Linux:
 * virtio_mb()). Both sides follow "write mine, then read yours", so of two
 * crossing updates at least one side sees the other's.
 *
 * Used buffer notifications (interrupts). The driver writes used_event (or
 * sets/clears NO_INTERRUPT in avail->flags), then reads used->idx. The
 * device writes the used element and used->idx, then reads used_event /
 * the flags: only a value read after its used->idx write may keep it
 * quiet. So vio_queue_push() (used_interrupt()) interrupts at once when
 * the value read earlier (the hint: from the avail->idx read or the ring
 * read of this kick, no extra DMA) asks for it, a spurious interrupt at
 * worst, which drivers accept; otherwise it leaves the decision to
 * vio_queue_irq_checks(), whose blocking read is issued after the used
 * ring writes: if the driver changed its mind after that read, it reads
 * used->idx after its change and sees the entries itself. With EVENT_IDX
 * the device interrupts when used->idx passed used_event since the last
 * decision (need_event(used_event, new, old) with old = signalled_used,
 * updated at every decision, interrupt or not: a driver that later moves
 * used_event back re-checks used->idx itself).
 *
 * Available buffer notifications (EVENT_IDX). The driver writes avail->idx,
 * then reads avail_event and notifies when its new chains passed it. The
 * device must write avail_event = I, then read avail->idx and find I, before
 * it may rely on a notification for chains after I: vio_queue_pop() returns
 * 0 for an empty ring (inside a kick, without reading avail->idx again)
 * only in that state (ev_state 2 and avail_event == avail_idx). The
 * sequence: whenever a read shows avail->idx = I beyond avail_event, the
 * device posts avail_event = I at once; the next read that covers
 * avail->idx (with Linux's layout the ring read of the same kick, which
 * reads flags and idx along; else the index read when the ring looks
 * empty) confirms it, or shows newer chains, which are then taken: a chain
 * the driver adds meanwhile is either seen by that read or finds
 * avail_event = I and is notified. (The span a dma_readv brings with the
 * index, avail_idx_read(), is copied before that avail_event write and so
 * could not confirm it: the op is not used with EVENT_IDX.) Without
 * EVENT_IDX the driver notifies every addition (the device never sets
 * NO_NOTIFY).
 *
 * A reset (status 0, a VM reset, a queue enabled again) starts all of this
 * over (vio_dev_reset(), queue_enable()).
 */

static bool ev_on(const struct vio_dev *d)
{
	return (d->driver_features & VIO_BIT(VIO_F_EVENT_IDX)) != 0;
}

/* vring_need_event: an index moving from old to new_idx passed event (in [old, new_idx)). */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event - 1u) < (uint16_t)(new_idx - old);
}

/* The driver wants an interrupt for the used entries since signalled_used, given flags and
 * used_event as read. */
static bool wants_irq(const struct vio_dev *d, const struct vio_queue *vq, uint16_t flags,
		      uint16_t used_event)
{
	if (ev_on(d))
		return need_event(used_event, vq->used_idx, vq->signalled_used);
	return !(flags & VIO_AVAIL_F_NO_INTERRUPT);
}

/* A read issued after the last avail_event write saw avail->idx = idx. */
static void ev_observe(struct vio_queue *vq, uint16_t idx)
{
	if (vq->ev_state && idx == vq->avail_event)
		vq->ev_state = 2;
}

/* True when the driver will notify queue q's next chain (EVENT_IDX), see above. */
static bool ev_quiet(const struct vio_queue *vq)
{
	return vq->ev_state == 2 && vq->avail_event == vq->avail_idx;
}

static int ring_write(struct vio_dev *d, unsigned q, uint64_t gpa, const void *buf, size_t len);
static void interrupt_after_writes(struct vio_dev *d, unsigned q);

/* Ask for a notification once avail->idx passes v: used->avail_event = v (posted). */
static int avail_event_write(struct vio_dev *d, unsigned q, uint16_t v)
{
	struct vio_queue *vq = &d->q[q];
	uint8_t b[2];
	int rc;

	if (vq->ev_state && vq->avail_event == v)
		return 0;
	vio_put_le(b, v, 2);
	rc = ring_write(d, q, vq->used + 4 + 8ull * vq->size, b, 2);
	if (rc)
		return rc;
	vq->avail_event = v;
	vq->ev_state = 1;
	return 0;
}

/* Flags and used_event as some read saw them: a hint for used_interrupt(). */
static void hint_set(struct vio_queue *vq, uint16_t flags, uint16_t used_event)
{
	vq->hint_flags = flags;
	vq->hint_used_event = used_event;
	vq->hint_valid = true;
}

/*
 * True when an interrupt of queue q would not be delivered anyway: the PCI
 * transport's rule for a queue without a vector while the configuration
 * interrupt has one (pci_notify(), a poll queue's). Nothing to read for it.
 */
static bool irq_silent(const struct vio_dev *d, unsigned q)
{
	unsigned n = vio_dev_msix_vectors(d);

	return d->transport == VIO_TRANSPORT_PCI && d->host && d->host->irq_line &&
	       d->pci.config_vector < n && d->pci.queue_vector[q] >= n;
}

/* Used entries up to used_idx are published: interrupt now, or leave it to a fresh read. */
static void used_interrupt(struct vio_dev *d, unsigned q)
{
	struct vio_queue *vq = &d->q[q];
	bool now;

	if (irq_silent(d, q)) {
		vq->signalled_used = vq->used_idx;
		return;
	}
	if (ev_on(d))
		now = vq->hint_valid && wants_irq(d, vq, 0, vq->hint_used_event);
	else
		now = wants_irq(d, vq, vq->hint_flags, 0);
	if (!now) {
		vq->irq_check = true;
		d->irq_checks |= 1u << q;
		return;
	}
	vq->signalled_used = vq->used_idx;
	vq->irq_check = false;
	d->irq_checks &= ~(1u << q);
	interrupt_after_writes(d, q);
}

void vio_queue_irq_checks(struct vio_dev *d)
{
	for (unsigned q = 0; q < d->num_queues && d->irq_checks; q++) {
		struct vio_queue *vq = &d->q[q];
		uint8_t b[2];
		uint64_t gpa;
		int rc;

		if (!(d->irq_checks & (1u << q)))
			continue;
		if (!vio_dev_running(d) || d->reset_pending)
			return; /* the reset clears it */
		d->irq_checks &= ~(1u << q);
		if (!vq->enabled || !vq->irq_check)
			continue;
		vq->irq_check = false;
		/* Issued after the used ring writes: only this read may keep the device quiet. */
		gpa = ev_on(d) ? vq->avail + 4 + 2ull * vq->size : vq->avail;
		rc = dma_rd(d, gpa, b, 2);
		if (rc) {
			ring_dma_error(d, q, rc);
		} else {
			uint16_t v = (uint16_t)vio_get_le(b, 2);

			if (ev_on(d))
				hint_set(vq, vq->hint_flags, v);
			else
				hint_set(vq, v, vq->hint_used_event);
			if (!wants_irq(d, vq, v, v)) {
				vq->signalled_used = vq->used_idx;
				continue;
			}
		}
		/* The read came back after the used ring writes were applied: no need to wait. */
		vq->signalled_used = vq->used_idx;
		vio_dev_notify_queue(d, q);
	}
}

/* --- Posted writes. --- */

/* Forget a chain that will never be pushed; its writes still complete. */
static void req_drop(struct vio_req *r)
{
	r->dropped = true;
	if (r->pending == 0)
		free(r);
}

/*
 * Send queue q's interrupt once every write issued so far is in guest
 * memory: at once when none is in flight, else when the newest one and all
 * older ones have completed. The interrupt goes to the VM on another
 * connection than DMA, so it must not be sent before the writes it
 * announces are done.
 */
static void interrupt_after_writes(struct vio_dev *d, unsigned q)
{
	if (!d->post_tail) {
		vio_dev_notify_queue(d, q);
		return;
	}
	d->post_tail->irq_queues |= 1u << q;
	d->post_tail->irq_gen = d->post_gen;
}

/* Send the interrupts of the queues in mask (bit q: queue q). */
static void notify_queues(struct vio_dev *d, uint32_t mask)
{
	for (unsigned q = 0; q < VIO_MAX_QUEUES; q++)
		if (mask & (1u << q))
			vio_dev_notify_queue(d, q);
}

/* Free the completed writes at the head of the list, raising what waited for them. */
static void post_retire(struct vio_dev *d)
{
	while (d->post_head && d->post_head->done) {
		struct vio_post *p = d->post_head;

		d->post_head = p->next;
		if (!d->post_head)
			d->post_tail = NULL;
		d->post_bytes -= p->len;
		if (p->irq_queues && p->irq_gen == d->post_gen)
			notify_queues(d, p->irq_queues);
		free(p);
	}
	if (d->post_stalled && d->post_bytes <= VIO_POST_MAX / 4) {
		d->kick_pending |= d->post_stalled;
		d->post_stalled = 0;
	}
}

static void post_done(void *arg, int err);

/*
 * Post a write of len bytes of buf to gpa (for chain r, or the used ring
 * of queue q when r is NULL). Returns 1 when posted, 0 when it was not (no
 * posting on this host, the memory limit, no memory: write it blocking),
 * or the negative errno that kept it from being issued.
 */
static int post_write(struct vio_dev *d, unsigned q, struct vio_req *r, uint64_t gpa,
		      const void *buf, size_t len)
{
	struct vio_post *p;
	int rc;

	if (!d->host || !d->host->dma_write_post || d->post_mode < 0 || len == 0 ||
	    len > VIO_POST_MAX - d->post_bytes)
		return 0;
	p = malloc(sizeof(*p) + len);
	if (!p)
		return 0;
	memset(p, 0, sizeof(*p));
	p->d = d;
	p->req = r;
	p->q = q;
	p->gen = d->post_gen;
	p->len = len;
	memcpy(p->data, buf, len);
	rc = d->host->dma_write_post(d->host_opaque, gpa, p->data, len, post_done, p);
	if (rc) {
		free(p);
		if (rc == -EOPNOTSUPP) {
			d->post_mode = -1;
			return 0;
		}
		return rc == -ENOMEM ? 0 : rc;
	}
	d->post_mode = 1;
	if (d->post_tail)
		d->post_tail->next = p;
	else
		d->post_head = p;
	d->post_tail = p;
	d->post_bytes += len;
	d->post_last_gpa = gpa;
	d->stat_dma_posted++;
	if (r)
		r->pending++;
	return 1;
}

/* Write to queue q's used ring: posted if possible, else blocking. 0 or a negative errno. */
static int ring_write(struct vio_dev *d, unsigned q, uint64_t gpa, const void *buf, size_t len)
{
	int rc = post_write(d, q, NULL, gpa, buf, len);

	if (rc > 0)
		return 0;
	if (rc < 0)
		return rc;
	rc = dma_wr(d, gpa, buf, len);
	return rc ? ring_dma_error(d, q, rc) : 0;
}

/* Put head with written bytes in queue q's used ring, bump used->idx, interrupt after. */
static int used_publish(struct vio_dev *d, unsigned q, uint16_t head, uint32_t written)
{
	struct vio_queue *vq = &d->q[q];
	uint8_t e[8];
	int rc;

	if (!vq->enabled)
		return -EINVAL;
	vio_put_le(e, head, 4);
	vio_put_le(e + 4, written, 4);
	/* One connection applies DMA in order: the element lands before the index. */
	rc = ring_write(d, q, vq->used + 4 + 8ull * (vq->used_idx & (vq->size - 1)), e, 8);
	if (rc)
		return rc;
	vq->used_idx++;
	vio_put_le(e, vq->used_idx, 2);
	rc = ring_write(d, q, vq->used + 2, e, 2);
	if (rc)
		return rc;
	d->stat_chains++;
	used_interrupt(d, q);
	return 0;
}

/* A pushed chain whose posted writes are all complete: to the used ring (frees r). */
static int req_publish(struct vio_dev *d, struct vio_req *r)
{
	int rc;

	if (r->gen != d->post_gen) {
		/* The device was reset since: the driver forgot the chain. */
		free(r);
		return 0;
	}
	if (r->err && r->has_tail && r->fail_tail >= 0 && !r->tail_sent) {
		uint8_t t = (uint8_t)r->fail_tail;

		/* The failure byte must be in memory before the element: wait for it too. */
		r->tail_sent = true;
		rc = post_write(d, r->q, r, r->tail_gpa, &t, 1);
		if (rc > 0)
			return 0;
		if (rc == 0)
			dma_wr(d, r->tail_gpa, &t, 1); /* its failure changes nothing more */
	}
	rc = used_publish(d, r->q, r->head, r->err ? r->fail_written : r->written);
	free(r);
	return rc;
}

/* The completion of a posted write: runs from the host's event processing. */
static void post_done(void *arg, int err)
{
	struct vio_post *p = arg;
	struct vio_dev *d = p->d;
	struct vio_req *r = p->req;

	p->done = true;
	p->req = NULL;
	if (err) {
		d->stat_post_errors++;
		if (d->verbose)
			vio_log(d, COREIO_LOG_WARNING,
				"virtio: posted write of %zu bytes failed: %s", p->len,
				strerror(-err));
		if (r) {
			/* A buffer of the chain: that request fails, the ring is fine. */
			if (!r->err)
				r->err = err;
		} else if (p->gen == d->post_gen && guest_fault(err)) {
			ring_dma_error(d, p->q, err);
		}
	}
	if (r) {
		r->pending--;
		if (r->pending == 0) {
			if (r->dropped)
				free(r);
			else if (r->pushed)
				req_publish(d, r);
		}
	}
	post_retire(d);
}

int vio_posted_barrier(struct vio_dev *d)
{
	uint8_t b;

	if (!d->post_head)
		return 0;
	/* A read answered after every earlier write on the connection. */
	return dma_rd(d, d->post_last_gpa, &b, 1);
}

/* --- Descriptors and the available ring. --- */

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

/*
 * Descriptor i (below the queue size) of queue q's table. The table (or, if
 * larger than VIO_DESC_CACHE, a window from i) is read in one DMA and kept
 * until avail->idx moves: descriptors of chains the driver published before
 * the index we last read do not change until we return those chains.
 */
static int desc_get(struct vio_dev *d, unsigned q, uint16_t i, struct desc *out)
{
	struct vio_queue *vq = &d->q[q];

	if (d->dc_q != q + 1 || i < d->dc_first || i - d->dc_first >= d->dc_n) {
		unsigned first = vq->size <= VIO_DESC_CACHE ? 0 : i;
		unsigned n = vq->size <= VIO_DESC_CACHE ? vq->size : DESC_WINDOW;
		int rc;

		if (n > vq->size - first)
			n = vq->size - first;
		d->dc_q = 0;
		rc = dma_rd(d, vq->desc + (uint64_t)first * DESC_SIZE, d->desc_cache,
			    (size_t)n * DESC_SIZE);
		if (rc)
			return ring_dma_error(d, q, rc);
		d->dc_q = q + 1;
		d->dc_first = (uint16_t)first;
		d->dc_n = (uint16_t)n;
	}
	desc_decode(d->desc_cache + (size_t)(i - d->dc_first) * DESC_SIZE, out);
	return 0;
}

/*
 * The span of Linux's layout that one DMA reads: the whole descriptor
 * table up to the avail ring's used_event, when the table is small enough
 * to cache and the avail ring starts at most VIO_MERGE_GAP bytes after its
 * end (Linux allocates desc, avail and used together). Returns its length
 * (at most VIO_SCRATCH_LEN; the ring's flags are at avail - desc), or 0.
 */
static size_t merged_span(const struct vio_queue *vq)
{
	uint64_t tab = (uint64_t)vq->size * DESC_SIZE;

	if (vq->size > VIO_DESC_CACHE || vq->avail < vq->desc + tab ||
	    vq->avail - (vq->desc + tab) > VIO_MERGE_GAP)
		return 0;
	/* Also when desc + tab wraps: avail - desc is then at most tab + VIO_MERGE_GAP. */
	return (size_t)(vq->avail - vq->desc) + 4u + 2u * vq->size + 2u;
}

/*
 * The merged span is in d->scratch, copied after the avail->idx read that
 * covers the chains up to vq->avail_idx: keep its table (valid for those
 * chains, desc_get()), take the flags and used_event as a hint and, when
 * observe (the span was read after the last avail_event write), let its
 * avail->idx confirm avail_event. Returns the ring's entries, by slot.
 */
static const uint8_t *merged_take(struct vio_dev *d, unsigned q, bool observe)
{
	struct vio_queue *vq = &d->q[q];
	const uint8_t *ring = d->scratch + (size_t)(vq->avail - vq->desc) + 4;

	memcpy(d->desc_cache, d->scratch, (size_t)vq->size * DESC_SIZE);
	d->dc_q = q + 1;
	d->dc_first = 0;
	d->dc_n = vq->size;
	hint_set(vq, (uint16_t)vio_get_le(ring - 4, 2),
		 (uint16_t)vio_get_le(ring + 2u * vq->size, 2));
	if (observe)
		ev_observe(vq, (uint16_t)vio_get_le(ring - 2, 2));
	return ring;
}

/*
 * Read the available ring entries from position last_avail on (all the
 * driver published, at most VIO_RING_CACHE). When the avail ring follows
 * the descriptor table closely (Linux allocates them together) and the
 * table is not cached, one DMA reads both. pre: that span is in d->scratch
 * already, read together with the avail->idx read (avail_idx_read()).
 */
static int ring_fill(struct vio_dev *d, unsigned q, bool pre)
{
	struct vio_queue *vq = &d->q[q];
	unsigned mask = vq->size - 1u;
	unsigned n = (uint16_t)(vq->avail_idx - vq->last_avail);
	unsigned first = vq->last_avail & mask;
	size_t span = merged_span(vq);
	const uint8_t *ring = NULL; /* the whole ring's entries, by slot */
	int rc;

	if (n > VIO_RING_CACHE)
		n = VIO_RING_CACHE;
	vq->ring_n = 0;
	if (pre) {
		/* Read after the index, before any avail_event write (no EVENT_IDX there). */
		ring = merged_take(d, q, false);
	} else if (d->dc_q != q + 1 && span) {
		/*
		 * If this fails, the span between them may not be DMA-able: read
		 * each alone. The avail flags, idx and used_event come along
		 * (notification suppression above): the idx only confirms
		 * avail_event, the entries are the ones the earlier idx read covered.
		 */
		if (dma_rd(d, vq->desc, d->scratch, span) == 0)
			ring = merged_take(d, q, true);
	}
	if (!ring && ev_on(d) && vq->size <= VIO_RING_CACHE) {
		/* The whole avail ring with flags, idx and used_event: one DMA, as above. */
		rc = dma_rd(d, vq->avail, d->scratch, 6u + 2u * vq->size);
		if (rc)
			return ring_dma_error(d, q, rc);
		ring = d->scratch + 4;
		hint_set(vq, (uint16_t)vio_get_le(d->scratch, 2),
			 (uint16_t)vio_get_le(ring + 2u * vq->size, 2));
		ev_observe(vq, (uint16_t)vio_get_le(d->scratch + 2, 2));
	}
	if (!ring && first + n > vq->size && vq->size <= VIO_RING_CACHE) {
		/* Wrapping around a small ring: all of it in one DMA. */
		rc = dma_rd(d, vq->avail + 4, d->scratch, 2u * vq->size);
		if (rc)
			return ring_dma_error(d, q, rc);
		ring = d->scratch;
	}
	if (ring) {
		for (unsigned k = 0; k < n; k++)
			vq->ring[k] = (uint16_t)vio_get_le(ring + 2u * ((first + k) & mask), 2);
	} else {
		/* In order from slot first: one DMA, or two when wrapping a large ring. */
		unsigned n1 = first + n <= vq->size ? n : vq->size - first;

		rc = dma_rd(d, vq->avail + 4 + 2ull * first, d->scratch, 2u * n1);
		if (!rc && n1 < n)
			rc = dma_rd(d, vq->avail + 4, d->scratch + 2u * n1, 2u * (n - n1));
		if (rc)
			return ring_dma_error(d, q, rc);
		for (unsigned k = 0; k < n; k++)
			vq->ring[k] = (uint16_t)vio_get_le(d->scratch + 2u * k, 2);
	}
	vq->ring_pos = vq->last_avail;
	vq->ring_n = (uint16_t)n;
	return 0;
}

/*
 * Read avail->flags and avail->idx into b (4 bytes). At the first look of
 * a kick (the driver notified: new chains are likely) on a host with
 * dma_readv and Linux's layout, the merged span comes in the same round
 * trip as a second segment, copied after the index (*pre then says it is
 * in d->scratch): its table and entries serve the chains that index
 * covers, as a merged read issued after it would. One DMA for both would
 * not do: its bytes are copied in no promised order (docs/virtio.md, "DMA
 * per request"). Not with EVENT_IDX: the span is copied before the
 * avail_event write the new index asks for, so it cannot confirm it, and
 * the confirming read would then cost the round trip saved here.
 */
static int avail_idx_read(struct vio_dev *d, unsigned q, uint8_t *b, bool *pre)
{
	struct vio_queue *vq = &d->q[q];
	size_t span = merged_span(vq);

	*pre = false;
	if (span && d->host && d->host->dma_readv && !ev_on(d) && d->kicking == q + 1 &&
	    !vq->idx_read) {
		struct vio_dma_seg seg[2] = {{vq->avail, b, 4}, {vq->desc, d->scratch, span}};
		int rc;

		d->stat_dma_reads++;
		rc = d->host->dma_readv(d->host_opaque, seg, 2);
		if (rc == 0) {
			*pre = true;
			return 0;
		}
		if (!guest_fault(rc))
			return rc;
		/* The span may not be DMA-able: the index alone, as without the op. */
	}
	return dma_rd(d, vq->avail, b, 4);
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
	uint16_t head, i;
	unsigned count = 0;
	bool pre = false; /* the merged span came with the index read */
	int rc;

	if (c->req) {
		req_drop(c->req);
		c->req = NULL;
	}
	c->post_err = 0;
	c->fail_written = 0;
	c->fail_tail = -1;
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
	if (d->post_bytes > VIO_POST_MAX / 2) {
		/* Too much posted data in flight: kicked again when it drains. */
		d->post_stalled |= 1u << q;
		return 0;
	}
	if (vq->last_avail == vq->avail_idx) {
		bool ev = ev_on(d);
		uint8_t b[4];
		uint16_t idx;

		/*
		 * Inside a kick, one look suffices: later buffers come with a
		 * notify (with EVENT_IDX once avail_event is confirmed, above).
		 */
		if (d->kicking == q + 1 && vq->idx_read && (!ev || ev_quiet(vq)))
			return 0;
		if (ev) {
			/* avail_event first, then the index (a no-op when written already). */
			rc = avail_event_write(d, q, vq->avail_idx);
			if (rc)
				return rc;
		}
		/* The flags come along (a hint for the interrupt). */
		rc = avail_idx_read(d, q, b, &pre);
		if (rc)
			return ring_dma_error(d, q, rc);
		if (d->kicking == q + 1)
			vq->idx_read = true;
		idx = (uint16_t)vio_get_le(b + 2, 2);
		if ((uint16_t)(idx - vq->last_avail) > vq->size)
			return broken(d, q, "available index moved by more than the queue size");
		if (idx != vq->avail_idx && d->dc_q == q + 1)
			d->dc_q = 0; /* new chains: their descriptors may be newer than the cache */
		vq->avail_idx = idx;
		vq->hint_flags = (uint16_t)vio_get_le(b, 2);
		if (ev) {
			ev_observe(vq, idx);
			/* New chains: ask for the next notification now; a later read confirms. */
			rc = avail_event_write(d, q, idx);
			if (rc)
				return rc;
		}
		if (idx == vq->last_avail)
			return 0;
	}
	if ((uint16_t)(vq->last_avail - vq->ring_pos) >= vq->ring_n) {
		rc = ring_fill(d, q, pre);
		if (rc)
			return rc;
	}
	head = vq->ring[(uint16_t)(vq->last_avail - vq->ring_pos)];
	if (head >= vq->size)
		return broken(d, q, "descriptor index out of range");
	i = head;
	for (;;) {
		struct desc ds;

		if (++count > vq->size)
			return broken(d, q, "chain longer than the queue (loop)");
		rc = desc_get(d, q, i, &ds);
		if (rc)
			return rc;
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

/* --- Copying to and from a chain's buffers. --- */

/* Walks [off, off + len) of the buffers [k, end) of a chain, in guest-contiguous runs. */
struct seg_iter {
	const struct vio_chain *c;
	unsigned k, end;
	uint64_t off;
	size_t left;
};

/* The next run: adjacent buffers (one ending where the next starts) make one. */
static bool seg_next(struct seg_iter *it, uint64_t *gpa, size_t *n)
{
	while (it->left && it->k < it->end) {
		const struct vio_buf *b = &it->c->buf[it->k];
		uint64_t a;
		size_t piece;

		if (it->off >= b->len) {
			it->off -= b->len;
			it->k++;
			continue;
		}
		a = b->addr + it->off;
		piece = b->len - it->off < it->left ? (size_t)(b->len - it->off) : it->left;
		it->left -= piece;
		it->off = 0;
		it->k++;
		while (it->left && it->k < it->end) {
			const struct vio_buf *nb = &it->c->buf[it->k];
			size_t more;

			if (nb->len && (UINT64_MAX - a < piece || nb->addr != a + piece))
				break;
			more = nb->len < it->left ? nb->len : it->left;
			piece += more;
			it->left -= more;
			it->k++;
		}
		*gpa = a;
		*n = piece;
		return true;
	}
	return false;
}

/* Blocking copy between host memory and the buffers [first, first + n) of c. */
static int chain_copy(struct vio_dev *d, const struct vio_chain *c, unsigned first, unsigned n,
		      uint64_t total, uint64_t off, uint8_t *p, size_t len, bool to_guest)
{
	struct seg_iter it = {c, first, first + n, off, len};
	uint64_t gpa;
	size_t piece;

	if (len > total || off > total - len)
		return -EINVAL;
	while (seg_next(&it, &gpa, &piece)) {
		int rc = to_guest ? dma_wr(d, gpa, p, piece) : dma_rd(d, gpa, p, piece);

		if (rc)
			return rc;
		p += piece;
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

/*
 * Write piece bytes of p to gpa for chain c: posted when the host can post,
 * else blocking; a blocking write failing in guest memory is kept in
 * c->post_err (the chain fails at push). 0, or the error that kept the
 * write from being issued.
 */
static int chain_post_piece(struct vio_dev *d, struct vio_chain *c, uint64_t gpa, const uint8_t *p,
			    size_t piece)
{
	int rc = 0;

	if (!c->req && d->host && d->host->dma_write_post && d->post_mode >= 0) {
		c->req = calloc(1, sizeof(*c->req));
		if (c->req)
			c->req->gen = d->post_gen;
	}
	if (c->req)
		rc = post_write(d, 0, c->req, gpa, p, piece);
	if (rc < 0)
		return rc;
	if (rc == 0) {
		rc = dma_wr(d, gpa, p, piece);
		if (rc && !guest_fault(rc))
			return rc;
		if (rc && !c->post_err)
			c->post_err = rc;
	}
	return 0;
}

int vio_chain_post(struct vio_dev *d, struct vio_chain *c, uint64_t off, const void *in, size_t len)
{
	struct seg_iter it = {c, c->n_rd, c->n_rd + c->n_wr, off, len};
	const uint8_t *p = in;
	uint64_t gpa;
	size_t piece;

	if (len > c->wr_len || off > c->wr_len - len)
		return -EINVAL;
	while (seg_next(&it, &gpa, &piece)) {
		int rc = chain_post_piece(d, c, gpa, p, piece);

		if (rc)
			return rc;
		p += piece;
	}
	return 0;
}

/* --- File I/O to and from a chain's buffers. --- */

/*
 * Ordering: the fd ops complete inside the call, like a blocking DMA, but
 * they do not travel on the host's DMA connection, so a posted write still
 * in flight there could land after them (a direct read into guest memory
 * overwritten by an older posted write to the same bytes, or a direct
 * write reading bytes an older posted write has not reached yet). So a run
 * goes direct only while no posted write is in flight (d->post_head NULL);
 * otherwise it takes the buffer path, whose DMA is ordered behind the
 * posted writes. With a CoreIO context the two never meet: the fd ops work
 * only on a shared-memory connection, where posting is off.
 */

#define FD_STACK_BOUNCE 4096u /* the buffer used when the caller gives none */

/* The direct op for one run, or -EOPNOTSUPP when it must take the buffer path. */
static ssize_t fd_direct(struct vio_dev *d, bool to_guest, uint64_t gpa, size_t n, int fd,
			 uint64_t foff)
{
	ssize_t rc;

	if (!d->host || d->post_head)
		return -EOPNOTSUPP;
	if (to_guest && d->host->dma_write_from_fd)
		rc = d->host->dma_write_from_fd(d->host_opaque, gpa, n, fd, foff);
	else if (!to_guest && d->host->dma_read_to_fd)
		rc = d->host->dma_read_to_fd(d->host_opaque, gpa, n, fd, foff);
	else
		return -EOPNOTSUPP;
	if (rc > (ssize_t)n)
		rc = -EIO; /* a host op that lies */
	if (rc > 0) {
		d->stat_fd_direct++;
		d->stat_fd_direct_bytes += (unsigned long long)rc;
	}
	return rc;
}

/* pread()/pwrite() of len bytes, retrying EINTR and short transfers; the count (short only at
 * end of file or a write of nothing) or a negative errno. */
static ssize_t file_io(bool rd, int fd, uint8_t *buf, size_t len, uint64_t foff)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = rd ? pread(fd, buf + got, len - got, (off_t)(foff + got))
			       : pwrite(fd, buf + got, len - got, (off_t)(foff + got));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/*
 * The walk of vio_chain_pread() (to_guest, c writable) and vio_chain_pwrite():
 * runs of the chain's buffers, each tried direct; a run the host cannot do
 * so starts a buffer's worth (which may take in the following runs) through
 * bounce. cur/avail is the part of the current run not yet moved.
 */
static int chain_fd(struct vio_dev *d, struct vio_chain *wc, const struct vio_chain *c,
		    bool to_guest, uint64_t off, int fd, uint64_t foff, size_t len, uint8_t *bounce,
		    size_t blen, size_t *done)
{
	unsigned first = to_guest ? c->n_rd : 0, n = to_guest ? c->n_wr : c->n_rd;
	uint64_t total = to_guest ? c->wr_len : c->rd_len;
	struct seg_iter it = {c, first, first + n, off, len};
	uint8_t stack_buf[FD_STACK_BOUNCE];
	uint64_t cur = 0;
	size_t avail = 0, moved = 0;
	int rc = 0;

	*done = 0;
	if (len > total || off > total - len || foff > (uint64_t)INT64_MAX ||
	    len > (uint64_t)INT64_MAX - foff)
		return -EINVAL;
	if (!bounce || blen == 0) {
		bounce = stack_buf;
		blen = sizeof(stack_buf);
	}
	while (moved < len) {
		ssize_t r;
		size_t want, chunk, used = 0;

		if (avail == 0 && !seg_next(&it, &cur, &avail))
			break; /* not reached: the range was checked */
		r = fd_direct(d, to_guest, cur, avail, fd, foff + moved);
		if (r != -EOPNOTSUPP) {
			if (r < 0) {
				rc = (int)r;
				break;
			}
			moved += (size_t)r;
			if ((size_t)r < avail)
				break; /* end of file */
			avail = 0;
			continue;
		}
		/* Through the buffer: up to blen bytes, from this run on. */
		want = len - moved < blen ? len - moved : blen;
		chunk = want;
		if (to_guest) {
			r = file_io(true, fd, bounce, chunk, foff + moved);
			if (r < 0) {
				rc = (int)r;
				break;
			}
			chunk = (size_t)r;
		}
		while (used < chunk) {
			size_t k;

			if (avail == 0 && !seg_next(&it, &cur, &avail))
				break;
			k = avail < chunk - used ? avail : chunk - used;
			rc = to_guest ? chain_post_piece(d, wc, cur, bounce + used, k)
				      : dma_rd(d, cur, bounce + used, k);
			if (rc)
				break;
			cur += k;
			avail -= k;
			used += k;
		}
		if (rc)
			break;
		chunk = used;
		if (!to_guest) {
			r = file_io(false, fd, bounce, chunk, foff + moved);
			if (r < 0) {
				rc = (int)r;
				break;
			}
			chunk = (size_t)r;
		}
		d->stat_fd_bounce_bytes += chunk;
		moved += chunk;
		if (chunk < want)
			break; /* end of file (or a write of nothing) */
	}
	*done = moved;
	return rc;
}

int vio_chain_pread(struct vio_dev *d, struct vio_chain *c, uint64_t off, int fd, uint64_t foff,
		    size_t len, void *bounce, size_t bounce_len, size_t *done)
{
	return chain_fd(d, c, c, true, off, fd, foff, len, bounce, bounce_len, done);
}

int vio_chain_pwrite(struct vio_dev *d, const struct vio_chain *c, uint64_t off, int fd,
		     uint64_t foff, size_t len, void *bounce, size_t bounce_len, size_t *done)
{
	return chain_fd(d, NULL, c, false, off, fd, foff, len, bounce, bounce_len, done);
}

void vio_chain_on_error(struct vio_chain *c, uint32_t written, int tail)
{
	c->fail_written = written;
	c->fail_tail = tail >= 0 && tail <= 255 ? tail : -1;
}

/* The guest-physical address of the chain's last writable byte; false when it has none. */
static bool last_writable(const struct vio_chain *c, uint64_t *gpa)
{
	for (unsigned k = c->n_rd + c->n_wr; k > c->n_rd; k--) {
		const struct vio_buf *b = &c->buf[k - 1];

		if (b->len) {
			*gpa = b->addr + b->len - 1;
			return true;
		}
	}
	return false;
}

int vio_queue_push(struct vio_dev *d, unsigned q, struct vio_chain *c, uint32_t written)
{
	struct vio_req *r = c->req;

	if (q >= d->num_queues || !d->q[q].enabled)
		return -EINVAL;
	c->req = NULL;
	if (!r) {
		uint64_t gpa;

		if (c->post_err && c->fail_tail >= 0 && last_writable(c, &gpa)) {
			uint8_t t = (uint8_t)c->fail_tail;

			dma_wr(d, gpa, &t, 1); /* its failure changes nothing more */
		}
		return used_publish(d, q, c->head, c->post_err ? c->fail_written : written);
	}
	r->q = q;
	r->head = c->head;
	r->written = written;
	r->fail_written = c->fail_written;
	r->fail_tail = c->fail_tail;
	r->has_tail = last_writable(c, &r->tail_gpa);
	if (c->post_err && !r->err)
		r->err = c->post_err;
	r->pushed = true;
	if (r->pending)
		return 0; /* the last completion publishes it */
	return req_publish(d, r);
}

void vio_chain_free(struct vio_chain *c)
{
	if (c->req) {
		req_drop(c->req);
		c->req = NULL;
	}
	free(c->buf);
	c->buf = NULL;
	c->cap = 0;
	c->n_rd = c->n_wr = 0;
	c->rd_len = c->wr_len = 0;
}
