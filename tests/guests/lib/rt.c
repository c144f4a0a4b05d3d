/* The test-guest runtime in C: per-vCPU GDT/TSS/IDT, LAPIC/IOAPIC, COM1 printf and exit. */
#include "rt.h"

#define KSTACK_SIZE 8192
#define USTACK_SIZE 16384

#define LAPIC_TPR  0x080
#define LAPIC_EOI  0x0b0
#define LAPIC_SVR  0x0f0
#define LAPIC_LVT0 0x350
#define LAPIC_LVT1 0x360

#define COM1_LSR      (COREIO_COM1_PORT + 5)
#define COM1_LSR_THRE 0x20

/* A 64-bit TSS. */
struct rt_tss {
	uint32_t reserved0;
	uint64_t rsp0, rsp1, rsp2;
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3;
	uint16_t iomap_base;
	/* I/O permission bitmap: all ports allowed (bits 0), then the 0xff end byte. */
	uint8_t iobitmap[8192 + 1];
} __attribute__((packed));

/* A 64-bit interrupt gate. */
struct rt_gate {
	uint16_t off_lo;
	uint16_t sel;
	uint8_t ist;
	uint8_t type_attr;
	uint16_t off_mid;
	uint32_t off_hi;
	uint32_t reserved;
} __attribute__((packed));

/* Everything one vCPU owns; nothing here is shared between vCPUs. */
struct rt_percpu {
	struct rt_gate idt[256];
	uint64_t gdt[8]; /* null, kcode, kdata, udata, ucode, tss (2 slots), unused */
	struct rt_tss tss;
} __attribute__((aligned(4096)));

struct rt_desc_ptr {
	uint16_t limit;
	uint64_t base;
} __attribute__((packed));

static struct rt_percpu rt_percpu[RT_MAX_CPUS];
static uint8_t rt_kstack[RT_MAX_CPUS][KSTACK_SIZE] __attribute__((aligned(16)));
static uint8_t rt_ustack[RT_MAX_CPUS][USTACK_SIZE] __attribute__((aligned(16)));
static void (*rt_irq_handlers[256])(unsigned vector);
static volatile uint32_t rt_print_lock; /* 0 free, else owner cpu + 1 */
static uint64_t rt_tsc_freq_khz;

const struct coreio_bootinfo *rt_bootinfo;

extern char rt_isr_base[];
extern char rt_user_return[];
void rt_entry(uint64_t cpu, uint64_t bi);
void rt_trap(struct rt_frame *f);
void rt_user_exit(int status);
void rt_enter_user(uint64_t rip, uint64_t arg, uint64_t rsp, uint64_t rflags);

