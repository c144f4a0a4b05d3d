/* Unit tests of the vfio-user server's PCI additions (MSI-X capability, BAR 1) and its interrupt
 * logic (src/vm/vfu_irq.c: INTx automask, MSI-X vectors, masks and pending bits) with eventfds. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cmocka.h>

#include "pci.h"
#include "vfu.h"

/* vfu.c's helpers that vfu_irq.c calls, for this test alone. */
void vfu_log(const struct vfu_dev *d, const char *fmt, ...)
{
	(void)d;
	(void)fmt;
}

bool vfu_is_eventfd(int fd)
{
	return fd >= 0;
}

static struct range_config plain_range(bool virtio)
{
	struct range_config rc;

	memset(&rc, 0, sizeof(rc));
	rc.size = 0x4000;
	rc.pci = true;
	rc.virtio = virtio;
	rc.pci_vendor = 0x1af4;
	rc.pci_device = 0x1044;
	return rc;
}

static uint32_t rd(const struct pci_dev *p, uint32_t a, unsigned len)
{
	uint32_t v;

	assert_int_equal(pci_cfg_read(p, a, len, &v), 0);
	return v;
}

static void test_msix_capability(void **state)
{
	struct range_config rc = plain_range(false);
	struct pci_dev p;

	(void)state;
	pci_dev_init(&p, &rc);
	assert_int_equal(rd(&p, PCI_CFG_STATUS, 2) & PCI_STATUS_CAP_LIST, 0);
	pci_dev_add_msix(&p, 8);
	assert_int_equal(p.msix_cap, 0x40);
	assert_int_equal(rd(&p, PCI_CFG_CAP_PTR, 1), 0x40);
	assert_int_equal(rd(&p, 0x40, 1), PCI_CAP_ID_MSIX);
	assert_int_equal(rd(&p, 0x41, 1), 0);
	assert_int_equal(rd(&p, 0x42, 2), 7);
	assert_int_equal(rd(&p, 0x44, 4), 1);
	assert_int_equal(rd(&p, 0x48, 4), 0x801);
	assert_true(rd(&p, PCI_CFG_STATUS, 2) & PCI_STATUS_CAP_LIST);
	assert_false(pci_msix_enabled(&p));
	pci_cfg_write(&p, 0x42, 0xffff, 2);
	assert_int_equal(rd(&p, 0x42, 2), 0xc007);
	assert_true(pci_msix_enabled(&p));
	assert_true(pci_msix_function_masked(&p));
	pci_cfg_write(&p, PCI_CFG_BAR1, 0xffffffff, 4);
	assert_int_equal(rd(&p, PCI_CFG_BAR1, 4), 0xfffff000);
	pci_dev_reset(&p);
	assert_int_equal(rd(&p, 0x42, 2), 7);
	assert_int_equal(rd(&p, PCI_CFG_BAR1, 4), 0);
	assert_int_equal(rd(&p, 0x40, 1), PCI_CAP_ID_MSIX);
	/* After the virtio capabilities. */
	rc = plain_range(true);
	pci_dev_init(&p, &rc);
	pci_dev_add_msix(&p, 8);
	assert_int_equal(p.msix_cap, 0x98);
	assert_int_equal(rd(&p, PCI_CFG_CAP_PTR, 1), 0x40);
	assert_int_equal(rd(&p, p.cfgcap + 1, 1), 0x98);
	/* Out-of-range vector counts change nothing. */
	pci_dev_init(&p, &rc);
	pci_dev_add_msix(&p, 0);
	assert_int_equal(p.msix_cap, 0);
}

static struct vfu s;

static struct vfu_dev *setup_dev(void)
{
	struct range_config rc = plain_range(false);
	struct vfu_dev *d = &s.devs[0];

	memset(&s, 0, sizeof(s));
	s.ndevs = 1;
	d->s = &s;
	d->intx_fd = d->intx_unmask_fd = d->err_fd = -1;
	for (unsigned k = 0; k < VFU_NVEC; k++)
		d->msix_fd[k] = -1;
	pci_dev_init(&d->pci, &rc);
	pci_dev_add_msix(&d->pci, VFU_NVEC);
	d->msix = true;
	return d;
}

