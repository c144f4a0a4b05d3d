/* coreio-vm vfio-user server: INTx, the MSI-X table and PBA, and the client line -> vector mapping.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "event.h"
#include "vfu.h"

static void signal_fd(int fd, uint64_t *counter)
{
	uint64_t one = 1;

	if (fd >= 0 && write(fd, &one, sizeof(one)) == (ssize_t)sizeof(one))
		(*counter)++;
}

/* INTx: deliver when the line is high, not automasked, INTx enabled and MSI-X off. */
static void intx_check(struct vfu_dev *d)
{
	if (d->dead || !d->lines[0] || d->intx_masked || d->intx_fd < 0 ||
	    pci_intx_disabled(&d->pci) || pci_msix_enabled(&d->pci))
		return;
	d->intx_masked = true; /* automasked until the client unmasks (the guest's EOI) */
	signal_fd(d->intx_fd, &d->intx_signals);
	if (d->s->q.trace)
		vfu_log(d, "INTx signalled");
}

static bool table_masked(const struct vfu_dev *d, unsigned k)
{
	return d->msix_table[k * PCI_MSIX_ENTRY_SIZE + 12] & 1;
}

static bool vector_masked(const struct vfu_dev *d, unsigned k)
{
	return pci_msix_function_masked(&d->pci) || d->msix_masked[k] || table_masked(d, k);
}

/* Fire the pending vectors that can be delivered now. */
static void msix_flush(struct vfu_dev *d)
{
	if (d->dead || !pci_msix_enabled(&d->pci))
		return;
	for (unsigned k = 0; k < VFU_NVEC; k++)
		if (d->msix_pending[k] && !vector_masked(d, k) && d->msix_fd[k] >= 0) {
			d->msix_pending[k] = false;
			signal_fd(d->msix_fd[k], &d->msix_signals);
		}
}

void vfu_irq_update(struct vfu_dev *d)
{
	msix_flush(d);
	intx_check(d);
}

