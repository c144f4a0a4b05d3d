/* coreio-vm: the command line, parsed and validated into a struct vm_config. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "bootinfo.h"
#include "irq.h"
#include "virtio-pci-layout.h"

#define PAGE 4096ull

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

int config_parse_u64(const char *s, uint64_t *out)
{
	char *end;
	int base = 10;
	unsigned long long v;

	if (!s || !*s)
		return -1;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!isxdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, base);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

/* A size: a number with an optional K, M or G suffix (powers of 1024). */
static int parse_size(const char *s, uint64_t *out)
{
	char buf[64];
	size_t n = strlen(s);
	unsigned shift = 0;
	uint64_t v;

	if (n == 0 || n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n + 1);
	switch (buf[n - 1]) {
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	default:
		break;
	}
	/* K, M and G are not hex digits, so 0x10M is unambiguous. */
	if (shift)
		buf[n - 1] = '\0';
	if (config_parse_u64(buf, &v) < 0)
		return -1;
	if (shift && v > (UINT64_MAX >> shift))
		return -1;
	*out = v << shift;
	return 0;
}

bool config_same_port(const struct range_config *a, const struct range_config *b)
{
	if (a->kind != b->kind)
		return false;
	switch (a->kind) {
	case PORT_TCP:
		return a->tcp_port == b->tcp_port;
	case PORT_TCP_ANY:
		return a == b;
	case PORT_TCP_LABEL:
	case PORT_UNIX:
		return strcmp(a->name, b->name) == 0;
	}
	return false;
}

static int parse_irqs(const char *val, struct range_config *r, const char *arg, char *err,
		      size_t errlen)
{
	char buf[256];
	char *save = NULL;

	if (strlen(val) >= sizeof(buf))
		return fail(err, errlen, "--vmmio '%s': irq list too long", arg);
	strcpy(buf, val);
	r->nirq = 0;
	for (char *tok = strtok_r(buf, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
		uint64_t line;

		if (config_parse_u64(tok, &line) < 0 || line >= CONFIG_GUEST_IRQS)
			return fail(err, errlen,
				    "--vmmio '%s': bad irq line '%s' (lines are 0..%d)", arg, tok,
				    CONFIG_GUEST_IRQS - 1);
		if (r->nirq >= CONFIG_MAX_IRQS)
			return fail(err, errlen, "--vmmio '%s': more than %d irq lines", arg,
				    CONFIG_MAX_IRQS);
		r->irqs[r->nirq++] = (int)line;
	}
	if (r->nirq == 0)
		return fail(err, errlen, "--vmmio '%s': empty irq list", arg);
	return 0;
}

static int parse_port(const char *val, struct range_config *r, const char *arg, char *err,
		      size_t errlen)
{
	uint64_t n;

	if (strncmp(val, "unix:", 5) == 0) {
		const char *path = val + 5;

		if (!*path)
			return fail(err, errlen, "--vmmio '%s': empty unix socket path", arg);
		if (strlen(path) >= CONFIG_NAME_MAX)
			return fail(err, errlen, "--vmmio '%s': unix socket path longer than %d",
				    arg, CONFIG_NAME_MAX - 1);
		r->kind = PORT_UNIX;
		strcpy(r->name, path);
		return 0;
	}
	if (val[0] == '@') {
		if (!val[1] || strlen(val + 1) >= CONFIG_NAME_MAX)
			return fail(err, errlen, "--vmmio '%s': bad port label '%s'", arg, val);
		r->kind = PORT_TCP_LABEL;
		strcpy(r->name, val + 1);
		return 0;
	}
	if (config_parse_u64(val, &n) < 0 || n > 65535)
		return fail(err, errlen,
			    "--vmmio '%s': bad port '%s' (N in 0..65535, @LABEL or unix:PATH)", arg,
			    val);
	r->kind = n == 0 ? PORT_TCP_ANY : PORT_TCP;
	r->tcp_port = (unsigned)n;
	return 0;
}

/* Keys of a PCI range (START "pci"), as bits of the "seen" mask of parse_pci_key(). */
static const char *const pci_keys[] = {"pci",	  "class",   "subsys", "rev",
				       "profile", "hotplug", "msix"};

/* "VVVV:DDDD" (or "DDDD" when allow_short: *a is left alone), hex with optional 0x. */
static int parse_id_pair(const char *val, uint16_t *a, uint16_t *b, bool allow_short)
{
	char buf[32];
	char *colon;
	uint64_t x, y;

	if (strlen(val) >= sizeof(buf))
		return -1;
	strcpy(buf, val);
	colon = strchr(buf, ':');
	if (!colon) {
		char hex[40];

		snprintf(hex, sizeof(hex), "%s%s", strncmp(buf, "0x", 2) ? "0x" : "", buf);
		if (!allow_short || config_parse_u64(hex, &y) < 0 || y > 0xffff)
			return -1;
		*b = (uint16_t)y;
		return 0;
	}
	*colon = '\0';
	{
		char h1[40], h2[40];

		snprintf(h1, sizeof(h1), "%s%s", strncmp(buf, "0x", 2) ? "0x" : "", buf);
		snprintf(h2, sizeof(h2), "%s%s", strncmp(colon + 1, "0x", 2) ? "0x" : "",
			 colon + 1);
		if (config_parse_u64(h1, &x) < 0 || x > 0xffff || config_parse_u64(h2, &y) < 0 ||
		    y > 0xffff)
			return -1;
	}
	*a = (uint16_t)x;
	*b = (uint16_t)y;
	return 0;
}

/*
 * A key of a PCI range. Returns 1 when tok was one (seen gets its bit), 0
 * when tok is no PCI key, -1 on an error (err filled).
 */
static int parse_pci_key(const char *tok, const char *val, struct range_config *r, unsigned *seen,
			 const char *arg, char *err, size_t errlen)
{
	unsigned k;
	uint64_t n;

	for (k = 0; k < sizeof(pci_keys) / sizeof(pci_keys[0]); k++)
		if (strcmp(tok, pci_keys[k]) == 0)
			break;
	if (k == sizeof(pci_keys) / sizeof(pci_keys[0]))
		return 0;
	if (*seen & (1u << k))
		return fail(err, errlen, "--vmmio '%s': repeated key '%s'", arg, tok);
	*seen |= 1u << k;
	switch (k) {
	case 0:
		if (parse_id_pair(val, &r->pci_vendor, &r->pci_device, true) < 0)
			return fail(err, errlen,
				    "--vmmio '%s': pci='%s' is not VENDOR:DEVICE (hex, e.g. "
				    "1af4:1044) or DEVICE",
				    arg, val);
		break;
	case 1:
		if (config_parse_u64(val, &n) < 0 || n > 0xffffff)
			return fail(err, errlen,
				    "--vmmio '%s': class='%s' is not 0xCCSSPP (class, subclass, "
				    "programming interface)",
				    arg, val);
		r->pci_class = (uint32_t)n;
		break;
	case 2:
		if (parse_id_pair(val, &r->subsys_vendor, &r->subsys_id, false) < 0)
			return fail(err, errlen,
				    "--vmmio '%s': subsys='%s' is not VENDOR:ID (hex, e.g. "
				    "1af4:1100)",
				    arg, val);
		break;
	case 3:
		if (config_parse_u64(val, &n) < 0 || n > 0xff)
			return fail(err, errlen, "--vmmio '%s': rev='%s' is not 0..255", arg, val);
		r->pci_rev = (uint8_t)n;
		break;
	case 4:
		if (strcmp(val, "virtio") != 0)
			return fail(err, errlen,
				    "--vmmio '%s': profile='%s' is unknown (the only profile is "
				    "'virtio')",
				    arg, val);
		r->virtio = true;
		break;
	case 5:
		if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0)
			return fail(err, errlen, "--vmmio '%s': hotplug='%s' must be on or off",
				    arg, val);
		r->hotplug = strcmp(val, "on") == 0;
		break;
	default:
		if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0)
			return fail(err, errlen, "--vmmio '%s': msix='%s' must be on or off", arg,
				    val);
		r->msix_mode = strcmp(val, "on") == 0 ? CONFIG_MSIX_ON : CONFIG_MSIX_OFF;
		break;
	}
	return 1;
}

/* The default PCI class of a virtio device (device id 0x1040 + virtio id). */
static uint32_t virtio_class(uint16_t device)
{
	switch (device >= COREIO_VPCI_DEVICE_BASE ? device - COREIO_VPCI_DEVICE_BASE : 0) {
	case 1: /* net */
		return 0x020000;
	case 2: /* block */
		return 0x010000;
	case 3: /* console */
		return 0x078000;
	case 4: /* entropy */
		return 0x00ff00;
	default:
		return 0xff0000;
	}
}

