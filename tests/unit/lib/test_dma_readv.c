/* Unit tests of coreio_ctx_dma_readv(): segment order on the wire, one wait for all, errors,
 * shared memory and COREIO_DMA_SERVE, against a fake VM that answers only after every piece. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "coreio.h"
#include "fakevm.h"
#include "shmvm.h"
#include "wire.h"

#define MEM_BASE  0x100000ull /* the fake VM answers reads in [MEM_BASE, MEM_END) */
#define MEM_END	  (MEM_BASE + (8ull << 20))
#define BAD_LO	  (MEM_BASE + 0x700000ull) /* reads touching [BAD_LO, BAD_HI) are refused */
#define OUT_ADDR  0x500000ull		   /* in the VM's memory, outside shmvm's map */
#define BAD_HI	  (BAD_LO + 0x1000ull)
#define MAX_P	  256u /* pieces one test sends at most */
#define MMIO_ADDR 0x3000ull

/* What the fake VM answers for the byte at a: a pattern nobody else uses. */
static uint8_t vm_byte(uint64_t a)
{
	return (uint8_t)(a * 7u + (a >> 8) + 3u);
}

/* What the shared mapping holds at guest address a (RAM_GPA ..). */
static uint8_t shm_byte(uint64_t a)
{
	return (uint8_t)(0xa5u ^ (a * 13u) ^ (a >> 9));
}

/* A library that never returns from a wait fails the test in 20 s, not at meson's timeout. */
static void watchdog(int sig)
{
	static const char msg[] = "test_dma_readv: watchdog: a test hung for 20 s\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(3);
	_exit(2);
}

/* ---- The fake VM's thread ---- */

struct vm {
	struct fakevm *v;
	bool large;	    /* LARGE_DMA negotiated: LREAD pieces */
	unsigned expect;    /* pieces to receive before answering any */
	int mmio;	    /* 0 none; 1: an MMIO read answered during the wait; 2: not answered */
	bool close_instead; /* close both connections instead of answering */
	uint64_t addr[MAX_P]; /* the pieces as they came */
	uint32_t len[MAX_P];
	unsigned np;
	atomic_int fail; /* the line of the first failed check, 0 if none */
	atomic_bool done;
	atomic_bool mmio_answered; /* the MMIO read's answer came (before the DMA answers) */
};

#define VM_CHECK(c)                                                                                \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			vm->fail = __LINE__;                                                       \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)

static bool send_all(int fd, const uint8_t *b, size_t len)
{
	while (len) {
		ssize_t k = send(fd, b, len, MSG_NOSIGNAL);

		if (k <= 0)
			return false;
		b += k;
		len -= (size_t)k;
	}
	return true;
}

/* The answer to request f (READ or LREAD) into ans; returns its length. */
static size_t answer_of(const struct vm *vm, const uint8_t *f, uint8_t *ans)
{
	uint64_t w0 = coreio__wire_get64(f) & ~(0xffull << 8);
	uint64_t addr = coreio__wire_get64(f + 16);
	uint32_t n = vm->large ? (uint32_t)(coreio__wire_get64(f + 8) >> 32) : f[10];
	unsigned e = vm->large ? coreio__wire_extra_for(n) : 0;

	memset(ans, 0, COREIO_WIRE_MAX_MSG);
	memcpy(ans, f, 24);
	if (addr < MEM_BASE || addr > MEM_END - n || (addr + n > BAD_LO && addr < BAD_HI)) {
		coreio__wire_put64(ans, w0 | (1ull << 30));
		return 64;
	}
	coreio__wire_put64(ans, w0 | (uint64_t)e << 8);
	for (uint32_t i = 0; i < n; i++)
		ans[24 + i] = vm_byte(addr + i);
	return ((size_t)e + 1) * 64;
}

