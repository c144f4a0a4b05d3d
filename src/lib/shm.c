/* libcoreio: shared-memory DMA: guest memory maps the VM sends as fds, and mid 0 DMA by memcpy. */

/*
 * With COREIO_CAP_SHM negotiated (UNIX sockets only), the VM sends its guest
 * memory map on each connection as SHM_MAP frames, one per region, each
 * with the region's fd attached; it sends the map before its hello answer,
 * so the map is complete when connect() returns, and sends a new generation
 * whenever the map changes. The library uses the map of the DMA connection
 * (the copy sent on the control connection is closed unread): a mid 0 DMA
 * whose whole range lies inside one region is a memcpy, done at once.
 * Everything else (mid != 0, outside the map, crossing regions) goes
 * through the socket as before, so the IOMMU keeps applying to mid != 0.
 *
 * A VM cannot hurt the client through the map: every field is checked, a
 * region's fd must be a memory file sealed against shrinking
 * (F_SEAL_SHRINK), so the mapping can never lose its pages under a copy
 * (SIGBUS), and must lie inside the file; whatever fails drops shared
 * memory (logged once per connection) and DMA goes through the socket.
 *
 * coreio_ctx_dma_read_to_fd() and coreio_ctx_dma_write_from_fd() use the
 * same map to move data between guest memory and a file with one
 * pwrite()/pread() on the mapping, no copy through a buffer of the model
 * (-EOPNOTSUPP where a memcpy DMA would go to the socket).
 *
 * Threads: ctx->shm (under ctx->lock) is the map copies use; each copy
 * takes a reference under the lock and copies without it, so replacing
 * the map never blocks and never unmaps memory a copy is using: the last
 * reference unmaps (a file call holds its reference across the system
 * call the same way). The map being received belongs to the DMA connection's
 * receive owner.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

void coreio__shm_warn(struct coreio_ctx *ctx, const char *fmt, ...)
{
	char why[256];
	va_list ap;
	bool already;

	pthread_mutex_lock(&ctx->lock);
	already = ctx->shm_warned;
	ctx->shm_warned = true;
	pthread_mutex_unlock(&ctx->lock);
	if (already)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	coreio__log(ctx, COREIO_LOG_WARNING,
		    "libcoreio: shared-memory DMA off: %s; DMA goes through the socket", why);
}

static void map_free(struct coreio__shm_map *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < m->n; i++)
		if (m->r[i].map)
			munmap(m->r[i].map, m->r[i].maplen);
	free(m);
}

/* Drop one reference of m (lock held); the last one unmaps it. */
static void map_put_locked(struct coreio__shm_map *m)
{
	if (m && --m->refs == 0)
		map_free(m);
}

void coreio__shm_drop_locked(struct coreio_ctx *ctx)
{
	map_put_locked(ctx->shm);
	ctx->shm = NULL;
	map_free(ctx->shm_build);
	ctx->shm_build = NULL;
	ctx->shm_gen = 0;
	ctx->shm_count = 0;
	ctx->shm_bad = false;
}

/* The generation being received failed: forget it, stay on the socket. */
static void build_fail(struct coreio_ctx *ctx, int fd, const char *why)
{
	if (fd >= 0)
		close(fd);
	map_free(ctx->shm_build);
	ctx->shm_build = NULL;
	ctx->shm_bad = true;
	coreio__shm_warn(ctx, "bad memory map from the VM: %s", why);
}

/*
 * Check one region and map its fd. Returns 0, or -1 with why filled (fd
 * untouched either way).
 */
static int map_region(struct coreio_ctx *ctx, int fd, uint64_t gpa, uint64_t size, uint64_t off,
		      struct coreio__shm_region *r, char *why, size_t wl)
{
	const struct coreio__shm_map *b = ctx->shm_build;
	long page = sysconf(_SC_PAGESIZE);
	uint64_t delta;
	struct stat st;
	int seals;
	void *p;

