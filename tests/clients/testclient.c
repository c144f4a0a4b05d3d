/* coreio-testclient: a scriptable CoreIO client that the pytest integration suite drives on stdin.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include "coreio.h"

/*
 * Protocol on stdin/stdout: one command a line; every command gets exactly
 * one answer line, "OK ..." or "ERR <negative errno> ...". Asynchronous
 * events (MMIO callbacks when logging is on, resets, disconnects) are lines
 * starting with "EV ". The first line printed is the answer to connecting:
 * "OK connected caps=N" or "ERR <errno> connect ..." (then the program exits
 * with status 1).
 */

#define TC_RANGES     8
#define TC_MEM	      65536u
#define TC_MAX_FAIL   16
#define TC_MAX_DMA    (64u << 20)
#define TC_LINE_MAX   (1u << 20)
#define TC_MAX_HEXLOG 64u

struct tc_dmacb {
	bool armed;
	uint64_t off;
	unsigned mid, sid;
	uint64_t addr;
	size_t len;
};

struct tc_range {
	unsigned rid;
	bool registered;
	uint8_t mem[TC_MEM];
	uint64_t fail[TC_MAX_FAIL];
	int nfail;
	bool stall_on;
	uint64_t stall;
	struct tc_dmacb dmacb;
	bool irqw_on; /* irq_on_write: a write touching irqw_off pulses line irqw_iid */
	uint64_t irqw_off;
	unsigned irqw_iid;
};

static struct tc_range tc_ranges[TC_RANGES];
static bool tc_log;
static bool tc_connected;