/* Defaults and checks of a PCI range once all its keys are parsed. */
static int finish_pci(struct range_config *r, unsigned seen, bool have_irq, const char *arg,
		      char *err, size_t errlen)
{
	bool have_id = seen & 1u, have_class = seen & 2u, have_subsys = seen & 4u,
	     have_rev = seen & 8u;

	if (have_irq)
		return fail(err, errlen,
			    "--vmmio '%s': irq= is not used with a PCI range (IRQ index 0 is the "
			    "device's INTx, pin A)",
			    arg);
	if (r->size < 0x1000 || r->size > (1ull << 30) || (r->size & (r->size - 1)))
		return fail(err, errlen,
			    "--vmmio '%s': the size of a PCI range (its BAR 0) must be a power of "
			    "two from 4K to 1G",
			    arg);
	if (r->virtio) {
		if (!have_id)
			return fail(err, errlen,
				    "--vmmio '%s': profile=virtio needs pci=[1af4:]DEVICE (0x1040 "
				    "+ the virtio device id, e.g. 1044 for an entropy device)",
				    arg);
		if (r->size < COREIO_VPCI_BAR_SIZE)
			return fail(err, errlen,
				    "--vmmio '%s': profile=virtio needs size=16K or more (the "
				    "virtio-pci layout of src/virtio/virtio-pci-layout.h)",
				    arg);
		if (r->pci_vendor == 0)
			r->pci_vendor = COREIO_VPCI_VENDOR;
		if (!have_class)
			r->pci_class = virtio_class(r->pci_device);
		if (!have_subsys) {
			r->subsys_vendor = COREIO_VPCI_VENDOR;
			r->subsys_id = 0x1100;
		}
		if (!have_rev)
			r->pci_rev = COREIO_VPCI_REVISION;
		return 0;
	}
	if (!have_id) {
		/* Red Hat's "PCI test device" id: no Linux driver binds to it. */
		r->pci_vendor = 0x1b36;
		r->pci_device = 0x0005;
	} else if (r->pci_vendor == 0) {
		return fail(err, errlen, "--vmmio '%s': pci= needs VENDOR:DEVICE without profile",
			    arg);
	}
	if (!have_class)
		r->pci_class = 0xff0000;
	if (!have_subsys) {
		r->subsys_vendor = r->pci_vendor;
		r->subsys_id = r->pci_device;
	}
	return 0;
}

