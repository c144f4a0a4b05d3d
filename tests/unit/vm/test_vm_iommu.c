/* Unit tests of the IOMMU: page walk, segments, IOTLB, invalidation, faults, registers, policy. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "hw.h"
#include "iommu.h"
#include "ioreq.h"
#include "irq.h"
#include "mem.h"

#define RAM_SIZE (16ull << 20)
#define POOL	 0x100000ull /* page tables are taken from here */
#define IOVA	 0x40000000ull

static struct mem ram;
static struct iommu mmu;
static uint64_t pool_next;
static int irq_calls;
static bool irq_now;

static void on_irq(void *opaque, bool level)
{
	(void)opaque;
	irq_calls++;
	irq_now = level;
}

static uint64_t rd64(uint64_t gpa)
{
	uint64_t v;

	assert_int_equal(mem_read(&ram, gpa, &v, 8), 0);
	return v;
}

static void wr64(uint64_t gpa, uint64_t v)
{
	assert_int_equal(mem_write(&ram, gpa, &v, 8), 0);
}

static uint64_t alloc_table(void)
{
	uint64_t a = pool_next;

	pool_next += 0x1000;
	memset(mem_ptr(&ram, a, 0x1000), 0, 0x1000);
	return a;
}

/* Address of the entry of level (1 = PT .. 4 = PML4) for iova under root, tables created. */
static uint64_t entry(uint64_t root, uint64_t iova, unsigned level)
{
	uint64_t table = root;

	for (unsigned l = 4; l > level; l--) {
		uint64_t e = table + 8 * ((iova >> (12 + 9 * (l - 1))) & 511);
		uint64_t v = rd64(e);

		if (!(v & IOMMU_PTE_P)) {
			v = alloc_table() | IOMMU_PTE_P | IOMMU_PTE_W;
			wr64(e, v);
		}
		table = v & IOMMU_PTE_ADDR_MASK;
	}
	return table + 8 * ((iova >> (12 + 9 * (level - 1))) & 511);
}

static void map4k(uint64_t root, uint64_t iova, uint64_t pa, bool w)
{
	wr64(entry(root, iova, 1), pa | IOMMU_PTE_P | (w ? IOMMU_PTE_W : 0));
}

static void set_ctx(unsigned sid, uint64_t root, bool en)
{
	iommu_reg_write(&mmu, IOMMU_REG_CTX_BASE + 16 * sid + 8, 8, root);
	iommu_reg_write(&mmu, IOMMU_REG_CTX_BASE + 16 * sid, 8, en ? 1 : 0);
}

static uint64_t reg(uint64_t off)
{
	return iommu_reg_read(&mmu, off, 8);
}

static unsigned reason(void)
{
	return (unsigned)(reg(IOMMU_REG_FINFO) >> IOMMU_FINFO_REASON_SHIFT & 0xff);
}

static int setup(void **state)
{
	(void)state;
	if (mem_init(&ram, RAM_SIZE) < 0)
		return -1;
	pool_next = POOL;
	irq_calls = 0;
	irq_now = false;
	iommu_init(&mmu, 1, 9, &ram, on_irq, NULL);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	iommu_destroy(&mmu);
	mem_exit(&ram);
	return 0;
}

static void test_walk_and_segments(void **state)
{
	uint64_t root = alloc_table();
	struct iommu_seg seg[IOMMU_MAX_SEGS];

	(void)state;
	map4k(root, IOVA, 0x800000, true);
	map4k(root, IOVA + 0x1000, 0x801000, true); /* contiguous with the first */
	map4k(root, IOVA + 0x2000, 0x700000, true); /* elsewhere */
	set_ctx(2, root, true);
	assert_int_equal(iommu_map(&mmu, 2, IOVA + 0x10, 0x2000, false, seg, IOMMU_MAX_SEGS), 2);
	assert_int_equal(seg[0].gpa, 0x800010);
	assert_int_equal(seg[0].len, 0x2000 - 0x10);
	assert_int_equal(seg[1].gpa, 0x700000);
	assert_int_equal(seg[1].len, 0x10);
	/* Not enough room for the segments: -ENOSPC, no fault. */
	assert_int_equal(iommu_map(&mmu, 2, IOVA + 0x10, 0x2000, false, seg, 1), -ENOSPC);
	assert_int_equal(reg(IOMMU_REG_FSTS), 0);
	/* Bad arguments. */
	assert_int_equal(iommu_map(&mmu, 16, IOVA, 1, false, seg, 1), -EINVAL);
	assert_int_equal(iommu_map(&mmu, 2, IOVA, 0, false, seg, 1), -EINVAL);
	/* Large pages: 2 MiB and 1 GiB. */
	wr64(entry(root, 0x60000000, 2), 0x400000 | IOMMU_PTE_P | IOMMU_PTE_W | IOMMU_PTE_PS);
	wr64(entry(root, 0x80000000, 3), 0 | IOMMU_PTE_P | IOMMU_PTE_PS);
	assert_int_equal(iommu_map(&mmu, 2, 0x601ffff0, 0x10, true, seg, 1), 1);
	assert_int_equal(seg[0].gpa, 0x5ffff0);
	assert_int_equal(iommu_map(&mmu, 2, 0x80123456, 0x100, false, seg, 1), 1);
	assert_int_equal(seg[0].gpa, 0x123456);
	assert_int_equal(iommu_map(&mmu, 2, 0x80123456, 1, true, seg, 1), -EFAULT);
	assert_int_equal(reason(), IOMMU_F_READ_ONLY);
}

