/* coreio-virtio-blk: a virtio block device (virtio 1.x, 5.2) backed by a raw image file. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "virtio.h"

#define PROG	   "coreio-virtio-blk"
#define BLK_QSIZE  256u
#define BLK_SECTOR 512u
#define BLK_CHUNK  (1u << 20)
#define BLK_HDR	   16u /* struct virtio_blk_outhdr */
#define BLK_ID_LEN 20u

/* Feature bits (virtio 1.x, 5.2.3). */
#define BLK_F_SEG_MAX  2u
#define BLK_F_RO       5u
#define BLK_F_BLK_SIZE 6u
#define BLK_F_FLUSH    9u
#define BLK_F_MQ       12u

/* Request types and status values (virtio 1.x, 5.2.6). */
#define BLK_T_IN     0u
#define BLK_T_OUT    1u
#define BLK_T_FLUSH  4u
#define BLK_T_GET_ID 8u
#define BLK_S_OK     0u
#define BLK_S_IOERR  1u
#define BLK_S_UNSUPP 2u

/* struct virtio_blk_config offsets. */
#define BLK_CFG_CAPACITY   0u
#define BLK_CFG_SEG_MAX	   12u
#define BLK_CFG_BLK_SIZE   20u
#define BLK_CFG_NUM_QUEUES 34u
#define BLK_CFG_LEN	   60u

struct blk_dev {
	int fd;
	bool readonly;
	uint64_t sectors;
	char id[BLK_ID_LEN];
	uint8_t *bounce; /* BLK_HDR + BLK_CHUNK bytes: the header, then data */
	struct vio_chain chain;
};

/* True when [sector, sector + len / 512) lies inside the disk; len is a multiple of 512. */
static bool blk_in_range(const struct blk_dev *b, uint64_t sector, uint64_t len)
{
	return sector <= b->sectors && len / BLK_SECTOR <= b->sectors - sector;
}

/*
 * Data to the guest, from the file straight into guest memory when it is
 * shared (vio_chain_pread(): one pread() per guest-contiguous run, no copy);
 * otherwise through the bounce buffer, a MiB at a time, as posted writes
 * (copied), so the next request does not wait for them. One that fails in
 * guest memory turns the request into IOERR before it reaches the used ring
 * (vio_chain_on_error in blk_kick). A short read (the image shrank) is IOERR.
 */
static uint8_t blk_read(struct blk_dev *b, struct vio_dev *d, uint64_t sector, uint64_t len)
{
	size_t done;

	if (vio_chain_pread(d, &b->chain, 0, b->fd, sector * BLK_SECTOR, (size_t)len, b->bounce,
			    BLK_HDR + BLK_CHUNK, &done) ||
	    done != len)
		return BLK_S_IOERR;
	return BLK_S_OK;
}

/*
 * Data from the guest to the file; the first have bytes are already at
 * bounce + BLK_HDR (read along with the header on the socket path, none
 * with shared memory). The rest goes straight from guest memory when it is
 * shared (vio_chain_pwrite()), else a MiB at a time through the bounce
 * buffer.
 */
static uint8_t blk_write(struct blk_dev *b, struct vio_dev *d, uint64_t sector, uint64_t len,
			 size_t have)
{
	uint64_t foff = sector * BLK_SECTOR;
	size_t put = 0, done;

	if (have > len)
		have = (size_t)len;
	while (put < have) {
		ssize_t w =
		    pwrite(b->fd, b->bounce + BLK_HDR + put, have - put, (off_t)(foff + put));

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return BLK_S_IOERR;
		put += (size_t)w;
	}
	if (have == len)
		return BLK_S_OK;
	if (vio_chain_pwrite(d, &b->chain, BLK_HDR + have, b->fd, foff + have, (size_t)len - have,
			     b->bounce + BLK_HDR, BLK_CHUNK, &done) ||
	    done != len - have)
		return BLK_S_IOERR;
	return BLK_S_OK;
}

