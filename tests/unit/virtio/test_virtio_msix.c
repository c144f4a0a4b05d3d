/* cmocka tests of the virtio-pci transport's MSI-X vectors: the vector registers, refusal and
 * reset, and which IRQ line an interrupt pulses (or the ISR and line 0 when there is no vector). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
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
#define DATA	 0x20000u
#define BAR	 0xfe000000ull /* where the guest put BAR 0 */

struct fake {
	struct vio_fake h; /* first: the host ops' opaque; posted writes held, see new_fake() */
	struct vio_dev dev;
	struct vio_chain chain;
};

/* The model: every chain gets 4 bytes (posted when the host posts) and is pushed. */
static void kick_cb(struct vio_dev *d, unsigned q)
{
	struct fake *f = d->priv;
	static const uint8_t bytes[4] = {1, 2, 3, 4};

	while (vio_queue_pop(d, q, &f->chain) > 0) {
		assert_int_equal(vio_chain_post(d, &f->chain, 0, bytes, sizeof(bytes)), 0);
		assert_int_equal(vio_queue_push(d, q, &f->chain, sizeof(bytes)), 0);
	}
}

static const struct vio_dev_ops ops = {.queue_kick = kick_cb};

static void wr(struct fake *f, uint64_t off, unsigned n, uint64_t v)
{
	vio_fake_wr(&f->dev, BAR + off, n, v);
}

static uint64_t rd(struct fake *f, uint64_t off, unsigned n)
{
	return vio_fake_rd(&f->dev, BAR + off, n);
}

static struct fake *new_fake(unsigned nq, enum vio_transport tr, const struct vio_host_ops *host)
{
	struct fake *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	vio_fake_init(&f->h, MEM_SIZE);
	/* Posted writes wait until vio_fake_process(); they must fit in memory. */
	f->h.hold_posts = true;
	f->h.posts_in_range = true;
	assert_int_equal(vio_dev_init(&f->dev, VIO_ID_RNG, 0, nq, 16, &ops, f), 0);
	f->dev.transport = tr;
	vio_dev_set_host(&f->dev, host, &f->h);
	return f;
}

static void free_fake(struct fake *f)
{
	vio_chain_free(&f->chain);
	vio_dev_reset(&f->dev);
	vio_fake_fini(&f->h);
	free(f);
}

