/* rpi_inside: the rpi-test "inside" pattern at CPL 3 against vMMIO range 0 (8/16/32/64-bit). */
#include "rt.h"

/* What the reads must return: the written values (a memory client) or 0xAA bytes (no client). */
enum expect { EXPECT_ECHO, EXPECT_AA };

static enum expect rpi_expect;
static unsigned rpi_errors;

static void rpi_check(const char *what, uint64_t off, uint64_t got, uint64_t wrote, unsigned bytes)
{
	uint64_t mask = bytes == 8 ? ~0ull : (1ull << (8 * bytes)) - 1;
	uint64_t want = rpi_expect == EXPECT_AA ? 0xaaaaaaaaaaaaaaaaull & mask : wrote;

	if (got != want) {
		rt_printf("MISMATCH %s off=0x%03lx got 0x%lx want 0x%lx\n", what,
			  (unsigned long)off, (unsigned long)got, (unsigned long)want);
		rpi_errors++;
	}
}

static int rpi_main(uint64_t arg)
{
	const struct coreio_bootinfo *bi = rt_bootinfo;
	uint64_t base = bi->ranges[0].start;

	(void)arg;
	rt_printf("rpi_inside: range 0 at %#lx, expect=%s\n", (unsigned long)base,
		  rpi_expect == EXPECT_AA ? "aa" : "echo");
	if (rt_arg_u64("fault", 0)) {
		/* Test hook: an invalid opcode at CPL 3 must end the guest with status 3. */
		rt_printf("rpi_inside: executing ud2\n");
		__builtin_trap();
	}
	if (rpi_expect == EXPECT_ECHO)
		rt_wait_claimed(base, 0, 30000);

	/* Bytes at 0x00..0x07. */
	for (unsigned i = 0; i < 8; i++) {
		uint8_t v = (uint8_t)(0x11 * (i + 1));

		mmio_write8(base + i, v);
		rt_printf("write8  off=0x%03x 0x%02x\n", i, v);
	}
	for (unsigned i = 0; i < 8; i++) {
		uint8_t v = mmio_read8(base + i);

		rt_printf("read8   off=0x%03x 0x%02x\n", i, v);
		rpi_check("read8", i, v, (uint8_t)(0x11 * (i + 1)), 1);
	}

	/* Halves at 0x10..0x17. */
	for (unsigned i = 0; i < 4; i++) {
		uint16_t v = (uint16_t)(0x1234 + 0x1111 * i);

		mmio_write16(base + 0x10 + 2 * i, v);
		rt_printf("write16 off=0x%03x 0x%04x\n", 0x10 + 2 * i, v);
	}
	for (unsigned i = 0; i < 4; i++) {
		uint16_t v = mmio_read16(base + 0x10 + 2 * i);

		rt_printf("read16  off=0x%03x 0x%04x\n", 0x10 + 2 * i, v);
		rpi_check("read16", 0x10 + 2 * i, v, (uint16_t)(0x1234 + 0x1111 * i), 2);
	}

	/* Words at 0x20..0x2f. */
	for (unsigned i = 0; i < 4; i++) {
		uint32_t v = 0xdeadbeefu + 0x01010101u * i;

		mmio_write32(base + 0x20 + 4 * i, v);
		rt_printf("write32 off=0x%03x 0x%08x\n", 0x20 + 4 * i, v);
	}
	for (unsigned i = 0; i < 4; i++) {
		uint32_t v = mmio_read32(base + 0x20 + 4 * i);

		rt_printf("read32  off=0x%03x 0x%08x\n", 0x20 + 4 * i, v);
		rpi_check("read32", 0x20 + 4 * i, v, 0xdeadbeefu + 0x01010101u * i, 4);
	}

	/* Quads at 0x40..0x5f. */
	for (unsigned i = 0; i < 4; i++) {
		uint64_t v = 0x0123456789abcdefull + 0x1111111111111111ull * i;

		mmio_write64(base + 0x40 + 8 * i, v);
		rt_printf("write64 off=0x%03x 0x%016lx\n", 0x40 + 8 * i, (unsigned long)v);
	}
	for (unsigned i = 0; i < 4; i++) {
		uint64_t v = mmio_read64(base + 0x40 + 8 * i);

		rt_printf("read64  off=0x%03x 0x%016lx\n", 0x40 + 8 * i, (unsigned long)v);
		rpi_check("read64", 0x40 + 8 * i, v,
			  0x0123456789abcdefull + 0x1111111111111111ull * i, 8);
	}

	/* A byte read inside what a word wrote: the little-endian image. */
	{
		uint8_t v = mmio_read8(base + 0x21);

		rt_printf("read8   off=0x%03x 0x%02x\n", 0x21, v);
		rpi_check("read8", 0x21, v, 0xbe, 1);
	}

	if (rpi_errors)
		rt_fail("%u mismatches", rpi_errors);
	rt_printf("SUCCESS\n");
	return 0;
}

void guest_start(unsigned cpu)
{
	char e[16];

	if (cpu != 0)
		rt_park();
	if (rt_bootinfo->nranges < 1)
		rt_fail("no vMMIO range (run with --vmmio)");
	if (!rt_arg("expect", e, sizeof(e)) || !memcmp(e, "echo", 5))
		rpi_expect = EXPECT_ECHO;
	else if (!memcmp(e, "aa", 3))
		rpi_expect = EXPECT_AA;
	else
		rt_fail("bad expect=%s (echo or aa)", e);
	run_user(rpi_main, 0, 0);
}
