/* Unit tests of coreio-vm's fault-injection rules (inject.c): parsing, matching, counts, listing,
 * the log's rate limit. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "inject.h"

/* Parse a command line (copied: the parser writes into it); returns the parser's result. */
static int parse(const char *text, struct inject_command *c, char *err, size_t errlen)
{
	char line[INJECT_LINE_MAX + 1];

	snprintf(line, sizeof(line), "%s", text);
	return inject_command_parse(line, c, err, errlen);
}

static void test_parse_ok(void **state)
{
	struct inject_command c;
	char err[200];

	(void)state;
	assert_int_equal(
	    parse("inject 0 bus-error dir=read offset=0x10 count=1", &c, err, sizeof(err)), 0);
	assert_int_equal(c.cmd, INJECT_CMD_ADD);
	assert_true(c.has_range);
	assert_int_equal(c.range, 0);
	assert_int_equal(c.rule.kind, INJECT_BUS_ERROR);
	assert_int_equal(c.rule.dirs, INJECT_DIR_READ);
	assert_true(c.rule.has_off);
	assert_int_equal(c.rule.off_lo, 0x10);
	assert_int_equal(c.rule.off_hi, 0x10);
	assert_int_equal(c.rule.left, 1);

	assert_int_equal(
	    parse("  inject\t3 delay=50 dir=write offset=4-0x20\r", &c, err, sizeof(err)), 0);
	assert_int_equal(c.range, 3);
	assert_int_equal(c.rule.kind, INJECT_DELAY);
	assert_int_equal(c.rule.delay_ms, 50);
	assert_int_equal(c.rule.off_lo, 4);
	assert_int_equal(c.rule.off_hi, 0x20);
	assert_true(c.rule.left == INJECT_COUNT_ALL); /* accesses: every one by default */

	assert_int_equal(parse("inject 1 irq-drop line=2 count=2", &c, err, sizeof(err)), 0);
	assert_int_equal(c.rule.kind, INJECT_IRQ_DROP);
	assert_int_equal(c.rule.line, 2);
	assert_int_equal(c.rule.left, 2);
	assert_int_equal(parse("inject 1 irq-repeat", &c, err, sizeof(err)), 0);
	assert_int_equal(c.rule.line, -1);
	assert_int_equal(c.rule.left, 1); /* IRQs and DMA: the next one */
	assert_int_equal(
	    parse("inject 0 dma-fail addr=0x1000-0x1fff count=all", &c, err, sizeof(err)), 0);
	assert_true(c.rule.has_addr && c.rule.left == INJECT_COUNT_ALL);
	assert_int_equal(parse("inject 0 iommu-fault dir=write", &c, err, sizeof(err)), 0);
	assert_int_equal(c.rule.kind, INJECT_IOMMU_FAULT);
	assert_int_equal(parse("inject 0 bus-error nth=4", &c, err, sizeof(err)), 0);
	assert_int_equal(c.rule.nth, 4);
	assert_int_equal(c.rule.left, 1); /* nth= picks one */

	assert_int_equal(parse("inject_clear", &c, err, sizeof(err)), 0);
	assert_int_equal(c.cmd, INJECT_CMD_CLEAR);
	assert_false(c.has_range);
	assert_int_equal(parse("inject_list 7", &c, err, sizeof(err)), 0);
	assert_int_equal(c.cmd, INJECT_CMD_LIST);
	assert_int_equal(c.range, 7);
	assert_int_equal(parse("inject_stats", &c, err, sizeof(err)), 0);
	assert_int_equal(c.cmd, INJECT_CMD_STATS);
	assert_int_equal(parse(" \t ", &c, err, sizeof(err)), -ENOENT);
}

static void test_parse_errors(void **state)
{
	static const struct {
		const char *line, *err;
	} cases[] = {
	    {"inject", "missing argument"},
	    {"inject 0", "missing argument"},
	    {"inject zero bus-error", "bad argument 'zero'"},
	    {"inject 0x1ffffffff bus-error", "bad argument '0x1ffffffff'"},
	    {"inject 0 boom", "unknown rule kind 'boom'"},
	    {"inject 0 delay", "bad argument 'delay'"},
	    {"inject 0 delay=0", "bad argument 'delay=0'"},
	    {"inject 0 delay=60001", "bad argument 'delay=60001'"},
	    {"inject 0 delay=5x", "bad argument 'delay=5x'"},
	    {"inject 0 bus-error dir=up", "bad argument 'dir=up'"},
	    {"inject 0 bus-error offset=", "bad argument 'offset='"},
	    {"inject 0 bus-error offset=9-3", "bad argument 'offset=9-3'"},
	    {"inject 0 bus-error offset=1-2-3", "bad argument 'offset=1-2-3'"},
	    {"inject 0 bus-error line=0", "bad argument 'line=0'"},
	    {"inject 0 irq-drop line=8", "bad argument 'line=8'"},
	    {"inject 0 irq-drop dir=read", "bad argument 'dir=read'"},
	    {"inject 0 dma-fail offset=0", "bad argument 'offset=0'"},
	    {"inject 0 bus-error count=0", "bad argument 'count=0'"},
	    {"inject 0 bus-error count=99999999999999999999", "bad argument 'count="},
	    {"inject 0 bus-error nth=0", "bad argument 'nth=0'"},
	    {"inject 0 bus-error dir=read dir=write", "bad argument 'dir=write'"},
	    {"inject 0 bus-error colour=red", "bad argument 'colour=red'"},
	    {"inject 0 bus-error plain", "bad argument 'plain'"},
	    {"inject_clear 0 1", "bad argument '1'"},
	    {"inject_list -1", "bad argument '-1'"},
	    {"injected", "unknown command 'injected'"},
	    {"inject 0 bus-error a=1 b=2 c=3 d=4 e=5 f=6 g=7 h=8 i=9 j=10 k=11 l=12 m=13 n=14",
	     "too many words"},
	};
	struct inject_command c;
	char err[200];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		if (parse(cases[i].line, &c, err, sizeof(err)) != -EINVAL ||
		    !strstr(err, cases[i].err))
			fail_msg("'%s' -> '%s', expected '%s'", cases[i].line, err, cases[i].err);
	}
}

