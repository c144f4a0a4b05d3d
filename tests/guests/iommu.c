/* iommu: a small IOMMU driver maps buffers for coreio-timerdma and checks copies, faults, IOTLB.
 *
 * --append "iommu=BASE irq=LINE sid=S [expect=refused]": the IOMMU's register
 * block and fault line (docs/iommu.md), the sid the device model uses. With
 * expect=refused the model does direct DMA (mid 0) on a range bound to the
 * IOMMU, and every command must fail with a DIRECT_REFUSED fault.
 */
#include "rt.h"
#include "timerdma.h"

/* The register map of docs/iommu.md. */
#define IO_ID	    0x000
#define IO_FCTL	    0x010
#define IO_FSTS	    0x018
#define IO_FADDR    0x020
#define IO_FINFO    0x028
#define IO_FCOUNT   0x030
#define IO_INV_ADDR 0x038
#define IO_INV_CMD  0x040
#define IO_CTX(sid) (0x100 + 16 * (sid))
#define IO_ID_VALUE 0x554d4f49u
#define INV_PAGE    3u
#define PTE_P	    1ull
#define PTE_W	    2ull

#define IOVA_SRC  0x40000000ull /* 4 pages -> src, in reverse order */
#define IOVA_DST  0x40010000ull /* 4 pages -> dst, writable */
#define IOVA_RO	  0x40020000ull /* 1 page -> ro, read-only */
#define IOVA_HOLE 0x40030000ull /* nothing */
#define PAGE	  4096u

static uint64_t pml4[512] __attribute__((aligned(4096)));
static uint64_t pdpt[512] __attribute__((aligned(4096)));
static uint64_t pd[512] __attribute__((aligned(4096)));
static uint64_t pt[512] __attribute__((aligned(4096)));
static uint8_t src[4 * PAGE] __attribute__((aligned(4096)));
static uint8_t dst[4 * PAGE] __attribute__((aligned(4096)));
static uint8_t dst2[PAGE] __attribute__((aligned(4096)));
static uint8_t ro[PAGE] __attribute__((aligned(4096)));

static uint64_t td_base, mmu;
static unsigned sid;
/* Written by the fault interrupt handler. */
static volatile uint32_t fault_irqs;
static volatile uint64_t last_fsts, last_faddr, last_finfo;

static void fault_irq(unsigned vector)
{
	uint64_t st = mmio_read64(mmu + IO_FSTS);

	(void)vector;
	if (!(st & 1))
		return; /* kvm_pvm delivers a level interrupt once more after EOI */
	last_fsts = st;
	last_faddr = mmio_read64(mmu + IO_FADDR);
	last_finfo = mmio_read64(mmu + IO_FINFO);
	mmio_write64(mmu + IO_FSTS, st); /* write 1 to clear: the line drops */
	fault_irqs++;
}

static void map_page(uint64_t iova, const void *page, bool writable)
{
	pt[(iova >> 12) & 511] = (uint64_t)page | PTE_P | (writable ? PTE_W : 0);
}

/* Run one timerdma command and poll STATUS; return the STATUS bits it set. */
static uint32_t dma_run(uint32_t cmd, uint64_t s, uint64_t d, uint32_t len)
{
	uint64_t start = rt_ns();
	uint32_t st;

	mmio_write64(td_base + TD_DMA_SRC, s);
	mmio_write64(td_base + TD_DMA_DST, d);
	mmio_write32(td_base + TD_DMA_LEN, len);
	mmio_write32(td_base + TD_DMA_CMD, cmd);
	while (
	    !((st = mmio_read32(td_base + TD_STATUS)) & (TD_STATUS_DMA_DONE | TD_STATUS_DMA_ERR))) {
		if (rt_ns() - start > 10000000000ull)
			rt_fail("DMA cmd %u len %u did not finish within 10 s", cmd, len);
		rt_pause();
	}
	mmio_write32(td_base + TD_STATUS, st);
	return st;
}