static uint64_t tc_fnv(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void tc_hex(FILE *f, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%02x", p[i]);
}

/* True if the access [off, off + len) touches byte x. */
static bool tc_touches(uint64_t off, size_t len, uint64_t x)
{
	return x >= off && x - off < len;
}

static bool tc_failing(const struct tc_range *r, uint64_t off, size_t len)
{
	for (int i = 0; i < r->nfail; i++)
		if (tc_touches(off, len, r->fail[i]))
			return true;
	return false;
}

static void tc_copy_out(const struct tc_range *r, uint64_t off, size_t len, uint8_t *out)
{
	for (size_t i = 0; i < len; i++)
		out[i] = off + i < TC_MEM ? r->mem[off + i] : 0;
}

static void tc_copy_in(struct tc_range *r, uint64_t off, size_t len, const uint8_t *in)
{
	for (size_t i = 0; i < len; i++)
		if (off + i < TC_MEM)
			r->mem[off + i] = in[i];
}

static void tc_event(const char *what, const struct tc_range *r, uint64_t addr, size_t len,
		     const uint8_t *d1, const uint8_t *d2, bool failed, unsigned flags)
{
	if (!tc_log)
		return;
	printf("EV %s %u 0x%" PRIx64 " %zu ", what, r->rid, addr, len);
	if (failed) {
		printf("fail");
	} else {
		tc_hex(stdout, d1, len);
		if (d2)
			tc_hex(stdout, d2, len);
	}
	printf(" %u\n", flags);
	fflush(stdout);
}

/* A read of the stall offset never returns: the test kills the program. */
static void tc_maybe_stall(const struct tc_range *r, uint64_t addr, uint64_t off, size_t len)
{
	if (!r->stall_on || !tc_touches(off, len, r->stall))
		return;
	printf("EV stall %u 0x%" PRIx64 "\n", r->rid, addr);
	fflush(stdout);
	for (;;)
		pause();
}

/* The armed dma_in_cb: a blocking DMA read from inside the callback. */
static int tc_dma_in_cb(struct tc_range *r, uint64_t addr, size_t len, uint8_t *out)
{
	struct tc_dmacb *c = &r->dmacb;
	uint8_t *tmp;
	int rc;

	c->armed = false;
	tmp = calloc(1, c->len ? c->len : 1);
	if (!tmp)
		return 1;
	rc = coreio_dma_read(c->mid, c->sid, c->addr, c->len, tmp, 0, NULL, NULL);
	printf("EV dmacb %u %d %016" PRIx64 "\n", r->rid, rc, tc_fnv(tmp, c->len));
	fflush(stdout);
	memset(out, 0, len);
	if (!rc) {
		size_t n = c->len < len ? c->len : len;

		memcpy(out, tmp, n < 8 ? n : 8);
	}
	free(tmp);
	tc_event("read", r, addr, len, out, NULL, rc != 0, 0);
	return rc ? 1 : 0;
}

static int tc_read(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	struct tc_range *r = priv;
	uint64_t off = addr & (TC_MEM - 1);

	tc_maybe_stall(r, addr, off, len);
	if (r->dmacb.armed && tc_touches(off, len, r->dmacb.off))
		return tc_dma_in_cb(r, addr, len, buf);
	if (tc_failing(r, off, len)) {
		tc_event("read", r, addr, len, NULL, NULL, true, flags);
		return 1;
	}
	tc_copy_out(r, off, len, buf);
	tc_event("read", r, addr, len, buf, NULL, false, flags);
	return 0;
}

/* The armed irq_on_write: a write touching the doorbell raises the line and lowers it again. */
static int tc_irq_pulse(const struct tc_range *r, uint64_t off, size_t len)
{
	if (!r->irqw_on || !tc_touches(off, len, r->irqw_off))
		return 0;
	if (coreio_irq_update(r->rid, r->irqw_iid, 1) || coreio_irq_update(r->rid, r->irqw_iid, 0))
		return 1;
	return 0;
}

static int tc_write(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	struct tc_range *r = priv;
	uint64_t off = addr & (TC_MEM - 1);

	if (tc_failing(r, off, len)) {
		tc_event("write", r, addr, len, NULL, NULL, true, flags);
		return 1;
	}
	tc_copy_in(r, off, len, buf);
	tc_event("write", r, addr, len, buf, NULL, false, flags);
	return tc_irq_pulse(r, off, len);
}

/* Pair callbacks: the two elements are consecutive, like a load/store pair. */
static int tc_readp(void *priv, uint64_t addr, size_t len, void *buf1, void *buf2, unsigned flags)
{
	struct tc_range *r = priv;
	uint64_t off = addr & (TC_MEM - 1);

	if (tc_failing(r, off, 2 * len)) {
		tc_event("readp", r, addr, len, NULL, NULL, true, flags);
		return 1;
	}
	tc_copy_out(r, off, len, buf1);
	tc_copy_out(r, off + len, len, buf2);
	tc_event("readp", r, addr, len, buf1, buf2, false, flags);
	return 0;
}

static int tc_writep(void *priv, uint64_t addr, size_t len, void *buf1, void *buf2, unsigned flags)
{
	struct tc_range *r = priv;
	uint64_t off = addr & (TC_MEM - 1);

	if (tc_failing(r, off, 2 * len)) {
		tc_event("writep", r, addr, len, NULL, NULL, true, flags);
		return 1;
	}
	tc_copy_in(r, off, len, buf1);
	tc_copy_in(r, off + len, len, buf2);
	tc_event("writep", r, addr, len, buf1, buf2, false, flags);
	return tc_irq_pulse(r, off, 2 * len);
}

static void tc_reset_cb(void *opaque)
{
	(void)opaque;
	printf("EV reset\n");
	fflush(stdout);
}

static void tc_answer(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print one answer line: "OK <text>" when rc is 0, else "ERR <rc> <text>". */
static void tc_answer(int rc, const char *fmt, ...)
{
	va_list ap;

	if (rc)
		printf("ERR %d", rc);
	else
		printf("OK");
	if (fmt && *fmt) {
		putchar(' ');
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
	}
	putchar('\n');
	fflush(stdout);
}

static bool tc_num(const char *s, uint64_t *out)
{
	char *end;

	if (!s || !*s)
		return false;
	errno = 0;
	*out = strtoull(s, &end, 0);
	return !errno && !*end;
}

static struct tc_range *tc_range_arg(const char *s)
{
	uint64_t rid;

	if (!tc_num(s, &rid) || rid >= TC_RANGES)
		return NULL;
	return &tc_ranges[rid];
}

static int tc_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Parse a hex string (optional 0x) into a new buffer; returns its length or -1. */
static long tc_parse_hex(const char *s, uint8_t **out)
{
	size_t n;
	uint8_t *b;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		s += 2;
	n = strlen(s);
	if (n == 0 || n % 2)
		return -1;
	b = malloc(n / 2);
	if (!b)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = tc_hexval(s[2 * i]), lo = tc_hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			free(b);
			return -1;
		}
		b[i] = (uint8_t)(hi << 4 | lo);
	}
	*out = b;
	return (long)(n / 2);
}

struct tc_cpl {
	bool done;
	int rc;
};

