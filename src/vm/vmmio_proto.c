/* coreio-vm: the protocol handlers of the CoreIO service: hello, claims, IRQs, DMA, dispatch. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"
#include "vmmio_internal.h"

void proto_trace(const struct vmmio_conn *c, const char *dir, const uint8_t *frame)
{
	char line[256];

	if (!c->v->trace)
		return;
	coreio__wire_format(line, sizeof(line), frame);
	fprintf(stderr, "coreio-vm: trace: client %u %s %s\n", c->id, dir, line);
	fflush(stderr);
}

void proto_malformed(struct vmmio_conn *c, const char *fmt, ...)
{
	char reason[320], why[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	c->v->io->stats.malformed++;
	snprintf(why, sizeof(why), "malformed frame: %s; closing", reason);
	conn_close(c, why);
}

/* PING: a hello is answered with the common capabilities, any other client PING echoed. */
static void handle_ping(struct vmmio_conn *c, const struct coreio_wire_msg *m)
{
	struct coreio_wire_hello hl;
	uint8_t out[COREIO_WIRE_UNIT];

	if (!m->h.origin)
		return; /* an echo of something we sent: never bounce it back */
	coreio__wire_echo(out, m->frame);
	if (coreio__wire_hello_decode(m, &hl) == 0 && hl.kind == COREIO_HELLO_OFFER) {
		c->caps = (uint32_t)(hl.caps & COREIO_CAP_ALL);
		/* SHM: opted in, UNIX, and never around an IOMMU (config_parse() agrees). */
		if (!c->port->shm || !c->port->is_unix || c->port->cfg->iommu)
			c->caps &= ~COREIO_CAP_SHM;
		/* --record: every DMA must cross the socket to be recorded. */
		if (vm_record)
			c->caps &= ~COREIO_CAP_SHM;
		coreio__wire_hello_answer(out, c->caps);
		conn_log(c, "hello: capabilities 0x%x", c->caps);
		/* The memory map goes first, so it is complete when the client
		 * reads the answer. */
		if ((c->caps & COREIO_CAP_SHM) && shm_queue_map(c, true) < 0)
			return;
	}
	conn_queue(c, out, sizeof(out));
}

static void handle_claim(struct vmmio_conn *c, const struct coreio_wire_msg *m)
{
	struct vmmio *v = c->v;
	unsigned rid = m->h.iface;
	int err = 0;
	struct vmmio_range *rg = NULL;

	if (rid >= c->port->nranges) {
		err = -ENOENT;
		conn_log(c, "claim of rid %u refused: port %s has %u range(s)", rid,
			 c->port->display, c->port->nranges);
	} else {
		rg = c->port->ranges[rid];
		if (rg->owner && rg->owner != c) {
			err = -EBUSY;
			conn_log(c, "claim of rid %u (range %u) refused: held by client %u", rid,
				 rg->g, rg->owner->id);
		}
	}
	if (!err && rg->owner != c) {
		rg->owner = c;
		conn_log(c, "claimed range %u (rid %u)", rg->g, rid);
		if (vm_record)
			record_event(vm_record, c->id, REC_EV_CLAIM,
				     "claim rid=%u range=%u start=0x%llx size=0x%llx", rid, rg->g,
				     (unsigned long long)rg->start, (unsigned long long)rg->size);
	}
	if (c->caps & COREIO_CAP_CLAIM_ACK) {
		uint8_t out[COREIO_WIRE_UNIT];

		coreio__wire_claim_ack_encode(out, rid, m->h.tag, err);
		if (conn_queue(c, out, sizeof(out)) < 0)
			return;
	}
	if (!err && v->on_claim)
		v->on_claim(rg->g, v->claim_opaque);
}

static void handle_irq(struct vmmio_conn *c, const struct coreio_wire_msg *m)
{
	unsigned rid = m->h.iface;
	uint64_t iid;
	bool level;
	struct vmmio_range *rg;

	if (coreio__wire_irq_decode(m, &iid, &level) < 0)
		return; /* not reached: dispatched by op */
	if (rid >= c->port->nranges) {
		conn_log(c, "IRQ update for rid %u ignored: no such range on %s", rid,
			 c->port->display);
		return;
	}
	rg = c->port->ranges[rid];
	if (iid >= rg->nirq) {
		conn_log(c, "IRQ update for rid %u iid %llu ignored: the range has %u line(s)", rid,
			 (unsigned long long)iid, rg->nirq);
		return;
	}
	if (c->v->trace)
		conn_log(c, "IRQ rid %u iid %llu (line %d) -> %d", rid, (unsigned long long)iid,
			 rg->irqs[iid], level);
	if (rg->inject.n && inject_irq(c, rg, (unsigned)iid, &c->src[rid][iid], level))
		return; /* irq-drop or irq-repeat */
	irq_source_set(c->v->irq, &c->src[rid][iid], level);
}

