/* cmocka tests of the virtio library's DMA pattern: blocking round trips per request, posted
 * writes, their order, their errors, against a fake host that posts like libcoreio. */
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

#define MEM_SIZE  (4u << 20)
#define QSIZE	  16u
#define DESC	  0x10000u
#define LNX_AVAIL (DESC + 16u * QSIZE) /* Linux: the avail ring right after the table */
#define LNX_USED  (DESC + 0x1000u)
#define FAR_AVAIL 0x20000u /* a driver that puts the rings apart */
#define FAR_USED  0x30000u
#define HDR	  0x40000u
#define DATA	  0x50000u
#define STATUS	  0x60000u
#define TABLES	  0x70000u
#define BIG	  0x100000u /* a 1 MiB buffer */
#define DLEN	  4096u
#define S_IOERR	  1u

struct fake {
	struct vio_fake h;	/* first: the host ops' opaque */
	unsigned used_at_raise; /* used->idx in guest memory when the line last went up */
	uint64_t used;		/* the used ring's address */
	struct vio_dev dev;
	struct vio_chain chain;
};

/* The line goes up: note how far the used ring was in guest memory. */
static void on_raise(struct vio_fake *h)
{
	struct fake *f = (struct fake *)h;

	if (vio_fake_in_mem(h, f->used + 2, 2))
		f->used_at_raise = (unsigned)vio_get_le(h->mem + f->used + 2, 2);
}

/* A block-device-like request handler: header in, data and a status byte out, all posted. */
static void blk_like(struct vio_dev *d, unsigned q)
{
	struct fake *f = d->priv;
	static uint8_t data[BIG];

	while (vio_queue_pop(d, q, &f->chain) > 0) {
		uint8_t hdr[16], st = 0;
		uint32_t written = 0;

		vio_chain_on_error(&f->chain, 1, S_IOERR);
		if (vio_chain_read(d, &f->chain, 0, hdr, sizeof(hdr)) == 0) {
			size_t n = (size_t)f->chain.wr_len - 1;

			memset(data, hdr[8], n);
			assert_int_equal(vio_chain_post(d, &f->chain, 0, data, n), 0);
			written = (uint32_t)n;
		} else {
			st = S_IOERR;
		}
		assert_int_equal(vio_chain_post(d, &f->chain, f->chain.wr_len - 1, &st, 1), 0);
		assert_int_equal(vio_queue_push(d, q, &f->chain, written + 1), 0);
	}
}

static const struct vio_dev_ops ops = {.queue_kick = blk_like};

/*
 * An MMIO device with one queue of QSIZE at desc DESC, avail and used as given, on host ops
 * host, with EVENT_IDX negotiated when ev.
 */
static struct fake *bring_up_on(uint64_t avail, uint64_t used, const struct vio_host_ops *host,
				bool ev)
{
	struct fake *f = calloc(1, sizeof(*f));
	uint64_t feats = VIO_BIT(VIO_F_VERSION_1) | VIO_BIT(VIO_F_INDIRECT_DESC) |
			 (ev ? VIO_BIT(VIO_F_EVENT_IDX) : 0);

	assert_non_null(f);
	vio_fake_init(&f->h, MEM_SIZE);
	f->h.on_raise = on_raise;
	f->used = used;
	assert_int_equal(
	    vio_dev_init(&f->dev, VIO_ID_BLOCK, VIO_BIT(VIO_F_INDIRECT_DESC), 1, 256, &ops, f), 0);
	vio_dev_set_event_idx(&f->dev, ev);
	f->dev.transport = VIO_TRANSPORT_MMIO;
	vio_dev_set_host(&f->dev, host, &f->h);
	assert_int_equal(vio_test_negotiate(&f->dev, feats), 0);
	assert_int_equal(f->dev.driver_features, feats);
	assert_int_equal(
	    vio_test_mmio_queue(&f->dev, 0, QSIZE, DESC, (uint32_t)avail, (uint32_t)used), 0);
	assert_int_equal(vio_test_mmio_driver_ok(&f->dev), 0);
	assert_true(vio_dev_running(&f->dev));
	vio_dev_poll(&f->dev); /* the DRIVER_OK kick: an empty ring */
	f->h.reads = f->h.writes = f->h.posts = f->h.readvs = 0;
	return f;
}