static void tc_cpl_cb(void *opaque, int rc)
{
	struct tc_cpl *c = opaque;

	c->done = true;
	c->rc = rc;
}

static long long tc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Serve the connection (MMIO included) until a non-blocking transfer completes. */
static int tc_wait_cpl(struct tc_cpl *c)
{
	long long deadline = tc_now_ms() + 60000;

	while (!c->done) {
		fd_set rfds, wfds;
		struct timeval tv = {0, 100000};
		int nfds, rc;

		if (tc_now_ms() > deadline)
			return -ETIMEDOUT;
		FD_ZERO(&rfds);
		FD_ZERO(&wfds);
		nfds = coreio_preparefds(0, &rfds, &wfds);
		if (nfds < 0)
			return nfds;
		rc = select(nfds, &rfds, &wfds, NULL, &tv);
		if (rc < 0 && errno != EINTR)
			return -errno;
		if (rc <= 0) {
			FD_ZERO(&rfds);
			FD_ZERO(&wfds);
		}
		rc = coreio_processfds(&rfds, &wfds);
		if (rc)
			return rc;
	}
	return c->rc;
}

static void tc_report_data(int rc, const uint8_t *buf, size_t len)
{
	if (rc) {
		tc_answer(rc, "dma");
		return;
	}
	printf("OK fnv=%016" PRIx64, tc_fnv(buf, len));
	if (len <= TC_MAX_HEXLOG) {
		printf(" data=");
		tc_hex(stdout, buf, len);
	}
	putchar('\n');
	fflush(stdout);
}

/* dma_read MID SID ADDR LEN [nb] and dma_write MID SID ADDR LEN PATTERN [nb]. */
static void tc_cmd_dma(bool write, char **argv, int argc)
{
	uint64_t mid, sid, addr, len, seed = 0;
	uint8_t *buf, *pat = NULL;
	long patlen = 0;
	bool nb;
	int rc, nargs = write ? 6 : 5;
	struct tc_cpl cpl = {false, 0};

	if (argc < nargs || argc > nargs + 1 || !tc_num(argv[1], &mid) || !tc_num(argv[2], &sid) ||
	    !tc_num(argv[3], &addr) || !tc_num(argv[4], &len) || len > TC_MAX_DMA) {
		tc_answer(-EINVAL, "usage");
		return;
	}
	nb = argc == nargs + 1;
	if (nb && strcmp(argv[nargs], "nb")) {
		tc_answer(-EINVAL, "usage");
		return;
	}
	if (write) {
		if (!strncmp(argv[5], "h:", 2)) {
			patlen = tc_parse_hex(argv[5] + 2, &pat);
			if (patlen <= 0) {
				tc_answer(-EINVAL, "bad hex pattern");
				return;
			}
		} else if (!tc_num(argv[5], &seed)) {
			tc_answer(-EINVAL, "bad pattern");
			return;
		}
	}
	buf = malloc(len ? len : 1);
	if (!buf) {
		free(pat);
		tc_answer(-ENOMEM, "malloc");
		return;
	}
	if (write) {
		for (uint64_t i = 0; i < len; i++)
			buf[i] = pat ? pat[i % (uint64_t)patlen] : (uint8_t)(seed + i * 7);
	} else {
		memset(buf, 0x5a, len);
	}
	free(pat);
	if (write)
		rc = coreio_dma_write((unsigned)mid, (unsigned)sid, addr, len, buf, 0,
				      nb ? tc_cpl_cb : NULL, &cpl);
	else
		rc = coreio_dma_read((unsigned)mid, (unsigned)sid, addr, len, buf, 0,
				     nb ? tc_cpl_cb : NULL, &cpl);
	if (!rc && nb)
		rc = tc_wait_cpl(&cpl);
	tc_report_data(rc, buf, len);
	free(buf);
}

static long long tc_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * dma_bench MID SID ADDR LEN COUNT read|write [SEED]: COUNT blocking transfers of the same
 * LEN bytes, timed here so that the caller's command round trip is excluded. A write sends
 * the bytes (SEED + i*7) & 0xff; the answer's fnv is of the bytes written, or of the bytes
 * the last read returned.
 */
