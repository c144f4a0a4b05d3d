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
#include "wire.h"

#define RAM_GPA	 0x100000ull
#define RAM_SIZE (1u << 20)
#define RAM_OFF	 0x3000u /* the region starts this far into its file */

/* ---- The fake VM ---- */

struct fvm {
	char path[108];
	int lfd;
	int c[2]; /* VM side of the control and DMA connections */
	coreio_ctx_t *ctx;
};

/* A map the fake VM sends before its hello answer. */
struct map {
	unsigned n;
	uint64_t gpa[4], size[4], off[4];
	int fd[4];
	uint64_t gen;
};

static int counter;

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

/* A memfd of size bytes, sealed against shrinking unless told otherwise. */
static int memfd(size_t size, unsigned seals)
{
	int fd = memfd_create("shm-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	if (seals)
		assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
	return fd;
}

/* Send len bytes with nfds fds attached in one sendmsg(). */
static void send_with_fds(int s, const uint8_t *buf, size_t len, const int *fds, unsigned nfds)
{
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(sizeof(int) * 4)];
	} ctl;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

	memset(&ctl, 0, sizeof(ctl));
	if (nfds) {
		struct cmsghdr *cm;

		mh.msg_control = ctl.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	assert_int_equal(sendmsg(s, &mh, MSG_NOSIGNAL), (ssize_t)len);
}

/* One SHM_MAP frame: region idx of count in generation gen, with nfds fds. */
static void send_region(int s, uint64_t gpa, uint64_t size, uint64_t off, uint64_t idx,
			uint64_t gen, uint64_t count, const int *fds, unsigned nfds)
{
	struct coreio_wire_hdr h = {.op = COREIO_OP_SHM_MAP, .addr = gpa};
	uint8_t f[64];

	coreio__wire_encode(f, &h);
	coreio__wire_put64(f + 24, size);
	coreio__wire_put64(f + 32, off);
	coreio__wire_put64(f + 40, idx);
	coreio__wire_put64(f + 48, gen);
	coreio__wire_put64(f + 56, count);
	send_with_fds(s, f, sizeof(f), fds, nfds);
}

static void send_map(int s, const struct map *m)
{
	if (m->n == 0) {
		send_region(s, 0, 0, 0, 0, m->gen, 0, NULL, 0);
		return;
	}
	for (unsigned i = 0; i < m->n; i++)
		send_region(s, m->gpa[i], m->size[i], m->off[i], i, m->gen, m->n, &m->fd[i], 1);
}

/*
 * Connect a new context offering offer; the VM answers vm_caps and, when m
 * is given, sends m on both connections before the answer (as coreio-vm).
 */
static void fvm_connect(struct fvm *v, unsigned offer, unsigned vm_caps, const struct map *m)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	char target[128];
	struct fakevm_connect a;
	pthread_t th;

	memset(v, 0, sizeof(*v));
	snprintf(v->path, sizeof(v->path), "/tmp/coreio-shm-ut-%d-%d.sock", (int)getpid(),
		 counter++);
	unlink(v->path);
	v->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(v->lfd >= 0);
	strcpy(sun.sun_path, v->path);
	assert_int_equal(bind(v->lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(v->lfd, 8), 0);
	assert_int_equal(coreio_ctx_new(&v->ctx), 0);
	assert_int_equal(coreio_ctx_set_offer(v->ctx, offer), 0);
	snprintf(target, sizeof(target), "unix:%s", v->path);
	a = (struct fakevm_connect){v->ctx, target, -1};
	assert_int_equal(pthread_create(&th, NULL, fakevm_connect_thread, &a), 0);
	for (int i = 0; i < 2; i++) {
		v->c[i] = accept4(v->lfd, NULL, NULL, SOCK_CLOEXEC);
		assert_true(v->c[i] >= 0);
	}
	for (int i = 0; i < 2; i++) {
		uint8_t f[64];

		assert_int_equal(fakevm_recv(v->c[i], f, sizeof(f), 3000), 64);
		assert_int_equal(f[8], COREIO_OP_PING);
		assert_int_equal(coreio__wire_get64(f + 32), offer);
		if (m)
			send_map(v->c[i], m);
		coreio__wire_put64(f + 24, COREIO_HELLO_ANSWER);
		coreio__wire_put64(f + 32, vm_caps);
		send_with_fds(v->c[i], f, 64, NULL, 0);
	}
	pthread_join(th, NULL);
	assert_int_equal(a.rc, 0);
}

