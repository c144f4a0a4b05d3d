/* coreio-vm: the CoreIO service API: set-up, tear-down, reset, batches, hooks (vmmio.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "event.h"
#include "record.h"
#include "vmmio_internal.h"

/* True when another connection of c's client (same peer_key) sent a frame (VM lock held). */
static bool pair_greeted(const struct vmmio_conn *c)
{
	for (const struct vmmio_conn *o = c->v->conns; o; o = o->next)
		if (o != c && o->greeted && o->port == c->port &&
		    strcmp(o->peer_key, c->peer_key) == 0)
			return true;
	return false;
}

/*
 * The --peer-timeout deadlines of c at time now (VM lock held): no frame at
 * all since it connected (no hello), or part of a frame and nothing more.
 * A silent connection whose sibling from the same client (same pid on a
 * UNIX port, same address on TCP) sent a frame is kept: a base client
 * (no hello) opens its DMA connection and may not use it for a long time.
 * Returns true when c was closed.
 */
static bool peer_deadlines(struct vmmio_conn *c, long long now)
{
	struct vmmio *v = c->v;
	long long partial = atomic_load(&c->partial_since);
	char why[160];

	if (!v->peer_timeout_ms)
		return false;
	if (c->tls && !atomic_load(&c->tls_ready)) {
		/* No sibling exemption: a TLS client completes its handshakes
		 * when it connects. */
		if (now - c->since_ms <= (long long)v->peer_timeout_ms)
			return false;
		snprintf(why, sizeof(why),
			 "TLS refused: the handshake did not complete within %u ms "
			 "(--peer-timeout)",
			 v->peer_timeout_ms);
		tls_refuse(c, why);
		return true;
	}
	if (!c->greeted && now - c->since_ms > (long long)v->peer_timeout_ms && !pair_greeted(c)) {
		v->lim.hello_timeouts++;
		snprintf(
		    why, sizeof(why),
		    "sent no frame (no hello, no claim) within %u ms (--peer-timeout); closing",
		    v->peer_timeout_ms);
		conn_close(c, why);
		return true;
	}
	if (partial && now - partial > (long long)v->peer_timeout_ms) {
		v->lim.partial_timeouts++;
		snprintf(why, sizeof(why),
			 "sent part of a frame and nothing more for %u ms (--peer-timeout); "
			 "closing",
			 v->peer_timeout_ms);
		conn_close(c, why);
		return true;
	}
	return false;
}

/*
 * Every VMMIO_TICK_MS: drop clients whose output has not moved for
 * VMMIO_SEND_TIMEOUT_MS, and check the answer and peer deadlines.
 */
static void vmmio_tick(int fd, uint32_t events, void *opaque)
{
	struct vmmio *v = opaque;
	struct vmmio_conn *c, *next;
	uint64_t ticks;
	long long now = vmmio_now_ns() / 1000000;

	(void)events;
	if (read(fd, &ticks, sizeof(ticks)) < 0) {
		/* Spurious wake-up: nothing expired. */
	}
	pthread_mutex_lock(&v->io->lock);
	for (c = v->conns; c; c = next) {
		next = c->next; /* closing c unlinks c alone */
		if (conn_stuck(c, now)) {
			conn_close(c, "send blocked for more than 10 s (the client does not read); "
				      "closing");
			continue;
		}
		if (req_check_deadlines(c, now))
			continue;
		peer_deadlines(c, now);
	}
	pthread_mutex_unlock(&v->io->lock);
}

