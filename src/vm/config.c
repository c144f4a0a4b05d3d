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

		if (config_parse_u64(tok, &line) < 0 || line >= IRQ_LINES)
			return fail(err, errlen,
				    "--vmmio '%s': bad irq line '%s' (lines are 0..%d)", arg, tok,
				    IRQ_LINES - 1);
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

static int parse_vmmio(const char *arg, struct range_config *r, char *err, size_t errlen)
{
	char buf[512];
	char *save = NULL, *tok;
	bool have_size = false, have_port = false, have_irq = false, have_writes = false;

	memset(r, 0, sizeof(*r));
	if (strlen(arg) >= sizeof(buf))
		return fail(err, errlen, "--vmmio argument too long");
	strcpy(buf, arg);
	tok = strtok_r(buf, ",", &save);
	if (!tok || config_parse_u64(tok, &r->start) < 0)
		return fail(err, errlen, "--vmmio '%s': bad START '%s'", arg, tok ? tok : "");
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
		} else {
			return fail(err, errlen, "--vmmio '%s': unknown or repeated key '%s'", arg,
				    tok);
		}
	}
	if (!have_size)
		return fail(err, errlen, "--vmmio '%s': size= is missing", arg);
	if (!have_port)
		return fail(err, errlen, "--vmmio '%s': port= is missing", arg);
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

static int validate_accel(struct vm_config *cfg, bool qtest_given, char *err, size_t errlen)
{
	bool kvm = strcmp(cfg->accel, "kvm") == 0;

	if (!kvm) {
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

static int validate(struct vm_config *cfg, char *err, size_t errlen)
{
	for (unsigned i = 0; i < cfg->nranges; i++) {
		const struct range_config *a = &cfg->ranges[i];
		unsigned same = 0;

		if (a->start < cfg->mem)
			return fail(err, errlen,
				    "--vmmio range %u at 0x%llx overlaps RAM [0, 0x%llx)", i,
				    (unsigned long long)a->start, (unsigned long long)cfg->mem);
		for (unsigned j = 0; j < cfg->nranges; j++) {
			const struct range_config *b = &cfg->ranges[j];

			if (config_same_port(a, b))
				same++;
			if (j <= i)
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
	};
	static const struct option opts[] = {
	    {"accel", required_argument, NULL, OPT_ACCEL},
	    {"qtest", required_argument, NULL, OPT_QTEST},
	    {"mem", required_argument, NULL, OPT_MEM},
	    {"vmmio", required_argument, NULL, OPT_VMMIO},
	    {"listen", required_argument, NULL, OPT_LISTEN},
	    {"trace", no_argument, NULL, OPT_TRACE},
	    {"help", no_argument, NULL, OPT_HELP},
	    {"kernel", required_argument, NULL, OPT_KERNEL},
	    {"smp", required_argument, NULL, OPT_SMP},
	    {"append", required_argument, NULL, OPT_APPEND},
	    {NULL, 0, NULL, 0},
	};
	bool qtest_given = false;
	uint64_t n;
	int c;

	memset(cfg, 0, sizeof(*cfg));
	cfg->mem = CONFIG_DEFAULT_MEM;
	strcpy(cfg->listen, "127.0.0.1");
	optind = 0; /* full re-initialisation of getopt (glibc) */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_ACCEL:
			if (strcmp(optarg, "qtest") != 0 && strcmp(optarg, "kvm") != 0)
				return fail(
				    err, errlen,
				    "--accel '%s': unknown accelerator (use 'kvm' or 'qtest')",
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
			break;
		case OPT_VMMIO:
			if (cfg->nranges >= CONFIG_MAX_RANGES)
				return fail(err, errlen, "--vmmio '%s': more than %d ranges",
					    optarg, CONFIG_MAX_RANGES);
			if (parse_vmmio(optarg, &cfg->ranges[cfg->nranges], err, errlen) < 0)
				return -1;
			cfg->nranges++;
			break;
		case OPT_LISTEN:
			if (check_listen(optarg, err, errlen) < 0)
				return -1;
			snprintf(cfg->listen, sizeof(cfg->listen), "%s", optarg);
			break;
		case OPT_TRACE:
			cfg->trace = true;
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
	    "          [--mem SIZE] [--vmmio ...]... [--listen ADDR] [--trace]\n"
	    "       %s --accel qtest [--qtest stdio|unix:PATH] [--mem SIZE]\n"
	    "          [--vmmio START,size=SIZE[,irq=LINE[:LINE...]],port=PORT"
	    "[,writes=posted|acked]]...\n"
	    "          [--listen ADDR] [--trace] [--help]\n"
	    "\n"
	    "coreio-vm is a VM whose devices live outside it: CoreIO clients connect to\n"
	    "its ports, serve guest MMIO to the ranges they claim, raise IRQ lines and do\n"
	    "DMA to guest RAM.\n"
	    "\n"
	    "Options:\n"
	    "  --accel kvm|qtest   What plays the CPU. 'kvm' (the default when /dev/kvm\n"
	    "                      works): vCPUs run the freestanding ELF64 guest given by\n"
	    "                      --kernel (docs/guests.md). 'qtest': a script on stdin or\n"
	    "                      a UNIX socket issues reads and writes (docs/coreio-vm.md).\n"
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
	    "  --listen ADDR       Address of the TCP ports (default 127.0.0.1). Example:\n"
	    "                      --listen ::1 or --listen 0.0.0.0\n"
	    "  --trace             Log every forwarded request and answer on stderr.\n"
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
	    prog, prog, COREIO_BOOT_MAX_CPUS, CONFIG_APPEND_MAX - 1, CONFIG_MAX_IRQS,
	    CONFIG_MAX_PER_PORT, prog, prog);
}
