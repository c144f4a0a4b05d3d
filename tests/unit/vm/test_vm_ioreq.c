/* Unit tests of the coreio-vm ioreq layer, IRQ lines and guest RAM. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ioreq.h"
#include "irq.h"
#include "mem.h"

/* A fake device: handles now, or leaves the request pending. */
struct fake_dev {
	int calls;
	int ret;
	struct io_request *last;
};

static int fake_handler(struct io_request *req, void *opaque)
{
	struct fake_dev *d = opaque;

	d->calls++;
	d->last = req;
	if (d->ret == 0 && req->reqs.mmio.direction == REQUEST_READ)
		memset(req->reqs.mmio.data, 0x5a, req->reqs.mmio.size);
	return d->ret;
}

static int done_calls;

static void on_done(struct io_request *req, void *opaque)
{
	(void)req;
	(void)opaque;
	done_calls++;
}

static struct io_request mmio_req(uint32_t dir, uint64_t addr, uint32_t size)
{
	struct io_request r;

	memset(&r, 0, sizeof(r));
	r.type = REQ_MMIO;
	r.state = REQ_STATE_FREE;
	r.reqs.mmio.direction = dir;
	r.reqs.mmio.address = addr;
	r.reqs.mmio.size = size;
	r.complete = on_done;
	return r;
}

struct fixture {
	struct mem mem;
	struct ioreq_ctx io;
	struct fake_dev a, b;
};

static int setup(void **state)
{
	static struct fixture f;

	memset(&f, 0, sizeof(f));
	assert_int_equal(mem_init(&f.mem, 1 << 20), 0);
	ioreq_init(&f.io, &f.mem);
	/* Two adjacent handlers: [0xd0000000, 0xd0001000) and [0xd0001000, 0xd0002000). */
	assert_int_equal(
	    register_mmio_emulation_handler(&f.io, 0xd0000000, 0xd0001000, fake_handler, &f.a), 0);
	assert_int_equal(
	    register_mmio_emulation_handler(&f.io, 0xd0001000, 0xd0002000, fake_handler, &f.b), 0);
	done_calls = 0;
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	mem_exit(&f->mem);
	return 0;
}

static void test_handled_now(void **state)
{
	struct fixture *f = *state;
	struct io_request r = mmio_req(REQUEST_READ, 0xd0000010, 4);

	assert_int_equal(emulate_io(&f->io, &r), 0);
	assert_int_equal(f->a.calls, 1);
	assert_int_equal(r.state, REQ_STATE_COMPLETE);
	assert_int_equal(emulate_mmio_post(&f->io, &r), 0);
	assert_int_equal(r.state, REQ_STATE_FREE);
	assert_int_equal(r.reqs.mmio.data[0], 0x5a);
	assert_int_equal(done_calls, 0);
}

static void test_pending_then_complete(void **state)
{
	struct fixture *f = *state;
	struct io_request r = mmio_req(REQUEST_READ, 0xd0000ffc, 4);

	f->a.ret = IOREQ_PENDING;
	assert_int_equal(emulate_io(&f->io, &r), IOREQ_PENDING);
	assert_int_equal(r.state, REQ_STATE_PENDING);
	assert_int_equal(emulate_io(&f->io, &r), -EBUSY); /* not FREE */
	assert_int_equal(done_calls, 0);
	r.reqs.mmio.data[0] = 0x42;
	ioreq_complete(&r);
	assert_int_equal(done_calls, 1);
	assert_int_equal(r.state, REQ_STATE_COMPLETE);
	assert_int_equal(emulate_mmio_post(&f->io, &r), 0);
	assert_int_equal(r.state, REQ_STATE_FREE);
	assert_int_equal(r.reqs.mmio.data[0], 0x42);
}

static void test_bus_error_post(void **state)
{
	struct fixture *f = *state;
	struct io_request r = mmio_req(REQUEST_READ, 0xd0000000, 2);

	f->a.ret = IOREQ_PENDING;
	assert_int_equal(emulate_io(&f->io, &r), IOREQ_PENDING);
	r.result = -EIO;
	ioreq_complete(&r);
	assert_int_equal(emulate_mmio_post(&f->io, &r), -EIO);
	assert_int_equal(r.reqs.mmio.data[0], 0xff);
	assert_int_equal(f->io.stats.bus_errors, 1);

	/* A handler returning an errno is a bus error too. */
	f->a.ret = -EINVAL;
	r = mmio_req(REQUEST_WRITE, 0xd0000000, 2);
	assert_int_equal(emulate_io(&f->io, &r), 0);
	assert_int_equal(r.result, -EIO);
}

