/* libFuzzer harness of coreio-vm's fault-injection command parser and rule matcher (inject.c),
 * the text --fault-socket and qtest take from a peer. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "inject.h"

#define MAX_IN (64u << 10)

static struct inject_set set;
static unsigned next_id;

/* A parsed rule keeps the ranges its keys allow. */
static void check_rule(const struct inject_rule *r)
{
	char text[400];
	int n;

	FUZZ_CHECK((unsigned)r->kind < INJECT_NKINDS);
	FUZZ_CHECK(r->dirs >= 1 && r->dirs <= INJECT_DIR_BOTH);
	FUZZ_CHECK(!r->has_off || r->off_lo <= r->off_hi);
	FUZZ_CHECK(!r->has_addr || r->addr_lo <= r->addr_hi);
	FUZZ_CHECK(r->line >= -1 && r->line < INJECT_MAX_LINES);
	FUZZ_CHECK(r->left > 0);
	FUZZ_CHECK(r->kind != INJECT_DELAY ||
		   (r->delay_ms >= 1 && r->delay_ms <= INJECT_DELAY_MAX_MS));
	FUZZ_CHECK(r->hits == 0 && r->seen == 0);
	n = inject_rule_format(r, text, sizeof(text));
	FUZZ_CHECK(n > 0 && (size_t)n < sizeof(text) && strlen(text) == (size_t)n);
}

/* Run one line as vmmio_inject_command() does, then events derived from its bytes. */
static void run_line(char *line)
{
	struct inject_command c;
	char err[200], copy[INJECT_LINE_MAX + 1];
	size_t len = strlen(line);
	bool is_cmd = inject_is_command(line);
	int rc;

	if (len > INJECT_LINE_MAX)
		return; /* the socket refuses it before parsing */
	memcpy(copy, line, len + 1);
	err[0] = '\0';
	rc = inject_command_parse(line, &c, err, sizeof(err));
	FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ENOENT);
	if (rc == -EINVAL)
		FUZZ_CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)));
	if (rc == 0)
		FUZZ_CHECK(is_cmd && c.cmd >= INJECT_CMD_ADD && c.cmd <= INJECT_CMD_STATS);
	if (rc != 0 || c.cmd != INJECT_CMD_ADD) {
		if (rc == 0 && c.cmd == INJECT_CMD_CLEAR)
			inject_clear(&set);
		return;
	}
	check_rule(&c.rule);
	if (inject_add(&set, &c.rule, ++next_id) < 0)
		FUZZ_CHECK(set.n == INJECT_MAX_RULES);
	FUZZ_CHECK(set.n <= INJECT_MAX_RULES);
	/* Events made of the line's bytes: counts only go the documented way. */
	for (size_t i = 0; i + 2 < len; i += 3) {
		struct inject_event ev = {.kind =
					      (enum inject_kind)((uint8_t)copy[i] % INJECT_NKINDS),
					  .write = copy[i + 1] & 1,
					  .where = (uint8_t)copy[i + 2],
					  .line = (uint8_t)copy[i + 1] % INJECT_MAX_LINES};
		uint64_t before = set.hits[ev.kind];
		struct inject_rule *r = inject_match(&set, &ev);

		FUZZ_CHECK(set.hits[ev.kind] == before + (r != NULL));
		FUZZ_CHECK(!r || r->kind == ev.kind);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char buf[MAX_IN + 1];
	size_t n = size < MAX_IN ? size : MAX_IN;
	char *save = NULL;

	memcpy(buf, data, n);
	buf[n] = '\0';
	memset(&set, 0, sizeof(set));
	next_id = 0;
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		run_line(line);
	return 0;
}
