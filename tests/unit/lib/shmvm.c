/* Helpers shared by the libcoreio unit tests of shared-memory DMA: a fake VM passing memfds. */
#include "shmvm.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "wire.h"

int shmvm_memfd(size_t size, unsigned seals)
{
	int fd = memfd_create("shm-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	if (seals)
		assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
	return fd;
}

void shmvm_send_region(int s, uint64_t gpa, uint64_t size, uint64_t off, uint64_t idx, uint64_t gen,
		       uint64_t count, const int *fds, unsigned nfds)
{
	struct coreio_wire_hdr h = {.op = COREIO_OP_SHM_MAP, .addr = gpa};
	uint8_t f[64];

	coreio__wire_encode(f, &h);
	coreio__wire_put64(f + 24, size);
	coreio__wire_put64(f + 32, off);
	coreio__wire_put64(f + 40, idx);
	coreio__wire_put64(f + 48, gen);
	coreio__wire_put64(f + 56, count);
	fakevm_send_fds(s, f, sizeof(f), fds, nfds);
}

void shmvm_send_map(int s, const struct shmvm_map *m)
{
	if (m->n == 0) {
		shmvm_send_region(s, 0, 0, 0, 0, m->gen, 0, NULL, 0);
		return;
	}
	for (unsigned i = 0; i < m->n; i++)
		shmvm_send_region(s, m->gpa[i], m->size[i], m->off[i], i, m->gen, m->n, &m->fd[i],
				  1);
}

void shmvm_connect(struct fakevm *v, const char *name, unsigned offer, unsigned vm_caps,
		   const struct shmvm_map *m)
{
	fakevm_start(v, name, offer);
	for (int i = 0; i < 2; i++) {
		uint8_t f[64];

		fakevm_hello_recv(v->c[i], f, offer);
		if (m)
			shmvm_send_map(v->c[i], m);
		fakevm_hello_answer(v->c[i], f, vm_caps);
	}
	assert_int_equal(fakevm_join(v), 0);
}

struct shmvm_map shmvm_ram_map(int fd, uint64_t gen)
{
	struct shmvm_map m = {.n = 1, .gen = gen};

	m.gpa[0] = RAM_GPA;
	m.size[0] = RAM_SIZE;
	m.off[0] = RAM_OFF;
	m.fd[0] = fd;
	return m;
}

uint8_t *shmvm_mmap(int fd, size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	assert_true(p != MAP_FAILED);
	return p;
}

struct shmvm_map shmvm_two_region_map(int fd)
{
	struct shmvm_map m = {.n = 2, .gen = 7};

	m.gpa[0] = RAM_GPA;
	m.size[0] = RAM_SIZE;
	m.off[0] = RAM_SIZE;
	m.fd[0] = fd;
	m.gpa[1] = RAM_GPA + RAM_SIZE;
	m.size[1] = RAM_SIZE;
	m.off[1] = 0;
	m.fd[1] = fd;
	return m;
}
