/* cmocka tests of the virtio library's log callback: which messages reach it, at which level, and
 * that the library itself never writes to stderr. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "vio_test_desc.h"
#include "virtio.h"

#define MEM_SIZE (1u << 20)
#define QSIZE	 8u
#define DESC	 0x1000u
#define AVAIL	 0x2000u
#define USED	 0x3000u
#define DATA	 0x10000u
#define MAX_LOG	 64u
#define MAX_PW	 16u

struct entry {
	int level;
	char msg[VIO_LOG_MAX + 16];
};

struct fake {
	uint8_t mem[MEM_SIZE];
	struct entry log[MAX_LOG];
	unsigned nlog;
	void *log_opaque_seen;
	bool post;
	struct {
		void (*done)(void *, int);
		void *arg;
	} pw[MAX_PW];
	unsigned npw;
	struct vio_dev dev;
	struct vio_chain chain;
	int saved_stderr;
	FILE *err_file;
};

static int fake_read(void *opaque, uint64_t gpa, void *buf, size_t len)
{
	struct fake *f = opaque;

	if (gpa > MEM_SIZE || len > MEM_SIZE - gpa)
		return -EFAULT;
	memcpy(buf, f->mem + gpa, len);
	return 0;
}

static int fake_write(void *opaque, uint64_t gpa, const void *buf, size_t len)
{
	struct fake *f = opaque;

	if (gpa > MEM_SIZE || len > MEM_SIZE - gpa)
		return -EFAULT;
	memcpy(f->mem + gpa, buf, len);
	return 0;
}

/* Posted writes are only recorded: the test completes them by hand. */
static int fake_post(void *opaque, uint64_t gpa, const void *buf, size_t len,
		     void (*done)(void *, int), void *arg)
{
	struct fake *f = opaque;

	(void)gpa, (void)buf, (void)len;
	if (!f->post)
		return -EOPNOTSUPP;
	assert_true(f->npw < MAX_PW);
	f->pw[f->npw].done = done;
	f->pw[f->npw].arg = arg;
	f->npw++;
	return 0;
}

static int fake_irq(void *opaque, unsigned level)
{
	(void)opaque, (void)level;
	return 0;
}

static const struct vio_host_ops fake_host = {
    .dma_read = fake_read,
    .dma_write = fake_write,
    .irq_set = fake_irq,
    .dma_write_post = fake_post,
};

static void kick_cb(struct vio_dev *d, unsigned q)
{
	(void)d, (void)q;
}

static const struct vio_dev_ops ops = {.queue_kick = kick_cb};

static void log_cb(void *opaque, int level, const char *msg)
{
	struct fake *f = opaque;

	f->log_opaque_seen = opaque;
	assert_true(f->nlog < MAX_LOG);
	f->log[f->nlog].level = level;
	snprintf(f->log[f->nlog].msg, sizeof(f->log[f->nlog].msg), "%s", msg);
	f->nlog++;
}

/* Send fd 2 to a temporary file, to check afterwards that nothing was written there. */
static void stderr_capture(struct fake *f)
{
	fflush(stderr);
	f->err_file = tmpfile();
	assert_non_null(f->err_file);
	f->saved_stderr = dup(2);
	assert_true(f->saved_stderr >= 0);
	assert_int_equal(dup2(fileno(f->err_file), 2), 2);
}

/* Restore fd 2; returns how many bytes went to stderr meanwhile. */
static long stderr_release(struct fake *f)
{
	struct stat st;

	fflush(stderr);
	assert_int_equal(dup2(f->saved_stderr, 2), 2);
	close(f->saved_stderr);
	assert_int_equal(fstat(fileno(f->err_file), &st), 0);
	fclose(f->err_file);
	return (long)st.st_size;
}

static void wr32(struct fake *f, uint64_t off, uint32_t v)
{
	assert_int_equal(vio_test_w32(&f->dev, off, v), 0);
}