static void test_faults(void **state)
{
	uint64_t root = alloc_table();
	struct iommu_seg seg[IOMMU_MAX_SEGS];

	(void)state;
	map4k(root, IOVA, 0x800000, false);
	set_ctx(3, root, true);
	iommu_reg_write(&mmu, IOMMU_REG_FCTL, 4, 1);
	assert_int_equal(irq_calls, 0);
	/* Read-only page. */
	assert_int_equal(iommu_map(&mmu, 3, IOVA + 8, 8, true, seg, 1), -EFAULT);
	assert_int_equal(reg(IOMMU_REG_FSTS), IOMMU_FSTS_FAULT);
	assert_int_equal(reg(IOMMU_REG_FADDR), IOVA + 8);
	assert_int_equal(reg(IOMMU_REG_FINFO), 3 | IOMMU_FINFO_WRITE | 2ull << 16);
	assert_true(irq_now);
	assert_int_equal(irq_calls, 1);
	/* Unmapped page, latched already: overflow, first fault kept, counted. */
	assert_int_equal(iommu_map(&mmu, 3, IOVA + 0xff8, 16, false, seg, 2), -EFAULT);
	assert_int_equal(reg(IOMMU_REG_FSTS), IOMMU_FSTS_FAULT | IOMMU_FSTS_OVERFLOW);
	assert_int_equal(reg(IOMMU_REG_FADDR), IOVA + 8);
	assert_int_equal(reg(IOMMU_REG_FCOUNT), 2);
	assert_int_equal(irq_calls, 1);
	/* W1C: clearing OVERFLOW alone keeps the fault and the interrupt. */
	iommu_reg_write(&mmu, IOMMU_REG_FSTS, 1, IOMMU_FSTS_OVERFLOW);
	assert_int_equal(reg(IOMMU_REG_FSTS), IOMMU_FSTS_FAULT);
	assert_true(irq_now);
	iommu_reg_write(&mmu, IOMMU_REG_FSTS, 8, ~0ull);
	assert_int_equal(reg(IOMMU_REG_FSTS), 0);
	assert_false(irq_now);
	/* The unmapped page again, now latched: the first byte of the missing page, level 1. */
	assert_int_equal(iommu_map(&mmu, 3, IOVA + 0xff8, 16, false, seg, 2), -EFAULT);
	assert_int_equal(reg(IOMMU_REG_FADDR), IOVA + 0x1000);
	assert_int_equal(reg(IOMMU_REG_FINFO), 3 | 1ull << 16 | 1ull << 24);
	iommu_reg_write(&mmu, IOMMU_REG_FSTS, 8, 1);
	/* Disabled context, address beyond 48 bits, table and target outside RAM. */
	set_ctx(4, root, false);
	assert_int_equal(iommu_map(&mmu, 4, IOVA, 1, false, seg, 1), -EFAULT);
	assert_int_equal(reason(), IOMMU_F_CTX_DISABLED);
	iommu_reg_write(&mmu, IOMMU_REG_FSTS, 8, 1);
	assert_int_equal(iommu_map(&mmu, 3, (1ull << 48) - 4, 8, false, seg, 2), -EFAULT);
	assert_int_equal(reason(), IOMMU_F_BAD_ADDRESS);
	assert_int_equal(reg(IOMMU_REG_FADDR), 1ull << 48);
	iommu_reg_write(&mmu, IOMMU_REG_FSTS, 8, 1);
	assert_int_equal(iommu_map(&mmu, 3, UINT64_MAX, 1, false, seg, 2), -EFAULT);
	assert_int_equal(reason(), IOMMU_F_BAD_ADDRESS);
	iommu_reg_write(&mmu, IOMMU_REG_FSTS, 8, 1);
	set_ctx(5, RAM_SIZE + 0x1000, true);
	assert_int_equal(iommu_map(&mmu, 5, IOVA, 1, false, seg, 1), -EFAULT);
	assert_int_equal(reg(IOMMU_REG_FINFO), 5 | 5ull << 16 | 4ull << 24);
	iommu_reg_write(&mmu, IOMMU_REG_FSTS, 8, 1);
	map4k(root, IOVA + 0x5000, RAM_SIZE, true);
	assert_int_equal(iommu_map(&mmu, 3, IOVA + 0x5000, 1, false, seg, 1), -EFAULT);
	assert_int_equal(reason(), IOMMU_F_TARGET_NOT_RAM);
	/* FCTL gates the interrupt of a latched fault. */
	iommu_reg_write(&mmu, IOMMU_REG_FCTL, 8, 0);
	assert_false(irq_now);
	iommu_reg_write(&mmu, IOMMU_REG_FCTL, 8, 1);
	assert_true(irq_now);
	iommu_record_fault(&mmu, 7, 0x1234, true, IOMMU_F_DIRECT_REFUSED);
	assert_int_equal(reg(IOMMU_REG_FSTS), 3);
}

