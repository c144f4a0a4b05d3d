/* cmocka tests of the virtio library: ring walking, chain validation, both transports, against a
 * fake memory. */
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
#define DESC	 0x1000u
#define AVAIL	 0x2000u
#define USED	 0x3000u
#define DATA	 0x10000u

struct fake {
	struct vio_fake h; /* first: the host ops' opaque */
	unsigned kicks;
	struct vio_dev dev;
	struct vio_chain chain;
};

static void kick_cb(struct vio_dev *d, unsigned q)
{
	struct fake *f = d->priv;

	(void)q;
	f->kicks++;
}

static const struct vio_dev_ops ops = {.queue_kick = kick_cb};

/* Register access helpers through the transport. */
static void wr(struct fake *f, uint64_t off, unsigned n, uint64_t v)
{
	vio_fake_wr(&f->dev, off, n, v);
}

static uint64_t rd(struct fake *f, uint64_t off, unsigned n)
{
	return vio_fake_rd(&f->dev, off, n);
}

static void set_desc(struct fake *f, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	vio_test_desc(f->h.mem + DESC + 16 * i, addr, len, flags, next);
}

/* Publish head in the next avail slot and advance avail->idx by count. */
static void publish(struct fake *f, uint16_t head, uint16_t count)
{
	uint16_t idx = (uint16_t)vio_get_le(f->h.mem + AVAIL + 2, 2);

	vio_put_le(f->h.mem + AVAIL + 4 + 2 * (idx % QSIZE), head, 2);
	vio_put_le(f->h.mem + AVAIL + 2, (uint16_t)(idx + count), 2);
}

/* Bring an MMIO device up with features (besides VERSION_1) and one queue of QSIZE. */
static struct fake *bring_up(uint64_t drv_features)
{
	struct fake *f = calloc(1, sizeof(*f));
	uint64_t feats = VIO_BIT(VIO_F_VERSION_1) | drv_features;

	assert_non_null(f);

	vio_fake_init(&f->h, MEM_SIZE);
	assert_int_equal(
	    vio_dev_init(&f->dev, VIO_ID_RNG, VIO_BIT(VIO_F_INDIRECT_DESC), 2, 16, &ops, f), 0);
	f->dev.transport = VIO_TRANSPORT_MMIO;
	vio_dev_set_host(&f->dev, &vio_fake_host, &f->h);
	assert_int_equal(vio_test_negotiate(&f->dev, feats), 0);
	assert_int_equal(rd(f, VIO_MMIO_STATUS, 4),
			 VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
	assert_int_equal(vio_test_mmio_queue(&f->dev, 0, QSIZE, DESC, AVAIL, USED), 0);
	assert_int_equal(rd(f, VIO_MMIO_QUEUE_READY, 4), 1);
	assert_int_equal(vio_test_mmio_driver_ok(&f->dev), 0);
	assert_true(vio_dev_running(&f->dev));
	return f;
}

static void tear_down(struct fake *f)
{
	vio_chain_free(&f->chain);
	vio_fake_fini(&f->h);
	free(f);
}

static void assert_broken(struct fake *f, int rc)
{
	assert_int_equal(rc, -EPROTO);
	assert_true(f->dev.status & VIO_S_NEEDS_RESET);
	assert_true(f->dev.isr & VIO_ISR_CONFIG);
	assert_int_equal(f->h.level, 1);
	/* A broken device hands out nothing more. */
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 0);
}

