/* dma: coreio-timerdma copies and fills guest memory; every byte and the guard bytes are checked.
 */
#include "rt.h"
#include "timerdma.h"

#define DMA_AREA (128 * 1024 + 8192)

static uint8_t dma_src[DMA_AREA] __attribute__((aligned(4096)));
static uint8_t dma_dst[DMA_AREA] __attribute__((aligned(4096)));
static uint64_t dma_base;
static volatile uint32_t dma_irqs;

static void dma_irq(unsigned vector)
{
	uint32_t st = mmio_read32(dma_base + TD_STATUS);

	(void)vector;
	mmio_write32(dma_base + TD_STATUS, st);
	(void)mmio_read32(dma_base + TD_STATUS);
	if (st & TD_STATUS_DMA_DONE)
		dma_irqs++;
}

static uint8_t dma_pattern(uint32_t seed, size_t i)
{
	uint32_t x = seed + (uint32_t)i * 2654435761u;

	return (uint8_t)(x >> 24 ^ x >> 8 ^ i);
}

/* Start a command and poll STATUS until it ends; return the STATUS bits it set. */
static uint32_t dma_run(uint32_t cmd, uint64_t src, uint64_t dst, uint32_t len)
{
	uint64_t start = rt_ns();
	uint32_t st;

	mmio_write64(dma_base + TD_DMA_SRC, src);
	mmio_write64(dma_base + TD_DMA_DST, dst);
	mmio_write32(dma_base + TD_DMA_LEN, len);
	mmio_write32(dma_base + TD_DMA_CMD, cmd);
	while (!((st = mmio_read32(dma_base + TD_STATUS)) &
		 (TD_STATUS_DMA_DONE | TD_STATUS_DMA_ERR))) {
		if (rt_ns() - start > 10000000000ull)
			rt_fail("DMA cmd %u len %u did not finish within 10 s (STATUS %#x BUSY %u)",
				cmd, len, st, mmio_read32(dma_base + TD_DMA_BUSY));
		rt_pause();
	}
	if (mmio_read32(dma_base + TD_DMA_BUSY))
		rt_fail("DMA_BUSY still set with STATUS %#x", st);
	mmio_write32(dma_base + TD_STATUS, st);
	return st;
}

/* Copy len bytes from dma_src + so to dma_dst + dof and check them and the bytes around. */
static void dma_copy_case(uint32_t len, size_t so, size_t dof, uint32_t seed)
{
	uint32_t st;

	for (size_t i = 0; i < DMA_AREA; i++)
		dma_src[i] = dma_pattern(seed, i);
	memset(dma_dst, 0x5a, DMA_AREA);
	rt_barrier();
	st = dma_run(TD_CMD_COPY, (uint64_t)&dma_src[so], (uint64_t)&dma_dst[dof], len);
	if (st != TD_STATUS_DMA_DONE)
		rt_fail("copy len %u: STATUS %#x", len, st);
	for (size_t i = 0; i < DMA_AREA; i++) {
		uint8_t want = i >= dof && i < dof + len ? dma_src[so + i - dof] : 0x5a;

		if (dma_dst[i] != want)
			rt_fail("copy len %u src+%#lx dst+%#lx: byte %#lx is %#x, want %#x", len,
				(unsigned long)so, (unsigned long)dof, (unsigned long)i, dma_dst[i],
				want);
	}
	for (size_t i = 0; i < DMA_AREA; i++)
		if (dma_src[i] != dma_pattern(seed, i))
			rt_fail("copy len %u changed the source at %#lx", len, (unsigned long)i);
	rt_printf("dma: copy len=%u src=%#lx dst=%#lx ok\n", len, (unsigned long)&dma_src[so],
		  (unsigned long)&dma_dst[dof]);
}

