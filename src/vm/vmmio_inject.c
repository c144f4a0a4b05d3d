/* coreio-vm: fault injection in the CoreIO service: rules applied, delays, commands,
 * --fault-socket.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "event.h"
#include "record.h"
#include "vmmio_internal.h"

/* One --fault-socket connection: a line buffer (room for the longest line and its newline). */
struct fault_client {
	struct vmmio_fault_srv *srv;
	int fd; /* -1: a free slot */
	char buf[INJECT_LINE_MAX + 2];
	size_t len;
	bool discarding; /* a line too long: drop bytes up to the next newline */
};

/* The --fault-socket listener and its clients (I/O thread only). */
struct vmmio_fault_srv {
	struct vmmio *v;
	int listen_fd;
	char path[CONFIG_NAME_MAX];
	struct fault_client cl[VMMIO_FAULT_CLIENTS];
	long long refuse_log_ms; /* refused connections: one log line a second */
};

/* ---- reporting ------------------------------------------------------------ */

/*
 * One injected fault of rule r on rg (VM lock held): an --record event and
 * a log line, rate-limited per range (inject_log_ok()). what is
 * "key=value ..." text about the event.
 */
static void report(struct vmmio_range *rg, unsigned conn, const struct inject_rule *r,
		   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void report(struct vmmio_range *rg, unsigned conn, const struct inject_rule *r,
		   const char *fmt, ...)
{
	char what[240], more[64] = "";
	uint64_t quiet = 0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (vm_record)
		record_event(vm_record, conn, REC_EV_INJECT, "inject kind=%s range=%u rule=%u %s",
			     inject_kind_name(r->kind), rg->g, r->id, what);
	if (!inject_log_ok(&rg->inject, vmmio_now_ns() / 1000000, &quiet))
		return;
	if (quiet)
		snprintf(more, sizeof(more), " (%llu more not logged)", (unsigned long long)quiet);
	fprintf(stderr, "coreio-vm: inject: range %u: rule #%u %s: %s%s\n", rg->g, r->id,
		inject_kind_name(r->kind), what, more);
	fflush(stderr);
}

/* ---- guest accesses --------------------------------------------------------- */

/* The offset of an access in rg (a PCI range's BAR may sit anywhere: modulo its size). */
static uint64_t access_offset(const struct vmmio_range *rg, uint64_t addr)
{
	uint64_t off = addr - rg->start;

	if (addr < rg->start || off >= rg->size)
		off = rg->size ? addr % rg->size : addr;
	return off;
}

/* req->wait of a held-back access: nothing to do but wait for the timer (VM lock held). */
static int delay_wait(struct io_request *req)
{
	return req->state == REQ_STATE_COMPLETE ? 0 : -EAGAIN;
}

/* Arm the delay timer for the earliest held-back access, or disarm it (VM lock held). */
static void delay_arm(struct vmmio *v)
{
	struct itimerspec its = {0};
	long long first = 0;

	for (unsigned i = 0; i < VMMIO_DELAY_MAX; i++)
		if (v->delayed[i].req && (!first || v->delayed[i].due_ns < first))
			first = v->delayed[i].due_ns;
	if (first) {
		/* Absolute CLOCK_MONOTONIC time; never 0 (that disarms). */
		its.it_value.tv_sec = (time_t)(first / 1000000000);
		its.it_value.tv_nsec = (long)(first % 1000000000);
		if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
			its.it_value.tv_nsec = 1;
	}
	if (v->inject_timer_fd >= 0)
		timerfd_settime(v->inject_timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

int inject_access(struct vmmio_range *rg, struct io_request *req)
{
	struct vmmio *v = rg->port->v;
	const struct mmio_request *m = &req->reqs.mmio;
	struct inject_event ev = {.kind = INJECT_BUS_ERROR,
				  .write = m->direction == REQUEST_WRITE,
				  .where = access_offset(rg, m->address)};
	unsigned conn = rg->owner ? rg->owner->id : 0;
	unsigned size = m->size * (m->pair ? 2u : 1u);
	const char *dir = ev.write ? "write" : "read";
	struct inject_rule *r;
	int slot = -1;

	r = inject_match(&rg->inject, &ev);
	if (r) {
		report(rg, conn, r, "addr=0x%llx size=%u dir=%s", (unsigned long long)m->address,
		       size, dir);
		return -EIO; /* run_handler(): result -EIO, reads all ones */
	}
	for (unsigned i = 0; i < VMMIO_DELAY_MAX && slot < 0; i++)
		if (!v->delayed[i].req)
			slot = (int)i;
	ev.kind = INJECT_DELAY;
	/* Not held: with no room, and inside a batch (coalesce=on's drain of
	 * posted writes, which may run on the I/O thread and waits for each
	 * write: the timer would never fire). Sent at once, not counted. */
	if (slot < 0 || v->inject_timer_fd < 0 || vmmio_batching)
		return 0;
	r = inject_match(&rg->inject, &ev);
	if (!r)
		return 0;
	v->delayed[slot].req = req;
	v->delayed[slot].rg = rg;
	v->delayed[slot].due_ns = vmmio_now_ns() + (long long)r->delay_ms * 1000000;
	req->state = REQ_STATE_PROCESSING;
	req->wait = delay_wait;
	delay_arm(v);
	report(rg, conn, r, "addr=0x%llx size=%u dir=%s delay_ms=%u",
	       (unsigned long long)m->address, size, dir, r->delay_ms);
	return IOREQ_PENDING;
}

/* The delay timer (I/O thread): submit every access that is due. */
static void delay_fire(int fd, uint32_t events, void *opaque)
{
	struct vmmio *v = opaque;
	struct vmmio_connset fs = {0};
	uint64_t n;
	long long now;

	(void)events;
	if (read(fd, &n, sizeof(n)) < 0) {
		/* Spurious: the loop below finds nothing due. */
	}
	pthread_mutex_lock(&v->io->lock);
	now = vmmio_now_ns();
	for (unsigned i = 0; i < VMMIO_DELAY_MAX; i++) {
		struct io_request *req = v->delayed[i].req;
		int rc;

		if (!req || v->delayed[i].due_ns > now)
			continue;
		v->delayed[i].req = NULL;
		/* Order: after the delay, the access goes as any other would now. */
		req->wait = NULL;
		rc = req_submit_now(req, v->delayed[i].rg);
		if (rc != IOREQ_PENDING) {
			ioreq_complete(req); /* no client: unclaimed() filled it */
			continue;
		}
		connset_add_flush(&fs, req->pend.owner);
		/* A posted write is done once queued; the answer completes any other. */
		if (req_is_posted(req->pend.op))
			ioreq_complete(req);
	}
	delay_arm(v);
	pthread_mutex_unlock(&v->io->lock);
	connset_flush(&fs);
}

void inject_abandon(struct vmmio *v)
{
	for (unsigned i = 0; i < VMMIO_DELAY_MAX; i++) {
		struct io_request *req = v->delayed[i].req;

		if (!req)
			continue;
		v->delayed[i].req = NULL;
		req->result = 0;
		if (req->reqs.mmio.direction == REQUEST_READ) {
			memset(req->reqs.mmio.data, 0xaa, sizeof(req->reqs.mmio.data));
			memset(req->reqs.mmio.data2, 0xaa, sizeof(req->reqs.mmio.data2));
		}
		ioreq_complete(req);
	}
}

/* ---- IRQs and DMA --------------------------------------------------------------- */

bool inject_irq(struct vmmio_conn *c, struct vmmio_range *rg, unsigned iid, struct irq_source *src,
		bool level)
{
	struct inject_event ev = {.kind = INJECT_IRQ_DROP, .line = (int)iid};
	struct inject_rule *r;

	/* Only a raise (an edge of this source) is an event. */
	if (!level || src->level)
		return false;
	r = inject_match(&rg->inject, &ev);
	if (r) {
		/* The source stays low: the guest never sees it; the client's
		 * lower changes nothing, its next raise raises the line. */
		report(rg, c->id, r, "line=%u guest_line=%d raise dropped", iid, rg->irqs[iid]);
		return true;
	}
	ev.kind = INJECT_IRQ_REPEAT;
	r = inject_match(&rg->inject, &ev);
	if (!r)
		return false;
	irq_source_set(c->v->irq, src, true);
	irq_source_set(c->v->irq, src, false);
	irq_source_set(c->v->irq, src, true);
	report(rg, c->id, r, "line=%u guest_line=%d raise repeated", iid, rg->irqs[iid]);
	return true;
}

bool inject_dma(struct vmmio_conn *c, const struct coreio_wire_msg *m, bool rd)
{
	struct vmmio *v = c->v;
	unsigned mid = m->h.iface, sid = m->h.sid;
	struct iommu *u = mid && mid <= IOMMU_MAX_ID && v->iommu ? v->iommu->unit[mid] : NULL;
	struct inject_event ev = {.write = !rd, .where = m->h.addr};

	for (unsigned i = 0; i < c->port->nranges; i++) {
		struct vmmio_range *rg = c->port->ranges[i];
		struct inject_rule *r;

		if (!rg->inject.n)
			continue;
		if (u) {
			/* Only where an IOMMU can record it: mid > 0 with an --iommu. */
			ev.kind = INJECT_IOMMU_FAULT;
			r = inject_match(&rg->inject, &ev);
			if (r) {
				iommu_record_fault(u, sid, m->h.addr, !rd, IOMMU_F_INJECTED);
				report(rg, c->id, r, "mid=%u sid=%u addr=0x%llx len=%u dir=%s", mid,
				       sid, (unsigned long long)m->h.addr, m->len,
				       rd ? "read" : "write");
				return true;
			}
		}
		ev.kind = INJECT_DMA_FAIL;
		r = inject_match(&rg->inject, &ev);
		if (r) {
			report(rg, c->id, r, "mid=%u sid=%u addr=0x%llx len=%u dir=%s", mid, sid,
			       (unsigned long long)m->h.addr, m->len, rd ? "read" : "write");
			return true;
		}
	}
	return false;
}

/* ---- commands ---------------------------------------------------------------------- */

/* Append text to the answer at *off (it stays NUL-terminated); false when it did not fit. */
static bool ans_add(char *ans, size_t len, size_t *off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool ans_add(char *ans, size_t len, size_t *off, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*off >= len)
		return false;
	va_start(ap, fmt);
	n = vsnprintf(ans + *off, len - *off, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len - *off) {
		ans[*off] = '\0';
		return false;
	}
	*off += (size_t)n;
	return true;
}

/* inject RANGE RULE... (VM lock held). */
static void cmd_add(struct vmmio *v, struct inject_command *c, char *ans, size_t len)
{
	struct vmmio_range *rg = &v->ranges[c->range];
	struct inject_rule *r = &c->rule;
	bool irq = r->kind == INJECT_IRQ_DROP || r->kind == INJECT_IRQ_REPEAT;
	char text[320];

	if (irq && rg->nirq == 0) {
		snprintf(ans, len, "FAIL bad argument '%s' (range %u has no IRQ line)",
			 inject_kind_name(r->kind), rg->g);
		return;
	}
	if (irq && r->line >= (int)rg->nirq) {
		snprintf(ans, len, "FAIL bad argument 'line=%d' (range %u has %u IRQ line(s))",
			 r->line, rg->g, rg->nirq);
		return;
	}
	if (inject_add(&rg->inject, r, v->inject_next_id + 1) < 0) {
		snprintf(ans, len,
			 "FAIL too many rules on range %u (%u; inject_clear %u, or let one run "
			 "out)",
			 rg->g, INJECT_MAX_RULES, rg->g);
		return;
	}
	v->inject_next_id++;
	inject_rule_format(&rg->inject.rule[rg->inject.n - 1], text, sizeof(text));
	fprintf(stderr, "coreio-vm: inject: range %u: rule added: %s\n", rg->g, text);
	fflush(stderr);
	if (vm_record)
		record_event(vm_record, 0, REC_EV_NOTE, "inject-rule range=%u rule=%u %s", rg->g,
			     v->inject_next_id, text);
	snprintf(ans, len, "OK rule=%u", v->inject_next_id);
}

void vmmio_inject_command(struct vmmio *v, char *line, char *ans, size_t len)
{
	struct inject_command c;
	char err[200];
	unsigned lo = 0, hi;
	size_t off = 0;
	int rc;

	if (len == 0)
		return;
	ans[0] = '\0';
	rc = inject_command_parse(line, &c, err, sizeof(err));
	if (rc == -ENOENT)
		return;
	if (rc < 0) {
		snprintf(ans, len, "FAIL %s", err);
		return;
	}
	if (c.has_range && c.range >= v->nranges) {
		snprintf(ans, len, "FAIL bad argument '%llu' (no such range; %u range(s))",
			 (unsigned long long)c.range, v->nranges);
		return;
	}
	hi = v->nranges;
	if (c.has_range) {
		lo = (unsigned)c.range;
		hi = lo + 1;
	}
	pthread_mutex_lock(&v->io->lock);
	switch (c.cmd) {
	case INJECT_CMD_ADD:
		cmd_add(v, &c, ans, len);
		break;
	case INJECT_CMD_CLEAR: {
		unsigned n = 0;

		for (unsigned g = lo; g < hi; g++)
			n += inject_clear(&v->ranges[g].inject);
		if (n)
			fprintf(stderr, "coreio-vm: inject: %u rule(s) cleared\n", n);
		snprintf(ans, len, "OK cleared=%u", n);
		break;
	}
	case INJECT_CMD_LIST: {
		unsigned n = 0;
		bool full = false;

		for (unsigned g = lo; g < hi; g++)
			n += v->ranges[g].inject.n;
		ans_add(ans, len, &off, "OK rules=%u", n);
		for (unsigned g = lo; g < hi && !full; g++) {
			const struct inject_set *s = &v->ranges[g].inject;

			for (unsigned i = 0; i < s->n && !full; i++) {
				char text[320];

				inject_rule_format(&s->rule[i], text, sizeof(text));
				/* Room for " | ..." stays at the end. */
				full = off + strlen(text) + 32 >= len ||
				       !ans_add(ans, len, &off, " | range=%u %s", g, text);
			}
		}
		if (full)
			ans_add(ans, len, &off, " | ...");
		break;
	}
	case INJECT_CMD_STATS:
	default: {
		uint64_t hits[INJECT_NKINDS] = {0}, unlogged = 0;

		for (unsigned g = lo; g < hi; g++) {
			for (unsigned k = 0; k < INJECT_NKINDS; k++)
				hits[k] += v->ranges[g].inject.hits[k];
			unlogged += v->ranges[g].inject.unlogged_total;
		}
		ans_add(ans, len, &off, "OK");
		for (unsigned k = 0; k < INJECT_NKINDS; k++)
			ans_add(ans, len, &off, " %s=%llu", inject_kind_name((enum inject_kind)k),
				(unsigned long long)hits[k]);
		ans_add(ans, len, &off, " unlogged=%llu", (unsigned long long)unlogged);
		break;
	}
	}
	pthread_mutex_unlock(&v->io->lock);
}

/* ---- --fault-socket ------------------------------------------------------------------- */

static void client_close(struct fault_client *fc, const char *why)
{
	if (fc->fd < 0)
		return;
	event_del(fc->fd);
	close(fc->fd);
	fc->fd = -1;
	fc->len = 0;
	fc->discarding = false;
	if (why)
		fprintf(stderr, "coreio-vm: --fault-socket: client closed: %s\n", why);
}

/* Send one answer line; a client that does not take it at once is closed. */
static bool client_answer(struct fault_client *fc, const char *ans)
{
	char line[VMMIO_INJECT_ANSWER_MAX + 2];
	size_t n = strlen(ans);
	ssize_t w;

	memcpy(line, ans, n);
	line[n++] = '\n';
	do {
		w = send(fc->fd, line, n, MSG_DONTWAIT | MSG_NOSIGNAL);
	} while (w < 0 && errno == EINTR);
	if (w != (ssize_t)n) {
		client_close(fc, "it does not read its answers (socket full) or left");
		return false;
	}
	return true;
}

/* Run every complete line in fc's buffer. Returns false when fc was closed. */
static bool client_lines(struct fault_client *fc)
{
	static char ans[VMMIO_INJECT_ANSWER_MAX];

	for (;;) {
		char *nl = memchr(fc->buf, '\n', fc->len);
		size_t ll;

		if (!nl) {
			if (fc->len > INJECT_LINE_MAX) {
				/* Too long: answer now and drop bytes up to the next newline. */
				if (!fc->discarding && !client_answer(fc, "FAIL line too long"))
					return false;
				fc->discarding = true;
				fc->len = 0;
			}
			return true;
		}
		ll = (size_t)(nl - fc->buf);
		*nl = '\0';
		if (fc->discarding) {
			fc->discarding = false;
		} else if (memchr(fc->buf, '\0', ll)) {
			if (!client_answer(fc, "FAIL bad input (a NUL byte in the line)"))
				return false;
		} else if (ll > INJECT_LINE_MAX) {
			if (!client_answer(fc, "FAIL line too long"))
				return false;
		} else {
			vmmio_inject_command(fc->srv->v, fc->buf, ans, sizeof(ans));
			if (ans[0] && !client_answer(fc, ans))
				return false;
		}
		memmove(fc->buf, nl + 1, fc->len - ll - 1);
		fc->len -= ll + 1;
	}
}

static void client_input(int fd, uint32_t events, void *opaque)
{
	struct fault_client *fc = opaque;
	ssize_t n;

	(void)fd;
	(void)events;
	do {
		n = recv(fc->fd, fc->buf + fc->len, sizeof(fc->buf) - fc->len, MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n <= 0) {
		client_close(fc, NULL);
		return;
	}
	fc->len += (size_t)n;
	client_lines(fc);
}

static void srv_accept(int fd, uint32_t events, void *opaque)
{
	struct vmmio_fault_srv *s = opaque;
	struct fault_client *fc = NULL;
	int cfd;

	(void)events;
	cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (cfd < 0)
		return;
	for (unsigned i = 0; i < VMMIO_FAULT_CLIENTS && !fc; i++)
		if (s->cl[i].fd < 0)
			fc = &s->cl[i];
	if (!fc) {
		static const char full[] = "FAIL too many connections\n";
		long long now = vmmio_now_ns() / 1000000;

		if (send(cfd, full, sizeof(full) - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
			/* The refusal is best effort. */
		}
		close(cfd);
		if (now - s->refuse_log_ms >= 1000) {
			s->refuse_log_ms = now;
			fprintf(stderr,
				"coreio-vm: --fault-socket: connection refused: %u clients at "
				"once\n",
				VMMIO_FAULT_CLIENTS);
		}
		return;
	}
	fc->fd = cfd;
	fc->len = 0;
	fc->discarding = false;
	if (event_add(cfd, EPOLLIN, client_input, fc) < 0) {
		close(cfd);
		fc->fd = -1;
	}
}

/* Open the --fault-socket listener at path. Returns 0 or a negative errno after printing why. */
static int srv_open(struct vmmio *v, const char *path)
{
	struct vmmio_fault_srv *s = calloc(1, sizeof(*s));
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int err;

	if (!s)
		return -ENOMEM;
	s->v = v;
	s->listen_fd = -1;
	for (unsigned i = 0; i < VMMIO_FAULT_CLIENTS; i++) {
		s->cl[i].fd = -1;
		s->cl[i].srv = s;
	}
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			fprintf(stderr,
				"coreio-vm: --fault-socket unix:%s exists and is not a socket\n",
				path);
			free(s);
			return -EEXIST;
		}
		unlink(path);
	}
	snprintf(s->path, sizeof(s->path), "%s", path);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->listen_fd < 0 || bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(s->listen_fd, 8) < 0 ||
	    (errno = -event_add(s->listen_fd, EPOLLIN, srv_accept, s)) != 0) {
		err = -errno;
		fprintf(stderr, "coreio-vm: --fault-socket unix:%s: %s\n", path, strerror(errno));
		if (s->listen_fd >= 0) {
			close(s->listen_fd);
			unlink(path);
		}
		free(s);
		return err;
	}
	v->fault = s;
	fprintf(stderr, "coreio-vm: fault-injection socket ready at unix:%s\n", path);
	fflush(stderr);
	return 0;
}

int inject_init(struct vmmio *v, const struct vm_config *cfg)
{
	int err;

	v->inject_timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (v->inject_timer_fd < 0)
		return -errno;
	err = event_add(v->inject_timer_fd, EPOLLIN, delay_fire, v);
	if (err < 0) {
		close(v->inject_timer_fd);
		v->inject_timer_fd = -1;
		return err;
	}
	if (cfg->fault_socket[0])
		return srv_open(v, cfg->fault_socket);
	return 0;
}

void inject_exit(struct vmmio *v)
{
	struct vmmio_fault_srv *s = v->fault;

	if (v->inject_timer_fd >= 0) {
		event_del(v->inject_timer_fd);
		close(v->inject_timer_fd);
		v->inject_timer_fd = -1;
	}
	if (!s)
		return;
	for (unsigned i = 0; i < VMMIO_FAULT_CLIENTS; i++)
		client_close(&s->cl[i], NULL);
	event_del(s->listen_fd);
	close(s->listen_fd);
	unlink(s->path);
	free(s);
	v->fault = NULL;
}