/* The same on a host that posts and has no dma_readv, without EVENT_IDX. */
static struct fake *bring_up(uint64_t avail, uint64_t used)
{
	return bring_up_on(avail, used, &vio_fake_host_posting, false);
}

static void tear_down(struct fake *f)
{
	vio_fake_drain(&f->h);
	vio_chain_free(&f->chain);
	vio_fake_fini(&f->h);
	free(f);
}

static void put_desc(struct fake *f, uint64_t tab, unsigned i, uint64_t addr, uint32_t len,
		     uint16_t flags, uint16_t next)
{
	vio_test_desc(f->h.mem + tab + 16 * i, addr, len, flags, next);
}

/*
 * Request r: a header (sector byte r), DLEN data bytes, a status byte, as
 * three descriptors 3r, 3r+1, 3r+2 of the table at tab (or an indirect
 * table at TABLES + 64r when indirect). Returns the head for the ring.
 */
static uint16_t make_request(struct fake *f, unsigned r, bool indirect, uint64_t data)
{
	uint64_t tab = indirect ? TABLES + 64u * r : DESC;
	unsigned i = indirect ? 0 : 3 * r;

	memset(f->h.mem + HDR + 16 * r, 0, 16);
	f->h.mem[HDR + 16 * r + 8] = (uint8_t)(0x40 + r);
	f->h.mem[STATUS + r] = 0xee;
	put_desc(f, tab, i, HDR + 16 * r, 16, VIO_DESC_F_NEXT, (uint16_t)(i + 1));
	put_desc(f, tab, i + 1, data, DLEN, VIO_DESC_F_WRITE | VIO_DESC_F_NEXT, (uint16_t)(i + 2));
	put_desc(f, tab, i + 2, STATUS + r, 1, VIO_DESC_F_WRITE, 0);
	if (!indirect)
		return (uint16_t)i;
	put_desc(f, DESC, r, tab, 48, VIO_DESC_F_INDIRECT, 0);
	return (uint16_t)r;
}

/* Publish heads in the avail ring at avail and advance its idx. */
static void publish(struct fake *f, uint64_t avail, const uint16_t *heads, unsigned n)
{
	uint16_t idx = (uint16_t)vio_get_le(f->h.mem + avail + 2, 2);

	for (unsigned k = 0; k < n; k++)
		vio_put_le(f->h.mem + avail + 4 + 2 * ((idx + k) % QSIZE), heads[k], 2);
	vio_put_le(f->h.mem + avail + 2, (uint16_t)(idx + n), 2);
}

/* The driver's doorbell, then the main loop's poll. */
static void notify(struct fake *f)
{
	vio_fake_wr32(&f->dev, VIO_MMIO_QUEUE_NOTIFY, 0);
	assert_true(vio_dev_poll(&f->dev));
}

static unsigned used_idx(struct fake *f)
{
	return (unsigned)vio_get_le(f->h.mem + f->used + 2, 2);
}

static void used_elem(struct fake *f, unsigned slot, uint32_t *id, uint32_t *len)
{
	*id = (uint32_t)vio_get_le(f->h.mem + f->used + 4 + 8 * (slot % QSIZE), 4);
	*len = (uint32_t)vio_get_le(f->h.mem + f->used + 8 + 8 * (slot % QSIZE), 4);
}

/* Where gpa sits in the order writes reached memory; fails if it never did. */
static unsigned log_pos(struct fake *f, uint64_t gpa)
{
	assert_true(f->h.norder <= VIO_FAKE_MAX_ORDER);
	for (unsigned i = 0; i < f->h.norder; i++)
		if (f->h.order[i] == gpa)
			return i;
	fail_msg("no write reached 0x%llx", (unsigned long long)gpa);
	return 0;
}

/* Request 0 finished: data, status OK, used element and index, the interrupt after them. */
static void check_done(struct fake *f, uint16_t head, uint64_t data)
{
	uint32_t id, len;

	assert_int_equal(used_idx(f), 1);
	used_elem(f, 0, &id, &len);
	assert_int_equal(id, head);
	assert_int_equal(len, DLEN + 1);
	assert_int_equal(f->h.mem[STATUS], 0);
	for (unsigned i = 0; i < DLEN; i++)
		assert_int_equal(f->h.mem[data + i], 0x40);
	assert_int_equal(f->h.level, 1);
	assert_int_equal(f->used_at_raise, 1);
	assert_int_equal(vio_fake_rd32(&f->dev, VIO_MMIO_INTERRUPT_STATUS), VIO_ISR_QUEUE);
	/* Data and status reach memory before the element, the element before the index. */
	assert_true(log_pos(f, data) < log_pos(f, f->used + 4));
	assert_true(log_pos(f, STATUS) < log_pos(f, f->used + 4));
	assert_true(log_pos(f, f->used + 4) < log_pos(f, f->used + 2));
	assert_false(f->dev.status & VIO_S_NEEDS_RESET);
}

