/* coreio: the CPython extension module over libcoreio: the reference module's interface and
 * coreio.Context. */

/*
 * One ContextObject per libcoreio context; the module-level functions of the
 * reference interface work on one ContextObject wrapping
 * coreio_default_ctx(). Every call that may wait (connect, register, the
 * loops, blocking DMA, IRQ updates) runs the library with the GIL released;
 * the library's callbacks (MMIO, DMA completions, reset, log) take the GIL
 * back with PyGILState_Ensure(), on whatever thread the library runs them.
 *
 * Python programs cannot be trusted to follow the library's threading rules
 * ("do not disconnect while other threads use the context"), so each object
 * counts the threads inside library calls (users, under mu). disconnect()
 * and connect() first mark the object closing (new calls from other threads
 * then return -ENOTCONN), wake a waiting mainloop() through wake_fd, and wait
 * until the other threads have left before they touch the library. The loop
 * (mainloop, processfds, process) runs on one thread at a time (loop_thread),
 * the thread the MMIO callbacks run on.
 *
 * Callback state lives in the object: slot[rid] holds the Python callables of
 * range rid and is the priv pointer the library gets, so it never moves.
 * A non-blocking DMA owns a struct pending_dma: the exported buffer (held,
 * so it can neither move nor be freed) and strong references to the
 * completion, its parameter and the object, all dropped when the completion
 * has run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include "coreio.h"

#define NRID 8u /* ranges per connection (rid 0..7) */

typedef struct ContextObject ContextObject;

/* The Python callbacks of one range; &slot is the library's priv pointer. */
struct slot {
	ContextObject *owner; /* the object the slot is part of */
	unsigned rid;
	bool active; /* registered with the library on the current connection */
	PyObject *read, *write, *readp, *writep, *funcp;
};

struct ContextObject {
	PyObject ob_base;
	coreio_ctx_t *ctx; /* NULL once closed */
	bool is_default;   /* wraps coreio_default_ctx(): never freed */
	int poll_fd;	   /* epoll of lib_fd and wake_fd: fileno() */
	int wake_fd;	   /* eventfd: wakes mainloop() and fileno() users */
	int lib_fd;	   /* the library's pollable fd now in poll_fd, or -1 */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int users;		      /* threads inside library calls (mu) */
	bool closing;		      /* a connect or disconnect is under way (mu) */
	unsigned long closing_thread; /* the thread doing it (mu) */
	bool looping;		      /* a loop call runs (GIL) */
	unsigned long loop_thread;    /* on this thread (GIL) */
	struct slot slot[NRID];
	PyObject *reset_cb;
	/* A KeyboardInterrupt, SystemExit, ... raised in a callback: re-raised by
	 * the call that ran the callback (mainloop, processfds, process, ...). */
	PyObject *pend_type, *pend_value, *pend_tb;
	PyObject *weakrefs;
};

/* A non-blocking DMA in flight. */
struct pending_dma {
	Py_buffer view;
	PyObject *cpl, *cplp;
	ContextObject *owner;
};

static PyTypeObject Context_Type;
static ContextObject *default_context; /* never released: threads may use it at exit */
static PyObject *log_logger;	       /* logging.getLogger("coreio"), made on first use */

/* ---- small helpers ---- */

static unsigned long this_thread(void)
{
	return PyThread_get_thread_ident();
}

static long long now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * An int argument as unsigned: values outside 0..UINT_MAX become UINT_MAX,
 * which the library refuses with -EINVAL, as the reference module returns
 * -22 for an out-of-range rid or mid. Returns -1 with TypeError for a
 * non-integer.
 */
static int uint_arg(PyObject *o, unsigned *out)
{
	PyObject *n = PyNumber_Index(o);
	int overflow;
	long long v;

	if (!n)
		return -1;
	v = PyLong_AsLongLongAndOverflow(n, &overflow);
	Py_DECREF(n);
	if (v == -1 && PyErr_Occurred())
		return -1;
	*out = (overflow || v < 0 || v > (long long)UINT_MAX) ? UINT_MAX : (unsigned)v;
	return 0;
}

/*
 * Whether the host part of a TCP target resolves. The original module returns
 * -ENOENT (-2) for a host that does not; libcoreio says -EHOSTUNREACH for
 * that and for an unreachable address alike, so connect() asks again.
 */
static bool host_resolves(const char *target)
{
	struct addrinfo hints, *res = NULL;
	char host[256];
	const char *colon;
	size_t n;
	int rc;

	if (!target || !*target)
		target = getenv("COREIO_VM");
	if (!target || !*target)
		target = getenv("COREHDL_VM");
	if (!target || !*target || strncmp(target, "unix:", 5) == 0)
		return true;
	if (target[0] == '[') {
		const char *end = strchr(target, ']');

		target++;
		n = end ? (size_t)(end - target) : strlen(target);
	} else if ((colon = strchr(target, ':')) && !strchr(colon + 1, ':')) {
		n = (size_t)(colon - target); /* host:port */
	} else {
		n = strlen(target); /* host, or a bare IPv6 address */
	}
	if (n == 0 || n >= sizeof(host))
		return true;
	memcpy(host, target, n);
	host[n] = 0;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, NULL, &hints, &res);
	if (res)
		freeaddrinfo(res);
	return rc == 0 || rc == EAI_AGAIN || rc == EAI_SYSTEM || rc == EAI_MEMORY;
}

