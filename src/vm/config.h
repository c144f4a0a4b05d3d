/* coreio-vm: the command line, parsed and validated into a struct vm_config. */
#ifndef COREIO_VM_CONFIG_H
#define COREIO_VM_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_MAX_RANGES   64
#define CONFIG_MAX_IRQS	    8	/* lines per range: the reference's iid 0..7 */
#define CONFIG_MAX_PER_PORT 8	/* ranges per port: rid 0..7 */
#define CONFIG_NAME_MAX	    108 /* a UNIX socket path, with its NUL */
#define CONFIG_DEFAULT_MEM  (64ull << 20)
#define CONFIG_MIN_MEM	    (1ull << 20)
#define CONFIG_MAX_MEM	    (64ull << 30)
#define CONFIG_PATH_MAX	    4096 /* --kernel path, with its NUL */
#define CONFIG_APPEND_MAX   256	 /* --append text, with its NUL (the boot info's cmdline) */

#define CONFIG_MAX_ALLOW	    8	    /* allow-uid= / allow-gid= entries of a port */
#define CONFIG_MAX_DMA_WINDOWS	    8	    /* dma=START+SIZE windows of a port */
#define CONFIG_MAX_CONNS_DEFAULT    64	    /* max-conns= default: connections of a port */
#define CONFIG_MAX_CONNS_MAX	    4096    /* max-conns= upper bound */
#define CONFIG_TIMEOUT_MAX	    3600000 /* timeout=MS and --peer-timeout MS upper bound */
#define CONFIG_PEER_TIMEOUT_DEFAULT 10000   /* --peer-timeout default, ms */

/* dma= of a port (docs/security.md): what its clients' DMA may touch. */
enum dma_policy {
	DMA_RAM = 0, /* dma=ram (the default): all of guest memory */
	DMA_NONE,    /* dma=none: every DMA is refused */
	DMA_WINDOWS, /* dma=START+SIZE[:...]: only inside these guest-physical windows */
};

/* One guest-physical DMA window [start, start + size) (size > 0, no wrap). */
struct dma_window {
	uint64_t start, size;
};

enum port_kind {
	PORT_TCP = 0,	/* port=N */
	PORT_TCP_ANY,	/* port=0: kernel-chosen, this range alone */
	PORT_TCP_LABEL, /* port=@LABEL: kernel-chosen, shared by the label */
	PORT_UNIX,	/* port=unix:/path */
};

struct range_config {
	uint64_t start;
	uint64_t size;
	int irqs[CONFIG_MAX_IRQS];
	unsigned nirq;
	enum port_kind kind;
	unsigned tcp_port;	    /* PORT_TCP */
	char name[CONFIG_NAME_MAX]; /* PORT_TCP_LABEL: the label; PORT_UNIX: the path */
	bool acked;		    /* writes=acked */
	/* --accel mpqemu or vfio-user: START "pci", a PCI device whose BAR 0 is the range. */
	bool pci;
	bool virtio;			   /* profile=virtio: the virtio PCI capabilities */
	uint16_t pci_vendor, pci_device;   /* pci=VVVV:DDDD */
	uint16_t subsys_vendor, subsys_id; /* subsys=VVVV:SSSS */
	uint32_t pci_class;		   /* class=0xCCSSPP */
	uint8_t pci_rev;		   /* rev=N */
	bool hotplug;			   /* hotplug=on: replaced through --mpqemu-control */
	uint8_t msix_mode;		   /* msix=: CONFIG_MSIX_AUTO (not given), _ON, _OFF */
	bool msix;			   /* vfio-user: the device offers MSI-X (resolved) */
	unsigned iommu;			   /* iommu=N: DMA only through IOMMU N (0: not bound) */
	int iommu_sid;			   /* sid=S with iommu=N, or -1: any sid */
	bool shm;			   /* shm=on: shared-memory DMA (unix ports only) */
	unsigned busy_us;   /* poll=busy:USEC: spin this long (kvm); poll=adaptive:USEC:
			     * at most this long; poll=block: 0 */
	bool poll_adaptive; /* poll=adaptive (the default): the spin adapts */
	bool coalesce;	    /* coalesce=on: KVM coalesced MMIO for writes (kvm) */
	/* Access control and limits (docs/security.md). Per port, except
	 * timeout_ms: every range of a port gives the same values. */
	uint32_t allow_uid[CONFIG_MAX_ALLOW]; /* allow-uid=UID[:UID...] (unix ports) */
	unsigned nallow_uid;
	uint32_t allow_gid[CONFIG_MAX_ALLOW]; /* allow-gid=GID[:GID...] (unix ports) */
	unsigned nallow_gid;
	enum dma_policy dma;				   /* dma= */
	struct dma_window dma_win[CONFIG_MAX_DMA_WINDOWS]; /* DMA_WINDOWS */
	unsigned ndma_win;
	unsigned max_conns;  /* max-conns=N, default CONFIG_MAX_CONNS_DEFAULT */
	unsigned timeout_ms; /* timeout=MS: answer deadline of this range; 0: none */
	bool tls;	     /* tls=on: TLS 1.3 on this (TCP) port, per port */
};