/* allow-uid= / allow-gid=: ids separated by ':' (decimal or 0x hex, not (uint32_t)-1). */
static int parse_ids(const char *key, const char *val, uint32_t *ids, unsigned *n, const char *arg,
		     char *err, size_t errlen)
{
	char buf[256];
	char *save = NULL;

	if (strlen(val) >= sizeof(buf))
		return fail(err, errlen, "--vmmio '%s': %s= list too long", arg, key);
	strcpy(buf, val);
	*n = 0;
	for (char *tok = strtok_r(buf, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
		uint64_t id;

		if (config_parse_u64(tok, &id) < 0 || id >= UINT32_MAX)
			return fail(err, errlen, "--vmmio '%s': bad %s '%s' (a number)", arg, key,
				    tok);
		if (*n >= CONFIG_MAX_ALLOW)
			return fail(err, errlen, "--vmmio '%s': more than %d ids in %s=", arg,
				    CONFIG_MAX_ALLOW, key);
		ids[(*n)++] = (uint32_t)id;
	}
	if (*n == 0)
		return fail(err, errlen, "--vmmio '%s': empty %s= list", arg, key);
	return 0;
}

/* dma=ram, dma=none or dma=START+SIZE[:START+SIZE...] (SIZE may use K/M/G). */
static int parse_dma(const char *val, struct range_config *r, const char *arg, char *err,
		     size_t errlen)
{
	char buf[512];
	char *save = NULL;

	r->ndma_win = 0;
	if (strcmp(val, "ram") == 0) {
		r->dma = DMA_RAM;
		return 0;
	}
	if (strcmp(val, "none") == 0) {
		r->dma = DMA_NONE;
		return 0;
	}
	if (strlen(val) >= sizeof(buf))
		return fail(err, errlen, "--vmmio '%s': dma= list too long", arg);
	strcpy(buf, val);
	r->dma = DMA_WINDOWS;
	for (char *tok = strtok_r(buf, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
		char *plus = strchr(tok, '+');
		struct dma_window w;

		if (!plus)
			return fail(err, errlen,
				    "--vmmio '%s': dma='%s' must be ram, none or "
				    "START+SIZE[:START+SIZE...]",
				    arg, val);
		*plus = '\0';
		if (config_parse_u64(tok, &w.start) < 0 || parse_size(plus + 1, &w.size) < 0 ||
		    w.size == 0 || w.size - 1 > UINT64_MAX - w.start)
			return fail(err, errlen,
				    "--vmmio '%s': bad DMA window '%s+%s' (START+SIZE, SIZE > 0, "
				    "not past the top of memory)",
				    arg, tok, plus + 1);
		if (r->ndma_win >= CONFIG_MAX_DMA_WINDOWS)
			return fail(err, errlen, "--vmmio '%s': more than %d DMA windows", arg,
				    CONFIG_MAX_DMA_WINDOWS);
		r->dma_win[r->ndma_win++] = w;
	}
	if (r->ndma_win == 0)
		return fail(err, errlen, "--vmmio '%s': empty dma= list", arg);
	return 0;
}

bool config_dma_allowed(const struct range_config *r, uint64_t gpa, uint64_t len)
{
	if (r->dma == DMA_RAM)
		return true;
	if (r->dma == DMA_NONE || len == 0)
		return false;
	if (len - 1 > UINT64_MAX - gpa)
		return false; /* wraps */
	for (unsigned i = 0; i < r->ndma_win; i++) {
		const struct dma_window *w = &r->dma_win[i];

		/* [gpa, gpa + len - 1] inside [start, start + size - 1], no overflow. */
		if (gpa >= w->start && gpa - w->start <= w->size - 1 &&
		    len - 1 <= w->size - 1 - (gpa - w->start))
			return true;
	}
	return false;
}

static int parse_vmmio(const char *arg, struct range_config *r, char *err, size_t errlen)
{
	char buf[512];
	char *save = NULL, *tok;
	bool have_size = false, have_port = false, have_irq = false, have_writes = false;
	unsigned pci_seen = 0;
	int rc;
	bool have_iommu = false, have_sid = false, have_shm = false, have_poll = false;
	bool have_coalesce = false;
	bool have_uid = false, have_gid = false, have_dma = false, have_max = false;
	bool have_timeout = false, have_tls = false;
	uint64_t n;

	memset(r, 0, sizeof(*r));
	r->max_conns = CONFIG_MAX_CONNS_DEFAULT;
	r->iommu_sid = -1;
	r->poll_adaptive = true;
	r->busy_us = CONFIG_ADAPTIVE_US_DEFAULT;
	if (strlen(arg) >= sizeof(buf))
		return fail(err, errlen, "--vmmio argument too long");
	strcpy(buf, arg);
	tok = strtok_r(buf, ",", &save);
	if (tok && strcmp(tok, "pci") == 0)
		r->pci = true;
	else if (!tok || config_parse_u64(tok, &r->start) < 0)
		return fail(err, errlen, "--vmmio '%s': bad START '%s' (an address, or 'pci')", arg,
			    tok ? tok : "");
	while ((tok = strtok_r(NULL, ",", &save))) {
		char *val = strchr(tok, '=');

		if (!val)
			return fail(err, errlen, "--vmmio '%s': '%s' is not KEY=VALUE", arg, tok);
		*val++ = '\0';
		if (strcmp(tok, "size") == 0 && !have_size) {
			if (parse_size(val, &r->size) < 0)
				return fail(err, errlen, "--vmmio '%s': bad size '%s'", arg, val);
			have_size = true;
		} else if (strcmp(tok, "irq") == 0 && !have_irq) {
			if (parse_irqs(val, r, arg, err, errlen) < 0)
				return -1;
			have_irq = true;
		} else if (strcmp(tok, "port") == 0 && !have_port) {
			if (parse_port(val, r, arg, err, errlen) < 0)
				return -1;
			have_port = true;
		} else if (strcmp(tok, "writes") == 0 && !have_writes) {
			if (strcmp(val, "posted") == 0)
				r->acked = false;
			else if (strcmp(val, "acked") == 0)
				r->acked = true;
			else
				return fail(
				    err, errlen,
				    "--vmmio '%s': writes= must be posted or acked, not '%s'", arg,
				    val);
			have_writes = true;
		} else if (strcmp(tok, "iommu") == 0 && !have_iommu) {
			if (config_parse_u64(val, &n) < 0 || n < 1 || n > CONFIG_MAX_IOMMUS)
				return fail(err, errlen, "--vmmio '%s': bad iommu '%s' (ids 1..%d)",
					    arg, val, CONFIG_MAX_IOMMUS);
			r->iommu = (unsigned)n;
			have_iommu = true;
		} else if (strcmp(tok, "sid") == 0 && !have_sid) {
			if (config_parse_u64(val, &n) < 0 || n > 15)
				return fail(err, errlen, "--vmmio '%s': bad sid '%s' (0..15)", arg,
					    val);
			r->iommu_sid = (int)n;
			have_sid = true;
		} else if (strcmp(tok, "shm") == 0 && !have_shm) {
			if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0)
				return fail(err, errlen, "--vmmio '%s': shm='%s' must be on or off",
					    arg, val);
			r->shm = strcmp(val, "on") == 0;
			have_shm = true;
		} else if (strcmp(tok, "coalesce") == 0 && !have_coalesce) {
			if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0)
				return fail(err, errlen,
					    "--vmmio '%s': coalesce='%s' must be on or off", arg,
					    val);
			r->coalesce = strcmp(val, "on") == 0;
			have_coalesce = true;
		} else if (strcmp(tok, "poll") == 0 && !have_poll) {
			bool adaptive = strncmp(val, "adaptive", 8) == 0;
			const char *us = val + (adaptive ? 8 : 4);

			r->poll_adaptive = adaptive;
			if (strcmp(val, "block") == 0)
				r->busy_us = 0;
			else if (strcmp(val, "busy") == 0)
				r->busy_us = CONFIG_BUSY_US_DEFAULT;
			else if (strcmp(val, "adaptive") == 0)
				r->busy_us = CONFIG_ADAPTIVE_US_DEFAULT;
			else if ((adaptive || strncmp(val, "busy", 4) == 0) && us[0] == ':' &&
				 config_parse_u64(us + 1, &n) == 0 && n >= 1 &&
				 n <= CONFIG_BUSY_US_MAX)
				r->busy_us = (unsigned)n;
			else
				return fail(err, errlen,
					    "--vmmio '%s': poll='%s' must be adaptive, "
					    "adaptive:USEC, busy, busy:USEC (USEC 1..%d) or block",
					    arg, val, CONFIG_BUSY_US_MAX);
			have_poll = true;
		} else if (strcmp(tok, "allow-uid") == 0 && !have_uid) {
			if (parse_ids(tok, val, r->allow_uid, &r->nallow_uid, arg, err, errlen) < 0)
				return -1;
			have_uid = true;
		} else if (strcmp(tok, "allow-gid") == 0 && !have_gid) {
			if (parse_ids(tok, val, r->allow_gid, &r->nallow_gid, arg, err, errlen) < 0)
				return -1;
			have_gid = true;
		} else if (strcmp(tok, "dma") == 0 && !have_dma) {
			if (parse_dma(val, r, arg, err, errlen) < 0)
				return -1;
			have_dma = true;
		} else if (strcmp(tok, "max-conns") == 0 && !have_max) {
			if (config_parse_u64(val, &n) < 0 || n < 1 || n > CONFIG_MAX_CONNS_MAX)
				return fail(err, errlen, "--vmmio '%s': bad max-conns '%s' (1..%d)",
					    arg, val, CONFIG_MAX_CONNS_MAX);
			r->max_conns = (unsigned)n;
			have_max = true;
		} else if (strcmp(tok, "timeout") == 0 && !have_timeout) {
			if (config_parse_u64(val, &n) < 0 || n > CONFIG_TIMEOUT_MAX)
				return fail(err, errlen,
					    "--vmmio '%s': bad timeout '%s' (milliseconds, 0..%d; "
					    "0: no deadline)",
					    arg, val, CONFIG_TIMEOUT_MAX);
			r->timeout_ms = (unsigned)n;
			have_timeout = true;
		} else if (strcmp(tok, "tls") == 0 && !have_tls) {
			if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0)
				return fail(err, errlen, "--vmmio '%s': tls='%s' must be on or off",
					    arg, val);
			r->tls = strcmp(val, "on") == 0;
			have_tls = true;
		} else if ((rc = parse_pci_key(tok, val, r, &pci_seen, arg, err, errlen)) != 0) {
			if (rc < 0)
				return -1;
		} else {
			return fail(err, errlen, "--vmmio '%s': unknown or repeated key '%s'", arg,
				    tok);
		}
	}
	if (have_sid && !have_iommu)
		return fail(err, errlen, "--vmmio '%s': sid= needs iommu=", arg);
	if (r->coalesce && r->acked)
		return fail(err, errlen,
			    "--vmmio '%s': coalesce=on batches posted writes; it cannot be used "
			    "with writes=acked",
			    arg);
	if (!have_size)
		return fail(err, errlen, "--vmmio '%s': size= is missing", arg);
	if (!have_port)
		return fail(err, errlen, "--vmmio '%s': port= is missing", arg);
	if ((have_uid || have_gid) && r->kind != PORT_UNIX)
		return fail(err, errlen,
			    "--vmmio '%s': allow-uid= and allow-gid= need port=unix:PATH (a TCP "
			    "peer has no credentials to check; docs/security.md)",
			    arg);
	if (r->tls && r->kind == PORT_UNIX)
		return fail(err, errlen,
			    "--vmmio '%s': tls=on needs a TCP port (port=N, port=0 or "
			    "port=@LABEL); a unix: port is local, its peers are checked with "
			    "allow-uid=/allow-gid= (docs/security.md)",
			    arg);
	if (r->pci)
		return finish_pci(r, pci_seen, have_irq, arg, err, errlen);
	if (pci_seen)
		return fail(
		    err, errlen,
		    "--vmmio '%s': pci=, class=, subsys=, rev=, profile=, hotplug= and msix= need "
		    "START "
		    "'pci' (--accel mpqemu)",
		    arg);
	if (r->start % PAGE)
		return fail(err, errlen, "--vmmio '%s': START 0x%llx is not 4 KiB aligned", arg,
			    (unsigned long long)r->start);
	if (r->size == 0 || r->size % PAGE)
		return fail(err, errlen,
			    "--vmmio '%s': size 0x%llx is not a nonzero multiple of 4 KiB", arg,
			    (unsigned long long)r->size);
	if (r->size > UINT64_MAX - r->start)
		return fail(err, errlen, "--vmmio '%s': the range passes the top of memory", arg);
	return 0;
}

/* --iommu id=N,base=ADDR[,irq=LINE] (docs/iommu.md). */
static int parse_iommu(const char *arg, struct iommu_config *ic, char *err, size_t errlen)
{
	char buf[256];
	char *save = NULL, *tok;
	bool have_id = false, have_base = false, have_irq = false;
	uint64_t n;

	memset(ic, 0, sizeof(*ic));
	ic->irq = -1;
	if (strlen(arg) >= sizeof(buf))
		return fail(err, errlen, "--iommu argument too long");
	strcpy(buf, arg);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *val = strchr(tok, '=');

		if (!val)
			return fail(err, errlen, "--iommu '%s': '%s' is not KEY=VALUE", arg, tok);
		*val++ = '\0';
		if (strcmp(tok, "id") == 0 && !have_id) {
			if (config_parse_u64(val, &n) < 0 || n < 1 || n > CONFIG_MAX_IOMMUS)
				return fail(err, errlen, "--iommu '%s': bad id '%s' (1..%d)", arg,
					    val, CONFIG_MAX_IOMMUS);
			ic->id = (unsigned)n;
			have_id = true;
		} else if (strcmp(tok, "base") == 0 && !have_base) {
			if (config_parse_u64(val, &ic->base) < 0 || ic->base % PAGE ||
			    ic->base > UINT64_MAX - PAGE)
				return fail(err, errlen,
					    "--iommu '%s': bad base '%s' (a 4 KiB aligned address)",
					    arg, val);
			have_base = true;
		} else if (strcmp(tok, "irq") == 0 && !have_irq) {
			if (config_parse_u64(val, &n) < 0 || n >= CONFIG_GUEST_IRQS)
				return fail(err, errlen, "--iommu '%s': bad irq '%s' (lines 0..%d)",
					    arg, val, CONFIG_GUEST_IRQS - 1);
			ic->irq = (int)n;
			have_irq = true;
		} else {
			return fail(err, errlen, "--iommu '%s': unknown or repeated key '%s'", arg,
				    tok);
		}
	}
	if (!have_id || !have_base)
		return fail(err, errlen, "--iommu '%s': id= and base= are required", arg);
	return 0;
}

