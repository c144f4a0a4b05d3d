/* Unit tests of COREIO_DMA_SERVE: a blocking DMA that serves the VM's MMIO requests while it waits.
 */
#include <errno.h>
#include <poll.h>
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
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "coreio.h"
#include "fakevm.h"
#include "wire.h"

#define DMA_ADDR    0x40000ull /* where the blocking DMA goes */
#define NB_ADDR	    0x50000ull /* where the non-blocking DMA goes */
#define NESTED_ADDR 0xA000ull  /* an MMIO read whose callback does a SERVE DMA */
#define VM_BUF	    512

/* ---- The fake VM: both connections of one context, offer 0 (the base format) ---- */

/* A library that never returns from a wait fails the test in 20 s, not at meson's timeout. */
static void watchdog(int sig)
{
	static const char msg[] = "test_dma_serve: watchdog: a test hung for 20 s\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(3);
	_exit(2);
}

static void fvm_start(struct fakevm *v)
{
	signal(SIGALRM, watchdog);
	alarm(20);
	/* Offering nothing: no hello, DMA in pieces of at most 32 bytes. */
	fakevm_start(v, "serve", 0);
	assert_int_equal(fakevm_join(v), 0);
	/* Both connections are up: the listener is not needed (nor left behind). */
	close(v->lfd);
	unlink(v->path);
	v->lfd = -1;
}

static void fvm_stop(struct fakevm *v)
{
	fakevm_close(v);
	alarm(0);
}

/* A one-unit VM message (origin 0): op on rid 0, data byte d in every data byte. */
static void mk(uint8_t *f, uint32_t tag, unsigned op, unsigned size, uint64_t addr, uint8_t d)
{
	struct coreio_wire_hdr h = {
	    .tag = tag,
	    .op = (uint8_t)op,
	    .size = (uint8_t)size,
	    .addr = addr,
	};

	memset(f, 0, 64);
	coreio__wire_encode(f, &h);
	if (op == COREIO_OP_WRITE || op == COREIO_OP_WRITEA)
		memset(f + 24, d, size);
}

static bool vm_send(int fd, const uint8_t *f, size_t len)
{
	return send(fd, f, len, MSG_NOSIGNAL) == (ssize_t)len;
}

static uint32_t tag_of(const uint8_t *f)
{
	return (uint32_t)(coreio__wire_get64(f) >> 32);
}

/* ---- The order of events, as the callbacks, the VM thread and the test saw them ---- */

enum {
	EV_CB_READ = 1,	   /* arg: address */
	EV_CB_WRITE,	   /* arg: address */
	EV_RESET,	   /* the reset callback */
	EV_CPL,		   /* a non-blocking DMA's completion */
	EV_DMA_RET,	   /* the test's blocking DMA returned */
	EV_NESTED_DMA_RET, /* a callback's blocking DMA returned */
	EV_VM_ANSWER,	   /* the VM got an MMIO answer; arg: tag */
	EV_VM_TIMEOUT,	   /* the VM waited for an answer in vain */
};
#define EVB(k)	 (1u << (k))
#define EV_CALLS (EVB(EV_CB_READ) | EVB(EV_CB_WRITE) | EVB(EV_RESET))
#define LOG_MAX	 64

struct ev {
	int kind;
	uint64_t arg;
};

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ev evlog[LOG_MAX];
static int nlog;

static void log_ev(int kind, uint64_t arg)
{
	pthread_mutex_lock(&log_lock);
	if (nlog < LOG_MAX)
		evlog[nlog] = (struct ev){kind, arg};
	nlog++;
	pthread_mutex_unlock(&log_lock);
}

static void log_reset(void)
{
	pthread_mutex_lock(&log_lock);
	nlog = 0;
	pthread_mutex_unlock(&log_lock);
}

/* The logged events whose kind is in the mask kinds must be exactly want[0..n). */
static void log_expect(unsigned kinds, const struct ev *want, int n)
{
	struct ev got[LOG_MAX];
	int k = 0, all;
	bool same;

	pthread_mutex_lock(&log_lock);
	all = nlog;
	for (int i = 0; i < nlog && i < LOG_MAX; i++)
		if (kinds & EVB(evlog[i].kind))
			got[k++] = evlog[i];
	pthread_mutex_unlock(&log_lock);
	assert_true(all <= LOG_MAX);
	same = k == n;
	for (int i = 0; same && i < n; i++)
		same = got[i].kind == want[i].kind && got[i].arg == want[i].arg;
	if (!same) {
		for (int i = 0; i < k; i++)
			print_message("got  %d: kind %d arg %#llx\n", i, got[i].kind,
				      (unsigned long long)got[i].arg);
		for (int i = 0; i < n; i++)
			print_message("want %d: kind %d arg %#llx\n", i, want[i].kind,
				      (unsigned long long)want[i].arg);
	}
	assert_true(same);
}