static void wake(ContextObject *self)
{
	uint64_t one = 1;

	if (self->wake_fd >= 0 && write(self->wake_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is already non-zero, the waiter wakes anyway. */
	}
}

static void drain_wake(ContextObject *self)
{
	uint64_t v;

	if (self->wake_fd >= 0 && read(self->wake_fd, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing to drain. */
	}
}

static int check_open(ContextObject *self)
{
	if (!self->ctx) {
		PyErr_SetString(PyExc_ValueError, "operation on a closed coreio.Context");
		return -1;
	}
	return 0;
}

/* Count the calling thread in (GIL held). 0, or -ENOTCONN while another thread
 * connects or disconnects the context, or once it is closed. */
static int enter(ContextObject *self)
{
	int rc = 0;

	pthread_mutex_lock(&self->mu);
	if (!self->ctx || (self->closing && self->closing_thread != this_thread()))
		rc = -ENOTCONN;
	else
		self->users++;
	pthread_mutex_unlock(&self->mu);
	return rc;
}

static void leave(ContextObject *self)
{
	pthread_mutex_lock(&self->mu);
	if (--self->users <= 0)
		pthread_cond_broadcast(&self->cv);
	pthread_mutex_unlock(&self->mu);
}

/*
 * Take the context for a connect or disconnect (GIL held): wait for another
 * one to finish, mark it closing, wake a sleeping loop and wait until the
 * other threads have left the library. A loop thread calling from inside
 * one of its callbacks counts itself once (allow). Returns false when this
 * thread is already doing it (a callback run by its own disconnect).
 */
static bool begin_exclusive(ContextObject *self, int allow)
{
	unsigned long me = this_thread();
	bool ok = true;

	PyThreadState *ts = PyEval_SaveThread();

	pthread_mutex_lock(&self->mu);
	if (self->closing && self->closing_thread == me) {
		ok = false;
	} else {
		while (self->closing)
			pthread_cond_wait(&self->cv, &self->mu);
		self->closing = true;
		self->closing_thread = me;
		pthread_mutex_unlock(&self->mu);
		wake(self);
		pthread_mutex_lock(&self->mu);
		while (self->users > allow)
			pthread_cond_wait(&self->cv, &self->mu);
	}
	pthread_mutex_unlock(&self->mu);
	PyEval_RestoreThread(ts);
	return ok;
}

static void end_exclusive(ContextObject *self)
{
	pthread_mutex_lock(&self->mu);
	self->closing = false;
	self->closing_thread = 0;
	pthread_cond_broadcast(&self->cv);
	pthread_mutex_unlock(&self->mu);
}

/* Put the library's current pollable fd (or none) into poll_fd. */
static void sync_lib_fd(ContextObject *self)
{
	int fd = self->ctx ? coreio_ctx_get_fd(self->ctx) : -1;

	if (fd < 0)
		fd = -1;
	if (fd == self->lib_fd)
		return;
	if (self->lib_fd >= 0) /* ENOENT when the library closed it already */
		epoll_ctl(self->poll_fd, EPOLL_CTL_DEL, self->lib_fd, NULL);
	if (fd >= 0) {
		struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};

		if (epoll_ctl(self->poll_fd, EPOLL_CTL_ADD, fd, &ev) < 0 && errno == EEXIST)
			epoll_ctl(self->poll_fd, EPOLL_CTL_MOD, fd, &ev);
	}
	self->lib_fd = fd;
}

static void slot_clear(struct slot *s)
{
	s->active = false;
	Py_CLEAR(s->read);
	Py_CLEAR(s->write);
	Py_CLEAR(s->readp);
	Py_CLEAR(s->writep);
	Py_CLEAR(s->funcp);
}

/* The library forgot every registration (disconnect, new connection, lost VM). */
static void slots_forget(ContextObject *self)
{
	for (unsigned i = 0; i < NRID; i++)
		slot_clear(&self->slot[i]);
}

/* After a loop call: a connection the library closed itself (the VM went away)
 * took its registrations and its fd with it. */
static void after_loop_error(ContextObject *self, int rc)
{
	if (rc < 0 && self->ctx && coreio_ctx_get_fd(self->ctx) < 0) {
		slots_forget(self);
		sync_lib_fd(self);
	}
}

/* Raise the exception a callback left for this call; -1 if there was one. */
static int raise_pending(ContextObject *self)
{
	if (!self->pend_type)
		return 0;
	PyErr_Restore(self->pend_type, self->pend_value, self->pend_tb);
	self->pend_type = self->pend_value = self->pend_tb = NULL;
	return -1;
}

/*
 * A callback raised (an exception is set; GIL held). An Exception is printed
 * with a line saying what it did to the VM, and the loop goes on; anything
 * else (KeyboardInterrupt, SystemExit) is kept and raised by the call that
 * ran the callback, once the library is back in a consistent state.
 */
static void callback_failed(ContextObject *owner, const char *what)
{
	if (PyErr_ExceptionMatches(PyExc_Exception)) {
		PySys_WriteStderr("coreio: exception in %s\n", what);
		PyErr_PrintEx(0);
		return;
	}
	if (!owner) { /* no call to raise it from (PyErr_PrintEx would exit on SystemExit) */
		PyErr_WriteUnraisable(NULL);
		return;
	}
	if (owner->pend_type) {
		PyErr_Clear(); /* one is enough */
		return;
	}
	PyErr_Fetch(&owner->pend_type, &owner->pend_value, &owner->pend_tb);
	PyErr_NormalizeException(&owner->pend_type, &owner->pend_value, &owner->pend_tb);
	if (owner->pend_tb && owner->pend_value)
		PyException_SetTraceback(owner->pend_value, owner->pend_tb);
}

/* ---- callbacks from the library (GIL not held on entry) ---- */

/*
 * An MMIO callback's result: None or 0 is success, any other int a bus
 * error. Consumes res; NULL means the callback raised.
 */
static int mmio_result(struct slot *s, PyObject *res, const char *name, uint64_t addr)
{
	char what[160];
	int rc = 1;

	if (res) {
		if (res == Py_None) {
			rc = 0;
		} else if (PyLong_Check(res)) {
			int overflow;
			long v = PyLong_AsLongAndOverflow(res, &overflow);

			rc = (v != 0 || overflow) ? 1 : 0;
		} else {
			PyErr_Format(PyExc_TypeError,
				     "the %s callback must return an int or None, not %.100s", name,
				     Py_TYPE(res)->tp_name);
		}
		Py_DECREF(res);
		if (!PyErr_Occurred())
			return rc;
	}
	snprintf(what, sizeof(what),
		 "the %s callback of range %u at %#llx (a bus error for the VM)", name, s->rid,
		 (unsigned long long)addr);
	callback_failed(s->owner, what);
	return 1;
}

/*
 * Call the callable in *field as fn(funcp, addr, *bufs, flags) for an access
 * of len bytes per element (nbuf 1, or 2 for a pair). Read callbacks get
 * zeroed bytearrays whose contents are copied to out[] afterwards; write
 * callbacks get bytearrays holding in[]. Runs on the library's serving
 * thread without the GIL; returns 0 or 1 (bus error).
 */
static int mmio_call(struct slot *s, PyObject *const *field, const char *name, uint64_t addr,
		     size_t len, int nbuf, uint8_t *const out[2], uint8_t *const in[2],
		     unsigned flags)
{
	PyGILState_STATE g = PyGILState_Ensure();
	PyObject *args[5] = {NULL, NULL, NULL, NULL, NULL};
	PyObject *bufs[2] = {NULL, NULL}, *res = NULL;
	PyObject *fn = Py_XNewRef(*field); /* the slot may be cleared meanwhile */
	bool ok = fn != NULL;
	int rc = 1, n = 0;

	args[n++] = Py_NewRef(s->funcp ? s->funcp : Py_None);
	args[n++] = PyLong_FromUnsignedLongLong(addr);
	for (int i = 0; i < nbuf; i++) {
		bufs[i] =
		    PyByteArray_FromStringAndSize(in ? (const char *)in[i] : NULL, (Py_ssize_t)len);
		if (bufs[i] && !in)
			memset(PyByteArray_AS_STRING(bufs[i]), 0, len);
		args[n++] = Py_XNewRef(bufs[i]);
	}
	args[n++] = PyLong_FromUnsignedLong(flags);
	for (int i = 0; i < n; i++)
		ok = ok && args[i];
	if (ok) {
		res = PyObject_Vectorcall(fn, args, (size_t)n, NULL);
		rc = mmio_result(s, res, name, addr);
	} else if (PyErr_Occurred()) {
		rc = mmio_result(s, NULL, name, addr);
	}
	for (int i = 0; out && i < nbuf; i++) {
		size_t got = bufs[i] ? (size_t)PyByteArray_GET_SIZE(bufs[i]) : 0;

		memset(out[i], 0, len);
		if (got)
			memcpy(out[i], PyByteArray_AS_STRING(bufs[i]), got < len ? got : len);
	}
	for (int i = 0; i < n; i++)
		Py_XDECREF(args[i]);
	for (int i = 0; i < nbuf; i++)
		Py_XDECREF(bufs[i]);
	Py_XDECREF(fn);
	PyGILState_Release(g);
	return rc;
}

static int t_read(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	struct slot *s = priv;
	uint8_t *out[2] = {buf, NULL};

	return mmio_call(s, &s->read, "read", addr, len, 1, out, NULL, flags);
}

static int t_write(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	struct slot *s = priv;
	uint8_t *in[2] = {buf, NULL};

	return mmio_call(s, &s->write, "write", addr, len, 1, NULL, in, flags);
}

static int t_readp(void *priv, uint64_t addr, size_t len, void *buf1, void *buf2, unsigned flags)
{
	struct slot *s = priv;
	uint8_t *out[2] = {buf1, buf2};

	return mmio_call(s, &s->readp, "readp", addr, len, 2, out, NULL, flags);
}

static int t_writep(void *priv, uint64_t addr, size_t len, void *buf1, void *buf2, unsigned flags)
{
	struct slot *s = priv;
	uint8_t *in[2] = {buf1, buf2};

	return mmio_call(s, &s->writep, "writep", addr, len, 2, NULL, in, flags);
}

/* A non-blocking DMA finished: release its buffer, then cpl(cplp, err). */
static void t_cpl(void *opaque, int err)
{
	struct pending_dma *d = opaque;
	PyGILState_STATE g = PyGILState_Ensure();
	PyObject *args[2], *res = NULL;

	PyBuffer_Release(&d->view);
	args[0] = d->cplp;
	args[1] = PyLong_FromLong(err);
	if (args[1])
		res = PyObject_Vectorcall(d->cpl, args, 2, NULL);
	Py_XDECREF(args[1]);
	if (res)
		Py_DECREF(res);
	else
		callback_failed(d->owner, "a DMA completion callback");
	Py_DECREF(d->cpl);
	Py_DECREF(d->cplp);
	Py_DECREF(d->owner);
	PyMem_Free(d);
	PyGILState_Release(g);
}

static void t_reset(void *opaque)
{
	ContextObject *self = opaque;
	PyGILState_STATE g = PyGILState_Ensure();
	PyObject *fn = Py_XNewRef(self->reset_cb);

	if (fn) {
		PyObject *res = PyObject_CallNoArgs(fn);

		if (res)
			Py_DECREF(res);
		else
			callback_failed(self, "the reset callback");
		Py_DECREF(fn);
	}
	PyGILState_Release(g);
}

/* The library's messages go to logging.getLogger("coreio"), at the matching level. */
static void t_log(void *opaque, int level, const char *msg)
{
	PyGILState_STATE g = PyGILState_Ensure();
	int pylevel = level <= COREIO_LOG_ERR	    ? 40
		      : level <= COREIO_LOG_WARNING ? 30
		      : level <= COREIO_LOG_INFO    ? 20
						    : 10;
	PyObject *res = NULL;

	(void)opaque;
	if (!log_logger) {
		PyObject *logging = PyImport_ImportModule("logging");

		if (logging) {
			log_logger = PyObject_CallMethod(logging, "getLogger", "s", "coreio");
			Py_DECREF(logging);
		}
	}
	if (log_logger)
		res = PyObject_CallMethod(log_logger, "log", "iss", pylevel, "%s", msg);
	if (res)
		Py_DECREF(res);
	else
		callback_failed(NULL, "logging a libcoreio message");
	PyGILState_Release(g);
}

/* ---- Context: construction and destruction ---- */

static int context_init_fields(ContextObject *self)
{
	struct epoll_event ev = {.events = EPOLLIN};

	self->poll_fd = self->wake_fd = self->lib_fd = -1;
	pthread_mutex_init(&self->mu, NULL);
	pthread_cond_init(&self->cv, NULL);
	for (unsigned i = 0; i < NRID; i++) {
		self->slot[i].owner = self;
		self->slot[i].rid = i;
	}
	self->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	self->poll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (self->wake_fd < 0 || self->poll_fd < 0) {
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	ev.data.fd = self->wake_fd;
	if (epoll_ctl(self->poll_fd, EPOLL_CTL_ADD, self->wake_fd, &ev) < 0) {
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	coreio_ctx_set_log(self->ctx, t_log, self);
	return 0;
}

static PyObject *Context_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {NULL};
	ContextObject *self;
	int rc;

	/* Subclasses may take arguments in their __init__. */
	if (type == &Context_Type && !PyArg_ParseTupleAndKeywords(args, kwds, ":Context", kwlist))
		return NULL;
	self = (ContextObject *)type->tp_alloc(type, 0);
	if (!self)
		return NULL;
	self->poll_fd = self->wake_fd = self->lib_fd = -1;
	rc = coreio_ctx_new(&self->ctx);
	if (rc < 0) {
		errno = -rc;
		PyErr_SetFromErrno(PyExc_OSError);
		Py_DECREF(self);
		return NULL;
	}
	if (context_init_fields(self) < 0) {
		Py_DECREF(self);
		return NULL;
	}
	return (PyObject *)self;
}

static int Context_traverse(ContextObject *self, visitproc visit, void *arg)
{
	for (unsigned i = 0; i < NRID; i++) {
		Py_VISIT(self->slot[i].read);
		Py_VISIT(self->slot[i].write);
		Py_VISIT(self->slot[i].readp);
		Py_VISIT(self->slot[i].writep);
		Py_VISIT(self->slot[i].funcp);
	}
	Py_VISIT(self->reset_cb);
	Py_VISIT(self->pend_type);
	Py_VISIT(self->pend_value);
	Py_VISIT(self->pend_tb);
	return 0;
}

static int Context_clear(ContextObject *self)
{
	slots_forget(self);
	Py_CLEAR(self->reset_cb);
	Py_CLEAR(self->pend_type);
	Py_CLEAR(self->pend_value);
	Py_CLEAR(self->pend_tb);
	return 0;
}

/* Disconnect and free the library context; nothing else uses the object. */
static void context_free_ctx(ContextObject *self)
{
	coreio_ctx_t *ctx = self->ctx;

	if (!ctx)
		return;
	/* Nothing may call back into a dying object. Pending non-blocking DMA
	 * holds a reference, so none is left to complete here. */
	coreio_ctx_set_log(ctx, NULL, NULL);
	coreio_ctx_set_reset_cb(ctx, NULL, NULL);
	self->ctx = NULL;
	if (self->is_default)
		coreio_ctx_disconnect(ctx);
	else
		coreio_ctx_free(ctx);
}

static void Context_dealloc(ContextObject *self)
{
	PyObject_GC_UnTrack(self);
	if (self->weakrefs)
		PyObject_ClearWeakRefs((PyObject *)self);
	context_free_ctx(self);
	Context_clear(self);
	if (self->poll_fd >= 0)
		close(self->poll_fd);
	if (self->wake_fd >= 0)
		close(self->wake_fd);
	pthread_cond_destroy(&self->cv);
	pthread_mutex_destroy(&self->mu);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---- Context: the reference interface ---- */

static PyObject *ret_int(int rc)
{
	return PyLong_FromLong(rc);
}

static PyObject *Context_connect(ContextObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"target", NULL};
	PyObject *target = Py_None;
	const char *t = NULL;
	PyThreadState *ts;
	bool busy;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:connect", kwlist, &target))
		return NULL;
	if (check_open(self) < 0)
		return NULL;
	if (target != Py_None) {
		Py_ssize_t n;

		if (!PyUnicode_Check(target)) {
			PyErr_Format(PyExc_TypeError, "target must be a str or None, not %.100s",
				     Py_TYPE(target)->tp_name);
			return NULL;
		}
		t = PyUnicode_AsUTF8AndSize(target, &n);
		if (!t)
			return NULL;
		if ((size_t)n != strlen(t)) {
			PyErr_SetString(PyExc_ValueError, "target contains a NUL character");
			return NULL;
		}
	}
	if (self->looping && self->loop_thread == this_thread()) {
		PyErr_SetString(PyExc_RuntimeError,
				"connect() called from a callback of the same context");
		return NULL;
	}
	/* Connected and in use by other threads (a running loop, a DMA): the
	 * connection stands; taking the context would end that loop. */
	pthread_mutex_lock(&self->mu);
	busy = self->users > 0;
	pthread_mutex_unlock(&self->mu);
	if (busy && coreio_ctx_get_fd(self->ctx) >= 0)
		return ret_int(-EISCONN);
	if (!begin_exclusive(self, 0)) {
		PyErr_SetString(PyExc_RuntimeError,
				"connect() called from a callback run by disconnect()");
		return NULL;
	}
	ts = PyEval_SaveThread();
	rc = coreio_ctx_connect(self->ctx, t);
	if (rc == -EHOSTUNREACH && !host_resolves(t))
		rc = -ENOENT;
	PyEval_RestoreThread(ts);
	/* A new connection, or a dead one cleaned up: no registrations. */
	if (rc != -EISCONN)
		slots_forget(self);
	sync_lib_fd(self);
	wake(self); /* a fileno() user looks at the new connection */
	end_exclusive(self);
	if (raise_pending(self) < 0)
		return NULL;
	return ret_int(rc);
}

/* Disconnect (GIL held); returns -1 with an exception a callback raised. */
static int do_disconnect(ContextObject *self)
{
	int allow = (self->looping && self->loop_thread == this_thread()) ? 1 : 0;
	PyThreadState *ts;

	if (!self->ctx)
		return 0;
	if (!begin_exclusive(self, allow))
		return 0; /* from a completion this very disconnect runs */
	if (self->lib_fd >= 0)
		epoll_ctl(self->poll_fd, EPOLL_CTL_DEL, self->lib_fd, NULL);
	self->lib_fd = -1;
	ts = PyEval_SaveThread();
	coreio_ctx_disconnect(self->ctx);
	PyEval_RestoreThread(ts);
	slots_forget(self);
	drain_wake(self);
	end_exclusive(self);
	return raise_pending(self);
}

static PyObject *Context_disconnect(ContextObject *self, PyObject *unused)
{
	if (do_disconnect(self) < 0)
		return NULL;
	Py_RETURN_NONE;
}

static int check_callable(PyObject *o, const char *name, bool may_be_none)
{
	if ((o == Py_None && may_be_none) || PyCallable_Check(o))
		return 0;
	PyErr_Format(PyExc_TypeError, "%s must be callable%s, not %.100s", name,
		     may_be_none ? " or None" : "", Py_TYPE(o)->tp_name);
	return -1;
}

static PyObject *Context_register(ContextObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"rid", "read", "write", "readp", "writep", "funcp", NULL};
	PyObject *rid_o, *rd, *wr, *rdp = Py_None, *wrp = Py_None, *funcp = Py_None;
	PyThreadState *ts;
	coreio_func_t f;
	struct slot *s;
	unsigned rid;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|OOO:register", kwlist, &rid_o, &rd, &wr,
					 &rdp, &wrp, &funcp))
		return NULL;
	if (uint_arg(rid_o, &rid) < 0 || check_callable(rd, "read", true) < 0 ||
	    check_callable(wr, "write", true) < 0 || check_callable(rdp, "readp", true) < 0 ||
	    check_callable(wrp, "writep", true) < 0 || check_open(self) < 0)
		return NULL;
	if (rid >= NRID || rd == Py_None || wr == Py_None)
		return ret_int(-EINVAL);
	rc = enter(self);
	if (rc < 0)
		return ret_int(rc);
	/* Registrations of a connection the library has closed are gone. */
	if (coreio_ctx_get_fd(self->ctx) < 0)
		slots_forget(self);
	s = &self->slot[rid];
	if (s->active) {
		leave(self);
		return ret_int(-EBUSY);
	}
	slot_clear(s);
	s->read = Py_NewRef(rd);
	s->write = Py_NewRef(wr);
	s->readp = rdp == Py_None ? NULL : Py_NewRef(rdp);
	s->writep = wrp == Py_None ? NULL : Py_NewRef(wrp);
	s->funcp = Py_NewRef(funcp);
	s->active = true;
	memset(&f, 0, sizeof(f));
	f.read = t_read;
	f.write = t_write;
	f.readp = s->readp ? t_readp : NULL;
	f.writep = s->writep ? t_writep : NULL;
	ts = PyEval_SaveThread();
	rc = coreio_ctx_register(self->ctx, rid, &f, s);
	PyEval_RestoreThread(ts);
	if (rc < 0)
		slot_clear(s);
	/* Requests read while waiting for the claim's answer are queued: have
	 * the loop look even if no more data comes. */
	if (!(self->looping && self->loop_thread == this_thread()))
		wake(self);
	leave(self);
	return ret_int(rc);
}

