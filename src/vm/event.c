/* coreio-vm: a small single-threaded epoll event loop with deferred calls. */
#include "event.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
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

static int epfd = -1;
static bool stopped;
static struct event_handler *handlers;	/* live handlers */
static struct event_handler *graveyard; /* deleted, freed after the batch */
static struct event_deferred *defer_head, *defer_tail;

int event_init(void)
{
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		return -errno;
	stopped = false;
	return 0;
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
	while (defer_head) {
		struct event_deferred *d = defer_head;

		defer_head = d->next;
		d->fn(d->opaque);
		free(d);
	}
	defer_tail = NULL;
	if (epfd >= 0)
		close(epfd);
	epfd = -1;
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
	if (find(fd))
		return -EEXIST;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->fd = fd;
	h->cb = cb;
	h->opaque = opaque;
	ev.data.ptr = h;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = -errno;

		free(h);
		return err;
	}
	h->next = handlers;
	handlers = h;
	return 0;
}

int event_mod(int fd, uint32_t events)
{
	struct event_handler *h = find(fd);
	struct epoll_event ev = {.events = events};

	if (!h)
		return -ENOENT;
	ev.data.ptr = h;
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
		return -errno;
	return 0;
}

int event_del(int fd)
{
	struct event_handler **pp;

	for (pp = &handlers; *pp; pp = &(*pp)->next) {
		struct event_handler *h = *pp;

		if (h->fd != fd)
			continue;
		*pp = h->next;
		epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
		h->fd = -1;
		h->next = graveyard;
		graveyard = h;
		return 0;
	}
	return -ENOENT;
}

int event_defer(event_defer_cb fn, void *opaque)
{
	struct event_deferred *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->fn = fn;
	d->opaque = opaque;
	if (defer_tail)
		defer_tail->next = d;
	else
		defer_head = d;
	defer_tail = d;
	return 0;
}

/* Run the deferred calls queued so far (not the ones they queue). */
static void run_deferred(void)
{
	struct event_deferred *d = defer_head;

	defer_head = defer_tail = NULL;
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

	while (!stopped) {
		int n;

		run_deferred();
		if (stopped)
			break;
		n = epoll_wait(epfd, evs, 32, defer_head ? 0 : -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n; i++) {
			struct event_handler *h = evs[i].data.ptr;

			if (h->fd < 0)
				continue; /* deleted earlier in this batch */
			h->cb(h->fd, evs[i].events, h->opaque);
		}
		free_list(graveyard);
		graveyard = NULL;
	}
	return 0;
}

void event_stop(void)
{
	stopped = true;
}
