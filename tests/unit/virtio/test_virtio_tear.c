/* cmocka tests of the order of the ring reads against DMA copies that tear: the guest publishes a
 * chain in the middle of any blocking read, and the device must never take that chain's ring
 * entry or descriptors from bytes copied before the avail->idx read that covers it. */
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

/*
 * One blocking DMA read is one copy on the VM side (a memcpy of guest RAM
 * while the vCPUs run), cut by libcoreio into pieces issued in ascending
 * order (32-byte-aligned pieces in the base wire format), and nothing
 * promises the order of the bytes inside a copy. So the fake host here
 * copies a read in two parts, either order, and lets the guest publish a
 * new chain in between, at every 32-byte boundary of every read of a
 * request. A device that took descriptors or ring entries from the same
 * DMA as the avail->idx that made them valid (rather than from a read
 * issued after it) would use the stale descriptors of a reused slot here
 * and write to the old request's buffers.
 *
 * With a host that has dma_readv (the index and the merged span in one
 * round trip, copied in that order), each segment is a read of its own
 * here: torn inside as above, and also before it (so between the two).
 */

#define MEM_SIZE  (1u << 20)
#define QSIZE	  16u
#define DESC	  0x10000u
#define LNX_AVAIL (DESC + 16u * QSIZE) /* Linux: the avail ring right after the table */
#define LNX_USED  (DESC + 0x1000u)
#define FAR_AVAIL 0x20000u /* a driver that puts the rings apart */
#define FAR_USED  0x30000u
#define BUFS	  0x40000u /* request r: header, data, status at BUFS + 0x1000 r */
#define DLEN	  64u
#define PIECE	  32u
#define MAX_READS 64u

/* Requests: Z (done before, its descriptor slots are then reused by B), A, B (published torn). */
enum { REQ_Z, REQ_A, REQ_B, NREQ };

struct tear {
	struct vio_fake h; /* first: the host ops' opaque */
	struct vio_dev dev;
	struct vio_chain chain;
	uint64_t avail, used;
	/* The library's blocking reads since tear_arm(), recorded. */
	unsigned nreads;
	uint64_t rd_gpa[MAX_READS];
	size_t rd_len[MAX_READS];
	/* Tear read number tear_read (1-based, 0: none) at byte tear_at; upper part first when
	 * desc is set. torn: B was published inside that read. tear_at 0 publishes B before
	 * the read when zero_ok (for a readv's segments: between them). */
	unsigned tear_read;
	size_t tear_at;
	bool desc, torn, zero_ok;
	unsigned readvs; /* dma_readv calls */
};

/* A block-device-like handler: a 16-byte header (fill byte at 8), data filled, a status 0. */
static void blk_like(struct vio_dev *d, unsigned q)
{
	struct tear *t = d->priv;

	while (vio_queue_pop(d, q, &t->chain) > 0) {
		uint8_t hdr[16], data[DLEN], st = 0;

		assert_int_equal(t->chain.n_rd, 1);
		assert_int_equal(t->chain.wr_len, DLEN + 1);
		assert_int_equal(vio_chain_read(d, &t->chain, 0, hdr, sizeof(hdr)), 0);
		memset(data, hdr[8], DLEN);
		assert_int_equal(vio_chain_post(d, &t->chain, 0, data, DLEN), 0);
		assert_int_equal(vio_chain_post(d, &t->chain, DLEN, &st, 1), 0);
		assert_int_equal(vio_queue_push(d, q, &t->chain, DLEN + 1), 0);
	}
}

static const struct vio_dev_ops ops = {.queue_kick = blk_like};

static uint64_t hdr_of(unsigned r)
{
	return BUFS + 0x1000u * r;
}

static uint64_t data_of(unsigned r)
{
	return hdr_of(r) + 0x100u;
}

static uint64_t status_of(unsigned r)
{
	return hdr_of(r) + 0x200u;
}

