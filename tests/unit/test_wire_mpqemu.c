/* Unit tests for the mpqemu wire module (src/wire/mpqemu_msg.c): header, every command's
 * decoder and refusals, SYNC_SYSMEM region checks at their limits, the encoders. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mpqemu_msg.h"
#include "wire_put.h"

/* A header written by hand (not by the encoder under test); pad goes in the padding bytes. */
static void hdr(uint8_t *h, uint32_t cmd, uint64_t size, uint32_t pad)
{
	put32(h, cmd);
	put32(h + 4, pad);
	put64(h + 8, size);
}

/* Decode a message of cmd with len data bytes at data and nfds fds. */
static int decode(uint32_t cmd, const uint8_t *data, size_t len, unsigned nfds, bool lost,
		  struct mpqemu_msg *m, char *why)
{
	uint8_t h[MPQEMU_HDR_SIZE];

	hdr(h, cmd, len, 0);
	return mpqemu_msg_decode(h, data, len, nfds, lost, m, why, 200);
}

static void test_commands(void **state)
{
	static const char *const names[] = {"SYNC_SYSMEM", "RET",	  "PCI_CFGWRITE",
					    "PCI_CFGREAD", "BAR_WRITE",	  "BAR_READ",
					    "SET_IRQFD",   "DEVICE_RESET"};
	static const unsigned sizes[] = {192, 8, 12, 12, 24, 24, 0, 0};
	static const bool answered[] = {false, false, true, true, true, true, false, true};

	(void)state;
	for (uint32_t c = 0; c < MPQEMU_CMD_MAX; c++) {
		assert_string_equal(mpqemu_cmd_name(c), names[c]);
		assert_int_equal(mpqemu_cmd_data_size(c), sizes[c]);
		assert_int_equal(mpqemu_cmd_answered(c), answered[c]);
	}
	assert_string_equal(mpqemu_cmd_name(MPQEMU_CMD_MAX), "?");
	assert_string_equal(mpqemu_cmd_name(UINT32_MAX), "?");
	assert_int_equal(mpqemu_cmd_data_size(MPQEMU_CMD_MAX), 0);
	assert_false(mpqemu_cmd_answered(MPQEMU_CMD_MAX));
	assert_int_equal(MPQEMU_MSG_MAX, 208);
}

static void test_header(void **state)
{
	uint8_t b[MPQEMU_HDR_SIZE], back[MPQEMU_HDR_SIZE];
	struct mpqemu_hdr h;
	char why[160];

	(void)state;
	hdr(b, MPQEMU_CMD_BAR_READ, 24, 0xdeadbeef); /* the padding is ignored */
	assert_int_equal(mpqemu_hdr_decode(b, &h, why, sizeof(why)), 0);
	assert_int_equal(h.cmd, MPQEMU_CMD_BAR_READ);
	assert_int_equal(h.size, 24);
	mpqemu_hdr_encode(back, &h);
	assert_memory_equal(back, b, 4);
	assert_memory_equal(back + 4, "\0\0\0\0", 4);
	assert_memory_equal(back + 8, b + 8, 8);

	/* Every command's header with the largest size passes; one byte more does not. */
	for (uint32_t c = 0; c < MPQEMU_CMD_MAX; c++) {
		hdr(b, c, MPQEMU_DATA_MAX, 0);
		assert_int_equal(mpqemu_hdr_decode(b, &h, why, sizeof(why)), 0);
		hdr(b, c, MPQEMU_DATA_MAX + 1, 0);
		assert_int_equal(mpqemu_hdr_decode(b, &h, why, sizeof(why)), -EINVAL);
	}
	assert_string_equal(why, "DEVICE_RESET with size 193 (at most 192)");
	hdr(b, MPQEMU_CMD_SYNC_SYSMEM, UINT64_MAX, 0);
	assert_int_equal(mpqemu_hdr_decode(b, &h, why, sizeof(why)), -EINVAL);
	assert_string_equal(why, "SYNC_SYSMEM with size 18446744073709551615 (at most 192)");
	hdr(b, 0x80000000u, 0, 0); /* a negative int */
	assert_int_equal(mpqemu_hdr_decode(b, &h, why, sizeof(why)), -EINVAL);
	assert_string_equal(why, "unknown command 2147483648");
	hdr(b, 99, 4096, 0); /* the command is checked first */
	assert_int_equal(mpqemu_hdr_decode(b, &h, why, sizeof(why)), -EINVAL);
	assert_string_equal(why, "unknown command 99");
	hdr(b, MPQEMU_CMD_MAX, 0, 0);
	assert_int_equal(mpqemu_hdr_decode(b, &h, NULL, 0), -EINVAL);
}

