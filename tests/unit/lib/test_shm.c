/* Unit tests of libcoreio's shared-memory DMA (COREIO_CAP_SHM) against a fake VM passing memfds. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
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

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

struct cpl_rec {
	int called, err;
};

static void cpl_fn(void *p, int err)
{
	struct cpl_rec *r = p;

	r->called++;
	r->err = err;
}

/*
 * A non-blocking DMA read of len bytes at addr must go through the socket:
 * the fake VM gets an LREAD piece and answers it with bytes 0xc3 ^ i.
 */
static void expect_socket(struct fakevm *v, unsigned mid, uint64_t addr, uint32_t len)
{
	struct cpl_rec rec = {0};
	uint8_t buf[256], f[512];
	unsigned extra = coreio__wire_extra_for(len);

	assert_true(len <= sizeof(buf));
	assert_int_equal(coreio_ctx_dma_read(v->ctx, mid, 0, addr, len, buf, 0, cpl_fn, &rec), 0);
	assert_int_equal(fakevm_recv(v->c[1], f, sizeof(f), 2000), 64);
	assert_int_equal(f[8], COREIO_OP_LREAD);
	assert_int_equal(f[0], mid);
	assert_true(coreio__wire_get64(f + 16) == addr);
	assert_int_equal(coreio__wire_get64(f + 8) >> 32, len);
	coreio__wire_put64(f, coreio__wire_get64(f) | ((uint64_t)extra << 8));
	for (uint32_t i = 0; i < len; i++)
		f[24 + i] = (uint8_t)(0xc3 ^ i);
	fakevm_send_fds(v->c[1], f, ((size_t)extra + 1) * 64, NULL, 0);
	for (int i = 0; i < 50 && !rec.called; i++)
		assert_int_equal(fakevm_pump(v), 0);
	assert_int_equal(rec.called, 1);
	assert_int_equal(rec.err, 0);
	for (uint32_t i = 0; i < len; i++)
		assert_int_equal(buf[i], (uint8_t)(0xc3 ^ i));
}

/* A DMA at addr (inside the map) is a memcpy: the data is at host, the VM sees nothing. */
static void expect_memcpy(struct fakevm *v, uint64_t addr, size_t len, const uint8_t *host)
{
	struct cpl_rec rec = {0};
	uint8_t *buf = malloc(len), f[64];

	assert_non_null(buf);
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(i * 13 + len);
	assert_int_equal(coreio_ctx_dma_write(v->ctx, 0, 0, addr, len, buf, 0, NULL, NULL), 0);
	assert_memory_equal(host, buf, len);
	memset(buf, 0, len);
	/* Non-blocking: copied now, completed from processfds. */
	assert_int_equal(coreio_ctx_dma_read(v->ctx, 0, 3, addr, len, buf, 0, cpl_fn, &rec), 0);
	assert_int_equal(rec.called, 0);
	assert_int_equal(fakevm_pump(v), 0);
	assert_int_equal(rec.called, 1);
	assert_int_equal(rec.err, 0);
	assert_memory_equal(host, buf, len);
	assert_int_equal(fakevm_recv(v->c[1], f, sizeof(f), 20), 0);
	free(buf);
}

/* ---- Tests ---- */