void *memset(void *d, int c, size_t n)
{
	uint8_t *p = d;

	while (n--)
		*p++ = (uint8_t)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	uint8_t *p = d;
	const uint8_t *q = s;

	while (n--)
		*p++ = *q++;
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const uint8_t *p = a, *q = b;

	for (; n; n--, p++, q++)
		if (*p != *q)
			return *p < *q ? -1 : 1;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

unsigned rt_cpu(void)
{
	uint64_t sp = (uint64_t)__builtin_frame_address(0);
	uint64_t k = (uint64_t)rt_kstack, u = (uint64_t)rt_ustack;

	if (sp >= k && sp < k + sizeof(rt_kstack))
		return (unsigned)((sp - k) / KSTACK_SIZE);
	if (sp >= u && sp < u + sizeof(rt_ustack))
		return (unsigned)((sp - u) / USTACK_SIZE);
	/* Still on the boot stack: vCPU i's stack ends at COREIO_BOOT_STACKS - i * size. */
	if (sp < COREIO_BOOT_STACKS)
		return (unsigned)((COREIO_BOOT_STACKS - 1 - sp) / COREIO_BOOT_STACK_SIZE);
	return 0;
}

__attribute__((noreturn)) void rt_park(void)
{
	for (;;)
		__asm__ volatile("cli; hlt" : : : "memory");
}

__attribute__((noreturn)) void rt_exit(int status)
{
	for (;;) {
		rt_outb(COREIO_DEBUG_EXIT_PORT, (uint8_t)status);
		rt_pause();
	}
}

/* Write one character to COM1, waiting (boundedly) for the transmitter. */
static void rt_putc(char c)
{
	rt_outb(COREIO_COM1_PORT, (uint8_t)c);
}

static void rt_lock(bool force)
{
	uint32_t me = rt_cpu() + 1;

	for (unsigned long spins = 0;; spins++) {
		uint32_t free = 0;

		if (__atomic_compare_exchange_n(&rt_print_lock, &free, me, false, __ATOMIC_ACQUIRE,
						__ATOMIC_RELAXED))
			return;
		/* An exception report must get out even if the lock holder is stuck. */
		if (force && (free == me || spins > 10000000ul)) {
			rt_print_lock = me;
			return;
		}
		rt_pause();
	}
}

static void rt_unlock(void)
{
	__atomic_store_n(&rt_print_lock, 0, __ATOMIC_RELEASE);
}

/* Output state of the formatter. */
struct rt_out {
	char *buf;
	size_t n, len;
};

static void rt_emit(struct rt_out *o, char c)
{
	if (o->len + 1 < o->n)
		o->buf[o->len++] = c;
}

static void rt_emit_num(struct rt_out *o, uint64_t v, unsigned base, bool neg, unsigned width,
			char pad, bool upper)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	char tmp[24];
	unsigned n = 0;

	do {
		tmp[n++] = digits[v % base];
		v /= base;
	} while (v);
	if (neg)
		tmp[n++] = '-';
	for (unsigned i = n; i < width; i++)
		rt_emit(o, pad);
	while (n)
		rt_emit(o, tmp[--n]);
}

static int rt_vformat(char *buf, size_t n, const char *fmt, va_list ap)
{
	struct rt_out o = {buf, n, 0};

	for (; *fmt; fmt++) {
		unsigned width = 0, lng = 0;
		bool alt = false;
		char pad = ' ';
		uint64_t v;

		if (*fmt != '%') {
			rt_emit(&o, *fmt);
			continue;
		}
		fmt++;
		if (*fmt == '#') {
			alt = true;
			fmt++;
		}
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (unsigned)(*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z') {
			lng++;
			fmt++;
		}
		switch (*fmt) {
		case 'd':
		case 'i': {
			int64_t s = lng ? va_arg(ap, int64_t) : va_arg(ap, int);

			rt_emit_num(&o, s < 0 ? -(uint64_t)s : (uint64_t)s, 10, s < 0, width, pad,
				    false);
			break;
		}
		case 'u':
		case 'x':
		case 'X':
			v = lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
			if (alt && *fmt != 'u') {
				rt_emit(&o, '0');
				rt_emit(&o, 'x');
			}
			rt_emit_num(&o, v, *fmt == 'u' ? 10 : 16, false, width, pad, *fmt == 'X');
			break;
		case 'p':
			rt_emit(&o, '0');
			rt_emit(&o, 'x');
			rt_emit_num(&o, (uint64_t)va_arg(ap, void *), 16, false, width, pad, false);
			break;
		case 'c':
			rt_emit(&o, (char)va_arg(ap, int));
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			size_t l = strlen(s ? s : "(null)");

			for (size_t i = l; i < width; i++)
				rt_emit(&o, ' ');
			for (const char *p = s ? s : "(null)"; *p; p++)
				rt_emit(&o, *p);
			break;
		}
		case '%':
			rt_emit(&o, '%');
			break;
		case '\0':
			fmt--;
			break;
		default:
			rt_emit(&o, '%');
			rt_emit(&o, *fmt);
			break;
		}
	}
	if (o.n)
		o.buf[o.len] = '\0';
	return (int)o.len;
}

int rt_snprintf(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = rt_vformat(buf, n, fmt, ap);
	va_end(ap);
	return r;
}

