/* coreio-vm: the KVM accelerator: the VM, its vCPU threads and their exits. */
#include "vcpu.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "boot.h"
#include "coreio.h"
#include "event.h"
#include "loader.h"

#define KICK_SIGNAL SIGUSR1

/* The IRQ backend: a line of the IRQ chip changed (VM lock held). */
static void irq_backend(int line, bool level, void *opaque)
{
	struct kvm_accel *a = opaque;
	int rc = kvm_irq_line(&a->kvm, (unsigned)line, level);

	if (rc < 0)
		fprintf(stderr, "coreio-vm: KVM_IRQ_LINE %d -> %d failed: %s\n", line, level,
			strerror(-rc));
	else if (a->trace)
		fprintf(stderr, "coreio-vm: trace: IRQ line %d -> %d\n", line, level);
}

static uint64_t guest_rip(const struct vcpu *v)
{
	struct kvm_regs r;

	if (ioctl(v->k.fd, KVM_GET_REGS, &r) < 0)
		return 0;
	return r.rip;
}

static void vcpu_fail(struct vcpu *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Report a fatal vCPU exit with the guest RIP and end the VM with status 125. */
static void vcpu_fail(struct vcpu *v, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "coreio-vm: vCPU %u: %s at guest RIP 0x%llx\n", v->id, msg,
		(unsigned long long)guest_rip(v));
	fflush(stderr);
	kvm_accel_request_exit(v->a, VCPU_EXIT_CRASH);
}

/* Completion callback of a vCPU's request (I/O thread, VM lock held). */
static void vcpu_done(struct io_request *req, void *opaque)
{
	struct vcpu *v = opaque;

	(void)req;
	pthread_cond_signal(&v->cond);
}

/*
 * Run v->req through the ioreq layer and wait for it (the condition
 * variable releases the VM lock while waiting). Afterwards the read data
 * (all ones for a failed or straddling access) is in v->req.reqs.
 */
static void vcpu_emulate(struct vcpu *v)
{
	struct kvm_accel *a = v->a;
	struct io_request *req = &v->req;
	uint64_t unhandled;
	int rc;

	req->state = REQ_STATE_FREE;
	req->complete = vcpu_done;
	req->complete_opaque = v;
	pthread_mutex_lock(&a->io->lock);
	unhandled = a->io->stats.unhandled_reads + a->io->stats.unhandled_writes;
	rc = emulate_io(a->io, req);
	/*
	 * The handler's wait (vmmio: send the request, then receive the
	 * client's answer on this thread, vmmio_wait()); when it cannot finish
	 * (another thread receives on that connection), sleep until the
	 * completion callback; after a wake-up that did not complete the
	 * request, wait again.
	 */
	while (rc == IOREQ_PENDING && req->state != REQ_STATE_COMPLETE) {
		if (req->wait && req->wait(req) == 0)
			break;
		if (req->state != REQ_STATE_COMPLETE)
			pthread_cond_wait(&v->cond, &a->io->lock);
	}
	if (rc >= 0) {
		emulate_mmio_post(a->io, req);
	} else {
		/* A straddling or malformed access: nothing was done; reads give ones. */
		memset(req->reqs.mmio.data, 0xff, sizeof(req->reqs.mmio.data));
		if (req->type == REQ_PORTIO)
			req->reqs.pio.value = 0xffffffffu;
		req->state = REQ_STATE_FREE;
	}
	if (a->trace &&
	    (rc < 0 || a->io->stats.unhandled_reads + a->io->stats.unhandled_writes != unhandled)) {
		bool mmio = req->type == REQ_MMIO;
		bool wr = mmio ? req->reqs.mmio.direction == REQUEST_WRITE
			       : req->reqs.pio.direction == REQUEST_WRITE;

		fprintf(stderr, "coreio-vm: trace: vCPU %u: %s %s %s 0x%llx size %u\n", v->id,
			rc < 0 ? "straddling" : "unhandled", mmio ? "MMIO" : "port",
			wr ? "write" : "read",
			(unsigned long long)(mmio ? req->reqs.mmio.address : req->reqs.pio.address),
			mmio ? req->reqs.mmio.size : req->reqs.pio.size);
	}
	pthread_mutex_unlock(&a->io->lock);
}