/* A 3-descriptor request with Linux's ring layout: 3 blocking reads, no blocking write. */
static void test_blk_request_linux_layout(void **state)
{
	struct fake *f = bring_up(LNX_AVAIL, LNX_USED);
	uint16_t head = make_request(f, 0, false, DATA);

	(void)state;
	publish(f, LNX_AVAIL, &head, 1);
	notify(f);
	/* avail->idx; the table and the ring in one DMA; the header. */
	assert_int_equal(f->h.reads, 3);
	assert_int_equal(f->h.writes, 0);
	assert_int_equal(f->h.posts, 2); /* data, status */
	/* Nothing reaches the used ring before the data writes completed. */
	assert_int_equal(used_idx(f), 0);
	assert_int_equal(f->h.level, 0);
	assert_int_equal(vio_fake_process(&f->h), 2);
	assert_int_equal(f->h.posts, 4); /* used element, used->idx */
	assert_int_equal(f->h.level, 0); /* their completion is not in yet */
	assert_int_equal(vio_fake_process(&f->h), 2);
	check_done(f, head, DATA);
	assert_int_equal(f->h.reads, 3);
	assert_int_equal(f->h.writes, 0);
	assert_int_equal(f->dev.stat_chains, 1);
	/* A kick with nothing new costs one read. */
	notify(f);
	assert_int_equal(f->h.reads, 4);
	tear_down(f);
}

/* The same through an indirect table: one more read. */
static void test_blk_request_indirect(void **state)
{
	struct fake *f = bring_up(LNX_AVAIL, LNX_USED);
	uint16_t head = make_request(f, 0, true, DATA);

	(void)state;
	publish(f, LNX_AVAIL, &head, 1);
	notify(f);
	assert_int_equal(f->h.reads, 4);
	assert_int_equal(f->h.writes, 0);
	vio_fake_drain(&f->h);
	check_done(f, head, DATA);
	assert_int_equal(f->h.writes, 0);
	tear_down(f);
}

/* Rings apart: the ring entries and the table are two reads. */
static void test_blk_request_far_rings(void **state)
{
	struct fake *f = bring_up(FAR_AVAIL, FAR_USED);
	uint16_t head = make_request(f, 0, false, DATA);

	(void)state;
	publish(f, FAR_AVAIL, &head, 1);
	notify(f);
	assert_int_equal(f->h.reads, 4);
	assert_int_equal(f->h.writes, 0);
	vio_fake_drain(&f->h);
	check_done(f, head, DATA);
	tear_down(f);
}

/* Five requests in one kick: one index read, one table read, a header each. */
static void test_batch(void **state)
{
	struct fake *f = bring_up(LNX_AVAIL, LNX_USED);
	uint16_t heads[5];

	(void)state;
	for (unsigned r = 0; r < 5; r++)
		heads[r] = make_request(f, r, false, DATA + DLEN * r);
	publish(f, LNX_AVAIL, heads, 5);
	notify(f);
	assert_int_equal(f->h.reads, 2 + 5);
	assert_int_equal(f->h.writes, 0);
	vio_fake_drain(&f->h);
	assert_int_equal(used_idx(f), 5);
	for (unsigned r = 0; r < 5; r++) {
		uint32_t id, len;

		used_elem(f, r, &id, &len);
		assert_int_equal(id, heads[r]);
		assert_int_equal(len, DLEN + 1);
		assert_int_equal(f->h.mem[DATA + DLEN * r], 0x40 + r);
	}
	assert_int_equal(f->used_at_raise, 5);
	assert_int_equal(f->h.raises, 1);
	tear_down(f);
}

