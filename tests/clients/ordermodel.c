/* coreio-ordermodel: a device model that shows the order of MMIO, IRQ and DMA at its boundary. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "coreio.h"

/*
 * Register map, per range (rid 0, and rid 1 with --ranges 2). The offset of
 * an access is addr & 0xfff. Registers are 64-bit: an access of another
 * length, or one not 8-byte aligned, is a bus error. Offsets not listed read
 * 0 and ignore writes; offsets 0xf00..0xfff (FAIL) are a bus error.
 *
 *   0x000 ID          r   0x4f52444d00000000 | rid
 *   0x008 SCRATCH     rw  plain storage
 *   0x300 DMA_SRC     w   blocking coreio_dma_read of 16 bytes at the value
 *                         into STATE (a failed DMA: bus error, DMA_ERRS++)
 *   0x308 DMA_DST     w   blocking coreio_dma_write of STATE (16 bytes) to
 *                         the value, then DST_COUNT++ (failure as DMA_SRC)
 *   0x310 NB_SRC      w   non-blocking dma_read of 16 bytes at the value; its
 *                         completion adds the two words to NBSUM0/1 and
 *                         counts NB_DONE (NB_ERRS on failure)
 *   0x318 NB_DST      w   non-blocking dma_write of STATE as it is now to
 *                         the value; completion counts NB_DONE / NB_ERRS
 *   0x320 DMA_IRQ     w   as DMA_SRC, then coreio_irq_update(rid, 0,
 *                         STATE0 & 1) inside the callback
 *   0x400 STATE0      rw  the state's two words (little-endian bytes 0..7
 *   0x408 STATE1      rw  and 8..15 of the DMA buffer)
 *   0x410 DST_COUNT   r   DMA_DST writes done
 *   0x418 DMA_ERRS    r   failed blocking DMA in callbacks
 *   0x420 NBSUM0      r   sum (mod 2^64) of the first words NB_SRC read
 *   0x428 NBSUM1      r   same, second words
 *   0x430 NB_DONE     r   non-blocking transfers completed (ok or not)
 *   0x438 NB_ERRS     r   non-blocking transfers that failed (or found no
 *                         free slot: 64 may be in flight)
 *   0x500 IRQ         w   coreio_irq_update(rid, (value >> 8) & 7, value & 1)
 *   0x600 SEQ         rw  the last value written
 *   0x608 WCOUNT      r   write callbacks of this range that succeeded
 *   0x610 HASH        r   hash of this range's successful writes, in order
 *   0x618 GHASH       r   hash of all ranges' successful writes, in order
 *   0x620 NEST        r   callbacks that started while another one had not
 *                         returned (global; 0 when requests never nest)
 *   0x628 GWCOUNT     r   successful write callbacks of all ranges
 *   0x700 THREAD_CTL  rw  write 1: the background thread runs, 0: it stops
 *                         after its current round; reads 1 while it runs or
 *                         has not yet stopped, 0 once idle
 *   0x708 THREAD_OPS  r   DMA transfers the thread completed
 *   0x710 THREAD_ERRS r   thread errors (DMA failure, data mismatch, a
 *                         completion later than 10 s, failed IRQ update)
 *   0x718 THREAD_IRQS r   IRQ updates the thread sent (each one an edge)
 *
 * A write's effects on HASH/GHASH/WCOUNT are recorded when its callback
 * returns (after any blocking DMA): with h the old value, v the written value
 * and k the offset (HASH) or rid << 16 | offset (GHASH),
 * h' = ((h ^ v) * 0x100000001b3 + k + 1) mod 2^64. Failed writes (bus
 * errors) are not recorded.
 *
 * The background thread (--thread, or THREAD_CTL) loops over rounds n =
 * 0, 1, ...: it writes a pattern of 1..256 bytes (every 8th round 5000
 * bytes) into the scratch area (--scratch, default 0x3f00000, 16 KiB) with
 * a blocking coreio_dma_write, reads it back blocking and compares, does the
 * same with non-blocking transfers (waiting for the completion, which the
 * main thread's coreio_mainloop(-1) runs), then flips IRQ line iid 1 of
 * rid 0 and pauses --thread-pause microseconds (default 500).
 */