static int rt_vprintf(bool force, const char *fmt, va_list ap)
{
	char buf[256];
	int n = rt_vformat(buf, sizeof(buf), fmt, ap);

	rt_lock(force);
	for (int i = 0; i < n; i++)
		rt_putc(buf[i]);
	rt_unlock();
	return n;
}

int rt_printf(const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = rt_vprintf(false, fmt, ap);
	va_end(ap);
	return r;
}

__attribute__((noreturn)) void rt_fail(const char *fmt, ...)
{
	char buf[200];
	va_list ap;

	va_start(ap, fmt);
	rt_vformat(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	rt_printf("FAILURE: %s\n", buf);
	rt_exit(RT_EXIT_FAIL);
}

/* Print at CPL 0 from a trap even if the lock is held (by this vCPU, or forever). */
static void rt_trap_printf(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	rt_vprintf(true, fmt, ap);
	va_end(ap);
}

static const char *rt_find_arg(const char *name, size_t *vlen)
{
	const char *p = rt_bootinfo ? rt_bootinfo->cmdline : "";
	size_t nl = strlen(name);
	const char *end = p + COREIO_BOOT_CMDLINE;

	while (p < end && *p) {
		const char *w = p;

		while (p < end && *p && *p != ' ')
			p++;
		if ((size_t)(p - w) > nl && w[nl] == '=' && !memcmp(w, name, nl)) {
			*vlen = (size_t)(p - w) - nl - 1;
			return w + nl + 1;
		}
		while (p < end && *p == ' ')
			p++;
	}
	return NULL;
}

bool rt_arg(const char *name, char *out, size_t outlen)
{
	size_t vl;
	const char *v = rt_find_arg(name, &vl);

	if (!v)
		return false;
	if (outlen) {
		if (vl > outlen - 1)
			vl = outlen - 1;
		memcpy(out, v, vl);
		out[vl] = '\0';
	}
	return true;
}

uint64_t rt_arg_u64(const char *name, uint64_t def)
{
	char s[32];
	const char *p = s;
	unsigned base = 10;
	uint64_t v = 0;

	if (!rt_arg(name, s, sizeof(s)))
		return def;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	}
	if (!*p)
		rt_fail("bad value for %s: '%s'", name, s);
	for (; *p; p++) {
		unsigned d;

		if (*p >= '0' && *p <= '9')
			d = (unsigned)(*p - '0');
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = (unsigned)(*p - 'a' + 10);
		else if (base == 16 && *p >= 'A' && *p <= 'F')
			d = (unsigned)(*p - 'A' + 10);
		else
			rt_fail("bad value for %s: '%s'", name, s);
		v = v * base + d;
	}
	return v;
}

uint64_t rt_tsc_khz(void)
{
	return rt_tsc_freq_khz;
}

uint64_t rt_ns(void)
{
	uint64_t t = rt_rdtsc();

	/* t * 1e6 / khz without overflow for any realistic uptime. */
	return (t / rt_tsc_freq_khz) * 1000000u +
	       (t % rt_tsc_freq_khz) * 1000000u / rt_tsc_freq_khz;
}

void rt_wait_claimed(uint64_t base, uint64_t off, uint64_t timeout_ms)
{
	uint64_t start = rt_ns(), next_note = start + 2000000000ull;

	while (mmio_read32(base + off) == 0xaaaaaaaau) {
		uint64_t now = rt_ns();

		if (now - start > timeout_ms * 1000000ull)
			rt_fail("no client claimed the range at %#lx within %lu ms",
				(unsigned long)base, (unsigned long)timeout_ms);
		if (now > next_note) {
			rt_printf("waiting for a client at %#lx\n", (unsigned long)base);
			next_note = now + 2000000000ull;
		}
		/* Poll about every 100 microseconds. */
		while (rt_ns() - now < 100000)
			rt_pause();
	}
}

static void lapic_write(unsigned reg, uint32_t v)
{
	mmio_write32(COREIO_LAPIC_BASE + reg, v);
}

void rt_lapic_eoi(void)
{
	lapic_write(LAPIC_EOI, 0);
}