/* ---- The device model: records its callbacks, runs on the loop thread ---- */

struct model {
	coreio_ctx_t *ctx;
	int depth, max_depth, calls, wrong_thread;
	uint8_t reg;	       /* the last byte written */
	int cpls;	       /* non-blocking completions run so far */
	int cpls_in_cb;	       /* the most completions any callback saw */
	int nested_rc;	       /* the nested SERVE DMA's result */
	uint8_t nested_buf[8]; /* and its data */
};

static struct model M;
static pthread_t loop_tid;

static void enter(void)
{
	if (!pthread_equal(pthread_self(), loop_tid))
		M.wrong_thread++;
	M.calls++;
	M.depth++;
	if (M.depth > M.max_depth)
		M.max_depth = M.depth;
	if (M.cpls > M.cpls_in_cb)
		M.cpls_in_cb = M.cpls;
	/* Widen the window in which an overlapping callback would show. */
	usleep(1000);
}

/* What a read of addr returns: the last byte written, then (addr >> 12) << 4 | i. */
static uint8_t read_byte(uint8_t reg, uint64_t addr, size_t i)
{
	return i == 0 ? reg : (uint8_t)(((addr >> 12) << 4) | i);
}

static int m_read(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	struct model *m = priv;
	uint8_t *b = buf;

	(void)flags;
	enter();
	log_ev(EV_CB_READ, addr);
	if (addr == NESTED_ADDR) {
		/* Inside a callback the flag must be ignored. */
		m->nested_rc = coreio_ctx_dma_read(m->ctx, 0, 0, DMA_ADDR, sizeof(m->nested_buf),
						   m->nested_buf, COREIO_DMA_SERVE, NULL, NULL);
		log_ev(EV_NESTED_DMA_RET, 0);
	}
	for (size_t i = 0; i < len; i++)
		b[i] = read_byte(m->reg, addr, i);
	m->depth--;
	return 0;
}

static int m_write(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	struct model *m = priv;

	(void)flags, (void)len;
	enter();
	log_ev(EV_CB_WRITE, addr);
	m->reg = *(uint8_t *)buf;
	m->depth--;
	return 0;
}

static void m_reset(void *opaque)
{
	(void)opaque;
	enter();
	log_ev(EV_RESET, 0);
	M.depth--;
}

struct cpl_rec {
	int called, err;
};

static void m_cpl(void *p, int err)
{
	struct cpl_rec *r = p;

	if (!pthread_equal(pthread_self(), loop_tid))
		M.wrong_thread++;
	r->called++;
	r->err = err;
	M.cpls++;
	log_ev(EV_CPL, 0);
}

static const coreio_func_t model_funcs = {.read = m_read, .write = m_write};

/* Fresh model and log; register rid 0 and take its claim off the wire. */
static void model_setup(struct fakevm *v)
{
	uint8_t f[64];

	memset(&M, 0, sizeof(M));
	M.ctx = v->ctx;
	loop_tid = pthread_self();
	log_reset();
	assert_int_equal(coreio_ctx_register(v->ctx, 0, &model_funcs, &M), 0);
	assert_int_equal(fakevm_recv(v->c[0], f, sizeof(f), 1000), 64);
	assert_int_equal(f[8], COREIO_OP_RGN_CLAIM);
	assert_int_equal(coreio_ctx_set_reset_cb(v->ctx, m_reset, NULL), 0);
}

static void model_check(void)
{
	assert_int_equal(M.wrong_thread, 0);
	assert_int_equal(M.depth, 0);
	assert_int_equal(M.max_depth, 1); /* never two callbacks at once */
}

/* ---- The VM's side of a test, on a thread of its own ---- */

struct vm {
	struct fakevm *v;
	bool write;		  /* the blocking DMA is a write */
	bool serve;		  /* ... made with COREIO_DMA_SERVE */
	uint8_t nb[64];		  /* case 5: a non-blocking piece to answer during the wait */
	int close_mask;		  /* case 7: which connections to close (bit 0 control, 1 DMA) */
	atomic_int fail;	  /* the line of the VM's first failed check, 0 if none */
	atomic_bool done;	  /* the script ended */
	long long close_t;	  /* case 7: when the VM closed (ms) */
	atomic_bool dma_returned; /* case 7: the test's blocking DMA returned */
};

/* No cmocka assert off the main thread: the VM records the failing line and
 * drops both connections, so a blocking DMA in the test returns. */
#define VM_CHECK(c)                                                                                \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			vm->fail = __LINE__;                                                       \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void vm_end(struct vm *vm)
{
	if (vm->fail)
		for (int i = 0; i < 2; i++)
			if (vm->v->c[i] >= 0)
				shutdown(vm->v->c[i], SHUT_RDWR);
	vm->done = true;
}

