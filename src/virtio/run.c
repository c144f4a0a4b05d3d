/* The shared command line and main loop of the virtio device models. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>

#include "virtio.h"
#include "virtio_transport.h"

int vio_cli_option(struct vio_cli *cli, int c, const char *arg, const char *prog)
{
	char *end;
	unsigned long v;

	switch (c) {
	case 0x100:
		errno = 0;
		v = strtoul(arg, &end, 0);
		if (errno || *end || end == arg || v > 7) {
			fprintf(stderr, "%s: bad --rid '%s' (0..7)\n", prog, arg);
			return -1;
		}
		cli->rid = (unsigned)v;
		return 1;
	case 0x101:
		if (!strcmp(arg, "pci")) {
			cli->transport = VIO_TRANSPORT_PCI;
		} else if (!strcmp(arg, "mmio")) {
			cli->transport = VIO_TRANSPORT_MMIO;
		} else {
			fprintf(stderr, "%s: bad --transport '%s' (pci or mmio)\n", prog, arg);
			return -1;
		}
		return 1;
	case 0x102:
		cli->verbose = true;
		return 1;
	case 0x103:
		cli->event_idx = VIO_EVENT_IDX_OFF;
		return 1;
	case 0x104:
		if (!strcmp(arg, "auto")) {
			cli->event_idx = VIO_EVENT_IDX_AUTO;
		} else if (!strcmp(arg, "on")) {
			cli->event_idx = VIO_EVENT_IDX_ON;
		} else if (!strcmp(arg, "off")) {
			cli->event_idx = VIO_EVENT_IDX_OFF;
		} else {
			fprintf(stderr, "%s: bad --event-idx '%s' (auto, on or off)\n", prog, arg);
			return -1;
		}
		return 1;
	default:
		return 0;
	}
}

static uint64_t reg_mask(const struct vio_dev *d)
{
	return vio_transport_of(d)->size - 1;
}

/* MMIO callbacks: only register state changes here; queue work waits for the main loop. */
static int mmio_read_cb(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	struct vio_dev *d = priv;

	(void)flags;
	return vio_transport_read(d, addr & reg_mask(d), len, buf);
}

static int mmio_write_cb(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	struct vio_dev *d = priv;

	(void)flags;
	return vio_transport_write(d, addr & reg_mask(d), len, buf);
}

static void vm_reset_cb(void *opaque)
{
	struct vio_dev *d = opaque;

	if (d->verbose)
		vio_log(d, COREIO_LOG_DEBUG, "virtio: VM reset");
	vio_dev_request_reset(d);
}

static volatile sig_atomic_t stop_signal; /* with COREIO_VIRTIO_STATS: SIGTERM or SIGINT seen */

static void on_stop(int sig)
{
	stop_signal = sig;
}

/* True when the environment asks for the DMA counters at exit (COREIO_VIRTIO_STATS=1). */
static bool want_stats(void)
{
	const char *v = getenv("COREIO_VIRTIO_STATS");

	return v && *v && strcmp(v, "0") != 0;
}

/* One line of DMA counters: blocking reads and writes are the round trips the device waited for. */
static void print_stats(const struct vio_dev *d, const char *prog)
{
	unsigned long long n = d->stat_chains;

	fprintf(
	    stderr,
	    "%s: DMA: %llu chains, %llu blocking reads, %llu blocking writes, %llu posted writes "
	    "(%llu failed); per chain %.2f blocking round trips\n",
	    prog, n, d->stat_dma_reads, d->stat_dma_writes, d->stat_dma_posted, d->stat_post_errors,
	    n ? (double)(d->stat_dma_reads + d->stat_dma_writes) / (double)n : 0.0);
	/* File data of vio_chain_pread()/pwrite(): straight to/from shared guest memory or not. */
	fprintf(stderr,
		"%s: file I/O: %llu direct transfers (%llu bytes, no copy), %llu bytes through a "
		"buffer\n",
		prog, d->stat_fd_direct, d->stat_fd_direct_bytes, d->stat_fd_bounce_bytes);
}