static void test_iotlb(void **state)
{
	uint64_t root = alloc_table();
	struct iommu_seg seg[IOMMU_MAX_SEGS];

	(void)state;
	map4k(root, IOVA, 0x800000, true);
	set_ctx(0, root, true);
	set_ctx(1, root, true);
	assert_int_equal(iommu_map(&mmu, 0, IOVA, 8, false, seg, 1), 1);
	assert_int_equal(iommu_map(&mmu, 1, IOVA, 8, false, seg, 1), 1);
	assert_int_equal(reg(IOMMU_REG_TLB_MISSES), 2);
	assert_int_equal(reg(IOMMU_REG_TLB_USED), 2);
	/* A changed PTE is not seen until invalidated. */
	map4k(root, IOVA, 0x900000, true);
	assert_int_equal(iommu_map(&mmu, 0, IOVA, 8, false, seg, 1), 1);
	assert_int_equal(seg[0].gpa, 0x800000);
	assert_int_equal(reg(IOMMU_REG_TLB_HITS), 1);
	iommu_reg_write(&mmu, IOMMU_REG_INV_ADDR, 8, IOVA + 0x1000);
	iommu_reg_write(&mmu, IOMMU_REG_INV_CMD, 4, IOMMU_INV_PAGE); /* another page */
	assert_int_equal(reg(IOMMU_REG_TLB_USED), 2);
	iommu_reg_write(&mmu, IOMMU_REG_INV_ADDR, 8, IOVA + 0xfff);
	iommu_reg_write(&mmu, IOMMU_REG_INV_CMD, 4, IOMMU_INV_PAGE); /* sid 0, this page */
	assert_int_equal(reg(IOMMU_REG_TLB_USED), 1);
	assert_int_equal(iommu_map(&mmu, 0, IOVA, 8, false, seg, 1), 1);
	assert_int_equal(seg[0].gpa, 0x900000);
	/* sid 1 still has the old translation until its sid is invalidated. */
	assert_int_equal(iommu_map(&mmu, 1, IOVA, 8, false, seg, 1), 1);
	assert_int_equal(seg[0].gpa, 0x800000);
	iommu_reg_write(&mmu, IOMMU_REG_INV_CMD, 4, IOMMU_INV_SID | 1 << 8);
	assert_int_equal(iommu_map(&mmu, 1, IOVA, 8, false, seg, 1), 1);
	assert_int_equal(seg[0].gpa, 0x900000);
	iommu_reg_write(&mmu, IOMMU_REG_INV_CMD, 4, IOMMU_INV_ALL);
	assert_int_equal(reg(IOMMU_REG_TLB_USED), 0);
	assert_int_equal(reg(IOMMU_REG_INV_CMD), 0);
	/* More pages than entries: replacement keeps every translation right. */
	for (uint64_t i = 0; i < 2 * IOMMU_TLB_ENTRIES; i++)
		map4k(root, IOVA + 0x100000 + i * 0x1000, 0x400000 + ((i * 37) % 64) * 0x1000,
		      true);
	for (int round = 0; round < 2; round++)
		for (uint64_t i = 0; i < 2 * IOMMU_TLB_ENTRIES; i++) {
			assert_int_equal(
			    iommu_map(&mmu, 0, IOVA + 0x100000 + i * 0x1000 + 5, 1, true, seg, 1),
			    1);
			assert_int_equal(seg[0].gpa, 0x400000 + ((i * 37) % 64) * 0x1000 + 5);
		}
	assert_int_equal(reg(IOMMU_REG_TLB_USED), IOMMU_TLB_ENTRIES);
	/* A context write drops that sid's entries. */
	set_ctx(0, root, true);
	assert_int_equal(reg(IOMMU_REG_TLB_USED), 0);
}

