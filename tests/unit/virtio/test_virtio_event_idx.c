/* cmocka tests of the virtio library's notification suppression: the avail ring's NO_INTERRUPT
 * flag, VIRTIO_F_EVENT_IDX (used_event, avail_event), their races and their DMA cost, against a
 * fake host that posts like libcoreio and lets the "driver" act in the middle of a DMA. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vio_fake.h"
#include "vio_test_desc.h"
#include "virtio.h"

#define MEM_SIZE  (1u << 20)
#define QSIZE	  16u
#define DESC	  0x10000u
#define LNX_AVAIL (DESC + 16u * QSIZE) /* Linux: the avail ring right after the table */
#define LNX_USED  (DESC + 0x1000u)
#define FAR_AVAIL 0x20000u /* a driver that puts the rings apart */
#define FAR_USED  0x30000u
#define HDR	  0x40000u
#define DATA	  0x50000u
#define STATUS	  0x60000u
#define BAR	  0x80000000ull /* where the PCI test puts BAR 0 */
#define DLEN	  512u
#define F_NO_INT  1u /* VRING_AVAIL_F_NO_INTERRUPT, as a driver writes it */

struct fake {
	struct vio_fake h;    /* first: the host ops' opaque */
	bool blk;	      /* the model: a block request (header, data, status) or a sink */
	uint64_t avail, used; /* the rings' addresses */
	bool b_notify;	      /* the hook's driver decided to notify */
	struct vio_dev dev;
	struct vio_chain chain;
};

/* The main loop until nothing is left to do: completions, then vio_dev_poll(), again. */
static void settle(struct fake *f)
{
	for (unsigned i = 0; i < 32; i++) {
		vio_fake_drain(&f->h);
		vio_dev_poll(&f->dev);
		if (f->h.answered == f->h.npw && !f->dev.irq_checks && !f->dev.kick_pending)
			return;
	}
	fail_msg("the device does not settle");
}

/* The models: a block request (header in; data and status out, posted) or a sink. */
static void kick(struct vio_dev *d, unsigned q)
{
	struct fake *f = d->priv;
	static uint8_t data[DLEN];

	while (vio_queue_pop(d, q, &f->chain) > 0) {
		uint8_t hdr[16], st = 0;

		if (!f->blk) {
			assert_int_equal(vio_queue_push(d, q, &f->chain, 0), 0);
			continue;
		}
		assert_int_equal(vio_chain_read(d, &f->chain, 0, hdr, sizeof(hdr)), 0);
		memset(data, hdr[8], sizeof(data));
		assert_int_equal(vio_chain_post(d, &f->chain, 0, data, DLEN), 0);
		assert_int_equal(vio_chain_post(d, &f->chain, DLEN, &st, 1), 0);
		assert_int_equal(vio_queue_push(d, q, &f->chain, DLEN + 1), 0);
	}
}

static const struct vio_dev_ops ops = {.queue_kick = kick};

/* Chain i: descriptors 3 (i % 5).. (blk: header, data, status; sink: one 4-byte buffer). */
static void make_chain(struct fake *f, unsigned i)
{
	uint8_t *t = f->h.mem + DESC;
	unsigned d = 3 * (i % 5);

	if (!f->blk) {
		vio_test_desc(t + 16 * d, DATA + 16 * i, 4, VIO_DESC_F_WRITE, 0);
		return;
	}
	memset(f->h.mem + HDR + 16 * i, 0, 16);
	f->h.mem[HDR + 16 * i + 8] = (uint8_t)(0x40 + i);
	vio_test_desc(t + 16 * d, HDR + 16 * i, 16, VIO_DESC_F_NEXT, (uint16_t)(d + 1));
	vio_test_desc(t + 16 * (d + 1), DATA + DLEN * i, DLEN, VIO_DESC_F_WRITE | VIO_DESC_F_NEXT,
		      (uint16_t)(d + 2));
	vio_test_desc(t + 16 * (d + 2), STATUS + i, 1, VIO_DESC_F_WRITE, 0);
}

static uint16_t mem16(struct fake *f, uint64_t gpa)
{
	return (uint16_t)vio_get_le(f->h.mem + gpa, 2);
}

static void set16(struct fake *f, uint64_t gpa, uint16_t v)
{
	vio_put_le(f->h.mem + gpa, v, 2);
}

static uint16_t used_idx(struct fake *f)
{
	return mem16(f, f->used + 2);
}

