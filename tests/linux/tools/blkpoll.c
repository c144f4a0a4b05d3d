/* blkpoll: polled O_DIRECT block I/O in the Linux test guest (io_uring, IORING_SETUP_IOPOLL). */
/*
 * Built static by scripts/build-guest-image.sh into the guest's /bin. Raw
 * io_uring system calls, no liburing. One request in flight at a time (queue
 * depth 1); with IOPOLL the kernel finds completions by polling the device's
 * poll queue (virtio_blk.poll_queues=), never by waiting for an interrupt.
 *
 * Requests of more than 4 KiB: --bs (default 512 KiB, at most 128 segments of
 * ordinary pages, below virtio-blk's usual seg_max of 254, so the block layer
 * never splits them; a split request is not polled). --huge puts the buffer
 * in a transparent huge page, one segment per request.
 *
 * The data is a pattern: the 64-bit little-endian word at byte offset O of
 * the device is O ^ mix(seed). --write writes it over the region; reads
 * check it (the first and last word of every 512-byte sector while timing,
 * every word with --check full). tests/integration/test_linux_poll.py writes
 * and checks the same pattern on the host.
 *
 * Output: "BENCH key=value ..." lines (bench/virtio_blk.py parses them),
 * "POLL: ..." information, "POLL FAIL: ..." on a wrong answer or an I/O
 * error (exit 1) and "POLL UNAVAILABLE: ..." when polled I/O cannot be had
 * (exit 3): no io_uring, or the disk has no poll queue.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/io_uring.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define EXIT_FAIL	 1
#define EXIT_USAGE	 2
#define EXIT_UNAVAILABLE 3
#define SECTOR		 512u
#define BLOCK4K		 4096u
#define POISON		 0xa5 /* what a read buffer holds before the read */
#define WARMUP		 32   /* untimed 4 KiB reads before the timed ones */

struct ring {
	int fd;
	unsigned *sq_tail, *sq_mask, *sq_array;
	unsigned *cq_head, *cq_tail, *cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
};

struct opts {
	const char *dev;
	uint64_t mib, bs, n4k, nrand, seed;
	int write, read, full, huge;
};

static int dev_fd;
static uint64_t pattern_key;
static unsigned long long failures;

static uint64_t mix(uint64_t seed)
{
	return seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int ring_init(struct ring *r, unsigned entries)
{
	struct io_uring_params p;
	size_t sq_len, cq_len;
	uint8_t *sq, *cq;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_IOPOLL;
	r->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
	if (r->fd < 0)
		return -errno;
	sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (p.features & IORING_FEAT_SINGLE_MMAP) {
		if (cq_len > sq_len)
			sq_len = cq_len;
		cq_len = sq_len;
	}
	sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
		  IORING_OFF_SQ_RING);
	if (sq == MAP_FAILED)
		return -errno;
	cq = sq;
	if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
		cq = mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
			  IORING_OFF_CQ_RING);
		if (cq == MAP_FAILED)
			return -errno;
	}
	r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
	if (r->sqes == MAP_FAILED)
		return -errno;
	r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	r->sq_array = (unsigned *)(sq + p.sq_off.array);
	r->cq_head = (unsigned *)(cq + p.cq_off.head);
	r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
	r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	return 0;
}

/* One request at queue depth 1: submit, poll until it completes; the result or -errno. */
static long ring_rw(struct ring *r, int op, void *buf, uint32_t len, uint64_t off)
{
	for (;;) {
		unsigned tail = *r->sq_tail, idx = tail & *r->sq_mask, head;
		struct io_uring_sqe *sqe = &r->sqes[idx];
		long res;

		memset(sqe, 0, sizeof(*sqe));
		sqe->opcode = (uint8_t)op;
		sqe->fd = dev_fd;
		sqe->addr = (uint64_t)(uintptr_t)buf;
		sqe->len = len;
		sqe->off = off;
		sqe->user_data = off;
		r->sq_array[idx] = idx;
		__atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
		for (;;) {
			int n = (int)syscall(__NR_io_uring_enter, r->fd, 1, 1,
					     IORING_ENTER_GETEVENTS, NULL, 0);

			if (n >= 0 || errno != EINTR) {
				if (n < 0)
					return -errno;
				break;
			}
		}
		/* With IOPOLL, io_uring_enter returns once min_complete (1) completions were found.
		 */
		head = *r->cq_head;
		while (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) {
			int n = (int)syscall(__NR_io_uring_enter, r->fd, 0, 1,
					     IORING_ENTER_GETEVENTS, NULL, 0);

			if (n < 0 && errno != EINTR)
				return -errno;
		}
		res = r->cqes[head & *r->cq_mask].res;
		__atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
		if (res != -EAGAIN)
			return res;
	}
}

