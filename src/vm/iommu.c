/* coreio-vm: the IOMMU translation core: registers, per-sid contexts, page walk, IOTLB, faults. */
#include "iommu.h"

#include <errno.h>
#include <string.h>

#include "record.h"

#define IOVA_LIMIT (1ull << 48) /* four levels of 9 bits above 4 KiB pages */

void iommu_init(struct iommu *u, unsigned id, int irq_line, const struct mem *mem, iommu_irq_fn irq,
		void *irq_opaque)
{
	memset(u, 0, sizeof(*u));
	pthread_mutex_init(&u->lock, NULL);
	u->id = id;
	u->irq_line = irq_line;
	u->mem = mem;
	u->irq = irq;
	u->irq_opaque = irq_opaque;
}

void iommu_destroy(struct iommu *u)
{
	pthread_mutex_destroy(&u->lock);
}

/* Raise or lower the fault interrupt after FSTS or FCTL changed (lock held). */
static void update_irq(struct iommu *u)
{
	bool level = (u->fsts & IOMMU_FSTS_FAULT) && (u->fctl & IOMMU_FCTL_IE);

	if (level == u->irq_level)
		return;
	u->irq_level = level;
	if (u->irq)
		u->irq(u->irq_opaque, level);
}

/* The name of a fault reason in --record's events. */
static const char *fault_name(unsigned reason)
{
	static const char *const names[] = {
	    [IOMMU_F_NOT_PRESENT] = "not-present",
	    [IOMMU_F_READ_ONLY] = "read-only",
	    [IOMMU_F_CTX_DISABLED] = "context-disabled",
	    [IOMMU_F_BAD_ADDRESS] = "bad-address",
	    [IOMMU_F_TABLE_NOT_RAM] = "table-not-ram",
	    [IOMMU_F_TARGET_NOT_RAM] = "target-not-ram",
	    [IOMMU_F_DIRECT_REFUSED] = "direct-refused",
	    [IOMMU_F_WRONG_ID] = "wrong-id",
	    [IOMMU_F_INJECTED] = "injected",
	};

	return reason < sizeof(names) / sizeof(names[0]) && names[reason] ? names[reason] : "other";
}

/* Count a fault; latch it unless one is latched already (lock held). */
static void record_fault(struct iommu *u, unsigned sid, uint64_t addr, bool write, unsigned reason,
			 unsigned level)
{
	if (vm_record)
		record_event(vm_record, record_conn_hint, REC_EV_IOMMU_FAULT,
			     "iommu-fault mid=%u sid=%u addr=0x%llx dir=%s level=%u reason=%s",
			     u->id, sid, (unsigned long long)addr, write ? "write" : "read", level,
			     fault_name(reason));
	u->fcount++;
	if (u->fsts & IOMMU_FSTS_FAULT) {
		u->fsts |= IOMMU_FSTS_OVERFLOW;
	} else {
		u->fsts |= IOMMU_FSTS_FAULT;
		u->faddr = addr;
		u->finfo = (uint64_t)(sid & 0xf) | (write ? IOMMU_FINFO_WRITE : 0) |
			   (uint64_t)(reason & 0xff) << IOMMU_FINFO_REASON_SHIFT |
			   (uint64_t)(level & 7) << IOMMU_FINFO_LEVEL_SHIFT;
	}
	update_irq(u);
}

void iommu_record_fault(struct iommu *u, unsigned sid, uint64_t addr, bool write,
			enum iommu_fault_reason reason)
{
	pthread_mutex_lock(&u->lock);
	record_fault(u, sid, addr, write, reason, 0);
	pthread_mutex_unlock(&u->lock);
}

/* Drop the cached translations of sid (all sids when sid < 0) covering iova (any when !page). */
static void tlb_flush(struct iommu *u, int sid, bool page, uint64_t iova)
{
	for (unsigned i = 0; i < IOMMU_TLB_ENTRIES; i++) {
		struct iommu_tlb_entry *e = &u->tlb[i];

		if (!e->valid || (sid >= 0 && e->sid != (unsigned)sid))
			continue;
		if (page && (iova >> e->shift) != (e->iova >> e->shift))
			continue;
		e->valid = false;
	}
}