static void test_registers(void **state)
{
	(void)state;
	assert_int_equal(reg(IOMMU_REG_ID), IOMMU_ID_VALUE | 1ull << 32);
	assert_int_equal(iommu_reg_read(&mmu, IOMMU_REG_ID + 4, 4), 1);
	assert_int_equal(iommu_reg_read(&mmu, IOMMU_REG_ID + 1, 2), 0x4d4f);
	assert_int_equal(reg(IOMMU_REG_CAP), 16 | 3 << 8 | 32 << 16 | 1 << 24 | 9ull << 32);
	/* Accesses across two registers, of odd sizes, or outside the block: 0 / ignored. */
	assert_int_equal(iommu_reg_read(&mmu, IOMMU_REG_ID + 6, 4), 0);
	assert_int_equal(iommu_reg_read(&mmu, IOMMU_REG_ID, 3), 0);
	assert_int_equal(iommu_reg_read(&mmu, IOMMU_REG_SIZE, 1), 0);
	iommu_reg_write(&mmu, IOMMU_REG_CTX_BASE + 8 + 6, 4, 0xffffffff);
	assert_int_equal(reg(IOMMU_REG_CTX_BASE + 8), 0);
	/* Byte writes build up a context root; low bits and bits above 51 stay 0. */
	for (unsigned i = 0; i < 8; i++)
		iommu_reg_write(&mmu, IOMMU_REG_CTX_BASE + 16 * 15 + 8 + i, 1, 0xff);
	assert_int_equal(reg(IOMMU_REG_CTX_BASE + 16 * 15 + 8), IOMMU_PTE_ADDR_MASK);
	iommu_reg_write(&mmu, IOMMU_REG_CTX_BASE + 16 * 15, 2, 0xffff);
	assert_int_equal(reg(IOMMU_REG_CTX_BASE + 16 * 15), 1);
	iommu_reg_write(&mmu, IOMMU_REG_FCTL, 8, ~0ull);
	assert_int_equal(reg(IOMMU_REG_FCTL), 1);
	iommu_reg_write(&mmu, IOMMU_REG_FCOUNT, 8, 5);
	assert_int_equal(reg(IOMMU_REG_FCOUNT), 0);
	assert_int_equal(reg(0xff8), 0);
}

