/* coreio-vm: the PCI configuration space of a device served to QEMU (mpqemu proxy, vfio-user). */
#include "pci.h"

#include <errno.h>
#include <string.h>

#include "virtio-pci-layout.h"
#include "wire_le.h"

/*
 * One virtio PCI capability (struct virtio_pci_cap, 16 bytes; 20 with the
 * notify multiplier or the cfg access data) at off, linked to next.
 */
static void virtio_cap(struct pci_dev *p, unsigned off, unsigned next, uint8_t type, unsigned len,
		       uint32_t bar_off, uint32_t length)
{
	uint8_t *c = p->cfg + off;

	c[0] = PCI_CAP_ID_VENDOR;
	c[1] = (uint8_t)next;
	c[2] = (uint8_t)len;
	c[3] = type;
	c[4] = 0; /* BAR 0 */
	wire_put32(c + 8, bar_off);
	wire_put32(c + 12, length);
}

static void virtio_caps(struct pci_dev *p)
{
	const unsigned common = PCI_VIRTIO_CAPS_START, notify = common + 16, isr = notify + 20,
		       device = isr + 16, cfgcap = device + 16;

	virtio_cap(p, common, notify, VIRTIO_PCI_CAP_COMMON, 16, COREIO_VPCI_COMMON_OFF,
		   COREIO_VPCI_COMMON_LEN);
	virtio_cap(p, notify, isr, VIRTIO_PCI_CAP_NOTIFY, 20, COREIO_VPCI_NOTIFY_OFF,
		   COREIO_VPCI_NOTIFY_LEN);
	wire_put32(p->cfg + notify + 16, COREIO_VPCI_NOTIFY_MULT);
	virtio_cap(p, isr, device, VIRTIO_PCI_CAP_ISR, 16, COREIO_VPCI_ISR_OFF,
		   COREIO_VPCI_ISR_LEN);
	virtio_cap(p, device, cfgcap, VIRTIO_PCI_CAP_DEVICE, 16, COREIO_VPCI_DEVICE_OFF,
		   COREIO_VPCI_DEVICE_LEN);
	virtio_cap(p, cfgcap, 0, VIRTIO_PCI_CAP_PCI_CFG, 20, 0, 0);
	/* The driver sets bar, offset and length, and moves data through pci_cfg_data. */
	p->wmask[cfgcap + 4] = 0xff;
	memset(p->wmask + cfgcap + 8, 0xff, 12);
	p->cfgcap = cfgcap;
	p->cfg[PCI_CFG_CAP_PTR] = (uint8_t)common;
	wire_put16(p->cfg + PCI_CFG_STATUS, PCI_STATUS_CAP_LIST);
}

void pci_dev_init(struct pci_dev *p, const struct range_config *rc)
{
	uint32_t bar_mask;

	memset(p, 0, sizeof(*p));
	p->bar_size = rc->size;
	wire_put16(p->cfg + PCI_CFG_VENDOR, rc->pci_vendor);
	wire_put16(p->cfg + PCI_CFG_DEVICE, rc->pci_device);
	p->cfg[PCI_CFG_REVISION] = rc->pci_rev;
	p->cfg[PCI_CFG_CLASS_PROG] = (uint8_t)rc->pci_class;
	wire_put16(p->cfg + PCI_CFG_CLASS_PROG + 1, (uint16_t)(rc->pci_class >> 8));
	p->cfg[PCI_CFG_HEADER_TYPE] = 0; /* type 0, single function */
	wire_put16(p->cfg + PCI_CFG_SUBSYS_VEN, rc->subsys_vendor);
	wire_put16(p->cfg + PCI_CFG_SUBSYS_ID, rc->subsys_id);
	p->cfg[PCI_CFG_INT_PIN] = 1; /* INTA# */
	/* BAR 0: 32-bit, non-prefetchable memory; the low bits of the size read 0. */
	bar_mask = (uint32_t) ~(rc->size - 1) & 0xfffffff0u;
	wire_put32(p->wmask + PCI_CFG_BAR0, bar_mask);
	wire_put16(p->wmask + PCI_CFG_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
						   PCI_COMMAND_PARITY | PCI_COMMAND_SERR |
						   PCI_COMMAND_INTX_DISABLE);
	p->wmask[PCI_CFG_CACHE_LINE] = 0xff;
	p->wmask[PCI_CFG_LATENCY] = 0xff;
	p->wmask[PCI_CFG_INT_LINE] = 0xff;
	if (rc->virtio)
		virtio_caps(p);
	memcpy(p->initial, p->cfg, sizeof(p->cfg));
}