/* Request r's buffers (fill byte 0x40 + r, status 0xee) and descriptors 3s .. 3s + 2. */
static uint16_t make_request(struct tear *t, unsigned r, unsigned s)
{
	uint8_t *tab = t->h.mem + DESC;
	unsigned i = 3 * s;

	memset(t->h.mem + hdr_of(r), 0, 16);
	t->h.mem[hdr_of(r) + 8] = (uint8_t)(0x40 + r);
	memset(t->h.mem + data_of(r), 0, DLEN);
	t->h.mem[status_of(r)] = 0xee;
	vio_test_desc(tab + 16 * i, hdr_of(r), 16, VIO_DESC_F_NEXT, (uint16_t)(i + 1));
	vio_test_desc(tab + 16 * (i + 1), data_of(r), DLEN, VIO_DESC_F_WRITE | VIO_DESC_F_NEXT,
		      (uint16_t)(i + 2));
	vio_test_desc(tab + 16 * (i + 2), status_of(r), 1, VIO_DESC_F_WRITE, 0);
	return (uint16_t)i;
}

/* The driver publishes head: the ring entry, then avail->idx. */
static void publish(struct tear *t, uint16_t head)
{
	uint16_t idx = (uint16_t)vio_get_le(t->h.mem + t->avail + 2, 2);

	vio_put_le(t->h.mem + t->avail + 4 + 2 * (idx % QSIZE), head, 2);
	vio_put_le(t->h.mem + t->avail + 2, (uint16_t)(idx + 1), 2);
}

/* Request B in the descriptors request Z had (slot 1), published: the guest during a read. */
static void publish_b(struct tear *t)
{
	publish(t, make_request(t, REQ_B, 1));
	t->torn = true;
}

static int tear_read(void *opaque, uint64_t gpa, void *buf, size_t len)
{
	struct tear *t = opaque;
	int (*rd)(void *, uint64_t, void *, size_t) = vio_fake_host_posting.dma_read;
	size_t cut = t->tear_at;
	uint8_t *b = buf;
	int rc;

	if (t->nreads < MAX_READS) {
		t->rd_gpa[t->nreads] = gpa;
		t->rd_len[t->nreads] = len;
	}
	t->nreads++;
	if (t->nreads == t->tear_read && cut == 0 && t->zero_ok) {
		publish_b(t);
		return rd(opaque, gpa, buf, len);
	}
	if (t->nreads != t->tear_read || cut == 0 || cut >= len)
		return rd(opaque, gpa, buf, len);
	if (!t->desc) {
		rc = rd(opaque, gpa, b, cut);
		publish_b(t);
		return rc ? rc : rd(opaque, gpa + cut, b + cut, len - cut);
	}
	rc = rd(opaque, gpa + cut, b + cut, len - cut);
	publish_b(t);
	return rc ? rc : rd(opaque, gpa, b, cut);
}

/* The segments one after the other, each a read that may tear (or be torn before). */
static int tear_readv(void *opaque, const struct vio_dma_seg *seg, unsigned n)
{
	struct tear *t = opaque;
	int err = 0;

	t->readvs++;
	for (unsigned i = 0; i < n; i++) {
		int rc = tear_read(opaque, seg[i].gpa, seg[i].buf, seg[i].len);

		if (rc && !err)
			err = rc;
	}
	return err;
}

static struct vio_host_ops tear_host;

/* The driver's doorbell and the main loop's poll, then every completion. */
static void notify(struct tear *t)
{
	vio_fake_wr32(&t->dev, VIO_MMIO_QUEUE_NOTIFY, 0);
	vio_dev_poll(&t->dev);
	vio_fake_drain(&t->h);
	vio_dev_poll(&t->dev); /* interrupt decisions left open */
	vio_fake_drain(&t->h);
}

/*
 * A device (EVENT_IDX when ev, rings as given, dma_readv when readv) with request Z done in
 * descriptors 3..5.
 */
