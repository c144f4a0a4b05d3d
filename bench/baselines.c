/* coreio-baselines: raw socket ping-pong, socket streaming and memcpy, the baselines CoreIO
 * benchmarks compare against. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * Each measurement prints one JSON line. The peer is a forked process, as a
 * CoreIO client is a separate process from the VM.
 *
 *   pingpong: a 64-byte message there and back, blocking read()s, the
 *             pattern of one forwarded MMIO read; reports ns per round trip.
 *   stream:   one side writes SIZE-byte chunks as fast as it can, the other
 *             reads them (in SIZE-byte reads); reports MB/s (10^6 bytes per
 *             second). With --sizes, the same for each size in turn (a fresh
 *             socket pair each) and the best of them: the socket's best rate
 *             in this run, whatever write size gives it.
 *   memcpy:   one buffer copied into another; reports MB/s.
 *   pieces:   the reference protocol's DMA as the reference implementation
 *             runs it: a SIZE-byte transfer cut into 32-byte pieces, one
 *             64-byte message each way per piece, each written and read
 *             with its own system call, at most 1024 pieces in flight
 *             (coreio-wire-base.md); the peer answers every message at
 *             once; reports MB/s of payload.
 */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int full_io(int fd, void *buf, size_t len, int write_it)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = write_it ? write(fd, p, len) : read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* A connected pair of sockets of the given family ("tcp" over loopback, or "unix"). */
static int make_pair(const char *family, int sv[2])
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int one = 1, lfd;

	if (strcmp(family, "unix") == 0)
		return socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &alen) < 0)
		return -1;
	sv[0] = socket(AF_INET, SOCK_STREAM, 0);
	if (sv[0] < 0 || connect(sv[0], (struct sockaddr *)&a, sizeof(a)) < 0)
		return -1;
	sv[1] = accept(lfd, NULL, NULL);
	close(lfd);
	if (sv[1] < 0)
		return -1;
	setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
}

/* --cpus A,B: the measuring process runs on CPU A, its peer on CPU B (-1: anywhere). */
static int cpu_self = -1, cpu_peer = -1;

static void pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		perror("coreio-baselines: sched_setaffinity");
}

static int pingpong(const char *family, long iters)
{
	uint8_t msg[64] = {0};
	int sv[2], status;
	pid_t pid;
	double t0, dt;

	if (make_pair(family, sv) < 0) {
		perror("coreio-baselines: socket pair");
		return 1;
	}
	pid = fork();
	if (pid == 0) {
		pin(cpu_peer);
		close(sv[0]);
		for (long i = 0; i < iters + 100; i++)
			if (full_io(sv[1], msg, sizeof(msg), 0) < 0 ||
			    full_io(sv[1], msg, sizeof(msg), 1) < 0)
				_exit(1);
		_exit(0);
	}
	pin(cpu_self);
	close(sv[1]);
	for (int i = 0; i < 100; i++) /* warm-up */
		if (full_io(sv[0], msg, sizeof(msg), 1) < 0 ||
		    full_io(sv[0], msg, sizeof(msg), 0) < 0)
			return 1;
	t0 = now_s();
	for (long i = 0; i < iters; i++)
		if (full_io(sv[0], msg, sizeof(msg), 1) < 0 ||
		    full_io(sv[0], msg, sizeof(msg), 0) < 0)
			return 1;
	dt = now_s() - t0;
	close(sv[0]);
	waitpid(pid, &status, 0);
	printf("{\"bench\": \"baseline\", \"what\": \"pingpong\", \"transport\": \"%s\", "
	       "\"ns_per_op\": %.0f, \"n\": %ld, \"cpus\": [%d, %d]}\n",
	       family, dt * 1e9 / (double)iters, iters, cpu_self, cpu_peer);
	return 0;
}

/* One stream of total bytes in chunk-byte writes; returns MB/s, or a negative value on failure. */
static double stream_once(const char *family, size_t chunk, size_t total)
{
	uint8_t *buf = malloc(chunk);
	int sv[2], status;
	pid_t pid;
	double t0, dt;
	uint8_t ack = 0;

	if (!buf || make_pair(family, sv) < 0) {
		perror("coreio-baselines: stream set-up");
		free(buf);
		return -1;
	}
	memset(buf, 0x5a, chunk);
	pid = fork();
	if (pid == 0) {
		close(sv[0]);
		for (size_t got = 0; got < total; got += chunk)
			if (full_io(sv[1], buf, chunk, 0) < 0)
				_exit(1);
		_exit(full_io(sv[1], &ack, 1, 1) < 0);
	}
	close(sv[1]);
	t0 = now_s();
	for (size_t sent = 0; sent < total; sent += chunk)
		if (full_io(sv[0], buf, chunk, 1) < 0) {
			free(buf);
			return -1;
		}
	if (full_io(sv[0], &ack, 1, 0) < 0) { /* the reader has everything */
		free(buf);
		return -1;
	}
	dt = now_s() - t0;
	close(sv[0]);
	waitpid(pid, &status, 0);
	free(buf);
	return (double)total / dt / 1e6;
}

