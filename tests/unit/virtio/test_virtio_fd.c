/* cmocka tests of the virtio library's file I/O to and from chains (vio_chain_pread/pwrite):
 * the host's fd ops on shared memory, the buffer path, their mix, order, short files, errors. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "vio_fake.h"
#include "virtio.h"

#define MEM_SIZE (1u << 20)
#define SHM_LO	 0x10000u /* the fd ops work inside [SHM_LO, SHM_HI) only */
#define SHM_HI	 0x80000u
#define OUTSIDE	 0x90000u /* guest memory the fd ops refuse (socket only) */

struct fake {
	struct vio_fake h; /* first: the host ops' opaque */
	struct vio_dev dev;
};

static struct fake F;

static void kick(struct vio_dev *d, unsigned q)
{
	(void)d, (void)q;
}

static const struct vio_dev_ops ops = {.queue_kick = kick};

static struct fake *setup(const struct vio_host_ops *host, bool post)
{
	struct fake *f = &F;

	vio_fake_fini(&f->h);
	memset(f, 0, sizeof(*f));
	vio_fake_init(&f->h, MEM_SIZE);
	f->h.no_post = !post;
	f->h.shm_lo = SHM_LO;
	f->h.shm_hi = SHM_HI;
	assert_int_equal(vio_dev_init(&f->dev, VIO_ID_BLOCK, 0, 1, 16, &ops, f), 0);
	vio_dev_set_host(&f->dev, host, &f->h);
	return f;
}

/* A chain of n buffers given as (addr, len), the first n_rd readable. */
static void make_chain(struct vio_chain *c, const uint64_t (*b)[2], unsigned n, unsigned n_rd)
{
	memset(c, 0, sizeof(*c));
	c->buf = calloc(n, sizeof(*c->buf));
	assert_non_null(c->buf);
	c->cap = n;
	for (unsigned i = 0; i < n; i++) {
		c->buf[i].addr = b[i][0];
		c->buf[i].len = (uint32_t)b[i][1];
		if (i < n_rd)
			c->rd_len += b[i][1];
		else
			c->wr_len += b[i][1];
	}
	c->n_rd = n_rd;
	c->n_wr = n - n_rd;
	c->fail_tail = -1;
}

static uint8_t pat(size_t i, unsigned seed)
{
	return (uint8_t)(i * 7 + seed + (i >> 8));
}

/* An unlinked temporary file of len pattern bytes. */
static int tmp_file(size_t len, unsigned seed)
{
	char path[] = "/tmp/coreio-viofd-XXXXXX";
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	unlink(path);
	for (size_t i = 0; i < len; i++) {
		uint8_t b = pat(i, seed);

		assert_int_equal(pwrite(fd, &b, 1, (off_t)i), 1);
	}
	return fd;
}

/* Guest bytes of the chain's buffers [first, first + n) in order, concatenated into out. */
static size_t gather(const struct fake *f, const struct vio_chain *c, unsigned first, unsigned n,
		     uint8_t *out)
{
	size_t k = 0;

	for (unsigned i = first; i < first + n; i++) {
		memcpy(out + k, f->h.mem + c->buf[i].addr, c->buf[i].len);
		k += c->buf[i].len;
	}
	return k;
}

/* Writable buffers: a header-like readable one, then runs inside shared memory (two adjacent). */
static const uint64_t shm_bufs[][2] = {
    {SHM_LO, 16},
    {SHM_LO + 0x1000, 3000},
    {SHM_LO + 0x1000 + 3000, 1096},
    {SHM_LO + 0x8000, 5000},
};

