/* Unit tests for the shared wire module: encoding, validation and stream reassembly. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "wire.h"

static size_t make(uint8_t *buf, uint8_t op, uint8_t size, bool origin, uint8_t extra)
{
	struct coreio_wire_hdr h = {
	    .iface = 3,
	    .extra = extra,
	    .origin = origin,
	    .tag = 0xdeadbeef,
	    .op = op,
	    .size = size,
	    .sid = 5,
	    .flags = 4,
	    .mask = 0xff,
	    .addr = 0xd0000010,
	};

	return coreio__wire_encode(buf, &h);
}

static void test_word_order(void **state)
{
	uint8_t b[8];

	(void)state;
	coreio__wire_put64(b, 0x0102030405060708ULL);
	assert_int_equal(b[0], 0x08);
	assert_int_equal(b[7], 0x01);
	assert_true(coreio__wire_get64(b) == 0x0102030405060708ULL);
}

static void test_encode_decode_roundtrip(void **state)
{
	uint8_t buf[COREIO_WIRE_MAX_MSG];
	struct coreio_wire_msg m;
	size_t n;

	(void)state;
	n = make(buf, COREIO_OP_READ, 8, false, 0);
	assert_int_equal(n, 64);
	/* Field positions as the reference format fixes them. */
	assert_true(coreio__wire_get64(buf) == (3u | (0xdeadbeefULL << 32)));
	assert_true(coreio__wire_get64(buf + 8) ==
		    (0x01u | (8u << 16) | (5u << 24) | (4u << 28) | (0xffULL << 32)));
	assert_int_equal(coreio__wire_decode(buf, n, COREIO_WIRE_AT_CLIENT, &m), 0);
	assert_int_equal(m.h.iface, 3);
	assert_int_equal(m.h.op, COREIO_OP_READ);
	assert_int_equal(m.h.size, 8);
	assert_int_equal(m.h.sid, 5);
	assert_int_equal(m.h.flags, 4);
	assert_int_equal(m.h.tag, 0xdeadbeef);
	assert_false(m.h.origin);
	assert_true(m.h.addr == 0xd0000010);
	assert_int_equal(m.len, 8);
	assert_ptr_equal(m.data, buf + 24);
}

static void test_error_and_origin_bits(void **state)
{
	uint8_t buf[64];
	struct coreio_wire_hdr h = {
	    .op = COREIO_OP_WRITEA, .size = 4, .error = true, .origin = true};
	struct coreio_wire_msg m;

	(void)state;
	coreio__wire_encode(buf, &h);
	assert_true((coreio__wire_get64(buf) >> 30 & 3) == 3);
	assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_CLIENT, &m), 0);
	assert_true(m.h.error);
	assert_true(m.h.origin);
}

static void test_length_must_match_extra(void **state)
{
	uint8_t buf[256];
	struct coreio_wire_msg m;

	(void)state;
	make(buf, COREIO_OP_PING, 0, true, 1);
	assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_VM, &m), -EPROTO);
	assert_int_equal(coreio__wire_decode(buf, 128, COREIO_WIRE_AT_VM, &m), 0);
	assert_int_equal(coreio__wire_decode(buf, 32, COREIO_WIRE_AT_VM, &m), -EPROTO);
	assert_int_equal(coreio__wire_decode(NULL, 64, COREIO_WIRE_AT_VM, &m), -EINVAL);
}

static void test_sizes_validated(void **state)
{
	uint8_t buf[64];
	struct coreio_wire_msg m;

	(void)state;
	for (unsigned s = 0; s < 64; s++) {
		int want = (s >= 1 && s <= 32) ? 0 : -EPROTO;

		make(buf, COREIO_OP_WRITE, (uint8_t)s, false, 0);
		assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_CLIENT, &m), want);
	}
	/* Pairs: 16 bytes per element at most, second element inside the unit. */
	make(buf, COREIO_OP_READP, 16, false, 0);
	assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_CLIENT, &m), 0);
	assert_ptr_equal(m.data2, buf + 48);
	make(buf, COREIO_OP_READP, 17, false, 0);
	assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_CLIENT, &m), -EPROTO);
	make(buf, COREIO_OP_WRITEP, 4, false, 0);
	assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_CLIENT, &m), 0);
	assert_ptr_equal(m.data2, buf + 32);
}

static void test_pair_offsets(void **state)
{
	(void)state;
	assert_int_equal(coreio__wire_pair_off(1), 32);
	assert_int_equal(coreio__wire_pair_off(4), 32);
	assert_int_equal(coreio__wire_pair_off(8), 40);
	assert_int_equal(coreio__wire_pair_off(16), 48);
}

