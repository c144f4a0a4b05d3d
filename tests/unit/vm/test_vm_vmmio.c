/* Unit tests of the CoreIO service's request path over a UNIX socket: vCPU waits, order, close. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "event.h"
#include "vmmio.h"

/*
 * The test plays every part: a loop thread is coreio-vm's I/O thread
 * (vmmio_init() and event_run()), the test's threads are vCPUs (the
 * emulate_io() / req->wait / condition-variable sequence of vcpu.c), and a
 * client thread speaks the wire format on a UNIX socket.
 */

#define R0	0xd0000000ull
#define DMA_GPA 0x1000u

enum client_mode {
	CL_ECHO,     /* answer every read: value = address ^ 0x5a5a5a5a, after up to jitter us */
	CL_REVERSE,  /* answer two reads in the opposite order (one alone after 2 ms) */
	CL_DMA,	     /* before answering a read, DMA-read 4 bytes at DMA_GPA and answer them */
	CL_WRITES,   /* record posted writes; answer a read with how many came before it */
	CL_STALL,    /* never answer; close the socket after stall_ms */
	CL_BADANSWER /* answer a read with a wrong opcode (READP) */
};

struct fx {
	char dir[48], path[64];
	struct vm_config cfg;
	struct mem mem;
	struct ioreq_ctx io;
	struct irq_chip irq;
	struct vmmio v;
	pthread_t loop, client;
	sem_t ready;
	int cl; /* the client's socket */
	enum client_mode mode;
	unsigned jitter_us, stall_ms;
	uint32_t writes[256];
	unsigned nwrites;
};

static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;

static void req_done(struct io_request *req, void *opaque)
{
	(void)req;
	(void)opaque;
	pthread_cond_broadcast(&done_cond);
}

/* One access as a vCPU makes it (vcpu.c, vcpu_emulate()). Any thread: no cmocka asserts. */
static void vcpu_access(struct fx *f, struct io_request *req)
{
	int rc;

	req->state = REQ_STATE_FREE;
	req->complete = req_done;
	pthread_mutex_lock(&f->io.lock);
	rc = emulate_io(&f->io, req);
	while (rc == IOREQ_PENDING && req->state != REQ_STATE_COMPLETE) {
		if (req->wait && req->wait(req) == 0)
			break;
		if (req->state != REQ_STATE_COMPLETE)
			pthread_cond_wait(&done_cond, &f->io.lock);
	}
	if (rc < 0)
		abort();
	emulate_mmio_post(&f->io, req);
	pthread_mutex_unlock(&f->io.lock);
}

static uint32_t vcpu_read(struct fx *f, uint64_t addr)
{
	struct io_request req;
	uint32_t v;

	memset(&req, 0, sizeof(req));
	req.type = REQ_MMIO;
	req.reqs.mmio.direction = REQUEST_READ;
	req.reqs.mmio.address = addr;
	req.reqs.mmio.size = 4;
	vcpu_access(f, &req);
	memcpy(&v, req.reqs.mmio.data, 4);
	return v;
}

static void vcpu_write(struct fx *f, uint64_t addr, uint32_t val)
{
	struct io_request req;

	memset(&req, 0, sizeof(req));
	req.type = REQ_MMIO;
	req.reqs.mmio.direction = REQUEST_WRITE;
	req.reqs.mmio.address = addr;
	req.reqs.mmio.size = 4;
	memcpy(req.reqs.mmio.data, &val, 4);
	vcpu_access(f, &req);
}

/* ---- the client ---------------------------------------------------------- */

static int read_unit(int fd, uint8_t *u, int timeout_ms)
{
	size_t got = 0;

	while (got < COREIO_WIRE_UNIT) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, timeout_ms) == 0)
			return got ? -EPROTO : -ETIMEDOUT;
		n = read(fd, u + got, COREIO_WIRE_UNIT - got);
		if (n <= 0)
			return -EPIPE;
		got += (size_t)n;
	}
	return 0;
}

static void write_unit(int fd, const uint8_t *u)
{
	/* A closed connection shows in the client's next read. */
	(void)coreio__wire_send_all(fd, u, COREIO_WIRE_UNIT, 5000);
}

/* Answer the read request req with val. */
static void answer(int fd, const uint8_t *req, uint32_t val)
{
	uint8_t out[COREIO_WIRE_UNIT];

	coreio__wire_answer_init(out, req);
	memcpy(out + COREIO_WIRE_DATA_OFF, &val, 4);
	write_unit(fd, out);
}

