/* coreio-vm: thin wrappers of the KVM ioctls (/dev/kvm, the VM fd and vCPU fds). */
#ifndef COREIO_VM_KVM_H
#define COREIO_VM_KVM_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mem.h"

struct kvm_vm {
	int sys_fd;		  /* /dev/kvm */
	int vm_fd;		  /* KVM_CREATE_VM */
	size_t run_size;	  /* KVM_GET_VCPU_MMAP_SIZE */
	uint64_t sync_regs;	  /* KVM_SYNC_X86_* bits KVM_CAP_SYNC_REGS offers, or 0 */
	struct kvm_cpuid2 *cpuid; /* KVM_GET_SUPPORTED_CPUID */
	unsigned coalesced_page;  /* KVM_CAP_COALESCED_MMIO: the ring's page in a vCPU
				     mapping, or 0 when KVM has no coalesced MMIO */
};

/* One vCPU's fd and its shared kvm_run page. */
struct kvm_vcpu_fd {
	int fd;
	struct kvm_run *run;
};

/*
 * Open /dev/kvm, check the API version, create the VM and read what vCPUs
 * need (mmap size, supported CPUID, sync-regs support).
 *   err  receives why it failed: the open error, a wrong API version or the
 *        KVM_CREATE_VM error.
 * Returns 0 or a negative errno (k is then closed).
 */
int kvm_vm_open(struct kvm_vm *k, char *err, size_t errlen);

/* Close everything kvm_vm_open() created; safe on a zeroed struct with fds -1. */
void kvm_vm_close(struct kvm_vm *k);

/*
 * Register RAM (the memfd mapping of m) as memory slot 0 at guest-physical 0,
 * then create the in-kernel irqchip (PIC, IOAPIC, LAPICs) and the PIT.
 * Returns 0 or a negative errno; err names the ioctl that failed.
 */
int kvm_vm_setup(struct kvm_vm *k, const struct mem *m, char *err, size_t errlen);

/*
 * Create vCPU id, map its kvm_run page and give it the supported CPUID with
 * its APIC id (leaf 1 EBX[31:24], leaves 0xB/0x1F EDX).
 * Returns 0 or a negative errno; err names the ioctl that failed.
 */
int kvm_vcpu_create(struct kvm_vm *k, unsigned id, struct kvm_vcpu_fd *v, char *err, size_t errlen);

/* Unmap and close a vCPU; safe when it was never created (fd -1). */
void kvm_vcpu_destroy(struct kvm_vm *k, struct kvm_vcpu_fd *v);

/* TSC frequency of a vCPU in kHz, or 0 when KVM_GET_TSC_KHZ fails. */
uint64_t kvm_vcpu_tsc_khz(const struct kvm_vcpu_fd *v);

/*
 * Set the level of an IRQ line of the in-kernel irqchip (thread-safe).
 * Returns 0 or a negative errno.
 */
int kvm_irq_line(const struct kvm_vm *k, unsigned line, bool level);

/*
 * Have KVM collect guest writes to [addr, addr + size) in its coalesced-MMIO
 * ring (page k->coalesced_page of every vCPU mapping) instead of exiting.
 * Returns 0, -ENOTSUP when KVM lacks coalesced MMIO, -EINVAL for a size of 0
 * or above 4 GiB, or the negative errno of KVM_REGISTER_COALESCED_MMIO.
 */
int kvm_coalesced_zone(const struct kvm_vm *k, uint64_t addr, uint64_t size);

/*
 * Patch a CPUID table for the vCPU with APIC id: leaf 1 EBX[31:24] and
 * EDX of leaves 0xB and 0x1F (every subleaf). Used by kvm_vcpu_create();
 * exposed for unit tests.
 */
void kvm_cpuid_set_apic_id(struct kvm_cpuid2 *c, unsigned id);

#endif
