/* Helpers shared by the libcoreio unit tests that play the VM over a socket. */
#ifndef COREIO_TEST_FAKEVM_H
#define COREIO_TEST_FAKEVM_H

#include <stddef.h>
#include <stdint.h>

#include "coreio.h"

/*
 * Receive one whole frame from fd into buf within timeout_ms.
 *   cap  size of buf; a frame longer than cap fails the running test
 * Returns the frame length, or 0 on timeout or a short read.
 */
size_t fakevm_recv(int fd, uint8_t *buf, size_t cap, int timeout_ms);

/* coreio_ctx_connect(ctx, target) on a thread of its own, while the test plays the VM. */
struct fakevm_connect {
	coreio_ctx_t *ctx;
	const char *target;
	int rc; /* its result, once the thread is joined */
};

/* The thread function: p is a struct fakevm_connect. Returns NULL. */
void *fakevm_connect_thread(void *p);

#endif