/* Receive the blocking DMA's piece: one READ/WRITEA of 8 bytes at DMA_ADDR. */
static bool vm_piece(struct vm *vm, uint8_t *p)
{
	if (fakevm_recv(vm->v->c[1], p, VM_BUF, 3000) != 64)
		return false;
	return p[8] == (vm->write ? COREIO_OP_WRITEA : COREIO_OP_READ) && p[10] == 8 &&
	       coreio__wire_get64(p + 16) == DMA_ADDR && (coreio__wire_get64(p) >> 31 & 1);
}

/* Answer a DMA piece: a read gets seed + i, a write's data is checked to be seed + i. */
static bool vm_answer_piece(struct fakevm *v, uint8_t *p, uint8_t seed)
{
	unsigned n = p[10];

	for (unsigned i = 0; i < n; i++) {
		if (p[8] == COREIO_OP_READ)
			p[24 + i] = (uint8_t)(seed + i);
		else if (p[24 + i] != (uint8_t)(seed + i))
			return false;
	}
	return vm_send(v->c[1], p, 64);
}

/* Receive the answer to MMIO request tag (op) within ms; data gets its first 4 bytes. */
static bool vm_answer(struct vm *vm, uint32_t tag, unsigned op, int ms, uint8_t *data)
{
	uint8_t f[VM_BUF];

	if (fakevm_recv(vm->v->c[0], f, sizeof(f), ms) != 64)
		return false;
	if (tag_of(f) != tag || f[8] != op || (coreio__wire_get64(f) >> 30 & 1))
		return false;
	if (data)
		memcpy(data, f + 24, 4);
	log_ev(EV_VM_ANSWER, tag);
	return true;
}

static bool read_data_ok(const uint8_t *d, uint8_t reg, uint64_t addr)
{
	for (size_t i = 0; i < 4; i++)
		if (d[i] != read_byte(reg, addr, i))
			return false;
	return true;
}

/* ---- The main thread's side ---- */

static void start_vm(pthread_t *th, void *(*fn)(void *), struct vm *vm)
{
	vm->fail = 0;
	vm->done = false;
	assert_int_equal(pthread_create(th, NULL, fn, vm), 0);
}

static void join_vm(pthread_t th, struct vm *vm)
{
	pthread_join(th, NULL);
	if (vm->fail)
		print_message("the fake VM failed at line %d\n", (int)vm->fail);
	assert_int_equal(vm->fail, 0);
	assert_true(vm->done);
}

/* One select() round of preparefds/processfds, 20 ms at most. */
static int processfds_once(coreio_ctx_t *ctx)
{
	fd_set r, w;
	struct timeval tv = {0, 20000};
	int n;

	FD_ZERO(&r);
	FD_ZERO(&w);
	n = coreio_ctx_preparefds(ctx, 0, &r, &w);
	if (n < 0)
		return n;
	if (select(n, &r, &w, NULL, &tv) < 0)
		return -errno;
	return coreio_ctx_processfds(ctx, &r, &w);
}

/*
 * Run the loop (processfds or mainloop) until the VM's script ended; 6 s at
 * most. Returns the first error. The caller joins the VM thread before it
 * asserts anything, so a failure never leaves a thread running.
 */
static int loop_until_done(struct vm *vm, bool use_processfds)
{
	for (int i = 0; i < 300 && !vm->done; i++) {
		int rc = use_processfds ? processfds_once(vm->v->ctx)
					: coreio_ctx_mainloop(vm->v->ctx, 20000);

		if (rc < 0)
			return rc;
	}
	return 0;
}

/* The blocking DMA of cases 1-3 and 5-7: 8 bytes at DMA_ADDR, seed 0xd0. */
static int blocking_dma(struct fakevm *v, bool write, unsigned flags, uint8_t *buf)
{
	int rc;

	if (write)
		for (int i = 0; i < 8; i++)
			buf[i] = (uint8_t)(0xd0 + i);
	else
		memset(buf, 0, 8);
	rc = write ? coreio_ctx_dma_write(v->ctx, 0, 0, DMA_ADDR, 8, buf, flags, NULL, NULL)
		   : coreio_ctx_dma_read(v->ctx, 0, 0, DMA_ADDR, 8, buf, flags, NULL, NULL);
	log_ev(EV_DMA_RET, 0);
	return rc;
}

static void check_dma_data(const uint8_t *buf)
{
	for (int i = 0; i < 8; i++)
		assert_int_equal(buf[i], (uint8_t)(0xd0 + i));
}

/* Nothing more came: no answer twice, no stray frame. */
static void check_quiet(struct fakevm *v)
{
	uint8_t f[VM_BUF];

	assert_int_equal(coreio_ctx_mainloop(v->ctx, 20000), 0);
	assert_int_equal(fakevm_recv(v->c[0], f, sizeof(f), 50), 0);
	assert_int_equal(fakevm_recv(v->c[1], f, sizeof(f), 0), 0);
}

/* ---- Cases 1 and 2: one MMIO read during the DMA wait, with and without the flag ---- */

