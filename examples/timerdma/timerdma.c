/* coreio-timerdma: an example timer / IRQ / DMA peripheral served over CoreIO (see README.md). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

#include "coreio.h"
#include "timerdma-regs.h"

/* Where a DMA command is in its life. */
enum td_phase {
	TD_IDLE,
	TD_START,   /* DMA_CMD written; the main loop starts it */
	TD_READING, /* copy: the read from SRC is in flight */
	TD_READ_OK, /* copy: read done; the main loop starts the write */
	TD_WRITING, /* the write to DST is in flight */
};

struct td_dev {
	unsigned rid;
	unsigned mid, sid; /* --mid/--sid: the IOMMU and region its DMA goes through (0: direct) */
	bool verbose;
	unsigned busy_us;     /* --busy-poll: look without sleeping this long after a wake-up */
	long long spin_until; /* td_now_us() before which select() does not sleep */
	uint32_t ctrl;
	uint32_t period_us;
	uint32_t status;
	uint32_t ticks;
	uint64_t dma_src;
	uint64_t dma_dst;
	uint32_t dma_len;
	uint32_t dma_cmd;
	long long next_us; /* next timer expiry; valid while the timer runs */
	/* The DMA command in progress. */
	enum td_phase phase;
	uint32_t cur_cmd;
	uint64_t cur_src;
	uint64_t cur_dst;
	uint32_t cur_len;
	uint8_t *buf;
};

static struct td_dev td;

static long long td_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static bool td_timer_running(const struct td_dev *d)
{
	return (d->ctrl & TD_CTRL_TIMER_EN) && d->period_us > 0;
}

/* Tell the VM the level of IRQ 0; the library drops repeats of the same level. */
static void td_irq_sync(struct td_dev *d)
{
	unsigned level = (d->status & 7u) && (d->ctrl & TD_CTRL_IRQ_EN);
	int rc = coreio_irq_update(d->rid, 0, level);

	if (rc && d->verbose)
		fprintf(stderr, "coreio-timerdma: irq_update: %s\n", strerror(-rc));
}

/* Count every expiry that is due and schedule the next one. */
static void td_timer_poll(struct td_dev *d, long long now)
{
	if (!td_timer_running(d) || now < d->next_us)
		return;
	d->ticks++;
	d->status |= TD_STATUS_TIMER;
	d->next_us += d->period_us;
	if (d->next_us <= now)
		d->next_us = now + d->period_us; /* fell behind: skip the missed expiries */
}

static void td_dma_finish(struct td_dev *d, int rc)
{
	free(d->buf);
	d->buf = NULL;
	d->phase = TD_IDLE;
	d->status |= rc ? TD_STATUS_DMA_ERR : TD_STATUS_DMA_DONE;
	if (d->verbose)
		fprintf(stderr, "coreio-timerdma: dma cmd %u len %u: %s\n", d->cur_cmd, d->cur_len,
			rc ? strerror(-rc) : "done");
}

static void td_write_done(void *opaque, int rc)
{
	struct td_dev *d = opaque;

	if (d->phase == TD_WRITING)
		td_dma_finish(d, rc);
}

static void td_read_done(void *opaque, int rc)
{
	struct td_dev *d = opaque;

	if (d->phase != TD_READING)
		return;
	if (rc)
		td_dma_finish(d, rc);
	else
		d->phase = TD_READ_OK;
}

static void td_start_write(struct td_dev *d)
{
	int rc;

	d->phase = TD_WRITING;
	rc = coreio_dma_write(d->mid, d->sid, d->cur_dst, d->cur_len, d->buf, 0, td_write_done, d);
	if (rc && d->phase == TD_WRITING)
		td_dma_finish(d, rc);
}

