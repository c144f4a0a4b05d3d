/* cmocka tests of "serving during DMA" in the virtio library: guest register accesses served
 * while vio_dev_poll() processes a queue (resets left pending, writes ignored meanwhile, queue
 * disable refused, doorbells and ISR reads), against a fake host whose DMA calls back into the
 * transport the way libcoreio's COREIO_DMA_SERVE does. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vio_fake.h"
#include "vio_test_desc.h"
#include "virtio.h"

#define MEM_SIZE (1u << 20)
#define QSIZE	 8u
#define RING(q)	 (0x1000u + 0x1000u * (q)) /* desc; avail at +0x400, used at +0x800 */
#define AVAIL(q) (RING(q) + 0x400u)
#define USED(q)	 (RING(q) + 0x800u)
#define DATA(q)	 (0x20000u + 0x1000u * (q)) /* chain n of queue q writes at DATA(q) + 16n */
#define FEATS	 0x00000001u		    /* the high feature word: VERSION_1 */
#define RUNNING	 (VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK | VIO_S_DRIVER_OK)

struct fake {
	struct vio_fake h; /* first: the host ops' opaque; the hook runs in a blocking write */
	unsigned resets;   /* the model's reset op */
	unsigned reads_at_reset; /* h.reads when it last ran */
	uint8_t status_at_reset; /* d->status when it last ran */
	unsigned kicks[VIO_MAX_QUEUES];
	unsigned pushed; /* chains the model pushed (return 0) */
	int push_err;	 /* the first push error */
	bool in_kick;
	/* What the hooks saw. */
	uint64_t seen[8];
	struct vio_dev dev;
	struct vio_chain chain;
};

/*
 * The model: each chain (head h) gets the 16 bytes 0x10 * (h + 1) + i in two blocking writes of
 * 8, or one posted write on a posting host, then is pushed with 16 written.
 */
static void kick_cb(struct vio_dev *d, unsigned q)
{
	struct fake *f = d->priv;

	assert_false(f->in_kick);
	f->in_kick = true;
	f->kicks[q]++;
	while (vio_queue_pop(d, q, &f->chain) > 0) {
		uint8_t b[16];
		int rc;

		for (unsigned i = 0; i < sizeof(b); i++)
			b[i] = (uint8_t)(0x10 * (f->chain.head + 1) + i);
		if (d->host->dma_write_post) {
			assert_int_equal(vio_chain_post(d, &f->chain, 0, b, sizeof(b)), 0);
		} else {
			assert_int_equal(vio_chain_write(d, &f->chain, 0, b, 8), 0);
			assert_int_equal(vio_chain_write(d, &f->chain, 8, b + 8, 8), 0);
		}
		rc = vio_queue_push(d, q, &f->chain, sizeof(b));
		if (rc == 0)
			f->pushed++;
		else if (!f->push_err)
			f->push_err = rc;
	}
	f->in_kick = false;
}

static void reset_cb(struct vio_dev *d)
{
	struct fake *f = d->priv;

	f->resets++;
	f->reads_at_reset = f->h.reads;
	f->status_at_reset = d->status;
}

static const struct vio_dev_ops ops = {.queue_kick = kick_cb, .reset = reset_cb};

/* Register accesses of the guest (offsets in BAR 0, or the MMIO block). */
static void wr(struct fake *f, uint64_t off, unsigned n, uint64_t v)
{
	vio_fake_wr(&f->dev, off, n, v);
}

static uint64_t rd(struct fake *f, uint64_t off, unsigned n)
{
	return vio_fake_rd(&f->dev, off, n);
}

static struct fake *new_fake(unsigned nq, const struct vio_host_ops *host)
{
	struct fake *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	vio_fake_init(&f->h, MEM_SIZE);
	f->h.posts_in_range = true;
	assert_int_equal(vio_dev_init(&f->dev, VIO_ID_RNG, 0, nq, 16, &ops, f), 0);
	f->dev.transport = VIO_TRANSPORT_PCI;
	vio_dev_set_host(&f->dev, host, &f->h);
	vio_dev_set_log(&f->dev, vio_fake_log_cb, &f->h);
	/* As vio_dev_set_ctx() does for PCI; vio_dev_set_host() leaves it. */
	f->dev.serve_in_dma = true;
	return f;
}