static void test_is_command(void **state)
{
	(void)state;
	assert_true(inject_is_command("inject 0 bus-error"));
	assert_true(inject_is_command("  inject_list"));
	assert_true(inject_is_command("inject_stats\t0"));
	assert_true(inject_is_command("inject_clear"));
	assert_false(inject_is_command("injectx"));
	assert_false(inject_is_command("inject_lists"));
	assert_false(inject_is_command("readl 0"));
	assert_false(inject_is_command(""));
}

/* Add the rule of a command line to s as id. */
static void add(struct inject_set *s, const char *line, unsigned id)
{
	struct inject_command c;
	char err[200];

	if (parse(line, &c, err, sizeof(err)) != 0)
		fail_msg("'%s': %s", line, err);
	assert_int_equal(inject_add(s, &c.rule, id), 0);
}

static const struct inject_rule *match(struct inject_set *s, enum inject_kind kind, bool write,
				       uint64_t where, int line)
{
	struct inject_event ev = {.kind = kind, .write = write, .where = where, .line = line};

	return inject_match(s, &ev);
}

static void test_match_access(void **state)
{
	struct inject_set s = {0};

	(void)state;
	add(&s, "inject 0 bus-error dir=read offset=0x10-0x1f count=2", 1);
	assert_null(match(&s, INJECT_BUS_ERROR, true, 0x10, 0));  /* a write */
	assert_null(match(&s, INJECT_BUS_ERROR, false, 0x20, 0)); /* outside */
	assert_null(match(&s, INJECT_DELAY, false, 0x10, 0));	  /* another kind */
	assert_non_null(match(&s, INJECT_BUS_ERROR, false, 0x1f, 0));
	assert_non_null(match(&s, INJECT_BUS_ERROR, false, 0x10, 0));
	assert_null(match(&s, INJECT_BUS_ERROR, false, 0x10, 0)); /* count=2 ran out */
	assert_int_equal(s.rule[0].hits, 2);
	assert_int_equal(s.rule[0].seen, 3);
	assert_int_equal(s.rule[0].left, 0);
	assert_int_equal(s.hits[INJECT_BUS_ERROR], 2);

	/* nth=3: only the third matching event; non-matching ones do not count. */
	add(&s, "inject 0 delay=5 nth=3 offset=0x100", 2);
	assert_null(match(&s, INJECT_DELAY, true, 0x100, 0));
	assert_null(match(&s, INJECT_DELAY, true, 0x104, 0));
	assert_null(match(&s, INJECT_DELAY, false, 0x100, 0));
	assert_int_equal(match(&s, INJECT_DELAY, true, 0x100, 0)->id, 2);
	assert_null(match(&s, INJECT_DELAY, true, 0x100, 0));

	/* Two rules: the first eligible injects, both count the event. */
	assert_int_equal(inject_clear(&s), 2);
	add(&s, "inject 0 bus-error nth=2", 3);
	add(&s, "inject 0 bus-error", 4);
	assert_int_equal(match(&s, INJECT_BUS_ERROR, false, 0, 0)->id, 4);
	assert_int_equal(match(&s, INJECT_BUS_ERROR, false, 0, 0)->id, 3);
	assert_int_equal(s.rule[1].seen, 2);
	assert_int_equal(s.rule[1].hits, 1);
	assert_int_equal(match(&s, INJECT_BUS_ERROR, false, 0, 0)->id, 4);
	assert_int_equal(s.hits[INJECT_BUS_ERROR], 5); /* counters survive a clear */
}

