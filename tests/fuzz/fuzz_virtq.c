/* libFuzzer harness of the virtio library's guest-facing parsing: register accesses of both
 * transports and split-ring walking (vio_queue_pop) over guest memory the input supplies. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "virtio.h"

/*
 * Input layout:
 *   [0]      flags: F_PCI, F_INDIRECT, F_VERBOSE, F_POST, F_TWO_QUEUES, F_READV
 *   [1..2]   queue size the driver writes (le16)
 *   [3..8]   desc, avail, used ring offsets in guest memory (le16 each)
 *   [9]      bit k (k = 0..2): that ring address gets 0xffffffffffff0000 added
 *   [10]     chains taken per kick at most (0: 1)
 *   [11]     what the model does with a chain: C_READ, C_WRITE, C_POST, C_ON_ERROR
 *   [12]     number of register accesses that follow (mod 16)
 *   then     that many accesses of OP_LEN bytes: off (le16), len (1..32), flags, data[8]
 *   rest     guest memory from address 0 (MEM_SIZE bytes, zero beyond the input)
 */
#define HDR_LEN	     13u
#define OP_LEN	     12u
#define MEM_SIZE     0x10000u
#define QSIZE_MAX    1024u /* above VIO_DESC_CACHE and VIO_RING_CACHE: windows, wraps */
#define MAX_PENDING  64u
#define F_PCI	     0x01u
#define F_INDIRECT   0x02u
#define F_VERBOSE    0x04u
#define F_POST	     0x08u
#define F_TWO_QUEUES 0x10u
#define F_READV	     0x20u /* the host offers dma_readv (the index and ring read together) */
#define C_READ	     0x01u
#define C_WRITE	     0x02u
#define C_POST	     0x04u
#define C_ON_ERROR   0x08u

struct pending {
	uint64_t gpa;
	const void *buf;
	size_t len;
	void (*done)(void *arg, int err);
	void *arg;
	int err; /* set when applied */
};

struct fz {
	uint8_t *mem;
	struct vio_dev *d;
	struct vio_chain chain;
	uint8_t flags, chain_ops;
	unsigned max_pops;
	struct pending pend[MAX_PENDING];
	unsigned npend;	  /* posted so far (this round) */
	unsigned applied; /* pend[0 .. applied) are in guest memory (or failed) */
	unsigned level;
};

static bool in_mem(uint64_t gpa, size_t len)
{
	return gpa <= MEM_SIZE && len <= MEM_SIZE - gpa;
}

/* A buffer of the library's own state must hold what it asks for. */
static void check_own_buffer(struct fz *z, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	const uint8_t *sc = z->d->scratch, *dc = z->d->desc_cache;

	if (p >= sc && p < sc + sizeof(z->d->scratch))
		FUZZ_CHECK(len <= (size_t)(sc + sizeof(z->d->scratch) - p));
	if (p >= dc && p < dc + sizeof(z->d->desc_cache))
		FUZZ_CHECK(len <= (size_t)(dc + sizeof(z->d->desc_cache) - p));
}

/* Put every posted write in guest memory, in order: the VM does so before a later DMA. */
static void apply_posted(struct fz *z)
{
	for (; z->applied < z->npend; z->applied++) {
		struct pending *w = &z->pend[z->applied];

		w->err = in_mem(w->gpa, w->len) ? 0 : -EFAULT;
		if (!w->err)
			memcpy(z->mem + w->gpa, w->buf, w->len);
	}
}

/* The host's event processing: the completions of the posted writes, in order. */
static void complete_posted(struct fz *z)
{
	/* A completion may post more (the used ring): they are appended and done here too. */
	for (unsigned i = 0; i < z->npend; i++) {
		apply_posted(z);
		z->pend[i].done(z->pend[i].arg, z->pend[i].err);
	}
	z->npend = 0;
	z->applied = 0;
}

static int fz_read(void *opaque, uint64_t gpa, void *buf, size_t len)
{
	struct fz *z = opaque;

	check_own_buffer(z, buf, len);
	apply_posted(z);
	if (!in_mem(gpa, len))
		return -EFAULT;
	memcpy(buf, z->mem + gpa, len);
	return 0;
}

static int fz_write(void *opaque, uint64_t gpa, const void *buf, size_t len)
{
	struct fz *z = opaque;

	apply_posted(z);
	if (!in_mem(gpa, len))
		return -EFAULT;
	memcpy(z->mem + gpa, buf, len);
	return 0;
}