static void test_direction_rules(void **state)
{
	uint8_t buf[64];
	struct coreio_wire_msg m;

	(void)state;
	/* A client may not send RESET or a posted WRITE as a DMA. */
	make(buf, COREIO_OP_RESET, 0, true, 0);
	assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_VM, &m), -EPROTO);
	make(buf, COREIO_OP_WRITE, 4, true, 0);
	assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_VM, &m), -EPROTO);
	/* The VM may not send IRQ updates. */
	make(buf, COREIO_OP_IRQ_UPDATE, 0, false, 0);
	assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_CLIENT, &m), -EPROTO);
	/* Unknown opcodes are refused on both sides. */
	make(buf, 0x77, 4, true, 0);
	assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_VM, &m), -EPROTO);
	assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_CLIENT, &m), -EPROTO);
	/* IRQ update carries iid and level. */
	make(buf, COREIO_OP_IRQ_UPDATE, 0, true, 0);
	assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_VM, &m), 0);
}

static void test_large_dma_lengths(void **state)
{
	static uint8_t buf[COREIO_WIRE_MAX_MSG];
	struct coreio_wire_hdr h = {.op = COREIO_OP_LWRITE, .origin = true};
	struct coreio_wire_msg m;

	(void)state;
	h.mask = COREIO_WIRE_LARGE_PIECE;
	h.extra = coreio__wire_extra_for(h.mask);
	assert_int_equal(h.extra, 255);
	assert_int_equal(coreio__wire_encode(buf, &h), COREIO_WIRE_MAX_MSG);
	assert_int_equal(coreio__wire_decode(buf, COREIO_WIRE_MAX_MSG, COREIO_WIRE_AT_VM, &m), 0);
	assert_int_equal(m.len, COREIO_WIRE_LARGE_PIECE);
	/* Data that would run past the frame. */
	h.extra = 1;
	coreio__wire_encode(buf, &h);
	assert_int_equal(coreio__wire_decode(buf, 128, COREIO_WIRE_AT_VM, &m), -EPROTO);
	/* A length beyond any frame, and zero. */
	h.mask = 0xffffffffu;
	h.extra = 255;
	coreio__wire_encode(buf, &h);
	assert_int_equal(coreio__wire_decode(buf, COREIO_WIRE_MAX_MSG, COREIO_WIRE_AT_VM, &m),
			 -EPROTO);
	h.mask = 0;
	h.extra = 0;
	coreio__wire_encode(buf, &h);
	assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_VM, &m), -EPROTO);
	/* An LREAD request needs no data; its failed answer may be one unit. */
	h.op = COREIO_OP_LREAD;
	h.mask = 4096;
	coreio__wire_encode(buf, &h);
	assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_VM, &m), 0);
	assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_CLIENT, &m), -EPROTO);
	h.error = true;
	coreio__wire_encode(buf, &h);
	assert_int_equal(coreio__wire_decode(buf, 64, COREIO_WIRE_AT_CLIENT, &m), 0);
}

static void test_extra_for(void **state)
{
	assert_int_equal(coreio__wire_byte_mask(0), 0);
	assert_int_equal(coreio__wire_byte_mask(1), 1);
	assert_int_equal(coreio__wire_byte_mask(8), 0xff);
	assert_true(coreio__wire_byte_mask(31) == 0x7fffffffu);
	assert_true(coreio__wire_byte_mask(32) == 0xffffffffu);
	assert_true(coreio__wire_byte_mask(40) == 0xffffffffu);
	(void)state;
	assert_int_equal(coreio__wire_extra_for(0), 0);
	assert_int_equal(coreio__wire_extra_for(40), 0);
	assert_int_equal(coreio__wire_extra_for(41), 1);
	assert_int_equal(coreio__wire_extra_for(COREIO_WIRE_MAX_DATA), 255);
	assert_int_equal(coreio__wire_extra_for((size_t)-1 / 2), 255);
}