static void test_chain_round_trip(void **state)
{
	struct fake *f = bring_up(0);
	uint8_t out[12], e[8];

	(void)state;
	memcpy(f->h.mem + DATA, "hello ", 6);
	memcpy(f->h.mem + DATA + 0x100, "world!", 6);
	set_desc(f, 0, DATA, 6, VIO_DESC_F_NEXT, 5);
	set_desc(f, 5, DATA + 0x100, 6, VIO_DESC_F_NEXT, 2);
	set_desc(f, 2, DATA + 0x200, 4, VIO_DESC_F_WRITE | VIO_DESC_F_NEXT, 3);
	set_desc(f, 3, DATA + 0x300, 4, VIO_DESC_F_WRITE, 0);
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 0); /* empty */
	publish(f, 0, 1);
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 1);
	assert_int_equal(f->chain.head, 0);
	assert_int_equal(f->chain.n_rd, 2);
	assert_int_equal(f->chain.n_wr, 2);
	assert_int_equal(f->chain.rd_len, 12);
	assert_int_equal(f->chain.wr_len, 8);
	assert_int_equal(vio_chain_read(&f->dev, &f->chain, 0, out, 12), 0);
	assert_memory_equal(out, "hello world!", 12);
	assert_int_equal(vio_chain_read(&f->dev, &f->chain, 4, out, 4), 0);
	assert_memory_equal(out, "o wo", 4);
	assert_int_equal(vio_chain_read(&f->dev, &f->chain, 9, out, 4), -EINVAL);
	assert_int_equal(vio_chain_read(&f->dev, &f->chain, UINT64_MAX, out, 2), -EINVAL);
	assert_int_equal(vio_chain_write(&f->dev, &f->chain, 2, "abcdef", 6), 0);
	assert_memory_equal(f->h.mem + DATA + 0x202, "ab", 2);
	assert_memory_equal(f->h.mem + DATA + 0x300, "cdef", 4);
	assert_int_equal(vio_chain_write(&f->dev, &f->chain, 0, "123456789", 9), -EINVAL);
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 0);
	assert_int_equal(f->h.level, 0);
	assert_int_equal(vio_queue_push(&f->dev, 0, &f->chain, 8), 0);
	memcpy(e, f->h.mem + USED + 4, 8);
	assert_int_equal(vio_get_le(e, 4), 0);
	assert_int_equal(vio_get_le(e + 4, 4), 8);
	assert_int_equal(vio_get_le(f->h.mem + USED + 2, 2), 1);
	assert_int_equal(f->h.level, 1);
	/* InterruptStatus shows it; InterruptACK clears it and lowers the line. */
	assert_int_equal(rd(f, VIO_MMIO_INTERRUPT_STATUS, 4), VIO_ISR_QUEUE);
	vio_fake_wr32(&f->dev, VIO_MMIO_INTERRUPT_ACK, VIO_ISR_QUEUE);
	assert_int_equal(f->h.level, 0);
	assert_false(f->dev.status & VIO_S_NEEDS_RESET);
	tear_down(f);
}

static void test_index_wraps(void **state)
{
	struct fake *f = bring_up(0);

	(void)state;
	/* Start both rings just below the 16-bit wrap. */
	f->dev.q[0].last_avail = f->dev.q[0].avail_idx = 65534;
	f->dev.q[0].used_idx = 65534;
	vio_put_le(f->h.mem + AVAIL + 2, 65534, 2);
	set_desc(f, 1, DATA, 8, VIO_DESC_F_WRITE, 0);
	for (int i = 0; i < 4; i++) {
		publish(f, 1, 1);
		assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 1);
		assert_int_equal(vio_queue_push(&f->dev, 0, &f->chain, 8), 0);
	}
	assert_int_equal(vio_get_le(f->h.mem + USED + 2, 2), 2);
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 0);
	tear_down(f);
}

static void test_head_out_of_range(void **state)
{
	struct fake *f = bring_up(0);

	(void)state;
	publish(f, QSIZE, 1);
	assert_broken(f, vio_queue_pop(&f->dev, 0, &f->chain));
	tear_down(f);
}

static void test_next_out_of_range(void **state)
{
	struct fake *f = bring_up(0);

	(void)state;
	set_desc(f, 0, DATA, 8, VIO_DESC_F_NEXT, 0xffff);
	publish(f, 0, 1);
	assert_broken(f, vio_queue_pop(&f->dev, 0, &f->chain));
	tear_down(f);
}

static void test_loop(void **state)
{
	struct fake *f = bring_up(0);

	(void)state;
	set_desc(f, 0, DATA, 8, VIO_DESC_F_NEXT, 1);
	set_desc(f, 1, DATA, 8, VIO_DESC_F_NEXT, 2);
	set_desc(f, 2, DATA, 8, VIO_DESC_F_NEXT, 0);
	publish(f, 0, 1);
	f->h.reads = f->h.writes = 0;
	assert_broken(f, vio_queue_pop(&f->dev, 0, &f->chain));
	/* Bounded: the avail idx, the ring entry and at most QSIZE descriptors. */
	assert_true((f->h.reads + f->h.writes) <= 2 + QSIZE);
	tear_down(f);
}