int vmmio_init(struct vmmio *v, const struct vm_config *cfg, struct ioreq_ctx *io, struct mem *mem,
	       struct irq_chip *irq)
{
	memset(v, 0, sizeof(*v));
	v->timer_fd = -1;
	v->inject_timer_fd = -1;
	v->io = io;
	v->mem = mem;
	v->irq = irq;
	v->trace = cfg->trace;
	v->verbose = cfg->verbose;
	v->peer_timeout_ms = cfg->peer_timeout_ms;
	v->io_thread = pthread_self();
	if (vm_record) {
		fprintf(stderr, "coreio-vm: --record: shared-memory DMA is not offered: every DMA "
				"crosses the socket and is recorded\n");
		record_event(vm_record, 0, REC_EV_NOTE,
			     "shm off: --record sees every DMA on the wire");
	}
	/* Before any port listens: a bad file ends the start-up. */
	if (tls_load_creds(v, cfg) < 0)
		return -EINVAL;
	for (unsigned i = 0; i < cfg->nranges; i++) {
		const struct range_config *rc = &cfg->ranges[i];
		struct vmmio_range *rg = &v->ranges[i];
		struct vmmio_port *port = NULL;
		int rc_reg;

		for (unsigned p = 0; p < v->nports; p++)
			if (config_same_port(v->ports[p].cfg, rc))
				port = &v->ports[p];
		if (!port) {
			port = &v->ports[v->nports++];
			port->v = v;
			port->cfg = rc;
			port->listen_fd = -1;
		}
		if (port->nranges >= CONFIG_MAX_PER_PORT)
			return -ENOSPC; /* config_parse() already refused this */
		rg->g = i;
		rg->start = rc->start;
		rg->size = rc->size;
		memcpy(rg->irqs, rc->irqs, sizeof(rg->irqs));
		rg->nirq = rc->nirq;
		rg->acked = rc->acked;
		rg->timeout_ms = rc->timeout_ms;
		/* mpqemu: QEMU's vCPU waits, coreio-vm's I/O thread does not spin for it. */
		rg->busy_us = rc->pci ? 0 : rc->busy_us;
		rg->adaptive = rc->poll_adaptive && rg->busy_us;
		rg->spin_ns = rg->adaptive ? rg->busy_us * 1000u : 0;
		rg->port = port;
		port->shm = rc->shm; /* every range of a port agrees (config_parse()) */
		port->tls = rc->tls;
		v->any_shm |= rc->shm;
		rg->rid = port->nranges;
		port->ranges[port->nranges++] = rg;
		v->nranges++;
		if (rc->pci)
			continue; /* mpqemu: the BAR's address comes later (mpqemu.c) */
		rc_reg = register_mmio_emulation_handler(io, rc->start, rc->start + rc->size,
							 vmmio_submit, rg);
		if (rc_reg < 0) {
			fprintf(stderr, "coreio-vm: range %u: cannot register: %s\n", i,
				strerror(-rc_reg));
			return rc_reg;
		}
	}
	for (unsigned p = 0; p < v->nports; p++) {
		struct vmmio_port *port = &v->ports[p];
		int err = port_open(port, cfg->listen);

		if (err < 0)
			return err;
		fprintf(stderr, "listening on %s\n", port->display);
		if (!port->tls && !port_is_loopback(port))
			fprintf(stderr,
				"coreio-vm: warning: port %s listens on the non-loopback "
				"address %s in plain TCP: anyone who can reach it can serve "
				"the guest's MMIO and DMA into guest RAM (use tls=on; see "
				"docs/security.md)\n",
				port->display, cfg->listen);
		fflush(stderr);
	}
	if (v->any_shm && mem && mem_fd(mem) >= 0) {
		/* qtest and kvm: guest RAM is one memfd at guest-physical 0. */
		struct vmmio_shm_region ram = {.gpa = 0, .size = mem->size, .fd = mem_fd(mem)};
		int err = vmmio_shm_set(v, &ram, 1);

		if (err < 0)
			return err;
	}
	/* The delay timer and --fault-socket (docs/fault-injection.md). */
	{
		int err = inject_init(v, cfg);

		if (err < 0)
			return err;
	}
	if (v->nports > 0) {
		struct itimerspec its = {.it_interval = {0, VMMIO_TICK_MS * 1000000L},
					 .it_value = {0, VMMIO_TICK_MS * 1000000L}};
		int err;

		v->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
		if (v->timer_fd < 0 || timerfd_settime(v->timer_fd, 0, &its, NULL) < 0)
			return -errno;
		err = event_add(v->timer_fd, EPOLLIN, vmmio_tick, v);
		if (err < 0)
			return err;
	}
	return 0;
}

/* The exit summary of a range's waits (VM lock held). */
static void print_waits(const struct vmmio_range *rg)
{
	char poll[48];

	if (rg->adaptive)
		snprintf(poll, sizeof(poll), "adaptive:%u, last spin %u us", rg->busy_us,
			 rg->spin_ns / 1000);
	else if (rg->busy_us)
		snprintf(poll, sizeof(poll), "busy:%u", rg->busy_us);
	else
		snprintf(poll, sizeof(poll), "block");
	fprintf(stderr,
		"coreio-vm: range %u at %#llx: %llu vCPU waits for its client, %llu answered "
		"before the vCPU slept (poll=%s)\n",
		rg->g, (unsigned long long)rg->start, (unsigned long long)rg->waits,
		(unsigned long long)rg->spun, poll);
}

/* The exit summary of access control and limits, when anything was counted (VM lock held). */
static void print_limits(const struct vmmio *v)
{
	const struct vmmio_limit_stats *l = &v->lim;

	if (!(l->dma_refused | l->answer_timeouts | l->peers_refused | l->over_cap |
	      l->hello_timeouts | l->partial_timeouts | l->tls_refused))
		return;
	fprintf(stderr,
		"coreio-vm: limits: dma_refused=%llu answer_timeouts=%llu peers_refused=%llu "
		"over_max_conns=%llu hello_timeouts=%llu partial_frame_timeouts=%llu "
		"tls_refused=%llu\n",
		(unsigned long long)l->dma_refused, (unsigned long long)l->answer_timeouts,
		(unsigned long long)l->peers_refused, (unsigned long long)l->over_cap,
		(unsigned long long)l->hello_timeouts, (unsigned long long)l->partial_timeouts,
		(unsigned long long)l->tls_refused);
}