static void test_pread_direct(void **state)
{
	struct fake *f = setup(&vio_fake_host_fd, true);
	struct vio_chain c;
	uint8_t got[16384];
	int fd = tmp_file(20000, 1);
	size_t done = 0;

	(void)state;
	assert_true(vio_dev_fd_direct(&f->dev));
	make_chain(&c, shm_bufs, 4, 1);
	assert_int_equal(vio_chain_pread(&f->dev, &c, 0, fd, 100, 9096, NULL, 0, &done), 0);
	assert_int_equal(done, 9096);
	gather(f, &c, 1, 3, got);
	for (size_t i = 0; i < 9096; i++)
		assert_int_equal(got[i], pat(100 + i, 1));
	/* Two runs (the adjacent buffers merged), no DMA, nothing posted. */
	assert_int_equal(f->h.fd_calls, 2);
	assert_int_equal(f->h.reads + f->h.writes + f->h.posts, 0);
	assert_int_equal(f->dev.stat_fd_direct, 2);
	assert_int_equal(f->dev.stat_fd_direct_bytes, 9096);
	assert_int_equal(f->dev.stat_fd_bounce_bytes, 0);
	/* A part of the chain: from writable byte 2000, 2500 bytes: 2096 in the first run, 404
	 * in the second. */
	memset(f->h.mem + SHM_LO + 0x1000, 0, 0x9000);
	assert_int_equal(vio_chain_pread(&f->dev, &c, 2000, fd, 0, 2500, NULL, 0, &done), 0);
	assert_int_equal(done, 2500);
	for (size_t i = 0; i < 2096; i++)
		assert_int_equal(f->h.mem[SHM_LO + 0x1000 + 2000 + i], pat(i, 1));
	for (size_t i = 0; i < 404; i++)
		assert_int_equal(f->h.mem[SHM_LO + 0x8000 + i], pat(2096 + i, 1));
	assert_int_equal(f->h.mem[SHM_LO + 0x1000 + 1999], 0);
	assert_int_equal(f->h.mem[SHM_LO + 0x1000 + 4096], 0);
	assert_int_equal(f->h.mem[SHM_LO + 0x8000 + 404], 0);
	assert_int_equal(f->h.fd_calls, 4);
	vio_chain_free(&c);
	close(fd);
}

static void test_pwrite_direct(void **state)
{
	struct fake *f = setup(&vio_fake_host_fd, true);
	static const uint64_t b[][2] = {
	    {SHM_LO, 16}, {SHM_LO + 0x2000, 4096}, {SHM_LO + 0x5000, 700}, {SHM_LO + 0x9000, 1}};
	struct vio_chain c;
	uint8_t want[8192], got[8192];
	int fd = tmp_file(0, 0);
	size_t done = 0;

	(void)state;
	for (size_t i = 0; i < MEM_SIZE; i++)
		f->h.mem[i] = pat(i, 3);
	make_chain(&c, b, 4, 3); /* the last one writable (a status byte) */
	assert_int_equal(vio_chain_pwrite(&f->dev, &c, 16, fd, 512, 4796, NULL, 0, &done), 0);
	assert_int_equal(done, 4796);
	gather(f, &c, 1, 2, want);
	assert_int_equal(pread(fd, got, sizeof(got), 512), 4796);
	assert_memory_equal(got, want, 4796);
	assert_int_equal(f->h.fd_calls, 2);
	assert_int_equal(f->h.reads + f->h.writes + f->h.posts, 0);
	/* Beyond the readable bytes, or a file offset that overflows: -EINVAL, nothing done. */
	assert_int_equal(vio_chain_pwrite(&f->dev, &c, 16, fd, 0, 4797, NULL, 0, &done), -EINVAL);
	assert_int_equal(done, 0);
	assert_int_equal(vio_chain_pwrite(&f->dev, &c, 4813, fd, 0, 0, NULL, 0, &done), -EINVAL);
	assert_int_equal(vio_chain_pwrite(&f->dev, &c, 0, fd, INT64_MAX, 16, NULL, 0, &done),
			 -EINVAL);
	assert_int_equal(vio_chain_pread(&f->dev, &c, 0, fd, 0, 2, NULL, 0, &done), -EINVAL);
	assert_int_equal(f->h.fd_calls, 2);
	vio_chain_free(&c);
	close(fd);
}

/* The buffer path, for a host without fd ops or a range outside shared memory. */
static void check_buffered(const struct vio_host_ops *host, uint64_t base, bool post, size_t blen)
{
	struct fake *f = setup(host, post);
	const uint64_t b[][2] = {{base, 16},
				 {base + 0x1000, 3000},
				 {base + 0x1000 + 3000, 1096},
				 {base + 0x8000, 5000},
				 {base + 0xa000, 1}};
	static uint8_t bounce[100];
	struct vio_chain c;
	uint8_t got[16384], want[16384];
	int fd = tmp_file(20000, 2), out = tmp_file(0, 0);
	size_t done = 0;

	make_chain(&c, b, 5, 1);
	assert_int_equal(
	    vio_chain_pread(&f->dev, &c, 0, fd, 7, 9097, blen ? bounce : NULL, blen, &done), 0);
	assert_int_equal(done, 9097);
	vio_fake_drain(&f->h);
	gather(f, &c, 1, 4, got);
	for (size_t i = 0; i < 9097; i++)
		assert_int_equal(got[i], pat(7 + i, 2));
	assert_int_equal(f->dev.stat_fd_direct, 0);
	assert_int_equal(f->dev.stat_fd_bounce_bytes, 9097);
	if (post)
		assert_true(f->h.posts > 0 && f->h.writes == 0);
	else
		assert_true(f->h.writes > 0 && f->h.posts == 0);
	vio_chain_free(&c);
	/* And out again: the chain's readable buffers to a file. */
	make_chain(&c, b, 5, 4);
	assert_int_equal(
	    vio_chain_pwrite(&f->dev, &c, 10, out, 3, 9090, blen ? bounce : NULL, blen, &done), 0);
	assert_int_equal(done, 9090);
	gather(f, &c, 0, 4, want);
	assert_int_equal(pread(out, got, sizeof(got), 3), 9090);
	assert_memory_equal(got, want + 10, 9090);
	assert_true(f->h.reads > 0);
	vio_chain_free(&c);
	close(fd);
	close(out);
}