static void dma_fill_case(uint32_t len, size_t dof, uint8_t byte)
{
	uint32_t st;

	memset(dma_dst, 0x5a, DMA_AREA);
	rt_barrier();
	st = dma_run(TD_CMD_FILL, byte, (uint64_t)&dma_dst[dof], len);
	if (st != TD_STATUS_DMA_DONE)
		rt_fail("fill len %u: STATUS %#x", len, st);
	for (size_t i = 0; i < DMA_AREA; i++) {
		uint8_t want = i >= dof && i < dof + len ? byte : 0x5a;

		if (dma_dst[i] != want)
			rt_fail("fill len %u: byte %#lx is %#x, want %#x", len, (unsigned long)i,
				dma_dst[i], want);
	}
	rt_printf("dma: fill len=%u dst=%#lx byte=%#x ok\n", len, (unsigned long)&dma_dst[dof],
		  byte);
}

static int dma_main(uint64_t arg)
{
	const struct coreio_bootinfo *bi = rt_bootinfo;
	uint32_t st;

	(void)arg;
	rt_wait_claimed(dma_base, TD_ID, 30000);
	if (mmio_read32(dma_base + TD_ID) != TD_ID_VALUE)
		rt_fail("range 0 is not coreio-timerdma (ID %#x)", mmio_read32(dma_base + TD_ID));
	mmio_write32(dma_base + TD_STATUS, 7);
	rt_printf("dma: buffers src=%p dst=%p\n", (void *)dma_src, (void *)dma_dst);

	dma_copy_case(1, 0, 0, 1);
	dma_copy_case(1, 4095, 1, 2);
	dma_copy_case(31, 3, 7, 3);
	dma_copy_case(4096, 0, 0, 4);
	dma_copy_case(4096, 1, 4093, 5);
	dma_copy_case(65536 + 7, 5, 3, 6);
	/* Crossing page boundaries on both sides. */
	dma_copy_case(10, 4096 - 3, 8192 - 5, 7);
	dma_copy_case(8192 + 33, 4096 - 17, 4096 - 1, 8);
	dma_fill_case(1, 0, 0xc3);
	dma_fill_case(1000, 4095, 0x3c);
	dma_fill_case(65536 + 7, 1, 0x00);

	/* A transfer outside guest RAM ends with the error bit. */
	st = dma_run(TD_CMD_FILL, 0x11, bi->mem_size + 0x1000, 64);
	if (st != TD_STATUS_DMA_ERR)
		rt_fail("fill outside RAM: STATUS %#x, want the error bit", st);
	rt_printf("dma: fill outside RAM at %#lx: error bit ok\n",
		  (unsigned long)(bi->mem_size + 0x1000));

	/* One copy that signals its end by interrupt instead of polling. */
	if (bi->ranges[0].nirq) {
		uint64_t start = rt_ns();

		for (size_t i = 0; i < 4096; i++)
			dma_src[i] = (uint8_t)(i * 13);
		memset(dma_dst, 0, 4096);
		mmio_write32(dma_base + TD_CTRL, TD_CTRL_IRQ_EN);
		mmio_write64(dma_base + TD_DMA_SRC, (uint64_t)dma_src);
		mmio_write64(dma_base + TD_DMA_DST, (uint64_t)dma_dst);
		mmio_write32(dma_base + TD_DMA_LEN, 4096);
		mmio_write32(dma_base + TD_DMA_CMD, TD_CMD_COPY);
		while (dma_irqs == 0) {
			if (rt_ns() - start > 10000000000ull)
				rt_fail("no DMA-done interrupt within 10 s");
			rt_pause();
		}
		if (memcmp(dma_src, dma_dst, 4096))
			rt_fail("copy with interrupt: data differs");
		mmio_write32(dma_base + TD_CTRL, 0);
		rt_printf("dma: copy len=4096 with interrupt ok\n");
	}
	rt_printf("SUCCESS\n");
	return 0;
}

void guest_start(unsigned cpu)
{
	const struct coreio_bootinfo *bi = rt_bootinfo;

	if (cpu != 0)
		rt_park();
	if (bi->nranges < 1)
		rt_fail("no vMMIO range (run with --vmmio)");
	dma_base = bi->ranges[0].start;
	if (bi->ranges[0].nirq) {
		unsigned pin = bi->ranges[0].irq[0];

		rt_set_irq_handler(RT_IRQ_VECTOR(pin), dma_irq);
		rt_ioapic_route(pin, RT_IRQ_VECTOR(pin), true, false, 0);
	}
	run_user(dma_main, 0, RT_USER_IF);
}
