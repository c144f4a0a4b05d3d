/* Unit tests of the in-VMM devices: the device table, the 8250 UART, debug exit, test device. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bootinfo.h"
#include "hw.h"
#include "ioreq.h"
#include "irq.h"

static struct ioreq_ctx io;
static struct irq_chip chip;
static struct hw_ctx ctx;
static struct hw_set set;
static int out_pipe[2];
static int exit_status;
static int irq4_changes;

static void on_exit_req(int status, void *opaque)
{
	(void)opaque;
	exit_status = status;
}

static void on_irq(int line, bool level, void *opaque)
{
	(void)level;
	(void)opaque;
	if (line == COREIO_COM1_IRQ)
		irq4_changes++;
}

static int setup(void **state)
{
	(void)state;
	ioreq_init(&io, NULL);
	irq_init(&chip, on_irq, NULL);
	if (pipe(out_pipe) < 0)
		return -1;
	fcntl(out_pipe[0], F_SETFL, O_NONBLOCK);
	ctx = (struct hw_ctx){.io = &io,
			      .irq = &chip,
			      .in_fd = -1,
			      .out_fd = out_pipe[1],
			      .request_exit = on_exit_req};
	exit_status = -1;
	irq4_changes = 0;
	return hw_init_all(&set, &ctx);
}

static int teardown(void **state)
{
	(void)state;
	hw_exit_all(&set);
	close(out_pipe[0]);
	close(out_pipe[1]);
	ioreq_exit(&io);
	return 0;
}

static uint32_t pio(uint32_t dir, uint32_t port, uint32_t size, uint32_t value)
{
	struct io_request req;

	memset(&req, 0, sizeof(req));
	req.type = REQ_PORTIO;
	req.reqs.pio.direction = dir;
	req.reqs.pio.address = port;
	req.reqs.pio.size = size;
	req.reqs.pio.value = value;
	assert_int_equal(emulate_io(&io, &req), 0);
	assert_int_equal(emulate_mmio_post(&io, &req), 0);
	return req.reqs.pio.value;
}

static uint8_t inb(uint32_t port)
{
	return (uint8_t)pio(REQUEST_READ, port, 1, 0);
}

static void outb(uint32_t port, uint8_t v)
{
	pio(REQUEST_WRITE, port, 1, v);
}

static void test_table(void **state)
{
	const struct ioreq_handler *h;

	(void)state;
	assert_ptr_equal(hw_devices[0], &hw_uart8250);
	assert_ptr_equal(hw_devices[1], &hw_debugexit);
	assert_ptr_equal(hw_devices[2], &hw_testdev);
	assert_ptr_equal(hw_devices[3], &hw_iommu); /* no --iommu here: no registers */
	assert_null(hw_devices[4]);
	assert_int_equal(set.n, 4);
	assert_non_null(hw_state(&set, &hw_uart8250));
	/* Registered: COM1 ports, the debug-exit port, the test device page. */
	assert_int_equal(io.npio, 2);
	assert_int_equal(io.pio[0].start, 0x3f8);
	assert_int_equal(io.pio[0].end, 0x400);
	assert_int_equal(io.pio[1].start, 0x501);
	assert_int_equal(io.nmmio, 1);
	assert_int_equal(ioreq_classify(&io, COREIO_TESTDEV_BASE, 8, &h), IOREQ_CLASS_HANDLER);
	assert_int_equal(h->end - h->start, 0x1000);
	/* A second registration of the same devices is refused. */
	{
		struct hw_set again;

		assert_int_equal(hw_init_all(&again, &ctx), -EEXIST);
		assert_int_equal(again.n, 0);
	}
	/* An unhandled port reads all ones and is counted. */
	assert_int_equal(pio(REQUEST_READ, 0x80, 1, 0), 0xff);
	assert_int_equal(io.stats.unhandled_reads, 1);
}

static void test_uart_tx(void **state)
{
	char buf[64];
	ssize_t n;

	(void)state;
	assert_int_equal(inb(0x3fd) & 0x60, 0x60); /* LSR: THRE | TEMT */
	assert_int_equal(inb(0x3fd) & 1, 0);	   /* no data */
	outb(0x3f8, 'o');
	outb(0x3f8, 'k');
	assert_true(read(out_pipe[0], buf, sizeof(buf)) < 0); /* buffered until a newline */
	outb(0x3f8, '\n');
	n = read(out_pipe[0], buf, sizeof(buf));
	assert_int_equal(n, 3);
	assert_memory_equal(buf, "ok\n", 3);
	/* DLAB: divisor latch instead of THR/IER. */
	outb(0x3fb, 0x83);
	outb(0x3f8, 0x01);
	outb(0x3f9, 0x00);
	assert_int_equal(inb(0x3f8), 0x01);
	outb(0x3fb, 0x03);
	assert_int_equal(inb(0x3fb), 0x03);
	assert_true(read(out_pipe[0], buf, sizeof(buf)) < 0); /* DLL writes are not output */
	outb(0x3ff, 0x5a);
	assert_int_equal(inb(0x3ff), 0x5a); /* scratch */
	outb(0x3fc, 0x0b);
	assert_int_equal(inb(0x3fc), 0x0b); /* MCR */
	assert_int_equal(inb(0x3fa), 0x01); /* IIR: none pending */
	/* Output still buffered at exit is flushed by hw_exit_all() (teardown). */
	outb(0x3f8, 'z');
	uart8250_flush(hw_state(&set, &hw_uart8250));
	assert_int_equal(read(out_pipe[0], buf, sizeof(buf)), 1);
}