static void ioapic_write(unsigned reg, uint32_t v)
{
	mmio_write32(COREIO_IOAPIC_BASE, reg);
	mmio_write32(COREIO_IOAPIC_BASE + 0x10, v);
}

static uint32_t ioapic_read(unsigned reg)
{
	mmio_write32(COREIO_IOAPIC_BASE, reg);
	return mmio_read32(COREIO_IOAPIC_BASE + 0x10);
}

void rt_ioapic_route(unsigned pin, unsigned vector, bool level, bool masked, unsigned dest)
{
	uint32_t lo = (vector & 0xff) | (level ? 1u << 15 : 0) | (masked ? 1u << 16 : 0);

	/* Mask first so no half-written entry ever delivers. */
	ioapic_write(0x10 + 2 * pin, 1u << 16);
	ioapic_write(0x11 + 2 * pin, dest << 24);
	ioapic_write(0x10 + 2 * pin, lo);
}

void rt_ioapic_mask(unsigned pin)
{
	ioapic_write(0x10 + 2 * pin, ioapic_read(0x10 + 2 * pin) | 1u << 16);
}

void rt_set_irq_handler(unsigned vector, void (*fn)(unsigned vector))
{
	rt_irq_handlers[vector & 0xff] = fn;
}

static const char *const rt_exc_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS",
    "#NP", "#SS", "#GP", "#PF", "15",  "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
};

void rt_trap(struct rt_frame *f)
{
	unsigned vec = (unsigned)f->vector;

	if (vec < 32) {
		uint64_t cr2 = 0;

		if (vec == 14)
			__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
		rt_trap_printf("EXCEPTION %s vector=%u error=%#lx rip=%#lx cs=%#lx rflags=%#lx "
			       "rsp=%#lx cr2=%#lx "
			       "cpu=%u\nFAILURE: exception %u\n",
			       rt_exc_names[vec] ? rt_exc_names[vec] : "?", vec,
			       (unsigned long)f->error, (unsigned long)f->rip, (unsigned long)f->cs,
			       (unsigned long)f->rflags, (unsigned long)f->rsp, (unsigned long)cr2,
			       rt_cpu(), vec);
		rt_exit(RT_EXIT_EXCEPTION);
	}
	if (vec == RT_SPURIOUS_VECTOR)
		return;
	if (!rt_irq_handlers[vec]) {
		rt_trap_printf("FAILURE: unexpected interrupt vector %u on cpu %u\n", vec,
			       rt_cpu());
		rt_exit(RT_EXIT_EXCEPTION);
	}
	rt_irq_handlers[vec](vec);
	rt_lapic_eoi();
}

void rt_user_exit(int status)
{
	if (rt_cpu() == 0 || status != 0)
		rt_exit(status);
	for (;;)
		rt_pause();
}

__attribute__((noreturn)) void run_user(int (*fn)(uint64_t), uint64_t arg, unsigned flags)
{
	unsigned cpu = rt_cpu();
	uint64_t *top = (uint64_t *)(rt_ustack[cpu] + USTACK_SIZE);
	uint64_t rflags = 0x2 | 0x3000 | (flags & RT_USER_IF ? 0x200 : 0);

	/* The user function "returns" to rt_user_return; top stays 16-byte aligned. */
	top[-1] = (uint64_t)rt_user_return;
	rt_enter_user((uint64_t)fn, arg, (uint64_t)&top[-1], rflags);
	__builtin_unreachable();
}

static uint64_t rt_seg(uint64_t access, uint64_t flags)
{
	return 0xffffull | access << 40 | 0xfull << 48 | flags << 52;
}