/* Begin a loop call (mainloop, processfds, process). 0, 1 when the context is
 * being disconnected by another thread (-ENOTCONN), -1 with an exception. */
static int loop_begin(ContextObject *self, const char *name)
{
	unsigned long me = this_thread();

	if (check_open(self) < 0)
		return -1;
	if (self->looping) {
		PyErr_Format(PyExc_RuntimeError,
			     self->loop_thread == me
				 ? "%s() called from a callback of the same context"
				 : "%s(): another thread runs the loop of this context",
			     name);
		return -1;
	}
	if (enter(self) < 0)
		return 1;
	self->looping = true;
	self->loop_thread = me;
	return 0;
}

/* End a loop call: returns rc as an int object, or NULL with the exception a
 * callback raised. */
static PyObject *loop_end(ContextObject *self, int rc)
{
	self->looping = false;
	self->loop_thread = 0;
	after_loop_error(self, rc);
	leave(self);
	if (raise_pending(self) < 0)
		return NULL;
	return ret_int(rc);
}

static bool closing_by_other(ContextObject *self)
{
	bool c;

	pthread_mutex_lock(&self->mu);
	c = self->closing && self->closing_thread != this_thread();
	pthread_mutex_unlock(&self->mu);
	return c;
}

/* One wait of mainloop(): sleep until the library's fd or wake_fd is readable
 * or timeout_us passes (negative: no limit), then serve. GIL not held.
 * Returns the library's result, or -errno of the wait (-EINTR). */
