/* coreio-vm: the adaptive spin of a vCPU waiting for a client's answer (poll=adaptive). */
#include "vmmio.h"

unsigned vmmio_poll_window(unsigned window, uint64_t waited, unsigned max)
{
	uint64_t next;

	if (waited <= window)
		return window;
	if (waited > max)
		return window / 2 < VMMIO_SPIN_MIN_NS ? 0 : window / 2;
	next = waited + waited / 4;
	if (next < VMMIO_SPIN_MIN_NS)
		next = VMMIO_SPIN_MIN_NS;
	return next > max ? max : (unsigned)next;
}