/* Load this vCPU's GDT, TSS and IDT. */
static void rt_cpu_tables(unsigned cpu)
{
	struct rt_percpu *pc = &rt_percpu[cpu];
	uint64_t tss = (uint64_t)&pc->tss;
	uint64_t isr = (uint64_t)rt_isr_base;
	struct rt_desc_ptr gp, ip;

	pc->gdt[0] = 0;
	pc->gdt[1] = rt_seg(0x9a, 0xa); /* kernel code: present, DPL 0, L, G */
	pc->gdt[2] = rt_seg(0x92, 0xc); /* kernel data */
	pc->gdt[3] = rt_seg(0xf2, 0xc); /* user data, DPL 3 */
	pc->gdt[4] = rt_seg(0xfa, 0xa); /* user code, DPL 3, L */
	pc->gdt[5] = (sizeof(pc->tss) - 1) | (tss & 0xffffff) << 16 | 0x89ull << 40 |
		     ((tss >> 24) & 0xff) << 56;
	pc->gdt[6] = tss >> 32;
	pc->gdt[7] = 0;
	pc->tss.rsp0 = (uint64_t)(rt_kstack[cpu] + KSTACK_SIZE);
	/*
	 * kvm_pvm does not honour RFLAGS.IOPL at CPL 3 (IOPL reads back 0 after
	 * iretq) but does consult the TSS I/O bitmap: allow every port there.
	 * On hardware IOPL 3 alone would do.
	 */
	pc->tss.iomap_base = offsetof(struct rt_tss, iobitmap);
	pc->tss.iobitmap[8192] = 0xff;
	for (unsigned v = 0; v < 256; v++) {
		uint64_t h = isr + 16 * v;
		struct rt_gate *g = &pc->idt[v];

		g->off_lo = (uint16_t)h;
		g->sel = COREIO_SEL_KCODE;
		g->ist = 0;
		g->type_attr = 0x8e; /* present, DPL 0, 64-bit interrupt gate */
		g->off_mid = (uint16_t)(h >> 16);
		g->off_hi = (uint32_t)(h >> 32);
		g->reserved = 0;
	}
	gp.limit = sizeof(pc->gdt) - 1;
	gp.base = (uint64_t)pc->gdt;
	ip.limit = sizeof(pc->idt) - 1;
	ip.base = (uint64_t)pc->idt;
	__asm__ volatile("lgdt %0" : : "m"(gp) : "memory");
	__asm__ volatile("movw %w0, %%ds\n\tmovw %w0, %%es\n\tmovw %w0, %%ss"
			 :
			 : "r"(COREIO_SEL_KDATA)
			 : "memory");
	__asm__ volatile("ltr %w0" : : "r"(0x28) : "memory");
	__asm__ volatile("lidt %0" : : "m"(ip) : "memory");
}

void rt_entry(uint64_t cpu, uint64_t bi)
{
	const struct coreio_bootinfo *b = (const struct coreio_bootinfo *)bi;

	if (b->magic != COREIO_BOOT_MAGIC || b->version != COREIO_BOOT_VERSION ||
	    cpu >= RT_MAX_CPUS || cpu >= b->ncpus) {
		if (cpu == 0) {
			rt_printf(
			    "FAILURE: bad boot info at %#lx: magic %#lx version %u ncpus %u\n",
			    (unsigned long)bi, (unsigned long)b->magic, b->version, b->ncpus);
			rt_exit(RT_EXIT_BOOT);
		}
		rt_park();
	}
	rt_bootinfo = b;
	rt_tsc_freq_khz = b->tsc_khz ? b->tsc_khz : 2000000;
	rt_cpu_tables((unsigned)cpu);
	if (cpu == 0) {
		/* The 8259 would deliver ISA IRQ n as vector n: mask all of it. */
		rt_outb(0x21, 0xff);
		rt_outb(0xa1, 0xff);
	}
	lapic_write(LAPIC_TPR, 0);
	lapic_write(LAPIC_LVT0, 1u << 16);
	lapic_write(LAPIC_LVT1, 1u << 16);
	lapic_write(LAPIC_SVR, 0x100 | RT_SPURIOUS_VECTOR);
	guest_start((unsigned)cpu);
	rt_printf("FAILURE: guest_start returned on cpu %u\n", (unsigned)cpu);
	rt_exit(RT_EXIT_BOOT);
}
