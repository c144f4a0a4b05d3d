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

static void test_late_answer_within_max_spins_fully(void **state)
{
	(void)state;
	assert_int_equal(vmmio_poll_window(10 * US, 100 * US, MAX), MAX);
	assert_int_equal(vmmio_poll_window(0, 1 * US, MAX), MAX);
	assert_int_equal(vmmio_poll_window(10 * US, MAX, MAX), MAX);
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
	/* Below the minimum a halved spin stops at once. */
	assert_int_equal(vmmio_poll_window(VMMIO_SPIN_MIN_NS, MAX + 1, MAX), 0);
	/* Spinning off and still slow: it stays off. */
	assert_int_equal(vmmio_poll_window(0, 10 * MAX, MAX), 0);
	/* One answer within max brings it back in full. */
	assert_int_equal(vmmio_poll_window(0, 40 * US, MAX), MAX);
}

static void test_huge_wait_no_overflow(void **state)
{
	(void)state;
	assert_int_equal(vmmio_poll_window(MAX, UINT64_MAX, MAX), MAX / 2);
	assert_int_equal(vmmio_poll_window(0, UINT64_MAX, UINT32_MAX), 0);
	assert_int_equal(vmmio_poll_window(0, (uint64_t)UINT32_MAX + 1, UINT32_MAX), 0);
	assert_int_equal(vmmio_poll_window(0, UINT32_MAX, UINT32_MAX), UINT32_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_answer_while_spinning_keeps_window),
	    cmocka_unit_test(test_late_answer_within_max_spins_fully),
	    cmocka_unit_test(test_slow_answers_halve_then_stop),
	    cmocka_unit_test(test_huge_wait_no_overflow),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