static void *one_read_vm(void *p)
{
	struct vm *vm = p;
	uint8_t piece[VM_BUF], f[64], d[4];

	VM_CHECK(vm_piece(vm, piece));
	/* Before answering the DMA, the VM needs the answer to an MMIO read. */
	mk(f, 100, COREIO_OP_READ, 4, 0x3000, 0);
	VM_CHECK(vm_send(vm->v->c[0], f, 64));
	if (vm->serve) {
		VM_CHECK(vm_answer(vm, 100, COREIO_OP_READ, 3000, d));
		VM_CHECK(read_data_ok(d, 0, 0x3000));
		VM_CHECK(vm_answer_piece(vm->v, piece, 0xd0));
	} else {
		/* Without the flag the read waits for the loop. */
		VM_CHECK(fakevm_recv(vm->v->c[0], f, sizeof(f), 300) == 0);
		log_ev(EV_VM_TIMEOUT, 0);
		VM_CHECK(vm_answer_piece(vm->v, piece, 0xd0));
		VM_CHECK(vm_answer(vm, 100, COREIO_OP_READ, 3000, d));
		VM_CHECK(read_data_ok(d, 0, 0x3000));
	}
out:
	vm_end(vm);
	return NULL;
}

static void one_read(bool write, bool serve)
{
	struct fakevm v;
	struct vm vm = {.v = &v, .write = write, .serve = serve};
	uint8_t buf[8];
	pthread_t th;
	int rc;

	fvm_start(&v);
	model_setup(&v);
	start_vm(&th, one_read_vm, &vm);
	rc = blocking_dma(&v, write, serve ? COREIO_DMA_SERVE : 0, buf);
	if (serve) {
		join_vm(th, &vm);
		assert_int_equal(rc, 0);
		/* The callback ran during the DMA call, and its answer reached the
		 * VM before the DMA was answered. */
		const struct ev want[] = {
		    {EV_CB_READ, 0x3000}, {EV_VM_ANSWER, 100}, {EV_DMA_RET, 0}};
		log_expect(~0u, want, 3);
	} else {
		/* Nothing ran during the DMA call... */
		int calls = M.calls;
		/* ...the read is served when the loop runs. */
		int lrc = loop_until_done(&vm, !write);

		join_vm(th, &vm);
		assert_int_equal(rc, 0);
		assert_int_equal(calls, 0);
		assert_int_equal(lrc, 0);
		const struct ev want[] = {
		    {EV_VM_TIMEOUT, 0}, {EV_DMA_RET, 0}, {EV_CB_READ, 0x3000}, {EV_VM_ANSWER, 100}};
		log_expect(~0u, want, 4);
	}
	if (!write)
		check_dma_data(buf);
	assert_int_equal(M.calls, 1);
	model_check();
	check_quiet(&v);
	assert_int_equal(M.calls, 1);
	fvm_stop(&v);
}

/* Case 1: with the flag the read is answered during a blocking read, then a write. */
static void test_serve_read_during_dma_read(void **state)
{
	(void)state;
	one_read(false, true);
}

static void test_serve_read_during_dma_write(void **state)
{
	(void)state;
	one_read(true, true);
}

/* Case 2: without the flag the read waits (served by processfds, then by mainloop). */
static void test_no_flag_read_waits_dma_read(void **state)
{
	(void)state;
	one_read(false, false);
}

static void test_no_flag_read_waits_dma_write(void **state)
{
	(void)state;
	one_read(true, false);
}

/* ---- Case 3: several requests during the wait run in the VM's order, one at a time ---- */

static void *order_vm(void *p)
{
	struct vm *vm = p;
	uint8_t piece[VM_BUF], f[4 * 64], d[4];

	VM_CHECK(vm_piece(vm, piece));
	/* Round 1: WRITE, READ, WRITEA, READ in one send. */
	mk(f, 1, COREIO_OP_WRITE, 4, 0x1000, 0x11);
	mk(f + 64, 2, COREIO_OP_READ, 4, 0x2000, 0);
	mk(f + 128, 3, COREIO_OP_WRITEA, 4, 0x3000, 0x33);
	mk(f + 192, 4, COREIO_OP_READ, 4, 0x4000, 0);
	VM_CHECK(vm_send(vm->v->c[0], f, sizeof(f)));
	/* Each read sees the write sent before it, and the answers come in order. */
	VM_CHECK(vm_answer(vm, 2, COREIO_OP_READ, 3000, d));
	VM_CHECK(read_data_ok(d, 0x11, 0x2000));
	VM_CHECK(vm_answer(vm, 3, COREIO_OP_WRITEA, 3000, NULL));
	VM_CHECK(vm_answer(vm, 4, COREIO_OP_READ, 3000, d));
	VM_CHECK(read_data_ok(d, 0x33, 0x4000));
	/* Round 2: WRITE, READ, WRITE, READ, one send each, a little apart. */
	for (unsigned i = 0; i < 4; i++) {
		bool w = i % 2 == 0;

		mk(f, 5 + i, w ? COREIO_OP_WRITE : COREIO_OP_READ, 4, 0x5000 + 0x1000ull * i,
		   (uint8_t)(0x55 + 0x22 * i));
		VM_CHECK(vm_send(vm->v->c[0], f, 64));
		usleep(2000);
	}
	VM_CHECK(vm_answer(vm, 6, COREIO_OP_READ, 3000, d));
	VM_CHECK(read_data_ok(d, 0x55, 0x6000));
	VM_CHECK(vm_answer(vm, 8, COREIO_OP_READ, 3000, d));
	VM_CHECK(read_data_ok(d, 0x99, 0x8000));
	VM_CHECK(vm_answer_piece(vm->v, piece, 0xd0));
out:
	vm_end(vm);
	return NULL;
}

