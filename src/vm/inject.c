/* coreio-vm: fault-injection rules (docs/fault-injection.md): parse, match, count, list. */
#include "inject.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const kind_names[INJECT_NKINDS] = {
    [INJECT_BUS_ERROR] = "bus-error", [INJECT_DELAY] = "delay",
    [INJECT_IRQ_DROP] = "irq-drop",   [INJECT_IRQ_REPEAT] = "irq-repeat",
    [INJECT_DMA_FAIL] = "dma-fail",   [INJECT_IOMMU_FAULT] = "iommu-fault",
};

/* The keys each kind takes. */
#define K_DIR	 1u
#define K_OFFSET 2u
#define K_ADDR	 4u
#define K_LINE	 8u
#define K_NTH	 16u
#define K_COUNT	 32u

static const unsigned kind_keys[INJECT_NKINDS] = {
    [INJECT_BUS_ERROR] = K_DIR | K_OFFSET | K_NTH | K_COUNT,
    [INJECT_DELAY] = K_DIR | K_OFFSET | K_NTH | K_COUNT,
    [INJECT_IRQ_DROP] = K_LINE | K_NTH | K_COUNT,
    [INJECT_IRQ_REPEAT] = K_LINE | K_NTH | K_COUNT,
    [INJECT_DMA_FAIL] = K_DIR | K_ADDR | K_NTH | K_COUNT,
    [INJECT_IOMMU_FAULT] = K_DIR | K_ADDR | K_NTH | K_COUNT,
};

const char *inject_kind_name(enum inject_kind kind)
{
	return (unsigned)kind < INJECT_NKINDS ? kind_names[kind] : "?";
}

/* Decimal or 0x hex, no sign, nothing after it, fits 64 bits. */
static bool parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	unsigned base = 10;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!*s)
		return false;
	for (; *s; s++) {
		unsigned d;

		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (base == 16 && (*s | 32) >= 'a' && (*s | 32) <= 'f')
			d = (unsigned)((*s | 32) - 'a' + 10);
		else
			return false;
		if (v > (UINT64_MAX - d) / base)
			return false;
		v = v * base + d;
	}
	*out = v;
	return true;
}

/* "A" or "A-B" with A <= B, into [lo, hi]. */
static bool parse_span(const char *s, uint64_t *lo, uint64_t *hi)
{
	char buf[64];
	const char *dash = strchr(s, '-');
	size_t n = dash ? (size_t)(dash - s) : strlen(s);

	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (!parse_u64(buf, lo))
		return false;
	if (!dash) {
		*hi = *lo;
		return true;
	}
	return parse_u64(dash + 1, hi) && *lo <= *hi;
}

static int fail(char *err, size_t errlen, const char *fmt, const char *word)
{
	if (errlen)
		snprintf(err, errlen, fmt, word);
	return -EINVAL;
}