static int fz_irq(void *opaque, unsigned level)
{
	struct fz *z = opaque;

	FUZZ_CHECK(level <= 1);
	z->level = level;
	return 0;
}

static int fz_post(void *opaque, uint64_t gpa, const void *buf, size_t len,
		   void (*done)(void *arg, int err), void *arg)
{
	struct fz *z = opaque;

	if (!(z->flags & F_POST))
		return -EOPNOTSUPP;
	FUZZ_CHECK(len > 0 && done != NULL);
	if (z->npend == MAX_PENDING)
		return -ENOMEM; /* the library then writes blocking */
	z->pend[z->npend++] = (struct pending){gpa, buf, len, done, arg, 0};
	return 0;
}

/* The segments one after the other, as a VM copies them. */
static int fz_readv(void *opaque, const struct vio_dma_seg *seg, unsigned n)
{
	int first = 0;

	FUZZ_CHECK(n >= 1 && n <= VIO_READV_MAX);
	for (unsigned k = 0; k < n; k++) {
		int rc = fz_read(opaque, seg[k].gpa, seg[k].buf, seg[k].len);

		if (rc && !first)
			first = rc;
	}
	return first;
}

static const struct vio_host_ops fz_host = {
    .dma_read = fz_read,
    .dma_write = fz_write,
    .irq_set = fz_irq,
    .dma_write_post = fz_post,
};

static const struct vio_host_ops fz_host_readv = {
    .dma_read = fz_read,
    .dma_readv = fz_readv,
    .dma_write = fz_write,
    .irq_set = fz_irq,
    .dma_write_post = fz_post,
};

static void fz_log(void *opaque, int level, const char *msg)
{
	(void)opaque;
	FUZZ_CHECK(level >= COREIO_LOG_ERR && level <= COREIO_LOG_DEBUG);
	FUZZ_CHECK(strlen(msg) < VIO_LOG_MAX && strncmp(msg, "virtio: ", 8) == 0);
}

/* A chain vio_queue_pop() handed out is consistent, whatever the guest wrote. */
static void check_chain(struct fz *z, unsigned q)
{
	const struct vio_chain *c = &z->chain;
	uint64_t rd = 0, wr = 0;
	unsigned n = c->n_rd + c->n_wr;

	FUZZ_CHECK(c->head < z->d->q[q].size);
	FUZZ_CHECK(n >= 1 && n <= c->cap && c->buf != NULL);
	FUZZ_CHECK(n <= (unsigned)z->d->q[q].size + VIO_INDIRECT_MAX);
	for (unsigned i = 0; i < n; i++) {
		const struct vio_buf *b = &c->buf[i];

		FUZZ_CHECK(b->len == 0 || b->addr <= UINT64_MAX - (b->len - 1));
		if (i < c->n_rd)
			rd += b->len;
		else
			wr += b->len;
	}
	FUZZ_CHECK(rd == c->rd_len && wr == c->wr_len);
	FUZZ_CHECK(rd + wr <= VIO_CHAIN_MAX_LEN);
}

/* What a device model does with a chain: read it, write or post to it, return it. */
static void use_chain(struct fz *z, unsigned q)
{
	struct vio_dev *d = z->d;
	struct vio_chain *c = &z->chain;
	static uint8_t buf[512];
	size_t n;
	int rc;

	if (z->chain_ops & C_READ) {
		n = c->rd_len < sizeof(buf) ? (size_t)c->rd_len : sizeof(buf);
		rc = vio_chain_read(d, c, 0, buf, n);
		FUZZ_CHECK(rc == 0 || rc == -EFAULT);
		FUZZ_CHECK(vio_chain_read(d, c, c->rd_len, buf, 1) == -EINVAL);
	}
	n = c->wr_len < sizeof(buf) ? (size_t)c->wr_len : sizeof(buf);
	memset(buf, 0x5a, n);
	if (z->chain_ops & C_WRITE) {
		rc = vio_chain_write(d, c, 0, buf, n);
		FUZZ_CHECK(rc == 0 || rc == -EFAULT);
	}
	if (z->chain_ops & C_POST) {
		FUZZ_CHECK(vio_chain_post(d, c, 0, buf, n) == 0);
		FUZZ_CHECK(vio_chain_post(d, c, c->wr_len, buf, 1) == -EINVAL);
	}
	if (z->chain_ops & C_ON_ERROR)
		vio_chain_on_error(c, (uint32_t)n / 2, z->chain_ops >> 4 ? z->chain_ops : -1);
	rc = vio_queue_push(d, q, c, (uint32_t)n);
	FUZZ_CHECK(rc == 0 || rc == -EFAULT || rc == -EINVAL);
	if (rc == -EFAULT)
		FUZZ_CHECK(d->status & VIO_S_NEEDS_RESET);
}