static int check_listen(const char *addr, char *err, size_t errlen)
{
	char host[256];
	size_t n = strlen(addr);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;

	if (n == 0 || n >= sizeof(host))
		return fail(err, errlen, "--listen '%s': bad address", addr);
	if (addr[0] == '[' && addr[n - 1] == ']') {
		memcpy(host, addr + 1, n - 2);
		host[n - 2] = '\0';
	} else {
		strcpy(host, addr);
	}
	if (getaddrinfo(host, "0", &hints, &res) != 0 || !res)
		return fail(err, errlen, "--listen '%s': not an address of this host", addr);
	freeaddrinfo(res);
	return 0;
}

/* Fixed devices of the KVM accelerator, which a vMMIO range may not overlap. */
static const struct {
	const char *name;
	uint64_t start, size;
} fixed_mmio[] = {
    {"the test device", COREIO_TESTDEV_BASE, 0x1000},
    {"the IOAPIC", COREIO_IOAPIC_BASE, 0x1000},
    {"the LAPIC", COREIO_LAPIC_BASE, 0x100000},
};

/*
 * --accel mpqemu and --accel vfio-user: QEMU owns CPUs and RAM; every range is
 * a PCI device with its socket (an fd from the orchestrator for mpqemu, a
 * path coreio-vm listens on for vfio-user).
 */
static int validate_qemu(struct vm_config *cfg, bool qtest_given, char *err, size_t errlen)
{
	const char *a = cfg->accel;
	bool vfu = strcmp(a, "vfio-user") == 0;

	if (cfg->kernel[0] || cfg->smp || cfg->append[0])
		return fail(err, errlen,
			    "--kernel, --smp and --append do not apply to --accel %s (QEMU "
			    "runs the guest)",
			    a);
	if (qtest_given)
		return fail(err, errlen, "--qtest needs --accel qtest");
	if (cfg->mem_given)
		return fail(err, errlen,
			    "--mem does not apply to --accel %s (QEMU owns guest RAM and "
			    "shares it)",
			    a);
	if (cfg->niommus)
		return fail(err, errlen,
			    "--iommu does not apply to --accel %s (QEMU owns the guest's "
			    "address space)",
			    a);
	if (cfg->nranges == 0)
		return fail(err, errlen, "--accel %s needs at least one --vmmio pci,...", a);
	if (cfg->nranges > CONFIG_MPQEMU_MAX_DEVS)
		return fail(err, errlen, "at most %d --vmmio ranges with --accel %s",
			    CONFIG_MPQEMU_MAX_DEVS, a);
	for (unsigned i = 0; i < cfg->nranges; i++) {
		struct range_config *r = &cfg->ranges[i];

		if (!r->pci)
			return fail(err, errlen,
				    "--vmmio range %u: with --accel %s START must be 'pci' "
				    "(the guest places BAR 0)",
				    i, a);
		if (r->iommu)
			return fail(err, errlen,
				    "--vmmio range %u: iommu= does not apply to --accel %s", i, a);
		if (r->coalesce)
			return fail(err, errlen,
				    "--vmmio range %u: coalesce=on needs --accel kvm (QEMU runs "
				    "the vCPUs with %s)",
				    i, a);
		if (!vfu && r->msix_mode == CONFIG_MSIX_ON)
			return fail(
			    err, errlen,
			    "--vmmio range %u: msix=on needs --accel vfio-user (QEMU's proxy "
			    "has no MSI-X)",
			    i);
		/* Without msix=: MSI-X unless hotplug=on (QEMU 11.1.3 aborts when it
		 * unplugs a vfio-user device with MSI-X; docs/qemu-vfio-user.md). */
		r->msix = vfu && (r->msix_mode == CONFIG_MSIX_ON ||
				  (r->msix_mode == CONFIG_MSIX_AUTO && !r->hotplug));
		if (vfu) {
			/* Line 8i + k is the device's MSI-X vector k (k = 0 also its INTx),
			 * which vfio-user's server watches. */
			for (unsigned k = 0; k < CONFIG_VFU_IRQS; k++)
				r->irqs[k] = (int)(i * CONFIG_VFU_IRQS + k);
			r->nirq = CONFIG_VFU_IRQS;
		} else {
			/* The device's INTx: IRQ index 0 drives line i, which mpqemu.c
			 * watches. */
			r->irqs[0] = (int)i;
			r->nirq = 1;
		}
	}
	if (vfu) {
		if (cfg->nmpqemu_fds)
			return fail(err, errlen, "--mpqemu-fd needs --accel mpqemu");
		if (cfg->nvfu_sockets != cfg->nranges)
			return fail(err, errlen,
				    "--accel vfio-user: %u --vfio-user-socket for %u --vmmio "
				    "ranges (one socket per range, in order)",
				    cfg->nvfu_sockets, cfg->nranges);
	} else {
		if (cfg->nvfu_sockets)
			return fail(err, errlen, "--vfio-user-socket needs --accel vfio-user");
		if (cfg->nmpqemu_fds != cfg->nranges)
			return fail(err, errlen,
				    "--accel mpqemu: %u --mpqemu-fd for %u --vmmio ranges (one "
				    "socket per range, in order)",
				    cfg->nmpqemu_fds, cfg->nranges);
		for (unsigned i = 0; i < cfg->nmpqemu_fds; i++)
			if (cfg->mpqemu_fds[i] == cfg->mpqemu_control)
				return fail(err, errlen,
					    "--mpqemu-control %d is also a --mpqemu-fd",
					    cfg->mpqemu_control);
	}
	for (unsigned i = 0; i < cfg->nranges; i++)
		if (cfg->ranges[i].hotplug && cfg->mpqemu_control < 0)
			return fail(err, errlen,
				    "--vmmio range %u: hotplug=on needs --mpqemu-control FD (the "
				    "orchestrator that plugs the device)",
				    i);
	return 0;
}

static int validate_accel(struct vm_config *cfg, bool qtest_given, char *err, size_t errlen)
{
	bool kvm = strcmp(cfg->accel, "kvm") == 0;

	if (strcmp(cfg->accel, "mpqemu") == 0 || strcmp(cfg->accel, "vfio-user") == 0)
		return validate_qemu(cfg, qtest_given, err, errlen);
	if (cfg->nmpqemu_fds)
		return fail(err, errlen, "--mpqemu-fd needs --accel mpqemu");
	if (cfg->nvfu_sockets)
		return fail(err, errlen, "--vfio-user-socket needs --accel vfio-user");
	if (cfg->mpqemu_control >= 0)
		return fail(err, errlen, "--mpqemu-control needs --accel mpqemu or vfio-user");
	for (unsigned i = 0; i < cfg->nranges; i++)
		if (cfg->ranges[i].pci)
			return fail(err, errlen,
				    "--vmmio range %u: START 'pci' needs --accel mpqemu or "
				    "vfio-user",
				    i);

	if (!kvm) {
		for (unsigned i = 0; i < cfg->nranges; i++)
			if (cfg->ranges[i].coalesce)
				return fail(
				    err, errlen,
				    "--vmmio range %u: coalesce=on needs --accel kvm (it batches "
				    "the writes of vCPUs)",
				    i);
		if (cfg->kernel[0])
			return fail(err, errlen, "--kernel needs --accel kvm (qtest has no CPU)");
		if (cfg->smp)
			return fail(err, errlen, "--smp needs --accel kvm (qtest has no CPU)");
		if (cfg->append[0])
			return fail(err, errlen, "--append needs --accel kvm (qtest has no CPU)");
		return 0;
	}
	if (qtest_given)
		return fail(err, errlen, "--qtest needs --accel qtest");
	if (!cfg->kernel[0])
		return fail(err, errlen,
			    "--accel kvm%s needs --kernel GUEST.elf (or use --accel qtest to "
			    "drive the VM from a script)",
			    cfg->accel_default ? " (the default; missing --accel)" : "");
	if (cfg->smp == 0)
		cfg->smp = 1;
	if (cfg->mem > COREIO_BOOT_MAX_MEM)
		return fail(err, errlen, "--mem 0x%llx: at most 3G of RAM with --accel kvm",
			    (unsigned long long)cfg->mem);
	if (cfg->nranges > COREIO_BOOT_MAX_RANGES)
		return fail(err, errlen, "at most %d --vmmio ranges with --accel kvm",
			    COREIO_BOOT_MAX_RANGES);
	for (unsigned i = 0; i < cfg->nranges; i++) {
		const struct range_config *r = &cfg->ranges[i];

		for (size_t k = 0; k < sizeof(fixed_mmio) / sizeof(fixed_mmio[0]); k++)
			if (r->start < fixed_mmio[k].start + fixed_mmio[k].size &&
			    fixed_mmio[k].start < r->start + r->size)
				return fail(err, errlen,
					    "--vmmio range %u [0x%llx, 0x%llx) overlaps %s at "
					    "0x%llx",
					    i, (unsigned long long)r->start,
					    (unsigned long long)(r->start + r->size),
					    fixed_mmio[k].name,
					    (unsigned long long)fixed_mmio[k].start);
	}
	return 0;
}

