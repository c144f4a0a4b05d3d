/* coreio-vm: the ioreq adapter: an io_request becomes a CoreIO request, its answer completes it. */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "record.h"
#include "vmmio_internal.h"

/* Fill req as if its range had no client: reads 0xAA, writes dropped. */
static void unclaimed(struct io_request *req)
{
	struct mmio_request *m = &req->reqs.mmio;

	req->result = 0;
	if (m->direction == REQUEST_READ) {
		memset(m->data, 0xaa, sizeof(m->data));
		memset(m->data2, 0xaa, sizeof(m->data2));
	}
}

/* --record: an access that did not get a device's answer (conn 0: none). */
static void record_bus_error(unsigned conn, const struct vmmio_range *rg,
			     const struct io_request *req, const char *reason)
{
	const struct mmio_request *m = &req->reqs.mmio;

	record_event(vm_record, conn, REC_EV_BUS_ERROR,
		     "bus-error range=%u addr=0x%llx size=%u dir=%s reason=%s", rg->g,
		     (unsigned long long)m->address, (unsigned)m->size * (m->pair ? 2u : 1u),
		     m->direction == REQUEST_WRITE ? "write" : "read", reason);
}

static bool is_posted(uint8_t op)
{
	return op == COREIO_OP_WRITE || op == COREIO_OP_WRITEP;
}

bool req_is_posted(uint8_t op)
{
	return is_posted(op);
}

uint32_t req_new_tag(struct vmmio_conn *c)
{
	for (;;) {
		uint32_t tag = ++c->next_tag;
		bool used = false;

		for (const struct io_request *p = c->pending; p; p = p->pend.next)
			used |= p->pend.tag == tag;
		if (!used)
			return tag;
	}
}

/* Count a finished wait and adapt the range's spin (VM lock held). */
static void wait_done(struct vmmio_range *rg, unsigned window, long long waited, bool spun)
{
	rg->waits++;
	if (spun)
		rg->spun++;
	if (rg->adaptive)
		rg->spin_ns = vmmio_poll_window(window, (uint64_t)(waited > 0 ? waited : 0),
						rg->busy_us * 1000u);
}

void req_abandon(struct vmmio_conn *c, const struct vmmio_range *only)
{
	struct io_request **pp = &c->pending;

	for (unsigned r = 0; r < CONFIG_MAX_PER_PORT; r++) {
		if (only && r != only->rid)
			continue;
		for (unsigned i = 0; i < CONFIG_MAX_IRQS; i++)
			irq_source_set(c->v->irq, &c->src[r][i], false);
	}
	while (*pp) {
		struct io_request *p = *pp;
		struct vmmio_range *rg = p->pend.range;

		if (only && rg != only) {
			pp = &p->pend.next;
			continue;
		}
		*pp = p->pend.next;
		p->pend.next = NULL;
		if (rg->late.req == p)
			rg->late.req = NULL;
		if (vm_record)
			record_bus_error(c->id, rg, p, "unclaimed");
		unclaimed(p);
		ioreq_complete(p);
	}
}

void req_answer(struct vmmio_conn *c, const struct coreio_wire_msg *m)
{
	struct io_request **pp, *p;
	struct vmmio_range *rg;
	struct mmio_request *mr;

	if (is_posted(m->h.op))
		return; /* a posted write returned to us: nothing waits for it */
	for (pp = &c->pending; *pp; pp = &(*pp)->pend.next)
		if ((*pp)->pend.tag == m->h.tag)
			break;
	p = *pp;
	if (!p) {
		if (c->v->trace)
			conn_log(c, "answer with unknown tag %u ignored", m->h.tag);
		return;
	}
	rg = p->pend.range;
	if (p->pend.op != m->h.op || rg->rid != m->h.iface) {
		proto_malformed(c, "answer tag %u is %s for rid %u, expected %s for rid %u",
				m->h.tag, coreio__wire_op_name(m->h.op), m->h.iface,
				coreio__wire_op_name(p->pend.op), rg->rid);
		return;
	}
	*pp = p->pend.next;
	p->pend.next = NULL;
	mr = &p->reqs.mmio;
	if (m->h.error) {
		p->result = -EIO;
		if (vm_record)
			record_bus_error(c->id, rg, p, "client-error");
	} else if (p->pend.op == COREIO_OP_READ || p->pend.op == COREIO_OP_READP)
		/* The size is ours; the answer's first unit always holds it. */
		coreio__wire_answer_read(m, mr->size, mr->pair, mr->data, mr->data2);
	if (rg->late.req == p) {
		wait_done(rg, rg->late.window, vmmio_now_ns() - rg->late.start, false);
		rg->late.req = NULL;
	}
	ioreq_complete(p);
}