static void test_conf_and_bar(void **state)
{
	uint8_t d[MPQEMU_BAR_SIZE];
	struct mpqemu_msg m;
	char why[200];

	(void)state;
	put32(d, 0x84);
	put32(d + 4, 0x12345678);
	put32(d + 8, 4);
	assert_int_equal(decode(MPQEMU_CMD_PCI_CFGWRITE, d, 12, 0, false, &m, why), 0);
	assert_int_equal(m.cmd, MPQEMU_CMD_PCI_CFGWRITE);
	assert_int_equal(m.conf.addr, 0x84);
	assert_int_equal(m.conf.val, 0x12345678);
	assert_int_equal(m.conf.len, 4);
	put32(d + 8, UINT32_MAX); /* an int: -1 (answered with all ones by the device) */
	assert_int_equal(decode(MPQEMU_CMD_PCI_CFGREAD, d, 12, 0, false, &m, why), 0);
	assert_int_equal(m.cmd, MPQEMU_CMD_PCI_CFGREAD);
	assert_int_equal(m.conf.len, -1);

	put64(d, 0xfebf0010);
	put64(d + 8, 0x0102030405060708ull);
	put32(d + 16, 8);
	d[20] = 1;
	d[21] = d[22] = d[23] = 0xff; /* padding */
	assert_int_equal(decode(MPQEMU_CMD_BAR_WRITE, d, 24, 0, false, &m, why), 0);
	assert_int_equal(m.cmd, MPQEMU_CMD_BAR_WRITE);
	assert_true(m.bar.addr == 0xfebf0010);
	assert_true(m.bar.val == 0x0102030405060708ull);
	assert_int_equal(m.bar.size, 8);
	assert_true(m.bar.memory);
	d[20] = 0x80;
	assert_int_equal(decode(MPQEMU_CMD_BAR_READ, d, 24, 0, false, &m, why), 0);
	assert_true(m.bar.memory);
	d[20] = 0;
	assert_int_equal(decode(MPQEMU_CMD_BAR_READ, d, 24, 0, false, &m, why), 0);
	assert_int_equal(m.cmd, MPQEMU_CMD_BAR_READ);
	assert_false(m.bar.memory);

	assert_int_equal(decode(MPQEMU_CMD_DEVICE_RESET, NULL, 0, 0, false, &m, why), 0);
	assert_int_equal(m.cmd, MPQEMU_CMD_DEVICE_RESET);
	assert_int_equal(decode(MPQEMU_CMD_SET_IRQFD, NULL, 0, 2, false, &m, why), 0);
	assert_int_equal(m.cmd, MPQEMU_CMD_SET_IRQFD);
	assert_int_equal(m.nfds, 2);
}