#define OM_RANGES	  2
#define OM_NB_SLOTS	  64
#define OM_DMA_LEN	  16
#define OM_ID		  0x4f52444d00000000ull
#define OM_SCRATCH	  0x3f00000ull
#define OM_SCRATCH_SIZE	  16384u
#define OM_THREAD_BIG	  5000u
#define OM_CPL_TIMEOUT_MS 10000

enum {
	REG_ID = 0x000,
	REG_SCRATCH = 0x008,
	REG_DMA_SRC = 0x300,
	REG_DMA_DST = 0x308,
	REG_NB_SRC = 0x310,
	REG_NB_DST = 0x318,
	REG_DMA_IRQ = 0x320,
	REG_STATE0 = 0x400,
	REG_STATE1 = 0x408,
	REG_DST_COUNT = 0x410,
	REG_DMA_ERRS = 0x418,
	REG_NBSUM0 = 0x420,
	REG_NBSUM1 = 0x428,
	REG_NB_DONE = 0x430,
	REG_NB_ERRS = 0x438,
	REG_IRQ = 0x500,
	REG_SEQ = 0x600,
	REG_WCOUNT = 0x608,
	REG_HASH = 0x610,
	REG_GHASH = 0x618,
	REG_NEST = 0x620,
	REG_GWCOUNT = 0x628,
	REG_THREAD_CTL = 0x700,
	REG_THREAD_OPS = 0x708,
	REG_THREAD_ERRS = 0x710,
	REG_THREAD_IRQS = 0x718,
	REG_FAIL = 0xf00,
};

struct om_range {
	unsigned rid;
	uint64_t scratch, seq, wcount, hash;
	uint64_t state[2];
	uint64_t dst_count, dma_errs;
	uint64_t nbsum[2], nb_done, nb_errs;
};

/* A non-blocking transfer started by NB_SRC / NB_DST: its buffer lives here until completion. */
struct om_nb {
	bool used;
	bool read;
	struct om_range *r;
	uint8_t buf[OM_DMA_LEN];
};

/* Everything below but the thread's part is touched by the main thread only (callbacks and
 * completions run in coreio_mainloop). */
static struct om_range om_ranges[OM_RANGES];
static struct om_nb om_nb[OM_NB_SLOTS];
static uint64_t om_ghash, om_gwcount, om_nest;
static unsigned om_depth;

/* The background thread. */
static pthread_mutex_t th_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t th_cond = PTHREAD_COND_INITIALIZER;
static bool th_run, th_idle = true;
static atomic_uint_fast64_t th_ops, th_errs, th_irqs;
static uint64_t th_scratch = OM_SCRATCH;
static long th_pause_us = 500;

static uint64_t om_mix(uint64_t h, uint64_t v, uint64_t k)
{
	return (h ^ v) * 0x100000001b3ull + k + 1;
}

static uint64_t om_get64(const void *p)
{
	const uint8_t *b = p;
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | b[i];
	return v;
}

static void om_put64(void *p, uint64_t v)
{
	uint8_t *b = p;

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
}

/* ---- non-blocking transfers of the callbacks ---------------------------- */

static void om_nb_cpl(void *opaque, int rc)
{
	struct om_nb *s = opaque;
	struct om_range *r = s->r;

	if (rc) {
		r->nb_errs++;
	} else if (s->read) {
		r->nbsum[0] += om_get64(s->buf);
		r->nbsum[1] += om_get64(s->buf + 8);
	}
	r->nb_done++;
	s->used = false;
}