/* Start the command that DMA_CMD asked for, from the main loop. */
static void td_dma_start(struct td_dev *d)
{
	int rc;

	d->cur_cmd = d->dma_cmd;
	d->cur_src = d->dma_src;
	d->cur_dst = d->dma_dst;
	d->cur_len = d->dma_len;
	if (d->cur_len > TD_DMA_MAX || (d->cur_cmd != TD_CMD_COPY && d->cur_cmd != TD_CMD_FILL)) {
		td_dma_finish(d, -EINVAL);
		return;
	}
	if (d->cur_len == 0) {
		td_dma_finish(d, 0);
		return;
	}
	d->buf = malloc(d->cur_len);
	if (!d->buf) {
		td_dma_finish(d, -ENOMEM);
		return;
	}
	if (d->cur_cmd == TD_CMD_FILL) {
		memset(d->buf, (int)(d->cur_src & 0xff), d->cur_len);
		td_start_write(d);
		return;
	}
	d->phase = TD_READING;
	rc = coreio_dma_read(d->mid, d->sid, d->cur_src, d->cur_len, d->buf, 0, td_read_done, d);
	if (rc && d->phase == TD_READING)
		td_dma_finish(d, rc);
}

/* The register block as the guest sees it, in little-endian byte order. */
static void td_image(const struct td_dev *d, uint8_t img[TD_REGS_SIZE])
{
	uint64_t words[][2] = {
	    {TD_ID, TD_ID_VALUE},
	    {TD_CTRL, d->ctrl},
	    {TD_PERIOD_US, d->period_us},
	    {TD_STATUS, d->status},
	    {TD_TICKS, d->ticks},
	    {TD_DMA_LEN, d->dma_len},
	    {TD_DMA_BUSY, d->phase != TD_IDLE},
	};

	memset(img, 0, TD_REGS_SIZE);
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		for (int b = 0; b < 4; b++)
			img[words[i][0] + b] = (uint8_t)(words[i][1] >> (8 * b));
	for (int b = 0; b < 8; b++) {
		img[TD_DMA_SRC + b] = (uint8_t)(d->dma_src >> (8 * b));
		img[TD_DMA_DST + b] = (uint8_t)(d->dma_dst >> (8 * b));
	}
}

static uint64_t td_get(const uint8_t *img, unsigned off, unsigned n)
{
	uint64_t v = 0;

	for (unsigned b = 0; b < n; b++)
		v |= (uint64_t)img[off + b] << (8 * b);
	return v;
}

/* True if [off, off + len) touches the register at reg of rlen bytes. */
static bool td_touches(uint64_t off, size_t len, unsigned reg, unsigned rlen)
{
	return off < reg + rlen && reg < off + len;
}

static int td_read(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	struct td_dev *d = priv;
	uint8_t img[TD_REGS_SIZE];
	uint64_t off = addr & 0xfff;
	uint8_t *out = buf;

	td_timer_poll(d, td_now_us());
	td_image(d, img);
	for (size_t i = 0; i < len; i++)
		out[i] = off + i < TD_REGS_SIZE ? img[off + i] : 0;
	if (d->verbose)
		fprintf(stderr, "coreio-timerdma: read  %#" PRIx64 " len %zu value %#" PRIx64 "\n",
			addr, len,
			off < TD_REGS_SIZE ? td_get(out, 0, len > 8 ? 8 : (unsigned)len) : 0);
	(void)flags;
	return 0;
}

