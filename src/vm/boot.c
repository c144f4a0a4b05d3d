/* coreio-vm: the boot state of a freestanding guest: page tables, GDT, boot info, vCPU entry. */
#include "boot.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define PDPT_ADDR (COREIO_BOOT_PML4 + 0x1000)
#define PD_ADDR	  (COREIO_BOOT_PML4 + 0x2000) /* four page directories, 1 GiB each */

static void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, sizeof(v)); /* x86 is little-endian, like the guest */
}

/* Flat 64-bit GDT: null, kernel code, kernel data, user data, user code. */
static const uint64_t gdt[] = {
    0,
    0x00af9b000000ffffull, /* 0x08: code, DPL 0, L */
    0x00cf93000000ffffull, /* 0x10: data, DPL 0 */
    0x00cff3000000ffffull, /* 0x18: data, DPL 3 */
    0x00affb000000ffffull, /* 0x20: code, DPL 3, L */
};

int boot_build(uint8_t *ram, uint64_t ram_size, const struct vm_config *cfg, unsigned ncpus,
	       uint64_t tsc_khz)
{
	struct coreio_bootinfo bi;
	const uint64_t flags = BOOT_PTE_P | BOOT_PTE_RW | BOOT_PTE_US;

	if (ram_size < COREIO_BOOT_LOAD_MIN || ncpus < 1 || ncpus > COREIO_BOOT_MAX_CPUS)
		return -EINVAL;
	memset(ram + COREIO_BOOT_PML4, 0, PD_ADDR + 0x4000 - COREIO_BOOT_PML4);
	put64(ram + COREIO_BOOT_PML4, PDPT_ADDR | flags);
	for (uint64_t j = 0; j < 4; j++) {
		put64(ram + PDPT_ADDR + 8 * j, (PD_ADDR + 0x1000 * j) | flags);
		for (uint64_t i = 0; i < 512; i++) {
			uint64_t pa = (j << 30) | (i << 21);
			uint64_t e = pa | flags | BOOT_PTE_PS;

			if (pa >= ram_size)
				e |= BOOT_PTE_PCD | BOOT_PTE_PWT;
			put64(ram + PD_ADDR + 0x1000 * j + 8 * i, e);
		}
	}
	memcpy(ram + COREIO_BOOT_GDT, gdt, sizeof(gdt));

	memset(&bi, 0, sizeof(bi));
	bi.magic = COREIO_BOOT_MAGIC;
	bi.version = COREIO_BOOT_VERSION;
	bi.ncpus = ncpus;
	bi.mem_size = ram_size;
	bi.tsc_khz = tsc_khz;
	for (unsigned g = 0; g < cfg->nranges && g < COREIO_BOOT_MAX_RANGES; g++) {
		const struct range_config *rc = &cfg->ranges[g];
		struct coreio_bootinfo_range *r = &bi.ranges[g];

		r->start = rc->start;
		r->size = rc->size;
		r->nirq = rc->nirq;
		for (unsigned k = 0; k < rc->nirq && k < COREIO_BOOT_MAX_IRQS; k++)
			r->irq[k] = (uint8_t)rc->irqs[k];
		bi.nranges++;
	}
	snprintf(bi.cmdline, sizeof(bi.cmdline), "%s", cfg->append);
	memcpy(ram + COREIO_BOOT_INFO, &bi, sizeof(bi));
	return 0;
}

static struct kvm_segment flat_segment(uint16_t sel, uint8_t type, int code64)
{
	struct kvm_segment s;

	memset(&s, 0, sizeof(s));
	s.base = 0;
	s.limit = 0xffffffff;
	s.selector = sel;
	s.type = type;
	s.present = 1;
	s.dpl = 0;
	s.s = 1;
	s.g = 1;
	s.l = code64 ? 1 : 0;
	s.db = code64 ? 0 : 1;
	return s;
}

void boot_vcpu_state(unsigned id, uint64_t entry, struct kvm_sregs *s, struct kvm_regs *r)
{
	s->cs = flat_segment(COREIO_SEL_KCODE, 11, 1); /* execute/read, accessed */
	s->ds = flat_segment(COREIO_SEL_KDATA, 3, 0);  /* read/write, accessed */
	s->es = s->ds;
	s->ss = s->ds;
	s->fs = s->ds;
	s->gs = s->ds;
	s->gdt.base = COREIO_BOOT_GDT;
	s->gdt.limit = (uint16_t)(sizeof(gdt) - 1);
	s->idt.base = 0;
	s->idt.limit = 0; /* the guest loads its own IDT; until then a fault triple-faults */
	s->cr0 = BOOT_CR0;
	s->cr3 = COREIO_BOOT_PML4;
	s->cr4 = BOOT_CR4;
	s->efer = BOOT_EFER;

	memset(r, 0, sizeof(*r));
	r->rip = entry;
	r->rflags = 2;
	r->rdi = id;
	r->rsi = COREIO_BOOT_INFO;
	r->rsp = COREIO_BOOT_STACKS - (uint64_t)id * COREIO_BOOT_STACK_SIZE;
}
