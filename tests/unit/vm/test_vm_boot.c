/* Unit tests of the coreio-vm boot state: page tables, GDT, boot info, vCPU entry, CPUID ids. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "boot.h"
#include "bootinfo.h"
#include "config.h"
#include "kvm.h"

#define RAM_SIZE (5u << 20) /* not a multiple of 2 MiB: the page at 4 MiB stays cached */

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static void test_tables(void **state)
{
	static struct vm_config cfg;
	uint8_t *ram = calloc(1, RAM_SIZE);
	const uint64_t f = BOOT_PTE_P | BOOT_PTE_RW | BOOT_PTE_US;
	struct coreio_bootinfo bi;

	(void)state;
	assert_non_null(ram);
	memset(&cfg, 0, sizeof(cfg));
	cfg.nranges = 2;
	cfg.ranges[0].start = 0xd0000000;
	cfg.ranges[0].size = 0x1000;
	cfg.ranges[0].nirq = 2;
	cfg.ranges[0].irqs[0] = 5;
	cfg.ranges[0].irqs[1] = 9;
	cfg.ranges[1].start = 0xd0001000;
	cfg.ranges[1].size = 0x2000;
	strcpy(cfg.append, "mode=fast");
	assert_int_equal(boot_build(ram, RAM_SIZE, &cfg, 3, 2500000), 0);

	/* PML4[0] -> PDPT, PDPT[j] -> PD j, 2 MiB identity pages. */
	assert_int_equal(get64(ram + 0x1000), 0x2000 | f);
	assert_int_equal(get64(ram + 0x1008), 0);
	for (unsigned j = 0; j < 4; j++)
		assert_int_equal(get64(ram + 0x2000 + 8 * j), (0x3000 + 0x1000 * j) | f);
	assert_int_equal(get64(ram + 0x2020), 0);
	assert_int_equal(get64(ram + 0x3000), 0 | f | BOOT_PTE_PS);
	assert_int_equal(get64(ram + 0x3008), 0x200000 | f | BOOT_PTE_PS);
	assert_int_equal(get64(ram + 0x3010), 0x400000 | f | BOOT_PTE_PS); /* holds RAM's end */
	assert_int_equal(get64(ram + 0x3018),
			 0x600000 | f | BOOT_PTE_PS | BOOT_PTE_PCD | BOOT_PTE_PWT);
	/* The last 2 MiB page below 4 GiB (the LAPIC) is uncached. */
	assert_int_equal(get64(ram + 0x6ff8),
			 0xffe00000ull | f | BOOT_PTE_PS | BOOT_PTE_PCD | BOOT_PTE_PWT);

	/* GDT: 0x08 64-bit kernel code, 0x10 kernel data, 0x18 user data, 0x20 user code. */
	assert_int_equal(get64(ram + 0x7000), 0);
	assert_int_equal(get64(ram + 0x7008), 0x00af9b000000ffffull);
	assert_int_equal(get64(ram + 0x7010), 0x00cf93000000ffffull);
	assert_int_equal(get64(ram + 0x7018), 0x00cff3000000ffffull);
	assert_int_equal(get64(ram + 0x7020), 0x00affb000000ffffull);

	memcpy(&bi, ram + COREIO_BOOT_INFO, sizeof(bi));
	assert_int_equal(bi.magic, COREIO_BOOT_MAGIC);
	assert_memory_equal(ram + COREIO_BOOT_INFO, "CIOBOOT1", 8);
	assert_int_equal(bi.version, 1);
	assert_int_equal(bi.ncpus, 3);
	assert_int_equal(bi.mem_size, RAM_SIZE);
	assert_int_equal(bi.tsc_khz, 2500000);
	assert_int_equal(bi.nranges, 2);
	assert_int_equal(bi.ranges[0].start, 0xd0000000);
	assert_int_equal(bi.ranges[0].size, 0x1000);
	assert_int_equal(bi.ranges[0].nirq, 2);
	assert_int_equal(bi.ranges[0].irq[0], 5);
	assert_int_equal(bi.ranges[0].irq[1], 9);
	assert_int_equal(bi.ranges[1].start, 0xd0001000);
	assert_int_equal(bi.ranges[1].nirq, 0);
	assert_string_equal(bi.cmdline, "mode=fast");
	/* The struct layout both sides share. */
	assert_int_equal(offsetof(struct coreio_bootinfo, ranges), 40);
	assert_int_equal(sizeof(struct coreio_bootinfo_range), 32);
	assert_int_equal(offsetof(struct coreio_bootinfo, cmdline), 40 + 16 * 32);

	assert_int_equal(boot_build(ram, RAM_SIZE, &cfg, 0, 0), -EINVAL);
	assert_int_equal(boot_build(ram, RAM_SIZE, &cfg, COREIO_BOOT_MAX_CPUS + 1, 0), -EINVAL);
	free(ram);
}

static void test_entry(void **state)
{
	struct kvm_sregs s;
	struct kvm_regs r;

	(void)state;
	memset(&s, 0x5a, sizeof(s));
	boot_vcpu_state(2, 0x100123, &s, &r);
	assert_int_equal(r.rip, 0x100123);
	assert_int_equal(r.rdi, 2);
	assert_int_equal(r.rsi, COREIO_BOOT_INFO);
	assert_int_equal(r.rsp, 0x90000 - 2 * 0x4000);
	assert_int_equal(r.rflags, 2);
	assert_int_equal(r.rax, 0);
	assert_int_equal(s.cs.selector, COREIO_SEL_KCODE);
	assert_int_equal(s.cs.l, 1);
	assert_int_equal(s.cs.db, 0);
	assert_int_equal(s.cs.dpl, 0);
	assert_int_equal(s.cs.present, 1);
	assert_int_equal(s.ds.selector, COREIO_SEL_KDATA);
	assert_int_equal(s.ss.selector, COREIO_SEL_KDATA);
	assert_int_equal(s.fs.base, 0);
	assert_int_equal(s.gs.base, 0);
	assert_int_equal(s.cr0, 0x80010033ull);
	assert_int_equal(s.cr3, 0x1000);
	assert_int_equal(s.cr4, 0x620);
	assert_int_equal(s.efer, 0x501);
	assert_int_equal(s.gdt.base, COREIO_BOOT_GDT);
	assert_int_equal(s.gdt.limit, 39);
	/* The last of 32 stacks still lies above 0x10000. */
	boot_vcpu_state(31, 0x100000, &s, &r);
	assert_int_equal(r.rsp, 0x14000);
}

static void test_cpuid(void **state)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + 4 * sizeof(c->entries[0]));

	(void)state;
	assert_non_null(c);
	c->nent = 4;
	c->entries[0].function = 1;
	c->entries[0].ebx = 0xff123456;
	c->entries[1].function = 0xb;
	c->entries[1].index = 1;
	c->entries[1].edx = 0;
	c->entries[2].function = 0x1f;
	c->entries[3].function = 7;
	c->entries[3].edx = 0x77;
	kvm_cpuid_set_apic_id(c, 5);
	assert_int_equal(c->entries[0].ebx, 0x05123456);
	assert_int_equal(c->entries[1].edx, 5);
	assert_int_equal(c->entries[2].edx, 5);
	assert_int_equal(c->entries[3].edx, 0x77);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tables),
	    cmocka_unit_test(test_entry),
	    cmocka_unit_test(test_cpuid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
