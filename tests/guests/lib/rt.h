/* The freestanding test-guest runtime: boot, CPL 3, interrupts, COM1 output and exit. */
#ifndef COREIO_GUEST_RT_H
#define COREIO_GUEST_RT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bootinfo.h"

#define RT_MAX_CPUS 32

/* Exit statuses the runtime itself uses. */
#define RT_EXIT_OK	  0
#define RT_EXIT_FAIL	  1
#define RT_EXIT_EXCEPTION 3
#define RT_EXIT_BOOT	  4

/* Flags of run_user(). */
#define RT_USER_IF 1u /* run with interrupts enabled (RFLAGS.IF) */

/* The first vector used for IOAPIC pins: pin N is delivered as RT_IRQ_VECTOR(N). */
#define RT_IRQ_VECTOR(pin) (0x30u + (pin))
#define RT_SPURIOUS_VECTOR 0xffu

/* Registers saved by the interrupt entry code, lowest address first. */
struct rt_frame {
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
	uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
	uint64_t vector, error;
	uint64_t rip, cs, rflags, rsp, ss;
};

/* The boot information the VMM passed (valid once guest_start() runs). */
extern const struct coreio_bootinfo *rt_bootinfo;

/*
 * guest_start - the guest's own CPL 0 entry, defined by every guest.
 *   cpu  this vCPU's index (0 .. ncpus-1), also its LAPIC id
 * Runs on every vCPU with interrupts disabled once the runtime has loaded
 * the GDT, TSS, IDT and enabled the LAPIC (and, on vCPU 0, masked the 8259
 * PIC). It should do its privileged set-up and call run_user(); it must not
 * return (a return ends the guest with RT_EXIT_BOOT).
 */
void guest_start(unsigned cpu);

/*
 * run_user - leave CPL 0 for good: call fn(arg) at CPL 3 with IOPL 3.
 *   fn     the function to run; when it returns, its value is the exit
 *          status on vCPU 0 (or any non-zero value on another vCPU); a
 *          vCPU other than 0 that returns 0 waits forever
 *   arg    its argument
 *   flags  RT_USER_IF to run with interrupts enabled
 * Uses this vCPU's own user stack. Never returns.
 */
__attribute__((noreturn)) void run_user(int (*fn)(uint64_t), uint64_t arg, unsigned flags);

/*
 * rt_park - stop this vCPU for good (CPL 0 only: cli; hlt, no busy loop).
 */
__attribute__((noreturn)) void rt_park(void);

/*
 * rt_exit - end the VM through the debug-exit port.
 *   status  the exit status of coreio-vm (0 = success)
 * Works at CPL 0 and at CPL 3 (IOPL 3). Never returns.
 */
__attribute__((noreturn)) void rt_exit(int status);

/*
 * rt_fail - print "FAILURE: " and the formatted reason, then exit with status 1.
 *   fmt  printf-style format (see rt_printf)
 */
__attribute__((noreturn, format(printf, 1, 2))) void rt_fail(const char *fmt, ...);

/*
 * rt_printf - formatted output on COM1, one call printed as a whole even
 * when several vCPUs print at once.
 *   fmt  supports %s %c %d %i %u %x %X %p %% with the length modifiers l, ll,
 *        z, the flags # and 0 and a width (e.g. %016llx, %#lx)
 * Returns the number of characters printed (long output is cut at 255).
 * Do not call it from an interrupt handler that may interrupt a printf.
 */
__attribute__((format(printf, 1, 2))) int rt_printf(const char *fmt, ...);

/*
 * rt_snprintf - the formatter behind rt_printf, into buf of size n (n > 0).
 * Returns the number of characters stored (excluding the NUL).
 */
__attribute__((format(printf, 3, 4))) int rt_snprintf(char *buf, size_t n, const char *fmt, ...);

/*
 * rt_arg - find NAME=VALUE in the --append text (words separated by spaces).
 *   name  the key
 *   out   receives the value (NUL-terminated, cut to outlen - 1 characters)
 * Returns true if the key is present.
 */
bool rt_arg(const char *name, char *out, size_t outlen);