static void fvm_close(struct fvm *v)
{
	coreio_ctx_free(v->ctx);
	for (int i = 0; i < 2; i++)
		if (v->c[i] >= 0)
			close(v->c[i]);
	close(v->lfd);
	unlink(v->path);
}

static int pump(struct fvm *v)
{
	return coreio_ctx_mainloop(v->ctx, 20000);
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

/* The standard map: RAM_SIZE bytes at RAM_GPA, RAM_OFF into a sealed memfd. */
static struct map ram_map(int fd, uint64_t gen)
{
	struct map m = {.n = 1, .gen = gen};

	m.gpa[0] = RAM_GPA;
	m.size[0] = RAM_SIZE;
	m.off[0] = RAM_OFF;
	m.fd[0] = fd;
	return m;
}

static uint8_t *map_file(int fd, size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	assert_true(p != MAP_FAILED);
	return p;
}

/*
 * A non-blocking DMA read of len bytes at addr must go through the socket:
 * the fake VM gets an LREAD piece and answers it with bytes 0xc3 ^ i.
 */
static void expect_socket(struct fvm *v, unsigned mid, uint64_t addr, uint32_t len)
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
	send_with_fds(v->c[1], f, ((size_t)extra + 1) * 64, NULL, 0);
	for (int i = 0; i < 50 && !rec.called; i++)
		assert_int_equal(pump(v), 0);
	assert_int_equal(rec.called, 1);
	assert_int_equal(rec.err, 0);
	for (uint32_t i = 0; i < len; i++)
		assert_int_equal(buf[i], (uint8_t)(0xc3 ^ i));
}

/* A DMA at addr (inside the map) is a memcpy: the data is at host, the VM sees nothing. */
static void expect_memcpy(struct fvm *v, uint64_t addr, size_t len, const uint8_t *host)
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
	assert_int_equal(pump(v), 0);
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
	int sv[2], fd = memfd(4096, 0), out[2], before;

	(void)state;
	before = count_fds();
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	coreio__wire_rx_init(&rx);
	coreio__wire_fdq_init(&q);
	/* A plain frame, then a frame with a fd, then a two-unit frame with two fds. */
	send_with_fds(sv[0], f, 64, NULL, 0);
	send_with_fds(sv[0], f, 64, &fd, 1);
	coreio__wire_put64(g, 1u << 8);
	send_with_fds(sv[0], g, 128, (int[]){fd, fd}, 2);
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
	send_with_fds(sv[0], f, 64, &fd, 1);
	send_with_fds(sv[0], f, 64, &fd, 1);
	while (q.total < 384)
		assert_true(coreio__wire_rx_fill_fds(&rx, sv[1], &q) > 0);
	assert_int_equal(coreio__wire_fdq_take(&q, 320, 64, out, 1), 1);
	close(out[0]);
	send_with_fds(sv[0], f, 64, &fd, 1);
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
	int fd = memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK | F_SEAL_GROW);
	struct map m = ram_map(fd, 1);
	uint8_t *file = map_file(fd, RAM_OFF + RAM_SIZE), *mem = file + RAM_OFF;
	struct fvm v;

	(void)state;
	fvm_connect(&v, COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
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
	fvm_close(&v);
	munmap(file, RAM_OFF + RAM_SIZE);
	close(fd);
}