static struct tear *bring_up(bool ev, bool readv, uint64_t avail, uint64_t used)
{
	struct tear *t = calloc(1, sizeof(*t));
	uint64_t feats = VIO_BIT(VIO_F_VERSION_1) | (ev ? VIO_BIT(VIO_F_EVENT_IDX) : 0);

	assert_non_null(t);
	tear_host = vio_fake_host_posting;
	tear_host.dma_read = tear_read;
	tear_host.dma_readv = readv ? tear_readv : NULL;
	vio_fake_init(&t->h, MEM_SIZE);
	t->avail = avail;
	t->used = used;
	assert_int_equal(vio_dev_init(&t->dev, VIO_ID_BLOCK, 0, 1, 256, &ops, t), 0);
	vio_dev_set_event_idx(&t->dev, true);
	t->dev.transport = VIO_TRANSPORT_MMIO;
	vio_dev_set_host(&t->dev, &tear_host, &t->h);
	assert_int_equal(vio_test_negotiate(&t->dev, feats), 0);
	assert_int_equal(
	    vio_test_mmio_queue(&t->dev, 0, QSIZE, DESC, (uint32_t)avail, (uint32_t)used), 0);
	assert_int_equal(vio_test_mmio_driver_ok(&t->dev), 0);
	assert_int_equal(t->dev.driver_features, feats);
	vio_dev_poll(&t->dev); /* the DRIVER_OK kick: an empty ring */
	/* Z in descriptors 3..5, done: the device may have them cached. */
	publish(t, make_request(t, REQ_Z, 1));
	notify(t);
	assert_int_equal(vio_get_le(t->h.mem + used + 2, 2), 1);
	assert_int_equal(t->h.mem[status_of(REQ_Z)], 0);
	t->h.mem[status_of(REQ_Z)] = 0x5a; /* must stay: B must not write Z's buffers */
	memset(t->h.mem + data_of(REQ_Z), 0x5a, DLEN);
	t->nreads = 0;
	t->readvs = 0;
	return t;
}

static void tear_down(struct tear *t)
{
	vio_fake_drain(&t->h);
	vio_chain_free(&t->chain);
	vio_fake_fini(&t->h);
	free(t);
}

/* Request r done as used element k: data, status, the element. */
static void check_req(struct tear *t, unsigned r, unsigned k, uint16_t head)
{
	uint64_t e = t->used + 4 + 8 * (k % QSIZE);

	assert_int_equal(vio_get_le(t->h.mem + e, 4), head);
	assert_int_equal(vio_get_le(t->h.mem + e + 4, 4), DLEN + 1);
	assert_int_equal(t->h.mem[status_of(r)], 0);
	for (unsigned i = 0; i < DLEN; i++)
		assert_int_equal(t->h.mem[data_of(r) + i], 0x40 + r);
}

/*
 * Request A (descriptors 0..2) is published and notified; inside read
 * tear_read, cut at tear_at, the guest publishes B in Z's old descriptors
 * (then notifies). Both must complete with their own buffers. Returns the
 * reads of the cycle (the reads to tear, when tear_read is 0); *readvs gets
 * the dma_readv calls of that cycle when given.
 */