static const struct iommu_tlb_entry *tlb_lookup(const struct iommu *u, unsigned sid, uint64_t iova)
{
	for (unsigned i = 0; i < IOMMU_TLB_ENTRIES; i++) {
		const struct iommu_tlb_entry *e = &u->tlb[i];

		if (e->valid && e->sid == sid && (iova >> e->shift) == (e->iova >> e->shift))
			return e;
	}
	return NULL;
}

static const struct iommu_tlb_entry *tlb_insert(struct iommu *u, const struct iommu_tlb_entry *n)
{
	struct iommu_tlb_entry *slot = NULL;

	for (unsigned i = 0; i < IOMMU_TLB_ENTRIES && !slot; i++)
		if (!u->tlb[i].valid)
			slot = &u->tlb[i];
	if (!slot) {
		slot = &u->tlb[u->tlb_next];
		u->tlb_next = (u->tlb_next + 1) % IOMMU_TLB_ENTRIES;
	}
	*slot = *n;
	return slot;
}

/*
 * Walk sid's four-level table for iova (< IOVA_LIMIT). Fills out and
 * returns 0, or returns the fault reason with *level set to the table level
 * (4 = PML4 .. 1 = PT) where the walk stopped.
 */
static unsigned walk(const struct iommu *u, unsigned sid, uint64_t iova,
		     struct iommu_tlb_entry *out, unsigned *level)
{
	uint64_t table = u->ctx_root[sid] & IOMMU_PTE_ADDR_MASK;
	bool writable = true;

	for (unsigned lvl = 4; lvl >= 1; lvl--) {
		unsigned shift = 12 + 9 * (lvl - 1);
		uint64_t idx = (iova >> shift) & 511;
		uint64_t *p = mem_ptr(u->mem, table + idx * 8, 8);
		uint64_t e;

		*level = lvl;
		if (!p)
			return IOMMU_F_TABLE_NOT_RAM;
		/* The guest may rewrite its tables at any time: one aligned 8-byte load. */
		e = __atomic_load_n(p, __ATOMIC_RELAXED);
		if (!(e & IOMMU_PTE_P))
			return IOMMU_F_NOT_PRESENT;
		writable = writable && (e & IOMMU_PTE_W);
		if (lvl == 1 || ((lvl == 2 || lvl == 3) && (e & IOMMU_PTE_PS))) {
			uint64_t mask = (1ull << shift) - 1;

			out->valid = true;
			out->writable = writable;
			out->sid = (uint8_t)sid;
			out->shift = (uint8_t)shift;
			out->iova = iova & ~mask;
			out->pa = e & IOMMU_PTE_ADDR_MASK & ~mask;
			return 0;
		}
		table = e & IOMMU_PTE_ADDR_MASK;
	}
	return IOMMU_F_NOT_PRESENT; /* not reached */
}

int iommu_map(struct iommu *u, unsigned sid, uint64_t iova, uint64_t len, bool write,
	      struct iommu_seg *seg, unsigned max)
{
	uint64_t cur = iova, rem = len;
	unsigned n = 0;
	int rc = 0;

