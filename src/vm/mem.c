/* coreio-vm: guest RAM, a memfd mapped shared at guest-physical address 0. */
#include "mem.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int mem_init(struct mem *m, uint64_t size)
{
	long page = sysconf(_SC_PAGESIZE);
	void *p;

	m->fd = -1;
	m->base = NULL;
	m->size = 0;
	if (size == 0 || page <= 0 || size % (uint64_t)page || size > (uint64_t)SIZE_MAX)
		return -EINVAL;
	m->fd = memfd_create("coreio-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (m->fd < 0)
		return -errno;
	/* Sealed at its size: clients that map it for shared-memory DMA (they
	 * get the fd, docs/protocol.md) rely on it never shrinking under them. */
	if (ftruncate(m->fd, (off_t)size) < 0 ||
	    fcntl(m->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		int err = -errno;

		close(m->fd);
		m->fd = -1;
		return err;
	}
	p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
	if (p == MAP_FAILED) {
		int err = -errno;

		close(m->fd);
		m->fd = -1;
		return err;
	}
	m->base = p;
	m->size = size;
	return 0;
}

void mem_exit(struct mem *m)
{
	if (m->base)
		munmap(m->base, (size_t)m->size);
	if (m->fd >= 0)
		close(m->fd);
	m->base = NULL;
	m->fd = -1;
	m->size = 0;
}

void *mem_ptr(const struct mem *m, uint64_t gpa, uint64_t len)
{
	if (!m->base || len == 0 || gpa >= m->size || len > m->size - gpa)
		return NULL;
	return m->base + gpa;
}

int mem_read(const struct mem *m, uint64_t gpa, void *buf, uint64_t len)
{
	const void *p = mem_ptr(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(buf, p, (size_t)len);
	return 0;
}

int mem_write(struct mem *m, uint64_t gpa, const void *buf, uint64_t len)
{
	void *p = mem_ptr(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(p, buf, (size_t)len);
	return 0;
}

int mem_fd(const struct mem *m)
{
	return m->base ? m->fd : -1;
}