static void *vm_main(void *p)
{
	struct vm *vm = p;
	static uint8_t req[MAX_P][64];
	static uint8_t ans[COREIO_WIRE_MAX_MSG];

	/* Every piece first: a library that waited for an answer before sending the next
	 * segment would leave this loop waiting in vain. */
	while (vm->np < vm->expect) {
		uint8_t *f = req[vm->np];
		uint64_t w1;

		VM_CHECK(vm->np < MAX_P);
		VM_CHECK(fakevm_recv(vm->v->c[1], f, 64, 3000) == 64);
		w1 = coreio__wire_get64(f + 8);
		VM_CHECK((coreio__wire_get64(f) >> 31) & 1); /* origin 1: the client's request */
		VM_CHECK((w1 & 0xff) == (vm->large ? COREIO_OP_LREAD : COREIO_OP_READ));
		vm->addr[vm->np] = coreio__wire_get64(f + 16);
		vm->len[vm->np] = vm->large ? (uint32_t)(w1 >> 32) : f[10];
		vm->np++;
	}
	/* Nothing more comes before we answer. */
	VM_CHECK(fakevm_recv(vm->v->c[1], ans, sizeof(ans), 100) == 0);
	if (vm->mmio) {
		struct coreio_wire_hdr h = {
		    .tag = 100, .op = COREIO_OP_READ, .size = 4, .addr = MMIO_ADDR};
		uint8_t f[64] = {0};

		coreio__wire_encode(f, &h);
		VM_CHECK(send_all(vm->v->c[0], f, 64));
		if (vm->mmio == 1) {
			/* COREIO_DMA_SERVE: the answer comes while the DMA waits. */
			VM_CHECK(fakevm_recv(vm->v->c[0], f, 64, 3000) == 64);
			VM_CHECK((coreio__wire_get64(f) >> 32) == 100);
			VM_CHECK(f[24] == 0x77);
			vm->mmio_answered = true;
		} else {
			VM_CHECK(fakevm_recv(vm->v->c[0], f, 64, 300) == 0);
		}
	}
	if (vm->close_instead) {
		shutdown(vm->v->c[0], SHUT_RDWR);
		shutdown(vm->v->c[1], SHUT_RDWR);
		goto out;
	}
	for (unsigned i = 0; i < vm->np; i++) {
		size_t n = answer_of(vm, req[i], ans);

		VM_CHECK(send_all(vm->v->c[1], ans, n));
	}
out:
	if (vm->fail)
		for (int i = 0; i < 2; i++)
			shutdown(vm->v->c[i], SHUT_RDWR);
	vm->done = true;
	return NULL;
}

static void vm_start(pthread_t *th, struct vm *vm)
{
	vm->fail = 0;
	vm->done = false;
	assert_int_equal(pthread_create(th, NULL, vm_main, vm), 0);
}

static void vm_join(pthread_t th, struct vm *vm)
{
	pthread_join(th, NULL);
	if (vm->fail)
		print_message("the fake VM failed at line %d\n", (int)vm->fail);
	assert_int_equal(vm->fail, 0);
	assert_true(vm->done);
}

/* ---- Connections ---- */

/* A context on a fake VM: the base format (no hello), or LARGE_DMA negotiated. */
static void connect_vm(struct fakevm *v, bool large)
{
	signal(SIGALRM, watchdog);
	alarm(20);
	fakevm_start(v, "readv", large ? COREIO_CAP_LARGE_DMA : 0);
	if (large) {
		for (int i = 0; i < 2; i++) {
			uint8_t f[64];

			fakevm_hello_recv(v->c[i], f, COREIO_CAP_LARGE_DMA);
			fakevm_hello_answer(v->c[i], f, COREIO_CAP_LARGE_DMA);
		}
	}
	assert_int_equal(fakevm_join(v), 0);
	close(v->lfd);
	unlink(v->path);
	v->lfd = -1;
}

static void disconnect_vm(struct fakevm *v)
{
	fakevm_close(v);
	alarm(0);
}

/* ---- Expected pieces: the library's cut (docs/libcoreio.md, "How DMA is cut") ---- */

struct cut {
	uint64_t addr[MAX_P];
	uint32_t len[MAX_P];
	unsigned n;
};

static void cut_add(struct cut *c, uint64_t addr, size_t len, bool large)
{
	while (len) {
		size_t piece = large
				   ? (len < COREIO_WIRE_LARGE_PIECE ? len : COREIO_WIRE_LARGE_PIECE)
				   : 32u - (addr & 31u);

		if (piece > len)
			piece = len;
		assert_true(c->n < MAX_P);
		c->addr[c->n] = addr;
		c->len[c->n] = (uint32_t)piece;
		c->n++;
		addr += piece;
		len -= piece;
	}
}

/* The pieces of segments from..n-1, in segment order. */
static struct cut cut_of(const struct coreio_dma_seg *seg, unsigned from, unsigned n, bool large)
{
	struct cut c = {.n = 0};

	for (unsigned i = from; i < n; i++)
		cut_add(&c, seg[i].addr, seg[i].len, large);
	return c;
}

static void check_wire(const struct vm *vm, const struct cut *c)
{
	assert_int_equal(vm->np, c->n);
	for (unsigned i = 0; i < c->n; i++) {
		if (vm->addr[i] != c->addr[i] || vm->len[i] != c->len[i])
			print_message("piece %u: got %#llx+%u, want %#llx+%u\n", i,
				      (unsigned long long)vm->addr[i], vm->len[i],
				      (unsigned long long)c->addr[i], c->len[i]);
		assert_int_equal(vm->addr[i], c->addr[i]);
		assert_int_equal(vm->len[i], c->len[i]);
	}
}

