/* bench_mmio: time N 32-bit reads of one address at CPL 3 (addr=, n= from --append). */
#include "rt.h"

static int bench_main(uint64_t arg)
{
	uint64_t addr = rt_arg_u64("addr", COREIO_TESTDEV_BASE);
	uint64_t n = rt_arg_u64("n", 10000);
	uint64_t t0, t1, ns;

	(void)arg;
	if (n == 0)
		rt_fail("n must be at least 1");
	/* One warm-up access (also waits for a client of a vMMIO range to claim it). */
	(void)mmio_read32(addr);
	t0 = rt_ns();
	for (uint64_t i = 0; i < n; i++)
		(void)mmio_read32(addr);
	t1 = rt_ns();
	ns = (t1 - t0) / n;
	rt_printf("BENCH mmio_read ns_per_op=%lu n=%lu\n", (unsigned long)ns, (unsigned long)n);
	rt_printf("SUCCESS\n");
	return 0;
}

void guest_start(unsigned cpu)
{
	if (cpu != 0)
		rt_park();
	if (!rt_bootinfo->tsc_khz)
		rt_printf("bench_mmio: warning: tsc_khz unknown, assuming %lu kHz\n",
			  (unsigned long)rt_tsc_khz());
	run_user(bench_main, 0, 0);
}
