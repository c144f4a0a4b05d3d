/* libFuzzer harness of stream reassembly: the input goes through a socketpair in chunks of
 * input-chosen sizes into coreio__wire_rx_fill(_fds)/rx_next, which must cut it exactly. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "wire.h"

#define SEED_BYTES 8u

/* xorshift64*: the chunk sizes and fd attachments, from the input's first bytes. */
static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

struct run {
	struct coreio_wire_rx *rx;
	struct coreio_wire_fdq q;
	bool with_fds;
	const uint8_t *stream;
	size_t len;
	size_t received; /* bytes the reader has taken from the socket */
	size_t consumed; /* bytes of whole frames handed out */
	unsigned frames;
};

/* Take every complete frame out of rx and check it against the stream. */
static void take_frames(struct run *r)
{
	const uint8_t *f;
	size_t len, have;

	for (;;) {
		size_t start = r->rx->start;
		int got = coreio__wire_rx_next(r->rx, &f, &len);

		FUZZ_CHECK(got == 0 || got == 1);
		if (!got)
			break;
		FUZZ_CHECK(f == r->rx->buf + start);
		FUZZ_CHECK(len == coreio__wire_frame_len(coreio__wire_get64(f)));
		FUZZ_CHECK(len >= COREIO_WIRE_UNIT && len <= COREIO_WIRE_MAX_MSG &&
			   len % COREIO_WIRE_UNIT == 0);
		FUZZ_CHECK(r->rx->end <= sizeof(r->rx->buf));
		FUZZ_CHECK(f + len <= r->rx->buf + r->rx->end);
		FUZZ_CHECK(r->rx->start == start + len);
		FUZZ_CHECK(r->consumed + len <= r->received);
		FUZZ_CHECK(memcmp(f, r->stream + r->consumed, len) == 0);
		if (r->with_fds) {
			int fds[4];
			unsigned n;

			FUZZ_CHECK(coreio__wire_rx_frame_pos(r->rx, &r->q, f) == r->consumed);
			n = coreio__wire_fdq_take(&r->q, r->consumed, len, fds, 4);
			for (unsigned i = 0; i < n && i < 4; i++) {
				FUZZ_CHECK(fcntl(fds[i], F_GETFD) >= 0);
				close(fds[i]);
			}
			/* What stays queued belongs to later bytes already received. */
			for (unsigned i = 0; i < r->q.n; i++)
				FUZZ_CHECK(r->q.pos[i] >= r->consumed + len &&
					   r->q.pos[i] < r->q.total);
		}
		r->consumed += len;
		r->frames++;
	}
	have = r->received - r->consumed;
	FUZZ_CHECK(r->rx->end - r->rx->start == have);
	FUZZ_CHECK(coreio__wire_rx_partial(r->rx) == (have != 0));
	/* rx_next said "more needed": the rest is shorter than the frame it starts. */
	if (have >= 8)
		FUZZ_CHECK(coreio__wire_frame_len(coreio__wire_get64(r->stream + r->consumed)) >
			   have);
}

/* Read what the socket has; returns false once the writer closed and all is read. */
static bool drain(struct run *r, int fd)
{
	for (;;) {
		long n = r->with_fds ? coreio__wire_rx_fill_fds(r->rx, fd, &r->q)
				     : coreio__wire_rx_fill(r->rx, fd);

		if (n == -EAGAIN)
			return true;
		FUZZ_CHECK(n >= 0);
		if (n == 0)
			return false;
		r->received += (size_t)n;
		FUZZ_CHECK(r->received <= r->len);
		if (r->with_fds)
			FUZZ_CHECK(r->q.total == r->received);
		take_frames(r);
	}
}

/* Send up to n bytes, with one fd attached when fd >= 0; returns the bytes sent (may be 0). */
static size_t send_chunk(int sock, const uint8_t *p, size_t n, int fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = {.iov_base = (void *)(uintptr_t)p, .iov_len = n};
	struct msghdr mh;
	ssize_t k;

	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (fd >= 0) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	do {
		k = sendmsg(sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	} while (k < 0 && errno == EINTR);
	if (k < 0) {
		FUZZ_CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
		return 0;
	}
	return (size_t)k;
}

/* The lowest free fd number: a fd leaked by an iteration shows up as a change. */
static int lowest_free_fd(void)
{
	int fd = dup(0);

	FUZZ_CHECK(fd >= 0);
	close(fd);
	return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int null_fd = -1;
	size_t seed_n = size < SEED_BYTES ? size : SEED_BYTES;
	uint64_t seed = fuzz_le(data, (unsigned)seed_n) | 1; /* xorshift needs a non-zero state */
	struct run r;
	size_t sent = 0;
	int sv[2], low;
	bool alive = true;

	if (null_fd < 0) {
		null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		FUZZ_CHECK(null_fd >= 0);
	}
	low = lowest_free_fd();
	memset(&r, 0, sizeof(r));
	r.rx = malloc(sizeof(*r.rx)); /* exactly its size: reads beyond it are caught */
	FUZZ_CHECK(r.rx != NULL);
	coreio__wire_rx_init(r.rx);
	coreio__wire_fdq_init(&r.q);
	r.with_fds = data && size > 0 && (data[0] & 1);
	r.stream = data + seed_n;
	r.len = size - seed_n;
	FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);

	while (sent < r.len) {
		uint64_t x = next_rand(&seed);
		size_t chunk;
		int fd = -1;

		switch (x % 10) {
		case 0:
		case 1:
		case 2:
		case 3:
		case 4:
			chunk = 1 + (size_t)((x >> 8) % 64); /* a few bytes: headers cut anywhere */
			break;
		case 5:
		case 6:
		case 7:
			chunk = 1 + (size_t)((x >> 8) % 4096);
			break;
		default:
			chunk = 1 + (size_t)((x >> 8) % (3 * COREIO_WIRE_MAX_MSG));
			break;
		}
		if (chunk > r.len - sent)
			chunk = r.len - sent;
		if (r.with_fds && ((x >> 40) & 7) == 0)
			fd = null_fd;
		sent += send_chunk(sv[1], r.stream + sent, chunk, fd);
		/* Reading whenever something was sent keeps the socket from filling up for good. */
		alive = drain(&r, sv[0]);
		FUZZ_CHECK(alive);
	}
	close(sv[1]);
	while (alive)
		alive = drain(&r, sv[0]);
	close(sv[0]);
	FUZZ_CHECK(r.received == r.len);
	FUZZ_CHECK(r.consumed + (r.rx->end - r.rx->start) == r.len);
	if (r.with_fds)
		coreio__wire_fdq_clear(&r.q);
	free(r.rx);
	FUZZ_CHECK(lowest_free_fd() == low);
	return 0;
}
