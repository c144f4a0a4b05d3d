/* smp: every vCPU hammers vMMIO ranges 0 and 1 at once from CPL 3; vCPU 0 checks the totals. */
#include "rt.h"

#define SMP_SLOT    0x100u /* bytes of each range per vCPU */
#define SMP_OFF_Q   0x00u  /* 64-bit data register of the slot */
#define SMP_OFF_L   0x08u  /* 32-bit data register */
#define SMP_OFF_CNT 0x10u  /* 64-bit counter, incremented by read-modify-write */
#define SMP_NRANGES 2

static volatile uint32_t smp_go;
static volatile uint32_t smp_ready;
static volatile uint32_t smp_done;
static volatile uint32_t smp_failed;
static uint64_t smp_k;
static uint64_t smp_base[SMP_NRANGES];

static uint64_t smp_value(unsigned cpu, unsigned r, uint64_t k)
{
	return (uint64_t)(cpu + 1) << 56 | (uint64_t)r << 48 | (k * 0x9e3779b97f4a7c15ull >> 16);
}

static int smp_worker(uint64_t cpu_arg)
{
	unsigned cpu = (unsigned)cpu_arg;
	unsigned ncpus = rt_bootinfo->ncpus;
	uint64_t t0;

	if (cpu == 0) {
		rt_printf("smp: %u vCPUs, K=%lu, ranges at %#lx and %#lx\n", ncpus,
			  (unsigned long)smp_k, (unsigned long)smp_base[0],
			  (unsigned long)smp_base[1]);
		for (unsigned r = 0; r < SMP_NRANGES; r++)
			rt_wait_claimed(smp_base[r], 0, 30000);
		__atomic_store_n(&smp_go, 1, __ATOMIC_RELEASE);
	}
	while (!__atomic_load_n(&smp_go, __ATOMIC_ACQUIRE))
		rt_pause();
	/* Start together. */
	__atomic_add_fetch(&smp_ready, 1, __ATOMIC_ACQ_REL);
	while (__atomic_load_n(&smp_ready, __ATOMIC_ACQUIRE) < ncpus)
		rt_pause();

	t0 = rt_ns();
	for (unsigned r = 0; r < SMP_NRANGES; r++)
		mmio_write64(smp_base[r] + cpu * SMP_SLOT + SMP_OFF_CNT, 0);
	for (uint64_t k = 0; k < smp_k; k++) {
		for (unsigned r = 0; r < SMP_NRANGES; r++) {
			uint64_t slot = smp_base[r] + cpu * SMP_SLOT;
			uint64_t v = smp_value(cpu, r, k), got, c;
			uint32_t l = (uint32_t)(v ^ k), gotl;

			mmio_write64(slot + SMP_OFF_Q, v);
			mmio_write32(slot + SMP_OFF_L, l);
			got = mmio_read64(slot + SMP_OFF_Q);
			gotl = mmio_read32(slot + SMP_OFF_L);
			if (got != v || gotl != l) {
				rt_printf("FAILURE: cpu %u range %u k %lu: read %#lx/%#x, wrote "
					  "%#lx/%#x\n",
					  cpu, r, (unsigned long)k, (unsigned long)got, gotl,
					  (unsigned long)v, l);
				smp_failed = 1;
				rt_exit(RT_EXIT_FAIL);
			}
			c = mmio_read64(slot + SMP_OFF_CNT);
			mmio_write64(slot + SMP_OFF_CNT, c + 1);
		}
		if (smp_failed)
			break;
	}
	rt_printf("smp: cpu %u done in %lu us\n", cpu, (unsigned long)((rt_ns() - t0) / 1000));
	__atomic_add_fetch(&smp_done, 1, __ATOMIC_ACQ_REL);
	if (cpu != 0)
		return 0; /* waits forever */

	{
		uint64_t start = rt_ns();

		while (__atomic_load_n(&smp_done, __ATOMIC_ACQUIRE) < ncpus) {
			if (rt_ns() - start > 60000000000ull)
				rt_fail("only %u of %u vCPUs finished", smp_done, ncpus);
			rt_pause();
		}
	}
	for (unsigned r = 0; r < SMP_NRANGES; r++) {
		uint64_t sum = 0;

		for (unsigned c = 0; c < ncpus; c++) {
			uint64_t slot = smp_base[r] + c * SMP_SLOT;
			uint64_t n = mmio_read64(slot + SMP_OFF_CNT);
			uint64_t q = mmio_read64(slot + SMP_OFF_Q);

			if (n != smp_k)
				rt_fail("range %u cpu %u counter %lu, want %lu", r, c,
					(unsigned long)n, (unsigned long)smp_k);
			if (q != smp_value(c, r, smp_k - 1))
				rt_fail("range %u cpu %u last value %#lx, want %#lx", r, c,
					(unsigned long)q,
					(unsigned long)smp_value(c, r, smp_k - 1));
			sum += n;
		}
		rt_printf("smp: range %u total=%lu want=%lu\n", r, (unsigned long)sum,
			  (unsigned long)(ncpus * smp_k));
		if (sum != ncpus * smp_k)
			rt_fail("range %u total %lu, want %lu", r, (unsigned long)sum,
				(unsigned long)(ncpus * smp_k));
	}
	rt_printf("SUCCESS\n");
	return 0;
}

void guest_start(unsigned cpu)
{
	const struct coreio_bootinfo *bi = rt_bootinfo;

	if (bi->nranges < SMP_NRANGES) {
		if (cpu == 0)
			rt_fail("two vMMIO ranges are needed");
		rt_park();
	}
	for (unsigned r = 0; r < SMP_NRANGES; r++) {
		smp_base[r] = bi->ranges[r].start;
		if (bi->ranges[r].size < bi->ncpus * SMP_SLOT) {
			if (cpu == 0)
				rt_fail("range %u is smaller than %u bytes", r,
					bi->ncpus * SMP_SLOT);
			rt_park();
		}
	}
	smp_k = rt_arg_u64("k", 1000);
	if (smp_k == 0)
		smp_k = 1;
	run_user(smp_worker, cpu, 0);
}
