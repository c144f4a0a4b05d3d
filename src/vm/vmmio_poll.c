/* coreio-vm: the adaptive spin of a vCPU waiting for a client's answer (poll=adaptive). */
#include "vmmio.h"

unsigned vmmio_poll_window(unsigned window, uint64_t waited, unsigned max)
{
	if (waited <= window)
		return window;
	/* A spin ends when the answer comes: the full bound costs no more than a shorter one. */
	if (waited <= max)
		return max;
	return window / 2 < VMMIO_SPIN_MIN_NS ? 0 : window / 2;
}
