/* coreio-vm: the ACRN-style I/O request layer (PIO table, MMIO list, emulate_io). */
#include "ioreq.h"

#include <errno.h>
#include <string.h>

void ioreq_init(struct ioreq_ctx *ctx, struct mem *mem)
{
	memset(ctx, 0, sizeof(*ctx));
	pthread_mutex_init(&ctx->lock, NULL);
	ctx->mem = mem;
}

void ioreq_exit(struct ioreq_ctx *ctx)
{
	pthread_mutex_destroy(&ctx->lock);
}

uint32_t ioreq_full_mask(unsigned size)
{
	return size >= 32 ? 0xffffffffu : (uint32_t)((1ull << size) - 1);
}

/* True if [s1, e1) and [s2, e2) share a byte. */
static bool overlaps(uint64_t s1, uint64_t e1, uint64_t s2, uint64_t e2)
{
	return s1 < e2 && s2 < e1;
}

static int add_handler(struct ioreq_handler *tab, unsigned *n, uint64_t start, uint64_t end,
		       io_handler_t fn, void *opaque)
{
	if (start >= end || !fn)
		return -EINVAL;
	for (unsigned i = 0; i < *n; i++)
		if (overlaps(start, end, tab[i].start, tab[i].end))
			return -EEXIST;
	if (*n >= IOREQ_MAX_HANDLERS)
		return -ENOSPC;
	tab[*n] = (struct ioreq_handler){.start = start, .end = end, .fn = fn, .opaque = opaque};
	(*n)++;
	return 0;
}

int register_io_emulation_handler(struct ioreq_ctx *ctx, uint32_t start, uint32_t end,
				  io_handler_t fn, void *opaque)
{
	if (end > 0x10000)
		return -EINVAL;
	return add_handler(ctx->pio, &ctx->npio, start, end, fn, opaque);
}

int register_mmio_emulation_handler(struct ioreq_ctx *ctx, uint64_t start, uint64_t end,
				    io_handler_t fn, void *opaque)
{
	return add_handler(ctx->mmio, &ctx->nmmio, start, end, fn, opaque);
}

/*
 * Classify [addr, last] (inclusive) against RAM (if ram) and a handler table.
 */
static enum ioreq_class classify(const struct ioreq_handler *tab, unsigned n, uint64_t ram,
				 uint64_t addr, uint64_t last, const struct ioreq_handler **h)
{
	unsigned hits = 0;
	bool contained = false;
	enum ioreq_class cls = IOREQ_CLASS_NONE;

	*h = NULL;
	if (ram && addr < ram) {
		hits++;
		contained = last < ram;
		cls = IOREQ_CLASS_RAM;
	}
	for (unsigned i = 0; i < n; i++) {
		if (addr >= tab[i].end || last < tab[i].start)
			continue;
		hits++;
		contained = addr >= tab[i].start && last <= tab[i].end - 1;
		cls = IOREQ_CLASS_HANDLER;
		*h = &tab[i];
	}
	if (hits == 0)
		return IOREQ_CLASS_NONE;
	if (hits > 1 || !contained) {
		*h = NULL;
		return IOREQ_CLASS_STRADDLE;
	}
	return cls;
}

enum ioreq_class ioreq_classify(const struct ioreq_ctx *ctx, uint64_t addr, uint64_t len,
				const struct ioreq_handler **h)
{
	const struct ioreq_handler *dummy;
	uint64_t ram = ctx->mem ? ctx->mem->size : 0;

	if (!h)
		h = &dummy;
	*h = NULL;
	if (len == 0)
		return IOREQ_CLASS_NONE;
	if (len - 1 > UINT64_MAX - addr)
		return IOREQ_CLASS_STRADDLE; /* wraps past the top of the address space */
	return classify(ctx->mmio, ctx->nmmio, ram, addr, addr + (len - 1), h);
}

/* Apply a masked write of size bytes from src to dst. */
static void masked_copy(uint8_t *dst, const uint8_t *src, unsigned size, uint32_t mask)
{
	if (mask == 0) {
		memcpy(dst, src, size);
		return;
	}
	for (unsigned i = 0; i < size; i++)
		if (mask & (1u << i))
			dst[i] = src[i];
}