static void tc_cmd_dma_bench(char **argv, int argc)
{
	uint64_t mid, sid, addr, len, count, seed = 0;
	bool write;
	uint8_t *buf;
	long long t0, t1;
	int rc = 0;

	if ((argc != 7 && argc != 8) || !tc_num(argv[1], &mid) || !tc_num(argv[2], &sid) ||
	    !tc_num(argv[3], &addr) || !tc_num(argv[4], &len) || !tc_num(argv[5], &count) ||
	    len == 0 || len > TC_MAX_DMA || count == 0 || count > 10000000 || mid > 0xffffffffu ||
	    sid > 0xffffffffu || (strcmp(argv[6], "read") && strcmp(argv[6], "write")) ||
	    (argc == 8 && !tc_num(argv[7], &seed))) {
		tc_answer(-EINVAL, "usage: dma_bench MID SID ADDR LEN COUNT read|write [SEED]");
		return;
	}
	write = !strcmp(argv[6], "write");
	buf = malloc(len);
	if (!buf) {
		tc_answer(-ENOMEM, "malloc");
		return;
	}
	for (uint64_t i = 0; i < len; i++)
		buf[i] = write ? (uint8_t)(seed + i * 7) : 0x5a;
	t0 = tc_now_ns();
	for (uint64_t i = 0; i < count && !rc; i++)
		rc = write ? coreio_dma_write((unsigned)mid, (unsigned)sid, addr, len, buf, 0, NULL,
					      NULL)
			   : coreio_dma_read((unsigned)mid, (unsigned)sid, addr, len, buf, 0, NULL,
					     NULL);
	t1 = tc_now_ns();
	if (rc)
		tc_answer(rc, "dma");
	else
		tc_answer(0, "ns=%lld count=%" PRIu64 " fnv=%016" PRIx64, t1 - t0, count,
			  tc_fnv(buf, len));
	free(buf);
}

static void tc_cmd_register(char **argv, int argc)
{
	struct tc_range *r = argc >= 2 ? tc_range_arg(argv[1]) : NULL;
	coreio_func_t f;
	int rc;

	if (!r || argc > 3 || (argc == 3 && strcmp(argv[2], "nopair"))) {
		tc_answer(-EINVAL, "usage: register RID [nopair]");
		return;
	}
	memset(&f, 0, sizeof(f));
	f.read = tc_read;
	f.write = tc_write;
	if (argc == 2) {
		f.readp = tc_readp;
		f.writep = tc_writep;
	}
	rc = coreio_register(r->rid, &f, r);
	if (!rc)
		r->registered = true;
	tc_answer(rc, "register %u", r->rid);
}

static void tc_cmd_mem(char **argv, int argc)
{
	struct tc_range *r = argc >= 3 ? tc_range_arg(argv[1]) : NULL;
	uint64_t off, len;
	uint8_t *b = NULL;
	long n;

	if (!r || !tc_num(argv[2], &off) || off >= TC_MEM || argc != 4) {
		tc_answer(-EINVAL, "usage: peek RID OFFSET LEN / poke RID OFFSET HEX");
		return;
	}
	if (!strcmp(argv[0], "peek")) {
		if (!tc_num(argv[3], &len) || len > TC_MEM - off) {
			tc_answer(-EINVAL, "bad length");
			return;
		}
		printf("OK ");
		tc_hex(stdout, r->mem + off, len);
		putchar('\n');
		fflush(stdout);
		return;
	}
	n = tc_parse_hex(argv[3], &b);
	if (n <= 0 || (uint64_t)n > TC_MEM - off) {
		free(b);
		tc_answer(-EINVAL, "bad hex");
		return;
	}
	memcpy(r->mem + off, b, (size_t)n);
	free(b);
	tc_answer(0, NULL);
}

