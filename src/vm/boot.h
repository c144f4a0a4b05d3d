/* coreio-vm: the boot state of a freestanding guest: page tables, GDT, boot info, vCPU entry. */
#ifndef COREIO_VM_BOOT_H
#define COREIO_VM_BOOT_H

#include <linux/kvm.h>
#include <stdint.h>

#include "bootinfo.h"
#include "config.h"

/* Control and EFER bits of the entry state (docs/guests.md). */
#define BOOT_CR0  0x80010033ull /* PG | WP | NE | ET | MP | PE */
#define BOOT_CR4  0x620ull	/* OSXMMEXCPT | OSFXSR | PAE */
#define BOOT_EFER 0x501ull	/* LMA | LME | SCE */

/* Page-directory entry bits of the identity map. */
#define BOOT_PTE_P   0x01ull
#define BOOT_PTE_RW  0x02ull
#define BOOT_PTE_US  0x04ull
#define BOOT_PTE_PWT 0x08ull
#define BOOT_PTE_PCD 0x10ull
#define BOOT_PTE_PS  0x80ull

/*
 * Write the page tables (identity map of 0..4 GiB in 2 MiB pages; pages at
 * or above ram_size cache-disabled), the GDT and struct coreio_bootinfo
 * into RAM ram[0..ram_size) as docs/guests.md describes.
 *   cfg      the vMMIO ranges (at most COREIO_BOOT_MAX_RANGES are listed)
 *            and the --append text.
 *   ncpus    vCPUs started (1..COREIO_BOOT_MAX_CPUS).
 *   tsc_khz  TSC frequency, 0 if unknown.
 * Returns 0, or -EINVAL when RAM is smaller than COREIO_BOOT_LOAD_MIN or
 * ncpus is out of range.
 */
int boot_build(uint8_t *ram, uint64_t ram_size, const struct vm_config *cfg, unsigned ncpus,
	       uint64_t tsc_khz);

/*
 * The entry state of vCPU id: 64-bit mode at entry, RDI = id, RSI = the
 * boot info, RSP = its boot stack, RFLAGS = 2.
 *   s  on input the vCPU's current special registers (KVM_GET_SREGS); the
 *      segments, control registers, EFER and GDT/IDT are replaced.
 *   r  filled completely.
 */
void boot_vcpu_state(unsigned id, uint64_t entry, struct kvm_sregs *s, struct kvm_regs *r);

#endif
