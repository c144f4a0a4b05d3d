/* coreio-virtio-console: a virtio console (virtio 1.x, 5.3), port 0 only, on stdin/stdout or a UNIX
 * socket. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "virtio.h"

#define PROG	   "coreio-virtio-console"
#define CON_QSIZE  64u
#define CON_RXQ	   0u /* receiveq of port 0: device to driver */
#define CON_TXQ	   1u /* transmitq of port 0: driver to device */
#define CON_IN_MAX 4096u
#define CON_TX_MAX (1u << 20) /* bytes of one transmit buffer passed on; the rest is dropped */

struct con_dev {
	int in_fd;     /* where input comes from; -1 when closed */
	int out_fd;    /* where output goes; -1 drops it */
	int listen_fd; /* --socket: the listening socket, else -1 */
	int peer_fd;   /* --socket: the connected peer, else -1 */
	const char *sock_path;
	uint8_t in[CON_IN_MAX];
	size_t in_len;
	struct vio_chain chain;
};

/*
 * Hand buffered input to the driver's receive buffers, as many as there
 * are. The input is written blocking so that bytes a buffer outside guest
 * RAM did not take stay buffered; the used ring is posted.
 */
static void con_rx(struct con_dev *k, struct vio_dev *d)
{
	while (k->in_len && vio_dev_running(d)) {
		size_t n;

		if (vio_queue_pop(d, CON_RXQ, &k->chain) <= 0)
			return;
		n = k->chain.wr_len < k->in_len ? (size_t)k->chain.wr_len : k->in_len;
		if (vio_chain_write(d, &k->chain, 0, k->in, n))
			n = 0;
		if (vio_queue_push(d, CON_RXQ, &k->chain, (uint32_t)n))
			return;
		memmove(k->in, k->in + n, k->in_len - n);
		k->in_len -= n;
		if (d->verbose)
			fprintf(stderr, PROG ": delivered %zu input bytes\n", n);
	}
}

static void con_drop_peer(struct con_dev *k)
{
	if (k->peer_fd < 0)
		return;
	close(k->peer_fd);
	k->peer_fd = -1;
	k->in_fd = -1;
	k->out_fd = -1;
}

static void con_output(struct con_dev *k, const uint8_t *p, size_t n)
{
	while (n && k->out_fd >= 0) {
		ssize_t w =
		    k->peer_fd >= 0 ? send(k->out_fd, p, n, MSG_NOSIGNAL) : write(k->out_fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (k->peer_fd >= 0)
				con_drop_peer(k);
			else
				k->out_fd = -1;
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

static void con_tx(struct con_dev *k, struct vio_dev *d)
{
	uint8_t buf[4096];

	while (vio_queue_pop(d, CON_TXQ, &k->chain) > 0) {
		uint64_t off = 0, len = k->chain.rd_len < CON_TX_MAX ? k->chain.rd_len : CON_TX_MAX;

		while (off < len) {
			size_t n = len - off < sizeof(buf) ? (size_t)(len - off) : sizeof(buf);

			if (vio_chain_read(d, &k->chain, off, buf, n))
				break;
			con_output(k, buf, n);
			off += n;
		}
		if (vio_queue_push(d, CON_TXQ, &k->chain, 0))
			return;
	}
}

static void con_kick(struct vio_dev *d, unsigned q)
{
	struct con_dev *k = d->priv;

	if (q == CON_TXQ)
		con_tx(k, d);
	else
		con_rx(k, d);
}

static int con_prepare(struct vio_dev *d, int nfds, fd_set *rfds, fd_set *wfds)
{
	struct con_dev *k = d->priv;

	(void)wfds;
	if (k->in_fd >= 0 && k->in_len < CON_IN_MAX && k->in_fd < FD_SETSIZE) {
		FD_SET(k->in_fd, rfds);
		if (k->in_fd >= nfds)
			nfds = k->in_fd + 1;
	}
	if (k->listen_fd >= 0 && k->listen_fd < FD_SETSIZE) {
		FD_SET(k->listen_fd, rfds);
		if (k->listen_fd >= nfds)
			nfds = k->listen_fd + 1;
	}
	return nfds;
}

static int con_process(struct vio_dev *d, fd_set *rfds, fd_set *wfds)
{
	struct con_dev *k = d->priv;

	(void)wfds;
	if (k->listen_fd >= 0 && FD_ISSET(k->listen_fd, rfds)) {
		int fd = accept4(k->listen_fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd >= 0 && k->peer_fd >= 0) {
			close(fd); /* one peer at a time */
		} else if (fd >= 0) {
			k->peer_fd = k->in_fd = k->out_fd = fd;
			if (d->verbose)
				fprintf(stderr, PROG ": peer connected\n");
		}
	}
	if (k->in_fd >= 0 && k->in_len < CON_IN_MAX && FD_ISSET(k->in_fd, rfds)) {
		ssize_t n = read(k->in_fd, k->in + k->in_len, CON_IN_MAX - k->in_len);

		if (n > 0) {
			k->in_len += (size_t)n;
		} else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
			if (k->peer_fd >= 0)
				con_drop_peer(k);
			else
				k->in_fd = -1; /* end of input */
		}
	}
	con_rx(k, d);
	return 0;
}

static void con_reset(struct vio_dev *d)
{
	(void)d; /* Input typed before the driver is ready stays buffered. */
}

static const struct vio_dev_ops con_ops = {
    .reset = con_reset,
    .queue_kick = con_kick,
    .prepare_fds = con_prepare,
    .process_fds = con_process,
};

static int con_listen(struct con_dev *k)
{
	struct sockaddr_un sa;
	int fd;

	if (strlen(k->sock_path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, PROG ": socket path too long: %s\n", k->sock_path);
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	strcpy(sa.sun_path, k->sock_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	unlink(k->sock_path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 1)) {
		fprintf(stderr, PROG ": %s: %s\n", k->sock_path, strerror(errno));
		close(fd);
		return -1;
	}
	k->listen_fd = fd;
	fprintf(stderr, PROG ": listening on unix:%s\n", k->sock_path);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: " PROG
	    " [--rid N] [--transport pci|mmio] [--verbose] [--socket PATH] TARGET\n" VIO_CLI_USAGE
	    "  --socket PATH        listen on a UNIX socket and use its one peer for input and\n"
	    "                       output (default: standard input and standard output)\n"
	    "A virtio console (device id 3), port 0 only: receiveq 0, transmitq 1.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    VIO_CLI_OPTIONS, {"socket", required_argument, NULL, 's'}, {NULL, 0, NULL, 0}};
	struct vio_cli cli = {.transport = VIO_TRANSPORT_PCI};
	static struct con_dev con = {.in_fd = 0, .out_fd = 1, .listen_fd = -1, .peer_fd = -1};
	static struct vio_dev dev;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int r = vio_cli_option(&cli, c, optarg, PROG);

		if (r > 0)
			continue;
		if (r < 0)
			return 2;
		switch (c) {
		case 's':
			con.sock_path = optarg;
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
	if (con.sock_path) {
		con.in_fd = -1;
		con.out_fd = -1;
		if (con_listen(&con))
			return 1;
	}
	if (vio_dev_init(&dev, VIO_ID_CONSOLE, VIO_BIT(VIO_F_INDIRECT_DESC), 2, CON_QSIZE, &con_ops,
			 &con))
		return 1;
	vio_run(&dev, &cli, PROG);
	vio_chain_free(&con.chain);
	if (con.listen_fd >= 0) {
		close(con.listen_fd);
		unlink(con.sock_path);
	}
	con_drop_peer(&con);
	return 1;
}
