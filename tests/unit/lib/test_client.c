/* Unit tests of libcoreio's MMIO, IRQ, claim and DMA logic against a fake VM inside the test. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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
#include <unistd.h>

#include <cmocka.h>

#include "coreio.h"
#include "fakevm.h"
#include "wire.h"

/* ---- The fake VM (fakevm.c) ---- */

/* Build a header-only frame (first unit zeroed beyond the header). */
static size_t mk(uint8_t *f, unsigned iface, unsigned extra, bool origin, uint32_t tag, unsigned op,
		 unsigned size, uint32_t mask, uint64_t addr)
{
	struct coreio_wire_hdr h = {
	    .iface = (uint8_t)iface,
	    .extra = (uint8_t)extra,
	    .origin = origin,
	    .tag = tag,
	    .op = (uint8_t)op,
	    .size = (uint8_t)size,
	    .mask = mask,
	    .addr = addr,
	};

	memset(f, 0, ((size_t)extra + 1) * 64);
	return coreio__wire_encode(f, &h);
}

enum hello_mode { HELLO_NONE, HELLO_ECHO, HELLO_ANSWER };

/* Connect a new context to the fake VM; the VM plays the hello as told. */
static void fvm_connect(struct fakevm *v, unsigned offer, enum hello_mode mode, unsigned vm_caps)
{
	fakevm_start(v, "ut", offer);
	for (int i = 0; i < 2 && mode != HELLO_NONE; i++) {
		uint8_t f[64];

		fakevm_hello_recv(v->c[i], f, offer);
		if (mode == HELLO_ANSWER)
			fakevm_hello_answer(v->c[i], f, vm_caps);
		else
			fakevm_send(v->c[i], f, 64);
	}
	assert_int_equal(fakevm_join(v), 0);
	if (mode == HELLO_NONE) {
		/* Offering nothing sends nothing at all. */
		uint8_t f[64];

		assert_int_equal(fakevm_recv(v->c[0], f, sizeof(f), 50), 0);
		assert_int_equal(fakevm_recv(v->c[1], f, sizeof(f), 50), 0);
	}
}

/* ---- A device model that records its callbacks ---- */

#define LOGN 16
struct model {
	int nread, nwrite, nreadp;
	uint64_t addr[LOGN];
	size_t len[LOGN];
	uint8_t data[LOGN][32];
	int fail;
};

static int m_read(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	struct model *m = priv;
	uint8_t *b = buf;

	(void)flags;
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)(addr + i + 0x10 * m->nread);
	m->nread++;
	return m->fail;
}

static int m_write(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	struct model *m = priv;

	(void)flags;
	if (m->nwrite < LOGN) {
		m->addr[m->nwrite] = addr;
		m->len[m->nwrite] = len;
		memcpy(m->data[m->nwrite], buf, len <= 32 ? len : 32);
	}
	m->nwrite++;
	return m->fail;
}

static const coreio_func_t model_funcs = {.read = m_read, .write = m_write};

/* Register rid on the fake VM's client and check the claim frame. */
static void do_register(struct fakevm *v, unsigned rid, struct model *m)
{
	uint8_t f[64];

	assert_int_equal(coreio_ctx_register(v->ctx, rid, &model_funcs, m), 0);
	assert_int_equal(fakevm_recv(v->c[0], f, sizeof(f), 1000), 64);
	assert_int_equal(f[8], COREIO_OP_RGN_CLAIM);
	assert_int_equal(f[0], rid);
	assert_true(coreio__wire_get64(f) >> 31 & 1);
}

/* ---- Tests ---- */

static void test_connect_base_and_hello(void **state)
{
	struct fakevm v;

	(void)state;
	fvm_connect(&v, COREIO_CAP_ALL, HELLO_ECHO, 0);
	assert_int_equal(coreio_ctx_caps(v.ctx), 0);
	assert_int_equal(coreio_ctx_connect(v.ctx, "unix:/nonexistent"), -EISCONN);
	assert_int_equal(coreio_ctx_set_offer(v.ctx, 0), -EISCONN);
	fakevm_close(&v);

	fvm_connect(&v, COREIO_CAP_ALL, HELLO_ANSWER, COREIO_CAP_LARGE_DMA | 0x80);
	assert_int_equal(coreio_ctx_caps(v.ctx), COREIO_CAP_LARGE_DMA_BIT);
	fakevm_close(&v);

	fvm_connect(&v, 0, HELLO_NONE, 0);
	assert_int_equal(coreio_ctx_caps(v.ctx), 0);
	coreio_ctx_disconnect(v.ctx);
	assert_int_equal(coreio_ctx_caps(v.ctx), -ENOTCONN);
	fakevm_close(&v);
}

static void test_not_connected(void **state)
{
	coreio_ctx_t *ctx;
	fd_set r;
	uint8_t b[4];

	(void)state;
	assert_int_equal(coreio_ctx_new(&ctx), 0);
	FD_ZERO(&r);
	assert_int_equal(coreio_ctx_preparefds(ctx, 0, &r, NULL), -ENOTCONN);
	assert_int_equal(coreio_ctx_processfds(ctx, &r, NULL), -ENOTCONN);
	assert_int_equal(coreio_ctx_irq_update(ctx, 0, 0, 1), -ENOTCONN);
	assert_int_equal(coreio_ctx_irq_update(ctx, 8, 0, 1), -EINVAL);
	assert_int_equal(coreio_ctx_register(ctx, 0, &model_funcs, NULL), -ENOTCONN);
	assert_int_equal(coreio_ctx_dma_read(ctx, 0, 0, 0, 4, b, 0, NULL, NULL), -ENOTCONN);
	assert_int_equal(coreio_ctx_dma_read(ctx, 8, 0, 0, 4, b, 0, NULL, NULL), -EINVAL);
	assert_int_equal(coreio_ctx_dma_read(ctx, 0, 16, 0, 4, b, 0, NULL, NULL), -EINVAL);
	assert_int_equal(coreio_ctx_connect(ctx, "host:0"), -EINVAL);
	assert_int_equal(coreio_ctx_connect(ctx, "unix:/nonexistent/sock"), -ENOENT);
	coreio_ctx_free(ctx);
}