/* Run one command line; returns false when the program should exit. */
static bool tc_command(char *line)
{
	char *argv[16], *save = NULL, *tok;
	int argc = 0;
	uint64_t a, b, c, d, e;
	struct tc_range *r;
	int rc;

	for (tok = strtok_r(line, " \t\r", &save); tok && argc < 16;
	     tok = strtok_r(NULL, " \t\r", &save))
		argv[argc++] = tok;
	if (argc == 0)
		return true;
	if (!strcmp(argv[0], "ping")) {
		tc_answer(0, "pong");
	} else if (!strcmp(argv[0], "quit")) {
		tc_answer(0, "bye");
		return false;
	} else if (!strcmp(argv[0], "register")) {
		tc_cmd_register(argv, argc);
	} else if (!strcmp(argv[0], "fail") || !strcmp(argv[0], "stall")) {
		r = argc == 3 ? tc_range_arg(argv[1]) : NULL;
		if (!r || !tc_num(argv[2], &a) || a >= TC_MEM) {
			tc_answer(-EINVAL, "usage: %s RID OFFSET", argv[0]);
		} else if (argv[0][0] == 's') {
			r->stall_on = true;
			r->stall = a;
			tc_answer(0, NULL);
		} else if (r->nfail >= TC_MAX_FAIL) {
			tc_answer(-ENOSPC, "too many");
		} else {
			r->fail[r->nfail++] = a;
			tc_answer(0, NULL);
		}
	} else if (!strcmp(argv[0], "nofail")) {
		r = argc == 2 ? tc_range_arg(argv[1]) : NULL;
		if (!r) {
			tc_answer(-EINVAL, "usage: nofail RID");
		} else {
			r->nfail = 0;
			tc_answer(0, NULL);
		}
	} else if (!strcmp(argv[0], "log")) {
		if (argc == 2 && (!strcmp(argv[1], "on") || !strcmp(argv[1], "off"))) {
			tc_log = !strcmp(argv[1], "on");
			tc_answer(0, NULL);
		} else {
			tc_answer(-EINVAL, "usage: log on|off");
		}
	} else if (!strcmp(argv[0], "irq")) {
		if (argc != 4 || !tc_num(argv[1], &a) || !tc_num(argv[2], &b) ||
		    !tc_num(argv[3], &c) || a > 0xffffffffu || b > 0xffffffffu || c > 1) {
			tc_answer(-EINVAL, "usage: irq RID IID LEVEL");
		} else {
			rc = coreio_irq_update((unsigned)a, (unsigned)b, (unsigned)c);
			tc_answer(rc, "irq");
		}
	} else if (!strcmp(argv[0], "dma_read")) {
		tc_cmd_dma(false, argv, argc);
	} else if (!strcmp(argv[0], "dma_write")) {
		tc_cmd_dma(true, argv, argc);
	} else if (!strcmp(argv[0], "dma_bench")) {
		tc_cmd_dma_bench(argv, argc);
	} else if (!strcmp(argv[0], "irq_on_write")) {
		r = argc == 4 ? tc_range_arg(argv[1]) : NULL;
		if (!r || !tc_num(argv[2], &a) || a >= TC_MEM || !tc_num(argv[3], &b) ||
		    b > 0xffffffffu) {
			tc_answer(-EINVAL, "usage: irq_on_write RID OFFSET IID");
		} else {
			r->irqw_on = true;
			r->irqw_off = a;
			r->irqw_iid = (unsigned)b;
			tc_answer(0, NULL);
		}
	} else if (!strcmp(argv[0], "dma_in_cb")) {
		r = argc == 7 ? tc_range_arg(argv[1]) : NULL;
		if (!r || !tc_num(argv[2], &a) || a >= TC_MEM || !tc_num(argv[3], &b) ||
		    !tc_num(argv[4], &c) || !tc_num(argv[5], &d) || !tc_num(argv[6], &e) ||
		    e > TC_MAX_DMA || b > 0xffffffffu || c > 0xffffffffu) {
			tc_answer(-EINVAL, "usage: dma_in_cb RID OFFSET MID SID ADDR LEN");
		} else {
			r->dmacb = (struct tc_dmacb){true, a, (unsigned)b, (unsigned)c, d, e};
			tc_answer(0, NULL);
		}
	} else if (!strcmp(argv[0], "peek") || !strcmp(argv[0], "poke")) {
		tc_cmd_mem(argv, argc);
	} else if (!strcmp(argv[0], "caps")) {
		rc = coreio_ctx_caps(coreio_default_ctx());
		if (rc < 0)
			tc_answer(rc, "caps");
		else
			tc_answer(0, "%d", rc);
	} else if (!strcmp(argv[0], "disconnect")) {
		coreio_disconnect();
		tc_connected = false;
		tc_answer(0, NULL);
	} else {
		tc_answer(-ENOSYS, "unknown command %s", argv[0]);
	}
	return true;
}

static void tc_usage(FILE *f)
{
	fprintf(f,
		"usage: coreio-testclient [--no-caps] [--busy-poll USEC] [TARGET]\n"
		"  TARGET     host:port, [v6addr]:port, host or unix:/path; without it (or\n"
		"             with '-') the library reads COREIO_VM / COREHDL_VM\n"
		"  --no-caps  offer no capabilities: speak exactly the base format\n"
		"  --busy-poll USEC\n"
		"             after each wake-up, look at the sockets without sleeping for\n"
		"             USEC microseconds (0..%u; default 0: off)\n"
		"Reads commands on stdin, one a line; see the source for the list.\n",
		COREIO_BUSY_POLL_MAX_US);
}