static void fill(uint64_t *buf, uint64_t off, uint64_t len)
{
	for (uint64_t i = 0; i < len / 8; i++)
		buf[i] = (off + 8 * i) ^ pattern_key;
}

/* Checks the pattern in buf (device bytes [off, off + len)); counts and reports mismatches. */
static int check(const uint64_t *buf, uint64_t off, uint64_t len, int full)
{
	uint64_t step = full ? 8 : SECTOR;

	for (uint64_t o = 0; o < len; o += step) {
		uint64_t i = o / 8, last = (o + SECTOR - 8) / 8;

		if (buf[i] != ((off + o) ^ pattern_key) ||
		    (!full && buf[last] != ((off + o + SECTOR - 8) ^ pattern_key))) {
			if (failures++ < 5)
				printf("POLL FAIL: wrong data at byte %llu: %016llx, expected "
				       "%016llx\n",
				       (unsigned long long)(off + o), (unsigned long long)buf[i],
				       (unsigned long long)((off + o) ^ pattern_key));
			return -1;
		}
	}
	return 0;
}

/* One timed request; adds its submit-to-completion time to *ns. */
static int timed_rw(struct ring *r, int op, void *buf, uint32_t len, uint64_t off, uint64_t *ns)
{
	uint64_t t0 = now_ns();
	long res = ring_rw(r, op, buf, len, off);

	*ns += now_ns() - t0;
	if (res == (long)len)
		return 0;
	printf("POLL FAIL: %s of %u bytes at %llu: %s\n", op == IORING_OP_READ ? "read" : "write",
	       len, (unsigned long long)off, res < 0 ? strerror((int)-res) : "short transfer");
	return -1;
}

static int sysfs_int(const char *dev, const char *what, long *out)
{
	const char *name = strrchr(dev, '/');
	char path[256], val[32];
	FILE *f;

	snprintf(path, sizeof(path), "/sys/block/%s/%s", name ? name + 1 : dev, what);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (!fgets(val, sizeof(val), f)) {
		fclose(f);
		return -1;
	}
	fclose(f);
	*out = strtol(val, NULL, 10);
	return 0;
}

/*
 * The I/O buffer, 2 MiB aligned. With huge, backed by a transparent huge page
 * where the kernel gives one, so a request of up to 2 MiB is one physically
 * contiguous segment; else ordinary pages, about one segment per 4 KiB (a
 * request of more segments than the device's seg_max is split, and the block
 * layer does not poll split requests). NULL when out of memory.
 */
