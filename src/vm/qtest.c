/* coreio-vm: the qtest accelerator, a script that plays the CPU (docs/coreio-vm.md). */
#include "qtest.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "event.h"
#include "inject.h"
#include "qtest_parse.h"

#define FLUSH_AT (64u << 10)

static void pump(struct qtest *q);

/* ---- output ---------------------------------------------------------- */

static bool out_reserve(struct qtest *q, size_t n)
{
	size_t need = q->out_len + n + 1;
	char *p;

	if (need <= q->out_cap)
		return true;
	if (need < 2 * q->out_cap)
		need = 2 * q->out_cap;
	p = realloc(q->out, need);
	if (!p)
		return false;
	q->out = p;
	q->out_cap = need;
	return true;
}

static void out_vprintf(struct qtest *q, const char *fmt, va_list ap)
{
	va_list ap2;
	int n;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0 || !out_reserve(q, (size_t)n))
		return;
	vsnprintf(q->out + q->out_len, (size_t)n + 1, fmt, ap);
	q->out_len += (size_t)n;
}

static void out_printf(struct qtest *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_printf(struct qtest *q, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	out_vprintf(q, fmt, ap);
	va_end(ap);
}

static void script_close(struct qtest *q);

/* Write everything buffered; the output is blocking, so lines are never split. */
static void out_flush(struct qtest *q)
{
	size_t off = 0;

	while (q->out_fd >= 0 && off < q->out_len) {
		ssize_t n = write(q->out_fd, q->out + off, q->out_len - off);

		if (n > 0) {
			off += (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pfd = {.fd = q->out_fd, .events = POLLOUT};

			poll(&pfd, 1, -1);
		} else {
			fprintf(stderr, "coreio-vm: qtest: output failed: %s\n",
				n < 0 ? strerror(errno) : "short write");
			q->out_len = 0;
			script_close(q);
			return;
		}
	}
	q->out_len = 0;
}

static void out_hex(struct qtest *q, const uint8_t *p, size_t n, int fill)
{
	static const char digits[] = "0123456789abcdef";

	while (n > 0) {
		size_t chunk = n > FLUSH_AT ? FLUSH_AT : n;

		if (!out_reserve(q, 2 * chunk))
			return;
		for (size_t i = 0; i < chunk; i++) {
			unsigned b = p ? p[i] : (unsigned)fill;

			q->out[q->out_len++] = digits[b >> 4];
			q->out[q->out_len++] = digits[b & 15];
		}
		if (p)
			p += chunk;
		n -= chunk;
		if (q->out_len >= FLUSH_AT)
			out_flush(q);
	}
}

static void answer(struct qtest *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One whole answer line. */
static void answer(struct qtest *q, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	out_vprintf(q, fmt, ap);
	va_end(ap);
	out_printf(q, "\n");
	out_flush(q);
}

static void irq_backend(int line, bool level, void *opaque)
{
	struct qtest *q = opaque;

	if (!q->intercept || q->out_fd < 0)
		return;
	answer(q, "IRQ %s %d", level ? "raise" : "lower", line);
}

/* ---- requests -------------------------------------------------------- */

static void finish_request(struct qtest *q)
{
	struct mmio_request *m = &q->req.reqs.mmio;
	uint64_t v = 0;

	if (emulate_mmio_post(q->io, &q->req) < 0) {
		answer(q, "FAIL bus-error");
		return;
	}
	switch (q->kind) {
	case QTEST_ANS_VALUE:
		for (unsigned i = m->size; i-- > 0;)
			v = (v << 8) | m->data[i];
		answer(q, "OK 0x%016llx", (unsigned long long)v);
		break;
	case QTEST_ANS_BYTES:
		out_printf(q, "OK 0x");
		out_hex(q, m->data, m->size, 0);
		answer(q, "%s", "");
		break;
	case QTEST_ANS_PAIR:
		out_printf(q, "OK 0x");
		out_hex(q, m->data, m->size, 0);
		out_printf(q, " 0x");
		out_hex(q, m->data2, m->size, 0);
		answer(q, "%s", "");
		break;
	case QTEST_ANS_OK:
	default:
		answer(q, "OK");
		break;
	}
}

static void resume(void *opaque)
{
	struct qtest *q = opaque;

	/* A script that left while its command waited: take the next one now. */
	if (q->in_fd < 0 && q->listen_fd >= 0 && !q->waiting)
		event_mod(q->listen_fd, EPOLLIN);
	pump(q);
}

/*
 * Run q->req through the ioreq layer as a vCPU does: with the VM lock held,
 * and when the handler returns IOREQ_PENDING, through its wait (vmmio:
 * sends the request and spins for the answer by the range's poll= policy,
 * vmmio_submit()), which may run the completion callback before it
 * returns; otherwise the callback runs later from the loop. Sets
 * q->waiting for a pending request. Returns what emulate_io() returned.
 */
static int qtest_emulate(struct qtest *q)
{
	int rc;

	pthread_mutex_lock(&q->io->lock);
	rc = emulate_io(q->io, &q->req);
	if (rc == IOREQ_PENDING) {
		q->waiting = true;
		if (q->req.state != REQ_STATE_COMPLETE && q->req.wait) {
			q->in_wait = true;
			q->req.wait(&q->req);
			q->in_wait = false;
		}
	}
	pthread_mutex_unlock(&q->io->lock);
	return rc;
}

/* Completion callback of a pending request (VM lock held: from the wait, or from the loop). */
static void request_done(struct io_request *req, void *opaque)
{
	struct qtest *q = opaque;

	(void)req;
	finish_request(q);
	q->waiting = false;
	/* The next command runs outside the client's callback: pump() goes on
	 * when the wait returns, or from the loop (also when the script left). */
	if (!q->in_wait || q->in_fd < 0)
		event_defer(resume, q);
}

static void start_mmio(struct qtest *q, enum qtest_kind kind, uint32_t dir, uint64_t addr,
		       unsigned size, bool pair, const uint8_t *data, const uint8_t *data2,
		       uint32_t mask)
{
	struct mmio_request *m = &q->req.reqs.mmio;
	int rc;

	memset(&q->req, 0, sizeof(q->req));
	q->req.type = REQ_MMIO;
	q->req.state = REQ_STATE_FREE;
	q->req.complete = request_done;
	q->req.complete_opaque = q;
	m->direction = dir;
	m->address = addr;
	m->size = size;
	m->pair = pair;
	m->mask = mask;
	m->flags = q->flags;
	if (data)
		memcpy(m->data, data, size);
	if (data2)
		memcpy(m->data2, data2, size);
	q->kind = kind;
	rc = qtest_emulate(q);
	if (rc == IOREQ_PENDING)
		return; /* request_done() answers */
	if (rc == -EIO) {
		answer(q, "FAIL bus-error straddle");
		return;
	}
	if (rc < 0) {
		answer(q, "FAIL bad access (%s)", strerror(-rc));
		return;
	}
	finish_request(q);
}

/* ---- argument parsing ------------------------------------------------ */

static bool num(const char *s, uint64_t *v)
{
	return config_parse_u64(s, v) == 0;
}

/* Decode "0xHEX" (0x optional) of exactly n bytes into out (qtest_parse.h). */
static bool hexbytes(const char *s, uint8_t *out, uint64_t n)
{
	return qtest_hexbytes(s, out, n);
}

static void bad(struct qtest *q, const char *arg)
{
	answer(q, "FAIL bad argument '%s'", arg);
}

/* ---- commands -------------------------------------------------------- */

static void cmd_readn(struct qtest *q, char **t, unsigned size)
{
	uint64_t addr;

	if (!num(t[1], &addr))
		return bad(q, t[1]);
	start_mmio(q, QTEST_ANS_VALUE, REQUEST_READ, addr, size, false, NULL, NULL, 0);
}

static void cmd_writen(struct qtest *q, char **t, unsigned size)
{
	uint64_t addr, val;
	uint8_t data[8];

	if (!num(t[1], &addr))
		return bad(q, t[1]);
	if (!num(t[2], &val) || (size < 8 && (val >> (8 * size)) != 0))
		return bad(q, t[2]);
	for (unsigned i = 0; i < size; i++)
		data[i] = (uint8_t)(val >> (8 * i));
	start_mmio(q, QTEST_ANS_OK, REQUEST_WRITE, addr, size, false, data, NULL, 0);
}

/*
 * A long access (more than one request): RAM is direct; a vMMIO range
 * refuses it; nobody reads ones and drops writes. Returns the class.
 */
static enum ioreq_class long_access(struct qtest *q, uint64_t addr, uint64_t len, bool write)
{
	enum ioreq_class cls = ioreq_classify(q->io, addr, len, NULL);

	switch (cls) {
	case IOREQ_CLASS_HANDLER:
		answer(q, "FAIL length");
		break;
	case IOREQ_CLASS_STRADDLE:
		q->io->stats.straddles++;
		answer(q, "FAIL bus-error straddle");
		break;
	case IOREQ_CLASS_NONE:
		if (write) {
			q->io->stats.unhandled_writes++;
			answer(q, "OK");
		} else {
			q->io->stats.unhandled_reads++;
			out_printf(q, "OK 0x");
			out_hex(q, NULL, len, 0xff);
			answer(q, "%s", "");
		}
		break;
	case IOREQ_CLASS_RAM:
		break;
	}
	return cls;
}

static void cmd_read(struct qtest *q, char **t)
{
	uint64_t addr, len;

	if (!num(t[1], &addr))
		return bad(q, t[1]);
	if (!num(t[2], &len) || len == 0)
		return bad(q, t[2]);
	if (len <= IOREQ_MAX_DATA)
		return start_mmio(q, QTEST_ANS_BYTES, REQUEST_READ, addr, (unsigned)len, false,
				  NULL, NULL, 0);
	if (long_access(q, addr, len, false) == IOREQ_CLASS_RAM) {
		out_printf(q, "OK 0x");
		out_hex(q, mem_ptr(q->mem, addr, len), len, 0);
		answer(q, "%s", "");
	}
}

static void cmd_write(struct qtest *q, char **t)
{
	uint64_t addr, len;
	uint8_t small[IOREQ_MAX_DATA], *buf;

	if (!num(t[1], &addr))
		return bad(q, t[1]);
	if (!num(t[2], &len) || len == 0 || len > QTEST_MAX_LINE)
		return bad(q, t[2]);
	buf = len <= IOREQ_MAX_DATA ? small : malloc(len);
	if (!buf)
		return answer(q, "FAIL out of memory");
	if (!hexbytes(t[3], buf, len)) {
		bad(q, t[3]);
	} else if (len <= IOREQ_MAX_DATA) {
		start_mmio(q, QTEST_ANS_OK, REQUEST_WRITE, addr, (unsigned)len, false, buf, NULL,
			   0);
	} else if (long_access(q, addr, len, true) == IOREQ_CLASS_RAM) {
		mem_write(q->mem, addr, buf, len);
		answer(q, "OK");
	}
	if (buf != small)
		free(buf);
}

static void cmd_memset(struct qtest *q, char **t)
{
	uint64_t addr, len, byte;
	uint8_t data[IOREQ_MAX_DATA];

	if (!num(t[1], &addr))
		return bad(q, t[1]);
	if (!num(t[2], &len) || len == 0)
		return bad(q, t[2]);
	if (!num(t[3], &byte) || byte > 255)
		return bad(q, t[3]);
	if (len <= IOREQ_MAX_DATA) {
		memset(data, (int)byte, sizeof(data));
		return start_mmio(q, QTEST_ANS_OK, REQUEST_WRITE, addr, (unsigned)len, false, data,
				  NULL, 0);
	}
	if (long_access(q, addr, len, true) == IOREQ_CLASS_RAM) {
		memset(mem_ptr(q->mem, addr, len), (int)byte, len);
		answer(q, "OK");
	}
}

static void cmd_readp(struct qtest *q, char **t)
{
	uint64_t addr, size;

	if (!num(t[1], &addr))
		return bad(q, t[1]);
	if (!num(t[2], &size) || size < 1 || size > IOREQ_MAX_PAIR)
		return bad(q, t[2]);
	start_mmio(q, QTEST_ANS_PAIR, REQUEST_READ, addr, (unsigned)size, true, NULL, NULL, 0);
}

static void cmd_writep(struct qtest *q, char **t)
{
	uint64_t addr, size;
	uint8_t d1[IOREQ_MAX_PAIR], d2[IOREQ_MAX_PAIR];

	if (!num(t[1], &addr))
		return bad(q, t[1]);
	if (!num(t[2], &size) || size < 1 || size > IOREQ_MAX_PAIR)
		return bad(q, t[2]);
	if (!hexbytes(t[3], d1, size))
		return bad(q, t[3]);
	if (!hexbytes(t[4], d2, size))
		return bad(q, t[4]);
	start_mmio(q, QTEST_ANS_OK, REQUEST_WRITE, addr, (unsigned)size, true, d1, d2, 0);
}

static void cmd_writem(struct qtest *q, char **t)
{
	uint64_t addr, len, mask;
	uint8_t data[IOREQ_MAX_DATA];

	if (!num(t[1], &addr))
		return bad(q, t[1]);
	if (!num(t[2], &len) || len == 0)
		return bad(q, t[2]);
	if (len > IOREQ_MAX_DATA)
		return answer(q, "FAIL length");
	if (!hexbytes(t[3], data, len))
		return bad(q, t[3]);
	if (!num(t[4], &mask) || mask == 0 || (mask & ~(uint64_t)ioreq_full_mask((unsigned)len)))
		return bad(q, t[4]);
	start_mmio(q, QTEST_ANS_OK, REQUEST_WRITE, addr, (unsigned)len, false, data, NULL,
		   (uint32_t)mask);
}

static void cmd_irq_intercept_in(struct qtest *q, char **t)
{
	(void)t;
	q->intercept = true;
	answer(q, "OK");
}

static void cmd_irq_level(struct qtest *q, char **t)
{
	uint64_t line;

	if (!num(t[1], &line) || line >= IRQ_LINES)
		return bad(q, t[1]);
	answer(q, "OK %d", irq_line_level(q->irq, (int)line));
}

static void wait_done(struct qtest *q, bool ok)
{
	struct itimerspec off = {0};

	timerfd_settime(q->timer_fd, 0, &off, NULL);
	q->wait_g = -1;
	q->waiting = false;
	if (ok)
		answer(q, "OK");
	else
		answer(q, "FAIL timeout");
	event_defer(resume, q);
}

static void on_claim(unsigned g, void *opaque)
{
	struct qtest *q = opaque;

	if (q->waiting && q->wait_g == (int)g)
		wait_done(q, true);
}

static void on_timer(int fd, uint32_t events, void *opaque)
{
	struct qtest *q = opaque;
	uint64_t n;

	(void)events;
	if (read(fd, &n, sizeof(n)) < 0 && errno == EAGAIN)
		return;
	if (q->waiting && q->wait_g >= 0)
		wait_done(q, false);
}

static void cmd_vmmio_wait(struct qtest *q, char **t)
{
	uint64_t g, ms;
	const struct vmmio_range *rg;
	struct itimerspec its = {0};

	if (!num(t[1], &g) || !(rg = vmmio_range(q->v, (unsigned)g)) || g > 0xffffffffu)
		return bad(q, t[1]);
	if (!num(t[2], &ms) || ms > 86400000ull)
		return bad(q, t[2]);
	if (rg->owner)
		return answer(q, "OK");
	if (ms == 0)
		return answer(q, "FAIL timeout");
	its.it_value.tv_sec = (time_t)(ms / 1000);
	its.it_value.tv_nsec = (long)(ms % 1000) * 1000000;
	if (timerfd_settime(q->timer_fd, 0, &its, NULL) < 0)
		return answer(q, "FAIL timer: %s", strerror(errno));
	q->wait_g = (int)g;
	q->waiting = true;
}

static void cmd_vmmio_info(struct qtest *q, char **t)
{
	uint64_t g;
	const struct vmmio_range *rg;

	if (!num(t[1], &g) || g > 0xffffffffu || !(rg = vmmio_range(q->v, (unsigned)g)))
		return bad(q, t[1]);
	answer(q, "OK start=0x%llx size=0x%llx port=%s rid=%u claimed=%d",
	       (unsigned long long)rg->start, (unsigned long long)rg->size, rg->port->display,
	       rg->rid, rg->owner != NULL);
}

static void cmd_flags(struct qtest *q, char **t)
{
	uint64_t f;

	if (!num(t[1], &f) || f > 15)
		return bad(q, t[1]);
	q->flags = (uint32_t)f;
	answer(q, "OK");
}

static void cmd_reset(struct qtest *q, char **t)
{
	(void)t;
	vmmio_reset(q->v);
	answer(q, "OK");
}

static void cmd_stats(struct qtest *q, char **t)
{
	const struct vm_stats *s = &q->io->stats;

	(void)t;
	answer(q,
	       "OK unhandled_reads=%llu unhandled_writes=%llu bus_errors=%llu straddles=%llu "
	       "dma_ok=%llu dma_faults=%llu malformed=%llu shm_maps=%llu",
	       (unsigned long long)s->unhandled_reads, (unsigned long long)s->unhandled_writes,
	       (unsigned long long)s->bus_errors, (unsigned long long)s->straddles,
	       (unsigned long long)s->dma_ok, (unsigned long long)s->dma_faults,
	       (unsigned long long)s->malformed, (unsigned long long)s->shm_maps);
}

/*
 * bench_read ADDR SIZE COUNT: COUNT reads of SIZE (1, 2, 4 or 8) bytes at
 * ADDR, timed here, so a benchmark measures the access and not the
 * script's pipe. Each read starts from the event loop once the one before
 * completed (event_defer()), as the next readN command would after an
 * answer, whether the read stayed in the VM (RAM) or went to a client.
 * Answer: "OK ns=TOTAL count=COUNT value=0x..." (the last value read), or
 * FAIL as readN fails (straddle, bad access, bus error) after K of them.
 * One run at a time: the script is not read meanwhile.
 */
static struct {
	uint64_t addr, left, count;
	unsigned size;
	long long t0;
} bench;

static long long bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void bench_end(struct qtest *q, const char *fail)
{
	const struct mmio_request *m = &q->req.reqs.mmio;
	uint64_t v = 0;

	if (fail) {
		answer(q, "FAIL %s after %llu of %llu reads", fail,
		       (unsigned long long)(bench.count - bench.left),
		       (unsigned long long)bench.count);
	} else {
		for (unsigned i = m->size; i-- > 0;)
			v = (v << 8) | m->data[i];
		answer(q, "OK ns=%lld count=%llu value=0x%016llx", bench_now() - bench.t0,
		       (unsigned long long)bench.count, (unsigned long long)v);
	}
	q->waiting = false;
	event_defer(resume, q);
}

static void bench_step(void *opaque);

static void bench_done(struct io_request *req, void *opaque)
{
	struct qtest *q = opaque;

	(void)req;
	if (emulate_mmio_post(q->io, &q->req) < 0)
		return bench_end(q, "bus-error");
	if (--bench.left == 0)
		return bench_end(q, NULL);
	event_defer(bench_step, q);
}

static void bench_step(void *opaque)
{
	struct qtest *q = opaque;
	int rc;

	memset(&q->req, 0, sizeof(q->req));
	q->req.type = REQ_MMIO;
	q->req.complete = bench_done;
	q->req.complete_opaque = q;
	q->req.reqs.mmio.direction = REQUEST_READ;
	q->req.reqs.mmio.address = bench.addr;
	q->req.reqs.mmio.size = bench.size;
	q->req.reqs.mmio.flags = q->flags;
	rc = qtest_emulate(q);
	if (rc == IOREQ_PENDING)
		return;
	if (rc < 0)
		return bench_end(q, rc == -EIO ? "bus-error straddle" : "bad access");
	bench_done(&q->req, q);
}

static void cmd_bench_read(struct qtest *q, char **t)
{
	uint64_t size;

	if (!num(t[1], &bench.addr))
		return bad(q, t[1]);
	if (!num(t[2], &size) || (size != 1 && size != 2 && size != 4 && size != 8))
		return bad(q, t[2]);
	if (!num(t[3], &bench.count) || bench.count == 0 || bench.count > 1000000000ull)
		return bad(q, t[3]);
	bench.size = (unsigned)size;
	bench.left = bench.count;
	q->waiting = true;
	bench.t0 = bench_now();
	event_defer(bench_step, q);
}

/* The handlers of qtest_cmd_specs (qtest_parse.h), in its order; NULL: readN/writeN. */
static void (*const cmd_fns[])(struct qtest *q, char **t) = {
    NULL,	   NULL,	   NULL,	   NULL,       NULL,
    NULL,	   NULL,	   NULL,	   cmd_read,   cmd_write,
    cmd_memset,	   cmd_readp,	   cmd_writep,	   cmd_writem, cmd_irq_intercept_in,
    cmd_irq_level, cmd_vmmio_wait, cmd_vmmio_info, cmd_flags,  cmd_reset,
    cmd_stats,	   cmd_bench_read,
};

_Static_assert(sizeof(cmd_fns) / sizeof(cmd_fns[0]) == QTEST_NCMDS,
	       "one handler per command of qtest_parse.h");

static void exec_line(struct qtest *q, char *line)
{
	char *t[QTEST_MAX_TOKENS + 1] = {0};
	char *badtok = NULL;
	unsigned n = 0;
	int k = 0;
	const struct qtest_cmd_spec *c;

	/* Fault injection takes a variable number of words: its own parser,
	 * the same as --fault-socket's (docs/fault-injection.md). */
	if (inject_is_command(line)) {
		static char ans[VMMIO_INJECT_ANSWER_MAX];

		vmmio_inject_command(q->v, line, ans, sizeof(ans));
		answer(q, "%s", ans);
		return;
	}
	switch (qtest_parse_line(line, t, &n, &k, &badtok)) {
	case QTEST_PARSE_EMPTY:
		return; /* an empty line is not a command */
	case QTEST_PARSE_BAD:
		return bad(q, badtok);
	case QTEST_PARSE_UNKNOWN:
		return answer(q, "FAIL unknown command '%s'", t[0]);
	case QTEST_PARSE_MISSING:
		c = &qtest_cmd_specs[k];
		return answer(q, "FAIL missing argument (%s takes %u)", c->name, c->nargs);
	case QTEST_PARSE_OK:
		break;
	}
	c = &qtest_cmd_specs[k];
	if (cmd_fns[k])
		cmd_fns[k](q, t);
	else if (c->nargs == 1)
		cmd_readn(q, t, c->size);
	else
		cmd_writen(q, t, c->size);
}

/* ---- input ----------------------------------------------------------- */

static void script_close(struct qtest *q)
{
	if (q->in_fd < 0)
		return;
	if (q->in_watched)
		event_del(q->in_fd);
	q->in_watched = false;
	if (q->path[0]) {
		close(q->in_fd);
		fprintf(stderr, "coreio-vm: qtest script disconnected\n");
		if (!q->waiting)
			event_mod(q->listen_fd, EPOLLIN); /* accept the next script */
	} else {
		event_stop(); /* stdio: the script is over */
	}
	q->in_fd = q->out_fd = -1;
	q->in_start = q->in_len = 0;
	q->out_len = 0;
	q->discarding = false;
	q->eof = false;
}

/* Read what the script sent (one read: the fd is ready or a regular file). */
static void read_input(struct qtest *q)
{
	ssize_t n;

	if (q->in_start > 0 && q->in_start == q->in_len)
		q->in_start = q->in_len = 0;
	if (q->in_start > q->in_cap / 2) {
		memmove(q->in, q->in + q->in_start, q->in_len - q->in_start);
		q->in_len -= q->in_start;
		q->in_start = 0;
	}
	if (q->in_cap - q->in_len < 65536) {
		size_t cap = q->in_cap ? 2 * q->in_cap : 131072;
		char *p = realloc(q->in, cap);

		if (!p) {
			q->eof = true;
			return;
		}
		q->in = p;
		q->in_cap = cap;
	}
	do {
		n = read(q->in_fd, q->in + q->in_len, q->in_cap - q->in_len - 1);
	} while (n < 0 && errno == EINTR);
	if (n > 0)
		q->in_len += (size_t)n;
	else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
		q->eof = true;
}

/* Take the next line (without its newline) out of the input, or NULL. */
static char *next_line(struct qtest *q)
{
	char *start = q->in + q->in_start;
	char *nl = memchr(start, '\n', q->in_len - q->in_start);

	if (!nl) {
		if (q->in_len - q->in_start > QTEST_MAX_LINE) {
			/* Too long: answer now and drop bytes until the next newline. */
			if (!q->discarding)
				answer(q, "FAIL line too long");
			q->discarding = true;
			q->in_start = q->in_len;
			return NULL;
		}
		if (!q->eof || q->in_start == q->in_len)
			return NULL;
		/* The last line at EOF has no newline; read_input() kept a spare byte. */
		nl = q->in + q->in_len;
		q->in_len++;
	}
	*nl = '\0';
	q->in_start = (size_t)(nl - q->in) + 1;
	if (q->discarding) {
		q->discarding = false;
		return next_line(q);
	}
	return start;
}

/*
 * Run commands while none is waiting; read more input when every complete
 * line is done. While a command waits, the script is not read at all.
 */
static void pump(struct qtest *q)
{
	while (q->in_fd >= 0 && !q->waiting) {
		char *line = next_line(q);

		if (line) {
			exec_line(q, line);
			continue;
		}
		if (q->eof) {
			script_close(q);
			return;
		}
		if (q->in_watched) {
			event_mod(q->in_fd, EPOLLIN);
			return;
		}
		read_input(q); /* a regular file never blocks */
	}
	if (q->in_fd >= 0 && q->waiting && q->in_watched)
		event_mod(q->in_fd, 0);
}

static void on_input(int fd, uint32_t events, void *opaque)
{
	struct qtest *q = opaque;

	(void)fd;
	(void)events;
	if (q->waiting)
		return;
	read_input(q);
	pump(q);
}

static void script_open(struct qtest *q, int in_fd, int out_fd)
{
	int rc;

	q->in_fd = in_fd;
	q->out_fd = out_fd;
	q->eof = false;
	q->intercept = false;
	q->flags = 0;
	rc = event_add(in_fd, EPOLLIN, on_input, q);
	q->in_watched = rc == 0;
	if (rc < 0)
		event_defer(resume, q); /* a regular file: read it from pump() */
}

static void on_accept(int fd, uint32_t events, void *opaque)
{
	struct qtest *q = opaque;
	int cfd;

	(void)events;
	if (q->in_fd >= 0)
		return;
	cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
	if (cfd < 0)
		return;
	event_mod(fd, 0); /* one script at a time; the next waits in the backlog */
	fprintf(stderr, "coreio-vm: qtest script connected\n");
	script_open(q, cfd, cfd);
}

int qtest_init(struct qtest *q, const char *path, struct ioreq_ctx *io, struct mem *mem,
	       struct irq_chip *irq, struct vmmio *v)
{
	memset(q, 0, sizeof(*q));
	q->io = io;
	q->mem = mem;
	q->irq = irq;
	q->v = v;
	q->listen_fd = q->in_fd = q->out_fd = -1;
	q->wait_g = -1;
	q->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (q->timer_fd < 0 || event_add(q->timer_fd, EPOLLIN, on_timer, q) < 0) {
		fprintf(stderr, "coreio-vm: qtest: timerfd: %s\n", strerror(errno));
		return -errno;
	}
	irq_set_backend(irq, irq_backend, q);
	vmmio_set_claim_cb(v, on_claim, q);
	if (!path || !path[0]) {
		script_open(q, 0, 1);
		return 0;
	}
	{
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		struct stat st;

		snprintf(q->path, sizeof(q->path), "%s", path);
		if (lstat(path, &st) == 0) {
			if (!S_ISSOCK(st.st_mode)) {
				fprintf(stderr,
					"coreio-vm: --qtest unix:%s exists and is not a socket\n",
					path);
				q->path[0] = '\0';
				return -EEXIST;
			}
			unlink(path);
		}
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
		q->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (q->listen_fd < 0 ||
		    bind(q->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
		    listen(q->listen_fd, 4) < 0 ||
		    event_add(q->listen_fd, EPOLLIN, on_accept, q) < 0) {
			int err = -errno;

			fprintf(stderr, "coreio-vm: --qtest unix:%s: %s\n", path, strerror(errno));
			if (q->listen_fd >= 0)
				close(q->listen_fd);
			q->listen_fd = -1;
			q->path[0] = '\0';
			return err;
		}
		fprintf(stderr, "coreio-vm: qtest script socket ready at unix:%s\n", path);
		fflush(stderr);
	}
	return 0;
}

void qtest_exit(struct qtest *q)
{
	if (q->in_fd >= 0 && q->path[0])
		close(q->in_fd);
	q->in_fd = q->out_fd = -1;
	if (q->listen_fd >= 0) {
		close(q->listen_fd);
		unlink(q->path);
	}
	q->listen_fd = -1;
	if (q->timer_fd >= 0)
		close(q->timer_fd);
	q->timer_fd = -1;
	free(q->in);
	free(q->out);
	q->in = q->out = NULL;
}
