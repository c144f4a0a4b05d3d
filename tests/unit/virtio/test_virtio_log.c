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

#include "vio_fake.h"
#include "vio_test_desc.h"
#include "virtio.h"

#define MEM_SIZE (1u << 20)
#define QSIZE	 8u
#define DESC	 0x1000u
#define AVAIL	 0x2000u
#define USED	 0x3000u
#define DATA	 0x10000u

struct fake {
	struct vio_fake
	    h; /* first: the host ops' opaque; posted writes only held, see bring_up() */
	struct vio_dev dev;
	struct vio_chain chain;
	int saved_stderr;
	FILE *err_file;
};

static void kick_cb(struct vio_dev *d, unsigned q)
{
	(void)d, (void)q;
}

static const struct vio_dev_ops ops = {.queue_kick = kick_cb};

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

/* An MMIO device with one queue of QSIZE, running; logging to f when with_log. */
static struct fake *bring_up(bool verbose, bool with_log)
{
	struct fake *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	vio_fake_init(&f->h, MEM_SIZE);
	/* Posted writes are only recorded (no_post until a test wants them): the test
	 * completes them by hand. */
	f->h.no_post = true;
	f->h.hold_posts = true;
	assert_int_equal(vio_dev_init(&f->dev, VIO_ID_RNG, 0, 1, 16, &ops, f), 0);
	f->dev.transport = VIO_TRANSPORT_MMIO;
	f->dev.verbose = verbose;
	vio_dev_set_host(&f->dev, &vio_fake_host_posting, &f->h);
	if (with_log)
		vio_dev_set_log(&f->dev, vio_fake_log_cb, &f->h);
	assert_int_equal(vio_test_negotiate(&f->dev, VIO_BIT(VIO_F_VERSION_1)), 0);
	assert_int_equal(vio_test_mmio_queue(&f->dev, 0, QSIZE, DESC, AVAIL, USED), 0);
	assert_int_equal(vio_test_mmio_driver_ok(&f->dev), 0);
	assert_true(vio_dev_running(&f->dev));
	return f;
}

static void tear_down(struct fake *f)
{
	vio_chain_free(&f->chain);
	vio_fake_fini(&f->h);
	free(f);
}

/* Publish head in avail slot 0 with avail->idx 1. */
static void publish_first(struct fake *f, uint16_t head)
{
	vio_put_le(f->h.mem + AVAIL + 4, head, 2);
	vio_put_le(f->h.mem + AVAIL + 2, 1, 2);
}

/* Index of the first entry whose text is msg, or -1. */
static int find(const struct fake *f, const char *msg)
{
	for (unsigned i = 0; i < f->h.nlog; i++)
		if (!strcmp(f->h.log[i].msg, msg))
			return (int)i;
	return -1;
}

/* A broken ring: the warning reaches the callback once, even without verbose, never stderr. */
static void test_needs_reset_reaches_callback(void **state)
{
	struct fake *f = bring_up(false, true);
	int i;

	(void)state;
	assert_int_equal(f->h.nlog, 0); /* not verbose: bringing it up said nothing */
	publish_first(f, QSIZE + 3);	/* a head beyond the table */
	stderr_capture(f);
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), -EPROTO);
	/* A second problem while still marked: not repeated without verbose. */
	vio_dev_needs_reset(&f->dev, "again");
	assert_int_equal(stderr_release(f), 0);
	assert_true(f->dev.status & VIO_S_NEEDS_RESET);
	assert_int_equal(f->h.nlog, 1);
	i = find(f, "virtio: device needs reset: queue 0: descriptor index out of range");
	assert_int_equal(i, 0);
	assert_int_equal(f->h.log[0].level, COREIO_LOG_WARNING);
	assert_ptr_equal(f->h.log_opaque_seen, &f->h);
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
	f->h.nlog = 0;
	vio_dev_needs_reset(&f->dev, "first");
	vio_dev_needs_reset(&f->dev, "second");
	assert_int_equal(find(f, "virtio: device needs reset: first"), 0);
	assert_int_equal(find(f, "virtio: device needs reset: second"), 1);
	vio_fake_wr32(&f->dev, VIO_MMIO_STATUS, 0);
	assert_int_equal(f->dev.status, 0);
	i = find(f, "virtio: reset by the driver");
	assert_int_equal(i, 2);
	assert_int_equal(f->h.log[i].level, COREIO_LOG_DEBUG);
	assert_int_equal(f->h.nlog, 3);
	tear_down(f);
}