static bool vcpu_cpl0(struct vcpu *v)
{
	struct kvm_sregs s;

	if (v->a->kvm.sync_regs & KVM_SYNC_X86_SREGS)
		return v->k.run->s.regs.sregs.cs.dpl == 0;
	if (ioctl(v->k.fd, KVM_GET_SREGS, &s) < 0)
		return true;
	return s.cs.dpl == 0;
}

/* Completion of a drained write that went pending (a handler answered later). */
static void drain_done(struct io_request *req, void *opaque)
{
	struct kvm_accel *a = opaque;

	(void)req;
	pthread_cond_broadcast(&a->ccond);
}

/* Whether KVM's coalesced-MMIO ring holds writes (any thread, no lock). */
static bool coalesced_pending(const struct kvm_accel *a)
{
	return a->ring && __atomic_load_n(&a->ring->first, __ATOMIC_RELAXED) !=
			      __atomic_load_n(&a->ring->last, __ATOMIC_ACQUIRE);
}

/*
 * Hand the writes KVM collected in its coalesced-MMIO ring to their
 * handlers through emulate_io(), oldest first, each as a guest write
 * without the privilege flag, and give their slots back to KVM (VM lock
 * held). A batch is begun with a->batch(opaque, true) so that vmmio queues
 * it; returns true when one was begun: the caller ends it with
 * a->batch(opaque, false) after dropping the VM lock, which sends it.
 */
static bool coalesced_drain_locked(struct kvm_accel *a)
{
	struct kvm_coalesced_mmio_ring *ring = a->ring;
	uint32_t first = __atomic_load_n(&ring->first, __ATOMIC_RELAXED);
	uint32_t last = __atomic_load_n(&ring->last, __ATOMIC_ACQUIRE);
	bool batch = false;

	while (first != last) {
		const struct kvm_coalesced_mmio *e;
		struct io_request *req = &a->creq;
		struct mmio_request *m = &req->reqs.mmio;
		int rc;

		if (first >= a->ring_max || last >= a->ring_max) {
			fprintf(stderr,
				"coreio-vm: coalesced-MMIO ring index out of range (%u, %u)\n",
				first, last);
			kvm_accel_request_exit(a, VCPU_EXIT_CRASH);
			break;
		}
		e = &ring->coalesced_mmio[first];
		if (!batch && a->batch) {
			a->batch(a->batch_opaque, true);
			batch = true;
		}
		if (e->len >= 1 && e->len <= sizeof(e->data) && !e->pio) {
			memset(req, 0, sizeof(*req));
			req->type = REQ_MMIO;
			req->complete = drain_done;
			req->complete_opaque = a;
			m->direction = REQUEST_WRITE;
			m->address = e->phys_addr;
			m->size = e->len;
			memcpy(m->data, e->data, e->len);
			rc = emulate_io(a->io, req);
			/* A posted write completes in its wait (vmmio_wait(): queued,
			 * not sent, inside the batch); any other request's wait sends
			 * everything queued before it waits. */
			while (rc == IOREQ_PENDING && req->state != REQ_STATE_COMPLETE) {
				if (req->wait && req->wait(req) == 0)
					break;
				if (req->state != REQ_STATE_COMPLETE)
					pthread_cond_wait(&a->ccond, &a->io->lock);
			}
			if (rc >= 0)
				emulate_mmio_post(a->io, req);
		}
		first = (first + 1) % a->ring_max;
		__atomic_store_n(&ring->first, first, __ATOMIC_RELEASE);
		if (first == last)
			last = __atomic_load_n(&ring->last, __ATOMIC_ACQUIRE);
	}
	return batch;
}

/* Drain the ring if it holds writes (any thread, VM lock not held). */
static void coalesced_drain(struct kvm_accel *a)
{
	bool batch;

	if (!coalesced_pending(a))
		return;
	pthread_mutex_lock(&a->io->lock);
	batch = coalesced_drain_locked(a);
	pthread_mutex_unlock(&a->io->lock);
	if (batch)
		a->batch(a->batch_opaque, false); /* sends the batch, without the VM lock */
}

/* The I/O thread's drain: a write never waits longer than COALESCE_FLUSH_US. */
static void coalesce_timer_cb(int fd, uint32_t events, void *opaque)
{
	uint64_t ticks;

	(void)events;
	if (read(fd, &ticks, sizeof(ticks)) < 0) {
		/* Spurious wake-up: drain anyway. */
	}
	coalesced_drain(opaque);
}