/* Ring positions across the 16-bit wrap and across the end of the ring. */
static void test_wrap(void **state)
{
	struct fake *f = bring_up(FAR_AVAIL, FAR_USED);
	struct vio_queue *vq = &f->dev.q[0];
	uint16_t heads[4];

	(void)state;
	vq->last_avail = vq->avail_idx = vq->used_idx = 65534;
	vio_put_le(f->h.mem + FAR_AVAIL + 2, 65534, 2);
	vio_put_le(f->h.mem + FAR_USED + 2, 65534, 2);
	for (unsigned r = 0; r < 4; r++)
		heads[r] = make_request(f, r, false, DATA + DLEN * r);
	publish(f, FAR_AVAIL, heads, 4);
	notify(f);
	/* idx, the whole (small) ring at once, the table, 4 headers. */
	assert_int_equal(f->h.reads, 3 + 4);
	vio_fake_drain(&f->h);
	assert_int_equal(used_idx(f), 2);
	for (unsigned r = 0; r < 4; r++) {
		uint32_t id, len;

		used_elem(f, 65534u + r, &id, &len);
		assert_int_equal(id, heads[r]);
		assert_int_equal(f->h.mem[DATA + DLEN * r], 0x40 + r);
	}
	assert_false(f->dev.status & VIO_S_NEEDS_RESET);
	tear_down(f);
}

/* A data buffer outside guest memory: the request says IOERR, the device is fine. */
static void test_data_fault_is_ioerr(void **state)
{
	struct fake *f = bring_up(LNX_AVAIL, LNX_USED);
	uint16_t head = make_request(f, 0, false, MEM_SIZE + 0x1000);
	uint32_t id, len;

	(void)state;
	publish(f, LNX_AVAIL, &head, 1);
	notify(f);
	assert_int_equal(f->h.writes, 0);
	vio_fake_drain(&f->h);
	assert_int_equal(used_idx(f), 1);
	used_elem(f, 0, &id, &len);
	assert_int_equal(id, head);
	assert_int_equal(len, 1);
	assert_int_equal(f->h.mem[STATUS], S_IOERR);
	assert_true(log_pos(f, STATUS) < log_pos(f, LNX_USED + 4));
	assert_false(f->dev.status & VIO_S_NEEDS_RESET);
	assert_int_equal(f->dev.stat_post_errors, 1);
	assert_int_equal(f->h.writes, 0);
	tear_down(f);
}

/* A used ring outside guest memory: the posted write's failure breaks the device. */
static void test_used_ring_fault_breaks(void **state)
{
	struct fake *f = bring_up(LNX_AVAIL, MEM_SIZE + 0x1000);
	uint16_t head = make_request(f, 0, false, DATA);

	(void)state;
	publish(f, LNX_AVAIL, &head, 1);
	notify(f);
	assert_false(f->dev.status & VIO_S_NEEDS_RESET);
	vio_fake_drain(&f->h);
	assert_true(f->dev.status & VIO_S_NEEDS_RESET);
	assert_true(vio_fake_rd32(&f->dev, VIO_MMIO_INTERRUPT_STATUS) & VIO_ISR_CONFIG);
	assert_int_equal(f->h.level, 1);
	tear_down(f);
}

/* A driver reset waits for the writes in flight; what waited on them is forgotten. */
static void test_reset_with_writes_in_flight(void **state)
{
	struct fake *f = bring_up(LNX_AVAIL, LNX_USED);
	uint16_t head = make_request(f, 0, false, DATA);

	(void)state;
	publish(f, LNX_AVAIL, &head, 1);
	notify(f);
	assert_int_equal(f->h.applied, 0);
	vio_fake_wr32(&f->dev, VIO_MMIO_STATUS, 0);
	/* One blocking read behind the writes: they are in memory before status reads 0. */
	assert_int_equal(f->h.applied, 2);
	assert_int_equal(f->h.reads, 4);
	assert_int_equal(vio_fake_rd32(&f->dev, VIO_MMIO_STATUS), 0);
	vio_fake_drain(&f->h);
	assert_int_equal(used_idx(f), 0);
	assert_int_equal(f->h.level, 0);
	assert_int_equal(f->h.raises, 0);
	/* No writes in flight: a reset costs nothing. */
	vio_fake_wr32(&f->dev, VIO_MMIO_STATUS, 0);
	assert_int_equal(f->h.reads, 4);
	tear_down(f);
}