static void test_rx_reassembly(void **state)
{
	static struct coreio_wire_rx rx;
	uint8_t big[3 * 64], small[64];
	const uint8_t *f;
	size_t len;
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	coreio__wire_rx_init(&rx);
	make(big, COREIO_OP_PING, 0, true, 2);
	make(small, COREIO_OP_RGN_CLAIM, 0, true, 0);
	assert_int_equal(coreio__wire_rx_fill(&rx, sv[0]), -EAGAIN);
	/* Half a frame: nothing comes out yet. */
	assert_int_equal(write(sv[1], big, 100), 100);
	assert_int_equal(coreio__wire_rx_fill(&rx, sv[0]), 100);
	assert_int_equal(coreio__wire_rx_next(&rx, &f, &len), 0);
	assert_true(coreio__wire_rx_partial(&rx));
	/* The rest plus a whole second frame. */
	assert_int_equal(write(sv[1], big + 100, sizeof(big) - 100), (ssize_t)sizeof(big) - 100);
	assert_int_equal(write(sv[1], small, 64), 64);
	assert_true(coreio__wire_rx_fill(&rx, sv[0]) > 0);
	assert_int_equal(coreio__wire_rx_next(&rx, &f, &len), 1);
	assert_int_equal(len, sizeof(big));
	assert_memory_equal(f, big, sizeof(big));
	assert_int_equal(coreio__wire_rx_next(&rx, &f, &len), 1);
	assert_int_equal(len, 64);
	assert_memory_equal(f, small, 64);
	assert_int_equal(coreio__wire_rx_next(&rx, &f, &len), 0);
	assert_false(coreio__wire_rx_partial(&rx));
	/* Peer closed. */
	close(sv[1]);
	assert_int_equal(coreio__wire_rx_fill(&rx, sv[0]), 0);
	close(sv[0]);
}

/* A reader that hands out a buffer 7 bytes at a time, then -EAGAIN, then EOF. */
struct chunks {
	const uint8_t *data;
	size_t len, off;
	bool eof;
};

static long read_chunks(void *opaque, void *buf, size_t len)
{
	struct chunks *c = opaque;
	size_t n = c->len - c->off < 7 ? c->len - c->off : 7;

	if (n == 0)
		return c->eof ? 0 : -EAGAIN;
	if (n > len)
		n = len;
	memcpy(buf, c->data + c->off, n);
	c->off += n;
	return (long)n;
}

static void test_rx_fill_with(void **state)
{
	static struct coreio_wire_rx rx;
	uint8_t two[2 * 64];
	struct chunks c = {.data = two, .len = sizeof(two)};
	const uint8_t *f;
	size_t len;
	int frames = 0;
	long n;

	(void)state;
	coreio__wire_rx_init(&rx);
	make(two, COREIO_OP_PING, 0, true, 0);
	make(two + 64, COREIO_OP_RGN_CLAIM, 0, true, 0);
	while ((n = coreio__wire_rx_fill_with(&rx, read_chunks, &c)) > 0)
		while (coreio__wire_rx_next(&rx, &f, &len) == 1) {
			assert_int_equal(len, 64);
			assert_memory_equal(f, two + 64 * frames, 64);
			frames++;
		}
	assert_int_equal(n, -EAGAIN);
	assert_int_equal(frames, 2);
	c.eof = true;
	assert_int_equal(coreio__wire_rx_fill_with(&rx, read_chunks, &c), 0);
}

static void test_rx_many_max_frames(void **state)
{
	static struct coreio_wire_rx rx;
	static uint8_t frame[COREIO_WIRE_MAX_MSG];
	struct coreio_wire_hdr h = {.op = COREIO_OP_PING, .extra = 255};
	const uint8_t *f;
	size_t len;
	int sv[2], got = 0;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	coreio__wire_rx_init(&rx);
	coreio__wire_encode(frame, &h);
	for (size_t i = 64; i < sizeof(frame); i++)
		frame[i] = (uint8_t)i;
	/* Feed 5 maximum frames in odd-sized chunks through the buffer. */
	for (int i = 0; i < 5; i++) {
		size_t off = 0;

		while (off < sizeof(frame)) {
			size_t n = sizeof(frame) - off < 1000 ? sizeof(frame) - off : 1000;

			assert_int_equal(coreio__wire_send_all(sv[1], frame + off, n, 1000), 0);
			off += n;
			while (coreio__wire_rx_fill(&rx, sv[0]) > 0)
				;
			while (coreio__wire_rx_next(&rx, &f, &len) == 1) {
				assert_int_equal(len, sizeof(frame));
				assert_memory_equal(f, frame, sizeof(frame));
				got++;
			}
		}
	}
	assert_int_equal(got, 5);
	close(sv[0]);
	close(sv[1]);
}

static void test_op_names(void **state)
{
	(void)state;
	assert_string_equal(coreio__wire_op_name(COREIO_OP_RGN_CLAIM), "RGN_CLAIM");
	assert_string_equal(coreio__wire_op_name(0x99), "?");
}