static void test_uart_rx_irq(void **state)
{
	void *u;

	(void)state;
	u = hw_state(&set, &hw_uart8250);
	assert_int_equal(uart8250_rx(u, (const uint8_t *)"ab", 2), 2);
	assert_int_equal(irq_line_level(&chip, COREIO_COM1_IRQ), 0); /* IER off: no IRQ */
	assert_int_equal(inb(0x3fd) & 1, 1);			     /* LSR.DR */
	outb(0x3f9, 0x01);					     /* IER: receive */
	assert_int_equal(irq_line_level(&chip, COREIO_COM1_IRQ), 1);
	assert_int_equal(inb(0x3fa), 0x04); /* IIR: received data */
	assert_int_equal(inb(0x3f8), 'a');
	assert_int_equal(irq_line_level(&chip, COREIO_COM1_IRQ), 1);
	assert_int_equal(inb(0x3f8), 'b');
	assert_int_equal(irq_line_level(&chip, COREIO_COM1_IRQ), 0);
	assert_int_equal(inb(0x3fd) & 1, 0);
	assert_int_equal(inb(0x3f8), 0); /* empty */
	/* THR empty interrupt: raised when enabled, cleared by reading IIR. */
	outb(0x3f9, 0x02);
	assert_int_equal(irq_line_level(&chip, COREIO_COM1_IRQ), 1);
	assert_int_equal(inb(0x3fa), 0x02);
	assert_int_equal(irq_line_level(&chip, COREIO_COM1_IRQ), 0);
	outb(0x3f8, '\n'); /* a write makes THR empty again: a new interrupt */
	assert_int_equal(irq_line_level(&chip, COREIO_COM1_IRQ), 1);
	outb(0x3f9, 0x00);
	assert_int_equal(irq_line_level(&chip, COREIO_COM1_IRQ), 0);
	assert_int_equal(irq4_changes, 6);
	/* Overrun: a full buffer drops the excess and sets LSR.OE once. */
	{
		static uint8_t big[5000];

		assert_int_equal(uart8250_rx(u, big, sizeof(big)), 4096);
		assert_int_equal(inb(0x3fd) & 3, 3);
		assert_int_equal(inb(0x3fd) & 3, 1);
	}
}

static void test_debugexit(void **state)
{
	(void)state;
	outb(0x502, 3); /* not the port itself: ignored */
	assert_int_equal(exit_status, -1);
	pio(REQUEST_WRITE, 0x501, 4, 0x1234);
	assert_int_equal(exit_status, 0x34);
	outb(0x501, 0);
	assert_int_equal(exit_status, 0);
}

static int mmio(uint32_t dir, uint64_t addr, uint32_t size, uint8_t *data)
{
	struct io_request req;
	int rc;

	memset(&req, 0, sizeof(req));
	req.type = REQ_MMIO;
	req.reqs.mmio.direction = dir;
	req.reqs.mmio.address = addr;
	req.reqs.mmio.size = size;
	if (dir == REQUEST_WRITE)
		memcpy(req.reqs.mmio.data, data, size);
	rc = emulate_io(&io, &req);
	emulate_mmio_post(&io, &req);
	if (dir == REQUEST_READ)
		memcpy(data, req.reqs.mmio.data, size);
	return rc;
}

static void test_testdev(void **state)
{
	uint8_t d[8];
	uint32_t id;
	uint64_t v = 0x1122334455667788ull, r = 0;

	(void)state;
	assert_int_equal(mmio(REQUEST_READ, COREIO_TESTDEV_BASE, 4, d), 0);
	memcpy(&id, d, 4);
	assert_int_equal(id, COREIO_TESTDEV_ID);
	/* The ID is read-only. */
	memset(d, 0, sizeof(d));
	mmio(REQUEST_WRITE, COREIO_TESTDEV_BASE, 4, d);
	mmio(REQUEST_READ, COREIO_TESTDEV_BASE, 4, d);
	assert_memory_equal(d, "TEST", 4);
	/* Scratch: 64-bit and byte access. */
	mmio(REQUEST_WRITE, COREIO_TESTDEV_BASE + 8, 8, (uint8_t *)&v);
	mmio(REQUEST_READ, COREIO_TESTDEV_BASE + 8, 8, (uint8_t *)&r);
	assert_int_equal(r, v);
	d[0] = 0xee;
	mmio(REQUEST_WRITE, COREIO_TESTDEV_BASE + 9, 1, d);
	mmio(REQUEST_READ, COREIO_TESTDEV_BASE + 8, 8, (uint8_t *)&r);
	assert_int_equal(r, 0x112233445566ee88ull);
	/* Elsewhere in the page reads 0. */
	mmio(REQUEST_READ, COREIO_TESTDEV_BASE + 0x800, 8, (uint8_t *)&r);
	assert_int_equal(r, 0);
	/* Past the page: nobody. */
	mmio(REQUEST_READ, COREIO_TESTDEV_BASE + 0x1000, 4, d);
	assert_memory_equal(d, "\xff\xff\xff\xff", 4);
	/* Straddling its end. */
	assert_int_equal(mmio(REQUEST_READ, COREIO_TESTDEV_BASE + 0xffc, 8, d), -EIO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_table, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uart_tx, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uart_rx_irq, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_debugexit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_testdev, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