/* The library's messages (coreio_set_log()) go to stderr, one line each. */
static void tc_liblog(void *opaque, int level, const char *msg)
{
	(void)opaque, (void)level;
	fprintf(stderr, "%s\n", msg);
}

int main(int argc, char **argv)
{
	static char line[TC_LINE_MAX];
	size_t have = 0;
	const char *target = NULL;
	bool no_caps = false, stdin_open = true;
	unsigned long busy_us = 0;
	long long spin_until = 0;
	int rc;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--no-caps")) {
			no_caps = true;
		} else if (!strcmp(argv[i], "--busy-poll")) {
			char *end = NULL;

			errno = 0;
			if (i + 1 < argc)
				busy_us = strtoul(argv[++i], &end, 0);
			if (!end || errno || *end || end == argv[i] ||
			    busy_us > COREIO_BUSY_POLL_MAX_US) {
				fprintf(stderr, "coreio-testclient: bad --busy-poll '%s' (0..%u)\n",
					end ? argv[i] : "", COREIO_BUSY_POLL_MAX_US);
				return 2;
			}
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			tc_usage(stdout);
			return 0;
		} else if (!target && (argv[i][0] != '-' || !strcmp(argv[i], "-"))) {
			target = argv[i];
		} else {
			tc_usage(stderr);
			return 2;
		}
	}
	if (target && !strcmp(target, "-"))
		target = NULL;
	for (unsigned i = 0; i < TC_RANGES; i++)
		tc_ranges[i].rid = i;
	if (no_caps) {
		rc = coreio_ctx_set_offer(coreio_default_ctx(), 0);
		if (rc) {
			tc_answer(rc, "set_offer");
			return 1;
		}
	}
	coreio_set_log(tc_liblog, NULL);
	rc = coreio_connect(target);
	if (rc) {
		tc_answer(rc, "connect %s: %s", target ? target : "(env)", strerror(-rc));
		return 1;
	}
	tc_connected = true;
	coreio_set_reset_cb(tc_reset_cb, NULL);
	tc_answer(0, "connected caps=%d", coreio_ctx_caps(coreio_default_ctx()));

	while (stdin_open) {
		fd_set rfds, wfds;
		int nfds = 1;
		ssize_t n;

		FD_ZERO(&rfds);
		FD_ZERO(&wfds);
		FD_SET(0, &rfds);
		if (tc_connected) {
			nfds = coreio_preparefds(nfds, &rfds, &wfds);
			if (nfds < 0) {
				printf("EV disconnected %d\n", nfds);
				fflush(stdout);
				tc_connected = false;
				continue;
			}
		}
		{
			/* --busy-poll: a zero timeout until spin_until. */
			struct timeval zero = {0, 0};

			rc = select(nfds, &rfds, &wfds, NULL,
				    busy_us && tc_now_ns() / 1000 < spin_until ? &zero : NULL);
		}
		if (rc < 0) {
			if (errno == EINTR)
				continue;
			perror("select");
			return 1;
		}
		if (rc > 0 && busy_us)
			spin_until = tc_now_ns() / 1000 + (long long)busy_us;
		if (tc_connected) {
			rc = coreio_processfds(&rfds, &wfds);
			if (rc) {
				printf("EV disconnected %d\n", rc);
				fflush(stdout);
				coreio_disconnect();
				tc_connected = false;
			}
		}
		if (!FD_ISSET(0, &rfds))
			continue;
		n = read(0, line + have, sizeof(line) - 1 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			stdin_open = false;
			break;
		}
		have += (size_t)n;
		for (;;) {
			char *nl = memchr(line, '\n', have);
			size_t used;

			if (!nl) {
				if (have == sizeof(line) - 1) {
					tc_answer(-E2BIG, "line too long");
					have = 0;
				}
				break;
			}
			*nl = '\0';
			used = (size_t)(nl - line) + 1;
			if (!tc_command(line)) {
				coreio_disconnect();
				return 0;
			}
			memmove(line, line + used, have - used);
			have -= used;
		}
	}
	coreio_disconnect();
	return 0;
}
