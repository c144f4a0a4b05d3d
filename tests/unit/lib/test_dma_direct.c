/* Unit tests of libcoreio's direct receive of LREAD answers (io.c, xfer.c) against a fake VM that
 * cuts, reorders and interleaves its answers. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "coreio.h"
#include "fakevm.h"
#include "wire.h"

#define MEM_BASE 0x100000ull
#define MEM_SIZE (8u << 20)
/* Reads that touch [BAD_LO, BAD_HI) get an error answer. */
#define BAD_LO (MEM_BASE + MEM_SIZE - (64u << 10))
#define BAD_HI (MEM_BASE + MEM_SIZE)
#define CANARY 64u

/* How the fake VM sends its answers. */
enum vm_mode {
	MODE_WHOLE,	/* each answer in one send(), in order */
	MODE_SEGMENTS,	/* in order, cut into random pieces of 1 .. 3000 bytes, some with pauses */
	MODE_REORDER,	/* the requests that came together answered shuffled, pings between */
	MODE_HALF_DROP, /* half of the first answer, then the connection closes */
	MODE_COUNT
};

struct vm {
	struct fakevm fv;
	uint8_t *mem;
	atomic_int mode;
	atomic_bool stop;
	unsigned seed; /* the VM thread's random state */
	atomic_uint answers, pings;
};

static void vm_send(int fd, const uint8_t *f, size_t len)
{
	while (len) {
		ssize_t k = send(fd, f, len, MSG_NOSIGNAL);

		if (k <= 0)
			return; /* the client went away (MODE_HALF_DROP) */
		f += k;
		len -= (size_t)k;
	}
}

/* A context connected to the fake VM with LARGE_DMA on both connections. */
static void vm_connect(struct vm *v, unsigned seed)
{
	memset(v, 0, sizeof(*v));
	v->seed = seed;
	v->mem = malloc(MEM_SIZE);
	assert_non_null(v->mem);
	for (size_t i = 0; i < MEM_SIZE; i++)
		v->mem[i] = (uint8_t)(i * 13 + (i >> 9) + (i >> 17));
	fakevm_start(&v->fv, "utd", COREIO_CAP_LARGE_DMA);
	for (int i = 0; i < 2; i++) {
		uint8_t f[64];

		fakevm_hello_recv(v->fv.c[i], f, COREIO_CAP_LARGE_DMA);
		fakevm_hello_answer(v->fv.c[i], f, COREIO_CAP_LARGE_DMA);
	}
	assert_int_equal(fakevm_join(&v->fv), 0);
	assert_int_equal(coreio_ctx_caps(v->fv.ctx) & COREIO_CAP_LARGE_DMA, COREIO_CAP_LARGE_DMA);
}

static void vm_close(struct vm *v)
{
	fakevm_close(&v->fv);
	free(v->mem);
}

/* The answer to LREAD request f into ans; returns its length. */
static size_t vm_answer(struct vm *v, const uint8_t *f, uint8_t *ans)
{
	uint64_t w0 = coreio__wire_get64(f), w1 = coreio__wire_get64(f + 8);
	uint64_t addr = coreio__wire_get64(f + 16);
	size_t n = (size_t)(w1 >> 32), alen;
	unsigned e;

	assert_int_equal(w1 & 0xff, COREIO_OP_LREAD);
	memset(ans, 0, COREIO_WIRE_MAX_MSG);
	memcpy(ans, f, 24);
	w0 &= ~(0xffull << 8);
	if (addr < MEM_BASE || addr - MEM_BASE > MEM_SIZE - n ||
	    (addr + n > BAD_LO && addr < BAD_HI)) {
		coreio__wire_put64(ans, w0 | (1ull << 30));
		return 64;
	}
	e = coreio__wire_extra_for(n);
	alen = ((size_t)e + 1) * 64;
	coreio__wire_put64(ans, w0 | (uint64_t)e << 8);
	memcpy(ans + 24, v->mem + (addr - MEM_BASE), n);
	v->answers++;
	return alen;
}

/* Send len bytes as the mode says (MODE_SEGMENTS: random cuts and pauses). */
static void vm_out(struct vm *v, const uint8_t *b, size_t len, int mode)
{
	if (mode != MODE_SEGMENTS) {
		vm_send(v->fv.c[1], b, len);
		return;
	}
	while (len) {
		size_t k = 1 + (size_t)rand_r(&v->seed) % 3000;

		if (k > len)
			k = len;
		vm_send(v->fv.c[1], b, k);
		b += k;
		len -= k;
		if (rand_r(&v->seed) % 16 == 0)
			usleep(200);
	}
}