static void test_match_irq_dma(void **state)
{
	struct inject_set s = {0};

	(void)state;
	add(&s, "inject 0 irq-drop line=1 count=2", 1);
	add(&s, "inject 0 irq-repeat", 2);
	assert_null(match(&s, INJECT_IRQ_DROP, false, 0, 0));
	assert_non_null(match(&s, INJECT_IRQ_DROP, false, 0, 1));
	assert_non_null(match(&s, INJECT_IRQ_DROP, false, 0, 1));
	assert_null(match(&s, INJECT_IRQ_DROP, false, 0, 1));
	assert_int_equal(match(&s, INJECT_IRQ_REPEAT, false, 0, 5)->id, 2);
	assert_null(match(&s, INJECT_IRQ_REPEAT, false, 0, 5));

	add(&s, "inject 0 dma-fail dir=write addr=0x1000-0x1fff count=all", 3);
	add(&s, "inject 0 iommu-fault", 4);
	assert_null(match(&s, INJECT_DMA_FAIL, false, 0x1000, 0));
	assert_null(match(&s, INJECT_DMA_FAIL, true, 0x2000, 0));
	for (int i = 0; i < 5; i++)
		assert_int_equal(match(&s, INJECT_DMA_FAIL, true, 0x1fff, 0)->id, 3);
	assert_int_equal(match(&s, INJECT_IOMMU_FAULT, false, 0x40000000, 0)->id, 4);
	assert_null(match(&s, INJECT_IOMMU_FAULT, false, 0x40000000, 0));
	assert_int_equal(s.hits[INJECT_DMA_FAIL], 5);
	assert_int_equal(s.hits[INJECT_IOMMU_FAULT], 1);
	assert_int_equal(s.hits[INJECT_IRQ_DROP], 2);
}

static void test_full_set(void **state)
{
	struct inject_set s = {0};
	struct inject_command c;
	char err[200];

	(void)state;
	assert_int_equal(parse("inject 0 irq-drop", &c, err, sizeof(err)), 0);
	for (unsigned i = 0; i < INJECT_MAX_RULES; i++)
		assert_int_equal(inject_add(&s, &c.rule, i + 1), 0);
	assert_int_equal(inject_add(&s, &c.rule, 99), -ENOSPC);
	/* A rule that ran out gives its slot; the order stays. */
	assert_non_null(match(&s, INJECT_IRQ_DROP, false, 0, 0));
	assert_int_equal(s.rule[0].left, 0);
	assert_int_equal(inject_add(&s, &c.rule, 99), 0);
	assert_int_equal(s.n, INJECT_MAX_RULES);
	assert_int_equal(s.rule[0].id, 2);
	assert_int_equal(s.rule[INJECT_MAX_RULES - 1].id, 99);
}

static void test_format(void **state)
{
	struct inject_set s = {0};
	char buf[200];

	(void)state;
	add(&s, "inject 0 bus-error dir=read offset=0x10 count=3", 7);
	match(&s, INJECT_BUS_ERROR, false, 0x10, 0);
	inject_rule_format(&s.rule[0], buf, sizeof(buf));
	assert_string_equal(buf, "#7 bus-error dir=read offset=0x10-0x10 left=2 hits=1 seen=1");
	add(&s, "inject 0 delay=50 nth=2", 8);
	inject_rule_format(&s.rule[1], buf, sizeof(buf));
	assert_string_equal(buf, "#8 delay=50 nth=2 left=1 hits=0 seen=0");
	add(&s, "inject 0 dma-fail addr=0x1000 count=all", 9);
	inject_rule_format(&s.rule[2], buf, sizeof(buf));
	assert_string_equal(buf, "#9 dma-fail addr=0x1000-0x1000 left=all hits=0 seen=0");
	add(&s, "inject 0 irq-repeat line=3", 10);
	inject_rule_format(&s.rule[3], buf, sizeof(buf));
	assert_string_equal(buf, "#10 irq-repeat line=3 left=1 hits=0 seen=0");
	/* Truncation is safe. */
	assert_true(inject_rule_format(&s.rule[0], buf, 5) > 5);
	assert_string_equal(buf, "#7 b");
	assert_string_equal(inject_kind_name(INJECT_NKINDS), "?");
}

static void test_log_rate(void **state)
{
	struct inject_set s = {0};
	uint64_t quiet = 99;
	unsigned ok = 0;

	(void)state;
	for (int i = 0; i < 20; i++)
		ok += inject_log_ok(&s, 5000 + i, &quiet);
	assert_int_equal(ok, INJECT_LOG_PER_SEC);
	assert_int_equal(s.unlogged, 20 - INJECT_LOG_PER_SEC);
	/* The next second: the first line tells how many were not logged. */
	assert_true(inject_log_ok(&s, 6000, &quiet));
	assert_int_equal(quiet, 20 - INJECT_LOG_PER_SEC);
	assert_true(inject_log_ok(&s, 6001, &quiet));
	assert_int_equal(quiet, 0);
	assert_int_equal(s.unlogged_total, 20 - INJECT_LOG_PER_SEC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_ok),	  cmocka_unit_test(test_parse_errors),
	    cmocka_unit_test(test_is_command),	  cmocka_unit_test(test_match_access),
	    cmocka_unit_test(test_match_irq_dma), cmocka_unit_test(test_full_set),
	    cmocka_unit_test(test_format),	  cmocka_unit_test(test_log_rate),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
