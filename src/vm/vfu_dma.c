/* coreio-vm vfio-user server: the DMA_MAP windows and the CoreIO clients' mid 0 DMA into them. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
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
			r[n++] = (struct vmmio_shm_region){w->addr, w->size, w->offset, w->fd};
	}
	vmmio_shm_set(d->s->v, r, n);
}

static void shm_update(struct vfu_dev *d)
{
	if (d->shm_pending || !d->s->v->any_shm)
		return;
	if (event_defer(shm_flush, d) == 0)
		d->shm_pending = true;
}

static void window_free(struct vfu_dma *w)
{
	if (w->map)
		munmap(w->map, w->maplen);
	if (w->fd >= 0)
		close(w->fd);
	memset(w, 0, sizeof(*w));
	w->fd = -1;
}

int vfu_dma_map(struct vfu_dev *d, const struct vfu_dma_map *m, int fd)
{
	long page = sysconf(_SC_PAGESIZE);
	struct vfu_dma *w;
	struct stat st;

	for (unsigned i = 0; i < d->ndma; i++) {
		const struct vfu_dma *o = &d->dma[i];

		if (m->addr < o->addr + o->size && o->addr < m->addr + m->size) {
			vfu_log(d, "DMA_MAP 0x%llx+0x%llx overlaps window 0x%llx+0x%llx",
				(unsigned long long)m->addr, (unsigned long long)m->size,
				(unsigned long long)o->addr, (unsigned long long)o->size);
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
	w->addr = m->addr;
	w->size = m->size;
	w->offset = m->offset;
	w->flags = m->flags;
	w->fd = -1;
	if (fd >= 0) {
		uint64_t delta = m->offset % (uint64_t)page;
		bool wr = m->flags & VFU_DMA_WRITEABLE;
		void *p;

		if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
			vfu_log(d, "DMA_MAP 0x%llx: the fd is not a memory file",
				(unsigned long long)m->addr);
			close(fd);
			return -EINVAL;
		}
		if (m->offset + m->size > (uint64_t)st.st_size ||
		    m->size > SIZE_MAX - (size_t)page) {
			vfu_log(d,
				"DMA_MAP 0x%llx: offset 0x%llx + size 0x%llx passes the file's "
				"end (0x%llx)",
				(unsigned long long)m->addr, (unsigned long long)m->offset,
				(unsigned long long)m->size, (unsigned long long)st.st_size);
			close(fd);
			return -EINVAL;
		}
		/* A window the client may not write is mapped private: a client's DMA
		 * write there never reaches the guest, and never faults. */
		w->maplen = (size_t)(m->size + delta);
		p = mmap(NULL, w->maplen, PROT_READ | PROT_WRITE,
			 (wr ? MAP_SHARED : MAP_PRIVATE) | MAP_NORESERVE, fd,
			 (off_t)(m->offset - delta));
		if (p == MAP_FAILED) {
			int err = errno;

			vfu_log(d, "DMA_MAP 0x%llx: cannot map: %s", (unsigned long long)m->addr,
				strerror(err));
			close(fd);
			return -err;
		}
		w->map = p;
		w->host = (uint8_t *)p + delta;
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
	if (d->s->trace)
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

		if (w->addr != u->addr || w->size != u->size)
			continue;
		had_fd = w->fd >= 0;
		window_free(w);
		d->dma[i] = d->dma[d->ndma - 1];
		d->ndma--;
		if (d->s->trace)
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

	if (len == 0)
		return NULL;
	for (unsigned g = 0; g < s->ndevs; g++) {
		const struct vfu_dev *d = &s->devs[g];

		for (unsigned i = 0; i < d->ndma; i++) {
			const struct vfu_dma *w = &d->dma[i];

			if (w->host && gpa >= w->addr && gpa - w->addr < w->size &&
			    len <= w->size - (gpa - w->addr))
				return w->host + (gpa - w->addr);
		}
	}
	return NULL;
}