static void ram_access(struct mem *mem, struct mmio_request *m)
{
	uint8_t *p = mem_ptr(mem, m->address, m->pair ? 2ull * m->size : m->size);

	if (m->direction == REQUEST_READ) {
		memcpy(m->data, p, m->size);
		if (m->pair)
			memcpy(m->data2, p + m->size, m->size);
	} else {
		masked_copy(p, m->data, m->size, m->mask);
		if (m->pair)
			masked_copy(p + m->size, m->data2, m->size, m->mask);
	}
}

static int run_handler(struct ioreq_ctx *ctx, const struct ioreq_handler *h, struct io_request *req)
{
	int ret;

	req->state = REQ_STATE_PENDING;
	ret = h->fn(req, h->opaque);
	if (ret == IOREQ_PENDING)
		return IOREQ_PENDING;
	if (ret < 0)
		req->result = -EIO;
	req->state = REQ_STATE_COMPLETE;
	return 0;
}

static int emulate_mmio(struct ioreq_ctx *ctx, struct io_request *req)
{
	struct mmio_request *m = &req->reqs.mmio;
	const struct ioreq_handler *h;
	uint64_t len;

	if (m->size < 1 || m->size > (m->pair ? IOREQ_MAX_PAIR : IOREQ_MAX_DATA))
		return -EINVAL;
	len = m->pair ? 2ull * m->size : m->size;
	switch (ioreq_classify(ctx, m->address, len, &h)) {
	case IOREQ_CLASS_RAM:
		ram_access(ctx->mem, m);
		return 0;
	case IOREQ_CLASS_HANDLER:
		return run_handler(ctx, h, req);
	case IOREQ_CLASS_STRADDLE:
		ctx->stats.straddles++;
		return -EIO;
	case IOREQ_CLASS_NONE:
	default:
		if (m->direction == REQUEST_READ) {
			memset(m->data, 0xff, sizeof(m->data));
			memset(m->data2, 0xff, sizeof(m->data2));
			ctx->stats.unhandled_reads++;
		} else {
			ctx->stats.unhandled_writes++;
		}
		return 0;
	}
}

static int emulate_pio(struct ioreq_ctx *ctx, struct io_request *req)
{
	struct pio_request *p = &req->reqs.pio;
	const struct ioreq_handler *h;

	if (p->size != 1 && p->size != 2 && p->size != 4)
		return -EINVAL;
	if (p->address >= 0x10000 || p->size > 0x10000 - p->address) {
		ctx->stats.straddles++;
		return -EIO;
	}
	switch (classify(ctx->pio, ctx->npio, 0, p->address, p->address + p->size - 1, &h)) {
	case IOREQ_CLASS_HANDLER:
		return run_handler(ctx, h, req);
	case IOREQ_CLASS_STRADDLE:
		ctx->stats.straddles++;
		return -EIO;
	default:
		if (p->direction == REQUEST_READ) {
			p->value = (uint32_t)((1ull << (8 * p->size)) - 1);
			ctx->stats.unhandled_reads++;
		} else {
			ctx->stats.unhandled_writes++;
		}
		return 0;
	}
}

int emulate_io(struct ioreq_ctx *ctx, struct io_request *req)
{
	if (req->state != REQ_STATE_FREE)
		return -EBUSY;
	req->result = 0;
	if (req->type == REQ_MMIO)
		return emulate_mmio(ctx, req);
	if (req->type == REQ_PORTIO)
		return emulate_pio(ctx, req);
	return -EINVAL;
}

void ioreq_complete(struct io_request *req)
{
	req->state = REQ_STATE_COMPLETE;
	if (req->complete)
		req->complete(req, req->complete_opaque);
}

int emulate_mmio_post(struct ioreq_ctx *ctx, struct io_request *req)
{
	if (req->result < 0) {
		ctx->stats.bus_errors++;
		if (req->type == REQ_MMIO && req->reqs.mmio.direction == REQUEST_READ) {
			memset(req->reqs.mmio.data, 0xff, sizeof(req->reqs.mmio.data));
			memset(req->reqs.mmio.data2, 0xff, sizeof(req->reqs.mmio.data2));
		} else if (req->type == REQ_PORTIO && req->reqs.pio.direction == REQUEST_READ) {
			req->reqs.pio.value = 0xffffffffu;
		}
	}
	req->state = REQ_STATE_FREE;
	return req->result;
}