static int om_nb_start(struct om_range *r, bool read, uint64_t addr)
{
	struct om_nb *s = NULL;
	int rc;

	for (unsigned i = 0; i < OM_NB_SLOTS && !s; i++)
		if (!om_nb[i].used)
			s = &om_nb[i];
	if (!s) {
		r->nb_errs++;
		return 1;
	}
	s->used = true;
	s->read = read;
	s->r = r;
	if (read) {
		memset(s->buf, 0, sizeof(s->buf));
		rc = coreio_dma_read(0, 0, addr, OM_DMA_LEN, s->buf, 0, om_nb_cpl, s);
	} else {
		om_put64(s->buf, r->state[0]);
		om_put64(s->buf + 8, r->state[1]);
		rc = coreio_dma_write(0, 0, addr, OM_DMA_LEN, s->buf, 0, om_nb_cpl, s);
	}
	if (rc) {
		s->used = false;
		r->nb_errs++;
		return 1;
	}
	return 0;
}

/* ---- MMIO callbacks ----------------------------------------------------- */

static void om_enter(void)
{
	if (om_depth++ > 0)
		om_nest++;
}

static int om_leave(int rc)
{
	om_depth--;
	return rc;
}

/* A blocking 16-byte DMA read into the state. Returns 0 or 1 (bus error). */
static int om_dma_src(struct om_range *r, uint64_t addr)
{
	uint8_t b[OM_DMA_LEN];

	if (coreio_dma_read(0, 0, addr, sizeof(b), b, 0, NULL, NULL)) {
		r->dma_errs++;
		return 1;
	}
	r->state[0] = om_get64(b);
	r->state[1] = om_get64(b + 8);
	return 0;
}

static int om_dma_dst(struct om_range *r, uint64_t addr)
{
	uint8_t b[OM_DMA_LEN];

	om_put64(b, r->state[0]);
	om_put64(b + 8, r->state[1]);
	if (coreio_dma_write(0, 0, addr, sizeof(b), b, 0, NULL, NULL)) {
		r->dma_errs++;
		return 1;
	}
	r->dst_count++;
	return 0;
}

static void om_thread_ctl(bool run)
{
	pthread_mutex_lock(&th_lock);
	th_run = run;
	pthread_cond_broadcast(&th_cond);
	pthread_mutex_unlock(&th_lock);
}

static bool om_thread_busy(void)
{
	bool busy;

	pthread_mutex_lock(&th_lock);
	busy = th_run || !th_idle;
	pthread_mutex_unlock(&th_lock);
	return busy;
}

static int om_reg_read(struct om_range *r, unsigned off, uint64_t *v)
{
	switch (off) {
	case REG_ID:
		*v = OM_ID | r->rid;
		break;
	case REG_SCRATCH:
		*v = r->scratch;
		break;
	case REG_STATE0:
	case REG_STATE1:
		*v = r->state[(off - REG_STATE0) / 8];
		break;
	case REG_DST_COUNT:
		*v = r->dst_count;
		break;
	case REG_DMA_ERRS:
		*v = r->dma_errs;
		break;
	case REG_NBSUM0:
	case REG_NBSUM1:
		*v = r->nbsum[(off - REG_NBSUM0) / 8];
		break;
	case REG_NB_DONE:
		*v = r->nb_done;
		break;
	case REG_NB_ERRS:
		*v = r->nb_errs;
		break;
	case REG_SEQ:
		*v = r->seq;
		break;
	case REG_WCOUNT:
		*v = r->wcount;
		break;
	case REG_HASH:
		*v = r->hash;
		break;
	case REG_GHASH:
		*v = om_ghash;
		break;
	case REG_NEST:
		*v = om_nest;
		break;
	case REG_GWCOUNT:
		*v = om_gwcount;
		break;
	case REG_THREAD_CTL:
		*v = om_thread_busy();
		break;
	case REG_THREAD_OPS:
		*v = atomic_load(&th_ops);
		break;
	case REG_THREAD_ERRS:
		*v = atomic_load(&th_errs);
		break;
	case REG_THREAD_IRQS:
		*v = atomic_load(&th_irqs);
		break;
	default:
		*v = 0;
		break;
	}
	return 0;
}

