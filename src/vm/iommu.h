/* coreio-vm: the IOMMU translation core: registers, per-sid contexts, page walk, IOTLB, faults. */
#ifndef COREIO_VM_IOMMU_H
#define COREIO_VM_IOMMU_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "mem.h"

/* The register map and page-table format are specified in docs/iommu.md. */
#define IOMMU_MAX_ID	  7u /* IOMMU ids (mids) are 1..7; mid 0 is direct DMA */
#define IOMMU_NSIDS	  16u
#define IOMMU_REG_SIZE	  0x1000ull
#define IOMMU_TLB_ENTRIES 32u
#define IOMMU_MAX_SEGS	  8u /* segments of one mapped DMA piece (16320 bytes span <= 5 pages) */
#define IOMMU_ID_VALUE	  0x554d4f49u /* "IOMU" in memory order */
#define IOMMU_VERSION	  1u

/* Register offsets. */
#define IOMMU_REG_ID	     0x000 /* RO: ID_VALUE | VERSION << 32 */
#define IOMMU_REG_CAP	     0x008 /* RO: see IOMMU_CAP_* */
#define IOMMU_REG_FCTL	     0x010 /* RW: bit 0 fault interrupt enable */
#define IOMMU_REG_FSTS	     0x018 /* RW1C: bit 0 fault latched, bit 1 overflow */
#define IOMMU_REG_FADDR	     0x020 /* RO: DMA address (IOVA) of the latched fault */
#define IOMMU_REG_FINFO	     0x028 /* RO: sid, direction, reason, level of the latched fault */
#define IOMMU_REG_FCOUNT     0x030 /* RO: every fault since start */
#define IOMMU_REG_INV_ADDR   0x038 /* RW: IOVA of a page invalidation */
#define IOMMU_REG_INV_CMD    0x040 /* WO: an invalidation command, reads 0 */
#define IOMMU_REG_TLB_HITS   0x048 /* RO */
#define IOMMU_REG_TLB_MISSES 0x050 /* RO */
#define IOMMU_REG_TLB_USED   0x058 /* RO: valid IOTLB entries now */
#define IOMMU_REG_CTX_BASE   0x100 /* context of sid s at 0x100 + 16 * s */
#define IOMMU_REG_CTX_STRIDE 0x10
#define IOMMU_REG_CTX_CTRL   0x0 /* RW: bit 0 enable */
#define IOMMU_REG_CTX_ROOT   0x8 /* RW: bits 12..51 the PML4 table's guest-physical address */

#define IOMMU_FCTL_IE	    1ull
#define IOMMU_FSTS_FAULT    1ull
#define IOMMU_FSTS_OVERFLOW 2ull
#define IOMMU_CTX_EN	    1ull
#define IOMMU_CAP_2M	    (1ull << 8)
#define IOMMU_CAP_1G	    (1ull << 9)

/* INV_CMD bits 0..1: the type; bits 8..11: the sid of types 2 and 3. */
#define IOMMU_INV_ALL  1u
#define IOMMU_INV_SID  2u
#define IOMMU_INV_PAGE 3u

/* FINFO: bits 0..3 sid, bit 8 write (the DMA wrote guest memory), 16..23 reason, 24..26 level. */
#define IOMMU_FINFO_WRITE	 (1ull << 8)
#define IOMMU_FINFO_REASON_SHIFT 16
#define IOMMU_FINFO_LEVEL_SHIFT	 24

/* Fault reasons (FINFO bits 16..23). */
enum iommu_fault_reason {
	IOMMU_F_NOT_PRESENT = 1,    /* an entry of the walk has P = 0 */
	IOMMU_F_READ_ONLY = 2,	    /* a write through an entry with W = 0 */
	IOMMU_F_CTX_DISABLED = 3,   /* the sid's context is not enabled */
	IOMMU_F_BAD_ADDRESS = 4,    /* IOVA at or above 2^48 */
	IOMMU_F_TABLE_NOT_RAM = 5,  /* a page table of the walk lies outside guest RAM */
	IOMMU_F_TARGET_NOT_RAM = 6, /* the translated page lies outside guest RAM */
	IOMMU_F_DIRECT_REFUSED = 7, /* mid 0 DMA from a range bound to this IOMMU */
	IOMMU_F_WRONG_ID = 8,	    /* a bound range's client used another mid or sid */
	IOMMU_F_INJECTED = 9,	    /* an iommu-fault rule refused it (docs/fault-injection.md) */
};

/* Page-table entry bits. */
#define IOMMU_PTE_P	    1ull
#define IOMMU_PTE_W	    2ull
#define IOMMU_PTE_PS	    (1ull << 7)
#define IOMMU_PTE_ADDR_MASK 0x000ffffffffff000ull

