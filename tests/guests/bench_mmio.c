/* bench_mmio: time N 32-bit reads of one address at CPL 3 (addr=, n=, expect= from --append). */
#include "rt.h"

static int bench_main(uint64_t arg)
{
	uint64_t addr = rt_arg_u64("addr", COREIO_TESTDEV_BASE);
	uint64_t n = rt_arg_u64("n", 10000);
	uint64_t t0, t1, ns, bad = 0;
	char want[4];
	bool check = rt_arg("expect", want, sizeof(want));
	uint32_t expect = (uint32_t)rt_arg_u64("expect", 0);

	(void)arg;
	if (n == 0)
		rt_fail("n must be at least 1");
	/* With expect=V: wait for a client of a vMMIO range, and check every value read. */
	if (check)
		rt_wait_claimed(addr, 0, 30000);
	(void)mmio_read32(addr); /* warm-up */
	t0 = rt_ns();
	for (uint64_t i = 0; i < n; i++)
		bad += mmio_read32(addr) != expect;
	t1 = rt_ns();
	if (check && bad)
		rt_fail("%lu of %lu reads did not return %#x", (unsigned long)bad, (unsigned long)n,
			expect);
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
