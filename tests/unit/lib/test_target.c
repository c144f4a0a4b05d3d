/* Unit tests of libcoreio's target parsing and its environment fallback. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "target.h"

static void expect_tcp(const char *s, const char *host, unsigned port)
{
	struct coreio__target t;

	assert_int_equal(coreio__target_parse(s, &t), 0);
	assert_int_equal(t.kind, COREIO__TARGET_TCP);
	assert_string_equal(t.host, host);
	assert_int_equal(t.port, port);
	assert_false(t.tls);
}

static void test_good(void **state)
{
	struct coreio__target t;

	(void)state;
	expect_tcp("127.0.0.1:4300", "127.0.0.1", 4300);
	expect_tcp("localhost", "localhost", 4800);
	expect_tcp("vm.example:1", "vm.example", 1);
	expect_tcp("host:65535", "host", 65535);
	expect_tcp("[::1]:4301", "::1", 4301);
	expect_tcp("[fe80::1%lo]", "fe80::1%lo", 4800);
	expect_tcp("::1", "::1", 4800);
	assert_int_equal(coreio__target_parse("unix:/tmp/vm.sock", &t), 0);
	assert_int_equal(t.kind, COREIO__TARGET_UNIX);
	assert_string_equal(t.path, "/tmp/vm.sock");
	assert_int_equal(coreio__target_parse("unix:rel/path", &t), 0);
	assert_string_equal(t.path, "rel/path");
}

static void test_tls(void **state)
{
	struct coreio__target t;

	(void)state;
	assert_int_equal(coreio__target_parse("tls:127.0.0.1:4300", &t), 0);
	assert_int_equal(t.kind, COREIO__TARGET_TCP);
	assert_true(t.tls);
	assert_string_equal(t.host, "127.0.0.1");
	assert_int_equal(t.port, 4300);
	assert_int_equal(coreio__target_parse("tls:[::1]", &t), 0);
	assert_true(t.tls);
	assert_string_equal(t.host, "::1");
	assert_int_equal(t.port, 4800);
	assert_int_equal(coreio__target_parse("tls:unix:/tmp/s", &t), -EINVAL);
	assert_int_equal(coreio__target_parse("tls:", &t), -EINVAL);
	assert_int_equal(coreio__target_parse("tls:tls:h:1", &t), -EINVAL);
	assert_int_equal(coreio__target_parse("tls:h:0", &t), -EINVAL);
	assert_false(t.tls);
	/* COREIO_TLS=on makes a plain TCP target (given or from COREIO_VM) a TLS one. */
	unsetenv("COREIO_TLS");
	assert_int_equal(coreio__target_get("h:1", &t), 0);
	assert_false(t.tls);
	setenv("COREIO_TLS", "on", 1);
	assert_int_equal(coreio__target_get("h:1", &t), 0);
	assert_true(t.tls);
	setenv("COREIO_VM", "vm:2", 1);
	assert_int_equal(coreio__target_get(NULL, &t), 0);
	assert_true(t.tls);
	assert_int_equal(coreio__target_get("unix:/x", &t), 0);
	assert_false(t.tls);
	setenv("COREIO_TLS", "off", 1);
	assert_int_equal(coreio__target_get("h:1", &t), 0);
	assert_false(t.tls);
	unsetenv("COREIO_TLS");
	unsetenv("COREIO_VM");
}

static void test_bad(void **state)
{
	static const char *const bad[] = {
	    "",		 ":4800",   "host:",	"host:0",      "host:65536", "host:99999",
	    "host:12ab", "host:-1", "host: 80", "[::1",	       "[::1]x",     "[::1]:",
	    "[]:80",	 "[::1]:0", "unix:",	"host:123456",
	};
	struct coreio__target t;
	char longpath[300], longhost[300];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (coreio__target_parse(bad[i], &t) != -EINVAL)
			fail_msg("target \"%s\" was accepted", bad[i]);
	}
	memcpy(longpath, "unix:/", 6);
	memset(longpath + 6, 'a', sizeof(longpath) - 7);
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(coreio__target_parse(longpath, &t), -EINVAL);
	/* The longest path that fits: sun_path minus the NUL. */
	memset(longpath + 5, 'b', sizeof(t.path) - 1);
	longpath[5 + sizeof(t.path) - 1] = '\0';
	assert_int_equal(coreio__target_parse(longpath, &t), 0);
	longpath[5 + sizeof(t.path) - 1] = 'c';
	longpath[5 + sizeof(t.path)] = '\0';
	assert_int_equal(coreio__target_parse(longpath, &t), -EINVAL);
	memset(longhost, 'h', sizeof(longhost) - 1);
	longhost[sizeof(longhost) - 1] = '\0';
	assert_int_equal(coreio__target_parse(longhost, &t), -EINVAL);
	assert_int_equal(coreio__target_parse(NULL, &t), -EINVAL);
}

static void test_env(void **state)
{
	struct coreio__target t;

	(void)state;
	unsetenv("COREIO_VM");
	unsetenv("COREHDL_VM");
	assert_int_equal(coreio__target_get(NULL, &t), -EINVAL);
	setenv("COREHDL_VM", "old:1234", 1);
	assert_int_equal(coreio__target_get(NULL, &t), 0);
	assert_string_equal(t.host, "old");
	assert_int_equal(t.port, 1234);
	setenv("COREIO_VM", "unix:/run/new", 1);
	assert_int_equal(coreio__target_get(NULL, &t), 0);
	assert_int_equal(t.kind, COREIO__TARGET_UNIX);
	assert_string_equal(t.path, "/run/new");
	setenv("COREIO_VM", "", 1);
	assert_int_equal(coreio__target_get(NULL, &t), 0);
	assert_string_equal(t.host, "old");
	/* An explicit target wins over the environment. */
	assert_int_equal(coreio__target_get("given:77", &t), 0);
	assert_string_equal(t.host, "given");
	setenv("COREIO_VM", "bad:port", 1);
	assert_int_equal(coreio__target_get(NULL, &t), -EINVAL);
	unsetenv("COREIO_VM");
	unsetenv("COREHDL_VM");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),
	    cmocka_unit_test(test_bad),
	    cmocka_unit_test(test_env),
	    cmocka_unit_test(test_tls),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