static uint32_t value_of(uint64_t addr)
{
	return (uint32_t)addr ^ 0x5a5a5a5au;
}

static void *client_thread(void *opaque)
{
	struct fx *f = opaque;
	uint8_t u[COREIO_WIRE_UNIT], held[COREIO_WIRE_UNIT];
	bool holding = false;
	unsigned seed = 1;

	for (;;) {
		struct coreio_wire_msg m;
		int rc = read_unit(f->cl, u, f->mode == CL_REVERSE && holding ? 2 : -1);

		if (rc == -ETIMEDOUT && holding) {
			m.h.addr = 0;
			coreio__wire_decode(held, COREIO_WIRE_UNIT, COREIO_WIRE_AT_CLIENT, &m);
			answer(f->cl, held, value_of(m.h.addr));
			holding = false;
			continue;
		}
		if (rc < 0)
			break;
		if (coreio__wire_decode(u, COREIO_WIRE_UNIT, COREIO_WIRE_AT_CLIENT, &m) < 0)
			break;
		if (m.h.op == COREIO_OP_WRITE) {
			uint32_t w;

			memcpy(&w, m.data, 4);
			if (f->nwrites < 256)
				f->writes[f->nwrites++] = w;
			continue;
		}
		if (m.h.op != COREIO_OP_READ)
			continue;
		switch (f->mode) {
		case CL_ECHO:
			if (f->jitter_us)
				usleep((useconds_t)(rand_r(&seed) % f->jitter_us));
			answer(f->cl, u, value_of(m.h.addr));
			break;
		case CL_REVERSE:
			if (!holding) {
				memcpy(held, u, sizeof(held));
				holding = true;
			} else {
				struct coreio_wire_msg hm;

				answer(f->cl, u, value_of(m.h.addr));
				coreio__wire_decode(held, COREIO_WIRE_UNIT, COREIO_WIRE_AT_CLIENT,
						    &hm);
				answer(f->cl, held, value_of(hm.h.addr));
				holding = false;
			}
			break;
		case CL_DMA: {
			struct coreio_wire_hdr h = {.origin = true,
						    .tag = 77,
						    .op = COREIO_OP_READ,
						    .size = 4,
						    .addr = DMA_GPA};
			uint8_t d[COREIO_WIRE_UNIT];
			struct coreio_wire_msg dm;
			uint32_t val;

			coreio__wire_encode(d, &h);
			write_unit(f->cl, d);
			/* The DMA answer comes while the vCPU waits for ours. */
			if (read_unit(f->cl, d, 5000) < 0 ||
			    coreio__wire_decode(d, COREIO_WIRE_UNIT, COREIO_WIRE_AT_CLIENT, &dm) <
				0 ||
			    dm.h.tag != 77 || dm.h.error)
				return NULL;
			memcpy(&val, dm.data, 4);
			answer(f->cl, u, val);
			break;
		}
		case CL_WRITES:
			answer(f->cl, u, f->nwrites);
			break;
		case CL_STALL:
			usleep(f->stall_ms * 1000u);
			shutdown(f->cl, SHUT_RDWR);
			return NULL;
		case CL_BADANSWER: {
			uint8_t out[COREIO_WIRE_UNIT];
			struct coreio_wire_hdr h = m.h;

			h.op = COREIO_OP_READP;
			h.size = 4;
			coreio__wire_encode(out, &h);
			write_unit(f->cl, out);
			break;
		}
		}
	}
	return NULL;
}

/* ---- set-up -------------------------------------------------------------- */

static void *loop_thread(void *opaque)
{
	struct fx *f = opaque;

	/* This thread is the I/O thread: vmmio_init() records it. */
	if (vmmio_init(&f->v, &f->cfg, &f->io, &f->mem, &f->irq) < 0)
		abort();
	sem_post(&f->ready);
	event_run();
	return NULL;
}