static void test_policy(void **state)
{
	struct iommu_set set = {{NULL}};
	struct iommu_seg seg[IOMMU_MAX_SEGS];
	uint64_t root = alloc_table();

	(void)state;
	set.unit[1] = &mmu;
	map4k(root, IOVA, 0x800000, true);
	set_ctx(2, root, true);
	set_ctx(3, root, true);
	/* Unbound: mid 0 passes through as one segment; unknown mids are -EINVAL. */
	assert_int_equal(iommu_dma_map(&set, 0, -1, 0, 0, 0x1234, 10, true, seg, 8), 1);
	assert_int_equal(seg[0].gpa, 0x1234);
	assert_int_equal(seg[0].len, 10);
	assert_int_equal(iommu_dma_map(NULL, 0, -1, 0, 0, 0x1234, 10, false, seg, 8), 1);
	assert_int_equal(iommu_dma_map(&set, 0, -1, 2, 0, 0, 10, false, seg, 8), -EINVAL);
	assert_int_equal(iommu_dma_map(&set, 0, -1, 200, 0, 0, 10, false, seg, 8), -EINVAL);
	assert_int_equal(iommu_dma_map(NULL, 0, -1, 1, 0, 0, 10, false, seg, 8), -EINVAL);
	assert_int_equal(iommu_dma_map(&set, 0, -1, 1, 3, IOVA, 10, false, seg, 8), 1);
	assert_int_equal(reg(IOMMU_REG_FCOUNT), 0);
	/* Bound to IOMMU 1, sid 2: mid 0 and other sids are refused and recorded. */
	assert_int_equal(iommu_dma_map(&set, 1, 2, 0, 0, 0x1234, 10, true, seg, 8), -EFAULT);
	assert_int_equal(reason(), IOMMU_F_DIRECT_REFUSED);
	assert_int_equal(reg(IOMMU_REG_FADDR), 0x1234);
	iommu_reg_write(&mmu, IOMMU_REG_FSTS, 8, 1);
	assert_int_equal(iommu_dma_map(&set, 1, 2, 1, 3, IOVA, 10, false, seg, 8), -EFAULT);
	assert_int_equal(reason(), IOMMU_F_WRONG_ID);
	assert_int_equal(reg(IOMMU_REG_FINFO) & 0xf, 3);
	iommu_reg_write(&mmu, IOMMU_REG_FSTS, 8, 1);
	assert_int_equal(iommu_dma_map(&set, 1, 2, 2, 2, IOVA, 10, false, seg, 8), -EFAULT);
	assert_int_equal(reason(), IOMMU_F_WRONG_ID);
	iommu_reg_write(&mmu, IOMMU_REG_FSTS, 8, 1);
	assert_int_equal(iommu_dma_map(&set, 1, 2, 1, 2, IOVA, 10, false, seg, 8), 1);
	assert_int_equal(seg[0].gpa, 0x800000);
	/* Bound to IOMMU 1 with any sid. */
	assert_int_equal(iommu_dma_map(&set, 1, -1, 1, 3, IOVA, 10, false, seg, 8), 1);
	assert_int_equal(reg(IOMMU_REG_FCOUNT), 3);
}

/* The device: created under qtest from the command line, reached through emulate_io(). */
static void test_device(void **state)
{
	static struct vm_config cfg;
	struct ioreq_ctx io;
	struct irq_chip chip;
	struct hw_ctx ctx = {0};
	struct hw_set set;
	struct io_request req;
	struct iommu_set *is;
	struct iommu_seg seg[1];

	(void)state;
	memset(&cfg, 0, sizeof(cfg));
	cfg.niommus = 1;
	cfg.iommus[0] = (struct iommu_config){.id = 3, .base = 0xfd000000, .irq = 11};
	ioreq_init(&io, &ram);
	irq_init(&chip, NULL, NULL);
	ctx.io = &io;
	ctx.irq = &chip;
	ctx.in_fd = ctx.out_fd = -1;
	ctx.cfg = &cfg;
	ctx.qtest = true;
	assert_int_equal(hw_init_all(&set, &ctx), 0);
	assert_int_equal(set.n, 1); /* only the devices a script can program */
	is = hw_iommu_set(hw_state(&set, &hw_iommu));
	assert_non_null(is);
	assert_non_null(is->unit[3]);
	assert_null(is->unit[1]);
	assert_null(hw_iommu_set(NULL));
	memset(&req, 0, sizeof(req));
	req.type = REQ_MMIO;
	req.reqs.mmio.direction = REQUEST_READ;
	req.reqs.mmio.address = 0xfd000008;
	req.reqs.mmio.size = 4;
	assert_int_equal(emulate_io(&io, &req), 0);
	assert_int_equal(emulate_mmio_post(&io, &req), 0);
	assert_int_equal(req.reqs.mmio.data[3], 3); /* CAP bits 24..31: the id */
	/* A fault raises line 11 once FCTL.IE is written (a masked byte write). */
	memset(&req, 0, sizeof(req));
	req.type = REQ_MMIO;
	req.reqs.mmio.direction = REQUEST_WRITE;
	req.reqs.mmio.address = 0xfd000010;
	req.reqs.mmio.size = 8;
	req.reqs.mmio.data[0] = 1;
	req.reqs.mmio.mask = 1;
	assert_int_equal(emulate_io(&io, &req), 0);
	assert_int_equal(emulate_mmio_post(&io, &req), 0);
	assert_int_equal(iommu_dma_map(is, 0, -1, 3, 0, IOVA, 1, false, seg, 1), -EFAULT);
	assert_int_equal(irq_line_level(&chip, 11), 1);
	iommu_reg_write(is->unit[3], IOMMU_REG_FSTS, 8, 1);
	assert_int_equal(irq_line_level(&chip, 11), 0);
	hw_exit_all(&set);
	ioreq_exit(&io);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_walk_and_segments, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_faults, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_iotlb, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_registers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_policy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_device, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