static void handle_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->k.run;
	struct mmio_request *m = &v->req.reqs.mmio;
	uint32_t len = run->mmio.len;

	if (len < 1 || len > sizeof(run->mmio.data)) {
		vcpu_fail(v, "MMIO exit with length %u", len);
		return;
	}
	memset(&v->req, 0, sizeof(v->req));
	v->req.type = REQ_MMIO;
	m->direction = run->mmio.is_write ? REQUEST_WRITE : REQUEST_READ;
	m->address = run->mmio.phys_addr;
	m->size = len;
	m->flags = vcpu_cpl0(v) ? COREIO_FLAGS_PRIV : 0;
	if (run->mmio.is_write)
		memcpy(m->data, run->mmio.data, len);
	vcpu_emulate(v);
	if (!run->mmio.is_write)
		memcpy(run->mmio.data, m->data, len);
}

static void handle_pio(struct vcpu *v)
{
	struct kvm_run *run = v->k.run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	unsigned size = run->io.size;

	if ((size != 1 && size != 2 && size != 4) || run->io.data_offset < sizeof(*run) ||
	    run->io.count > (v->a->kvm.run_size - run->io.data_offset) / size) {
		vcpu_fail(v, "malformed port I/O exit (size %u count %u)", size, run->io.count);
		return;
	}
	for (uint32_t i = 0; i < run->io.count; i++) {
		struct pio_request *p = &v->req.reqs.pio;
		uint8_t *d = data + (size_t)i * size;

		memset(&v->req, 0, sizeof(v->req));
		v->req.type = REQ_PORTIO;
		p->direction = run->io.direction == KVM_EXIT_IO_OUT ? REQUEST_WRITE : REQUEST_READ;
		p->address = run->io.port;
		p->size = size;
		if (p->direction == REQUEST_WRITE)
			memcpy(&p->value, d, size);
		vcpu_emulate(v);
		if (p->direction == REQUEST_READ)
			memcpy(d, &p->value, size);
	}
}

/* Handle one exit. Returns false when the vCPU must stop. */
static bool handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->k.run;

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		handle_pio(v);
		return true;
	case KVM_EXIT_MMIO:
		handle_mmio(v);
		return true;
	case KVM_EXIT_INTR:
		return true;
	case KVM_EXIT_HLT:
		vcpu_fail(v, "guest halted (KVM_EXIT_HLT) without using the debug-exit port");
		return false;
	case KVM_EXIT_SHUTDOWN:
		vcpu_fail(v, "guest triple fault (KVM_EXIT_SHUTDOWN)");
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION)
			vcpu_fail(v, "KVM could not emulate an instruction "
				     "(KVM_EXIT_INTERNAL_ERROR, emulation failure)");
		else
			vcpu_fail(v, "KVM internal error (KVM_EXIT_INTERNAL_ERROR, suberror %u)",
				  run->internal.suberror);
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		vcpu_fail(v, "VM entry failed (KVM_EXIT_FAIL_ENTRY, reason 0x%llx)",
			  (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		vcpu_fail(v, "guest system event %u (KVM_EXIT_SYSTEM_EVENT)",
			  run->system_event.type);
		return false;
	default:
		vcpu_fail(v, "unexpected KVM exit reason %u", run->exit_reason);
		return false;
	}
}

static void *vcpu_thread(void *opaque)
{
	struct vcpu *v = opaque;
	struct kvm_accel *a = v->a;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	if (a->kvm.sync_regs & KVM_SYNC_X86_SREGS)
		v->k.run->kvm_valid_regs = KVM_SYNC_X86_SREGS;
	while (!atomic_load(&a->stopping)) {
		int rc = ioctl(v->k.fd, KVM_RUN, 0);
		int err = errno;

		/* Writes collected before this exit go first, whatever the exit is. */
		coalesced_drain(a);
		if (rc < 0) {
			if (err == EINTR || err == EAGAIN)
				continue; /* a kick: the loop condition decides */
			vcpu_fail(v, "KVM_RUN failed: %s", strerror(err));
			break;
		}
		if (!handle_exit(v))
			break;
	}
	return NULL;
}

static void kick_handler(int sig)
{
	(void)sig; /* only interrupts KVM_RUN */
}

static void hint(const char *msg)
{
	fprintf(stderr, "coreio-vm: %s\n", msg);
	fprintf(stderr, "coreio-vm: KVM is not usable here; run with --accel qtest to drive the VM "
			"from a script instead\n");
}

