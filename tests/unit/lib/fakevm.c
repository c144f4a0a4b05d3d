/* Helpers shared by the libcoreio unit tests that play the VM over a socket. */
#include "fakevm.h"

#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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

void fakevm_send(int fd, const uint8_t *buf, size_t len)
{
	assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

void fakevm_send_fds(int fd, const uint8_t *buf, size_t len, const int *fds, unsigned nfds)
{
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(sizeof(int) * 4)];
	} ctl;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

	assert_true(nfds <= 4);
	memset(&ctl, 0, sizeof(ctl));
	if (nfds) {
		struct cmsghdr *cm;

		mh.msg_control = ctl.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	assert_int_equal(sendmsg(fd, &mh, MSG_NOSIGNAL), (ssize_t)len);
}

static void *connect_thread(void *p)
{
	struct fakevm *v = p;

	v->rc = coreio_ctx_connect(v->ctx, v->target);
	return NULL;
}

void fakevm_start(struct fakevm *v, const char *name, unsigned offer)
{
	static int counter;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	memset(v, 0, sizeof(*v));
	v->c[0] = v->c[1] = -1;
	v->rc = -1;
	snprintf(v->path, sizeof(v->path), "/tmp/coreio-%s-%d-%d.sock", name, (int)getpid(),
		 counter++);
	unlink(v->path);
	v->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(v->lfd >= 0);
	assert_true(strlen(v->path) < sizeof(sun.sun_path));
	strcpy(sun.sun_path, v->path);
	assert_int_equal(bind(v->lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(v->lfd, 8), 0);
	assert_int_equal(coreio_ctx_new(&v->ctx), 0);
	if (offer != FAKEVM_DEFAULT_OFFER)
		assert_int_equal(coreio_ctx_set_offer(v->ctx, offer), 0);
	snprintf(v->target, sizeof(v->target), "unix:%s", v->path);
	assert_int_equal(pthread_create(&v->th, NULL, connect_thread, v), 0);
	for (int i = 0; i < 2; i++) {
		v->c[i] = accept4(v->lfd, NULL, NULL, SOCK_CLOEXEC);
		assert_true(v->c[i] >= 0);
	}
}

int fakevm_join(struct fakevm *v)
{
	assert_int_equal(pthread_join(v->th, NULL), 0);
	return v->rc;
}

void fakevm_hello_recv(int fd, uint8_t *f, unsigned offer)
{
	assert_int_equal(fakevm_recv(fd, f, 64, 3000), 64);
	/* The hello: PING, origin 1, magic, offer, caps, version. */
	assert_int_equal(f[8], COREIO_OP_PING);
	assert_true(coreio__wire_get64(f) >> 31 & 1);
	assert_true(coreio__wire_get64(f + 16) == COREIO_WIRE_MAGIC);
	assert_int_equal(coreio__wire_get64(f + 24), COREIO_HELLO_OFFER);
	assert_int_equal(coreio__wire_get64(f + 32), offer);
	assert_int_equal(coreio__wire_get64(f + 40), COREIO_WIRE_VERSION);
}

void fakevm_hello_answer(int fd, uint8_t *f, unsigned vm_caps)
{
	coreio__wire_put64(f + 24, COREIO_HELLO_ANSWER);
	coreio__wire_put64(f + 32, vm_caps);
	fakevm_send(fd, f, 64);
}

void fakevm_close(struct fakevm *v)
{
	coreio_ctx_free(v->ctx);
	v->ctx = NULL;
	for (int i = 0; i < 2; i++)
		if (v->c[i] >= 0)
			close(v->c[i]);
	v->c[0] = v->c[1] = -1;
	if (v->lfd >= 0) {
		close(v->lfd);
		unlink(v->path);
	}
	v->lfd = -1;
}

int fakevm_pump(struct fakevm *v)
{
	return coreio_ctx_mainloop(v->ctx, 20000);
}