static void test_refusals(void **state)
{
	static const uint8_t zero[4096];
	uint8_t h[MPQEMU_HDR_SIZE];
	struct mpqemu_msg m;
	char why[200];

	(void)state;
	/* RET comes only from the remote. */
	assert_int_equal(decode(MPQEMU_CMD_RET, zero, 8, 0, false, &m, why), -EINVAL);
	assert_string_equal(why, "command 1 (RET) is not one the proxy sends");
	/* Each command's data size, one byte off either way. */
	for (uint32_t c = 0; c < MPQEMU_CMD_MAX; c++) {
		unsigned want = mpqemu_cmd_data_size(c);
		unsigned nfds = c == MPQEMU_CMD_SET_IRQFD ? 2 : 0;

		if (c == MPQEMU_CMD_RET)
			continue;
		assert_int_equal(decode(c, zero, want, nfds, false, &m, why), 0);
		assert_int_equal(decode(c, zero, want + 1, nfds, false, &m, why), -EINVAL);
		if (want)
			assert_int_equal(decode(c, zero, want - 1, nfds, false, &m, why), -EINVAL);
	}
	assert_int_equal(decode(MPQEMU_CMD_PCI_CFGREAD, zero, 16, 0, false, &m, why), -EINVAL);
	assert_string_equal(why, "PCI_CFGREAD with 16 data bytes (expected 12)");
	assert_int_equal(decode(MPQEMU_CMD_DEVICE_RESET, zero, 8, 0, false, &m, why), -EINVAL);
	assert_string_equal(why, "DEVICE_RESET with 8 data bytes (expected 0)");
	/* The header's size must be the data handed over. */
	hdr(h, MPQEMU_CMD_BAR_READ, 24, 0);
	assert_int_equal(mpqemu_msg_decode(h, zero, 23, 0, false, &m, why, sizeof(why)), -EINVAL);
	assert_string_equal(why, "BAR_READ with 23 of its 24 data bytes");
	/* A bad header. */
	hdr(h, 99, 0, 0);
	assert_int_equal(mpqemu_msg_decode(h, zero, 0, 0, false, &m, why, sizeof(why)), -EINVAL);
	assert_string_equal(why, "unknown command 99");
	hdr(h, MPQEMU_CMD_SYNC_SYSMEM, 4096, 0);
	assert_int_equal(mpqemu_msg_decode(h, zero, 4096, 0, false, &m, why, sizeof(why)), -EINVAL);
	assert_string_equal(why, "SYNC_SYSMEM with size 4096 (at most 192)");

	/* fds: exactly the command's count. */
	assert_int_equal(decode(MPQEMU_CMD_BAR_READ, zero, 24, 2, false, &m, why), -EINVAL);
	assert_string_equal(why, "BAR_READ with 2 fd(s) (expected 0)");
	assert_int_equal(decode(MPQEMU_CMD_DEVICE_RESET, zero, 0, 1, false, &m, why), -EINVAL);
	assert_int_equal(decode(MPQEMU_CMD_PCI_CFGWRITE, zero, 12, 1, false, &m, why), -EINVAL);
	assert_int_equal(decode(MPQEMU_CMD_SET_IRQFD, zero, 0, 1, false, &m, why), -EINVAL);
	assert_string_equal(why, "SET_IRQFD with 1 fd(s) (expected 2)");
	assert_int_equal(decode(MPQEMU_CMD_SET_IRQFD, zero, 0, 3, false, &m, why), -EINVAL);
	assert_int_equal(decode(MPQEMU_CMD_SET_IRQFD, zero, 0, 0, false, &m, why), -EINVAL);
	/* fds lost (too many, or truncated control data): always refused. */
	assert_int_equal(decode(MPQEMU_CMD_SET_IRQFD, zero, 0, 2, true, &m, why), -EINVAL);
	assert_string_equal(why, "SET_IRQFD with more than 2 fd(s) (expected 2)");
	assert_int_equal(decode(MPQEMU_CMD_SYNC_SYSMEM, zero, 192, 8, true, &m, why), -EINVAL);
	assert_string_equal(why, "SYNC_SYSMEM with more than 8 fd(s) (expected at most 8)");
	assert_int_equal(decode(MPQEMU_CMD_SYNC_SYSMEM, zero, 192, 9, false, &m, why), -EINVAL);
	assert_int_equal(decode(MPQEMU_CMD_DEVICE_RESET, zero, 0, 0, true, &m, why), -EINVAL);
	/* No reason buffer: still refused, nothing written. */
	hdr(h, MPQEMU_CMD_RET, 8, 0);
	assert_int_equal(mpqemu_msg_decode(h, zero, 8, 0, false, &m, NULL, 0), -EINVAL);
	why[0] = 'x';
	assert_int_equal(mpqemu_msg_decode(h, zero, 8, 0, false, &m, why, 0), -EINVAL);
	assert_int_equal(why[0], 'x');
}

/* SYNC_SYSMEM data with region i = {gpa[i], size[i], off[i]} for i < n, the rest garbage. */
static void sysmem(uint8_t *d, const uint64_t *gpa, const uint64_t *size, const uint64_t *off,
		   unsigned n)
{
	memset(d, 0xa5, MPQEMU_SYSMEM_SIZE);
	for (unsigned i = 0; i < n; i++) {
		put64(d + 8 * i, gpa[i]);
		put64(d + 64 + 8 * i, size[i]);
		put64(d + 128 + 8 * i, off[i]);
	}
}

/* Decode a one-region SYNC_SYSMEM. */
static int one_region(uint64_t gpa, uint64_t size, uint64_t off, struct mpqemu_msg *m, char *why)
{
	uint8_t d[MPQEMU_SYSMEM_SIZE];

	sysmem(d, &gpa, &size, &off, 1);
	return decode(MPQEMU_CMD_SYNC_SYSMEM, d, sizeof(d), 1, false, m, why);
}