/* Serve one request; returns the bytes written into the chain before the status byte. */
static uint32_t blk_request(struct blk_dev *b, struct vio_dev *d, uint8_t *status)
{
	struct vio_chain *c = &b->chain;
	uint64_t data_in = c->wr_len - 1; /* writable bytes before the status byte */
	uint64_t data_out, sector;
	const uint8_t *hdr = b->bounce;
	size_t first;
	uint32_t type;

	*status = BLK_S_IOERR;
	if (c->rd_len < BLK_HDR)
		return 0;
	/*
	 * The header and (for OUT) the first MiB of data in one read: one DMA
	 * when the driver put them next to each other. Should the data part be
	 * unreadable, the header alone decides (an IN request ignores it).
	 * With shared guest memory the header alone: the data goes from guest
	 * memory to the file without a copy (blk_write).
	 */
	first = c->rd_len < BLK_HDR + BLK_CHUNK ? (size_t)c->rd_len : BLK_HDR + BLK_CHUNK;
	if (vio_dev_fd_direct(d))
		first = BLK_HDR;
	if (vio_chain_read(d, c, 0, b->bounce, first)) {
		if (first == BLK_HDR || vio_chain_read(d, c, 0, b->bounce, BLK_HDR))
			return 0;
		first = BLK_HDR;
	}
	type = (uint32_t)vio_get_le(hdr, 4);
	sector = vio_get_le(hdr + 8, 8);
	data_out = c->rd_len - BLK_HDR;
	switch (type) {
	case BLK_T_IN:
		if (data_in % BLK_SECTOR || !blk_in_range(b, sector, data_in))
			return 0;
		*status = blk_read(b, d, sector, data_in);
		return *status == BLK_S_OK ? (uint32_t)data_in : 0;
	case BLK_T_OUT:
		if (b->readonly || data_out % BLK_SECTOR || !blk_in_range(b, sector, data_out))
			return 0;
		*status = blk_write(b, d, sector, data_out, first - BLK_HDR);
		return 0;
	case BLK_T_FLUSH:
		*status = b->readonly || fsync(b->fd) == 0 ? BLK_S_OK : BLK_S_IOERR;
		return 0;
	case BLK_T_GET_ID: {
		size_t n = data_in < BLK_ID_LEN ? (size_t)data_in : BLK_ID_LEN;

		if (vio_chain_post(d, c, 0, b->id, n))
			return 0;
		*status = BLK_S_OK;
		return (uint32_t)n;
	}
	default:
		*status = BLK_S_UNSUPP;
		return 0;
	}
}

static void blk_kick(struct vio_dev *d, unsigned q)
{
	struct blk_dev *b = d->priv;
	int rc;

	while ((rc = vio_queue_pop(d, q, &b->chain)) > 0) {
		uint32_t written = 0;
		uint8_t status;

		if (b->chain.wr_len == 0) {
			/* No room for a status byte: nothing can be reported. */
			if (d->verbose)
				fprintf(stderr, PROG ": request without a status byte\n");
		} else {
			written = blk_request(b, d, &status);
			/* Should a posted data write fail: IOERR, the status byte only. */
			vio_chain_on_error(&b->chain, 1, BLK_S_IOERR);
			if (vio_chain_post(d, &b->chain, b->chain.wr_len - 1, &status, 1) == 0)
				written++;
			else
				written = 0;
			if (d->verbose)
				fprintf(stderr,
					PROG ": queue %u request head %u: status %u, %u bytes\n", q,
					b->chain.head, status, written);
		}
		if (vio_queue_push(d, q, &b->chain, written))
			break;
	}
}