static void test_wire_fdq(void **state)
{
	struct coreio_wire_rx rx;
	struct coreio_wire_fdq q;
	uint8_t f[64] = {0}, g[128] = {0};
	const uint8_t *fr;
	size_t len;
	int sv[2], fd = shmvm_memfd(4096, 0), out[2], before;

	(void)state;
	before = count_fds();
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	coreio__wire_rx_init(&rx);
	coreio__wire_fdq_init(&q);
	/* A plain frame, then a frame with a fd, then a two-unit frame with two fds. */
	fakevm_send_fds(sv[0], f, 64, NULL, 0);
	fakevm_send_fds(sv[0], f, 64, &fd, 1);
	coreio__wire_put64(g, 1u << 8);
	fakevm_send_fds(sv[0], g, 128, (int[]){fd, fd}, 2);
	while (q.total < 256)
		assert_true(coreio__wire_rx_fill_fds(&rx, sv[1], &q) > 0);
	assert_int_equal(q.n, 3);
	assert_int_equal(coreio__wire_rx_next(&rx, &fr, &len), 1);
	assert_true(coreio__wire_rx_frame_pos(&rx, &q, fr) == 0);
	assert_int_equal(coreio__wire_fdq_take(&q, 0, len, out, 1), 0);
	assert_int_equal(coreio__wire_rx_next(&rx, &fr, &len), 1);
	assert_true(coreio__wire_rx_frame_pos(&rx, &q, fr) == 64);
	assert_int_equal(coreio__wire_fdq_take(&q, 64, len, out, 1), 1);
	close(out[0]);
	assert_int_equal(coreio__wire_rx_next(&rx, &fr, &len), 1);
	assert_int_equal(len, 128);
	/* Two fds bound to a frame that wants one: the extra one is closed. */
	assert_int_equal(coreio__wire_fdq_take(&q, 128, len, out, 1), 2);
	close(out[0]);
	assert_int_equal(q.n, 0);
	/* fds nobody takes are closed by later takes and by clear. */
	fakevm_send_fds(sv[0], f, 64, &fd, 1);
	fakevm_send_fds(sv[0], f, 64, &fd, 1);
	while (q.total < 384)
		assert_true(coreio__wire_rx_fill_fds(&rx, sv[1], &q) > 0);
	assert_int_equal(coreio__wire_fdq_take(&q, 320, 64, out, 1), 1);
	close(out[0]);
	fakevm_send_fds(sv[0], f, 64, &fd, 1);
	assert_true(coreio__wire_rx_fill_fds(&rx, sv[1], &q) > 0);
	assert_int_equal(q.n, 1);
	coreio__wire_fdq_clear(&q);
	close(sv[0]);
	close(sv[1]);
	assert_int_equal(count_fds(), before);
	close(fd);
}

static void test_dma_by_memcpy(void **state)
{
	int fd = shmvm_memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK | F_SEAL_GROW);
	struct shmvm_map m = shmvm_ram_map(fd, 1);
	uint8_t *file = shmvm_mmap(fd, RAM_OFF + RAM_SIZE), *mem = file + RAM_OFF;
	struct fakevm v;

	(void)state;
	shmvm_connect(&v, "shm-ut", COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
	assert_int_equal(coreio_ctx_caps(v.ctx), (int)COREIO_CAP_ALL);
	/* Odd sizes and addresses, up to the whole region. */
	expect_memcpy(&v, RAM_GPA, 1, mem);
	expect_memcpy(&v, RAM_GPA + 3, 31, mem + 3);
	expect_memcpy(&v, RAM_GPA + 0x1001, 70001, mem + 0x1001);
	expect_memcpy(&v, RAM_GPA + RAM_SIZE - 5, 5, mem + RAM_SIZE - 5);
	expect_memcpy(&v, RAM_GPA, RAM_SIZE, mem);
	/* Outside the region, across its end, and mid != 0: the socket. */
	expect_socket(&v, 0, RAM_GPA - 16, 16);
	expect_socket(&v, 0, RAM_GPA + RAM_SIZE - 8, 16);
	expect_socket(&v, 0, 0xfffffffffffffff0ull, 16);
	expect_socket(&v, 1, RAM_GPA, 16);
	fakevm_close(&v);
	munmap(file, RAM_OFF + RAM_SIZE);
	close(fd);
}