static void test_serve_order(void **state)
{
	struct fakevm v;
	struct vm vm = {.v = &v, .serve = true};
	uint8_t buf[8];
	pthread_t th;
	int rc;

	(void)state;
	fvm_start(&v);
	model_setup(&v);
	start_vm(&th, order_vm, &vm);
	rc = blocking_dma(&v, false, COREIO_DMA_SERVE, buf);
	join_vm(th, &vm);
	assert_int_equal(rc, 0);
	check_dma_data(buf);
	const struct ev want[] = {
	    {EV_CB_WRITE, 0x1000}, {EV_CB_READ, 0x2000},  {EV_CB_WRITE, 0x3000},
	    {EV_CB_READ, 0x4000},  {EV_CB_WRITE, 0x5000}, {EV_CB_READ, 0x6000},
	    {EV_CB_WRITE, 0x7000}, {EV_CB_READ, 0x8000},  {EV_DMA_RET, 0},
	};
	log_expect(EV_CALLS | EVB(EV_DMA_RET), want, 9);
	model_check();
	check_quiet(&v);
	assert_int_equal(M.calls, 8);
	fvm_stop(&v);
}

/* ---- Case 4: inside a callback the flag is ignored ---- */

static void *nested_vm(void *p)
{
	struct vm *vm = p;
	uint8_t piece[VM_BUF], f[VM_BUF], d[4];

	/* Request A: its callback does a blocking DMA with COREIO_DMA_SERVE. */
	mk(f, 100, COREIO_OP_READ, 4, NESTED_ADDR, 0);
	VM_CHECK(vm_send(vm->v->c[0], f, 64));
	VM_CHECK(vm_piece(vm, piece));
	/* Request B while A's DMA waits: neither is answered before the DMA is. */
	mk(f, 101, COREIO_OP_READ, 4, 0xB000, 0);
	VM_CHECK(vm_send(vm->v->c[0], f, 64));
	VM_CHECK(fakevm_recv(vm->v->c[0], f, sizeof(f), 300) == 0);
	log_ev(EV_VM_TIMEOUT, 0);
	VM_CHECK(vm_answer_piece(vm->v, piece, 0xd0));
	VM_CHECK(vm_answer(vm, 100, COREIO_OP_READ, 3000, d));
	VM_CHECK(read_data_ok(d, 0, NESTED_ADDR));
	VM_CHECK(vm_answer(vm, 101, COREIO_OP_READ, 3000, d));
	VM_CHECK(read_data_ok(d, 0, 0xB000));
out:
	vm_end(vm);
	return NULL;
}

static void test_flag_ignored_in_callback(void **state)
{
	struct fakevm v;
	struct vm vm = {.v = &v, .serve = true};
	pthread_t th;
	int rc;

	(void)state;
	fvm_start(&v);
	model_setup(&v);
	start_vm(&th, nested_vm, &vm);
	rc = loop_until_done(&vm, false);
	join_vm(th, &vm);
	assert_int_equal(rc, 0);
	assert_int_equal(M.nested_rc, 0);
	check_dma_data(M.nested_buf);
	/* B's callback ran only after A's DMA returned (the VM's answers are
	 * checked in order by nested_vm). */
	const struct ev want[] = {
	    {EV_CB_READ, NESTED_ADDR},
	    {EV_VM_TIMEOUT, 0},
	    {EV_NESTED_DMA_RET, 0},
	    {EV_CB_READ, 0xB000},
	};
	log_expect(EV_CALLS | EVB(EV_VM_TIMEOUT) | EVB(EV_NESTED_DMA_RET), want, 4);
	model_check(); /* B did not run nested inside A */
	check_quiet(&v);
	assert_int_equal(M.calls, 2);
	fvm_stop(&v);
}

/*
 * A request served during the SERVE wait whose callback does a blocking DMA
 * of its own: the flag is ignored there too (a callback runs), the inner DMA
 * finds the DMA connection free and completes, a request the VM sends
 * meanwhile waits for that callback, and the outer DMA completes after.
 */