	if (page <= 0)
		page = 4096;
	if (size == 0 || gpa + size < gpa || off > (uint64_t)INT64_MAX ||
	    size > (uint64_t)INT64_MAX - off || size > (uint64_t)SIZE_MAX - (uint64_t)page) {
		snprintf(why, wl, "region gpa 0x%llx size 0x%llx offset 0x%llx is not valid",
			 (unsigned long long)gpa, (unsigned long long)size,
			 (unsigned long long)off);
		return -1;
	}
	for (unsigned j = 0; j < b->n; j++)
		if (gpa < b->r[j].gpa + b->r[j].size && b->r[j].gpa < gpa + size) {
			snprintf(why, wl, "regions %u and %u overlap", j, b->n);
			return -1;
		}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, wl, "the fd of region %u is not a memory file", b->n);
		return -1;
	}
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
		snprintf(why, wl, "the fd of region %u is not sealed against shrinking", b->n);
		return -1;
	}
	if (st.st_size < 0 || off + size > (uint64_t)st.st_size) {
		snprintf(why, wl, "region %u passes the end of its file", b->n);
		return -1;
	}
	delta = off % (uint64_t)page;
	r->maplen = (size_t)(size + delta);
	p = mmap(NULL, r->maplen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd,
		 (off_t)(off - delta));
	if (p == MAP_FAILED) {
		snprintf(why, wl, "cannot map region %u: %s", b->n, strerror(errno));
		return -1;
	}
	r->gpa = gpa;
	r->size = size;
	r->map = p;
	r->host = (uint8_t *)p + delta;
	return 0;
}

/* Forget the map in use and the one being received (the receive owner, no lock held). */
static void drop_maps(struct coreio_ctx *ctx)
{
	map_free(ctx->shm_build);
	ctx->shm_build = NULL;
	pthread_mutex_lock(&ctx->lock);
	map_put_locked(ctx->shm);
	ctx->shm = NULL;
	pthread_mutex_unlock(&ctx->lock);
}

void coreio__shm_frame(struct coreio_ctx *ctx, int i, const struct coreio_wire_msg *m,
		       const int *fds, unsigned nfds)
{
	struct coreio_wire_shm_map sm;
	int fd = nfds >= 1 ? fds[0] : -1;
	bool bad = coreio__wire_shm_map_decode(m, &sm) < 0;
	uint64_t gpa = sm.gpa, size = sm.size, off = sm.offset, idx = sm.index;
	uint64_t gen = sm.gen, count = sm.count;
	struct coreio__shm_map *old = NULL;
	char why[200];
	bool wanted;

	pthread_mutex_lock(&ctx->lock);
	wanted = i == COREIO__CONN_DMA && ctx->connected && !ctx->broken &&
		 ((ctx->conn[i].caps & COREIO_CAP_SHM) ||
		  (ctx->conn[i].hello_wait && (coreio__offered(ctx) & COREIO_CAP_SHM)));
	pthread_mutex_unlock(&ctx->lock);
	if (!wanted) {
		/* The control connection's copy, or a map nobody asked for. */
		if (fd >= 0)
			close(fd);
		return;
	}
	if (bad) {
		/* Fields no map can have: whatever map there was is stale too. */
		drop_maps(ctx);
		build_fail(ctx, fd, "a malformed SHM_MAP frame");
		return;
	}
	if (idx == 0) {
		/* A new generation replaces the map at once: the old one is stale. */
		drop_maps(ctx);
		ctx->shm_gen = gen;
		ctx->shm_count = count;
		ctx->shm_bad = false;
		if (nfds > 1) {
			build_fail(ctx, fd, "more than one fd with a region");
			return;
		}
		if (count > COREIO_WIRE_SHM_MAX_REGIONS) {
			snprintf(why, sizeof(why), "%llu regions (at most %u)",
				 (unsigned long long)count, COREIO_WIRE_SHM_MAX_REGIONS);
			build_fail(ctx, fd, why);
			return;
		}
		if (count == 0) {
			/* An empty map: no shared memory until the next one. */
			if (fd >= 0 || gpa || size || off)
				build_fail(ctx, fd, "an empty map with a region");
			return;
		}
		ctx->shm_build = calloc(1, sizeof(*ctx->shm_build));
		if (!ctx->shm_build) {
			build_fail(ctx, fd, "out of memory");
			return;
		}
	} else if (nfds > 1) {
		build_fail(ctx, fd, "more than one fd with a region");
		return;
	} else if (ctx->shm_bad) {
		/* The rest of a generation that already failed. */
		if (fd >= 0)
			close(fd);
		return;
	} else if (!ctx->shm_build || gen != ctx->shm_gen || count != ctx->shm_count ||
		   idx != ctx->shm_build->n) {
		snprintf(why, sizeof(why), "region %llu of %llu (generation %llu) out of order",
			 (unsigned long long)idx, (unsigned long long)count,
			 (unsigned long long)gen);
		build_fail(ctx, fd, why);
		return;
	}
	if (fd < 0) {
		build_fail(ctx, fd, "a region without its fd");
		return;
	}
	if (map_region(ctx, fd, gpa, size, off, &ctx->shm_build->r[ctx->shm_build->n], why,
		       sizeof(why)) < 0) {
		build_fail(ctx, fd, why);
		return;
	}
	close(fd); /* the mapping keeps the memory */
	ctx->shm_build->n++;
	if (ctx->shm_build->n < count)
		return;
	pthread_mutex_lock(&ctx->lock);
	old = ctx->shm;
	ctx->shm = ctx->shm_build;
	ctx->shm->refs = 1;
	ctx->shm_build = NULL;
	map_put_locked(old);
	pthread_mutex_unlock(&ctx->lock);
}

