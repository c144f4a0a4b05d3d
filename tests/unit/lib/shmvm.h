/* Helpers shared by the libcoreio unit tests of shared-memory DMA: a fake VM passing memfds. */
#ifndef COREIO_TEST_SHMVM_H
#define COREIO_TEST_SHMVM_H

#include <stddef.h>
#include <stdint.h>

#include "fakevm.h"

#define RAM_GPA	 0x100000ull
#define RAM_SIZE (1u << 20)
#define RAM_OFF	 0x3000u /* the region starts this far into its file */

/* A map the fake VM sends before its hello answer. */
struct shmvm_map {
	unsigned n;
	uint64_t gpa[4], size[4], off[4];
	int fd[4];
	uint64_t gen;
};

/* A memfd of size bytes with seals (F_SEAL_*) added unless 0. */
int shmvm_memfd(size_t size, unsigned seals);

/* One SHM_MAP frame on s: region idx of count in generation gen, with nfds fds. */
void shmvm_send_region(int s, uint64_t gpa, uint64_t size, uint64_t off, uint64_t idx, uint64_t gen,
		       uint64_t count, const int *fds, unsigned nfds);

/* All regions of m on s (an empty map: one frame of count 0). */
void shmvm_send_map(int s, const struct shmvm_map *m);

/*
 * Connect v (fakevm_start(), socket name name) offering offer; the VM answers vm_caps and,
 * when m is given, sends m on both connections before the answer (as coreio-vm).
 */
void shmvm_connect(struct fakevm *v, const char *name, unsigned offer, unsigned vm_caps,
		   const struct shmvm_map *m);

/* The standard map: RAM_SIZE bytes at RAM_GPA, RAM_OFF into fd, generation gen. */
struct shmvm_map shmvm_ram_map(int fd, uint64_t gen);

/*
 * Generation 7 of two regions of RAM_SIZE contiguous from RAM_GPA, swapped in fd (2 * RAM_SIZE
 * bytes): the first at RAM_SIZE into fd, the second at 0.
 */
struct shmvm_map shmvm_two_region_map(int fd);

/* The first len bytes of fd mapped shared, read and write. */
uint8_t *shmvm_mmap(int fd, size_t len);

#endif