/*
 * The host memory a DMA piece touches, in order: mid 0 is guest-physical,
 * any other mid goes through that IOMMU, and a port bound to an IOMMU
 * (--vmmio iommu=N[,sid=S]) may use nothing else (docs/iommu.md). Then the
 * port's dma= policy: every guest-physical segment (mid 0: the piece
 * itself; mid > 0: the IOMMU's output) must lie inside one window
 * (docs/security.md); *refused tells that this check failed. Returns the
 * number of segments, or 0 when the DMA fails (faults are recorded). When
 * it fails only because some segment has no host pointer (vm_dma_ptr()),
 * *unreached is set and seg[0 .. *nseg) holds the allowed guest-physical
 * segments (for vmmio_set_dma_async()'s owner).
 */
static int dma_map(struct vmmio_conn *c, const struct coreio_wire_msg *m, bool write, uint8_t **hp,
		   uint32_t *hl, bool *refused, struct iommu_seg *seg, int *nseg, bool *unreached)
{
	const struct range_config *pc = c->port->cfg;
	int n;

	*refused = false;
	*unreached = false;
	*nseg = 0;
	if (pc->dma == DMA_NONE) {
		*refused = true;
		return 0;
	}
	n = iommu_dma_map(c->v->iommu, pc->iommu, pc->iommu_sid, m->h.iface, m->h.sid, m->h.addr,
			  m->len, write, seg, IOMMU_MAX_SEGS);
	for (int i = 0; i < n; i++) {
		if (!config_dma_allowed(pc, seg[i].gpa, seg[i].len)) {
			*refused = true;
			return 0;
		}
	}
	for (int i = 0; i < n; i++) {
		hp[i] = vm_dma_ptr(c->v, seg[i].gpa, seg[i].len, write);
		hl[i] = seg[i].len;
		if (!hp[i]) {
			*unreached = true;
			*nseg = n;
			return 0;
		}
	}
	return n < 0 ? 0 : n;
}

/* Count a DMA piece refused by the port's dma= and log the first one of c (VM lock held). */
static void dma_refused(struct vmmio_conn *c, const struct coreio_wire_msg *m)
{
	c->v->lim.dma_refused++;
	c->dma_refused++;
	if (vm_record)
		record_event(vm_record, c->id, REC_EV_DMA_REFUSED,
			     "dma-refused conn=%u addr=0x%llx len=%u reason=%s mid=%u sid=%u op=%s",
			     c->id, (unsigned long long)m->h.addr, m->len,
			     c->port->cfg->dma == DMA_NONE ? "none" : "window", m->h.iface,
			     m->h.sid, coreio__wire_op_name(m->h.op));
	if (c->dma_logged && !c->v->verbose && !c->v->trace)
		return;
	c->dma_logged = true;
	conn_log(c,
		 "DMA %s mid %u sid %u addr 0x%llx len %u refused: outside the dma= policy of "
		 "%s (further refusals of this client are counted, not logged)",
		 coreio__wire_op_name(m->h.op), m->h.iface, m->h.sid, (unsigned long long)m->h.addr,
		 m->len, c->port->display);
}

/*
 * Queue the answer to the DMA request whose header is req (VM lock held):
 * the error bit when !ok; a read's len bytes gathered from the nsrc host
 * pieces src[i] of srclen[i] bytes.
 */
static void dma_answer(struct vmmio_conn *c, const struct coreio_wire_hdr *req, uint32_t len,
		       bool ok, uint8_t *const *src, const uint32_t *srclen, int nsrc)
{
	bool large = req->op == COREIO_OP_LREAD || req->op == COREIO_OP_LWRITE;
	bool rd = req->op == COREIO_OP_READ || req->op == COREIO_OP_LREAD;
	struct coreio_wire_hdr h = *req;
	uint8_t *out, *data;
	uint32_t done = 0;
	size_t flen;
	int err;

	h.origin = true;
	h.error = !ok;
	h.extra = (ok && rd && large) ? coreio__wire_extra_for(len) : 0;
	flen = ((size_t)h.extra + 1) * COREIO_WIRE_UNIT;
	/* The decoder bounds a read's length (COREIO_WIRE_LARGE_PIECE, 32 for
	 * READ), so its data fits in the answer; checked again all the same. */
	if (rd && ok && len > flen - COREIO_WIRE_DATA_OFF) {
		proto_malformed(c, "%s of %u bytes does not fit an answer",
				coreio__wire_op_name(req->op), len);
		return;
	}
	/* The answer is built where it is queued (no staging copy): tx_lock is
	 * held from conn_reserve() to conn_commit(), nothing but the frame's
	 * bytes in between. */
	out = conn_reserve(c, flen, &err);
	if (!out)
		return;
	data = out + COREIO_WIRE_DATA_OFF;
	coreio__wire_encode(out, &h);
	/* The encoder cleared the first unit; past it, only the padding after
	 * the data needs clearing (flen > one unit only for a large read). */
	if (flen > COREIO_WIRE_UNIT)
		memset(data + len, 0, flen - COREIO_WIRE_DATA_OFF - len);
	for (int s = 0; rd && ok && s < nsrc; done += srclen[s], s++)
		memcpy(data + done, src[s], srclen[s]);
	conn_commit(c, flen);
}