/* Features negotiated (VERSION_1 only), through the PCI common configuration. */
static void pci_negotiate(struct fake *f)
{
	wr(f, VIO_PCI_STATUS, 1, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER);
	wr(f, VIO_PCI_GFSELECT, 4, 1);
	wr(f, VIO_PCI_GF, 4, 1);
	wr(f, VIO_PCI_STATUS, 1, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
	assert_int_equal(rd(f, VIO_PCI_STATUS, 1),
			 VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
}

/* Queue q of QSIZE at RING(q), with queue_msix_vector vec (VIO_PCI_NO_VECTOR: leave it). */
static void pci_queue(struct fake *f, unsigned q, uint16_t vec)
{
	wr(f, VIO_PCI_Q_SELECT, 2, q);
	wr(f, VIO_PCI_Q_SIZE, 2, QSIZE);
	wr(f, VIO_PCI_Q_DESC, 8, RING(q));
	wr(f, VIO_PCI_Q_DRIVER, 8, RING(q) + 0x400);
	wr(f, VIO_PCI_Q_DEVICE, 8, RING(q) + 0x800);
	if (vec != VIO_PCI_NO_VECTOR) {
		wr(f, VIO_PCI_Q_MSIX, 2, vec);
		assert_int_equal(rd(f, VIO_PCI_Q_MSIX, 2), vec);
	}
	wr(f, VIO_PCI_Q_ENABLE, 2, 1);
	assert_int_equal(rd(f, VIO_PCI_Q_ENABLE, 2), 1);
}

static void pci_driver_ok(struct fake *f)
{
	wr(f, VIO_PCI_STATUS, 1, 0x0f);
	assert_int_equal(rd(f, VIO_PCI_STATUS, 1), 0x0f);
	vio_dev_poll(&f->dev);
}

/* Publish one 4-byte writable buffer on queue q (its n-th request) and notify. */
static void request(struct fake *f, unsigned q, uint16_t n)
{
	uint64_t desc = RING(q), avail = RING(q) + 0x400;
	uint16_t slot = n % QSIZE;

	vio_test_desc(f->h.mem + desc + 16 * slot, DATA + 0x100 * q + 4 * slot, 4, VIO_DESC_F_WRITE,
		      0);
	vio_put_le(f->h.mem + avail + 4 + 2 * slot, slot, 2);
	vio_put_le(f->h.mem + avail + 2, (uint16_t)(n + 1), 2);
	wr(f, COREIO_VPCI_NOTIFY_OFF + COREIO_VPCI_NOTIFY_MULT * q, 2, q);
	assert_true(vio_dev_poll(&f->dev));
}

static uint16_t used_idx(struct fake *f, unsigned q)
{
	return (uint16_t)vio_get_le(f->h.mem + RING(q) + 0x800 + 2, 2);
}

/* Event i is a pulse half of line (level), through irq_line. */
static void assert_event(const struct fake *f, unsigned i, unsigned line, unsigned level,
			 bool setlvl)
{
	assert_true(i < f->h.nev);
	assert_true(i < VIO_FAKE_MAX_IRQ);
	assert_int_equal(f->h.ev[i].line, line);
	assert_int_equal(f->h.ev[i].level, level);
	assert_int_equal(f->h.ev[i].setlvl, setlvl);
}

static void test_vector_count(void **state)
{
	(void)state;
	for (unsigned nq = 1; nq <= VIO_MAX_QUEUES; nq++) {
		struct fake *f = new_fake(nq, VIO_TRANSPORT_PCI, &vio_fake_host_lines);

		assert_int_equal(vio_dev_msix_vectors(&f->dev), nq + 1 < 8 ? nq + 1 : 8);
		f->dev.transport = VIO_TRANSPORT_MMIO;
		assert_int_equal(vio_dev_msix_vectors(&f->dev), 0);
		free_fake(f);
	}
}

static void test_vector_registers(void **state)
{
	struct fake *f = new_fake(2, VIO_TRANSPORT_PCI, &vio_fake_host_lines); /* 3 vectors */

	(void)state;
	/* Nothing assigned after init. */
	assert_int_equal(rd(f, VIO_PCI_MSIX_CONFIG, 2), VIO_PCI_NO_VECTOR);
	for (unsigned q = 0; q < 2; q++) {
		wr(f, VIO_PCI_Q_SELECT, 2, q);
		assert_int_equal(rd(f, VIO_PCI_Q_MSIX, 2), VIO_PCI_NO_VECTOR);
	}
	/* Offered vectors read back; others are refused. */
	wr(f, VIO_PCI_MSIX_CONFIG, 2, 0);
	assert_int_equal(rd(f, VIO_PCI_MSIX_CONFIG, 2), 0);
	wr(f, VIO_PCI_MSIX_CONFIG, 2, 2);
	assert_int_equal(rd(f, VIO_PCI_MSIX_CONFIG, 2), 2);
	wr(f, VIO_PCI_MSIX_CONFIG, 2, 3);
	assert_int_equal(rd(f, VIO_PCI_MSIX_CONFIG, 2), VIO_PCI_NO_VECTOR);
	wr(f, VIO_PCI_MSIX_CONFIG, 2, 1);
	wr(f, VIO_PCI_MSIX_CONFIG, 2, 0x8000);
	assert_int_equal(rd(f, VIO_PCI_MSIX_CONFIG, 2), VIO_PCI_NO_VECTOR);
	wr(f, VIO_PCI_MSIX_CONFIG, 2, 1);
	wr(f, VIO_PCI_MSIX_CONFIG, 2, VIO_PCI_NO_VECTOR);
	assert_int_equal(rd(f, VIO_PCI_MSIX_CONFIG, 2), VIO_PCI_NO_VECTOR);
	/* A byte write changes one byte of the vector. */
	wr(f, VIO_PCI_MSIX_CONFIG, 2, 1);
	wr(f, VIO_PCI_MSIX_CONFIG + 1, 1, 0);
	assert_int_equal(rd(f, VIO_PCI_MSIX_CONFIG, 2), 1);

	/* Queue vectors belong to the selected queue. */
	wr(f, VIO_PCI_Q_SELECT, 2, 1);
	wr(f, VIO_PCI_Q_MSIX, 2, 2);
	assert_int_equal(rd(f, VIO_PCI_Q_MSIX, 2), 2);
	wr(f, VIO_PCI_Q_SELECT, 2, 0);
	assert_int_equal(rd(f, VIO_PCI_Q_MSIX, 2), VIO_PCI_NO_VECTOR);
	wr(f, VIO_PCI_Q_MSIX, 2, 1);
	assert_int_equal(rd(f, VIO_PCI_Q_MSIX, 2), 1);
	wr(f, VIO_PCI_Q_MSIX, 2, 3);
	assert_int_equal(rd(f, VIO_PCI_Q_MSIX, 2), VIO_PCI_NO_VECTOR);
	wr(f, VIO_PCI_Q_SELECT, 2, 1);
	assert_int_equal(rd(f, VIO_PCI_Q_MSIX, 2), 2);
	/* A write of select and vector together sets the newly selected queue's. */
	{
		uint8_t b[6];

		vio_put_le(b, 0, 2);	 /* queue_select 0 */
		vio_put_le(b + 2, 8, 2); /* queue_size 8 */
		vio_put_le(b + 4, 2, 2); /* queue_msix_vector 2 */
		assert_int_equal(vio_transport_write(&f->dev, BAR + VIO_PCI_Q_SELECT, 6, b), 0);
	}
	assert_int_equal(rd(f, VIO_PCI_Q_SELECT, 2), 0);
	assert_int_equal(rd(f, VIO_PCI_Q_MSIX, 2), 2);
	assert_int_equal(rd(f, VIO_PCI_Q_SIZE, 2), 8);
	/* A queue that does not exist has no vector and keeps none. */
	wr(f, VIO_PCI_Q_SELECT, 2, 2);
	wr(f, VIO_PCI_Q_MSIX, 2, 1);
	assert_int_equal(rd(f, VIO_PCI_Q_MSIX, 2), VIO_PCI_NO_VECTOR);
	wr(f, VIO_PCI_Q_SELECT, 2, 0xffff);
	assert_int_equal(rd(f, VIO_PCI_Q_MSIX, 2), VIO_PCI_NO_VECTOR);
	/* No interrupt was sent by any of this. */
	assert_int_equal(f->h.nev, 0);
	free_fake(f);
}

static void test_vector_cap(void **state)
{
	struct fake *f = new_fake(VIO_MAX_QUEUES, VIO_TRANSPORT_PCI, &vio_fake_host_lines);

	(void)state;
	assert_int_equal(vio_dev_msix_vectors(&f->dev), 8);
	wr(f, VIO_PCI_Q_SELECT, 2, 7);
	wr(f, VIO_PCI_Q_MSIX, 2, 7);
	assert_int_equal(rd(f, VIO_PCI_Q_MSIX, 2), 7);
	wr(f, VIO_PCI_Q_MSIX, 2, 8);
	assert_int_equal(rd(f, VIO_PCI_Q_MSIX, 2), VIO_PCI_NO_VECTOR);
	free_fake(f);
}

static void test_vector_reset(void **state)
{
	struct fake *f = new_fake(2, VIO_TRANSPORT_PCI, &vio_fake_host_lines);

	(void)state;
	for (int how = 0; how < 2; how++) {
		wr(f, VIO_PCI_MSIX_CONFIG, 2, 0);
		wr(f, VIO_PCI_Q_SELECT, 2, 0);
		wr(f, VIO_PCI_Q_MSIX, 2, 1);
		wr(f, VIO_PCI_Q_SELECT, 2, 1);
		wr(f, VIO_PCI_Q_MSIX, 2, 2);
		if (how == 0)
			wr(f, VIO_PCI_STATUS, 1, 0); /* the driver's reset */
		else
			vio_dev_reset(&f->dev); /* a VM reset */
		assert_int_equal(rd(f, VIO_PCI_MSIX_CONFIG, 2), VIO_PCI_NO_VECTOR);
		for (unsigned q = 0; q < 2; q++) {
			wr(f, VIO_PCI_Q_SELECT, 2, q);
			assert_int_equal(rd(f, VIO_PCI_Q_MSIX, 2), VIO_PCI_NO_VECTOR);
		}
	}
	free_fake(f);
}

/* With vectors, a used buffer pulses the queue's line and leaves the ISR and line 0 alone. */
static void test_queue_vector_pulses(void **state)
{
	struct fake *f = new_fake(2, VIO_TRANSPORT_PCI, &vio_fake_host_lines);

	(void)state;
	pci_negotiate(f);
	wr(f, VIO_PCI_MSIX_CONFIG, 2, 0);
	pci_queue(f, 0, 1);
	pci_queue(f, 1, 2);
	pci_driver_ok(f);
	assert_int_equal(f->h.nev, 0);

	request(f, 0, 0);
	assert_int_equal(used_idx(f, 0), 1);
	assert_int_equal(f->h.nev, 2);
	assert_event(f, 0, 1, 1, false);
	assert_event(f, 1, 1, 0, false);
	request(f, 1, 0);
	assert_int_equal(used_idx(f, 1), 1);
	assert_int_equal(f->h.nev, 4);
	assert_event(f, 2, 2, 1, false);
	assert_event(f, 3, 2, 0, false);
	assert_int_equal(f->h.edges[1], 1);
	assert_int_equal(f->h.edges[2], 1);
	assert_int_equal(f->h.edges[0], 0);
	assert_int_equal(f->dev.isr, 0);
	assert_int_equal(rd(f, COREIO_VPCI_ISR_OFF, 1), 0);
	assert_int_equal(f->h.nev, 4); /* reading a clear ISR sends nothing */
	free_fake(f);
}

/* Configuration changes (and NEEDS_RESET) pulse the config vector. */
static void test_config_vector_pulses(void **state)
{
	struct fake *f = new_fake(1, VIO_TRANSPORT_PCI, &vio_fake_host_lines);

	(void)state;
	pci_negotiate(f);
	wr(f, VIO_PCI_MSIX_CONFIG, 2, 1);
	pci_queue(f, 0, 0);
	pci_driver_ok(f);
	vio_dev_config_changed(&f->dev);
	assert_int_equal(f->h.nev, 2);
	assert_event(f, 0, 1, 1, false);
	assert_event(f, 1, 1, 0, false);
	assert_int_equal(rd(f, VIO_PCI_CFG_GEN, 1), 1);
	assert_int_equal(f->dev.isr, 0);
	/* A broken ring: NEEDS_RESET with a configuration interrupt on vector 1. */
	vio_put_le(f->h.mem + RING(0) + 0x400 + 4, 0x40, 2); /* head 0x40 >= size */
	vio_put_le(f->h.mem + RING(0) + 0x400 + 2, 1, 2);
	wr(f, COREIO_VPCI_NOTIFY_OFF, 2, 0);
	vio_dev_poll(&f->dev);
	assert_true(rd(f, VIO_PCI_STATUS, 1) & VIO_S_NEEDS_RESET);
	assert_int_equal(f->h.nev, 4);
	assert_event(f, 2, 1, 1, false);
	assert_event(f, 3, 1, 0, false);
	assert_int_equal(f->dev.isr, 0);
	assert_int_equal(f->h.line_level[0], 0);
	free_fake(f);
}

/* No vectors (INTx, what Linux leaves without MSI-X): ISR bits and line 0's level as before. */
static void test_intx_unchanged(void **state)
{
	struct fake *f = new_fake(2, VIO_TRANSPORT_PCI, &vio_fake_host_lines);

	(void)state;
	pci_negotiate(f);
	pci_queue(f, 0, VIO_PCI_NO_VECTOR);
	pci_queue(f, 1, VIO_PCI_NO_VECTOR);
	pci_driver_ok(f);
	request(f, 0, 0);
	assert_int_equal(used_idx(f, 0), 1);
	assert_int_equal(f->h.nev, 1);
	assert_event(f, 0, 0, 1, true);
	assert_int_equal(rd(f, COREIO_VPCI_ISR_OFF, 1), VIO_ISR_QUEUE);
	assert_int_equal(f->h.nev, 2);
	assert_event(f, 1, 0, 0, true);
	assert_int_equal(rd(f, COREIO_VPCI_ISR_OFF, 1), 0);
	vio_dev_config_changed(&f->dev);
	assert_int_equal(f->h.line_level[0], 1);
	assert_int_equal(rd(f, COREIO_VPCI_ISR_OFF, 1), VIO_ISR_CONFIG);
	assert_int_equal(f->h.line_level[0], 0);
	for (unsigned i = 0; i < f->h.nev; i++)
		assert_true(f->h.ev[i].setlvl);
	free_fake(f);
}

/* Vectors for some interrupts only: each goes its own way. */
static void test_mixed(void **state)
{
	struct fake *f = new_fake(2, VIO_TRANSPORT_PCI, &vio_fake_host_lines);

	(void)state;
	pci_negotiate(f);
	pci_queue(f, 0, 2);
	pci_queue(f, 1, VIO_PCI_NO_VECTOR);
	pci_driver_ok(f);
	request(f, 1, 0);
	assert_int_equal(f->h.line_level[0], 1);
	assert_int_equal(f->h.edges[2], 0);
	request(f, 0, 0);
	assert_int_equal(f->h.edges[2], 1);
	assert_int_equal(f->h.line_level[2], 0);
	vio_dev_config_changed(&f->dev); /* config: no vector */
	assert_int_equal(rd(f, COREIO_VPCI_ISR_OFF, 1), VIO_ISR_QUEUE | VIO_ISR_CONFIG);
	assert_int_equal(f->h.line_level[0], 0);
	free_fake(f);
}

/*
 * A driver using MSI-X (a configuration vector) that gives a queue no vector
 * (a poll queue) gets no interrupt for it: no edge, no ISR, line 0 (MSI-X
 * vector 0 now) stays low.
 */
static void test_no_vector_under_msix(void **state)
{
	struct fake *f = new_fake(2, VIO_TRANSPORT_PCI, &vio_fake_host_lines);

	(void)state;
	pci_negotiate(f);
	wr(f, VIO_PCI_MSIX_CONFIG, 2, 0);
	pci_queue(f, 0, 1);
	pci_queue(f, 1, VIO_PCI_NO_VECTOR);
	pci_driver_ok(f);
	request(f, 1, 0);
	request(f, 1, 1);
	assert_int_equal(f->h.edges[0], 0);
	assert_int_equal(f->h.line_level[0], 0);
	assert_int_equal(rd(f, COREIO_VPCI_ISR_OFF, 1), 0);
	request(f, 0, 0);
	assert_int_equal(f->h.edges[1], 1);
	vio_dev_config_changed(&f->dev); /* the config vector, 0: an edge */
	assert_int_equal(f->h.edges[0], 1);
	assert_int_equal(f->h.line_level[0], 0);
	free_fake(f);
}

/* Vector 0 shares line 0 with INTx: a pulse while the ISR holds it high still makes an edge. */
static void test_vector0_with_isr_pending(void **state)
{
	struct fake *f = new_fake(1, VIO_TRANSPORT_PCI, &vio_fake_host_lines);

	(void)state;
	pci_negotiate(f);
	pci_queue(f, 0, VIO_PCI_NO_VECTOR);
	pci_driver_ok(f);
	request(f, 0, 0); /* ISR set, line 0 high */
	assert_int_equal(f->h.line_level[0], 1);
	assert_int_equal(f->h.edges[0], 1);
	wr(f, VIO_PCI_Q_SELECT, 2, 0);
	wr(f, VIO_PCI_Q_MSIX, 2, 0);
	request(f, 0, 1);
	assert_int_equal(f->h.edges[0], 2);
	assert_int_equal(f->h.line_level[0], 1); /* still high for the ISR */
	assert_int_equal(rd(f, COREIO_VPCI_ISR_OFF, 1), VIO_ISR_QUEUE);
	assert_int_equal(f->h.line_level[0], 0);
	request(f, 0, 2);
	assert_int_equal(f->h.edges[0], 3);
	assert_int_equal(f->h.line_level[0], 0);
	assert_int_equal(f->dev.isr, 0);
	free_fake(f);
}

/* A host without irq_line keeps the vector registers but interrupts the INTx way. */
static void test_host_without_lines(void **state)
{
	struct fake *f = new_fake(1, VIO_TRANSPORT_PCI, &vio_fake_host);

	(void)state;
	pci_negotiate(f);
	wr(f, VIO_PCI_MSIX_CONFIG, 2, 0);
	pci_queue(f, 0, 1);
	pci_driver_ok(f);
	request(f, 0, 0);
	assert_int_equal(f->h.nev, 1);
	assert_event(f, 0, 0, 1, true);
	assert_int_equal(rd(f, COREIO_VPCI_ISR_OFF, 1), VIO_ISR_QUEUE);
	free_fake(f);
}

/* A failing irq_line is reported by vio_dev_notify_queue() and sets nothing else. */
static void test_pulse_error(void **state)
{
	struct fake *f = new_fake(1, VIO_TRANSPORT_PCI, &vio_fake_host_lines);

	(void)state;
	pci_negotiate(f);
	pci_queue(f, 0, 1);
	pci_driver_ok(f);
	f->h.line_err = -ECONNRESET;
	assert_int_equal(vio_dev_notify_queue(&f->dev, 0), -ECONNRESET);
	assert_int_equal(f->dev.isr, 0);
	assert_int_equal(f->h.nev, 0);
	f->h.line_err = 0;
	assert_int_equal(vio_dev_notify_queue(&f->dev, 0), 0);
	assert_int_equal(f->h.edges[1], 1);
	free_fake(f);
}

/* With posted writes the pulse waits for them, one per queue, and a reset drops it. */
static void test_pulse_after_posted_writes(void **state)
{
	struct fake *f = new_fake(2, VIO_TRANSPORT_PCI, &vio_fake_host_all);

	(void)state;
	pci_negotiate(f);
	pci_queue(f, 0, 1);
	pci_queue(f, 1, 2);
	pci_driver_ok(f);
	request(f, 0, 0);
	request(f, 1, 0);
	assert_int_equal(f->h.nev, 0);
	assert_int_equal(used_idx(f, 0), 0);
	vio_fake_drain(&f->h);
	assert_int_equal(used_idx(f, 0), 1);
	assert_int_equal(used_idx(f, 1), 1);
	assert_int_equal(f->h.edges[1], 1);
	assert_int_equal(f->h.edges[2], 1);
	assert_int_equal(f->dev.isr, 0);
	/* A reset before the writes complete: no pulse for them. */
	request(f, 0, 1);
	wr(f, VIO_PCI_STATUS, 1, 0); /* the driver's reset: what waits on the writes is dropped */
	vio_fake_drain(&f->h);
	assert_int_equal(f->h.edges[1], 1);
	free_fake(f);
}

/* MMIO has no vectors: InterruptStatus and line 0, whatever the PCI state says. */
static void test_mmio_no_vectors(void **state)
{
	struct fake *f = new_fake(1, VIO_TRANSPORT_MMIO, &vio_fake_host_lines);
	uint8_t b[4];

	(void)state;
	assert_int_equal(vio_dev_msix_vectors(&f->dev), 0);
	f->dev.pci.config_vector = 0; /* as if a PCI driver had set it */
	f->dev.pci.queue_vector[0] = 1;
	assert_int_equal(vio_test_negotiate(&f->dev, VIO_BIT(VIO_F_VERSION_1)), 0);
	assert_int_equal(
	    vio_test_mmio_queue(&f->dev, 0, QSIZE, RING(0), RING(0) + 0x400, RING(0) + 0x800), 0);
	assert_int_equal(vio_test_w32(&f->dev, VIO_MMIO_STATUS, 0x0f), 0);
	vio_dev_poll(&f->dev);
	vio_test_desc(f->h.mem + RING(0), DATA, 4, VIO_DESC_F_WRITE, 0);
	vio_put_le(f->h.mem + RING(0) + 0x400 + 4, 0, 2);
	vio_put_le(f->h.mem + RING(0) + 0x400 + 2, 1, 2);
	assert_int_equal(vio_test_w32(&f->dev, VIO_MMIO_QUEUE_NOTIFY, 0), 0);
	assert_true(vio_dev_poll(&f->dev));
	assert_int_equal(used_idx(f, 0), 1);
	assert_int_equal(f->h.nev, 1);
	assert_event(f, 0, 0, 1, true);
	assert_int_equal(vio_transport_read(&f->dev, VIO_MMIO_INTERRUPT_STATUS, 4, b), 0);
	assert_int_equal(vio_get_le(b, 4), VIO_ISR_QUEUE);
	assert_int_equal(vio_test_w32(&f->dev, VIO_MMIO_INTERRUPT_ACK, VIO_ISR_QUEUE), 0);
	assert_int_equal(f->h.line_level[0], 0);
	/* Offset 0x10 is DeviceFeatures (word 0: 0 for this device), not a vector register. */
	assert_int_equal(vio_transport_read(&f->dev, VIO_PCI_MSIX_CONFIG, 2, b), 0);
	assert_int_equal(vio_get_le(b, 2), 0);
	free_fake(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vector_count),
	    cmocka_unit_test(test_vector_registers),
	    cmocka_unit_test(test_vector_cap),
	    cmocka_unit_test(test_vector_reset),
	    cmocka_unit_test(test_queue_vector_pulses),
	    cmocka_unit_test(test_config_vector_pulses),
	    cmocka_unit_test(test_intx_unchanged),
	    cmocka_unit_test(test_mixed),
	    cmocka_unit_test(test_no_vector_under_msix),
	    cmocka_unit_test(test_vector0_with_isr_pending),
	    cmocka_unit_test(test_host_without_lines),
	    cmocka_unit_test(test_pulse_error),
	    cmocka_unit_test(test_pulse_after_posted_writes),
	    cmocka_unit_test(test_mmio_no_vectors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