/*
 * Give req an answer deadline on c (VM lock held): rg's timeout= from now.
 * A request struct is reused by its front end: its old slot (it completed
 * since) is taken over. With every slot taken by waiting requests, req has
 * no deadline (VMMIO_TIMED_MAX is far above the requests one connection
 * can have in flight: one per vCPU and front end).
 */
static void timed_add(struct vmmio_conn *c, struct io_request *req, unsigned ms)
{
	long long deadline = vmmio_now_ns() / 1000000 + ms;
	int free_slot = -1;

	for (unsigned i = 0; i < VMMIO_TIMED_MAX; i++) {
		if (c->timed[i].req == req) {
			c->timed[i].deadline = deadline;
			return;
		}
		if (free_slot < 0 && !c->timed[i].req)
			free_slot = (int)i;
	}
	if (free_slot >= 0) {
		c->timed[free_slot].req = req;
		c->timed[free_slot].deadline = deadline;
	}
}

static bool req_waits(const struct vmmio_conn *c, const struct io_request *req);

bool req_check_deadlines(struct vmmio_conn *c, long long now)
{
	for (unsigned i = 0; i < VMMIO_TIMED_MAX; i++) {
		struct io_request *p = c->timed[i].req, **pp;
		struct vmmio_range *rg;
		char why[200];

		if (!p)
			continue;
		if (!req_waits(c, p)) {
			c->timed[i].req = NULL; /* answered or abandoned */
			continue;
		}
		if (now < c->timed[i].deadline)
			continue;
		c->timed[i].req = NULL;
		for (pp = &c->pending; *pp != p; pp = &(*pp)->pend.next)
			;
		*pp = p->pend.next;
		p->pend.next = NULL;
		rg = p->pend.range;
		if (rg->late.req == p)
			rg->late.req = NULL;
		c->v->lim.answer_timeouts++;
		snprintf(why, sizeof(why),
			 "no answer to %s at 0x%llx of range %u (rid %u) within timeout=%u ms: the "
			 "access is a bus error; closing (a late answer must not complete a later "
			 "request)",
			 coreio__wire_op_name(p->pend.op), (unsigned long long)p->reqs.mmio.address,
			 rg->g, rg->rid, rg->timeout_ms);
		/* A bus error: emulate_mmio_post() makes a read all ones. */
		p->result = -EIO;
		if (vm_record)
			record_bus_error(c->id, rg, p, "timeout");
		ioreq_complete(p);
		/* The other requests waiting on c complete as after any disconnect. */
		conn_close(c, why);
		return true;
	}
	return false;
}

/*
 * Whether req still waits for its answer on c (VM lock held). Its state
 * cannot tell: the completion callback may run the post step and leave the
 * request FREE (qtest, mpqemu). Completing a request always takes it off
 * c->pending (req_answer(), req_abandon()).
 */
static bool req_waits(const struct vmmio_conn *c, const struct io_request *req)
{
	for (const struct io_request *p = c->pending; p; p = p->pend.next)
		if (p == req)
			return true;
	return false;
}

/* req_waits() for a thread without the VM lock (takes it). */
static bool req_waits_unlocked(struct vmmio_conn *c, const struct io_request *req)
{
	bool waits;

	pthread_mutex_lock(&c->v->io->lock);
	waits = req_waits(c, req);
	pthread_mutex_unlock(&c->v->io->lock);
	return waits;
}

/*
 * The I/O thread spins for one client's answer (qtest): it receives on
 * every other connection too, so that a client that must be served first
 * (its DMA on a second connection, from inside the callback we wait for)
 * is not held up by the spin. VM lock not held.
 */