/* Decode a unit sent by the client (at_vm) or by the VM, asserting success. */
static struct coreio_wire_msg dec(const uint8_t *u, enum coreio_wire_side side)
{
	struct coreio_wire_msg m;

	assert_int_equal(coreio__wire_decode(u, 64, side, &m), 0);
	return m;
}

static void test_hello_payload(void **state)
{
	struct coreio_wire_hello in = {COREIO_HELLO_OFFER, 0x5, COREIO_WIRE_VERSION}, out;
	struct coreio_wire_msg m;
	uint8_t u[64];

	(void)state;
	assert_int_equal(coreio__wire_hello_encode(u, &in), 64);
	m = dec(u, COREIO_WIRE_AT_VM);
	assert_true(m.h.origin);
	assert_int_equal(coreio__wire_hello_decode(&m, &out), 0);
	assert_true(out.kind == COREIO_HELLO_OFFER && out.caps == 5 && out.version == 1);
	/* The VM's answer: E cleared, kind ANSWER, the caps it grants. */
	u[1] = 2; /* E = 2 in the copy */
	coreio__wire_hello_answer(u, 0x1);
	assert_int_equal(u[1], 0);
	m = dec(u, COREIO_WIRE_AT_CLIENT);
	assert_int_equal(coreio__wire_hello_decode(&m, &out), 0);
	assert_true(out.kind == COREIO_HELLO_ANSWER && out.caps == 1);
	/* A plain ping is no hello. */
	make(u, COREIO_OP_PING, 0, true, 0);
	m = dec(u, COREIO_WIRE_AT_VM);
	assert_int_equal(coreio__wire_hello_decode(&m, &out), -ENOENT);
}

static void test_shm_map_payload(void **state)
{
	struct coreio_wire_shm_map in = {0x100000, 0x200000, 0x1000, 1, 7, 2}, out;
	struct coreio_wire_msg m;
	uint8_t u[64];

	(void)state;
	coreio__wire_shm_map_encode(u, &in);
	m = dec(u, COREIO_WIRE_AT_CLIENT);
	assert_int_equal(m.h.tag, 7);
	assert_int_equal(coreio__wire_shm_map_decode(&m, &out), 0);
	assert_memory_equal(&in, &out, sizeof(in));
	/* Fields no map can have. */
	in.index = 2;
	coreio__wire_shm_map_encode(u, &in);
	m = dec(u, COREIO_WIRE_AT_CLIENT);
	assert_int_equal(coreio__wire_shm_map_decode(&m, &out), -EPROTO);
	in.index = 0;
	in.count = COREIO_WIRE_SHM_MAX_REGIONS + 1;
	coreio__wire_shm_map_encode(u, &in);
	m = dec(u, COREIO_WIRE_AT_CLIENT);
	assert_int_equal(coreio__wire_shm_map_decode(&m, &out), -EPROTO);
	in.count = 1;
	in.gpa = UINT64_MAX - 0xfff;
	coreio__wire_shm_map_encode(u, &in);
	m = dec(u, COREIO_WIRE_AT_CLIENT);
	assert_int_equal(coreio__wire_shm_map_decode(&m, &out), -EPROTO);
	in.gpa = 0;
	in.offset = UINT64_MAX;
	coreio__wire_shm_map_encode(u, &in);
	m = dec(u, COREIO_WIRE_AT_CLIENT);
	assert_int_equal(coreio__wire_shm_map_decode(&m, &out), -EPROTO);
	/* An empty map is one frame with count 0. */
	memset(&in, 0, sizeof(in));
	coreio__wire_shm_map_encode(u, &in);
	m = dec(u, COREIO_WIRE_AT_CLIENT);
	assert_int_equal(coreio__wire_shm_map_decode(&m, &out), 0);
	assert_true(out.count == 0);
}