static struct fx *start(const char *poll, enum client_mode mode)
{
	struct fx *f = calloc(1, sizeof(*f));
	char spec[256], err[256];
	char *argv[8];
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	uint8_t u[COREIO_WIRE_UNIT];
	int i;

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_vm_vmmio.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/s", f->dir);
	snprintf(spec, sizeof(spec), "0x%llx,size=0x1000,irq=5,port=unix:%s%s",
		 (unsigned long long)R0, f->path, poll);
	argv[0] = (char *)"coreio-vm";
	argv[1] = (char *)"--accel";
	argv[2] = (char *)"qtest";
	argv[3] = (char *)"--mem";
	argv[4] = (char *)"1M";
	argv[5] = (char *)"--vmmio";
	argv[6] = spec;
	argv[7] = NULL;
	assert_int_equal(config_parse(7, argv, &f->cfg, err, sizeof(err)), 0);
	assert_int_equal(mem_init(&f->mem, f->cfg.mem), 0);
	ioreq_init(&f->io, &f->mem);
	irq_init(&f->irq, NULL, NULL);
	assert_int_equal(event_init(), 0);
	sem_init(&f->ready, 0, 0);
	assert_int_equal(pthread_create(&f->loop, NULL, loop_thread, f), 0);
	sem_wait(&f->ready);

	f->cl = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	assert_int_equal(connect(f->cl, (struct sockaddr *)&sa, sizeof(sa)), 0);
	coreio__wire_claim_encode(u, 0, 1);
	write_unit(f->cl, u);
	for (i = 0; i < 5000; i++) {
		bool claimed;

		pthread_mutex_lock(&f->io.lock);
		claimed = vmmio_range(&f->v, 0)->owner != NULL;
		pthread_mutex_unlock(&f->io.lock);
		if (claimed)
			break;
		usleep(1000);
	}
	assert_true(i < 5000);
	f->mode = mode;
	assert_int_equal(pthread_create(&f->client, NULL, client_thread, f), 0);
	return f;
}

static void stop(struct fx *f)
{
	event_stop();
	pthread_join(f->loop, NULL);
	shutdown(f->cl, SHUT_RDWR);
	pthread_join(f->client, NULL);
	vmmio_exit(&f->v);
	close(f->cl);
	event_exit(); /* frees the connections (deferred) */
	ioreq_exit(&f->io);
	mem_exit(&f->mem);
	sem_destroy(&f->ready);
	unlink(f->path);
	rmdir(f->dir);
	free(f);
}

/* ---- tests --------------------------------------------------------------- */

static void reads_with(const char *poll)
{
	struct fx *f = start(poll, CL_ECHO);

	f->jitter_us = 30;
	for (unsigned i = 0; i < 1000; i++) {
		uint64_t a = R0 + 4 * (i % 1024);

		assert_int_equal(vcpu_read(f, a), value_of(a));
	}
	/* A wait that found the receive role taken (the I/O thread draining
	 * at that moment) sleeps on its completion instead and is not counted. */
	pthread_mutex_lock(&f->io.lock);
	assert_in_range(f->v.ranges[0].waits, 900, 1000);
	assert_true(f->v.ranges[0].spun <= f->v.ranges[0].waits);
	pthread_mutex_unlock(&f->io.lock);
	stop(f);
}

static void test_reads_adaptive(void **state)
{
	(void)state;
	reads_with("");
}

static void test_reads_busy(void **state)
{
	(void)state;
	reads_with(",poll=busy:50");
}

static void test_reads_block(void **state)
{
	(void)state;
	reads_with(",poll=block");
}

struct vcpu_arg {
	struct fx *f;
	unsigned id;
	unsigned wrong; /* reads that returned another value */
};

static void *vcpu_reader(void *opaque)
{
	struct vcpu_arg *a = opaque;

	for (unsigned i = 0; i < 300; i++) {
		uint64_t addr = R0 + 0x800 * a->id + 4 * (i % 256);

		a->wrong += vcpu_read(a->f, addr) != value_of(addr);
	}
	return NULL;
}

