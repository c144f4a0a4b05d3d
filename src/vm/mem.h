/* coreio-vm: guest RAM, a memfd mapped shared at guest-physical address 0. */
#ifndef COREIO_VM_MEM_H
#define COREIO_VM_MEM_H

#include <stddef.h>
#include <stdint.h>

struct mem {
	int fd;	       /* the memfd backing RAM, sealed at its size (shared-memory DMA) */
	uint8_t *base; /* host mapping of guest-physical 0 */
	uint64_t size; /* bytes of RAM */
};

/*
 * Create RAM of size bytes (nonzero, a multiple of the page size).
 * Returns 0, -EINVAL for a bad size, or a negative errno from memfd_create(),
 * ftruncate() or mmap().
 */
int mem_init(struct mem *m, uint64_t size);

/* Unmap and close RAM; safe on a zeroed or already freed struct. */
void mem_exit(struct mem *m);

/*
 * Host pointer for guest-physical [gpa, gpa + len).
 * Returns NULL unless len > 0 and the whole range lies inside RAM; the check
 * is overflow-safe for any gpa and len.
 */
void *mem_ptr(const struct mem *m, uint64_t gpa, uint64_t len);

/*
 * Copy len bytes of RAM at gpa into buf. Returns 0 or -EFAULT when the
 * range is not inside RAM (nothing copied).
 */
int mem_read(const struct mem *m, uint64_t gpa, void *buf, uint64_t len);

/*
 * Copy len bytes from buf into RAM at gpa. Returns 0 or -EFAULT when the
 * range is not inside RAM (nothing copied).
 */
int mem_write(struct mem *m, uint64_t gpa, const void *buf, uint64_t len);

/* The memfd of RAM, or -1 when RAM does not exist. */
int mem_fd(const struct mem *m);

#endif