static int td_write(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	struct td_dev *d = priv;
	uint8_t merged[TD_REGS_SIZE], raw[TD_REGS_SIZE];
	uint64_t off = addr & 0xfff;
	const uint8_t *in = buf;
	uint32_t old_ctrl = d->ctrl;
	long long now = td_now_us();

	(void)flags;
	td_timer_poll(d, now);
	td_image(d, merged);
	memset(raw, 0, sizeof(raw));
	for (size_t i = 0; i < len; i++) {
		if (off + i < TD_REGS_SIZE) {
			merged[off + i] = in[i];
			raw[off + i] = in[i];
		}
	}
	if (d->verbose)
		fprintf(stderr, "coreio-timerdma: write %#" PRIx64 " len %zu value %#" PRIx64 "\n",
			addr, len, td_get(in, 0, len > 8 ? 8 : (unsigned)len));
	if (td_touches(off, len, TD_CTRL, 4))
		d->ctrl = (uint32_t)td_get(merged, TD_CTRL, 4) & 3u;
	if (td_touches(off, len, TD_PERIOD_US, 4)) {
		d->period_us = (uint32_t)td_get(merged, TD_PERIOD_US, 4);
		d->next_us = now + d->period_us;
	}
	if (!(old_ctrl & TD_CTRL_TIMER_EN) && (d->ctrl & TD_CTRL_TIMER_EN))
		d->next_us = now + d->period_us;
	if (td_touches(off, len, TD_STATUS, 4))
		d->status &= ~(uint32_t)td_get(raw, TD_STATUS, 4);
	if (td_touches(off, len, TD_DMA_SRC, 8))
		d->dma_src = td_get(merged, TD_DMA_SRC, 8);
	if (td_touches(off, len, TD_DMA_DST, 8))
		d->dma_dst = td_get(merged, TD_DMA_DST, 8);
	if (td_touches(off, len, TD_DMA_LEN, 4))
		d->dma_len = (uint32_t)td_get(merged, TD_DMA_LEN, 4);
	if (td_touches(off, len, TD_DMA_CMD, 4)) {
		uint32_t cmd = (uint32_t)td_get(raw, TD_DMA_CMD, 4);

		/* A command while one is in progress is ignored. */
		if (cmd && d->phase == TD_IDLE) {
			d->dma_cmd = cmd;
			d->phase = TD_START;
		}
	}
	/*
	 * Update the line now, not later from the main loop: the IRQ update then
	 * goes out before the answer to the guest's next read, on the same
	 * ordered connection, so a guest that clears STATUS and reads it back
	 * has a low line before its EOI (no second level-triggered delivery).
	 */
	td_irq_sync(d);
	return 0;
}

static void td_reset(void *opaque)
{
	struct td_dev *d = opaque;

	if (d->verbose)
		fprintf(stderr, "coreio-timerdma: VM reset\n");
	d->ctrl = 0;
	d->period_us = 0;
	d->status = 0;
	d->ticks = 0;
	d->dma_src = 0;
	d->dma_dst = 0;
	d->dma_len = 0;
	/* A DMA in flight finishes on its own; its result is no longer reported. */
	if (d->phase == TD_START || d->phase == TD_READ_OK) {
		free(d->buf);
		d->buf = NULL;
		d->phase = TD_IDLE;
	}
}

static void td_usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: coreio-timerdma [--rid N] [--mid N] [--sid S] [--busy-poll USEC] [--verbose]\n"
	    "       TARGET\n"
	    "  TARGET     host:port, [v6addr]:port, host or unix:/path of the VM\n"
	    "  --rid N    range id to serve (default 0)\n"
	    "  --mid N    DMA through IOMMU N (default 0: guest-physical addresses)\n"
	    "  --sid S    IOMMU region id of the DMA (0..15, default 0)\n"
	    "  --busy-poll USEC  poll without sleeping for USEC after each request\n"
	    "             (coreio_ctx_set_busy_poll(); default 0: off)\n"
	    "  --verbose  log accesses and DMA on stderr\n"
	    "A timer / IRQ / DMA peripheral; README.md lists its registers.\n");
}

