/* Unit tests of libcoreio's shared-memory file DMA (coreio_ctx_dma_read_to_fd / _write_from_fd)
 * against a fake VM passing memfds. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "coreio.h"
#include "fakevm.h"
#include "shmvm.h"
#include "wire.h"

/* ---- The fake VM (shmvm.c) ---- */

/* A plain temporary file of len bytes, byte i being pattern(i, seed). */
static uint8_t pattern(size_t i, unsigned seed)
{
	return (uint8_t)(i * 31 + seed + (i >> 9));
}

static int data_file(size_t len, unsigned seed)
{
	char path[] = "/tmp/coreio-shmfd-data-XXXXXX";
	int fd = mkstemp(path);
	uint8_t *buf = malloc(len ? len : 1);

	assert_true(fd >= 0);
	unlink(path);
	assert_non_null(buf);
	for (size_t i = 0; i < len; i++)
		buf[i] = pattern(i, seed);
	assert_int_equal(pwrite(fd, buf, len, 0), (ssize_t)len);
	free(buf);
	return fd;
}

/* file -> guest [addr, addr + len) (at host), then guest -> another file: both exact. */
static void expect_direct(struct fakevm *v, uint64_t addr, size_t len, uint8_t *host, uint64_t foff)
{
	int in = data_file((size_t)foff + len, 5), out = data_file(0, 0);
	uint8_t *back = malloc(len);

	assert_non_null(back);
	memset(host, 0xee, len);
	assert_int_equal(coreio_ctx_dma_write_from_fd(v->ctx, 0, addr, len, in, foff),
			 (ssize_t)len);
	for (size_t i = 0; i < len; i++)
		if (host[i] != pattern((size_t)foff + i, 5))
			fail_msg("byte %zu of guest memory at %#llx differs", i,
				 (unsigned long long)addr);
	assert_int_equal(coreio_ctx_dma_read_to_fd(v->ctx, 0, addr, len, out, 77), (ssize_t)len);
	assert_int_equal(pread(out, back, len, 77), (ssize_t)len);
	assert_memory_equal(back, host, len);
	free(back);
	close(in);
	close(out);
}

/* Both calls refuse [addr, addr + len) with err, touching neither side. */
static void expect_refused(coreio_ctx_t *ctx, unsigned mid, uint64_t addr, size_t len, int err)
{
	int fd = data_file(len, 9);

	assert_int_equal(coreio_ctx_dma_write_from_fd(ctx, mid, addr, len, fd, 0), err);
	assert_int_equal(coreio_ctx_dma_read_to_fd(ctx, mid, addr, len, fd, 0), err);
	assert_int_equal(lseek(fd, 0, SEEK_END), (off_t)len);
	close(fd);
}

/* ---- Tests ---- */

static void test_in_map(void **state)
{
	int fd = shmvm_memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK | F_SEAL_GROW);
	struct shmvm_map m = shmvm_ram_map(fd, 1);
	uint8_t *file = shmvm_mmap(fd, RAM_OFF + RAM_SIZE), *mem = file + RAM_OFF;
	uint8_t f[64];
	struct fakevm v;

	(void)state;
	shmvm_connect(&v, "shmfd-ut", COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
	/* Odd sizes, addresses and file offsets, up to the whole region. */
	expect_direct(&v, RAM_GPA, 1, mem, 0);
	expect_direct(&v, RAM_GPA + 3, 31, mem + 3, 7);
	expect_direct(&v, RAM_GPA + 0x1001, 70001, mem + 0x1001, 4093);
	expect_direct(&v, RAM_GPA + RAM_SIZE - 5, 5, mem + RAM_SIZE - 5, 1);
	expect_direct(&v, RAM_GPA, RAM_SIZE, mem, 512);
	/* Zero bytes inside the map: nothing to do. */
	assert_int_equal(coreio_ctx_dma_write_from_fd(v.ctx, 0, RAM_GPA, 0, fd, 0), 0);
	/* The VM saw none of it. */
	assert_int_equal(fakevm_recv(v.c[1], f, sizeof(f), 20), 0);
	fakevm_close(&v);
	munmap(file, RAM_OFF + RAM_SIZE);
	close(fd);
}

