/* stall: vCPU 1 waits forever on a stuck client's range while vCPU 0 keeps using another range, the
 * test device and RAM. */
#include "rt.h"

#define STALL_OFF 0x100u /* the offset the test tells range 0's client to hang on */

static volatile uint32_t stall_go;
static volatile uint32_t stall_entered; /* vCPU 1 is about to read the stuck offset */
static volatile uint32_t stall_returned;
static uint64_t stall_base[2];
static uint64_t stall_k;
static uint64_t stall_ram[512];

static int stall_waiter(uint64_t arg)
{
	(void)arg;
	while (!__atomic_load_n(&stall_go, __ATOMIC_ACQUIRE))
		rt_pause();
	__atomic_store_n(&stall_entered, 1, __ATOMIC_RELEASE);
	(void)mmio_read32(stall_base[0] + STALL_OFF);
	/* Only a dead client (or a reset) completes this read. */
	__atomic_store_n(&stall_returned, 1, __ATOMIC_RELEASE);
	return 0; /* run_user() then waits forever */
}

static int stall_worker(uint64_t arg)
{
	uint64_t t0;

	(void)arg;
	rt_wait_claimed(stall_base[0], 0, 30000);
	rt_wait_claimed(stall_base[1], 0, 30000);
	__atomic_store_n(&stall_go, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&stall_entered, __ATOMIC_ACQUIRE))
		rt_pause();
	/* Give vCPU 1's read time to reach the client and get stuck there. */
	t0 = rt_ns();
	while (rt_ns() - t0 < 100000000ull)
		rt_pause();
	rt_printf("stall: vCPU 1 is waiting on range 0 + %#x\n", STALL_OFF);
	t0 = rt_ns();
	for (uint64_t k = 0; k < stall_k; k++) {
		uint64_t v = k * 0x9e3779b97f4a7c15ull;

		mmio_write64(stall_base[1] + 0x10, v);
		if (mmio_read64(stall_base[1] + 0x10) != v)
			rt_fail("range 1 read back the wrong value at k=%lu", (unsigned long)k);
		if (mmio_read32(COREIO_TESTDEV_BASE) != COREIO_TESTDEV_ID)
			rt_fail("test device ID wrong at k=%lu", (unsigned long)k);
		stall_ram[k % 512] = v;
		if (stall_ram[k % 512] != v)
			rt_fail("RAM lost a write");
	}
	if (__atomic_load_n(&stall_returned, __ATOMIC_ACQUIRE))
		rt_fail("the stuck read on range 0 returned; the client did not stall");
	rt_printf("stall: %lu round trips on range 1 and the test device in %lu us while vCPU 1 "
		  "waited\n",
		  (unsigned long)stall_k, (unsigned long)((rt_ns() - t0) / 1000));
	rt_printf("SUCCESS\n");
	rt_exit(RT_EXIT_OK);
	return 0;
}

void guest_start(unsigned cpu)
{
	const struct coreio_bootinfo *bi = rt_bootinfo;

	if (bi->ncpus < 2 || bi->nranges < 2) {
		if (cpu == 0)
			rt_fail("needs --smp 2 and two vMMIO ranges");
		rt_park();
	}
	stall_base[0] = bi->ranges[0].start;
	stall_base[1] = bi->ranges[1].start;
	stall_k = rt_arg_u64("k", 200);
	if (cpu == 0)
		run_user(stall_worker, 0, 0);
	if (cpu == 1)
		run_user(stall_waiter, 0, 0);
	rt_park();
}