static void *served_nested_vm(void *p)
{
	struct vm *vm = p;
	uint8_t outer[VM_BUF], inner[VM_BUF], f[VM_BUF], d[4];

	VM_CHECK(vm_piece(vm, outer));
	mk(f, 100, COREIO_OP_READ, 4, NESTED_ADDR, 0);
	VM_CHECK(vm_send(vm->v->c[0], f, 64));
	VM_CHECK(vm_piece(vm, inner));
	VM_CHECK(tag_of(inner) != tag_of(outer));
	mk(f, 101, COREIO_OP_READ, 4, 0xB000, 0);
	VM_CHECK(vm_send(vm->v->c[0], f, 64));
	VM_CHECK(fakevm_recv(vm->v->c[0], f, sizeof(f), 300) == 0);
	log_ev(EV_VM_TIMEOUT, 0);
	VM_CHECK(vm_answer_piece(vm->v, inner, 0xd0));
	VM_CHECK(vm_answer(vm, 100, COREIO_OP_READ, 3000, d));
	VM_CHECK(read_data_ok(d, 0, NESTED_ADDR));
	VM_CHECK(vm_answer(vm, 101, COREIO_OP_READ, 3000, d));
	VM_CHECK(read_data_ok(d, 0, 0xB000));
	VM_CHECK(vm_answer_piece(vm->v, outer, 0xd0));
out:
	vm_end(vm);
	return NULL;
}

static void test_nested_dma_in_served_callback(void **state)
{
	struct fakevm v;
	struct vm vm = {.v = &v, .serve = true};
	uint8_t buf[8];
	pthread_t th;
	int rc;

	(void)state;
	fvm_start(&v);
	model_setup(&v);
	start_vm(&th, served_nested_vm, &vm);
	rc = blocking_dma(&v, false, COREIO_DMA_SERVE, buf);
	join_vm(th, &vm);
	assert_int_equal(rc, 0);
	check_dma_data(buf);
	assert_int_equal(M.nested_rc, 0);
	check_dma_data(M.nested_buf);
	const struct ev want[] = {
	    {EV_CB_READ, NESTED_ADDR}, {EV_VM_TIMEOUT, 0}, {EV_NESTED_DMA_RET, 0},
	    {EV_CB_READ, 0xB000},      {EV_DMA_RET, 0},
	};
	log_expect(EV_CALLS | EVB(EV_VM_TIMEOUT) | EVB(EV_NESTED_DMA_RET) | EVB(EV_DMA_RET), want,
		   5);
	model_check();
	check_quiet(&v);
	assert_int_equal(M.calls, 2);
	fvm_stop(&v);
}

/*
 * Another thread's blocking DMA (no flag) owns the DMA connection's
 * receive side while the loop thread's SERVE DMA waits, and the VM answers
 * neither before it has the answer to an MMIO read (QEMU's big lock): the
 * waiting thread still reads the control connection (in short polls) and
 * serves the read, as the flag's contract (include/coreio.h) says.
 */
struct worker {
	coreio_ctx_t *ctx;
	uint8_t buf[8];
	int rc;
};

static void *worker_thread(void *p)
{
	struct worker *w = p;

	w->rc = coreio_ctx_dma_read(w->ctx, 0, 0, NB_ADDR, sizeof(w->buf), w->buf, 0, NULL, NULL);
	return NULL;
}

static void *two_dma_vm(void *p)
{
	struct vm *vm = p;
	uint8_t a[VM_BUF], b[VM_BUF], f[64], d[4];

	/* The worker's piece came first (the test waited for it). */
	memcpy(a, vm->nb, 64);
	VM_CHECK(vm_piece(vm, b));
	mk(f, 100, COREIO_OP_READ, 4, 0x3000, 0);
	VM_CHECK(vm_send(vm->v->c[0], f, 64));
	VM_CHECK(vm_answer(vm, 100, COREIO_OP_READ, 3000, d));
	VM_CHECK(vm_answer_piece(vm->v, a, 0x40));
	VM_CHECK(vm_answer_piece(vm->v, b, 0xd0));
out:
	vm_end(vm);
	return NULL;
}