	if (sid >= IOMMU_NSIDS || len == 0)
		return -EINVAL;
	pthread_mutex_lock(&u->lock);
	if (!(u->ctx_ctrl[sid] & IOMMU_CTX_EN)) {
		record_fault(u, sid, iova, write, IOMMU_F_CTX_DISABLED, 0);
		rc = -EFAULT;
		goto out;
	}
	if (iova >= IOVA_LIMIT || len > IOVA_LIMIT - iova) {
		record_fault(u, sid, iova >= IOVA_LIMIT ? iova : IOVA_LIMIT, write,
			     IOMMU_F_BAD_ADDRESS, 0);
		rc = -EFAULT;
		goto out;
	}
	while (rem > 0) {
		const struct iommu_tlb_entry *e = tlb_lookup(u, sid, cur);
		uint64_t off, chunk, gpa;

		if (e) {
			u->tlb_hits++;
		} else {
			struct iommu_tlb_entry fresh;
			unsigned level = 0, reason;

			u->tlb_misses++;
			reason = walk(u, sid, cur, &fresh, &level);
			if (reason) {
				record_fault(u, sid, cur, write, reason, level);
				rc = -EFAULT;
				goto out;
			}
			e = tlb_insert(u, &fresh);
		}
		if (write && !e->writable) {
			record_fault(u, sid, cur, write, IOMMU_F_READ_ONLY, 0);
			rc = -EFAULT;
			goto out;
		}
		off = cur - e->iova;
		chunk = (1ull << e->shift) - off;
		if (chunk > rem)
			chunk = rem;
		gpa = e->pa + off;
		if (!mem_ptr(u->mem, gpa, chunk)) {
			record_fault(u, sid, cur, write, IOMMU_F_TARGET_NOT_RAM, 0);
			rc = -EFAULT;
			goto out;
		}
		if (n > 0 && seg[n - 1].gpa + seg[n - 1].len == gpa &&
		    seg[n - 1].len + chunk <= UINT32_MAX) {
			seg[n - 1].len += (uint32_t)chunk;
		} else if (n == max || chunk > UINT32_MAX) {
			rc = -ENOSPC;
			goto out;
		} else {
			seg[n].gpa = gpa;
			seg[n].len = (uint32_t)chunk;
			n++;
		}
		cur += chunk;
		rem -= chunk;
	}
	rc = (int)n;
out:
	pthread_mutex_unlock(&u->lock);
	return rc;
}

/* The current value of the 8-byte register at reg (lock held). */
static uint64_t reg_value(const struct iommu *u, uint64_t reg)
{
	uint64_t tlb_used = 0;

	if (reg >= IOMMU_REG_CTX_BASE && reg < IOMMU_REG_CTX_BASE + IOMMU_NSIDS * 16ull) {
		unsigned sid = (unsigned)((reg - IOMMU_REG_CTX_BASE) / IOMMU_REG_CTX_STRIDE);

		return (reg & 8) ? u->ctx_root[sid] : u->ctx_ctrl[sid];
	}
	switch (reg) {
	case IOMMU_REG_ID:
		return IOMMU_ID_VALUE | (uint64_t)IOMMU_VERSION << 32;
	case IOMMU_REG_CAP:
		return IOMMU_NSIDS | IOMMU_CAP_2M | IOMMU_CAP_1G |
		       (uint64_t)IOMMU_TLB_ENTRIES << 16 | (uint64_t)(u->id & 0xff) << 24 |
		       (uint64_t)(u->irq_line < 0 ? 0xff : u->irq_line & 0xff) << 32;
	case IOMMU_REG_FCTL:
		return u->fctl;
	case IOMMU_REG_FSTS:
		return u->fsts;
	case IOMMU_REG_FADDR:
		return u->faddr;
	case IOMMU_REG_FINFO:
		return u->finfo;
	case IOMMU_REG_FCOUNT:
		return u->fcount;
	case IOMMU_REG_INV_ADDR:
		return u->inv_addr;
	case IOMMU_REG_TLB_HITS:
		return u->tlb_hits;
	case IOMMU_REG_TLB_MISSES:
		return u->tlb_misses;
	case IOMMU_REG_TLB_USED:
		for (unsigned i = 0; i < IOMMU_TLB_ENTRIES; i++)
			tlb_used += u->tlb[i].valid;
		return tlb_used;
	default:
		return 0;
	}
}

/* True for an access of 1, 2, 4 or 8 bytes inside one 8-byte register of the block. */
static bool access_ok(uint64_t off, unsigned size)
{
	return (size == 1 || size == 2 || size == 4 || size == 8) && off < IOMMU_REG_SIZE &&
	       (off & 7) + size <= 8;
}