static void test_buffer_path(void **state)
{
	(void)state;
	/* No fd ops: posted writes or blocking ones, the caller's small buffer or the library's. */
	check_buffered(&vio_fake_host_posting, SHM_LO, true, 100);
	assert_false(vio_dev_fd_direct(&F.dev));
	check_buffered(&vio_fake_host_posting, SHM_LO, false, 0);
	/* fd ops, but the range is not shared: they say -EOPNOTSUPP. */
	check_buffered(&vio_fake_host_fd, OUTSIDE, true, 0);
	assert_true(F.h.fd_calls > 0);
	check_buffered(&vio_fake_host_fd, OUTSIDE, false, 100);
}

/* Runs inside and outside shared memory in one chain: each takes its path, the data is right. */
static void test_mixed(void **state)
{
	struct fake *f = setup(&vio_fake_host_fd, false);
	static const uint64_t b[][2] = {{SHM_LO, 16},
					{SHM_LO + 0x1000, 1000},
					{OUTSIDE, 2000},
					{OUTSIDE + 0x3000, 300},
					{SHM_LO + 0x4000, 4000},
					{SHM_HI - 100, 100}};
	static uint8_t bounce[1500];
	struct vio_chain c;
	uint8_t got[8192];
	int fd = tmp_file(10000, 4);
	size_t done = 0;

	(void)state;
	make_chain(&c, b, 6, 1);
	assert_int_equal(
	    vio_chain_pread(&f->dev, &c, 0, fd, 0, 7400, bounce, sizeof(bounce), &done), 0);
	assert_int_equal(done, 7400);
	gather(f, &c, 1, 5, got);
	for (size_t i = 0; i < 7400; i++)
		assert_int_equal(got[i], pat(i, 4));
	/* Direct: the first run, then (after the buffer took 1500 + 800 + 300 - ...) the rest. */
	assert_true(f->dev.stat_fd_direct >= 2);
	assert_int_equal(f->dev.stat_fd_direct_bytes + f->dev.stat_fd_bounce_bytes, 7400);
	assert_true(f->dev.stat_fd_bounce_bytes >= 2300);
	vio_chain_free(&c);
	close(fd);
}

/*
 * A write posted to the chain is still in flight: a direct pread into the
 * same bytes would land before it and be overwritten. The library takes
 * the buffer path (posted, behind it) until the posted writes completed.
 */
static void test_no_direct_while_posted(void **state)
{
	struct fake *f = setup(&vio_fake_host_fd, true);
	struct vio_chain c;
	uint8_t fill[4096];
	int fd = tmp_file(8192, 5);
	size_t done = 0;

	(void)state;
	make_chain(&c, shm_bufs, 4, 1);
	memset(fill, 0xaa, sizeof(fill));
	assert_int_equal(vio_chain_post(&f->dev, &c, 0, fill, sizeof(fill)), 0);
	assert_non_null(f->dev.post_head);
	assert_int_equal(vio_chain_pread(&f->dev, &c, 0, fd, 0, 4096, NULL, 0, &done), 0);
	assert_int_equal(done, 4096);
	assert_int_equal(f->h.fd_calls, 0);
	vio_fake_drain(&f->h);
	assert_null(f->dev.post_head);
	for (size_t i = 0; i < 4096; i++)
		assert_int_equal(f->h.mem[SHM_LO + 0x1000 + i], pat(i, 5));
	/* A write to the file reads guest memory the posted writes changed: also behind them. */
	assert_int_equal(vio_chain_post(&f->dev, &c, 0, fill, sizeof(fill)), 0);
	{
		int out = tmp_file(0, 0);
		uint8_t got[4096];

		vio_chain_free(&c);
		make_chain(&c, shm_bufs, 4, 4);
		assert_int_equal(vio_chain_pwrite(&f->dev, &c, 16, out, 0, 4096, NULL, 0, &done),
				 0);
		assert_int_equal(f->h.fd_calls, 0);
		assert_int_equal(pread(out, got, sizeof(got), 0), 4096);
		assert_memory_equal(got, fill, sizeof(got));
		close(out);
	}
	vio_fake_drain(&f->h);
	/* Nothing in flight: direct again (one run). */
	assert_int_equal(vio_chain_pwrite(&f->dev, &c, 16, fd, 0, 4096, NULL, 0, &done), 0);
	assert_int_equal(done, 4096);
	assert_int_equal(f->h.fd_calls, 1);
	vio_chain_free(&c);
	close(fd);
}