/* The IOMMUs: unique ids, blocks clear of RAM, ranges, each other and the KVM devices. */
static int validate_iommus(const struct vm_config *cfg, char *err, size_t errlen)
{
	bool kvm = strcmp(cfg->accel, "kvm") == 0;

	if (cfg->niommus &&
	    (strcmp(cfg->accel, "mpqemu") == 0 || strcmp(cfg->accel, "vfio-user") == 0))
		return fail(err, errlen, "--iommu needs --accel kvm or qtest");
	for (unsigned i = 0; i < cfg->niommus; i++) {
		const struct iommu_config *a = &cfg->iommus[i];

		if (a->base < cfg->mem)
			return fail(err, errlen, "--iommu id=%u at 0x%llx overlaps RAM [0, 0x%llx)",
				    a->id, (unsigned long long)a->base,
				    (unsigned long long)cfg->mem);
		for (unsigned j = i + 1; j < cfg->niommus; j++) {
			const struct iommu_config *b = &cfg->iommus[j];

			if (a->id == b->id)
				return fail(err, errlen, "--iommu id=%u given twice", a->id);
			if (a->base == b->base)
				return fail(err, errlen,
					    "--iommu id=%u and id=%u overlap at 0x%llx", a->id,
					    b->id, (unsigned long long)a->base);
		}
		for (unsigned j = 0; j < cfg->nranges; j++) {
			const struct range_config *r = &cfg->ranges[j];

			if (!r->pci && a->base < r->start + r->size && r->start < a->base + PAGE)
				return fail(err, errlen,
					    "--iommu id=%u at 0x%llx overlaps --vmmio range %u",
					    a->id, (unsigned long long)a->base, j);
		}
		for (size_t k = 0; kvm && k < sizeof(fixed_mmio) / sizeof(fixed_mmio[0]); k++)
			if (a->base < fixed_mmio[k].start + fixed_mmio[k].size &&
			    fixed_mmio[k].start < a->base + PAGE)
				return fail(err, errlen, "--iommu id=%u at 0x%llx overlaps %s",
					    a->id, (unsigned long long)a->base, fixed_mmio[k].name);
	}
	for (unsigned i = 0; i < cfg->nranges; i++) {
		const struct range_config *r = &cfg->ranges[i];
		bool found = false;

		for (unsigned k = 0; k < cfg->niommus; k++)
			found |= cfg->iommus[k].id == r->iommu;
		if (r->iommu && !found)
			return fail(err, errlen, "--vmmio range %u: iommu=%u but no --iommu id=%u",
				    i, r->iommu, r->iommu);
		/* DMA arrives on a port, not a range: ranges on one port share the policy. */
		for (unsigned j = i + 1; j < cfg->nranges; j++)
			if (config_same_port(r, &cfg->ranges[j]) &&
			    (r->iommu != cfg->ranges[j].iommu ||
			     r->iommu_sid != cfg->ranges[j].iommu_sid))
				return fail(err, errlen,
					    "--vmmio ranges %u and %u share a port but not their "
					    "iommu=/sid= (DMA is checked per port)",
					    i, j);
	}
	return 0;
}

/* shm=on: UNIX ports only, the same on every range of a port, never with iommu=. */
static int validate_shm(const struct vm_config *cfg, char *err, size_t errlen)
{
	for (unsigned i = 0; i < cfg->nranges; i++) {
		const struct range_config *r = &cfg->ranges[i];

		if (r->shm && r->kind != PORT_UNIX)
			return fail(
			    err, errlen,
			    "--vmmio range %u: shm=on needs port=unix:PATH (guest memory is "
			    "passed as a file descriptor over a UNIX socket)",
			    i);
		if (r->shm && r->dma != DMA_RAM)
			return fail(
			    err, errlen,
			    "--vmmio range %u: shm=on passes all of guest RAM to the client, which "
			    "would bypass dma=%s; use dma=ram (the default) or shm=off",
			    i, r->dma == DMA_NONE ? "none" : "windows");
		if (r->shm && r->iommu)
			return fail(
			    err, errlen,
			    "--vmmio range %u: shm=on and iommu=%u exclude each other (shared "
			    "memory would bypass the IOMMU)",
			    i, r->iommu);
		for (unsigned j = i + 1; j < cfg->nranges; j++)
			if (config_same_port(r, &cfg->ranges[j]) && r->shm != cfg->ranges[j].shm)
				return fail(
				    err, errlen,
				    "--vmmio ranges %u and %u share a port but not their shm= "
				    "(it is offered per port)",
				    i, j);
	}
	return 0;
}

/*
 * The per-port keys (allow-uid=, allow-gid=, dma=, max-conns=, tls=): equal
 * on every range of a port.
 */
static int validate_port_keys(const struct vm_config *cfg, char *err, size_t errlen)
{
	for (unsigned i = 0; i < cfg->nranges; i++) {
		const struct range_config *a = &cfg->ranges[i];

		for (unsigned j = i + 1; j < cfg->nranges; j++) {
			const struct range_config *b = &cfg->ranges[j];
			bool same;

			if (!config_same_port(a, b))
				continue;
			same = a->nallow_uid == b->nallow_uid && a->nallow_gid == b->nallow_gid &&
			       a->dma == b->dma && a->ndma_win == b->ndma_win &&
			       a->max_conns == b->max_conns && a->tls == b->tls &&
			       memcmp(a->allow_uid, b->allow_uid,
				      a->nallow_uid * sizeof(a->allow_uid[0])) == 0 &&
			       memcmp(a->allow_gid, b->allow_gid,
				      a->nallow_gid * sizeof(a->allow_gid[0])) == 0 &&
			       memcmp(a->dma_win, b->dma_win,
				      a->ndma_win * sizeof(a->dma_win[0])) == 0;
			if (!same)
				return fail(
				    err, errlen,
				    "--vmmio ranges %u and %u share a port but not their "
				    "allow-uid=/allow-gid=/dma=/max-conns=/tls= (they apply "
				    "per port: give them on every range of the port)",
				    i, j);
		}
	}
	return 0;
}

/*
 * TLS: exactly one of --tls-creds and --tls-psk when a port has tls=on, and
 * neither without one (credentials nobody uses are a mistake: the ports
 * would be plain TCP). The files are read by vmmio_init(), not here.
 */
static int validate_tls(const struct vm_config *cfg, char *err, size_t errlen)
{
	bool any = false;

	for (unsigned i = 0; i < cfg->nranges; i++)
		any |= cfg->ranges[i].tls;
	if (cfg->tls_creds[0] && cfg->tls_psk[0])
		return fail(err, errlen,
			    "--tls-creds and --tls-psk exclude each other (give one: X.509 "
			    "certificates or pre-shared keys)");
	if (any && !cfg->tls_creds[0] && !cfg->tls_psk[0])
		return fail(
		    err, errlen,
		    "tls=on needs credentials: --tls-creds DIR (ca-cert.pem, "
		    "server-cert.pem, server-key.pem) or --tls-psk FILE (docs/security.md)");
	if (!any && (cfg->tls_creds[0] || cfg->tls_psk[0]))
		return fail(err, errlen,
			    "%s is given but no --vmmio port has tls=on (its ports would be plain "
			    "TCP; add tls=on to the ranges of the TCP ports to protect)",
			    cfg->tls_creds[0] ? "--tls-creds" : "--tls-psk");
	return 0;
}