/* A host that cannot post (shared memory): every write blocking, in order, as before. */
static void test_no_post_host(void **state)
{
	struct fake *f = bring_up(LNX_AVAIL, LNX_USED);
	uint16_t head = make_request(f, 0, false, DATA);

	(void)state;
	f->h.no_post = true;
	publish(f, LNX_AVAIL, &head, 1);
	notify(f);
	assert_int_equal(f->h.reads, 3);
	assert_int_equal(f->h.posts, 0);
	assert_int_equal(f->h.writes, 4); /* data, status, element, index */
	check_done(f, head, DATA);
	/* A data fault is still IOERR. */
	head = make_request(f, 1, false, MEM_SIZE + 0x1000);
	publish(f, LNX_AVAIL, &head, 1);
	notify(f);
	assert_int_equal(used_idx(f), 2);
	assert_int_equal(f->h.mem[STATUS + 1], S_IOERR);
	tear_down(f);
}

/* Posted data is bounded: past VIO_POST_MAX writes block, past half of it pop yields. */
static void test_post_memory_bound(void **state)
{
	struct fake *f = bring_up(LNX_AVAIL, LNX_USED);
	uint16_t heads[2];
	static uint8_t chunk[BIG];
	unsigned n = VIO_POST_MAX / BIG;

	(void)state;
	put_desc(f, DESC, 0, BIG, BIG, VIO_DESC_F_WRITE, 0);
	heads[0] = 0;
	heads[1] = make_request(f, 1, false, DATA);
	publish(f, LNX_AVAIL, heads, 2);
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 1);
	for (unsigned i = 0; i <= n; i++)
		assert_int_equal(vio_chain_post(&f->dev, &f->chain, 0, chunk, BIG), 0);
	assert_int_equal(f->h.posts, n);
	assert_int_equal(f->h.writes, 1);
	assert_int_equal(vio_queue_push(&f->dev, 0, &f->chain, BIG), 0);
	f->dev.kick_pending = 0;
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 0);
	assert_int_equal(f->dev.post_stalled, 1);
	vio_fake_drain(&f->h);
	assert_int_equal(f->dev.post_stalled, 0);
	assert_int_equal(f->dev.kick_pending, 1);
	assert_int_equal(f->dev.post_bytes, 0);
	assert_true(vio_dev_poll(&f->dev));
	vio_fake_drain(&f->h);
	assert_int_equal(used_idx(f), 2);
	tear_down(f);
}

/* ---- A host with dma_readv: the index and the merged span in one round trip ---- */

/* Linux's layout: the index and the span in one readv, then the header: 2 round trips. */
static void test_readv_linux_layout(void **state)
{
	struct fake *f = bring_up_on(LNX_AVAIL, LNX_USED, &vio_fake_host_readv, false);
	uint16_t head = make_request(f, 0, false, DATA);

	(void)state;
	publish(f, LNX_AVAIL, &head, 1);
	notify(f);
	assert_int_equal(f->h.reads, 2);
	assert_int_equal(f->h.readvs, 1);
	/* The index (4 bytes) and the table up to used_event in that one. */
	assert_int_equal(f->h.read_len[0], 4 + (LNX_AVAIL - DESC) + 4 + 2 * QSIZE + 2);
	assert_int_equal(f->h.read_len[1], 16);
	assert_int_equal(f->h.writes, 0);
	vio_fake_drain(&f->h);
	check_done(f, head, DATA);
	assert_int_equal(f->h.reads, 2);
	/* The next request (the table cached from the last one): 2 again. */
	head = make_request(f, 1, false, DATA + DLEN);
	publish(f, LNX_AVAIL, &head, 1);
	notify(f);
	vio_fake_drain(&f->h);
	assert_int_equal(f->h.reads, 4);
	assert_int_equal(f->h.readvs, 2);
	assert_int_equal(used_idx(f), 2);
	assert_int_equal(f->h.mem[DATA + DLEN], 0x41);
	assert_int_equal(f->h.mem[STATUS + 1], 0);
	/* A kick with nothing new still costs one round trip. */
	notify(f);
	assert_int_equal(f->h.reads, 5);
	assert_false(f->dev.status & VIO_S_NEEDS_RESET);
	tear_down(f);
}

/* Through an indirect table: readv, the table, the header. */
static void test_readv_indirect(void **state)
{
	struct fake *f = bring_up_on(LNX_AVAIL, LNX_USED, &vio_fake_host_readv, false);
	uint16_t head = make_request(f, 0, true, DATA);

	(void)state;
	publish(f, LNX_AVAIL, &head, 1);
	notify(f);
	assert_int_equal(f->h.reads, 3);
	assert_int_equal(f->h.readvs, 1);
	vio_fake_drain(&f->h);
	check_done(f, head, DATA);
	tear_down(f);
}