/*
 * Register the coalesce=on ranges with KVM and find its ring. Without
 * coalesced MMIO in KVM the writes exit one by one, as without the option
 * (a warning says so). Returns 0 or -1 after printing why.
 */
static int coalesce_setup(struct kvm_accel *a, const struct vm_config *cfg)
{
	long page = sysconf(_SC_PAGESIZE);
	bool any = false;

	for (unsigned i = 0; i < cfg->nranges; i++) {
		const struct range_config *r = &cfg->ranges[i];
		int rc;

		if (!r->coalesce)
			continue;
		rc = kvm_coalesced_zone(&a->kvm, r->start, r->size);
		if (rc == -ENOTSUP) {
			fprintf(stderr,
				"coreio-vm: warning: --vmmio range %u: coalesce=on, but this KVM "
				"has no coalesced MMIO; its writes exit one by one\n",
				i);
			continue;
		}
		if (rc < 0) {
			fprintf(stderr,
				"coreio-vm: --vmmio range %u: KVM_REGISTER_COALESCED_MMIO "
				"0x%llx+0x%llx failed: %s\n",
				i, (unsigned long long)r->start, (unsigned long long)r->size,
				strerror(-rc));
			return -1;
		}
		any = true;
	}
	if (!any)
		return 0;
	if (page <= 0 || (size_t)(a->kvm.coalesced_page + 1) * (size_t)page > a->kvm.run_size) {
		fprintf(stderr,
			"coreio-vm: KVM's coalesced-MMIO ring (page %u) lies outside "
			"the vCPU mapping\n",
			a->kvm.coalesced_page);
		return -1;
	}
	a->ring = (struct kvm_coalesced_mmio_ring *)((uint8_t *)a->vcpus[0].k.run +
						     (size_t)a->kvm.coalesced_page * (size_t)page);
	a->ring_max =
	    (uint32_t)(((size_t)page - sizeof(*a->ring)) / sizeof(a->ring->coalesced_mmio[0]));
	return 0;
}

int kvm_accel_init(struct kvm_accel *a, const struct vm_config *cfg, struct mem *mem,
		   struct ioreq_ctx *io, struct irq_chip *irq)
{
	char err[512];
	int rc;

	memset(a, 0, sizeof(*a));
	a->kvm.sys_fd = a->kvm.vm_fd = -1;
	a->coalesce_timer = -1;
	pthread_cond_init(&a->ccond, NULL);
	a->mem = mem;
	a->io = io;
	a->irq = irq;
	a->trace = cfg->trace;
	atomic_init(&a->stopping, false);
	atomic_init(&a->status, -1);
	for (unsigned i = 0; i < COREIO_BOOT_MAX_CPUS; i++) {
		a->vcpus[i].k.fd = -1;
		a->vcpus[i].a = a;
		a->vcpus[i].id = i;
	}
	if (kvm_vm_open(&a->kvm, err, sizeof(err)) < 0) {
		hint(err);
		return -1;
	}
	if (kvm_vm_setup(&a->kvm, mem, err, sizeof(err)) < 0) {
		hint(err);
		return -1;
	}
	rc = loader_load_file(cfg->kernel, mem->base, mem->size, &a->entry, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "coreio-vm: --kernel %s\n", err);
		return -1;
	}
	for (unsigned i = 0; i < cfg->smp; i++) {
		struct vcpu *v = &a->vcpus[i];

		if (kvm_vcpu_create(&a->kvm, i, &v->k, err, sizeof(err)) < 0) {
			fprintf(stderr, "coreio-vm: %s\n", err);
			return -1;
		}
		pthread_cond_init(&v->cond, NULL);
		a->ncpus++;
	}
	a->tsc_khz = kvm_vcpu_tsc_khz(&a->vcpus[0].k);
	if (coalesce_setup(a, cfg) < 0)
		return -1;
	if (boot_build(mem->base, mem->size, cfg, a->ncpus, a->tsc_khz) < 0) {
		fprintf(stderr, "coreio-vm: cannot build the boot state (RAM too small?)\n");
		return -1;
	}
	for (unsigned i = 0; i < a->ncpus; i++) {
		struct vcpu *v = &a->vcpus[i];
		struct kvm_sregs s;
		struct kvm_regs r;
		struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_RUNNABLE};

		if (ioctl(v->k.fd, KVM_GET_SREGS, &s) < 0) {
			fprintf(stderr, "coreio-vm: KVM_GET_SREGS on vCPU %u: %s\n", i,
				strerror(errno));
			return -1;
		}
		boot_vcpu_state(i, a->entry, &s, &r);
		if (ioctl(v->k.fd, KVM_SET_SREGS, &s) < 0 || ioctl(v->k.fd, KVM_SET_REGS, &r) < 0 ||
		    ioctl(v->k.fd, KVM_SET_MP_STATE, &mp) < 0) {
			fprintf(stderr, "coreio-vm: cannot set the entry state of vCPU %u: %s\n", i,
				strerror(errno));
			return -1;
		}
	}
	irq_set_backend(irq, irq_backend, a);
	return 0;
}