static void receive_others(struct vmmio *v, const struct vmmio_conn *mine)
{
	struct vmmio_connset s = {0};

	pthread_mutex_lock(&v->io->lock);
	for (struct vmmio_conn *c = v->conns; c; c = c->next)
		if (c != mine && !connset_add(&s, c))
			break;
	pthread_mutex_unlock(&v->io->lock);
	connset_receive(&s);
}

/*
 * Wait for the answer to req, sent on c (VM lock not held; the caller holds
 * a reference to c). Each turn: take the receive role if nobody has it and
 * drain c, which runs every frame that came, ours or not (other requests'
 * answers, IRQ updates, DMA); stop once req is complete. Until spin_until
 * (ns) turn again after sched_yield() (on the I/O thread, !may_sleep,
 * receiving on every other connection too once VMMIO_OTHERS_NS have
 * passed). Then, with may_sleep and the receive role, sleep in poll() on
 * the socket and drain when it wakes; otherwise stop: without the role
 * someone else receives for us (the holder, or the I/O thread once the
 * holder lets go), with output paused the I/O thread must flush first.
 * The role is held across the sleep, so the answer cannot be taken by
 * another thread between our check and our sleep; conn_rx_release() runs
 * what arrived for others meanwhile.
 * Returns when req is complete or it stops; *slept tells whether it
 * stopped spinning before the answer came.
 */
static void await_answer(struct vmmio_conn *c, struct io_request *req, long long spin_until,
			 bool may_sleep, bool *slept)
{
	long long start = vmmio_now_ns(), now;
	bool reader = false;

	for (;;) {
		if (!reader) {
			reader = conn_rx_acquire(c);
			/* A vCPU receives everything itself now: the I/O thread
			 * need not be woken (the I/O thread never mutes: it is
			 * the one that would be woken). */
			if (reader && may_sleep)
				conn_rx_mute(c);
		}
		if (reader && conn_rx_drain(c, 0) == DRAIN_PAUSED)
			break;
		if (!req_waits_unlocked(c, req))
			break;
		if (conn_dead(c))
			break; /* not reached: closing completed req */
		now = vmmio_now_ns();
		if (spin_until && now < spin_until) {
			/* The I/O thread serves the others too, after a first look. */
			if (!may_sleep && now - start > VMMIO_OTHERS_NS)
				receive_others(c->v, c);
			sched_yield();
			continue;
		}
		*slept = true;
		if (!may_sleep || !reader)
			break;
		/* Order: the drain above ran every complete frame and ended at
		 * EAGAIN, and we keep the role: nothing received waits while we
		 * sleep, and our answer wakes us. */
		{
			struct pollfd pfd = {.fd = c->fd, .events = POLLIN};

			/* conn_close() shuts the socket down, which wakes us. */
			poll(&pfd, 1, VMMIO_POLL_MS);
		}
	}
	if (reader)
		conn_rx_release(c);
}

/*
 * req->wait of a request vmmio_submit() queued (VM lock held on entry and
 * on return; released in between). See vmmio_submit() in vmmio.h:
 *  - a posted write of a thread inside a batch (vmmio_batch(),
 *    vmmio_batching) completes at once; the batch's end sends it;
 *  - otherwise the connection's queue is sent now, our frame with it, in
 *    the order the frames were queued;
 *  - a posted write then completes;
 *  - a read or acked write waits for its answer (await_answer()) for the
 *    range's spin (poll=busy:USEC, or poll=adaptive's window, rg->spin_ns)
 *    and then, on a vCPU thread, sleeps on the socket; the I/O thread never
 *    sleeps here (it serves every other fd), it returns -EAGAIN and the
 *    answer completes req from the event loop later (rg->late adapts the
 *    spin then).
 * Returns 0 when req is complete, -EAGAIN when the caller must wait for its
 * completion callback.
 */