void pci_dev_add_msix(struct pci_dev *p, unsigned nvec)
{
	unsigned off = p->cfgcap ? p->cfgcap + 20 : PCI_VIRTIO_CAPS_START;
	uint8_t *c = p->cfg + off;

	if (nvec < 1 || nvec > 64 || off + PCI_MSIX_CAP_SIZE > PCI_CFG_SIZE)
		return;
	c[0] = PCI_CAP_ID_MSIX;
	c[1] = 0;
	wire_put16(c + 2, (uint16_t)(nvec - 1)); /* table size - 1; enable and mask clear */
	wire_put32(c + 4, PCI_MSIX_TABLE_OFF | PCI_MSIX_BAR);
	wire_put32(c + 8, PCI_MSIX_PBA_OFF | PCI_MSIX_BAR);
	p->wmask[off + 3] = (uint8_t)((PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL) >> 8);
	if (p->cfgcap)
		p->cfg[p->cfgcap + 1] = (uint8_t)off; /* the virtio list's last capability */
	else
		p->cfg[PCI_CFG_CAP_PTR] = (uint8_t)off;
	p->cfg[PCI_CFG_STATUS] |= PCI_STATUS_CAP_LIST;
	wire_put32(p->wmask + PCI_CFG_BAR1, (uint32_t) ~(PCI_MSIX_BAR_SIZE - 1) & 0xfffffff0u);
	p->msix_cap = off;
	p->msix_vectors = nvec;
	memcpy(p->initial, p->cfg, sizeof(p->cfg));
}

static uint16_t msix_control(const struct pci_dev *p)
{
	return p->msix_cap ? (uint16_t)(p->cfg[p->msix_cap + 2] | p->cfg[p->msix_cap + 3] << 8) : 0;
}

bool pci_msix_enabled(const struct pci_dev *p)
{
	return msix_control(p) & PCI_MSIX_FLAGS_ENABLE;
}

bool pci_msix_function_masked(const struct pci_dev *p)
{
	return msix_control(p) & PCI_MSIX_FLAGS_MASKALL;
}

void pci_dev_reset(struct pci_dev *p)
{
	memcpy(p->cfg, p->initial, sizeof(p->cfg));
}

static bool bad_access(uint32_t addr, unsigned len)
{
	return (len != 1 && len != 2 && len != 4) || addr >= PCI_CFG_SIZE ||
	       len > PCI_CFG_SIZE - addr;
}

int pci_cfg_read(const struct pci_dev *p, uint32_t addr, unsigned len, uint32_t *val)
{
	uint32_t v = 0;

	if (bad_access(addr, len)) {
		*val = 0xffffffffu;
		return -EINVAL;
	}
	for (unsigned i = 0; i < len; i++)
		v |= (uint32_t)p->cfg[addr + i] << (8 * i);
	*val = v;
	return 0;
}

int pci_cfg_write(struct pci_dev *p, uint32_t addr, uint32_t val, unsigned len)
{
	if (bad_access(addr, len))
		return -EINVAL;
	for (unsigned i = 0; i < len; i++) {
		uint8_t b = (uint8_t)(val >> (8 * i)), m = p->wmask[addr + i];

		p->cfg[addr + i] = (uint8_t)((p->cfg[addr + i] & ~m) | (b & m));
	}
	return 0;
}

uint32_t pci_bar0(const struct pci_dev *p)
{
	return (uint32_t)wire_ld(p->cfg + PCI_CFG_BAR0, 4) & (uint32_t) ~(p->bar_size - 1) &
	       0xfffffff0u;
}

static uint16_t command(const struct pci_dev *p)
{
	return (uint16_t)(p->cfg[PCI_CFG_COMMAND] | p->cfg[PCI_CFG_COMMAND + 1] << 8);
}

bool pci_memory_enabled(const struct pci_dev *p)
{
	return command(p) & PCI_COMMAND_MEMORY;
}

bool pci_intx_disabled(const struct pci_dev *p)
{
	return command(p) & PCI_COMMAND_INTX_DISABLE;
}

void pci_set_intx_status(struct pci_dev *p, bool level)
{
	if (level)
		p->cfg[PCI_CFG_STATUS] |= PCI_STATUS_INTERRUPT;
	else
		p->cfg[PCI_CFG_STATUS] &= (uint8_t)~PCI_STATUS_INTERRUPT;
}

bool pci_cfg_window(const struct pci_dev *p, uint32_t addr, unsigned len, uint32_t *off,
		    unsigned *acc_len, unsigned *data_off)
{
	unsigned data;
	uint32_t o, l;

	if (!p->cfgcap || bad_access(addr, len))
		return false;
	data = p->cfgcap + 16;
	if (addr >= data + 4 || addr + len <= data)
		return false;
	o = (uint32_t)wire_ld(p->cfg + p->cfgcap + 8, 4);
	l = (uint32_t)wire_ld(p->cfg + p->cfgcap + 12, 4);
	/* virtio 1.x 4.1.4.9: BAR 0 only, lengths 1, 2, 4, aligned, inside the BAR. */
	if (p->cfg[p->cfgcap + 4] != 0 || (l != 1 && l != 2 && l != 4) || o % l ||
	    o >= p->bar_size || l > p->bar_size - o)
		return false;
	*off = o;
	*acc_len = l;
	*data_off = data;
	return true;
}
