/* coreio-virtio-rng: a virtio entropy device (virtio 1.x, 5.4) fed by getrandom(2). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "virtio.h"

#define PROG	    "coreio-virtio-rng"
#define RNG_QSIZE   64u
#define RNG_REQ_MAX 65536u /* bytes given for one request at most */

struct rng_dev {
	struct vio_chain chain;
};

static int fill_random(uint8_t *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = getrandom(buf + got, len - got, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)n;
	}
	return 0;
}

/*
 * Each chain's bytes go out as one posted write per guest buffer; should
 * one fail in guest memory, the chain comes back with length 0 (the
 * vio_chain_on_error default), so no entropy is claimed that did not land.
 */
static void rng_kick(struct vio_dev *d, unsigned q)
{
	struct rng_dev *r = d->priv;
	static uint8_t buf[RNG_REQ_MAX];
	int rc;

	while ((rc = vio_queue_pop(d, q, &r->chain)) > 0) {
		uint64_t want = r->chain.wr_len < RNG_REQ_MAX ? r->chain.wr_len : RNG_REQ_MAX;
		uint64_t done = 0;

		if (want && fill_random(buf, (size_t)want) == 0 &&
		    vio_chain_post(d, &r->chain, 0, buf, (size_t)want) == 0)
			done = want;
		if (d->verbose)
			fprintf(stderr, PROG ": request of %llu bytes: gave %llu\n",
				(unsigned long long)r->chain.wr_len, (unsigned long long)done);
		if (vio_queue_push(d, q, &r->chain, (uint32_t)done))
			break;
	}
}

static const struct vio_dev_ops rng_ops = {
    .queue_kick = rng_kick,
};

static void usage(FILE *f)
{
	fprintf(
	    f, "usage: " PROG " [--rid N] [--transport pci|mmio] [--verbose] TARGET\n" VIO_CLI_USAGE
	       "A virtio entropy device (device id 4, one request queue) fed by getrandom(2).\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {VIO_CLI_OPTIONS, {NULL, 0, NULL, 0}};
	struct vio_cli cli = {.transport = VIO_TRANSPORT_PCI};
	static struct rng_dev rng;
	static struct vio_dev dev;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int r = vio_cli_option(&cli, c, optarg, PROG);

		if (r > 0)
			continue;
		if (r == 0 && c == 'h') {
			usage(stdout);
			return 0;
		}
		if (r == 0)
			usage(stderr);
		return 2;
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	cli.target = argv[optind];
	if (vio_dev_init(&dev, VIO_ID_RNG, VIO_BIT(VIO_F_INDIRECT_DESC), 1, RNG_QSIZE, &rng_ops,
			 &rng))
		return 1;
	vio_run(&dev, &cli, PROG);
	vio_chain_free(&rng.chain);
	return 1;
}