static uint8_t *io_buffer(uint64_t len, int huge_pages)
{
	size_t huge = 2u << 20, n = (len + huge - 1) & ~(huge - 1);
	uint8_t *p =
	    mmap(NULL, n + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *a;

	if (p == MAP_FAILED)
		return NULL;
	a = (uint8_t *)(((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1));
	madvise(a, n, huge_pages ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	memset(a, 0, n);
	return a;
}

/* KiB of this process's memory in transparent huge pages (smaps_rollup), or -1. */
static long huge_kib(void)
{
	char line[128];
	long kib = -1;
	FILE *f = fopen("/proc/self/smaps_rollup", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "AnonHugePages: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static uint64_t parse_size(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (*end == 'K' || *end == 'k')
		v <<= 10, end++;
	else if (*end == 'M' || *end == 'm')
		v <<= 20, end++;
	if (errno || *end || end == s) {
		fprintf(stderr, "blkpoll: bad %s '%s'\n", what, s);
		exit(EXIT_USAGE);
	}
	return v;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: blkpoll [--mib N] [--bs BYTES] [--n4k N] [--nrand N] [--seed S]\n"
		   "               [--write] [--no-read] [--check full] [--huge] DEVICE\n"
		   "Polled O_DIRECT I/O on DEVICE (io_uring, IORING_SETUP_IOPOLL, queue depth 1)\n"
		   "over its first N MiB (default 64). --write writes the pattern of seed S\n"
		   "(default 1) in BYTES requests (default 512K); then, unless --no-read, it\n"
		   "reads the region sequentially in BYTES requests, makes 32 untimed and n4k\n"
		   "(default 1000) 4 KiB reads from offset 0, and nrand (default 200) at random\n"
		   "offsets (0 skips a kind), checking every read against the pattern.\n"
		   "--huge: the buffer in a transparent huge page (one segment per request);\n"
		   "the sequential metrics are then named pseq_*_huge_mbs.\n"
		   "Prints BENCH lines. Exit 1 on wrong data or an I/O error, 3 when polled\n"
		   "I/O is unavailable.\n");
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {{"mib", required_argument, NULL, 'm'},
					   {"bs", required_argument, NULL, 'b'},
					   {"n4k", required_argument, NULL, 'n'},
					   {"nrand", required_argument, NULL, 'r'},
					   {"seed", required_argument, NULL, 's'},
					   {"write", no_argument, NULL, 'w'},
					   {"no-read", no_argument, NULL, 'N'},
					   {"check", required_argument, NULL, 'c'},
					   {"huge", no_argument, NULL, 'H'},
					   {"help", no_argument, NULL, 'h'},
					   {NULL, 0, NULL, 0}};
	int c;

	*o = (struct opts){
	    .mib = 64, .bs = 512 << 10, .n4k = 1000, .nrand = 200, .seed = 1, .read = 1};
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'm':
			o->mib = parse_size(optarg, "--mib");
			break;
		case 'b':
			o->bs = parse_size(optarg, "--bs");
			break;
		case 'n':
			o->n4k = parse_size(optarg, "--n4k");
			break;
		case 'r':
			o->nrand = parse_size(optarg, "--nrand");
			break;
		case 's':
			o->seed = parse_size(optarg, "--seed");
			break;
		case 'w':
			o->write = 1;
			break;
		case 'N':
			o->read = 0;
			break;
		case 'c':
			if (strcmp(optarg, "full")) {
				fprintf(stderr, "blkpoll: --check takes 'full'\n");
				return -1;
			}
			o->full = 1;
			break;
		case 'H':
			o->huge = 1;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			return -1;
		}
	}
	if (optind != argc - 1 || o->mib == 0 || o->mib > (1u << 20) || o->bs < BLOCK4K ||
	    o->bs % BLOCK4K || o->bs > (64u << 20) || (o->mib << 20) % o->bs) {
		usage(stderr);
		return -1;
	}
	o->dev = argv[optind];
	return 0;
}

static double per_s(double amount, uint64_t ns)
{
	return ns ? amount * 1e9 / (double)ns : 0.0;
}

int main(int argc, char **argv)
{
	struct opts o;
	struct ring r;
	uint64_t region, ns, x;
	long io_poll = -1, sectors = 0;
	const char *sfx;
	uint8_t *buf;
	int rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (parse(argc, argv, &o))
		return EXIT_USAGE;
	sfx = o.huge ? "_huge" : ""; /* the sequential metrics' names with --huge */
	region = o.mib << 20;
	pattern_key = mix(o.seed);
	if (sysfs_int(o.dev, "queue/io_poll", &io_poll) || io_poll != 1) {
		printf("POLL UNAVAILABLE: %s has no poll queue (queue/io_poll %ld): boot with "
		       "virtio_blk.poll_queues=1, a device with VIRTIO_BLK_F_MQ and 2+ queues, and "
		       "2+ possible CPUs\n",
		       o.dev, io_poll);
		return EXIT_UNAVAILABLE;
	}
	if (sysfs_int(o.dev, "size", &sectors) || (uint64_t)sectors * SECTOR < region) {
		printf("POLL FAIL: %s has %ld sectors, fewer than %llu MiB\n", o.dev, sectors,
		       (unsigned long long)o.mib);
		return EXIT_FAIL;
	}
	dev_fd = open(o.dev, (o.write ? O_RDWR : O_RDONLY) | O_DIRECT);
	if (dev_fd < 0) {
		printf("POLL FAIL: open %s: %s\n", o.dev, strerror(errno));
		return EXIT_FAIL;
	}
	rc = ring_init(&r, 4);
	if (rc) {
		printf("POLL UNAVAILABLE: io_uring_setup with IORING_SETUP_IOPOLL: %s\n",
		       strerror(-rc));
		return EXIT_UNAVAILABLE;
	}
	buf = io_buffer(o.bs, o.huge);
	if (!buf) {
		printf("POLL FAIL: no memory for %llu bytes\n", (unsigned long long)o.bs);
		return EXIT_FAIL;
	}
	printf("POLL: %s io_poll=1 region=%llu MiB bs=%llu seed=%llu huge_pages=%s\n", o.dev,
	       (unsigned long long)o.mib, (unsigned long long)o.bs, (unsigned long long)o.seed,
	       huge_kib() > 0 ? "yes" : "no");

	if (o.write) {
		ns = 0;
		for (uint64_t off = 0; off < region; off += o.bs) {
			fill((uint64_t *)buf, off, o.bs);
			if (timed_rw(&r, IORING_OP_WRITE, buf, (uint32_t)o.bs, off, &ns))
				return EXIT_FAIL;
		}
		printf("BENCH pseq_write%s_mbs=%.2f mib=%llu bs=%llu ns=%llu\n", sfx,
		       per_s((double)region / 1e6, ns), (unsigned long long)o.mib,
		       (unsigned long long)o.bs, (unsigned long long)ns);
	}
	if (!o.read)
		return 0;

	ns = 0;
	for (uint64_t off = 0; off < region; off += o.bs) {
		memset(buf, POISON, o.bs);
		if (timed_rw(&r, IORING_OP_READ, buf, (uint32_t)o.bs, off, &ns))
			return EXIT_FAIL;
		check((const uint64_t *)buf, off, o.bs, o.full);
	}
	printf("BENCH pseq_read%s_mbs=%.2f mib=%llu bs=%llu ns=%llu\n", sfx,
	       per_s((double)region / 1e6, ns), (unsigned long long)o.mib, (unsigned long long)o.bs,
	       (unsigned long long)ns);

	if (o.n4k) {
		/* Untimed: under TCG the first requests also pay for translating code. */
		for (uint64_t i = 0; i < WARMUP; i++) {
			uint64_t off = (i * BLOCK4K) % region;

			if (timed_rw(&r, IORING_OP_READ, buf, BLOCK4K, off, &ns))
				return EXIT_FAIL;
			check((const uint64_t *)buf, off, BLOCK4K, o.full);
		}
		ns = 0;
		for (uint64_t i = 0; i < o.n4k; i++) {
			uint64_t off = (i * BLOCK4K) % region;

			memset(buf, POISON, BLOCK4K);
			if (timed_rw(&r, IORING_OP_READ, buf, BLOCK4K, off, &ns))
				return EXIT_FAIL;
			check((const uint64_t *)buf, off, BLOCK4K, o.full);
		}
		printf("BENCH pread4k_qd1_iops=%.2f n=%llu ns=%llu\n", per_s((double)o.n4k, ns),
		       (unsigned long long)o.n4k, (unsigned long long)ns);
	}
	if (o.nrand) {
		ns = 0;
		x = mix(o.seed + 1) | 1;
		for (uint64_t i = 0; i < o.nrand; i++) {
			uint64_t off;

			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			off = (x % (region / BLOCK4K)) * BLOCK4K;
			memset(buf, POISON, BLOCK4K);
			if (timed_rw(&r, IORING_OP_READ, buf, BLOCK4K, off, &ns))
				return EXIT_FAIL;
			check((const uint64_t *)buf, off, BLOCK4K, o.full);
		}
		printf("BENCH prandread4k_iops=%.2f n=%llu ns=%llu\n", per_s((double)o.nrand, ns),
		       (unsigned long long)o.nrand, (unsigned long long)ns);
	}
	if (failures) {
		printf("POLL FAIL: %llu requests returned wrong data\n", failures);
		return EXIT_FAIL;
	}
	printf("POLL: all reads matched the pattern of seed %llu\n", (unsigned long long)o.seed);
	return 0;
}