static void test_sysmem(void **state)
{
	uint64_t gpa[8] = {0}, size[8] = {0}, off[8] = {0};
	uint8_t d[MPQEMU_SYSMEM_SIZE];
	struct mpqemu_msg m;
	char why[200];

	(void)state;
	/* No region (fds 0): an empty map; the arrays' garbage is ignored. */
	sysmem(d, gpa, size, off, 0);
	assert_int_equal(decode(MPQEMU_CMD_SYNC_SYSMEM, d, sizeof(d), 0, false, &m, why), 0);
	assert_int_equal(m.sysmem.n, 0);
	/* Eight adjacent regions, out of order, at the limit of gpa + size. */
	for (unsigned i = 0; i < 8; i++) {
		size[i] = 0x1000;
		gpa[i] = UINT64_MAX - 0x1000 - 0x1000ull * (7 - ((i + 3) % 8));
		off[i] = 0x1000ull * i;
	}
	sysmem(d, gpa, size, off, 8);
	assert_int_equal(decode(MPQEMU_CMD_SYNC_SYSMEM, d, sizeof(d), 8, false, &m, why), 0);
	assert_int_equal(m.sysmem.n, 8);
	for (unsigned i = 0; i < 8; i++) {
		assert_true(m.sysmem.r[i].gpa == gpa[i]);
		assert_true(m.sysmem.r[i].size == 0x1000);
		assert_true(m.sysmem.r[i].offset == off[i]);
	}
	/* Only as many regions as fds: region 2's garbage does not count. */
	assert_int_equal(decode(MPQEMU_CMD_SYNC_SYSMEM, d, sizeof(d), 2, false, &m, why), 0);
	assert_int_equal(m.sysmem.n, 2);

	/* One region at each limit. */
	assert_int_equal(one_region(0, 1, 0, &m, why), 0);
	assert_int_equal(one_region(0, 0, 0, &m, why), -EINVAL);
	assert_string_equal(why, "SYNC_SYSMEM region 0: gpa 0x0 size 0x0 offset 0 is not valid");
	/* gpa + size: the last byte may be 2^64 - 1, but the end may not wrap. */
	assert_int_equal(one_region(UINT64_MAX - 0x1000, 0x1000, 0, &m, why), 0);
	assert_int_equal(one_region(UINT64_MAX - 0xfff, 0x1000, 0, &m, why), -EINVAL);
	assert_int_equal(one_region(1, UINT64_MAX, 0, &m, why), -EINVAL);
	assert_int_equal(one_region(0, UINT64_MAX, 0, &m, why), 0);
	/* The offset is an off_t: never negative, and offset + size may not wrap. */
	assert_int_equal(one_region(0, 1, (uint64_t)INT64_MAX, &m, why), 0);
	assert_true(m.sysmem.r[0].offset == (uint64_t)INT64_MAX);
	assert_int_equal(one_region(0, 1, 1ull << 63, &m, why), -EINVAL);
	assert_string_equal(why, "SYNC_SYSMEM region 0: gpa 0x0 size 0x1 offset "
				 "-9223372036854775808 is not valid");
	assert_int_equal(one_region(0x1000, 0x2000, UINT64_MAX, &m, why), -EINVAL);
	assert_string_equal(why, "SYNC_SYSMEM region 0: gpa 0x1000 size 0x2000 offset -1 is not "
				 "valid");
	assert_int_equal(one_region(0, (1ull << 63) + 1, (uint64_t)INT64_MAX, &m, why), -EINVAL);
	assert_int_equal(one_region(0, 1ull << 63, (uint64_t)INT64_MAX, &m, why), 0);

	/* Overlaps: by one byte, containment, with an earlier region than the last. */
	gpa[0] = 0x10000, size[0] = 0x10000, off[0] = 0;
	gpa[1] = 0x20000, size[1] = 0x1000, off[1] = 0; /* adjacent: fine */
	gpa[2] = 0x1ffff, size[2] = 1, off[2] = 0;	/* region 0's last byte */
	sysmem(d, gpa, size, off, 3);
	assert_int_equal(decode(MPQEMU_CMD_SYNC_SYSMEM, d, sizeof(d), 2, false, &m, why), 0);
	assert_int_equal(decode(MPQEMU_CMD_SYNC_SYSMEM, d, sizeof(d), 3, false, &m, why), -EINVAL);
	assert_string_equal(why, "SYNC_SYSMEM regions 0 and 2 overlap");
	gpa[2] = 0xf000, size[2] = 0x1001; /* its last byte is region 0's first */
	sysmem(d, gpa, size, off, 3);
	assert_int_equal(decode(MPQEMU_CMD_SYNC_SYSMEM, d, sizeof(d), 3, false, &m, why), -EINVAL);
	assert_string_equal(why, "SYNC_SYSMEM regions 0 and 2 overlap");
	size[2] = 0x1000; /* adjacent below region 0: fine */
	sysmem(d, gpa, size, off, 3);
	assert_int_equal(decode(MPQEMU_CMD_SYNC_SYSMEM, d, sizeof(d), 3, false, &m, why), 0);
	gpa[2] = 0x20fff, size[2] = 1; /* region 1's last byte */
	sysmem(d, gpa, size, off, 3);
	assert_int_equal(decode(MPQEMU_CMD_SYNC_SYSMEM, d, sizeof(d), 3, false, &m, why), -EINVAL);
	assert_string_equal(why, "SYNC_SYSMEM regions 1 and 2 overlap");
	gpa[2] = 0x21000;
	sysmem(d, gpa, size, off, 3);
	assert_int_equal(decode(MPQEMU_CMD_SYNC_SYSMEM, d, sizeof(d), 3, false, &m, why), 0);
	gpa[2] = 0, size[2] = UINT64_MAX; /* contains them all */
	sysmem(d, gpa, size, off, 3);
	assert_int_equal(decode(MPQEMU_CMD_SYNC_SYSMEM, d, sizeof(d), 3, false, &m, why), -EINVAL);
	assert_string_equal(why, "SYNC_SYSMEM regions 0 and 2 overlap");
	gpa[1] = 0x10000; /* the same region twice */
	size[1] = 0x10000;
	sysmem(d, gpa, size, off, 2);
	assert_int_equal(decode(MPQEMU_CMD_SYNC_SYSMEM, d, sizeof(d), 2, false, &m, why), -EINVAL);
	assert_string_equal(why, "SYNC_SYSMEM regions 0 and 1 overlap");
	/* A bad region after good ones is found, by its index. */
	for (unsigned i = 0; i < 8; i++)
		gpa[i] = 0x1000ull * i, size[i] = 0x1000, off[i] = 0;
	size[7] = 0;
	sysmem(d, gpa, size, off, 8);
	assert_int_equal(decode(MPQEMU_CMD_SYNC_SYSMEM, d, sizeof(d), 7, false, &m, why), 0);
	assert_int_equal(decode(MPQEMU_CMD_SYNC_SYSMEM, d, sizeof(d), 8, false, &m, why), -EINVAL);
	assert_string_equal(why, "SYNC_SYSMEM region 7: gpa 0x7000 size 0x0 offset 0 is not valid");
}

