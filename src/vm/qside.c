/* coreio-vm: the QEMU-hosted device side shared by --accel mpqemu and vfio-user (qside.h). */
#include "qside.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int qside_init(struct qside *q, const struct vm_config *cfg, struct vmmio *v, struct irq_chip *irq,
	       event_cb ctl_cb, void *opaque)
{
	q->v = v;
	q->irq = irq;
	q->trace = cfg->trace;
	return qside_ctl_open(&q->ctl, cfg->mpqemu_control, cfg->trace, ctl_cb, opaque);
}

void qside_hook(struct qside *q, const struct qside_hooks *h)
{
	irq_set_backend(q->irq, h->irq, h->opaque);
	vmmio_set_dma_ptr(q->v, h->dma_ptr, h->opaque);
	vmmio_set_dma_async(q->v, h->dma_async, h->opaque);
	if (q->ctl.fd >= 0 || h->claims_always) {
		vmmio_set_claim_cb(q->v, qside_ctl_on_claim, &q->ctl);
		vmmio_set_release_cb(q->v, h->release, h->opaque);
	}
}

void qside_stop(struct qside *q)
{
	if (q->v) {
		vmmio_set_claim_cb(q->v, NULL, NULL);
		vmmio_set_release_cb(q->v, NULL, NULL);
	}
}

void qside_exit(struct qside *q)
{
	qside_stop(q);
	qside_ctl_close(&q->ctl);
	if (q->irq)
		irq_set_backend(q->irq, NULL, NULL);
	if (q->v) {
		vmmio_set_dma_ptr(q->v, NULL, NULL);
		vmmio_set_dma_async(q->v, NULL, NULL);
	}
}

void qside_vlog(const char *mode, unsigned g, const char *fmt, va_list ap)
{
	fprintf(stderr, "coreio-vm: %s device %u: ", mode, g);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	fflush(stderr);
}

bool qside_is_eventfd(int fd)
{
	char path[64], target[64];
	ssize_t n;

	if (fd < 0)
		return false;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return strcmp(target, "anon_inode:[eventfd]") == 0;
}

bool qside_is_stream_socket(int fd)
{
	int type = 0;
	socklen_t tl = sizeof(type);
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
	       getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM;
}

int qside_ctl_open(struct qside_ctl *c, int fd, bool trace, event_cb cb, void *opaque)
{
	int type = 0, err;
	socklen_t tl = sizeof(type);

	c->fd = -1;
	c->trace = trace;
	if (fd < 0)
		return 0;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_SEQPACKET) {
		fprintf(stderr,
			"coreio-vm: --mpqemu-control %d is not an open SOCK_SEQPACKET socket\n",
			fd);
		return -ENOTSOCK;
	}
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return -errno;
	err = event_add(fd, EPOLLIN, cb, opaque);
	if (err < 0)
		return err;
	c->fd = fd;
	return 0;
}

void qside_ctl_send(const struct qside_ctl *c, const char *fmt, ...)
{
	char msg[QSIDE_CTL_MSG_MAX];
	va_list ap;
	int n;

	if (c->fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(msg))
		return;
	if (c->trace)
		fprintf(stderr, "coreio-vm: control: sending '%s'\n", msg);
	if (send(c->fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n)
		fprintf(stderr, "coreio-vm: control: cannot send '%s': %s\n", msg, strerror(errno));
}

/*
 * Append the fds that came with the received mh to fds (*nfds of them, at
 * most max): the rest are closed and *overflow is set, as on control data
 * cut short.
 */
static void take_fds(const struct msghdr *mh, int *fds, unsigned *nfds, unsigned max,
		     bool *overflow)
{
	if (mh->msg_flags & MSG_CTRUNC)
		*overflow = true;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR((struct msghdr *)mh, c)) {
		size_t k;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len < CMSG_LEN(0))
			continue;
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int one;

			memcpy(&one, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (*nfds < max) {
				fds[(*nfds)++] = one;
			} else {
				close(one);
				*overflow = true;
			}
		}
	}
}

int qside_ctl_recv(struct qside_ctl *c, char *msg, int *fds, unsigned *nfds, bool *trunc)
{
	ssize_t n;

	*nfds = 0;
	*trunc = false;
	n = qside_recv(c->fd, msg, QSIDE_CTL_MSG_MAX, fds, nfds, QSIDE_CTL_MAX_FDS, trunc);
	if (n == -EINTR || n == -EAGAIN || n == -EWOULDBLOCK)
		return 0;
	if (n <= 0) {
		fprintf(stderr, "coreio-vm: the control socket %s; exiting\n",
			n == 0 ? "closed (the orchestrator ended)" : strerror((int)-n));
		qside_close_fds(fds, nfds);
		qside_ctl_close(c);
		event_stop();
		return -1;
	}
	msg[n] = '\0';
	return (int)n;
}

void qside_ctl_close(struct qside_ctl *c)
{
	qside_sock_close(&c->fd);
}