static int om_reg_write(struct om_range *r, unsigned off, uint64_t v)
{
	switch (off) {
	case REG_SCRATCH:
		r->scratch = v;
		return 0;
	case REG_DMA_SRC:
		return om_dma_src(r, v);
	case REG_DMA_DST:
		return om_dma_dst(r, v);
	case REG_NB_SRC:
	case REG_NB_DST:
		return om_nb_start(r, off == REG_NB_SRC, v);
	case REG_DMA_IRQ:
		if (om_dma_src(r, v))
			return 1;
		return coreio_irq_update(r->rid, 0, (unsigned)(r->state[0] & 1)) ? 1 : 0;
	case REG_STATE0:
	case REG_STATE1:
		r->state[(off - REG_STATE0) / 8] = v;
		return 0;
	case REG_IRQ:
		return coreio_irq_update(r->rid, (unsigned)(v >> 8) & 7, (unsigned)(v & 1)) ? 1 : 0;
	case REG_SEQ:
		r->seq = v;
		return 0;
	case REG_THREAD_CTL:
		om_thread_ctl(v != 0);
		return 0;
	default:
		return 0;
	}
}

static int om_read(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	struct om_range *r = priv;
	unsigned off = (unsigned)(addr & 0xfff);
	uint64_t v;
	int rc;

	(void)flags;
	om_enter();
	memset(buf, 0, len);
	if (len != 8 || (off & 7) || off >= REG_FAIL)
		return om_leave(1);
	rc = om_reg_read(r, off, &v);
	if (!rc)
		om_put64(buf, v);
	return om_leave(rc);
}

static int om_write(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	struct om_range *r = priv;
	unsigned off = (unsigned)(addr & 0xfff);
	uint64_t v;
	int rc;

	(void)flags;
	om_enter();
	if (len != 8 || (off & 7) || off >= REG_FAIL)
		return om_leave(1);
	v = om_get64(buf);
	rc = om_reg_write(r, off, v);
	if (!rc) {
		/* Recorded when the callback is done, after any DMA it waited for. */
		r->wcount++;
		r->hash = om_mix(r->hash, v, off);
		om_gwcount++;
		om_ghash = om_mix(om_ghash, v, (uint64_t)r->rid << 16 | off);
	}
	return om_leave(rc);
}

/* ---- the background thread ---------------------------------------------- */

struct th_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int rc;
};

/* Completion of the thread's non-blocking transfers: runs on the main thread. */
static void th_cpl(void *opaque, int rc)
{
	struct th_wait *w = opaque;

	pthread_mutex_lock(&w->lock);
	w->done = true;
	w->rc = rc;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

/* Wait for a completion; -ETIMEDOUT when none came within OM_CPL_TIMEOUT_MS. */
static int th_wait_cpl(struct th_wait *w)
{
	struct timespec ts;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += OM_CPL_TIMEOUT_MS / 1000;
	pthread_mutex_lock(&w->lock);
	while (!w->done && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&w->cond, &w->lock, &ts);
	rc = w->done ? w->rc : -ETIMEDOUT;
	pthread_mutex_unlock(&w->lock);
	return rc;
}

static void th_error(uint64_t round, const char *what, int rc)
{
	atomic_fetch_add(&th_errs, 1);
	fprintf(stderr, "coreio-ordermodel: thread round %" PRIu64 ": %s: %d\n", round, what, rc);
}

/*
 * One DMA of the thread; false when the thread must stop (a transfer may still use buf and
 * th_w). th_w is static: a completion may come after a timeout, when the thread is gone.
 */
static bool th_dma(uint64_t round, bool write, bool nb, uint64_t addr, size_t len, uint8_t *buf)
{
	static struct th_wait th_w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false,
				      0};
	int rc;

	if (nb) {
		pthread_mutex_lock(&th_w.lock);
		th_w.done = false;
		pthread_mutex_unlock(&th_w.lock);
	}
	if (write)
		rc = coreio_dma_write(0, 0, addr, len, buf, 0, nb ? th_cpl : NULL, &th_w);
	else
		rc = coreio_dma_read(0, 0, addr, len, buf, 0, nb ? th_cpl : NULL, &th_w);
	if (!rc && nb) {
		rc = th_wait_cpl(&th_w);
		if (rc == -ETIMEDOUT) {
			th_error(round, "completion later than 10 s; thread stops", rc);
			return false;
		}
	}
	if (rc) {
		th_error(round, write ? "dma write" : "dma read", rc);
		return rc != -ECONNRESET && rc != -ENOTCONN;
	}
	atomic_fetch_add(&th_ops, 1);
	return true;
}