/* Wait for the fault interrupt number n and check what the handler recorded. */
static void expect_fault(uint32_t n, uint64_t faddr, bool write, unsigned reason)
{
	uint64_t start = rt_ns();
	unsigned fsid, fwrite, freason;

	while (fault_irqs < n) {
		if (rt_ns() - start > 10000000000ull)
			rt_fail("no IOMMU fault interrupt %u within 10 s (FSTS %#lx)", n,
				(unsigned long)mmio_read64(mmu + IO_FSTS));
		rt_pause();
	}
	fsid = last_finfo & 0xf;
	fwrite = (last_finfo >> 8) & 1;
	freason = (last_finfo >> 16) & 0xff;
	if (last_faddr != faddr || fsid != sid || fwrite != write || freason != reason)
		rt_fail("fault %u: addr %#lx sid %u write %u reason %u, want %#lx %u %u %u", n,
			(unsigned long)last_faddr, fsid, fwrite, freason, (unsigned long)faddr, sid,
			write, reason);
	rt_printf("iommu: fault %u addr=%#lx sid=%u write=%u reason=%u ok\n", n,
		  (unsigned long)faddr, sid, write, reason);
}

static uint8_t pat(size_t i)
{
	return (uint8_t)(i * 7 + (i >> 12) * 31 + 1);
}

static int refused_main(void)
{
	uint32_t st;

	/* The model was started with --mid 0 on a range bound to the IOMMU. */
	st = dma_run(TD_CMD_FILL, 0x11, (uint64_t)dst, 64);
	if (st != TD_STATUS_DMA_ERR)
		rt_fail("direct fill on a bound range: STATUS %#x, want the error bit", st);
	if (dst[0] != 0)
		rt_fail("direct fill on a bound range wrote memory");
	expect_fault(1, (uint64_t)dst, true, 7);
	rt_printf("SUCCESS\n");
	return 0;
}