/* Two vCPUs wait on one connection; each one's answer may come to the other. */
static void two_vcpus_with(const char *poll)
{
	struct fx *f = start(poll, CL_REVERSE);
	struct vcpu_arg a[2] = {{f, 0, 0}, {f, 1, 0}};
	pthread_t t[2];

	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, vcpu_reader, &a[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(a[0].wrong + a[1].wrong, 0);
	stop(f);
}

static void test_two_vcpus_adaptive(void **state)
{
	(void)state;
	two_vcpus_with("");
}

static void test_two_vcpus_block(void **state)
{
	(void)state;
	two_vcpus_with(",poll=block");
}

/* The client DMAs from inside its answer: the waiting vCPU serves it. */
static void test_dma_while_waiting(void **state)
{
	struct fx *f;

	(void)state;
	for (int p = 0; p < 2; p++) {
		f = start(p ? ",poll=block" : "", CL_DMA);
		for (uint32_t i = 0; i < 200; i++) {
			mem_write(&f->mem, DMA_GPA, &i, 4);
			assert_int_equal(vcpu_read(f, R0 + 8), i);
		}
		pthread_mutex_lock(&f->io.lock);
		assert_int_equal(f->io.stats.dma_ok, 200);
		pthread_mutex_unlock(&f->io.lock);
		stop(f);
	}
}

/* Posted writes and a read reach the client in the order the vCPU made them. */
static void test_posted_writes_in_order(void **state)
{
	struct fx *f = start("", CL_WRITES);

	(void)state;
	for (uint32_t i = 0; i < 100; i++)
		vcpu_write(f, R0 + 0x10, i);
	assert_int_equal(vcpu_read(f, R0), 100);
	for (uint32_t i = 0; i < 100; i++)
		assert_int_equal(f->writes[i], i);
	stop(f);
}

/* A batch (coalesced MMIO's drain): posted writes queue, and leave at its end, in order. */
static void test_batch_sends_at_end(void **state)
{
	struct fx *f = start("", CL_WRITES);

	(void)state;
	pthread_mutex_lock(&f->io.lock);
	vmmio_batch(&f->v, true);
	for (uint32_t i = 0; i < 50; i++) {
		struct io_request req;
		int rc;

		memset(&req, 0, sizeof(req));
		req.type = REQ_MMIO;
		req.reqs.mmio.direction = REQUEST_WRITE;
		req.reqs.mmio.address = R0 + 0x20;
		req.reqs.mmio.size = 4;
		memcpy(req.reqs.mmio.data, &i, 4);
		rc = emulate_io(&f->io, &req);
		assert_int_equal(rc, IOREQ_PENDING);
		/* Inside the batch the wait completes it without sending. */
		assert_int_equal(req.wait(&req), 0);
		assert_int_equal(req.state, REQ_STATE_COMPLETE);
		emulate_mmio_post(&f->io, &req);
	}
	pthread_mutex_unlock(&f->io.lock);
	vmmio_batch(&f->v, false);
	assert_int_equal(vcpu_read(f, R0), 50);
	for (uint32_t i = 0; i < 50; i++)
		assert_int_equal(f->writes[i], i);
	stop(f);
}

/* A client that closes while a vCPU sleeps on its socket: the read completes as unclaimed. */
static void test_close_wakes_waiter(void **state)
{
	struct fx *f = start(",poll=block", CL_STALL);

	(void)state;
	f->stall_ms = 50;
	assert_int_equal(vcpu_read(f, R0), 0xaaaaaaaau);
	pthread_mutex_lock(&f->io.lock);
	assert_null(vmmio_range(&f->v, 0)->owner);
	pthread_mutex_unlock(&f->io.lock);
	/* Unclaimed now: no wait. */
	assert_int_equal(vcpu_read(f, R0), 0xaaaaaaaau);
	stop(f);
}

/* An answer of the wrong kind is malformed: the connection closes, the read is unclaimed. */
static void test_bad_answer_closes(void **state)
{
	struct fx *f = start("", CL_BADANSWER);

	(void)state;
	assert_int_equal(vcpu_read(f, R0), 0xaaaaaaaau);
	pthread_mutex_lock(&f->io.lock);
	assert_int_equal(f->io.stats.malformed, 1);
	assert_null(vmmio_range(&f->v, 0)->owner);
	pthread_mutex_unlock(&f->io.lock);
	stop(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reads_adaptive),
	    cmocka_unit_test(test_reads_busy),
	    cmocka_unit_test(test_reads_block),
	    cmocka_unit_test(test_two_vcpus_adaptive),
	    cmocka_unit_test(test_two_vcpus_block),
	    cmocka_unit_test(test_dma_while_waiting),
	    cmocka_unit_test(test_posted_writes_in_order),
	    cmocka_unit_test(test_batch_sends_at_end),
	    cmocka_unit_test(test_close_wakes_waiter),
	    cmocka_unit_test(test_bad_answer_closes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