static uint16_t avail_event(struct fake *f)
{
	return mem16(f, f->used + 4 + 8 * QSIZE);
}

static void set_used_event(struct fake *f, uint16_t v)
{
	set16(f, f->avail + 4 + 2 * QSIZE, v);
}

/* The test's own vring_need_event: did an index moving old -> new_idx pass event? */
static bool passes(uint16_t event, uint16_t new_idx, uint16_t old)
{
	uint32_t dist = (uint16_t)(new_idx - old), to_event = (uint16_t)(event - old);

	return to_event < dist;
}

/*
 * The driver adds chain i (its head in the next avail slot, then avail->idx)
 * and decides, as a driver does after a full barrier, whether to notify:
 * with EVENT_IDX when the new index passed avail_event, else always.
 */
static bool drv_add(struct fake *f, unsigned i)
{
	uint16_t old = mem16(f, f->avail + 2);

	make_chain(f, i);
	set16(f, f->avail + 4 + 2 * (old % QSIZE), (uint16_t)(3 * (i % 5)));
	set16(f, f->avail + 2, (uint16_t)(old + 1));
	if (f->dev.driver_features & VIO_BIT(VIO_F_EVENT_IDX))
		return passes(avail_event(f), (uint16_t)(old + 1), old);
	return true;
}

/* The driver's doorbell and the main loop. */
static void doorbell(struct fake *f)
{
	vio_fake_wr32(&f->dev, VIO_MMIO_QUEUE_NOTIFY, 0);
	settle(f);
}

/* The driver acknowledges the interrupt (MMIO InterruptACK), so the next one is an edge. */
static void ack(struct fake *f)
{
	vio_fake_wr32(&f->dev, VIO_MMIO_INTERRUPT_ACK,
		      vio_fake_rd32(&f->dev, VIO_MMIO_INTERRUPT_STATUS));
	assert_int_equal(f->h.level, 0);
}

/* An MMIO device with one queue (rings as given), EVENT_IDX negotiated when ev. */
static struct fake *bring_up(bool ev, bool blk, uint64_t avail, uint64_t used)
{
	struct fake *f = calloc(1, sizeof(*f));
	uint64_t feats = VIO_BIT(VIO_F_VERSION_1) | (ev ? VIO_BIT(VIO_F_EVENT_IDX) : 0);

	assert_non_null(f);
	vio_fake_init(&f->h, MEM_SIZE);
	f->blk = blk;
	f->avail = avail;
	f->used = used;
	assert_int_equal(vio_dev_init(&f->dev, VIO_ID_BLOCK, 0, 1, 256, &ops, f), 0);
	vio_dev_set_event_idx(&f->dev, true);
	f->dev.transport = VIO_TRANSPORT_MMIO;
	vio_dev_set_host(&f->dev, &vio_fake_host_all, &f->h);
	assert_int_equal(vio_test_negotiate(&f->dev, feats), 0);
	assert_int_equal(
	    vio_test_mmio_queue(&f->dev, 0, QSIZE, DESC, (uint32_t)avail, (uint32_t)used), 0);
	assert_int_equal(vio_test_mmio_driver_ok(&f->dev), 0);
	assert_true(vio_dev_running(&f->dev));
	assert_int_equal(f->dev.driver_features, feats);
	settle(f); /* the DRIVER_OK kick: an empty ring */
	f->h.reads = f->h.writes = f->h.posts = 0;
	return f;
}

static void tear_down(struct fake *f)
{
	vio_fake_drain(&f->h);
	vio_chain_free(&f->chain);
	vio_fake_fini(&f->h);
	free(f);
}

