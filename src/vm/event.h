/* coreio-vm: a small epoll event loop with deferred calls, run by the I/O thread. */
#ifndef COREIO_VM_EVENT_H
#define COREIO_VM_EVENT_H

#include <stdint.h>

/* Called when fd is ready; events are the EPOLL* bits that fired. */
typedef void (*event_cb)(int fd, uint32_t events, void *opaque);

/* A function to run later from the loop, outside any other callback. */
typedef void (*event_defer_cb)(void *opaque);

/*
 * Threads: event_run() and every callback run on one thread, the I/O
 * thread. event_mod(), event_del(), event_defer() and event_stop() may also
 * be called from other threads (vCPU threads); they take an internal lock
 * and wake the loop. Callbacks never run with that lock held.
 */

/*
 * Create the loop. Returns 0 or a negative errno from epoll_create1().
 */
int event_init(void);

/* Close the loop and free every handler. */
void event_exit(void);

/*
 * Watch fd for events (EPOLLIN, EPOLLOUT, ...), level-triggered.
 *   cb, opaque  called from event_run() when fd is ready.
 * Returns 0, -EEXIST if fd is already watched, -ENOMEM, or a negative errno
 * from epoll_ctl() (-EPERM for a regular file).
 */
int event_add(int fd, uint32_t events, event_cb cb, void *opaque);

/*
 * Change the events watched on fd (0 pauses it without removing it).
 * Returns 0, -ENOENT if fd is not watched, or a negative errno.
 */
int event_mod(int fd, uint32_t events);

/*
 * Stop watching fd. Safe to call from any callback, also for the fd whose
 * callback is running; a pending event of fd in the same batch is dropped.
 * Returns 0 or -ENOENT if fd is not watched. Does not close fd.
 */
int event_del(int fd);

/*
 * Queue fn(opaque) to run from the loop before it waits again. Used to
 * break re-entrancy: completions never run the next step directly.
 * Returns 0 or -ENOMEM.
 */
int event_defer(event_defer_cb fn, void *opaque);

/*
 * Run until event_stop(). Returns 0 after a stop, or a negative errno if
 * epoll_wait() failed.
 */
int event_run(void);

/* Make event_run() return after the current batch. Any thread; wakes the loop. */
void event_stop(void);

#endif
