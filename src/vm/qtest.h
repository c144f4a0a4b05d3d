/* coreio-vm: the qtest accelerator, a script that plays the CPU (docs/coreio-vm.md). */
#ifndef COREIO_VM_QTEST_H
#define COREIO_VM_QTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ioreq.h"
#include "irq.h"
#include "mem.h"
#include "vmmio.h"

#define QTEST_MAX_LINE (256u << 20) /* longest command line accepted */

enum qtest_kind {
	QTEST_ANS_OK = 0, /* "OK" */
	QTEST_ANS_VALUE,  /* "OK 0x" + 16 hex digits of the little-endian value */
	QTEST_ANS_BYTES,  /* "OK 0x" + the bytes in address order */
	QTEST_ANS_PAIR,	  /* "OK 0xHEX1 0xHEX2" */
};

struct qtest {
	struct ioreq_ctx *io;
	struct mem *mem;
	struct irq_chip *irq;
	struct vmmio *v;
	char path[CONFIG_NAME_MAX]; /* unix:PATH mode; empty for stdio */
	int listen_fd;
	int in_fd, out_fd; /* the script; -1 when none is connected */
	bool in_watched;   /* in_fd is in the event loop (not for regular files) */
	bool eof;	   /* the script closed its side */
	bool waiting;	   /* a command waits for a client or for vmmio_wait */
	bool in_wait;	   /* inside qtest_emulate()'s req.wait: pump() goes on after it */
	bool intercept;	   /* irq_intercept_in was given */
	uint32_t flags;	   /* access flags of the following accesses */
	char *in;	   /* received bytes */
	size_t in_start, in_len, in_cap;
	bool discarding; /* dropping the rest of an overlong line */
	char *out;	 /* the line being written */
	size_t out_len, out_cap;
	struct io_request req; /* the vCPU's one request */
	enum qtest_kind kind;
	int timer_fd; /* vmmio_wait timeout */
	int wait_g;   /* range vmmio_wait waits for, or -1 */
};

/*
 * Start the accelerator: on stdin/stdout when path is NULL or empty, else
 * listening on the UNIX socket path. Installs the IRQ backend and the claim
 * callback; the event loop must exist.
 * Returns 0, or a negative errno after printing why on stderr.
 */
int qtest_init(struct qtest *q, const char *path, struct ioreq_ctx *io, struct mem *mem,
	       struct irq_chip *irq, struct vmmio *v);

/* Close the script connection and the socket, and remove the socket file. */
void qtest_exit(struct qtest *q);

#endif