int kvm_accel_start(struct kvm_accel *a)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler; /* no SA_RESTART: KVM_RUN returns EINTR */
	sigemptyset(&sa.sa_mask);
	if (sigaction(KICK_SIGNAL, &sa, NULL) < 0) {
		fprintf(stderr, "coreio-vm: sigaction: %s\n", strerror(errno));
		return -1;
	}
	if (a->ring) {
		struct itimerspec its = {.it_interval = {0, COALESCE_FLUSH_US * 1000},
					 .it_value = {0, COALESCE_FLUSH_US * 1000}};
		int rc = 0;

		a->coalesce_timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
		if (a->coalesce_timer < 0 || timerfd_settime(a->coalesce_timer, 0, &its, NULL) < 0)
			rc = -errno;
		else
			rc = event_add(a->coalesce_timer, EPOLLIN, coalesce_timer_cb, a);
		if (rc < 0) {
			fprintf(stderr, "coreio-vm: cannot start the coalesced-MMIO timer: %s\n",
				strerror(-rc));
			return -1;
		}
	}
	for (unsigned i = 0; i < a->ncpus; i++) {
		struct vcpu *v = &a->vcpus[i];
		int rc = pthread_create(&v->thread, NULL, vcpu_thread, v);

		if (rc != 0) {
			fprintf(stderr, "coreio-vm: cannot start vCPU %u: %s\n", i, strerror(rc));
			return -1;
		}
		v->started = true;
	}
	return 0;
}

void kvm_accel_request_exit(struct kvm_accel *a, int status)
{
	int expected = -1;

	atomic_compare_exchange_strong(&a->status, &expected, status);
	atomic_store(&a->stopping, true);
	event_stop();
}

void kvm_accel_set_batch(struct kvm_accel *a, void (*fn)(void *opaque, bool begin), void *opaque)
{
	a->batch = fn;
	a->batch_opaque = opaque;
}

void kvm_accel_stop(struct kvm_accel *a)
{
	atomic_store(&a->stopping, true);
	/* Writes the guest made before the end still reach their clients. */
	coalesced_drain(a);
	for (unsigned i = 0; i < a->ncpus; i++) {
		struct vcpu *v = &a->vcpus[i];

		if (!v->started)
			continue;
		/* Before KVM_RUN: immediate_exit makes it return at once; inside: the signal. */
		__atomic_store_n(&v->k.run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		pthread_kill(v->thread, KICK_SIGNAL);
	}
}

void kvm_accel_exit(struct kvm_accel *a)
{
	for (unsigned i = 0; i < a->ncpus; i++) {
		struct vcpu *v = &a->vcpus[i];

		if (v->started)
			pthread_join(v->thread, NULL);
		v->started = false;
	}
	if (a->coalesce_timer >= 0) {
		event_del(a->coalesce_timer);
		close(a->coalesce_timer);
		a->coalesce_timer = -1;
	}
	a->ring = NULL;
	if (a->irq)
		irq_set_backend(a->irq, NULL, NULL);
	for (unsigned i = 0; i < COREIO_BOOT_MAX_CPUS; i++) {
		struct vcpu *v = &a->vcpus[i];

		if (v->k.fd >= 0) {
			kvm_vcpu_destroy(&a->kvm, &v->k);
			pthread_cond_destroy(&v->cond);
		}
	}
	a->ncpus = 0;
	pthread_cond_destroy(&a->ccond);
	kvm_vm_close(&a->kvm);
}

int kvm_accel_status(struct kvm_accel *a)
{
	return atomic_load(&a->status);
}
