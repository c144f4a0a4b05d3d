/* coreio-vm: a small epoll event loop with deferred calls, run by the I/O thread. */
#include "event.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct event_handler {
	int fd; /* -1 once deleted */
	event_cb cb;
	void *opaque;
	struct event_handler *next;
};

struct event_deferred {
	event_defer_cb fn;
	void *opaque;
	struct event_deferred *next;
};

/*
 * Only the I/O thread runs event_run() and the callbacks. Other threads (the
 * vCPUs) may call event_mod(), event_del(), event_defer() and event_stop():
 * the handler lists and the deferred queue are guarded by lock, which is
 * never held while a callback runs, and wake_fd wakes epoll_wait().
 */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int epfd = -1;
static int wake_fd = -1;
static atomic_bool stopped;
static struct event_handler *handlers;	/* live handlers */
static struct event_handler *graveyard; /* deleted, freed after the batch */
static struct event_deferred *defer_head, *defer_tail;

int event_init(void)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};

	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		return -errno;
	wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (wake_fd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, wake_fd, &ev) < 0) {
		int err = -errno;

		if (wake_fd >= 0)
			close(wake_fd);
		close(epfd);
		wake_fd = epfd = -1;
		return err;
	}
	atomic_store(&stopped, false);
	return 0;
}

/* Make a sleeping epoll_wait() return (any thread). */
static void wake(void)
{
	uint64_t one = 1;

	if (wake_fd >= 0 && write(wake_fd, &one, sizeof(one)) < 0) {
		/* The counter is already non-zero: the loop wakes anyway. */
	}
}

static void free_list(struct event_handler *h)
{
	while (h) {
		struct event_handler *n = h->next;

		free(h);
		h = n;
	}
}

void event_exit(void)
{
	free_list(handlers);
	free_list(graveyard);
	handlers = graveyard = NULL;
	/* Deferred calls release memory (closed connections): run them, do not drop them. */
	for (;;) {
		struct event_deferred *d;

		pthread_mutex_lock(&lock);
		d = defer_head;
		if (d) {
			defer_head = d->next;
			if (!defer_head)
				defer_tail = NULL;
		}
		pthread_mutex_unlock(&lock);
		if (!d)
			break;
		d->fn(d->opaque);
		free(d);
	}
	if (wake_fd >= 0)
		close(wake_fd);
	if (epfd >= 0)
		close(epfd);
	epfd = wake_fd = -1;
}

static struct event_handler *find(int fd)
{
	for (struct event_handler *h = handlers; h; h = h->next)
		if (h->fd == fd)
			return h;
	return NULL;
}

int event_add(int fd, uint32_t events, event_cb cb, void *opaque)
{
	struct epoll_event ev = {.events = events};
	struct event_handler *h;

	if (fd < 0 || !cb)
		return -EINVAL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->fd = fd;
	h->cb = cb;
	h->opaque = opaque;
	ev.data.ptr = h;
	pthread_mutex_lock(&lock);
	if (find(fd)) {
		pthread_mutex_unlock(&lock);
		free(h);
		return -EEXIST;
	}
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = -errno;

		pthread_mutex_unlock(&lock);
		free(h);
		return err;
	}
	h->next = handlers;
	handlers = h;
	pthread_mutex_unlock(&lock);
	return 0;
}

int event_mod(int fd, uint32_t events)
{
	struct event_handler *h;
	struct epoll_event ev = {.events = events};
	int rc = 0;

	pthread_mutex_lock(&lock);
	h = find(fd);
	if (!h) {
		rc = -ENOENT;
	} else {
		ev.data.ptr = h;
		if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
			rc = -errno;
	}
	pthread_mutex_unlock(&lock);
	return rc;
}

int event_del(int fd)
{
	struct event_handler **pp;

	pthread_mutex_lock(&lock);
	for (pp = &handlers; *pp; pp = &(*pp)->next) {
		struct event_handler *h = *pp;

		if (h->fd != fd)
			continue;
		*pp = h->next;
		epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
		h->fd = -1;
		h->next = graveyard;
		graveyard = h;
		pthread_mutex_unlock(&lock);
		return 0;
	}
	pthread_mutex_unlock(&lock);
	return -ENOENT;
}

int event_defer(event_defer_cb fn, void *opaque)
{
	struct event_deferred *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->fn = fn;
	d->opaque = opaque;
	pthread_mutex_lock(&lock);
	if (defer_tail)
		defer_tail->next = d;
	else
		defer_head = d;
	defer_tail = d;
	pthread_mutex_unlock(&lock);
	wake();
	return 0;
}

/* Run the deferred calls queued so far (not the ones they queue). */
static void run_deferred(void)
{
	struct event_deferred *d;

	pthread_mutex_lock(&lock);
	d = defer_head;
	defer_head = defer_tail = NULL;
	pthread_mutex_unlock(&lock);
	while (d) {
		struct event_deferred *n = d->next;

		d->fn(d->opaque);
		free(d);
		d = n;
	}
}

int event_run(void)
{
	struct epoll_event evs[32];

	while (!atomic_load(&stopped)) {
		struct event_handler *dead;
		bool more;
		int n;

		run_deferred();
		if (atomic_load(&stopped))
			break;
		pthread_mutex_lock(&lock);
		more = defer_head != NULL;
		pthread_mutex_unlock(&lock);
		n = epoll_wait(epfd, evs, 32, more ? 0 : -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n; i++) {
			struct event_handler *h = evs[i].data.ptr;
			event_cb cb;
			void *opaque;
			int fd;

			if (!h) {
				uint64_t cnt;

				if (read(wake_fd, &cnt, sizeof(cnt)) < 0) {
					/* Nothing to read: another wake-up consumed it. */
				}
				continue;
			}
			pthread_mutex_lock(&lock);
			fd = h->fd;
			cb = h->cb;
			opaque = h->opaque;
			pthread_mutex_unlock(&lock);
			if (fd < 0)
				continue; /* deleted earlier in this batch */
			cb(fd, evs[i].events, opaque);
		}
		pthread_mutex_lock(&lock);
		dead = graveyard;
		graveyard = NULL;
		pthread_mutex_unlock(&lock);
		free_list(dead);
	}
	return 0;
}

void event_stop(void)
{
	atomic_store(&stopped, true);
	wake();
}