/* A DMA piece parked on its connection while the owner of its memory moves it. */
struct dma_parked {
	struct vmmio_dma_async op; /* first: done() gets it */
	struct vmmio_conn *c;	   /* a reference */
	struct coreio_wire_hdr h;  /* the request's header */
	uint8_t data[];		   /* op.len bytes */
};

/*
 * The owner moved a parked piece (I/O thread, VM lock not held): answer it,
 * unpark its connection and run the frames that waited behind it.
 */
static void dma_async_done(struct vmmio_dma_async *op, int err)
{
	struct dma_parked *p = (struct dma_parked *)op;
	struct vmmio_conn *c = p->c;
	struct vmmio *v = c->v;
	uint8_t *src = p->data;
	uint32_t srclen = op->len;

	pthread_mutex_lock(&v->io->lock);
	if (!conn_dead(c)) {
		if (err)
			v->io->stats.dma_faults++; /* the owner logged why */
		else
			v->io->stats.dma_ok++;
		dma_answer(c, &p->h, op->len, err == 0, &src, &srclen, 1);
	}
	atomic_store(&c->dma_parked, false);
	pthread_mutex_unlock(&v->io->lock);
	/* Order: the answer leaves before the frames that waited behind it run. */
	conn_flush(c);
	conn_rx_kick(c);
	conn_put(c);
	free(p);
}

/*
 * Hand piece m, whose allowed guest-physical segments seg[0 .. n) are not
 * all reachable by pointer, to the owner of that memory and park c (VM
 * lock held). A masked write becomes one segment per run of enabled bytes.
 * Returns true when parked (the answer comes from dma_async_done()).
 */
static bool dma_park(struct vmmio_conn *c, const struct coreio_wire_msg *m, bool rd,
		     const struct iommu_seg *seg, int n)
{
	struct vmmio *v = c->v;
	bool large = m->h.op == COREIO_OP_LREAD || m->h.op == COREIO_OP_LWRITE;
	bool whole = rd || large || m->h.mask == 0;
	struct dma_parked *p;
	uint32_t off = 0;

	if (!v->dma_async || !vmmio_on_io_thread(v) || n <= 0)
		return false;
	p = calloc(1, sizeof(*p) + (m->len ? m->len : 1));
	if (!p)
		return false;
	for (int s = 0; s < n; off += seg[s].len, s++) {
		for (uint32_t i = 0; i < seg[s].len;) {
			uint32_t j = i;

			if (!whole && !(m->h.mask & (1u << (off + i)))) {
				i++;
				continue;
			}
			/* A run of enabled bytes (the whole segment when unmasked). */
			while (j < seg[s].len && (whole || (m->h.mask & (1u << (off + j)))))
				j++;
			if (p->op.nseg == VMMIO_DMA_ASYNC_SEGS) {
				free(p);
				return false;
			}
			p->op.seg[p->op.nseg++] =
			    (struct vmmio_dma_seg){seg[s].gpa + i, j - i, off + i};
			i = j;
		}
	}
	p->op.write = !rd;
	p->op.len = m->len;
	p->op.data = p->data;
	p->op.g = c->port->nranges ? c->port->ranges[0]->g : 0;
	p->op.done = dma_async_done;
	p->c = c;
	p->h = m->h;
	if (!rd)
		memcpy(p->data, m->data, m->len);
	conn_get(c);
	atomic_store(&c->dma_parked, true);
	if (v->dma_async(v->dma_async_opaque, &p->op) < 0) {
		atomic_store(&c->dma_parked, false);
		conn_put(c);
		free(p);
		return false;
	}
	return true;
}