static void test_self_loop(void **state)
{
	struct fake *f = bring_up(0);

	(void)state;
	set_desc(f, 4, DATA, 8, VIO_DESC_F_NEXT | VIO_DESC_F_WRITE, 4);
	publish(f, 4, 1);
	assert_broken(f, vio_queue_pop(&f->dev, 0, &f->chain));
	tear_down(f);
}

static void test_avail_jump(void **state)
{
	struct fake *f = bring_up(0);

	(void)state;
	set_desc(f, 0, DATA, 8, 0, 0);
	publish(f, 0, QSIZE + 1);
	assert_broken(f, vio_queue_pop(&f->dev, 0, &f->chain));
	tear_down(f);
}

static void test_full_ring_is_fine(void **state)
{
	struct fake *f = bring_up(0);

	(void)state;
	set_desc(f, 0, DATA, 8, 0, 0);
	publish(f, 0, QSIZE);
	for (unsigned i = 0; i < QSIZE; i++)
		assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 1);
	/* The queue used its budget for this kick: it yields and re-arms the kick. */
	publish(f, 0, 1);
	f->dev.kick_pending = 0;
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 0);
	assert_int_equal(f->dev.kick_pending, 1);
	assert_true(vio_dev_poll(&f->dev));
	assert_int_equal(f->kicks, 1);
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 1);
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 0);
	assert_int_equal(f->dev.kick_pending, 0);
	assert_false(f->dev.status & VIO_S_NEEDS_RESET);
	tear_down(f);
}

static void test_readable_after_writable(void **state)
{
	struct fake *f = bring_up(0);

	(void)state;
	set_desc(f, 0, DATA, 8, VIO_DESC_F_WRITE | VIO_DESC_F_NEXT, 1);
	set_desc(f, 1, DATA, 8, 0, 0);
	publish(f, 0, 1);
	assert_broken(f, vio_queue_pop(&f->dev, 0, &f->chain));
	tear_down(f);
}

static void test_total_length_bounded(void **state)
{
	struct fake *f = bring_up(0);

	(void)state;
	for (unsigned i = 0; i < QSIZE; i++)
		set_desc(f, i, DATA, 0xffffffffu, VIO_DESC_F_NEXT, (uint16_t)(i + 1));
	set_desc(f, QSIZE - 1, DATA, 0xffffffffu, 0, 0);
	publish(f, 0, 1);
	assert_broken(f, vio_queue_pop(&f->dev, 0, &f->chain));
	tear_down(f);
}

static void test_address_wraps(void **state)
{
	struct fake *f = bring_up(0);

	(void)state;
	set_desc(f, 0, UINT64_MAX - 3, 8, 0, 0);
	publish(f, 0, 1);
	assert_broken(f, vio_queue_pop(&f->dev, 0, &f->chain));
	tear_down(f);
}

static void test_ring_outside_memory(void **state)
{
	struct fake *f = bring_up(0);

	(void)state;
	f->dev.q[0].desc = MEM_SIZE + 0x1000; /* as if the driver had put it there */
	publish(f, 0, 1);
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), -EFAULT);
	assert_true(f->dev.status & VIO_S_NEEDS_RESET);
	tear_down(f);
}

static void test_data_outside_memory(void **state)
{
	struct fake *f = bring_up(0);
	uint8_t b[4];

	(void)state;
	set_desc(f, 0, MEM_SIZE + 0x1000, 16, VIO_DESC_F_WRITE, 0);
	publish(f, 0, 1);
	/* The chain is valid; only copying into it fails, and the ring stays usable. */
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 1);
	assert_int_equal(vio_chain_write(&f->dev, &f->chain, 0, "abcd", 4), -EFAULT);
	assert_int_equal(vio_chain_read(&f->dev, &f->chain, 0, b, 1), -EINVAL);
	assert_int_equal(vio_queue_push(&f->dev, 0, &f->chain, 0), 0);
	assert_false(f->dev.status & VIO_S_NEEDS_RESET);
	tear_down(f);
}

static void put_indirect(struct fake *f, uint64_t tab, unsigned i, uint64_t addr, uint32_t len,
			 uint16_t flags, uint16_t next)
{
	vio_test_desc(f->h.mem + tab + 16 * i, addr, len, flags, next);
}