static void kick(struct vio_dev *d, unsigned q)
{
	struct fz *z = d->priv;

	FUZZ_CHECK(q < d->num_queues && d->q[q].enabled);
	for (unsigned k = 0; k < z->max_pops; k++) {
		int rc = vio_queue_pop(d, q, &z->chain);

		FUZZ_CHECK(rc == 1 || rc == 0 || rc == -EPROTO || rc == -EFAULT);
		if (rc < 0) {
			/* A broken ring marks the device, which then hands out nothing. */
			FUZZ_CHECK(d->status & VIO_S_NEEDS_RESET);
			FUZZ_CHECK(!vio_dev_running(d));
			FUZZ_CHECK(vio_queue_pop(d, q, &z->chain) == 0);
			return;
		}
		if (rc == 0)
			return;
		check_chain(z, q);
		use_chain(z, q);
		if (!vio_dev_running(d))
			return;
	}
}

static const struct vio_dev_ops fz_ops = {.queue_kick = kick};

static void reg_write(struct fz *z, uint64_t off, unsigned len, uint64_t v)
{
	uint8_t b[8];

	vio_put_le(b, v, len);
	FUZZ_CHECK(vio_transport_write(z->d, off, len, b) == 0);
}

/* The driver's side of bringing the device up with queue q at desc/avail/used. */
static void set_queue(struct fz *z, unsigned q, uint16_t size, const uint64_t ring[3])
{
	if (z->flags & F_PCI) {
		reg_write(z, VIO_PCI_Q_SELECT, 2, q);
		reg_write(z, VIO_PCI_Q_SIZE, 2, size);
		reg_write(z, VIO_PCI_Q_DESC, 8, ring[0]);
		reg_write(z, VIO_PCI_Q_DRIVER, 8, ring[1]);
		reg_write(z, VIO_PCI_Q_DEVICE, 8, ring[2]);
		reg_write(z, VIO_PCI_Q_ENABLE, 2, 1);
		return;
	}
	reg_write(z, VIO_MMIO_QUEUE_SEL, 4, q);
	reg_write(z, VIO_MMIO_QUEUE_NUM, 4, size);
	reg_write(z, VIO_MMIO_QUEUE_DESC_LO, 4, (uint32_t)ring[0]);
	reg_write(z, VIO_MMIO_QUEUE_DESC_HI, 4, ring[0] >> 32);
	reg_write(z, VIO_MMIO_QUEUE_DRIVER_LO, 4, (uint32_t)ring[1]);
	reg_write(z, VIO_MMIO_QUEUE_DRIVER_HI, 4, ring[1] >> 32);
	reg_write(z, VIO_MMIO_QUEUE_DEVICE_LO, 4, (uint32_t)ring[2]);
	reg_write(z, VIO_MMIO_QUEUE_DEVICE_HI, 4, ring[2] >> 32);
	reg_write(z, VIO_MMIO_QUEUE_READY, 4, 1);
}

static void set_status(struct fz *z, uint8_t s)
{
	if (z->flags & F_PCI)
		reg_write(z, VIO_PCI_STATUS, 1, s);
	else
		reg_write(z, VIO_MMIO_STATUS, 4, s);
}

static void bring_up(struct fz *z, uint16_t size, const uint64_t ring[3])
{
	uint64_t feats = VIO_BIT(VIO_F_VERSION_1);
	uint8_t s = VIO_S_ACKNOWLEDGE | VIO_S_DRIVER;

	if (z->flags & F_INDIRECT)
		feats |= VIO_BIT(VIO_F_INDIRECT_DESC);
	set_status(z, s);
	for (unsigned w = 0; w < 2; w++) {
		if (z->flags & F_PCI) {
			reg_write(z, VIO_PCI_GFSELECT, 4, w);
			reg_write(z, VIO_PCI_GF, 4, (uint32_t)(feats >> (32 * w)));
		} else {
			reg_write(z, VIO_MMIO_DRIVER_FEAT_SEL, 4, w);
			reg_write(z, VIO_MMIO_DRIVER_FEATURES, 4, (uint32_t)(feats >> (32 * w)));
		}
	}
	s |= VIO_S_FEATURES_OK;
	set_status(z, s);
	set_queue(z, 0, size, ring);
	if (z->flags & F_TWO_QUEUES) {
		/* The second queue shares the first one's rings, one page further. */
		uint64_t r2[3] = {ring[0] + 0x1000, ring[1] + 0x1000, ring[2] + 0x1000};

		set_queue(z, 1, size, r2);
	}
	set_status(z, s | VIO_S_DRIVER_OK);
}