static uint64_t count(int fd)
{
	uint64_t v = 0;

	if (read(fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
		return 0;
	return v;
}

static int set(struct vfu_dev *d, uint32_t index, uint32_t flags, uint32_t start, uint32_t n,
	       int *fds, unsigned nfds)
{
	struct vfu_set_irqs r = {20, flags, index, start, n, NULL};

	return vfu_set_irqs(d, &r, fds, nfds);
}

static void test_intx_automask(void **state)
{
	struct vfu_dev *d = setup_dev();
	int fd = eventfd(0, EFD_NONBLOCK), fds[1] = {fd};

	(void)state;
	assert_int_equal(set(d, VFU_PCI_INTX_IRQ,
			     VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER, 0, 1, fds, 1),
			 0);
	assert_int_equal(fds[0], -1); /* taken */
	vfu_irq_backend(0, true, &s);
	assert_int_equal(count(fd), 1);
	vfu_irq_backend(0, false, &s);
	vfu_irq_backend(0, true, &s);
	assert_int_equal(count(fd), 0); /* automasked */
	assert_int_equal(set(d, VFU_PCI_INTX_IRQ, VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_UNMASK,
			     0, 1, NULL, 0),
			 0);
	assert_int_equal(count(fd), 1);
	/* Lines of other devices and bad lines are ignored. */
	vfu_irq_backend(VFU_NVEC, true, &s);
	vfu_irq_backend(-1, true, &s);
	vfu_irq_backend(1 << 20, true, &s);
	assert_int_equal(set(d, VFU_PCI_INTX_IRQ, VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_UNMASK,
			     1, 1, NULL, 0),
			 -EINVAL);
	vfu_irq_reset(d, false);
	assert_int_equal(d->intx_fd, -1);
	close(fd);
}

static void test_msix_vectors(void **state)
{
	struct vfu_dev *d = setup_dev();
	int ev[VFU_NVEC], fds[VFU_NVEC];
	uint8_t pba[8], ctl[4] = {0, 0, 0, 0}, one[4] = {1, 0, 0, 0};

	(void)state;
	for (unsigned k = 0; k < VFU_NVEC; k++)
		fds[k] = ev[k] = eventfd(0, EFD_NONBLOCK);
	assert_int_equal(set(d, VFU_PCI_MSIX_IRQ,
			     VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER, 0, VFU_NVEC,
			     fds, VFU_NVEC),
			 0);
	/* Disabled: an edge is nothing. */
	vfu_irq_backend(3, true, &s);
	vfu_irq_backend(3, false, &s);
	assert_int_equal(count(ev[3]), 0);
	pci_cfg_write(&d->pci, d->pci.msix_cap + 2, PCI_MSIX_FLAGS_ENABLE, 2);
	vfu_irq_update(d);
	vfu_irq_backend(3, true, &s);
	assert_int_equal(count(ev[3]), 1);
	vfu_irq_backend(3, true, &s); /* no edge */
	assert_int_equal(count(ev[3]), 0);
	vfu_irq_backend(3, false, &s);
	/* Table mask: pending, then delivered on unmask. */
	vfu_msix_access(d, true, 3 * 16 + 12, one, 4);
	vfu_irq_backend(3, true, &s);
	vfu_irq_backend(3, false, &s);
	assert_int_equal(count(ev[3]), 0);
	vfu_msix_access(d, false, PCI_MSIX_PBA_OFF, pba, 8);
	assert_int_equal(pba[0], 1 << 3);
	vfu_msix_access(d, true, 3 * 16 + 12, ctl, 4);
	assert_int_equal(count(ev[3]), 1);
	vfu_msix_access(d, false, PCI_MSIX_PBA_OFF, pba, 8);
	assert_int_equal(pba[0], 0);
	/* Writes to the PBA and past the table are dropped; reads there give 0. */
	vfu_msix_access(d, true, PCI_MSIX_PBA_OFF, one, 4);
	vfu_msix_access(d, false, PCI_MSIX_PBA_OFF, pba, 8);
	assert_int_equal(pba[0], 0);
	vfu_msix_access(d, false, 0xffc, pba, 4);
	assert_int_equal(pba[0], 0);
	/* Range checks of SET_IRQS. */
	assert_int_equal(set(d, VFU_PCI_MSIX_IRQ, VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_MASK,
			     7, 2, NULL, 0),
			 -EINVAL);
	assert_int_equal(set(d, VFU_PCI_MSIX_IRQ,
			     VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_MASK, 0, 1, NULL, 0),
			 -ENOTSUP);
	assert_int_equal(set(d, VFU_PCI_MSI_IRQ, VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_TRIGGER,
			     0, 1, NULL, 0),
			 -EINVAL);
	assert_int_equal(
	    set(d, 9, VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_TRIGGER, 0, 0, NULL, 0), -EINVAL);
	vfu_irq_reset(d, false);
	for (unsigned k = 0; k < VFU_NVEC; k++)
		assert_int_equal(d->msix_fd[k], -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_msix_capability),
	    cmocka_unit_test(test_intx_automask),
	    cmocka_unit_test(test_msix_vectors),
	};

	return cmocka_run_group_tests_name("vm_vfu", tests, NULL, NULL);
}