static int validate(struct vm_config *cfg, char *err, size_t errlen)
{
	if (validate_iommus(cfg, err, errlen) < 0 || validate_shm(cfg, err, errlen) < 0 ||
	    validate_port_keys(cfg, err, errlen) < 0 || validate_tls(cfg, err, errlen) < 0)
		return -1;
	for (unsigned i = 0; i < cfg->nranges; i++) {
		const struct range_config *a = &cfg->ranges[i];
		unsigned same = 0;

		if (!a->pci && a->start < cfg->mem)
			return fail(err, errlen,
				    "--vmmio range %u at 0x%llx overlaps RAM [0, 0x%llx)", i,
				    (unsigned long long)a->start, (unsigned long long)cfg->mem);
		for (unsigned j = 0; j < cfg->nranges; j++) {
			const struct range_config *b = &cfg->ranges[j];

			if (config_same_port(a, b))
				same++;
			if (j <= i || a->pci || b->pci)
				continue;
			if (a->start < b->start + b->size && b->start < a->start + a->size)
				return fail(err, errlen,
					    "--vmmio ranges %u [0x%llx, 0x%llx) and %u [0x%llx, "
					    "0x%llx) overlap",
					    i, (unsigned long long)a->start,
					    (unsigned long long)(a->start + a->size), j,
					    (unsigned long long)b->start,
					    (unsigned long long)(b->start + b->size));
		}
		if (same > CONFIG_MAX_PER_PORT)
			return fail(err, errlen,
				    "more than %d --vmmio ranges on one port (range %u)",
				    CONFIG_MAX_PER_PORT, i);
	}
	return 0;
}

int config_parse(int argc, char **argv, struct vm_config *cfg, char *err, size_t errlen)
{
	enum {
		OPT_ACCEL = 256,
		OPT_QTEST,
		OPT_MEM,
		OPT_VMMIO,
		OPT_LISTEN,
		OPT_TRACE,
		OPT_HELP,
		OPT_KERNEL,
		OPT_SMP,
		OPT_APPEND,
		OPT_MPQEMU_FD,
		OPT_IOMMU,
		OPT_MPQEMU_CONTROL,
		OPT_VFU_SOCKET,
		OPT_VERBOSE,
		OPT_PEER_TIMEOUT,
		OPT_TLS_CREDS,
		OPT_TLS_PSK,
		OPT_RECORD,
		OPT_FAULT_SOCKET,
	};
	static const struct option opts[] = {
	    {"accel", required_argument, NULL, OPT_ACCEL},
	    {"qtest", required_argument, NULL, OPT_QTEST},
	    {"mem", required_argument, NULL, OPT_MEM},
	    {"vmmio", required_argument, NULL, OPT_VMMIO},
	    {"listen", required_argument, NULL, OPT_LISTEN},
	    {"trace", no_argument, NULL, OPT_TRACE},
	    {"verbose", no_argument, NULL, OPT_VERBOSE},
	    {"peer-timeout", required_argument, NULL, OPT_PEER_TIMEOUT},
	    {"tls-creds", required_argument, NULL, OPT_TLS_CREDS},
	    {"tls-psk", required_argument, NULL, OPT_TLS_PSK},
	    {"record", required_argument, NULL, OPT_RECORD},
	    {"fault-socket", required_argument, NULL, OPT_FAULT_SOCKET},
	    {"help", no_argument, NULL, OPT_HELP},
	    {"kernel", required_argument, NULL, OPT_KERNEL},
	    {"smp", required_argument, NULL, OPT_SMP},
	    {"append", required_argument, NULL, OPT_APPEND},
	    {"mpqemu-fd", required_argument, NULL, OPT_MPQEMU_FD},
	    {"iommu", required_argument, NULL, OPT_IOMMU},
	    {"mpqemu-control", required_argument, NULL, OPT_MPQEMU_CONTROL},
	    {"vfio-user-socket", required_argument, NULL, OPT_VFU_SOCKET},
	    {NULL, 0, NULL, 0},
	};
	bool qtest_given = false;
	uint64_t n;
	int c;

	memset(cfg, 0, sizeof(*cfg));
	cfg->mem = CONFIG_DEFAULT_MEM;
	cfg->mpqemu_control = -1;
	cfg->peer_timeout_ms = CONFIG_PEER_TIMEOUT_DEFAULT;
	strcpy(cfg->listen, "127.0.0.1");
	optind = 0; /* full re-initialisation of getopt (glibc) */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_ACCEL:
			if (strcmp(optarg, "qtest") != 0 && strcmp(optarg, "kvm") != 0 &&
			    strcmp(optarg, "mpqemu") != 0 && strcmp(optarg, "vfio-user") != 0)
				return fail(
				    err, errlen,
				    "--accel '%s': unknown accelerator (use 'kvm', 'qtest', "
				    "'mpqemu' or 'vfio-user')",
				    optarg);
			strcpy(cfg->accel, optarg);
			break;
		case OPT_KERNEL:
			if (!optarg[0] || strlen(optarg) >= CONFIG_PATH_MAX)
				return fail(err, errlen, "--kernel: bad path");
			strcpy(cfg->kernel, optarg);
			break;
		case OPT_SMP:
			if (config_parse_u64(optarg, &n) < 0 || n < 1 || n > COREIO_BOOT_MAX_CPUS)
				return fail(err, errlen, "--smp '%s': expected 1..%d vCPUs", optarg,
					    COREIO_BOOT_MAX_CPUS);
			cfg->smp = (unsigned)n;
			break;
		case OPT_APPEND:
			if (strlen(optarg) >= CONFIG_APPEND_MAX)
				return fail(err, errlen, "--append: longer than %d characters",
					    CONFIG_APPEND_MAX - 1);
			strcpy(cfg->append, optarg);
			break;
		case OPT_MPQEMU_FD:
			if (config_parse_u64(optarg, &n) < 0 || n > 0x7fffffff)
				return fail(err, errlen, "--mpqemu-fd '%s': not a file descriptor",
					    optarg);
			if (cfg->nmpqemu_fds >= CONFIG_MPQEMU_MAX_DEVS)
				return fail(err, errlen, "--mpqemu-fd: more than %d",
					    CONFIG_MPQEMU_MAX_DEVS);
			for (unsigned i = 0; i < cfg->nmpqemu_fds; i++)
				if (cfg->mpqemu_fds[i] == (int)n)
					return fail(err, errlen, "--mpqemu-fd %d given twice",
						    (int)n);
			cfg->mpqemu_fds[cfg->nmpqemu_fds++] = (int)n;
			break;
		case OPT_MPQEMU_CONTROL:
			if (config_parse_u64(optarg, &n) < 0 || n > 0x7fffffff)
				return fail(err, errlen,
					    "--mpqemu-control '%s': not a file descriptor", optarg);
			cfg->mpqemu_control = (int)n;
			break;
		case OPT_VFU_SOCKET:
			if (!optarg[0] || strlen(optarg) >= CONFIG_NAME_MAX)
				return fail(err, errlen,
					    "--vfio-user-socket '%s': expected a path of 1 to %d "
					    "characters (a UNIX socket's limit)",
					    optarg, CONFIG_NAME_MAX - 1);
			if (cfg->nvfu_sockets >= CONFIG_MPQEMU_MAX_DEVS)
				return fail(err, errlen, "--vfio-user-socket: more than %d",
					    CONFIG_MPQEMU_MAX_DEVS);
			for (unsigned i = 0; i < cfg->nvfu_sockets; i++)
				if (strcmp(cfg->vfu_sockets[i], optarg) == 0)
					return fail(err, errlen,
						    "--vfio-user-socket '%s' given twice", optarg);
			strcpy(cfg->vfu_sockets[cfg->nvfu_sockets++], optarg);
			break;
		case OPT_QTEST:
			qtest_given = true;
			if (strcmp(optarg, "stdio") == 0) {
				cfg->qtest_path[0] = '\0';
			} else if (strncmp(optarg, "unix:", 5) == 0 && optarg[5] &&
				   strlen(optarg + 5) < CONFIG_NAME_MAX) {
				strcpy(cfg->qtest_path, optarg + 5);
			} else {
				return fail(
				    err, errlen,
				    "--qtest '%s': expected stdio or unix:PATH (PATH at most "
				    "%d characters)",
				    optarg, CONFIG_NAME_MAX - 1);
			}
			break;
		case OPT_MEM:
			if (parse_size(optarg, &cfg->mem) < 0 || cfg->mem < CONFIG_MIN_MEM ||
			    cfg->mem > CONFIG_MAX_MEM || cfg->mem % PAGE)
				return fail(
				    err, errlen,
				    "--mem '%s': expected a size from 1M to 64G, a multiple "
				    "of 4 KiB (suffixes K, M, G)",
				    optarg);
			cfg->mem_given = true;
			break;
		case OPT_VMMIO:
			if (cfg->nranges >= CONFIG_MAX_RANGES)
				return fail(err, errlen, "--vmmio '%s': more than %d ranges",
					    optarg, CONFIG_MAX_RANGES);
			if (parse_vmmio(optarg, &cfg->ranges[cfg->nranges], err, errlen) < 0)
				return -1;
			cfg->nranges++;
			break;
		case OPT_IOMMU:
			if (cfg->niommus >= CONFIG_MAX_IOMMUS)
				return fail(err, errlen, "--iommu '%s': more than %d IOMMUs",
					    optarg, CONFIG_MAX_IOMMUS);
			if (parse_iommu(optarg, &cfg->iommus[cfg->niommus], err, errlen) < 0)
				return -1;
			cfg->niommus++;
			break;
		case OPT_LISTEN:
			if (check_listen(optarg, err, errlen) < 0)
				return -1;
			snprintf(cfg->listen, sizeof(cfg->listen), "%s", optarg);
			break;
		case OPT_TRACE:
			cfg->trace = true;
			break;
		case OPT_VERBOSE:
			cfg->verbose = true;
			break;
		case OPT_PEER_TIMEOUT:
			if (config_parse_u64(optarg, &n) < 0 || n > CONFIG_TIMEOUT_MAX)
				return fail(err, errlen,
					    "--peer-timeout '%s': expected milliseconds, 0..%d (0: "
					    "no deadline)",
					    optarg, CONFIG_TIMEOUT_MAX);
			cfg->peer_timeout_ms = (unsigned)n;
			break;
		case OPT_TLS_CREDS:
		case OPT_TLS_PSK: {
			const char *name = c == OPT_TLS_CREDS ? "--tls-creds" : "--tls-psk";
			char *dst = c == OPT_TLS_CREDS ? cfg->tls_creds : cfg->tls_psk;

			if (!optarg[0] || strlen(optarg) >= CONFIG_PATH_MAX)
				return fail(err, errlen,
					    "%s: expected a path of 1 to %d characters", name,
					    CONFIG_PATH_MAX - 1);
			if (dst[0])
				return fail(err, errlen, "%s given twice", name);
			strcpy(dst, optarg);
			break;
		}
		case OPT_RECORD:
			if (!optarg[0] || strlen(optarg) >= CONFIG_PATH_MAX)
				return fail(err, errlen,
					    "--record: expected a path of 1 to %d characters",
					    CONFIG_PATH_MAX - 1);
			if (cfg->record[0])
				return fail(err, errlen, "--record given twice");
			strcpy(cfg->record, optarg);
			break;
		case OPT_FAULT_SOCKET:
			if (strncmp(optarg, "unix:", 5) != 0 || !optarg[5] ||
			    strlen(optarg + 5) >= CONFIG_NAME_MAX)
				return fail(
				    err, errlen,
				    "--fault-socket '%s': expected unix:PATH (PATH at most %d "
				    "characters)",
				    optarg, CONFIG_NAME_MAX - 1);
			if (cfg->fault_socket[0])
				return fail(err, errlen, "--fault-socket given twice");
			strcpy(cfg->fault_socket, optarg + 5);
			break;
		case 'h':
		case OPT_HELP:
			cfg->help = true;
			return 0;
		case ':':
			return fail(err, errlen, "option '%s' needs an argument", argv[optind - 1]);
		default:
			return fail(err, errlen, "unknown option '%s' (see --help)",
				    argv[optind - 1]);
		}
	}
	if (optind < argc)
		return fail(err, errlen, "unexpected argument '%s' (see --help)", argv[optind]);
	if (!cfg->accel[0]) {
		strcpy(cfg->accel, "kvm");
		cfg->accel_default = true;
	}
	if (validate_accel(cfg, qtest_given, err, errlen) < 0)
		return -1;
	return validate(cfg, err, errlen);
}