uint64_t iommu_reg_read(struct iommu *u, uint64_t off, unsigned size)
{
	uint64_t v;

	if (!access_ok(off, size))
		return 0;
	pthread_mutex_lock(&u->lock);
	v = reg_value(u, off & ~7ull);
	pthread_mutex_unlock(&u->lock);
	v >>= 8 * (off & 7);
	return size == 8 ? v : v & ((1ull << (8 * size)) - 1);
}

static void invalidate(struct iommu *u, uint64_t cmd)
{
	int sid = (int)((cmd >> 8) & 0xf);

	switch (cmd & 3) {
	case IOMMU_INV_ALL:
		tlb_flush(u, -1, false, 0);
		break;
	case IOMMU_INV_SID:
		tlb_flush(u, sid, false, 0);
		break;
	case IOMMU_INV_PAGE:
		tlb_flush(u, sid, true, u->inv_addr);
		break;
	default:
		break;
	}
}

void iommu_reg_write(struct iommu *u, uint64_t off, unsigned size, uint64_t val)
{
	unsigned shift = 8 * (unsigned)(off & 7);
	uint64_t bytes = size == 8 ? ~0ull : ((1ull << (8 * size)) - 1) << shift;
	uint64_t reg = off & ~7ull, in;

	if (!access_ok(off, size))
		return;
	in = (val << shift) & bytes;
	pthread_mutex_lock(&u->lock);
	if (reg >= IOMMU_REG_CTX_BASE && reg < IOMMU_REG_CTX_BASE + IOMMU_NSIDS * 16ull) {
		unsigned sid = (unsigned)((reg - IOMMU_REG_CTX_BASE) / IOMMU_REG_CTX_STRIDE);

		/* A context change drops the sid's cached translations. */
		if (reg & 8)
			u->ctx_root[sid] = ((u->ctx_root[sid] & ~bytes) | in) & IOMMU_PTE_ADDR_MASK;
		else
			u->ctx_ctrl[sid] = ((u->ctx_ctrl[sid] & ~bytes) | in) & IOMMU_CTX_EN;
		tlb_flush(u, (int)sid, false, 0);
	} else {
		switch (reg) {
		case IOMMU_REG_FCTL:
			u->fctl = ((u->fctl & ~bytes) | in) & IOMMU_FCTL_IE;
			update_irq(u);
			break;
		case IOMMU_REG_FSTS:
			u->fsts &= ~(in & (IOMMU_FSTS_FAULT | IOMMU_FSTS_OVERFLOW));
			update_irq(u);
			break;
		case IOMMU_REG_INV_ADDR:
			u->inv_addr = (u->inv_addr & ~bytes) | in;
			break;
		case IOMMU_REG_INV_CMD:
			invalidate(u, in);
			break;
		default:
			break; /* read-only or reserved */
		}
	}
	pthread_mutex_unlock(&u->lock);
}

int iommu_dma_map(struct iommu_set *set, unsigned bound, int bound_sid, unsigned mid, unsigned sid,
		  uint64_t addr, uint64_t len, bool write, struct iommu_seg *seg, unsigned max)
{
	if (bound) {
		struct iommu *b = set && bound <= IOMMU_MAX_ID ? set->unit[bound] : NULL;
		bool sid_ok = bound_sid < 0 || sid == (unsigned)bound_sid;

		if (mid == 0 || mid != bound || !sid_ok) {
			if (b)
				iommu_record_fault(b, sid, addr, write,
						   mid == 0 ? IOMMU_F_DIRECT_REFUSED
							    : IOMMU_F_WRONG_ID);
			return -EFAULT;
		}
	}
	if (mid == 0) {
		if (max < 1)
			return -ENOSPC;
		if (len == 0 || len > UINT32_MAX)
			return -EINVAL;
		seg[0].gpa = addr;
		seg[0].len = (uint32_t)len;
		return 1;
	}
	if (!set || mid > IOMMU_MAX_ID || !set->unit[mid])
		return -EINVAL;
	return iommu_map(set->unit[mid], sid, addr, len, write, seg, max);
}