/* The fields of two messages of the same command agree. */
static void same(const struct mpqemu_msg *a, const struct mpqemu_msg *b)
{
	assert_int_equal(a->cmd, b->cmd);
	assert_int_equal(a->nfds, b->nfds);
	switch (a->cmd) {
	case MPQEMU_CMD_SYNC_SYSMEM:
		assert_int_equal(a->sysmem.n, b->sysmem.n);
		for (unsigned i = 0; i < a->sysmem.n; i++) {
			assert_true(a->sysmem.r[i].gpa == b->sysmem.r[i].gpa);
			assert_true(a->sysmem.r[i].size == b->sysmem.r[i].size);
			assert_true(a->sysmem.r[i].offset == b->sysmem.r[i].offset);
		}
		break;
	case MPQEMU_CMD_PCI_CFGWRITE:
	case MPQEMU_CMD_PCI_CFGREAD:
		assert_int_equal(a->conf.addr, b->conf.addr);
		assert_int_equal(a->conf.val, b->conf.val);
		assert_int_equal(a->conf.len, b->conf.len);
		break;
	case MPQEMU_CMD_BAR_WRITE:
	case MPQEMU_CMD_BAR_READ:
		assert_true(a->bar.addr == b->bar.addr);
		assert_true(a->bar.val == b->bar.val);
		assert_int_equal(a->bar.size, b->bar.size);
		assert_int_equal(a->bar.memory, b->bar.memory);
		break;
	default:
		break;
	}
}

