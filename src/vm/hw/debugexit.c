/* coreio-vm: the debug-exit port 0x501: a write of V ends coreio-vm with status V & 0xff. */
#include <errno.h>
#include <stdlib.h>

#include "bootinfo.h"
#include "hw.h"

struct debugexit {
	const struct hw_ctx *hw;
};

static int debugexit_io(struct io_request *req, void *opaque)
{
	struct debugexit *d = opaque;
	struct pio_request *p = &req->reqs.pio;

	if (p->direction == REQUEST_READ) {
		p->value = 0;
		return 0;
	}
	/* Only the port itself; the rest of the registered window ignores writes. */
	if (p->address == COREIO_DEBUG_EXIT_PORT && d->hw->request_exit)
		d->hw->request_exit((int)(p->value & 0xff), d->hw->exit_opaque);
	return 0;
}

static int debugexit_init(const struct hw_ctx *hw, void **state)
{
	struct debugexit *d = calloc(1, sizeof(*d));
	int rc;

	if (!d)
		return -ENOMEM;
	d->hw = hw;
	/* Four ports, so an outw/outl to 0x501 is still one access of this device. */
	rc = register_io_emulation_handler(hw->io, COREIO_DEBUG_EXIT_PORT,
					   COREIO_DEBUG_EXIT_PORT + 4, debugexit_io, d);
	if (rc < 0) {
		free(d);
		return rc;
	}
	*state = d;
	return 0;
}

static void debugexit_exit(void *state)
{
	free(state);
}

const struct hw_device hw_debugexit = {
    .name = "debug-exit",
    .init = debugexit_init,
    .exit = debugexit_exit,
};