static void free_fake(struct fake *f)
{
	f->h.hook = NULL;
	/* Completions may post more (the used ring after the data): a few rounds. */
	for (unsigned i = 0; i < 8 && vio_fake_pending(&f->h); i++)
		vio_fake_process(&f->h);
	assert_int_equal(vio_fake_pending(&f->h), 0);
	vio_chain_free(&f->chain);
	vio_fake_fini(&f->h);
	free(f);
}

/* A PCI device with nq queues of QSIZE, running (the DRIVER_OK kick done). */
static struct fake *pci_up(unsigned nq, const struct vio_host_ops *host)
{
	struct fake *f = new_fake(nq, host);

	wr(f, VIO_PCI_STATUS, 1, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER);
	wr(f, VIO_PCI_GFSELECT, 4, 1);
	wr(f, VIO_PCI_GF, 4, FEATS);
	wr(f, VIO_PCI_GFSELECT, 4, 0);
	wr(f, VIO_PCI_STATUS, 1, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
	for (unsigned q = 0; q < nq; q++) {
		wr(f, VIO_PCI_Q_SELECT, 2, q);
		wr(f, VIO_PCI_Q_SIZE, 2, QSIZE);
		wr(f, VIO_PCI_Q_DESC, 8, RING(q));
		wr(f, VIO_PCI_Q_DRIVER, 8, AVAIL(q));
		wr(f, VIO_PCI_Q_DEVICE, 8, USED(q));
		wr(f, VIO_PCI_Q_ENABLE, 2, 1);
		assert_int_equal(rd(f, VIO_PCI_Q_ENABLE, 2), 1);
	}
	wr(f, VIO_PCI_Q_SELECT, 2, 0);
	wr(f, VIO_PCI_STATUS, 1, RUNNING);
	assert_int_equal(rd(f, VIO_PCI_STATUS, 1), RUNNING);
	vio_dev_poll(&f->dev); /* the DRIVER_OK kick: empty rings */
	assert_false(f->dev.polling);
	memset(f->kicks, 0, sizeof(f->kicks));
	f->h.writes = f->h.reads = 0;
	f->h.nev = 0;
	f->h.nlog = 0;
	return f;
}

/* Publish the n-th buffer (16 writable bytes) of queue q; no doorbell. */
static void add_buf(struct fake *f, unsigned q, uint16_t n)
{
	uint16_t slot = n % QSIZE;

	vio_test_desc(f->h.mem + RING(q) + 16 * slot, DATA(q) + 16u * slot, 16, VIO_DESC_F_WRITE,
		      0);
	vio_put_le(f->h.mem + AVAIL(q) + 4 + 2 * slot, slot, 2);
	vio_put_le(f->h.mem + AVAIL(q) + 2, (uint16_t)(n + 1), 2);
}

static void doorbell(struct fake *f, unsigned q)
{
	wr(f, COREIO_VPCI_NOTIFY_OFF + COREIO_VPCI_NOTIFY_MULT * q, 2, q);
}

static uint16_t used_idx(struct fake *f, unsigned q)
{
	return (uint16_t)vio_get_le(f->h.mem + USED(q) + 2, 2);
}

/* Used element slot of queue q is head `slot` with 16 bytes, and its buffer holds the data. */
static void assert_used(struct fake *f, unsigned q, unsigned slot)
{
	uint64_t e = USED(q) + 4 + 8u * slot;

	assert_int_equal(vio_get_le(f->h.mem + e, 4), slot);
	assert_int_equal(vio_get_le(f->h.mem + e + 4, 4), 16);
	for (unsigned i = 0; i < 16; i++)
		assert_int_equal(f->h.mem[DATA(q) + 16u * slot + i], 0x10 * (slot + 1) + i);
}

/* The device after a reset: status 0, queues off, ISR 0 and the line low (last irq_set 0). */
static void assert_reset(struct fake *f, unsigned nq)
{
	assert_int_equal(f->resets, 1);
	assert_int_equal(rd(f, VIO_PCI_STATUS, 1), 0);
	assert_false(f->dev.reset_pending);
	assert_false(f->dev.polling);
	for (unsigned q = 0; q < nq; q++) {
		assert_false(f->dev.q[q].enabled);
		wr(f, VIO_PCI_Q_SELECT, 2, q);
		assert_int_equal(rd(f, VIO_PCI_Q_ENABLE, 2), 0);
		assert_int_equal(rd(f, VIO_PCI_Q_DESC, 8), 0);
	}
	wr(f, VIO_PCI_Q_SELECT, 2, 0);
	assert_int_equal(f->dev.isr, 0);
	assert_true(f->h.nev > 0);
	assert_int_equal(f->h.ev[f->h.nev - 1].level, 0);
	assert_int_equal(rd(f, COREIO_VPCI_ISR_OFF, 1), 0);
}

/* --- 1. A driver reset during a queue's DMA. --- */

static void hook_driver_reset(struct vio_fake *h)
{
	struct fake *f = (struct fake *)h;

	assert_true(f->dev.polling);
	wr(f, VIO_PCI_STATUS, 1, 0);
	/* Pending: the old status, the device still runs, nothing reset yet. */
	f->seen[0] = rd(f, VIO_PCI_STATUS, 1);
	f->seen[1] = f->resets;
	f->seen[2] = f->dev.q[0].enabled;
	/* The driver's writes are ignored until the reset is done. */
	wr(f, VIO_PCI_Q_SELECT, 2, 1);
	f->seen[3] = rd(f, VIO_PCI_Q_SELECT, 2);
	wr(f, VIO_PCI_GFSELECT, 4, 1);
	f->seen[4] = rd(f, VIO_PCI_GFSELECT, 4);
	wr(f, VIO_PCI_STATUS, 1, VIO_S_ACKNOWLEDGE);
	f->seen[5] = rd(f, VIO_PCI_STATUS, 1);
}

static void test_driver_reset_during_dma(void **state)
{
	struct fake *f = pci_up(2, &vio_fake_host);

	(void)state;
	add_buf(f, 0, 0);
	add_buf(f, 0, 1);
	add_buf(f, 1, 0);
	doorbell(f, 0);
	doorbell(f, 1);
	/* Inside the first half of chain 0's data. */
	vio_fake_hook(&f->h, hook_driver_reset, VIO_FAKE_HOOK_WRITE, 1);
	assert_true(vio_dev_poll(&f->dev));
	assert_int_equal(f->h.hook_runs, 1);
	assert_int_equal(f->seen[0], RUNNING);
	assert_int_equal(f->seen[1], 0);
	assert_true(f->seen[2]);
	assert_int_equal(f->seen[3], 0);
	assert_int_equal(f->seen[4], 0);
	assert_int_equal(f->seen[5], RUNNING);
	/* The kick was not cut short: the chain was finished and the used ring is consistent. */
	assert_int_equal(f->push_err, 0);
	assert_true(f->pushed >= 1);
	assert_int_equal(used_idx(f, 0), f->pushed);
	for (unsigned s = 0; s < f->pushed; s++)
		assert_used(f, 0, s);
	/* Once the reset is asked for, the next queue is not kicked. */
	assert_int_equal(f->kicks[0], 1);
	assert_int_equal(f->kicks[1], 0);
	assert_int_equal(used_idx(f, 1), 0);
	/* The interrupt of the pushed chains went up before the reset lowered it. */
	assert_true(f->h.nev >= 2);
	assert_int_equal(f->h.ev[0].level, 1);
	/* Reset by the time vio_dev_poll() returned, exactly once, status 0 seen by the model. */
	assert_int_equal(f->status_at_reset, 0);
	assert_reset(f, 2);
	assert_false(vio_dev_poll(&f->dev));
	assert_int_equal(f->resets, 1);
	/* The driver's writes count again. */
	wr(f, VIO_PCI_STATUS, 1, VIO_S_ACKNOWLEDGE);
	assert_int_equal(rd(f, VIO_PCI_STATUS, 1), VIO_S_ACKNOWLEDGE);
	wr(f, VIO_PCI_Q_SELECT, 2, 1);
	assert_int_equal(rd(f, VIO_PCI_Q_SELECT, 2), 1);
	free_fake(f);
}

/* --- 2. A driver reset while posted writes are in flight. --- */

static void test_reset_with_posts_in_flight(void **state)
{
	struct fake *f = pci_up(1, &vio_fake_host_posting);
	unsigned reads;

	(void)state;
	add_buf(f, 0, 0);
	doorbell(f, 0);
	assert_true(vio_dev_poll(&f->dev));
	assert_true(vio_fake_pending(&f->h) > 0);
	assert_int_equal(f->h.applied, f->h.answered);
	assert_non_null(f->dev.post_head);
	reads = f->h.reads;
	/* Not polling, but the barrier would wait for DMA inside the callback: pending. */
	wr(f, VIO_PCI_STATUS, 1, 0);
	assert_true(f->dev.reset_pending);
	assert_int_equal(f->h.reads, reads);
	assert_int_equal(f->h.applied, f->h.answered);
	assert_int_equal(f->resets, 0);
	assert_int_equal(rd(f, VIO_PCI_STATUS, 1), RUNNING);
	wr(f, VIO_PCI_Q_SELECT, 2, 0x55);
	assert_int_equal(rd(f, VIO_PCI_Q_SELECT, 2), 0);
	/* The next poll: the barrier (one 1-byte read behind the writes), then the reset. */
	assert_false(vio_dev_poll(&f->dev));
	assert_int_equal(f->h.reads, reads + 1);
	assert_int_equal(f->h.read_len[reads], 1);
	assert_int_equal(f->reads_at_reset, reads + 1);
	assert_int_equal(f->h.applied, f->h.npw);
	for (unsigned i = 0; i < 16; i++)
		assert_int_equal(f->h.mem[DATA(0) + i], 0x10 + i);
	assert_reset(f, 1);
	/* The completions come later: the reset chain never reaches the used ring. */
	vio_fake_process(&f->h);
	vio_fake_process(&f->h);
	assert_int_equal(used_idx(f, 0), 0);
	assert_int_equal(f->dev.isr, 0);
	assert_null(f->dev.post_head);
	assert_int_equal(f->resets, 1);
	free_fake(f);
}

/* The same without serving during DMA (the MMIO transport): the reset happens in the write. */
static void test_reset_with_posts_no_serve(void **state)
{
	struct fake *f = pci_up(1, &vio_fake_host_posting);
	unsigned reads;

	(void)state;
	f->dev.serve_in_dma = false;
	add_buf(f, 0, 0);
	doorbell(f, 0);
	assert_true(vio_dev_poll(&f->dev));
	assert_true(vio_fake_pending(&f->h) > 0);
	reads = f->h.reads;
	wr(f, VIO_PCI_STATUS, 1, 0);
	assert_false(f->dev.reset_pending);
	assert_int_equal(f->h.reads, reads + 1);
	assert_int_equal(f->h.read_len[reads], 1);
	assert_int_equal(f->h.applied, f->h.npw);
	assert_reset(f, 1);
	assert_false(vio_dev_poll(&f->dev));
	assert_int_equal(f->resets, 1);
	vio_fake_process(&f->h);
	vio_fake_process(&f->h);
	assert_int_equal(used_idx(f, 0), 0);
	free_fake(f);
}

/* The MMIO transport as vio_dev_set_ctx() sets it up: a status 0 write resets at once. */
static void test_reset_mmio_at_once(void **state)
{
	struct fake *f = new_fake(1, &vio_fake_host_posting);
	unsigned reads;

	(void)state;
	f->dev.transport = VIO_TRANSPORT_MMIO;
	f->dev.serve_in_dma = false;
	assert_int_equal(vio_test_negotiate(&f->dev, VIO_BIT(VIO_F_VERSION_1)), 0);
	assert_int_equal(vio_test_mmio_queue(&f->dev, 0, QSIZE, RING(0), AVAIL(0), USED(0)), 0);
	assert_int_equal(vio_test_w32(&f->dev, VIO_MMIO_STATUS, RUNNING), 0);
	vio_dev_poll(&f->dev);
	add_buf(f, 0, 0);
	assert_int_equal(vio_test_w32(&f->dev, VIO_MMIO_QUEUE_NOTIFY, 0), 0);
	assert_true(vio_dev_poll(&f->dev));
	assert_true(vio_fake_pending(&f->h) > 0);
	reads = f->h.reads;
	assert_int_equal(vio_test_w32(&f->dev, VIO_MMIO_STATUS, 0), 0);
	assert_false(f->dev.reset_pending);
	assert_int_equal(f->h.reads, reads + 1);
	assert_int_equal(f->resets, 1);
	assert_int_equal(rd(f, VIO_MMIO_STATUS, 4), 0);
	assert_false(f->dev.q[0].enabled);
	free_fake(f);
}

/* --- 3. vio_dev_request_reset() (a VM reset). --- */

static void hook_vm_reset(struct vio_fake *h)
{
	struct fake *f = (struct fake *)h;

	vio_dev_request_reset(&f->dev);
	f->seen[0] = f->resets;
	f->seen[1] = rd(f, VIO_PCI_STATUS, 1);
	f->seen[2] = f->dev.reset_pending;
}

static void test_request_reset(void **state)
{
	struct fake *f = pci_up(1, &vio_fake_host);

	(void)state;
	/* Outside vio_dev_poll(): at once. */
	vio_dev_request_reset(&f->dev);
	assert_false(f->dev.reset_pending);
	assert_reset(f, 1);
	free_fake(f);

	/* Inside (a callback served during the DMA of a kick): pending until the poll ends. */
	f = pci_up(1, &vio_fake_host);
	add_buf(f, 0, 0);
	doorbell(f, 0);
	vio_fake_hook(&f->h, hook_vm_reset, VIO_FAKE_HOOK_WRITE, 1);
	assert_true(vio_dev_poll(&f->dev));
	assert_int_equal(f->h.hook_runs, 1);
	assert_int_equal(f->seen[0], 0);
	assert_int_equal(f->seen[1], RUNNING);
	assert_true(f->seen[2]);
	assert_int_equal(f->push_err, 0);
	assert_int_equal(f->pushed, 1);
	assert_int_equal(used_idx(f, 0), 1);
	assert_used(f, 0, 0);
	assert_reset(f, 1);
	free_fake(f);
}

/* --- 4. Disabling the queue being processed. --- */

static void hook_disable_queue(struct vio_fake *h)
{
	struct fake *f = (struct fake *)h;

	wr(f, VIO_PCI_Q_SELECT, 2, 0);
	wr(f, VIO_PCI_Q_ENABLE, 2, 0);
	f->seen[0] = rd(f, VIO_PCI_Q_ENABLE, 2);
	f->seen[1] = f->dev.q[0].enabled;
}

static void test_queue_disable_during_dma(void **state)
{
	struct fake *f = pci_up(1, &vio_fake_host);
	bool warned = false;

	(void)state;
	add_buf(f, 0, 0);
	add_buf(f, 0, 1);
	doorbell(f, 0);
	vio_fake_hook(&f->h, hook_disable_queue, VIO_FAKE_HOOK_WRITE, 1);
	assert_true(vio_dev_poll(&f->dev));
	assert_int_equal(f->h.hook_runs, 1);
	assert_int_equal(f->seen[0], 1);
	assert_true(f->seen[1]);
	for (unsigned i = 0; i < f->h.nlog; i++)
		if (f->h.log[i].level == COREIO_LOG_WARNING &&
		    strstr(f->h.log[i].msg, "queue 0: disabling an enabled queue ignored"))
			warned = true;
	assert_true(warned);
	/* Both chains done, the queue still enabled, the device still running. */
	assert_int_equal(f->push_err, 0);
	assert_int_equal(f->pushed, 2);
	assert_int_equal(used_idx(f, 0), 2);
	assert_used(f, 0, 0);
	assert_used(f, 0, 1);
	assert_true(vio_dev_running(&f->dev));
	assert_int_equal(rd(f, VIO_PCI_Q_ENABLE, 2), 1);
	/* Outside the poll: disabled, no warning. */
	f->h.hook = NULL;
	f->h.nlog = 0;
	wr(f, VIO_PCI_Q_ENABLE, 2, 0);
	assert_int_equal(rd(f, VIO_PCI_Q_ENABLE, 2), 0);
	assert_false(f->dev.q[0].enabled);
	assert_int_equal(f->h.nlog, 0);
	free_fake(f);
}

/* --- 5. A doorbell during the DMA. --- */

static void hook_doorbell(struct vio_fake *h)
{
	struct fake *f = (struct fake *)h;

	add_buf(f, 0, 1);
	doorbell(f, 0);
	f->seen[0] = f->dev.kick_pending;
}

static void test_doorbell_during_dma(void **state)
{
	struct fake *f = pci_up(1, &vio_fake_host);

	(void)state;
	add_buf(f, 0, 0);
	doorbell(f, 0);
	vio_fake_hook(&f->h, hook_doorbell, VIO_FAKE_HOOK_WRITE, 1);
	assert_true(vio_dev_poll(&f->dev));
	assert_int_equal(f->h.hook_runs, 1);
	assert_int_equal(f->seen[0], 1);
	assert_int_equal(f->kicks[0], 1);
	/* This kick read avail->idx once, before the new buffer: only chain 0 done. */
	assert_int_equal(used_idx(f, 0), 1);
	/* The doorbell is not lost: the next poll kicks again and takes the new buffer. */
	assert_int_equal(f->dev.kick_pending, 1);
	assert_true(vio_dev_poll(&f->dev));
	assert_int_equal(f->kicks[0], 2);
	assert_int_equal(used_idx(f, 0), 2);
	assert_used(f, 0, 0);
	assert_used(f, 0, 1);
	assert_int_equal(f->push_err, 0);
	/* Nothing more to do after that. */
	assert_false(vio_dev_poll(&f->dev));
	assert_int_equal(f->kicks[0], 2);
	free_fake(f);
}

/* --- 6. An ISR read during the DMA. --- */

static void hook_isr_read(struct vio_fake *h)
{
	struct fake *f = (struct fake *)h;

	f->seen[0] = rd(f, COREIO_VPCI_ISR_OFF, 1);
	f->seen[1] = f->dev.isr;
	f->seen[2] = f->h.nev;
}

static void test_isr_read_during_dma(void **state)
{
	struct fake *f = pci_up(1, &vio_fake_host);

	(void)state;
	add_buf(f, 0, 0);
	add_buf(f, 0, 1);
	doorbell(f, 0);
	/* Chain 0: 2 data writes, element, index (then its interrupt); chain 1's first write. */
	vio_fake_hook(&f->h, hook_isr_read, VIO_FAKE_HOOK_WRITE, 5);
	assert_true(vio_dev_poll(&f->dev));
	assert_int_equal(f->h.hook_runs, 1);
	assert_int_equal(f->seen[0], VIO_ISR_QUEUE);
	assert_int_equal(f->seen[1], 0);
	/* Raised by chain 0, lowered by the read, raised again by chain 1. */
	assert_int_equal(f->seen[2], 2);
	assert_int_equal(f->h.nev, 3);
	assert_int_equal(f->h.ev[0].level, 1);
	assert_int_equal(f->h.ev[1].level, 0);
	assert_int_equal(f->h.ev[2].level, 1);
	assert_int_equal(f->dev.isr, VIO_ISR_QUEUE);
	assert_int_equal(used_idx(f, 0), 2);
	assert_used(f, 0, 1);
	/* The driver's next read takes it. */
	assert_int_equal(rd(f, COREIO_VPCI_ISR_OFF, 1), VIO_ISR_QUEUE);
	assert_int_equal(f->h.ev[f->h.nev - 1].level, 0);
	assert_int_equal(f->dev.isr, 0);
	free_fake(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_driver_reset_during_dma),
	    cmocka_unit_test(test_reset_with_posts_in_flight),
	    cmocka_unit_test(test_reset_with_posts_no_serve),
	    cmocka_unit_test(test_reset_mmio_at_once),
	    cmocka_unit_test(test_request_reset),
	    cmocka_unit_test(test_queue_disable_during_dma),
	    cmocka_unit_test(test_doorbell_during_dma),
	    cmocka_unit_test(test_isr_read_during_dma),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