/* buf holds len bytes of the pattern at addr. */
static void check_data(const uint8_t *buf, uint64_t addr, size_t len, uint8_t (*pat)(uint64_t))
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != pat(addr + i))
			fail_msg("byte %zu of %#llx: %#x, want %#x", i, (unsigned long long)addr,
				 buf[i], pat(addr + i));
}

/* ---- Order and one wait ---- */

/*
 * Segments in descending address order (the wire must follow the segments, not the
 * addresses), one empty, unaligned ones: every piece is sent before any answer.
 */
static void order(bool large)
{
	static uint8_t b0[4], b1[40000], b3[300];
	size_t l1 = large ? sizeof(b1) : 200;
	struct coreio_dma_seg seg[4] = {
	    {MEM_BASE + 0x200102, sizeof(b0), b0},
	    {MEM_BASE + 0x100005, l1, b1},
	    {MEM_BASE + 0x180000, 0, NULL},
	    {MEM_BASE + 0x10013, sizeof(b3), b3},
	};
	struct fakevm v;
	struct vm vm = {.v = &v, .large = large};
	struct cut c = cut_of(seg, 0, 4, large);
	pthread_t th;
	int rc;

	connect_vm(&v, large);
	vm.expect = c.n;
	vm_start(&th, &vm);
	rc = coreio_ctx_dma_readv(v.ctx, 0, 0, seg, 4, 0);
	vm_join(th, &vm);
	assert_int_equal(rc, 0);
	check_wire(&vm, &c);
	check_data(b0, seg[0].addr, sizeof(b0), vm_byte);
	check_data(b1, seg[1].addr, l1, vm_byte);
	check_data(b3, seg[3].addr, sizeof(b3), vm_byte);
	disconnect_vm(&v);
}

static void test_order_base(void **state)
{
	(void)state;
	order(false);
}

/* LARGE_DMA: LREAD pieces, several per segment, received straight into the buffers. */
static void test_order_large(void **state)
{
	(void)state;
	order(true);
}

/* ---- Errors ---- */

/* A refused segment: -EFAULT, the others still land; first error in segment order. */
static void test_fault(void **state)
{
	static uint8_t b0[8], b1[64], b2[100];
	struct fakevm v;
	pthread_t th;

	(void)state;
	connect_vm(&v, true);
	for (int bad = 0; bad < 3; bad++) {
		struct coreio_dma_seg seg[3] = {
		    {MEM_BASE + 0x2000, sizeof(b0), b0},
		    {MEM_BASE + 0x1000, sizeof(b1), b1},
		    {MEM_BASE + 0x3000, sizeof(b2), b2},
		};
		struct vm vm = {.v = &v, .large = true};
		struct cut c;
		int rc;

		seg[bad].addr = BAD_LO + 0x10;
		c = cut_of(seg, 0, 3, true);
		vm.expect = c.n;
		memset(b0, 0, sizeof(b0));
		memset(b1, 0, sizeof(b1));
		memset(b2, 0, sizeof(b2));
		vm_start(&th, &vm);
		rc = coreio_ctx_dma_readv(v.ctx, 0, 0, seg, 3, 0);
		vm_join(th, &vm);
		assert_int_equal(rc, -EFAULT);
		check_wire(&vm, &c);
		if (bad != 0)
			check_data(b0, seg[0].addr, sizeof(b0), vm_byte);
		if (bad != 1)
			check_data(b1, seg[1].addr, sizeof(b1), vm_byte);
		if (bad != 2)
			check_data(b2, seg[2].addr, sizeof(b2), vm_byte);
	}
	disconnect_vm(&v);
}