/* Called with the new level of the fault interrupt whenever it changes. */
typedef void (*iommu_irq_fn)(void *opaque, bool level);

/* One cached translation. */
struct iommu_tlb_entry {
	bool valid;
	bool writable;
	uint8_t sid;
	uint8_t shift; /* 12, 21 or 30 */
	uint64_t iova; /* page-aligned */
	uint64_t pa;   /* page-aligned */
};

/* A piece of guest-physical memory a DMA touches. */
struct iommu_seg {
	uint64_t gpa;
	uint32_t len;
};

/* One IOMMU. Its lock guards every field below it. */
struct iommu {
	pthread_mutex_t lock;
	unsigned id;
	int irq_line; /* reported in CAP; -1: none */
	const struct mem *mem;
	iommu_irq_fn irq;
	void *irq_opaque;
	bool irq_level;
	uint64_t ctx_ctrl[IOMMU_NSIDS];
	uint64_t ctx_root[IOMMU_NSIDS];
	uint64_t fctl, fsts, faddr, finfo, fcount;
	uint64_t inv_addr;
	uint64_t tlb_hits, tlb_misses;
	struct iommu_tlb_entry tlb[IOMMU_TLB_ENTRIES];
	unsigned tlb_next; /* round-robin replacement */
};

/* The IOMMUs of a VM, by id (unit[0] is always NULL: mid 0 is direct). */
struct iommu_set {
	struct iommu *unit[IOMMU_MAX_ID + 1];
};

/*
 * Initialise u in its reset state (every context disabled, IOTLB empty).
 *   id        its mid, 1..IOMMU_MAX_ID
 *   irq_line  the guest line of its fault interrupt (for CAP), -1 for none
 *   mem       guest RAM, where page tables and DMA targets live
 *   irq       called with the interrupt level on each change (may be NULL)
 */
void iommu_init(struct iommu *u, unsigned id, int irq_line, const struct mem *mem, iommu_irq_fn irq,
		void *irq_opaque);

/* Destroy the lock of u. */
void iommu_destroy(struct iommu *u);

/*
 * Read size bytes (1, 2, 4 or 8) at register offset off.
 * Returns the value; an access that is not inside one 8-byte register, or a
 * reserved offset, reads 0.
 */
uint64_t iommu_reg_read(struct iommu *u, uint64_t off, unsigned size);

/*
 * Write size bytes (1, 2, 4 or 8) of val at register offset off. Accesses
 * that are not inside one 8-byte register, and read-only registers, are
 * ignored. May change the interrupt level (the callback runs inside).
 */
void iommu_reg_write(struct iommu *u, uint64_t off, unsigned size, uint64_t val);

/*
 * Translate the DMA [iova, iova + len) of sid through u.
 *   write  true when the DMA writes guest memory
 *   seg    receives the guest-physical segments in order (adjacent pages
 *          that are contiguous in guest memory are merged); each is inside RAM
 *   max    room in seg
 * Returns the number of segments (>= 1), -EFAULT after recording a fault
 * (the first failing address) and updating the interrupt, -EINVAL for a sid
 * >= IOMMU_NSIDS or len 0, -ENOSPC when seg is too small (nothing recorded).
 */
int iommu_map(struct iommu *u, unsigned sid, uint64_t iova, uint64_t len, bool write,
	      struct iommu_seg *seg, unsigned max);

/*
 * Record a fault found outside the page walk (a refused DMA of a range
 * bound to u, or one an iommu-fault rule injects, IOMMU_F_INJECTED)
 * exactly as a translation fault: FSTS, FADDR, FINFO, FCOUNT and the
 * interrupt.
 */
void iommu_record_fault(struct iommu *u, unsigned sid, uint64_t addr, bool write,
			enum iommu_fault_reason reason);

/*
 * Map one DMA piece of a client for the vMMIO service.
 *   set        the VM's IOMMUs (NULL: none)
 *   bound      the IOMMU the client's range is bound to (--vmmio iommu=N), 0 if none
 *   bound_sid  the sid it is bound to (sid=S), -1 for any
 *   mid, sid   what the client asked for
 * mid 0 of an unbound client gives one segment {addr, len} (the caller
 * checks it against RAM). Returns the number of segments, -EFAULT for a
 * translation fault or a refused DMA (recorded in the IOMMU concerned),
 * -EINVAL for a mid with no IOMMU, -ENOSPC when seg is too small.
 */
int iommu_dma_map(struct iommu_set *set, unsigned bound, int bound_sid, unsigned mid, unsigned sid,
		  uint64_t addr, uint64_t len, bool write, struct iommu_seg *seg, unsigned max);

#endif