void vmmio_exit(struct vmmio *v)
{
	if (!v->io)
		return; /* never initialised */
	pthread_mutex_lock(&v->io->lock);
	for (unsigned i = 0; i < v->nranges; i++)
		if (v->ranges[i].waits)
			print_waits(&v->ranges[i]);
	print_limits(v);
	/* Accesses a delay= rule holds complete (as unclaimed) first. */
	inject_abandon(v);
	/* A vCPU still waiting wakes (its request completes) and lets go of
	 * its reference; the memory goes from the loop (event_exit() at the
	 * latest). */
	while (v->conns)
		conn_close(v->conns, "closed at exit");
	for (unsigned i = 0; i < v->nshm; i++)
		close(v->shm[i].fd);
	v->nshm = 0;
	pthread_mutex_unlock(&v->io->lock);
	if (v->timer_fd >= 0) {
		event_del(v->timer_fd);
		close(v->timer_fd);
		v->timer_fd = -1;
	}
	inject_exit(v);
	for (unsigned p = 0; p < v->nports; p++)
		port_close(&v->ports[p]);
	tls_creds_put(v); /* freed once the last session is */
}

/* Queue RESET on c (VM lock held). */
static int queue_reset(struct vmmio_conn *c)
{
	struct coreio_wire_hdr h = {.op = COREIO_OP_RESET, .tag = req_new_tag(c)};
	uint8_t out[COREIO_WIRE_UNIT];

	coreio__wire_encode(out, &h);
	return conn_queue(c, out, sizeof(out));
}

void vmmio_reset(struct vmmio *v)
{
	struct vmmio_connset fs = {0};
	struct vmmio_conn *c, *next;

	pthread_mutex_lock(&v->io->lock);
	if (vm_record)
		for (unsigned g = 0; g < v->nranges; g++)
			record_event(vm_record, v->ranges[g].owner ? v->ranges[g].owner->id : 0,
				     REC_EV_RESET, "reset range=%u", g);
	for (c = v->conns; c; c = next) {
		next = c->next; /* a failed queue closes and unlinks c */
		req_abandon(c, NULL);
		if (queue_reset(c) == 0)
			connset_add_flush(&fs, c);
	}
	pthread_mutex_unlock(&v->io->lock);
	connset_flush(&fs);
}

void vmmio_reset_range(struct vmmio *v, unsigned g)
{
	struct vmmio_range *rg = g < v->nranges ? &v->ranges[g] : NULL;
	struct vmmio_connset fs = {0};
	struct vmmio_conn *c;

	pthread_mutex_lock(&v->io->lock);
	c = rg ? rg->owner : NULL;
	if (c && !conn_dead(c)) {
		if (vm_record)
			record_event(vm_record, c->id, REC_EV_RESET, "reset range=%u", g);
		req_abandon(c, rg);
		if (queue_reset(c) == 0)
			connset_add_flush(&fs, c);
	}
	pthread_mutex_unlock(&v->io->lock);
	connset_flush(&fs);
}

/* This thread is inside a batch (vmmio_batch()): its posted writes wait for the batch's end. */
_Thread_local bool vmmio_batching;

void vmmio_batch(void *opaque, bool begin)
{
	struct vmmio *v = opaque;
	struct vmmio_connset fs = {0};

	if (begin) {
		vmmio_batching = true; /* the VM lock is held by the caller */
		return;
	}
	vmmio_batching = false;
	/* Order: the batch leaves before the draining thread goes on. */
	pthread_mutex_lock(&v->io->lock);
	for (struct vmmio_conn *c = v->conns; c; c = c->next)
		if (conn_queued(c) > 0)
			connset_add_flush(&fs, c);
	pthread_mutex_unlock(&v->io->lock);
	connset_flush(&fs);
}

void vmmio_set_dma_ptr(struct vmmio *v, vmmio_dma_ptr_fn fn, void *opaque)
{
	v->dma_ptr = fn;
	v->dma_opaque = opaque;
}

void vmmio_set_dma_async(struct vmmio *v, vmmio_dma_async_fn fn, void *opaque)
{
	v->dma_async = fn;
	v->dma_async_opaque = opaque;
}

void *vm_dma_ptr(const struct vmmio *v, uint64_t gpa, uint64_t len, bool write)
{
	if (v->dma_ptr)
		return v->dma_ptr(v->dma_opaque, gpa, len, write);
	return mem_ptr(v->mem, gpa, len);
}

const struct vmmio_range *vmmio_range(const struct vmmio *v, unsigned g)
{
	return g < v->nranges ? &v->ranges[g] : NULL;
}

void vmmio_set_claim_cb(struct vmmio *v, vmmio_claim_fn fn, void *opaque)
{
	v->on_claim = fn;
	v->claim_opaque = opaque;
}

void vmmio_set_release_cb(struct vmmio *v, vmmio_release_fn fn, void *opaque)
{
	v->on_release = fn;
	v->release_opaque = opaque;
}