/* Bad arguments and no connection. */
static void test_args(void **state)
{
	uint8_t b[4];
	struct coreio_dma_seg seg[1] = {{MEM_BASE, sizeof(b), b}};
	struct coreio_dma_seg nullbuf[1] = {{MEM_BASE, 4, NULL}};
	coreio_ctx_t *ctx;
	struct fakevm v;

	(void)state;
	assert_int_equal(coreio_ctx_dma_readv(NULL, 0, 0, seg, 1, 0), -EINVAL);
	assert_int_equal(coreio_ctx_new(&ctx), 0);
	assert_int_equal(coreio_ctx_dma_readv(ctx, 0, 0, seg, 1, 0), -ENOTCONN);
	assert_int_equal(coreio_ctx_dma_readv(ctx, 0, 0, NULL, 0, 0), -ENOTCONN);
	coreio_ctx_free(ctx);

	connect_vm(&v, false);
	assert_int_equal(coreio_ctx_dma_readv(v.ctx, COREIO_WIRE_MAX_MID, 0, seg, 1, 0), -EINVAL);
	assert_int_equal(coreio_ctx_dma_readv(v.ctx, 0, COREIO_WIRE_MAX_SID, seg, 1, 0), -EINVAL);
	assert_int_equal(coreio_ctx_dma_readv(v.ctx, 0, 0, NULL, 1, 0), -EINVAL);
	assert_int_equal(coreio_ctx_dma_readv(v.ctx, 0, 0, nullbuf, 1, 0), -EINVAL);
	assert_int_equal(coreio_ctx_dma_readv(v.ctx, 0, 0, seg, COREIO_DMA_READV_MAX + 1, 0),
			 -EINVAL);
	/* Nothing to read: done at once, nothing on the wire. */
	assert_int_equal(coreio_ctx_dma_readv(v.ctx, 0, 0, NULL, 0, 0), 0);
	{
		uint8_t f[64];

		assert_int_equal(fakevm_recv(v.c[1], f, sizeof(f), 50), 0);
	}
	disconnect_vm(&v);
}

/* The VM goes away with the pieces unanswered: -ECONNRESET. */
static void test_conn_lost(void **state)
{
	static uint8_t b0[4], b1[512];
	struct coreio_dma_seg seg[2] = {{MEM_BASE + 0x40, sizeof(b0), b0},
					{MEM_BASE, sizeof(b1), b1}};
	struct fakevm v;
	struct vm vm = {.v = &v, .large = false, .close_instead = true};
	pthread_t th;
	int rc;

	(void)state;
	connect_vm(&v, false);
	vm.expect = cut_of(seg, 0, 2, false).n;
	vm_start(&th, &vm);
	rc = coreio_ctx_dma_readv(v.ctx, 0, 0, seg, 2, 0);
	vm_join(th, &vm);
	assert_int_equal(rc, -ECONNRESET);
	disconnect_vm(&v);
}

/* More segments than live on the stack: allocated, same order. */
static void test_many_segments(void **state)
{
	static uint8_t b[40][8];
	struct coreio_dma_seg seg[40];
	struct fakevm v;
	struct vm vm = {.v = &v, .large = true};
	struct cut c;
	pthread_t th;

	(void)state;
	for (unsigned i = 0; i < 40; i++)
		seg[i] = (struct coreio_dma_seg){MEM_BASE + 0x10000 - 0x100 * i, 8, b[i]};
	c = cut_of(seg, 0, 40, true);
	connect_vm(&v, true);
	vm.expect = c.n;
	vm_start(&th, &vm);
	assert_int_equal(coreio_ctx_dma_readv(v.ctx, 0, 0, seg, 40, 0), 0);
	vm_join(th, &vm);
	check_wire(&vm, &c);
	for (unsigned i = 0; i < 40; i++)
		check_data(b[i], seg[i].addr, 8, vm_byte);
	disconnect_vm(&v);
}

/* ---- COREIO_DMA_SERVE ---- */

static int mmio_reads;

static int m_read(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	(void)priv, (void)addr, (void)flags;
	mmio_reads++;
	memset(buf, 0x77, len);
	return 0;
}

static int m_write(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	(void)priv, (void)addr, (void)len, (void)buf, (void)flags;
	return 0;
}

/*
 * The VM needs an MMIO answer before it answers the pieces: with the flag the readv serves
 * it while it waits; without, the read waits for the loop.
 */
static void serve(bool with)
{
	static const coreio_func_t funcs = {.read = m_read, .write = m_write};
	static uint8_t b0[4], b1[300];
	struct coreio_dma_seg seg[2] = {{MEM_BASE + 0x80, sizeof(b0), b0},
					{MEM_BASE, sizeof(b1), b1}};
	struct fakevm v;
	struct vm vm = {.v = &v, .large = false, .mmio = with ? 1 : 2};
	uint8_t f[64];
	pthread_t th;
	int rc;

	connect_vm(&v, false);
	mmio_reads = 0;
	assert_int_equal(coreio_ctx_register(v.ctx, 0, &funcs, NULL), 0);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
	assert_int_equal(f[8], COREIO_OP_RGN_CLAIM);
	vm.expect = cut_of(seg, 0, 2, false).n;
	vm_start(&th, &vm);
	rc = coreio_ctx_dma_readv(v.ctx, 0, 0, seg, 2, with ? COREIO_DMA_SERVE : 0);
	vm_join(th, &vm);
	assert_int_equal(rc, 0);
	check_data(b0, seg[0].addr, sizeof(b0), vm_byte);
	check_data(b1, seg[1].addr, sizeof(b1), vm_byte);
	if (with) {
		assert_int_equal(mmio_reads, 1);
		assert_true(vm.mmio_answered);
	} else {
		/* Served by the loop afterwards. */
		assert_int_equal(mmio_reads, 0);
		for (int i = 0; i < 50 && mmio_reads == 0; i++)
			assert_int_equal(fakevm_pump(&v), 0);
		assert_int_equal(mmio_reads, 1);
		assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
		assert_int_equal(coreio__wire_get64(f) >> 32, 100);
		assert_int_equal(f[24], 0x77);
	}
	disconnect_vm(&v);
}

