/* The fake host shared by the virtio unit tests: guest memory, DMA and IRQ ops that count and
 * record, posted writes held like libcoreio's, a hook for the guest acting during a DMA. */
#ifndef COREIO_TESTS_VIO_FAKE_H
#define COREIO_TESTS_VIO_FAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "virtio.h"

#define VIO_FAKE_MAX_POSTS 4096u /* posted writes in one test (a test fails beyond) */
#define VIO_FAKE_MAX_IRQ   1024u /* irq calls recorded in ev[] (later ones only counted) */
#define VIO_FAKE_MAX_READS 256u	 /* blocking reads whose length is recorded (a readv: its sum) */
#define VIO_FAKE_MAX_ORDER 4096u /* writes whose arrival in memory is recorded */
#define VIO_FAKE_MAX_LOG   64u	 /* log messages kept (a test fails beyond) */
#define VIO_FAKE_LINES	   8u	 /* IRQ lines */

/* One posted write, as the VM would see it: applied in order, answered later. */
struct vio_fake_post {
	uint64_t gpa;
	size_t len;
	const void *buf;
	void (*done)(void *, int);
	void *arg;
	int err; /* 0, or -EFAULT when it did not fit in memory */
};

/* One call of an irq op: line set to level; setlvl: through irq_set (line 0), not irq_line. */
struct vio_fake_irq {
	unsigned line, level;
	bool setlvl;
};

/* Where the hook runs: inside the hook_at-th blocking read (before or after the posted
 * writes reach memory), or after the hook_at-th blocking write reached memory. */
enum vio_fake_hook_when { VIO_FAKE_HOOK_READ, VIO_FAKE_HOOK_READ_APPLIED, VIO_FAKE_HOOK_WRITE };

struct vio_fake {
	uint8_t *mem; /* guest memory [0, mem_size) */
	size_t mem_size;
	/* Posted writes: pw[0 .. applied) are in memory, pw[0 .. answered) had their completion. */
	struct vio_fake_post pw[VIO_FAKE_MAX_POSTS];
	unsigned npw, applied, answered;
	bool no_post;	     /* dma_write_post refuses (-EOPNOTSUPP), as over shared memory */
	bool hold_posts;     /* posted writes reach memory only in vio_fake_process() */
	bool posts_in_range; /* a posted write outside memory fails the test */
	/* Counters of the ops' calls (a dma_readv counts once in reads, one round trip, and in
	 * readvs). */
	unsigned reads, writes, posts, fd_calls, readvs;
	size_t read_len[VIO_FAKE_MAX_READS]; /* length of each blocking read */
	uint64_t order[VIO_FAKE_MAX_ORDER];  /* gpa of each write in the order it reached memory */
	unsigned norder;
	/* irq_set: the level, its rising edges and changes. */
	unsigned level, raises, irq_changes;
	/* Every irq op call, and per line (irq_set being line 0) the level and rising edges as
	 * the VM sees them, and irq_line(line, 1) calls. */
	struct vio_fake_irq ev[VIO_FAKE_MAX_IRQ];
	unsigned nev;
	unsigned line_level[VIO_FAKE_LINES], edges[VIO_FAKE_LINES], pulses[VIO_FAKE_LINES];
	int line_err;			     /* irq_line fails with this */
	void (*on_raise)(struct vio_fake *); /* runs when irq_set raises the level */
	/* The guest acting during a DMA: hook runs once (then hook_fired), where when says. */
	void (*hook)(struct vio_fake *);
	enum vio_fake_hook_when when;
	unsigned hook_at, hook_runs;
	bool hook_fired;
	/* The fd ops work inside [shm_lo, shm_hi) only (the shared memory). */
	uint64_t shm_lo, shm_hi;
	/* Messages of vio_fake_log_cb() (opaque: this fake). */
	struct {
		int level;
		char msg[VIO_LOG_MAX + 16];
	} log[VIO_FAKE_MAX_LOG];
	unsigned nlog;
	void *log_opaque_seen;
};

/* Host ops on a struct vio_fake (the opaque): DMA and irq_set only. */
extern const struct vio_host_ops vio_fake_host;
/* ... with irq_line. */
extern const struct vio_host_ops vio_fake_host_lines;
/* ... with dma_write_post. */
extern const struct vio_host_ops vio_fake_host_posting;
/* ... with irq_line and dma_write_post. */
extern const struct vio_host_ops vio_fake_host_all;
/* ... with dma_write_post and the fd ops (dma_read_to_fd, dma_write_from_fd). */
extern const struct vio_host_ops vio_fake_host_fd;
/* ... with dma_write_post and dma_readv (its segments copied one after the other, in order). */
extern const struct vio_host_ops vio_fake_host_readv;

/* Set h up (all zero but mem_size bytes of zeroed guest memory). */
void vio_fake_init(struct vio_fake *h, size_t mem_size);

/* Free h's guest memory. */
void vio_fake_fini(struct vio_fake *h);

/* Whether [gpa, gpa + len) is inside guest memory. */
bool vio_fake_in_mem(const struct vio_fake *h, uint64_t gpa, size_t len);

/* Every posted write not yet in memory reaches it, in order. */
void vio_fake_apply(struct vio_fake *h);

/*
 * The host's event processing (libcoreio's processfds): everything posted reaches memory, then
 * the completions run, in order. Completions may post more; those wait for the next call.
 * Returns the completions run.
 */
unsigned vio_fake_process(struct vio_fake *h);

/* vio_fake_process() until no completion is left. */
void vio_fake_drain(struct vio_fake *h);

/* Posted writes whose completion has not run. */
unsigned vio_fake_pending(const struct vio_fake *h);

/* A vio_dev log callback that keeps the messages in h (its opaque). */
void vio_fake_log_cb(void *opaque, int level, const char *msg);

/* A register write of n bytes at off through d's transport; fails the test on an error. */
void vio_fake_wr(struct vio_dev *d, uint64_t off, unsigned n, uint64_t v);

/* A register read of n bytes at off through d's transport; fails the test on an error. */
uint64_t vio_fake_rd(struct vio_dev *d, uint64_t off, unsigned n);

/* A 32-bit register write at off through d's transport; fails the test on an error. */
void vio_fake_wr32(struct vio_dev *d, uint64_t off, uint32_t v);

/* A 32-bit register read at off through d's transport; fails the test on an error. */
uint32_t vio_fake_rd32(struct vio_dev *d, uint64_t off);

/* Arm the hook: fn runs once, at the at-th blocking read or write as when says. */
void vio_fake_hook(struct vio_fake *h, void (*fn)(struct vio_fake *), enum vio_fake_hook_when when,
		   unsigned at);

#endif
