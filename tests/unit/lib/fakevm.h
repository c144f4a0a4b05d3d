/* Helpers shared by the libcoreio unit tests that play the VM over a socket. */
#ifndef COREIO_TEST_FAKEVM_H
#define COREIO_TEST_FAKEVM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "coreio.h"

/* fakevm_start()'s offer that leaves the context's default offer alone. */
#define FAKEVM_DEFAULT_OFFER (~0u)

/* The VM's end of one context: a listening socket and both accepted connections. */
struct fakevm {
	char path[108]; /* the listening socket's path */
	int lfd;	/* the listener, -1 once closed */
	int c[2];	/* VM side of the control and DMA connections, -1 when closed */
	coreio_ctx_t *ctx;
	/* coreio_ctx_connect() runs on a thread of its own while the test plays the VM. */
	pthread_t th;
	char target[128];
	int rc; /* its result, once fakevm_join() returns */
};

/*
 * Receive one whole frame from fd into buf within timeout_ms.
 *   cap  size of buf; a frame longer than cap fails the running test
 * Returns the frame length, or 0 on timeout or a short read.
 */
size_t fakevm_recv(int fd, uint8_t *buf, size_t cap, int timeout_ms);

/* Send all len bytes of buf on fd; fails the running test if it cannot. */
void fakevm_send(int fd, const uint8_t *buf, size_t len);

/* Send len bytes with nfds (at most 4) fds attached in one sendmsg(); fails the test otherwise. */
void fakevm_send_fds(int fd, const uint8_t *buf, size_t len, const int *fds, unsigned nfds);

/*
 * Listen on a fresh socket /tmp/coreio-<name>-<pid>-<n>.sock, make v->ctx with offer
 * (FAKEVM_DEFAULT_OFFER: the default), start coreio_ctx_connect() to it on a thread and
 * accept both connections into v->c. The hello, if any, is the caller's to play; then
 * fakevm_join().
 */
void fakevm_start(struct fakevm *v, const char *name, unsigned offer);

/* Wait for the connect thread; returns coreio_ctx_connect()'s result (also in v->rc). */
int fakevm_join(struct fakevm *v);

/*
 * Receive the hello on connection fd into f (64 bytes) and check it: PING from the
 * client, the magic, an offer of offer, this wire version.
 */
void fakevm_hello_recv(int fd, uint8_t *f, unsigned offer);

/* Turn the hello f into the VM's answer with vm_caps and send it on fd. */
void fakevm_hello_answer(int fd, uint8_t *f, unsigned vm_caps);

/* Free v->ctx, close what is left open, remove the socket file. */
void fakevm_close(struct fakevm *v);

/* Let the library process what the VM sent: coreio_ctx_mainloop(v->ctx, 20000). */
int fakevm_pump(struct fakevm *v);

#endif
