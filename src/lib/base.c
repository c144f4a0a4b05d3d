/* libcoreio: the small pieces every library file uses: the log callback, clocks, wake-ups. */
#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

void coreio__log(struct coreio_ctx *ctx, int level, const char *fmt, ...)
{
	void (*fn)(void *, int, const char *);
	void *opaque;
	char msg[512];
	va_list ap;

	pthread_mutex_lock(&ctx->lock);
	fn = ctx->log_fn;
	opaque = ctx->log_opaque;
	pthread_mutex_unlock(&ctx->lock);
	if (!fn)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fn(opaque, level, msg);
}

int coreio_ctx_set_log(coreio_ctx_t *ctx, void (*fn)(void *opaque, int level, const char *msg),
		       void *opaque)
{
	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	ctx->log_fn = fn;
	ctx->log_opaque = opaque;
	pthread_mutex_unlock(&ctx->lock);
	return 0;
}

int coreio_set_log(void (*fn)(void *opaque, int level, const char *msg), void *opaque)
{
	return coreio_ctx_set_log(coreio_default_ctx(), fn, opaque);
}

long long coreio__now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long coreio__now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The context whose coreio_ctx_process() the calling thread is inside, if any. */
static __thread const struct coreio_ctx *in_process;

const struct coreio_ctx *coreio__enter_process(const struct coreio_ctx *ctx)
{
	const struct coreio_ctx *outer = in_process;

	in_process = ctx;
	return outer;
}

void coreio__leave_process(const struct coreio_ctx *outer)
{
	in_process = outer;
}

void coreio__wake(struct coreio_ctx *ctx)
{
	uint64_t one = 1;

	/* The loop itself needs no wake-up: it looks again before it sleeps. */
	if (in_process == ctx)
		return;
	if (ctx->wake_fd >= 0 && write(ctx->wake_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is already non-zero, the loop will wake. */
	}
}