static int vmmio_wait(struct io_request *req)
{
	struct vmmio_conn *c = req->pend.owner;
	struct vmmio_range *rg = req->pend.range;
	struct vmmio *v = c->v;
	bool posted = is_posted(req->pend.op), io = vmmio_on_io_thread(v), slept = false, waits;
	unsigned window = 0;
	long long start;

	if (req->state == REQ_STATE_COMPLETE)
		return 0; /* the connection closed, or a reset */
	if (posted && vmmio_batching) {
		ioreq_complete(req);
		return 0;
	}
	if (!posted)
		window = rg->adaptive ? rg->spin_ns : rg->busy_us * 1000u;
	conn_get(c);
	pthread_mutex_unlock(&v->io->lock);
	/* Order: our frame leaves before we wait or return (or, socket full,
	 * waits queued for EPOLLOUT), behind everything queued before it. */
	conn_flush(c);
	start = vmmio_now_ns();
	/* On the I/O thread without a spin (poll=block, mpqemu, an adaptive
	 * spin down to 0) the loop receives. */
	if (!posted && (!io || window))
		await_answer(c, req, window ? start + window : 0, !io, &slept);
	pthread_mutex_lock(&v->io->lock);
	waits = !posted && req_waits(c, req);
	conn_put(c);
	if (posted) {
		ioreq_complete(req);
		return 0;
	}
	if (waits) {
		/* The answer's arrival adapts the spin, also a spin of 0. */
		if (io && rg->adaptive) {
			rg->late.req = req;
			rg->late.start = start;
			rg->late.window = window;
		} else if (!req->pend.counted) {
			/* Another thread receives the answer (a vCPU then sleeps
			 * on its condition variable): one wait, not spun. */
			rg->waits++;
			req->pend.counted = true;
		}
		return -EAGAIN;
	}
	if (!req->pend.counted)
		wait_done(rg, window, vmmio_now_ns() - start, !slept);
	return 0;
}

int vmmio_submit(struct io_request *req, void *opaque)
{
	struct vmmio_range *rg = opaque;
	int rc;

	/* Fault injection first (one branch when the range has no rule). */
	if (rg->inject.n && (rc = inject_access(rg, req)) != 0)
		return rc;
	return req_submit_now(req, rg);
}

int req_submit_now(struct io_request *req, struct vmmio_range *rg)
{
	struct vmmio_conn *c = rg->owner;
	struct mmio_request *m = &req->reqs.mmio;
	bool wr = m->direction == REQUEST_WRITE;
	struct coreio_wire_hdr h = {0};
	uint8_t frame[COREIO_WIRE_UNIT];

	if (!c) {
		if (vm_record)
			record_bus_error(0, rg, req, "unclaimed");
		unclaimed(req);
		return 0;
	}
	if (m->pair)
		h.op = wr ? (rg->acked ? COREIO_OP_WRITEAP : COREIO_OP_WRITEP) : COREIO_OP_READP;
	else
		h.op = wr ? (rg->acked ? COREIO_OP_WRITEA : COREIO_OP_WRITE) : COREIO_OP_READ;
	h.iface = (uint8_t)rg->rid;
	h.tag = req_new_tag(c);
	h.size = (uint8_t)m->size;
	h.flags = (uint8_t)(m->flags & 0xf);
	h.mask = wr ? (m->mask ? m->mask : ioreq_full_mask(m->size)) : 0;
	h.addr = m->address;
	/* Order: queued under the VM lock, so in the order the VM made the requests. */
	if (coreio__wire_mmio_encode(frame, &h, wr ? m->data : NULL, wr ? m->data2 : NULL) == 0 ||
	    conn_queue(c, frame, sizeof(frame)) < 0) {
		/* A size emulate_io() does not pass, or the connection is gone:
		 * the access completes as unclaimed. */
		if (vm_record)
			record_bus_error(c->id, rg, req, "unclaimed");
		unclaimed(req);
		return 0;
	}
	req->pend.tag = h.tag;
	req->pend.op = h.op;
	req->pend.owner = c;
	req->pend.range = rg;
	req->pend.counted = false;
	req->pend.next = NULL;
	req->wait = vmmio_wait;
	if (!is_posted(h.op)) {
		req->pend.next = c->pending;
		c->pending = req;
		req->state = REQ_STATE_PROCESSING;
		if (rg->timeout_ms)
			timed_add(c, req, rg->timeout_ms);
	}
	return IOREQ_PENDING;
}