static int loop(struct vio_dev *d)
{
	for (;;) {
		fd_set rfds, wfds;
		struct timeval tv;
		int nfds, rc;

		if (stop_signal)
			return -EINTR;
		vio_dev_poll(d);
		FD_ZERO(&rfds);
		FD_ZERO(&wfds);
		nfds = coreio_ctx_preparefds(d->ctx, 0, &rfds, &wfds);
		if (nfds < 0)
			return nfds;
		if (d->ops->prepare_fds) {
			nfds = d->ops->prepare_fds(d, nfds, &rfds, &wfds);
			if (nfds < 0)
				return nfds;
		}
		tv.tv_sec = (d->kick_pending || d->kick_all || d->reset_pending) ? 0 : 1;
		tv.tv_usec = 0;
		rc = select(nfds, &rfds, &wfds, NULL, &tv);
		if (rc < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (rc == 0) {
			FD_ZERO(&rfds);
			FD_ZERO(&wfds);
		}
		rc = coreio_ctx_processfds(d->ctx, &rfds, &wfds);
		if (rc)
			return rc;
		if (d->ops->process_fds) {
			rc = d->ops->process_fds(d, &rfds, &wfds);
			if (rc < 0)
				return rc;
		}
	}
}

/* The messages of libcoreio (coreio_ctx_set_log()) and of the virtio library
 * (vio_dev_set_log()) go to stderr, one line each. */
static void run_log(void *opaque, int level, const char *msg)
{
	(void)opaque, (void)level;
	fprintf(stderr, "%s\n", msg);
}

int vio_run(struct vio_dev *d, const struct vio_cli *cli, const char *prog)
{
	coreio_func_t funcs;
	coreio_ctx_t *ctx;
	int rc;

	signal(SIGPIPE, SIG_IGN);
	d->transport = cli->transport;
	d->verbose = cli->verbose;
	vio_dev_set_log(d, run_log, NULL);
	rc = coreio_ctx_new(&ctx);
	if (rc) {
		fprintf(stderr, "%s: %s\n", prog, strerror(-rc));
		return rc;
	}
	coreio_ctx_set_log(ctx, run_log, NULL);
	rc = coreio_ctx_connect(ctx, cli->target);
	if (rc) {
		fprintf(stderr, "%s: connect %s: %s\n", prog, cli->target, strerror(-rc));
		coreio_ctx_free(ctx);
		return rc;
	}
	vio_dev_set_ctx(d, ctx, cli->rid);
	if (cli->event_idx == VIO_EVENT_IDX_AUTO) {
		int caps = coreio_ctx_caps(ctx);

		vio_dev_set_event_idx(d, caps > 0 && (caps & COREIO_CAP_SHM_BIT));
	} else {
		vio_dev_set_event_idx(d, cli->event_idx == VIO_EVENT_IDX_ON);
	}
	coreio_ctx_set_reset_cb(ctx, vm_reset_cb, d);
	memset(&funcs, 0, sizeof(funcs));
	funcs.read = mmio_read_cb;
	funcs.write = mmio_write_cb;
	rc = coreio_ctx_register(ctx, cli->rid, &funcs, d);
	if (rc) {
		fprintf(stderr, "%s: register rid %u: %s\n", prog, cli->rid, strerror(-rc));
		coreio_ctx_free(ctx);
		return rc;
	}
	fprintf(stderr, "%s: serving rid %u on %s (virtio-%s, device id %u)\n", prog, cli->rid,
		cli->target, vio_transport_of(d)->name, d->device_id);
	if (want_stats()) {
		/* So that the counters are printed when a supervisor ends the model, too. */
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_stop;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
	}
	rc = loop(d);
	if (rc == -ECONNRESET)
		fprintf(stderr, "%s: the VM closed the connection; exiting\n", prog);
	else if (rc == -EINTR && stop_signal)
		fprintf(stderr, "%s: stopped by signal %d; exiting\n", prog, (int)stop_signal);
	else
		fprintf(stderr, "%s: %s\n", prog, strerror(-rc));
	/* Writes still posted complete here (with -ECONNRESET). */
	coreio_ctx_free(ctx);
	d->ctx = NULL;
	d->host = NULL;
	if (d->verbose || want_stats())
		print_stats(d, prog);
	return rc < 0 ? rc : -ECONNRESET;
}