static void test_mmio_read(void **state)
{
	struct fakevm v;
	struct model m = {0};
	uint8_t f[128];

	(void)state;
	fvm_connect(&v, 0, HELLO_NONE, 0);
	do_register(&v, 2, &m);

	mk(f, 2, 0, false, 77, COREIO_OP_READ, 4, 0, 0xd0000010);
	f[8 + 3] = 0x40; /* flags PRIV in w1 bits 28..31 */
	fakevm_send(v.c[0], f, 64);
	assert_int_equal(fakevm_pump(&v), 0);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
	assert_int_equal(m.nread, 1);
	assert_int_equal(f[0], 2);
	assert_int_equal(f[1], 0);			      /* E */
	assert_int_equal(coreio__wire_get64(f) >> 30 & 3, 0); /* no error, origin 0 */
	assert_int_equal(coreio__wire_get64(f) >> 32, 77);    /* tag */
	assert_int_equal(f[8], COREIO_OP_READ);
	assert_int_equal(f[10], 4); /* size */
	assert_true(coreio__wire_get64(f + 16) == 0xd0000010);
	assert_int_equal(f[24], 0x10);
	assert_int_equal(f[27], 0x13);
	assert_int_equal(f[28], 0); /* only size bytes are data */

	/* A failing callback sets the error bit. */
	m.fail = 1;
	mk(f, 2, 0, false, 78, COREIO_OP_READ, 8, 0, 0xd0000020);
	fakevm_send(v.c[0], f, 64);
	assert_int_equal(fakevm_pump(&v), 0);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
	assert_int_equal(coreio__wire_get64(f) >> 30 & 1, 1);
	assert_int_equal(coreio__wire_get64(f) >> 32, 78);
	m.fail = 0;

	/* A pair read without readp: read twice, same address. */
	m.nread = 0;
	mk(f, 2, 0, false, 79, COREIO_OP_READP, 8, 0, 0xd0000100);
	fakevm_send(v.c[0], f, 64);
	assert_int_equal(fakevm_pump(&v), 0);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
	assert_int_equal(m.nread, 2);
	assert_int_equal(f[24], 0x00);
	assert_int_equal(f[coreio__wire_pair_off(8)], 0x10);
	assert_int_equal(f[coreio__wire_pair_off(8) + 7], 0x17);
	fakevm_close(&v);
}

static void test_mmio_write_masks(void **state)
{
	struct fakevm v;
	struct model m = {0};
	uint8_t f[128];

	(void)state;
	fvm_connect(&v, 0, HELLO_NONE, 0);
	do_register(&v, 0, &m);

	/* Sparse mask: bytes 0, 2-3, 6-7 enabled -> three callbacks. */
	mk(f, 0, 0, false, 1, COREIO_OP_WRITE, 8, 0xcd, 0x1000);
	for (int i = 0; i < 8; i++)
		f[24 + i] = (uint8_t)(0xa0 + i);
	fakevm_send(v.c[0], f, 64);
	assert_int_equal(fakevm_pump(&v), 0);
	assert_int_equal(m.nwrite, 3);
	assert_true(m.addr[0] == 0x1000 && m.len[0] == 1 && m.data[0][0] == 0xa0);
	assert_true(m.addr[1] == 0x1002 && m.len[1] == 2 && m.data[1][0] == 0xa2);
	assert_true(m.addr[2] == 0x1006 && m.len[2] == 2 && m.data[2][1] == 0xa7);
	/* A posted write gets no answer. */
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 50), 0);

	/* Full mask and mask 0: one callback each. */
	m.nwrite = 0;
	mk(f, 0, 0, false, 2, COREIO_OP_WRITE, 4, 0xf, 0x2000);
	fakevm_send(v.c[0], f, 64);
	mk(f, 0, 0, false, 3, COREIO_OP_WRITE, 32, 0, 0x3000);
	fakevm_send(v.c[0], f, 64);
	assert_int_equal(fakevm_pump(&v), 0);
	assert_int_equal(m.nwrite, 2);
	assert_true(m.len[0] == 4 && m.len[1] == 32 && m.addr[1] == 0x3000);

	/* An acknowledged write is answered, with the error bit on failure. */
	m.fail = 1;
	mk(f, 0, 0, false, 4, COREIO_OP_WRITEA, 4, 0xf, 0x4000);
	fakevm_send(v.c[0], f, 64);
	assert_int_equal(fakevm_pump(&v), 0);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
	assert_int_equal(f[8], COREIO_OP_WRITEA);
	assert_int_equal(coreio__wire_get64(f) >> 32, 4);
	assert_int_equal(coreio__wire_get64(f) >> 30 & 1, 1);
	fakevm_close(&v);
}