/* A VM-initiated PING on the DMA connection: the library echoes it at once. */
static void vm_ping(struct vm *v)
{
	uint8_t f[64] = {0};
	struct coreio_wire_hdr h = {.tag = 0x77, .op = COREIO_OP_PING};

	coreio__wire_encode(f, &h);
	vm_send(v->fv.c[1], f, 64);
	v->pings++;
}

#define MAX_BATCH 1024

static void *vm_thread(void *p)
{
	struct vm *v = p;
	static uint8_t f[COREIO_WIRE_MAX_MSG], ans[COREIO_WIRE_MAX_MSG];
	static uint8_t req[MAX_BATCH][64];
	unsigned order[MAX_BATCH];

	while (!v->stop) {
		int mode = v->mode, n = 0;
		size_t len = fakevm_recv(v->fv.c[1], f, sizeof(f), 20);

		if (len == 0)
			continue;
		if ((coreio__wire_get64(f) >> 31 & 1) == 0)
			continue; /* the echo of our ping */
		if (mode == MODE_HALF_DROP) {
			size_t alen = vm_answer(v, f, ans);

			vm_send(v->fv.c[1], ans, alen / 2);
			shutdown(v->fv.c[1], SHUT_RDWR);
			v->stop = true;
			break;
		}
		if (mode != MODE_REORDER) {
			size_t alen = vm_answer(v, f, ans);

			vm_out(v, ans, alen, mode);
			continue;
		}
		/* Every request that comes within 2 ms, answered shuffled. */
		do {
			if ((coreio__wire_get64(f) >> 31 & 1) != 0)
				memcpy(req[n++], f, 64);
		} while (n < MAX_BATCH && (len = fakevm_recv(v->fv.c[1], f, sizeof(f), 2)) > 0);
		for (int k = 0; k < n; k++)
			order[k] = (unsigned)k;
		for (int k = n - 1; k > 0; k--) {
			unsigned j = (unsigned)rand_r(&v->seed) % (unsigned)(k + 1), t = order[k];

			order[k] = order[j];
			order[j] = t;
		}
		for (int k = 0; k < n; k++) {
			size_t alen = vm_answer(v, req[order[k]], ans);

			if (rand_r(&v->seed) % 4 == 0)
				vm_ping(v);
			vm_out(v, ans, alen, MODE_WHOLE);
		}
	}
	return NULL;
}

static unsigned test_seed(void)
{
	const char *s = getenv("COREIO_TEST_SEED");
	unsigned seed =
	    s ? (unsigned)strtoul(s, NULL, 0) : (unsigned)time(NULL) ^ (unsigned)getpid();

	printf("seed %u (COREIO_TEST_SEED=%u repeats it)\n", seed, seed);
	fflush(stdout);
	return seed;
}

/* A blocking read of len bytes at addr into a buffer with canaries; checks data and canaries. */
static int checked_read(struct vm *v, uint64_t addr, size_t len, bool want_ok)
{
	uint8_t *b = malloc(len + 2 * CANARY);
	int rc;

	assert_non_null(b);
	memset(b, 0xc5, len + 2 * CANARY);
	rc = coreio_ctx_dma_read(v->fv.ctx, 0, 0, addr, len, b + CANARY, 0, NULL, NULL);
	for (size_t i = 0; i < CANARY; i++) {
		assert_int_equal(b[i], 0xc5);
		assert_int_equal(b[CANARY + len + i], 0xc5);
	}
	if (want_ok) {
		assert_int_equal(rc, 0);
		assert_memory_equal(b + CANARY, v->mem + (addr - MEM_BASE), len);
	}
	free(b);
	return rc;
}

/* Many reads of random sizes and offsets in every answering mode, all verified. */
static void test_random_reads(void **state)
{
	unsigned seed = test_seed(), rs = seed ^ 0x9e3779b9u;
	struct vm v;
	pthread_t th;

	(void)state;
	vm_connect(&v, seed);
	assert_int_equal(pthread_create(&th, NULL, vm_thread, &v), 0);
	for (int i = 0; i < 90; i++) {
		size_t len;
		uint64_t off;

		v.mode = i % 3; /* WHOLE, SEGMENTS, REORDER */
		switch (rand_r(&rs) % 4) {
		case 0:
			len = 1 + (size_t)rand_r(&rs) % 100;
			break;
		case 1:
			len = 1 + (size_t)rand_r(&rs) % (64u << 10);
			break;
		default:
			len = 1 + (size_t)rand_r(&rs) % (3u << 20);
			break;
		}
		off = (uint64_t)rand_r(&rs) % (BAD_LO - MEM_BASE - len);
		checked_read(&v, MEM_BASE + off, len, true);
	}
	/* Pings came between the reordered answers and were echoed on the way. */
	assert_true(v.pings > 0);
	v.stop = true;
	pthread_join(th, NULL);
	vm_close(&v);
}