static void test_two_regions_and_new_generation(void **state)
{
	int a = shmvm_memfd(2 * RAM_SIZE, F_SEAL_SHRINK), b = shmvm_memfd(RAM_SIZE, F_SEAL_SHRINK);
	uint8_t *ma = shmvm_mmap(a, 2 * RAM_SIZE), *mb = shmvm_mmap(b, RAM_SIZE);
	struct shmvm_map m = shmvm_two_region_map(a);
	struct fakevm v;

	(void)state;
	/* Two regions contiguous in guest-physical space, apart in the file. */
	shmvm_connect(&v, "shm-ut", COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
	expect_memcpy(&v, RAM_GPA + 10, 100, ma + RAM_SIZE + 10);
	expect_memcpy(&v, RAM_GPA + RAM_SIZE + 10, 100, ma + 10);
	/* A transfer crossing from one region into the other is not one memcpy. */
	expect_socket(&v, 0, RAM_GPA + RAM_SIZE - 8, 16);
	/* A new generation in another file replaces the map. */
	m = shmvm_ram_map(b, 8);
	m.off[0] = 0;
	shmvm_send_map(v.c[1], &m);
	assert_int_equal(fakevm_pump(&v), 0);
	expect_memcpy(&v, RAM_GPA + 10, 100, mb + 10);
	expect_socket(&v, 0, RAM_GPA + RAM_SIZE + 10, 16);
	/* An empty map: everything goes through the socket. */
	m.n = 0;
	m.gen = 9;
	shmvm_send_map(v.c[1], &m);
	assert_int_equal(fakevm_pump(&v), 0);
	expect_socket(&v, 0, RAM_GPA + 10, 16);
	fakevm_close(&v);
	munmap(ma, 2 * RAM_SIZE);
	munmap(mb, RAM_SIZE);
	close(a);
	close(b);
}

static void test_not_granted_or_not_offered(void **state)
{
	int fd = shmvm_memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK);
	struct shmvm_map m = shmvm_ram_map(fd, 1);
	struct fakevm v;

	(void)state;
	/* A map sent although the VM does not grant SHM is dropped. */
	shmvm_connect(&v, "shm-ut", COREIO_CAP_ALL, COREIO_CAP_LARGE_DMA, &m);
	assert_int_equal(coreio_ctx_caps(v.ctx), COREIO_CAP_LARGE_DMA_BIT);
	expect_socket(&v, 0, RAM_GPA + 16, 16);
	fakevm_close(&v);
	/* Not offered: a VM that grants it anyway and sends a map is ignored. */
	shmvm_connect(&v, "shm-ut", COREIO_CAP_LARGE_DMA, COREIO_CAP_ALL, &m);
	assert_int_equal(coreio_ctx_caps(v.ctx), COREIO_CAP_LARGE_DMA_BIT);
	expect_socket(&v, 0, RAM_GPA + 16, 16);
	/* A map arriving later on a connection that did not negotiate SHM: ignored. */
	shmvm_send_map(v.c[1], &m);
	assert_int_equal(fakevm_pump(&v), 0);
	expect_socket(&v, 0, RAM_GPA + 16, 16);
	fakevm_close(&v);
	close(fd);
}

/* A hostile map (sent as generation 2 after a good one): DMA falls back to the socket. */
enum bad {
	BAD_NO_FD,
	BAD_UNSEALED,
	BAD_PIPE,
	BAD_NO_WRITE,
	BAD_SIZE0,
	BAD_GPA_WRAP,
	BAD_OFF_WRAP,
	BAD_PAST_EOF,
	BAD_TOO_MANY,
	BAD_ORDER,
	BAD_GEN,
	BAD_TWO_FDS,
	BAD_EMPTY_WITH_FD,
	BAD_OVERLAP,
	BAD_FD_ON_PING,
	BAD_COUNT,
};

/* What the library logged (coreio_ctx_set_log()). */
struct logged {
	int n, level;
	char last[512];
};

static void capture_log(void *opaque, int level, const char *msg)
{
	struct logged *l = opaque;

	l->n++;
	l->level = level;
	snprintf(l->last, sizeof(l->last), "%s", msg);
}