static void test_irq_and_claim_payloads(void **state)
{
	struct coreio_wire_msg m;
	uint64_t iid;
	bool level;
	uint8_t u[64];

	(void)state;
	coreio__wire_irq_encode(u, 3, 5, true);
	m = dec(u, COREIO_WIRE_AT_VM);
	assert_int_equal(m.h.iface, 3);
	assert_int_equal(coreio__wire_irq_decode(&m, &iid, &level), 0);
	assert_true(iid == 5 && level);
	coreio__wire_irq_encode(u, 3, 5, false);
	m = dec(u, COREIO_WIRE_AT_VM);
	assert_int_equal(coreio__wire_irq_decode(&m, &iid, &level), 0);
	assert_false(level);

	coreio__wire_claim_encode(u, 2, 99);
	m = dec(u, COREIO_WIRE_AT_VM);
	assert_int_equal(m.h.op, COREIO_OP_RGN_CLAIM);
	assert_true(m.h.iface == 2 && m.h.tag == 99 && m.h.origin);
	assert_int_equal(coreio__wire_irq_decode(&m, &iid, &level), -EPROTO);

	coreio__wire_claim_ack_encode(u, 2, 99, 0);
	m = dec(u, COREIO_WIRE_AT_CLIENT);
	assert_int_equal(coreio__wire_claim_ack_result(&m), 0);
	coreio__wire_claim_ack_encode(u, 2, 99, -ENOENT);
	m = dec(u, COREIO_WIRE_AT_CLIENT);
	assert_true(m.h.error);
	assert_int_equal(coreio__wire_claim_ack_result(&m), -ENOENT);
	/* An error bit with no errno in range reads as -EBUSY. */
	coreio__wire_put64(u + 24, 70000);
	m = dec(u, COREIO_WIRE_AT_CLIENT);
	assert_int_equal(coreio__wire_claim_ack_result(&m), -EBUSY);
}

static void test_echo_answer_and_format(void **state)
{
	uint8_t req[128], u[64];
	char line[256];

	(void)state;
	make(req, COREIO_OP_READ, 4, false, 1);
	memset(req + 24, 0x5a, 40);
	coreio__wire_set_error(req, true);
	assert_int_equal(coreio__wire_peek_len(req, 7), 0);
	assert_int_equal(coreio__wire_peek_len(req, 8), 128);
	/* Echo: the first unit, E cleared, the rest unchanged. */
	coreio__wire_echo(u, req);
	assert_int_equal(coreio__wire_peek_len(u, 64), 64);
	assert_memory_equal(u + 1 + 1, req + 2, 62);
	/* Answer: header kept, E and error cleared, data zeroed. */
	coreio__wire_answer_init(u, req);
	assert_int_equal(coreio__wire_get64(u) >> 30 & 1, 0);
	assert_int_equal(coreio__wire_peek_len(u, 64), 64);
	assert_true(coreio__wire_get64(u + 16) == 0xd0000010);
	for (int i = 24; i < 64; i++)
		assert_int_equal(u[i], 0);
	coreio__wire_set_error(u, true);
	assert_int_equal(coreio__wire_get64(u) >> 30 & 1, 1);
	coreio__wire_format(line, sizeof(line), u);
	assert_non_null(strstr(line, "READ iface 3 tag 3735928559"));
	assert_non_null(strstr(line, "ERROR"));
	assert_non_null(strstr(line, "addr 0xd0000010"));
}