static void test_serve(void **state)
{
	(void)state;
	serve(true);
}

static void test_no_serve(void **state)
{
	(void)state;
	serve(false);
}

/* ---- Shared memory ---- */

/* Segments all in the map: memcpy, nothing on the wire. One outside: it and every later one
 * go through the socket, in order; the ones before it are copied. */
static void test_shm(void **state)
{
	static uint8_t b0[16], b1[600], b2[64];
	int fd = shmvm_memfd(RAM_OFF + RAM_SIZE, F_SEAL_SHRINK);
	uint8_t *map = shmvm_mmap(fd, RAM_OFF + RAM_SIZE);
	struct shmvm_map m = shmvm_ram_map(fd, 1);
	unsigned caps = COREIO_CAP_LARGE_DMA | COREIO_CAP_SHM;
	struct fakevm v;
	pthread_t th;
	uint8_t f[64];

	(void)state;
	signal(SIGALRM, watchdog);
	alarm(20);
	for (size_t i = 0; i < RAM_SIZE; i++)
		map[RAM_OFF + i] = shm_byte(RAM_GPA + i);
	shmvm_connect(&v, "readv-shm", caps, caps, &m);
	close(fd);
	assert_true(coreio_ctx_caps(v.ctx) & COREIO_CAP_SHM_BIT);

	/* 1. All three in the map. */
	{
		struct coreio_dma_seg seg[3] = {{RAM_GPA + 0x8000, sizeof(b0), b0},
						{RAM_GPA + 0x10, sizeof(b1), b1},
						{RAM_GPA + 0x4000, sizeof(b2), b2}};

		assert_int_equal(coreio_ctx_dma_readv(v.ctx, 0, 0, seg, 3, 0), 0);
		assert_int_equal(fakevm_recv(v.c[1], f, sizeof(f), 50), 0);
		check_data(b0, seg[0].addr, sizeof(b0), shm_byte);
		check_data(b1, seg[1].addr, sizeof(b1), shm_byte);
		check_data(b2, seg[2].addr, sizeof(b2), shm_byte);
	}
	/* 2. The first one outside: all three through the socket (the others too). */
	for (int first_out = 0; first_out < 3; first_out++) {
		struct coreio_dma_seg seg[3] = {{RAM_GPA + 0x8000, sizeof(b0), b0},
						{RAM_GPA + 0x10, sizeof(b1), b1},
						{RAM_GPA + 0x4000, sizeof(b2), b2}};
		struct vm vm = {.v = &v, .large = true};
		struct cut c;

		seg[first_out].addr = OUT_ADDR;
		c = cut_of(seg, (unsigned)first_out, 3, true);
		vm.expect = c.n;
		memset(b0, 0, sizeof(b0));
		memset(b1, 0, sizeof(b1));
		memset(b2, 0, sizeof(b2));
		vm_start(&th, &vm);
		assert_int_equal(coreio_ctx_dma_readv(v.ctx, 0, 0, seg, 3, 0), 0);
		vm_join(th, &vm);
		check_wire(&vm, &c);
		for (int i = 0; i < 3; i++) {
			const uint8_t *b = i == 0 ? b0 : i == 1 ? b1 : b2;

			check_data(b, seg[i].addr, seg[i].len, i < first_out ? shm_byte : vm_byte);
		}
	}
	fakevm_close(&v);
	munmap(map, RAM_OFF + RAM_SIZE);
	alarm(0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_order_base), cmocka_unit_test(test_order_large),
	    cmocka_unit_test(test_fault),      cmocka_unit_test(test_args),
	    cmocka_unit_test(test_conn_lost),  cmocka_unit_test(test_many_segments),
	    cmocka_unit_test(test_serve),      cmocka_unit_test(test_no_serve),
	    cmocka_unit_test(test_shm),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