static unsigned cycle(bool ev, bool lnx, bool readv, bool desc, unsigned tear_read, size_t tear_at,
		      uint64_t *gpa, size_t *len, unsigned *readvs)
{
	struct tear *t =
	    bring_up(ev, readv, lnx ? LNX_AVAIL : FAR_AVAIL, lnx ? LNX_USED : FAR_USED);
	uint16_t head_a = make_request(t, REQ_A, 0);
	unsigned n;

	t->tear_read = tear_read;
	t->tear_at = tear_at;
	t->desc = desc;
	t->zero_ok = readv;
	publish(t, head_a);
	notify(t);
	n = t->nreads;
	if (readvs)
		*readvs = t->readvs;
	if (tear_read == 0 && gpa) {
		assert_true(n <= MAX_READS);
		memcpy(gpa, t->rd_gpa, n * sizeof(*gpa));
		memcpy(len, t->rd_len, n * sizeof(*len));
	}
	if (t->torn)
		notify(t); /* the driver's doorbell for B */
	assert_false(t->dev.status & VIO_S_NEEDS_RESET);
	assert_int_equal(vio_get_le(t->h.mem + t->used + 2, 2), t->torn ? 3 : 2);
	check_req(t, REQ_A, 1, head_a);
	if (t->torn)
		check_req(t, REQ_B, 2, 3);
	/* Z's buffers: not written again (B's stale descriptors never used). */
	assert_int_equal(t->h.mem[status_of(REQ_Z)], 0x5a);
	for (unsigned i = 0; i < DLEN; i++)
		assert_int_equal(t->h.mem[data_of(REQ_Z) + i], 0x5a);
	tear_down(t);
	return n;
}

/*
 * Every read of the cycle, cut at every 32-byte boundary, either part first; with readv (a
 * host with dma_readv) also torn before each read, which for a readv's second segment is
 * between its two copies.
 */
static void tear_all_on(bool ev, bool lnx, bool readv)
{
	uint64_t gpa[MAX_READS];
	size_t len[MAX_READS];
	unsigned readvs = 0;
	unsigned n = cycle(ev, lnx, readv, false, 0, 0, gpa, len, &readvs), tears = 0;

	assert_true(n >= 2);
	/* The op serves Linux's layout without EVENT_IDX only (virtqueue.c avail_idx_read()). */
	if (readv && lnx && !ev)
		assert_true(readvs >= 1);
	else
		assert_int_equal(readvs, 0);
	for (unsigned k = 0; k < n; k++) {
		if (readv) {
			cycle(ev, lnx, readv, false, k + 1, 0, NULL, NULL, NULL);
			tears++;
		}
		for (size_t at = PIECE - (gpa[k] % PIECE); at < len[k]; at += PIECE) {
			cycle(ev, lnx, readv, false, k + 1, at, NULL, NULL, NULL);
			cycle(ev, lnx, readv, true, k + 1, at, NULL, NULL, NULL);
			tears += 2;
		}
	}
	/* The merged read of table and ring (Linux's layout) is cut many times. */
	assert_true(tears >= (lnx ? 2u * (16u * QSIZE / PIECE) : 2u));
	print_message("event_idx %d layout %s readv %d: %u reads (%u readv), %u torn runs\n", ev,
		      lnx ? "linux" : "far", readv, n, readvs, tears);
}

static void tear_all(bool ev, bool lnx)
{
	tear_all_on(ev, lnx, false);
}

static void test_tear_linux(void **state)
{
	(void)state;
	tear_all(false, true);
}

static void test_tear_linux_event_idx(void **state)
{
	(void)state;
	tear_all(true, true);
}

static void test_tear_far(void **state)
{
	(void)state;
	tear_all(false, false);
}

static void test_tear_far_event_idx(void **state)
{
	(void)state;
	tear_all(true, false);
}

static void test_tear_readv_linux(void **state)
{
	(void)state;
	tear_all_on(false, true, true);
}

static void test_tear_readv_linux_event_idx(void **state)
{
	(void)state;
	tear_all_on(true, true, true);
}

static void test_tear_readv_far(void **state)
{
	(void)state;
	tear_all_on(false, false, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tear_linux),
	    cmocka_unit_test(test_tear_linux_event_idx),
	    cmocka_unit_test(test_tear_far),
	    cmocka_unit_test(test_tear_far_event_idx),
	    cmocka_unit_test(test_tear_readv_linux),
	    cmocka_unit_test(test_tear_readv_linux_event_idx),
	    cmocka_unit_test(test_tear_readv_far),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