/* Five requests in one kick: one readv, a header each. */
static void test_readv_batch(void **state)
{
	struct fake *f = bring_up_on(LNX_AVAIL, LNX_USED, &vio_fake_host_readv, false);
	uint16_t heads[5];

	(void)state;
	for (unsigned r = 0; r < 5; r++)
		heads[r] = make_request(f, r, false, DATA + DLEN * r);
	publish(f, LNX_AVAIL, heads, 5);
	notify(f);
	assert_int_equal(f->h.reads, 1 + 5);
	assert_int_equal(f->h.readvs, 1);
	vio_fake_drain(&f->h);
	assert_int_equal(used_idx(f), 5);
	for (unsigned r = 0; r < 5; r++)
		assert_int_equal(f->h.mem[DATA + DLEN * r], 0x40 + r);
	tear_down(f);
}

/* Rings apart, or EVENT_IDX: the op is not used, the reads are those without it. */
static void test_readv_not_used(void **state)
{
	struct fake *f = bring_up_on(FAR_AVAIL, FAR_USED, &vio_fake_host_readv, false);
	uint16_t head = make_request(f, 0, false, DATA);

	(void)state;
	publish(f, FAR_AVAIL, &head, 1);
	notify(f);
	assert_int_equal(f->h.reads, 4);
	assert_int_equal(f->h.readvs, 0);
	vio_fake_drain(&f->h);
	check_done(f, head, DATA);
	tear_down(f);

	f = bring_up_on(LNX_AVAIL, LNX_USED, &vio_fake_host_readv, true);
	head = make_request(f, 0, false, DATA);
	publish(f, LNX_AVAIL, &head, 1);
	notify(f);
	/* avail->idx; the table and ring (confirming avail_event); the header. */
	assert_int_equal(f->h.reads, 3);
	assert_int_equal(f->h.readvs, 0);
	vio_fake_drain(&f->h);
	vio_dev_poll(&f->dev);
	vio_fake_drain(&f->h);
	assert_int_equal(used_idx(f), 1);
	assert_int_equal(f->h.mem[STATUS], 0);
	assert_false(f->dev.status & VIO_S_NEEDS_RESET);
	tear_down(f);
}

static int readv_calls;

/* A dma_readv that fails as if the span between table and ring were not DMA-able. */
static int readv_efault(void *opaque, const struct vio_dma_seg *seg, unsigned n)
{
	(void)opaque, (void)seg, (void)n;
	readv_calls++;
	return -EFAULT;
}

/* A failing readv falls back to the reads without the op; the device stays fine. */
static void test_readv_fault_falls_back(void **state)
{
	struct vio_host_ops host = vio_fake_host_readv;
	struct fake *f;
	uint16_t head;

	(void)state;
	host.dma_readv = readv_efault;
	f = bring_up_on(LNX_AVAIL, LNX_USED, &host, false);
	readv_calls = 0; /* (the DRIVER_OK kick tried it too) */
	head = make_request(f, 0, false, DATA);
	publish(f, LNX_AVAIL, &head, 1);
	notify(f);
	assert_int_equal(readv_calls, 1);
	assert_int_equal(f->h.reads, 3); /* the index, the merged span, the header */
	vio_fake_drain(&f->h);
	check_done(f, head, DATA);
	tear_down(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_blk_request_linux_layout),
	    cmocka_unit_test(test_blk_request_indirect),
	    cmocka_unit_test(test_blk_request_far_rings),
	    cmocka_unit_test(test_batch),
	    cmocka_unit_test(test_wrap),
	    cmocka_unit_test(test_data_fault_is_ioerr),
	    cmocka_unit_test(test_used_ring_fault_breaks),
	    cmocka_unit_test(test_reset_with_writes_in_flight),
	    cmocka_unit_test(test_no_post_host),
	    cmocka_unit_test(test_post_memory_bound),
	    cmocka_unit_test(test_readv_linux_layout),
	    cmocka_unit_test(test_readv_indirect),
	    cmocka_unit_test(test_readv_batch),
	    cmocka_unit_test(test_readv_not_used),
	    cmocka_unit_test(test_readv_fault_falls_back),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