static void test_two_regions_and_new_generation(void **state)
{
	int a = memfd(2 * RAM_SIZE, F_SEAL_SHRINK), b = memfd(RAM_SIZE, F_SEAL_SHRINK);
	uint8_t *ma = map_file(a, 2 * RAM_SIZE), *mb = map_file(b, RAM_SIZE);
	struct map m = {.n = 2, .gen = 7};
	struct fvm v;

	(void)state;
	/* Two regions contiguous in guest-physical space, apart in the file. */
	m.gpa[0] = RAM_GPA;
	m.size[0] = RAM_SIZE;
	m.off[0] = RAM_SIZE;
	m.fd[0] = a;
	m.gpa[1] = RAM_GPA + RAM_SIZE;
	m.size[1] = RAM_SIZE;
	m.off[1] = 0;
	m.fd[1] = a;
	fvm_connect(&v, COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
	expect_memcpy(&v, RAM_GPA + 10, 100, ma + RAM_SIZE + 10);
	expect_memcpy(&v, RAM_GPA + RAM_SIZE + 10, 100, ma + 10);
	/* A transfer crossing from one region into the other is not one memcpy. */
	expect_socket(&v, 0, RAM_GPA + RAM_SIZE - 8, 16);
	/* A new generation in another file replaces the map. */
	m = ram_map(b, 8);
	m.off[0] = 0;
	send_map(v.c[1], &m);
	assert_int_equal(pump(&v), 0);
	expect_memcpy(&v, RAM_GPA + 10, 100, mb + 10);
	expect_socket(&v, 0, RAM_GPA + RAM_SIZE + 10, 16);
	/* An empty map: everything goes through the socket. */
	m.n = 0;
	m.gen = 9;
	send_map(v.c[1], &m);
	assert_int_equal(pump(&v), 0);
	expect_socket(&v, 0, RAM_GPA + 10, 16);
	fvm_close(&v);
	munmap(ma, 2 * RAM_SIZE);
	munmap(mb, RAM_SIZE);
	close(a);
	close(b);
}

static void test_not_granted_or_not_offered(void **state)
{
	int fd = memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK);
	struct map m = ram_map(fd, 1);
	struct fvm v;

	(void)state;
	/* A map sent although the VM does not grant SHM is dropped. */
	fvm_connect(&v, COREIO_CAP_ALL, COREIO_CAP_LARGE_DMA, &m);
	assert_int_equal(coreio_ctx_caps(v.ctx), COREIO_CAP_LARGE_DMA_BIT);
	expect_socket(&v, 0, RAM_GPA + 16, 16);
	fvm_close(&v);
	/* Not offered: a VM that grants it anyway and sends a map is ignored. */
	fvm_connect(&v, COREIO_CAP_LARGE_DMA, COREIO_CAP_ALL, &m);
	assert_int_equal(coreio_ctx_caps(v.ctx), COREIO_CAP_LARGE_DMA_BIT);
	expect_socket(&v, 0, RAM_GPA + 16, 16);
	/* A map arriving later on a connection that did not negotiate SHM: ignored. */
	send_map(v.c[1], &m);
	assert_int_equal(pump(&v), 0);
	expect_socket(&v, 0, RAM_GPA + 16, 16);
	fvm_close(&v);
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
	int good = memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK);
	int unsealed = memfd(RAM_OFF + RAM_SIZE, 0);
	int nowrite = memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE);
	int pipefd[2], s, two[2];
	struct map m = ram_map(good, 1);
	uint8_t *mem = map_file(good, RAM_OFF + RAM_SIZE) + RAM_OFF;
	struct fvm v;
	uint8_t f[64];

	assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
	fvm_connect(&v, COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
	assert_int_equal(coreio_ctx_set_log(v.ctx, capture_log, &lg), 0);
	expect_memcpy(&v, RAM_GPA + 1, 10, mem + 1);
	s = v.c[1];
	two[0] = two[1] = good;
	switch (how) {
	case BAD_NO_FD:
		send_region(s, RAM_GPA, RAM_SIZE, RAM_OFF, 0, 2, 1, NULL, 0);
		break;
	case BAD_UNSEALED:
		send_region(s, RAM_GPA, RAM_SIZE, RAM_OFF, 0, 2, 1, &unsealed, 1);
		break;
	case BAD_PIPE:
		send_region(s, RAM_GPA, RAM_SIZE, 0, 0, 2, 1, &pipefd[0], 1);
		break;
	case BAD_NO_WRITE:
		send_region(s, RAM_GPA, RAM_SIZE, RAM_OFF, 0, 2, 1, &nowrite, 1);
		break;
	case BAD_SIZE0:
		send_region(s, RAM_GPA, 0, RAM_OFF, 0, 2, 1, &good, 1);
		break;
	case BAD_GPA_WRAP:
		send_region(s, 0xfffffffffffff000ull, 0x2000, 0, 0, 2, 1, &good, 1);
		break;
	case BAD_OFF_WRAP:
		send_region(s, RAM_GPA, 0x2000, 0xfffffffffffff000ull, 0, 2, 1, &good, 1);
		break;
	case BAD_PAST_EOF:
		send_region(s, RAM_GPA, RAM_SIZE, RAM_OFF + 4096, 0, 2, 1, &good, 1);
		break;
	case BAD_TOO_MANY:
		send_region(s, RAM_GPA, 4096, 0, 0, 2, 17, &good, 1);
		break;
	case BAD_ORDER:
		send_region(s, RAM_GPA, 4096, 0, 0, 2, 3, &good, 1);
		send_region(s, RAM_GPA + 0x2000, 4096, 0, 2, 2, 3, &good, 1);
		send_region(s, RAM_GPA + 0x1000, 4096, 0, 1, 2, 3, &good, 1);
		break;
	case BAD_GEN:
		send_region(s, RAM_GPA, 4096, 0, 0, 2, 2, &good, 1);
		send_region(s, RAM_GPA + 0x1000, 4096, 0, 1, 3, 2, &good, 1);
		break;
	case BAD_TWO_FDS:
		send_region(s, RAM_GPA, RAM_SIZE, RAM_OFF, 0, 2, 1, two, 2);
		break;
	case BAD_EMPTY_WITH_FD:
		send_region(s, 0, 0, 0, 0, 2, 0, &good, 1);
		break;
	case BAD_OVERLAP:
		send_region(s, RAM_GPA, 0x2000, 0, 0, 2, 2, &good, 1);
		send_region(s, RAM_GPA + 0x1000, 0x2000, 0, 1, 2, 2, &good, 1);
		break;
	case BAD_FD_ON_PING:
		/* A fd with a frame that carries none, then a map that lacks its fd. */
		memset(f, 0, sizeof(f));
		f[8] = COREIO_OP_PING;
		send_with_fds(s, f, 64, &good, 1);
		send_region(s, RAM_GPA, RAM_SIZE, RAM_OFF, 0, 2, 1, NULL, 0);
		break;
	case BAD_COUNT:
		/* The first region announces 2, the second says 3. */
		send_region(s, RAM_GPA, 4096, 0, 0, 2, 2, &good, 1);
		send_region(s, RAM_GPA + 0x1000, 4096, 0, 1, 2, 3, &good, 1);
		break;
	}
	for (int i = 0; i < 3; i++)
		assert_int_equal(pump(&v), 0);
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
	send_map(s, &m);
	assert_int_equal(pump(&v), 0);
	expect_memcpy(&v, RAM_GPA + 100, 100, mem + 100);
	fvm_close(&v);
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
	int fd = memfd(RAM_SIZE, 0), before = count_fds();
	struct map m = ram_map(fd, 1);
	struct fvm v;

	(void)state;
	/* An unsealed map in the hello: connected, SHM negotiated, DMA by socket. */
	m.off[0] = 0;
	fvm_connect(&v, COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
	assert_int_equal(coreio_ctx_caps(v.ctx), (int)COREIO_CAP_ALL);
	expect_socket(&v, 0, RAM_GPA + 16, 16);
	fvm_close(&v);
	assert_int_equal(count_fds(), before);
	close(fd);
}

static void test_no_fd_leaks(void **state)
{
	int fd = memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK), before;
	struct map m = ram_map(fd, 1);

	(void)state;
	before = count_fds();
	for (int i = 0; i < 20; i++) {
		struct fvm v;
		uint8_t *mem = map_file(fd, RAM_OFF + RAM_SIZE) + RAM_OFF;

		fvm_connect(&v, COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
		expect_memcpy(&v, RAM_GPA + 7, 1000, mem + 7);
		/* Generations replace each other; some arrive while a copy is in flight. */
		m.gen++;
		send_map(v.c[1], &m);
		send_map(v.c[1], &m);
		assert_int_equal(pump(&v), 0);
		expect_memcpy(&v, RAM_GPA + 9, 1000, mem + 9);
		if (i & 1) {
			/* Connection loss instead of a disconnect. */
			close(v.c[1]);
			v.c[1] = -1;
			assert_int_equal(pump(&v), -ECONNRESET);
		}
		fvm_close(&v);
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
	int fd = memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK);
	struct map m = ram_map(fd, 1);
	static struct copier cp[2];
	pthread_t th[2];
	struct fvm v;
	bool joined[2] = {false, false};

	(void)state;
	fvm_connect(&v, COREIO_CAP_ALL, COREIO_CAP_ALL, &m);
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
			send_map(v.c[1], &m);
		}
		assert_int_equal(coreio_ctx_mainloop(v.ctx, 1000), 0);
		while ((n = fakevm_recv(v.c[1], f, sizeof(f), 0)) > 0) {
			coreio__wire_put64(f, coreio__wire_get64(f) & ~(0xffull << 8));
			send_with_fds(v.c[1], f, 64, NULL, 0);
		}
		for (int i = 0; i < 2; i++)
			if (!joined[i] && round >= 200)
				joined[i] = pthread_tryjoin_np(th[i], NULL) == 0;
	}
	assert_int_equal(cp[0].fails + cp[1].fails, 0);
	fvm_close(&v);
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
