/* Helpers shared by the libcoreio unit tests that play the VM over a socket. */
#ifndef COREIO_TEST_FAKEVM_H
#define COREIO_TEST_FAKEVM_H

#include <stddef.h>
#include <stdint.h>

/*
 * Receive one whole frame from fd into buf within timeout_ms.
 *   cap  size of buf; a frame longer than cap fails the running test
 * Returns the frame length, or 0 on timeout or a short read.
 */
size_t fakevm_recv(int fd, uint8_t *buf, size_t cap, int timeout_ms);

#endif