static void test_serve_while_other_thread_waits(void **state)
{
	struct fakevm v;
	struct vm vm = {.v = &v, .serve = true};
	struct worker w = {0};
	uint8_t buf[8];
	pthread_t th, wt;
	int rc;

	(void)state;
	fvm_start(&v);
	model_setup(&v);
	w.ctx = v.ctx;
	assert_int_equal(pthread_create(&wt, NULL, worker_thread, &w), 0);
	if (fakevm_recv(v.c[1], vm.nb, sizeof(vm.nb), 1000) != 64) {
		shutdown(v.c[1], SHUT_RDWR);
		pthread_join(wt, NULL);
		fail_msg("the worker's DMA piece did not come");
	}
	usleep(20000); /* the worker owns the DMA connection's receive side now */
	start_vm(&th, two_dma_vm, &vm);
	rc = blocking_dma(&v, false, COREIO_DMA_SERVE, buf);
	pthread_join(wt, NULL);
	join_vm(th, &vm);
	assert_int_equal(rc, 0);
	assert_int_equal(w.rc, 0);
	check_dma_data(buf);
	for (int k = 0; k < 8; k++)
		assert_int_equal(w.buf[k], (uint8_t)(0x40 + k));
	const struct ev want[] = {{EV_CB_READ, 0x3000}, {EV_VM_ANSWER, 100}, {EV_DMA_RET, 0}};
	log_expect(~0u, want, 3);
	model_check();
	check_quiet(&v);
	fvm_stop(&v);
}

/* ---- Case 5: no non-blocking DMA completion runs during a SERVE wait ---- */

static void *cpl_vm(void *p)
{
	struct vm *vm = p;
	uint8_t piece[VM_BUF], f[64], d[4];

	VM_CHECK(vm_piece(vm, piece));
	mk(f, 100, COREIO_OP_READ, 4, 0x3000, 0);
	VM_CHECK(vm_send(vm->v->c[0], f, 64));
	VM_CHECK(vm_answer(vm, 100, COREIO_OP_READ, 3000, d));
	/* The second non-blocking DMA finishes during the wait. */
	VM_CHECK(vm_answer_piece(vm->v, vm->nb, 0x60));
	mk(f, 101, COREIO_OP_READ, 4, 0x4000, 0);
	VM_CHECK(vm_send(vm->v->c[0], f, 64));
	VM_CHECK(vm_answer(vm, 101, COREIO_OP_READ, 3000, d));
	VM_CHECK(vm_answer_piece(vm->v, piece, 0xd0));
out:
	vm_end(vm);
	return NULL;
}

static void test_no_completion_in_serve_wait(void **state)
{
	struct fakevm v;
	struct vm vm = {.v = &v, .serve = true};
	struct cpl_rec rec[2] = {{0}, {0}};
	uint8_t buf[8], nb[2][8], f[VM_BUF];
	pthread_t th;
	int rc, calls, cpls;

	(void)state;
	fvm_start(&v);
	model_setup(&v);
	/* Two non-blocking reads; the VM answers the first one now. */
	for (int i = 0; i < 2; i++) {
		memset(nb[i], 0, 8);
		assert_int_equal(coreio_ctx_dma_read(v.ctx, 0, 0, NB_ADDR + 8u * (unsigned)i, 8,
						     nb[i], 0, m_cpl, &rec[i]),
				 0);
	}
	assert_int_equal(fakevm_recv(v.c[1], f, sizeof(f), 1000), 64);
	assert_true(coreio__wire_get64(f + 16) == NB_ADDR);
	assert_true(vm_answer_piece(&v, f, 0x40));
	assert_int_equal(fakevm_recv(v.c[1], vm.nb, sizeof(vm.nb), 1000), 64);
	assert_true(coreio__wire_get64(vm.nb + 16) == NB_ADDR + 8);

	start_vm(&th, cpl_vm, &vm);
	rc = blocking_dma(&v, false, COREIO_DMA_SERVE, buf);
	calls = M.calls;
	cpls = rec[0].called + rec[1].called;
	join_vm(th, &vm);
	assert_int_equal(rc, 0);
	/* The reads were served, no completion ran. */
	assert_int_equal(calls, 2);
	assert_int_equal(cpls, 0);
	check_dma_data(buf);
	/* The loop runs them, in the order they finished. */
	for (int i = 0; i < 100 && rec[1].called == 0; i++)
		assert_int_equal(coreio_ctx_mainloop(v.ctx, 20000), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(rec[i].called, 1);
		assert_int_equal(rec[i].err, 0);
		for (int k = 0; k < 8; k++)
			assert_int_equal(nb[i][k], (uint8_t)((i ? 0x60 : 0x40) + k));
	}
	assert_int_equal(M.cpls_in_cb, 0);
	const struct ev want[] = {
	    {EV_CB_READ, 0x3000}, {EV_CB_READ, 0x4000}, {EV_DMA_RET, 0}, {EV_CPL, 0}, {EV_CPL, 0},
	};
	log_expect(EV_CALLS | EVB(EV_DMA_RET) | EVB(EV_CPL), want, 5);
	model_check();
	check_quiet(&v);
	fvm_stop(&v);
}

/* ---- Case 6: a RESET during the wait runs the reset callback, in order ---- */

