/* The BAR 0 layout of CoreIO virtio-pci devices, shared by coreio-vm's PCI profile and the virtio
 * library. */
#ifndef COREIO_VIRTIO_PCI_LAYOUT_H
#define COREIO_VIRTIO_PCI_LAYOUT_H

/*
 * A CoreIO virtio-pci device is one vMMIO range served as BAR 0 (32-bit,
 * non-prefetchable memory). coreio-vm's "virtio" PCI profile lists these
 * regions as virtio PCI capabilities (virtio 1.x, 4.1.4); the device model
 * serves them at offset = address - BAR base. docs/qemu-proxy.md.
 */
#define COREIO_VPCI_BAR_SIZE	0x4000u /* BAR 0 size: 16 KiB */
#define COREIO_VPCI_COMMON_OFF	0x0000u /* struct virtio_pci_common_cfg */
#define COREIO_VPCI_COMMON_LEN	0x0038u
#define COREIO_VPCI_ISR_OFF	0x1000u /* ISR status byte (read clears) */
#define COREIO_VPCI_ISR_LEN	0x0001u
#define COREIO_VPCI_NOTIFY_OFF	0x2000u /* queue notify doorbells */
#define COREIO_VPCI_NOTIFY_LEN	0x1000u
#define COREIO_VPCI_NOTIFY_MULT 4u	/* notify_off_multiplier: queue q at +4*q */
#define COREIO_VPCI_DEVICE_OFF	0x3000u /* device-specific configuration */
#define COREIO_VPCI_DEVICE_LEN	0x1000u

/* PCI identity of virtio 1.x devices (virtio 1.x, 4.1.2). */
#define COREIO_VPCI_VENDOR	0x1af4u
#define COREIO_VPCI_DEVICE_BASE 0x1040u /* + virtio device id */
#define COREIO_VPCI_REVISION	1u

#endif