static void test_encode(void **state)
{
	uint8_t b[MPQEMU_MSG_MAX + 8], ret[MPQEMU_HDR_SIZE + MPQEMU_RET_SIZE];
	static const uint8_t want_ret[] = {1, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0,
					   0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 0xf1};
	struct mpqemu_msg m, o;
	char why[200];

	(void)state;
	/* RET: what the proxy's mpqemu_msg_send_and_await_reply() takes. */
	memset(ret, 0xff, sizeof(ret));
	assert_int_equal(mpqemu_ret_encode(ret, 0xf102030405060708ull), sizeof(ret));
	assert_memory_equal(ret, want_ret, sizeof(ret));
	assert_int_equal(mpqemu_ret_encode(ret, UINT64_MAX), 24);
	for (unsigned i = 16; i < 24; i++)
		assert_int_equal(ret[i], 0xff);

	/* Every command the proxy sends encodes and decodes back to itself. */
	for (uint32_t c = 0; c < MPQEMU_CMD_MAX; c++) {
		size_t len;

		if (c == MPQEMU_CMD_RET)
			continue;
		memset(&m, 0, sizeof(m));
		m.cmd = c;
		m.nfds = c == MPQEMU_CMD_SET_IRQFD ? 2 : 0;
		if (c == MPQEMU_CMD_SYNC_SYSMEM) {
			m.nfds = m.sysmem.n = 3;
			for (unsigned i = 0; i < 3; i++)
				m.sysmem.r[i] = (struct mpqemu_sysmem_region){
				    0x100000ull * i, 0x80000, 0x1000ull * i};
		} else if (c == MPQEMU_CMD_BAR_READ || c == MPQEMU_CMD_BAR_WRITE) {
			m.bar = (struct mpqemu_bar){0xfe000004, 0xabcdef, 4, true};
		} else if (c == MPQEMU_CMD_PCI_CFGREAD || c == MPQEMU_CMD_PCI_CFGWRITE) {
			m.conf = (struct mpqemu_conf){0x10, 0xffffffff, -7};
		}
		len = mpqemu_msg_encode(b, sizeof(b), &m);
		assert_int_equal(len, MPQEMU_HDR_SIZE + mpqemu_cmd_data_size(c));
		assert_int_equal(mpqemu_msg_encode(b, len - 1, &m), 0);
		assert_int_equal(mpqemu_msg_decode(b, b + MPQEMU_HDR_SIZE, len - MPQEMU_HDR_SIZE,
						   m.nfds, false, &o, why, sizeof(why)),
				 0);
		same(&m, &o);
		if (c == MPQEMU_CMD_SYNC_SYSMEM) /* the slots past n are zero */
			for (unsigned i = 3 * 8; i < 64; i++)
				assert_true(!b[MPQEMU_HDR_SIZE + i] &&
					    !b[MPQEMU_HDR_SIZE + 64 + i] &&
					    !b[MPQEMU_HDR_SIZE + 128 + i]);
	}
	/* What the encoder refuses. */
	m.cmd = MPQEMU_CMD_MAX;
	assert_int_equal(mpqemu_msg_encode(b, sizeof(b), &m), 0);
	memset(&m, 0, sizeof(m));
	m.sysmem.n = MPQEMU_MAX_FDS + 1;
	assert_int_equal(mpqemu_msg_encode(b, sizeof(b), &m), 0);
	m.sysmem.n = MPQEMU_MAX_FDS;
	assert_int_equal(mpqemu_msg_encode(b, MPQEMU_MSG_MAX, &m), MPQEMU_MSG_MAX);
	m.cmd = MPQEMU_CMD_DEVICE_RESET;
	assert_int_equal(mpqemu_msg_encode(b, MPQEMU_HDR_SIZE, &m), MPQEMU_HDR_SIZE);
	assert_int_equal(mpqemu_msg_encode(b, MPQEMU_HDR_SIZE - 1, &m), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_commands),	 cmocka_unit_test(test_header),
	    cmocka_unit_test(test_conf_and_bar), cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_sysmem),	 cmocka_unit_test(test_encode),
	};

	return cmocka_run_group_tests_name("wire_mpqemu", tests, NULL, NULL);
}