void config_usage(FILE *f, const char *prog)
{
	fprintf(
	    f,
	    "Usage: %s [--accel kvm] --kernel GUEST.elf [--smp N] [--append TEXT]\n"
	    "          [--mem SIZE] [--vmmio ...]... [--listen ADDR] [--trace] [--record FILE]\n"
	    "       %s --accel qtest [--qtest stdio|unix:PATH] [--mem SIZE]\n"
	    "          [--vmmio START,size=SIZE[,irq=LINE[:LINE...]],port=PORT"
	    "[,writes=posted|acked]]...\n"
	    "          [--listen ADDR] [--tls-creds DIR|--tls-psk FILE] [--trace] [--help]\n"
	    "       %s --accel mpqemu --mpqemu-fd FD [--mpqemu-fd FD...]"
	    " [--mpqemu-control FD]\n"
	    "          --vmmio pci,size=SIZE[,pci=VVVV:DDDD][,class=0xCCSSPP]"
	    "[,subsys=VVVV:SSSS]\n"
	    "          [,rev=N][,profile=virtio][,hotplug=on|off],port=PORT [--vmmio ...]..."
	    "\n          [--listen ADDR] [--trace]\n"
	    "       %s --accel vfio-user --vfio-user-socket PATH [--vfio-user-socket PATH...]\n"
	    "          [--mpqemu-control FD] --vmmio pci,... [--vmmio pci,...]... [--listen ADDR]\n"
	    "\n"
	    "coreio-vm is a VM whose devices live outside it: CoreIO clients connect to\n"
	    "its ports, serve guest MMIO to the ranges they claim, raise IRQ lines and do\n"
	    "DMA to guest RAM.\n"
	    "\n"
	    "Options:\n"
	    "  --accel kvm|qtest|mpqemu|vfio-user\n"
	    "                      What plays the CPU. 'kvm' (the default when /dev/kvm\n"
	    "                      works): vCPUs run the freestanding ELF64 guest given by\n"
	    "                      --kernel (docs/guests.md). 'qtest': a script on stdin or\n"
	    "                      a UNIX socket issues reads and writes (docs/coreio-vm.md).\n"
	    "                      'mpqemu': QEMU runs the guest and each range is the remote\n"
	    "                      PCI device of one QEMU x-pci-proxy-dev (docs/qemu-proxy.md;\n"
	    "                      scripts/coreio-qemu starts both). 'vfio-user': QEMU\n"
	    "                      (10.1 or newer) runs the guest and each range is one\n"
	    "                      vfio-user-pci device, with INTx and MSI-X\n"
	    "                      (docs/qemu-vfio-user.md).\n"
	    "  --vfio-user-socket PATH\n"
	    "                      (vfio-user only) The UNIX socket coreio-vm creates and\n"
	    "                      listens on for QEMU's vfio-user-pci of one range; one\n"
	    "                      per --vmmio range, in range order.\n"
	    "  --mpqemu-fd FD      (mpqemu only) The socket QEMU's proxy of a device talks on;\n"
	    "                      one per --vmmio range, in range order.\n"
	    "  --mpqemu-control FD (mpqemu, vfio-user) A SOCK_SEQPACKET socket to the "
	    "orchestrator:\n"
	    "                      claim events out, new device sockets in (hotplug=on\n"
	    "                      ranges; docs/qemu-proxy.md, \"Hot-plug\").\n"
	    "  --kernel GUEST.elf  The guest (kvm only): an x86-64 ELF executable loaded at\n"
	    "                      or above 1 MiB, started in 64-bit mode at its entry.\n"
	    "  --smp N             vCPUs, 1..%d (kvm only, default 1). All start at once.\n"
	    "  --append TEXT       Command line for the guest, in the boot info (kvm only,\n"
	    "                      at most %d characters).\n"
	    "  --qtest stdio|unix:PATH\n"
	    "                      Where the qtest script comes from (default stdio). With\n"
	    "                      unix:PATH, one script connection is served at a time.\n"
	    "                      Example: --qtest unix:/tmp/vm-qtest.sock\n"
	    "  --mem SIZE          Guest RAM at guest-physical 0, 1M..64G (at most 3G with\n"
	    "                      kvm), a multiple of 4 KiB; suffixes K, M, G (default\n"
	    "                      64M). Example: --mem 128M\n"
	    "  --vmmio START,size=SIZE,irq=LINES,port=PORT[,writes=posted|acked]\n"
	    "                      One vMMIO range served by a CoreIO client (repeatable).\n"
	    "                      START and SIZE are 4 KiB aligned (SIZE may use K/M/G),\n"
	    "                      outside RAM and not overlapping other ranges.\n"
	    "                      irq=  guest IRQ lines 0..23 separated by ':' (at most %d);\n"
	    "                            IRQ index i of the range drives the i-th line.\n"
	    "                      port= N         TCP port N on the listen address\n"
	    "                            0         a kernel-chosen TCP port for this range\n"
	    "                            @LABEL    a kernel-chosen TCP port shared by LABEL\n"
	    "                            unix:PATH a UNIX socket shared by ranges naming it\n"
	    "                      Ranges on one port get rid 0, 1, ... in order (max %d).\n"
	    "                      writes=posted (default) sends posted writes; acked waits\n"
	    "                      for the client, so a failing write is a bus error.\n"
	    "                      Examples:\n"
	    "                        --vmmio 0xd0000000,size=0x1000,irq=5,port=4300\n"
	    "                        --vmmio 0xd0001000,size=4K,irq=6:7,port=@dev,writes=acked\n"
	    "                        --vmmio 0xe0000000,size=1M,port=unix:/tmp/dev.sock\n"
	    "  --vmmio pci,size=SIZE[,pci=VVVV:DDDD][,class=0xCCSSPP][,subsys=VVVV:SSSS]\n"
	    "        [,rev=N][,profile=virtio],port=PORT[,writes=posted|acked]\n"
	    "                      (mpqemu, vfio-user) One PCI device whose 32-bit memory BAR 0 "
	    "is\n"
	    "                      the range; the guest places it. SIZE: a power of two,\n"
	    "                      4K..1G. pci= vendor:device in hex (default 1b36:0005, or\n"
	    "                      vendor 1af4 with profile=virtio, which needs the device,\n"
	    "                      e.g. pci=1044); class= (default 0xff0000; virtio: by\n"
	    "                      device); subsys= (default vendor:device; virtio\n"
	    "                      1af4:1100); rev= (default 0; virtio 1). profile=virtio\n"
	    "                      adds the virtio 1.x PCI capabilities (BAR 0 >= 16K).\n"
	    "                      IRQ index 0 of the range is the device's INTx (pin A);\n"
	    "                      with vfio-user, IRQ index i (0..7) is also MSI-X vector i.\n"
	    "                      msix=on|off (vfio-user): offer MSI-X (default: on unless\n"
	    "                      hotplug=on, since QEMU 11.1.3 aborts when it unplugs a\n"
	    "                      vfio-user device with MSI-X).\n"
	    "                      hotplug=on (needs --mpqemu-control): when its client goes\n"
	    "                      away the device instance is dead (BAR reads 0) until the\n"
	    "                      orchestrator unplugs it and plugs a fresh one.\n"
	    "                      Example: --vmmio pci,size=16K,pci=1044,profile=virtio,"
	    "port=0\n"
	    "                      iommu=N[,sid=S] (kvm, qtest) binds the range to IOMMU N:\n"
	    "                      its clients' DMA must use mid N (and sid S), never mid 0.\n"
	    "                      shm=on (port=unix:PATH only, not with iommu=) offers\n"
	    "                      shared-memory DMA: guest RAM is passed to the port's\n"
	    "                      clients as a file descriptor (docs/protocol.md).\n"
	    "                      poll=adaptive[:USEC]|busy[:USEC]|block (kvm, qtest): how\n"
	    "                      a vCPU (or the qtest session) waits for this range's\n"
	    "                      client. adaptive (the default,\n"
	    "                      USEC 200) spins on the socket for up to USEC before it\n"
	    "                      sleeps while answers come within USEC, and backs off to\n"
	    "                      not spinning while they take longer, like KVM's halt\n"
	    "                      polling; busy:USEC always spins up to USEC (busy: 50);\n"
	    "                      block sleeps at once. The exit summary counts the\n"
	    "                      answers that came before the vCPU slept.\n"
	    "                      coalesce=on (kvm, writes=posted): KVM collects the\n"
	    "                      range's writes in its coalesced-MMIO ring without an\n"
	    "                      exit; they reach the client in order, in one send,\n"
	    "                      before any later exit of any vCPU is handled and at\n"
	    "                      least every millisecond. Reads still exit. The writes\n"
	    "                      carry no privilege flag (docs/coreio-vm.md).\n"
	    "                      Access control and limits (docs/security.md):\n"
	    "                      allow-uid=UID[:UID...], allow-gid=GID[:GID...] (unix\n"
	    "                      ports): the peers (SO_PEERCRED) a port accepts; default\n"
	    "                      the VM's own uid and root. dma=ram (default), dma=none\n"
	    "                      or dma=START+SIZE[:START+SIZE...]: the guest-physical\n"
	    "                      windows the port's clients may DMA to (not with shm=on).\n"
	    "                      max-conns=N: connections of the port at once (default\n"
	    "                      %d). tls=on (TCP ports): TLS 1.3 with --tls-creds or\n"
	    "                      --tls-psk. These five apply per port. timeout=MS: an\n"
	    "                      access of this range unanswered for MS ms is a bus\n"
	    "                      error and its client is dropped (default 0: none).\n"
	    "  --iommu id=N,base=ADDR[,irq=LINE]\n"
	    "                      An IOMMU (kvm, qtest) for DMA with mid N (1..7): a 4 KiB\n"
	    "                      register block at ADDR, its fault interrupt on LINE\n"
	    "                      (docs/iommu.md). Example: --iommu id=1,base=0xfd000000,irq=9\n"
	    "  --listen ADDR       Address of the TCP ports (default 127.0.0.1). Example:\n"
	    "                      --listen ::1 or --listen 0.0.0.0\n"
	    "  --trace             Log every forwarded request and answer on stderr.\n"
	    "  --verbose           Log per-event detail (e.g. every shared memory map sent).\n"
	    "  --peer-timeout MS   Drop a client that sends no frame at all, or stops inside\n"
	    "                      a frame, for MS ms (default %d; 0: never); on tls=on\n"
	    "                      ports also one whose TLS handshake takes longer.\n"
	    "  --tls-creds DIR     X.509 credentials of the tls=on ports (QEMU's layout):\n"
	    "                      DIR/ca-cert.pem (the CA that must sign every client's\n"
	    "                      certificate; clients without one are refused),\n"
	    "                      DIR/server-cert.pem and DIR/server-key.pem.\n"
	    "  --tls-psk FILE      Pre-shared keys of the tls=on ports instead: lines\n"
	    "                      IDENTITY:HEXKEY (QEMU's keys.psk; keys of 16..64 bytes).\n"
	    "  --record FILE       Record every event at the device boundary (frames both\n"
	    "                      ways, claims, IRQs, DMA, faults, resets) in FILE, a\n"
	    "                      pcapng file (docs/record-replay.md); shared-memory DMA\n"
	    "                      is not offered then.\n"
	    "  --fault-socket unix:PATH\n"
	    "                      Accept fault-injection commands (inject, inject_clear,\n"
	    "                      inject_list, inject_stats) on a UNIX socket, one per\n"
	    "                      line, while the guest runs (docs/fault-injection.md).\n"
	    "  --help, -h          This text.\n"
	    "\n"
	    "Each port prints 'listening on ADDR:PORT' (or [v6]:PORT, unix:PATH) on stderr\n"
	    "once it accepts connections.\n"
	    "\n"
	    "With kvm the guest's COM1 (port 0x3f8, IRQ 4) is standard output and input, a\n"
	    "write of V to port 0x501 ends coreio-vm with exit status V & 0xff, and a test\n"
	    "device sits at MMIO 0xfe000000. vMMIO ranges may not overlap it, the IOAPIC\n"
	    "(0xfec00000) or the LAPIC (0xfee00000).\n"
	    "\n"
	    "Exit status: 2 for command-line errors; 125 when the VMM or the guest failed\n"
	    "(bad ELF, triple fault, KVM error; the reason is on stderr); with kvm, else\n"
	    "the value the guest wrote to port 0x501 (128+N after signal N).\n"
	    "\n"
	    "Examples:\n"
	    "  %s --kernel guest.elf --mem 64M --smp 2 --vmmio 0xd0000000,size=4K,irq=5,"
	    "port=0\n"
	    "  %s --accel qtest --mem 64M --vmmio 0xd0000000,size=0x1000,irq=5,port=0\n",
	    prog, prog, prog, prog, COREIO_BOOT_MAX_CPUS, CONFIG_APPEND_MAX - 1, CONFIG_MAX_IRQS,
	    CONFIG_MAX_PER_PORT, CONFIG_MAX_CONNS_DEFAULT, CONFIG_PEER_TIMEOUT_DEFAULT, prog, prog);
}