static void test_unregistered_and_ping(void **state)
{
	struct fakevm v;
	uint8_t f[256];

	(void)state;
	fvm_connect(&v, 0, HELLO_NONE, 0);
	/* rid 3 unregistered, frame with E = 1: echoed as one unit, E cleared. */
	mk(f, 3, 1, false, 55, COREIO_OP_READ, 4, 0, 0x5000);
	fakevm_send(v.c[0], f, 128);
	/* rid 9: dropped. */
	mk(f, 9, 0, false, 56, COREIO_OP_READ, 4, 0, 0x5000);
	fakevm_send(v.c[0], f, 64);
	/* A PING from the VM with E = 2 is echoed with E cleared. */
	mk(f, 0, 2, false, 57, COREIO_OP_PING, 0, 0, 0x1234);
	fakevm_send(v.c[0], f, 192);
	assert_int_equal(fakevm_pump(&v), 0);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
	assert_int_equal(coreio__wire_get64(f) >> 32, 55);
	assert_int_equal(f[0], 3);
	assert_int_equal(f[1], 0);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
	assert_int_equal(coreio__wire_get64(f) >> 32, 57);
	assert_int_equal(f[8], COREIO_OP_PING);
	assert_true(coreio__wire_get64(f + 16) == 0x1234);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 50), 0);
	fakevm_close(&v);
}

static void test_register_errors(void **state)
{
	struct fakevm v;
	struct model m = {0};
	coreio_func_t nowrite = {.read = m_read};

	(void)state;
	fvm_connect(&v, 0, HELLO_NONE, 0);
	do_register(&v, 1, &m);
	assert_int_equal(coreio_ctx_register(v.ctx, 1, &model_funcs, &m), -EBUSY);
	assert_int_equal(coreio_ctx_register(v.ctx, 8, &model_funcs, &m), -EINVAL);
	assert_int_equal(coreio_ctx_register(v.ctx, 2, NULL, &m), -EINVAL);
	assert_int_equal(coreio_ctx_register(v.ctx, 2, &nowrite, &m), -EINVAL);
	/* Disconnect forgets registrations; the context can connect again. */
	coreio_ctx_disconnect(v.ctx);
	assert_int_equal(coreio_ctx_register(v.ctx, 1, &model_funcs, &m), -ENOTCONN);
	fakevm_close(&v);
}

struct claim_arg {
	struct fakevm *v;
	uint64_t err; /* 0: accept */
};

static void *claim_vm(void *p)
{
	struct claim_arg *a = p;
	uint8_t f[64];

	if (fakevm_recv(a->v->c[0], f, sizeof(f), 3000) != 64)
		return NULL;
	if (a->err) {
		coreio__wire_put64(f, coreio__wire_get64(f) | (1ull << 30));
		coreio__wire_put64(f + 24, a->err);
	}
	fakevm_send(a->v->c[0], f, 64);
	return NULL;
}

static void test_claim_ack(void **state)
{
	struct fakevm v;
	struct model m = {0};
	struct claim_arg a = {.v = &v};
	pthread_t th;

	(void)state;
	fvm_connect(&v, COREIO_CAP_ALL, HELLO_ANSWER, COREIO_CAP_ALL);
	a.err = ENOENT;
	pthread_create(&th, NULL, claim_vm, &a);
	assert_int_equal(coreio_ctx_register(v.ctx, 4, &model_funcs, &m), -ENOENT);
	pthread_join(th, NULL);
	a.err = EBUSY;
	pthread_create(&th, NULL, claim_vm, &a);
	assert_int_equal(coreio_ctx_register(v.ctx, 4, &model_funcs, &m), -EBUSY);
	pthread_join(th, NULL);
	a.err = 0;
	pthread_create(&th, NULL, claim_vm, &a);
	assert_int_equal(coreio_ctx_register(v.ctx, 4, &model_funcs, &m), 0);
	pthread_join(th, NULL);
	assert_int_equal(coreio_ctx_register(v.ctx, 4, &model_funcs, &m), -EBUSY);
	fakevm_close(&v);
}

static void test_malformed(void **state)
{
	struct fakevm v;
	struct model m = {0};
	uint8_t f[64];
	fd_set r;

	(void)state;
	fvm_connect(&v, 0, HELLO_NONE, 0);
	do_register(&v, 0, &m);
	/* READ with size 0 is malformed. */
	mk(f, 0, 0, false, 1, COREIO_OP_READ, 0, 0, 0x1000);
	fakevm_send(v.c[0], f, 64);
	assert_int_equal(fakevm_pump(&v), -EPROTO);
	assert_int_equal(m.nread, 0);
	FD_ZERO(&r);
	assert_int_equal(coreio_ctx_preparefds(v.ctx, 0, &r, NULL), -ENOTCONN);
	fakevm_close(&v);

	/* An unknown opcode, on the DMA connection this time. */
	fvm_connect(&v, 0, HELLO_NONE, 0);
	mk(f, 0, 0, false, 1, 0x77, 0, 0, 0);
	fakevm_send(v.c[1], f, 64);
	assert_int_equal(fakevm_pump(&v), -EPROTO);
	fakevm_close(&v);
}

static void test_irq(void **state)
{
	struct fakevm v;
	uint8_t f[64];

	(void)state;
	fvm_connect(&v, 0, HELLO_NONE, 0);
	assert_int_equal(coreio_ctx_irq_update(v.ctx, 1, 8, 1), -EINVAL);
	assert_int_equal(coreio_ctx_irq_update(v.ctx, 1, 3, 0), 0); /* already low */
	assert_int_equal(coreio_ctx_irq_update(v.ctx, 1, 3, 1), 0);
	assert_int_equal(coreio_ctx_irq_update(v.ctx, 1, 3, 5), 0); /* still high */
	assert_int_equal(coreio_ctx_irq_update(v.ctx, 1, 3, 0), 0);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
	assert_int_equal(f[8], COREIO_OP_IRQ_UPDATE);
	assert_int_equal(f[0], 1);
	assert_int_equal(coreio__wire_get64(f + 16), 3);
	assert_int_equal(coreio__wire_get64(f + 24), 1);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
	assert_int_equal(coreio__wire_get64(f + 24), 0);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 50), 0);
	fakevm_close(&v);
}

static int resets;

static void on_reset(void *opaque)
{
	(void)opaque;
	resets++;
}