int inject_rule_parse(char *const *tok, unsigned ntok, struct inject_rule *r, char *err,
		      size_t errlen)
{
	unsigned given = 0;
	bool has_count = false;
	uint64_t v;

	memset(r, 0, sizeof(*r));
	r->line = -1;
	r->dirs = INJECT_DIR_BOTH;
	if (ntok == 0)
		return fail(err, errlen, "missing argument (%s)",
			    "inject RANGE KIND [key=value...]");
	if (strncmp(tok[0], "delay=", 6) == 0) {
		r->kind = INJECT_DELAY;
		if (!parse_u64(tok[0] + 6, &v) || v == 0 || v > INJECT_DELAY_MAX_MS)
			return fail(err, errlen, "bad argument '%s' (delay=MS, 1..60000)", tok[0]);
		r->delay_ms = (unsigned)v;
	} else if (strcmp(tok[0], "delay") == 0) {
		return fail(err, errlen, "bad argument '%s' (delay=MS, 1..60000)", tok[0]);
	} else {
		unsigned k;

		for (k = 0; k < INJECT_NKINDS; k++)
			if (k != INJECT_DELAY && strcmp(tok[0], kind_names[k]) == 0)
				break;
		if (k == INJECT_NKINDS)
			return fail(err, errlen,
				    "unknown rule kind '%s' (bus-error, delay=MS, irq-drop, "
				    "irq-repeat, dma-fail, iommu-fault)",
				    tok[0]);
		r->kind = (enum inject_kind)k;
	}
	for (unsigned i = 1; i < ntok; i++) {
		const char *t = tok[i], *eq = strchr(t, '='), *val;
		unsigned key;

		if (!eq)
			return fail(err, errlen, "bad argument '%s' (key=value expected)", t);
		val = eq + 1;
		if (strncmp(t, "dir=", 4) == 0)
			key = K_DIR;
		else if (strncmp(t, "offset=", 7) == 0)
			key = K_OFFSET;
		else if (strncmp(t, "addr=", 5) == 0)
			key = K_ADDR;
		else if (strncmp(t, "line=", 5) == 0)
			key = K_LINE;
		else if (strncmp(t, "nth=", 4) == 0)
			key = K_NTH;
		else if (strncmp(t, "count=", 6) == 0)
			key = K_COUNT;
		else
			return fail(err, errlen, "bad argument '%s' (unknown key)", t);
		if (!(kind_keys[r->kind] & key))
			return fail(err, errlen, "bad argument '%s' (not a key of this rule kind)",
				    t);
		if (given & key)
			return fail(err, errlen, "bad argument '%s' (given twice)", t);
		given |= key;
		switch (key) {
		case K_DIR:
			if (strcmp(val, "read") == 0)
				r->dirs = INJECT_DIR_READ;
			else if (strcmp(val, "write") == 0)
				r->dirs = INJECT_DIR_WRITE;
			else if (strcmp(val, "both") == 0)
				r->dirs = INJECT_DIR_BOTH;
			else
				return fail(err, errlen,
					    "bad argument '%s' (dir=read, write or both)", t);
			break;
		case K_OFFSET:
			if (!parse_span(val, &r->off_lo, &r->off_hi))
				return fail(err, errlen, "bad argument '%s' (offset=A or A-B)", t);
			r->has_off = true;
			break;
		case K_ADDR:
			if (!parse_span(val, &r->addr_lo, &r->addr_hi))
				return fail(err, errlen, "bad argument '%s' (addr=A or A-B)", t);
			r->has_addr = true;
			break;
		case K_LINE:
			if (!parse_u64(val, &v) || v >= INJECT_MAX_LINES)
				return fail(err, errlen, "bad argument '%s' (line=0..7)", t);
			r->line = (int)v;
			break;
		case K_NTH:
			if (!parse_u64(val, &v) || v == 0)
				return fail(err, errlen, "bad argument '%s' (nth=N, N >= 1)", t);
			r->nth = v;
			break;
		default: /* K_COUNT */
			if (strcmp(val, "all") == 0)
				r->left = INJECT_COUNT_ALL;
			else if (!parse_u64(val, &v) || v == 0 || v == INJECT_COUNT_ALL)
				return fail(err, errlen,
					    "bad argument '%s' (count=K, K >= 1, or all)", t);
			else
				r->left = v;
			has_count = true;
			break;
		}
	}
	if (!has_count) {
		/* Accesses: every one, unless nth= picks one. IRQs and DMA: the next one. */
		bool access = r->kind == INJECT_BUS_ERROR || r->kind == INJECT_DELAY;

		r->left = access && !r->nth ? INJECT_COUNT_ALL : 1;
	}
	return 0;
}

bool inject_is_command(const char *line)
{
	static const char *const words[] = {"inject", "inject_clear", "inject_list",
					    "inject_stats"};

	while (*line == ' ' || *line == '\t' || *line == '\r')
		line++;
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		size_t n = strlen(words[i]);

		if (strncmp(line, words[i], n) == 0 &&
		    (line[n] == '\0' || line[n] == ' ' || line[n] == '\t' || line[n] == '\r'))
			return true;
	}
	return false;
}

int inject_command_parse(char *line, struct inject_command *c, char *err, size_t errlen)
{
	char *t[INJECT_MAX_TOKENS], *save = NULL;
	unsigned n = 0;
	uint64_t g;

	memset(c, 0, sizeof(*c));
	for (char *tok = strtok_r(line, " \t\r", &save); tok;
	     tok = strtok_r(NULL, " \t\r", &save)) {
		if (n == INJECT_MAX_TOKENS)
			return fail(err, errlen, "bad argument '%s' (too many words)", tok);
		t[n++] = tok;
	}
	if (n == 0)
		return -ENOENT;
	if (strcmp(t[0], "inject") == 0)
		c->cmd = INJECT_CMD_ADD;
	else if (strcmp(t[0], "inject_clear") == 0)
		c->cmd = INJECT_CMD_CLEAR;
	else if (strcmp(t[0], "inject_list") == 0)
		c->cmd = INJECT_CMD_LIST;
	else if (strcmp(t[0], "inject_stats") == 0)
		c->cmd = INJECT_CMD_STATS;
	else
		return fail(err, errlen, "unknown command '%s'", t[0]);
	if (c->cmd == INJECT_CMD_ADD && n < 3)
		return fail(err, errlen, "missing argument (%s)",
			    "inject RANGE KIND [key=value...]");
	if (n >= 2) {
		if (!parse_u64(t[1], &g) || g > UINT32_MAX)
			return fail(err, errlen, "bad argument '%s' (a range number)", t[1]);
		c->has_range = true;
		c->range = g;
	}
	if (c->cmd != INJECT_CMD_ADD) {
		if (n > 2)
			return fail(err, errlen, "bad argument '%s' (takes at most a range)", t[2]);
		return 0;
	}
	return inject_rule_parse(t + 2, n - 2, &c->rule, err, errlen);
}