/* A DMA request (origin 1): READ/WRITEA of up to 32 bytes, LREAD/LWRITE larger. */
static void handle_dma(struct vmmio_conn *c, const struct coreio_wire_msg *m)
{
	struct vmmio *v = c->v;
	bool large = m->h.op == COREIO_OP_LREAD || m->h.op == COREIO_OP_LWRITE;
	bool rd = m->h.op == COREIO_OP_READ || m->h.op == COREIO_OP_LREAD;
	struct iommu_seg seg[IOMMU_MAX_SEGS];
	uint8_t *p = NULL, *hp[IOMMU_MAX_SEGS];
	uint32_t hl[IOMMU_MAX_SEGS], done = 0;
	int nseg, nall = 0;
	bool refused, injected, unreached = false;

	if (large && !(c->caps & COREIO_CAP_LARGE_DMA)) {
		proto_malformed(c, "%s without negotiated LARGE_DMA",
				coreio__wire_op_name(m->h.op));
		return;
	}
	/* Fault injection (dma-fail, iommu-fault) first: the piece fails
	 * before it is translated, as the rule's log line says. */
	injected = inject_dma(c, m, rd);
	nseg = injected ? 0 : dma_map(c, m, !rd, hp, hl, &refused, seg, &nall, &unreached);
	if (injected)
		refused = false;
	/* Memory no pointer reaches (vfio-user without an fd): its owner moves
	 * it while c's later frames wait (vmmio_set_dma_async()). */
	if (unreached && dma_park(c, m, rd, seg, nall))
		return;
	if (nseg > 0)
		p = hp[0];
	if (!p && refused) {
		v->io->stats.dma_faults++;
		dma_refused(c, m);
	} else if (!p && injected) {
		v->io->stats.dma_faults++; /* logged and counted as injected */
	} else if (!p) {
		v->io->stats.dma_faults++;
		conn_log(c, "DMA %s mid %u sid %u addr 0x%llx len %u faulted",
			 coreio__wire_op_name(m->h.op), m->h.iface, m->h.sid,
			 (unsigned long long)m->h.addr, m->len);
	} else {
		v->io->stats.dma_ok++;
		/* Segment by segment: an IOMMU maps the pages of a piece anywhere. */
		for (int s = 0; s < nseg && !rd; done += hl[s], s++) {
			p = hp[s];
			if (large || m->h.mask == 0) {
				memcpy(p, m->data + done, hl[s]);
			} else {
				for (unsigned i = 0; i < hl[s]; i++)
					if (m->h.mask & (1u << (done + i)))
						p[i] = m->data[done + i];
			}
		}
	}
	dma_answer(c, &m->h, m->len, p != NULL, hp, hl, nseg);
}

/* Validate one frame and hand it to its handler (VM lock held). */
static void conn_frame(struct vmmio_conn *c, const uint8_t *frame, size_t len)
{
	struct coreio_wire_msg m;

	if (vm_record) {
		/* Before validation: a malformed frame is recorded too. */
		record_frame(vm_record, c->id, RECORD_FROM_CLIENT, 0, frame, len);
		record_conn_hint = c->id;
	}
	if (coreio__wire_decode(frame, len, COREIO_WIRE_AT_VM, &m) < 0) {
		char line[256];

		coreio__wire_format(line, sizeof(line), frame);
		proto_malformed(c, "%s fails validation", line);
		return;
	}
	proto_trace(c, "->", frame);
	switch (m.h.op) {
	case COREIO_OP_PING:
		handle_ping(c, &m);
		break;
	case COREIO_OP_RGN_CLAIM:
		handle_claim(c, &m);
		break;
	case COREIO_OP_IRQ_UPDATE:
		handle_irq(c, &m);
		break;
	case COREIO_OP_READ:
	case COREIO_OP_WRITEA:
		if (m.h.origin)
			handle_dma(c, &m);
		else
			req_answer(c, &m);
		break;
	case COREIO_OP_LREAD:
	case COREIO_OP_LWRITE:
		handle_dma(c, &m);
		break;
	default: /* READP, WRITE, WRITEP, WRITEAP: origin 0 answers (decode checked) */
		req_answer(c, &m);
		break;
	}
}

bool proto_run_frames(struct vmmio_conn *c)
{
	pthread_mutex_t *lock = &c->v->io->lock;
	size_t start = conn_queued(c);
	bool full = false;

	pthread_mutex_lock(lock);
	/* A parked DMA piece holds c's later frames (dma_park()). */
	while (!conn_dead(c) && !atomic_load(&c->dma_parked)) {
		const uint8_t *frame;
		size_t len, q = conn_queued(c);

		if (q < start)
			start = q; /* another thread sent some meanwhile */
		if (q > VMMIO_OUT_PAUSE || q - start >= VMMIO_CORK_MAX) {
			full = true;
			break;
		}
		if (!coreio__wire_rx_next(&c->rx, &frame, &len))
			break;
		c->greeted = true;
		if (atomic_load_explicit(&c->partial_since, memory_order_relaxed))
			atomic_store(&c->partial_since, 0); /* a frame completed */
		conn_frame(c, frame, len);
		if (vm_record)
			record_conn_hint = 0;
	}
	pthread_mutex_unlock(lock);
	return full;
}