static void test_outside_mid_and_bad_arguments(void **state)
{
	int fd = shmvm_memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK);
	struct shmvm_map m = shmvm_ram_map(fd, 1);
	uint8_t f[64];
	coreio_ctx_t *idle;
	struct fakevm v;

	(void)state;
	shmvm_connect(&v, "shmfd-ut", COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
	/* Outside the map, across its ends, wrapping: the caller's socket path. */
	expect_refused(v.ctx, 0, RAM_GPA - 16, 16, -EOPNOTSUPP);
	expect_refused(v.ctx, 0, RAM_GPA - 8, 16, -EOPNOTSUPP);
	expect_refused(v.ctx, 0, RAM_GPA + RAM_SIZE - 8, 16, -EOPNOTSUPP);
	expect_refused(v.ctx, 0, RAM_GPA + RAM_SIZE, 1, -EOPNOTSUPP);
	expect_refused(v.ctx, 0, 0xfffffffffffffff0ull, 32, -EOPNOTSUPP);
	/* mid != 0: the IOMMU applies. */
	expect_refused(v.ctx, 1, RAM_GPA, 16, -EOPNOTSUPP);
	expect_refused(v.ctx, COREIO_WIRE_MAX_MID - 1, RAM_GPA, 16, -EOPNOTSUPP);
	/* Bad arguments. */
	expect_refused(v.ctx, COREIO_WIRE_MAX_MID, RAM_GPA, 16, -EINVAL);
	expect_refused(NULL, 0, RAM_GPA, 16, -EINVAL);
	assert_int_equal(coreio_ctx_dma_write_from_fd(v.ctx, 0, RAM_GPA, 16, -1, 0), -EINVAL);
	assert_int_equal(coreio_ctx_dma_read_to_fd(v.ctx, 0, RAM_GPA, 16, -1, 0), -EINVAL);
	assert_int_equal(coreio_ctx_dma_write_from_fd(v.ctx, 0, RAM_GPA, 16, fd, INT64_MAX - 8),
			 -EINVAL);
	assert_int_equal(coreio_ctx_dma_read_to_fd(v.ctx, 0, RAM_GPA, 16, fd, UINT64_MAX), -EINVAL);
	/* The file's own error: a closed fd, a file open read-only for a write. */
	{
		int rd = data_file(16, 1), ro;
		char path[64];

		snprintf(path, sizeof(path), "/proc/self/fd/%d", rd);
		ro = open(path, O_RDONLY);
		assert_true(ro >= 0);
		assert_int_equal(coreio_ctx_dma_read_to_fd(v.ctx, 0, RAM_GPA, 16, ro, 0), -EBADF);
		close(ro);
		close(rd);
		assert_int_equal(coreio_ctx_dma_write_from_fd(v.ctx, 0, RAM_GPA, 16, rd, 0),
				 -EBADF);
	}
	/* Nothing went to the VM. */
	assert_int_equal(fakevm_recv(v.c[1], f, sizeof(f), 20), 0);
	/* After the connection is gone: the context's state. */
	close(v.c[1]);
	v.c[1] = -1;
	assert_int_equal(fakevm_pump(&v), -ECONNRESET);
	expect_refused(v.ctx, 0, RAM_GPA, 16, -ENOTCONN);
	fakevm_close(&v);
	assert_int_equal(coreio_ctx_new(&idle), 0);
	expect_refused(idle, 0, RAM_GPA, 16, -ENOTCONN);
	coreio_ctx_free(idle);
	close(fd);
}

static void test_shm_not_granted(void **state)
{
	int fd = shmvm_memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK);
	struct shmvm_map m = shmvm_ram_map(fd, 1);
	struct fakevm v;

	(void)state;
	/* The VM sends a map but does not grant SHM: no shared memory. */
	shmvm_connect(&v, "shmfd-ut", COREIO_CAP_ALL, COREIO_CAP_ALL & ~COREIO_CAP_SHM, &m);
	expect_refused(v.ctx, 0, RAM_GPA, 16, -EOPNOTSUPP);
	fakevm_close(&v);
	/* The client does not offer it. */
	shmvm_connect(&v, "shmfd-ut", COREIO_CAP_ALL & ~COREIO_CAP_SHM,
		      COREIO_CAP_ALL & ~COREIO_CAP_SHM, NULL);
	expect_refused(v.ctx, 0, RAM_GPA, 16, -EOPNOTSUPP);
	fakevm_close(&v);
	close(fd);
}

