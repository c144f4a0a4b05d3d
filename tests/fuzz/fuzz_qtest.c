/* libFuzzer harness of coreio-vm's qtest command parser (qtest_parse.h): tokens, command lookup,
 * arity, hex bytes. */
#include <stdbool.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"
#include "qtest_parse.h"

#define MAX_IN	(64u << 10)
#define MAX_HEX 4096u

/* A token is non-empty, inside the line and free of separators. */
static void check_token(const char *t, const char *line, size_t len)
{
	FUZZ_CHECK(t >= line && t < line + len);
	FUZZ_CHECK(t[0] != '\0');
	FUZZ_CHECK(strpbrk(t, " \t\r") == NULL);
}

/* The hex decoder takes exactly 2 * n hex digits (after an optional 0x) and decodes them. */
static void check_hex(const char *t)
{
	static uint8_t out[MAX_HEX];
	const char *h = (t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) ? t + 2 : t;
	size_t hl = strlen(h), n = hl / 2;

	if (n > MAX_HEX)
		return;
	if (qtest_hexbytes(t, out, n)) {
		FUZZ_CHECK(hl % 2 == 0);
		for (size_t i = 0; i < n; i++)
			FUZZ_CHECK(qtest_hexdigit(h[2 * i]) << 4 == (out[i] & 0xf0) &&
				   qtest_hexdigit(h[2 * i + 1]) == (out[i] & 0x0f));
	} else {
		bool all_hex = hl % 2 == 0;

		for (size_t i = 0; all_hex && i < hl; i++)
			all_hex = qtest_hexdigit(h[i]) >= 0;
		FUZZ_CHECK(!all_hex);
	}
	/* Another length is always refused. */
	FUZZ_CHECK(n + 1 > MAX_HEX || !qtest_hexbytes(t, out, n + 1));
}

/* Run one line through the parser the way qtest.c's exec_line() does. */
static void run_line(char *line)
{
	size_t len = strlen(line);
	char *t[QTEST_MAX_TOKENS + 1] = {0}, *bad = NULL;
	unsigned n = 0;
	int cmd = -1;
	uint64_t v;

	switch (qtest_parse_line(line, t, &n, &cmd, &bad)) {
	case QTEST_PARSE_EMPTY:
		FUZZ_CHECK(n == 0);
		return;
	case QTEST_PARSE_BAD:
		check_token(bad, line, len);
		return;
	case QTEST_PARSE_UNKNOWN:
		FUZZ_CHECK(n >= 1 && n <= QTEST_MAX_TOKENS);
		for (size_t i = 0; i < QTEST_NCMDS; i++)
			FUZZ_CHECK(strcmp(t[0], qtest_cmd_specs[i].name) != 0);
		return;
	case QTEST_PARSE_MISSING:
		FUZZ_CHECK(cmd >= 0 && (size_t)cmd < QTEST_NCMDS);
		FUZZ_CHECK(n - 1 < qtest_cmd_specs[cmd].nargs);
		return;
	case QTEST_PARSE_OK:
		break;
	}
	FUZZ_CHECK(cmd >= 0 && (size_t)cmd < QTEST_NCMDS);
	FUZZ_CHECK(n == qtest_cmd_specs[cmd].nargs + 1 && t[n] == NULL);
	FUZZ_CHECK(strcmp(t[0], qtest_cmd_specs[cmd].name) == 0);
	for (unsigned i = 0; i < n; i++)
		check_token(t[i], line, len);
	/* The arguments go through the parsers the commands use. */
	for (unsigned i = 1; i < n; i++) {
		if (config_parse_u64(t[i], &v) == 0)
			FUZZ_CHECK(t[i][0] != '\0');
		check_hex(t[i]);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char buf[MAX_IN + 1];
	size_t n = size < MAX_IN ? size : MAX_IN;
	char *save = NULL;

	memcpy(buf, data, n);
	buf[n] = '\0';
	/* A script: one command a line, as qtest reads it. */
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		run_line(line);
	return 0;
}