/*
 * The host address of [addr, addr + len) when it lies inside one region of
 * the shared map, with a reference on the map taken (*mp; give it back with
 * shm_put()). NULL when there is no such region: *err is then -ENOTCONN,
 * -ECONNRESET (broken), or -ENOENT (no map, not negotiated, not inside one
 * region). Takes ctx->lock.
 */
static uint8_t *shm_get(struct coreio_ctx *ctx, uint64_t addr, size_t len,
			struct coreio__shm_map **mp, int *err)
{
	struct coreio__shm_map *m;
	uint8_t *host = NULL;

	pthread_mutex_lock(&ctx->lock);
	m = ctx->shm;
	*err = coreio__down_locked(ctx);
	if (*err) {
		pthread_mutex_unlock(&ctx->lock);
		return NULL;
	}
	if (!m || !(ctx->conn[COREIO__CONN_DMA].caps & COREIO_CAP_SHM)) {
		*err = -ENOENT;
		pthread_mutex_unlock(&ctx->lock);
		return NULL;
	}
	for (unsigned i = 0; i < m->n; i++) {
		const struct coreio__shm_region *r = &m->r[i];

		if (addr >= r->gpa && addr - r->gpa < r->size && len <= r->size - (addr - r->gpa)) {
			host = r->host + (addr - r->gpa);
			break;
		}
	}
	if (!host) {
		*err = -ENOENT;
		pthread_mutex_unlock(&ctx->lock);
		return NULL;
	}
	m->refs++;
	pthread_mutex_unlock(&ctx->lock);
	*mp = m;
	return host;
}

/* Give back the reference shm_get() took (the last one unmaps). Takes ctx->lock. */
static void shm_put(struct coreio_ctx *ctx, struct coreio__shm_map *m)
{
	pthread_mutex_lock(&ctx->lock);
	map_put_locked(m);
	pthread_mutex_unlock(&ctx->lock);
}

int coreio__shm_copy(struct coreio_ctx *ctx, bool write, uint64_t addr, size_t len, void *buf)
{
	struct coreio__shm_map *m;
	uint8_t *host;
	int err;

	host = shm_get(ctx, addr, len, &m, &err);
	if (!host)
		return -ENOENT;
	if (write)
		memcpy(host, buf, len);
	else
		memcpy(buf, host, len);
	shm_put(ctx, m);
	return 0;
}

/*
 * Shared-memory DMA to and from a file: pread() straight into the mapping
 * of guest memory, pwrite() straight from it. The map's reference is held
 * across the system calls, so a new generation (or a disconnect) never
 * unmaps memory a call is using. The file side loops over EINTR and short
 * transfers; it stops early only at end of file (pread() returning 0, or
 * a pwrite() that wrote nothing).
 */
static ssize_t shm_fd(coreio_ctx_t *ctx, bool to_guest, unsigned mid, uint64_t addr, size_t len,
		      int fd, uint64_t off)
{
	struct coreio__shm_map *m;
	uint8_t *host;
	size_t done = 0;
	int err;

	if (!ctx || fd < 0 || mid >= COREIO_WIRE_MAX_MID || len > (size_t)SSIZE_MAX ||
	    off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
		return -EINVAL;
	if (mid != 0)
		return -EOPNOTSUPP; /* the IOMMU applies: through the socket */
	host = shm_get(ctx, addr, len, &m, &err);
	if (!host)
		return err == -ENOENT ? -EOPNOTSUPP : err;
	while (done < len) {
		ssize_t n = to_guest ? pread(fd, host + done, len - done, (off_t)(off + done))
				     : pwrite(fd, host + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = -errno;
			shm_put(ctx, m);
			return err;
		}
		if (n == 0)
			break; /* end of file: the caller sees the short count */
		done += (size_t)n;
	}
	shm_put(ctx, m);
	return (ssize_t)done;
}

ssize_t coreio_ctx_dma_read_to_fd(coreio_ctx_t *ctx, unsigned mid, uint64_t addr, size_t len,
				  int fd, uint64_t off)
{
	return shm_fd(ctx, false, mid, addr, len, fd, off);
}

ssize_t coreio_ctx_dma_write_from_fd(coreio_ctx_t *ctx, unsigned mid, uint64_t addr, size_t len,
				     int fd, uint64_t off)
{
	return shm_fd(ctx, true, mid, addr, len, fd, off);
}