static void test_straddle(void **state)
{
	struct fixture *f = *state;
	struct io_request r;

	/* Across the two handlers. */
	r = mmio_req(REQUEST_READ, 0xd0000ffe, 4);
	assert_int_equal(emulate_io(&f->io, &r), -EIO);
	/* Across the end of RAM into a gap. */
	r = mmio_req(REQUEST_WRITE, (1 << 20) - 2, 4);
	assert_int_equal(emulate_io(&f->io, &r), -EIO);
	/* Past the last handler into nobody. */
	r = mmio_req(REQUEST_READ, 0xd0001ffc, 8);
	assert_int_equal(emulate_io(&f->io, &r), -EIO);
	/* Wrapping past the top of the address space. */
	r = mmio_req(REQUEST_READ, UINT64_MAX - 1, 4);
	assert_int_equal(emulate_io(&f->io, &r), -EIO);
	/* A pair whose second element crosses into the next handler. */
	r = mmio_req(REQUEST_READ, 0xd0000ff8, 8);
	r.reqs.mmio.pair = true;
	assert_int_equal(emulate_io(&f->io, &r), -EIO);
	assert_int_equal(f->io.stats.straddles, 5);
	assert_int_equal(f->a.calls + f->b.calls, 0);
}

static void test_unhandled(void **state)
{
	struct fixture *f = *state;
	struct io_request r = mmio_req(REQUEST_READ, 0xe0000000, 8);

	assert_int_equal(emulate_io(&f->io, &r), 0);
	assert_int_equal(emulate_mmio_post(&f->io, &r), 0);
	for (int i = 0; i < 8; i++)
		assert_int_equal(r.reqs.mmio.data[i], 0xff);
	r = mmio_req(REQUEST_WRITE, 0xe0000000, 8);
	assert_int_equal(emulate_io(&f->io, &r), 0);
	assert_int_equal(f->io.stats.unhandled_reads, 1);
	assert_int_equal(f->io.stats.unhandled_writes, 1);
	/* The very last byte of the address space. */
	r = mmio_req(REQUEST_READ, UINT64_MAX, 1);
	assert_int_equal(emulate_io(&f->io, &r), 0);
	assert_int_equal(f->io.stats.unhandled_reads, 2);
}

static void test_ram_direct(void **state)
{
	struct fixture *f = *state;
	struct io_request r = mmio_req(REQUEST_WRITE, 0x100, 4);
	uint8_t buf[8];

	memcpy(r.reqs.mmio.data, "\x11\x22\x33\x44", 4);
	assert_int_equal(emulate_io(&f->io, &r), 0);
	assert_int_equal(r.state, REQ_STATE_FREE); /* RAM never leaves FREE */
	assert_int_equal(mem_read(&f->mem, 0x100, buf, 4), 0);
	assert_memory_equal(buf, "\x11\x22\x33\x44", 4);

	/* Masked write: only bytes 1 and 3. */
	r = mmio_req(REQUEST_WRITE, 0x100, 4);
	memcpy(r.reqs.mmio.data, "\xaa\xbb\xcc\xdd", 4);
	r.reqs.mmio.mask = 0xa;
	assert_int_equal(emulate_io(&f->io, &r), 0);
	assert_int_equal(mem_read(&f->mem, 0x100, buf, 4), 0);
	assert_memory_equal(buf, "\x11\xbb\x33\xdd", 4);

	/* Pair read: elements at addr and addr + size. */
	r = mmio_req(REQUEST_READ, 0x100, 2);
	r.reqs.mmio.pair = true;
	assert_int_equal(emulate_io(&f->io, &r), 0);
	assert_memory_equal(r.reqs.mmio.data, "\x11\xbb", 2);
	assert_memory_equal(r.reqs.mmio.data2, "\x33\xdd", 2);

	/* The last bytes of RAM. */
	r = mmio_req(REQUEST_READ, (1 << 20) - 32, 32);
	assert_int_equal(emulate_io(&f->io, &r), 0);
	assert_int_equal(f->a.calls + f->b.calls, 0);
}