static void test_indirect(void **state)
{
	struct fake *f = bring_up(VIO_BIT(VIO_F_INDIRECT_DESC));
	const uint64_t tab = 0x8000;

	(void)state;
	put_indirect(f, tab, 0, DATA, 16, VIO_DESC_F_NEXT, 2);
	put_indirect(f, tab, 2, DATA + 0x100, 32, VIO_DESC_F_WRITE | VIO_DESC_F_NEXT, 1);
	put_indirect(f, tab, 1, DATA + 0x200, 1, VIO_DESC_F_WRITE, 0);
	set_desc(f, 3, tab, 48, VIO_DESC_F_INDIRECT, 0);
	publish(f, 3, 1);
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 1);
	assert_int_equal(f->chain.head, 3);
	assert_int_equal(f->chain.n_rd, 1);
	assert_int_equal(f->chain.n_wr, 2);
	assert_int_equal(f->chain.wr_len, 33);
	assert_int_equal(f->chain.buf[2].addr, DATA + 0x200);
	/* A loop inside the table. */
	put_indirect(f, tab, 1, DATA + 0x200, 1, VIO_DESC_F_WRITE | VIO_DESC_F_NEXT, 2);
	publish(f, 3, 1);
	assert_broken(f, vio_queue_pop(&f->dev, 0, &f->chain));
	tear_down(f);
}

static void test_indirect_rules(void **state)
{
	static const struct {
		uint32_t len;
		uint16_t flags;
		uint16_t inner_flags;
		bool negotiate;
	} cases[] = {
	    {32, VIO_DESC_F_INDIRECT, 0, false},			 /* not negotiated */
	    {24, VIO_DESC_F_INDIRECT, 0, true},				 /* not a multiple of 16 */
	    {0, VIO_DESC_F_INDIRECT, 0, true},				 /* empty */
	    {16 * (VIO_INDIRECT_MAX + 1), VIO_DESC_F_INDIRECT, 0, true}, /* too long */
	    {32, VIO_DESC_F_INDIRECT | VIO_DESC_F_NEXT, 0, true},	 /* with NEXT */
	    {32, VIO_DESC_F_INDIRECT, VIO_DESC_F_INDIRECT, true},	 /* nested */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fake *f = bring_up(cases[i].negotiate ? VIO_BIT(VIO_F_INDIRECT_DESC) : 0);

		put_indirect(f, 0x8000, 0, DATA, 16, cases[i].inner_flags, 0);
		set_desc(f, 0, 0x8000, cases[i].len, cases[i].flags, 1);
		publish(f, 0, 1);
		assert_broken(f, vio_queue_pop(&f->dev, 0, &f->chain));
		tear_down(f);
	}
}