/* An MMIO device with one queue of QSIZE, running; logging to f when with_log. */
static struct fake *bring_up(bool verbose, bool with_log)
{
	struct fake *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(vio_dev_init(&f->dev, VIO_ID_RNG, 0, 1, 16, &ops, f), 0);
	f->dev.transport = VIO_TRANSPORT_MMIO;
	f->dev.verbose = verbose;
	vio_dev_set_host(&f->dev, &fake_host, f);
	if (with_log)
		vio_dev_set_log(&f->dev, log_cb, f);
	assert_int_equal(vio_test_negotiate(&f->dev, VIO_BIT(VIO_F_VERSION_1)), 0);
	assert_int_equal(vio_test_mmio_queue(&f->dev, 0, QSIZE, DESC, AVAIL, USED), 0);
	wr32(f, VIO_MMIO_STATUS,
	     VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK | VIO_S_DRIVER_OK);
	assert_true(vio_dev_running(&f->dev));
	return f;
}

static void tear_down(struct fake *f)
{
	vio_chain_free(&f->chain);
	free(f);
}

/* Publish head in avail slot 0 with avail->idx 1. */
static void publish_first(struct fake *f, uint16_t head)
{
	vio_put_le(f->mem + AVAIL + 4, head, 2);
	vio_put_le(f->mem + AVAIL + 2, 1, 2);
}

/* Index of the first entry whose text is msg, or -1. */
static int find(const struct fake *f, const char *msg)
{
	for (unsigned i = 0; i < f->nlog; i++)
		if (!strcmp(f->log[i].msg, msg))
			return (int)i;
	return -1;
}

/* A broken ring: the warning reaches the callback once, even without verbose, never stderr. */
static void test_needs_reset_reaches_callback(void **state)
{
	struct fake *f = bring_up(false, true);
	int i;

	(void)state;
	assert_int_equal(f->nlog, 0); /* not verbose: bringing it up said nothing */
	publish_first(f, QSIZE + 3);  /* a head beyond the table */
	stderr_capture(f);
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), -EPROTO);
	/* A second problem while still marked: not repeated without verbose. */
	vio_dev_needs_reset(&f->dev, "again");
	assert_int_equal(stderr_release(f), 0);
	assert_true(f->dev.status & VIO_S_NEEDS_RESET);
	assert_int_equal(f->nlog, 1);
	i = find(f, "virtio: device needs reset: queue 0: descriptor index out of range");
	assert_int_equal(i, 0);
	assert_int_equal(f->log[0].level, COREIO_LOG_WARNING);
	assert_ptr_equal(f->log_opaque_seen, f);
	tear_down(f);
}

/* With verbose every needs-reset is logged, and the driver's reset too (as a debug trace). */
static void test_driver_reset_verbose(void **state)
{
	struct fake *f = bring_up(true, true);
	int i;

	(void)state;
	assert_true(find(f, "virtio: queue 0 enabled: size 8 desc 0x1000 driver 0x2000 device "
			    "0x3000") >= 0);
	assert_true(find(f, "virtio: status 0xb -> 0xf") >= 0);
	f->nlog = 0;
	vio_dev_needs_reset(&f->dev, "first");
	vio_dev_needs_reset(&f->dev, "second");
	assert_int_equal(find(f, "virtio: device needs reset: first"), 0);
	assert_int_equal(find(f, "virtio: device needs reset: second"), 1);
	wr32(f, VIO_MMIO_STATUS, 0);
	assert_int_equal(f->dev.status, 0);
	i = find(f, "virtio: reset by the driver");
	assert_int_equal(i, 2);
	assert_int_equal(f->log[i].level, COREIO_LOG_DEBUG);
	assert_int_equal(f->nlog, 3);
	tear_down(f);
}