/* An error answer among large ones: -EFAULT, the buffer's neighbours untouched; the next read
 * works. */
static void test_error_answer(void **state)
{
	unsigned seed = test_seed();
	struct vm v;
	pthread_t th;

	(void)state;
	vm_connect(&v, seed);
	assert_int_equal(pthread_create(&th, NULL, vm_thread, &v), 0);
	for (int mode = MODE_WHOLE; mode <= MODE_REORDER; mode++) {
		v.mode = mode;
		/* 1 MiB ending inside the bad window: its last pieces fail. */
		assert_int_equal(checked_read(&v, BAD_LO - (1u << 20) + 100, 1u << 20, false),
				 -EFAULT);
		/* The first two pieces good, the rest failed. */
		assert_int_equal(checked_read(&v, BAD_LO - 40000, 70000, false), -EFAULT);
		checked_read(&v, MEM_BASE + 12345, (2u << 20) + 77, true);
	}
	v.stop = true;
	pthread_join(th, NULL);
	vm_close(&v);
}

struct nb_rec {
	atomic_int done;
	int err;
};

static void nb_cpl(void *p, int err)
{
	struct nb_rec *r = p;

	r->err = err;
	r->done = 1;
}

/* Several non-blocking reads in flight at once, answered shuffled: pieces of different transfers
 * interleave. */
static void test_concurrent_reads(void **state)
{
	unsigned seed = test_seed(), rs = seed ^ 0x5bd1e995u;
	enum { NT = 6 };
	struct nb_rec rec[NT];
	uint8_t *buf[NT];
	size_t len[NT];
	uint64_t addr[NT];
	struct vm v;
	pthread_t th;

	(void)state;
	vm_connect(&v, seed);
	assert_int_equal(pthread_create(&th, NULL, vm_thread, &v), 0);
	for (int round = 0; round < 6; round++) {
		long long waited = 0;
		bool all;

		v.mode = round % 3;
		for (int k = 0; k < NT; k++) {
			len[k] = 1 + (size_t)rand_r(&rs) % (1u << 20);
			addr[k] = MEM_BASE + (uint64_t)rand_r(&rs) % (BAD_LO - MEM_BASE - len[k]);
			buf[k] = malloc(len[k]);
			assert_non_null(buf[k]);
			memset(buf[k], 0, len[k]);
			memset(&rec[k], 0, sizeof(rec[k]));
			assert_int_equal(coreio_ctx_dma_read(v.fv.ctx, 0, 0, addr[k], len[k],
							     buf[k], 0, nb_cpl, &rec[k]),
					 0);
		}
		do {
			coreio_ctx_mainloop(v.fv.ctx, 20000);
			waited += 20;
			all = true;
			for (int k = 0; k < NT; k++)
				all = all && rec[k].done;
		} while (!all && waited < 20000);
		assert_true(all);
		for (int k = 0; k < NT; k++) {
			assert_int_equal(rec[k].err, 0);
			assert_memory_equal(buf[k], v.mem + (addr[k] - MEM_BASE), len[k]);
			free(buf[k]);
		}
	}
	v.stop = true;
	pthread_join(th, NULL);
	vm_close(&v);
}

/* The VM goes away in the middle of an answer: the read fails, no byte lands outside the buffer. */
static void test_drop_mid_answer(void **state)
{
	struct vm v;
	pthread_t th;

	(void)state;
	vm_connect(&v, 1);
	v.mode = MODE_HALF_DROP;
	assert_int_equal(pthread_create(&th, NULL, vm_thread, &v), 0);
	assert_int_equal(checked_read(&v, MEM_BASE + 5, 1u << 20, false), -ECONNRESET);
	pthread_join(th, NULL);
	vm_close(&v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_random_reads),
	    cmocka_unit_test(test_error_answer),
	    cmocka_unit_test(test_concurrent_reads),
	    cmocka_unit_test(test_drop_mid_answer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
