/* coreio-vm vfio-user server: the DMA_MAP windows and the CoreIO clients' mid 0 DMA into them. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "event.h"
#include "vfu.h"

/*
 * Offer d's fd-backed writeable windows to shared-memory (shm=on) clients.
 * Deferred to the event loop: vmmio_shm_set() takes the VM lock, which a
 * completion (finish() closing a connection) may hold.
 */
static void shm_flush(void *opaque)
{
	struct vfu_dev *d = opaque;
	struct vmmio_shm_region r[VMMIO_SHM_MAX];
	unsigned n = 0;

	d->shm_pending = false;

	for (unsigned i = 0; i < d->ndma && n < VMMIO_SHM_MAX; i++) {
		const struct vfu_dma *w = &d->dma[i];

		if (w->fd >= 0 && (w->flags & VFU_DMA_WRITEABLE))
			r[n++] = (struct vmmio_shm_region){w->m.gpa, w->m.size, w->offset, w->fd};
	}
	vmmio_shm_set(d->s->q.v, r, n);
}

static void shm_update(struct vfu_dev *d)
{
	if (d->shm_pending || !d->s->q.v->any_shm)
		return;
	if (event_defer(shm_flush, d) == 0)
		d->shm_pending = true;
}

static void window_free(struct vfu_dma *w)
{
	qside_unmap(&w->m);
	if (w->fd >= 0)
		close(w->fd);
	memset(w, 0, sizeof(*w));
	w->fd = -1;
}

int vfu_dma_map(struct vfu_dev *d, const struct vfu_dma_map *m, int fd)
{
	struct vfu_dma *w;

	for (unsigned i = 0; i < d->ndma; i++) {
		const struct vfu_dma *o = &d->dma[i];

		if (m->addr < o->m.gpa + o->m.size && o->m.gpa < m->addr + m->size) {
			vfu_log(d, "DMA_MAP 0x%llx+0x%llx overlaps window 0x%llx+0x%llx",
				(unsigned long long)m->addr, (unsigned long long)m->size,
				(unsigned long long)o->m.gpa, (unsigned long long)o->m.size);
			if (fd >= 0)
				close(fd);
			return -EEXIST;
		}
	}
	if (d->ndma >= VFU_MAX_DMA) {
		vfu_log(d, "DMA_MAP: more than %u windows", VFU_MAX_DMA);
		if (fd >= 0)
			close(fd);
		return -ENOSPC;
	}
	w = &d->dma[d->ndma];
	memset(w, 0, sizeof(*w));
	w->m.gpa = m->addr;
	w->m.size = m->size;
	w->offset = m->offset;
	w->flags = m->flags;
	w->fd = -1;
	if (fd >= 0) {
		uint64_t end;
		int err;

		switch (qside_mem_check(fd, m->offset, m->size, &end)) {
		case QSIDE_MEM_OK:
			break;
		case QSIDE_MEM_NOT_FILE:
			vfu_log(d, "DMA_MAP 0x%llx: the fd is not a memory file",
				(unsigned long long)m->addr);
			close(fd);
			return -EINVAL;
		default:
			vfu_log(d,
				"DMA_MAP 0x%llx: offset 0x%llx + size 0x%llx passes the file's "
				"end (0x%llx)",
				(unsigned long long)m->addr, (unsigned long long)m->offset,
				(unsigned long long)m->size, (unsigned long long)end);
			close(fd);
			return -EINVAL;
		}
		/* A window the client may not write is mapped private: a client's DMA
		 * write there never reaches the guest, and never faults. */
		err = qside_map(&w->m, fd, m->offset, m->flags & VFU_DMA_WRITEABLE);
		if (err < 0) {
			vfu_log(d, "DMA_MAP 0x%llx: cannot map: %s", (unsigned long long)m->addr,
				strerror(-err));
			close(fd);
			return err;
		}
		w->fd = fd;
	} else if (!d->warned_msg_dma) {
		d->warned_msg_dma = true;
		vfu_log(d,
			"DMA_MAP 0x%llx+0x%llx without an fd: clients' DMA there fails "
			"(no DMA_READ/DMA_WRITE messages)",
			(unsigned long long)m->addr, (unsigned long long)m->size);
	}
	d->ndma++;
	d->dma_maps++;
	if (d->s->q.trace)
		vfu_log(d, "DMA_MAP 0x%llx+0x%llx offset 0x%llx flags 0x%x%s",
			(unsigned long long)m->addr, (unsigned long long)m->size,
			(unsigned long long)m->offset, m->flags, fd >= 0 ? " (fd)" : "");
	if (fd >= 0)
		shm_update(d);
	return 0;
}

int vfu_dma_unmap(struct vfu_dev *d, const struct vfu_dma_unmap *u)
{
	bool had_fd = false;

	if (u->flags & VFU_DMA_UNMAP_FLAG_ALL) {
		vfu_dma_clear(d);
		return 0;
	}
	for (unsigned i = 0; i < d->ndma; i++) {
		struct vfu_dma *w = &d->dma[i];

		if (w->m.gpa != u->addr || w->m.size != u->size)
			continue;
		had_fd = w->fd >= 0;
		window_free(w);
		d->dma[i] = d->dma[d->ndma - 1];
		d->ndma--;
		if (d->s->q.trace)
			vfu_log(d, "DMA_UNMAP 0x%llx+0x%llx", (unsigned long long)u->addr,
				(unsigned long long)u->size);
		if (had_fd)
			shm_update(d);
		return 0;
	}
	vfu_log(d, "DMA_UNMAP 0x%llx+0x%llx matches no window", (unsigned long long)u->addr,
		(unsigned long long)u->size);
	return -ENOENT;
}

void vfu_dma_clear(struct vfu_dev *d)
{
	bool any_fd = false;

	for (unsigned i = 0; i < d->ndma; i++) {
		any_fd |= d->dma[i].fd >= 0;
		window_free(&d->dma[i]);
	}
	d->ndma = 0;
	if (any_fd)
		shm_update(d);
}

void *vfu_dma_ptr(void *opaque, uint64_t gpa, uint64_t len)
{
	struct vfu *s = opaque;

	for (unsigned g = 0; g < s->ndevs; g++) {
		const struct vfu_dev *d = &s->devs[g];

		for (unsigned i = 0; i < d->ndma; i++) {
			void *p = qside_map_ptr(&d->dma[i].m, gpa, len);

			if (p)
				return p;
		}
	}
	return NULL;
}
