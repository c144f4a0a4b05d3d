/* bench_write: time N 32-bit MMIO writes to one address at CPL 3, then check the last one landed.
 */
#include "rt.h"

/*
 * Parameters (--append): addr= (default the in-VMM test device's scratch
 * register, 0xfe000008) and n= (default 10000). The guest waits until the
 * address no longer reads 0xaaaaaaaa (a vMMIO range's client has claimed
 * it), writes the values 1..n, then reads the address back: it must read n,
 * which also proves that posted writes reached the device in order. Prints
 * BENCH mmio_write ns_per_op=X n=N flush_ns=F (F: the read-back, which
 * waits for every posted write before it) and SUCCESS.
 */
static int bench_main(uint64_t arg)
{
	uint64_t addr = rt_arg_u64("addr", COREIO_TESTDEV_BASE + 8);
	uint64_t n = rt_arg_u64("n", 10000);
	uint64_t t0, t1, t2;
	uint32_t got;

	(void)arg;
	if (n == 0 || n > 0xffffffffu)
		rt_fail("n must be 1..2^32-1");
	rt_wait_claimed(addr, 0, 30000);
	mmio_write32(addr, 0); /* warm-up */
	t0 = rt_ns();
	for (uint64_t i = 1; i <= n; i++)
		mmio_write32(addr, (uint32_t)i);
	t1 = rt_ns();
	got = mmio_read32(addr);
	t2 = rt_ns();
	if (got != (uint32_t)n)
		rt_fail("read back %#x after %lu writes, want %#x", got, (unsigned long)n,
			(uint32_t)n);
	rt_printf("BENCH mmio_write ns_per_op=%lu n=%lu flush_ns=%lu\n",
		  (unsigned long)((t1 - t0) / n), (unsigned long)n, (unsigned long)(t2 - t1));
	rt_printf("SUCCESS\n");
	return 0;
}

void guest_start(unsigned cpu)
{
	if (cpu != 0)
		rt_park();
	if (!rt_bootinfo->tsc_khz)
		rt_printf("bench_write: warning: tsc_khz unknown, assuming %lu kHz\n",
			  (unsigned long)rt_tsc_khz());
	run_user(bench_main, 0, 0);
}