static void test_two_regions(void **state)
{
	int a = shmvm_memfd(2 * RAM_SIZE, F_SEAL_SHRINK), b = shmvm_memfd(RAM_SIZE, F_SEAL_SHRINK);
	uint8_t *ma = shmvm_mmap(a, 2 * RAM_SIZE), *mb = shmvm_mmap(b, RAM_SIZE);
	struct shmvm_map m = shmvm_two_region_map(a);
	struct fakevm v;

	(void)state;
	/* Contiguous in guest-physical space, swapped in the file. */
	shmvm_connect(&v, "shmfd-ut", COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
	expect_direct(&v, RAM_GPA + 10, 100, ma + RAM_SIZE + 10, 3);
	expect_direct(&v, RAM_GPA + RAM_SIZE + 10, 100, ma + 10, 3);
	/* Each region up to its last byte ... */
	expect_direct(&v, RAM_GPA + RAM_SIZE - 64, 64, ma + 2 * RAM_SIZE - 64, 0);
	expect_direct(&v, RAM_GPA + RAM_SIZE, 64, ma, 0);
	/* ... but one call straddling both is refused (not one mapping): the caller splits. */
	expect_refused(v.ctx, 0, RAM_GPA + RAM_SIZE - 8, 16, -EOPNOTSUPP);
	/* A new generation in another file: the calls follow it. */
	m = shmvm_ram_map(b, 8);
	m.off[0] = 0;
	shmvm_send_map(v.c[1], &m);
	assert_int_equal(fakevm_pump(&v), 0);
	expect_direct(&v, RAM_GPA + 10, 100, mb + 10, 0);
	expect_refused(v.ctx, 0, RAM_GPA + RAM_SIZE + 10, 16, -EOPNOTSUPP);
	/* An empty map: nothing is shared. */
	m.n = 0;
	m.gen = 9;
	shmvm_send_map(v.c[1], &m);
	assert_int_equal(fakevm_pump(&v), 0);
	expect_refused(v.ctx, 0, RAM_GPA + 10, 16, -EOPNOTSUPP);
	fakevm_close(&v);
	munmap(ma, 2 * RAM_SIZE);
	munmap(mb, RAM_SIZE);
	close(a);
	close(b);
}

static void test_short_file(void **state)
{
	int fd = shmvm_memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK);
	struct shmvm_map m = shmvm_ram_map(fd, 1);
	uint8_t *file = shmvm_mmap(fd, RAM_OFF + RAM_SIZE), *mem = file + RAM_OFF;
	int in = data_file(1000, 3);
	struct fakevm v;

	(void)state;
	shmvm_connect(&v, "shmfd-ut", COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
	memset(mem, 0xaa, 8192);
	/* 4096 bytes asked, 1000 in the file: the count; the rest of guest memory untouched. */
	assert_int_equal(coreio_ctx_dma_write_from_fd(v.ctx, 0, RAM_GPA, 4096, in, 0), 1000);
	for (size_t i = 0; i < 1000; i++)
		assert_int_equal(mem[i], pattern(i, 3));
	for (size_t i = 1000; i < 8192; i++)
		assert_int_equal(mem[i], 0xaa);
	/* From the middle, and at / past the end. */
	assert_int_equal(coreio_ctx_dma_write_from_fd(v.ctx, 0, RAM_GPA + 4096, 4096, in, 900),
			 100);
	assert_int_equal(mem[4096], pattern(900, 3));
	assert_int_equal(mem[4196], 0xaa);
	assert_int_equal(coreio_ctx_dma_write_from_fd(v.ctx, 0, RAM_GPA, 16, in, 1000), 0);
	assert_int_equal(coreio_ctx_dma_write_from_fd(v.ctx, 0, RAM_GPA, 16, in, 1 << 30), 0);
	/* Writing extends a file. */
	assert_int_equal(coreio_ctx_dma_read_to_fd(v.ctx, 0, RAM_GPA, 8192, in, 5000), 8192);
	assert_int_equal(lseek(in, 0, SEEK_END), 5000 + 8192);
	fakevm_close(&v);
	munmap(file, RAM_OFF + RAM_SIZE);
	close(in);
	close(fd);
}

/*
 * Calls from two threads while the loop thread replaces the map again and
 * again, every other generation an empty map (which unmaps the old one at
 * once when no call holds it): a call holds its map across the system
 * call, so it never moves data to or from unmapped memory (pread() and
 * pwrite() would fail with EFAULT, or the process would crash) and every
 * call moves all of its bytes or finds no map.
 */
#define BIG (256u << 10)

struct worker {
	coreio_ctx_t *ctx;
	unsigned id;
	int in, out;
	int direct, refused, bad;
};

static int stop_workers; /* __atomic */

static void *worker_thread(void *p)
{
	struct worker *w = p;
	uint64_t addr = RAM_GPA + w->id * (RAM_SIZE / 2);

	for (int i = 0; !__atomic_load_n(&stop_workers, __ATOMIC_ACQUIRE); i++) {
		ssize_t r = (i & 1) ? coreio_ctx_dma_read_to_fd(w->ctx, 0, addr, BIG, w->out, 0)
				    : coreio_ctx_dma_write_from_fd(w->ctx, 0, addr, BIG, w->in, 0);

		if (r == (ssize_t)BIG)
			w->direct++;
		else if (r == -EOPNOTSUPP)
			w->refused++;
		else
			w->bad++;
	}
	return NULL;
}

static void test_map_replaced_under_calls(void **state)
{
	int fd = shmvm_memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK);
	struct shmvm_map m = shmvm_ram_map(fd, 1);
	static struct worker w[2];
	pthread_t th[2];
	bool joined[2] = {false, false};
	uint8_t *chk = malloc(BIG), *mem;
	struct fakevm v;

	(void)state;
	assert_non_null(chk);
	stop_workers = 0;
	shmvm_connect(&v, "shmfd-ut", COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
	/* Guest memory starts with what the files hold, so any write out checks. */
	mem = shmvm_mmap(fd, RAM_OFF + RAM_SIZE);
	for (size_t k = 0; k < BIG; k++) {
		mem[RAM_OFF + k] = pattern(k, 11);
		mem[RAM_OFF + RAM_SIZE / 2 + k] = pattern(k, 12);
	}
	munmap(mem, RAM_OFF + RAM_SIZE);
	for (int i = 0; i < 2; i++) {
		w[i] = (struct worker){.ctx = v.ctx, .id = (unsigned)i};
		w[i].in = data_file(BIG, 11 + (unsigned)i);
		w[i].out = data_file(0, 0);
		assert_int_equal(pthread_create(&th[i], NULL, worker_thread, &w[i]), 0);
	}
	for (int round = 0; !joined[0] || !joined[1]; round++) {
		if (round < 400) {
			m.gen++;
			m.n = round & 1;
			shmvm_send_map(v.c[1], &m);
		} else {
			__atomic_store_n(&stop_workers, 1, __ATOMIC_RELEASE);
		}
		assert_int_equal(coreio_ctx_mainloop(v.ctx, 300), 0);
		for (int i = 0; i < 2; i++)
			if (!joined[i] && round >= 400)
				joined[i] = pthread_tryjoin_np(th[i], NULL) == 0;
		assert_true(round < 100000);
	}
	m.gen++;
	m.n = 1;
	shmvm_send_map(v.c[1], &m);
	assert_int_equal(fakevm_pump(&v), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(w[i].bad, 0);
		/* The map is stable now: one more call goes direct. What went out to
		 * the file is what came in, the bytes of the same memory. */
		assert_int_equal(coreio_ctx_dma_read_to_fd(v.ctx, 0,
							   RAM_GPA + (unsigned)i * (RAM_SIZE / 2),
							   BIG, w[i].out, 0),
				 (ssize_t)BIG);
		assert_int_equal(pread(w[i].out, chk, BIG, 0), (ssize_t)BIG);
		for (size_t k = 0; k < BIG; k++)
			if (chk[k] != pattern(k, 11 + (unsigned)i))
				fail_msg("worker %d: byte %zu differs", i, k);
		close(w[i].in);
		close(w[i].out);
	}
	print_message("calls done directly %d + %d, refused (between generations) %d + %d\n",
		      w[0].direct, w[1].direct, w[0].refused, w[1].refused);
	fakevm_close(&v);
	free(chk);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_in_map),
	    cmocka_unit_test(test_outside_mid_and_bad_arguments),
	    cmocka_unit_test(test_shm_not_granted),
	    cmocka_unit_test(test_two_regions),
	    cmocka_unit_test(test_short_file),
	    cmocka_unit_test(test_map_replaced_under_calls),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
