/* coreio-vm: shared-memory DMA: the memory map offered to clients (COREIO_CAP_SHM). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vmmio_internal.h"

int shm_queue_map(struct vmmio_conn *c, bool at_hello)
{
	struct vmmio *v = c->v;
	unsigned n = v->nshm;

	for (unsigned i = 0; i < (n ? n : 1); i++) {
		struct coreio_wire_shm_map s = {.gen = v->shm_gen, .count = n};
		uint8_t f[COREIO_WIRE_UNIT];
		int rc;

		if (n) {
			s.gpa = v->shm[i].gpa;
			s.size = v->shm[i].size;
			s.offset = v->shm[i].offset;
			s.index = i;
		}
		coreio__wire_shm_map_encode(f, &s);
		rc = n ? conn_queue_fd(c, f, v->shm[i].fd) : conn_queue(c, f, sizeof(f));
		if (rc < 0)
			return rc;
	}
	v->io->stats.shm_maps++;
	/* Quiet by default: a guest that remaps memory often would flood stderr. */
	if (at_hello || v->verbose || v->trace)
		conn_log(c, "shared memory: sent map generation %llu (%u region(s))",
			 (unsigned long long)v->shm_gen, n);
	return 0;
}

int vmmio_shm_set(struct vmmio *v, const struct vmmio_shm_region *r, unsigned n)
{
	struct vmmio_connset fs = {0};
	struct vmmio_conn *c, *next;
	int err = 0;

	if (n > VMMIO_SHM_MAX)
		return -EINVAL;
	if (!v->any_shm)
		return 0;
	pthread_mutex_lock(&v->io->lock);
	for (unsigned i = 0; i < v->nshm; i++)
		close(v->shm[i].fd);
	v->nshm = 0;
	for (unsigned i = 0; i < n; i++) {
		v->shm[i] = r[i];
		v->shm[i].fd = fcntl(r[i].fd, F_DUPFD_CLOEXEC, 0);
		if (v->shm[i].fd < 0) {
			err = -errno;
			fprintf(stderr, "coreio-vm: shared memory: cannot duplicate fd %d: %s\n",
				r[i].fd, strerror(errno));
			for (unsigned j = 0; j < i; j++)
				close(v->shm[j].fd);
			n = 0;
			break;
		}
	}
	v->nshm = n;
	v->shm_gen++;
	for (c = v->conns; c; c = next) {
		next = c->next; /* a failed queue closes and unlinks c */
		if ((c->caps & COREIO_CAP_SHM) && shm_queue_map(c, false) == 0)
			connset_add_flush(&fs, c);
	}
	pthread_mutex_unlock(&v->io->lock);
	connset_flush(&fs);
	return err;
}