static int loop_pass(ContextObject *self, int libfd, long long timeout_us, bool wait)
{
	struct pollfd pf[2] = {{.fd = libfd, .events = POLLIN},
			       {.fd = self->wake_fd, .events = POLLIN}};
	struct timespec ts = {.tv_sec = (time_t)(timeout_us / 1000000),
			      .tv_nsec = (long)(timeout_us % 1000000) * 1000};
	int n = 1;

	if (wait) {
		n = ppoll(pf, 2, timeout_us < 0 ? NULL : &ts, NULL);
		if (n < 0)
			return -errno;
		if (pf[1].revents)
			drain_wake(self);
	}
	return n > 0 ? coreio_ctx_process(self->ctx) : 0;
}

static PyObject *Context_mainloop(ContextObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"usec", NULL};
	long long usec, deadline;
	bool first = true;
	int rc = 0, b;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "L:mainloop", kwlist, &usec))
		return NULL;
	b = loop_begin(self, "mainloop");
	if (b)
		return b < 0 ? NULL : ret_int(-ENOTCONN);
	deadline = usec >= 0 ? now_us() + usec : 0;
	for (;;) {
		int libfd = coreio_ctx_get_fd(self->ctx);
		long long left = -1;
		PyThreadState *ts;

		if (libfd < 0) {
			rc = libfd;
			break;
		}
		if (closing_by_other(self)) {
			rc = -ENOTCONN;
			break;
		}
		if (usec >= 0) {
			left = deadline - now_us();
			if (left < 0)
				left = 0;
		}
		/* The first pass serves at once what may be queued already
		 * (requests read while register() waited for its claim). */
		ts = PyEval_SaveThread();
		rc = loop_pass(self, libfd, left, !first);
		PyEval_RestoreThread(ts);
		first = false;
		if (self->pend_type)
			break;
		/* A KeyboardInterrupt (the wait ends with EINTR, or it came
		 * while the library ran) ends the loop. */
		if (PyErr_CheckSignals() < 0) {
			self->looping = false;
			self->loop_thread = 0;
			leave(self);
			return NULL;
		}
		if (rc == -EINTR)
			rc = 0;
		if (rc < 0)
			break;
		if (usec >= 0 && now_us() >= deadline)
			break;
	}
	return loop_end(self, rc);
}

