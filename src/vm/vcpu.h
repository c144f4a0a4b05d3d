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

	/*
	 * coalesce=on ranges: KVM's coalesced-MMIO ring (in vCPU 0's mapping),
	 * drained before any exit is handled, by coalesce_timer (I/O thread)
	 * and at the end. NULL when no range asked or KVM lacks the feature.
	 */
	struct kvm_coalesced_mmio_ring *ring;
	uint32_t ring_max;	     /* entries in the ring */
	int coalesce_timer;	     /* timerfd, every COALESCE_FLUSH_US, or -1 */
	struct io_request creq;	     /* the write being drained (VM lock) */
	pthread_cond_t ccond;	     /* creq completed (not expected: posted) */
	void (*batch)(void *, bool); /* kvm_accel_set_batch() */
	void *batch_opaque;
};

#define COALESCE_FLUSH_US 1000 /* the longest a coalesced write waits for a drain */

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

/*
 * Bracket each drain of the coalesced-MMIO ring: fn(opaque, true) before
 * the first write of a batch is handed on (VM lock held), fn(opaque, false)
 * after the last, once the VM lock is dropped, so the handler can send the
 * batch at once and without the lock (vmmio_batch()). Call before
 * kvm_accel_start().
 */
void kvm_accel_set_batch(struct kvm_accel *a, void (*fn)(void *opaque, bool begin), void *opaque);

/* Join the vCPU threads and free the VM. */
void kvm_accel_exit(struct kvm_accel *a);

/* The exit status set by kvm_accel_request_exit(), or -1. */
int kvm_accel_status(struct kvm_accel *a);

#endif