#define MAX_SIZES 32

/*
 * Stream in each of the nsizes write sizes; print one line with the best
 * rate, the size that gave it and (for more than one size) every rate.
 */
static int stream(const char *family, const size_t *sizes, int nsizes, size_t total)
{
	double mbs[MAX_SIZES], best = -1;
	size_t bytes[MAX_SIZES];
	int b = 0;

	for (int i = 0; i < nsizes; i++) {
		/* Whole chunks only, at least one. */
		bytes[i] = total < sizes[i] ? sizes[i] : total / sizes[i] * sizes[i];
		mbs[i] = stream_once(family, sizes[i], bytes[i]);
		if (mbs[i] < 0)
			return 1;
		if (mbs[i] > best) {
			best = mbs[i];
			b = i;
		}
	}
	printf("{\"bench\": \"baseline\", \"what\": \"stream\", \"transport\": \"%s\", "
	       "\"size\": %zu, \"mb_per_s\": %.1f, \"bytes\": %zu",
	       family, sizes[b], best, bytes[b]);
	if (nsizes > 1) {
		printf(", \"by_size\": {");
		for (int i = 0; i < nsizes; i++)
			printf("%s\"%zu\": %.1f", i ? ", " : "", sizes[i], mbs[i]);
		printf("}");
	}
	printf("}\n");
	return 0;
}

/* "A,B,C" (each as strtoull() takes it, > 0) into sizes; returns the count, or -1. */
static int parse_sizes(const char *arg, size_t *sizes)
{
	int n = 0;
	const char *p = arg;

	for (;;) {
		char *end;
		unsigned long long v;

		errno = 0;
		v = strtoull(p, &end, 0);
		if (errno || end == p || v == 0 || n == MAX_SIZES || (*end && *end != ','))
			return -1;
		sizes[n++] = (size_t)v;
		if (!*end)
			return n;
		p = end + 1;
	}
}

#define PIECE_BYTES 32
#define PIECE_MSG   64
#define PIECE_MAX   1024 /* pieces in flight */

static int pieces(const char *family, size_t size, size_t total)
{
	size_t npieces = (size + PIECE_BYTES - 1) / PIECE_BYTES, transfers = total / size;
	uint8_t msg[PIECE_MSG] = {0};
	int sv[2], status;
	pid_t pid;
	double t0, dt;

	if (make_pair(family, sv) < 0) {
		perror("coreio-baselines: socket pair");
		return 1;
	}
	pid = fork();
	if (pid == 0) {
		/* The VM side: every request answered with its own write(). */
		close(sv[0]);
		while (full_io(sv[1], msg, sizeof(msg), 0) == 0)
			if (full_io(sv[1], msg, sizeof(msg), 1) < 0)
				_exit(1);
		_exit(0);
	}
	close(sv[1]);
	t0 = now_s();
	for (size_t t = 0; t < transfers; t++) {
		size_t sent = 0, done = 0;

		while (done < npieces) {
			while (sent < npieces && sent - done < PIECE_MAX) {
				if (full_io(sv[0], msg, sizeof(msg), 1) < 0)
					return 1;
				sent++;
			}
			if (full_io(sv[0], msg, sizeof(msg), 0) < 0)
				return 1;
			done++;
		}
	}
	dt = now_s() - t0;
	close(sv[0]);
	waitpid(pid, &status, 0);
	printf("{\"bench\": \"baseline\", \"what\": \"pieces\", \"transport\": \"%s\", "
	       "\"size\": %zu, \"mb_per_s\": %.1f, \"bytes\": %zu}\n",
	       family, size, (double)(transfers * size) / dt / 1e6, transfers * size);
	return 0;
}

