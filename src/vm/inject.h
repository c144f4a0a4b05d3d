/* coreio-vm: fault-injection rules (docs/fault-injection.md): parse, match, count, list. */
#ifndef COREIO_VM_INJECT_H
#define COREIO_VM_INJECT_H

/*
 * Pure bookkeeping, no I/O and no locks: the vMMIO service keeps one
 * struct inject_set per range under the VM lock and applies what
 * inject_match() finds (vmmio_inject.c); tests/fuzz/fuzz_inject.c compiles
 * this file alone.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INJECT_MAX_RULES    16	       /* rules of one range at once */
#define INJECT_LINE_MAX	    512	       /* a command line, without its newline */
#define INJECT_MAX_TOKENS   16	       /* words of a command */
#define INJECT_LOG_PER_SEC  5	       /* log lines per second per range; the rest are counted */
#define INJECT_DELAY_MAX_MS 60000      /* delay=MS upper bound */
#define INJECT_COUNT_ALL    UINT64_MAX /* count=all: never runs out */
#define INJECT_MAX_LINES    8	       /* line=I: an IRQ index of the range, 0..7 */

/* What a rule does (its first word). */
enum inject_kind {
	INJECT_BUS_ERROR = 0, /* a guest access completes as a bus error, never sent */
	INJECT_DELAY,	      /* a guest access is sent delay_ms late */
	INJECT_IRQ_DROP,      /* a client's raise of a line never reaches the guest */
	INJECT_IRQ_REPEAT,    /* a client's raise reaches the guest twice (raise, lower, raise) */
	INJECT_DMA_FAIL,      /* a client's DMA piece is answered with the error bit */
	INJECT_IOMMU_FAULT,   /* a client's DMA piece with mid > 0 is an IOMMU fault */
	INJECT_NKINDS,
};

#define INJECT_DIR_READ	 1u /* a guest read; a DMA that reads guest memory (dma_read) */
#define INJECT_DIR_WRITE 2u /* a guest write; a DMA that writes guest memory (dma_write) */
#define INJECT_DIR_BOTH	 3u

/* One rule. Offsets and addresses are inclusive ranges [lo, hi]. */
struct inject_rule {
	unsigned id; /* set by the service when added (1, 2, ...) */
	enum inject_kind kind;
	unsigned dirs; /* INJECT_DIR_* bits */
	bool has_off;  /* offset=A[-B]: the access's first byte, from the range's start */
	uint64_t off_lo, off_hi;
	bool has_addr; /* addr=A[-B]: the DMA piece's address (an IOVA for mid > 0) */
	uint64_t addr_lo, addr_hi;
	int line;	   /* line=I: the range's IRQ index, or -1 for any */
	unsigned delay_ms; /* INJECT_DELAY */
	uint64_t nth;	   /* nth=N: the first N-1 matching events pass; 0: none */
	uint64_t left;	   /* injections left; INJECT_COUNT_ALL: unlimited */
	uint64_t seen;	   /* events its filters matched */
	uint64_t hits;	   /* faults it injected */
};

/* The rules and counters of one range. */
struct inject_set {
	struct inject_rule rule[INJECT_MAX_RULES];
	unsigned n;
	uint64_t hits[INJECT_NKINDS]; /* every fault injected, by kind, since start */
	/* The rate limit of the log lines (inject_log_ok()). */
	long long log_sec;
	unsigned log_n;
	uint64_t unlogged; /* not logged since the last logged line */
	uint64_t unlogged_total;
};

/* An event a rule may match. */
struct inject_event {
	enum inject_kind kind;
	bool write;	/* guest write / DMA writing guest memory */
	uint64_t where; /* access: the offset in the range; DMA: the address */
	int line;	/* IRQ: the range's IRQ index */
};

/* The commands (the same words on qtest and --fault-socket). */
enum inject_cmd {
	INJECT_CMD_ADD = 1, /* inject RANGE RULE... */
	INJECT_CMD_CLEAR,   /* inject_clear [RANGE] */
	INJECT_CMD_LIST,    /* inject_list [RANGE] */
	INJECT_CMD_STATS,   /* inject_stats [RANGE] */
};

/* A parsed command. */
struct inject_command {
	enum inject_cmd cmd;
	bool has_range;
	uint64_t range;
	struct inject_rule rule; /* INJECT_CMD_ADD */
};

/* The name of kind as written in rules ("bus-error", ...), or "?" for another value. */
const char *inject_kind_name(enum inject_kind kind);

/*
 * True when line (NUL-terminated, not modified) starts with one of the
 * command words (inject, inject_clear, inject_list, inject_stats) followed by
 * a blank or the end.
 */
bool inject_is_command(const char *line);

/*
 * Parse the words of a rule (after RANGE): KIND [key=value...]. KIND is
 * bus-error, delay=MS, irq-drop, irq-repeat, dma-fail or iommu-fault; keys
 * dir=read|write|both, offset=A[-B], addr=A[-B], line=I, nth=N,
 * count=K|all, each at most once and only where the kind uses it.
 *   r    receives the rule (id, seen and hits 0)
 *   err  on failure, the reason naming the bad word ("bad argument 'x'")
 * Returns 0 or -EINVAL.
 */
int inject_rule_parse(char *const *tok, unsigned ntok, struct inject_rule *r, char *err,
		      size_t errlen);

/*
 * Parse one command line (modified in place: split at blanks, tabs, CRs).
 *   err  on failure, the reason naming the bad word
 * Returns 0, -ENOENT for an empty line (no answer is due), -EINVAL.
 */
int inject_command_parse(char *line, struct inject_command *c, char *err, size_t errlen);

/*
 * Add r to s as rule id (its seen and hits cleared). A rule that ran out
 * (left 0) gives its slot when s is full. Returns 0 or -ENOSPC.
 */
int inject_add(struct inject_set *s, const struct inject_rule *r, unsigned id);

/* Remove every rule of s (the counters stay). Returns how many there were. */
unsigned inject_clear(struct inject_set *s);

/*
 * Match ev against s: every rule of ev's kind whose filters match counts
 * it (seen); the first of them (in the order added) past its nth= with
 * injections left injects: its left goes down (unless unlimited), its hits
 * and s->hits[kind] up. Returns that rule, or NULL (nothing to inject).
 */
struct inject_rule *inject_match(struct inject_set *s, const struct inject_event *ev);

/*
 * Write r as a rule line ("#ID KIND keys... left=K|all hits=H seen=S") into
 * buf (always NUL-terminated when len > 0). Returns the length it needed,
 * as snprintf().
 */
int inject_rule_format(const struct inject_rule *r, char *buf, size_t len);

/*
 * The rate limit of the log of s at time now_ms: true when a line may be
 * printed (at most INJECT_LOG_PER_SEC per second), with *quiet set to the
 * faults not logged since the last line printed (then cleared); false when
 * this one is only counted.
 */
bool inject_log_ok(struct inject_set *s, long long now_ms, uint64_t *quiet);

#endif