static void test_features_and_status(void **state)
{
	struct fake *f = calloc(1, sizeof(*f));

	(void)state;
	assert_non_null(f);
	vio_fake_init(&f->h, MEM_SIZE);
	assert_int_equal(
	    vio_dev_init(&f->dev, VIO_ID_BLOCK,
			 VIO_BIT(VIO_F_ACCESS_PLATFORM) | VIO_BIT(VIO_F_EVENT_IDX) | VIO_BIT(9), 1,
			 16, &ops, f),
	    0);
	assert_int_equal(f->dev.features, VIO_BIT(VIO_F_VERSION_1) | VIO_BIT(9));
	vio_dev_set_host(&f->dev, &vio_fake_host, &f->h);
	f->dev.transport = VIO_TRANSPORT_MMIO;
	assert_int_equal(rd(f, VIO_MMIO_MAGIC, 4), VIO_MMIO_MAGIC_VALUE);
	assert_int_equal(rd(f, VIO_MMIO_VERSION, 4), 2);
	assert_int_equal(rd(f, VIO_MMIO_DEVICE_ID, 4), VIO_ID_BLOCK);
	vio_fake_wr32(&f->dev, VIO_MMIO_DEVICE_FEAT_SEL, 1);
	assert_int_equal(rd(f, VIO_MMIO_DEVICE_FEATURES, 4), 1);
	vio_fake_wr32(&f->dev, VIO_MMIO_DEVICE_FEAT_SEL, 0);
	assert_int_equal(rd(f, VIO_MMIO_DEVICE_FEATURES, 4), 1u << 9);
	/* FEATURES_OK without VERSION_1 is refused. */
	vio_fake_wr32(&f->dev, VIO_MMIO_STATUS,
		      VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
	assert_int_equal(rd(f, VIO_MMIO_STATUS, 4), VIO_S_ACKNOWLEDGE | VIO_S_DRIVER);
	vio_fake_wr32(&f->dev, VIO_MMIO_DRIVER_FEAT_SEL, 1);
	vio_fake_wr32(&f->dev, VIO_MMIO_DRIVER_FEATURES, 1 | 2); /* VERSION_1 and ACCESS_PLATFORM */
	vio_fake_wr32(&f->dev, VIO_MMIO_STATUS,
		      VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
	assert_false(rd(f, VIO_MMIO_STATUS, 4) & VIO_S_FEATURES_OK);
	vio_fake_wr32(&f->dev, VIO_MMIO_DRIVER_FEATURES, 1);
	vio_fake_wr32(&f->dev, VIO_MMIO_STATUS,
		      VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
	assert_true(rd(f, VIO_MMIO_STATUS, 4) & VIO_S_FEATURES_OK);
	/* Features are frozen after FEATURES_OK. */
	vio_fake_wr32(&f->dev, VIO_MMIO_DRIVER_FEATURES, 3);
	assert_int_equal(f->dev.driver_features, VIO_BIT(VIO_F_VERSION_1));
	/* A queue size that is not a power of two is refused at enable time. */
	vio_fake_wr32(&f->dev, VIO_MMIO_QUEUE_SEL, 0);
	assert_int_equal(rd(f, VIO_MMIO_QUEUE_NUM_MAX, 4), 16);
	vio_fake_wr32(&f->dev, VIO_MMIO_QUEUE_NUM, 12);
	vio_fake_wr32(&f->dev, VIO_MMIO_QUEUE_READY, 1);
	assert_int_equal(rd(f, VIO_MMIO_QUEUE_READY, 4), 0);
	assert_true(f->dev.status & VIO_S_NEEDS_RESET);
	/* Reset clears everything and lowers the line. */
	vio_fake_wr32(&f->dev, VIO_MMIO_STATUS, 0);
	assert_int_equal(rd(f, VIO_MMIO_STATUS, 4), 0);
	assert_int_equal(f->dev.driver_features, 0);
	assert_int_equal(rd(f, VIO_MMIO_QUEUE_NUM, 4), 16);
	assert_int_equal(f->h.level, 0);
	/* Queues that do not exist read a maximum of 0. */
	vio_fake_wr32(&f->dev, VIO_MMIO_QUEUE_SEL, 5);
	assert_int_equal(rd(f, VIO_MMIO_QUEUE_NUM_MAX, 4), 0);
	vio_fake_fini(&f->h);
	free(f);
}

static void test_pci_common_and_isr(void **state)
{
	struct fake *f = calloc(1, sizeof(*f));

	(void)state;
	assert_non_null(f);
	vio_fake_init(&f->h, MEM_SIZE);
	assert_int_equal(vio_dev_init(&f->dev, VIO_ID_CONSOLE, 0, 2, 32, &ops, f), 0);
	vio_dev_set_host(&f->dev, &vio_fake_host, &f->h);
	f->dev.transport = VIO_TRANSPORT_PCI;
	f->dev.config_len = 4;
	memcpy(f->dev.config, "\x01\x02\x03\x04", 4);
	/* A BAR base in the address does not matter: the offset is masked. */
	const uint64_t bar = 0xfebf0000;

	assert_int_equal(rd(f, bar + VIO_PCI_NUM_QUEUES, 2), 2);
	assert_int_equal(rd(f, bar + VIO_PCI_MSIX_CONFIG, 2), VIO_PCI_NO_VECTOR);
	wr(f, bar + VIO_PCI_DFSELECT, 4, 1);
	assert_int_equal(rd(f, bar + VIO_PCI_DF, 4), 1);
	wr(f, bar + VIO_PCI_Q_SELECT, 2, 1);
	assert_int_equal(rd(f, bar + VIO_PCI_Q_SIZE, 2), 32);
	assert_int_equal(rd(f, bar + VIO_PCI_Q_NOTIFY_OFF, 2), 1);
	wr(f, bar + VIO_PCI_Q_SIZE, 2, 8);
	wr(f, bar + VIO_PCI_Q_DESC, 8, 0x123456789abc0ull);
	wr(f, bar + VIO_PCI_Q_DRIVER, 4, 0x2000);
	wr(f, bar + VIO_PCI_Q_DRIVER + 4, 4, 0x1);
	assert_int_equal(rd(f, bar + VIO_PCI_Q_DESC, 8), 0x123456789abc0ull);
	assert_int_equal(rd(f, bar + VIO_PCI_Q_DRIVER, 8), 0x100002000ull);
	assert_int_equal(f->dev.q[1].size, 8);
	assert_int_equal(f->dev.q[0].size, 32);
	assert_int_equal(rd(f, bar + COREIO_VPCI_DEVICE_OFF + 1, 2), 0x0302);
	assert_int_equal(rd(f, bar + COREIO_VPCI_DEVICE_OFF + 3, 4), 0x04);
	/* Notify: queue 1 at its doorbell, only after DRIVER_OK does polling kick it. */
	wr(f, bar + COREIO_VPCI_NOTIFY_OFF + COREIO_VPCI_NOTIFY_MULT * 1, 2, 1);
	assert_int_equal(f->dev.kick_pending, 2);
	assert_false(vio_dev_poll(&f->dev));
	assert_int_equal(f->kicks, 0);
	/* ISR: reading clears it and lowers the line. */
	vio_dev_interrupt(&f->dev, VIO_ISR_QUEUE);
	assert_int_equal(f->h.level, 1);
	assert_int_equal(rd(f, bar + COREIO_VPCI_ISR_OFF, 1), VIO_ISR_QUEUE);
	assert_int_equal(f->h.level, 0);
	assert_int_equal(rd(f, bar + COREIO_VPCI_ISR_OFF, 1), 0);
	/* Status through the common config. */
	wr(f, bar + VIO_PCI_GFSELECT, 4, 1);
	wr(f, bar + VIO_PCI_GF, 4, 1);
	wr(f, bar + VIO_PCI_STATUS, 1, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
	assert_int_equal(rd(f, bar + VIO_PCI_STATUS, 1),
			 VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
	wr(f, bar + VIO_PCI_Q_SELECT, 2, 0);
	wr(f, bar + VIO_PCI_Q_DESC, 8, 0x1000);
	wr(f, bar + VIO_PCI_Q_DRIVER, 8, 0x2000);
	wr(f, bar + VIO_PCI_Q_DEVICE, 8, 0x3000);
	wr(f, bar + VIO_PCI_Q_ENABLE, 2, 1);
	assert_int_equal(rd(f, bar + VIO_PCI_Q_ENABLE, 2), 1);
	wr(f, bar + VIO_PCI_STATUS, 1, 0x0f);
	assert_true(vio_dev_running(&f->dev));
	/* DRIVER_OK kicks every enabled queue once (queue 1 is not enabled). */
	assert_true(vio_dev_poll(&f->dev));
	assert_int_equal(f->kicks, 1);
	/* Accesses of any length anywhere in the BAR never fail. */
	uint8_t big[32];

	for (uint64_t off = 0; off < COREIO_VPCI_BAR_SIZE; off += 0x7f) {
		assert_int_equal(vio_transport_read(&f->dev, bar + off, sizeof(big), big), 0);
		assert_int_equal(vio_transport_write(&f->dev, bar + off + 0x2000, 1, big), 0);
	}
	vio_fake_fini(&f->h);
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_chain_round_trip),
	    cmocka_unit_test(test_index_wraps),
	    cmocka_unit_test(test_head_out_of_range),
	    cmocka_unit_test(test_next_out_of_range),
	    cmocka_unit_test(test_loop),
	    cmocka_unit_test(test_self_loop),
	    cmocka_unit_test(test_avail_jump),
	    cmocka_unit_test(test_full_ring_is_fine),
	    cmocka_unit_test(test_readable_after_writable),
	    cmocka_unit_test(test_total_length_bounded),
	    cmocka_unit_test(test_address_wraps),
	    cmocka_unit_test(test_ring_outside_memory),
	    cmocka_unit_test(test_data_outside_memory),
	    cmocka_unit_test(test_indirect),
	    cmocka_unit_test(test_indirect_rules),
	    cmocka_unit_test(test_features_and_status),
	    cmocka_unit_test(test_pci_common_and_isr),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