void qside_ctl_on_claim(unsigned g, void *opaque)
{
	qside_ctl_send(opaque, "claimed %u", g);
}

void qside_sock_close(int *fd)
{
	if (*fd < 0)
		return;
	event_del(*fd);
	close(*fd);
	*fd = -1;
}

ssize_t qside_recv(int fd, void *buf, size_t len, int *fds, unsigned *nfds, unsigned max,
		   bool *overflow)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * QSIDE_RECV_FDS)];
	} ctl;
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	struct msghdr mh = {0};
	ssize_t n;

	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = ctl.buf;
	mh.msg_controllen = sizeof(ctl.buf);
	n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -errno;
	take_fds(&mh, fds, nfds, max, overflow);
	return n;
}

void qside_close_fds(const int *fds, unsigned *n)
{
	for (unsigned i = 0; i < *n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	*n = 0;
}

const char *qside_send_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	size_t done = 0;

	while (done < len) {
		ssize_t n = send(fd, p + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0)
			done += (size_t)n;
		else if (n < 0 && errno == EINTR)
			continue;
		else
			return n < 0 ? strerror(errno) : "short send";
	}
	return NULL;
}

enum qside_mem_bad qside_mem_check(int fd, uint64_t offset, uint64_t size, uint64_t *file_size)
{
	long page = sysconf(_SC_PAGESIZE);
	struct stat st;

	*file_size = 0;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return QSIDE_MEM_NOT_FILE;
	*file_size = (uint64_t)st.st_size;
	if (offset > *file_size || size > *file_size - offset)
		return QSIDE_MEM_PAST_END;
	if (size > SIZE_MAX - (size_t)page)
		return QSIDE_MEM_TOO_LARGE;
	return QSIDE_MEM_OK;
}

int qside_map(struct qside_map *m, int fd, uint64_t offset, bool shared)
{
	uint64_t delta = offset % (uint64_t)sysconf(_SC_PAGESIZE);
	size_t maplen = (size_t)(m->size + delta);
	void *p =
	    mmap(NULL, maplen, PROT_READ | PROT_WRITE,
		 (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_NORESERVE, fd, (off_t)(offset - delta));

	if (p == MAP_FAILED)
		return -errno;
	m->map = p;
	m->maplen = maplen;
	m->host = (uint8_t *)p + delta;
	return 0;
}

void qside_unmap(struct qside_map *m)
{
	if (m->map)
		munmap(m->map, m->maplen);
	m->map = NULL;
	m->host = NULL;
	m->maplen = 0;
}

void *qside_map_ptr(const struct qside_map *m, uint64_t gpa, uint64_t len)
{
	if (!m->host || len == 0 || gpa < m->gpa || gpa - m->gpa >= m->size ||
	    len > m->size - (gpa - m->gpa))
		return NULL;
	return m->host + (gpa - m->gpa);
}

int qside_bar_move(struct ioreq_ctx *io, uint32_t base, uint64_t size, struct vmmio_range *range,
		   bool place)
{
	struct vm_stats keep = io->stats;

	ioreq_exit(io);
	ioreq_init(io, NULL);
	io->stats = keep;
	if (!place)
		return 0;
	return register_mmio_emulation_handler(io, base, (uint64_t)base + size, vmmio_submit,
					       range);
}

void qside_req_init(struct io_request *req, bool write, uint64_t addr, const uint8_t *data,
		    unsigned size, ioreq_done_fn complete, void *opaque)
{
	struct mmio_request *m = &req->reqs.mmio;

	memset(req, 0, sizeof(*req));
	req->type = REQ_MMIO;
	req->state = REQ_STATE_FREE;
	req->complete = complete;
	req->complete_opaque = opaque;
	m->direction = write ? REQUEST_WRITE : REQUEST_READ;
	m->address = addr;
	m->size = size;
	m->flags = 0; /* QEMU does not say the CPU's privilege level */
	if (write && size <= sizeof(m->data))
		memcpy(m->data, data, size);
}

int qside_req_run(struct vmmio *v, struct ioreq_ctx *io, struct io_request *req)
{
	int rc;

	/* As a vCPU: the VM lock (the vmmio service's) around the access and
	 * the handler's wait, which sends the request (vmmio_submit()); the
	 * answer completes it later through req->complete, a posted write in
	 * the wait already. */
	pthread_mutex_lock(&v->io->lock);
	rc = emulate_io(io, req);
	if (rc == IOREQ_PENDING && req->state != REQ_STATE_COMPLETE && req->wait)
		req->wait(req);
	pthread_mutex_unlock(&v->io->lock);
	if (rc == IOREQ_PENDING)
		return rc;
	if (rc < 0) {
		/* A straddle (counted by emulate_io) or a bad size: a bus error. */
		req->result = -EIO;
		req->state = REQ_STATE_COMPLETE;
	}
	return rc;
}