/* Without verbose, a driver reset, a notify and a refused feature set stay silent. */
static void test_driver_reset_quiet(void **state)
{
	struct fake *f = bring_up(false, true);

	(void)state;
	vio_fake_wr32(&f->dev, VIO_MMIO_QUEUE_NOTIFY, 0);
	vio_fake_wr32(&f->dev, VIO_MMIO_STATUS, 0);
	assert_int_equal(f->dev.status, 0);
	vio_fake_wr32(&f->dev, VIO_MMIO_STATUS, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER);
	vio_fake_wr32(&f->dev, VIO_MMIO_DRIVER_FEAT_SEL, 0);
	vio_fake_wr32(&f->dev, VIO_MMIO_DRIVER_FEATURES, 1u << 5); /* never offered */
	vio_fake_wr32(&f->dev, VIO_MMIO_STATUS,
		      VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
	assert_false(f->dev.status & VIO_S_FEATURES_OK);
	assert_int_equal(f->h.nlog, 0);
	tear_down(f);
}

/* Verbose traces of notifies and refused features, each at its level. */
static void test_verbose_traces(void **state)
{
	struct fake *f = bring_up(true, true);
	int i;

	(void)state;
	f->h.nlog = 0;
	vio_fake_wr32(&f->dev, VIO_MMIO_QUEUE_NOTIFY, 0);
	i = find(f, "virtio: notify queue 0");
	assert_true(i >= 0);
	assert_int_equal(f->h.log[i].level, COREIO_LOG_DEBUG);
	vio_fake_wr32(&f->dev, VIO_MMIO_STATUS, 0);
	vio_fake_wr32(&f->dev, VIO_MMIO_STATUS, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER);
	vio_fake_wr32(&f->dev, VIO_MMIO_DRIVER_FEAT_SEL, 0);
	vio_fake_wr32(&f->dev, VIO_MMIO_DRIVER_FEATURES, 1u << 5);
	vio_fake_wr32(&f->dev, VIO_MMIO_STATUS,
		      VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
	i = find(f, "virtio: refused driver features 0x20");
	assert_true(i >= 0);
	assert_int_equal(f->h.log[i].level, COREIO_LOG_INFO);
	tear_down(f);
}

/* A posted write that fails is reported (verbose) with its size and error. */
static void test_posted_write_failure(void **state)
{
	struct fake *f = bring_up(true, true);
	int i;

	(void)state;
	f->h.no_post = false;
	vio_test_desc(f->h.mem + DESC, DATA, 16, VIO_DESC_F_WRITE, 0);
	publish_first(f, 0);
	assert_int_equal(vio_queue_pop(&f->dev, 0, &f->chain), 1);
	assert_int_equal(vio_chain_post(&f->dev, &f->chain, 0, "0123456789", 10), 0);
	assert_int_equal(f->h.npw, 1);
	f->h.nlog = 0;
	f->h.pw[0].done(f->h.pw[0].arg, -EFAULT);
	i = find(f, "virtio: posted write of 10 bytes failed: Bad address");
	assert_int_equal(i, 0);
	assert_int_equal(f->h.log[i].level, COREIO_LOG_WARNING);
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
	vio_fake_wr32(&f->dev, VIO_MMIO_STATUS, 0);
	vio_log(&f->dev, COREIO_LOG_ERR, "direct %d", 1);
	assert_int_equal(stderr_release(f), 0);
	assert_true(f->dev.stat_broken >= 1);
	assert_int_equal(f->h.nlog, 0);
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
	assert_int_equal(f->h.nlog, 1);
	n = strlen(f->h.log[0].msg);
	assert_int_equal(n, VIO_LOG_MAX - 1);
	assert_memory_equal(f->h.log[0].msg, "virtio: device needs reset: xxx", 31);
	assert_int_equal(f->h.log[0].msg[n - 1], 'x');

	vio_dev_set_log(&f->dev, NULL, NULL);
	vio_log(&f->dev, COREIO_LOG_ERR, "dropped");
	assert_int_equal(f->h.nlog, 1);

	vio_dev_set_log(&f->dev, vio_fake_log_cb, &f->h);
	vio_log(&f->dev, COREIO_LOG_ERR, "back %s %u", "again", 7u);
	assert_int_equal(f->h.nlog, 2);
	assert_string_equal(f->h.log[1].msg, "back again 7");
	assert_int_equal(f->h.log[1].level, COREIO_LOG_ERR);

	assert_int_equal(vio_dev_init(&f->dev, VIO_ID_RNG, 0, 1, 16, &ops, f), 0);
	assert_null(f->dev.log);
	vio_log(&f->dev, COREIO_LOG_ERR, "after init");
	assert_int_equal(f->h.nlog, 2);
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
