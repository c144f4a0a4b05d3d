/* coreio-vm: the in-VMM IOMMU device: the register blocks of --iommu and their fault interrupts. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "hw.h"
#include "iommu.h"

/* One --iommu: the translation core plus its interrupt source. */
struct iommu_hw_unit {
	struct iommu core;
	struct irq_chip *chip;
	struct irq_source src;
	uint64_t base;
};

struct iommu_hw {
	struct iommu_set set; /* what the vMMIO service translates DMA with */
	struct iommu_hw_unit units[CONFIG_MAX_IOMMUS];
	unsigned n;
};

/* Callers hold the VM lock (DMA on the I/O thread, register accesses in emulate_io()). */
static void iommu_hw_irq(void *opaque, bool level)
{
	struct iommu_hw_unit *h = opaque;

	irq_source_set(h->chip, &h->src, level);
}

static uint64_t get_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void put_le(uint8_t *p, unsigned n, uint64_t v)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* One element of an access: size bytes at off (write: only the bytes of mask). */
static void iommu_hw_element(struct iommu *u, bool wr, uint64_t off, unsigned size, uint8_t *data,
			     uint32_t mask)
{
	if (!wr) {
		if (size > 8)
			memset(data, 0, size);
		else
			put_le(data, size, iommu_reg_read(u, off, size));
		return;
	}
	if (size > 8)
		return; /* not inside one register: ignored */
	if (mask == 0 || mask == (1u << size) - 1) {
		iommu_reg_write(u, off, size, get_le(data, size));
		return;
	}
	for (unsigned i = 0; i < size; i++)
		if (mask & (1u << i))
			iommu_reg_write(u, off + i, 1, data[i]);
}

static int iommu_hw_mmio(struct io_request *req, void *opaque)
{
	struct iommu_hw_unit *h = opaque;
	struct mmio_request *m = &req->reqs.mmio;
	uint64_t off = m->address - h->base;
	bool wr = m->direction == REQUEST_WRITE;

	iommu_hw_element(&h->core, wr, off, m->size, m->data, m->mask);
	if (m->pair)
		iommu_hw_element(&h->core, wr, off + m->size, m->size, m->data2, m->mask);
	return 0;
}

static void iommu_hw_exit(void *state)
{
	struct iommu_hw *s = state;

	if (!s)
		return;
	for (unsigned i = 0; i < s->n; i++)
		iommu_destroy(&s->units[i].core);
	free(s);
}

static int iommu_hw_init(const struct hw_ctx *hw, void **state)
{
	const struct vm_config *cfg = hw->cfg;
	struct iommu_hw *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	for (unsigned i = 0; cfg && i < cfg->niommus && i < CONFIG_MAX_IOMMUS; i++) {
		const struct iommu_config *ic = &cfg->iommus[i];
		struct iommu_hw_unit *h = &s->units[s->n];
		int rc;

		if (ic->id == 0 || ic->id > IOMMU_MAX_ID || s->set.unit[ic->id]) {
			iommu_hw_exit(s);
			return -EINVAL; /* config_parse() refuses these */
		}
		iommu_init(&h->core, ic->id, ic->irq, hw->io->mem, iommu_hw_irq, h);
		h->chip = hw->irq;
		h->base = ic->base;
		irq_source_init(&h->src, ic->irq);
		s->n++;
		rc = register_mmio_emulation_handler(hw->io, ic->base, ic->base + IOMMU_REG_SIZE,
						     iommu_hw_mmio, h);
		if (rc < 0) {
			iommu_hw_exit(s);
			return rc;
		}
		s->set.unit[ic->id] = &h->core;
	}
	*state = s;
	return 0;
}

struct iommu_set *hw_iommu_set(void *state)
{
	return state ? &((struct iommu_hw *)state)->set : NULL;
}

const struct hw_device hw_iommu = {
    .name = "iommu",
    .init = iommu_hw_init,
    .exit = iommu_hw_exit,
    .qtest = true,
};