static void hostile(enum bad how)
{
	struct logged lg = {0};
	int good = shmvm_memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK);
	int unsealed = shmvm_memfd(RAM_OFF + RAM_SIZE, 0);
	int nowrite = shmvm_memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE);
	int pipefd[2], s, two[2];
	struct shmvm_map m = shmvm_ram_map(good, 1);
	uint8_t *mem = shmvm_mmap(good, RAM_OFF + RAM_SIZE) + RAM_OFF;
	struct fakevm v;
	uint8_t f[64];

	assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
	shmvm_connect(&v, "shm-ut", COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
	assert_int_equal(coreio_ctx_set_log(v.ctx, capture_log, &lg), 0);
	expect_memcpy(&v, RAM_GPA + 1, 10, mem + 1);
	s = v.c[1];
	two[0] = two[1] = good;
	switch (how) {
	case BAD_NO_FD:
		shmvm_send_region(s, RAM_GPA, RAM_SIZE, RAM_OFF, 0, 2, 1, NULL, 0);
		break;
	case BAD_UNSEALED:
		shmvm_send_region(s, RAM_GPA, RAM_SIZE, RAM_OFF, 0, 2, 1, &unsealed, 1);
		break;
	case BAD_PIPE:
		shmvm_send_region(s, RAM_GPA, RAM_SIZE, 0, 0, 2, 1, &pipefd[0], 1);
		break;
	case BAD_NO_WRITE:
		shmvm_send_region(s, RAM_GPA, RAM_SIZE, RAM_OFF, 0, 2, 1, &nowrite, 1);
		break;
	case BAD_SIZE0:
		shmvm_send_region(s, RAM_GPA, 0, RAM_OFF, 0, 2, 1, &good, 1);
		break;
	case BAD_GPA_WRAP:
		shmvm_send_region(s, 0xfffffffffffff000ull, 0x2000, 0, 0, 2, 1, &good, 1);
		break;
	case BAD_OFF_WRAP:
		shmvm_send_region(s, RAM_GPA, 0x2000, 0xfffffffffffff000ull, 0, 2, 1, &good, 1);
		break;
	case BAD_PAST_EOF:
		shmvm_send_region(s, RAM_GPA, RAM_SIZE, RAM_OFF + 4096, 0, 2, 1, &good, 1);
		break;
	case BAD_TOO_MANY:
		shmvm_send_region(s, RAM_GPA, 4096, 0, 0, 2, 17, &good, 1);
		break;
	case BAD_ORDER:
		shmvm_send_region(s, RAM_GPA, 4096, 0, 0, 2, 3, &good, 1);
		shmvm_send_region(s, RAM_GPA + 0x2000, 4096, 0, 2, 2, 3, &good, 1);
		shmvm_send_region(s, RAM_GPA + 0x1000, 4096, 0, 1, 2, 3, &good, 1);
		break;
	case BAD_GEN:
		shmvm_send_region(s, RAM_GPA, 4096, 0, 0, 2, 2, &good, 1);
		shmvm_send_region(s, RAM_GPA + 0x1000, 4096, 0, 1, 3, 2, &good, 1);
		break;
	case BAD_TWO_FDS:
		shmvm_send_region(s, RAM_GPA, RAM_SIZE, RAM_OFF, 0, 2, 1, two, 2);
		break;
	case BAD_EMPTY_WITH_FD:
		shmvm_send_region(s, 0, 0, 0, 0, 2, 0, &good, 1);
		break;
	case BAD_OVERLAP:
		shmvm_send_region(s, RAM_GPA, 0x2000, 0, 0, 2, 2, &good, 1);
		shmvm_send_region(s, RAM_GPA + 0x1000, 0x2000, 0, 1, 2, 2, &good, 1);
		break;
	case BAD_FD_ON_PING:
		/* A fd with a frame that carries none, then a map that lacks its fd. */
		memset(f, 0, sizeof(f));
		f[8] = COREIO_OP_PING;
		fakevm_send_fds(s, f, 64, &good, 1);
		shmvm_send_region(s, RAM_GPA, RAM_SIZE, RAM_OFF, 0, 2, 1, NULL, 0);
		break;
	case BAD_COUNT:
		/* The first region announces 2, the second says 3. */
		shmvm_send_region(s, RAM_GPA, 4096, 0, 0, 2, 2, &good, 1);
		shmvm_send_region(s, RAM_GPA + 0x1000, 4096, 0, 1, 2, 3, &good, 1);
		break;
	}
	for (int i = 0; i < 3; i++)
		assert_int_equal(fakevm_pump(&v), 0);
	if (how == BAD_FD_ON_PING) {
		/* The PING was echoed. */
		assert_int_equal(fakevm_recv(s, f, sizeof(f), 1000), 64);
		assert_int_equal(f[8], COREIO_OP_PING);
	}
	/* Still connected; the old map was dropped with the new generation,
	 * and the log callback (not stderr) was told why, once. */
	expect_socket(&v, 0, RAM_GPA + 16, 16);
	assert_int_equal(lg.n, 1);
	assert_int_equal(lg.level, COREIO_LOG_WARNING);
	assert_non_null(strstr(lg.last, "shared-memory DMA off"));
	/* A good generation afterwards works again. */
	m.gen = 4;
	shmvm_send_map(s, &m);
	assert_int_equal(fakevm_pump(&v), 0);
	expect_memcpy(&v, RAM_GPA + 100, 100, mem + 100);
	fakevm_close(&v);
	munmap(mem - RAM_OFF, RAM_OFF + RAM_SIZE);
	close(good);
	close(unsealed);
	close(nowrite);
	close(pipefd[0]);
	close(pipefd[1]);
}

static void test_hostile_maps(void **state)
{
	int before = count_fds();

	(void)state;
	for (int how = BAD_NO_FD; how <= BAD_COUNT; how++)
		hostile((enum bad)how);
	assert_int_equal(count_fds(), before);
}