static int copy(size_t size, size_t total)
{
	/* Page-aligned buffers: with malloc()'s 16-byte headers, two small buffers end up
	 * (b - a) % 4096 == 16 apart, where some CPUs' rep movsb is many times slower. */
	size_t alloc = (size + 4095) & ~(size_t)4095;
	uint8_t *a = aligned_alloc(4096, alloc), *b = aligned_alloc(4096, alloc);
	double t0, dt;
	size_t done = 0;

	if (!a || !b) {
		perror("coreio-baselines: malloc");
		return 1;
	}
	memset(a, 1, size);
	memset(b, 2, size);
	t0 = now_s();
	while (done < total) {
		memcpy(b, a, size);
		a[done % size] ^= b[(done + 1) % size]; /* keep the copy from being elided */
		done += size;
	}
	dt = now_s() - t0;
	printf("{\"bench\": \"baseline\", \"what\": \"memcpy\", \"size\": %zu, \"mb_per_s\": %.1f, "
	       "\"bytes\": %zu}\n",
	       size, (double)done / dt / 1e6, done);
	free(a);
	free(b);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: coreio-baselines pingpong tcp|unix [--n N] [--cpus A,B]\n"
		   "       coreio-baselines stream tcp|unix [--size BYTES | --sizes A,B,..]\n"
		   "                        [--total BYTES]\n"
		   "       coreio-baselines memcpy [--size BYTES] [--total BYTES]\n"
		   "       coreio-baselines pieces tcp|unix [--size BYTES] [--total BYTES]\n"
		   "Prints one JSON line: the baseline a CoreIO benchmark compares against.\n"
		   "  pingpong  64-byte round trips between two processes (ns per round trip)\n"
		   "  stream    one-way throughput in SIZE-byte writes (MB/s); with --sizes,\n"
		   "            each size in turn and the best (\"size\": the one that gave\n"
		   "            it, \"by_size\": every rate), at most 32 sizes\n"
		   "  memcpy    copy throughput of SIZE-byte buffers (MB/s)\n"
		   "  pieces    SIZE-byte DMA as the reference protocol runs it: 32-byte\n"
		   "            pieces, one 64-byte message and system call each way per\n"
		   "            piece, at most 1024 in flight (MB/s of payload)\n"
		   "--cpus A,B pins the measuring process to CPU A and its peer to CPU B.\n"
		   "Defaults: --n 20000, --size 1048576, --total 268435456.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"n", required_argument, NULL, 'n'},
					     {"size", required_argument, NULL, 's'},
					     {"total", required_argument, NULL, 't'},
					     {"cpus", required_argument, NULL, 'c'},
					     {"sizes", required_argument, NULL, 'S'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	long n = 20000;
	size_t size = 1u << 20, total = 256u << 20, sizes[MAX_SIZES];
	int c, nsizes = 0;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			n = strtol(optarg, NULL, 0);
			break;
		case 's':
			size = strtoull(optarg, NULL, 0);
			break;
		case 't':
			total = strtoull(optarg, NULL, 0);
			break;
		case 'S':
			nsizes = parse_sizes(optarg, sizes);
			if (nsizes < 0) {
				fprintf(stderr,
					"coreio-baselines: bad --sizes '%s' (A,B,..: at most %d "
					"positive sizes)\n",
					optarg, MAX_SIZES);
				return 2;
			}
			break;
		case 'c':
			if (sscanf(optarg, "%d,%d", &cpu_self, &cpu_peer) != 2 || cpu_self < 0 ||
			    cpu_peer < 0 || cpu_self >= CPU_SETSIZE || cpu_peer >= CPU_SETSIZE) {
				fprintf(stderr, "coreio-baselines: bad --cpus '%s' (A,B)\n",
					optarg);
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
	if (n < 1 || size < 1 || (total < size && nsizes == 0)) {
		fprintf(stderr, "coreio-baselines: --n, --size and --total must be positive, "
				"--total at least --size\n");
		return 2;
	}
	if (optind < argc && strcmp(argv[optind], "memcpy") == 0)
		return copy(size, total);
	if (optind + 1 < argc &&
	    (strcmp(argv[optind + 1], "tcp") == 0 || strcmp(argv[optind + 1], "unix") == 0)) {
		if (strcmp(argv[optind], "pingpong") == 0)
			return pingpong(argv[optind + 1], n);
		if (strcmp(argv[optind], "stream") == 0) {
			if (nsizes == 0)
				sizes[nsizes++] = size;
			return stream(argv[optind + 1], sizes, nsizes, total);
		}
		if (strcmp(argv[optind], "pieces") == 0)
			return pieces(argv[optind + 1], size, total);
	}
	usage(stderr);
	return 2;
}