/* An MMIO request as the VM encodes it, and the read data of its answer. */
static void test_mmio_request_and_answer_data(void **state)
{
	struct coreio_wire_hdr h = {.iface = 2, .tag = 9, .op = COREIO_OP_WRITEP, .size = 8};
	uint8_t u[64], d1[16], d2[16], r1[16], r2[16];
	struct coreio_wire_msg m;

	(void)state;
	for (int i = 0; i < 16; i++) {
		d1[i] = (uint8_t)(0x10 + i);
		d2[i] = (uint8_t)(0x80 + i);
	}
	h.mask = 0xff;
	h.addr = 0xd0000040;
	assert_int_equal(coreio__wire_mmio_encode(u, &h, d1, d2), 64);
	assert_int_equal(coreio__wire_decode(u, 64, COREIO_WIRE_AT_CLIENT, &m), 0);
	assert_true(m.h.op == COREIO_OP_WRITEP && m.h.tag == 9 && m.h.iface == 2 && !m.h.origin);
	assert_memory_equal(m.data, d1, 8);
	assert_memory_equal(m.data2, d2, 8);
	/* A read carries no data: the unit after the header is zero. */
	h.op = COREIO_OP_READ;
	h.size = 32;
	h.mask = 0;
	assert_int_equal(coreio__wire_mmio_encode(u, &h, NULL, NULL), 64);
	for (int i = 24; i < 64; i++)
		assert_int_equal(u[i], 0);
	/* Sizes that do not fit one unit, and multi-unit headers, are refused. */
	h.size = 33;
	assert_int_equal(coreio__wire_mmio_encode(u, &h, d1, NULL), 0);
	h.op = COREIO_OP_READP;
	h.size = 17;
	assert_int_equal(coreio__wire_mmio_encode(u, &h, NULL, NULL), 0);
	h.size = 0;
	assert_int_equal(coreio__wire_mmio_encode(u, &h, NULL, NULL), 0);
	h.size = 4;
	h.extra = 1;
	assert_int_equal(coreio__wire_mmio_encode(u, &h, NULL, NULL), 0);

	/* The answer to a READP of 4-byte elements, as a client writes it. */
	h.extra = 0;
	h.size = 4;
	assert_int_equal(coreio__wire_mmio_encode(u, &h, NULL, NULL), 64);
	coreio__wire_answer_init(u, u);
	memcpy(u + 24, d1, 4);
	memcpy(u + coreio__wire_pair_off(4), d2, 4);
	assert_int_equal(coreio__wire_decode(u, 64, COREIO_WIRE_AT_VM, &m), 0);
	memset(r1, 0, sizeof(r1));
	memset(r2, 0, sizeof(r2));
	assert_int_equal(coreio__wire_answer_read(&m, 4, true, r1, r2), 0);
	assert_memory_equal(r1, d1, 4);
	assert_memory_equal(r2, d2, 4);
	assert_int_equal(r1[4], 0);
	/* The request's size decides, whatever the answer's size field says. */
	u[10] = 1; /* w[1] bits 16..21: size 1 */
	assert_int_equal(coreio__wire_decode(u, 64, COREIO_WIRE_AT_VM, &m), 0);
	assert_int_equal(coreio__wire_answer_read(&m, 4, true, r1, r2), 0);
	assert_memory_equal(r2, d2, 4);
	assert_int_equal(coreio__wire_answer_read(&m, 16, false, r1, NULL), 0);
	assert_memory_equal(r1, u + 24, 16);
	/* Sizes no request has. */
	assert_int_equal(coreio__wire_answer_read(&m, 0, false, r1, NULL), -EINVAL);
	assert_int_equal(coreio__wire_answer_read(&m, 33, false, r1, NULL), -EINVAL);
	assert_int_equal(coreio__wire_answer_read(&m, 17, true, r1, r2), -EINVAL);
}

/* coreio__wire_rx_ready() says what coreio__wire_rx_next() would do. */
static void test_rx_ready(void **state)
{
	static struct coreio_wire_rx rx;
	const uint8_t *f;
	size_t len;
	uint8_t u[128];

	(void)state;
	coreio__wire_rx_init(&rx);
	assert_false(coreio__wire_rx_ready(&rx));
	make(u, COREIO_OP_READ, 4, false, 1); /* two units */
	memcpy(rx.buf, u, 7);
	rx.end = 7; /* not even the first word */
	assert_false(coreio__wire_rx_ready(&rx));
	memcpy(rx.buf, u, 100);
	rx.end = 100; /* part of the second unit */
	assert_false(coreio__wire_rx_ready(&rx));
	assert_int_equal(coreio__wire_rx_next(&rx, &f, &len), 0);
	memcpy(rx.buf, u, 128);
	rx.end = 128;
	assert_true(coreio__wire_rx_ready(&rx));
	assert_int_equal(coreio__wire_rx_next(&rx, &f, &len), 1);
	assert_int_equal(len, 128);
	assert_false(coreio__wire_rx_ready(&rx));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_word_order),
	    cmocka_unit_test(test_encode_decode_roundtrip),
	    cmocka_unit_test(test_error_and_origin_bits),
	    cmocka_unit_test(test_length_must_match_extra),
	    cmocka_unit_test(test_sizes_validated),
	    cmocka_unit_test(test_pair_offsets),
	    cmocka_unit_test(test_direction_rules),
	    cmocka_unit_test(test_large_dma_lengths),
	    cmocka_unit_test(test_extra_for),
	    cmocka_unit_test(test_rx_reassembly),
	    cmocka_unit_test(test_rx_many_max_frames),
	    cmocka_unit_test(test_rx_fill_with),
	    cmocka_unit_test(test_op_names),
	    cmocka_unit_test(test_hello_payload),
	    cmocka_unit_test(test_shm_map_payload),
	    cmocka_unit_test(test_irq_and_claim_payloads),
	    cmocka_unit_test(test_echo_answer_and_format),
	    cmocka_unit_test(test_mmio_request_and_answer_data),
	    cmocka_unit_test(test_rx_ready),
	};

	return cmocka_run_group_tests_name("wire", tests, NULL, NULL);
}