/* The device offers EVENT_IDX only when asked; --event-idx / --no-event-idx are shared options. */
static void test_offer_and_cli(void **state)
{
	struct vio_dev d;
	struct vio_cli cli = {.transport = VIO_TRANSPORT_PCI};

	(void)state;
	assert_int_equal(vio_dev_init(&d, VIO_ID_RNG, VIO_BIT(VIO_F_EVENT_IDX), 1, 16, &ops, NULL),
			 0);
	assert_false(d.features & VIO_BIT(VIO_F_EVENT_IDX));
	vio_dev_set_event_idx(&d, true);
	assert_true(d.features & VIO_BIT(VIO_F_EVENT_IDX));
	assert_true(d.features & VIO_BIT(VIO_F_VERSION_1));
	vio_dev_set_event_idx(&d, false);
	assert_false(d.features & VIO_BIT(VIO_F_EVENT_IDX));
	assert_int_equal(cli.event_idx, VIO_EVENT_IDX_AUTO);
	assert_int_equal(vio_cli_option(&cli, 0x103, NULL, "test"), 1);
	assert_int_equal(cli.event_idx, VIO_EVENT_IDX_OFF);
	assert_int_equal(vio_cli_option(&cli, 0x104, "on", "test"), 1);
	assert_int_equal(cli.event_idx, VIO_EVENT_IDX_ON);
	assert_int_equal(vio_cli_option(&cli, 0x104, "auto", "test"), 1);
	assert_int_equal(cli.event_idx, VIO_EVENT_IDX_AUTO);
	assert_int_equal(vio_cli_option(&cli, 0x104, "sometimes", "test"), -1);
	assert_int_equal(cli.event_idx, VIO_EVENT_IDX_AUTO);
}

/* NO_INTERRUPT set: no interrupt (one read more to know it); clear: interrupt, no read more. */
static void test_no_interrupt_flag(void **state)
{
	struct fake *f = bring_up(false, true, LNX_AVAIL, LNX_USED);

	(void)state;
	set16(f, f->avail, F_NO_INT);
	assert_true(drv_add(f, 0));
	doorbell(f);
	assert_int_equal(used_idx(f), 1);
	assert_int_equal(f->h.mem[DATA], 0x40);
	assert_int_equal(f->h.raises, 0);
	assert_int_equal(vio_fake_rd32(&f->dev, VIO_MMIO_INTERRUPT_STATUS), 0);
	/* avail->idx, table and ring, header; the flags after publishing. */
	assert_int_equal(f->h.reads, 4);
	assert_int_equal(f->h.writes, 0);
	/* The driver wants interrupts again. */
	set16(f, f->avail, 0);
	f->h.reads = 0;
	assert_true(drv_add(f, 1));
	doorbell(f);
	assert_int_equal(used_idx(f), 2);
	assert_int_equal(f->h.raises, 1);
	assert_int_equal(vio_fake_rd32(&f->dev, VIO_MMIO_INTERRUPT_STATUS), VIO_ISR_QUEUE);
	assert_int_equal(f->h.reads, 3);
	tear_down(f);
}

/* The driver clears NO_INTERRUPT after the device read the flags: the interrupt still comes. */
static void clear_no_int(struct vio_fake *h)
{
	struct fake *f = (struct fake *)h;

	set16(f, f->avail, 0);
}

static void test_no_interrupt_cleared_meanwhile(void **state)
{
	for (unsigned at = 2; at <= 4; at++) {
		struct fake *f = bring_up(false, true, LNX_AVAIL, LNX_USED);

		(void)state;
		set16(f, f->avail, F_NO_INT);
		/* At the ring read, the header read, the flags read. */
		vio_fake_hook(&f->h, clear_no_int, VIO_FAKE_HOOK_READ_APPLIED, at);
		assert_true(drv_add(f, 0));
		doorbell(f);
		assert_true(f->h.hook_fired);
		assert_int_equal(used_idx(f), 1);
		assert_int_equal(f->h.raises, 1);
		tear_down(f);
	}
}

/*
 * EVENT_IDX: one chain per kick from used index start; used_event = start + 2.
 * The interrupt comes exactly with the third chain (used->idx passes
 * used_event), also across the 16-bit wrap.
 */
static void test_used_event_crossing(void **state)
{
	static const uint16_t starts[] = {0, 100, 65533, 65534, 65535};

	(void)state;
	for (unsigned s = 0; s < sizeof(starts) / sizeof(starts[0]); s++) {
		struct fake *f = bring_up(true, false, LNX_AVAIL, LNX_USED);
		struct vio_queue *vq = &f->dev.q[0];
		uint16_t start = starts[s];

		vq->last_avail = vq->avail_idx = vq->used_idx = vq->signalled_used = start;
		set16(f, f->avail + 2, start);
		set16(f, f->used + 2, start);
		set_used_event(f, (uint16_t)(start + 2));
		for (unsigned i = 0; i < 5; i++) {
			bool want = (uint16_t)(start + i + 1) == (uint16_t)(start + 3);

			f->h.reads = 0;
			drv_add(f, i);
			doorbell(f);
			assert_int_equal(used_idx(f), (uint16_t)(start + i + 1));
			if (f->h.raises != (want ? 1u : 0u))
				fail_msg("start %u chain %u: %u interrupts, want %d", start, i,
					 f->h.raises, want);
			/* Index, ring (with used_event), and one fresh read when quiet. */
			assert_int_equal(f->h.reads, want ? 2 : 3);
			if (f->h.raises)
				ack(f);
			f->h.raises = 0;
		}
		tear_down(f);
	}
}

