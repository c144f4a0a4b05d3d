/* Unit tests of the adaptive spin of a vCPU waiting for a client (vmmio_poll_window()). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "vmmio.h"

#define US  1000u
#define MAX (200 * US)

static void test_answer_while_spinning_keeps_window(void **state)
{
	(void)state;
	assert_int_equal(vmmio_poll_window(80 * US, 30 * US, MAX), 80 * US);
	assert_int_equal(vmmio_poll_window(80 * US, 80 * US, MAX), 80 * US);
	assert_int_equal(vmmio_poll_window(MAX, 1, MAX), MAX);
}

static void test_late_answer_grows_to_cover_it(void **state)
{
	(void)state;
	/* 100 us waited: a quarter more. */
	assert_int_equal(vmmio_poll_window(10 * US, 100 * US, MAX), 125 * US);
	/* Never below the minimum, even from 0. */
	assert_int_equal(vmmio_poll_window(0, 1 * US, MAX), VMMIO_SPIN_MIN_NS);
	/* Capped at max. */
	assert_int_equal(vmmio_poll_window(10 * US, 190 * US, MAX), MAX);
	assert_int_equal(vmmio_poll_window(10 * US, MAX, MAX), MAX);
	/* A small max caps the minimum too. */
	assert_int_equal(vmmio_poll_window(0, 4 * US, 5 * US), 5 * US);
}

static void test_slow_answers_halve_then_stop(void **state)
{
	unsigned w = MAX;
	int n = 0;

	(void)state;
	assert_int_equal(vmmio_poll_window(MAX, MAX + 1, MAX), MAX / 2);
	/* A run of slow answers stops the spinning within a few waits. */
	while (w && n < 100) {
		w = vmmio_poll_window(w, 10 * MAX, MAX);
		n++;
	}
	assert_int_equal(w, 0);
	assert_true(n <= 5);
	/* Spinning off and still slow: it stays off. */
	assert_int_equal(vmmio_poll_window(0, 10 * MAX, MAX), 0);
	/* One fast answer later brings it back. */
	assert_int_equal(vmmio_poll_window(0, 40 * US, MAX), 50 * US);
}

static void test_huge_wait_no_overflow(void **state)
{
	(void)state;
	assert_int_equal(vmmio_poll_window(MAX, UINT64_MAX, MAX), MAX / 2);
	assert_int_equal(vmmio_poll_window(0, UINT64_MAX, UINT32_MAX), 0);
	assert_int_equal(vmmio_poll_window(0, UINT64_MAX / 2, UINT32_MAX), 0);
	assert_int_equal(vmmio_poll_window(0, (uint64_t)UINT32_MAX - 1, UINT32_MAX), UINT32_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_answer_while_spinning_keeps_window),
	    cmocka_unit_test(test_late_answer_grows_to_cover_it),
	    cmocka_unit_test(test_slow_answers_halve_then_stop),
	    cmocka_unit_test(test_huge_wait_no_overflow),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
