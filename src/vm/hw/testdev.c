/* coreio-vm: the in-VMM MMIO test device: an ID register and a 64-bit scratch register. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bootinfo.h"
#include "hw.h"

#define TESTDEV_SIZE	    0x1000ull
#define TESTDEV_ID_OFF	    0
#define TESTDEV_SCRATCH_OFF 8

struct testdev {
	uint8_t regs[16]; /* bytes 0..3: the ID; 8..15: scratch; the rest reads 0 */
};

static int testdev_mmio(struct io_request *req, void *opaque)
{
	struct testdev *t = opaque;
	struct mmio_request *m = &req->reqs.mmio;
	uint64_t off = m->address - COREIO_TESTDEV_BASE;
	uint64_t len = m->pair ? 2ull * m->size : m->size;

	for (uint64_t i = 0; i < len; i++) {
		uint64_t a = off + i;
		uint8_t *b = i < m->size ? &m->data[i] : &m->data2[i - m->size];
		uint32_t bit = 1u << (i < m->size ? i : i - m->size);

		if (m->direction == REQUEST_READ)
			*b = a < sizeof(t->regs) ? t->regs[a] : 0;
		else if (a >= TESTDEV_SCRATCH_OFF && a < sizeof(t->regs) &&
			 (m->mask == 0 || (m->mask & bit)))
			t->regs[a] = *b;
	}
	return 0;
}

static int testdev_init(const struct hw_ctx *hw, void **state)
{
	struct testdev *t = calloc(1, sizeof(*t));
	uint32_t id = COREIO_TESTDEV_ID;
	int rc;

	if (!t)
		return -ENOMEM;
	memcpy(&t->regs[TESTDEV_ID_OFF], &id, sizeof(id)); /* little-endian host and guest */
	rc = register_mmio_emulation_handler(hw->io, COREIO_TESTDEV_BASE,
					     COREIO_TESTDEV_BASE + TESTDEV_SIZE, testdev_mmio, t);
	if (rc < 0) {
		free(t);
		return rc;
	}
	*state = t;
	return 0;
}

static void testdev_exit(void *state)
{
	free(state);
}

const struct hw_device hw_testdev = {
    .name = "testdev",
    .init = testdev_init,
    .exit = testdev_exit,
};
