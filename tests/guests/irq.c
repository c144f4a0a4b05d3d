/* irq: range 0's IRQ line through the IOAPIC, level- then edge-triggered, counted exactly. */
#include "rt.h"
#include "timerdma.h"

/* Counters the interrupt handler keeps (CPL 0) and the CPL 3 loop reads. */
static volatile uint32_t irq_handled;  /* entries that found STATUS.DMA-done set */
static volatile uint32_t irq_spurious; /* entries that found STATUS clear */
static volatile uint32_t irq_bad;      /* entries that found an unexpected STATUS */
static volatile uint32_t irq_last_status;
static uint64_t irq_base;
static unsigned irq_pin;
static uint8_t irq_scratch[64];

/*
 * The interrupt handler (CPL 0): read STATUS, write it back to clear it
 * (W1C lowers the line), read it again so the posted write has reached the
 * device before the runtime sends the EOI.
 */
static void irq_handler(unsigned vector)
{
	uint32_t st = mmio_read32(irq_base + TD_STATUS);

	(void)vector;
	irq_last_status = st;
	if (st == 0) {
		irq_spurious++;
		return;
	}
	mmio_write32(irq_base + TD_STATUS, st);
	(void)mmio_read32(irq_base + TD_STATUS);
	if (st == TD_STATUS_DMA_DONE)
		irq_handled++;
	else
		irq_bad++;
}

/* Run n fill commands, each raising the line once; check the handler saw each exactly once. */
static void irq_phase(const char *mode, unsigned n, unsigned irq_spurious_max)
{
	uint64_t t0 = rt_ns();

	irq_handled = 0;
	irq_spurious = 0;
	irq_bad = 0;
	rt_printf("irq: %s-triggered, pin %u, %u interrupts\n", mode, irq_pin, n);
	for (unsigned i = 0; i < n; i++) {
		uint32_t before = irq_handled;
		uint64_t start = rt_ns();

		mmio_write64(irq_base + TD_DMA_SRC, 0x40 + i);
		mmio_write64(irq_base + TD_DMA_DST, (uint64_t)&irq_scratch[i % 32]);
		mmio_write32(irq_base + TD_DMA_LEN, 8);
		mmio_write32(irq_base + TD_DMA_CMD, TD_CMD_FILL);
		while (irq_handled == before) {
			if (irq_bad)
				rt_fail("%s: unexpected STATUS %#x in the handler", mode,
					irq_last_status);
			if (rt_ns() - start > 5000000000ull)
				rt_fail("%s: interrupt %u of %u did not arrive within 5 s (STATUS "
					"%#x, handled %u, spurious %u)",
					mode, i + 1, n, mmio_read32(irq_base + TD_STATUS),
					irq_handled, irq_spurious);
			rt_pause();
		}
		if (irq_handled != before + 1)
			rt_fail("%s: %u interrupts for command %u", mode, irq_handled - before,
				i + 1);
		if (irq_scratch[i % 32] != (uint8_t)(0x40 + i))
			rt_fail("%s: fill %u did not reach memory (%#x)", mode, i + 1,
				irq_scratch[i % 32]);
	}
	/* Let any late or duplicate interrupt arrive before counting. */
	{
		uint64_t s = rt_ns();

		while (rt_ns() - s < 100000000ull)
			rt_pause();
	}
	rt_printf("irq: %s handled=%u spurious=%u bad=%u in %lu us\n", mode, irq_handled,
		  irq_spurious, irq_bad, (unsigned long)((rt_ns() - t0) / 1000));
	if (irq_handled != n || irq_bad)
		rt_fail("%s: %u interrupts handled, %u expected (bad %u)", mode, irq_handled, n,
			irq_bad);
	/*
	 * An entry that finds STATUS already clear is a re-delivery of a level
	 * interrupt: kvm_pvm delivers each level-triggered IOAPIC interrupt a
	 * second time (the vector is pending again in the LAPIC IRR when the
	 * handler starts), and a line that the device lowers only after the EOI
	 * is re-delivered too. Edge-triggered pins must see none; level ones at
	 * most a few per interrupt (more means an interrupt storm).
	 */
	if (irq_spurious > irq_spurious_max)
		rt_fail("%s: %u spurious interrupts (STATUS already clear), at most %u allowed",
			mode, irq_spurious, irq_spurious_max);
	if (mmio_read32(irq_base + TD_STATUS) != 0)
		rt_fail("%s: STATUS %#x at the end", mode, mmio_read32(irq_base + TD_STATUS));
}

static int irq_main(uint64_t which)
{
	unsigned n = (unsigned)rt_arg_u64("n", 50);
	bool strict = rt_arg_u64("strict", 0) != 0;

	rt_wait_claimed(irq_base, TD_ID, 30000);
	if (mmio_read32(irq_base + TD_ID) != TD_ID_VALUE)
		rt_fail("range 0 is not coreio-timerdma (ID %#x)", mmio_read32(irq_base + TD_ID));
	mmio_write32(irq_base + TD_STATUS, 7);
	mmio_write32(irq_base + TD_CTRL, TD_CTRL_IRQ_EN);
	if (which & 1)
		irq_phase("level", n, strict ? 0 : n);
	if (which & 2) {
		/* Reprogram the pin for edge triggering (the IOAPIC is MMIO; we are alone). */
		rt_ioapic_route(irq_pin, RT_IRQ_VECTOR(irq_pin), false, false, 0);
		irq_phase("edge", n, 0);
	}
	mmio_write32(irq_base + TD_CTRL, 0);
	rt_printf("SUCCESS\n");
	return 0;
}

void guest_start(unsigned cpu)
{
	const struct coreio_bootinfo *bi = rt_bootinfo;
	char mode[16] = "both";
	uint64_t which;

	if (cpu != 0)
		rt_park();
	if (bi->nranges < 1 || bi->ranges[0].nirq < 1)
		rt_fail("range 0 with an IRQ line is needed (--vmmio ...,irq=N)");
	irq_base = bi->ranges[0].start;
	irq_pin = bi->ranges[0].irq[0];
	if (irq_pin > 23)
		rt_fail("IRQ pin %u is not an IOAPIC pin", irq_pin);
	rt_arg("mode", mode, sizeof(mode));
	if (!memcmp(mode, "level", 6))
		which = 1;
	else if (!memcmp(mode, "edge", 5))
		which = 2;
	else if (!memcmp(mode, "both", 5))
		which = 3;
	else
		rt_fail("bad mode=%s (level, edge or both)", mode);
	rt_set_irq_handler(RT_IRQ_VECTOR(irq_pin), irq_handler);
	rt_ioapic_route(irq_pin, RT_IRQ_VECTOR(irq_pin), which & 1, false, 0);
	run_user(irq_main, which, RT_USER_IF);
}