/* Fill an fd_set from an iterable of fds (ints or objects with fileno()).
 * NULL or None leaves it empty. *nfds grows to the largest fd + 1. */
static int fdset_from(PyObject *seq, fd_set *set, int *nfds, PyObject *list)
{
	PyObject *it, *item;

	FD_ZERO(set);
	if (!seq || seq == Py_None)
		return 0;
	it = PyObject_GetIter(seq);
	if (!it)
		return -1;
	while ((item = PyIter_Next(it))) {
		int fd = PyObject_AsFileDescriptor(item);

		Py_DECREF(item);
		if (fd < 0) {
			Py_DECREF(it);
			return -1;
		}
		if (list) {
			PyObject *o = PyLong_FromLong(fd);
			int has = o ? PySequence_Contains(list, o) : -1;

			if (has == 0)
				has = PyList_Append(list, o);
			Py_XDECREF(o);
			if (has < 0) {
				Py_DECREF(it);
				return -1;
			}
		}
		if (fd < FD_SETSIZE) /* larger fds are not the library's */
			FD_SET(fd, set);
		if (fd + 1 > *nfds)
			*nfds = fd + 1;
	}
	Py_DECREF(it);
	return PyErr_Occurred() ? -1 : 0;
}

/* Append the fds of set below nfds that list does not hold yet. */
static int fdset_merge(PyObject *list, const fd_set *set, int nfds)
{
	for (int fd = 0; fd < nfds && fd < FD_SETSIZE; fd++) {
		PyObject *o;
		int has;

		if (!FD_ISSET(fd, set))
			continue;
		o = PyLong_FromLong(fd);
		has = o ? PySequence_Contains(list, o) : -1;
		if (has == 0)
			has = PyList_Append(list, o);
		Py_XDECREF(o);
		if (has < 0)
			return -1;
	}
	return 0;
}

static PyObject *Context_preparefds(ContextObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"readfds", "writefds", NULL};
	PyObject *rin = Py_None, *win = Py_None, *rl = NULL, *wl = NULL, *ret = NULL;
	fd_set r, w, lr, lw;
	int nfds = 0, rc;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:preparefds", kwlist, &rin, &win))
		return NULL;
	if (check_open(self) < 0)
		return NULL;
	rl = PyList_New(0);
	wl = PyList_New(0);
	if (!rl || !wl || fdset_from(rin, &r, &nfds, rl) < 0 || fdset_from(win, &w, &nfds, wl) < 0)
		goto out;
	FD_ZERO(&lr);
	FD_ZERO(&lw);
	rc = enter(self);
	if (rc == 0) {
		rc = coreio_ctx_preparefds(self->ctx, 0, &lr, &lw);
		leave(self);
	}
	if (rc >= 0) {
		if (fdset_merge(rl, &lr, rc) < 0 || fdset_merge(wl, &lw, rc) < 0)
			goto out;
		if (rc > nfds)
			nfds = rc;
	} else {
		nfds = rc;
	}
	ret = Py_BuildValue("(iOO)", nfds, rl, wl);
out:
	Py_XDECREF(rl);
	Py_XDECREF(wl);
	return ret;
}

static PyObject *Context_processfds(ContextObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"readable", "writable", NULL};
	PyObject *rin = Py_None, *win = Py_None;
	PyThreadState *ts;
	fd_set r, w;
	int nfds = 0, rc, b;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:processfds", kwlist, &rin, &win))
		return NULL;
	if (fdset_from(rin, &r, &nfds, NULL) < 0 || fdset_from(win, &w, &nfds, NULL) < 0)
		return NULL;
	b = loop_begin(self, "processfds");
	if (b)
		return b < 0 ? NULL : ret_int(-ENOTCONN);
	ts = PyEval_SaveThread();
	rc = coreio_ctx_processfds(self->ctx, rin == Py_None ? NULL : &r,
				   win == Py_None ? NULL : &w);
	PyEval_RestoreThread(ts);
	return loop_end(self, rc);
}

static PyObject *Context_irq_update(ContextObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"rid", "iid", "state", NULL};
	PyObject *rid_o, *iid_o, *state_o;
	unsigned rid, iid, state;
	PyThreadState *ts;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO:irq_update", kwlist, &rid_o, &iid_o,
					 &state_o))
		return NULL;
	if (uint_arg(rid_o, &rid) < 0 || uint_arg(iid_o, &iid) < 0 ||
	    uint_arg(state_o, &state) < 0 || check_open(self) < 0)
		return NULL;
	rc = enter(self);
	if (rc < 0)
		return ret_int(rc);
	ts = PyEval_SaveThread();
	rc = coreio_ctx_irq_update(self->ctx, rid, iid, state ? 1 : 0);
	PyEval_RestoreThread(ts);
	leave(self);
	return ret_int(rc);
}

/* A blocking DMA into or out of the caller's buffer, GIL released. */
static PyObject *dma_blocking(ContextObject *self, bool write, unsigned mid, unsigned sid,
			      unsigned long long addr, PyObject *buf, unsigned flags)
{
	Py_buffer view;
	PyThreadState *ts;
	int rc;

	if (PyObject_GetBuffer(buf, &view, write ? PyBUF_SIMPLE : PyBUF_WRITABLE) < 0)
		return NULL;
	rc = view.len == 0 ? -EINVAL : enter(self);
	if (rc == 0) {
		ts = PyEval_SaveThread();
		if (write)
			rc = coreio_ctx_dma_write(self->ctx, mid, sid, addr, (size_t)view.len,
						  view.buf, flags, NULL, NULL);
		else
			rc = coreio_ctx_dma_read(self->ctx, mid, sid, addr, (size_t)view.len,
						 view.buf, flags, NULL, NULL);
		PyEval_RestoreThread(ts);
		leave(self);
	}
	PyBuffer_Release(&view);
	return ret_int(rc);
}

static void pending_dma_free(struct pending_dma *d)
{
	PyBuffer_Release(&d->view);
	Py_XDECREF(d->cpl);
	Py_XDECREF(d->cplp);
	Py_XDECREF(d->owner);
	PyMem_Free(d);
}