static void test_short_file(void **state)
{
	struct fake *f = setup(&vio_fake_host_fd, false);
	struct vio_chain c;
	int fd = tmp_file(3500, 6);
	size_t done = 99;

	(void)state;
	make_chain(&c, shm_bufs, 4, 1);
	memset(f->h.mem + SHM_LO, 0x55, 0x10000);
	/* Direct: the file ends inside the second run. */
	assert_int_equal(vio_chain_pread(&f->dev, &c, 0, fd, 0, 9096, NULL, 0, &done), 0);
	assert_int_equal(done, 3500);
	for (size_t i = 0; i < 3500; i++)
		assert_int_equal(f->h.mem[SHM_LO + 0x1000 + i], pat(i, 6));
	assert_int_equal(f->h.mem[SHM_LO + 0x1000 + 3500], 0x55);
	assert_int_equal(f->h.mem[SHM_LO + 0x8000], 0x55);
	/* At the end: nothing. */
	assert_int_equal(vio_chain_pread(&f->dev, &c, 0, fd, 3500, 100, NULL, 0, &done), 0);
	assert_int_equal(done, 0);
	vio_chain_free(&c);
	/* Through the buffer: the same count. */
	f = setup(&vio_fake_host_posting, false);
	make_chain(&c, shm_bufs, 4, 1);
	memset(f->h.mem + SHM_LO, 0x55, 0x10000);
	assert_int_equal(vio_chain_pread(&f->dev, &c, 0, fd, 1000, 9096, NULL, 0, &done), 0);
	assert_int_equal(done, 2500);
	assert_int_equal(f->h.mem[SHM_LO + 0x1000], pat(1000, 6));
	assert_int_equal(f->h.mem[SHM_LO + 0x1000 + 2500], 0x55);
	vio_chain_free(&c);
	close(fd);
}

static void test_errors(void **state)
{
	struct fake *f = setup(&vio_fake_host_fd, false);
	static const uint64_t bad[][2] = {{SHM_LO, 16}, {MEM_SIZE - 100, 200}, {SHM_LO + 0x100, 1}};
	struct vio_chain c;
	int fd = tmp_file(4096, 7), ro;
	char path[64];
	size_t done = 99;

	(void)state;
	make_chain(&c, shm_bufs, 4, 1);
	/* The file's errors, direct and buffered. */
	assert_int_equal(vio_chain_pread(&f->dev, &c, 0, -1, 0, 100, NULL, 0, &done), -EBADF);
	assert_int_equal(done, 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ro = open(path, O_RDONLY);
	assert_true(ro >= 0);
	vio_chain_free(&c);
	make_chain(&c, shm_bufs, 4, 4);
	assert_int_equal(vio_chain_pwrite(&f->dev, &c, 16, ro, 0, 100, NULL, 0, &done), -EBADF);
	f = setup(&vio_fake_host_posting, false);
	assert_int_equal(vio_chain_pwrite(&f->dev, &c, 16, ro, 0, 100, NULL, 0, &done), -EBADF);
	vio_chain_free(&c);
	/* A buffer outside guest memory: reading it fails with the DMA error ... */
	make_chain(&c, bad, 3, 2);
	assert_int_equal(vio_chain_pwrite(&f->dev, &c, 16, fd, 0, 200, NULL, 0, &done), -EFAULT);
	assert_int_equal(done, 0);
	vio_chain_free(&c);
	/* ... writing it fails the chain (as vio_chain_post), the call itself does not. */
	make_chain(&c, bad, 3, 1);
	assert_int_equal(vio_chain_pread(&f->dev, &c, 0, fd, 0, 200, NULL, 0, &done), 0);
	assert_int_equal(done, 200);
	assert_int_equal(c.post_err, -EFAULT);
	vio_chain_free(&c);
	close(ro);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pread_direct),
	    cmocka_unit_test(test_pwrite_direct),
	    cmocka_unit_test(test_buffer_path),
	    cmocka_unit_test(test_mixed),
	    cmocka_unit_test(test_no_direct_while_posted),
	    cmocka_unit_test(test_short_file),
	    cmocka_unit_test(test_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