static void test_reset(void **state)
{
	struct fakevm v;
	uint8_t f[64];

	(void)state;
	fvm_connect(&v, 0, HELLO_NONE, 0);
	resets = 0;
	assert_int_equal(coreio_ctx_set_reset_cb(v.ctx, on_reset, NULL), 0);
	assert_int_equal(coreio_ctx_irq_update(v.ctx, 0, 0, 1), 0);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
	mk(f, 0, 0, false, 0, COREIO_OP_RESET, 0, 0, 0);
	fakevm_send(v.c[0], f, 64);
	fakevm_send(v.c[1], f, 64);
	assert_int_equal(fakevm_pump(&v), 0);
	assert_int_equal(resets, 1);
	/* The level was forgotten (low): raising it again is sent. */
	assert_int_equal(coreio_ctx_irq_update(v.ctx, 0, 0, 1), 0);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
	assert_int_equal(coreio__wire_get64(f + 24), 1);
	fakevm_close(&v);
}

struct cpl_rec {
	int called;
	int err;
};

static void cpl_fn(void *p, int err)
{
	struct cpl_rec *r = p;

	r->called++;
	r->err = err;
}

static void test_dma_base_pieces(void **state)
{
	struct fakevm v;
	struct cpl_rec rec = {0};
	uint8_t buf[100], f[64];
	static const unsigned want_len[] = {29, 32, 32, 7};
	uint64_t addr = 0x10003;
	uint32_t tags[4];

	(void)state;
	fvm_connect(&v, COREIO_CAP_ALL, HELLO_ECHO, 0);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(coreio_ctx_dma_read(v.ctx, 0, 5, addr, sizeof(buf), buf, 4, cpl_fn, &rec),
			 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(fakevm_recv(v.c[1], f, sizeof(f), 1000), 64);
		assert_int_equal(f[8], COREIO_OP_READ);
		assert_true(coreio__wire_get64(f) >> 31 & 1);
		assert_int_equal(f[0], 0);     /* mid */
		assert_int_equal(f[11], 0x45); /* sid 5, flags PRIV */
		assert_int_equal(f[10], want_len[i]);
		assert_true(coreio__wire_get64(f + 16) == addr);
		assert_true((coreio__wire_get64(f + 8) >> 32) ==
			    (want_len[i] == 32 ? 0xffffffffu : (1u << want_len[i]) - 1));
		tags[i] = (uint32_t)(coreio__wire_get64(f) >> 32);
		for (int k = 0; k < i; k++)
			assert_true(tags[k] != tags[i]);
		for (unsigned b = 0; b < want_len[i]; b++)
			f[24 + b] = (uint8_t)(addr + b);
		fakevm_send(v.c[1], f, 64);
		addr += want_len[i];
	}
	assert_int_equal(fakevm_recv(v.c[1], f, sizeof(f), 50), 0);
	assert_int_equal(fakevm_pump(&v), 0);
	assert_int_equal(rec.called, 1);
	assert_int_equal(rec.err, 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(buf[i], (uint8_t)(0x10003 + i));

	/* A DMA write of 40 bytes at 0x20010 with one faulted piece: -EFAULT. */
	rec.called = 0;
	for (int i = 0; i < 40; i++)
		buf[i] = (uint8_t)i;
	assert_int_equal(coreio_ctx_dma_write(v.ctx, 0, 0, 0x20010, 40, buf, 0, cpl_fn, &rec), 0);
	for (int i = 0; i < 3; i++) {
		unsigned len = i == 0 ? 16 : i == 1 ? 24 : 0;

		if (i == 2) {
			assert_int_equal(fakevm_recv(v.c[1], f, sizeof(f), 50), 0);
			break;
		}
		assert_int_equal(fakevm_recv(v.c[1], f, sizeof(f), 1000), 64);
		assert_int_equal(f[8], COREIO_OP_WRITEA);
		assert_int_equal(f[10], len);
		assert_int_equal(f[24], i == 0 ? 0 : 16);
		if (i == 0)
			coreio__wire_put64(f, coreio__wire_get64(f) | (1ull << 30));
		fakevm_send(v.c[1], f, 64);
		if (i == 0) {
			assert_int_equal(fakevm_pump(&v), 0);
			/* Not complete while a piece is still in flight. */
			assert_int_equal(rec.called, 0);
		}
	}
	assert_int_equal(fakevm_pump(&v), 0);
	assert_int_equal(rec.called, 1);
	assert_int_equal(rec.err, -EFAULT);

	/* Length 0 completes at once, from processfds. */
	rec.called = 0;
	assert_int_equal(coreio_ctx_dma_read(v.ctx, 0, 0, 0, 0, buf, 0, cpl_fn, &rec), 0);
	assert_int_equal(coreio_ctx_dma_read(v.ctx, 0, 0, 0, 0, buf, 0, NULL, NULL), 0);
	assert_int_equal(fakevm_pump(&v), 0);
	assert_int_equal(rec.called, 1);
	assert_int_equal(rec.err, 0);
	fakevm_close(&v);
}

static void test_dma_large_piece(void **state)
{
	struct fakevm v;
	struct cpl_rec rec = {0};
	uint8_t buf[100], f[256];
	unsigned extra = coreio__wire_extra_for(100);

	(void)state;
	fvm_connect(&v, COREIO_CAP_ALL, HELLO_ANSWER, COREIO_CAP_ALL);
	assert_int_equal(coreio_ctx_dma_read(v.ctx, 0, 0, 0x10003, 100, buf, 0, cpl_fn, &rec), 0);
	assert_int_equal(fakevm_recv(v.c[1], f, sizeof(f), 1000), 64);
	assert_int_equal(f[8], COREIO_OP_LREAD);
	assert_int_equal(coreio__wire_get64(f + 8) >> 32, 100);
	assert_true(coreio__wire_get64(f + 16) == 0x10003);
	assert_int_equal(fakevm_recv(v.c[1], f + 64, 64, 50), 0); /* one piece only */
	/* Answer with E covering the data. */
	coreio__wire_put64(f, coreio__wire_get64(f) | ((uint64_t)extra << 8));
	for (int i = 0; i < 100; i++)
		f[24 + i] = (uint8_t)(0x55 ^ i);
	fakevm_send(v.c[1], f, (extra + 1) * 64);
	/* An answer with an unknown tag is ignored. */
	coreio__wire_put64(f, coreio__wire_get64(f) ^ (0x1234ull << 32));
	fakevm_send(v.c[1], f, (extra + 1) * 64);
	assert_int_equal(fakevm_pump(&v), 0);
	assert_int_equal(rec.called, 1);
	assert_int_equal(rec.err, 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(buf[i], (uint8_t)(0x55 ^ i));

	/* A large write: LWRITE, data from w[3], E covering it. */
	rec.called = 0;
	assert_int_equal(coreio_ctx_dma_write(v.ctx, 0, 0, 0x10003, 100, buf, 0, cpl_fn, &rec), 0);
	assert_int_equal(fakevm_recv(v.c[1], f, sizeof(f), 1000), (extra + 1) * 64);
	assert_int_equal(f[8], COREIO_OP_LWRITE);
	assert_int_equal(f[24 + 99], (uint8_t)(0x55 ^ 99));
	coreio__wire_put64(f, coreio__wire_get64(f) & ~(0xffull << 8));
	fakevm_send(v.c[1], f, 64);
	assert_int_equal(fakevm_pump(&v), 0);
	assert_int_equal(rec.called, 1);
	assert_int_equal(rec.err, 0);
	fakevm_close(&v);
}

static void test_connection_loss(void **state)
{
	struct fakevm v;
	struct cpl_rec rec = {0};
	uint8_t buf[64];

	(void)state;
	fvm_connect(&v, 0, HELLO_NONE, 0);
	assert_int_equal(coreio_ctx_dma_read(v.ctx, 0, 0, 0x1000, 64, buf, 0, cpl_fn, &rec), 0);
	close(v.c[1]);
	v.c[1] = -1;
	assert_int_equal(fakevm_pump(&v), -ECONNRESET);
	assert_int_equal(rec.called, 1);
	assert_int_equal(rec.err, -ECONNRESET);
	assert_int_equal(coreio_ctx_irq_update(v.ctx, 0, 0, 1), -ENOTCONN);
	fakevm_close(&v);

	/* Disconnect completes pending DMA too. */
	fvm_connect(&v, 0, HELLO_NONE, 0);
	rec.called = 0;
	assert_int_equal(coreio_ctx_dma_write(v.ctx, 0, 0, 0x1000, 64, buf, 0, cpl_fn, &rec), 0);
	coreio_ctx_disconnect(v.ctx);
	assert_int_equal(rec.called, 1);
	assert_int_equal(rec.err, -ECONNRESET);
	fakevm_close(&v);
}

/* ---- A VM thread that serves DMA from its memory (and MMIO script steps) ---- */

#define MEM_BASE 0x100000ull
#define MEM_SIZE (17u << 20)

struct dma_vm {
	struct fakevm *v;
	uint8_t *mem;
	atomic_bool stop;
	unsigned pieces;
};

/* Answer one DMA frame f (len bytes) from/to memory. */
static void dma_vm_answer(struct dma_vm *d, uint8_t *f)
{
	static uint8_t ans[COREIO_WIRE_MAX_MSG];
	uint64_t w0 = coreio__wire_get64(f), w1 = coreio__wire_get64(f + 8);
	uint64_t addr = coreio__wire_get64(f + 16);
	unsigned op = (unsigned)(w1 & 0xff);
	size_t n = (op == COREIO_OP_LREAD || op == COREIO_OP_LWRITE) ? (size_t)(w1 >> 32)
								     : (size_t)((w1 >> 16) & 0x3f);
	bool bad = addr < MEM_BASE || addr - MEM_BASE > MEM_SIZE - n;
	size_t alen = 64;

	memcpy(ans, f, 64);
	w0 &= ~(0xffull << 8);
	if (bad) {
		w0 |= 1ull << 30;
	} else if (op == COREIO_OP_READ) {
		memcpy(ans + 24, d->mem + (addr - MEM_BASE), n);
	} else if (op == COREIO_OP_LREAD) {
		unsigned e = coreio__wire_extra_for(n);

		w0 |= (uint64_t)e << 8;
		memcpy(ans + 24, d->mem + (addr - MEM_BASE), n);
		alen = ((size_t)e + 1) * 64;
	} else {
		memcpy(d->mem + (addr - MEM_BASE), f + 24, n);
	}
	coreio__wire_put64(ans, w0);
	d->pieces++;
	fakevm_send(d->v->c[1], ans, alen);
}

static void *dma_vm_thread(void *p)
{
	struct dma_vm *d = p;
	static uint8_t f[COREIO_WIRE_MAX_MSG];

	while (!d->stop) {
		if (fakevm_recv(d->v->c[1], f, sizeof(f), 20) == 0)
			continue;
		dma_vm_answer(d, f);
	}
	return NULL;
}

static void blocking_roundtrip(unsigned vm_caps, size_t len, uint64_t addr)
{
	struct fakevm v;
	struct dma_vm d = {.v = &v};
	uint8_t *src = malloc(len), *dst = malloc(len);
	pthread_t th;

	assert_non_null(src);
	assert_non_null(dst);
	d.mem = calloc(1, MEM_SIZE);
	assert_non_null(d.mem);
	fvm_connect(&v, COREIO_CAP_ALL, vm_caps ? HELLO_ANSWER : HELLO_ECHO, vm_caps);
	pthread_create(&th, NULL, dma_vm_thread, &d);
	for (size_t i = 0; i < len; i++)
		src[i] = (uint8_t)(i * 7 + (i >> 11));
	assert_int_equal(coreio_ctx_dma_write(v.ctx, 0, 0, addr, len, src, 0, NULL, NULL), 0);
	memset(dst, 0, len);
	assert_int_equal(coreio_ctx_dma_read(v.ctx, 0, 0, addr, len, dst, 0, NULL, NULL), 0);
	assert_memory_equal(dst, src, len);
	/* Outside guest memory: -EFAULT. */
	assert_int_equal(
	    coreio_ctx_dma_read(v.ctx, 0, 0, MEM_BASE + MEM_SIZE - 8, 64, dst, 0, NULL, NULL),
	    -EFAULT);
	d.stop = true;
	pthread_join(th, NULL);
	assert_memory_equal(d.mem + (addr - MEM_BASE), src, len);
	fakevm_close(&v);
	free(d.mem);
	free(src);
	free(dst);
}

static void test_dma_blocking_base(void **state)
{
	(void)state;
	blocking_roundtrip(0, 1u << 20, MEM_BASE + 5);
}

static void test_dma_blocking_large_16m(void **state)
{
	(void)state;
	blocking_roundtrip(COREIO_CAP_ALL, 16u << 20, MEM_BASE + 3);
}

/*
 * A large write sent from the caller's buffer (scatter-gather) whose send is
 * partial: the VM does not read at first, so the socket fills, the unsent
 * rest is copied into the library's batch and sent later. Every byte must
 * land where it belongs.
 */
static void test_dma_large_write_partial_send(void **state)
{
	struct fakevm v;
	struct dma_vm d = {.v = &v};
	struct cpl_rec rec = {0};
	size_t len = 4u << 20;
	uint8_t *src = malloc(len);
	pthread_t th;

	(void)state;
	assert_non_null(src);
	d.mem = calloc(1, MEM_SIZE);
	assert_non_null(d.mem);
	for (size_t i = 0; i < len; i++)
		src[i] = (uint8_t)(i * 11 + (i >> 9));
	fvm_connect(&v, COREIO_CAP_ALL, HELLO_ANSWER, COREIO_CAP_ALL);
	assert_int_equal(coreio_ctx_dma_write(v.ctx, 0, 0, MEM_BASE + 9, len, src, 0, cpl_fn, &rec),
			 0);
	/* Nobody reads yet: the pump stops at a full socket, part of a piece sent. */
	assert_int_equal(coreio_ctx_mainloop(v.ctx, 20000), 0);
	assert_int_equal(rec.called, 0);
	pthread_create(&th, NULL, dma_vm_thread, &d);
	for (int i = 0; i < 2000 && rec.called == 0; i++)
		assert_int_equal(coreio_ctx_mainloop(v.ctx, 20000), 0);
	d.stop = true;
	pthread_join(th, NULL);
	assert_int_equal(rec.called, 1);
	assert_int_equal(rec.err, 0);
	assert_memory_equal(d.mem + 9, src, len);
	fakevm_close(&v);
	free(d.mem);
	free(src);
}

struct sending_arg {
	coreio_ctx_t *ctx;
	uint8_t *buf;
	size_t len;
	int rc;
	atomic_bool done;
};

static void *sending_thread(void *p)
{
	struct sending_arg *a = p;

	a->rc = coreio_ctx_dma_write(a->ctx, 0, 0, MEM_BASE, a->len, a->buf, 0, NULL, NULL);
	a->done = true;
	return NULL;
}

/*
 * A transfer that fails while its pieces are being sent from its buffer:
 * the VM reads a little, then drops the DMA connection under a blocking
 * 16 MiB write. The write fails and returns only once no send reads its
 * buffer any more, which is freed right away (ASan would see a late read).
 */
static void test_dma_fail_while_sending(void **state)
{
	struct fakevm v;
	struct sending_arg a = {0};
	static uint8_t f[COREIO_WIRE_MAX_MSG];
	pthread_t th;

	(void)state;
	fvm_connect(&v, COREIO_CAP_ALL, HELLO_ANSWER, COREIO_CAP_ALL);
	a.ctx = v.ctx;
	a.len = 16u << 20;
	a.buf = malloc(a.len);
	assert_non_null(a.buf);
	memset(a.buf, 0x5a, a.len);
	pthread_create(&th, NULL, sending_thread, &a);
	for (int i = 0; i < 40; i++)
		assert_true(fakevm_recv(v.c[1], f, sizeof(f), 3000) > 0);
	shutdown(v.c[1], SHUT_RDWR);
	for (int i = 0; i < 500 && !a.done; i++)
		coreio_ctx_mainloop(v.ctx, 10000);
	pthread_join(th, NULL);
	assert_true(a.rc < 0);
	memset(a.buf, 0, a.len);
	free(a.buf);
	fakevm_close(&v);
}

/* Blocking DMA from inside an MMIO callback, while the VM sends another request: the
 * request waits until the callback has returned (the ordering contract). */
struct nested_model {
	coreio_ctx_t *ctx;
	int depth, max_depth, calls;
	int dma_rc;
	uint8_t dma_buf[8];
};

static int nested_read(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	struct nested_model *nm = priv;

	(void)flags;
	nm->calls++;
	nm->depth++;
	if (nm->depth > nm->max_depth)
		nm->max_depth = nm->depth;
	if (addr == 0xA000)
		nm->dma_rc =
		    coreio_ctx_dma_read(nm->ctx, 0, 0, MEM_BASE, 8, nm->dma_buf, 0, NULL, NULL);
	memset(buf, (int)(addr >> 12), len);
	nm->depth--;
	return 0;
}

static int nested_write(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	(void)priv, (void)addr, (void)len, (void)buf, (void)flags;
	return 0;
}

struct nested_vm {
	struct fakevm *v;
	uint8_t *mem;
	atomic_int ok; /* steps passed */
};

static void *nested_vm_thread(void *p)
{
	struct nested_vm *n = p;
	struct dma_vm d = {.v = n->v, .mem = n->mem};
	uint8_t f[64], piece[64];

	/* Request A: its callback does a blocking DMA. */
	mk(f, 0, 0, false, 100, COREIO_OP_READ, 4, 0, 0xA000);
	fakevm_send(n->v->c[0], f, 64);
	if (fakevm_recv(n->v->c[1], piece, sizeof(piece), 3000) != 64)
		return NULL;
	n->ok++;
	/* Request B while A's DMA waits: it must wait for A's callback. */
	mk(f, 0, 0, false, 101, COREIO_OP_READ, 4, 0, 0xB000);
	fakevm_send(n->v->c[0], f, 64);
	if (fakevm_recv(n->v->c[0], f, sizeof(f), 300) != 0)
		return NULL;
	n->ok++;
	dma_vm_answer(&d, piece);
	/* A's answer first, then B's. */
	if (fakevm_recv(n->v->c[0], f, sizeof(f), 3000) != 64 ||
	    coreio__wire_get64(f) >> 32 != 100 || f[24] != 0xA)
		return NULL;
	n->ok++;
	if (fakevm_recv(n->v->c[0], f, sizeof(f), 3000) != 64 ||
	    coreio__wire_get64(f) >> 32 != 101 || f[24] != 0xB)
		return NULL;
	n->ok++;
	return NULL;
}

static void test_dma_blocking_in_callback(void **state)
{
	struct fakevm v;
	struct nested_model nm = {0};
	struct nested_vm n = {.v = &v};
	coreio_func_t fn = {.read = nested_read, .write = nested_write};
	uint8_t f[64];
	pthread_t th;

	(void)state;
	n.mem = calloc(1, MEM_SIZE);
	for (int i = 0; i < 8; i++)
		n.mem[i] = (uint8_t)(0xc0 + i);
	fvm_connect(&v, 0, HELLO_NONE, 0);
	nm.ctx = v.ctx;
	assert_int_equal(coreio_ctx_register(v.ctx, 0, &fn, &nm), 0);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
	pthread_create(&th, NULL, nested_vm_thread, &n);
	for (int i = 0; i < 100 && n.ok < 4; i++)
		assert_int_equal(coreio_ctx_mainloop(v.ctx, 20000), 0);
	pthread_join(th, NULL);
	assert_int_equal(n.ok, 4);
	assert_int_equal(nm.calls, 2);
	assert_int_equal(nm.max_depth, 1); /* B waited for A's callback to return */
	assert_int_equal(nm.dma_rc, 0);
	assert_int_equal(nm.dma_buf[7], 0xc7);
	fakevm_close(&v);
	free(n.mem);
}

/* Blocking DMA from another thread while the main thread runs the main loop. */
struct thread_arg {
	coreio_ctx_t *ctx;
	int rc;
	uint8_t buf[4096];
	atomic_bool done;
};

static void *dma_thread(void *p)
{
	struct thread_arg *a = p;

	a->rc = 0;
	for (int i = 0; i < 50 && a->rc == 0; i++)
		a->rc = coreio_ctx_dma_read(a->ctx, 0, 0, MEM_BASE + 17, sizeof(a->buf), a->buf, 0,
					    NULL, NULL);
	a->done = true;
	return NULL;
}

static pthread_t loop_thread;
static volatile int cb_wrong_thread;

static int thread_check_read(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	(void)priv, (void)addr, (void)flags;
	if (!pthread_equal(pthread_self(), loop_thread))
		cb_wrong_thread++;
	memset(buf, 0x5a, len);
	return 0;
}

static void test_dma_blocking_other_thread(void **state)
{
	struct fakevm v;
	struct dma_vm d = {.v = &v};
	struct thread_arg a[2];
	coreio_func_t fn = {.read = thread_check_read, .write = nested_write};
	uint8_t f[64];
	pthread_t vm, t[2];
	int answers = 0;

	(void)state;
	d.mem = calloc(1, MEM_SIZE);
	for (int i = 0; i < 8192; i++)
		d.mem[i] = (uint8_t)(i * 13);
	fvm_connect(&v, COREIO_CAP_ALL, HELLO_ECHO, 0);
	loop_thread = pthread_self();
	cb_wrong_thread = 0;
	assert_int_equal(coreio_ctx_register(v.ctx, 0, &fn, NULL), 0);
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
	pthread_create(&vm, NULL, dma_vm_thread, &d);
	for (int i = 0; i < 2; i++) {
		memset(&a[i], 0, sizeof(a[i]));
		a[i].ctx = v.ctx;
		pthread_create(&t[i], NULL, dma_thread, &a[i]);
	}
	for (int i = 0; i < 2000 && !(a[0].done && a[1].done); i++) {
		/* Keep MMIO coming while the DMA threads work. */
		mk(f, 0, 0, false, (uint32_t)i, COREIO_OP_READ, 4, 0, 0x1000);
		fakevm_send(v.c[0], f, 64);
		assert_int_equal(coreio_ctx_mainloop(v.ctx, 2000), 0);
		while (fakevm_recv(v.c[0], f, sizeof(f), 0) == 64)
			answers++;
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].rc, 0);
		for (int k = 0; k < 4096; k++)
			assert_int_equal(a[i].buf[k], (uint8_t)((k + 17) * 13));
	}
	d.stop = true;
	pthread_join(vm, NULL);
	assert_true(answers > 0);
	assert_int_equal(cb_wrong_thread, 0);
	fakevm_close(&v);
	free(d.mem);
}