static bool th_round(uint64_t n, uint8_t *wbuf, uint8_t *rbuf, unsigned *level)
{
	size_t len = n % 8 == 7 ? OM_THREAD_BIG : 1 + (size_t)(n * 37 % 256);
	uint64_t addr = th_scratch + n * 97 % (OM_SCRATCH_SIZE - OM_THREAD_BIG);

	for (int nb = 0; nb < 2; nb++) {
		for (size_t i = 0; i < len; i++)
			wbuf[i] = (uint8_t)(n * 13 + (unsigned)nb * 101 + i * 7 + 1);
		memset(rbuf, 0, len);
		if (!th_dma(n, true, nb, addr, len, wbuf) || !th_dma(n, false, nb, addr, len, rbuf))
			return false;
		if (memcmp(wbuf, rbuf, len))
			th_error(n, nb ? "non-blocking read-back mismatch" : "read-back mismatch",
				 0);
	}
	*level ^= 1;
	if (coreio_irq_update(0, 1, *level))
		th_error(n, "irq update", -1);
	else
		atomic_fetch_add(&th_irqs, 1);
	return true;
}

static void *th_main(void *arg)
{
	static uint8_t wbuf[OM_THREAD_BIG], rbuf[OM_THREAD_BIG];
	uint64_t n = 0;
	unsigned level = 0;

	(void)arg;
	for (;;) {
		pthread_mutex_lock(&th_lock);
		while (!th_run) {
			th_idle = true;
			pthread_cond_wait(&th_cond, &th_lock);
		}
		th_idle = false;
		pthread_mutex_unlock(&th_lock);
		if (!th_round(n++, wbuf, rbuf, &level))
			break;
		if (th_pause_us > 0) {
			struct timespec ts = {th_pause_us / 1000000, th_pause_us % 1000000 * 1000};

			nanosleep(&ts, NULL);
		}
	}
	/* Stopped for good: report idle so that a test waiting for it fails on the counts. */
	pthread_mutex_lock(&th_lock);
	th_run = false;
	th_idle = true;
	pthread_mutex_unlock(&th_lock);
	return NULL;
}

/* ---- process ------------------------------------------------------------ */

static void om_on_term(int sig)
{
	(void)sig;
	_exit(0);
}

/* Ends the process when stdin reaches EOF (the main thread stays in coreio_mainloop). */
static void *om_stdin_main(void *arg)
{
	char buf[256];

	(void)arg;
	for (;;) {
		ssize_t n = read(0, buf, sizeof(buf));

		if (n == 0 || (n < 0 && errno != EINTR))
			break;
	}
	fflush(stdout);
	_exit(0);
	return NULL;
}

