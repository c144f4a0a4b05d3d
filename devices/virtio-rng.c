/* coreio-virtio-rng: a virtio entropy device (virtio 1.x, 5.4) fed by getrandom(2), or by a seeded
 * PRNG for replays. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "virtio.h"

#define PROG	    "coreio-virtio-rng"
#define RNG_QSIZE   64u
#define RNG_REQ_MAX 65536u /* bytes given for one request at most */

struct rng_dev {
	struct vio_chain chain;
	bool seeded;	   /* --seed: the splitmix64 stream below instead of getrandom(2) */
	uint64_t state;	   /* splitmix64 state */
	uint8_t out[8];	   /* the current output word, little-endian */
	unsigned out_left; /* bytes of out not handed out yet (taken from out[8 - out_left]) */
};

/*
 * --seed N: splitmix64 (state += 0x9e3779b97f4a7c15, then the output mix),
 * state starting at N, each 64-bit output handed out as 8 little-endian
 * bytes, one continuous byte stream across requests. Not entropy: for
 * tests and replays, where the same requests must get the same bytes.
 */
static uint64_t splitmix64_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill_seeded(struct rng_dev *r, uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (r->out_left == 0) {
			uint64_t v = splitmix64_next(&r->state);

			for (unsigned k = 0; k < 8; k++)
				r->out[k] = (uint8_t)(v >> (8 * k));
			r->out_left = 8;
		}
		buf[i] = r->out[8 - r->out_left--];
	}
}

static int fill_random(struct rng_dev *r, uint8_t *buf, size_t len)
{
	size_t got = 0;

	if (r->seeded) {
		fill_seeded(r, buf, len);
		return 0;
	}

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

		if (want && fill_random(r, buf, (size_t)want) == 0 &&
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
	fprintf(f,
		"usage: " PROG
		" [--rid N] [--transport pci|mmio] [--verbose] [--seed N] TARGET\n" VIO_CLI_USAGE
		"  --seed N             NOT ENTROPY: serve a fixed pseudo-random stream\n"
		"                       (splitmix64 from state N, 0..2^64-1, each output 8\n"
		"                       little-endian bytes) instead of getrandom(2), so that a\n"
		"                       run can be replayed (docs/record-replay.md); for tests\n"
		"                       and replays only, never for a guest that needs entropy\n"
		"A virtio entropy device (device id 4, one request queue) fed by getrandom(2)\n"
		"(or, with --seed, by that fixed stream).\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    VIO_CLI_OPTIONS, {"seed", required_argument, NULL, 's'}, {NULL, 0, NULL, 0}};
	struct vio_cli cli = {.transport = VIO_TRANSPORT_PCI};
	static struct rng_dev rng;
	static struct vio_dev dev;
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int r = vio_cli_option(&cli, c, optarg, PROG);

		if (r > 0)
			continue;
		if (r < 0)
			return 2;
		switch (c) {
		case 's':
			errno = 0;
			rng.state = strtoull(optarg, &end, 0);
			if (errno || *end || end == optarg || optarg[0] == '-') {
				fprintf(stderr, PROG ": bad --seed '%s' (0..2^64-1)\n", optarg);
				return 2;
			}
			rng.seeded = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	cli.target = argv[optind];
	if (rng.seeded)
		fprintf(stderr,
			PROG ": --seed %llu: serving a fixed pseudo-random stream, NOT entropy "
			     "(for tests and replays only)\n",
			(unsigned long long)rng.state);
	if (vio_dev_init(&dev, VIO_ID_RNG, VIO_BIT(VIO_F_INDIRECT_DESC), 1, RNG_QSIZE, &rng_ops,
			 &rng))
		return 1;
	vio_run(&dev, &cli, PROG);
	vio_chain_free(&rng.chain);
	return 1;
}