#define CONFIG_MSIX_AUTO 0
#define CONFIG_MSIX_ON	 1
#define CONFIG_MSIX_OFF	 2

#define CONFIG_BUSY_US_DEFAULT	   50 /* poll=busy without :USEC */
#define CONFIG_BUSY_US_MAX	   10000
#define CONFIG_ADAPTIVE_US_DEFAULT 200 /* poll=adaptive without :USEC, the default */

#define CONFIG_MAX_IOMMUS 7 /* --iommu ids 1..7 (the wire's mid; 0 is direct DMA) */

/* One --iommu id=N,base=ADDR[,irq=LINE] (docs/iommu.md). */
struct iommu_config {
	unsigned id;
	uint64_t base; /* its 4 KiB register block */
	int irq;       /* the fault interrupt's line, or -1 */
};

#define CONFIG_MPQEMU_MAX_DEVS 16 /* PCI devices of --accel mpqemu or vfio-user */
#define CONFIG_GUEST_IRQS      24 /* lines irq= and --iommu irq= may name: the IOAPIC's pins */
#define CONFIG_VFU_IRQS	       8  /* lines of each --accel vfio-user device: MSI-X vectors */

struct vm_config {
	uint64_t mem;
	char accel[16];			  /* "qtest", "kvm", "mpqemu" or "vfio-user" */
	bool accel_default;		  /* --accel was not given: kvm was chosen */
	char kernel[CONFIG_PATH_MAX];	  /* --kernel (kvm only) */
	char append[CONFIG_APPEND_MAX];	  /* --append (kvm only) */
	unsigned smp;			  /* --smp, vCPUs (kvm only), default 1 */
	char qtest_path[CONFIG_NAME_MAX]; /* empty: stdio */
	char listen[256];
	bool trace;
	bool verbose;		  /* --verbose: per-event detail (shared memory maps...) */
	unsigned peer_timeout_ms; /* --peer-timeout: hello and partial-frame deadline; 0: off */
	/* TLS credentials of the tls=on ports (docs/security.md): exactly one of
	 * them when a port has tls=on, loaded by vmmio_init(). */
	char tls_creds[CONFIG_PATH_MAX];    /* --tls-creds DIR (X.509), or empty */
	char tls_psk[CONFIG_PATH_MAX];	    /* --tls-psk FILE (pre-shared keys), or empty */
	char record[CONFIG_PATH_MAX];	    /* --record FILE (docs/record-replay.md), or empty */
	char fault_socket[CONFIG_NAME_MAX]; /* --fault-socket unix:PATH: the PATH, or empty */
	bool help;
	struct range_config ranges[CONFIG_MAX_RANGES];
	unsigned nranges;
	bool mem_given;				/* --mem was given */
	int mpqemu_fds[CONFIG_MPQEMU_MAX_DEVS]; /* --mpqemu-fd, one per range */
	unsigned nmpqemu_fds;
	int mpqemu_control; /* --mpqemu-control FD, or -1 (mpqemu and vfio-user) */
	/* --vfio-user-socket PATH, one per range: where QEMU's vfio-user-pci connects. */
	char vfu_sockets[CONFIG_MPQEMU_MAX_DEVS][CONFIG_NAME_MAX];
	unsigned nvfu_sockets;
	struct iommu_config iommus[CONFIG_MAX_IOMMUS]; /* --iommu, in command-line order */
	unsigned niommus;
};

/*
 * Parse and validate argv into cfg (defaults first).
 *   err, errlen  receive a message naming the bad input on failure.
 * Returns 0 (cfg->help set when --help was given), or -1 on an error.
 * Without --accel, cfg->accel is "kvm" and cfg->accel_default is set; the
 * caller checks that /dev/kvm works (config_parse() never opens it).
 * Uses getopt_long(); may be called several times (it resets optind).
 */
int config_parse(int argc, char **argv, struct vm_config *cfg, char *err, size_t errlen);

/* Print the --help text to f. */
void config_usage(FILE *f, const char *prog);

/* True if ranges a and b are served on the same port. */
bool config_same_port(const struct range_config *a, const struct range_config *b);

/*
 * Parse a number: decimal or 0x hex, no sign, no trailing characters.
 * Returns 0 or -1 (not a number, or it does not fit in 64 bits).
 */
int config_parse_u64(const char *s, uint64_t *out);

/*
 * True when DMA to guest-physical [gpa, gpa + len) is allowed by r's dma=
 * policy: always for dma=ram, never for dma=none (nor for len 0 there),
 * and for windows only when the whole piece lies inside one window (a
 * piece straddling a window's edge is refused). Overflow-safe.
 */
bool config_dma_allowed(const struct range_config *r, uint64_t gpa, uint64_t len);

#endif