/* The driver re-enables interrupts (used_event = its position) after the device's ring read. */
static void reenable_cb(struct vio_fake *h)
{
	struct fake *f = (struct fake *)h;

	set_used_event(f, used_idx(f));
}

static void test_used_event_moved_meanwhile(void **state)
{
	struct fake *f = bring_up(true, true, LNX_AVAIL, LNX_USED);

	(void)state;
	set_used_event(f, 100); /* far ahead: "no interrupts" */
	/* At the header read, after the ring read brought used_event. */
	vio_fake_hook(&f->h, reenable_cb, VIO_FAKE_HOOK_READ_APPLIED, 3);
	assert_true(drv_add(f, 0));
	doorbell(f);
	assert_true(f->h.hook_fired);
	assert_int_equal(used_idx(f), 1);
	assert_int_equal(f->h.raises, 1);
	/* Without the driver's change: nothing. */
	ack(f);
	set_used_event(f, 100);
	f->h.raises = 0;
	drv_add(f, 1);
	doorbell(f);
	assert_int_equal(used_idx(f), 2);
	assert_int_equal(f->h.raises, 0);
	tear_down(f);
}

/* avail_event follows what the device took, so the driver notifies the next chain (only). */
static void test_avail_event(void **state)
{
	struct fake *f = bring_up(true, true, FAR_AVAIL, FAR_USED);

	(void)state;
	/* Three chains, one notify. */
	assert_true(drv_add(f, 0));
	assert_false(drv_add(f, 1));
	assert_false(drv_add(f, 2));
	doorbell(f);
	assert_int_equal(used_idx(f), 3);
	assert_int_equal(avail_event(f), 3);
	assert_int_equal(f->h.writes, 0); /* posted */
	/* The next chain is notified, the one after it not, until the device has looked. */
	assert_true(drv_add(f, 3));
	assert_false(drv_add(f, 4));
	doorbell(f);
	assert_int_equal(used_idx(f), 5);
	assert_int_equal(avail_event(f), 5);
	assert_true(drv_add(f, 5));
	doorbell(f);
	assert_int_equal(used_idx(f), 6);
	tear_down(f);
}

/* The driver adds chain 1 during the device's read `at` (hook). */
static void add_second(struct vio_fake *h)
{
	struct fake *f = (struct fake *)h;

	f->b_notify = drv_add(f, 1);
}

/*
 * No lost wake-up: the driver adds a chain while the device finishes the
 * previous one, at every read of the device (before or after its posted
 * writes landed), with both ring layouts and both models. Either the
 * device takes the chain by itself or the driver notifies; in some of the
 * interleavings it must be the device (else suppression never happened).
 */
static void test_no_lost_wakeup(void **state)
{
	unsigned quiet = 0, runs = 0;

	(void)state;
	for (unsigned layout = 0; layout < 2; layout++)
		for (unsigned blk = 0; blk < 2; blk++)
			for (unsigned at = 1; at <= 8; at++)
				for (unsigned after = 0; after < 2; after++) {
					struct fake *f =
					    bring_up(true, blk, layout ? FAR_AVAIL : LNX_AVAIL,
						     layout ? FAR_USED : LNX_USED);

					vio_fake_hook(&f->h, add_second,
						      after ? VIO_FAKE_HOOK_READ_APPLIED
							    : VIO_FAKE_HOOK_READ,
						      at);
					assert_true(drv_add(f, 0));
					doorbell(f);
					if (!f->h.hook_fired) {
						/* The device was idle already. */
						f->h.hook_fired = true;
						add_second(&f->h);
					}
					if (f->b_notify)
						doorbell(f);
					else
						quiet++;
					if (used_idx(f) != 2)
						fail_msg("layout %u blk %u read %u after %u: chain "
							 "lost (used idx %u, notify %d)",
							 layout, blk, at, after, used_idx(f),
							 f->b_notify);
					runs++;
					tear_down(f);
				}
	printf("no lost wake-up: %u interleavings, %u without a notify\n", runs, quiet);
	assert_true(quiet > 0);
	assert_true(quiet < runs);
}

