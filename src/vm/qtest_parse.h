/* coreio-vm: the qtest command-line parser (tokens, command, arity, hex bytes), shared with its
 * fuzz harness. */
#ifndef COREIO_VM_QTEST_PARSE_H
#define COREIO_VM_QTEST_PARSE_H

/*
 * Header-only so that tests/fuzz/fuzz_qtest.c compiles exactly the code
 * qtest.c runs, without the rest of the VM.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define QTEST_MAX_TOKENS 8 /* a command and its arguments */

/* One command: its name, how many arguments it takes, and its access size (readb..writeq). */
struct qtest_cmd_spec {
	const char *name;
	unsigned nargs;
	unsigned size; /* readb.. / writeb..: 1, 2, 4 or 8; else 0 */
};

/* The commands, in the order of qtest.c's handler table. */
static const struct qtest_cmd_spec qtest_cmd_specs[] = {
    {"readb", 1, 1},	  {"readw", 1, 2},	{"readl", 1, 4},
    {"readq", 1, 8},	  {"writeb", 2, 1},	{"writew", 2, 2},
    {"writel", 2, 4},	  {"writeq", 2, 8},	{"read", 2, 0},
    {"write", 3, 0},	  {"memset", 3, 0},	{"readp", 2, 0},
    {"writep", 4, 0},	  {"writem", 4, 0},	{"irq_intercept_in", 1, 0},
    {"irq_level", 1, 0},  {"vmmio_wait", 2, 0}, {"vmmio_info", 1, 0},
    {"flags", 1, 0},	  {"reset", 0, 0},	{"stats", 0, 0},
    {"bench_read", 3, 0},
};

#define QTEST_NCMDS (sizeof(qtest_cmd_specs) / sizeof(qtest_cmd_specs[0]))

/* What qtest_parse_line() found. */
enum qtest_parse {
	QTEST_PARSE_OK = 0,  /* *cmd is the command, t[0..n) its tokens */
	QTEST_PARSE_EMPTY,   /* no token: not a command */
	QTEST_PARSE_BAD,     /* *bad: a token too many ("FAIL bad argument '...'") */
	QTEST_PARSE_MISSING, /* *cmd lacks arguments ("FAIL missing argument ...") */
	QTEST_PARSE_UNKNOWN, /* t[0] names no command ("FAIL unknown command '...'") */
};

/*
 * Split line (modified in place) into tokens separated by blanks, tabs and
 * CRs, and find its command.
 *   t    receives the tokens (room for QTEST_MAX_TOKENS + 1; t[n] stays as
 *        the caller set it), n their number
 *   cmd  the index in qtest_cmd_specs (OK, MISSING)
 *   bad  the offending token (BAD)
 * Returns an enum qtest_parse; no errors beyond those.
 */
static inline enum qtest_parse qtest_parse_line(char *line, char **t, unsigned *n, int *cmd,
						char **bad)
{
	char *save = NULL;

	*n = 0;
	for (char *tok = strtok_r(line, " \t\r", &save); tok;
	     tok = strtok_r(NULL, " \t\r", &save)) {
		if (*n == QTEST_MAX_TOKENS) {
			*bad = tok;
			return QTEST_PARSE_BAD;
		}
		t[(*n)++] = tok;
	}
	if (*n == 0)
		return QTEST_PARSE_EMPTY;
	for (size_t i = 0; i < QTEST_NCMDS; i++) {
		const struct qtest_cmd_spec *c = &qtest_cmd_specs[i];

		if (strcmp(t[0], c->name) != 0)
			continue;
		*cmd = (int)i;
		if (*n - 1 < c->nargs)
			return QTEST_PARSE_MISSING;
		if (*n - 1 > c->nargs) {
			*bad = t[c->nargs + 1];
			return QTEST_PARSE_BAD;
		}
		return QTEST_PARSE_OK;
	}
	return QTEST_PARSE_UNKNOWN;
}

/* The value of one hex digit, or -1. */
static inline int qtest_hexdigit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if ((c | 32) >= 'a' && (c | 32) <= 'f')
		return (c | 32) - 'a' + 10;
	return -1;
}

/*
 * Decode "0xHEX" (0x optional) of exactly n bytes into out (room for n).
 * Returns false when s is not 2 * n hex digits.
 */
static inline bool qtest_hexbytes(const char *s, uint8_t *out, uint64_t n)
{
	size_t len;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		s += 2;
	len = strlen(s);
	if (len / 2 != n || len % 2)
		return false;
	for (uint64_t i = 0; i < n; i++) {
		int hi = qtest_hexdigit(s[2 * i]), lo = qtest_hexdigit(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

#endif