static void test_tcp_and_default_ctx(void **state)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	char target[64];
	uint8_t f[64];
	int lfd, c[2];

	(void)state;
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(lfd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &sl), 0);
	snprintf(target, sizeof(target), "127.0.0.1:%u", (unsigned)ntohs(sin.sin_port));

	/* The seed API on the default context, target from COREIO_VM. */
	setenv("COREIO_VM", target, 1);
	assert_int_equal(coreio_ctx_set_offer(coreio_default_ctx(), 0), 0);
	assert_int_equal(coreio_connect(NULL), 0);
	unsetenv("COREIO_VM");
	for (int i = 0; i < 2; i++) {
		c[i] = accept(lfd, NULL, NULL);
		assert_true(c[i] >= 0);
	}
	assert_int_equal(coreio_connect(target), -EISCONN);
	assert_int_equal(coreio_irq_update(2, 1, 1), 0);
	assert_int_equal(fakevm_recv(c[0], f, sizeof(f), 1000), 64);
	assert_int_equal(f[8], COREIO_OP_IRQ_UPDATE);
	assert_int_equal(coreio_mainloop(0), 0);
	coreio_disconnect();
	assert_int_equal(coreio_irq_update(2, 1, 1), -ENOTCONN);
	/* The VM sees both connections close. */
	assert_int_equal(recv(c[0], f, sizeof(f), 0), 0);
	assert_int_equal(recv(c[1], f, sizeof(f), 0), 0);
	close(c[0]);
	close(c[1]);
	close(lfd);
	assert_int_equal(coreio_mainloop(0), -ENOTCONN);
	assert_int_equal(coreio_connect("127.0.0.1:1"), -ECONNREFUSED);
	assert_int_equal(coreio_ctx_set_offer(coreio_default_ctx(), COREIO_CAP_ALL), 0);
}