static void test_hostile_before_answer(void **state)
{
	int fd = shmvm_memfd(RAM_SIZE, 0), before = count_fds();
	struct shmvm_map m = shmvm_ram_map(fd, 1);
	struct fakevm v;

	(void)state;
	/* An unsealed map in the hello: connected, SHM negotiated, DMA by socket. */
	m.off[0] = 0;
	shmvm_connect(&v, "shm-ut", COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
	assert_int_equal(coreio_ctx_caps(v.ctx), (int)COREIO_CAP_ALL);
	expect_socket(&v, 0, RAM_GPA + 16, 16);
	fakevm_close(&v);
	assert_int_equal(count_fds(), before);
	close(fd);
}

static void test_no_fd_leaks(void **state)
{
	int fd = shmvm_memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK), before;
	struct shmvm_map m = shmvm_ram_map(fd, 1);

	(void)state;
	before = count_fds();
	for (int i = 0; i < 20; i++) {
		struct fakevm v;
		uint8_t *mem = shmvm_mmap(fd, RAM_OFF + RAM_SIZE) + RAM_OFF;

		shmvm_connect(&v, "shm-ut", COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
		expect_memcpy(&v, RAM_GPA + 7, 1000, mem + 7);
		/* Generations replace each other; some arrive while a copy is in flight. */
		m.gen++;
		shmvm_send_map(v.c[1], &m);
		shmvm_send_map(v.c[1], &m);
		assert_int_equal(fakevm_pump(&v), 0);
		expect_memcpy(&v, RAM_GPA + 9, 1000, mem + 9);
		if (i & 1) {
			/* Connection loss instead of a disconnect. */
			close(v.c[1]);
			v.c[1] = -1;
			assert_int_equal(fakevm_pump(&v), -ECONNRESET);
		}
		fakevm_close(&v);
		munmap(mem - RAM_OFF, RAM_OFF + RAM_SIZE);
	}
	assert_int_equal(count_fds(), before);
	close(fd);
}

/* Copies from two threads while the loop thread replaces the map again and again. */
struct copier {
	coreio_ctx_t *ctx;
	unsigned id;
	int fails;
	uint8_t buf[65536];
};

static void *copier_thread(void *p)
{
	struct copier *c = p;
	/* Each thread its own piece of guest memory: copies of two threads to the
	 * same bytes would race in the guest's memory, whatever the library does. */
	uint64_t addr = RAM_GPA + 64 + c->id * 0x20000;

	for (int i = 0; i < 2000; i++)
		if (coreio_ctx_dma_write(c->ctx, 0, 0, addr, sizeof(c->buf), c->buf, 0, NULL,
					 NULL) != 0)
			c->fails++;
	return NULL;
}

static void test_map_replaced_under_copies(void **state)
{
	int fd = shmvm_memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK);
	struct shmvm_map m = shmvm_ram_map(fd, 1);
	static struct copier cp[2];
	pthread_t th[2];
	struct fakevm v;
	bool joined[2] = {false, false};

	(void)state;
	shmvm_connect(&v, "shm-ut", COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
	for (int i = 0; i < 2; i++) {
		cp[i].ctx = v.ctx;
		cp[i].id = (unsigned)i;
		cp[i].fails = 0;
		assert_int_equal(pthread_create(&th[i], NULL, copier_thread, &cp[i]), 0);
	}
	/* Whatever map a copy sees, it never touches unmapped memory. Copies
	 * that find no map go to the socket: the fake VM answers them. */
	for (int round = 0; !joined[0] || !joined[1]; round++) {
		uint8_t f[COREIO_WIRE_MAX_MSG];
		size_t n;

		if (round < 200) {
			m.gen++;
			shmvm_send_map(v.c[1], &m);
		}
		assert_int_equal(coreio_ctx_mainloop(v.ctx, 1000), 0);
		while ((n = fakevm_recv(v.c[1], f, sizeof(f), 0)) > 0) {
			coreio__wire_put64(f, coreio__wire_get64(f) & ~(0xffull << 8));
			fakevm_send_fds(v.c[1], f, 64, NULL, 0);
		}
		for (int i = 0; i < 2; i++)
			if (!joined[i] && round >= 200)
				joined[i] = pthread_tryjoin_np(th[i], NULL) == 0;
	}
	assert_int_equal(cp[0].fails + cp[1].fails, 0);
	fakevm_close(&v);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_wire_fdq),
	    cmocka_unit_test(test_dma_by_memcpy),
	    cmocka_unit_test(test_two_regions_and_new_generation),
	    cmocka_unit_test(test_not_granted_or_not_offered),
	    cmocka_unit_test(test_hostile_maps),
	    cmocka_unit_test(test_hostile_before_answer),
	    cmocka_unit_test(test_no_fd_leaks),
	    cmocka_unit_test(test_map_replaced_under_copies),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