static void *reset_vm(void *p)
{
	struct vm *vm = p;
	uint8_t piece[VM_BUF], f[3 * 64], d[4];

	VM_CHECK(vm_piece(vm, piece));
	mk(f, 1, COREIO_OP_READ, 4, 0x1000, 0);
	mk(f + 64, 0, COREIO_OP_RESET, 0, 0, 0);
	mk(f + 128, 2, COREIO_OP_READ, 4, 0x2000, 0);
	VM_CHECK(vm_send(vm->v->c[0], f, sizeof(f)));
	/* The DMA connection's copy is ignored by the library. */
	VM_CHECK(vm_send(vm->v->c[1], f + 64, 64));
	VM_CHECK(vm_answer(vm, 1, COREIO_OP_READ, 3000, d));
	VM_CHECK(vm_answer(vm, 2, COREIO_OP_READ, 3000, d));
	VM_CHECK(vm_answer_piece(vm->v, piece, 0xd0));
out:
	vm_end(vm);
	return NULL;
}

static void test_reset_during_serve_wait(void **state)
{
	struct fakevm v;
	struct vm vm = {.v = &v, .serve = true};
	uint8_t buf[8], f[64];
	pthread_t th;
	int rc;

	(void)state;
	fvm_start(&v);
	model_setup(&v);
	/* A raised line, to see the reset forget it. */
	assert_int_equal(coreio_ctx_irq_update(v.ctx, 0, 0, 1), 0);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
	start_vm(&th, reset_vm, &vm);
	rc = blocking_dma(&v, false, COREIO_DMA_SERVE, buf);
	join_vm(th, &vm);
	assert_int_equal(rc, 0);
	check_dma_data(buf);
	const struct ev want[] = {
	    {EV_CB_READ, 0x1000}, {EV_RESET, 0}, {EV_CB_READ, 0x2000}, {EV_DMA_RET, 0}};
	log_expect(EV_CALLS | EVB(EV_DMA_RET), want, 4);
	model_check();
	check_quiet(&v);
	assert_int_equal(M.calls, 3);
	/* The level was forgotten: raising it again is sent. */
	assert_int_equal(coreio_ctx_irq_update(v.ctx, 0, 0, 1), 0);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
	assert_int_equal(coreio__wire_get64(f + 24), 1);
	fvm_stop(&v);
}

/* ---- Case 7: the VM closes the connection during a SERVE wait ---- */

static void *close_vm(void *p)
{
	struct vm *vm = p;
	uint8_t piece[VM_BUF];

	VM_CHECK(vm_piece(vm, piece));
	usleep(50000); /* the library is in its wait now */
	vm->close_t = now_ms();
	for (int i = 0; i < 2; i++)
		if (vm->close_mask & (1 << i)) {
			close(vm->v->c[i]);
			vm->v->c[i] = -1;
		}
	/* Bounded: a DMA that does not return within 2 s fails the test (and the
	 * shutdown in vm_end() ends it). */
	for (int i = 0; i < 200 && !vm->dma_returned; i++)
		usleep(10000);
	VM_CHECK(vm->dma_returned);
out:
	vm_end(vm);
	return NULL;
}

static void closed_during_wait(int close_mask)
{
	struct fakevm v;
	struct vm vm = {.v = &v, .serve = true, .close_mask = close_mask};
	uint8_t buf[8];
	long long t;
	pthread_t th;
	int rc;

	fvm_start(&v);
	model_setup(&v);
	start_vm(&th, close_vm, &vm);
	rc = blocking_dma(&v, false, COREIO_DMA_SERVE, buf);
	t = now_ms();
	vm.dma_returned = true;
	join_vm(th, &vm);
	assert_int_equal(rc, -ECONNRESET);
	/* Promptly: well within a second of the close (the wait polls every 100 ms). */
	print_message("returned %lld ms after the close\n", t - vm.close_t);
	assert_true(t - vm.close_t < 1000);
	assert_int_equal(M.calls, 0);
	assert_true(coreio_ctx_dma_read(v.ctx, 0, 0, DMA_ADDR, 8, buf, 0, NULL, NULL) < 0);
	fvm_stop(&v);
}

/* Only the control connection: only a wait that reads it can notice. */
static void test_close_control_during_serve_wait(void **state)
{
	(void)state;
	closed_during_wait(1);
}

static void test_close_both_during_serve_wait(void **state)
{
	(void)state;
	closed_during_wait(3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_serve_read_during_dma_read),
	    cmocka_unit_test(test_serve_read_during_dma_write),
	    cmocka_unit_test(test_no_flag_read_waits_dma_read),
	    cmocka_unit_test(test_no_flag_read_waits_dma_write),
	    cmocka_unit_test(test_serve_order),
	    cmocka_unit_test(test_flag_ignored_in_callback),
	    cmocka_unit_test(test_nested_dma_in_served_callback),
	    cmocka_unit_test(test_serve_while_other_thread_waits),
	    cmocka_unit_test(test_no_completion_in_serve_wait),
	    cmocka_unit_test(test_reset_during_serve_wait),
	    cmocka_unit_test(test_close_control_during_serve_wait),
	    cmocka_unit_test(test_close_both_during_serve_wait),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