static void test_bad_sizes(void **state)
{
	struct fixture *f = *state;
	struct io_request r = mmio_req(REQUEST_READ, 0x100, 0);

	assert_int_equal(emulate_io(&f->io, &r), -EINVAL);
	r = mmio_req(REQUEST_READ, 0x100, 33);
	assert_int_equal(emulate_io(&f->io, &r), -EINVAL);
	r = mmio_req(REQUEST_READ, 0x100, 17);
	r.reqs.mmio.pair = true;
	assert_int_equal(emulate_io(&f->io, &r), -EINVAL);
}

static void test_range_lookup(void **state)
{
	struct fixture *f = *state;
	const struct ioreq_handler *h;
	struct io_request r;

	/* Inclusive start, exclusive end. */
	assert_int_equal(ioreq_classify(&f->io, 0xd0000000, 1, &h), IOREQ_CLASS_HANDLER);
	assert_ptr_equal(h->opaque, &f->a);
	assert_int_equal(ioreq_classify(&f->io, 0xd0000fff, 1, &h), IOREQ_CLASS_HANDLER);
	assert_ptr_equal(h->opaque, &f->a);
	assert_int_equal(ioreq_classify(&f->io, 0xd0001000, 1, &h), IOREQ_CLASS_HANDLER);
	assert_ptr_equal(h->opaque, &f->b);
	assert_int_equal(ioreq_classify(&f->io, 0xd0002000, 1, &h), IOREQ_CLASS_NONE);
	assert_null(h);
	assert_int_equal(ioreq_classify(&f->io, 0xcfffffff, 1, NULL), IOREQ_CLASS_NONE);
	assert_int_equal(ioreq_classify(&f->io, 0xcfffffff, 2, NULL), IOREQ_CLASS_STRADDLE);
	assert_int_equal(ioreq_classify(&f->io, 0, 1 << 20, NULL), IOREQ_CLASS_RAM);
	assert_int_equal(ioreq_classify(&f->io, 0, (1 << 20) + 1, NULL), IOREQ_CLASS_STRADDLE);

	r = mmio_req(REQUEST_READ, 0xd0001000, 4);
	assert_int_equal(emulate_io(&f->io, &r), 0);
	assert_int_equal(f->b.calls, 1);
	assert_int_equal(f->a.calls, 0);
}

static void test_register_errors(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(
	    register_mmio_emulation_handler(&f->io, 0xd0000800, 0xd0000900, fake_handler, NULL),
	    -EEXIST);
	assert_int_equal(
	    register_mmio_emulation_handler(&f->io, 0xd0003000, 0xd0003000, fake_handler, NULL),
	    -EINVAL);
	assert_int_equal(
	    register_mmio_emulation_handler(&f->io, 0xd0002000, 0xd0003000, fake_handler, NULL),
	    0); /* adjacent is fine */
	assert_int_equal(register_io_emulation_handler(&f->io, 0x3f8, 0x400, fake_handler, NULL),
			 0);
	assert_int_equal(register_io_emulation_handler(&f->io, 0x3fc, 0x404, fake_handler, NULL),
			 -EEXIST);
	assert_int_equal(register_io_emulation_handler(&f->io, 0xfff0, 0x10001, fake_handler, NULL),
			 -EINVAL);
}

static void test_pio(void **state)
{
	struct fixture *f = *state;
	struct fake_dev d = {0};
	struct io_request r;

	assert_int_equal(register_io_emulation_handler(&f->io, 0x3f8, 0x400, fake_handler, &d), 0);
	memset(&r, 0, sizeof(r));
	r.type = REQ_PORTIO;
	r.reqs.pio.direction = REQUEST_WRITE;
	r.reqs.pio.address = 0x3f8;
	r.reqs.pio.size = 1;
	assert_int_equal(emulate_io(&f->io, &r), 0);
	assert_int_equal(d.calls, 1);
	emulate_mmio_post(&f->io, &r);

	memset(&r, 0, sizeof(r));
	r.type = REQ_PORTIO;
	r.reqs.pio.direction = REQUEST_READ;
	r.reqs.pio.address = 0x80;
	r.reqs.pio.size = 2;
	assert_int_equal(emulate_io(&f->io, &r), 0);
	assert_int_equal(r.reqs.pio.value, 0xffff);
	assert_int_equal(f->io.stats.unhandled_reads, 1);

	r.reqs.pio.address = 0x3f6;
	r.reqs.pio.size = 4;
	assert_int_equal(emulate_io(&f->io, &r), -EIO);
	r.reqs.pio.address = 0xffff;
	r.reqs.pio.size = 2;
	assert_int_equal(emulate_io(&f->io, &r), -EIO);
	r.reqs.pio.size = 3;
	assert_int_equal(emulate_io(&f->io, &r), -EINVAL);
}