/* A reset forgets an open interrupt decision and the event state. */
static void test_reset_clears(void **state)
{
	struct fake *f = bring_up(true, false, LNX_AVAIL, LNX_USED);
	struct vio_queue *vq = &f->dev.q[0];

	(void)state;
	set_used_event(f, 100);
	drv_add(f, 0);
	/* The model's work outside vio_dev_poll(): the decision stays open. */
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 1);
	assert_int_equal(vio_queue_push(&f->dev, 0, &f->chain, 0), 0);
	assert_true(vq->irq_check);
	assert_int_equal(f->dev.irq_checks, 1);
	assert_int_not_equal(vq->ev_state, 0);
	vio_fake_wr32(&f->dev, VIO_MMIO_STATUS, 0);
	assert_int_equal(f->dev.irq_checks, 0);
	assert_false(vq->irq_check);
	assert_int_equal(vq->ev_state, 0);
	assert_int_equal(vq->signalled_used, 0);
	f->h.reads = 0;
	vio_dev_poll(&f->dev);
	assert_int_equal(f->h.reads, 0);
	assert_int_equal(f->h.raises, 0);
	/* A new driver: rings zeroed, used_event 0, interrupt on the first chain. */
	vio_fake_drain(&f->h);
	memset(f->h.mem + DESC, 0, 0x2000);
	assert_int_equal(
	    vio_test_negotiate(&f->dev, VIO_BIT(VIO_F_VERSION_1) | VIO_BIT(VIO_F_EVENT_IDX)), 0);
	assert_int_equal(vio_test_mmio_queue(&f->dev, 0, QSIZE, DESC, LNX_AVAIL, LNX_USED), 0);
	assert_int_equal(vio_test_mmio_driver_ok(&f->dev), 0);
	settle(f);
	assert_true(drv_add(f, 0));
	doorbell(f);
	assert_int_equal(used_idx(f), 1);
	assert_int_equal(f->h.raises, 1);
	assert_int_equal(avail_event(f), 1);
	tear_down(f);
}

/* PCI with MSI-X: the queue's vector is pulsed exactly when the driver asks for it. */
static void pwr(struct fake *f, uint64_t off, unsigned n, uint64_t v)
{
	vio_fake_wr(&f->dev, BAR + off, n, v);
}

static uint64_t prd(struct fake *f, uint64_t off, unsigned n)
{
	return vio_fake_rd(&f->dev, BAR + off, n);
}