static int td_loop(struct td_dev *d)
{
	for (;;) {
		fd_set rfds, wfds;
		struct timeval tv;
		long long now, wait_us = 1000000;
		int nfds, rc;

		if (d->phase == TD_START)
			td_dma_start(d);
		if (d->phase == TD_READ_OK)
			td_start_write(d);
		now = td_now_us();
		td_timer_poll(d, now);
		td_irq_sync(d);
		if (td_timer_running(d)) {
			wait_us = d->next_us - now;
			if (wait_us < 0)
				wait_us = 0;
		}
		FD_ZERO(&rfds);
		FD_ZERO(&wfds);
		nfds = coreio_preparefds(0, &rfds, &wfds);
		if (nfds < 0)
			return nfds;
		if (now < d->spin_until)
			wait_us = 0; /* busy-polling: the next request is expected soon */
		tv.tv_sec = wait_us / 1000000;
		tv.tv_usec = wait_us % 1000000;
		rc = select(nfds, &rfds, &wfds, NULL, &tv);
		if (rc > 0 && d->busy_us)
			d->spin_until = td_now_us() + d->busy_us;
		if (rc < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (rc == 0) {
			FD_ZERO(&rfds);
			FD_ZERO(&wfds);
		}
		rc = coreio_processfds(&rfds, &wfds);
		if (rc)
			return rc;
	}
}

/* The library's messages (coreio_set_log()) go to stderr, one line each. */
static void td_log(void *opaque, int level, const char *msg)
{
	(void)opaque, (void)level;
	fprintf(stderr, "%s\n", msg);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"rid", required_argument, NULL, 'r'},
	    {"mid", required_argument, NULL, 'm'},
	    {"sid", required_argument, NULL, 's'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {"busy-poll", required_argument, NULL, 'b'},
	    {NULL, 0, NULL, 0},
	};
	coreio_func_t funcs;
	unsigned long n, busy = 0;
	char *end;
	int c, rc;

	td.rid = 0;
	while ((c = getopt_long(argc, argv, "r:m:s:b:vh", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			errno = 0;
			busy = strtoul(optarg, &end, 0);
			if (errno || *end || end == optarg || busy > COREIO_BUSY_POLL_MAX_US) {
				fprintf(stderr, "coreio-timerdma: bad --busy-poll '%s' (0..%u)\n",
					optarg, COREIO_BUSY_POLL_MAX_US);
				return 2;
			}
			break;
		case 'm':
		case 's':
			errno = 0;
			n = strtoul(optarg, &end, 0);
			if (errno || *end || end == optarg || n > (c == 'm' ? 7u : 15u)) {
				fprintf(stderr, "coreio-timerdma: bad --%s '%s' (0..%u)\n",
					c == 'm' ? "mid" : "sid", optarg, c == 'm' ? 7u : 15u);
				return 2;
			}
			*(c == 'm' ? &td.mid : &td.sid) = (unsigned)n;
			break;
		case 'r':
			errno = 0;
			td.rid = (unsigned)strtoul(optarg, &end, 0);
			if (errno || *end || end == optarg || td.rid > 7) {
				fprintf(stderr, "coreio-timerdma: bad --rid '%s' (0..7)\n", optarg);
				return 2;
			}
			break;
		case 'v':
			td.verbose = true;
			break;
		case 'h':
			td_usage(stdout);
			return 0;
		default:
			td_usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		td_usage(stderr);
		return 2;
	}
	/* This program runs its own select() loop (td_loop() spins); the
	 * library's setting serves coreio_mainloop() and says so in one place. */
	td.busy_us = (unsigned)busy;
	rc = coreio_ctx_set_busy_poll(coreio_default_ctx(), (unsigned)busy);
	coreio_set_log(td_log, NULL);
	if (rc == 0)
		rc = coreio_connect(argv[optind]);
	if (rc) {
		fprintf(stderr, "coreio-timerdma: connect %s: %s\n", argv[optind], strerror(-rc));
		return 1;
	}
	coreio_set_reset_cb(td_reset, &td);
	memset(&funcs, 0, sizeof(funcs));
	funcs.read = td_read;
	funcs.write = td_write;
	rc = coreio_register(td.rid, &funcs, &td);
	if (rc) {
		fprintf(stderr, "coreio-timerdma: register rid %u: %s\n", td.rid, strerror(-rc));
		return 1;
	}
	if (td.verbose)
		fprintf(stderr, "coreio-timerdma: serving rid %u on %s\n", td.rid, argv[optind]);
	rc = td_loop(&td);
	if (rc == -ECONNRESET)
		fprintf(stderr, "coreio-timerdma: the VM closed the connection; exiting\n");
	else
		fprintf(stderr, "coreio-timerdma: %s\n", strerror(-rc));
	coreio_disconnect();
	return 1;
}
