/* The boot information coreio-vm hands to a freestanding guest (shared by the VMM and test guests).
 */
#ifndef COREIO_BOOTINFO_H
#define COREIO_BOOTINFO_H

#include <stdint.h>

/*
 * The guest memory map and entry state are described in docs/guests.md.
 * This structure sits at guest-physical COREIO_BOOT_INFO; every vCPU gets
 * its address in RSI. All fields are little-endian.
 */
#define COREIO_BOOT_PML4       0x1000ull  /* page tables: PML4, PDPT, 4 PDs up to 0x6fff */
#define COREIO_BOOT_GDT	       0x7000ull  /* the VMM's flat GDT */
#define COREIO_BOOT_INFO       0x8000ull  /* struct coreio_bootinfo */
#define COREIO_BOOT_STACKS     0x90000ull /* vCPU i starts with RSP = this - i * STACK_SIZE */
#define COREIO_BOOT_STACK_SIZE 0x4000ull
#define COREIO_BOOT_MAX_CPUS   32
#define COREIO_BOOT_LOAD_MIN   0x100000ull   /* ELF segments load at or above 1 MiB */
#define COREIO_BOOT_MAX_MEM    0xc0000000ull /* RAM ends below 3 GiB with KVM */

/* GDT selectors of the VMM's GDT (the guest runtime uses the same layout). */
#define COREIO_SEL_KCODE 0x08
#define COREIO_SEL_KDATA 0x10
#define COREIO_SEL_UDATA 0x1b /* 0x18 | RPL 3 */
#define COREIO_SEL_UCODE 0x23 /* 0x20 | RPL 3 */

/* Fixed devices. */
#define COREIO_COM1_PORT       0x3f8
#define COREIO_COM1_IRQ	       4
#define COREIO_DEBUG_EXIT_PORT 0x501	     /* write V: coreio-vm exits with status V & 0xff */
#define COREIO_TESTDEV_BASE    0xfe000000ull /* in-VMM MMIO test device, 4 KiB */
#define COREIO_TESTDEV_ID      0x54534554u   /* "TEST" at offset 0 */
#define COREIO_IOAPIC_BASE     0xfec00000ull
#define COREIO_LAPIC_BASE      0xfee00000ull

#define COREIO_BOOT_MAGIC      0x31544f4f424f4943ull /* "CIOBOOT1" */
#define COREIO_BOOT_VERSION    1u
#define COREIO_BOOT_MAX_RANGES 16
#define COREIO_BOOT_MAX_IRQS   8
#define COREIO_BOOT_CMDLINE    256

struct coreio_bootinfo_range {
	uint64_t start; /* guest-physical start of the vMMIO range */
	uint64_t size;
	uint32_t nirq;			   /* lines in irq[] */
	uint8_t irq[COREIO_BOOT_MAX_IRQS]; /* IOAPIC pins, iid order */
	uint32_t reserved;
};

struct coreio_bootinfo {
	uint64_t magic;	   /* COREIO_BOOT_MAGIC */
	uint32_t version;  /* COREIO_BOOT_VERSION */
	uint32_t ncpus;	   /* vCPUs started, indexes 0 .. ncpus-1 (RDI) */
	uint64_t mem_size; /* bytes of RAM at guest-physical 0 */
	uint64_t tsc_khz;  /* TSC frequency, 0 if unknown */
	uint32_t nranges;  /* entries used in ranges[], command-line order */
	uint32_t reserved;
	struct coreio_bootinfo_range ranges[COREIO_BOOT_MAX_RANGES];
	char cmdline[COREIO_BOOT_CMDLINE]; /* --append text, NUL-terminated */
};

#endif