int inject_add(struct inject_set *s, const struct inject_rule *r, unsigned id)
{
	struct inject_rule *slot = NULL;

	if (s->n < INJECT_MAX_RULES) {
		slot = &s->rule[s->n++];
	} else {
		/* Full: drop the oldest rule that ran out, keeping the order. */
		for (unsigned i = 0; i < s->n; i++) {
			if (s->rule[i].left)
				continue;
			memmove(&s->rule[i], &s->rule[i + 1], (s->n - i - 1) * sizeof(s->rule[0]));
			slot = &s->rule[s->n - 1];
			break;
		}
		if (!slot)
			return -ENOSPC;
	}
	*slot = *r;
	slot->id = id;
	slot->seen = 0;
	slot->hits = 0;
	return 0;
}

unsigned inject_clear(struct inject_set *s)
{
	unsigned n = s->n;

	s->n = 0;
	return n;
}

/* True when r's filters take ev. */
static bool filters_match(const struct inject_rule *r, const struct inject_event *ev)
{
	if (r->kind != ev->kind)
		return false;
	switch (ev->kind) {
	case INJECT_IRQ_DROP:
	case INJECT_IRQ_REPEAT:
		return r->line < 0 || r->line == ev->line;
	case INJECT_BUS_ERROR:
	case INJECT_DELAY:
		if (r->has_off && (ev->where < r->off_lo || ev->where > r->off_hi))
			return false;
		break;
	default:
		if (r->has_addr && (ev->where < r->addr_lo || ev->where > r->addr_hi))
			return false;
		break;
	}
	return (r->dirs & (ev->write ? INJECT_DIR_WRITE : INJECT_DIR_READ)) != 0;
}

struct inject_rule *inject_match(struct inject_set *s, const struct inject_event *ev)
{
	struct inject_rule *hit = NULL;

	if ((unsigned)ev->kind >= INJECT_NKINDS)
		return NULL;
	for (unsigned i = 0; i < s->n; i++) {
		struct inject_rule *r = &s->rule[i];

		if (!filters_match(r, ev))
			continue;
		if (r->seen < UINT64_MAX)
			r->seen++;
		if (hit || (r->nth && r->seen < r->nth) || r->left == 0)
			continue;
		if (r->left != INJECT_COUNT_ALL)
			r->left--;
		r->hits++;
		s->hits[ev->kind]++;
		hit = r;
	}
	return hit;
}

int inject_rule_format(const struct inject_rule *r, char *buf, size_t len)
{
	char keys[200], left[24];
	size_t off = 0;
	int n;

#define ADD(...)                                                                                   \
	do {                                                                                       \
		n = snprintf(keys + off, sizeof(keys) - off, __VA_ARGS__);                         \
		if (n > 0 && (size_t)n < sizeof(keys) - off)                                       \
			off += (size_t)n;                                                          \
	} while (0)
	keys[0] = '\0';
	if (r->kind == INJECT_DELAY)
		ADD("=%u", r->delay_ms);
	if ((kind_keys[r->kind] & K_DIR) && r->dirs != INJECT_DIR_BOTH)
		ADD(" dir=%s", r->dirs == INJECT_DIR_READ ? "read" : "write");
	if (r->has_off)
		ADD(" offset=0x%llx-0x%llx", (unsigned long long)r->off_lo,
		    (unsigned long long)r->off_hi);
	if (r->has_addr)
		ADD(" addr=0x%llx-0x%llx", (unsigned long long)r->addr_lo,
		    (unsigned long long)r->addr_hi);
	if (r->line >= 0)
		ADD(" line=%d", r->line);
	if (r->nth)
		ADD(" nth=%llu", (unsigned long long)r->nth);
#undef ADD
	if (r->left == INJECT_COUNT_ALL)
		snprintf(left, sizeof(left), "all");
	else
		snprintf(left, sizeof(left), "%llu", (unsigned long long)r->left);
	return snprintf(buf, len, "#%u %s%s left=%s hits=%llu seen=%llu", r->id,
			inject_kind_name(r->kind), keys, left, (unsigned long long)r->hits,
			(unsigned long long)r->seen);
}

bool inject_log_ok(struct inject_set *s, long long now_ms, uint64_t *quiet)
{
	long long sec = now_ms / 1000;

	if (sec != s->log_sec) {
		s->log_sec = sec;
		s->log_n = 0;
	}
	if (s->log_n >= INJECT_LOG_PER_SEC) {
		s->unlogged++;
		s->unlogged_total++;
		return false;
	}
	s->log_n++;
	*quiet = s->unlogged;
	s->unlogged = 0;
	return true;
}