static int iommu_main(uint64_t refused)
{
	uint32_t st;
	uint64_t count;

	rt_wait_claimed(td_base, TD_ID, 30000);
	if (mmio_read32(td_base + TD_ID) != TD_ID_VALUE)
		rt_fail("range 0 is not coreio-timerdma");
	if ((uint32_t)mmio_read64(mmu + IO_ID) != IO_ID_VALUE)
		rt_fail("no IOMMU at %#lx (ID %#lx)", (unsigned long)mmu,
			(unsigned long)mmio_read64(mmu + IO_ID));
	mmio_write32(td_base + TD_STATUS, 7);
	mmio_write64(mmu + IO_FCTL, 1);
	if (refused)
		return refused_main();

	/* The driver: tables in guest memory, one context. */
	pml4[0] = (uint64_t)pdpt | PTE_P | PTE_W;
	pdpt[1] = (uint64_t)pd | PTE_P | PTE_W;
	pd[0] = (uint64_t)pt | PTE_P | PTE_W;
	for (unsigned i = 0; i < 4; i++) {
		map_page(IOVA_SRC + i * PAGE, src + (3 - i) * PAGE, false);
		map_page(IOVA_DST + i * PAGE, dst + i * PAGE, true);
	}
	map_page(IOVA_RO, ro, false);
	rt_barrier();
	mmio_write64(mmu + IO_CTX(sid) + 8, (uint64_t)pml4);
	mmio_write64(mmu + IO_CTX(sid), 1);
	rt_printf("iommu: sid %u root %#lx\n", sid, (unsigned long)pml4);

	/* A copy across pages: IOVA page i of the source is src page 3 - i. */
	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = pat(i);
	memset(dst, 0x5a, sizeof(dst));
	rt_barrier();
	st = dma_run(TD_CMD_COPY, IOVA_SRC + 100, IOVA_DST + 50, 3 * PAGE);
	if (st != TD_STATUS_DMA_DONE)
		rt_fail("mapped copy: STATUS %#x", st);
	for (size_t i = 0; i < sizeof(dst); i++) {
		size_t iova_off = i - 50 + 100; /* source IOVA offset of dst byte i */
		uint8_t want = i >= 50 && i < 50 + 3 * PAGE
				   ? src[(3 - iova_off / PAGE) * PAGE + iova_off % PAGE]
				   : 0x5a;

		if (dst[i] != want)
			rt_fail("mapped copy: dst byte %#lx is %#x, want %#x", (unsigned long)i,
				dst[i], want);
	}
	rt_printf("iommu: mapped copy of %u bytes across pages ok\n", 3 * PAGE);

	/* A write to the read-only page faults; memory stays as it was. */
	ro[0] = 0x77;
	rt_barrier();
	st = dma_run(TD_CMD_FILL, 0x33, IOVA_RO + 16, 32);
	if (st != TD_STATUS_DMA_ERR)
		rt_fail("fill of a read-only page: STATUS %#x, want the error bit", st);
	expect_fault(1, IOVA_RO + 16, true, 2);
	if (ro[16] != 0 || ro[0] != 0x77)
		rt_fail("fill of a read-only page changed it");
	/* Reading it is fine. */
	st = dma_run(TD_CMD_COPY, IOVA_RO, IOVA_DST, 8);
	if (st != TD_STATUS_DMA_DONE || dst[0] != 0x77)
		rt_fail("copy from the read-only page: STATUS %#x byte %#x", st, dst[0]);
	/* An unmapped source faults on the read. */
	st = dma_run(TD_CMD_COPY, IOVA_HOLE + 8, IOVA_DST, 64);
	if (st != TD_STATUS_DMA_ERR)
		rt_fail("copy from an unmapped page: STATUS %#x", st);
	expect_fault(2, IOVA_HOLE + 8, false, 1);

	/* Invalidation: a retargeted page keeps its old translation until invalidated. */
	st = dma_run(TD_CMD_FILL, 0x01, IOVA_DST, 16);
	if (st != TD_STATUS_DMA_DONE || dst[0] != 0x01)
		rt_fail("fill through the IOMMU: STATUS %#x", st);
	map_page(IOVA_DST, dst2, true);
	rt_barrier();
	st = dma_run(TD_CMD_FILL, 0x02, IOVA_DST, 16);
	if (st != TD_STATUS_DMA_DONE || dst[0] != 0x02 || dst2[0] != 0)
		rt_fail("stale IOTLB entry not used: dst %#x dst2 %#x", dst[0], dst2[0]);
	mmio_write64(mmu + IO_INV_ADDR, IOVA_DST);
	mmio_write64(mmu + IO_INV_CMD, INV_PAGE | sid << 8);
	st = dma_run(TD_CMD_FILL, 0x03, IOVA_DST, 16);
	if (st != TD_STATUS_DMA_DONE || dst[0] != 0x02 || dst2[0] != 0x03)
		rt_fail("invalidation had no effect: dst %#x dst2 %#x", dst[0], dst2[0]);
	rt_printf("iommu: invalidation ok\n");

	count = mmio_read64(mmu + IO_FCOUNT);
	if (count != 2 || fault_irqs != 2)
		rt_fail("FCOUNT %lu, %u interrupts: want 2", (unsigned long)count, fault_irqs);
	rt_printf("SUCCESS\n");
	return 0;
}

void guest_start(unsigned cpu)
{
	const struct coreio_bootinfo *bi = rt_bootinfo;
	unsigned line;

	if (cpu != 0)
		rt_park();
	if (bi->nranges < 1)
		rt_fail("no vMMIO range (run with --vmmio)");
	td_base = bi->ranges[0].start;
	mmu = rt_arg_u64("iommu", 0);
	line = (unsigned)rt_arg_u64("irq", 9);
	sid = (unsigned)rt_arg_u64("sid", 0);
	if (!mmu || line > 23 || sid > 15)
		rt_fail("run with --append \"iommu=BASE irq=LINE sid=S\"");
	rt_set_irq_handler(RT_IRQ_VECTOR(line), fault_irq);
	rt_ioapic_route(line, RT_IRQ_VECTOR(line), true, false, 0);
	{
		char buf[16];

		run_user(iommu_main, rt_arg("expect", buf, sizeof(buf)) && buf[0] == 'r',
			 RT_USER_IF);
	}
}