static void test_hello_silent_vm(void **state)
{
	struct fakevm v;
	uint8_t f[64];

	(void)state;
	fakevm_start(&v, "ut", FAKEVM_DEFAULT_OFFER);
	/* Read the hellos but never answer: after 2 s the client speaks base. */
	assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 3000), 64);
	assert_int_equal(fakevm_recv(v.c[1], f, sizeof(f), 3000), 64);
	assert_int_equal(fakevm_join(&v), 0);
	assert_int_equal(coreio_ctx_caps(v.ctx), 0);
	fakevm_close(&v);
}

/* coreio_ctx_get_fd(): readable exactly while coreio_ctx_process() has work. */
static void test_pollable_fd(void **state)
{
	struct fakevm v;
	struct model m = {0};
	coreio_ctx_t *ctx;
	struct pollfd p = {.events = POLLIN};
	uint8_t f[64];

	(void)state;
	assert_int_equal(coreio_ctx_get_fd(NULL), -EINVAL);
	assert_int_equal(coreio_ctx_process(NULL), -EINVAL);
	assert_int_equal(coreio_ctx_new(&ctx), 0);
	assert_int_equal(coreio_ctx_get_fd(ctx), -ENOTCONN);
	assert_int_equal(coreio_ctx_process(ctx), -ENOTCONN);
	coreio_ctx_free(ctx);

	fvm_connect(&v, 0, HELLO_NONE, 0);
	do_register(&v, 2, &m);
	p.fd = coreio_ctx_get_fd(v.ctx);
	assert_true(p.fd >= 0);
	assert_int_equal(coreio_ctx_process(v.ctx), 0);
	assert_int_equal(poll(&p, 1, 0), 0);
	for (uint32_t tag = 90; tag < 93; tag++) {
		mk(f, 2, 0, false, tag, COREIO_OP_READ, 4, 0, 0xd0000010);
		fakevm_send(v.c[0], f, 64);
		assert_int_equal(poll(&p, 1, 2000), 1);
		assert_int_equal(coreio_ctx_process(v.ctx), 0);
		assert_int_equal(fakevm_recv(v.c[0], f, sizeof(f), 1000), 64);
		assert_int_equal(coreio__wire_get64(f) >> 32, tag);
		/* Served: idle again. */
		assert_int_equal(poll(&p, 1, 0), 0);
	}
	assert_int_equal(m.nread, 3);
	/* The VM going away makes it readable, and process() says so. */
	close(v.c[0]);
	v.c[0] = -1;
	assert_int_equal(poll(&p, 1, 2000), 1);
	assert_int_equal(coreio_ctx_process(v.ctx), -ECONNRESET);
	fakevm_close(&v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_connect_base_and_hello),
	    cmocka_unit_test(test_not_connected),
	    cmocka_unit_test(test_tcp_and_default_ctx),
	    cmocka_unit_test(test_hello_silent_vm),
	    cmocka_unit_test(test_mmio_read),
	    cmocka_unit_test(test_pollable_fd),
	    cmocka_unit_test(test_mmio_write_masks),
	    cmocka_unit_test(test_unregistered_and_ping),
	    cmocka_unit_test(test_register_errors),
	    cmocka_unit_test(test_claim_ack),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_irq),
	    cmocka_unit_test(test_reset),
	    cmocka_unit_test(test_dma_base_pieces),
	    cmocka_unit_test(test_dma_large_piece),
	    cmocka_unit_test(test_connection_loss),
	    cmocka_unit_test(test_dma_blocking_base),
	    cmocka_unit_test(test_dma_blocking_large_16m),
	    cmocka_unit_test(test_dma_large_write_partial_send),
	    cmocka_unit_test(test_dma_fail_while_sending),
	    cmocka_unit_test(test_dma_blocking_in_callback),
	    cmocka_unit_test(test_dma_blocking_other_thread),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
