/* Helpers shared by the libcoreio unit tests that play the VM over a socket. */
#include "fakevm.h"

#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "wire.h"

size_t fakevm_recv(int fd, uint8_t *buf, size_t cap, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	size_t flen;

	if (poll(&p, 1, timeout_ms) <= 0)
		return 0;
	if (recv(fd, buf, 64, MSG_WAITALL) != 64)
		return 0;
	flen = coreio__wire_frame_len(coreio__wire_get64(buf));
	assert_true(flen <= cap);
	if (flen > 64 && recv(fd, buf + 64, flen - 64, MSG_WAITALL) != (ssize_t)(flen - 64))
		return 0;
	return flen;
}

void *fakevm_connect_thread(void *p)
{
	struct fakevm_connect *a = p;

	a->rc = coreio_ctx_connect(a->ctx, a->target);
	return NULL;
}
