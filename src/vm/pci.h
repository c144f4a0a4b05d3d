/* coreio-vm: the PCI configuration space of a device served to QEMU (mpqemu proxy, vfio-user). */
#ifndef COREIO_VM_PCI_H
#define COREIO_VM_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

#define PCI_CFG_SIZE 256 /* conventional PCI: x-pci-proxy-dev is not PCI Express */

/* Offsets in configuration space. */
#define PCI_CFG_VENDOR	    0x00
#define PCI_CFG_DEVICE	    0x02
#define PCI_CFG_COMMAND	    0x04
#define PCI_CFG_STATUS	    0x06
#define PCI_CFG_REVISION    0x08
#define PCI_CFG_CLASS_PROG  0x09
#define PCI_CFG_CACHE_LINE  0x0c
#define PCI_CFG_LATENCY	    0x0d
#define PCI_CFG_HEADER_TYPE 0x0e
#define PCI_CFG_BAR0	    0x10
#define PCI_CFG_BAR1	    0x14
#define PCI_CFG_SUBSYS_VEN  0x2c
#define PCI_CFG_SUBSYS_ID   0x2e
#define PCI_CFG_CAP_PTR	    0x34
#define PCI_CFG_INT_LINE    0x3c
#define PCI_CFG_INT_PIN	    0x3d

#define PCI_COMMAND_MEMORY	 0x0002u
#define PCI_COMMAND_MASTER	 0x0004u
#define PCI_COMMAND_PARITY	 0x0040u
#define PCI_COMMAND_SERR	 0x0100u
#define PCI_COMMAND_INTX_DISABLE 0x0400u
#define PCI_STATUS_INTERRUPT	 0x0008u
#define PCI_STATUS_CAP_LIST	 0x0010u

/* Virtio PCI capabilities (virtio 1.x, 4.1.4): cfg_type values. */
#define PCI_CAP_ID_VENDOR      0x09
#define VIRTIO_PCI_CAP_COMMON  1
#define VIRTIO_PCI_CAP_NOTIFY  2
#define VIRTIO_PCI_CAP_ISR     3
#define VIRTIO_PCI_CAP_DEVICE  4
#define VIRTIO_PCI_CAP_PCI_CFG 5
#define PCI_VIRTIO_CAPS_START  0x40 /* the first capability */

/* MSI-X (vfio-user mode only): the capability, and BAR 1 holding its table and PBA. */
#define PCI_CAP_ID_MSIX	       0x11
#define PCI_MSIX_CAP_SIZE      12
#define PCI_MSIX_FLAGS_MASKALL 0x4000u
#define PCI_MSIX_FLAGS_ENABLE  0x8000u
#define PCI_MSIX_BAR	       1
#define PCI_MSIX_BAR_SIZE      4096u /* BAR 1: table at 0, PBA at PCI_MSIX_PBA_OFF */
#define PCI_MSIX_TABLE_OFF     0x000u
#define PCI_MSIX_PBA_OFF       0x800u
#define PCI_MSIX_ENTRY_SIZE    16u

/*
 * One device's configuration space. cfg holds the bytes the guest reads;
 * wmask says which bits a configuration write may change.
 */
struct pci_dev {
	uint8_t cfg[PCI_CFG_SIZE];
	uint8_t wmask[PCI_CFG_SIZE];
	uint8_t initial[PCI_CFG_SIZE]; /* cfg after init: what a reset returns to */
	uint64_t bar_size;	       /* BAR 0: a power of two, 4 KiB..1 GiB */
	unsigned cfgcap;	       /* offset of the virtio PCI cfg access capability, or 0 */
	unsigned msix_cap;	       /* offset of the MSI-X capability, or 0 (pci_dev_add_msix) */
	unsigned msix_vectors;	       /* its table size */
};

/*
 * Build the configuration space of the PCI range rc (rc->pci set): its
 * identity, command/status, BAR 0 (32-bit non-prefetchable memory of
 * rc->size), interrupt pin A, and with rc->virtio the five virtio PCI
 * capabilities describing src/virtio/virtio-pci-layout.h.
 */
void pci_dev_init(struct pci_dev *p, const struct range_config *rc);

/*
 * Add an MSI-X capability of nvec vectors (1..64) whose table (offset 0)
 * and PBA (offset PCI_MSIX_PBA_OFF) live in BAR 1, a 32-bit
 * non-prefetchable memory BAR of PCI_MSIX_BAR_SIZE bytes, after the other
 * capabilities (0x98 with profile=virtio, else 0x40). Only the enable and
 * function mask bits of its message control are writable. Call right after
 * pci_dev_init(); the reset state includes it. The mpqemu mode never calls
 * it, so its layout is unchanged.
 */
void pci_dev_add_msix(struct pci_dev *p, unsigned nvec);

/* True when MSI-X exists and its message control enables it. */
bool pci_msix_enabled(const struct pci_dev *p);

/* True when MSI-X exists and its message control sets the function mask. */
bool pci_msix_function_masked(const struct pci_dev *p);

/* Return to the state after pci_dev_init() (a device reset). */
void pci_dev_reset(struct pci_dev *p);

/*
 * Configuration read of len bytes (1, 2 or 4) at addr, little-endian.
 * Returns 0 with *val set, or -EINVAL when len is bad or [addr, addr + len)
 * is not inside the 256 bytes (then *val is all ones).
 */
int pci_cfg_read(const struct pci_dev *p, uint32_t addr, unsigned len, uint32_t *val);

/*
 * Configuration write of the low len bytes (1, 2 or 4) of val at addr:
 * only bits of wmask change (a write of all ones to BAR 0 reads back its
 * size mask). Returns 0, or -EINVAL for a bad len or address (nothing done).
 */
int pci_cfg_write(struct pci_dev *p, uint32_t addr, uint32_t val, unsigned len);

/* The address programmed in BAR 0 (its size-aligned part), 0 when unassigned. */
uint32_t pci_bar0(const struct pci_dev *p);

/* True when the command register enables memory decoding. */
bool pci_memory_enabled(const struct pci_dev *p);

/* True when the command register disables INTx. */
bool pci_intx_disabled(const struct pci_dev *p);

/* Show the INTx line level in the status register (bit 3, Interrupt Status). */
void pci_set_intx_status(struct pci_dev *p, bool level);

/*
 * Does a configuration access of [addr, addr + len) touch the data window
 * (pci_cfg_data) of the virtio PCI cfg access capability, whose bar, offset
 * and length fields select a valid BAR 0 access? Then returns true with
 * *off and *acc_len (1, 2 or 4) of the BAR access to make; the data bytes
 * live in cfg at *data_off.
 */
bool pci_cfg_window(const struct pci_dev *p, uint32_t addr, unsigned len, uint32_t *off,
		    unsigned *acc_len, unsigned *data_off);

#endif