/* A guest register access of 1..32 bytes, in a buffer of exactly that size. */
static void reg_access(struct fz *z, const uint8_t *op)
{
	unsigned len = 1 + op[2] % 32;
	uint64_t off = fuzz_le(op, 2); /* the library keeps the offset inside its block */
	uint8_t *b = malloc(len);

	FUZZ_CHECK(b != NULL);
	memset(b, 0, len);
	memcpy(b, op + 4, len < 8 ? len : 8);
	if (op[3] & 1)
		FUZZ_CHECK(vio_transport_write(z->d, off, len, b) == 0);
	else
		FUZZ_CHECK(vio_transport_read(z->d, off, len, b) == 0);
	free(b);
}

/* Let the model serve kicks, then the posted writes complete: a round of the main loop. */
static void loop_round(struct fz *z)
{
	for (unsigned i = 0; i < 4; i++) {
		bool any = vio_dev_poll(z->d);

		complete_posted(z);
		if (!any)
			break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz z;
	uint8_t hdr[HDR_LEN] = {0};
	uint64_t ring[3];
	unsigned nops;
	const uint8_t *ops;
	uint16_t qsize;

	memcpy(hdr, data, size < HDR_LEN ? size : HDR_LEN);
	data += size < HDR_LEN ? size : HDR_LEN;
	size -= size < HDR_LEN ? size : HDR_LEN;
	nops = hdr[12] % 16;
	if (size < (size_t)nops * OP_LEN)
		nops = (unsigned)(size / OP_LEN);
	ops = data;
	data += (size_t)nops * OP_LEN;
	size -= (size_t)nops * OP_LEN;

	memset(&z, 0, sizeof(z));
	z.flags = hdr[0];
	z.chain_ops = hdr[11];
	z.max_pops = hdr[10] ? hdr[10] : 1;
	z.mem = calloc(1, MEM_SIZE);
	z.d = malloc(sizeof(*z.d));
	FUZZ_CHECK(z.mem != NULL && z.d != NULL);
	memcpy(z.mem, data, size < MEM_SIZE ? size : MEM_SIZE);
	qsize = (uint16_t)fuzz_le(hdr + 1, 2);
	for (unsigned i = 0; i < 3; i++) {
		ring[i] = fuzz_le(hdr + 3 + 2 * i, 2);
		if (hdr[9] & (1u << i))
			ring[i] += 0xffffffffffff0000ull;
	}

	FUZZ_CHECK(vio_dev_init(z.d, VIO_ID_BLOCK, VIO_BIT(VIO_F_INDIRECT_DESC),
				z.flags & F_TWO_QUEUES ? 2 : 1, QSIZE_MAX, &fz_ops, &z) == 0);
	z.d->transport = z.flags & F_PCI ? VIO_TRANSPORT_PCI : VIO_TRANSPORT_MMIO;
	z.d->verbose = z.flags & F_VERBOSE;
	z.d->config_len = 16;
	z.d->config_writable_off = 4;
	z.d->config_writable_len = 8;
	vio_dev_set_host(z.d, z.flags & F_READV ? &fz_host_readv : &fz_host, &z);
	vio_dev_set_log(z.d, fz_log, &z);

	bring_up(&z, qsize, ring);
	loop_round(&z);
	for (unsigned i = 0; i < nops; i++) {
		reg_access(&z, ops + (size_t)i * OP_LEN);
		if (i % 4 == 3)
			loop_round(&z);
	}
	/* The driver notifies every queue once more. */
	for (unsigned q = 0; q < z.d->num_queues; q++) {
		if (z.flags & F_PCI)
			reg_write(&z, COREIO_VPCI_NOTIFY_OFF + COREIO_VPCI_NOTIFY_MULT * q, 2, q);
		else
			reg_write(&z, VIO_MMIO_QUEUE_NOTIFY, 4, q);
	}
	loop_round(&z);
	complete_posted(&z);
	FUZZ_CHECK(z.d->post_head == NULL && z.d->post_bytes == 0);
	FUZZ_CHECK((z.level != 0) == (z.d->isr != 0));
	vio_chain_free(&z.chain);
	free(z.d);
	free(z.mem);
	return 0;
}