/* Without verbose, a driver reset, a notify and a refused feature set stay silent. */
static void test_driver_reset_quiet(void **state)
{
	struct fake *f = bring_up(false, true);

	(void)state;
	wr32(f, VIO_MMIO_QUEUE_NOTIFY, 0);
	wr32(f, VIO_MMIO_STATUS, 0);
	assert_int_equal(f->dev.status, 0);
	wr32(f, VIO_MMIO_STATUS, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER);
	wr32(f, VIO_MMIO_DRIVER_FEAT_SEL, 0);
	wr32(f, VIO_MMIO_DRIVER_FEATURES, 1u << 5); /* never offered */
	wr32(f, VIO_MMIO_STATUS, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
	assert_false(f->dev.status & VIO_S_FEATURES_OK);
	assert_int_equal(f->nlog, 0);
	tear_down(f);
}

/* Verbose traces of notifies and refused features, each at its level. */
static void test_verbose_traces(void **state)
{
	struct fake *f = bring_up(true, true);
	int i;

	(void)state;
	f->nlog = 0;
	wr32(f, VIO_MMIO_QUEUE_NOTIFY, 0);
	i = find(f, "virtio: notify queue 0");
	assert_true(i >= 0);
	assert_int_equal(f->log[i].level, COREIO_LOG_DEBUG);
	wr32(f, VIO_MMIO_STATUS, 0);
	wr32(f, VIO_MMIO_STATUS, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER);
	wr32(f, VIO_MMIO_DRIVER_FEAT_SEL, 0);
	wr32(f, VIO_MMIO_DRIVER_FEATURES, 1u << 5);
	wr32(f, VIO_MMIO_STATUS, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
	i = find(f, "virtio: refused driver features 0x20");
	assert_true(i >= 0);
	assert_int_equal(f->log[i].level, COREIO_LOG_INFO);
	tear_down(f);
}

/* A posted write that fails is reported (verbose) with its size and error. */
static void test_posted_write_failure(void **state)
{
	struct fake *f = bring_up(true, true);
	int i;

	(void)state;
	f->post = true;
	vio_test_desc(f->mem + DESC, DATA, 16, VIO_DESC_F_WRITE, 0);
	publish_first(f, 0);
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 1);
	assert_int_equal(vio_chain_post(&f->dev, &f->chain, 0, "0123456789", 10), 0);
	assert_int_equal(f->npw, 1);
	f->nlog = 0;
	f->pw[0].done(f->pw[0].arg, -EFAULT);
	i = find(f, "virtio: posted write of 10 bytes failed: Bad address");
	assert_int_equal(i, 0);
	assert_int_equal(f->log[i].level, COREIO_LOG_WARNING);
	assert_int_equal(f->dev.stat_post_errors, 1);
	tear_down(f);
}

/* No callback: the warning goes nowhere, in particular not to stderr. */
static void test_no_callback_is_silent(void **state)
{
	struct fake *f = bring_up(true, false);

	(void)state;
	publish_first(f, QSIZE);
	stderr_capture(f);
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), -EPROTO);
	wr32(f, VIO_MMIO_STATUS, 0);
	vio_log(&f->dev, COREIO_LOG_ERR, "direct %d", 1);
	assert_int_equal(stderr_release(f), 0);
	assert_true(f->dev.stat_broken >= 1);
	assert_int_equal(f->nlog, 0);
	tear_down(f);
}

/* Removing the callback, vio_dev_init() clearing it, and a message longer than the limit. */
static void test_set_clear_and_truncate(void **state)
{
	struct fake *f = bring_up(false, true);
	char why[1000];
	size_t n;

	(void)state;
	memset(why, 'x', sizeof(why) - 1);
	why[sizeof(why) - 1] = '\0';
	vio_dev_needs_reset(&f->dev, why);
	assert_int_equal(f->nlog, 1);
	n = strlen(f->log[0].msg);
	assert_int_equal(n, VIO_LOG_MAX - 1);
	assert_memory_equal(f->log[0].msg, "virtio: device needs reset: xxx", 31);
	assert_int_equal(f->log[0].msg[n - 1], 'x');

	vio_dev_set_log(&f->dev, NULL, NULL);
	vio_log(&f->dev, COREIO_LOG_ERR, "dropped");
	assert_int_equal(f->nlog, 1);

	vio_dev_set_log(&f->dev, log_cb, f);
	vio_log(&f->dev, COREIO_LOG_ERR, "back %s %u", "again", 7u);
	assert_int_equal(f->nlog, 2);
	assert_string_equal(f->log[1].msg, "back again 7");
	assert_int_equal(f->log[1].level, COREIO_LOG_ERR);

	assert_int_equal(vio_dev_init(&f->dev, VIO_ID_RNG, 0, 1, 16, &ops, f), 0);
	assert_null(f->dev.log);
	vio_log(&f->dev, COREIO_LOG_ERR, "after init");
	assert_int_equal(f->nlog, 2);
	tear_down(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_needs_reset_reaches_callback),
	    cmocka_unit_test(test_driver_reset_verbose),
	    cmocka_unit_test(test_driver_reset_quiet),
	    cmocka_unit_test(test_verbose_traces),
	    cmocka_unit_test(test_posted_write_failure),
	    cmocka_unit_test(test_no_callback_is_silent),
	    cmocka_unit_test(test_set_clear_and_truncate),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
