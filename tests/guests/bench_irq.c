/* bench_irq: IRQ round trip (doorbell write -> client raises the line -> ISR) next to an in-VMM
 * one. */
#include "rt.h"

/*
 * Needs range 0 with an IRQ line, served by coreio-testclient with
 * `irq_on_write 0 DOORBELL 0` armed before `register 0`: a write to the
 * doorbell makes the client raise iid 0 and lower it again (a pulse on an
 * edge-triggered IOAPIC pin). Parameters (--append): n= (default 2000) and
 * doorbell= (offset in range 0, default 0x10).
 *
 * Phase 1 (irq): n times, the CPL 3 loop reads the TSC, writes the
 * doorbell and waits for the interrupt handler (CPL 0), which records the
 * TSC at its entry; the average of the differences is the round trip.
 * Phase 2 (invmm_rt): n times, a write of the in-VMM test device's scratch
 * register followed by reading it back (checked), the round trip without
 * any client. Prints
 *   BENCH irq ns_per_op=X min_ns=M n=N
 *   BENCH invmm_rt ns_per_op=Y min_ns=M n=N
 * and SUCCESS; fails if an interrupt is missing, doubled or arrives
 * without a doorbell.
 */

static volatile uint64_t irq_tsc;   /* TSC at the handler's entry */
static volatile uint32_t irq_count; /* interrupts handled */
static uint64_t irq_base;
static unsigned irq_pin;

static void irq_handler(unsigned vector)
{
	(void)vector;
	irq_tsc = rt_rdtsc();
	irq_count++;
}

static uint64_t ticks_to_ns(uint64_t t)
{
	uint64_t khz = rt_tsc_khz();

	return (t / khz) * 1000000u + (t % khz) * 1000000u / khz;
}

static void report(const char *what, uint64_t sum, uint64_t min, uint64_t n)
{
	rt_printf("BENCH %s ns_per_op=%lu min_ns=%lu n=%lu\n", what,
		  (unsigned long)ticks_to_ns(sum / n), (unsigned long)ticks_to_ns(min),
		  (unsigned long)n);
}

static void phase_irq(uint64_t n, uint64_t doorbell)
{
	uint64_t sum = 0, min = ~0ull, s;

	for (uint64_t i = 0; i < n; i++) {
		uint32_t before = irq_count;
		uint64_t t0 = rt_rdtsc(), start = rt_ns(), dt;

		mmio_write32(irq_base + doorbell, (uint32_t)i);
		while (irq_count == before) {
			if (rt_ns() - start > 5000000000ull)
				rt_fail("interrupt %lu of %lu did not arrive within 5 s",
					(unsigned long)i + 1, (unsigned long)n);
			rt_pause();
		}
		dt = irq_tsc - t0;
		if (irq_count != before + 1)
			rt_fail("%u interrupts for doorbell %lu", irq_count - before,
				(unsigned long)i + 1);
		sum += dt;
		if (dt < min)
			min = dt;
	}
	/* Let a late or doubled interrupt arrive before counting. */
	s = rt_ns();
	while (rt_ns() - s < 50000000ull)
		rt_pause();
	if (irq_count != n)
		rt_fail("%u interrupts for %lu doorbells", irq_count, (unsigned long)n);
	report("irq", sum, min, n);
}

static void phase_invmm(uint64_t n)
{
	uint64_t scratch = COREIO_TESTDEV_BASE + 8, sum = 0, min = ~0ull;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t t0 = rt_rdtsc(), dt, v;

		mmio_write64(scratch, i + 0x1000);
		v = mmio_read64(scratch);
		dt = rt_rdtsc() - t0;
		if (v != i + 0x1000)
			rt_fail("test device scratch read %#lx, want %#lx", (unsigned long)v,
				(unsigned long)(i + 0x1000));
		sum += dt;
		if (dt < min)
			min = dt;
	}
	report("invmm_rt", sum, min, n);
}

static int bench_main(uint64_t arg)
{
	uint64_t n = rt_arg_u64("n", 2000);
	uint64_t doorbell = rt_arg_u64("doorbell", 0x10);

	(void)arg;
	if (n == 0 || n > 0xffffffu)
		rt_fail("n must be 1..2^24-1");
	if (doorbell > rt_bootinfo->ranges[0].size - 4 || doorbell % 4)
		rt_fail("doorbell %#lx outside range 0 or unaligned", (unsigned long)doorbell);
	rt_wait_claimed(irq_base, 0, 30000);
	if (irq_count != 0)
		rt_fail("%u interrupts before the first doorbell", irq_count);
	phase_irq(n, doorbell);
	phase_invmm(n);
	rt_printf("SUCCESS\n");
	return 0;
}

void guest_start(unsigned cpu)
{
	const struct coreio_bootinfo *bi = rt_bootinfo;

	if (cpu != 0)
		rt_park();
	if (bi->nranges < 1 || bi->ranges[0].nirq < 1)
		rt_fail("range 0 with an IRQ line is needed (--vmmio ...,irq=N)");
	irq_base = bi->ranges[0].start;
	irq_pin = bi->ranges[0].irq[0];
	if (irq_pin > 23)
		rt_fail("IRQ pin %u is not an IOAPIC pin", irq_pin);
	if (!bi->tsc_khz)
		rt_printf("bench_irq: warning: tsc_khz unknown, assuming %lu kHz\n",
			  (unsigned long)rt_tsc_khz());
	rt_set_irq_handler(RT_IRQ_VECTOR(irq_pin), irq_handler);
	rt_ioapic_route(irq_pin, RT_IRQ_VECTOR(irq_pin), false, false, 0);
	run_user(bench_main, 0, RT_USER_IF);
}
