/* coreio-vm: in-VMM devices of the KVM accelerator and their explicit device table. */
#ifndef COREIO_VM_HW_H
#define COREIO_VM_HW_H

#include <stdint.h>

#include "ioreq.h"
#include "irq.h"

struct vm_config;
struct iommu_set;

/* What a device gets at init: where to register, where its lines go. */
struct hw_ctx {
	struct ioreq_ctx *io; /* register PIO/MMIO handlers here */
	struct irq_chip *irq; /* the VM's IRQ lines */
	int in_fd;	      /* console input (watched in the event loop), -1 for none */
	int out_fd;	      /* console output, -1 to discard */
	/* Ask the VM to end with this exit status (from any thread, VM lock held). */
	void (*request_exit)(int status, void *opaque);
	void *exit_opaque;
	const struct vm_config *cfg; /* the command line (devices configured by it), or NULL */
	bool qtest;		     /* the qtest accelerator: only devices with .qtest */
};

/*
 * One device model. init() allocates the state, registers the device's
 * handlers with hw->io (their opaque is the state) and returns 0 or a
 * negative errno; exit() flushes and frees the state (after every vCPU
 * stopped). Handlers run with the VM lock held.
 */
struct hw_device {
	const char *name;
	int (*init)(const struct hw_ctx *hw, void **state);
	void (*exit)(void *state);
	bool qtest; /* also created with --accel qtest (a script can program it) */
};

extern const struct hw_device hw_uart8250;
extern const struct hw_device hw_debugexit;
extern const struct hw_device hw_testdev;
extern const struct hw_device hw_iommu;

#define HW_MAX_DEVICES 8

/* The device table, in init order, NULL-terminated (hw/devices.c). */
extern const struct hw_device *const hw_devices[];

/* The devices of one VM. */
struct hw_set {
	const struct hw_device *dev[HW_MAX_DEVICES];
	void *state[HW_MAX_DEVICES];
	unsigned n;
};

/*
 * Create every device of hw_devices[] in order.
 * Returns 0, or the first device's negative errno after printing which
 * device failed on stderr (the devices created so far are freed).
 */
int hw_init_all(struct hw_set *set, const struct hw_ctx *hw);

/* Flush and free every device of set, in reverse order. */
void hw_exit_all(struct hw_set *set);

/* The state of the device dev in set, or NULL (used by unit tests). */
void *hw_state(const struct hw_set *set, const struct hw_device *dev);

/*
 * Hand n received bytes to the UART (as if they came from in_fd): they are
 * queued for RBR (the excess is dropped and flagged as an overrun) and the
 * IRQ is raised when IER enables it. The caller holds the VM lock.
 * Returns the bytes queued.
 */
unsigned uart8250_rx(void *state, const uint8_t *buf, unsigned n);

/* Write out the UART's buffered output now. The caller holds the VM lock. */
void uart8250_flush(void *state);

/*
 * The IOMMUs of the iommu device's state (hw_state(set, &hw_iommu)), which
 * the vMMIO service translates DMA with. Returns NULL for a NULL state.
 */
struct iommu_set *hw_iommu_set(void *state);

#endif
