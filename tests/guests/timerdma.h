/* Register map of coreio-timerdma for the test guests: the device model's own header. */
#ifndef COREIO_GUEST_TIMERDMA_H
#define COREIO_GUEST_TIMERDMA_H

#include "timerdma-regs.h"

#endif
