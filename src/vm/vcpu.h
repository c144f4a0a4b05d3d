/* coreio-vm: the KVM accelerator: the VM, its vCPU threads and their exits. */
#ifndef COREIO_VM_VCPU_H
#define COREIO_VM_VCPU_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "bootinfo.h"
#include "config.h"
#include "ioreq.h"
#include "irq.h"
#include "kvm.h"
#include "mem.h"

#define VCPU_EXIT_CRASH 125 /* exit status when the VMM or the guest failed */

struct kvm_accel;

/* One vCPU: its fd, thread, and the one io_request it fills on an exit. */
struct vcpu {
	struct kvm_accel *a;
	unsigned id;
	struct kvm_vcpu_fd k;
	pthread_t thread;
	bool started;
	pthread_cond_t cond;   /* signalled by the completion of req (VM lock) */
	struct io_request req; /* owned by this vCPU; emulate_io() fills it in */
};

struct kvm_accel {
	struct mem *mem;
	struct ioreq_ctx *io;
	struct irq_chip *irq;
	bool trace;
	struct kvm_vm kvm;
	struct vcpu vcpus[COREIO_BOOT_MAX_CPUS];
	unsigned ncpus; /* vCPUs created */
	uint64_t entry;
	uint64_t tsc_khz;
	atomic_bool stopping; /* vCPU threads leave their loop */
	atomic_int status;    /* exit status, -1 until someone sets it */
};

/*
 * Create the VM: open /dev/kvm, register RAM, create the irqchip and PIT,
 * load cfg->kernel, create cfg->smp vCPUs, write the boot state
 * (docs/guests.md) and make the IRQ lines of irq drive KVM_IRQ_LINE.
 * The vCPUs do not run until kvm_accel_start().
 * Returns 0, or -1 after printing why on stderr (for an unusable /dev/kvm
 * with a hint to use --accel qtest). kvm_accel_exit() must follow either way.
 */
int kvm_accel_init(struct kvm_accel *a, const struct vm_config *cfg, struct mem *mem,
		   struct ioreq_ctx *io, struct irq_chip *irq);

/*
 * Start one thread per vCPU running KVM_RUN. Returns 0 or -1 after printing
 * why (the threads started are stopped by kvm_accel_stop()).
 */
int kvm_accel_start(struct kvm_accel *a);

/*
 * End the VM with status (first caller wins): the vCPU threads stop after
 * their current exit and the event loop is stopped. Any thread; when called
 * from a device handler the VM lock is held.
 */
void kvm_accel_request_exit(struct kvm_accel *a, int status);

/*
 * Make every vCPU thread leave KVM_RUN and its loop (immediate_exit and a
 * SIGUSR1 kick). A vCPU waiting for a client wakes when its request
 * completes: call vmmio_exit() next, then kvm_accel_exit().
 */
void kvm_accel_stop(struct kvm_accel *a);

/* Join the vCPU threads and free the VM. */
void kvm_accel_exit(struct kvm_accel *a);

/* The exit status set by kvm_accel_request_exit(), or -1. */
int kvm_accel_status(struct kvm_accel *a);

#endif