static struct fake *bring_up_pci(uint16_t qvec)
{
	struct fake *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	vio_fake_init(&f->h, MEM_SIZE);
	f->avail = LNX_AVAIL;
	f->used = LNX_USED;
	assert_int_equal(vio_dev_init(&f->dev, VIO_ID_RNG, 0, 1, 256, &ops, f), 0);
	vio_dev_set_event_idx(&f->dev, true);
	f->dev.transport = VIO_TRANSPORT_PCI;
	vio_dev_set_host(&f->dev, &vio_fake_host_all, &f->h);
	pwr(f, VIO_PCI_STATUS, 1, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER);
	pwr(f, VIO_PCI_GFSELECT, 4, 0);
	pwr(f, VIO_PCI_GF, 4, 1u << VIO_F_EVENT_IDX);
	pwr(f, VIO_PCI_GFSELECT, 4, 1);
	pwr(f, VIO_PCI_GF, 4, 1);
	pwr(f, VIO_PCI_STATUS, 1, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
	assert_true(prd(f, VIO_PCI_STATUS, 1) & VIO_S_FEATURES_OK);
	pwr(f, VIO_PCI_MSIX_CONFIG, 2, 0);
	pwr(f, VIO_PCI_Q_SELECT, 2, 0);
	pwr(f, VIO_PCI_Q_SIZE, 2, QSIZE);
	pwr(f, VIO_PCI_Q_DESC, 8, DESC);
	pwr(f, VIO_PCI_Q_DRIVER, 8, LNX_AVAIL);
	pwr(f, VIO_PCI_Q_DEVICE, 8, LNX_USED);
	pwr(f, VIO_PCI_Q_MSIX, 2, qvec);
	pwr(f, VIO_PCI_Q_ENABLE, 2, 1);
	pwr(f, VIO_PCI_STATUS, 1, 0x0f);
	assert_int_equal(prd(f, VIO_PCI_STATUS, 1), 0x0f);
	settle(f);
	f->h.reads = 0;
	return f;
}

static void pci_doorbell(struct fake *f)
{
	pwr(f, COREIO_VPCI_NOTIFY_OFF, 2, 0);
	settle(f);
}

static void test_msix_vector(void **state)
{
	struct fake *f = bring_up_pci(1);

	(void)state;
	set_used_event(f, 1); /* interrupt when used->idx passes 1 */
	assert_true(drv_add(f, 0));
	pci_doorbell(f);
	assert_int_equal(used_idx(f), 1);
	assert_int_equal(f->h.pulses[1], 0);
	assert_int_equal(f->h.reads, 3); /* index, ring, the fresh used_event */
	assert_true(drv_add(f, 1));
	pci_doorbell(f);
	assert_int_equal(used_idx(f), 2);
	assert_int_equal(f->h.pulses[1], 1);
	assert_int_equal(f->h.pulses[0], 0);
	assert_int_equal(prd(f, COREIO_VPCI_ISR_OFF, 1), 0);
	assert_int_equal(f->h.raises, 0);
	assert_true(drv_add(f, 2));
	pci_doorbell(f);
	assert_int_equal(f->h.pulses[1], 1);
	tear_down(f);
}

/* A queue without a vector under MSI-X (a poll queue) gets nothing, and costs no read. */
static void test_msix_poll_queue_no_read(void **state)
{
	struct fake *f = bring_up_pci(VIO_PCI_NO_VECTOR);

	(void)state;
	set_used_event(f, 100);
	for (unsigned i = 0; i < 3; i++) {
		f->h.reads = 0;
		drv_add(f, i);
		pci_doorbell(f);
		assert_int_equal(used_idx(f), i + 1);
		assert_int_equal(f->h.reads, 2);
	}
	for (unsigned l = 0; l < 8; l++)
		assert_int_equal(f->h.pulses[l], 0);
	assert_int_equal(f->h.raises, 0);
	tear_down(f);
}

/*
 * The DMA a Linux block request costs with EVENT_IDX (Linux's ring layout, one
 * indirect-free 3-descriptor chain): with interrupts wanted 3 blocking reads
 * as without it (index; table, ring and used_event; header), no blocking
 * write, one posted avail_event write more; polled (used_event not passed)
 * one read more, after the used ring writes. With the rings apart one read
 * more in both cases (the table), as without EVENT_IDX.
 */
static void test_dma_per_chain(void **state)
{
	for (unsigned layout = 0; layout < 2; layout++) {
		struct fake *f = bring_up(true, true, layout ? FAR_AVAIL : LNX_AVAIL,
					  layout ? FAR_USED : LNX_USED);

		(void)state;
		for (unsigned i = 0; i < 4; i++) {
			bool polled = i >= 2;

			/* Interrupts wanted: used_event = the driver's position (Linux). */
			set_used_event(f, polled ? (uint16_t)(used_idx(f) + 100) : used_idx(f));
			f->h.reads = f->h.writes = f->h.posts = f->h.raises = 0;
			assert_true(drv_add(f, i));
			doorbell(f);
			assert_int_equal(used_idx(f), i + 1);
			assert_int_equal(f->h.mem[STATUS + i], 0);
			assert_int_equal(f->h.raises, polled ? 0 : 1);
			assert_int_equal(f->h.reads, (polled ? 4 : 3) + layout);
			assert_int_equal(f->h.writes, 0);
			/* data, status, avail_event, used element, used->idx */
			assert_int_equal(f->h.posts, 5);
			if (f->h.raises)
				ack(f);
		}
		tear_down(f);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_offer_and_cli),
	    cmocka_unit_test(test_no_interrupt_flag),
	    cmocka_unit_test(test_no_interrupt_cleared_meanwhile),
	    cmocka_unit_test(test_used_event_crossing),
	    cmocka_unit_test(test_used_event_moved_meanwhile),
	    cmocka_unit_test(test_avail_event),
	    cmocka_unit_test(test_no_lost_wakeup),
	    cmocka_unit_test(test_reset_clears),
	    cmocka_unit_test(test_msix_vector),
	    cmocka_unit_test(test_msix_poll_queue_no_read),
	    cmocka_unit_test(test_dma_per_chain),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