/* ---- irq ---- */

static int raised[IRQ_LINES], lowered[IRQ_LINES];

static void backend(int line, bool level, void *opaque)
{
	(void)opaque;
	if (level)
		raised[line]++;
	else
		lowered[line]++;
}

static void test_irq_or(void **state)
{
	struct irq_chip chip;
	struct irq_source a, b, none;

	(void)state;
	memset(raised, 0, sizeof(raised));
	memset(lowered, 0, sizeof(lowered));
	irq_init(&chip, backend, NULL);
	irq_source_init(&a, 5);
	irq_source_init(&b, 5);
	irq_source_init(&none, 99); /* no line */

	irq_source_set(&chip, &a, true);
	assert_int_equal(raised[5], 1);
	irq_source_set(&chip, &a, true); /* repeated level: no double count */
	irq_source_set(&chip, &b, true);
	assert_int_equal(raised[5], 1);
	irq_source_set(&chip, &a, false);
	assert_int_equal(lowered[5], 0);
	assert_int_equal(irq_line_level(&chip, 5), 1);
	irq_source_set(&chip, &a, false); /* repeated 0 must not take b's count */
	assert_int_equal(irq_line_level(&chip, 5), 1);
	irq_source_set(&chip, &b, false);
	assert_int_equal(lowered[5], 1);
	assert_int_equal(irq_line_level(&chip, 5), 0);
	irq_source_set(&chip, &none, true);
	assert_int_equal(irq_line_level(&chip, 23), 0);
	assert_int_equal(irq_line_level(&chip, IRQ_LINES), -EINVAL);
	assert_int_equal(irq_line_level(&chip, -1), -EINVAL);
}

/* ---- mem ---- */

static void test_mem_bounds(void **state)
{
	struct mem m;
	uint8_t b[4] = {1, 2, 3, 4};

	(void)state;
	assert_int_equal(mem_init(&m, 0), -EINVAL);
	assert_int_equal(mem_init(&m, 1 << 20), 0);
	assert_true(mem_fd(&m) >= 0);
	assert_non_null(mem_ptr(&m, 0, 1 << 20));
	assert_non_null(mem_ptr(&m, (1 << 20) - 1, 1));
	assert_null(mem_ptr(&m, (1 << 20) - 1, 2));
	assert_null(mem_ptr(&m, 1 << 20, 1));
	assert_null(mem_ptr(&m, 0, 0));
	assert_null(mem_ptr(&m, 8, UINT64_MAX));       /* gpa + len overflows */
	assert_null(mem_ptr(&m, UINT64_MAX, 32));      /* at the top */
	assert_null(mem_ptr(&m, UINT64_MAX - 15, 32)); /* wraps to a small address */
	assert_int_equal(mem_write(&m, 0x10, b, 4), 0);
	assert_int_equal(mem_read(&m, 0x10, b, 4), 0);
	assert_int_equal(b[3], 4);
	assert_int_equal(mem_write(&m, UINT64_MAX - 1, b, 4), -EFAULT);
	assert_int_equal(mem_read(&m, (1 << 20) - 2, b, 4), -EFAULT);
	mem_exit(&m);
	assert_int_equal(mem_fd(&m), -1);
	assert_null(mem_ptr(&m, 0, 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_handled_now, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pending_then_complete, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bus_error_post, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_straddle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unhandled, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ram_direct, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_sizes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_range_lookup, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_register_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pio, setup, teardown),
	    cmocka_unit_test(test_irq_or),
	    cmocka_unit_test(test_mem_bounds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