void vfu_irq_backend(int line, bool level, void *opaque)
{
	struct vfu *s = opaque;
	struct vfu_dev *d;
	unsigned k;
	bool rising;

	if (line < 0 || (unsigned)line / VFU_NVEC >= s->ndevs)
		return;
	d = &s->devs[(unsigned)line / VFU_NVEC];
	k = (unsigned)line % VFU_NVEC;
	rising = level && !d->lines[k];
	d->lines[k] = level;
	if (d->dead)
		return; /* the lines belong to the range's next device instance */
	if (k == 0)
		pci_set_intx_status(&d->pci, level);
	if (s->q.trace)
		vfu_log(d, "line %u %s", k, level ? "high" : "low");
	if (rising && pci_msix_enabled(&d->pci)) {
		/* An edge is one message: pending while it cannot be delivered. */
		d->msix_pending[k] = true;
		msix_flush(d);
		return;
	}
	if (k == 0)
		intx_check(d);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void drop_unmask_fd(struct vfu_dev *d)
{
	if (d->intx_unmask_fd >= 0)
		event_del(d->intx_unmask_fd);
	close_fd(&d->intx_unmask_fd);
}

void vfu_irq_reset(struct vfu_dev *d, bool keep_fds)
{
	d->intx_masked = false;
	memset(d->msix_masked, 0, sizeof(d->msix_masked));
	memset(d->msix_pending, 0, sizeof(d->msix_pending));
	/* The table's vector control starts unmasked (see docs/coreio-vm.md). */
	memset(d->msix_table, 0, sizeof(d->msix_table));
	if (keep_fds)
		return;
	close_fd(&d->intx_fd);
	close_fd(&d->err_fd);
	drop_unmask_fd(d);
	for (unsigned k = 0; k < VFU_NVEC; k++)
		close_fd(&d->msix_fd[k]);
}

/* The INTx unmask eventfd (SET_IRQS UNMASK with DATA_EVENTFD, KVM's resamplefd): unmask. */
static void on_unmask_fd(int fd, uint32_t events, void *opaque)
{
	struct vfu_dev *d = opaque;
	uint64_t n;

	(void)events;
	if (read(fd, &n, sizeof(n)) < 0) {
		/* spurious wake-up */
	}
	d->intx_masked = false;
	intx_check(d);
}

int vfu_irq_info(const struct vfu_dev *d, uint32_t index, uint32_t *flags, uint32_t *count)
{
	switch (index) {
	case VFU_PCI_INTX_IRQ:
		*flags = VFU_IRQ_INFO_EVENTFD | VFU_IRQ_INFO_MASKABLE | VFU_IRQ_INFO_AUTOMASKED;
		*count = 1;
		return 0;
	case VFU_PCI_MSIX_IRQ:
		*flags = VFU_IRQ_INFO_EVENTFD | VFU_IRQ_INFO_MASKABLE;
		*count = d->msix ? VFU_NVEC : 0;
		return 0;
	case VFU_PCI_ERR_IRQ:
		/* One vector, so that QEMU's vfio-pci sets up error recovery without a
		 * warning; coreio-vm never signals it. */
		*flags = VFU_IRQ_INFO_EVENTFD;
		*count = 1;
		return 0;
	case VFU_PCI_MSI_IRQ:
	case VFU_PCI_REQ_IRQ:
		*flags = VFU_IRQ_INFO_EVENTFD;
		*count = 0;
		return 0;
	default:
		return -EINVAL;
	}
}

/* Whether element i of a DATA_NONE / DATA_BOOL request applies. */
static bool applies(const struct vfu_set_irqs *s, unsigned i)
{
	return !s->data || s->data[i];
}

static int set_intx(struct vfu_dev *d, const struct vfu_set_irqs *s, int *fds, unsigned nfds)
{
	uint32_t data = s->flags & VFU_IRQ_SET_DATA_MASK;
	uint32_t action = s->flags & VFU_IRQ_SET_ACTION_ALL;

	if (s->count == 0) {
		if (data != VFU_IRQ_SET_DATA_NONE || action != VFU_IRQ_SET_ACTION_TRIGGER)
			return -EINVAL;
		close_fd(&d->intx_fd); /* disable the index */
		drop_unmask_fd(d);
		return 0;
	}
	if (s->start != 0 || s->count != 1)
		return -EINVAL;
	if (data == VFU_IRQ_SET_DATA_EVENTFD) {
		int fd = nfds ? fds[0] : -1;

		if (action == VFU_IRQ_SET_ACTION_MASK)
			return -ENOTSUP;
		if (action == VFU_IRQ_SET_ACTION_TRIGGER) {
			close_fd(&d->intx_fd);
			d->intx_fd = fd;
			if (nfds)
				fds[0] = -1;
			d->intx_masked = false;
			intx_check(d);
			return 0;
		}
		drop_unmask_fd(d); /* UNMASK */
		if (fd >= 0) {
			int err = event_add(fd, EPOLLIN, on_unmask_fd, d);

			if (err < 0)
				return err;
			d->intx_unmask_fd = fd;
			fds[0] = -1;
		}
		return 0;
	}
	if (!applies(s, 0))
		return 0;
	switch (action) {
	case VFU_IRQ_SET_ACTION_MASK:
		d->intx_masked = true;
		break;
	case VFU_IRQ_SET_ACTION_UNMASK:
		d->intx_masked = false;
		intx_check(d);
		break;
	default: /* TRIGGER: the client asks for a signal */
		signal_fd(d->intx_fd, &d->intx_signals);
		break;
	}
	return 0;
}

static int set_msix(struct vfu_dev *d, const struct vfu_set_irqs *s, int *fds, unsigned nfds)
{
	uint32_t data = s->flags & VFU_IRQ_SET_DATA_MASK;
	uint32_t action = s->flags & VFU_IRQ_SET_ACTION_ALL;

	if (s->count == 0) {
		if (data != VFU_IRQ_SET_DATA_NONE || action != VFU_IRQ_SET_ACTION_TRIGGER)
			return -EINVAL;
		for (unsigned k = 0; k < VFU_NVEC; k++)
			close_fd(&d->msix_fd[k]);
		return 0;
	}
	if (s->start >= VFU_NVEC || s->count > VFU_NVEC - s->start)
		return -EINVAL;
	if (data == VFU_IRQ_SET_DATA_EVENTFD) {
		if (action != VFU_IRQ_SET_ACTION_TRIGGER)
			return -ENOTSUP;
		for (unsigned i = 0; i < s->count; i++) {
			close_fd(&d->msix_fd[s->start + i]);
			if (nfds) {
				d->msix_fd[s->start + i] = fds[i];
				fds[i] = -1;
			}
		}
		msix_flush(d); /* a vector pending before it had an eventfd */
		return 0;
	}
	for (unsigned i = 0; i < s->count; i++) {
		unsigned k = s->start + i;

		if (!applies(s, i))
			continue;
		if (action == VFU_IRQ_SET_ACTION_MASK)
			d->msix_masked[k] = true;
		else if (action == VFU_IRQ_SET_ACTION_UNMASK)
			d->msix_masked[k] = false;
		else
			signal_fd(d->msix_fd[k], &d->msix_signals);
	}
	msix_flush(d);
	return 0;
}

int vfu_set_irqs(struct vfu_dev *d, const struct vfu_set_irqs *s, int *fds, unsigned nfds)
{
	uint32_t data = s->flags & VFU_IRQ_SET_DATA_MASK;

	if (data == VFU_IRQ_SET_DATA_EVENTFD) {
		if (nfds != 0 && nfds != s->count) {
			vfu_log(d, "SET_IRQS index %u: %u fd(s) for count %u", s->index, nfds,
				s->count);
			return -EINVAL;
		}
		for (unsigned i = 0; i < nfds; i++)
			if (!vfu_is_eventfd(fds[i])) {
				vfu_log(d, "SET_IRQS index %u: fd %u is not an eventfd", s->index,
					i);
				return -EINVAL;
			}
	} else if (nfds) {
		vfu_log(d, "SET_IRQS index %u: fds without DATA_EVENTFD", s->index);
		return -EINVAL;
	}
	if (d->s->q.trace)
		vfu_log(d, "SET_IRQS index %u start %u count %u flags 0x%x fds %u", s->index,
			s->start, s->count, s->flags, nfds);
	switch (s->index) {
	case VFU_PCI_INTX_IRQ:
		return set_intx(d, s, fds, nfds);
	case VFU_PCI_MSIX_IRQ:
		if (!d->msix) {
			vfu_log(d, "SET_IRQS for MSI-X, which this device does not offer");
			return -EINVAL;
		}
		return set_msix(d, s, fds, nfds);
	case VFU_PCI_ERR_IRQ:
		if (s->count == 0 ||
		    (s->flags & VFU_IRQ_SET_ACTION_ALL) != VFU_IRQ_SET_ACTION_TRIGGER) {
			if (s->count == 0)
				close_fd(&d->err_fd);
			return s->count == 0 ? 0 : -EINVAL;
		}
		if (s->start != 0 || s->count != 1 || data != VFU_IRQ_SET_DATA_EVENTFD)
			return -EINVAL;
		close_fd(&d->err_fd);
		if (nfds) {
			d->err_fd = fds[0];
			fds[0] = -1;
		}
		return 0;
	case VFU_PCI_MSI_IRQ:
	case VFU_PCI_REQ_IRQ:
		/* No vectors: only "disable the index" is meaningful. */
		return s->count == 0 ? 0 : -EINVAL;
	default:
		return -EINVAL;
	}
}

void vfu_msix_access(struct vfu_dev *d, bool write, uint64_t offset, uint8_t *data, uint32_t count)
{
	d->msix_accesses++;
	for (uint32_t i = 0; i < count; i++) {
		uint64_t o = offset + i;

		if (o < sizeof(d->msix_table)) {
			if (!write)
				data[i] = d->msix_table[o];
			else if (o % PCI_MSIX_ENTRY_SIZE == 12) /* vector control: the mask bit */
				d->msix_table[o] = data[i] & 1;
			else if (o % PCI_MSIX_ENTRY_SIZE < 12)
				d->msix_table[o] = data[i];
		} else if (o >= PCI_MSIX_PBA_OFF && o < PCI_MSIX_PBA_OFF + 8) {
			uint8_t bits = 0;

			if (o == PCI_MSIX_PBA_OFF)
				for (unsigned k = 0; k < VFU_NVEC && k < 8; k++)
					bits |= (uint8_t)(d->msix_pending[k] << k);
			if (!write)
				data[i] = bits; /* PBA writes are dropped */
		} else if (!write) {
			data[i] = 0;
		}
	}
	if (write)
		msix_flush(d);
}