/* Start a non-blocking DMA; the buffer stays exported until t_cpl runs. */
static PyObject *dma_start(ContextObject *self, bool write, unsigned mid, unsigned sid,
			   unsigned long long addr, PyObject *buf, unsigned flags, PyObject *cpl,
			   PyObject *cplp)
{
	struct pending_dma *d = PyMem_Calloc(1, sizeof(*d));
	PyThreadState *ts;
	size_t len;
	void *p;
	int rc;

	if (!d)
		return PyErr_NoMemory();
	if (PyObject_GetBuffer(buf, &d->view, write ? PyBUF_SIMPLE : PyBUF_WRITABLE) < 0) {
		PyMem_Free(d);
		return NULL;
	}
	d->cpl = Py_NewRef(cpl);
	d->cplp = Py_NewRef(cplp);
	d->owner = (ContextObject *)Py_NewRef(self);
	p = d->view.buf;
	len = (size_t)d->view.len;
	rc = len == 0 ? -EINVAL : enter(self);
	if (rc < 0) {
		pending_dma_free(d);
		return ret_int(rc);
	}
	/* After a 0 return d belongs to the completion, which may already be
	 * running on the loop's thread: it is not touched again here. */
	ts = PyEval_SaveThread();
	if (write)
		rc = coreio_ctx_dma_write(self->ctx, mid, sid, addr, len, p, flags, t_cpl, d);
	else
		rc = coreio_ctx_dma_read(self->ctx, mid, sid, addr, len, p, flags, t_cpl, d);
	PyEval_RestoreThread(ts);
	if (rc != 0)
		pending_dma_free(d);
	leave(self);
	return ret_int(rc);
}

static PyObject *context_dma(ContextObject *self, PyObject *args, PyObject *kwds, bool write)
{
	static char *kwlist[] = {"mid", "sid", "addr", "buf", "flags", "cpl", "cplp", NULL};
	PyObject *mid_o, *sid_o, *addr_o, *buf, *flags_o = NULL, *cpl = Py_None, *cplp = Py_None;
	unsigned mid, sid, flags = 0;
	unsigned long long addr;

	if (!PyArg_ParseTupleAndKeywords(args, kwds,
					 write ? "OOOO|OOO:dma_write" : "OOOO|OOO:dma_read", kwlist,
					 &mid_o, &sid_o, &addr_o, &buf, &flags_o, &cpl, &cplp))
		return NULL;
	if (uint_arg(mid_o, &mid) < 0 || uint_arg(sid_o, &sid) < 0 ||
	    (flags_o && uint_arg(flags_o, &flags) < 0))
		return NULL;
	{
		PyObject *n = PyNumber_Index(addr_o);

		if (!n)
			return NULL;
		addr = PyLong_AsUnsignedLongLong(n);
		Py_DECREF(n);
		if (addr == (unsigned long long)-1 && PyErr_Occurred())
			return NULL;
	}
	if (check_callable(cpl, "cpl", true) < 0 || check_open(self) < 0)
		return NULL;

	if (cpl == Py_None)
		return dma_blocking(self, write, mid, sid, addr, buf, flags);
	return dma_start(self, write, mid, sid, addr, buf, flags, cpl, cplp);
}

static PyObject *Context_dma_read(ContextObject *self, PyObject *args, PyObject *kwds)
{
	return context_dma(self, args, kwds, false);
}

static PyObject *Context_dma_write(ContextObject *self, PyObject *args, PyObject *kwds)
{
	return context_dma(self, args, kwds, true);
}

/* ---- Context: extensions ---- */

static PyObject *Context_fileno(ContextObject *self, PyObject *unused)
{
	if (check_open(self) < 0)
		return NULL;
	return ret_int(self->poll_fd);
}

static PyObject *Context_process(ContextObject *self, PyObject *unused)
{
	int rc, b = loop_begin(self, "process");
	PyThreadState *ts;

	if (b)
		return b < 0 ? NULL : ret_int(-ENOTCONN);
	drain_wake(self);
	ts = PyEval_SaveThread();
	rc = coreio_ctx_process(self->ctx);
	PyEval_RestoreThread(ts);
	return loop_end(self, rc);
}

static PyObject *Context_caps(ContextObject *self, PyObject *unused)
{
	if (check_open(self) < 0)
		return NULL;
	return ret_int(coreio_ctx_caps(self->ctx));
}

static PyObject *Context_set_reset_callback(ContextObject *self, PyObject *cb)
{
	if (check_callable(cb, "the reset callback", true) < 0 || check_open(self) < 0)
		return NULL;
	Py_XSETREF(self->reset_cb, cb == Py_None ? NULL : Py_NewRef(cb));
	coreio_ctx_set_reset_cb(self->ctx, self->reset_cb ? t_reset : NULL, self);
	Py_RETURN_NONE;
}