static const struct vio_dev_ops blk_ops = {
    .queue_kick = blk_kick,
};

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: " PROG " [--rid N] [--transport pci|mmio] [--verbose] [--readonly]\n"
	    "       [--serial ID] [--queues N] --image FILE TARGET\n" VIO_CLI_USAGE
	    "  --image FILE         raw disk image (its size, rounded down to 512, is the disk)\n"
	    "  --readonly           offer VIRTIO_BLK_F_RO; writes fail with IOERR\n"
	    "  --serial ID          the GET_ID string (up to 20 bytes; default from the file "
	    "name)\n"
	    "  --queues N           request queues, 1..8 (default 1); N > 1 offers MQ with\n"
	    "                       num_queues N (Linux: per vCPU, and virtio_blk.poll_queues=)\n"
	    "A virtio block device (device id 2): IN, OUT, FLUSH, GET_ID on every queue.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {VIO_CLI_OPTIONS,
					     {"image", required_argument, NULL, 'i'},
					     {"readonly", no_argument, NULL, 'R'},
					     {"serial", required_argument, NULL, 's'},
					     {"queues", required_argument, NULL, 'q'},
					     {NULL, 0, NULL, 0}};
	struct vio_cli cli = {.transport = VIO_TRANSPORT_PCI};
	static struct blk_dev blk;
	static struct vio_dev dev;
	const char *image = NULL, *serial = NULL;
	unsigned long queues = 1;
	uint64_t features;
	char *end;
	off_t size;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int r = vio_cli_option(&cli, c, optarg, PROG);

		if (r > 0)
			continue;
		if (r < 0)
			return 2;
		switch (c) {
		case 'i':
			image = optarg;
			break;
		case 'R':
			blk.readonly = true;
			break;
		case 's':
			serial = optarg;
			break;
		case 'q':
			errno = 0;
			queues = strtoul(optarg, &end, 10);
			if (errno || *end || end == optarg || queues < 1 ||
			    queues > VIO_MAX_QUEUES) {
				fprintf(stderr, PROG ": bad --queues '%s' (1..%u)\n", optarg,
					VIO_MAX_QUEUES);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1 || !image) {
		usage(stderr);
		return 2;
	}
	cli.target = argv[optind];
	blk.fd = open(image, blk.readonly ? O_RDONLY : O_RDWR);
	if (blk.fd < 0) {
		fprintf(stderr, PROG ": %s: %s\n", image, strerror(errno));
		return 1;
	}
	size = lseek(blk.fd, 0, SEEK_END);
	if (size < 0) {
		fprintf(stderr, PROG ": %s: %s\n", image, strerror(errno));
		return 1;
	}
	blk.sectors = (uint64_t)size / BLK_SECTOR;
	if (!serial) {
		const char *slash = strrchr(image, '/');

		serial = slash ? slash + 1 : image;
	}
	/* Zero-padded; an id of exactly 20 bytes has no terminator (virtio 1.x, 5.2.6). */
	memcpy(blk.id, serial, strnlen(serial, BLK_ID_LEN));
	blk.bounce = malloc(BLK_HDR + BLK_CHUNK);
	if (!blk.bounce)
		return 1;
	features = VIO_BIT(VIO_F_INDIRECT_DESC) | VIO_BIT(BLK_F_SEG_MAX) | VIO_BIT(BLK_F_BLK_SIZE) |
		   VIO_BIT(BLK_F_FLUSH) | (blk.readonly ? VIO_BIT(BLK_F_RO) : 0) |
		   (queues > 1 ? VIO_BIT(BLK_F_MQ) : 0);
	if (vio_dev_init(&dev, VIO_ID_BLOCK, features, (unsigned)queues, BLK_QSIZE, &blk_ops, &blk))
		return 1;
	dev.config_len = BLK_CFG_LEN;
	vio_put_le(dev.config + BLK_CFG_CAPACITY, blk.sectors, 8);
	vio_put_le(dev.config + BLK_CFG_SEG_MAX, BLK_QSIZE - 2, 4);
	vio_put_le(dev.config + BLK_CFG_BLK_SIZE, BLK_SECTOR, 4);
	/* Read by the driver only when MQ was negotiated; 1 otherwise is harmless. */
	vio_put_le(dev.config + BLK_CFG_NUM_QUEUES, queues, 2);
	fprintf(stderr, PROG ": %s: %llu sectors, %lu queue%s%s\n", image,
		(unsigned long long)blk.sectors, queues, queues > 1 ? "s" : "",
		blk.readonly ? ", read-only" : "");
	vio_run(&dev, &cli, PROG);
	vio_chain_free(&blk.chain);
	free(blk.bounce);
	close(blk.fd);
	return 1;
}