/*
 * rt_arg_u64 - a numeric NAME=VALUE from the --append text (decimal or 0x hex).
 *   name  the key
 *   def   the value to return when the key is absent
 * A present but malformed value ends the guest with a FAILURE line.
 */
uint64_t rt_arg_u64(const char *name, uint64_t def);

/*
 * rt_set_irq_handler - call fn(vector) when vector arrives; the runtime sends
 * the LAPIC EOI after fn returns. Set handlers at CPL 0 before enabling
 * interrupts. Handlers run at CPL 0 with interrupts disabled.
 */
void rt_set_irq_handler(unsigned vector, void (*fn)(unsigned vector));

/*
 * rt_ioapic_route - program IOAPIC pin pin to deliver vector to LAPIC id dest.
 *   level   true for level-triggered, false for edge-triggered (active high)
 *   masked  true to leave the pin masked
 * Works at CPL 0, and at CPL 3 as long as only one vCPU programs the IOAPIC.
 */
void rt_ioapic_route(unsigned pin, unsigned vector, bool level, bool masked, unsigned dest);

/* rt_ioapic_mask - mask IOAPIC pin pin (keeps the rest of its redirection entry). */
void rt_ioapic_mask(unsigned pin);

/* rt_lapic_eoi - signal end of interrupt to this vCPU's LAPIC (CPL 0). */
void rt_lapic_eoi(void);

/* rt_cpu - index of the calling vCPU (derived from the stack it runs on). */
unsigned rt_cpu(void);

/* rt_ns - nanoseconds since an arbitrary start, from the TSC and boot-info tsc_khz. */
uint64_t rt_ns(void);

/* rt_tsc_khz - the TSC frequency used by rt_ns (boot info, or a 2 GHz guess). */
uint64_t rt_tsc_khz(void);

/*
 * rt_wait_claimed - wait until a client serves the range at base: poll its
 * 32-bit word at base + off until it no longer reads 0xaaaaaaaa.
 *   timeout_ms  give up after this long (FAILURE, exit 1)
 */
void rt_wait_claimed(uint64_t base, uint64_t off, uint64_t timeout_ms);

/* Memory functions the compiler may call. */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

/* Port and MMIO accessors. */
static inline void rt_outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline uint8_t rt_inb(uint16_t port)
{
	uint8_t v;

	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory");
	return v;
}

static inline uint8_t mmio_read8(uint64_t a)
{
	uint8_t v;

	__asm__ volatile("movb (%1), %0" : "=q"(v) : "r"(a) : "memory");
	return v;
}

static inline uint16_t mmio_read16(uint64_t a)
{
	uint16_t v;

	__asm__ volatile("movw (%1), %0" : "=r"(v) : "r"(a) : "memory");
	return v;
}

static inline uint32_t mmio_read32(uint64_t a)
{
	uint32_t v;

	__asm__ volatile("movl (%1), %0" : "=r"(v) : "r"(a) : "memory");
	return v;
}

static inline uint64_t mmio_read64(uint64_t a)
{
	uint64_t v;

	__asm__ volatile("movq (%1), %0" : "=r"(v) : "r"(a) : "memory");
	return v;
}

static inline void mmio_write8(uint64_t a, uint8_t v)
{
	__asm__ volatile("movb %0, (%1)" : : "q"(v), "r"(a) : "memory");
}

static inline void mmio_write16(uint64_t a, uint16_t v)
{
	__asm__ volatile("movw %0, (%1)" : : "r"(v), "r"(a) : "memory");
}

static inline void mmio_write32(uint64_t a, uint32_t v)
{
	__asm__ volatile("movl %0, (%1)" : : "r"(v), "r"(a) : "memory");
}

static inline void mmio_write64(uint64_t a, uint64_t v)
{
	__asm__ volatile("movq %0, (%1)" : : "r"(v), "r"(a) : "memory");
}

static inline void rt_pause(void)
{
	__asm__ volatile("pause" : : : "memory");
}

static inline uint64_t rt_rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
	return (uint64_t)hi << 32 | lo;
}

static inline void rt_barrier(void)
{
	__asm__ volatile("" : : : "memory");
}

#endif