static PyObject *Context_close(ContextObject *self, PyObject *unused)
{
	unsigned long me = this_thread();
	bool inside;
	int rc;

	pthread_mutex_lock(&self->mu);
	inside = self->closing && self->closing_thread == me;
	pthread_mutex_unlock(&self->mu);
	if (inside || (self->looping && self->loop_thread == me)) {
		PyErr_SetString(PyExc_RuntimeError,
				"close() called from a callback of the same context");
		return NULL;
	}
	rc = do_disconnect(self);

	if (!self->is_default && self->ctx) {
		/* Wait for threads still inside (they return -ENOTCONN) before freeing. */
		begin_exclusive(self, 0);
		context_free_ctx(self);
		end_exclusive(self);
	}
	if (rc < 0)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *Context_enter(ContextObject *self, PyObject *unused)
{
	if (check_open(self) < 0)
		return NULL;
	return Py_NewRef(self);
}

static PyObject *Context_exit(ContextObject *self, PyObject *args)
{
	return Context_close(self, NULL);
}

static PyObject *Context_get_connected(ContextObject *self, void *closure)
{
	return PyBool_FromLong(self->ctx && coreio_ctx_get_fd(self->ctx) >= 0);
}

static PyObject *Context_get_closed(ContextObject *self, void *closure)
{
	return PyBool_FromLong(self->ctx == NULL);
}

static PyObject *Context_repr(ContextObject *self)
{
	if (!self->ctx)
		return PyUnicode_FromFormat("<coreio.Context closed>");
	return PyUnicode_FromFormat(
	    "<coreio.Context%s %s, fileno %d>", self->is_default ? " (default)" : "",
	    coreio_ctx_get_fd(self->ctx) >= 0 ? "connected" : "not connected", self->poll_fd);
}

/* ---- docstrings ---- */

#define DOC_CONNECT                                                                                \
	"Connect to a VM.\n\n"                                                                     \
	"target is \"host:port\", \"[v6addr]:port\", \"host\" (port 4800) or\n"                    \
	"\"unix:/path\"; None reads the environment variable COREIO_VM, then\n"                    \
	"COREHDL_VM. Returns 0, or a negative errno: -111 (ECONNREFUSED),\n"                       \
	"-2 (ENOENT: the host name does not resolve), -22 (EINVAL: a\n"                            \
	"malformed target), -106 (EISCONN: already connected). After\n"                            \
	"disconnect(), or once the VM went away, it connects again; the\n"                         \
	"callbacks of the old connection are forgotten."
#define DOC_DISCONNECT                                                                             \
	"Close the connection to the VM.\n\n"                                                      \
	"Pending non-blocking DMA completes with -104 (ECONNRESET), from this\n"                   \
	"call; registrations and IRQ levels are forgotten. A loop running in\n"                    \
	"another thread returns -107 (ENOTCONN); the call waits until calls in\n"                  \
	"other threads have returned. It may be called from a callback."
#define DOC_REGISTER                                                                               \
	"Serve MMIO range rid (0..7, in the VM's command-line order).\n\n"                         \
	"read(funcp, addr, buf, flags) fills the bytearray buf (the access\n"                      \
	"size, 1..32 bytes) in place; write(funcp, addr, buf, flags) gets the\n"                   \
	"written bytes in the bytearray buf. addr is the full guest-physical\n"                    \
	"address. readp/writep(funcp, addr, buf1, buf2, flags) serve pair\n"                       \
	"accesses (elements of 1..16 bytes); without them read/write run twice\n"                  \
	"at the same address. A callback returns 0 or None for success; any\n"                     \
	"other int, or an exception (whose traceback is printed), makes the\n"                     \
	"access a bus error. funcp is passed to every callback unchanged.\n"                       \
	"Callbacks run one at a time, in the VM's order, on the thread running\n"                  \
	"the loop (mainloop, processfds, process).\n\n"                                            \
	"Returns 0, or -22 (EINVAL: rid out of range, read or write None),\n"                      \
	"-16 (EBUSY: rid already registered, or claimed by another client),\n"                     \
	"-2 (ENOENT: the VM has no range rid), -110 (ETIMEDOUT), -107 (ENOTCONN)."
#define DOC_MAINLOOP                                                                               \
	"Serve the VM for usec microseconds (negative: until the connection\n"                     \
	"ends; 0: one pass without waiting).\n\n"                                                  \
	"MMIO callbacks and DMA completions run from here. The GIL is released\n"                  \
	"while it waits, so other threads run, and may call irq_update() and\n"                    \
	"the DMA functions. Returns 0 when the time ran out, or a negative\n"                      \
	"errno: -104 (ECONNRESET) when the VM went away, -71 (EPROTO) for a\n"                     \
	"malformed frame, -107 (ENOTCONN) when not connected or disconnected\n"                    \
	"by another thread. KeyboardInterrupt and SystemExit, also when raised\n"                  \
	"by a callback, end it."
#define DOC_IRQ                                                                                    \
	"Set the level of IRQ iid (0..7) of range rid (0..7): state 1 active,\n"                   \
	"0 inactive. Only changes are sent. Any thread, also from callbacks.\n"                    \
	"Returns 0, or -22 (EINVAL), -107 (ENOTCONN), -104 (ECONNRESET)."
#define DOC_DMA_COMMON                                                                             \
	"mid is the IOMMU id (0: guest-physical addresses), sid the IOMMU\n"                       \
	"region id (0..15), addr the address, flags FLAGS_* bus flags. The\n"                      \
	"length is len(buf) in bytes (any contiguous buffer: bytearray, bytes,\n"                  \
	"memoryview slices, array, mmap, numpy arrays), transferred without\n"                     \
	"an extra copy.\n\n"                                                                       \
	"cpl=None blocks (the GIL released) until the transfer is done and\n"                      \
	"returns its result. Otherwise the call returns 0 at once, buf stays\n"                    \
	"exported (it cannot be resized) until cpl(cplp, err) runs from the\n"                     \
	"loop with err 0 or a negative errno.\n\n"                                                 \
	"Returns 0, or -14 (EFAULT: the VM refused a piece; blocking only),\n"                     \
	"-22 (EINVAL: empty buf, bad mid or sid), -107 (ENOTCONN),\n"                              \
	"-104 (ECONNRESET). Any thread, also from callbacks."
#define DOC_DMA_READ  "Read guest memory into the writable buffer buf.\n\n" DOC_DMA_COMMON
#define DOC_DMA_WRITE "Write the bytes of buf into guest memory.\n\n" DOC_DMA_COMMON
#define DOC_PREPAREFDS                                                                             \
	"For a select() loop of your own: returns (nfds, readfds, writefds),\n"                    \
	"new lists holding the given fds and the connection's, and nfds the\n"                     \
	"largest fd + 1 (a negative errno, e.g. -107, when not connected).\n"                      \
	"Pass what select() reports to processfds()."
#define DOC_PROCESSFDS                                                                             \
	"Serve what select() reported readable (and writable): MMIO requests,\n"                   \
	"DMA answers, completions. readable=None tries every connection\n"                         \
	"without blocking. Returns 0 or a negative errno as mainloop()."

PyDoc_STRVAR(Context_doc, "Context()\n--\n\n"
			  "One connection to one VM, with its own registrations: a process may\n"
			  "have several. Its methods are the module's functions (which use the\n"
			  "default context, coreio.default_context()), plus fileno() and\n"
			  "process() for event loops (selectors, asyncio), caps(),\n"
			  "set_reset_callback() and close(). A with block closes it. It may be\n"
			  "subclassed (a device model that is its own connection).");

#define METHOD(name, fn, flags, sig, doc)                                                          \
	{                                                                                          \
		name, (PyCFunction)(void (*)(void))(fn), flags, name sig "\n--\n\n" doc            \
	}

static PyMethodDef Context_methods[] = {
    METHOD("connect", Context_connect, METH_VARARGS | METH_KEYWORDS, "($self, /, target=None)",
	   DOC_CONNECT),
    METHOD("disconnect", Context_disconnect, METH_NOARGS, "($self, /)", DOC_DISCONNECT),
    METHOD("register", Context_register, METH_VARARGS | METH_KEYWORDS,
	   "($self, /, rid, read, write, readp=None, writep=None, funcp=None)", DOC_REGISTER),
    METHOD("mainloop", Context_mainloop, METH_VARARGS | METH_KEYWORDS, "($self, /, usec)",
	   DOC_MAINLOOP),
    METHOD("irq_update", Context_irq_update, METH_VARARGS | METH_KEYWORDS,
	   "($self, /, rid, iid, state)", DOC_IRQ),
    METHOD("dma_read", Context_dma_read, METH_VARARGS | METH_KEYWORDS,
	   "($self, /, mid, sid, addr, buf, flags=0, cpl=None, cplp=None)", DOC_DMA_READ),
    METHOD("dma_write", Context_dma_write, METH_VARARGS | METH_KEYWORDS,
	   "($self, /, mid, sid, addr, buf, flags=0, cpl=None, cplp=None)", DOC_DMA_WRITE),
    METHOD("preparefds", Context_preparefds, METH_VARARGS | METH_KEYWORDS,
	   "($self, /, readfds=None, writefds=None)", DOC_PREPAREFDS),
    METHOD("processfds", Context_processfds, METH_VARARGS | METH_KEYWORDS,
	   "($self, /, readable=None, writable=None)", DOC_PROCESSFDS),
    METHOD("fileno", Context_fileno, METH_NOARGS, "($self, /)",
	   "A file descriptor for selectors, asyncio (loop.add_reader) or any\n"
	   "poll loop: readable when process() has work. It stays the same for\n"
	   "the object's life, across reconnects; do not read or close it."),
    METHOD("process", Context_process, METH_NOARGS, "($self, /)",
	   "Do, without waiting, what the connection has to do: serve requests\n"
	   "(the MMIO callbacks run here), read DMA answers, run completions.\n"
	   "Call it when fileno() is readable. Returns 0 or a negative errno as\n"
	   "mainloop() (-107 when not connected)."),
    METHOD("caps", Context_caps, METH_NOARGS, "($self, /)",
	   "The capability bits negotiated with the VM (CAP_LARGE_DMA,\n"
	   "CAP_CLAIM_ACK, CAP_SHM), 0 for a VM that speaks the base format only,\n"
	   "or -107 (ENOTCONN)."),
    METHOD("set_reset_callback", Context_set_reset_callback, METH_O, "($self, callback, /)",
	   "callback() runs from the loop when the VM is reset (IRQ levels are\n"
	   "then low; registrations stay). None removes it."),
    METHOD("close", Context_close, METH_NOARGS, "($self, /)",
	   "Disconnect and free the library context; the object is unusable\n"
	   "afterwards (the default context only disconnects)."),
    METHOD("__enter__", Context_enter, METH_NOARGS, "($self, /)", "Return self."),
    METHOD("__exit__", Context_exit, METH_VARARGS, "($self, *exc_info)", "Call close()."),
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Context_getset[] = {
    {"connected", (getter)Context_get_connected, NULL, "True while connected to a VM.", NULL},
    {"closed", (getter)Context_get_closed, NULL, "True after close().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject Context_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "coreio.Context",
    .tp_basicsize = sizeof(ContextObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = Context_doc,
    .tp_new = Context_new,
    .tp_dealloc = (destructor)Context_dealloc,
    .tp_traverse = (traverseproc)Context_traverse,
    .tp_clear = (inquiry)Context_clear,
    .tp_repr = (reprfunc)Context_repr,
    .tp_methods = Context_methods,
    .tp_getset = Context_getset,
    .tp_weaklistoffset = offsetof(ContextObject, weakrefs),
};

/* ---- module functions: the reference interface on the default context ---- */

#define FORWARD(name)                                                                              \
	static PyObject *mod_##name(PyObject *m, PyObject *args, PyObject *kwds)                   \
	{                                                                                          \
		return Context_##name(default_context, args, kwds);                                \
	}
FORWARD(connect)
FORWARD(register)
FORWARD(mainloop)
FORWARD(irq_update)
FORWARD(dma_read)
FORWARD(dma_write)
FORWARD(preparefds)
FORWARD(processfds)

static PyObject *mod_disconnect(PyObject *m, PyObject *unused)
{
	return Context_disconnect(default_context, NULL);
}

static PyObject *mod_default_context(PyObject *m, PyObject *unused)
{
	return Py_NewRef(default_context);
}

#define ON_DEFAULT "\n\nUses the default context (default_context())."

static PyMethodDef module_methods[] = {
    METHOD("connect", mod_connect, METH_VARARGS | METH_KEYWORDS, "($module, /, target=None)",
	   DOC_CONNECT ON_DEFAULT),
    METHOD("disconnect", mod_disconnect, METH_NOARGS, "($module, /)", DOC_DISCONNECT ON_DEFAULT),
    METHOD("register", mod_register, METH_VARARGS | METH_KEYWORDS,
	   "($module, /, rid, read, write, readp=None, writep=None, funcp=None)",
	   DOC_REGISTER ON_DEFAULT),
    METHOD("mainloop", mod_mainloop, METH_VARARGS | METH_KEYWORDS, "($module, /, usec)",
	   DOC_MAINLOOP ON_DEFAULT),
    METHOD("irq_update", mod_irq_update, METH_VARARGS | METH_KEYWORDS,
	   "($module, /, rid, iid, state)", DOC_IRQ ON_DEFAULT),
    METHOD("dma_read", mod_dma_read, METH_VARARGS | METH_KEYWORDS,
	   "($module, /, mid, sid, addr, buf, flags=0, cpl=None, cplp=None)",
	   DOC_DMA_READ ON_DEFAULT),
    METHOD("dma_write", mod_dma_write, METH_VARARGS | METH_KEYWORDS,
	   "($module, /, mid, sid, addr, buf, flags=0, cpl=None, cplp=None)",
	   DOC_DMA_WRITE ON_DEFAULT),
    METHOD("preparefds", mod_preparefds, METH_VARARGS | METH_KEYWORDS,
	   "($module, /, readfds=None, writefds=None)", DOC_PREPAREFDS ON_DEFAULT),
    METHOD("processfds", mod_processfds, METH_VARARGS | METH_KEYWORDS,
	   "($module, /, readable=None, writable=None)", DOC_PROCESSFDS ON_DEFAULT),
    METHOD("default_context", mod_default_context, METH_NOARGS, "($module, /)",
	   "The Context the module-level functions use (libcoreio's default\n"
	   "context), for its fileno(), process(), caps() and reset callback."),
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(module_doc, "Device models for CoreIO VMs in Python, over libcoreio.\n\n"
			 "A device model connects to a running VM (coreio-vm), serves the\n"
			 "guest's reads and writes of the MMIO ranges it registers, raises\n"
			 "and lowers interrupt lines and moves data to and from guest memory:\n\n"
			 "    import coreio\n\n"
			 "    regs = bytearray(16)\n\n"
			 "    def read(funcp, addr, buf, flags):\n"
			 "        off = addr & 0xf\n"
			 "        buf[:] = regs[off:off + len(buf)].ljust(len(buf), b'\\0')\n"
			 "        return 0\n\n"
			 "    def write(funcp, addr, buf, flags):\n"
			 "        off = addr & 0xf\n"
			 "        regs[off:off + len(buf)] = buf[:16 - off]\n"
			 "        return coreio.irq_update(rid=0, iid=0, state=1)\n\n"
			 "    coreio.connect(target='127.0.0.1:4300')\n"
			 "    coreio.register(rid=0, read=read, write=write)\n"
			 "    coreio.mainloop(-1)\n\n"
			 "The module-level functions are the interface of the original CoreIO\n"
			 "module (same keywords, arguments, return values: 0 or a negative\n"
			 "errno) on one default connection; coreio.Context objects are\n"
			 "independent connections, several per process. Library messages go\n"
			 "to logging.getLogger('coreio'). See docs/python.md.");

static struct PyModuleDef coreio_module = {
    PyModuleDef_HEAD_INIT, .m_name = "coreio",		.m_doc = module_doc,
    .m_size = -1,	   .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit_coreio(void);

PyMODINIT_FUNC PyInit_coreio(void)
{
	PyObject *m;
	ContextObject *dc;

	if (PyType_Ready(&Context_Type) < 0)
		return NULL;
	m = PyModule_Create(&coreio_module);
	if (!m)
		return NULL;
	if (!default_context) {
		dc = PyObject_GC_New(ContextObject, &Context_Type);
		if (!dc)
			goto fail;
		memset((char *)dc + sizeof(PyObject), 0, sizeof(*dc) - sizeof(PyObject));
		dc->ctx = coreio_default_ctx();
		dc->is_default = true;
		if (context_init_fields(dc) < 0) {
			dc->ctx = NULL;
			Py_DECREF(dc);
			goto fail;
		}
		PyObject_GC_Track(dc);
		default_context = dc; /* one reference kept for good */
	}
	if (PyModule_AddObjectRef(m, "Context", (PyObject *)&Context_Type) < 0 ||
	    PyModule_AddIntConstant(m, "FLAGS_IFETCH", COREIO_FLAGS_IFETCH) < 0 ||
	    PyModule_AddIntConstant(m, "FLAGS_PRIV", COREIO_FLAGS_PRIV) < 0 ||
	    PyModule_AddIntConstant(m, "FLAGS_SECURE", COREIO_FLAGS_SECURE) < 0 ||
	    PyModule_AddIntConstant(m, "CAP_LARGE_DMA", COREIO_CAP_LARGE_DMA_BIT) < 0 ||
	    PyModule_AddIntConstant(m, "CAP_CLAIM_ACK", COREIO_CAP_CLAIM_ACK_BIT) < 0 ||
	    PyModule_AddIntConstant(m, "CAP_SHM", COREIO_CAP_SHM_BIT) < 0 ||
	    PyModule_AddStringConstant(m, "__version__", COREIO_PY_VERSION) < 0)
		goto fail;
	return m;
fail:
	Py_DECREF(m);
	return NULL;
}