static void om_usage(FILE *f)
{
	fprintf(f,
		"usage: coreio-ordermodel [--target T] [--ranges 1|2] [--no-caps] [--thread]\n"
		"                         [--thread-pause USEC] [--scratch ADDR]\n"
		"  --target T   host:port, [v6addr]:port, host or unix:/path (default: the\n"
		"               environment variables COREIO_VM / COREHDL_VM)\n"
		"  --ranges N   serve rid 0 (N = 1, the default) or rid 0 and 1 (N = 2)\n"
		"  --no-caps    offer no capabilities: speak exactly the base format\n"
		"  --thread     start the background DMA/IRQ thread at once\n"
		"  --thread-pause USEC  pause between the thread's rounds (default 500)\n"
		"  --scratch ADDR       the thread's 16 KiB of guest RAM (default 0x%llx)\n"
		"Prints READY once registered; exits 0 on stdin EOF or SIGTERM.\n"
		"The register map is at the top of tests/clients/ordermodel.c.\n",
		OM_SCRATCH);
}

static bool om_num(const char *s, unsigned long long max, unsigned long long *out)
{
	char *end;

	if (!s || !*s)
		return false;
	errno = 0;
	*out = strtoull(s, &end, 0);
	return !errno && !*end && *out <= max;
}

int main(int argc, char **argv)
{
	static const coreio_func_t funcs = {.read = om_read, .write = om_write};
	const char *target = NULL;
	bool no_caps = false, thread = false;
	unsigned long long nranges = 1, v = 0;
	pthread_t th, in;
	int rc;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
		bool ok = true;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			om_usage(stdout);
			return 0;
		} else if (!strcmp(a, "--no-caps")) {
			no_caps = true;
		} else if (!strcmp(a, "--thread")) {
			thread = true;
		} else if (!strcmp(a, "--target")) {
			ok = next && *next;
			target = next;
			i++;
		} else if (!strcmp(a, "--ranges")) {
			ok = om_num(next, OM_RANGES, &nranges) && nranges >= 1;
			i++;
		} else if (!strcmp(a, "--thread-pause")) {
			ok = om_num(next, 1000000, &v);
			th_pause_us = (long)v;
			i++;
		} else if (!strcmp(a, "--scratch")) {
			ok = om_num(next, UINT64_MAX - OM_SCRATCH_SIZE, &v);
			th_scratch = v;
			i++;
		} else {
			fprintf(stderr, "coreio-ordermodel: unknown argument '%s'\n", a);
			om_usage(stderr);
			return 1;
		}
		if (!ok) {
			fprintf(stderr, "coreio-ordermodel: %s: bad or missing value '%s'\n", a,
				next ? next : "");
			om_usage(stderr);
			return 1;
		}
	}

	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, om_on_term);
	if (no_caps && (rc = coreio_ctx_set_offer(coreio_default_ctx(), 0))) {
		fprintf(stderr, "coreio-ordermodel: set_offer: %s\n", strerror(-rc));
		return 1;
	}
	rc = coreio_connect(target);
	if (rc) {
		fprintf(stderr, "coreio-ordermodel: connect %s: %s\n", target ? target : "(env)",
			strerror(-rc));
		return 1;
	}
	for (unsigned i = 0; i < nranges; i++) {
		om_ranges[i].rid = i;
		rc = coreio_register(i, &funcs, &om_ranges[i]);
		if (rc) {
			fprintf(stderr, "coreio-ordermodel: register rid %u: %s\n", i,
				strerror(-rc));
			return 1;
		}
	}
	th_run = thread;
	if ((rc = pthread_create(&th, NULL, th_main, NULL)) ||
	    (rc = pthread_create(&in, NULL, om_stdin_main, NULL))) {
		fprintf(stderr, "coreio-ordermodel: pthread_create: %s\n", strerror(rc));
		return 1;
	}
	printf("READY\n");
	fflush(stdout);
	rc = coreio_mainloop(-1);
	fprintf(stderr, "coreio-ordermodel: main loop ended: %s\n", strerror(-rc));
	fflush(stdout);
	_exit(1);
}
